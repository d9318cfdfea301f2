//! `search`: full-text search latency as the searched messages grow. Messages of pseudo-words
//! drawn from a Zipf-distributed vocabulary (as natural language is) are sent through
//! `send_message` into `--chats` chats, up to each of `--sizes` in turn; at each size, queries
//! of several kinds (a frequent, a medium and a rare word, two words, a phrase, a prefix) are
//! timed, interleaved, one request at a time, each the default page, for two users: one in
//! every chat, and one in a separate chat of 1,000 messages only (most matches are not theirs).

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
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
    stats::{ms, round2, Latency, Tally},
    target::Target,
    users, Common,
};

#[derive(Args, Debug)]
pub struct SearchArgs {
    #[command(flatten)]
    pub common: Common,
    /// Total messages to search at each measurement, ascending, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [100_000u32, 1_000_000],
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub sizes: Vec<u32>,
    /// Chats the messages are spread over (the searching user is in all of them).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub chats: u32,
    /// Clients sending at once while seeding (raise the server's MRM_MESSAGES_PER_SECOND).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub seed_concurrency: u32,
    /// Timed requests of each kind per size.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub repeat: u32,
    /// A shell command run after each seeding, before timing: for example
    /// `psql … -c 'VACUUM ANALYZE messages'`, to time a PostgreSQL whose autovacuum is off
    /// as a default installation (autovacuum on) would be once it has caught up.
    #[arg(long)]
    pub settle_cmd: Option<String>,
}

/// Words in the vocabulary.
const VOCABULARY: usize = 20_000;
/// Words per message.
const WORDS: usize = 8;
/// Untimed requests of each kind before the timed ones.
const WARMUP_REQUESTS: usize = 2;
/// The narrow chat's messages, numbered from here (apart from the others').
const NARROW_FIRST: usize = 100_000_000;
/// Messages in the narrow chat.
const NARROW_MESSAGES: usize = 1_000;
/// A seeding client gives up after this many failed sends.
const MAX_SEED_FAILURES: usize = 1000;

/// SplitMix64: a small, fast, reproducible generator; message `n`'s words depend on `n` alone.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The vocabulary's `rank`-th word (0 the most frequent): syllables spelled from the rank, so
/// every word is distinct and pronounceable-ish.
fn word(rank: usize) -> String {
    const ONSETS: [&str; 16] = [
        "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "ch", "sh",
    ];
    const VOWELS: [&str; 6] = ["a", "e", "i", "o", "u", "ai"];
    let mut n = rank + 97; // at least two syllables
    let mut w = String::new();
    while n > 0 {
        w.push_str(ONSETS[n % 16]);
        n /= 16;
        w.push_str(VOWELS[n % 6]);
        n /= 6;
    }
    w
}

/// Cumulative Zipf weights (exponent 1) over the vocabulary, for drawing ranks.
fn zipf_table() -> Vec<f64> {
    let mut total = 0.0;
    (0..VOCABULARY)
        .map(|r| {
            total += 1.0 / (r + 1) as f64;
            total
        })
        .collect()
}

/// Message `n`'s content.
fn content(n: u64, table: &[f64], words: &[String]) -> String {
    let total = *table.last().unwrap_or(&1.0);
    (0..WORDS as u64)
        .map(|k| {
            let u = (mix(n.wrapping_mul(31).wrapping_add(k)) >> 11) as f64 / (1u64 << 53) as f64;
            let rank = table
                .partition_point(|c| *c < u * total)
                .min(VOCABULARY - 1);
            words[rank].as_str()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Sends messages `from..to` round-robin into `chats` with every session at once.
async fn seed(
    sessions: &[Session],
    chats: &[i64],
    from: usize,
    to: usize,
    table: &[f64],
    words: &[String],
) -> (usize, f64, Tally) {
    let next = AtomicUsize::new(from);
    let sent = AtomicUsize::new(0);
    let started = Instant::now();
    let errors = std::sync::Mutex::new(Tally::default());
    join_all(sessions.iter().map(|s| async {
        let mut failures = 0;
        while failures < MAX_SEED_FAILURES {
            let n = next.fetch_add(1, Ordering::Relaxed);
            if n >= to {
                break;
            }
            let text = content(n as u64, table, words);
            let chat = chats[n % chats.len()];
            loop {
                match s.send_message(chat, &text).await {
                    Ok(_) => {
                        sent.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Err(e) => {
                        errors.lock().unwrap().add(e.kind());
                        failures += 1;
                        if failures >= MAX_SEED_FAILURES {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }
    }))
    .await;
    (
        sent.into_inner(),
        started.elapsed().as_secs_f64(),
        errors.into_inner().unwrap(),
    )
}

/// The query kinds timed, as (name, query string).
fn queries(words: &[String]) -> Vec<(&'static str, String)> {
    vec![
        ("frequent_word", format!("q={}", words[9])),
        ("medium_word", format!("q={}", words[999])),
        ("rare_word", format!("q={}", words[14_999])),
        ("two_words", format!("q={}+{}", words[99], words[499])),
        ("phrase", format!("q=%22{}+{}%22", words[0], words[1])),
        ("prefix", format!("q={}%2A", &words[2999][..3])),
    ]
}

pub async fn run(args: SearchArgs) -> Result<Report> {
    let mut sizes: Vec<usize> = args.sizes.iter().map(|s| *s as usize).collect();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.is_empty() {
        bail!("--sizes needs at least one size");
    }
    let target = Arc::new(Target::resolve(&args.common.target).await?);
    let prefix = users::run_prefix();
    let seeders = args.seed_concurrency as usize;
    note!("registering {seeders} users as {prefix}_*");
    let mut sessions = users::create(
        &target,
        &prefix,
        seeders + 1,
        args.common.setup_concurrency as usize,
    )
    .await?;
    // One more user takes part in one small chat only: the hard case for ranking the newest
    // matches a user may see, since most matches of a frequent word are not theirs.
    let narrow = sessions.pop().context("no users")?;
    let others: Vec<i64> = sessions[1..].iter().map(|s| s.user.id).collect();
    let mut chats = Vec::new();
    for c in 0..args.chats {
        chats.push(
            sessions[0]
                .create_chat(&format!("{prefix} search {c}"), &others)
                .await
                .context("creating a chat")?,
        );
    }
    let table = zipf_table();
    let words: Vec<String> = (0..VOCABULARY).map(word).collect();
    let kinds = queries(&words);
    let narrow_chat = sessions[0]
        .create_chat(&format!("{prefix} search narrow"), &[narrow.user.id])
        .await
        .context("creating the narrow chat")?;
    let (narrow_sent, _, _) = seed(
        &sessions[..1],
        &[narrow_chat],
        NARROW_FIRST,
        NARROW_FIRST + NARROW_MESSAGES,
        &table,
        &words,
    )
    .await;
    let viewers = [("all_chats", &sessions[0]), ("one_small_chat", &narrow)];

    let mut rows = Vec::new();
    let mut human_parts = Vec::new();
    // Messages sent, and message numbers handed out (a failed send's number is not reused).
    let mut seeded = 0;
    let mut numbered = 0;
    for &size in &sizes {
        note!("seeding messages {seeded}..{size}");
        let (sent, secs, errors) = seed(&sessions, &chats, numbered, size, &table, &words).await;
        numbered = size;
        seeded += sent;
        if let Some(command) = &args.settle_cmd {
            note!("settling: {command}");
            let status = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(command)
                .status()
                .await
                .context("running --settle-cmd")?;
            if !status.success() {
                bail!("--settle-cmd failed: {status}");
            }
        }
        note!(
            "seeded {sent} in {secs:.1}s; timing {} searches of each kind",
            args.repeat
        );
        let mut by_viewer = serde_json::Map::new();
        let mut brief = Vec::new();
        for (viewer, session) in viewers {
            let mut latencies: Vec<Latency> = kinds.iter().map(|_| Latency::default()).collect();
            let mut hits = vec![0usize; kinds.len()];
            for i in 0..WARMUP_REQUESTS + args.repeat as usize {
                for (k, (_, query)) in kinds.iter().enumerate() {
                    let t = Instant::now();
                    hits[k] = session
                        .search(query)
                        .await
                        .with_context(|| format!("searching {query}"))?;
                    if i >= WARMUP_REQUESTS {
                        latencies[k].record(t.elapsed());
                    }
                }
            }
            let mut by_kind = serde_json::Map::new();
            let mut parts = Vec::new();
            for (k, (name, query)) in kinds.iter().enumerate() {
                let summary = latencies[k].summary();
                parts.push(format!(
                    "{name} {}/{}",
                    ms(summary.p50_us),
                    ms(summary.p99_us)
                ));
                by_kind.insert(
                    (*name).into(),
                    json!({"query": query, "page_hits": hits[k], "latency": summary}),
                );
            }
            brief.push(format!("{viewer}: {}", parts.join(", ")));
            by_viewer.insert(viewer.into(), Value::Object(by_kind));
        }
        human_parts.push(format!(
            "{seeded} messages: {} (p50/p99 ms)",
            brief.join("; ")
        ));
        rows.push(json!({
            "messages": seeded,
            "seeded_now": sent,
            "seed_secs": round2(secs),
            "seed_per_sec": round2(sent as f64 / secs.max(1e-9)),
            "seed_errors": errors,
            "queries": by_viewer,
        }));
    }
    let json: Value = json!({
        "scenario": "search",
        "target": target.base.as_str(),
        "params": {
            "sizes": sizes,
            "chats": args.chats,
            "seed_concurrency": seeders,
            "repeat": args.repeat,
            "vocabulary": VOCABULARY,
            "words_per_message": WORDS,
            "narrow_chat_messages": narrow_sent,
            "settle_cmd": args.settle_cmd,
        },
        "results": rows,
    });
    Ok(Report {
        json,
        human: format!("search: {}", human_parts.join("; ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_distinct_and_contents_reproducible() {
        let words: Vec<String> = (0..VOCABULARY).map(word).collect();
        let unique: std::collections::HashSet<&String> = words.iter().collect();
        assert_eq!(unique.len(), VOCABULARY);
        let table = zipf_table();
        assert_eq!(content(7, &table, &words), content(7, &table, &words));
        assert_eq!(content(7, &table, &words).split(' ').count(), WORDS);
    }
}
