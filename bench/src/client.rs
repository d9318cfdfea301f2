//! The client side of the wire contract: registration, cookie login with CSRF, chats and
//! messages over REST, and the chat WebSocket with its frames.

use std::{borrow::Cow, fmt, net::IpAddr, sync::Arc, time::Duration};

use reqwest::{
    cookie::{CookieStore, Jar},
    header::{HeaderValue, COOKIE, LINK},
    StatusCode,
};
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::{
    tungstenite::{self, client::IntoClientRequest, protocol::WebSocketConfig},
    WebSocketStream,
};

use crate::target::Target;

/// Long, not common and unlike any username, so the password validators accept it.
pub const PASSWORD: &str = "bench-Pa55word-long";

/// Most members the server adds in one request.
pub const PARTICIPANTS_PER_REQUEST: usize = 1000;

#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: i64,
    pub username: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub id: i64,
    pub seq: i64,
}

#[derive(Debug, Deserialize)]
struct Created {
    id: i64,
}

/// One page of `GET /api/chats/{id}/messages/`.
pub struct Page {
    pub messages: Vec<Message>,
    /// The server sent `Link: <…>; rel="next"`.
    pub has_next: bool,
}

/// A failed request, classified for the error tallies.
#[derive(Debug)]
pub enum RequestError {
    Status(StatusCode, String),
    Transport(reqwest::Error),
    Decode(String),
}

impl RequestError {
    /// `http_429`, `timeout`, `connect`, …
    pub fn kind(&self) -> String {
        match self {
            RequestError::Status(status, _) => format!("http_{}", status.as_u16()),
            RequestError::Transport(e) if e.is_timeout() => "timeout".into(),
            RequestError::Transport(e) if e.is_connect() => "connect".into(),
            RequestError::Transport(_) => "transport".into(),
            RequestError::Decode(_) => "bad_body".into(),
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Status(status, body) => write!(f, "HTTP {status}: {body}"),
            RequestError::Transport(e) => write!(f, "request failed: {e}"),
            RequestError::Decode(e) => write!(f, "unexpected response body: {e}"),
        }
    }
}

impl std::error::Error for RequestError {}

impl From<reqwest::Error> for RequestError {
    fn from(e: reqwest::Error) -> Self {
        RequestError::Transport(e)
    }
}

/// Turns a response into `T`, or an error that keeps the status and the start of the body.
async fn decode<T: DeserializeOwned>(response: reqwest::Response) -> Result<T, RequestError> {
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        return Err(RequestError::Status(status, text));
    }
    serde_json::from_slice(&body).map_err(|e| RequestError::Decode(e.to_string()))
}

pub async fn register(
    http: &reqwest::Client,
    target: &Target,
    username: &str,
) -> Result<User, RequestError> {
    let body = json!({
        "username": username,
        "email": format!("{username}@example.com"),
        "password": PASSWORD,
        "password_confirm": PASSWORD,
    });
    let response = http
        .post(target.url("/api/register/"))
        .json(&body)
        .send()
        .await?;
    decode(response).await
}

/// A logged-in user: its own HTTP client and cookie jar, as a real client would have.
#[derive(Clone)]
pub struct Session {
    pub user: User,
    pub target: Arc<Target>,
    http: reqwest::Client,
    csrf: String,
    /// `sessionid=…; csrftoken=…`, for the WebSocket handshake.
    pub cookie: String,
}

impl Session {
    pub async fn login(target: Arc<Target>, user: User) -> Result<Session, RequestError> {
        let jar = Arc::new(Jar::default());
        let http = target
            .http_builder()
            .cookie_provider(jar.clone())
            .build()
            .map_err(RequestError::Transport)?;
        let response = http
            .post(target.url("/api/login/"))
            .json(&json!({ "username": user.username, "password": PASSWORD }))
            .send()
            .await?;
        decode::<serde_json::Value>(response).await?;
        let cookie = jar
            .cookies(&target.base)
            .and_then(|v| v.to_str().ok().map(str::to_owned))
            .unwrap_or_default();
        let csrf = cookie_value(&cookie, "csrftoken")
            .ok_or_else(|| RequestError::Decode("login set no csrftoken cookie".into()))?;
        if cookie_value(&cookie, "sessionid").is_none() {
            return Err(RequestError::Decode("login set no sessionid cookie".into()));
        }
        Ok(Session {
            user,
            target,
            http,
            csrf: csrf.to_owned(),
            cookie,
        })
    }

    pub async fn create_chat(
        &self,
        name: &str,
        participant_ids: &[i64],
    ) -> Result<i64, RequestError> {
        // The server takes at most 1,000 members per request (the original's limit): a larger
        // room is created with the first ones and the others are added in turn.
        let mut chunks = participant_ids.chunks(PARTICIPANTS_PER_REQUEST);
        let first = chunks.next().unwrap_or_default();
        let response = self
            .http
            .post(self.target.url("/api/chats/"))
            .header("X-CSRFToken", &self.csrf)
            .json(&json!({ "name": name, "participant_ids": first }))
            .send()
            .await?;
        let id = decode::<Created>(response).await?.id;
        for more in chunks {
            let response = self
                .http
                .post(self.target.url(&format!("/api/chats/{id}/participants/")))
                .header("X-CSRFToken", &self.csrf)
                .json(&json!({ "participant_ids": more }))
                .send()
                .await?;
            decode::<Created>(response).await?;
        }
        Ok(id)
    }

    /// `POST /api/ai/chats/`: a private AI chat with the default system prompt.
    pub async fn create_ai_chat(&self, title: &str) -> Result<i64, RequestError> {
        let response = self
            .http
            .post(self.target.url("/api/ai/chats/"))
            .header("X-CSRFToken", &self.csrf)
            .json(&json!({ "title": title }))
            .send()
            .await?;
        Ok(decode::<Created>(response).await?.id)
    }

    pub async fn send_message(&self, chat_id: i64, content: &str) -> Result<Message, RequestError> {
        let response = self
            .http
            .post(
                self.target
                    .url(&format!("/api/chats/{chat_id}/send_message/")),
            )
            .header("X-CSRFToken", &self.csrf)
            .json(&json!({ "content": content }))
            .send()
            .await?;
        decode(response).await
    }

    /// `query` is appended as is: `""`, `"?limit=100&before=42"`, …
    pub async fn messages(&self, chat_id: i64, query: &str) -> Result<Page, RequestError> {
        let response = self
            .http
            .get(
                self.target
                    .url(&format!("/api/chats/{chat_id}/messages/{query}")),
            )
            .send()
            .await?;
        let has_next = response
            .headers()
            .get_all(LINK)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.contains("rel=\"next\"")));
        let messages = decode(response).await?;
        Ok(Page { messages, has_next })
    }
}

impl Session {
    /// The chat's last log position (`GET /api/chats/{id}/events/`, paged): what its log holds
    /// before any message is sent (members added after the chat was created, for instance),
    /// which original-protocol sockets are never sent.
    pub async fn log_position(&self, chat_id: i64) -> Result<i64, RequestError> {
        let mut position = 0;
        loop {
            let response = self
                .http
                .get(self.target.url(&format!(
                    "/api/chats/{chat_id}/events/?after={position}&limit=500"
                )))
                .send()
                .await?;
            let items: Vec<serde_json::Value> = decode(response).await?;
            let last = items
                .iter()
                .filter_map(|item| item["seq"].as_i64().or(item["message"]["seq"].as_i64()))
                .max();
            match last {
                Some(seq) if seq > position && items.len() == 500 => position = seq,
                Some(seq) => return Ok(seq.max(position)),
                None => return Ok(position),
            }
        }
    }

    /// `GET /api/search/?{query}` (`query` already encoded): the hits' count.
    pub async fn search(&self, query: &str) -> Result<usize, RequestError> {
        let response = self
            .http
            .get(self.target.url(&format!("/api/search/?{query}")))
            .send()
            .await?;
        let hits: Vec<serde_json::Value> = decode(response).await?;
        Ok(hits.len())
    }
}

fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name && !v.is_empty()).then_some(v)
    })
}

pub type Ws = WebSocketStream<TcpStream>;

/// Why a socket could not be opened, as a tally key.
#[derive(Debug)]
pub struct WsError {
    pub kind: String,
    pub detail: String,
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

impl std::error::Error for WsError {}

fn io_kind(prefix: &str, e: &std::io::Error) -> WsError {
    let kind = match (e.raw_os_error(), e.kind()) {
        (Some(libc::EMFILE) | Some(libc::ENFILE), _) => "too_many_open_files".to_owned(),
        (Some(libc::EADDRNOTAVAIL), _) => format!("{prefix}_no_free_port"),
        (_, std::io::ErrorKind::ConnectionRefused) => format!("{prefix}_refused"),
        (_, std::io::ErrorKind::ConnectionReset) => format!("{prefix}_reset"),
        (_, kind) => format!("{prefix}_{kind:?}").to_lowercase(),
    };
    WsError {
        kind,
        detail: e.to_string(),
    }
}

/// Client buffers for sockets that carry chat traffic, and for idle ones kept by the thousand.
pub fn ws_config(idle: bool) -> WebSocketConfig {
    if idle {
        WebSocketConfig::default()
            .read_buffer_size(4 * 1024)
            .write_buffer_size(4 * 1024)
    } else {
        WebSocketConfig::default()
            .read_buffer_size(64 * 1024)
            .write_buffer_size(0)
    }
}

/// `path` with the query (empty, or starting with `?`) and `protocol=mrm.v2`: this tool speaks
/// the extended socket protocol (presence, typing, streamed replies). It asks by query rather
/// than by `Sec-WebSocket-Protocol` so that servers from before the negotiation, which ignore the
/// parameter and always speak it, can be measured too.
pub fn extended(path: &str, query: &str) -> String {
    match query.strip_prefix('?') {
        Some(rest) if !rest.is_empty() => format!("{path}?{rest}&protocol=mrm.v2"),
        _ => format!("{path}?protocol=mrm.v2"),
    }
}

/// Opens `/ws/chat/{chat_id}/{query}` (asking for `mrm.v2`) with the session cookie and no
/// `Origin`, from `source` when given. The whole attempt is bounded by `timeout`.
pub async fn connect_ws(
    target: &Target,
    chat_id: i64,
    query: &str,
    cookie: &str,
    source: Option<IpAddr>,
    config: WebSocketConfig,
    timeout: Duration,
) -> Result<Ws, WsError> {
    let path = extended(&format!("/ws/chat/{chat_id}/"), query);
    connect_ws_path(target, &path, cookie, source, config, timeout).await
}

/// Opens the WebSocket at `path_and_query` (e.g. `/ws/ai-chat/7/`), as `connect_ws` does.
pub async fn connect_ws_path(
    target: &Target,
    path_and_query: &str,
    cookie: &str,
    source: Option<IpAddr>,
    config: WebSocketConfig,
    timeout: Duration,
) -> Result<Ws, WsError> {
    let attempt = async {
        let url = format!("ws://{}{path_and_query}", target.authority);
        let mut request = url.into_client_request().map_err(|e| WsError {
            kind: "bad_request".into(),
            detail: e.to_string(),
        })?;
        let cookie = HeaderValue::from_str(cookie).map_err(|e| WsError {
            kind: "bad_cookie".into(),
            detail: e.to_string(),
        })?;
        request.headers_mut().insert(COOKIE, cookie);

        let socket = if target.addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| io_kind("socket", &e))?;
        if let Some(ip) = source {
            socket
                .bind((ip, 0).into())
                .map_err(|e| io_kind("bind", &e))?;
        }
        let stream = socket
            .connect(target.addr)
            .await
            .map_err(|e| io_kind("connect", &e))?;
        // Chat frames are small: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(handshake_error)?;
        Ok(ws)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(WsError {
            kind: "timeout".into(),
            detail: format!("no open socket within {timeout:?}"),
        }),
    }
}

fn handshake_error(e: tungstenite::Error) -> WsError {
    match e {
        tungstenite::Error::Http(response) => {
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned())
                .unwrap_or_default();
            WsError {
                kind: format!("http_{}", response.status().as_u16()),
                detail: body,
            }
        }
        tungstenite::Error::Io(e) => io_kind("handshake", &e),
        other => WsError {
            kind: "handshake".into(),
            detail: other.to_string(),
        },
    }
}

/// The server frames this tool looks at; typing and the rest are `Other`.
pub enum Incoming<'a> {
    Message {
        seq: i64,
        content: Cow<'a, str>,
    },
    Error(String),
    /// Who is online: the whole list (`online`), or a change (`joined`, `left`).
    Presence(Presence),
    Other,
}

/// A presence frame: `online` replaces the list, `joined` and `left` change it.
#[derive(Deserialize)]
pub struct Presence {
    pub online: Option<Vec<User>>,
    #[serde(default)]
    pub joined: Vec<User>,
    #[serde(default)]
    pub left: Vec<User>,
}

impl Presence {
    /// Applies this frame to `online` (user ids).
    pub fn apply(&self, online: &mut std::collections::HashSet<i64>) {
        if let Some(list) = &self.online {
            online.clear();
            online.extend(list.iter().map(|u| u.id));
        }
        for user in &self.left {
            online.remove(&user.id);
        }
        online.extend(self.joined.iter().map(|u| u.id));
    }
}

#[derive(Deserialize)]
struct Kind<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

#[derive(Deserialize)]
struct MessageFrame<'a> {
    #[serde(borrow)]
    message: MessageBody<'a>,
}

#[derive(Deserialize)]
struct MessageBody<'a> {
    seq: i64,
    #[serde(borrow)]
    content: Cow<'a, str>,
}

#[derive(Deserialize)]
struct ErrorFrame {
    message: String,
}

/// Parses a text frame; `None` when it is not a frame of the contract.
pub fn parse_frame(text: &str) -> Option<Incoming<'_>> {
    let kind: Kind = serde_json::from_str(text).ok()?;
    match kind.kind.as_ref() {
        "message" => {
            let frame: MessageFrame = serde_json::from_str(text).ok()?;
            Some(Incoming::Message {
                seq: frame.message.seq,
                content: frame.message.content,
            })
        }
        "error" => Some(Incoming::Error(
            serde_json::from_str::<ErrorFrame>(text).ok()?.message,
        )),
        "presence" => Some(Incoming::Presence(serde_json::from_str(text).ok()?)),
        _ => Some(Incoming::Other),
    }
}
