use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, PASSWORD};

fn registration(username: &str, password: &str) -> serde_json::Value {
    json!({
        "username": username,
        "email": format!("{username}@example.com"),
        "password": password,
        "password_confirm": password,
    })
}

#[tokio::test]
async fn register_returns_the_user_as_a_student_by_default() {
    let app = TestApp::spawn().await;
    let response = app
        .client()
        .post("/api/register/", &registration("alice", PASSWORD))
        .await;
    assert_eq!(response.status, StatusCode::CREATED);
    let body = response.body.as_object().unwrap();
    assert_eq!(
        body.len(),
        4,
        "exactly id, username, email, user_type: {body:?}"
    );
    assert!(body["id"].as_i64().unwrap() > 0);
    assert_eq!(body["username"], "alice");
    assert_eq!(body["email"], "alice@example.com");
    assert_eq!(body["user_type"], "student");
    assert!(
        response.set_cookies().is_empty(),
        "registering does not log in"
    );
}

#[tokio::test]
async fn register_accepts_each_user_type_and_an_empty_email() {
    let app = TestApp::spawn().await;
    for (name, kind) in [("o", "owner"), ("s", "student"), ("t", "staff")] {
        let mut body = registration(name, PASSWORD);
        body["user_type"] = json!(kind);
        body["email"] = json!("");
        let response = app.client().post("/api/register/", &body).await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
        assert_eq!(response.body["user_type"], kind);
        assert_eq!(response.body["email"], "");
    }
}

#[tokio::test]
async fn register_accepts_a_form_encoded_body() {
    let app = TestApp::spawn().await;
    let client = app.client();
    let form = [
        ("username", "formuser"),
        ("password", PASSWORD),
        ("password_confirm", PASSWORD),
    ];
    let response = client
        .send(
            client
                .request(reqwest::Method::POST, "/api/register/")
                .form(&form),
        )
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
    assert_eq!(response.body["username"], "formuser");
}

#[tokio::test]
async fn register_reports_each_missing_field() {
    let app = TestApp::spawn().await;
    let response = app.client().post("/api/register/", &json!({})).await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    for field in ["username", "password", "password_confirm"] {
        assert_eq!(
            response.body[field],
            json!(["This field is required."]),
            "{field}"
        );
    }
}

#[tokio::test]
async fn register_rejects_bad_fields_with_their_messages() {
    let app = TestApp::spawn().await;
    let client = app.client();
    app.register("taken").await;

    let response = client
        .post("/api/register/", &registration("taken", PASSWORD))
        .await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        response.body["username"],
        json!(["A user with that username already exists."])
    );

    let mut body = registration("newbie", PASSWORD);
    body["user_type"] = json!("admin");
    let response = client.post("/api/register/", &body).await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        response.body["user_type"],
        json!(["\"admin\" is not a valid choice."])
    );

    let response = client
        .post("/api/register/", &registration("has space", PASSWORD))
        .await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert!(response.body["username"][0]
        .as_str()
        .unwrap()
        .starts_with("Enter a valid username."));

    let response = client
        .post("/api/register/", &registration(&"x".repeat(151), PASSWORD))
        .await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        response.body["username"],
        json!(["Ensure this field has no more than 150 characters."])
    );

    let mut body = registration("emailer", PASSWORD);
    body["email"] = json!("not-an-address");
    let response = client.post("/api/register/", &body).await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        response.body["email"],
        json!(["Enter a valid email address."])
    );

    let mut body = registration("mismatch", PASSWORD);
    body["password_confirm"] = json!("something-else-entirely");
    let response = client.post("/api/register/", &body).await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        response.body,
        json!({"password": ["Passwords don't match."]})
    );

    let mut body = registration("typed", PASSWORD);
    body["username"] = json!(["not", "a", "string"]);
    let response = client.post("/api/register/", &body).await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(response.body["username"], json!(["Not a valid string."]));
}

#[tokio::test]
async fn register_applies_the_password_validators() {
    let app = TestApp::spawn().await;
    let client = app.client();
    let cases = [
        (
            "short7!",
            "This password is too short. It must contain at least 8 characters.",
        ),
        ("9283746501", "This password is entirely numeric."),
        ("password123", "This password is too common."),
        (
            "validator-user1",
            "The password is too similar to the username.",
        ),
    ];
    for (password, message) in cases {
        let response = client
            .post("/api/register/", &registration("validator-user", password))
            .await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{password}");
        let messages = response.body["password"].as_array().unwrap();
        assert!(
            messages.iter().any(|m| m == message),
            "{password}: {messages:?}"
        );
    }
    // Nothing was created along the way.
    let response = client
        .post("/api/register/", &registration("validator-user", PASSWORD))
        .await;
    assert_eq!(response.status, StatusCode::CREATED);
}

#[tokio::test]
async fn login_sets_a_session_cookie_and_a_csrf_cookie() {
    let app = TestApp::spawn().await;
    let user = app.register("alice").await;
    let client = app.client();
    let response = client.login("alice", PASSWORD).await;
    assert_eq!(response.body, user);
    let cookies = response.set_cookies();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("sessionid="))
        .expect("sessionid cookie");
    assert!(session.contains("HttpOnly"), "{session}");
    assert!(session.contains("SameSite=Lax"), "{session}");
    assert!(session.contains("Max-Age=1209600"), "{session}");
    assert!(!session.contains("Secure"), "Secure is opt-in: {session}");
    let csrf = cookies
        .iter()
        .find(|c| c.starts_with("csrftoken="))
        .expect("csrftoken cookie");
    assert!(!csrf.contains("HttpOnly"), "scripts must read it: {csrf}");
    assert!(csrf.contains("SameSite=Lax"), "{csrf}");
    assert_eq!(client.me().await, user);
}

#[tokio::test]
async fn secure_cookies_are_opt_in() {
    let app = TestApp::spawn_with(|c| c.secure_cookies = true).await;
    app.register("alice").await;
    let client = app.client();
    let response = client
        .send(
            client
                .request(reqwest::Method::POST, "/api/login/")
                .json(&json!({"username": "alice", "password": PASSWORD})),
        )
        .await;
    assert_eq!(response.status, StatusCode::OK);
    for cookie in response.set_cookies() {
        assert!(cookie.contains("Secure"), "{cookie}");
    }
}

#[tokio::test]
async fn login_refuses_bad_credentials_with_401() {
    let app = TestApp::spawn().await;
    app.register("alice").await;
    let client = app.client();
    for body in [
        json!({"username": "alice", "password": "wrong-password"}),
        json!({"username": "nobody", "password": PASSWORD}),
    ] {
        let response = client.post("/api/login/", &body).await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED);
        assert_eq!(response.body, json!({"error": "Invalid credentials"}));
        assert!(response.set_cookies().is_empty());
    }
    let response = client
        .post("/api/login/", &json!({"username": "alice"}))
        .await;
    assert_eq!(
        response.status,
        StatusCode::UNAUTHORIZED,
        "a missing field is a failed login"
    );
    assert_eq!(response.body, json!({"error": "Invalid credentials"}));
}

#[tokio::test]
async fn login_attempts_are_rate_limited() {
    let app = TestApp::spawn_with(|c| c.login_attempts_per_minute = 3.try_into().unwrap()).await;
    app.register("alice").await;
    let client = app.client();
    for _ in 0..3 {
        let response = client
            .post(
                "/api/login/",
                &json!({"username": "alice", "password": "nope-nope"}),
            )
            .await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    }
    let response = client
        .post(
            "/api/login/",
            &json!({"username": "alice", "password": PASSWORD}),
        )
        .await;
    assert_eq!(response.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers.contains_key("retry-after"));
    assert!(response.body["detail"]
        .as_str()
        .unwrap()
        .starts_with("Request was throttled."));
    // Another username from the same address still gets its own budget.
    app.register("bob").await;
    app.client().login("bob", PASSWORD).await;
}

#[tokio::test]
async fn login_rotates_the_session() {
    let app = TestApp::spawn().await;
    let client = app.user("alice").await;
    let first = client.cookie("sessionid").unwrap();
    client.login("alice", PASSWORD).await;
    let second = client.cookie("sessionid").unwrap();
    assert_ne!(first, second);
    client.me().await;

    let replay = app.client();
    replay.set_cookie("sessionid", &first);
    let response = replay.get("/api/me/").await;
    assert_eq!(
        response.status,
        StatusCode::FORBIDDEN,
        "the old session ended at the new login"
    );
}

#[tokio::test]
async fn logout_ends_the_session() {
    let app = TestApp::spawn().await;
    let client = app.user("alice").await;
    let old = client.cookie("sessionid").unwrap();
    let response = client.post("/api/logout/", &json!({})).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body, json!({"message": "Logged out successfully"}));
    assert!(response
        .set_cookies()
        .iter()
        .any(|c| c.starts_with("sessionid=;") || c.starts_with("sessionid=\"\"")));
    assert_eq!(client.get("/api/me/").await.status, StatusCode::FORBIDDEN);

    let replay = app.client();
    replay.set_cookie("sessionid", &old);
    assert_eq!(replay.get("/api/me/").await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn protected_endpoints_refuse_anonymous_callers_with_403() {
    let app = TestApp::spawn().await;
    let anonymous = app.client();
    for path in [
        "/api/me/",
        "/api/users/",
        "/api/chats/",
        "/api/messages/",
        "/api/chats/1/",
        "/api/messages/1/",
    ] {
        let response = anonymous.get(path).await;
        assert_eq!(response.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(
            response.body,
            json!({"detail": "Authentication credentials were not provided."})
        );
    }
    let response = anonymous.post("/api/logout/", &json!({})).await;
    assert_eq!(response.status, StatusCode::FORBIDDEN);
    let response = anonymous.post("/api/chats/", &json!({"name": "x"})).await;
    assert_eq!(response.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn users_lists_every_user_with_names() {
    let app = TestApp::spawn().await;
    let client = app.user("alice").await;
    app.register("bob").await;
    let response = client.get("/api/users/").await;
    assert_eq!(response.status, StatusCode::OK);
    let users = response.body.as_array().unwrap();
    let names: Vec<&str> = users
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    for user in users {
        assert_eq!(user["first_name"], "");
        assert_eq!(user["last_name"], "");
        assert!(
            user.get("email").is_none(),
            "the directory does not expose addresses"
        );
        assert!(user.get("password").is_none());
    }
    assert!(response.next_link().is_none());

    let response = client.get("/api/users/?limit=1").await;
    assert_eq!(response.body.as_array().unwrap().len(), 1);
    assert_eq!(response.body[0]["username"], "bob");
    let next = response.next_link().expect("a next page");
    let response = client.get(&next).await;
    assert_eq!(response.body[0]["username"], "alice");
    assert!(response.next_link().is_none());
}
