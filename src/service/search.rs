//! Searching the messages of the chats a user takes part in.

use crate::{
    domain::{search::SearchQuery, username},
    state::AppState,
    store::{
        self,
        search::{Position, SearchFilter},
        users::User,
    },
    wire::views::{SearchHitView, Viewer},
};

use super::{messaging::MessageViews, FieldErrors, ServiceError, ServiceResult};

/// Most hits in one page.
pub const MAX_LIMIT: i64 = 100;

/// A search as a client asked for it.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    /// What the user typed ([`SearchQuery::parse`] says what it may hold).
    pub q: String,
    /// The chat, sender (a username, looked up as stored ones are normalized) and dates.
    pub filter: SearchFilter,
    /// Where this page starts (from the previous page's answer); the first page when `None`.
    pub from: Option<Position>,
    /// Hits per page, 1 to [`MAX_LIMIT`].
    pub limit: i64,
}

/// One page of hits, and where the next one starts (none when this is the last).
#[derive(Debug)]
pub struct SearchPage {
    pub hits: Vec<SearchHitView>,
    pub next: Option<Position>,
}

/// Searches the messages of the chats `user` takes part in now: most relevant first, the
/// newest first among equals, each with a highlighted snippet. Deleted messages are never
/// found; an edit is found by its new words at once. Counted against the user's search rate
/// limit (`MRM_SEARCHES_PER_MINUTE`) once the query is valid. Errors: `Validation` (`q`),
/// `RateLimited`.
pub async fn messages(
    state: &AppState,
    user: &User,
    mut request: SearchRequest,
) -> ServiceResult<SearchPage> {
    let query = SearchQuery::parse(&request.q)
        .map_err(|message| ServiceError::Validation(FieldErrors::single("q", message)))?;
    state.limits.search(user.id).await?;
    request.filter.sender = request.filter.sender.map(|s| username::normalize(s.trim()));
    let limit = request.limit.clamp(1, MAX_LIMIT);
    let mut hits = store::search::search(
        &state.db,
        user.id,
        &query,
        &request.filter,
        request.from,
        limit + 1,
    )
    .await?;
    let next = if hits.len() as i64 > limit {
        hits.truncate(limit as usize);
        let upto = request
            .from
            .map_or_else(|| hits.first().map_or(0, |h| h.newest), |f| f.upto);
        let offset = request.from.map_or(0, |f| f.offset) + limit;
        Some(Position { upto, offset })
    } else {
        None
    };
    let snippets: Vec<String> = hits
        .iter()
        .map(|hit| crate::domain::search::snippet(&hit.message.content, &query))
        .collect();
    let messages: Vec<_> = hits.into_iter().map(|hit| hit.message).collect();
    let mut views = MessageViews::of(&state.db, &messages, Viewer::of(user)).await?;
    let hits = messages
        .into_iter()
        .zip(snippets)
        .map(|(message, snippet)| SearchHitView {
            message: views.view(message),
            snippet,
        })
        .collect();
    Ok(SearchPage { hits, next })
}
