//! Posting, editing and deleting messages: the one path each takes from every surface.
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
    state::AppState,
    store::{
        self,
        messages::{Actor, Change, NewMessage, Refusal},
        users::User,
        Db,
    },
    wire::{
        frames::{self, MessageFrames},
        views::{MessageView, UserView, Viewer},
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
                edited_at: None,
                deleted: false,
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
    state: &AppState,
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

/// Replaces the content of `user`'s message `message_id` in chat `chat_id` (`PATCH` on the
/// message, or an `edit` frame): the earlier version is kept for the chat's owner and staff
/// ([`versions`]), and the change is logged and published to `mrm.v2` sockets as a
/// `message_edited` frame. Counted against the same rate limit as sends.
///
/// Errors: `RateLimited`; `NotFound` (no such message in the chat, or `user` is not a
/// participant); `PermissionDenied` (not `user`'s message); `Conflict` (the message is deleted).
pub async fn edit(
    state: &AppState,
    user: &User,
    chat_id: i64,
    message_id: i64,
    content: MessageContent,
) -> ServiceResult<MessageView> {
    state.limits.message(user.id, chat_id)?;
    let edit = Change::Edit {
        content: content.as_str(),
    };
    let changed = store::messages::change(&state.db, chat_id, message_id, actor(user), edit)
        .await?
        .map_err(refused)?;
    publish_logged(state, &changed.event);
    Ok(MessageView::for_viewer(changed.message, Viewer::of(user)))
}

/// Deletes message `message_id` of chat `chat_id` as `user`, leaving a tombstone (`deleted:
/// true`, no content; its earlier versions and logged content erased): its sender and the
/// chat's owner may, and staff whether or not they take part (moderation). Logged and published
/// to `mrm.v2` sockets as a `message_deleted` frame.
///
/// Errors: `NotFound`, `PermissionDenied`, `Conflict` (deleted already).
pub async fn delete(
    state: &AppState,
    user: &User,
    chat_id: i64,
    message_id: i64,
) -> ServiceResult<MessageView> {
    let changed =
        store::messages::change(&state.db, chat_id, message_id, actor(user), Change::Delete)
            .await?
            .map_err(refused)?;
    publish_logged(state, &changed.event);
    Ok(MessageView::for_viewer(changed.message, Viewer::of(user)))
}

/// The earlier versions of message `message_id` of chat `chat_id`, oldest first: for the chat's
/// owner and staff taking part in it (the admin area shows any). Errors: `NotFound` (no such
/// message, or the chat is not `user`'s to see), `PermissionDenied` (a participant who is
/// neither).
pub async fn versions(
    state: &AppState,
    user: &User,
    chat_id: i64,
    message_id: i64,
) -> ServiceResult<Vec<store::messages::Version>> {
    let chat = super::chats::managed(state, chat_id, user).await?;
    if store::messages::seq_of(&state.db, chat.id, message_id)
        .await?
        .is_none()
    {
        return Err(ServiceError::NotFound);
    }
    Ok(store::messages::versions(&state.db, message_id).await?)
}

/// `user` as the store's rules for changing messages see them.
pub(super) fn actor(user: &User) -> Actor {
    Actor {
        user_id: user.id,
        staff: user.is_staff || user.is_superuser,
    }
}

fn refused(refusal: Refusal) -> ServiceError {
    match refusal {
        Refusal::NotFound => ServiceError::NotFound,
        Refusal::NotAllowed => ServiceError::PermissionDenied,
        Refusal::Deleted => ServiceError::Conflict("This message was deleted.".into()),
    }
}

/// Publishes a committed log event to the chat's `mrm.v2` sockets on every node.
pub(super) fn publish_logged(state: &AppState, event: &store::events::EventRow) {
    if let Some(frame) = frames::logged(event) {
        state.realtime.publish(
            event.chat_id,
            RoomEvent::Logged {
                seq: event.seq,
                frame,
            },
        );
    }
}
