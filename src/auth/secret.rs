//! Random secrets and the hashes they are stored under.

use rand::{distr::Alphanumeric, rand_core::UnwrapErr, rngs::SysRng, RngExt};
use sha2::{Digest, Sha256};

/// A random string of `len` ASCII letters and digits from the OS generator
/// (`len` 43 carries over 256 bits). Panics if the OS cannot supply randomness.
pub fn random_token(len: usize) -> String {
    UnwrapErr(SysRng)
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// What the database keeps of a session key or bearer token: its SHA-256, hex-encoded. The
/// secrets are long and random, so a fast hash is enough and lookups stay one index probe.
pub fn storage_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Equality that takes the same time wherever the first difference is.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}
