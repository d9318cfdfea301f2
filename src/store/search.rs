//! Full-text search over the messages of the chats a user takes part in: SQLite's FTS5 index
//! (`messages_fts`, ranked by BM25) or PostgreSQL's `tsvector` column with its GIN index
//! (`messages.search`, ranked by `ts_rank_cd`), both kept in step with every write of a
//! message's content by the database itself (migration 0011).

use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;

use super::{
    messages::{message_columns, reply_join, Message},
    on_pool, Db,
};
use crate::domain::search::SearchQuery;

/// What narrows a search beside its words.
#[derive(Debug, Clone, Default)]
pub struct SearchFilter {
    /// Only this chat's messages.
    pub chat_id: Option<i64>,
    /// Only this sender's (a username as stored).
    pub sender: Option<String>,
    /// Only messages saved before this time.
    pub before: Option<DateTime<Utc>>,
    /// Only messages saved at or after this time.
    pub after: Option<DateTime<Utc>>,
}

/// Where a page of results ends: the last hit's score and id. Results come by score, highest
/// first, then by id, newest first, so the next page is what comes after this pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Position {
    pub score: f64,
    pub id: i64,
}

/// A message that matched, with its relevance (higher is better; comparable only within one
/// search).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Hit {
    #[sqlx(flatten)]
    pub message: Message,
    pub score: f64,
}

/// Up to `limit` messages matching `query` in the chats `viewer_id` takes part in now (none
/// deleted), most relevant first, the newest first among equals, after `from` when given.
pub async fn search(
    db: &Db,
    viewer_id: i64,
    query: &SearchQuery,
    filter: &SearchFilter,
    from: Option<Position>,
    limit: i64,
) -> sqlx::Result<Vec<Hit>> {
    // The score expression, the FROM clause with the match, per backend.
    let (score, head): (&str, String) = match db {
        Db::Sqlite(_) => (
            "(-bm25(messages_fts))",
            format!(
                "SELECT {}, (-bm25(messages_fts)) AS score FROM messages_fts \
                 JOIN messages m ON m.id = messages_fts.rowid \
                 JOIN users u ON u.id = m.sender_id {} \
                 JOIN chat_participants p ON p.chat_id = m.chat_id AND p.user_id = ",
                message_columns!(),
                reply_join!()
            ),
        ),
        Db::Postgres(_) => (
            "ts_rank_cd(m.search, q.query)::float8",
            format!(
                "SELECT {}, ts_rank_cd(m.search, q.query)::float8 AS score \
                 FROM messages m JOIN users u ON u.id = m.sender_id {} \
                 JOIN chat_participants p ON p.chat_id = m.chat_id AND p.user_id = ",
                message_columns!(),
                reply_join!()
            ),
        ),
    };
    on_pool!(db, pool => {
        let mut q = QueryBuilder::new(head.as_str());
        q.push_bind(viewer_id);
        if matches!(db, Db::Sqlite(_)) {
            q.push(" WHERE messages_fts MATCH ").push_bind(query.to_fts5());
        } else {
            q.push(" CROSS JOIN to_tsquery('mrm_search', ")
                .push_bind(query.to_tsquery())
                .push(") AS q(query) WHERE m.search @@ q.query");
        }
        q.push(" AND m.deleted_at IS NULL");
        if let Some(chat_id) = filter.chat_id {
            q.push(" AND m.chat_id = ").push_bind(chat_id);
        }
        if let Some(sender) = &filter.sender {
            q.push(" AND u.username = ").push_bind(sender.clone());
        }
        if let Some(before) = filter.before {
            q.push(" AND m.created_at < ").push_bind(before);
        }
        if let Some(after) = filter.after {
            q.push(" AND m.created_at >= ").push_bind(after);
        }
        if let Some(from) = from {
            q.push(" AND (")
                .push(score)
                .push(" < ")
                .push_bind(from.score)
                .push(" OR (")
                .push(score)
                .push(" = ")
                .push_bind(from.score)
                .push(" AND m.id < ")
                .push_bind(from.id)
                .push("))");
        }
        q.push(" ORDER BY score DESC, m.id DESC LIMIT ").push_bind(limit);
        q.build_query_as::<Hit>().persistent(false).fetch_all(pool).await
    })
}
