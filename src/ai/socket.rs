//! The AI chat socket's connection, after its handshake (in the HTTP layer's `sockets`): the owner's
//! live view of an AI chat. Frames as the contract; in `mrm.v2` also `assistant_delta` frames
//! while a reply streams and `{"type": "cancel"}` to stop it, and a socket that joins while a
//! reply runs first gets the text so far as one delta, then the live ones.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{stream::SplitStream, SinkExt, StreamExt};
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_util::sync::CancellationToken;

use super::generation::AiEvent;
use crate::{
    domain::{text, ContentError, MessageContent},
    realtime::{
        close::{self, Close},
        deadline::{within, WriteError},
        registry::Slot,
    },
    service::{
        conversations::{self, Question, TurnRequest, DEFAULT_CONTEXT_MESSAGES},
        ServiceError,
    },
    state::AppState,
    store::users::User,
    wire::frames::{
        self, AiClientFrame, AssistantDeltaFrame, AssistantMessageFrame, BranchSelectedFrame,
        ContextLimit, Protocol, UserMessageFrame,
    },
};

fn frame(frame: &impl serde::Serialize) -> Message {
    Message::Text(frames::encode(frame))
}

fn error_frame(text: &str) -> Message {
    Message::Text(frames::error(text))
}

/// What to do with an event: `Some(Some(frame))` sends it, `Some(None)` skips it (a delta on
/// the original protocol), `None` closes the socket (the AI chat is gone).
fn event_frame(event: AiEvent, protocol: Protocol) -> Option<Option<Message>> {
    Some(Some(match event {
        AiEvent::UserMessage(m) => frame(&UserMessageFrame::new(m, protocol)),
        AiEvent::Delta { .. } | AiEvent::BranchSelected { .. } if !protocol.extended() => {
            return Some(None)
        }
        AiEvent::Delta { id, delta, .. } => frame(&AssistantDeltaFrame::new(id, delta)),
        AiEvent::BranchSelected { message } => frame(&BranchSelectedFrame::new(message)),
        AiEvent::Reply(m) => frame(&AssistantMessageFrame::new(m, protocol)),
        AiEvent::Failed { message, .. } => {
            error_frame(&format!("Failed to get ChatGPT response: {message}"))
        }
        AiEvent::ChatDeleted => return None,
    }))
}

fn close_frame(close: Close) -> Message {
    Message::Close(Some(CloseFrame {
        code: close.code,
        reason: Utf8Bytes::from_static(close.reason),
    }))
}

/// One AI chat socket's life after its handshake: relays the AI chat's events (the text so far
/// of a running reply first) and acts on client frames until either side closes, the
/// credential it was opened with ends (4001), or the client stops taking what is written
/// within the write timeout (4008, or the connection is dropped).
pub async fn run(
    state: AppState,
    ai_chat_id: i64,
    user: User,
    slot: Slot,
    socket: WebSocket,
    protocol: Protocol,
) {
    let _open = state
        .realtime
        .metrics
        .socket_opened("ai", protocol.extended());
    let subscription = state.generations.subscribe(ai_chat_id);
    // The text so far of a running reply, here or on another node; deltas that start before
    // its end repeat it and are skipped.
    let caught_up = state.generations.catch_up(ai_chat_id, &subscription).await;
    let covered = caught_up.as_ref().map(|(id, text)| (*id, text.len()));
    let mut events = subscription.events;
    let ended = slot.ended();
    let (mut sink, stream) = socket.split();
    let (direct_tx, mut direct) = mpsc::channel::<Message>(16);
    let mut reading = tokio::spawn(read(
        state.clone(),
        ai_chat_id,
        user,
        protocol,
        stream,
        direct_tx,
        ended.clone(),
    ));
    let shutdown = state.realtime.shutdown.clone();
    let settings = state.realtime.settings;
    let limit = settings.write_timeout;
    let interval = settings.ping_interval;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);

    let mut written = Ok(());
    if let Some((id, text)) = caught_up.filter(|(_, text)| protocol.extended() && !text.is_empty())
    {
        let catch_up = AssistantDeltaFrame::new(id, text);
        written = within(limit, sink.send(frame(&catch_up))).await;
    }
    let close = loop {
        if let Err(err) = written {
            break Err(err);
        }
        // Biased, events before direct replies: the user's message is announced before any
        // error about answering it.
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Ok(Some(Close { code: close::GOING_AWAY, reason: "server shutting down" })),
            _ = ended.cancelled() => break Ok(Some(close::CREDENTIALS_ENDED)),
            event = events.recv() => match event {
                Ok(AiEvent::Delta { id, offset, .. })
                    if covered.is_some_and(|(reply, end)| reply == id && offset < end) => {}
                Ok(event) => match event_frame(event, protocol) {
                    Some(Some(message)) => {
                        written = within(limit, sink.send(message)).await;
                        if written.is_ok() {
                            state.realtime.metrics.frames_delivered.inc();
                        }
                    }
                    Some(None) => {}
                    None => break Ok(Some(Close { code: close::CHAT_DELETED, reason: "AI chat deleted" })),
                },
                Err(RecvError::Lagged(_)) => break Ok(Some(Close { code: close::TOO_SLOW, reason: "too slow, reconnect" })),
                Err(RecvError::Closed) => break Ok(None),
            },
            Some(message) = direct.recv() => written = within(limit, sink.send(message)).await,
            done = &mut reading => break Ok(done.ok().flatten()),
            _ = ping.tick() => written = within(limit, sink.send(Message::Ping(Default::default()))).await,
        }
    };
    reading.abort();
    let close = match close {
        Ok(close) => close,
        Err(WriteError::Failed) => None,
        Err(WriteError::Stalled) => Some(close::NOT_READING),
    };
    let finish = async {
        match close {
            Some(close) => {
                state.realtime.metrics.closed(close.code);
                sink.send(close_frame(close)).await
            }
            None => sink.close().await,
        }
    };
    let _ = tokio::time::timeout(limit.min(Duration::from_secs(2)), finish).await;
    drop(events);
    drop(slot);
    state.generations.release(ai_chat_id);
}

/// Reads client frames. Ends (closing the socket) when the client goes quiet for two ping
/// intervals, closes, sends a frame over the size limit (the close to send: 1009), or the AI
/// chat disappears; once the socket's credential has ended, frames are no longer acted on.
async fn read(
    state: AppState,
    ai_chat_id: i64,
    user: User,
    protocol: Protocol,
    mut stream: SplitStream<WebSocket>,
    direct: mpsc::Sender<Message>,
    ended: CancellationToken,
) -> Option<Close> {
    let silence = state.realtime.settings.ping_interval * 2;
    loop {
        let frame = match tokio::time::timeout(silence, stream.next()).await {
            Err(_) | Ok(None) => return None,
            Ok(Some(Err(err))) => return close::for_read_error(err),
            Ok(Some(Ok(frame))) => frame,
        };
        if ended.is_cancelled() {
            return None;
        }
        let reply = match frame {
            Message::Text(text) => {
                match on_text(&state, ai_chat_id, &user, protocol, text.as_str()).await {
                    Ok(()) => continue,
                    Err(Some(message)) => error_frame(&message),
                    Err(None) => return None,
                }
            }
            Message::Binary(_) => error_frame("Binary frames are not supported"),
            Message::Close(_) => return None,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        if direct.send(reply).await.is_err() {
            return None;
        }
    }
}

/// Acts on one text frame. `Err(Some(text))` is an error frame for the client; `Err(None)` ends
/// the socket. A frame the protocol ignores gets no reply.
async fn on_text(
    state: &AppState,
    ai_chat_id: i64,
    user: &User,
    protocol: Protocol,
    text: &str,
) -> Result<(), Option<String>> {
    let frame = match AiClientFrame::parse(text, protocol).map_err(Some)? {
        None | Some(AiClientFrame::Typing {}) => return Ok(()),
        // The socket's owner was checked when it opened; a cancel reads nothing more.
        Some(AiClientFrame::Cancel {}) => {
            state.generations.cancel(ai_chat_id).await;
            return Ok(());
        }
        Some(frame) => frame,
    };
    // Read afresh: the prompt and the related chat may have changed since the socket opened.
    let chat = match conversations::owned(state, ai_chat_id, user).await {
        Ok(chat) => chat,
        Err(ServiceError::NotFound) => return Err(None),
        Err(err) => {
            tracing::error!(error = %err, "could not read an AI chat");
            return Err(Some("Message could not be saved".into()));
        }
    };
    let request = match frame {
        AiClientFrame::Typing {} | AiClientFrame::Cancel {} => return Ok(()),
        AiClientFrame::SelectBranch { message } => {
            return match conversations::select_branch(state, user, &chat, message).await {
                Ok(_) => Ok(()),
                Err(err) => Err(Some(refusal(err))),
            };
        }
        AiClientFrame::Message {
            content,
            include_related_chat_context,
            context_message_limit,
        } => TurnRequest::Ask(question(
            content,
            include_related_chat_context,
            context_message_limit,
        )?),
        AiClientFrame::Regenerate {
            include_related_chat_context,
            context_message_limit,
        } => TurnRequest::Regenerate {
            include_context: include_related_chat_context,
            context_limit: context_limit(context_message_limit)?,
        },
        AiClientFrame::Edit {
            message,
            content,
            include_related_chat_context,
            context_message_limit,
        } => TurnRequest::Edit {
            message,
            question: question(content, include_related_chat_context, context_message_limit)?,
        },
    };
    match conversations::turn(state, user, &chat, request).await {
        Ok(_) => Ok(()),
        Err(err) => Err(Some(refusal(err))),
    }
}

/// A question from a frame's fields. The original's AI socket strips the question, as its REST
/// serializer does.
fn question(
    raw: String,
    include_context: bool,
    limit: ContextLimit,
) -> Result<Question, Option<String>> {
    let content = match MessageContent::parse(text::strip(&raw).to_owned()) {
        Ok(content) => content,
        Err(ContentError::Blank) => return Err(Some("Message content cannot be empty".into())),
        Err(ContentError::TooLong) => {
            return Err(Some(format!(
                "Message content is too long (at most {} characters)",
                crate::domain::message::MAX_CHARS
            )))
        }
    };
    Ok(Question {
        content,
        include_context,
        context_limit: context_limit(limit)?,
    })
}

fn context_limit(limit: ContextLimit) -> Result<i64, Option<String>> {
    match limit {
        ContextLimit::Absent => Ok(DEFAULT_CONTEXT_MESSAGES),
        ContextLimit::Given(n) if (1..=100).contains(&n) => Ok(n),
        _ => Err(Some(
            "context_message_limit must be an integer from 1 to 100".into(),
        )),
    }
}

/// The error frame's text for a refused turn.
fn refusal(err: ServiceError) -> String {
    match err {
        ServiceError::Unavailable(_) => "AI provider is not configured".into(),
        ServiceError::Conflict(_) => "A reply is already being generated for this AI chat".into(),
        ServiceError::Busy(_) => "Too many AI replies in progress; wait for one to finish".into(),
        ServiceError::RateLimited(seconds) => {
            format!("Your AI token budget is spent; it starts again in {seconds} s")
        }
        // A question too long for the model, a model no longer offered, nothing to regenerate:
        // its reason, as REST gives it.
        ServiceError::Validation(errors) => errors
            .messages()
            .next()
            .unwrap_or("Invalid message")
            .to_owned(),
        err => {
            tracing::error!(error = %err, "could not save an AI message");
            "Message could not be saved".into()
        }
    }
}
