//! Browser sessions: a random key in an HttpOnly `sessionid` cookie (the database keeps only its
//! hash) and a `csrftoken` cookie scripts can read, bound to the session.

use axum::http::HeaderValue;
use axum_extra::extract::cookie::{Cookie, SameSite};
use chrono::Duration;

use super::secret::{random_token, storage_hash};
use crate::store::{self, Db};

/// The cookie holding the session key (Django's default `SESSION_COOKIE_NAME`).
pub const SESSION_COOKIE: &str = "sessionid";
/// The cookie holding the CSRF token, readable by scripts (Django's default
/// `CSRF_COOKIE_NAME`).
pub const CSRF_COOKIE: &str = "csrftoken";
/// Sessions end two weeks after login, as in the original.
pub const SESSION_DAYS: i64 = 14;
/// The CSRF cookie outlives sessions (a year) so an open page keeps a token to send.
const CSRF_COOKIE_DAYS: i64 = 364;

/// The secrets of a session just started: the session key (43 alphanumeric characters) and its
/// CSRF token (32). Only the key's hash is stored.
pub struct NewSession {
    pub key: String,
    pub csrf_token: String,
}

/// Stores a new session for the user and returns its secrets, to be sent as cookies.
pub async fn start(db: &Db, user_id: i64) -> sqlx::Result<NewSession> {
    let session = NewSession {
        key: random_token(43),
        csrf_token: random_token(32),
    };
    let expires_at = store::now() + Duration::days(SESSION_DAYS);
    store::sessions::create(
        db,
        &storage_hash(&session.key),
        user_id,
        &session.csrf_token,
        expires_at,
    )
    .await?;
    Ok(session)
}

/// The `Set-Cookie` values that hand a new session to the browser.
pub fn cookies(session: &NewSession, secure: bool) -> [HeaderValue; 2] {
    let session_cookie = Cookie::build((SESSION_COOKIE, session.key.clone()))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .max_age(time_days(SESSION_DAYS));
    // Readable by scripts on purpose: the page copies it into the X-CSRFToken header.
    let csrf_cookie = Cookie::build((CSRF_COOKIE, session.csrf_token.clone()))
        .path("/")
        .same_site(SameSite::Lax)
        .secure(secure)
        .max_age(time_days(CSRF_COOKIE_DAYS));
    [header(session_cookie.build()), header(csrf_cookie.build())]
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie(secure: bool) -> HeaderValue {
    let cookie = Cookie::build((SESSION_COOKIE, ""))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .max_age(time_days(0));
    header(cookie.build())
}

fn time_days(days: i64) -> cookie::time::Duration {
    cookie::time::Duration::days(days)
}

fn header(cookie: Cookie<'_>) -> HeaderValue {
    HeaderValue::from_str(&cookie.to_string()).expect("cookie values are ASCII")
}
