//! Cross-site request forgery protection, as the original's clients expect it: unsafe requests
//! from a browser must come from a trusted origin, and those authenticated by the session cookie
//! must repeat the `csrftoken` cookie in the `X-CSRFToken` header.

use axum::{
    extract::{Request, State},
    http::{header, HeaderMap, Method},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::secret::constant_time_eq;
use crate::{error::ApiError, state::AppState};

/// The request header that must repeat the `csrftoken` cookie (`X-CSRFToken`, Django's default
/// `CSRF_HEADER_NAME`).
pub const CSRF_HEADER: &str = "x-csrftoken";

/// True for the methods that must not change state and so skip CSRF checks: GET, HEAD,
/// OPTIONS and TRACE (RFC 9110 §9.2.1, the set Django exempts).
pub fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Middleware: an unsafe request that carries an `Origin` must name this server's own host or a
/// configured origin. Clients that send no `Origin` (not browsers) are judged by their
/// credentials alone. Applies to anonymous requests too, which stops login forgery.
pub async fn require_trusted_origin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if !is_safe(request.method()) {
        if let Err(err) = check_origin(request.headers(), &state) {
            return err.into_response();
        }
    }
    next.run(request).await
}

/// Accepts a request with no `Origin` header or a trusted one; otherwise a `403`
/// [`ApiError::Csrf`] worded as Django words its origin failure.
pub fn check_origin(headers: &HeaderMap, state: &AppState) -> Result<(), ApiError> {
    let Some(origin) = request_origin(headers) else {
        return Ok(());
    };
    if is_trusted_origin(&origin, headers, state) {
        Ok(())
    } else {
        Err(ApiError::Csrf(format!(
            "Origin checking failed - {origin} does not match any trusted origins."
        )))
    }
}

/// The request's `Origin` header, normalised for comparison; `None` when absent.
pub fn request_origin(headers: &HeaderMap) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?;
    Some(
        origin
            .to_str()
            .unwrap_or("")
            .trim_end_matches('/')
            .to_ascii_lowercase(),
    )
}

/// True when `origin` names the host the request was sent to, with either scheme (so TLS
/// termination in front of the server does not matter).
pub fn is_same_host(origin: &str, headers: &HeaderMap) -> bool {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_ascii_lowercase);
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    matches!((host, authority), (Some(host), Some(authority)) if host == authority)
}

/// Trusted for writes: the request's own host, or an origin listed in `MRM_ALLOWED_ORIGINS` or
/// `MRM_CORS_ORIGINS`.
fn is_trusted_origin(origin: &str, headers: &HeaderMap, state: &AppState) -> bool {
    let config = &state.config;
    config.allowed_origins.iter().any(|o| o == origin)
        || config
            .cors_origins
            .iter()
            .any(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
        || is_same_host(origin, headers)
}

/// The double-submit check for a session-authenticated unsafe request: the header must equal the
/// cookie, and the cookie must be the one issued with this session.
pub fn check_token(
    headers: &HeaderMap,
    cookie: Option<&str>,
    session_token: &str,
) -> Result<(), ApiError> {
    let Some(cookie) = cookie else {
        return Err(ApiError::Csrf("CSRF cookie not set.".into()));
    };
    let Some(sent) = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) else {
        return Err(ApiError::Csrf("CSRF token missing.".into()));
    };
    if sent.is_empty() {
        return Err(ApiError::Csrf("CSRF token missing.".into()));
    }
    if constant_time_eq(sent, cookie) && constant_time_eq(cookie, session_token) {
        Ok(())
    } else {
        Err(ApiError::Csrf("CSRF token incorrect.".into()))
    }
}
