//! Changing a chat's history and reading its log: `PATCH` and `DELETE
//! /api/chats/{id}/messages/{message_id}/`, the earlier versions of an edited message, and
//! `GET /api/chats/{id}/events/`, the chat's ordered log for clients that poll.

use axum::{
    extract::{RawQuery, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, patch, post},
    Json, Router,
};

use super::{
    input::Input,
    pagination::Cursor,
    path::{Id, Ids},
    query::Query,
};
use crate::{
    auth::AuthUser,
    error::{ApiError, ApiResult},
    service::{chats, messaging, FieldErrors},
    state::AppState,
    store::events::LogEntry,
    wire::{
        frames::{LogItem, LoggedFrame, Member, MessageFrame},
        schemas::{BadRequest, Detail, EditMessage, ReactionRequest, ReadRequest},
        views::{MessageVersionView, MessageView, ReadStateView, ReceiptView, Viewer},
    },
};

/// Message edits and deletions, versions, and the chat's log.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/chats/{id}/messages/{message_id}",
            patch(edit).delete(delete),
        )
        .route(
            "/api/chats/{id}/messages/{message_id}/versions",
            get(versions),
        )
        .route(
            "/api/chats/{id}/messages/{message_id}/reactions",
            post(react).delete(unreact),
        )
        .route("/api/chats/{id}/events", get(events))
        .route("/api/chats/{id}/read", post(read))
        .route("/api/chats/{id}/receipts", get(receipts))
}

/// Replaces the content of one of the caller's own messages.
#[utoipa::path(patch, path = "/api/chats/{id}/messages/{message_id}/", tag = "Messages", security(("session" = [], "csrf" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "Chat id"), ("message_id" = i64, Path, description = "Message id")),
    request_body(content = EditMessage, content_type = "application/json"),
    responses(
        (status = 200, description = "Edited (`edited_at` set); `mrm.v2` sockets get a `message_edited` frame", body = MessageView),
        (status = 400, description = "Invalid input", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not your message, not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
        (status = 409, description = "The message is deleted", body = Detail),
        (status = 429, description = "Changing messages too fast", body = Detail),
    ))]
async fn edit(
    State(state): State<AppState>,
    auth: AuthUser,
    Ids(chat_id, message_id): Ids,
    input: Input,
) -> ApiResult<Json<MessageView>> {
    let mut errors = FieldErrors::new();
    let content = input.message_content("content", &mut errors);
    errors.check()?;
    let content = content.ok_or_else(|| ApiError::BadRequest("content is required".into()))?;
    let message = messaging::edit(&state, &auth.user, chat_id, message_id, content).await?;
    Ok(Json(message))
}

/// Deletes a message, leaving a tombstone: the sender, the chat's owner, or staff.
#[utoipa::path(delete, path = "/api/chats/{id}/messages/{message_id}/", tag = "Messages", security(("session" = [], "csrf" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "Chat id"), ("message_id" = i64, Path, description = "Message id")),
    responses(
        (status = 200, description = "Deleted: the tombstone (`deleted: true`, empty content); `mrm.v2` sockets get a `message_deleted` frame", body = MessageView),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Neither your message nor your chat, not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
        (status = 409, description = "Deleted already", body = Detail),
        (status = 429, description = "Changing messages too fast", body = Detail),
    ))]
async fn delete(
    State(state): State<AppState>,
    auth: AuthUser,
    Ids(chat_id, message_id): Ids,
) -> ApiResult<Json<MessageView>> {
    Ok(Json(
        messaging::delete(&state, &auth.user, chat_id, message_id).await?,
    ))
}

/// Adds the caller's reaction to a message: one per user per emoji per message.
#[utoipa::path(post, path = "/api/chats/{id}/messages/{message_id}/reactions/", tag = "Messages", security(("session" = [], "csrf" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "Chat id"), ("message_id" = i64, Path, description = "Message id")),
    request_body(content = ReactionRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Added: the message with its reactions; `mrm.v2` sockets get a `reaction_added` frame", body = MessageView),
        (status = 200, description = "The caller had already reacted so: nothing changed", body = MessageView),
        (status = 400, description = "Not one emoji", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
        (status = 409, description = "The message is deleted, or already has 50 different reactions and this is another", body = Detail),
        (status = 429, description = "Changing messages too fast", body = Detail),
    ))]
async fn react(
    State(state): State<AppState>,
    auth: AuthUser,
    Ids(chat_id, message_id): Ids,
    input: Input,
) -> ApiResult<Response> {
    let emoji = emoji(&input)?;
    let (message, added) =
        messaging::react(&state, &auth.user, chat_id, message_id, &emoji, true).await?;
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(message)).into_response())
}

/// Takes back the caller's reaction (`emoji` in the body, or `?emoji=`).
#[utoipa::path(delete, path = "/api/chats/{id}/messages/{message_id}/reactions/", tag = "Messages", security(("session" = [], "csrf" = []), ("bearer" = [])),
    params(
        ("id" = i64, Path, description = "Chat id"),
        ("message_id" = i64, Path, description = "Message id"),
        ("emoji" = Option<String>, Query, description = "The reaction to take back, when the request has no body"),
    ),
    responses(
        (status = 200, description = "The message with its reactions (unchanged if the caller had not reacted so); `mrm.v2` sockets get a `reaction_removed` frame when one was taken back", body = MessageView),
        (status = 400, description = "Not one emoji", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
        (status = 409, description = "The message is deleted", body = Detail),
        (status = 429, description = "Changing messages too fast", body = Detail),
    ))]
async fn unreact(
    State(state): State<AppState>,
    auth: AuthUser,
    Ids(chat_id, message_id): Ids,
    RawQuery(query): RawQuery,
    input: Input,
) -> ApiResult<Json<MessageView>> {
    let query = Query::parse(query.as_deref());
    let from_query = query.values("emoji").last().map(str::to_owned);
    let emoji = match from_query {
        Some(emoji) if !input.has("emoji") => emoji,
        _ => emoji(&input)?,
    };
    let (message, _) =
        messaging::react(&state, &auth.user, chat_id, message_id, &emoji, false).await?;
    Ok(Json(message))
}

/// Marks the chat read up to a position of its log.
#[utoipa::path(post, path = "/api/chats/{id}/read/", tag = "Messages", security(("session" = [], "csrf" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "Chat id")),
    request_body(content = ReadRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The caller's read state now: read up to the newest message at or before `seq` (a position is never moved back)", body = ReadStateView),
        (status = 400, description = "Invalid input", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
        (status = 429, description = "Marking read too fast", body = Detail),
    ))]
async fn read(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(chat_id): Id,
    input: Input,
) -> ApiResult<Json<ReadStateView>> {
    let mut errors = FieldErrors::new();
    if !input.has("seq") {
        errors.add("seq", "This field is required.");
    }
    let seq = input.optional_int("seq", 0, i64::MAX, &mut errors);
    errors.check()?;
    let seq = seq.ok_or_else(|| ApiError::BadRequest("seq is required".into()))?;
    let read = chats::mark_read(&state, &auth.user, chat_id, seq).await?;
    Ok(Json(ReadStateView::from(read)))
}

/// Lists every member's read position, in a chat with read receipts on.
#[utoipa::path(get, path = "/api/chats/{id}/receipts/", tag = "Messages", security(("session" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "Chat id")),
    responses(
        (status = 200, description = "Who has read up to where, by username; `mrm.v2` sockets learn of each later move as a `read_receipt` frame", body = Vec<ReceiptView>),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
        (status = 409, description = "Read receipts are off in this chat", body = Detail),
    ))]
async fn receipts(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(chat_id): Id,
) -> ApiResult<Json<Vec<ReceiptView>>> {
    let positions = chats::read_positions(&state, &auth.user, chat_id).await?;
    Ok(Json(
        positions
            .into_iter()
            .map(|(id, username, last_read_seq)| ReceiptView {
                user: Member { id, username },
                last_read_seq,
            })
            .collect(),
    ))
}

/// The `emoji` field of a reaction request.
fn emoji(input: &Input) -> ApiResult<String> {
    let mut errors = FieldErrors::new();
    let emoji = input.required_string("emoji", &mut errors);
    errors.check()?;
    emoji.ok_or_else(|| ApiError::BadRequest("emoji is required".into()))
}

/// The earlier versions of an edited message, oldest first: for the chat's owner and staff.
#[utoipa::path(get, path = "/api/chats/{id}/messages/{message_id}/versions/", tag = "Messages", security(("session" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "Chat id"), ("message_id" = i64, Path, description = "Message id")),
    responses(
        (status = 200, description = "Earlier versions, oldest first (none once the message is deleted)", body = Vec<MessageVersionView>),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Neither the chat's owner nor staff, or not authenticated", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
    ))]
async fn versions(
    State(state): State<AppState>,
    auth: AuthUser,
    Ids(chat_id, message_id): Ids,
) -> ApiResult<Json<Vec<MessageVersionView>>> {
    let versions = messaging::versions(&state, &auth.user, chat_id, message_id).await?;
    Ok(Json(
        versions.into_iter().map(MessageVersionView::from).collect(),
    ))
}

/// Pages through the chat's log from a position, oldest first: each item is the frame an
/// `mrm.v2` socket receives for that position (`message` frames, whose `message.seq` is the
/// position, and `message_edited`, `message_deleted`, … frames, whose `seq` is).
#[utoipa::path(get, path = "/api/chats/{id}/events/", tag = "Messages", security(("session" = []), ("bearer" = [])),
    params(
        ("id" = i64, Path, description = "Chat id"),
        ("after" = Option<i64>, Query, description = "Only positions above this (default 0: from the start)", minimum = 0),
        ("before" = Option<i64>, Query, description = "Only positions below this", minimum = 0),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 500 (default 100)", minimum = 1, maximum = 500),
    ),
    responses(
        (status = 200, description = "The log's entries after `after`, in order", body = Vec<Object>, headers(("Link" = String, description = "`<url>; rel=\"next\"` when more entries lie beyond this page"))),
        (status = 400, description = "Invalid input", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
    ))]
async fn events(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(chat_id): Id,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let mut cursor = Cursor::from_query(query.as_deref())?;
    // Read from the start forward unless told otherwise: a log is followed, not browsed back.
    cursor.window.after.get_or_insert(0);
    let rows = chats::log(&state, &auth.user, chat_id, cursor.probe()).await?;
    let viewer = Viewer::of(&auth.user);
    // Kinds a newer version wrote and this one cannot show are passed over.
    let items: Vec<(i64, LogItem)> = rows
        .into_iter()
        .filter_map(|entry| {
            let seq = entry.seq();
            let item = match entry {
                LogEntry::Message(m) => LogItem::Message(Box::new(MessageFrame {
                    kind: "message",
                    message: MessageView::for_viewer(m, viewer),
                })),
                LogEntry::Event(e) => LogItem::Event(LoggedFrame::of(&e)?),
            };
            Some((seq, item))
        })
        .collect();
    cursor.respond(
        items,
        |(seq, _)| *seq,
        &format!("/api/chats/{chat_id}/events/"),
        state.config.page_bytes,
        |(_, item)| item,
    )
}
