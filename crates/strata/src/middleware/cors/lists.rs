//! The method and header lists: compiled from the config into precomputed header values, or
//! mirrored from a preflight's request headers.

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::middleware::ConfigError;

use super::Allowed;

/// `Ok(true)` for `["*"]`; an error for `"*"` mixed with names.
pub(super) fn wildcard(field: &'static str, list: &[String]) -> Result<bool, ConfigError> {
    match list.iter().any(|v| v == "*") {
        true if list.len() == 1 => Ok(true),
        true => Err(ConfigError::field(field, "`\"*\"` cannot be combined with other entries")),
        false => Ok(false),
    }
}

pub(super) fn compile_methods(list: &[String]) -> Result<Allowed, ConfigError> {
    if wildcard("allow_methods", list)? {
        return Ok(Allowed::Mirror);
    }
    if list.is_empty() {
        return Err(ConfigError::field("allow_methods", "at least one method, e.g. [\"GET\", \"POST\"], or \"*\""));
    }
    const STANDARD: [&str; 7] = ["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"];
    let mut names = Vec::with_capacity(list.len());
    for raw in list {
        // Methods are case-sensitive, but browsers upper-case only the standard ones: accept
        // `put` for `PUT` rather than silently never matching.
        let name = match STANDARD.iter().find(|s| s.eq_ignore_ascii_case(raw)) {
            Some(s) => (*s).to_string(),
            None => raw.clone(),
        };
        Method::from_bytes(name.as_bytes())
            .map_err(|_| ConfigError::field("allow_methods", format!("`{raw}` is not an HTTP method")))?;
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let value = HeaderValue::from_str(&names.join(", "))
        .map_err(|_| ConfigError::field("allow_methods", "methods must be HTTP tokens"))?;
    Ok(Allowed::List(Some(value)))
}

/// A comma-separated, lowercase header value of validated names, or `None` for an empty list.
pub(super) fn header_list(field: &'static str, list: &[String]) -> Result<Option<HeaderValue>, ConfigError> {
    let mut names: Vec<HeaderName> = Vec::with_capacity(list.len());
    for raw in list {
        let name = HeaderName::from_bytes(raw.trim().as_bytes())
            .map_err(|_| ConfigError::field(field, format!("`{raw}` is not a header name")))?;
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        return Ok(None);
    }
    let joined = names.iter().map(HeaderName::as_str).collect::<Vec<_>>().join(", ");
    HeaderValue::from_str(&joined).map(Some).map_err(|_| ConfigError::field(field, "header names must be tokens"))
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
