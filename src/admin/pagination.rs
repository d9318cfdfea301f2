//! Numbered pages for admin lists: `?page=N`, a fixed page size, and previous/next links that
//! keep the list's search and filters.

use super::{AdminError, AdminResult, Params};

/// Items per page in every admin list.
pub const PER_PAGE: i64 = 50;

/// Where a page sits in a list and the links around it.
#[derive(Debug, Clone)]
pub struct Pager {
    pub page: i64,
    pub pages: i64,
    pub total: i64,
    /// 1-based positions of the first and last item shown (0 and 0 when there are none).
    pub first_item: i64,
    pub last_item: i64,
    /// Link to the previous page; `None` on the first.
    pub prev: Option<String>,
    /// Link to the next page; `None` on the last.
    pub next: Option<String>,
    /// Link to page 1, only when it is not already next to this one.
    pub first: Option<String>,
    /// Link to the last page, only when it is not already next to this one.
    pub last: Option<String>,
}

/// The page asked for: 1 when absent; a page that is not a positive number does not exist.
pub fn requested_page(params: &Params) -> AdminResult<i64> {
    match params.get("page").map(str::trim) {
        None | Some("") => Ok(1),
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(AdminError::NotFound),
        },
    }
}

impl Pager {
    /// Page `page` of `total` items listed at `path`, whose links repeat `keep` (blank values
    /// are left out). A page past the last one does not exist; an empty list has one page.
    pub fn new(page: i64, total: i64, path: &str, keep: &[(&str, String)]) -> AdminResult<Pager> {
        let pages = ((total + PER_PAGE - 1) / PER_PAGE).max(1);
        if page > pages {
            return Err(AdminError::NotFound);
        }
        let link = |n: i64| page_link(path, keep, n);
        let shown = if total == 0 {
            (0, 0)
        } else {
            let first = (page - 1) * PER_PAGE + 1;
            (first, (first + PER_PAGE - 1).min(total))
        };
        Ok(Pager {
            page,
            pages,
            total,
            first_item: shown.0,
            last_item: shown.1,
            prev: (page > 1).then(|| link(page - 1)),
            next: (page < pages).then(|| link(page + 1)),
            first: (page > 2).then(|| link(1)),
            last: (page + 1 < pages).then(|| link(pages)),
        })
    }

    /// Rows to skip before this page, for SQL `OFFSET`.
    pub fn offset(&self) -> i64 {
        (self.page - 1) * PER_PAGE
    }

    /// Rows on a page, for SQL `LIMIT`: [`PER_PAGE`].
    pub fn limit(&self) -> i64 {
        PER_PAGE
    }

    /// True when the list has more than one page, so page links are worth showing.
    pub fn is_paged(&self) -> bool {
        self.pages > 1
    }
}

/// `path` with the kept parameters and, past the first page, `page`.
pub fn page_link(path: &str, keep: &[(&str, String)], page: i64) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in keep {
        if !value.is_empty() {
            query.append_pair(name, value);
        }
    }
    if page > 1 {
        query.append_pair("page", &page.to_string());
    }
    let query = query.finish();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_keep_filters_and_stop_at_the_ends() {
        let keep = [("q", "a b&c".to_owned()), ("staff", String::new())];
        let pager = Pager::new(2, 120, "/admin/users/", &keep).unwrap();
        assert_eq!(pager.pages, 3);
        assert_eq!((pager.first_item, pager.last_item), (51, 100));
        assert_eq!(pager.prev.as_deref(), Some("/admin/users/?q=a+b%26c"));
        assert_eq!(
            pager.next.as_deref(),
            Some("/admin/users/?q=a+b%26c&page=3")
        );
        assert_eq!(pager.offset(), 50);
        let last = Pager::new(3, 120, "/admin/users/", &keep).unwrap();
        assert_eq!((last.first_item, last.last_item), (101, 120));
        assert!(last.next.is_none());
        assert!(Pager::new(4, 120, "/admin/users/", &keep).is_err());
        let empty = Pager::new(1, 0, "/admin/users/", &[]).unwrap();
        assert_eq!((empty.pages, empty.first_item, empty.last_item), (1, 0, 0));
        assert!(empty.prev.is_none() && empty.next.is_none());
    }

    #[test]
    fn only_positive_page_numbers_exist() {
        assert_eq!(requested_page(&Params::parse("")).unwrap(), 1);
        assert_eq!(requested_page(&Params::parse("page=3")).unwrap(), 3);
        for bad in ["page=0", "page=-1", "page=x", "page=1.5"] {
            assert!(requested_page(&Params::parse(bad)).is_err(), "{bad}");
        }
    }
}
