//! Direct chats: `POST /api/direct/` opens the one chat between two users, created once however
//! many ask at once, with fixed members and no owner.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{execute, id, usernames, TestApp};

#[tokio::test]
async fn a_direct_chat_is_created_once_and_found_again_from_either_side() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let alice_id = id(&alice.me().await);
    let bob_id = id(&bob.me().await);

    let created = alice
        .post("/api/direct/", &json!({"user_id": bob_id}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let chat = id(&created.body);
    assert_eq!(created.body["direct"], true);
    assert_eq!(
        created.body["owner"],
        Value::Null,
        "a direct chat has no owner"
    );
    assert_eq!(created.body["name"], "alice, bob");
    assert_eq!(usernames(&created.body["participants"]), ["alice", "bob"]);
    assert_eq!(created.body["messages"], json!([]));

    let again = alice
        .post("/api/direct/", &json!({"user_id": bob_id}))
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(id(&again.body), chat);
    let other_side = bob
        .post("/api/direct/", &json!({"username": "  alice "}))
        .await;
    assert_eq!(other_side.status, StatusCode::OK, "{}", other_side.body);
    assert_eq!(id(&other_side.body), chat);
    assert_eq!(other_side.body["name"], "alice, bob");

    // It is a chat like any other for its members: messages flow, lists show it.
    let mut socket = alice.ws(chat).await;
    bob.send_message(chat, "hi alice").await;
    assert_eq!(socket.next_message().await["content"], "hi alice");
    let group = alice.create_chat("group", &[bob_id]).await;
    let listed = alice.get("/api/chats/").await.body;
    let kinds: Vec<(i64, bool)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (id(c), c["direct"].as_bool().unwrap()))
        .collect();
    assert_eq!(kinds, [(chat, true), (group, false)]);
    let read = bob.get(&format!("/api/chats/{chat}/")).await;
    assert_eq!(read.body["direct"], true);
    assert_eq!(read.body["messages"][0]["content"], "hi alice");

    // Nobody else sees it, and nobody else's pair finds it.
    let carol = app.user("carol").await;
    let hidden = carol.get(&format!("/api/chats/{chat}/")).await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    let carols = carol
        .post("/api/direct/", &json!({"user_id": alice_id}))
        .await;
    assert_eq!(carols.status, StatusCode::CREATED);
    assert_ne!(id(&carols.body), chat);
}

#[tokio::test]
async fn concurrent_requests_from_both_sides_make_one_chat() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let bob_id = id(&bob.me().await);

    let body_for_alice = json!({"user_id": bob_id});
    let body_for_bob = json!({"username": "alice"});
    let requests = (0..10).map(|i| {
        let (client, body) = if i % 2 == 0 {
            (alice.clone(), body_for_alice.clone())
        } else {
            (bob.clone(), body_for_bob.clone())
        };
        async move { client.post("/api/direct/", &body).await }
    });
    let answers = futures_util::future::join_all(requests).await;
    let created = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .count();
    let found = answers
        .iter()
        .filter(|a| a.status == StatusCode::OK)
        .count();
    assert_eq!((created, found), (1, 9), "{answers:?}");
    let ids: std::collections::BTreeSet<i64> = answers.iter().map(|a| id(&a.body)).collect();
    assert_eq!(ids.len(), 1, "one chat: {ids:?}");
    let chat = *ids.iter().next().unwrap();
    for client in [&alice, &bob] {
        let listed = client.get("/api/chats/").await.body;
        let direct: Vec<i64> = listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["direct"] == true)
            .map(id)
            .collect();
        assert_eq!(direct, [chat]);
    }
    let read = alice.get(&format!("/api/chats/{chat}/")).await.body;
    assert_eq!(usernames(&read["participants"]), ["alice", "bob"]);
}

#[tokio::test]
async fn a_direct_chats_members_are_fixed_and_only_staff_manage_it() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let root = app.user("root").await;
    app.make_staff("root").await;
    let alice_id = id(&alice.me().await);
    let bob_id = id(&bob.me().await);
    let carol_id = id(&carol.me().await);
    let chat = id(&alice
        .post("/api/direct/", &json!({"user_id": bob_id}))
        .await
        .body);
    let fixed = json!({"detail": "A direct chat's members cannot change: it is the one chat between its two users."});

    let added = alice
        .post(
            &format!("/api/chats/{chat}/participants/"),
            &json!({"participant_ids": [carol_id]}),
        )
        .await;
    assert_eq!(added.status, StatusCode::BAD_REQUEST);
    assert_eq!(added.body, fixed);
    let removed = alice
        .delete(&format!("/api/chats/{chat}/participants/{bob_id}/"))
        .await;
    assert_eq!(removed.status, StatusCode::BAD_REQUEST);
    assert_eq!(removed.body, fixed);
    let left = bob
        .post(&format!("/api/chats/{chat}/leave/"), &json!({}))
        .await;
    assert_eq!(left.status, StatusCode::BAD_REQUEST);
    assert_eq!(left.body, fixed);
    // No owner: members may not rename or delete it.
    let renamed = alice
        .patch(&format!("/api/chats/{chat}/"), &json!({"name": "ours"}))
        .await;
    assert_eq!(renamed.status, StatusCode::FORBIDDEN);
    let deleted = bob.delete(&format!("/api/chats/{chat}/")).await;
    assert_eq!(deleted.status, StatusCode::FORBIDDEN);

    // Staff cannot change a direct chat's members either, even their own.
    let staffs = id(&root
        .post("/api/direct/", &json!({"user_id": alice_id}))
        .await
        .body);
    let by_staff = root
        .post(
            &format!("/api/chats/{staffs}/participants/"),
            &json!({"participant_ids": [carol_id]}),
        )
        .await;
    assert_eq!(by_staff.status, StatusCode::BAD_REQUEST);
    assert_eq!(by_staff.body, fixed);
    let read = alice.get(&format!("/api/chats/{chat}/")).await.body;
    assert_eq!(usernames(&read["participants"]), ["alice", "bob"]);

    // Deleted by staff, the pair's next request makes a new one.
    let gone = root.delete(&format!("/api/chats/{staffs}/")).await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    let fresh = alice
        .post("/api/direct/", &json!({"username": "root"}))
        .await;
    assert_eq!(fresh.status, StatusCode::CREATED, "{}", fresh.body);
    assert_ne!(id(&fresh.body), staffs);
}

#[tokio::test]
async fn a_direct_chat_with_yourself_has_you_alone() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let alice_id = id(&alice.me().await);
    let created = alice
        .post("/api/direct/", &json!({"user_id": alice_id}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["name"], "alice");
    assert_eq!(usernames(&created.body["participants"]), ["alice"]);
    assert_eq!(created.body["direct"], true);
    let again = alice
        .post("/api/direct/", &json!({"username": "alice"}))
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(id(&again.body), id(&created.body));
    alice.send_message(id(&created.body), "a note").await;
}

#[tokio::test]
async fn unknown_inactive_and_malformed_peers_are_refused() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let gone = app.user("gone").await;
    let gone_id = id(&gone.me().await);
    execute(
        &app.db,
        "UPDATE users SET is_active = FALSE WHERE username = $1",
        "gone",
    )
    .await;
    let cases = [
        (
            json!({"user_id": 999_999}),
            json!({"user_id": ["No active user has this id."]}),
        ),
        (
            json!({"user_id": gone_id}),
            json!({"user_id": ["No active user has this id."]}),
        ),
        (
            json!({"username": "nobody"}),
            json!({"username": ["No active user has this username."]}),
        ),
        (
            json!({"username": "gone"}),
            json!({"username": ["No active user has this username."]}),
        ),
        (
            json!({}),
            json!({"non_field_errors": ["Provide exactly one of user_id or username."]}),
        ),
        (
            json!({"user_id": gone_id, "username": "gone"}),
            json!({"non_field_errors": ["Provide exactly one of user_id or username."]}),
        ),
        (
            json!({"user_id": "x"}),
            json!({"user_id": ["A valid integer is required."]}),
        ),
        (
            json!({"username": "  "}),
            json!({"username": ["This field may not be blank."]}),
        ),
    ];
    for (body, expected) in cases {
        let refused = alice.post("/api/direct/", &body).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(refused.body, expected, "{body}");
    }
    assert_eq!(alice.get("/api/chats/").await.body, json!([]));
    let anonymous = app
        .client()
        .post("/api/direct/", &json!({"username": "alice"}))
        .await;
    assert_eq!(anonymous.status, StatusCode::FORBIDDEN);
}
