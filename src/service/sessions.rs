//! Credentials a login hands out: browser sessions (API and admin logins alike) and bearer
//! tokens, and what happens when they end. Checking the password itself is
//! [`super::accounts::authenticate`].

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

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
///
/// The change is also counted in the database ([`store::sessions::count_ended`]), which every
/// server reads each second ([`watch_ended`]): a process that reaches no bus (the command line
/// without Redis, a node whose Redis is down) still gets the sockets closed.
pub async fn ended(state: &AppState, ended: Ended) {
    if let Err(err) = store::sessions::count_ended(&state.db).await {
        tracing::warn!(error = %err, "could not count ended credentials");
    }
    state.realtime.end_credentials(ended).await;
}

/// Those of `credentials` that no longer authenticate anyone: one query for the sessions among
/// them and one for the tokens.
async fn ended_among(
    state: &AppState,
    credentials: &[Credential],
) -> ServiceResult<Vec<Credential>> {
    let (mut sessions, mut tokens) = (Vec::new(), Vec::new());
    for credential in credentials {
        match credential {
            Credential::Session { key_hash } => sessions.push(key_hash.clone()),
            Credential::Token { token_hash } => tokens.push(token_hash.clone()),
        }
    }
    let mut valid: HashSet<String> = store::sessions::valid_among(&state.db, &sessions)
        .await?
        .into_iter()
        .collect();
    valid.extend(store::tokens::valid_among(&state.db, &tokens).await?);
    Ok(credentials
        .iter()
        .filter(|c| match c {
            Credential::Session { key_hash: h } | Credential::Token { token_hash: h } => {
                !valid.contains(h)
            }
        })
        .cloned()
        .collect())
}

/// How often a server reads the count of ended credentials ([`watch_ended`]).
const ENDED_POLL: Duration = Duration::from_secs(1);

/// Most credentials asked about in one query.
const CHECK_BATCH: usize = 1000;

/// Closes this node's sockets whose credentials ended without this node being told, for as long
/// as the server runs: reads the count of ended credentials every second and, when it moved,
/// or every `MRM_CREDENTIAL_RECHECK_SECONDS` in any case (sessions expire without anyone
/// announcing it), asks the database which of the open sockets' credentials still authenticate
/// ([`close_ended`]).
pub async fn watch_ended(state: AppState) {
    let mut tick = tokio::time::interval(ENDED_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen: Option<i64> = None;
    let mut last_check = Instant::now();
    loop {
        tick.tick().await;
        let count = match store::sessions::ended_count(&state.db).await {
            Ok(count) => Some(count),
            Err(err) => {
                tracing::debug!(error = %err, "could not read the count of ended credentials");
                None
            }
        };
        let moved = count.is_some() && seen.is_some() && count != seen;
        let due = last_check.elapsed() >= state.config.credential_recheck;
        if count.is_some() {
            seen = count;
        }
        if !(moved || due) {
            continue;
        }
        last_check = Instant::now();
        match close_ended(&state).await {
            Ok(0) => {}
            Ok(closed) => tracing::info!(sockets = closed, "sockets of ended credentials closed"),
            Err(err) => tracing::warn!(error = %err, "could not check open sockets' credentials"),
        }
    }
}

/// Asks the database which credentials of this node's open sockets still authenticate, and
/// closes (4001) the sockets of the others; returns how many were told to close. Credentials
/// are asked about in batches of 1,000, one query per batch.
pub async fn close_ended(state: &AppState) -> ServiceResult<usize> {
    let held = state.realtime.sockets.credentials();
    if held.is_empty() {
        return Ok(0);
    }
    let mut ended = HashSet::new();
    for batch in held.chunks(CHECK_BATCH) {
        ended.extend(ended_among(state, batch).await?);
    }
    Ok(state.realtime.sockets.end_each(&ended))
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
