//! Reading what a page was asked: query parameters, path ids and form bodies, with failures that
//! render as admin pages rather than the API's JSON.

use std::{collections::BTreeMap, convert::Infallible};

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, Request},
    http::{header, request::Parts},
};

use super::AdminError;
use crate::service::FieldErrors;

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

/// At most `max` characters, or an error about `field`.
pub fn check_length(errors: &mut Errors, field: &str, value: &str, max: usize) {
    if value.chars().count() > max {
        errors.add(
            field,
            format!("Ensure this field has no more than {max} characters."),
        );
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

    /// The trimmed value, `None` when absent or blank.
    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    /// A yes/no filter; anything else (including blank) means "either".
    pub fn flag(&self, name: &str) -> Option<bool> {
        parse_flag(self.get(name)?)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(Params::parse(parts.uri.query().unwrap_or("")))
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
#[derive(Debug, Default)]
pub struct FormData(Params);

impl FormData {
    /// Parses a URL-encoded body, percent-decoding names and values.
    pub fn parse(body: &[u8]) -> FormData {
        FormData(Params(form_urlencoded::parse(body).into_owned().collect()))
    }

    /// The value of `name` as sent (the last one when repeated); `None` when absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name)
    }

    /// The trimmed value; empty when absent.
    pub fn text(&self, name: &str) -> String {
        self.get(name).map(str::trim).unwrap_or("").to_owned()
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
        let params = Params::parse("q=%20&staff=yes&active=maybe");
        assert_eq!(params.text("q"), None);
        assert_eq!(params.flag("staff"), Some(true));
        assert_eq!(params.flag("active"), None);
    }
}
