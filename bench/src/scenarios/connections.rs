//! `connections`: ramps to N authenticated idle sockets, holds them, then closes them.
//!
//! Sockets share a few users and chats: what is measured is the per-socket cost, not login or
//! presence. A process can hold at most its open-file limit of sockets, so `--processes P`
//! re-runs this binary P times (hidden `connections-worker` subcommand): each child reads its
//! share as one JSON line on stdin, reports `{"opened":…}` once its ramp is done, holds until the
//! parent writes `close` (or a deadline passes), then reports `{"closed":…}` and exits.
//! `--source-ips` spreads sockets over several loopback source addresses, since one address has
//! only ~28k ephemeral ports towards the server's port.

use std::{
    net::IpAddr,
    process::Stdio,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Args;
use futures_util::{stream, SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::Command,
    sync::watch,
    task::JoinHandle,
    time,
};
use tokio_tungstenite::tungstenite::Message as Frame;

use super::Report;
use crate::{
    client::{self, Ws},
    os,
    stats::{round2, Tally},
    target::{self, Target},
    users, Common,
};

#[derive(Args, Debug)]
pub struct ConnectionsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Sockets to open in total.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub count: u32,
    /// Users the sockets are spread over (each registered and logged in once).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub users: u32,
    /// Chats the sockets are spread over; every user is in every chat.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub chats: u32,
    /// Server process whose VmRSS is read before, while and after the sockets are held.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Loopback source addresses for the client sockets, used round-robin
    /// (e.g. 127.0.0.2,127.0.0.3).
    #[arg(long, value_delimiter = ',')]
    pub source_ips: Vec<IpAddr>,
    /// Processes to spread the sockets over; each holds at most its open-file limit.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub processes: u32,
    /// Seconds to hold the sockets once all are open.
    #[arg(long, default_value_t = 5.0)]
    pub hold: f64,
    /// Opening attempts in flight per process.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub ramp_concurrency: u32,
    /// Most seconds the ramp may take; attempts not started by then count as `ramp_timeout`.
    #[arg(long, default_value_t = 300.0)]
    pub ramp_timeout: f64,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Files a process keeps for itself besides its sockets (stdio, epoll, HTTP clients, …).
const SPARE_FILES: u64 = 100;
/// How long a child waits for its parent's `close` beyond the planned hold.
const RELEASE_GRACE: Duration = Duration::from_secs(120);

/// One process's share of the sockets.
#[derive(Debug, Serialize, Deserialize)]
struct WorkerSpec {
    target: String,
    /// Cookie header per user.
    cookies: Vec<String>,
    chat_ids: Vec<i64>,
    /// Global index of this share's first socket, which fixes its user, chat and source.
    first: usize,
    count: usize,
    source_ips: Vec<IpAddr>,
    ramp_concurrency: usize,
    ramp_timeout_ms: u64,
    /// A worker never holds longer than this, parent or not.
    max_hold_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct OpenReport {
    attempted: usize,
    opened: usize,
    failures: Tally,
    first_failure: Option<String>,
    elapsed_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct HoldReport {
    /// Sockets still open when the release came.
    alive_at_release: usize,
    /// Sockets the server closed while held, by close code.
    closed_by_server: Tally,
    /// Sockets that broke while held, by kind.
    dropped: Tally,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WorkerLine {
    Opened(OpenReport),
    Closed(HoldReport),
}

enum HoldEnd {
    Released,
    ServerClosed(Option<u16>),
    Dropped(String),
}

/// Sockets being held, each read by its own task (reading also answers the server's pings).
struct Held {
    tasks: Vec<JoinHandle<HoldEnd>>,
    release: watch::Sender<bool>,
    alive: Arc<AtomicUsize>,
}

async fn hold_one(
    mut ws: Ws,
    mut release: watch::Receiver<bool>,
    alive: Arc<AtomicUsize>,
) -> HoldEnd {
    let end = loop {
        tokio::select! {
            _ = release.wait_for(|r| *r) => break HoldEnd::Released,
            frame = ws.next() => match frame {
                Some(Ok(Frame::Close(close))) => break HoldEnd::ServerClosed(close.map(|c| c.code.into())),
                Some(Ok(_)) => {}
                Some(Err(e)) => break HoldEnd::Dropped(format!("read_{}", error_kind(&e))),
                None => break HoldEnd::Dropped("eof".into()),
            },
        }
    };
    alive.fetch_sub(1, Ordering::Relaxed);
    if matches!(end, HoldEnd::Released) {
        let _ = time::timeout(Duration::from_secs(2), ws.close(None)).await;
    } else {
        let _ = time::timeout(Duration::from_secs(1), ws.flush()).await;
    }
    end
}

fn error_kind(e: &tokio_tungstenite::tungstenite::Error) -> &'static str {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::ConnectionClosed | E::AlreadyClosed => "closed",
        E::Io(_) => "io",
        E::Protocol(_) => "protocol",
        _ => "other",
    }
}

async fn open_all(spec: &WorkerSpec, target: Arc<Target>) -> (OpenReport, Held) {
    let (release, release_rx) = watch::channel(false);
    let alive = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_millis(spec.ramp_timeout_ms);
    let users = spec.cookies.len().max(1);
    let results: Vec<Result<JoinHandle<HoldEnd>, client::WsError>> =
        stream::iter(spec.first..spec.first + spec.count)
            .map(|g| {
                let target = target.clone();
                let release_rx = release_rx.clone();
                let alive = alive.clone();
                let cookie = &spec.cookies[g % users];
                let chat_id = spec.chat_ids[(g / users) % spec.chat_ids.len()];
                let source = (!spec.source_ips.is_empty())
                    .then(|| spec.source_ips[g % spec.source_ips.len()]);
                async move {
                    if Instant::now() >= deadline {
                        return Err(client::WsError {
                            kind: "ramp_timeout".into(),
                            detail: "the ramp ran out of time".into(),
                        });
                    }
                    let ws = client::connect_ws(
                        &target,
                        chat_id,
                        "",
                        cookie,
                        source,
                        client::ws_config(true),
                        CONNECT_TIMEOUT,
                    )
                    .await?;
                    alive.fetch_add(1, Ordering::Relaxed);
                    Ok(tokio::spawn(hold_one(ws, release_rx, alive)))
                }
            })
            .buffer_unordered(spec.ramp_concurrency.max(1))
            .collect()
            .await;
    let mut report = OpenReport {
        attempted: spec.count,
        ..OpenReport::default()
    };
    let mut tasks = Vec::with_capacity(results.len());
    for result in results {
        match result {
            Ok(task) => tasks.push(task),
            Err(e) => {
                report.failures.add(e.kind.clone());
                report.first_failure.get_or_insert(e.to_string());
            }
        }
    }
    report.opened = tasks.len();
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    (
        report,
        Held {
            tasks,
            release,
            alive,
        },
    )
}

async fn close_all(held: Held) -> HoldReport {
    let mut report = HoldReport {
        alive_at_release: held.alive.load(Ordering::Relaxed),
        ..HoldReport::default()
    };
    let _ = held.release.send(true);
    for task in held.tasks {
        match task.await {
            Ok(HoldEnd::Released) => {}
            Ok(HoldEnd::ServerClosed(code)) => report
                .closed_by_server
                .add(code.map_or("none".into(), |c| c.to_string())),
            Ok(HoldEnd::Dropped(kind)) => report.dropped.add(kind),
            Err(_) => report.dropped.add("task_panicked"),
        }
    }
    report
}

/// The hidden `connections-worker` subcommand: one share of the sockets, driven over stdio.
pub async fn worker() -> Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let spec: WorkerSpec = serde_json::from_str(
        &lines
            .next_line()
            .await?
            .context("no worker spec on stdin")?,
    )
    .context("reading the worker spec")?;
    os::raise_nofile_limit()?;
    let target = Arc::new(Target::resolve(&spec.target).await?);
    target::check_sources(&target, &spec.source_ips)?;
    let (opened, held) = open_all(&spec, target).await;
    println!("{}", serde_json::to_string(&WorkerLine::Opened(opened))?);
    // Any line, or the parent going away, releases the sockets; the deadline bounds the wait.
    let max_hold = Duration::from_millis(spec.max_hold_ms);
    let _ = time::timeout(max_hold, lines.next_line()).await;
    let closed = close_all(held).await;
    println!("{}", serde_json::to_string(&WorkerLine::Closed(closed))?);
    Ok(())
}

struct Child {
    process: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Child {
    async fn spawn(spec: &WorkerSpec) -> Result<Child> {
        let exe = std::env::current_exe().context("locating this executable")?;
        let mut process = Command::new(exe)
            .arg("connections-worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting a worker process")?;
        let mut stdin = process.stdin.take().context("worker stdin")?;
        let stdout = process.stdout.take().context("worker stdout")?;
        stdin
            .write_all(format!("{}\n", serde_json::to_string(spec)?).as_bytes())
            .await?;
        stdin.flush().await?;
        Ok(Child {
            process,
            stdin,
            lines: BufReader::new(stdout).lines(),
        })
    }

    async fn read(&mut self, within: Duration) -> Result<WorkerLine> {
        let line = time::timeout(within, self.lines.next_line())
            .await
            .context("a worker did not report in time")??
            .context("a worker exited without reporting")?;
        serde_json::from_str(&line).with_context(|| format!("bad worker line {line:?}"))
    }
}

fn rss(pid: Option<u32>) -> Result<Option<u64>> {
    pid.map(os::rss_kib).transpose()
}

pub async fn run(args: ConnectionsArgs) -> Result<Report> {
    let count = args.count as usize;
    let processes = args.processes as usize;
    if !(0.0..=3600.0).contains(&args.hold) {
        bail!("--hold must be between 0 and 3600 seconds");
    }
    if !(1.0..=3600.0).contains(&args.ramp_timeout) {
        bail!("--ramp-timeout must be between 1 and 3600 seconds");
    }
    let hold = Duration::from_secs_f64(args.hold);
    let ramp_timeout = Duration::from_secs_f64(args.ramp_timeout);
    let nofile = os::raise_nofile_limit()?;
    let per_process = count.div_ceil(processes) as u64;
    if per_process + SPARE_FILES > nofile {
        bail!(
            "{per_process} sockets per process exceeds the open-file limit ({nofile}); \
             use --processes {}",
            (count as u64).div_ceil(nofile.saturating_sub(SPARE_FILES).max(1))
        );
    }
    let target = Arc::new(Target::resolve(&args.common.target).await?);
    target::check_sources(&target, &args.source_ips)?;
    rss(args.server_pid)?;

    let prefix = users::run_prefix();
    let user_count = (args.users as usize).min(count);
    note!("registering {user_count} users as {prefix}_*");
    let sessions = users::create(
        &target,
        &prefix,
        user_count,
        args.common.setup_concurrency as usize,
    )
    .await?;
    let others: Vec<i64> = sessions[1..].iter().map(|s| s.user.id).collect();
    let mut chat_ids = Vec::new();
    for c in 0..args.chats {
        chat_ids.push(
            sessions[0]
                .create_chat(&format!("{prefix} connections {c}"), &others)
                .await
                .context("creating a chat")?,
        );
    }
    let cookies: Vec<String> = sessions.iter().map(|s| s.cookie.clone()).collect();
    // No HTTP connection of ours should count against the server's memory.
    drop(sessions);
    time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss(args.server_pid)?;

    let spec_for = |first: usize, n: usize| WorkerSpec {
        target: args.common.target.clone(),
        cookies: cookies.clone(),
        chat_ids: chat_ids.clone(),
        first,
        count: n,
        source_ips: args.source_ips.clone(),
        ramp_concurrency: args.ramp_concurrency as usize,
        ramp_timeout_ms: ramp_timeout.as_millis() as u64,
        max_hold_ms: (hold + RELEASE_GRACE).as_millis() as u64,
    };
    let shares: Vec<(usize, usize)> = (0..processes)
        .map(|p| {
            let first = p * count / processes;
            (first, (p + 1) * count / processes - first)
        })
        .filter(|(_, n)| *n > 0)
        .collect();

    note!("opening {count} sockets over {} process(es)", shares.len());
    let ramp_started = Instant::now();
    let mut opened = Vec::new();
    let mut held = None;
    let mut children = Vec::new();
    if shares.len() == 1 {
        let (report, h) = open_all(&spec_for(0, count), target.clone()).await;
        opened.push(report);
        held = Some(h);
    } else {
        for (first, n) in &shares {
            children.push(Child::spawn(&spec_for(*first, *n)).await?);
        }
        for child in &mut children {
            match child.read(ramp_timeout + Duration::from_secs(30)).await? {
                WorkerLine::Opened(report) => opened.push(report),
                WorkerLine::Closed(_) => bail!("a worker closed before reporting its ramp"),
            }
        }
    }
    let ramp_secs = ramp_started.elapsed().as_secs_f64();
    let opened_total: usize = opened.iter().map(|r| r.opened).sum();
    let mut failures = Tally::default();
    let mut first_failure = None;
    for r in &opened {
        failures.merge(&r.failures);
        if first_failure.is_none() {
            first_failure = r.first_failure.clone();
        }
    }
    note!(
        "{opened_total} open after {ramp_secs:.1}s; holding {:.1}s",
        hold.as_secs_f64()
    );

    // Give the server a moment to settle before reading its memory.
    time::sleep(Duration::from_secs(1).min(hold)).await;
    let rss_open = rss(args.server_pid)?;
    time::sleep(hold.saturating_sub(Duration::from_secs(1))).await;
    let rss_held = rss(args.server_pid)?;

    let mut holds = Vec::new();
    if let Some(h) = held {
        holds.push(close_all(h).await);
    }
    for child in &mut children {
        let _ = child.stdin.write_all(b"close\n").await;
        let _ = child.stdin.flush().await;
    }
    for child in &mut children {
        match child.read(Duration::from_secs(60)).await? {
            WorkerLine::Closed(report) => holds.push(report),
            WorkerLine::Opened(_) => bail!("a worker reported its ramp twice"),
        }
    }
    for child in &mut children {
        if time::timeout(Duration::from_secs(10), child.process.wait())
            .await
            .is_err()
        {
            let _ = child.process.kill().await;
        }
    }
    time::sleep(Duration::from_secs(1)).await;
    let rss_after = rss(args.server_pid)?;

    let alive: usize = holds.iter().map(|h| h.alive_at_release).sum();
    let mut closed_by_server = Tally::default();
    let mut dropped = Tally::default();
    for h in &holds {
        closed_by_server.merge(&h.closed_by_server);
        dropped.merge(&h.dropped);
    }
    let bytes_per_socket = match (rss_before, rss_held) {
        (Some(b), Some(h)) if alive > 0 => {
            Some(((h as f64 - b as f64) * 1024.0 / alive as f64).round())
        }
        _ => None,
    };
    let open_rate = opened_total as f64 / ramp_secs.max(1e-9);
    let json = json!({
        "scenario": "connections",
        "target": target.base.as_str(),
        "params": {
            "count": count,
            "users": user_count,
            "chats": args.chats,
            "processes": shares.len(),
            "source_ips": args.source_ips,
            "hold_secs": hold.as_secs_f64(),
            "ramp_concurrency": args.ramp_concurrency,
            "server_pid": args.server_pid,
        },
        "opened": opened_total,
        "failed": failures.total(),
        "failures": failures,
        "first_failure": first_failure,
        "ramp_secs": round2(ramp_secs),
        "opened_per_sec": round2(open_rate),
        "alive_at_release": alive,
        "closed_by_server": closed_by_server,
        "dropped": dropped,
        "server_rss_kib": {
            "before": rss_before,
            "open": rss_open,
            "held": rss_held,
            "after_close": rss_after,
        },
        "server_bytes_per_socket": bytes_per_socket,
        "client_nofile_limit": nofile,
    });
    let memory = match (rss_before, rss_held, bytes_per_socket) {
        (Some(b), Some(h), Some(per)) => {
            format!(
                "; server RSS {} → {} MiB, {per:.0} B/socket",
                b / 1024,
                h / 1024
            )
        }
        _ => String::new(),
    };
    let human = format!(
        "connections: {opened_total}/{count} open in {ramp_secs:.1}s ({open_rate:.0}/s), \
         {alive} still open after {:.0}s, failures: {}, closed by server: {}{memory}",
        hold.as_secs_f64(),
        failures.brief(),
        closed_by_server.brief(),
    );
    Ok(Report { json, human })
}
