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

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

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
}
