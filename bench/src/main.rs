//! mrm-bench: load generator for servers that speak the MRM Chat wire contract.
//!
//! Every scenario prints exactly one JSON line on stdout (all parameters and results, for
//! machines) and one summary line on stderr (for people), so `mrm-bench … >> runs.jsonl` keeps a
//! clean record. Targets must resolve to loopback addresses.

use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, Parser, Subcommand};

/// Progress notes on stderr, shown with `--verbose`.
static VERBOSE: AtomicBool = AtomicBool::new(false);

macro_rules! note {
    ($($arg:tt)*) => {
        if crate::VERBOSE.load(std::sync::atomic::Ordering::Relaxed) {
            eprintln!("[mrm-bench] {}", format!($($arg)*));
        }
    };
}

mod ceiling;
mod client;
mod os;
mod scenarios;
mod stats;
mod target;
mod users;

#[derive(Parser)]
#[command(
    name = "mrm-bench",
    version,
    about = "Load generator for MRM Chat servers (loopback targets only)",
    long_about = "Load generator for MRM Chat servers (loopback targets only).\n\n\
        Each scenario prints one JSON line on stdout and one summary line on stderr.\n\n\
        The server's default limits throttle a benchmark: start it with e.g.\n  \
        MRM_MESSAGES_PER_SECOND=1000000 MRM_LOGIN_ATTEMPTS_PER_MINUTE=100000 MRM_PASSWORD_ATTEMPTS_PER_MINUTE=100000 MRM_MAX_SOCKETS_PER_USER=1000000 MRM_MAX_CONNECTIONS_PER_ADDRESS=1000000 mrm-chat serve\n\
        (messages are limited to 20/s per user per chat by default, so flat-out runs and \
        history seeding need a high MRM_MESSAGES_PER_SECOND)."
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Group chat fan-out over WebSockets: throughput, end-to-end latency, loss and order.
    Fanout(scenarios::fanout::FanoutArgs),
    /// Many idle authenticated sockets: how many open, how fast, and what they cost the server.
    Connections(scenarios::connections::ConnectionsArgs),
    /// REST clients alternating send_message and the messages list.
    Rest(scenarios::rest::RestArgs),
    /// Message list latency as a chat's history grows.
    History(scenarios::history::HistoryArgs),
    /// Full-text search latency as the searched messages grow.
    Search(scenarios::search::SearchArgs),
    /// AI chats streaming replies from a fake provider run by this process.
    Ai(scenarios::ai::AiArgs),
    /// Runs one share of `connections --processes P`, driven by its parent over stdin/stdout.
    #[command(hide = true)]
    ConnectionsWorker,
    /// Serves a ceiling (`--ceiling` of `fanout` and `rest` starts it): prints its address on
    /// stdout, then serves until stdin closes.
    #[command(hide = true)]
    CeilingServer(ceiling::ServerArgs),
}

/// Options every scenario takes.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// Server base URL; its host must resolve to loopback (127.0.0.0/8 or ::1).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub target: String,
    /// Users registered and logged in at once during setup (each costs two password hashes).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub setup_concurrency: u16,
    /// Print progress notes on stderr.
    #[arg(short, long)]
    pub verbose: bool,
}

impl Common {
    fn apply(&self) {
        VERBOSE.store(self.verbose, Ordering::Relaxed);
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let outcome = match cli.scenario {
        Scenario::Fanout(args) => {
            args.common.apply();
            scenarios::fanout::run(args).await
        }
        Scenario::Connections(args) => {
            args.common.apply();
            scenarios::connections::run(args).await
        }
        Scenario::Rest(args) => {
            args.common.apply();
            scenarios::rest::run(args).await
        }
        Scenario::History(args) => {
            args.common.apply();
            scenarios::history::run(args).await
        }
        Scenario::Search(args) => {
            args.common.apply();
            scenarios::search::run(args).await
        }
        Scenario::Ai(args) => {
            args.common.apply();
            scenarios::ai::run(args).await
        }
        Scenario::ConnectionsWorker => match scenarios::connections::worker().await {
            Ok(()) => return,
            Err(e) => Err(e),
        },
        Scenario::CeilingServer(args) => match ceiling::serve(args).await {
            Ok(()) => return,
            Err(e) => Err(e),
        },
    };
    match outcome {
        Ok(report) => {
            println!("{}", report.json);
            eprintln!("{}", report.human);
        }
        Err(e) => {
            eprintln!("mrm-bench: error: {e:#}");
            std::process::exit(1);
        }
    }
}
