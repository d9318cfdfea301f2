//! The AI chat socket's connection, after its handshake (in the HTTP layer's `sockets`): the owner's
//! live view of an AI chat. Frames as the contract, plus
//! `assistant_delta` frames while a reply streams and `{"type": "cancel"}` to stop it. A socket
//! that joins while a reply runs first gets the text so far as one delta, then the live ones.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{stream::SplitStream, SinkExt, StreamExt};
use tokio::sync::{broadcast::error::RecvError, mpsc};

use super::generation::AiEvent;
use crate::{
    domain::{text, ContentError, MessageContent},
    realtime::close,
    service::{
        conversations::{self, Question, DEFAULT_CONTEXT_MESSAGES},
        ServiceError,
    },
    state::AppState,
    store::users::User,
    wire::frames::{
        self, AiClientFrame, AssistantDeltaFrame, AssistantMessageFrame, ContextLimit,
        UserMessageFrame,
    },
};

fn frame(frame: &impl serde::Serialize) -> Message {
    Message::Text(frames::encode(frame))
}

fn error_frame(text: &str) -> Message {
    Message::Text(frames::error(text))
}

fn event_frame(event: AiEvent) -> Option<Message> {
    Some(match event {
        AiEvent::UserMessage(m) => frame(&UserMessageFrame::new(m)),
        AiEvent::Delta { id, delta } => frame(&AssistantDeltaFrame::new(id, delta)),
        AiEvent::Reply(m) => frame(&AssistantMessageFrame::new(m)),
        AiEvent::Failed { message, .. } => {
            error_frame(&format!("Failed to get ChatGPT response: {message}"))
        }
        AiEvent::ChatDeleted => return None,
    })
}

fn close_frame(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

/// One AI chat socket's life after its handshake: relays the AI chat's events (the text so far
/// of a running reply first) and acts on client frames until either side closes.
pub async fn run(state: AppState, ai_chat_id: i64, user: User, socket: WebSocket) {
    let subscription = state.generations.subscribe(ai_chat_id);
    let mut events = subscription.events;
    let (mut sink, stream) = socket.split();
    let (direct_tx, mut direct) = mpsc::channel::<Message>(16);
    let mut reading = tokio::spawn(read(state.clone(), ai_chat_id, user, stream, direct_tx));
    let shutdown = state.realtime.shutdown.clone();
    let interval = state.realtime.settings.ping_interval;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);

    let mut ok = true;
    if let Some((id, text)) = subscription
        .in_progress
        .filter(|(_, text)| !text.is_empty())
    {
        let catch_up = AssistantDeltaFrame::new(id, text);
        ok = sink.send(frame(&catch_up)).await.is_ok();
    }
    let close = loop {
        if !ok {
            break None;
        }
        // Biased, events before direct replies: the user's message is announced before any
        // error about answering it.
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Some(close_frame(close::GOING_AWAY, "server shutting down")),
            event = events.recv() => match event {
                Ok(event) => match event_frame(event) {
                    Some(message) => ok = sink.send(message).await.is_ok(),
                    None => break Some(close_frame(close::CHAT_DELETED, "AI chat deleted")),
                },
                Err(RecvError::Lagged(_)) => break Some(close_frame(close::TOO_SLOW, "too slow, reconnect")),
                Err(RecvError::Closed) => break None,
            },
            Some(message) = direct.recv() => ok = sink.send(message).await.is_ok(),
            _ = &mut reading => break None,
            _ = ping.tick() => ok = sink.send(Message::Ping(Default::default())).await.is_ok(),
        }
    };
    reading.abort();
    let finish = async {
        match close {
            Some(close) => sink.send(close).await,
            None => sink.close().await,
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), finish).await;
    drop(events);
    state.generations.release(ai_chat_id);
}

/// Reads client frames. Ends (closing the socket) when the client goes quiet for two ping
/// intervals, closes, or the AI chat disappears.
async fn read(
    state: AppState,
    ai_chat_id: i64,
    user: User,
    mut stream: SplitStream<WebSocket>,
    direct: mpsc::Sender<Message>,
) {
    let silence = state.realtime.settings.ping_interval * 2;
    loop {
        let frame = match tokio::time::timeout(silence, stream.next()).await {
            Err(_) | Ok(None) | Ok(Some(Err(_))) => return,
            Ok(Some(Ok(frame))) => frame,
        };
        let reply = match frame {
            Message::Text(text) => match on_text(&state, ai_chat_id, &user, text.as_str()).await {
                Ok(()) => continue,
                Err(Some(message)) => error_frame(&message),
                Err(None) => return,
            },
            Message::Binary(_) => error_frame("Binary frames are not supported"),
            Message::Close(_) => return,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        if direct.send(reply).await.is_err() {
            return;
        }
    }
}

/// Acts on one text frame. `Err(Some(text))` is an error frame for the client; `Err(None)` ends
/// the socket.
async fn on_text(
    state: &AppState,
    ai_chat_id: i64,
    user: &User,
    text: &str,
) -> Result<(), Option<String>> {
    let (raw, include_context, limit) = match AiClientFrame::parse(text).map_err(Some)? {
        AiClientFrame::Typing {} => return Ok(()),
        AiClientFrame::Cancel {} => {
            state.generations.cancel(ai_chat_id);
            return Ok(());
        }
        AiClientFrame::Message {
            content,
            include_related_chat_context,
            context_message_limit,
        } => (content, include_related_chat_context, context_message_limit),
    };
    // The original's AI socket strips the question, as its REST serializer does.
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
    let context_limit = match limit {
        ContextLimit::Absent => DEFAULT_CONTEXT_MESSAGES,
        ContextLimit::Given(n) if (1..=100).contains(&n) => n,
        _ => {
            return Err(Some(
                "context_message_limit must be an integer from 1 to 100".into(),
            ))
        }
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
    let question = Question {
        content,
        include_context,
        context_limit,
    };
    match conversations::ask(state, user, &chat, question).await {
        Ok(_) => Ok(()),
        Err(ServiceError::Unavailable(_)) => Err(Some("AI provider is not configured".into())),
        Err(ServiceError::Conflict(_)) => Err(Some(
            "A reply is already being generated for this AI chat".into(),
        )),
        Err(ServiceError::Busy(_)) => Err(Some(
            "Too many AI replies in progress; wait for one to finish".into(),
        )),
        Err(err) => {
            tracing::error!(error = %err, "could not save an AI message");
            Err(Some("Message could not be saved".into()))
        }
    }
}
