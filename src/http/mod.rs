//! The HTTP API: one module per resource, each exposing its `router()`, assembled here with the
//! cross-cutting layers (origin check, CORS, tracing, panic guard, body limit).

pub mod accounts;
pub mod ai;
pub mod assets;
pub mod attachments;
pub mod chats;
pub mod direct;
pub mod health;
pub mod history;
pub mod input;
pub mod messages;
pub mod openapi;
pub mod pagination;
pub mod path;
pub mod pins;
pub mod query;
pub mod search;
pub mod sockets;
pub mod tokens;

use std::time::Duration;

use axum::{
    extract::{DefaultBodyLimit, Request},
    http::{header, HeaderName, Method, StatusCode},
    middleware,
    response::{IntoResponse, Response},
    Router,
};
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::RequestBodyDeadlineLayer,
    trace::{DefaultOnResponse, TraceLayer},
};
use tracing::Level;

use crate::{auth::csrf, error::ApiError, state::AppState};

/// The whole HTTP surface: every resource's routes, the admin area, the documentation and the
/// sockets, under the cross-cutting layers (outermost first: panic guard answering a JSON 500,
/// request ids, request tracing, CORS when `MRM_CORS_ORIGINS` is set, the body timeout
/// (`MRM_HTTP_BODY_SECONDS`), the body limit, and the origin check for unsafe methods). Unknown
/// paths answer 404 and unsupported methods 405, as the contract's JSON. `startup` removes
/// trailing slashes before routing ([`trim_trailing_slash`]).
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let mut router = Router::new()
        .merge(accounts::router())
        .merge(tokens::router())
        .merge(chats::router())
        .merge(messages::router())
        .merge(history::router())
        .merge(direct::router())
        .merge(pins::router())
        .merge(search::router())
        .merge(attachments::router())
        .merge(health::router())
        .merge(assets::router())
        .merge(openapi::router())
        .merge(ai::router())
        .merge(crate::admin::router())
        .merge(sockets::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            csrf::require_trusted_origin,
        ))
        .layer(DefaultBodyLimit::max(input::MAX_BODY_BYTES))
        // A body that stops arriving, or trickles in a byte at a time, would hold its
        // connection (and its place under the connection caps) for ever: reading it fails
        // `MRM_HTTP_BODY_SECONDS` after the end of the header whatever has arrived (a deadline,
        // not an idle timeout), answered 400, and the connection is closed.
        .layer(RequestBodyDeadlineLayer::new(
            state.config.http_body_timeout,
        ))
        // Uploads have a body deadline and limit of their own.
        .merge(
            attachments::upload_router(&state).layer(middleware::from_fn_with_state(
                state.clone(),
                csrf::require_trusted_origin,
            )),
        );
    if !state.config.cors_origins.is_empty() {
        router = router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(state.config.cors_origins.clone()))
                .allow_credentials(true)
                .allow_methods([
                    Method::GET,
                    Method::POST,
                    Method::PUT,
                    Method::PATCH,
                    Method::DELETE,
                ])
                .allow_headers([
                    header::CONTENT_TYPE,
                    header::AUTHORIZATION,
                    HeaderName::from_static(csrf::CSRF_HEADER),
                ])
                .expose_headers([header::LINK])
                // The Vary list tower-http 0.6 sent by default (0.7 would send `origin` only).
                .vary([
                    header::ORIGIN,
                    header::ACCESS_CONTROL_REQUEST_METHOD,
                    header::ACCESS_CONTROL_REQUEST_HEADERS,
                ])
                .max_age(Duration::from_secs(3600)),
        );
    }
    router
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    // The path only: query strings and headers stay out of the logs.
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                        request_id = request
                            .headers()
                            .get("x-request-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or(""),
                        user.id = tracing::field::Empty,
                    )
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("handler panicked");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(serde_json::json!({ "detail": "Internal server error." })),
            )
                .into_response()
        }))
        // Outside the panic handler, so the 500s it makes are counted too.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            health::record,
        ))
        .with_state(state)
}

/// Routes are declared without their trailing slash, and every request path loses its slash
/// before routing, so both spellings reach the same handler. The documentation UI is the
/// exception: its pages load assets relative to a directory URL.
pub fn trim_trailing_slash(mut request: Request) -> Request {
    let path = request.uri().path();
    if path.len() > 1 && path.ends_with('/') && !path.starts_with("/api/docs/") {
        let trimmed = path.trim_end_matches('/');
        let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
        let rebuilt = match request.uri().query() {
            Some(query) => format!("{trimmed}?{query}"),
            None => trimmed.to_owned(),
        };
        if let Ok(uri) = rebuilt.parse() {
            *request.uri_mut() = uri;
        }
    }
    request
}

/// 201 with `body` when `created`, 200 otherwise: how a request that finds or makes one thing
/// answers (a direct chat, a pin).
fn created_or_found(created: bool, body: impl serde::Serialize) -> Response {
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, axum::Json(body)).into_response()
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed(method: Method) -> Response {
    ApiError::MethodNotAllowed(method).into_response()
}
