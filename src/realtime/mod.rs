//! Real-time delivery over WebSockets.
//!
//! - `hub`: this node's sockets, one room per chat, ordered and bounded delivery;
//! - `broker`: how events reach every node's hub (in process for a single node);
//! - `redis`: the broker and shared presence of several nodes, over Redis;
//! - `presence`: who is online in a chat;
//! - `socket`: one `/ws/chat/{id}/` connection's life after its handshake;
//! - `close`: the close codes both kinds of socket can be sent.
//!
//! The frames themselves are wire types (`crate::wire::frames`).
//!
//! Handlers never talk to sockets: they commit to the database, then `publish` an event.

pub mod broker;
pub mod close;
pub mod hub;
pub mod presence;
pub mod redis;
pub mod socket;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use self::{
    broker::{Broker, LocalBroker},
    hub::{ConnId, Hub, RoomEvent},
    redis::{BusHealth, RedisBroker},
};
use crate::store::Db;

/// Live delivery for this process: the hub of its sockets, the broker that carries events to
/// every node, and the sockets' settings and shutdown signal. Cheap to clone (handles only).
#[derive(Clone)]
pub struct Realtime {
    /// This node's rooms.
    pub hub: Arc<Hub>,
    broker: Arc<dyn Broker>,
    /// Cancelled when the server shuts down: every socket closes with 1001.
    pub shutdown: CancellationToken,
    /// Every open connection, so shutdown can wait for their close frames to go out.
    pub connections: TaskTracker,
    next_conn: Arc<AtomicU64>,
    /// Queue size, ping interval and socket limit.
    pub settings: SocketSettings,
    /// Set when events travel between nodes through Redis.
    pub bus: Option<Arc<BusHealth>>,
}

/// Where to find the other nodes.
#[derive(Debug, Clone)]
pub struct BusSettings {
    /// `REDIS_URL`.
    pub redis_url: String,
    /// `MRM_REDIS_PREFIX`: the start of every key and channel name.
    pub prefix: String,
    /// `MRM_PRESENCE_TTL_SECONDS`: how long a node's presence entries outlive its last heartbeat.
    pub presence_ttl: Duration,
}

/// Per-connection limits and timers.
#[derive(Debug, Clone, Copy)]
pub struct SocketSettings {
    /// Frames a socket may have queued before it counts as too slow.
    pub queue_capacity: usize,
    /// How often sockets are pinged (`MRM_WS_PING_SECONDS`); a peer that stays silent is dropped.
    pub ping_interval: Duration,
    /// Most sockets at once, chat and AI together.
    pub max_sockets: usize,
}

impl Realtime {
    /// A single node: events go straight to this process's sockets.
    pub fn new(db: Db, settings: SocketSettings) -> Realtime {
        let hub = Hub::new(db);
        let broker = Arc::new(LocalBroker::new(hub.clone()));
        Self::assemble(hub, broker, settings, None)
    }

    /// One node of many: events also travel through Redis, and presence is shared.
    pub async fn clustered(
        db: Db,
        settings: SocketSettings,
        bus: &BusSettings,
    ) -> anyhow::Result<Realtime> {
        let hub = Hub::new(db);
        let broker =
            RedisBroker::start(&bus.redis_url, &bus.prefix, bus.presence_ttl, hub.clone()).await?;
        hub.share_presence(broker.clone());
        let health = broker.health.clone();
        Ok(Self::assemble(hub, broker, settings, Some(health)))
    }

    fn assemble(
        hub: Arc<Hub>,
        broker: Arc<dyn Broker>,
        settings: SocketSettings,
        bus: Option<Arc<BusHealth>>,
    ) -> Realtime {
        Realtime {
            broker,
            hub,
            shutdown: CancellationToken::new(),
            connections: TaskTracker::new(),
            next_conn: Arc::new(AtomicU64::new(1)),
            settings,
            bus,
        }
    }

    /// Announces something that happened in a chat to every node's sockets. Call it after the
    /// change is committed.
    pub fn publish(&self, chat_id: i64, event: RoomEvent) {
        self.broker.publish(chat_id, event);
    }

    /// True when another socket would exceed the limit: better a clean 503 at the handshake
    /// than running out of file descriptors for everything else.
    pub fn at_capacity(&self) -> bool {
        self.connections.len() >= self.settings.max_sockets
    }

    /// A connection id unique within this process (never reused while it runs).
    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Closes every socket with 1001 and waits (at most `grace`) for them to finish.
    pub async fn close_all(&self, grace: Duration) {
        self.shutdown.cancel();
        self.connections.close();
        if tokio::time::timeout(grace, self.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.connections.len(),
                "some sockets did not close in time"
            );
        }
    }
}
