//! The HTTP/1.1 accept loop: each TCP connection is served by hyper under three bounds, so idle
//! or slow clients cannot hold the server's file descriptors.
//!
//! - **Connection cap** (`MRM_MAX_CONNECTIONS`): past it, a new connection is answered at once
//!   with a fixed `503` and closed, without reading its request, so the listener never runs out
//!   of descriptors and keeps accepting. A connection upgraded to a WebSocket leaves the count
//!   when the upgrade completes; sockets are bounded by `MRM_MAX_SOCKETS` instead.
//! - **Idle timeout** (`MRM_HTTP_IDLE_SECONDS`): how long a connection may wait, with no
//!   request in progress, for the first byte of its next request (its first one included).
//! - **Header timeout** (`MRM_HTTP_HEADER_SECONDS`): how long a request's header may take from
//!   its first byte to its end, however slowly the bytes trickle in.
//!
//! Both timeouts ride on hyper's header-read timer, which starts whenever hyper waits for a
//! request header; [`ConnectionTimer`] turns its one deadline into the two above by watching the
//! connection's reads ([`Watched`]).

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{body::Body, extract::ConnectInfo, Router};
use hyper::{body::Incoming, rt, server::conn::http1};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt as _;

/// How long the accept loop pauses after an error that a retry at once would meet again
/// (no descriptor or memory left), so it never spins.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The answer to a connection over the cap: complete, so the client reads a status, and closed.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 61\r\n\
\r\n\
{\"error\": \"Too many connections; retry in a moment, please.\"}";

/// The bounds every connection is served under.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections served at once, WebSockets excluded once upgraded.
    pub max_connections: usize,
    /// Longest wait for the first byte of a request on an idle connection.
    pub idle_timeout: Duration,
    /// Longest time from a request header's first byte to its end.
    pub header_timeout: Duration,
}

/// Accepts and serves connections until `stopping` is cancelled, then lets each connection
/// finish the request it is serving (keep-alive is switched off) and returns once all have
/// closed. Each request carries the peer's address as axum's [`ConnectInfo`]; `prepare` runs on
/// each request before routing.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    prepare: fn(axum::extract::Request) -> axum::extract::Request,
    limits: ConnectionLimits,
    stopping: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopping.cancelled() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) if is_per_connection(&err) => continue,
            Err(err) => {
                tracing::warn!(error = %err, "cannot accept connections; pausing");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refuse(tcp);
            continue;
        };
        // Frames are small and latency matters: no Nagle delay on any connection.
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let stopping = stopping.clone();
        tracker.spawn(async move {
            serve_connection(tcp, peer, router, prepare, limits, stopping).await;
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Errors about one connection that was already gone when accepted; the next may be fine.
fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Answers a connection over the cap without waiting on it: what fits in the socket buffer
/// (all of it, on a fresh connection) is written, and the connection is closed.
fn refuse(tcp: TcpStream) {
    let _ = tcp.try_write(OVER_CAPACITY);
    drop(tcp);
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    prepare: fn(axum::extract::Request) -> axum::extract::Request,
    limits: ConnectionLimits,
    stopping: CancellationToken,
) {
    let activity = Arc::new(Activity::default());
    let io = TokioIo::new(Watched {
        inner: tcp,
        activity: activity.clone(),
    });
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let request = prepare(request.map(Body::new));
        router.clone().oneshot(request)
    });
    let timer = ConnectionTimer {
        activity,
        idle: limits.idle_timeout,
        header: limits.header_timeout,
    };
    let connection = http1::Builder::new()
        .timer(timer)
        // The deadline hyper asks for is replaced by the timer's own two; any value arms it.
        .header_read_timeout(limits.idle_timeout)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(connection);
    let outcome = tokio::select! {
        outcome = connection.as_mut() => outcome,
        () = stopping.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = outcome {
        // Timeouts, resets and malformed requests: the client's doing, worth a debug line only.
        tracing::debug!(error = %err, %peer, "connection ended");
    }
}

/// When the connection's current request header received its first byte, if it has.
#[derive(Debug, Default)]
struct Activity {
    first_byte: Mutex<Option<Instant>>,
}

impl Activity {
    /// Starts waiting for a new request header.
    fn await_header(&self) {
        *self.first_byte.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Bytes arrived: the first of the awaited header, unless some already did.
    fn bytes_read(&self) {
        let mut first = self.first_byte.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert_with(Instant::now);
    }

    fn first_byte(&self) -> Option<Instant> {
        *self.first_byte.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A TCP stream that records, for [`ConnectionTimer`], when bytes arrive.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The timer hyper's HTTP/1 connection uses, which it asks for one thing only: the deadline of
/// the request header it starts waiting for. Each such wait ends at `idle` after it began while
/// no byte has arrived, or at `header` after the first byte once one has.
#[derive(Clone)]
struct ConnectionTimer {
    activity: Arc<Activity>,
    idle: Duration,
    header: Duration,
}

impl rt::Timer for ConnectionTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, _deadline: Instant) -> Pin<Box<dyn rt::Sleep>> {
        self.activity.await_header();
        let start = tokio::time::Instant::now();
        Box::pin(HeaderDeadline {
            activity: self.activity.clone(),
            start,
            idle: self.idle,
            header: self.header,
            sleep: Box::pin(tokio::time::sleep_until(start + self.idle)),
        })
    }
}

/// One wait for a request header, ending as [`ConnectionTimer`] describes.
struct HeaderDeadline {
    activity: Arc<Activity>,
    start: tokio::time::Instant,
    idle: Duration,
    header: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Future for HeaderDeadline {
    type Output = ();

    /// Polled by hyper each time the connection wakes while the header is incomplete, so a
    /// first byte moves the deadline before the next wait.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = match self.activity.first_byte() {
            None => self.start + self.idle,
            Some(first) => tokio::time::Instant::from_std(first) + self.header,
        };
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        self.sleep.as_mut().poll(cx)
    }
}

impl rt::Sleep for HeaderDeadline {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_complete_response() {
        let text = std::str::from_utf8(OVER_CAPACITY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(body["error"].is_string());
    }
}
