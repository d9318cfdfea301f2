//! The administration area at `/admin/`: server-rendered pages for staff to look after users,
//! chats, messages and AI conversations.
//!
//! Pages are askama templates (HTML-escaped by default) under `templates/admin/`. Every page
//! needs a staff session (`StaffUser`); every form posts the session's CSRF token, checked by
//! `StaffForm`. Writes go through the store, then publish the same room events as the API, so
//! open sockets learn about removals and deletions.

pub mod ai;
pub mod auth;
pub mod chats;
pub mod dashboard;
pub mod form;
pub mod messages;
pub mod pagination;
pub mod users;

use askama::Template;
use axum::{
    http::{header, HeaderValue, StatusCode},
    middleware,
    response::{Html, IntoResponse, Redirect, Response},
    routing::{any, get, post},
    Router,
};

pub use self::{
    auth::{StaffForm, StaffUser},
    form::{AdminId, Errors, FormData, Params},
};
use crate::{service::ServiceError, state::AppState};

/// The `/admin/…` routes. Paths are matched without their trailing slash; any other path under
/// `/admin/` is a 404 page.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(dashboard::show))
        .route("/admin/login", get(auth::login_page).post(auth::login))
        .route("/admin/logout", get(auth::logout_page).post(auth::logout))
        .route("/admin/users", get(users::list))
        .route("/admin/users/add", get(users::add_page).post(users::add))
        .route("/admin/users/{id}", get(users::edit_page).post(users::edit))
        .route("/admin/users/{id}/quota", post(users::set_quota))
        .route("/admin/users/{id}/ai-budgets", post(users::set_ai_budgets))
        .route(
            "/admin/users/{id}/password",
            get(users::password_page).post(users::set_password),
        )
        .route(
            "/admin/users/{id}/delete",
            get(users::delete_page).post(users::delete),
        )
        .route("/admin/chats", get(chats::list))
        .route(
            "/admin/chats/{id}",
            get(chats::edit_page).post(chats::rename),
        )
        .route(
            "/admin/chats/{id}/participants",
            post(chats::add_participants),
        )
        .route(
            "/admin/chats/{id}/participants/{user_id}/remove",
            post(chats::remove_participant),
        )
        .route(
            "/admin/chats/{id}/delete",
            get(chats::delete_page).post(chats::delete),
        )
        .route("/admin/messages", get(messages::list))
        .route("/admin/messages/{id}", get(messages::detail))
        .route(
            "/admin/messages/{id}/delete",
            get(messages::delete_page).post(messages::delete),
        )
        .route("/admin/ai/chats", get(ai::chats))
        .route("/admin/ai/chats/{id}", get(ai::chat))
        .route("/admin/ai/messages", get(ai::messages))
        .route("/admin/ai/usage", get(ai::usage))
        .route("/admin/{*rest}", any(unknown_page))
        .layer(middleware::map_response(security_headers))
}

/// Admin pages show personal data and act with staff rights: never cached, never framed, and
/// limited to this origin's styles and forms (they have no scripts).
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Unknown paths under `/admin/` are a 404 page, for staff only: others learn nothing about
/// which paths exist.
async fn unknown_page(_staff: StaffUser) -> AdminError {
    AdminError::NotFound
}

/// What every page's layout shows around its content.
#[derive(Debug, Clone, Default)]
pub struct Chrome {
    /// The signed-in staff member; `None` on the login and error pages.
    pub user: Option<String>,
    /// Posted back by every form, the logout button included.
    pub csrf_token: String,
    /// The navigation entry to mark as current.
    pub section: &'static str,
    /// A confirmation of the action that led here.
    pub notice: Option<&'static str>,
}

/// Why an admin request did not get its page.
#[derive(Debug)]
pub enum AdminError {
    /// No staff session: the login page, which returns to `next` afterwards.
    Login { next: String },
    /// A 403 page with this message.
    Forbidden(String),
    /// A 403 page: the form's CSRF token was missing or wrong, for this reason.
    Csrf(&'static str),
    /// A 404 page.
    NotFound,
    /// A 400 page with this message.
    BadRequest(String),
    /// A 500 page; the error is logged, not shown.
    Internal(anyhow::Error),
}

/// What admin handlers return: a response, or an [`AdminError`] rendered as a page.
pub type AdminResult<T> = Result<T, AdminError>;

impl From<sqlx::Error> for AdminError {
    fn from(err: sqlx::Error) -> Self {
        AdminError::Internal(err.into())
    }
}

impl From<askama::Error> for AdminError {
    fn from(err: askama::Error) -> Self {
        AdminError::Internal(anyhow::anyhow!("template: {err}"))
    }
}

impl From<anyhow::Error> for AdminError {
    fn from(err: anyhow::Error) -> Self {
        AdminError::Internal(err)
    }
}

impl From<ServiceError> for AdminError {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::NotFound | ServiceError::Missing(_) => AdminError::NotFound,
            ServiceError::PermissionDenied => {
                AdminError::Forbidden("You may not perform this action.".into())
            }
            ServiceError::Internal(err) => AdminError::Internal(err),
            other => AdminError::BadRequest(other.to_string()),
        }
    }
}

#[derive(Template)]
#[template(path = "admin/error.html")]
struct ErrorPage {
    chrome: Chrome,
    title: &'static str,
    message: String,
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            AdminError::Login { next } => {
                return Redirect::to(&auth::login_url(&next)).into_response()
            }
            AdminError::Forbidden(message) => (StatusCode::FORBIDDEN, "Forbidden", message),
            AdminError::Csrf(reason) => (
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!("CSRF verification failed: {reason} Reload the form and try again."),
            ),
            AdminError::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is nothing at this address.".to_owned(),
            ),
            AdminError::BadRequest(message) => (StatusCode::BAD_REQUEST, "Bad request", message),
            AdminError::Internal(err) => {
                tracing::error!(error = ?err, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Server error",
                    "Something went wrong on the server. Try again later.".to_owned(),
                )
            }
        };
        let page = ErrorPage {
            chrome: Chrome::default(),
            title,
            message,
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(err) => {
                tracing::error!(error = %err, "rendering the error page");
                (status, title).into_response()
            }
        }
    }
}

/// Renders a page with status 200.
pub fn render<T: Template>(page: &T) -> AdminResult<Response> {
    render_with(StatusCode::OK, page)
}

/// Renders a page with the given status; a template error becomes a 500.
pub fn render_with<T: Template>(status: StatusCode, page: &T) -> AdminResult<Response> {
    Ok((status, Html(page.render()?)).into_response())
}

/// A 303 to `location` (a path built by this module).
pub fn see_other(location: &str) -> Response {
    Redirect::to(location).into_response()
}

/// The confirmation shown after a redirect, from the `done` query parameter. Only these fixed
/// sentences can appear, so a crafted link cannot put words on an admin page.
pub fn notice(params: &Params) -> Option<&'static str> {
    Some(match params.get("done")? {
        "created" => "The user was created.",
        "saved" => "The changes were saved.",
        "password" => "The password was changed; the user's other sessions and tokens were ended.",
        "deleted" => "The item was deleted.",
        "renamed" => "The chat was renamed.",
        "added" => "The participants were added.",
        "removed" => "The participant was removed; their open sockets were closed.",
        "logged_out" => "You are logged out.",
        _ => return None,
    })
}
