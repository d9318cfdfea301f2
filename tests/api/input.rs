//! Text input read alike on every path: whitespace stripped where the original strips it, NUL
//! refused with its own reason (never a database error), look-alike usernames folded to the
//! account they imitate, and limits counted in characters whatever the encoding.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{id, usernames, Client, Response, TestApp, PASSWORD};

const NUL: &str = "Null characters are not allowed.";
const BLANK: &str = "This field may not be blank.";
const EMOJI: &str = "😀";
const MAX_MESSAGE: usize = 10_000;

/// Posts `body` as sent, with the content type given and the CSRF header.
async fn post_raw(client: &Client, path: &str, content_type: &str, body: String) -> Response {
    let mut builder = client
        .request(Method::POST, path)
        .header("content-type", content_type)
        .body(body);
    if let Some(token) = client.csrf() {
        builder = builder.header("X-CSRFToken", token);
    }
    client.send(builder).await
}

/// `value` as JSON text with every non-ASCII character written as `\u` escapes (astral-plane
/// ones as surrogate pairs): twelve bytes for each emoji.
fn escaped_json(value: &Value) -> String {
    let mut out = String::new();
    for c in value.to_string().chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

async fn ai_chat(client: &Client, title: &str) -> i64 {
    let response = client
        .post("/api/ai/chats/", &json!({ "title": title }))
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
    id(&response.body)
}

#[tokio::test]
async fn rest_strips_text_fields_as_the_original_serializers_do() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;

    let created = alice
        .post("/api/chats/", &json!({"name": "\u{3000} Team \t"}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["name"], "Team");
    let chat = id(&created.body);
    let renamed = alice
        .patch(
            &format!("/api/chats/{chat}/"),
            &json!({"name": "  Renamed\n"}),
        )
        .await;
    assert_eq!(renamed.body["name"], "Renamed");

    let sent = alice.send_message(chat, "  padded  ").await;
    assert_eq!(sent["content"], "padded");
    assert_eq!(alice.chat_messages(chat).await[0]["content"], "padded");
    // The same through a form body.
    let path = format!("/api/chats/{chat}/send_message/");
    let response = post_raw(
        &alice,
        &path,
        "application/x-www-form-urlencoded",
        form(&[("content", "\u{1f} form \u{a0}")]),
    )
    .await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
    assert_eq!(response.body["content"], "form");

    let response = alice
        .post(
            "/api/ai/chats/",
            &json!({"title": "  Homework ", "system_prompt": "\n Be brief. \n"}),
        )
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
    assert_eq!(response.body["title"], "Homework");
    assert_eq!(response.body["system_prompt"], "Be brief.");
    let ai = id(&response.body);
    let updated = alice
        .put(
            &format!("/api/ai/chats/{ai}/"),
            &json!({"title": " New ", "system_prompt": " Be kind. "}),
        )
        .await;
    assert_eq!(updated.body["title"], "New");
    assert_eq!(updated.body["system_prompt"], "Be kind.");

    // No provider is configured: the question is kept (503), and kept stripped.
    let asked = alice
        .post(
            &format!("/api/ai/chats/{ai}/send_message/"),
            &json!({"content": "  why?  "}),
        )
        .await;
    assert_eq!(asked.status, StatusCode::SERVICE_UNAVAILABLE);
    let history = alice.get(&format!("/api/ai/chats/{ai}/messages/")).await;
    assert_eq!(history.body[0]["content"], "why?");

    // Whitespace only is blank, on every stripped field.
    for (path, field) in [
        ("/api/chats/".to_owned(), "name"),
        (format!("/api/chats/{chat}/send_message/"), "content"),
        ("/api/ai/chats/".to_owned(), "title"),
        (format!("/api/ai/chats/{ai}/send_message/"), "content"),
    ] {
        let response = alice.post(&path, &json!({ field: " \u{2003}\n" })).await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(response.body, json!({ field: [BLANK] }), "{path}");
    }
    let response = alice
        .patch(
            &format!("/api/ai/chats/{ai}/"),
            &json!({"system_prompt": "  "}),
        )
        .await;
    assert_eq!(response.body, json!({"system_prompt": [BLANK]}));
}

#[tokio::test]
async fn the_chat_socket_stores_text_as_sent_and_the_ai_socket_strips_it() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let chat = alice.create_chat("c", &[]).await;
    let mut socket = alice.ws(chat).await;
    socket.send_json(json!({"content": "  padded  "})).await;
    assert_eq!(socket.next_message().await["content"], "  padded  ");
    assert_eq!(alice.chat_messages(chat).await[0]["content"], "  padded  ");

    let ai = ai_chat(&alice, "t").await;
    let mut socket = alice.ai_ws(ai).await.unwrap();
    socket.send_json(json!({"content": "\t padded \n"})).await;
    let saved = socket.next_of("user_message").await;
    assert_eq!(saved["message"]["content"], "padded");
    let history = alice.get(&format!("/api/ai/chats/{ai}/messages/")).await;
    assert_eq!(history.body[0]["content"], "padded");
}

#[tokio::test]
async fn ai_chat_updates_answer_with_the_whole_chat_as_get_does() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let group = alice.create_chat("Group", &[]).await;
    let ai = ai_chat(&alice, "First").await;
    let path = format!("/api/ai/chats/{ai}/");

    let put = alice
        .put(
            &path,
            &json!({"title": "Second", "system_prompt": "Short answers.", "related_chat": group}),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    assert_eq!(put.body, alice.get(&path).await.body);
    assert_eq!(put.body["title"], "Second");
    assert_eq!(put.body["related_chat_name"], "Group");
    assert_eq!(put.body["user_username"], "alice");
    assert_eq!(put.body["messages"], json!([]));

    let patch = alice.patch(&path, &json!({"title": "Third"})).await;
    assert_eq!(patch.status, StatusCode::OK, "{}", patch.body);
    assert_eq!(patch.body, alice.get(&path).await.body);
    assert_eq!(patch.body["title"], "Third");
    assert_eq!(patch.body["system_prompt"], "Short answers.");
    assert_eq!(patch.body["message_count"], 0);
}

#[tokio::test]
async fn nul_in_a_name_looked_up_finds_no_one() {
    let app = TestApp::spawn().await;
    app.register("alice").await;
    let anonymous = app.client();
    let invalid = json!({"error": "Invalid credentials"});
    for (username, password) in [("alice\u{0}", PASSWORD), ("alice", "correct\u{0}horse")] {
        let body = json!({"username": username, "password": password});
        let login = anonymous.post("/api/login/", &body).await;
        assert_eq!(login.status, StatusCode::UNAUTHORIZED, "{}", login.body);
        assert_eq!(login.body, invalid);
        let token = anonymous.post("/api/tokens/", &body).await;
        assert_eq!(token.status, StatusCode::UNAUTHORIZED, "{}", token.body);
        assert_eq!(token.body, invalid);
    }
    // The same through a form body.
    let login = post_raw(
        &anonymous,
        "/api/login/",
        "application/x-www-form-urlencoded",
        form(&[("username", "al\u{0}ice"), ("password", PASSWORD)]),
    )
    .await;
    assert_eq!(login.status, StatusCode::UNAUTHORIZED);
    assert_eq!(login.body, invalid);
}

#[tokio::test]
async fn nul_in_a_stored_field_is_refused_with_its_own_reason() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let chat = alice.create_chat("c", &[]).await;
    let ai = ai_chat(&alice, "t").await;
    let anonymous = app.client();

    let register = |field: &str| {
        let mut body = json!({
            "username": "newbie", "email": "n@example.com",
            "password": PASSWORD, "password_confirm": PASSWORD,
        });
        body[field] = json!("x\u{0}y");
        body
    };
    let mut cases: Vec<(String, Value, &str)> = Vec::new();
    for field in ["username", "email", "password", "user_type"] {
        cases.push(("/api/register/".into(), register(field), field));
    }
    cases.extend([
        (
            "/api/tokens/".to_owned(),
            json!({"username": "alice", "password": PASSWORD, "name": "laptop\u{0}"}),
            "name",
        ),
        ("/api/chats/".into(), json!({"name": "a\u{0}"}), "name"),
        (
            "/api/chats/".into(),
            json!({"name": "n", "participant_usernames": ["bob\u{0}"]}),
            "participant_usernames",
        ),
        (
            format!("/api/chats/{chat}/participants/"),
            json!({"participant_usernames": ["\u{0}"]}),
            "participant_usernames",
        ),
        (
            format!("/api/chats/{chat}/send_message/"),
            json!({"content": "a\u{0}b"}),
            "content",
        ),
        ("/api/ai/chats/".into(), json!({"title": "\u{0}"}), "title"),
        (
            "/api/ai/chats/".into(),
            json!({"title": "t", "system_prompt": "p\u{0}"}),
            "system_prompt",
        ),
        (
            format!("/api/ai/chats/{ai}/send_message/"),
            json!({"content": "\u{0}"}),
            "content",
        ),
    ]);
    for (path, body, field) in cases {
        let client = if path.starts_with("/api/register") || path.starts_with("/api/tokens") {
            &anonymous
        } else {
            &alice
        };
        let response = client.post(&path, &body).await;
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{path} {field}: {}",
            response.body
        );
        assert_eq!(response.body, json!({ field: [NUL] }), "{path} {field}");
    }
    let renamed = alice
        .put(&format!("/api/chats/{chat}/"), &json!({"name": "\u{0}"}))
        .await;
    assert_eq!(renamed.body, json!({"name": [NUL]}));
    let updated = alice
        .patch(&format!("/api/ai/chats/{ai}/"), &json!({"title": "x\u{0}"}))
        .await;
    assert_eq!(updated.body, json!({"title": [NUL]}));

    // Sockets answer with the same reason, and stay open.
    let mut socket = alice.ws(chat).await;
    socket.send_json(json!({"content": "a\u{0}b"})).await;
    assert_eq!(
        socket.next_of("error").await,
        json!({"type": "error", "message": NUL})
    );
    socket.send_json(json!({"content": "fine"})).await;
    assert_eq!(socket.next_message().await["content"], "fine");
    let mut socket = alice.ai_ws(ai).await.unwrap();
    socket.send_json(json!({"content": "a\u{0}b"})).await;
    assert_eq!(
        socket.next_of("error").await,
        json!({"type": "error", "message": NUL})
    );

    assert_eq!(
        alice.chat_messages(chat).await.as_array().unwrap().len(),
        1,
        "only the good message was saved"
    );
    let history = alice.get(&format!("/api/ai/chats/{ai}/messages/")).await;
    assert_eq!(history.body, json!([]));
}

#[tokio::test]
async fn a_look_alike_username_is_the_account_it_imitates() {
    let app = TestApp::spawn().await;
    app.register("alice").await;
    let bob = app.user("bob").await;

    let response = app
        .client()
        .post(
            "/api/register/",
            &json!({"username": "ａｌｉｃｅ", "password": PASSWORD, "password_confirm": PASSWORD}),
        )
        .await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        response.body,
        json!({"username": ["A user with that username already exists."]})
    );

    let client = app.client();
    let login = client.login("ａｌｉｃｅ", PASSWORD).await;
    assert_eq!(login.body["username"], "alice");
    let token = app
        .client()
        .post(
            "/api/tokens/",
            &json!({"username": "ａｌｉｃｅ", "password": PASSWORD}),
        )
        .await;
    assert_eq!(token.status, StatusCode::CREATED, "{}", token.body);
    assert_eq!(token.body["user"]["username"], "alice");

    // A new name is stored in its NFKC form.
    let carol = app.register("ｃａｒｏｌ").await;
    assert_eq!(carol["username"], "carol");

    // Members named by look-alikes are the accounts they imitate.
    let created = bob
        .post(
            "/api/chats/",
            &json!({"name": "n", "participant_usernames": ["ａｌｉｃｅ", " ｃａｒｏｌ "]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let mut names = crate::helpers::usernames(&created.body["participants"]);
    names.sort();
    assert_eq!(names, ["alice", "bob", "carol"]);
}

/// The longest message in emoji, sent raw, as JSON escapes and as a form, is accepted on REST;
/// one character more is refused on each.
#[tokio::test]
async fn message_limits_count_characters_on_rest_in_every_encoding() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let chat = alice.create_chat("c", &[]).await;
    let ai = ai_chat(&alice, "t").await;
    let too_long = json!({"content": ["Ensure this field has no more than 10000 characters."]});

    for path in [
        format!("/api/chats/{chat}/send_message/"),
        format!("/api/ai/chats/{ai}/send_message/"),
    ] {
        for count in [MAX_MESSAGE, MAX_MESSAGE + 1] {
            let content = EMOJI.repeat(count);
            let body = json!({ "content": content });
            let encodings = [
                ("application/json", body.to_string()),
                ("application/json", escaped_json(&body)),
                (
                    "application/x-www-form-urlencoded",
                    form(&[("content", &content)]),
                ),
            ];
            for (content_type, text) in encodings {
                let response = post_raw(&alice, &path, content_type, text).await;
                if count == MAX_MESSAGE {
                    // The AI chat has no provider: the question is kept, and 503 says so.
                    assert!(
                        matches!(
                            response.status,
                            StatusCode::CREATED | StatusCode::SERVICE_UNAVAILABLE
                        ),
                        "{path} {content_type}: {}",
                        response.status
                    );
                } else {
                    assert_eq!(response.status, StatusCode::BAD_REQUEST, "{path}");
                    assert_eq!(response.body, too_long, "{path} {content_type}");
                }
            }
        }
    }
    // Each stored message kept every character.
    let stored = alice.chat_messages(chat).await;
    assert_eq!(stored.as_array().unwrap().len(), 3);
    for message in stored.as_array().unwrap() {
        assert_eq!(
            message["content"].as_str().unwrap().chars().count(),
            MAX_MESSAGE
        );
    }

    // Names are counted the same way: 255 emoji are a name, 256 are not.
    let name = post_raw(
        &alice,
        "/api/chats/",
        "application/json",
        escaped_json(&json!({"name": EMOJI.repeat(255)})),
    )
    .await;
    assert_eq!(name.status, StatusCode::CREATED, "{}", name.body);
    let name = alice
        .post("/api/chats/", &json!({"name": EMOJI.repeat(256)}))
        .await;
    assert_eq!(
        name.body,
        json!({"name": ["Ensure this field has no more than 255 characters."]})
    );
}

/// A socket frame asking to send `count` emoji: raw UTF-8 (4 bytes each) and as JSON escapes
/// (12 bytes each).
fn emoji_frames(count: usize) -> [String; 2] {
    let frame = json!({ "content": EMOJI.repeat(count) });
    [frame.to_string(), escaped_json(&frame)]
}

fn chars(text: &Value) -> usize {
    text.as_str().expect("a string").chars().count()
}

/// The same limit over both sockets, whether the emoji come raw or as JSON escapes.
#[tokio::test]
async fn message_limits_count_characters_on_sockets_in_every_encoding() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let chat = alice.create_chat("c", &[]).await;
    let mut socket = alice.ws(chat).await;
    for text in emoji_frames(MAX_MESSAGE) {
        socket.send_text(text).await;
        assert_eq!(chars(&socket.next_message().await["content"]), MAX_MESSAGE);
    }
    for text in emoji_frames(MAX_MESSAGE + 1) {
        socket.send_text(text).await;
        let error = socket.next_of("error").await;
        assert_eq!(
            error["message"],
            "Content is too long (at most 10000 characters)"
        );
    }

    let ai = ai_chat(&alice, "t").await;
    let mut socket = alice.ai_ws(ai).await.unwrap();
    for text in emoji_frames(MAX_MESSAGE) {
        socket.send_text(text).await;
        let saved = socket.next_of("user_message").await;
        assert_eq!(chars(&saved["message"]["content"]), MAX_MESSAGE);
        // No provider is configured; the question was kept all the same.
        socket.next_of("error").await;
    }
    for text in emoji_frames(MAX_MESSAGE + 1) {
        socket.send_text(text).await;
        let error = socket.next_of("error").await;
        assert_eq!(
            error["message"],
            "Message content is too long (at most 10000 characters)"
        );
    }
}

#[tokio::test]
async fn a_token_name_is_measured_once_stripped() {
    let app = TestApp::spawn().await;
    app.register("alice").await;
    let padded = format!("   {}   ", EMOJI.repeat(100));
    let response = app
        .client()
        .post(
            "/api/tokens/",
            &json!({"username": "alice", "password": PASSWORD, "name": padded}),
        )
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
    let response = app
        .client()
        .post(
            "/api/tokens/",
            &json!({"username": "alice", "password": PASSWORD, "name": EMOJI.repeat(101)}),
        )
        .await;
    assert_eq!(
        response.body,
        json!({"name": ["Ensure this field has no more than 100 characters."]})
    );
}

#[tokio::test]
async fn accounts_stored_before_normalization_are_normalized_at_start_up() {
    let app = TestApp::spawn().await;
    app.register("alice").await;
    let db = &app.state.db;
    let hash = mrm_chat::store::users::credentials(db, "alice")
        .await
        .unwrap()
        .unwrap()
        .password_hash;
    // As a server that did not normalize usernames stored it: in fullwidth letters.
    let older = mrm_chat::store::users::NewUser {
        username: "ｆｕｌｌ",
        email: "",
        password_hash: &hash,
        user_type: mrm_chat::domain::UserType::Student,
        is_staff: false,
        is_superuser: false,
    };
    mrm_chat::store::users::create(db, &older).await.unwrap();
    // A look-alike of an account that exists: its normalized form is taken.
    let twin = mrm_chat::store::users::NewUser {
        username: "ａｌｉｃｅ",
        ..older
    };
    mrm_chat::store::users::create(db, &twin).await.unwrap();
    // What start-up does before the server listens.
    let outcome = mrm_chat::service::accounts::normalize_stored_usernames(db)
        .await
        .unwrap();
    assert_eq!(outcome.renamed, 1);
    assert_eq!(outcome.kept, vec!["ａｌｉｃｅ".to_owned()]);

    // Found by its normalized name on every path now, whichever form is typed.
    let full = app.client().login("full", PASSWORD).await;
    assert_eq!(full.status, StatusCode::OK, "{}", full.body);
    assert_eq!(full.body["username"], "full");
    let typed = app.client().login("ｆｕｌｌ", PASSWORD).await;
    assert_eq!(typed.body["username"], "full");
    let alice = app.user("bob").await;
    let chat = alice
        .post(
            "/api/chats/",
            &json!({"name": "c", "participant_usernames": ["full"]}),
        )
        .await;
    assert_eq!(chat.status, StatusCode::CREATED, "{}", chat.body);
    assert!(usernames(&chat.body["participants"]).contains(&"full".to_owned()));
    // The twin keeps its spelling; the look-alike spelling names the account it imitates.
    let twin = app.client().login("ａｌｉｃｅ", PASSWORD).await;
    assert_eq!(twin.body["username"], "alice");
    assert_eq!(
        mrm_chat::service::accounts::normalize_stored_usernames(db)
            .await
            .unwrap()
            .renamed,
        0,
        "a second run has nothing to do"
    );
}
