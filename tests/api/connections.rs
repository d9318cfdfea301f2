//! HTTP connections are bounded: a header that trickles in is cut at the header timeout, an
//! idle connection at the idle timeout, and past the connection cap a new connection is
//! answered 503 at once while the others keep working.

use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::TestApp;

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
