//! The state every handler receives: passed explicitly, cloned cheaply, never global.

use std::sync::Arc;

use crate::{
    ai::{generation::Generations, openai::OpenAiProvider, provider::ChatProvider},
    auth::PasswordHasher,
    config::Config,
    domain::PasswordPolicy,
    limits::RateLimits,
    realtime::{Realtime, SocketSettings},
    store::Db,
};

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub hasher: PasswordHasher,
    pub password_policy: Arc<PasswordPolicy>,
    pub limits: Arc<RateLimits>,
    pub realtime: Realtime,
    pub generations: Arc<Generations>,
}

impl AppState {
    /// The state with the provider the configuration names (none without an API key).
    pub fn new(db: Db, config: Config) -> anyhow::Result<Self> {
        let provider =
            OpenAiProvider::from_config(&config.ai)?.map(|p| Arc::new(p) as Arc<dyn ChatProvider>);
        Ok(Self::with_provider(db, config, provider))
    }

    /// The state with a given provider, for other backends and for tests.
    pub fn with_provider(db: Db, config: Config, provider: Option<Arc<dyn ChatProvider>>) -> Self {
        let limits = RateLimits::new(config.login_attempts_per_minute, config.messages_per_second);
        let realtime = Realtime::new(
            db.clone(),
            SocketSettings {
                queue_capacity: config.ws_queue_capacity,
                ping_interval: config.ws_ping_interval,
            },
        );
        let generations = Generations::new(db.clone(), provider, config.ai.max_concurrent_per_user);
        Self {
            db,
            realtime,
            generations,
            config: Arc::new(config),
            hasher: PasswordHasher::new(),
            password_policy: Arc::new(PasswordPolicy::load()),
            limits: Arc::new(limits),
        }
    }
}
