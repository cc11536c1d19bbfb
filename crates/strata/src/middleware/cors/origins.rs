//! Origins: the configured list compiled into exact origins and subdomain patterns, and the
//! `scheme://host[:port]` parser both the config and each request's `Origin` go through.

use http::HeaderValue;

use crate::middleware::ConfigError;

use super::AllowedOrigins;

/// `scheme://*.suffix[:port]`: matches one or more DNS labels followed by `.suffix`.
#[derive(Clone, Debug)]
pub(super) struct SubdomainPattern {
    scheme: String,
    /// Lowercase, with its leading dot: `.example.com`.
    dot_suffix: String,
    port: Option<u16>,
}

impl SubdomainPattern {
    pub(super) fn matches(&self, origin: &str) -> bool {
        let Ok(o) = parse_origin(origin) else { return false };
        let host = o.host.as_bytes();
        let suffix = self.dot_suffix.as_bytes();
        // Longer than the suffix, so at least one label precedes it; `parse_origin` already
        // rejected empty labels (`a..example.com`, `.example.com`).
        o.scheme.eq_ignore_ascii_case(&self.scheme)
            && o.port_or_default() == self.port
            && host.len() > suffix.len()
            && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    }
}

const ORIGIN_SHAPE: &str = "expected scheme://host[:port] with no path (https://app.example.com), a subdomain pattern (https://*.example.com), \"null\", or \"*\"";

/// Compiles the allowed origins: `any` alone, or a list of exact origins, subdomain patterns and
/// `null`.
pub(super) fn compile_origins(any: bool, list: &[HeaderValue]) -> Result<AllowedOrigins, ConfigError> {
    if any {
        return if list.is_empty() {
            Ok(AllowedOrigins::Any)
        } else {
            Err(ConfigError::field("allow_origins", "`\"*\"` allows every origin: it cannot be combined with others"))
        };
    }
    if list.is_empty() {
        return Err(ConfigError::field(
            "allow_origins",
            "at least one origin is required, e.g. [\"https://app.example.com\"], or \"*\" for any",
        ));
    }
    let mut exact = Vec::new();
    let mut patterns = Vec::new();
    for value in list {
        let lossy = String::from_utf8_lossy(value.as_bytes());
        let bad = |why: &str| {
            ConfigError::field("allow_origins", format!("`{lossy}` is not an origin: {why}; {ORIGIN_SHAPE}"))
        };
        let Ok(raw) = value.to_str() else {
            return Err(bad("it contains a space, a control or a non-ASCII character"));
        };
        if raw == "null" {
            exact.push(raw.to_string());
            continue;
        }
        if raw == "*" {
            return Err(bad("`*` alone means any origin: use `allow_any_origin`"));
        }
        if let Some((scheme, rest)) = raw.split_once("://")
            && let Some(suffix_and_port) = rest.strip_prefix("*.")
        {
            // Parse the pattern as if `*` were a label, then check the suffix on its own.
            let probe = format!("{scheme}://x.{suffix_and_port}");
            let o = parse_origin(&probe).map_err(bad)?;
            let suffix = &o.host[2..];
            let labels: Vec<&str> = suffix.split('.').collect();
            if labels.len() < 2 {
                return Err(bad(
                    "a subdomain pattern needs at least two labels after `*.` (`*.com` would match whole top-level domains)",
                ));
            }
            if labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_digit())) || o.host.starts_with('[') {
                return Err(bad("a subdomain pattern needs a domain name, not an IP address"));
            }
            patterns.push(SubdomainPattern {
                scheme: o.scheme.to_ascii_lowercase(),
                dot_suffix: format!(".{}", suffix.to_ascii_lowercase()),
                port: o.port_or_default(),
            });
            continue;
        }
        let o = parse_origin(raw).map_err(bad)?;
        exact.push(o.normalized());
    }
    Ok(AllowedOrigins::List { exact, patterns })
}

/// An origin split into its parts, borrowed from the text it was parsed from.
struct Origin<'a> {
    scheme: &'a str,
    host: &'a str,
    port: Option<u16>,
}

impl Origin<'_> {
    /// The port, with a scheme's default port folded into "none", as browsers serialize origins.
    fn port_or_default(&self) -> Option<u16> {
        let default = match self.scheme.to_ascii_lowercase().as_str() {
            "http" | "ws" => Some(80),
            "https" | "wss" => Some(443),
            _ => None,
        };
        self.port.filter(|p| Some(*p) != default)
    }

    /// The form a browser sends in `Origin`: lowercase, no default port.
    fn normalized(&self) -> String {
        let mut s = format!("{}://{}", self.scheme, self.host).to_ascii_lowercase();
        if let Some(port) = self.port_or_default() {
            s.push_str(&format!(":{port}"));
        }
        s
    }
}

/// Parses `scheme://host[:port]`; also used on request `Origin` values, so it never panics.
fn parse_origin(s: &str) -> Result<Origin<'_>, &'static str> {
    let (scheme, rest) = s.split_once("://").ok_or("no `://`")?;
    let mut chars = scheme.bytes();
    if !chars.next().is_some_and(|b| b.is_ascii_alphabetic())
        || !chars.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return Err("the scheme is not valid");
    }
    if rest.is_empty() {
        return Err("no host");
    }
    if let Some(b) = rest.bytes().find(|b| matches!(b, b'/' | b'?' | b'#' | b'@') || !b.is_ascii_graphic()) {
        return Err(match b {
            b'/' => "an origin has no path (not even a trailing `/`)",
            b'?' | b'#' => "an origin has no query or fragment",
            b'@' => "an origin has no user info",
            _ => "it contains a space, a control or a non-ASCII character",
        });
    }
    let (host, port) = if rest.starts_with('[') {
        let end = rest.find(']').ok_or("unclosed `[` in an IPv6 host")?;
        let (host, after) = rest.split_at(end + 1);
        if host[1..host.len() - 1].parse::<std::net::Ipv6Addr>().is_err() {
            return Err("not a valid IPv6 address");
        }
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or("unexpected text after the IPv6 host")?)),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err("the port must be a number from 1 to 65535"),
        },
    };
    if !host.starts_with('[') {
        let valid_label =
            |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !host.split('.').all(valid_label) {
            return Err("the host must be dot-separated labels of letters, digits, `-` or `_`");
        }
    }
    Ok(Origin { scheme, host, port })
}
