//! Static files (admin styles, the API documentation's scripts), embedded in the binary so a
//! deployment is one file, served with a content hash as ETag, revalidating cache headers and
//! compression (added by the layer in `router`).

use axum::{
    extract::Path,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use rust_embed::RustEmbed;
use tower_http::compression::CompressionLayer;

use crate::{error::ApiError, state::AppState};

#[derive(RustEmbed)]
#[folder = "assets/static/"]
struct Static;

/// `/static/{path}`: the embedded files, compressed when the client accepts it.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/static/{*path}", get(serve))
        .layer(CompressionLayer::new())
}

async fn serve(Path(path): Path<String>, headers: HeaderMap) -> Response {
    asset(&path, &headers).unwrap_or_else(|| ApiError::NotFound.into_response())
}

/// The embedded file at `path` (relative to `assets/static/`), or 304 when the client's copy is
/// current.
pub fn asset(path: &str, headers: &HeaderMap) -> Option<Response> {
    let file = Static::get(path)?;
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    let etag = HeaderValue::from_str(&etag).ok()?;
    // An hour in caches, then a cheap revalidation: file names carry no version.
    let cache = HeaderValue::from_static("public, max-age=3600, must-revalidate");
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == etag.to_str().unwrap_or(""))
        });
    if matches {
        return Some(
            (
                StatusCode::NOT_MODIFIED,
                [(header::ETAG, etag), (header::CACHE_CONTROL, cache)],
            )
                .into_response(),
        );
    }
    let mime = HeaderValue::from_str(file.metadata.mimetype()).ok()?;
    Some(
        (
            [
                (header::CONTENT_TYPE, mime),
                (header::ETAG, etag),
                (header::CACHE_CONTROL, cache),
            ],
            file.data.into_owned(),
        )
            .into_response(),
    )
}
