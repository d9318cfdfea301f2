//! Files embedded in the binary, so a deployment is one file: the admin styles and the API
//! documentation's scripts (`/static/…`), and the web client (`/`, with its assets under
//! `/web/…`, built from `web/` into `assets/web/`). Each is served with a content hash as ETag,
//! cache headers, and compression when the client accepts it.

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

#[derive(RustEmbed)]
#[folder = "assets/web/"]
struct Web;

/// What the web client's page may load and connect to: this origin only (its sockets included),
/// images also from `blob:` and `data:` URLs (previews of files being attached), no plugins, no
/// framing by other sites.
const WEB_CSP: &str = "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; \
                       style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; \
                       form-action 'self'; frame-ancestors 'none'";

/// How long a cache may keep a file before asking again.
#[derive(Debug, Clone, Copy)]
enum Freshness {
    /// An hour, then a cheap revalidation: the name carries no version.
    Hour,
    /// A year: the name carries the content's hash, so new content gets a new name.
    Immutable,
    /// Revalidated every time (the client's page, which names the current assets).
    Always,
}

/// `/static/{path}`, the web client at `/` and its assets at `/web/{path}`, compressed when the
/// client accepts it.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/static/{*path}", get(serve_static))
        .route("/", get(web_page))
        .route("/web/{*path}", get(serve_web))
        .layer(CompressionLayer::new())
}

async fn serve_static(Path(path): Path<String>, headers: HeaderMap) -> Response {
    asset::<Static>(&path, &headers, Freshness::Hour)
        .unwrap_or_else(|| ApiError::NotFound.into_response())
}

async fn serve_web(Path(path): Path<String>, headers: HeaderMap) -> Response {
    let freshness = if path.starts_with("assets/") {
        Freshness::Immutable
    } else {
        Freshness::Hour
    };
    asset::<Web>(&path, &headers, freshness).unwrap_or_else(|| ApiError::NotFound.into_response())
}

/// The web client's page, under a Content-Security-Policy that allows nothing from elsewhere.
async fn web_page(headers: HeaderMap) -> Response {
    let Some(mut page) = asset::<Web>("index.html", &headers, Freshness::Always) else {
        return ApiError::NotFound.into_response();
    };
    let h = page.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(WEB_CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    page
}

/// The file at `path` in embed `E`, or 304 when the client's copy (`If-None-Match`) is current.
fn asset<E: RustEmbed>(path: &str, headers: &HeaderMap, freshness: Freshness) -> Option<Response> {
    let file = E::get(path)?;
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    let etag = HeaderValue::from_str(&etag).ok()?;
    let cache = HeaderValue::from_static(match freshness {
        Freshness::Hour => "public, max-age=3600, must-revalidate",
        Freshness::Immutable => "public, max-age=31536000, immutable",
        Freshness::Always => "no-cache",
    });
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
