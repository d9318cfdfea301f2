//! Asking for a reply (`send_message`, plain JSON or server-sent events) and cancelling one.

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
    ai::generation::{AiEvent, Listener},
    auth::AuthUser,
    domain::FinishReason,
    error::{ApiError, ApiResult},
    http::{input::Input, path::Id},
    service::{
        conversations::{self, Question, DEFAULT_CONTEXT_MESSAGES},
        FieldErrors,
    },
    state::AppState,
    wire::{
        frames::AiDelta,
        schemas::{AiSendMessage, BadRequest, Cancelled, Detail, ErrorMessage, ServerSentEvent},
        views::AiMessageView,
    },
};

/// The longest a non-streaming `send_message` waits for its reply.
const REPLY_WAIT: Duration = Duration::from_secs(660);

/// The question of a send: `content`, `include_related_chat_context`, `context_message_limit`.
fn question(input: &Input, errors: &mut FieldErrors) -> Option<Question> {
    let content = input.message_content("content", errors);
    let include_context = input
        .optional_bool("include_related_chat_context", errors)
        .unwrap_or(false);
    let context_limit = input
        .optional_int("context_message_limit", 1, 100, errors)
        .unwrap_or(DEFAULT_CONTEXT_MESSAGES);
    Some(Question {
        content: content?,
        include_context,
        context_limit,
    })
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
        (status = 400, description = "Invalid input", body = BadRequest),
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
    let stream = input.optional_bool("stream", &mut errors).unwrap_or(false)
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
    errors.check()?;
    let question = question.ok_or_else(|| ApiError::BadRequest("content is required".into()))?;
    // Listen before starting, so no event of this reply is missed.
    let mut subscription = state.generations.subscribe(chat.id);
    let started = conversations::ask(&state, &auth.user, &chat, question).await;
    let released = state.generations.clone();
    let user_message = match started {
        Ok(message) => message,
        Err(err) => {
            drop(subscription);
            released.release(chat.id);
            return Err(err.into());
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
                Ok(AiEvent::Reply(reply))
                    if reply.finish_reason.as_deref() == Some(FinishReason::Error.as_str()) =>
                {
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
                    let frame = event("assistant_delta", AiDelta { id, delta });
                    return Some((Ok(frame), (None, Some(events))));
                }
                Ok(AiEvent::Reply(reply)) => event("assistant_message", reply),
                Ok(AiEvent::Failed { message, .. }) => event(
                    "error",
                    ErrorMessage {
                        error: format!("Failed to get response from ChatGPT: {message}"),
                    },
                ),
                Ok(AiEvent::ChatDeleted) | Err(RecvError::Closed) => return None,
                Ok(AiEvent::UserMessage(_)) | Err(RecvError::Lagged(_)) => continue,
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
