//! Chats: list, create, read, rename, delete, membership, and the chat's messages.
//! Only participants see a chat (404 for anyone else); only its owner or staff rename, delete
//! or manage members (403 for other participants); any participant may leave.

use std::collections::{BTreeSet, HashMap};

use axum::{
    extract::{RawQuery, State},
    http::{Method, StatusCode},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
    Json, Router,
};

use super::schemas::{BadRequest, ChatCreate, ChatUpdate, Detail, ParticipantsAdd, SendMessage};
use super::{
    input::{required_text, Input},
    pagination::{Cursor, DEFAULT_LIMIT},
    path::{Id, Ids},
    views::{ChatView, MessageView, UserView},
};
use crate::{
    auth::AuthUser,
    domain::{MessageContent, MAX_CHAT_NAME_CHARS},
    error::{ApiError, ApiResult, FieldErrors},
    realtime::hub::RoomEvent,
    state::AppState,
    store::{
        self,
        chats::{Chat, Departure},
        users::User,
        Db,
    },
};

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

/// Builds the views of many chats with a fixed number of queries, whatever their count.
async fn chat_views(db: &Db, chats: Vec<Chat>) -> ApiResult<Vec<ChatView>> {
    let ids: Vec<i64> = chats.iter().map(|c| c.id).collect();
    let mut participants: HashMap<i64, Vec<UserView>> = HashMap::new();
    for p in store::chats::participants(db, &ids).await? {
        participants
            .entry(p.chat_id)
            .or_default()
            .push(UserView::from(&p.user));
    }
    let mut messages: HashMap<i64, Vec<MessageView>> = HashMap::new();
    for m in store::messages::latest_per_chat(db, &ids, DEFAULT_LIMIT).await? {
        messages
            .entry(m.chat_id)
            .or_default()
            .push(MessageView::from(m));
    }
    Ok(chats
        .into_iter()
        .map(|chat| {
            let id = chat.id;
            ChatView::new(
                chat,
                participants.remove(&id).unwrap_or_default(),
                messages.remove(&id).unwrap_or_default(),
            )
        })
        .collect())
}

async fn chat_view(db: &Db, chat: Chat) -> ApiResult<ChatView> {
    Ok(chat_views(db, vec![chat]).await?.remove(0))
}

/// The chat if the caller takes part in it; 404 otherwise, so outsiders learn nothing.
async fn visible_chat(state: &AppState, chat_id: i64, user: &User) -> ApiResult<Chat> {
    store::chats::visible_to(&state.db, chat_id, user.id)
        .await?
        .ok_or(ApiError::NotFound)
}

/// The chat if the caller may manage it: 404 when they cannot see it, 403 when they can but are
/// neither its owner nor staff.
async fn managed_chat(state: &AppState, chat_id: i64, user: &User) -> ApiResult<Chat> {
    let chat = visible_chat(state, chat_id, user).await?;
    if chat.owner_id == Some(user.id) || user.is_staff || user.is_superuser {
        Ok(chat)
    } else {
        Err(ApiError::PermissionDenied)
    }
}

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
    let chats = store::chats::page_for_user(&state.db, auth.user.id, cursor.probe()).await?;
    let (chats, headers) = cursor.finish(chats, |c| c.id, "/api/chats/");
    Ok((headers, Json(chat_views(&state.db, chats).await?)).into_response())
}

/// Resolves `participant_ids` (every id must exist) and `participant_usernames` (per `strict`,
/// unknown names are an error or skipped) to user ids.
async fn requested_members(
    state: &AppState,
    input: &Input,
    errors: &mut FieldErrors,
    strict_usernames: bool,
) -> ApiResult<BTreeSet<i64>> {
    let ids = input
        .optional_id_list("participant_ids", errors)
        .unwrap_or_default();
    let usernames = input
        .optional_string_list("participant_usernames", errors)
        .unwrap_or_default();
    let mut members = BTreeSet::new();
    if !ids.is_empty() {
        let found: BTreeSet<i64> = store::users::by_ids(&state.db, &ids)
            .await?
            .iter()
            .map(|u| u.id)
            .collect();
        let unknown: BTreeSet<i64> = ids
            .iter()
            .copied()
            .filter(|id| !found.contains(id))
            .collect();
        if !unknown.is_empty() {
            let list: Vec<String> = unknown.iter().map(i64::to_string).collect();
            errors.add(
                "participant_ids",
                format!("Unknown user id(s): {}", list.join(", ")),
            );
        }
        members.extend(found);
    }
    if !usernames.is_empty() {
        let found = store::users::by_usernames(&state.db, &usernames).await?;
        if strict_usernames {
            let known: BTreeSet<&str> = found.iter().map(|u| u.username.as_str()).collect();
            let unknown: BTreeSet<&str> = usernames
                .iter()
                .map(String::as_str)
                .filter(|n| !known.contains(n))
                .collect();
            if !unknown.is_empty() {
                let list: Vec<&str> = unknown.into_iter().collect();
                errors.add(
                    "participant_usernames",
                    format!("Unknown username(s): {}", list.join(", ")),
                );
            }
        }
        members.extend(found.iter().map(|u| u.id));
    }
    Ok(members)
}

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
    let name = required_text(&input, "name", MAX_CHAT_NAME_CHARS, &mut errors);
    // Unknown usernames are skipped silently here, as the original does.
    let mut members = requested_members(&state, &input, &mut errors, false).await?;
    errors.check()?;
    let name = name.ok_or_else(|| ApiError::BadRequest("name is required".into()))?;
    members.insert(auth.user.id);
    let members: Vec<i64> = members.into_iter().collect();
    let chat = store::chats::create(&state.db, &name, auth.user.id, &members).await?;
    tracing::info!(chat.id = chat.id, "chat created");
    Ok((StatusCode::CREATED, Json(chat_view(&state.db, chat).await?)).into_response())
}

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
    let chat = visible_chat(&state, id, &auth.user).await?;
    Ok(Json(chat_view(&state.db, chat).await?))
}

#[utoipa::path(method(put, patch), path = "/api/chats/{id}/", tag = "Chats", security(("session" = [], "csrf" = []), ("bearer" = [])), params(("id" = i64, Path, description = "Chat id")),
    request_body(content = ChatUpdate, content_type = "application/json", description = "`name` is required with PUT, optional with PATCH"),
    responses(
        (status = 200, description = "Renamed (owner or staff)", body = ChatView),
        (status = 400, description = "Invalid input", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, not the owner, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
    ))]
/// PUT requires the name, PATCH may leave it out.
async fn update(
    State(state): State<AppState>,
    method: Method,
    auth: AuthUser,
    Id(id): Id,
    input: Input,
) -> ApiResult<Json<ChatView>> {
    let mut chat = managed_chat(&state, id, &auth.user).await?;
    let mut errors = FieldErrors::new();
    let name = if method == Method::PUT || input.has("name") {
        required_text(&input, "name", MAX_CHAT_NAME_CHARS, &mut errors)
    } else {
        None
    };
    errors.check()?;
    if let Some(name) = name {
        store::chats::rename(&state.db, chat.id, &name).await?;
        chat.name = name;
    }
    Ok(Json(chat_view(&state.db, chat).await?))
}

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
    let chat = managed_chat(&state, id, &auth.user).await?;
    store::chats::delete(&state.db, chat.id).await?;
    state.realtime.publish(chat.id, RoomEvent::ChatDeleted);
    tracing::info!(chat.id = chat.id, "chat deleted");
    Ok(StatusCode::NO_CONTENT)
}

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
    let chat = visible_chat(&state, id, &auth.user).await?;
    let mut errors = FieldErrors::new();
    let content = input
        .required_string("content", &mut errors)
        .and_then(|raw| match MessageContent::parse(raw) {
            Ok(content) => Some(content),
            Err(message) => {
                errors.add("content", message);
                None
            }
        });
    errors.check()?;
    let content = content.ok_or_else(|| ApiError::BadRequest("content is required".into()))?;
    state.limits.message(auth.user.id, chat.id)?;
    let message = state
        .messages
        .post(chat.id, &auth.user, content)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok((StatusCode::CREATED, Json(message)).into_response())
}

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
            visible_chat(&state, id, &auth.user).await?;
            return Err(err);
        }
    };
    let rows = store::messages::page_in_chat(&state.db, id, auth.user.id, cursor.probe()).await?;
    if rows.is_empty() {
        visible_chat(&state, id, &auth.user).await?;
    }
    let path = format!("/api/chats/{id}/messages/");
    Ok(cursor.respond(rows, |m| m.id, &path, MessageView::from))
}

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
    let chat = managed_chat(&state, id, &auth.user).await?;
    let mut errors = FieldErrors::new();
    if !input.has("participant_ids") && !input.has("participant_usernames") {
        errors.add(
            "non_field_errors",
            "Provide participant_ids or participant_usernames.",
        );
    }
    let members = requested_members(&state, &input, &mut errors, true).await?;
    errors.check()?;
    let members: Vec<i64> = members.into_iter().collect();
    let added = store::chats::add_participants(&state.db, chat.id, &members).await?;
    tracing::info!(chat.id = chat.id, added = added.len(), "participants added");
    Ok(Json(chat_view(&state.db, chat).await?))
}

#[utoipa::path(delete, path = "/api/chats/{id}/participants/{user_id}/", tag = "Chats", security(("session" = [], "csrf" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "Chat id"), ("user_id" = i64, Path, description = "The member to remove")),
    responses(
        (status = 204, description = "Removed; their sockets close with 4003"),
        (status = 400, description = "The owner cannot be removed", body = Detail),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, not the owner, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
    ))]
async fn remove_participant(
    State(state): State<AppState>,
    auth: AuthUser,
    Ids(id, user_id): Ids,
) -> ApiResult<StatusCode> {
    let chat = managed_chat(&state, id, &auth.user).await?;
    if chat.owner_id == Some(user_id) {
        return Err(ApiError::BadRequest(
            "The owner cannot be removed from the chat; the owner may leave it instead.".into(),
        ));
    }
    if !store::chats::remove_participant(&state.db, chat.id, user_id).await? {
        return Err(ApiError::NotFound);
    }
    state
        .realtime
        .publish(chat.id, RoomEvent::MemberRemoved { user_id });
    tracing::info!(chat.id = chat.id, removed = user_id, "participant removed");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/chats/{id}/leave/", tag = "Chats", security(("session" = [], "csrf" = []), ("bearer" = [])), params(("id" = i64, Path, description = "Chat id")),
    responses(
        (status = 204, description = "Left; an owner's chat passes to the longest-standing member, the last one out deletes it"),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
    ))]
async fn leave(State(state): State<AppState>, auth: AuthUser, Id(id): Id) -> ApiResult<StatusCode> {
    let chat = visible_chat(&state, id, &auth.user).await?;
    let outcome = store::chats::leave(&state.db, chat.id, auth.user.id).await?;
    let event = match outcome {
        Departure::ChatDeleted => RoomEvent::ChatDeleted,
        _ => RoomEvent::MemberRemoved {
            user_id: auth.user.id,
        },
    };
    state.realtime.publish(chat.id, event);
    tracing::info!(chat.id = chat.id, ?outcome, "participant left");
    Ok(StatusCode::NO_CONTENT)
}
