//! How chat events travel between nodes. A single node needs no transport: its broker hands
//! events straight to its own hub. A multi-node broker publishes to a shared bus and feeds what it
//! receives to the local hub; handlers and sockets do not change.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{
    hub::{Hub, RoomEvent},
    registry::Ended,
};

/// Carries chat events to every node's hub: [`LocalBroker`] for one node, the Redis broker for
/// several.
pub trait Broker: Send + Sync {
    /// Delivers the event to the hubs of every node, this one included.
    fn publish(&self, chat_id: i64, event: RoomEvent);

    /// Tells the other nodes that credentials ended (this node has acted already); done when
    /// the bus has taken the news. A single node has no one to tell.
    fn credentials_ended(&self, _ended: &Ended) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// The single-node broker: in-process, synchronous, lossless.
pub struct LocalBroker {
    hub: Arc<Hub>,
}

impl LocalBroker {
    /// A broker that hands every event to `hub`.
    pub fn new(hub: Arc<Hub>) -> Self {
        Self { hub }
    }
}

impl Broker for LocalBroker {
    fn publish(&self, chat_id: i64, event: RoomEvent) {
        self.hub.dispatch(chat_id, event);
    }
}
