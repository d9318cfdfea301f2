//! AI conversations: a user's private chats with a language model. Only the owner sees one
//! (`NotFound` for anyone else). Asking the model is one flow for REST (plain or streamed) and
//! the AI socket alike: [`ask`] stores the question and starts the reply as a job of its own
//! (`crate::ai::generation`), which every subscriber of the AI chat follows.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};

use crate::{
    ai::generation::{message_views, Request, SendError, Started, Turn},
    domain::MessageContent,
    state::AppState,
    store::{
        self,
        ai::{AiChat, AiChatFields, AiMessage, TurnRefusal},
        messages::Message,
        users::User,
        Window,
    },
    wire::{
        schemas::{
            AiModel, Budget, Budgets, ContextLine, DayModelUsage, DayUsage, ModelUsage,
            RelatedChatContext, TokenCounts, Usage,
        },
        views::{AiChatSummary, AiChatView, AiMessageView},
    },
};

use super::{batches::take_in_batches, FieldErrors, ServiceError, ServiceResult};

/// The system prompt of an AI chat created without one.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful assistant.";

/// The title of an AI chat created without one: after its first exchange, a title is written
/// for it (`MRM_AI_TITLES`), see [`crate::ai::titles`].
pub const DEFAULT_TITLE: &str = crate::ai::titles::DEFAULT_TITLE;
/// Messages an AI chat object nests: its newest 100.
pub const NESTED_MESSAGES: i64 = 100;
/// Related-chat messages sent as context when the client does not say: 20 (1 to 100).
pub const DEFAULT_CONTEXT_MESSAGES: i64 = 20;

/// The AI chat if `user` owns it. Errors: `NotFound` otherwise.
pub async fn owned(state: &AppState, id: i64, user: &User) -> ServiceResult<AiChat> {
    store::ai::owned(&state.db, id, user.id)
        .await?
        .ok_or(ServiceError::NotFound)
}

/// The views of AI chats, each with its newest 100 messages (of its active branch) and their
/// alternatives, in three queries.
pub async fn views(state: &AppState, chats: Vec<AiChat>) -> ServiceResult<Vec<AiChatView>> {
    let ids: Vec<i64> = chats.iter().map(|c| c.id).collect();
    let latest = store::ai::latest_per_chat(&state.db, &ids, NESTED_MESSAGES).await?;
    let mut messages: HashMap<i64, Vec<AiMessageView>> = HashMap::new();
    for m in message_views(&state.db, latest).await? {
        messages.entry(m.ai_chat).or_default().push(m);
    }
    // Chats without a model of their own show the default, looked up once for the page.
    let default = match chats.iter().any(|c| c.model.is_none()) {
        true => {
            let staff = chats.first().is_some_and(|c| c.user_is_staff);
            state.ai_models.default_model(staff).await
        }
        false => None,
    };
    Ok(chats
        .into_iter()
        .map(|chat| {
            let id = chat.id;
            let model = chat.model.clone().or_else(|| default.clone());
            AiChatView::new(chat, messages.remove(&id).unwrap_or_default(), model)
        })
        .collect())
}

/// The views of one page of AI messages, with their alternatives.
pub async fn message_page(
    state: &AppState,
    messages: Vec<AiMessage>,
) -> ServiceResult<Vec<AiMessageView>> {
    Ok(message_views(&state.db, messages).await?)
}

/// The models `user` may choose for their AI chats (`GET /api/ai/models/`), each with the
/// context window prompts are fitted to: its provider's, else `MRM_AI_CONTEXT_WINDOW`, else
/// the one documented for its name.
pub async fn models(state: &AppState, user: &User) -> Vec<AiModel> {
    let default = state.ai_models.default_model(user.is_staff).await;
    state
        .ai_models
        .offered(user.is_staff)
        .await
        .into_iter()
        .map(|offered| {
            let id = offered.id();
            AiModel {
                default: default.as_deref() == Some(id.as_str()),
                context_window: offered
                    .context_window
                    .or(state.config.ai.context_window)
                    .unwrap_or_else(|| crate::ai::tokens::context_window(&offered.model)),
                id,
                provider: offered.provider,
                model: offered.model,
            }
        })
        .collect()
}

/// The id of the model `requested` names, if offered to `user`. Errors: `Validation` on `model`.
async fn chosen_model(state: &AppState, user: &User, requested: &str) -> ServiceResult<String> {
    state
        .ai_models
        .choose(requested.trim(), user.is_staff)
        .await
        .ok_or_else(|| {
            ServiceError::Validation(FieldErrors::single(
                "model",
                format!(
                    "\"{}\" is not a valid choice: see GET /api/ai/models/ for the models you may use.",
                    requested.trim()
                ),
            ))
        })
}

/// The AI chat with its newest messages, if `user` owns it.
pub async fn get(state: &AppState, id: i64, user: &User) -> ServiceResult<AiChatView> {
    let chat = owned(state, id, user).await?;
    Ok(views(state, vec![chat]).await?.remove(0))
}

/// An AI chat's writable fields, validated by the caller except for the related chat.
#[derive(Debug, Clone)]
pub struct ChatSettings {
    pub title: String,
    /// Sent to the model first in every request of this AI chat.
    pub system_prompt: String,
    /// The id of a group chat whose newest messages may be sent as context; the owner must take
    /// part in it.
    pub related_chat: Option<i64>,
    /// False when the request left `related_chat` out: an update then keeps the AI chat's link
    /// as it is, unchecked (`related_chat` holds it).
    pub related_chat_given: bool,
    /// The model to ask, as the request named it (an id of `GET /api/ai/models/`, or a model
    /// name one provider offers); `None`: unchanged, or the default on creation.
    pub model: Option<String>,
}

/// The related chat must exist and `user` must take part in it; checked on every write.
/// Errors: `Validation` on `related_chat`, worded as Django REST Framework words a bad key.
async fn check_related(state: &AppState, user: &User, related: Option<i64>) -> ServiceResult<()> {
    let Some(chat_id) = related else {
        return Ok(());
    };
    if store::chats::last_seq(&state.db, chat_id).await?.is_none() {
        return Err(ServiceError::Validation(FieldErrors::single(
            "related_chat",
            format!("Invalid pk \"{chat_id}\" - object does not exist."),
        )));
    }
    if store::chats::visible_to(&state.db, chat_id, user.id)
        .await?
        .is_none()
    {
        return Err(ServiceError::Validation(FieldErrors::single(
            "related_chat",
            "You must be a participant in the related chat.",
        )));
    }
    Ok(())
}

impl ChatSettings {
    fn fields<'a>(&'a self, model: Option<&'a str>) -> AiChatFields<'a> {
        AiChatFields {
            title: &self.title,
            system_prompt: &self.system_prompt,
            related_chat_id: self.related_chat,
            model,
        }
    }
}

/// Creates an AI chat owned by `user`, asking the model the settings name (else the default,
/// `MRM_AI_DEFAULT_MODEL`). Errors: `Validation` on `related_chat`, or on `model` when it is
/// not one the user may choose.
pub async fn create(
    state: &AppState,
    user: &User,
    settings: ChatSettings,
) -> ServiceResult<AiChatSummary> {
    check_related(state, user, settings.related_chat).await?;
    let model = match &settings.model {
        Some(requested) => Some(chosen_model(state, user, requested).await?),
        None => state.ai_models.default_model(user.is_staff).await,
    };
    let id = store::ai::create(&state.db, user.id, &settings.fields(model.as_deref())).await?;
    Ok(AiChatSummary {
        id,
        title: settings.title,
        system_prompt: settings.system_prompt,
        related_chat: settings.related_chat,
        model,
    })
}

/// Replaces an owned AI chat's settings (its model only when named) and answers with the whole AI chat as it now is, as
/// the original's `AIChatSerializer` answers an update (the same object as [`get`]). A link the
/// request names is checked; when it names none, the chat's link is kept as it is, even while the
/// owner is out of that chat (it stays hidden from them, and applies again if they rejoin).
/// Errors: `Validation` on `related_chat` or `model`; `NotFound` when the chat was deleted
/// meanwhile.
pub async fn update(
    state: &AppState,
    user: &User,
    chat: &AiChat,
    settings: ChatSettings,
) -> ServiceResult<AiChatView> {
    if settings.related_chat_given {
        check_related(state, user, settings.related_chat).await?;
    }
    let model = match &settings.model {
        Some(requested) => Some(chosen_model(state, user, requested).await?),
        None => None,
    };
    store::ai::update(&state.db, chat.id, &settings.fields(model.as_deref())).await?;
    get(state, chat.id, user).await
}

/// Deletes an owned AI chat with its messages (its token accounting stays); a running reply
/// stops and its sockets close with 4004. Errors: `NotFound`.
pub async fn delete(state: &AppState, user: &User, id: i64) -> ServiceResult<()> {
    let chat = owned(state, id, user).await?;
    store::ai::delete(&state.db, chat.id).await?;
    state.generations.chat_deleted(chat.id);
    Ok(())
}

/// Stops the reply being generated for an owned AI chat, on whichever node runs it, keeping
/// what it wrote so far. Returns whether one was running. Errors: `NotFound`.
pub async fn cancel(state: &AppState, user: &User, id: i64) -> ServiceResult<bool> {
    let chat = owned(state, id, user).await?;
    Ok(state.generations.cancel(chat.id).await)
}

/// Shows the branch through message `message` of an owned AI chat: from its first question
/// to it, then on through the newest alternative at each step. Answers the chat as it now
/// shows, and tells its sockets. Errors: `NotFound`; `Validation` on `message` when it is no
/// message of this chat; `Conflict` while a reply is being generated.
pub async fn select_branch(
    state: &AppState,
    user: &User,
    chat: &AiChat,
    message: i64,
) -> ServiceResult<AiChatView> {
    // Held as a reply would be, so that no reply starts on any node while the branch moves.
    let _hold = state.generations.hold(chat.id).await.map_err(|_| {
        ServiceError::Conflict(
            "A reply is being generated for this AI chat; wait for it or cancel it.".into(),
        )
    })?;
    let Some(leaf) = store::ai::activate(&state.db, chat.id, message).await? else {
        return Err(ServiceError::Validation(FieldErrors::single(
            "message",
            format!("Invalid pk \"{message}\" - object does not exist."),
        )));
    };
    state.generations.branch_selected(chat.id, leaf);
    get(state, chat.id, user).await
}

/// The related chat's newest `limit` messages, oldest first, if a chat is linked and the owner
/// still takes part in it; otherwise none.
pub async fn context_for(
    state: &AppState,
    chat: &AiChat,
    user: &User,
    limit: i64,
) -> ServiceResult<Vec<Message>> {
    let Some(related) = chat.related_chat_id else {
        return Ok(Vec::new());
    };
    if store::chats::visible_to(&state.db, related, user.id)
        .await?
        .is_none()
    {
        tracing::info!(
            ai_chat.id = chat.id,
            "related chat context skipped: no longer a participant"
        );
        return Ok(Vec::new());
    }
    let window = Window {
        after: None,
        before: None,
        limit,
    };
    Ok(store::messages::page_in_chat(&state.db, related, user.id, window).await?)
}

/// A question for the model.
#[derive(Debug)]
pub struct Question {
    /// The user's message, stored before the reply starts.
    pub content: MessageContent,
    /// Send the related chat's newest messages as context (`Context from related chat:`).
    pub include_context: bool,
    /// How many related-chat messages, 1 to 100.
    pub context_limit: i64,
}

/// What a turn of the conversation asks for.
#[derive(Debug)]
pub enum TurnRequest {
    /// A new question at the end of the active branch.
    Ask(Question),
    /// Another answer to the active branch's last question (the related chat's context as
    /// asked).
    Regenerate {
        include_context: bool,
        context_limit: i64,
    },
    /// `question` in place of question `message` of the active branch, on a new branch.
    Edit { message: i64, question: Question },
}

/// Stores the question in an owned AI chat and starts the reply, which runs on the server
/// whatever happens to the caller's connection. The model gets the chat's system prompt (with
/// the related chat's context when asked and the owner still takes part in it), the active
/// branch of the conversation, and the question last. Returns the stored question; the reply
/// reaches every subscriber of the AI chat (`Generations::subscribe`), who should subscribe
/// before asking so as to miss none of it. See [`turn`] for the errors.
pub async fn ask(
    state: &AppState,
    user: &User,
    chat: &AiChat,
    question: Question,
) -> ServiceResult<AiMessage> {
    let started = turn(state, user, chat, TurnRequest::Ask(question)).await?;
    started
        .question
        .ok_or_else(|| ServiceError::Unavailable("the question was not stored".into()))
}

/// Takes a turn in an owned AI chat (ask, regenerate, or edit) on the chat's model, one flow for
/// REST and sockets: the budget is checked, the question (if any) stored, the active branch
/// moved, and the reply started.
///
/// Errors: `RateLimited` (seconds until a spent budget starts again) and `Validation` (a
/// question too long for the model, a model no longer offered, nothing to regenerate, an edit
/// of no question of the active branch) before anything is stored; `Conflict` when a reply is
/// already running for this AI chat (on any node), `Busy` when the user has
/// `MRM_AI_MAX_CONCURRENT_PER_USER` replies running; `Unavailable` when no provider is
/// configured (a question is kept).
pub async fn turn(
    state: &AppState,
    user: &User,
    chat: &AiChat,
    request: TurnRequest,
) -> ServiceResult<Started> {
    // A question asked once a budget is spent is refused until it starts again.
    let budgets = budgets(state, user.id, Utc::now()).await?;
    if let Some(spent) = [budgets.daily, budgets.monthly]
        .into_iter()
        .flatten()
        .filter(|b| b.remaining == 0)
        .max_by_key(|b| b.resets_at)
    {
        let wait = (spent.resets_at - Utc::now()).num_seconds().max(1);
        return Err(ServiceError::RateLimited(u64::try_from(wait).unwrap_or(1)));
    }
    let route = if state.ai_models.is_configured() {
        let model = match &chat.model {
            Some(model) => Some(model.clone()),
            None => state.ai_models.default_model(user.is_staff).await,
        };
        let route = model
            .as_deref()
            .and_then(|id| state.ai_models.route(id, user.is_staff));
        match route {
            Some(route) => Some(route),
            None => {
                return Err(ServiceError::Validation(FieldErrors::single(
                    "model",
                    format!(
                        "The model \"{}\" of this AI chat is no longer offered; choose another \
                         (see GET /api/ai/models/).",
                        model.unwrap_or_default()
                    ),
                )))
            }
        }
    } else {
        None
    };
    let (include_context, context_limit, turn) = match request {
        TurnRequest::Ask(q) => (
            q.include_context,
            q.context_limit,
            Turn::Ask(q.content.into_string()),
        ),
        TurnRequest::Regenerate {
            include_context,
            context_limit,
        } => (include_context, context_limit, Turn::Regenerate),
        TurnRequest::Edit { message, question } => (
            question.include_context,
            question.context_limit,
            Turn::Edit {
                message,
                content: question.content.into_string(),
            },
        ),
    };
    let context = if include_context {
        context_for(state, chat, user, context_limit).await?
    } else {
        Vec::new()
    };
    let request = Request {
        user_id: user.id,
        ai_chat_id: chat.id,
        system_prompt: chat.system_prompt.clone(),
        turn,
        context,
        route,
    };
    state
        .generations
        .send(request)
        .await
        .map_err(|err| match err {
            SendError::NotConfigured => {
                ServiceError::Unavailable("AI provider is not configured".into())
            }
            SendError::AlreadyRunning => ServiceError::Conflict(
                "A reply is already being generated for this AI chat.".into(),
            ),
            SendError::TooMany => ServiceError::Busy(
                "Too many AI replies in progress; wait for one to finish.".into(),
            ),
            SendError::TooLong(too_long) => ServiceError::Validation(super::FieldErrors::single(
                "content",
                format!(
                    "This message is too long for the model: with the system prompt it takes \
                     {} tokens, and the model's context window leaves {}.",
                    too_long.needed, too_long.limit
                ),
            )),
            SendError::Refused(TurnRefusal::NothingToRegenerate) => {
                ServiceError::Validation(FieldErrors::single(
                    "non_field_errors",
                    "There is no question to answer again in this AI chat.",
                ))
            }
            SendError::Refused(TurnRefusal::NotAQuestion) => {
                ServiceError::Validation(FieldErrors::single(
                    "message",
                    "Only a question of the conversation as it shows can be edited.",
                ))
            }
            SendError::Store(err) => err.into(),
        })
}

/// At most `limit` of `user`'s AI chats ordered by last update, newest first, starting after the
/// `(updated_at, id)` cursor of the previous page, handed to `take` as views a batch at a time
/// ([`take_in_batches`]) until it answers false.
pub async fn list<E: From<ServiceError>>(
    state: &AppState,
    user: &User,
    after: Option<(DateTime<Utc>, i64)>,
    limit: i64,
    take: impl FnMut(AiChatView) -> Result<bool, E>,
) -> Result<(), E> {
    let chats = store::ai::page_for_user(&state.db, user.id, after, limit)
        .await
        .map_err(ServiceError::from)?;
    take_in_batches(chats, |batch| views(state, batch), take).await
}

/// What the model would be given from an owned AI chat's related group chat: its newest `limit`
/// messages. Errors: `Missing` when no chat is linked or the owner no longer takes part in it.
pub async fn related_context(
    state: &AppState,
    user: &User,
    chat: &AiChat,
    limit: i64,
) -> ServiceResult<RelatedChatContext> {
    let missing = || ServiceError::Missing("No related chat linked to this AI chat".into());
    let related = chat.related_chat_id.ok_or_else(missing)?;
    if store::chats::visible_to(&state.db, related, user.id)
        .await?
        .is_none()
    {
        return Err(missing());
    }
    let messages: Vec<ContextLine> = context_for(state, chat, user, limit)
        .await?
        .into_iter()
        .map(|m| ContextLine {
            sender: m.sender_username,
            content: m.content,
            timestamp: m.created_at,
        })
        .collect();
    Ok(RelatedChatContext {
        chat_name: chat.related_chat_name.clone(),
        message_count: messages.len() as i64,
        messages,
    })
}

/// Days a usage report covers when `from` is not given: 30, ending with `to`.
const USAGE_DAYS: u64 = 30;

/// `user_id`'s token use on days `from..=to` (UTC; default the 30 days ending today), in total,
/// per model, per day, and per day and model. Only staff may ask about another user.
///
/// Errors: `Validation` when `from` is after `to`; `PermissionDenied` for another user's report
/// without staff status; `NotFound` for an unknown user.
/// User `user_id`'s token budgets at `now`: the day's and the month's, the user's own where the
/// admin area set them, else `MRM_AI_DAILY_TOKENS` and `MRM_AI_MONTHLY_TOKENS`; each `None` when
/// not set. Spending is read from the usage records, where every reply is counted however it
/// was asked for (REST or socket) and however it ended.
pub async fn budgets(state: &AppState, user_id: i64, now: DateTime<Utc>) -> ServiceResult<Budgets> {
    let ai = &state.config.ai;
    let (own_daily, own_monthly) = store::ai::own_budgets(&state.db, user_id).await?;
    let (daily, monthly) = (
        own_daily.or(ai.daily_tokens),
        own_monthly.or(ai.monthly_tokens),
    );
    let today = now.date_naive();
    let day = |d: NaiveDate| d.format("%Y-%m-%d").to_string();
    let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    let budget = |limit: i64, used: i64, resets_at: DateTime<Utc>| Budget {
        limit,
        used,
        remaining: (limit - used).max(0),
        resets_at,
    };
    let mut budgets = Budgets::default();
    if let Some(limit) = daily {
        let used = store::ai::spent(&state.db, user_id, &day(today), &day(today)).await?;
        let tomorrow = today.succ_opt().and_then(midnight).unwrap_or(now);
        budgets.daily = Some(budget(limit, used, tomorrow));
    }
    if let Some(limit) = monthly {
        let first = today.with_day(1).unwrap_or(today);
        let next = first
            .checked_add_months(chrono::Months::new(1))
            .unwrap_or(first);
        let last = next.pred_opt().unwrap_or(today);
        let used = store::ai::spent(&state.db, user_id, &day(first), &day(last)).await?;
        budgets.monthly = Some(budget(limit, used, midnight(next).unwrap_or(now)));
    }
    Ok(budgets)
}

pub async fn usage(
    state: &AppState,
    caller: &User,
    user_id: i64,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> ServiceResult<Usage> {
    let to = to.unwrap_or_else(|| Utc::now().date_naive());
    let from = match from {
        Some(from) => from,
        None => to
            .checked_sub_days(Days::new(USAGE_DAYS - 1))
            .ok_or_else(|| {
                ServiceError::Validation(FieldErrors::single("to", "Enter a date as YYYY-MM-DD."))
            })?,
    };
    if from > to {
        return Err(ServiceError::Validation(FieldErrors::single(
            "from",
            "Must not be after \"to\".",
        )));
    }
    if user_id != caller.id {
        if !(caller.is_staff || caller.is_superuser) {
            return Err(ServiceError::PermissionDenied);
        }
        if store::users::by_id(&state.db, user_id).await?.is_none() {
            return Err(ServiceError::NotFound);
        }
    }
    let (from, to) = (
        from.format("%Y-%m-%d").to_string(),
        to.format("%Y-%m-%d").to_string(),
    );
    let rows = store::ai::usage(&state.db, user_id, &from, &to).await?;
    let mut total = Sums::default();
    let mut by_model: Vec<(String, Sums)> = Vec::new();
    let mut by_day: Vec<(String, Sums)> = Vec::new();
    let mut by_day_and_model = Vec::with_capacity(rows.len());
    for row in rows {
        let sums = Sums {
            counts: TokenCounts {
                prompt_tokens: row.prompt_tokens,
                completion_tokens: row.completion_tokens,
                total_tokens: row.total_tokens,
            },
            estimated: row.estimated_tokens,
        };
        total.add(&sums);
        add_to_group(&mut by_model, &row.model, &sums);
        add_to_group(&mut by_day, &row.day, &sums);
        by_day_and_model.push(DayModelUsage {
            day: row.day,
            model: row.model,
            prompt_tokens: sums.counts.prompt_tokens,
            completion_tokens: sums.counts.completion_tokens,
            total_tokens: sums.counts.total_tokens,
            estimated_tokens: sums.estimated,
            usage_estimated: sums.estimated > 0,
        });
    }
    by_model.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Usage {
        user: user_id,
        from,
        to,
        prompt_tokens: total.counts.prompt_tokens,
        completion_tokens: total.counts.completion_tokens,
        total_tokens: total.counts.total_tokens,
        estimated_tokens: total.estimated,
        usage_estimated: total.estimated > 0,
        by_model: by_model
            .into_iter()
            .map(|(model, s)| ModelUsage {
                model,
                prompt_tokens: s.counts.prompt_tokens,
                completion_tokens: s.counts.completion_tokens,
                total_tokens: s.counts.total_tokens,
                estimated_tokens: s.estimated,
                usage_estimated: s.estimated > 0,
            })
            .collect(),
        by_day: by_day
            .into_iter()
            .map(|(day, s)| DayUsage {
                day,
                prompt_tokens: s.counts.prompt_tokens,
                completion_tokens: s.counts.completion_tokens,
                total_tokens: s.counts.total_tokens,
                estimated_tokens: s.estimated,
                usage_estimated: s.estimated > 0,
            })
            .collect(),
        by_day_and_model,
        budget: budgets(state, user_id, Utc::now()).await?,
    })
}

/// Token counts added up, with the part of the total that was estimated.
#[derive(Debug, Default, Clone)]
struct Sums {
    counts: TokenCounts,
    /// The part of `counts.total_tokens` the server estimated.
    estimated: i64,
}

impl Sums {
    fn add(&mut self, other: &Sums) {
        self.counts.add(&other.counts);
        self.estimated += other.estimated;
    }
}

/// Adds `counts` to the group named `key`, making it at the end when new (groups keep the
/// order in which their first row came).
fn add_to_group(groups: &mut Vec<(String, Sums)>, key: &str, counts: &Sums) {
    match groups.iter_mut().find(|(k, _)| k == key) {
        Some((_, sums)) => sums.add(counts),
        None => groups.push((key.to_owned(), counts.clone())),
    }
}

/// Sets user `user_id`'s own token budgets (`None`: the configured default; 0 allows no AI
/// replies). Errors: `Validation` for a negative budget.
pub async fn set_budgets(
    state: &AppState,
    user_id: i64,
    daily: Option<i64>,
    monthly: Option<i64>,
) -> ServiceResult<()> {
    let mut errors = FieldErrors::new();
    for (field, value) in [("ai_daily_tokens", daily), ("ai_monthly_tokens", monthly)] {
        if value.is_some_and(|v| v < 0) {
            errors.add(field, "Ensure this value is greater than or equal to 0.");
        }
    }
    errors.check()?;
    Ok(store::ai::set_own_budgets(&state.db, user_id, daily, monthly).await?)
}
