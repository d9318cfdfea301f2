//! AI conversations against a fake OpenAI-compatible provider.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::{
    fake_openai::{reply, slow, Behaviour, FakeOpenAi, MODEL},
    helpers::{id, read_reply, Client, TestApp, WsClient, WsEvent, WsOptions},
};

async fn ai_chat(client: &Client, body: Value) -> i64 {
    let response = client.post("/api/ai/chats/", &body).await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
    id(&response.body)
}

async fn ask(client: &Client, ai_chat: i64, body: Value) -> crate::helpers::Response {
    client
        .post(&format!("/api/ai/chats/{ai_chat}/send_message/"), &body)
        .await
}

fn system_prompt(request: &Value) -> String {
    let first = &request["messages"][0];
    assert_eq!(first["role"], "system");
    first["content"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn ai_chats_are_created_listed_read_updated_and_deleted_by_their_owner_only() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |_| {}).await;
    let alice = app.user("alice").await;
    let response = alice
        .post("/api/ai/chats/", &json!({"title": "Homework"}))
        .await;
    assert_eq!(response.status, StatusCode::CREATED);
    let first = id(&response.body);
    assert_eq!(
        response.body,
        json!({"id": first, "title": "Homework", "system_prompt": "You are a helpful assistant.", "related_chat": null,
               "model": format!("openai/{MODEL}")})
    );
    let second = ai_chat(
        &alice,
        json!({"title": "Poems", "system_prompt": "You are a poet."}),
    )
    .await;

    let listed = alice.get("/api/ai/chats/").await.body;
    assert_eq!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .map(id)
            .collect::<Vec<_>>(),
        [second, first],
        "newest-updated first"
    );
    let chat = alice.get(&format!("/api/ai/chats/{first}/")).await.body;
    for field in [
        "user",
        "user_username",
        "related_chat",
        "related_chat_name",
        "title",
        "system_prompt",
        "created_at",
        "updated_at",
        "messages",
        "message_count",
    ] {
        assert!(chat.get(field).is_some(), "{field}: {chat}");
    }
    assert_eq!(chat["user_username"], "alice");
    assert_eq!(chat["message_count"], 0);

    let response = alice
        .patch(
            &format!("/api/ai/chats/{first}/"),
            &json!({"title": "Maths"}),
        )
        .await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body["title"], "Maths");
    assert_eq!(
        response.body["system_prompt"],
        "You are a helpful assistant."
    );
    let listed = alice.get("/api/ai/chats/").await.body;
    assert_eq!(id(&listed[0]), first, "an update moves the chat to the top");
    let response = alice
        .put(
            &format!("/api/ai/chats/{first}/"),
            &json!({"system_prompt": "x"}),
        )
        .await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(response.body["title"], json!(["This field is required."]));

    // Another user sees none of it.
    let mallory = app.user("mallory").await;
    assert_eq!(mallory.get("/api/ai/chats/").await.body, json!([]));
    for (method, path) in [
        (Method::GET, format!("/api/ai/chats/{first}/")),
        (Method::PATCH, format!("/api/ai/chats/{first}/")),
        (Method::DELETE, format!("/api/ai/chats/{first}/")),
        (Method::POST, format!("/api/ai/chats/{first}/send_message/")),
        (Method::GET, format!("/api/ai/chats/{first}/messages/")),
        (
            Method::GET,
            format!("/api/ai/chats/{first}/related_chat_context/"),
        ),
    ] {
        let response = mallory
            .write(
                method.clone(),
                &path,
                Some(&json!({"content": "hi", "title": "x"})),
            )
            .await;
        assert_eq!(response.status, StatusCode::NOT_FOUND, "{method} {path}");
    }
    assert_eq!(mallory.ai_ws(first).await.err(), Some(403));
    assert_eq!(app.client().ai_ws(first).await.err(), Some(403));
    assert!(alice.ai_ws(first).await.is_ok());

    assert_eq!(
        alice
            .delete(&format!("/api/ai/chats/{first}/"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        alice.get(&format!("/api/ai/chats/{first}/")).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn the_related_chat_is_checked_on_every_write() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |_| {}).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let shared = alice.create_chat("shared", &[id(&bob.me().await)]).await;
    let bobs = bob.create_chat("bob only", &[]).await;

    let response = alice
        .post(
            "/api/ai/chats/",
            &json!({"title": "t", "related_chat": bobs}),
        )
        .await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        response.body,
        json!({"related_chat": ["You must be a participant in the related chat."]})
    );
    let response = alice
        .post(
            "/api/ai/chats/",
            &json!({"title": "t", "related_chat": 999_999}),
        )
        .await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert!(response.body["related_chat"].is_array());

    let linked = ai_chat(&bob, json!({"title": "t", "related_chat": shared})).await;
    let chat = bob.get(&format!("/api/ai/chats/{linked}/")).await.body;
    assert_eq!(chat["related_chat"], shared);
    assert_eq!(chat["related_chat_name"], "shared");
    let response = bob
        .patch(
            &format!("/api/ai/chats/{linked}/"),
            &json!({"related_chat": bobs}),
        )
        .await;
    assert_eq!(response.status, StatusCode::OK);

    let mine = ai_chat(&alice, json!({"title": "mine", "related_chat": shared})).await;
    let response = alice
        .patch(
            &format!("/api/ai/chats/{mine}/"),
            &json!({"related_chat": bobs}),
        )
        .await;
    assert_eq!(
        response.status,
        StatusCode::BAD_REQUEST,
        "re-linking to a chat she is not in"
    );
    // After leaving the linked chat, an update that leaves the link out keeps it, hidden; one
    // that names it again is refused.
    let other = alice.create_chat("other", &[]).await;
    alice
        .post(&format!("/api/chats/{shared}/leave/"), &json!({}))
        .await;
    let response = alice
        .patch(
            &format!("/api/ai/chats/{mine}/"),
            &json!({"title": "renamed"}),
        )
        .await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body["related_chat"], Value::Null);
    let response = alice
        .patch(
            &format!("/api/ai/chats/{mine}/"),
            &json!({"related_chat": shared}),
        )
        .await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    let response = alice
        .patch(
            &format!("/api/ai/chats/{mine}/"),
            &json!({"title": "renamed", "related_chat": other}),
        )
        .await;
    assert_eq!(response.status, StatusCode::OK);
    let response = alice
        .patch(
            &format!("/api/ai/chats/{mine}/"),
            &json!({"related_chat": null}),
        )
        .await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body["related_chat"], Value::Null);
}

#[tokio::test]
async fn the_model_gets_the_system_prompt_the_history_and_the_new_message_last() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |_| {}).await;
    let alice = app.user("alice").await;
    let chat = ai_chat(&alice, json!({"title": "t", "system_prompt": "Be brief."})).await;
    fake.then(reply("Hello there", 11, 3));
    let response = ask(&alice, chat, json!({"content": "Hi"})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    let answer = response.body;
    assert_eq!(answer["role"], "assistant");
    assert_eq!(answer["content"], "Hello there");
    assert_eq!(answer["ai_chat"], chat);
    assert_eq!(
        (
            answer["prompt_tokens"].clone(),
            answer["completion_tokens"].clone(),
            answer["total_tokens"].clone()
        ),
        (json!(11), json!(3), json!(14))
    );
    assert_eq!(answer["finish_reason"], "stop");

    let request = fake.last_request();
    assert_eq!(request["model"], MODEL);
    assert_eq!(request["stream"], true);
    assert_eq!(request["stream_options"]["include_usage"], true);
    assert_eq!(
        request["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    );
    assert_eq!(fake.authorizations().last().unwrap(), "Bearer test-key");

    ask(&alice, chat, json!({"content": "And again"})).await;
    assert_eq!(
        fake.last_request()["messages"],
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello there"},
            {"role": "user", "content": "And again"},
        ])
    );
    let messages = alice
        .get(&format!("/api/ai/chats/{chat}/messages/"))
        .await
        .body;
    let roles: Vec<&str> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert_eq!(
        messages[0]["prompt_tokens"],
        Value::Null,
        "no counts on user messages"
    );
    let chat_body = alice.get(&format!("/api/ai/chats/{chat}/")).await.body;
    assert_eq!(chat_body["message_count"], 4);
    assert_eq!(chat_body["messages"], messages);

    let all = alice.get("/api/ai/messages/").await.body;
    assert_eq!(all, messages);
    let one = alice
        .get(&format!("/api/ai/messages/{}/", id(&messages[1])))
        .await;
    assert_eq!(one.body, messages[1]);
    let mallory = app.user("mallory").await;
    assert_eq!(
        mallory
            .get(&format!("/api/ai/messages/{}/", id(&messages[1])))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(mallory.get("/api/ai/messages/").await.body, json!([]));
}

#[tokio::test]
async fn related_chat_context_goes_into_the_system_prompt_while_allowed() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |_| {}).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let group = bob
        .create_chat("study group", &[id(&alice.me().await)])
        .await;
    alice.send_message(group, "first").await;
    bob.send_message(group, "second").await;
    alice.send_message(group, "third").await;
    let chat = ai_chat(&alice, json!({"title": "t", "related_chat": group})).await;

    let context = alice
        .get(&format!(
            "/api/ai/chats/{chat}/related_chat_context/?message_limit=2"
        ))
        .await;
    assert_eq!(context.status, StatusCode::OK);
    assert_eq!(context.body["chat_name"], "study group");
    assert_eq!(context.body["message_count"], 2);
    let lines: Vec<(&str, &str)> = context.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["sender"].as_str().unwrap(),
                m["content"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(lines, [("bob", "second"), ("alice", "third")]);
    for bad in ["0", "201", "x"] {
        let response = alice
            .get(&format!(
                "/api/ai/chats/{chat}/related_chat_context/?message_limit={bad}"
            ))
            .await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{bad}");
    }

    ask(&alice, chat, json!({"content": "no context"})).await;
    assert_eq!(
        system_prompt(&fake.last_request()),
        "You are a helpful assistant."
    );
    ask(
        &alice,
        chat,
        json!({"content": "with context", "include_related_chat_context": true}),
    )
    .await;
    assert_eq!(
        system_prompt(&fake.last_request()),
        "You are a helpful assistant.\n\nContext from related chat:\nalice: first\nbob: second\nalice: third\n"
    );
    ask(&alice, chat, json!({"content": "less", "include_related_chat_context": true, "context_message_limit": 1})).await;
    assert_eq!(
        system_prompt(&fake.last_request()),
        "You are a helpful assistant.\n\nContext from related chat:\nalice: third\n"
    );
    let response = ask(
        &alice,
        chat,
        json!({"content": "x", "context_message_limit": 101}),
    )
    .await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        response.body["context_message_limit"],
        json!(["Ensure this value is less than or equal to 100."])
    );

    // Once she is out of the group, its messages are not sent any more.
    let alice_id = id(&alice.me().await);
    bob.delete(&format!("/api/chats/{group}/participants/{alice_id}/"))
        .await;
    ask(
        &alice,
        chat,
        json!({"content": "after", "include_related_chat_context": true}),
    )
    .await;
    assert_eq!(
        system_prompt(&fake.last_request()),
        "You are a helpful assistant."
    );
    let response = alice
        .get(&format!("/api/ai/chats/{chat}/related_chat_context/"))
        .await;
    assert_eq!(response.status, StatusCode::NOT_FOUND);

    let unlinked = ai_chat(&alice, json!({"title": "alone"})).await;
    let response = alice
        .get(&format!("/api/ai/chats/{unlinked}/related_chat_context/"))
        .await;
    assert_eq!(response.status, StatusCode::NOT_FOUND);
    assert_eq!(
        response.body,
        json!({"error": "No related chat linked to this AI chat"})
    );
}

#[tokio::test]
async fn without_a_key_the_provider_is_not_configured() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let chat = ai_chat(&alice, json!({"title": "t"})).await;
    let response = ask(&alice, chat, json!({"content": "anyone there?"})).await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.body,
        json!({"error": "AI provider is not configured"})
    );
    let messages = alice
        .get(&format!("/api/ai/chats/{chat}/messages/"))
        .await
        .body;
    assert_eq!(
        messages.as_array().unwrap().len(),
        1,
        "the question is kept"
    );
    assert_eq!(messages[0]["content"], "anyone there?");

    let mut socket = alice.ai_ws(chat).await.unwrap();
    socket
        .send_json(json!({"type": "message", "content": "hello?"}))
        .await;
    assert_eq!(
        socket.next_of("user_message").await["message"]["content"],
        "hello?"
    );
    assert_eq!(
        socket.next_of("error").await["message"],
        "AI provider is not configured"
    );
}

#[tokio::test]
async fn provider_failures_are_502_with_a_safe_message_and_keep_the_question() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |c| c.ai.retries = 1).await;
    let alice = app.user("alice").await;
    let chat = ai_chat(&alice, json!({"title": "t"})).await;

    fake.then(Behaviour::Status(500))
        .then(Behaviour::Status(500));
    let response = ask(&alice, chat, json!({"content": "q1"})).await;
    assert_eq!(response.status, StatusCode::BAD_GATEWAY);
    let error = response.body["error"].as_str().unwrap();
    assert!(
        error.starts_with("Failed to get response from ChatGPT: "),
        "{error}"
    );
    assert!(
        !error.contains("secret") && !error.contains("sk-"),
        "no upstream detail leaks: {error}"
    );
    assert_eq!(fake.requests().len(), 2, "one retry after a 5xx");

    fake.then(Behaviour::Garbage);
    let response = ask(&alice, chat, json!({"content": "q2"})).await;
    assert_eq!(response.status, StatusCode::BAD_GATEWAY);

    // A stream that stops before its end is a failure too; what came is kept, marked "error".
    fake.then(Behaviour::Truncated(vec!["half ".into(), "a reply".into()]));
    let response = ask(&alice, chat, json!({"content": "q2b"})).await;
    assert_eq!(
        response.status,
        StatusCode::BAD_GATEWAY,
        "{}",
        response.body
    );
    let stored = alice
        .get(&format!("/api/ai/chats/{chat}/messages/"))
        .await
        .body;
    let last = stored.as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["content"].as_str(), last["finish_reason"].as_str()),
        (Some("half a reply"), Some("error"))
    );

    fake.then(Behaviour::Status(400));
    let response = ask(&alice, chat, json!({"content": "q3"})).await;
    assert_eq!(response.status, StatusCode::BAD_GATEWAY);

    let messages = alice
        .get(&format!("/api/ai/chats/{chat}/messages/"))
        .await
        .body;
    let contents: Vec<&str> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        ["q1", "q2", "q2b", "half a reply", "q3"],
        "questions kept, no empty replies"
    );
}

#[tokio::test]
async fn a_429_is_retried_after_a_backoff() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |_| {}).await;
    let alice = app.user("alice").await;
    let chat = ai_chat(&alice, json!({"title": "t"})).await;
    fake.then(Behaviour::Status(429))
        .then(reply("made it", 1, 2));
    let response = ask(&alice, chat, json!({"content": "q"})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    assert_eq!(response.body["content"], "made it");
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn a_stalled_provider_times_out_without_blocking_others() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |c| c.ai.timeout = Duration::from_millis(800)).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let chat = ai_chat(&alice, json!({"title": "t"})).await;
    let bobs = ai_chat(&bob, json!({"title": "b"})).await;
    fake.then(Behaviour::Stall);
    let stalled = tokio::spawn({
        let alice = alice.clone();
        async move { ask(&alice, chat, json!({"content": "q"})).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Meanwhile other requests are served.
    let started = std::time::Instant::now();
    assert_eq!(bob.get("/api/me/").await.status, StatusCode::OK);
    let response = ask(&bob, bobs, json!({"content": "quick"})).await;
    assert_eq!(response.status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "not stuck behind the stall"
    );
    let response = stalled.await.unwrap();
    assert_eq!(response.status, StatusCode::BAD_GATEWAY);
    assert!(response.body["error"]
        .as_str()
        .unwrap()
        .contains("did not answer in time"));
}

#[tokio::test]
async fn replies_stream_over_the_socket() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |_| {}).await;
    let alice = app.user("alice").await;
    let chat = ai_chat(&alice, json!({"title": "t"})).await;
    let mut socket = alice.ai_ws_v2(chat).await;

    socket.send_json(json!({"content": ""})).await;
    assert_eq!(
        socket.next_of("error").await["message"],
        "Message content cannot be empty"
    );
    socket.send_text("{oops".into()).await;
    assert_eq!(socket.next_of("error").await["message"], "Invalid JSON");
    socket.send_json(json!({"type": "typing"})).await;

    fake.then(slow(&["Hel", "lo ", "world"], 20));
    socket.send_json(json!({"content": "greet me"})).await;
    let user = socket.next_of("user_message").await["message"].clone();
    assert_eq!(user["role"], "user");
    assert_eq!(user["content"], "greet me");
    let mut deltas = Vec::new();
    let last = loop {
        let frame = socket
            .next_of_any(&["assistant_delta", "assistant_message"])
            .await;
        if frame["type"] == "assistant_delta" {
            deltas.push(frame["message"]["delta"].as_str().unwrap().to_owned());
        } else {
            break frame["message"].clone();
        }
    };
    assert_eq!(deltas, ["Hel", "lo ", "world"]);
    assert_eq!(last["content"], "Hello world");
    assert_eq!(last["role"], "assistant");
    assert_eq!(
        last["usage"],
        json!({"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10})
    );
    assert!(last["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        fake.requests().len(),
        1,
        "empty and invalid frames never reached the provider"
    );
}

#[tokio::test]
async fn replies_stream_as_server_sent_events() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |_| {}).await;
    let alice = app.user("alice").await;
    let chat = ai_chat(&alice, json!({"title": "t"})).await;
    fake.then(slow(&["a", "b", "c"], 10));
    let response = alice
        .request(Method::POST, &format!("/api/ai/chats/{chat}/send_message/"))
        .header("X-CSRFToken", alice.csrf().unwrap())
        .json(&json!({"content": "stream please", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = response.text().await.unwrap();
    let events: Vec<(String, Value)> = text
        .split("\n\n")
        .filter(|block| block.contains("data:"))
        .map(|block| {
            let name = block
                .lines()
                .find_map(|l| l.strip_prefix("event:"))
                .unwrap()
                .trim()
                .to_owned();
            let data = block
                .lines()
                .find_map(|l| l.strip_prefix("data:"))
                .unwrap()
                .trim();
            (name, serde_json::from_str(data).unwrap())
        })
        .collect();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "user_message",
            "assistant_delta",
            "assistant_delta",
            "assistant_delta",
            "assistant_message"
        ]
    );
    assert_eq!(events[0].1["content"], "stream please");
    assert_eq!(events[2].1["delta"], "b");
    assert_eq!(events[4].1["content"], "abc");
    assert_eq!(
        events[4].1["total_tokens"], 10,
        "streamed replies are counted too"
    );

    // The Accept header asks for the same.
    fake.then(reply("via accept", 1, 1));
    let response = alice
        .request(Method::POST, &format!("/api/ai/chats/{chat}/send_message/"))
        .header("X-CSRFToken", alice.csrf().unwrap())
        .header("Accept", "text/event-stream")
        .json(&json!({"content": "again"}))
        .send()
        .await
        .unwrap();
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("event: assistant_message"));
}

#[tokio::test]
async fn cancel_stops_the_upstream_request_and_keeps_the_partial_reply() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |_| {}).await;
    let alice = app.user("alice").await;
    let chat = ai_chat(&alice, json!({"title": "t"})).await;
    let mut socket = alice.ai_ws_v2(chat).await;
    let chunks: Vec<String> = (0..100).map(|i| format!("w{i} ")).collect();
    let chunk_refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
    fake.then(slow(&chunk_refs, 100));
    socket
        .send_json(json!({"content": "tell me a long story"}))
        .await;
    let first = socket.next_of("assistant_delta").await;
    assert_eq!(first["message"]["delta"], "w0 ");
    socket.send_json(json!({"type": "cancel"})).await;
    let (_, reply) = read_reply(&mut socket).await;
    assert_eq!(reply["finish_reason"], "cancelled");
    let content = reply["content"].as_str().unwrap();
    assert!(
        content.starts_with("w0 ") && content.len() < chunks.concat().len(),
        "{content}"
    );
    assert!(
        fake.wait_for_hangup().await,
        "the provider saw its connection closed"
    );
    let stored = alice
        .get(&format!("/api/ai/chats/{chat}/messages/"))
        .await
        .body;
    assert_eq!(stored[1]["content"], content);
    assert_eq!(stored[1]["finish_reason"], "cancelled");
}

#[tokio::test]
async fn a_reply_outlives_its_socket_and_a_new_socket_joins_it() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |_| {}).await;
    let alice = app.user("alice").await;
    let chat = ai_chat(&alice, json!({"title": "t"})).await;
    let chunks: Vec<String> = (0..12).map(|i| format!("p{i} ")).collect();
    let chunk_refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
    fake.then(slow(&chunk_refs, 60));

    let mut first = alice.ai_ws_v2(chat).await;
    let mut watcher = alice.ai_ws_v2(chat).await;
    first.send_json(json!({"content": "go"})).await;
    first.next_of("assistant_delta").await;
    first.next_of("assistant_delta").await;
    drop(first);

    // A socket that arrives mid-reply gets the text so far, then the rest.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut late = alice.ai_ws_v2(chat).await;
    let (late_text, late_final) = read_reply(&mut late).await;
    let (watched_text, watched_final) = read_reply(&mut watcher).await;
    assert_eq!(late_text, chunks.concat());
    assert_eq!(
        watched_text,
        chunks.concat(),
        "every socket of the owner sees the same stream"
    );
    assert_eq!(late_final, watched_final);
    assert_eq!(late_final["finish_reason"], "stop");
    assert!(
        !fake
            .wait_for_hangup_within(Duration::from_millis(100))
            .await,
        "nobody abandoned the request"
    );

    let stored = alice
        .get(&format!("/api/ai/chats/{chat}/messages/"))
        .await
        .body;
    assert_eq!(stored[1]["content"], chunks.concat());
}

#[tokio::test]
async fn one_reply_at_a_time_per_chat_and_a_bounded_number_per_user() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |c| c.ai.max_concurrent_per_user = 1).await;
    let alice = app.user("alice").await;
    let chat = ai_chat(&alice, json!({"title": "t"})).await;
    let other = ai_chat(&alice, json!({"title": "u"})).await;
    fake.then(slow(&["a", "b", "c", "d"], 150));
    let running = tokio::spawn({
        let alice = alice.clone();
        async move { ask(&alice, chat, json!({"content": "slow"})).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let response = ask(&alice, chat, json!({"content": "me too"})).await;
    assert_eq!(response.status, StatusCode::CONFLICT);
    let response = ask(&alice, other, json!({"content": "elsewhere"})).await;
    assert_eq!(response.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(running.await.unwrap().status, StatusCode::OK);
    assert_eq!(
        ask(&alice, other, json!({"content": "now"})).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn usage_is_totalled_per_model_and_day() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |_| {}).await;
    let alice = app.user("alice").await;
    let chat = ai_chat(&alice, json!({"title": "t"})).await;
    fake.then(reply("one", 10, 5)).then(reply("two", 20, 7));
    ask(&alice, chat, json!({"content": "a"})).await;
    ask(&alice, chat, json!({"content": "b"})).await;
    // Deleting the conversation does not erase the accounting.
    alice.delete(&format!("/api/ai/chats/{chat}/")).await;

    let usage = alice.get("/api/ai/usage/").await.body;
    assert_eq!(
        (
            usage["prompt_tokens"].clone(),
            usage["completion_tokens"].clone(),
            usage["total_tokens"].clone()
        ),
        (json!(30), json!(12), json!(42))
    );
    assert_eq!(
        usage["by_model"],
        json!([{"model": MODEL, "prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42,
                "estimated_tokens": 0, "usage_estimated": false}])
    );
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(usage["by_day"][0]["day"], today);
    assert_eq!(usage["by_day"][0]["total_tokens"], 42);

    let past = alice
        .get("/api/ai/usage/?from=2020-01-01&to=2020-01-31")
        .await
        .body;
    assert_eq!(past["total_tokens"], 0);
    assert_eq!(
        alice.get("/api/ai/usage/?from=yesterday").await.status,
        StatusCode::BAD_REQUEST
    );

    let bob = app.user("bob").await;
    let alice_id = id(&alice.me().await);
    assert_eq!(bob.get("/api/ai/usage/").await.body["total_tokens"], 0);
    assert_eq!(
        bob.get(&format!("/api/ai/usage/?user={alice_id}"))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    app.make_staff("bob").await;
    assert_eq!(
        bob.get(&format!("/api/ai/usage/?user={alice_id}"))
            .await
            .body["total_tokens"],
        42
    );
}

#[tokio::test]
async fn ai_lists_are_bounded_with_cursors() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |_| {}).await;
    let alice = app.user("alice").await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(ai_chat(&alice, json!({"title": format!("c{i}")})).await);
    }
    let mut seen = Vec::new();
    let mut path = "/api/ai/chats/?limit=2".to_owned();
    loop {
        let response = alice.get(&path).await;
        seen.extend(response.body.as_array().unwrap().iter().map(id));
        match response.next_link() {
            Some(next) => path = next,
            None => break,
        }
    }
    created.reverse();
    assert_eq!(seen, created);
    assert_eq!(
        alice.get("/api/ai/chats/?limit=501").await.status,
        StatusCode::BAD_REQUEST
    );

    let chat = created[0];
    for i in 0..3 {
        ask(&alice, chat, json!({"content": format!("q{i}")})).await;
    }
    let response = alice
        .get(&format!("/api/ai/chats/{chat}/messages/?limit=4"))
        .await;
    assert_eq!(response.body.as_array().unwrap().len(), 4);
    let older = alice.get(&response.next_link().unwrap()).await;
    assert_eq!(older.body.as_array().unwrap().len(), 2);
    assert_eq!(
        alice.get("/api/ai/messages/?limit=0").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn a_logout_closes_that_sessions_socket_but_lets_the_reply_finish() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |_| {}).await;
    let alice = app.user("alice").await;
    let elsewhere = app.client();
    elsewhere.login("alice", crate::helpers::PASSWORD).await;
    let chat = ai_chat(&alice, json!({"title": "t"})).await;
    let chunks: Vec<String> = (0..10).map(|i| format!("p{i} ")).collect();
    let chunk_refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
    fake.then(slow(&chunk_refs, 50));
    let mut asking = alice.ai_ws_v2(chat).await;
    let mut watching = elsewhere.ai_ws(chat).await.unwrap();
    asking.send_json(json!({"content": "go"})).await;
    asking.next_of("assistant_delta").await;

    let response = alice.post("/api/logout/", &json!({})).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        asking.closed_within(Duration::from_secs(2)).await,
        Some(4001)
    );
    // The question was asked with valid credentials: its answer is finished and saved.
    let (_, reply) = read_reply(&mut watching).await;
    assert_eq!(reply["finish_reason"], "stop");
    assert_eq!(reply["content"], chunks.concat());
}

#[tokio::test]
async fn an_ai_socket_frame_over_128_kib_closes_with_1009() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let chat = ai_chat(&alice, json!({"title": "t"})).await;
    let mut socket = alice.ai_ws(chat).await.unwrap();
    socket.send_text("x".repeat(130 * 1024)).await;
    assert_eq!(socket.closed().await, Some(1009));
}

/// The next frame on `socket`, which must be a JSON frame.
async fn next_frame(socket: &mut WsClient) -> Value {
    match socket.next().await {
        WsEvent::Json(frame) => frame,
        WsEvent::Closed(code) => panic!("closed with {code:?}"),
    }
}

#[tokio::test]
async fn original_ai_sockets_get_the_reply_whole_without_deltas() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |_| {}).await;
    let alice = app.user("alice").await;
    let chat = ai_chat(&alice, json!({"title": "t"})).await;
    let mut socket = alice.ai_ws(chat).await.unwrap();
    assert_eq!(socket.subprotocol, None);
    fake.then(slow(&["Hel", "lo ", "world"], 20));
    socket.send_json(json!({"content": "greet me"})).await;
    let first = next_frame(&mut socket).await;
    assert_eq!(first["type"], "user_message", "{first}");
    assert_eq!(first["message"]["content"], "greet me");
    let second = next_frame(&mut socket).await;
    assert_eq!(second["type"], "assistant_message", "{second}");
    assert_eq!(second["message"]["content"], "Hello world");

    // Asked for by query, the same socket kind streams.
    let options = WsOptions {
        query: "?protocol=mrm.v2",
        ..Default::default()
    };
    let mut extended = alice.ai_ws_with(chat, options).await.unwrap();
    fake.then(slow(&["a", "b"], 20));
    extended.send_json(json!({"content": "again"})).await;
    let (streamed, last) = read_reply(&mut extended).await;
    assert_eq!((streamed.as_str(), &last["content"]), ("ab", &json!("ab")));

    let bad = WsOptions {
        query: "?protocol=mrm.v1",
        ..Default::default()
    };
    assert_eq!(alice.ai_ws_with(chat, bad).await.err(), Some(400));
}

#[tokio::test]
async fn original_ai_sockets_ignore_unknown_types_and_read_a_missing_type_as_a_message() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |_| {}).await;
    let alice = app.user("alice").await;
    let chat = ai_chat(&alice, json!({"title": "t"})).await;
    let mut socket = alice.ai_ws(chat).await.unwrap();
    for ignored in [
        json!({"type": "dance", "content": "not this"}),
        json!({"type": "typing"}),
        json!({"type": "cancel"}),
        json!({"type": 5, "content": "nor this"}),
        json!({"type": null, "content": "nor this"}),
    ] {
        socket.send_json(ignored).await;
    }
    fake.then(reply("answer", 3, 1));
    socket.send_json(json!({"content": "this one"})).await;
    let first = next_frame(&mut socket).await;
    assert_eq!(
        (&first["type"], &first["message"]["content"]),
        (&json!("user_message"), &json!("this one")),
        "no error and no message for the ignored frames: {first}"
    );
    let second = next_frame(&mut socket).await;
    assert_eq!(second["type"], "assistant_message", "{second}");
    assert_eq!(fake.requests().len(), 1);

    // In mrm.v2 an unknown type is answered.
    let mut extended = alice.ai_ws_v2(chat).await;
    extended.send_json(json!({"type": "dance"})).await;
    assert_eq!(
        next_frame(&mut extended).await,
        json!({"type": "error", "message": "Unknown message type: dance"})
    );
}

/// A quarter of the characters, rounded up: how the server counts text for a model whose
/// encoding it does not know (the fake's).
fn quarter(text: &str) -> i64 {
    (text.chars().count() as u64).div_ceil(4) as i64
}

/// The server's estimate of a prompt for such a model: 3 tokens per message beside its role and
/// content, and 3 priming the reply.
fn approximate_prompt(request: &Value) -> i64 {
    let messages = request["messages"].as_array().unwrap();
    messages
        .iter()
        .map(|m| 3 + quarter(m["role"].as_str().unwrap()) + quarter(m["content"].as_str().unwrap()))
        .sum::<i64>()
        + 3
}

/// The token counts of an AI message (or an AI socket's reply), as
/// `(prompt, completion, total, estimated)`.
fn counts(message: &Value) -> (i64, i64, i64, bool) {
    let usage = if message.get("usage").is_some() {
        &message["usage"]
    } else {
        message
    };
    (
        usage["prompt_tokens"].as_i64().expect("prompt_tokens"),
        usage["completion_tokens"]
            .as_i64()
            .expect("completion_tokens"),
        usage["total_tokens"].as_i64().expect("total_tokens"),
        message["usage_estimated"]
            .as_bool()
            .expect("usage_estimated"),
    )
}

#[tokio::test]
async fn token_use_is_recorded_however_a_reply_ends() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |c| {
        c.ai.timeout = Duration::from_millis(1000);
        c.ai.retries = 0;
    })
    .await;
    let alice = app.user("alice").await;
    let chat = ai_chat(&alice, json!({"title": "t"})).await;
    let last_stored = || async {
        let stored = alice
            .get(&format!("/api/ai/chats/{chat}/messages/"))
            .await
            .body;
        stored.as_array().unwrap().last().unwrap().clone()
    };
    let (mut total, mut estimated) = (0, 0);

    // A provider that counts: its figures, exactly.
    fake.then(reply("exact answer", 11, 4));
    let answer = ask(&alice, chat, json!({"content": "q1"})).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(counts(&answer.body), (11, 4, 15, false));
    total += 15;

    // A provider that reports no usage on streams: counted here, and marked.
    fake.then(Behaviour::NoUsage(vec!["no ".into(), "count".into()]));
    let answer = ask(&alice, chat, json!({"content": "q2"})).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let prompt = approximate_prompt(&fake.last_request());
    assert!(prompt > 0);
    assert_eq!(
        counts(&answer.body),
        (
            prompt,
            quarter("no count"),
            prompt + quarter("no count"),
            true
        )
    );
    assert_eq!(counts(&last_stored().await), counts(&answer.body));
    total += prompt + quarter("no count");
    estimated += prompt + quarter("no count");

    // A provider error mid-stream: the prompt and what was streamed are counted.
    fake.then(Behaviour::Truncated(vec!["half ".into(), "a reply".into()]));
    let answer = ask(&alice, chat, json!({"content": "q3"})).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    let prompt = approximate_prompt(&fake.last_request());
    let stored = last_stored().await;
    assert_eq!(stored["finish_reason"], "error");
    assert_eq!(
        counts(&stored),
        (
            prompt,
            quarter("half a reply"),
            prompt + quarter("half a reply"),
            true
        )
    );
    total += prompt + quarter("half a reply");
    estimated += prompt + quarter("half a reply");

    // A reply cut by the timeout between chunks: the same.
    fake.then(slow(&["slow ", "never"], 5_000));
    let answer = ask(&alice, chat, json!({"content": "q4"})).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    let prompt = approximate_prompt(&fake.last_request());
    let stored = last_stored().await;
    assert_eq!(
        (stored["content"].as_str(), stored["finish_reason"].as_str()),
        (Some("slow "), Some("error"))
    );
    assert_eq!(
        counts(&stored),
        (prompt, quarter("slow "), prompt + quarter("slow "), true)
    );
    total += prompt + quarter("slow ");
    estimated += prompt + quarter("slow ");

    // Accepted, then failed before any text: no reply to keep, but the prompt was read.
    fake.then(Behaviour::Truncated(Vec::new()));
    let answer = ask(&alice, chat, json!({"content": "q5"})).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(last_stored().await["content"], "q5", "no empty reply kept");
    let prompt = approximate_prompt(&fake.last_request());
    total += prompt;
    estimated += prompt;

    // Refused outright: nothing was spent.
    fake.then(Behaviour::Status(400));
    let answer = ask(&alice, chat, json!({"content": "q6"})).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);

    // Cancelled mid-stream: the prompt and the part streamed before the cancel.
    let mut socket = alice.ai_ws_v2(chat).await;
    let chunks: Vec<String> = (0..100).map(|i| format!("w{i} ")).collect();
    let chunk_refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
    fake.then(slow(&chunk_refs, 100));
    socket.send_json(json!({"content": "a long story"})).await;
    socket.next_of("assistant_delta").await;
    socket.send_json(json!({"type": "cancel"})).await;
    let (_, reply) = read_reply(&mut socket).await;
    assert_eq!(reply["finish_reason"], "cancelled");
    let content = reply["content"].as_str().unwrap();
    assert!(content.starts_with("w0 ") && content.len() < chunks.concat().len());
    let prompt = approximate_prompt(&fake.last_request());
    assert!(quarter(content) > 0);
    assert_eq!(
        counts(&reply),
        (prompt, quarter(content), prompt + quarter(content), true)
    );
    assert_eq!(counts(&last_stored().await), counts(&reply));
    total += prompt + quarter(content);
    estimated += prompt + quarter(content);

    // The totals per user and day include every one of them, with the estimated part told.
    let usage = alice.get("/api/ai/usage/").await.body;
    assert_eq!(usage["total_tokens"], total, "{usage}");
    assert_eq!(usage["estimated_tokens"], estimated, "{usage}");
    assert_eq!(usage["usage_estimated"], true);
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(usage["by_day"][0]["day"], today);
    assert_eq!(usage["by_day"][0]["total_tokens"], total);
    assert_eq!(usage["by_day"][0]["estimated_tokens"], estimated);
    assert_eq!(usage["by_model"][0]["usage_estimated"], true);
    assert_eq!(
        usage["prompt_tokens"].as_i64().unwrap() + usage["completion_tokens"].as_i64().unwrap(),
        total
    );
}

/// A 200-turn conversation against a model that declares a 600-token window: every prompt fits
/// (the provider refuses any that does not), the newest turns are the ones sent, and each reply
/// says how many earlier messages were left out. A question too long for the window is refused
/// before anything is stored.
#[tokio::test]
async fn a_long_conversation_is_cut_to_the_models_context_window() {
    let fake = FakeOpenAi::start().await;
    fake.with_context_window(600);
    let app = TestApp::spawn_with_ai(&fake, |config| {
        config.ai.context_window = Some(600);
        config.ai.reply_reserve = 100;
    })
    .await;
    let alice = app.user("alice").await;
    let chat = ai_chat(
        &alice,
        json!({"title": "long", "system_prompt": "Be brief."}),
    )
    .await;
    let mut last = Value::Null;
    for turn in 0..200 {
        let question = format!("question number {turn:03} with some words in it");
        let answer = ask(&alice, chat, json!({"content": question})).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "turn {turn}: {}",
            answer.body
        );
        last = answer.body;
    }
    let requests = fake.requests();
    assert_eq!(requests.len(), 200);
    for (turn, request) in requests.iter().enumerate() {
        let counted = crate::fake_openai::prompt_tokens(request);
        assert!(
            counted <= 500,
            "turn {turn}: {counted} tokens, over the window less the reserve"
        );
        let messages = request["messages"].as_array().unwrap();
        assert_eq!(
            messages.last().unwrap()["content"],
            format!("question number {turn:03} with some words in it"),
            "the newest question is always sent"
        );
    }
    // Late in the conversation most of it is left out, and the reply says how much.
    let sent = requests.last().unwrap()["messages"]
        .as_array()
        .unwrap()
        .len() as i64
        - 1;
    let omitted = last["omitted_messages"]
        .as_i64()
        .expect("the reply says what was left out");
    assert_eq!(
        sent + omitted,
        399,
        "every earlier message is sent or counted as left out"
    );
    assert!(omitted > 300, "{omitted}");
    let messages = alice
        .get(&format!("/api/ai/chats/{chat}/messages/?limit=5"))
        .await
        .body;
    assert!(messages
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["omitted_messages"] == omitted));
    // Early replies left nothing out, and say nothing about it.
    let first = alice
        .get(&format!("/api/ai/chats/{chat}/messages/?limit=2&after=0"))
        .await
        .body;
    assert!(first[1].get("omitted_messages").is_none(), "{first}");

    let too_long = ask(&alice, chat, json!({"content": "word ".repeat(500)})).await;
    assert_eq!(
        too_long.status,
        StatusCode::BAD_REQUEST,
        "{}",
        too_long.body
    );
    assert!(too_long.body["content"][0]
        .as_str()
        .unwrap()
        .contains("context window"));
    assert_eq!(fake.requests().len(), 200, "nothing was sent for it");
    // The socket refuses it the same way.
    let mut socket = alice.ai_ws(chat).await.unwrap();
    socket
        .send_json(json!({"content": "word ".repeat(500)}))
        .await;
    let error = socket.next_of("error").await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("context window"),
        "{error}"
    );
    let stored = alice.get(&format!("/api/ai/chats/{chat}/")).await.body;
    assert_eq!(
        stored["message_count"], 400,
        "neither refusal stored anything"
    );
    assert_eq!(fake.requests().len(), 200);
}

/// A daily token budget stops a user once spent, over REST and over the socket, until the next
/// UTC midnight; the usage report shows what remains and when it starts again. Other users keep
/// their own.
#[tokio::test]
async fn a_spent_budget_stops_the_user_until_it_starts_again() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |config| {
        config.ai.daily_tokens = Some(25);
        config.ai.monthly_tokens = Some(1_000);
    })
    .await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let chat = ai_chat(&alice, json!({"title": "t", "system_prompt": "s"})).await;
    // Each reply costs 15 tokens (10 prompt, 5 completion): the second passes at 15 spent, the
    // third starts at 30, over 25.
    for _ in 0..2 {
        fake.then(reply("ok", 10, 5));
        assert_eq!(
            ask(&alice, chat, json!({"content": "hi"})).await.status,
            StatusCode::OK
        );
    }
    let refused = ask(&alice, chat, json!({"content": "hi"})).await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.body
    );
    let now = chrono::Utc::now();
    let midnight = (now.date_naive() + chrono::Days::new(1))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let retry: i64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let expected = (midnight - now).num_seconds();
    assert!(
        (retry - expected).abs() <= 5,
        "Retry-After {retry}, midnight in {expected}"
    );
    assert_eq!(
        fake.requests().len(),
        2,
        "nothing was asked of the provider"
    );

    let mut socket = alice.ai_ws(chat).await.unwrap();
    socket.send_json(json!({"content": "and now?"})).await;
    let error = socket.next_of("error").await;
    assert!(
        error["message"].as_str().unwrap().contains("budget"),
        "{error}"
    );
    assert_eq!(fake.requests().len(), 2);

    let usage = alice.get("/api/ai/usage/").await.body;
    let daily = &usage["budget"]["daily"];
    assert_eq!(
        (
            daily["limit"].as_i64(),
            daily["used"].as_i64(),
            daily["remaining"].as_i64()
        ),
        (Some(25), Some(30), Some(0))
    );
    assert_eq!(
        daily["resets_at"],
        mrm_chat::wire::views::format_timestamp(&midnight)
    );
    let monthly = &usage["budget"]["monthly"];
    assert_eq!(
        (monthly["used"].as_i64(), monthly["remaining"].as_i64()),
        (Some(30), Some(970))
    );

    // Bob's budget is his own.
    let his = ai_chat(&bob, json!({"title": "t", "system_prompt": "s"})).await;
    fake.then(reply("ok", 10, 5));
    assert_eq!(
        ask(&bob, his, json!({"content": "hi"})).await.status,
        StatusCode::OK
    );
}

/// A chat created without a title is called "New conversation" until its first exchange; then
/// the model is asked for a short title, which replaces it (and counts in the user's usage).
/// A chat with a title of its own, and a server with titles off, ask nothing more.
#[tokio::test]
async fn a_title_is_written_after_the_first_exchange_of_an_untitled_chat() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |_| {}).await;
    let alice = app.user("alice").await;
    let chat = ai_chat(&alice, json!({"system_prompt": "s"})).await;
    let path = format!("/api/ai/chats/{chat}/");
    assert_eq!(alice.get(&path).await.body["title"], "New conversation");
    fake.then(reply("Rome in spring is lovely.", 10, 5))
        .then(reply("\"Planning a trip to Rome.\"", 30, 6));
    assert_eq!(
        ask(&alice, chat, json!({"content": "plan a trip to Rome"}))
            .await
            .status,
        StatusCode::OK
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alice.get(&path).await.body["title"] != "Planning a trip to Rome" {
        assert!(std::time::Instant::now() < deadline, "no title was written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let asked = fake.requests();
    assert_eq!(asked.len(), 2);
    let instruction = asked[1]["messages"][0]["content"].as_str().unwrap();
    assert!(instruction.contains("title"), "{instruction}");
    assert!(asked[1]["messages"][1]["content"]
        .as_str()
        .unwrap()
        .contains("plan a trip to Rome"));
    let usage = alice.get("/api/ai/usage/").await.body;
    assert_eq!(usage["total_tokens"], 15 + 36, "the title is counted too");
    // The second exchange asks for no title.
    ask(&alice, chat, json!({"content": "and then?"})).await;
    // A chat named by its owner keeps its name.
    let named = ai_chat(&alice, json!({"title": "Mine", "system_prompt": "s"})).await;
    ask(&alice, named, json!({"content": "hi"})).await;
    assert_eq!(fake.requests().len(), 4);
    assert_eq!(
        alice.get(&format!("/api/ai/chats/{named}/")).await.body["title"],
        "Mine"
    );
    // Titles off: the default stays.
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |c| c.ai.titles = false).await;
    let bob = app.user("bob").await;
    let chat = ai_chat(&bob, json!({"system_prompt": "s"})).await;
    ask(&bob, chat, json!({"content": "hi"})).await;
    assert_eq!(fake.requests().len(), 1);
    assert_eq!(
        bob.get(&format!("/api/ai/chats/{chat}/")).await.body["title"],
        "New conversation"
    );
}

#[tokio::test]
async fn a_question_asked_while_the_title_is_written_gets_its_whole_reply() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |_| {}).await;
    let alice = app.user("alice").await;
    let chat = ai_chat(&alice, json!({})).await;
    let mut socket = alice.ai_ws_v2(chat).await;
    fake.then(reply("first answer", 3, 2));
    // The title is written while the second reply streams, and ends before it.
    fake.then(slow(&["A short", " title"], 300));
    let second: Vec<String> = (0..10).map(|i| format!("p{i} ")).collect();
    let second: Vec<&str> = second.iter().map(String::as_str).collect();
    fake.then(slow(&second, 150));
    socket.send_json(json!({"content": "first"})).await;
    read_reply(&mut socket).await;
    // The title request is under way before the next question.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fake.requests().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the title was asked for"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    socket.send_json(json!({"content": "second"})).await;
    let (streamed, last) = read_reply(&mut socket).await;
    assert_eq!(streamed, second.concat());
    assert_eq!(last["content"], second.concat(), "the reply kept its text");
    assert_eq!(
        alice.get(&format!("/api/ai/chats/{chat}/")).await.body["title"],
        "A short title"
    );
    app.stop().await;
}
