//! The targets of an upstream route (`upstream`, one URL or a weighted list) and how the route
//! shares its traffic among them: `balance`, retries, ejection and the active health check.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use strata::middleware::parse_duration_at_most;
use toml::Spanned;

use super::route::{RouteSection, reject_upstream_only_keys};
use super::{ConfigError, Source, did_you_mean, quoted_list, redact_userinfo};

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HealthCheckSection {
    path: Spanned<String>,
    interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    healthy_threshold: Option<Spanned<u64>>,
    unhealthy_threshold: Option<Spanned<u64>>,
}

/// `upstream = "http://…"`, or a list of URLs and `{ url = "http://…", weight = N }` tables.
pub(super) enum UpstreamSpec {
    One(String),
    Many(Vec<Spanned<UpstreamEntry>>),
}

impl UpstreamSpec {
    /// Whether the targets are `https://` URLs (the first one says: a list has one scheme).
    pub(super) fn is_https(&self) -> bool {
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
pub(super) enum UpstreamEntry {
    Url(String),
    Weighted(WeightedEntry),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WeightedEntry {
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
pub(super) fn parse_targets(
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

impl RouteSection {
    /// The balancing, retry and health options, or errors located at the keys at fault. An app
    /// route may not set them.
    pub(super) fn upstream_options(
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
            reject_upstream_only_keys(source, spans, errors);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Target;
    use crate::config::test_util::{first_error, parse};

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
}
