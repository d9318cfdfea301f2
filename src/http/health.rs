//! Probes for orchestrators: `/healthz` answers while the process runs, `/readyz` only while the
//! database answers too; and `/metrics` for Prometheus, behind `MRM_METRICS_TOKEN`.

use std::time::Duration;

use axum::{
    extract::{MatchedPath, State},
    http::{header, HeaderMap, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde_json::{json, Value};

use crate::{
    error::ApiError,
    state::AppState,
    wire::schemas::{Detail, Health, Readiness},
};

/// The liveness and readiness probes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// The server's metrics in the Prometheus text format (0.0.4), for a scraper that presents
/// `MRM_METRICS_TOKEN` as a bearer token. Without the setting the endpoint does not exist.
#[utoipa::path(get, path = "/metrics", tag = "Operations", security(("metrics" = [])),
    responses(
        (status = 200, description = "Every metric, in the Prometheus text format", content_type = "text/plain; version=0.0.4", body = String),
        (status = 401, description = "No token, or not `MRM_METRICS_TOKEN`", body = Detail),
        (status = 404, description = "`MRM_METRICS_TOKEN` is not set", body = Detail),
    ))]
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let Some(expected) = &state.config.metrics_token else {
        return Err(ApiError::NotFound);
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let matches: bool =
        subtle::ConstantTimeEq::ct_eq(presented.as_bytes(), expected.expose().as_bytes()).into();
    if !matches {
        return Err(ApiError::InvalidToken);
    }
    let metrics = &state.realtime.metrics;
    metrics.refresh(state.realtime.hub.room_count(), state.db.stats());
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response())
}

/// Counts every request in `mrm_http_requests_total` and `mrm_http_request_duration_seconds`,
/// by its route template (never the path itself, which would make a series per id).
pub async fn record(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    // Any token is a method to HTTP: only the standard ones get series of their own.
    let method = match request.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let metrics = &state.realtime.metrics;
    metrics
        .http_duration
        .with_label_values(&[route, method])
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests
        .with_label_values(&[route, method, response.status().as_str()])
        .inc();
    response
}

/// Answers while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "Operations", security(()),
    responses((status = 200, description = "The process is running", body = Health)))]
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready while the database answers (within 2 seconds). Redis is reported but does not decide:
/// without it a node still serves REST and its own sockets.
#[utoipa::path(get, path = "/readyz", tag = "Operations", security(()),
    responses(
        (status = 200, description = "The database answers", body = Readiness),
        (status = 503, description = "The database does not answer", body = Readiness),
    ))]
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
