//! The `mrm-chat` binary itself: configuration errors, `migrate`, `createsuperuser`, and `serve`
//! answering and stopping gracefully on SIGTERM.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use reqwest::StatusCode;

use serde_json::json;

use crate::helpers::{execute, id, start_server_process, Client, TestApp, TestDatabase};

fn mrm_chat(database_url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mrm-chat"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        // Keep a developer's .env out of the picture.
        .current_dir(std::env::temp_dir());
    command
}

/// Runs `changepassword username` as `command` sets it up, with `input` on its standard input.
fn change_password(mut command: Command, username: &str, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = command
        .args(["changepassword", username])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_bad_setting_stops_start_up_naming_the_variable() {
    let output = mrm_chat("sqlite://unused.sqlite3")
        .env("MRM_BIND", "not-an-address")
        .args(["serve"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("MRM_BIND"), "{stderr}");
}

#[tokio::test]
async fn migrate_createsuperuser_and_serve_until_sigterm() {
    let db = TestDatabase::create().await;

    let output = mrm_chat(&db.url).arg("migrate").output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let output = mrm_chat(&db.url)
        .args([
            "createsuperuser",
            "--username",
            "root-admin",
            "--email",
            "admin@example.com",
        ])
        .args(["--password", "an-admin-passphrase"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let output = mrm_chat(&db.url)
        .args(["createsuperuser", "--username", "weak", "--password", "123"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success(), "a weak password is refused");

    // changepassword reads the new password from stdin when no terminal is attached.
    let mut change = mrm_chat(&db.url)
        .args(["changepassword", "root-admin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    change
        .stdin
        .take()
        .unwrap()
        .write_all(b"a-new-admin-passphrase\n")
        .unwrap();
    assert!(change.wait().unwrap().success());
    let mut weak = mrm_chat(&db.url)
        .args(["changepassword", "root-admin"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    weak.stdin.take().unwrap().write_all(b"12345678\n").unwrap();
    assert!(
        !weak.wait().unwrap().success(),
        "the password policy applies"
    );

    let (mut server, addr, _files) = start_server_process(&mut mrm_chat(&db.url));

    let client = Client::new(addr);
    let refused = client
        .post(
            "/api/login/",
            &serde_json::json!({"username": "root-admin", "password": "an-admin-passphrase"}),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "the old password no longer works"
    );
    let me = client
        .login("root-admin", "a-new-admin-passphrase")
        .await
        .body;
    assert_eq!(me["user_type"], "staff");
    assert_eq!(client.get("/readyz").await.status, StatusCode::OK);

    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "stops within 10 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn the_command_line_folds_look_alike_usernames_and_refuses_nul() {
    let db = TestDatabase::create().await;
    let create = |username: &str| {
        mrm_chat(&db.url)
            .args(["createsuperuser", "--username", username])
            .args(["--password", "an-admin-passphrase"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let output = create("ｒｏｏｔ");
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains(r#""root""#));
    let output = create("root");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("A user with that username already exists."),
        "{output:?}"
    );

    let change = |input: &'static [u8]| change_password(mrm_chat(&db.url), "ｒｏｏｔ", input);
    let output = change(b"a-new-admin-passphrase\n");
    assert!(output.status.success(), "{output:?}");
    let output = change(b"a-new\0passphrase\n");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("Null characters are not allowed."),
        "{output:?}"
    );
}

#[tokio::test]
async fn changepassword_works_while_redis_does_not_answer() {
    let db = TestDatabase::create().await;
    let output = mrm_chat(&db.url)
        .args(["createsuperuser", "--username", "root"])
        .args(["--password", "an-admin-passphrase"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");

    // Nothing listens on port 1: the bus cannot be reached, and the reset must still happen.
    let mut command = mrm_chat(&db.url);
    command.env("REDIS_URL", "redis://127.0.0.1:1");
    let output = change_password(command, "root", b"a-new-admin-passphrase\n");
    assert!(output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(r#"Password changed for "root""#),
        "{output:?}"
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("Redis does not answer"),
        "{output:?}"
    );
}

#[tokio::test]
async fn a_password_changed_from_the_command_line_closes_the_users_sockets() {
    // The server has no Redis, and the command line runs in a process of its own: the only way
    // the server can learn of the change is the database.
    let app = TestApp::spawn().await;
    let carol = app.user("carol").await;
    let carol_token = app.bearer("carol").await;
    let dave = app.user("dave").await;
    let dave_id = id(&dave.me().await);
    let chat = carol.create_chat("c", &[dave_id]).await;
    let mut sockets = vec![carol.ws(chat).await, carol_token.ws(chat).await];
    let mut daves = dave.ws(chat).await;

    let output = change_password(
        mrm_chat(app.database_url()),
        "carol",
        b"a-new-passphrase-for-carol\n",
    );
    assert!(output.status.success(), "{output:?}");

    // Read once a second, then checked: well within a few seconds on a loaded machine.
    for socket in &mut sockets {
        assert_eq!(
            socket.closed_within(Duration::from_secs(5)).await,
            Some(4001)
        );
    }
    dave.send_message(chat, "still here").await;
    assert_eq!(daves.next_message().await["content"], "still here");
}

#[tokio::test]
async fn a_session_that_expires_closes_its_sockets() {
    let app =
        TestApp::spawn_with(|config| config.credential_recheck = Duration::from_secs(1)).await;
    let carol = app.user("carol").await;
    let carol_token = app.bearer("carol").await;
    let chat = carol.create_chat("c", &[]).await;
    let mut expiring = carol.ws(chat).await;
    let mut by_token = carol_token.ws(chat).await;

    // Nobody announces an expiry: the session's time simply runs out.
    let sql = "UPDATE sessions SET expires_at = created_at \
               WHERE user_id = (SELECT id FROM users WHERE username = $1)";
    execute(&app.db, sql, "carol").await;
    assert_eq!(
        expiring.closed_within(Duration::from_secs(5)).await,
        Some(4001)
    );
    // The token does not expire: its socket still posts and receives.
    by_token.send_json(json!({"content": "still here"})).await;
    assert_eq!(by_token.next_message().await["content"], "still here");
}
