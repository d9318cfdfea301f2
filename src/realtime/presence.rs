//! Presence: who is online in a chat. A room counts its node's sockets per user; with several
//! nodes, each announces its users to a [`SharedPresence`] (Redis) and reads everyone back.

use std::{collections::BTreeMap, time::Duration};

use axum::extract::ws::Utf8Bytes;
use futures_util::future::BoxFuture;

use super::hub::ConnId;
use crate::wire::frames::{self, Member};

/// Presence shared between nodes. Without it, presence counts this node's sockets only.
pub trait SharedPresence: Send + Sync {
    /// Records the users this node has online in the chat (an empty list withdraws them).
    /// Called on every change and as a heartbeat; entries not refreshed expire.
    fn announce(&self, chat_id: i64, members: Vec<Member>) -> BoxFuture<'_, ()>;
    /// Everyone online in the chat on any node; `None` when that cannot be known right now.
    fn online(&self, chat_id: i64) -> BoxFuture<'_, Option<Vec<Member>>>;
    /// Tells the other nodes that the chat's presence changed.
    fn changed(&self, chat_id: i64);
    /// How often rooms refresh their entries and recount.
    fn heartbeat(&self) -> Duration;
}

/// Who a presence frame must go to after a recount.
#[derive(Debug, PartialEq, Eq)]
pub enum Audience {
    /// The list changed: every socket.
    Everyone,
    /// Unchanged: only the sockets that joined since the last recount.
    Newcomers(Vec<ConnId>),
}

/// One room's presence: this node's sockets per user, and the list its sockets were last shown.
#[derive(Debug, Default)]
pub struct RoomPresence {
    /// Sockets per user on this node.
    here: BTreeMap<i64, (Member, usize)>,
    /// The presence list the sockets were last sent.
    shown: Vec<Member>,
    /// Whether `here` changed since presence was last announced.
    dirty: bool,
    /// Sockets that joined and still need a presence frame.
    newcomers: Vec<ConnId>,
}

impl RoomPresence {
    /// A socket `conn` of `member` joined.
    pub fn arrive(&mut self, conn: ConnId, member: Member) {
        self.newcomers.push(conn);
        let entry = self.here.entry(member.id).or_insert((member, 0));
        entry.1 += 1;
        if entry.1 == 1 {
            self.dirty = true;
        }
    }

    /// A socket of user `user_id` left.
    pub fn depart(&mut self, user_id: i64) {
        if let Some(entry) = self.here.get_mut(&user_id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                self.here.remove(&user_id);
                self.dirty = true;
            }
        }
    }

    /// Every socket left at once (the chat is gone): this node withdraws its users.
    pub fn clear(&mut self) {
        self.here.clear();
        self.dirty = true;
    }

    /// Whether a recount is owed: someone came or went, or a socket has not had the list yet.
    pub fn pending(&self) -> bool {
        self.dirty || !self.newcomers.is_empty()
    }

    /// Whether this node's users changed since they were last announced.
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// Recounts who is online (here, or on every node when presence is `shared`) and says who
    /// must be sent the list. `announce` publishes this node's users first; `notify` tells the
    /// other nodes to recount.
    pub async fn recount(
        &mut self,
        shared: Option<&dyn SharedPresence>,
        chat_id: i64,
        announce: bool,
        notify: bool,
    ) -> Audience {
        let here: Vec<Member> = self.here.values().map(|(m, _)| m.clone()).collect();
        self.dirty = false;
        let everyone = match shared {
            None => here,
            Some(shared) => {
                if announce {
                    shared.announce(chat_id, here.clone()).await;
                    if notify {
                        shared.changed(chat_id);
                    }
                }
                match shared.online(chat_id).await {
                    Some(mut everyone) => {
                        // This node's own users count even if the shared view lags.
                        for member in here {
                            if !everyone.iter().any(|m| m.id == member.id) {
                                everyone.push(member);
                            }
                        }
                        everyone.sort_by_key(|m| m.id);
                        everyone
                    }
                    None => here,
                }
            }
        };
        let newcomers = std::mem::take(&mut self.newcomers);
        if everyone != self.shown {
            self.shown = everyone;
            Audience::Everyone
        } else {
            Audience::Newcomers(newcomers)
        }
    }

    /// The `presence` frame of the list last counted.
    pub fn frame(&self) -> Utf8Bytes {
        frames::presence(&self.shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: i64) -> Member {
        Member {
            id,
            username: format!("u{id}"),
        }
    }

    #[tokio::test]
    async fn a_user_counts_once_whatever_their_sockets() {
        let mut presence = RoomPresence::default();
        presence.arrive(1, member(7));
        presence.arrive(2, member(7));
        assert_eq!(
            presence.recount(None, 1, true, true).await,
            Audience::Everyone
        );
        assert!(presence
            .frame()
            .as_str()
            .contains(r#""online":[{"id":7,"username":"u7"}]"#));
        presence.depart(7);
        assert!(!presence.dirty(), "one socket of the user is still here");
        presence.arrive(3, member(8));
        assert_eq!(
            presence.recount(None, 1, true, true).await,
            Audience::Everyone
        );
        presence.arrive(4, member(8));
        assert_eq!(
            presence.recount(None, 1, true, true).await,
            Audience::Newcomers(vec![4])
        );
        presence.depart(7);
        assert!(presence.dirty());
        presence.clear();
        assert_eq!(
            presence.recount(None, 1, true, true).await,
            Audience::Everyone
        );
        assert!(presence.frame().as_str().contains(r#""online":[]"#));
    }
}
