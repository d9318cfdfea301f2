//! Settings read from the environment (and an optional `.env` file): one struct is the whole
//! configuration, validated once at start-up so a bad value stops the process with a clear line.

use std::{env, net::SocketAddr, num::NonZeroU32, str::FromStr, time::Duration};

use http::HeaderValue;

/// Where the embedded default keeps its data: a file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://mrm-chat.sqlite3";
pub const DEFAULT_BIND: &str = "127.0.0.1:8000";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A value that must never reach a log: its `Debug` prints a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// The language-model provider: any OpenAI-compatible chat-completions API.
#[derive(Debug, Clone)]
pub struct AiConfig {
    /// `None` when no key is set: AI replies answer 503.
    pub api_key: Option<Secret>,
    /// Ends before `/chat/completions`, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub model: String,
    /// Longest wait for the provider to answer, and between two streamed chunks.
    pub timeout: Duration,
    /// Attempts after the first when the provider answers 429 or 5xx.
    pub retries: u32,
    pub max_concurrent_per_user: usize,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub database_url: String,
    pub db_max_connections: u32,
    /// Origins trusted for cookie-authenticated writes (CSRF) and WebSocket handshakes, besides
    /// the server's own host. Each is `scheme://host[:port]`.
    pub allowed_origins: Vec<String>,
    /// Origins allowed to make credentialed cross-origin requests; none by default.
    pub cors_origins: Vec<HeaderValue>,
    /// Mark cookies `Secure`; set when the server sits behind HTTPS.
    pub secure_cookies: bool,
    pub log_format: LogFormat,
    /// Failed or successful login / token attempts allowed per client address and username.
    pub login_attempts_per_minute: NonZeroU32,
    /// Messages a user may send to one chat per second.
    pub messages_per_second: NonZeroU32,
    /// Frames a socket may have queued before it is closed as too slow (4008).
    pub ws_queue_capacity: usize,
    /// How often sockets are pinged; a peer silent for a whole interval after a ping is dropped.
    pub ws_ping_interval: Duration,
    /// Most sockets served at once; past it handshakes get 503. By default the open-file limit
    /// less a reserve for the database, Redis and plain HTTP.
    pub max_sockets: Option<usize>,
    pub ai: AiConfig,
    /// Redis for fan-out between nodes; `None` runs a single node with in-process delivery.
    pub redis_url: Option<Secret>,
    /// Prefix of every Redis key and channel, so deployments (and test runs) can share a server.
    pub redis_prefix: String,
    /// How long a node's presence entries live without a heartbeat: the bound on how long a
    /// crashed node's users still look online elsewhere.
    pub presence_ttl: Duration,
}

/// A configuration error names the variable it is about.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

impl ConfigError {
    fn new(var: &'static str, reason: impl Into<String>) -> Self {
        Self {
            var,
            reason: reason.into(),
        }
    }
}

impl Config {
    /// Reads the process environment. Call `dotenvy::dotenv()` first to honour a `.env` file.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| env::var(name).ok())
    }

    /// Builds the configuration from any variable source (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &'static str| get(name).filter(|v| !v.trim().is_empty());

        let bind = parse_or(var("MRM_BIND"), "MRM_BIND", DEFAULT_BIND)?;
        let database_url = var("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "must start with sqlite:, postgres:// or postgresql://",
            ));
        }
        let db_max_connections: u32 = parse_or(
            var("MRM_DB_MAX_CONNECTIONS"),
            "MRM_DB_MAX_CONNECTIONS",
            "16",
        )?;
        if db_max_connections == 0 {
            return Err(ConfigError::new(
                "MRM_DB_MAX_CONNECTIONS",
                "must be at least 1",
            ));
        }

        let allowed_origins = origin_list(var("MRM_ALLOWED_ORIGINS"), "MRM_ALLOWED_ORIGINS")?;
        let cors_origins = origin_list(var("MRM_CORS_ORIGINS"), "MRM_CORS_ORIGINS")?
            .into_iter()
            .map(|o| {
                HeaderValue::from_str(&o)
                    .map_err(|_| ConfigError::new("MRM_CORS_ORIGINS", format!("bad origin {o:?}")))
            })
            .collect::<Result<_, _>>()?;

        let secure_cookies = parse_bool(var("MRM_SECURE_COOKIES"), "MRM_SECURE_COOKIES", false)?;
        let log_format = match var("MRM_LOG_FORMAT").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::new(
                    "MRM_LOG_FORMAT",
                    format!("expected \"text\" or \"json\", got {other:?}"),
                ))
            }
        };
        let login_attempts_per_minute = parse_or(
            var("MRM_LOGIN_ATTEMPTS_PER_MINUTE"),
            "MRM_LOGIN_ATTEMPTS_PER_MINUTE",
            "10",
        )?;
        let messages_per_second = parse_or(
            var("MRM_MESSAGES_PER_SECOND"),
            "MRM_MESSAGES_PER_SECOND",
            "20",
        )?;

        let ws_queue_capacity: usize = parse_or(var("MRM_WS_QUEUE"), "MRM_WS_QUEUE", "256")?;
        if ws_queue_capacity == 0 {
            return Err(ConfigError::new("MRM_WS_QUEUE", "must be at least 1"));
        }
        let ping_seconds: NonZeroU32 =
            parse_or(var("MRM_WS_PING_SECONDS"), "MRM_WS_PING_SECONDS", "30")?;

        let base_url =
            var("OPENAI_BASE_URL").unwrap_or_else(|| "https://api.openai.com/v1".to_owned());
        let base_url = base_url.trim().trim_end_matches('/').to_owned();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://"))
            || base_url.parse::<http::Uri>().is_err()
        {
            return Err(ConfigError::new(
                "OPENAI_BASE_URL",
                format!("expected an http(s) URL, got {base_url:?}"),
            ));
        }
        let timeout: NonZeroU32 = parse_or(
            var("OPENAI_TIMEOUT_SECONDS"),
            "OPENAI_TIMEOUT_SECONDS",
            "60",
        )?;
        let max_concurrent: NonZeroU32 = parse_or(
            var("MRM_AI_MAX_CONCURRENT_PER_USER"),
            "MRM_AI_MAX_CONCURRENT_PER_USER",
            "2",
        )?;
        let ai = AiConfig {
            api_key: var("OPENAI_API_KEY").map(|k| Secret::new(k.trim())),
            base_url,
            model: var("OPENAI_MODEL").unwrap_or_else(|| "gpt-4o-mini".to_owned()),
            timeout: Duration::from_secs(timeout.get().into()),
            retries: parse_or(var("OPENAI_RETRIES"), "OPENAI_RETRIES", "3")?,
            max_concurrent_per_user: max_concurrent.get() as usize,
        };

        let redis_url = var("REDIS_URL").map(|url| url.trim().to_owned());
        if let Some(url) = &redis_url {
            if !(url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("redis+unix://"))
            {
                return Err(ConfigError::new(
                    "REDIS_URL",
                    "expected redis://host[:port][/db]",
                ));
            }
        }
        let redis_prefix = var("MRM_REDIS_PREFIX").unwrap_or_else(|| "mrm".to_owned());
        if !redis_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        {
            return Err(ConfigError::new(
                "MRM_REDIS_PREFIX",
                "use letters, digits and - _ . : only",
            ));
        }
        let presence_ttl: NonZeroU32 = parse_or(
            var("MRM_PRESENCE_TTL_SECONDS"),
            "MRM_PRESENCE_TTL_SECONDS",
            "15",
        )?;

        let max_sockets = match var("MRM_MAX_SOCKETS") {
            None => None,
            Some(raw) => Some(parse_or(Some(raw), "MRM_MAX_SOCKETS", "0")?),
        };

        Ok(Self {
            max_sockets,
            redis_url: redis_url.map(Secret::new),
            redis_prefix,
            presence_ttl: Duration::from_secs(presence_ttl.get().into()),
            ai,
            bind,
            database_url,
            db_max_connections,
            allowed_origins,
            cors_origins,
            secure_cookies,
            log_format,
            login_attempts_per_minute,
            messages_per_second,
            ws_queue_capacity,
            ws_ping_interval: Duration::from_secs(ping_seconds.get().into()),
        })
    }
}

fn parse_or<T: FromStr>(
    value: Option<String>,
    var: &'static str,
    default: &str,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    let raw = value.unwrap_or_else(|| default.to_owned());
    raw.trim()
        .parse()
        .map_err(|e| ConfigError::new(var, format!("invalid value {raw:?}: {e}")))
}

fn parse_bool(
    value: Option<String>,
    var: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    match value.as_deref().map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
        Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(false),
        Some(v) => Err(ConfigError::new(
            var,
            format!("expected true or false, got {v:?}"),
        )),
    }
}

/// A comma-separated list of `scheme://host[:port]` origins, normalised to lower case.
fn origin_list(value: Option<String>, var: &'static str) -> Result<Vec<String>, ConfigError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| {
            let uri: http::Uri = o
                .parse()
                .map_err(|_| ConfigError::new(var, format!("bad origin {o:?}")))?;
            let ok = matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.authority().is_some()
                && uri
                    .path_and_query()
                    .is_none_or(|p| p.as_str() == "/" || p.as_str().is_empty());
            if !ok {
                return Err(ConfigError::new(
                    var,
                    format!("bad origin {o:?}: expected scheme://host[:port]"),
                ));
            }
            Ok(o.trim_end_matches('/').to_ascii_lowercase())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

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
    fn the_api_key_never_prints() {
        let c = config(&[("OPENAI_API_KEY", "sk-very-secret")]).unwrap();
        assert_eq!(c.ai.api_key.as_ref().unwrap().expose(), "sk-very-secret");
        assert!(!format!("{c:?}").contains("sk-very-secret"));
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
}
