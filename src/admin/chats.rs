//! `/admin/chats/`: the chat list with search by name, and renaming a chat, adding and removing
//! participants, and deleting it. Removals and deletions close the affected sockets, as the API's
//! do.

use std::collections::BTreeSet;

use askama::Template;
use axum::{extract::State, http::StatusCode, response::Response};

use super::{
    form::{check_length, AdminIds, Errors},
    notice,
    pagination::{requested_page, Pager},
    render, render_with, see_other, AdminError, AdminId, AdminResult, Chrome, Params, StaffForm,
    StaffUser,
};
use crate::{
    domain::{text, username, MAX_CHAT_NAME_CHARS},
    service::{chats, ServiceError},
    state::AppState,
    store::{self, chats::ChatSummary, users::User},
};

/// Most usernames added in one go.
const MAX_ADDED: usize = 100;

#[derive(Template)]
#[template(path = "admin/chats.html")]
struct ChatsPage {
    chrome: Chrome,
    chats: Vec<ChatSummary>,
    pager: Pager,
    q: String,
}

/// `GET /admin/chats/`: chats, a page at a time, searched by name (`q`).
pub async fn list(
    State(state): State<AppState>,
    staff: StaffUser,
    params: Params,
) -> AdminResult<Response> {
    let search = params.text("q");
    let q = search.clone().unwrap_or_default();
    let page = requested_page(&params)?;
    let total = store::chats::count_matching(&state.db, search.as_deref()).await?;
    let pager = Pager::new(page, total, "/admin/chats/", &[("q", q.clone())])?;
    let chats =
        store::chats::matching(&state.db, search.as_deref(), pager.limit(), pager.offset()).await?;
    render(&ChatsPage {
        chrome: staff.chrome("chats", notice(&params)),
        chats,
        pager,
        q,
    })
}

#[derive(Template)]
#[template(path = "admin/chat_edit.html")]
struct EditPage {
    chrome: Chrome,
    chat: ChatSummary,
    participants: Vec<User>,
    /// The name field's value (as submitted, when it was refused).
    name: String,
    /// The add-participants field's value, when it was refused.
    usernames: String,
    errors: Errors,
}

async fn chat(state: &AppState, id: i64) -> AdminResult<ChatSummary> {
    store::chats::summary(&state.db, id)
        .await?
        .ok_or(AdminError::NotFound)
}

async fn edit_page_for(
    state: &AppState,
    staff: &StaffUser,
    chat: ChatSummary,
    notice: Option<&'static str>,
) -> AdminResult<EditPage> {
    let participants = store::chats::participants(&state.db, &[chat.chat.id])
        .await?
        .into_iter()
        .map(|p| p.user)
        .collect();
    Ok(EditPage {
        chrome: staff.chrome("chats", notice),
        name: chat.chat.name.clone(),
        chat,
        participants,
        usernames: String::new(),
        errors: Errors::default(),
    })
}

/// `GET /admin/chats/{id}/`: the chat's name and participants, with the forms that change them.
pub async fn edit_page(
    State(state): State<AppState>,
    staff: StaffUser,
    AdminId(id): AdminId,
    params: Params,
) -> AdminResult<Response> {
    let chat = chat(&state, id).await?;
    render(&edit_page_for(&state, &staff, chat, notice(&params)).await?)
}

/// `POST /admin/chats/{id}/`: renames the chat (field `name`); redirects (303) back on success.
pub async fn rename(
    State(state): State<AppState>,
    AdminId(id): AdminId,
    posted: StaffForm,
) -> AdminResult<Response> {
    let StaffForm { staff, form } = posted;
    let chat = chat(&state, id).await?;
    let name = form.text("name");
    let mut errors = form.errors();
    if name.is_empty() && !errors.has("name") {
        errors.add("name", text::BLANK);
    }
    check_length(&mut errors, "name", &name, MAX_CHAT_NAME_CHARS);
    if !errors.is_empty() {
        let mut page = edit_page_for(&state, &staff, chat, None).await?;
        page.name = name;
        page.errors = errors;
        return render(&page);
    }
    chats::rename_as(&state, chat.chat.id, &name, staff.user.id).await?;
    tracing::info!(
        chat.id = chat.chat.id,
        by = staff.user.id,
        "admin renamed a chat"
    );
    Ok(see_other(&format!("/admin/chats/{id}/?done=renamed")))
}

/// Adds users to the chat by username (field `usernames`, separated by commas or spaces, at
/// most 100 at a time); unknown names are reported on the form.
pub async fn add_participants(
    State(state): State<AppState>,
    AdminId(id): AdminId,
    posted: StaffForm,
) -> AdminResult<Response> {
    let StaffForm { staff, form } = posted;
    let chat = chat(&state, id).await?;
    if chat.chat.direct {
        return members_fixed(&state, &staff, chat).await;
    }
    let raw = form.text("usernames");
    // Usernames have no spaces or commas, so either separates them.
    // Stored usernames are in NFKC form: a look-alike spelling names the account it imitates.
    let wanted: BTreeSet<String> = raw
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|n| !n.is_empty())
        .map(username::normalize)
        .collect();
    let mut errors = form.errors();
    // A field refused as read has its reason already; there is nothing to look up.
    let refused = errors.has("usernames");
    if wanted.is_empty() && !refused {
        errors.add("usernames", "Enter at least one username.");
    } else if wanted.len() > MAX_ADDED {
        errors.add(
            "usernames",
            format!("Add at most {MAX_ADDED} users at a time."),
        );
    }
    let mut found = Vec::new();
    if errors.is_empty() {
        let names: Vec<String> = wanted.iter().cloned().collect();
        found = store::users::by_usernames(&state.db, &names).await?;
        let known: BTreeSet<&str> = found.iter().map(|u| u.username.as_str()).collect();
        let unknown: Vec<&str> = wanted
            .iter()
            .map(String::as_str)
            .filter(|n| !known.contains(n))
            .collect();
        if !unknown.is_empty() {
            errors.add(
                "usernames",
                format!("Unknown username(s): {}", unknown.join(", ")),
            );
        }
    }
    if !errors.is_empty() {
        let mut page = edit_page_for(&state, &staff, chat, None).await?;
        page.usernames = raw;
        page.errors = errors;
        return render(&page);
    }
    let ids: Vec<i64> = found.iter().map(|u| u.id).collect();
    chats::add_as(&state, chat.chat.id, &ids, staff.user.id).await?;
    Ok(see_other(&format!("/admin/chats/{id}/?done=added")))
}

/// Removes a participant from the chat and tells its live connections; the owner cannot be
/// removed (400), and someone not in the chat is a 404.
pub async fn remove_participant(
    State(state): State<AppState>,
    AdminIds(id, user_id): AdminIds,
    posted: StaffForm,
) -> AdminResult<Response> {
    let staff = posted.staff;
    let chat = chat(&state, id).await?;
    if chat.chat.direct {
        return members_fixed(&state, &staff, chat).await;
    }
    if chat.chat.owner_id == Some(user_id) {
        let mut page = edit_page_for(&state, &staff, chat, None).await?;
        page.errors.add(
            "participants",
            "The owner cannot be removed from the chat; the owner may leave it instead.",
        );
        return render_with(StatusCode::BAD_REQUEST, &page);
    }
    match chats::remove_as(&state, chat.chat.id, user_id, staff.user.id).await {
        Err(ServiceError::NotFound) => return Err(AdminError::NotFound),
        other => other?,
    }
    Ok(see_other(&format!("/admin/chats/{id}/?done=removed")))
}

/// The chat's page with a 400 saying that a direct chat's members cannot change.
async fn members_fixed(
    state: &AppState,
    staff: &StaffUser,
    chat: ChatSummary,
) -> AdminResult<Response> {
    let mut page = edit_page_for(state, staff, chat, None).await?;
    page.errors
        .add("participants", crate::service::chats::DIRECT_MEMBERS_FIXED);
    render_with(StatusCode::BAD_REQUEST, &page)
}

#[derive(Template)]
#[template(path = "admin/chat_delete.html")]
struct DeletePage {
    chrome: Chrome,
    chat: ChatSummary,
}

/// `GET /admin/chats/{id}/delete/`: asks to confirm deleting the chat.
pub async fn delete_page(
    State(state): State<AppState>,
    staff: StaffUser,
    AdminId(id): AdminId,
) -> AdminResult<Response> {
    let chat = chat(&state, id).await?;
    render(&DeletePage {
        chrome: staff.chrome("chats", None),
        chat,
    })
}

/// `POST /admin/chats/{id}/delete/`: deletes the chat with its participants and messages, then
/// redirects (303) to the list.
pub async fn delete(
    State(state): State<AppState>,
    AdminId(id): AdminId,
    posted: StaffForm,
) -> AdminResult<Response> {
    let chat = chat(&state, id).await?;
    crate::service::chats::erase(&state, chat.chat.id).await?;
    tracing::info!(
        chat.id = chat.chat.id,
        by = posted.staff.user.id,
        "admin deleted a chat"
    );
    Ok(see_other("/admin/chats/?done=deleted"))
}
