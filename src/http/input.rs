//! Request bodies. `Input` reads a JSON or form-encoded body (as the original accepts both) with
//! an explicit size limit, and its field readers turn wrong shapes into the contract's field
//! errors, so a bad body is always a 4xx with a clear message. Every string the API reads from
//! a body passes through [`Input::optional_string`] or [`Input::optional_string_list`], which
//! refuse NUL (see [`text::NUL_REFUSED`]) once, for every field.

use axum::{
    body::{Body, Bytes},
    extract::{FromRequest, Request},
    http::header,
};
use http_body_util::Limited;
use serde_json::{Map, Value};

use crate::{
    domain::{text, MessageContent},
    error::ApiError,
    service::FieldErrors,
};

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most ids or usernames accepted in one list field.
pub const MAX_LIST_ITEMS: usize = 1000;

const REQUIRED: &str = "This field is required.";

/// A request body read as one object: JSON (`application/json` or `application/*+json`) or a
/// form (`application/x-www-form-urlencoded`), at most [`MAX_BODY_BYTES`]. An empty body, sent
/// without a content type or as JSON, is an empty object.
///
/// Errors: `PayloadTooLarge` (413) over the limit, `BadRequest` (400) for malformed JSON,
/// `Validation` (400, `non_field_errors`) for JSON that is not an object, `UnsupportedMediaType`
/// (415) for anything else; the 400 and 415 bodies use Django REST Framework's wording.
#[derive(Debug, Default)]
pub struct Input {
    fields: Map<String, Value>,
    /// Form bodies carry only strings, and a one-element list is a single value.
    from_form: bool,
}

impl<S: Send + Sync> FromRequest<S> for Input {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        Input::read(request, state, MAX_BODY_BYTES).await
    }
}

/// Largest body of a request that carries passwords (login, token, registration), in bytes:
/// room for two passwords of the longest length allowed (`password::MAX_LENGTH`, 4,096
/// characters) even at JSON's longest escape of a character (12 bytes, a `\uXXXX` pair), and
/// small enough that requests waiting for a password hash hold little memory.
pub const MAX_CREDENTIALS_BODY_BYTES: usize = 128 * 1024;

/// An [`Input`] of a request carrying passwords, at most [`MAX_CREDENTIALS_BODY_BYTES`].
/// Errors as for [`Input`], with that limit.
#[derive(Debug, Default)]
pub struct CredentialsInput(pub Input);

impl<S: Send + Sync> FromRequest<S> for CredentialsInput {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        Input::read(request, state, MAX_CREDENTIALS_BODY_BYTES)
            .await
            .map(CredentialsInput)
    }
}

impl Input {
    /// Reads and parses a body of at most `limit` bytes, refusing a larger one by its
    /// `Content-Length` before reading, or once `limit` bytes have arrived.
    async fn read<S: Send + Sync>(
        request: Request,
        state: &S,
        limit: usize,
    ) -> Result<Self, ApiError> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let too_large = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .is_some_and(|n| n > limit);
        if too_large {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        let request = request.map(|body| Body::new(Limited::new(body, limit)));
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge(limit)
                } else {
                    ApiError::BadRequest("The request body could not be read.".into())
                }
            })?;
        Input::parse(&content_type, &body)
    }
}

impl Input {
    /// Parses `body` by the media type of `content_type` (parameters such as `charset` are
    /// ignored). In a form, a repeated key becomes a list. Errors as for [`Input`].
    pub fn parse(content_type: &str, body: &[u8]) -> Result<Self, ApiError> {
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if body.iter().all(u8::is_ascii_whitespace)
            && (media.is_empty() || media == "application/json")
        {
            return Ok(Input::default());
        }
        if media == "application/json"
            || (media.starts_with("application/") && media.ends_with("+json"))
        {
            let value: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::BadRequest(format!("JSON parse error - {e}")))?;
            return match value {
                Value::Object(fields) => Ok(Input {
                    fields,
                    from_form: false,
                }),
                other => Err(ApiError::Validation(FieldErrors::single(
                    "non_field_errors",
                    format!(
                        "Invalid data. Expected a dictionary, but got {}.",
                        type_name(&other)
                    ),
                ))),
            };
        }
        if media == "application/x-www-form-urlencoded" {
            let mut fields = Map::new();
            for (key, value) in form_urlencoded::parse(body) {
                let value = Value::String(value.into_owned());
                match fields.get_mut(key.as_ref()) {
                    Some(Value::Array(items)) => items.push(value),
                    Some(existing) => *existing = Value::Array(vec![existing.take(), value]),
                    None => {
                        fields.insert(key.into_owned(), value);
                    }
                }
            }
            return Ok(Input {
                fields,
                from_form: true,
            });
        }
        Err(ApiError::UnsupportedMediaType(media))
    }

    /// Whether the body has field `name` at all, even as null: how a PATCH tells a field left out
    /// from one being set.
    pub fn has(&self, name: &str) -> bool {
        self.fields.contains_key(name)
    }

    /// A string field that must be present and not null. Numbers are accepted as their text.
    pub fn required_string(&self, name: &str, errors: &mut FieldErrors) -> Option<String> {
        match self.fields.get(name) {
            None => {
                errors.add(name, REQUIRED);
                None
            }
            Some(_) => self.optional_string(name, errors),
        }
    }

    /// A string field that may be absent (`None`); present but malformed records an error. A
    /// string holding NUL records [`text::NUL_REFUSED`] and reads as `None`: a field stored
    /// gets a 400 with that reason, and a name looked up (a login) finds no one.
    pub fn optional_string(&self, name: &str, errors: &mut FieldErrors) -> Option<String> {
        match self.fields.get(name)? {
            Value::String(s) if text::has_nul(s) => {
                errors.add(name, text::NUL_REFUSED);
                None
            }
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Null => {
                errors.add(name, "This field may not be null.");
                None
            }
            _ => {
                errors.add(name, "Not a valid string.");
                None
            }
        }
    }

    /// A list of integers (ids), absent as `None`.
    pub fn optional_id_list(&self, name: &str, errors: &mut FieldErrors) -> Option<Vec<i64>> {
        let items = self.list(name, errors)?;
        let mut ids = Vec::with_capacity(items.len());
        for item in items {
            match as_id(item) {
                Some(id) => ids.push(id),
                None => {
                    errors.add(name, "A valid integer is required.");
                    return None;
                }
            }
        }
        Some(ids)
    }

    /// A list of strings, absent as `None`, read as Django REST Framework's
    /// `ListField(child=CharField())` reads it: each item stripped (see [`text::strip`]), and
    /// an item that is blank, holds NUL or is not a string is an error about the list.
    pub fn optional_string_list(
        &self,
        name: &str,
        errors: &mut FieldErrors,
    ) -> Option<Vec<String>> {
        let items = self.list(name, errors)?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let problem = match item {
                Value::String(s) if text::has_nul(s) => text::NUL_REFUSED,
                Value::String(s) if text::strip(s).is_empty() => text::BLANK,
                Value::String(s) => {
                    out.push(text::strip(s).to_owned());
                    continue;
                }
                _ => "Not a valid string.",
            };
            errors.add(name, problem);
            return None;
        }
        Some(out)
    }

    /// A required text field read as Django REST Framework's `CharField` reads it: stripped of
    /// leading and trailing whitespace (see [`text::strip`]), and [`text::BLANK`] when nothing
    /// is left.
    pub fn required_text(&self, name: &str, errors: &mut FieldErrors) -> Option<String> {
        let raw = self.required_string(name, errors)?;
        let stripped = text::strip(&raw);
        if stripped.is_empty() {
            errors.add(name, text::BLANK);
            return None;
        }
        Some(if stripped.len() == raw.len() {
            raw
        } else {
            stripped.to_owned()
        })
    }

    /// A required message `content` (group chat or AI): read as [`Input::required_text`] reads
    /// text, then held to the rules of [`MessageContent`] (its length limit).
    pub fn message_content(&self, name: &str, errors: &mut FieldErrors) -> Option<MessageContent> {
        let raw = self.required_text(name, errors)?;
        MessageContent::parse(raw)
            .map_err(|message| errors.add(name, message.to_string()))
            .ok()
    }

    /// A message's `content` when the message carries `attachments` files: as
    /// [`Input::message_content`] without any, else optional (absent reads as empty) and may be
    /// blank, still stripped and held to the length limit.
    pub fn message_caption(
        &self,
        name: &str,
        attachments: usize,
        errors: &mut FieldErrors,
    ) -> Option<MessageContent> {
        if attachments == 0 {
            return self.message_content(name, errors);
        }
        let raw = if self.has(name) {
            self.optional_string(name, errors)?
        } else {
            String::new()
        };
        MessageContent::caption(text::strip(&raw).to_owned())
            .map_err(|message| errors.add(name, message.to_string()))
            .ok()
    }

    /// A boolean, absent as `None`: JSON `true`/`false`, or text (any case, spaces trimmed)
    /// `true`/`1`/`yes`/`on` or `false`/`0`/`no`/`off`/empty, close to Django REST Framework's
    /// `BooleanField`. Anything else records `Must be a valid boolean.`
    pub fn optional_bool(&self, name: &str, errors: &mut FieldErrors) -> Option<bool> {
        match self.fields.get(name)? {
            Value::Bool(b) => Some(*b),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Some(true),
                "false" | "0" | "no" | "off" | "" => Some(false),
                _ => {
                    errors.add(name, "Must be a valid boolean.");
                    None
                }
            },
            _ => {
                errors.add(name, "Must be a valid boolean.");
                None
            }
        }
    }

    /// An integer within `min..=max`, absent as `None`.
    pub fn optional_int(
        &self,
        name: &str,
        min: i64,
        max: i64,
        errors: &mut FieldErrors,
    ) -> Option<i64> {
        let value = self.fields.get(name)?;
        match as_id(value) {
            Some(n) if n < min => errors.add(
                name,
                format!("Ensure this value is greater than or equal to {min}."),
            ),
            Some(n) if n > max => errors.add(
                name,
                format!("Ensure this value is less than or equal to {max}."),
            ),
            Some(n) => return Some(n),
            None => errors.add(name, "A valid integer is required."),
        }
        None
    }

    /// A required id: `None` (and an error) when absent or not a whole number.
    pub fn required_id(&self, name: &str, errors: &mut FieldErrors) -> Option<i64> {
        let Some(value) = self.fields.get(name) else {
            errors.add(name, REQUIRED);
            return None;
        };
        let id = as_id(value);
        if id.is_none() {
            errors.add(
                name,
                format!(
                    "Incorrect type. Expected pk value, received {}.",
                    type_name(value)
                ),
            );
        }
        id
    }

    /// An id that may be null (to clear a link): `None` for null or an error.
    pub fn optional_nullable_id(&self, name: &str, errors: &mut FieldErrors) -> Option<i64> {
        match self.fields.get(name)? {
            Value::Null => None,
            Value::String(s) if s.trim().is_empty() && self.from_form => None,
            value => match as_id(value) {
                Some(id) => Some(id),
                None => {
                    errors.add(
                        name,
                        format!(
                            "Incorrect type. Expected pk value, received {}.",
                            type_name(value)
                        ),
                    );
                    None
                }
            },
        }
    }

    fn list<'a>(&'a self, name: &str, errors: &mut FieldErrors) -> Option<Vec<&'a Value>> {
        let items: Vec<&Value> = match self.fields.get(name)? {
            Value::Array(items) => items.iter().collect(),
            single @ Value::String(_) if self.from_form => vec![single],
            other => {
                errors.add(
                    name,
                    format!(
                        "Expected a list of items but got type \"{}\".",
                        type_name(other)
                    ),
                );
                return None;
            }
        };
        if items.len() > MAX_LIST_ITEMS {
            errors.add(
                name,
                format!("Ensure this field has no more than {MAX_LIST_ITEMS} elements."),
            );
            return None;
        }
        Some(items)
    }
}

/// An id given as a JSON integer or as digits in a string (forms carry only strings).
fn as_id(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// A required text field (see [`Input::required_text`]) of at most `max_chars` characters.
pub fn limited_text(
    input: &Input,
    name: &str,
    max_chars: usize,
    errors: &mut FieldErrors,
) -> Option<String> {
    let value = input.required_text(name, errors)?;
    if !text::within(&value, max_chars) {
        errors.add(name, text::too_long(max_chars));
        return None;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_form_and_empty_bodies() {
        let json = Input::parse(
            "application/json; charset=utf-8",
            br#"{"a": "x", "ids": [1, "2"]}"#,
        )
        .unwrap();
        let mut errors = FieldErrors::new();
        assert_eq!(json.required_string("a", &mut errors).as_deref(), Some("x"));
        assert_eq!(json.optional_id_list("ids", &mut errors), Some(vec![1, 2]));
        assert!(errors.is_empty());

        let form = Input::parse(
            "application/x-www-form-urlencoded",
            b"ids=3&ids=4&one=5&name=a+b",
        )
        .unwrap();
        assert_eq!(form.optional_id_list("ids", &mut errors), Some(vec![3, 4]));
        assert_eq!(form.optional_id_list("one", &mut errors), Some(vec![5]));
        assert_eq!(
            form.required_string("name", &mut errors).as_deref(),
            Some("a b")
        );

        assert!(!Input::parse("", b"").unwrap().has("x"));
    }

    #[test]
    fn malformed_bodies_are_client_errors() {
        assert!(matches!(
            Input::parse("application/json", b"{"),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            Input::parse("application/json", b"[1]"),
            Err(ApiError::Validation(_))
        ));
        assert!(matches!(
            Input::parse("text/plain", b"hi"),
            Err(ApiError::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn wrong_shapes_become_field_errors() {
        let input = Input::parse(
            "application/json",
            br#"{"ids": "7", "names": [1], "s": {"a": 1}, "n": null}"#,
        )
        .unwrap();
        let mut errors = FieldErrors::new();
        assert_eq!(input.optional_id_list("ids", &mut errors), None);
        assert_eq!(input.optional_string_list("names", &mut errors), None);
        assert_eq!(input.required_string("s", &mut errors), None);
        assert_eq!(input.required_string("n", &mut errors), None);
        assert_eq!(input.required_string("missing", &mut errors), None);
        for field in ["ids", "names", "s", "n", "missing"] {
            assert!(errors.has(field), "{field}");
        }
    }
}
