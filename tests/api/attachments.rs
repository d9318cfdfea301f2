//! Attachments: upload, sending, download by members only, ranges and caching, what is refused,
//! safe serving of active content, thumbnails, the removal of what nothing refers to, and
//! quotas; each on the local directory store and on a real S3-compatible server
//! (`MRM_TEST_S3_ENDPOINT`, which `scripts/test` starts: moto's server mode).

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, Rgba, RgbaImage};
use mrm_chat::config::Config;
use reqwest::{
    header::{HeaderMap, HeaderValue},
    multipart::{Form, Part},
    Method, StatusCode,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{id, Client, TestApp};

/// Where a test's server keeps attachments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Local,
    S3,
}

/// The S3-compatible server the tests use.
fn s3_endpoint() -> String {
    std::env::var("MRM_TEST_S3_ENDPOINT").expect(
        "MRM_TEST_S3_ENDPOINT is not set: start an S3-compatible server (scripts/test starts \
         moto's) and point it there, e.g. http://127.0.0.1:5000",
    )
}

/// A server on `store`, with `adjust` applied; on S3, in a bucket of its own.
async fn spawn(store: Store, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let bucket = match store {
        Store::Local => None,
        Store::S3 => {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let bucket = format!(
                "mrmtest-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            let created = reqwest::Client::new()
                .put(format!("{}/{bucket}", s3_endpoint()))
                .send()
                .await
                .expect("the S3 server answers");
            assert!(
                created.status().is_success(),
                "bucket: {}",
                created.status()
            );
            Some(bucket)
        }
    };
    TestApp::spawn_with(move |config| {
        // Only deletions start sweeps (and the tests' own calls): no periodic one meanwhile.
        config.attachments.sweep_interval = std::time::Duration::from_secs(3600);
        if let Some(bucket) = bucket {
            let a = &mut config.attachments;
            a.s3_bucket = Some(bucket);
            a.s3_endpoint = Some(s3_endpoint());
            a.s3_access_key_id = Some("testing".into());
            a.s3_secret_access_key = Some(mrm_chat::config::Secret::new("testing"));
        }
        adjust(config);
    })
    .await
}

/// Whether the store of `app` holds the object of content `bytes` (`thumbnail`: its thumbnail).
async fn stored(app: &TestApp, bytes: &[u8], thumbnail: bool) -> bool {
    let digest = hex::encode(Sha256::digest(bytes));
    let key = mrm_chat::storage::object_key(&digest, thumbnail);
    app.state.files.storage.exists(&key).await.unwrap()
}

/// Waits (up to 20 s) until the store of `app` holds neither the object of `bytes` nor its
/// thumbnail: for removals a background sweep makes.
async fn removed_soon(app: &TestApp, bytes: &[u8]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while stored(app, bytes, false).await || stored(app, bytes, true).await {
        assert!(
            std::time::Instant::now() < deadline,
            "the object was not removed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Runs the sweep a server runs, at once, with grace period `grace` for unattached uploads.
async fn sweep(app: &TestApp, grace: std::time::Duration) -> mrm_chat::service::attachments::Swept {
    mrm_chat::service::attachments::sweep(&app.db, &app.state.files.storage, grace)
        .await
        .unwrap()
}

fn png(width: u32, height: u32, alpha: bool) -> Vec<u8> {
    let mut pixels = RgbaImage::new(width, height);
    for (x, y, p) in pixels.enumerate_pixels_mut() {
        *p = Rgba([
            (x % 256) as u8,
            (y % 256) as u8,
            90,
            if alpha { 128 } else { 255 },
        ]);
    }
    let mut out = Vec::new();
    DynamicImage::ImageRgba8(pixels)
        .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
        .unwrap();
    out
}

/// A raw answer: status, headers and bytes.
struct Raw {
    status: StatusCode,
    headers: HeaderMap,
    bytes: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
}

async fn raw(client: &Client, path: &str, headers: &[(&str, &str)]) -> Raw {
    let mut request = client.request(Method::GET, path);
    for (name, value) in headers {
        request = request.header(*name, HeaderValue::from_str(value).unwrap());
    }
    let response = request.send().await.unwrap();
    Raw {
        status: response.status(),
        headers: response.headers().clone(),
        bytes: response.bytes().await.unwrap().to_vec(),
    }
}

/// Uploads `bytes` as `name` (with part type `claimed`, if any) to chat `chat`.
async fn upload(
    client: &Client,
    chat: i64,
    name: &str,
    claimed: Option<&str>,
    bytes: Vec<u8>,
) -> crate::helpers::Response {
    let mut part = Part::bytes(bytes).file_name(name.to_owned());
    if let Some(claimed) = claimed {
        part = part.mime_str(claimed).unwrap();
    }
    let mut request = client
        .request(Method::POST, &format!("/api/chats/{chat}/attachments/"))
        .multipart(Form::new().part("file", part));
    if let Some(token) = client.csrf() {
        request = request.header("X-CSRFToken", token);
    }
    client.send(request).await
}

async fn uploaded(client: &Client, chat: i64, name: &str, bytes: Vec<u8>) -> Value {
    let response = upload(client, chat, name, None, bytes).await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
    response.body
}

async fn send_with(
    client: &Client,
    chat: i64,
    content: &str,
    ids: &[i64],
) -> crate::helpers::Response {
    client
        .post(
            &format!("/api/chats/{chat}/send_message/"),
            &json!({"content": content, "attachments": ids}),
        )
        .await
}

/// Runs each test once per store.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(#[tokio::test] async fn $name() { super::$name(super::Store::Local).await })*
        }
        mod s3 {
            $(#[tokio::test] async fn $name() { super::$name(super::Store::S3).await })*
        }
    };
}

on_both_stores!(
    members_download_what_a_message_carries_and_no_one_else_does,
    ranges_and_validators_follow_rfc_9110,
    oversize_spoofed_empty_and_bomb_uploads_are_refused,
    active_content_is_served_so_that_it_cannot_script_the_origin,
    a_message_carries_only_its_senders_unsent_uploads_to_its_chat,
    what_nothing_refers_to_is_removed_and_shared_content_stays,
    the_quota_counts_uploads_until_they_are_deleted,
);

async fn members_download_what_a_message_carries_and_no_one_else_does(store: Store) {
    let app = spawn(store, |_| {}).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    app.register("staffer").await;
    app.make_staff("staffer").await;
    let staff = app.bearer("staffer").await;
    let bob_id = id(&bob.me().await);
    let chat = alice.create_chat("photos", &[bob_id]).await;
    let mut bob_v2 = bob.ws_v2(chat).await;
    let mut bob_original = bob.ws(chat).await;

    let picture = png(800, 600, false);
    let up = uploaded(
        &alice,
        chat,
        "C:\\Users\\alice\\holiday\u{202E}gnp.png",
        picture.clone(),
    )
    .await;
    let attachment = id(&up);
    assert_eq!(up["name"], "holidaygnp.png");
    assert_eq!(up["content_type"], "image/png");
    assert_eq!(up["size"], picture.len());
    assert_eq!(
        (up["width"].as_i64(), up["height"].as_i64()),
        (Some(800), Some(600))
    );
    let download = format!("/api/attachments/{attachment}/download/");
    let thumbnail = format!("/api/attachments/{attachment}/thumbnail/");
    assert_eq!(up["url"], download);
    assert_eq!(up["thumbnail_url"], thumbnail);

    // Before it is sent, only its uploader sees it.
    assert_eq!(
        alice
            .get(&format!("/api/attachments/{attachment}/"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        raw(&bob, &download, &[]).await.status,
        StatusCode::NOT_FOUND
    );

    let sent = send_with(&alice, chat, "look", &[attachment]).await;
    assert_eq!(sent.status, StatusCode::CREATED, "{}", sent.body);
    assert_eq!(sent.body["attachments"][0], up);

    // Live: the richer protocol carries the attachments; the original's frame is unchanged.
    let live = bob_v2.next_message().await;
    assert_eq!(live["attachments"][0]["id"], attachment);
    let original = bob_original.next_message().await;
    assert_eq!(original["content"], "look");
    assert!(original.get("attachments").is_none(), "{original}");

    // History, for any member.
    let history = bob.chat_messages(chat).await;
    assert_eq!(history[0]["attachments"][0]["name"], "holidaygnp.png");

    let got = raw(&bob, &download, &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.bytes, picture);
    assert_eq!(got.header("content-type"), "image/png");
    assert!(
        got.header("content-disposition").starts_with("inline;"),
        "{}",
        got.header("content-disposition")
    );
    assert_eq!(
        got.header("etag"),
        format!("\"{}\"", hex::encode(Sha256::digest(&picture)))
    );
    assert_eq!(got.header("x-content-type-options"), "nosniff");

    let small = raw(&bob, &thumbnail, &[]).await;
    assert_eq!(small.status, StatusCode::OK);
    assert_eq!(small.header("content-type"), "image/jpeg");
    let decoded = image::load_from_memory(&small.bytes).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (400, 300));

    // Outsiders get 404 for everything; staff may see it.
    for path in [
        &download,
        &thumbnail,
        &format!("/api/attachments/{attachment}/"),
    ] {
        assert_eq!(
            raw(&carol, path, &[]).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
        assert_eq!(
            raw(&app.client(), path, &[]).await.status,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    assert_eq!(raw(&staff, &download, &[]).await.bytes, picture);
    assert_eq!(
        raw(&bob, "/api/attachments/999999/download/", &[])
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // A member who leaves loses access.
    let left = bob
        .post(&format!("/api/chats/{chat}/leave/"), &json!({}))
        .await;
    assert!(left.status.is_success(), "{}", left.body);
    assert_eq!(
        raw(&bob, &download, &[]).await.status,
        StatusCode::NOT_FOUND
    );

    // A transparent image's thumbnail keeps its transparency (PNG); a file that is not an
    // image has no thumbnail.
    let glass = uploaded(&alice, chat, "glass.png", png(40, 20, true)).await;
    let glass_thumbnail = raw(&alice, glass["thumbnail_url"].as_str().unwrap(), &[]).await;
    assert_eq!(glass_thumbnail.header("content-type"), "image/png");
    let notes = uploaded(&alice, chat, "notes.txt", b"plain text".to_vec()).await;
    assert_eq!(notes["content_type"], "text/plain");
    assert!(
        notes.get("thumbnail_url").is_none() && notes.get("width").is_none(),
        "{notes}"
    );
    let path = format!("/api/attachments/{}/thumbnail/", id(&notes));
    assert_eq!(raw(&alice, &path, &[]).await.status, StatusCode::NOT_FOUND);
}

async fn ranges_and_validators_follow_rfc_9110(store: Store) {
    let app = spawn(store, |_| {}).await;
    let alice = app.user("alice").await;
    let chat = alice.create_chat("files", &[]).await;
    let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let up = uploaded(&alice, chat, "data.bin", bytes.clone()).await;
    send_with(&alice, chat, "data", &[id(&up)]).await;
    let path = up["url"].as_str().unwrap().to_owned();
    let etag = raw(&alice, &path, &[]).await.header("etag").to_owned();

    let part = raw(&alice, &path, &[("Range", "bytes=10-19")]).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.bytes, bytes[10..20]);
    assert_eq!(part.header("content-range"), "bytes 10-19/10000");
    let tail = raw(&alice, &path, &[("Range", "bytes=-5")]).await;
    assert_eq!(tail.bytes, bytes[9995..]);
    assert_eq!(tail.header("content-range"), "bytes 9995-9999/10000");
    let open = raw(&alice, &path, &[("Range", "bytes=9990-")]).await;
    assert_eq!(open.bytes, bytes[9990..]);
    // Past the end: 416 with the size; a range running past the end is cut to it.
    let beyond = raw(&alice, &path, &[("Range", "bytes=20000-")]).await;
    assert_eq!(beyond.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(beyond.header("content-range"), "bytes */10000");
    let long = raw(&alice, &path, &[("Range", "bytes=9998-20000")]).await;
    assert_eq!(long.bytes, bytes[9998..]);
    // Malformed, several ranges, or an If-Range that is not current: the whole file.
    for headers in [
        vec![("Range", "bytes=abc")],
        vec![("Range", "bytes=0-1,5-6")],
        vec![("Range", "bytes=0-1"), ("If-Range", "\"stale\"")],
    ] {
        let whole = raw(&alice, &path, &headers).await;
        assert_eq!(whole.status, StatusCode::OK, "{headers:?}");
        assert_eq!(whole.bytes.len(), 10_000);
    }
    let current = raw(
        &alice,
        &path,
        &[("Range", "bytes=0-1"), ("If-Range", &etag)],
    )
    .await;
    assert_eq!(current.status, StatusCode::PARTIAL_CONTENT);

    let cached = raw(&alice, &path, &[("If-None-Match", &etag)]).await;
    assert_eq!(cached.status, StatusCode::NOT_MODIFIED);
    assert!(cached.bytes.is_empty());
    assert_eq!(cached.header("etag"), etag);
    let changed = raw(&alice, &path, &[("If-None-Match", "\"other\"")]).await;
    assert_eq!(changed.status, StatusCode::OK);
}

async fn oversize_spoofed_empty_and_bomb_uploads_are_refused(store: Store) {
    let app = spawn(store, |c| c.attachments.max_bytes = 50_000).await;
    let alice = app.user("alice").await;
    let carol = app.user("carol").await;
    let chat = alice.create_chat("files", &[]).await;

    let big = upload(&alice, chat, "big.bin", None, vec![7u8; 50_001]).await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", big.body);
    assert!(
        big.body["detail"].as_str().unwrap().contains("50000 bytes"),
        "{}",
        big.body
    );
    assert_eq!(
        upload(&alice, chat, "fits.bin", None, vec![7u8; 50_000])
            .await
            .status,
        StatusCode::CREATED
    );

    let html = b"<!DOCTYPE html><html><script>alert(1)</script></html>".to_vec();
    for (name, claimed) in [
        ("cat.png", Some("image/png")),
        ("cat.png", None),
        ("cat", Some("image/gif")),
    ] {
        let spoofed = upload(&alice, chat, name, claimed, html.clone()).await;
        assert_eq!(
            spoofed.status,
            StatusCode::BAD_REQUEST,
            "{name} {claimed:?}"
        );
        assert!(
            spoofed.body["detail"]
                .as_str()
                .unwrap()
                .contains("text/html"),
            "{}",
            spoofed.body
        );
    }
    // A claim that is not an image is not judged: the type comes from the bytes anyway.
    let page = upload(&alice, chat, "page.txt", Some("text/plain"), html.clone()).await;
    assert_eq!(page.status, StatusCode::CREATED);
    assert_eq!(page.body["content_type"], "text/html");

    let empty = upload(&alice, chat, "empty.txt", None, Vec::new()).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);

    // A decompression bomb: a tiny PNG declaring 30,000 × 30,000 pixels.
    let mut bomb = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(30_000u32.to_be_bytes());
    ihdr.extend(30_000u32.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    bomb.extend(13u32.to_be_bytes());
    bomb.extend(&ihdr);
    bomb.extend(crc32fast::hash(&ihdr).to_be_bytes());
    let refused = upload(&alice, chat, "bomb.png", Some("image/png"), bomb).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("too large"),
        "{}",
        refused.body
    );

    // Not a participant; not multipart; no file part.
    assert_eq!(
        upload(&carol, chat, "x.txt", None, b"x".to_vec())
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let json_body = alice
        .post(
            &format!("/api/chats/{chat}/attachments/"),
            &json!({"file": "x"}),
        )
        .await;
    assert_eq!(
        json_body.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "{}",
        json_body.body
    );
    let mut request = alice
        .request(Method::POST, &format!("/api/chats/{chat}/attachments/"))
        .multipart(Form::new().text("other", "value"));
    request = request.header("X-CSRFToken", alice.csrf().unwrap());
    let no_file = alice.send(request).await;
    assert_eq!(no_file.status, StatusCode::BAD_REQUEST);
    // Without the CSRF header, a cookie-authenticated upload is refused like any write.
    let request = alice
        .request(Method::POST, &format!("/api/chats/{chat}/attachments/"))
        .multipart(Form::new().part("file", Part::bytes(b"x".to_vec()).file_name("x.txt")));
    assert_eq!(alice.send(request).await.status, StatusCode::FORBIDDEN);
}

async fn active_content_is_served_so_that_it_cannot_script_the_origin(store: Store) {
    let app = spawn(store, |_| {}).await;
    let alice = app.user("alice").await;
    let chat = alice.create_chat("files", &[]).await;
    let svg = br#"<svg xmlns="http://www.w3.org/2000/svg" onload="fetch('/api/me/')"><script>alert(document.cookie)</script></svg>"#.to_vec();
    let html = b"<html><body><script>alert(document.cookie)</script></body></html>".to_vec();
    for (name, claimed, bytes, sniffed) in [
        ("drawing.svg", Some("image/svg+xml"), svg, "image/svg+xml"),
        ("page.html", Some("text/html"), html, "text/html"),
    ] {
        let up = upload(&alice, chat, name, claimed, bytes.clone()).await;
        assert_eq!(up.status, StatusCode::CREATED, "{}", up.body);
        assert_eq!(up.body["content_type"], sniffed);
        assert!(up.body.get("thumbnail_url").is_none());
        send_with(&alice, chat, "", &[id(&up.body)]).await;
        let got = raw(&alice, up.body["url"].as_str().unwrap(), &[]).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.bytes, bytes);
        assert_eq!(
            got.header("content-type"),
            "application/octet-stream",
            "{name}"
        );
        assert!(
            got.header("content-disposition").starts_with("attachment;"),
            "{name}"
        );
        assert!(got.header("content-disposition").contains(name), "{name}");
        assert_eq!(got.header("x-content-type-options"), "nosniff");
        assert!(got.header("content-security-policy").contains("sandbox"));
    }
}

async fn a_message_carries_only_its_senders_unsent_uploads_to_its_chat(store: Store) {
    let app = spawn(store, |_| {}).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let bob_id = id(&bob.me().await);
    let chat = alice.create_chat("one", &[bob_id]).await;
    let other = alice.create_chat("two", &[bob_id]).await;
    let mine = id(&uploaded(&alice, chat, "a.txt", b"a".to_vec()).await);
    let bobs = id(&uploaded(&bob, chat, "b.txt", b"b".to_vec()).await);
    let elsewhere = id(&uploaded(&alice, other, "c.txt", b"c".to_vec()).await);

    for ids in [vec![bobs], vec![elsewhere], vec![mine, mine], vec![999_999]] {
        let refused = send_with(&alice, chat, "x", &ids).await;
        assert_eq!(
            refused.status,
            StatusCode::BAD_REQUEST,
            "{ids:?}: {}",
            refused.body
        );
        assert!(refused.body["attachments"].is_array(), "{}", refused.body);
    }
    let eleven: Vec<i64> = (0..11).map(|i| 1_000 + i).collect();
    let refused = send_with(&alice, chat, "x", &eleven).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(
        refused.body["attachments"][0]
            .as_str()
            .unwrap()
            .contains("10"),
        "{}",
        refused.body
    );
    // Nothing was sent by the refusals.
    assert!(alice
        .chat_messages(chat)
        .await
        .as_array()
        .unwrap()
        .is_empty());

    // Only files, no text; ten at once, in the order given.
    let mut ten = Vec::new();
    for i in 0..10 {
        ten.push(id(&uploaded(
            &alice,
            chat,
            &format!("{i}.txt"),
            format!("file {i}").into_bytes(),
        )
        .await));
    }
    ten.reverse();
    let response = alice
        .post(
            &format!("/api/chats/{chat}/send_message/"),
            &json!({"attachments": ten}),
        )
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
    assert_eq!(response.body["content"], "");
    let carried: Vec<i64> = response.body["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(id)
        .collect();
    assert_eq!(carried, ten);
    // Without attachments, content is still required.
    let blank = alice
        .post(
            &format!("/api/chats/{chat}/send_message/"),
            &json!({"content": " "}),
        )
        .await;
    assert_eq!(blank.status, StatusCode::BAD_REQUEST);

    // Sent once only.
    let again = send_with(&alice, chat, "again", &[ten[0]]).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);

    // Over the socket (mrm.v2): the same rules, the same answer.
    let mut socket = alice.ws_v2(chat).await;
    let mut original = alice.ws(chat).await;
    socket
        .send_json(json!({"type": "message", "content": "", "attachments": [mine]}))
        .await;
    let frame = socket.next_message().await;
    assert_eq!(frame["attachments"][0]["id"], mine);
    assert_eq!(frame["content"], "");
    // The original protocol never carried a blank message: there, the files are named.
    let plain = original.next_message().await;
    assert_eq!(plain["content"], "📎 a.txt");
    assert!(plain.get("attachments").is_none(), "{plain}");
    socket
        .send_json(json!({"type": "message", "content": "x", "attachments": [bobs]}))
        .await;
    let error = socket.next_of("error").await;
    assert!(
        error["message"].as_str().unwrap().contains("attachments"),
        "{error}"
    );
    socket
        .send_json(json!({"type": "message", "content": "x", "attachments": "nope"}))
        .await;
    let error = socket.next_of("error").await;
    assert_eq!(
        error["message"],
        "attachments must be a list of attachment ids"
    );
}

async fn what_nothing_refers_to_is_removed_and_shared_content_stays(store: Store) {
    let app = spawn(store, |_| {}).await;
    let alice = app.user("alice").await;
    let chat = alice.create_chat("one", &[]).await;
    let other = alice.create_chat("two", &[]).await;
    let hour = std::time::Duration::from_secs(3600);

    // An upload never sent: kept through its grace period, removed after it.
    let orphan_bytes = b"never sent".to_vec();
    let orphan = id(&uploaded(&alice, chat, "orphan.txt", orphan_bytes.clone()).await);
    assert_eq!(sweep(&app, hour).await.expired, 0);
    assert!(stored(&app, &orphan_bytes, false).await);
    let swept = sweep(&app, std::time::Duration::ZERO).await;
    assert_eq!((swept.expired, swept.objects), (1, 1));
    assert!(!stored(&app, &orphan_bytes, false).await);
    let path = format!("/api/attachments/{orphan}/");
    assert_eq!(alice.get(&path).await.status, StatusCode::NOT_FOUND);

    // The same bytes in two messages are one object; deleting one message keeps it.
    let picture = png(64, 64, false);
    let first = id(&uploaded(&alice, chat, "one.png", picture.clone()).await);
    let second = id(&uploaded(&alice, other, "two.png", picture.clone()).await);
    let kept = id(&send_with(&alice, chat, "first", &[first]).await.body);
    let gone = id(&send_with(&alice, other, "second", &[second]).await.body);
    assert_eq!(
        alice
            .delete(&format!("/api/chats/{other}/messages/{gone}/"))
            .await
            .status,
        StatusCode::OK
    );
    let deleted = alice.chat_messages(other).await;
    assert!(deleted[0].get("attachments").is_none(), "{deleted}");
    assert_eq!(sweep(&app, hour).await.objects, 0);
    assert!(stored(&app, &picture, false).await && stored(&app, &picture, true).await);
    let download = format!("/api/attachments/{first}/download/");
    assert_eq!(raw(&alice, &download, &[]).await.bytes, picture);
    assert_eq!(
        raw(&alice, &format!("/api/attachments/{second}/download/"), &[])
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Deleting the last message that holds it removes the object and its thumbnail, by the
    // sweep the deletion starts (the periodic one is an hour away here).
    assert_eq!(
        alice
            .delete(&format!("/api/chats/{chat}/messages/{kept}/"))
            .await
            .status,
        StatusCode::OK
    );
    removed_soon(&app, &picture).await;

    // Deleting a chat removes what only its messages held.
    let bytes = b"in a chat about to go".to_vec();
    let third = id(&uploaded(&alice, chat, "c.txt", bytes.clone()).await);
    send_with(&alice, chat, "c", &[third]).await;
    assert_eq!(
        alice.delete(&format!("/api/chats/{chat}/")).await.status,
        StatusCode::NO_CONTENT
    );
    // The sweep the deletion starts may be removing it while this one runs: either finishes.
    sweep(&app, hour).await;
    removed_soon(&app, &bytes).await;

    // An upload of content being removed is stored anew: hold, write, record.
    let again = uploaded(&alice, other, "again.png", picture.clone()).await;
    send_with(&alice, other, "back", &[id(&again)]).await;
    assert_eq!(
        raw(&alice, again["url"].as_str().unwrap(), &[]).await.bytes,
        picture
    );
}

async fn the_quota_counts_uploads_until_they_are_deleted(store: Store) {
    let app = spawn(store, |c| c.attachments.quota_bytes = 3_000).await;
    let alice = app.user("alice").await;
    let chat = alice.create_chat("one", &[]).await;
    let first = uploaded(&alice, chat, "a.bin", vec![1u8; 2_000]).await;
    let over = upload(&alice, chat, "b.bin", None, vec![2u8; 1_500]).await;
    assert_eq!(over.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        over.body["detail"]
            .as_str()
            .unwrap()
            .contains("2000 of 3000"),
        "{}",
        over.body
    );
    // Identical bytes count again: the quota is what each user uploaded.
    assert_eq!(
        upload(&alice, chat, "a2.bin", None, vec![1u8; 2_000])
            .await
            .status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    uploaded(&alice, chat, "c.bin", vec![3u8; 1_000]).await;

    // Deleting the message that carries an upload frees its bytes.
    let message = id(&send_with(&alice, chat, "a", &[id(&first)]).await.body);
    alice
        .delete(&format!("/api/chats/{chat}/messages/{message}/"))
        .await;
    uploaded(&alice, chat, "d.bin", vec![4u8; 1_500]).await;
}

/// With `MRM_S3_PRESIGNED_SECONDS`, a member's download is a redirect to a URL the store signed,
/// which serves the bytes with the server's own type and disposition; outsiders still get 404.
#[tokio::test]
async fn s3_downloads_redirect_to_signed_urls_when_asked() {
    let app = spawn(Store::S3, |c| {
        c.attachments.s3_presigned = Some(std::time::Duration::from_secs(60))
    })
    .await;
    let alice = app.user("alice").await;
    let carol = app.user("carol").await;
    let chat = alice.create_chat("files", &[]).await;
    let svg =
        br#"<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>"#.to_vec();
    let up = uploaded(&alice, chat, "drawing.svg", svg.clone()).await;
    send_with(&alice, chat, "", &[id(&up)]).await;
    let path = up["url"].as_str().unwrap();

    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let token = app.bearer("alice").await.bearer.unwrap();
    let answer = no_redirects
        .get(format!("http://{}{path}", app.addr))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::FOUND);
    assert_eq!(answer.headers()["cache-control"], "no-store");
    let location = answer.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&s3_endpoint()), "{location}");
    assert!(location.contains("X-Amz-Signature="), "{location}");
    assert!(
        location.contains("response-content-disposition=attachment"),
        "{location}"
    );

    // The signed URL needs no credentials, and serves the file as the server would have.
    let fetched = reqwest::get(&location).await.unwrap();
    assert_eq!(fetched.status(), StatusCode::OK);
    assert_eq!(
        fetched.headers()["content-type"],
        "application/octet-stream"
    );
    assert!(fetched.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment;"));
    assert_eq!(fetched.bytes().await.unwrap().to_vec(), svg);

    assert_eq!(raw(&carol, path, &[]).await.status, StatusCode::NOT_FOUND);

    // Thumbnails still come through the server, for pages that load images from their own
    // origin only.
    let picture = uploaded(&alice, chat, "p.png", png(20, 20, false)).await;
    send_with(&alice, chat, "", &[id(&picture)]).await;
    let thumbnail = no_redirects
        .get(format!(
            "http://{}{}",
            app.addr,
            picture["thumbnail_url"].as_str().unwrap()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(thumbnail.status(), StatusCode::OK);
    assert_eq!(thumbnail.headers()["content-type"], "image/jpeg");
}

/// An upload whose hold ran out (it took longer than the hold) may find its blob removed by a
/// sweep and recreated by a newer upload of the same bytes: it must not record its attachment
/// against that newer copy, whose objects may not be written yet.
#[tokio::test]
async fn an_upload_that_outlived_its_hold_is_not_recorded_against_a_newer_copy() {
    use mrm_chat::store::{
        self,
        attachments::{hold, record, Held, NewAttachment, NewBlob, NotRecorded},
    };
    let app = spawn(Store::Local, |_| {}).await;
    let alice = app.user("alice").await;
    let alice_id = id(&alice.me().await);
    let chat = alice.create_chat("files", &[]).await;
    let digest = hex::encode(Sha256::digest(b"abc"));
    let blob = NewBlob {
        digest: &digest,
        size: 3,
        content_type: "text/plain",
        width: None,
        height: None,
        thumbnail: None,
    };
    let hour = chrono::Duration::hours(1);
    let Held::Yes(stale) = hold(&app.db, &blob, store::now() - hour).await.unwrap() else {
        panic!("a new blob is held");
    };
    // The hold ran out and nothing refers to the blob: a sweep removes it.
    assert_eq!(
        sweep(&app, std::time::Duration::from_secs(3600))
            .await
            .objects,
        1
    );
    let Held::Yes(fresh) = hold(&app.db, &blob, store::now() + hour).await.unwrap() else {
        panic!("a removed blob is held anew");
    };
    let mut new = NewAttachment {
        chat_id: chat,
        uploader_id: alice_id,
        digest: &digest,
        name: "abc.txt",
        size: 3,
        hold_id: stale,
    };
    let refused = record(&app.db, &new, 1 << 30).await.unwrap();
    assert_eq!(refused.unwrap_err(), NotRecorded::BlobGone);
    new.hold_id = fresh;
    assert!(record(&app.db, &new, 1 << 30).await.unwrap().is_ok());
}
