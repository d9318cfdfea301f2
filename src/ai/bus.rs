//! How AI replies reach every node. A reply runs on the node that was asked; its events go to
//! the owner's sockets on that node at once and, through the bus, on every other node. A cancel
//! asked on any node reaches the node running the reply. One node needs none of this
//! ([`NoBus`]); several share Redis (`crate::realtime::redis`).
//!
//! Across nodes, a chat's one running reply is a lease in the bus that its node renews; the
//! reply's text so far is kept beside it, so a socket that joins on another node mid-reply
//! starts from it. Deltas carry their byte offset in the reply, so the text so far and the live
//! deltas join with no gap or overlap whichever arrives first.

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::generation::AiEvent;
use crate::wire::views::AiMessageView;

/// An AI chat's event as it travels between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "ai", rename_all = "snake_case")]
pub enum AiWire {
    UserMessage {
        message: AiMessageView,
    },
    Delta {
        id: i64,
        offset: usize,
        delta: String,
    },
    Reply {
        message: AiMessageView,
    },
    Failed {
        id: Option<i64>,
        message: String,
    },
    ChatDeleted,
    BranchSelected {
        message: i64,
    },
    /// Asks the node running the chat's reply to stop it.
    Cancel,
}

impl AiWire {
    /// The wire form of an event.
    pub fn from_event(event: &AiEvent) -> AiWire {
        match event.clone() {
            AiEvent::UserMessage(message) => AiWire::UserMessage { message },
            AiEvent::Delta { id, offset, delta } => AiWire::Delta { id, offset, delta },
            AiEvent::Reply(message) => AiWire::Reply { message },
            AiEvent::Failed { id, message } => AiWire::Failed { id, message },
            AiEvent::ChatDeleted => AiWire::ChatDeleted,
            AiEvent::BranchSelected { message } => AiWire::BranchSelected { message },
        }
    }

    /// The event it carries; `None` for a cancel, which is a request, not an event.
    pub fn into_event(self) -> Option<AiEvent> {
        Some(match self {
            AiWire::UserMessage { message } => AiEvent::UserMessage(message),
            AiWire::Delta { id, offset, delta } => AiEvent::Delta { id, offset, delta },
            AiWire::Reply { message } => AiEvent::Reply(message),
            AiWire::Failed { id, message } => AiEvent::Failed { id, message },
            AiWire::ChatDeleted => AiEvent::ChatDeleted,
            AiWire::BranchSelected { message } => AiEvent::BranchSelected { message },
            AiWire::Cancel => return None,
        })
    }
}

/// An AI chat's event from another node.
pub type Remote = (i64, AiWire);

/// The link between nodes for AI replies.
pub trait ReplyBus: Send + Sync {
    /// Claims the AI chat's one running reply among all nodes for `lease`, with `token` naming
    /// this run; false when another node runs one. A bus that cannot tell (Redis down) lets the
    /// claim through: this node then only knows its own replies.
    fn claim(&self, ai_chat_id: i64, token: &str, lease: Duration) -> BoxFuture<'_, bool>;
    /// Renews the claim for `lease` from now, if it is still `token`'s or has vanished (Redis
    /// restarted or failed over meanwhile), so a live reply is never taken for a dead one; and
    /// the run's place among user `user_id`'s replies ([`ReplyBus::occupy`]).
    /// Queued in order with the run's release, so a renewal never lands after it.
    fn renew(&self, ai_chat_id: i64, user_id: i64, token: &str, lease: Duration);
    /// Takes one of user `user_id`'s `max` places for replies running on any node
    /// (`MRM_AI_MAX_CONCURRENT_PER_USER`), for `lease` unless renewed: false when all are taken;
    /// `None` when the bus cannot tell (this node's own count then stands). `vacated` are places
    /// of this node's runs given back lately, whose removal may not have reached the bus yet.
    fn occupy(
        &self,
        user_id: i64,
        token: &str,
        max: usize,
        lease: Duration,
        vacated: Vec<String>,
    ) -> BoxFuture<'_, Option<bool>>;
    /// Gives the place [`ReplyBus::occupy`] took back.
    fn vacate(&self, user_id: i64, token: &str);
    /// Gives the claim up, with the reply's text so far, if it is still `token`'s; queued in
    /// order with the events published before it.
    fn release(&self, ai_chat_id: i64, token: &str);
    /// Reply `reply_id` started under the claim: its text so far is empty, and is kept while
    /// the claim is renewed (and a while after, for a node that settles it).
    fn started(&self, ai_chat_id: i64, reply_id: i64, lease: Duration);
    /// Tells the other nodes of an event of a reply running here; a delta also extends the
    /// reply's text so far.
    fn publish(&self, ai_chat_id: i64, event: &AiEvent);
    /// Reply `reply_id` was settled after its node stopped: its text so far is no longer
    /// needed.
    fn forget(&self, ai_chat_id: i64, reply_id: i64);
    /// The id and text so far of a reply running on another node.
    fn in_progress(&self, ai_chat_id: i64) -> BoxFuture<'_, Option<(i64, String)>>;
    /// The id and text so far of the AI chat's last reply, claimed or not: what a node that
    /// stopped left of it.
    fn leftover(&self, ai_chat_id: i64) -> BoxFuture<'_, Option<(i64, String)>>;
    /// Asks the node running the AI chat's reply to cancel it; true when one was running.
    fn cancel(&self, ai_chat_id: i64) -> BoxFuture<'_, bool>;
    /// Whether some node still holds the AI chat's claim; `None` when the bus cannot tell.
    fn claimed(&self, ai_chat_id: i64) -> BoxFuture<'_, Option<bool>>;
    /// The events other nodes send; taken once, by the node's replies.
    fn incoming(&self) -> Option<mpsc::Receiver<Remote>>;
    /// Whether there are other nodes to tell (false for [`NoBus`]).
    fn shared(&self) -> bool;
}

/// A single node: nothing to tell anyone.
pub struct NoBus;

impl ReplyBus for NoBus {
    fn claim(&self, _: i64, _: &str, _: Duration) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }
    fn renew(&self, _: i64, _: i64, _: &str, _: Duration) {}
    fn occupy(
        &self,
        _: i64,
        _: &str,
        _: usize,
        _: Duration,
        _: Vec<String>,
    ) -> BoxFuture<'_, Option<bool>> {
        Box::pin(async { None })
    }
    fn vacate(&self, _: i64, _: &str) {}
    fn release(&self, _: i64, _: &str) {}
    fn started(&self, _: i64, _: i64, _: Duration) {}
    fn forget(&self, _: i64, _: i64) {}
    fn publish(&self, _: i64, _: &AiEvent) {}
    fn in_progress(&self, _: i64) -> BoxFuture<'_, Option<(i64, String)>> {
        Box::pin(async { None })
    }
    fn leftover(&self, _: i64) -> BoxFuture<'_, Option<(i64, String)>> {
        Box::pin(async { None })
    }
    fn cancel(&self, _: i64) -> BoxFuture<'_, bool> {
        Box::pin(async { false })
    }
    fn claimed(&self, _: i64) -> BoxFuture<'_, Option<bool>> {
        Box::pin(async { Some(false) })
    }
    fn incoming(&self) -> Option<mpsc::Receiver<Remote>> {
        None
    }
    fn shared(&self) -> bool {
        false
    }
}
