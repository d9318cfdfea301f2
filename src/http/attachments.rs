//! Attachments over REST: upload to a chat (multipart), the attachment's details, its download
//! and its thumbnail.

use axum::{
    body::Body,
    extract::{multipart::MultipartRejection, DefaultBodyLimit, Multipart, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use futures_util::StreamExt;
use http_range_header::parse_range_header;
use tower_http::timeout::RequestBodyDeadlineLayer;

use super::path::Id;
use crate::{
    auth::AuthUser,
    domain::attachment as rules,
    error::{ApiError, ApiResult},
    service::attachments::{self, BodyError, Download, IncomingFile, Variant},
    state::AppState,
    store::attachments::Attachment,
    wire::{
        schemas::{BadRequest, Detail, ErrorMessage, UploadForm},
        views::AttachmentView,
    },
};

/// Form fields other than `file` a request may carry before it (each at most 64 KiB); they
/// are read and ignored.
const MAX_OTHER_FIELDS: usize = 8;
const MAX_OTHER_FIELD_BYTES: usize = 64 * 1024;

/// Downloads: the details, the bytes and the thumbnail.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/attachments/{id}", get(details))
        .route("/api/attachments/{id}/download", get(download))
        .route("/api/attachments/{id}/thumbnail", get(thumbnail))
}

/// Bytes of a multipart body beyond its file: part headers, boundaries, and the other parts
/// read before it.
const FORM_OVERHEAD: u64 = (MAX_OTHER_FIELDS * MAX_OTHER_FIELD_BYTES) as u64 + 64 * 1024;

/// Uploads, with a body limit of their own (the file's limit and the form around it; the
/// file's own limit is counted as it arrives, and answered 413) and a body deadline of their
/// own (`MRM_UPLOAD_SECONDS`, in place of the short `MRM_HTTP_BODY_SECONDS`). The caller adds
/// the origin check.
pub fn upload_router(state: &AppState) -> Router<AppState> {
    let limit = state
        .config
        .attachments
        .max_bytes
        .saturating_add(FORM_OVERHEAD);
    Router::new()
        .route("/api/chats/{id}/attachments", post(upload))
        .layer(DefaultBodyLimit::max(
            usize::try_from(limit).unwrap_or(usize::MAX),
        ))
        .layer(RequestBodyDeadlineLayer::new(
            state.config.attachments.upload_timeout,
        ))
}

/// Uploads a file to a chat the caller takes part in; send its id in a message's `attachments`
/// (REST or socket) to share it. Its type is decided from its bytes; a file claiming to be an
/// image (by its part's type or its name) that is not that image is refused. Images get their
/// dimensions and a thumbnail. An upload no message carries is removed after
/// `MRM_ATTACHMENT_GRACE_SECONDS` (a day by default). Uploads count against the user's storage
/// quota until they are deleted.
#[utoipa::path(post, path = "/api/chats/{id}/attachments/", tag = "Attachments", security(("session" = [], "csrf" = []), ("bearer" = [])), params(("id" = i64, Path, description = "Chat id")),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Stored, not yet attached to a message", body = AttachmentView),
        (status = 400, description = "No file, an empty file, a claimed image that is not one, or an image too large to decode safely", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
        (status = 413, description = "Over `MRM_ATTACHMENT_MAX_BYTES`, or over the storage quota", body = Detail),
        (status = 415, description = "Not a multipart/form-data body", body = Detail),
        (status = 503, description = "The object store is not available", body = ErrorMessage),
    ))]
async fn upload(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(id): Id,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<Response> {
    let mut multipart = multipart.map_err(|_| {
        ApiError::UnsupportedMediaType("a multipart/form-data body with a `file` part".into())
    })?;
    let unreadable = |err: axum::extract::multipart::MultipartError| {
        ApiError::BadRequest(format!(
            "The upload could not be read: {}.",
            err.body_text()
        ))
    };
    let mut others = 0;
    loop {
        let Some(mut field) = multipart.next_field().await.map_err(unreadable)? else {
            return Err(ApiError::BadRequest("The form has no `file` part.".into()));
        };
        if field.name() == Some("file") {
            let file = IncomingFile {
                name: field.file_name().map(str::to_owned),
                claimed_type: field.content_type().map(str::to_owned),
                body: field.map(|chunk| chunk.map_err(|e| Box::new(e) as BodyError)),
            };
            let view = attachments::upload(&state, &auth.user, id, file).await?;
            return Ok((StatusCode::CREATED, Json(view)).into_response());
        }
        others += 1;
        if others > MAX_OTHER_FIELDS {
            return Err(ApiError::BadRequest(
                "The form has too many parts before its `file` part.".into(),
            ));
        }
        let mut read = 0;
        while let Some(chunk) = field.chunk().await.map_err(unreadable)? {
            read += chunk.len();
            if read > MAX_OTHER_FIELD_BYTES {
                return Err(ApiError::PayloadTooLarge(MAX_OTHER_FIELD_BYTES));
            }
        }
    }
}

/// An attachment's details: for members of its chat (and staff), and for its uploader before
/// it is sent.
#[utoipa::path(get, path = "/api/attachments/{id}/", tag = "Attachments", security(("session" = []), ("bearer" = [])), params(("id" = i64, Path, description = "Attachment id")),
    responses(
        (status = 200, description = "The attachment", body = AttachmentView),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
    ))]
async fn details(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(id): Id,
) -> ApiResult<Json<AttachmentView>> {
    let attachment = attachments::visible(&state, &auth.user, id).await?;
    Ok(Json(AttachmentView::from(attachment.meta())))
}

/// Downloads an attachment: members of its chat (and staff), and its uploader before it is
/// sent. Safe images (PNG, JPEG, GIF, WebP) are served `inline`; anything else as
/// `Content-Disposition: attachment`, and HTML, SVG, XML and scripts as
/// `application/octet-stream`, so an upload can never run in the server's origin. `ETag` is the
/// content's SHA-256; `If-None-Match`, `Range` (one range) and `If-Range` are honoured. When
/// `MRM_S3_PRESIGNED_SECONDS` is set, the answer is a redirect to a short-lived signed URL of
/// the object store instead.
#[utoipa::path(get, path = "/api/attachments/{id}/download/", tag = "Attachments", security(("session" = []), ("bearer" = [])),
    params(
        ("id" = i64, Path, description = "Attachment id"),
        ("Range" = Option<String>, Header, description = "One byte range, `bytes=first-last`, `bytes=first-` or `bytes=-suffix`"),
    ),
    responses(
        (status = 200, description = "The file, as the type its bytes have (or `application/octet-stream`, see above)", content_type = "*/*", body = Vec<u8>),
        (status = 206, description = "The range asked for", content_type = "*/*", body = Vec<u8>),
        (status = 302, description = "Redirect to a signed URL of the object store"),
        (status = 304, description = "The client's copy (`If-None-Match`) is current"),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated", body = Detail),
        (status = 404, description = "Not found, or not yours to see", body = Detail),
        (status = 416, description = "The range lies outside the file"),
        (status = 503, description = "The object store is not available", body = ErrorMessage),
    ))]
async fn download(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(id): Id,
    method: Method,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let attachment = attachments::visible(&state, &auth.user, id).await?;
    serve(&state, &attachment, Variant::Original, &method, &headers).await
}

/// An image attachment's thumbnail (at most 400 × 400 pixels, JPEG or PNG), to the same people
/// as its download; 404 for attachments without one.
#[utoipa::path(get, path = "/api/attachments/{id}/thumbnail/", tag = "Attachments", security(("session" = []), ("bearer" = [])), params(("id" = i64, Path, description = "Attachment id")),
    responses(
        (status = 200, description = "The thumbnail: JPEG, or PNG for an image with transparency (always through the server)", content_type = "image/*", body = Vec<u8>),
        (status = 304, description = "The client's copy (`If-None-Match`) is current"),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated", body = Detail),
        (status = 404, description = "Not found, not yours to see, or not an image", body = Detail),
        (status = 503, description = "The object store is not available", body = ErrorMessage),
    ))]
async fn thumbnail(
    State(state): State<AppState>,
    auth: AuthUser,
    Id(id): Id,
    method: Method,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let attachment = attachments::visible(&state, &auth.user, id).await?;
    if attachment.thumbnail.is_none() {
        return Err(ApiError::NotFound);
    }
    serve(&state, &attachment, Variant::Thumbnail, &method, &headers).await
}

/// Which bytes a request asks for, given the `Range` and `If-Range` headers and the file's
/// size (RFC 9110 §14): all of them (`Ok(None)`), one range, or none it could have
/// (`Err(())`, answered 416). A malformed header, several ranges, or an `If-Range` that is not
/// the current `ETag` ask for the whole file.
fn requested_range(
    headers: &HeaderMap,
    etag: &str,
    size: u64,
) -> Result<Option<std::ops::Range<u64>>, ()> {
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    if let Some(if_range) = headers.get(header::IF_RANGE) {
        if if_range.to_str().ok().map(str::trim) != Some(etag) {
            return Ok(None);
        }
    }
    let Ok(parsed) = parse_range_header(range) else {
        return Ok(None);
    };
    match parsed.validate(size) {
        Ok(ranges) if ranges.len() == 1 => {
            let r = &ranges[0];
            Ok(Some(*r.start()..r.end().saturating_add(1)))
        }
        Ok(_) => Ok(None),
        Err(_) => Err(()),
    }
}

/// Whether `If-None-Match` names `etag` (or is `*`).
fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',').any(|t| {
                let t = t.trim();
                t == "*" || t.trim_start_matches("W/") == etag
            })
        })
}

async fn serve(
    state: &AppState,
    attachment: &Attachment,
    variant: Variant,
    method: &Method,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let suffix = if variant == Variant::Thumbnail {
        "-thumbnail"
    } else {
        ""
    };
    let etag = format!("\"{}{suffix}\"", attachment.digest);
    // Content never changes under an id; access may, so shared caches keep nothing.
    let cache = HeaderValue::from_static("private, max-age=86400");
    let etag_value = HeaderValue::from_str(&etag).map_err(|e| ApiError::Internal(e.into()))?;
    if not_modified(headers, &etag) {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag_value), (header::CACHE_CONTROL, cache)],
        )
            .into_response());
    }
    let range = match variant {
        Variant::Original => {
            let size = u64::try_from(attachment.size).unwrap_or(0);
            match requested_range(headers, &etag, size) {
                Ok(range) => range,
                Err(()) => {
                    let unsatisfiable = format!("bytes */{size}");
                    return Ok((
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        [(header::CONTENT_RANGE, unsatisfiable)],
                    )
                        .into_response());
                }
            }
        }
        // Thumbnails are small: always whole.
        Variant::Thumbnail => None,
    };
    let read = match attachments::open(
        state,
        attachment,
        variant,
        range.clone(),
        method == Method::HEAD,
    )
    .await?
    {
        Download::Redirect(url) => {
            return Ok((
                StatusCode::FOUND,
                [
                    (header::LOCATION, url),
                    (header::CACHE_CONTROL, "no-store".to_owned()),
                ],
            )
                .into_response())
        }
        Download::Bytes(read) => read,
    };
    let content_type = match variant {
        Variant::Original => attachment.content_type.as_str(),
        Variant::Thumbnail => attachment.thumbnail.as_deref().unwrap_or("image/jpeg"),
    };
    let mut response = Response::new(Body::from_stream(read.stream));
    let status = if range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    *response.status_mut() = status;
    let h = response.headers_mut();
    let text =
        |value: String| HeaderValue::from_str(&value).map_err(|e| ApiError::Internal(e.into()));
    h.insert(
        header::CONTENT_TYPE,
        text(rules::served_type(content_type))?,
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        text(rules::content_disposition(&attachment.name, content_type))?,
    );
    h.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(read.range.end - read.range.start),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            text(format!(
                "bytes {}-{}/{}",
                read.range.start,
                read.range.end.saturating_sub(1),
                read.size
            ))?,
        );
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, etag_value);
    h.insert(header::CACHE_CONTROL, cache);
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Opened directly, a file still cannot run anything or load anything.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    Ok(response)
}
