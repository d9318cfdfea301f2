//! Argon2id password hashes, computed on the blocking pool so they never stall the async
//! workers, and bounded in number so a login flood cannot exhaust memory (each hash takes ~19 MiB).

use std::sync::Arc;

use anyhow::Context;
use argon2::{
    password_hash::phc::PasswordHash, Argon2, PasswordHasher as _, PasswordVerifier as _,
};
use tokio::sync::Semaphore;

/// Hashes and verifies passwords with Argon2id (default parameters), at most twice the CPU
/// count at a time. Cheap to clone: clones share the limit.
#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    /// Verified against when the username is unknown, so that answer takes as long as a wrong
    /// password and does not reveal which usernames exist.
    dummy_hash: Arc<String>,
}

impl PasswordHasher {
    /// A hasher allowing two hashes per available CPU at once; computes the dummy hash up front.
    pub fn new() -> Self {
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
        let dummy_hash =
            hash_blocking("not a real password").expect("argon2 with default parameters");
        Self {
            permits: Arc::new(Semaphore::new(parallel)),
            dummy_hash: Arc::new(dummy_hash),
        }
    }

    /// Hashes `password` with a fresh salt, giving a PHC string (`$argon2id$v=19$…`); waits for
    /// a permit when the limit is reached.
    pub async fn hash(&self, password: String) -> anyhow::Result<String> {
        let _permit = self.permits.acquire().await.context("hasher closed")?;
        tokio::task::spawn_blocking(move || hash_blocking(&password))
            .await
            .context("password hashing task failed")?
    }

    /// True when `password` matches `hash`; with no hash, spends the same effort and says no.
    pub async fn verify(&self, password: String, hash: Option<String>) -> anyhow::Result<bool> {
        let _permit = self.permits.acquire().await.context("hasher closed")?;
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.as_ref().clone());
        let matches = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|parsed| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .context("password verification task failed")?;
        Ok(known && matches)
    }
}

impl Default for PasswordHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// Argon2id with the crate's defaults (19 MiB, 2 passes, 1 lane: OWASP's recommendation) and a
/// random 16-byte salt from the OS generator.
pub fn hash_blocking(password: &str) -> anyhow::Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_only_the_right_password() {
        let hasher = PasswordHasher::new();
        let hash = hasher.hash("s3cret-enough".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(hasher
            .verify("s3cret-enough".into(), Some(hash.clone()))
            .await
            .unwrap());
        assert!(!hasher.verify("wrong".into(), Some(hash)).await.unwrap());
        assert!(!hasher
            .verify("not a real password".into(), None)
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn hashes_keep_their_format_and_old_ones_still_verify() {
        let hasher = PasswordHasher::new();
        let hash = hasher.hash("s3cret-enough".into()).await.unwrap();
        let (params, rest) = hash.split_at("$argon2id$v=19$m=19456,t=2,p=1$".len());
        assert_eq!(params, "$argon2id$v=19$m=19456,t=2,p=1$");
        let (salt, digest) = rest.split_once('$').unwrap();
        assert_eq!(
            (salt.len(), digest.len()),
            (22, 43),
            "16-byte salt, 32-byte hash"
        );
        // Written by an earlier release (argon2 0.5), as stored in existing databases.
        let old = "$argon2id$v=19$m=19456,t=2,p=1$J3mladvXhUxi+JAgQefpww$\
                   3i9L5moEh1NkycJCp41NIPxZGuwYEwBuJ3Zq3EyUiFY";
        assert!(hasher
            .verify("Old-pass-word-1".into(), Some(old.into()))
            .await
            .unwrap());
        assert!(!hasher
            .verify("Old-pass-word-2".into(), Some(old.into()))
            .await
            .unwrap());
    }
}
