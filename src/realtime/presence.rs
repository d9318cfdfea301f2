//! Presence: who is online in a chat. A room counts its node's sockets per user; with several
//! nodes, each announces its users to a [`SharedPresence`] (Redis) and reads everyone back.
//! Every socket counts; only `mrm.v2` sockets are sent presence frames.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

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

/// What a recount found, and who is owed which frame (`mrm.v2` sockets only get presence).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recount {
    /// Users online now who were not at the last recount, by id.
    pub joined: Vec<Member>,
    /// Users online at the last recount who are not now, by id.
    pub left: Vec<Member>,
    /// Sockets owed the whole list (they just joined, or missed a change): they get a full
    /// `presence` frame instead of the delta.
    pub full: BTreeSet<ConnId>,
}

impl Recount {
    /// Whether anyone came or went.
    pub fn changed(&self) -> bool {
        !self.joined.is_empty() || !self.left.is_empty()
    }
}

/// One room's presence: this node's sockets per user, and the list its sockets were last shown.
///
/// Changes are not sent one by one: the room recounts at most once per coalescing interval, and
/// then sends each socket one frame: the delta since the last recount (O(1) per change per
/// socket), or the whole list to the sockets that are owed it. So a burst of arrivals into a
/// large room costs each socket a few small frames rather than one full list per arrival.
#[derive(Debug, Default)]
pub struct RoomPresence {
    /// Sockets per user on this node.
    here: BTreeMap<i64, (Member, usize)>,
    /// The presence list the sockets were last brought to, by user id.
    shown: BTreeMap<i64, Member>,
    /// Whether `here` changed since presence was last announced.
    dirty: bool,
    /// Whether another node's presence changed since the last recount.
    remote: bool,
    /// Sockets owed the whole list at the next recount.
    owed: BTreeSet<ConnId>,
}

impl RoomPresence {
    /// A socket of `member` joined; `conn` is owed the whole list when given (its socket
    /// speaks `mrm.v2`).
    pub fn arrive(&mut self, conn: Option<ConnId>, member: Member) {
        if let Some(conn) = conn {
            self.owed.insert(conn);
        }
        let entry = self.here.entry(member.id).or_insert((member, 0));
        entry.1 += 1;
        if entry.1 == 1 {
            self.dirty = true;
        }
    }

    /// Socket `conn` of user `user_id` left.
    pub fn depart(&mut self, conn: ConnId, user_id: i64) {
        self.owed.remove(&conn);
        if let Some(entry) = self.here.get_mut(&user_id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                self.here.remove(&user_id);
                self.dirty = true;
            }
        }
    }

    /// Socket `conn` missed a presence frame (its queue was full): it gets the whole list at
    /// the next recount.
    pub fn owe(&mut self, conn: ConnId) {
        self.owed.insert(conn);
    }

    /// Another node's users changed: recount at the next turn.
    pub fn remote_changed(&mut self) {
        self.remote = true;
    }

    /// Every socket left at once (the chat is gone): this node withdraws its users.
    pub fn clear(&mut self) {
        self.here.clear();
        self.owed.clear();
        self.dirty = true;
    }

    /// Whether a recount is owed: someone came or went (here or elsewhere), or a socket has not
    /// had the list yet.
    pub fn pending(&self) -> bool {
        self.dirty || self.remote || !self.owed.is_empty()
    }

    /// Whether this node's users changed since they were last announced.
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// Recounts who is online (here, or on every node when presence is `shared`) and says what
    /// changed since the last recount and who is owed the whole list. `announce` publishes this
    /// node's users first; `notify` tells the other nodes to recount.
    pub async fn recount(
        &mut self,
        shared: Option<&dyn SharedPresence>,
        chat_id: i64,
        announce: bool,
        notify: bool,
    ) -> Recount {
        let here: Vec<Member> = self.here.values().map(|(m, _)| m.clone()).collect();
        self.dirty = false;
        self.remote = false;
        let mut everyone: BTreeMap<i64, Member> = BTreeMap::new();
        if let Some(shared) = shared {
            if announce {
                shared.announce(chat_id, here.clone()).await;
                if notify {
                    shared.changed(chat_id);
                }
            }
            if let Some(online) = shared.online(chat_id).await {
                everyone.extend(online.into_iter().map(|m| (m.id, m)));
            }
        }
        // This node's own users count even if the shared view lags.
        everyone.extend(here.into_iter().map(|m| (m.id, m)));
        let joined = everyone
            .iter()
            .filter(|(id, m)| self.shown.get(id) != Some(m))
            .map(|(_, m)| m.clone())
            .collect();
        let left = self
            .shown
            .iter()
            .filter(|(id, _)| !everyone.contains_key(id))
            .map(|(_, m)| m.clone())
            .collect();
        self.shown = everyone;
        Recount {
            joined,
            left,
            full: std::mem::take(&mut self.owed),
        }
    }

    /// The full `presence` frame of the list last counted.
    pub fn frame(&self) -> Utf8Bytes {
        let online: Vec<Member> = self.shown.values().cloned().collect();
        frames::presence(&online)
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

    fn ids(members: &[Member]) -> Vec<i64> {
        members.iter().map(|m| m.id).collect()
    }

    #[tokio::test]
    async fn a_user_counts_once_whatever_their_sockets() {
        let mut presence = RoomPresence::default();
        presence.arrive(Some(1), member(7));
        presence.arrive(Some(2), member(7));
        let recount = presence.recount(None, 1, true, true).await;
        assert_eq!(ids(&recount.joined), [7]);
        assert_eq!(recount.full, BTreeSet::from([1, 2]));
        assert!(presence
            .frame()
            .as_str()
            .contains(r#""online":[{"id":7,"username":"u7"}]"#));
        presence.depart(1, 7);
        assert!(!presence.dirty(), "one socket of the user is still here");
        presence.arrive(Some(3), member(8));
        let recount = presence.recount(None, 1, true, true).await;
        assert_eq!(
            (ids(&recount.joined), ids(&recount.left)),
            (vec![8], vec![])
        );
        presence.arrive(Some(4), member(8));
        let recount = presence.recount(None, 1, true, true).await;
        assert!(!recount.changed());
        assert_eq!(recount.full, BTreeSet::from([4]));
        presence.depart(2, 7);
        assert!(presence.dirty());
        presence.clear();
        let recount = presence.recount(None, 1, true, true).await;
        assert_eq!(ids(&recount.left), [7, 8]);
        assert!(presence.frame().as_str().contains(r#""online":[]"#));
    }

    #[tokio::test]
    async fn changes_between_recounts_come_as_one_net_delta() {
        let mut presence = RoomPresence::default();
        presence.arrive(None, member(1));
        presence.arrive(None, member(2));
        presence.recount(None, 1, true, true).await;
        // 3 comes, 2 goes, 4 comes and goes, 1 goes and comes back: the net change only.
        presence.arrive(None, member(3));
        presence.depart(11, 2);
        presence.arrive(None, member(4));
        presence.depart(12, 4);
        presence.depart(13, 1);
        presence.arrive(Some(14), member(1));
        assert!(presence.pending());
        let recount = presence.recount(None, 1, true, true).await;
        assert_eq!(
            (ids(&recount.joined), ids(&recount.left)),
            (vec![3], vec![2])
        );
        assert_eq!(recount.full, BTreeSet::from([14]));
        assert!(!presence.pending());
        presence.owe(15);
        assert!(presence.pending());
        presence.depart(15, 99);
        assert!(!presence.pending(), "a socket that left is owed nothing");
    }
}
