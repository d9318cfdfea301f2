//! The one error type of the HTTP API. Every variant renders as one of the contract's JSON
//! shapes: field errors, `{"detail": ...}` or `{"error": ...}`. Internal failures are logged with
//! their cause and answered with a generic message, never leaked.

use crate::{
    service::{FieldErrors, ServiceError},
    wire::schemas::{Detail, ErrorMessage},
};
use axum::{
    http::{header, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
    Json,
};

/// Why a REST request failed. Each variant names the status and body it renders as; the bodies
/// are the original's (Django REST Framework's) wording.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400, `{"field": ["message", …]}`.
    #[error("validation failed: {0:?}")]
    Validation(FieldErrors),
    /// 400, `{"detail": …}`: a request that cannot be read at all (malformed JSON).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 403, `Authentication credentials were not provided.` (DRF answers 403, not 401, when a
    /// session-authenticated API has no credentials).
    #[error("authentication credentials were not provided")]
    NotAuthenticated,
    /// 401 with `WWW-Authenticate: Bearer`, `Invalid token.`
    #[error("invalid bearer token")]
    InvalidToken,
    /// 401, `{"error": "Invalid credentials"}`: a failed login.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// 403, `You do not have permission to perform this action.`
    #[error("permission denied")]
    PermissionDenied,
    /// 403, `CSRF Failed: {reason}`, as Django words it.
    #[error("CSRF failed: {0}")]
    Csrf(String),
    /// 404, `Not found.`
    #[error("not found")]
    NotFound,
    /// 405, `Method "X" not allowed.`
    #[error("method {0} not allowed")]
    MethodNotAllowed(Method),
    /// 413 for a body over the limit (bytes).
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 413 with the reason (a file over the upload limit or the storage quota).
    #[error("too large: {0}")]
    TooLarge(String),
    /// 415 for a body that is neither JSON nor a form.
    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(String),
    /// 429 with `Retry-After` (seconds), worded as DRF's throttling.
    #[error("rate limited for {0} s")]
    RateLimited(u64),
    /// 503, `{"error": …}`.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// 502, `{"error": …}`: an upstream service (the AI provider) failed; the message is safe
    /// to show.
    #[error("upstream failure: {0}")]
    Upstream(String),
    /// 409, `{"detail": …}`.
    #[error("conflict: {0}")]
    Conflict(String),
    /// 429, `{"detail": …}`: too much work in progress for this caller (not a rate: retry when
    /// it finishes).
    #[error("busy: {0}")]
    Busy(String),
    /// 404 that names what is missing, as `{"error": …}`.
    #[error("missing: {0}")]
    Missing(String),
    /// 500, `Internal server error.`; the cause is logged, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        ApiError::Internal(err.into())
    }
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::Validation(errors) => ApiError::Validation(errors),
            ServiceError::BadRequest(message) => ApiError::BadRequest(message),
            ServiceError::InvalidCredentials => ApiError::InvalidCredentials,
            ServiceError::PermissionDenied => ApiError::PermissionDenied,
            ServiceError::NotFound => ApiError::NotFound,
            ServiceError::RateLimited(secs) => ApiError::RateLimited(secs),
            ServiceError::Unavailable(message) => ApiError::Unavailable(message),
            ServiceError::Upstream(message) => ApiError::Upstream(message),
            ServiceError::Conflict(message) => ApiError::Conflict(message),
            ServiceError::Busy(message) => ApiError::Busy(message),
            ServiceError::Missing(message) => ApiError::Missing(message),
            ServiceError::TooLarge(message) => ApiError::TooLarge(message),
            ServiceError::Internal(err) => ApiError::Internal(err),
        }
    }
}

impl ApiError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotAuthenticated | ApiError::PermissionDenied | ApiError::Csrf(_) => {
                StatusCode::FORBIDDEN
            }
            ApiError::InvalidToken | ApiError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) | ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
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

fn detail(message: impl Into<String>) -> Response {
    Json(Detail {
        detail: message.into(),
    })
    .into_response()
}

fn error(message: impl Into<String>) -> Response {
    Json(ErrorMessage {
        error: message.into(),
    })
    .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            ApiError::Validation(errors) => Json(errors.fields()).into_response(),
            ApiError::BadRequest(message) => detail(message.clone()),
            ApiError::NotAuthenticated => detail("Authentication credentials were not provided."),
            ApiError::InvalidToken => detail("Invalid token."),
            ApiError::InvalidCredentials => error("Invalid credentials"),
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
            | ApiError::Missing(message) => error(message.clone()),
            ApiError::Conflict(message) | ApiError::Busy(message) | ApiError::TooLarge(message) => {
                detail(message.clone())
            }
            ApiError::Internal(err) => {
                tracing::error!(error = ?err, "internal error");
                detail("Internal server error.")
            }
        };
        let mut response = body;
        *response.status_mut() = status;
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

/// What REST handlers return.
pub type ApiResult<T> = Result<T, ApiError>;
