//! Credentials a login hands out: browser sessions (API and admin logins alike) and bearer
//! tokens. Checking the password itself is [`super::accounts::authenticate`].

use crate::{
    auth::{
        secret::{random_token, storage_hash},
        session::{self, NewSession},
    },
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
        store::sessions::delete(&state.db, &storage_hash(old)).await?;
    }
    let new_session = session::start(&state.db, user.id).await?;
    store::users::record_login(&state.db, user.id).await?;
    Ok(new_session)
}

/// Ends the browser session whose key hash is `key_hash`.
pub async fn log_out(state: &AppState, key_hash: &str) -> ServiceResult<()> {
    store::sessions::delete(&state.db, key_hash).await?;
    Ok(())
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

/// Revokes the bearer token whose hash is `token_hash`.
pub async fn revoke_token(state: &AppState, token_hash: &str) -> ServiceResult<()> {
    store::tokens::delete(&state.db, token_hash).await?;
    Ok(())
}
