//! The one query-string reader. Every endpoint that takes query parameters reads them through
//! [`Query`], whose typed readers record the contract's field errors (Django REST Framework's
//! wording) instead of failing on the first bad value. Unknown parameters are ignored. When a
//! parameter is repeated, every value is checked and the last valid one is used.

use chrono::{DateTime, Datelike, NaiveDate, SubsecRound, Utc};

use crate::service::FieldErrors;

/// The decoded `name=value` pairs of a query string, in order.
#[derive(Debug, Default, Clone)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Decodes a raw query string (`application/x-www-form-urlencoded`); `None` is empty.
    pub fn parse(raw: Option<&str>) -> Self {
        Query(
            form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// Every pair, in order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Every value of `name`, in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs()
            .filter(move |(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// An integer (surrounding spaces allowed) within `min..=max` when given, as DRF's
    /// `IntegerField(min_value, max_value)` checks it: `A valid integer is required.`,
    /// `Ensure this value is greater than or equal to {min}.`, `… less than or equal to {max}.`
    pub fn integer(
        &self,
        name: &str,
        min: Option<i64>,
        max: Option<i64>,
        errors: &mut FieldErrors,
    ) -> Option<i64> {
        let mut found = None;
        for value in self.values(name) {
            match value.trim().parse::<i64>() {
                Ok(n) if min.is_some_and(|min| n < min) => errors.add(
                    name,
                    format!(
                        "Ensure this value is greater than or equal to {}.",
                        min.unwrap_or_default()
                    ),
                ),
                Ok(n) if max.is_some_and(|max| n > max) => errors.add(
                    name,
                    format!(
                        "Ensure this value is less than or equal to {}.",
                        max.unwrap_or_default()
                    ),
                ),
                Ok(n) => found = Some(n),
                Err(_) => errors.add(name, "A valid integer is required."),
            }
        }
        found
    }

    /// A non-negative integer (an id or a position): `A valid non-negative integer is required.`
    pub fn non_negative(&self, name: &str, errors: &mut FieldErrors) -> Option<i64> {
        let mut found = None;
        for value in self.values(name) {
            match parse_non_negative(value) {
                Some(n) => found = Some(n),
                None => errors.add(name, "A valid non-negative integer is required."),
            }
        }
        found
    }

    /// The last value of `name`, if given. One holding NUL records
    /// [`crate::domain::text::NUL_REFUSED`] and reads as `None`, as body fields do: no backend
    /// could compare it with stored text.
    pub fn text<'a>(&'a self, name: &'a str, errors: &mut FieldErrors) -> Option<&'a str> {
        let value = self.values(name).last()?;
        if crate::domain::text::has_nul(value) {
            errors.add(name, crate::domain::text::NUL_REFUSED);
            return None;
        }
        Some(value)
    }

    /// A moment: a date `YYYY-MM-DD` (its start, in UTC) or an RFC 3339 date and time
    /// (`2026-01-05T10:20:30Z`, any offset), in the years 1 to 9999: `Enter a date as YYYY-MM-DD, or a date and time
    /// as in 2026-01-05T10:20:30Z.`
    pub fn moment(&self, name: &str, errors: &mut FieldErrors) -> Option<DateTime<Utc>> {
        let mut found = None;
        for value in self.values(name) {
            let value = value.trim();
            let moment = NaiveDate::parse_from_str(value, "%Y-%m-%d")
                .ok()
                .and_then(|date| date.and_hms_opt(0, 0, 0))
                .map(|start| start.and_utc())
                .or_else(|| {
                    DateTime::parse_from_rfc3339(value)
                        .ok()
                        .map(|t| t.with_timezone(&Utc))
                });
            // Years 1 to 9999 only: both backends store and compare those alike.
            // Microseconds, as both backends store times.
            let moment = moment.map(|m| m.trunc_subsecs(6));
            match moment.filter(|m| (1..=9999).contains(&m.year())) {
                Some(moment) => found = Some(moment),
                None => errors.add(
                    name,
                    "Enter a date as YYYY-MM-DD, or a date and time as in 2026-01-05T10:20:30Z.",
                ),
            }
        }
        found
    }

    /// A calendar date written `YYYY-MM-DD`: `Enter a date as YYYY-MM-DD.`
    pub fn date(&self, name: &str, errors: &mut FieldErrors) -> Option<NaiveDate> {
        let mut found = None;
        for value in self.values(name) {
            match NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d") {
                Ok(date) => found = Some(date),
                Err(_) => errors.add(name, "Enter a date as YYYY-MM-DD."),
            }
        }
        found
    }
}

/// A non-negative integer, surrounding spaces allowed.
pub fn parse_non_negative(value: &str) -> Option<i64> {
    value.trim().parse::<i64>().ok().filter(|n| *n >= 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_is_checked_and_the_last_valid_one_wins() {
        let query = Query::parse(Some("n=+3+&n=x&n=9&d=2026-01-05&u=-2&skip=1"));
        let mut errors = FieldErrors::new();
        assert_eq!(query.integer("n", Some(1), Some(5), &mut errors), Some(3));
        assert_eq!(
            errors.fields()["n"],
            [
                "A valid integer is required.",
                "Ensure this value is less than or equal to 5."
            ]
        );
        let mut errors = FieldErrors::new();
        assert_eq!(query.non_negative("u", &mut errors), None);
        assert!(errors.has("u"));
        assert_eq!(
            query.date("d", &mut errors),
            NaiveDate::from_ymd_opt(2026, 1, 5)
        );
        assert_eq!(query.integer("absent", None, None, &mut errors), None);
        assert!(!errors.has("absent") && !errors.has("d"));
    }
}
