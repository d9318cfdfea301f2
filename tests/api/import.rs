//! `mrm-chat import-django`: MRM Chat 2's own sample databases (PostgreSQL and SQLite, made by
//! the original service) imported into either backend, and what clients of the original then
//! find; refusals that leave the target untouched.

use std::process::{Command, Output};

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Row;

use crate::helpers::{Client, TestApp, TestDatabase};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mrm-chat-2");
const SAMPLE_PASSWORD: &str = "Sample-pass-2026";

fn import(target: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mrm-chat"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", target)
        .env("NO_COLOR", "1")
        .current_dir(std::env::temp_dir())
        .arg("import-django")
        .args(args)
        .output()
        .expect("run mrm-chat")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A source database of the original: the SQLite sample as it is, or the PostgreSQL dump
/// restored into a database of its own.
struct Source {
    url: String,
    _db: Option<TestDatabase>,
}

async fn source(kind: &str) -> Source {
    match kind {
        "sqlite" => Source {
            url: format!("sqlite:{FIXTURES}/mrmchat2_sample.sqlite3"),
            _db: None,
        },
        _ => {
            let db = TestDatabase::of_backend("postgres").await;
            let restored = Command::new("psql")
                .args(["-q", "-v", "ON_ERROR_STOP=1", "-d", &db.url, "-f"])
                .arg(format!("{FIXTURES}/mrmchat2_sample.pg.sql"))
                .output()
                .expect("psql (PostgreSQL's client) restores the PostgreSQL sample");
            assert!(restored.status.success(), "{}", text(&restored));
            Source {
                url: db.url.clone(),
                _db: Some(db),
            }
        }
    }
}

/// One row of the source, read directly: (id, a text, a time).
async fn source_rows(url: &str, sql: &'static str) -> Vec<(i64, String, DateTime<Utc>)> {
    let parse = |t: &str| {
        chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f")
            .unwrap()
            .and_utc()
    };
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        let rows = sqlx::query(sql).fetch_all(&pool).await.unwrap();
        rows.iter()
            .map(|r| (r.get(0), r.get(1), parse(&r.get::<String, _>(2))))
            .collect()
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let rows = sqlx::query(sql).fetch_all(&pool).await.unwrap();
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }
}

/// A writable copy of the SQLite sample, to spoil, in a directory removed with the first value.
fn writable_sample() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("source.sqlite3");
    std::fs::copy(format!("{FIXTURES}/mrmchat2_sample.sqlite3"), &copy).unwrap();
    std::fs::set_permissions(
        &copy,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644),
    )
    .unwrap();
    (dir, copy)
}

fn time(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

async fn target_scalar(target: &TestDatabase, sql: &'static str) -> String {
    let db = mrm_chat::store::Db::connect(&target.url, 1).await.unwrap();
    let value: String = match &db {
        mrm_chat::store::Db::Postgres(pool) => {
            sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
        }
        mrm_chat::store::Db::Sqlite(_) => {
            let pool = sqlx::SqlitePool::connect(&target.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap()
        }
    };
    db.close().await;
    value
}

async fn login(app: &TestApp, username: &str, password: &str) -> (Client, StatusCode) {
    let client = app.client();
    let body = json!({"username": username, "password": password});
    let status = client.post("/api/login/", &body).await.status;
    (client, status)
}

async fn imports_and_clients_of_the_original_find_their_ids(kind: &str) {
    let source = source(kind).await;
    let target = TestDatabase::create().await;

    let dry = import(&target.url, &["--from", &source.url, "--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(
        text(&dry).contains("dry run: nothing was written"),
        "{}",
        text(&dry)
    );
    let first = import(&target.url, &["--from", &source.url]);
    assert!(first.status.success(), "{}", text(&first));
    let summary = text(&first);
    assert!(
        summary.contains("users                 6              6"),
        "{summary}"
    );
    assert!(
        summary.contains("messages             27             27"),
        "{summary}"
    );
    let again = import(&target.url, &["--from", &source.url]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("nothing to import: the target already holds everything"),
        "{}",
        text(&again)
    );

    let url = target.url.clone();
    let app = TestApp::spawn_with(move |config| config.database_url = url).await;
    // Logged in with the original password; the Django hash is then replaced by Argon2id.
    let before = target_scalar(
        &target,
        "SELECT password_hash FROM users WHERE username = 'ana'",
    )
    .await;
    assert!(before.starts_with("pbkdf2_sha256$"), "{before}");
    let (ana, status) = login(&app, "ana", SAMPLE_PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    let after = target_scalar(
        &target,
        "SELECT password_hash FROM users WHERE username = 'ana'",
    )
    .await;
    assert!(after.starts_with("$argon2id$"), "{after}");
    assert_eq!(
        login(&app, "ana", SAMPLE_PASSWORD).await.1,
        StatusCode::OK,
        "the new hash verifies"
    );
    assert_eq!(
        login(&app, "bruno", "wrong").await.1,
        StatusCode::UNAUTHORIZED
    );
    let (admin, status) = login(&app, "admin", "Admin-pass-2026").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(admin.me().await["id"], 1);
    let flags = target_scalar(
        &target,
        "SELECT CASE WHEN is_staff AND is_superuser AND is_active THEN 'staff' ELSE 'not' END \
         FROM users WHERE username = 'admin'",
    )
    .await;
    assert_eq!(flags, "staff");

    let (emile, status) = login(&app, "émile", SAMPLE_PASSWORD).await;
    assert_eq!(status, StatusCode::OK);

    // Users: ids, names, types and times as the original had them.
    let users = source_rows(
        &source.url,
        "SELECT id, username, date_joined FROM chat_user ORDER BY id",
    )
    .await;
    let listed = ana.get("/api/users/").await.body;
    for (id, username, joined) in &users {
        let user = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["id"] == *id)
            .unwrap_or_else(|| panic!("user #{id} in {listed}"));
        assert_eq!(user["username"], *username);
        if let Some(at) = user.get("date_joined") {
            assert_eq!(time(at), *joined);
        }
    }
    let me = ana.me().await;
    assert_eq!(me["user_type"], "owner");

    // Chats and messages: a client's cached ids answer as before, in order, with seq 1…
    let chats = source_rows(
        &source.url,
        "SELECT id, name, created_at FROM chat_chat ORDER BY id",
    )
    .await;
    let study = ana.get(&format!("/api/chats/{}/", chats[0].0)).await;
    assert_eq!(study.status, StatusCode::OK, "{}", study.body);
    assert_eq!(study.body["name"], chats[0].1);
    assert_eq!(time(&study.body["created_at"]), chats[0].2);
    let messages = source_rows(
        &source.url,
        "SELECT id, content, timestamp FROM chat_message WHERE chat_id = 1 ORDER BY timestamp, id",
    )
    .await;
    let page = ana.get("/api/chats/1/messages/?limit=100").await.body;
    let page = page.as_array().unwrap();
    assert_eq!(page.len(), messages.len());
    for (i, (m, (id, content, at))) in page.iter().zip(&messages).enumerate() {
        assert_eq!(m["id"], *id);
        assert_eq!(m["content"], *content);
        assert_eq!(time(&m["timestamp"]), *at);
        assert_eq!(m["seq"], i as i64 + 1);
    }
    let cached = ana.get(&format!("/api/messages/{}/", messages[3].0)).await;
    assert_eq!(cached.status, StatusCode::OK);
    assert_eq!(cached.body["content"], messages[3].1);
    // Not a participant of the second chat: as in the original, not found.
    assert_eq!(
        ana.get(&format!("/api/chats/{}/", chats[1].0)).await.status,
        StatusCode::NOT_FOUND
    );
    let (bruno, _) = login(&app, "bruno", SAMPLE_PASSWORD).await;
    assert_eq!(
        bruno.get(&format!("/api/chats/{}/", chats[1].0)).await.body["name"],
        chats[1].1
    );

    // AI conversations with their token counts; usage rebuilt from them.
    let ai = ana.get("/api/ai/chats/1/").await;
    assert_eq!(ai.status, StatusCode::OK, "{}", ai.body);
    assert_eq!(ai.body["title"], "Exam prep");
    assert_eq!(ai.body["system_prompt"], "You are a patient tutor.");
    assert_eq!(ai.body["related_chat"], 1);
    let tokens = source_rows(
        &source.url,
        "SELECT id, CAST(total_tokens AS TEXT), timestamp FROM ai_chat_aimessage \
         WHERE ai_chat_id = 1 AND role = 'assistant' ORDER BY id",
    )
    .await;
    let replies: Vec<&Value> = ai.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "assistant")
        .collect();
    assert_eq!(replies.len(), tokens.len());
    for (reply, (id, total, at)) in replies.iter().zip(&tokens) {
        assert_eq!(reply["id"], *id);
        assert_eq!(reply["total_tokens"].as_i64().unwrap().to_string(), *total);
        assert_eq!(time(&reply["timestamp"]), *at);
        assert_eq!(reply["model"], "gpt-3.5-turbo");
    }
    let day = tokens[0].2.format("%Y-%m-%d").to_string();
    let usage = ana
        .get(&format!("/api/ai/usage/?from={day}&to={day}"))
        .await
        .body;
    let expected: i64 = tokens
        .iter()
        .map(|(_, t, _)| t.parse::<i64>().unwrap())
        .sum();
    assert_eq!(usage["total_tokens"], expected, "{usage}");

    // What is created afterwards gets fresh ids.
    let created = emile
        .post("/api/chats/", &json!({"name": "after the move"}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["id"], 4);
    let sent = ana.send_message(1, "first message in mrm-chat").await;
    assert_eq!(sent["id"], 28);
    assert_eq!(sent["seq"], messages.len() as i64 + 1);
    let ai_chat = ana.post("/api/ai/chats/", &json!({"title": "new"})).await;
    assert_eq!(ai_chat.body["id"], 3);
    app.stop().await;
}

#[tokio::test]
async fn the_sqlite_sample_imports_and_clients_of_the_original_find_their_ids() {
    imports_and_clients_of_the_original_find_their_ids("sqlite").await;
}

#[tokio::test]
async fn the_postgresql_sample_imports_and_clients_of_the_original_find_their_ids() {
    imports_and_clients_of_the_original_find_their_ids("postgres").await;
}

#[tokio::test]
async fn foreign_corrupted_and_conflicting_sources_are_refused_and_nothing_is_written() {
    let target = TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let corrupted = dir.path().join("corrupted.sqlite3");
    std::fs::write(&corrupted, b"SQLite format 3\0 this is no database").unwrap();
    let empty = dir.path().join("empty.sqlite3");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}?mode=rwc", empty.display()))
        .await
        .unwrap();
    sqlx::query("CREATE TABLE notes (id INTEGER PRIMARY KEY)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let missing = dir.path().join("missing.sqlite3");
    for (source, expected) in [
        (corrupted.display().to_string(), "cannot"),
        (empty.display().to_string(), "not a database of MRM Chat 2"),
        (missing.display().to_string(), "no SQLite database at"),
        (
            "postgres://postgres@127.0.0.1:1/nowhere".to_owned(),
            "cannot open the source database",
        ),
    ] {
        let refused = import(&target.url, &["--from", &source]);
        assert!(!refused.status.success(), "{source}: {}", text(&refused));
        assert!(
            text(&refused).contains(expected),
            "{source}: {}",
            text(&refused)
        );
    }
    // mrm-chat's own database is not one of the original's either.
    let refused = import(&target.url, &["--from", &target.url]);
    assert!(
        text(&refused).contains("not a database of MRM Chat 2"),
        "{}",
        text(&refused)
    );

    // A target that holds someone else under the source's ids: refused before any write.
    let url = target.url.clone();
    let app = TestApp::spawn_with(move |config| config.database_url = url).await;
    app.register("zed").await;
    let source = format!("sqlite:{FIXTURES}/mrmchat2_sample.sqlite3");
    let refused = import(&target.url, &["--from", &source]);
    assert!(!refused.status.success());
    let said = text(&refused);
    assert!(said.contains("already holds different data"), "{said}");
    assert!(
        said.contains("user #1: the target's is \"zed\", the source's \"admin\""),
        "{said}"
    );
    let users = target_scalar(&target, "SELECT CAST(COUNT(*) AS TEXT) FROM users").await;
    assert_eq!(users, "1", "nothing was written");
    let chats = target_scalar(&target, "SELECT CAST(COUNT(*) AS TEXT) FROM chats").await;
    assert_eq!(chats, "0");
    app.stop().await;
}

#[tokio::test]
async fn a_password_hash_in_an_unknown_format_is_imported_unusable_and_listed() {
    let (_dir, copy) = writable_sample();
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", copy.display()))
        .await
        .unwrap();
    sqlx::query("UPDATE chat_user SET password = 'sha512_custom$abc$def' WHERE username = 'dara'")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let target = TestDatabase::create().await;
    let imported = import(&target.url, &["--from", &copy.display().to_string()]);
    assert!(imported.status.success(), "{}", text(&imported));
    assert!(
        text(&imported).contains("imported without a usable password")
            && text(&imported).contains("dara"),
        "{}",
        text(&imported)
    );
    let url = target.url.clone();
    let app = TestApp::spawn_with(move |config| config.database_url = url).await;
    assert_eq!(
        login(&app, "dara", SAMPLE_PASSWORD).await.1,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&app, "dara", "sha512_custom$abc$def").await.1,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&app, "bruno", SAMPLE_PASSWORD).await.1,
        StatusCode::OK
    );
    app.stop().await;
}

#[tokio::test]
async fn a_source_whose_rows_refer_to_what_it_does_not_hold_is_refused() {
    let (_dir, copy) = writable_sample();
    // SQLite leaves foreign keys unenforced unless asked: a hand edit can orphan rows.
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite:{}", copy.display()))
        .await
        .unwrap();
    sqlx::query("PRAGMA foreign_keys = OFF")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("DELETE FROM chat_user WHERE username = 'dara'")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let target = TestDatabase::create().await;
    let refused = import(&target.url, &["--from", &copy.display().to_string()]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("the source is inconsistent")
            && text(&refused).contains("messages whose chat or sender is missing"),
        "{}",
        text(&refused)
    );
}
