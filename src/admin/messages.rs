//! `/admin/messages/`: every chat message, newest first, filtered by chat, sender and content;
//! each message's page with its earlier versions; deleting one leaves a tombstone and tells the
//! chat's `mrm.v2` sockets (`message_deleted`).

use askama::Template;
use axum::{extract::State, response::Response};

use super::{
    notice,
    pagination::{requested_page, Pager},
    render, see_other, AdminError, AdminId, AdminResult, Chrome, Params, StaffForm, StaffUser,
};
use crate::{
    service::{messaging, ServiceError},
    state::AppState,
    store::{
        self,
        messages::{MessageFilter, MessageWithChat, Version},
    },
};

#[derive(Template)]
#[template(path = "admin/messages.html")]
struct MessagesPage {
    chrome: Chrome,
    messages: Vec<MessageWithChat>,
    pager: Pager,
    chat: String,
    sender: String,
    q: String,
    /// Why the filters could not be applied.
    filter_error: Option<&'static str>,
}

/// `GET /admin/messages/`: chat messages, newest first and paged, filtered by chat id (`chat`),
/// sender's username (`sender`) and content (`q`); a non-numeric chat id shows an error.
pub async fn list(
    State(state): State<AppState>,
    staff: StaffUser,
    params: Params,
) -> AdminResult<Response> {
    let chat = params.text("chat").unwrap_or_default();
    let sender = params.username("sender").unwrap_or_default();
    let q = params.text("q").unwrap_or_default();
    let keep = [
        ("chat", chat.clone()),
        ("sender", sender.clone()),
        ("q", q.clone()),
    ];
    let chat_id = match chat.as_str() {
        "" => Ok(None),
        raw => raw.parse::<i64>().map(Some),
    };
    let page = requested_page(&params)?;
    let (pager, messages, filter_error) = match chat_id {
        Ok(chat_id) => {
            let filter = MessageFilter {
                chat_id,
                sender: Some(sender.clone()).filter(|s| !s.is_empty()),
                search: Some(q.clone()).filter(|s| !s.is_empty()),
            };
            let total = store::messages::count_matching(&state.db, &filter).await?;
            let pager = Pager::new(page, total, "/admin/messages/", &keep)?;
            let rows = store::messages::matching(&state.db, &filter, pager.limit(), pager.offset())
                .await?;
            (pager, rows, None)
        }
        Err(_) => (
            Pager::new(page, 0, "/admin/messages/", &keep)?,
            Vec::new(),
            Some("The chat id must be a whole number."),
        ),
    };
    render(&MessagesPage {
        chrome: staff.chrome("messages", notice(&params)),
        messages,
        pager,
        chat,
        sender,
        q,
        filter_error,
    })
}

#[derive(Template)]
#[template(path = "admin/message.html")]
struct DetailPage {
    chrome: Chrome,
    message: MessageWithChat,
    /// Its earlier versions, oldest first (none once deleted: a deletion erases them).
    versions: Vec<Version>,
}

/// `GET /admin/messages/{id}/`: the message as it is now, with its earlier versions (the
/// newest 100); 404 when unknown.
pub async fn detail(
    State(state): State<AppState>,
    staff: StaffUser,
    AdminId(id): AdminId,
) -> AdminResult<Response> {
    let message = store::messages::with_chat_by_id(&state.db, id)
        .await?
        .ok_or(AdminError::NotFound)?;
    let versions = store::messages::versions(&state.db, id).await?;
    render(&DetailPage {
        chrome: staff.chrome("messages", None),
        message,
        versions,
    })
}

#[derive(Template)]
#[template(path = "admin/message_delete.html")]
struct DeletePage {
    chrome: Chrome,
    message: MessageWithChat,
}

/// `GET /admin/messages/{id}/delete/`: asks to confirm deleting the message.
pub async fn delete_page(
    State(state): State<AppState>,
    staff: StaffUser,
    AdminId(id): AdminId,
) -> AdminResult<Response> {
    // A tombstone has nothing left to delete.
    let message = store::messages::with_chat_by_id(&state.db, id)
        .await?
        .filter(|m| m.message.deleted_at.is_none())
        .ok_or(AdminError::NotFound)?;
    render(&DeletePage {
        chrome: staff.chrome("messages", None),
        message,
    })
}

/// `POST /admin/messages/{id}/delete/`: deletes the message, tells the chat's live connections
/// and redirects (303) to the list; 404 when unknown.
pub async fn delete(
    State(state): State<AppState>,
    AdminId(id): AdminId,
    posted: StaffForm,
) -> AdminResult<Response> {
    let message = store::messages::by_id(&state.db, id)
        .await?
        .ok_or(AdminError::NotFound)?;
    let chat_id = message.chat_id;
    match messaging::delete(&state, &posted.staff.user, chat_id, id).await {
        Ok(_) => {}
        // A tombstone has nothing left to delete.
        Err(ServiceError::NotFound | ServiceError::Conflict(_)) => {
            return Err(AdminError::NotFound)
        }
        Err(err) => return Err(err.into()),
    }
    tracing::info!(
        message.id = id,
        chat.id = chat_id,
        by = posted.staff.user.id,
        "admin deleted a message"
    );
    Ok(see_other("/admin/messages/?done=deleted"))
}
