use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{id, usernames, TestApp};

fn participant_names(chat: &Value) -> Vec<String> {
    usernames(&chat["participants"])
}

#[tokio::test]
async fn create_adds_the_creator_and_named_participants() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.register("bob").await;
    app.register("carol").await;
    let response = alice
        .post(
            "/api/chats/",
            &json!({
                "name": "  Project  ",
                "participant_ids": [id(&bob)],
                "participant_usernames": ["carol", "nobody-by-that-name"],
            }),
        )
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
    let chat = &response.body;
    assert_eq!(chat["name"], "Project");
    assert_eq!(participant_names(chat), ["alice", "bob", "carol"]);
    assert_eq!(chat["owner"], alice.me().await["id"]);
    assert_eq!(chat["messages"], json!([]));
    assert!(chat["created_at"].as_str().unwrap().ends_with('Z'));
    let fields: Vec<&String> = chat.as_object().unwrap().keys().collect();
    for field in ["id", "name", "participants", "messages", "created_at"] {
        assert!(fields.iter().any(|f| *f == field), "{field}");
    }
}

#[tokio::test]
async fn create_with_an_unknown_participant_id_creates_nothing() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.register("bob").await;
    let response = alice
        .post(
            "/api/chats/",
            &json!({"name": "x", "participant_ids": [id(&bob), 999_999, 888_888]}),
        )
        .await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        response.body,
        json!({"participant_ids": ["Unknown user id(s): 888888, 999999"]})
    );
    assert_eq!(alice.get("/api/chats/").await.body, json!([]));
}

#[tokio::test]
async fn create_validates_its_fields() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let cases = [
        (json!({}), "name", "This field is required."),
        (
            json!({"name": "   "}),
            "name",
            "This field may not be blank.",
        ),
        (
            json!({"name": "x".repeat(256)}),
            "name",
            "Ensure this field has no more than 255 characters.",
        ),
        (
            json!({"name": "x", "participant_ids": "1"}),
            "participant_ids",
            "Expected a list of items but got type \"str\".",
        ),
        (
            json!({"name": "x", "participant_ids": ["a"]}),
            "participant_ids",
            "A valid integer is required.",
        ),
        (
            json!({"name": "x", "participant_usernames": [1]}),
            "participant_usernames",
            "Not a valid string.",
        ),
    ];
    for (body, field, message) in cases {
        let response = alice.post("/api/chats/", &body).await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(response.body[field], json!([message]), "{body}");
    }
    let response = alice
        .post("/api/chats/", &json!({"name": "x".repeat(255)}))
        .await;
    assert_eq!(response.status, StatusCode::CREATED);
}

#[tokio::test]
async fn only_participants_see_a_chat() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let mallory = app.user("mallory").await;
    let chat = alice.create_chat("private", &[id(&bob.me().await)]).await;
    alice.send_message(chat, "hello").await;

    assert_eq!(
        bob.get(&format!("/api/chats/{chat}/")).await.status,
        StatusCode::OK
    );
    let listed = mallory.get("/api/chats/").await;
    assert_eq!(listed.body, json!([]));
    let empty = alice.create_chat("empty", &[]).await;
    let page = alice.get(&format!("/api/chats/{empty}/messages/")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body, json!([]));
    for path in [
        format!("/api/chats/{chat}/"),
        format!("/api/chats/{chat}/messages/"),
        format!("/api/chats/{chat}/messages/?limit=0"),
        "/api/chats/424242/messages/".to_owned(),
        "/api/chats/424242/".to_owned(),
        "/api/chats/not-a-number/".to_owned(),
    ] {
        let response = mallory.get(&path).await;
        assert_eq!(response.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(response.body, json!({"detail": "Not found."}));
    }
    for response in [
        mallory
            .post(
                &format!("/api/chats/{chat}/send_message/"),
                &json!({"content": "let me in"}),
            )
            .await,
        mallory
            .patch(&format!("/api/chats/{chat}/"), &json!({"name": "mine"}))
            .await,
        mallory.delete(&format!("/api/chats/{chat}/")).await,
        mallory
            .post(&format!("/api/chats/{chat}/leave/"), &json!({}))
            .await,
    ] {
        assert_eq!(response.status, StatusCode::NOT_FOUND);
    }
    assert_eq!(alice.chat_messages(chat).await.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_owner_renames_other_participants_may_not() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let chat = alice.create_chat("old", &[id(&bob.me().await)]).await;
    let path = format!("/api/chats/{chat}/");

    let response = bob.patch(&path, &json!({"name": "hijacked"})).await;
    assert_eq!(response.status, StatusCode::FORBIDDEN);
    assert_eq!(
        response.body,
        json!({"detail": "You do not have permission to perform this action."})
    );
    assert_eq!(
        bob.put(&path, &json!({"name": "hijacked"})).await.status,
        StatusCode::FORBIDDEN
    );

    let response = alice.patch(&path, &json!({"name": "patched"})).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body["name"], "patched");
    let response = alice.patch(&path, &json!({})).await;
    assert_eq!(response.status, StatusCode::OK, "PATCH may omit the name");
    assert_eq!(response.body["name"], "patched");
    let response = alice.put(&path, &json!({})).await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(response.body["name"], json!(["This field is required."]));
    let response = alice.put(&path, &json!({"name": "put"})).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(bob.get(&path).await.body["name"], "put");
}

#[tokio::test]
async fn the_owner_deletes_and_messages_go_with_the_chat() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let chat = alice.create_chat("doomed", &[id(&bob.me().await)]).await;
    let message = alice.send_message(chat, "soon gone").await;
    let path = format!("/api/chats/{chat}/");

    assert_eq!(bob.delete(&path).await.status, StatusCode::FORBIDDEN);
    let response = alice.delete(&path).await;
    assert_eq!(response.status, StatusCode::NO_CONTENT);
    assert_eq!(alice.get(&path).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        bob.get(&format!("/api/messages/{}/", id(&message)))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(alice.get("/api/messages/").await.body, json!([]));
}

#[tokio::test]
async fn staff_participants_may_manage_a_chat() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let moderator = app.user("moderator").await;
    let chat = alice
        .create_chat("moderated", &[id(&moderator.me().await)])
        .await;
    let path = format!("/api/chats/{chat}/");
    assert_eq!(
        moderator.patch(&path, &json!({"name": "x"})).await.status,
        StatusCode::FORBIDDEN
    );
    app.make_staff("moderator").await;
    assert_eq!(
        moderator
            .patch(&path, &json!({"name": "renamed by staff"}))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(moderator.delete(&path).await.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn the_owner_manages_members() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let dave = app.register("dave").await;
    let bob_id = id(&bob.me().await);
    let chat = alice.create_chat("team", &[bob_id]).await;
    let members = format!("/api/chats/{chat}/participants/");

    let response = bob
        .post(&members, &json!({"participant_usernames": ["carol"]}))
        .await;
    assert_eq!(response.status, StatusCode::FORBIDDEN);

    let response = alice
        .post(
            &members,
            &json!({"participant_usernames": ["carol"], "participant_ids": [id(&dave)]}),
        )
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    assert_eq!(
        participant_names(&response.body),
        ["alice", "bob", "carol", "dave"]
    );
    assert_eq!(
        carol.get(&format!("/api/chats/{chat}/")).await.status,
        StatusCode::OK
    );

    // Adding someone twice changes nothing.
    let response = alice
        .post(&members, &json!({"participant_ids": [bob_id]}))
        .await;
    assert_eq!(
        participant_names(&response.body),
        ["alice", "bob", "carol", "dave"]
    );

    let response = alice
        .post(&members, &json!({"participant_usernames": ["ghost"]}))
        .await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        response.body,
        json!({"participant_usernames": ["Unknown username(s): ghost"]})
    );
    let response = alice
        .post(&members, &json!({"participant_ids": [777_777]}))
        .await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    let response = alice.post(&members, &json!({})).await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);

    let remove_bob = format!("/api/chats/{chat}/participants/{bob_id}/");
    let response = carol.delete(&remove_bob).await;
    assert_eq!(response.status, StatusCode::FORBIDDEN);
    let response = alice.delete(&remove_bob).await;
    assert_eq!(response.status, StatusCode::NO_CONTENT);
    assert_eq!(
        bob.get(&format!("/api/chats/{chat}/")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        alice.delete(&remove_bob).await.status,
        StatusCode::NOT_FOUND
    );

    let alice_id = id(&alice.me().await);
    let response = alice
        .delete(&format!("/api/chats/{chat}/participants/{alice_id}/"))
        .await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn leaving_passes_ownership_and_the_last_one_out_deletes() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let bob_id = id(&bob.me().await);
    let chat = alice
        .create_chat("club", &[bob_id, id(&carol.me().await)])
        .await;
    let path = format!("/api/chats/{chat}/");
    let leave = format!("/api/chats/{chat}/leave/");

    assert_eq!(
        carol.post(&leave, &json!({})).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(carol.get(&path).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        participant_names(&alice.get(&path).await.body),
        ["alice", "bob"]
    );

    assert_eq!(
        alice.post(&leave, &json!({})).await.status,
        StatusCode::NO_CONTENT
    );
    let chat_now = bob.get(&path).await.body;
    assert_eq!(
        chat_now["owner"], bob_id,
        "ownership passed to the remaining participant"
    );
    assert_eq!(
        bob.patch(&path, &json!({"name": "bob's now"})).await.status,
        StatusCode::OK
    );

    assert_eq!(
        bob.post(&leave, &json!({})).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(bob.get(&path).await.status, StatusCode::NOT_FOUND);
    assert_eq!(bob.get("/api/chats/").await.body, json!([]));
}

#[tokio::test]
async fn lists_show_only_the_callers_chats_with_their_members_and_messages() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let bob_id = id(&bob.me().await);
    let mut mine = Vec::new();
    for i in 0..5 {
        let members: Vec<i64> = if i % 2 == 0 { vec![bob_id] } else { vec![] };
        let chat = alice.create_chat(&format!("chat {i}"), &members).await;
        alice.send_message(chat, &format!("first in {i}")).await;
        alice.send_message(chat, &format!("second in {i}")).await;
        mine.push(chat);
    }
    bob.create_chat("bob alone", &[]).await;

    let listed = alice.get("/api/chats/").await.body;
    let ids: Vec<i64> = listed.as_array().unwrap().iter().map(id).collect();
    assert_eq!(ids, mine);
    for (i, chat) in listed.as_array().unwrap().iter().enumerate() {
        let contents: Vec<&str> = chat["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap())
            .collect();
        assert_eq!(
            contents,
            [format!("first in {i}"), format!("second in {i}")]
        );
        let expected: &[&str] = if i % 2 == 0 {
            &["alice", "bob"]
        } else {
            &["alice"]
        };
        assert_eq!(participant_names(chat), expected);
    }
    assert_eq!(
        bob.get("/api/chats/").await.body.as_array().unwrap().len(),
        4
    );
}
