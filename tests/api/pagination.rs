use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{id, TestApp};

fn ids(page: &Value) -> Vec<i64> {
    page.as_array().unwrap().iter().map(id).collect()
}

#[tokio::test]
async fn cursors_walk_a_250_message_history_without_gaps_or_duplicates() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let chat = alice.create_chat("long", &[]).await;
    let other = alice.create_chat("interleaved", &[]).await;
    let mut sent = Vec::new();
    for i in 0..250 {
        sent.push(id(&alice.send_message(chat, &format!("message {i}")).await));
        if i % 50 == 0 {
            alice.send_message(other, "noise").await;
        }
    }

    // Backwards from the newest, following Link headers: 100, 100, 50.
    let mut path = format!("/api/chats/{chat}/messages/");
    let mut pages = Vec::new();
    loop {
        let response = alice.get(&path).await;
        assert_eq!(response.status, StatusCode::OK);
        let page = ids(&response.body);
        assert!(
            page.windows(2).all(|w| w[0] < w[1]),
            "each page is oldest first"
        );
        pages.push(page);
        match response.next_link() {
            Some(next) => path = next,
            None => break,
        }
    }
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [100, 100, 50]
    );
    assert_eq!(pages[0], sent[150..]);
    let mut walked: Vec<i64> = pages.into_iter().rev().flatten().collect();
    assert_eq!(walked, sent);

    // Forwards from the start with a smaller page.
    let mut path = format!("/api/chats/{chat}/messages/?after=0&limit=60");
    walked.clear();
    let mut count = 0;
    loop {
        let response = alice.get(&path).await;
        walked.extend(ids(&response.body));
        count += 1;
        match response.next_link() {
            Some(next) => path = next,
            None => break,
        }
    }
    assert_eq!(count, 5);
    assert_eq!(walked, sent);
    assert_eq!(walked.iter().collect::<BTreeSet<_>>().len(), 250);

    // A window between two cursors.
    let response = alice
        .get(&format!(
            "/api/chats/{chat}/messages/?after={}&before={}",
            sent[9], sent[20]
        ))
        .await;
    assert_eq!(ids(&response.body), sent[10..20]);

    // Sequence numbers run 1..=250 with no hole.
    let response = alice
        .get(&format!("/api/chats/{chat}/messages/?after=0&limit=500"))
        .await;
    let seqs: Vec<i64> = response
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=250).collect::<Vec<_>>());

    // The chat object nests only the newest 100.
    let chat_body = alice.get(&format!("/api/chats/{chat}/")).await.body;
    assert_eq!(ids(&chat_body["messages"]), sent[150..]);
    let listed = alice.get("/api/chats/").await.body;
    assert_eq!(ids(&listed[0]["messages"]), sent[150..]);
    assert_eq!(listed[1]["messages"].as_array().unwrap().len(), 5);

    // Across chats, the same rules.
    let response = alice.get("/api/messages/?limit=10").await;
    assert_eq!(ids(&response.body), sent[240..]);
    assert!(response.next_link().is_some());
}

#[tokio::test]
async fn bad_list_parameters_are_400() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let chat = alice.create_chat("c", &[]).await;
    for query in ["limit=0", "limit=501", "limit=ten", "before=x", "after=-5"] {
        for path in [
            format!("/api/chats/{chat}/messages/?{query}"),
            format!("/api/messages/?{query}"),
            format!("/api/chats/?{query}"),
        ] {
            let response = alice.get(&path).await;
            assert_eq!(response.status, StatusCode::BAD_REQUEST, "{path}");
            assert!(response.body.is_object(), "{path}");
        }
    }
    let response = alice.get("/api/messages/?limit=501").await;
    assert_eq!(
        response.body,
        json!({"limit": ["Ensure this value is less than or equal to 500."]})
    );
    assert_eq!(
        alice.get("/api/messages/?limit=500").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_chat_list_pages_by_chat() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(alice.create_chat(&format!("c{i}"), &[]).await);
    }
    let response = alice.get("/api/chats/?limit=3").await;
    assert_eq!(ids(&response.body), created[4..]);
    let response = alice.get(&response.next_link().unwrap()).await;
    assert_eq!(ids(&response.body), created[1..4]);
    let response = alice.get(&response.next_link().unwrap()).await;
    assert_eq!(ids(&response.body), created[..1]);
    assert!(response.next_link().is_none());
}
