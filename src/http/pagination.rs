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

use crate::{
    error::{ApiError, FieldErrors},
    store::Window,
};

pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 500;

#[derive(Debug, Clone, Copy)]
pub struct Cursor {
    pub window: Window,
}

impl Cursor {
    /// Reads `limit`, `before` and `after` from a query string; other parameters are ignored.
    pub fn from_query(query: Option<&str>) -> Result<Self, ApiError> {
        let mut errors = FieldErrors::new();
        let mut limit = DEFAULT_LIMIT;
        let mut before = None;
        let mut after = None;
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match key.as_ref() {
                "limit" => match value.trim().parse::<i64>() {
                    Ok(n) if n < 1 => {
                        errors.add("limit", "Ensure this value is greater than or equal to 1.")
                    }
                    Ok(n) if n > MAX_LIMIT => errors.add(
                        "limit",
                        format!("Ensure this value is less than or equal to {MAX_LIMIT}."),
                    ),
                    Ok(n) => limit = n,
                    Err(_) => errors.add("limit", "A valid integer is required."),
                },
                "before" | "after" => match value.trim().parse::<i64>() {
                    Ok(n) if n >= 0 => {
                        if key == "before" {
                            before = Some(n)
                        } else {
                            after = Some(n)
                        }
                    }
                    _ => errors.add(&key, "A valid non-negative integer is required."),
                },
                _ => {}
            }
        }
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
        let mut headers = HeaderMap::new();
        let limit = self.window.limit as usize;
        if rows.len() <= limit {
            return (rows, headers);
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
        if let Ok(value) = HeaderValue::from_str(&format!("<{path}?{next}>; rel=\"next\"")) {
            headers.insert(header::LINK, value);
        }
        (rows, headers)
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
