//! The server under test. Load is only ever sent to this machine: the target host must resolve
//! to loopback addresses only, and every connection goes to an address resolved and checked here
//! (HTTP clients get it pinned, with proxies and redirects off), so nothing can send it elsewhere.

use std::net::{IpAddr, SocketAddr};

use anyhow::{bail, Context, Result};
use reqwest::Url;

#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port/` as given, with the path dropped.
    pub base: Url,
    /// `host:port` as written in the URL, for the WebSocket request line.
    pub authority: String,
    /// Where connections go: the first loopback address the host resolved to.
    pub addr: SocketAddr,
}

impl Target {
    pub async fn resolve(url: &str) -> Result<Target> {
        let mut base = Url::parse(url).with_context(|| format!("--target {url:?} is not a URL"))?;
        if base.scheme() != "http" {
            bail!("--target must be an http:// URL (TLS is not supported), got {url:?}");
        }
        let host = base
            .host_str()
            .with_context(|| format!("--target {url:?} has no host"))?
            .to_owned();
        let port = base.port_or_known_default().unwrap_or(80);
        // Brackets are part of an IPv6 host in a URL, not of the address.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .with_context(|| format!("cannot resolve {host}"))?
            .collect();
        if addrs.is_empty() {
            bail!("{host} resolved to no address");
        }
        if let Some(bad) = addrs.iter().find(|a| !is_loopback(a.ip())) {
            bail!(
                "refusing to load {host} ({}): targets must resolve to loopback only \
                 (127.0.0.0/8 or ::1)",
                bad.ip()
            );
        }
        base.set_path("/");
        base.set_query(None);
        base.set_fragment(None);
        let authority = match base.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        Ok(Target {
            base,
            authority,
            addr: addrs[0],
        })
    }

    pub fn url(&self, path_and_query: &str) -> Url {
        self.base
            .join(path_and_query.trim_start_matches('/'))
            .expect("a path joins onto a base URL")
    }

    /// An HTTP client builder that can only reach this target.
    pub fn http_builder(&self) -> reqwest::ClientBuilder {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(30));
        if let Some(host) = self.base.host_str() {
            builder = builder.resolve(host, self.addr);
        }
        builder
    }
}

pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Source addresses must be loopback too, and of the target's family.
pub fn check_sources(target: &Target, sources: &[IpAddr]) -> Result<()> {
    for ip in sources {
        if !is_loopback(*ip) {
            bail!("--source-ips: {ip} is not a loopback address");
        }
        if ip.is_ipv4() != target.addr.is_ipv4() {
            bail!(
                "--source-ips: {ip} is not of the target's address family ({})",
                target.addr
            );
        }
    }
    Ok(())
}
