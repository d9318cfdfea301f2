//! The running server: connects and migrates the database, binds its listener first (port 0 in
//! tests) so callers learn the address, then serves until told to stop.

use std::{future::Future, net::SocketAddr, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    connections::{self, ConnectionLimits},
    http, service,
    state::{AppState, FileBudget},
    store::{self, Db},
};

/// How long shutdown waits for sockets to take their close frame.
const SOCKET_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The server, built and bound but not yet serving, so a caller (a test) can read its address
/// and state before running it.
pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    /// Connects to the database and applies pending migrations, settles AI replies a stopped
    /// process left unfinished, binds `config.bind` and builds the shared state. Errors: the
    /// database cannot be reached or migrated, the address cannot be bound (`MRM_BIND`), or the
    /// AI provider or Redis cannot be set up.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = Db::connect(&config.database_url, config.db_max_connections).await?;
        db.migrate().await?;
        store::ai::settle_interrupted(&db).await?;
        service::accounts::normalize_stored_usernames(&db).await?;
        let listener = TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("cannot listen on {} (MRM_BIND)", config.bind))?;
        Ok(Self {
            listener,
            state: AppState::new(db, config).await?,
        })
    }

    /// The address actually bound: the real port when `MRM_BIND` asked for port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The shared state the server will run with.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Application { listener, state } = self;
        let addr = listener.local_addr()?;
        let housekeeping = tokio::spawn(housekeeping(state.clone()));
        let sweeper = tokio::spawn(service::attachments::sweeper(
            state.db.clone(),
            state.files.clone(),
            state.config.attachments.grace,
            state.config.attachments.sweep_interval,
        ));
        let credential_watch = tokio::spawn(service::sessions::watch_ended(state.clone()));
        tracing::info!(%addr, backend = state.db.backend(), "mrm-chat listening on http://{addr}");
        let stopping = CancellationToken::new();
        tokio::spawn({
            let stopping = stopping.clone();
            async move {
                shutdown.await;
                stopping.cancel();
            }
        });
        let closing_sockets = tokio::spawn({
            let stopping = stopping.clone();
            let realtime = state.realtime.clone();
            let generations = state.generations.clone();
            async move {
                stopping.cancelled().await;
                // Upgraded sockets are not HTTP requests the server waits for: close them here.
                // Replies still running are cut short and saved with what they have, which also
                // lets requests waiting for them finish.
                tokio::join!(
                    realtime.close_all(SOCKET_CLOSE_GRACE),
                    generations.stop_all(SOCKET_CLOSE_GRACE)
                );
            }
        });
        let limits = ConnectionLimits {
            max_connections: state
                .config
                .max_connections
                .unwrap_or_else(|| FileBudget::of(&state.config).connections),
            max_per_address: state.config.max_connections_per_address,
            trusted_proxies: state.config.trusted_proxies.clone(),
            idle_timeout: state.config.http_idle_timeout,
            header_timeout: state.config.http_header_timeout,
            write_timeout: state.config.http_write_timeout,
        };
        connections::serve(
            listener,
            http::router(state.clone()),
            // Paths are matched with or without their trailing slash, as clients of the
            // original send both spellings.
            http::trim_trailing_slash,
            limits,
            stopping,
        )
        .await;
        let _ = closing_sockets.await;
        housekeeping.abort();
        sweeper.abort();
        credential_watch.abort();
        state.db.close().await;
        tracing::info!("mrm-chat stopped");
        Ok(())
    }
}

/// Periodic clean-up: expired sessions and idle rate-limit entries.
async fn housekeeping(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tick.tick().await;
        match store::sessions::delete_expired(&state.db).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "expired sessions removed"),
            Err(err) => tracing::warn!(error = %err, "could not remove expired sessions"),
        }
        state.limits.prune();
        if let Err(err) = store::ai::settle_interrupted(&state.db).await {
            tracing::warn!(error = %err, "could not settle interrupted AI replies");
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
