//! What a request's headers ask of a file: its preconditions (RFC 9110 §13), the byte range it
//! wants (RFC 9110 §14) and the precompressed coding it accepts (RFC 9110 §12.5.3).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap};

use crate::http::headers::{Weighted, weighted_list};

/// What a precondition check decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Precondition {
    /// Serve the file (possibly a range of it).
    Proceed,
    /// `304 Not Modified`: the client's copy is current.
    NotModified,
    /// `412 Precondition Failed`: the client wanted to act on another version.
    Failed,
}

/// The validators of one representation: its strong entity tag and its modification time.
#[derive(Clone, Debug)]
pub(super) struct Validators {
    /// The opaque tag with its quotes, `"…"`.
    pub(super) etag: String,
    /// The modification time, in whole seconds (HTTP dates have no finer resolution).
    pub(super) modified: Option<SystemTime>,
}

impl Validators {
    /// Evaluates the preconditions in RFC 9110 §13.2.2's order, for a `GET` or `HEAD`:
    /// `If-Match`, else `If-Unmodified-Since`; then `If-None-Match`, else `If-Modified-Since`.
    /// A date that does not parse makes its header ignored, as the RFC says.
    pub(super) fn evaluate(&self, headers: &HeaderMap) -> Precondition {
        if headers.contains_key(header::IF_MATCH) {
            if !self.matches(headers, header::IF_MATCH, Comparison::Strong) {
                return Precondition::Failed;
            }
        } else if let (Some(since), Some(modified)) = (date(headers, header::IF_UNMODIFIED_SINCE), self.modified)
            && modified > since
        {
            return Precondition::Failed;
        }
        if headers.contains_key(header::IF_NONE_MATCH) {
            if self.matches(headers, header::IF_NONE_MATCH, Comparison::Weak) {
                return Precondition::NotModified;
            }
        } else if let (Some(since), Some(modified)) = (date(headers, header::IF_MODIFIED_SINCE), self.modified)
            && modified <= since
        {
            return Precondition::NotModified;
        }
        Precondition::Proceed
    }

    /// Whether an `If-Range` (RFC 9110 §13.1.5) lets the `Range` apply: its entity tag is this
    /// one (strong comparison), or its date is exactly the modification time. Without `If-Range`,
    /// the range always applies.
    pub(super) fn range_applies(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::IF_RANGE) else { return true };
        let Ok(value) = value.to_str() else { return false };
        let value = value.trim();
        if value.starts_with('"') || value.starts_with("W/") {
            // A weak tag never matches strongly.
            return value == self.etag;
        }
        match (httpdate::parse_http_date(value).ok(), self.modified) {
            (Some(date), Some(modified)) => date == modified,
            _ => false,
        }
    }

    fn matches(&self, headers: &HeaderMap, name: header::HeaderName, comparison: Comparison) -> bool {
        let mine = &self.etag[..];
        headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).any(|list| {
            if list.trim() == "*" {
                return true;
            }
            entity_tags(list).any(|(weak, tag)| tag == mine && (comparison == Comparison::Weak || !weak))
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Strong,
    Weak,
}

/// The entity tags of a list (`"a", W/"b"`): each as (weak, the tag with its quotes). Parsing
/// stops at the first malformed element: what came before it still counts.
fn entity_tags(list: &str) -> impl Iterator<Item = (bool, &str)> {
    let mut rest = list;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return None;
        }
        let weak = rest.starts_with("W/");
        if weak {
            rest = &rest[2..];
        }
        if !rest.starts_with('"') {
            rest = "";
            return None;
        }
        let end = rest[1..].find('"')? + 2;
        let tag = &rest[..end];
        rest = &rest[end..];
        Some((weak, tag))
    })
}

fn date(headers: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    httpdate::parse_http_date(headers.get(name)?.to_str().ok()?).ok()
}

/// A modification time truncated to whole seconds, as `Last-Modified` carries it.
pub(super) fn whole_seconds(time: SystemTime) -> Option<SystemTime> {
    let since_epoch = time.duration_since(UNIX_EPOCH).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs()))
}

/// What a `Range` header asks of a representation of `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ranged {
    /// No usable range: the whole representation (no `Range`, another unit, a syntax error, or
    /// several ranges, which are answered with the whole file rather than `multipart/byteranges`).
    Whole,
    /// One range, `start..=end`, within the representation.
    Part { start: u64, end: u64 },
    /// A valid range that lies wholly past the end: `416 Range Not Satisfiable`.
    Unsatisfiable,
}

/// Parses `Range: bytes=a-b`, `bytes=a-` or `bytes=-n` (RFC 9110 §14.1.2) against `len`.
pub(super) fn range(headers: &HeaderMap, len: u64) -> Ranged {
    let mut values = headers.get_all(header::RANGE).iter();
    let (Some(value), None) = (values.next(), values.next()) else { return Ranged::Whole };
    let Some(value) = value.to_str().ok() else { return Ranged::Whole };
    let Some((unit, set)) = value.split_once('=') else { return Ranged::Whole };
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return Ranged::Whole;
    }
    let Some((first, last)) = set.trim().split_once('-') else { return Ranged::Whole };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| if s.bytes().all(|b| b.is_ascii_digit()) { s.parse::<u64>().ok() } else { None };
    match (first.is_empty(), last.is_empty()) {
        // `-n`: the last n bytes.
        (true, false) => match number(last) {
            Some(0) => Ranged::Unsatisfiable,
            Some(_) if len == 0 => Ranged::Unsatisfiable,
            Some(n) => Ranged::Part { start: len.saturating_sub(n), end: len - 1 },
            None => Ranged::Whole,
        },
        // `a-`: from a to the end.
        (false, true) => match number(first) {
            Some(start) if start < len => Ranged::Part { start, end: len - 1 },
            Some(_) => Ranged::Unsatisfiable,
            None => Ranged::Whole,
        },
        (false, false) => match (number(first), number(last)) {
            (Some(start), Some(end)) if start > end => Ranged::Whole,
            (Some(start), Some(end)) if start < len => Ranged::Part { start, end: end.min(len - 1) },
            (Some(_), Some(_)) => Ranged::Unsatisfiable,
            _ => Ranged::Whole,
        },
        (true, true) => Ranged::Whole,
    }
}

/// A coding a precompressed sibling may carry, in the server's order of preference (smallest
/// first for the same content).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Coding {
    Br,
    Zstd,
    Gzip,
}

impl Coding {
    const ALL: [Coding; 3] = [Coding::Br, Coding::Zstd, Coding::Gzip];

    /// The sibling's suffix: `app.js` → `app.js.br`.
    pub(super) fn suffix(self) -> &'static str {
        match self {
            Coding::Br => ".br",
            Coding::Zstd => ".zst",
            Coding::Gzip => ".gz",
        }
    }

    /// The `Content-Encoding` token, also the entity tag's suffix.
    pub(super) fn token(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
        }
    }
}

/// The codings the request's `Accept-Encoding` accepts (q > 0), best first: the client's weights
/// first, the server's preference among equal weights. A malformed list accepts none (identity is
/// always served).
pub(super) fn accepted_codings(headers: &HeaderMap) -> Vec<Coding> {
    let mut weights: [Option<u16>; 3] = [None; 3];
    let mut any = None;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { return Vec::new() };
        for element in weighted_list(value) {
            let Some(Weighted { value: coding, q, .. }) = element else { return Vec::new() };
            let slot = match coding {
                c if c.eq_ignore_ascii_case("br") => &mut weights[0],
                c if c.eq_ignore_ascii_case("zstd") => &mut weights[1],
                c if c.eq_ignore_ascii_case("gzip") || c.eq_ignore_ascii_case("x-gzip") => &mut weights[2],
                "*" => &mut any,
                _ => continue,
            };
            *slot = Some(slot.map_or(q, |old: u16| old.max(q)));
        }
    }
    let mut accepted: Vec<(u16, Coding)> = Coding::ALL
        .iter()
        .zip(weights)
        .filter_map(|(coding, q)| q.or(any).filter(|q| *q > 0).map(|q| (q, *coding)))
        .collect();
    // Stable: equal weights keep the server's order.
    accepted.sort_by_key(|(q, _)| std::cmp::Reverse(*q));
    accepted.into_iter().map(|(_, coding)| coding).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn validators() -> Validators {
        Validators { etag: "\"abc\"".into(), modified: httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").ok() }
    }

    #[test]
    fn if_none_match_compares_weakly_and_wins_over_if_modified_since() {
        let v = validators();
        assert_eq!(v.evaluate(&headers(&[("if-none-match", "\"abc\"")])), Precondition::NotModified);
        assert_eq!(v.evaluate(&headers(&[("if-none-match", "\"x\", W/\"abc\"")])), Precondition::NotModified);
        assert_eq!(v.evaluate(&headers(&[("if-none-match", "*")])), Precondition::NotModified);
        // A tag that does not match means "modified", whatever the date says.
        let both = headers(&[("if-none-match", "\"old\""), ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")]);
        assert_eq!(v.evaluate(&both), Precondition::Proceed);
        assert_eq!(
            v.evaluate(&headers(&[("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")])),
            Precondition::NotModified
        );
        assert_eq!(
            v.evaluate(&headers(&[("if-modified-since", "Sun, 06 Nov 1994 08:49:36 GMT")])),
            Precondition::Proceed
        );
        assert_eq!(v.evaluate(&headers(&[("if-modified-since", "yesterday")])), Precondition::Proceed);
    }

    #[test]
    fn if_match_compares_strongly_and_comes_first() {
        let v = validators();
        assert_eq!(v.evaluate(&headers(&[("if-match", "\"abc\"")])), Precondition::Proceed);
        assert_eq!(v.evaluate(&headers(&[("if-match", "W/\"abc\"")])), Precondition::Failed);
        assert_eq!(v.evaluate(&headers(&[("if-match", "\"x\""), ("if-none-match", "\"abc\"")])), Precondition::Failed);
        assert_eq!(
            v.evaluate(&headers(&[("if-unmodified-since", "Sun, 06 Nov 1994 08:49:36 GMT")])),
            Precondition::Failed
        );
        // If-Match present: If-Unmodified-Since is not evaluated.
        let both = headers(&[("if-match", "*"), ("if-unmodified-since", "Sun, 06 Nov 1994 08:49:36 GMT")]);
        assert_eq!(v.evaluate(&both), Precondition::Proceed);
    }

    #[test]
    fn if_range_needs_the_same_strong_tag_or_the_exact_date() {
        let v = validators();
        assert!(v.range_applies(&headers(&[])));
        assert!(v.range_applies(&headers(&[("if-range", "\"abc\"")])));
        assert!(!v.range_applies(&headers(&[("if-range", "W/\"abc\"")])));
        assert!(!v.range_applies(&headers(&[("if-range", "\"other\"")])));
        assert!(v.range_applies(&headers(&[("if-range", "Sun, 06 Nov 1994 08:49:37 GMT")])));
        assert!(!v.range_applies(&headers(&[("if-range", "Sun, 06 Nov 1994 08:49:38 GMT")])));
    }

    #[test]
    fn ranges_of_each_form_and_their_edges() {
        let r = |value: &'static str, len| range(&headers(&[("range", value)]), len);
        assert_eq!(r("bytes=0-9", 100), Ranged::Part { start: 0, end: 9 });
        assert_eq!(r("bytes=90-", 100), Ranged::Part { start: 90, end: 99 });
        assert_eq!(r("bytes=-10", 100), Ranged::Part { start: 90, end: 99 });
        assert_eq!(r("bytes=-1000", 100), Ranged::Part { start: 0, end: 99 });
        assert_eq!(r("bytes=50-1000", 100), Ranged::Part { start: 50, end: 99 });
        assert_eq!(r("Bytes = 1-1", 100), Ranged::Part { start: 1, end: 1 });
        assert_eq!(r("bytes=100-", 100), Ranged::Unsatisfiable);
        assert_eq!(r("bytes=100-200", 100), Ranged::Unsatisfiable);
        assert_eq!(r("bytes=-0", 100), Ranged::Unsatisfiable);
        assert_eq!(r("bytes=0-", 0), Ranged::Unsatisfiable);
        for ignored in ["bytes=5-1", "bytes=0-1,5-6", "items=0-1", "bytes=a-b", "bytes=-", "bytes", "bytes=+1-2"] {
            assert_eq!(r(ignored, 100), Ranged::Whole, "{ignored}");
        }
        assert_eq!(range(&headers(&[]), 100), Ranged::Whole);
        assert_eq!(r("bytes=0-18446744073709551615", 10), Ranged::Part { start: 0, end: 9 });
        assert_eq!(r("bytes=0-99999999999999999999999", 10), Ranged::Whole);
    }

    #[test]
    fn codings_follow_the_clients_weights_then_the_servers_order() {
        let c = |value: &'static str| accepted_codings(&headers(&[("accept-encoding", value)]));
        assert_eq!(c("gzip, br"), [Coding::Br, Coding::Gzip]);
        assert_eq!(c("gzip;q=1, br;q=0.5"), [Coding::Gzip, Coding::Br]);
        assert_eq!(c("br;q=0, *"), [Coding::Zstd, Coding::Gzip]);
        assert_eq!(c("identity"), []);
        assert_eq!(c("gzip;q=2"), []);
        assert_eq!(accepted_codings(&headers(&[])), []);
    }
}
