//! Ceilings: bare servers that answer a scenario's load with what the server under test answers,
//! minus everything that makes it a chat server (accounts, password hashing, sessions checked
//! against a database, membership, storage, rate limits).
//!
//! A figure measured on one machine says little on another: the same binary has measured 3×
//! apart on two machines of one kind, and a small shared machine moves between runs. So the
//! figures are quoted as a ratio to a ceiling measured in the same run, on the same machine,
//! against the same load generator: `fanout --ceiling` and `rest --ceiling` measure the target,
//! then start this binary as `ceiling-server`, run the identical load against it, and report
//! both and their ratio. What the ratio isolates is the project's own cost: the ceiling runs on
//! the same stack (tokio's multi-thread runtime, hyper through axum, tungstenite through axum's
//! WebSocket), in its own process as the server is, speaks the same wire (frames and JSON of the
//! same shape and size, the same cookies), and keeps the same bounds (a socket's queue, a page's
//! size, a request's body), so what it does not pay for is exactly what the project adds.
//!
//! - [`ws`] (`--kind ws`, for `fanout`): the chat socket, broadcasting each message to every
//!   socket of its chat through a bounded queue per socket, plus the REST calls a `fanout` run
//!   makes around it (register, log in, create the chats, read a chat's last seq).
//! - [`http`] (`--kind http`, for `rest`): the same REST calls plus `send_message`, every answer
//!   built from memory.
//!
//! Everything the servers hold is bounded: users, sessions and chats by count, each chat's
//! messages to the last [`LOG_LEN`], request bodies to [`BODY_LIMIT`], connections to
//! [`MAX_CONNECTIONS`]. They listen on loopback only, and exit when their stdin closes.

pub mod http;
pub mod ws;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    hash::{BuildHasher, Hasher},
    net::SocketAddr,
    pin::Pin,
    process::Stdio,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Arc, Mutex, OnceLock, RwLock,
    },
    task::{Context as TaskContext, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use axum::{extract::ws::Utf8Bytes, http::HeaderMap, serve::Listener, Router};
use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, BufReader, ReadBuf},
    net::{TcpListener, TcpStream},
    process::{Child, ChildStdin, Command},
    sync::{OwnedSemaphorePermit, Semaphore},
};

use crate::scenarios::Report;

/// Messages kept per chat, newest last: enough for a page (at most 500) and for a socket that
/// fell behind to catch up from memory, as the server's catches up from its database.
pub const LOG_LEN: usize = 8192;
/// Largest request body read (the server's largest JSON body is of this order).
pub const BODY_LIMIT: usize = 64 * 1024;
/// Connections open at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 20_000;
/// Users, sessions and chats held; past these, requests are answered 503.
const MAX_USERS: usize = 200_000;
const MAX_SESSIONS: usize = 200_000;
const MAX_CHATS: usize = 50_000;
/// Members of one chat (the scenarios make at most 5,000).
const MAX_MEMBERS: usize = 10_000;
/// Characters of a message's content, as the server allows.
pub const MAX_CONTENT_CHARS: usize = 10_000;

/// Which ceiling to serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// The chat socket, with the REST calls of a `fanout` run's setup and drain.
    Ws,
    /// The REST calls of `rest`.
    Http,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ws => "ws",
            Kind::Http => "http",
        }
    }
}

/// `mrm-bench ceiling-server`: serves a ceiling until stdin closes.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Which ceiling.
    #[arg(long, value_enum)]
    pub kind: Kind,
    /// Where to listen; a loopback address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub bind: SocketAddr,
    /// Frames a socket may have queued (the server's MRM_WS_QUEUE).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub ws_queue: u32,
}

/// Serves the ceiling: prints the bound address as one line on stdout, then serves until stdin
/// closes (the process then exits) or the process is killed.
pub async fn serve(args: ServerArgs) -> Result<()> {
    if !crate::target::is_loopback(args.bind.ip()) {
        bail!("--bind must be a loopback address, got {}", args.bind);
    }
    crate::os::raise_nofile_limit()?;
    let store = Arc::new(Store::new(args.ws_queue as usize));
    let router = match args.kind {
        Kind::Ws => ws::router(),
        Kind::Http => http::router(),
    };
    let app: Router = http::common_routes(router)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(store);
    let listener = TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("binding {}", args.bind))?;
    let addr = listener.local_addr()?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{addr}")?;
        out.flush()?;
    }
    let listener = Capped {
        inner: listener,
        permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
    };
    let server = axum::serve(listener, app);
    tokio::select! {
        served = server => served.context("serving")?,
        () = stdin_closed() => {}
    }
    // Open sockets and their tasks go with the process.
    std::process::exit(0);
}

/// Returns once stdin reaches its end (the parent closed it or exited).
async fn stdin_closed() {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 256];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// A listener that holds at most [`MAX_CONNECTIONS`] connections: past it, accepting waits for
/// one to close. Accepted connections get TCP_NODELAY, as the server's do.
struct Capped {
    inner: TcpListener,
    permits: Arc<Semaphore>,
}

/// An accepted connection and its place under the cap, given back when it is dropped.
struct Held {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Listener for Capped {
    type Io = Held;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Held, SocketAddr) {
        loop {
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                // The semaphore is never closed; wait rather than spin if it were.
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    return (
                        Held {
                            stream,
                            _permit: permit,
                        },
                        addr,
                    );
                }
                // Out of descriptors, or a connection reset before it was accepted.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl AsyncRead for Held {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Held {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A user as the ceilings know them: what their JSON shows, nothing to check.
#[derive(Debug)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub email: String,
}

impl User {
    /// The user object as `viewer` sees it: the email is shown to its owner only, as the
    /// server shows it to everyone but staff.
    pub fn view(&self, viewer: i64) -> UserView<'_> {
        UserView {
            id: self.id,
            username: &self.username,
            email: if viewer == self.id { &self.email } else { "" },
            user_type: "student",
        }
    }

    /// The user as presence frames show them.
    pub fn member(&self) -> Member<'_> {
        Member {
            id: self.id,
            username: &self.username,
        }
    }
}

/// `{"id", "username", "email", "user_type"}`.
#[derive(Serialize)]
pub struct UserView<'a> {
    pub id: i64,
    pub username: &'a str,
    pub email: &'a str,
    pub user_type: &'static str,
}

/// `{"id", "username"}`, as presence frames list users.
#[derive(Serialize)]
pub struct Member<'a> {
    pub id: i64,
    pub username: &'a str,
}

/// One message of a chat, with its socket frames once a socket needed them.
pub struct Entry {
    pub id: i64,
    pub chat: i64,
    pub seq: i64,
    pub sender: Arc<User>,
    pub content: String,
    pub timestamp: String,
    /// `{"type": "message", …}` with the sender's email (for the sender's sockets) and without
    /// it (for everyone else's), each serialised once and shared by every socket.
    frames: OnceLock<(Utf8Bytes, Utf8Bytes)>,
}

/// The message object: `{"id", "chat", "seq", "sender", "content", "timestamp"}`, fields in the
/// server's order.
#[derive(Serialize)]
pub struct MessageView<'a> {
    pub id: i64,
    pub chat: i64,
    pub seq: i64,
    pub sender: UserView<'a>,
    pub content: &'a str,
    pub timestamp: &'a str,
}

#[derive(Serialize)]
struct MessageFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: MessageView<'a>,
}

impl Entry {
    pub fn view(&self, viewer: i64) -> MessageView<'_> {
        MessageView {
            id: self.id,
            chat: self.chat,
            seq: self.seq,
            sender: self.sender.view(viewer),
            content: &self.content,
            timestamp: &self.timestamp,
        }
    }

    /// The message frame `viewer`'s socket gets.
    pub fn frame(&self, viewer: i64) -> &Utf8Bytes {
        let (with_email, without_email) = self.frames.get_or_init(|| {
            let encode = |viewer| {
                let frame = MessageFrame {
                    kind: "message",
                    message: self.view(viewer),
                };
                Utf8Bytes::from(serde_json::to_string(&frame).unwrap_or_default())
            };
            (encode(self.sender.id), encode(0))
        });
        if viewer == self.sender.id {
            with_email
        } else {
            without_email
        }
    }
}

/// A chat: who is in it, its recent messages and, for the socket ceiling, its sockets.
pub struct Room {
    pub id: i64,
    pub name: String,
    pub owner: i64,
    pub members: Vec<Arc<User>>,
    pub created_at: String,
    pub state: Mutex<RoomState>,
}

/// What changes as a chat is used; held under its room's lock, never across an await.
#[derive(Default)]
pub struct RoomState {
    pub last_seq: i64,
    /// The last [`LOG_LEN`] messages, seqs contiguous, oldest first.
    pub log: VecDeque<Arc<Entry>>,
    /// The chat's open sockets ([`ws`]).
    pub subs: Vec<ws::Sub>,
    /// Users with a socket open, and how many sockets each has.
    pub online: BTreeMap<i64, (Arc<User>, usize)>,
    /// Presence changes not yet sent.
    pub joined: Vec<Arc<User>>,
    pub left: Vec<Arc<User>>,
    /// A presence frame is due (one per [`ws::PRESENCE_COALESCE`]).
    pub presence_due: bool,
}

impl Room {
    /// Appends a message from `sender` and returns it; `deliver` runs under the room's lock,
    /// so deliveries happen in seq order.
    pub fn append(
        &self,
        store: &Store,
        sender: Arc<User>,
        content: String,
        deliver: impl FnOnce(&mut RoomState, &Arc<Entry>),
    ) -> Arc<Entry> {
        let timestamp = timestamp(SystemTime::now());
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.last_seq += 1;
        let entry = Arc::new(Entry {
            id: store.next_message.fetch_add(1, Ordering::Relaxed),
            chat: self.id,
            seq: state.last_seq,
            sender,
            content,
            timestamp,
            frames: OnceLock::new(),
        });
        deliver(&mut state, &entry);
        state.log.push_back(entry.clone());
        if state.log.len() > LOG_LEN {
            state.log.pop_front();
        }
        entry
    }

    /// A page of messages by id, as the server's `?limit=&before=&after=` read it: the newest
    /// `limit` below `before` (or the oldest above `after`), oldest first, and whether more lie
    /// beyond it.
    pub fn page(
        &self,
        limit: usize,
        before: Option<i64>,
        after: Option<i64>,
    ) -> (Vec<Arc<Entry>>, bool) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let within =
            |e: &&Arc<Entry>| before.is_none_or(|b| e.id < b) && after.is_none_or(|a| e.id > a);
        let mut page: Vec<Arc<Entry>>;
        let more;
        if after.is_none() {
            let mut newest = state.log.iter().rev().filter(within);
            page = newest.by_ref().take(limit).cloned().collect();
            more = newest.next().is_some();
            page.reverse();
        } else {
            let mut oldest = state.log.iter().filter(within);
            page = oldest.by_ref().take(limit).cloned().collect();
            more = oldest.next().is_some();
        }
        (page, more)
    }
}

/// Everything a ceiling holds, in memory.
pub struct Store {
    users: RwLock<Users>,
    sessions: RwLock<HashMap<String, Arc<User>>>,
    chats: RwLock<HashMap<i64, Arc<Room>>>,
    next_chat: AtomicI64,
    next_message: AtomicI64,
    next_conn: AtomicU64,
    /// Frames a socket may have queued.
    pub ws_queue: usize,
    /// Who sends without a known session: accepted, as nothing is checked.
    anonymous: Arc<User>,
    tokens: std::collections::hash_map::RandomState,
}

#[derive(Default)]
struct Users {
    by_id: HashMap<i64, Arc<User>>,
    by_name: HashMap<String, Arc<User>>,
}

/// Why a store could not take more: what it holds too many of.
pub struct Full(pub &'static str);

impl Store {
    pub fn new(ws_queue: usize) -> Store {
        Store {
            users: RwLock::default(),
            sessions: RwLock::default(),
            chats: RwLock::default(),
            next_chat: AtomicI64::new(1),
            next_message: AtomicI64::new(1),
            next_conn: AtomicU64::new(1),
            ws_queue,
            anonymous: Arc::new(User {
                id: 0,
                username: "anonymous".into(),
                email: String::new(),
            }),
            tokens: std::collections::hash_map::RandomState::new(),
        }
    }

    pub fn register(&self, username: String, email: String) -> Result<Arc<User>, RegisterError> {
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        if users.by_name.contains_key(&username) {
            return Err(RegisterError::Taken);
        }
        if users.by_id.len() >= MAX_USERS {
            return Err(RegisterError::Full);
        }
        let user = Arc::new(User {
            id: users.by_id.len() as i64 + 1,
            username: username.clone(),
            email,
        });
        users.by_id.insert(user.id, user.clone());
        users.by_name.insert(username, user.clone());
        Ok(user)
    }

    pub fn user_named(&self, username: &str) -> Option<Arc<User>> {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        users.by_name.get(username).cloned()
    }

    pub fn user(&self, id: i64) -> Option<Arc<User>> {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        users.by_id.get(&id).cloned()
    }

    /// A new session for `user`: (session key, CSRF token).
    pub fn log_in(&self, user: Arc<User>) -> Result<(String, String), Full> {
        let key = self.token();
        let csrf = self.token();
        let mut sessions = self.sessions.write().unwrap_or_else(|e| e.into_inner());
        if sessions.len() >= MAX_SESSIONS {
            return Err(Full("sessions"));
        }
        sessions.insert(key.clone(), user);
        Ok((key, csrf))
    }

    /// 32 characters, as the server's session keys and CSRF tokens.
    fn token(&self) -> String {
        let mut out = String::with_capacity(32);
        for _ in 0..2 {
            let mut h = self.tokens.build_hasher();
            h.write_u64(self.next_conn.fetch_add(1, Ordering::Relaxed));
            out.push_str(&format!("{:016x}", h.finish()));
        }
        out
    }

    /// The user whose `sessionid` cookie the request carries; anyone else is accepted as an
    /// anonymous user, since a ceiling checks nothing.
    pub fn caller(&self, headers: &HeaderMap) -> Arc<User> {
        let key = headers
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == "sessionid").then_some(v)
            });
        let sessions = self.sessions.read().unwrap_or_else(|e| e.into_inner());
        key.and_then(|k| sessions.get(k).cloned())
            .unwrap_or_else(|| self.anonymous.clone())
    }

    pub fn create_chat(
        &self,
        owner: Arc<User>,
        name: String,
        others: Vec<Arc<User>>,
    ) -> Result<Arc<Room>, Full> {
        let mut members = vec![owner.clone()];
        for user in others {
            if !members.iter().any(|m| m.id == user.id) {
                members.push(user);
            }
        }
        if members.len() > MAX_MEMBERS {
            return Err(Full("members"));
        }
        let mut chats = self.chats.write().unwrap_or_else(|e| e.into_inner());
        if chats.len() >= MAX_CHATS {
            return Err(Full("chats"));
        }
        let room = Arc::new(Room {
            id: self.next_chat.fetch_add(1, Ordering::Relaxed),
            name,
            owner: owner.id,
            members,
            created_at: timestamp(SystemTime::now()),
            state: Mutex::default(),
        });
        chats.insert(room.id, room.clone());
        Ok(room)
    }

    pub fn chat(&self, id: i64) -> Option<Arc<Room>> {
        let chats = self.chats.read().unwrap_or_else(|e| e.into_inner());
        chats.get(&id).cloned()
    }

    pub fn next_conn(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}

pub enum RegisterError {
    Taken,
    Full,
}

/// `2026-01-05T10:20:30.123456Z`: UTC, microseconds when there are any, as the server writes
/// timestamps.
pub fn timestamp(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let micros = since.subsec_micros();
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let day = secs % 86_400;
    let (h, min, s) = (day / 3600, day / 60 % 60, day % 60);
    if micros == 0 {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{micros:06}Z")
    }
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A ceiling server started by a scenario: this binary as `ceiling-server`, in a process of its
/// own.
pub struct Process {
    child: Child,
    /// Closing it tells the server to exit.
    stdin: Option<ChildStdin>,
    /// `http://127.0.0.1:PORT`
    pub url: String,
}

impl Process {
    /// Starts the ceiling of `kind` on a free loopback port and waits for its address.
    pub async fn spawn(kind: Kind, ws_queue: u32) -> Result<Process> {
        let exe = std::env::current_exe().context("finding this binary to start the ceiling")?;
        let mut child = Command::new(exe)
            .args([
                "ceiling-server",
                "--kind",
                kind.name(),
                "--bind",
                "127.0.0.1:0",
            ])
            .args(["--ws-queue", &ws_queue.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting the ceiling server")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("the ceiling's stdout")?;
        let mut line = String::new();
        let mut stdout = BufReader::new(stdout.take(256));
        let read = stdout.read_line(&mut line);
        match tokio::time::timeout(Duration::from_secs(10), read).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => bail!("the ceiling server exited before saying where it listens"),
            Err(_) => bail!("the ceiling server did not say where it listens within 10 s"),
        }
        let addr: SocketAddr = line
            .trim()
            .parse()
            .with_context(|| format!("the ceiling server printed {line:?}, not an address"))?;
        if !crate::target::is_loopback(addr.ip()) {
            bail!("the ceiling server listens on {addr}, not on loopback");
        }
        note!("ceiling ({}) listening on {addr}", kind.name());
        Ok(Process {
            child,
            stdin,
            url: format!("http://{addr}"),
        })
    }

    /// Stops the server: closes its stdin, then kills it if it has not exited within 5 s.
    pub async fn stop(mut self) {
        drop(self.stdin.take());
        let exited = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        if !matches!(exited, Ok(Ok(_))) {
            let _ = self.child.kill().await;
        }
    }
}

/// How a scenario's report names its throughput and latency.
pub struct Measure {
    pub kind: Kind,
    /// The JSON field of the throughput (`delivered_per_sec`, `requests_per_sec`).
    pub throughput: &'static str,
    /// Open loop: the throughput is the offered rate, so the p99s are compared too.
    pub open_loop: bool,
    /// Settings of the ceiling shown in its JSON object.
    pub settings: Value,
}

/// Runs `run` (the scenario, given a target URL) against a ceiling of `measure.kind` started for
/// it with `ws_queue` frames per socket, stops the ceiling, and returns `project` with the
/// ceiling's result attached (see [`attach`]).
pub async fn beside<F, Fut>(
    project: Report,
    measure: Measure,
    ws_queue: u32,
    run: F,
) -> Result<Report>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<Report>>,
{
    let server = Process::spawn(measure.kind, ws_queue).await?;
    let measured = run(server.url.clone()).await;
    server.stop().await;
    let measured = measured.context("measuring the ceiling")?;
    Ok(attach(project, measured, &measure))
}

/// The project's report with the ceiling's added: `ceiling` in the JSON (the ceiling's result
/// fields, its settings, `ratio`, and for open loop both p99s), and `= NN % of ceiling (X/s)` on
/// the summary line.
pub fn attach(project: Report, ceiling: Report, measure: &Measure) -> Report {
    let throughput = |report: &Value| report.get(measure.throughput).and_then(Value::as_f64);
    let p99 = |report: &Value| report.pointer("/latency/p99_us").and_then(Value::as_u64);
    let (ours, theirs) = (throughput(&project.json), throughput(&ceiling.json));
    let ratio = match (ours, theirs) {
        (Some(a), Some(b)) if b > 0.0 => Some((a / b * 10_000.0).round() / 10_000.0),
        _ => None,
    };
    let mut object = serde_json::Map::new();
    object.insert("kind".into(), json!(measure.kind.name()));
    if let Value::Object(settings) = &measure.settings {
        object.extend(settings.clone());
    }
    object.insert("ratio".into(), json!(ratio));
    let mut p99_text = String::new();
    if measure.open_loop {
        let (a, b) = (p99(&project.json), p99(&ceiling.json));
        object.insert("p99_us".into(), json!({ "project": a, "ceiling": b }));
        if let (Some(a), Some(b)) = (a, b) {
            p99_text = format!(
                "; p99 {} ms, ceiling's {} ms",
                crate::stats::ms(a),
                crate::stats::ms(b)
            );
        }
    }
    if let Value::Object(results) = ceiling.json {
        object.extend(
            results
                .into_iter()
                .filter(|(k, _)| !matches!(k.as_str(), "scenario" | "params" | "socket_targets")),
        );
    }
    // What went wrong on the ceiling makes its figure, and so the ratio, less of a ceiling.
    let mut troubles = Vec::new();
    for (field, name) in [
        ("lost", "lost"),
        ("closed_4008", "4008 closes"),
        ("error_count", "errors"),
    ] {
        if let Some(n) = object.get(field).and_then(Value::as_u64).filter(|n| *n > 0) {
            troubles.push(format!("{name} {n}"));
        }
    }
    if object.get("drained") == Some(&Value::Bool(false)) {
        troubles.push("drain timed out".into());
    }
    let troubles = match troubles.is_empty() {
        true => String::new(),
        false => format!(" (ceiling: {})", troubles.join(", ")),
    };
    let mut json = project.json;
    if let Value::Object(map) = &mut json {
        map.insert("ceiling".into(), Value::Object(object));
    }
    let share = match ratio {
        Some(r) => format!("{:.0} %", r * 100.0),
        None => "n/a".into(),
    };
    let human = format!(
        "{} = {share} of ceiling ({:.0}/s){p99_text}{troubles}",
        project.human,
        theirs.unwrap_or_default()
    );
    Report { json, human }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_written_as_the_server_writes_them() {
        let t = UNIX_EPOCH + Duration::from_micros(1_767_608_430_123_456);
        assert_eq!(timestamp(t), "2026-01-05T10:20:30.123456Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(t), "2000-02-29T00:00:00Z");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn pages_read_the_log_as_the_server_does() {
        let store = Store::new(4);
        let user = store.register("a".into(), String::new()).ok().unwrap();
        let room = store
            .create_chat(user.clone(), "c".into(), vec![])
            .ok()
            .unwrap();
        for i in 0..10 {
            room.append(&store, user.clone(), format!("m{i}"), |_, _| {});
        }
        let (page, more) = room.page(3, None, None);
        assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [8, 9, 10]);
        assert!(more);
        let (page, more) = room.page(3, Some(page[0].id), None);
        assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 6, 7]);
        assert!(more);
        let (page, more) = room.page(100, None, Some(page[2].id));
        assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [8, 9, 10]);
        assert!(!more);
    }

    #[test]
    fn the_ceiling_is_reported_beside_the_figure() {
        let report = |rate: f64, p99: u64, lost: u64| Report {
            json: json!({
                "scenario": "fanout",
                "params": {"chats": 1},
                "delivered_per_sec": rate,
                "latency": {"p99_us": p99},
                "lost": lost,
            }),
            human: format!("delivered {rate}"),
        };
        let measure = Measure {
            kind: Kind::Ws,
            throughput: "delivered_per_sec",
            open_loop: true,
            settings: json!({"ws_queue": 256}),
        };
        let joined = attach(report(50.0, 2000, 0), report(200.0, 1000, 3), &measure);
        let ceiling = &joined.json["ceiling"];
        assert_eq!(ceiling["ratio"], 0.25);
        assert_eq!(ceiling["kind"], "ws");
        assert_eq!(ceiling["ws_queue"], 256);
        assert_eq!(ceiling["delivered_per_sec"], 200.0);
        assert_eq!(ceiling["p99_us"], json!({"project": 2000, "ceiling": 1000}));
        assert!(ceiling.get("params").is_none());
        assert_eq!(joined.json["params"]["chats"], 1);
        assert_eq!(
            joined.human,
            "delivered 50 = 25 % of ceiling (200/s); p99 2.00 ms, ceiling's 1.00 ms \
             (ceiling: lost 3)"
        );
    }
}
