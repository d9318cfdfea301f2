//! One group chat socket's connection, after its handshake (in the HTTP layer's `sockets`): a
//! writer that replays and forwards the room's frames, and a reader that acts on client frames.
//! A client that reconnects with `?after_seq=N` first receives every message after N, then live
//! ones, with no gap and no duplicate.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{
    stream::{SplitSink, SplitStream},
    SinkExt, StreamExt,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{
    close::{self, Close},
    deadline::{within, WriteError},
    hub::{ConnId, Lagging, Outbound, RoomEvent, Subscriber, LAG_WINDOW},
    registry::Slot,
};
use crate::{
    domain::{ContentError, MessageContent},
    service::{chats, messaging, ServiceError},
    state::AppState,
    store::{self, events::LogEntry, users::User},
    wire::{
        frames::{self, ChatClientFrame, Member, Protocol},
        views::{MessageView, Viewer},
    },
};

/// Messages read from the database per step of a replay.
const REPLAY_BATCH: i64 = 500;
/// Frames written before a flush, so a burst goes out in few syscalls.
const WRITE_BATCH: usize = 64;
/// At most one typing notice per socket per this interval is relayed.
const TYPING_INTERVAL: Duration = Duration::from_secs(1);

/// One chat socket's life after its handshake: joins the chat's room, replays what the client
/// missed, then relays frames both ways until either side closes.
pub struct Connection {
    state: AppState,
    chat_id: i64,
    user: User,
    conn: ConnId,
    queue_capacity: usize,
    /// Held for the connection's life; tells it when its credential ends.
    slot: Slot,
    protocol: Protocol,
}

impl Connection {
    /// A connection of `user` to `chat_id`, whose outbound queue holds `queue_capacity` frames,
    /// in the place `slot` its handshake took, speaking `protocol`.
    pub fn new(
        state: AppState,
        chat_id: i64,
        user: User,
        queue_capacity: usize,
        slot: Slot,
        protocol: Protocol,
    ) -> Self {
        let conn = state.realtime.next_conn_id();
        Self {
            state,
            chat_id,
            user,
            conn,
            queue_capacity,
            slot,
            protocol,
        }
    }

    /// `resume`: the seq the client asked to continue after; `handshake_seq`: the chat's last
    /// seq when the handshake was answered, where a live-only socket starts.
    pub async fn run(self, socket: WebSocket, resume: Option<i64>, handshake_seq: i64) {
        let _open = (self.state.realtime.metrics).socket_opened("chat", self.protocol.extended());
        let (outbound, queue) = mpsc::channel(self.queue_capacity);
        let (close_tx, close_rx) = oneshot::channel();
        let member = Member {
            id: self.user.id,
            username: self.user.username.clone(),
        };
        let viewer = Viewer::of(&self.user);
        let lagging = Arc::new(Lagging::default());
        let subscriber = Subscriber {
            conn: self.conn,
            member: member.clone(),
            protocol: self.protocol,
            viewer,
            outbound: outbound.clone(),
            close: close_tx,
            lagging: lagging.clone(),
            lags: Vec::new(),
        };
        let (mut sink, stream) = socket.split();
        let live_from = match self.state.realtime.hub.join(self.chat_id, subscriber).await {
            Ok(live_from) => live_from,
            Err(refusal) => {
                let _ = send_close(&mut sink, refusal, &self.state.realtime.metrics).await;
                return;
            }
        };
        tracing::debug!(
            chat.id = self.chat_id,
            user.id = self.user.id,
            conn = self.conn,
            "socket joined"
        );

        // A removal published between the handshake and the join found no socket to close:
        // check once more now that removals reach this one.
        let still_member =
            store::chats::visible_to(&self.state.db, self.chat_id, self.user.id).await;
        if !matches!(still_member, Ok(Some(_))) {
            self.state.realtime.hub.leave(self.chat_id, self.conn);
            let removed = Close {
                code: close::REMOVED,
                reason: "not a participant",
            };
            let _ = send_close(&mut sink, removed, &self.state.realtime.metrics).await;
            return;
        }
        let last_heard = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let (reader_done, reader_close) = oneshot::channel();
        let closing = Arc::new(AtomicBool::new(false));
        let ended = self.slot.ended();
        let reader = Reader {
            closing: closing.clone(),
            ended: ended.clone(),
            state: self.state.clone(),
            chat_id: self.chat_id,
            user: self.user.clone(),
            member,
            conn: self.conn,
            outbound,
            last_heard: last_heard.clone(),
            started,
            last_typing: None,
            protocol: self.protocol,
        };
        let mut reading = tokio::spawn(reader.run(stream, reader_done));
        let writer = Writer {
            state: self.state.clone(),
            chat_id: self.chat_id,
            sink,
            viewer,
            last_sent: resume.unwrap_or(handshake_seq),
            last_heard,
            started,
            ended,
            write_timeout: self.state.realtime.settings.write_timeout,
            protocol: self.protocol,
            lagging,
        };
        // Messages committed between the handshake and the join are behind the room's live
        // position: they come from the database. Live frames up to where that read ended are
        // skipped by seq.
        let replay = resume.is_some() || live_from > handshake_seq;
        let drained = writer.run(replay, queue, close_rx, reader_close).await;
        self.state.realtime.hub.leave(self.chat_id, self.conn);
        if !drained {
            // The client does not read: waiting for its answer to a close is pointless, and
            // dropping both halves drops the connection.
            reading.abort();
            tracing::debug!(chat.id = self.chat_id, conn = self.conn, "socket dropped");
            return;
        }
        // Let the client answer the close frame (its reply and any frames it had in flight are
        // read and dropped): closing with unread data would reset the connection instead.
        closing.store(true, Ordering::Relaxed);
        if tokio::time::timeout(Duration::from_secs(2), &mut reading)
            .await
            .is_err()
        {
            reading.abort();
        }
        tracing::debug!(chat.id = self.chat_id, conn = self.conn, "socket closed");
    }
}

type Sink = SplitSink<WebSocket, Message>;

/// Sends the close frame, counting it by its code.
async fn send_close(
    sink: &mut Sink,
    close: Close,
    metrics: &crate::metrics::Metrics,
) -> Result<(), axum::Error> {
    metrics.closed(close.code);
    sink.send(Message::Close(Some(CloseFrame {
        code: close.code,
        reason: Utf8Bytes::from_static(close.reason),
    })))
    .await
}

/// Owns the sending half: replays what a resuming client missed, then forwards the room's
/// frames in batches, pings, and sends the close frame, whoever decided to close.
struct Writer {
    state: AppState,
    chat_id: i64,
    sink: Sink,
    /// Whose socket this is: the replay renders messages for them.
    viewer: Viewer,
    /// The highest seq this client has: nothing at or below it is sent again.
    last_sent: i64,
    last_heard: Arc<AtomicU64>,
    started: Instant,
    /// Cancelled when the credential the socket was opened with ends.
    ended: CancellationToken,
    /// Longest any write or flush may take (`MRM_WS_WRITE_TIMEOUT_SECONDS`).
    write_timeout: Duration,
    /// Which log entries the replay sends: messages only, or every event (`mrm.v2`).
    protocol: Protocol,
    /// Set by the room when this socket's queue overflowed: it then catches up from the
    /// database ([`Writer::catch_up`]).
    lagging: Arc<Lagging>,
}

impl Writer {
    /// Returns false when the client stopped taking what was written: the connection is to be
    /// dropped rather than closed politely.
    async fn run(
        mut self,
        replay: bool,
        mut queue: mpsc::Receiver<Outbound>,
        mut room_close: oneshot::Receiver<Close>,
        mut reader_close: oneshot::Receiver<Option<Close>>,
    ) -> bool {
        let shutdown = self.state.realtime.shutdown.clone();
        let ended = self.ended.clone();
        let mut stalled = false;
        let close = match self.replay_if(replay).await {
            Ok(()) => {
                self.forward(
                    &mut queue,
                    &mut room_close,
                    &mut reader_close,
                    &shutdown,
                    &ended,
                )
                .await
            }
            Err(WriteError::Failed) => return true,
            Err(WriteError::Stalled) => Err(WriteError::Stalled),
        };
        let close = match close {
            Ok(close) => close,
            Err(WriteError::Failed) => None,
            Err(WriteError::Stalled) => {
                tracing::debug!(chat.id = self.chat_id, "client stopped reading");
                stalled = true;
                Some(close::NOT_READING)
            }
        };
        let finish = async {
            match close {
                Some(close) => {
                    send_close(&mut self.sink, close, &self.state.realtime.metrics).await
                }
                // Flushes the reply to a close the client started, if any.
                None => self.sink.close().await,
            }
        };
        let sent = tokio::time::timeout(self.write_timeout.min(Duration::from_secs(2)), finish)
            .await
            .is_ok();
        !stalled || sent
    }

    async fn replay_if(&mut self, replay: bool) -> Result<(), WriteError> {
        if !replay {
            return Ok(());
        }
        self.replay(None).await.map(|_| ()).inspect_err(|err| {
            tracing::debug!(error = ?err, "replay ended early");
        })
    }

    /// Forwards queued frames and pings until something decides the socket closes; returns the
    /// close to send (`None`: none, or the reply to the client's), or why writing failed.
    async fn forward(
        &mut self,
        queue: &mut mpsc::Receiver<Outbound>,
        room_close: &mut oneshot::Receiver<Close>,
        reader_close: &mut oneshot::Receiver<Option<Close>>,
        shutdown: &CancellationToken,
        ended: &CancellationToken,
    ) -> Result<Option<Close>, WriteError> {
        let limit = self.write_timeout;
        let interval = self.state.realtime.settings.ping_interval;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        // After a long catch-up, one ping, not a burst of them (the second would find the first
        // unanswered and drop a live peer).
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_ping_at: Option<u64> = None;
        let close = loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Some(Close { code: close::GOING_AWAY, reason: "server shutting down" }),
                _ = ended.cancelled() => break Some(close::CREDENTIALS_ENDED),
                closed = &mut *room_close => break closed.ok().or(Some(Close { code: close::INTERNAL, reason: "room closed" })),
                closed = &mut *reader_close => break closed.ok().flatten(),
                item = queue.recv() => {
                    let Some(item) = item else { break None };
                    self.write(item).await?;
                    let mut batch = 1;
                    while batch < WRITE_BATCH {
                        let Ok(item) = queue.try_recv() else { break };
                        self.write(item).await?;
                        batch += 1;
                    }
                    within(limit, self.sink.flush()).await?;
                    if self.lagging.is_set() {
                        if let Some(close) = self.catch_up(queue).await? {
                            break Some(close);
                        }
                        within(limit, self.sink.flush()).await?;
                    }
                }
                // Marked while waiting on an empty queue: nothing more will be queued.
                _ = self.lagging.marked() => {
                    if self.lagging.is_set() {
                        if let Some(close) = self.catch_up(queue).await? {
                            break Some(close);
                        }
                        within(limit, self.sink.flush()).await?;
                    }
                }
                _ = ping.tick() => {
                    // A peer that has not said anything since the last ping is gone.
                    if let Some(sent) = last_ping_at {
                        if self.last_heard.load(Ordering::Relaxed) < sent {
                            tracing::debug!(chat.id = self.chat_id, "peer did not answer the ping");
                            break None;
                        }
                    }
                    last_ping_at = Some(self.started.elapsed().as_millis() as u64);
                    within(limit, self.sink.send(Message::Ping(Default::default()))).await?;
                }
            }
        };
        Ok(close)
    }

    /// Reads what the room skipped while this socket lagged: the log from the database up to
    /// its end, then, the mark cleared (so the room queues again), once more, for what was
    /// committed meanwhile. Entries that then also come through the queue are at or below
    /// `last_sent` and skipped: none is lost or sent twice.
    ///
    /// Between pages it stops for what would close the socket anyway (shutdown, ended
    /// credentials, the user no longer a participant: nothing committed after a removal is ever
    /// sent), and a socket still behind after [`LAG_WINDOW`] is closed with 4008. Before the mark
    /// is cleared, what the queue still holds is written (its log entries are all behind
    /// `last_sent` by then and skipped), so the room finds room in it at once.
    async fn catch_up(
        &mut self,
        queue: &mut mpsc::Receiver<Outbound>,
    ) -> Result<Option<Close>, WriteError> {
        tracing::debug!(
            chat.id = self.chat_id,
            from = self.last_sent,
            "socket catching up from the log"
        );
        let deadline = Instant::now() + LAG_WINDOW;
        if let Some(close) = self.replay(Some(deadline)).await? {
            return Ok(Some(close));
        }
        while let Ok(item) = queue.try_recv() {
            self.write(item).await?;
        }
        self.lagging.clear();
        if let Some(close) = self.replay(Some(deadline)).await? {
            return Ok(Some(close));
        }
        self.state.realtime.metrics.caught_up.inc();
        Ok(None)
    }

    /// Why a catch-up must stop before its next page, if it must: checked after the page is
    /// read and before any of it is sent.
    async fn must_stop(&self, deadline: Instant) -> Result<Option<Close>, WriteError> {
        if self.state.realtime.shutdown.is_cancelled() {
            return Ok(Some(Close {
                code: close::GOING_AWAY,
                reason: "server shutting down",
            }));
        }
        if self.ended.is_cancelled() {
            return Ok(Some(close::CREDENTIALS_ENDED));
        }
        let member = store::chats::visible_to(&self.state.db, self.chat_id, self.viewer.id)
            .await
            .map_err(|err| {
                tracing::debug!(error = %err, "catch-up could not check membership");
                WriteError::Failed
            })?;
        if member.is_none() {
            return Ok(Some(Close {
                code: close::REMOVED,
                reason: "removed from the chat",
            }));
        }
        if Instant::now() > deadline {
            return Ok(Some(Close {
                code: close::TOO_SLOW,
                reason: "too slow, resume",
            }));
        }
        Ok(None)
    }

    /// Sends every log entry after `last_sent` from the database, in batches: messages, and for
    /// `mrm.v2` every other event too.
    /// A catch-up (`deadline` given) checks between pages whether it must stop, and answers the
    /// close to send if so ([`Writer::must_stop`]).
    async fn replay(&mut self, deadline: Option<Instant>) -> Result<Option<Close>, WriteError> {
        let limit = self.write_timeout;
        loop {
            let rows = store::events::range(
                &self.state.db,
                self.chat_id,
                self.last_sent,
                i64::MAX,
                REPLAY_BATCH,
                self.protocol.extended(),
            )
            .await
            .map_err(|err| {
                tracing::debug!(error = %err, "replay could not read the chat");
                WriteError::Failed
            })?;
            if let Some(deadline) = deadline {
                if let Some(close) = self.must_stop(deadline).await? {
                    return Ok(Some(close));
                }
            }
            let done = (rows.len() as i64) < REPLAY_BATCH;
            for row in rows {
                let seq = row.seq();
                let frame = match row {
                    LogEntry::Message(m) => {
                        let view = MessageView::for_viewer(m, self.viewer);
                        if self.protocol.extended() {
                            Some(frames::message(view))
                        } else if view.deleted {
                            // The original never sent a deleted message.
                            None
                        } else {
                            Some(frames::message(view.without_extensions()))
                        }
                    }
                    LogEntry::Event(e) => frames::logged(&e),
                };
                if let Some(frame) = frame {
                    within(limit, self.sink.feed(Message::Text(frame))).await?;
                    self.state.realtime.metrics.frames_delivered.inc();
                }
                self.last_sent = seq;
            }
            within(limit, self.sink.flush()).await?;
            if done {
                return Ok(None);
            }
        }
    }

    async fn write(&mut self, item: Outbound) -> Result<(), WriteError> {
        let metrics = &self.state.realtime.metrics;
        let frame = match item {
            Outbound::Message { seq, frame, queued } => {
                if seq <= self.last_sent {
                    return Ok(()); // Already sent by the replay.
                }
                self.last_sent = seq;
                metrics.delivery_lag.observe(queued.elapsed().as_secs_f64());
                frame
            }
            Outbound::Frame(frame) => frame,
        };
        within(self.write_timeout, self.sink.feed(Message::Text(frame))).await?;
        metrics.frames_delivered.inc();
        Ok(())
    }
}

/// Owns the receiving half: parses client frames and acts on them.
struct Reader {
    /// Set once the close frame is sent: later frames are read but not acted on.
    closing: Arc<AtomicBool>,
    /// Cancelled when the socket's credential ends: frames are no longer acted on either.
    ended: CancellationToken,
    state: AppState,
    chat_id: i64,
    user: User,
    member: Member,
    conn: ConnId,
    outbound: mpsc::Sender<Outbound>,
    last_heard: Arc<AtomicU64>,
    started: Instant,
    last_typing: Option<Instant>,
    protocol: Protocol,
}

impl Reader {
    async fn run(
        mut self,
        mut stream: SplitStream<WebSocket>,
        done: oneshot::Sender<Option<Close>>,
    ) {
        let close = loop {
            let Some(frame) = stream.next().await else {
                break None;
            };
            self.last_heard.store(
                self.started.elapsed().as_millis() as u64 + 1,
                Ordering::Relaxed,
            );
            if self.closing.load(Ordering::Relaxed) || self.ended.is_cancelled() {
                match frame {
                    Ok(Message::Close(_)) | Err(_) => break None,
                    Ok(_) => continue,
                }
            }
            match frame {
                Ok(Message::Text(text)) => {
                    if let Some(close) = self.on_text(text.as_str()).await {
                        break Some(close);
                    }
                }
                Ok(Message::Binary(_)) => self.error("Binary frames are not supported"),
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                Ok(Message::Close(_)) => break None,
                Err(err) => break close::for_read_error(err),
            }
        };
        let _ = done.send(close);
    }

    fn error(&self, message: &str) {
        let _ = self
            .outbound
            .try_send(Outbound::Frame(frames::error(message)));
    }

    /// Answers a change asked for by a frame: nothing when it was made (its event comes in the
    /// chat's log like everyone's), an error frame saying why when it was not. A user who is no
    /// longer a participant is told so and the socket closes (4003).
    fn answer_failure(&self, done: Result<(), ServiceError>) -> Option<Close> {
        let reason = match done {
            Ok(()) => return None,
            Err(ServiceError::NotFound) => "Message not found".to_owned(),
            Err(ServiceError::PermissionDenied) => "You may not change this message".to_owned(),
            Err(ServiceError::RateLimited(_)) => "Rate limit exceeded".to_owned(),
            Err(ServiceError::Conflict(reason) | ServiceError::BadRequest(reason)) => reason,
            Err(ServiceError::Validation(errors)) => errors.to_string(),
            Err(err) => {
                tracing::warn!(chat.id = self.chat_id, error = %err, "a socket change failed");
                "Something went wrong; try again".to_owned()
            }
        };
        self.error(&reason);
        None
    }

    /// Handles one text frame; `Some` when the socket must close.
    async fn on_text(&mut self, text: &str) -> Option<Close> {
        match ChatClientFrame::parse(text, self.protocol) {
            Ok(ChatClientFrame::Message {
                content,
                reply_to,
                attachments,
            }) => {
                self.on_message(content.unwrap_or_default(), reply_to, attachments)
                    .await
            }
            Ok(ChatClientFrame::Typing {}) => {
                self.on_typing();
                None
            }
            Ok(ChatClientFrame::Read { seq }) => {
                let done = chats::mark_read(&self.state, &self.user, self.chat_id, seq).await;
                self.answer_failure(done.map(|_| ()))
            }
            Ok(ChatClientFrame::Edit { id, content }) => {
                let done = match MessageContent::parse(content) {
                    Ok(content) => {
                        messaging::edit(&self.state, &self.user, self.chat_id, id, content)
                            .await
                            .map(|_| ())
                    }
                    Err(err) => Err(ServiceError::BadRequest(err.to_string())),
                };
                self.answer_failure(done)
            }
            Ok(ChatClientFrame::Delete { id }) => {
                let done = messaging::delete(&self.state, &self.user, self.chat_id, id).await;
                self.answer_failure(done.map(|_| ()))
            }
            Ok(ChatClientFrame::React { id, emoji }) => {
                let done =
                    messaging::react(&self.state, &self.user, self.chat_id, id, &emoji, true).await;
                self.answer_failure(done.map(|_| ()))
            }
            Ok(ChatClientFrame::Unreact { id, emoji }) => {
                let done =
                    messaging::react(&self.state, &self.user, self.chat_id, id, &emoji, false)
                        .await;
                self.answer_failure(done.map(|_| ()))
            }
            Err(message) => {
                self.error(&message);
                None
            }
        }
    }

    /// Sends a message as its text arrived: the original's chat socket does not strip it.
    async fn on_message(
        &mut self,
        raw: String,
        reply_to: Option<i64>,
        attachments: Vec<i64>,
    ) -> Option<Close> {
        let content = match MessageContent::with_attachments(raw, attachments.len()) {
            Ok(content) => content,
            Err(ContentError::Blank) => {
                self.error("Content cannot be empty");
                return None;
            }
            Err(ContentError::TooLong) => {
                self.error(&format!(
                    "Content is too long (at most {} characters)",
                    crate::domain::message::MAX_CHARS
                ));
                return None;
            }
        };
        let sent = messaging::send(
            &self.state,
            &self.user,
            self.chat_id,
            content,
            reply_to,
            attachments,
        )
        .await;
        match sent {
            Ok(_) => None,
            Err(ServiceError::RateLimited(_)) => {
                self.error("Rate limit exceeded");
                None
            }
            Err(ServiceError::Validation(errors)) => {
                self.error(&errors.to_string());
                None
            }
            Err(ServiceError::NotFound) => Some(Close {
                code: close::REMOVED,
                reason: "not a participant",
            }),
            Err(err) => {
                tracing::error!(chat.id = self.chat_id, error = %err, "could not save a socket message");
                self.error("Message could not be saved");
                None
            }
        }
    }

    fn on_typing(&mut self) {
        let now = Instant::now();
        if self
            .last_typing
            .is_some_and(|t| now.duration_since(t) < TYPING_INTERVAL)
        {
            return;
        }
        self.last_typing = Some(now);
        self.state.realtime.publish(
            self.chat_id,
            RoomEvent::Typing {
                from: self.conn,
                frame: frames::typing(&self.member),
            },
        );
    }
}
