//! Settings read from the environment (and an optional `.env` file): one struct is the whole
//! configuration, validated once at start-up so a bad value stops the process with a clear line.
//!
//! Each field of [`Config`] (and of [`AiConfig`]) is declared once, with the variable it is read
//! from, its default and the function that parses and checks it. The declaration is a clap
//! argument list that is never given the process's own arguments: [`Config::from_lookup`] reads
//! each declared variable through a lookup function and hands the values over as if they were
//! options, so the same code serves the environment at start-up and a plain map in tests.

use std::{
    env, ffi::OsString, fmt, net::SocketAddr, num::NonZeroU32, str::FromStr, sync::OnceLock,
    time::Duration,
};

use clap::{error::ContextKind, error::ContextValue, Arg, Args, Command, FromArgMatches};
use http::HeaderValue;

use crate::client_addr::TrustedProxies;

/// Default of `DATABASE_URL`: a SQLite file `mrm-chat.sqlite3` in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://mrm-chat.sqlite3";
/// Default of `MRM_BIND`: the loopback interface only, port 8000.
pub const DEFAULT_BIND: &str = "127.0.0.1:8000";

/// How log lines are written to standard output (`MRM_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (`text`, the default).
    Text,
    /// One JSON object per line (`json`).
    Json,
}

/// A value that must never reach a log: its `Debug` prints a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that must send it (a request header, a connection).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// The language-model provider: any OpenAI-compatible chat-completions API.
#[derive(Debug, Clone, Args)]
pub struct AiConfig {
    /// `OPENAI_API_KEY`: the key sent to the provider, surrounding blanks removed. Default: none,
    /// and then AI replies answer 503.
    #[arg(long = "openai-api-key", env = "OPENAI_API_KEY", value_parser = api_key)]
    pub api_key: Option<Secret>,
    /// `OPENAI_BASE_URL`: the API's address, ending before `/chat/completions`; a trailing `/` is
    /// removed. Default `https://api.openai.com/v1`. Error: not an `http://` or `https://` URL.
    #[arg(
        long = "openai-base-url",
        env = "OPENAI_BASE_URL",
        default_value = "https://api.openai.com/v1",
        value_parser = base_url
    )]
    pub base_url: String,
    /// `OPENAI_MODEL`: the model name sent to the provider. Default `gpt-4o-mini`.
    #[arg(
        long = "openai-model",
        env = "OPENAI_MODEL",
        default_value = "gpt-4o-mini"
    )]
    pub model: String,
    /// `OPENAI_TIMEOUT_SECONDS`: the longest wait for the provider to answer, and between two
    /// streamed chunks, in whole seconds. Default 60. Error: not a whole number of seconds ≥ 1.
    #[arg(
        long = "openai-timeout-seconds",
        env = "OPENAI_TIMEOUT_SECONDS",
        default_value = "60",
        value_parser = seconds
    )]
    pub timeout: Duration,
    /// `MRM_AI_MAX_CONCURRENT_PER_USER`: replies one user may have generating at once. Default 2.
    /// Error: not a whole number ≥ 1.
    #[arg(
        long = "ai-max-concurrent-per-user",
        env = "MRM_AI_MAX_CONCURRENT_PER_USER",
        default_value = "2",
        value_parser = positive_count::<usize>
    )]
    pub max_concurrent_per_user: usize,
    /// `MRM_AI_CONTEXT_WINDOW`: the model's context window, in tokens: prompts are cut to fit it
    /// (the oldest turns left out first). Default: what the provider documents for well-known
    /// model names (`gpt-4o`: 128,000, `gpt-4.1`: 1,047,576 …), 8,192 for any other. Error: not
    /// a whole number ≥ 1.
    #[arg(
        long = "ai-context-window",
        env = "MRM_AI_CONTEXT_WINDOW",
        value_parser = positive_count::<u32>
    )]
    pub context_window: Option<u32>,
    /// `MRM_AI_REPLY_RESERVE`: tokens of the context window kept free for the reply (at most half
    /// the window is kept). Default 1024. Error: not a whole number ≥ 1.
    #[arg(
        long = "ai-reply-reserve",
        env = "MRM_AI_REPLY_RESERVE",
        default_value = "1024",
        value_parser = positive_count::<u32>
    )]
    pub reply_reserve: u32,
    /// `MRM_AI_DAILY_TOKENS`: tokens (prompt and completion, as `/api/ai/usage/` counts them) each
    /// user may spend per UTC day; a question asked once the day's budget is spent is refused
    /// with 429 until the next day. Default: none, no daily limit. Error: not a whole number ≥ 1.
    #[arg(long = "ai-daily-tokens", env = "MRM_AI_DAILY_TOKENS", value_parser = positive_count::<i64>)]
    pub daily_tokens: Option<i64>,
    /// `MRM_AI_MONTHLY_TOKENS`: the same per calendar month (UTC). Default: none. Error: not a
    /// whole number ≥ 1.
    #[arg(long = "ai-monthly-tokens", env = "MRM_AI_MONTHLY_TOKENS", value_parser = positive_count::<i64>)]
    pub monthly_tokens: Option<i64>,
    /// `MRM_AI_TITLES`: after the first exchange of an AI chat created without a title, ask the
    /// model for a short one (counted in the user's usage). Default true. Error: not a boolean.
    #[arg(
        long = "ai-titles",
        env = "MRM_AI_TITLES",
        default_value = "true",
        action = clap::ArgAction::Set,
        value_parser = boolean
    )]
    pub titles: bool,
    /// `MRM_AI_PROVIDERS`: further OpenAI-compatible providers, as a JSON array of
    /// `{"name", "base_url", "api_key"?, "models"?, "staff_only"?, "context_window"?}`: `name` is 1 to 32 of
    /// `a-z 0-9 _ -` and prefixes the provider's model ids (`local/llama3`); `models` is the
    /// allow-list (default: whatever the provider's `/models` lists); `staff_only` offers its
    /// models to staff only. A provider named `openai` replaces the one `OPENAI_API_KEY`
    /// describes. Default: none. Error: not such an array, a name twice, or a bad URL.
    #[arg(long = "ai-providers", env = "MRM_AI_PROVIDERS", value_parser = providers)]
    pub providers: Option<ProviderList>,
    /// `MRM_AI_DEFAULT_MODEL`: the model id (`provider/model`, or a model name one provider
    /// offers) of AI chats created without one. Default: `openai/OPENAI_MODEL` when
    /// `OPENAI_API_KEY` is set, else the first model of the first provider.
    #[arg(long = "ai-default-model", env = "MRM_AI_DEFAULT_MODEL")]
    pub default_model: Option<String>,
    /// `MRM_AI_MODELS_CACHE_SECONDS`: how long a provider's list of models (`GET /models`) is
    /// kept before it is asked again, in whole seconds. Default 300. Error: not a whole number
    /// of seconds ≥ 1.
    #[arg(
        long = "ai-models-cache-seconds",
        env = "MRM_AI_MODELS_CACHE_SECONDS",
        default_value = "300",
        value_parser = seconds
    )]
    pub models_cache: Duration,
    /// `MRM_AI_REPLY_LEASE_SECONDS`: with several nodes (`REDIS_URL`), how long a running reply's
    /// claim lasts unless its node renews it (it does every third of this): a node that dies
    /// gives its replies up this long after its last renewal, and another node marks them
    /// interrupted within a further third. Default 30. Error: not a whole number of seconds
    /// from 3 to 600.
    #[arg(
        long = "ai-reply-lease-seconds",
        env = "MRM_AI_REPLY_LEASE_SECONDS",
        default_value = "30",
        value_parser = lease_seconds
    )]
    pub reply_lease: Duration,
    /// `OPENAI_RETRIES`: attempts after the first when the provider answers 429 or 5xx, with
    /// backoff. Default 3. Error: not a whole number ≥ 0.
    #[arg(
        long = "openai-retries",
        env = "OPENAI_RETRIES",
        default_value = "3",
        value_parser = number::<u32>
    )]
    pub retries: u32,
}

/// Attachments: their limits, and the object store that keeps them.
#[derive(Debug, Clone, Args)]
pub struct AttachmentConfig {
    /// `MRM_ATTACHMENT_MAX_BYTES`: the largest file one upload may carry, in bytes. Default
    /// 26214400 (25 MiB). Error: not a whole number ≥ 1.
    #[arg(
        long = "attachment-max-bytes",
        env = "MRM_ATTACHMENT_MAX_BYTES",
        default_value = "26214400",
        value_parser = positive_count::<u64>
    )]
    pub max_bytes: u64,
    /// `MRM_STORAGE_QUOTA_BYTES`: how many bytes of uploads each user may keep, counting every
    /// upload (attached or not) until it is deleted; the admin area can set another quota per
    /// user. Default 1073741824 (1 GiB). Error: not a whole number ≥ 1.
    #[arg(
        long = "storage-quota-bytes",
        env = "MRM_STORAGE_QUOTA_BYTES",
        default_value = "1073741824",
        value_parser = positive_count::<u64>
    )]
    pub quota_bytes: u64,
    /// `MRM_ATTACHMENT_GRACE_SECONDS`: how long an upload may wait to be attached to a message
    /// before it is removed, in whole seconds. Default 86400 (a day). Error: not a whole number
    /// of seconds ≥ 1.
    #[arg(
        long = "attachment-grace-seconds",
        env = "MRM_ATTACHMENT_GRACE_SECONDS",
        default_value = "86400",
        value_parser = seconds
    )]
    pub grace: Duration,
    /// `MRM_ATTACHMENT_SWEEP_SECONDS`: how often uploads past their grace, and objects nothing
    /// refers to any more, are looked for and removed, in whole seconds (deleting a message or a
    /// chat also starts a sweep at once). Default 60. Error: not a whole number of seconds ≥ 1.
    #[arg(
        long = "attachment-sweep-seconds",
        env = "MRM_ATTACHMENT_SWEEP_SECONDS",
        default_value = "60",
        value_parser = seconds
    )]
    pub sweep_interval: Duration,
    /// `MRM_UPLOAD_SECONDS`: how long an upload's body may take to arrive, in whole seconds (in
    /// place of `MRM_HTTP_BODY_SECONDS`, which is meant for small bodies). Default 600. Error: not
    /// a whole number of seconds ≥ 1.
    #[arg(
        long = "upload-seconds",
        env = "MRM_UPLOAD_SECONDS",
        default_value = "600",
        value_parser = seconds
    )]
    pub upload_timeout: Duration,
    /// `MRM_ATTACHMENTS_DIR`: the directory of the local object store, created if missing; used
    /// when `MRM_S3_BUCKET` is not set. Default `attachments` (under the working directory).
    #[arg(
        long = "attachments-dir",
        env = "MRM_ATTACHMENTS_DIR",
        default_value = "attachments"
    )]
    pub dir: std::path::PathBuf,
    /// `MRM_S3_BUCKET`: keep attachments in this bucket of an S3-compatible object store instead
    /// of the local directory. Default: none.
    #[arg(long = "s3-bucket", env = "MRM_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// `MRM_S3_ENDPOINT`: the object store's address, for stores other than Amazon S3 (MinIO,
    /// Ceph, Garage…), `http://` or `https://`; paths are then bucket-first (path-style
    /// requests). Default: none, Amazon S3 itself. Error: not an `http(s)://` URL.
    #[arg(long = "s3-endpoint", env = "MRM_S3_ENDPOINT", value_parser = base_url)]
    pub s3_endpoint: Option<String>,
    /// `MRM_S3_REGION`: the bucket's region. Default `us-east-1`.
    #[arg(long = "s3-region", env = "MRM_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// `MRM_S3_ACCESS_KEY_ID` and `MRM_S3_SECRET_ACCESS_KEY`: the store's credentials. Default:
    /// none, and the standard `AWS_*` variables (or an instance role) are used.
    #[arg(long = "s3-access-key-id", env = "MRM_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    /// See `s3_access_key_id`.
    #[arg(long = "s3-secret-access-key", env = "MRM_S3_SECRET_ACCESS_KEY", value_parser = api_key)]
    pub s3_secret_access_key: Option<Secret>,
    /// `MRM_S3_PRESIGNED_SECONDS`: when set, a download is answered with a redirect (302) to a
    /// URL of the object store signed for this many seconds, instead of passing the bytes
    /// through the server. Default: none, downloads go through the server. Error: not a whole
    /// number of seconds from 1 to 604800 (S3's longest).
    #[arg(long = "s3-presigned-seconds", env = "MRM_S3_PRESIGNED_SECONDS", value_parser = presigned_seconds)]
    pub s3_presigned: Option<Duration>,
}

/// The whole configuration. Read it with [`Config::from_env`]; every field names the variable it
/// comes from, its unit and default, and what makes a value an error.
///
/// `Debug` hides secrets: the API key, the Redis URL, and the password of the database URL.
#[derive(Clone, Args)]
pub struct Config {
    /// `MRM_BIND`: the address to listen on, `ip:port`. Default `127.0.0.1:8000`
    /// ([`DEFAULT_BIND`]). Error: not a socket address.
    #[arg(long = "bind", env = "MRM_BIND", default_value = DEFAULT_BIND, value_parser = number::<SocketAddr>)]
    pub bind: SocketAddr,
    /// `DATABASE_URL`: `sqlite://path` or `postgres://user:pass@host/db` (`postgresql://` too).
    /// Default `sqlite://mrm-chat.sqlite3` ([`DEFAULT_DATABASE_URL`]). Error: another scheme.
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        default_value = DEFAULT_DATABASE_URL,
        value_parser = database_url
    )]
    pub database_url: String,
    /// `MRM_DB_MAX_CONNECTIONS`: the database pool's size, in connections. Default 16. Error: not
    /// a whole number ≥ 1.
    #[arg(
        long = "db-max-connections",
        env = "MRM_DB_MAX_CONNECTIONS",
        default_value = "16",
        value_parser = positive_count::<u32>
    )]
    pub db_max_connections: u32,
    /// `MRM_ALLOWED_ORIGINS`: origins trusted for cookie-authenticated writes (CSRF) and
    /// WebSocket handshakes, besides the server's own host; comma-separated
    /// `scheme://host[:port]`, kept in lower case. Default: none. Error: an entry that is not
    /// an `http`/`https` origin (a path, no host, another scheme).
    #[arg(
        long = "allowed-origins",
        env = "MRM_ALLOWED_ORIGINS",
        default_value = "",
        value_parser = origins
    )]
    pub allowed_origins: std::vec::Vec<String>,
    /// `MRM_CORS_ORIGINS`: origins allowed to make credentialed cross-origin requests, written as
    /// `MRM_ALLOWED_ORIGINS` is. Default: none, and CORS is off. Error: as `allowed_origins`.
    #[arg(
        long = "cors-origins",
        env = "MRM_CORS_ORIGINS",
        default_value = "",
        value_parser = cors_origins
    )]
    pub cors_origins: std::vec::Vec<HeaderValue>,
    /// `MRM_METRICS_TOKEN`: the bearer token that `GET /metrics` (Prometheus text format)
    /// requires; surrounding blanks removed. Default: none, and `/metrics` does not exist (404).
    /// Error: shorter than 16 characters.
    #[arg(long = "metrics-token", env = "MRM_METRICS_TOKEN", value_parser = metrics_token)]
    pub metrics_token: Option<Secret>,
    /// `MRM_SECURE_COOKIES`: mark cookies `Secure`; set it when the server sits behind HTTPS.
    /// `true`/`1`/`yes`/`on` or `false`/`0`/`no`/`off`, any case. Default false. Error: anything
    /// else.
    #[arg(
        long = "secure-cookies",
        env = "MRM_SECURE_COOKIES",
        default_value = "false",
        action = clap::ArgAction::Set,
        value_parser = boolean
    )]
    pub secure_cookies: bool,
    /// `MRM_LOG_FORMAT`: `text` or `json`. Default `text`. Error: anything else.
    #[arg(
        long = "log-format",
        env = "MRM_LOG_FORMAT",
        default_value = "text",
        value_parser = log_format
    )]
    pub log_format: LogFormat,
    /// `MRM_LOGIN_ATTEMPTS_PER_MINUTE`: login and token attempts, failed or successful, allowed
    /// per minute for one client address and username. A client address is the peer's, or the
    /// one a trusted proxy names (`MRM_TRUSTED_PROXIES`); an IPv6 address counts by its /64.
    /// Default 10. Error: not a whole number ≥ 1.
    #[arg(
        long = "login-attempts-per-minute",
        env = "MRM_LOGIN_ATTEMPTS_PER_MINUTE",
        default_value = "10",
        value_parser = number::<NonZeroU32>
    )]
    pub login_attempts_per_minute: NonZeroU32,
    /// `MRM_PASSWORD_ATTEMPTS_PER_MINUTE`: requests that check or hash a password (logins,
    /// token requests, admin logins, registrations), failed or successful, allowed per minute
    /// for one client address (as for `MRM_LOGIN_ATTEMPTS_PER_MINUTE`) whatever the usernames.
    /// Default 30. Error: not a whole number ≥ 1.
    #[arg(
        long = "password-attempts-per-minute",
        env = "MRM_PASSWORD_ATTEMPTS_PER_MINUTE",
        default_value = "30",
        value_parser = number::<NonZeroU32>
    )]
    pub password_attempts_per_minute: NonZeroU32,
    /// `MRM_PASSWORD_QUEUE`: password hashes that may wait for a free hashing slot (two per
    /// CPU hash at once); past it, a request that needs one answers 429 with `Retry-After: 1`.
    /// Default 64. Error: not a whole number.
    #[arg(
        long = "password-queue",
        env = "MRM_PASSWORD_QUEUE",
        default_value = "64",
        value_parser = number::<usize>
    )]
    pub password_queue: usize,
    /// `MRM_MESSAGES_PER_SECOND`: messages a user may send to one chat per second. Default 20.
    /// Error: not a whole number ≥ 1.
    #[arg(
        long = "messages-per-second",
        env = "MRM_MESSAGES_PER_SECOND",
        default_value = "20",
        value_parser = number::<NonZeroU32>
    )]
    pub messages_per_second: NonZeroU32,
    /// `MRM_SEARCHES_PER_MINUTE`: full-text searches a user may run per minute (a search costs
    /// more than a read of a page). Default 120. Error: not a whole number ≥ 1.
    #[arg(
        long = "searches-per-minute",
        env = "MRM_SEARCHES_PER_MINUTE",
        default_value = "120",
        value_parser = number::<NonZeroU32>
    )]
    pub searches_per_minute: NonZeroU32,
    /// `MRM_PAGE_BYTES`: the most bytes of JSON a page of a list holds; a page reaching it ends
    /// early, with fewer items than its `limit` and a `Link` to the rest. A page always holds one
    /// item, however large. Default 1048576 (1 MiB): a full page of 100 ordinary messages, while
    /// a list of chats, each with its newest 100 messages, no longer builds hundreds of megabytes.
    /// Error: not a whole number ≥ 1.
    #[arg(
        long = "page-bytes",
        env = "MRM_PAGE_BYTES",
        default_value = "1048576",
        value_parser = positive_count::<usize>
    )]
    pub page_bytes: usize,
    /// `MRM_WS_QUEUE`: frames a socket may have queued; past it the socket reads what it missed
    /// from the database until it is live again (closed as too slow, 4008, only when that happens
    /// three times within a minute).
    /// Default 256. Error: not a whole number ≥ 1.
    #[arg(
        long = "ws-queue",
        env = "MRM_WS_QUEUE",
        default_value = "256",
        value_parser = positive_count::<usize>
    )]
    pub ws_queue_capacity: usize,
    /// `MRM_WS_PING_SECONDS`: how often sockets are pinged, in whole seconds; a peer silent for a
    /// whole interval after a ping is dropped. Default 30. Error: not a whole number ≥ 1.
    #[arg(
        long = "ws-ping-seconds",
        env = "MRM_WS_PING_SECONDS",
        default_value = "30",
        value_parser = seconds
    )]
    pub ws_ping_interval: Duration,
    /// The language-model provider (`OPENAI_*`, `MRM_AI_*`).
    #[command(flatten)]
    pub ai: AiConfig,
    /// Attachments and their object store (`MRM_ATTACHMENT_*`, `MRM_S3_*`, …).
    #[command(flatten)]
    pub attachments: AttachmentConfig,
    /// `REDIS_URL`: Redis for fan-out between nodes, `redis://`, `rediss://` or `redis+unix://`;
    /// for a Redis Cluster, one or more of its nodes separated by commas (detected from
    /// `INFO cluster`). Default: none, and a single node delivers in process. Error: another
    /// scheme.
    #[arg(long = "redis-url", env = "REDIS_URL", value_parser = redis_url)]
    pub redis_url: Option<Secret>,
    /// `MRM_REDIS_PREFIX`: prefix of every Redis key and channel, so deployments (and test runs)
    /// can share a server. Default `mrm`. Error: a character other than a letter, a digit or one
    /// of `- _ . :`.
    #[arg(
        long = "redis-prefix",
        env = "MRM_REDIS_PREFIX",
        default_value = "mrm",
        value_parser = redis_prefix
    )]
    pub redis_prefix: String,
    /// `MRM_PRESENCE_TTL_SECONDS`: how long a node's presence entries live without a heartbeat,
    /// in whole seconds: the bound on how long a crashed node's users still look online
    /// elsewhere. Default 15. Error: not a whole number ≥ 1.
    #[arg(
        long = "presence-ttl-seconds",
        env = "MRM_PRESENCE_TTL_SECONDS",
        default_value = "15",
        value_parser = seconds
    )]
    pub presence_ttl: Duration,
    /// `MRM_MAX_SOCKETS`: most sockets served at once, chat and AI together, counted from the
    /// handshake on; past it handshakes get 503. Default: none here, and the server uses the
    /// open-file limit less a reserve for the database, Redis and plain HTTP. Error: not a whole
    /// number ≥ 1.
    #[arg(long = "max-sockets", env = "MRM_MAX_SOCKETS", value_parser = positive_count::<usize>)]
    pub max_sockets: Option<usize>,
    /// `MRM_MAX_CONNECTIONS`: most HTTP connections served at once; past it a new connection is
    /// answered 503 and closed at once. A connection upgraded to a WebSocket counts under
    /// `MRM_MAX_SOCKETS` instead. Default: none here, and the server uses a quarter of the
    /// open-file limit less a reserve. Error: not a whole number ≥ 1.
    #[arg(long = "max-connections", env = "MRM_MAX_CONNECTIONS", value_parser = positive_count::<usize>)]
    pub max_connections: Option<usize>,
    /// `MRM_HTTP_IDLE_SECONDS`: how long a connection may wait, with no request in progress, for
    /// its next request's first byte before it is closed, in whole seconds. Default 75: longer
    /// than the 60 s idle timeout of common proxies and load balancers in front, so they close
    /// first and never reuse a connection this server is closing. Error: not a whole number of
    /// seconds ≥ 1.
    #[arg(
        long = "http-idle-seconds",
        env = "MRM_HTTP_IDLE_SECONDS",
        default_value = "75",
        value_parser = seconds
    )]
    pub http_idle_timeout: Duration,
    /// `MRM_HTTP_HEADER_SECONDS`: how long a request's header may take from its first byte to
    /// its end before the connection is closed, in whole seconds. Default 10: a header is one
    /// round trip for any real client, even on a poor network. Error: not a whole number of
    /// seconds ≥ 1.
    #[arg(
        long = "http-header-seconds",
        env = "MRM_HTTP_HEADER_SECONDS",
        default_value = "10",
        value_parser = seconds
    )]
    pub http_header_timeout: Duration,
    /// `MRM_HTTP_BODY_SECONDS`: how long a request's body may take to arrive, from the end of its
    /// header, in whole seconds; past it the body is not read further and the request is answered
    /// 400, which gives the connection back. Default 30: the largest body (1 MiB) arrives in far
    /// less on any network a chat is usable on. Error: not a whole number of seconds ≥ 1.
    #[arg(
        long = "http-body-seconds",
        env = "MRM_HTTP_BODY_SECONDS",
        default_value = "30",
        value_parser = seconds
    )]
    pub http_body_timeout: Duration,
    /// `MRM_HTTP_WRITE_SECONDS`: longest a write of a response to a connection may wait for the
    /// client to take the data, in whole seconds; a client that sends requests but does not read
    /// the answers loses its connection then, instead of holding it (and its place under the
    /// connection caps) for ever. A connection upgraded to a WebSocket is under
    /// `MRM_WS_WRITE_TIMEOUT_SECONDS` instead. Default 30. Error: not a whole number of seconds
    /// ≥ 1.
    #[arg(
        long = "http-write-seconds",
        env = "MRM_HTTP_WRITE_SECONDS",
        default_value = "30",
        value_parser = seconds
    )]
    pub http_write_timeout: Duration,
    /// `MRM_MAX_CONNECTIONS_PER_ADDRESS`: most connections one client address may hold at once,
    /// HTTP and WebSocket together, counted from the TCP peer's address as it connects (an IPv6
    /// address by its /64); past it a new connection is answered 429 and closed at once. Trusted
    /// proxies (`MRM_TRUSTED_PROXIES`) are exempt: their connections carry many clients, and
    /// stay under `MRM_MAX_CONNECTIONS` only. Default 256: a browser tab holds a socket and up to
    /// six HTTP connections, so a classroom or an office behind one NAT address fits, while one
    /// address can hold only a small share of the connections. Error: not a whole number ≥ 1.
    #[arg(
        long = "max-connections-per-address",
        env = "MRM_MAX_CONNECTIONS_PER_ADDRESS",
        default_value = "256",
        value_parser = positive_count::<usize>
    )]
    pub max_connections_per_address: usize,
    /// `MRM_TRUSTED_PROXIES`: the proxies in front of the server, whose `X-Forwarded-For` names
    /// the client; comma-separated IPv4 and IPv6 addresses and networks (`10.0.0.5`,
    /// `10.0.0.0/8`, `fd00::/8`). A request from one of them is counted, for every budget kept
    /// per client address, against the right-most address of the header that is not itself a
    /// trusted proxy; any other request against its peer's address, the header ignored. Their
    /// connections are exempt from `MRM_MAX_CONNECTIONS_PER_ADDRESS`. Default: none, so no
    /// client can claim to be another. Error: an entry that is neither an address nor a network.
    #[arg(
        long = "trusted-proxies",
        env = "MRM_TRUSTED_PROXIES",
        default_value = "",
        value_parser = trusted_proxies
    )]
    pub trusted_proxies: TrustedProxies,
    /// `MRM_MAX_SOCKETS_PER_USER`: most sockets one user may hold on this node at once, chat and
    /// AI together; past it handshakes get 429. Default 32. Error: not a whole number ≥ 1.
    #[arg(
        long = "max-sockets-per-user",
        env = "MRM_MAX_SOCKETS_PER_USER",
        default_value = "32",
        value_parser = positive_count::<usize>
    )]
    pub max_sockets_per_user: usize,
    /// `MRM_CREDENTIAL_RECHECK_SECONDS`: how often every open socket's credential is checked
    /// again even when no change was announced, in whole seconds: sessions that expire close
    /// their sockets within this long. (Ended credentials announced by any process, the command
    /// line included, are noticed within a second.) Default 60. Error: not a whole number ≥ 1.
    #[arg(
        long = "credential-recheck-seconds",
        env = "MRM_CREDENTIAL_RECHECK_SECONDS",
        default_value = "60",
        value_parser = seconds
    )]
    pub credential_recheck: Duration,
    /// `MRM_WS_WRITE_TIMEOUT_SECONDS`: longest a socket write (or flush) may wait for the client
    /// to take the data, in whole seconds; a socket that cannot drain in time is closed (4008),
    /// or dropped when even the close cannot be written. Default 10. Error: not a whole number
    /// ≥ 1.
    #[arg(
        long = "ws-write-timeout-seconds",
        env = "MRM_WS_WRITE_TIMEOUT_SECONDS",
        default_value = "10",
        value_parser = seconds
    )]
    pub ws_write_timeout: Duration,
}

/// A configuration error: the variable it is about and why, printed as `VAR: reason` on one
/// line.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    /// The environment variable whose value was refused, e.g. `MRM_BIND`.
    pub var: &'static str,
    /// What is wrong with it, quoting the value unless it is secret.
    pub reason: String,
}

impl Config {
    /// Reads the process environment. Call `dotenvy::dotenv()` first to honour a `.env` file.
    ///
    /// # Errors
    /// The first variable, in declaration order, whose value is refused.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| env::var(name).ok())
    }

    /// Builds the configuration from any variable source (the environment, or a map in tests).
    /// A variable that is missing, or blank, takes its default.
    ///
    /// # Errors
    /// The first variable, in declaration order, whose value is refused.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut options = vec![OsString::from("mrm-chat")];
        for (arg, var) in variables() {
            if let Some(value) = get(var).filter(|v| !v.trim().is_empty()) {
                let long = arg.get_long().expect("every variable has a long name");
                options.push(format!("--{long}={value}").into());
            }
        }
        // Only the lookup counts: clap's own reading of the process environment is switched off.
        let matches = command()
            .clone()
            .mut_args(|arg| arg.env(None))
            .try_get_matches_from(options)
            .map_err(refused)?;
        Config::from_arg_matches(&matches).map_err(refused)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field("database_url", &without_password(&self.database_url))
            .field("db_max_connections", &self.db_max_connections)
            .field("allowed_origins", &self.allowed_origins)
            .field("cors_origins", &self.cors_origins)
            .field("secure_cookies", &self.secure_cookies)
            .field("log_format", &self.log_format)
            .field("login_attempts_per_minute", &self.login_attempts_per_minute)
            .field(
                "password_attempts_per_minute",
                &self.password_attempts_per_minute,
            )
            .field("password_queue", &self.password_queue)
            .field("messages_per_second", &self.messages_per_second)
            .field("searches_per_minute", &self.searches_per_minute)
            .field("page_bytes", &self.page_bytes)
            .field("ws_queue_capacity", &self.ws_queue_capacity)
            .field("ws_ping_interval", &self.ws_ping_interval)
            .field("ai", &self.ai)
            .field("attachments", &self.attachments)
            .field("redis_url", &self.redis_url)
            .field("redis_prefix", &self.redis_prefix)
            .field("presence_ttl", &self.presence_ttl)
            .field("max_sockets", &self.max_sockets)
            .field("max_connections", &self.max_connections)
            .field("http_idle_timeout", &self.http_idle_timeout)
            .field("http_header_timeout", &self.http_header_timeout)
            .field("http_body_timeout", &self.http_body_timeout)
            .field("http_write_timeout", &self.http_write_timeout)
            .field(
                "max_connections_per_address",
                &self.max_connections_per_address,
            )
            .field("trusted_proxies", &self.trusted_proxies)
            .field("max_sockets_per_user", &self.max_sockets_per_user)
            .field("credential_recheck", &self.credential_recheck)
            .field("ws_write_timeout", &self.ws_write_timeout)
            .finish()
    }
}

/// The declaration as a clap command, built once.
fn command() -> &'static Command {
    static COMMAND: OnceLock<Command> = OnceLock::new();
    COMMAND.get_or_init(|| {
        let mut command = Config::augment_args(Command::new("mrm-chat").disable_help_flag(true));
        command.build();
        command
    })
}

/// Each declared argument with the variable it is read from.
fn variables() -> impl Iterator<Item = (&'static Arg, &'static str)> {
    command().get_arguments().filter_map(|arg| {
        let var = arg.get_env()?.to_str()?;
        Some((arg, var))
    })
}

/// Turns clap's refusal of a value into one line naming the variable.
fn refused(err: clap::Error) -> ConfigError {
    let arg = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => Some(arg.as_str()),
        _ => None,
    };
    let var = variables().find(|(declared, _)| arg == Some(declared.to_string().as_str()));
    match (var, std::error::Error::source(&err)) {
        (Some((_, var)), Some(reason)) => ConfigError {
            var,
            reason: reason.to_string(),
        },
        // Not expected: every variable has a default or is optional, and only values are given.
        _ => ConfigError {
            var: "configuration",
            reason: err.kind().to_string(),
        },
    }
}

/// `raw`, blanks around it ignored, as a `T`; the message quotes the value as given.
fn number<T: FromStr>(raw: &str) -> Result<T, String>
where
    T::Err: fmt::Display,
{
    raw.trim()
        .parse()
        .map_err(|e| format!("invalid value {raw:?}: {e}"))
}

/// A count that must be at least 1.
fn positive_count<T: FromStr + Default + PartialEq>(raw: &str) -> Result<T, String>
where
    T::Err: fmt::Display,
{
    let count: T = number(raw)?;
    if count == T::default() {
        return Err("must be at least 1".into());
    }
    Ok(count)
}

/// A whole number of seconds, at least 1.
fn seconds(raw: &str) -> Result<Duration, String> {
    let seconds: NonZeroU32 = number(raw)?;
    Ok(Duration::from_secs(seconds.get().into()))
}

/// A reply's claim among nodes: 3 s (renewed every second) to 600 s.
fn lease_seconds(raw: &str) -> Result<Duration, String> {
    let lease = seconds(raw)?;
    if !(3..=600).contains(&lease.as_secs()) {
        return Err("expected 3 to 600 seconds".into());
    }
    Ok(lease)
}

/// Seconds a presigned URL may live: 1 to 604,800 (seven days, S3's limit for SigV4).
fn presigned_seconds(raw: &str) -> Result<Duration, String> {
    let duration = seconds(raw)?;
    if duration > Duration::from_secs(604_800) {
        return Err("must be at most 604800 (seven days)".into());
    }
    Ok(duration)
}

fn boolean(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        other => Err(format!("expected true or false, got {other:?}")),
    }
}

fn log_format(raw: &str) -> Result<LogFormat, String> {
    match raw {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("expected \"text\" or \"json\", got {other:?}")),
    }
}

fn database_url(raw: &str) -> Result<String, String> {
    if ["sqlite:", "postgres://", "postgresql://"]
        .iter()
        .any(|scheme| raw.starts_with(scheme))
    {
        Ok(raw.to_owned())
    } else {
        Err("must start with sqlite:, postgres:// or postgresql://".into())
    }
}

fn base_url(raw: &str) -> Result<String, String> {
    let url = raw.trim().trim_end_matches('/');
    if !(url.starts_with("http://") || url.starts_with("https://"))
        || url.parse::<http::Uri>().is_err()
    {
        return Err(format!("expected an http(s) URL, got {url:?}"));
    }
    Ok(url.to_owned())
}

/// One entry of `MRM_AI_PROVIDERS`: an OpenAI-compatible API and the models it may serve.
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// 1 to 32 of `a-z 0-9 _ -`, starting with a letter or digit; prefixes its model ids.
    pub name: String,
    /// The API's address, ending before `/chat/completions`.
    pub base_url: String,
    /// Sent as a bearer token; none for servers that want none (a local Ollama).
    #[serde(default)]
    pub api_key: Option<String>,
    /// The models users may choose (default: whatever the provider lists).
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Offer this provider's models to staff only.
    #[serde(default)]
    pub staff_only: bool,
    /// The context window of this provider's models, in tokens (default: `MRM_AI_CONTEXT_WINDOW`,
    /// else what is documented for the model's name).
    #[serde(default)]
    pub context_window: Option<u32>,
}

impl fmt::Debug for ProviderSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderSpec")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "…"))
            .field("models", &self.models)
            .field("staff_only", &self.staff_only)
            .field("context_window", &self.context_window)
            .finish()
    }
}

/// `MRM_AI_PROVIDERS`, validated: names unique, URLs http(s), model names non-empty.
#[derive(Debug, Clone, Default)]
pub struct ProviderList(pub Vec<ProviderSpec>);

/// Most providers `MRM_AI_PROVIDERS` may name, and most models each allow-list may hold.
const MAX_PROVIDERS: usize = 32;
const MAX_ALLOWED_MODELS: usize = 256;

fn providers(raw: &str) -> Result<ProviderList, String> {
    let mut list: Vec<ProviderSpec> = serde_json::from_str(raw.trim())
        .map_err(|e| format!("expected a JSON array of providers: {e}"))?;
    if list.len() > MAX_PROVIDERS {
        return Err(format!("at most {MAX_PROVIDERS} providers"));
    }
    let mut names = std::collections::HashSet::new();
    for spec in &mut list {
        let valid_name = (1..=32).contains(&spec.name.len())
            && spec
                .name
                .starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && spec
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !valid_name {
            return Err(format!(
                "provider name {:?}: 1 to 32 of a-z, 0-9, _ and -",
                spec.name
            ));
        }
        if !names.insert(spec.name.clone()) {
            return Err(format!("provider {:?} is named twice", spec.name));
        }
        spec.base_url = base_url(&spec.base_url).map_err(|e| format!("{}: {e}", spec.name))?;
        spec.api_key = spec
            .api_key
            .take()
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty());
        if spec.context_window == Some(0) {
            return Err(format!("{}: context_window must be at least 1", spec.name));
        }
        if let Some(models) = &spec.models {
            if models.len() > MAX_ALLOWED_MODELS
                || models.iter().any(|m| m.trim().is_empty() || m.len() > 200)
            {
                return Err(format!(
                    "{}: models must be 1 to {MAX_ALLOWED_MODELS} names of 1 to 200 bytes",
                    spec.name
                ));
            }
        }
    }
    Ok(ProviderList(list))
}

fn metrics_token(raw: &str) -> Result<Secret, String> {
    let token = raw.trim();
    if token.chars().count() < 16 {
        return Err("expected a token of at least 16 characters".into());
    }
    Ok(Secret::new(token))
}

fn api_key(raw: &str) -> Result<Secret, String> {
    Ok(Secret::new(raw.trim()))
}

/// One Redis URL, or a Redis Cluster's nodes separated by commas.
fn redis_url(raw: &str) -> Result<Secret, String> {
    let urls: Vec<&str> = raw.split(',').map(str::trim).collect();
    if urls.iter().all(|url| {
        ["redis://", "rediss://", "redis+unix://"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
    }) {
        Ok(Secret::new(urls.join(",")))
    } else {
        Err("expected redis://host[:port][/db], or a cluster's nodes separated by commas".into())
    }
}

fn redis_prefix(raw: &str) -> Result<String, String> {
    if raw
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    {
        Ok(raw.to_owned())
    } else {
        Err("use letters, digits and - _ . : only".into())
    }
}

/// A comma-separated list of `scheme://host[:port]` origins, normalised to lower case.
fn origins(raw: &str) -> Result<Vec<String>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| {
            let uri: http::Uri = o.parse().map_err(|_| format!("bad origin {o:?}"))?;
            let ok = matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.authority().is_some()
                && uri
                    .path_and_query()
                    .is_none_or(|p| p.as_str() == "/" || p.as_str().is_empty());
            if !ok {
                return Err(format!("bad origin {o:?}: expected scheme://host[:port]"));
            }
            Ok(o.trim_end_matches('/').to_ascii_lowercase())
        })
        .collect()
}

fn cors_origins(raw: &str) -> Result<Vec<HeaderValue>, String> {
    origins(raw)?
        .into_iter()
        .map(|o| HeaderValue::from_str(&o).map_err(|_| format!("bad origin {o:?}")))
        .collect()
}

fn trusted_proxies(raw: &str) -> Result<TrustedProxies, String> {
    raw.parse()
}

/// The URL with the password of its user part, if any, replaced by `…`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((user_info, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match user_info.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:…@{host}{path}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap};

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_safe() {
        let c = config(&[]).unwrap();
        assert_eq!(c.bind.to_string(), DEFAULT_BIND);
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
        assert!(c.cors_origins.is_empty());
        assert!(c.allowed_origins.is_empty());
        assert!(!c.secure_cookies);
    }

    #[test]
    fn every_default_is_as_documented() {
        let c = config(&[]).unwrap();
        assert_eq!(c.db_max_connections, 16);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.login_attempts_per_minute.get(), 10);
        assert_eq!(c.messages_per_second.get(), 20);
        assert_eq!(c.searches_per_minute.get(), 120);
        assert_eq!(c.ws_queue_capacity, 256);
        assert_eq!(c.ws_ping_interval, Duration::from_secs(30));
        assert_eq!(c.max_sockets, None);
        assert_eq!(c.max_sockets_per_user, 32);
        assert_eq!(c.credential_recheck, Duration::from_secs(60));
        assert_eq!(c.ws_write_timeout, Duration::from_secs(10));
        assert!(c.ai.api_key.is_none());
        assert_eq!(c.ai.base_url, "https://api.openai.com/v1");
        assert_eq!(c.ai.model, "gpt-4o-mini");
        assert_eq!(c.ai.timeout, Duration::from_secs(60));
        assert_eq!(c.ai.retries, 3);
        assert_eq!(c.ai.max_concurrent_per_user, 2);
        assert_eq!(c.ai.context_window, None);
        assert_eq!(c.ai.reply_reserve, 1024);
        assert_eq!((c.ai.daily_tokens, c.ai.monthly_tokens), (None, None));
        assert!(c.ai.titles);
        assert_eq!(c.attachments.max_bytes, 25 * 1024 * 1024);
        assert_eq!(c.attachments.quota_bytes, 1024 * 1024 * 1024);
        assert_eq!(c.attachments.grace, Duration::from_secs(86_400));
        assert_eq!(c.attachments.sweep_interval, Duration::from_secs(60));
        assert_eq!(c.attachments.upload_timeout, Duration::from_secs(600));
        assert_eq!(c.attachments.dir, std::path::PathBuf::from("attachments"));
        assert!(c.attachments.s3_bucket.is_none());
        assert!(c.attachments.s3_presigned.is_none());
        assert!(c.redis_url.is_none());
        assert_eq!(c.redis_prefix, "mrm");
        assert_eq!(c.presence_ttl, Duration::from_secs(15));
        assert_eq!(c.http_idle_timeout, Duration::from_secs(75));
        assert_eq!(c.http_header_timeout, Duration::from_secs(10));
        assert_eq!(c.http_body_timeout, Duration::from_secs(30));
        assert_eq!(c.http_write_timeout, Duration::from_secs(30));
        assert_eq!(c.max_connections_per_address, 256);
        assert!(c.trusted_proxies.is_empty());
    }

    #[test]
    fn values_are_read_and_converted() {
        let c = config(&[
            ("MRM_BIND", " 0.0.0.0:9000 "),
            ("DATABASE_URL", "postgres://chat@db/chat"),
            ("MRM_DB_MAX_CONNECTIONS", "4"),
            ("MRM_SECURE_COOKIES", "YES"),
            ("MRM_LOG_FORMAT", "json"),
            ("MRM_WS_PING_SECONDS", "5"),
            ("OPENAI_BASE_URL", " http://localhost:11434/v1/ "),
            ("OPENAI_MODEL", "llama3"),
            ("OPENAI_RETRIES", "0"),
            ("MRM_AI_MAX_CONCURRENT_PER_USER", "7"),
            ("REDIS_URL", " redis://127.0.0.1:6379/2 "),
            ("MRM_REDIS_PREFIX", "staging:chat"),
            ("MRM_MAX_SOCKETS", "100"),
            ("MRM_HTTP_BODY_SECONDS", "3"),
            ("MRM_HTTP_WRITE_SECONDS", "4"),
            ("MRM_MAX_CONNECTIONS_PER_ADDRESS", "5"),
            ("MRM_TRUSTED_PROXIES", "10.0.0.0/8, ::1"),
            // Blank counts as unset.
            ("MRM_WS_QUEUE", "  "),
        ])
        .unwrap();
        assert_eq!(c.bind.to_string(), "0.0.0.0:9000");
        assert_eq!(c.database_url, "postgres://chat@db/chat");
        assert_eq!(c.db_max_connections, 4);
        assert!(c.secure_cookies);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.ws_ping_interval, Duration::from_secs(5));
        assert_eq!(c.ai.base_url, "http://localhost:11434/v1");
        assert_eq!(c.ai.model, "llama3");
        assert_eq!(c.ai.retries, 0);
        assert_eq!(c.ai.max_concurrent_per_user, 7);
        assert_eq!(
            c.redis_url.as_ref().unwrap().expose(),
            "redis://127.0.0.1:6379/2"
        );
        assert_eq!(c.redis_prefix, "staging:chat");
        assert_eq!(c.max_sockets, Some(100));
        assert_eq!(c.ws_queue_capacity, 256);
        assert_eq!(c.http_body_timeout, Duration::from_secs(3));
        assert_eq!(c.http_write_timeout, Duration::from_secs(4));
        assert_eq!(c.max_connections_per_address, 5);
        assert!(c.trusted_proxies.contains("10.1.2.3".parse().unwrap()));
        assert!(c.trusted_proxies.contains("::1".parse().unwrap()));
        assert!(!c.trusted_proxies.contains("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn bad_values_name_their_variable() {
        let err = config(&[("MRM_BIND", "nowhere")]).unwrap_err();
        assert_eq!(err.var, "MRM_BIND");
        let err = config(&[("DATABASE_URL", "mysql://x")]).unwrap_err();
        assert_eq!(err.var, "DATABASE_URL");
        let err = config(&[("MRM_SECURE_COOKIES", "maybe")]).unwrap_err();
        assert_eq!(err.var, "MRM_SECURE_COOKIES");
        let err = config(&[("MRM_ALLOWED_ORIGINS", "example.com")]).unwrap_err();
        assert_eq!(err.var, "MRM_ALLOWED_ORIGINS");
        let err = config(&[("MRM_MESSAGES_PER_SECOND", "0")]).unwrap_err();
        assert_eq!(err.var, "MRM_MESSAGES_PER_SECOND");
        let err = config(&[("OPENAI_BASE_URL", "localhost:11434")]).unwrap_err();
        assert_eq!(err.var, "OPENAI_BASE_URL");
    }

    #[test]
    fn errors_are_one_line_as_before() {
        let cases = [
            (
                ("MRM_BIND", "nowhere"),
                "MRM_BIND: invalid value \"nowhere\": invalid socket address syntax",
            ),
            (
                ("DATABASE_URL", "mysql://x"),
                "DATABASE_URL: must start with sqlite:, postgres:// or postgresql://",
            ),
            (
                ("MRM_DB_MAX_CONNECTIONS", "0"),
                "MRM_DB_MAX_CONNECTIONS: must be at least 1",
            ),
            (
                ("MRM_DB_MAX_CONNECTIONS", "many"),
                "MRM_DB_MAX_CONNECTIONS: invalid value \"many\": invalid digit found in string",
            ),
            (
                ("MRM_ALLOWED_ORIGINS", "https://ok.example, https://x.example/path"),
                "MRM_ALLOWED_ORIGINS: bad origin \"https://x.example/path\": expected scheme://host[:port]",
            ),
            (
                ("MRM_CORS_ORIGINS", "ftp://files.example"),
                "MRM_CORS_ORIGINS: bad origin \"ftp://files.example\": expected scheme://host[:port]",
            ),
            (
                ("MRM_SECURE_COOKIES", " Maybe "),
                "MRM_SECURE_COOKIES: expected true or false, got \"maybe\"",
            ),
            (
                ("MRM_LOG_FORMAT", "xml"),
                "MRM_LOG_FORMAT: expected \"text\" or \"json\", got \"xml\"",
            ),
            (
                ("MRM_LOGIN_ATTEMPTS_PER_MINUTE", "0"),
                "MRM_LOGIN_ATTEMPTS_PER_MINUTE: invalid value \"0\": number would be zero for non-zero type",
            ),
            (("MRM_WS_QUEUE", "0"), "MRM_WS_QUEUE: must be at least 1"),
            (
                ("MRM_MAX_CONNECTIONS_PER_ADDRESS", "0"),
                "MRM_MAX_CONNECTIONS_PER_ADDRESS: must be at least 1",
            ),
            (
                ("MRM_TRUSTED_PROXIES", "10.0.0.1, proxy.internal"),
                "MRM_TRUSTED_PROXIES: bad entry \"proxy.internal\": expected an IP address or a \
                 network such as 10.0.0.0/8 or fd00::/8",
            ),
            (
                ("MRM_HTTP_WRITE_SECONDS", "0"),
                "MRM_HTTP_WRITE_SECONDS: invalid value \"0\": number would be zero for non-zero type",
            ),
            (
                ("MRM_WS_PING_SECONDS", "-1"),
                "MRM_WS_PING_SECONDS: invalid value \"-1\": invalid digit found in string",
            ),
            (
                ("OPENAI_BASE_URL", "localhost:11434/"),
                "OPENAI_BASE_URL: expected an http(s) URL, got \"localhost:11434\"",
            ),
            (
                ("OPENAI_TIMEOUT_SECONDS", "0"),
                "OPENAI_TIMEOUT_SECONDS: invalid value \"0\": number would be zero for non-zero type",
            ),
            (
                ("MRM_AI_MAX_CONCURRENT_PER_USER", "0"),
                "MRM_AI_MAX_CONCURRENT_PER_USER: must be at least 1",
            ),
            (
                ("OPENAI_RETRIES", "three"),
                "OPENAI_RETRIES: invalid value \"three\": invalid digit found in string",
            ),
            (
                ("REDIS_URL", "http://cache:6379"),
                "REDIS_URL: expected redis://host[:port][/db], or a cluster's nodes separated by commas",
            ),
            (
                ("MRM_REDIS_PREFIX", "a b"),
                "MRM_REDIS_PREFIX: use letters, digits and - _ . : only",
            ),
            (
                ("MRM_PRESENCE_TTL_SECONDS", "0"),
                "MRM_PRESENCE_TTL_SECONDS: invalid value \"0\": number would be zero for non-zero type",
            ),
            (
                ("MRM_MAX_SOCKETS", "lots"),
                "MRM_MAX_SOCKETS: invalid value \"lots\": invalid digit found in string",
            ),
            (("MRM_MAX_SOCKETS", "0"), "MRM_MAX_SOCKETS: must be at least 1"),
            (
                ("MRM_MAX_SOCKETS_PER_USER", "0"),
                "MRM_MAX_SOCKETS_PER_USER: must be at least 1",
            ),
            (
                ("MRM_WS_WRITE_TIMEOUT_SECONDS", "0"),
                "MRM_WS_WRITE_TIMEOUT_SECONDS: invalid value \"0\": number would be zero for non-zero type",
            ),
        ];
        for ((var, value), expected) in cases {
            let err = config(&[(var, value)]).unwrap_err();
            assert_eq!(err.to_string(), expected);
        }
    }

    #[test]
    fn every_variable_takes_a_value() {
        // A `bool` field without `ArgAction::Set` is a flag to clap, and any value given in
        // the environment is refused ("unexpected value"): the variable could never be set.
        for (arg, var) in variables() {
            assert!(arg.get_action().takes_values(), "{var} takes no value");
        }
        let c = config(&[("MRM_AI_TITLES", "false"), ("MRM_SECURE_COOKIES", "true")]).unwrap();
        assert!(!c.ai.titles);
        assert!(c.secure_cookies);
    }

    #[test]
    fn providers_are_read_checked_and_their_keys_never_print() {
        let c = config(&[(
            "MRM_AI_PROVIDERS",
            r#"[{"name": "local", "base_url": "http://127.0.0.1:11434/v1/"},
                {"name": "lab", "base_url": "https://x.example/v1", "api_key": " sk-lab ",
                 "models": ["big"], "staff_only": true, "context_window": 32000}]"#,
        )])
        .unwrap();
        let list = &c.ai.providers.as_ref().unwrap().0;
        assert_eq!(list[0].base_url, "http://127.0.0.1:11434/v1");
        assert_eq!(list[0].api_key, None);
        assert_eq!(list[1].api_key.as_deref(), Some("sk-lab"));
        assert_eq!(list[1].models.as_deref(), Some(&["big".to_owned()][..]));
        assert!(list[1].staff_only);
        assert!(!format!("{c:?}").contains("sk-lab"));
        for (value, expected) in [
            ("{}", "expected a JSON array of providers"),
            (
                r#"[{"name": "Local", "base_url": "http://x"}]"#,
                "1 to 32 of a-z",
            ),
            (
                r#"[{"name": "a", "base_url": "x"}]"#,
                "expected an http(s) URL",
            ),
            (
                r#"[{"name": "a", "base_url": "http://x"}, {"name": "a", "base_url": "http://y"}]"#,
                "named twice",
            ),
            (
                r#"[{"name": "a", "base_url": "http://x", "models": [""]}]"#,
                "models must be",
            ),
            (
                r#"[{"name": "a", "base_url": "http://x", "extra": 1}]"#,
                "unknown field",
            ),
        ] {
            let err = config(&[("MRM_AI_PROVIDERS", value)]).unwrap_err();
            assert_eq!(err.var, "MRM_AI_PROVIDERS");
            assert!(err.to_string().contains(expected), "{value}: {err}");
        }
    }

    #[test]
    fn the_first_bad_variable_is_reported() {
        let err = config(&[("MRM_MAX_SOCKETS", "x"), ("MRM_BIND", "x")]).unwrap_err();
        assert_eq!(err.var, "MRM_BIND");
        let err = config(&[("MRM_MAX_SOCKETS", "x"), ("OPENAI_RETRIES", "x")]).unwrap_err();
        assert_eq!(err.var, "OPENAI_RETRIES");
    }

    #[test]
    fn a_value_is_never_read_as_an_option() {
        let c = config(&[("OPENAI_MODEL", "--bind=nowhere")]).unwrap();
        assert_eq!(c.ai.model, "--bind=nowhere");
        assert_eq!(c.bind.to_string(), DEFAULT_BIND);
    }

    /// Only the lookup counts: a variable of the process's own environment does not leak into a
    /// configuration built from a map. Checked in a child process of this test binary, so that
    /// no test changes the environment of the process the others run in.
    #[test]
    fn the_process_environment_is_not_read_by_from_lookup() {
        const CHILD: &str = "MRM_CONFIG_TEST_CHILD";
        const NAME: &str = "config::tests::the_process_environment_is_not_read_by_from_lookup";
        if env::var_os(CHILD).is_some() {
            let c = Config::from_lookup(|_| None).unwrap();
            assert_eq!(c.ai.model, "gpt-4o-mini");
            assert_eq!(c.bind.to_string(), DEFAULT_BIND);
            return;
        }
        let output = std::process::Command::new(env::current_exe().unwrap())
            .args([NAME, "--exact", "--test-threads=1"])
            .env(CHILD, "1")
            .env("OPENAI_MODEL", "from-the-process")
            .env("MRM_BIND", "not-an-address")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}");
        assert!(stdout.contains("1 passed"), "{stdout}");
    }

    #[test]
    fn the_api_key_never_prints() {
        let c = config(&[("OPENAI_API_KEY", "sk-very-secret")]).unwrap();
        assert_eq!(c.ai.api_key.as_ref().unwrap().expose(), "sk-very-secret");
        assert!(!format!("{c:?}").contains("sk-very-secret"));
    }

    #[test]
    fn passwords_in_urls_never_print() {
        let c = config(&[
            ("DATABASE_URL", "postgres://chat:db-password@db:5432/chat"),
            ("REDIS_URL", "redis://:redis-password@cache:6379"),
        ])
        .unwrap();
        assert_eq!(
            c.database_url, "postgres://chat:db-password@db:5432/chat",
            "the value itself is kept"
        );
        let printed = format!("{c:?}");
        assert!(!printed.contains("db-password"), "{printed}");
        assert!(!printed.contains("redis-password"), "{printed}");
        assert!(
            printed.contains("postgres://chat:…@db:5432/chat"),
            "{printed}"
        );
        assert_eq!(
            without_password("sqlite://data/chat.sqlite3"),
            "sqlite://data/chat.sqlite3"
        );
    }

    #[test]
    fn origins_are_normalised() {
        let c = config(&[(
            "MRM_ALLOWED_ORIGINS",
            "https://Chat.Example.com/, http://localhost:3000",
        )])
        .unwrap();
        assert_eq!(
            c.allowed_origins,
            vec!["https://chat.example.com", "http://localhost:3000"]
        );
    }

    /// The README's table lists exactly the variables declared here, with the same defaults.
    #[test]
    fn the_readme_lists_every_variable_with_its_default() {
        let readme = include_str!("../README.md");
        let table: BTreeMap<&str, Option<&str>> = readme
            .lines()
            .filter_map(|line| {
                let mut cells = line.strip_prefix("| `")?.split(" | ");
                let var = cells.next()?.strip_suffix('`')?;
                let default = cells.next()?;
                let default = default.strip_prefix('`').and_then(|d| d.strip_suffix('`'));
                Some((var, default))
            })
            .filter(|(var, _)| {
                var.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            })
            .filter(|(var, _)| *var != "RUST_LOG") // read by the log filter, not here
            .collect();
        let declared: BTreeMap<&str, Option<String>> = variables()
            .map(|(arg, var)| {
                let default = arg
                    .get_default_values()
                    .first()
                    .map(|d| d.to_string_lossy().into_owned())
                    .filter(|d| !d.is_empty());
                (var, default)
            })
            .collect();
        assert_eq!(
            table.keys().collect::<Vec<_>>(),
            declared.keys().collect::<Vec<_>>()
        );
        for (var, default) in declared {
            assert_eq!(table[var], default.as_deref(), "default of {var}");
        }
    }
}
