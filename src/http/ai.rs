//! AI conversations over REST: `/api/ai/chats/…`, `/api/ai/messages/…`, `/api/ai/usage/`.
//! Only the owner sees an AI chat (404 for anyone else).

use std::{collections::HashMap, convert::Infallible, time::Duration};

use axum::{
    extract::{RawQuery, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    routing::{get, post},
    Json, Router,
};
use chrono::{DateTime, NaiveDate, Utc};
use futures_util::Stream;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::schemas::{
    AiChatCreate, AiChatUpdate, AiSendMessage, BadRequest, Cancelled, Detail, ErrorMessage,
    NotFoundBody, RelatedChatContext, ServerSentEvent, Usage,
};
use super::{
    input::{required_text, Input},
    pagination::{Cursor, DEFAULT_LIMIT, MAX_LIMIT},
    path::Id,
    views::{format_timestamp, AiChatSummary, AiChatView, AiMessageView},
};
use crate::{
    ai::generation::{AiEvent, Listener, Request, SendError},
    auth::AuthUser,
    domain::MessageContent,
    error::{ApiError, ApiResult, FieldErrors},
    state::AppState,
    store::{
        self,
        ai::{AiChat, AiChatFields},
        users::User,
        Window,
    },
};

pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful assistant.";
const MAX_TITLE_CHARS: usize = 255;
const MAX_SYSTEM_PROMPT_CHARS: usize = 20_000;
/// The longest a non-streaming `send_message` waits for its reply.
const REPLY_WAIT: Duration = Duration::from_secs(660);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/ai/chats", get(list).post(create))
        .route(
            "/api/ai/chats/{id}",
            get(retrieve).put(update).patch(update).delete(destroy),
        )
        .route("/api/ai/chats/{id}/send_message", post(send_message))
        .route("/api/ai/chats/{id}/cancel", post(cancel))
        .route("/api/ai/chats/{id}/messages", get(chat_messages))
        .route(
            "/api/ai/chats/{id}/related_chat_context",
            get(related_chat_context),
        )
        .route("/api/ai/messages", get(all_messages))
        .route("/api/ai/messages/{id}", get(one_message))
        .route("/api/ai/usage", get(usage))
}

/// The AI chat if the caller owns it; 404 otherwise.
pub async fn owned_chat(state: &AppState, id: i64, user: &User) -> ApiResult<AiChat> {
    store::ai::owned(&state.db, id, user.id)
        .await?
        .ok_or(ApiError::NotFound)
}

async fn views(state: &AppState, chats: Vec<AiChat>) -> ApiResult<Vec<AiChatView>> {
    let ids: Vec<i64> = chats.iter().map(|c| c.id).collect();
    let mut messages: HashMap<i64, Vec<AiMessageView>> = HashMap::new();
    for m in store::ai::latest_per_chat(&state.db, &ids, DEFAULT_LIMIT).await? {
        messages
            .entry(m.ai_chat_id)
            .or_default()
            .push(AiMessageView::from(m));
    }
    Ok(chats
        .into_iter()
        .map(|chat| {
            let id = chat.id;
            AiChatView::new(chat, messages.remove(&id).unwrap_or_default())
        })
        .collect())
}

#[utoipa::path(get, path = "/api/ai/chats/", tag = "AI Chat", security(("session" = []), ("bearer" = [])),
    params(
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 500 (default 100)", minimum = 1, maximum = 500),
        ("cursor" = Option<String>, Query, description = "From the `Link` header of the previous page"),
    ),
    responses(
        (status = 200, description = "The caller's AI chats, newest-updated first", body = Vec<AiChatView>, headers(("Link" = String, description = "`<url>; rel=\"next\"` when more items lie beyond this page"))),
        (status = 400, description = "Invalid input", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
    ))]
/// `?limit=` and an opaque `?cursor=` (from the `Link` header): the list is ordered by last
/// update, newest first, so its cursor is the last row's update time and id.
async fn list(
    State(state): State<AppState>,
    auth: AuthUser,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let mut errors = FieldErrors::new();
    let mut limit = DEFAULT_LIMIT;
    let mut cursor = None;
    for (key, value) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "limit" => match value.parse::<i64>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => limit = n,
                _ => errors.add(
                    "limit",
                    format!("Enter a whole number from 1 to {MAX_LIMIT}."),
                ),
            },
            "cursor" => match parse_cursor(&value) {
                Some(c) => cursor = Some(c),
                None => errors.add("cursor", "Invalid cursor."),
            },
            _ => {}
        }
    }
    errors.check()?;
    let mut chats = store::ai::page_for_user(&state.db, auth.user.id, cursor, limit + 1).await?;
    let mut headers = HeaderMap::new();
    if chats.len() as i64 > limit {
        chats.truncate(limit as usize);
        if let Some(last) = chats.last() {
            let next = format!(
                "</api/ai/chats/?limit={limit}&cursor={}.{}>; rel=\"next\"",
                last.updated_at.timestamp_micros(),
                last.id
            );
            if let Ok(value) = HeaderValue::from_str(&next) {
                headers.insert(header::LINK, value);
            }
        }
    }
    Ok((headers, Json(views(&state, chats).await?)).into_response())
}

fn parse_cursor(raw: &str) -> Option<(DateTime<Utc>, i64)> {
    let (micros, id) = raw.split_once('.')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        id.parse().ok()?,
    ))
}

/// Reads the writable fields; `existing` supplies what a PATCH leaves out. The related chat is
/// checked on every write: it must exist and the caller must take part in it.
async fn chat_fields(
    state: &AppState,
    user: &User,
    input: &Input,
    existing: Option<&AiChat>,
    partial: bool,
) -> ApiResult<(String, String, Option<i64>)> {
    let mut errors = FieldErrors::new();
    let title = if !partial || input.has("title") {
        required_text(input, "title", MAX_TITLE_CHARS, &mut errors)
    } else {
        existing.map(|c| c.title.clone())
    };
    let system_prompt = if input.has("system_prompt") {
        required_text(input, "system_prompt", MAX_SYSTEM_PROMPT_CHARS, &mut errors)
    } else {
        Some(
            existing
                .map(|c| c.system_prompt.clone())
                .unwrap_or_else(|| DEFAULT_SYSTEM_PROMPT.to_owned()),
        )
    };
    let related_chat = if input.has("related_chat") {
        input.optional_nullable_id("related_chat", &mut errors)
    } else {
        existing.and_then(|c| c.related_chat_id)
    };
    errors.check()?;
    if let Some(chat_id) = related_chat {
        if store::chats::last_seq(&state.db, chat_id).await?.is_none() {
            return Err(ApiError::Validation(FieldErrors::single(
                "related_chat",
                format!("Invalid pk \"{chat_id}\" - object does not exist."),
            )));
        }
        if store::chats::visible_to(&state.db, chat_id, user.id)
            .await?
            .is_none()
        {
            return Err(ApiError::Validation(FieldErrors::single(
                "related_chat",
                "You must be a participant in the related chat.",
            )));
        }
    }
    match (title, system_prompt) {
        (Some(title), Some(system_prompt)) => Ok((title, system_prompt, related_chat)),
        _ => Err(ApiError::BadRequest("incomplete AI chat".into())),
    }
}

#[utoipa::path(post, path = "/api/ai/chats/", tag = "AI Chat", security(("session" = [], "csrf" = []), ("bearer" = [])),
    request_body(content = AiChatCreate, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = AiChatSummary),
        (status = 400, description = "Invalid input", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
    ))]
async fn create(
    State(state): State<AppState>,
    auth: AuthUser,
    input: Input,
) -> ApiResult<Response> {
    let (title, system_prompt, related_chat_id) =
        chat_fields(&state, &auth.user, &input, None, false).await?;
    let fields = AiChatFields {
        title: &title,
        system_prompt: &system_prompt,
        related_chat_id,
    };
    let id = store::ai::create(&state.db, auth.user.id, &fields).await?;
    let summary = AiChatSummary {
        id,
        title,
        system_prompt,
        related_chat: related_chat_id,
    };
    Ok((StatusCode::CREATED, Json(summary)).into_response())
}

#[utoipa::path(get, path = "/api/ai/chats/{id}/", tag = "AI Chat", security(("session" = []), ("bearer" = [])), params(("id" = i64, Path, description = "AI chat id")),
    responses(
        (status = 200, description = "The AI chat with its newest 100 messages", body = AiChatView),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
    ))]
async fn retrieve(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(id): Id,
) -> ApiResult<Json<AiChatView>> {
    let chat = owned_chat(&state, id, &auth.user).await?;
    Ok(Json(views(&state, vec![chat]).await?.remove(0)))
}

#[utoipa::path(method(put, patch), path = "/api/ai/chats/{id}/", tag = "AI Chat", security(("session" = [], "csrf" = []), ("bearer" = [])), params(("id" = i64, Path, description = "AI chat id")),
    request_body(content = AiChatUpdate, content_type = "application/json", description = "`title` is required with PUT; the related chat is re-checked on every write"),
    responses(
        (status = 200, description = "Updated", body = AiChatSummary),
        (status = 400, description = "Invalid input", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
    ))]
async fn update(
    State(state): State<AppState>,
    method: Method,
    auth: AuthUser,
    Id(id): Id,
    input: Input,
) -> ApiResult<Json<AiChatSummary>> {
    let chat = owned_chat(&state, id, &auth.user).await?;
    let partial = method == Method::PATCH;
    let (title, system_prompt, related_chat_id) =
        chat_fields(&state, &auth.user, &input, Some(&chat), partial).await?;
    let fields = AiChatFields {
        title: &title,
        system_prompt: &system_prompt,
        related_chat_id,
    };
    store::ai::update(&state.db, chat.id, &fields).await?;
    Ok(Json(AiChatSummary {
        id: chat.id,
        title,
        system_prompt,
        related_chat: related_chat_id,
    }))
}

#[utoipa::path(delete, path = "/api/ai/chats/{id}/", tag = "AI Chat", security(("session" = [], "csrf" = []), ("bearer" = [])), params(("id" = i64, Path, description = "AI chat id")),
    responses(
        (status = 204, description = "Deleted with its messages (its token accounting stays)"),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
    ))]
async fn destroy(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(id): Id,
) -> ApiResult<StatusCode> {
    let chat = owned_chat(&state, id, &auth.user).await?;
    store::ai::delete(&state.db, chat.id).await?;
    state.generations.chat_deleted(chat.id);
    Ok(StatusCode::NO_CONTENT)
}

/// The related chat's newest `limit` messages, if a chat is linked and the owner still takes
/// part in it; otherwise none.
pub async fn context_for(
    state: &AppState,
    chat: &AiChat,
    user: &User,
    limit: i64,
) -> ApiResult<Vec<store::messages::Message>> {
    let Some(related) = chat.related_chat_id else {
        return Ok(Vec::new());
    };
    if store::chats::visible_to(&state.db, related, user.id)
        .await?
        .is_none()
    {
        tracing::info!(
            ai_chat.id = chat.id,
            "related chat context skipped: no longer a participant"
        );
        return Ok(Vec::new());
    }
    let window = Window {
        after: None,
        before: None,
        limit,
    };
    Ok(store::messages::page_in_chat(&state.db, related, user.id, window).await?)
}

/// Turns a refused start into the contract's errors.
pub fn send_error(err: SendError) -> ApiError {
    match err {
        SendError::NotConfigured => ApiError::Unavailable("AI provider is not configured".into()),
        SendError::AlreadyRunning => {
            ApiError::Conflict("A reply is already being generated for this AI chat.".into())
        }
        SendError::TooMany => {
            ApiError::Busy("Too many AI replies in progress; wait for one to finish.".into())
        }
        SendError::Store(err) => err.into(),
    }
}

/// The message part of a send: `content`, `include_related_chat_context`, `context_message_limit`.
pub struct SendFields {
    pub content: MessageContent,
    pub include_context: bool,
    pub context_limit: i64,
}

pub fn send_fields(input: &Input, errors: &mut FieldErrors) -> Option<SendFields> {
    let content =
        input
            .required_string("content", errors)
            .and_then(|raw| match MessageContent::parse(raw) {
                Ok(content) => Some(content),
                Err(message) => {
                    errors.add("content", message);
                    None
                }
            });
    let include_context = input
        .optional_bool("include_related_chat_context", errors)
        .unwrap_or(false);
    let context_limit = input
        .optional_int("context_message_limit", 1, 100, errors)
        .unwrap_or(20);
    Some(SendFields {
        content: content?,
        include_context,
        context_limit,
    })
}

#[utoipa::path(post, path = "/api/ai/chats/{id}/send_message/", tag = "AI Messages", security(("session" = [], "csrf" = []), ("bearer" = [])), params(("id" = i64, Path, description = "AI chat id")),
    request_body(content = AiSendMessage, content_type = "application/json"),
    responses(
        (status = 200, description = "The assistant's reply; with `stream` or `Accept: text/event-stream`, server-sent events `user_message`, `assistant_delta`, then `assistant_message` or `error`", content(
            (AiMessageView = "application/json"),
            (ServerSentEvent = "text/event-stream"),
        )),
        (status = 400, description = "Invalid input", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
        (status = 409, description = "A reply is already being generated for this AI chat", body = Detail),
        (status = 429, description = "Too many replies in progress for this user", body = Detail),
        (status = 502, description = "The AI provider failed; the question is kept", body = ErrorMessage),
        (status = 503, description = "No AI provider is configured; the question is kept", body = ErrorMessage),
    ))]
async fn send_message(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(id): Id,
    headers: HeaderMap,
    input: Input,
) -> ApiResult<Response> {
    let chat = owned_chat(&state, id, &auth.user).await?;
    let mut errors = FieldErrors::new();
    let fields = send_fields(&input, &mut errors);
    let stream = input.optional_bool("stream", &mut errors).unwrap_or(false)
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
    errors.check()?;
    let fields = fields.ok_or_else(|| ApiError::BadRequest("content is required".into()))?;
    let context = if fields.include_context {
        context_for(&state, &chat, &auth.user, fields.context_limit).await?
    } else {
        Vec::new()
    };
    // Listen before starting, so no event of this reply is missed.
    let mut subscription = state.generations.subscribe(chat.id);
    let request = Request {
        user_id: auth.user.id,
        ai_chat_id: chat.id,
        system_prompt: chat.system_prompt.clone(),
        content: fields.content.into_string(),
        context,
    };
    let started = state.generations.send(request).await;
    let released = state.generations.clone();
    let user_message = match started {
        Ok(message) => message,
        Err(err) => {
            drop(subscription);
            released.release(chat.id);
            return Err(send_error(err));
        }
    };
    if stream {
        let listener = Listener::new(subscription.events, state.generations.clone(), chat.id);
        let events = sse_events(listener, AiMessageView::from(user_message));
        return Ok(Sse::new(events)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    let outcome = tokio::time::timeout(REPLY_WAIT, async {
        loop {
            match subscription.events.recv().await {
                // A reply cut short by a failure is kept, but the request still failed.
                Ok(AiEvent::Reply(reply)) if reply.finish_reason.as_deref() == Some("error") => {
                    continue
                }
                Ok(AiEvent::Reply(reply)) => return Ok(reply),
                Ok(AiEvent::Failed { message, .. }) => {
                    return Err(ApiError::Upstream(format!(
                        "Failed to get response from ChatGPT: {message}"
                    )))
                }
                Ok(AiEvent::ChatDeleted) | Err(RecvError::Closed) => {
                    return Err(ApiError::NotFound)
                }
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
            }
        }
    })
    .await;
    drop(subscription);
    released.release(chat.id);
    match outcome {
        Ok(Ok(reply)) => Ok(Json(reply).into_response()),
        Ok(Err(err)) => Err(err),
        Err(_) => Err(ApiError::Upstream(
            "Failed to get response from ChatGPT: the AI provider did not answer in time".into(),
        )),
    }
}

/// The server-sent events of one reply: `user_message`, `assistant_delta`s, then
/// `assistant_message` or `error`. A client that hangs up stops only its stream, not the reply.
fn sse_events(
    events: Listener,
    user_message: AiMessageView,
) -> impl Stream<Item = Result<Event, Infallible>> {
    fn event(name: &str, data: impl serde::Serialize) -> Event {
        Event::default()
            .event(name)
            .json_data(data)
            .unwrap_or_else(|_| Event::default().event(name))
    }
    let first = Some(event("user_message", user_message));
    futures_util::stream::unfold((first, Some(events)), |(first, events)| async move {
        if let Some(first) = first {
            return Some((Ok(first), (None, events)));
        }
        let mut events = events?;
        loop {
            let next = match events.recv().await {
                Ok(AiEvent::Delta { id, delta }) => {
                    let frame = event("assistant_delta", json!({ "id": id, "delta": delta }));
                    return Some((Ok(frame), (None, Some(events))));
                }
                Ok(AiEvent::Reply(reply)) => event("assistant_message", reply),
                Ok(AiEvent::Failed { message, .. }) => event(
                    "error",
                    json!({ "error": format!("Failed to get response from ChatGPT: {message}") }),
                ),
                Ok(AiEvent::ChatDeleted) | Err(RecvError::Closed) => return None,
                Ok(AiEvent::UserMessage(_)) | Err(RecvError::Lagged(_)) => continue,
            };
            return Some((Ok(next), (None, None)));
        }
    })
}

#[utoipa::path(post, path = "/api/ai/chats/{id}/cancel/", tag = "AI Messages", security(("session" = [], "csrf" = []), ("bearer" = [])), params(("id" = i64, Path, description = "AI chat id")),
    responses(
        (status = 200, description = "The running reply, if any, stops; its text so far is kept", body = Cancelled),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
    ))]
async fn cancel(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(id): Id,
) -> ApiResult<Json<Value>> {
    let chat = owned_chat(&state, id, &auth.user).await?;
    let cancelled = state.generations.cancel(chat.id);
    Ok(Json(json!({ "cancelled": cancelled })))
}

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
async fn chat_messages(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(id): Id,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let chat = owned_chat(&state, id, &auth.user).await?;
    let cursor = Cursor::from_query(query.as_deref())?;
    let rows = store::ai::messages_in_chat(&state.db, chat.id, cursor.probe()).await?;
    let path = format!("/api/ai/chats/{}/messages/", chat.id);
    Ok(cursor.respond(rows, |m| m.id, &path, AiMessageView::from))
}

#[utoipa::path(get, path = "/api/ai/chats/{id}/related_chat_context/", tag = "AI Chat", security(("session" = []), ("bearer" = [])),
    params(
        ("id" = i64, Path, description = "AI chat id"),
        ("message_limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Default 50"),
    ),
    responses(
        (status = 200, description = "What the model would be given from the linked group chat", body = RelatedChatContext),
        (status = 400, description = "Invalid input", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "No AI chat, or no related chat linked (or no longer a participant)", body = NotFoundBody),
    ))]
async fn related_chat_context(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(id): Id,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let chat = owned_chat(&state, id, &auth.user).await?;
    let mut errors = FieldErrors::new();
    let mut limit = 50;
    for (key, value) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        if key == "message_limit" {
            match value.trim().parse::<i64>() {
                Ok(n) if n < 1 => errors.add(
                    "message_limit",
                    "Ensure this value is greater than or equal to 1.",
                ),
                Ok(n) if n > 200 => errors.add(
                    "message_limit",
                    "Ensure this value is less than or equal to 200.",
                ),
                Ok(n) => limit = n,
                Err(_) => errors.add("message_limit", "A valid integer is required."),
            }
        }
    }
    errors.check()?;
    let Some(related) = chat.related_chat_id else {
        return Err(ApiError::Missing(
            "No related chat linked to this AI chat".into(),
        ));
    };
    if store::chats::visible_to(&state.db, related, auth.user.id)
        .await?
        .is_none()
    {
        return Err(ApiError::Missing(
            "No related chat linked to this AI chat".into(),
        ));
    }
    let messages = context_for(&state, &chat, &auth.user, limit).await?;
    let lines: Vec<Value> = messages
        .iter()
        .map(|m| json!({ "sender": m.sender_username, "content": m.content, "timestamp": format_timestamp(&m.created_at) }))
        .collect();
    Ok(Json(json!({
        "chat_name": chat.related_chat_name,
        "message_count": lines.len(),
        "messages": lines,
    })))
}

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
async fn all_messages(
    State(state): State<AppState>,
    auth: AuthUser,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let cursor = Cursor::from_query(query.as_deref())?;
    let rows = store::ai::messages_for_user(&state.db, auth.user.id, cursor.probe()).await?;
    Ok(cursor.respond(rows, |m| m.id, "/api/ai/messages/", AiMessageView::from))
}

#[utoipa::path(get, path = "/api/ai/messages/{id}/", tag = "AI Messages", security(("session" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "AI message id")),
    responses(
        (status = 200, description = "The AI message", body = AiMessageView),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
    ))]
async fn one_message(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(id): Id,
) -> ApiResult<Json<AiMessageView>> {
    let message = store::ai::message_visible_to(&state.db, id, auth.user.id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(AiMessageView::from(message)))
}

#[utoipa::path(get, path = "/api/ai/usage/", tag = "AI Messages", security(("session" = []), ("bearer" = [])),
    params(
        ("from" = Option<String>, Query, description = "First day, YYYY-MM-DD (default: 29 days before `to`)"),
        ("to" = Option<String>, Query, description = "Last day, YYYY-MM-DD (default: today, UTC)"),
        ("user" = Option<i64>, Query, description = "Another user's id (staff only)"),
    ),
    responses(
        (status = 200, description = "Token use in total, per model and per day", body = Usage),
        (status = 400, description = "Invalid input", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or not staff", body = Detail),
        (status = 404, description = "No such user", body = Detail),
    ))]
/// Token use for a date range (`from`, `to` as `YYYY-MM-DD`, default the last 30 days), in total,
/// per model and per day. Staff may ask about another user with `user=<id>`.
async fn usage(
    State(state): State<AppState>,
    auth: AuthUser,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let mut errors = FieldErrors::new();
    let today = Utc::now().date_naive();
    let (mut from, mut to, mut user_id) = (None, None, auth.user.id);
    for (key, value) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        let date = || NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d").ok();
        match key.as_ref() {
            "from" => match date() {
                Some(d) => from = Some(d),
                None => errors.add("from", "Enter a date as YYYY-MM-DD."),
            },
            "to" => match date() {
                Some(d) => to = Some(d),
                None => errors.add("to", "Enter a date as YYYY-MM-DD."),
            },
            "user" => match value.trim().parse::<i64>() {
                Ok(id) => user_id = id,
                Err(_) => errors.add("user", "A valid integer is required."),
            },
            _ => {}
        }
    }
    errors.check()?;
    let to = to.unwrap_or(today);
    let from = match from {
        Some(from) => from,
        None => to.checked_sub_days(chrono::Days::new(29)).ok_or_else(|| {
            ApiError::Validation(FieldErrors::single("to", "Enter a date as YYYY-MM-DD."))
        })?,
    };
    if from > to {
        return Err(ApiError::Validation(FieldErrors::single(
            "from",
            "Must not be after \"to\".",
        )));
    }
    if user_id != auth.user.id {
        if !(auth.user.is_staff || auth.user.is_superuser) {
            return Err(ApiError::PermissionDenied);
        }
        if store::users::by_id(&state.db, user_id).await?.is_none() {
            return Err(ApiError::NotFound);
        }
    }
    let (from_s, to_s) = (
        from.format("%Y-%m-%d").to_string(),
        to.format("%Y-%m-%d").to_string(),
    );
    let rows = store::ai::usage(&state.db, user_id, &from_s, &to_s).await?;
    let mut by_model: Vec<(String, [i64; 3])> = Vec::new();
    let mut by_day: Vec<(String, [i64; 3])> = Vec::new();
    let mut total = [0i64; 3];
    for row in &rows {
        let counts = [row.prompt_tokens, row.completion_tokens, row.total_tokens];
        add(&mut by_model, &row.model, counts);
        add(&mut by_day, &row.day, counts);
        for (sum, n) in total.iter_mut().zip(counts) {
            *sum += n;
        }
    }
    by_model.sort();
    let tokens = |c: [i64; 3]| json!({ "prompt_tokens": c[0], "completion_tokens": c[1], "total_tokens": c[2] });
    let with = |key: &str, name: &str, c: [i64; 3]| {
        let mut value = tokens(c);
        value[key] = json!(name);
        value
    };
    Ok(Json(json!({
        "user": user_id,
        "from": from_s,
        "to": to_s,
        "prompt_tokens": total[0],
        "completion_tokens": total[1],
        "total_tokens": total[2],
        "by_model": by_model.iter().map(|(m, c)| with("model", m, *c)).collect::<Vec<_>>(),
        "by_day": by_day.iter().map(|(d, c)| with("day", d, *c)).collect::<Vec<_>>(),
        "by_day_and_model": rows.iter().map(|r| {
            let mut value = with("day", &r.day, [r.prompt_tokens, r.completion_tokens, r.total_tokens]);
            value["model"] = json!(r.model);
            value
        }).collect::<Vec<_>>(),
    })))
}

fn add(groups: &mut Vec<(String, [i64; 3])>, key: &str, counts: [i64; 3]) {
    match groups.iter_mut().find(|(k, _)| k == key) {
        Some((_, sums)) => {
            for (sum, n) in sums.iter_mut().zip(counts) {
                *sum += n;
            }
        }
        None => groups.push((key.to_owned(), counts)),
    }
}
