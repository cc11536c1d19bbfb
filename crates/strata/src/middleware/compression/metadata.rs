//! The response metadata compression reads and rewrites: content type, `Cache-Control: no-transform`,
//! `Content-Length`, and the entity tags of `ETag` and `If-None-Match`.

use http::header::{self, HeaderMap, HeaderValue};

use crate::http::headers::is_ows;

/// `type/subtype` of a Content-Type value, without parameters or surrounding whitespace.
pub(super) fn media_essence(value: &str) -> &str {
    value.split(';').next().unwrap_or_default().trim_matches(is_ows)
}

pub(super) fn has_no_transform(value: &HeaderValue) -> bool {
    value.to_str().is_ok_and(|v| {
        v.split(',').any(|d| d.split('=').next().unwrap_or_default().trim().eq_ignore_ascii_case("no-transform"))
    })
}

/// `Content-Length` as a number, when there is exactly one valid value.
pub(super) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok()?.trim().parse().ok()
}

/// The entity tags of an `If-None-Match` value: (weak, the quoted tag with its quotes). Parsing stops
/// at the first element that is not an entity tag (`*` included: it needs no help).
///
/// Quotes are followed rather than splitting at commas: a comma may appear inside a tag.
pub(super) fn entity_tags(value: &[u8]) -> impl Iterator<Item = (bool, &[u8])> + Clone {
    let mut rest = value;
    std::iter::from_fn(move || {
        let start = rest.iter().position(|&b| !(b == b',' || is_ows(b as char)))?;
        rest = &rest[start..];
        let weak = rest.starts_with(b"W/");
        let tag = if weak { &rest[2..] } else { rest };
        if tag.first() != Some(&b'"') {
            rest = &[];
            return None;
        }
        let end = tag[1..].iter().position(|&b| b == b'"')? + 2;
        rest = &tag[end..];
        Some((weak, &tag[..end]))
    })
}

/// `If-None-Match` with the strong form of each weak tag added after it, or `None` when it has no
/// weak tag lacking one (the usual case: nothing is allocated).
pub(super) fn with_strong_forms(value: &HeaderValue) -> Option<HeaderValue> {
    let bytes = value.as_bytes();
    let tags = entity_tags(bytes);
    let missing = |tag: &[u8]| !tags.clone().any(|(weak, t)| !weak && t == tag);
    if !tags.clone().any(|(weak, tag)| weak && missing(tag)) {
        return None;
    }
    let mut out = bytes.to_vec();
    let mut added: Vec<&[u8]> = Vec::new();
    for (_, tag) in tags.clone().filter(|&(weak, tag)| weak && missing(tag)) {
        if !added.contains(&tag) {
            out.extend_from_slice(b", ");
            out.extend_from_slice(tag);
            added.push(tag);
        }
    }
    HeaderValue::from_bytes(&out).ok()
}

/// A strong validator names exact bytes, which compression changes: `"x"` becomes `W/"x"`.
pub(super) fn weaken_etag(headers: &mut HeaderMap) {
    let Some(etag) = headers.get(header::ETAG) else { return };
    if !etag.as_bytes().starts_with(b"\"") {
        return;
    }
    let mut weak = Vec::with_capacity(etag.len() + 2);
    weak.extend_from_slice(b"W/");
    weak.extend_from_slice(etag.as_bytes());
    match HeaderValue::from_bytes(&weak) {
        Ok(weak) => {
            headers.insert(header::ETAG, weak);
        }
        // Better no validator than a strong one that lies about the bytes.
        Err(_) => {
            headers.remove(header::ETAG);
        }
    }
}
