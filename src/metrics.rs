//! The server's metrics in the Prometheus text format, on `GET /metrics` behind
//! `MRM_METRICS_TOKEN` (a bearer token; without one the endpoint does not exist). One registry
//! per server, passed explicitly (several servers in one process, as in tests, never mix).
//!
//! Counters move where things happen (requests, frames, closes, batches, reconnects, AI calls);
//! gauges that mirror state (open sockets, rooms, database connections) are read when scraped.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Buckets for durations that are usually milliseconds: 0.5 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets for an AI provider's first token: 50 ms to 60 s.
const FIRST_TOKEN_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0];
/// Buckets for the message writer's batch sizes: 1 to its limit of 512.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Every metric of one server.
pub struct Metrics {
    registry: Registry,
    /// Held while a scrape brings the mirrored values up to date, so two at once never add the
    /// same database wait twice.
    refreshing: std::sync::Mutex<()>,
    /// `mrm_http_requests_total{route, method, status}`: requests answered, by route template.
    pub http_requests: IntCounterVec,
    /// `mrm_http_request_duration_seconds{route, method}`: time to the response's head.
    pub http_duration: HistogramVec,
    /// `mrm_sockets_open{kind, protocol}`: open sockets (`chat` or `ai`; `original` or `v2`).
    pub sockets_open: IntGaugeVec,
    /// `mrm_rooms`: chats with sockets on this node (read when scraped).
    pub rooms: IntGauge,
    /// `mrm_frames_delivered_total`: frames written to sockets (messages, events, replays).
    pub frames_delivered: IntCounter,
    /// `mrm_socket_closes_total{code}`: sockets closed by the server, by close code (4008: too
    /// slow to follow its room).
    pub socket_closes: IntCounterVec,
    /// `mrm_lagging_caught_up_total`: times a socket that fell behind its room read what it
    /// missed from the database and went live again, without a reconnect.
    pub caught_up: IntCounter,
    /// `mrm_delivery_lag_seconds`: from a frame being queued for a socket to its write.
    pub delivery_lag: Histogram,
    /// `mrm_message_writer_batch_size`: messages committed per group commit.
    pub writer_batch: Histogram,
    /// `mrm_db_wait_seconds_total`: time waited for a connection and for the write turn
    /// (SQLite, which queues both in this process; read when scraped).
    pub db_wait: prometheus::Counter,
    /// `mrm_db_connections{state}`: pooled connections, `idle` or `in_use` (read when scraped).
    pub db_connections: IntGaugeVec,
    /// `mrm_redis_reconnects_total`: times the bus subscription was re-established.
    pub redis_reconnects: IntCounter,
    /// `mrm_bus_events_received_total{channel}`: events heard from other nodes, on chat
    /// channels (`chat`: only those of chats with sockets here) or the `control` channel.
    pub bus_events_received: IntCounterVec,
    /// `mrm_bus_chat_subscriptions`: chat channels this node listens to.
    pub bus_subscriptions: IntGauge,
    /// `mrm_ai_requests_total{model, outcome}`: replies asked of providers, by how they ended.
    pub ai_requests: IntCounterVec,
    /// `mrm_ai_tokens_total{model, kind}`: tokens read (`prompt`) and written (`completion`).
    pub ai_tokens: IntCounterVec,
    /// `mrm_ai_first_token_seconds{model}`: from asking a provider to its first text.
    pub ai_first_token: HistogramVec,
    /// `mrm_ai_provider_errors_total{kind}`: failed provider calls (`timeout`, `status`,
    /// `transport`, `malformed`).
    pub ai_provider_errors: IntCounterVec,
}

fn must<T>(made: prometheus::Result<T>) -> T {
    // Names and labels are constants checked by the tests: a failure is a programming error.
    made.expect("a valid metric definition")
}

impl Metrics {
    /// A fresh registry with every metric at zero.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let metric = must(IntCounterVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(metric.clone())));
            metric
        };
        let counter = |name: &str, help: &str| {
            let metric = must(IntCounter::new(name, help));
            must(registry.register(Box::new(metric.clone())));
            metric
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let metric = must(Histogram::with_opts(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            ));
            must(registry.register(Box::new(metric.clone())));
            metric
        };
        let histogram_vec = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let metric = must(HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            ));
            must(registry.register(Box::new(metric.clone())));
            metric
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let metric = must(IntGaugeVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(metric.clone())));
            metric
        };
        let rooms = must(IntGauge::new(
            "mrm_rooms",
            "Chats with sockets on this node",
        ));
        must(registry.register(Box::new(rooms.clone())));
        Metrics {
            http_requests: counter_vec(
                "mrm_http_requests_total",
                "HTTP requests answered, by route template, method and status",
                &["route", "method", "status"],
            ),
            http_duration: histogram_vec(
                "mrm_http_request_duration_seconds",
                "Time from a request to its response's head",
                &["route", "method"],
                LATENCY_BUCKETS,
            ),
            sockets_open: gauge_vec(
                "mrm_sockets_open",
                "Open WebSockets, by kind (chat, ai) and protocol (original, v2)",
                &["kind", "protocol"],
            ),
            rooms,
            frames_delivered: counter("mrm_frames_delivered_total", "Frames written to sockets"),
            caught_up: counter(
                "mrm_lagging_caught_up_total",
                "Times a lagging socket caught up from the database without a reconnect",
            ),
            socket_closes: counter_vec(
                "mrm_socket_closes_total",
                "Sockets the server closed, by close code (4008: too slow)",
                &["code"],
            ),
            delivery_lag: histogram(
                "mrm_delivery_lag_seconds",
                "From a frame being queued for a socket to its write",
                LATENCY_BUCKETS,
            ),
            writer_batch: histogram(
                "mrm_message_writer_batch_size",
                "Messages committed per group commit",
                BATCH_BUCKETS,
            ),
            db_wait: {
                let metric = must(prometheus::Counter::new(
                    "mrm_db_wait_seconds_total",
                    "Time waited for a database connection and the write turn (SQLite)",
                ));
                must(registry.register(Box::new(metric.clone())));
                metric
            },
            db_connections: gauge_vec(
                "mrm_db_connections",
                "Pooled database connections, idle or in use",
                &["state"],
            ),
            redis_reconnects: counter(
                "mrm_redis_reconnects_total",
                "Times the Redis bus subscription was re-established",
            ),
            bus_events_received: counter_vec(
                "mrm_bus_events_received_total",
                "Events heard from other nodes, by channel (chat, control)",
                &["channel"],
            ),
            bus_subscriptions: {
                let metric = must(IntGauge::new(
                    "mrm_bus_chat_subscriptions",
                    "Chat channels this node listens to on Redis",
                ));
                must(registry.register(Box::new(metric.clone())));
                metric
            },
            ai_requests: counter_vec(
                "mrm_ai_requests_total",
                "Replies asked of AI providers, by model and outcome",
                &["model", "outcome"],
            ),
            ai_tokens: counter_vec(
                "mrm_ai_tokens_total",
                "AI tokens, by model and kind (prompt, completion)",
                &["model", "kind"],
            ),
            ai_first_token: histogram_vec(
                "mrm_ai_first_token_seconds",
                "From asking an AI provider to its first text",
                &["model"],
                FIRST_TOKEN_BUCKETS,
            ),
            ai_provider_errors: counter_vec(
                "mrm_ai_provider_errors_total",
                "Failed AI provider calls, by kind",
                &["kind"],
            ),
            registry,
            refreshing: std::sync::Mutex::new(()),
        }
    }

    /// The text exposition of every metric (Prometheus text format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %err, "could not render metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// Counts an open socket of `kind` (`chat`, `ai`) speaking `mrm.v2` (`extended`) or the
    /// original protocol, until the returned guard is dropped.
    pub fn socket_opened(&self, kind: &str, extended: bool) -> OpenSocket {
        let protocol = if extended { "v2" } else { "original" };
        let gauge = self.sockets_open.with_label_values(&[kind, protocol]);
        gauge.inc();
        OpenSocket(gauge)
    }

    /// Counts a server-initiated socket close with `code`.
    pub fn closed(&self, code: u16) {
        self.socket_closes
            .with_label_values(&[&code.to_string()])
            .inc();
    }

    /// Brings the gauges that mirror state up to date before a scrape: `rooms` on this node,
    /// and the database pool's connections and waits.
    pub fn refresh(&self, rooms: usize, pool: crate::store::PoolStats) {
        let _one_at_a_time = self.refreshing.lock().unwrap_or_else(|e| e.into_inner());
        self.rooms.set(i64::try_from(rooms).unwrap_or(i64::MAX));
        let gauge = |state: &str, n: usize| {
            self.db_connections
                .with_label_values(&[state])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        };
        gauge("in_use", pool.in_use);
        gauge("idle", pool.idle);
        if let Some(waited) = pool.waited_seconds {
            let counted = self.db_wait.get();
            if waited > counted {
                self.db_wait.inc_by(waited - counted);
            }
        }
    }
}

/// One open socket in `mrm_sockets_open`; dropping it counts the socket closed.
pub struct OpenSocket(IntGauge);

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_renders_with_its_help() {
        let metrics = Metrics::new();
        metrics.frames_delivered.inc_by(3);
        metrics.closed(4008);
        metrics
            .http_requests
            .with_label_values(&["/api/chats/", "GET", "200"])
            .inc();
        let text = metrics.render();
        assert!(text.contains("mrm_frames_delivered_total 3"), "{text}");
        assert!(
            text.contains("mrm_socket_closes_total{code=\"4008\"} 1"),
            "{text}"
        );
        assert!(text.contains("# HELP mrm_rooms "), "{text}");
        assert!(
            text.contains(
                r#"mrm_http_requests_total{method="GET",route="/api/chats/",status="200"} 1"#
            ),
            "{text}"
        );
    }
}
