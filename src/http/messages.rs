//! Messages across the caller's chats: `GET /api/messages/` and `GET /api/messages/{id}/`.

use axum::{
    extract::{RawQuery, State},
    response::Response,
    routing::get,
    Json, Router,
};

use super::{pagination::Cursor, path::Id, views::MessageView};
use crate::{
    auth::AuthUser,
    error::{ApiError, ApiResult},
    state::AppState,
    store,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/messages", get(list))
        .route("/api/messages/{id}", get(retrieve))
}

async fn list(
    State(state): State<AppState>,
    auth: AuthUser,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let cursor = Cursor::from_query(query.as_deref())?;
    let rows = store::messages::page_for_user(&state.db, auth.user.id, cursor.probe()).await?;
    Ok(cursor.respond(rows, |m| m.id, "/api/messages/", MessageView::from))
}

async fn retrieve(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(id): Id,
) -> ApiResult<Json<MessageView>> {
    let message = store::messages::visible_to(&state.db, id, auth.user.id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(MessageView::from(message)))
}
