//! `GET /ws/chat/{chat_id}/`: the group chat socket's handshake.
//!
//! The handshake is refused with 403 (no upgrade) for anonymous callers, non-participants,
//! unknown chats, and browsers on an untrusted origin; with 400 for a bad `after_seq` / `after`
//! or an unknown `protocol`.

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
    auth::AuthUser,
    error::ApiError,
    http::{
        path::Id,
        query::{parse_non_negative, Query},
    },
    realtime::socket::Connection,
    service::{chats, FieldErrors, ServiceError},
    state::AppState,
};

/// Checks the handshake (origin, capacity, credentials, membership, resume point) and hands
/// the upgraded socket to its [`Connection`].
pub async fn chat_socket(
    State(state): State<AppState>,
    Id(chat_id): Id,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    auth: Result<AuthUser, ApiError>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Admitted { user, slot } = match handshake::admit(&state, &headers, auth).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused.into_response(),
    };
    // The chat's position now, before the handshake is answered: a live-only socket owes its
    // client every message committed after this point, including any that arrive before the
    // socket has joined its room.
    let handshake_seq = match chats::position(&state, chat_id, &user).await {
        Ok(seq) => seq,
        Err(ServiceError::NotFound) => {
            return refuse(
                StatusCode::FORBIDDEN,
                "You are not a participant of this chat.",
            )
        }
        Err(err) => return ApiError::from(err).into_response(),
    };
    let resume = match resume_point(&state, chat_id, query.as_deref()).await {
        Ok(resume) => resume,
        Err(err) => return err.into_response(),
    };
    let (upgrade, protocol) = match handshake::negotiate(upgrade, query.as_deref()) {
        Ok(negotiated) => negotiated,
        Err(refused) => return refused.into_response(),
    };
    let settings = state.realtime.settings;
    upgrade.on_upgrade(move |socket| {
        let connections = state.realtime.connections.clone();
        connections.track_future(async move {
            Connection::new(
                state,
                chat_id,
                user,
                settings.queue_capacity,
                slot,
                protocol,
            )
            .run(socket, resume, handshake_seq)
            .await
        })
    })
}

/// The seq the client already has: from `after_seq`, or the seq of the `after` message.
async fn resume_point(
    state: &AppState,
    chat_id: i64,
    query: Option<&str>,
) -> Result<Option<i64>, ApiError> {
    // The first `after_seq` or `after` decides.
    for (key, value) in Query::parse(query).pairs() {
        match (key, parse_non_negative(value)) {
            ("after_seq", Some(seq)) => return Ok(Some(seq)),
            ("after", Some(id)) => {
                return match chats::seq_of_message(state, chat_id, id).await? {
                    Some(seq) => Ok(Some(seq)),
                    None => Err(ApiError::Validation(FieldErrors::single(
                        "after",
                        "No message with this id in this chat.",
                    ))),
                };
            }
            ("after_seq" | "after", None) => {
                return Err(ApiError::Validation(FieldErrors::single(
                    key,
                    "A valid non-negative integer is required.",
                )))
            }
            _ => {}
        }
    }
    Ok(None)
}
