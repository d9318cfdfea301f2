//! Fan-out between nodes through Redis. Each chat has a channel of its own: a node publishes a
//! chat's events there and listens only to the channels of chats it has sockets in, so a node
//! hears none of the traffic of chats it does not serve, and adding nodes does not multiply what
//! each one handles. What concerns every node (ended credentials, AI replies and their cancels)
//! travels on one control channel. Presence lives in Redis sorted sets whose entries expire
//! unless their node keeps refreshing them.
//!
//! One Redis or a Redis Cluster: the mode is read from `INFO cluster` at start. On a cluster,
//! chat channels are sharded channels (`SPUBLISH`/`SSUBSCRIBE`, Redis 7), each served by the
//! shard that owns its slot, so a chat's traffic stays on one shard instead of being broadcast
//! over the cluster bus. When a shard's connection drops, or a shard ends its subscriptions
//! (its slots moved: a failover, resharding), the node subscribes to every channel again, which
//! also makes the client library learn the cluster's new shape, and its rooms read what was
//! missed meanwhile from the database. Redis delivers at least once here (a subscription can
//! briefly exist twice), so envelopes carry their sender's number and each is handled once.
//! On one server, sharded and classic pub/sub deliver alike (there is one shard); chat
//! channels use classic `PUBLISH`/`SUBSCRIBE` there, which this client library offers on a
//! single connection, with the same per-chat routing. Keys two commands touch together share a
//! hash tag (`{…}`), so they live in one slot.
//!
//! Redis is a transport, never the source of truth: events are delivered locally first (so a
//! node keeps serving its own sockets through an outage), and rooms fill any gap in `seq` from
//! the database — after a reconnect, on a gap, and periodically — so a dropped publish is late,
//! never lost.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::extract::ws::Utf8Bytes;
use futures_util::future::BoxFuture;
use redis::{
    aio::{ConnectionManager, MultiplexedConnection},
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
    cluster_routing::Slot,
    AsyncCommands, PushKind,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::{
    ai::{
        bus::{AiWire, Remote, ReplyBus},
        generation::AiEvent,
    },
    wire::frames::{Member, MessageFrames},
};

use super::{
    broker::Broker,
    hub::{Hub, RoomEvent},
    presence::SharedPresence,
    registry::{Ended, SocketRegistry},
};

/// Longest wait for a presence read or write before the room carries on without it.
const PRESENCE_TIMEOUT: Duration = Duration::from_millis(500);
/// Events waiting to be published; beyond this they are dropped (and recovered from the database).
const OUTBOX: usize = 65_536;
/// Most events sent to Redis in one pipelined round trip.
const PUBLISH_BATCH: usize = 256;
/// Most chat channels subscribed to, or left, in one go.
const SUBSCRIBE_BATCH: usize = 256;
/// AI events from other nodes waiting for this node's replies to relay them; beyond this they
/// are dropped (the saved reply is in the database).
const AI_INBOX: usize = 4096;
/// Gives up a claim (`KEYS[1]`) and its reply's text (`KEYS[2]`) only if the claim is still the
/// given run's (`ARGV[1]`): after a lapse, another node's newer claim and text stay.
const RELEASE_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     return redis.call('DEL', KEYS[1], KEYS[2]) else return 0 end";
/// Renews a claim (`KEYS[1]`) for `ARGV[2]` ms if it is still the run's (`ARGV[1]`) or has
/// vanished, and keeps its reply's text (`KEYS[2]`) for `ARGV[3]` ms more.
const RENEW_SCRIPT: &str = "local held = redis.call('GET', KEYS[1]) \
     if held == false or held == ARGV[1] then \
       redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) \
       redis.call('PEXPIRE', KEYS[2], ARGV[3]) return 1 end return 0";
/// Takes a place among a user's running replies (`KEYS[1]`, a sorted set of run tokens scored by
/// their expiry in ms): expired places are dropped first, and so are `ARGV[4…]`, places this node
/// gave back whose removal may still be on its way; `ARGV[1]` the run, `ARGV[2]` the most
/// places, `ARGV[3]` the lease. Answers 1 when taken, 0 when all are taken.
const OCCUPY_SCRIPT: &str = "local t = redis.call('TIME') \
     local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) \
     redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) \
     for i = 4, #ARGV do redis.call('ZREM', KEYS[1], ARGV[i]) end \
     if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end \
     redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1]) \
     redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3])) return 1";
/// Renews a run's place (`ARGV[1]`) among a user's replies (`KEYS[1]`) for `ARGV[2]` ms, if it
/// still has one (`XX`: a place given back is never taken again by a late renewal).
const RENEW_PLACE_SCRIPT: &str = "local t = redis.call('TIME') \
     local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) \
     redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1]) \
     redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2])) return 1";
/// Appends `ARGV[1]` to a reply's text (`KEYS[1]`) only while it holds that reply (its header
/// is `ARGV[3]`: never another reply's text, never one recreated without its header) and is
/// exactly `ARGV[2]` bytes long, where the piece belongs: after a piece was lost (its shard was
/// down), the text stays a true beginning of the reply instead of one with a hole.
const APPEND_SCRIPT: &str = "if redis.call('STRLEN', KEYS[1]) == tonumber(ARGV[2]) and \
     redis.call('GETRANGE', KEYS[1], 0, string.len(ARGV[3]) - 1) == ARGV[3] then \
     return redis.call('APPEND', KEYS[1], ARGV[1]) end return 0";

/// How long a reply's text is kept past its claim's renewal: three claims and a minute, time
/// for a node to settle a reply whose node stopped.
fn text_ttl(lease: Duration) -> u64 {
    (lease * 3 + Duration::from_secs(60)).as_millis() as u64
}

/// One event on the bus. Frames travel as the text sockets will receive.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    /// The node that published it (which has already delivered it locally).
    node: String,
    /// Its number among the node's envelopes, from 1 (0: a node that does not number them).
    #[serde(default)]
    n: u64,
    chat: i64,
    #[serde(flatten)]
    event: WireEvent,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum WireEvent {
    /// `frame` is what everyone may see (no sender email); `with_email` shows the sender's
    /// email, for the sender and staff, and is left out when the two are the same. The frame
    /// everyone may see keeps the field older nodes read, so a node that does not know
    /// `with_email` (during a rolling upgrade) shows no email to anyone rather than to everyone.
    Message {
        seq: i64,
        #[serde(default)]
        sender: i64,
        frame: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        with_email: Option<String>,
        /// For the original protocol, when its frames differ (a reply): without the sender's
        /// email, then with it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        original: Option<(String, String)>,
    },
    Typing {
        frame: String,
    },
    MemberRemoved {
        user_id: i64,
    },
    ChatDeleted,
    /// A logged event other than a message, as its `mrm.v2` frame.
    Logged {
        seq: i64,
        frame: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        departed: Option<i64>,
    },
    PresenceChanged,
    /// Credentials ended: every node closes the sockets opened with them (`chat` is 0).
    CredentialsEnded {
        ended: Ended,
    },
    /// An AI chat's event (`chat` is the AI chat's id), or a cancel for the node running its
    /// reply.
    Ai {
        event: AiWire,
    },
}

impl WireEvent {
    fn from_room(event: &RoomEvent) -> Option<WireEvent> {
        Some(match event {
            RoomEvent::Message { seq, frames } => {
                let (sender, with_email, without_email, original) = frames.parts();
                WireEvent::Message {
                    seq: *seq,
                    sender,
                    frame: without_email.as_str().to_owned(),
                    with_email: (with_email != without_email)
                        .then(|| with_email.as_str().to_owned()),
                    original: original.map(|(with_email, without_email)| {
                        (
                            without_email.as_str().to_owned(),
                            with_email.as_str().to_owned(),
                        )
                    }),
                }
            }
            RoomEvent::Typing { frame, .. } => WireEvent::Typing {
                frame: frame.as_str().to_owned(),
            },
            RoomEvent::MemberRemoved { user_id } => WireEvent::MemberRemoved { user_id: *user_id },
            RoomEvent::ChatDeleted => WireEvent::ChatDeleted,
            RoomEvent::Logged {
                seq,
                frame,
                departed,
            } => WireEvent::Logged {
                seq: *seq,
                frame: frame.as_str().to_owned(),
                departed: *departed,
            },
            RoomEvent::PresenceChanged => WireEvent::PresenceChanged,
            RoomEvent::Resync => return None,
        })
    }

    fn into_room(self) -> Option<RoomEvent> {
        Some(match self {
            WireEvent::Message {
                seq,
                sender,
                frame,
                with_email,
                original,
            } => {
                let without_email = Utf8Bytes::from(frame);
                let with_email = with_email.map_or_else(|| without_email.clone(), Utf8Bytes::from);
                let original = original.map(|(without_email, with_email)| {
                    (Utf8Bytes::from(with_email), Utf8Bytes::from(without_email))
                });
                RoomEvent::Message {
                    seq,
                    frames: MessageFrames::from_parts(sender, with_email, without_email, original),
                }
            }
            // No local socket sent it, so none is left out (connection ids start at 1).
            WireEvent::Typing { frame } => RoomEvent::Typing {
                from: 0,
                frame: Utf8Bytes::from(frame),
            },
            WireEvent::MemberRemoved { user_id } => RoomEvent::MemberRemoved { user_id },
            WireEvent::ChatDeleted => RoomEvent::ChatDeleted,
            WireEvent::Logged {
                seq,
                frame,
                departed,
            } => RoomEvent::Logged {
                seq,
                frame: Utf8Bytes::from(frame),
                departed,
            },
            WireEvent::PresenceChanged => RoomEvent::PresenceChanged,
            WireEvent::CredentialsEnded { .. } | WireEvent::Ai { .. } => return None,
        })
    }
}

/// Envelopes heard lately, by sender and number, so each is handled once: Redis delivers at
/// least once here (during a cluster failover a subscription can be made on a replica and again
/// on its master, and both deliver). Bounded: the oldest are forgotten first.
#[derive(Default)]
struct Recent {
    seen: std::collections::HashSet<(u64, u64)>,
    order: std::collections::VecDeque<(u64, u64)>,
}

/// How many envelopes [`Recent`] remembers: far more than can be in flight twice.
const RECENT: usize = 16_384;

impl Recent {
    /// True the first time an envelope is seen.
    fn first(&mut self, node: &str, n: u64) -> bool {
        if n == 0 {
            return true;
        }
        let key = (node_tag(node), n);
        if !self.seen.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > RECENT {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

fn node_tag(node: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    node.hash(&mut hasher);
    hasher.finish()
}

/// Whether this node currently hears the bus, for `/readyz`.
#[derive(Debug, Default)]
pub struct BusHealth {
    connected: AtomicBool,
}

impl BusHealth {
    /// True while the subscription to the bus channel is up.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// Commands to Redis, on one server or routed by slot over a Redis Cluster.
#[derive(Clone)]
enum Commands {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Commands {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Commands::Single(c) => c.req_packed_command(cmd),
            Commands::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Commands::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Commands::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Commands::Single(c) => c.get_db(),
            Commands::Cluster(c) => c.get_db(),
        }
    }
}

/// A command waiting in the outbox, with the slot of the key or channel it names (a cluster
/// pipelines only commands of one slot together).
struct Outgoing {
    slot: Slot,
    command: redis::Cmd,
}

/// This node's link to the Redis bus: publishes each chat's events on the chat's channel, listens
/// to the channels of the chats it has rooms for, hands what it hears to the local [`Hub`], and
/// keeps presence keys that expire after `presence_ttl`.
pub struct RedisBroker {
    node: String,
    /// Ended credentials, AI events and cancels: every node listens.
    control: String,
    prefix: String,
    /// Whether Redis is a cluster (sharded chat channels) or one server.
    cluster: bool,
    hub: Arc<Hub>,
    sockets: Arc<SocketRegistry>,
    outbox: mpsc::Sender<Outgoing>,
    commands: Commands,
    presence_ttl: Duration,
    pub health: Arc<BusHealth>,
    /// The number of the last envelope this node published.
    published: std::sync::atomic::AtomicU64,
    /// What the listener heard lately (see [`Recent`]).
    recent: std::sync::Mutex<Recent>,
    /// Told when a cluster shard's connection dropped: every channel is subscribed to again,
    /// which makes the client library read the cluster's new shape (after a failover, the
    /// replica that took over) and carries the subscriptions there.
    resubscribe: tokio::sync::Notify,
    ai_inbox: mpsc::Sender<Remote>,
    ai_incoming: std::sync::Mutex<Option<mpsc::Receiver<Remote>>>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl RedisBroker {
    /// Connects (retrying in the background if Redis is down) and starts listening: chat events
    /// go to `hub`, ended credentials to `sockets`. `url` is one Redis, or a comma-separated
    /// list of a Redis Cluster's nodes (any one of them will do; the others are tried when it
    /// does not answer). Errors: no answer within 5 s at start.
    pub async fn start(
        url: &str,
        prefix: &str,
        presence_ttl: Duration,
        hub: Arc<Hub>,
        sockets: Arc<SocketRegistry>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> anyhow::Result<Arc<RedisBroker>> {
        let urls: Vec<String> = url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(with_resp3)
            .collect();
        let (commands, link) = tokio::time::timeout(Duration::from_secs(5), connect(&urls))
            .await
            .map_err(|_| anyhow::anyhow!("REDIS_URL: Redis did not answer within 5 s"))??;
        let cluster = matches!(link, Link::Cluster(_));
        let node = crate::auth::secret::random_token(12);
        let (outbox, queue) = mpsc::channel(OUTBOX);
        let (ai_inbox, ai_incoming) = mpsc::channel(AI_INBOX);
        let broker = Arc::new(RedisBroker {
            metrics,
            ai_inbox,
            ai_incoming: std::sync::Mutex::new(Some(ai_incoming)),
            control: format!("{prefix}:events"),
            prefix: prefix.to_owned(),
            cluster,
            node: node.clone(),
            hub: hub.clone(),
            sockets,
            outbox,
            commands: commands.clone(),
            presence_ttl,
            health: Arc::new(BusHealth::default()),
            resubscribe: tokio::sync::Notify::new(),
            published: std::sync::atomic::AtomicU64::new(0),
            recent: std::sync::Mutex::new(Recent::default()),
        });
        tokio::spawn(publish_loop(
            commands,
            Slot::for_key(&broker.control),
            queue,
        ));
        tokio::spawn(listen_loop(link, broker.clone()));
        tracing::info!(node = %node, prefix, cluster, "fan-out through Redis");
        Ok(broker)
    }

    /// The channel of one chat's events.
    fn chat_channel(&self, chat_id: i64) -> String {
        format!("{}:chat:{chat_id}", self.prefix)
    }

    /// The chat a chat channel belongs to.
    fn chat_of(&self, channel: &[u8]) -> Option<i64> {
        let channel = std::str::from_utf8(channel).ok()?;
        channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":chat:")?
            .parse()
            .ok()
    }

    fn presence_key(&self, chat_id: i64) -> String {
        format!("{}:presence:{chat_id}", self.prefix)
    }

    fn envelope(&self, chat_id: i64, event: WireEvent) -> Option<String> {
        let envelope = Envelope {
            node: self.node.clone(),
            n: self.published.fetch_add(1, Ordering::Relaxed) + 1,
            chat: chat_id,
            event,
        };
        serde_json::to_string(&envelope).ok()
    }

    /// Publishes a chat's event on the chat's channel, heard by the nodes with sockets in it.
    fn send_chat(&self, chat_id: i64, event: WireEvent) {
        if let Some(text) = self.envelope(chat_id, event) {
            let channel = self.chat_channel(chat_id);
            let verb = if self.cluster { "SPUBLISH" } else { "PUBLISH" };
            let command = redis::cmd(verb).arg(&channel).arg(text).clone();
            self.queue(&channel, command);
        }
    }

    /// Publishes on the control channel, heard by every node.
    fn send_control(&self, chat_id: i64, event: WireEvent) {
        if let Some(text) = self.envelope(chat_id, event) {
            let command = redis::cmd("PUBLISH").arg(&self.control).arg(text).clone();
            self.queue(&self.control, command);
        }
    }

    /// Queues a command behind every one queued before it for the same slot (`key`: the key or
    /// channel it names). A full outbox means Redis is down or far behind: the command is
    /// dropped; other nodes catch up from the database.
    fn queue(&self, key: &str, command: redis::Cmd) {
        let _ = self.outbox.try_send(Outgoing {
            slot: Slot::for_key(key),
            command,
        });
    }

    // A reply's claim and text are changed together by one script: on a cluster they share a
    // hash tag, so one slot. (One server keeps the names older versions use.)
    fn lease_key(&self, ai_chat_id: i64) -> String {
        self.ai_key(ai_chat_id, "lease")
    }

    fn text_key(&self, ai_chat_id: i64) -> String {
        self.ai_key(ai_chat_id, "text")
    }

    fn ai_key(&self, ai_chat_id: i64, what: &str) -> String {
        if self.cluster {
            format!("{}:ai:{{{ai_chat_id}}}:{what}", self.prefix)
        } else {
            format!("{}:ai:{ai_chat_id}:{what}", self.prefix)
        }
    }

    fn user_key(&self, user_id: i64) -> String {
        format!("{}:ai:user:{user_id}", self.prefix)
    }

    fn lease_value(&self, token: &str) -> String {
        format!("{}:{token}", self.node)
    }

    fn receive(&self, payload: &[u8]) {
        let envelope = serde_json::from_slice::<Envelope>(payload);
        if let Ok(envelope) = &envelope {
            if envelope.node == self.node {
                // Its own, delivered locally already.
                return;
            }
            let first = self
                .recent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .first(&envelope.node, envelope.n);
            if !first {
                return;
            }
            let channel = match envelope.event {
                WireEvent::CredentialsEnded { .. } | WireEvent::Ai { .. } => "control",
                _ => "chat",
            };
            self.metrics
                .bus_events_received
                .with_label_values(&[channel])
                .inc();
        }
        match envelope {
            Ok(Envelope {
                event: WireEvent::CredentialsEnded { ended },
                ..
            }) => {
                self.sockets.end(&ended);
            }
            Ok(Envelope {
                chat,
                event: WireEvent::Ai { event },
                ..
            }) => {
                if self.ai_inbox.try_send((chat, event)).is_err() {
                    tracing::debug!("dropping an AI event: the relay is behind");
                }
            }
            Ok(envelope) => {
                if let Some(event) = envelope.event.into_room() {
                    self.hub.dispatch(envelope.chat, event);
                }
            }
            Err(err) => tracing::warn!(error = %err, "ignoring a malformed bus event"),
        }
    }
}

/// The listener needs RESP3 to take pushed messages on an ordinary connection.
fn with_resp3(url: &str) -> String {
    if url.contains("protocol=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&protocol=resp3")
    } else {
        format!("{url}?protocol=resp3")
    }
}

impl Broker for RedisBroker {
    fn publish(&self, chat_id: i64, event: RoomEvent) {
        if let Some(wire) = WireEvent::from_room(&event) {
            self.send_chat(chat_id, wire);
        }
        // Local sockets never wait for, or depend on, Redis.
        self.hub.dispatch(chat_id, event);
    }

    fn credentials_ended(&self, ended: &Ended) -> BoxFuture<'_, ()> {
        let text = self.envelope(
            0,
            WireEvent::CredentialsEnded {
                ended: ended.clone(),
            },
        );
        Box::pin(async move {
            let Some(text) = text else { return };
            // Not through the outbox: the caller waits until Redis has it (a command-line
            // password change exits right after), and nothing orders it with chat events.
            let mut commands = self.commands.clone();
            if let Err(err) = commands.publish::<_, _, ()>(&self.control, text).await {
                tracing::warn!(error = %err, "could not tell other nodes that credentials ended");
            }
        })
    }
}

/// Sends queued commands in pipelined batches: on one server, a batch in one round trip; on a
/// cluster, see [`send_by_slot`]. While Redis is down commands are dropped: other nodes catch up
/// from the database.
async fn publish_loop(commands: Commands, control: Slot, mut queue: mpsc::Receiver<Outgoing>) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    let mut rests = Rests::new();
    let mut failing = false;
    while queue.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
        let sent = match &commands {
            Commands::Single(_) => {
                let mut pipe = redis::pipe();
                for outgoing in batch.drain(..) {
                    pipe.add_command(outgoing.command).ignore();
                }
                pipe.query_async::<()>(&mut commands.clone()).await
            }
            Commands::Cluster(_) => send_by_slot(&commands, control, &mut batch, &mut rests).await,
        };
        match sent {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("publishing to Redis again");
            }
            Ok(()) => {}
            Err(err) if !failing => {
                failing = true;
                tracing::warn!(error = %err, "cannot publish to Redis; other nodes will catch up from the database");
            }
            Err(_) => {}
        }
    }
}

/// Longest wait for one slot's pipeline on a cluster before its shard is rested.
const SLOT_WAIT: Duration = Duration::from_millis(500);
/// How long a shard that did not answer has its commands dropped without a wait, so one shard's
/// failover does not hold up the others' traffic.
const SHARD_REST: Duration = Duration::from_secs(1);

/// Shards (as ranges of slot numbers) whose commands are dropped until a moment, and the number
/// of every slot (redis-rs gives a key's slot, not its number).
struct Rests {
    until: Vec<(std::ops::RangeInclusive<u16>, tokio::time::Instant)>,
    numbers: std::collections::HashMap<Slot, u16>,
}

impl Rests {
    fn new() -> Rests {
        Rests {
            until: Vec::new(),
            numbers: (0..16_384u16)
                .filter_map(|n| Some((Slot::new(n)?, n)))
                .collect(),
        }
    }

    fn resting(&self, slot: Slot) -> bool {
        let n = self.numbers.get(&slot).copied().unwrap_or(0);
        self.until.iter().any(|(range, _)| range.contains(&n))
    }

    /// Rests the shard that serves `slot`, as `CLUSTER SLOTS` says now (the slot alone when it
    /// cannot be asked).
    async fn rest(&mut self, commands: &Commands, slot: Slot) {
        let n = self.numbers.get(&slot).copied().unwrap_or(0);
        let mut commands = commands.clone();
        let mut ask = redis::cmd("CLUSTER");
        ask.arg("SLOTS");
        let asked = ask.query_async::<Vec<redis::Value>>(&mut commands);
        let shard = match tokio::time::timeout(Duration::from_millis(300), asked).await {
            Ok(Ok(ranges)) => ranges.iter().find_map(|range| {
                let redis::Value::Array(fields) = range else {
                    return None;
                };
                let number = |v: Option<&redis::Value>| match v {
                    Some(redis::Value::Int(i)) => u16::try_from(*i).ok(),
                    _ => None,
                };
                let (start, end) = (number(fields.first())?, number(fields.get(1))?);
                (start..=end).contains(&n).then_some(start..=end)
            }),
            _ => None,
        };
        let until = tokio::time::Instant::now() + SHARD_REST;
        self.until.push((shard.unwrap_or(n..=n), until));
    }
}

/// Sends a batch over a cluster: one pipeline per slot (order matters only within a key or
/// channel, and those share a slot), all at once, then the control channel's, so an AI reply's
/// text has grown before its delta is heard. Commands for a resting shard are dropped (their
/// chats catch up from the database); the control channel's never are, and wait as long as the
/// connection lets them: AI events have no other way to their sockets.
async fn send_by_slot(
    commands: &Commands,
    control: Slot,
    batch: &mut Vec<Outgoing>,
    rests: &mut Rests,
) -> redis::RedisResult<()> {
    let now = tokio::time::Instant::now();
    rests.until.retain(|(_, until)| *until > now);
    let mut by_slot: std::collections::HashMap<Slot, redis::Pipeline> =
        std::collections::HashMap::new();
    for outgoing in batch.drain(..) {
        if outgoing.slot == control || !rests.resting(outgoing.slot) {
            by_slot
                .entry(outgoing.slot)
                .or_insert_with(redis::pipe)
                .add_command(outgoing.command)
                .ignore();
        }
    }
    let last = by_slot.remove(&control);
    let mut failure = None;
    let sends = by_slot.into_iter().map(|(slot, pipe)| {
        let mut commands = commands.clone();
        async move {
            let sent = tokio::time::timeout(SLOT_WAIT, pipe.query_async::<()>(&mut commands));
            (slot, sent.await)
        }
    });
    for (slot, sent) in futures_util::future::join_all(sends).await {
        let err = match sent {
            Ok(Ok(())) => continue,
            Ok(Err(err)) => err,
            Err(_) => redis::RedisError::from((redis::ErrorKind::Io, "no answer in time")),
        };
        if !rests.resting(slot) {
            rests.rest(commands, slot).await;
        }
        failure = Some(err);
    }
    if let Some(pipe) = last {
        if let Err(err) = pipe.query_async::<()>(&mut commands.clone()).await {
            failure = Some(err);
        }
    }
    failure.map_or(Ok(()), Err)
}

/// Finds the first of `urls` that answers and whether it is one server or a cluster's node
/// (`INFO`'s `cluster_enabled`); a cluster is then reached through all of them.
async fn connect(urls: &[String]) -> anyhow::Result<(Commands, Link)> {
    let mut failure = anyhow::anyhow!("REDIS_URL: no address");
    for url in urls {
        match probe(url, urls).await {
            Ok(found) => return Ok(found),
            Err(err) => failure = err,
        }
    }
    Err(failure)
}

async fn probe(url: &str, urls: &[String]) -> anyhow::Result<(Commands, Link)> {
    let client = redis::Client::open(url)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(1)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let info: String = redis::cmd("INFO").query_async(&mut conn).await?;
    if !info.contains("cluster_enabled:1") {
        // A list names a cluster's nodes: a lone server found in it (a standby, say) would
        // split the nodes between two buses.
        anyhow::ensure!(
            urls.len() == 1,
            "REDIS_URL: several addresses name a Redis Cluster's nodes, but one that answered is a lone server"
        );
        // A lost connection is retried twice, after about 1 s and then 2 s (with jitter).
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_min_delay(Duration::from_secs(1))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(2);
        let single = ConnectionManager::new_with_config(client.clone(), config).await?;
        return Ok((Commands::Single(single), Link::Single(client)));
    }
    let major: u32 = info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .and_then(|version| version.split('.').next()?.trim().parse().ok())
        .unwrap_or(0);
    anyhow::ensure!(
        major >= 7,
        "REDIS_URL: a Redis Cluster must run Redis 7 or later (sharded pub/sub); this one runs {major}"
    );
    let commands = cluster_client(urls, None)?.get_async_connection().await?;
    Ok((Commands::Cluster(commands), Link::Cluster(urls.to_vec())))
}

/// Runs the requests at once (on a cluster, each to its own shard); the first error, if any.
async fn all_ok(
    requests: impl IntoIterator<Item = impl std::future::Future<Output = redis::RedisResult<()>>>,
) -> redis::RedisResult<()> {
    futures_util::future::join_all(requests)
        .await
        .into_iter()
        .collect()
}

/// Where the listener connects: one server, or a cluster's nodes.
enum Link {
    Single(redis::Client),
    Cluster(Vec<String>),
}

/// A cluster client whose connections time out like the single server's, with `pushes` (if
/// any) receiving what its subscriptions hear.
fn cluster_client(
    urls: &[String],
    pushes: Option<mpsc::UnboundedSender<redis::PushInfo>>,
) -> redis::RedisResult<redis::cluster::ClusterClient> {
    let mut builder = ClusterClientBuilder::new(urls.to_vec())
        .use_protocol(redis::ProtocolVersion::RESP3)
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2));
    if let Some(pushes) = pushes {
        builder = builder.push_sender(pushes);
    }
    builder.build()
}

/// The listening connection, which subscribes to the chats this node has rooms for.
#[derive(Clone)]
enum Listener {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Listener {
    /// Starts hearing these chat channels. One server takes them in one command; a cluster one
    /// channel per command (each may live on another shard), all at once.
    async fn listen(&mut self, channels: &[String]) -> redis::RedisResult<()> {
        match self {
            Listener::Single(conn) => conn.subscribe(channels).await,
            Listener::Cluster(conn) => {
                all_ok(channels.iter().map(|channel| {
                    let mut conn = conn.clone();
                    async move { conn.ssubscribe(channel).await }
                }))
                .await
            }
        }
    }

    /// Stops hearing these chat channels.
    async fn ignore(&mut self, channels: &[String]) -> redis::RedisResult<()> {
        match self {
            Listener::Single(conn) => conn.unsubscribe(channels).await,
            Listener::Cluster(conn) => {
                all_ok(channels.iter().map(|channel| {
                    let mut conn = conn.clone();
                    async move { conn.sunsubscribe(channel).await }
                }))
                .await
            }
        }
    }
}

/// Keeps the listener's chat subscriptions equal to the chats the hub has rooms for, as rooms
/// start and retire. A chat newly heard catches up from the database: what was published
/// between its room's start and the subscription is read there.
async fn follow_rooms(mut listener: Listener, broker: Arc<RedisBroker>) {
    let cluster = matches!(listener, Listener::Cluster(_));
    // Chats whose channel may be subscribed to: a subscription that failed part way may still
    // be in place on a shard, and must be left when its room retires.
    let mut heard: std::collections::HashSet<i64> = std::collections::HashSet::new();
    // Of those, the ones whose subscription was not confirmed (not counted as heard).
    let mut unconfirmed: std::collections::HashSet<i64> = std::collections::HashSet::new();
    // Every channel again, the control channel included (see `RedisBroker::resubscribe`).
    let mut again = false;
    let mut reported = false;
    loop {
        let wanted: std::collections::HashSet<i64> = broker.hub.chat_ids().into_iter().collect();
        let mut added: Vec<i64> = if again {
            wanted.iter().copied().collect()
        } else {
            wanted.difference(&heard).copied().collect()
        };
        let removed: Vec<i64> = heard.difference(&wanted).copied().collect();
        added.sort_unstable();
        let mut failure = None;
        if again {
            if let Listener::Cluster(conn) = &mut listener {
                failure = conn.subscribe(&broker.control).await.err();
            }
        }
        for chats in added.chunks(SUBSCRIBE_BATCH) {
            if failure.is_some() {
                break;
            }
            heard.extend(chats);
            let channels: Vec<String> = chats.iter().map(|&c| broker.chat_channel(c)).collect();
            match listener.listen(&channels).await {
                // What was published before the subscription took hold is read from the database.
                Ok(()) => {
                    for &chat in chats {
                        unconfirmed.remove(&chat);
                        broker.hub.dispatch(chat, RoomEvent::Resync);
                    }
                }
                Err(err) => {
                    unconfirmed.extend(chats);
                    failure = Some(err);
                }
            }
        }
        for chats in removed.chunks(SUBSCRIBE_BATCH) {
            if failure.is_some() {
                break;
            }
            let channels: Vec<String> = chats.iter().map(|&c| broker.chat_channel(c)).collect();
            match listener.ignore(&channels).await {
                Ok(()) => {
                    for chat in chats {
                        heard.remove(chat);
                        unconfirmed.remove(chat);
                    }
                }
                Err(err) => failure = Some(err),
            }
        }
        broker
            .metrics
            .bus_subscriptions
            .set((heard.len() - unconfirmed.len()) as i64);
        if let Some(err) = failure {
            if !reported {
                tracing::warn!(error = %err, "cannot subscribe to chat channels; their sockets catch up from the database meanwhile; retrying");
                reported = true;
            }
            again = true;
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        if cluster && again {
            // Every subscription is in place again after a shard's connection dropped.
            tracing::info!("subscribed to the Redis Cluster again");
            broker.metrics.redis_reconnects.inc();
            broker.health.connected.store(true, Ordering::Relaxed);
        }
        again = false;
        reported = false;
        tokio::select! {
            () = broker.hub.rooms_changed() => {}
            () = broker.resubscribe.notified() => again = true,
        }
    }
}

/// Stops the task when dropped (a listener's subscriptions end with its connection).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Hands one push from Redis to where it belongs. Answers false when the connection is gone.
fn on_push(broker: &RedisBroker, push: redis::PushInfo) -> bool {
    match push.kind {
        PushKind::Message | PushKind::SMessage => {
            if let Some(redis::Value::BulkString(payload)) = push.data.get(1) {
                broker.receive(payload);
            }
        }
        // A cluster ends a shard's sharded subscriptions when its slots move elsewhere (a
        // failover, resharding), and the client library then forgets them: a chat that still
        // has a room here is subscribed to again. (Leaving a chat this node no longer serves
        // brings the same push, and nothing to do.)
        PushKind::SUnsubscribe => {
            let chat = match push.data.first() {
                Some(redis::Value::BulkString(channel)) => broker.chat_of(channel),
                _ => None,
            };
            if chat.is_some_and(|chat| broker.hub.has_room(chat)) {
                broker.resubscribe.notify_one();
            }
        }
        PushKind::Disconnection => return false,
        _ => {}
    }
    true
}

/// Subscribes, delivers what arrives, and on any disconnection reconnects with backoff; every
/// (re)connection makes the rooms catch up from the database.
async fn listen_loop(link: Link, broker: Arc<RedisBroker>) {
    let mut backoff = Duration::from_millis(100);
    let mut reported_down = false;
    loop {
        let (tx, mut pushes) = mpsc::unbounded_channel();
        let connected = async {
            let listener = match &link {
                Link::Single(client) => {
                    let config = redis::AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(Duration::from_secs(2)))
                        .set_response_timeout(Some(Duration::from_secs(2)))
                        .set_push_sender(tx);
                    let mut conn = client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?;
                    let name = format!("{}:{}", broker.prefix, broker.node);
                    redis::cmd("CLIENT")
                        .arg("SETNAME")
                        .arg(name)
                        .query_async::<()>(&mut conn)
                        .await?;
                    conn.subscribe(&broker.control).await?;
                    Listener::Single(conn)
                }
                Link::Cluster(urls) => {
                    let mut conn = cluster_client(urls, Some(tx))?
                        .get_async_connection()
                        .await?;
                    conn.subscribe(&broker.control).await?;
                    Listener::Cluster(conn)
                }
            };
            Ok::<_, redis::RedisError>(listener)
        }
        .await;
        match connected {
            Ok(listener) => {
                if reported_down {
                    tracing::info!("Redis connection restored; catching up from the database");
                    broker.metrics.redis_reconnects.inc();
                }
                backoff = Duration::from_millis(100);
                broker.health.connected.store(true, Ordering::Relaxed);
                broker.hub.dispatch_all(RoomEvent::Resync);
                let cluster = matches!(listener, Listener::Cluster(_));
                let _following = AbortOnDrop(tokio::spawn(follow_rooms(listener, broker.clone())));
                while let Some(push) = pushes.recv().await {
                    if !on_push(&broker, push) {
                        if cluster {
                            // One shard's connection dropped. The client library reconnects to
                            // that address, but learns of a failover only when a command fails:
                            // subscribing again is that command. Until it succeeds, this node
                            // counts as not hearing the bus.
                            tracing::warn!("a Redis Cluster connection dropped; subscribing again");
                            broker.health.connected.store(false, Ordering::Relaxed);
                            broker.resubscribe.notify_one();
                            continue;
                        }
                        break;
                    }
                }
                broker.health.connected.store(false, Ordering::Relaxed);
                tracing::warn!("Redis connection lost; serving local sockets and reconnecting");
                reported_down = true;
            }
            Err(err) => {
                broker.health.connected.store(false, Ordering::Relaxed);
                if !reported_down {
                    tracing::warn!(error = %err, "Redis is unreachable; serving local sockets and retrying");
                    reported_down = true;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// GCRA, the generic cell rate algorithm, in one script on Redis's clock (microseconds):
/// `KEYS[1]` holds the budget's theoretical arrival time; `ARGV[1]` is the interval that earns
/// one unit back, `ARGV[2]` the burst tolerance (the interval × (burst − 1)). Answers 0 when the
/// unit is spent, else the microseconds until one may be.
const GCRA_SCRIPT: &str = "local t = redis.call('TIME') \
     local now = tonumber(t[1]) * 1000000 + tonumber(t[2]) \
     local tat = tonumber(redis.call('GET', KEYS[1]) or now) \
     if tat < now then tat = now end \
     local wait = tat - tonumber(ARGV[2]) - now \
     if wait > 0 then return wait end \
     local new = tat + tonumber(ARGV[1]) \
     redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.ceil((new - now) / 1000) + 1) \
     return 0";

impl crate::limits::SharedBudgets for RedisBroker {
    fn spend(
        &self,
        key: String,
        interval: Duration,
        burst: u32,
    ) -> BoxFuture<'_, Option<Result<(), Duration>>> {
        Box::pin(async move {
            // Redis away: this node's own budgets at once, rather than a wait on every request.
            if !self.health.connected() {
                return None;
            }
            let interval_us = interval.as_micros().max(1) as u64;
            let tolerance_us = interval_us.saturating_mul(u64::from(burst.saturating_sub(1)));
            let mut commands = self.commands.clone();
            let mut spend = redis::cmd("EVAL");
            spend
                .arg(GCRA_SCRIPT)
                .arg(1)
                .arg(format!("{}:limit:{key}", self.prefix))
                .arg(interval_us)
                .arg(tolerance_us);
            let asked = spend.query_async::<i64>(&mut commands);
            match tokio::time::timeout(PRESENCE_TIMEOUT, asked).await {
                Ok(Ok(0)) => Some(Ok(())),
                Ok(Ok(wait)) => Some(Err(Duration::from_micros(u64::try_from(wait).unwrap_or(1)))),
                Ok(Err(err)) => {
                    tracing::debug!(error = %err, "shared rate limit unavailable; using this node's");
                    None
                }
                Err(_) => None,
            }
        })
    }
}

/// A reply's text as kept in Redis: `<reply id>\n<text>`.
fn parse_text(kept: &str) -> Option<(i64, String)> {
    let (id, text) = kept.split_once('\n')?;
    Some((id.parse().ok()?, text.to_owned()))
}

impl ReplyBus for RedisBroker {
    fn claim(&self, ai_chat_id: i64, token: &str, lease: Duration) -> BoxFuture<'_, bool> {
        let (key, value) = (self.lease_key(ai_chat_id), self.lease_value(token));
        Box::pin(async move {
            let mut commands = self.commands.clone();
            let lease = lease.as_millis() as u64;
            let work = async {
                let set: Option<String> = redis::cmd("SET")
                    .arg(&key)
                    .arg(&value)
                    .arg("NX")
                    .arg("PX")
                    .arg(lease)
                    .query_async(&mut commands)
                    .await?;
                if set.is_some() {
                    return Ok(true);
                }
                // A claim this node left behind (its release not yet carried out): the caller
                // holds this node's own slot for the chat, so nothing runs here under it.
                let holder: Option<String> = commands.get(&key).await?;
                if holder.is_some_and(|h| h.starts_with(&format!("{}:", self.node))) {
                    let _: () = redis::cmd("SET")
                        .arg(&key)
                        .arg(&value)
                        .arg("PX")
                        .arg(lease)
                        .query_async(&mut commands)
                        .await?;
                    return Ok(true);
                }
                Ok::<_, redis::RedisError>(false)
            };
            match tokio::time::timeout(PRESENCE_TIMEOUT, work).await {
                Ok(Ok(claimed)) => claimed,
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "could not claim an AI reply in Redis; going ahead");
                    true
                }
                Err(_) => true,
            }
        })
    }

    fn occupy(
        &self,
        user_id: i64,
        token: &str,
        max: usize,
        lease: Duration,
        vacated: Vec<String>,
    ) -> BoxFuture<'_, Option<bool>> {
        let key = self.user_key(user_id);
        let token = token.to_owned();
        Box::pin(async move {
            let mut commands = self.commands.clone();
            let mut occupy = redis::cmd("EVAL");
            occupy
                .arg(OCCUPY_SCRIPT)
                .arg(1)
                .arg(&key)
                .arg(&token)
                .arg(max)
                .arg(lease.as_millis() as u64)
                .arg(&vacated);
            let asked = occupy.query_async::<i64>(&mut commands);
            match tokio::time::timeout(PRESENCE_TIMEOUT, asked).await {
                Ok(Ok(taken)) => Some(taken == 1),
                _ => None,
            }
        })
    }

    fn vacate(&self, user_id: i64, token: &str) {
        let key = self.user_key(user_id);
        self.queue(&key, redis::cmd("ZREM").arg(&key).arg(token).clone());
    }

    fn renew(&self, ai_chat_id: i64, user_id: i64, token: &str, lease: Duration) {
        let lease_key = self.lease_key(ai_chat_id);
        self.queue(
            &lease_key,
            redis::cmd("EVAL")
                .arg(RENEW_SCRIPT)
                .arg(2)
                .arg(&lease_key)
                .arg(self.text_key(ai_chat_id))
                .arg(self.lease_value(token))
                .arg(lease.as_millis() as u64)
                .arg(text_ttl(lease))
                .clone(),
        );
        let user_key = self.user_key(user_id);
        self.queue(
            &user_key,
            redis::cmd("EVAL")
                .arg(RENEW_PLACE_SCRIPT)
                .arg(1)
                .arg(&user_key)
                .arg(token)
                .arg(lease.as_millis() as u64)
                .clone(),
        );
    }

    fn release(&self, ai_chat_id: i64, token: &str) {
        let lease_key = self.lease_key(ai_chat_id);
        self.queue(
            &lease_key,
            redis::cmd("EVAL")
                .arg(RELEASE_SCRIPT)
                .arg(2)
                .arg(&lease_key)
                .arg(self.text_key(ai_chat_id))
                .arg(self.lease_value(token))
                .clone(),
        );
    }

    fn started(&self, ai_chat_id: i64, reply_id: i64, lease: Duration) {
        let key = self.text_key(ai_chat_id);
        self.queue(
            &key,
            redis::cmd("SET")
                .arg(&key)
                .arg(format!("{reply_id}\n"))
                .arg("PX")
                .arg(text_ttl(lease))
                .clone(),
        );
    }

    fn forget(&self, ai_chat_id: i64, reply_id: i64) {
        let key = self.text_key(ai_chat_id);
        let prefix = format!("{reply_id}\n");
        let script = "if string.sub(redis.call('GET', KEYS[1]) or '', 1, string.len(ARGV[1])) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
        self.queue(
            &key,
            redis::cmd("EVAL")
                .arg(script)
                .arg(1)
                .arg(&key)
                .arg(prefix)
                .clone(),
        );
    }

    fn publish(&self, ai_chat_id: i64, event: &AiEvent) {
        // The text so far grows before the delta is published (the outbox sends the control
        // channel's commands after the others of their batch).
        if let AiEvent::Delta { id, offset, delta } = event {
            let key = self.text_key(ai_chat_id);
            let header = format!("{id}\n");
            self.queue(
                &key,
                redis::cmd("EVAL")
                    .arg(APPEND_SCRIPT)
                    .arg(1)
                    .arg(&key)
                    .arg(delta)
                    .arg(header.len() + offset)
                    .arg(&header)
                    .clone(),
            );
        }
        self.send_control(
            ai_chat_id,
            WireEvent::Ai {
                event: AiWire::from_event(event),
            },
        );
    }

    fn in_progress(&self, ai_chat_id: i64) -> BoxFuture<'_, Option<(i64, String)>> {
        let keys = [self.lease_key(ai_chat_id), self.text_key(ai_chat_id)];
        Box::pin(async move {
            let mut commands = self.commands.clone();
            let read = commands.mget::<_, (Option<String>, Option<String>)>(&keys);
            let (claim, text) = tokio::time::timeout(PRESENCE_TIMEOUT, read)
                .await
                .ok()?
                .ok()?;
            claim?;
            parse_text(&text?)
        })
    }

    fn leftover(&self, ai_chat_id: i64) -> BoxFuture<'_, Option<(i64, String)>> {
        let key = self.text_key(ai_chat_id);
        Box::pin(async move {
            let mut commands = self.commands.clone();
            let read = commands.get::<_, Option<String>>(&key);
            let text = tokio::time::timeout(PRESENCE_TIMEOUT, read)
                .await
                .ok()?
                .ok()??;
            parse_text(&text)
        })
    }

    fn cancel(&self, ai_chat_id: i64) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            if self.claimed(ai_chat_id).await != Some(true) {
                return false;
            }
            let Some(text) = self.envelope(
                ai_chat_id,
                WireEvent::Ai {
                    event: AiWire::Cancel,
                },
            ) else {
                return false;
            };
            // Straight to Redis, not through the outbox: the caller answers once it is sent.
            let mut commands = self.commands.clone();
            let sent = commands.publish::<_, _, ()>(&self.control, text);
            matches!(
                tokio::time::timeout(PRESENCE_TIMEOUT, sent).await,
                Ok(Ok(()))
            )
        })
    }

    fn claimed(&self, ai_chat_id: i64) -> BoxFuture<'_, Option<bool>> {
        let key = self.lease_key(ai_chat_id);
        Box::pin(async move {
            let mut commands = self.commands.clone();
            let read = commands.exists::<_, bool>(&key);
            tokio::time::timeout(PRESENCE_TIMEOUT, read)
                .await
                .ok()?
                .ok()
        })
    }

    fn incoming(&self) -> Option<mpsc::Receiver<Remote>> {
        self.ai_incoming
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    fn shared(&self) -> bool {
        true
    }
}

impl SharedPresence for RedisBroker {
    fn announce(&self, chat_id: i64, members: Vec<Member>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let key = self.presence_key(chat_id);
            let now = chrono::Utc::now().timestamp_millis();
            let expires = now + self.presence_ttl.as_millis() as i64;
            let mine = format!("{}|", self.node);
            let mut commands = self.commands.clone();
            let work = async {
                // Withdraw this node's old entries, then add the current ones with a fresh expiry.
                let existing: Vec<String> = commands.zrange(&key, 0, -1).await?;
                let mut pipe = redis::pipe();
                pipe.zrembyscore(&key, "-inf", now).ignore();
                for stale in existing.iter().filter(|e| e.starts_with(&mine)) {
                    pipe.zrem(&key, stale).ignore();
                }
                for member in &members {
                    pipe.zadd(
                        &key,
                        format!("{mine}{}|{}", member.id, member.username),
                        expires,
                    )
                    .ignore();
                }
                pipe.pexpire(&key, self.presence_ttl.as_millis() as i64 * 2)
                    .ignore();
                pipe.query_async::<()>(&mut commands).await
            };
            if let Ok(Err(err)) = tokio::time::timeout(PRESENCE_TIMEOUT, work).await {
                tracing::debug!(error = %err, "presence not announced");
            }
        })
    }

    fn online(&self, chat_id: i64) -> BoxFuture<'_, Option<Vec<Member>>> {
        Box::pin(async move {
            let key = self.presence_key(chat_id);
            let now = chrono::Utc::now().timestamp_millis();
            let mut commands = self.commands.clone();
            let read = commands.zrangebyscore::<_, _, _, Vec<String>>(&key, now, "+inf");
            let entries = tokio::time::timeout(PRESENCE_TIMEOUT, read)
                .await
                .ok()?
                .ok()?;
            let mut members: Vec<Member> = entries
                .iter()
                .filter_map(|entry| {
                    let mut parts = entry.splitn(3, '|');
                    let (_node, id, username) = (parts.next()?, parts.next()?, parts.next()?);
                    Some(Member {
                        id: id.parse().ok()?,
                        username: username.to_owned(),
                    })
                })
                .collect();
            members.sort_by_key(|m| m.id);
            members.dedup_by_key(|m| m.id);
            Some(members)
        })
    }

    fn changed(&self, chat_id: i64) {
        self.send_chat(chat_id, WireEvent::PresenceChanged);
    }

    fn heartbeat(&self) -> Duration {
        (self.presence_ttl / 3).max(Duration::from_millis(200))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{frames::Protocol, views::Viewer};

    #[test]
    fn an_envelope_heard_twice_is_handled_once_and_memory_stays_bounded() {
        let mut recent = Recent::default();
        assert!(recent.first("a", 1));
        assert!(!recent.first("a", 1));
        assert!(recent.first("b", 1), "another node's first envelope");
        assert!(
            recent.first("a", 0) && recent.first("a", 0),
            "unnumbered ones always pass"
        );
        for n in 2..(RECENT as u64 + 10) {
            assert!(recent.first("a", n));
        }
        assert!(recent.seen.len() <= RECENT && recent.order.len() <= RECENT);
    }

    #[test]
    fn ended_credentials_travel_intact() {
        let ended = Ended::User {
            user_id: 7,
            kept: Some("kept".into()),
        };
        let envelope = Envelope {
            node: "n".into(),
            n: 1,
            chat: 0,
            event: WireEvent::CredentialsEnded {
                ended: ended.clone(),
            },
        };
        let text = serde_json::to_string(&envelope).unwrap();
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert!(matches!(back.event, WireEvent::CredentialsEnded { ended: got } if got == ended));
    }

    #[test]
    fn logged_events_travel_with_their_position() {
        let frame = Utf8Bytes::from_static(r#"{"type":"message_deleted","seq":9,"id":3,"chat":2}"#);
        let event = RoomEvent::Logged {
            seq: 9,
            frame: frame.clone(),
            departed: Some(5),
        };
        let envelope = Envelope {
            node: "n".into(),
            n: 1,
            chat: 2,
            event: WireEvent::from_room(&event).unwrap(),
        };
        let text = serde_json::to_string(&envelope).unwrap();
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert!(matches!(
            back.event.into_room(),
            Some(RoomEvent::Logged { seq: 9, frame: got, departed: Some(5) }) if got == frame
        ));
    }

    #[test]
    fn a_replys_original_protocol_frames_travel_beside_the_extended_ones() {
        let frames = MessageFrames::from_parts(
            3,
            Utf8Bytes::from_static("v2 with email"),
            Utf8Bytes::from_static("v2"),
            Some((
                Utf8Bytes::from_static("original with email"),
                Utf8Bytes::from_static("original"),
            )),
        );
        let event = RoomEvent::Message { seq: 4, frames };
        let text = serde_json::to_string(&Envelope {
            node: "n".into(),
            n: 1,
            chat: 2,
            event: WireEvent::from_room(&event).unwrap(),
        })
        .unwrap();
        let back: Envelope = serde_json::from_str(&text).unwrap();
        let Some(RoomEvent::Message { frames, .. }) = back.event.into_room() else {
            panic!("a message comes back as a message");
        };
        let sender = Viewer {
            id: 3,
            staff: false,
        };
        let other = Viewer {
            id: 9,
            staff: false,
        };
        let frame = |viewer, protocol| frames.for_viewer(viewer, protocol).unwrap().as_str();
        assert_eq!(frame(sender, Protocol::V2), "v2 with email");
        assert_eq!(frame(other, Protocol::V2), "v2");
        assert_eq!(frame(sender, Protocol::Original), "original with email");
        assert_eq!(frame(other, Protocol::Original), "original");
    }
}
