//! The local connections of this node, grouped by chat. Each chat with open sockets here has a
//! room: one task that owns the chat's subscribers and delivers its events to them in order.
//!
//! Ordering: the chat's log (messages, and for `mrm.v2` sockets every other event: edits,
//! deletions, …) is delivered in `seq` order with no gap. An entry that arrives ahead of
//! its turn waits briefly for the ones before it (they are usually a few microseconds behind);
//! if they do not come, the room reads them from the database, the source of truth. Every
//! published seq implies all smaller ones are committed, so the database always has them.
//!
//! Backpressure: a subscriber's queue is bounded, and the room never waits for a slow socket.
//! When a socket's queue is full, the room marks it lagging and stops queueing the chat's log for
//! it; the socket then reads what it missed from the database, in pages, with bounded memory,
//! clears the mark and reads once more (what the room skipped while it was clearing), and is live
//! again, without a reconnect. A socket that falls behind [`MAX_LAGS`] times within
//! [`LAG_WINDOW`], or is still catching up after it, cannot keep up even so: it is closed with
//! 4008 ("too slow, resume") and dropped.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::Duration,
};

use axum::extract::ws::Utf8Bytes;
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use super::{
    close::{self, Close},
    presence::{RoomPresence, SharedPresence},
};
use crate::{
    store,
    store::{events::LogEntry, Db},
    wire::{
        frames::{self, Member, MessageFrames, Protocol},
        views::{MessageView, Viewer},
    },
};

/// Identifies one socket within this process ([`super::Realtime::next_conn_id`]).
pub type ConnId = u64;

/// What a room sends to one connection.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A position of the chat's log (a message, or for `mrm.v2` sockets any other event); the
    /// seq lets the connection skip what its replay already sent.
    Message {
        seq: i64,
        frame: Utf8Bytes,
        /// When the room queued it, for the delivery lag.
        queued: std::time::Instant,
    },
    /// An ephemeral frame: typing, presence, errors.
    Frame(Utf8Bytes),
}

/// One socket as its room knows it.
pub struct Subscriber {
    pub conn: ConnId,
    /// The socket's user, as presence and typing frames show them.
    pub member: Member,
    /// What the socket is sent besides messages: presence, typing and deletion frames only
    /// in `mrm.v2`.
    pub protocol: Protocol,
    /// The socket's user, as views are rendered for them (which emails they see).
    pub viewer: Viewer,
    /// The socket's bounded queue (`MRM_WS_QUEUE`); the room never waits for it.
    pub outbound: mpsc::Sender<Outbound>,
    /// How the room tells the socket to close, and why (4003, 4004, 4008).
    pub close: oneshot::Sender<Close>,
    /// Set by the room when the queue is full: the room stops queueing the chat's log for the
    /// socket, which reads what it missed from the database, in pages, and clears it once it is
    /// live again (see the module's notes on backpressure).
    pub lagging: Arc<Lagging>,
    /// When the socket began to lag, within the last [`LAG_WINDOW`].
    pub lags: Vec<Instant>,
}

/// A socket's lagging mark: set by its room when its queue overflows, cleared by its writer once
/// it has caught up from the database.
#[derive(Debug, Default)]
pub struct Lagging {
    set: AtomicBool,
    wake: tokio::sync::Notify,
}

impl Lagging {
    /// Marks the socket lagging and wakes its writer (even one waiting on an empty queue).
    pub fn mark(&self) {
        self.set.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Whether the socket is lagging.
    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// The socket is live again: the room queues for it from now on.
    pub fn clear(&self) {
        self.set.store(false, Ordering::Release);
    }

    /// Waits until the socket is marked (or was marked since the last wait).
    pub async fn marked(&self) {
        self.wake.notified().await;
    }
}

/// A socket that falls behind [`MAX_LAGS`] times within this window cannot keep up even by
/// reading from the database, and is closed with 4008 the last time; so is one still catching up
/// this long after it began.
pub const LAG_WINDOW: Duration = Duration::from_secs(60);
/// See [`LAG_WINDOW`].
pub const MAX_LAGS: usize = 3;

/// Something that happened in a chat, as every node hears it.
#[derive(Debug, Clone)]
pub enum RoomEvent {
    /// A committed message, already serialised as its frames.
    Message { seq: i64, frames: MessageFrames },
    /// Someone is typing; relayed to every socket but the sender's.
    Typing { from: ConnId, frame: Utf8Bytes },
    /// The user left or was removed: their sockets close.
    MemberRemoved { user_id: i64 },
    /// The chat is gone: every socket closes.
    ChatDeleted,
    /// Any other change the chat's log recorded at position `seq` (an edit, a deletion, …),
    /// as its `mrm.v2` frame: delivered in log order to `mrm.v2` sockets only.
    /// `departed`: the user the event takes out of the chat, whose sockets close (4003) as it
    /// is delivered, so nothing after it reaches them.
    Logged {
        seq: i64,
        frame: Utf8Bytes,
        departed: Option<i64>,
    },
    /// Someone came or went on another node: recount who is online.
    PresenceChanged,
    /// Events may have been missed (the bus reconnected): catch up from the database.
    Resync,
}

enum Command {
    Join {
        subscriber: Subscriber,
        /// Answers with the last seq the room delivered before this subscriber joined, or why
        /// it cannot join.
        joined: oneshot::Sender<Result<i64, Close>>,
    },
    Leave {
        conn: ConnId,
    },
    Event(RoomEvent),
}

/// How long a message that arrived ahead of its turn waits before the room reads the missing
/// ones from the database.
const GAP_GRACE: Duration = Duration::from_millis(25);
/// How often a room with sockets checks the database for messages it was not told about.
const CATCH_UP_PERIOD: Duration = Duration::from_secs(2);
/// Most messages one gap fill reads at a time.
const GAP_FILL_BATCH: i64 = 500;
/// Presence changes within this interval go out as one frame per socket.
pub const PRESENCE_COALESCE: Duration = Duration::from_millis(100);

/// One position of a chat's log as a room delivers it.
#[derive(Debug, Clone)]
enum Entry {
    /// A new message, to every socket.
    Message(MessageFrames),
    /// Any other event, to `mrm.v2` sockets only, and the user it takes out of the chat.
    Event(Utf8Bytes, Option<i64>),
}

/// This node's rooms, one per chat with open sockets here, each a task of its own. The hub only
/// routes: rooms start on the first join and retire when their last socket leaves.
pub struct Hub {
    db: Db,
    rooms: Mutex<HashMap<i64, mpsc::UnboundedSender<Command>>>,
    presence: OnceLock<Arc<dyn SharedPresence>>,
    /// Told when a room starts or retires, so the bus can follow the chats this node serves.
    changed: tokio::sync::Notify,
}

impl Hub {
    /// An empty hub whose rooms read missing messages from `db`.
    pub fn new(db: Db) -> Arc<Hub> {
        Arc::new(Hub {
            db,
            rooms: Mutex::new(HashMap::new()),
            presence: OnceLock::new(),
            changed: tokio::sync::Notify::new(),
        })
    }

    /// The chats this node has rooms for (sockets in), in no particular order.
    pub fn chat_ids(&self) -> Vec<i64> {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms.keys().copied().collect()
    }

    /// Whether this node has a room (sockets) for the chat.
    pub fn has_room(&self, chat_id: i64) -> bool {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms.contains_key(&chat_id)
    }

    /// Completes once a room started or retired since the last call returned (at once if one
    /// did in between): one waiter, which then reads [`Hub::chat_ids`].
    pub async fn rooms_changed(&self) {
        self.changed.notified().await;
    }

    /// Shares presence with other nodes from now on (set once, before sockets connect).
    pub fn share_presence(&self, presence: Arc<dyn SharedPresence>) {
        let _ = self.presence.set(presence);
    }

    /// Sends an event to every room of this node.
    pub fn dispatch_all(&self, event: RoomEvent) {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        for room in rooms.values() {
            let _ = room.send(Command::Event(event.clone()));
        }
    }

    /// Hands an event to the chat's room, if this node has one (no sockets, nothing to do).
    pub fn dispatch(&self, chat_id: i64, event: RoomEvent) {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(room) = rooms.get(&chat_id) {
            let _ = room.send(Command::Event(event));
        }
    }

    /// Adds a subscriber to the chat's room, starting the room if needed. Returns the last seq
    /// delivered before the subscriber joined, or the close to send: 4004 when the chat does not
    /// exist, 1011 when it could not be read (the client should retry).
    pub async fn join(
        self: &Arc<Self>,
        chat_id: i64,
        subscriber: Subscriber,
    ) -> Result<i64, Close> {
        let (joined, answer) = oneshot::channel();
        {
            let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
            let room = rooms.entry(chat_id).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(Room::new(self.clone(), chat_id, rx).run());
                self.changed.notify_one();
                tx
            });
            // Sent under the lock: a room only retires under it too, after checking its inbox.
            let _ = room.send(Command::Join { subscriber, joined });
        }
        answer.await.unwrap_or(Err(Close {
            code: close::INTERNAL,
            reason: "try again",
        }))
    }

    /// Removes socket `conn` from the chat's room, if the room still runs; presence is recounted.
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
        self.changed.notify_one();
        true
    }
}

struct Room {
    hub: Arc<Hub>,
    chat_id: i64,
    inbox: mpsc::UnboundedReceiver<Command>,
    subscribers: Vec<Subscriber>,
    presence: RoomPresence,
    next_seq: i64,
    pending: BTreeMap<i64, Entry>,
    gap_deadline: Option<Instant>,
    /// When the presence changes gathered so far are sent.
    presence_deadline: Option<Instant>,
}

impl Room {
    fn new(hub: Arc<Hub>, chat_id: i64, inbox: mpsc::UnboundedReceiver<Command>) -> Room {
        Room {
            hub,
            chat_id,
            inbox,
            subscribers: Vec::new(),
            presence: RoomPresence::default(),
            next_seq: 1,
            pending: BTreeMap::new(),
            gap_deadline: None,
            presence_deadline: None,
        }
    }

    async fn run(mut self) {
        let refusal = match self.starting_seq().await {
            Ok(Some(last)) => {
                self.next_seq = last + 1;
                None
            }
            Ok(None) => Some(Close {
                code: close::CHAT_DELETED,
                reason: "chat deleted",
            }),
            Err(()) => Some(Close {
                code: close::INTERNAL,
                reason: "try again",
            }),
        };
        if let Some(refusal) = refusal {
            self.hub.retire(self.chat_id, &self.inbox, true);
            while let Ok(command) = self.inbox.try_recv() {
                if let Command::Join { joined, .. } = command {
                    let _ = joined.send(Err(refusal));
                }
            }
            return;
        }
        // A periodic look at the database bounds how long a message whose event never reached
        // this room can go unnoticed (a bus that dropped it, or anything else): the database,
        // not the event, is what sockets are owed. With other nodes around, presence entries
        // need refreshing on the same beat.
        let period = self
            .hub
            .presence
            .get()
            .map_or(CATCH_UP_PERIOD, |p| p.heartbeat().min(CATCH_UP_PERIOD));
        let mut heartbeat = Some(tokio::time::interval_at(Instant::now() + period, period));
        loop {
            let deadline = self.gap_deadline;
            let presence_deadline = self.presence_deadline;
            let command = tokio::select! {
                command = self.inbox.recv() => command,
                _ = sleep_until(deadline) => {
                    self.fill_gap().await;
                    continue;
                }
                _ = sleep_until(presence_deadline) => {
                    self.presence_deadline = None;
                    let announce = self.presence.dirty();
                    self.refresh_presence(announce, announce).await;
                    continue;
                }
                _ = tick(&mut heartbeat) => {
                    self.catch_up().await;
                    if self.hub.presence.get().is_some() {
                        // Changes not yet told to the other nodes are told now.
                        let notify = self.presence.dirty();
                        self.refresh_presence(true, notify).await;
                    }
                    continue;
                }
            };
            match command {
                Some(Command::Join { subscriber, joined }) => self.join(subscriber, joined),
                Some(Command::Leave { conn }) => self.remove(|s| s.conn == conn, None),
                Some(Command::Event(event)) => {
                    if self.on_event(event).await {
                        self.refresh_presence(true, true).await;
                        self.hub.retire(self.chat_id, &self.inbox, true);
                        return;
                    }
                }
                None => return,
            }
            if self.subscribers.is_empty() {
                // No one here to wait for: other nodes learn at once that this node's users left.
                if self.presence.dirty() {
                    self.refresh_presence(true, true).await;
                }
                if self.hub.retire(self.chat_id, &self.inbox, false) {
                    return;
                }
            } else if self.presence.pending() && self.presence_deadline.is_none() {
                self.presence_deadline = Some(Instant::now() + PRESENCE_COALESCE);
            }
        }
    }

    /// The chat's last seq, retried briefly if the database hiccups; `Ok(None)` for a missing
    /// chat, `Err` when the database did not answer.
    async fn starting_seq(&self) -> Result<Option<i64>, ()> {
        for attempt in 0..5u32 {
            match store::chats::last_seq(&self.hub.db, self.chat_id).await {
                Ok(found) => return Ok(found),
                Err(err) => {
                    tracing::warn!(chat.id = self.chat_id, error = %err, "room could not read the chat");
                    tokio::time::sleep(Duration::from_millis(50 * 2u64.pow(attempt))).await;
                }
            }
        }
        Err(())
    }

    fn join(&mut self, subscriber: Subscriber, joined: oneshot::Sender<Result<i64, Close>>) {
        if joined.send(Ok(self.next_seq - 1)).is_err() {
            return; // The connection gave up while waiting.
        }
        let owed = subscriber.protocol.extended().then_some(subscriber.conn);
        self.presence.arrive(owed, subscriber.member.clone());
        self.subscribers.push(subscriber);
    }

    /// Recounts who is online (`RoomPresence::recount`) and tells the `mrm.v2` sockets: the
    /// whole list to those owed it, the change to the others. A socket whose queue cannot take
    /// its frame is owed the whole list at the next recount, so none is left with a wrong list.
    async fn refresh_presence(&mut self, announce: bool, notify: bool) {
        let shared = self.hub.presence.get().cloned();
        let recount = self
            .presence
            .recount(shared.as_deref(), self.chat_id, announce, notify)
            .await;
        let full = (!recount.full.is_empty()).then(|| self.presence.frame());
        let delta = recount
            .changed()
            .then(|| frames::presence_delta(&recount.joined, &recount.left));
        for s in self.subscribers.iter().filter(|s| s.protocol.extended()) {
            let frame = if recount.full.contains(&s.conn) {
                full.as_ref()
            } else {
                delta.as_ref()
            };
            let Some(frame) = frame else { continue };
            if let Err(mpsc::error::TrySendError::Full(_)) =
                s.outbound.try_send(Outbound::Frame(frame.clone()))
            {
                self.presence.owe(s.conn);
            }
        }
        if self.presence.pending() && self.presence_deadline.is_none() {
            self.presence_deadline = Some(Instant::now() + PRESENCE_COALESCE);
        }
    }

    /// Handles an event; true when the room should end.
    async fn on_event(&mut self, event: RoomEvent) -> bool {
        match event {
            RoomEvent::Message { seq, frames } => self.on_logged(seq, Entry::Message(frames)),
            RoomEvent::Logged {
                seq,
                frame,
                departed,
            } => self.on_logged(seq, Entry::Event(frame, departed)),
            RoomEvent::Typing { from, frame } => {
                let others = self.subscribers.iter().filter(|s| s.conn != from);
                for s in others.filter(|s| s.protocol.extended()) {
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
                self.presence.clear();
                return true;
            }
            RoomEvent::PresenceChanged => self.presence.remote_changed(),
            RoomEvent::Resync => self.catch_up().await,
        }
        false
    }

    fn on_logged(&mut self, seq: i64, frame: Entry) {
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
        self.deliver_from_db(first_pending).await;
        self.flush_pending();
        if !self.pending.is_empty() {
            self.gap_deadline = Some(Instant::now() + GAP_GRACE);
        }
    }

    /// Delivers whatever the database has beyond what this room delivered: after the bus was
    /// down, or periodically in case it silently dropped the latest messages.
    async fn catch_up(&mut self) {
        // A room with no socket has no one to close and no one to deliver to: no query.
        if self.subscribers.is_empty() {
            return;
        }
        self.drop_departed().await;
        if self.subscribers.is_empty() {
            return;
        }
        match store::chats::last_seq(&self.hub.db, self.chat_id).await {
            Ok(Some(last)) if last >= self.next_seq => {
                self.deliver_from_db(last + 1).await;
                self.flush_pending();
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(chat.id = self.chat_id, error = %err, "catch-up failed"),
        }
    }

    /// Closes (4003) the sockets of users who no longer take part in the chat. A departure is
    /// normally announced by its own event; this bounds how long one whose event never reached
    /// this room (a bus that dropped it) keeps a socket, and runs before messages are read from
    /// the database, so those never reach a user who has left.
    async fn drop_departed(&mut self) {
        let mut users: Vec<i64> = self.subscribers.iter().map(|s| s.member.id).collect();
        users.sort_unstable();
        users.dedup();
        match store::chats::members_among(&self.hub.db, self.chat_id, &users).await {
            Ok(members) => {
                let departed = |s: &Subscriber| members.binary_search(&s.member.id).is_err();
                if self.subscribers.iter().any(departed) {
                    self.remove(
                        departed,
                        Some(Close {
                            code: close::REMOVED,
                            reason: "removed from the chat",
                        }),
                    );
                }
            }
            Err(err) => {
                tracing::warn!(chat.id = self.chat_id, error = %err, "membership check failed")
            }
        }
    }

    /// Delivers the stored log entries from `next_seq` up to (not including) `until`, in order.
    /// Everything below `until` is committed (a published or counted seq implies it), so a seq
    /// the database lacks there is skipped rather than waited for (a message of a chat whose
    /// sender's account was deleted since).
    async fn deliver_from_db(&mut self, until: i64) {
        while self.next_seq < until {
            let rows = match store::events::range(
                &self.hub.db,
                self.chat_id,
                self.next_seq - 1,
                until,
                GAP_FILL_BATCH,
                true,
            )
            .await
            {
                Ok(rows) => rows,
                Err(err) => {
                    tracing::warn!(chat.id = self.chat_id, error = %err, "gap fill failed; retrying");
                    return;
                }
            };
            let complete = (rows.len() as i64) < GAP_FILL_BATCH;
            tracing::debug!(
                chat.id = self.chat_id,
                filled = rows.len(),
                "delivered from the database"
            );
            for row in rows {
                let seq = row.seq();
                if seq < self.next_seq {
                    continue;
                }
                match row {
                    LogEntry::Message(m) => self.deliver(
                        seq,
                        Entry::Message(MessageFrames::new(MessageView::as_sent(m))),
                    ),
                    LogEntry::Event(e) => match frames::logged(&e) {
                        Some(frame) => self.deliver(seq, Entry::Event(frame, e.departed())),
                        // A kind this version cannot show: its place is passed.
                        None => self.next_seq = seq + 1,
                    },
                }
            }
            if complete {
                self.next_seq = self.next_seq.max(until);
            }
        }
    }

    fn deliver(&mut self, seq: i64, entry: Entry) {
        self.next_seq = seq + 1;
        let mut slow = Vec::new();
        let mut gone = Vec::new();
        let queued = std::time::Instant::now();
        for s in &mut self.subscribers {
            if s.lagging.is_set() {
                continue; // It reads the log from the database until it is live again.
            }
            let frame = match &entry {
                Entry::Message(frames) => match frames.for_viewer(s.viewer, s.protocol) {
                    Some(frame) => frame.clone(),
                    None => continue,
                },
                Entry::Event(frame, _) if s.protocol.extended() => frame.clone(),
                Entry::Event(..) => continue,
            };
            match s
                .outbound
                .try_send(Outbound::Message { seq, frame, queued })
            {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    s.lags.retain(|at| at.elapsed() < LAG_WINDOW);
                    if s.lags.len() + 1 >= MAX_LAGS {
                        slow.push(s.conn);
                    } else {
                        s.lags.push(Instant::now());
                        s.lagging.mark();
                    }
                }
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
        if let Entry::Event(_, Some(departed)) = entry {
            self.remove(
                |s| s.member.id == departed,
                Some(Close {
                    code: close::REMOVED,
                    reason: "removed from the chat",
                }),
            );
        }
    }

    /// Drops the matching subscribers (telling them why, if `close` is given); presence is
    /// recounted after the command.
    fn remove(&mut self, matches: impl Fn(&Subscriber) -> bool, close: Option<Close>) {
        let mut kept = Vec::with_capacity(self.subscribers.len());
        for s in self.subscribers.drain(..) {
            if !matches(&s) {
                kept.push(s);
                continue;
            }
            if let Some(close) = close {
                let _ = s.close.send(close);
            }
            self.presence.depart(s.conn, s.member.id);
        }
        self.subscribers = kept;
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "hub_tests.rs"]
mod tests;
