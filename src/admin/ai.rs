//! `/admin/ai/…`: AI conversations (searchable by title and owner), their messages with token
//! counts, and token usage per user and per model.

use askama::Template;
use axum::{extract::State, response::Response};
use chrono::NaiveDate;

use super::{
    pagination::{requested_page, Pager},
    render, AdminError, AdminId, AdminResult, Chrome, Params, StaffUser,
};
use crate::{
    domain::AiRole,
    state::AppState,
    store::{
        self,
        ai::{
            AiChatFilter, AiChatSummary, AiMessageFilter, AiMessageWithChat, DayRange, UsageTotal,
        },
    },
};

#[derive(Template)]
#[template(path = "admin/ai_chats.html")]
struct ChatsPage {
    chrome: Chrome,
    chats: Vec<AiChatSummary>,
    pager: Pager,
    q: String,
    owner: String,
}

/// `GET /admin/ai/chats/`: AI chats, a page at a time, filtered by title (`q`) and owner's
/// username (`owner`).
pub async fn chats(
    State(state): State<AppState>,
    staff: StaffUser,
    params: Params,
) -> AdminResult<Response> {
    let filter = AiChatFilter {
        search: params.text("q"),
        owner: params.username("owner"),
    };
    let q = filter.search.clone().unwrap_or_default();
    let owner = filter.owner.clone().unwrap_or_default();
    let page = requested_page(&params)?;
    let total = store::ai::count_matching_chats(&state.db, &filter).await?;
    let keep = [("q", q.clone()), ("owner", owner.clone())];
    let pager = Pager::new(page, total, "/admin/ai/chats/", &keep)?;
    let chats =
        store::ai::matching_chats(&state.db, &filter, pager.limit(), pager.offset()).await?;
    render(&ChatsPage {
        chrome: staff.chrome("ai_chats", None),
        chats,
        pager,
        q,
        owner,
    })
}

#[derive(Template)]
#[template(path = "admin/ai_chat.html")]
struct ChatPage {
    chrome: Chrome,
    chat: AiChatSummary,
    messages: Vec<AiMessageWithChat>,
    pager: Pager,
}

/// `GET /admin/ai/chats/{id}/`: one AI chat and its complete messages, paged; 404 when unknown.
pub async fn chat(
    State(state): State<AppState>,
    staff: StaffUser,
    AdminId(id): AdminId,
    params: Params,
) -> AdminResult<Response> {
    let chat = store::ai::chat_summary(&state.db, id)
        .await?
        .ok_or(AdminError::NotFound)?;
    let filter = AiMessageFilter {
        ai_chat_id: Some(chat.chat.id),
        ..AiMessageFilter::default()
    };
    let page = requested_page(&params)?;
    let total = store::ai::count_matching_messages(&state.db, &filter).await?;
    let pager = Pager::new(page, total, &format!("/admin/ai/chats/{id}/"), &[])?;
    let messages =
        store::ai::matching_messages(&state.db, &filter, true, pager.limit(), pager.offset())
            .await?;
    render(&ChatPage {
        chrome: staff.chrome("ai_chats", None),
        chat,
        messages,
        pager,
    })
}

#[derive(Template)]
#[template(path = "admin/ai_messages.html")]
struct MessagesPage {
    chrome: Chrome,
    messages: Vec<AiMessageWithChat>,
    pager: Pager,
    chat: String,
    role: String,
    owner: String,
    roles: [&'static str; 3],
    filter_error: Option<&'static str>,
}

/// `GET /admin/ai/messages/`: AI messages, paged, filtered by AI chat id (`chat`), role
/// (`role`) and owner's username (`owner`); a non-numeric chat id shows an error, not a list.
pub async fn messages(
    State(state): State<AppState>,
    staff: StaffUser,
    params: Params,
) -> AdminResult<Response> {
    let chat = params.text("chat").unwrap_or_default();
    let role = params.text("role").and_then(|r| AiRole::parse(&r).ok());
    let role_text = role.map(|r| r.as_str().to_owned()).unwrap_or_default();
    let owner = params.username("owner").unwrap_or_default();
    let keep = [
        ("chat", chat.clone()),
        ("role", role_text.clone()),
        ("owner", owner.clone()),
    ];
    let page = requested_page(&params)?;
    let chat_id = match chat.as_str() {
        "" => Ok(None),
        raw => raw.parse::<i64>().map(Some),
    };
    let (pager, messages, filter_error) = match chat_id {
        Ok(ai_chat_id) => {
            let filter = AiMessageFilter {
                ai_chat_id,
                role,
                owner: Some(owner.clone()).filter(|o| !o.is_empty()),
            };
            let total = store::ai::count_matching_messages(&state.db, &filter).await?;
            let pager = Pager::new(page, total, "/admin/ai/messages/", &keep)?;
            let rows = store::ai::matching_messages(
                &state.db,
                &filter,
                false,
                pager.limit(),
                pager.offset(),
            )
            .await?;
            (pager, rows, None)
        }
        Err(_) => (
            Pager::new(page, 0, "/admin/ai/messages/", &keep)?,
            Vec::new(),
            Some("The AI chat id must be a whole number."),
        ),
    };
    render(&MessagesPage {
        chrome: staff.chrome("ai_messages", None),
        messages,
        pager,
        chat,
        role: role_text,
        owner,
        roles: AiRole::ALL.map(AiRole::as_str),
        filter_error,
    })
}

#[derive(Template)]
#[template(path = "admin/ai_usage.html")]
struct UsagePage {
    chrome: Chrome,
    from: String,
    to: String,
    total: UsageTotal,
    by_model: Vec<UsageTotal>,
    by_user: Vec<UsageTotal>,
    pager: Pager,
    filter_error: Option<&'static str>,
}

/// A `YYYY-MM-DD` day from the query: `Ok(None)` when blank, `Err` when not a date.
fn day(params: &Params, name: &str) -> Result<Option<String>, ()> {
    match params.text(name) {
        None => Ok(None),
        Some(raw) => NaiveDate::parse_from_str(&raw, "%Y-%m-%d")
            .map(|d| Some(d.format("%Y-%m-%d").to_string()))
            .map_err(|_| ()),
    }
}

/// `GET /admin/ai/usage/`: token use per user and per model, with totals, for the days
/// `from..=to` (`YYYY-MM-DD`, either may be left open); malformed dates show all days.
pub async fn usage(
    State(state): State<AppState>,
    staff: StaffUser,
    params: Params,
) -> AdminResult<Response> {
    let mut filter_error = None;
    let (from, to) = match (day(&params, "from"), day(&params, "to")) {
        (Ok(from), Ok(to)) => (from, to),
        _ => {
            filter_error = Some("Dates must be written as YYYY-MM-DD; showing all days.");
            (None, None)
        }
    };
    let days = DayRange { from, to };
    let from = days.from.clone().unwrap_or_default();
    let to = days.to.clone().unwrap_or_default();
    let page = requested_page(&params)?;
    let total_users = store::ai::count_usage_users(&state.db, &days).await?;
    let keep = [("from", from.clone()), ("to", to.clone())];
    let pager = Pager::new(page, total_users, "/admin/ai/usage/", &keep)?;
    let by_user = store::ai::usage_by_user(&state.db, &days, pager.limit(), pager.offset()).await?;
    let by_model = store::ai::usage_by_model(&state.db, &days).await?;
    let total = store::ai::usage_total(&state.db, &days).await?;
    render(&UsagePage {
        chrome: staff.chrome("usage", None),
        from,
        to,
        total,
        by_model,
        by_user,
        pager,
        filter_error,
    })
}
