//! HTTP connections are bounded: a header that trickles in is cut at the header timeout, an
//! idle connection at the idle timeout, a body that stops at the body timeout, a client that
//! does not read at the write timeout; past the connection cap a new connection is answered 503
//! at once, and past its address's cap 429, while the others keep working.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

use crate::helpers::{TestApp, WsOptions};

/// Longest wait for something the server must do by itself.
const DEADLINE: Duration = Duration::from_secs(5);
const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n";

/// Reads until the peer closes the connection (or resets it); fails past the deadline.
async fn read_until_closed(tcp: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(DEADLINE, tcp.read(&mut buf)).await {
            Err(_) => panic!(
                "the server kept the connection open; got {:?}",
                String::from_utf8_lossy(&received)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return received,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `GET /healthz` and reads one complete response head and body.
async fn healthz_on(tcp: &mut TcpStream) -> String {
    tcp.write_all(HEALTHZ).await.unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().to_owned())
                })
                .map(|v| v.parse::<usize>().unwrap())
                .expect("a content-length");
            if body.len() >= length {
                return head.to_owned();
            }
        }
        let n = tokio::time::timeout(DEADLINE, tcp.read(&mut buf))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "closed before the response ended: {text:?}");
        received.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn a_trickling_header_is_cut_at_the_header_timeout() {
    let header = Duration::from_millis(400);
    let app = TestApp::spawn_with(|c| {
        c.http_header_timeout = header;
        c.http_idle_timeout = Duration::from_secs(30);
    })
    .await;
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let (mut reader, mut writer) = tcp.into_split();
    let started = Instant::now();
    // A byte every 50 ms, for far longer than the timeout: the header never ends.
    let trickle = tokio::spawn(async move {
        let request = b"GET /healthz HTTP/1.1\r\nx-slow: ".iter().copied();
        for byte in request.chain(std::iter::repeat(b'a')) {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut buf = [0u8; 1024];
    let outcome = tokio::time::timeout(DEADLINE, reader.read(&mut buf)).await;
    let elapsed = started.elapsed();
    trickle.abort();
    assert!(
        matches!(outcome, Ok(Ok(0)) | Ok(Err(_))),
        "the connection is closed: {outcome:?}"
    );
    assert!(elapsed >= header, "not before the timeout: {elapsed:?}");
    // The server itself keeps answering.
    let mut fresh = TcpStream::connect(app.addr).await.unwrap();
    assert!(healthz_on(&mut fresh).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn an_idle_connection_is_closed_at_the_idle_timeout() {
    let idle = Duration::from_millis(400);
    let app = TestApp::spawn_with(|c| {
        c.http_idle_timeout = idle;
        c.http_header_timeout = Duration::from_secs(30);
    })
    .await;
    // Kept alive after a request, then silent.
    let mut used = TcpStream::connect(app.addr).await.unwrap();
    // Timed from before the request: the server starts its idle clock once it has answered,
    // which may be a little before this client, on a busy machine, gets to read the answer.
    let asked = Instant::now();
    assert!(healthz_on(&mut used).await.starts_with("HTTP/1.1 200"));
    assert!(read_until_closed(&mut used).await.is_empty());
    assert!(asked.elapsed() >= idle, "{:?}", asked.elapsed());

    // Opened and never used.
    let opened = Instant::now();
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    assert!(read_until_closed(&mut silent).await.is_empty());
    assert!(opened.elapsed() >= idle, "{:?}", opened.elapsed());
}

#[tokio::test]
async fn past_the_cap_a_connection_is_refused_at_once_and_the_others_keep_working() {
    let app = TestApp::spawn_with(|c| c.max_connections = Some(3)).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut tcp = TcpStream::connect(app.addr).await.unwrap();
        assert!(healthz_on(&mut tcp).await.starts_with("HTTP/1.1 200"));
        open.push(tcp);
    }
    // The fourth is answered and closed without sending anything.
    let mut refused = TcpStream::connect(app.addr).await.unwrap();
    let answer = String::from_utf8(read_until_closed(&mut refused).await).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer:?}"
    );
    assert!(answer.contains("retry-after: 1\r\n"), "{answer:?}");
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"error": "Too many connections; retry in a moment, please."})
    );
    // Those admitted are still served.
    for tcp in &mut open {
        assert!(healthz_on(tcp).await.starts_with("HTTP/1.1 200"));
    }
    // Once one closes, a new connection is admitted (as soon as the server has seen it go).
    drop(open.pop());
    let started = Instant::now();
    loop {
        let mut tcp = TcpStream::connect(app.addr).await.unwrap();
        tcp.write_all(HEALTHZ).await.unwrap();
        let answer = String::from_utf8_lossy(&read_first_bytes(&mut tcp).await).into_owned();
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        // Refused: the 503, or a reset when the request was still unread as it closed.
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
            "{answer:?}"
        );
        assert!(
            started.elapsed() < DEADLINE,
            "no connection admitted after one closed"
        );
        tokio::task::yield_now().await;
    }
}

/// The first bytes the server sends.
async fn read_first_bytes(tcp: &mut TcpStream) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(DEADLINE, tcp.read(&mut buf))
        .await
        .expect("an answer in time")
        .unwrap_or(0);
    buf.truncate(n);
    buf
}

/// A connection from `source`, any address of 127/8 (Linux routes them all to the loopback
/// interface): another client address for the server.
async fn connect_from(app: &TestApp, source: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap();
    socket.connect(app.addr).await.unwrap()
}

/// Reads the whole answer to a connection refused at once, and checks its status and body.
async fn assert_refused_over_address_cap(tcp: &mut TcpStream) {
    let answer = String::from_utf8(read_until_closed(tcp).await).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{answer:?}"
    );
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"error": "Too many connections from your address; close some first, please."})
    );
}

#[tokio::test]
async fn past_its_address_cap_a_connection_is_refused_while_other_addresses_connect() {
    let app = TestApp::spawn_with(|c| {
        c.max_connections_per_address = 2;
        c.trusted_proxies = "127.0.0.1".parse().unwrap();
    })
    .await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut tcp = connect_from(&app, "127.0.0.2").await;
        assert!(healthz_on(&mut tcp).await.starts_with("HTTP/1.1 200"));
        open.push(tcp);
    }
    assert_refused_over_address_cap(&mut connect_from(&app, "127.0.0.2").await).await;
    // Another address is served, and so is a trusted proxy past the cap.
    let mut other = connect_from(&app, "127.0.0.3").await;
    assert!(healthz_on(&mut other).await.starts_with("HTTP/1.1 200"));
    let mut proxied = Vec::new();
    for _ in 0..3 {
        let mut tcp = connect_from(&app, "127.0.0.1").await;
        assert!(healthz_on(&mut tcp).await.starts_with("HTTP/1.1 200"));
        proxied.push(tcp);
    }
    // Those admitted are still served.
    for tcp in &mut open {
        assert!(healthz_on(tcp).await.starts_with("HTTP/1.1 200"));
    }
    // A connection the server closes gives its place back before the client sees it end.
    let mut closing = open.pop().unwrap();
    closing
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut closing).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    let mut again = connect_from(&app, "127.0.0.2").await;
    assert!(healthz_on(&mut again).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_socket_holds_its_place_under_the_address_cap_until_it_closes() {
    let app = TestApp::spawn_with(|c| c.max_connections_per_address = 2).await;
    // Set up from 127.0.0.1; the sockets come from 127.0.0.2.
    let alice = app.user("alice").await;
    let chat = alice.create_chat("room", &[]).await;
    let from_second = || WsOptions {
        source: Some("127.0.0.2".parse().unwrap()),
        ..Default::default()
    };
    let mut first = alice.ws_with(chat, from_second()).await.unwrap();
    let _second = alice.ws_with(chat, from_second()).await.unwrap();
    // Upgraded, they no longer count under MRM_MAX_CONNECTIONS, but still under their address's.
    assert_refused_over_address_cap(&mut connect_from(&app, "127.0.0.2").await).await;

    // The client closes one socket; once the server has closed the connection, its place is free.
    first.stream.close(None).await.unwrap();
    first.closed().await;
    let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = first.stream.get_mut() else {
        unreachable!("a plain connection")
    };
    read_until_closed(tcp).await;
    let mut again = connect_from(&app, "127.0.0.2").await;
    assert!(healthz_on(&mut again).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_client_that_never_reads_is_dropped_at_the_write_timeout_and_its_place_freed() {
    let write_timeout = Duration::from_secs(1);
    let app = TestApp::spawn_with(|c| {
        c.http_write_timeout = write_timeout;
        c.max_connections = Some(1);
    })
    .await;
    // A small receive buffer, so the responses back up quickly.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stalled = socket.connect(app.addr).await.unwrap();
    // It holds the only place: the next connection, accepted after it, is refused.
    let mut refused = TcpStream::connect(app.addr).await.unwrap();
    let answer = read_until_closed(&mut refused).await;
    assert!(answer.starts_with(b"HTTP/1.1 503"), "{answer:?}");

    // Requests for a 1 MiB asset, pipelined without ever reading an answer, until the server
    // stops taking them and then drops the connection: a write then fails.
    let started = Instant::now();
    let (_reader, mut writer) = stalled.into_split();
    let requests =
        b"GET /static/redoc/redoc.standalone.js HTTP/1.1\r\nhost: test\r\n\r\n".repeat(256);
    let dropped = tokio::time::timeout(DEADLINE + write_timeout, async {
        loop {
            if let Err(err) = writer.write_all(&requests).await {
                return err;
            }
        }
    })
    .await
    .expect("the connection is dropped at the write timeout");
    let elapsed = started.elapsed();
    assert!(
        matches!(
            dropped.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "{dropped:?}"
    );
    assert!(
        elapsed >= write_timeout,
        "not before the timeout: {elapsed:?}"
    );
    // Its place was given back before it was dropped.
    let mut fresh = TcpStream::connect(app.addr).await.unwrap();
    assert!(healthz_on(&mut fresh).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_answered_400_at_the_body_timeout() {
    let body_timeout = Duration::from_secs(1);
    let app = TestApp::spawn_with(|c| {
        c.http_body_timeout = body_timeout;
        c.max_connections = Some(1);
    })
    .await;
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    let started = Instant::now();
    // Promises 100 bytes, sends 12, then nothing (the connection stays open).
    tcp.write_all(
        b"POST /api/login/ HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
          content-length: 100\r\n\r\n{\"username\":",
    )
    .await
    .unwrap();
    let answer = String::from_utf8(read_until_closed(&mut tcp).await).unwrap();
    let elapsed = started.elapsed();
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer:?}"
    );
    assert!(
        elapsed >= body_timeout,
        "not before the timeout: {elapsed:?}"
    );
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    let body: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
    assert_eq!(
        body,
        serde_json::json!({"detail": "The request body could not be read."})
    );
    // The connection was closed, and its place is free.
    let mut fresh = TcpStream::connect(app.addr).await.unwrap();
    assert!(healthz_on(&mut fresh).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn an_upgraded_socket_is_under_its_own_write_deadline_not_the_http_one() {
    let http_write_timeout = Duration::from_secs(1);
    let app = TestApp::spawn_with(|c| {
        c.http_write_timeout = http_write_timeout;
        c.ws_write_timeout = Duration::from_secs(60);
        c.ws_queue_capacity = 1000;
    })
    .await;
    let alice = app.user("alice").await;
    let chat = alice.create_chat("room", &[]).await;
    let mut socket = alice
        .ws_with(
            chat,
            WsOptions {
                recv_buffer: Some(4096),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // 8 MB of messages while the socket reads nothing: more than the kernel's buffers hold
    // (4 MiB at most here), so the server's writes to it wait…
    let content = "😀".repeat(10_000);
    let count = 200;
    for _ in 0..count {
        alice.send_message(chat, &content).await;
    }
    // …for longer than the HTTP write timeout.
    tokio::time::sleep(http_write_timeout + Duration::from_millis(500)).await;
    // The socket was kept: everything arrives once it reads.
    for _ in 0..count {
        assert_eq!(socket.next_message().await["content"], content.as_str());
    }
    alice.send_message(chat, "after").await;
    assert_eq!(socket.next_message().await["content"], "after");
}
