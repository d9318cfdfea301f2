//! `GET /metrics`: behind its token, and its counters moving under load.

use reqwest::StatusCode;
use serde_json::json;

use crate::{
    fake_openai::{FakeOpenAi, MODEL},
    helpers::{id, TestApp},
};

const TOKEN: &str = "scrape-token-0123456789";

/// The value of the series `name` whose labels include `labels`, summed over the others.
pub(crate) fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, number) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| number.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

async fn scrape(app: &TestApp) -> String {
    let response = reqwest::Client::new()
        .get(format!("http://{}/metrics", app.addr))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    response.text().await.unwrap()
}

#[tokio::test]
async fn metrics_need_their_token_and_move_under_load() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |config| {
        config.metrics_token = Some(mrm_chat::config::Secret::new(TOKEN));
    })
    .await;
    let anonymous = reqwest::Client::new();
    let url = format!("http://{}/metrics", app.addr);
    assert_eq!(
        anonymous.get(&url).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let wrong = anonymous
        .get(&url)
        .bearer_auth("scrape-token-0123456780")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let before = scrape(&app).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let chat = alice.create_chat("busy", &[id(&bob.me().await)]).await;
    let mut watching = bob.ws_v2(chat).await;
    let mut original = alice.ws(chat).await;
    for i in 0..40 {
        alice.send_message(chat, &format!("m{i}")).await;
    }
    for _ in 0..40 {
        watching.next_message().await;
        original.next_message().await;
    }
    let ai_chat = alice
        .post("/api/ai/chats/", &json!({"title": "t"}))
        .await
        .body;
    let asked = alice
        .post(
            &format!("/api/ai/chats/{}/send_message/", id(&ai_chat)),
            &json!({"content": "hi"}),
        )
        .await;
    assert_eq!(asked.status, StatusCode::OK, "{}", asked.body);

    let after = scrape(&app).await;
    let sends = [
        ("route", "/api/chats/{id}/send_message"),
        ("method", "POST"),
        ("status", "201"),
    ];
    assert_eq!(value(&before, "mrm_http_requests_total", &sends), 0.0);
    assert_eq!(
        value(&after, "mrm_http_requests_total", &sends),
        40.0,
        "{after}"
    );
    assert!(
        value(
            &after,
            "mrm_http_request_duration_seconds_count",
            &sends[..2]
        ) >= 40.0
    );
    let frames = value(&after, "mrm_frames_delivered_total", &[])
        - value(&before, "mrm_frames_delivered_total", &[]);
    assert!(frames >= 80.0, "two sockets saw 40 messages each: {frames}");
    assert!(value(&after, "mrm_delivery_lag_seconds_count", &[]) >= 80.0);
    assert_eq!(
        value(
            &after,
            "mrm_sockets_open",
            &[("kind", "chat"), ("protocol", "v2")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "mrm_sockets_open",
            &[("kind", "chat"), ("protocol", "original")]
        ),
        1.0
    );
    assert_eq!(value(&after, "mrm_rooms", &[]), 1.0);
    assert!(value(&after, "mrm_message_writer_batch_size_sum", &[]) >= 40.0);
    assert!(
        after.contains("mrm_db_connections{state=\"idle\"}"),
        "{after}"
    );
    let ai = [("model", MODEL), ("outcome", "stop")];
    assert_eq!(value(&after, "mrm_ai_requests_total", &ai), 1.0, "{after}");
    assert_eq!(
        value(
            &after,
            "mrm_ai_tokens_total",
            &[("model", MODEL), ("kind", "prompt")]
        ),
        10.0
    );
    assert_eq!(
        value(
            &after,
            "mrm_ai_tokens_total",
            &[("model", MODEL), ("kind", "completion")]
        ),
        5.0
    );
    assert_eq!(
        value(
            &after,
            "mrm_ai_first_token_seconds_count",
            &[("model", MODEL)]
        ),
        1.0
    );
    // A 404 is counted under no route, never under its path; an odd method under `other`.
    alice.get("/api/no/such/thing/42").await;
    let odd = reqwest::Method::from_bytes(b"BREW").unwrap();
    reqwest::Client::new()
        .request(odd, format!("http://{}/api/chats/", app.addr))
        .send()
        .await
        .unwrap();
    let later = scrape(&app).await;
    assert_eq!(
        value(
            &later,
            "mrm_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ),
        1.0
    );
    assert!(!later.contains("/api/no/such/thing/42"));
    assert_eq!(
        value(&later, "mrm_http_requests_total", &[("method", "other")]),
        1.0
    );
    assert!(!later.contains("BREW"));

    // Sockets that go are counted out.
    drop(watching);
    drop(original);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = scrape(&app).await;
        if value(&now, "mrm_sockets_open", &[("kind", "chat")]) == 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sockets were counted out: {now}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn without_a_token_there_is_no_metrics_endpoint() {
    let app = TestApp::spawn().await;
    let response = app.client().get("/metrics").await;
    assert_eq!(response.status, StatusCode::NOT_FOUND);
    app.stop().await;
}
