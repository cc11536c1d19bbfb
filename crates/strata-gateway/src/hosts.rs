//! Routing by host: the `host` key of a route, and the table that picks a request's group of routes.
//!
//! A route may name hosts (`host = "api.example.com"`, `host = "*.example.com"`, or a list). A request
//! is routed in two steps: its host picks one group of routes, then the longest prefix wins within
//! that group. The group is the one of the most specific pattern the host matches: an exact name,
//! then the wildcard with the longest suffix; a host that matches no pattern (or a request with no
//! host at all, as HTTP/1.0 allows) goes to the routes without `host`. A host that picked a group
//! never falls through to another group when none of its prefixes matches: it gets the 404, as a
//! request to an nginx `server` block with no matching `location` does. Otherwise a path missing on
//! `api.example.com` would be served by whatever the catch-all routes serve.
//!
//! Matching ignores case, the port and a trailing dot (`API.Example.com.:8443` is
//! `api.example.com`). `*.example.com` matches any name below `example.com` (`a.example.com`,
//! `a.b.example.com`), not `example.com` itself, as nginx's wildcard names do.
//!
//! This module also checks the request's host before anything routes on it (`check_host`: RFC
//! 9112 §3.2, RFC 9113 §8.3.1) and, under `[server.tls] strict_sni_host`, that it is the name the
//! TLS handshake sent (`sni_matches_host`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use http::uri::Authority;
use http::{HeaderValue, Version, header};
use strata::http::Request;

/// One `host` entry of a route.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostPattern {
    /// A full name (lowercase, no trailing dot): `api.example.com`, `127.0.0.1`, `[::1]`.
    Exact(String),
    /// `*.example.com`, kept as the suffix `.example.com` a matching name ends with.
    Wildcard(String),
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}

impl HostPattern {
    /// Parses a `host` entry, or says what was expected.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let lower = text.trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let is_ipv6 = name.starts_with('[')
            && name.ends_with(']')
            && name[1..name.len() - 1].parse::<std::net::Ipv6Addr>().is_ok();
        if !wildcard && is_ipv6 {
            return Ok(HostPattern::Exact(name.to_string()));
        }
        if name.contains(':') {
            return Err(format!(
                "host `{text}`: expected a name without a port (hosts match whatever the port), e.g. \"api.example.com\""
            ));
        }
        if name.contains('*') {
            return Err(format!("host `{text}`: a wildcard is only a leading `*.` label, as in \"*.example.com\""));
        }
        let valid_label = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
            return Err(format!(
                "host `{text}`: expected a host name of letters, digits and `-` in dot-separated labels, \
                 e.g. \"api.example.com\" or \"*.example.com\""
            ));
        }
        Ok(if wildcard { HostPattern::Wildcard(format!(".{name}")) } else { HostPattern::Exact(name.to_string()) })
    }
}

/// The host part of a `Host` value or an authority, lowercase, without the port or a trailing dot.
/// Borrowed when it needs no change (the usual case: clients send lowercase names).
pub fn request_host(authority: &str) -> Cow<'_, str> {
    let host = if authority.starts_with('[') {
        authority.find(']').map_or(authority, |end| &authority[..=end])
    } else {
        authority.rsplit_once(':').map_or(authority, |(host, _)| host)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// Which group of routes a host belongs to. Groups are numbered by the router; a route listed
/// under several hosts is in several groups.
#[derive(Debug, Default)]
pub struct HostTable {
    exact: HashMap<String, usize>,
    // Longest suffix first: the first match is the most specific.
    wildcards: Vec<(String, usize)>,
    // The group of the routes without `host` (None when every route names hosts).
    default: Option<usize>,
}

impl HostTable {
    /// Groups routes by their patterns. `routes` gives each route's patterns (empty: no `host`);
    /// returns the table and, per group, the indices of its routes in the order given.
    pub fn build<'a>(routes: impl IntoIterator<Item = &'a [HostPattern]>) -> (HostTable, Vec<Vec<usize>>) {
        let mut table = HostTable::default();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut group_of = |key: Option<&HostPattern>, table: &mut HostTable| -> usize {
            let slot = match key {
                None => &mut table.default,
                Some(HostPattern::Exact(name)) => {
                    let next = groups.len();
                    let g = *table.exact.entry(name.clone()).or_insert(next);
                    if g == next {
                        groups.push(Vec::new());
                    }
                    return g;
                }
                Some(HostPattern::Wildcard(suffix)) => {
                    if let Some((_, g)) = table.wildcards.iter().find(|(s, _)| s == suffix) {
                        return *g;
                    }
                    groups.push(Vec::new());
                    table.wildcards.push((suffix.clone(), groups.len() - 1));
                    return groups.len() - 1;
                }
            };
            *slot.get_or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            })
        };
        let mut members: Vec<(usize, usize)> = Vec::new();
        for (index, patterns) in routes.into_iter().enumerate() {
            if patterns.is_empty() {
                members.push((group_of(None, &mut table), index));
            }
            for pattern in patterns {
                members.push((group_of(Some(pattern), &mut table), index));
            }
        }
        for (group, index) in members {
            groups[group].push(index);
        }
        table.wildcards.sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        (table, groups)
    }

    /// The group a request for `host` (already through [`request_host`]) is routed in; `None` when
    /// it matches no pattern and no route is without `host`.
    pub fn group(&self, host: Option<&str>) -> Option<usize> {
        let Some(host) = host else { return self.default };
        if let Some(group) = self.exact.get(host) {
            return Some(*group);
        }
        self.wildcards
            .iter()
            .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
            .map(|(_, group)| *group)
            .or(self.default)
    }

    /// Whether any route names a host (else every request is in the default group).
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcards.is_empty()
    }
}

pub(crate) const NO_HOST: &str = "An HTTP/1.1 request needs a Host header.";
pub(crate) const TWO_HOSTS: &str = "The request has more than one Host header.";
pub(crate) const BAD_HOST: &str = "The Host header is not a valid host[:port].";
pub(crate) const BAD_AUTHORITY: &str = "The request target's authority is not a valid host[:port].";
pub(crate) const HOST_MISMATCH: &str = "The Host header disagrees with the request's :authority.";

/// The request's host as it came: `Host` (checked by [`check_host`]), else the URI's authority
/// (HTTP/2's `:authority`). `None` for an HTTP/1.0 request without either.
pub(crate) fn request_authority(req: &Request) -> Option<&str> {
    match req.headers().get(header::HOST) {
        Some(host) => host.to_str().ok(),
        None => req.uri().authority().map(Authority::as_str),
    }
}

/// Whether the request's host is the name its TLS handshake sent (else the router answers
/// `421`). A client sends no SNI for an IP address, so an IP host without SNI passes.
pub(crate) fn sni_matches_host(req: &Request, server_name: Option<&str>) -> bool {
    let host = request_authority(req).map(request_host);
    match (server_name, host.as_deref()) {
        (Some(sni), Some(host)) => sni.strip_suffix('.').unwrap_or(sni) == host,
        (None, Some(host)) => host.starts_with('[') || host.parse::<std::net::Ipv4Addr>().is_ok(),
        // No host at all (HTTP/1.0): nothing to disagree with.
        (_, None) => true,
    }
}

/// RFC 9112 §3.2 and RFC 9113 §8.3.1. HTTP/1.0 may omit `Host`; HTTP/2 carries the host in
/// `:authority` (the URI's authority here) and may omit both.
pub(crate) fn check_host(req: &mut Request) -> Result<(), &'static str> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(TWO_HOSTS);
    }
    if host.is_some_and(|h| !is_valid_host(h.as_bytes())) {
        return Err(BAD_HOST);
    }
    let authority = req.uri().authority();
    if authority.is_some_and(|a| !is_valid_host(a.as_str().as_bytes())) {
        return Err(BAD_AUTHORITY);
    }
    match (req.version(), authority) {
        (Version::HTTP_2 | Version::HTTP_3, Some(authority)) => {
            if host.is_some_and(|h| !h.as_bytes().eq_ignore_ascii_case(authority.as_str().as_bytes())) {
                return Err(HOST_MISMATCH);
            }
        }
        (Version::HTTP_2 | Version::HTTP_3, None) => {}
        // Absolute form (RFC 9112 §3.2.2): the target's authority is the host, whatever `Host` says,
        // so every layer and the upstream see the host that was asked for.
        (_, Some(authority)) => {
            if host.is_none_or(|h| h.as_bytes() != authority.as_str().as_bytes()) {
                let value = authority_value(authority).ok_or(BAD_AUTHORITY)?;
                req.headers_mut().insert(header::HOST, value);
            }
        }
        (Version::HTTP_11, None) if host.is_none() => return Err(NO_HOST),
        (_, None) => {}
    }
    Ok(())
}

fn authority_value(authority: &Authority) -> Option<HeaderValue> {
    HeaderValue::from_str(authority.as_str()).ok()
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2), with a host that is not empty: an
/// `http` URI may not have an empty host (RFC 9110 §4.2.1). No userinfo.
fn is_valid_host(value: &[u8]) -> bool {
    let (host_ok, port) = if let Some(literal) = value.strip_prefix(b"[") {
        let Some(end) = literal.iter().position(|&b| b == b']') else { return false };
        let port = match &literal[end + 1..] {
            [] => None,
            [b':', port @ ..] => Some(port),
            _ => return false,
        };
        (is_ip_literal(&literal[..end]), port)
    } else {
        let (host, port) = match value.iter().position(|&b| b == b':') {
            Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
            None => (value, None),
        };
        (is_reg_name(host), port)
    };
    // `port = *DIGIT`, and at most 65535 when present.
    let port_ok = port.is_none_or(|p| {
        p.len() <= 5
            && p.iter()
                .try_fold(0u32, |n, &b| b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0')))
                .is_some_and(|n| n <= u32::from(u16::MAX))
    });
    host_ok && port_ok
}

/// A DNS name or an IPv4 address: `reg-name` (unreserved, sub-delims, percent-escapes), not empty.
fn is_reg_name(host: &[u8]) -> bool {
    let mut i = 0;
    while i < host.len() {
        match host[i] {
            b'%' => {
                if !(host.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && host.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
                {
                    return false;
                }
                i += 2;
            }
            b if REG_NAME[usize::from(b)] => {}
            _ => return false,
        }
        i += 1;
    }
    !host.is_empty()
}

/// The bytes a `reg-name` holds as they are: unreserved and sub-delims (RFC 3986 §3.2.2). A table,
/// since every request's `Host` is checked byte by byte.
const REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric();
        b += 1;
    }
    let others = b"-._~!$&'()*+,;=";
    let mut i = 0;
    while i < others.len() {
        table[others[i] as usize] = true;
        i += 1;
    }
    table
};

/// The inside of `[…]`: an IPv6 address, or `IPvFuture` (`v1.x`).
fn is_ip_literal(literal: &[u8]) -> bool {
    if let Some(future) = literal.strip_prefix(b"v").or_else(|| literal.strip_prefix(b"V")) {
        let Some(dot) = future.iter().position(|&b| b == b'.') else { return false };
        let (version, rest) = (&future[..dot], &future[dot + 1..]);
        return !version.is_empty()
            && version.iter().all(u8::is_ascii_hexdigit)
            && !rest.is_empty()
            && rest.iter().all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:".contains(&b));
    }
    std::str::from_utf8(literal).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> HostPattern {
        HostPattern::parse(text).unwrap()
    }

    #[test]
    fn patterns_are_lowercase_names_or_leading_wildcards() {
        assert_eq!(p("API.Example.com."), HostPattern::Exact("api.example.com".into()));
        assert_eq!(p("*.Example.com"), HostPattern::Wildcard(".example.com".into()));
        assert_eq!(p("127.0.0.1"), HostPattern::Exact("127.0.0.1".into()));
        assert_eq!(p("[::1]"), HostPattern::Exact("[::1]".into()));
        assert_eq!(p("*.example.com").to_string(), "*.example.com");
        for bad in ["", "api.example.com:8080", "a.*.example.com", "*", "*.", "a..b", "-a.com", "a b.com", "ex*.com"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(HostPattern::parse("api.example.com:8080").unwrap_err().contains("without a port"));
    }

    #[test]
    fn request_hosts_lose_case_port_and_trailing_dot() {
        assert_eq!(request_host("api.example.com"), "api.example.com");
        assert!(matches!(request_host("api.example.com"), Cow::Borrowed(_)));
        assert_eq!(request_host("API.Example.COM.:8443"), "api.example.com");
        assert_eq!(request_host("[::1]:8080"), "[::1]");
        assert_eq!(request_host("[::1]"), "[::1]");
        assert_eq!(request_host("127.0.0.1:80"), "127.0.0.1");
    }

    #[test]
    fn the_most_specific_pattern_picks_the_group() {
        let routes = [
            vec![p("api.example.com")],
            vec![p("*.example.com")],
            vec![p("*.eu.example.com"), p("shop.test")],
            vec![],
            vec![p("api.example.com")],
        ];
        let (table, groups) = HostTable::build(routes.iter().map(Vec::as_slice));
        let routes_of = |host: Option<&str>| table.group(host).map(|g| groups[g].clone());
        assert_eq!(routes_of(Some("api.example.com")), Some(vec![0, 4]));
        assert_eq!(routes_of(Some("www.example.com")), Some(vec![1]));
        assert_eq!(routes_of(Some("a.b.example.com")), Some(vec![1]));
        assert_eq!(routes_of(Some("fr.eu.example.com")), Some(vec![2]));
        assert_eq!(routes_of(Some("shop.test")), Some(vec![2]));
        // The bare domain is not below itself: it goes to the routes without `host`.
        assert_eq!(routes_of(Some("example.com")), Some(vec![3]));
        assert_eq!(routes_of(Some("other.org")), Some(vec![3]));
        assert_eq!(routes_of(None), Some(vec![3]));
        assert!(!table.is_empty());
    }

    #[test]
    fn without_hostless_routes_an_unknown_host_has_no_group() {
        let routes = [vec![p("a.test")]];
        let (table, _) = HostTable::build(routes.iter().map(Vec::as_slice));
        assert_eq!(table.group(Some("b.test")), None);
        assert_eq!(table.group(None), None);
        let (table, groups) = HostTable::build([[].as_slice(), [].as_slice()]);
        assert!(table.is_empty());
        assert_eq!(groups, vec![vec![0, 1]]);
    }

    #[test]
    fn hosts_are_uri_hosts_with_an_optional_port() {
        for host in [
            "example.com",
            "example.com:8080",
            "EXAMPLE.com:",
            "127.0.0.1:80",
            "example.com:65535",
            "example.com:00080",
            "[::1]",
            "[::1]:8080",
            "[2001:db8::7]",
            "[v1.fe80::a+en1]",
            "a-b_c~d!$&'()*+,;=e",
            "caf%C3%A9.example",
        ] {
            assert!(is_valid_host(host.as_bytes()), "{host}");
        }
        for host in [
            "",
            ":80",
            "user@example.com",
            "example.com:http",
            "example.com:65536",
            "example.com:000080",
            "example.com:+80",
            "example.com:8080:1",
            "a b",
            "a/b",
            "exa%zzmple",
            "[::1",
            "[::g]",
            "[::1]x",
            "::1",
            "[v.x]",
            "ex\u{e9}mple",
        ] {
            assert!(!is_valid_host(host.as_bytes()), "{host}");
        }
    }

    fn request(version: Version, target: &str, hosts: &[&str]) -> Request {
        let mut req = Request::new(strata::http::Body::empty());
        *req.version_mut() = version;
        *req.uri_mut() = target.parse().unwrap();
        for host in hosts {
            req.headers_mut().append(header::HOST, HeaderValue::from_str(host).unwrap());
        }
        req
    }

    #[test]
    fn http_1_1_needs_exactly_one_valid_host() {
        assert_eq!(check_host(&mut request(Version::HTTP_11, "/", &["example.com"])), Ok(()));
        assert_eq!(check_host(&mut request(Version::HTTP_11, "/", &[])), Err(NO_HOST));
        assert_eq!(check_host(&mut request(Version::HTTP_10, "/", &[])), Ok(()), "HTTP/1.0 may omit it");
        assert_eq!(check_host(&mut request(Version::HTTP_11, "/", &["a", "b"])), Err(TWO_HOSTS));
        assert_eq!(check_host(&mut request(Version::HTTP_10, "/", &["a", "a"])), Err(TWO_HOSTS));
        assert_eq!(check_host(&mut request(Version::HTTP_11, "/", &["a b"])), Err(BAD_HOST));
        assert_eq!(check_host(&mut request(Version::HTTP_11, "/", &[""])), Err(BAD_HOST));
    }

    #[test]
    fn an_absolute_form_target_names_the_host() {
        let mut req = request(Version::HTTP_11, "http://other.example:81/x", &["front.example"]);
        assert_eq!(check_host(&mut req), Ok(()));
        assert_eq!(req.headers()[header::HOST], "other.example:81");
        let mut req = request(Version::HTTP_11, "http://other.example/x", &[]);
        assert_eq!(check_host(&mut req), Ok(()));
        assert_eq!(req.headers()[header::HOST], "other.example");
        let mut req = request(Version::HTTP_11, "http://user@other.example/x", &["other.example"]);
        assert_eq!(check_host(&mut req), Err(BAD_AUTHORITY));
    }

    #[test]
    fn over_http_2_host_must_agree_with_the_authority() {
        assert_eq!(check_host(&mut request(Version::HTTP_2, "http://a.example/", &["A.example"])), Ok(()));
        assert_eq!(check_host(&mut request(Version::HTTP_2, "http://a.example/", &["b.example"])), Err(HOST_MISMATCH));
        assert_eq!(check_host(&mut request(Version::HTTP_2, "/", &[])), Ok(()), "no host at all is allowed");
        assert_eq!(check_host(&mut request(Version::HTTP_2, "http://a.example/", &[])), Ok(()));
    }
}
