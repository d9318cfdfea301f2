//! Mentions (`@username` resolved to members, unread mention counts, `GET /api/mentions/`) and
//! read receipts (a chat's opt-in, `read_receipt` events, `GET /api/chats/{id}/receipts/`).

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{id, Client, TestApp};

/// The chat's entry in the caller's chat list.
fn listed(chats: &Value, chat: i64) -> &Value {
    chats
        .as_array()
        .unwrap()
        .iter()
        .find(|c| id(c) == chat)
        .expect("the chat is listed")
}

fn mention_ids(message: &Value) -> Vec<i64> {
    message["mentions"]
        .as_array()
        .map(|ids| ids.iter().map(|i| i.as_i64().unwrap()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn mentions_resolve_to_members_and_count_as_unread_until_read() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let outsider = app.user("dave").await;
    let bob_id = id(&bob.me().await);
    let carol_id = id(&carol.me().await);
    id(&outsider.me().await);
    let chat = alice.create_chat("c", &[bob_id, carol_id]).await;

    // Members are mentioned, an outsider and the sender are not; an address is no mention.
    let sent = alice
        .send_message(
            chat,
            "@bob and @carol, ask @dave. Me: @alice, mail a@bob.org",
        )
        .await;
    let mut expected = vec![bob_id, carol_id];
    expected.sort_unstable();
    assert_eq!(mention_ids(&sent), expected);
    let plain = alice.send_message(chat, "no mentions").await;
    assert_eq!(plain.get("mentions"), None, "left out when none");
    // The end of a sentence is not part of the name.
    let second = alice.send_message(chat, "thanks @bob.").await;
    assert_eq!(mention_ids(&second), [bob_id]);

    let chats = bob.get("/api/chats/").await.body;
    let entry = listed(&chats, chat);
    assert_eq!(entry["unread_count"], 3);
    assert_eq!(entry["unread_mentions"], 2);
    let chats = carol.get("/api/chats/").await.body;
    assert_eq!(listed(&chats, chat)["unread_mentions"], 1);
    let chats = alice.get("/api/chats/").await.body;
    assert_eq!(listed(&chats, chat)["unread_mentions"], 0);

    // History shows them too.
    let history = bob.chat_messages(chat).await;
    assert_eq!(mention_ids(&history[0]), expected);

    // Reading up to the first message leaves one unread mention; reading all leaves none.
    let read = bob
        .post(
            &format!("/api/chats/{chat}/read/"),
            &json!({"seq": sent["seq"]}),
        )
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body["unread_mentions"], 1);
    let read = bob
        .post(
            &format!("/api/chats/{chat}/read/"),
            &json!({"seq": second["seq"]}),
        )
        .await;
    assert_eq!(read.body["unread_mentions"], 0);

    // GET /api/mentions/ lists what mentions the caller, oldest first.
    let mentions = bob.get("/api/mentions/").await;
    assert_eq!(mentions.status, StatusCode::OK, "{}", mentions.body);
    let listed_ids: Vec<i64> = mentions.body.as_array().unwrap().iter().map(id).collect();
    assert_eq!(listed_ids, [id(&sent), id(&second)]);
    let carols: Vec<i64> = carol
        .get("/api/mentions/")
        .await
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(id)
        .collect();
    assert_eq!(carols, [id(&sent)]);
    assert_eq!(outsider.get("/api/mentions/").await.body, json!([]));
    // Paged like every list.
    let page = bob.get("/api/mentions/?limit=1").await;
    assert_eq!(page.body.as_array().unwrap().len(), 1);
    assert_eq!(id(&page.body[0]), id(&second), "the newest page first");
    assert!(page.next_link().is_some());
    let bad = bob.get("/api/mentions/?limit=0").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_edit_changes_the_mentions_and_a_deletion_or_leaving_ends_them() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let bob_id = id(&bob.me().await);
    let carol_id = id(&carol.me().await);
    let chat = alice.create_chat("c", &[bob_id, carol_id]).await;
    let sent = alice.send_message(chat, "hi @bob").await;
    let path = format!("/api/chats/{chat}/messages/{}/", id(&sent));
    let mut watcher = carol.ws_v2(chat).await;

    let edited = alice.patch(&path, &json!({"content": "hi @carol"})).await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.body);
    assert_eq!(mention_ids(&edited.body), [carol_id]);
    // Live and replayed, the edit's frame carries the new mentions.
    let frame = watcher.next_of("message_edited").await;
    assert_eq!(frame["mentions"], json!([carol_id]));
    let mut resumed = crate::events::v2_after(&carol, chat, sent["seq"].as_i64().unwrap()).await;
    assert_eq!(resumed.next_of("message_edited").await, frame);
    let unmentioned = alice.patch(&path, &json!({"content": "hi all"})).await;
    assert_eq!(unmentioned.body.get("mentions"), None);
    assert_eq!(
        watcher.next_of("message_edited").await["mentions"],
        json!([])
    );
    alice.patch(&path, &json!({"content": "hi @carol"})).await;
    assert_eq!(
        watcher.next_of("message_edited").await["mentions"],
        json!([carol_id])
    );
    assert_eq!(bob.get("/api/mentions/").await.body, json!([]));
    assert_eq!(
        listed(&bob.get("/api/chats/").await.body, chat)["unread_mentions"],
        0
    );
    assert_eq!(
        listed(&carol.get("/api/chats/").await.body, chat)["unread_mentions"],
        1
    );

    // A member who leaves no longer finds the chat's mentions.
    let other = alice.send_message(chat, "and @bob").await;
    assert_eq!(
        bob.get("/api/mentions/")
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let left = bob
        .post(&format!("/api/chats/{chat}/leave/"), &json!({}))
        .await;
    assert!(left.status.is_success(), "{}", left.body);
    assert_eq!(bob.get("/api/mentions/").await.body, json!([]));

    // A deleted message mentions no one.
    let deleted = alice.delete(&path).await;
    assert!(deleted.status.is_success(), "{}", deleted.body);
    assert_eq!(carol.get("/api/mentions/").await.body, json!([]));
    assert_eq!(
        listed(&carol.get("/api/chats/").await.body, chat)["unread_mentions"],
        0
    );
    let history = carol.chat_messages(chat).await;
    assert_eq!(history[0].get("mentions"), None);
    assert_eq!(id(&history[1]), id(&other));
}

#[tokio::test]
async fn original_protocol_frames_carry_no_mentions_and_v2_frames_do() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let bob_id = id(&bob.me().await);
    let chat = alice.create_chat("c", &[bob_id]).await;
    let mut original = bob.ws(chat).await;
    let mut extended = bob.ws_v2(chat).await;
    alice.send_message(chat, "hey @bob").await;
    let plain = original.next_message().await;
    assert_eq!(plain.get("mentions"), None);
    assert_eq!(plain["content"], "hey @bob");
    let rich = extended.next_of("message").await;
    assert_eq!(rich["message"]["mentions"], json!([bob_id]));

    // Also on resume, from the database.
    let mut resumed = bob.ws_after(chat, 0).await;
    assert_eq!(resumed.next_message().await.get("mentions"), None);
    let mut resumed_v2 = crate::events::v2_after(&bob, chat, 0).await;
    assert_eq!(
        resumed_v2.next_of("message").await["message"]["mentions"],
        json!([bob_id])
    );
}

#[tokio::test]
async fn read_receipts_are_off_by_default_and_when_on_each_move_is_an_event() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let bob_id = id(&bob.me().await);
    let chat = alice.create_chat("c", &[bob_id]).await;
    let chat_path = format!("/api/chats/{chat}/");
    let receipts_path = format!("{chat_path}receipts/");
    let read_path = format!("{chat_path}read/");

    assert_eq!(alice.get(&chat_path).await.body["read_receipts"], false);
    let off = bob.get(&receipts_path).await;
    assert_eq!(off.status, StatusCode::CONFLICT);
    assert_eq!(
        off.body,
        json!({"detail": "Read receipts are off in this chat."})
    );
    let first = alice.send_message(chat, "one").await;
    bob.post(&read_path, &json!({"seq": first["seq"]})).await;
    let events = alice.get(&format!("{chat_path}events/?after=0")).await.body;
    assert_eq!(
        events.as_array().unwrap().len(),
        1,
        "no receipt while off: {events}"
    );

    // Only the owner (or staff) switches them; the switch is validated.
    let refused = bob.patch(&chat_path, &json!({"read_receipts": true})).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let bad = alice
        .patch(&chat_path, &json!({"read_receipts": "maybe"}))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        bad.body,
        json!({"read_receipts": ["Must be a valid boolean."]})
    );
    let mut watcher = alice.ws_v2(chat).await;
    let on = alice
        .patch(&chat_path, &json!({"read_receipts": true}))
        .await;
    assert_eq!(on.status, StatusCode::OK, "{}", on.body);
    assert_eq!(on.body["read_receipts"], true);
    assert_eq!(on.body["name"], "c", "the name is left as it was");
    let alice_id = id(&alice.me().await);
    assert_eq!(
        watcher.next_of("read_receipts_switched").await,
        json!({"type": "read_receipts_switched", "seq": 2, "chat": chat, "on": true, "by": alice_id})
    );
    // Switching them on again changes nothing and logs nothing.
    alice
        .patch(&chat_path, &json!({"read_receipts": true}))
        .await;
    let mut original = alice.ws(chat).await;
    let second = alice.send_message(chat, "two").await;
    watcher.next_of("message").await;
    let moved = bob.post(&read_path, &json!({"seq": second["seq"]})).await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    let frame = watcher.next_of("read_receipt").await;
    assert_eq!(
        frame,
        json!({
            "type": "read_receipt", "seq": second["seq"].as_i64().unwrap() + 1, "chat": chat,
            "user": {"id": bob_id, "username": "bob"}, "read_seq": second["seq"],
        })
    );
    // A read that does not move the position logs nothing.
    bob.post(&read_path, &json!({"seq": first["seq"]})).await;
    let third = alice.send_message(chat, "three").await;
    let next = watcher.next_of_any(&["message", "read_receipt"]).await;
    assert_eq!(next["type"], "message", "{next}");
    assert_eq!(next["message"]["id"], third["id"]);
    // The original protocol sees messages only.
    assert_eq!(original.next_message().await["content"], "two");
    assert_eq!(original.next_message().await["content"], "three");

    let listed = bob.get(&receipts_path).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    assert_eq!(
        listed.body,
        json!([
            {"user": {"id": alice_id, "username": "alice"}, "last_read_seq": 0},
            {"user": {"id": bob_id, "username": "bob"}, "last_read_seq": second["seq"]},
        ])
    );
    let outsider = app.user("eve").await;
    assert_eq!(
        outsider.get(&receipts_path).await.status,
        StatusCode::NOT_FOUND
    );

    // A v2 socket's read frame logs a receipt too, and the events endpoint lists it.
    let mut bob_socket = bob.ws_v2(chat).await;
    bob_socket
        .send_json(json!({"type": "read", "seq": third["seq"]}))
        .await;
    let frame = watcher.next_of("read_receipt").await;
    assert_eq!(frame["read_seq"], third["seq"]);
    let events = alice
        .get(&format!("{chat_path}events/?after={}", third["seq"]))
        .await
        .body;
    assert_eq!(events, json!([frame]));
}

#[tokio::test]
async fn reading_up_to_a_receipt_reads_the_message_before_it_so_receipts_never_feed_each_other() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let bob_id = id(&bob.me().await);
    let chat = alice.create_chat("c", &[bob_id]).await;
    let chat_path = format!("/api/chats/{chat}/");
    alice
        .patch(&chat_path, &json!({"read_receipts": true}))
        .await;
    let message = alice.send_message(chat, "hello").await;
    let message_seq = message["seq"].as_i64().unwrap();
    let log_end = |client: &Client| {
        let client = client.clone();
        let path = format!("{chat_path}events/?after=0");
        async move {
            let events = client.get(&path).await.body;
            crate::events::position(events.as_array().unwrap().last().unwrap())
        }
    };
    // Each client marks read the last position it has seen, as a client following the log does.
    let read = |client: &Client, seq: i64| {
        let client = client.clone();
        async move {
            client
                .post(&format!("/api/chats/{chat}/read/"), &json!({"seq": seq}))
                .await
                .body
        }
    };

    let bob_read = read(&bob, log_end(&bob).await).await;
    assert_eq!(bob_read["last_read_seq"], message_seq);
    let after_bob = log_end(&alice).await;
    assert_eq!(after_bob, message_seq + 1, "bob's receipt");
    let alice_read = read(&alice, after_bob).await;
    assert_eq!(
        alice_read["last_read_seq"], message_seq,
        "a receipt's position reads the message before it"
    );
    let after_alice = log_end(&alice).await;
    assert_eq!(after_alice, after_bob + 1, "alice's receipt");
    // Neither has anything more to read: further reads move nothing and log nothing.
    for _ in 0..3 {
        read(&bob, log_end(&bob).await).await;
        read(&alice, log_end(&alice).await).await;
        read(&alice, i64::MAX).await;
    }
    assert_eq!(log_end(&alice).await, after_alice);
}
