//! `history`: how the messages list scales with a chat's size. For each size a fresh chat is
//! seeded through `send_message`, then the default page (newest 100) and a cursor page from the
//! middle (`?before=<id>&limit=100`) are timed, interleaved, one request at a time.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Args;
use futures_util::future::join_all;
use serde_json::{json, Value};

use super::Report;
use crate::{
    client::Session,
    stats::{ms, round2, Latency, Summary, Tally},
    target::Target,
    users, Common,
};

#[derive(Args, Debug)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub common: Common,
    /// Chat sizes (messages) to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1000u32, 10000],
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub sizes: Vec<u32>,
    /// Clients seeding a chat at once (distinct users, all in the chat). Seeding is limited per
    /// user and chat by the server's MRM_MESSAGES_PER_SECOND (20 by default): raise it.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub seed_concurrency: u32,
    /// Timed requests of each kind per size.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub repeat: u32,
    /// Most seconds seeding one chat may take; a chat seeded only partly is reported as such.
    #[arg(long, default_value_t = 900.0)]
    pub seed_timeout: f64,
}

/// The middle page's size.
const PAGE: usize = 100;
/// Untimed requests of each kind before the timed ones.
const WARMUP_REQUESTS: usize = 3;
/// A seeding client gives up after this many failed sends.
const MAX_SEED_FAILURES: usize = 1000;

struct Seeded {
    count: usize,
    secs: f64,
    errors: Tally,
    first_error: Option<String>,
    /// Id of the message whose seq is the middle one.
    middle_id: Option<i64>,
}

/// Sends `size` messages to `chat_id` with every session at once; exactly `size` unless sends
/// keep failing or time runs out.
async fn seed(sessions: &[Session], chat_id: i64, size: usize, timeout: Duration) -> Seeded {
    let claimed = AtomicUsize::new(0);
    let committed = AtomicUsize::new(0);
    let middle_seq = (size / 2).max(1) as i64;
    let middle_id = Mutex::new(None);
    let errors = Mutex::new((Tally::default(), None::<String>));
    let started = Instant::now();
    let deadline = started + timeout;
    join_all(sessions.iter().map(|s| async {
        let mut failures = 0;
        while Instant::now() < deadline && failures < MAX_SEED_FAILURES {
            let n = claimed.fetch_add(1, Ordering::Relaxed);
            if n >= size {
                break;
            }
            match s.send_message(chat_id, &format!("history {n}")).await {
                Ok(m) => {
                    committed.fetch_add(1, Ordering::Relaxed);
                    if m.seq == middle_seq {
                        *middle_id.lock().unwrap() = Some(m.id);
                    }
                }
                Err(e) => {
                    // Give the claim back so the chat still ends up with exactly `size`.
                    claimed.fetch_sub(1, Ordering::Relaxed);
                    failures += 1;
                    {
                        let mut errs = errors.lock().unwrap();
                        errs.0.add(e.kind());
                        errs.1.get_or_insert_with(|| e.to_string());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }))
    .await;
    let (errors, first_error) = errors.into_inner().unwrap();
    Seeded {
        count: committed.into_inner(),
        secs: started.elapsed().as_secs_f64(),
        errors,
        first_error,
        middle_id: middle_id.into_inner().unwrap(),
    }
}

struct Timed {
    latest: Summary,
    middle: Option<Summary>,
    latest_len: usize,
    latest_has_next: bool,
    middle_len: Option<usize>,
    last_seq: i64,
}

async fn time_reads(
    s: &Session,
    chat_id: i64,
    middle_id: Option<i64>,
    repeat: usize,
) -> Result<Timed> {
    let middle_query = middle_id.map(|id| format!("?before={id}&limit={PAGE}"));
    let first = s
        .messages(chat_id, "")
        .await
        .context("reading the newest page")?;
    let mut timed = Timed {
        latest: Latency::default().summary(),
        middle: None,
        latest_len: first.messages.len(),
        latest_has_next: first.has_next,
        middle_len: None,
        last_seq: first.messages.last().map_or(0, |m| m.seq),
    };
    if let Some(q) = &middle_query {
        timed.middle_len = Some(s.messages(chat_id, q).await?.messages.len());
    }
    let mut latest = Latency::default();
    let mut middle = Latency::default();
    for i in 0..WARMUP_REQUESTS + repeat {
        let t = Instant::now();
        s.messages(chat_id, "")
            .await
            .context("reading the newest page")?;
        if i >= WARMUP_REQUESTS {
            latest.record(t.elapsed());
        }
        if let Some(q) = &middle_query {
            let t = Instant::now();
            s.messages(chat_id, q)
                .await
                .context("reading a middle page")?;
            if i >= WARMUP_REQUESTS {
                middle.record(t.elapsed());
            }
        }
    }
    timed.latest = latest.summary();
    timed.middle = middle_query.map(|_| middle.summary());
    Ok(timed)
}

pub async fn run(args: HistoryArgs) -> Result<Report> {
    if !(1.0..=86_400.0).contains(&args.seed_timeout) {
        bail!("--seed-timeout must be between 1 and 86400 seconds");
    }
    let seed_timeout = Duration::from_secs_f64(args.seed_timeout);
    let mut sizes: Vec<usize> = args.sizes.iter().map(|s| *s as usize).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let target = Arc::new(Target::resolve(&args.common.target).await?);
    let prefix = users::run_prefix();
    let seeders = args.seed_concurrency as usize;
    note!("registering {seeders} users as {prefix}_*");
    let sessions = users::create(
        &target,
        &prefix,
        seeders,
        args.common.setup_concurrency as usize,
    )
    .await?;
    let others: Vec<i64> = sessions[1..].iter().map(|s| s.user.id).collect();

    let mut rows: Vec<Value> = Vec::new();
    let mut medians: Vec<(usize, u64, Option<u64>)> = Vec::new();
    let mut human_parts = Vec::new();
    for &size in &sizes {
        let chat_id = sessions[0]
            .create_chat(&format!("{prefix} history {size}"), &others)
            .await
            .context("creating a chat")?;
        note!("seeding chat {chat_id} with {size} messages");
        let seeded = seed(&sessions, chat_id, size, seed_timeout).await;
        note!(
            "seeded {} in {:.1}s; timing {} reads of each kind",
            seeded.count,
            seeded.secs,
            args.repeat
        );
        let timed = time_reads(
            &sessions[0],
            chat_id,
            seeded.middle_id,
            args.repeat as usize,
        )
        .await?;
        medians.push((size, timed.latest.p50_us, timed.middle.map(|m| m.p50_us)));
        human_parts.push(format!(
            "{size}: newest p50 {} / p99 {} ms, middle p50 {} / p99 {} ms",
            ms(timed.latest.p50_us),
            ms(timed.latest.p99_us),
            timed.middle.map_or("-".into(), |m| ms(m.p50_us)),
            timed.middle.map_or("-".into(), |m| ms(m.p99_us)),
        ));
        rows.push(json!({
            "size": size,
            "chat_id": chat_id,
            "seeded": seeded.count,
            "seed_secs": round2(seeded.secs),
            "seed_per_sec": round2(seeded.count as f64 / seeded.secs.max(1e-9)),
            "seed_errors": seeded.errors,
            "seed_first_error": seeded.first_error,
            "last_seq": timed.last_seq,
            "latest_page_len": timed.latest_len,
            "latest_has_next": timed.latest_has_next,
            "middle_id": seeded.middle_id,
            "middle_page_len": timed.middle_len,
            "latest": timed.latest,
            "middle": timed.middle,
        }));
    }

    // How much slower the largest chat is than the smallest, by median.
    let ratio = match (medians.first(), medians.last()) {
        (Some(small), Some(large)) if medians.len() > 1 => json!({
            "from_size": small.0,
            "to_size": large.0,
            "latest_p50": round2(large.1 as f64 / small.1.max(1) as f64),
            "middle_p50": match (small.2, large.2) {
                (Some(s), Some(l)) => json!(round2(l as f64 / s.max(1) as f64)),
                _ => Value::Null,
            },
        }),
        _ => Value::Null,
    };
    let json = json!({
        "scenario": "history",
        "target": target.base.as_str(),
        "params": {
            "sizes": sizes,
            "seed_concurrency": seeders,
            "repeat": args.repeat,
            "page": PAGE,
            "warmup_requests": WARMUP_REQUESTS,
        },
        "results": rows,
        "ratio": ratio,
    });
    let ratio_text = if ratio.is_null() {
        String::new()
    } else {
        format!(
            "; {}→{} median ratio newest {}×, middle {}×",
            ratio["from_size"], ratio["to_size"], ratio["latest_p50"], ratio["middle_p50"]
        )
    };
    let human = format!("history: {}{ratio_text}", human_parts.join("; "));
    Ok(Report { json, human })
}
