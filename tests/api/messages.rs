use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{id, TestApp};

#[tokio::test]
async fn send_message_returns_the_saved_message() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let me = alice.me().await;
    let chat = alice.create_chat("c", &[]).await;
    let first = alice.send_message(chat, "  hello, world  ").await;
    assert_eq!(first["chat"], chat);
    assert_eq!(first["sender"], me);
    assert_eq!(
        first["content"], "hello, world",
        "surrounding whitespace is stripped, as the original's serializer strips it"
    );
    assert_eq!(first["seq"], 1);
    let timestamp = first["timestamp"].as_str().unwrap();
    let pattern = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$").unwrap();
    assert!(pattern.is_match(timestamp), "{timestamp}");
    let second = alice.send_message(chat, "again").await;
    assert_eq!(second["seq"], 2);
    assert!(id(&second) > id(&first));

    let fetched = alice.get(&format!("/api/messages/{}/", id(&first))).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.body, first);
}

#[tokio::test]
async fn send_message_validates_content() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let chat = alice.create_chat("c", &[]).await;
    let path = format!("/api/chats/{chat}/send_message/");
    let cases = [
        (json!({}), "This field is required."),
        (json!({"content": ""}), "This field may not be blank."),
        (json!({"content": " \n "}), "This field may not be blank."),
        (
            json!({"content": "x".repeat(10_001)}),
            "Ensure this field has no more than 10000 characters.",
        ),
        (json!({"content": null}), "This field may not be null."),
        (
            json!({"content": "a\u{0}b"}),
            "Null characters are not allowed.",
        ),
        (json!({"content": {"nested": true}}), "Not a valid string."),
    ];
    for (body, message) in cases {
        let response = alice.post(&path, &body).await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST);
        assert_eq!(response.body, json!({"content": [message]}));
    }
    assert_eq!(alice.chat_messages(chat).await, json!([]), "nothing saved");
    let longest = alice.send_message(chat, &"é".repeat(10_000)).await;
    assert_eq!(
        longest["seq"], 1,
        "no sequence number was spent on refused messages"
    );
}

#[tokio::test]
async fn sends_are_rate_limited_per_user_and_chat() {
    let app = TestApp::spawn_with(|c| c.messages_per_second = 1.try_into().unwrap()).await;
    let alice = app.user("alice").await;
    let chat = alice.create_chat("c", &[]).await;
    let other = alice.create_chat("d", &[]).await;
    let path = format!("/api/chats/{chat}/send_message/");
    // Twenty at once: to pass without a refusal they would have to be spread over 19 s, which
    // no machine takes for twenty requests, however loaded.
    let sends = (0..20).map(|i| {
        let body = json!({"content": format!("m{i}")});
        let (alice, path) = (&alice, &path);
        async move { alice.post(path, &body).await.status }
    });
    let statuses = futures_util::future::join_all(sends).await;
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    let saved = alice.chat_messages(chat).await;
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    assert_eq!(
        saved.as_array().unwrap().len(),
        created,
        "refused messages are not saved"
    );
    // Another chat has its own budget.
    alice.send_message(other, "elsewhere").await;
}

#[tokio::test]
async fn message_lists_cover_the_callers_chats_only() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let shared = alice.create_chat("shared", &[id(&bob.me().await)]).await;
    let private = bob.create_chat("bob's", &[]).await;
    let a1 = alice.send_message(shared, "a1").await;
    let b1 = bob.send_message(private, "b1").await;
    let b2 = bob.send_message(shared, "b2").await;

    let alice_all = alice.get("/api/messages/").await.body;
    assert_eq!(alice_all, json!([a1, crate::helpers::without_email(&b2)]));
    let bob_all = bob.get("/api/messages/").await.body;
    assert_eq!(bob_all, json!([crate::helpers::without_email(&a1), b1, b2]));
    let in_chat = alice
        .get(&format!("/api/chats/{shared}/messages/"))
        .await
        .body;
    assert_eq!(in_chat, json!([a1, crate::helpers::without_email(&b2)]));

    let response = alice.get(&format!("/api/messages/{}/", id(&b1))).await;
    assert_eq!(response.status, StatusCode::NOT_FOUND);
    assert_eq!(
        alice.get("/api/messages/99999/").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        alice.get("/api/messages/abc/").await.status,
        StatusCode::NOT_FOUND
    );
}

/// The group commit path: one transaction for many senders and chats gives each chat's messages
/// consecutive seqs in the order they were posted, ids that grow with seq, and skips rows whose
/// sender is not a participant or whose chat does not exist, without failing the others.
#[tokio::test]
async fn a_batch_saves_participants_messages_in_order_and_skips_the_rest() {
    use mrm_chat::store::messages::{insert_batch, NewMessage};

    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let (a, b, c) = (
        id(&alice.me().await),
        id(&bob.me().await),
        id(&carol.me().await),
    );
    let with_bob = alice.create_chat("with bob", &[b]).await;
    let with_carol = alice.create_chat("with carol", &[c]).await;
    alice.send_message(with_bob, "before").await;

    let row = |chat_id, sender_id, content| NewMessage {
        chat_id,
        sender_id,
        content,
        reply_to: None,
        attachments: &[],
    };
    let rows = [
        row(with_bob, a, "one"),
        row(with_carol, c, "x"),
        row(with_bob, c, "carol is not in this chat"),
        row(with_bob, b, "two"),
        row(i64::MAX, a, "no such chat"),
        row(with_carol, a, "y"),
        row(with_bob, a, "three"),
    ];
    let saved = insert_batch(&app.db, &rows).await.unwrap();
    let seqs: Vec<Option<i64>> = saved
        .iter()
        .map(|s| s.as_ref().ok().map(|s| s.seq))
        .collect();
    assert_eq!(
        seqs,
        [Some(2), Some(1), None, Some(3), None, Some(2), Some(4)]
    );

    let history = alice.chat_messages(with_bob).await;
    let contents: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["before", "one", "two", "three"]);
    let ids: Vec<i64> = history.as_array().unwrap().iter().map(id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    for (message, seq) in history.as_array().unwrap().iter().zip(1..) {
        assert_eq!(message["seq"], seq);
    }
    let saved_ids: Vec<i64> = [0, 3, 6]
        .iter()
        .map(|&i| saved[i].as_ref().unwrap().id)
        .collect();
    assert_eq!(saved_ids, ids[1..]);

    // The chats' counters moved with the batch: the next send continues the sequence.
    assert_eq!(bob.send_message(with_bob, "after").await["seq"], 5);
    assert_eq!(carol.send_message(with_carol, "after").await["seq"], 3);
    assert!(insert_batch(&app.db, &[]).await.unwrap().is_empty());
}
