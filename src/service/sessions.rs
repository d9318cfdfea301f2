//! Credentials a login hands out: browser sessions (API and admin logins alike) and bearer
//! tokens, and what happens when they end. Checking the password itself is
//! [`super::accounts::authenticate`].

use crate::{
    auth::{
        secret::{random_token, storage_hash},
        session::{self, NewSession},
        Credential,
    },
    realtime::registry::Ended,
    state::AppState,
    store::{self, users::User},
};

use super::ServiceResult;

/// Starts a browser session for an authenticated user and records the login time. The session
/// key the browser already had (`previous_key`, the raw cookie value) is deleted first: a new
/// key at every login, so a key planted before login is worth nothing after it (session
/// fixation; Django's `cycle_key`).
pub async fn log_in(
    state: &AppState,
    user: &User,
    previous_key: Option<&str>,
) -> ServiceResult<NewSession> {
    if let Some(old) = previous_key {
        let key_hash = storage_hash(old);
        store::sessions::delete(&state.db, &key_hash).await?;
        ended(state, Ended::Session { key_hash }).await;
    }
    let new_session = session::start(&state.db, user.id).await?;
    store::users::record_login(&state.db, user.id).await?;
    Ok(new_session)
}

/// Ends the browser session whose key hash is `key_hash`, and the sockets opened with it.
pub async fn log_out(state: &AppState, key_hash: &str) -> ServiceResult<()> {
    store::sessions::delete(&state.db, key_hash).await?;
    ended(
        state,
        Ended::Session {
            key_hash: key_hash.to_owned(),
        },
    )
    .await;
    Ok(())
}

/// Whether `credential` still authenticates its user: asked again by a socket's handshake once
/// its slot is registered, since a credential that ended between the first check and then found
/// no socket to close.
pub async fn still_valid(state: &AppState, credential: &Credential) -> ServiceResult<bool> {
    Ok(match credential {
        Credential::Session { key_hash } => {
            store::sessions::user(&state.db, key_hash).await?.is_some()
        }
        Credential::Token { token_hash } => {
            store::tokens::user(&state.db, token_hash).await?.is_some()
        }
    })
}

/// Every credential of a user has ended but the session `kept` (a key hash), in the database
/// already: their password changed, or their account was deactivated or deleted.
pub async fn ended_for_user(state: &AppState, user_id: i64, kept: Option<&str>) {
    let kept = kept.map(str::to_owned);
    ended(state, Ended::User { user_id, kept }).await;
}

/// The one place credentials end for live connections, called once the change is committed:
/// every socket opened with them closes, on every node, with 4001 (authenticate again). When a
/// whole user's credentials end, their running AI replies stop too (a reply already streaming
/// has been paid for up to that point, and the rest is not): whoever holds the old credentials
/// may not be them.
pub async fn ended(state: &AppState, ended: Ended) {
    state.realtime.end_credentials(ended).await;
}

/// A bearer token issued to a user: `mrm_` and 43 random characters. Only its SHA-256 hash is
/// stored, so this is the one time it can be read.
pub struct IssuedToken {
    /// The whole token, `mrm_…`, as the client will send it after `Bearer `.
    pub token: String,
}

/// Issues a bearer token for an authenticated user, labelled `name` (at most 100 characters,
/// checked by the caller).
pub async fn issue_token(state: &AppState, user: &User, name: &str) -> ServiceResult<IssuedToken> {
    let token = format!("mrm_{}", random_token(43));
    store::tokens::create(&state.db, user.id, &storage_hash(&token), name).await?;
    tracing::info!(user.id = user.id, "token issued");
    Ok(IssuedToken { token })
}

/// Revokes the bearer token whose hash is `token_hash`, and closes the sockets opened with it.
pub async fn revoke_token(state: &AppState, token_hash: &str) -> ServiceResult<()> {
    store::tokens::delete(&state.db, token_hash).await?;
    ended(
        state,
        Ended::Token {
            token_hash: token_hash.to_owned(),
        },
    )
    .await;
    Ok(())
}
