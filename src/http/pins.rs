//! Pinned messages: `POST` and `DELETE /api/chats/{id}/messages/{message_id}/pin/` pin and
//! unpin a message, `GET /api/chats/{id}/pins/` lists the chat's pins.

use axum::{
    extract::State,
    http::StatusCode,
    response::Response,
    routing::{get, post},
    Json, Router,
};

use super::path::{Id, Ids};
use crate::{
    auth::AuthUser,
    error::ApiResult,
    service::pins,
    state::AppState,
    wire::{
        schemas::Detail,
        views::{PinView, Viewer},
    },
};

/// Pins and the chat's list of them.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/chats/{id}/messages/{message_id}/pin",
            post(pin).delete(unpin),
        )
        .route("/api/chats/{id}/pins", get(list))
}

/// Pins a message: the chat's owner or staff, or either member of a direct chat. Pinning a
/// pinned message changes nothing (200).
#[utoipa::path(post, path = "/api/chats/{id}/messages/{message_id}/pin/", tag = "Messages", security(("session" = [], "csrf" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "Chat id"), ("message_id" = i64, Path, description = "Message id")),
    responses(
        (status = 200, description = "Pinned already: the pin as it was; nothing is logged", body = PinView),
        (status = 201, description = "Pinned; `mrm.v2` sockets get a `message_pinned` frame", body = PinView),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Neither the chat's owner nor staff, not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
        (status = 409, description = "The message is deleted, or the chat has 100 pins already", body = Detail),
        (status = 429, description = "Changing messages too fast", body = Detail),
    ))]
async fn pin(
    State(state): State<AppState>,
    auth: AuthUser,
    Ids(chat_id, message_id): Ids,
) -> ApiResult<Response> {
    let (pin, created) = pins::pin(&state, &auth.user, chat_id, message_id).await?;
    Ok(super::created_or_found(created, pin))
}

/// Unpins a message: whoever may pin it. Unpinning a message that is not pinned changes nothing.
#[utoipa::path(delete, path = "/api/chats/{id}/messages/{message_id}/pin/", tag = "Messages", security(("session" = [], "csrf" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "Chat id"), ("message_id" = i64, Path, description = "Message id")),
    responses(
        (status = 204, description = "Not pinned (any more); when it was, `mrm.v2` sockets get a `message_unpinned` frame"),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Neither the chat's owner nor staff, not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
        (status = 429, description = "Changing messages too fast", body = Detail),
    ))]
async fn unpin(
    State(state): State<AppState>,
    auth: AuthUser,
    Ids(chat_id, message_id): Ids,
) -> ApiResult<StatusCode> {
    pins::unpin(&state, &auth.user, chat_id, message_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lists the chat's pinned messages, newest pin first (a chat holds at most 100).
#[utoipa::path(get, path = "/api/chats/{id}/pins/", tag = "Messages", security(("session" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "Chat id")),
    responses(
        (status = 200, description = "The pins, newest pin first, each message as it is now", body = Vec<PinView>),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
    ))]
async fn list(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(chat_id): Id,
) -> ApiResult<Json<Vec<PinView>>> {
    let viewer = Viewer::of(&auth.user);
    let pins = pins::list(&state, &auth.user, chat_id).await?;
    Ok(Json(
        pins.into_iter()
            .map(|p| PinView::for_viewer(p, viewer))
            .collect(),
    ))
}
