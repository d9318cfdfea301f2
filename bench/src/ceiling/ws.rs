//! The socket ceiling (`ceiling-server --kind ws`, for `fanout`): a bare WebSocket broadcast
//! server on `/ws/chat/{id}/`.
//!
//! Each text frame `{"content": …}` a socket sends becomes the chat's next message, and every
//! socket of the chat (the sender's included, as the server echoes) is sent the server's
//! `{"type": "message", "message": {…}}` frame for it: the same fields and about the same size,
//! serialised once per message (with the sender's email for the sender, without it for the
//! others) and shared by every socket, so the load generator parses it unchanged. `mrm.v2`
//! sockets get presence as the server sends it: the whole list to a newcomer, then one
//! coalesced change per tenth of a second, so `--connect-first` works too.
//!
//! What it isolates is the cost of the fan-out itself on the server's stack (tokio, hyper and
//! tungstenite through axum, with the server's socket buffer sizes): frames in, a bounded queue
//! per socket, batched writes out. What it leaves out is the server's own work: sessions,
//! membership, the database's group commit and log, rate limits, metrics, pings.
//!
//! It keeps the server's bound on a socket's queue (`--ws-queue`, the server's `MRM_WS_QUEUE`,
//! 256 by default) and its rule for a socket whose queue fills: the room never waits for it; it
//! stops queueing for the socket, which catches up by itself (from the chat's last
//! [`LOG_LEN`](super::LOG_LEN) messages in memory, where the server reads its database) and is
//! live again; a socket that falls behind 3 times in a minute, or whose catch-up takes longer
//! than a minute or has been pushed out of memory, is closed with 4008 and may resume with
//! `?after_seq=`. So the ceiling is not one with unbounded buffering, and a slow client costs
//! it what it costs the server.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, MutexGuard,
    },
    time::{Duration, Instant},
};

use axum::{
    extract::{
        ws::{
            rejection::WebSocketUpgradeRejection, CloseFrame, Message, WebSocket, WebSocketUpgrade,
        },
        Path, RawQuery, State,
    },
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use futures_util::{
    stream::{SplitSink, SplitStream},
    SinkExt, StreamExt,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::{
    sync::{
        mpsc::{self, error::TrySendError},
        Notify,
    },
    task::JoinHandle,
};

use super::{Entry, Member, Room, RoomState, Store, User, Utf8Bytes, MAX_CONTENT_CHARS};

type Shared = Arc<Store>;

/// Presence changes within this interval go out as one frame per socket, as the server's.
pub const PRESENCE_COALESCE: Duration = Duration::from_millis(100);
/// A socket that falls behind [`MAX_LAGS`] times within this window, or is still catching up
/// this long after it began, is closed with 4008, as the server's.
const LAG_WINDOW: Duration = Duration::from_secs(60);
const MAX_LAGS: usize = 3;
/// Frames written before a flush, as the server's.
const WRITE_BATCH: usize = 64;
/// Messages taken from memory per step of a catch-up.
const CATCH_UP_BATCH: usize = 500;
/// Longest a batch of writes may take before the client counts as not reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame or message read, as the server's.
const MAX_FRAME_BYTES: usize = 128 * 1024;
/// "Too slow, resume": the close of a socket that cannot keep up, or whose writes stalled, as
/// the server's.
const TOO_SLOW: u16 = 4008;
const TOO_SLOW_REASON: &str = "too slow, resume";
const NOT_READING_REASON: &str = "not reading, reconnect";

pub fn router() -> Router<Shared> {
    Router::new().route("/ws/chat/{id}/", get(socket))
}

/// What a socket's queue carries.
pub enum Out {
    /// A message of the chat's log: skipped when its seq was already sent.
    Log { seq: i64, frame: Utf8Bytes },
    /// Presence and errors.
    Frame(Utf8Bytes),
}

/// A socket's marks, set by its room and read by its writer.
#[derive(Default)]
pub struct Ctl {
    /// Its queue overflowed: the room queues none of the log for it until its writer has
    /// caught up and cleared this (under the room's lock, so nothing is missed).
    lagging: AtomicBool,
    /// It fell behind too often: close it with 4008.
    too_slow: AtomicBool,
    wake: Notify,
}

impl Ctl {
    fn mark(&self) {
        self.lagging.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn close_too_slow(&self) {
        self.too_slow.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

/// One socket as its room knows it.
pub struct Sub {
    conn: u64,
    user: Arc<User>,
    /// `mrm.v2`: gets presence.
    v2: bool,
    /// Bounded (`--ws-queue`); the room never waits for it.
    tx: mpsc::Sender<Out>,
    ctl: Arc<Ctl>,
    /// When its queue overflowed, within the last [`LAG_WINDOW`].
    lags: Vec<Instant>,
    /// A presence frame did not fit its queue: it gets the whole list next time.
    presence_stale: bool,
}

fn lock(room: &Room) -> MutexGuard<'_, RoomState> {
    room.state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Queues `entry` for every live socket of the room (called under the room's lock, so every
/// socket gets the log in seq order). A full queue marks its socket lagging, or closes it with
/// 4008 the third time in [`LAG_WINDOW`].
pub fn deliver(state: &mut RoomState, entry: &Arc<Entry>) {
    if state.subs.is_empty() {
        return;
    }
    state.subs.retain_mut(|sub| {
        if sub.ctl.lagging.load(Ordering::Acquire) {
            return true;
        }
        let frame = entry.frame(sub.user.id).clone();
        match sub.tx.try_send(Out::Log {
            seq: entry.seq,
            frame,
        }) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                let now = Instant::now();
                sub.lags.retain(|t| now.duration_since(*t) < LAG_WINDOW);
                sub.lags.push(now);
                if sub.lags.len() >= MAX_LAGS {
                    sub.ctl.close_too_slow();
                    false
                } else {
                    sub.ctl.mark();
                    true
                }
            }
            Err(TrySendError::Closed(_)) => false,
        }
    });
}

#[derive(Serialize)]
struct PresenceList<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    online: Vec<Member<'a>>,
}

#[derive(Serialize)]
struct PresenceDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    joined: Vec<Member<'a>>,
    left: Vec<Member<'a>>,
}

fn encode(frame: &impl Serialize) -> Utf8Bytes {
    Utf8Bytes::from(serde_json::to_string(frame).unwrap_or_default())
}

/// `{"type": "presence", "online": […]}`, by id.
fn presence_list(state: &RoomState) -> Utf8Bytes {
    encode(&PresenceList {
        kind: "presence",
        online: state.online.values().map(|(u, _)| u.member()).collect(),
    })
}

/// Records that `user` came online (`joined`) or went offline; a user is in at most one of
/// the two lists.
fn presence_changed(state: &mut RoomState, user: &Arc<User>, joined: bool) {
    let (add, remove) = if joined {
        (&mut state.joined, &mut state.left)
    } else {
        (&mut state.left, &mut state.joined)
    };
    if let Some(i) = remove.iter().position(|u| u.id == user.id) {
        remove.swap_remove(i);
    } else {
        add.push(user.clone());
    }
}

/// Sends the pending presence change in [`PRESENCE_COALESCE`], unless that is already due.
fn schedule_presence(room: &Arc<Room>, state: &mut RoomState) {
    let pending = !state.joined.is_empty()
        || !state.left.is_empty()
        || state.subs.iter().any(|s| s.presence_stale);
    if pending && !state.presence_due {
        state.presence_due = true;
        let room = room.clone();
        tokio::spawn(async move {
            tokio::time::sleep(PRESENCE_COALESCE).await;
            flush_presence(&room);
        });
    }
}

/// One presence frame to every `mrm.v2` socket: the change since the last one, or the whole
/// list to a socket that missed one.
fn flush_presence(room: &Arc<Room>) {
    let mut guard = lock(room);
    let state = &mut *guard;
    state.presence_due = false;
    let joined = std::mem::take(&mut state.joined);
    let left = std::mem::take(&mut state.left);
    let delta = (!joined.is_empty() || !left.is_empty()).then(|| {
        encode(&PresenceDelta {
            kind: "presence",
            joined: joined.iter().map(|u| u.member()).collect(),
            left: left.iter().map(|u| u.member()).collect(),
        })
    });
    let mut full = None;
    let mut stale = false;
    for i in 0..state.subs.len() {
        let sub = &state.subs[i];
        if !sub.v2 {
            continue;
        }
        let frame = match (&delta, sub.presence_stale) {
            (_, true) => full.get_or_insert_with(|| presence_list(state)).clone(),
            (Some(delta), false) => delta.clone(),
            (None, false) => continue,
        };
        let sub = &mut state.subs[i];
        sub.presence_stale = matches!(
            sub.tx.try_send(Out::Frame(frame)),
            Err(TrySendError::Full(_))
        );
        stale |= sub.presence_stale;
    }
    if stale {
        schedule_presence(room, state);
    }
}

/// Adds a socket to its room; the room queues the log for it from now on, or, when messages
/// came after `last_sent` (a resume, or messages sent between the handshake and now), once its
/// writer has caught up.
fn join(room: &Arc<Room>, sub: Sub, last_sent: i64) {
    let mut guard = lock(room);
    let state = &mut *guard;
    if state.last_seq > last_sent {
        sub.ctl.mark();
    }
    let online = state
        .online
        .entry(sub.user.id)
        .or_insert_with(|| (sub.user.clone(), 0));
    online.1 += 1;
    if online.1 == 1 {
        presence_changed(state, &sub.user, true);
    }
    if sub.v2 {
        let _ = sub.tx.try_send(Out::Frame(presence_list(state)));
    }
    state.subs.push(sub);
    schedule_presence(room, state);
}

fn leave(room: &Arc<Room>, conn: u64, user: &Arc<User>) {
    let mut guard = lock(room);
    let state = &mut *guard;
    state.subs.retain(|s| s.conn != conn);
    if let Some(online) = state.online.get_mut(&user.id) {
        online.1 -= 1;
        if online.1 == 0 {
            state.online.remove(&user.id);
            presence_changed(state, user, false);
        }
    }
    schedule_presence(room, state);
}

fn refuse(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// The handshake: any caller is accepted (the `sessionid` cookie only says who it is); an
/// unknown chat is refused with 403 as the server refuses it.
async fn socket(
    State(store): State<Shared>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        return refuse(
            StatusCode::BAD_REQUEST,
            json!({ "detail": "Expected a WebSocket upgrade request." }),
        );
    };
    let Some(room) = store.chat(id) else {
        return refuse(
            StatusCode::FORBIDDEN,
            json!({ "detail": "You are not a participant of this chat." }),
        );
    };
    let user = store.caller(&headers);
    let mut resume = None;
    let mut v2 = false;
    for pair in query.as_deref().unwrap_or_default().split('&') {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("after_seq", value) if resume.is_none() => {
                match value.parse::<i64>().ok().filter(|n| *n >= 0) {
                    Some(seq) => resume = Some(seq),
                    None => {
                        return refuse(
                            StatusCode::BAD_REQUEST,
                            json!({ "after_seq": ["A valid non-negative integer is required."] }),
                        )
                    }
                }
            }
            ("protocol", "mrm.v2") => v2 = true,
            ("protocol", _) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    json!({ "protocol": ["Unknown protocol; the one that can be asked for is \"mrm.v2\"."] }),
                )
            }
            _ => {}
        }
    }
    let upgrade = upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(1024 * 1024)
        .max_frame_size(MAX_FRAME_BYTES)
        .max_message_size(MAX_FRAME_BYTES)
        .protocols(["mrm.v2"]);
    v2 |= upgrade.selected_protocol().is_some();
    // A live-only socket is owed every message after this point, as the server's.
    let handshake_seq = lock(&room).last_seq;
    let from = resume.unwrap_or(handshake_seq);
    upgrade.on_upgrade(move |ws| run(store, room, user, v2, from, ws))
}

/// How a socket's writer ended.
enum Ending {
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// The client closed, or its connection ended: its reader is done.
    ClientGone,
    /// Writing failed.
    Broken,
}

/// One socket's life: joins the room, reads the client's frames on a task of its own, writes
/// the room's frames here, and leaves.
async fn run(
    store: Shared,
    room: Arc<Room>,
    user: Arc<User>,
    v2: bool,
    last_sent: i64,
    ws: WebSocket,
) {
    let (tx, mut rx) = mpsc::channel(store.ws_queue);
    let ctl = Arc::new(Ctl::default());
    let conn = store.next_conn();
    let sub = Sub {
        conn,
        user: user.clone(),
        v2,
        tx: tx.clone(),
        ctl: ctl.clone(),
        lags: Vec::new(),
        presence_stale: false,
    };
    join(&room, sub, last_sent);
    let (sink, stream) = ws.split();
    let mut reader = tokio::spawn(read(stream, store, room.clone(), user.clone(), v2, tx));
    let mut writer = Writer {
        sink,
        room: room.clone(),
        viewer: user.id,
        last_sent,
        ctl,
    };
    let ending = writer.forward(&mut rx, &mut reader).await;
    leave(&room, conn, &user);
    drop(rx);
    match ending {
        Ending::Close(code, reason) => {
            let frame = Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            }));
            let sent = tokio::time::timeout(Duration::from_secs(2), writer.sink.send(frame)).await;
            // Let the client answer the close (closing with unread data would reset the
            // connection instead).
            if matches!(sent, Ok(Ok(())))
                && tokio::time::timeout(Duration::from_secs(2), &mut reader)
                    .await
                    .is_ok()
            {
                return;
            }
            reader.abort();
        }
        // Flushes the reply to the client's close, if any.
        Ending::ClientGone => {
            let _ = tokio::time::timeout(Duration::from_secs(2), writer.sink.close()).await;
        }
        Ending::Broken => reader.abort(),
    }
}

#[derive(Deserialize)]
struct ClientFrame {
    #[serde(rename = "type")]
    kind: Option<Value>,
    content: Option<Value>,
}

/// A client frame: `Some(content)` for a message, `None` for a frame acted on by nothing here
/// (typing and the other `mrm.v2` kinds), or the error frame's message.
fn parse(text: &str, v2: bool) -> Result<Option<String>, &'static str> {
    let frame: ClientFrame = serde_json::from_str(text).map_err(|_| "Invalid JSON")?;
    if v2 {
        match &frame.kind {
            None => {}
            Some(Value::String(kind)) if kind == "message" => {}
            Some(_) => return Ok(None),
        }
    }
    let content = match frame.content {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => String::new(),
        Some(_) => return Err("Content must be a string"),
    };
    if content.trim().is_empty() {
        return Err("Content cannot be empty");
    }
    if content.chars().count() > MAX_CONTENT_CHARS {
        return Err("Ensure this field has no more than 10000 characters.");
    }
    Ok(Some(content))
}

/// Reads the client's frames until it closes: each message becomes the chat's next one and is
/// delivered at once; errors answer on the socket's own queue (dropped if it is full).
async fn read(
    mut stream: SplitStream<WebSocket>,
    store: Shared,
    room: Arc<Room>,
    user: Arc<User>,
    v2: bool,
    tx: mpsc::Sender<Out>,
) {
    let error = |message: &str| {
        let frame = encode(&json!({ "type": "error", "message": message }));
        let _ = tx.try_send(Out::Frame(frame));
    };
    while let Some(frame) = stream.next().await {
        match frame {
            Ok(Message::Text(text)) => match parse(text.as_str(), v2) {
                Ok(Some(content)) => {
                    room.append(&store, user.clone(), content, deliver);
                }
                Ok(None) => {}
                Err(message) => error(message),
            },
            Ok(Message::Binary(_)) => error("Binary frames are not supported"),
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(Message::Close(_)) | Err(_) => break,
        }
    }
}

/// A catch-up's next step, taken under the room's lock.
enum Batch {
    /// Nothing left: the lagging mark is cleared, the room queues again.
    Done,
    /// What the socket needs is no longer in memory.
    Gone,
    Frames(Vec<(i64, Utf8Bytes)>),
}

struct Writer {
    sink: SplitSink<WebSocket, Message>,
    room: Arc<Room>,
    viewer: i64,
    /// The highest seq sent: nothing at or below it is sent again.
    last_sent: i64,
    ctl: Arc<Ctl>,
}

impl Writer {
    /// Writes the queue's frames in batches until the socket closes, catching up from memory
    /// whenever the room marks it lagging.
    async fn forward(
        &mut self,
        rx: &mut mpsc::Receiver<Out>,
        reader: &mut JoinHandle<()>,
    ) -> Ending {
        loop {
            if self.ctl.too_slow.load(Ordering::Acquire) {
                return Ending::Close(TOO_SLOW, TOO_SLOW_REASON);
            }
            if self.ctl.lagging.load(Ordering::Acquire) {
                match self.catch_up(rx).await {
                    Ok(None) => continue,
                    Ok(Some(reason)) => return Ending::Close(TOO_SLOW, reason),
                    Err(ending) => return ending,
                }
            }
            tokio::select! {
                biased;
                _ = &mut *reader => return Ending::ClientGone,
                () = self.ctl.wake.notified() => {}
                item = rx.recv() => {
                    // The reader holds a sender until it ends, so the queue cannot end first.
                    let Some(item) = item else { return Ending::ClientGone };
                    if let Err(ending) = self.batch(Some(item), rx).await {
                        return ending;
                    }
                }
            }
        }
    }

    /// Writes `first` and what else is queued, up to [`WRITE_BATCH`] frames, then flushes.
    async fn batch(
        &mut self,
        first: Option<Out>,
        rx: &mut mpsc::Receiver<Out>,
    ) -> Result<(), Ending> {
        let write = async {
            let mut n = 0;
            if let Some(item) = first {
                self.feed(item).await?;
                n += 1;
            }
            while n < WRITE_BATCH {
                let Ok(item) = rx.try_recv() else { break };
                self.feed(item).await?;
                n += 1;
            }
            self.sink.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Ending::Broken),
            Err(_) => Err(Ending::Close(TOO_SLOW, NOT_READING_REASON)),
        }
    }

    async fn feed(&mut self, item: Out) -> Result<(), axum::Error> {
        let frame = match item {
            Out::Log { seq, frame } => {
                if seq <= self.last_sent {
                    return Ok(());
                }
                self.last_sent = seq;
                frame
            }
            Out::Frame(frame) => frame,
        };
        self.sink.feed(Message::Text(frame)).await
    }

    /// What was queued before the mark, then the log after `last_sent` from memory, in
    /// batches, until nothing is left (the mark then cleared under the room's lock, so the room
    /// queues from exactly there). `Some(reason)` when it cannot catch up: close with 4008.
    async fn catch_up(
        &mut self,
        rx: &mut mpsc::Receiver<Out>,
    ) -> Result<Option<&'static str>, Ending> {
        let deadline = Instant::now() + LAG_WINDOW;
        while !rx.is_empty() {
            self.batch(None, rx).await?;
        }
        loop {
            if self.ctl.too_slow.load(Ordering::Acquire) {
                return Ok(Some(TOO_SLOW_REASON));
            }
            let frames = match self.next_batch() {
                Batch::Done => return Ok(None),
                Batch::Gone => return Ok(Some(TOO_SLOW_REASON)),
                Batch::Frames(frames) => frames,
            };
            let write = async {
                for (seq, frame) in frames {
                    self.sink.feed(Message::Text(frame)).await?;
                    self.last_sent = seq;
                }
                self.sink.flush().await
            };
            match tokio::time::timeout(WRITE_TIMEOUT, write).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Ending::Broken),
                Err(_) => return Ok(Some(NOT_READING_REASON)),
            }
            if Instant::now() > deadline {
                return Ok(Some(TOO_SLOW_REASON));
            }
        }
    }

    fn next_batch(&self) -> Batch {
        let state = lock(&self.room);
        if state.last_seq <= self.last_sent {
            self.ctl.lagging.store(false, Ordering::Release);
            return Batch::Done;
        }
        let Some(first) = state.log.front().map(|e| e.seq) else {
            return Batch::Gone;
        };
        if self.last_sent + 1 < first {
            return Batch::Gone;
        }
        let start = (self.last_sent + 1 - first) as usize;
        Batch::Frames(
            state
                .log
                .range(start..)
                .take(CATCH_UP_BATCH)
                .map(|e| (e.seq, e.frame(self.viewer).clone()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_are_read_as_the_server_reads_them() {
        assert_eq!(parse(r#"{"content":"hi"}"#, true), Ok(Some("hi".into())));
        assert_eq!(
            parse(r#"{"type":"message","content":"hi"}"#, true),
            Ok(Some("hi".into()))
        );
        assert_eq!(parse(r#"{"type":"typing"}"#, true), Ok(None));
        assert_eq!(
            parse(r#"{"type":"typing"}"#, false),
            Err("Content cannot be empty")
        );
        assert_eq!(parse("{", true), Err("Invalid JSON"));
        assert_eq!(
            parse(r#"{"content":"  "}"#, true),
            Err("Content cannot be empty")
        );
    }

    #[test]
    fn frames_have_the_server_shape() {
        let store = Store::new(4);
        let Ok(user) = store.register("b1_0".into(), "b1_0@example.com".into()) else {
            panic!("registered")
        };
        let Ok(room) = store.create_chat(user.clone(), "c".into(), vec![]) else {
            panic!("created")
        };
        let entry = room.append(&store, user.clone(), "t:1|0|0".into(), deliver);
        let own: Value = serde_json::from_str(entry.frame(user.id).as_str()).unwrap();
        assert_eq!(own["type"], "message");
        assert_eq!(own["message"]["seq"], 1);
        assert_eq!(own["message"]["chat"], room.id);
        assert_eq!(own["message"]["content"], "t:1|0|0");
        assert_eq!(own["message"]["sender"]["email"], "b1_0@example.com");
        assert_eq!(own["message"]["sender"]["user_type"], "student");
        let other: Value = serde_json::from_str(entry.frame(user.id + 1).as_str()).unwrap();
        assert_eq!(other["message"]["sender"]["email"], "");
    }
}
