//! Asking for a reply (`send_message`, plain JSON or server-sent events), asking again
//! (`regenerate`), editing a question (`edit_message`), showing another branch
//! (`select_branch`), and cancelling a reply.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    http::{header, HeaderMap},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    Json,
};
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;

use crate::{
    ai::generation::{self, AiEvent, Listener},
    auth::AuthUser,
    domain::FinishReason,
    error::{ApiError, ApiResult},
    http::{input::Input, path::Id},
    service::{
        conversations::{self, Question, TurnRequest, DEFAULT_CONTEXT_MESSAGES},
        FieldErrors,
    },
    state::AppState,
    store::ai::AiChat,
    wire::{
        frames::AiDelta,
        schemas::{
            AiEditMessage, AiRegenerate, AiSelectBranch, AiSendMessage, BadRequest, Cancelled,
            Detail, ErrorMessage, ServerSentEvent,
        },
        views::{AiChatView, AiMessageView},
    },
};

/// The longest a non-streaming `send_message` waits for its reply.
const REPLY_WAIT: Duration = Duration::from_secs(660);

/// The question of a send: `content`, `include_related_chat_context`, `context_message_limit`.
fn question(input: &Input, errors: &mut FieldErrors) -> Option<Question> {
    let content = input.message_content("content", errors);
    let (include_context, context_limit) = context_options(input, errors);
    Some(Question {
        content: content?,
        include_context,
        context_limit,
    })
}

/// `include_related_chat_context` (default false) and `context_message_limit` (1 to 100,
/// default 20).
fn context_options(input: &Input, errors: &mut FieldErrors) -> (bool, i64) {
    let include_context = input
        .optional_bool("include_related_chat_context", errors)
        .unwrap_or(false);
    let context_limit = input
        .optional_int("context_message_limit", 1, 100, errors)
        .unwrap_or(DEFAULT_CONTEXT_MESSAGES);
    (include_context, context_limit)
}

/// Whether the client asked for server-sent events: `stream: true`, or `Accept:
/// text/event-stream`.
fn wants_stream(input: &Input, headers: &HeaderMap, errors: &mut FieldErrors) -> bool {
    input.optional_bool("stream", errors).unwrap_or(false)
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"))
}

/// Takes the turn and answers with its reply (or a stream of it). Listens before starting, so
/// no event of this reply is missed.
async fn take_turn(
    state: AppState,
    auth: &AuthUser,
    chat: &AiChat,
    request: TurnRequest,
    stream: bool,
) -> ApiResult<Response> {
    let mut subscription = state.generations.subscribe(chat.id);
    let started = conversations::turn(&state, &auth.user, chat, request).await;
    let released = state.generations.clone();
    let started = match started {
        Ok(started) => started,
        Err(err) => {
            drop(subscription);
            released.release(chat.id);
            return Err(err.into());
        }
    };
    if stream {
        let listener = Listener::new(subscription.events, state.generations.clone(), chat.id);
        // The reply runs already: a failure to read the question's alternatives only leaves
        // them out of this first event.
        let first = match started.question {
            Some(question) => {
                let fallback = AiMessageView::from(question.clone());
                match generation::message_views(&state.db, vec![question]).await {
                    Ok(mut views) if views.len() == 1 => Some(views.remove(0)),
                    _ => Some(fallback),
                }
            }
            None => None,
        };
        let events = sse_events(listener, first, started.reply_id);
        return Ok(Sse::new(events)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    let reply_id = started.reply_id;
    let outcome = tokio::time::timeout(REPLY_WAIT, async {
        loop {
            match subscription.events.recv().await {
                // A reply cut short by a failure is kept, but the request still failed.
                Ok(AiEvent::Reply(reply))
                    if reply.finish_reason.as_deref() == Some(FinishReason::Error.as_str()) =>
                {
                    continue
                }
                Ok(AiEvent::Reply(reply)) if reply.id == reply_id => return Ok(reply),
                Ok(AiEvent::Failed { message, id }) if id.is_none_or(|id| id == reply_id) => {
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

/// Asks the model: stores the message, then answers with the reply, or streams it as
/// server-sent events.
#[utoipa::path(post, path = "/api/ai/chats/{id}/send_message/", tag = "AI Messages", security(("session" = [], "csrf" = []), ("bearer" = [])), params(("id" = i64, Path, description = "AI chat id")),
    request_body(content = AiSendMessage, content_type = "application/json"),
    responses(
        (status = 200, description = "The assistant's reply; with `stream` or `Accept: text/event-stream`, server-sent events `user_message`, `assistant_delta`, then `assistant_message` or `error`", content(
            (AiMessageView = "application/json"),
            (ServerSentEvent = "text/event-stream"),
        )),
        (status = 400, description = "Invalid input, or the chat's model is no longer offered", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
        (status = 409, description = "A reply is already being generated for this AI chat", body = Detail),
        (status = 429, description = "Too many replies in progress for this user, or a token budget is spent (`Retry-After`: seconds until it starts again)", body = Detail),
        (status = 502, description = "The AI provider failed; the question is kept", body = ErrorMessage),
        (status = 503, description = "No AI provider is configured; the question is kept", body = ErrorMessage),
    ))]
pub async fn send_message(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(id): Id,
    headers: HeaderMap,
    input: Input,
) -> ApiResult<Response> {
    let chat = conversations::owned(&state, id, &auth.user).await?;
    let mut errors = FieldErrors::new();
    let question = question(&input, &mut errors);
    let stream = wants_stream(&input, &headers, &mut errors);
    errors.check()?;
    let question = question.ok_or_else(|| ApiError::BadRequest("content is required".into()))?;
    take_turn(state, &auth, &chat, TurnRequest::Ask(question), stream).await
}

/// Answers the active branch's last question again. The answer it had (if any) is kept as an
/// alternative (`siblings`), off the branch shown; `select_branch` shows it again.
#[utoipa::path(post, path = "/api/ai/chats/{id}/regenerate/", tag = "AI Messages", security(("session" = [], "csrf" = []), ("bearer" = [])), params(("id" = i64, Path, description = "AI chat id")),
    request_body(content = AiRegenerate, content_type = "application/json"),
    responses(
        (status = 200, description = "The new reply; with `stream` or `Accept: text/event-stream`, server-sent events `assistant_delta`, then `assistant_message` or `error`", content(
            (AiMessageView = "application/json"),
            (ServerSentEvent = "text/event-stream"),
        )),
        (status = 400, description = "Invalid input, nothing to regenerate, or the chat's model is no longer offered", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
        (status = 409, description = "A reply is already being generated for this AI chat", body = Detail),
        (status = 429, description = "Too many replies in progress for this user, or a token budget is spent (`Retry-After`)", body = Detail),
        (status = 502, description = "The AI provider failed", body = ErrorMessage),
        (status = 503, description = "No AI provider is configured", body = ErrorMessage),
    ))]
pub async fn regenerate(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(id): Id,
    headers: HeaderMap,
    input: Input,
) -> ApiResult<Response> {
    let chat = conversations::owned(&state, id, &auth.user).await?;
    let mut errors = FieldErrors::new();
    let (include_context, context_limit) = context_options(&input, &mut errors);
    let stream = wants_stream(&input, &headers, &mut errors);
    errors.check()?;
    let request = TurnRequest::Regenerate {
        include_context,
        context_limit,
    };
    take_turn(state, &auth, &chat, request, stream).await
}

/// Asks `content` in place of question `message` of the active branch: the new question is an
/// alternative of the old one (same parent), and the conversation goes on from it; the old
/// question and what followed it stay, off the branch shown.
#[utoipa::path(post, path = "/api/ai/chats/{id}/edit_message/", tag = "AI Messages", security(("session" = [], "csrf" = []), ("bearer" = [])), params(("id" = i64, Path, description = "AI chat id")),
    request_body(content = AiEditMessage, content_type = "application/json"),
    responses(
        (status = 200, description = "The reply to the edited question; with `stream` or `Accept: text/event-stream`, server-sent events `user_message`, `assistant_delta`, then `assistant_message` or `error`", content(
            (AiMessageView = "application/json"),
            (ServerSentEvent = "text/event-stream"),
        )),
        (status = 400, description = "Invalid input, `message` is no question of the branch shown, or the chat's model is no longer offered", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
        (status = 409, description = "A reply is already being generated for this AI chat", body = Detail),
        (status = 429, description = "Too many replies in progress for this user, or a token budget is spent (`Retry-After`)", body = Detail),
        (status = 502, description = "The AI provider failed; the question is kept", body = ErrorMessage),
        (status = 503, description = "No AI provider is configured; the question is kept", body = ErrorMessage),
    ))]
pub async fn edit_message(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(id): Id,
    headers: HeaderMap,
    input: Input,
) -> ApiResult<Response> {
    let chat = conversations::owned(&state, id, &auth.user).await?;
    let mut errors = FieldErrors::new();
    let message = input.required_id("message", &mut errors);
    let question = question(&input, &mut errors);
    let stream = wants_stream(&input, &headers, &mut errors);
    errors.check()?;
    let (Some(message), Some(question)) = (message, question) else {
        return Err(ApiError::BadRequest(
            "message and content are required".into(),
        ));
    };
    take_turn(
        state,
        &auth,
        &chat,
        TurnRequest::Edit { message, question },
        stream,
    )
    .await
}

/// Shows the branch through `message`: from the first question to it, then on through the
/// newest alternative at each step. Answers the AI chat as `GET` does, now showing that branch;
/// its sockets hear `branch_selected` (`mrm.v2`).
#[utoipa::path(post, path = "/api/ai/chats/{id}/select_branch/", tag = "AI Messages", security(("session" = [], "csrf" = []), ("bearer" = [])), params(("id" = i64, Path, description = "AI chat id")),
    request_body(content = AiSelectBranch, content_type = "application/json"),
    responses(
        (status = 200, description = "The AI chat, showing the branch through `message`", body = AiChatView),
        (status = 400, description = "Invalid input, or `message` is no message of this AI chat", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
        (status = 409, description = "A reply is being generated for this AI chat", body = Detail),
    ))]
pub async fn select_branch(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(id): Id,
    input: Input,
) -> ApiResult<Json<AiChatView>> {
    let chat = conversations::owned(&state, id, &auth.user).await?;
    let mut errors = FieldErrors::new();
    let message = input.required_id("message", &mut errors);
    errors.check()?;
    let message = message.ok_or_else(|| ApiError::BadRequest("message is required".into()))?;
    Ok(Json(
        conversations::select_branch(&state, &auth.user, &chat, message).await?,
    ))
}

/// The server-sent events of one reply: `user_message` (when a question was stored),
/// `assistant_delta`s, then `assistant_message` or `error`. A client that hangs up stops only
/// its stream, not the reply.
fn sse_events(
    events: Listener,
    user_message: Option<AiMessageView>,
    reply_id: i64,
) -> impl Stream<Item = Result<Event, Infallible>> {
    fn event(name: &str, data: impl serde::Serialize) -> Event {
        Event::default()
            .event(name)
            .json_data(data)
            .unwrap_or_else(|_| Event::default().event(name))
    }
    let first = user_message.map(|m| event("user_message", m));
    futures_util::stream::unfold((first, Some(events)), move |(first, events)| async move {
        if let Some(first) = first {
            return Some((Ok(first), (None, events)));
        }
        let mut events = events?;
        loop {
            let next = match events.recv().await {
                Ok(AiEvent::Delta { id, delta, .. }) if id == reply_id => {
                    let frame = event("assistant_delta", AiDelta { id, delta });
                    return Some((Ok(frame), (None, Some(events))));
                }
                Ok(AiEvent::Reply(reply)) if reply.id == reply_id => {
                    event("assistant_message", reply)
                }
                Ok(AiEvent::Failed { message, id }) if id.is_none_or(|id| id == reply_id) => event(
                    "error",
                    ErrorMessage {
                        error: format!("Failed to get response from ChatGPT: {message}"),
                    },
                ),
                Ok(AiEvent::ChatDeleted) | Err(RecvError::Closed) => return None,
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
            };
            return Some((Ok(next), (None, None)));
        }
    })
}

/// Stops the reply being generated for an AI chat; the text written so far is kept.
#[utoipa::path(post, path = "/api/ai/chats/{id}/cancel/", tag = "AI Messages", security(("session" = [], "csrf" = []), ("bearer" = [])), params(("id" = i64, Path, description = "AI chat id")),
    responses(
        (status = 200, description = "The running reply, if any, stops; its text so far is kept", body = Cancelled),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
    ))]
pub async fn cancel(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(id): Id,
) -> ApiResult<Json<Cancelled>> {
    let cancelled = conversations::cancel(&state, &auth.user, id).await?;
    Ok(Json(Cancelled { cancelled }))
}
