//! The state every handler receives: passed explicitly, cloned cheaply, never global.

use std::sync::Arc;

use crate::{
    ai::{
        generation::{Generations, ReplySettings},
        models::Catalog,
    },
    auth::PasswordHasher,
    config::Config,
    domain::PasswordPolicy,
    limits::RateLimits,
    realtime::{BusSettings, Realtime, SocketSettings},
    service::{attachments::Files, messaging::MessageWriter},
    storage::ObjectStorage,
    store::Db,
};

/// How the open-file limit is shared when `MRM_MAX_SOCKETS` or `MRM_MAX_CONNECTIONS` is not set:
/// a reserve for the database pool, Redis, logs and the process's own files (64 plus the pool's
/// size), then a quarter of the rest for plain HTTP connections and three quarters for sockets,
/// so the two together never reach the limit ("Too many open files").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileBudget {
    /// Default of `MRM_MAX_CONNECTIONS`, at least 1.
    pub connections: usize,
    /// Default of `MRM_MAX_SOCKETS`.
    pub sockets: usize,
}

impl FileBudget {
    /// The budget of this process's open-file limit.
    pub fn of(config: &Config) -> Self {
        let limit = crate::os::open_file_limit().min(usize::MAX as u64) as usize;
        Self::split(limit, config.db_max_connections as usize)
    }

    fn split(limit: usize, db_connections: usize) -> Self {
        let shared = limit.saturating_sub(64 + db_connections);
        let connections = (shared / 4).max(1);
        Self {
            connections,
            sockets: shared.saturating_sub(connections).max(1),
        }
    }
}

/// Everything a request, a socket or a command needs, built once at start-up and cloned into
/// each (every field is a handle: cloning is a few reference-count increments).
#[derive(Clone)]
pub struct AppState {
    /// The database (SQLite or PostgreSQL).
    pub db: Db,
    /// The validated configuration.
    pub config: Arc<Config>,
    /// argon2id hashing on the blocking pool, at most two hashes per core at once and
    /// `MRM_PASSWORD_QUEUE` waiting.
    pub hasher: PasswordHasher,
    /// Django's password validators with its common-password list.
    pub password_policy: Arc<PasswordPolicy>,
    /// This node's rate limits (logins, messages).
    pub limits: Arc<RateLimits>,
    /// Live delivery: this node's rooms and the broker that carries events between nodes.
    pub realtime: Realtime,
    /// Running AI replies, at most one per AI chat.
    pub generations: Arc<Generations>,
    /// The AI providers and the models users may choose.
    pub ai_models: Arc<Catalog>,
    /// The group-commit writer every message goes through.
    pub messages: MessageWriter,
    /// Attachments' object store.
    pub files: Files,
}

impl AppState {
    /// The state the configuration describes: its AI provider (none without an API key), its
    /// object store, and Redis fan-out when `REDIS_URL` is set.
    pub async fn new(db: Db, config: Config) -> anyhow::Result<Self> {
        let files = Files::new(ObjectStorage::from_config(&config.attachments)?);
        let models = Arc::new(Catalog::from_config(&config.ai)?);
        let settings = SocketSettings {
            queue_capacity: config.ws_queue_capacity,
            ping_interval: config.ws_ping_interval,
            max_sockets: config
                .max_sockets
                .unwrap_or_else(|| FileBudget::of(&config).sockets),
            max_sockets_per_user: config.max_sockets_per_user,
            write_timeout: config.ws_write_timeout,
        };
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let realtime = match &config.redis_url {
            None => Realtime::new(db.clone(), settings, metrics),
            Some(url) => {
                let bus = BusSettings {
                    redis_url: url.expose().to_owned(),
                    prefix: config.redis_prefix.clone(),
                    presence_ttl: config.presence_ttl,
                };
                Realtime::clustered(db.clone(), settings, &bus, metrics).await?
            }
        };
        Ok(Self::assemble(db, config, models, realtime, files))
    }

    /// The state with given AI providers and delivery, for other backends and for tests.
    pub fn assemble(
        db: Db,
        config: Config,
        ai_models: Arc<Catalog>,
        realtime: Realtime,
        files: Files,
    ) -> Self {
        let limits = RateLimits::new(
            config.login_attempts_per_minute,
            config.password_attempts_per_minute,
            config.messages_per_second,
            config.searches_per_minute,
            realtime.budgets.clone(),
        );
        let settings = ReplySettings {
            max_per_user: config.ai.max_concurrent_per_user,
            context_window: config.ai.context_window,
            reply_reserve: config.ai.reply_reserve,
            titles: config.ai.titles,
            lease: config.ai.reply_lease,
        };
        let generations = Generations::new(
            db.clone(),
            settings,
            realtime.replies.clone(),
            realtime.metrics.clone(),
        );
        let replies = generations.clone();
        realtime
            .sockets
            .on_user_ended(Box::new(move |user_id| replies.cancel_user(user_id)));
        let messages = MessageWriter::start(db.clone(), realtime.clone());
        let password_queue = config.password_queue;
        Self {
            messages,
            files,
            db,
            realtime,
            generations,
            ai_models,
            config: Arc::new(config),
            hasher: PasswordHasher::new(password_queue),
            password_policy: Arc::new(PasswordPolicy::load()),
            limits: Arc::new(limits),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FileBudget;

    #[test]
    fn the_file_limit_is_shared_below_itself() {
        assert_eq!(
            FileBudget::split(1024, 16),
            FileBudget {
                connections: 236,
                sockets: 708
            }
        );
        let small = FileBudget::split(400, 16);
        assert!(small.connections + small.sockets + 64 + 16 <= 400);
        assert_eq!(FileBudget::split(10, 16).connections, 1);
    }
}
