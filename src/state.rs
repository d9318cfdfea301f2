//! The state every handler receives: passed explicitly, cloned cheaply, never global.

use std::sync::Arc;

use crate::{
    auth::PasswordHasher, config::Config, domain::PasswordPolicy, limits::RateLimits, store::Db,
};

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub hasher: PasswordHasher,
    pub password_policy: Arc<PasswordPolicy>,
    pub limits: Arc<RateLimits>,
}

impl AppState {
    pub fn new(db: Db, config: Config) -> Self {
        let limits = RateLimits::new(config.login_attempts_per_minute, config.messages_per_second);
        Self {
            db,
            config: Arc::new(config),
            hasher: PasswordHasher::new(),
            password_policy: Arc::new(PasswordPolicy::load()),
            limits: Arc::new(limits),
        }
    }
}
