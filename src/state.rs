//! The state every handler receives: passed explicitly, cloned cheaply, never global.

use std::sync::Arc;

use crate::{
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
}

impl AppState {
    pub fn new(db: Db, config: Config) -> Self {
        let limits = RateLimits::new(config.login_attempts_per_minute, config.messages_per_second);
        let realtime = Realtime::new(
            db.clone(),
            SocketSettings {
                queue_capacity: config.ws_queue_capacity,
                ping_interval: config.ws_ping_interval,
            },
        );
        Self {
            db,
            realtime,
            config: Arc::new(config),
            hasher: PasswordHasher::new(),
            password_policy: Arc::new(PasswordPolicy::load()),
            limits: Arc::new(limits),
        }
    }
}
