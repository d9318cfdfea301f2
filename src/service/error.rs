//! The service layer's one error type, and the field errors validation collects.
//!
//! A service call fails for a reason a caller can act on (a field is wrong, the thing is not
//! there or not theirs, too many requests) or for an internal one. Each surface renders the
//! reason its own way: the REST API as the contract's JSON (`crate::error::ApiError`), the admin
//! area as a page, the sockets as an error frame or a close code, the command line as one line.

use std::collections::BTreeMap;

/// Field name (or `non_field_errors`) → messages, the shape validation errors take on the wire
/// (Django REST Framework's `ValidationError.detail`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldErrors(BTreeMap<String, Vec<String>>);

impl FieldErrors {
    /// No errors yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// One message for one field.
    pub fn single(field: &str, message: impl Into<String>) -> Self {
        let mut errors = Self::new();
        errors.add(field, message);
        errors
    }

    /// Records `message` for `field`, after any recorded before.
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0
            .entry(field.to_owned())
            .or_default()
            .push(message.into());
    }

    /// Whether `field` has a message.
    pub fn has(&self, field: &str) -> bool {
        self.0.contains_key(field)
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every message, field by field in field-name order.
    pub fn messages(&self) -> impl Iterator<Item = &str> {
        self.0.values().flatten().map(String::as_str)
    }

    /// The messages by field, in field-name order.
    pub fn fields(&self) -> &BTreeMap<String, Vec<String>> {
        &self.0
    }

    /// `Ok(())` when nothing was recorded, so validation can end with `errors.check()?`.
    pub fn check(self) -> ServiceResult<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(ServiceError::Validation(self))
        }
    }
}

/// `field: message; field: message`, for logs and the command line.
impl std::fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for (field, messages) in &self.0 {
            for message in messages {
                if !first {
                    f.write_str("; ")?;
                }
                first = false;
                write!(f, "{field}: {message}")?;
            }
        }
        Ok(())
    }
}

/// Why a service call failed. The REST status each becomes is given in brackets.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Input that breaks a field rule [400, field errors].
    #[error("validation failed: {0}")]
    Validation(FieldErrors),
    /// Input that cannot be used at all [400, `detail`].
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A username and password that do not match an active account [401].
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The caller may see the thing but not do this to it [403].
    #[error("permission denied")]
    PermissionDenied,
    /// Absent, or not the caller's to see: the two are not told apart [404].
    #[error("not found")]
    NotFound,
    /// Too many requests; retry after this many seconds [429 with `Retry-After`].
    #[error("rate limited for {0} s")]
    RateLimited(u64),
    /// A part the call needs is not available (no AI provider configured) [503].
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// An upstream service (the AI provider) failed; the message is safe to show [502].
    #[error("upstream failure: {0}")]
    Upstream(String),
    /// The thing is busy with another operation (a reply already running) [409].
    #[error("conflict: {0}")]
    Conflict(String),
    /// Too much work in progress for this caller; retry when it finishes [429].
    #[error("busy: {0}")]
    Busy(String),
    /// Too much: a file over the upload limit, or over the uploader's storage quota; the message
    /// says which [413].
    #[error("too large: {0}")]
    TooLarge(String),
    /// A named thing is missing, shown as `{"error": …}` [404].
    #[error("missing: {0}")]
    Missing(String),
    /// A database or other internal failure: logged with its cause, shown generically [500].
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ServiceError {
    fn from(err: sqlx::Error) -> Self {
        ServiceError::Internal(err.into())
    }
}

impl From<crate::auth::HashError> for ServiceError {
    /// A full hashing queue is a throttle like the login limit: retry in a second, by when
    /// hashes (tens of milliseconds each) have freed places.
    fn from(err: crate::auth::HashError) -> Self {
        match err {
            crate::auth::HashError::Busy => ServiceError::RateLimited(1),
            crate::auth::HashError::Failed(err) => ServiceError::Internal(err),
        }
    }
}

/// What every service call returns.
pub type ServiceResult<T> = Result<T, ServiceError>;
