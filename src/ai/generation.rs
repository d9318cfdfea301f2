//! Replies as server-side jobs. A generation belongs to its AI chat, not to the connection that
//! asked for it: it runs to the end (or to a cancel) whoever is listening, is saved when it ends,
//! and anyone who subscribes while it runs gets the text so far, then the live deltas, then the
//! final message. Every socket of the owner on that AI chat sees the same stream, on this node
//! and, through the [`ReplyBus`], on every other.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt;
use tokio::sync::{broadcast, OwnedSemaphorePermit, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    bus::{AiWire, ReplyBus},
    models::Route,
    provider::{ChatMessage, ProviderError, StreamEvent},
};
use crate::{
    domain::{AiRole, FinishReason},
    store::{
        self,
        ai::{AiMessage, NewAiMessage, Tokens, TurnRefusal},
        Db,
    },
    wire::views::AiMessageView,
};

/// The longest a single reply may take, whatever the provider does.
const MAX_GENERATION: Duration = Duration::from_secs(600);
/// Events an AI chat's listeners may fall behind by before they must reconnect.
const EVENT_BUFFER: usize = 1024;

/// What an AI chat's listeners hear, in order, on the chat's broadcast channel. A listener that
/// falls more than 1,024 events behind gets `Lagged` and should reconnect.
#[derive(Debug, Clone)]
pub enum AiEvent {
    /// The user's message was saved.
    UserMessage(AiMessageView),
    /// More text of reply `id`, starting `offset` bytes into it.
    Delta {
        id: i64,
        offset: usize,
        delta: String,
    },
    /// The reply, saved (possibly cut short: see its `finish_reason`).
    Reply(AiMessageView),
    /// The reply failed; `message` is safe to show.
    Failed { id: Option<i64>, message: String },
    /// The AI chat was deleted.
    ChatDeleted,
    /// The chat now shows the branch ending with `message`.
    BranchSelected { message: i64 },
}

/// Why a message could not start a reply.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No provider is configured; the user's message (if any) was stored first.
    #[error("AI provider is not configured")]
    NotConfigured,
    /// A reply for this AI chat is already running, on this node or another; nothing was stored.
    #[error("a reply is already being generated for this chat")]
    AlreadyRunning,
    /// The user already has `MRM_AI_MAX_CONCURRENT_PER_USER` replies running; nothing was stored.
    #[error("too many replies in progress for this user")]
    TooMany,
    /// The question, with the system prompt, does not fit the model's context window; nothing
    /// was stored.
    #[error(transparent)]
    TooLong(#[from] super::prompt::TooLong),
    /// Nothing to regenerate, or an edit of something that is no question on the active branch;
    /// nothing was stored.
    #[error("{0:?}")]
    Refused(TurnRefusal),
    /// The database failed, or the task starting the reply died.
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

/// A listener's start on an AI chat, taken atomically: the live events from now on and the text
/// so far of a reply running on this node, so the catch-up and the deltas that follow join with
/// no gap and no overlap. (A reply on another node: [`Generations::catch_up`].)
pub struct Subscription {
    /// The AI chat's events from the moment of subscribing.
    pub events: broadcast::Receiver<AiEvent>,
    /// The reply being generated here, if any: its id and the text so far.
    pub in_progress: Option<(i64, String)>,
}

/// A subscription's receiver that, once dropped (a stream finished, or its client gone), lets
/// the AI chat's channel go when nothing else uses it.
pub struct Listener {
    events: Option<broadcast::Receiver<AiEvent>>,
    generations: Arc<Generations>,
    ai_chat_id: i64,
}

impl Listener {
    /// Wraps the receiver of a [`Generations::subscribe`] call for `ai_chat_id`.
    pub fn new(
        events: broadcast::Receiver<AiEvent>,
        generations: Arc<Generations>,
        ai_chat_id: i64,
    ) -> Self {
        Self {
            events: Some(events),
            generations,
            ai_chat_id,
        }
    }

    /// The next event of the AI chat; `Lagged` when this listener fell more than 1,024 events
    /// behind, `Closed` when the channel is gone.
    pub async fn recv(&mut self) -> Result<AiEvent, broadcast::error::RecvError> {
        match self.events.as_mut() {
            Some(events) => events.recv().await,
            None => Err(broadcast::error::RecvError::Closed),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // The receiver goes first, so `release` sees it gone.
        self.events.take();
        self.generations.release(self.ai_chat_id);
    }
}

/// What a turn of the conversation does: see [`store::ai::Turn`].
#[derive(Debug, Clone)]
pub enum Turn {
    /// A new question at the end of the active branch.
    Ask(String),
    /// Another answer to the active branch's last question.
    Regenerate,
    /// `content` in place of question `message`, on a new branch.
    Edit { message: i64, content: String },
}

impl Turn {
    fn as_store(&self) -> store::ai::Turn<'_> {
        match self {
            Turn::Ask(content) => store::ai::Turn::Ask(content),
            Turn::Regenerate => store::ai::Turn::Regenerate,
            Turn::Edit { message, content } => store::ai::Turn::Edit {
                message: *message,
                content,
            },
        }
    }

    fn question(&self) -> Option<&str> {
        match self {
            Turn::Ask(content) | Turn::Edit { content, .. } => Some(content),
            Turn::Regenerate => None,
        }
    }
}

/// A turn to answer.
pub struct Request {
    /// The asker, whose concurrent replies are counted.
    pub user_id: i64,
    pub ai_chat_id: i64,
    /// The AI chat's system prompt as it was when the question was asked.
    pub system_prompt: String,
    pub turn: Turn,
    /// Related-chat messages to include, already checked and limited.
    pub context: Vec<store::messages::Message>,
    /// The model to ask; `None` when no provider is configured.
    pub route: Option<Route>,
}

/// A reply that started: the question stored for it (none for a regenerate) and the reply's id.
#[derive(Debug)]
pub struct Started {
    pub question: Option<AiMessage>,
    pub reply_id: i64,
}

struct Running {
    /// Names the run (and its claim among nodes): what clears the chat's running state checks
    /// it is clearing its own.
    token: String,
    /// Whose question it answers (0 while a branch is switched).
    user_id: i64,
    reply_id: Option<i64>,
    text: String,
    cancel: CancellationToken,
}

struct Channel {
    events: broadcast::Sender<AiEvent>,
    running: Option<Running>,
}

/// How replies are fitted and limited: `MRM_AI_MAX_CONCURRENT_PER_USER`,
/// `MRM_AI_CONTEXT_WINDOW`, `MRM_AI_REPLY_RESERVE`, `MRM_AI_TITLES`.
#[derive(Debug, Clone, Copy)]
pub struct ReplySettings {
    pub max_per_user: usize,
    /// Overrides every model's documented window (a provider's own setting overrides this).
    pub context_window: Option<u32>,
    /// Tokens kept free for the reply (at most half the window).
    pub reply_reserve: u32,
    /// Write titles for chats created without one.
    pub titles: bool,
    /// `MRM_AI_REPLY_LEASE_SECONDS`: how long a running reply's claim among nodes lasts
    /// unless its node renews it (every third of it). A node that dies gives its replies up
    /// this long after its last renewal; they are settled within another third.
    pub lease: Duration,
}

impl Default for ReplySettings {
    fn default() -> Self {
        Self {
            max_per_user: 2,
            context_window: None,
            reply_reserve: 1024,
            titles: false,
            lease: Duration::from_secs(30),
        }
    }
}

/// This process's AI replies: a broadcast channel per AI chat that has listeners or a running
/// reply, at most one running reply per AI chat (on any node), and at most `max_per_user` per
/// user here. Each reply is a task of its own, so it outlives the request or socket that asked.
pub struct Generations {
    db: Db,
    /// Per user, the places of this node's runs given back lately (at most a few each), whose
    /// removal from the bus may still be queued: a new run of the user clears them first.
    given_back: Mutex<HashMap<i64, Vec<String>>>,
    metrics: Arc<crate::metrics::Metrics>,
    settings: ReplySettings,
    bus: Arc<dyn ReplyBus>,
    channels: Mutex<HashMap<i64, Arc<Mutex<Channel>>>>,
    per_user: Mutex<HashMap<i64, Arc<Semaphore>>>,
    /// Every running reply job, so shutdown can wait for them to be saved.
    pub tasks: TaskTracker,
}

fn new_channel() -> Arc<Mutex<Channel>> {
    Arc::new(Mutex::new(Channel {
        events: broadcast::channel(EVENT_BUFFER).0,
        running: None,
    }))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The views of AI messages with their alternatives (`siblings`), in one query.
pub async fn message_views(db: &Db, messages: Vec<AiMessage>) -> sqlx::Result<Vec<AiMessageView>> {
    let mut groups: HashMap<(i64, Option<i64>), Vec<i64>> = HashMap::new();
    for (id, chat, parent) in store::ai::siblings(db, &messages).await? {
        groups.entry((chat, parent)).or_default().push(id);
    }
    Ok(messages
        .into_iter()
        .map(|m| {
            let siblings = groups
                .get(&(m.ai_chat_id, m.parent_id))
                .cloned()
                .unwrap_or_default();
            AiMessageView::from(m).with_siblings(siblings)
        })
        .collect())
}

async fn message_view(db: &Db, message: AiMessage) -> AiMessageView {
    let fallback = AiMessageView::from(message.clone());
    match message_views(db, vec![message]).await {
        Ok(mut views) if views.len() == 1 => views.remove(0),
        _ => fallback,
    }
}

impl Generations {
    /// Replies stored in `db`, limited and fitted by `settings`, shared with other nodes over
    /// `bus`, counted in `metrics`. Events from other nodes are relayed to this node's listeners from now on.
    pub fn new(
        db: Db,
        settings: ReplySettings,
        bus: Arc<dyn ReplyBus>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Arc<Self> {
        let incoming = bus.incoming();
        let this = Arc::new(Self {
            db,
            given_back: Mutex::new(HashMap::new()),
            metrics,
            settings,
            bus,
            channels: Mutex::new(HashMap::new()),
            per_user: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
        });
        if let Some(mut incoming) = incoming {
            let weak = Arc::downgrade(&this);
            tokio::spawn(async move {
                while let Some((ai_chat_id, wire)) = incoming.recv().await {
                    let Some(this) = weak.upgrade() else { break };
                    this.relay_remote(ai_chat_id, wire);
                }
            });
        }
        if this.bus.shared() {
            let weak = Arc::downgrade(&this);
            let period = this.settings.lease / 3;
            tokio::spawn(async move {
                let mut every = tokio::time::interval(period);
                loop {
                    every.tick().await;
                    let Some(this) = weak.upgrade() else { break };
                    this.settle_abandoned().await;
                }
            });
        }
        this
    }

    fn relay_remote(&self, ai_chat_id: i64, wire: AiWire) {
        match wire.into_event() {
            None => {
                self.cancel_here(ai_chat_id);
            }
            Some(AiEvent::ChatDeleted) => self.close_chat(ai_chat_id),
            Some(event) => {
                // Only chats someone here listens to have a channel; the rest need nothing.
                if let Some(channel) = lock(&self.channels).get(&ai_chat_id).cloned() {
                    let _ = lock(&channel).events.send(event);
                }
            }
        }
    }

    fn channel(&self, ai_chat_id: i64) -> Arc<Mutex<Channel>> {
        lock(&self.channels)
            .entry(ai_chat_id)
            .or_insert_with(new_channel)
            .clone()
    }

    /// Listens to an AI chat. Taken under the channel's lock, so the text so far and the deltas
    /// that follow join up exactly; and under the map's, so `release` cannot drop the channel
    /// between the two.
    pub fn subscribe(&self, ai_chat_id: i64) -> Subscription {
        let mut channels = lock(&self.channels);
        let channel = channels
            .entry(ai_chat_id)
            .or_insert_with(new_channel)
            .clone();
        let state = lock(&channel);
        Subscription {
            events: state.events.subscribe(),
            in_progress: state
                .running
                .as_ref()
                .and_then(|r| r.reply_id.map(|id| (id, r.text.clone()))),
        }
    }

    /// The text so far of the AI chat's running reply, for a listener that has subscribed: the
    /// subscription's own when the reply runs here, else what the bus holds of one on another
    /// node. Deltas the listener then receives that start before the end of this text repeat it
    /// and are to be skipped (see [`AiEvent::Delta`]'s offset).
    pub async fn catch_up(
        &self,
        ai_chat_id: i64,
        subscription: &Subscription,
    ) -> Option<(i64, String)> {
        match &subscription.in_progress {
            Some(local) => Some(local.clone()),
            None => self.bus.in_progress(ai_chat_id).await,
        }
    }

    /// Forgets an AI chat's channel once nobody listens and nothing runs.
    pub fn release(&self, ai_chat_id: i64) {
        let mut channels = lock(&self.channels);
        let idle = channels.get(&ai_chat_id).is_some_and(|channel| {
            let state = lock(channel);
            state.running.is_none() && state.events.receiver_count() == 0
        });
        if idle {
            channels.remove(&ai_chat_id);
        }
    }

    /// Tells this node's listeners and every other node's.
    fn emit(&self, ai_chat_id: i64, event: AiEvent) {
        self.bus.publish(ai_chat_id, &event);
        let channel = self.channel(ai_chat_id);
        let _ = lock(&channel).events.send(event);
        self.release(ai_chat_id);
    }

    fn cancel_here(&self, ai_chat_id: i64) -> bool {
        let Some(channel) = lock(&self.channels).get(&ai_chat_id).cloned() else {
            return false;
        };
        let state = lock(&channel);
        match &state.running {
            Some(running) => {
                running.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Stops the running reply, on this node or another; what was generated so far is kept.
    /// Returns whether one was running.
    pub async fn cancel(&self, ai_chat_id: i64) -> bool {
        self.cancel_here(ai_chat_id) || self.bus.cancel(ai_chat_id).await
    }

    /// Whether a reply of the AI chat is being generated, here or on another node.
    pub async fn is_running(&self, ai_chat_id: i64) -> bool {
        let here = lock(&self.channels)
            .get(&ai_chat_id)
            .is_some_and(|c| lock(c).running.is_some());
        here || self.bus.claimed(ai_chat_id).await == Some(true)
    }

    /// Stops every running reply of the user here (their account was closed or their password
    /// changed: whoever asked may not be them); what was generated so far is kept, as on cancel.
    /// Other nodes hear of ended credentials themselves.
    pub fn cancel_user(&self, user_id: i64) {
        for channel in lock(&self.channels).values() {
            if let Some(running) = lock(channel).running.as_ref() {
                if running.user_id == user_id {
                    running.cancel.cancel();
                }
            }
        }
    }

    /// Cancels every running reply and waits (at most `grace`) for them to be saved.
    pub async fn stop_all(&self, grace: Duration) {
        for channel in lock(&self.channels).values() {
            if let Some(running) = &lock(channel).running {
                running.cancel.cancel();
            }
        }
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some AI replies were not saved before shutdown");
        }
    }

    fn close_chat(&self, ai_chat_id: i64) {
        self.cancel_here(ai_chat_id);
        if let Some(channel) = lock(&self.channels).remove(&ai_chat_id) {
            let _ = lock(&channel).events.send(AiEvent::ChatDeleted);
        }
    }

    /// The chat is gone: stop its reply and close its listeners, on every node.
    pub fn chat_deleted(&self, ai_chat_id: i64) {
        self.bus.publish(ai_chat_id, &AiEvent::ChatDeleted);
        self.close_chat(ai_chat_id);
    }

    /// The chat now shows the branch ending with `message`: its listeners on every node hear.
    pub fn branch_selected(&self, ai_chat_id: i64, message: i64) {
        self.emit(ai_chat_id, AiEvent::BranchSelected { message });
    }

    /// Settles replies whose node stopped before finishing them (no node holds their claim):
    /// one with text is kept, marked `interrupted`, and can be regenerated; one without is
    /// removed. Their listeners on every node hear the outcome.
    pub async fn settle_abandoned(&self) {
        // Only rows some time old: a reply's row is written after its claim is taken, but a
        // node whose clock runs behind could otherwise look dead.
        let age = self.settings.lease / 3;
        let before = store::now() - chrono::Duration::from_std(age).unwrap_or_default();
        let mut after = 0;
        loop {
            let page = match store::ai::unfinished(&self.db, before, after).await {
                Ok(found) => found,
                Err(err) => {
                    tracing::warn!(error = %err, "could not look for abandoned AI replies");
                    return;
                }
            };
            let full = page.len() == 100;
            for found in page {
                after = found.reply.id;
                self.settle(found.reply).await;
            }
            if !full {
                return;
            }
        }
    }

    /// Settles `reply` if no node holds its chat's claim.
    async fn settle(&self, reply: AiMessage) {
        let running_here = lock(&self.channels)
            .get(&reply.ai_chat_id)
            .is_some_and(|c| {
                lock(c)
                    .running
                    .as_ref()
                    .is_some_and(|r| r.reply_id == Some(reply.id))
            });
        if running_here || self.bus.claimed(reply.ai_chat_id).await != Some(false) {
            return;
        }
        let text = match self.bus.leftover(reply.ai_chat_id).await {
            Some((id, text)) if id == reply.id => text,
            _ => reply.content.clone(),
        };
        tracing::info!(
            ai_chat.id = reply.ai_chat_id,
            reply.id = reply.id,
            "settling a reply its node left unfinished"
        );
        let settled = if text.is_empty() {
            store::ai::discard_reply(&self.db, reply.ai_chat_id, reply.id, reply.parent_id)
                .await
                .map(|()| {
                    Some(AiEvent::Failed {
                        id: Some(reply.id),
                        message: "the reply was interrupted".into(),
                    })
                })
        } else {
            let interrupted = FinishReason::Interrupted;
            match store::ai::finish_reply(&self.db, reply.id, &text, None, &interrupted).await {
                Ok(Some(saved)) => Ok(Some(AiEvent::Reply(message_view(&self.db, saved).await))),
                Ok(None) => Ok(None),
                Err(err) => Err(err),
            }
        };
        match settled {
            Ok(Some(event)) => {
                self.bus.forget(reply.ai_chat_id, reply.id);
                self.emit(reply.ai_chat_id, event);
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "could not settle an abandoned AI reply"),
        }
    }

    /// Begins a turn and starts its reply: stores the question (for `Ask` and `Edit`), moves
    /// the active branch, and starts the reply. The question is kept even when the reply cannot
    /// start (no provider configured). Runs as its own task: a caller that goes away mid-way
    /// cannot leave the chat marked as answering.
    ///
    /// Errors: `AlreadyRunning`, `TooMany`, `TooLong` and `Refused` before anything is stored;
    /// `NotConfigured` after the question is stored; `Store` when the database fails.
    pub async fn send(self: &Arc<Self>, request: Request) -> Result<Started, SendError> {
        let this = self.clone();
        tokio::spawn(async move {
            let ai_chat_id = request.ai_chat_id;
            let user_id = request.user_id;
            let (channel, token, cancel) = this.occupy(ai_chat_id, user_id)?;
            let outcome = if this
                .bus
                .claim(ai_chat_id, &token, this.settings.lease)
                .await
            {
                let outcome = this.start(&channel, request, cancel, token.clone()).await;
                if outcome.is_err() {
                    this.bus.release(ai_chat_id, &token);
                    this.vacate(user_id, &token);
                }
                outcome
            } else {
                Err(SendError::AlreadyRunning)
            };
            if outcome.is_err() {
                take_running(&channel, &token);
                this.release(ai_chat_id);
            }
            outcome
        })
        .await
        .map_err(|err| {
            SendError::Store(sqlx::Error::Protocol(format!("reply task failed: {err}")))
        })?
    }

    /// Marks the chat as running a new run of `user_id` here, under the map's lock so that
    /// `release` cannot drop the channel meanwhile. Errors: `AlreadyRunning`.
    fn occupy(
        &self,
        ai_chat_id: i64,
        user_id: i64,
    ) -> Result<(Arc<Mutex<Channel>>, String, CancellationToken), SendError> {
        let mut channels = lock(&self.channels);
        let channel = channels
            .entry(ai_chat_id)
            .or_insert_with(new_channel)
            .clone();
        let mut state = lock(&channel);
        if state.running.is_some() {
            return Err(SendError::AlreadyRunning);
        }
        let token = crate::auth::secret::random_token(12);
        let cancel = CancellationToken::new();
        state.running = Some(Running {
            token: token.clone(),
            user_id,
            reply_id: None,
            text: String::new(),
            cancel: cancel.clone(),
        });
        drop(state);
        Ok((channel, token, cancel))
    }

    /// Holds the AI chat as if a reply ran, on every node, until the hold is dropped: nothing
    /// may start a reply meanwhile (a branch switch). Errors: `AlreadyRunning`.
    pub async fn hold(self: &Arc<Self>, ai_chat_id: i64) -> Result<Hold, SendError> {
        let (channel, token, _) = self.occupy(ai_chat_id, 0)?;
        let hold = Hold {
            generations: self.clone(),
            channel,
            ai_chat_id,
            token,
        };
        if self
            .bus
            .claim(ai_chat_id, &hold.token, self.settings.lease)
            .await
        {
            Ok(hold)
        } else {
            Err(SendError::AlreadyRunning)
        }
    }

    /// Gives run `token`'s place among user `user_id`'s replies back, on the bus and in the
    /// list a next run of the user clears first.
    fn vacate(&self, user_id: i64, token: &str) {
        self.bus.vacate(user_id, token);
        let mut given_back = lock(&self.given_back);
        let tokens = given_back.entry(user_id).or_default();
        tokens.push(token.to_owned());
        let keep = self.settings.max_per_user.max(1) * 2;
        if tokens.len() > keep {
            tokens.drain(..tokens.len() - keep);
        }
    }

    /// The places of user `user_id`'s runs given back lately (taken: they are cleared with the
    /// next run's place).
    fn vacated(&self, user_id: i64) -> Vec<String> {
        lock(&self.given_back).remove(&user_id).unwrap_or_default()
    }

    fn budget(&self, route: &Route) -> super::prompt::Budget {
        let window = route
            .context_window
            .or(self.settings.context_window)
            .unwrap_or_else(|| super::tokens::context_window(&route.model));
        super::prompt::Budget {
            window,
            reserve: self.settings.reply_reserve.min(window / 2),
        }
    }

    async fn start(
        self: &Arc<Self>,
        channel: &Arc<Mutex<Channel>>,
        request: Request,
        cancel: CancellationToken,
        token: String,
    ) -> Result<Started, SendError> {
        let permit = {
            let semaphore = lock(&self.per_user)
                .entry(request.user_id)
                .or_insert_with(|| Arc::new(Semaphore::new(self.settings.max_per_user)))
                .clone();
            semaphore
                .try_acquire_owned()
                .map_err(|_| SendError::TooMany)?
        };
        // And among the user's replies on every node.
        let places = self.settings.max_per_user;
        let lease = self.settings.lease;
        let vacated = self.vacated(request.user_id);
        let occupied = self
            .bus
            .occupy(request.user_id, &token, places, lease, vacated);
        if occupied.await == Some(false) {
            return Err(SendError::TooMany);
        }
        let db = &self.db;
        // The question must fit with the system prompt before anything is stored.
        if let (Some(route), Some(question)) = (&request.route, request.turn.question()) {
            let (model, budget) = (route.model.clone(), self.budget(route));
            let system_prompt = request.system_prompt.clone();
            let question = question.to_owned();
            tokio::task::spawn_blocking(move || {
                let counter = super::tokens::Counter::for_model(&model);
                super::prompt::check_question(&counter, budget, &system_prompt, &question)
            })
            .await
            .map_err(|e| SendError::Store(sqlx::Error::Protocol(e.to_string())))??;
        }
        if request.route.is_none() && request.turn.question().is_none() {
            return Err(SendError::NotConfigured);
        }
        let began = store::ai::begin_turn(db, request.ai_chat_id, request.turn.as_store())
            .await?
            .map_err(SendError::Refused)?;
        let outcome = self
            .reply_to(channel, request, cancel, token, permit, began.clone())
            .await;
        if outcome.is_err() {
            // The answer a refused regenerate hid is shown again.
            if let Some(replaced) = began.replaced {
                if let Err(err) = store::ai::activate(db, began.ai_chat_id, replaced).await {
                    tracing::error!(error = %err, "could not show an answer again");
                }
            }
        }
        outcome
    }

    /// Starts the reply of a turn that began: announces its question, fits the prompt, stores
    /// the reply row and spawns its job.
    async fn reply_to(
        self: &Arc<Self>,
        channel: &Arc<Mutex<Channel>>,
        request: Request,
        cancel: CancellationToken,
        token: String,
        permit: OwnedSemaphorePermit,
        began: store::ai::Began,
    ) -> Result<Started, SendError> {
        let db = &self.db;
        let (question, parent) = (began.question, began.parent);
        if let Some(question) = &question {
            let view = message_view(db, question.clone()).await;
            self.emit(request.ai_chat_id, AiEvent::UserMessage(view));
        }
        let Some(route) = request.route else {
            return Err(SendError::NotConfigured);
        };
        let history = store::ai::history(db, request.ai_chat_id).await?;
        let (model, budget) = (route.model.clone(), self.budget(&route));
        let system_prompt = request.system_prompt.clone();
        let context = request.context;
        // Counting a long conversation's tokens is CPU work: off the runtime's threads.
        let fitted = tokio::task::spawn_blocking(move || {
            let counter = super::tokens::Counter::for_model(&model);
            super::prompt::fit(&counter, budget, &system_prompt, &context, &history)
        })
        .await
        .map_err(|e| SendError::Store(sqlx::Error::Protocol(e.to_string())))??;
        let prompt = fitted.messages;
        let omitted = (fitted.omitted_messages > 0).then_some(fitted.omitted_messages);
        let reply = store::ai::insert_message(
            db,
            NewAiMessage {
                ai_chat_id: request.ai_chat_id,
                role: AiRole::Assistant,
                content: "",
                complete: false,
                model: Some(&route.model),
                omitted,
                parent_id: Some(parent),
            },
        )
        .await?;
        if let Some(running) = lock(channel).running.as_mut() {
            running.reply_id = Some(reply.id);
        }
        self.bus
            .started(request.ai_chat_id, reply.id, self.settings.lease);
        let job = Job {
            generations: self.clone(),
            channel: channel.clone(),
            route,
            user_id: request.user_id,
            ai_chat_id: request.ai_chat_id,
            reply_id: reply.id,
            parent_id: parent,
            token,
            cancel,
            permit: Mutex::new(Some(permit)),
        };
        self.tasks.spawn(job.run(prompt));
        Ok(Started {
            question,
            reply_id: reply.id,
        })
    }
}

/// An AI chat held by [`Generations::hold`]; dropping it lets replies start again.
pub struct Hold {
    generations: Arc<Generations>,
    channel: Arc<Mutex<Channel>>,
    ai_chat_id: i64,
    token: String,
}

impl Drop for Hold {
    fn drop(&mut self) {
        if take_running(&self.channel, &self.token) {
            self.generations.bus.release(self.ai_chat_id, &self.token);
        }
        self.generations.release(self.ai_chat_id);
    }
}

struct Job {
    generations: Arc<Generations>,
    channel: Arc<Mutex<Channel>>,
    route: Route,
    user_id: i64,
    ai_chat_id: i64,
    reply_id: i64,
    /// The question it answers.
    parent_id: i64,
    /// Names this run's claim on the chat among nodes.
    token: String,
    cancel: CancellationToken,
    /// Held until the outcome is announced: counts against the user's concurrent replies. It is
    /// given back before the announcement, so a client that asks again the moment it sees the
    /// reply is not refused as having too many running.
    permit: Mutex<Option<OwnedSemaphorePermit>>,
}

/// Clears the chat's running reply and gives up its claim however the job ends, a panic
/// included, so the chat never stays marked as answering.
struct RunningGuard {
    channel: Arc<Mutex<Channel>>,
    generations: Arc<Generations>,
    ai_chat_id: i64,
    user_id: i64,
    token: String,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if take_running(&self.channel, &self.token) {
            self.generations.bus.release(self.ai_chat_id, &self.token);
        }
        self.generations.vacate(self.user_id, &self.token);
    }
}

/// Clears the chat's running state if it is still run `token`'s (a later run may have taken
/// the chat since); returns whether it was.
fn take_running(channel: &Mutex<Channel>, token: &str) -> bool {
    let mut state = lock(channel);
    let own = state.running.as_ref().is_some_and(|r| r.token == token);
    if own {
        state.running = None;
    }
    own
}

/// What a run learnt about its reply, whatever way it ended.
struct Outcome {
    /// The provider accepted the request (its answer began): the prompt was read and is paid
    /// for, however the reply ends.
    accepted: bool,
    /// The counts the provider reported, if it did.
    tokens: Option<Tokens>,
    finish: FinishReason,
}

impl Job {
    async fn run(self, prompt: Vec<ChatMessage>) {
        let _guard = RunningGuard {
            channel: self.channel.clone(),
            generations: self.generations.clone(),
            ai_chat_id: self.ai_chat_id,
            user_id: self.user_id,
            token: self.token.clone(),
        };
        // The claim lives while this node renews it; a node that dies lets it lapse.
        let renewing = CancellationToken::new();
        let _stop_renewing = renewing.clone().drop_guard();
        {
            let (bus, chat, user, token) = (
                self.generations.bus.clone(),
                self.ai_chat_id,
                self.user_id,
                self.token.clone(),
            );
            let channel = self.channel.clone();
            let lease = self.generations.settings.lease;
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = renewing.cancelled() => break,
                        _ = tokio::time::sleep(lease / 3) => {
                            // Under the channel's lock, and only while the run is the chat's:
                            // the run's end releases under the same lock, so a renewal is
                            // queued before the release or not at all.
                            let state = lock(&channel);
                            if state.running.as_ref().is_none_or(|r| r.token != token) {
                                break;
                            }
                            bus.renew(chat, user, &token, lease);
                        }
                    }
                }
            });
        }
        let mut outcome = Outcome {
            accepted: false,
            tokens: None,
            finish: FinishReason::Stop,
        };
        let generated =
            tokio::time::timeout(MAX_GENERATION, self.generate(prompt.clone(), &mut outcome)).await;
        let failure = match generated {
            Err(_) => Some(ProviderError::Timeout),
            Ok(result) => result.err(),
        };
        let tokens = match outcome.tokens {
            Some(reported) => Some(reported),
            None if outcome.accepted => Some(self.estimate(prompt).await),
            None => None,
        };
        let finished = failure.is_none() && outcome.finish == FinishReason::Stop;
        self.count(tokens, &outcome.finish, failure.as_ref());
        self.save(tokens, outcome.finish, failure).await;
        self.generations.release(self.ai_chat_id);
        if finished && self.generations.settings.titles {
            self.title().await;
        }
    }

    /// Counts the reply in the metrics: its outcome, its tokens, and its provider's failure.
    fn count(
        &self,
        tokens: Option<Tokens>,
        finish: &FinishReason,
        failure: Option<&ProviderError>,
    ) {
        let metrics = &self.generations.metrics;
        let model = self.route.model.as_str();
        // A provider's own reasons are open-ended: the standard ones get series of their own.
        let outcome = match (failure, finish.as_str()) {
            (Some(_), _) => "error",
            (None, r @ ("stop" | "length" | "cancelled" | "content_filter" | "tool_calls")) => r,
            (None, _) => "other",
        };
        metrics
            .ai_requests
            .with_label_values(&[model, outcome])
            .inc();
        if let Some(tokens) = tokens {
            let count = |kind: &str, n: i64| {
                metrics
                    .ai_tokens
                    .with_label_values(&[model, kind])
                    .inc_by(u64::try_from(n).unwrap_or(0));
            };
            count("prompt", tokens.prompt);
            count("completion", tokens.completion);
        }
        if let Some(err) = failure {
            let kind = match err {
                ProviderError::Timeout => "timeout",
                ProviderError::Status(_) => "status",
                ProviderError::Transport(_) => "transport",
                ProviderError::Malformed(_) => "malformed",
            };
            metrics.ai_provider_errors.with_label_values(&[kind]).inc();
        }
    }

    /// After the first exchange of a chat still called by the default title, writes it one.
    async fn title(&self) {
        let db = &self.generations.db;
        let Ok(Some(title)) = store::ai::title_of(db, self.ai_chat_id).await else {
            return;
        };
        if title != super::titles::DEFAULT_TITLE {
            return;
        }
        let Ok(history) = store::ai::history(db, self.ai_chat_id).await else {
            return;
        };
        if let [question, answer] = history.as_slice() {
            super::titles::write(
                db,
                &self.route,
                self.user_id,
                self.ai_chat_id,
                &question.content,
                &answer.content,
            )
            .await;
        }
    }

    /// Counts the tokens of a reply the provider reported no usage for (cancelled, cut short,
    /// or a provider that does not count streams): the prompt as sent and the text received.
    async fn estimate(&self, prompt: Vec<ChatMessage>) -> Tokens {
        let model = self.route.model.clone();
        let text = self.text_so_far();
        let counting =
            tokio::task::spawn_blocking(move || super::tokens::estimate(&model, &prompt, &text));
        counting.await.unwrap_or_else(|err| {
            tracing::error!(error = %err, "counting a reply's tokens failed");
            Tokens {
                estimated: true,
                ..Tokens::default()
            }
        })
    }

    fn text_so_far(&self) -> String {
        lock(&self.channel)
            .running
            .as_ref()
            .map(|r| r.text.clone())
            .unwrap_or_default()
    }

    /// Streams the reply into the channel. The provider's stream lives only in here: leaving,
    /// for whatever reason (cancel included), drops it, which closes the upstream request.
    async fn generate(
        &self,
        prompt: Vec<ChatMessage>,
        outcome: &mut Outcome,
    ) -> Result<(), ProviderError> {
        let asked = std::time::Instant::now();
        let mut stream = tokio::select! {
            _ = self.cancel.cancelled() => {
                outcome.finish = FinishReason::Cancelled;
                return Ok(());
            }
            opened = self.route.provider.stream(&self.route.model, prompt) => opened?,
        };
        outcome.accepted = true;
        let mut first = true;
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => {
                    outcome.finish = FinishReason::Cancelled;
                    return Ok(());
                }
                event = stream.next() => match event {
                    None => return Ok(()),
                    Some(Ok(StreamEvent::Delta(delta))) => {
                        if std::mem::take(&mut first) {
                            self.generations
                                .metrics
                                .ai_first_token
                                .with_label_values(&[&self.route.model])
                                .observe(asked.elapsed().as_secs_f64());
                        }
                        self.append(delta)
                    }
                    Some(Ok(StreamEvent::Usage(counted))) => outcome.tokens = Some(counted),
                    Some(Ok(StreamEvent::Finish(reason))) => outcome.finish = FinishReason::parse(&reason),
                    Some(Err(err)) => return Err(err),
                },
            }
        }
    }

    fn append(&self, delta: String) {
        let event = {
            let mut state = lock(&self.channel);
            let offset = match state.running.as_mut() {
                Some(running) => {
                    let offset = running.text.len();
                    running.text.push_str(&delta);
                    offset
                }
                None => 0,
            };
            let event = AiEvent::Delta {
                id: self.reply_id,
                offset,
                delta,
            };
            let _ = state.events.send(event.clone());
            event
        };
        self.generations.bus.publish(self.ai_chat_id, &event);
    }

    async fn save(
        &self,
        tokens: Option<Tokens>,
        finish: FinishReason,
        failure: Option<ProviderError>,
    ) {
        let db = &self.generations.db;
        let text = self.text_so_far();
        if let Some(err) = &failure {
            tracing::error!(ai_chat.id = self.ai_chat_id, error = %err, "AI reply failed");
        }
        // Counted however the reply ended, even with nothing to show for it: the provider was
        // paid for what it read and wrote.
        if let Some(counted) = tokens {
            if let Err(err) =
                store::ai::record_usage(db, self.user_id, &self.route.model, counted).await
            {
                tracing::error!(error = %err, "could not record token usage");
            }
        }
        let failed = failure.as_ref().map(|err| AiEvent::Failed {
            id: Some(self.reply_id),
            message: err.public_message().to_owned(),
        });
        if failure.is_some() && text.is_empty() {
            let discarded =
                store::ai::discard_reply(db, self.ai_chat_id, self.reply_id, Some(self.parent_id))
                    .await;
            if let Err(err) = discarded {
                tracing::error!(error = %err, "could not remove an empty failed reply");
            }
            self.finish_with(None, failed);
            return;
        }
        let reason = if failure.is_some() {
            FinishReason::Error
        } else {
            finish
        };
        let saved = store::ai::finish_reply(db, self.reply_id, &text, tokens, &reason).await;
        let _ = store::ai::touch(db, self.ai_chat_id).await;
        match saved {
            Ok(Some(reply)) => {
                let view = message_view(db, reply).await;
                self.finish_with(Some(AiEvent::Reply(view)), failed)
            }
            Ok(None) => self.finish_with(None, None), // The chat was deleted meanwhile.
            Err(err) => {
                tracing::error!(error = %err, "could not save an AI reply");
                self.finish_with(
                    None,
                    Some(AiEvent::Failed {
                        id: Some(self.reply_id),
                        message: "the reply could not be saved".into(),
                    }),
                );
            }
        }
    }

    /// Ends the run and announces the outcome, atomically here: a subscriber either saw the run
    /// (and gets these events) or arrives after it (and reads the saved reply). The claim is
    /// given up before other nodes hear the outcome, so a client that asks again the moment it
    /// sees the reply, on any node, is not refused as if one were still running.
    fn finish_with(&self, reply: Option<AiEvent>, failed: Option<AiEvent>) {
        drop(lock(&self.permit).take());
        let bus = &self.generations.bus;
        let mut state = lock(&self.channel);
        if state
            .running
            .as_ref()
            .is_some_and(|r| r.token == self.token)
        {
            state.running = None;
            bus.release(self.ai_chat_id, &self.token);
        }
        // Given back before the outcome is heard, as the local permit above.
        self.generations.vacate(self.user_id, &self.token);
        for event in [reply, failed].into_iter().flatten() {
            bus.publish(self.ai_chat_id, &event);
            let _ = state.events.send(event);
        }
    }
}

#[cfg(test)]
#[path = "generation_tests.rs"]
mod tests;
