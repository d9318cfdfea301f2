//! Bounded lists. Every list endpoint still answers a bare JSON array, but reads a window of the
//! id-ordered collection: `?limit=` (default 100, at most 500), `?before=<id>` and `?after=<id>`.
//! With no `after`, a page holds the newest items below `before`; with `after`, the oldest above
//! it. Arrays are always oldest first. When more items lie beyond the page in its direction, a
//! `Link: <…>; rel="next"` header gives the URL of the next page.

use axum::{
    http::{header, HeaderMap, HeaderValue},
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;

use super::query::Query;
use crate::{error::ApiError, service::FieldErrors, store::Window};

/// Items in a page when `limit` is not given.
pub const DEFAULT_LIMIT: i64 = 100;
/// The largest `limit` a client may ask for.
pub const MAX_LIMIT: i64 = 500;

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
        let limit = query
            .integer("limit", Some(1), Some(MAX_LIMIT), &mut errors)
            .unwrap_or(DEFAULT_LIMIT);
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

    /// Trims the probe's extra row off `rows` (ascending) and, when there was one, returns the
    /// `Link` header for the next page of `path`.
    pub fn finish<T>(
        &self,
        mut rows: Vec<T>,
        id: impl Fn(&T) -> i64,
        path: &str,
    ) -> (Vec<T>, HeaderMap) {
        let limit = self.window.limit as usize;
        if rows.len() <= limit {
            return (rows, HeaderMap::new());
        }
        let next = if self.window.from_newest() {
            rows.remove(0);
            let oldest = rows.first().map(&id).unwrap_or_default();
            let mut query = format!("limit={limit}&before={oldest}");
            if let Some(after) = self.window.after {
                query.push_str(&format!("&after={after}"));
            }
            query
        } else {
            rows.truncate(limit);
            let newest = rows.last().map(&id).unwrap_or_default();
            let mut query = format!("limit={limit}&after={newest}");
            if let Some(before) = self.window.before {
                query.push_str(&format!("&before={before}"));
            }
            query
        };
        (rows, next_link(path, &next))
    }
}

impl Cursor {
    /// `finish`, then the page as a JSON array of views with its `Link` header.
    pub fn respond<T, V: Serialize>(
        &self,
        rows: Vec<T>,
        id: impl Fn(&T) -> i64,
        path: &str,
        view: impl FnMut(T) -> V,
    ) -> Response {
        let (rows, headers) = self.finish(rows, id, path);
        let body: Vec<V> = rows.into_iter().map(view).collect();
        (headers, Json(body)).into_response()
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

    #[test]
    fn next_link_continues_in_the_pages_direction() {
        let newest = Cursor::from_query(Some("limit=2")).unwrap();
        let (rows, headers) = newest.finish(vec![1, 2, 3], |x| *x, "/p/");
        assert_eq!(rows, vec![2, 3]);
        assert_eq!(
            headers[header::LINK],
            "</p/?limit=2&before=2>; rel=\"next\""
        );

        let forward = Cursor::from_query(Some("limit=2&after=0")).unwrap();
        let (rows, headers) = forward.finish(vec![1, 2, 3], |x| *x, "/p/");
        assert_eq!(rows, vec![1, 2]);
        assert_eq!(headers[header::LINK], "</p/?limit=2&after=2>; rel=\"next\"");

        let (rows, headers) = forward.finish(vec![1, 2], |x| *x, "/p/");
        assert_eq!(rows, vec![1, 2]);
        assert!(headers.is_empty());
    }
}
