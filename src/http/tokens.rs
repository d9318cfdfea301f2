//! Bearer tokens for non-browser clients: `POST /api/tokens/` trades a username and password for
//! a token, `DELETE /api/tokens/current/` revokes the token that authenticates the request.

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, post},
    Json, Router,
};
use serde_json::json;

use super::{accounts::credentials, input::CredentialsInput};
use crate::wire::schemas::{BadRequest, Detail, ErrorMessage, TokenRequest, TokenResponse};
use crate::wire::views::UserView;
use crate::{
    auth::{AuthUser, Credential},
    client_addr::ClientAddr,
    domain::text,
    error::{ApiError, ApiResult},
    service::{accounts, sessions, FieldErrors},
    state::AppState,
};

/// Longest token name, in characters, once stripped of surrounding whitespace.
const MAX_NAME_CHARS: usize = 100;

/// Issuing and revoking bearer tokens.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/tokens", post(create))
        .route("/api/tokens/current", delete(revoke_current))
}

/// Issues a bearer token in exchange for a username and password.
#[utoipa::path(post, path = "/api/tokens/", tag = "Authentication", security(()),
    request_body(content = TokenRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "A new bearer token", body = TokenResponse),
        (status = 400, description = "Invalid input", body = BadRequest),
        (status = 401, description = "Wrong username or password", body = ErrorMessage),
        (status = 403, description = "Cross-origin request refused", body = Detail),
        (status = 429, description = "Too many attempts", body = Detail),
    ))]
async fn create(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    CredentialsInput(input): CredentialsInput,
) -> ApiResult<Response> {
    let mut errors = FieldErrors::new();
    let raw_name = input
        .optional_string("name", &mut errors)
        .unwrap_or_default();
    // Stripped first, then measured: surrounding spaces are not part of the name.
    let name = text::strip(&raw_name);
    if !text::within(name, MAX_NAME_CHARS) {
        errors.add("name", text::too_long(MAX_NAME_CHARS));
    }
    errors.check()?;
    let (username, password) = credentials(&input);
    // Not held while the password waits for its hash.
    drop(input);
    let user = accounts::authenticate(&state, client, username, password).await?;
    let issued = sessions::issue_token(&state, &user, name).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "token": issued.token, "user": UserView::own(&user) })),
    )
        .into_response())
}

/// Revokes the bearer token this request is authenticated with.
#[utoipa::path(delete, path = "/api/tokens/current/", tag = "Authentication", security(("bearer" = [])),
    responses(
        (status = 204, description = "The token is revoked"),
        (status = 400, description = "The request was not made with a bearer token", body = Detail),
        (status = 401, description = "Invalid token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
    ))]
async fn revoke_current(State(state): State<AppState>, auth: AuthUser) -> ApiResult<StatusCode> {
    let Credential::Token { token_hash } = &auth.credential else {
        return Err(ApiError::BadRequest(
            "This request is not authenticated with a bearer token.".into(),
        ));
    };
    sessions::revoke_token(&state, token_hash).await?;
    Ok(StatusCode::NO_CONTENT)
}
