//! Rate limits: login attempts per client address and username, password checks per client
//! address, messages per user and chat, and searches per user. A client address is counted by
//! its [`budget_key`]: an IPv6 client by its /64.
//!
//! With several nodes (`REDIS_URL`), each budget is kept in Redis ([`SharedBudgets`]), so a
//! client's budget is the same whichever node it reaches; a node that cannot reach Redis in time
//! falls back to its own budgets until it can. A single node keeps them in memory.

use std::{net::IpAddr, num::NonZeroU32, sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
use governor::{
    clock::{Clock, DefaultClock},
    DefaultKeyedRateLimiter, Quota, RateLimiter,
};
use sha2::{Digest, Sha256};

use crate::{client_addr::budget_key, service::ServiceError};

/// A budget shared between nodes: a GCRA limiter kept where every node sees it.
pub trait SharedBudgets: Send + Sync {
    /// Spends one unit of the budget `key`, which earns a unit back every `interval` and holds
    /// at most `burst`. `Some(Ok(()))`: spent; `Some(Err(wait))`: refused, allowed again after
    /// `wait`; `None`: the shared store could not answer (the caller falls back to its own).
    fn spend(
        &self,
        key: String,
        interval: Duration,
        burst: u32,
    ) -> BoxFuture<'_, Option<Result<(), Duration>>>;
}

/// One kind of budget: its quota here, and as shared.
struct Budget<K: std::hash::Hash + Eq + Clone> {
    local: DefaultKeyedRateLimiter<K>,
    /// The namespace of its keys in the shared store.
    name: &'static str,
    interval: Duration,
    burst: u32,
}

impl<K: std::hash::Hash + Eq + Clone> Budget<K> {
    fn per_minute(name: &'static str, n: NonZeroU32) -> Self {
        Self {
            local: RateLimiter::keyed(Quota::per_minute(n)),
            name,
            interval: Duration::from_secs(60) / n.get(),
            burst: n.get(),
        }
    }

    fn per_second(name: &'static str, n: NonZeroU32) -> Self {
        Self {
            local: RateLimiter::keyed(Quota::per_second(n)),
            name,
            interval: Duration::from_secs(1) / n.get(),
            burst: n.get(),
        }
    }

    async fn spend(
        &self,
        shared: Option<&dyn SharedBudgets>,
        key: &K,
        shared_key: impl FnOnce() -> String,
    ) -> Result<(), ServiceError> {
        if let Some(shared) = shared {
            let key = format!("{}:{}", self.name, shared_key());
            match shared.spend(key, self.interval, self.burst).await {
                Some(Ok(())) => return Ok(()),
                Some(Err(wait)) => return Err(limited(wait)),
                None => {} // Redis is away: this node's own budget stands in.
            }
        }
        check(self.local.check_key(key))
    }
}

/// The rate limits, each a keyed GCRA limiter (governor here, a script in Redis when shared):
/// a key may spend its whole budget at once, then earns it back evenly (a login every 60/n
/// seconds, a message every 1/n second).
pub struct RateLimits {
    logins: Budget<(IpAddr, [u8; 32])>,
    passwords: Budget<IpAddr>,
    messages: Budget<(i64, i64)>,
    searches: Budget<i64>,
    shared: Option<Arc<dyn SharedBudgets>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl RateLimits {
    /// `logins_per_minute` (`MRM_LOGIN_ATTEMPTS_PER_MINUTE`) per client address and username;
    /// `passwords_per_minute` (`MRM_PASSWORD_ATTEMPTS_PER_MINUTE`) per client address;
    /// `messages_per_second` (`MRM_MESSAGES_PER_SECOND`) per user and chat;
    /// `searches_per_minute` (`MRM_SEARCHES_PER_MINUTE`) per user; kept in `shared` when given.
    pub fn new(
        logins_per_minute: NonZeroU32,
        passwords_per_minute: NonZeroU32,
        messages_per_second: NonZeroU32,
        searches_per_minute: NonZeroU32,
        shared: Option<Arc<dyn SharedBudgets>>,
    ) -> Self {
        Self {
            logins: Budget::per_minute("login", logins_per_minute),
            passwords: Budget::per_minute("password", passwords_per_minute),
            messages: Budget::per_second("message", messages_per_second),
            searches: Budget::per_minute("search", searches_per_minute),
            shared,
        }
    }

    fn shared(&self) -> Option<&dyn SharedBudgets> {
        self.shared.as_deref()
    }

    /// One login or token request from `ip` for `username`: counted against that address and
    /// username, then against the address's password budget ([`Self::password_check`]), so
    /// a new username for each attempt is throttled too. The username is compared without
    /// case, so its case variants share one budget. Errors: `RateLimited` with the whole seconds
    /// (at least 1) until an attempt is allowed again.
    pub async fn login(&self, ip: IpAddr, username: &str) -> Result<(), ServiceError> {
        // The address's budget first: a throttled address adds no key. The username is kept as
        // a fixed-size digest, so a long one costs no more memory than a short one.
        self.password_check(ip).await?;
        let digest: [u8; 32] = Sha256::digest(username.to_lowercase().as_bytes()).into();
        let key = (budget_key(ip), digest);
        self.logins
            .spend(self.shared(), &key, || format!("{}:{}", key.0, hex(&key.1)))
            .await
    }

    /// One request from `ip` that will hash or verify a password (a login, a token request, a
    /// registration), whatever the username. Errors: `RateLimited`, as for [`Self::login`].
    pub async fn password_check(&self, ip: IpAddr) -> Result<(), ServiceError> {
        let key = budget_key(ip);
        self.passwords
            .spend(self.shared(), &key, || key.to_string())
            .await
    }

    /// One message from `user_id` to `chat_id`. Errors: `RateLimited`, as for [`Self::login`].
    pub async fn message(&self, user_id: i64, chat_id: i64) -> Result<(), ServiceError> {
        self.messages
            .spend(self.shared(), &(user_id, chat_id), || {
                format!("{user_id}:{chat_id}")
            })
            .await
    }

    /// One full-text search by `user_id`. Errors: `RateLimited`, as for [`Self::login`].
    pub async fn search(&self, user_id: i64) -> Result<(), ServiceError> {
        self.searches
            .spend(self.shared(), &user_id, || user_id.to_string())
            .await
    }

    /// Forgets keys whose budget is full again, so memory tracks active clients only (the
    /// shared keys expire in Redis by themselves).
    pub fn prune(&self) {
        self.logins.local.retain_recent();
        self.passwords.local.retain_recent();
        self.messages.local.retain_recent();
        self.searches.local.retain_recent();
    }
}

fn limited(wait: Duration) -> ServiceError {
    ServiceError::RateLimited(wait.as_secs_f64().ceil().max(1.0) as u64)
}

fn check(
    outcome: Result<(), governor::NotUntil<governor::clock::QuantaInstant>>,
) -> Result<(), ServiceError> {
    outcome.map_err(|not_until| limited(not_until.wait_time_from(DefaultClock::default().now())))
}
