use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Client, TestApp, PASSWORD};

async fn issue_token(app: &TestApp, username: &str) -> String {
    let response = app
        .client()
        .post(
            "/api/tokens/",
            &json!({"username": username, "password": PASSWORD, "name": "phone"}),
        )
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
    assert_eq!(response.body["user"]["username"], username);
    assert!(
        response.set_cookies().is_empty(),
        "tokens come without cookies"
    );
    response.body["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_bearer_token_authenticates_without_csrf() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let token = issue_token(&app, "alice").await;
    let client = Client::with_bearer(app.addr, &token);
    assert_eq!(client.me().await, alice);
    // No cookie and no X-CSRFToken: the token alone authorises writes.
    assert!(client.csrf().is_none());
    let chat = client.create_chat("token chat", &[]).await;
    let message = client.send_message(chat, "sent with a token").await;
    assert_eq!(message["sender"], alice);
}

#[tokio::test]
async fn revoking_the_current_token_ends_it() {
    let app = TestApp::spawn().await;
    app.register("alice").await;
    let first = issue_token(&app, "alice").await;
    let second = issue_token(&app, "alice").await;
    assert_ne!(first, second);
    let client = Client::with_bearer(app.addr, &first);
    let response = client.delete("/api/tokens/current/").await;
    assert_eq!(response.status, StatusCode::NO_CONTENT);

    let response = client.get("/api/me/").await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    assert_eq!(response.body, json!({"detail": "Invalid token."}));
    assert_eq!(response.headers["www-authenticate"], "Bearer");
    // The other token lives on.
    Client::with_bearer(app.addr, &second).me().await;
}

#[tokio::test]
async fn bad_tokens_and_credentials_are_refused() {
    let app = TestApp::spawn().await;
    app.register("alice").await;
    let response = app
        .client()
        .post(
            "/api/tokens/",
            &json!({"username": "alice", "password": "wrong-password"}),
        )
        .await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    assert_eq!(response.body, json!({"error": "Invalid credentials"}));

    let response = Client::with_bearer(app.addr, "mrm_forged")
        .get("/api/chats/")
        .await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);

    let session = app.client();
    session.login("alice", PASSWORD).await;
    let response = session.delete("/api/tokens/current/").await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn revoking_a_token_closes_the_sockets_opened_with_it_only() {
    let app = TestApp::spawn().await;
    let session = app.user("alice").await;
    let revoked = Client::with_bearer(app.addr, &issue_token(&app, "alice").await);
    let kept = Client::with_bearer(app.addr, &issue_token(&app, "alice").await);
    let chat = session.create_chat("c", &[]).await;
    let ai_chat = crate::helpers::id(
        &session
            .post("/api/ai/chats/", &json!({"title": "t"}))
            .await
            .body,
    );
    let mut revoked_chat = revoked.ws(chat).await;
    let mut revoked_ai = revoked.ai_ws(ai_chat).await.unwrap();
    let mut kept_chat = kept.ws(chat).await;
    let mut session_chat = session.ws(chat).await;

    let response = revoked.delete("/api/tokens/current/").await;
    assert_eq!(response.status, StatusCode::NO_CONTENT);
    let promptly = std::time::Duration::from_secs(2);
    assert_eq!(revoked_chat.closed_within(promptly).await, Some(4001));
    assert_eq!(revoked_ai.closed_within(promptly).await, Some(4001));

    kept.send_message(chat, "still here").await;
    assert_eq!(kept_chat.next_message().await["content"], "still here");
    assert_eq!(session_chat.next_message().await["content"], "still here");
}
