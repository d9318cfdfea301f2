//! Pinned messages: pinning and unpinning over REST, their `mrm.v2` frames live and on resume,
//! the original protocol seeing none of them, who may pin, and `GET /api/chats/{id}/pins/`.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    events::{position, v2_after},
    helpers::{id, TestApp, WsEvent},
};

/// The frames of the log kinds, in the order they come; presence and typing are skipped.
const LOGGED: &[&str] = &[
    "message",
    "message_edited",
    "message_deleted",
    "message_pinned",
    "message_unpinned",
];

fn pin_path(chat: i64, message: i64) -> String {
    format!("/api/chats/{chat}/messages/{message}/pin/")
}

/// The message ids of a pin list, in its order.
fn pinned_ids(pins: &Value) -> Vec<i64> {
    pins.as_array()
        .unwrap()
        .iter()
        .map(|p| id(&p["message"]))
        .collect()
}

#[tokio::test]
async fn the_owner_pins_and_unpins_and_only_v2_sockets_are_told() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let alice_id = id(&alice.me().await);
    let bob_id = id(&bob.me().await);
    let chat = alice.create_chat("c", &[bob_id]).await;
    let mut original = bob.ws(chat).await;
    let mut extended = bob.ws_v2(chat).await;

    let first = bob.send_message(chat, "first").await;
    let second = bob.send_message(chat, "second").await;
    let pinned = alice.post(&pin_path(chat, id(&first)), &json!({})).await;
    assert_eq!(pinned.status, StatusCode::CREATED, "{}", pinned.body);
    assert_eq!(pinned.body["message"]["id"], first["id"]);
    assert_eq!(pinned.body["message"]["content"], "first");
    assert_eq!(
        pinned.body["pinned_by"],
        json!({"id": alice_id, "username": "alice"})
    );
    assert!(pinned.body["pinned_at"].is_string());

    // Pinning again changes nothing and logs nothing.
    let again = alice.post(&pin_path(chat, id(&first)), &json!({})).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body, pinned.body);
    let later = alice.post(&pin_path(chat, id(&second)), &json!({})).await;
    assert_eq!(later.status, StatusCode::CREATED);

    // Newest pin first, each message as it is now.
    bob.patch(
        &format!("/api/chats/{chat}/messages/{}/", id(&first)),
        &json!({"content": "first, edited"}),
    )
    .await;
    let pins = bob.get(&format!("/api/chats/{chat}/pins/")).await;
    assert_eq!(pins.status, StatusCode::OK, "{}", pins.body);
    assert_eq!(pinned_ids(&pins.body), [id(&second), id(&first)]);
    assert_eq!(pins.body[1]["message"]["content"], "first, edited");
    assert_eq!(pins.body[1]["pinned_at"], pinned.body["pinned_at"]);
    assert_eq!(
        pins.body[0]["message"]["sender"]["email"], "bob@example.com",
        "bob sees his own email"
    );
    let for_alice = alice.get(&format!("/api/chats/{chat}/pins/")).await;
    assert_eq!(
        for_alice.body[0]["message"]["sender"]["email"], "",
        "and nobody else does"
    );

    let unpinned = alice.delete(&pin_path(chat, id(&first))).await;
    assert_eq!(unpinned.status, StatusCode::NO_CONTENT);
    let unpinned_again = alice.delete(&pin_path(chat, id(&first))).await;
    assert_eq!(unpinned_again.status, StatusCode::NO_CONTENT);
    let pins = bob.get(&format!("/api/chats/{chat}/pins/")).await;
    assert_eq!(pinned_ids(&pins.body), [id(&second)]);
    bob.send_message(chat, "third").await;

    // The mrm.v2 socket gets every change in log order, the idempotent repeats not at all.
    let mut seen = Vec::new();
    while seen.len() < 7 {
        seen.push(extended.next_of_any(LOGGED).await);
    }
    let kinds: Vec<&str> = seen.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "message",
            "message",
            "message_pinned",
            "message_pinned",
            "message_edited",
            "message_unpinned",
            "message"
        ]
    );
    let positions: Vec<i64> = seen.iter().map(position).collect();
    assert_eq!(positions, [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(
        seen[2],
        json!({
            "type": "message_pinned", "seq": 3, "id": id(&first), "chat": chat,
            "by": alice_id, "pinned_at": pinned.body["pinned_at"],
        })
    );
    assert_eq!(
        seen[5],
        json!({"type": "message_unpinned", "seq": 6, "id": id(&first), "chat": chat, "by": alice_id})
    );

    // The original protocol sees the three messages and nothing between them.
    let mut original_seqs = Vec::new();
    for _ in 0..3 {
        match original.next().await {
            WsEvent::Json(frame) => {
                assert_eq!(frame["type"], "message", "{frame}");
                original_seqs.push(frame["message"]["seq"].as_i64().unwrap());
            }
            WsEvent::Closed(code) => panic!("closed: {code:?}"),
        }
    }
    assert_eq!(original_seqs, [1, 2, 7]);
}

#[tokio::test]
async fn only_the_owner_staff_and_direct_members_pin_and_only_members_read_pins() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let root = app.user("root").await;
    let admin = app.user("admin").await;
    let eve = app.user("eve").await;
    app.make_staff("root").await;
    app.make_staff("admin").await;
    let bob_id = id(&bob.me().await);
    let root_id = id(&root.me().await);
    let chat = alice.create_chat("c", &[bob_id, root_id]).await;
    let message = alice.send_message(chat, "hello").await;
    let path = pin_path(chat, id(&message));

    let by_member = bob.post(&path, &json!({})).await;
    assert_eq!(by_member.status, StatusCode::FORBIDDEN);
    let by_outsider = eve.post(&path, &json!({})).await;
    assert_eq!(by_outsider.status, StatusCode::NOT_FOUND);
    let by_staff_outside = admin.post(&path, &json!({})).await;
    assert_eq!(
        by_staff_outside.status,
        StatusCode::NOT_FOUND,
        "staff pin only in chats they take part in"
    );
    let by_staff = root.post(&path, &json!({})).await;
    assert_eq!(by_staff.status, StatusCode::CREATED, "{}", by_staff.body);
    assert_eq!(bob.delete(&path).await.status, StatusCode::FORBIDDEN);
    assert_eq!(eve.delete(&path).await.status, StatusCode::NOT_FOUND);
    let pins = format!("/api/chats/{chat}/pins/");
    assert_eq!(bob.get(&pins).await.status, StatusCode::OK);
    let hidden = eve.get(&pins).await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    assert_eq!(hidden.body, json!({"detail": "Not found."}));
    assert_eq!(alice.delete(&path).await.status, StatusCode::NO_CONTENT);
    assert_eq!(alice.get(&pins).await.body, json!([]));

    // A message of another chat, or none at all, is not found.
    let other = alice.create_chat("other", &[]).await;
    let elsewhere = alice.post(&pin_path(other, id(&message)), &json!({})).await;
    assert_eq!(elsewhere.status, StatusCode::NOT_FOUND);
    let missing = alice.post(&pin_path(chat, 999_999), &json!({})).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let no_chat = alice.get("/api/chats/999999/pins/").await;
    assert_eq!(no_chat.status, StatusCode::NOT_FOUND);

    // In a direct chat, which has no owner, either member pins.
    let direct = id(&bob
        .post("/api/direct/", &json!({"username": "eve"}))
        .await
        .body);
    let note = eve.send_message(direct, "remember this").await;
    let by_bob = bob.post(&pin_path(direct, id(&note)), &json!({})).await;
    assert_eq!(by_bob.status, StatusCode::CREATED, "{}", by_bob.body);
    let by_eve = eve.delete(&pin_path(direct, id(&note))).await;
    assert_eq!(by_eve.status, StatusCode::NO_CONTENT);
    let by_alice = alice.post(&pin_path(direct, id(&note)), &json!({})).await;
    assert_eq!(by_alice.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_deleted_message_cannot_be_pinned_and_deleting_unpins_it() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let chat = alice.create_chat("c", &[]).await;
    let secret = alice.send_message(chat, "the secret").await;
    let kept = alice.send_message(chat, "kept").await;
    alice.post(&pin_path(chat, id(&secret)), &json!({})).await;
    alice.post(&pin_path(chat, id(&kept)), &json!({})).await;

    let deleted = alice
        .delete(&format!("/api/chats/{chat}/messages/{}/", id(&secret)))
        .await;
    assert_eq!(deleted.status, StatusCode::OK);
    let pins = alice.get(&format!("/api/chats/{chat}/pins/")).await;
    assert_eq!(pinned_ids(&pins.body), [id(&kept)]);
    let refused = alice.post(&pin_path(chat, id(&secret)), &json!({})).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(refused.body, json!({"detail": "This message was deleted."}));
    let unpin = alice.delete(&pin_path(chat, id(&secret))).await;
    assert_eq!(unpin.status, StatusCode::NO_CONTENT);

    // The log: the pin, then the deletion (which unpinned it); no content of the deleted message.
    let events = alice.get(&format!("/api/chats/{chat}/events/")).await;
    let kinds: Vec<&str> = events
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "message",
            "message",
            "message_pinned",
            "message_pinned",
            "message_deleted"
        ]
    );
    assert!(!events.body.to_string().contains("secret"));
}

#[tokio::test]
async fn a_v2_client_resuming_after_pins_gets_the_pin_events_in_order() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let alice_id = id(&alice.me().await);
    let bob_id = id(&bob.me().await);
    let chat = alice.create_chat("c", &[bob_id]).await;
    let one = bob.send_message(chat, "one").await;
    let two = bob.send_message(chat, "two").await;
    assert_eq!(two["seq"], 2);

    // While the client is away: pins, an unpin, another pin, a message.
    alice.post(&pin_path(chat, id(&one)), &json!({})).await;
    alice.post(&pin_path(chat, id(&two)), &json!({})).await;
    alice.delete(&pin_path(chat, id(&one))).await;
    bob.send_message(chat, "three").await;

    let mut resumed = v2_after(&bob, chat, 2).await;
    let mut seen = Vec::new();
    while seen.len() < 4 {
        seen.push(resumed.next_of_any(LOGGED).await);
    }
    let got: Vec<(String, i64)> = seen
        .iter()
        .map(|f| (f["type"].as_str().unwrap().to_owned(), position(f)))
        .collect();
    assert_eq!(
        got,
        [
            ("message_pinned".to_owned(), 3),
            ("message_pinned".to_owned(), 4),
            ("message_unpinned".to_owned(), 5),
            ("message".to_owned(), 6),
        ]
    );
    assert_eq!(seen[0]["id"], one["id"]);
    assert_eq!(seen[0]["by"], alice_id);
    assert_eq!(seen[1]["id"], two["id"]);
    assert_eq!(seen[2]["id"], one["id"]);

    // The same entries, polled.
    let polled = bob.get(&format!("/api/chats/{chat}/events/?after=2")).await;
    let polled: Vec<Value> = polled.body.as_array().unwrap().clone();
    assert_eq!(polled[..3], seen[..3]);

    // The original protocol resumes on messages only.
    let mut original = bob.ws_after(chat, 2).await;
    let next = original.next_message().await;
    assert_eq!(
        (next["seq"].as_i64(), next["content"].as_str()),
        (Some(6), Some("three"))
    );
}

#[tokio::test]
async fn a_chat_holds_at_most_a_hundred_pins() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let chat = alice.create_chat("c", &[]).await;
    let mut ids = Vec::new();
    for n in 0..101 {
        ids.push(id(&alice.send_message(chat, &format!("m{n}")).await));
    }
    for &message in &ids[..100] {
        let pinned = alice.post(&pin_path(chat, message), &json!({})).await;
        assert_eq!(pinned.status, StatusCode::CREATED, "{}", pinned.body);
    }
    let full = alice.post(&pin_path(chat, ids[100]), &json!({})).await;
    assert_eq!(full.status, StatusCode::CONFLICT);
    assert_eq!(
        full.body,
        json!({"detail": "A chat holds at most 100 pinned messages; unpin one first."})
    );
    let repeat = alice.post(&pin_path(chat, ids[0]), &json!({})).await;
    assert_eq!(
        repeat.status,
        StatusCode::OK,
        "a pinned message stays pinned"
    );
    let pins = alice.get(&format!("/api/chats/{chat}/pins/")).await;
    assert_eq!(pins.body.as_array().unwrap().len(), 100);
    assert_eq!(pinned_ids(&pins.body)[0], ids[99], "newest pin first");

    alice.delete(&pin_path(chat, ids[0])).await;
    let room = alice.post(&pin_path(chat, ids[100]), &json!({})).await;
    assert_eq!(room.status, StatusCode::CREATED);
}

#[tokio::test]
async fn the_pin_frames_are_documented_for_mrm_v2_only() {
    let app = TestApp::spawn().await;
    let doc = app.client().get("/api/schema/?format=json").await.body;
    let socket = &doc["paths"]["/ws/chat/{id}/"]["get"];
    let names = |direction: &str| -> Vec<String> {
        socket[direction]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                f["$ref"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    for frame in ["MessagePinnedFrame", "MessageUnpinnedFrame"] {
        assert!(names("x-mrm-v2-server-frames").contains(&frame.to_owned()));
        assert!(!names("x-server-frames").contains(&frame.to_owned()));
        assert!(doc["components"]["schemas"][frame].is_object(), "{frame}");
    }
    for (path, method) in [
        ("/api/chats/{id}/messages/{message_id}/pin/", "post"),
        ("/api/chats/{id}/messages/{message_id}/pin/", "delete"),
        ("/api/chats/{id}/pins/", "get"),
        ("/api/direct/", "post"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
}
