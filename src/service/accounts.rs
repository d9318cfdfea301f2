//! Accounts: registration, checking credentials, and changing a password. The API, the admin
//! area and the command line all come here, so an account is made and a password checked by
//! the same rules whichever door they use.

use std::net::IpAddr;

use crate::{
    auth::password::Verdict,
    domain::{password, text, username, Email, UserType, Username},
    state::AppState,
    store::{self, users::NewUser, users::User},
};

use super::{FieldErrors, ServiceError, ServiceResult};

/// A new account as submitted, before validation: each field as the client sent it (`None`
/// when absent). Presence rules of a surface (a missing required field) are recorded in the
/// [`FieldErrors`] handed to [`validate_registration`].
#[derive(Debug, Default)]
pub struct RegistrationForm {
    pub username: Option<String>,
    pub email: Option<String>,
    pub password: Option<String>,
    pub password_confirm: Option<String>,
    /// `owner`, `student` or `staff`; `student` when absent.
    pub user_type: Option<String>,
}

/// A validated registration: every value is valid and the username was free when checked.
pub struct Registration {
    pub username: Username,
    pub email: Email,
    /// The chosen password in plain text; only its argon2id hash is ever stored.
    pub password: String,
    pub user_type: UserType,
}

/// The message of a taken username, as Django's `unique` validator words it.
const USERNAME_TAKEN: &str = "A user with that username already exists.";

/// Checks a new account: field rules, a free username, matching passwords, then the password
/// policy (`PasswordPolicy`, Django's four validators). Field errors found so far by the caller
/// come in `errors` and are reported together with these. The username and email are stripped
/// of surrounding whitespace (as the original's serializer strips them) and the username is
/// normalized to NFKC before it is checked or compared, so `ａｌｉｃｅ` is `alice`.
///
/// Errors: `Validation` with every field error; `BadRequest` when a required field is missing
/// and the caller did not record why.
pub async fn validate_registration(
    state: &AppState,
    form: RegistrationForm,
    mut errors: FieldErrors,
) -> ServiceResult<Registration> {
    let RegistrationForm {
        username,
        email,
        password,
        password_confirm,
        user_type,
    } = form;
    let username = username.and_then(|raw| match Username::parse(text::strip(&raw)) {
        Ok(name) => Some(name),
        Err(message) => {
            errors.add("username", message);
            None
        }
    });
    if let Some(name) = &username {
        if store::users::username_taken(&state.db, name.as_str()).await? {
            errors.add("username", USERNAME_TAKEN);
        }
    }
    let email = match Email::parse(text::strip(&email.unwrap_or_default())) {
        Ok(email) => Some(email),
        Err(message) => {
            errors.add("email", message);
            None
        }
    };
    let user_type = match user_type.as_deref().map(UserType::parse).transpose() {
        Ok(t) => t.unwrap_or_default(),
        Err(message) => {
            errors.add("user_type", message);
            UserType::default()
        }
    };
    for (name, value) in [
        ("password", &password),
        ("password_confirm", &password_confirm),
    ] {
        if value.as_deref().is_some_and(str::is_empty) {
            errors.add(name, "This field may not be blank.");
        }
    }
    errors.check()?;
    let (Some(username), Some(email), Some(password), Some(confirm)) =
        (username, email, password, password_confirm)
    else {
        return Err(ServiceError::BadRequest("incomplete registration".into()));
    };
    if password != confirm {
        return Err(ServiceError::Validation(FieldErrors::single(
            "password",
            "Passwords don't match.",
        )));
    }
    let problems = state.password_policy.problems(
        &password,
        &[
            ("username", username.as_str()),
            ("email address", email.as_str()),
        ],
    );
    if !problems.is_empty() {
        let mut errors = FieldErrors::new();
        for problem in problems {
            errors.add("password", problem);
        }
        return Err(ServiceError::Validation(errors));
    }
    Ok(Registration {
        username,
        email,
        password,
        user_type,
    })
}

/// Stores a validated account with an argon2id hash of its password. A username taken since
/// validation is the same field error as one taken before.
pub async fn create_account(
    state: &AppState,
    registration: Registration,
    is_staff: bool,
    is_superuser: bool,
) -> ServiceResult<User> {
    let password_hash = state.hasher.hash(registration.password).await?;
    let new = NewUser {
        username: registration.username.as_str(),
        email: registration.email.as_str(),
        password_hash: &password_hash,
        user_type: registration.user_type,
        is_staff,
        is_superuser,
    };
    match store::users::create(&state.db, &new).await {
        Ok(user) => Ok(user),
        Err(err) if store::is_unique_violation(&err) => Err(ServiceError::Validation(
            FieldErrors::single("username", USERNAME_TAKEN),
        )),
        Err(err) => Err(err.into()),
    }
}

/// Validates and stores an account in one call: registration over the API, `createsuperuser`.
pub async fn register(
    state: &AppState,
    form: RegistrationForm,
    errors: FieldErrors,
    is_staff: bool,
    is_superuser: bool,
) -> ServiceResult<User> {
    let registration = validate_registration(state, form, errors).await?;
    create_account(state, registration, is_staff, is_superuser).await
}

/// Registration from a client address (`POST /api/register/`): counted against the address's
/// password budget (`MRM_PASSWORD_ATTEMPTS_PER_MINUTE`) before anything else, as each one hashes
/// a password. Errors: `RateLimited`, then as [`register`].
pub async fn register_from(
    state: &AppState,
    client: IpAddr,
    form: RegistrationForm,
    errors: FieldErrors,
) -> ServiceResult<User> {
    state.limits.password_check(client).await?;
    register(state, form, errors, false, false).await
}

/// Checks a username and password, counting the attempt against the login rate limit of
/// `client` and that username (`MRM_LOGIN_ATTEMPTS_PER_MINUTE`) and against the password budget
/// of `client` (`MRM_PASSWORD_ATTEMPTS_PER_MINUTE`).
///
/// The username is normalized as stored usernames are ([`username::normalize`], NFKC; those
/// stored before are rewritten at start-up by [`normalize_stored_usernames`]).
/// As the original: anything short of a matching username and password of an active account is
/// `InvalidCredentials`, and an unknown username costs the same time as a wrong password. A
/// password longer than any that can be set (`password::MAX_LENGTH`) is `InvalidCredentials`
/// without being hashed, as Django's `check_password` returns false for one.
/// Errors: `InvalidCredentials`, `RateLimited` (also when the hashing queue is full).
pub async fn authenticate(
    state: &AppState,
    client: IpAddr,
    username: Option<String>,
    password: Option<String>,
) -> ServiceResult<User> {
    let (Some(username), Some(password)) = (username, password) else {
        return Err(ServiceError::InvalidCredentials);
    };
    // No stored username is longer than `MAX_CHARS`, and NFKC shortens text by at most a few
    // times (combining marks and jamo compose): a longer name is refused before any work.
    if text::char_count(&username) > username::MAX_CHARS * 4 {
        return Err(ServiceError::InvalidCredentials);
    }
    // Stored usernames are in NFKC form, so a look-alike spelling finds the account it imitates.
    let username = username::normalize(&username);
    state.limits.login(client, &username).await?;
    if password::too_long(&password) {
        tracing::info!("failed login: password over the length limit");
        return Err(ServiceError::InvalidCredentials);
    }
    let slot = state.hasher.reserve()?;
    let credentials = store::users::credentials(&state.db, &username).await?;
    let hash = credentials.as_ref().map(|c| c.password_hash.clone());
    let verdict = slot.check(password.clone(), hash).await?;
    match credentials {
        Some(c) if verdict.matches() && c.is_active => {
            if verdict == Verdict::Legacy {
                upgrade_hash(state, c.id, &c.password_hash, password).await;
            }
            store::users::by_id(&state.db, c.id)
                .await?
                .ok_or(ServiceError::InvalidCredentials)
        }
        _ => {
            tracing::info!("failed login");
            Err(ServiceError::InvalidCredentials)
        }
    }
}

/// Replaces a user's imported Django hash (`old`, which `password` just matched) by an Argon2id
/// hash, unless the hash changed meanwhile. A failure is logged: the login still succeeds, and
/// the next one tries again.
async fn upgrade_hash(state: &AppState, user_id: i64, old: &str, password: String) {
    let upgraded = match state.hasher.hash(password).await {
        Ok(hash) => store::users::replace_password_hash(&state.db, user_id, old, &hash)
            .await
            .map_err(anyhow::Error::from),
        Err(err) => Err(anyhow::anyhow!(err)),
    };
    match upgraded {
        Ok(_) => tracing::info!(
            user.id = user_id,
            "imported password hash replaced by Argon2id"
        ),
        Err(err) => {
            tracing::warn!(user.id = user_id, error = %err, "could not replace an imported password hash")
        }
    }
}

/// What a password change ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordChanged {
    /// Browser sessions ended (all of the user's but the one kept).
    pub sessions_ended: u64,
    /// Bearer tokens revoked (all of the user's).
    pub tokens_revoked: u64,
}

/// Sets `user`'s password: it must be non-blank, equal to `confirm`, and pass the password
/// policy against the user's username, first and last name and email address (Django's
/// `UserAttributeSimilarityValidator` attributes). Whoever knew the old password is signed out
/// everywhere: every session but `keep_session` (a session key hash, for a user changing their
/// own password in a browser) ends and every bearer token is revoked, in the transaction that
/// stores the new hash; then the sockets opened with them close and the user's running AI
/// replies stop ([`super::sessions::ended`]).
///
/// Errors: `Validation` on `password` or `password_confirm`; `NotFound` when the user is gone.
pub async fn change_password(
    state: &AppState,
    user: &User,
    password: String,
    confirm: &str,
    keep_session: Option<&str>,
) -> ServiceResult<PasswordChanged> {
    if password.is_empty() {
        return Err(ServiceError::Validation(FieldErrors::single(
            "password",
            "This field may not be blank.",
        )));
    }
    if password != confirm {
        return Err(ServiceError::Validation(FieldErrors::single(
            "password_confirm",
            "Passwords don't match.",
        )));
    }
    let problems = state.password_policy.problems(
        &password,
        &[
            ("username", user.username.as_str()),
            ("first name", user.first_name.as_str()),
            ("last name", user.last_name.as_str()),
            ("email address", user.email.as_str()),
        ],
    );
    if !problems.is_empty() {
        let mut errors = FieldErrors::new();
        for problem in problems {
            errors.add("password", problem);
        }
        return Err(ServiceError::Validation(errors));
    }
    let hash = state.hasher.hash(password).await?;
    let (sessions_ended, tokens_revoked) =
        store::users::replace_password(&state.db, user.id, &hash, keep_session)
            .await?
            .ok_or(ServiceError::NotFound)?;
    super::sessions::ended_for_user(state, user.id, keep_session).await;
    tracing::info!(
        user.id = user.id,
        sessions_ended,
        tokens_revoked,
        "password changed"
    );
    Ok(PasswordChanged {
        sessions_ended,
        tokens_revoked,
    })
}

/// An account can no longer be used (deactivated or deleted, already committed): its sockets
/// close on every node and its running AI replies stop ([`super::sessions::ended`]).
pub async fn closed(state: &AppState, user_id: i64) {
    super::sessions::ended_for_user(state, user_id, None).await;
}

/// What [`normalize_stored_usernames`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsernamesNormalized {
    /// Accounts whose username was rewritten in its NFKC form.
    pub renamed: usize,
    /// Usernames left as they were because another account has their NFKC form already (a
    /// look-alike pair registered before usernames were normalized). Their spelling names the
    /// other account everywhere now, as it would have in the original; an administrator can
    /// give them another name in the admin area.
    pub kept: Vec<String>,
}

/// Rewrites usernames stored before usernames were normalized into their NFKC form
/// ([`username::normalize`]), so every lookup by name (login, `participant_usernames`, the admin
/// area, the command line) finds them as it finds every other account. Run at start-up, before
/// the server listens; it reads only the usernames with characters outside ASCII, and writes
/// nothing once every username is normalized.
pub async fn normalize_stored_usernames(db: &store::Db) -> ServiceResult<UsernamesNormalized> {
    let mut outcome = UsernamesNormalized::default();
    for (id, stored) in store::users::with_non_ascii_names(db).await? {
        let normalized = username::normalize(&stored);
        if normalized == stored {
            continue;
        }
        // NFKC can lengthen a name (U+FDFA is 18 characters): one over the limit stays as it is.
        let fits = text::char_count(&normalized) <= username::MAX_CHARS;
        // One account that cannot be rewritten (a name taken meanwhile, a failed write) is
        // logged and kept, and start-up goes on.
        let renamed = fits
            && match store::users::rename_if_free(db, id, &normalized).await {
                Ok(renamed) => renamed,
                Err(err) => {
                    tracing::warn!(user.id = id, error = %err, "username could not be rewritten");
                    false
                }
            };
        if renamed {
            tracing::info!(user.id = id, "username rewritten in its normalized form");
            outcome.renamed += 1;
        } else {
            tracing::warn!(
                user.id = id,
                username = stored,
                "username left as stored: its normalized form is taken or too long"
            );
            outcome.kept.push(stored);
        }
    }
    Ok(outcome)
}
