//! Several providers at once: the models each offers, and each AI chat's model choosing where its
//! questions go.

use reqwest::StatusCode;
use serde_json::{json, Value};

use mrm_chat::config::{ProviderList, ProviderSpec};

use crate::{
    fake_openai::{FakeOpenAi, MODEL},
    helpers::TestApp,
};

fn provider(
    name: &str,
    fake: &FakeOpenAi,
    models: Option<&[&str]>,
    staff_only: bool,
) -> ProviderSpec {
    ProviderSpec {
        name: name.into(),
        base_url: fake.base_url(),
        api_key: Some(format!("key-of-{name}")),
        models: models.map(|m| m.iter().map(|s| s.to_string()).collect()),
        staff_only,
        context_window: None,
    }
}

fn ids(models: &Value) -> Vec<String> {
    models
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn each_ai_chat_asks_its_own_model_on_its_providers_api() {
    // "openai" from the OPENAI_* variables (allowed its one model); "local" lists what it has
    // and allows it all; "lab" is for staff only.
    let hosted = FakeOpenAi::start().await;
    let local = FakeOpenAi::start().await;
    local.with_models(&["llama3", "qwen2"]);
    let lab = FakeOpenAi::start().await;
    lab.with_models(&["big-model", "unlisted-elsewhere"]);
    let (local_spec, lab_spec) = (
        provider("local", &local, None, false),
        provider("lab", &lab, Some(&["big-model", "not-served"]), true),
    );
    let app = TestApp::spawn_with_ai(&hosted, move |config| {
        config.ai.providers = Some(ProviderList(vec![local_spec, lab_spec]));
    })
    .await;
    let alice = app.user("alice").await;

    let listed = alice.get("/api/ai/models/").await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(
        ids(&listed.body),
        [
            format!("openai/{MODEL}"),
            "local/llama3".into(),
            "local/qwen2".into()
        ],
        "the hosted provider cannot list, so its allow-list stands; lab is for staff"
    );
    let first = &listed.body[0];
    assert_eq!(first["default"], true);
    assert_eq!(first["provider"], "openai");
    assert_eq!(first["model"], MODEL);
    assert!(first["context_window"].as_u64().unwrap() > 0);
    app.make_staff("alice").await;
    let staff = alice.get("/api/ai/models/").await;
    assert_eq!(
        ids(&staff.body)[3..],
        ["lab/big-model".to_owned()],
        "only what lab both allows and lists"
    );
    let bob = app.user("bob").await;
    assert_eq!(ids(&bob.get("/api/ai/models/").await.body).len(), 3);
    assert_eq!(local.listings(), 1, "the listing is cached");

    // Chosen at creation, by id or by a name one provider offers.
    let created = alice
        .post(
            "/api/ai/chats/",
            &json!({"title": "local", "model": "local/llama3"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["model"], "local/llama3");
    let on_local = created.body["id"].as_i64().unwrap();
    let by_name = alice
        .post("/api/ai/chats/", &json!({"title": "q", "model": "qwen2"}))
        .await;
    assert_eq!(by_name.body["model"], "local/qwen2");
    let default = alice.post("/api/ai/chats/", &json!({"title": "d"})).await;
    assert_eq!(default.body["model"], format!("openai/{MODEL}"));
    let on_hosted = default.body["id"].as_i64().unwrap();

    // Not offered: refused, naming the field; staff-only models refused to others.
    for refused in ["local/gpt-5", "nobody/llama3", "", "big-model"] {
        let response = bob
            .post("/api/ai/chats/", &json!({"title": "x", "model": refused}))
            .await;
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{refused}: {}",
            response.body
        );
        assert!(response.body["model"].is_array(), "{}", response.body);
    }

    // Each question goes to the chat's provider, naming the provider's own model name, with
    // that provider's key.
    let asked = alice
        .post(
            &format!("/api/ai/chats/{on_local}/send_message/"),
            &json!({"content": "hi local"}),
        )
        .await;
    assert_eq!(asked.status, StatusCode::OK, "{}", asked.body);
    assert_eq!(asked.body["model"], "llama3");
    assert_eq!(local.models_asked(), ["llama3"]);
    assert_eq!(local.authorizations(), ["Bearer key-of-local"]);
    let asked = alice
        .post(
            &format!("/api/ai/chats/{on_hosted}/send_message/"),
            &json!({"content": "hi hosted"}),
        )
        .await;
    assert_eq!(asked.status, StatusCode::OK, "{}", asked.body);
    assert_eq!(hosted.models_asked(), [MODEL]);

    // Changed later: the next question goes to the new model; the chat shows it.
    let changed = alice
        .patch(
            &format!("/api/ai/chats/{on_local}/"),
            &json!({"model": "lab/big-model"}),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_eq!(changed.body["model"], "lab/big-model");
    let kept = alice
        .patch(
            &format!("/api/ai/chats/{on_local}/"),
            &json!({"title": "renamed"}),
        )
        .await;
    assert_eq!(
        kept.body["model"], "lab/big-model",
        "left out, the model stays"
    );
    alice
        .post(
            &format!("/api/ai/chats/{on_local}/send_message/"),
            &json!({"content": "hi lab"}),
        )
        .await;
    assert_eq!(lab.models_asked(), ["big-model"]);
    assert_eq!(local.models_asked().len(), 1);

    // Usage is per model, whichever provider served it.
    let usage = alice.get("/api/ai/usage/").await.body;
    let models: Vec<&str> = usage["by_model"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    for model in ["llama3", MODEL, "big-model"] {
        assert!(models.contains(&model), "{usage}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_model_no_longer_offered_is_refused_when_asked_and_can_be_replaced() {
    let local = FakeOpenAi::start().await;
    local.with_models(&["llama3"]);
    let spec = provider("local", &local, None, true);
    let app = TestApp::spawn_with(move |config| {
        config.ai.providers = Some(ProviderList(vec![spec]));
    })
    .await;
    let alice = app.user("alice").await;
    app.make_staff("alice").await;
    let chat = alice
        .post(
            "/api/ai/chats/",
            &json!({"title": "t", "model": "local/llama3"}),
        )
        .await;
    assert_eq!(chat.status, StatusCode::CREATED, "{}", chat.body);
    let chat = chat.body["id"].as_i64().unwrap();
    // The provider is for staff, and alice is staff no more.
    app.unmake_staff("alice").await;
    let refused = alice
        .post(
            &format!("/api/ai/chats/{chat}/send_message/"),
            &json!({"content": "hi"}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(refused.body["model"][0]
        .as_str()
        .unwrap()
        .contains("no longer offered"));
    assert!(local.requests().is_empty());
    app.stop().await;
}
