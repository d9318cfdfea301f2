//! `/api/ai/usage/`: token use per model and per day.

use axum::{
    extract::{RawQuery, State},
    Json,
};

use crate::{
    auth::AuthUser,
    error::ApiResult,
    http::query::Query,
    service::{conversations, FieldErrors},
    state::AppState,
    wire::schemas::{BadRequest, Detail, Usage},
};

/// Reports token usage for a range of days (`from`, `to` as `YYYY-MM-DD`, UTC; default the last
/// 30 days), in total, per model and per day. Staff may ask about another user with `user=<id>`.
#[utoipa::path(get, path = "/api/ai/usage/", tag = "AI Messages", security(("session" = []), ("bearer" = [])),
    params(
        ("from" = Option<String>, Query, description = "First day, YYYY-MM-DD (default: 29 days before `to`)"),
        ("to" = Option<String>, Query, description = "Last day, YYYY-MM-DD (default: today, UTC)"),
        ("user" = Option<i64>, Query, description = "Another user's id (staff only)"),
    ),
    responses(
        (status = 200, description = "Token use in total, per model and per day", body = Usage),
        (status = 400, description = "Invalid input", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or not staff", body = Detail),
        (status = 404, description = "No such user", body = Detail),
    ))]
pub async fn usage(
    State(state): State<AppState>,
    auth: AuthUser,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Usage>> {
    let query = Query::parse(query.as_deref());
    let mut errors = FieldErrors::new();
    let from = query.date("from", &mut errors);
    let to = query.date("to", &mut errors);
    let user_id = query
        .integer("user", None, None, &mut errors)
        .unwrap_or(auth.user.id);
    errors.check()?;
    Ok(Json(
        conversations::usage(&state, &auth.user, user_id, from, to).await?,
    ))
}
