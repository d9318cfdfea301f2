//! A fake OpenAI-compatible chat-completions server on a loopback port. It records every request
//! and answers from a script: a normal reply (streamed in chunks, with usage), a slow stream, a
//! stall, an error status, or garbage. It notices when a client hangs up mid-stream.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use serde_json::{json, Value};
use tokio::sync::Notify;

pub const MODEL: &str = "fake-model";

#[derive(Debug, Clone)]
pub enum Behaviour {
    /// The reply in word-sized chunks, then usage.
    Reply {
        text: String,
        prompt_tokens: i64,
        completion_tokens: i64,
    },
    /// These chunks, `delay` apart, then usage.
    Slow {
        chunks: Vec<String>,
        delay: Duration,
    },
    /// Accepts the request and never answers.
    Stall,
    /// Answers this status with a body a client must never see.
    Status(u16),
    /// A 200 event stream whose events are not JSON.
    Garbage,
    /// These chunks, then the body ends with no finish reason and no `[DONE]`.
    Truncated(Vec<String>),
    /// These chunks and a finish reason, then `[DONE]` with no usage, as providers that do not
    /// count streamed replies answer.
    NoUsage(Vec<String>),
}

#[derive(Default)]
struct Shared {
    /// A context window this model declares: a prompt over it (counted as [`prompt_tokens`]
    /// counts) is refused with 400 `context_length_exceeded`, as OpenAI refuses one.
    window: Mutex<Option<i64>>,
    requests: Mutex<Vec<Value>>,
    authorizations: Mutex<Vec<String>>,
    script: Mutex<VecDeque<Behaviour>>,
    hangups: AtomicUsize,
    hung_up: Notify,
    /// What `GET /v1/models` lists; `None` answers 404, as servers that cannot list do.
    models: Mutex<Option<Vec<String>>>,
    /// `GET /v1/models` requests received.
    listings: AtomicUsize,
}

pub struct FakeOpenAi {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeOpenAi {
    pub async fn start() -> FakeOpenAi {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .route("/v1/models", axum::routing::get(models))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeOpenAi { addr, shared }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues how the next requests are answered (after the queue, an echo of the last message).
    pub fn then(&self, behaviour: Behaviour) -> &Self {
        self.shared.script.lock().unwrap().push_back(behaviour);
        self
    }

    /// Declares a context window: prompts over `tokens` are refused from now on.
    pub fn with_context_window(&self, tokens: i64) -> &Self {
        *self.shared.window.lock().unwrap() = Some(tokens);
        self
    }

    /// Lists these models at `GET /v1/models` from now on.
    pub fn with_models(&self, models: &[&str]) -> &Self {
        *self.shared.models.lock().unwrap() = Some(models.iter().map(|m| m.to_string()).collect());
        self
    }

    /// How many times the models were listed.
    pub fn listings(&self) -> usize {
        self.shared.listings.load(Ordering::SeqCst)
    }

    /// The model each chat-completions request named, in order.
    pub fn models_asked(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| r["model"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    pub fn requests(&self) -> Vec<Value> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn last_request(&self) -> Value {
        self.requests()
            .last()
            .cloned()
            .expect("the provider was called")
    }

    pub fn authorizations(&self) -> Vec<String> {
        self.shared.authorizations.lock().unwrap().clone()
    }

    /// Waits until a client has hung up mid-stream; false after 5 s.
    pub async fn wait_for_hangup(&self) -> bool {
        self.wait_for_hangup_within(Duration::from_secs(5)).await
    }

    pub async fn wait_for_hangup_within(&self, limit: Duration) -> bool {
        let wait = async {
            while self.shared.hangups.load(Ordering::SeqCst) == 0 {
                tokio::time::timeout(Duration::from_millis(20), self.shared.hung_up.notified())
                    .await
                    .ok();
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

pub fn reply(text: &str, prompt_tokens: i64, completion_tokens: i64) -> Behaviour {
    Behaviour::Reply {
        text: text.to_owned(),
        prompt_tokens,
        completion_tokens,
    }
}

pub fn slow(chunks: &[&str], delay_ms: u64) -> Behaviour {
    Behaviour::Slow {
        chunks: chunks.iter().map(|c| c.to_string()).collect(),
        delay: Duration::from_millis(delay_ms),
    }
}

/// Counts a hang-up when the response body is dropped before it finished.
struct HangupGuard {
    shared: Arc<Shared>,
    finished: bool,
}

impl HangupGuard {
    fn disarm(&mut self) {
        self.finished = true;
    }
}

impl Drop for HangupGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.hangups.fetch_add(1, Ordering::SeqCst);
            self.shared.hung_up.notify_waiters();
        }
    }
}

fn chunk(content: Option<&str>, finish: Option<&str>) -> String {
    let delta = match content {
        Some(text) => json!({ "content": text }),
        None => json!({}),
    };
    let event = json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "model": MODEL,
        "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
    });
    format!("data: {event}\n\n")
}

fn usage_chunk(prompt: i64, completion: i64) -> String {
    let event = json!({
        "id": "chatcmpl-fake",
        "choices": [],
        "usage": { "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion },
    });
    format!("data: {event}\n\ndata: [DONE]\n\n")
}

fn event_stream(shared: Arc<Shared>, parts: Vec<String>, delay: Duration) -> Response {
    let guard = HangupGuard {
        shared,
        finished: false,
    };
    let stream = futures_util::stream::unfold(
        (parts.into_iter(), guard, true),
        move |(mut parts, mut guard, first)| async move {
            let part = match parts.next() {
                Some(part) => part,
                None => {
                    guard.disarm();
                    return None;
                }
            };
            if !first {
                tokio::time::sleep(delay).await;
            }
            Some((
                Ok::<_, std::convert::Infallible>(part),
                (parts, guard, false),
            ))
        },
    );
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn models(State(shared): State<Arc<Shared>>) -> Response {
    shared.listings.fetch_add(1, Ordering::SeqCst);
    match shared.models.lock().unwrap().clone() {
        Some(models) => Json(json!({
            "object": "list",
            "data": models.iter().map(|id| json!({"id": id, "object": "model", "owned_by": "fake"})).collect::<Vec<_>>(),
        }))
        .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    shared.requests.lock().unwrap().push(body.clone());
    if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        shared.authorizations.lock().unwrap().push(auth.to_owned());
    }
    let window = *shared.window.lock().unwrap();
    if let Some(window) = window {
        let counted = prompt_tokens(&body);
        if counted > window {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": {
                    "message": format!("This model's maximum context length is {window} tokens; your messages resulted in {counted} tokens."),
                    "type": "invalid_request_error",
                    "code": "context_length_exceeded",
                }})),
            )
                .into_response();
        }
    }
    let next = shared.script.lock().unwrap().pop_front();
    let behaviour = next.unwrap_or_else(|| {
        let last = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .map(|m| m["content"].as_str().unwrap_or("").to_owned());
        reply(&format!("Echo: {}", last.unwrap_or_default()), 10, 5)
    });
    let streaming = body["stream"] == json!(true);
    match behaviour {
        Behaviour::Reply { text, prompt_tokens, completion_tokens } => {
            if !streaming {
                return Json(json!({
                    "choices": [{ "message": { "role": "assistant", "content": text }, "finish_reason": "stop" }],
                    "usage": { "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens },
                }))
                .into_response();
            }
            let mut parts: Vec<String> = text.split_inclusive(' ').map(|w| chunk(Some(w), None)).collect();
            parts.push(chunk(None, Some("stop")));
            parts.push(usage_chunk(prompt_tokens, completion_tokens));
            event_stream(shared, parts, Duration::ZERO)
        }
        Behaviour::Slow { chunks, delay } => {
            let mut parts: Vec<String> = chunks.iter().map(|c| chunk(Some(c), None)).collect();
            parts.push(chunk(None, Some("stop")));
            parts.push(usage_chunk(7, chunks.len() as i64));
            event_stream(shared, parts, delay)
        }
        Behaviour::Stall => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Behaviour::Status(code) => (
            StatusCode::from_u16(code).unwrap(),
            Json(json!({ "error": { "message": "secret upstream detail: key sk-live-abc is over quota" } })),
        )
            .into_response(),
        Behaviour::NoUsage(chunks) => {
            let mut parts: Vec<String> = chunks.iter().map(|c| chunk(Some(c), None)).collect();
            parts.push(chunk(None, Some("stop")));
            parts.push("data: [DONE]\n\n".to_owned());
            event_stream(shared, parts, Duration::ZERO)
        }
        Behaviour::Truncated(chunks) => {
            let parts = chunks.iter().map(|c| chunk(Some(c), None)).collect();
            event_stream(shared, parts, Duration::ZERO)
        }
        Behaviour::Garbage => Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from("data: this is not json\n\n"))
            .unwrap(),
    }
}

/// A request's prompt tokens as this fake counts them: one token per 4 characters of each role
/// and content (rounded up), 3 per message, 3 priming the reply (the chat format's overhead, as
/// OpenAI's cookbook counts it).
pub fn prompt_tokens(request: &Value) -> i64 {
    let quarter = |text: &str| (text.chars().count() as i64 + 3) / 4;
    request["messages"]
        .as_array()
        .map(|messages| {
            messages
                .iter()
                .map(|m| {
                    3 + quarter(m["role"].as_str().unwrap_or(""))
                        + quarter(m["content"].as_str().unwrap_or(""))
                })
                .sum::<i64>()
        })
        .unwrap_or(0)
        + 3
}
