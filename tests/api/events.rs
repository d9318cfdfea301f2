//! The chat's log: edits and deletions over REST, their `mrm.v2` frames live and on resume, the
//! original protocol seeing none of them, and `GET /api/chats/{id}/events/`.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{id, Client, TestApp, WsClient, WsOptions};

/// The frames of the log kinds, in the order they come; presence and typing are skipped.
const LOGGED: &[&str] = &["message", "message_edited", "message_deleted"];

fn message_path(chat: i64, message: i64) -> String {
    format!("/api/chats/{chat}/messages/{message}/")
}

/// A frame's position in the log: `message.seq` for a message, `seq` for every other kind.
pub fn position(frame: &Value) -> i64 {
    frame["seq"]
        .as_i64()
        .or_else(|| frame["message"]["seq"].as_i64())
        .expect("a logged frame has a position")
}

/// Opens `/ws/chat/{chat}/` speaking `mrm.v2`, resuming after `after` when given.
pub async fn v2_after(client: &Client, chat: i64, after: i64) -> WsClient {
    let query = format!("?after_seq={after}");
    client
        .ws_with(
            chat,
            WsOptions {
                query: &query,
                protocols: Some("mrm.v2"),
                ..Default::default()
            },
        )
        .await
        .expect("socket opens")
}

#[tokio::test]
async fn an_edit_replaces_the_content_keeps_the_old_version_and_reaches_v2_sockets_only() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let bob_id = id(&bob.me().await);
    let carol_id = id(&carol.me().await);
    let chat = alice.create_chat("c", &[bob_id, carol_id]).await;
    let mut original = alice.ws(chat).await;
    let mut extended = alice.ws_v2(chat).await;

    let sent = bob.send_message(chat, "first").await;
    let path = message_path(chat, id(&sent));
    let edited = bob.patch(&path, &json!({"content": "  second  "})).await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.body);
    assert_eq!(
        edited.body["content"], "second",
        "trimmed as a REST send is"
    );
    assert_eq!(
        edited.body["seq"], sent["seq"],
        "the message keeps its place"
    );
    assert!(edited.body["edited_at"].is_string());
    assert_eq!(edited.body.get("deleted"), None, "left out when false");
    assert_eq!(sent["edited_at"], Value::Null);

    assert_eq!(
        extended.next_of_any(LOGGED).await["message"]["content"],
        "first"
    );
    let frame = extended.next_of_any(LOGGED).await;
    assert_eq!(
        frame,
        json!({
            "type": "message_edited", "seq": 2, "id": id(&sent), "chat": chat,
            "content": "second", "mentions": [], "edited_at": edited.body["edited_at"],
        })
    );
    // The original protocol sees the message, then the next message: no edit between.
    bob.send_message(chat, "third").await;
    assert_eq!(original.next_message().await["content"], "first");
    let next = original.next().await;
    assert!(
        matches!(&next, crate::helpers::WsEvent::Json(f) if f["type"] == "message" && f["message"]["content"] == "third" && f["message"]["seq"] == 3),
        "{next:?}"
    );

    // Reads show the new content.
    let history = alice.chat_messages(chat).await;
    assert_eq!(history[0]["content"], "second");
    assert_eq!(history[0]["edited_at"], edited.body["edited_at"]);

    // The earlier version: for the chat's owner, not for other members.
    let versions = alice.get(&format!("{path}versions/")).await;
    assert_eq!(versions.status, StatusCode::OK, "{}", versions.body);
    assert_eq!(versions.body.as_array().unwrap().len(), 1);
    assert_eq!(versions.body[0]["content"], "first");
    assert_eq!(versions.body[0]["written_at"], sent["timestamp"]);
    assert_eq!(
        carol.get(&format!("{path}versions/")).await.status,
        StatusCode::FORBIDDEN
    );

    // Only the sender edits; outsiders learn nothing; bad input is refused with its reason.
    let refused = alice.patch(&path, &json!({"content": "not mine"})).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let outsider = app.user("dave").await;
    let hidden = outsider.patch(&path, &json!({"content": "x"})).await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    let blank = bob.patch(&path, &json!({"content": "   "})).await;
    assert_eq!(blank.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        blank.body,
        json!({"content": ["This field may not be blank."]})
    );
    let missing = bob
        .patch(&message_path(chat, 999_999), &json!({"content": "x"}))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let elsewhere = alice.create_chat("other", &[bob_id]).await;
    let wrong_chat = bob
        .patch(
            &message_path(elsewhere, id(&sent)),
            &json!({"content": "x"}),
        )
        .await;
    assert_eq!(
        wrong_chat.status,
        StatusCode::NOT_FOUND,
        "the message is not in that chat"
    );
    assert_eq!(alice.chat_messages(chat).await[0]["content"], "second");
}

#[tokio::test]
async fn a_deletion_leaves_a_tombstone_and_the_owner_and_staff_may_delete_any_message() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let root = app.user("root").await;
    app.make_staff("root").await;
    let bob_id = id(&bob.me().await);
    let carol_id = id(&carol.me().await);
    let chat = alice.create_chat("c", &[bob_id, carol_id]).await;
    let own = bob.send_message(chat, "mine").await;
    let moderated = bob.send_message(chat, "rude").await;
    let by_alice = alice.send_message(chat, "from the owner").await;
    let by_carol = carol.send_message(chat, "from carol").await;
    bob.patch(
        &message_path(chat, id(&own)),
        &json!({"content": "mine, edited"}),
    )
    .await;
    let mut extended = alice.ws_v2(chat).await;

    let deleted = bob.delete(&message_path(chat, id(&own))).await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    assert_eq!(deleted.body["deleted"], true);
    assert_eq!(deleted.body["content"], "");
    assert_eq!(deleted.body["id"], own["id"]);
    let frame = extended.next_of_any(LOGGED).await;
    assert_eq!(
        frame,
        json!({"type": "message_deleted", "seq": 6, "id": id(&own), "chat": chat})
    );
    let again = bob.delete(&message_path(chat, id(&own))).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let edit = bob
        .patch(&message_path(chat, id(&own)), &json!({"content": "back"}))
        .await;
    assert_eq!(edit.status, StatusCode::CONFLICT);

    // A member may not delete another's message; the owner and staff may.
    let refused = carol.delete(&message_path(chat, id(&by_alice))).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let by_owner = alice.delete(&message_path(chat, id(&moderated))).await;
    assert_eq!(by_owner.status, StatusCode::OK);
    let by_staff = root.delete(&message_path(chat, id(&by_carol))).await;
    assert_eq!(
        by_staff.status,
        StatusCode::OK,
        "staff moderate chats they are not in"
    );

    // Tombstones keep their places in every read; nothing of the deleted text remains.
    let history = carol.chat_messages(chat).await;
    let shown: Vec<(bool, &str)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["deleted"].as_bool().unwrap_or(false),
                m["content"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            (true, ""),
            (true, ""),
            (false, "from the owner"),
            (true, "")
        ]
    );
    let one = carol.get(&format!("/api/messages/{}/", id(&own))).await;
    assert_eq!(one.body["deleted"], true);
    let versions = alice
        .get(&format!("{}versions/", message_path(chat, id(&own))))
        .await;
    assert_eq!(
        versions.body,
        json!([]),
        "earlier versions go with the content"
    );
    let events = alice.get(&format!("/api/chats/{chat}/events/")).await;
    let edit_event = events
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "message_edited")
        .unwrap()
        .clone();
    assert_eq!(
        edit_event["content"], "",
        "the log keeps no deleted content"
    );
    assert!(!events.body.to_string().contains("mine"));
    assert!(!events.body.to_string().contains("rude"));
}

/// Applies logged frames to a view of the chat: message id → (content, deleted).
fn apply(view: &mut std::collections::BTreeMap<i64, (String, bool)>, frame: &Value) {
    match frame["type"].as_str().unwrap() {
        "message" => {
            let m = &frame["message"];
            view.insert(
                id(m),
                (
                    m["content"].as_str().unwrap().to_owned(),
                    m["deleted"].as_bool().unwrap_or(false),
                ),
            );
        }
        "message_edited" => {
            let entry = view
                .get_mut(&id(frame))
                .expect("an edit follows its message");
            entry.0 = frame["content"].as_str().unwrap().to_owned();
        }
        "message_deleted" => {
            let entry = view
                .get_mut(&id(frame))
                .expect("a deletion follows its message");
            *entry = (String::new(), true);
        }
        other => panic!("unexpected frame {other}"),
    }
}

#[tokio::test]
async fn a_v2_client_resuming_from_its_position_gets_every_change_it_missed_in_order() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let bob_id = id(&bob.me().await);
    let chat = alice.create_chat("c", &[bob_id]).await;
    let mut view = std::collections::BTreeMap::new();

    let mut socket = alice.ws_v2(chat).await;
    let first = bob.send_message(chat, "m0").await;
    let frame = socket.next_of_any(LOGGED).await;
    apply(&mut view, &frame);
    let mut last = position(&frame);
    drop(socket);

    // While the client is away, another keeps changing the chat: sends, edits, deletions.
    let mut sent = vec![first];
    for round in 1..=6 {
        sent.push(bob.send_message(chat, &format!("m{round}")).await);
        let edit_target = &sent[round - 1];
        bob.patch(
            &message_path(chat, id(edit_target)),
            &json!({"content": format!("m{} edited", round - 1)}),
        )
        .await;
        if round % 2 == 0 {
            bob.delete(&message_path(chat, id(&sent[round - 2]))).await;
        }
    }

    // Resumed from its position, in two legs, each ending where the log is now.
    for leg in 0..2 {
        let mut resumed = v2_after(&alice, chat, last).await;
        let end = alice
            .get(&format!("/api/chats/{chat}/events/?after={last}&limit=500"))
            .await;
        let end = end
            .body
            .as_array()
            .unwrap()
            .last()
            .map(position)
            .unwrap_or(last);
        while last < end {
            let frame = resumed.next_of_any(LOGGED).await;
            let at = position(&frame);
            assert_eq!(at, last + 1, "no gap and no duplicate");
            apply(&mut view, &frame);
            last = at;
        }
        if leg == 0 {
            bob.send_message(chat, "while resumed").await;
            bob.delete(&message_path(chat, id(&sent[6]))).await;
        }
    }

    // The client's view equals a fresh read.
    let history = alice.chat_messages(chat).await;
    let fresh: std::collections::BTreeMap<i64, (String, bool)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                id(m),
                (
                    m["content"].as_str().unwrap().to_owned(),
                    m["deleted"].as_bool().unwrap_or(false),
                ),
            )
        })
        .collect();
    assert_eq!(view, fresh);
}

#[tokio::test]
async fn the_events_endpoint_pages_through_the_log_and_an_original_client_resumes_on_messages_only()
{
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let chat = alice.create_chat("c", &[]).await;
    let a = alice.send_message(chat, "a").await;
    alice
        .patch(&message_path(chat, id(&a)), &json!({"content": "a2"}))
        .await;
    let b = alice.send_message(chat, "b").await;
    alice.delete(&message_path(chat, id(&b))).await;
    alice.send_message(chat, "c").await;

    // Pages of two, following the Link header, from the start.
    let mut path = format!("/api/chats/{chat}/events/?limit=2");
    let mut kinds = Vec::new();
    let mut positions = Vec::new();
    loop {
        let page = alice.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        for item in page.body.as_array().unwrap() {
            kinds.push(item["type"].as_str().unwrap().to_owned());
            positions.push(position(item));
        }
        match page.next_link() {
            Some(next) => path = next,
            None => break,
        }
    }
    assert_eq!(
        kinds,
        [
            "message",
            "message_edited",
            "message",
            "message_deleted",
            "message"
        ]
    );
    assert_eq!(positions, [1, 2, 3, 4, 5]);
    let after = alice
        .get(&format!("/api/chats/{chat}/events/?after=3"))
        .await;
    let after: Vec<i64> = after
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(position)
        .collect();
    assert_eq!(after, [4, 5]);
    // The fuzzer's example: the largest position there is, and an empty window.
    let edge = alice
        .get(&format!(
            "/api/chats/{chat}/events/?after={}&before=0&limit=1",
            i64::MAX
        ))
        .await;
    assert_eq!(edge.status, StatusCode::OK, "{}", edge.body);
    assert_eq!(edge.body, json!([]));
    let edge = alice
        .get(&format!("/api/chats/{chat}/events/?after={}", i64::MAX))
        .await;
    assert_eq!(edge.body, json!([]));
    let bad = alice
        .get(&format!("/api/chats/{chat}/events/?after=x"))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let outsider = app.user("eve").await;
    let hidden = outsider.get(&format!("/api/chats/{chat}/events/")).await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);

    // The original protocol replays messages only, each as it is now, with the original's
    // fields only; the original never sent a deleted message, so neither is one sent here.
    let mut original = alice.ws_after(chat, 0).await;
    let replayed: Vec<(i64, String, Option<bool>)> =
        [original.next_message().await, original.next_message().await]
            .iter()
            .map(|m| {
                (
                    m["seq"].as_i64().unwrap(),
                    m["content"].as_str().unwrap().to_owned(),
                    m.get("deleted").and_then(Value::as_bool),
                )
            })
            .collect();
    assert_eq!(replayed, [(1, "a2".into(), None), (5, "c".into(), None)]);
}

#[tokio::test]
async fn membership_changes_and_renames_are_logged_and_reach_v2_sockets() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let bob_id = id(&bob.me().await);
    let carol_id = id(&carol.me().await);
    let alice_id = id(&alice.me().await);
    let chat = alice.create_chat("c", &[bob_id]).await;
    let mut watching = bob.ws_v2(chat).await;
    let mut original = bob.ws(chat).await;
    const KINDS: &[&str] = &[
        "message",
        "member_added",
        "member_removed",
        "member_left",
        "owner_changed",
        "chat_renamed",
    ];

    let added = alice
        .post(
            &format!("/api/chats/{chat}/participants/"),
            &json!({"participant_ids": [carol_id]}),
        )
        .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.body);
    assert_eq!(
        watching.next_of_any(KINDS).await,
        json!({"type": "member_added", "seq": 1, "chat": chat,
               "user": {"id": carol_id, "username": "carol"}, "by": alice_id})
    );
    alice
        .put(&format!("/api/chats/{chat}/"), &json!({"name": "renamed"}))
        .await;
    assert_eq!(
        watching.next_of_any(KINDS).await,
        json!({"type": "chat_renamed", "seq": 2, "chat": chat, "name": "renamed", "by": alice_id})
    );
    alice
        .delete(&format!("/api/chats/{chat}/participants/{carol_id}/"))
        .await;
    assert_eq!(
        watching.next_of_any(KINDS).await,
        json!({"type": "member_removed", "seq": 3, "chat": chat,
               "user": {"id": carol_id, "username": "carol"}, "by": alice_id})
    );
    // The owner leaves: the chat passes to bob, who joined next.
    alice
        .post(&format!("/api/chats/{chat}/leave/"), &json!({}))
        .await;
    assert_eq!(
        watching.next_of_any(KINDS).await,
        json!({"type": "member_left", "seq": 4, "chat": chat,
               "user": {"id": alice_id, "username": "alice"}, "by": null})
    );
    assert_eq!(
        watching.next_of_any(KINDS).await,
        json!({"type": "owner_changed", "seq": 5, "chat": chat,
               "user": {"id": bob_id, "username": "bob"}, "by": null})
    );
    // The original protocol saw none of it: its next frame is the next message.
    let sent = bob.send_message(chat, "after all that").await;
    assert_eq!(sent["seq"], 6);
    assert_eq!(original.next_message().await["seq"], 6);

    // A client that was away reads the same from the log.
    let log = bob.get(&format!("/api/chats/{chat}/events/")).await;
    let kinds: Vec<&str> = log
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "member_added",
            "chat_renamed",
            "member_removed",
            "member_left",
            "owner_changed",
            "message"
        ]
    );
}

#[tokio::test]
async fn reactions_are_one_per_user_per_emoji_counted_per_viewer_and_logged() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let bob_id = id(&bob.me().await);
    let alice_id = id(&alice.me().await);
    let chat = alice.create_chat("c", &[bob_id]).await;
    let sent = bob.send_message(chat, "react to me").await;
    let path = format!("{}reactions/", message_path(chat, id(&sent)));
    let mut extended = bob.ws_v2(chat).await;
    let mut original = bob.ws(chat).await;
    const KINDS: &[&str] = &["message", "reaction_added", "reaction_removed"];

    let added = alice.post(&path, &json!({"emoji": "👍"})).await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    assert_eq!(
        added.body["reactions"],
        json!([{"emoji": "👍", "count": 1, "me": true}])
    );
    assert_eq!(
        extended.next_of_any(KINDS).await,
        json!({"type": "reaction_added", "seq": 2, "chat": chat, "id": id(&sent),
               "emoji": "👍", "user": {"id": alice_id, "username": "alice"}})
    );
    let again = alice.post(&path, &json!({"emoji": "👍"})).await;
    assert_eq!(
        again.status,
        StatusCode::OK,
        "the same reaction twice changes nothing"
    );
    // An unqualified heart and the fully qualified one are the same reaction.
    let heart = bob.post(&path, &json!({"emoji": "\u{2764}"})).await;
    assert_eq!(heart.status, StatusCode::CREATED);
    let heart_again = bob.post(&path, &json!({"emoji": "\u{2764}\u{fe0f}"})).await;
    assert_eq!(heart_again.status, StatusCode::OK);
    bob.post(&path, &json!({"emoji": "👍"})).await;
    for bad in ["a", "👍👍", "", "👍 ok"] {
        let refused = bob.post(&path, &json!({"emoji": bad})).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{bad:?}");
    }
    let refused = bob.post(&path, &json!({"emoji": "x"})).await;
    assert_eq!(refused.body, json!({"emoji": ["Enter one emoji."]}));

    // Each viewer sees the counts, and whether they are among them.
    let as_alice = alice.chat_messages(chat).await;
    assert_eq!(
        as_alice[0]["reactions"],
        json!([{"emoji": "👍", "count": 2, "me": true}, {"emoji": "\u{2764}\u{fe0f}", "count": 1, "me": false}])
    );
    let carol = app.user("carol").await;
    let carol_id = id(&carol.me().await);
    alice
        .post(
            &format!("/api/chats/{chat}/participants/"),
            &json!({"participant_ids": [carol_id]}),
        )
        .await;
    let as_carol = carol.get(&format!("/api/messages/{}/", id(&sent))).await;
    assert_eq!(
        as_carol.body["reactions"],
        json!([{"emoji": "👍", "count": 2, "me": false}, {"emoji": "\u{2764}\u{fe0f}", "count": 1, "me": false}])
    );

    // Taken back by query parameter; taking back what is not there changes nothing.
    let removed = alice.delete(&format!("{path}?emoji=%F0%9F%91%8D")).await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.body);
    assert_eq!(removed.body["reactions"][0]["count"], 1);
    assert_eq!(removed.body["reactions"][0]["me"], false);
    let none = alice.delete(&format!("{path}?emoji=%F0%9F%91%8D")).await;
    assert_eq!(none.status, StatusCode::OK);
    let log = alice.get(&format!("/api/chats/{chat}/events/")).await;
    let kinds: Vec<&str> = log
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .filter(|k| k.starts_with("reaction"))
        .collect();
    assert_eq!(
        kinds,
        [
            "reaction_added",
            "reaction_added",
            "reaction_added",
            "reaction_removed"
        ]
    );

    // Outsiders learn nothing; a tombstone takes no reactions; the original protocol saw none.
    let outsider = app.user("eve").await;
    let hidden = outsider.post(&path, &json!({"emoji": "👍"})).await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    bob.delete(&message_path(chat, id(&sent))).await;
    let on_tombstone = alice.post(&path, &json!({"emoji": "👍"})).await;
    assert_eq!(on_tombstone.status, StatusCode::CONFLICT);
    bob.send_message(chat, "next").await;
    assert_eq!(original.next_message().await["content"], "next");
}

#[tokio::test]
async fn read_positions_give_unread_counts_in_the_chat_list_and_move_only_forward() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let bob_id = id(&bob.me().await);
    let chat = alice.create_chat("c", &[bob_id]).await;
    let quiet = alice.create_chat("quiet", &[bob_id]).await;
    for n in 0..3 {
        alice.send_message(chat, &format!("from alice {n}")).await;
    }
    bob.send_message(chat, "from bob").await;
    let deleted = alice.send_message(chat, "gone").await;
    alice.delete(&message_path(chat, id(&deleted))).await;

    let unread = |list: &Value, chat: i64| {
        let chat = list
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == chat)
            .unwrap()
            .clone();
        (
            chat["last_read_seq"].as_i64().unwrap(),
            chat["unread_count"].as_i64().unwrap(),
        )
    };
    let list = bob.get("/api/chats/").await.body;
    assert_eq!(
        unread(&list, chat),
        (0, 3),
        "others' messages, tombstones left out"
    );
    assert_eq!(unread(&list, quiet), (0, 0));
    let list = alice.get("/api/chats/").await.body;
    assert_eq!(
        unread(&list, chat),
        (0, 1),
        "one's own messages are never unread"
    );

    let read = bob
        .post(&format!("/api/chats/{chat}/read/"), &json!({"seq": 2}))
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(
        read.body,
        json!({"chat": chat, "last_read_seq": 2, "unread_count": 1, "unread_mentions": 0})
    );
    let back = bob
        .post(&format!("/api/chats/{chat}/read/"), &json!({"seq": 1}))
        .await;
    assert_eq!(back.body["last_read_seq"], 2, "never moved back");
    let past = bob
        .post(&format!("/api/chats/{chat}/read/"), &json!({"seq": 999}))
        .await;
    assert_eq!(
        past.body["last_read_seq"], 5,
        "capped at the chat's last message (position 6 is its deletion)"
    );
    assert_eq!(past.body["unread_count"], 0);
    let one = bob.get(&format!("/api/chats/{chat}/")).await.body;
    assert_eq!(
        (one["last_read_seq"].as_i64(), one["unread_count"].as_i64()),
        (Some(5), Some(0))
    );

    let bad = bob
        .post(&format!("/api/chats/{chat}/read/"), &json!({"seq": -1}))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let missing = bob
        .post(&format!("/api/chats/{chat}/read/"), &json!({}))
        .await;
    assert_eq!(missing.body, json!({"seq": ["This field is required."]}));
    let outsider = app.user("eve").await;
    let hidden = outsider
        .post(&format!("/api/chats/{chat}/read/"), &json!({"seq": 1}))
        .await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_v2_socket_edits_deletes_reacts_and_marks_read_and_an_original_one_cannot() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let bob_id = id(&bob.me().await);
    let chat = alice.create_chat("c", &[bob_id]).await;
    let mut socket = bob.ws_v2(chat).await;
    socket.send_json(json!({"content": "hello"})).await;
    let message = socket.next_of_any(LOGGED).await["message"].clone();
    let message_id = id(&message);

    socket
        .send_json(json!({"type": "edit", "id": message_id, "content": "hello again"}))
        .await;
    let edited = socket.next_of_any(LOGGED).await;
    assert_eq!(
        (edited["type"].as_str(), edited["content"].as_str()),
        (Some("message_edited"), Some("hello again"))
    );
    socket
        .send_json(json!({"type": "react", "id": message_id, "emoji": "🎉"}))
        .await;
    assert_eq!(socket.next_of("reaction_added").await["emoji"], "🎉");
    socket
        .send_json(json!({"type": "unreact", "id": message_id, "emoji": "🎉"}))
        .await;
    assert_eq!(socket.next_of("reaction_removed").await["emoji"], "🎉");
    alice.send_message(chat, "unread by bob").await;
    socket.send_json(json!({"type": "read", "seq": 5})).await;
    // Refusals come back as error frames and the socket stays open.
    socket
        .send_json(json!({"type": "edit", "id": 999_999, "content": "x"}))
        .await;
    assert_eq!(
        socket.next_of("error").await["message"],
        "Message not found"
    );
    socket.send_json(json!({"type": "read"})).await;
    assert_eq!(
        socket.next_of("error").await["message"],
        "A read frame needs seq, a whole number"
    );
    socket
        .send_json(json!({"type": "delete", "id": message_id}))
        .await;
    assert_eq!(socket.next_of("message_deleted").await["id"], message_id);
    let list = bob.get(&format!("/api/chats/{chat}/")).await.body;
    assert_eq!(list["last_read_seq"], 5);
    assert_eq!(list["unread_count"], 0);

    // The original protocol reads every frame as a message, as the original does.
    let mut original = bob.ws(chat).await;
    original
        .send_json(json!({"type": "delete", "id": message_id, "content": "a message after all"}))
        .await;
    assert_eq!(
        original.next_message().await["content"],
        "a message after all"
    );
}

#[tokio::test]
async fn a_reply_carries_a_preview_of_its_parent_over_rest_and_the_socket() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let bob_id = id(&bob.me().await);
    let chat = alice.create_chat("c", &[bob_id]).await;
    let other = alice.create_chat("other", &[]).await;
    let long = "a".repeat(150);
    let parent = alice.send_message(chat, &long).await;
    let mut socket = bob.ws_v2(chat).await;
    let mut listening = alice.ws(chat).await;

    let reply = bob
        .post(
            &format!("/api/chats/{chat}/send_message/"),
            &json!({"content": "replying", "reply_to": id(&parent)}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let alice_id = id(&alice.me().await);
    let preview = json!({"id": id(&parent), "sender": {"id": alice_id, "username": "alice"},
                         "excerpt": "a".repeat(100)});
    assert_eq!(reply.body["reply_to"], preview);
    assert_eq!(
        socket.next_message().await["reply_to"],
        preview,
        "live frames carry it"
    );
    let plain_frame = listening.next_message().await;
    assert_eq!(plain_frame["content"], "replying");
    assert_eq!(
        plain_frame.get("reply_to"),
        None,
        "the original protocol's frames have the original's fields only"
    );
    socket
        .send_json(json!({"content": "from the socket", "reply_to": id(&parent)}))
        .await;
    assert_eq!(socket.next_message().await["reply_to"], preview);
    // The original protocol reads content only: its reply_to is ignored, as the original would.
    let mut original = bob.ws(chat).await;
    original
        .send_json(json!({"content": "plain", "reply_to": "not an id"}))
        .await;
    let plain = original.next_message().await;
    assert_eq!(plain.get("reply_to"), None);

    // Only a message of the same chat can be replied to.
    let elsewhere = alice.send_message(other, "elsewhere").await;
    for bad in [json!(id(&elsewhere)), json!(999_999)] {
        let refused = bob
            .post(
                &format!("/api/chats/{chat}/send_message/"),
                &json!({"content": "x", "reply_to": bad}),
            )
            .await;
        assert_eq!(
            refused.body,
            json!({"reply_to": ["Not a message of this chat."]})
        );
    }
    socket
        .send_json(json!({"content": "x", "reply_to": "abc"}))
        .await;
    assert_eq!(
        socket.next_of("error").await["message"],
        "reply_to must be a message id"
    );

    // A deleted parent shows as deleted in every read.
    alice.delete(&message_path(chat, id(&parent))).await;
    let history = bob.chat_messages(chat).await;
    let reply_now = history
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == reply.body["id"])
        .unwrap()
        .clone();
    assert_eq!(
        reply_now["reply_to"],
        json!({"id": id(&parent), "sender": {"id": alice_id, "username": "alice"},
               "excerpt": "", "deleted": true})
    );
}

#[tokio::test]
async fn a_message_carries_at_most_fifty_different_reactions() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let chat = alice.create_chat("c", &[]).await;
    let sent = alice.send_message(chat, "react").await;
    let path = format!("{}reactions/", message_path(chat, id(&sent)));
    let mut emojis = emojis::iter().map(|e| e.as_str());
    for emoji in emojis.by_ref().take(50) {
        let added = alice.post(&path, &json!({"emoji": emoji})).await;
        assert_eq!(added.status, StatusCode::CREATED, "{emoji}: {}", added.body);
    }
    let first = emojis::iter().next().unwrap().as_str();
    let again = alice.post(&path, &json!({"emoji": first})).await;
    assert_eq!(
        again.status,
        StatusCode::OK,
        "one already there is not another"
    );
    let another = alice
        .post(&path, &json!({"emoji": emojis.next().unwrap()}))
        .await;
    assert_eq!(another.status, StatusCode::CONFLICT, "{}", another.body);
    assert_eq!(
        another.body,
        json!({"detail": "This message has 50 different reactions, the most it can have."})
    );
}
