//! `AuthUser`: the extractor a handler names when it needs a caller. A bearer token in the
//! `Authorization` header wins; otherwise the session cookie, with the CSRF check on writes.

use axum::{extract::FromRequestParts, http::request::Parts};
use axum_extra::extract::CookieJar;

use super::{csrf, secret::storage_hash, session};
use crate::{error::ApiError, state::AppState, store, store::users::User};

/// How the caller proved who they are, kept so logout can end that same credential.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Credential {
    /// The hash of the session key, to end it at logout.
    Session { key_hash: String },
    /// The hash of the bearer token, to revoke it.
    Token { token_hash: String },
}

/// The authenticated, active caller of a request and the credential it came with. Rejects an
/// unknown bearer token with `401`, and a missing or expired session or a failed CSRF check with
/// `403`, as Django REST framework does under session authentication.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user: User,
    pub credential: Credential,
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(token) = bearer_token(parts)? {
            let token_hash = storage_hash(token);
            let user = store::tokens::user(&state.db, &token_hash)
                .await?
                .ok_or(ApiError::InvalidToken)?;
            tracing::Span::current().record("user.id", user.id);
            return Ok(AuthUser {
                user,
                credential: Credential::Token { token_hash },
            });
        }

        let jar = CookieJar::from_headers(&parts.headers);
        let key = jar
            .get(session::SESSION_COOKIE)
            .map(|c| c.value())
            .filter(|v| !v.is_empty())
            .ok_or(ApiError::NotAuthenticated)?;
        let key_hash = storage_hash(key);
        let found = store::sessions::user(&state.db, &key_hash)
            .await?
            .ok_or(ApiError::NotAuthenticated)?;
        if !csrf::is_safe(&parts.method) {
            let cookie = jar.get(session::CSRF_COOKIE).map(|c| c.value());
            csrf::check_token(&parts.headers, cookie, &found.csrf_token)?;
        }
        tracing::Span::current().record("user.id", found.user.id);
        Ok(AuthUser {
            user: found.user,
            credential: Credential::Session { key_hash },
        })
    }
}

/// The token of an `Authorization: Bearer …` header (the scheme is case-insensitive); other
/// schemes are left alone.
fn bearer_token(parts: &Parts) -> Result<Option<&str>, ApiError> {
    let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| ApiError::InvalidToken)?;
    let Some((scheme, token)) = value.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = token.trim();
    if token.is_empty() || token.contains(' ') {
        return Err(ApiError::InvalidToken);
    }
    Ok(Some(token))
}
