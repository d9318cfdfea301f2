//! Reading what a page was asked: query parameters, path ids and form bodies, with failures that
//! render as admin pages rather than the API's JSON. Both readers refuse NUL once, for every
//! field (see [`text::NUL_REFUSED`]): a query string holding one is a 400 page, a form field
//! holding one is reported next to that field and reads as absent.

use std::collections::BTreeMap;

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, Request},
    http::{header, request::Parts},
};

use super::AdminError;
use crate::{
    domain::{text, username},
    service::FieldErrors,
};

/// Messages about a form's fields, shown next to them; `__all__` holds those about the whole form.
#[derive(Debug, Default, Clone)]
pub struct Errors(BTreeMap<String, Vec<String>>);

impl Errors {
    /// Adds a message about `field` (`__all__` for the whole form).
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0
            .entry(field.to_owned())
            .or_default()
            .push(message.into());
    }

    /// The messages about `field` (none when it is fine).
    pub fn get(&self, field: &str) -> &[String] {
        self.0.get(field).map(Vec::as_slice).unwrap_or(&[])
    }

    /// True when there is at least one message about `field`.
    pub fn has(&self, field: &str) -> bool {
        self.0.contains_key(field)
    }

    /// True when no field has a message: the form may be saved.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The service's field errors, each shown next to its field.
impl From<FieldErrors> for Errors {
    fn from(errors: FieldErrors) -> Self {
        Errors(errors.fields().clone())
    }
}

/// At most `max` characters (see [`text::char_count`]), or an error about `field`.
pub fn check_length(errors: &mut Errors, field: &str, value: &str, max: usize) {
    if !text::within(value, max) {
        errors.add(field, text::too_long(max));
    }
}

/// Query parameters; a repeated name keeps its last value.
#[derive(Debug, Default, Clone)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parses a query string (without the `?`), percent-decoding names and values.
    pub fn parse(query: &str) -> Params {
        Params(
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The value of `name` as sent (the last one when repeated); `None` when absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value stripped as Django's form fields strip it ([`text::strip`]), `None` when
    /// absent or blank.
    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(text::strip)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    /// A filter on usernames: the text (see [`Params::text`]) in the form stored usernames
    /// have ([`username::normalize`], NFKC), so a look-alike spelling finds the account.
    pub fn username(&self, name: &str) -> Option<String> {
        self.text(name).map(|v| username::normalize(&v))
    }

    /// A yes/no filter; anything else (including blank) means "either".
    pub fn flag(&self, name: &str) -> Option<bool> {
        parse_flag(self.get(name)?)
    }
}

/// A query string holding NUL anywhere is refused (400) before any page reads it: its values
/// are searches and filters, and no stored text can hold NUL.
impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AdminError> {
        let params = Params::parse(parts.uri.query().unwrap_or(""));
        if params
            .0
            .iter()
            .any(|(k, v)| text::has_nul(k) || text::has_nul(v))
        {
            return Err(AdminError::BadRequest(text::NUL_REFUSED.into()));
        }
        Ok(params)
    }
}

fn parse_flag(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// A numeric id in the path; anything else matches nothing (404 page).
pub struct AdminId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for AdminId {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AdminError> {
        let Path(id) = Path::<i64>::from_request_parts(parts, state)
            .await
            .map_err(|_| AdminError::NotFound)?;
        Ok(AdminId(id))
    }
}

/// Two numeric ids in the path.
pub struct AdminIds(pub i64, pub i64);

impl<S: Send + Sync> FromRequestParts<S> for AdminIds {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AdminError> {
        let Path((a, b)) = Path::<(i64, i64)>::from_request_parts(parts, state)
            .await
            .map_err(|_| AdminError::NotFound)?;
        Ok(AdminIds(a, b))
    }
}

/// An `application/x-www-form-urlencoded` body, as HTML forms send it (size-limited by the
/// router's body limit). A repeated name keeps its last value, so a checkbox may follow a
/// hidden field of the same name that says "off".
///
/// A field whose value holds NUL is refused: it reads as absent, and [`FormData::refused`]
/// reports it with [`text::NUL_REFUSED`], so a form shows that reason next to the field and a
/// name looked up (the login's) finds no one.
#[derive(Debug, Default)]
pub struct FormData {
    params: Params,
    refused: FieldErrors,
}

impl FormData {
    /// Parses a URL-encoded body, percent-decoding names and values.
    pub fn parse(body: &[u8]) -> FormData {
        let mut refused = FieldErrors::new();
        let pairs = form_urlencoded::parse(body)
            .into_owned()
            .filter(|(name, value)| {
                let nul = text::has_nul(value);
                if nul && !refused.has(name) {
                    refused.add(name, text::NUL_REFUSED);
                }
                !nul
            })
            .collect();
        FormData {
            params: Params(pairs),
            refused,
        }
    }

    /// The fields refused for holding NUL, each with its reason; empty when none was.
    pub fn refused(&self) -> &FieldErrors {
        &self.refused
    }

    /// The errors a form starts from: those of [`FormData::refused`].
    pub fn errors(&self) -> Errors {
        Errors::from(self.refused.clone())
    }

    /// The value of `name` as sent (the last one when repeated); `None` when absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.get(name)
    }

    /// The value stripped as Django's form fields strip it ([`text::strip`]); empty when
    /// absent.
    pub fn text(&self, name: &str) -> String {
        self.get(name).map(text::strip).unwrap_or("").to_owned()
    }

    /// The value as sent (passwords are not trimmed); empty when absent.
    pub fn raw(&self, name: &str) -> String {
        self.get(name).unwrap_or("").to_owned()
    }

    /// A checkbox: `None` when the field was not sent at all.
    pub fn flag(&self, name: &str) -> Option<bool> {
        self.get(name).map(|v| parse_flag(v).unwrap_or(false))
    }
}

impl<S: Send + Sync> FromRequest<S> for FormData {
    type Rejection = AdminError;

    async fn from_request(request: Request, state: &S) -> Result<Self, AdminError> {
        let media = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if media != "application/x-www-form-urlencoded" {
            return Err(AdminError::BadRequest(
                "Forms must be sent as application/x-www-form-urlencoded.".into(),
            ));
        }
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|_| AdminError::BadRequest("The form is too large.".into()))?;
        Ok(FormData::parse(&body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_field_errors_keep_their_fields() {
        let mut api = FieldErrors::new();
        api.add("password", "This password is too common.");
        api.add("password", "This password is entirely numeric.");
        api.add("username", "A user with that username already exists.");
        let errors = Errors::from(api);
        assert_eq!(errors.get("password").len(), 2);
        assert_eq!(
            errors.get("username"),
            ["A user with that username already exists."]
        );
        assert!(errors.get("email").is_empty());
    }

    #[test]
    fn the_last_value_wins_and_checkboxes_read_as_flags() {
        let form = FormData::parse(b"is_staff=false&is_staff=on&name=+a%20b+&empty=");
        assert_eq!(form.flag("is_staff"), Some(true));
        assert_eq!(form.flag("absent"), None);
        assert_eq!(form.text("name"), "a b");
        assert_eq!(form.raw("name"), " a b ");
        assert_eq!(form.flag("empty"), Some(false));
        let params = Params::parse("q=%20&staff=yes&active=maybe&owner=+%EF%BD%81%EF%BD%8C+");
        assert_eq!(params.text("q"), None);
        assert_eq!(params.username("owner").as_deref(), Some("al"));
        assert_eq!(params.flag("staff"), Some(true));
        assert_eq!(params.flag("active"), None);
    }

    #[test]
    fn a_field_holding_nul_is_refused_and_reads_as_absent() {
        let form = FormData::parse(b"username=a%00b&password=x&username=c%00");
        assert_eq!(form.get("username"), None);
        assert_eq!(form.raw("password"), "x");
        assert_eq!(
            form.errors().get("username"),
            ["Null characters are not allowed."]
        );
        assert!(!form.errors().has("password"));
    }
}
