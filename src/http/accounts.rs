//! Accounts: `POST /api/register/`, `POST /api/login/`, `POST /api/logout/`, `GET /api/me/`,
//! `GET /api/users/`.

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, RawQuery, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use axum_extra::extract::CookieJar;
use serde_json::json;

use super::schemas::{BadRequest, Detail, ErrorMessage, LoginRequest, Message, RegisterRequest};
use super::{
    input::Input,
    pagination::Cursor,
    views::{UserListItem, UserView},
};
use crate::{
    auth::{secret::storage_hash, session, AuthUser, Credential},
    domain::{Email, UserType, Username},
    error::{ApiError, ApiResult, FieldErrors},
    state::AppState,
    store::{self, users::NewUser},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/register", post(register))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/me", get(me))
        .route("/api/users", get(users))
}

/// A validated registration or new account.
pub struct Registration {
    pub username: Username,
    pub email: Email,
    pub password: String,
    pub user_type: UserType,
}

/// Checks a new account the way registration does: field rules, a free username, matching
/// passwords, then the password policy. Shared with the command line's `createsuperuser`.
pub async fn validate_registration(
    state: &AppState,
    username: Option<String>,
    email: Option<String>,
    password: Option<String>,
    password_confirm: Option<String>,
    user_type: Option<String>,
    mut errors: FieldErrors,
) -> ApiResult<Registration> {
    let username = username.and_then(|raw| match Username::parse(raw.trim()) {
        Ok(name) => Some(name),
        Err(message) => {
            errors.add("username", message);
            None
        }
    });
    if let Some(name) = &username {
        if store::users::username_taken(&state.db, name.as_str()).await? {
            errors.add("username", "A user with that username already exists.");
        }
    }
    let email = match Email::parse(email.unwrap_or_default().trim()) {
        Ok(email) => Some(email),
        Err(message) => {
            errors.add("email", message);
            None
        }
    };
    let user_type = match user_type.as_deref().map(UserType::parse).transpose() {
        Ok(t) => t.unwrap_or_default(),
        Err(message) => {
            errors.add("user_type", message);
            UserType::default()
        }
    };
    for (name, value) in [
        ("password", &password),
        ("password_confirm", &password_confirm),
    ] {
        if value.as_deref().is_some_and(str::is_empty) {
            errors.add(name, "This field may not be blank.");
        }
    }
    errors.check()?;
    let (Some(username), Some(email), Some(password), Some(confirm)) =
        (username, email, password, password_confirm)
    else {
        return Err(ApiError::BadRequest("incomplete registration".into()));
    };
    if password != confirm {
        return Err(ApiError::Validation(FieldErrors::single(
            "password",
            "Passwords don't match.",
        )));
    }
    let problems = state.password_policy.problems(
        &password,
        &[
            ("username", username.as_str()),
            ("email address", email.as_str()),
        ],
    );
    if !problems.is_empty() {
        let mut errors = FieldErrors::new();
        for problem in problems {
            errors.add("password", problem);
        }
        return Err(ApiError::Validation(errors));
    }
    Ok(Registration {
        username,
        email,
        password,
        user_type,
    })
}

/// Stores a validated account; a username taken in the meantime is the same field error.
pub async fn create_account(
    state: &AppState,
    registration: Registration,
    is_staff: bool,
    is_superuser: bool,
) -> ApiResult<store::users::User> {
    let password_hash = state.hasher.hash(registration.password).await?;
    let new = NewUser {
        username: registration.username.as_str(),
        email: registration.email.as_str(),
        password_hash: &password_hash,
        user_type: registration.user_type.as_str(),
        is_staff,
        is_superuser,
    };
    match store::users::create(&state.db, &new).await {
        Ok(user) => Ok(user),
        Err(err) if store::is_unique_violation(&err) => Err(ApiError::Validation(
            FieldErrors::single("username", "A user with that username already exists."),
        )),
        Err(err) => Err(err.into()),
    }
}

#[utoipa::path(post, path = "/api/register/", tag = "Authentication", security(()),
    request_body(content = RegisterRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Account created", body = UserView),
        (status = 400, description = "Invalid input", body = BadRequest),
        (status = 403, description = "Cross-origin request refused", body = Detail),
    ))]
async fn register(State(state): State<AppState>, input: Input) -> ApiResult<Response> {
    let mut errors = FieldErrors::new();
    let username = input.required_string("username", &mut errors);
    let email = input.optional_string("email", &mut errors);
    let password = input.required_string("password", &mut errors);
    let password_confirm = input.required_string("password_confirm", &mut errors);
    let user_type = input.optional_string("user_type", &mut errors);
    let registration = validate_registration(
        &state,
        username,
        email,
        password,
        password_confirm,
        user_type,
        errors,
    )
    .await?;
    let user = create_account(&state, registration, false, false).await?;
    tracing::info!(user.id = user.id, "account registered");
    Ok((StatusCode::CREATED, Json(UserView::from(&user))).into_response())
}

/// Checks a username and password, counting the attempt against the caller's rate limit.
pub async fn authenticate(
    state: &AppState,
    peer: SocketAddr,
    input: &Input,
) -> ApiResult<store::users::User> {
    // As the original: anything short of a matching username and password is a 401.
    let mut errors = FieldErrors::new();
    let username = input.required_string("username", &mut errors);
    let password = input.required_string("password", &mut errors);
    let (Some(username), Some(password)) = (username, password) else {
        return Err(ApiError::InvalidCredentials);
    };
    state.limits.login(peer.ip(), &username)?;
    let credentials = store::users::credentials(&state.db, &username).await?;
    let hash = credentials.as_ref().map(|c| c.password_hash.clone());
    let matches = state.hasher.verify(password, hash).await?;
    match credentials {
        Some(c) if matches && c.is_active => store::users::by_id(&state.db, c.id)
            .await?
            .ok_or(ApiError::InvalidCredentials),
        _ => {
            tracing::info!("failed login");
            Err(ApiError::InvalidCredentials)
        }
    }
}

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
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    jar: CookieJar,
    input: Input,
) -> ApiResult<Response> {
    let user = authenticate(&state, peer, &input).await?;
    // A new session key at every login: a key planted before login is worth nothing after it.
    if let Some(old) = jar.get(session::SESSION_COOKIE) {
        store::sessions::delete(&state.db, &storage_hash(old.value())).await?;
    }
    let new_session = session::start(&state.db, user.id).await?;
    store::users::record_login(&state.db, user.id).await?;
    tracing::info!(user.id = user.id, "logged in");
    let mut headers = HeaderMap::new();
    for cookie in session::cookies(&new_session, state.config.secure_cookies) {
        headers.append(header::SET_COOKIE, cookie);
    }
    Ok((headers, Json(UserView::from(&user))).into_response())
}

#[utoipa::path(post, path = "/api/logout/", tag = "Authentication", security(("session" = [], "csrf" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Session ended", body = Message),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
    ))]
async fn logout(State(state): State<AppState>, auth: AuthUser) -> ApiResult<Response> {
    if let Credential::Session { key_hash } = &auth.credential {
        store::sessions::delete(&state.db, key_hash).await?;
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

#[utoipa::path(get, path = "/api/me/", tag = "Users", security(("session" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = UserView),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
    ))]
async fn me(auth: AuthUser) -> Json<UserView> {
    Json(UserView::from(&auth.user))
}

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
    Ok(cursor.respond(rows, |u| u.id, "/api/users/", UserListItem::from))
}
