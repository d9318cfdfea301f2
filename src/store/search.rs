//! Full-text search over the messages of the chats a user takes part in: SQLite's FTS5 index
//! (`messages_fts`, ranked by BM25) or PostgreSQL's `tsvector` column with its GIN index
//! (`messages.search`, ranked by `ts_rank_cd`), both kept in step with every write of a
//! message's content by the database itself (migrations 0011, and 0013 on SQLite).

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

/// Where the next page of results starts: within the window of matches ranked for the first
/// page (those with ids up to `upto`, the newest then), after the first `offset` of them. The
/// window is fixed by the first page, so messages sent since never shift the pages; ranks are
/// read by position, since scores can move a little as the index changes (BM25 weighs every
/// word by how many messages hold it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub upto: i64,
    pub offset: i64,
}

/// A message that matched, with its relevance (higher is better; comparable only within one
/// search).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Hit {
    #[sqlx(flatten)]
    pub message: Message,
    pub score: f64,
    /// The newest id of the ranked window (the `upto` of the next pages).
    pub newest: i64,
}

/// Most matches ranked per search: the newest this many the user may see. Ranking costs a
/// score per match, and finding the newest matches of a frequent word means reading past the
/// messages without it, so the window bounds both (`mrm-bench search`; figures in
/// `docs/PERFORMANCE.md`). The newest two thousand matches are what a search box is for; older
/// ones are found by narrowing the query, the chat, the sender or the dates.
pub const RANK_WINDOW: i64 = 2_000;

/// Most chats of a user written into a PostgreSQL search as constants.
const MAX_LISTED_CHATS: usize = 10_000;

/// Most chats a SQLite search names in its full-text query (see [`search`]).
const MAX_TAGGED_CHATS: usize = 32;

/// Up to `limit` messages matching `query` in the chats `viewer_id` takes part in now (none
/// deleted), most relevant first, the newest first among equals, from `from` when given.
/// Only the newest [`RANK_WINDOW`] matches are ranked.
///
/// Both backends take the same two steps: the matches the user may see, newest first, up to
/// the window (`recent`); then those, joined with what a message view needs, by score.
pub async fn search(
    db: &Db,
    viewer_id: i64,
    query: &SearchQuery,
    filter: &SearchFilter,
    from: Option<Position>,
    limit: i64,
) -> sqlx::Result<Vec<Hit>> {
    let tsquery = query.to_tsquery();
    // The user's chats with their last positions (about how many messages each holds).
    let mine: Vec<(i64, i64)> = on_pool!(db, pool => sqlx::query_as(
        "SELECT c.id, c.last_seq FROM chat_participants p JOIN chats c ON c.id = p.chat_id \
         WHERE p.user_id = $1 ORDER BY c.id",
    )
    .bind(viewer_id)
    .fetch_all(pool)
    .await)?;
    if mine.is_empty()
        || filter
            .chat_id
            .is_some_and(|chat| !mine.iter().any(|(id, _)| *id == chat))
    {
        return Ok(Vec::new());
    }
    // PostgreSQL is given the user's chats as constants (see below), up to a bound on the
    // statement's size; past it, the same set as a subquery.
    let chats: Option<Vec<i64>> =
        (mine.len() <= MAX_LISTED_CHATS).then(|| mine.iter().map(|(id, _)| *id).collect());
    // SQLite's index also holds each message's chat: a search in one chat, or by a user whose
    // few chats hold a small part of all messages, names them in the full-text query, which
    // then skips through the query's matches to those chats' messages instead of reading the
    // matches of every chat newest first until it has found enough of the user's.
    let tagged: Vec<i64> = match (db, filter.chat_id) {
        (Db::Postgres(_), _) => Vec::new(),
        (Db::Sqlite(_), Some(chat)) => vec![chat],
        (Db::Sqlite(_), None) if mine.len() <= MAX_TAGGED_CHATS => {
            let theirs: i64 = mine.iter().map(|(_, last)| *last).sum();
            let all: i64 = on_pool!(db, pool => sqlx::query_scalar(
                "SELECT COALESCE(MAX(id), 0) FROM messages",
            )
            .fetch_one(pool)
            .await)?;
            if theirs.saturating_mul(4) < all {
                mine.iter().map(|(id, _)| *id).collect()
            } else {
                Vec::new()
            }
        }
        (Db::Sqlite(_), None) => Vec::new(),
    };
    on_pool!(db, pool => {
        let mut q = QueryBuilder::new("WITH recent AS MATERIALIZED (");
        if matches!(db, Db::Sqlite(_)) {
            // CROSS JOIN keeps the index as SQLite's outer loop: run once, it yields the
            // matches newest first; as an inner loop it would run the whole full-text query
            // once per message of the user's chats.
            // The chat column weighs nothing in the score.
            q.push(
                "SELECT messages_fts.rowid AS id, (-bm25(messages_fts, 1.0, 0.0)) AS score \
                 FROM messages_fts CROSS JOIN messages m ON m.id = messages_fts.rowid \
                 JOIN users u ON u.id = m.sender_id \
                 JOIN chat_participants p ON p.chat_id = m.chat_id AND p.user_id = ",
            );
            q.push_bind(viewer_id);
            q.push(" WHERE messages_fts MATCH ")
                .push_bind(query.to_fts5(&tagged));
        } else {
            // The query is written out where it is used (not taken from a FROM item), and the
            // user's chats as constants, so the planner sees the query's words and the chats'
            // sizes: a user of one small chat reads that chat, one of every chat the index.
            // Scores are computed after the window is cut, for its rows only.
            q.push("SELECT m.id FROM messages m JOIN users u ON u.id = m.sender_id WHERE ");
            match &chats {
                Some(ids) => {
                    q.push("m.chat_id IN (");
                    let mut list = q.separated(", ");
                    for id in ids {
                        list.push_bind(*id);
                    }
                    q.push(")");
                }
                None => {
                    q.push(
                        "m.chat_id IN (SELECT chat_id FROM chat_participants WHERE user_id = ",
                    )
                    .push_bind(viewer_id)
                    .push(")");
                }
            }
            q.push(" AND m.search @@ to_tsquery('mrm_search', ")
                .push_bind(tsquery.clone())
                .push(")");
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
            q.push(match db {
                Db::Sqlite(_) => " AND messages_fts.rowid <= ",
                Db::Postgres(_) => " AND m.id <= ",
            })
            .push_bind(from.upto);
        }
        // Newest first: on SQLite in the index's own rowid order, read backwards, no sort.
        let newest = match db {
            Db::Sqlite(_) => " ORDER BY messages_fts.rowid DESC LIMIT ",
            Db::Postgres(_) => " ORDER BY m.id DESC LIMIT ",
        };
        q.push(newest).push_bind(RANK_WINDOW);
        q.push(") SELECT ");
        q.push(message_columns!());
        // On SQLite, CROSS JOIN again keeps the few ranked matches as the outer loop.
        match db {
            Db::Sqlite(_) => q.push(", recent.score AS score"),
            Db::Postgres(_) => q
                .push(", ts_rank_cd(m.search, to_tsquery('mrm_search', ")
                .push_bind(tsquery.clone())
                .push("))::float8 AS score"),
        };
        q.push(", (SELECT MAX(id) FROM recent) AS newest FROM recent ");
        q.push(match db {
            Db::Sqlite(_) => "CROSS JOIN",
            Db::Postgres(_) => "JOIN",
        });
        q.push(" messages m ON m.id = recent.id JOIN users u ON u.id = m.sender_id ");
        q.push(reply_join!());
        q.push(" ORDER BY score DESC, m.id DESC LIMIT ").push_bind(limit);
        q.push(" OFFSET ").push_bind(from.map_or(0, |f| f.offset));
        q.build_query_as::<Hit>().persistent(false).fetch_all(pool).await
    })
}
