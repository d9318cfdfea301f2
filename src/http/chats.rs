//! Chats: list, create, read, rename, delete, membership, and the chat's messages.
//! Only participants see a chat (404 for anyone else); only its owner or staff rename, delete
//! or manage members (403 for other participants); any participant may leave.

use axum::{
    extract::{RawQuery, State},
    http::{Method, StatusCode},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
    Json, Router,
};

use super::{
    input::{limited_text, Input},
    pagination::Cursor,
    path::{Id, Ids},
};
use crate::{
    auth::AuthUser,
    domain::MAX_CHAT_NAME_CHARS,
    error::{ApiError, ApiResult},
    service::{
        chats::{self, MemberRequest},
        messaging, FieldErrors,
    },
    state::AppState,
    wire::{
        schemas::{BadRequest, ChatCreate, ChatUpdate, Detail, ParticipantsAdd, SendMessage},
        views::{ChatView, MessageView, Viewer},
    },
};

/// Chats, their members and their messages.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/chats", get(list).post(create))
        .route(
            "/api/chats/{id}",
            get(retrieve).put(update).patch(update).delete(destroy),
        )
        .route("/api/chats/{id}/send_message", post(send_message))
        .route("/api/chats/{id}/messages", get(messages))
        .route("/api/chats/{id}/participants", post(add_participants))
        .route(
            "/api/chats/{id}/participants/{user_id}",
            delete(remove_participant),
        )
        .route("/api/chats/{id}/leave", post(leave))
}

/// Lists the chats the caller takes part in, by id, each with its members and newest 100
/// messages; a page ends early when its JSON reaches `MRM_PAGE_BYTES`.
#[utoipa::path(get, path = "/api/chats/", tag = "Chats", security(("session" = []), ("bearer" = [])), params(
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 500 (default 100)", minimum = 1, maximum = 500),
        ("before" = Option<i64>, Query, description = "Only ids below this; the page holds the newest of them", minimum = 0),
        ("after" = Option<i64>, Query, description = "Only ids above this; the page holds the oldest of them", minimum = 0),
    ),
    responses(
        (status = 200, description = "The caller's chats, each with its newest 100 messages", body = Vec<ChatView>, headers(("Link" = String, description = "`<url>; rel=\"next\"` when more items lie beyond this page"))),
        (status = 400, description = "Invalid input", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
    ))]
async fn list(
    State(state): State<AppState>,
    auth: AuthUser,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let cursor = Cursor::from_query(query.as_deref())?;
    let mut page = cursor.page(state.config.page_bytes);
    chats::list(&state, &auth.user, cursor.probe(), |chat| {
        page.push(chat.id, || chat)
    })
    .await?;
    Ok(page.respond("/api/chats/"))
}

/// The members a body asks for: `participant_ids` and `participant_usernames`, both optional.
fn member_request(input: &Input, errors: &mut FieldErrors) -> MemberRequest {
    MemberRequest {
        ids: input
            .optional_id_list("participant_ids", errors)
            .unwrap_or_default(),
        usernames: input
            .optional_string_list("participant_usernames", errors)
            .unwrap_or_default(),
    }
}

/// Creates a chat owned by the caller, with the caller and the listed users as members.
#[utoipa::path(post, path = "/api/chats/", tag = "Chats", security(("session" = [], "csrf" = []), ("bearer" = [])),
    request_body(content = ChatCreate, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; the caller owns it", body = ChatView),
        (status = 400, description = "Invalid input", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
    ))]
async fn create(
    State(state): State<AppState>,
    auth: AuthUser,
    input: Input,
) -> ApiResult<Response> {
    let mut errors = FieldErrors::new();
    let name = limited_text(&input, "name", MAX_CHAT_NAME_CHARS, &mut errors);
    let members = member_request(&input, &mut errors);
    let chat = chats::create(&state, &auth.user, name, members, errors).await?;
    Ok((StatusCode::CREATED, Json(chat)).into_response())
}

/// Returns a chat the caller takes part in, with its members and newest 100 messages.
#[utoipa::path(get, path = "/api/chats/{id}/", tag = "Chats", security(("session" = []), ("bearer" = [])), params(("id" = i64, Path, description = "Chat id")),
    responses(
        (status = 200, description = "The chat with its newest 100 messages", body = ChatView),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
    ))]
async fn retrieve(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(id): Id,
) -> ApiResult<Json<ChatView>> {
    Ok(Json(chats::get(&state, id, &auth.user).await?))
}

/// Renames a chat, or switches its read receipts (owner or staff); PUT requires `name`, PATCH
/// may leave it out.
#[utoipa::path(method(put, patch), path = "/api/chats/{id}/", tag = "Chats", security(("session" = [], "csrf" = []), ("bearer" = [])), params(("id" = i64, Path, description = "Chat id")),
    request_body(content = ChatUpdate, content_type = "application/json", description = "`name` is required with PUT, optional with PATCH"),
    responses(
        (status = 200, description = "Changed (owner or staff)", body = ChatView),
        (status = 400, description = "Invalid input", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, not the owner, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
    ))]
async fn update(
    State(state): State<AppState>,
    method: Method,
    auth: AuthUser,
    Id(id): Id,
    input: Input,
) -> ApiResult<Json<ChatView>> {
    let mut errors = FieldErrors::new();
    let name = if method == Method::PUT || input.has("name") {
        limited_text(&input, "name", MAX_CHAT_NAME_CHARS, &mut errors)
    } else {
        None
    };
    let read_receipts = input.optional_bool("read_receipts", &mut errors);
    let changes = chats::ChatChanges {
        name,
        read_receipts,
    };
    Ok(Json(
        chats::update(&state, &auth.user, id, changes, errors).await?,
    ))
}

/// Deletes a chat and its messages (owner or staff).
#[utoipa::path(delete, path = "/api/chats/{id}/", tag = "Chats", security(("session" = [], "csrf" = []), ("bearer" = [])), params(("id" = i64, Path, description = "Chat id")),
    responses(
        (status = 204, description = "Deleted with its messages; its sockets close with 4004"),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, not the owner, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
    ))]
async fn destroy(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(id): Id,
) -> ApiResult<StatusCode> {
    chats::delete(&state, &auth.user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sends a message to a chat the caller takes part in and delivers it to the chat's sockets.
#[utoipa::path(post, path = "/api/chats/{id}/send_message/", tag = "Messages", security(("session" = [], "csrf" = []), ("bearer" = [])), params(("id" = i64, Path, description = "Chat id")),
    request_body(content = SendMessage, content_type = "application/json"),
    responses(
        (status = 201, description = "Saved, and delivered to the chat's sockets", body = MessageView),
        (status = 400, description = "Invalid input", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
        (status = 429, description = "Sending too fast", body = Detail),
    ))]
async fn send_message(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(id): Id,
    input: Input,
) -> ApiResult<Response> {
    let chat = chats::visible(&state, id, &auth.user).await?;
    let mut errors = FieldErrors::new();
    let attachments = input
        .optional_id_list("attachments", &mut errors)
        .unwrap_or_default();
    let content = input.message_caption("content", attachments.len(), &mut errors);
    let reply_to = input.optional_nullable_id("reply_to", &mut errors);
    errors.check()?;
    let content = content.ok_or_else(|| ApiError::BadRequest("content is required".into()))?;
    let message =
        messaging::send(&state, &auth.user, chat.id, content, reply_to, attachments).await?;
    Ok((StatusCode::CREATED, Json(message)).into_response())
}

/// Lists a chat's messages, oldest first, one page at a time.
#[utoipa::path(get, path = "/api/chats/{id}/messages/", tag = "Messages", security(("session" = []), ("bearer" = [])),
    params(
        ("id" = i64, Path, description = "Chat id"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 500 (default 100)", minimum = 1, maximum = 500),
        ("before" = Option<i64>, Query, description = "Only ids below this; the page holds the newest of them", minimum = 0),
        ("after" = Option<i64>, Query, description = "Only ids above this; the page holds the oldest of them", minimum = 0),
    ),
    responses(
        (status = 200, description = "A page of the chat's history, oldest first", body = Vec<MessageView>, headers(("Link" = String, description = "`<url>; rel=\"next\"` when more items lie beyond this page"))),
        (status = 400, description = "Invalid input", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
    ))]
async fn messages(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(id): Id,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    // The page is read with the membership condition in the same statement; visibility is
    // looked up on its own only to tell an empty page from a chat the caller cannot see.
    let cursor = match Cursor::from_query(query.as_deref()) {
        Ok(cursor) => cursor,
        Err(err) => {
            chats::visible(&state, id, &auth.user).await?;
            return Err(err);
        }
    };
    let rows = chats::history(&state, &auth.user, id, cursor.probe()).await?;
    let path = format!("/api/chats/{id}/messages/");
    let viewer = Viewer::of(&auth.user);
    let mut views = messaging::MessageViews::of(&state.db, &rows, viewer).await?;
    cursor.respond(
        rows,
        |m| m.id,
        &path,
        state.config.page_bytes,
        |m| views.view(m),
    )
}

/// Adds members to a chat by id or username (owner or staff).
#[utoipa::path(post, path = "/api/chats/{id}/participants/", tag = "Chats", security(("session" = [], "csrf" = []), ("bearer" = [])), params(("id" = i64, Path, description = "Chat id")),
    request_body(content = ParticipantsAdd, content_type = "application/json"),
    responses(
        (status = 200, description = "Members added (owner or staff)", body = ChatView),
        (status = 400, description = "Invalid input", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, not the owner, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
    ))]
async fn add_participants(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(id): Id,
    input: Input,
) -> ApiResult<Json<ChatView>> {
    let mut errors = FieldErrors::new();
    if !input.has("participant_ids") && !input.has("participant_usernames") {
        errors.add(
            "non_field_errors",
            "Provide participant_ids or participant_usernames.",
        );
    }
    let members = member_request(&input, &mut errors);
    Ok(Json(
        chats::add_members(&state, &auth.user, id, members, errors).await?,
    ))
}

/// Removes a member other than the owner from a chat (owner or staff).
#[utoipa::path(delete, path = "/api/chats/{id}/participants/{user_id}/", tag = "Chats", security(("session" = [], "csrf" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "Chat id"), ("user_id" = i64, Path, description = "The member to remove")),
    responses(
        (status = 204, description = "Removed; their sockets close with 4003"),
        (status = 400, description = "The owner cannot be removed, or a direct chat, whose members cannot change", body = Detail),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, not the owner, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
    ))]
async fn remove_participant(
    State(state): State<AppState>,
    auth: AuthUser,
    Ids(id, user_id): Ids,
) -> ApiResult<StatusCode> {
    chats::remove_member(&state, &auth.user, id, user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Leaves a chat; an owner's chat passes to the longest-standing member, and the last member
/// out deletes it.
#[utoipa::path(post, path = "/api/chats/{id}/leave/", tag = "Chats", security(("session" = [], "csrf" = []), ("bearer" = [])), params(("id" = i64, Path, description = "Chat id")),
    responses(
        (status = 204, description = "Left; an owner's chat passes to the longest-standing member, the last one out deletes it"),
        (status = 400, description = "A direct chat, whose members cannot change", body = Detail),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
    ))]
async fn leave(State(state): State<AppState>, auth: AuthUser, Id(id): Id) -> ApiResult<StatusCode> {
    chats::leave(&state, &auth.user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
