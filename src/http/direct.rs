//! Direct chats: `POST /api/direct/` opens the one chat between the caller and another user.

use axum::{extract::State, response::Response, routing::post, Router};

use super::input::Input;
use crate::{
    auth::AuthUser,
    domain::text,
    error::{ApiError, ApiResult},
    service::{
        direct::{self, Peer},
        FieldErrors,
    },
    state::AppState,
    wire::{
        schemas::{BadRequest, Detail, DirectRequest},
        views::ChatView,
    },
};

/// Direct chats.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/direct", post(open))
}

/// Opens the direct chat between the caller and another user (by `user_id` or `username`),
/// creating it the first time either of them asks: one chat per pair, however many ask at once.
/// A direct chat has no owner and fixed members (adding, removing and leaving are refused with
/// 400); either member pins its messages. Opening one with yourself gives your own.
#[utoipa::path(post, path = "/api/direct/", tag = "Chats", security(("session" = [], "csrf" = []), ("bearer" = [])),
    request_body(content = DirectRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The existing direct chat (`direct: true`)", body = ChatView),
        (status = 201, description = "Created, with the caller and the other user as its members", body = ChatView),
        (status = 400, description = "Not exactly one of `user_id` and `username`, or no active user has it", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
    ))]
async fn open(State(state): State<AppState>, auth: AuthUser, input: Input) -> ApiResult<Response> {
    let mut errors = FieldErrors::new();
    let id = input.optional_int("user_id", 1, i64::MAX, &mut errors);
    let name = input.optional_string("username", &mut errors);
    let name = name.map(|n| text::strip(&n).to_owned());
    if name.as_deref() == Some("") {
        errors.add("username", text::BLANK);
    }
    if input.has("user_id") == input.has("username") {
        errors.add(
            "non_field_errors",
            "Provide exactly one of user_id or username.",
        );
    }
    errors.check()?;
    let peer = match (id, name) {
        (Some(id), None) => Peer::Id(id),
        (None, Some(name)) => Peer::Username(name),
        _ => {
            return Err(ApiError::BadRequest(
                "user_id or username is required".into(),
            ))
        }
    };
    let (chat, created) = direct::open(&state, &auth.user, peer).await?;
    Ok(super::created_or_found(created, chat))
}
