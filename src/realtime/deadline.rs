//! Socket writes with a deadline. A client that stops reading fills the kernel's buffers and
//! then tungstenite's; a write or flush without a deadline would then wait forever, holding the
//! socket, its queue and its descriptor, and no close or ping check could run.

use std::{future::Future, time::Duration};

/// How a write went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// The connection failed or was closed.
    Failed,
    /// The client did not take the data within the write timeout
    /// (`MRM_WS_WRITE_TIMEOUT_SECONDS`).
    Stalled,
}

/// Runs one write (or flush) of a socket within `limit`.
pub async fn within<T>(
    limit: Duration,
    write: impl Future<Output = Result<T, axum::Error>>,
) -> Result<T, WriteError> {
    match tokio::time::timeout(limit, write).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) => Err(WriteError::Failed),
        Err(_) => Err(WriteError::Stalled),
    }
}
