//! Replies as server-side jobs. A generation belongs to its AI chat, not to the connection that
//! asked for it: it runs to the end (or to a cancel) whoever is listening, is saved when it ends,
//! and anyone who subscribes while it runs gets the text so far, then the live deltas, then the
//! final message. Every socket of the owner on that AI chat sees the same stream.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt;
use tokio::sync::{broadcast, OwnedSemaphorePermit, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::provider::{ChatMessage, ChatProvider, ProviderError, StreamEvent};
use crate::{
    domain::{AiRole, FinishReason},
    store::{
        self,
        ai::{AiMessage, Tokens},
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
    /// More text of reply `id`.
    Delta { id: i64, delta: String },
    /// The reply, saved (possibly cut short: see its `finish_reason`).
    Reply(AiMessageView),
    /// The reply failed; `message` is safe to show.
    Failed { id: Option<i64>, message: String },
    /// The AI chat was deleted.
    ChatDeleted,
}

/// Why a message could not start a reply.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No provider is configured (no `OPENAI_API_KEY`); the user's message was stored first.
    #[error("AI provider is not configured")]
    NotConfigured,
    /// A reply for this AI chat is already running; nothing was stored.
    #[error("a reply is already being generated for this chat")]
    AlreadyRunning,
    /// The user already has `MRM_AI_MAX_CONCURRENT_PER_USER` replies running; nothing was stored.
    #[error("too many replies in progress for this user")]
    TooMany,
    /// The question, with the system prompt, does not fit the model's context window; nothing
    /// was stored.
    #[error(transparent)]
    TooLong(#[from] super::prompt::TooLong),
    /// The database failed, or the task starting the reply died.
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

/// A listener's start on an AI chat, taken atomically: the live events from now on and the text
/// so far of a running reply, so the catch-up and the deltas that follow join with no gap and no
/// overlap.
pub struct Subscription {
    /// The AI chat's events from the moment of subscribing.
    pub events: broadcast::Receiver<AiEvent>,
    /// The reply being generated, if any: its id and the text so far.
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

/// A message to answer.
pub struct Request {
    /// The asker, whose concurrent replies are counted.
    pub user_id: i64,
    pub ai_chat_id: i64,
    /// The AI chat's system prompt as it was when the question was asked.
    pub system_prompt: String,
    /// The question, stored as the user's message before the reply starts.
    pub content: String,
    /// Related-chat messages to include, already checked and limited.
    pub context: Vec<store::messages::Message>,
}

struct Running {
    /// Whose question it answers.
    user_id: i64,
    reply_id: Option<i64>,
    text: String,
    cancel: CancellationToken,
}

struct Channel {
    events: broadcast::Sender<AiEvent>,
    running: Option<Running>,
}

/// This process's AI replies: a broadcast channel per AI chat that has listeners or a running
/// reply, at most one running reply per AI chat, and at most `max_per_user` per user. Each reply
/// is a task of its own, so it outlives the request or socket that asked for it.
pub struct Generations {
    provider: Option<Arc<dyn ChatProvider>>,
    db: Db,
    /// `MRM_AI_CONTEXT_WINDOW` (else the model's documented window) and `MRM_AI_REPLY_RESERVE`.
    context_window: Option<u32>,
    reply_reserve: u32,
    /// `MRM_AI_TITLES`: write titles for chats created without one.
    titles: bool,
    channels: Mutex<HashMap<i64, Arc<Mutex<Channel>>>>,
    per_user: Mutex<HashMap<i64, Arc<Semaphore>>>,
    max_per_user: usize,
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

impl Generations {
    /// Replies stored in `db` and generated by `provider` (`None` without an API key: every ask
    /// then fails with [`SendError::NotConfigured`]); `max_per_user` is
    /// `MRM_AI_MAX_CONCURRENT_PER_USER`.
    pub fn new(db: Db, provider: Option<Arc<dyn ChatProvider>>, max_per_user: usize) -> Arc<Self> {
        Self::with_window(db, provider, max_per_user, None, 1024, false)
    }

    /// [`Generations::new`] with prompts fitted to `context_window` tokens (default: the model's
    /// documented window, see [`super::tokens::context_window`]), keeping `reply_reserve` of
    /// them (at most half) for the reply, and titles written for untitled chats when `titles`.
    pub fn with_window(
        db: Db,
        provider: Option<Arc<dyn ChatProvider>>,
        max_per_user: usize,
        context_window: Option<u32>,
        reply_reserve: u32,
        titles: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            provider,
            db,
            context_window,
            reply_reserve,
            titles,
            channels: Mutex::new(HashMap::new()),
            per_user: Mutex::new(HashMap::new()),
            max_per_user,
            tasks: TaskTracker::new(),
        })
    }

    /// Whether a model provider is configured.
    pub fn is_configured(&self) -> bool {
        self.provider.is_some()
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

    fn publish(&self, ai_chat_id: i64, event: AiEvent) {
        let channel = self.channel(ai_chat_id);
        let _ = lock(&channel).events.send(event);
    }

    /// Stops the running reply, if any; what was generated so far is kept.
    pub fn cancel(&self, ai_chat_id: i64) -> bool {
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

    /// Stops every running reply of the user (their account was closed or their password
    /// changed: whoever asked may not be them); what was generated so far is kept, as on cancel.
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

    /// The chat is gone: stop its reply and close its listeners.
    pub fn chat_deleted(&self, ai_chat_id: i64) {
        self.cancel(ai_chat_id);
        if let Some(channel) = lock(&self.channels).remove(&ai_chat_id) {
            let _ = lock(&channel).events.send(AiEvent::ChatDeleted);
        }
    }

    /// Saves the user's message and starts the reply. The user's message is kept even when the
    /// reply cannot start (no provider configured). Runs as its own task: a caller that goes
    /// away mid-way cannot leave the chat marked as answering.
    ///
    /// Errors: `AlreadyRunning` and `TooMany` before anything is stored; `NotConfigured` after
    /// the user's message is stored; `Store` when the database fails.
    pub async fn send(self: &Arc<Self>, request: Request) -> Result<AiMessage, SendError> {
        let this = self.clone();
        tokio::spawn(async move {
            let channel = this.channel(request.ai_chat_id);
            let cancel = CancellationToken::new();
            {
                let mut state = lock(&channel);
                if state.running.is_some() {
                    return Err(SendError::AlreadyRunning);
                }
                state.running = Some(Running {
                    user_id: request.user_id,
                    reply_id: None,
                    text: String::new(),
                    cancel: cancel.clone(),
                });
            }
            let outcome = this.start(&channel, request, cancel).await;
            if outcome.is_err() {
                lock(&channel).running = None;
            }
            outcome
        })
        .await
        .map_err(|err| {
            SendError::Store(sqlx::Error::Protocol(format!("reply task failed: {err}")))
        })?
    }

    async fn start(
        self: &Arc<Self>,
        channel: &Arc<Mutex<Channel>>,
        request: Request,
        cancel: CancellationToken,
    ) -> Result<AiMessage, SendError> {
        let permit = {
            let semaphore = lock(&self.per_user)
                .entry(request.user_id)
                .or_insert_with(|| Arc::new(Semaphore::new(self.max_per_user)))
                .clone();
            semaphore
                .try_acquire_owned()
                .map_err(|_| SendError::TooMany)?
        };
        let db = &self.db;
        // The question must fit with the system prompt before anything is stored.
        let fitting = self.provider.as_ref().map(|provider| {
            let model = provider.model().to_owned();
            let window = self
                .context_window
                .unwrap_or_else(|| super::tokens::context_window(&model));
            let budget = super::prompt::Budget {
                window,
                reserve: self.reply_reserve.min(window / 2),
            };
            (model, budget)
        });
        if let Some((model, budget)) = fitting.clone() {
            let system_prompt = request.system_prompt.clone();
            let question = request.content.clone();
            tokio::task::spawn_blocking(move || {
                let counter = super::tokens::Counter::for_model(&model);
                super::prompt::check_question(&counter, budget, &system_prompt, &question)
            })
            .await
            .map_err(|e| SendError::Store(sqlx::Error::Protocol(e.to_string())))??;
        }
        let user_message = store::ai::insert_message(
            db,
            request.ai_chat_id,
            AiRole::User,
            &request.content,
            true,
            None,
        )
        .await?;
        store::ai::touch(db, request.ai_chat_id).await?;
        self.publish(
            request.ai_chat_id,
            AiEvent::UserMessage(AiMessageView::from(user_message.clone())),
        );

        let Some(provider) = self.provider.clone() else {
            return Err(SendError::NotConfigured);
        };
        let history = store::ai::history(db, request.ai_chat_id).await?;
        let Some((model, budget)) = fitting else {
            return Err(SendError::NotConfigured);
        };
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
        let reply = store::ai::insert_reply(
            db,
            request.ai_chat_id,
            AiRole::Assistant,
            "",
            false,
            Some(provider.model()),
            omitted,
        )
        .await?;
        if let Some(running) = lock(channel).running.as_mut() {
            running.reply_id = Some(reply.id);
        }
        let job = Job {
            generations: self.clone(),
            channel: channel.clone(),
            provider,
            user_id: request.user_id,
            ai_chat_id: request.ai_chat_id,
            reply_id: reply.id,
            cancel,
            permit: Mutex::new(Some(permit)),
        };
        self.tasks.spawn(job.run(prompt));
        Ok(user_message)
    }
}

struct Job {
    generations: Arc<Generations>,
    channel: Arc<Mutex<Channel>>,
    provider: Arc<dyn ChatProvider>,
    user_id: i64,
    ai_chat_id: i64,
    reply_id: i64,
    cancel: CancellationToken,
    /// Held until the outcome is announced: counts against the user's concurrent replies. It is
    /// given back before the announcement, so a client that asks again the moment it sees the
    /// reply is not refused as having too many running.
    permit: Mutex<Option<OwnedSemaphorePermit>>,
}

/// Clears the chat's running reply however the job ends, a panic included, so the chat never
/// stays marked as answering.
struct RunningGuard(Arc<Mutex<Channel>>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        lock(&self.0).running = None;
    }
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
        let _guard = RunningGuard(self.channel.clone());
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
        self.save(tokens, outcome.finish, failure).await;
        self.generations.release(self.ai_chat_id);
        if finished && self.generations.titles {
            self.title().await;
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
                self.provider.as_ref(),
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
        let model = self.provider.model().to_owned();
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
        let mut stream = tokio::select! {
            _ = self.cancel.cancelled() => {
                outcome.finish = FinishReason::Cancelled;
                return Ok(());
            }
            opened = self.provider.stream(prompt) => opened?,
        };
        outcome.accepted = true;
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => {
                    outcome.finish = FinishReason::Cancelled;
                    return Ok(());
                }
                event = stream.next() => match event {
                    None => return Ok(()),
                    Some(Ok(StreamEvent::Delta(delta))) => self.append(delta),
                    Some(Ok(StreamEvent::Usage(counted))) => outcome.tokens = Some(counted),
                    Some(Ok(StreamEvent::Finish(reason))) => outcome.finish = FinishReason::parse(&reason),
                    Some(Err(err)) => return Err(err),
                },
            }
        }
    }

    fn append(&self, delta: String) {
        let mut state = lock(&self.channel);
        if let Some(running) = state.running.as_mut() {
            running.text.push_str(&delta);
        }
        let _ = state.events.send(AiEvent::Delta {
            id: self.reply_id,
            delta,
        });
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
                store::ai::record_usage(db, self.user_id, self.provider.model(), counted).await
            {
                tracing::error!(error = %err, "could not record token usage");
            }
        }
        let failed = failure.as_ref().map(|err| AiEvent::Failed {
            id: Some(self.reply_id),
            message: err.public_message().to_owned(),
        });
        if failure.is_some() && text.is_empty() {
            if let Err(err) = store::ai::delete_message(db, self.reply_id).await {
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
                self.finish_with(Some(AiEvent::Reply(AiMessageView::from(reply))), failed)
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

    /// Ends the run and announces the outcome, atomically: a subscriber either saw the run (and
    /// gets these events) or arrives after it (and reads the saved reply).
    fn finish_with(&self, reply: Option<AiEvent>, failed: Option<AiEvent>) {
        drop(lock(&self.permit).take());
        let mut state = lock(&self.channel);
        state.running = None;
        for event in [reply, failed].into_iter().flatten() {
            let _ = state.events.send(event);
        }
    }
}

#[cfg(test)]
#[path = "generation_tests.rs"]
mod tests;
