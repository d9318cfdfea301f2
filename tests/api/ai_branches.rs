//! Regenerating a reply and editing a question: the conversation becomes a tree, the chat shows
//! one branch, and the model is sent that branch only.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    fake_openai::{reply, Behaviour, FakeOpenAi},
    helpers::{Client, TestApp},
};

/// The prompt's messages after the system prompt, as `role: content`.
fn prompt(request: &Value) -> Vec<String> {
    lines(&request["messages"].as_array().unwrap()[1..])
}

/// Messages as `role: content`.
fn lines(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            format!(
                "{}: {}",
                m["role"].as_str().unwrap(),
                m["content"].as_str().unwrap()
            )
        })
        .collect()
}

/// The AI chat's messages as it shows them: `role: content`.
async fn shown(client: &Client, chat: i64) -> Vec<String> {
    let body = client.get(&format!("/api/ai/chats/{chat}/")).await.body;
    let nested = lines(body["messages"].as_array().unwrap());
    assert_eq!(body["message_count"], nested.len(), "{body}");
    let listed = client
        .get(&format!("/api/ai/chats/{chat}/messages/"))
        .await
        .body;
    let listed = lines(listed.as_array().unwrap());
    assert_eq!(nested, listed, "both lists show the same branch");
    nested
}

async fn post(client: &Client, chat: i64, action: &str, body: Value) -> crate::helpers::Response {
    client
        .post(&format!("/api/ai/chats/{chat}/{action}/"), &body)
        .await
}

fn id(value: &Value) -> i64 {
    value["id"].as_i64().unwrap()
}

/// A server on a fake provider, alice, and an AI chat of hers.
async fn fixture() -> (FakeOpenAi, TestApp, Client, i64) {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |_| {}).await;
    let alice = app.user("alice").await;
    let chat = id(&alice
        .post("/api/ai/chats/", &json!({"title": "t"}))
        .await
        .body);
    (fake, app, alice, chat)
}

#[tokio::test]
async fn regenerate_and_edit_make_branches_and_the_prompt_follows_the_one_shown() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |_| {}).await;
    let alice = app.user("alice").await;
    let chat = alice
        .post("/api/ai/chats/", &json!({"title": "t"}))
        .await
        .body;
    let chat = id(&chat);
    assert_eq!(
        post(&alice, chat, "regenerate", json!({})).await.status,
        StatusCode::BAD_REQUEST,
        "nothing to regenerate yet"
    );

    let first = post(&alice, chat, "send_message", json!({"content": "Q1"}))
        .await
        .body;
    let first_answer = id(&first);
    assert_eq!(first["content"], "Echo: Q1");
    let question = first["parent"].as_i64().unwrap();
    assert_eq!(first["siblings"], json!([first_answer]));

    // Regenerate: a second answer to Q1, beside the first; the prompt ends with the question.
    fake.then(reply("Second answer", 5, 2));
    let second = post(&alice, chat, "regenerate", json!({})).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    let second_answer = id(&second.body);
    assert_eq!(second.body["content"], "Second answer");
    assert_eq!(second.body["parent"], question);
    assert_eq!(
        second.body["siblings"],
        json!([first_answer, second_answer])
    );
    assert_eq!(prompt(&fake.last_request()), ["user: Q1"]);
    assert_eq!(
        shown(&alice, chat).await,
        ["user: Q1", "assistant: Second answer"]
    );

    post(&alice, chat, "send_message", json!({"content": "Q2"})).await;
    assert_eq!(
        prompt(&fake.last_request()),
        ["user: Q1", "assistant: Second answer", "user: Q2"]
    );

    // Back to the first answer: its branch ends there, and a new question follows it.
    let selected = post(
        &alice,
        chat,
        "select_branch",
        json!({"message": first_answer}),
    )
    .await;
    assert_eq!(selected.status, StatusCode::OK, "{}", selected.body);
    assert_eq!(
        shown(&alice, chat).await,
        ["user: Q1", "assistant: Echo: Q1"]
    );
    post(&alice, chat, "send_message", json!({"content": "Q3"})).await;
    assert_eq!(
        prompt(&fake.last_request()),
        ["user: Q1", "assistant: Echo: Q1", "user: Q3"]
    );

    // Selecting the second answer shows its whole branch, to its newest end.
    post(
        &alice,
        chat,
        "select_branch",
        json!({"message": second_answer}),
    )
    .await;
    let branch = shown(&alice, chat).await;
    assert_eq!(
        branch,
        [
            "user: Q1",
            "assistant: Second answer",
            "user: Q2",
            "assistant: Echo: Q2"
        ]
    );

    // Edit Q2: a new question beside it; the prompt holds what came before Q2, then the edit.
    let messages = alice.get(&format!("/api/ai/chats/{chat}/")).await.body["messages"].clone();
    let q2 = id(&messages[2]);
    let edited = post(
        &alice,
        chat,
        "edit_message",
        json!({"message": q2, "content": "Q2, better"}),
    )
    .await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.body);
    assert_eq!(edited.body["content"], "Echo: Q2, better");
    assert_eq!(
        prompt(&fake.last_request()),
        ["user: Q1", "assistant: Second answer", "user: Q2, better"]
    );
    let now = alice.get(&format!("/api/ai/chats/{chat}/")).await.body["messages"].clone();
    assert_eq!(now[2]["content"], "Q2, better");
    assert_eq!(now[2]["siblings"], json!([q2, id(&now[2])]));
    assert_eq!(now[2]["parent"], second_answer);

    // Refusals: an answer is no question, nor is a question off the branch shown; a message of
    // another chat is no message of this one.
    for (message, field) in [(second_answer, "message"), (q2, "message")] {
        let refused = post(
            &alice,
            chat,
            "edit_message",
            json!({"message": message, "content": "x"}),
        )
        .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
        assert!(refused.body[field].is_array(), "{}", refused.body);
    }
    let other = alice
        .post("/api/ai/chats/", &json!({"title": "other"}))
        .await
        .body;
    let foreign = post(
        &alice,
        id(&other),
        "send_message",
        json!({"content": "elsewhere"}),
    )
    .await
    .body;
    let refused = post(
        &alice,
        chat,
        "select_branch",
        json!({"message": id(&foreign)}),
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    let missing = post(&alice, chat, "edit_message", json!({"content": "x"})).await;
    assert_eq!(missing.body["message"], json!(["This field is required."]));
    // Not the owner's: not found.
    let bob = app.user("bob").await;
    let hidden = post(&bob, chat, "select_branch", json!({"message": q2})).await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn a_regenerate_that_fails_leaves_the_answer_it_had() {
    let (fake, app, alice, chat) = fixture().await;
    post(&alice, chat, "send_message", json!({"content": "Q"})).await;
    for _ in 0..3 {
        fake.then(Behaviour::Status(500)); // The first try and both retries.
    }
    let failed = post(&alice, chat, "regenerate", json!({})).await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY, "{}", failed.body);
    assert_eq!(shown(&alice, chat).await, ["user: Q", "assistant: Echo: Q"]);
    app.stop().await;
}

#[tokio::test]
async fn sockets_regenerate_edit_and_switch_branches_and_original_ones_see_a_plain_list() {
    let (fake, app, alice, chat) = fixture().await;
    let mut v2 = alice.ai_ws_v2(chat).await;
    let mut original = alice.ai_ws(chat).await.expect("the original protocol");

    v2.send_json(json!({"content": "Q"})).await;
    let question = v2.next_of("user_message").await["message"].clone();
    assert_eq!(question["parent"], Value::Null);
    assert_eq!(question["siblings"], json!([id(&question)]));
    let first = v2.next_of("assistant_message").await["message"].clone();
    let seen = original.next_of("user_message").await["message"].clone();
    assert!(
        seen.get("siblings").is_none() && seen.get("parent").is_none(),
        "{seen}"
    );
    original.next_of("assistant_message").await;

    fake.then(reply("Again", 3, 1));
    v2.send_json(json!({"type": "regenerate"})).await;
    let again = v2.next_of("assistant_message").await["message"].clone();
    assert_eq!(again["content"], "Again");
    assert_eq!(again["siblings"], json!([id(&first), id(&again)]));
    assert_eq!(again["parent"], id(&question));
    let plain = original.next_of("assistant_message").await["message"].clone();
    assert_eq!(plain["content"], "Again");
    assert!(plain.get("siblings").is_none(), "{plain}");

    v2.send_json(json!({"type": "select_branch", "message": id(&first)}))
        .await;
    assert_eq!(v2.next_of("branch_selected").await["message"], id(&first));
    assert_eq!(shown(&alice, chat).await, ["user: Q", "assistant: Echo: Q"]);

    v2.send_json(json!({"type": "edit", "message": id(&question), "content": "Q edited"}))
        .await;
    let edited = v2.next_of("user_message").await["message"].clone();
    assert_eq!(edited["siblings"], json!([id(&question), id(&edited)]));
    v2.next_of("assistant_message").await;
    assert_eq!(prompt(&fake.last_request()), ["user: Q edited"]);

    v2.send_json(json!({"type": "edit", "message": "x"})).await;
    assert_eq!(
        v2.next_of("error").await["message"],
        "An edit frame needs message, a message id, and content, a string"
    );
    v2.send_json(json!({"type": "select_branch", "message": 999999}))
        .await;
    assert!(v2.next_of("error").await["message"]
        .as_str()
        .unwrap()
        .contains("does not exist"));

    // The original protocol hears the edit as a new question and its answer, as a client of the
    // original would show them, and never `branch_selected`.
    assert_eq!(
        original.next_of("user_message").await["message"]["content"],
        "Q edited"
    );
    assert_eq!(
        original.next_of("assistant_message").await["message"]["content"],
        "Echo: Q edited"
    );
    // It ignores the new types, as it ignores every type but `message`.
    original.send_json(json!({"type": "regenerate"})).await;
    original.send_json(json!({"content": "plain"})).await;
    let next = original.next_of_any(&["user_message", "error"]).await;
    assert_eq!(next["message"]["content"], "plain");
    app.stop().await;
}
