//! The HTTP/1.1 accept loop: each TCP connection is served by hyper under these bounds, so idle,
//! slow or greedy clients cannot hold the server's file descriptors.
//!
//! - **Connection cap** (`MRM_MAX_CONNECTIONS`): past it, a new connection is answered at once
//!   with a fixed `503` and closed, without reading its request, so the listener never runs out
//!   of descriptors and keeps accepting. A connection upgraded to a WebSocket leaves the count
//!   when the upgrade completes; sockets are bounded by `MRM_MAX_SOCKETS` instead.
//! - **Cap per address** (`MRM_MAX_CONNECTIONS_PER_ADDRESS`): connections one peer address (an
//!   IPv6 one by its /64) holds at once, WebSockets included until their socket closes; past it,
//!   a new connection from that address is answered `429` the same way. Trusted proxies
//!   (`MRM_TRUSTED_PROXIES`) are exempt: they carry many clients' connections.
//! - **Idle timeout** (`MRM_HTTP_IDLE_SECONDS`): how long a connection may wait, with no
//!   request in progress, for the first byte of its next request (its first one included).
//! - **Header timeout** (`MRM_HTTP_HEADER_SECONDS`): how long a request's header may take from
//!   its first byte to its end, however slowly the bytes trickle in.
//! - **Write timeout** (`MRM_HTTP_WRITE_SECONDS`): how long a write of a response may wait for
//!   the client to take the data; a client that sends requests but never reads the answers is
//!   dropped then. An upgraded connection is under the socket's own write deadline instead
//!   (`MRM_WS_WRITE_TIMEOUT_SECONDS`, which closes it with a close code first).
//!
//! There is no read timeout past the header: an idle socket is legitimate, and a body that stops
//! arriving is cut by the router (`MRM_HTTP_BODY_SECONDS`).
//!
//! Both header timeouts ride on hyper's header-read timer, which starts whenever hyper waits for
//! a request header; [`ConnectionTimer`] turns its one deadline into the two above by watching
//! the connection's reads ([`Watched`]), which also bounds its writes. A connection's places
//! under the caps are given back before its socket is closed, so a client that sees its
//! connection end may open a new one at once.

use std::{
    collections::{hash_map::Entry, HashMap},
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, LazyLock, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{body::Body, extract::ConnectInfo, Router};
use hyper::{body::Incoming, rt, server::conn::http1};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt as _;

use crate::client_addr::{budget_key, TrustedProxies};

/// How long the accept loop pauses after an error that a retry at once would meet again
/// (no descriptor or memory left), so it never spins.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How often, at most, a refusal past an address's cap is logged as a warning (the others at
/// debug level): often enough for an operator to notice, say a proxy missing from
/// `MRM_TRUSTED_PROXIES`, never a flood.
const ADDRESS_CAP_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// The answer to a connection over the cap: complete, so the client reads a status, and closed.
static OVER_CAPACITY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    refusal(
        "503 Service Unavailable",
        "Too many connections; retry in a moment, please.",
    )
});

/// The answer to a connection over its address's cap, given as [`OVER_CAPACITY`] is: 429, as
/// the client itself holds too much (the server is not full), as for sockets per user.
static OVER_ADDRESS_CAP: LazyLock<Vec<u8>> = LazyLock::new(|| {
    refusal(
        "429 Too Many Requests",
        "Too many connections from your address; close some first, please.",
    )
});

/// A complete response with `status` and `{"error": error}`, asking for a retry in a second and
/// announcing the close.
fn refusal(status: &str, error: &str) -> Vec<u8> {
    let body = serde_json::json!({ "error": error }).to_string();
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The bounds every connection is served under.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Connections served at once, WebSockets excluded once upgraded.
    pub max_connections: usize,
    /// Connections one address (an IPv6 one by its /64) holds at once, WebSockets included;
    /// at least 1.
    pub max_per_address: usize,
    /// Peers exempt from `max_per_address`.
    pub trusted_proxies: TrustedProxies,
    /// Longest wait for the first byte of a request on an idle connection.
    pub idle_timeout: Duration,
    /// Longest time from a request header's first byte to its end.
    pub header_timeout: Duration,
    /// Longest a write of a response may wait for the client to take the data.
    pub write_timeout: Duration,
}

/// The timeouts one connection is served under.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    idle: Duration,
    header: Duration,
    write: Duration,
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
    let addresses = Arc::new(AddressCounts::new(limits.max_per_address));
    let timeouts = Timeouts {
        idle: limits.idle_timeout,
        header: limits.header_timeout,
        write: limits.write_timeout,
    };
    let tracker = TaskTracker::new();
    let mut address_cap_warned: Option<Instant> = None;
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
        let address = if limits.trusted_proxies.contains(peer.ip()) {
            None
        } else if let Some(place) = addresses.enter(peer.ip()) {
            Some(place)
        } else {
            log_address_cap(peer, limits.max_per_address, &mut address_cap_warned);
            refuse(tcp, &OVER_ADDRESS_CAP);
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refuse(tcp, &OVER_CAPACITY);
            continue;
        };
        // Frames are small and latency matters: no Nagle delay on any connection.
        let _ = tcp.set_nodelay(true);
        let places = Places { permit, address };
        let router = router.clone();
        let stopping = stopping.clone();
        tracker.spawn(serve_connection(
            tcp, peer, places, router, prepare, timeouts, stopping,
        ));
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

/// Answers a connection over a cap without waiting on it: what fits in the socket buffer (all
/// of it, on a fresh connection) is written, and the connection is closed.
fn refuse(tcp: TcpStream, answer: &[u8]) {
    let _ = tcp.try_write(answer);
    drop(tcp);
}

/// Logs a refusal past an address's cap: as a warning when none was given for
/// [`ADDRESS_CAP_WARNING_INTERVAL`] (`last_warning` is when the last one was), else at debug level.
fn log_address_cap(peer: SocketAddr, limit: usize, last_warning: &mut Option<Instant>) {
    if last_warning.is_some_and(|at| at.elapsed() < ADDRESS_CAP_WARNING_INTERVAL) {
        tracing::debug!(%peer, "connection refused: too many from its address");
        return;
    }
    *last_warning = Some(Instant::now());
    tracing::warn!(
        %peer,
        limit,
        "connections refused past MRM_MAX_CONNECTIONS_PER_ADDRESS (if this address is a proxy \
         in front of the server, list it in MRM_TRUSTED_PROXIES)"
    );
}

/// Connections open per address (by [`budget_key`]), for `MRM_MAX_CONNECTIONS_PER_ADDRESS`.
/// Only addresses with a connection open have an entry.
struct AddressCounts {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl AddressCounts {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A place for one more connection from `ip`, unless its address holds `limit` already.
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<AddressPlace> {
        let key = budget_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(key).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(AddressPlace {
            counts: self.clone(),
            key,
        })
    }
}

/// One connection's place under its address's cap, given back when dropped.
struct AddressPlace {
    counts: Arc<AddressCounts>,
    key: IpAddr,
}

impl Drop for AddressPlace {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Entry::Occupied(mut entry) = open.entry(self.key) {
            *entry.get_mut() -= 1;
            if *entry.get() == 0 {
                entry.remove();
            }
        }
    }
}

/// A connection's places under the caps.
struct Places {
    /// Under `MRM_MAX_CONNECTIONS`, while the connection serves HTTP: given back when it ends or
    /// is upgraded to a WebSocket.
    permit: OwnedSemaphorePermit,
    /// Under `MRM_MAX_CONNECTIONS_PER_ADDRESS` (none for a trusted proxy), until the stream is
    /// shut down or dropped, an upgraded one included.
    address: Option<AddressPlace>,
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    places: Places,
    router: Router,
    prepare: fn(axum::extract::Request) -> axum::extract::Request,
    timeouts: Timeouts,
    stopping: CancellationToken,
) {
    let activity = Arc::new(Activity {
        first_byte: Mutex::default(),
        permit: Mutex::new(Some(places.permit)),
    });
    let io = TokioIo::new(Watched {
        inner: tcp,
        activity: activity.clone(),
        address: places.address,
        write_timeout: timeouts.write,
        write_stall: None,
    });
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let request = prepare(request.map(Body::new));
        router.clone().oneshot(request)
    });
    let timer = ConnectionTimer {
        activity: activity.clone(),
        idle: timeouts.idle,
        header: timeouts.header,
    };
    let connection = http1::Builder::new()
        .timer(timer)
        // The deadline hyper asks for is replaced by the timer's own two; any value arms it.
        .header_read_timeout(timeouts.idle)
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
    // Closed, or upgraded (the stream then lives on in the socket): no longer HTTP either way.
    activity.end_http();
    if let Err(err) = outcome {
        // Timeouts, resets and malformed requests: the client's doing, worth a debug line only.
        tracing::debug!(error = %err, %peer, "connection ended");
    }
}

/// What a connection's task, its timer and its stream share: when the current request header
/// received its first byte, if it has, and the connection's place under `MRM_MAX_CONNECTIONS`
/// while it serves HTTP.
#[derive(Debug)]
struct Activity {
    first_byte: Mutex<Option<Instant>>,
    permit: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Activity {
    /// The connection is done with HTTP (closing, or upgraded): its place under the cap is
    /// given back, and its writes are no longer under the HTTP write timeout.
    fn end_http(&self) {
        self.permit.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Whether the connection still serves HTTP.
    fn serves_http(&self) -> bool {
        self.permit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

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

/// A TCP stream that records, for [`ConnectionTimer`], when bytes arrive; fails a write that
/// waits longer than the write timeout while the connection serves HTTP; and gives the
/// connection's places under the caps back before the socket closes (when it is shut down or
/// dropped), so the peer can never see its connection closed while it still counts.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
    address: Option<AddressPlace>,
    write_timeout: Duration,
    /// Set while a write waits for the client, to end the wait at the write timeout.
    write_stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Watched {
    /// The outcome of a write or flush, failed with `TimedOut` once it has been pending for the
    /// write timeout. A write that completes starts the next wait afresh, so a client that reads,
    /// however slowly, keeps its connection.
    fn within_deadline<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() || !self.activity.serves_http() {
            self.write_stall = None;
            return polled;
        }
        let limit = self.write_timeout;
        let stall = self
            .write_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took no data within the write timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Gives the connection's places under the caps back.
    fn leave(&mut self) {
        self.address.take();
        self.activity.end_http();
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        // Before the stream itself is dropped, which closes the socket.
        self.leave();
    }
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
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.within_deadline(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.within_deadline(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.within_deadline(cx, polled)
    }

    /// The connection is ending (its end is sent next): its places are given back first.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.leave();
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
    fn the_refusals_are_complete_responses() {
        for answer in [&*OVER_CAPACITY, &*OVER_ADDRESS_CAP] {
            let text = std::str::from_utf8(answer).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.contains(&format!("content-length: {}", body.len())));
            let body: serde_json::Value = serde_json::from_str(body).unwrap();
            assert!(body["error"].is_string());
        }
    }

    #[test]
    fn an_address_holds_its_places_until_it_gives_them_back() {
        let counts = Arc::new(AddressCounts::new(2));
        let first = counts.enter("2001:db8::1".parse().unwrap()).unwrap();
        // The same /64.
        let second = counts.enter("2001:db8::2".parse().unwrap()).unwrap();
        assert!(counts.enter("2001:db8::3".parse().unwrap()).is_none());
        assert!(counts.enter("2001:db8:0:1::1".parse().unwrap()).is_some());
        drop(first);
        let third = counts.enter("2001:db8::3".parse().unwrap()).unwrap();
        drop((second, third));
        assert!(counts.open.lock().unwrap().is_empty());
    }
}
