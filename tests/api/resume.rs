//! A `mrm.v2` client that keeps reconnecting while others keep changing the chat (sends,
//! edits, deletions, reactions, pins, renames, read receipts, all at once) ends with exactly
//! the chat a fresh REST read shows, having seen every position once, in order.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::events::{position, v2_after};
use crate::helpers::{id, Client, TestApp, WsEvent};

/// Every frame kind of the log.
const LOGGED: &[&str] = &[
    "message",
    "message_edited",
    "message_deleted",
    "reaction_added",
    "reaction_removed",
    "message_pinned",
    "message_unpinned",
    "chat_renamed",
    "read_receipt",
    "read_receipts_switched",
    "member_added",
    "member_removed",
    "member_left",
    "owner_changed",
];

/// A message as the client holds it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Held {
    content: String,
    deleted: bool,
    /// emoji → who reacted.
    reactions: BTreeMap<String, BTreeSet<i64>>,
}

/// The chat as the client builds it from frames alone.
#[derive(Debug, Default)]
struct View {
    messages: BTreeMap<i64, Held>,
    pins: BTreeSet<i64>,
    name: String,
    /// user id → position read.
    receipts: BTreeMap<i64, i64>,
    receipts_on: bool,
}

impl View {
    fn apply(&mut self, frame: &Value) {
        fn message<'v>(view: &'v mut View, frame: &Value) -> &'v mut Held {
            view.messages
                .get_mut(&id(frame))
                .expect("a change follows its message")
        }
        match frame["type"].as_str().unwrap() {
            "message" => {
                let m = &frame["message"];
                self.messages.insert(
                    id(m),
                    Held {
                        content: m["content"].as_str().unwrap().to_owned(),
                        deleted: m["deleted"].as_bool().unwrap_or(false),
                        reactions: BTreeMap::new(),
                    },
                );
            }
            "message_edited" => {
                message(self, frame).content = frame["content"].as_str().unwrap().to_owned();
            }
            "message_deleted" => {
                *message(self, frame) = Held {
                    deleted: true,
                    ..Held::default()
                };
                self.pins.remove(&id(frame));
            }
            kind @ ("reaction_added" | "reaction_removed") => {
                let emoji = frame["emoji"].as_str().unwrap().to_owned();
                let user = id(&frame["user"]);
                let reactions = &mut message(self, frame).reactions;
                if kind == "reaction_added" {
                    reactions.entry(emoji).or_default().insert(user);
                } else if let Some(users) = reactions.get_mut(&emoji) {
                    users.remove(&user);
                    if users.is_empty() {
                        reactions.remove(&emoji);
                    }
                }
            }
            "message_pinned" => {
                self.pins.insert(id(frame));
            }
            "message_unpinned" => {
                self.pins.remove(&id(frame));
            }
            "chat_renamed" => self.name = frame["name"].as_str().unwrap().to_owned(),
            "read_receipts_switched" => self.receipts_on = frame["on"].as_bool().unwrap(),
            "read_receipt" => {
                self.receipts
                    .insert(id(&frame["user"]), frame["read_seq"].as_i64().unwrap());
            }
            other => panic!("unexpected frame {other}: {frame}"),
        }
    }
}

/// The chat as a fresh REST read shows it.
async fn fresh(client: &Client, chat: i64) -> View {
    let messages = client
        .get(&format!("/api/chats/{chat}/messages/?limit=500"))
        .await
        .body;
    let messages = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let reactions = m["reactions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    // Counts only: who reacted is not in a message object.
                    let count = r["count"].as_u64().unwrap() as i64;
                    (
                        r["emoji"].as_str().unwrap().to_owned(),
                        (0..count).collect(),
                    )
                })
                .collect();
            let held = Held {
                content: m["content"].as_str().unwrap().to_owned(),
                deleted: m["deleted"].as_bool().unwrap_or(false),
                reactions,
            };
            (id(m), held)
        })
        .collect();
    let pins = client
        .get(&format!("/api/chats/{chat}/pins/"))
        .await
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|p| id(&p["message"]))
        .collect();
    let name = client.get(&format!("/api/chats/{chat}/")).await.body["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let receipts = client
        .get(&format!("/api/chats/{chat}/receipts/"))
        .await
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["last_read_seq"].as_i64().unwrap() > 0)
        .map(|r| (id(&r["user"]), r["last_read_seq"].as_i64().unwrap()))
        .collect();
    let receipts_on = client.get(&format!("/api/chats/{chat}/")).await.body["read_receipts"]
        .as_bool()
        .unwrap();
    View {
        messages,
        pins,
        name,
        receipts,
        receipts_on,
    }
}

/// Reaction counts per message, for comparing a frame-built view with a REST one.
fn counted(view: &View) -> BTreeMap<i64, (String, bool, BTreeMap<String, usize>)> {
    view.messages
        .iter()
        .map(|(id, m)| {
            let counts = m
                .reactions
                .iter()
                .map(|(emoji, users)| (emoji.clone(), users.len()))
                .collect();
            (*id, (m.content.clone(), m.deleted, counts))
        })
        .collect()
}

/// One member's share of the changes: `rounds` rounds of a send, then in turn an edit,
/// reactions added and taken back, a deletion (of a reacted or an edited message), pins, an
/// unpin and a rename (the owner only), and a read up to what they just sent.
async fn keep_changing(client: Client, chat: i64, who: &'static str, rounds: usize, owner: bool) {
    let mut mine: Vec<Value> = Vec::new();
    for round in 0..rounds {
        let sent = client.send_message(chat, &format!("{who} {round}")).await;
        let path = |m: &Value| format!("/api/chats/{chat}/messages/{}/", id(m));
        match round % 4 {
            0 => {
                let edited = client
                    .patch(
                        &path(&sent),
                        &json!({"content": format!("{who} {round} edited")}),
                    )
                    .await;
                assert!(edited.status.is_success(), "{}", edited.body);
            }
            1 => {
                for emoji in ["👍", "❤️"] {
                    client
                        .post(
                            &format!("{}reactions/", path(&sent)),
                            &json!({"emoji": emoji}),
                        )
                        .await;
                }
                client
                    .delete(&format!("{}reactions/?emoji=%F0%9F%91%8D", path(&sent)))
                    .await;
            }
            2 => {
                // In turn the reacted message of the round before and the edited one of two
                // rounds before: a deletion erases reactions and edits alike.
                let back = if round % 8 == 2 { 1 } else { 2 };
                let gone = client.delete(&path(&mine[mine.len() - back])).await;
                assert!(gone.status.is_success(), "{}", gone.body);
            }
            3 if owner => {
                client
                    .post(&format!("{}pin/", path(&sent)), &json!({}))
                    .await;
                let earlier = &mine[mine.len() - 1];
                client
                    .post(&format!("{}pin/", path(earlier)), &json!({}))
                    .await;
                client.delete(&format!("{}pin/", path(earlier))).await;
                client
                    .patch(
                        &format!("/api/chats/{chat}/"),
                        &json!({"name": format!("round {round}")}),
                    )
                    .await;
            }
            _ => {}
        }
        let read = client
            .post(
                &format!("/api/chats/{chat}/read/"),
                &json!({"seq": sent["seq"]}),
            )
            .await;
        assert!(read.status.is_success(), "{}", read.body);
        mine.push(sent);
    }
}

/// The chat's last position, as the events endpoint shows it.
async fn log_end(client: &Client, chat: i64, after: i64) -> i64 {
    let mut end = after;
    loop {
        let page = client
            .get(&format!("/api/chats/{chat}/events/?after={end}&limit=500"))
            .await
            .body;
        match page.as_array().unwrap().last() {
            Some(last) => end = position(last),
            None => return end,
        }
    }
}

#[tokio::test]
async fn a_client_reconnecting_while_others_change_the_chat_ends_with_the_chat_as_rest_shows_it() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let alice_id = id(&alice.me().await);
    let bob_id = id(&bob.me().await);
    let chat = carol.create_chat("start", &[alice_id, bob_id]).await;
    carol
        .patch(
            &format!("/api/chats/{chat}/"),
            &json!({"read_receipts": true}),
        )
        .await;

    let mut view = View {
        name: "start".into(),
        ..View::default()
    };
    let writers = [
        tokio::spawn(keep_changing(bob.clone(), chat, "bob", 24, false)),
        tokio::spawn(keep_changing(carol.clone(), chat, "carol", 24, true)),
    ];

    // Reconnect after 1, 2, 3, … frames, each time from the position reached, until the
    // writers are done and the client has reached the end of the log.
    let mut last = 0;
    let mut frames_per_connection = 1;
    let mut connections = 0;
    loop {
        let done = writers.iter().all(|w| w.is_finished());
        let end = log_end(&alice, chat, last).await;
        if done && last == end {
            break;
        }
        let mut socket = v2_after(&alice, chat, last).await;
        connections += 1;
        let mut taken = 0;
        while taken < frames_per_connection {
            // While the log has positions the client has not seen, frames are due; once it
            // has seen them all, wait only as long as some writer may still add more.
            let end = log_end(&alice, chat, last).await;
            if last == end {
                if writers.iter().all(|w| w.is_finished()) {
                    break;
                }
                match socket
                    .next_within(std::time::Duration::from_millis(50))
                    .await
                {
                    Some(WsEvent::Json(frame))
                        if LOGGED.contains(&frame["type"].as_str().unwrap_or("")) =>
                    {
                        assert_eq!(position(&frame), last + 1, "no gap and no duplicate");
                        view.apply(&frame);
                        last += 1;
                        taken += 1;
                    }
                    Some(WsEvent::Json(_)) | None => {}
                    Some(WsEvent::Closed(code)) => panic!("socket closed ({code:?})"),
                }
                continue;
            }
            let frame = socket.next_of_any(LOGGED).await;
            assert_eq!(position(&frame), last + 1, "no gap and no duplicate");
            view.apply(&frame);
            last += 1;
            taken += 1;
        }
        frames_per_connection = frames_per_connection % 5 + 1;
        // The client marks read what it has seen, as a client following the log does; in a
        // chat with read receipts this logs a receipt, which it then reads in turn.
        if connections % 3 == 0 {
            alice
                .post(&format!("/api/chats/{chat}/read/"), &json!({"seq": last}))
                .await;
        }
    }
    for writer in writers {
        writer.await.expect("the writer finished its changes");
    }
    assert!(
        connections > 10,
        "the client reconnected {connections} times"
    );

    let rest = fresh(&alice, chat).await;
    assert_eq!(counted(&view), counted(&rest));
    assert!(
        view.messages.values().any(|m| m.deleted)
            && view.messages.values().any(|m| !m.reactions.is_empty()),
        "the run covered deletions and reactions"
    );
    assert_eq!(view.pins, rest.pins);
    assert!(!view.pins.is_empty());
    assert_eq!(view.name, rest.name);
    assert_eq!(view.receipts, rest.receipts);
    assert!(view.receipts_on && rest.receipts_on);
    assert_eq!(view.receipts.len(), 3, "every member's reads were seen");
    // Reading what it has seen, again and again, logs nothing more: the log has come to rest.
    for _ in 0..3 {
        alice
            .post(&format!("/api/chats/{chat}/read/"), &json!({"seq": last}))
            .await;
        last = log_end(&alice, chat, last).await;
    }
    assert_eq!(log_end(&alice, chat, 0).await, last);
}
