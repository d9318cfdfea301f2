//! The group chat socket, `/ws/chat/{id}/`, with real WebSocket clients.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{id, usernames, Client, TestApp, WsEvent, WsOptions};

fn seq(message: &Value) -> i64 {
    message["seq"].as_i64().unwrap()
}

/// Alice (owner), Bob and Carol in one chat; returns their clients and the chat id.
async fn trio(app: &TestApp) -> (Client, Client, Client, i64) {
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let members = [id(&bob.me().await), id(&carol.me().await)];
    let chat = alice.create_chat("trio", &members).await;
    (alice, bob, carol, chat)
}

#[tokio::test]
async fn messages_reach_every_participant_in_order_sender_included() {
    let app = TestApp::spawn().await;
    let (alice, bob, carol, chat) = trio(&app).await;
    let mut sockets = vec![
        alice.ws(chat).await,
        bob.ws(chat).await,
        carol.ws(chat).await,
    ];
    for i in 0..30 {
        let sender = &mut sockets[i % 3];
        sender
            .send_json(json!({"content": format!("m{i}"), "ignored": true}))
            .await;
    }
    // Senders interleave, so the order is the order of commit: seq 1..=30 on every socket.
    let mut seen = Vec::new();
    for socket in &mut sockets {
        let mut got = Vec::new();
        for _ in 0..30 {
            got.push(socket.next_message().await);
        }
        assert_eq!(
            got.iter().map(seq).collect::<Vec<_>>(),
            (1..=30).collect::<Vec<_>>()
        );
        seen.push(got);
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[1], seen[2]);
    let stored = alice.chat_messages(chat).await;
    assert_eq!(
        stored,
        json!(seen[0]),
        "frames carry the stored message objects"
    );
    let mut contents: Vec<String> = seen[0]
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect();
    contents.sort();
    let mut expected: Vec<String> = (0..30).map(|i| format!("m{i}")).collect();
    expected.sort();
    assert_eq!(contents, expected);
}

#[tokio::test]
async fn messages_sent_over_rest_arrive_on_sockets() {
    let app = TestApp::spawn().await;
    let (alice, bob, _carol, chat) = trio(&app).await;
    let mut bob_socket = bob.ws(chat).await;
    let sent = alice.send_message(chat, "over REST").await;
    let frame = bob_socket.next_of("message").await;
    assert_eq!(frame, json!({"type": "message", "message": sent}));
}

/// A live-only socket owes its client every message committed after the handshake, even one
/// that commits before the socket has joined its room (the join happens after the 101, and a
/// new room first reads the chat's position from the database).
#[tokio::test]
async fn a_message_sent_right_after_the_handshake_reaches_the_socket() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let bob_id = id(&bob.me().await);
    for round in 0..40 {
        let chat = alice
            .create_chat(&format!("fresh {round}"), &[bob_id])
            .await;
        let mut socket = bob.ws(chat).await;
        let sent = alice
            .send_message(chat, &format!("right away {round}"))
            .await;
        let frame = socket.next_of("message").await;
        assert_eq!(frame["message"], sent, "round {round}");
        drop(socket);
    }
}

#[tokio::test]
async fn a_resuming_client_misses_nothing_while_another_keeps_sending() {
    let app = TestApp::spawn().await;
    let (alice, bob, _carol, chat) = trio(&app).await;
    let mut socket = bob.ws(chat).await;
    let sender = tokio::spawn(async move {
        for i in 0..500 {
            alice.send_message(chat, &format!("n{i}")).await;
        }
    });
    let mut received = Vec::new();
    // Read a little, drop the connection, reconnect from the last seq seen; three times over.
    for round in 0..4 {
        let take = if round < 3 { 40 } else { usize::MAX };
        while received.len() < 500 && (take == usize::MAX || received.len() < (round + 1) * 40) {
            received.push(seq(&socket.next_message().await));
        }
        if received.len() >= 500 {
            break;
        }
        drop(socket);
        tokio::time::sleep(Duration::from_millis(30)).await;
        socket = bob.ws_after(chat, *received.last().unwrap()).await;
    }
    sender.await.unwrap();
    assert_eq!(
        received,
        (1..=500).collect::<Vec<_>>(),
        "every seq exactly once, in order"
    );
}

#[tokio::test]
async fn resume_by_message_id_and_live_only_by_default() {
    let app = TestApp::spawn().await;
    let (alice, bob, _carol, chat) = trio(&app).await;
    let first = alice.send_message(chat, "one").await;
    alice.send_message(chat, "two").await;
    let query = format!("?after={}", id(&first));
    let mut resumed = bob
        .ws_with(
            chat,
            WsOptions {
                query: &query,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(resumed.next_message().await["content"], "two");

    let mut live = bob.ws(chat).await;
    alice.send_message(chat, "three").await;
    assert_eq!(
        live.next_message().await["content"],
        "three",
        "no replay without a resume point"
    );
    assert_eq!(resumed.next_message().await["content"], "three");

    for bad in ["?after_seq=x", "?after=999999"] {
        let refused = bob
            .ws_with(
                chat,
                WsOptions {
                    query: bad,
                    ..Default::default()
                },
            )
            .await;
        assert_eq!(refused.err(), Some(400), "{bad}");
    }
}

#[tokio::test]
async fn a_slow_client_is_closed_with_4008_and_the_others_get_everything() {
    let app = TestApp::spawn_with(|c| c.ws_queue_capacity = 8).await;
    let (alice, bob, carol, chat) = trio(&app).await;
    let mut fast = carol.ws(chat).await;
    let mut slow = bob
        .ws_with(
            chat,
            WsOptions {
                recv_buffer: Some(4096),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let big = "x".repeat(8000);
    let total = 400;
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while seqs.len() < total {
            seqs.push(seq(&fast.next_message().await));
        }
        seqs
    });
    for i in 0..total {
        alice.send_message(chat, &format!("{i} {big}")).await;
    }
    assert_eq!(
        reader.await.unwrap(),
        (1..=total as i64).collect::<Vec<_>>()
    );

    // The slow one finds a close frame after what was already in flight to it.
    let mut last = 0;
    let code = loop {
        match slow.next().await {
            WsEvent::Json(frame) if frame["type"] == "message" => last = seq(&frame["message"]),
            WsEvent::Json(_) => {}
            WsEvent::Closed(code) => break code,
        }
    };
    assert_eq!(code, Some(4008));
    assert!(
        last < total as i64,
        "it was closed before it had everything"
    );
    let mut resumed = bob.ws_after(chat, last).await;
    for expected in last + 1..=total as i64 {
        assert_eq!(seq(&resumed.next_message().await), expected);
    }
}

#[tokio::test]
async fn removed_members_and_deleted_chats_lose_their_sockets() {
    let app = TestApp::spawn().await;
    let (alice, bob, carol, chat) = trio(&app).await;
    let mut alice_socket = alice.ws(chat).await;
    let mut bob_socket = bob.ws(chat).await;
    let mut carol_socket = carol.ws(chat).await;

    let bob_id = id(&bob.me().await);
    let response = alice
        .delete(&format!("/api/chats/{chat}/participants/{bob_id}/"))
        .await;
    assert_eq!(response.status, StatusCode::NO_CONTENT);
    assert_eq!(bob_socket.closed().await, Some(4003));
    // Bob is refused from now on, and the others see him go.
    assert_eq!(
        bob.ws_with(chat, WsOptions::default()).await.err(),
        Some(403)
    );
    loop {
        let presence = alice_socket.next_of("presence").await;
        if presence["online"].as_array().unwrap().len() == 2 {
            break;
        }
    }

    carol
        .post(&format!("/api/chats/{chat}/leave/"), &json!({}))
        .await;
    assert_eq!(carol_socket.closed().await, Some(4003));

    alice.send_message(chat, "still here").await;
    assert_eq!(alice_socket.next_message().await["content"], "still here");
    assert_eq!(
        alice.delete(&format!("/api/chats/{chat}/")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(alice_socket.closed().await, Some(4004));
}

#[tokio::test]
async fn handshakes_are_refused_before_the_upgrade() {
    let app =
        TestApp::spawn_with(|c| c.allowed_origins = vec!["https://app.example.com".into()]).await;
    let (alice, _bob, _carol, chat) = trio(&app).await;
    let outsider = app.user("mallory").await;

    assert_eq!(
        app.client().ws_with(chat, WsOptions::default()).await.err(),
        Some(403),
        "anonymous"
    );
    assert_eq!(
        outsider.ws_with(chat, WsOptions::default()).await.err(),
        Some(403),
        "not a participant"
    );
    assert_eq!(
        alice.ws_with(987_654, WsOptions::default()).await.err(),
        Some(403),
        "unknown chat"
    );
    let evil = WsOptions {
        origin: Some("https://evil.example.net"),
        ..Default::default()
    };
    assert_eq!(
        alice.ws_with(chat, evil).await.err(),
        Some(403),
        "foreign origin"
    );

    let own = format!("http://{}", app.addr);
    let own = WsOptions {
        origin: Some(&own),
        ..Default::default()
    };
    assert!(alice.ws_with(chat, own).await.is_ok());
    let trusted = WsOptions {
        origin: Some("https://app.example.com"),
        ..Default::default()
    };
    assert!(alice.ws_with(chat, trusted).await.is_ok());

    let token = app
        .client()
        .post(
            "/api/tokens/",
            &json!({"username": "alice", "password": crate::helpers::PASSWORD}),
        )
        .await
        .body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut with_token = Client::with_bearer(app.addr, &token).ws(chat).await;
    with_token.send_json(json!({"content": "via token"})).await;
    assert_eq!(with_token.next_message().await["content"], "via token");
}

#[tokio::test]
async fn bad_input_gets_an_error_frame_and_saves_nothing() {
    let app = TestApp::spawn().await;
    let (alice, _bob, _carol, chat) = trio(&app).await;
    let mut socket = alice.ws(chat).await;
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "Invalid JSON"),
        ("[1, 2]".into(), "Invalid JSON"),
        (
            json!({"content": ""}).to_string(),
            "Content cannot be empty",
        ),
        (
            json!({"content": "   "}).to_string(),
            "Content cannot be empty",
        ),
        (json!({}).to_string(), "Content cannot be empty"),
        (
            json!({"content": 5}).to_string(),
            "Content must be a string",
        ),
        (
            json!({"content": "x".repeat(10_001)}).to_string(),
            "Content is too long (at most 10000 characters)",
        ),
        (
            json!({"type": "dance"}).to_string(),
            "Unknown message type: dance",
        ),
    ];
    for (frame, message) in cases {
        socket.send_text(frame).await;
        let error = socket.next_of("error").await;
        assert_eq!(error, json!({"type": "error", "message": message}));
    }
    socket.send_raw(Message::Binary(vec![1, 2, 3].into())).await;
    assert_eq!(
        socket.next_of("error").await["message"],
        "Binary frames are not supported"
    );

    // Still usable after all that.
    socket
        .send_json(json!({"type": "message", "content": "fine"}))
        .await;
    assert_eq!(socket.next_message().await["seq"], 1);

    // A frame over 128 KiB closes the socket with 1009.
    socket.send_text("x".repeat(130 * 1024)).await;
    assert_eq!(socket.closed().await, Some(1009));
    let stored = alice.chat_messages(chat).await;
    assert_eq!(
        stored.as_array().unwrap().len(),
        1,
        "only the good message was saved"
    );
}

#[tokio::test]
async fn socket_sends_are_rate_limited() {
    let app = TestApp::spawn_with(|c| c.messages_per_second = 3.try_into().unwrap()).await;
    let (alice, _bob, _carol, chat) = trio(&app).await;
    let mut socket = alice.ws(chat).await;
    for i in 0..8 {
        socket
            .send_json(json!({"content": format!("burst {i}")}))
            .await;
    }
    let (mut messages, mut limited) = (0, 0);
    while messages + limited < 8 {
        let frame = socket.next().await;
        let WsEvent::Json(frame) = frame else {
            panic!("closed")
        };
        match frame["type"].as_str().unwrap() {
            "message" => messages += 1,
            "error" => {
                assert_eq!(frame["message"], "Rate limit exceeded");
                limited += 1;
            }
            _ => {}
        }
    }
    assert!(limited > 0);
    let stored = alice.chat_messages(chat).await;
    assert_eq!(stored.as_array().unwrap().len(), messages);
}

fn online(presence: &Value) -> Vec<String> {
    usernames(&presence["online"])
}

#[tokio::test]
async fn typing_and_presence() {
    let app = TestApp::spawn().await;
    let (alice, bob, _carol, chat) = trio(&app).await;
    let mut alice_socket = alice.ws(chat).await;
    assert_eq!(online(&alice_socket.next_of("presence").await), ["alice"]);

    let mut bob_socket = bob.ws(chat).await;
    assert_eq!(
        online(&bob_socket.next_of("presence").await),
        ["alice", "bob"]
    );
    assert_eq!(
        online(&alice_socket.next_of("presence").await),
        ["alice", "bob"]
    );

    // A second socket of Bob's counts once.
    let mut bob_again = bob.ws(chat).await;
    assert_eq!(
        online(&bob_again.next_of("presence").await),
        ["alice", "bob"]
    );

    bob_socket.send_json(json!({"type": "typing"})).await;
    let typing = alice_socket.next_of("typing").await;
    assert_eq!(
        typing,
        json!({"type": "typing", "user": {"id": id(&bob.me().await), "username": "bob"}})
    );
    assert_eq!(bob_again.next_of("typing").await["user"]["username"], "bob");
    // Typing is never stored, and the typist's own socket does not echo it.
    assert_eq!(alice.chat_messages(chat).await, json!([]));
    alice_socket.send_json(json!({"content": "marker"})).await;
    let WsEvent::Json(next) = bob_socket.next().await else {
        panic!()
    };
    assert_eq!(
        next["type"], "message",
        "bob's socket saw no typing of its own: {next}"
    );

    drop(bob_socket);
    drop(bob_again);
    loop {
        let presence = alice_socket.next_of("presence").await;
        if online(&presence) == ["alice"] {
            break;
        }
    }
}

#[tokio::test]
async fn silent_peers_are_dropped_after_a_ping() {
    let app = TestApp::spawn_with(|c| c.ws_ping_interval = Duration::from_millis(300)).await;
    let (alice, bob, _carol, chat) = trio(&app).await;
    let mut alice_socket = alice.ws(chat).await;
    // Bob's client never reads, so it never answers pings.
    let _bob_socket = bob.ws(chat).await;
    let mut saw_both = false;
    loop {
        let presence = alice_socket.next_of("presence").await;
        match online(&presence).len() {
            2 => saw_both = true,
            1 if saw_both => break,
            _ => {}
        }
    }
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001() {
    let app = TestApp::spawn().await;
    let (alice, _bob, _carol, chat) = trio(&app).await;
    let mut socket = alice.ws(chat).await;
    socket.next_of("presence").await;
    let stopping = tokio::spawn(app.stop());
    assert_eq!(socket.closed().await, Some(1001));
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .unwrap()
        .unwrap();
}
