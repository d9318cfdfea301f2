//! `/admin/`: how much there is, and what happened last.

use askama::Template;
use axum::{extract::State, response::Response};

use super::{notice, render, AdminResult, Chrome, Params, StaffUser};
use crate::{
    state::AppState,
    store::{
        self,
        messages::{MessageFilter, MessageWithChat},
        users::User,
        Counts,
    },
};

/// How many of the newest users and messages the dashboard lists.
const RECENT: i64 = 5;

#[derive(Template)]
#[template(path = "admin/dashboard.html")]
struct DashboardPage {
    chrome: Chrome,
    counts: Counts,
    today: String,
    newest_users: Vec<User>,
    latest_messages: Vec<MessageWithChat>,
}

/// `GET /admin/`: row counts, today's figures, the newest users and the latest messages.
pub async fn show(
    State(state): State<AppState>,
    staff: StaffUser,
    params: Params,
) -> AdminResult<Response> {
    let today = store::now().format("%Y-%m-%d").to_string();
    let counts = store::counts(&state.db, &today).await?;
    let newest_users = store::users::newest(&state.db, RECENT).await?;
    let latest_messages =
        store::messages::matching(&state.db, &MessageFilter::default(), RECENT, 0).await?;
    render(&DashboardPage {
        chrome: staff.chrome("dashboard", notice(&params)),
        counts,
        today,
        newest_users,
        latest_messages,
    })
}
