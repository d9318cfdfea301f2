//! The `blobs` and `attachments` tables: which objects the store holds, and which uploads refer
//! to them (see `migrations/*/0012_attachments.sql`).
//!
//! An upload holds its blob ([`hold`]: a row of `blob_holds`) before it writes the object, and
//! gives the hold up when it records its attachment ([`record`]). A blob is removed only by
//! [`collect`], which marks it as being removed under its row's lock when no attachment refers
//! to it and no upload holds it, then removes its objects with no lock held, then its row. Uploads of
//! the same content meanwhile are told to wait ([`Held::BeingRemoved`]), and a record that finds
//! its blob being removed (an upload that outlived its hold) is refused, so no attachment ever
//! refers to an object that is gone.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::QueryBuilder;

use super::{on_pool, on_writer, Db};

/// What a message keeps of each of its attachments (as JSON in `messages.attachments`), and
/// what its views show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct AttachmentMeta {
    pub id: i64,
    pub name: String,
    pub size: i64,
    pub content_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<i64>,
    /// Whether a thumbnail is stored beside it.
    #[serde(default)]
    pub thumbnail: bool,
}

/// `metas` as `messages.attachments` keeps them: JSON, `None` for none.
pub fn encode(metas: &[AttachmentMeta]) -> Option<String> {
    if metas.is_empty() {
        None
    } else {
        serde_json::to_string(metas).ok()
    }
}

/// The attachments `messages.attachments` holds (none when it is NULL or unreadable).
pub fn decode(raw: Option<&str>) -> Vec<AttachmentMeta> {
    raw.and_then(|raw| serde_json::from_str(raw).ok())
        .unwrap_or_default()
}

/// An attachment with its blob, as downloads and access checks need it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Attachment {
    pub id: i64,
    pub chat_id: i64,
    pub uploader_id: i64,
    /// `None` until a message carries it.
    pub message_id: Option<i64>,
    pub name: String,
    pub size: i64,
    pub created_at: DateTime<Utc>,
    pub digest: String,
    pub content_type: String,
    pub width: Option<i64>,
    pub height: Option<i64>,
    /// The thumbnail's content type, if it has one.
    pub thumbnail: Option<String>,
}

impl Attachment {
    /// What a message keeps of it.
    pub fn meta(&self) -> AttachmentMeta {
        AttachmentMeta {
            id: self.id,
            name: self.name.clone(),
            size: self.size,
            content_type: self.content_type.clone(),
            width: self.width,
            height: self.height,
            thumbnail: self.thumbnail.is_some(),
        }
    }
}

macro_rules! attachment_select {
    () => {
        "SELECT a.id, a.chat_id, a.uploader_id, a.message_id, a.name, a.size, a.created_at, \
         a.digest, b.content_type, b.width, b.height, b.thumbnail \
         FROM attachments a JOIN blobs b ON b.digest = a.digest "
    };
}

/// The content of a new object, as decided from its bytes.
#[derive(Debug, Clone)]
pub struct NewBlob<'a> {
    pub digest: &'a str,
    pub size: i64,
    pub content_type: &'a str,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub thumbnail: Option<&'a str>,
}

/// Whether [`hold`] holds the blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Held, by the hold with this id, until the time given or until [`record`] or
    /// [`release`] ends it.
    Yes(i64),
    /// A sweep is removing this content's objects: try again when it has.
    BeingRemoved,
}

/// Records blob `blob` (or finds it recorded) and holds it for an upload until `until`: no
/// sweep removes it (or the object the upload is about to write) while the hold lasts. Marks the
/// blob released, so that once the hold ends it is collected unless an attachment refers to it.
pub async fn hold(db: &Db, blob: &NewBlob<'_>, until: DateTime<Utc>) -> sqlx::Result<Held> {
    // The upsert takes the blob's row lock: a sweep deciding on it finishes first.
    let upsert = "INSERT INTO blobs \
                  (digest, size, content_type, width, height, thumbnail, released) \
                  VALUES ($1, $2, $3, $4, $5, $6, TRUE) \
                  ON CONFLICT (digest) DO UPDATE SET released = TRUE, \
                  thumbnail = COALESCE(blobs.thumbnail, excluded.thumbnail) \
                  WHERE blobs.deleting_until IS NULL RETURNING digest";
    on_writer!(db, pool => {
        let mut tx = pool.begin().await?;
        let upserted: Option<String> = sqlx::query_scalar(upsert)
            .bind(blob.digest)
            .bind(blob.size)
            .bind(blob.content_type)
            .bind(blob.width)
            .bind(blob.height)
            .bind(blob.thumbnail)
            .fetch_optional(&mut *tx)
            .await?;
        if upserted.is_none() {
            return Ok(Held::BeingRemoved);
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO blob_holds (digest, until) VALUES ($1, $2) RETURNING id",
        )
        .bind(blob.digest)
        .bind(until)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Held::Yes(id))
    })
}

/// Ends hold `hold_id` (an upload that failed); its blob is collected at the next sweep unless
/// something else holds it.
pub async fn release(db: &Db, hold_id: i64) -> sqlx::Result<()> {
    let sql = "DELETE FROM blob_holds WHERE id = $1";
    on_writer!(db, pool => sqlx::query(sql).bind(hold_id).execute(pool).await.map(|_| ()))
}

/// A user's storage: bytes their uploads take, and their own quota if the admin area set one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Usage {
    pub used: i64,
    pub quota: Option<i64>,
}

/// Why an upload was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRecorded {
    /// It would take the uploader past their quota (`quota` bytes, `used` already).
    OverQuota { used: i64, quota: i64 },
    /// The uploader does not take part in the chat (any more).
    NotMember,
    /// The blob is being removed, or is gone: a sweep collected it while the upload outlived
    /// its hold.
    BlobGone,
}

/// What [`record`] records: an upload of blob `digest` by `uploader_id` to chat `chat_id`,
/// under hold `hold_id`.
#[derive(Debug, Clone, Copy)]
pub struct NewAttachment<'a> {
    pub chat_id: i64,
    pub uploader_id: i64,
    pub digest: &'a str,
    pub name: &'a str,
    pub size: i64,
    pub hold_id: i64,
}

/// Records an upload, unattached, if it fits the uploader's quota (their own, or
/// `default_quota`), counted under the uploader's row lock so that concurrent uploads cannot
/// pass it together, and if its blob is not being removed. Ends its hold: the attachment row
/// keeps the blob from now on. Nothing is written when it is refused (the hold stays: end it
/// with [`release`]).
pub async fn record(
    db: &Db,
    new: &NewAttachment<'_>,
    default_quota: i64,
) -> sqlx::Result<Result<Attachment, NotRecorded>> {
    let NewAttachment {
        chat_id,
        uploader_id,
        digest,
        name,
        size,
        hold_id,
    } = *new;
    let lock = match db {
        Db::Sqlite(..) => "UPDATE users SET storage_quota = storage_quota WHERE id = $1",
        Db::Postgres(_) => "SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE",
    };
    on_writer!(db, pool => {
        let now = super::now();
        let mut tx = pool.begin().await?;
        sqlx::query(lock).bind(uploader_id).execute(&mut *tx).await?;
        let usage: Usage = sqlx::query_as(USAGE).bind(uploader_id).fetch_one(&mut *tx).await?;
        let quota = usage.quota.unwrap_or(default_quota);
        if usage.used.saturating_add(size) > quota {
            return Ok(Err(NotRecorded::OverQuota { used: usage.used, quota }));
        }
        let member: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM chat_participants WHERE chat_id = $1 AND user_id = $2)",
        )
        .bind(chat_id)
        .bind(uploader_id)
        .fetch_one(&mut *tx)
        .await?;
        if !member {
            return Ok(Err(NotRecorded::NotMember));
        }
        // The row lock again: a sweep that marked the blob deleting has removed (or is
        // removing) its objects.
        let kept: Option<String> = sqlx::query_scalar(
            "UPDATE blobs SET released = FALSE WHERE digest = $1 AND deleting_until IS NULL \
             RETURNING digest",
        )
        .bind(digest)
        .fetch_optional(&mut *tx)
        .await?;
        // Our own hold must still be there: if it ran out and a sweep removed the blob, the
        // row found above is a newer upload's, whose objects may not be written yet.
        let ours = sqlx::query("DELETE FROM blob_holds WHERE id = $1 AND digest = $2")
            .bind(hold_id)
            .bind(digest)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if kept.is_none() || ours == 0 {
            return Ok(Err(NotRecorded::BlobGone));
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO attachments (chat_id, uploader_id, digest, name, size, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(chat_id)
        .bind(uploader_id)
        .bind(digest)
        .bind(name)
        .bind(size)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let sql = concat!(attachment_select!(), "WHERE a.id = $1");
        let attachment: Attachment = sqlx::query_as(sql).bind(id).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(Ok(attachment))
    })
}

/// A user's usage and own quota (`SUM` of BIGINT is NUMERIC on PostgreSQL: cast back).
const USAGE: &str = "SELECT CAST(COALESCE((SELECT SUM(size) FROM attachments \
                     WHERE uploader_id = $1), 0) AS BIGINT) AS used, \
                     (SELECT storage_quota FROM users WHERE id = $1) AS quota";

/// User `user_id`'s storage.
pub async fn usage(db: &Db, user_id: i64) -> sqlx::Result<Usage> {
    on_pool!(db, pool => sqlx::query_as::<_, Usage>(USAGE).bind(user_id).fetch_one(pool).await)
}

/// Bytes used by each of `user_ids` (users with no uploads are left out).
pub async fn used_by(db: &Db, user_ids: &[i64]) -> sqlx::Result<Vec<(i64, i64)>> {
    if user_ids.is_empty() {
        return Ok(Vec::new());
    }
    on_pool!(db, pool => {
        let mut q = QueryBuilder::new(
            "SELECT uploader_id, CAST(SUM(size) AS BIGINT) FROM attachments WHERE uploader_id IN (",
        );
        let mut list = q.separated(", ");
        for id in user_ids {
            list.push_bind(*id);
        }
        q.push(") GROUP BY uploader_id");
        q.build_query_as::<(i64, i64)>().persistent(false).fetch_all(pool).await
    })
}

/// Sets user `user_id`'s own quota (`None`: the default).
pub async fn set_quota(db: &Db, user_id: i64, quota: Option<i64>) -> sqlx::Result<()> {
    let sql = "UPDATE users SET storage_quota = $2 WHERE id = $1";
    on_writer!(db, pool => sqlx::query(sql).bind(user_id).bind(quota).execute(pool).await.map(|_| ()))
}

/// Attachment `id`, whoever may see it.
pub async fn by_id(db: &Db, id: i64) -> sqlx::Result<Option<Attachment>> {
    let sql = concat!(attachment_select!(), "WHERE a.id = $1");
    on_pool!(db, pool => sqlx::query_as::<_, Attachment>(sql).bind(id).fetch_optional(pool).await)
}

/// Attachment `id` if `user_id` may see it: one carried by a message of a chat they take part
/// in, or their own upload not yet attached.
pub async fn visible_to(db: &Db, id: i64, user_id: i64) -> sqlx::Result<Option<Attachment>> {
    let sql = concat!(
        attachment_select!(),
        "WHERE a.id = $1 AND CASE WHEN a.message_id IS NULL THEN a.uploader_id = $2 \
         ELSE EXISTS (SELECT 1 FROM chat_participants p WHERE p.chat_id = a.chat_id \
         AND p.user_id = $2) END"
    );
    on_pool!(db, pool => sqlx::query_as::<_, Attachment>(sql)
        .bind(id)
        .bind(user_id)
        .fetch_optional(pool)
        .await)
}

/// The uploads among `ids` by `uploaders` that a message may still take: unattached, with their
/// blob. Read inside the transaction that attaches them (`$tx`), locking them on PostgreSQL (in
/// id order, so two batches never wait for each other in a cycle) so the sweeper cannot remove
/// them before commit (SQLite's write lock does the same there).
macro_rules! claimable {
    ($tx:ident, $db:expr, $ids:expr, $uploaders:expr) => {{
        let ids: &[i64] = $ids;
        let uploaders: &[i64] = $uploaders;
        let mut q = sqlx::QueryBuilder::new(concat!(
            $crate::store::attachments::attachment_select!(),
            "WHERE a.message_id IS NULL AND a.id IN ("
        ));
        let mut list = q.separated(", ");
        for id in ids {
            list.push_bind(*id);
        }
        q.push(") AND a.uploader_id IN (");
        let mut list = q.separated(", ");
        for id in uploaders {
            list.push_bind(*id);
        }
        q.push(") ORDER BY a.id");
        if matches!($db, $crate::store::Db::Postgres(_)) {
            q.push(" FOR UPDATE OF a");
        }
        q.build_query_as::<$crate::store::attachments::Attachment>()
            .persistent(false)
            .fetch_all(&mut *$tx)
            .await?
    }};
}
pub(crate) use attachment_select;
pub(crate) use claimable;

/// Inside the transaction `$tx` that inserted them: binds attachments to their messages,
/// `$bound` being `(attachment id, message id, position)` triples.
macro_rules! bind_to_messages {
    ($tx:ident, $bound:expr) => {{
        let bound: &[(i64, i64, i64)] = $bound;
        if !bound.is_empty() {
            let mut q = sqlx::QueryBuilder::new("UPDATE attachments SET message_id = CASE id");
            for (id, message, _) in bound {
                q.push(" WHEN ")
                    .push_bind(*id)
                    .push(" THEN ")
                    .push_bind(*message);
            }
            q.push(" END, ordinal = CASE id");
            for (id, _, position) in bound {
                q.push(" WHEN ")
                    .push_bind(*id)
                    .push(" THEN ")
                    .push_bind(*position);
            }
            q.push(" END WHERE id IN (");
            let mut list = q.separated(", ");
            for (id, _, _) in bound {
                list.push_bind(*id);
            }
            q.push(")");
            q.build().persistent(false).execute(&mut *$tx).await?;
        }
    }};
}
pub(crate) use bind_to_messages;

/// Removes uploads never attached that were made before `cutoff`, at most `limit` of them;
/// returns how many (their blobs become candidates for [`collect`]).
pub async fn expire_unattached(db: &Db, cutoff: DateTime<Utc>, limit: i64) -> sqlx::Result<u64> {
    // The conditions are repeated outside the subquery: on PostgreSQL a row a send claimed
    // while this waited for its lock is checked again there, and kept.
    let sql = "DELETE FROM attachments WHERE message_id IS NULL AND created_at < $1 \
               AND id IN (SELECT id FROM attachments WHERE message_id IS NULL AND created_at < $1 \
               ORDER BY created_at LIMIT $2)";
    on_writer!(db, pool => sqlx::query(sql)
        .bind(cutoff)
        .bind(limit)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))
}

/// Removes holds that ran out before `now` (uploads that never finished); returns how many.
pub async fn expire_holds(db: &Db, now: DateTime<Utc>) -> sqlx::Result<u64> {
    let sql = "DELETE FROM blob_holds WHERE until < $1";
    on_writer!(db, pool => sqlx::query(sql).bind(now).execute(pool).await.map(|r| r.rows_affected()))
}

/// Up to `limit` blobs that lost an attachment (or whose upload ended), after `after` in
/// digest order: candidates for [`collect`].
pub async fn released(db: &Db, after: &str, limit: i64) -> sqlx::Result<Vec<String>> {
    let sql = "SELECT digest FROM blobs WHERE released = TRUE AND digest > $1 \
               ORDER BY digest LIMIT $2";
    on_pool!(db, pool => sqlx::query_scalar(sql).bind(after).bind(limit).fetch_all(pool).await)
}

/// What [`collect`] did with a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collected {
    /// Nothing referred to it: its objects and its row are gone.
    Removed,
    /// An attachment refers to it, or an upload holds it, or it is gone already: kept.
    Kept,
}

/// How long a sweep may take to remove a blob's objects before another sweep may take the
/// job over: longer than the two deletions can take ([`crate::storage::OPERATION_DEADLINE`]
/// each), so a slow sweep never deletes what a newer upload of the same content wrote.
pub const REMOVAL_LEASE: chrono::Duration = chrono::Duration::minutes(15);

/// Removes blob `digest` if nothing holds it. Under its row's lock: if it is released, held by
/// no upload at `now` and referred to by no attachment, it is marked as being removed by
/// `sweeper` (a token of this sweep) until [`REMOVAL_LEASE`] from `now` (a blob still referred
/// to is marked not released instead; one another sweeper is removing is left to it, unless its
/// lease ran out). Then, with no lock held, `remove_objects` deletes its objects from the
/// store, and last its row goes, if the mark is still this sweeper's. An error from
/// `remove_objects` leaves the mark, for a later sweep to finish once the lease runs out;
/// uploads of the same content wait meanwhile.
pub async fn collect<F, Fut>(
    db: &Db,
    digest: &str,
    now: DateTime<Utc>,
    sweeper: &str,
    remove_objects: F,
) -> anyhow::Result<Collected>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let lock = match db {
        Db::Sqlite(..) => {
            "UPDATE blobs SET released = released WHERE digest = $1 AND released = TRUE \
             RETURNING deleting_until"
        }
        Db::Postgres(_) => {
            "SELECT deleting_until FROM blobs WHERE digest = $1 AND released = TRUE FOR UPDATE"
        }
    };
    let lease = now + REMOVAL_LEASE;
    let marked = on_writer!(db, pool => {
        let mut tx = pool.begin().await?;
        let found: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(lock)
            .bind(digest)
            .fetch_optional(&mut *tx)
            .await?;
        let take = match found {
            // Gone, or not released.
            None => false,
            // Another sweep is on it.
            Some(Some(until)) if until >= now => false,
            // A sweep that did not finish: its lease ran out, so it is no longer running.
            Some(Some(_)) => true,
            Some(None) => {
                let (held, referenced): (bool, bool) = sqlx::query_as(
                    "SELECT EXISTS (SELECT 1 FROM blob_holds WHERE digest = $1 AND until >= $2), \
                     EXISTS (SELECT 1 FROM attachments WHERE digest = $1)",
                )
                .bind(digest)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                if referenced {
                    sqlx::query("UPDATE blobs SET released = FALSE WHERE digest = $1")
                        .bind(digest)
                        .execute(&mut *tx)
                        .await?;
                }
                !held && !referenced
            }
        };
        if !take {
            tx.commit().await?;
        } else {
            sqlx::query("UPDATE blobs SET deleting_until = $2, deleting_by = $3 WHERE digest = $1")
                .bind(digest)
                .bind(lease)
                .bind(sweeper)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok::<_, sqlx::Error>(take)
    })?;
    if !marked {
        return Ok(Collected::Kept);
    }
    remove_objects().await?;
    let sql = "DELETE FROM blobs WHERE digest = $1 AND deleting_by = $2";
    on_writer!(db, pool => sqlx::query(sql).bind(digest).bind(sweeper).execute(pool).await.map(|_| ()))?;
    Ok(Collected::Removed)
}
