//! The method and header lists: compiled from the builder's typed values into precomputed header
//! values, or mirrored from a preflight's request headers.

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::middleware::ConfigError;

/// One header value listing `methods`, without duplicates; an error for an empty list.
pub(super) fn method_list(methods: &[Method]) -> Result<HeaderValue, ConfigError> {
    if methods.is_empty() {
        return Err(ConfigError::field("allow_methods", "at least one method, e.g. [\"GET\", \"POST\"], or \"*\""));
    }
    let mut names: Vec<&str> = Vec::with_capacity(methods.len());
    for method in methods {
        if !names.contains(&method.as_str()) {
            names.push(method.as_str());
        }
    }
    // A `Method` is always an HTTP token, so the joined list is a valid value.
    HeaderValue::from_str(&names.join(", "))
        .map_err(|_| ConfigError::field("allow_methods", "methods must be HTTP tokens"))
}

/// A comma-separated, lowercase header value of `names` without duplicates, or `None` for an
/// empty list.
pub(super) fn header_list(names: &[HeaderName]) -> Option<HeaderValue> {
    let mut unique: Vec<&str> = Vec::with_capacity(names.len());
    for name in names {
        if !unique.contains(&name.as_str()) {
            unique.push(name.as_str());
        }
    }
    if unique.is_empty() {
        return None;
    }
    // Header names are lowercase tokens, so the joined list is a valid value.
    HeaderValue::from_str(&unique.join(", ")).ok()
}

/// The request header's values joined with `, ` (a header may arrive on several lines).
pub(super) fn mirror(headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let mut joined = first.as_bytes().to_vec();
    for v in values {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(v.as_bytes());
    }
    HeaderValue::from_bytes(&joined).ok()
}
