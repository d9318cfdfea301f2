//! Accounts: `POST /api/register/`, `POST /api/login/`, `POST /api/logout/`, `GET /api/me/`,
//! `GET /api/users/`.

use axum::{
    extract::{RawQuery, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use axum_extra::extract::CookieJar;
use serde_json::json;

use super::{
    input::{CredentialsInput, Input},
    pagination::Cursor,
};
use crate::wire::schemas::{
    BadRequest, Detail, ErrorMessage, LoginRequest, Message, RegisterRequest,
};
use crate::{
    auth::{session, AuthUser, Credential},
    client_addr::ClientAddr,
    error::ApiResult,
    service::{
        accounts::{self, RegistrationForm},
        sessions, FieldErrors,
    },
    state::AppState,
    store,
    wire::views::{UserListItem, UserView},
};

/// Registration, login, logout, the caller and the user directory.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/register", post(register))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/me", get(me))
        .route("/api/users", get(users))
}

/// Creates a user account; it does not log the caller in.
#[utoipa::path(post, path = "/api/register/", tag = "Authentication", security(()),
    request_body(content = RegisterRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Account created", body = UserView),
        (status = 400, description = "Invalid input", body = BadRequest),
        (status = 403, description = "Cross-origin request refused", body = Detail),
        (status = 429, description = "Too many attempts", body = Detail),
    ))]
async fn register(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    CredentialsInput(input): CredentialsInput,
) -> ApiResult<Response> {
    let mut errors = FieldErrors::new();
    let username = input.required_string("username", &mut errors);
    let email = input.optional_string("email", &mut errors);
    let password = input.required_string("password", &mut errors);
    let password_confirm = input.required_string("password_confirm", &mut errors);
    let user_type = input.optional_string("user_type", &mut errors);
    // Not held while the password waits for its hash.
    drop(input);
    let form = RegistrationForm {
        username,
        email,
        password,
        password_confirm,
        user_type,
    };
    let user = accounts::register_from(&state, client, form, errors).await?;
    tracing::info!(user.id = user.id, "account registered");
    Ok((StatusCode::CREATED, Json(UserView::own(&user))).into_response())
}

/// The `username` and `password` of a login or token request; a missing or non-string field is
/// `None`, which [`accounts::authenticate`] answers as invalid credentials, as the original does.
pub fn credentials(input: &Input) -> (Option<String>, Option<String>) {
    let mut ignored = FieldErrors::new();
    (
        input.required_string("username", &mut ignored),
        input.required_string("password", &mut ignored),
    )
}

/// Logs in with a username and password, setting the `sessionid` and `csrftoken` cookies.
#[utoipa::path(post, path = "/api/login/", tag = "Authentication", security(()),
    request_body(content = LoginRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Logged in: sets the `sessionid` and `csrftoken` cookies", body = UserView),
        (status = 400, description = "Invalid input", body = BadRequest),
        (status = 401, description = "Wrong username or password", body = ErrorMessage),
        (status = 403, description = "Cross-origin request refused", body = Detail),
        (status = 429, description = "Too many attempts", body = Detail),
    ))]
async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    jar: CookieJar,
    CredentialsInput(input): CredentialsInput,
) -> ApiResult<Response> {
    let (username, password) = credentials(&input);
    // Not held while the password waits for its hash.
    drop(input);
    let user = accounts::authenticate(&state, client, username, password).await?;
    let previous = jar.get(session::SESSION_COOKIE).map(|c| c.value());
    let new_session = sessions::log_in(&state, &user, previous).await?;
    tracing::info!(user.id = user.id, "logged in");
    let mut headers = HeaderMap::new();
    for cookie in session::cookies(&new_session, state.config.secure_cookies) {
        headers.append(header::SET_COOKIE, cookie);
    }
    Ok((headers, Json(UserView::own(&user))).into_response())
}

/// Ends the caller's browser session and clears its cookie; a bearer token stays valid.
#[utoipa::path(post, path = "/api/logout/", tag = "Authentication", security(("session" = [], "csrf" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Session ended", body = Message),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
    ))]
async fn logout(State(state): State<AppState>, auth: AuthUser) -> ApiResult<Response> {
    if let Credential::Session { key_hash } = &auth.credential {
        sessions::log_out(&state, key_hash).await?;
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        header::SET_COOKIE,
        session::clear_cookie(state.config.secure_cookies),
    );
    Ok((
        headers,
        Json(json!({ "message": "Logged out successfully" })),
    )
        .into_response())
}

/// Returns the authenticated user.
#[utoipa::path(get, path = "/api/me/", tag = "Users", security(("session" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = UserView),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
    ))]
async fn me(auth: AuthUser) -> Json<UserView> {
    Json(UserView::own(&auth.user))
}

/// Lists every user by id, one page at a time.
#[utoipa::path(get, path = "/api/users/", tag = "Users", security(("session" = []), ("bearer" = [])), params(
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 500 (default 100)", minimum = 1, maximum = 500),
        ("before" = Option<i64>, Query, description = "Only ids below this; the page holds the newest of them", minimum = 0),
        ("after" = Option<i64>, Query, description = "Only ids above this; the page holds the oldest of them", minimum = 0),
    ),
    responses(
        (status = 200, description = "The user directory, by id", body = Vec<UserListItem>, headers(("Link" = String, description = "`<url>; rel=\"next\"` when more items lie beyond this page"))),
        (status = 400, description = "Invalid input", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
    ))]
async fn users(
    State(state): State<AppState>,
    _auth: AuthUser,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let cursor = Cursor::from_query(query.as_deref())?;
    let rows = store::users::page(&state.db, cursor.probe()).await?;
    cursor.respond(
        rows,
        |u| u.id,
        "/api/users/",
        state.config.page_bytes,
        UserListItem::from,
    )
}
