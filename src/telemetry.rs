//! Structured logging: human-readable lines by default, JSON lines with `MRM_LOG_FORMAT=json`.

use std::io::IsTerminal;

use tracing_subscriber::{fmt, prelude::*, EnvFilter};

use crate::config::LogFormat;

/// Installs the process's log subscriber on standard output: the `RUST_LOG` filter (default
/// `info,sqlx=warn`), then text lines (coloured only at a terminal, and never with
/// `NO_COLOR` set) or one flat JSON object per line. Does nothing when one is installed already.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    // `try_init` so that embedding (tests start several servers in one process) never panics.
    let _ = match format {
        // Colours only for a person at a terminal, never in files or log collectors.
        LogFormat::Text => registry
            .with(fmt::layer().with_ansi(
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            ))
            .try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true))
            .try_init(),
    };
}
