//! Posting, editing and deleting messages: the one path each takes from every surface.
//!
//! Messages are written by one task per process, which takes every message waiting at that
//! moment and commits them in one transaction (group commit): under load a commit carries many
//! messages, at rest a message waits for nobody. Each message is committed before it is
//! published, and published in `seq` order right after the commit, so no socket ever sees a
//! message the database does not have. Callers that go away (a dropped HTTP request) cannot
//! leave a committed message unpublished: the writer finishes the job.

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};

use crate::{
    domain::{attachment::MAX_PER_MESSAGE, MessageContent},
    realtime::{hub::RoomEvent, Realtime},
    service::{ServiceError, ServiceResult},
    state::AppState,
    store::{
        self,
        messages::{Actor, Change, NewMessage, Refusal, Unsaved},
        users::User,
        Db,
    },
    wire::{
        frames::{self, MessageFrames},
        views::{AttachmentView, MessageView, ReactionView, ReplyPreview, UserView, Viewer},
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
    reply_to: Option<ReplyPreview>,
    attachments: Vec<i64>,
    saved: oneshot::Sender<sqlx::Result<Result<MessageView, Unsaved>>>,
}

impl Pending {
    fn row(&self) -> NewMessage<'_> {
        NewMessage {
            chat_id: self.chat_id,
            sender_id: self.sender.id,
            content: self.content.as_str(),
            reply_to: self.reply_to.as_ref().map(|r| r.id),
            attachments: &self.attachments,
        }
    }
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

    /// Saves and publishes a message with its attachments (ids of the sender's uploads to this
    /// chat); the answer shows the sender as they see themself. Errors: `NotFound` when the
    /// sender is not a participant of the chat (or the chat is gone); `Validation`
    /// (`attachments`) when an attachment is not the sender's unattached upload to this chat;
    /// `Internal` when the database fails or the writer task has stopped. No rate limit here:
    /// [`send`] applies it.
    pub async fn post(
        &self,
        chat_id: i64,
        sender: &User,
        content: MessageContent,
        reply_to: Option<ReplyPreview>,
        attachments: Vec<i64>,
    ) -> ServiceResult<MessageView> {
        let (saved, answer) = oneshot::channel();
        let pending = Pending {
            chat_id,
            sender: UserView::own(sender),
            content,
            reply_to,
            attachments,
            saved,
        };
        let gone = || ServiceError::Internal(anyhow::anyhow!("the message writer stopped"));
        self.queue.send(pending).await.map_err(|_| gone())?;
        match answer.await.map_err(|_| gone())?? {
            Ok(view) => Ok(view),
            Err(Unsaved::NotMember) => Err(ServiceError::NotFound),
            Err(Unsaved::AttachmentUnavailable) => Err(unavailable_attachment()),
        }
    }
}

async fn write_loop(db: Db, realtime: Realtime, mut pending: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while pending.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // Let the tasks that are about to send run first: a commit's cost is mostly per
        // transaction, so a batch that waits a scheduler turn for its neighbours is cheaper
        // per message than two batches.
        for _ in 0..2 {
            if batch.len() >= MAX_BATCH {
                break;
            }
            tokio::task::yield_now().await;
            while batch.len() < MAX_BATCH {
                match pending.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
        }
        realtime.metrics.writer_batch.observe(batch.len() as f64);
        let rows: Vec<NewMessage<'_>> = batch.iter().map(Pending::row).collect();
        match store::messages::insert_batch(&db, &rows).await {
            Ok(saved) => {
                drop(rows);
                // Published chat by chat in seq order, as committed.
                let mut done: Vec<_> = batch.drain(..).zip(saved).collect();
                done.sort_by_key(|(p, s)| (p.chat_id, s.as_ref().map(|s| s.seq).ok()));
                for (p, saved) in done {
                    finish(&realtime, p, Ok(saved));
                }
            }
            Err(err) => {
                // One bad row fails the whole transaction: retry each alone, so only it fails.
                tracing::warn!(error = %err, size = batch.len(), "batched insert failed; retrying one by one");
                drop(rows);
                for p in batch.drain(..) {
                    let saved = store::messages::insert(&db, &p.row()).await;
                    finish(&realtime, p, saved);
                }
            }
        }
    }
}

/// Publishes a committed message and answers its sender.
fn finish(
    realtime: &Realtime,
    p: Pending,
    saved: sqlx::Result<Result<store::messages::Saved, Unsaved>>,
) {
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
                reply_to: p.reply_to,
                reactions: Vec::new(),
                mentions: saved.mentions,
                attachments: saved
                    .attachments
                    .into_iter()
                    .map(AttachmentView::from)
                    .collect(),
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

/// The error of a message naming an attachment it cannot carry.
fn unavailable_attachment() -> ServiceError {
    ServiceError::Validation(super::FieldErrors::single(
        "attachments",
        "Each attachment must be your own upload to this chat, not yet sent, named once.",
    ))
}

/// Sends `content` to the chat as `sender`, as a reply to message `reply_to` of the same chat
/// if given, carrying `attachments` (at most [`MAX_PER_MESSAGE`] ids of the sender's uploads to
/// this chat, not yet sent): counted against the sender's rate limit for the chat
/// (`MRM_MESSAGES_PER_SECOND`), committed, then published to every socket of the chat. The one
/// way a message enters a chat, from REST and from the socket alike.
///
/// Errors: `RateLimited` (nothing saved), `Validation` (`reply_to` is not a message of this
/// chat; `attachments` too many, or not available), `NotFound` when the sender is not (or no
/// longer) a participant, checked under the lock that orders the chat's messages.
pub async fn send(
    state: &AppState,
    sender: &User,
    chat_id: i64,
    content: MessageContent,
    reply_to: Option<i64>,
    attachments: Vec<i64>,
) -> ServiceResult<MessageView> {
    if attachments.len() > MAX_PER_MESSAGE {
        return Err(ServiceError::Validation(super::FieldErrors::single(
            "attachments",
            format!("A message may carry at most {MAX_PER_MESSAGE} attachments."),
        )));
    }
    state.limits.message(sender.id, chat_id).await?;
    let reply_to = match reply_to {
        None => None,
        // Messages never change chats and their ids are never reused: checked once, here.
        Some(id) => match store::messages::by_id(&state.db, id).await? {
            Some(parent) if parent.chat_id == chat_id => Some(ReplyPreview::of(&parent)),
            _ => {
                return Err(ServiceError::Validation(super::FieldErrors::single(
                    "reply_to",
                    "Not a message of this chat.",
                )))
            }
        },
    };
    state
        .messages
        .post(chat_id, sender, content, reply_to, attachments)
        .await
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
    state.limits.message(user.id, chat_id).await?;
    let edit = Change::Edit {
        content: content.as_str(),
    };
    let changed = store::messages::change(&state.db, chat_id, message_id, actor(user), edit)
        .await?
        .map_err(refused)?;
    publish_changed(state, &changed);
    Ok(MessageView::for_viewer(changed.message, Viewer::of(user)))
}

/// Deletes message `message_id` of chat `chat_id` as `user`, leaving a tombstone (`deleted:
/// true`, no content; its earlier versions and logged content erased): its sender and the
/// chat's owner may, and staff whether or not they take part (moderation). Logged and published
/// to `mrm.v2` sockets as a `message_deleted` frame.
///
/// Counted against the same rate limit as sends.
///
/// Errors: `RateLimited`, `NotFound`, `PermissionDenied`, `Conflict` (deleted already).
pub async fn delete(
    state: &AppState,
    user: &User,
    chat_id: i64,
    message_id: i64,
) -> ServiceResult<MessageView> {
    state.limits.message(user.id, chat_id).await?;
    let changed =
        store::messages::change(&state.db, chat_id, message_id, actor(user), Change::Delete)
            .await?
            .map_err(refused)?;
    publish_changed(state, &changed);
    // Its attachments went with its content; their objects go now if nothing else holds them.
    state.files.nudge();
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

/// A window (by message id) over the messages that mention `user` in the chats they take part
/// in now.
pub async fn mentions(
    state: &AppState,
    user: &User,
    window: store::Window,
) -> ServiceResult<Vec<store::messages::Message>> {
    Ok(store::messages::page_mentioning(&state.db, user.id, window).await?)
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
        Refusal::TooManyEmojis => ServiceError::Conflict(format!(
            "This message has {} different reactions, the most it can have.",
            store::messages::MAX_EMOJIS
        )),
    }
}

/// Publishes a committed log event, if the change wrote one.
fn publish_changed(state: &AppState, changed: &store::messages::Changed) {
    if let Some(event) = &changed.event {
        publish_logged(state, event);
    }
}

/// Publishes a committed log event to the chat's `mrm.v2` sockets on every node.
pub fn publish_logged(state: &AppState, event: &store::events::EventRow) {
    if let Some(frame) = frames::logged(event) {
        state.realtime.publish(
            event.chat_id,
            RoomEvent::Logged {
                seq: event.seq,
                frame,
                departed: event.departed(),
            },
        );
    }
}

/// Adds (`add`) or takes back `user`'s reaction `emoji` on message `message_id` of chat
/// `chat_id`: one per user per emoji per message. `emoji` must be one emoji (an entry of the
/// Unicode emoji list, skin tones and sequences included; stored fully qualified, so `❤` and
/// `❤️` are the same reaction). Logged and published to `mrm.v2` sockets (`reaction_added`,
/// `reaction_removed`) when it changed anything; counted against the same rate limit as sends.
/// Returns the message with its reactions as `user` sees them, and whether anything changed.
///
/// Errors: `Validation` (`emoji`), `RateLimited`, `NotFound` (no such message in the chat, or
/// `user` does not take part), `Conflict` (the message is deleted).
pub async fn react(
    state: &AppState,
    user: &User,
    chat_id: i64,
    message_id: i64,
    emoji: &str,
    add: bool,
) -> ServiceResult<(MessageView, bool)> {
    let Some(emoji) = emojis::get(emoji.trim()) else {
        return Err(ServiceError::Validation(super::FieldErrors::single(
            "emoji",
            "Enter one emoji.",
        )));
    };
    state.limits.message(user.id, chat_id).await?;
    let emoji = emoji.as_str();
    let change = if add {
        Change::React { emoji }
    } else {
        Change::Unreact { emoji }
    };
    let changed = store::messages::change(&state.db, chat_id, message_id, actor(user), change)
        .await?
        .map_err(refused)?;
    publish_changed(state, &changed);
    let mut views = with_reactions(state, vec![changed.message], user).await?;
    Ok((views.remove(0), changed.event.is_some()))
}

/// Views of `messages` for `user`, each with its reactions (one query for all of them).
pub async fn with_reactions(
    state: &AppState,
    messages: Vec<store::messages::Message>,
    user: &User,
) -> ServiceResult<Vec<MessageView>> {
    let mut views = MessageViews::of(&state.db, &messages, Viewer::of(user)).await?;
    Ok(messages.into_iter().map(|m| views.view(m)).collect())
}

/// Renders messages for one viewer with their reactions, read for all of them up front in one
/// query: for views built one by one (a page filled until its byte budget runs out).
pub struct MessageViews {
    viewer: Viewer,
    reactions: HashMap<i64, Vec<ReactionView>>,
}

impl MessageViews {
    /// Reads the reactions on `messages` as `viewer` sees them (whether they reacted).
    pub async fn of(
        db: &Db,
        messages: &[store::messages::Message],
        viewer: Viewer,
    ) -> ServiceResult<MessageViews> {
        let ids: Vec<i64> = messages.iter().map(|m| m.id).collect();
        let mut reactions: HashMap<i64, Vec<ReactionView>> = HashMap::new();
        for r in store::messages::reactions(db, &ids, viewer.id).await? {
            reactions
                .entry(r.message_id)
                .or_default()
                .push(ReactionView {
                    emoji: r.emoji,
                    count: r.count,
                    me: r.me,
                });
        }
        Ok(MessageViews { viewer, reactions })
    }

    /// Message `m` as the viewer sees it, with its reactions.
    pub fn view(&mut self, m: store::messages::Message) -> MessageView {
        let reactions = self.reactions.remove(&m.id);
        MessageView::for_viewer(m, self.viewer).with_reactions(reactions)
    }
}
