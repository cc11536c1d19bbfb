//! The `[server]` section and its `[server.tls]` table.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use strata::http::client_ip::{ForwardedHeader, TrustedProxies};
use strata::http::headers::is_tchar;
use strata::http::path::{EscapedSlashes, PathPolicy};
use strata::middleware::parse_duration_at_most;
use toml::Spanned;

use super::{ConfigError, NameRef, Source, did_you_mean, quoted_list};

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
    /// How the worker threads share connections (`runtime`).
    pub runtime: Runtime,
    /// Proxies whose forwarding header names the client (`trusted_proxies`, `client_ip_header`).
    pub trusted_proxies: Arc<TrustedProxies>,
    /// `behind_proxy`, when set; otherwise inferred from `listen` (see [`Server::deployment`]).
    pub behind_proxy: Option<bool>,
    /// How request paths are normalised before routing (`merge_slashes`, `escaped_slashes`).
    pub path_policy: PathPolicy,
    /// The name this gateway gives itself in `Via` (`via_pseudonym`, an RFC 9110 token); a request
    /// already carrying it has looped. Give chained strata instances different names.
    pub via_pseudonym: String,
    /// Request and response headers that hold secrets besides `authorization`,
    /// `proxy-authorization`, `cookie` and `set-cookie` (`secret_headers`, e.g. `["x-api-key"]`):
    /// `strata explain --request` and the debug log show `[redacted]` instead of their values.
    pub secret_headers: Vec<http::HeaderName>,
    /// `[server.tls]`: HTTPS served beside the plain listener.
    pub tls: Option<TlsSettings>,
}

/// `[server] runtime`: how the worker threads serve connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Runtime {
    /// `"per_core"`: one single-threaded runtime per worker thread; each connection is handed to
    /// one worker at the accept and served there to its end (nginx's and HAProxy's shape). Fewer
    /// cross-thread wake-ups; a request that computes for long holds up its worker's other
    /// connections.
    #[default]
    PerCore,
    /// `"work_stealing"`: one runtime whose threads take tasks from each other; for handlers that
    /// run long stretches of CPU work.
    WorkStealing,
}

impl Runtime {
    /// The name the config uses.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::PerCore => "per_core",
            Runtime::WorkStealing => "work_stealing",
        }
    }
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
    /// Whether a request whose host is not the name its connection's handshake sent (SNI) is
    /// answered `421 Misdirected Request`: on by default with `client_ca`, where the certificate a
    /// client proved is only good for the host it named.
    pub strict_sni_host: bool,
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
        // The connection defaults are the library server's: one place says what they are.
        let limits = strata::server::ConnectionLimits::default();
        Server {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            stack: Vec::new(),
            header_read_timeout: limits.header_read_timeout,
            keepalive_timeout: limits.keepalive_timeout,
            body_read_timeout: limits.body_read_timeout,
            send_timeout: limits.send_timeout,
            max_connections: limits.max_connections,
            max_header_bytes: limits.max_header_bytes,
            shutdown_grace: limits.shutdown_grace,
            http2: limits.http2,
            workers: None,
            runtime: Runtime::default(),
            trusted_proxies: Arc::new(TrustedProxies::none()),
            behind_proxy: None,
            path_policy: PathPolicy::new(),
            via_pseudonym: DEFAULT_VIA_PSEUDONYM.to_string(),
            secret_headers: Vec::new(),
            tls: None,
        }
    }
}

/// The `Via` pseudonym when `[server] via_pseudonym` is not set.
pub const DEFAULT_VIA_PSEUDONYM: &str = "strata";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServerSection {
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
    runtime: Option<Spanned<String>>,
    #[serde(default)]
    trusted_proxies: Vec<Spanned<String>>,
    client_ip_header: Option<Spanned<String>>,
    behind_proxy: Option<bool>,
    via_pseudonym: Option<Spanned<String>>,
    merge_slashes: Option<bool>,
    escaped_slashes: Option<Spanned<String>>,
    #[serde(default)]
    secret_headers: Vec<Spanned<String>>,
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
    strict_sni_host: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateSection {
    cert: Spanned<String>,
    key: Spanned<String>,
}

pub(super) fn parse_server(
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
    if let Some(v) = s.runtime {
        match v.get_ref().as_str() {
            "per_core" => server.runtime = Runtime::PerCore,
            "work_stealing" => server.runtime = Runtime::WorkStealing,
            other => {
                const CHOICES: &[&str] = &["per_core", "work_stealing"];
                errors.push(source.error(
                    v.span(),
                    format!(
                        "`runtime = \"{other}\"`: expected one of {}{}",
                        quoted_list(CHOICES),
                        did_you_mean(other, CHOICES)
                    ),
                ));
            }
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
    for name in s.secret_headers {
        match http::HeaderName::from_bytes(name.get_ref().as_bytes()) {
            Ok(header) => server.secret_headers.push(header),
            Err(_) => errors.push(source.error(
                name.span(),
                format!(
                    "`secret_headers`: `{}` is not a header name (letters, digits and !#$%&'*+-.^_`|~)",
                    name.get_ref()
                ),
            )),
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
    let strict_sni_host = s.strict_sni_host.unwrap_or(client_auth.is_some());
    (errors.len() == before).then(|| TlsSettings {
        listen,
        certificates,
        redirect_http: s.redirect_http.unwrap_or(false),
        redirect_exempt,
        client_auth,
        strict_sni_host,
    })
}

/// The longest `shutdown_grace`: a drain longer than an hour is a stuck shutdown, not a grace period.
pub const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::test_util::{APPS, ECHO, GOOD, first_error, parse};

    #[test]
    fn runtime_is_per_core_or_work_stealing() {
        let with =
            |runtime: &str| format!("[server]\nruntime = {runtime}\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n");
        assert_eq!(parse(&with("\"work_stealing\"")).unwrap().server.runtime, Runtime::WorkStealing);
        assert_eq!(parse(&with("\"per_core\"")).unwrap().server.runtime, Runtime::PerCore);
        assert_eq!(parse(GOOD).unwrap().server.runtime, Runtime::PerCore, "unset: per core");
        let error = parse(&with("\"per-core\"")).unwrap_err().to_string();
        assert!(error.contains(":2:11"), "{error}");
        assert!(error.contains("expected one of `per_core`, `work_stealing`"), "{error}");
        assert!(error.contains("did you mean `per_core`?"), "{error}");
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
    fn secret_headers_are_header_names_and_a_bad_one_is_located() {
        let with =
            |list: &str| format!("[server]\nsecret_headers = {list}\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n");
        let text = with("[\"X-Api-Key\", \"x-session\"]");
        let c = parse(&text).unwrap();
        assert_eq!(c.server.secret_headers, ["x-api-key", "x-session"]);
        assert!(parse(GOOD).unwrap().server.secret_headers.is_empty());
        let e = first_error(&with("[\"x-ok\", \"bad header\"]"));
        assert_eq!((e.line, e.column), (2, 27), "{e}");
        assert!(e.message.contains("`bad header` is not a header name"), "{e}");
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
        assert!(!tls.strict_sni_host, "off without client certificates");
        let text = with(&format!("listen = \"0.0.0.0:8443\"\n{pair}\nstrict_sni_host = true"));
        assert!(parse(&text).unwrap().server.tls.unwrap().strict_sni_host);

        let text = with(&format!(
            "listen = \"0.0.0.0:8443\"\n{pair}\nredirect_http = true\nredirect_exempt = [\"/health\"]\nclient_ca = \"ca.pem\"\nclient_auth = \"optional\""
        ));
        let tls = parse(&text).unwrap().server.tls.unwrap();
        assert!(tls.redirect_http);
        assert_eq!(tls.redirect_exempt, ["/health"]);
        assert!(tls.strict_sni_host, "on with client certificates");
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
}
