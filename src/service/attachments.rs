//! Attachments: uploads streamed to the object store, access for members only, downloads, and
//! the sweeper that removes what nothing refers to any more. The one path each takes from every
//! surface.
//!
//! An upload is spooled to a temporary file while it is hashed (SHA-256) and measured, never
//! held whole in memory; its type is read from its first bytes; images are decoded under limits
//! for their dimensions and a thumbnail. Then its blob is held ([`store::attachments::hold`]),
//! its objects are written under their content address, and the upload is recorded, counted
//! against the uploader's quota. It stays unattached until a message carries it, at most
//! `MRM_ATTACHMENT_GRACE_SECONDS`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::{
    io::AsyncWriteExt,
    sync::{Notify, Semaphore},
};

use crate::{
    domain::attachment::{self as rules, SNIFF_BYTES},
    service::{FieldErrors, ServiceError, ServiceResult},
    state::AppState,
    storage::{object_key, ObjectRead, ObjectStorage, StorageError, OPERATION_DEADLINE},
    store::{
        self,
        attachments::{Attachment, Collected, Held, NewAttachment, NewBlob},
        users::User,
        Db,
    },
    thumbnails,
    wire::views::AttachmentView,
};

/// Images decoded at once (each may take up to `thumbnails::MAX_DECODE_BYTES`).
const DECODES_AT_ONCE: usize = 2;
/// Uploads one user may have in progress at once: each may spool and store up to
/// `MRM_ATTACHMENT_MAX_BYTES` before the quota is checked again at its record.
const UPLOADS_PER_USER: usize = 4;
/// How long a blob stays held for an upload in progress: longer than writing its objects can
/// take, so a sweep never removes an object an upload is about to record.
const HOLD: Duration = Duration::from_secs(2 * OPERATION_DEADLINE.as_secs() + 60);
/// How long an upload waits for a sweep removing the same content to finish, at most.
const REMOVAL_WAIT: Duration = Duration::from_secs(10);
/// Rows a sweep handles per statement.
const SWEEP_BATCH: i64 = 100;

/// The object store and the limits of the work attachments take, shared by every surface
/// (cheap to clone).
#[derive(Clone)]
pub struct Files {
    pub storage: ObjectStorage,
    sweep: Arc<Notify>,
    decodes: Arc<Semaphore>,
    /// Uploads in progress per user.
    uploading: Arc<Mutex<HashMap<i64, usize>>>,
}

/// One upload in progress of a user, counted until dropped.
struct UploadSlot {
    uploading: Arc<Mutex<HashMap<i64, usize>>>,
    user_id: i64,
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut uploading = self.uploading.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = uploading.get_mut(&self.user_id) {
            *n -= 1;
            if *n == 0 {
                uploading.remove(&self.user_id);
            }
        }
    }
}

impl Files {
    /// Attachments kept in `storage`.
    pub fn new(storage: ObjectStorage) -> Files {
        Files {
            storage,
            sweep: Arc::new(Notify::new()),
            decodes: Arc::new(Semaphore::new(DECODES_AT_ONCE)),
            uploading: Arc::default(),
        }
    }

    /// A slot for one more upload of `user_id`, if they have fewer than [`UPLOADS_PER_USER`].
    fn upload_slot(&self, user_id: i64) -> Option<UploadSlot> {
        let mut uploading = self.uploading.lock().unwrap_or_else(|e| e.into_inner());
        let n = uploading.entry(user_id).or_default();
        if *n >= UPLOADS_PER_USER {
            return None;
        }
        *n += 1;
        Some(UploadSlot {
            uploading: self.uploading.clone(),
            user_id,
        })
    }

    /// Asks for a sweep now (after a deletion), instead of at the next interval.
    pub fn nudge(&self) {
        self.sweep.notify_one();
    }
}

/// A file as it arrives: its name and claimed type as the client gave them, and its bytes.
pub struct IncomingFile<S> {
    pub name: Option<String>,
    pub claimed_type: Option<String>,
    pub body: S,
}

/// Why reading an incoming file's bytes failed (the client's body broke off, or was malformed).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Uploads `file` to chat `chat_id` as `user`, who must take part in it: streamed to a
/// temporary file, checked, written to the object store and recorded, unattached. Returns the
/// attachment as messages will show it; send its id in a message's `attachments` within
/// `MRM_ATTACHMENT_GRACE_SECONDS`.
///
/// Errors: `NotFound` (not a participant); `BadRequest` (an empty file; a claimed image whose
/// bytes are something else; an image declaring more than 40 megapixels or 20,000 pixels a
/// side; a body that broke off); `TooLarge` (over `MRM_ATTACHMENT_MAX_BYTES`, or over the
/// user's storage quota); `Busy` (four uploads of theirs in progress already); `Unavailable`
/// (the object store failed or timed out).
pub async fn upload<S>(
    state: &AppState,
    user: &User,
    chat_id: i64,
    file: IncomingFile<S>,
) -> ServiceResult<AttachmentView>
where
    S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
{
    super::chats::visible(state, chat_id, user).await?;
    let _slot = state.files.upload_slot(user.id).ok_or_else(|| {
        ServiceError::Busy(format!(
            "At most {UPLOADS_PER_USER} uploads at once: wait for one to finish."
        ))
    })?;
    let usage = store::attachments::usage(&state.db, user.id).await?;
    let quota = quota_of(state, usage.quota);
    let remaining = quota.saturating_sub(usage.used).max(0) as u64;
    if remaining == 0 {
        return Err(over_quota(usage.used, quota));
    }
    let max_bytes = state.config.attachments.max_bytes;
    let name = rules::sanitize_name(file.name.as_deref().unwrap_or(""));
    let spooled = spool(file.body, max_bytes, remaining, usage.used, quota).await?;
    let content_type = rules::sniff(&spooled.head);
    if rules::claim_is_spoofed(file.claimed_type.as_deref(), &name, &content_type) {
        return Err(ServiceError::BadRequest(format!(
            "The file's content is not what its type or name claims: it is {content_type}."
        )));
    }
    let image = match thumbnails::format_of(&content_type) {
        Some(format) => thumbnail(&state.files, &spooled, format).await?,
        None => None,
    };
    let blob = NewBlob {
        digest: &spooled.digest,
        size: spooled.size as i64,
        content_type: &content_type,
        width: image.as_ref().map(|i| i64::from(i.width)),
        height: image.as_ref().map(|i| i64::from(i.height)),
        thumbnail: image.as_ref().map(|i| i.thumbnail_type),
    };
    // A sweep may remove the blob between our hold running out and our record (only if
    // storing took longer than the hold): then everything is done once more.
    for _ in 0..2 {
        let hold_id = hold(state, &blob).await?;
        let recorded = match store_objects(state, &spooled, image.as_ref()).await {
            Ok(()) => {
                let new = NewAttachment {
                    chat_id,
                    uploader_id: user.id,
                    digest: &spooled.digest,
                    name: &name,
                    size: spooled.size as i64,
                    hold_id,
                };
                match store::attachments::record(&state.db, &new, quota_of(state, None)).await {
                    Ok(Ok(attachment)) => return Ok(AttachmentView::from(attachment.meta())),
                    Ok(Err(refusal)) => NotRecorded::from(refusal),
                    Err(err) => NotRecorded::Failed(err.into()),
                }
            }
            Err(err) => NotRecorded::Failed(err),
        };
        // The hold is ours to end, and what was written goes with the next sweep; but not after
        // the store failed or timed out: a write it finishes late must not land after a sweep
        // removed the blob, so the hold runs out by itself.
        if !matches!(recorded, NotRecorded::Failed(_)) {
            if let Err(err) = store::attachments::release(&state.db, hold_id).await {
                tracing::warn!(error = %err, "could not end an upload's hold; it runs out by itself");
            }
        }
        match recorded {
            NotRecorded::OverQuota { used, quota } => return Err(over_quota(used, quota)),
            NotRecorded::NotMember => return Err(ServiceError::NotFound),
            NotRecorded::Failed(err) => return Err(err),
            NotRecorded::BlobGone => continue,
        }
    }
    Err(ServiceError::Unavailable(
        "The upload could not be stored; try again.".into(),
    ))
}

/// Why an attempt to record an upload did not.
enum NotRecorded {
    OverQuota { used: i64, quota: i64 },
    NotMember,
    BlobGone,
    Failed(ServiceError),
}

impl From<store::attachments::NotRecorded> for NotRecorded {
    fn from(refusal: store::attachments::NotRecorded) -> Self {
        match refusal {
            store::attachments::NotRecorded::OverQuota { used, quota } => {
                NotRecorded::OverQuota { used, quota }
            }
            store::attachments::NotRecorded::NotMember => NotRecorded::NotMember,
            store::attachments::NotRecorded::BlobGone => NotRecorded::BlobGone,
        }
    }
}

/// Holds `blob` for this upload, waiting (up to [`REMOVAL_WAIT`]) for a sweep that is
/// removing the same content to finish; returns the hold's id.
async fn hold(state: &AppState, blob: &NewBlob<'_>) -> ServiceResult<i64> {
    let started = tokio::time::Instant::now();
    loop {
        match store::attachments::hold(&state.db, blob, store::now() + hold_time()).await? {
            Held::Yes(id) => return Ok(id),
            Held::BeingRemoved if started.elapsed() < REMOVAL_WAIT => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Held::BeingRemoved => {
                return Err(ServiceError::Unavailable(
                    "The file store is busy removing this file; try again.".into(),
                ))
            }
        }
    }
}

/// Writes the spooled upload, and its thumbnail if it has one, to the object store.
async fn store_objects(
    state: &AppState,
    spooled: &Spooled,
    image: Option<&thumbnails::Thumbnailed>,
) -> ServiceResult<()> {
    let storage = &state.files.storage;
    storage
        .put_file(&object_key(&spooled.digest, false), spooled.file.path())
        .await
        .map_err(unavailable)?;
    if let Some(image) = image {
        storage
            .put_bytes(&object_key(&spooled.digest, true), image.thumbnail.clone())
            .await
            .map_err(unavailable)?;
    }
    Ok(())
}

fn hold_time() -> chrono::Duration {
    chrono::Duration::from_std(HOLD).unwrap_or(chrono::Duration::MAX)
}

/// `quota` (a user's own) or the configured default, in bytes.
fn quota_of(state: &AppState, quota: Option<i64>) -> i64 {
    quota.unwrap_or_else(|| i64::try_from(state.config.attachments.quota_bytes).unwrap_or(i64::MAX))
}

fn over_quota(used: i64, quota: i64) -> ServiceError {
    ServiceError::TooLarge(format!(
        "This file does not fit your storage quota: {used} of {quota} bytes are used. Delete \
         messages with attachments to make room."
    ))
}

fn unavailable(err: StorageError) -> ServiceError {
    tracing::error!(error = %err, "the object store failed");
    ServiceError::Unavailable("The file store is not available; try again later.".into())
}

/// An upload in its temporary file.
struct Spooled {
    file: tempfile::NamedTempFile,
    size: u64,
    digest: String,
    head: Vec<u8>,
}

/// Writes `body` to a temporary file, hashing it, refusing it as soon as it passes `max_bytes`
/// or the `remaining` quota (`used` of `quota`).
async fn spool<S>(
    mut body: S,
    max_bytes: u64,
    remaining: u64,
    used: i64,
    quota: i64,
) -> ServiceResult<Spooled>
where
    S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
{
    let file = tempfile::NamedTempFile::new().map_err(|e| internal(e, "creating a spool file"))?;
    let mut out = tokio::fs::File::from_std(
        file.reopen()
            .map_err(|e| internal(e, "opening the spool file"))?,
    );
    let mut hasher = Sha256::new();
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    let mut size: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|err| {
            ServiceError::BadRequest(format!("The upload could not be read: {err}."))
        })?;
        size = size.saturating_add(chunk.len() as u64);
        if size > max_bytes {
            return Err(ServiceError::TooLarge(format!(
                "The file is too large: the most an upload may hold is {max_bytes} bytes."
            )));
        }
        if size > remaining {
            return Err(over_quota(used, quota));
        }
        if head.len() < SNIFF_BYTES {
            let take = (SNIFF_BYTES - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
        }
        hasher.update(&chunk);
        out.write_all(&chunk)
            .await
            .map_err(|e| internal(e, "writing the spool file"))?;
    }
    if size == 0 {
        return Err(ServiceError::BadRequest("The file is empty.".into()));
    }
    out.flush()
        .await
        .map_err(|e| internal(e, "writing the spool file"))?;
    Ok(Spooled {
        file,
        size,
        digest: hex::encode(hasher.finalize()),
        head,
    })
}

fn internal(err: impl std::error::Error + Send + Sync + 'static, doing: &str) -> ServiceError {
    ServiceError::Internal(anyhow::Error::new(err).context(doing.to_owned()))
}

/// Decodes the spooled image, at most [`DECODES_AT_ONCE`] at a time on the blocking pool.
/// `None` for an image its decoder cannot read (it is kept as a file without a thumbnail).
async fn thumbnail(
    files: &Files,
    spooled: &Spooled,
    format: image::ImageFormat,
) -> ServiceResult<Option<thumbnails::Thumbnailed>> {
    let permit = files
        .decodes
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| ServiceError::Internal(e.into()))?;
    let path = spooled.file.path().to_owned();
    // The permit goes with the decoding: a request that goes away does not free it early.
    let decoded = tokio::task::spawn_blocking(move || {
        let decoded = thumbnails::thumbnail(&path, format);
        drop(permit);
        decoded
    })
    .await
    .map_err(|e| ServiceError::Internal(e.into()))?;
    match decoded {
        Ok(image) => Ok(Some(image)),
        Err(err @ thumbnails::ImageError::TooLarge { .. }) => {
            Err(ServiceError::BadRequest(format!("Refused: {err}.")))
        }
        Err(err @ thumbnails::ImageError::Corrupt(_)) => {
            tracing::debug!(error = %err, "an uploaded image could not be decoded");
            Ok(None)
        }
    }
}

/// Attachment `id` if `user` may download it: one carried by a message of a chat they take
/// part in, their own upload not yet sent, or anything for staff. Errors: `NotFound` otherwise
/// (outsiders learn nothing).
pub async fn visible(state: &AppState, user: &User, id: i64) -> ServiceResult<Attachment> {
    let found = if user.is_staff || user.is_superuser {
        store::attachments::by_id(&state.db, id).await?
    } else {
        store::attachments::visible_to(&state.db, id, user.id).await?
    };
    found.ok_or(ServiceError::NotFound)
}

/// How a download is answered.
pub enum Download {
    /// A redirect to a short-lived signed URL of the object store.
    Redirect(String),
    /// The bytes, through the server.
    Bytes(ObjectRead),
}

/// Which object of an attachment is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Original,
    Thumbnail,
}

/// Opens `variant` of `attachment` (see [`visible`]) for download: for the original, a
/// redirect when the store signs URLs (`MRM_S3_PRESIGNED_SECONDS`; signed for `HEAD` when
/// `head`, since a signature names its method); else its bytes, all or `range`. Errors: `NotFound`
/// for a thumbnail it does not have (or an object missing from the store); `Unavailable` when
/// the store fails.
pub async fn open(
    state: &AppState,
    attachment: &Attachment,
    variant: Variant,
    range: Option<std::ops::Range<u64>>,
    head: bool,
) -> ServiceResult<Download> {
    let thumbnail = variant == Variant::Thumbnail;
    let content_type = if thumbnail {
        attachment.thumbnail.clone().ok_or(ServiceError::NotFound)?
    } else {
        attachment.content_type.clone()
    };
    let key = object_key(&attachment.digest, thumbnail);
    let storage = &state.files.storage;
    let disposition = rules::content_disposition(&attachment.name, &content_type);
    // Thumbnails always come through the server: they are small, and pages that show them
    // (the web client's, under `img-src 'self'`) may load images from their own origin only.
    if !thumbnail {
        if let Some(url) = storage
            .presigned_url(&key, head, &rules::served_type(&content_type), &disposition)
            .await
            .map_err(unavailable)?
        {
            return Ok(Download::Redirect(url));
        }
    }
    match storage.get(&key, range).await {
        Ok(read) => Ok(Download::Bytes(read)),
        Err(StorageError::NotFound) => {
            tracing::error!(
                attachment.id = attachment.id,
                "an attachment's object is missing"
            );
            Err(ServiceError::NotFound)
        }
        Err(err) => Err(unavailable(err)),
    }
}

/// A user's storage, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Storage {
    /// What their uploads take.
    pub used: i64,
    /// What they may use: their own quota, or the default.
    pub quota: i64,
    /// Their own quota, if the admin area set one.
    pub own: Option<i64>,
}

/// User `user_id`'s storage (the admin area shows it).
pub async fn usage(state: &AppState, user_id: i64) -> ServiceResult<Storage> {
    let usage = store::attachments::usage(&state.db, user_id).await?;
    Ok(Storage {
        used: usage.used,
        quota: quota_of(state, usage.quota),
        own: usage.quota,
    })
}

/// Sets user `user_id`'s own storage quota in bytes (`None`: the default). Errors:
/// `Validation` (`storage_quota`) for a negative quota.
pub async fn set_quota(state: &AppState, user_id: i64, quota: Option<i64>) -> ServiceResult<()> {
    if quota.is_some_and(|q| q < 0) {
        return Err(ServiceError::Validation(FieldErrors::single(
            "storage_quota",
            "Ensure this value is greater than or equal to 0.",
        )));
    }
    Ok(store::attachments::set_quota(&state.db, user_id, quota).await?)
}

/// Runs sweeps until the process stops: every `MRM_ATTACHMENT_SWEEP_SECONDS`, and at once when
/// [`Files::nudge`] asks.
pub async fn sweeper(db: Db, files: Files, grace: Duration, interval: Duration) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = files.sweep.notified() => {}
        }
        if let Err(err) = sweep(&db, &files.storage, grace).await {
            tracing::warn!(error = %err, "an attachment sweep failed; retrying at the next");
        }
    }
}

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Uploads never attached within the grace period.
    pub expired: u64,
    /// Objects nothing referred to any more (with their thumbnails).
    pub objects: u64,
    /// Objects that could not be removed this time (the store failed).
    pub failed: u64,
}

/// One sweep: removes uploads older than `grace` that no message carries, then every blob no
/// attachment refers to, with its objects.
pub async fn sweep(db: &Db, storage: &ObjectStorage, grace: Duration) -> anyhow::Result<Swept> {
    let mut swept = Swept::default();
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    loop {
        let cutoff = store::now()
            .checked_sub_signed(grace)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let n = store::attachments::expire_unattached(db, cutoff, SWEEP_BATCH).await?;
        swept.expired += n;
        if n < SWEEP_BATCH as u64 {
            break;
        }
    }
    store::attachments::expire_holds(db, store::now()).await?;
    // This sweep's name on the blobs it removes.
    let token = hex::encode(rand::random::<[u8; 16]>());
    // Every candidate once, in digest order: one that fails is logged and left for the next
    // sweep, and does not stop the others.
    let mut after = String::new();
    loop {
        let candidates = store::attachments::released(db, &after, SWEEP_BATCH).await?;
        for digest in &candidates {
            let remove = || async {
                storage.delete(&object_key(digest, true)).await?;
                storage.delete(&object_key(digest, false)).await?;
                Ok(())
            };
            match store::attachments::collect(db, digest, store::now(), &token, remove).await {
                Ok(Collected::Removed) => swept.objects += 1,
                Ok(Collected::Kept) => {}
                Err(err) => {
                    swept.failed += 1;
                    tracing::warn!(error = %err, digest, "could not remove an object; retrying at the next sweep");
                }
            }
        }
        match candidates.last() {
            Some(last) if candidates.len() == SWEEP_BATCH as usize => after = last.clone(),
            _ => break,
        }
    }
    if swept != Swept::default() {
        tracing::info!(
            expired = swept.expired,
            objects = swept.objects,
            failed = swept.failed,
            "attachments swept"
        );
    }
    Ok(swept)
}
