//! Probes for orchestrators: `/healthz` answers while the process runs, `/readyz` only while the
//! database answers too.

use std::time::Duration;

use axum::{extract::State, http::StatusCode, routing::get, Json, Router};
use serde_json::{json, Value};

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready while the database answers. Redis is reported but does not decide: without it a node
/// still serves REST and its own sockets.
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let redis = match &state.realtime.bus {
        None => "disabled",
        Some(bus) if bus.connected() => "ok",
        Some(_) => "down",
    };
    match tokio::time::timeout(Duration::from_secs(2), state.db.ping()).await {
        Ok(Ok(())) => (
            StatusCode::OK,
            Json(json!({ "status": "ready", "database": "ok", "redis": redis })),
        ),
        outcome => {
            let reason = match outcome {
                Ok(Err(err)) => err.to_string(),
                _ => "timed out".to_owned(),
            };
            tracing::warn!(%reason, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "database": "error", "redis": redis })),
            )
        }
    }
}
