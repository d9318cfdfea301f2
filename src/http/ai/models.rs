//! `/api/ai/models/`: the models the caller may choose for an AI chat.

use axum::{extract::State, Json};

use crate::{
    auth::AuthUser,
    service::conversations,
    state::AppState,
    wire::schemas::{AiModel, Detail},
};

/// Lists the models the caller may choose, provider by provider: each provider's allow-list,
/// narrowed to what its `GET /models` lists (cached for `MRM_AI_MODELS_CACHE_SECONDS`), or all
/// it lists when it has none; a provider that cannot be reached offers its allow-list.
#[utoipa::path(get, path = "/api/ai/models/", tag = "AI Chat", security(("session" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The models the caller may choose; empty when no provider is configured", body = Vec<AiModel>),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated", body = Detail),
    ))]
pub async fn models(State(state): State<AppState>, auth: AuthUser) -> Json<Vec<AiModel>> {
    Json(conversations::models(&state, &auth.user).await)
}
