//! Bounded lists. Every list endpoint still answers a bare JSON array, but reads a window of the
//! id-ordered collection: `?limit=` (default 100, at most 500), `?before=<id>` and `?after=<id>`.
//! With no `after`, a page holds the newest items below `before`; with `after`, the oldest above
//! it. Arrays are always oldest first. When more items lie beyond the page in its direction, a
//! `Link: <…>; rel="next"` header gives the URL of the next page.
//!
//! A page is bounded in bytes too (`MRM_PAGE_BYTES`): once its JSON would pass the budget it ends
//! early, with fewer items than `limit` and a `Link` that continues right after its last item,
//! so following the links still lists every item once. A page always holds at least one item,
//! however large.

use axum::{
    http::{header, HeaderMap, HeaderValue},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use super::query::Query;
use crate::{
    error::{ApiError, ApiResult},
    service::FieldErrors,
    store::Window,
};

/// Items in a page when `limit` is not given.
pub const DEFAULT_LIMIT: i64 = 100;
/// The largest `limit` a client may ask for.
pub const MAX_LIMIT: i64 = 500;

/// Reads `limit` (1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`]), as every list does.
pub fn limit(query: &Query, errors: &mut FieldErrors) -> i64 {
    query
        .integer("limit", Some(1), Some(MAX_LIMIT), errors)
        .unwrap_or(DEFAULT_LIMIT)
}

/// The `Link: <path?query>; rel="next"` header (RFC 8288) that points at the next page.
pub fn next_link(path: &str, query: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&format!("<{path}?{query}>; rel=\"next\"")) {
        headers.insert(header::LINK, value);
    }
    headers
}

/// A page request over an id-ordered collection: `limit`, `before`, `after`.
#[derive(Debug, Clone, Copy)]
pub struct Cursor {
    /// The page asked for; its `limit` is the page size (the read is one row longer:
    /// [`Cursor::probe`]).
    pub window: Window,
}

impl Cursor {
    /// Reads `limit`, `before` and `after` from a query string; other parameters are ignored.
    pub fn from_query(query: Option<&str>) -> Result<Self, ApiError> {
        let query = Query::parse(query);
        let mut errors = FieldErrors::new();
        let limit = limit(&query, &mut errors);
        let before = query.non_negative("before", &mut errors);
        let after = query.non_negative("after", &mut errors);
        errors.check()?;
        Ok(Cursor {
            window: Window {
                after,
                before,
                limit,
            },
        })
    }

    /// The window to read: one row more than the page, to learn whether another page follows.
    pub fn probe(&self) -> Window {
        Window {
            limit: self.window.limit + 1,
            ..self.window
        }
    }
}

impl Cursor {
    /// The page as a JSON array of views with its `Link` header: `rows` (ascending, as read
    /// with [`Cursor::probe`]) are taken from the window's starting end until the page holds
    /// `limit` of them or the next would take its JSON past `budget` bytes.
    pub fn respond<T, V: Serialize>(
        &self,
        rows: Vec<T>,
        id: impl Fn(&T) -> i64,
        path: &str,
        budget: usize,
        mut view: impl FnMut(T) -> V,
    ) -> ApiResult<Response> {
        let mut page = self.page(budget);
        for row in self.scan(rows) {
            if !page.push(id(&row), || view(row))? {
                break;
            }
        }
        Ok(page.respond(path))
    }

    /// An empty page of this window, to fill with [`CursorPage::push`] in scan order.
    pub fn page(&self, budget: usize) -> CursorPage {
        CursorPage {
            cursor: *self,
            items: JsonPage::new(self.window.limit as usize, budget),
            boundary: None,
        }
    }

    /// Ascending `rows` in the order the window reads them: from the newest down when it has no
    /// `after`, from the oldest up otherwise.
    pub fn scan<T>(&self, mut rows: Vec<T>) -> std::vec::IntoIter<T> {
        if self.window.from_newest() {
            rows.reverse();
        }
        rows.into_iter()
    }
}

/// A page of an id-ordered list being filled from its window's starting end.
pub struct CursorPage {
    cursor: Cursor,
    items: JsonPage,
    /// The id of the last item taken, where the next page starts.
    boundary: Option<i64>,
}

impl CursorPage {
    /// Takes the next item in scan order, as [`JsonPage::push`] does.
    pub fn push<V: Serialize>(&mut self, id: i64, view: impl FnOnce() -> V) -> ApiResult<bool> {
        let taken = self.items.push(view)?;
        if taken {
            self.boundary = Some(id);
        }
        Ok(taken)
    }

    /// The array, oldest first, with the `Link` to the next page of `path` when the page ended
    /// before its window did.
    pub fn respond(self, path: &str) -> Response {
        let window = self.cursor.window;
        let headers = match self.boundary.filter(|_| self.items.ended_early()) {
            None => HeaderMap::new(),
            Some(last) => {
                let limit = window.limit;
                let query = if window.from_newest() {
                    let mut query = format!("limit={limit}&before={last}");
                    if let Some(after) = window.after {
                        query.push_str(&format!("&after={after}"));
                    }
                    query
                } else {
                    let mut query = format!("limit={limit}&after={last}");
                    if let Some(before) = window.before {
                        query.push_str(&format!("&before={before}"));
                    }
                    query
                };
                next_link(path, &query)
            }
        };
        self.items.respond(headers, window.from_newest())
    }
}

/// A JSON array built item by item, bounded by a count and by a size in bytes, each item
/// serialised once as it is added.
pub struct JsonPage {
    limit: usize,
    budget: usize,
    items: Vec<Vec<u8>>,
    bytes: usize,
    ended_early: bool,
}

impl JsonPage {
    /// An empty page of at most `limit` items and `budget` bytes.
    pub fn new(limit: usize, budget: usize) -> Self {
        Self {
            limit,
            budget,
            items: Vec::new(),
            bytes: 2,
            ended_early: false,
        }
    }

    /// Adds the next item, unless the page is complete: it holds `limit` items, or this item
    /// would take it past the budget (the first item is always taken, whatever its size). Once
    /// one is refused the page is closed (every later push is refused too), so a page is always
    /// a contiguous run of the list. `view` runs only when there is room by count.
    /// Errors: `Internal` if the view cannot be serialised.
    pub fn push<V: Serialize>(&mut self, view: impl FnOnce() -> V) -> ApiResult<bool> {
        if self.ended_early || self.items.len() >= self.limit {
            self.ended_early = true;
            return Ok(false);
        }
        let json = serde_json::to_vec(&view()).map_err(anyhow::Error::from)?;
        let separator = usize::from(!self.items.is_empty());
        let grown = self.bytes + separator + json.len();
        if !self.items.is_empty() && grown > self.budget {
            self.ended_early = true;
            return Ok(false);
        }
        self.bytes = grown;
        self.items.push(json);
        Ok(true)
    }

    /// Whether an item was refused: more lie beyond this page.
    pub fn ended_early(&self) -> bool {
        self.ended_early
    }

    /// The JSON array (items in the order added, or reversed) with `headers`.
    pub fn respond(mut self, headers: HeaderMap, reversed: bool) -> Response {
        if reversed {
            self.items.reverse();
        }
        let mut body = Vec::with_capacity(self.bytes);
        body.push(b'[');
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(item);
        }
        body.push(b']');
        let content_type = [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )];
        (headers, content_type, body).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let c = Cursor::from_query(None).unwrap();
        assert_eq!(c.window.limit, DEFAULT_LIMIT);
        assert!(c.window.from_newest());
        assert!(Cursor::from_query(Some("limit=501")).is_err());
        assert!(Cursor::from_query(Some("limit=0")).is_err());
        assert!(Cursor::from_query(Some("limit=x")).is_err());
        assert!(Cursor::from_query(Some("before=-1")).is_err());
        let c = Cursor::from_query(Some("limit=500&after=7&before=9")).unwrap();
        assert_eq!(
            (c.window.limit, c.window.after, c.window.before),
            (500, Some(7), Some(9))
        );
    }

    /// The ids a page holds, in the array's order, and its `Link`.
    fn page_of(cursor: &Cursor, rows: Vec<i64>, budget: usize) -> (Vec<i64>, Option<String>) {
        let response = cursor.respond(rows, |x| *x, "/p/", budget, |x| x).unwrap();
        let link = response
            .headers()
            .get(header::LINK)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.into_body();
        let bytes = futures_util::FutureExt::now_or_never(axum::body::to_bytes(body, usize::MAX))
            .unwrap()
            .unwrap();
        (serde_json::from_slice(&bytes).unwrap(), link)
    }

    #[test]
    fn next_link_continues_in_the_pages_direction() {
        let newest = Cursor::from_query(Some("limit=2")).unwrap();
        let (rows, link) = page_of(&newest, vec![1, 2, 3], usize::MAX);
        assert_eq!(rows, vec![2, 3]);
        assert_eq!(link.unwrap(), "</p/?limit=2&before=2>; rel=\"next\"");

        let forward = Cursor::from_query(Some("limit=2&after=0")).unwrap();
        let (rows, link) = page_of(&forward, vec![1, 2, 3], usize::MAX);
        assert_eq!(rows, vec![1, 2]);
        assert_eq!(link.unwrap(), "</p/?limit=2&after=2>; rel=\"next\"");

        let (rows, link) = page_of(&forward, vec![1, 2], usize::MAX);
        assert_eq!(rows, vec![1, 2]);
        assert!(link.is_none());
    }

    #[test]
    fn the_byte_budget_ends_a_page_early_where_the_next_begins() {
        // `[100,101]` is 9 bytes: a third item would make 13.
        let rows = vec![100, 101, 102, 103];
        let newest = Cursor::from_query(Some("limit=10")).unwrap();
        let (page, link) = page_of(&newest, rows.clone(), 12);
        assert_eq!(page, vec![102, 103]);
        assert_eq!(link.unwrap(), "</p/?limit=10&before=102>; rel=\"next\"");

        let forward = Cursor::from_query(Some("limit=10&after=99&before=200")).unwrap();
        let (page, link) = page_of(&forward, rows.clone(), 12);
        assert_eq!(page, vec![100, 101]);
        assert_eq!(
            link.unwrap(),
            "</p/?limit=10&after=101&before=200>; rel=\"next\""
        );

        // The first item is taken whatever its size; the page then ends.
        let (page, link) = page_of(&forward, rows, 1);
        assert_eq!(page, vec![100]);
        assert!(link.unwrap().contains("after=100"));
    }
}
