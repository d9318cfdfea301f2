//! `fanout`: R chats of M members, one socket per member, members sending over their socket.
//!
//! Each message embeds its send time as nanoseconds since a process-wide `Instant`, so every
//! receiver computes its end-to-end latency on the same clock. Open loop (`--rate`) stamps the
//! scheduled time rather than the actual one, so a client that falls behind shows up as latency
//! instead of hiding it. Flat out, each sender keeps at most `--window` of its own messages
//! unechoed, so the load is what the server absorbs, not what piles up in client queues.
//!
//! With `--connect-first`, every socket is read from the moment it opens, and sending starts only
//! once every socket has opened and sees its whole chat online (from its presence frames): the
//! join storm of a large room is over before anything is measured, and what it cost (time, 4008
//! closes during the joins) is reported apart.
//!
//! After sending stops, the run waits for every socket to catch up with the chat's last seq (read
//! over REST, the source of truth) and then checks each socket's seqs: every one from 1 to the
//! last (the sockets join before the chats have any message), none twice, in order.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Args;
use futures_util::{stream, SinkExt, StreamExt};
use serde_json::json;
use tokio::{
    sync::watch,
    time::{self, Interval, MissedTickBehavior},
};
use tokio_tungstenite::tungstenite::{Error as WsErr, Message as Frame};

use super::Report;
use crate::{
    ceiling,
    client::{self, Incoming, Session, Ws},
    stats::{round2, Latency, Tally},
    target::Target,
    users, Common,
};

#[derive(Args, Debug)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    /// Chats to create.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub chats: u32,
    /// Members per chat (distinct users per chat), each holding one socket.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub members: u32,
    /// Members per chat that send [default: every member].
    #[arg(long)]
    pub senders: Option<u32>,
    /// Open-loop target in messages/s over all senders together; without it senders go flat out
    /// (which needs the server started with a high MRM_MESSAGES_PER_SECOND).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Flat out: most of a sender's own messages not yet echoed back to it.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub window: u32,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of sending before measuring starts.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Most seconds to wait, once sending stops, for every socket to catch up.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Reconnections (with `?after_seq=`) allowed per socket after a 4008 close or a broken
    /// connection.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub max_resumes: u32,
    /// Spread the sockets over these servers (comma-separated base URLs, round robin) instead
    /// of `--target`, to measure several nodes sharing one database and one Redis. Setup and
    /// REST calls still go to `--target`.
    #[arg(long, value_delimiter = ',')]
    pub socket_targets: Vec<String>,
    /// Open the sockets from these loopback source addresses (comma-separated, round robin),
    /// e.g. `127.0.0.2,127.0.0.3`: each address has its own range of ports (about 28,000), and
    /// a server limits connections per address (`MRM_MAX_CONNECTIONS_PER_ADDRESS`).
    #[arg(long, value_delimiter = ',')]
    pub source_ips: Vec<std::net::IpAddr>,
    /// Read every socket from the moment it opens, and start sending only once all are open and
    /// each sees its whole chat online; without it, sockets are not read until sending starts,
    /// 300 ms after the last one opened.
    #[arg(long)]
    pub connect_first: bool,
    /// After measuring the target, run the identical load against a bare WebSocket broadcast
    /// server started for the purpose (no accounts, no storage; see `ceiling-server`) and
    /// report it as `ceiling`, with the ratio of the two.
    #[arg(long)]
    pub ceiling: bool,
    /// Frames the ceiling lets a socket queue: the server's MRM_WS_QUEUE.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub ceiling_ws_queue: u32,
}

/// Sockets opened at once during setup.
const CONNECT_CONCURRENCY: usize = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A flat-out sender whose window stays full this long assumes its messages are gone.
const STALL: Duration = Duration::from_secs(2);
/// Seqs beyond this are not tracked (a bitmap per socket holds the ones seen).
const MAX_SEQ: i64 = 100_000_000;
/// More sockets than this would not fit the open-file limit of one process.
const MAX_SOCKETS: u64 = 15_000;
/// `--connect-first`: most time to wait for every socket to see its whole chat online.
const SETTLE_LIMIT: Duration = Duration::from_secs(120);

/// What happened to one socket while the others were still joining (`--connect-first`).
#[derive(Default)]
struct Joining {
    closed_4008: u64,
    resumed: u64,
    /// Why the socket could not be kept open.
    failure: Option<String>,
}

/// One socket while the others join (`--connect-first`).
struct Joiner {
    target: Arc<Target>,
    source: Option<std::net::IpAddr>,
    chat_id: i64,
    cookie: String,
    /// Users in the chat: the socket has settled once it sees them all online.
    members: usize,
    max_resumes: u32,
    /// Sockets that have settled.
    settled: Arc<AtomicUsize>,
    /// Set when sending is about to start.
    go: watch::Receiver<bool>,
}

impl Joiner {
    /// Reads `ws` until `go`, keeping track of who is online. A socket closed (4008) or broken
    /// meanwhile reconnects, up to `max_resumes` times. Returns the socket (unless it could not
    /// be kept open) and what happened.
    async fn run(mut self, mut ws: Ws) -> (Option<Ws>, Joining) {
        let mut joining = Joining::default();
        let mut online = HashSet::new();
        let mut counted = false;
        loop {
            let end = loop {
                tokio::select! {
                    _ = self.go.changed() => return (Some(ws), joining),
                    frame = ws.next() => match frame {
                        Some(Ok(Frame::Text(text))) => {
                            if let Some(Incoming::Presence(presence)) = client::parse_frame(&text) {
                                presence.apply(&mut online);
                                if !counted && online.len() >= self.members {
                                    counted = true;
                                    self.settled.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        Some(Ok(Frame::Close(close))) => break close.map(|c| u16::from(c.code)),
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break None,
                    },
                }
            };
            if end == Some(4008) {
                joining.closed_4008 += 1;
            }
            if joining.resumed >= u64::from(self.max_resumes) {
                joining.failure = Some(format!("closed ({end:?}) while joining; no resume left"));
                return (None, joining);
            }
            match client::connect_ws(
                &self.target,
                self.chat_id,
                "?after_seq=0",
                &self.cookie,
                self.source,
                client::ws_config(false),
                CONNECT_TIMEOUT,
            )
            .await
            {
                Ok(again) => {
                    joining.resumed += 1;
                    ws = again;
                }
                Err(e) => {
                    joining.failure = Some(format!("reconnecting while joining: {e}"));
                    return (None, joining);
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Flat { window: usize },
    Rate { period: Duration },
}

/// A socket just opened: left unread until sending starts, or read by its joining task.
enum Opened {
    Idle(Box<Ws>),
    Joining(tokio::task::JoinHandle<(Option<Ws>, Joining)>),
}

/// The schedule every socket follows.
struct Plan {
    /// Send times in message contents are nanoseconds since this.
    origin: Instant,
    start: Instant,
    window_start: Instant,
    send_end: Instant,
    /// Nothing runs past this, whatever happens.
    hard_end: Instant,
    mode: Mode,
    max_resumes: u32,
    /// Where socket `i` connects: `socket_targets[i % len]`.
    socket_targets: Vec<Arc<Target>>,
    /// Where socket `i` connects from: `source_ips[i % len]`, if any.
    source_ips: Vec<std::net::IpAddr>,
}

impl Plan {
    fn socket_target(&self, index: usize) -> &Arc<Target> {
        &self.socket_targets[index % self.socket_targets.len()]
    }

    fn source(&self, index: usize) -> Option<std::net::IpAddr> {
        source_of(&self.source_ips, index)
    }
}

/// The source address of socket `index`, round robin over `sources` (none: the system's).
fn source_of(sources: &[std::net::IpAddr], index: usize) -> Option<std::net::IpAddr> {
    (!sources.is_empty()).then(|| sources[index % sources.len()])
}

struct Member {
    index: usize,
    chat_id: i64,
    /// The chat's log position before the run: entries up to it are no messages of the run.
    base: i64,
    cookie: String,
    sends: bool,
    /// Open loop: this sender's offset into the period, so senders do not fire together.
    phase: Duration,
}

/// What the drain watches while a socket runs.
#[derive(Default)]
struct Progress {
    /// Highest seq up to which this socket has every message.
    contiguous: AtomicI64,
    done: AtomicBool,
}

#[derive(Default)]
struct SocketStats {
    seen: Vec<u64>,
    max_seq: i64,
    contiguous: i64,
    duplicates: u64,
    out_of_order: u64,
    delivered_in_window: u64,
    latency: Latency,
    sent: u64,
    sent_in_window: u64,
    error_frames: Tally,
    closes: Tally,
    closed_4008: u64,
    /// Connections that broke without a close frame, by kind.
    broken: Tally,
    first_broken: Option<String>,
    resumed: u64,
    stalls: u64,
    unparsed: u64,
    /// Why the socket ended before the run did: (kind, detail).
    failure: Option<(String, String)>,
}

impl SocketStats {
    fn has(&self, seq: i64) -> bool {
        let i = seq as usize;
        self.seen
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn set(&mut self, seq: i64) {
        let i = seq as usize;
        if self.seen.len() <= i / 64 {
            self.seen.resize(i / 64 + 1, 0);
        }
        self.seen[i / 64] |= 1 << (i % 64);
    }

    /// Records a message frame; true when it is this socket's own message, seen the first time.
    fn on_message(
        &mut self,
        seq: i64,
        content: &str,
        now: Instant,
        plan: &Plan,
        me: usize,
    ) -> bool {
        if !(1..=MAX_SEQ).contains(&seq) {
            self.unparsed += 1;
            return false;
        }
        if self.has(seq) {
            self.duplicates += 1;
            return false;
        }
        if seq < self.max_seq {
            self.out_of_order += 1;
        }
        self.set(seq);
        self.max_seq = self.max_seq.max(seq);
        while self.has(self.contiguous + 1) {
            self.contiguous += 1;
        }
        if now >= plan.window_start && now < plan.send_end {
            self.delivered_in_window += 1;
        }
        let Some((sent_nanos, sender)) = parse_content(content) else {
            self.unparsed += 1;
            return false;
        };
        let sent_at = plan.origin + Duration::from_nanos(sent_nanos);
        if sent_at >= plan.window_start && sent_at < plan.send_end {
            self.latency.record(now.saturating_duration_since(sent_at));
        }
        sender == me
    }
}

/// `t:<nanos>|<sender>|<n>` → (nanos, sender).
fn parse_content(content: &str) -> Option<(u64, usize)> {
    let mut parts = content.strip_prefix("t:")?.split('|');
    let nanos = parts.next()?.parse().ok()?;
    let sender = parts.next()?.parse().ok()?;
    Some((nanos, sender))
}

enum End {
    Stop,
    Closed(Option<u16>),
    /// The connection broke: `kind` for the tally, `detail` for the report.
    Failed {
        kind: String,
        detail: String,
    },
}

impl End {
    fn failed(op: &str, e: Option<&WsErr>) -> End {
        let kind = match e {
            Some(WsErr::Io(io)) => format!("{op}_{:?}", io.kind()).to_lowercase(),
            Some(WsErr::ConnectionClosed | WsErr::AlreadyClosed) => format!("{op}_closed"),
            Some(WsErr::Protocol(_)) => format!("{op}_protocol"),
            Some(_) => format!("{op}_other"),
            None => format!("{op}_eof_without_close_frame"),
        };
        let detail = match e {
            Some(e) => format!("{op}: {e}"),
            None => format!("{op}: connection ended without a close frame"),
        };
        End::Failed { kind, detail }
    }
}

async fn next_tick(ticker: &mut Option<Interval>) -> Instant {
    match ticker {
        Some(t) => t.tick().await.into_std(),
        None => std::future::pending().await,
    }
}

/// One member's socket: reads everything, sends on schedule, resumes after a 4008 close or a
/// broken connection.
async fn run_socket(
    member: Member,
    ws: Ws,
    plan: Arc<Plan>,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) -> SocketStats {
    let mut st = SocketStats::default();
    for seq in 1..=member.base {
        st.set(seq);
    }
    st.contiguous = member.base;
    st.max_seq = member.base;
    progress.contiguous.store(member.base, Ordering::Relaxed);
    let hard_end = time::Instant::from_std(plan.hard_end);
    let send_end = time::Instant::from_std(plan.send_end);
    let mut ticker = match plan.mode {
        Mode::Rate { period } if member.sends => {
            let mut t =
                time::interval_at(time::Instant::from_std(plan.start + member.phase), period);
            // Late ticks still fire, stamped with their scheduled time: the delay is measured.
            t.set_missed_tick_behavior(MissedTickBehavior::Burst);
            Some(t)
        }
        _ => None,
    };
    let flat_window = match plan.mode {
        Mode::Flat { window } => Some(window),
        Mode::Rate { .. } => None,
    };
    // Flat-out senders wait for the start like the ticker does.
    time::sleep_until(time::Instant::from_std(plan.start)).await;
    let mut sending = member.sends;
    let mut outstanding = 0usize;
    let mut last_echo = Instant::now();
    let mut n = 0u64;
    let mut socket = Some(ws);
    let mut resumes = 0;
    // Timers live across iterations: a timer made per received frame would cost a timer-wheel
    // insert and removal per frame, which at 1,000 sockets is much of the generator's CPU.
    let hard = time::sleep_until(hard_end);
    let send_done = time::sleep_until(send_end);
    let mut stall_at = last_echo + STALL;
    let stall = time::sleep_until(time::Instant::from_std(stall_at));
    tokio::pin!(hard, send_done, stall);

    while let Some(ws) = socket.take() {
        let (mut sink, mut frames) = ws.split();
        let end = loop {
            let window_open = flat_window.is_some_and(|w| outstanding < w);
            let window_full = flat_window.is_some_and(|w| outstanding >= w);
            if last_echo + STALL != stall_at {
                stall_at = last_echo + STALL;
                stall.as_mut().reset(time::Instant::from_std(stall_at));
            }
            // Which send time to stamp, if a send is due.
            let due: Option<Instant> = tokio::select! {
                biased;
                _ = stop.changed() => break End::Stop,
                _ = &mut hard => break End::Stop,
                frame = frames.next() => {
                    match frame {
                        Some(Ok(Frame::Text(text))) => {
                            let now = Instant::now();
                            match client::parse_frame(&text) {
                                Some(Incoming::Message { seq, content }) => {
                                    if st.on_message(seq, &content, now, &plan, member.index) {
                                        outstanding = outstanding.saturating_sub(1);
                                        last_echo = now;
                                    }
                                    progress.contiguous.store(st.contiguous, Ordering::Relaxed);
                                }
                                Some(Incoming::Error(message)) => {
                                    // Errors answer this socket's own sends.
                                    st.error_frames.add(message);
                                    outstanding = outstanding.saturating_sub(1);
                                }
                                Some(Incoming::Presence(_) | Incoming::Other) => {}
                                None => st.unparsed += 1,
                            }
                            None
                        }
                        Some(Ok(Frame::Close(close))) => break End::Closed(close.map(|c| c.code.into())),
                        Some(Ok(_)) => None,
                        Some(Err(e)) => break End::failed("read", Some(&e)),
                        None => break End::failed("read", None),
                    }
                }
                _ = &mut send_done, if sending => {
                    sending = false;
                    None
                }
                at = next_tick(&mut ticker), if sending => Some(at),
                _ = std::future::ready(()), if sending && window_open => Some(Instant::now()),
                _ = &mut stall, if sending && window_full => {
                    st.stalls += 1;
                    outstanding = 0;
                    last_echo = Instant::now();
                    None
                }
            };
            if let Some(at) = due {
                let nanos = at.saturating_duration_since(plan.origin).as_nanos();
                let body = format!(r#"{{"content":"t:{nanos}|{}|{n}"}}"#, member.index);
                n += 1;
                if let Err(e) = sink.send(Frame::text(body)).await {
                    break End::failed("send", Some(&e));
                }
                st.sent += 1;
                if at >= plan.window_start && at < plan.send_end {
                    st.sent_in_window += 1;
                }
                if outstanding == 0 {
                    last_echo = Instant::now();
                }
                outstanding += 1;
            }
        };
        // A 4008 close asks for a resume; so does a connection that broke, since a real client
        // reconnects with `after_seq` after either and loss is about the server, not the client.
        let why = match end {
            End::Stop => {
                let _ = time::timeout(Duration::from_secs(1), sink.close()).await;
                break;
            }
            End::Closed(Some(4008)) => {
                st.closed_4008 += 1;
                "closed with 4008".to_owned()
            }
            End::Closed(code) => {
                let code = code.map_or("none".into(), |c| c.to_string());
                st.failure = Some((
                    format!("closed_{code}"),
                    format!("closed by the server with code {code}"),
                ));
                st.closes.add(code);
                break;
            }
            End::Failed { kind, detail } => {
                st.broken.add(kind);
                st.first_broken.get_or_insert_with(|| detail.clone());
                detail
            }
        };
        if resumes >= plan.max_resumes || Instant::now() >= plan.hard_end {
            st.failure = Some(("no_resume_left".into(), format!("{why}; no resume left")));
            break;
        }
        resumes += 1;
        let query = format!("?after_seq={}", st.contiguous);
        match client::connect_ws(
            plan.socket_target(member.index),
            member.chat_id,
            &query,
            &member.cookie,
            plan.source(member.index),
            client::ws_config(false),
            CONNECT_TIMEOUT,
        )
        .await
        {
            Ok(ws) => {
                st.resumed += 1;
                // What was in flight is either replayed (and echoed) or gone.
                outstanding = 0;
                socket = Some(ws);
            }
            Err(e) => {
                st.failure = Some((format!("resume_{}", e.kind), format!("resume failed: {e}")))
            }
        }
    }
    progress.done.store(true, Ordering::Relaxed);
    st
}

async fn last_seq(session: &Session, chat_id: i64) -> Result<i64> {
    let page = session
        .messages(chat_id, "?limit=1")
        .await
        .with_context(|| format!("reading the last message of chat {chat_id}"))?;
    Ok(page.messages.last().map_or(0, |m| m.seq))
}

async fn last_seqs(owners: &[Session], chat_ids: &[i64]) -> Result<Vec<i64>> {
    let mut out = Vec::with_capacity(chat_ids.len());
    for (owner, chat) in owners.iter().zip(chat_ids) {
        out.push(last_seq(owner, *chat).await?);
    }
    Ok(out)
}

fn secs(x: f64, name: &str, max: f64) -> Result<Duration> {
    if !(0.0..=max).contains(&x) {
        bail!("--{name} must be between 0 and {max} seconds");
    }
    Ok(Duration::from_secs_f64(x))
}

pub async fn run(args: FanoutArgs) -> Result<Report> {
    if args.ceiling && !args.socket_targets.is_empty() {
        bail!("--ceiling measures one server: it cannot be combined with --socket-targets");
    }
    let report = measure(&args, &args.common.target, &args.socket_targets).await?;
    if !args.ceiling {
        return Ok(report);
    }
    note!("measuring the ceiling: the same load against a bare WebSocket broadcast server");
    let bare = ceiling::Measure {
        kind: ceiling::Kind::Ws,
        throughput: "delivered_per_sec",
        open_loop: args.rate.is_some(),
        settings: json!({ "ws_queue": args.ceiling_ws_queue }),
    };
    ceiling::beside(report, bare, args.ceiling_ws_queue, |url| async move {
        measure(&args, &url, &[]).await
    })
    .await
}

/// One run of the scenario against `target_url` (sockets spread over `socket_target_urls` when
/// given).
async fn measure(
    args: &FanoutArgs,
    target_url: &str,
    socket_target_urls: &[String],
) -> Result<Report> {
    let chats = args.chats as usize;
    let members = args.members as usize;
    let senders = args.senders.unwrap_or(args.members) as usize;
    if senders > members {
        bail!("--senders ({senders}) cannot exceed --members ({members})");
    }
    let sockets = chats * members;
    if sockets as u64 > MAX_SOCKETS {
        bail!("{sockets} sockets is more than this scenario holds in one process ({MAX_SOCKETS})");
    }
    let duration = secs(args.duration, "duration", 3600.0)?;
    if duration.is_zero() {
        bail!("--duration must be positive");
    }
    let warmup = secs(args.warmup, "warmup", 600.0)?;
    let drain = secs(args.drain, "drain", 120.0)?;
    let total_senders = chats * senders;
    let mode = match args.rate {
        None => Mode::Flat {
            window: args.window as usize,
        },
        Some(rate) if rate > 0.0 && rate <= 10_000_000.0 && total_senders > 0 => Mode::Rate {
            period: Duration::from_secs_f64(total_senders as f64 / rate),
        },
        Some(_) => bail!("--rate must be in (0, 10000000] messages/s, with at least one sender"),
    };

    crate::os::raise_nofile_limit()?;
    let target = Arc::new(Target::resolve(target_url).await?);
    let mut socket_targets = Vec::new();
    for url in socket_target_urls {
        socket_targets.push(Arc::new(Target::resolve(url).await?));
    }
    crate::target::check_sources(&target, &args.source_ips)?;
    if socket_targets.is_empty() {
        socket_targets.push(target.clone());
    }
    let prefix = users::run_prefix();
    note!("registering {} users as {prefix}_*", sockets);
    let sessions = users::create(
        &target,
        &prefix,
        sockets,
        args.common.setup_concurrency as usize,
    )
    .await?;

    let mut chat_ids = Vec::with_capacity(chats);
    let mut owners = Vec::with_capacity(chats);
    for r in 0..chats {
        let group = &sessions[r * members..(r + 1) * members];
        let others: Vec<i64> = group[1..].iter().map(|s| s.user.id).collect();
        let id = group[0]
            .create_chat(&format!("{prefix} fanout {r}"), &others)
            .await
            .context("creating a chat")?;
        chat_ids.push(id);
        owners.push(group[0].clone());
    }
    // Members added after a chat was created (a room larger than one request takes) hold log
    // positions of their own before the first message.
    let mut bases = vec![0; chats];
    if members > client::PARTICIPANTS_PER_REQUEST + 1 {
        for (base, (owner, chat)) in bases.iter_mut().zip(owners.iter().zip(&chat_ids)) {
            *base = owner
                .log_position(*chat)
                .await
                .context("reading a chat's log position")?;
        }
    }

    note!("opening {sockets} sockets");
    let connect_started = Instant::now();
    let settled = Arc::new(AtomicUsize::new(0));
    let (go_tx, go_rx) = watch::channel(false);
    let opened: Vec<(usize, Result<Opened, client::WsError>)> = stream::iter(0..sockets)
        .map(|i| {
            let joiner = Joiner {
                target: socket_targets[i % socket_targets.len()].clone(),
                source: source_of(&args.source_ips, i),
                chat_id: chat_ids[i / members],
                cookie: sessions[i].cookie.clone(),
                members,
                max_resumes: args.max_resumes,
                settled: settled.clone(),
                go: go_rx.clone(),
            };
            let connect_first = args.connect_first;
            async move {
                let ws = client::connect_ws(
                    &joiner.target,
                    joiner.chat_id,
                    "",
                    &joiner.cookie,
                    joiner.source,
                    client::ws_config(false),
                    CONNECT_TIMEOUT,
                )
                .await;
                let opened = ws.map(|ws| match connect_first {
                    true => Opened::Joining(tokio::spawn(joiner.run(ws))),
                    false => Opened::Idle(Box::new(ws)),
                });
                (i, opened)
            }
        })
        .buffered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let connect_ms = connect_started.elapsed().as_millis() as u64;
    let mut failures = Tally::default();
    let mut first_failure = None;
    let mut pending = Vec::with_capacity(sockets);
    for (_, ws) in opened {
        match ws {
            Ok(ws) => pending.push(ws),
            Err(e) => {
                failures.add(e.kind.clone());
                first_failure.get_or_insert(e.to_string());
            }
        }
    }
    if !failures.is_empty() {
        bail!(
            "could not open every socket: {} (first: {})",
            failures.brief(),
            first_failure.unwrap_or_default()
        );
    }
    let mut joining = Joining::default();
    let mut settle_ms = None;
    if args.connect_first {
        note!("waiting for every socket to see its whole chat online");
        let limit = Instant::now() + SETTLE_LIMIT;
        while settled.load(Ordering::Relaxed) < sockets && Instant::now() < limit {
            time::sleep(Duration::from_millis(20)).await;
        }
        if settled.load(Ordering::Relaxed) >= sockets {
            settle_ms = Some(connect_started.elapsed().as_millis() as u64);
        }
        let _ = go_tx.send(true);
    } else {
        // Let the join (presence) frames settle before the clock starts.
        time::sleep(Duration::from_millis(300)).await;
    }
    let mut socks = Vec::with_capacity(sockets);
    for opened in pending {
        match opened {
            Opened::Idle(ws) => socks.push(*ws),
            Opened::Joining(task) => {
                let (ws, joined) = task.await.context("a joining socket panicked")?;
                joining.closed_4008 += joined.closed_4008;
                joining.resumed += joined.resumed;
                if let Some(failure) = joined.failure {
                    bail!("a socket could not be kept open while the others joined: {failure}");
                }
                socks.extend(ws);
            }
        }
    }

    let origin = Instant::now();
    let start = origin + Duration::from_millis(100);
    let window_start = start + warmup;
    let send_end = window_start + duration;
    let plan = Arc::new(Plan {
        origin,
        start,
        window_start,
        send_end,
        hard_end: send_end + drain + Duration::from_secs(5),
        mode,
        max_resumes: args.max_resumes,
        socket_targets: socket_targets.clone(),
        source_ips: args.source_ips.clone(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(sockets);
    let mut progress = Vec::with_capacity(sockets);
    for (i, ws) in socks.into_iter().enumerate() {
        let chat = i / members;
        let within = i % members;
        let sender_no = chat * senders + within;
        let phase = match mode {
            Mode::Rate { period } => period.mul_f64(sender_no as f64 / total_senders.max(1) as f64),
            Mode::Flat { .. } => Duration::ZERO,
        };
        let member = Member {
            index: i,
            chat_id: chat_ids[chat],
            base: bases[chat],
            cookie: sessions[i].cookie.clone(),
            sends: within < senders,
            phase,
        };
        let p = Arc::new(Progress::default());
        progress.push(p.clone());
        tasks.push(tokio::spawn(run_socket(
            member,
            ws,
            plan.clone(),
            p,
            stop_rx.clone(),
        )));
    }
    note!(
        "sending: {:.1}s warm-up, {:.1}s measured",
        warmup.as_secs_f64(),
        duration.as_secs_f64()
    );
    time::sleep_until(time::Instant::from_std(send_end)).await;

    // Drain: wait until every live socket has its chat's last committed seq, re-reading that
    // from the server now and then since the last sends may still be committing.
    let drain_started = Instant::now();
    let drain_deadline = drain_started + drain;
    time::sleep(Duration::from_millis(200)).await;
    let mut expected = last_seqs(&owners, &chat_ids).await?;
    let mut refreshed = Instant::now();
    let mut drained = false;
    for _ in 0..100_000 {
        let caught_up = (0..sockets).all(|i| {
            let p = &progress[i];
            p.done.load(Ordering::Relaxed)
                || p.contiguous.load(Ordering::Relaxed) >= expected[i / members]
        });
        if caught_up {
            let now = last_seqs(&owners, &chat_ids).await?;
            if now == expected {
                drained = true;
                break;
            }
            expected = now;
        }
        if Instant::now() >= drain_deadline {
            break;
        }
        if refreshed.elapsed() >= Duration::from_millis(500) {
            expected = last_seqs(&owners, &chat_ids).await?;
            refreshed = Instant::now();
        }
        time::sleep(Duration::from_millis(50)).await;
    }
    let drain_ms = drain_started.elapsed().as_millis() as u64;
    let _ = stop_tx.send(true);

    let mut results = Vec::with_capacity(sockets);
    for task in tasks {
        results.push(task.await.context("a socket task panicked")?);
    }
    let last = last_seqs(&owners, &chat_ids).await?;

    let mut latency = Latency::default();
    let mut error_frames = Tally::default();
    let mut closes = Tally::default();
    let mut socket_failures = Tally::default();
    let mut first_socket_failure = None;
    let mut broken = Tally::default();
    let mut first_broken = None;
    let (mut sent, mut sent_in_window, mut delivered_in_window) = (0u64, 0u64, 0u64);
    let (mut lost, mut duplicates, mut out_of_order) = (0u64, 0u64, 0u64);
    let (mut closed_4008, mut resumed, mut stalls, mut unparsed) = (0u64, 0u64, 0u64, 0u64);
    let mut sockets_with_loss = 0u64;
    let mut missed_after_failure = 0u64;
    for (i, st) in results.iter().enumerate() {
        latency.merge(&st.latency);
        error_frames.merge(&st.error_frames);
        closes.merge(&st.closes);
        broken.merge(&st.broken);
        if first_broken.is_none() {
            first_broken.clone_from(&st.first_broken);
        }
        if let Some((kind, detail)) = &st.failure {
            socket_failures.add(kind.clone());
            first_socket_failure.get_or_insert_with(|| detail.clone());
        }
        sent += st.sent;
        sent_in_window += st.sent_in_window;
        delivered_in_window += st.delivered_in_window;
        duplicates += st.duplicates;
        out_of_order += st.out_of_order;
        closed_4008 += st.closed_4008;
        resumed += st.resumed;
        stalls += st.stalls;
        unparsed += st.unparsed;
        // A socket that ended early is only accountable up to the last seq it saw; what came
        // after is reported apart, since the client gave up on it.
        let chat_last = last[i / members];
        let upto = if st.failure.is_some() {
            st.max_seq.min(chat_last)
        } else {
            chat_last
        };
        let missing = (1..=upto).filter(|s| !st.has(*s)).count() as u64;
        lost += missing;
        sockets_with_loss += u64::from(missing > 0);
        missed_after_failure += (chat_last - upto).max(0) as u64;
    }
    let committed: i64 = last.iter().zip(&bases).map(|(l, b)| (l - b).max(0)).sum();
    let rejected = error_frames.total();
    let window_secs = duration.as_secs_f64();
    let lat = latency.summary();
    let mode_text = match mode {
        Mode::Flat { window } => format!("flat out (window {window})"),
        Mode::Rate { .. } => format!("{} msg/s open loop", args.rate.unwrap_or_default()),
    };

    let json = json!({
        "scenario": "fanout",
        "target": target.base.as_str(),
        "socket_targets": socket_targets.iter().map(|t| t.base.as_str()).collect::<Vec<_>>(),
        "source_ips": args.source_ips,
        "params": {
            "chats": chats,
            "members": members,
            "senders_per_chat": senders,
            "mode": match mode { Mode::Flat { .. } => "flat", Mode::Rate { .. } => "rate" },
            "rate": args.rate,
            "window": args.window,
            "duration_secs": duration.as_secs_f64(),
            "warmup_secs": warmup.as_secs_f64(),
            "drain_secs": drain.as_secs_f64(),
            "max_resumes": args.max_resumes,
            "connect_first": args.connect_first,
        },
        "users": sockets,
        "sockets": sockets,
        "connect_ms": connect_ms,
        "settle_ms": settle_ms,
        "joining_closed_4008": joining.closed_4008,
        "joining_resumed": joining.resumed,
        "sent": sent,
        "sent_in_window": sent_in_window,
        "sent_per_sec": round2(sent_in_window as f64 / window_secs),
        "delivered_in_window": delivered_in_window,
        "delivered_per_sec": round2(delivered_in_window as f64 / window_secs),
        "latency": lat,
        "committed": committed,
        "rejected": rejected,
        "unaccounted": sent as i64 - rejected as i64 - committed,
        "lost": lost,
        "sockets_with_loss": sockets_with_loss,
        "missed_after_failure": missed_after_failure,
        "duplicates": duplicates,
        "out_of_order": out_of_order,
        "closed_4008": closed_4008,
        "broken": broken,
        "first_broken": first_broken,
        "resumed": resumed,
        "other_closes": closes,
        "socket_failures": socket_failures,
        "first_socket_failure": first_socket_failure,
        "error_frames": error_frames,
        "stalls": stalls,
        "unparsed_frames": unparsed,
        "drained": drained,
        "drain_ms": drain_ms,
    });
    let human = format!(
        "fanout {chats}×{members} ({sockets} sockets, {} senders, {mode_text}, {:.0}s): \
         sent {:.0} msg/s, delivered {:.0} msg/s, latency {}; lost {lost}, duplicated {duplicates}, \
         out of order {out_of_order}, 4008 closes {closed_4008}, broken {}, resumed {resumed}, \
         sockets given up {}, rejected {rejected}{}{}",
        total_senders,
        window_secs,
        sent_in_window as f64 / window_secs,
        delivered_in_window as f64 / window_secs,
        lat.brief(),
        broken.total(),
        socket_failures.total(),
        if drained { "" } else { " (drain timed out)" },
        if args.connect_first {
            format!(
                "; joining: {connect_ms} ms to open, settled {}, 4008 closes {}",
                settle_ms.map_or("never (timed out)".into(), |ms| format!("after {ms} ms")),
                joining.closed_4008
            )
        } else {
            String::new()
        },
    );
    Ok(Report { json, human })
}
