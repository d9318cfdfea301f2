//! The run's users: registered under a prefix unique to the run (so repeated runs against one
//! server never collide) and each logged in exactly once, since logins are rate limited.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use futures_util::{stream, StreamExt, TryStreamExt};

use crate::{
    client::{self, Session},
    target::Target,
};

/// `b<unix-ms>`, shared by every name the run creates.
pub fn run_prefix() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis();
    format!("b{ms}")
}

/// Registers and logs in `count` users, `concurrency` at a time (each costs the server two
/// password hashes). Sessions come back in index order.
pub async fn create(
    target: &Arc<Target>,
    prefix: &str,
    count: usize,
    concurrency: usize,
) -> Result<Vec<Session>> {
    let http = target.http_builder().build()?;
    let sessions: Vec<Session> = stream::iter(0..count)
        .map(|i| {
            let http = http.clone();
            let target = target.clone();
            let username = format!("{prefix}_{i}");
            async move {
                let user = client::register(&http, &target, &username)
                    .await
                    .with_context(|| format!("registering {username}"))?;
                Session::login(target, user)
                    .await
                    .with_context(|| format!("logging in {username}"))
            }
        })
        .buffered(concurrency.max(1))
        .try_collect()
        .await?;
    Ok(sessions)
}
