//! Several server processes sharing one database and one Redis, or a Redis Cluster.

use std::{
    net::SocketAddr,
    process::{Child, Command},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use reqwest::StatusCode;
use serde_json::json;

use crate::{
    helpers::{id, start_server_process, Client, TestDatabase, WsClient, WsEvent, PASSWORD},
    redis_cluster::RedisCluster,
};

static PREFIXES: AtomicU32 = AtomicU32::new(0);

fn redis_url() -> String {
    std::env::var("MRM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A Redis key prefix of this test's own, whose keys are removed afterwards.
struct TestPrefix(String);

impl TestPrefix {
    fn new() -> TestPrefix {
        let run = std::env::var("MRM_TEST_RUN_ID").unwrap_or_else(|_| "local".into());
        TestPrefix(format!(
            "mrmtest:{run}:{}:{}",
            std::process::id(),
            PREFIXES.fetch_add(1, Ordering::Relaxed)
        ))
    }
}

impl Drop for TestPrefix {
    fn drop(&mut self) {
        let pattern = format!("{}:*", self.0);
        if let Ok(mut conn) = redis::Client::open(redis_url()).and_then(|c| c.get_connection()) {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query(&mut conn)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
            }
        }
    }
}

/// One `mrm-chat serve` process.
struct Node {
    addr: SocketAddr,
    child: Child,
    _files: tempfile::TempDir,
}

impl Node {
    /// A node with these further environment variables.
    fn start_with(database_url: &str, prefix: &str, env: &[(&str, String)]) -> Node {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mrm-chat"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", database_url)
            .env("REDIS_URL", redis_url())
            .env("MRM_REDIS_PREFIX", prefix)
            .env("MRM_PRESENCE_TTL_SECONDS", "2")
            .env("MRM_MESSAGES_PER_SECOND", "100000")
            .env("MRM_LOGIN_ATTEMPTS_PER_MINUTE", "10000")
            .env("MRM_PASSWORD_ATTEMPTS_PER_MINUTE", "10000")
            .env("MRM_WS_QUEUE", "4096")
            .env("MRM_DB_MAX_CONNECTIONS", "8")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir(std::env::temp_dir());
        let (child, addr, _files) = start_server_process(&mut command);
        Node {
            addr,
            child,
            _files,
        }
    }

    fn client(&self) -> Client {
        Client::new(self.addr)
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Cluster {
    a: Node,
    b: Node,
    prefix: TestPrefix,
    _db: TestDatabase,
    /// The Redis Cluster of this test's own, when it runs on one (dropped after the nodes).
    redis: Option<RedisCluster>,
}

async fn cluster() -> Cluster {
    cluster_with(&[]).await
}

/// Two nodes with these further environment variables.
async fn cluster_with(env: &[(&str, String)]) -> Cluster {
    let db = TestDatabase::create().await;
    let prefix = TestPrefix::new();
    // One after the other: the first applies the migrations.
    let a = Node::start_with(&db.url, &prefix.0, env);
    let b = Node::start_with(&db.url, &prefix.0, env);
    Cluster {
        a,
        b,
        prefix,
        _db: db,
        redis: None,
    }
}

/// Two nodes on a Redis Cluster of this test's own (three masters with a replica each).
async fn on_redis_cluster(env: &[(&str, String)]) -> Cluster {
    on_redis_cluster_with(None, env).await
}

/// [`on_redis_cluster`], with the cluster's node timeout, if given.
async fn on_redis_cluster_with(node_timeout_ms: Option<u64>, env: &[(&str, String)]) -> Cluster {
    let redis = tokio::task::spawn_blocking(move || match node_timeout_ms {
        Some(timeout) => RedisCluster::start_with(timeout),
        None => RedisCluster::start(),
    })
    .await
    .unwrap();
    let mut env = env.to_vec();
    env.push(("REDIS_URL", redis.url()));
    let mut cluster = cluster_with(&env).await;
    cluster.redis = Some(redis);
    cluster
}

/// Two nodes on the shared Redis, or on a Redis Cluster of their own.
async fn nodes_on(redis_cluster: bool, env: &[(&str, String)]) -> Cluster {
    if redis_cluster {
        on_redis_cluster(env).await
    } else {
        cluster_with(env).await
    }
}

/// Registers on any node and logs in on `node`.
async fn user_on(node: &Node, username: &str) -> Client {
    let client = node.client();
    let response = client
        .post(
            "/api/register/",
            &json!({"username": username, "email": format!("{username}@example.com"),
                    "password": PASSWORD, "password_confirm": PASSWORD}),
        )
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
    client.login(username, PASSWORD).await;
    client
}

/// Reads message frames until `count` arrived; returns their seqs in arrival order.
async fn collect(socket: &mut WsClient, count: usize) -> Vec<i64> {
    let mut seqs = Vec::with_capacity(count);
    while seqs.len() < count {
        seqs.push(socket.next_message().await["seq"].as_i64().unwrap());
    }
    seqs
}

#[tokio::test]
async fn a_login_on_one_node_works_on_the_other() {
    let cluster = cluster().await;
    let on_a = user_on(&cluster.a, "alice").await;
    let me = on_a.me().await;

    // The same cookies, presented to node B.
    let on_b = cluster.b.client();
    on_b.set_cookie("sessionid", &on_a.cookie("sessionid").unwrap());
    on_b.set_cookie("csrftoken", &on_a.csrf().unwrap());
    assert_eq!(on_b.me().await, me);
    let chat = on_b.create_chat("made on b", &[]).await;
    assert_eq!(
        on_a.get(&format!("/api/chats/{chat}/")).await.status,
        StatusCode::OK
    );

    let token = cluster
        .a
        .client()
        .post(
            "/api/tokens/",
            &json!({"username": "alice", "password": PASSWORD}),
        )
        .await
        .body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(Client::with_bearer(cluster.b.addr, &token).me().await, me);
    let ready = cluster.b.client().get("/readyz").await.body;
    assert_eq!(ready["redis"], "ok");
}

#[tokio::test]
async fn messages_from_both_nodes_reach_every_client_once_in_order() {
    messages_from_both_nodes_arrive_once_in_order(false).await;
}

#[tokio::test]
async fn messages_from_both_nodes_reach_every_client_once_in_order_on_a_redis_cluster() {
    messages_from_both_nodes_arrive_once_in_order(true).await;
}

async fn messages_from_both_nodes_arrive_once_in_order(redis_cluster: bool) {
    let env = [("MRM_METRICS_TOKEN", METRICS_TOKEN.to_owned())];
    let cluster = nodes_on(redis_cluster, &env).await;
    let alice = user_on(&cluster.a, "alice").await;
    let bob = user_on(&cluster.b, "bob").await;
    let carol = user_on(&cluster.a, "carol").await;
    let dave = user_on(&cluster.b, "dave").await;
    let ids = [
        id(&bob.me().await),
        id(&carol.me().await),
        id(&dave.me().await),
    ];
    let chat = alice.create_chat("cross", &ids).await;
    let mut alice_ws = alice.ws(chat).await;
    let mut bob_ws = bob.ws(chat).await;
    let mut carol_ws = carol.ws(chat).await;
    let mut dave_ws = dave.ws(chat).await;
    wait_for_subscriptions(&cluster.a, 1.0).await;
    wait_for_subscriptions(&cluster.b, 1.0).await;

    let total = 1000;
    let send_all = |client: Client, tag: &'static str| {
        tokio::spawn(async move {
            let mut socket = client.ws(chat).await;
            for i in 0..total / 2 {
                socket
                    .send_json(json!({"content": format!("{tag}{i}")}))
                    .await;
            }
            socket
        })
    };
    let from_a = send_all(alice.clone(), "a");
    let from_b = send_all(bob.clone(), "b");
    let expected: Vec<i64> = (1..=total as i64).collect();
    for socket in [&mut alice_ws, &mut bob_ws, &mut carol_ws, &mut dave_ws] {
        assert_eq!(collect(socket, total).await, expected);
    }
    from_a.await.unwrap();
    from_b.await.unwrap();
    // They came through the bus, not only from the database: each node heard every message
    // the other sent.
    for node in [&cluster.a, &cluster.b] {
        let heard = chat_events_heard(node).await;
        assert!(
            heard >= (total / 2) as f64,
            "heard {heard} of the other's messages"
        );
    }
    // And nothing extra arrives afterwards.
    alice.send_message(chat, "last").await;
    assert_eq!(dave_ws.next_message().await["seq"], total as i64 + 1);
}

#[tokio::test]
async fn a_lost_redis_connection_loses_no_message() {
    let cluster = cluster().await;
    let alice = user_on(&cluster.a, "alice").await;
    let bob = user_on(&cluster.b, "bob").await;
    let chat = bob.create_chat("flaky", &[id(&alice.me().await)]).await;
    let mut on_a = alice.ws(chat).await;

    let total = 300;
    let sender = tokio::spawn(async move {
        for i in 0..total {
            bob.send_message(chat, &format!("m{i}")).await;
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    // Cut both nodes' subscriptions, twice, while messages flow.
    let mut redis = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let prefix = cluster.prefix.0.clone();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut redis)
            .await
            .unwrap();
        let victims: Vec<&str> = clients
            .lines()
            .filter(|l| l.contains(&format!("name={prefix}:")))
            .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
            .collect();
        assert_eq!(victims.len(), 2, "one listener per node: {clients}");
        for victim in victims {
            let _: i64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(victim)
                .query_async(&mut redis)
                .await
                .unwrap();
        }
    }
    sender.await.unwrap();
    assert_eq!(
        collect(&mut on_a, total).await,
        (1..=total as i64).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn clients_of_a_killed_node_resume_on_the_other_and_its_users_go_offline() {
    let mut cluster = cluster().await;
    let alice = user_on(&cluster.a, "alice").await;
    let bob = user_on(&cluster.b, "bob").await;
    let chat = bob.create_chat("failover", &[id(&alice.me().await)]).await;
    let mut bob_ws = bob.ws_v2(chat).await;
    bob_ws.presence_becomes(&["bob"]).await;
    let mut alice_ws = alice.ws(chat).await;
    bob_ws.presence_becomes(&["alice", "bob"]).await;

    let total = 200;
    let sender = tokio::spawn({
        let bob = bob.clone();
        async move {
            for i in 0..total {
                bob.send_message(chat, &format!("m{i}")).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    let mut seen = collect(&mut alice_ws, 20).await;
    cluster.a.kill();
    // Alice's client notices and resumes on node B from the last seq it has.
    loop {
        match alice_ws.next().await {
            WsEvent::Json(frame) if frame["type"] == "message" => {
                seen.push(frame["message"]["seq"].as_i64().unwrap())
            }
            WsEvent::Json(_) => {}
            WsEvent::Closed(_) => break,
        }
    }
    // Node B shows alice offline within the presence bound (TTL 2 s plus a heartbeat).
    let gone = bob_ws.presence_becomes(&["bob"]).await;
    assert!(gone < Duration::from_secs(5), "took {gone:?}");

    let on_b = cluster.b.client();
    on_b.set_cookie("sessionid", &alice.cookie("sessionid").unwrap());
    let mut resumed = on_b.ws_after(chat, *seen.last().unwrap()).await;
    sender.await.unwrap();
    let rest = collect(&mut resumed, total - seen.len()).await;
    seen.extend(rest);
    assert_eq!(seen, (1..=total as i64).collect::<Vec<_>>());
}

#[tokio::test]
async fn typing_and_presence_cross_nodes() {
    let cluster = cluster().await;
    let alice = user_on(&cluster.a, "alice").await;
    let bob = user_on(&cluster.b, "bob").await;
    let chat = alice.create_chat("talk", &[id(&bob.me().await)]).await;
    let mut alice_ws = alice.ws_v2(chat).await;
    alice_ws.presence_becomes(&["alice"]).await;
    let mut bob_ws = bob.ws_v2(chat).await;
    bob_ws.presence_becomes(&["alice", "bob"]).await;
    alice_ws.presence_becomes(&["alice", "bob"]).await;

    bob_ws.send_json(json!({"type": "typing"})).await;
    let typing = alice_ws.next_of("typing").await;
    assert_eq!(typing["user"]["username"], "bob");

    drop(bob_ws);
    alice_ws.presence_becomes(&["alice"]).await;
}

/// How long a socket on another node may take to close once a credential ended: one Redis
/// round trip, here bounded generously so that a loaded 2-core machine (two servers, a
/// command-line process and Redis at once) does not fail it; it takes milliseconds when idle.
const PROMPTLY: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_logout_on_one_node_closes_that_sessions_sockets_on_the_other() {
    let cluster = cluster().await;
    let on_a = user_on(&cluster.a, "alice").await;
    let chat = on_a.create_chat("c", &[]).await;
    let ai_chat = id(&on_a
        .post("/api/ai/chats/", &json!({"title": "t"}))
        .await
        .body);
    // The same session, on node B.
    let on_b = cluster.b.client();
    on_b.set_cookie("sessionid", &on_a.cookie("sessionid").unwrap());
    let mut chat_socket = on_b.ws(chat).await;
    let mut ai_socket = on_b.ai_ws(ai_chat).await.unwrap();
    // Another session of the same user, on node B too.
    let elsewhere = cluster.b.client();
    elsewhere.login("alice", PASSWORD).await;
    let mut other_session = elsewhere.ws(chat).await;

    let response = on_a.post("/api/logout/", &json!({})).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(chat_socket.closed_within(PROMPTLY).await, Some(4001));
    assert_eq!(ai_socket.closed_within(PROMPTLY).await, Some(4001));
    elsewhere.send_message(chat, "still here").await;
    assert_eq!(other_session.next_message().await["content"], "still here");
}

#[tokio::test]
async fn changepassword_on_the_command_line_closes_the_users_sockets_on_every_node() {
    let cluster = cluster().await;
    let alice = user_on(&cluster.a, "alice").await;
    let chat = alice.create_chat("c", &[]).await;
    let on_b = cluster.b.client();
    on_b.set_cookie("sessionid", &alice.cookie("sessionid").unwrap());
    let mut on_a_socket = alice.ws(chat).await;
    let mut on_b_socket = on_b.ws(chat).await;

    let mut command = Command::new(env!("CARGO_BIN_EXE_mrm-chat"));
    let mut child = command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &cluster._db.url)
        .env("REDIS_URL", redis_url())
        .env("MRM_REDIS_PREFIX", &cluster.prefix.0)
        .env("RUST_LOG", "warn")
        .args(["changepassword", "alice"])
        .current_dir(std::env::temp_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run changepassword");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"a-new-passphrase\n").unwrap();
    }
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(on_a_socket.closed_within(PROMPTLY).await, Some(4001));
    assert_eq!(on_b_socket.closed_within(PROMPTLY).await, Some(4001));
}

/// `client`'s session, presented to `node`.
fn same_session_on(node: &Node, client: &Client) -> Client {
    let other = node.client();
    other.set_cookie("sessionid", &client.cookie("sessionid").unwrap());
    other.set_cookie("csrftoken", &client.csrf().unwrap());
    other
}

#[tokio::test]
async fn departures_on_one_node_close_sockets_on_the_other_and_frames_hide_emails() {
    let cluster = cluster().await;
    let owner = user_on(&cluster.a, "owner").await;
    let alice = user_on(&cluster.b, "alice").await;
    let bob = user_on(&cluster.b, "bob").await;
    let members = [id(&alice.me().await), id(&bob.me().await)];
    let bob_id = members[1];
    let chat = owner.create_chat("cross", &members).await;
    let mut owner_ws = owner.ws(chat).await;
    let mut alice_ws = alice.ws(chat).await;
    let mut bob_ws = bob.ws(chat).await;

    // A message crossing nodes shows its sender's address only to the sender.
    owner.send_message(chat, "from a").await;
    assert_eq!(
        owner_ws.next_message().await["sender"]["email"],
        "owner@example.com"
    );
    assert_eq!(alice_ws.next_message().await["sender"]["email"], "");
    assert_eq!(bob_ws.next_message().await["content"], "from a");
    bob_ws.send_json(json!({"content": "from b"})).await;
    assert_eq!(owner_ws.next_message().await["sender"]["email"], "");
    assert_eq!(
        bob_ws.next_message().await["sender"]["email"],
        "bob@example.com"
    );

    // Alice leaves through node A: her socket on node B closes.
    let alice_on_a = same_session_on(&cluster.a, &alice);
    let left = alice_on_a
        .post(&format!("/api/chats/{chat}/leave/"), &json!({}))
        .await;
    assert_eq!(left.status, StatusCode::NO_CONTENT);
    assert_eq!(alice_ws.closed().await, Some(4003));
    // Bob is removed through node A: his socket on node B closes too.
    let removed = owner
        .delete(&format!("/api/chats/{chat}/participants/{bob_id}/"))
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    assert_eq!(bob_ws.closed().await, Some(4003));
}

#[tokio::test]
async fn every_kind_of_log_event_on_one_node_reaches_v2_sockets_on_the_other_in_order() {
    let cluster = cluster().await;
    let alice = user_on(&cluster.a, "alice").await;
    let bob = user_on(&cluster.b, "bob").await;
    let carol = user_on(&cluster.b, "carol").await;
    let carol_id = id(&carol.me().await);
    let chat = alice.create_chat("talk", &[id(&bob.me().await)]).await;
    let mut alice_ws = alice.ws_v2(chat).await;

    // Bob (node b) and alice, the owner, through node b as well: every change is made on b.
    let owner = cluster.b.client();
    owner.login("alice", PASSWORD).await;
    let sent = bob.send_message(chat, "hello").await;
    let message = format!("/api/chats/{chat}/messages/{}/", id(&sent));
    bob.patch(&message, &json!({"content": "hello, edited"}))
        .await;
    bob.post(&format!("{message}reactions/"), &json!({"emoji": "👍"}))
        .await;
    bob.delete(&format!("{message}reactions/?emoji=%F0%9F%91%8D"))
        .await;
    owner.post(&format!("{message}pin/"), &json!({})).await;
    owner.delete(&format!("{message}pin/")).await;
    owner
        .put(&format!("/api/chats/{chat}/"), &json!({"name": "renamed"}))
        .await;
    owner
        .post(
            &format!("/api/chats/{chat}/participants/"),
            &json!({"participant_ids": [carol_id]}),
        )
        .await;
    owner
        .delete(&format!("/api/chats/{chat}/participants/{carol_id}/"))
        .await;
    bob.delete(&message).await;
    owner
        .patch(
            &format!("/api/chats/{chat}/"),
            &json!({"read_receipts": true}),
        )
        .await;
    bob.post(&format!("/api/chats/{chat}/read/"), &json!({"seq": 1}))
        .await;
    let kinds = [
        "message",
        "message_edited",
        "reaction_added",
        "reaction_removed",
        "message_pinned",
        "message_unpinned",
        "chat_renamed",
        "member_added",
        "member_removed",
        "message_deleted",
        "read_receipts_switched",
        "read_receipt",
    ];
    let mut seen = Vec::new();
    for _ in 0..kinds.len() {
        let frame = alice_ws.next_of_any(&kinds).await;
        let position = frame["seq"]
            .as_i64()
            .or_else(|| frame["message"]["seq"].as_i64())
            .unwrap();
        seen.push((frame["type"].as_str().unwrap().to_owned(), position));
    }
    let expected: Vec<(String, i64)> = kinds
        .iter()
        .zip(1..)
        .map(|(kind, position)| (kind.to_string(), position))
        .collect();
    assert_eq!(seen, expected);
}

/// Two nodes on a fake provider (with these further variables), alice logged in on both
/// (through the same session), and an AI chat of hers.
async fn ai_cluster(
    extra: &[(&str, String)],
) -> (crate::fake_openai::FakeOpenAi, Cluster, Client, Client, i64) {
    ai_nodes(false, extra).await
}

/// [`ai_cluster`], on the shared Redis or on a Redis Cluster of its own.
async fn ai_nodes(
    redis_cluster: bool,
    extra: &[(&str, String)],
) -> (crate::fake_openai::FakeOpenAi, Cluster, Client, Client, i64) {
    let fake = crate::fake_openai::FakeOpenAi::start().await;
    let mut env = vec![
        ("OPENAI_API_KEY", "test-key".to_owned()),
        ("OPENAI_BASE_URL", fake.base_url()),
        ("OPENAI_MODEL", crate::fake_openai::MODEL.to_owned()),
        ("MRM_AI_TITLES", "false".to_owned()),
    ];
    env.extend(extra.iter().cloned());
    let cluster = nodes_on(redis_cluster, &env).await;
    let on_a = user_on(&cluster.a, "alice").await;
    let on_b = cluster.b.client();
    on_b.set_cookie("sessionid", &on_a.cookie("sessionid").unwrap());
    on_b.set_cookie("csrftoken", &on_a.csrf().unwrap());
    let chat = id(&on_a
        .post("/api/ai/chats/", &json!({"title": "t"}))
        .await
        .body);
    (fake, cluster, on_a, on_b, chat)
}

#[tokio::test]
async fn an_ai_reply_on_one_node_streams_to_the_other_and_a_cancel_there_stops_it_upstream() {
    ai_reply_streams_across_nodes_and_cancels(false).await;
}

#[tokio::test]
async fn an_ai_reply_streams_across_nodes_and_cancels_on_a_redis_cluster() {
    ai_reply_streams_across_nodes_and_cancels(true).await;
}

async fn ai_reply_streams_across_nodes_and_cancels(redis_cluster: bool) {
    let (fake, _cluster, on_a, on_b, chat) = ai_nodes(redis_cluster, &[]).await;
    let mut watching = on_b.ai_ws_v2(chat).await;

    // A reply of 400 pieces, 50 ms apart, asked on node A: it runs there.
    let pieces: Vec<String> = (0..400).map(|i| format!("w{i} ")).collect();
    let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
    fake.then(crate::fake_openai::slow(&pieces, 50));
    let mut asking = on_a.ai_ws_v2(chat).await;
    asking.send_json(json!({"content": "a long story"})).await;
    assert_eq!(
        watching.next_of("user_message").await["message"]["content"],
        "a long story"
    );
    let mut seen_on_b = String::new();
    while seen_on_b.matches(' ').count() < 3 {
        let delta = watching.next_of("assistant_delta").await;
        seen_on_b.push_str(delta["message"]["delta"].as_str().unwrap());
    }
    assert!(seen_on_b.starts_with("w0 w1 w2 "), "{seen_on_b}");

    // A socket that joins on B mid-reply starts from the text so far.
    let mut late = on_b.ai_ws_v2(chat).await;
    let caught_up = late.next_of("assistant_delta").await;
    let so_far = caught_up["message"]["delta"].as_str().unwrap().to_owned();
    assert!(so_far.starts_with("w0 w1 w2 "), "{so_far}");

    // One reply per AI chat across nodes.
    let refused = on_b
        .post(
            &format!("/api/ai/chats/{chat}/send_message/"),
            &json!({"content": "again"}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);

    // Cancelled on B: node A drops the upstream request, and every socket gets what was written.
    let cancelled = on_b
        .post(&format!("/api/ai/chats/{chat}/cancel/"), &json!({}))
        .await;
    assert_eq!(cancelled.body, json!({"cancelled": true}));
    assert!(
        fake.wait_for_hangup().await,
        "the upstream request was dropped"
    );
    let (rest, last) = crate::helpers::read_reply(&mut watching).await;
    assert_eq!(last["finish_reason"], "cancelled");
    let content = last["content"].as_str().unwrap();
    assert_eq!(
        format!("{seen_on_b}{rest}"),
        content,
        "B saw every piece once, in order"
    );
    assert!(content.len() < pieces.join("").len());
    let (late_rest, late_last) = crate::helpers::read_reply(&mut late).await;
    assert_eq!(
        format!("{so_far}{late_rest}"),
        content,
        "no gap and no repeat after the catch-up"
    );
    assert_eq!(late_last["content"], content);
    let (_, on_a_last) = crate::helpers::read_reply(&mut asking).await;
    assert_eq!(on_a_last["content"], content);

    // The chat is free again at once, on either node; a reply run on B streams to A.
    fake.then(crate::fake_openai::reply("from b", 3, 2));
    watching.send_json(json!({"content": "short one"})).await;
    assert_eq!(
        asking.next_of("user_message").await["message"]["content"],
        "short one"
    );
    let (text, last) = crate::helpers::read_reply(&mut asking).await;
    assert_eq!(
        (text.as_str(), &last["content"]),
        ("from b", &json!("from b"))
    );
    let cancelled = on_a
        .post(&format!("/api/ai/chats/{chat}/cancel/"), &json!({}))
        .await;
    assert_eq!(
        cancelled.body,
        json!({"cancelled": false}),
        "nothing runs any more"
    );
}

#[tokio::test]
async fn a_reply_whose_node_dies_is_marked_interrupted_and_can_be_regenerated() {
    let fake = crate::fake_openai::FakeOpenAi::start().await;
    let env = [
        ("OPENAI_API_KEY", "test-key".to_owned()),
        ("OPENAI_BASE_URL", fake.base_url()),
        ("OPENAI_MODEL", crate::fake_openai::MODEL.to_owned()),
        ("MRM_AI_TITLES", "false".to_owned()),
        ("MRM_AI_REPLY_LEASE_SECONDS", "3".to_owned()),
    ];
    let mut cluster = cluster_with(&env).await;
    let on_a = user_on(&cluster.a, "alice").await;
    let on_b = cluster.b.client();
    on_b.set_cookie("sessionid", &on_a.cookie("sessionid").unwrap());
    on_b.set_cookie("csrftoken", &on_a.csrf().unwrap());
    let chat = id(&on_a
        .post("/api/ai/chats/", &json!({"title": "t"}))
        .await
        .body);
    let mut watching = on_b.ai_ws_v2(chat).await;

    let pieces: Vec<String> = (0..400).map(|i| format!("w{i} ")).collect();
    let whole = pieces.concat();
    let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
    fake.then(crate::fake_openai::slow(&pieces, 50));
    let mut asking = on_a.ai_ws_v2(chat).await;
    asking.send_json(json!({"content": "a long story"})).await;
    let mut seen = String::new();
    while seen.matches(' ').count() < 3 {
        let delta = watching.next_of("assistant_delta").await;
        seen.push_str(delta["message"]["delta"].as_str().unwrap());
    }
    cluster.a.kill();

    // Node B notices the claim lapse and settles the reply with the text streamed so far.
    let (rest, last) = crate::helpers::read_reply(&mut watching).await;
    assert_eq!(last["finish_reason"], "interrupted", "{last}");
    let content = last["content"].as_str().unwrap();
    assert!(content.starts_with(&format!("{seen}{rest}")), "{content}");
    assert!(whole.starts_with(content) && content.len() < whole.len());
    let shown = on_b.get(&format!("/api/ai/chats/{chat}/")).await.body;
    assert_eq!(shown["messages"][1]["finish_reason"], "interrupted");

    // And it can be answered again, on the node that is left.
    fake.then(crate::fake_openai::reply("whole answer", 3, 2));
    let again = on_b
        .post(&format!("/api/ai/chats/{chat}/regenerate/"), &json!({}))
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["content"], "whole answer");
    assert_eq!(again.body["siblings"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn rate_limits_are_shared_by_the_nodes() {
    rate_limits_are_shared(false).await;
}

#[tokio::test]
async fn rate_limits_are_shared_by_the_nodes_on_a_redis_cluster() {
    rate_limits_are_shared(true).await;
}

async fn rate_limits_are_shared(redis_cluster: bool) {
    let env = [("MRM_LOGIN_ATTEMPTS_PER_MINUTE", "3".to_owned())];
    let cluster = nodes_on(redis_cluster, &env).await;
    user_on(&cluster.a, "alice").await;
    let wrong = json!({"username": "alice", "password": "not the password"});
    let mut statuses = Vec::new();
    for node in [&cluster.a, &cluster.b, &cluster.a, &cluster.b, &cluster.a] {
        statuses.push(node.client().post("/api/login/", &wrong).await.status);
    }
    // alice's own login above spent one: two more anywhere, then every node refuses.
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS,
        ]
    );
}

#[tokio::test]
async fn a_users_concurrent_ai_replies_are_counted_on_every_node() {
    let limit = [("MRM_AI_MAX_CONCURRENT_PER_USER", "1".to_owned())];
    let (fake, _cluster, on_a, on_b, first) = ai_cluster(&limit).await;
    let second = id(&on_b
        .post("/api/ai/chats/", &json!({"title": "t2"}))
        .await
        .body);
    let pieces: Vec<String> = (0..200).map(|i| format!("w{i} ")).collect();
    let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
    fake.then(crate::fake_openai::slow(&pieces, 50));
    let mut asking = on_a.ai_ws_v2(first).await;
    asking.send_json(json!({"content": "a long story"})).await;
    asking.next_of("assistant_delta").await;
    // One reply runs on A: a second one for the same user, in another chat, on B, is refused.
    let refused = on_b
        .post(
            &format!("/api/ai/chats/{second}/send_message/"),
            &json!({"content": "and?"}),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.body
    );
    on_b.post(&format!("/api/ai/chats/{first}/cancel/"), &json!({}))
        .await;
    crate::helpers::read_reply(&mut asking).await;
    fake.then(crate::fake_openai::reply("now", 1, 1));
    let allowed = on_b
        .post(
            &format!("/api/ai/chats/{second}/send_message/"),
            &json!({"content": "and now?"}),
        )
        .await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.body);
}

const METRICS_TOKEN: &str = "cluster-scrape-token-0123456789";

/// A series of this node's metrics (summed over the labels not given).
async fn metric(node: &Node, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = reqwest::Client::new()
        .get(format!("http://{}/metrics", node.addr))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    crate::metrics::value(&text, name, labels)
}

/// Chat events this node heard from the other one.
async fn chat_events_heard(node: &Node) -> f64 {
    metric(
        node,
        "mrm_bus_events_received_total",
        &[("channel", "chat")],
    )
    .await
}

/// Waits (at most 5 s) until the node heard more chat events than `heard`.
async fn wait_to_hear_beyond(node: &Node, heard: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while chat_events_heard(node).await <= heard {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node heard nothing more from the other"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (at most 15 s) until exactly one client (node A) is subscribed to the channel, on any
/// node of its shard.
async fn subscribed_once_again(redis: &RedisCluster, channel: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while redis.shard_subscribers_anywhere(channel) != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "A never subscribed again after the failover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends messages on node B until node A hears one through the bus, at most 15 s: one sent
/// while a failover settles may reach A's socket only from the database (its shard did not
/// answer in time), never after.
async fn heard_live_again(cluster: &Cluster, sender: &Client, socket: &mut WsClient, chat: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    for i in 0.. {
        let heard = chat_events_heard(&cluster.a).await;
        let content = format!("live {i}");
        sender.send_message(chat, &content).await;
        assert_eq!(socket.next_message().await["content"], content);
        let wait = tokio::time::Instant::now() + Duration::from_millis(500);
        while tokio::time::Instant::now() < wait {
            if chat_events_heard(&cluster.a).await > heard {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "A never heard B live again"
        );
    }
}

/// Waits (at most 10 s) until the node listens to `count` chat channels.
async fn wait_for_subscriptions(node: &Node, count: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric(node, "mrm_bus_chat_subscriptions", &[]).await != count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node never listened to {count} chat channels"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Subscribers of a chat's channel, as Redis counts them.
async fn channel_subscribers(cluster: &Cluster, chat: i64) -> i64 {
    let channel = format!("{}:chat:{chat}", cluster.prefix.0);
    match &cluster.redis {
        Some(redis) => redis.shard_subscribers(redis.master_of(&channel), &channel),
        None => {
            let mut redis = redis::Client::open(redis_url())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let counts: (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async(&mut redis)
                .await
                .unwrap();
            counts.1
        }
    }
}

#[tokio::test]
async fn a_node_hears_only_the_chats_it_has_sockets_in() {
    a_node_hears_only_its_chats(false).await;
}

#[tokio::test]
async fn a_node_hears_only_the_chats_it_has_sockets_in_on_a_redis_cluster() {
    a_node_hears_only_its_chats(true).await;
}

async fn a_node_hears_only_its_chats(redis_cluster: bool) {
    let env = [("MRM_METRICS_TOKEN", METRICS_TOKEN.to_owned())];
    let cluster = nodes_on(redis_cluster, &env).await;
    let alice = user_on(&cluster.a, "alice").await;
    let bob = user_on(&cluster.b, "bob").await;
    let bob_id = id(&bob.me().await);
    let busy = alice.create_chat("busy", &[bob_id]).await;
    let quiet = alice.create_chat("quiet", &[bob_id]).await;
    // Node A has a socket in the busy chat only, node B in the quiet one only.
    let mut alice_busy = alice.ws(busy).await;
    let mut bob_quiet = bob.ws(quiet).await;
    wait_for_subscriptions(&cluster.a, 1.0).await;
    wait_for_subscriptions(&cluster.b, 1.0).await;
    assert_eq!(channel_subscribers(&cluster, busy).await, 1);
    assert_eq!(channel_subscribers(&cluster, quiet).await, 1);

    let heard_before = chat_events_heard(&cluster.b).await;
    let total = 200;
    for i in 0..total {
        alice.send_message(busy, &format!("busy {i}")).await;
    }
    assert_eq!(
        collect(&mut alice_busy, total).await,
        (1..=total as i64).collect::<Vec<_>>()
    );
    // Not one of the busy chat's events reached node B.
    assert_eq!(chat_events_heard(&cluster.b).await, heard_before);

    // The quiet chat's do.
    alice.send_message(quiet, "hello").await;
    assert_eq!(bob_quiet.next_message().await["content"], "hello");
    wait_to_hear_beyond(&cluster.b, heard_before).await;

    // A socket in the busy chat on B makes B listen to it, and leaving makes it stop.
    let mut bob_busy = bob.ws(busy).await;
    wait_for_subscriptions(&cluster.b, 2.0).await;
    alice.send_message(busy, "now on b too").await;
    assert_eq!(bob_busy.next_message().await["content"], "now on b too");
    drop(bob_busy);
    wait_for_subscriptions(&cluster.b, 1.0).await;
    assert_eq!(channel_subscribers(&cluster, busy).await, 1);
}

#[tokio::test]
async fn a_redis_cluster_master_failover_mid_traffic_loses_nothing() {
    let env = [("MRM_METRICS_TOKEN", METRICS_TOKEN.to_owned())];
    let quick = Some(crate::redis_cluster::QUICK_NODE_TIMEOUT_MS);
    let mut cluster = on_redis_cluster_with(quick, &env).await;
    let alice = user_on(&cluster.a, "alice").await;
    let bob = user_on(&cluster.b, "bob").await;
    let chat = bob.create_chat("failover", &[id(&alice.me().await)]).await;
    let mut on_a = alice.ws(chat).await;
    wait_for_subscriptions(&cluster.a, 1.0).await;
    let channel = format!("{}:chat:{chat}", cluster.prefix.0);

    // Messages sent on B, heard on A through the chat channel's shard, whose master dies
    // after the first third.
    let total = 300;
    let (third, sent_a_third) = tokio::sync::oneshot::channel();
    let sender = tokio::spawn(async move {
        let mut third = Some(third);
        for i in 0..total {
            bob.send_message(chat, &format!("m{i}")).await;
            if i == total / 3 {
                let _ = third.take().unwrap().send(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        bob
    });
    sent_a_third.await.unwrap();
    let mut redis = cluster.redis.take().unwrap();
    let old_master = redis.master_of(&channel);
    let (redis, new_master) = tokio::task::spawn_blocking(move || {
        let new_master = redis.kill_master_of(&channel);
        (redis, new_master)
    })
    .await
    .unwrap();
    assert_ne!(new_master, old_master);
    let bob = sender.await.unwrap();
    assert_eq!(
        collect(&mut on_a, total).await,
        (1..=total as i64).collect::<Vec<_>>()
    );
    // The shard's new master carries A's subscription, once: the chat is heard live again, not
    // only read from the database.
    let channel = format!("{}:chat:{chat}", cluster.prefix.0);
    subscribed_once_again(&redis, &channel).await;
    heard_live_again(&cluster, &bob, &mut on_a, chat).await;
}

#[tokio::test]
async fn a_manual_failover_carries_the_subscriptions_to_the_new_master() {
    let env = [("MRM_METRICS_TOKEN", METRICS_TOKEN.to_owned())];
    let cluster = on_redis_cluster(&env).await;
    let alice = user_on(&cluster.a, "alice").await;
    let bob = user_on(&cluster.b, "bob").await;
    let chat = bob.create_chat("moved", &[id(&alice.me().await)]).await;
    let mut on_a = alice.ws(chat).await;
    wait_for_subscriptions(&cluster.a, 1.0).await;
    let channel = format!("{}:chat:{chat}", cluster.prefix.0);
    let redis = cluster.redis.as_ref().unwrap();
    let old_master = redis.master_of(&channel);
    assert_eq!(redis.shard_subscribers(old_master, &channel), 1);

    // The old master ends A's sharded subscription as its slots leave; A subscribes again, once,
    // in the shard (on the new master, or on the old one, now a replica, which serves it too).
    let rounds = metric(&cluster.a, "mrm_redis_reconnects_total", &[]).await;
    redis.fail_over_to_replica_of(&channel);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while metric(&cluster.a, "mrm_redis_reconnects_total", &[]).await <= rounds {
        assert!(
            tokio::time::Instant::now() < deadline,
            "A never subscribed again after the failover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    subscribed_once_again(redis, &channel).await;
    heard_live_again(&cluster, &bob, &mut on_a, chat).await;
}
