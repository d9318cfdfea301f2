//! Messages across the caller's chats: `GET /api/messages/` and `GET /api/messages/{id}/`.

use axum::{
    extract::{RawQuery, State},
    response::Response,
    routing::get,
    Json, Router,
};

use super::{pagination::Cursor, path::Id};
use crate::wire::schemas::{BadRequest, Detail};
use crate::wire::views::{MessageView, Viewer};
use crate::{
    auth::AuthUser,
    error::{ApiError, ApiResult},
    service::messaging,
    state::AppState,
    store,
};

/// Messages across the caller's chats.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/messages", get(list))
        .route("/api/messages/{id}", get(retrieve))
        .route("/api/mentions", get(mentions))
}

/// Lists the messages of every chat the caller takes part in, oldest first, one page at a time.
#[utoipa::path(get, path = "/api/messages/", tag = "Messages", security(("session" = []), ("bearer" = [])), params(
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 500 (default 100)", minimum = 1, maximum = 500),
        ("before" = Option<i64>, Query, description = "Only ids below this; the page holds the newest of them", minimum = 0),
        ("after" = Option<i64>, Query, description = "Only ids above this; the page holds the oldest of them", minimum = 0),
    ),
    responses(
        (status = 200, description = "Messages of every chat the caller is in, oldest first", body = Vec<MessageView>, headers(("Link" = String, description = "`<url>; rel=\"next\"` when more items lie beyond this page"))),
        (status = 400, description = "Invalid input", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
    ))]
async fn list(
    State(state): State<AppState>,
    auth: AuthUser,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let cursor = Cursor::from_query(query.as_deref())?;
    let rows = store::messages::page_for_user(&state.db, auth.user.id, cursor.probe()).await?;
    respond(&state, &auth, cursor, rows, "/api/messages/").await
}

/// A page of `rows` (read with `cursor`'s probe) as the caller sees them, with their reactions.
async fn respond(
    state: &AppState,
    auth: &AuthUser,
    cursor: Cursor,
    rows: Vec<store::messages::Message>,
    path: &str,
) -> ApiResult<Response> {
    let viewer = Viewer::of(&auth.user);
    let mut views = messaging::MessageViews::of(&state.db, &rows, viewer).await?;
    cursor.respond(
        rows,
        |m| m.id,
        path,
        state.config.page_bytes,
        |m| views.view(m),
    )
}

/// Lists the messages that mention the caller (`@username`) in the chats they take part in,
/// oldest first, one page at a time; without a cursor, the newest page.
#[utoipa::path(get, path = "/api/mentions/", tag = "Messages", security(("session" = []), ("bearer" = [])), params(
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 500 (default 100)", minimum = 1, maximum = 500),
        ("before" = Option<i64>, Query, description = "Only ids below this; the page holds the newest of them", minimum = 0),
        ("after" = Option<i64>, Query, description = "Only ids above this; the page holds the oldest of them", minimum = 0),
    ),
    responses(
        (status = 200, description = "Messages mentioning the caller, oldest first", body = Vec<MessageView>, headers(("Link" = String, description = "`<url>; rel=\"next\"` when more items lie beyond this page"))),
        (status = 400, description = "Invalid input", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
    ))]
async fn mentions(
    State(state): State<AppState>,
    auth: AuthUser,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let cursor = Cursor::from_query(query.as_deref())?;
    let rows = messaging::mentions(&state, &auth.user, cursor.probe()).await?;
    respond(&state, &auth, cursor, rows, "/api/mentions/").await
}

/// Returns one message of a chat the caller takes part in.
#[utoipa::path(get, path = "/api/messages/{id}/", tag = "Messages", security(("session" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "Message id")),
    responses(
        (status = 200, description = "The message", body = MessageView),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
    ))]
async fn retrieve(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(id): Id,
) -> ApiResult<Json<MessageView>> {
    let message = store::messages::visible_to(&state.db, id, auth.user.id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let mut views = messaging::with_reactions(&state, vec![message], &auth.user).await?;
    Ok(Json(views.remove(0)))
}
