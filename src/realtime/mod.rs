//! Real-time delivery over WebSockets.
//!
//! - `hub`: this node's sockets, one room per chat, ordered and bounded delivery;
//! - `broker`: how events reach every node's hub (in process for a single node);
//! - `redis`: the broker and shared presence of several nodes, over Redis;
//! - `presence`: who is online in a chat;
//! - `registry`: this node's sockets by user and credential: admission and ended credentials;
//! - `socket`: one `/ws/chat/{id}/` connection's life after its handshake;
//! - `close`: the close codes both kinds of socket can be sent;
//! - `deadline`: socket writes with a deadline, so a client that stops reading is let go.
//!
//! The frames themselves are wire types (`crate::wire::frames`).
//!
//! Handlers never talk to sockets: they commit to the database, then `publish` an event.

pub mod broker;
pub mod close;
pub mod deadline;
pub mod hub;
pub mod presence;
pub mod redis;
pub mod registry;
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
    registry::{Ended, SocketRegistry},
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
    /// Every socket of this node from its handshake on, by user and credential.
    pub sockets: Arc<SocketRegistry>,
    next_conn: Arc<AtomicU64>,
    /// Queue size, ping interval and socket limit.
    pub settings: SocketSettings,
    /// Set when events travel between nodes through Redis.
    pub bus: Option<Arc<BusHealth>>,
    /// How AI replies reach other nodes (nowhere, for a single node).
    pub replies: Arc<dyn crate::ai::bus::ReplyBus>,
    /// This server's metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Rate-limit budgets shared by the nodes (none for a single node).
    pub budgets: Option<Arc<dyn crate::limits::SharedBudgets>>,
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
    /// Most sockets one user may hold at once (`MRM_MAX_SOCKETS_PER_USER`).
    pub max_sockets_per_user: usize,
    /// Longest a write or flush may wait for the client (`MRM_WS_WRITE_TIMEOUT_SECONDS`).
    pub write_timeout: Duration,
}

impl Realtime {
    /// A single node: events go straight to this process's sockets.
    pub fn new(
        db: Db,
        settings: SocketSettings,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Realtime {
        let hub = Hub::new(db);
        let broker = Arc::new(LocalBroker::new(hub.clone()));
        let replies = Arc::new(crate::ai::bus::NoBus);
        Self::assemble(
            hub,
            broker,
            settings,
            Self::registry(&settings),
            None,
            (replies, None),
            metrics,
        )
    }

    /// One node of many: events also travel through Redis, and presence is shared.
    pub async fn clustered(
        db: Db,
        settings: SocketSettings,
        bus: &BusSettings,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> anyhow::Result<Realtime> {
        let hub = Hub::new(db);
        let sockets = Self::registry(&settings);
        let broker = RedisBroker::start(
            &bus.redis_url,
            &bus.prefix,
            bus.presence_ttl,
            hub.clone(),
            sockets.clone(),
            metrics.clone(),
        )
        .await?;
        hub.share_presence(broker.clone());
        let health = broker.health.clone();
        let replies = broker.clone();
        let budgets: Arc<dyn crate::limits::SharedBudgets> = broker.clone();
        Ok(Self::assemble(
            hub,
            broker,
            settings,
            sockets,
            Some(health),
            (replies, Some(budgets)),
            metrics,
        ))
    }

    fn registry(settings: &SocketSettings) -> Arc<SocketRegistry> {
        SocketRegistry::new(settings.max_sockets, settings.max_sockets_per_user)
    }

    fn assemble(
        hub: Arc<Hub>,
        broker: Arc<dyn Broker>,
        settings: SocketSettings,
        sockets: Arc<SocketRegistry>,
        bus: Option<Arc<BusHealth>>,
        (replies, budgets): (
            Arc<dyn crate::ai::bus::ReplyBus>,
            Option<Arc<dyn crate::limits::SharedBudgets>>,
        ),
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Realtime {
        Realtime {
            replies,
            budgets,
            metrics,
            broker,
            hub,
            sockets,
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

    /// Closes, on every node, the sockets opened with credentials that have ended (close code
    /// 4001: authenticate again). This node's close at once; other nodes are told through the
    /// bus, which this waits for (about one round trip, at most a second). Call it after the
    /// change is committed.
    pub async fn end_credentials(&self, ended: Ended) {
        let local = self.sockets.end(&ended);
        tracing::debug!(sockets = local, "credentials ended");
        if tokio::time::timeout(
            Duration::from_secs(1),
            self.broker.credentials_ended(&ended),
        )
        .await
        .is_err()
        {
            tracing::warn!("other nodes were not told in time that credentials ended");
        }
    }

    /// True when another socket would exceed the limit: better a clean 503 at the handshake
    /// than running out of file descriptors for everything else.
    pub fn at_capacity(&self) -> bool {
        self.sockets.at_capacity()
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
