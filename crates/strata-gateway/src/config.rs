//! TOML → typed config. Every error names the file, line and column, what was expected, and a
//! "did you mean" when a name is close to a known one.
//!
//! The document is parsed once into a span-preserving tree; each section is then deserialized from
//! its own subtree, so serde's errors (unknown key, wrong type, missing field) carry the exact span of
//! the key or value at fault. Middleware tables are kept as subtrees: parsing checks each against its
//! kind's config struct (through the registry), and building deserializes it again for the kind's
//! constructor.
//!
//! Loading goes on after an error, to report every one in a single run: a key whose value is
//! rejected is reported and left out of its section, and the rest of the section is still read
//! (see [`from_table`]). The constructors' own checks run when the gateway is built, once parsing
//! found nothing wrong.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use strata::http::client_ip::{ForwardedHeader, TrustedProxies};
use strata::http::headers::is_tchar;
use strata::http::path::{EscapedSlashes, PathPolicy};

use crate::hosts::HostPattern;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

/// The top-level keys a config may have.
const TOP_LEVEL_KEYS: &[&str] = &["server", "middleware", "route"];

/// One error in a config file, located by line and column (both 1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as given on the command line (or `<embedded default>`).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong and what was expected.
    pub message: String,
    /// The source line the error points at, for display.
    pub source_line: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}:{}:{}: error: {}", self.file, self.line, self.column, self.message)?;
        let gutter = self.line.to_string().len();
        writeln!(f, "{:gutter$} |", "")?;
        writeln!(f, "{} | {}", self.line, self.source_line)?;
        write!(f, "{:gutter$} | {:>col$}", "", "^", col = self.column)
    }
}

/// Every error found while loading a config (loading goes on after the first, to report them all).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The text of a config file and its name, turning byte spans into located errors.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    /// The file name used in messages.
    pub file: &'a str,
    /// The whole text.
    pub text: &'a str,
}

impl Source<'_> {
    /// An error at the start of `span`.
    pub fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let offset = span.start.min(self.text.len());
        let before = &self.text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[offset..].find('\n').map_or(self.text.len(), |i| offset + i);
        // Errors are printed and logged: a URL's password written in the config must not be.
        ConfigError {
            file: self.file.to_string(),
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
            message: redact_userinfo(&message.into()).into_owned(),
            source_line: redact_userinfo(self.text[line_start..line_end].trim_end_matches('\r')).into_owned(),
        }
    }

    /// A toml parse or deserialize error, located by its span (or at `fallback` without one).
    pub fn toml_error(&self, err: &toml::de::Error, fallback: Range<usize>) -> ConfigError {
        self.error(err.span().unwrap_or(fallback), improve_serde_message(err.message()))
    }
}

/// A reference to a named middleware in a `stack` array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameRef {
    /// The middleware name.
    pub name: String,
    /// Where the reference is written.
    pub span: Range<usize>,
}

/// The most worker threads `[server] workers` accepts.
pub const MAX_WORKERS: usize = 1024;

/// The `[server]` section.
#[derive(Clone, Debug)]
pub struct Server {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Layers wrapping every route (and the 404 for unmatched paths), outermost first.
    pub stack: Vec<NameRef>,
    /// How long a client may take to send a request's head: from the accept for a connection's
    /// first request, from the head's first byte for the requests after it.
    pub header_read_timeout: Duration,
    /// How long a connection with no request in progress stays open between requests (HTTP/1.1
    /// keep-alive, and HTTP/2 connections with no open stream).
    pub keepalive_timeout: Duration,
    /// How long a request body may go without a byte arriving before the request fails.
    pub body_read_timeout: Duration,
    /// How long writing to a client may stay blocked (the client not reading) before the
    /// connection is closed.
    pub send_timeout: Duration,
    /// The most client connections open at once; `None`: derived from the file-descriptor limit
    /// (see [`crate::limits::connection_cap`]).
    pub max_connections: Option<usize>,
    /// Largest accepted request head (HTTP/1.1 buffer, HTTP/2 header list), in bytes.
    pub max_header_bytes: usize,
    /// How long in-flight requests may run after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Whether HTTP/2 (prior-knowledge h2c) is accepted beside HTTP/1.1.
    pub http2: bool,
    /// Threads serving connections; `None`: one per CPU the process may use.
    pub workers: Option<usize>,
    /// Proxies whose forwarding header names the client (`trusted_proxies`, `client_ip_header`).
    pub trusted_proxies: Arc<TrustedProxies>,
    /// `behind_proxy`, when set; otherwise inferred from `listen` (see [`Server::deployment`]).
    pub behind_proxy: Option<bool>,
    /// How request paths are normalised before routing (`merge_slashes`, `escaped_slashes`).
    pub path_policy: PathPolicy,
    /// The name this gateway gives itself in `Via` (`via_pseudonym`, an RFC 9110 token); a request
    /// already carrying it has looped. Give chained strata instances different names.
    pub via_pseudonym: String,
    /// `[server.tls]`: HTTPS served beside the plain listener.
    pub tls: Option<TlsSettings>,
}

/// The `[server.tls]` section: where HTTPS is served and with which certificates. The files are
/// read when the gateway is built (see [`crate::tls`]), relative to the config file's directory.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// Address of the TLS listener, served beside `[server] listen`.
    pub listen: SocketAddr,
    /// The certificates, in file order: the first is the default (no SNI, or no name matches).
    pub certificates: Vec<CertificateFiles>,
    /// Whether the plain listener answers `308` to `https://` for paths not in `redirect_exempt`.
    pub redirect_http: bool,
    /// Path prefixes the plain listener still serves when `redirect_http` is on.
    pub redirect_exempt: Vec<String>,
    /// `client_ca` and `client_auth`: client certificates verified against a CA bundle (mTLS).
    pub client_auth: Option<ClientAuth>,
}

/// One `{ cert = "…", key = "…" }` entry of `[server.tls] certificates`, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateFiles {
    /// The PEM certificate chain, leaf first, as written in the config.
    pub cert: String,
    /// Where the `cert` value is written.
    pub cert_span: Range<usize>,
    /// The PEM private key (PKCS#8, RSA or SEC1 EC), as written in the config.
    pub key: String,
    /// Where the `key` value is written.
    pub key_span: Range<usize>,
}

/// Client certificate verification (`client_ca`, `client_auth`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientAuth {
    /// The PEM bundle of CA certificates client certificates must chain to, as written.
    pub ca: String,
    /// Where the `client_ca` value is written.
    pub ca_span: Range<usize>,
    /// Whether a client without a certificate is refused (`"required"`) or served (`"optional"`).
    pub required: bool,
}

/// The `redirect_exempt` paths when the key is not set: ACME HTTP-01 challenges are answered over
/// plain HTTP.
pub const DEFAULT_REDIRECT_EXEMPT: &[&str] = &["/.well-known/"];

impl Server {
    /// Where this server runs, for the rules that depend on it: behind a proxy when
    /// `behind_proxy = true`, or when unset and `listen` is a loopback address (only local
    /// processes, in practice a reverse proxy, can connect); the proxy is trusted when it is
    /// explicitly declared behind one and `trusted_proxies` is not empty, or when the loopback
    /// address listened on is trusted.
    pub fn deployment(&self) -> strata::check::Deployment {
        let loopback = self.listen.ip().is_loopback();
        let behind_proxy = self.behind_proxy.unwrap_or(loopback);
        let proxy_trusted =
            if loopback { self.trusted_proxies.contains(self.listen.ip()) } else { !self.trusted_proxies.is_empty() };
        strata::check::Deployment { behind_proxy, proxy_trusted }
    }
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            stack: Vec::new(),
            header_read_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(30),
            max_connections: None,
            max_header_bytes: 64 * 1024,
            shutdown_grace: Duration::from_secs(10),
            http2: true,
            workers: None,
            trusted_proxies: Arc::new(TrustedProxies::none()),
            behind_proxy: None,
            path_policy: PathPolicy::new(),
            via_pseudonym: DEFAULT_VIA_PSEUDONYM.to_string(),
            tls: None,
        }
    }
}

/// The `Via` pseudonym when `[server] via_pseudonym` is not set.
pub const DEFAULT_VIA_PSEUDONYM: &str = "strata";

/// A `[middleware.NAME]` table, kept as a subtree for the registry.
#[derive(Clone, Debug)]
pub struct MiddlewareDecl<'a> {
    /// The name routes refer to.
    pub name: String,
    /// The kind (registry key).
    pub kind: String,
    /// Where `kind = ...` is written.
    pub kind_span: Range<usize>,
    /// The table without its `kind` key.
    pub table: Spanned<DeValue<'a>>,
}

/// What a route serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A built-in app, by name.
    App(String),
    /// One or more upstream HTTP servers (in the order written), sharing the route's traffic.
    Upstream(Vec<UpstreamTarget>),
}

/// One server of an upstream route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamTarget {
    /// `http://host:port[/base]`, checked when the config is parsed.
    pub url: http::Uri,
    /// Its share of the route's traffic relative to the other targets (1 to [`MAX_WEIGHT`]).
    pub weight: u32,
}

/// The largest `weight` of an upstream target.
pub const MAX_WEIGHT: u32 = 100;
/// The most targets one route may list.
pub const MAX_TARGETS: usize = 64;
/// The most `retries` a route may ask for.
pub const MAX_RETRIES: u32 = 5;
/// The largest `eject_after`.
pub const MAX_EJECT_AFTER: u32 = 1000;
/// The longest `eject_for`, and the longest `interval` and `timeout` of a health check.
pub const MAX_HEALTH_PERIOD: Duration = Duration::from_secs(3600);

/// How a route with several targets picks one for each request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Balance {
    /// In turn, each target as often as its weight says (`"round_robin"`, the default).
    RoundRobin,
    /// The less busy of two targets drawn at random, busy meaning requests in progress per unit
    /// of weight (`"least_requests"`).
    LeastRequests,
    /// The same key always to the same target while it is up (`"hash"`, with `hash_on`).
    Hash(HashOn),
}

/// What `balance = "hash"` hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashOn {
    /// The client's address (resolved through `[server] trusted_proxies`).
    ClientIp,
    /// The value of a request header (`"header:NAME"`); requests without it go round robin.
    Header(http::HeaderName),
}

/// A route's active health check: `GET path` to each target every `interval`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// The path (and query) asked for; a `2xx` or `3xx` answer within `timeout` passes.
    pub path: http::uri::PathAndQuery,
    /// How often each target is checked.
    pub interval: Duration,
    /// How long one check may take (connecting included).
    pub timeout: Duration,
    /// Passing checks in a row that bring a target marked down back.
    pub healthy_threshold: u32,
    /// Failing checks in a row that mark a target down.
    pub unhealthy_threshold: u32,
}

/// How an upstream route shares its traffic among its targets and copes with their failures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamOptions {
    /// How a target is picked.
    pub balance: Balance,
    /// Attempts on another target after a failed first one (0: none).
    pub retries: u32,
    /// Failures in a row (connect errors, failed exchanges, timeouts, `5xx` answers) that eject a
    /// target (0: never).
    pub eject_after: u32,
    /// How long the first ejection lasts; each ejection in a row doubles it, up to
    /// [`MAX_EJECTION`] (or `eject_for` itself when longer).
    pub eject_for: Duration,
    /// The active health check, when configured.
    pub health_check: Option<HealthCheck>,
}

/// The longest an ejection grows by doubling.
pub const MAX_EJECTION: Duration = Duration::from_secs(300);

impl Default for UpstreamOptions {
    fn default() -> Self {
        UpstreamOptions {
            balance: Balance::RoundRobin,
            retries: 1,
            eject_after: 5,
            eject_for: Duration::from_secs(10),
            health_check: None,
        }
    }
}

/// A `[[route]]`.
#[derive(Clone, Debug)]
pub struct Route {
    /// Path prefix (no trailing slash except for `/`); longest prefix wins.
    pub prefix: String,
    /// The hosts the route serves (empty: any host no other route names); see [`crate::hosts`].
    pub hosts: Vec<HostPattern>,
    /// The route's own layers, inside the server stack, outermost first.
    pub stack: Vec<NameRef>,
    /// What the route serves.
    pub target: Target,
    /// Where the target (`app` or `upstream`) is written.
    pub target_span: Range<usize>,
    /// How an upstream route forwards (defaults for app routes, which reject these keys).
    pub proxy: ProxyOptions,
    /// How an upstream route balances, retries and checks its targets (defaults for app routes).
    pub upstream: UpstreamOptions,
}

/// Which headers tell an upstream where a request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardedHeaders {
    /// `X-Forwarded-For` (the peer appended), `X-Forwarded-Proto`, `X-Forwarded-Host`.
    XForwarded,
    /// RFC 7239 `Forwarded: for=…;proto=…;host=…` (appended).
    Forwarded,
    /// Both sets.
    Both,
    /// Neither: the upstream sees only the gateway.
    None,
}

/// The per-route options of an upstream route (keys of its `[[route]]` table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyOptions {
    /// Whether the route's prefix is removed from the path sent upstream (`/api/x` → `/x`).
    pub strip_prefix: bool,
    /// Whether the client's `Host` is sent upstream (else the upstream's own authority).
    pub preserve_host: bool,
    /// Which forwarding headers are added.
    pub forwarded: ForwardedHeaders,
    /// How long the upstream may take to send its response head → 504.
    pub timeout: Duration,
    /// How long connecting to the upstream may take → 502.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection to the upstream is kept. Shorter than the upstream's own
    /// keep-alive timeout, so the gateway never reuses a connection the upstream is closing.
    pub idle_timeout: Duration,
    /// Whether the upstream speaks HTTP/2 (prior knowledge) instead of HTTP/1.1.
    pub http2: bool,
    /// Whether `Via` is added to requests sent upstream and to the upstream's responses, and a
    /// request already carrying this gateway's `Via` is refused as a loop (`508`).
    pub via: bool,
    /// The name used in `Via` (`[server] via_pseudonym`, the same for every route).
    pub via_pseudonym: String,
    /// How an `https://` upstream's certificate is verified (defaults for `http://` upstreams,
    /// which reject these keys).
    pub tls: UpstreamTlsOptions,
}

/// The TLS keys of an `https://` upstream route.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamTlsOptions {
    /// `tls_ca_file`: the PEM bundle of the only CAs trusted for this upstream (instead of the
    /// system's roots), as written (relative to the config file's directory), and where it is
    /// written (it is read when the gateway is built, and its errors point there).
    pub ca_file: Option<(PathBuf, Range<usize>)>,
    /// `tls_server_name`: the name sent as SNI and verified, instead of the URL's host.
    pub server_name: Option<String>,
    /// `insecure_skip_verify`: accept any certificate (warned about by `check` and at startup).
    pub insecure_skip_verify: bool,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            strip_prefix: false,
            preserve_host: true,
            forwarded: ForwardedHeaders::XForwarded,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            // gunicorn closes idle keep-alive connections after 2 s by default.
            idle_timeout: Duration::from_secs(1),
            http2: false,
            via: true,
            via_pseudonym: DEFAULT_VIA_PSEUDONYM.to_string(),
            tls: UpstreamTlsOptions::default(),
        }
    }
}

/// A whole config, checked for structure and references; middleware tables not yet built.
#[derive(Clone, Debug)]
pub struct Config<'a> {
    /// The file's name and text.
    pub source: Source<'a>,
    /// `[server]`.
    pub server: Server,
    /// `[middleware.*]`, in name order.
    pub middleware: Vec<MiddlewareDecl<'a>>,
    /// `[[route]]`, in file order.
    pub routes: Vec<Route>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    listen: Option<Spanned<String>>,
    #[serde(default)]
    stack: Vec<Spanned<String>>,
    header_read_timeout: Option<Spanned<String>>,
    keepalive_timeout: Option<Spanned<String>>,
    body_read_timeout: Option<Spanned<String>>,
    send_timeout: Option<Spanned<String>>,
    max_connections: Option<Spanned<u64>>,
    max_header_bytes: Option<Spanned<u64>>,
    shutdown_grace: Option<Spanned<String>>,
    http2: Option<bool>,
    workers: Option<Spanned<u64>>,
    #[serde(default)]
    trusted_proxies: Vec<Spanned<String>>,
    client_ip_header: Option<Spanned<String>>,
    behind_proxy: Option<bool>,
    via_pseudonym: Option<Spanned<String>>,
    merge_slashes: Option<bool>,
    escaped_slashes: Option<Spanned<String>>,
    tls: Option<TlsSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    listen: Spanned<String>,
    certificates: Spanned<Vec<CertificateSection>>,
    redirect_http: Option<bool>,
    redirect_exempt: Option<Vec<Spanned<String>>>,
    client_ca: Option<Spanned<String>>,
    client_auth: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateSection {
    cert: Spanned<String>,
    key: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSection {
    prefix: Spanned<String>,
    host: Option<Spanned<OneOrMany>>,
    #[serde(default)]
    stack: Vec<Spanned<String>>,
    app: Option<Spanned<String>>,
    upstream: Option<Spanned<UpstreamSpec>>,
    strip_prefix: Option<Spanned<bool>>,
    preserve_host: Option<Spanned<bool>>,
    forwarded: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    http2: Option<Spanned<bool>>,
    via: Option<Spanned<bool>>,
    balance: Option<Spanned<String>>,
    hash_on: Option<Spanned<String>>,
    retries: Option<Spanned<u64>>,
    eject_after: Option<Spanned<u64>>,
    eject_for: Option<Spanned<String>>,
    health_check: Option<Spanned<HealthCheckSection>>,
    tls_ca_file: Option<Spanned<String>>,
    tls_server_name: Option<Spanned<String>>,
    insecure_skip_verify: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthCheckSection {
    path: Spanned<String>,
    interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    healthy_threshold: Option<Spanned<u64>>,
    unhealthy_threshold: Option<Spanned<u64>>,
}

/// `upstream = "http://…"`, or a list of URLs and `{ url = "http://…", weight = N }` tables.
enum UpstreamSpec {
    One(String),
    Many(Vec<Spanned<UpstreamEntry>>),
}

impl UpstreamSpec {
    /// Whether the targets are `https://` URLs (the first one says: a list has one scheme).
    fn is_https(&self) -> bool {
        let first = match self {
            UpstreamSpec::One(url) => Some(url.as_str()),
            UpstreamSpec::Many(items) => items.first().map(|item| match item.get_ref() {
                UpstreamEntry::Url(url) => url.as_str(),
                UpstreamEntry::Weighted(entry) => entry.url.get_ref().as_str(),
            }),
        };
        first.is_some_and(|url| url.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://")))
    }
}

/// One item of an `upstream` list.
enum UpstreamEntry {
    Url(String),
    Weighted(WeightedEntry),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightedEntry {
    url: Spanned<String>,
    weight: Option<Spanned<i64>>,
}

// By hand rather than `#[serde(untagged)]`: an untagged enum buffers its input, and the items'
// spans (needed to point at the URL at fault) would be lost.
impl<'de> Deserialize<'de> for UpstreamSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UpstreamSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a URL, or a list of URLs and { url, weight } tables")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<UpstreamSpec, E> {
                Ok(UpstreamSpec::One(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<UpstreamSpec, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(UpstreamSpec::Many(items))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl<'de> Deserialize<'de> for UpstreamEntry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UpstreamEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a URL or a { url, weight } table")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<UpstreamEntry, E> {
                Ok(UpstreamEntry::Url(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<UpstreamEntry, A::Error> {
                WeightedEntry::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(UpstreamEntry::Weighted)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// The targets of `upstream`, or `None` after reporting what is wrong with them.
fn parse_targets(
    source: Source<'_>,
    spec: Spanned<UpstreamSpec>,
    errors: &mut Vec<ConfigError>,
) -> Option<Vec<UpstreamTarget>> {
    let span = spec.span();
    let items = match spec.into_inner() {
        UpstreamSpec::One(text) => {
            return match parse_upstream(&text) {
                Ok(url) => Some(vec![UpstreamTarget { url, weight: 1 }]),
                Err(msg) => {
                    errors.push(source.error(span, msg));
                    None
                }
            };
        }
        UpstreamSpec::Many(items) => items,
    };
    if items.is_empty() {
        errors.push(source.error(span, "`upstream = []`: expected at least one URL"));
        return None;
    }
    if items.len() > MAX_TARGETS {
        errors.push(
            source.error(span, format!("`upstream`: expected at most {MAX_TARGETS} targets, found {}", items.len())),
        );
        return None;
    }
    let before = errors.len();
    let mut targets: Vec<(UpstreamTarget, Range<usize>)> = Vec::new();
    for item in items {
        let item_span = item.span();
        let (text, url_span, weight) = match item.into_inner() {
            UpstreamEntry::Url(text) => (text, item_span, None),
            UpstreamEntry::Weighted(entry) => (entry.url.get_ref().clone(), entry.url.span(), entry.weight),
        };
        let weight = match weight {
            None => 1,
            Some(w) => match u32::try_from(*w.get_ref()) {
                Ok(n) if (1..=MAX_WEIGHT).contains(&n) => n,
                _ => {
                    errors.push(source.error(w.span(), format!("`weight`: expected a number from 1 to {MAX_WEIGHT}")));
                    1
                }
            },
        };
        let url = match parse_upstream(&text) {
            Ok(url) => url,
            Err(msg) => {
                errors.push(source.error(url_span, msg));
                continue;
            }
        };
        if let Some((first, first_span)) = targets.first().filter(|(t, _)| t.url.scheme() != url.scheme()) {
            let at = source.error(first_span.clone(), "");
            errors.push(source.error(
                url_span,
                format!(
                    "upstream `{}`: the targets of a route share one scheme, and the first (line {}, column {}) is {}://",
                    redact_userinfo(&text),
                    at.line,
                    at.column,
                    first.url.scheme_str().unwrap_or("http")
                ),
            ));
            continue;
        }
        if let Some((_, first)) = targets.iter().find(|(t, _)| t.url == url) {
            let first = source.error(first.clone(), "");
            errors.push(source.error(
                url_span,
                format!(
                    "upstream `{}` is already in this list at line {}, column {}: give it a larger `weight` instead",
                    redact_userinfo(&text),
                    first.line,
                    first.column
                ),
            ));
            continue;
        }
        targets.push((UpstreamTarget { url, weight }, url_span));
    }
    (errors.len() == before).then(|| targets.into_iter().map(|(t, _)| t).collect())
}

/// A string or an array of strings (`host = "a"`, `host = ["a", "b"]`); each string of an array
/// keeps its own span, a lone string has the value's.
enum OneOrMany {
    One(String),
    Many(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<String>>()? {
                    items.push(item);
                }
                Ok(OneOrMany::Many(items))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl OneOrMany {
    /// Each string with its span (`span` is the whole value's).
    fn items(self, span: Range<usize>) -> Vec<(String, Range<usize>)> {
        match self {
            OneOrMany::One(s) => vec![(s, span)],
            OneOrMany::Many(items) => items.into_iter().map(|s| (s.get_ref().clone(), s.span())).collect(),
        }
    }
}

/// A route's `host` patterns, each error located at its entry; a repeated entry is an error too.
fn parse_hosts(
    source: Source<'_>,
    value: Option<Spanned<OneOrMany>>,
    errors: &mut Vec<ConfigError>,
) -> Vec<HostPattern> {
    let Some(value) = value else { return Vec::new() };
    let span = value.span();
    let items = value.into_inner().items(span.clone());
    if items.is_empty() {
        errors.push(source.error(span, "`host = []`: expected at least one host, or no `host` key for any host"));
        return Vec::new();
    }
    let mut hosts: Vec<HostPattern> = Vec::new();
    for (text, span) in items {
        match HostPattern::parse(&text) {
            Ok(pattern) if hosts.contains(&pattern) => {
                errors.push(source.error(span, format!("host `{text}` is listed twice in this route")));
            }
            Ok(pattern) => hosts.push(pattern),
            Err(msg) => errors.push(source.error(span, msg)),
        }
    }
    hosts
}

impl RouteSection {
    /// The balancing, retry and health options, or errors located at the keys at fault. An app
    /// route may not set them.
    fn upstream_options(
        &self,
        source: Source<'_>,
        is_upstream: bool,
        errors: &mut Vec<ConfigError>,
    ) -> UpstreamOptions {
        let mut options = UpstreamOptions::default();
        let mut spans = Vec::new();
        let mut hash_on = HashOn::ClientIp;
        if let Some(v) = &self.hash_on {
            spans.push(("hash_on", v.span()));
            let text = v.get_ref().as_str();
            if text == "client_ip" {
                hash_on = HashOn::ClientIp;
            } else if let Some(name) = text.strip_prefix("header:") {
                match http::HeaderName::from_bytes(name.trim().as_bytes()) {
                    Ok(name) => hash_on = HashOn::Header(name),
                    Err(_) => errors
                        .push(source.error(v.span(), format!("`hash_on = \"{text}\"`: `{name}` is not a header name"))),
                }
            } else {
                errors.push(source.error(
                    v.span(),
                    format!(
                        "`hash_on = \"{text}\"`: expected \"client_ip\" or \"header:NAME\" (e.g. \"header:x-user\")"
                    ),
                ));
            }
        }
        if let Some(v) = &self.balance {
            spans.push(("balance", v.span()));
            const CHOICES: &[&str] = &["round_robin", "least_requests", "hash"];
            match v.get_ref().as_str() {
                "round_robin" => options.balance = Balance::RoundRobin,
                "least_requests" => options.balance = Balance::LeastRequests,
                "hash" => options.balance = Balance::Hash(hash_on.clone()),
                other => errors.push(source.error(
                    v.span(),
                    format!(
                        "`balance = \"{other}\"`: expected one of {}{}",
                        quoted_list(CHOICES),
                        did_you_mean(other, CHOICES)
                    ),
                )),
            }
        }
        if let Some(v) = &self.hash_on
            && self.balance.as_ref().is_none_or(|b| b.get_ref() != "hash")
        {
            errors.push(
                source.error(v.span(), "`hash_on` is an option of `balance = \"hash\"`; set that too, or remove it"),
            );
        }
        let mut count = |key: &'static str,
                         value: &Option<Spanned<u64>>,
                         range: std::ops::RangeInclusive<u32>,
                         target: &mut u32| {
            if let Some(v) = value {
                spans.push((key, v.span()));
                match u32::try_from(*v.get_ref()) {
                    Ok(n) if range.contains(&n) => *target = n,
                    _ => errors.push(source.error(
                        v.span(),
                        format!("`{key}`: expected a number from {} to {}", range.start(), range.end()),
                    )),
                }
            }
        };
        count("retries", &self.retries, 0..=MAX_RETRIES, &mut options.retries);
        count("eject_after", &self.eject_after, 0..=MAX_EJECT_AFTER, &mut options.eject_after);
        if let Some(v) = &self.eject_for {
            spans.push(("eject_for", v.span()));
            if let Some(d) = positive_duration(source, "eject_for", v, errors) {
                options.eject_for = d;
            }
        }
        if let Some(v) = &self.health_check {
            spans.push(("health_check", v.span()));
            options.health_check = health_check(source, v.get_ref(), errors);
        }
        if !is_upstream {
            for (key, span) in spans {
                errors.push(
                    source.error(
                        span,
                        format!("`{key}` is an option of upstream routes; this route serves a built-in app"),
                    ),
                );
            }
        }
        options
    }

    /// The upstream options, or errors located at the keys at fault. An app route may not set them,
    /// nor may an `http://` upstream set the TLS keys.
    fn proxy_options(&self, source: Source<'_>, is_upstream: bool, errors: &mut Vec<ConfigError>) -> ProxyOptions {
        let is_https = self.upstream.as_ref().is_some_and(|u| u.get_ref().is_https());
        let mut options = ProxyOptions::default();
        let mut spans = Vec::new();
        let mut tls_spans = Vec::new();
        if let Some(v) = &self.tls_ca_file {
            if v.get_ref().trim().is_empty() {
                errors
                    .push(source.error(v.span(), "`tls_ca_file`: expected the path of a PEM file of CA certificates"));
            }
            options.tls.ca_file = Some((PathBuf::from(v.get_ref()), v.span()));
            tls_spans.push(("tls_ca_file", v.span()));
        }
        if let Some(v) = &self.tls_server_name {
            if let Err(msg) = crate::tls_client::parse_server_name(v.get_ref()) {
                errors.push(source.error(v.span(), format!("`tls_server_name`: {msg}")));
            }
            options.tls.server_name = Some(v.get_ref().clone());
            tls_spans.push(("tls_server_name", v.span()));
        }
        if let Some(v) = &self.insecure_skip_verify {
            options.tls.insecure_skip_verify = *v.get_ref();
            tls_spans.push(("insecure_skip_verify", v.span()));
            if *v.get_ref() && self.tls_ca_file.is_some() && is_https {
                errors.push(source.error(
                    v.span(),
                    "`insecure_skip_verify = true` turns off the verification `tls_ca_file` is for: set one or the other",
                ));
            }
        }
        if is_upstream && !is_https {
            for (key, span) in tls_spans.drain(..) {
                errors.push(source.error(
                    span,
                    format!("`{key}` is an option of https:// upstreams; this route's upstream is not one"),
                ));
            }
        }
        spans.extend(tls_spans);
        if let Some(v) = &self.strip_prefix {
            options.strip_prefix = *v.get_ref();
            spans.push(("strip_prefix", v.span()));
        }
        if let Some(v) = &self.preserve_host {
            options.preserve_host = *v.get_ref();
            spans.push(("preserve_host", v.span()));
        }
        if let Some(v) = &self.http2 {
            options.http2 = *v.get_ref();
            spans.push(("http2", v.span()));
        }
        if let Some(v) = &self.via {
            options.via = *v.get_ref();
            spans.push(("via", v.span()));
        }
        if let Some(v) = &self.forwarded {
            spans.push(("forwarded", v.span()));
            options.forwarded = match v.get_ref().as_str() {
                "x-forwarded" => ForwardedHeaders::XForwarded,
                "forwarded" => ForwardedHeaders::Forwarded,
                "both" => ForwardedHeaders::Both,
                "none" => ForwardedHeaders::None,
                other => {
                    const CHOICES: &[&str] = &["x-forwarded", "forwarded", "both", "none"];
                    errors.push(source.error(
                        v.span(),
                        format!(
                            "`forwarded = \"{other}\"`: expected one of {}{}",
                            quoted_list(CHOICES),
                            did_you_mean(other, CHOICES)
                        ),
                    ));
                    options.forwarded
                }
            };
        }
        let durations = [
            ("timeout", &self.timeout, &mut options.timeout, MAX_UPSTREAM_TIMEOUT),
            ("connect_timeout", &self.connect_timeout, &mut options.connect_timeout, MAX_CONNECT_TIMEOUT),
            ("idle_timeout", &self.idle_timeout, &mut options.idle_timeout, MAX_IDLE_TIMEOUT),
        ];
        for (key, value, target, max) in durations {
            if let Some(v) = value {
                spans.push((key, v.span()));
                match parse_duration_at_most(v.get_ref(), max) {
                    Ok(d) if d.is_zero() && key != "idle_timeout" => {
                        errors.push(source.error(v.span(), format!("`{key}`: expected a duration above zero")));
                    }
                    Ok(d) => *target = d,
                    Err(msg) => errors.push(source.error(v.span(), format!("`{key}`: {msg}"))),
                }
            }
        }
        if !is_upstream {
            for (key, span) in spans {
                errors.push(
                    source.error(
                        span,
                        format!("`{key}` is an option of upstream routes; this route serves a built-in app"),
                    ),
                );
            }
        }
        options
    }
}

/// A duration above zero and at most [`MAX_HEALTH_PERIOD`], or `None` after reporting why not.
fn positive_duration(
    source: Source<'_>,
    key: &str,
    v: &Spanned<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<Duration> {
    match parse_duration_at_most(v.get_ref(), MAX_HEALTH_PERIOD) {
        Ok(d) if d.is_zero() => {
            errors.push(source.error(v.span(), format!("`{key}`: expected a duration above zero")));
            None
        }
        Ok(d) => Some(d),
        Err(msg) => {
            errors.push(source.error(v.span(), format!("`{key}`: {msg}")));
            None
        }
    }
}

/// A `[route.health_check]` table, checked.
fn health_check(source: Source<'_>, s: &HealthCheckSection, errors: &mut Vec<ConfigError>) -> Option<HealthCheck> {
    let before = errors.len();
    let path = s.path.get_ref();
    let parsed = http::uri::PathAndQuery::try_from(path.as_str()).ok().filter(|_| path.starts_with('/'));
    if parsed.is_none() {
        errors.push(source.error(
            s.path.span(),
            format!("`path = \"{path}\"`: expected a path starting with `/`, e.g. \"/healthz\""),
        ));
    }
    let interval =
        s.interval.as_ref().map_or(Some(Duration::from_secs(5)), |v| positive_duration(source, "interval", v, errors));
    let timeout = match &s.timeout {
        Some(v) => positive_duration(source, "timeout", v, errors),
        None => Some(Duration::from_secs(2).min(interval.unwrap_or(Duration::MAX))),
    };
    if let (Some(i), Some(t), Some(v)) = (interval, timeout, &s.timeout)
        && t > i
    {
        errors.push(source.error(v.span(), "`timeout`: expected a duration no longer than the `interval`"));
    }
    let threshold = |key: &str, value: &Option<Spanned<u64>>, default: u32, errors: &mut Vec<ConfigError>| match value {
        None => default,
        Some(v) => match u32::try_from(*v.get_ref()) {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => {
                errors.push(source.error(v.span(), format!("`{key}`: expected a number from 1 to 100")));
                default
            }
        },
    };
    let healthy_threshold = threshold("healthy_threshold", &s.healthy_threshold, 2, errors);
    let unhealthy_threshold = threshold("unhealthy_threshold", &s.unhealthy_threshold, 3, errors);
    if errors.len() != before {
        return None;
    }
    Some(HealthCheck { path: parsed?, interval: interval?, timeout: timeout?, healthy_threshold, unhealthy_threshold })
}

/// Deserializes a typed section from a subtree, keeping serde's error span.
pub fn from_value<T: DeserializeOwned>(source: Source<'_>, value: Spanned<DeValue<'_>>) -> Result<T, ConfigError> {
    let span = value.span();
    T::deserialize(ValueDeserializer::from(value)).map_err(|e| source.toml_error(&e, span))
}

/// Deserializes a table section into `T`, pushing every error to `errors` rather than only the
/// first: serde stops at the first key it rejects, so that key is reported, left out, and the rest
/// is deserialized again (at most once per key). `None` when the section cannot be read even
/// without its bad keys (a required key missing, or not a table); otherwise `T` without them, so
/// the caller's own checks of the other keys still run.
pub fn from_table<T: DeserializeOwned>(
    source: Source<'_>,
    value: Spanned<DeValue<'_>>,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    if !matches!(value.get_ref(), DeValue::Table(_)) {
        // Not a table: serde says what it is and what was expected.
        return from_value(source, value).map_err(|e| errors.push(e)).ok();
    }
    let span = value.span();
    let DeValue::Table(mut table) = value.into_inner() else { return None };
    let mut left_out: Vec<String> = Vec::new();
    loop {
        let attempt = Spanned::new(span.clone(), DeValue::Table(table.clone()));
        let error = match T::deserialize(ValueDeserializer::from(attempt)) {
            Ok(section) => return Some(section),
            Err(e) => e,
        };
        let at_fault = error.span().and_then(|at| {
            table
                .iter()
                .find(|(k, v)| within(&k.span(), &at) || within(&v.span(), &at))
                .map(|(k, _)| k.get_ref().to_string())
        });
        match at_fault {
            Some(key) => {
                errors.push(source.toml_error(&error, span.clone()));
                table.remove(key.as_str());
                left_out.push(key);
            }
            None => {
                // A required key missing because it was left out above is already reported.
                if !left_out.iter().any(|k| error.message().contains(&format!("`{k}`"))) {
                    errors.push(source.toml_error(&error, span.clone()));
                }
                return None;
            }
        }
    }
}

/// Whether the span `inner` starts inside `outer`.
fn within(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.start < outer.end.max(outer.start + 1)
}

impl<'a> Config<'a> {
    /// Parses and checks a config. `file` is the name used in messages.
    pub fn parse(file: &'a str, text: &'a str, app_names: &[&str]) -> Result<Config<'a>, ConfigErrors> {
        let source = Source { file, text };
        let root = DeTable::parse(text).map_err(|e| ConfigErrors(vec![source.toml_error(&e, 0..0)]))?;
        let mut errors = Vec::new();
        let mut config = Config { source, server: Server::default(), middleware: Vec::new(), routes: Vec::new() };
        let mut route_values = Vec::new();
        let mut server_section = None;

        for (key, value) in root.into_inner() {
            match key.get_ref().as_ref() {
                "server" => server_section = from_table::<ServerSection>(source, value, &mut errors),
                "middleware" => config.parse_middleware(value, &mut errors),
                "route" => match value.into_inner() {
                    DeValue::Array(items) => route_values = items.into_iter().collect(),
                    _ => errors.push(source.error(key.span(), "`route` must be an array of tables: write `[[route]]`")),
                },
                other => errors.push(source.error(
                    key.span(),
                    format!(
                        "unknown section `{other}`, expected one of `server`, `middleware`, `route`{}",
                        did_you_mean(other, TOP_LEVEL_KEYS)
                    ),
                )),
            }
        }

        // Each table's keys and types now, so they are reported beside the other sections' errors.
        for decl in &config.middleware {
            crate::registry::check_table(decl, source, &mut errors);
        }
        let defined: HashSet<&str> = config.middleware.iter().map(|m| m.name.as_str()).collect();
        let defined_names: Vec<&str> = config.middleware.iter().map(|m| m.name.as_str()).collect();
        let check_refs = |stack: Vec<Spanned<String>>, errors: &mut Vec<ConfigError>| -> Vec<NameRef> {
            stack
                .into_iter()
                .map(|s| {
                    let span = s.span();
                    let name = s.into_inner();
                    if !defined.contains(name.as_str()) {
                        errors.push(source.error(
                            span.clone(),
                            format!(
                                "no middleware named `{name}`: define it in a `[middleware.{name}]` table{}",
                                did_you_mean(&name, &defined_names)
                            ),
                        ));
                    }
                    NameRef { name, span }
                })
                .collect()
        };

        if let Some(s) = server_section {
            config.server = parse_server(source, s, &mut errors, |stack, errors| check_refs(stack, errors));
            check_duplicates(source, &[], &config.server.stack, &mut errors);
        }
        // Each (host, prefix) pair is one place; `None` is "any host no route names".
        let mut prefixes: BTreeMap<(Option<HostPattern>, String), Range<usize>> = BTreeMap::new();
        for value in route_values {
            let span = value.span();
            let Some(mut section) = from_table::<RouteSection>(source, value, &mut errors) else { continue };
            let stack = check_refs(std::mem::take(&mut section.stack), &mut errors);
            check_duplicates(source, &config.server.stack, &stack, &mut errors);
            let mut proxy = section.proxy_options(source, section.upstream.is_some(), &mut errors);
            let upstream_options = section.upstream_options(source, section.upstream.is_some(), &mut errors);
            proxy.via_pseudonym.clone_from(&config.server.via_pseudonym);
            let prefix_span = section.prefix.span();
            let prefix = match normalize_prefix(section.prefix.get_ref()) {
                Ok(p) => p,
                Err(msg) => {
                    errors.push(source.error(prefix_span, msg));
                    continue;
                }
            };
            let hosts = parse_hosts(source, section.host.take(), &mut errors);
            let places: Vec<Option<HostPattern>> =
                if hosts.is_empty() { vec![None] } else { hosts.iter().cloned().map(Some).collect() };
            for host in places {
                let key = (host, prefix.clone());
                if let Some(first) = prefixes.get(&key) {
                    let first = source.error(first.clone(), "");
                    let on = key.0.as_ref().map(|h| format!(" for host `{h}`")).unwrap_or_default();
                    errors.push(source.error(
                        prefix_span.clone(),
                        format!("a route with prefix `{prefix}`{on} is already defined at line {}", first.line),
                    ));
                    break;
                }
                prefixes.insert(key, prefix_span.clone());
            }
            let (target, target_span) = match (section.app, section.upstream) {
                (Some(app), None) => {
                    if !app_names.contains(&app.get_ref().as_str()) {
                        errors.push(source.error(
                            app.span(),
                            format!(
                                "unknown app `{}`, expected one of {}{}",
                                app.get_ref(),
                                quoted_list(app_names),
                                did_you_mean(app.get_ref(), app_names)
                            ),
                        ));
                    }
                    (Target::App(app.get_ref().clone()), app.span())
                }
                (None, Some(upstream)) => {
                    let span = upstream.span();
                    match parse_targets(source, upstream, &mut errors) {
                        Some(targets) => (Target::Upstream(targets), span),
                        None => continue,
                    }
                }
                (Some(app), Some(_)) => {
                    errors.push(source.error(app.span(), "a route has either `app` or `upstream`, not both"));
                    continue;
                }
                (None, None) => {
                    errors.push(source.error(
                        span,
                        "a route needs a target: `app = \"tasks\"` (a built-in app) or `upstream = \"http://127.0.0.1:8000\"`",
                    ));
                    continue;
                }
            };
            config.routes.push(Route { prefix, hosts, stack, target, target_span, proxy, upstream: upstream_options });
        }
        if config.routes.is_empty() && errors.is_empty() {
            errors.push(
                source
                    .error(0..0, "no routes: add at least one `[[route]]` with a `prefix` and an `app` or `upstream`"),
            );
        }
        // In file order, as a compiler lists them: sections are read in turn, not top to bottom.
        errors.sort_by_key(|e| (e.line, e.column));
        if errors.is_empty() { Ok(config) } else { Err(ConfigErrors(errors)) }
    }

    fn parse_middleware(&mut self, value: Spanned<DeValue<'a>>, errors: &mut Vec<ConfigError>) {
        let source = self.source;
        let span = value.span();
        let DeValue::Table(table) = value.into_inner() else {
            errors.push(
                source.error(span, "`middleware` must be a table of named middlewares: write `[middleware.NAME]`"),
            );
            return;
        };
        for (name, value) in table {
            let name_span = name.span();
            let name = name.into_inner().into_owned();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                errors.push(source.error(
                    name_span.clone(),
                    format!("middleware name `{name}`: expected letters, digits, `_` or `-`"),
                ));
            }
            let table_span = value.span();
            let DeValue::Table(mut table) = value.into_inner() else {
                errors.push(source.error(name_span, format!("`middleware.{name}` must be a table with a `kind` key")));
                continue;
            };
            let Some(kind) = table.remove("kind") else {
                errors.push(source.error(
                    name_span,
                    format!(
                        "`[middleware.{name}]` has no `kind`: say which middleware it is, e.g. `kind = \"access_log\"`"
                    ),
                ));
                continue;
            };
            let kind_span = kind.span();
            let Some(kind_name) = kind.get_ref().as_str().map(str::to_string) else {
                errors.push(
                    source.error(kind_span, format!("`kind` must be a string, found {}", kind.get_ref().type_str())),
                );
                continue;
            };
            self.middleware.push(MiddlewareDecl {
                name,
                kind: kind_name,
                kind_span,
                table: Spanned::new(table_span, DeValue::Table(table)),
            });
        }
    }
}

fn parse_server(
    source: Source<'_>,
    s: ServerSection,
    errors: &mut Vec<ConfigError>,
    check_refs: impl Fn(Vec<Spanned<String>>, &mut Vec<ConfigError>) -> Vec<NameRef>,
) -> Server {
    let mut server = Server { stack: check_refs(s.stack, errors), ..Server::default() };
    if let Some(listen) = s.listen {
        match listen.get_ref().parse::<SocketAddr>() {
            Ok(addr) => server.listen = addr,
            Err(_) => errors.push(source.error(
                listen.span(),
                format!(
                    "`listen = \"{}\"`: expected an IP address and port, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"",
                    listen.get_ref()
                ),
            )),
        }
    }
    let mut duration = |value: Option<Spanned<String>>, target: &mut Duration| {
        if let Some(v) = value {
            match parse_duration_at_most(v.get_ref(), MAX_SHUTDOWN_GRACE) {
                Ok(d) => *target = d,
                Err(msg) => errors.push(source.error(v.span(), format!("`shutdown_grace`: {msg}"))),
            }
        }
    };
    duration(s.shutdown_grace, &mut server.shutdown_grace);
    // A connection limit of zero would end every connection at once, and one of days would be no
    // limit: each is above zero and at most an hour (a day for idle keep-alive connections).
    let mut limit = |key: &str, value: Option<Spanned<String>>, max: Duration, target: &mut Duration| {
        if let Some(v) = value {
            match parse_duration_at_most(v.get_ref(), max) {
                Ok(d) if d.is_zero() => {
                    errors.push(source.error(v.span(), format!("`{key}`: expected a duration above zero")))
                }
                Ok(d) => *target = d,
                Err(msg) => errors.push(source.error(v.span(), format!("`{key}`: {msg}"))),
            }
        }
    };
    const HOUR: Duration = Duration::from_secs(3600);
    limit("header_read_timeout", s.header_read_timeout, HOUR, &mut server.header_read_timeout);
    limit("keepalive_timeout", s.keepalive_timeout, 24 * HOUR, &mut server.keepalive_timeout);
    limit("body_read_timeout", s.body_read_timeout, HOUR, &mut server.body_read_timeout);
    limit("send_timeout", s.send_timeout, HOUR, &mut server.send_timeout);
    if let Some(max) = s.max_connections {
        match usize::try_from(*max.get_ref()) {
            Ok(n) if (1..=crate::limits::MAX_CONNECTIONS).contains(&n) => server.max_connections = Some(n),
            _ => errors.push(source.error(
                max.span(),
                format!(
                    "`max_connections`: expected a number of connections from 1 to {}",
                    crate::limits::MAX_CONNECTIONS
                ),
            )),
        }
    }
    if let Some(max) = s.max_header_bytes {
        match usize::try_from(*max.get_ref()) {
            Ok(n) if (1024..=16 * 1024 * 1024).contains(&n) => server.max_header_bytes = n,
            _ => errors
                .push(source.error(max.span(), "`max_header_bytes`: expected a size between 1024 and 16777216 bytes")),
        }
    }
    if let Some(h2) = s.http2 {
        server.http2 = h2;
    }
    if let Some(workers) = s.workers {
        match usize::try_from(*workers.get_ref()) {
            Ok(n) if (1..=MAX_WORKERS).contains(&n) => server.workers = Some(n),
            _ => errors.push(
                source
                    .error(workers.span(), format!("`workers`: expected a number of threads from 1 to {MAX_WORKERS}")),
            ),
        }
    }
    let mut trusted = TrustedProxies::parse(s.trusted_proxies.iter().map(|c| c.get_ref().as_str()));
    if let Err(e) = &trusted {
        errors.push(source.error(s.trusted_proxies[e.index].span(), format!("`trusted_proxies`: {e}")));
    }
    if let Some(h) = s.client_ip_header {
        match ForwardedHeader::parse(h.get_ref()) {
            Some(header) => trusted = trusted.map(|t| t.reading(header)),
            None => errors.push(source.error(
                h.span(),
                format!("`client_ip_header = \"{}\"`: expected \"x-forwarded-for\" or \"forwarded\"", h.get_ref()),
            )),
        }
    }
    server.trusted_proxies = Arc::new(trusted.unwrap_or_default());
    server.behind_proxy = s.behind_proxy;
    if let Some(merge) = s.merge_slashes {
        server.path_policy = server.path_policy.merge_slashes(merge);
    }
    if let Some(v) = s.escaped_slashes {
        let action = match v.get_ref().as_str() {
            "reject" => Some(EscapedSlashes::Reject),
            "keep" => Some(EscapedSlashes::Keep),
            "redirect" => Some(EscapedSlashes::Redirect),
            other => {
                const CHOICES: &[&str] = &["reject", "keep", "redirect"];
                errors.push(source.error(
                    v.span(),
                    format!(
                        "`escaped_slashes = \"{other}\"`: expected one of {}{}",
                        quoted_list(CHOICES),
                        did_you_mean(other, CHOICES)
                    ),
                ));
                None
            }
        };
        if let Some(action) = action {
            server.path_policy = server.path_policy.escaped_slashes(action);
        }
    }
    if let Some(name) = s.via_pseudonym {
        // It is sent as the `received-by` of a `Via` element, which is a token or a host.
        if !name.get_ref().is_empty() && name.get_ref().len() <= 64 && name.get_ref().bytes().all(is_tchar) {
            server.via_pseudonym = name.into_inner();
        } else {
            errors.push(source.error(
                name.span(),
                format!(
                    "`via_pseudonym = \"{}\"`: expected a token of 1 to 64 letters, digits or !#$%&'*+-.^_`|~",
                    name.get_ref()
                ),
            ));
        }
    }
    server.tls = s.tls.and_then(|tls| parse_tls(source, tls, errors));
    server
}

/// `[server.tls]`: the listener address and the shape of each entry; the files themselves are
/// read when the gateway is built.
fn parse_tls(source: Source<'_>, s: TlsSection, errors: &mut Vec<ConfigError>) -> Option<TlsSettings> {
    let before = errors.len();
    let listen = s.listen.get_ref().parse::<SocketAddr>().map_err(|_| {
        errors.push(source.error(
            s.listen.span(),
            format!(
                "`listen = \"{}\"`: expected an IP address and port, e.g. \"0.0.0.0:8443\" or \"[::]:443\"",
                s.listen.get_ref()
            ),
        ))
    });
    let certificates_span = s.certificates.span();
    let certificates: Vec<CertificateFiles> = s
        .certificates
        .into_inner()
        .into_iter()
        .map(|c| CertificateFiles {
            cert_span: c.cert.span(),
            cert: c.cert.into_inner(),
            key_span: c.key.span(),
            key: c.key.into_inner(),
        })
        .collect();
    if certificates.is_empty() {
        errors.push(source.error(
            certificates_span,
            "`certificates`: expected at least one `{ cert = \"site.pem\", key = \"site.key\" }`",
        ));
    }
    for (name, span) in certificates.iter().flat_map(|c| [(&c.cert, &c.cert_span), (&c.key, &c.key_span)]) {
        if name.is_empty() {
            errors.push(source.error(span.clone(), "expected a file name"));
        }
    }
    let redirect_exempt = match s.redirect_exempt {
        Some(paths) => paths
            .into_iter()
            .filter_map(|p| {
                if p.get_ref().starts_with('/') {
                    Some(p.into_inner())
                } else {
                    errors.push(source.error(
                        p.span(),
                        format!("`redirect_exempt`: `{}`: expected a path prefix starting with `/`", p.get_ref()),
                    ));
                    None
                }
            })
            .collect(),
        None => DEFAULT_REDIRECT_EXEMPT.iter().map(|p| (*p).to_string()).collect(),
    };
    let required = match &s.client_auth {
        None => true,
        Some(v) => match v.get_ref().as_str() {
            "required" => true,
            "optional" => false,
            other => {
                const CHOICES: &[&str] = &["required", "optional"];
                errors.push(source.error(
                    v.span(),
                    format!(
                        "`client_auth = \"{other}\"`: expected one of {}{}",
                        quoted_list(CHOICES),
                        did_you_mean(other, CHOICES)
                    ),
                ));
                true
            }
        },
    };
    let client_auth = match (s.client_ca, s.client_auth) {
        (Some(ca), _) => Some(ClientAuth { ca_span: ca.span(), ca: ca.into_inner(), required }),
        (None, Some(auth)) => {
            errors.push(source.error(
                auth.span(),
                "`client_auth` needs `client_ca`: the CA bundle client certificates are verified against",
            ));
            None
        }
        (None, None) => None,
    };
    let listen = listen.ok()?;
    (errors.len() == before).then(|| TlsSettings {
        listen,
        certificates,
        redirect_http: s.redirect_http.unwrap_or(false),
        redirect_exempt,
        client_auth,
    })
}

/// Parses durations like `"10s"`, `"500ms"`, `"2m"`, `"1h"`: the library's parser, so `[server]`,
/// route and middleware settings all read durations the same way.
pub use strata::middleware::parse_duration;
use strata::middleware::parse_duration_at_most;

/// The longest `shutdown_grace`: a drain longer than an hour is a stuck shutdown, not a grace period.
pub const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(3600);
/// The longest upstream `timeout`, the same bound as the `timeout` middleware's.
pub const MAX_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// The longest `connect_timeout`: the kernel gives up on an unanswered connect after about two
/// minutes (Linux, six SYN retries), so a longer wait never happens.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// The longest `idle_timeout`: upstreams close idle connections far sooner (nginx: 75 s).
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Reports each middleware named a second time in one route's onion — the server stack (`outer`,
/// empty when `stack` is the server stack itself), then the route's own — at the second reference.
/// A layer listed twice runs twice per request: a rate limit would count every request twice.
fn check_duplicates(source: Source<'_>, outer: &[NameRef], stack: &[NameRef], errors: &mut Vec<ConfigError>) {
    let outer_place = if outer.is_empty() { "" } else { " (the server stack wraps every route)" };
    for (i, reference) in stack.iter().enumerate() {
        let first = match outer.iter().find(|r| r.name == reference.name) {
            Some(r) => Some((r, "`[server] stack`", outer_place)),
            None => stack[..i].iter().find(|r| r.name == reference.name).map(|r| (r, "this `stack`", "")),
        };
        if let Some((first, place, why)) = first {
            let at = source.error(first.span.clone(), "");
            errors.push(source.error(
                reference.span.clone(),
                format!(
                    "middleware `{}` is already in this onion: {place} at line {}, column {}{why}; a layer runs \
                     once per request, so list it once",
                    reference.name, at.line, at.column
                ),
            ));
        }
    }
}

/// `text` with the credentials of every URL in it masked: `http://user:pw@host` →
/// `http://user:***@host`, `redis://:pw@host` → `redis://:***@host`, `http://token@host` →
/// `http://***@host`. Config errors echo values and source lines, and a secret must not be among
/// them. Everything up to the URL's last `@` counts as credentials (a password may hold `/`), so
/// a rare `@` in a path is masked too: better too much than a password.
pub fn redact_userinfo(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The URL ends where a quote, a backtick or a space does (config text and messages).
        let end =
            tail.find(|c: char| matches!(c, '"' | '\'' | '`' | '<' | '>') || c.is_whitespace()).unwrap_or(tail.len());
        let url = &tail[..end];
        match url.rfind('@') {
            Some(at) => {
                match url[..at].split_once(':') {
                    Some((user, _)) if !user.contains('/') => {
                        out.push_str(user);
                        out.push_str(":***");
                    }
                    _ => out.push_str("***"),
                }
                out.push_str(&url[at..]);
            }
            None => out.push_str(url),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

fn normalize_prefix(prefix: &str) -> Result<String, String> {
    if !prefix.starts_with('/') {
        return Err(format!("prefix `{prefix}`: expected a path starting with `/`, e.g. \"/api\""));
    }
    if prefix.contains(['?', '#', '*', ' ']) || prefix.contains("//") {
        return Err(format!("prefix `{prefix}`: expected a plain path (no `?`, `#`, `*`, spaces or empty segments)"));
    }
    let trimmed = prefix.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/".to_string() } else { trimmed.to_string() })
}

/// An upstream URL: `http[s]://host[:port][/base]` (port 80 or 443 by default) and nothing more.
/// Credentials have no place in it: they would not be sent, and the URL is shown by `explain`, at
/// start-up and in logs. A query or a fragment cannot be joined to the forwarded paths.
fn parse_upstream(text: &str) -> Result<http::Uri, String> {
    let shown = redact_userinfo(text);
    let expected =
        || format!("upstream `{shown}`: expected an http(s) URL with a host and port, e.g. \"http://127.0.0.1:8000\"");
    if text.contains('#') {
        return Err(format!("upstream `{shown}`: expected no `#fragment` (it is never sent to a server)"));
    }
    // The scheme first, from the text: `unix:///path` is not even a URI to `http::Uri`.
    match text.split_once("://").map(|(scheme, _)| scheme.to_ascii_lowercase()).as_deref() {
        Some("http" | "https") => {}
        // Only a real scheme is echoed apart from the (masked) URL: it holds no credentials.
        Some(other) if other.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) => {
            return Err(format!(
                "upstream `{shown}`: scheme `{other}`: expected an http or https URL, e.g. \"http://127.0.0.1:8000\""
            ));
        }
        _ => return Err(expected()),
    }
    let uri: http::Uri = text.parse().map_err(|_| expected())?;
    if uri.scheme() != Some(&http::uri::Scheme::HTTP) && uri.scheme() != Some(&http::uri::Scheme::HTTPS) {
        return Err(expected());
    }
    let Some(authority) = uri.authority().filter(|a| !a.host().is_empty()) else { return Err(expected()) };
    if authority.as_str().contains('@') {
        return Err(format!(
            "upstream `{shown}`: expected no user or password in the URL (they are not sent upstream, and \
             the URL is shown in logs)"
        ));
    }
    // `Uri` takes any digits after the colon and then reports no port at all (so 99999 would
    // silently become port 80): the port is checked here. The colons of `[::1]` are not a port's.
    let port = authority.as_str().rsplit_once(':').map(|(_, p)| p).filter(|p| !p.contains(']'));
    if let Some(port) = port.filter(|p| !matches!(p.parse::<u16>(), Ok(1..))) {
        return Err(format!("upstream `{shown}`: port `{port}`: expected a port from 1 to 65535"));
    }
    if uri.query().is_some() {
        return Err(format!("upstream `{shown}`: expected no query string"));
    }
    Ok(uri)
}

/// `; did you mean `x`?` when `name` is close to one of `candidates`, else an empty string.
///
/// Close means a few edits away (a transposition counts as one, so `lgo` finds `log`), or a shared
/// beginning (`acess_log` finds `access_log`).
pub fn did_you_mean(name: &str, candidates: &[&str]) -> String {
    let allowed = (name.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(name, c), strsim::jaro_winkler(name, c), *c))
        .filter(|(edits, similarity, _)| *edits <= allowed || *similarity >= 0.85)
        .min_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)))
        .map(|(_, _, c)| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

/// `` `a`, `b`, `c` `` for messages.
pub fn quoted_list(items: &[&str]) -> String {
    items.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ")
}

/// Adds a "did you mean" to serde's "unknown field `x`, expected one of `a`, `b`" messages.
fn improve_serde_message(message: &str) -> String {
    let message = message.trim_end();
    let Some(rest) = message.strip_prefix("unknown field `").or_else(|| message.strip_prefix("unknown variant `"))
    else {
        return message.to_string();
    };
    let Some((name, expected)) = rest.split_once('`') else { return message.to_string() };
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    format!("{message}{}", did_you_mean(name, &candidates))
}

#[cfg(test)]
mod tests {
    use super::*;

    const APPS: &[&str] = &["tasks", "echo"];

    fn parse(text: &str) -> Result<Config<'_>, ConfigErrors> {
        Config::parse("test.toml", text, APPS)
    }

    fn first_error(text: &str) -> ConfigError {
        parse(text).expect_err("config should be rejected").0.remove(0)
    }

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:9000"
stack = ["timing", "log"]
shutdown_grace = "3s"

[middleware.log]
kind = "access_log"
format = "json"

[middleware.timing]
kind = "timing"

[[route]]
prefix = "/api/"
stack = []
app = "tasks"

[[route]]
prefix = "/"
upstream = "http://127.0.0.1:8000"
"#;

    #[test]
    fn a_good_config_parses_into_its_parts() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(3));
        assert_eq!(c.server.stack.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["timing", "log"]);
        let kinds: Vec<_> = c.middleware.iter().map(|m| (m.name.as_str(), m.kind.as_str())).collect();
        assert_eq!(kinds, [("log", "access_log"), ("timing", "timing")]);
        assert!(c.middleware[0].table.get_ref().as_table().unwrap().get("kind").is_none());
        assert_eq!(c.routes[0].prefix, "/api");
        assert_eq!(c.routes[0].target, Target::App("tasks".into()));
        let one = UpstreamTarget { url: "http://127.0.0.1:8000".parse().unwrap(), weight: 1 };
        assert_eq!(c.routes[1].target, Target::Upstream(vec![one]));
    }

    #[test]
    fn unknown_keys_point_at_the_key_with_a_suggestion() {
        let e = first_error("[server]\nlisen = \"127.0.0.1:1\"\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n");
        assert_eq!((e.line, e.column), (2, 1), "{e}");
        assert!(e.message.contains("unknown field `lisen`") && e.message.contains("did you mean `listen`?"), "{e}");
        let e = first_error("[servr]\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n");
        assert_eq!((e.line, e.column), (1, 2), "{e}");
        assert!(e.message.contains("did you mean `server`?"), "{e}");
    }

    #[test]
    fn undefined_middleware_names_are_errors_with_suggestions() {
        let e = first_error(
            "[server]\nstack = [\"lgo\"]\n[middleware.log]\nkind = \"access_log\"\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n",
        );
        assert_eq!((e.line, e.column), (2, 10), "{e}");
        assert!(e.message.contains("no middleware named `lgo`") && e.message.contains("did you mean `log`?"), "{e}");
    }

    #[test]
    fn routes_need_exactly_one_target() {
        let e = first_error("[[route]]\nprefix = \"/\"\napp = \"echo\"\nupstream = \"http://127.0.0.1:1\"\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("not both"), "{e}");
        let e = first_error("[[route]]\nprefix = \"/\"\n");
        assert!(e.message.contains("needs a target"), "{e}");
        let e = first_error("[[route]]\nprefix = \"/\"\napp = \"task\"\n");
        assert!(e.message.contains("unknown app `task`") && e.message.contains("did you mean `tasks`?"), "{e}");
    }

    #[test]
    fn bad_values_are_located_and_explained() {
        let e = first_error("[server]\nlisten = \"localhost\"\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n");
        assert_eq!((e.line, e.column), (2, 10), "{e}");
        assert!(e.message.contains("expected an IP address and port"), "{e}");
        let e = first_error("[server]\nshutdown_grace = \"soon\"\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n");
        assert!(e.message.contains("expected a duration"), "{e}");
        let e = first_error("[[route]]\nprefix = \"api\"\napp = \"echo\"\n");
        assert!(e.message.contains("starting with `/`"), "{e}");
        let e = first_error("[[route]]\nprefix = \"/\"\nupstream = \"ftp://x\"\n");
        assert!(e.message.contains("expected an http or https URL"), "{e}");
        let e = first_error("[server]\nhttp2 = \"yes\"\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n");
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn workers_is_a_thread_count_from_one_to_the_maximum() {
        let with =
            |workers: &str| format!("[server]\nworkers = {workers}\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n");
        assert_eq!(parse(&with("1")).unwrap().server.workers, Some(1));
        assert_eq!(parse(&with("1024")).unwrap().server.workers, Some(MAX_WORKERS));
        assert_eq!(parse(GOOD).unwrap().server.workers, None, "unset: one per CPU");
        for bad in ["0", "1025"] {
            let e = first_error(&with(bad));
            assert_eq!((e.line, e.column), (2, 11), "{e}");
            assert!(e.message.contains("expected a number of threads from 1 to 1024"), "{e}");
        }
        let e = first_error(&with("\"two\""));
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn syntax_errors_and_missing_kind_are_located() {
        let e = first_error("[server\n");
        assert_eq!(e.line, 1, "{e}");
        let e = first_error("[middleware.log]\nformat = \"json\"\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n");
        assert!(e.message.contains("has no `kind`"), "{e}");
        assert_eq!(e.line, 1, "{e}");
    }

    #[test]
    fn upstream_routes_take_proxy_options_and_app_routes_refuse_them() {
        let c = parse(
            "[[route]]\nprefix = \"/api\"\nupstream = \"http://127.0.0.1:8000/base\"\nstrip_prefix = true\n\
             preserve_host = false\nforwarded = \"forwarded\"\ntimeout = \"2s\"\nidle_timeout = \"0s\"\nhttp2 = true\n",
        )
        .unwrap();
        let options = &c.routes[0].proxy;
        assert!(options.strip_prefix && !options.preserve_host && options.http2);
        assert_eq!(options.forwarded, ForwardedHeaders::Forwarded);
        assert_eq!(options.timeout, Duration::from_secs(2));
        assert_eq!(options.idle_timeout, Duration::ZERO, "zero turns pooling of idle connections off");
        assert_eq!(options.connect_timeout, ProxyOptions::default().connect_timeout);

        let e = first_error("[[route]]\nprefix = \"/\"\napp = \"echo\"\nstrip_prefix = true\n");
        assert_eq!((e.line, e.column), (4, 16), "{e}");
        assert!(e.message.contains("`strip_prefix` is an option of upstream routes"), "{e}");
        let e = first_error("[[route]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\ntimeout = \"0s\"\n");
        assert!(e.message.contains("`timeout`: expected a duration above zero"), "{e}");
        let e = first_error("[[route]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\nforwarded = \"both!\"\n");
        assert!(e.message.contains("expected one of `x-forwarded`, `forwarded`, `both`, `none`"), "{e}");
    }

    #[test]
    fn upstream_lists_take_weights_and_pool_options() {
        let c = parse(
            "[[route]]\nprefix = \"/\"\nupstream = [{ url = \"http://127.0.0.1:8001\", weight = 3 }, \"http://127.0.0.1:8002\"]\n\
             balance = \"hash\"\nhash_on = \"header:X-User\"\nretries = 2\neject_after = 0\neject_for = \"30s\"\n\
             [route.health_check]\npath = \"/healthz\"\ninterval = \"1s\"\nhealthy_threshold = 1\n",
        )
        .unwrap();
        let Target::Upstream(targets) = &c.routes[0].target else { panic!("an upstream route") };
        let listed: Vec<(String, u32)> = targets.iter().map(|t| (t.url.to_string(), t.weight)).collect();
        assert_eq!(listed, [("http://127.0.0.1:8001/".to_string(), 3), ("http://127.0.0.1:8002/".to_string(), 1)]);
        let options = &c.routes[0].upstream;
        assert_eq!(options.balance, Balance::Hash(HashOn::Header(http::HeaderName::from_static("x-user"))));
        assert_eq!((options.retries, options.eject_after, options.eject_for), (2, 0, Duration::from_secs(30)));
        let check = options.health_check.as_ref().unwrap();
        assert_eq!(check.path, "/healthz");
        assert_eq!(
            (check.interval, check.timeout),
            (Duration::from_secs(1), Duration::from_secs(1)),
            "timeout ≤ interval"
        );
        assert_eq!((check.healthy_threshold, check.unhealthy_threshold), (1, 3));
        // One string keeps working as before, with the defaults.
        let c = parse("[[route]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:8001\"\n").unwrap();
        assert_eq!(c.routes[0].upstream, UpstreamOptions::default());
    }

    #[test]
    fn bad_pool_options_are_located_and_reported_together() {
        let route = |keys: &str| {
            format!("[[route]]\nprefix = \"/\"\nupstream = [\"http://127.0.0.1:1\", \"http://127.0.0.1:2\"]\n{keys}\n")
        };
        let cases: &[(&str, (usize, usize), &str)] = &[
            (
                "balance = \"least_request\"",
                (4, 11),
                "expected one of `round_robin`, `least_requests`, `hash`; did you mean `least_requests`?",
            ),
            ("hash_on = \"client_ip\"", (4, 11), "`hash_on` is an option of `balance = \"hash\"`"),
            ("balance = \"hash\"\nhash_on = \"cookie:x\"", (5, 11), "expected \"client_ip\" or \"header:NAME\""),
            ("retries = 6", (4, 11), "`retries`: expected a number from 0 to 5"),
            ("eject_after = 1001", (4, 15), "`eject_after`: expected a number from 0 to 1000"),
            ("eject_for = \"0s\"", (4, 13), "`eject_for`: expected a duration above zero"),
            ("[route.health_check]\npath = \"healthz\"", (5, 8), "expected a path starting with `/`"),
            (
                "[route.health_check]\npath = \"/h\"\ninterval = \"1s\"\ntimeout = \"2s\"",
                (7, 11),
                "no longer than the `interval`",
            ),
            (
                "[route.health_check]\npath = \"/h\"\nunhealthy_threshold = 0",
                (6, 23),
                "expected a number from 1 to 100",
            ),
            ("[route.health_check]\npath = \"/h\"\nmethod = \"HEAD\"", (6, 1), "unknown field `method`"),
        ];
        for (keys, at, expected) in cases {
            let e = first_error(&route(keys));
            assert_eq!((e.line, e.column), *at, "{keys}: {e}");
            assert!(e.message.contains(expected), "{keys}: {e}");
        }
        let list = |items: &str| format!("[[route]]\nprefix = \"/\"\nupstream = [{items}]\n");
        let e = first_error(&list("\"http://127.0.0.1:1\", { url = \"http://127.0.0.1:2\", weight = 0 }"));
        assert_eq!((e.line, e.column), (3, 74), "{e}");
        assert!(e.message.contains("`weight`: expected a number from 1 to 100"), "{e}");
        let e = first_error(&list("\"http://127.0.0.1:1\", \"http://127.0.0.1:1/\""));
        assert_eq!((e.line, e.column), (3, 35), "{e}");
        assert!(e.message.contains("is already in this list at line 3, column 13"), "{e}");
        let e = first_error(&list("\"http://127.0.0.1:1\", \"ftp://127.0.0.1:2\""));
        assert_eq!((e.line, e.column), (3, 35), "{e}");
        assert!(e.message.contains("expected an http or https URL"), "{e}");
        let e = first_error(&list("\"http://127.0.0.1:1\", \"https://127.0.0.1:2\""));
        assert_eq!((e.line, e.column), (3, 35), "{e}");
        assert!(e.message.contains("share one scheme, and the first (line 3, column 13) is http://"), "{e}");
        let e = first_error(&list(""));
        assert!(e.message.contains("expected at least one URL"), "{e}");
        let errors = parse(&list("{ url = \"http://127.0.0.1:1\", wieght = 2 }")).unwrap_err();
        let typo =
            errors.0.iter().find(|e| e.message.contains("unknown field `wieght`")).expect("the typo is reported");
        assert_eq!((typo.line, typo.column), (3, 43), "{typo}");
        let errors = parse(&list("\"http://127.0.0.1:0\", \"http://127.0.0.1:99999\"")).unwrap_err();
        assert_eq!(errors.0.len(), 2, "every bad URL is reported: {errors}");
        let e = first_error("[[route]]\nprefix = \"/\"\napp = \"echo\"\nretries = 2\n");
        assert!(e.message.contains("`retries` is an option of upstream routes"), "{e}");
    }

    #[test]
    fn https_upstreams_take_tls_keys_and_other_routes_refuse_them() {
        let c = parse(
            "[[route]]\nprefix = \"/\"\nupstream = \"https://10.0.0.5/base\"\ntls_ca_file = \"certs/ca.pem\"\n\
             tls_server_name = \"api.internal\"\n",
        )
        .unwrap();
        let tls = &c.routes[0].proxy.tls;
        assert_eq!(tls.ca_file.as_ref().map(|(path, _)| path.as_path()), Some(std::path::Path::new("certs/ca.pem")));
        assert_eq!(tls.server_name.as_deref(), Some("api.internal"));
        assert!(!tls.insecure_skip_verify);
        let c = parse("[[route]]\nprefix = \"/\"\nupstream = \"https://[::1]:8443\"\ninsecure_skip_verify = true\n")
            .unwrap();
        assert!(c.routes[0].proxy.tls.insecure_skip_verify);

        let e = first_error("[[route]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\ntls_ca_file = \"ca.pem\"\n");
        assert_eq!((e.line, e.column), (4, 15), "{e}");
        assert!(e.message.contains("`tls_ca_file` is an option of https:// upstreams"), "{e}");
        let e = first_error("[[route]]\nprefix = \"/\"\napp = \"echo\"\ninsecure_skip_verify = false\n");
        assert!(e.message.contains("`insecure_skip_verify` is an option of upstream routes"), "{e}");
        let e = first_error("[[route]]\nprefix = \"/\"\nupstream = \"https://h\"\ntls_server_name = \"not a name\"\n");
        assert_eq!((e.line, e.column), (4, 19), "{e}");
        assert!(e.message.contains("`tls_server_name`: `not a name`: expected a DNS name"), "{e}");
        let e = first_error(
            "[[route]]\nprefix = \"/\"\nupstream = \"https://h\"\ntls_ca_file = \"ca.pem\"\ninsecure_skip_verify = true\n",
        );
        assert_eq!(e.line, 5, "{e}");
        assert!(e.message.contains("set one or the other"), "{e}");
        let e = first_error("[[route]]\nprefix = \"/\"\nupstream = \"https://h\"\ntls_ca_file = \" \"\n");
        assert!(e.message.contains("expected the path of a PEM file"), "{e}");
    }

    #[test]
    fn duplicate_prefixes_are_rejected() {
        let e =
            first_error("[[route]]\nprefix = \"/a\"\napp = \"echo\"\n[[route]]\nprefix = \"/a/\"\napp = \"tasks\"\n");
        assert_eq!(e.line, 5, "{e}");
        assert!(e.message.contains("already defined at line 2"), "{e}");
    }

    #[test]
    fn every_error_is_reported_not_just_the_first() {
        let errors = parse("[server]\nlisten = \"x\"\nstack = [\"nope\"]\n[[route]]\nprefix = \"/\"\napp = \"nope\"\n")
            .unwrap_err();
        assert_eq!(errors.0.len(), 3, "{errors}");
    }

    #[test]
    fn display_shows_file_line_column_and_a_caret() {
        let e = first_error("[server]\nlisen = 1\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n");
        let text = e.to_string();
        assert!(text.starts_with("test.toml:2:1: error: unknown field `lisen`"), "{text}");
        assert!(text.contains("2 | lisen = 1\n  | ^"), "{text}");
    }

    #[test]
    fn suggestions_find_typos_but_not_unrelated_names() {
        assert_eq!(did_you_mean("lgo", &["log", "cors"]), "; did you mean `log`?");
        assert_eq!(did_you_mean("acess_log", &["access_log", "request_id"]), "; did you mean `access_log`?");
        assert_eq!(did_you_mean("lisen", &["listen", "stack"]), "; did you mean `listen`?");
        assert_eq!(did_you_mean("zzz", &["log", "cors"]), "");
        assert_eq!(did_you_mean("x", &[]), "");
    }

    #[test]
    fn trusted_proxies_parse_and_a_bad_cidr_is_located() {
        let c = parse("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\nclient_ip_header = \"forwarded\"\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n").unwrap();
        assert!(c.server.trusted_proxies.contains("10.2.3.4".parse().unwrap()));
        assert_eq!(c.server.trusted_proxies.header(), ForwardedHeader::Forwarded);
        let e = first_error(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/40\"]\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n",
        );
        assert_eq!((e.line, e.column), (2, 34), "{e}");
        assert!(e.message.contains("`10.0.0.0/40` is not an IP address or CIDR block"), "{e}");
        let e = first_error("[server]\nclient_ip_header = \"x-real-ip\"\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n");
        assert!(e.message.contains("expected \"x-forwarded-for\" or \"forwarded\""), "{e}");
    }

    #[test]
    fn a_loopback_listener_is_behind_a_proxy_unless_told_otherwise() {
        let deployment = |server: &str| {
            let text = format!("[server]\n{server}\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n");
            let c = Config::parse("t.toml", &text, APPS).unwrap().server.deployment();
            (c.behind_proxy, c.proxy_trusted)
        };
        assert_eq!(deployment("listen = \"127.0.0.1:1\""), (true, false));
        assert_eq!(deployment("listen = \"127.0.0.1:1\"\ntrusted_proxies = [\"127.0.0.0/8\"]"), (true, true));
        assert_eq!(deployment("listen = \"127.0.0.1:1\"\ntrusted_proxies = [\"10.0.0.0/8\"]"), (true, false));
        assert_eq!(deployment("listen = \"127.0.0.1:1\"\nbehind_proxy = false"), (false, false));
        assert_eq!(deployment("listen = \"0.0.0.0:1\""), (false, false));
        assert_eq!(deployment("listen = \"0.0.0.0:1\"\nbehind_proxy = true"), (true, false));
        assert_eq!(
            deployment("listen = \"0.0.0.0:1\"\nbehind_proxy = true\ntrusted_proxies = [\"10.0.0.0/8\"]"),
            (true, true)
        );
    }

    #[test]
    fn the_path_policy_is_read_from_the_server_section() {
        let with = |keys: &str| format!("[server]\n{keys}\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n");
        assert_eq!(parse(GOOD).unwrap().server.path_policy, PathPolicy::new());
        let text = with("merge_slashes = false\nescaped_slashes = \"redirect\"");
        assert_eq!(
            parse(&text).unwrap().server.path_policy,
            PathPolicy::new().merge_slashes(false).escaped_slashes(EscapedSlashes::Redirect)
        );
        let text = with("escaped_slashes = \"keep\"");
        assert_eq!(parse(&text).unwrap().server.path_policy.escaped_slash_action(), EscapedSlashes::Keep);
        let e = first_error(&with("escaped_slashes = \"rejet\""));
        assert_eq!((e.line, e.column), (2, 19), "{e}");
        assert!(e.message.contains("expected one of `reject`, `keep`, `redirect`; did you mean `reject`?"), "{e}");
        let e = first_error(&with("merge_slashes = \"yes\""));
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn the_tls_section_is_read_and_its_mistakes_located() {
        let with = |keys: &str| format!("[server.tls]\n{keys}\n{ECHO}");
        let pair = "certificates = [{ cert = \"a.pem\", key = \"a.key\" }, { cert = \"b.pem\", key = \"b.key\" }]";
        let text = with(&format!("listen = \"0.0.0.0:8443\"\n{pair}"));
        let tls = parse(&text).unwrap().server.tls.unwrap();
        assert_eq!(tls.listen, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(tls.certificates.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(), ["a.key", "b.key"]);
        assert!(!tls.redirect_http);
        assert_eq!(tls.redirect_exempt, ["/.well-known/"]);
        assert_eq!(tls.client_auth, None);

        let text = with(&format!(
            "listen = \"0.0.0.0:8443\"\n{pair}\nredirect_http = true\nredirect_exempt = [\"/health\"]\nclient_ca = \"ca.pem\"\nclient_auth = \"optional\""
        ));
        let tls = parse(&text).unwrap().server.tls.unwrap();
        assert!(tls.redirect_http);
        assert_eq!(tls.redirect_exempt, ["/health"]);
        let auth = tls.client_auth.unwrap();
        assert_eq!((auth.ca.as_str(), auth.required), ("ca.pem", false));

        let e = first_error(&with(&format!("listen = \"8443\"\n{pair}")));
        assert_eq!((e.line, e.column), (2, 10), "{e}");
        let e = first_error(&with("listen = \"0.0.0.0:8443\"\ncertificates = []"));
        assert!(e.message.contains("expected at least one"), "{e}");
        let e = first_error(&with(&format!("listen = \"0.0.0.0:8443\"\n{pair}\nclient_auth = \"required\"")));
        assert!(e.message.contains("`client_auth` needs `client_ca`"), "{e}");
        let e = first_error(&with(&format!(
            "listen = \"0.0.0.0:8443\"\n{pair}\nclient_ca = \"ca.pem\"\nclient_auth = \"requird\""
        )));
        assert!(e.message.contains("did you mean `required`?"), "{e}");
        let e = first_error(&with(&format!("listen = \"0.0.0.0:8443\"\n{pair}\nredirect_exempt = [\"health\"]")));
        assert!(e.message.contains("expected a path prefix starting with `/`"), "{e}");
        let e = first_error(&with("listen = \"0.0.0.0:8443\"\ncertificates = [{ cert = \"a.pem\" }]"));
        assert!(e.message.contains("missing field `key`"), "{e}");
        let e = first_error(&with(&format!("listen = \"0.0.0.0:8443\"\n{pair}\nhsts = true")));
        assert!(e.message.contains("unknown field `hsts`"), "{e}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    const ECHO: &str = "[[route]]\nprefix = \"/\"\napp = \"echo\"\n";

    #[test]
    fn connection_limits_are_above_zero_and_bounded() {
        let server = |key: &str, value: &str| format!("[server]\n{key} = \"{value}\"\n{ECHO}");
        for (key, too_long, bound) in [
            ("header_read_timeout", "61m", "1h"),
            ("keepalive_timeout", "25h", "24h"),
            ("body_read_timeout", "61m", "1h"),
            ("send_timeout", "61m", "1h"),
        ] {
            let e = first_error(&server(key, too_long));
            assert_eq!((e.line, e.column), (2, key.len() + 4), "{e}");
            assert_eq!(e.message, format!("`{key}`: `{too_long}`: expected a duration of at most {bound}"), "{e}");
            let e = first_error(&server(key, "0s"));
            assert_eq!(e.message, format!("`{key}`: expected a duration above zero"), "{e}");
            assert!(parse(&server(key, bound)).is_ok(), "{key} = {bound} is allowed");
        }
        let text = format!("[server]\nkeepalive_timeout = \"5s\"\nmax_connections = 100\n{ECHO}");
        let c = parse(&text).unwrap();
        assert_eq!((c.server.keepalive_timeout, c.server.max_connections), (Duration::from_secs(5), Some(100)));
        let e = first_error(&format!("[server]\nmax_connections = 0\n{ECHO}"));
        assert!(e.message.starts_with("`max_connections`: expected a number of connections from 1 to"), "{e}");
    }

    #[test]
    fn huge_durations_are_errors_at_the_value_not_panics_later() {
        for huge in ["99999999999999999h", "99999999999999999999999h", "8761h"] {
            let text = format!("[server]\nshutdown_grace = \"{huge}\"\n{ECHO}");
            let e = first_error(&text);
            assert_eq!((e.line, e.column), (2, 18), "{e}");
            assert!(
                e.message.starts_with(&format!("`shutdown_grace`: `{huge}`: expected a duration of at most")),
                "{e}"
            );
        }
        let e = first_error(&format!("[server]\nshutdown_grace = \"61m\"\n{ECHO}"));
        assert_eq!(e.message, "`shutdown_grace`: `61m`: expected a duration of at most 1h", "{e}");
        assert_eq!(
            parse(&format!("[server]\nshutdown_grace = \"1h\"\n{ECHO}")).unwrap().server.shutdown_grace,
            MAX_SHUTDOWN_GRACE
        );

        let route = |key: &str, value: &str| {
            format!("[[route]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\n{key} = \"{value}\"\n")
        };
        for (key, too_long, bound) in
            [("timeout", "25h", "24h"), ("connect_timeout", "6m", "5m"), ("idle_timeout", "61m", "1h")]
        {
            let e = first_error(&route(key, too_long));
            assert_eq!((e.line, e.column), (4, key.len() + 4), "{e}");
            assert_eq!(e.message, format!("`{key}`: `{too_long}`: expected a duration of at most {bound}"), "{e}");
            assert!(parse(&route(key, bound)).is_ok(), "{key} = {bound} is allowed");
        }
        let e = first_error(&route("timeout", "99999999999999999999999h"));
        assert!(e.message.contains("expected a duration of at most 24h"), "{e}");
    }

    #[test]
    fn upstream_urls_are_strict_and_located() {
        let with = |url: &str| format!("[[route]]\nprefix = \"/\"\nupstream = \"{url}\"\n");
        let cases = [
            ("http://127.0.0.1:99999", "port `99999`: expected a port from 1 to 65535"),
            ("http://127.0.0.1:0", "port `0`: expected a port from 1 to 65535"),
            ("http://127.0.0.1:", "port ``: expected a port from 1 to 65535"),
            ("http://127.0.0.1:8000/#top", "expected no `#fragment`"),
            ("http://127.0.0.1:8000/?a=1", "expected no query string"),
            ("ftp://127.0.0.1:21", "scheme `ftp`: expected an http or https URL"),
            ("https://127.0.0.1:0", "port `0`: expected a port from 1 to 65535"),
            ("https://u:pw@127.0.0.1:8443", "expected no user or password"),
            ("127.0.0.1:8000", "expected an http(s) URL with a host and port"),
            ("http://user:pw@127.0.0.1:8000/", "expected no user or password"),
        ];
        for (url, expected) in cases {
            let e = first_error(&with(url));
            assert_eq!((e.line, e.column), (3, 12), "{url}: {e}");
            assert!(e.message.contains(expected), "{url}: {e}");
        }
        for good in [
            "http://127.0.0.1:8000",
            "http://[::1]:8000/base",
            "http://localhost/",
            "http://127.0.0.1:65535",
            "https://127.0.0.1:8443",
            "HTTPS://api.example/base",
        ] {
            assert!(parse(&with(good)).is_ok(), "{good}");
        }
    }

    #[test]
    fn an_upstream_password_is_never_shown() {
        for url in
            ["http://admin:hunter2@127.0.0.1:8000/", "http://admin:hun/ter2@127.0.0.1:8000", "http://hunter2@h:1"]
        {
            let text = format!("[[route]]\nprefix = \"/\"\nupstream = \"{url}\"  # prod\n");
            let errors = parse(&text).unwrap_err();
            let shown = errors.to_string();
            assert!(!shown.contains("hunter2") && !shown.contains("hun/ter2"), "{shown}");
            assert!(shown.contains(":***@") || shown.contains("//***@"), "{shown}");
        }
        // A config that does not even parse as TOML shows its line too.
        let errors = parse("[[route]]\nprefix = \"/\"\nupstream = \"http://a:hunter2@h:1\n").unwrap_err();
        assert!(!errors.to_string().contains("hunter2"), "{errors}");
    }

    #[test]
    fn userinfo_is_redacted_in_any_text() {
        assert_eq!(redact_userinfo("upstream `http://user:pw@host:1/x`"), "upstream `http://user:***@host:1/x`");
        assert_eq!(
            redact_userinfo("store = \"redis://:pw@127.0.0.1:6379\""),
            "store = \"redis://:***@127.0.0.1:6379\""
        );
        assert_eq!(redact_userinfo("http://token@h http://u:p@h2"), "http://***@h http://u:***@h2");
        assert_eq!(redact_userinfo("http://u:p/w@h/a"), "http://u:***@h/a");
        assert_eq!(redact_userinfo("http://127.0.0.1:8000/path"), "http://127.0.0.1:8000/path");
        assert_eq!(redact_userinfo("a@b, no URL"), "a@b, no URL");
    }

    const TWO: &str = "[middleware.limit]\nkind = \"timing\"\n[middleware.log]\nkind = \"access_log\"\n";

    #[test]
    fn a_middleware_twice_in_one_onion_is_an_error_at_the_second() {
        let e = first_error(&format!("[server]\nstack = [\"limit\", \"log\", \"limit\"]\n{TWO}{ECHO}"));
        assert_eq!((e.line, e.column), (2, 26), "{e}");
        assert!(
            e.message.contains("middleware `limit` is already in this onion: this `stack` at line 2, column 10"),
            "{e}"
        );

        let text = format!(
            "[server]\nstack = [\"limit\"]\n{TWO}[[route]]\nprefix = \"/\"\napp = \"echo\"\nstack = [\"log\", \"limit\"]\n"
        );
        let e = first_error(&text);
        assert_eq!((e.line, e.column), (10, 17), "{e}");
        assert!(
            e.message.contains(
                "already in this onion: `[server] stack` at line 2, column 10 (the server stack wraps every route)"
            ),
            "{e}"
        );

        let text = format!("{TWO}[[route]]\nprefix = \"/\"\napp = \"echo\"\nstack = [\"log\", \"log\"]\n");
        let e = first_error(&text);
        assert_eq!((e.line, e.column), (8, 17), "{e}");

        // One middleware in several routes is one layer in each onion: allowed.
        let text = format!(
            "[server]\nstack = [\"log\"]\n{TWO}[[route]]\nprefix = \"/a\"\napp = \"echo\"\nstack = [\"limit\"]\n\
             [[route]]\nprefix = \"/b\"\napp = \"tasks\"\nstack = [\"limit\"]\n"
        );
        assert!(parse(&text).is_ok());
    }

    #[test]
    fn type_errors_in_every_section_are_reported_together() {
        let text = "[server]\nmax_header_bytes = -1\nworkers = \"two\"\nlisten = \"x\"\n\
                    [middleware.limit]\nkind = \"rate_limit\"\nrate = \"10/s\"\nburst = -5\nnope = 1\n\
                    [[route]]\nprefix = \"/\"\napp = \"echo\"\nstrip_prefix = \"yes\"\nstack = [\"limit\", \"limit\"]\n";
        let errors = parse(text).unwrap_err().0;
        let at: Vec<(usize, usize)> = errors.iter().map(|e| (e.line, e.column)).collect();
        assert_eq!(
            at,
            [(2, 20), (3, 11), (4, 10), (8, 9), (9, 1), (13, 16), (14, 19)],
            "{}",
            ConfigErrors(errors.clone())
        );
        assert!(errors[0].message.contains("invalid value: integer `-1`"), "{}", errors[0]);
        assert!(errors[2].message.contains("expected an IP address and port"), "{}", errors[2]);
        assert!(errors[4].message.contains("unknown field `nope`"), "{}", errors[4]);
        assert!(errors[6].message.contains("already in this onion"), "{}", errors[6]);
    }

    #[test]
    fn a_missing_required_key_is_reported_once() {
        // The bad `prefix` is reported; that it is then missing is not a second error.
        let errors = parse("[[route]]\nprefix = 1\napp = \"echo\"\n").unwrap_err().0;
        assert_eq!(errors.len(), 1, "{}", ConfigErrors(errors.clone()));
        assert_eq!((errors[0].line, errors[0].column), (2, 10));
        let errors = parse("[[route]]\napp = \"echo\"\n").unwrap_err().0;
        assert_eq!(errors.len(), 1, "{}", ConfigErrors(errors.clone()));
        assert!(errors[0].message.contains("missing field `prefix`"), "{}", errors[0]);
        let errors = parse("server = 1\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n").unwrap_err().0;
        assert_eq!(errors.len(), 1, "{}", ConfigErrors(errors.clone()));
    }
}
