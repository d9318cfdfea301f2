//! Argon2id password hashes, computed on the blocking pool so they never stall the async
//! workers, and bounded in number so a login flood cannot exhaust memory (each hash takes ~19 MiB):
//! a few run at once, a bounded number wait, and the rest are refused at once.
//!
//! Hashes imported from MRM Chat 2 are Django's (`pbkdf2_sha256$<iterations>$<salt>$<hash>`
//! and Django's other built-in hashers): they are verified as Django does (the `djangohashers`
//! crate, a port of Django's hashers), and replaced by an Argon2id hash at the first login that
//! matches ([`Verdict::Legacy`]).

use std::sync::Arc;

use anyhow::Context;
use argon2::{
    password_hash::phc::PasswordHash, Argon2, PasswordHasher as _, PasswordVerifier as _,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a password could not be hashed or verified.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every hashing slot is taken and the queue is full: the request was not queued.
    #[error("too many passwords waiting to be hashed")]
    Busy,
    /// The hashing task failed (a panic, or the runtime shutting down).
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Hashes and verifies passwords with Argon2id (default parameters), at most twice the CPU
/// count at a time with a bounded number waiting. Cheap to clone: clones share the limits.
#[derive(Clone)]
pub struct PasswordHasher {
    /// One per hash running or waiting: taken without waiting, so a full queue refuses.
    admitted: Arc<Semaphore>,
    /// One per hash running.
    permits: Arc<Semaphore>,
    /// Verified against when the username is unknown, so that answer takes as long as a wrong
    /// password and does not reveal which usernames exist.
    dummy_hash: Arc<String>,
}

impl PasswordHasher {
    /// A hasher allowing two hashes per available CPU at once and `queue` more waiting;
    /// computes the dummy hash up front.
    pub fn new(queue: usize) -> Self {
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
        let dummy_hash =
            hash_blocking("not a real password").expect("argon2 with default parameters");
        Self {
            admitted: Arc::new(Semaphore::new(parallel.saturating_add(queue))),
            permits: Arc::new(Semaphore::new(parallel)),
            dummy_hash: Arc::new(dummy_hash),
        }
    }

    /// A place among the hashes running or waiting, taken without waiting: take it before
    /// any other work of a request that will hash, so a request refused costs nothing.
    /// Errors: `Busy` when the queue is full.
    pub fn reserve(&self) -> Result<HashSlot, HashError> {
        let admitted = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| HashError::Busy)?;
        Ok(HashSlot {
            hasher: self.clone(),
            _admitted: admitted,
        })
    }

    /// Hashes `password`, as [`HashSlot::hash`]. Errors: `Busy` when the queue is full.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        self.reserve()?.hash(password).await
    }

    /// Verifies `password`, as [`HashSlot::verify`]. Errors: `Busy` when the queue is full.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, HashError> {
        Ok(self.reserve()?.check(password, hash).await?.matches())
    }
}

/// A reserved place in the hashing queue ([`PasswordHasher::reserve`]), used by one hash and
/// given back when dropped.
pub struct HashSlot {
    hasher: PasswordHasher,
    _admitted: OwnedSemaphorePermit,
}

impl HashSlot {
    /// Hashes `password` with a fresh salt, giving a PHC string (`$argon2id$v=19$…`); waits for
    /// a hashing slot when all are taken.
    pub async fn hash(self, password: String) -> Result<String, HashError> {
        Ok(self.run(move || hash_blocking(&password)).await??)
    }

    /// True when `password` matches `hash`; with no hash, spends the same effort and says no.
    pub async fn verify(self, password: String, hash: Option<String>) -> Result<bool, HashError> {
        Ok(self.check(password, hash).await?.matches())
    }

    /// Whether `password` matches `hash` (an Argon2id PHC string, or a Django hash), and whether
    /// the hash should be replaced; with no hash, spends the same effort and says no.
    pub async fn check(self, password: String, hash: Option<String>) -> Result<Verdict, HashError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.hasher.dummy_hash.as_ref().clone());
        let verdict = self.run(move || check_blocking(&password, &hash)).await?;
        Ok(if known { verdict } else { Verdict::NoMatch })
    }

    /// Runs `work` on the blocking pool once a hashing slot is free.
    async fn run<T: Send + 'static>(
        self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let _permit = self
            .hasher
            .permits
            .acquire()
            .await
            .context("hasher closed")?;
        let done = tokio::task::spawn_blocking(work)
            .await
            .context("password hashing task failed")?;
        Ok(done)
    }
}

/// What checking a password against a stored hash found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It matches an Argon2id hash.
    Match,
    /// It matches a hash in one of Django's formats, to be replaced by an Argon2id one.
    Legacy,
    /// It does not match, or the hash is unusable (Django's `!…`) or in no known format.
    NoMatch,
}

impl Verdict {
    /// Whether the password matched.
    pub fn matches(self) -> bool {
        self != Verdict::NoMatch
    }
}

/// Caps on the cost a Django hash may ask for. A stored hash asking for more is refused rather
/// than run, as each check ties up a hashing slot (and Argon2's memory): PBKDF2 1,500,000
/// iterations (djangohashers' own ceiling; Django 6.0 uses 1,200,000), bcrypt cost 14 (Django
/// uses 12), scrypt N 2^17, r 16, p 4 (Django: 2^14, 8, 1), Argon2 256 MiB, 10 passes, 16 lanes
/// (Django: 100 MiB, 2, 8).
const MAX_PBKDF2_ITERATIONS: u64 = 1_500_000;
const MAX_BCRYPT_COST: u32 = 14;
const MAX_SCRYPT: (u64, u64, u64) = (1 << 17, 16, 4);
const MAX_ARGON2: (u32, u32, u32) = (256 * 1024, 10, 16);

/// A Django hash this server can verify within its caps, in Django's format (`identify_hasher`):
/// `pbkdf2_sha256`/`pbkdf2_sha1$<iterations>$<salt>$<hash>`, `argon2$argon2id$v=19$m=…,t=…,p=…$…`
/// (and `argon2i`), `bcrypt_sha256$$2b$<cost>$…`, `bcrypt$$2b$<cost>$…`,
/// `scrypt$<salt>$<N>$<r>$<p>$<hash>`, `md5$<salt>$<hash>`, `sha1$<salt>$<hash>`, the unsalted
/// `md5$$<hash>`, `sha1$$<hash>` and bare 32-hex MD5, and `crypt$$<hash>`.
pub fn is_django_hash(hash: &str) -> bool {
    let parts: Vec<&str> = hash.split('$').collect();
    let number = |i: usize| parts.get(i).and_then(|n| n.parse::<u64>().ok());
    match parts.as_slice() {
        ["pbkdf2_sha256" | "pbkdf2_sha1", _, salt, digest] => {
            number(1).is_some_and(|n| (1..=MAX_PBKDF2_ITERATIONS).contains(&n))
                && !salt.is_empty()
                && !digest.is_empty()
        }
        ["argon2", ..] => django_argon2(hash).is_some(),
        ["bcrypt_sha256" | "bcrypt", "", "2a" | "2b" | "2y", cost, rest] => {
            cost.parse::<u32>()
                .is_ok_and(|c| (4..=MAX_BCRYPT_COST).contains(&c))
                && rest.len() == 53
        }
        ["scrypt", _, _, _, _, digest] => {
            let (n, r, p) = MAX_SCRYPT;
            number(2).is_some_and(|v| (2..=n).contains(&v) && v.is_power_of_two())
                && number(3).is_some_and(|v| (1..=r).contains(&v))
                && number(4).is_some_and(|v| (1..=p).contains(&v))
                && !digest.is_empty()
        }
        ["md5" | "sha1", _, digest] => !digest.is_empty(),
        ["crypt", "", digest] => !digest.is_empty(),
        [bare] => bare.len() == 32 && bare.bytes().all(|b| b.is_ascii_hexdigit()),
        _ => false,
    }
}

/// A Django Argon2 hash (`argon2` followed by a PHC string, its salt and hash in standard base64
/// without padding, as PHC writes them) within the caps, as the PHC string.
fn django_argon2(hash: &str) -> Option<&str> {
    let phc = hash.strip_prefix("argon2")?;
    let parsed = PasswordHash::new(phc).ok()?;
    let params = argon2::Params::try_from(&parsed).ok()?;
    let (m, t, p) = MAX_ARGON2;
    (params.m_cost() <= m && params.t_cost() <= t && params.p_cost() <= p).then_some(phc)
}

/// Checks `password` against `hash` on the calling thread (the blocking pool).
fn check_blocking(password: &str, hash: &str) -> Verdict {
    let argon2 = |phc: &str| {
        PasswordHash::new(phc)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    };
    if hash.starts_with("$argon2") {
        return if argon2(hash) {
            Verdict::Match
        } else {
            Verdict::NoMatch
        };
    }
    if !is_django_hash(hash) {
        return Verdict::NoMatch;
    }
    // Django's Argon2 is checked here (djangohashers ignores the variant a hash names, and
    // reads its salt in the wrong base64 alphabet); the others by djangohashers, a port of
    // Django's hashers, which must never take a login down with it.
    let matches = match django_argon2(hash) {
        Some(phc) => argon2(phc),
        None => std::panic::catch_unwind(|| djangohashers::check_password(password, hash))
            .is_ok_and(|checked| checked == Ok(true)),
    };
    if matches {
        Verdict::Legacy
    } else {
        Verdict::NoMatch
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

    /// A Django Argon2 hash of "Sample-pass-2026" as Django's `Argon2PasswordHasher` writes it:
    /// `argon2` + PHC, argon2id, m=102400, t=2, p=8, made here with the same parameters.
    fn django_argon2_vector() -> String {
        let params = argon2::Params::new(102_400, 2, 8, Some(32)).unwrap();
        let hasher = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = b"\xfb\xff\xbf salt of 16 b";
        let phc = hasher
            .hash_password_with_salt(b"Sample-pass-2026", salt)
            .unwrap()
            .to_string();
        assert!(phc.contains('/') || phc.contains('+'), "{phc}");
        format!("argon2{phc}")
    }

    #[tokio::test]
    async fn django_hashes_verify_and_ask_to_be_replaced() {
        let hasher = PasswordHasher::new(8);
        let check = |password: &str, hash: &str| {
            let (hasher, password, hash) = (hasher.clone(), password.to_owned(), hash.to_owned());
            async move {
                hasher
                    .reserve()
                    .unwrap()
                    .check(password, Some(hash))
                    .await
                    .unwrap()
            }
        };
        // Written by Django 5.2 (MRM Chat 2) for "Sample-pass-2026", at 1,000,000 iterations.
        let django = "pbkdf2_sha256$1000000$RNVL98bsIIvFjJu6Mm9b8D$\
                      UZ2w79P/Gul06+GKDy0kMiJOgHNwxh/3w0YSPjY0W7M=";
        assert_eq!(check("Sample-pass-2026", django).await, Verdict::Legacy);
        assert_eq!(check("Sample-pass-2027", django).await, Verdict::NoMatch);
        // Django's documented test vectors (django/tests/auth_tests/test_hashers.py).
        let pbkdf2 =
            "pbkdf2_sha256$24000$KQ8zeK6wKRuR$cmhbSt1XVKuO4FGd9+AX8qSBD4Z0395nZatXTJpEtTY=";
        assert_eq!(check("ExjGmyUT73bFoT", pbkdf2).await, Verdict::Legacy);
        assert_eq!(check("wrong", pbkdf2).await, Verdict::NoMatch);
        let sha1 = "pbkdf2_sha1$24000$KQ8zeK6wKRuR$tSJh4xdxfMJotlxfkCGjTFpGYZU=";
        assert_eq!(check("ExjGmyUT73bFoT", sha1).await, Verdict::Legacy);
        let md5 = "md5$KQ8zeK6wKRuR$0137e4d74cb2d9ed9cb1a5f391f6175e";
        assert_eq!(check("ExjGmyUT73bFoT", md5).await, Verdict::Legacy);
        // Django 5.2's Argon2 (argon2id, 100 MiB) for "Sample-pass-2026", salt with `+` and `/`.
        let argon2 = django_argon2_vector();
        assert_eq!(check("Sample-pass-2026", &argon2).await, Verdict::Legacy);
        assert_eq!(check("Sample-pass-2027", &argon2).await, Verdict::NoMatch);
        for unusable in [
            "!abcdef",
            "",
            "whatever$x$y",
            "pbkdf2_sha256$1500001$salt$hash",
            "bcrypt$$2b$31$abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz0",
            "scrypt$salt$1048576$8$1$hash",
            "argon2$argon2id$v=19$m=1048576,t=2,p=8$c2FsdHNhbHQ$aGFzaA",
            "unsalted_md5$abc",
        ] {
            assert!(!is_django_hash(unusable), "{unusable}");
            assert_eq!(
                check("ExjGmyUT73bFoT", unusable).await,
                Verdict::NoMatch,
                "{unusable}"
            );
        }
        let own = hasher.hash("s3cret-enough".into()).await.unwrap();
        assert_eq!(check("s3cret-enough", &own).await, Verdict::Match);
    }

    #[tokio::test]
    async fn verifies_only_the_right_password() {
        let hasher = PasswordHasher::new(8);
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
        let hasher = PasswordHasher::new(8);
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

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let hasher = PasswordHasher::new(0);
        let parallel = hasher.permits.available_permits();
        // Every slot taken and none left to wait in: the next hash is refused, not queued.
        let held: Vec<_> = (0..parallel).map(|_| hasher.reserve().unwrap()).collect();
        assert!(matches!(
            hasher.hash("s3cret-enough".into()).await,
            Err(HashError::Busy)
        ));
        assert!(matches!(
            hasher.verify("s3cret-enough".into(), None).await,
            Err(HashError::Busy)
        ));
        drop(held);
        assert!(hasher.hash("s3cret-enough".into()).await.is_ok());
    }
}
