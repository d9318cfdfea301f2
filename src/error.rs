//! The one error type of the HTTP API. Every variant renders as one of the contract's JSON
//! shapes: field errors, `{"detail": ...}` or `{"error": ...}`. Internal failures are logged with
//! their cause and answered with a generic message, never leaked.

use std::collections::BTreeMap;

use axum::{
    http::{header, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

/// Field name (or `non_field_errors`) → messages, as validation errors are shaped on the wire.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldErrors(BTreeMap<String, Vec<String>>);

impl FieldErrors {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn single(field: &str, message: impl Into<String>) -> Self {
        let mut errors = Self::new();
        errors.add(field, message);
        errors
    }

    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0
            .entry(field.to_owned())
            .or_default()
            .push(message.into());
    }

    pub fn has(&self, field: &str) -> bool {
        self.0.contains_key(field)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when nothing was recorded, so validation can end with `errors.check()?`.
    pub fn check(self) -> Result<(), ApiError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self))
        }
    }
}

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

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("validation failed: {0:?}")]
    Validation(FieldErrors),
    /// A request that cannot be read at all (malformed JSON, bad query parameter).
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("authentication credentials were not provided")]
    NotAuthenticated,
    #[error("invalid bearer token")]
    InvalidToken,
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("permission denied")]
    PermissionDenied,
    /// The reason is the text after `CSRF Failed: `.
    #[error("CSRF failed: {0}")]
    Csrf(String),
    #[error("not found")]
    NotFound,
    #[error("method {0} not allowed")]
    MethodNotAllowed(Method),
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("rate limited for {0} s")]
    RateLimited(u64),
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// An upstream service (the AI provider) failed; the message is safe to show.
    #[error("upstream failure: {0}")]
    Upstream(String),
    #[error("conflict: {0}")]
    Conflict(String),
    /// Too much work in progress for this caller (not a rate: retry when it finishes).
    #[error("busy: {0}")]
    Busy(String),
    /// A 404 that names what is missing, as `{"error": …}`.
    #[error("missing: {0}")]
    Missing(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        ApiError::Internal(err.into())
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotAuthenticated | ApiError::PermissionDenied | ApiError::Csrf(_) => {
                StatusCode::FORBIDDEN
            }
            ApiError::InvalidToken | ApiError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Missing(_) => StatusCode::NOT_FOUND,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

fn detail(message: impl Into<String>) -> serde_json::Value {
    json!({ "detail": message.into() })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            ApiError::Validation(errors) => json!(errors.0),
            ApiError::BadRequest(message) => detail(message.clone()),
            ApiError::NotAuthenticated => detail("Authentication credentials were not provided."),
            ApiError::InvalidToken => detail("Invalid token."),
            ApiError::InvalidCredentials => json!({ "error": "Invalid credentials" }),
            ApiError::PermissionDenied => {
                detail("You do not have permission to perform this action.")
            }
            ApiError::Csrf(reason) => detail(format!("CSRF Failed: {reason}")),
            ApiError::NotFound => detail("Not found."),
            ApiError::MethodNotAllowed(method) => {
                detail(format!("Method \"{method}\" not allowed."))
            }
            ApiError::PayloadTooLarge(limit) => {
                detail(format!("Request body is too large (limit {limit} bytes)."))
            }
            ApiError::UnsupportedMediaType(media) => {
                detail(format!("Unsupported media type \"{media}\" in request."))
            }
            ApiError::RateLimited(secs) => detail(format!(
                "Request was throttled. Expected available in {secs} second{}.",
                if *secs == 1 { "" } else { "s" }
            )),
            ApiError::Unavailable(message)
            | ApiError::Upstream(message)
            | ApiError::Missing(message) => json!({ "error": message }),
            ApiError::Conflict(message) | ApiError::Busy(message) => detail(message.clone()),
            ApiError::Internal(err) => {
                tracing::error!(error = ?err, "internal error");
                detail("Internal server error.")
            }
        };
        let mut response = (status, Json(body)).into_response();
        match self {
            ApiError::InvalidToken => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::RateLimited(secs) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            _ => {}
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
