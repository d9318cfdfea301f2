use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{TestApp, PASSWORD};

#[tokio::test]
async fn cookie_writes_need_the_csrf_header() {
    let app = TestApp::spawn().await;
    let client = app.user("alice").await;
    let body = json!({"name": "no token"});

    let response = client
        .send(client.request(Method::POST, "/api/chats/").json(&body))
        .await;
    assert_eq!(response.status, StatusCode::FORBIDDEN);
    assert_eq!(
        response.body,
        json!({"detail": "CSRF Failed: CSRF token missing."})
    );

    let response = client
        .send(
            client
                .request(Method::POST, "/api/chats/")
                .header("X-CSRFToken", "x".repeat(32))
                .json(&body),
        )
        .await;
    assert_eq!(response.status, StatusCode::FORBIDDEN);
    assert_eq!(
        response.body,
        json!({"detail": "CSRF Failed: CSRF token incorrect."})
    );

    // Nothing was created by the refused requests.
    assert_eq!(client.get("/api/chats/").await.body, json!([]));

    let response = client
        .post("/api/chats/", &json!({"name": "with token"}))
        .await;
    assert_eq!(response.status, StatusCode::CREATED);
}

#[tokio::test]
async fn the_csrf_cookie_must_be_the_one_issued_with_the_session() {
    let app = TestApp::spawn().await;
    let client = app.user("alice").await;
    // A cookie planted by someone else (and echoed in the header) does not pass.
    client.set_cookie("csrftoken", "planted-token-planted-token-1234");
    let response = client.post("/api/chats/", &json!({"name": "x"})).await;
    assert_eq!(response.status, StatusCode::FORBIDDEN);
    assert_eq!(
        response.body,
        json!({"detail": "CSRF Failed: CSRF token incorrect."})
    );
}

#[tokio::test]
async fn a_missing_csrf_cookie_is_named() {
    let app = TestApp::spawn().await;
    let user = app.user("alice").await;
    let session = user.cookie("sessionid").unwrap();
    let token = user.csrf().unwrap();
    let bare = app.client();
    bare.set_cookie("sessionid", &session);
    let response = bare
        .send(
            bare.request(Method::POST, "/api/chats/")
                .header("X-CSRFToken", token)
                .json(&json!({"name": "x"})),
        )
        .await;
    assert_eq!(response.status, StatusCode::FORBIDDEN);
    assert_eq!(
        response.body,
        json!({"detail": "CSRF Failed: CSRF cookie not set."})
    );
}

#[tokio::test]
async fn safe_methods_need_no_token() {
    let app = TestApp::spawn().await;
    let client = app.user("alice").await;
    let response = client
        .send(client.request(Method::GET, "/api/chats/"))
        .await;
    assert_eq!(response.status, StatusCode::OK);
}

#[tokio::test]
async fn writes_from_a_foreign_origin_are_refused() {
    let app =
        TestApp::spawn_with(|c| c.allowed_origins = vec!["https://app.example.com".into()]).await;
    let client = app.user("alice").await;
    let csrf = client.csrf().unwrap();
    let post = |origin: &'static str| {
        client
            .request(Method::POST, "/api/chats/")
            .header("X-CSRFToken", csrf.clone())
            .header("Origin", origin)
            .json(&json!({"name": "from somewhere"}))
    };

    let response = client.send(post("https://evil.example.net")).await;
    assert_eq!(response.status, StatusCode::FORBIDDEN);
    assert_eq!(
        response.body["detail"],
        "CSRF Failed: Origin checking failed - https://evil.example.net does not match any trusted origins."
    );
    assert_eq!(
        client.send(post("null")).await.status,
        StatusCode::FORBIDDEN
    );

    assert_eq!(
        client.send(post("https://app.example.com")).await.status,
        StatusCode::CREATED
    );
    let own = format!("http://{}", app.addr);
    let response = client
        .send(
            client
                .request(Method::POST, "/api/chats/")
                .header("X-CSRFToken", csrf.clone())
                .header("Origin", own)
                .json(&json!({"name": "same origin"})),
        )
        .await;
    assert_eq!(response.status, StatusCode::CREATED);
}

#[tokio::test]
async fn login_from_a_foreign_origin_is_refused() {
    let app = TestApp::spawn().await;
    app.register("alice").await;
    let client = app.client();
    let response = client
        .send(
            client
                .request(Method::POST, "/api/login/")
                .header("Origin", "https://evil.example.net")
                .json(&json!({"username": "alice", "password": PASSWORD})),
        )
        .await;
    assert_eq!(response.status, StatusCode::FORBIDDEN);
    assert!(response.set_cookies().is_empty());
}
