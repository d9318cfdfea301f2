//! `GET /api/search/`: full-text search over the messages of the caller's chats.

use axum::{
    extract::{RawQuery, State},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};

use super::{pagination::next_link, query::Query};
use crate::{
    auth::AuthUser,
    error::ApiResult,
    service::{
        search::{self, SearchRequest, MAX_LIMIT},
        FieldErrors,
    },
    state::AppState,
    store::search::{Position, SearchFilter},
    wire::{
        schemas::{BadRequest, Detail},
        views::SearchHitView,
    },
};

/// Hits per page when `limit` is not given.
const DEFAULT_LIMIT: i64 = 20;

/// Search.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/search", get(search_messages))
}

/// Where the next page starts, as the `cursor` parameter carries it: the window's newest id, a
/// dot, how many ranked hits came before.
fn encode_cursor(position: Position) -> String {
    format!("{}.{}", position.upto, position.offset)
}

fn decode_cursor(text: &str) -> Option<Position> {
    let (upto, offset) = text.trim().split_once('.')?;
    let upto = upto.parse::<i64>().ok().filter(|n| *n >= 0)?;
    let offset = offset.parse::<i64>().ok().filter(|n| *n >= 0)?;
    Some(Position { upto, offset })
}

/// Searches the messages of every chat the caller takes part in.
///
/// `q` takes words (all must appear), `"quoted phrases"`, prefixes (`net*`, at least two
/// characters) and exclusions (`-word`, `-"a phrase"`); case and diacritics never matter, and
/// punctuation separates words (`bob@example.com` is the phrase `bob example com`). A query
/// matching more than 2,000 of the caller's messages ranks the newest 2,000.
#[utoipa::path(get, path = "/api/search/", tag = "Messages", security(("session" = []), ("bearer" = [])), params(
        ("q" = String, Query, description = "What to search for: words, \"quoted phrases\", prefix*, -excluded (at most 500 characters, 20 parts)"),
        ("chat" = Option<i64>, Query, description = "Only this chat's messages", minimum = 0),
        ("sender" = Option<String>, Query, description = "Only messages sent by this username"),
        ("after" = Option<String>, Query, description = "Only messages sent at or after this date (`YYYY-MM-DD`, UTC) or RFC 3339 date and time"),
        ("before" = Option<String>, Query, description = "Only messages sent before this date (`YYYY-MM-DD`, UTC) or RFC 3339 date and time"),
        ("limit" = Option<i64>, Query, description = "Hits per page, 1 to 100 (default 20)", minimum = 1, maximum = 100),
        ("cursor" = Option<String>, Query, description = "Where the previous page ended, from its `Link` header"),
    ),
    responses(
        (status = 200, description = "Hits, most relevant first and the newest first among equals, each with a snippet (only the newest 2,000 matches are ranked)", body = Vec<SearchHitView>, headers(("Link" = String, description = "`<url>; rel=\"next\"` when more hits lie beyond this page"))),
        (status = 400, description = "Invalid input (`q` missing, empty, only exclusions, too long; a bad filter or cursor)", body = BadRequest),
        (status = 401, description = "Invalid bearer token", body = Detail),
        (status = 403, description = "Not authenticated, or a CSRF check failed", body = Detail),
        (status = 429, description = "Searching too fast (`MRM_SEARCHES_PER_MINUTE`); `Retry-After` says when to try again", body = Detail),
    ))]
async fn search_messages(
    State(state): State<AppState>,
    auth: AuthUser,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let query = Query::parse(raw.as_deref());
    let mut errors = FieldErrors::new();
    let q = query.text("q", &mut errors).unwrap_or_default().to_owned();
    let filter = SearchFilter {
        chat_id: query.non_negative("chat", &mut errors),
        sender: query
            .text("sender", &mut errors)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_owned),
        before: query.moment("before", &mut errors),
        after: query.moment("after", &mut errors),
    };
    let limit = query
        .integer("limit", Some(1), Some(MAX_LIMIT), &mut errors)
        .unwrap_or(DEFAULT_LIMIT);
    let from = match query.text("cursor", &mut errors) {
        None => None,
        Some(text) => {
            let position = decode_cursor(text);
            if position.is_none() {
                errors.add("cursor", "Invalid cursor.");
            }
            position
        }
    };
    if q.trim().is_empty() && !errors.has("q") {
        errors.add("q", "This field is required.");
    }
    errors.check()?;
    let request = SearchRequest {
        q,
        filter,
        from,
        limit,
    };
    let page = search::messages(&state, &auth.user, request).await?;
    let headers = match page.next {
        Some(next) => {
            let mut link = form_urlencoded::Serializer::new(String::new());
            for (name, value) in query.pairs() {
                if name != "cursor" {
                    link.append_pair(name, value);
                }
            }
            link.append_pair("cursor", &encode_cursor(next));
            next_link("/api/search/", &link.finish())
        }
        None => Default::default(),
    };
    Ok((headers, Json(page.hits)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_exactly() {
        for (upto, offset) in [(0, 0), (42, 20), (i64::MAX, 1_980)] {
            let position = Position { upto, offset };
            assert_eq!(decode_cursor(&encode_cursor(position)), Some(position));
        }
        for bad in ["", "x", "1", "1.-1", "-1.0", "zz.1", "1.2.3"] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }
}
