//! The path rules `redirect` and `rewrite` share: a regex or a prefix over the request's path, and
//! the target a matching path maps to.
//!
//! ```
//! use strata::middleware::PathRule;
//!
//! // `$1`, `${1}` and `${name}` are the pattern's groups; `$$` is a literal `$`.
//! let moved = PathRule::regex(r"^/old/(?<rest>.*)$", "/new/${rest}");
//! // `/docs/a/b` → `/manual/a/b`; `/docs` → `/manual`; not `/docsify`.
//! let renamed = PathRule::prefix("/docs", "/manual");
//! # let _ = (moved, renamed);
//! ```
//!
//! - **What is matched**: the path only, as the request carries it (percent-encoded, case kept),
//!   never the query. Behind the gateway it is the normalised path (no dot segments, no repeated
//!   slashes), so one spelling of a path is matched one way.
//! - **The target replaces the whole path**, not just the part the regex matched (as nginx's
//!   `rewrite` and Apache's `RewriteRule` do): anchor patterns with `^…$` to say what they cover.
//! - **A prefix** matches on segment boundaries, as routes do: `/docs` matches `/docs` and
//!   `/docs/…`, not `/docsify`; the rest of the path is appended to the target. A prefix ending
//!   in `/` needs a target ending in `/`.
//! - **The query** is kept, unless the target has one of its own (`/search?q=$1`), which replaces it.
//! - **Targets** are paths (`/new/$1`), or for redirects absolute `http(s)://` URLs whose host is
//!   written out before any group (`https://docs.example.com/$1`): a group can never choose the host.
//!   A target is URI characters only (spaces and non-ASCII percent-encoded, no `#`), so no group or
//!   literal can put a CR or LF in a header. A path target that a group would start with `//` or
//!   `/\` (which browsers read as another host) is kept on this host by merging the leading slashes.
//! - Patterns are compiled once, by the layer's builder, with the `regex` crate: matching takes
//!   time linear in the path, whatever the pattern.

use std::fmt::Write as _;

use regex::Regex;

use super::ConfigError;

/// One rule as written: what it matches and the target a matching path maps to. The builder of
/// the layer it is given to validates it (`Redirect::builder`, `Rewrite::builder`); see the
/// [module docs](self) for the syntax.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathRule {
    pattern: Pattern,
    to: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    Regex(String),
    Prefix(String),
}

impl PathRule {
    /// Maps the paths `pattern` (a `regex` crate pattern) matches to `to`, in which `$1`, `${1}`
    /// and `${name}` stand for the pattern's groups (`$0` for the whole match) and `$$` for a `$`.
    pub fn regex(pattern: impl Into<String>, to: impl Into<String>) -> Self {
        PathRule { pattern: Pattern::Regex(pattern.into()), to: to.into() }
    }

    /// Maps `prefix` (on segment boundaries) and everything below it to `to` plus the rest of the
    /// path. `to` is taken literally (`$$` for a `$`).
    pub fn prefix(prefix: impl Into<String>, to: impl Into<String>) -> Self {
        PathRule { pattern: Pattern::Prefix(prefix.into()), to: to.into() }
    }

    /// The regex or prefix, as written.
    pub fn pattern(&self) -> &str {
        match &self.pattern {
            Pattern::Regex(p) | Pattern::Prefix(p) => p,
        }
    }

    /// The target, as written.
    pub fn to(&self) -> &str {
        &self.to
    }
}

/// Which targets a layer accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Targets {
    /// Paths only (a rewrite: the request stays on this server).
    Paths,
    /// Paths, or absolute `http://` / `https://` URLs (a redirect).
    #[cfg_attr(not(feature = "redirect"), allow(dead_code))]
    PathsOrUrls,
}

/// A validated [`PathRule`], ready to match.
#[derive(Clone, Debug)]
pub(crate) struct CompiledRule {
    matcher: Matcher,
    template: Vec<Piece>,
    absolute: bool,
    /// `rule N (`pattern`)`, for the reasons `explain` shows.
    label: Box<str>,
}

#[derive(Clone, Debug)]
enum Matcher {
    Regex(Regex),
    /// Without a trailing `/` unless it is one (`/docs/`): then it matches below it only.
    Prefix(Box<str>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(Box<str>),
    Group(usize),
}

impl CompiledRule {
    /// Compiles and checks rule number `number` (counted from 1, for the messages). Errors name
    /// the `rules` key.
    pub(crate) fn compile(rule: &PathRule, number: usize, targets: Targets) -> Result<CompiledRule, ConfigError> {
        let label = format!("rule {number} (`{}`)", rule.pattern());
        let fail = |message: String| ConfigError::field("rules", format!("{label}: {message}"));
        let (matcher, template) = match &rule.pattern {
            Pattern::Regex(pattern) => {
                let regex = Regex::new(pattern).map_err(|e| fail(format!("not a valid regex: {e}")))?;
                let template = parse_template(&rule.to, &Groups::Regex(&regex)).map_err(fail)?;
                (Matcher::Regex(regex), template)
            }
            Pattern::Prefix(prefix) => {
                check_prefix(prefix).map_err(fail)?;
                let template = parse_template(&rule.to, &Groups::None).map_err(fail)?;
                if prefix.ends_with('/') && !rule.to.ends_with('/') {
                    return Err(fail(format!(
                        "a prefix ending in `/` needs a target ending in `/` (`{}/`), or the rest of the path would be glued to its last segment",
                        rule.to
                    )));
                }
                if rule.to.contains('?') {
                    return Err(fail(
                        "a prefix rule appends the rest of the path to its target, which therefore cannot have a query"
                            .into(),
                    ));
                }
                (Matcher::Prefix(prefix.as_str().into()), template)
            }
        };
        for piece in &template {
            if let Piece::Literal(literal) = piece {
                check_uri_characters(literal).map_err(fail)?;
            }
        }
        let absolute = check_shape(&template, targets).map_err(fail)?;
        Ok(CompiledRule { matcher, template, absolute, label: label.into() })
    }

    /// Whether the target is an absolute URL (else a path on this server).
    #[cfg_attr(not(feature = "redirect"), allow(dead_code))]
    pub(crate) fn is_absolute(&self) -> bool {
        self.absolute
    }

    /// `rule N (`pattern`)`.
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    /// The target for `path` when the rule matches it: a path starting with exactly one `/` (or
    /// an absolute URL), maybe with a query.
    pub(crate) fn apply(&self, path: &str) -> Option<String> {
        let mut out = match &self.matcher {
            Matcher::Prefix(prefix) => {
                let rest = path.strip_prefix(prefix.as_ref())?;
                if !(prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/')) {
                    return None;
                }
                let Some(Piece::Literal(to)) = self.template.first() else { return None };
                let rest = if to.ends_with('/') { rest.strip_prefix('/').unwrap_or(rest) } else { rest };
                let mut out = String::with_capacity(to.len() + rest.len());
                out.push_str(to);
                out.push_str(rest);
                out
            }
            Matcher::Regex(regex) => {
                let captures = regex.captures(path)?;
                let mut out = String::with_capacity(path.len() + 16);
                for piece in &self.template {
                    match piece {
                        Piece::Literal(text) => out.push_str(text),
                        Piece::Group(i) => out.push_str(captures.get(*i).map_or("", |m| m.as_str())),
                    }
                }
                out
            }
        };
        if !self.absolute {
            keep_on_this_host(&mut out);
        }
        Some(out)
    }
}

/// Merges a leading run of `/` and `\` into one `/`: `//evil.example/x` and `/\evil.example` are
/// another host to a browser (and `//…` to a URL parser), `/evil.example/x` is a path here.
pub(crate) fn keep_on_this_host(path: &mut String) {
    let run = path.bytes().take_while(|b| matches!(b, b'/' | b'\\')).count();
    if run != 1 {
        path.replace_range(..run, "/");
    }
}

/// The groups a template may name.
enum Groups<'a> {
    None,
    Regex(&'a Regex),
}

impl Groups<'_> {
    fn index(&self, reference: &str) -> Result<usize, String> {
        let Groups::Regex(regex) = self else {
            return Err(format!(
                "`${reference}`: groups are for `regex` rules (a prefix rule's target is literal; write `$$` for a `$`)"
            ));
        };
        let count = regex.captures_len() - 1;
        if let Ok(n) = reference.parse::<usize>() {
            return if n <= count { Ok(n) } else { Err(format!("`${reference}`: the pattern has {count} group(s)")) };
        }
        regex.capture_names().position(|name| name == Some(reference)).ok_or_else(|| {
            let names: Vec<&str> = regex.capture_names().flatten().collect();
            format!("`${{{reference}}}`: the pattern has no group of that name (named groups: {names:?})")
        })
    }
}

/// `to` as literal text and group references.
fn parse_template(to: &str, groups: &Groups<'_>) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = to;
    while let Some(at) = rest.find('$') {
        literal.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (reference, tail) = if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').ok_or("a `${` without its `}`")?;
            (&inner[..end], &inner[end + 1..])
        } else if let Some(tail) = after.strip_prefix('$') {
            literal.push('$');
            rest = tail;
            continue;
        } else {
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(
                    "a `$` must be followed by a group number (`$1`), a `{name}` (`${name}`) or another `$` (`$$` for a literal `$`)"
                        .into(),
                );
            }
            after.split_at(digits)
        };
        let index = groups.index(reference)?;
        if !literal.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(&mut literal).into()));
        }
        pieces.push(Piece::Group(index));
        rest = tail;
    }
    literal.push_str(rest);
    if !literal.is_empty() || pieces.is_empty() {
        pieces.push(Piece::Literal(literal.into()));
    }
    Ok(pieces)
}

fn check_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/') {
        return Err("a prefix is a path: it starts with `/`".into());
    }
    if prefix.contains('?') {
        return Err("a prefix is matched against the path, which never holds the query: no `?`".into());
    }
    check_uri_characters(prefix)
}

/// Only characters a URI may hold (RFC 3986 §2), `%` followed by two hex digits, and no `#`.
fn check_uri_characters(text: &str) -> Result<(), String> {
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let allowed = b.is_ascii_alphanumeric() || b"-._~:/?[]@!$&'()*+,;=%".contains(&b);
        if !allowed {
            let c = text[i..].chars().next().unwrap_or_default();
            let mut encoded = String::new();
            for byte in c.to_string().bytes() {
                let _ = write!(encoded, "%{byte:02X}");
            }
            return Err(match c {
                '#' => "no `#`: a fragment is never sent to a server, and the query must come before it".into(),
                _ => format!("{c:?} is not allowed in a URI: percent-encode it ({encoded})"),
            });
        }
        if b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            return Err("a `%` must be followed by two hexadecimal digits (`%25` for a literal `%`)".into());
        }
    }
    Ok(())
}

/// A path target starts with one `/`; an absolute one writes `scheme://host/` before any group.
/// Returns whether the target is absolute.
fn check_shape(template: &[Piece], targets: Targets) -> Result<bool, String> {
    let Some(Piece::Literal(first)) = template.first() else {
        return Err("a target starts with `/` (a path) or `https://host/`, not with a group".into());
    };
    if first.starts_with('/') {
        if first.starts_with("//") {
            return Err("a target starting with `//` names another host: write `https://host/…` for that".into());
        }
        return Ok(false);
    }
    let Some(after_scheme) = first.strip_prefix("https://").or_else(|| first.strip_prefix("http://")) else {
        return Err(match targets {
            Targets::Paths => "a rewrite target is a path starting with `/`".into(),
            Targets::PathsOrUrls => "a target is a path starting with `/`, or an `http://` or `https://` URL".into(),
        });
    };
    if targets == Targets::Paths {
        return Err("a rewrite target is a path on this server: to send clients elsewhere, use a `redirect`".into());
    }
    let end = after_scheme.find(['/', '?']);
    if end.is_none() && template.len() > 1 {
        return Err(
            "a group may only follow the host and its `/` (`https://host/$1`): it must never choose the host".into()
        );
    }
    let authority = &after_scheme[..end.unwrap_or(after_scheme.len())];
    match authority.parse::<http::uri::Authority>() {
        Ok(a) if !a.host().is_empty() && !authority.contains('@') => Ok(true),
        _ => Err(format!("`{authority}` is not a host (with an optional port, and no user)")),
    }
}

#[cfg(feature = "config")]
pub(crate) use self::config::rule_from_parts;

#[cfg(feature = "config")]
mod config {
    use super::PathRule;
    use crate::middleware::ConfigError;

    /// A rule table's `regex` or `prefix` (exactly one) and `to`, as a [`PathRule`].
    pub(crate) fn rule_from_parts(
        number: usize,
        regex: Option<String>,
        prefix: Option<String>,
        to: String,
    ) -> Result<PathRule, ConfigError> {
        match (regex, prefix) {
            (Some(regex), None) => Ok(PathRule::regex(regex, to)),
            (None, Some(prefix)) => Ok(PathRule::prefix(prefix, to)),
            _ => {
                Err(ConfigError::field("rules", format!("rule {number}: expected exactly one of `regex` and `prefix`")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(rule: PathRule) -> Result<CompiledRule, String> {
        CompiledRule::compile(&rule, 1, Targets::PathsOrUrls).map_err(|e| {
            assert_eq!(e.field, Some("rules"));
            e.message
        })
    }

    fn apply(rule: PathRule, path: &str) -> Option<String> {
        compile(rule).expect("a valid rule").apply(path)
    }

    #[test]
    fn groups_by_number_and_by_name() {
        let rule = || PathRule::regex(r"^/old/(?<year>\d{4})/(.*)$", "/new/${year}/$2?from=$1&all=${0}$$");
        assert_eq!(apply(rule(), "/old/2024/a/b").as_deref(), Some("/new/2024/a/b?from=2024&all=/old/2024/a/b$"));
        assert_eq!(apply(rule(), "/old/24/a"), None);
        // `$12` is group twelve, not group one then a `2`: `${1}2` says the other.
        let rule = PathRule::regex(r"^/(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(k)(l)$", "/$12/${1}2");
        assert_eq!(apply(rule, "/abcdefghijkl").as_deref(), Some("/l/a2"));
        // A group that took no part in the match is empty.
        assert_eq!(apply(PathRule::regex(r"^/x(/y)?$", "/z$1"), "/x").as_deref(), Some("/z"));
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let rule = || PathRule::prefix("/docs", "/manual");
        assert_eq!(apply(rule(), "/docs").as_deref(), Some("/manual"));
        assert_eq!(apply(rule(), "/docs/a/b").as_deref(), Some("/manual/a/b"));
        assert_eq!(apply(rule(), "/docsify"), None);
        assert_eq!(apply(rule(), "/doc"), None);
        let rule = || PathRule::prefix("/docs/", "/manual/");
        assert_eq!(apply(rule(), "/docs/a").as_deref(), Some("/manual/a"));
        assert_eq!(apply(rule(), "/docs"), None);
        assert_eq!(apply(PathRule::prefix("/docs", "/manual/"), "/docs/a").as_deref(), Some("/manual/a"));
        assert_eq!(apply(PathRule::prefix("/", "/v2/"), "/a").as_deref(), Some("/v2/a"));
        assert_eq!(
            apply(PathRule::prefix("/blog", "https://blog.example.com"), "/blog/x").as_deref(),
            Some("https://blog.example.com/x")
        );
    }

    #[test]
    fn a_group_cannot_send_the_path_to_another_host() {
        let rule = || PathRule::regex("^/go/(.*)$", "/$1");
        assert_eq!(apply(rule(), "/go//evil.example/x").as_deref(), Some("/evil.example/x"));
        assert_eq!(apply(rule(), "/go/\\evil.example").as_deref(), Some("/evil.example"));
        assert_eq!(apply(rule(), "/go/\\/\\evil.example").as_deref(), Some("/evil.example"));
        assert_eq!(apply(rule(), "/go/x").as_deref(), Some("/x"));
    }

    #[test]
    fn targets_that_could_leave_the_host_are_build_errors() {
        for (to, expected) in [
            ("$1", "not with a group"),
            ("//evil.example/$1", "names another host"),
            ("https://$1/", "must never choose the host"),
            ("https://example.com$1", "must never choose the host"),
            ("https://user@example.com/$1", "is not a host"),
            ("evil.example/$1", "a target is a path"),
            ("javascript:alert(1)", "a target is a path"),
        ] {
            let e = compile(PathRule::regex("^/(.*)$", to)).unwrap_err();
            assert!(e.contains(expected), "{to}: {e}");
        }
        assert!(compile(PathRule::regex("^/(.*)$", "https://new.example.com:8443/$1")).unwrap().is_absolute());
        let e = CompiledRule::compile(&PathRule::prefix("/a", "https://x.example/"), 1, Targets::Paths).unwrap_err();
        assert!(e.message.contains("use a `redirect`"), "{e}");
    }

    #[test]
    fn targets_hold_uri_characters_only() {
        for (to, expected) in [
            ("/a\r\nSet-Cookie: x=1", "'\\r' is not allowed in a URI: percent-encode it (%0D)"),
            ("/a\nb", "(%0A)"),
            ("/a b", "(%20)"),
            ("/caf\u{e9}", "(%C3%A9)"),
            ("/a#top", "no `#`"),
            ("/a%zz", "two hexadecimal digits"),
            ("/a%4", "two hexadecimal digits"),
        ] {
            let e = compile(PathRule::regex("^/(.*)$", to)).unwrap_err();
            assert!(e.contains(expected), "{to:?}: {e}");
        }
        assert!(compile(PathRule::regex("^/(.*)$", "/a%20b/$1?x=%2F")).is_ok());
    }

    #[test]
    fn bad_patterns_and_references_name_the_rule() {
        let e = compile(PathRule::regex("^/old/((", "/new")).unwrap_err();
        assert!(e.starts_with("rule 1 (`^/old/((`): not a valid regex: regex parse error"), "{e}");
        assert!(e.contains("unclosed group"), "{e}");
        for (to, expected) in [
            ("/new/$2", "`$2`: the pattern has 1 group(s)"),
            ("/new/${nope}", "no group of that name"),
            ("/new/${1", "without its `}`"),
            ("/new/$x", "must be followed by a group number"),
        ] {
            let e = compile(PathRule::regex("^/old/(.*)$", to)).unwrap_err();
            assert!(e.contains(expected), "{to}: {e}");
        }
        for (prefix, to, expected) in [
            ("/a", "/b/$1", "groups are for `regex` rules"),
            ("a", "/b", "starts with `/`"),
            ("/a?x", "/b", "no `?`"),
            ("/a/", "/b", "needs a target ending in `/`"),
            ("/a", "/b?x=1", "cannot have a query"),
        ] {
            let e = compile(PathRule::prefix(prefix, to)).unwrap_err();
            assert!(e.contains(expected), "{prefix} → {to}: {e}");
        }
        assert_eq!(apply(PathRule::prefix("/a", "/b$$"), "/a/c").as_deref(), Some("/b$/c"));
    }
}
