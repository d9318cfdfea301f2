//! The REST ceiling (`ceiling-server --kind http`, for `rest`), and the REST calls the socket
//! ceiling answers too.
//!
//! Every endpoint a `rest` run calls (register, log in, create a chat, `send_message`, a page of
//! `messages`) answers the server's JSON, of the same shape and about the same size, with the
//! same cookies, built from memory: no password is hashed, no session is checked against
//! anything (the `sessionid` cookie only says who is sending, so that emails are shown to their
//! owners as the server shows them), no membership is checked, nothing is stored but each
//! chat's last [`LOG_LEN`](super::LOG_LEN) messages. What is left is the cost of HTTP/1.1 keep-alive, routing and
//! JSON on the server's stack: what the server's request handling could not go below. The gap
//! to it is the server's own work: authentication, its database, its limits.

use std::sync::Arc;

use axum::{
    extract::{Path, RawQuery, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{ws, Full, MessageView, RegisterError, Store, UserView, MAX_CONTENT_CHARS};

type Shared = Arc<Store>;

/// Page size when `limit` is not given, and the largest one, as the server's.
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 500;
/// Longest chat name and username, as the server allows.
const MAX_NAME_CHARS: usize = 255;
const MAX_USERNAME_CHARS: usize = 150;
/// Lifetimes of the session and CSRF cookies, as the server sets them.
const SESSION_MAX_AGE: u32 = 14 * 86_400;
const CSRF_MAX_AGE: u32 = 364 * 86_400;

/// The REST calls both ceilings answer: those of a run's setup, and the message list.
pub fn common_routes(router: Router<Shared>) -> Router<Shared> {
    router
        .route("/api/register/", post(register))
        .route("/api/login/", post(login))
        .route("/api/chats/", post(create_chat))
        .route("/api/chats/{id}/messages/", get(messages))
}

/// What only the REST ceiling answers: sending over REST.
pub fn router() -> Router<Shared> {
    Router::new().route("/api/chats/{id}/send_message/", post(send_message))
}

/// `400 {"field": ["message"]}`, the server's validation errors.
fn invalid(field: &str, message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ field: [message] }))).into_response()
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "detail": "Not found." })),
    )
        .into_response()
}

fn full(Full(what): Full) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "detail": format!("The ceiling holds no more {what}.") })),
    )
        .into_response()
}

#[derive(Deserialize)]
struct RegisterInput {
    username: Option<String>,
    email: Option<String>,
    password: Option<String>,
    password_confirm: Option<String>,
}

async fn register(State(store): State<Shared>, Json(input): Json<RegisterInput>) -> Response {
    let Some(username) = input
        .username
        .filter(|u| !u.is_empty() && u.chars().count() <= MAX_USERNAME_CHARS)
    else {
        return invalid("username", "This field is required.");
    };
    if input.password.is_none() || input.password != input.password_confirm {
        return invalid("password", "Passwords don't match.");
    }
    match store.register(username, input.email.unwrap_or_default()) {
        Ok(user) => (StatusCode::CREATED, Json(user.view(user.id))).into_response(),
        Err(RegisterError::Taken) => {
            invalid("username", "A user with that username already exists.")
        }
        Err(RegisterError::Full) => full(Full("users")),
    }
}

#[derive(Deserialize)]
struct LoginInput {
    username: Option<String>,
}

/// Any password is accepted: only the name says who logs in.
async fn login(State(store): State<Shared>, Json(input): Json<LoginInput>) -> Response {
    let Some(user) = input.username.and_then(|name| store.user_named(&name)) else {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "Invalid credentials" })),
        )
            .into_response();
    };
    let (key, csrf) = match store.log_in(user.clone()) {
        Ok(tokens) => tokens,
        Err(e) => return full(e),
    };
    let mut headers = HeaderMap::new();
    for cookie in [
        format!("sessionid={key}; HttpOnly; SameSite=Lax; Path=/; Max-Age={SESSION_MAX_AGE}"),
        format!("csrftoken={csrf}; SameSite=Lax; Path=/; Max-Age={CSRF_MAX_AGE}"),
    ] {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    (headers, Json(user.view(user.id))).into_response()
}

#[derive(Deserialize)]
struct ChatInput {
    name: Option<String>,
    #[serde(default)]
    participant_ids: Vec<i64>,
}

/// The chat object the server answers a new chat with.
#[derive(Serialize)]
struct ChatView<'a> {
    id: i64,
    name: &'a str,
    owner: i64,
    participants: Vec<UserView<'a>>,
    messages: [(); 0],
    created_at: &'a str,
    last_read_seq: i64,
    unread_count: i64,
    unread_mentions: i64,
    read_receipts: bool,
    direct: bool,
}

async fn create_chat(
    State(store): State<Shared>,
    headers: HeaderMap,
    Json(input): Json<ChatInput>,
) -> Response {
    let caller = store.caller(&headers);
    let name = input.name.as_deref().unwrap_or_default().trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return invalid("name", "This field may not be blank.");
    }
    let mut others = Vec::with_capacity(input.participant_ids.len());
    for id in input.participant_ids {
        match store.user(id) {
            Some(user) => others.push(user),
            None => return invalid("participant_ids", &format!("Unknown user id(s): {id}")),
        }
    }
    let room = match store.create_chat(caller.clone(), name.to_owned(), others) {
        Ok(room) => room,
        Err(e) => return full(e),
    };
    let view = ChatView {
        id: room.id,
        name: &room.name,
        owner: room.owner,
        participants: room.members.iter().map(|u| u.view(caller.id)).collect(),
        messages: [],
        created_at: &room.created_at,
        last_read_seq: 0,
        unread_count: 0,
        unread_mentions: 0,
        read_receipts: false,
        direct: false,
    };
    (StatusCode::CREATED, Json(view)).into_response()
}

#[derive(Deserialize)]
struct SendInput {
    content: Option<Value>,
}

/// Appends the message to the chat's log (and delivers it to the chat's sockets, if any, as the
/// server does with messages sent over REST).
async fn send_message(
    State(store): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Json(input): Json<SendInput>,
) -> Response {
    let caller = store.caller(&headers);
    let Some(room) = store.chat(id) else {
        return not_found();
    };
    let content = match &input.content {
        Some(Value::String(s)) => s.trim(),
        _ => "",
    };
    if content.is_empty() {
        return invalid("content", "This field may not be blank.");
    }
    if content.chars().count() > MAX_CONTENT_CHARS {
        return invalid(
            "content",
            "Ensure this field has no more than 10000 characters.",
        );
    }
    let entry = room.append(&store, caller.clone(), content.to_owned(), ws::deliver);
    (StatusCode::CREATED, Json(entry.view(caller.id))).into_response()
}

/// `?limit=` (1 to 500, default 100), `?before=`, `?after=` (message ids); other parameters are
/// ignored, as the server ignores them. The error is the field and its message.
fn window(query: Option<&str>) -> Result<Window, (&str, &'static str)> {
    let (mut limit, mut before, mut after) = (DEFAULT_LIMIT, None, None);
    for pair in query.unwrap_or_default().split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "limit" => None,
            "before" => Some(&mut before),
            "after" => Some(&mut after),
            _ => continue,
        };
        let Some(n) = value.parse::<i64>().ok().filter(|n| *n >= 0) else {
            return Err((key, "A valid integer is required."));
        };
        match slot {
            Some(slot) => *slot = Some(n),
            None if (1..=MAX_LIMIT).contains(&n) => limit = n,
            None => return Err(("limit", "Ensure this value is between 1 and 500.")),
        }
    }
    Ok(Window {
        limit,
        before,
        after,
    })
}

/// A page asked for: its size, and the ids it lies below or above.
struct Window {
    limit: i64,
    before: Option<i64>,
    after: Option<i64>,
}

/// A page of the chat's messages, oldest first, with `Link: <…>; rel="next"` when more lie
/// beyond it, as the server pages them.
async fn messages(
    State(store): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    RawQuery(query): RawQuery,
) -> Response {
    let caller = store.caller(&headers);
    let Window {
        limit,
        before,
        after,
    } = match window(query.as_deref()) {
        Ok(window) => window,
        Err((field, message)) => return invalid(field, message),
    };
    let Some(room) = store.chat(id) else {
        return not_found();
    };
    let (page, more) = room.page(limit as usize, before, after);
    let views: Vec<MessageView<'_>> = page.iter().map(|e| e.view(caller.id)).collect();
    let body = serde_json::to_vec(&views).unwrap_or_default();
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    let boundary = if after.is_none() {
        page.first()
    } else {
        page.last()
    };
    if let Some(last) = boundary.filter(|_| more) {
        let query = match after {
            None => format!("limit={limit}&before={}", last.id),
            Some(_) => format!("limit={limit}&after={}", last.id),
        };
        let link = format!("</api/chats/{id}/messages/?{query}>; rel=\"next\"");
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    response
}
