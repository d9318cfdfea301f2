//! `TestApp`: the real server on a random loopback port with a database of its own, and `Client`,
//! a cookie-keeping HTTP client that sends the CSRF header the way a browser page does.
//!
//! The backend comes from `MRM_TEST_BACKEND` (`sqlite`, the default, or `postgres`); PostgreSQL
//! tests create a uniquely named database on `MRM_TEST_POSTGRES_URL` and drop it afterwards.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
};

use mrm_chat::{config::Config, startup::Application, store::Db};
use reqwest::{cookie::CookieStore, header::HeaderMap, Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::oneshot;

pub const PASSWORD: &str = "correct-horse-battery";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A database that exists for one test and is removed when dropped.
pub struct TestDatabase {
    pub url: String,
    postgres: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// A database of the backend `MRM_TEST_BACKEND` names.
    pub async fn create() -> TestDatabase {
        let backend = std::env::var("MRM_TEST_BACKEND").unwrap_or_else(|_| "sqlite".into());
        Self::of_backend(&backend).await
    }

    /// A database of the given backend, `sqlite` or `postgres`, whatever `MRM_TEST_BACKEND` says.
    pub async fn of_backend(backend: &str) -> TestDatabase {
        match backend {
            "sqlite" => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!("sqlite://{}", dir.path().join("test.sqlite3").display());
                TestDatabase {
                    url,
                    postgres: None,
                    _dir: Some(dir),
                }
            }
            "postgres" => {
                let admin = std::env::var("MRM_TEST_POSTGRES_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
                let run = std::env::var("MRM_TEST_RUN_ID")
                    .unwrap_or_else(|_| format!("p{}", std::process::id()));
                let name = format!(
                    "mrmtest_{}_{}_{}",
                    run,
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::Relaxed)
                );
                let db = Db::connect(&admin, 1)
                    .await
                    .expect("PostgreSQL for tests (MRM_TEST_POSTGRES_URL)");
                let Db::Postgres(pool) = &db else {
                    unreachable!()
                };
                // The name is made above from the run id, the process id and a counter.
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                    .execute(pool)
                    .await
                    .expect("create test database");
                db.close().await;
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                TestDatabase {
                    url: format!("{base}/{name}"),
                    postgres: Some((admin, name)),
                    _dir: None,
                }
            }
            other => panic!("MRM_TEST_BACKEND must be sqlite or postgres, not {other:?}"),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs outside async code: use a runtime of our own on a thread of our own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(Db::Postgres(pool)) = Db::connect(&admin, 1).await {
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub db: Db,
    /// The running server's shared state (its hasher, its limits).
    pub state: mrm_chat::state::AppState,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// The local object store's directory (unused when the test configures S3); removed when
    /// the test ends.
    _files: tempfile::TempDir,
    // Declared last: dropped after the server has been told to stop.
    _database: TestDatabase,
}

/// The configuration tests start from: generous rate limits so that only the tests about limits
/// meet them.
pub fn test_config(database_url: &str) -> Config {
    let mut config = Config::from_lookup(|_| None).expect("default configuration");
    config.database_url = database_url.to_owned();
    config.bind = "127.0.0.1:0".parse().unwrap();
    config.db_max_connections = 8;
    config.login_attempts_per_minute = 1000.try_into().unwrap();
    config.password_attempts_per_minute = 10_000.try_into().unwrap();
    config.messages_per_second = 10_000.try_into().unwrap();
    config.searches_per_minute = 100_000.try_into().unwrap();
    config
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// A server whose AI provider is the given fake.
    pub async fn spawn_with_ai(
        fake: &crate::fake_openai::FakeOpenAi,
        adjust: impl FnOnce(&mut Config),
    ) -> TestApp {
        let base_url = fake.base_url();
        Self::spawn_with(move |config| {
            config.ai.api_key = Some(mrm_chat::config::Secret::new("test-key"));
            config.ai.base_url = base_url;
            config.ai.model = crate::fake_openai::MODEL.to_owned();
            config.ai.timeout = std::time::Duration::from_secs(2);
            config.ai.retries = 2;
            adjust(config);
        })
        .await
    }

    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
        if std::env::var_os("MRM_TEST_LOG").is_some() {
            mrm_chat::telemetry::init(mrm_chat::config::LogFormat::Text);
        }
        let database = TestDatabase::create().await;
        let mut config = test_config(&database.url);
        let files = tempfile::tempdir().expect("temporary directory");
        config.attachments.dir = files.path().to_owned();
        adjust(&mut config);
        let app = Application::build(config).await.expect("server starts");
        let addr = app.local_addr();
        let db = app.state().db.clone();
        let state = app.state().clone();
        let (tx, rx) = oneshot::channel();
        let server = tokio::spawn(app.run_until(async {
            let _ = rx.await;
        }));
        TestApp {
            addr,
            db,
            state,
            shutdown: Some(tx),
            server: Some(server),
            _files: files,
            _database: database,
        }
    }

    /// A client with an empty cookie jar.
    pub fn client(&self) -> Client {
        Client::new(self.addr)
    }

    /// Registers `username` with the test password; returns the created user object.
    pub async fn register(&self, username: &str) -> Value {
        let response = self
            .client()
            .post(
                "/api/register/",
                &json!({
                    "username": username,
                    "email": format!("{username}@example.com"),
                    "password": PASSWORD,
                    "password_confirm": PASSWORD,
                }),
            )
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
        response.body
    }

    /// A registered, logged-in client.
    pub async fn user(&self, username: &str) -> Client {
        self.register(username).await;
        let client = self.client();
        client.login(username, PASSWORD).await;
        client
    }

    /// A client of registered user `username` authenticated by a new bearer token.
    pub async fn bearer(&self, username: &str) -> Client {
        let response = self
            .client()
            .post(
                "/api/tokens/",
                &json!({"username": username, "password": PASSWORD}),
            )
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
        Client::with_bearer(self.addr, response.body["token"].as_str().unwrap())
    }

    /// The database the server runs on, as a `DATABASE_URL`.
    pub fn database_url(&self) -> &str {
        &self._database.url
    }

    /// Marks a user as staff, as an administrator would.
    pub async fn make_staff(&self, username: &str) {
        let sql = "UPDATE users SET is_staff = TRUE WHERE username = $1";
        execute(&self.db, sql, username).await;
    }

    pub async fn unmake_staff(&self, username: &str) {
        let sql = "UPDATE users SET is_staff = FALSE WHERE username = $1";
        execute(&self.db, sql, username).await;
    }

    /// Stops the server and waits until it has finished.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stops cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Response {
    /// The `Link: <…>; rel="next"` target, if any.
    pub fn next_link(&self) -> Option<String> {
        let link = self.headers.get("link")?.to_str().ok()?;
        let start = link.find('<')? + 1;
        let end = link.find('>')?;
        assert!(link.contains("rel=\"next\""), "{link}");
        Some(link[start..end].to_owned())
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
}

/// An HTTP client that keeps cookies and copies the `csrftoken` cookie into `X-CSRFToken` on
/// writes, as the original's web client does.
#[derive(Clone)]
pub struct Client {
    base: String,
    jar: Arc<reqwest::cookie::Jar>,
    http: reqwest::Client,
    pub bearer: Option<String>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let http = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .build()
            .unwrap();
        Client {
            base: format!("http://{addr}"),
            jar,
            http,
            bearer: None,
        }
    }

    pub fn with_bearer(addr: SocketAddr, token: &str) -> Client {
        let mut client = Client::new(addr);
        client.bearer = Some(token.to_owned());
        client
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        let url = self.base.parse().unwrap();
        let header = self.jar.cookies(&url)?;
        header.to_str().ok()?.split("; ").find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
    }

    pub fn csrf(&self) -> Option<String> {
        self.cookie("csrftoken")
    }

    /// Sets a cookie by hand (e.g. to replay an old session).
    pub fn set_cookie(&self, name: &str, value: &str) {
        let url = self.base.parse().unwrap();
        self.jar
            .add_cookie_str(&format!("{name}={value}; Path=/"), &url);
    }

    pub async fn login(&self, username: &str, password: &str) -> Response {
        let response = self
            .post(
                "/api/login/",
                &json!({ "username": username, "password": password }),
            )
            .await;
        assert_eq!(response.status, StatusCode::OK, "login: {}", response.body);
        response
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut builder = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(token) = &self.bearer {
            builder = builder.bearer_auth(token);
        }
        builder
    }

    pub async fn send(&self, builder: reqwest::RequestBuilder) -> Response {
        let response = builder.send().await.expect("request reaches the server");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("response body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("JSON body, got {:?}", String::from_utf8_lossy(&bytes)))
        };
        Response {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.send(self.request(Method::GET, path)).await
    }

    /// A write with a JSON body and the CSRF header (when the jar has a token).
    pub async fn write(&self, method: Method, path: &str, body: Option<&Value>) -> Response {
        let mut builder = self.request(method, path);
        if let Some(token) = self.csrf() {
            builder = builder.header("X-CSRFToken", token);
        }
        if let Some(body) = body {
            builder = builder.json(body);
        }
        self.send(builder).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.write(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Response {
        self.write(Method::PUT, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Response {
        self.write(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.write(Method::DELETE, path, None).await
    }

    /// Creates a chat named `name` with the given participant ids; returns its id.
    pub async fn create_chat(&self, name: &str, participant_ids: &[i64]) -> i64 {
        let response = self
            .post(
                "/api/chats/",
                &json!({ "name": name, "participant_ids": participant_ids }),
            )
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
        response.body["id"].as_i64().unwrap()
    }

    /// Sends a message over REST; returns the message object.
    pub async fn send_message(&self, chat_id: i64, content: &str) -> Value {
        let response = self
            .post(
                &format!("/api/chats/{chat_id}/send_message/"),
                &json!({ "content": content }),
            )
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
        response.body
    }

    /// The chat's message history (the default page).
    pub async fn chat_messages(&self, chat_id: i64) -> Value {
        let response = self.get(&format!("/api/chats/{chat_id}/messages/")).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.body);
        response.body
    }

    pub async fn me(&self) -> Value {
        let response = self.get("/api/me/").await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.body);
        response.body
    }
}

/// The usernames of a list of user objects.
pub fn usernames(users: &Value) -> Vec<String> {
    users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_owned())
        .collect()
}

pub fn id(value: &Value) -> i64 {
    value["id"].as_i64().expect("an id")
}

/// What a test socket saw next.
#[derive(Debug)]
pub enum WsEvent {
    Json(Value),
    Closed(Option<u16>),
}

/// A WebSocket client for tests, authenticated like the `Client` it was opened from.
pub struct WsClient {
    pub stream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    /// The subprotocol the server named in its answer (`Sec-WebSocket-Protocol`).
    pub subprotocol: Option<String>,
    /// Who is online (id → username), from the presence frames read so far: a full list
    /// replaces it, a delta changes it.
    online: std::collections::BTreeMap<i64, String>,
}

#[derive(Default)]
pub struct WsOptions<'a> {
    pub query: &'a str,
    pub origin: Option<&'a str>,
    /// A small socket receive buffer, to make a client that stops reading fall behind quickly.
    pub recv_buffer: Option<u32>,
    /// Subprotocols offered in `Sec-WebSocket-Protocol`, comma-separated.
    pub protocols: Option<&'a str>,
    /// The local address to connect from (any of 127/8 reaches the server), for the caps kept
    /// per address; `127.0.0.1` when unset.
    pub source: Option<std::net::IpAddr>,
}

/// Offers the extended protocol in the handshake header.
pub const V2: WsOptions<'static> = WsOptions {
    query: "",
    origin: None,
    recv_buffer: None,
    protocols: Some("mrm.v2"),
    source: None,
};

impl Client {
    fn ws_request(
        &self,
        path: &str,
        origin: Option<&str>,
        protocols: Option<&str>,
    ) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("{}{}", self.base.replacen("http://", "ws://", 1), path);
        let mut request = url.into_client_request().unwrap();
        let headers = request.headers_mut();
        let cookies = self.jar.cookies(&self.base.parse().unwrap());
        if let Some(cookies) = cookies {
            headers.insert("cookie", cookies.to_str().unwrap().parse().unwrap());
        }
        if let Some(token) = &self.bearer {
            headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        if let Some(origin) = origin {
            headers.insert("origin", origin.parse().unwrap());
        }
        if let Some(protocols) = protocols {
            headers.insert("sec-websocket-protocol", protocols.parse().unwrap());
        }
        request
    }

    /// Opens `/ws/chat/{chat}/`; `Err(status)` when the handshake is refused.
    pub async fn ws_with(&self, chat_id: i64, options: WsOptions<'_>) -> Result<WsClient, u16> {
        let path = format!("/ws/chat/{chat_id}/{}", options.query);
        self.ws_path(&path, options).await
    }

    /// Opens `/ws/ai-chat/{id}/`; `Err(status)` when the handshake is refused.
    pub async fn ai_ws(&self, ai_chat_id: i64) -> Result<WsClient, u16> {
        self.ai_ws_with(ai_chat_id, WsOptions::default()).await
    }

    /// Opens `/ws/ai-chat/{id}/` with `options`; `Err(status)` when the handshake is refused.
    pub async fn ai_ws_with(
        &self,
        ai_chat_id: i64,
        options: WsOptions<'_>,
    ) -> Result<WsClient, u16> {
        let path = format!("/ws/ai-chat/{ai_chat_id}/{}", options.query);
        self.ws_path(&path, options).await
    }

    /// Opens `/ws/ai-chat/{id}/` speaking `mrm.v2` (asked for in the header).
    pub async fn ai_ws_v2(&self, ai_chat_id: i64) -> WsClient {
        let socket = self.ai_ws_with(ai_chat_id, V2).await.expect("socket opens");
        assert_eq!(socket.subprotocol.as_deref(), Some("mrm.v2"));
        socket
    }

    async fn ws_path(&self, path: &str, options: WsOptions<'_>) -> Result<WsClient, u16> {
        let request = self.ws_request(path, options.origin, options.protocols);
        let addr: SocketAddr = self.base.trim_start_matches("http://").parse().unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = options.recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        if let Some(source) = options.source {
            socket.bind(SocketAddr::new(source, 0)).unwrap();
        }
        let tcp = socket.connect(addr).await.unwrap();
        match tokio_tungstenite::client_async(
            request,
            tokio_tungstenite::MaybeTlsStream::Plain(tcp),
        )
        .await
        {
            Ok((stream, response)) => Ok(WsClient {
                stream,
                subprotocol: response
                    .headers()
                    .get("sec-websocket-protocol")
                    .map(|v| v.to_str().unwrap().to_owned()),
                online: Default::default(),
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(err) => panic!("handshake failed: {err}"),
        }
    }

    /// Opens `/ws/chat/{id}/` speaking the original protocol.
    pub async fn ws(&self, chat_id: i64) -> WsClient {
        self.ws_with(chat_id, WsOptions::default())
            .await
            .expect("socket opens")
    }

    /// Opens `/ws/chat/{id}/` speaking `mrm.v2` (asked for in the header).
    pub async fn ws_v2(&self, chat_id: i64) -> WsClient {
        let socket = self.ws_with(chat_id, V2).await.expect("socket opens");
        assert_eq!(socket.subprotocol.as_deref(), Some("mrm.v2"));
        socket
    }

    pub async fn ws_after(&self, chat_id: i64, after_seq: i64) -> WsClient {
        let query = format!("?after_seq={after_seq}");
        self.ws_with(
            chat_id,
            WsOptions {
                query: &query,
                ..Default::default()
            },
        )
        .await
        .expect("socket opens")
    }
}

impl WsClient {
    pub async fn send_json(&mut self, value: Value) {
        self.send_text(value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        use futures_util::SinkExt;
        self.stream
            .send(tokio_tungstenite::tungstenite::Message::Text(text.into()))
            .await
            .expect("socket send");
    }

    pub async fn send_raw(&mut self, message: tokio_tungstenite::tungstenite::Message) {
        use futures_util::SinkExt;
        let _ = self.stream.send(message).await;
    }

    /// The next text frame or the close, skipping pings; panics after 30 s of silence (the
    /// machines running the suite are small and shared: a generous bound, never a timing claim).
    pub async fn next(&mut self) -> WsEvent {
        self.next_within(std::time::Duration::from_secs(30))
            .await
            .expect("a frame within 30 s")
    }

    pub async fn next_within(&mut self, wait: std::time::Duration) -> Option<WsEvent> {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()?;
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(&text).unwrap();
                    if frame["type"] == "presence" {
                        self.apply_presence(&frame);
                    }
                    return Some(WsEvent::Json(frame));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Some(WsEvent::Closed(frame.map(|f| u16::from(f.code))))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Some(WsEvent::Closed(None)),
            }
        }
    }

    /// The next frame of the given `type`, skipping others (presence, typing).
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            match self.next().await {
                WsEvent::Json(value) if value["type"] == kind => return value,
                WsEvent::Json(_) => continue,
                WsEvent::Closed(code) => {
                    panic!("socket closed ({code:?}) while waiting for {kind}")
                }
            }
        }
    }

    /// The next frame whose `type` is one of `kinds`, skipping others.
    pub async fn next_of_any(&mut self, kinds: &[&str]) -> Value {
        loop {
            match self.next().await {
                WsEvent::Json(value) if kinds.iter().any(|k| value["type"] == *k) => return value,
                WsEvent::Json(_) => continue,
                WsEvent::Closed(code) => {
                    panic!("socket closed ({code:?}) while waiting for {kinds:?}")
                }
            }
        }
    }

    fn apply_presence(&mut self, frame: &Value) {
        let members = |key: &str| {
            frame[key]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    (
                        m["id"].as_i64().unwrap(),
                        m["username"].as_str().unwrap().to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        };
        if frame.get("online").is_some() {
            self.online = members("online").into_iter().collect();
        } else {
            for (id, _) in members("left") {
                self.online.remove(&id);
            }
            self.online.extend(members("joined"));
        }
    }

    /// Who is online by the presence frames read so far, by user id.
    pub fn online(&self) -> Vec<String> {
        self.online.values().cloned().collect()
    }

    /// Reads presence frames (skipping others) until exactly `expected` are online, by user id;
    /// returns how long that took.
    pub async fn presence_becomes(&mut self, expected: &[&str]) -> std::time::Duration {
        let started = std::time::Instant::now();
        loop {
            self.next_of("presence").await;
            if self.online() == expected {
                return started.elapsed();
            }
        }
    }

    /// The next chat message object.
    pub async fn next_message(&mut self) -> Value {
        self.next_of("message").await["message"].clone()
    }

    /// Skips frames until the socket closes; returns the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            if let WsEvent::Closed(code) = self.next().await {
                return code;
            }
        }
    }

    /// Skips frames until the socket closes; returns the close code, or panics when it is not
    /// closed within `wait`.
    pub async fn closed_within(&mut self, wait: std::time::Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Some(WsEvent::Closed(code)) => return code,
                Some(WsEvent::Json(_)) => continue,
                None => panic!("the socket was not closed within {wait:?}"),
            }
        }
    }
}

/// Starts `mrm-chat serve --bind 127.0.0.1:0` as configured by `command` and returns the process,
/// the address it reported, and the directory it keeps attachments in (removed when dropped).
/// Its output is drained on a thread (and echoed with `MRM_TEST_LOG`).
pub fn start_server_process(
    command: &mut std::process::Command,
) -> (std::process::Child, SocketAddr, tempfile::TempDir) {
    use std::io::BufRead;
    let files = tempfile::tempdir().expect("temporary directory");
    let mut child = command
        .env("MRM_ATTACHMENTS_DIR", files.path())
        .args(["serve", "--bind", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start mrm-chat");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if std::env::var_os("MRM_TEST_LOG").is_some() {
                eprintln!("[server] {line}");
            }
            let _ = tx.send(line);
        }
    });
    let addr = loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the server reports its address");
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    (child, addr, files)
}

/// Runs one statement with one text parameter straight on the database, as an operator would.
pub async fn execute(db: &Db, sql: &'static str, param: &str) {
    match db {
        Db::Sqlite(sqlite) => {
            let mut conn = sqlite.acquire().await.expect("a SQLite connection");
            sqlx::query(sql)
                .bind(param)
                .execute(&mut *conn)
                .await
                .map(|_| ())
        }
        Db::Postgres(pool) => sqlx::query(sql).bind(param).execute(pool).await.map(|_| ()),
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A message object with its sender's email hidden, as a viewer other than the sender (and not
/// staff) is shown it.
pub fn without_email(message: &Value) -> Value {
    let mut message = message.clone();
    message["sender"]["email"] = Value::from("");
    message
}

/// Frames of one reply on an AI socket until its `assistant_message`: (deltas joined, final).
pub async fn read_reply(socket: &mut WsClient) -> (String, Value) {
    let mut text = String::new();
    loop {
        let frame = socket
            .next_of_any(&["assistant_delta", "assistant_message"])
            .await;
        if frame["type"] == "assistant_delta" {
            text.push_str(frame["message"]["delta"].as_str().unwrap());
        } else {
            return (text, frame["message"].clone());
        }
    }
}
