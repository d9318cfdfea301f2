//! The administration area at `/admin/`: server-rendered pages for staff, driven like a browser
//! drives them (form posts with the CSRF field, redirects read rather than followed).

use std::sync::Arc;

use mrm_chat::{
    domain::UserType,
    store::{self, users::NewUser},
};
use reqwest::{cookie::CookieStore, StatusCode};
use serde_json::json;

use crate::{
    fake_openai::{reply, slow, FakeOpenAi, MODEL},
    helpers::{execute, id, Client, TestApp, PASSWORD},
};

/// A browser on the admin pages: keeps cookies, does not follow redirects, reads HTML.
struct Browser {
    base: String,
    jar: Arc<reqwest::cookie::Jar>,
    http: reqwest::Client,
}

#[derive(Debug)]
struct Page {
    status: StatusCode,
    location: Option<String>,
    headers: reqwest::header::HeaderMap,
    html: String,
}

impl Page {
    fn assert_ok(&self) -> &Self {
        assert_eq!(self.status, StatusCode::OK, "{}", self.html);
        self
    }

    fn has(&self, text: &str) -> bool {
        self.html.contains(text)
    }

    fn count(&self, text: &str) -> usize {
        self.html.matches(text).count()
    }

    /// The 303 target.
    fn redirect(&self) -> &str {
        assert_eq!(self.status, StatusCode::SEE_OTHER, "{}", self.html);
        self.location.as_deref().expect("a Location header")
    }
}

impl Browser {
    fn new(app: &TestApp) -> Browser {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let http = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Browser {
            base: format!("http://{}", app.addr),
            jar,
            http,
        }
    }

    /// A browser signed in to the admin as `username` (who must be staff).
    async fn staff(app: &TestApp, username: &str) -> Browser {
        let browser = Browser::new(app);
        let page = browser.login(username, PASSWORD).await;
        assert_eq!(page.redirect(), "/admin/");
        browser
    }

    fn cookie(&self, name: &str) -> Option<String> {
        let header = self.jar.cookies(&self.base.parse().unwrap())?;
        header.to_str().ok()?.split("; ").find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
    }

    /// The session's CSRF token, which every admin form posts back.
    fn csrf(&self) -> String {
        self.cookie("csrftoken").expect("a csrftoken cookie")
    }

    async fn read(&self, request: reqwest::RequestBuilder) -> Page {
        let response = request.send().await.expect("request reaches the server");
        let status = response.status();
        let headers = response.headers().clone();
        let location = headers
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        let html = response.text().await.unwrap();
        Page {
            status,
            location,
            headers,
            html,
        }
    }

    async fn get(&self, path: &str) -> Page {
        self.read(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// Posts the fields as a form, exactly as given (no CSRF field is added).
    async fn post_raw(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.read(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body),
        )
        .await
    }

    /// Posts a form with the session's CSRF token, as the admin's pages do.
    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let token = self.csrf();
        let mut all = vec![("csrfmiddlewaretoken", token.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, &all).await
    }

    async fn login(&self, username: &str, password: &str) -> Page {
        self.post_raw(
            "/admin/login/",
            &[("username", username), ("password", password)],
        )
        .await
    }
}

/// Marks a user as a staff superuser, as `createsuperuser` makes them.
async fn make_superuser(app: &TestApp, username: &str) {
    let sql = "UPDATE users SET is_staff = TRUE, is_superuser = TRUE WHERE username = $1";
    execute(&app.db, sql, username).await;
}

async fn deactivate(app: &TestApp, username: &str) {
    execute(
        &app.db,
        "UPDATE users SET is_active = FALSE WHERE username = $1",
        username,
    )
    .await;
}

/// A registered superuser with a signed-in admin browser.
async fn superuser(app: &TestApp, username: &str) -> Browser {
    app.register(username).await;
    make_superuser(app, username).await;
    Browser::staff(app, username).await
}

/// Creates a user straight in the database (fast: no password hashing); returns its id.
async fn quick_user(app: &TestApp, username: &str, user_type: &str) -> i64 {
    let new = NewUser {
        username,
        email: &format!("{username}@example.com"),
        password_hash: "not-a-hash",
        user_type: UserType::parse(user_type).expect("a user type"),
        is_staff: false,
        is_superuser: false,
    };
    store::users::create(&app.db, &new).await.unwrap().id
}

async fn user_id(app: &TestApp, username: &str) -> i64 {
    let found = store::users::by_usernames(&app.db, &[username.to_owned()])
        .await
        .unwrap();
    found.first().map(|u| u.id).expect("the user exists")
}

async fn user(app: &TestApp, username: &str) -> store::users::User {
    let id = user_id(app, username).await;
    store::users::by_id(&app.db, id).await.unwrap().unwrap()
}

#[tokio::test]
async fn anonymous_visitors_are_sent_to_the_login_page() {
    let app = TestApp::spawn().await;
    let browser = Browser::new(&app);
    assert_eq!(browser.get("/admin/").await.redirect(), "/admin/login/");
    assert_eq!(browser.get("/admin").await.redirect(), "/admin/login/");
    assert_eq!(
        browser.get("/admin/users/?q=a&page=2").await.redirect(),
        "/admin/login/?next=%2Fadmin%2Fusers%2F%3Fq%3Da%26page%3D2"
    );
    for path in [
        "/admin/chats/",
        "/admin/messages/",
        "/admin/ai/chats/",
        "/admin/ai/messages/",
        "/admin/ai/usage/",
        "/admin/users/1/",
        "/admin/no-such-page/",
    ] {
        let page = browser.get(path).await;
        assert!(
            page.redirect().starts_with("/admin/login/?next="),
            "{path}: {page:?}"
        );
    }
    // A form posted without a session is not replayed after login.
    let page = browser.post_raw("/admin/users/1/delete/", &[]).await;
    assert_eq!(page.redirect(), "/admin/login/");

    let page = browser.get("/admin/login/").await;
    page.assert_ok();
    assert!(page.has(r#"name="username""#) && page.has(r#"name="password""#));
    assert!(page.has(r#"<link rel="stylesheet" href="/static/admin/admin.css">"#));
    assert!(!page.has("Log out"), "no navigation before login");
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.headers["x-frame-options"], "DENY");
    assert_eq!(page.headers["cache-control"], "no-store");
    assert!(page.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));

    let css = browser.get("/static/admin/admin.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.html.contains(".site-header"));
}

#[tokio::test]
async fn login_needs_the_right_password_and_a_staff_account() {
    let app = TestApp::spawn().await;
    app.register("boss").await;
    app.make_staff("boss").await;
    app.register("alice").await;

    let browser = Browser::new(&app);
    let page = browser.login("boss", "wrong-password").await;
    page.assert_ok();
    assert!(page.has("Please enter the correct username and password"));
    assert!(page.has(r#"value="boss""#), "the username is kept");
    assert!(browser.cookie("sessionid").is_none());
    let page = browser.login("nobody", PASSWORD).await;
    assert!(page.has("Please enter the correct username and password"));
    let page = browser.post_raw("/admin/login/", &[]).await;
    assert!(page.has("Please enter the correct username and password"));

    let page = browser.login("alice", PASSWORD).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.has("The account alice has no access to the administration area"));
    assert!(browser.cookie("sessionid").is_none());

    // A user signed in through the API is refused by the admin pages.
    let alice = app.client();
    alice.login("alice", PASSWORD).await;
    let page = Browser::with_cookies_of(&app, &alice).get("/admin/").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.has("You are signed in as alice, which has no access"));
    let page = Browser::with_cookies_of(&app, &alice)
        .get("/admin/login/")
        .await;
    page.assert_ok();
    assert!(page.has("You are signed in as alice, which has no access"));

    // Staff sign in and land where they were going, but only within the admin.
    let page = browser
        .post_raw(
            "/admin/login/",
            &[
                ("username", "boss"),
                ("password", PASSWORD),
                ("next", "/admin/chats/?q=x"),
            ],
        )
        .await;
    assert_eq!(page.redirect(), "/admin/chats/?q=x");
    let cookies: Vec<_> = page.headers.get_all("set-cookie").iter().collect();
    assert!(cookies
        .iter()
        .any(|c| c.to_str().unwrap().starts_with("sessionid=")));
    assert_eq!(browser.get("/admin/").await.status, StatusCode::OK);
    assert_eq!(browser.get("/admin/login/").await.redirect(), "/admin/");
    let other = Browser::new(&app);
    let page = other
        .post_raw(
            "/admin/login/",
            &[
                ("username", "boss"),
                ("password", PASSWORD),
                ("next", "https://evil.example/"),
            ],
        )
        .await;
    assert_eq!(page.redirect(), "/admin/");
    let page = other.get("/admin/login/?next=//evil.example/").await;
    assert_eq!(page.redirect(), "/admin/");

    // The admin session is an ordinary session: the API knows it too.
    let api = Client::new(app.addr);
    api.set_cookie("sessionid", &browser.cookie("sessionid").unwrap());
    assert_eq!(api.me().await["username"], "boss");

    let page = browser.get("/admin/logout/").await;
    page.assert_ok();
    assert!(page.has(r#"<form method="post" action="/admin/logout/">"#));
    assert!(
        browser.cookie("sessionid").is_some(),
        "a GET does not log out"
    );
    let page = browser.post("/admin/logout/", &[]).await;
    assert_eq!(page.redirect(), "/admin/login/?done=logged_out");
    assert!(browser.cookie("sessionid").is_none());
    assert_eq!(browser.get("/admin/").await.redirect(), "/admin/login/");
    assert_eq!(api.get("/api/me/").await.status, StatusCode::FORBIDDEN);
    let page = browser.get("/admin/login/?done=logged_out").await;
    assert!(page.has("You are logged out."));
}

impl Browser {
    /// A browser holding the session of an API client.
    fn with_cookies_of(app: &TestApp, client: &Client) -> Browser {
        let browser = Browser::new(app);
        let url = browser.base.parse().unwrap();
        for name in ["sessionid", "csrftoken"] {
            if let Some(value) = client.cookie(name) {
                browser
                    .jar
                    .add_cookie_str(&format!("{name}={value}; Path=/"), &url);
            }
        }
        browser
    }
}

#[tokio::test]
async fn the_dashboard_counts_everything() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |_| {}).await;
    let admin = superuser(&app, "root").await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let chat = alice.create_chat("c", &[id(&bob.me().await)]).await;
    alice.create_chat("d", &[]).await;
    for text in ["one", "two", "three"] {
        alice.send_message(chat, text).await;
    }
    let ai = alice
        .post("/api/ai/chats/", &json!({"title": "Homework"}))
        .await;
    fake.then(reply("an answer", 30, 12));
    let sent = alice
        .post(
            &format!("/api/ai/chats/{}/send_message/", id(&ai.body)),
            &json!({"content": "question"}),
        )
        .await;
    assert_eq!(sent.status, StatusCode::OK, "{:?}", sent.body);

    let page = admin.get("/admin/").await;
    page.assert_ok();
    for expected in [
        r#"<span class="figure">3</span> users"#,
        "(3 active, 1 staff)",
        r#"<span class="figure">2</span> chats"#,
        r#"<span class="figure">3</span> messages"#,
        r#"<span class="figure">1</span> AI chats"#,
        "(2 AI messages)",
        r#"<span class="figure">42</span> AI tokens used today"#,
    ] {
        assert!(page.has(expected), "{expected}\n{}", page.html);
    }
    for nav in [
        "Dashboard",
        "Users",
        "Chats",
        "Messages",
        "AI chats",
        "AI messages",
        "Usage",
        "Log out",
    ] {
        assert!(page.has(&format!(">{nav}<")), "{nav}");
    }
    assert!(page.has(r#"href="/admin/" aria-current="page""#));
    assert!(page.has("Signed in as <strong>root</strong>"));
    assert!(page.has("three"), "the latest messages are listed");
}

#[tokio::test]
async fn users_are_searched_and_filtered() {
    let app = TestApp::spawn().await;
    let admin = superuser(&app, "root").await;
    quick_user(&app, "alice", "student").await;
    quick_user(&app, "alfred", "owner").await;
    quick_user(&app, "bob", "staff").await;
    quick_user(&app, "carol", "student").await;
    app.make_staff("carol").await;
    deactivate(&app, "bob").await;

    let listed = |page: &Page, name: &str| page.has(&format!(">{name}</a></td>"));
    let page = admin.get("/admin/users/").await;
    page.assert_ok();
    for name in ["root", "alice", "alfred", "bob", "carol"] {
        assert!(listed(&page, name), "{name}");
    }
    let page = admin.get("/admin/users/?q=AL").await;
    assert!(listed(&page, "alice") && listed(&page, "alfred"));
    assert!(!listed(&page, "bob") && !listed(&page, "root"));
    assert!(page.has(r#"value="AL""#), "the search is kept in the form");
    let page = admin.get("/admin/users/?q=bob%40example").await;
    assert!(listed(&page, "bob") && !listed(&page, "alice"));
    // Wildcards are matched literally.
    let page = admin.get("/admin/users/?q=%25").await;
    assert!(page.has("No users match."));

    let page = admin.get("/admin/users/?user_type=owner").await;
    assert!(listed(&page, "alfred") && !listed(&page, "alice"));
    assert!(page.has(r#"<option value="owner" selected>"#));
    let page = admin.get("/admin/users/?staff=yes").await;
    assert!(listed(&page, "carol") && listed(&page, "root"));
    assert!(!listed(&page, "alice"));
    let page = admin.get("/admin/users/?staff=no&active=yes").await;
    assert!(listed(&page, "alice") && listed(&page, "alfred"));
    assert!(!listed(&page, "bob") && !listed(&page, "carol"));
    let page = admin.get("/admin/users/?active=no").await;
    assert!(listed(&page, "bob") && !listed(&page, "alice"));
    let page = admin.get("/admin/users/?q=al&user_type=student").await;
    assert!(listed(&page, "alice") && !listed(&page, "alfred"));
    // Unknown filter values mean "any".
    let page = admin
        .get("/admin/users/?user_type=wizard&staff=maybe")
        .await;
    assert!(listed(&page, "alice") && listed(&page, "bob"));
}

#[tokio::test]
async fn long_lists_are_paginated_keeping_their_filters() {
    let app = TestApp::spawn().await;
    let admin = superuser(&app, "root").await;
    for i in 0..120 {
        quick_user(&app, &format!("user{i:03}"), "student").await;
    }
    let rows = |page: &Page| page.count(r#"<td><a href="/admin/users/"#);

    let first = admin.get("/admin/users/").await;
    first.assert_ok();
    assert_eq!(rows(&first), 50);
    assert!(first.has("Showing 1–50 of 121. Page 1 of 3."));
    assert!(first.has(r#"<a href="/admin/users/?page=2" rel="next">Next</a>"#));
    assert!(!first.has(r#"rel="prev""#));
    let third = admin.get("/admin/users/?page=3").await;
    third.assert_ok();
    assert_eq!(rows(&third), 21);
    assert!(third.has("Showing 101–121 of 121. Page 3 of 3."));
    assert!(third.has(r#"<a href="/admin/users/?page=2" rel="prev">Previous</a>"#));
    assert!(third.has(r#"<a href="/admin/users/" rel="first">First</a>"#));
    assert!(!third.has(r#"rel="next""#));
    assert_eq!(
        admin.get("/admin/users/?page=4").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        admin.get("/admin/users/?page=zero").await.status,
        StatusCode::NOT_FOUND
    );

    // The search travels with the page links.
    let page = admin.get("/admin/users/?q=user&active=yes&page=2").await;
    page.assert_ok();
    assert_eq!(rows(&page), 50);
    assert!(page.has("Showing 51–100 of 120. Page 2 of 3."));
    assert!(page.has(r#"href="/admin/users/?q=user&#38;active=yes&#38;page=3" rel="next""#));
    assert!(page.has(r#"href="/admin/users/?q=user&#38;active=yes" rel="prev""#));
    let page = admin.get("/admin/users/?q=user&active=yes&page=3").await;
    assert_eq!(rows(&page), 20);
    assert!(page.has(">user119</a>"));
}

#[tokio::test]
async fn staff_create_users_who_can_then_log_in() {
    let app = TestApp::spawn().await;
    app.register("boss").await;
    app.make_staff("boss").await;
    let admin = Browser::staff(&app, "boss").await;
    let page = admin.get("/admin/users/add/").await;
    page.assert_ok();
    assert!(page.has(r#"name="csrfmiddlewaretoken""#));
    assert!(
        !page.has(r#"name="is_staff""#),
        "no privilege fields for non-superusers"
    );

    let page = admin
        .post(
            "/admin/users/add/",
            &[
                ("username", "bad name!"),
                ("email", "not-an-email"),
                ("password", "x"),
                ("password_confirm", "x"),
            ],
        )
        .await;
    page.assert_ok();
    assert!(page.has("Please correct the errors below."));
    assert!(page.has("Enter a valid email address."));
    assert!(page.has(r#"id="username-errors""#));
    assert!(page.has(r#"aria-invalid="true" aria-describedby="email-errors""#));
    let page = admin
        .post(
            "/admin/users/add/",
            &[
                ("username", "newbie"),
                ("password", "a-long-passphrase"),
                ("password_confirm", "another-passphrase"),
            ],
        )
        .await;
    assert!(page.has("Passwords don&#39;t match."));
    let page = admin
        .post(
            "/admin/users/add/",
            &[
                ("username", "newbie"),
                ("password", "password"),
                ("password_confirm", "password"),
            ],
        )
        .await;
    assert!(page.has("This password is too common."), "{}", page.html);
    let page = admin
        .post(
            "/admin/users/add/",
            &[
                ("username", "boss"),
                ("password", "a-long-passphrase"),
                ("password_confirm", "a-long-passphrase"),
            ],
        )
        .await;
    assert!(page.has("A user with that username already exists."));
    let page = admin
        .post(
            "/admin/users/add/",
            &[
                ("username", "sneaky"),
                ("password", "a-long-passphrase"),
                ("password_confirm", "a-long-passphrase"),
                ("is_staff", "true"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.has("Only superusers can grant or revoke staff or superuser status."));
    assert!(store::users::by_usernames(&app.db, &["sneaky".into()])
        .await
        .unwrap()
        .is_empty());

    let page = admin
        .post(
            "/admin/users/add/",
            &[
                ("username", "newbie"),
                ("email", "newbie@example.com"),
                ("user_type", "owner"),
                ("password", "a-long-passphrase"),
                ("password_confirm", "a-long-passphrase"),
            ],
        )
        .await;
    let newbie = user(&app, "newbie").await;
    assert_eq!(
        page.redirect(),
        format!("/admin/users/{}/?done=created", newbie.id)
    );
    assert_eq!(newbie.user_type, UserType::Owner);
    assert!(!newbie.is_staff);
    let page = admin.get(page.redirect()).await;
    assert!(page.has("The user was created."));
    let client = app.client();
    let me = client.login("newbie", "a-long-passphrase").await.body;
    assert_eq!(me["email"], "newbie@example.com");

    // A superuser may create staff.
    let root = superuser(&app, "root").await;
    assert!(root
        .get("/admin/users/add/")
        .await
        .has(r#"name="is_staff""#));
    let page = root
        .post(
            "/admin/users/add/",
            &[
                ("username", "helper"),
                ("password", "a-long-passphrase"),
                ("password_confirm", "a-long-passphrase"),
                ("is_staff", "false"),
                ("is_staff", "true"),
                ("is_superuser", "false"),
            ],
        )
        .await;
    assert!(page.redirect().ends_with("/?done=created"));
    let helper = user(&app, "helper").await;
    assert!(helper.is_staff && !helper.is_superuser);
    let page = Browser::new(&app)
        .login("helper", "a-long-passphrase")
        .await;
    assert_eq!(page.redirect(), "/admin/");
}

#[tokio::test]
async fn staff_edit_users_and_set_passwords() {
    let app = TestApp::spawn().await;
    app.register("boss").await;
    app.make_staff("boss").await;
    let admin = Browser::staff(&app, "boss").await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let bob_id = id(&bob.me().await);
    let chat = alice.create_chat("c", &[bob_id]).await;
    let path = format!("/admin/users/{bob_id}/");

    let page = admin.get(&path).await;
    page.assert_ok();
    assert!(page.has(r#"value="bob@example.com""#));
    assert!(page.has(&format!(r#"href="/admin/users/{bob_id}/password/""#)));

    let page = admin
        .post(
            &path,
            &[
                ("first_name", "Robert"),
                ("last_name", "Tables"),
                ("email", "nope"),
                ("user_type", "wizard"),
            ],
        )
        .await;
    page.assert_ok();
    assert!(page.has("Enter a valid email address."));
    assert!(page.has("&#34;wizard&#34; is not a valid choice."));
    assert!(page.has(r#"value="Robert""#), "submitted values are kept");
    assert_eq!(user(&app, "bob").await.first_name, "");

    let page = admin
        .post(
            &path,
            &[
                ("first_name", " Robert "),
                ("last_name", "Tables"),
                ("email", "robert@example.com"),
                ("user_type", "owner"),
                ("is_active", "false"),
                ("is_active", "true"),
            ],
        )
        .await;
    assert_eq!(page.redirect(), format!("{path}?done=saved"));
    let saved = user(&app, "bob").await;
    assert_eq!(
        (
            saved.first_name.as_str(),
            saved.last_name.as_str(),
            saved.email.as_str(),
            saved.user_type.as_str()
        ),
        ("Robert", "Tables", "robert@example.com", "owner")
    );
    assert!(saved.is_active && !saved.is_staff);
    assert!(admin
        .get(&format!("{path}?done=saved"))
        .await
        .has("The changes were saved."));

    // A new password works at once and ends the user's other sessions.
    let password_path = format!("{path}password/");
    admin.get(&password_path).await.assert_ok();
    let page = admin
        .post(
            &password_path,
            &[("password", "short"), ("password_confirm", "short")],
        )
        .await;
    page.assert_ok();
    assert!(page.has("This password is too short."), "{}", page.html);
    let page = admin
        .post(
            &password_path,
            &[
                ("password", "a-new-passphrase"),
                ("password_confirm", "something-else"),
            ],
        )
        .await;
    assert!(page.has(r#"id="password_confirm-errors""#));
    let page = admin
        .post(
            &password_path,
            &[
                ("password", "a-new-passphrase"),
                ("password_confirm", "a-new-passphrase"),
            ],
        )
        .await;
    assert_eq!(page.redirect(), format!("{path}?done=password"));
    assert_eq!(bob.get("/api/me/").await.status, StatusCode::FORBIDDEN);
    let response = app
        .client()
        .post(
            "/api/login/",
            &json!({"username": "bob", "password": PASSWORD}),
        )
        .await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    let bob = app.client();
    bob.login("bob", "a-new-passphrase").await;

    // Deactivating closes the user's sockets and sessions.
    let mut socket = bob.ws(chat).await;
    let page = admin
        .post(
            &path,
            &[
                ("first_name", "Robert"),
                ("email", "robert@example.com"),
                ("user_type", "owner"),
                ("is_active", "false"),
            ],
        )
        .await;
    assert_eq!(page.redirect(), format!("{path}?done=saved"));
    assert_eq!(socket.closed().await, Some(4001));
    assert_eq!(bob.get("/api/me/").await.status, StatusCode::FORBIDDEN);
    assert!(!user(&app, "bob").await.is_active);

    // Staff may not lock themselves out.
    let boss_id = user_id(&app, "boss").await;
    let page = admin
        .post(
            &format!("/admin/users/{boss_id}/"),
            &[("user_type", "student"), ("is_active", "false")],
        )
        .await;
    assert!(page.has("You cannot deactivate your own account."));
    assert!(user(&app, "boss").await.is_active);

    // Changing one's own password keeps this session and ends the others.
    let elsewhere = app.client();
    elsewhere.login("boss", PASSWORD).await;
    let page = admin
        .post(
            &format!("/admin/users/{boss_id}/password/"),
            &[
                ("password", "the-boss-passphrase"),
                ("password_confirm", "the-boss-passphrase"),
            ],
        )
        .await;
    assert!(page.redirect().ends_with("?done=password"));
    assert_eq!(admin.get("/admin/").await.status, StatusCode::OK);
    assert_eq!(
        elsewhere.get("/api/me/").await.status,
        StatusCode::FORBIDDEN
    );
    app.client().login("boss", "the-boss-passphrase").await;
}

#[tokio::test]
async fn only_superusers_grant_staff_rights_or_touch_staff_accounts() {
    let app = TestApp::spawn().await;
    app.register("boss").await;
    app.make_staff("boss").await;
    let staff = Browser::staff(&app, "boss").await;
    let root = superuser(&app, "root").await;
    let bob_id = quick_user(&app, "bob", "student").await;
    let bob_path = format!("/admin/users/{bob_id}/");

    let page = staff.get(&bob_path).await;
    assert!(!page.has(r#"name="is_staff""#));
    assert!(page.has("Only superusers can grant or revoke staff or superuser status."));
    for field in ["is_staff", "is_superuser"] {
        let page = staff
            .post(
                &bob_path,
                &[("user_type", "student"), ("email", ""), (field, "on")],
            )
            .await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{field}");
        assert!(page.has("Only superusers can grant or revoke staff or superuser status."));
        let bob = user(&app, "bob").await;
        assert!(!bob.is_staff && !bob.is_superuser, "{field}");
    }
    // The other fields are theirs to change; unchanged flags may be sent back as they are.
    let page = staff
        .post(
            &bob_path,
            &[
                ("first_name", "Bob"),
                ("user_type", "student"),
                ("is_staff", "false"),
                ("is_superuser", "false"),
            ],
        )
        .await;
    assert_eq!(page.redirect(), format!("{bob_path}?done=saved"));
    assert_eq!(user(&app, "bob").await.first_name, "Bob");

    // Nor may they change a superuser's account in any way.
    let root_id = user_id(&app, "root").await;
    let root_path = format!("/admin/users/{root_id}/");
    let page = staff.get(&root_path).await;
    page.assert_ok();
    assert!(page.has("Only superusers can change the accounts of other staff members."));
    assert!(!page.has(&format!(r#"action="{root_path}""#)));
    for (path, fields) in [
        (root_path.clone(), vec![("user_type", "student")]),
        (
            format!("{root_path}password/"),
            vec![
                ("password", "a-takeover-passphrase"),
                ("password_confirm", "a-takeover-passphrase"),
            ],
        ),
        (format!("{root_path}delete/"), vec![]),
    ] {
        let page = staff.post(&path, &fields).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(
        staff.get(&format!("{root_path}password/")).await.status,
        StatusCode::FORBIDDEN
    );
    Browser::staff(&app, "root").await;

    // A superuser grants and revokes.
    let page = root
        .post(
            &bob_path,
            &[
                ("user_type", "student"),
                ("is_staff", "false"),
                ("is_staff", "true"),
            ],
        )
        .await;
    assert_eq!(page.redirect(), format!("{bob_path}?done=saved"));
    assert!(user(&app, "bob").await.is_staff);
    let page = root
        .post(
            &bob_path,
            &[("user_type", "student"), ("is_staff", "false")],
        )
        .await;
    assert_eq!(page.redirect(), format!("{bob_path}?done=saved"));
    assert!(!user(&app, "bob").await.is_staff);
    let page = root
        .post(
            &root_path,
            &[("user_type", "student"), ("is_superuser", "false")],
        )
        .await;
    assert!(page.has("You cannot change your own staff or superuser status."));
    assert!(user(&app, "root").await.is_superuser);
}

#[tokio::test]
async fn deleting_a_user_asks_first_and_closes_their_sockets() {
    let app = TestApp::spawn().await;
    let admin = superuser(&app, "root").await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let bob_id = id(&bob.me().await);
    let chat = alice.create_chat("c", &[bob_id]).await;
    bob.send_message(chat, "bye").await;
    let mut bob_socket = bob.ws(chat).await;
    let path = format!("/admin/users/{bob_id}/delete/");

    let page = admin.get(&path).await;
    page.assert_ok();
    assert!(page.has("Delete user bob?"));
    assert!(page.has("Yes, delete bob"));
    assert!(user(&app, "bob").await.is_active, "a GET changes nothing");

    let page = admin.post(&path, &[]).await;
    assert_eq!(page.redirect(), "/admin/users/?done=deleted");
    assert_eq!(bob_socket.closed().await, Some(4001));
    assert_eq!(
        admin.get(&format!("/admin/users/{bob_id}/")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(admin.post(&path, &[]).await.status, StatusCode::NOT_FOUND);
    assert_eq!(alice.chat_messages(chat).await, json!([]));
    let page = admin.get("/admin/users/?done=deleted").await;
    assert!(page.has("The item was deleted."));
    assert!(!page.has(">bob</a>"));

    let root_id = user_id(&app, "root").await;
    let page = admin
        .post(&format!("/admin/users/{root_id}/delete/"), &[])
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.has("You cannot delete your own account."));
}

#[tokio::test]
async fn chats_are_listed_renamed_managed_and_deleted() {
    let app = TestApp::spawn().await;
    let admin = superuser(&app, "root").await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    app.register("carol").await;
    app.register("dave").await;
    let alice_id = id(&alice.me().await);
    let bob_id = id(&bob.me().await);
    let chat = alice.create_chat("Project X", &[bob_id]).await;
    alice.create_chat("Lunch", &[]).await;

    let page = admin.get("/admin/chats/").await;
    page.assert_ok();
    assert!(page.has(">Project X</a>") && page.has(">Lunch</a>"));
    let page = admin.get("/admin/chats/?q=proj").await;
    assert!(page.has(">Project X</a>") && !page.has(">Lunch</a>"));

    let path = format!("/admin/chats/{chat}/");
    let page = admin.get(&path).await;
    page.assert_ok();
    assert!(page.has(&format!(
        r#"action="/admin/chats/{chat}/participants/{bob_id}/remove/""#
    )));
    assert!(
        !page.has(&format!("/participants/{alice_id}/remove/")),
        "the owner has no remove button"
    );

    let page = admin.post(&path, &[("name", "   ")]).await;
    page.assert_ok();
    assert!(page.has("This field may not be blank."));
    let long = "x".repeat(256);
    let page = admin.post(&path, &[("name", &long)]).await;
    assert!(page.has("Ensure this field has no more than 255 characters."));
    let page = admin.post(&path, &[("name", "Project Y")]).await;
    assert_eq!(page.redirect(), format!("{path}?done=renamed"));
    assert_eq!(
        alice.get(&format!("/api/chats/{chat}/")).await.body["name"],
        "Project Y"
    );

    let add = format!("{path}participants/");
    let page = admin.post(&add, &[("usernames", "carol, ghost")]).await;
    page.assert_ok();
    assert!(page.has("Unknown username(s): ghost"));
    assert!(page.has(r#"value="carol, ghost""#));
    let page = admin.post(&add, &[("usernames", "")]).await;
    assert!(page.has("Enter at least one username."));
    let page = admin.post(&add, &[("usernames", "carol dave,bob")]).await;
    assert_eq!(page.redirect(), format!("{path}?done=added"));
    let members = alice.get(&format!("/api/chats/{chat}/")).await.body["participants"].clone();
    assert_eq!(
        crate::helpers::usernames(&members),
        ["alice", "bob", "carol", "dave"]
    );

    // Removing a member closes their socket; the owner stays.
    let mut bob_socket = bob.ws(chat).await;
    let mut alice_socket = alice.ws(chat).await;
    let page = admin
        .post(&format!("{path}participants/{bob_id}/remove/"), &[])
        .await;
    assert_eq!(page.redirect(), format!("{path}?done=removed"));
    assert_eq!(bob_socket.closed().await, Some(4003));
    assert_eq!(
        bob.get(&format!("/api/chats/{chat}/")).await.status,
        StatusCode::NOT_FOUND
    );
    let page = admin
        .post(&format!("{path}participants/{bob_id}/remove/"), &[])
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let page = admin
        .post(&format!("{path}participants/{alice_id}/remove/"), &[])
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.has("The owner cannot be removed from the chat"));

    let page = admin.get(&format!("{path}delete/")).await;
    page.assert_ok();
    assert!(page.has("Delete chat Project Y?"));
    let page = admin.post(&format!("{path}delete/"), &[]).await;
    assert_eq!(page.redirect(), "/admin/chats/?done=deleted");
    assert_eq!(alice_socket.closed().await, Some(4004));
    assert_eq!(admin.get(&path).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        alice.get(&format!("/api/chats/{chat}/")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn messages_are_filtered_and_deleted_live() {
    let app = TestApp::spawn().await;
    let admin = superuser(&app, "root").await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let first = alice.create_chat("first", &[id(&bob.me().await)]).await;
    let second = alice.create_chat("second", &[]).await;
    let hello = alice.send_message(first, "hello from alice").await;
    bob.send_message(first, "hello from bob").await;
    alice.send_message(second, "elsewhere").await;

    let page = admin.get("/admin/messages/").await;
    page.assert_ok();
    let newest = page.html.find("elsewhere").unwrap();
    let oldest = page.html.find("hello from alice").unwrap();
    assert!(newest < oldest, "newest first");
    let page = admin.get(&format!("/admin/messages/?chat={first}")).await;
    assert!(page.has("hello from alice") && page.has("hello from bob"));
    assert!(!page.has("elsewhere"));
    assert!(page.has(&format!(r#"name="chat" id="id_chat" value="{first}""#)));
    let page = admin.get("/admin/messages/?sender=bob").await;
    assert!(page.has("hello from bob") && !page.has("hello from alice"));
    let page = admin
        .get(&format!("/admin/messages/?chat={first}&sender=alice"))
        .await;
    assert!(page.has("hello from alice") && !page.has("hello from bob"));
    assert!(!page.has("elsewhere"));
    let page = admin.get("/admin/messages/?q=ELSE").await;
    assert!(page.has("elsewhere") && !page.has("hello from"));
    let page = admin.get("/admin/messages/?chat=abc").await;
    page.assert_ok();
    assert!(page.has("The chat id must be a whole number."));
    assert!(page.has("No messages match."));

    let mut socket = bob.ws_v2(first).await;
    let hello_id = id(&hello);
    let path = format!("/admin/messages/{hello_id}/delete/");
    let page = admin.get(&path).await;
    page.assert_ok();
    assert!(page.has("hello from alice"));
    let page = admin.post(&path, &[]).await;
    assert_eq!(page.redirect(), "/admin/messages/?done=deleted");
    let frame = socket.next_of("message_deleted").await;
    // Two messages took positions 1 and 2; the deletion is the log's third entry.
    assert_eq!(
        frame,
        json!({"type": "message_deleted", "seq": 3, "id": hello_id, "chat": first})
    );
    let history = alice.chat_messages(first).await;
    assert_eq!(
        history.as_array().unwrap().len(),
        2,
        "a tombstone keeps its place"
    );
    assert_eq!(history[0]["id"], hello_id);
    assert_eq!(history[0]["deleted"], true);
    assert_eq!(history[0]["content"], "");
    assert_eq!(history[1]["content"], "hello from bob");
    assert_eq!(admin.get(&path).await.status, StatusCode::NOT_FOUND);
    assert_eq!(admin.post(&path, &[]).await.status, StatusCode::NOT_FOUND);
    // The socket stays open and keeps receiving messages.
    alice.send_message(first, "still here").await;
    assert_eq!(socket.next_message().await["content"], "still here");
}

#[tokio::test]
async fn a_message_page_shows_its_earlier_versions_until_it_is_deleted() {
    let app = TestApp::spawn().await;
    let admin = superuser(&app, "root").await;
    let alice = app.user("alice").await;
    let chat = alice.create_chat("c", &[]).await;
    let sent = alice.send_message(chat, "first words").await;
    let api_path = format!("/api/chats/{chat}/messages/{}/", id(&sent));
    alice
        .patch(&api_path, &json!({"content": "second words"}))
        .await;
    alice
        .patch(&api_path, &json!({"content": "third <words>"}))
        .await;

    let list = admin.get(&format!("/admin/messages/?chat={chat}")).await;
    let page_path = format!("/admin/messages/{}/", id(&sent));
    assert!(list.has(&format!(r#"href="{page_path}">(edited)"#)));
    let page = admin.get(&page_path).await;
    page.assert_ok();
    assert!(page.has("third &#60;words&#62;"), "escaped: {}", page.html);
    let first = page.html.find("first words").expect("the first version");
    let second = page.html.find("second words").expect("the second version");
    assert!(first < second, "oldest first");
    assert!(page.has("Last edited"));

    alice.delete(&api_path).await;
    let page = admin.get(&page_path).await;
    page.assert_ok();
    assert!(page.has("This message was deleted"));
    assert!(!page.has("first words") && !page.has("second words") && !page.has("third"));
    let list = admin.get(&format!("/admin/messages/?chat={chat}")).await;
    assert!(list.has("(deleted)"));
    assert!(!list.has(&format!("/admin/messages/{}/delete/", id(&sent))));
    assert_eq!(
        admin.get("/admin/messages/999999/").await.status,
        StatusCode::NOT_FOUND
    );
}

/// Askama escapes with numeric character references: `<` is `&#60;`, `>` `&#62;`, `"` `&#34;`,
/// `'` `&#39;` and `&` `&#38;`.
#[tokio::test]
async fn user_content_is_escaped_everywhere() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |_| {}).await;
    let admin = superuser(&app, "root").await;
    let alice = app.user("alice").await;
    let script = "<script>alert(1)</script>";
    let chat = alice.create_chat("<b>bold</b> chat", &[]).await;
    let message = alice.send_message(chat, script).await;
    let ai = alice
        .post(
            "/api/ai/chats/",
            &json!({"title": "<i>title</i>", "system_prompt": "<img src=x onerror=alert(2)>"}),
        )
        .await;
    let ai = id(&ai.body);
    fake.then(reply("<script>alert(3)</script>", 3, 4));
    let sent = alice
        .post(
            &format!("/api/ai/chats/{ai}/send_message/"),
            &json!({"content": script}),
        )
        .await;
    assert_eq!(sent.status, StatusCode::OK);
    let alice_id = id(&alice.me().await);
    let edit = admin
        .post(
            &format!("/admin/users/{alice_id}/"),
            &[
                ("first_name", "\"><svg onload=alert(4)>"),
                ("user_type", "student"),
            ],
        )
        .await;
    assert!(edit.redirect().ends_with("?done=saved"));

    for path in [
        "/admin/".to_owned(),
        "/admin/messages/".to_owned(),
        format!("/admin/messages/{}/delete/", id(&message)),
        "/admin/chats/".to_owned(),
        format!("/admin/chats/{chat}/"),
        "/admin/ai/chats/".to_owned(),
        format!("/admin/ai/chats/{ai}/"),
        "/admin/ai/messages/".to_owned(),
        "/admin/users/".to_owned(),
        format!("/admin/users/{alice_id}/"),
        "/admin/messages/?q=%3Cscript%3E".to_owned(),
    ] {
        let page = admin.get(&path).await;
        page.assert_ok();
        assert!(!page.has("<script"), "{path}: {}", page.html);
        for raw in ["<b>bold", "<i>title", "<img", "<svg"] {
            assert!(!page.has(raw), "{path}: {raw}");
        }
    }
    let page = admin.get("/admin/messages/").await;
    assert!(page.has("&#60;script&#62;alert(1)&#60;/script&#62;"));
    let page = admin.get(&format!("/admin/chats/{chat}/")).await;
    assert!(page.has("&#60;b&#62;bold&#60;/b&#62; chat"));
    let page = admin.get(&format!("/admin/ai/chats/{ai}/")).await;
    assert!(page.has("&#60;img src=x onerror=alert(2)&#62;"));
    assert!(page.has("&#60;script&#62;alert(3)&#60;/script&#62;"));
    let page = admin.get(&format!("/admin/users/{alice_id}/")).await;
    assert!(page.has("&#34;&#62;&#60;svg onload=alert(4)&#62;"));
    let page = admin.get("/admin/messages/?q=%22%3E%3Cscript%3E").await;
    assert!(page.has(r#"value="&#34;&#62;&#60;script&#62;""#));
}

#[tokio::test]
async fn forms_without_the_sessions_csrf_token_are_refused() {
    let app = TestApp::spawn().await;
    let admin = superuser(&app, "root").await;
    let other = superuser(&app, "root2").await;
    let bob_id = quick_user(&app, "bob", "student").await;
    let path = format!("/admin/users/{bob_id}/");
    let fields = [("first_name", "Forged"), ("user_type", "student")];

    let page = admin.post_raw(&path, &fields).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.has("CSRF verification failed"));
    let page = admin
        .post_raw(
            &path,
            &[
                ("csrfmiddlewaretoken", "wrong-token-of-the-right-size-xyz"),
                ("first_name", "Forged"),
                ("user_type", "student"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let foreign = other.csrf();
    let page = admin
        .post_raw(
            &path,
            &[
                ("csrfmiddlewaretoken", &foreign),
                ("first_name", "Forged"),
                ("user_type", "student"),
            ],
        )
        .await;
    assert_eq!(
        page.status,
        StatusCode::FORBIDDEN,
        "another session's token"
    );
    let page = admin
        .post_raw(&format!("{path}delete/"), &[("csrfmiddlewaretoken", "")])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(
        admin.post_raw("/admin/logout/", &[]).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(user(&app, "bob").await.first_name, "");
    assert_eq!(admin.get("/admin/").await.status, StatusCode::OK);

    // A cross-site form is refused before it reaches the admin.
    let page = admin
        .read(
            admin
                .http
                .post(format!("{}{path}", admin.base))
                .header("origin", "https://evil.example")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!(
                    "csrfmiddlewaretoken={}&first_name=Forged&user_type=student",
                    admin.csrf()
                )),
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    // Only form bodies are read.
    let page = admin
        .read(
            admin
                .http
                .post(format!("{}{path}", admin.base))
                .json(&json!({"csrfmiddlewaretoken": admin.csrf(), "first_name": "Json"})),
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert_eq!(user(&app, "bob").await.first_name, "");

    let page = admin.post(&path, &fields).await;
    assert_eq!(page.redirect(), format!("{path}?done=saved"));
    assert_eq!(user(&app, "bob").await.first_name, "Forged");
}

#[tokio::test]
async fn ai_chats_messages_and_usage_are_shown() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |_| {}).await;
    let admin = superuser(&app, "root").await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let homework = alice
        .post("/api/ai/chats/", &json!({"title": "Homework help"}))
        .await;
    let homework = id(&homework.body);
    let poems = bob.post("/api/ai/chats/", &json!({"title": "Poems"})).await;
    let poems = id(&poems.body);
    fake.then(reply("Two plus two is four.", 11, 7))
        .then(reply("Roses are red.", 20, 5))
        .then(reply("Violets are blue.", 30, 9));
    for (client, chat, question) in [
        (&alice, homework, "What is 2+2?"),
        (&bob, poems, "A poem, please"),
        (&bob, poems, "Another"),
    ] {
        let sent = client
            .post(
                &format!("/api/ai/chats/{chat}/send_message/"),
                &json!({"content": question}),
            )
            .await;
        assert_eq!(sent.status, StatusCode::OK, "{:?}", sent.body);
    }

    let page = admin.get("/admin/ai/chats/").await;
    page.assert_ok();
    assert!(page.has(">Homework help</a>") && page.has(">Poems</a>"));
    let page = admin.get("/admin/ai/chats/?q=HOME").await;
    assert!(page.has(">Homework help</a>") && !page.has(">Poems</a>"));
    let page = admin.get("/admin/ai/chats/?owner=bob").await;
    assert!(!page.has(">Homework help</a>") && page.has(">Poems</a>"));
    assert!(page.has("<td>64</td>"), "the chat's tokens: {}", page.html);
    let page = admin.get("/admin/ai/chats/?q=poems&owner=alice").await;
    assert!(page.has("No AI chats match."));

    let page = admin.get(&format!("/admin/ai/chats/{homework}/")).await;
    page.assert_ok();
    assert!(page.has("You are a helpful assistant."));
    assert!(page.has("What is 2+2?") && page.has("Two plus two is four."));
    let user_row = page.html.find("What is 2+2?").unwrap();
    let reply_row = page.html.find("Two plus two is four.").unwrap();
    assert!(user_row < reply_row, "in conversation order");
    for cell in [
        "<td>user</td>",
        "<td>assistant</td>",
        "<td>11</td>",
        "<td>7</td>",
        "<td>18</td>",
        &format!("<td>{MODEL}</td>"),
        "<td>stop</td>",
    ] {
        assert!(page.has(cell), "{cell}\n{}", page.html);
    }
    assert_eq!(
        admin.get("/admin/ai/chats/424242/").await.status,
        StatusCode::NOT_FOUND
    );

    let page = admin.get("/admin/ai/messages/").await;
    page.assert_ok();
    for text in [
        "What is 2+2?",
        "Two plus two is four.",
        "Roses are red.",
        "Violets are blue.",
        "<td>39</td>",
    ] {
        assert!(page.has(text), "{text}");
    }
    let page = admin.get("/admin/ai/messages/?role=assistant").await;
    assert!(page.has("Roses are red.") && !page.has("A poem, please"));
    let page = admin
        .get(&format!("/admin/ai/messages/?chat={homework}"))
        .await;
    assert!(page.has("What is 2+2?") && !page.has("Roses are red."));
    let page = admin.get("/admin/ai/messages/?owner=bob&role=user").await;
    assert!(page.has("A poem, please") && page.has("Another"));
    assert!(!page.has("What is 2+2?") && !page.has("Violets"));

    let page = admin.get("/admin/ai/usage/").await;
    page.assert_ok();
    assert!(page.has("Replies: <strong>3</strong>"));
    assert!(page.has("Total tokens: <strong>82</strong>"));
    assert!(page.has(&format!(
        "<tr><td>{MODEL}</td><td>3</td><td>61</td><td>21</td><td>82</td></tr>"
    )));
    assert!(page.has(">bob</a></td><td>2</td><td>50</td><td>14</td><td>64</td></tr>"));
    assert!(page.has(">alice</a></td><td>1</td><td>11</td><td>7</td><td>18</td></tr>"));
    assert!(
        page.html.find(">bob</a>").unwrap() < page.html.find(">alice</a>").unwrap(),
        "the biggest users first"
    );
    let page = admin
        .get("/admin/ai/usage/?from=2020-01-01&to=2020-01-31")
        .await;
    assert!(page.has("Total tokens: <strong>0</strong>"));
    assert!(page.has("No usage in these days."));
    let page = admin.get("/admin/ai/usage/?from=yesterday").await;
    page.assert_ok();
    assert!(page.has("Dates must be written as YYYY-MM-DD"));
    assert!(page.has("Total tokens: <strong>82</strong>"));
    // Usage outlives the conversation.
    bob.delete(&format!("/api/ai/chats/{poems}/")).await;
    let page = admin.get("/admin/ai/usage/").await;
    assert!(page.has("Total tokens: <strong>82</strong>"));
}

#[tokio::test]
async fn bad_addresses_are_404_pages() {
    let app = TestApp::spawn().await;
    let admin = superuser(&app, "root").await;
    for path in [
        "/admin/users/abc/",
        "/admin/users/999999/",
        "/admin/users/999999/password/",
        "/admin/users/999999/delete/",
        "/admin/chats/999999/",
        "/admin/chats/x/delete/",
        "/admin/messages/999999/delete/",
        "/admin/ai/chats/abc/",
        "/admin/nothing-here/",
        "/admin/chats/?page=0",
    ] {
        let page = admin.get(path).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}");
        assert!(page.has("<h1>Not found</h1>"), "{path}: {}", page.html);
        assert!(page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
    }
    let page = admin
        .post("/admin/chats/999999/participants/1/remove/", &[])
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    // Empty lists still render.
    for path in [
        "/admin/chats/",
        "/admin/messages/",
        "/admin/ai/chats/",
        "/admin/ai/messages/",
        "/admin/ai/usage/",
    ] {
        let page = admin.get(path).await;
        page.assert_ok();
        assert!(page.has("Nothing to show."), "{path}");
    }
}

#[tokio::test]
async fn a_deactivated_staff_member_is_signed_out_of_the_admin() {
    let app = TestApp::spawn().await;
    app.register("boss").await;
    app.make_staff("boss").await;
    let admin = Browser::staff(&app, "boss").await;
    assert_eq!(admin.get("/admin/").await.status, StatusCode::OK);
    deactivate(&app, "boss").await;
    assert_eq!(admin.get("/admin/").await.redirect(), "/admin/login/");
    let page = admin.login("boss", PASSWORD).await;
    assert!(page.has("Please enter the correct username and password"));
}

/// How long a socket may take to close once its credential ended: immediate on its own node,
/// so a generous bound on a small shared machine is still a promptness claim.
const PROMPTLY: std::time::Duration = std::time::Duration::from_secs(2);

/// An AI chat of `client`'s user.
async fn ai_chat_of(client: &Client) -> i64 {
    id(&client
        .post("/api/ai/chats/", &json!({"title": "t"}))
        .await
        .body)
}

/// Sets the password of user `user_id` through the admin's form.
async fn set_password(admin: &Browser, user_id: i64) {
    let page = admin
        .post(
            &format!("/admin/users/{user_id}/password/"),
            &[
                ("password", "a-new-passphrase"),
                ("password_confirm", "a-new-passphrase"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.html);
}

#[tokio::test]
async fn setting_a_password_closes_every_socket_of_the_user() {
    let app = TestApp::spawn().await;
    let admin = superuser(&app, "root").await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let bob_token = app.bearer("bob").await;
    let bob_id = id(&bob.me().await);
    let chat = alice.create_chat("c", &[bob_id]).await;
    let ai_chat = ai_chat_of(&bob).await;
    let mut sockets = vec![
        bob.ws(chat).await,
        bob_token.ws(chat).await,
        bob.ai_ws(ai_chat).await.unwrap(),
        bob_token.ai_ws(ai_chat).await.unwrap(),
    ];
    let mut alices = alice.ws(chat).await;

    set_password(&admin, bob_id).await;
    for socket in &mut sockets {
        assert_eq!(socket.closed_within(PROMPTLY).await, Some(4001));
    }
    alice.send_message(chat, "still here").await;
    assert_eq!(alices.next_message().await["content"], "still here");
}

#[tokio::test]
async fn changing_ones_own_password_keeps_the_sockets_of_the_session_kept() {
    let app = TestApp::spawn().await;
    let admin = superuser(&app, "root").await;
    let root_id = id(&app.bearer("root").await.me().await);
    let in_browser = app.client();
    in_browser.set_cookie("sessionid", &admin.cookie("sessionid").unwrap());
    let token = app.bearer("root").await;
    let chat = token.create_chat("c", &[]).await;
    let mut kept = in_browser.ws(chat).await;
    let mut ended = token.ws(chat).await;

    set_password(&admin, root_id).await;
    assert_eq!(ended.closed_within(PROMPTLY).await, Some(4001));
    // The socket of the session kept still posts and receives.
    kept.send_json(json!({"content": "still here"})).await;
    assert_eq!(kept.next_message().await["content"], "still here");
}

/// Deactivates user `user_id` through the admin's form.
async fn deactivate_in_form(admin: &Browser, user_id: i64) {
    let path = format!("/admin/users/{user_id}/");
    let page = admin
        .post(
            &path,
            &[
                ("email", "someone@example.com"),
                ("user_type", "student"),
                ("is_active", "false"),
            ],
        )
        .await;
    assert_eq!(page.redirect(), format!("{path}?done=saved"));
}

#[tokio::test]
async fn deactivating_or_deleting_a_user_closes_their_chat_and_ai_sockets() {
    let app = TestApp::spawn().await;
    let admin = superuser(&app, "root").await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let bob_id = id(&bob.me().await);
    let carol_id = id(&carol.me().await);
    let chat = alice.create_chat("c", &[bob_id, carol_id]).await;
    let bob_ai = ai_chat_of(&bob).await;
    let carol_ai = ai_chat_of(&carol).await;
    let mut bobs = [bob.ws(chat).await, bob.ai_ws(bob_ai).await.unwrap()];
    let mut carols = [carol.ws(chat).await, carol.ai_ws(carol_ai).await.unwrap()];

    deactivate_in_form(&admin, bob_id).await;
    for socket in &mut bobs {
        assert_eq!(socket.closed_within(PROMPTLY).await, Some(4001));
    }

    let page = admin
        .post(&format!("/admin/users/{carol_id}/delete/"), &[])
        .await;
    assert_eq!(page.redirect(), "/admin/users/?done=deleted");
    for socket in &mut carols {
        assert_eq!(socket.closed_within(PROMPTLY).await, Some(4001));
    }
}

#[tokio::test]
async fn deactivating_a_user_stops_their_running_ai_reply() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |_| {}).await;
    let admin = superuser(&app, "root").await;
    let bob = app.user("bob").await;
    let bob_id = id(&bob.me().await);
    let ai_chat = ai_chat_of(&bob).await;
    let chunks: Vec<String> = (0..100).map(|i| format!("w{i} ")).collect();
    let chunk_refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
    fake.then(slow(&chunk_refs, 100));
    let mut socket = bob.ai_ws_v2(ai_chat).await;
    socket.send_json(json!({"content": "a long story"})).await;
    socket.next_of("assistant_delta").await;

    deactivate_in_form(&admin, bob_id).await;
    assert_eq!(socket.closed_within(PROMPTLY).await, Some(4001));
    assert!(
        fake.wait_for_hangup().await,
        "the provider's request was abandoned"
    );
}

#[tokio::test]
async fn nul_in_admin_input_is_refused_with_its_own_reason() {
    const NUL: &str = "Null characters are not allowed.";
    let app = TestApp::spawn().await;
    let admin = superuser(&app, "root").await;
    let alice = app.user("alice").await;
    let chat = alice.create_chat("Project", &[]).await;
    let alice_id = user_id(&app, "alice").await;

    // A name holding NUL finds no one.
    let page = Browser::new(&app).login("root\u{0}", PASSWORD).await;
    page.assert_ok();
    assert!(page.has("Please enter the correct username and password"));

    // Searches and filters are refused before anything is looked up.
    for path in [
        "/admin/users/?q=al%00",
        "/admin/chats/?q=%00",
        "/admin/messages/?sender=a%00&q=x",
        "/admin/ai/chats/?owner=%00",
        "/admin/ai/messages/?owner=%00",
        "/admin/login/?next=%2Fadmin%2F%00",
    ] {
        let page = admin.get(path).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(page.has(NUL), "{path}: {}", page.html);
    }

    // Forms show the reason next to the field, alone, and save nothing.
    let page = admin
        .post(
            "/admin/users/add/",
            &[
                ("username", "new\u{0}"),
                ("password", "a-long-passphrase"),
                ("password_confirm", "a-long-passphrase"),
            ],
        )
        .await;
    page.assert_ok();
    assert!(page.has(NUL) && page.has(r#"id="username-errors""#));
    assert!(!page.has("Enter a valid username"));
    let page = admin
        .post(
            &format!("/admin/users/{alice_id}/"),
            &[
                ("first_name", "Al\u{0}"),
                ("email", "alice@example.com"),
                ("user_type", "stu\u{0}dent"),
            ],
        )
        .await;
    page.assert_ok();
    assert_eq!(page.count(NUL), 2, "{}", page.html);
    assert!(!page.has("is not a valid choice"));
    assert_eq!(user(&app, "alice").await.first_name, "");
    let page = admin
        .post(
            &format!("/admin/users/{alice_id}/password/"),
            &[("password", "x\u{0}y"), ("password_confirm", "x\u{0}y")],
        )
        .await;
    page.assert_ok();
    assert!(page.has(NUL) && !page.has("may not be blank"));
    alice.me().await;

    let path = format!("/admin/chats/{chat}/");
    let page = admin.post(&path, &[("name", "P\u{0}")]).await;
    page.assert_ok();
    assert!(page.has(NUL) && !page.has("may not be blank"));
    let page = admin
        .post(
            &format!("{path}participants/"),
            &[("usernames", "bob\u{0}")],
        )
        .await;
    page.assert_ok();
    assert!(page.has(NUL) && !page.has("Enter at least one username"));
    assert_eq!(
        alice.get(&format!("/api/chats/{chat}/")).await.body["name"],
        "Project"
    );
}

#[tokio::test]
async fn admin_forms_and_filters_fold_look_alike_usernames() {
    let app = TestApp::spawn().await;
    let admin = superuser(&app, "root").await;
    let alice = app.user("alice").await;
    app.register("bob").await;
    let chat = alice.create_chat("Project", &[]).await;

    let page = admin
        .post(
            "/admin/users/add/",
            &[
                ("username", "ａｌｉｃｅ"),
                ("password", "a-long-passphrase"),
                ("password_confirm", "a-long-passphrase"),
            ],
        )
        .await;
    page.assert_ok();
    assert!(page.has("A user with that username already exists."));

    let page = Browser::new(&app).login("ｒｏｏｔ", PASSWORD).await;
    assert_eq!(page.redirect(), "/admin/");

    let page = admin
        .post(
            &format!("/admin/chats/{chat}/participants/"),
            &[("usernames", "ｂｏｂ")],
        )
        .await;
    assert_eq!(page.redirect(), format!("/admin/chats/{chat}/?done=added"));
    let page = admin.get("/admin/users/?q=%EF%BD%82%EF%BD%8F").await;
    assert!(page.has(">bob</a></td>"), "{}", page.html);
}

#[tokio::test]
async fn staff_cannot_change_a_direct_chats_members_from_the_admin_area() {
    let app = TestApp::spawn().await;
    let admin = superuser(&app, "root").await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    app.register("carol").await;
    let bob_id = id(&bob.me().await);
    let chat = id(&alice
        .post("/api/direct/", &serde_json::json!({"user_id": bob_id}))
        .await
        .body);

    let path = format!("/admin/chats/{chat}/");
    let added = admin
        .post(&format!("{path}participants/"), &[("usernames", "carol")])
        .await;
    assert_eq!(added.status, StatusCode::BAD_REQUEST, "{}", added.html);
    assert!(
        added.has("A direct chat&#39;s members cannot change"),
        "{}",
        added.html
    );
    let removed = admin
        .post(&format!("{path}participants/{bob_id}/remove/"), &[])
        .await;
    assert_eq!(removed.status, StatusCode::BAD_REQUEST, "{}", removed.html);
    let read = alice.get(&format!("/api/chats/{chat}/")).await.body;
    assert_eq!(
        crate::helpers::usernames(&read["participants"]),
        ["alice", "bob"]
    );
}

#[tokio::test]
async fn the_admin_shows_each_users_storage_and_sets_their_quota() {
    let app = TestApp::spawn_with(|c| c.attachments.quota_bytes = 3_000).await;
    let alice = app.user("alice").await;
    let alice_id = id(&alice.me().await);
    let chat = alice.create_chat("files", &[]).await;
    let upload = |bytes: Vec<u8>| {
        let request = alice
            .request(
                reqwest::Method::POST,
                &format!("/api/chats/{chat}/attachments/"),
            )
            .header("X-CSRFToken", alice.csrf().unwrap())
            .multipart(reqwest::multipart::Form::new().part(
                "file",
                reqwest::multipart::Part::bytes(bytes).file_name("f.bin"),
            ));
        alice.send(request)
    };
    assert_eq!(upload(vec![1; 2_500]).await.status, StatusCode::CREATED);
    assert_eq!(
        upload(vec![2; 1_000]).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );

    let admin = superuser(&app, "root").await;
    let list = admin.get("/admin/users/").await;
    list.assert_ok();
    assert!(list.has("<td>2500</td>"), "{}", list.html);
    let page = admin.get(&format!("/admin/users/{alice_id}/")).await;
    assert!(page.has("2500 of 3000 bytes"), "{}", page.html);

    let path = format!("/admin/users/{alice_id}/quota/");
    let bad = admin.post(&path, &[("storage_quota", "-1")]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.has("Enter a whole number of bytes"), "{}", bad.html);
    assert_eq!(
        admin
            .post(&path, &[("storage_quota", "10000")])
            .await
            .redirect(),
        format!("/admin/users/{alice_id}/?done=saved")
    );
    assert!(admin
        .get(&format!("/admin/users/{alice_id}/"))
        .await
        .has("2500 of 10000 bytes"));
    assert_eq!(upload(vec![2; 1_000]).await.status, StatusCode::CREATED);
    // Empty: back to the default, which the user is now over.
    admin.post(&path, &[("storage_quota", "")]).await.redirect();
    assert_eq!(
        upload(vec![3; 10]).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

#[tokio::test]
async fn the_admin_sets_a_users_own_ai_budget() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::spawn_with_ai(&fake, |c| c.ai.daily_tokens = Some(1_000)).await;
    let alice = app.user("alice").await;
    let alice_id = id(&alice.me().await);
    let chat = alice
        .post(
            "/api/ai/chats/",
            &json!({"title": "t", "system_prompt": "s"}),
        )
        .await;
    let path = format!("/api/ai/chats/{}/send_message/", id(&chat.body));
    let question = json!({"content": "hi"});
    let ask = || alice.post(&path, &question);
    fake.then(reply("ok", 10, 5));
    assert_eq!(ask().await.status, StatusCode::OK);

    let admin = superuser(&app, "root").await;
    let page = admin.get(&format!("/admin/users/{alice_id}/")).await;
    assert!(
        page.has("defaults: 1000 a day, none a month"),
        "{}",
        page.html
    );
    let form = format!("/admin/users/{alice_id}/ai-budgets/");
    let bad = admin
        .post(
            &form,
            &[("ai_daily_tokens", "-5"), ("ai_monthly_tokens", "")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.has("Enter a whole number of tokens"), "{}", bad.html);
    // Her own budget of 10 a day is already spent (15): she is stopped; the default still
    // holds for others.
    admin
        .post(
            &form,
            &[("ai_daily_tokens", "10"), ("ai_monthly_tokens", "")],
        )
        .await
        .redirect();
    assert_eq!(ask().await.status, StatusCode::TOO_MANY_REQUESTS);
    let usage = alice.get("/api/ai/usage/").await.body;
    assert_eq!(usage["budget"]["daily"]["limit"], 10);
    // Back to the default.
    admin
        .post(&form, &[("ai_daily_tokens", ""), ("ai_monthly_tokens", "")])
        .await
        .redirect();
    fake.then(reply("ok", 10, 5));
    assert_eq!(ask().await.status, StatusCode::OK);
}
