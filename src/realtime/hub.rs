//! The local connections of this node, grouped by chat. Each chat with open sockets here has a
//! room: one task that owns the chat's subscribers and delivers its events to them in order.
//!
//! Ordering: messages are delivered in `seq` order with no gap. A message that arrives ahead of
//! its turn waits briefly for the ones before it (they are usually a few microseconds behind);
//! if they do not come, the room reads them from the database, the source of truth. Every
//! published seq implies all smaller ones are committed, so the database always has them.
//!
//! Backpressure: a subscriber's queue is bounded. One that is full is closed with 4008 ("too slow,
//! resume") and dropped; the room never waits for a slow socket.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::extract::ws::Utf8Bytes;
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use super::frames::{self, Member};
use crate::{http::views::MessageView, store, store::Db};

pub type ConnId = u64;

/// Close codes a chat socket can end with.
pub mod close {
    /// The server is going away (shutdown, deploy): reconnect, with `after_seq`.
    pub const GOING_AWAY: u16 = 1001;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    /// The user is no longer a participant.
    pub const REMOVED: u16 = 4003;
    /// The chat was deleted.
    pub const CHAT_DELETED: u16 = 4004;
    /// The client fell behind; reconnect with `after_seq` to get what it missed.
    pub const TOO_SLOW: u16 = 4008;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: &'static str,
}

/// What a room sends to one connection.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A chat message; the seq lets the connection skip what its replay already sent.
    Message { seq: i64, frame: Utf8Bytes },
    /// An ephemeral frame: typing, presence, errors.
    Frame(Utf8Bytes),
}

pub struct Subscriber {
    pub conn: ConnId,
    pub member: Member,
    pub outbound: mpsc::Sender<Outbound>,
    pub close: oneshot::Sender<Close>,
}

/// Something that happened in a chat, as every node hears it.
#[derive(Debug, Clone)]
pub enum RoomEvent {
    /// A committed message, already serialised as its frame.
    Message { seq: i64, frame: Utf8Bytes },
    /// Someone is typing; relayed to every socket but the sender's.
    Typing { from: ConnId, frame: Utf8Bytes },
    /// The user left or was removed: their sockets close.
    MemberRemoved { user_id: i64 },
    /// The chat is gone: every socket closes.
    ChatDeleted,
}

enum Command {
    Join {
        subscriber: Subscriber,
        /// Answers with the last seq the room delivered before this subscriber joined.
        joined: oneshot::Sender<i64>,
    },
    Leave {
        conn: ConnId,
    },
    Event(RoomEvent),
}

/// How long a message that arrived ahead of its turn waits before the room reads the missing
/// ones from the database.
const GAP_GRACE: Duration = Duration::from_millis(25);
/// Most messages one gap fill reads at a time.
const GAP_FILL_BATCH: i64 = 500;

pub struct Hub {
    db: Db,
    rooms: Mutex<HashMap<i64, mpsc::UnboundedSender<Command>>>,
}

impl Hub {
    pub fn new(db: Db) -> Arc<Hub> {
        Arc::new(Hub {
            db,
            rooms: Mutex::new(HashMap::new()),
        })
    }

    /// Hands an event to the chat's room, if this node has one (no sockets, nothing to do).
    pub fn dispatch(&self, chat_id: i64, event: RoomEvent) {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(room) = rooms.get(&chat_id) {
            let _ = room.send(Command::Event(event));
        }
    }

    /// Adds a subscriber to the chat's room, starting the room if needed. Returns the last seq
    /// delivered before the subscriber joined, or `None` when the chat does not exist.
    pub async fn join(self: &Arc<Self>, chat_id: i64, subscriber: Subscriber) -> Option<i64> {
        let (joined, answer) = oneshot::channel();
        {
            let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
            let room = rooms.entry(chat_id).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(Room::new(self.clone(), chat_id, rx).run());
                tx
            });
            // Sent under the lock: a room only retires under it too, after checking its inbox.
            let _ = room.send(Command::Join { subscriber, joined });
        }
        answer.await.ok()
    }

    pub fn leave(&self, chat_id: i64, conn: ConnId) {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(room) = rooms.get(&chat_id) {
            let _ = room.send(Command::Leave { conn });
        }
    }

    /// Number of chats with open sockets on this node.
    pub fn room_count(&self) -> usize {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Removes the room from the map if `inbox` is empty (or unconditionally when `force`).
    /// Returns whether it was removed.
    fn retire(&self, chat_id: i64, inbox: &mpsc::UnboundedReceiver<Command>, force: bool) -> bool {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if !force && !inbox.is_empty() {
            return false;
        }
        rooms.remove(&chat_id);
        true
    }
}

struct Room {
    hub: Arc<Hub>,
    chat_id: i64,
    inbox: mpsc::UnboundedReceiver<Command>,
    subscribers: Vec<Subscriber>,
    /// Sockets per online user, for presence.
    online: BTreeMap<i64, (Member, usize)>,
    next_seq: i64,
    pending: BTreeMap<i64, Utf8Bytes>,
    gap_deadline: Option<Instant>,
}

impl Room {
    fn new(hub: Arc<Hub>, chat_id: i64, inbox: mpsc::UnboundedReceiver<Command>) -> Room {
        Room {
            hub,
            chat_id,
            inbox,
            subscribers: Vec::new(),
            online: BTreeMap::new(),
            next_seq: 1,
            pending: BTreeMap::new(),
            gap_deadline: None,
        }
    }

    async fn run(mut self) {
        match self.starting_seq().await {
            Some(last) => self.next_seq = last + 1,
            None => {
                // Unknown chat (or no database): joiners get no answer and close.
                self.hub.retire(self.chat_id, &self.inbox, true);
                return;
            }
        }
        loop {
            let deadline = self.gap_deadline;
            let command = tokio::select! {
                command = self.inbox.recv() => command,
                _ = sleep_until(deadline) => {
                    self.fill_gap().await;
                    continue;
                }
            };
            match command {
                Some(Command::Join { subscriber, joined }) => self.join(subscriber, joined),
                Some(Command::Leave { conn }) => self.remove(|s| s.conn == conn, None),
                Some(Command::Event(event)) => {
                    if self.on_event(event) {
                        self.hub.retire(self.chat_id, &self.inbox, true);
                        return;
                    }
                }
                None => return,
            }
            if self.subscribers.is_empty() && self.hub.retire(self.chat_id, &self.inbox, false) {
                return;
            }
        }
    }

    /// The chat's last seq, retried briefly if the database hiccups; `None` for a missing chat.
    async fn starting_seq(&self) -> Option<i64> {
        for attempt in 0..5u32 {
            match store::chats::last_seq(&self.hub.db, self.chat_id).await {
                Ok(found) => return found,
                Err(err) => {
                    tracing::warn!(chat.id = self.chat_id, error = %err, "room could not read the chat");
                    tokio::time::sleep(Duration::from_millis(50 * 2u64.pow(attempt))).await;
                }
            }
        }
        None
    }

    fn join(&mut self, subscriber: Subscriber, joined: oneshot::Sender<i64>) {
        if joined.send(self.next_seq - 1).is_err() {
            return; // The connection gave up while waiting.
        }
        let user = subscriber.member.clone();
        self.subscribers.push(subscriber);
        let entry = self.online.entry(user.id).or_insert((user, 0));
        entry.1 += 1;
        if entry.1 == 1 {
            self.broadcast_presence();
        } else if let Some(last) = self.subscribers.last() {
            // Only the newcomer needs the list: nobody else's view changed.
            let _ = last
                .outbound
                .try_send(Outbound::Frame(self.presence_frame()));
        }
    }

    /// Handles an event; true when the room should end.
    fn on_event(&mut self, event: RoomEvent) -> bool {
        match event {
            RoomEvent::Message { seq, frame } => self.on_message(seq, frame),
            RoomEvent::Typing { from, frame } => {
                for s in self.subscribers.iter().filter(|s| s.conn != from) {
                    // Typing is ephemeral: a full queue just misses it.
                    let _ = s.outbound.try_send(Outbound::Frame(frame.clone()));
                }
            }
            RoomEvent::MemberRemoved { user_id } => self.remove(
                |s| s.member.id == user_id,
                Some(Close {
                    code: close::REMOVED,
                    reason: "removed from the chat",
                }),
            ),
            RoomEvent::ChatDeleted => {
                for s in self.subscribers.drain(..) {
                    let _ = s.close.send(Close {
                        code: close::CHAT_DELETED,
                        reason: "chat deleted",
                    });
                }
                return true;
            }
        }
        false
    }

    fn on_message(&mut self, seq: i64, frame: Utf8Bytes) {
        if seq < self.next_seq {
            return; // Already delivered (a duplicate, or older than this room).
        }
        if seq > self.next_seq {
            self.pending.insert(seq, frame);
            self.gap_deadline
                .get_or_insert_with(|| Instant::now() + GAP_GRACE);
            return;
        }
        self.deliver(seq, frame);
        self.flush_pending();
    }

    /// Delivers buffered messages whose turn has come.
    fn flush_pending(&mut self) {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > self.next_seq {
                break;
            }
            let (seq, frame) = entry.remove_entry();
            if seq == self.next_seq {
                self.deliver(seq, frame);
            }
        }
        if self.pending.is_empty() {
            self.gap_deadline = None;
        }
    }

    /// Reads the messages missing before the first pending one from the database.
    async fn fill_gap(&mut self) {
        let Some(&first_pending) = self.pending.keys().next() else {
            self.gap_deadline = None;
            return;
        };
        match store::messages::seq_range(
            &self.hub.db,
            self.chat_id,
            self.next_seq - 1,
            first_pending,
            GAP_FILL_BATCH,
        )
        .await
        {
            Ok(rows) => {
                tracing::debug!(
                    chat.id = self.chat_id,
                    filled = rows.len(),
                    "gap filled from the database"
                );
                for row in rows {
                    if row.seq == self.next_seq {
                        let seq = row.seq;
                        self.deliver(seq, frames::message(&MessageView::from(row)));
                    }
                }
            }
            Err(err) => {
                tracing::warn!(chat.id = self.chat_id, error = %err, "gap fill failed; retrying")
            }
        }
        self.flush_pending();
        if !self.pending.is_empty() {
            self.gap_deadline = Some(Instant::now() + GAP_GRACE);
        }
    }

    fn deliver(&mut self, seq: i64, frame: Utf8Bytes) {
        self.next_seq = seq + 1;
        let mut slow = Vec::new();
        let mut gone = Vec::new();
        for s in &self.subscribers {
            match s.outbound.try_send(Outbound::Message {
                seq,
                frame: frame.clone(),
            }) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => slow.push(s.conn),
                Err(mpsc::error::TrySendError::Closed(_)) => gone.push(s.conn),
            }
        }
        if !slow.is_empty() {
            self.remove(
                |s| slow.contains(&s.conn),
                Some(Close {
                    code: close::TOO_SLOW,
                    reason: "too slow, resume",
                }),
            );
        }
        if !gone.is_empty() {
            self.remove(|s| gone.contains(&s.conn), None);
        }
    }

    /// Drops the matching subscribers (telling them why, if `close` is given) and updates
    /// presence for those still here.
    fn remove(&mut self, matches: impl Fn(&Subscriber) -> bool, close: Option<Close>) {
        let mut presence_changed = false;
        let mut kept = Vec::with_capacity(self.subscribers.len());
        for s in self.subscribers.drain(..) {
            if !matches(&s) {
                kept.push(s);
                continue;
            }
            if let Some(close) = close {
                let _ = s.close.send(close);
            }
            if let Some(entry) = self.online.get_mut(&s.member.id) {
                entry.1 -= 1;
                if entry.1 == 0 {
                    self.online.remove(&s.member.id);
                    presence_changed = true;
                }
            }
        }
        self.subscribers = kept;
        if presence_changed {
            self.broadcast_presence();
        }
    }

    fn presence_frame(&self) -> Utf8Bytes {
        let online: Vec<&Member> = self.online.values().map(|(m, _)| m).collect();
        frames::presence(&online)
    }

    fn broadcast_presence(&self) {
        let frame = self.presence_frame();
        for s in &self.subscribers {
            let _ = s.outbound.try_send(Outbound::Frame(frame.clone()));
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
