//! Posting a message: the one path REST and WebSocket sends share.
//!
//! Messages are written by one task per process, which takes every message waiting at that
//! moment and commits them in one transaction (group commit): under load a commit carries many
//! messages, at rest a message waits for nobody. Each message is committed before it is
//! published, and published in `seq` order right after the commit, so no socket ever sees a
//! message the database does not have. Callers that go away (a dropped HTTP request) cannot
//! leave a committed message unpublished: the writer finishes the job.

use tokio::sync::{mpsc, oneshot};

use crate::{
    domain::MessageContent,
    realtime::{hub::RoomEvent, Realtime},
    service::{ServiceError, ServiceResult},
    store::{self, messages::NewMessage, users::User, Db},
    wire::{
        frames::MessageFrames,
        views::{MessageView, UserView},
    },
};

/// Most messages committed together.
const MAX_BATCH: usize = 256;
/// Messages waiting for the writer before senders wait too.
const QUEUE: usize = 4096;

struct Pending {
    chat_id: i64,
    sender: UserView,
    content: MessageContent,
    saved: oneshot::Sender<sqlx::Result<Option<MessageView>>>,
}

/// A handle to the process's one message-writer task, shared by every surface (cheap to
/// clone). At most 4,096 messages wait for the writer; past that, [`MessageWriter::post`] waits
/// for room (backpressure on senders rather than unbounded memory).
#[derive(Clone)]
pub struct MessageWriter {
    queue: mpsc::Sender<Pending>,
}

impl MessageWriter {
    /// Starts the writer task; it ends when the last handle is dropped.
    pub fn start(db: Db, realtime: Realtime) -> MessageWriter {
        let (queue, pending) = mpsc::channel(QUEUE);
        tokio::spawn(write_loop(db, realtime, pending));
        MessageWriter { queue }
    }

    /// Saves and publishes a message; the answer shows the sender as they see themself. `None`
    /// when the sender is not a participant of the chat (or the chat is gone). Errors: `Internal` when the database fails or the writer task has
    /// stopped. No rate limit here: [`send`] applies it.
    pub async fn post(
        &self,
        chat_id: i64,
        sender: &User,
        content: MessageContent,
    ) -> ServiceResult<Option<MessageView>> {
        let (saved, answer) = oneshot::channel();
        let pending = Pending {
            chat_id,
            sender: UserView::own(sender),
            content,
            saved,
        };
        let gone = || ServiceError::Internal(anyhow::anyhow!("the message writer stopped"));
        self.queue.send(pending).await.map_err(|_| gone())?;
        Ok(answer.await.map_err(|_| gone())??)
    }
}

async fn write_loop(db: Db, realtime: Realtime, mut pending: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while pending.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let rows: Vec<NewMessage<'_>> = batch
            .iter()
            .map(|p| NewMessage {
                chat_id: p.chat_id,
                sender_id: p.sender.id,
                content: p.content.as_str(),
            })
            .collect();
        match store::messages::insert_batch(&db, &rows).await {
            Ok(saved) => {
                drop(rows);
                // Published chat by chat in seq order, as committed.
                let mut done: Vec<_> = batch.drain(..).zip(saved).collect();
                done.sort_by_key(|(p, s)| (p.chat_id, s.map(|s| s.seq)));
                for (p, saved) in done {
                    finish(&realtime, p, Ok(saved));
                }
            }
            Err(err) => {
                // One bad row fails the whole transaction: retry each alone, so only it fails.
                tracing::warn!(error = %err, size = batch.len(), "batched insert failed; retrying one by one");
                drop(rows);
                for p in batch.drain(..) {
                    let saved =
                        store::messages::insert(&db, p.chat_id, p.sender.id, p.content.as_str())
                            .await;
                    finish(&realtime, p, saved);
                }
            }
        }
    }
}

/// Publishes a committed message and answers its sender.
fn finish(realtime: &Realtime, p: Pending, saved: sqlx::Result<Option<store::messages::Saved>>) {
    let outcome = saved.map(|saved| {
        saved.map(|saved| {
            let view = MessageView {
                id: saved.id,
                chat: p.chat_id,
                seq: saved.seq,
                sender: p.sender,
                content: p.content.into_string(),
                timestamp: saved.created_at,
            };
            realtime.publish(
                p.chat_id,
                RoomEvent::Message {
                    seq: saved.seq,
                    frames: MessageFrames::new(view.clone()),
                },
            );
            view
        })
    });
    let _ = p.saved.send(outcome);
}

/// Sends `content` to the chat as `sender`: counted against the sender's rate limit for the
/// chat (`MRM_MESSAGES_PER_SECOND`), committed, then published to every socket of the chat.
/// The one way a message enters a chat, from REST and from the socket alike.
///
/// Errors: `RateLimited` (nothing saved), `NotFound` when the sender is not (or no longer) a
/// participant, checked under the lock that orders the chat's messages.
pub async fn send(
    state: &crate::state::AppState,
    sender: &User,
    chat_id: i64,
    content: MessageContent,
) -> ServiceResult<MessageView> {
    state.limits.message(sender.id, chat_id)?;
    state
        .messages
        .post(chat_id, sender, content)
        .await?
        .ok_or(ServiceError::NotFound)
}
