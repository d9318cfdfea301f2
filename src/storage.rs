//! The object store that keeps attachments' bytes: a local directory (the default) or any
//! S3-compatible store, behind the one interface of the `object_store` crate. Objects are named
//! by what they hold (see [`object_key`]), so the same bytes are stored once.

use std::{ops::Range, sync::Arc, time::Duration};

use anyhow::Context;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use object_store::{
    aws::{AmazonS3, AmazonS3Builder},
    buffered::BufWriter,
    local::LocalFileSystem,
    path::Path,
    signer::{SignedUrlOptions, Signer},
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload,
};
use tokio::io::AsyncWriteExt;

use crate::config::AttachmentConfig;

/// Bytes an upload to the store buffers before sending them on: files up to this size go in
/// one request, larger ones as a multipart upload of parts this size.
const PART_BYTES: usize = 8 * 1024 * 1024;

/// The longest a single store operation (a whole upload of one file included) may take.
pub const OPERATION_DEADLINE: Duration = Duration::from_secs(300);

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The object is not in the store.
    #[error("object not found")]
    NotFound,
    /// The store did not answer within [`OPERATION_DEADLINE`].
    #[error("the object store did not answer in time")]
    Timeout,
    /// Anything else the store or the file system reported.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl From<object_store::Error> for StorageError {
    fn from(err: object_store::Error) -> Self {
        match err {
            object_store::Error::NotFound { .. } => StorageError::NotFound,
            other => StorageError::Failed(other.into()),
        }
    }
}

/// Part of an object as read: its bytes as a stream, the range they cover, and the object's
/// whole size.
pub struct ObjectRead {
    pub stream: BoxStream<'static, Result<Bytes, object_store::Error>>,
    pub range: Range<u64>,
    pub size: u64,
}

/// The configured object store (cheap to clone).
#[derive(Clone)]
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    /// The S3 store again, for signing URLs, when downloads are redirected to it.
    signer: Option<(Arc<AmazonS3>, Duration)>,
    describe: String,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

/// The name of the object holding content with SHA-256 `digest` (lower-case hex), or its
/// thumbnail: `objects/ab/cd/abcd…`, `thumbnails/ab/cd/abcd…`. Two levels of two hex digits keep
/// a local directory's folders small.
pub fn object_key(digest: &str, thumbnail: bool) -> Path {
    let top = if thumbnail { "thumbnails" } else { "objects" };
    let a = digest.get(0..2).unwrap_or("00");
    let b = digest.get(2..4).unwrap_or("00");
    Path::from(format!("{top}/{a}/{b}/{digest}"))
}

impl ObjectStorage {
    /// The store the configuration names: the S3 bucket `MRM_S3_BUCKET` if set, else the
    /// directory `MRM_ATTACHMENTS_DIR`, created if missing. Errors: the directory cannot be
    /// created, or the S3 settings are incomplete.
    pub fn from_config(config: &AttachmentConfig) -> anyhow::Result<ObjectStorage> {
        let Some(bucket) = &config.s3_bucket else {
            return Self::local(&config.dir);
        };
        // The standard AWS_* variables (and instance roles) first; our own settings override.
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region(&config.s3_region);
        if let Some(endpoint) = &config.s3_endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        if let Some(key) = &config.s3_access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &config.s3_secret_access_key {
            builder = builder.with_secret_access_key(secret.expose());
        }
        let s3 = Arc::new(builder.build().context("MRM_S3_*: the S3 store")?);
        Ok(ObjectStorage {
            store: s3.clone(),
            signer: config.s3_presigned.map(|ttl| (s3, ttl)),
            describe: format!("S3 bucket {bucket}"),
        })
    }

    /// A store in local directory `dir`, created if missing.
    pub fn local(dir: &std::path::Path) -> anyhow::Result<ObjectStorage> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("MRM_ATTACHMENTS_DIR: cannot create {}", dir.display()))?;
        let store = LocalFileSystem::new_with_prefix(dir)
            .with_context(|| format!("MRM_ATTACHMENTS_DIR: cannot use {}", dir.display()))?
            // Folders left empty by deletions go with them.
            .with_automatic_cleanup(true);
        Ok(ObjectStorage {
            store: Arc::new(store),
            signer: None,
            describe: format!("directory {}", dir.display()),
        })
    }

    /// Copies local file `file` into the store as `key`, in parts of at most 8 MiB (never the
    /// whole file in memory). Replacing an existing object of the same name is harmless: names
    /// are content addresses.
    pub async fn put_file(&self, key: &Path, file: &std::path::Path) -> Result<(), StorageError> {
        let mut source = tokio::fs::File::open(file)
            .await
            .context("reopening the spooled upload")?;
        let mut writer = BufWriter::with_capacity(self.store.clone(), key.clone(), PART_BYTES);
        let copied = tokio::time::timeout(OPERATION_DEADLINE, async {
            tokio::io::copy(&mut source, &mut writer).await?;
            writer.shutdown().await
        })
        .await;
        match copied {
            Ok(Ok(())) => Ok(()),
            failed => {
                // A multipart upload left open keeps its parts in the bucket: abort it.
                let _ = writer.abort().await;
                match failed {
                    Err(_) => Err(StorageError::Timeout),
                    Ok(Err(err)) => Err(StorageError::Failed(
                        anyhow::Error::new(err).context("writing to the object store"),
                    )),
                    Ok(Ok(())) => Ok(()),
                }
            }
        }
    }

    /// Stores `bytes` (a thumbnail, small) as `key`.
    pub async fn put_bytes(&self, key: &Path, bytes: Vec<u8>) -> Result<(), StorageError> {
        deadline(async {
            self.store
                .put(key, PutPayload::from(bytes))
                .await
                .map(|_| ())
                .map_err(StorageError::from)
        })
        .await
    }

    /// Reads object `key`, all of it or `range` (clamped to its end).
    pub async fn get(
        &self,
        key: &Path,
        range: Option<Range<u64>>,
    ) -> Result<ObjectRead, StorageError> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let result = deadline(async {
            self.store
                .get_opts(key, options)
                .await
                .map_err(StorageError::from)
        })
        .await?;
        let size = result.meta.size;
        let range = result.range.clone();
        Ok(ObjectRead {
            stream: result.into_stream(),
            range,
            size,
        })
    }

    /// Removes object `key`; one that is already gone counts as removed.
    pub async fn delete(&self, key: &Path) -> Result<(), StorageError> {
        match deadline(async { self.store.delete(key).await.map_err(StorageError::from) }).await {
            Ok(()) | Err(StorageError::NotFound) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Whether object `key` exists.
    pub async fn exists(&self, key: &Path) -> Result<bool, StorageError> {
        match deadline(async { self.store.head(key).await.map_err(StorageError::from) }).await {
            Ok(_) => Ok(true),
            Err(StorageError::NotFound) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// A URL of the object store that serves object `key` (to `GET`, or to `HEAD` when `head`)
    /// for `MRM_S3_PRESIGNED_SECONDS`
    /// without credentials, answering with these `Content-Type` and `Content-Disposition`
    /// (S3's `response-content-type` and `response-content-disposition`, signed with the URL so
    /// they cannot be changed); `None` when downloads are not redirected.
    pub async fn presigned_url(
        &self,
        key: &Path,
        head: bool,
        content_type: &str,
        disposition: &str,
    ) -> Result<Option<String>, StorageError> {
        let Some((s3, ttl)) = &self.signer else {
            return Ok(None);
        };
        let method = if head {
            http::Method::HEAD
        } else {
            http::Method::GET
        };
        let options = SignedUrlOptions::default().with_query([
            ("response-content-type", content_type),
            ("response-content-disposition", disposition),
        ]);
        let url = s3.signed_url_opts(method, key, *ttl, &options).await?;
        Ok(Some(url.to_string()))
    }
}

async fn deadline<T>(
    work: impl std::future::Future<Output = Result<T, StorageError>>,
) -> Result<T, StorageError> {
    tokio::time::timeout(OPERATION_DEADLINE, work)
        .await
        .map_err(|_| StorageError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_objects_over_folders() {
        let digest = "abcdef0123";
        assert_eq!(
            object_key(digest, false).as_ref(),
            "objects/ab/cd/abcdef0123"
        );
        assert_eq!(
            object_key(digest, true).as_ref(),
            "thumbnails/ab/cd/abcdef0123"
        );
    }
}
