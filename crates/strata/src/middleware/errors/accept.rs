//! Choosing the body's format: the client's `Accept` weights (RFC 9110 §12.5.1) for JSON, plain
//! text and HTML, the most specific media range deciding, ties going to the configured default.

use http::header::HeaderValue;

use crate::http::headers::{Weighted, is_tchar, weighted_list};

use super::ErrorFormat;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Format {
    Json,
    Text,
    Html,
}

/// The client's q (thousandths) for each format this layer can produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Preferences {
    pub(super) json: u16,
    pub(super) text: u16,
    pub(super) html: u16,
}

/// Everything is equally acceptable: what a missing or unparseable `Accept` means.
pub(super) const NO_PREFERENCE: Preferences = Preferences { json: 1000, text: 1000, html: 1000 };

/// One media range of an `Accept` header.
struct MediaRange<'a> {
    kind: &'a str,
    subtype: &'a str,
    q: u16,
}

impl MediaRange<'_> {
    /// How specifically this range names `kind/subtype` (3 exact, 2 `kind/*`, 1 `*/*`), if it does.
    fn specificity(&self, kind: &str, subtype: &str) -> Option<u8> {
        if self.kind == "*" {
            (self.subtype == "*").then_some(1)
        } else if !self.kind.eq_ignore_ascii_case(kind) {
            None
        } else if self.subtype == "*" {
            Some(2)
        } else {
            self.subtype.eq_ignore_ascii_case(subtype).then_some(3)
        }
    }
}

fn parse_accept(value: &str) -> Option<Vec<MediaRange<'_>>> {
    let mut ranges = Vec::new();
    for element in weighted_list(value) {
        // Media type parameters before the weight are allowed; anything after it is an
        // accept-extension, not a media type parameter.
        let Weighted { value: range, q, .. } = element?;
        let (kind, subtype) = range.split_once('/')?;
        let token = |s: &str| !s.is_empty() && s.bytes().all(is_tchar);
        if !token(kind) || !token(subtype) || (kind == "*" && subtype != "*") {
            return None;
        }
        ranges.push(MediaRange { kind, subtype, q });
    }
    Some(ranges)
}

/// The q of the most specific range naming any of `names`; 0 when none does.
fn q_for(ranges: &[MediaRange<'_>], names: &[(&str, &str)]) -> u16 {
    let mut best: Option<(u8, u16)> = None;
    for range in ranges {
        for &(kind, subtype) in names {
            if let Some(s) = range.specificity(kind, subtype) {
                best = match best {
                    Some((bs, bq)) if bs > s || (bs == s && bq >= range.q) => Some((bs, bq)),
                    _ => Some((s, range.q)),
                };
            }
        }
    }
    best.map_or(0, |(_, q)| q)
}

pub(super) fn preferences(accept: Option<&HeaderValue>) -> Preferences {
    let Some(ranges) = accept.and_then(|v| v.to_str().ok()).and_then(parse_accept) else {
        return NO_PREFERENCE;
    };
    if ranges.is_empty() {
        return NO_PREFERENCE;
    }
    Preferences {
        // A client asking for plain JSON can read a problem document: it is JSON.
        json: q_for(&ranges, &[("application", "problem+json"), ("application", "json")]),
        text: q_for(&ranges, &[("text", "plain")]),
        html: q_for(&ranges, &[("text", "html")]),
    }
}

/// The acceptable format with the highest q. Ties go to the default format, then the other one,
/// then the HTML page; when nothing is acceptable, the default format (an error is still sent).
pub(super) fn choose_format(prefs: &Preferences, default: ErrorFormat, has_page: bool) -> Format {
    let order = match default {
        ErrorFormat::Text => [(Format::Text, prefs.text), (Format::Json, prefs.json), (Format::Html, prefs.html)],
        ErrorFormat::Json => [(Format::Json, prefs.json), (Format::Text, prefs.text), (Format::Html, prefs.html)],
    };
    let mut best: Option<(Format, u16)> = None;
    for (format, q) in order {
        if format == Format::Html && !has_page {
            continue;
        }
        if q > 0 && best.is_none_or(|(_, best_q)| q > best_q) {
            best = Some((format, q));
        }
    }
    match best {
        Some((format, _)) => format,
        None if default == ErrorFormat::Json => Format::Json,
        None => Format::Text,
    }
}
