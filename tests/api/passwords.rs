//! Password checks are bounded: a budget per client address across usernames (the address a
//! trusted proxy forwards, an IPv6 one by its /64), a bounded queue of hashes, a maximum length,
//! and a small body for the requests that carry passwords.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{Response, TestApp, PASSWORD};

fn throttled(response: &Response) {
    assert_eq!(
        response.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        response.body
    );
    assert!(response.headers.contains_key("retry-after"));
    assert!(
        response.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("Request was throttled."),
        "{}",
        response.body
    );
}

fn unauthorized(response: &Response) {
    assert_eq!(
        response.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        response.body
    );
}

fn registration(username: &str) -> Value {
    json!({
        "username": username,
        "email": format!("{username}@example.com"),
        "password": PASSWORD,
        "password_confirm": PASSWORD,
    })
}

#[tokio::test]
async fn one_address_has_one_password_budget_across_usernames_and_doors() {
    let app = TestApp::spawn_with(|c| c.password_attempts_per_minute = 4.try_into().unwrap()).await;
    let client = app.client();
    // Four attempts, each for another username and through another door, all counted.
    let response = client.post("/api/register/", &registration("alice")).await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
    let response = client
        .post(
            "/api/login/",
            &json!({"username": "bob", "password": "wrong-wrong"}),
        )
        .await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    let response = client
        .post(
            "/api/tokens/",
            &json!({"username": "carol", "password": "wrong-wrong"}),
        )
        .await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    let response = client
        .post(
            "/api/login/",
            &json!({"username": "alice", "password": PASSWORD}),
        )
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);

    // The budget is spent: a new username, on every door, is throttled.
    throttled(
        &client
            .post(
                "/api/login/",
                &json!({"username": "dave", "password": PASSWORD}),
            )
            .await,
    );
    throttled(
        &client
            .post(
                "/api/tokens/",
                &json!({"username": "erin", "password": PASSWORD}),
            )
            .await,
    );
    throttled(&client.post("/api/register/", &registration("frank")).await);
    let admin = reqwest::Client::new()
        .post(format!("http://{}/admin/login/", app.addr))
        .form(&[("username", "grace"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(admin.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn registrations_are_limited_per_address() {
    let app = TestApp::spawn_with(|c| c.password_attempts_per_minute = 2.try_into().unwrap()).await;
    let client = app.client();
    for name in ["alice", "bob"] {
        let response = client.post("/api/register/", &registration(name)).await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
    }
    throttled(&client.post("/api/register/", &registration("carol")).await);
    let response = client
        .post(
            "/api/login/",
            &json!({"username": "carol", "password": PASSWORD}),
        )
        .await;
    throttled(&response);
}

#[tokio::test]
async fn a_full_hash_queue_is_answered_at_once() {
    let app = TestApp::spawn_with(|c| c.password_queue = 0).await;
    app.register("alice").await;
    // Take every place a hash could run or wait in.
    let mut held = Vec::new();
    while let Ok(slot) = app.state.hasher.reserve() {
        held.push(slot);
    }
    assert!(!held.is_empty());
    let client = app.client();
    let login = json!({"username": "alice", "password": PASSWORD});
    throttled(&client.post("/api/login/", &login).await);
    throttled(&client.post("/api/tokens/", &login).await);
    throttled(&client.post("/api/register/", &registration("bob")).await);
    // Places given back are taken again.
    drop(held);
    let response = client.post("/api/login/", &login).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
}

#[tokio::test]
async fn an_over_long_password_fails_without_being_hashed() {
    let app = TestApp::spawn().await;
    app.register("alice").await;
    let too_long = "a".repeat(4097);
    // With no place left in the hashing queue, only a password refused before hashing can be
    // answered 401 rather than 429.
    let mut held = Vec::new();
    while let Ok(slot) = app.state.hasher.reserve() {
        held.push(slot);
    }
    let client = app.client();
    for path in ["/api/login/", "/api/tokens/"] {
        let response = client
            .post(path, &json!({"username": "alice", "password": too_long}))
            .await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(response.body, json!({"error": "Invalid credentials"}));
    }
    drop(held);

    let mut form = registration("bob");
    form["password"] = json!(too_long);
    form["password_confirm"] = json!(too_long);
    let response = client.post("/api/register/", &form).await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        response.body,
        json!({"password": ["Ensure this field has no more than 4096 characters."]})
    );
}

#[tokio::test]
async fn requests_carrying_passwords_have_a_small_body_limit() {
    let app = TestApp::spawn().await;
    let client = app.client();
    let padding = "x".repeat(200 * 1024);
    for path in ["/api/login/", "/api/tokens/", "/api/register/"] {
        let response = client
            .post(
                path,
                &json!({"username": "alice", "password": PASSWORD, "padding": padding}),
            )
            .await;
        assert_eq!(response.status, StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        assert_eq!(
            response.body,
            json!({"detail": "Request body is too large (limit 131072 bytes)."})
        );
    }
}

/// A failed login as `username`, from the client a proxy names in `X-Forwarded-For` (none: the
/// header is not sent).
async fn login_from(app: &TestApp, forwarded_for: Option<&str>, username: &str) -> Response {
    let client = app.client();
    let mut request = client.request(Method::POST, "/api/login/");
    if let Some(forwarded_for) = forwarded_for {
        request = request.header("x-forwarded-for", forwarded_for);
    }
    client
        .send(request.json(&json!({"username": username, "password": "wrong-wrong"})))
        .await
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_budget_follows_the_forwarded_client() {
    let app = TestApp::spawn_with(|c| {
        c.password_attempts_per_minute = 2.try_into().unwrap();
        c.trusted_proxies = "127.0.0.1, 10.0.0.0/8".parse().unwrap();
    })
    .await;
    let client = app.client();
    let forwarded = |ip: &str, path: &str| {
        client
            .request(Method::POST, path)
            .header("x-forwarded-for", ip)
    };
    // One forwarded client spends its budget through two doors, each for another username…
    let registered = client
        .send(forwarded("203.0.113.1", "/api/register/").json(&registration("alice")))
        .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.body
    );
    let token = client
        .send(
            forwarded("203.0.113.1", "/api/tokens/")
                .json(&json!({"username": "bob", "password": "wrong-wrong"})),
        )
        .await;
    unauthorized(&token);
    // …and is throttled on every door, whatever the username, even when its own claims are
    // left of it in the header (a client writes what it likes there).
    throttled(&login_from(&app, Some("203.0.113.1"), "carol").await);
    throttled(&login_from(&app, Some("198.51.100.9, 203.0.113.1"), "dave").await);
    throttled(&login_from(&app, Some("203.0.113.1, 10.1.2.3"), "erin").await);
    let admin = reqwest::Client::new()
        .post(format!("http://{}/admin/login/", app.addr))
        .header("x-forwarded-for", "203.0.113.1")
        .form(&[("username", "frank"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), StatusCode::TOO_MANY_REQUESTS);

    // Another forwarded client has a budget of its own, and so does the proxy itself.
    for username in ["grace", "heidi"] {
        unauthorized(&login_from(&app, Some("203.0.113.2"), username).await);
    }
    throttled(&login_from(&app, Some("203.0.113.2"), "ivan").await);
    unauthorized(&login_from(&app, None, "judy").await);

    // An IPv6 client is counted by its /64: another address of it shares the budget.
    for (ip, username) in [("2001:db8:1:2::1", "ken"), ("2001:db8:1:2::abcd", "lou")] {
        unauthorized(&login_from(&app, Some(ip), username).await);
    }
    throttled(&login_from(&app, Some("2001:db8:1:2:ffff::9"), "mia").await);
    unauthorized(&login_from(&app, Some("2001:db8:1:3::1"), "ned").await);

    // A header a trusted proxy could not have written leaves the proxy's own address.
    unauthorized(&login_from(&app, Some("unknown"), "olga").await);
    throttled(&login_from(&app, Some("not-an-address"), "pam").await);
}

#[tokio::test]
async fn without_trusted_proxies_the_forwarded_header_is_ignored() {
    let app = TestApp::spawn_with(|c| c.password_attempts_per_minute = 2.try_into().unwrap()).await;
    // Each attempt claims another client; all are the peer's.
    for (ip, username) in [("203.0.113.1", "alice"), ("203.0.113.2", "bob")] {
        unauthorized(&login_from(&app, Some(ip), username).await);
    }
    throttled(&login_from(&app, Some("203.0.113.3"), "carol").await);
    throttled(&login_from(&app, None, "dave").await);
}
