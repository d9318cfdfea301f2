//! Reading a database of MRM Chat 2 (Django): PostgreSQL, or SQLite opened read-only. Tables and
//! columns are those its Django migrations create (`chat` 0001–0002, `ai_chat` 0001); Django
//! stores times in UTC (`USE_TZ = True`), as `timestamptz` on PostgreSQL and as
//! `YYYY-MM-DD HH:MM:SS[.ffffff]` text on SQLite.

use std::{collections::HashMap, str::FromStr};

use chrono::{DateTime, NaiveDateTime, Utc};
use futures_util::{stream::BoxStream, StreamExt};
use sqlx::{
    postgres::{PgPoolOptions, PgRow},
    sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteRow},
    PgPool, Row, SqlitePool,
};

use super::ImportError;
use crate::store::import::{ImportedAiChat, ImportedUser};

/// A user of the original (`chat_user`), its password hash as Django encoded it (`!…` for an
/// unusable password), its username as the original stored it.
pub type SourceUser = ImportedUser;

/// A chat of the original (`chat_chat`), with its participants (`chat_chat_participants`) in
/// the order they were added: the creator first, as the original's serializer adds them.
#[derive(Debug, Clone)]
pub struct SourceChat {
    pub id: i64,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub participants: Vec<i64>,
}

/// A message of the original (`chat_message`).
#[derive(Debug, Clone)]
pub struct SourceMessage {
    pub id: i64,
    pub chat_id: i64,
    pub sender_id: i64,
    pub content: String,
    pub timestamp: DateTime<Utc>,
}

/// An AI chat of the original (`ai_chat_aichat`).
pub type SourceAiChat = ImportedAiChat;

/// An AI message of the original (`ai_chat_aimessage`).
#[derive(Debug, Clone)]
pub struct SourceAiMessage {
    pub id: i64,
    pub ai_chat_id: i64,
    pub role: String,
    pub content: String,
    pub timestamp: DateTime<Utc>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub total_tokens: Option<i64>,
}

/// The tables an MRM Chat 2 database has: each with a probe of the columns the import reads,
/// and a count of its rows.
const TABLES: &[(&str, &str, &str)] = &[
    (
        "chat_user",
        "SELECT id, password, last_login, is_superuser, username, first_name, last_name, email, \
         is_staff, is_active, date_joined, user_type FROM chat_user LIMIT 0",
        "SELECT COUNT(*) FROM chat_user",
    ),
    (
        "chat_chat",
        "SELECT id, name, created_at FROM chat_chat LIMIT 0",
        "SELECT COUNT(*) FROM chat_chat",
    ),
    (
        "chat_chat_participants",
        "SELECT id, chat_id, user_id FROM chat_chat_participants LIMIT 0",
        "SELECT COUNT(*) FROM chat_chat_participants",
    ),
    (
        "chat_message",
        "SELECT id, content, timestamp, chat_id, sender_id FROM chat_message LIMIT 0",
        "SELECT COUNT(*) FROM chat_message",
    ),
    (
        "ai_chat_aichat",
        "SELECT id, title, system_prompt, created_at, updated_at, related_chat_id, user_id \
         FROM ai_chat_aichat LIMIT 0",
        "SELECT COUNT(*) FROM ai_chat_aichat",
    ),
    (
        "ai_chat_aimessage",
        "SELECT id, role, content, timestamp, prompt_tokens, completion_tokens, total_tokens, \
         ai_chat_id FROM ai_chat_aimessage LIMIT 0",
        "SELECT COUNT(*) FROM ai_chat_aimessage",
    ),
];

/// Rows of the source: the same reads on either database.
trait Fields {
    fn int(&self, column: &str) -> Result<i64, sqlx::Error>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error>;
    fn text(&self, column: &str) -> Result<String, sqlx::Error>;
    fn flag(&self, column: &str) -> Result<bool, sqlx::Error>;
    fn opt_time(&self, column: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error>;
    fn time(&self, column: &str) -> Result<DateTime<Utc>, sqlx::Error> {
        self.opt_time(column)?
            .ok_or_else(|| sqlx::Error::ColumnDecode {
                index: column.to_owned(),
                source: "a time is missing".into(),
            })
    }
}

/// The reads both databases decode alike.
macro_rules! plain_fields {
    () => {
        fn int(&self, column: &str) -> Result<i64, sqlx::Error> {
            self.try_get(column)
        }
        fn opt_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error> {
            self.try_get(column)
        }
        fn text(&self, column: &str) -> Result<String, sqlx::Error> {
            self.try_get(column)
        }
        fn flag(&self, column: &str) -> Result<bool, sqlx::Error> {
            self.try_get(column)
        }
    };
}

impl Fields for PgRow {
    plain_fields!();
    fn opt_time(&self, column: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        self.try_get(column)
    }
}

impl Fields for SqliteRow {
    plain_fields!();
    fn opt_time(&self, column: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        let Some(text) = self.try_get::<Option<String>, _>(column)? else {
            return Ok(None);
        };
        django_sqlite_time(&text)
            .map(Some)
            .ok_or_else(|| sqlx::Error::ColumnDecode {
                index: column.to_owned(),
                source: format!("not a time: {text:?}").into(),
            })
    }
}

/// A time as Django's SQLite backend stores it: UTC, `YYYY-MM-DD HH:MM:SS[.ffffff]`, or with a
/// `T` and an offset when written by other tools.
fn django_sqlite_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .map(|t| t.and_utc())
        .ok()
        .or_else(|| DateTime::parse_from_rfc3339(text).ok().map(|t| t.to_utc()))
        .or_else(|| {
            DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%:z")
                .ok()
                .map(|t| t.to_utc())
        })
}

fn user(row: &impl Fields) -> Result<SourceUser, sqlx::Error> {
    Ok(SourceUser {
        id: row.int("id")?,
        username: row.text("username")?,
        email: row.text("email")?,
        first_name: row.text("first_name")?,
        last_name: row.text("last_name")?,
        user_type: row.text("user_type")?,
        is_staff: row.flag("is_staff")?,
        is_superuser: row.flag("is_superuser")?,
        is_active: row.flag("is_active")?,
        date_joined: row.time("date_joined")?,
        last_login: row.opt_time("last_login")?,
        password_hash: row.text("password")?,
    })
}

fn chat(row: &impl Fields) -> Result<SourceChat, sqlx::Error> {
    Ok(SourceChat {
        id: row.int("id")?,
        name: row.text("name")?,
        created_at: row.time("created_at")?,
        participants: Vec::new(),
    })
}

fn message(row: &impl Fields) -> Result<SourceMessage, sqlx::Error> {
    Ok(SourceMessage {
        id: row.int("id")?,
        chat_id: row.int("chat_id")?,
        sender_id: row.int("sender_id")?,
        content: row.text("content")?,
        timestamp: row.time("timestamp")?,
    })
}

fn ai_chat(row: &impl Fields) -> Result<SourceAiChat, sqlx::Error> {
    Ok(SourceAiChat {
        id: row.int("id")?,
        user_id: row.int("user_id")?,
        related_chat_id: row.opt_int("related_chat_id")?,
        title: row.text("title")?,
        system_prompt: row.text("system_prompt")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
    })
}

fn ai_message(row: &impl Fields) -> Result<SourceAiMessage, sqlx::Error> {
    Ok(SourceAiMessage {
        id: row.int("id")?,
        ai_chat_id: row.int("ai_chat_id")?,
        role: row.text("role")?,
        content: row.text("content")?,
        timestamp: row.time("timestamp")?,
        prompt_tokens: row.opt_int("prompt_tokens")?,
        completion_tokens: row.opt_int("completion_tokens")?,
        total_tokens: row.opt_int("total_tokens")?,
    })
}

/// Queries of the import, in the order their rows are wanted. Tokens are cast (PostgreSQL keeps
/// them as `integer`). Messages come per chat in (time, id) order, the order of their `seq`;
/// AI messages per AI chat in id order, the order of their branch.
const USERS: &str =
    "SELECT id, password, last_login, is_superuser, username, first_name, last_name, \
                     email, is_staff, is_active, date_joined, user_type FROM chat_user ORDER BY id";
const CHATS: &str = "SELECT id, name, created_at FROM chat_chat ORDER BY id";
const MESSAGES: &str = "SELECT id, content, timestamp, chat_id, sender_id FROM chat_message \
                        ORDER BY chat_id, timestamp, id";
/// A related chat the source no longer has reads as none, as Django's `SET_NULL` would have left it.
const AI_CHATS: &str = "SELECT a.id, a.title, a.system_prompt, a.created_at, a.updated_at, \
                        CASE WHEN EXISTS (SELECT 1 FROM chat_chat c WHERE c.id = a.related_chat_id) \
                        THEN a.related_chat_id END AS related_chat_id, a.user_id \
                        FROM ai_chat_aichat a ORDER BY a.id";
/// Rows that refer to what the source does not hold (possible only where its foreign keys were
/// not enforced, as in a SQLite file edited by hand): what each counts, and the count.
const ORPHANS: &[(&str, &str)] = &[
    (
        "messages whose chat or sender is missing",
        "SELECT COUNT(*) FROM chat_message m WHERE NOT EXISTS (SELECT 1 FROM chat_chat c WHERE \
         c.id = m.chat_id) OR NOT EXISTS (SELECT 1 FROM chat_user u WHERE u.id = m.sender_id)",
    ),
    (
        "participants whose chat or user is missing",
        "SELECT COUNT(*) FROM chat_chat_participants p WHERE NOT EXISTS (SELECT 1 FROM chat_chat c \
         WHERE c.id = p.chat_id) OR NOT EXISTS (SELECT 1 FROM chat_user u WHERE u.id = p.user_id)",
    ),
    (
        "AI chats whose user is missing",
        "SELECT COUNT(*) FROM ai_chat_aichat a WHERE NOT EXISTS (SELECT 1 FROM chat_user u WHERE \
         u.id = a.user_id)",
    ),
    (
        "AI messages whose AI chat is missing",
        "SELECT COUNT(*) FROM ai_chat_aimessage m WHERE NOT EXISTS (SELECT 1 FROM ai_chat_aichat a \
         WHERE a.id = m.ai_chat_id)",
    ),
];
const AI_MESSAGES: &str = "SELECT id, role, content, timestamp, CAST(prompt_tokens AS BIGINT) AS \
                           prompt_tokens, CAST(completion_tokens AS BIGINT) AS completion_tokens, \
                           CAST(total_tokens AS BIGINT) AS total_tokens, ai_chat_id \
                           FROM ai_chat_aimessage ORDER BY ai_chat_id, id";

/// The database to import from.
pub enum Source {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// How many rows each table of the source holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub users: u64,
    pub chats: u64,
    pub messages: u64,
    pub ai_chats: u64,
    pub ai_messages: u64,
}

impl Counts {
    /// Every row.
    pub fn total(&self) -> u64 {
        self.users + self.chats + self.messages + self.ai_chats + self.ai_messages
    }
}

/// What a query found missing: a table or a column (PostgreSQL's `undefined_table` and
/// `undefined_column`, SQLite's "no such …"); `None` for any other failure (a file that is no
/// database, a lost connection).
fn missing(err: &sqlx::Error) -> Option<String> {
    let sqlx::Error::Database(db) = err else {
        return None;
    };
    let message = db.message();
    let undefined = matches!(db.code().as_deref(), Some("42P01" | "42703"));
    (undefined || message.starts_with("no such table") || message.starts_with("no such column"))
        .then(|| message.to_owned())
}

fn unreadable(err: impl std::fmt::Display) -> ImportError {
    ImportError::Source(format!("cannot read the source database: {err}"))
}

/// `ROW`-decoding stream of `sql` on either database.
macro_rules! rows {
    ($source:expr, $sql:expr, $decode:expr) => {
        match $source {
            Source::Postgres(pool) => sqlx::query($sql)
                .fetch(pool)
                .map(|row| row.and_then(|row| $decode(&row)).map_err(unreadable))
                .boxed(),
            Source::Sqlite(pool) => sqlx::query($sql)
                .fetch(pool)
                .map(|row| row.and_then(|row| $decode(&row)).map_err(unreadable))
                .boxed(),
        }
    };
}

impl Source {
    /// Opens `url`: `sqlite:…` (or a path to a file) opened read-only, never created; anything
    /// else as a PostgreSQL URL. Errors: `Source` when it cannot be opened.
    pub async fn open(url: &str) -> Result<Source, ImportError> {
        let is_postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
        if is_postgres {
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(std::time::Duration::from_secs(10))
                .connect(url)
                .await
                .map_err(|e| {
                    ImportError::Source(format!("cannot open the source database: {e}"))
                })?;
            return Ok(Source::Postgres(pool));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        if !std::path::Path::new(path).is_file() {
            return Err(ImportError::Source(format!(
                "no SQLite database at {path:?}"
            )));
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .map_err(|e| ImportError::Source(format!("not a SQLite URL: {e}")))?
            .read_only(true)
            .create_if_missing(false);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .map_err(|e| ImportError::Source(format!("cannot open the source database: {e}")))?;
        Ok(Source::Sqlite(pool))
    }

    async fn scalar(&self, sql: &'static str) -> Result<i64, sqlx::Error> {
        match self {
            Source::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
            Source::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        }
    }

    async fn execute(&self, sql: &'static str) -> Result<(), sqlx::Error> {
        match self {
            Source::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(|_| ()),
            Source::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(|_| ()),
        }
    }

    /// Checks that the source is a database of MRM Chat 2 (Django's migration records of its
    /// `chat` app, and every table and column the import reads), and counts its rows.
    /// Errors: `Source`, naming what is missing.
    pub async fn check(&self) -> Result<Counts, ImportError> {
        let not_ours = |what: String| {
            ImportError::Source(format!(
                "not a database of MRM Chat 2: {what} (expected the tables its Django migrations create)"
            ))
        };
        let applied = self
            .scalar("SELECT COUNT(*) FROM django_migrations WHERE app = 'chat'")
            .await
            .map_err(|e| match missing(&e) {
                Some(_) => not_ours("no django_migrations table".into()),
                None => unreadable(e),
            })?;
        if applied == 0 {
            return Err(not_ours(
                "Django's migrations of its chat app were never applied".into(),
            ));
        }
        let mut rows = [0_u64; 6];
        for ((table, probe, count), rows) in TABLES.iter().zip(rows.iter_mut()) {
            self.execute(probe).await.map_err(|e| match missing(&e) {
                Some(what) => not_ours(format!("{table}: {what}")),
                None => unreadable(e),
            })?;
            let n = self.scalar(count).await.map_err(unreadable)?;
            *rows = u64::try_from(n).unwrap_or(0);
        }
        let [users, chats, _participants, messages, ai_chats, ai_messages] = rows;
        for (what, sql) in ORPHANS {
            let found = self.scalar(sql).await.map_err(unreadable)?;
            if found > 0 {
                return Err(ImportError::Source(format!(
                    "the source is inconsistent: {found} {what} (its foreign keys were not kept)"
                )));
            }
        }
        Ok(Counts {
            users,
            chats,
            messages,
            ai_chats,
            ai_messages,
        })
    }

    /// Every user, by id.
    pub fn users(&self) -> BoxStream<'_, Result<SourceUser, ImportError>> {
        rows!(self, USERS, user)
    }

    /// Every chat, by id (without participants: see [`Source::participants`]).
    pub fn chats(&self) -> BoxStream<'_, Result<SourceChat, ImportError>> {
        rows!(self, CHATS, chat)
    }

    /// Every message, per chat in (time, id) order.
    pub fn messages(&self) -> BoxStream<'_, Result<SourceMessage, ImportError>> {
        rows!(self, MESSAGES, message)
    }

    /// Every AI chat, by id.
    pub fn ai_chats(&self) -> BoxStream<'_, Result<SourceAiChat, ImportError>> {
        rows!(self, AI_CHATS, ai_chat)
    }

    /// Every AI message, per AI chat in id order.
    pub fn ai_messages(&self) -> BoxStream<'_, Result<SourceAiMessage, ImportError>> {
        rows!(self, AI_MESSAGES, ai_message)
    }

    /// The participants of `chats`, each chat's in the order they were added.
    pub async fn participants(&self, chats: &mut [SourceChat]) -> Result<(), ImportError> {
        if chats.is_empty() {
            return Ok(());
        }
        macro_rules! participants_of {
            ($pool:expr) => {{
                let mut q = sqlx::QueryBuilder::new(
                    "SELECT chat_id, user_id FROM chat_chat_participants WHERE chat_id IN (",
                );
                let mut list = q.separated(", ");
                for chat in chats.iter() {
                    list.push_bind(chat.id);
                }
                q.push(") ORDER BY id");
                q.build_query_as::<(i64, i64)>().fetch_all($pool).await
            }};
        }
        let pairs = match self {
            Source::Postgres(pool) => participants_of!(pool),
            Source::Sqlite(pool) => participants_of!(pool),
        }
        .map_err(unreadable)?;
        let mut index: HashMap<i64, usize> = HashMap::new();
        for (i, chat) in chats.iter().enumerate() {
            index.insert(chat.id, i);
        }
        for (chat_id, user_id) in pairs {
            if let Some(i) = index.get(&chat_id) {
                chats[*i].participants.push(user_id);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn django_sqlite_times_are_utc() {
        let t = django_sqlite_time("2026-11-30 12:12:22.248327").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-30T12:12:22.248327+00:00");
        let whole = django_sqlite_time("2026-11-30 12:12:22").unwrap();
        assert_eq!(whole.timestamp_subsec_micros(), 0);
        let offset = django_sqlite_time("2026-11-30T13:12:22+01:00").unwrap();
        assert_eq!(offset.to_rfc3339(), "2026-11-30T12:12:22+00:00");
        assert!(django_sqlite_time("yesterday").is_none());
    }
}
