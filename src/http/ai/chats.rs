//! `/api/ai/chats/`: list, create, read, update and delete AI chats, and the related group
//! chat's context a reply would be given.

use axum::{
    extract::{RawQuery, State},
    http::{HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use chrono::{DateTime, Utc};

use crate::{
    auth::AuthUser,
    error::{ApiError, ApiResult},
    http::{
        input::{limited_text, Input},
        pagination::{self, next_link, JsonPage},
        path::Id,
        query::Query,
    },
    service::{
        conversations::{self, ChatSettings, DEFAULT_SYSTEM_PROMPT},
        FieldErrors,
    },
    state::AppState,
    store::ai::AiChat,
    wire::{
        schemas::{
            AiChatCreate, AiChatUpdate, BadRequest, Detail, NotFoundBody, RelatedChatContext,
        },
        views::{AiChatSummary, AiChatView},
    },
};

const MAX_TITLE_CHARS: usize = 255;
const MAX_SYSTEM_PROMPT_CHARS: usize = 20_000;
/// A model id's longest: a provider name (32) and a model name (200) with the `/` between.
const MAX_MODEL_CHARS: usize = 233;

/// Lists the caller's AI chats, most recently updated first, each with its newest 100 messages;
/// further pages come from the opaque `cursor` in the `Link` header. A page ends early when its
/// JSON reaches `MRM_PAGE_BYTES`.
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
pub async fn list(
    State(state): State<AppState>,
    auth: AuthUser,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let query = Query::parse(query.as_deref());
    let mut errors = FieldErrors::new();
    let limit = pagination::limit(&query, &mut errors);
    let mut cursor = None;
    for value in query.values("cursor") {
        match parse_cursor(value) {
            Some(c) => cursor = Some(c),
            None => errors.add("cursor", "Invalid cursor."),
        }
    }
    errors.check()?;
    let mut page = JsonPage::new(limit as usize, state.config.page_bytes);
    let mut last = None;
    conversations::list(&state, &auth.user, cursor, limit + 1, |chat| {
        let position = (chat.updated_at, chat.id);
        let taken = page.push(|| chat)?;
        if taken {
            last = Some(position);
        }
        Ok::<_, ApiError>(taken)
    })
    .await?;
    let headers = match last.filter(|_| page.ended_early()) {
        Some((updated_at, id)) => {
            let micros = updated_at.timestamp_micros();
            next_link(
                "/api/ai/chats/",
                &format!("limit={limit}&cursor={micros}.{id}"),
            )
        }
        None => HeaderMap::new(),
    };
    Ok(page.respond(headers, false))
}

/// Reads a `cursor`: `<updated_at in microseconds since the epoch>.<id>`. The list is ordered by
/// last update, newest first, so a position in it is the last row's update time and id.
fn parse_cursor(raw: &str) -> Option<(DateTime<Utc>, i64)> {
    let (micros, id) = raw.split_once('.')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        id.parse().ok()?,
    ))
}

/// Reads the writable fields; `existing` supplies what a PATCH leaves out. The related chat is
/// checked on every write: it must exist and the caller must take part in it.
pub fn chat_settings(
    input: &Input,
    existing: Option<&AiChat>,
    partial: bool,
) -> ApiResult<ChatSettings> {
    let mut errors = FieldErrors::new();
    let title = if input.has("title") || (existing.is_some() && !partial) {
        limited_text(input, "title", MAX_TITLE_CHARS, &mut errors)
    } else {
        // Created without one: the default, which the first exchange replaces.
        Some(
            existing
                .map(|c| c.title.clone())
                .unwrap_or_else(|| conversations::DEFAULT_TITLE.to_owned()),
        )
    };
    let system_prompt = if input.has("system_prompt") {
        limited_text(input, "system_prompt", MAX_SYSTEM_PROMPT_CHARS, &mut errors)
    } else {
        Some(
            existing
                .map(|c| c.system_prompt.clone())
                .unwrap_or_else(|| DEFAULT_SYSTEM_PROMPT.to_owned()),
        )
    };
    let model = if input.has("model") {
        limited_text(input, "model", MAX_MODEL_CHARS, &mut errors)
    } else {
        None
    };
    let related_chat_given = input.has("related_chat");
    let related_chat = if related_chat_given {
        input.optional_nullable_id("related_chat", &mut errors)
    } else {
        existing.and_then(|c| c.related_chat_id)
    };
    errors.check()?;
    match (title, system_prompt) {
        (Some(title), Some(system_prompt)) => Ok(ChatSettings {
            title,
            system_prompt,
            related_chat,
            related_chat_given,
            model,
        }),
        _ => Err(ApiError::BadRequest("incomplete AI chat".into())),
    }
}

/// Creates an AI chat for the caller.
#[utoipa::path(post, path = "/api/ai/chats/", tag = "AI Chat", security(("session" = [], "csrf" = []), ("bearer" = [])),
    request_body(content = AiChatCreate, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = AiChatSummary),
        (status = 400, description = "Invalid input", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
    ))]
pub async fn create(
    State(state): State<AppState>,
    auth: AuthUser,
    input: Input,
) -> ApiResult<Response> {
    let settings = chat_settings(&input, None, false)?;
    let summary = conversations::create(&state, &auth.user, settings).await?;
    Ok((StatusCode::CREATED, Json(summary)).into_response())
}

/// Returns one of the caller's AI chats with its newest 100 messages.
#[utoipa::path(get, path = "/api/ai/chats/{id}/", tag = "AI Chat", security(("session" = []), ("bearer" = [])), params(("id" = i64, Path, description = "AI chat id")),
    responses(
        (status = 200, description = "The AI chat with its newest 100 messages", body = AiChatView),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
    ))]
pub async fn retrieve(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(id): Id,
) -> ApiResult<Json<AiChatView>> {
    Ok(Json(conversations::get(&state, id, &auth.user).await?))
}

/// Updates an AI chat's title, system prompt or related chat, answering with the whole AI chat;
/// PUT requires `title`, PATCH may leave it out.
#[utoipa::path(method(put, patch), path = "/api/ai/chats/{id}/", tag = "AI Chat", security(("session" = [], "csrf" = []), ("bearer" = [])), params(("id" = i64, Path, description = "AI chat id")),
    request_body(content = AiChatUpdate, content_type = "application/json", description = "`title` is required with PUT; the related chat is re-checked on every write"),
    responses(
        (status = 200, description = "Updated: the whole AI chat, as `GET` returns it", body = AiChatView),
        (status = 400, description = "Invalid input", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
    ))]
pub async fn update(
    State(state): State<AppState>,
    method: Method,
    auth: AuthUser,
    Id(id): Id,
    input: Input,
) -> ApiResult<Json<AiChatView>> {
    let chat = conversations::owned(&state, id, &auth.user).await?;
    let settings = chat_settings(&input, Some(&chat), method == Method::PATCH)?;
    Ok(Json(
        conversations::update(&state, &auth.user, &chat, settings).await?,
    ))
}

/// Deletes an AI chat and its messages, stopping any reply being generated; its token usage
/// stays counted.
#[utoipa::path(delete, path = "/api/ai/chats/{id}/", tag = "AI Chat", security(("session" = [], "csrf" = []), ("bearer" = [])), params(("id" = i64, Path, description = "AI chat id")),
    responses(
        (status = 204, description = "Deleted with its messages (its token accounting stays)"),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
    ))]
pub async fn destroy(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(id): Id,
) -> ApiResult<StatusCode> {
    conversations::delete(&state, &auth.user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Shows what the model would be given from the AI chat's related group chat: its newest
/// `message_limit` messages.
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
pub async fn related_chat_context(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(id): Id,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<RelatedChatContext>> {
    let chat = conversations::owned(&state, id, &auth.user).await?;
    let mut errors = FieldErrors::new();
    let limit = Query::parse(query.as_deref())
        .integer("message_limit", Some(1), Some(200), &mut errors)
        .unwrap_or(50);
    errors.check()?;
    Ok(Json(
        conversations::related_context(&state, &auth.user, &chat, limit).await?,
    ))
}
