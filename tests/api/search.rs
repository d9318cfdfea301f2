//! `GET /api/search/`: ranking, snippets, the query syntax, visibility, edits and deletions,
//! filters and paging, on whichever backend the suite runs.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{id, Client, TestApp};

/// The ids of a search's hits, in order (asserting it succeeded).
async fn found(client: &Client, query: &str) -> Vec<i64> {
    let response = client.get(&format!("/api/search/?{query}")).await;
    assert_eq!(
        response.status,
        StatusCode::OK,
        "{query}: {}",
        response.body
    );
    response
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|hit| id(&hit["message"]))
        .collect()
}

fn q(text: &str) -> String {
    format!("q={}", urlencoding(text))
}

fn urlencoding(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test]
async fn words_phrases_prefixes_and_exclusions_rank_and_highlight_alike_on_every_backend() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let chat = alice.create_chat("c", &[id(&bob.me().await)]).await;
    let brown = id(&alice.send_message(chat, "the quick brown fox").await);
    let triple = id(&bob.send_message(chat, "quick quick quick fox").await);
    let nandu = id(&alice.send_message(chat, "Ñandú runs fast").await);
    let mail = id(&alice.send_message(chat, "mail bob@example.com today").await);
    let net = id(&alice.send_message(chat, "Networking is fun").await);
    let html = id(&alice
        .send_message(chat, "<script>alert(1)</script> quick")
        .await);

    // More occurrences rank higher.
    let hits = found(&alice, &q("quick")).await;
    assert_eq!(hits.len(), 3, "{hits:?}");
    assert_eq!(hits[0], triple, "the most relevant first");
    assert!(hits.contains(&brown) && hits.contains(&html));

    // Phrases keep their order; prefixes; exclusions; case and diacritics fold.
    assert_eq!(found(&alice, &q("\"brown fox\"")).await, [brown]);
    assert!(found(&alice, &q("\"fox brown\"")).await.is_empty());
    assert_eq!(found(&alice, &q("netw*")).await, [net]);
    assert_eq!(found(&alice, &q("fox -brown")).await, [triple]);
    assert_eq!(found(&alice, &q("fox -\"quick brown\"")).await, [triple]);
    assert_eq!(found(&alice, &q("nandu")).await, [nandu]);
    assert_eq!(found(&alice, &q("ÑANDÚ RUNS")).await, [nandu]);
    // Punctuation separates words, in the text and in the query.
    assert_eq!(found(&alice, &q("example")).await, [mail]);
    assert_eq!(found(&alice, &q("bob@example.com")).await, [mail]);
    assert!(found(&alice, &q("missingword")).await.is_empty());
    // Letters that are not accented Latin ones are searched as typed, in any script; a letter
    // typed as a base and a combining accent is the same letter.
    let russian = id(&alice.send_message(chat, "какой сегодня день").await);
    assert_eq!(found(&alice, &q("КАКОЙ")).await, [russian]);
    let hindi = id(&alice.send_message(chat, "हिंदी में लिखो").await);
    assert_eq!(found(&alice, &q("हिंदी")).await, [hindi]);
    let decomposed = id(&alice.send_message(chat, "e\u{301}cole du soir").await);
    assert_eq!(found(&alice, &q("école")).await, [decomposed]);
    assert_eq!(found(&alice, &q("ecole")).await, [decomposed]);

    // The snippet marks what was asked for and escapes the rest.
    let response = alice.get(&format!("/api/search/?{}", q("quick"))).await;
    let snippet_of = |message: i64| {
        response
            .body
            .as_array()
            .unwrap()
            .iter()
            .find(|hit| id(&hit["message"]) == message)
            .unwrap()["snippet"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        snippet_of(html),
        "&lt;script&gt;alert(1)&lt;/script&gt; <mark>quick</mark>"
    );
    assert_eq!(
        snippet_of(triple),
        "<mark>quick</mark> <mark>quick</mark> <mark>quick</mark> fox"
    );
    assert_eq!(
        response.body[0]["message"]["content"], "quick quick quick fox",
        "the message as it is"
    );
}

#[tokio::test]
async fn among_equally_relevant_hits_the_newest_comes_first_and_pages_follow_the_cursor() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let chat = alice.create_chat("c", &[]).await;
    let mut sent = Vec::new();
    for _ in 0..5 {
        sent.push(id(&alice.send_message(chat, "same words here").await));
    }
    sent.reverse();
    assert_eq!(found(&alice, &q("words")).await, sent, "newest first");

    let mut seen = Vec::new();
    let mut next = Some(format!("/api/search/?{}&limit=2", q("words")));
    while let Some(path) = next {
        let page = alice.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let ids: Vec<i64> = page
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|hit| id(&hit["message"]))
            .collect();
        assert!(ids.len() <= 2);
        seen.extend(ids);
        next = page.next_link();
    }
    assert_eq!(seen, sent, "every hit once, in order, across pages");

    // Messages sent between pages do not shift them: the pages keep the first page's window.
    let first = alice
        .get(&format!("/api/search/?{}&limit=2", q("words")))
        .await;
    let newer = id(&alice.send_message(chat, "same words here again").await);
    let mut seen: Vec<i64> = first
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|hit| id(&hit["message"]))
        .collect();
    let mut next = first.next_link();
    while let Some(path) = next {
        let page = alice.get(&path).await;
        seen.extend(
            page.body
                .as_array()
                .unwrap()
                .iter()
                .map(|hit| id(&hit["message"])),
        );
        next = page.next_link();
    }
    assert_eq!(seen, sent, "the newer message waits for a new search");
    assert!(found(&alice, &q("words")).await.contains(&newer));
}

#[tokio::test]
async fn only_chats_one_takes_part_in_are_searched_and_leaving_ends_it() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let chat = alice.create_chat("c", &[id(&bob.me().await)]).await;
    let other = carol.create_chat("other", &[]).await;
    let here = id(&alice.send_message(chat, "secret plans").await);
    carol.send_message(other, "secret recipes").await;

    assert_eq!(found(&alice, &q("secret")).await, [here]);
    assert_eq!(found(&bob, &q("secret")).await, [here]);
    assert_eq!(found(&carol, &q("plans")).await, Vec::<i64>::new());
    bob.post(&format!("/api/chats/{chat}/leave/"), &json!({}))
        .await;
    assert!(
        found(&bob, &q("secret")).await.is_empty(),
        "a member who left finds nothing more"
    );
}

#[tokio::test]
async fn edits_and_deletions_are_reflected_at_once() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let chat = alice.create_chat("c", &[]).await;
    let sent = id(&alice.send_message(chat, "meet at the station").await);
    let path = format!("/api/chats/{chat}/messages/{sent}/");
    assert_eq!(found(&alice, &q("station")).await, [sent]);

    alice
        .patch(&path, &json!({"content": "meet at the harbour"}))
        .await;
    assert!(found(&alice, &q("station")).await.is_empty());
    assert_eq!(found(&alice, &q("harbour")).await, [sent]);
    let hit = alice.get(&format!("/api/search/?{}", q("harbour"))).await;
    assert_eq!(hit.body[0]["message"]["content"], "meet at the harbour");
    assert!(hit.body[0]["message"]["edited_at"].is_string());

    alice.delete(&path).await;
    assert!(found(&alice, &q("harbour")).await.is_empty());
    assert!(found(&alice, &q("meet")).await.is_empty());
}

#[tokio::test]
async fn filters_narrow_by_chat_sender_and_date() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let bob_id = id(&bob.me().await);
    let first = alice.create_chat("first", &[bob_id]).await;
    let second = alice.create_chat("second", &[bob_id]).await;
    let a1 = id(&alice.send_message(first, "report one").await);
    let b1 = id(&bob.send_message(first, "report two").await);
    let a2 = id(&alice.send_message(second, "report three").await);

    assert_eq!(
        found(&alice, &format!("{}&chat={first}", q("report"))).await,
        [b1, a1]
    );
    assert_eq!(
        found(&alice, &format!("{}&sender=alice", q("report"))).await,
        [a2, a1]
    );
    assert_eq!(
        found(&alice, &format!("{}&sender=bob&chat={second}", q("report"))).await,
        Vec::<i64>::new()
    );
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    assert!(found(&alice, &format!("{}&after={tomorrow}", q("report")))
        .await
        .is_empty());
    assert_eq!(
        found(&alice, &format!("{}&before={tomorrow}", q("report")))
            .await
            .len(),
        3
    );
    let sent_at: Value = alice.get(&format!("/api/messages/{b1}/")).await.body;
    let at = urlencoding(sent_at["timestamp"].as_str().unwrap());
    assert_eq!(
        found(&alice, &format!("{}&after={at}", q("report"))).await,
        [a2, b1],
        "at or after a moment"
    );
    assert_eq!(
        found(&alice, &format!("{}&before={at}", q("report"))).await,
        [a1]
    );
}

#[tokio::test]
async fn bad_searches_get_their_reason() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let cases: &[(&str, Value)] = &[
        ("", json!({"q": ["This field is required."]})),
        ("q=%20%20", json!({"q": ["This field is required."]})),
        (
            "q=-spam",
            json!({"q": ["Enter at least one word to search for."]}),
        ),
        (
            "q=a*",
            json!({"q": ["A prefix needs at least 2 characters before the *."]}),
        ),
        (
            "q=x&cursor=nonsense",
            json!({"cursor": ["Invalid cursor."]}),
        ),
        (
            "q=x&limit=101",
            json!({"limit": ["Ensure this value is less than or equal to 100."]}),
        ),
        (
            "q=x&after=yesterday",
            json!({"after": ["Enter a date as YYYY-MM-DD, or a date and time as in 2026-01-05T10:20:30Z."]}),
        ),
        (
            "q=a%00b",
            json!({"q": ["Null characters are not allowed."]}),
        ),
        (
            "q=%CC%81",
            json!({"q": ["Enter at least one word to search for."]}),
        ),
        (
            "q=%C2%BD+-foo",
            json!({"q": ["Enter at least one word to search for."]}),
        ),
        (
            "q=x&sender=a%00",
            json!({"sender": ["Null characters are not allowed."]}),
        ),
        (
            "q=x&before=-20000-01-01",
            json!({"before": ["Enter a date as YYYY-MM-DD, or a date and time as in 2026-01-05T10:20:30Z."]}),
        ),
        (
            "q=x&chat=-1",
            json!({"chat": ["A valid non-negative integer is required."]}),
        ),
    ];
    for (query, expected) in cases {
        let response = alice.get(&format!("/api/search/?{query}")).await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(&response.body, expected, "{query}");
    }
    let long = "a".repeat(501);
    let response = alice.get(&format!("/api/search/?q={long}")).await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        app.client().get("/api/search/?q=x").await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn searches_are_rate_limited_per_user() {
    let app = TestApp::spawn_with(|config| {
        config.searches_per_minute = 2.try_into().unwrap();
    })
    .await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    for _ in 0..2 {
        assert_eq!(alice.get("/api/search/?q=x").await.status, StatusCode::OK);
    }
    let limited = alice.get("/api/search/?q=x").await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.body
    );
    assert!(limited.headers.contains_key("retry-after"));
    // An invalid query costs nothing and says why; another user has a budget of their own.
    assert_eq!(
        alice.get("/api/search/?q=-x").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(bob.get("/api/search/?q=x").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_member_of_one_small_chat_among_busy_ones_finds_just_its_messages() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let busy = bob.create_chat("busy", &[]).await;
    let small = alice.create_chat("small", &[]).await;
    for i in 0..40 {
        bob.send_message(busy, &format!("apple number {i}")).await;
    }
    let first = id(&alice.send_message(small, "an apple a day").await);
    let second = id(&alice.send_message(small, "apple pie").await);
    let named = id(&alice
        .send_message(small, &format!("see c{small} and c{busy}"))
        .await);
    for i in 0..10 {
        bob.send_message(busy, &format!("apple again {i}")).await;
    }

    // Alice's chats hold a small part of all messages: her search names her chat in the
    // index's query (on SQLite), and finds exactly her matches, the newest first among equals.
    let hits = found(&alice, &q("apple")).await;
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert!(hits.contains(&first) && hits.contains(&second), "{hits:?}");
    assert_eq!(
        found(&alice, &format!("{}&chat={small}", q("apple")))
            .await
            .len(),
        2
    );
    // The chat's own token in the index is never a word of its messages.
    assert_eq!(found(&alice, &q(&format!("c{small}"))).await, [named]);
    assert_eq!(found(&alice, &q(&format!("c{busy}"))).await, [named]);
    assert!(found(&alice, &format!("{}&chat={busy}", q("apple")))
        .await
        .is_empty());
    // Bob, in the busy chat, finds his fifty and none of hers.
    let mut all = Vec::new();
    let mut query = format!("{}&limit=100", q("apple"));
    loop {
        let response = bob.get(&format!("/api/search/?{query}")).await;
        all.extend(
            response
                .body
                .as_array()
                .unwrap()
                .iter()
                .map(|h| id(&h["message"])),
        );
        match response.next_link() {
            Some(next) => query = next.split_once('?').unwrap().1.to_owned(),
            None => break,
        }
    }
    assert_eq!(all.len(), 50);
    assert!(!all.contains(&first) && !all.contains(&second));
}

/// Only the newest 2,000 matches a user may see are ranked: an older match, however relevant,
/// is beyond every page, and the pages hold the 2,000 exactly once each.
#[tokio::test]
async fn only_the_newest_two_thousand_matches_are_ranked() {
    use mrm_chat::store::messages::{insert_batch, NewMessage};
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let alice_id = id(&alice.me().await);
    let chat = alice.create_chat("many", &[]).await;
    let oldest = id(&alice
        .send_message(chat, "needle needle needle needle")
        .await);
    let contents: Vec<String> = (0..2_000).map(|i| format!("needle and hay {i}")).collect();
    let rows: Vec<NewMessage<'_>> = contents
        .iter()
        .map(|content| NewMessage {
            chat_id: chat,
            sender_id: alice_id,
            content,
            reply_to: None,
            attachments: &[],
        })
        .collect();
    for saved in insert_batch(&app.db, &rows).await.unwrap() {
        assert!(saved.is_ok());
    }

    let mut seen = std::collections::HashSet::new();
    let mut query = format!("{}&limit=100", q("needle"));
    loop {
        let response = alice.get(&format!("/api/search/?{query}")).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.body);
        for hit in response.body.as_array().unwrap() {
            assert!(seen.insert(id(&hit["message"])), "a hit came twice");
        }
        match response.next_link() {
            Some(next) => query = next.split_once('?').unwrap().1.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 2_000);
    assert!(
        !seen.contains(&oldest),
        "the 2,001st newest match was ranked"
    );
    // Narrowed so that it is among the newest 2,000 matches, it is found.
    let until_it = found(&alice, &format!("{}&chat={chat}", q("needle -hay"))).await;
    assert_eq!(until_it, [oldest]);
}
