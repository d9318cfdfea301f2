//! AI messages: one AI chat's history, all of the caller's AI messages, and one message.

use axum::{
    extract::{RawQuery, State},
    response::Response,
    Json,
};

use crate::{
    auth::AuthUser,
    error::{ApiError, ApiResult},
    http::{pagination::Cursor, path::Id},
    service::conversations,
    state::AppState,
    store,
    wire::{
        schemas::{BadRequest, Detail},
        views::AiMessageView,
    },
};

/// Lists an AI chat's messages, oldest first, one page at a time; a reply appears once it is
/// finished.
#[utoipa::path(get, path = "/api/ai/chats/{id}/messages/", tag = "AI Messages", security(("session" = []), ("bearer" = [])),
    params(
        ("id" = i64, Path, description = "AI chat id"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 500 (default 100)", minimum = 1, maximum = 500),
        ("before" = Option<i64>, Query, description = "Only ids below this; the page holds the newest of them", minimum = 0),
        ("after" = Option<i64>, Query, description = "Only ids above this; the page holds the oldest of them", minimum = 0),
    ),
    responses(
        (status = 200, description = "A page of the conversation, oldest first", body = Vec<AiMessageView>, headers(("Link" = String, description = "`<url>; rel=\"next\"` when more items lie beyond this page"))),
        (status = 400, description = "Invalid input", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
    ))]
pub async fn chat_messages(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(id): Id,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let chat = conversations::owned(&state, id, &auth.user).await?;
    let cursor = Cursor::from_query(query.as_deref())?;
    let rows = store::ai::messages_in_chat(&state.db, chat.id, cursor.probe()).await?;
    let views = conversations::message_page(&state, rows).await?;
    let path = format!("/api/ai/chats/{}/messages/", chat.id);
    cursor.respond(views, |m| m.id, &path, state.config.page_bytes, |m| m)
}

/// Lists the messages of all the caller's AI chats, oldest first, one page at a time.
#[utoipa::path(get, path = "/api/ai/messages/", tag = "AI Messages", security(("session" = []), ("bearer" = [])), params(
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 500 (default 100)", minimum = 1, maximum = 500),
        ("before" = Option<i64>, Query, description = "Only ids below this; the page holds the newest of them", minimum = 0),
        ("after" = Option<i64>, Query, description = "Only ids above this; the page holds the oldest of them", minimum = 0),
    ),
    responses(
        (status = 200, description = "The caller's AI messages, oldest first", body = Vec<AiMessageView>, headers(("Link" = String, description = "`<url>; rel=\"next\"` when more items lie beyond this page"))),
        (status = 400, description = "Invalid input", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
    ))]
pub async fn all_messages(
    State(state): State<AppState>,
    auth: AuthUser,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let cursor = Cursor::from_query(query.as_deref())?;
    let rows = store::ai::messages_for_user(&state.db, auth.user.id, cursor.probe()).await?;
    let views = conversations::message_page(&state, rows).await?;
    cursor.respond(
        views,
        |m| m.id,
        "/api/ai/messages/",
        state.config.page_bytes,
        |m| m,
    )
}

/// Returns one message of the caller's AI chats.
#[utoipa::path(get, path = "/api/ai/messages/{id}/", tag = "AI Messages", security(("session" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "AI message id")),
    responses(
        (status = 200, description = "The AI message", body = AiMessageView),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
    ))]
pub async fn one_message(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(id): Id,
) -> ApiResult<Json<AiMessageView>> {
    let message = store::ai::message_visible_to(&state.db, id, auth.user.id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(
        conversations::message_page(&state, vec![message])
            .await?
            .remove(0),
    ))
}
