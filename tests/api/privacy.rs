//! What users may see of each other and of chats they have left: emails only for their owner and
//! staff, and nothing of a chat once its member has left it or been removed.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    fake_openai::FakeOpenAi,
    helpers::{id, Client, TestApp, WsOptions},
};

/// Every `email` in `users` (a list of user objects), by username.
fn emails(users: &Value) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = users
        .as_array()
        .expect("a list of users")
        .iter()
        .map(|u| {
            (
                u["username"].as_str().unwrap().to_owned(),
                u["email"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(u, e)| (u.to_string(), e.to_string()))
        .collect()
}

/// The sender emails of a list of message objects, as `(username, email)`.
fn sender_emails(messages: &Value) -> Vec<(String, String)> {
    let senders: Vec<Value> = messages
        .as_array()
        .expect("a list of messages")
        .iter()
        .map(|m| m["sender"].clone())
        .collect();
    let mut found = emails(&Value::Array(senders));
    found.dedup();
    found
}

#[tokio::test]
async fn emails_are_shown_only_to_their_owner_and_to_staff_over_rest() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let admin = app.user("admin").await;
    app.make_staff("admin").await;
    let dave = app.user("dave").await;
    let (bob_id, admin_id, dave_id) = (
        id(&bob.me().await),
        id(&admin.me().await),
        id(&dave.me().await),
    );

    // Putting someone in a chat does not hand over their address, an administrator's included.
    let created = alice
        .post(
            "/api/chats/",
            &json!({"name": "team", "participant_ids": [bob_id, admin_id]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(
        emails(&created.body["participants"]),
        pairs(&[("admin", ""), ("alice", "alice@example.com"), ("bob", "")])
    );
    let chat = id(&created.body);
    let added = alice
        .post(
            &format!("/api/chats/{chat}/participants/"),
            &json!({"participant_ids": [dave_id]}),
        )
        .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.body);
    assert_eq!(
        emails(&added.body["participants"]),
        pairs(&[
            ("admin", ""),
            ("alice", "alice@example.com"),
            ("bob", ""),
            ("dave", "")
        ])
    );

    // Senders: her own address to the sender, nobody else's.
    let sent = bob.send_message(chat, "from bob").await;
    assert_eq!(sent["sender"]["email"], "bob@example.com");
    let message = id(&sent);
    alice.send_message(chat, "from alice").await;
    let everyone_but_alice_hidden = pairs(&[("alice", "alice@example.com"), ("bob", "")]);
    let detail = alice.get(&format!("/api/chats/{chat}/")).await.body;
    assert_eq!(
        sender_emails(&detail["messages"]),
        everyone_but_alice_hidden
    );
    let list = alice.get("/api/chats/").await.body;
    assert_eq!(
        emails(&list[0]["participants"]),
        emails(&added.body["participants"])
    );
    assert_eq!(
        sender_emails(&list[0]["messages"]),
        everyone_but_alice_hidden
    );
    assert_eq!(
        sender_emails(&alice.chat_messages(chat).await),
        everyone_but_alice_hidden
    );
    assert_eq!(
        sender_emails(&alice.get("/api/messages/").await.body),
        everyone_but_alice_hidden
    );
    let one = alice.get(&format!("/api/messages/{message}/")).await.body;
    assert_eq!(one["sender"]["email"], "");
    let renamed = alice
        .patch(&format!("/api/chats/{chat}/"), &json!({"name": "renamed"}))
        .await
        .body;
    assert_eq!(
        emails(&renamed["participants"]),
        emails(&list[0]["participants"])
    );

    // Staff see every address.
    let seen_by_staff = admin.get(&format!("/api/chats/{chat}/")).await.body;
    assert_eq!(
        emails(&seen_by_staff["participants"]),
        pairs(&[
            ("admin", "admin@example.com"),
            ("alice", "alice@example.com"),
            ("bob", "bob@example.com"),
            ("dave", "dave@example.com")
        ])
    );
    assert_eq!(
        sender_emails(&admin.get("/api/messages/").await.body),
        pairs(&[("alice", "alice@example.com"), ("bob", "bob@example.com")])
    );

    // A user's own objects keep their address.
    assert_eq!(bob.me().await["email"], "bob@example.com");
    let token = app
        .client()
        .post(
            "/api/tokens/",
            &json!({"username": "bob", "password": crate::helpers::PASSWORD, "name": "cli"}),
        )
        .await;
    assert_eq!(token.status, StatusCode::CREATED, "{}", token.body);
    assert_eq!(token.body["user"]["email"], "bob@example.com");
    // The directory never listed addresses.
    let directory = alice.get("/api/users/").await.body;
    assert!(directory
        .as_array()
        .unwrap()
        .iter()
        .all(|u| u.get("email").is_none()));
}

#[tokio::test]
async fn socket_frames_show_the_sender_email_only_to_the_sender_and_staff() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let admin = app.user("admin").await;
    app.make_staff("admin").await;
    let members = [id(&bob.me().await), id(&admin.me().await)];
    let chat = alice.create_chat("team", &members).await;
    let mut alice_socket = alice.ws(chat).await;
    let mut bob_socket = bob.ws(chat).await;
    let mut admin_socket = admin.ws(chat).await;

    // Sent over the socket and over REST: the live frames follow the same rule. (The REST send
    // waits until the socket's message is out: sent at once, the two race, and either may be
    // saved first.)
    for content in ["by socket", "by rest"] {
        if content == "by socket" {
            bob_socket.send_json(json!({"content": content})).await;
        } else {
            bob.send_message(chat, content).await;
        }
        let seen_by_bob = bob_socket.next_message().await;
        assert_eq!(seen_by_bob["content"], content);
        assert_eq!(seen_by_bob["sender"]["email"], "bob@example.com");
        let seen_by_alice = alice_socket.next_message().await;
        assert_eq!(seen_by_alice["content"], content);
        assert_eq!(seen_by_alice["sender"]["username"], "bob");
        assert_eq!(seen_by_alice["sender"]["email"], "");
        let seen_by_admin = admin_socket.next_message().await;
        assert_eq!(seen_by_admin["sender"]["email"], "bob@example.com");
    }

    // A resuming socket's replay comes from the database: the same rule.
    let mut replayed = alice.ws_after(chat, 0).await;
    for _ in 0..2 {
        assert_eq!(replayed.next_message().await["sender"]["email"], "");
    }
    let mut replayed = admin.ws_after(chat, 0).await;
    for _ in 0..2 {
        assert_eq!(
            replayed.next_message().await["sender"]["email"],
            "bob@example.com"
        );
    }
}

async fn ai_chat(client: &Client, body: Value) -> i64 {
    let response = client.post("/api/ai/chats/", &body).await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
    id(&response.body)
}

/// Everything `user` can still see of `chat`, asserted to be nothing: the chat, its messages
/// by every REST path, a new socket, and the AI chat `linked` to it (no link, no name, no
/// context, and no context in what the model is sent).
async fn assert_sees_nothing_of(
    user: &Client,
    chat: i64,
    message: i64,
    linked: i64,
    fake: &FakeOpenAi,
) {
    assert_eq!(
        user.get(&format!("/api/chats/{chat}/")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        user.get(&format!("/api/chats/{chat}/messages/"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert!(user
        .get("/api/chats/")
        .await
        .body
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["id"] != chat));
    assert!(user
        .get("/api/messages/")
        .await
        .body
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["chat"] != chat));
    assert_eq!(
        user.get(&format!("/api/messages/{message}/")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        user.ws_with(chat, WsOptions::default()).await.err(),
        Some(403)
    );

    let shown = user.get(&format!("/api/ai/chats/{linked}/")).await.body;
    assert_eq!(shown["related_chat"], Value::Null, "{shown}");
    assert_eq!(shown["related_chat_name"], Value::Null, "{shown}");
    let listed = user.get("/api/ai/chats/").await.body;
    let listed = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == linked)
        .expect("the AI chat is listed")
        .clone();
    assert_eq!(listed["related_chat"], Value::Null);
    assert_eq!(listed["related_chat_name"], Value::Null);
    let context = user
        .get(&format!("/api/ai/chats/{linked}/related_chat_context/"))
        .await;
    assert_eq!(context.status, StatusCode::NOT_FOUND);
    assert_eq!(
        context.body,
        json!({"error": "No related chat linked to this AI chat"})
    );
    let asked = user
        .post(
            &format!("/api/ai/chats/{linked}/send_message/"),
            &json!({"content": "summarise", "include_related_chat_context": true}),
        )
        .await;
    assert_eq!(asked.status, StatusCode::OK, "{}", asked.body);
    let request = fake.last_request().to_string();
    assert!(!request.contains("secret plans"), "{request}");
    assert!(!request.contains("the plan"), "{request}");
    assert_eq!(
        fake.last_request()["messages"][0]["content"],
        "You are a helpful assistant."
    );
}

#[tokio::test]
async fn a_member_who_leaves_or_is_removed_sees_nothing_of_the_chat_anymore() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |_| {}).await;
    let owner = app.user("owner").await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let (alice_id, bob_id) = (id(&alice.me().await), id(&bob.me().await));
    let chat = owner.create_chat("secret plans", &[alice_id, bob_id]).await;
    let message = id(&owner.send_message(chat, "the plan").await);
    let alice_ai = ai_chat(&alice, json!({"title": "a", "related_chat": chat})).await;
    let bob_ai = ai_chat(&bob, json!({"title": "b", "related_chat": chat})).await;
    let shown = alice.get(&format!("/api/ai/chats/{alice_ai}/")).await.body;
    assert_eq!(shown["related_chat"], chat);
    assert_eq!(shown["related_chat_name"], "secret plans");
    let mut alice_socket = alice.ws(chat).await;
    let mut bob_socket = bob.ws(chat).await;

    // Alice leaves; Bob is removed by the owner.
    let left = alice
        .post(&format!("/api/chats/{chat}/leave/"), &json!({}))
        .await;
    assert_eq!(left.status, StatusCode::NO_CONTENT, "{}", left.body);
    assert_eq!(alice_socket.closed().await, Some(4003));
    let removed = owner
        .delete(&format!("/api/chats/{chat}/participants/{bob_id}/"))
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    assert_eq!(bob_socket.closed().await, Some(4003));
    owner.send_message(chat, "after they went").await;

    assert_sees_nothing_of(&alice, chat, message, alice_ai, &fake).await;
    assert_sees_nothing_of(&bob, chat, message, bob_ai, &fake).await;

    // Editing the AI chat keeps the hidden link hidden; linking it again needs membership.
    let renamed = alice
        .patch(
            &format!("/api/ai/chats/{alice_ai}/"),
            &json!({"title": "renamed"}),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(renamed.body["related_chat"], Value::Null);
    for (method, body) in [
        ("patch", json!({"related_chat": chat})),
        ("put", json!({"title": "t", "related_chat": chat})),
    ] {
        let path = format!("/api/ai/chats/{alice_ai}/");
        let response = if method == "patch" {
            alice.patch(&path, &body).await
        } else {
            alice.put(&path, &body).await
        };
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{method}");
        assert_eq!(
            response.body,
            json!({"related_chat": ["You must be a participant in the related chat."]})
        );
    }
    let refused = alice
        .post(
            "/api/ai/chats/",
            &json!({"title": "new", "related_chat": chat}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        refused.body,
        json!({"related_chat": ["You must be a participant in the related chat."]})
    );

    // Brought back into the chat, Alice finds her AI chat linked to it again.
    let readded = owner
        .post(
            &format!("/api/chats/{chat}/participants/"),
            &json!({"participant_ids": [alice_id]}),
        )
        .await;
    assert_eq!(readded.status, StatusCode::OK, "{}", readded.body);
    let shown = alice.get(&format!("/api/ai/chats/{alice_ai}/")).await.body;
    assert_eq!(shown["related_chat"], chat);
    assert_eq!(shown["related_chat_name"], "secret plans");
    let context = alice
        .get(&format!("/api/ai/chats/{alice_ai}/related_chat_context/"))
        .await;
    assert_eq!(context.status, StatusCode::OK);
    assert_eq!(context.body["message_count"], 2);
    // Bob, still out, still sees nothing.
    let shown = bob.get(&format!("/api/ai/chats/{bob_ai}/")).await.body;
    assert_eq!(shown["related_chat"], Value::Null);
}
