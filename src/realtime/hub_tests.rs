//! A room's ordering, gap filling and backpressure, against a real SQLite database.
//!
//! Time is paused, and held still (see [`HeldClock`]): it moves only when a test calls
//! `advance`, so a room's timers fire exactly when a test says and never while a test waits for
//! the database. Tests learn what a room has done from what its sockets are sent; a typing frame
//! sent after some events is a barrier, since a room handles its commands in order.

use std::time::Duration;

use tokio::{
    sync::{mpsc, oneshot},
    time::{advance, timeout},
};

use super::*;
use crate::{
    store::{self, messages::Saved, users::NewUser},
    wire::frames::Protocol,
};

/// How long, in paused time, a test waits for a frame before it counts as never coming. The
/// clock is held, so this only runs out once a stuck test has let go of it.
const STUCK: Duration = Duration::from_secs(3600);

/// Keeps the paused clock from auto-advancing. Tokio does not auto-advance while a blocking task
/// runs; this one runs until the guard is dropped. Without it, the clock would jump to the next
/// timer whenever the runtime idles, as it does while the database's own thread works. After a
/// minute of real time the task lets go anyway, so that a test stuck waiting fails on `STUCK`
/// instead of hanging.
struct HeldClock {
    _release: std::sync::mpsc::Sender<()>,
}

fn hold_clock() -> HeldClock {
    let (release, released) = std::sync::mpsc::channel::<()>();
    tokio::task::spawn_blocking(move || {
        let _ = released.recv_timeout(Duration::from_secs(60));
    });
    HeldClock { _release: release }
}

/// Where a delivered message came from.
#[derive(Debug, PartialEq, Eq)]
enum Source {
    /// The event published for it.
    Live,
    /// The room's own read of the database.
    Stored,
}
use Source::{Live, Stored};

struct Fixture {
    hub: Arc<Hub>,
    db: Db,
    chat_id: i64,
    sender_id: i64,
    barriers: u32,
    _clock: HeldClock,
    _dir: tempfile::TempDir,
}

struct Socket {
    outbound: mpsc::Receiver<Outbound>,
    close: oneshot::Receiver<Close>,
    /// The room's lagging mark, which the socket's writer clears once it has caught up.
    lagging: Arc<super::Lagging>,
}

/// A new account named `username`; its id.
async fn user(db: &Db, username: &str) -> i64 {
    let new = NewUser {
        username,
        email: "",
        password_hash: "unused",
        user_type: crate::domain::UserType::Student,
        is_staff: false,
        is_superuser: false,
    };
    store::users::create(db, &new).await.unwrap().id
}

async fn fixture() -> Fixture {
    let clock = hold_clock();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hub.sqlite3").display());
    let db = Db::connect(&url, 4).await.unwrap();
    db.migrate().await.unwrap();
    let sender = user(&db, "sender").await;
    let chat = store::chats::create(&db, "room", sender, &[sender])
        .await
        .unwrap();
    Fixture {
        hub: Hub::new(db.clone()),
        db,
        chat_id: chat.id,
        sender_id: sender,
        barriers: 0,
        _clock: clock,
        _dir: dir,
    }
}

impl Fixture {
    /// A socket of its own user, a participant of the chat, joins the chat's room, with a
    /// queue of `capacity` frames.
    async fn join(&self, conn: ConnId, capacity: usize) -> Socket {
        self.join_speaking(conn, capacity, Protocol::V2).await
    }

    /// As `join`, speaking `protocol`.
    async fn join_speaking(&self, conn: ConnId, capacity: usize, protocol: Protocol) -> Socket {
        let user = self.participant(&format!("user{conn}")).await;
        self.join_as(conn, capacity, user, protocol).await
    }

    /// A user who takes part in the chat.
    async fn participant(&self, username: &str) -> i64 {
        let user = user(&self.db, username).await;
        // Straight into the table, not logged: the chat's positions stay those of its messages.
        let sql = "INSERT INTO chat_participants (chat_id, user_id, joined_at) VALUES ($1, $2, $3)";
        let now = chrono::Utc::now();
        match &self.db {
            Db::Sqlite(sqlite) => {
                let mut conn = sqlite.acquire().await.unwrap();
                let query = sqlx::query(sql).bind(self.chat_id).bind(user).bind(now);
                query.execute(&mut *conn).await.map(|_| ())
            }
            Db::Postgres(pool) => {
                let query = sqlx::query(sql).bind(self.chat_id).bind(user).bind(now);
                query.execute(pool).await.map(|_| ())
            }
        }
        .unwrap();
        user
    }

    /// Socket `conn` of user `user_id` joins the chat's room; presence names it `conn{conn}`.
    async fn join_as(
        &self,
        conn: ConnId,
        capacity: usize,
        user_id: i64,
        protocol: Protocol,
    ) -> Socket {
        let (outbound, outbound_rx) = mpsc::channel(capacity);
        let (close, close_rx) = oneshot::channel();
        let lagging = Arc::new(super::Lagging::default());
        let subscriber = Subscriber {
            conn,
            member: Member {
                id: user_id,
                username: format!("conn{conn}"),
            },
            viewer: Viewer {
                id: user_id,
                staff: false,
            },
            protocol,
            outbound,
            close,
            lagging: lagging.clone(),
            lags: Vec::new(),
        };
        self.hub
            .join(self.chat_id, subscriber)
            .await
            .expect("the room takes the socket");
        Socket {
            outbound: outbound_rx,
            close: close_rx,
            lagging,
        }
    }

    /// Saves `count` messages, as senders do; their content names their seq.
    async fn commit(&self, count: usize) -> Vec<Saved> {
        let mut saved = Vec::new();
        for _ in 0..count {
            let last = store::chats::last_seq(&self.db, self.chat_id)
                .await
                .unwrap()
                .unwrap();
            let content = format!("stored {}", last + 1);
            let row = store::messages::NewMessage {
                chat_id: self.chat_id,
                sender_id: self.sender_id,
                content: &content,
                reply_to: None,
                attachments: &[],
            };
            let message = store::messages::insert(&self.db, &row)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(message.seq, last + 1);
            saved.push(message);
        }
        saved
    }

    /// Publishes the event for message `seq`; its frame says it came live.
    fn publish(&self, seq: i64) {
        self.hub.dispatch(
            self.chat_id,
            RoomEvent::Message {
                seq,
                frames: MessageFrames::from_parts(
                    self.sender_id,
                    format!("live {seq}").into(),
                    format!("live {seq}").into(),
                    None,
                ),
            },
        );
    }

    /// The messages `socket` is sent before the room handles a barrier sent now: what the room
    /// made of every event before it.
    async fn until_barrier(&mut self, socket: &mut Socket) -> Vec<(i64, Source)> {
        self.barriers += 1;
        let barrier = format!("barrier {}", self.barriers);
        self.hub.dispatch(
            self.chat_id,
            RoomEvent::Typing {
                from: 0,
                frame: barrier.clone().into(),
            },
        );
        let mut messages = Vec::new();
        loop {
            match socket.next().await {
                Outbound::Frame(frame) if frame.as_str() == barrier => return messages,
                Outbound::Frame(_) => {}
                Outbound::Message { frame, .. } if is_other_event(&frame) => {}
                Outbound::Message { seq, frame, .. } => messages.push((seq, source(seq, &frame))),
            }
        }
    }
}

impl Socket {
    async fn next(&mut self) -> Outbound {
        timeout(STUCK, self.outbound.recv())
            .await
            .expect("the room sends something")
            .expect("the socket is still subscribed")
    }

    /// The next presence frame, skipping others.
    async fn presence(&mut self) -> serde_json::Value {
        loop {
            if let Outbound::Frame(frame) = self.next().await {
                let Ok(value) = serde_json::from_str::<serde_json::Value>(frame.as_str()) else {
                    continue;
                };
                if value["type"] == "presence" {
                    return value;
                }
            }
        }
    }

    /// The next `count` chat messages, skipping presence and other frames, and log events
    /// other than messages.
    async fn messages(&mut self, count: usize) -> Vec<(i64, Source)> {
        let mut messages = Vec::new();
        while messages.len() < count {
            if let Outbound::Message { seq, frame, .. } = self.next().await {
                if !is_other_event(&frame) {
                    messages.push((seq, source(seq, &frame)));
                }
            }
        }
        messages
    }
}

/// Whether a logged frame is an event other than a message (an edit, a departure, …).
fn is_other_event(frame: &Utf8Bytes) -> bool {
    serde_json::from_str::<serde_json::Value>(frame.as_str())
        .is_ok_and(|f| f["type"].is_string() && f["type"] != "message")
}

fn source(seq: i64, frame: &Utf8Bytes) -> Source {
    if frame.as_str() == format!("live {seq}") {
        return Live;
    }
    let frame: serde_json::Value = serde_json::from_str(frame.as_str()).unwrap();
    assert_eq!(frame["message"]["seq"], seq, "{frame}");
    assert_eq!(
        frame["message"]["content"],
        format!("stored {seq}"),
        "{frame}"
    );
    Stored
}

fn live(seqs: impl IntoIterator<Item = i64>) -> Vec<(i64, Source)> {
    seqs.into_iter().map(|seq| (seq, Live)).collect()
}

#[tokio::test(start_paused = true)]
async fn messages_are_delivered_in_seq_order_whatever_order_their_events_come_in() {
    let f = fixture().await;
    let mut socket = f.join(1, 64).await;
    f.commit(6).await;
    for seq in [2, 1, 5, 3, 6, 4] {
        f.publish(seq);
    }
    assert_eq!(socket.messages(6).await, live(1..=6));
}

#[tokio::test(start_paused = true)]
async fn a_message_ahead_of_its_turn_waits_for_the_earlier_ones() {
    let mut f = fixture().await;
    let mut socket = f.join(1, 64).await;
    f.commit(3).await;
    f.publish(3);
    assert_eq!(
        f.until_barrier(&mut socket).await,
        [],
        "3 waits for 1 and 2"
    );
    advance(GAP_GRACE - Duration::from_millis(1)).await;
    assert_eq!(
        f.until_barrier(&mut socket).await,
        [],
        "still within the grace"
    );
    f.publish(1);
    f.publish(2);
    assert_eq!(
        socket.messages(3).await,
        live(1..=3),
        "the earlier ones came in time: nothing read from the database"
    );
}

#[tokio::test(start_paused = true)]
async fn messages_that_do_not_come_are_read_from_the_database() {
    let mut f = fixture().await;
    let mut socket = f.join(1, 64).await;
    f.commit(3).await;
    f.publish(3);
    assert_eq!(f.until_barrier(&mut socket).await, []);
    advance(GAP_GRACE).await;
    assert_eq!(
        socket.messages(3).await,
        [(1, Stored), (2, Stored), (3, Live)]
    );
    // Their events, arriving late, are not delivered again.
    f.publish(1);
    f.publish(2);
    f.publish(3);
    assert_eq!(f.until_barrier(&mut socket).await, []);
}

#[tokio::test(start_paused = true)]
async fn messages_never_announced_are_caught_up_from_the_database() {
    let mut f = fixture().await;
    let mut socket = f.join(1, 64).await;
    f.commit(2).await;
    assert_eq!(f.until_barrier(&mut socket).await, []);
    advance(CATCH_UP_PERIOD).await;
    assert_eq!(socket.messages(2).await, [(1, Stored), (2, Stored)]);
}

#[tokio::test(start_paused = true)]
async fn messages_gone_from_the_database_are_skipped_not_waited_for() {
    let mut f = fixture().await;
    let mut socket = f.join(1, 64).await;
    let saved = f.commit(4).await;
    // As when their sender's account is deleted: the rows go with it.
    for message in &saved[1..3] {
        let sql = "DELETE FROM messages WHERE id = $1";
        match &f.db {
            Db::Sqlite(sqlite) => {
                let mut conn = sqlite.acquire().await.unwrap();
                sqlx::query(sql)
                    .bind(message.id)
                    .execute(&mut *conn)
                    .await
                    .map(|_| ())
            }
            Db::Postgres(pool) => sqlx::query(sql)
                .bind(message.id)
                .execute(pool)
                .await
                .map(|_| ()),
        }
        .unwrap();
    }
    f.publish(4);
    assert_eq!(f.until_barrier(&mut socket).await, []);
    advance(GAP_GRACE).await;
    assert_eq!(socket.messages(2).await, [(1, Stored), (4, Live)]);
    // The room goes on from 5 at once: no gap is left open for 2 and 3.
    f.commit(1).await;
    f.publish(5);
    assert_eq!(f.until_barrier(&mut socket).await, live([5]));
}

#[tokio::test(start_paused = true)]
async fn a_message_is_delivered_once_however_often_its_event_comes() {
    let mut f = fixture().await;
    let mut socket = f.join(1, 64).await;
    f.commit(4).await;
    for seq in [1, 1, 3, 3, 2, 2, 1, 3, 4, 4] {
        f.publish(seq);
    }
    assert_eq!(f.until_barrier(&mut socket).await, live(1..=4));
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_marks_that_socket_lagging_and_the_room_goes_on() {
    let mut f = fixture().await;
    let mut fast = f.join(1, 64).await;
    let mut slow = f.join(2, 2).await;
    f.commit(5).await;
    for seq in 1..=5 {
        f.publish(seq);
    }
    // The slow socket's queue is never read, yet the fast one gets everything: the room did
    // not wait for the slow one, nor closed it: it is to read the rest from the database.
    assert_eq!(f.until_barrier(&mut fast).await, live(1..=5));
    assert!(slow.lagging.is_set());
    assert!(slow.close.try_recv().is_err(), "not closed");
    // It has what fitted in its queue, in order, and nothing was queued once it lagged.
    let mut got = Vec::new();
    while let Ok(frame) = slow.outbound.try_recv() {
        if let Outbound::Message { seq, .. } = frame {
            got.push(seq);
        }
    }
    assert_eq!(got, [1, 2]);
    // Its queue has room again, but while it lags nothing is queued for it.
    f.commit(1).await;
    f.publish(6);
    assert_eq!(f.until_barrier(&mut fast).await, live(6..=6));
    while let Ok(frame) = slow.outbound.try_recv() {
        // Typing and presence still come; the log does not.
        assert!(
            !matches!(frame, Outbound::Message { .. }),
            "nothing of the log queued while lagging"
        );
    }
    // Caught up (its writer clears the mark): it is queued again.
    slow.lagging.clear();
    f.commit(1).await;
    f.publish(7);
    assert_eq!(f.until_barrier(&mut fast).await, live(7..=7));
    let next = tokio::time::timeout(Duration::from_secs(5), slow.outbound.recv()).await;
    assert!(
        matches!(next, Ok(Some(Outbound::Message { seq: 7, .. }))),
        "{next:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_socket_that_lags_again_and_again_is_closed_with_4008() {
    let mut f = fixture().await;
    let mut fast = f.join(1, 256).await;
    let mut slow = f.join(2, 1).await;
    let mut seq = 0;
    for round in 1..=super::MAX_LAGS {
        // Two entries overflow a queue of one; the writer drains and catches up in between.
        f.commit(2).await;
        for _ in 0..2 {
            seq += 1;
            f.publish(seq);
        }
        assert_eq!(f.until_barrier(&mut fast).await, live(seq - 1..=seq));
        if round < super::MAX_LAGS {
            assert!(slow.lagging.is_set(), "round {round}");
            while slow.outbound.try_recv().is_ok() {}
            slow.lagging.clear();
        }
    }
    assert_eq!(
        slow.close.try_recv(),
        Ok(Close {
            code: close::TOO_SLOW,
            reason: "too slow, resume",
        })
    );
}

/// The ids a presence frame lists under `key` (`online`, `joined` or `left`), or `None` when it
/// has no such list.
fn listed(frame: &serde_json::Value, key: &str) -> Option<Vec<u64>> {
    let list = frame.get(key)?.as_array()?;
    let conn = |m: &serde_json::Value| m["username"].as_str()?.strip_prefix("conn")?.parse().ok();
    let mut conns: Vec<u64> = list.iter().map(|m| conn(m).unwrap()).collect();
    conns.sort_unstable();
    Some(conns)
}

#[tokio::test(start_paused = true)]
async fn newcomers_get_the_whole_list_and_the_others_one_coalesced_delta() {
    let mut f = fixture().await;
    let mut first = f.join(1, 64).await;
    let mut second = f.join(2, 64).await;
    let mut original = f.join_speaking(3, 64, Protocol::Original).await;
    f.until_barrier(&mut first).await;
    advance(PRESENCE_COALESCE).await;
    for socket in [&mut first, &mut second] {
        let frame = socket.presence().await;
        assert_eq!(listed(&frame, "online"), Some(vec![1, 2, 3]), "{frame}");
        assert_eq!(listed(&frame, "joined"), None, "{frame}");
    }

    let mut fourth = f.join(4, 64).await;
    f.until_barrier(&mut first).await;
    advance(PRESENCE_COALESCE).await;
    let frame = fourth.presence().await;
    assert_eq!(listed(&frame, "online"), Some(vec![1, 2, 3, 4]), "{frame}");
    for socket in [&mut first, &mut second] {
        let frame = socket.presence().await;
        assert_eq!(listed(&frame, "joined"), Some(vec![4]), "{frame}");
        assert_eq!(listed(&frame, "left"), Some(vec![]), "{frame}");
        assert_eq!(listed(&frame, "online"), None, "{frame}");
    }

    // A departure and an arrival within one interval reach each socket as one frame.
    f.hub.leave(f.chat_id, 4);
    let _fifth = f.join(5, 64).await;
    f.until_barrier(&mut first).await;
    advance(PRESENCE_COALESCE).await;
    let frame = first.presence().await;
    assert_eq!(listed(&frame, "joined"), Some(vec![5]), "{frame}");
    assert_eq!(listed(&frame, "left"), Some(vec![4]), "{frame}");
    // Nothing more came: the next frame is a barrier sent now.
    f.hub.dispatch(
        f.chat_id,
        RoomEvent::Typing {
            from: 0,
            frame: "after the delta".into(),
        },
    );
    match first.next().await {
        Outbound::Frame(frame) => assert_eq!(frame.as_str(), "after the delta"),
        other => panic!("{other:?}"),
    }
    let frame = second.presence().await;
    assert_eq!(listed(&frame, "joined"), Some(vec![5]), "{frame}");

    // The socket speaking the original protocol counted, but was sent nothing.
    assert!(
        matches!(
            original.outbound.try_recv(),
            Err(mpsc::error::TryRecvError::Empty)
        ),
        "the original protocol gets no presence or typing frames"
    );
}

#[tokio::test(start_paused = true)]
async fn a_socket_that_misses_a_presence_change_gets_the_whole_list_next() {
    let mut f = fixture().await;
    let mut watcher = f.join(10, 64).await;
    let mut cramped = f.join(1, 1).await;
    f.until_barrier(&mut watcher).await;
    // The barrier took the one slot of `cramped`'s queue: free it.
    assert!(matches!(cramped.next().await, Outbound::Frame(_)));
    advance(PRESENCE_COALESCE).await;
    assert_eq!(
        listed(&watcher.presence().await, "online"),
        Some(vec![1, 10])
    );
    // `cramped` now has a full queue: the next delta cannot reach it.
    let _newcomer = f.join(2, 64).await;
    f.until_barrier(&mut watcher).await;
    advance(PRESENCE_COALESCE).await;
    assert_eq!(listed(&watcher.presence().await, "joined"), Some(vec![2]));
    let frame = cramped.presence().await;
    assert_eq!(listed(&frame, "online"), Some(vec![1, 10]), "{frame}");
    advance(PRESENCE_COALESCE).await;
    let frame = cramped.presence().await;
    assert_eq!(listed(&frame, "online"), Some(vec![1, 2, 10]), "{frame}");
}

#[tokio::test(start_paused = true)]
async fn a_departure_whose_event_was_lost_closes_the_socket_before_later_messages() {
    let mut f = fixture().await;
    let mut staying = f.join(1, 64).await;
    let leaver = f.participant("leaver").await;
    let mut leaving = f.join_as(2, 64, leaver, Protocol::V2).await;
    // The departure and a later message are committed, and neither event comes (a bus that
    // dropped them); the bus reconnecting makes the room catch up.
    store::chats::remove_participant(&f.db, f.chat_id, leaver, None)
        .await
        .unwrap();
    f.commit(1).await;
    f.hub.dispatch(f.chat_id, RoomEvent::Resync);
    // The removal took position 1; the message, 2.
    assert_eq!(f.until_barrier(&mut staying).await, [(2, Stored)]);
    assert_eq!(
        leaving.close.try_recv(),
        Ok(Close {
            code: close::REMOVED,
            reason: "removed from the chat",
        })
    );
    while let Some(frame) = leaving.outbound.recv().await {
        assert!(
            !matches!(frame, Outbound::Message { .. }),
            "a message reached a user who had left"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_removal_closes_the_users_sockets_at_its_position_before_later_messages() {
    let mut f = fixture().await;
    let mut staying = f.join(1, 64).await;
    let leaver = f.participant("leaver").await;
    let mut leaving = f.join_as(2, 64, leaver, Protocol::V2).await;
    // The removal takes position 1 and a message 2; the message's event comes first, and the
    // removal's close (a separate event) never comes.
    store::chats::remove_participant(&f.db, f.chat_id, leaver, None)
        .await
        .unwrap();
    f.commit(1).await;
    f.publish(2);
    f.hub.dispatch(
        f.chat_id,
        RoomEvent::Logged {
            seq: 1,
            frame: r#"{"type":"member_removed","seq":1}"#.into(),
            departed: Some(leaver),
        },
    );
    assert_eq!(f.until_barrier(&mut staying).await, live([2]));
    assert_eq!(
        leaving.close.try_recv(),
        Ok(Close {
            code: close::REMOVED,
            reason: "removed from the chat",
        })
    );
    while let Some(frame) = leaving.outbound.recv().await {
        if let Outbound::Message { seq, .. } = frame {
            assert_eq!(seq, 1, "only the removal itself reaches the removed user");
        }
    }
}
