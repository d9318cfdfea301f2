//! `GET /ws/ai-chat/{id}/`: the AI chat socket's handshake, for the AI chat's owner only.

use axum::{
    extract::{
        ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade},
        RawQuery, State,
    },
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};

use super::handshake::{self, refuse, Admitted};
use crate::{
    ai::socket,
    auth::AuthUser,
    error::ApiError,
    http::path::Id,
    service::{conversations, ServiceError},
    state::AppState,
};

/// Checks the handshake (origin, capacity, credentials, ownership, protocol) and hands the upgraded
/// socket to [`crate::ai::socket::run`].
pub async fn ai_socket(
    State(state): State<AppState>,
    Id(ai_chat_id): Id,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    auth: Result<AuthUser, ApiError>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Admitted { user, slot } = match handshake::admit(&state, &headers, auth).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused.into_response(),
    };
    match conversations::owned(&state, ai_chat_id, &user).await {
        Ok(_) => {}
        Err(ServiceError::NotFound) => {
            return refuse(StatusCode::FORBIDDEN, "This AI chat is not yours.")
        }
        Err(err) => return ApiError::from(err).into_response(),
    }
    let (upgrade, protocol) = match handshake::negotiate(upgrade, query.as_deref()) {
        Ok(negotiated) => negotiated,
        Err(refused) => return refused.into_response(),
    };
    upgrade.on_upgrade(move |ws| {
        let connections = state.realtime.connections.clone();
        connections.track_future(socket::run(state, ai_chat_id, user, slot, ws, protocol))
    })
}
