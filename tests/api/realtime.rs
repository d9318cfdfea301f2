//! The group chat socket, `/ws/chat/{id}/`, with real WebSocket clients.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{id, without_email, Client, TestApp, WsEvent, WsOptions};

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
        // Each socket sees its own user's address only: compared without them.
        seen.push(got.iter().map(without_email).collect::<Vec<_>>());
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[1], seen[2]);
    let stored = alice.chat_messages(chat).await;
    let stored: Vec<Value> = stored
        .as_array()
        .unwrap()
        .iter()
        .map(without_email)
        .collect();
    assert_eq!(stored, seen[0], "frames carry the stored message objects");
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
    assert_eq!(
        frame,
        json!({"type": "message", "message": without_email(&sent)})
    );
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
        assert_eq!(frame["message"], without_email(&sent), "round {round}");
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
async fn a_slow_client_catches_up_from_the_log_without_a_reconnect() {
    // The client reads nothing until every message is sent: a generous write timeout keeps a
    // slow machine from taking it for one that stopped reading.
    let app = TestApp::spawn_with(|c| {
        c.ws_queue_capacity = 8;
        c.ws_write_timeout = std::time::Duration::from_secs(120);
    })
    .await;
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

    // The slow one fell far behind its queue of 8, yet reads everything, in order, once each,
    // on the same connection: what the room could not queue it read from the database.
    let mut seqs = Vec::new();
    while seqs.len() < total {
        match slow.next().await {
            WsEvent::Json(frame) if frame["type"] == "message" => seqs.push(seq(&frame["message"])),
            WsEvent::Json(_) => {}
            WsEvent::Closed(code) => panic!("closed ({code:?}) after {} messages", seqs.len()),
        }
    }
    assert_eq!(seqs, (1..=total as i64).collect::<Vec<_>>());
    // And it is live again.
    alice.send_message(chat, "live").await;
    assert_eq!(seq(&slow.next_message().await), total as i64 + 1);
    let caught_up = app.state.realtime.metrics.caught_up.get();
    assert!(caught_up >= 1, "{caught_up}");
}

#[tokio::test]
async fn a_member_removed_while_behind_is_sent_nothing_after_the_removal() {
    let app = TestApp::spawn_with(|c| {
        c.ws_queue_capacity = 8;
        c.ws_write_timeout = std::time::Duration::from_secs(120);
    })
    .await;
    let (alice, bob, _carol, chat) = trio(&app).await;
    let bob_id = id(&bob.me().await);
    let mut sockets = Vec::new();
    for protocols in [None, Some("mrm.v2")] {
        let socket = bob
            .ws_with(
                chat,
                WsOptions {
                    recv_buffer: Some(4096),
                    protocols,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        sockets.push(socket);
    }
    let big = "x".repeat(8000);
    // Far more than the sockets' queues and buffers hold: both fall behind.
    for i in 0..300 {
        alice.send_message(chat, &format!("before {i} {big}")).await;
    }
    let removed = alice
        .delete(&format!("/api/chats/{chat}/participants/{bob_id}/"))
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{}", removed.body);
    for i in 0..20 {
        alice
            .send_message(chat, &format!("after the removal {i}"))
            .await;
    }
    for mut socket in sockets {
        let code = loop {
            match socket.next().await {
                WsEvent::Json(frame) => {
                    let text = frame.to_string();
                    assert!(
                        !text.contains("after the removal"),
                        "sent after the removal: {text}"
                    );
                }
                WsEvent::Closed(code) => break code,
            }
        };
        assert_eq!(code, Some(4003));
    }
}

#[tokio::test]
async fn removed_members_and_deleted_chats_lose_their_sockets() {
    let app = TestApp::spawn().await;
    let (alice, bob, carol, chat) = trio(&app).await;
    let mut alice_socket = alice.ws_v2(chat).await;
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
    alice_socket.presence_becomes(&["alice", "carol"]).await;

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
        // The original reads only `content`, whatever the `type`.
        (
            json!({"type": "dance"}).to_string(),
            "Content cannot be empty",
        ),
        (
            json!({"type": "typing"}).to_string(),
            "Content cannot be empty",
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

    // In mrm.v2 the type is read: an unknown one is refused.
    let mut extended = alice.ws_v2(chat).await;
    extended.send_json(json!({"type": "dance"})).await;
    assert_eq!(
        extended.next_of("error").await,
        json!({"type": "error", "message": "Unknown message type: dance"})
    );

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
    let app = TestApp::spawn_with(|c| c.messages_per_second = 1.try_into().unwrap()).await;
    let (alice, _bob, _carol, chat) = trio(&app).await;
    let mut socket = alice.ws(chat).await;
    // Twenty back to back: to pass without a refusal they would have to be spread over 19 s.
    for i in 0..20 {
        socket
            .send_json(json!({"content": format!("burst {i}")}))
            .await;
    }
    let (mut messages, mut limited) = (0, 0);
    while messages + limited < 20 {
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

#[tokio::test]
async fn presence_gives_newcomers_the_list_and_others_the_change_and_typing_is_relayed() {
    let app = TestApp::spawn().await;
    let (alice, bob, _carol, chat) = trio(&app).await;
    let (alice_id, bob_id) = (id(&alice.me().await), id(&bob.me().await));
    let mut alice_socket = alice.ws_v2(chat).await;
    assert_eq!(
        alice_socket.next_of("presence").await,
        json!({"type": "presence", "online": [{"id": alice_id, "username": "alice"}]})
    );

    // A newcomer gets the whole list; the others only the change.
    let mut bob_socket = bob.ws_v2(chat).await;
    let bob_member = json!({"id": bob_id, "username": "bob"});
    assert_eq!(
        bob_socket.next_of("presence").await,
        json!({"type": "presence", "online": [{"id": alice_id, "username": "alice"}, bob_member]})
    );
    assert_eq!(
        alice_socket.next_of("presence").await,
        json!({"type": "presence", "joined": [bob_member], "left": []})
    );

    // A second socket of Bob's counts once.
    let mut bob_again = bob.ws_v2(chat).await;
    bob_again.next_of("presence").await;
    assert_eq!(bob_again.online(), ["alice", "bob"]);

    bob_socket.send_json(json!({"type": "typing"})).await;
    let typing = alice_socket.next_of("typing").await;
    assert_eq!(typing, json!({"type": "typing", "user": bob_member}));
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
    // Alice had no presence frame for Bob's second socket: her next frame is the marker.
    let WsEvent::Json(next) = alice_socket.next().await else {
        panic!()
    };
    assert_eq!(next["type"], "message", "{next}");

    drop(bob_socket);
    drop(bob_again);
    assert_eq!(
        alice_socket.next_of("presence").await,
        json!({"type": "presence", "joined": [], "left": [bob_member]})
    );
}

#[tokio::test]
async fn silent_peers_are_dropped_after_a_ping() {
    let app = TestApp::spawn_with(|c| c.ws_ping_interval = Duration::from_millis(300)).await;
    let (alice, bob, _carol, chat) = trio(&app).await;
    let mut alice_socket = alice.ws_v2(chat).await;
    // Bob's client never reads, so it never answers pings.
    let _bob_socket = bob.ws(chat).await;
    alice_socket.presence_becomes(&["alice", "bob"]).await;
    alice_socket.presence_becomes(&["alice"]).await;
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001() {
    let app = TestApp::spawn().await;
    let (alice, _bob, _carol, chat) = trio(&app).await;
    let mut socket = alice.ws_v2(chat).await;
    socket.next_of("presence").await;
    let stopping = tokio::spawn(app.stop());
    assert_eq!(socket.closed().await, Some(1001));
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .unwrap()
        .unwrap();
}

/// How long a socket may take to close once its credential ended: immediate on its own node,
/// so a generous bound on a small shared machine is still a promptness claim.
const PROMPTLY: Duration = Duration::from_secs(2);

#[tokio::test]
async fn logging_out_closes_the_sockets_of_that_session_and_no_other() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let chat = alice.create_chat("c", &[id(&bob.me().await)]).await;
    let ai_chat = id(&alice
        .post("/api/ai/chats/", &json!({"title": "t"}))
        .await
        .body);
    // A second browser session of the same user.
    let elsewhere = app.client();
    elsewhere.login("alice", crate::helpers::PASSWORD).await;

    let mut chat_socket = alice.ws(chat).await;
    let mut ai_socket = alice.ai_ws(ai_chat).await.unwrap();
    let mut other_session = elsewhere.ws(chat).await;
    let mut bobs = bob.ws(chat).await;

    let response = alice.post("/api/logout/", &json!({})).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(chat_socket.closed_within(PROMPTLY).await, Some(4001));
    assert_eq!(ai_socket.closed_within(PROMPTLY).await, Some(4001));

    // The other session's socket, and everyone else's, carry on.
    elsewhere.send_message(chat, "still here").await;
    assert_eq!(other_session.next_message().await["content"], "still here");
    assert_eq!(bobs.next_message().await["content"], "still here");
}

#[tokio::test]
async fn a_new_login_from_the_same_browser_closes_the_old_sessions_sockets() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let chat = alice.create_chat("c", &[]).await;
    let mut socket = alice.ws(chat).await;
    // Logging in again replaces the session key the browser had.
    alice.login("alice", crate::helpers::PASSWORD).await;
    assert_eq!(socket.closed_within(PROMPTLY).await, Some(4001));
    let mut fresh = alice.ws(chat).await;
    alice.send_message(chat, "hello").await;
    assert_eq!(fresh.next_message().await["content"], "hello");
}

/// A handshake's status, and its body when it was refused.
async fn raw_handshake(client: &Client, path: &str) -> (StatusCode, Value) {
    let response = client
        .request(reqwest::Method::GET, path)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    let response = client.send(response).await;
    (response.status, response.body)
}

/// Opens `count` sockets of `client` to `chat` at once; asserts that exactly `admitted` open
/// and that the others are refused with `refusal`. Returns the open ones.
async fn at_once(
    client: &Client,
    chat: i64,
    count: usize,
    admitted: usize,
    refusal: u16,
) -> Vec<crate::helpers::WsClient> {
    let attempts = (0..count).map(|_| client.ws_with(chat, WsOptions::default()));
    let results = futures_util::future::join_all(attempts).await;
    let statuses: Vec<Option<u16>> = results.iter().map(|r| r.as_ref().err().copied()).collect();
    let opened = statuses.iter().filter(|s| s.is_none()).count();
    assert_eq!(opened, admitted, "{statuses:?}");
    assert!(
        statuses.iter().flatten().all(|&s| s == refusal),
        "{statuses:?}"
    );
    results.into_iter().flatten().collect()
}

/// Retries a handshake refused with 429 until it is admitted; panics after `wait`.
async fn once_admitted<F, Fut>(open: F, wait: Duration) -> crate::helpers::WsClient
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<crate::helpers::WsClient, u16>>,
{
    let deadline = std::time::Instant::now() + wait;
    loop {
        match open().await {
            Ok(socket) => return socket,
            Err(429) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(status) => panic!("no place was given back within {wait:?} ({status})"),
        }
    }
}

#[tokio::test]
async fn a_user_over_the_per_user_limit_gets_429_while_others_still_connect() {
    let app = TestApp::spawn_with(|config| config.max_sockets_per_user = 3).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let chat = alice.create_chat("c", &[id(&bob.me().await)]).await;
    let ai_chat = id(&alice
        .post("/api/ai/chats/", &json!({"title": "t"}))
        .await
        .body);

    // Ten handshakes at once: handshakes in flight count, so exactly three get through.
    let mut open = at_once(&alice, chat, 10, 3, 429).await;

    // AI sockets count too; the answer is the contract's JSON error, before any upgrade.
    assert_eq!(alice.ai_ws(ai_chat).await.err(), Some(429));
    let (status, body) = raw_handshake(&alice, &format!("/ws/chat/{chat}/")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        body,
        json!({"detail": "You have too many sockets open; close one and try again."})
    );

    // Someone else is not affected.
    let mut bobs = bob.ws(chat).await;
    bob.send_message(chat, "hi").await;
    assert_eq!(bobs.next_message().await["content"], "hi");
    assert_eq!(open[0].next_message().await["content"], "hi");

    // A closed socket gives its place back.
    let mut closing = open.pop().unwrap();
    closing.send_raw(Message::Close(None)).await;
    closing.closed().await;
    once_admitted(|| alice.ai_ws(ai_chat), Duration::from_secs(10)).await;
}

#[tokio::test]
async fn handshakes_in_flight_count_toward_the_socket_limit() {
    let app = TestApp::spawn_with(|config| config.max_sockets = Some(4)).await;
    let alice = app.user("alice").await;
    let chat = alice.create_chat("c", &[]).await;
    at_once(&alice, chat, 24, 4, 503).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_others_are_served() {
    let app = TestApp::spawn_with(|config| {
        config.ws_write_timeout = Duration::from_secs(1);
        // One socket per user: the stalled user's next handshake succeeds only once the server
        // has let the stalled socket go.
        config.max_sockets_per_user = 1;
    })
    .await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let chat = alice.create_chat("c", &[id(&bob.me().await)]).await;

    // Bob's socket reads nothing, through a small receive buffer so the kernel's buffers fill
    // quickly.
    let stalled = bob
        .ws_with(
            chat,
            WsOptions {
                recv_buffer: Some(4096),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    // Alice floods the chat with large messages until the server lets Bob's socket go.
    let flooding = tokio_util::sync::CancellationToken::new();
    let flood = {
        let flooding = flooding.clone();
        let alice = alice.clone();
        tokio::spawn(async move {
            let body = json!({"content": "x".repeat(10_000)});
            let path = format!("/api/chats/{chat}/send_message/");
            let mut sent = 0u32;
            while !flooding.is_cancelled() {
                let response = alice.post(&path, &body).await;
                assert_eq!(response.status, StatusCode::CREATED);
                sent += 1;
            }
            sent
        })
    };
    let mut replacement = once_admitted(
        || bob.ws_with(chat, WsOptions::default()),
        Duration::from_secs(60),
    )
    .await;
    flooding.cancel();
    let sent = flood.await.unwrap();
    assert!(
        sent > 100,
        "the kernel's buffers could not fill after {sent}"
    );
    drop(stalled);

    // The server keeps serving: a new message reaches Bob's new socket.
    alice.send_message(chat, "after").await;
    loop {
        let message = replacement.next_message().await;
        if message["content"] == "after" {
            break;
        }
    }
}

#[tokio::test]
async fn original_clients_get_only_message_frames() {
    let app = TestApp::spawn().await;
    let (alice, bob, carol, chat) = trio(&app).await;
    let mut original = alice.ws(chat).await;
    assert_eq!(
        original.subprotocol, None,
        "nothing was offered, nothing named"
    );

    // Others come, type and go while the original client listens.
    let mut bob_socket = bob.ws_v2(chat).await;
    bob_socket.presence_becomes(&["alice", "bob"]).await;
    let mut carol_socket = carol.ws_v2(chat).await;
    bob_socket
        .presence_becomes(&["alice", "bob", "carol"])
        .await;
    carol_socket.send_json(json!({"type": "typing"})).await;
    assert_eq!(
        bob_socket.next_of("typing").await["user"]["username"],
        "carol"
    );
    drop(carol_socket);
    bob_socket.presence_becomes(&["alice", "bob"]).await;

    bob.send_message(chat, "hello").await;
    let WsEvent::Json(frame) = original.next().await else {
        panic!("closed")
    };
    assert_eq!(frame["type"], "message", "{frame}");
    assert_eq!(frame["message"]["content"], "hello");
    assert_eq!(frame.as_object().unwrap().len(), 2, "{frame}");

    // A typing notice is read as the original reads every frame: by its content alone.
    original.send_json(json!({"type": "typing"})).await;
    assert_eq!(
        original.next_of_any(&["message", "error"]).await,
        json!({"type": "error", "message": "Content cannot be empty"})
    );
    original
        .send_json(json!({"type": "typing", "content": "typed"}))
        .await;
    let WsEvent::Json(frame) = original.next().await else {
        panic!("closed")
    };
    assert_eq!(frame["message"]["content"], "typed", "{frame}");
    // Bob's extended socket saw no typing from Alice, only her messages.
    assert_eq!(
        bob_socket.next_of_any(&["message", "typing"]).await["message"]["content"],
        "hello"
    );
    assert_eq!(
        bob_socket.next_of_any(&["message", "typing"]).await["message"]["content"],
        "typed"
    );
}

#[tokio::test]
async fn mrm_v2_is_asked_for_by_header_or_by_query() {
    let app = TestApp::spawn().await;
    let (alice, bob, carol, chat) = trio(&app).await;

    // Offered among others in the header: chosen, and named in the 101 answer.
    let offered = WsOptions {
        protocols: Some("chat.example, mrm.v2"),
        ..Default::default()
    };
    let mut by_header = alice.ws_with(chat, offered).await.unwrap();
    assert_eq!(by_header.subprotocol.as_deref(), Some("mrm.v2"));
    let WsEvent::Json(first) = by_header.next().await else {
        panic!("closed")
    };
    assert_eq!(first["type"], "presence", "{first}");
    assert_eq!(by_header.online(), ["alice"]);

    // Named in the query, for clients that cannot set the header; resume still works.
    let query = WsOptions {
        query: "?after_seq=0&protocol=mrm.v2",
        ..Default::default()
    };
    let mut by_query = bob.ws_with(chat, query).await.unwrap();
    assert_eq!(by_query.subprotocol, None, "not offered, so not named");
    let WsEvent::Json(first) = by_query.next().await else {
        panic!("closed")
    };
    assert_eq!(first["type"], "presence", "{first}");
    assert_eq!(by_query.online(), ["alice", "bob"]);
    by_query.send_json(json!({"type": "typing"})).await;
    assert_eq!(by_header.next_of("typing").await["user"]["username"], "bob");

    // An unknown protocol is refused before the upgrade.
    for bad in [
        "?protocol=mrm.v3",
        "?protocol=",
        "?protocol=mrm.v2&protocol=v1",
    ] {
        let options = WsOptions {
            query: bad,
            ..Default::default()
        };
        assert_eq!(carol.ws_with(chat, options).await.err(), Some(400), "{bad}");
    }
    let response = carol
        .send(
            carol
                .request(
                    reqwest::Method::GET,
                    &format!("/ws/chat/{chat}/?protocol=mrm.v3"),
                )
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-version", "13")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        )
        .await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        response.body,
        json!({"protocol": ["Unknown protocol \"mrm.v3\"; the one that can be asked for is \"mrm.v2\"."]})
    );
}
