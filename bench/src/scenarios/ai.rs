//! `ai`: N users, each with one AI chat and one socket on `/ws/ai-chat/{id}/`, run T turns each
//! (a message, then the streamed reply, then the next message) against a fake OpenAI-compatible
//! provider served by this process on 127.0.0.1. The provider's pace is fixed (K chunks, D ms
//! apart), so what is measured is the server's side of streaming: calling the provider, parsing
//! its events, fanning deltas out to the socket and saving the reply.
//!
//! The server is told where the provider is by its own settings
//! (`OPENAI_BASE_URL=http://127.0.0.1:<port>/v1`), so the port is fixed with `--provider-port`.
//! The server only calls the provider when asked, so either may start first. One untimed turn
//! checks that the server really calls this provider before anything is measured.

use std::{
    io,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Args;
use futures_util::{stream, SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::{JoinHandle, JoinSet},
    time,
};
use tokio_tungstenite::tungstenite::Message as Frame;

use super::Report;
use crate::{
    client::{self, Ws, WsError},
    stats::{round2, Latency, Tally},
    target::Target,
    users, Common,
};

#[derive(Args, Debug)]
pub struct AiArgs {
    #[command(flatten)]
    pub common: Common,
    /// Conversations, each a distinct user with one AI chat and one socket.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub conversations: u32,
    /// Turns per conversation, one after the other.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub turns: u32,
    /// Port of the fake provider on 127.0.0.1. Start the server with
    /// OPENAI_API_KEY=bench OPENAI_BASE_URL=http://127.0.0.1:<port>/v1 OPENAI_MODEL=bench-model.
    /// Without it the port is ephemeral, which no running server can know.
    #[arg(long)]
    pub provider_port: Option<u16>,
    /// Content chunks per reply, each the text "tok ".
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub chunks: u32,
    /// Milliseconds between two chunks of a reply.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub chunk_delay_ms: u64,
    /// Server process whose CPU time (/proc/PID/stat) is read before and after the turns.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Seconds a turn may take, from its message to the final reply.
    #[arg(long, default_value_t = 60.0)]
    pub turn_timeout: f64,
    /// Seconds all the turns together may take; turns not done by then fail as `deadline`.
    #[arg(long, default_value_t = 900.0)]
    pub deadline: f64,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Sockets being opened at once during setup.
const CONNECT_CONCURRENCY: usize = 64;
/// What each turn sends.
const MESSAGE: &str = r#"{"type":"message","content":"hello"}"#;
/// The text of every content chunk.
const TOKEN: &str = "tok ";

/// `POST …/chat/completions` only; anything longer than this is refused.
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// A request must arrive whole within this.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// One write may wait this long for the server to read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

const RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
    Cache-Control: no-cache\r\nConnection: close\r\n\r\n";
const CONTENT_CHUNK: &[u8] = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok \"},\
    \"finish_reason\":null}]}\n\n";

/// An OpenAI-compatible chat-completions endpoint that streams a fixed reply at a fixed pace.
struct Provider {
    chunks: u32,
    delay: Duration,
    /// Requests answered with a stream.
    requests: AtomicU64,
    /// Requests refused: not a `POST …/chat/completions` with a JSON body, or never complete.
    refused: AtomicU64,
    /// Streams the server stopped reading before their end.
    broken: AtomicU64,
}

/// Stops the provider (and every stream it is writing) when dropped.
struct ProviderTask(JoinHandle<()>);

impl Drop for ProviderTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Provider {
    /// Accepts connections until the returned task is dropped.
    fn spawn(self: &Arc<Self>, listener: TcpListener) -> ProviderTask {
        let provider = self.clone();
        ProviderTask(tokio::spawn(async move {
            let mut streams = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((socket, _)) => {
                            streams.spawn(provider.clone().answer(socket));
                        }
                        // Out of files, most likely: let some streams end.
                        Err(_) => time::sleep(Duration::from_millis(10)).await,
                    },
                    Some(_) = streams.join_next(), if !streams.is_empty() => {}
                }
            }
        }))
    }

    async fn answer(self: Arc<Self>, mut socket: TcpStream) {
        let _ = socket.set_nodelay(true);
        let request = time::timeout(REQUEST_READ_TIMEOUT, read_request(&mut socket)).await;
        match request {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(status))) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
                     Connection: close\r\n\r\n{{}}"
                );
                let _ = write(&mut socket, response.as_bytes()).await;
                let _ = socket.shutdown().await;
                return;
            }
            Ok(Err(_)) | Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        if self.stream_reply(&mut socket).await.is_err() {
            self.broken.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let _ = time::timeout(WRITE_TIMEOUT, socket.shutdown()).await;
    }

    /// K content chunks D ms apart (the first at once), then the finish reason, the usage and
    /// `[DONE]`.
    async fn stream_reply(&self, socket: &mut TcpStream) -> io::Result<()> {
        write(socket, RESPONSE_HEAD).await?;
        let start = time::Instant::now();
        for i in 0..self.chunks {
            if i > 0 && !self.delay.is_zero() {
                time::sleep_until(start + self.delay * i).await;
            }
            write(socket, CONTENT_CHUNK).await?;
        }
        let finish = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        let usage = json!({
            "choices": [],
            "usage": {
                "prompt_tokens": 10,
                "completion_tokens": self.chunks,
                "total_tokens": 10 + self.chunks,
            },
        });
        let tail = format!("data: {finish}\n\ndata: {usage}\n\ndata: [DONE]\n\n");
        write(socket, tail.as_bytes()).await
    }
}

async fn write(socket: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    time::timeout(WRITE_TIMEOUT, socket.write_all(bytes))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

/// Reads one request, headers and `Content-Length` body. `Ok(Err(status))` is a request to
/// refuse with that status line.
async fn read_request(socket: &mut TcpStream) -> io::Result<Result<(), &'static str>> {
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Ok(Err("431 Request Header Fields Too Large"));
        }
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let Ok(head) = std::str::from_utf8(&buf[..head_end]) else {
        return Ok(Err("400 Bad Request"));
    };
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (method, path) = (request_line.next(), request_line.next().unwrap_or_default());
    let completions = method == Some("POST") && path.ends_with("/chat/completions");
    let mut length = None;
    for (name, value) in lines.filter_map(|line| line.split_once(':')) {
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Ok(Err("411 Length Required"));
        }
    }
    let Some(length) = length else {
        return Ok(Err("411 Length Required"));
    };
    if length > MAX_BODY_BYTES {
        return Ok(Err("413 Content Too Large"));
    }
    while buf.len() - head_end < length {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    if !completions {
        return Ok(Err("404 Not Found"));
    }
    let body = &buf[head_end..head_end + length];
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) if value.get("messages").is_some_and(|m| m.is_array()) => Ok(Ok(())),
        _ => Ok(Err("400 Bad Request")),
    }
}

/// The server frames a turn looks at.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AiFrame {
    AssistantDelta {
        message: DeltaBody,
    },
    AssistantMessage {
        message: ReplyBody,
    },
    Error {
        message: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct DeltaBody {
    id: i64,
    delta: String,
}

#[derive(Deserialize)]
struct ReplyBody {
    id: i64,
    content: String,
    finish_reason: Option<String>,
    usage: Option<UsageBody>,
}

#[derive(Deserialize)]
struct UsageBody {
    completion_tokens: Option<i64>,
}

#[derive(Default)]
struct Outcome {
    completed: u64,
    failures: Tally,
    error_frames: Tally,
    first_failure: Option<String>,
    deltas: u64,
    /// Final content not equal to the deltas joined, or deltas of another reply id.
    content_mismatches: u64,
    /// Final content not the provider's reply: the server is not using this provider.
    unexpected_replies: u64,
    /// `usage.completion_tokens` not the provider's count.
    usage_mismatches: u64,
    unparsed: u64,
    /// Completed turns only.
    first_delta: Latency,
    duration: Latency,
}

impl Outcome {
    fn fail(&mut self, kind: &str, n: u64, detail: impl FnOnce() -> String) {
        self.failures.add_n(kind, n);
        if n > 0 && self.first_failure.is_none() {
            self.first_failure = Some(format!("{kind}: {}", detail()));
        }
    }

    fn merge(&mut self, other: Outcome) {
        self.completed += other.completed;
        self.failures.merge(&other.failures);
        self.error_frames.merge(&other.error_frames);
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
        self.deltas += other.deltas;
        self.content_mismatches += other.content_mismatches;
        self.unexpected_replies += other.unexpected_replies;
        self.usage_mismatches += other.usage_mismatches;
        self.unparsed += other.unparsed;
        self.first_delta.merge(&other.first_delta);
        self.duration.merge(&other.duration);
    }
}

struct TurnFailure {
    kind: String,
    detail: String,
    /// The socket is still in step (the reply ended): the next turn may go on.
    usable: bool,
}

fn failure(kind: impl Into<String>, detail: impl Into<String>, usable: bool) -> TurnFailure {
    TurnFailure {
        kind: kind.into(),
        detail: detail.into(),
        usable,
    }
}

/// What the turns share.
struct Plan {
    turns: u32,
    chunks: u32,
    /// The reply the provider streams.
    expected: String,
    turn_timeout: Duration,
    deadline: time::Instant,
}

/// One message and its streamed reply, until the final `assistant_message` or `until`.
async fn turn(
    ws: &mut Ws,
    plan: &Plan,
    until: time::Instant,
    st: &mut Outcome,
) -> Result<(), TurnFailure> {
    let sent = Instant::now();
    match time::timeout_at(until, ws.send(Frame::text(MESSAGE))).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(failure("send", e.to_string(), false)),
        Err(_) => return Err(failure("timeout", "the message could not be sent", false)),
    }
    let max_frames = u64::from(plan.chunks) + 1000;
    let mut frames = 0u64;
    let mut first_delta = None;
    let mut text = String::with_capacity(plan.expected.len());
    let mut deltas = 0u64;
    let mut reply_id = None;
    let mut ids_agree = true;
    let reply = loop {
        let body = match time::timeout_at(until, ws.next()).await {
            Err(_) => {
                return Err(failure(
                    "timeout",
                    format!("no final message in time ({deltas} deltas)"),
                    false,
                ))
            }
            Ok(None) => return Err(failure("broken", "the connection ended", false)),
            Ok(Some(Err(e))) => return Err(failure("broken", e.to_string(), false)),
            Ok(Some(Ok(Frame::Text(body)))) => body,
            Ok(Some(Ok(Frame::Close(close)))) => {
                let code = close.map_or("none".into(), |c| u16::from(c.code).to_string());
                return Err(failure(
                    format!("closed_{code}"),
                    format!("closed by the server with code {code}"),
                    false,
                ));
            }
            Ok(Some(Ok(_))) => continue,
        };
        frames += 1;
        if frames > max_frames {
            return Err(failure(
                "too_many_frames",
                format!("more than {max_frames} frames for one reply"),
                false,
            ));
        }
        match serde_json::from_str::<AiFrame>(&body) {
            Ok(AiFrame::AssistantDelta { message }) => {
                first_delta.get_or_insert_with(Instant::now);
                deltas += 1;
                st.deltas += 1;
                ids_agree &= *reply_id.get_or_insert(message.id) == message.id;
                text.push_str(&message.delta);
            }
            Ok(AiFrame::AssistantMessage { message }) => break message,
            Ok(AiFrame::Error { message }) => {
                let detail = message.chars().take(200).collect::<String>();
                st.error_frames.add(detail.clone());
                return Err(failure("error_frame", detail, true));
            }
            Ok(AiFrame::Other) => {}
            Err(_) => st.unparsed += 1,
        }
    };
    let done = Instant::now();
    if reply.content != text || reply_id.is_some_and(|id| id != reply.id) || !ids_agree {
        st.content_mismatches += 1;
    }
    if reply.content != plan.expected {
        st.unexpected_replies += 1;
    }
    let counted = reply.usage.and_then(|u| u.completion_tokens);
    if counted != Some(i64::from(plan.chunks)) {
        st.usage_mismatches += 1;
    }
    let reason = reply.finish_reason.unwrap_or_default();
    if reason != "stop" {
        if reason == "error" {
            // A reply cut short by a provider error is followed by its error frame: take it
            // here, not as the answer to the next message.
            let next = time::timeout(Duration::from_secs(2), ws.next()).await;
            if let Ok(Some(Ok(Frame::Text(body)))) = next {
                if let Ok(AiFrame::Error { message }) = serde_json::from_str(&body) {
                    st.error_frames
                        .add(message.chars().take(200).collect::<String>());
                }
            }
        }
        return Err(failure(
            format!("finish_{reason}"),
            format!("the reply ended with finish_reason {reason:?} after {deltas} deltas"),
            true,
        ));
    }
    st.first_delta
        .record(first_delta.unwrap_or(done).duration_since(sent));
    st.duration.record(done - sent);
    Ok(())
}

/// Runs the plan's turns on one socket, each bounded by the turn timeout and the deadline.
async fn converse(mut ws: Ws, plan: Arc<Plan>) -> Outcome {
    let mut st = Outcome::default();
    for t in 0..plan.turns {
        let now = time::Instant::now();
        if now >= plan.deadline {
            st.fail("deadline", u64::from(plan.turns - t), || {
                "the deadline passed before this turn".into()
            });
            break;
        }
        let until = (now + plan.turn_timeout).min(plan.deadline);
        match turn(&mut ws, &plan, until, &mut st).await {
            Ok(()) => st.completed += 1,
            Err(f) => {
                let kind = if f.kind == "timeout" && until == plan.deadline {
                    "deadline"
                } else {
                    f.kind.as_str()
                };
                st.fail(kind, 1, || f.detail.clone());
                if !f.usable {
                    let rest = u64::from(plan.turns - t - 1);
                    st.fail("abandoned", rest, || {
                        "an earlier turn left the socket unusable".into()
                    });
                    break;
                }
            }
        }
    }
    let _ = time::timeout(Duration::from_secs(1), ws.close(None)).await;
    st
}

/// utime + stime of a process (all its threads), in seconds, from /proc/PID/stat.
fn cpu_seconds(pid: &str) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may hold spaces and parentheses: count fields after its end.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("unexpected {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3; utime and stime are fields 14 and 15, in clock ticks.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let (Some(utime), Some(stime)) = (field(14), field(15)) else {
        bail!("no utime and stime in {path}");
    };
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks <= 0 {
        bail!("sysconf(_SC_CLK_TCK) failed");
    }
    Ok((utime + stime) as f64 / ticks as f64)
}

fn server_cpu(pid: Option<u32>) -> Result<Option<f64>> {
    pid.map(|p| cpu_seconds(&p.to_string())).transpose()
}

/// How long the provider itself takes to stream a reply.
fn provider_reply_ms(args: &AiArgs) -> u64 {
    u64::from(args.chunks.saturating_sub(1)) * args.chunk_delay_ms
}

fn provider_hint(port: u16) -> String {
    format!(
        "start the server with OPENAI_API_KEY=bench OPENAI_BASE_URL=http://127.0.0.1:{port}/v1 \
         OPENAI_MODEL=bench-model"
    )
}

pub async fn run(args: AiArgs) -> Result<Report> {
    if !(args.turn_timeout > 0.0 && args.turn_timeout <= 3600.0) {
        bail!("--turn-timeout must be in (0, 3600] seconds");
    }
    if !(args.deadline > 0.0 && args.deadline <= 86_400.0) {
        bail!("--deadline must be in (0, 86400] seconds");
    }
    let conversations = args.conversations as usize;
    let target = Arc::new(Target::resolve(&args.common.target).await?);
    server_cpu(args.server_pid)?;

    let listener = TcpListener::bind(("127.0.0.1", args.provider_port.unwrap_or(0)))
        .await
        .with_context(|| {
            format!(
                "binding the provider to 127.0.0.1:{}",
                args.provider_port.unwrap_or(0)
            )
        })?;
    let port = listener.local_addr()?.port();
    let provider = Arc::new(Provider {
        chunks: args.chunks,
        delay: Duration::from_millis(args.chunk_delay_ms),
        requests: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        broken: AtomicU64::new(0),
    });
    let _provider_task = provider.spawn(listener);
    note!("provider listening on http://127.0.0.1:{port}/v1");

    let prefix = users::run_prefix();
    note!("registering {conversations} users as {prefix}_*");
    let sessions = users::create(
        &target,
        &prefix,
        conversations,
        args.common.setup_concurrency as usize,
    )
    .await?;
    let mut chats = Vec::with_capacity(conversations);
    for (i, s) in sessions.iter().enumerate() {
        let id = s
            .create_ai_chat(&format!("{prefix} ai {i}"))
            .await
            .context("creating an AI chat")?;
        chats.push((id, s.cookie.clone()));
    }
    drop(sessions);

    note!("opening {conversations} sockets");
    let opened: Vec<Result<Ws, WsError>> = stream::iter(chats)
        .map(|(id, cookie)| {
            let target = target.clone();
            async move {
                client::connect_ws_path(
                    &target,
                    &client::extended(&format!("/ws/ai-chat/{id}/"), ""),
                    &cookie,
                    None,
                    client::ws_config(false),
                    CONNECT_TIMEOUT,
                )
                .await
            }
        })
        .buffered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let mut total = Outcome::default();
    let mut sockets = Vec::with_capacity(conversations);
    for result in opened {
        match result {
            Ok(ws) => sockets.push(ws),
            Err(e) => total.fail(&format!("socket_{}", e.kind), u64::from(args.turns), || {
                e.to_string()
            }),
        }
    }
    if sockets.is_empty() {
        bail!(
            "no socket opened: {}",
            total.first_failure.unwrap_or_default()
        );
    }

    let mut plan = Plan {
        turns: args.turns,
        chunks: args.chunks,
        expected: TOKEN.repeat(args.chunks as usize),
        turn_timeout: Duration::from_secs_f64(args.turn_timeout),
        deadline: time::Instant::now() + Duration::from_secs_f64(args.deadline),
    };

    // One untimed turn: is the server configured, and does it call this provider?
    note!("probe turn");
    let mut probe = Outcome::default();
    let until = time::Instant::now() + plan.turn_timeout;
    if let Err(f) = turn(&mut sockets[0], &plan, until, &mut probe).await {
        let hint = if f.kind == "error_frame" {
            provider_hint(port)
        } else {
            format!("a reply takes at least {} ms", provider_reply_ms(&args))
        };
        bail!("the probe turn failed ({}: {}); {hint}", f.kind, f.detail);
    }
    if provider.requests.load(Ordering::Relaxed) == 0 || probe.unexpected_replies > 0 {
        bail!(
            "the server answered without calling the provider on port {port}; {}",
            provider_hint(port)
        );
    }
    let requests_before = provider.requests.load(Ordering::Relaxed);
    let refused_before = provider.refused.load(Ordering::Relaxed);
    let broken_before = provider.broken.load(Ordering::Relaxed);

    plan.deadline = time::Instant::now() + Duration::from_secs_f64(args.deadline);
    let plan = Arc::new(plan);
    let cpu_before = server_cpu(args.server_pid)?;
    let bench_cpu_before = cpu_seconds("self")?;
    note!(
        "running {} conversations of {} turns",
        sockets.len(),
        args.turns
    );
    let started = Instant::now();
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|ws| tokio::spawn(converse(ws, plan.clone())))
        .collect();
    for task in tasks {
        total.merge(task.await.context("a conversation task panicked")?);
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu_after = server_cpu(args.server_pid)?;
    let bench_cpu = cpu_seconds("self")? - bench_cpu_before;

    let planned = conversations as u64 * u64::from(args.turns);
    let failed = total.failures.total();
    let tokens_per_sec = total.deltas as f64 / wall.max(1e-9);
    let turns_per_sec = total.completed as f64 / wall.max(1e-9);
    let server_cpu = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) => Some(a - b),
        _ => None,
    };
    let cpu_us_per_token = server_cpu
        .filter(|_| total.deltas > 0)
        .map(|s| round2(s * 1e6 / total.deltas as f64));
    let cpu_us_per_turn = server_cpu
        .filter(|_| total.completed > 0)
        .map(|s| round2(s * 1e6 / total.completed as f64));
    let first_delta = total.first_delta.summary();
    let duration = total.duration.summary();
    let provider_reply_ms = provider_reply_ms(&args);
    let json = json!({
        "scenario": "ai",
        "target": target.base.as_str(),
        "params": {
            "conversations": conversations,
            "turns": args.turns,
            "chunks": args.chunks,
            "chunk_delay_ms": args.chunk_delay_ms,
            "provider_port": port,
            "turn_timeout_secs": plan.turn_timeout.as_secs_f64(),
            "deadline_secs": args.deadline,
            "server_pid": args.server_pid,
        },
        "turns_planned": planned,
        "turns_completed": total.completed,
        "turns_failed": failed,
        "failures": total.failures,
        "first_failure": total.first_failure,
        "error_frames": total.error_frames,
        "deltas": total.deltas,
        "deltas_expected": planned * u64::from(args.chunks),
        "wall_secs": round2(wall),
        "tokens_per_sec": round2(tokens_per_sec),
        "turns_per_sec": round2(turns_per_sec),
        "provider_reply_ms": provider_reply_ms,
        "time_to_first_delta": first_delta,
        "turn_duration": duration,
        "content_mismatches": total.content_mismatches,
        "unexpected_replies": total.unexpected_replies,
        "usage_mismatches": total.usage_mismatches,
        "unparsed_frames": total.unparsed,
        "provider_requests": provider.requests.load(Ordering::Relaxed) - requests_before,
        "provider_refused": provider.refused.load(Ordering::Relaxed) - refused_before,
        "provider_broken_streams": provider.broken.load(Ordering::Relaxed) - broken_before,
        "server_cpu_seconds": server_cpu.map(round3),
        "cpu_us_per_token": cpu_us_per_token,
        "cpu_us_per_turn": cpu_us_per_turn,
        "bench_cpu_seconds": round3(bench_cpu),
    });
    let cpu = match (server_cpu, cpu_us_per_token, cpu_us_per_turn) {
        (Some(s), Some(tok), Some(turn)) => format!(
            "; server CPU {s:.2} s ({tok:.1} µs/token, {:.2} ms/turn)",
            turn / 1000.0
        ),
        (Some(s), _, _) => format!("; server CPU {s:.2} s"),
        _ => String::new(),
    };
    let human = format!(
        "ai: {}/{planned} turns ok over {conversations} conversations in {wall:.1}s, {} deltas \
         ({tokens_per_sec:.0} tokens/s); first delta {}; turn p50 {} ms, p99 {} ms \
         (provider alone {provider_reply_ms} ms); mismatches {}; failures: {}{cpu}",
        total.completed,
        total.deltas,
        first_delta.brief(),
        crate::stats::ms(duration.p50_us),
        crate::stats::ms(duration.p99_us),
        total.content_mismatches,
        total.failures.brief(),
    );
    Ok(Report { json, human })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
