use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn malformed_json_is_a_400_with_a_detail() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let csrf = alice.csrf().unwrap();
    let response = alice
        .send(
            alice
                .request(Method::POST, "/api/chats/")
                .header("X-CSRFToken", csrf.clone())
                .header("Content-Type", "application/json")
                .body("{\"name\": "),
        )
        .await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert!(response.body["detail"]
        .as_str()
        .unwrap()
        .starts_with("JSON parse error"));

    let response = alice
        .send(
            alice
                .request(Method::POST, "/api/chats/")
                .header("X-CSRFToken", csrf.clone())
                .json(&json!(["a", "list"])),
        )
        .await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        response.body,
        json!({"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]})
    );

    let response = alice
        .send(
            alice
                .request(Method::POST, "/api/chats/")
                .header("X-CSRFToken", csrf)
                .header("Content-Type", "text/plain")
                .body("name=x"),
        )
        .await;
    assert_eq!(response.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        response.body,
        json!({"detail": "Unsupported media type \"text/plain\" in request."})
    );
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let chat = alice.create_chat("c", &[]).await;
    let big = json!({"content": "x".repeat(1024 * 1024)});
    let response = alice
        .post(&format!("/api/chats/{chat}/send_message/"), &big)
        .await;
    assert_eq!(response.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(response.body["detail"]
        .as_str()
        .unwrap()
        .contains("too large"));

    // Without a Content-Length (chunked), the limit still holds.
    let csrf = alice.csrf().unwrap();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..40).map(|_| Ok(vec![b' '; 64 * 1024])).collect();
    let body = reqwest::Body::wrap_stream(futures_stream(chunks));
    let response = alice
        .send(
            alice
                .request(Method::POST, &format!("/api/chats/{chat}/send_message/"))
                .header("X-CSRFToken", csrf)
                .header("Content-Type", "application/json")
                .body(body),
        )
        .await;
    assert_eq!(response.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(alice.chat_messages(chat).await, json!([]));
}

fn futures_stream(
    chunks: Vec<Result<Vec<u8>, std::io::Error>>,
) -> impl tokio_stream::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    tokio_stream::iter(chunks)
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_answer_json() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let response = alice.get("/api/nothing-here/").await;
    assert_eq!(response.status, StatusCode::NOT_FOUND);
    assert_eq!(response.body, json!({"detail": "Not found."}));

    let response = alice.get("/api/login/").await;
    assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        response.body,
        json!({"detail": "Method \"GET\" not allowed."})
    );
    let response = alice.delete("/api/chats/").await;
    assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn paths_work_with_and_without_the_trailing_slash() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    assert_eq!(alice.get("/api/me").await.status, StatusCode::OK);
    assert_eq!(alice.get("/api/me/").await.status, StatusCode::OK);
    let response = alice.post("/api/chats", &json!({"name": "no slash"})).await;
    assert_eq!(response.status, StatusCode::CREATED);
}

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::spawn().await;
    let client = app.client();
    let response = client.get("/healthz").await;
    assert_eq!(response.status, StatusCode::OK);
    let response = client.get("/readyz").await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body["database"], "ok");
    app.db.close().await;
    let response = client.get("/readyz").await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(client.get("/healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let chat = alice.create_chat("c", &[]).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let request = alice
        .request(Method::POST, &format!("/api/chats/{chat}/send_message/"))
        .header("X-CSRFToken", alice.csrf().unwrap())
        .header("Content-Type", "application/json")
        .body(body);
    let in_flight = tokio::spawn({
        let alice = alice.clone();
        async move { alice.send(request).await }
    });
    tx.send(Ok(b"{\"content\": ".to_vec())).await.unwrap();
    // Give the server time to read the request head, then stop it while the body is unfinished.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let stopping = tokio::spawn(app.stop());
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    tx.send(Ok(b"\"last words\"}".to_vec())).await.unwrap();
    drop(tx);
    let response = in_flight.await.unwrap();
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
    assert_eq!(response.body["content"], "last words");
    stopping.await.unwrap();
}
