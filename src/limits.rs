//! Rate limits, kept in memory per node: login attempts per client address and username,
//! password checks per client address, messages per user and chat, and searches per user. A client address is
//! counted by its [`budget_key`]: an IPv6 client by its /64.

use std::{net::IpAddr, num::NonZeroU32, time::Duration};

use governor::{
    clock::{Clock, DefaultClock},
    DefaultKeyedRateLimiter, Quota, RateLimiter,
};
use sha2::{Digest, Sha256};

use crate::{client_addr::budget_key, service::ServiceError};

/// This process's rate limits, each a keyed GCRA limiter (governor): a key may spend its whole
/// budget at once, then earns it back evenly (a login every 60/n seconds, a message every 1/n
/// second). Kept per node, so with several nodes a client's budget is per node too.
pub struct RateLimits {
    logins: DefaultKeyedRateLimiter<(IpAddr, [u8; 32])>,
    passwords: DefaultKeyedRateLimiter<IpAddr>,
    messages: DefaultKeyedRateLimiter<(i64, i64)>,
    searches: DefaultKeyedRateLimiter<i64>,
}

impl RateLimits {
    /// `logins_per_minute` (`MRM_LOGIN_ATTEMPTS_PER_MINUTE`) per client address and username;
    /// `passwords_per_minute` (`MRM_PASSWORD_ATTEMPTS_PER_MINUTE`) per client address;
    /// `messages_per_second` (`MRM_MESSAGES_PER_SECOND`) per user and chat;
    /// `searches_per_minute` (`MRM_SEARCHES_PER_MINUTE`) per user.
    pub fn new(
        logins_per_minute: NonZeroU32,
        passwords_per_minute: NonZeroU32,
        messages_per_second: NonZeroU32,
        searches_per_minute: NonZeroU32,
    ) -> Self {
        Self {
            logins: RateLimiter::keyed(Quota::per_minute(logins_per_minute)),
            passwords: RateLimiter::keyed(Quota::per_minute(passwords_per_minute)),
            messages: RateLimiter::keyed(Quota::per_second(messages_per_second)),
            searches: RateLimiter::keyed(Quota::per_minute(searches_per_minute)),
        }
    }

    /// One login or token request from `ip` for `username`: counted against that address and
    /// username, then against the address's password budget ([`Self::password_check`]), so
    /// a new username for each attempt is throttled too. The username is compared without
    /// case, so its case variants share one budget. Errors: `RateLimited` with the whole seconds
    /// (at least 1) until an attempt is allowed again.
    pub fn login(&self, ip: IpAddr, username: &str) -> Result<(), ServiceError> {
        // The address's budget first: a throttled address adds no key. The username is kept as
        // a fixed-size digest, so a long one costs no more memory than a short one.
        self.password_check(ip)?;
        let digest: [u8; 32] = Sha256::digest(username.to_lowercase().as_bytes()).into();
        check(self.logins.check_key(&(budget_key(ip), digest)))
    }

    /// One request from `ip` that will hash or verify a password (a login, a token request, a
    /// registration), whatever the username. Errors: `RateLimited`, as for [`Self::login`].
    pub fn password_check(&self, ip: IpAddr) -> Result<(), ServiceError> {
        check(self.passwords.check_key(&budget_key(ip)))
    }

    /// One message from `user_id` to `chat_id`. Errors: `RateLimited`, as for [`Self::login`].
    pub fn message(&self, user_id: i64, chat_id: i64) -> Result<(), ServiceError> {
        check(self.messages.check_key(&(user_id, chat_id)))
    }

    /// One full-text search by `user_id`. Errors: `RateLimited`, as for [`Self::login`].
    pub fn search(&self, user_id: i64) -> Result<(), ServiceError> {
        check(self.searches.check_key(&user_id))
    }

    /// Forgets keys whose budget is full again, so memory tracks active clients only.
    pub fn prune(&self) {
        self.logins.retain_recent();
        self.passwords.retain_recent();
        self.messages.retain_recent();
        self.searches.retain_recent();
    }
}

fn check(
    outcome: Result<(), governor::NotUntil<governor::clock::QuantaInstant>>,
) -> Result<(), ServiceError> {
    outcome.map_err(|not_until| {
        let wait: Duration = not_until.wait_time_from(DefaultClock::default().now());
        ServiceError::RateLimited(wait.as_secs_f64().ceil().max(1.0) as u64)
    })
}
