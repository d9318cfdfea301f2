//! The opening handshake both sockets share: the checks made before a WebSocket upgrade is
//! answered, and the upgrade's limits. A refused handshake is an HTTP answer with a
//! `{"detail": …}` body, never an upgrade.

use crate::{
    auth::{csrf, AuthUser},
    error::ApiError,
    http::query::Query,
    realtime::registry::{Refused, Slot},
    service::sessions,
    service::FieldErrors,
    state::AppState,
    store::users::User,
    wire::{frames::Protocol, schemas::Detail},
};
use axum::{
    extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};

/// Largest frame (and message) a client may send: 128 KiB. Larger ones close the socket (1009).
/// A message's limit is stated in characters, so the frame must carry the longest message in
/// any standard JSON encoding: raw UTF-8 takes at most 4 bytes a character, but an astral-plane
/// character written as a `\uXXXX\uXXXX` surrogate pair takes 12, so a message of the full
/// [`crate::domain::message::MAX_CHARS`] emoji is 120,000 bytes before its keys.
pub const MAX_FRAME_BYTES: usize = 128 * 1024;

/// The most bytes one character can take in a JSON text: a surrogate pair of `\u` escapes.
const MAX_JSON_BYTES_PER_CHAR: usize = 12;

// The frame limit must never refuse a message the message limit accepts (with room for keys).
const _: () = assert!(
    MAX_FRAME_BYTES >= crate::domain::message::MAX_CHARS * MAX_JSON_BYTES_PER_CHAR + 4 * 1024
);

/// An HTTP answer refusing the handshake.
pub fn refuse(status: StatusCode, detail: &str) -> Response {
    let body = Detail {
        detail: detail.to_owned(),
    };
    (status, Json(body)).into_response()
}

/// Browsers always send `Origin`; it must be this server's host or a configured origin. Clients
/// without one (mobile apps, scripts) are judged by their credentials alone.
pub fn origin_allowed(headers: &HeaderMap, state: &AppState) -> bool {
    match csrf::request_origin(headers) {
        None => true,
        Some(origin) => {
            csrf::is_same_host(&origin, headers) || state.config.allowed_origins.contains(&origin)
        }
    }
}

/// Why a handshake was refused: a status with a `{"detail": …}` body, or an API error.
#[derive(Debug)]
pub enum Refusal {
    /// This status with `{"detail": …}`.
    Detail(StatusCode, &'static str),
    /// An API error rendered as everywhere else (a 500 when the database did not answer).
    Api(ApiError),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Detail(status, detail) => refuse(status, detail),
            Refusal::Api(err) => err.into_response(),
        }
    }
}

/// An admitted caller and the place their socket holds from now on: keep the slot with the
/// socket, so it is given back when the socket ends (or the upgrade never happens).
pub struct Admitted {
    pub user: User,
    pub slot: Slot,
}

/// The message of a refusal for a user at `MRM_MAX_SOCKETS_PER_USER`.
const TOO_MANY_SOCKETS: &str = "You have too many sockets open; close one and try again.";
/// The message of a refusal at `MRM_MAX_SOCKETS`.
const SERVER_FULL: &str = "The server is at its connection limit; try again later.";

/// The checks every socket makes first, in this order: a trusted origin (403), room for one more
/// socket under `MRM_MAX_SOCKETS` (503), the caller's credentials (403 when missing or invalid),
/// then a slot under `MRM_MAX_SOCKETS_PER_USER` (429) and `MRM_MAX_SOCKETS` (503), taken before
/// the upgrade so that handshakes in flight count. The credential is checked once more with the
/// slot held: one that ended in between found no socket to close, and is refused here (403).
pub async fn admit(
    state: &AppState,
    headers: &HeaderMap,
    auth: Result<AuthUser, ApiError>,
) -> Result<Admitted, Refusal> {
    if !origin_allowed(headers, state) {
        return Err(Refusal::Detail(
            StatusCode::FORBIDDEN,
            "Origin not allowed.",
        ));
    }
    if state.realtime.at_capacity() {
        return Err(Refusal::Detail(
            StatusCode::SERVICE_UNAVAILABLE,
            SERVER_FULL,
        ));
    }
    let auth = caller(auth)?;
    let slot = match state
        .realtime
        .sockets
        .admit(auth.user.id, auth.credential.clone())
    {
        Ok(slot) => slot,
        Err(Refused::UserFull) => {
            return Err(Refusal::Detail(
                StatusCode::TOO_MANY_REQUESTS,
                TOO_MANY_SOCKETS,
            ))
        }
        Err(Refused::Full) => {
            return Err(Refusal::Detail(
                StatusCode::SERVICE_UNAVAILABLE,
                SERVER_FULL,
            ))
        }
    };
    match sessions::still_valid(state, &auth.credential).await {
        Ok(true) => Ok(Admitted {
            user: auth.user,
            slot,
        }),
        Ok(false) => Err(Refusal::Detail(StatusCode::FORBIDDEN, NOT_AUTHENTICATED)),
        Err(err) => Err(Refusal::Api(err.into())),
    }
}

/// The message of a refusal for missing or invalid credentials, as the original's.
const NOT_AUTHENTICATED: &str = "Authentication credentials were not provided.";

/// The caller, or a 403 as the original's socket consumer refuses anonymous users: a missing or
/// invalid credential alike. Other failures (the database not answering) keep their status.
fn caller(auth: Result<AuthUser, ApiError>) -> Result<AuthUser, Refusal> {
    match auth {
        Ok(auth) => Ok(auth),
        Err(ApiError::InvalidToken | ApiError::NotAuthenticated) => {
            Err(Refusal::Detail(StatusCode::FORBIDDEN, NOT_AUTHENTICATED))
        }
        Err(err) => Err(Refusal::Api(err)),
    }
}

/// The upgrade with the sockets' limits: frames and messages of at most [`MAX_FRAME_BYTES`], a
/// write buffer of at most 1 MiB; or a 400 when the request is not a WebSocket upgrade.
pub fn upgrade(
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<WebSocketUpgrade, Refusal> {
    let upgrade = upgrade.map_err(|_| {
        Refusal::Detail(
            StatusCode::BAD_REQUEST,
            "Expected a WebSocket upgrade request.",
        )
    })?;
    Ok(upgrade
        // tungstenite reserves 128 KiB per direction by default; most sockets are idle, so keep
        // the reservation small and let a burst grow it.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(1024 * 1024)
        .max_frame_size(MAX_FRAME_BYTES)
        .max_message_size(MAX_FRAME_BYTES))
}

/// The upgrade (with [`upgrade`]'s limits) and the protocol the client asked for, chosen once
/// here: `mrm.v2` when the client offers it in `Sec-WebSocket-Protocol` (the answer then names
/// it, as RFC 6455 §4.2.2 requires) or names it with `?protocol=mrm.v2`; the original protocol
/// otherwise. Other offered subprotocols are passed over, as the RFC allows; a `protocol=`
/// naming anything else (every value, when repeated, must be known) is refused with 400
/// `{"protocol": ["Unknown protocol …"]}`.
pub fn negotiate(
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    query: Option<&str>,
) -> Result<(WebSocketUpgrade, Protocol), Refusal> {
    let upgrade = self::upgrade(upgrade)?.protocols([Protocol::V2_NAME]);
    let mut protocol = match upgrade.selected_protocol() {
        Some(_) => Protocol::V2,
        None => Protocol::Original,
    };
    for name in Query::parse(query).values("protocol") {
        match Protocol::named(name) {
            Some(named) => protocol = named,
            None => {
                return Err(Refusal::Api(ApiError::Validation(FieldErrors::single(
                    "protocol",
                    format!(
                        "Unknown protocol \"{}\"; the one that can be asked for is \"{}\".",
                        name.chars().take(50).collect::<String>(),
                        Protocol::V2_NAME
                    ),
                ))))
            }
        }
    }
    Ok((upgrade, protocol))
}
