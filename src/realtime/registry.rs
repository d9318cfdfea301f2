//! This node's register of sockets, chat and AI alike: how many are open, in all and per user,
//! and which credential opened each, so that a credential that ends closes its sockets.
//!
//! A socket takes a [`Slot`] at its handshake, before the upgrade is answered, and gives it back
//! when the slot is dropped (the handshake failed, the client went away before upgrading, or the
//! connection ended): handshakes in flight count toward the limits as much as open sockets.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, OnceLock},
};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::auth::Credential;

/// Credentials that have ended, and so which sockets must close. Travels between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "credential", rename_all = "snake_case")]
pub enum Ended {
    /// One browser session (logout): the sockets opened with it.
    Session {
        /// The SHA-256 hash of the session key, as stored.
        key_hash: String,
    },
    /// One bearer token (revoked): the sockets opened with it.
    Token {
        /// The SHA-256 hash of the token, as stored.
        token_hash: String,
    },
    /// Every credential of a user (password changed, account deactivated or deleted), except the
    /// session `kept` (the hash of the session of a user who changed their own password).
    User { user_id: i64, kept: Option<String> },
}

impl Ended {
    /// Whether a socket of `user_id` opened with `credential` must close.
    fn covers(&self, user_id: i64, credential: &Credential) -> bool {
        match (self, credential) {
            (Ended::Session { key_hash }, Credential::Session { key_hash: held }) => {
                key_hash == held
            }
            (Ended::Token { token_hash }, Credential::Token { token_hash: held }) => {
                token_hash == held
            }
            (
                Ended::User {
                    user_id: ended,
                    kept,
                },
                held,
            ) => {
                *ended == user_id
                    && !matches!(
                        (kept, held),
                        (Some(kept), Credential::Session { key_hash }) if kept == key_hash
                    )
            }
            _ => false,
        }
    }

    /// The user whose every credential ended, if that is what ended.
    pub fn whole_user(&self) -> Option<i64> {
        match self {
            Ended::User { user_id, .. } => Some(*user_id),
            _ => None,
        }
    }
}

/// Why a handshake gets no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// This node holds `MRM_MAX_SOCKETS` sockets already (503).
    Full,
    /// The user holds `MRM_MAX_SOCKETS_PER_USER` sockets on this node already (429).
    UserFull,
}

struct Open {
    user_id: i64,
    credential: Credential,
    ended: CancellationToken,
}

#[derive(Default)]
struct Inner {
    next: u64,
    open: HashMap<u64, Open>,
    per_user: HashMap<i64, usize>,
}

/// Called with the user's id when every credential of a user ends on any node.
pub type UserEndedHook = Box<dyn Fn(i64) + Send + Sync>;

/// The sockets of this node by user and credential, within `MRM_MAX_SOCKETS` in all and
/// `MRM_MAX_SOCKETS_PER_USER` per user.
pub struct SocketRegistry {
    max_sockets: usize,
    max_per_user: usize,
    inner: Mutex<Inner>,
    on_user_ended: OnceLock<UserEndedHook>,
}

impl SocketRegistry {
    /// An empty register with these limits (each at least 1).
    pub fn new(max_sockets: usize, max_per_user: usize) -> Arc<SocketRegistry> {
        Arc::new(SocketRegistry {
            max_sockets,
            max_per_user,
            inner: Mutex::new(Inner::default()),
            on_user_ended: OnceLock::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sockets held now, handshakes in flight included.
    pub fn len(&self) -> usize {
        self.lock().open.len()
    }

    /// Whether no socket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when another socket would exceed `MRM_MAX_SOCKETS`: a cheap early answer before
    /// credentials are even read.
    pub fn at_capacity(&self) -> bool {
        self.len() >= self.max_sockets
    }

    /// Takes a slot for a socket of `user_id` opened with `credential`, or says which limit is
    /// reached. The slot is given back when dropped.
    pub fn admit(self: &Arc<Self>, user_id: i64, credential: Credential) -> Result<Slot, Refused> {
        let mut inner = self.lock();
        if inner.open.len() >= self.max_sockets {
            return Err(Refused::Full);
        }
        let held = inner.per_user.entry(user_id).or_default();
        if *held >= self.max_per_user {
            return Err(Refused::UserFull);
        }
        *held += 1;
        inner.next += 1;
        let id = inner.next;
        let ended = CancellationToken::new();
        inner.open.insert(
            id,
            Open {
                user_id,
                credential,
                ended: ended.clone(),
            },
        );
        Ok(Slot {
            registry: self.clone(),
            id,
            user_id,
            ended,
        })
    }

    /// Tells every socket of this node opened with an ended credential to close (they close
    /// with 4001), and when a whole user's credentials ended, runs the hook set with
    /// [`SocketRegistry::on_user_ended`]. Returns how many sockets were told.
    pub fn end(&self, ended: &Ended) -> usize {
        let told = {
            let inner = self.lock();
            let mut told = 0;
            for open in inner.open.values() {
                if ended.covers(open.user_id, &open.credential) {
                    open.ended.cancel();
                    told += 1;
                }
            }
            told
        };
        if let (Some(user_id), Some(hook)) = (ended.whole_user(), self.on_user_ended.get()) {
            hook(user_id);
        }
        told
    }

    /// The distinct credentials the sockets of this node were opened with, handshakes in
    /// flight included: what a check of ended credentials asks the database about.
    pub fn credentials(&self) -> Vec<Credential> {
        let inner = self.lock();
        let held: HashSet<&Credential> = inner.open.values().map(|o| &o.credential).collect();
        held.into_iter().cloned().collect()
    }

    /// Tells every socket of this node opened with one of `ended` to close (with 4001), as
    /// [`SocketRegistry::end`] does for one ended credential; returns how many were told.
    pub fn end_each(&self, ended: &HashSet<Credential>) -> usize {
        if ended.is_empty() {
            return 0;
        }
        let inner = self.lock();
        let mut told = 0;
        for open in inner.open.values() {
            if ended.contains(&open.credential) {
                open.ended.cancel();
                told += 1;
            }
        }
        told
    }

    /// Sets what happens, besides closing sockets, when every credential of a user ends (set
    /// once, at start-up): the user's running AI replies stop.
    pub fn on_user_ended(&self, hook: UserEndedHook) {
        let _ = self.on_user_ended.set(hook);
    }

    fn release(&self, id: u64, user_id: i64) {
        let mut inner = self.lock();
        inner.open.remove(&id);
        if let Some(held) = inner.per_user.get_mut(&user_id) {
            *held -= 1;
            if *held == 0 {
                inner.per_user.remove(&user_id);
            }
        }
    }
}

/// One socket's place in the register, from its handshake to its end. Dropping it frees the
/// place.
pub struct Slot {
    registry: Arc<SocketRegistry>,
    id: u64,
    user_id: i64,
    ended: CancellationToken,
}

impl Slot {
    /// Cancelled when the credential the socket was opened with ends.
    pub fn ended(&self) -> CancellationToken {
        self.ended.clone()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.release(self.id, self.user_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(key: &str) -> Credential {
        Credential::Session {
            key_hash: key.into(),
        }
    }

    fn token(key: &str) -> Credential {
        Credential::Token {
            token_hash: key.into(),
        }
    }

    #[test]
    fn limits_count_every_slot_until_it_is_dropped() {
        let registry = SocketRegistry::new(3, 2);
        let a1 = registry.admit(1, session("a")).unwrap();
        let _a2 = registry.admit(1, token("t")).unwrap();
        assert_eq!(
            registry.admit(1, session("a")).err(),
            Some(Refused::UserFull)
        );
        let _b1 = registry.admit(2, session("b")).unwrap();
        assert!(registry.at_capacity());
        assert_eq!(registry.admit(3, session("c")).err(), Some(Refused::Full));
        drop(a1);
        assert!(!registry.at_capacity());
        assert!(registry.admit(1, session("a")).is_ok());
    }

    #[test]
    fn an_ended_credential_reaches_only_its_sockets() {
        let registry = SocketRegistry::new(10, 10);
        let s1 = registry.admit(1, session("s1")).unwrap();
        let s2 = registry.admit(1, session("s2")).unwrap();
        let t1 = registry.admit(1, token("t1")).unwrap();
        let other = registry.admit(2, session("x")).unwrap();

        let logout = Ended::Session {
            key_hash: "s1".into(),
        };
        assert_eq!(registry.end(&logout), 1);
        assert!(s1.ended().is_cancelled());
        assert!(!s2.ended().is_cancelled() && !t1.ended().is_cancelled());

        let revoked = Ended::Token {
            token_hash: "t1".into(),
        };
        assert_eq!(registry.end(&revoked), 1);
        assert!(t1.ended().is_cancelled() && !s2.ended().is_cancelled());

        let password = Ended::User {
            user_id: 1,
            kept: Some("s2".into()),
        };
        registry.end(&password);
        assert!(!s2.ended().is_cancelled());
        registry.end(&Ended::User {
            user_id: 1,
            kept: None,
        });
        assert!(s2.ended().is_cancelled());
        assert!(!other.ended().is_cancelled());
    }

    #[test]
    fn a_check_ends_only_the_credentials_found_ended() {
        let registry = SocketRegistry::new(10, 10);
        let s1 = registry.admit(1, session("s1")).unwrap();
        let s1_again = registry.admit(1, session("s1")).unwrap();
        let t1 = registry.admit(1, token("t1")).unwrap();
        let mut held = registry.credentials();
        held.sort_by_key(|c| format!("{c:?}"));
        assert_eq!(
            held,
            vec![session("s1"), token("t1")],
            "each credential once"
        );

        let ended: HashSet<Credential> = [session("s1")].into_iter().collect();
        assert_eq!(registry.end_each(&ended), 2);
        assert!(s1.ended().is_cancelled() && s1_again.ended().is_cancelled());
        assert!(!t1.ended().is_cancelled());
    }
}
