//! A `[[route]]` table: its prefix, hosts and target, and how an upstream route forwards
//! (the proxy and TLS keys). Its targets and pool options are read in [`super::upstream`].

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use strata::middleware::parse_duration_at_most;
use toml::Spanned;

use super::upstream::{HealthCheckSection, UpstreamSpec};
use super::{
    ConfigError, DEFAULT_VIA_PSEUDONYM, NameRef, Source, UpstreamOptions, UpstreamTarget, did_you_mean, quoted_list,
};
use crate::hosts::HostPattern;

/// What a route serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A built-in app, by name.
    App(String),
    /// One or more upstream HTTP servers (in the order written), sharing the route's traffic.
    Upstream(Vec<UpstreamTarget>),
    /// Files from a directory (`static = "DIR"` or `static = { root = "DIR", … }`).
    Static(StaticTarget),
}

/// A route's `static` target: its table, and where each of its keys is written, so that an error
/// the files' builder reports about a key points at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticTarget {
    /// The table (`static = "DIR"` is `root` alone).
    pub config: strata::apps::StaticFilesConfig,
    /// Each key written and the span of its key (for `static = "DIR"`, `root` and the string's).
    pub key_spans: Vec<(String, Range<usize>)>,
}

impl StaticTarget {
    /// Where `field` is written, else the whole `static` value (`span`).
    pub fn span_of(&self, field: &str, span: &Range<usize>) -> Range<usize> {
        self.key_spans.iter().find(|(key, _)| key == field).map_or_else(|| span.clone(), |(_, at)| at.clone())
    }
}

/// Reads a route's `static` value: a string (the root directory) or a table of
/// [`strata::apps::StaticFilesConfig`]'s keys, errors located at the key at fault.
pub(super) fn parse_static(
    source: Source<'_>,
    value: Spanned<toml::de::DeValue<'_>>,
    errors: &mut Vec<ConfigError>,
) -> Option<StaticTarget> {
    use toml::de::DeValue;
    let span = value.span();
    match value.get_ref() {
        DeValue::String(root) => Some(StaticTarget {
            config: strata::apps::StaticFilesConfig::root(root.to_string()),
            key_spans: vec![("root".to_string(), span)],
        }),
        DeValue::Table(table) => {
            let key_spans = table.iter().map(|(k, _)| (k.get_ref().to_string(), k.span())).collect();
            let config = super::from_table(source, value, errors)?;
            Some(StaticTarget { config, key_spans })
        }
        other => {
            errors.push(source.error(
                span,
                format!(
                    "`static` must be a directory (`static = \"./public\"`) or a table \
                     (`static = {{ root = \"./public\", precompressed = true }}`), found {}",
                    other.type_str()
                ),
            ));
            None
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
    /// Where the target (`app`, `upstream` or `static`) is written.
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteSection {
    pub(super) prefix: Spanned<String>,
    pub(super) host: Option<Spanned<OneOrMany>>,
    #[serde(default)]
    pub(super) stack: Vec<Spanned<String>>,
    pub(super) app: Option<Spanned<String>>,
    pub(super) upstream: Option<Spanned<UpstreamSpec>>,
    pub(super) strip_prefix: Option<Spanned<bool>>,
    pub(super) preserve_host: Option<Spanned<bool>>,
    pub(super) forwarded: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) connect_timeout: Option<Spanned<String>>,
    pub(super) idle_timeout: Option<Spanned<String>>,
    pub(super) http2: Option<Spanned<bool>>,
    pub(super) via: Option<Spanned<bool>>,
    pub(super) balance: Option<Spanned<String>>,
    pub(super) hash_on: Option<Spanned<String>>,
    pub(super) retries: Option<Spanned<u64>>,
    pub(super) eject_after: Option<Spanned<u64>>,
    pub(super) eject_for: Option<Spanned<String>>,
    pub(super) health_check: Option<Spanned<HealthCheckSection>>,
    pub(super) tls_ca_file: Option<Spanned<String>>,
    pub(super) tls_server_name: Option<Spanned<String>>,
    pub(super) insecure_skip_verify: Option<Spanned<bool>>,
}

/// A string or an array of strings (`host = "a"`, `host = ["a", "b"]`); each string of an array
/// keeps its own span, a lone string has the value's.
pub(super) enum OneOrMany {
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
pub(super) fn parse_hosts(
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
    /// The upstream options, or errors located at the keys at fault. An app route may not set them,
    /// nor may an `http://` upstream set the TLS keys.
    pub(super) fn proxy_options(
        &self,
        source: Source<'_>,
        is_upstream: bool,
        errors: &mut Vec<ConfigError>,
    ) -> ProxyOptions {
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
            reject_upstream_only_keys(source, spans, errors);
        }
        options
    }
}

/// Reports each key of `spans` (a key and the span of its value) as one a route serving a
/// built-in app or static files may not set.
pub(super) fn reject_upstream_only_keys(
    source: Source<'_>,
    spans: Vec<(&str, Range<usize>)>,
    errors: &mut Vec<ConfigError>,
) {
    for (key, span) in spans {
        errors.push(
            source.error(span, format!("`{key}` is an option of upstream routes, and this route has no `upstream`")),
        );
    }
}

/// The longest upstream `timeout`, the same bound as the `timeout` middleware's.
pub const MAX_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// The longest `connect_timeout`: the kernel gives up on an unanswered connect after about two
/// minutes (Linux, six SYN retries), so a longer wait never happens.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// The longest `idle_timeout`: upstreams close idle connections far sooner (nginx: 75 s).
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

pub(super) fn normalize_prefix(prefix: &str) -> Result<String, String> {
    if !prefix.starts_with('/') {
        return Err(format!("prefix `{prefix}`: expected a path starting with `/`, e.g. \"/api\""));
    }
    if prefix.contains(['?', '#', '*', ' ']) || prefix.contains("//") {
        return Err(format!("prefix `{prefix}`: expected a plain path (no `?`, `#`, `*`, spaces or empty segments)"));
    }
    let trimmed = prefix.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/".to_string() } else { trimmed.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_util::{first_error, parse};

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
    fn static_routes_take_a_directory_or_a_table_and_refuse_the_other_targets() {
        let c = parse("[[route]]\nprefix = \"/assets\"\nstatic = \"./public\"\n").unwrap();
        let Target::Static(target) = &c.routes[0].target else { panic!("a static route") };
        assert_eq!(target.config, strata::apps::StaticFilesConfig::root("./public"));
        assert_eq!(target.span_of("root", &(0..0)), c.routes[0].target_span);
        let c = parse("[[route]]\nprefix = \"/\"\n[route.static]\nroot = \"dist\"\nspa_fallback = \"index.html\"\n")
            .unwrap();
        let Target::Static(target) = &c.routes[0].target else { panic!("a static route") };
        assert_eq!(target.config.spa_fallback.as_deref(), Some("index.html"));
        assert!(target.config.index && !target.config.precompressed);
        let e = first_error("[[route]]\nprefix = \"/\"\nstatic = { root = \"d\", gzip = true }\n");
        assert_eq!((e.line, e.column), (3, 24), "{e}");
        let e = first_error("[[route]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\nstatic = \"d\"\n");
        assert!(e.message.contains("one target"), "{e}");
        let e = first_error("[[route]]\nprefix = \"/\"\nstatic = \"d\"\nvia = false\n");
        assert!(e.message.contains("`via` is an option of upstream routes"), "{e}");
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
}
