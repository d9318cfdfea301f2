//! `rest`: K logged-in clients, each alternating `send_message` and the default messages page,
//! closed loop (one request at a time per client, over its own keep-alive connection).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;

use super::Report;
use crate::{
    ceiling,
    client::Session,
    stats::{round2, Latency, Tally},
    target::Target,
    users, Common,
};

#[derive(Args, Debug)]
pub struct RestArgs {
    #[command(flatten)]
    pub common: Common,
    /// Concurrent clients, each a distinct user. Sends are limited per user and chat by the
    /// server's MRM_MESSAGES_PER_SECOND (20 by default, which turns most sends into 429s).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub clients: u32,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// All clients post to one shared chat instead of one chat each.
    #[arg(long)]
    pub shared_chat: bool,
    /// After measuring the target, run the identical load against a bare HTTP server answering
    /// the same JSON from memory (no accounts, no storage; see `ceiling-server`) and report it
    /// as `ceiling`, with the ratio of the two.
    #[arg(long)]
    pub ceiling: bool,
}

/// No client makes more requests than this, however fast the server is.
const MAX_REQUESTS_PER_CLIENT: u64 = 10_000_000;

#[derive(Default)]
struct ClientStats {
    send: Latency,
    list: Latency,
    errors: Tally,
    first_error: Option<String>,
}

async fn client_loop(
    session: Session,
    chat_id: i64,
    n: usize,
    window_start: Instant,
    end: Instant,
) -> ClientStats {
    let mut st = ClientStats::default();
    for i in 0..MAX_REQUESTS_PER_CLIENT {
        if Instant::now() >= end {
            break;
        }
        let sending = i % 2 == 0;
        let started = Instant::now();
        let result = if sending {
            session
                .send_message(chat_id, &format!("rest {n} {i}"))
                .await
                .map(drop)
        } else {
            session.messages(chat_id, "").await.map(drop)
        };
        let done = Instant::now();
        let measured = done >= window_start && done < end;
        match result {
            Ok(()) if measured => {
                let hist = if sending { &mut st.send } else { &mut st.list };
                hist.record(done - started);
            }
            Ok(()) => {}
            Err(e) => {
                if measured {
                    st.errors.add(e.kind());
                }
                st.first_error.get_or_insert_with(|| e.to_string());
                // Do not spin on a server that refuses instantly.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    st
}

pub async fn run(args: RestArgs) -> Result<Report> {
    let report = measure(&args, &args.common.target).await?;
    if !args.ceiling {
        return Ok(report);
    }
    note!("measuring the ceiling: the same load against a bare HTTP server");
    let bare = ceiling::Measure {
        kind: ceiling::Kind::Http,
        throughput: "requests_per_sec",
        open_loop: false,
        settings: json!({}),
    };
    // The queue is the server's default; no socket is opened.
    ceiling::beside(report, bare, 256, |url| async move {
        measure(&args, &url).await
    })
    .await
}

/// One run of the scenario against `target_url`.
async fn measure(args: &RestArgs, target_url: &str) -> Result<Report> {
    if !(args.duration > 0.0 && args.duration <= 3600.0) {
        bail!("--duration must be in (0, 3600] seconds");
    }
    if !(0.0..=600.0).contains(&args.warmup) {
        bail!("--warmup must be between 0 and 600 seconds");
    }
    let duration = Duration::from_secs_f64(args.duration);
    let warmup = Duration::from_secs_f64(args.warmup);
    let clients = args.clients as usize;
    let target = Arc::new(Target::resolve(target_url).await?);
    let prefix = users::run_prefix();
    note!("registering {clients} users as {prefix}_*");
    let sessions = users::create(
        &target,
        &prefix,
        clients,
        args.common.setup_concurrency as usize,
    )
    .await?;

    let mut chat_ids = Vec::with_capacity(clients);
    if args.shared_chat {
        let others: Vec<i64> = sessions[1..].iter().map(|s| s.user.id).collect();
        let id = sessions[0]
            .create_chat(&format!("{prefix} rest shared"), &others)
            .await
            .context("creating the shared chat")?;
        chat_ids.resize(clients, id);
    } else {
        for (i, s) in sessions.iter().enumerate() {
            chat_ids.push(
                s.create_chat(&format!("{prefix} rest {i}"), &[])
                    .await
                    .context("creating a chat")?,
            );
        }
    }

    let window_start = Instant::now() + warmup;
    let end = window_start + duration;
    note!("running {clients} clients");
    let tasks: Vec<_> = sessions
        .into_iter()
        .zip(chat_ids)
        .enumerate()
        .map(|(n, (s, chat))| tokio::spawn(client_loop(s, chat, n, window_start, end)))
        .collect();
    let mut send = Latency::default();
    let mut list = Latency::default();
    let mut all = Latency::default();
    let mut errors = Tally::default();
    let mut first_error = None;
    for task in tasks {
        let st = task.await.context("a client task panicked")?;
        send.merge(&st.send);
        list.merge(&st.list);
        errors.merge(&st.errors);
        if first_error.is_none() {
            first_error = st.first_error;
        }
    }
    all.merge(&send);
    all.merge(&list);
    let (send, list, all) = (send.summary(), list.summary(), all.summary());
    let secs = duration.as_secs_f64();
    let rps = all.count as f64 / secs;
    let json = json!({
        "scenario": "rest",
        "target": target.base.as_str(),
        "params": {
            "clients": clients,
            "duration_secs": secs,
            "warmup_secs": warmup.as_secs_f64(),
            "shared_chat": args.shared_chat,
        },
        "requests": all.count,
        "requests_per_sec": round2(rps),
        "latency": all,
        "send_message": send,
        "list_messages": list,
        "errors": errors,
        "error_count": errors.total(),
        "first_error": first_error,
    });
    let human = format!(
        "rest: {clients} clients, {rps:.0} req/s ({} ok in {secs:.0}s); all {}; send {}; list {}; \
         errors: {}",
        all.count,
        all.brief(),
        send.brief(),
        list.brief(),
        errors.brief(),
    );
    Ok(Report { json, human })
}
