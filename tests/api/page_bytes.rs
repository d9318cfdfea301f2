//! Every list page is bounded in bytes (`MRM_PAGE_BYTES`) as well as in items: a page of large
//! items ends early, and its `Link` continues right after it, so walking the links lists every
//! item exactly once.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{id, Client, TestApp};

const BUDGET: usize = 64 * 1024;

/// Follows `Link` headers from `path`; every page must be within the budget (or hold a single
/// item) and end early at least once. Returns the ids in the order listed.
async fn walk(client: &Client, path: &str) -> Vec<i64> {
    let mut path = path.to_owned();
    let mut listed = Vec::new();
    let mut pages = 0;
    loop {
        let response = client.get(&path).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.body);
        let items = response.body.as_array().unwrap();
        let bytes = serde_json::to_vec(&response.body).unwrap().len();
        assert!(
            bytes <= BUDGET || items.len() == 1,
            "a page of {} items and {bytes} bytes",
            items.len()
        );
        assert!(!items.is_empty());
        listed.extend(items.iter().map(id));
        pages += 1;
        match response.next_link() {
            Some(next) => path = next,
            None => break,
        }
    }
    assert!(pages > 1, "the budget ended a page early");
    listed
}

fn exactly_once(listed: &[i64], expected: &[i64]) {
    let unique: BTreeSet<i64> = listed.iter().copied().collect();
    assert_eq!(unique.len(), listed.len(), "no item twice: {listed:?}");
    assert_eq!(
        unique,
        expected.iter().copied().collect::<BTreeSet<_>>(),
        "every item"
    );
}

#[tokio::test]
async fn a_chat_list_of_large_chats_ends_pages_early_and_lists_every_chat_once() {
    let app = TestApp::spawn_with(|c| c.page_bytes = BUDGET).await;
    let alice = app.user("alice").await;
    let text = "x".repeat(2500);
    let mut chats = Vec::new();
    for i in 0..6 {
        let chat = alice.create_chat(&format!("chat {i}"), &[]).await;
        for _ in 0..10 {
            alice.send_message(chat, &text).await;
        }
        chats.push(chat);
    }
    // About 28 KB a chat: two fit in a page, whatever the limit asked.
    let first = alice.get("/api/chats/?limit=500").await;
    assert_eq!(first.body.as_array().unwrap().len(), 2);
    assert_eq!(first.body[0]["messages"].as_array().unwrap().len(), 10);

    let newest_first = walk(&alice, "/api/chats/?limit=500").await;
    exactly_once(&newest_first, &chats);
    let oldest_first = walk(&alice, "/api/chats/?limit=500&after=0").await;
    exactly_once(&oldest_first, &chats);
    assert!(oldest_first.windows(2).all(|w| w[0] < w[1]));

    // Flat lists end early the same way: 60 messages of 2,500 characters.
    let messages = walk(&alice, "/api/messages/?limit=500").await;
    assert_eq!(messages.len(), 60);
    assert_eq!(messages.iter().collect::<BTreeSet<_>>().len(), 60);
}

#[tokio::test]
async fn an_ai_chat_list_of_large_chats_ends_pages_early_and_lists_every_chat_once() {
    let app = TestApp::spawn_with(|c| c.page_bytes = BUDGET).await;
    let alice = app.user("alice").await;
    let prompt = "p".repeat(20_000);
    let mut chats = Vec::new();
    for i in 0..5 {
        let response = alice
            .post(
                "/api/ai/chats/",
                &json!({"title": format!("t{i}"), "system_prompt": prompt}),
            )
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
        chats.push(id(&response.body));
    }
    let first = alice.get("/api/ai/chats/?limit=100").await;
    assert_eq!(first.body.as_array().unwrap().len(), 3);
    let listed = walk(&alice, "/api/ai/chats/?limit=100").await;
    exactly_once(&listed, &chats);
}

#[tokio::test]
async fn the_ai_chat_list_reads_limit_as_every_list_does() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let response = alice.get("/api/ai/chats/?limit=0").await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        response.body,
        json!({"limit": ["Ensure this value is greater than or equal to 1."]})
    );
    let response = alice.get("/api/ai/chats/?limit=501").await;
    assert_eq!(
        response.body,
        json!({"limit": ["Ensure this value is less than or equal to 500."]})
    );
    let response = alice.get("/api/ai/chats/?limit=x").await;
    assert_eq!(
        response.body,
        json!({"limit": ["A valid integer is required."]})
    );
    let response = alice.get("/api/ai/chats/?limit=%202%20").await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    assert_eq!(response.body, Value::Array(vec![]));
}
