//! A client for any OpenAI-compatible chat-completions API (OpenAI, Ollama, vLLM, llama.cpp,
//! gateways): streaming with server-sent events, usage included, retries with backoff on 429 and
//! 5xx, and a timeout on the answer and between chunks.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::{future::BoxFuture, StreamExt};
use serde_json::{json, Value};

use super::provider::{ChatMessage, ChatProvider, EventStream, ProviderError, StreamEvent};
use crate::{
    config::{AiConfig, Secret},
    store::ai::Tokens,
};

/// A [`ChatProvider`] for an OpenAI-compatible `POST {base_url}/chat/completions` endpoint
/// (OpenAI Chat Completions API), authenticated with a bearer API key when it has one.
pub struct OpenAiProvider {
    http: reqwest::Client,
    base_url: String,
    key: Option<Secret>,
    timeout: Duration,
    retries: u32,
}

/// Most bytes of a `GET /models` answer that are read: a list of a few thousand models.
const MODELS_BODY_LIMIT: usize = 1 << 20;

impl OpenAiProvider {
    /// A client for the API at `base_url` (ending before `/chat/completions`), with the
    /// timeout and retries of `config` (`OPENAI_TIMEOUT_SECONDS`, `OPENAI_RETRIES`).
    pub fn new(base_url: &str, key: Option<Secret>, config: &AiConfig) -> anyhow::Result<Self> {
        // Trusts the Mozilla roots built into the binary, as before reqwest 0.13 (whose default
        // is the operating system's store), so the server needs no CA bundle on its host.
        let roots = webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .map(|der| reqwest::Certificate::from_der(der))
            .collect::<reqwest::Result<Vec<_>>>()?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .tls_certs_only(roots)
            .build()?;
        Ok(Self {
            http,
            base_url: base_url.to_owned(),
            key,
            timeout: config.timeout,
            retries: config.retries,
        })
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(key) => request.bearer_auth(key.expose()),
            None => request,
        }
    }

    async fn models(&self) -> Result<Vec<String>, ProviderError> {
        let request = self.authorized(self.http.get(format!("{}/models", self.base_url)));
        let read = async {
            let response = request
                .send()
                .await
                .map_err(|e| ProviderError::Transport(e.to_string()))?;
            if !response.status().is_success() {
                return Err(ProviderError::Status(response.status().as_u16()));
            }
            let mut body = Vec::new();
            let mut chunks = response.bytes_stream();
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(|e| ProviderError::Transport(e.to_string()))?;
                if body.len() + chunk.len() > MODELS_BODY_LIMIT {
                    return Err(ProviderError::Malformed(
                        "the list of models is too long".into(),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            let value: Value = serde_json::from_slice(&body)
                .map_err(|e| ProviderError::Malformed(e.to_string()))?;
            let data = value
                .get("data")
                .and_then(Value::as_array)
                .ok_or_else(|| ProviderError::Malformed("no `data` list of models".into()))?;
            Ok(data
                .iter()
                .filter_map(|m| m.get("id").and_then(Value::as_str))
                .filter(|id| !id.is_empty() && id.len() <= 200)
                .map(str::to_owned)
                .collect())
        };
        tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| ProviderError::Timeout)?
    }

    async fn open(
        &self,
        model: &str,
        messages: Vec<ChatMessage>,
    ) -> Result<EventStream, ProviderError> {
        let endpoint = format!("{}/chat/completions", self.base_url);
        let body = json!({
            "model": model,
            "messages": messages,
            "stream": true,
            "stream_options": { "include_usage": true },
        });
        let mut attempt = 0;
        loop {
            let sent = self
                .authorized(self.http.post(&endpoint))
                .json(&body)
                .send();
            let response = match tokio::time::timeout(self.timeout, sent).await {
                Err(_) => return Err(ProviderError::Timeout),
                Ok(Err(err)) if err.is_timeout() => return Err(ProviderError::Timeout),
                Ok(Err(err)) => Err(ProviderError::Transport(err.to_string())),
                Ok(Ok(response)) => Ok(response),
            };
            let retry_after = match response {
                Ok(response) if response.status().is_success() => return Ok(self.events(response)),
                Ok(response) => {
                    let status = response.status();
                    let retryable = status.as_u16() == 429 || status.is_server_error();
                    if !retryable || attempt >= self.retries {
                        let text = response.text().await.unwrap_or_default();
                        tracing::warn!(%status, body = %truncate(&text, 500), "AI provider refused the request");
                        return Err(ProviderError::Status(status.as_u16()));
                    }
                    response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .filter(|secs| secs.is_finite())
                        .map(|secs| Duration::from_secs_f64(secs.clamp(0.0, 30.0)))
                }
                Err(err) if attempt >= self.retries => return Err(err),
                Err(_) => None,
            };
            // Exponential backoff (250 ms, 500 ms, 1 s, …) unless the provider said how long.
            let wait = retry_after.unwrap_or(Duration::from_millis(250 * 2u64.pow(attempt)));
            tracing::info!(
                attempt = attempt + 1,
                wait_ms = wait.as_millis() as u64,
                "retrying the AI provider"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Turns the response into reply events: SSE chunks normally, or one JSON body from a server
    /// that ignored `stream`.
    fn events(&self, response: reqwest::Response) -> EventStream {
        let timeout = self.timeout;
        let is_json = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if is_json {
            return Box::pin(
                futures_util::stream::once(async move {
                    let body = tokio::time::timeout(timeout, response.bytes())
                        .await
                        .map_err(|_| ProviderError::Timeout)?
                        .map_err(|e| ProviderError::Transport(e.to_string()))?;
                    serde_json::from_slice::<Value>(&body)
                        .map_err(|e| ProviderError::Malformed(e.to_string()))
                })
                .flat_map(|parsed| {
                    futures_util::stream::iter(match parsed {
                        Ok(value) => whole_reply(&value),
                        Err(err) => vec![Err(err)],
                    })
                }),
            );
        }
        let sse = Box::pin(response.bytes_stream().eventsource());
        // Each SSE event becomes a batch of reply events; the stream ends at `[DONE]`, or after
        // the first error. A body that ends before `[DONE]` or a finish reason was cut short: an
        // error, not a complete reply.
        let batches = futures_util::stream::unfold(Some((sse, false)), move |state| async move {
            let (mut sse, mut finished) = state?;
            let batch = match tokio::time::timeout(timeout, sse.next()).await {
                Err(_) => vec![Err(ProviderError::Timeout)],
                Ok(None) if finished => return None,
                Ok(None) => vec![Err(ProviderError::Transport(
                    "the reply stream ended before it was complete".into(),
                ))],
                Ok(Some(Err(err))) => vec![Err(ProviderError::Transport(err.to_string()))],
                Ok(Some(Ok(event))) if event.data.trim() == "[DONE]" => return None,
                Ok(Some(Ok(event))) => match serde_json::from_str::<Value>(&event.data) {
                    Ok(chunk) => chunk_events(&chunk),
                    Err(err) => vec![Err(ProviderError::Malformed(err.to_string()))],
                },
            };
            finished |= batch
                .iter()
                .any(|e| matches!(e, Ok(StreamEvent::Finish(_))));
            let failed = batch.iter().any(Result::is_err);
            Some((
                futures_util::stream::iter(batch),
                (!failed).then_some((sse, finished)),
            ))
        });
        Box::pin(batches.flatten())
    }
}

impl ChatProvider for OpenAiProvider {
    fn stream(
        &self,
        model: &str,
        messages: Vec<ChatMessage>,
    ) -> BoxFuture<'_, Result<EventStream, ProviderError>> {
        let model = model.to_owned();
        Box::pin(async move { self.open(&model, messages).await })
    }

    fn list_models(&self) -> BoxFuture<'_, Result<Vec<String>, ProviderError>> {
        Box::pin(self.models())
    }
}

fn usage(value: &Value) -> Option<Tokens> {
    let usage = value.get("usage").filter(|u| u.is_object())?;
    let count = |key: &str| usage.get(key).and_then(Value::as_i64).unwrap_or(0);
    let (prompt, completion) = (count("prompt_tokens"), count("completion_tokens"));
    let total = usage
        .get("total_tokens")
        .and_then(Value::as_i64)
        .unwrap_or(prompt + completion);
    Some(Tokens {
        prompt,
        completion,
        total,
        estimated: false,
    })
}

/// The events of one streamed chunk: text, finish reason, usage (sent last, with no choices).
fn chunk_events(chunk: &Value) -> Vec<Result<StreamEvent, ProviderError>> {
    let Some(object) = chunk.as_object() else {
        return vec![Err(ProviderError::Malformed(
            "a chunk is not an object".into(),
        ))];
    };
    if let Some(error) = object.get("error") {
        return vec![Err(ProviderError::Malformed(format!(
            "error chunk: {}",
            truncate(&error.to_string(), 300)
        )))];
    }
    let mut events = Vec::new();
    let choice = object
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first());
    if let Some(choice) = choice {
        if let Some(text) = choice.pointer("/delta/content").and_then(Value::as_str) {
            if !text.is_empty() {
                events.push(Ok(StreamEvent::Delta(text.to_owned())));
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            events.push(Ok(StreamEvent::Finish(reason.to_owned())));
        }
    } else if object.get("usage").is_none() {
        return vec![Err(ProviderError::Malformed(
            "a chunk has neither choices nor usage".into(),
        ))];
    }
    if let Some(tokens) = usage(chunk) {
        events.push(Ok(StreamEvent::Usage(tokens)));
    }
    events
}

/// The events of a non-streamed reply.
fn whole_reply(value: &Value) -> Vec<Result<StreamEvent, ProviderError>> {
    let Some(choice) = value.pointer("/choices/0") else {
        return vec![Err(ProviderError::Malformed(
            "no choices in the reply".into(),
        ))];
    };
    let Some(text) = choice.pointer("/message/content").and_then(Value::as_str) else {
        return vec![Err(ProviderError::Malformed(
            "no message content in the reply".into(),
        ))];
    };
    let mut events = vec![Ok(StreamEvent::Delta(text.to_owned()))];
    if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
        events.push(Ok(StreamEvent::Finish(reason.to_owned())));
    }
    if let Some(tokens) = usage(value) {
        events.push(Ok(StreamEvent::Usage(tokens)));
    }
    events
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_become_events() {
        let chunk = json!({"choices": [{"delta": {"content": "Hel"}, "finish_reason": null}]});
        assert_eq!(
            chunk_events(&chunk),
            vec![Ok(StreamEvent::Delta("Hel".into()))]
        );
        let last = json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}});
        assert_eq!(
            chunk_events(&last),
            vec![Ok(StreamEvent::Usage(Tokens {
                prompt: 3,
                completion: 2,
                total: 5,
                estimated: false,
            }))]
        );
        let done = json!({"choices": [{"delta": {}, "finish_reason": "stop"}]});
        assert_eq!(
            chunk_events(&done),
            vec![Ok(StreamEvent::Finish("stop".into()))]
        );
        assert!(chunk_events(&json!([1])).iter().all(Result::is_err));
        assert!(chunk_events(&json!({"nothing": 1}))
            .iter()
            .all(Result::is_err));
    }

    #[test]
    fn a_whole_reply_is_one_delta() {
        let reply = json!({
            "choices": [{"message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1}
        });
        let events = whole_reply(&reply);
        assert_eq!(events[0], Ok(StreamEvent::Delta("Hi".into())));
        assert_eq!(
            events[2],
            Ok(StreamEvent::Usage(Tokens {
                prompt: 1,
                completion: 1,
                total: 2,
                estimated: false,
            }))
        );
    }
}
