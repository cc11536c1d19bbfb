//! The headers the proxy rewrites on the way through: the hop-by-hop ones it removes, the
//! forwarding ones it adds, and its `Via` element.

use std::net::{IpAddr, SocketAddr};

use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use strata::http::client_ip::write_ip;

use crate::config::ForwardedHeaders;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(super) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// This gateway's `Via` elements, one per protocol version a message can be received in.
pub(super) struct Via {
    pseudonym: Box<str>,
    /// `0.9`, `1.0`, `1.1`, `2`, `3`, each followed by the pseudonym.
    values: [HeaderValue; 5],
}

impl Via {
    pub(super) fn new(pseudonym: &str) -> Option<Via> {
        // The pseudonym was checked to be a token when the config was loaded.
        let value = |version: &str| HeaderValue::from_str(&format!("{version} {pseudonym}")).ok();
        Some(Via {
            pseudonym: pseudonym.into(),
            values: [value("0.9")?, value("1.0")?, value("1.1")?, value("2")?, value("3")?],
        })
    }

    /// The element for a message received in `version` (RFC 9110 §7.6.3: the protocol name is
    /// omitted for HTTP).
    pub(super) fn element(&self, version: Version) -> &HeaderValue {
        let index = match version {
            Version::HTTP_09 => 0,
            Version::HTTP_10 => 1,
            Version::HTTP_2 => 3,
            Version::HTTP_3 => 4,
            _ => 2,
        };
        &self.values[index]
    }

    /// Whether a request's `Via` already names this gateway: it has been here before.
    pub(super) fn has_looped(&self, headers: &HeaderMap) -> bool {
        headers.get_all(header::VIA).iter().any(|value| via_names(value.as_bytes(), &self.pseudonym))
    }
}

/// Whether one `Via` field value has an element received by `pseudonym`:
/// `received-protocol RWS received-by [RWS comment]`, elements separated by commas outside comments.
fn via_names(value: &[u8], pseudonym: &str) -> bool {
    let mut depth = 0usize;
    let mut start = 0;
    for i in 0..=value.len() {
        match value.get(i) {
            Some(b'(') => depth += 1,
            Some(b')') => depth = depth.saturating_sub(1),
            Some(b',') if depth == 0 => {}
            None => {}
            Some(_) => continue,
        }
        if depth == 0 && value.get(i).is_none_or(|&b| b == b',') {
            let mut words = value[start..i].split(|&b| b == b' ' || b == b'\t').filter(|w| !w.is_empty());
            let received_by = words.nth(1);
            if received_by.is_some_and(|by| by.eq_ignore_ascii_case(pseudonym.as_bytes())) {
                return true;
            }
            start = i + 1;
        }
    }
    false
}

/// Appends this hop's element to a message's `Via`: the precomputed value alone when there is
/// none yet (the usual case, no allocation), else one comma-separated line.
pub(super) fn append_via(headers: &mut HeaderMap, element: &HeaderValue) {
    if !headers.contains_key(header::VIA) {
        headers.insert(header::VIA, element.clone());
        return;
    }
    let mut line = Vec::new();
    for value in headers.get_all(header::VIA) {
        line.extend_from_slice(value.as_bytes());
        line.extend_from_slice(b", ");
    }
    line.extend_from_slice(element.as_bytes());
    if let Ok(value) = HeaderValue::from_bytes(&line) {
        headers.insert(header::VIA, value);
    }
}

/// The upstream's response as the client gets it: without hop-by-hop headers (but `Upgrade` when
/// `switching`), with this hop's `Via`.
pub(super) fn response_headers<B>(res: &mut http::Response<B>, switching: bool, via: Option<&Via>) {
    remove_hop_by_hop(res.headers_mut(), switching);
    if let Some(via) = via {
        let element = via.element(res.version());
        append_via(res.headers_mut(), element);
    }
}

pub(super) fn authority_value(authority: &Authority) -> Option<HeaderValue> {
    HeaderValue::from_str(authority.as_str()).ok()
}

/// Whether the request asks to switch protocols (`Connection: upgrade` with an `Upgrade` header).
pub(super) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_options(headers).any(|o| o.eq_ignore_ascii_case("upgrade"))
}

/// The comma-separated options of every `Connection` header, trimmed.
fn connection_options(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers.get_all(header::CONNECTION).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim)
}

/// Removes the headers that describe one connection, not the message (RFC 9110 §7.6.1). With
/// `keep_upgrade`, `Upgrade` stays (the caller sets `Connection: upgrade` again).
///
/// One walk over the names finds what is there: most messages carry none of these headers, or only
/// `Connection`, and every `remove` hashes its name whether or not the header is present.
pub(super) fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let mut present: Vec<HeaderName> = Vec::new();
    let mut connection = false;
    // Whether a `Connection` names more than `keep-alive` or `close`, which are what nearly every
    // message carries: `keep-alive` is removed anyway, `close` names no header. Only then are its
    // options parsed.
    let mut names_headers = false;
    for (name, value) in headers.iter() {
        if name == header::CONNECTION {
            connection = true;
            let value = value.as_bytes();
            names_headers |= !(value.eq_ignore_ascii_case(b"keep-alive") || value.eq_ignore_ascii_case(b"close"));
        } else if is_hop_by_hop(name, keep_upgrade) {
            present.push(name.clone());
        }
    }
    if names_headers {
        // The headers it names are hop-by-hop too.
        // `keep-alive` (its header is in the list already) and `close` are what upstreams send;
        // skipping them saves parsing a name per response.
        let named = connection_options(headers)
            .filter(|o| !o.eq_ignore_ascii_case("keep-alive") && !o.eq_ignore_ascii_case("close"));
        for option in named {
            if let Ok(name) = HeaderName::from_bytes(option.as_bytes())
                && !(keep_upgrade && name == header::UPGRADE)
                && !present.contains(&name)
            {
                present.push(name);
            }
        }
    }
    if connection {
        headers.remove(header::CONNECTION);
    }
    for name in present {
        headers.remove(name);
    }
}

/// The hop-by-hop headers every message loses; `Proxy-Authorization`, `Proxy-Connection`, … are
/// meant for a proxy, which the gateway is.
fn is_hop_by_hop(name: &HeaderName, keep_upgrade: bool) -> bool {
    // By length first: every message's every header name passes here, and few have these lengths.
    let name = name.as_str();
    let listed = match name.len() {
        2 => name == "te",
        7 => name == "trailer" || (name == "upgrade" && !keep_upgrade),
        10 => name == "keep-alive",
        17 => name == "transfer-encoding",
        _ => false,
    };
    listed || name.starts_with("proxy-")
}

/// Adds the forwarding headers the route asks for.
///
/// From a trusted proxy (`[server] trusted_proxies`), the incoming headers describe the hops before
/// it: `X-Forwarded-For` and `Forwarded` are appended to, and its `X-Forwarded-Proto` and
/// `X-Forwarded-Host` are kept (a TLS-terminating load balancer says `https`, and the upstream must
/// build `https` links). From anyone else they are the client's unverifiable claim: all of them are
/// dropped, so an upstream that believes them cannot be fooled, and this hop's own values replace
/// them. A route with `forwarded = "none"` sends none at all. The peer is the TCP peer; `secure`:
/// it connected over TLS (`proto=https`).
pub(super) fn add_forwarding(
    headers: &mut HeaderMap,
    mode: ForwardedHeaders,
    peer: Option<SocketAddr>,
    secure: bool,
    from_trusted_proxy: bool,
    host: Option<&HeaderValue>,
) {
    // Which of the forwarding headers the request has: one walk over the names, instead of a
    // hashed lookup per header (a clean request, the usual case, has none).
    let (mut has_for, mut has_proto, mut has_host) = (false, false, false);
    let mut claimed: Vec<HeaderName> = Vec::new();
    let replace = !from_trusted_proxy || mode == ForwardedHeaders::None;
    for name in headers.keys() {
        let known = if *name == X_FORWARDED_FOR {
            &mut has_for
        } else if *name == X_FORWARDED_PROTO {
            &mut has_proto
        } else if *name == X_FORWARDED_HOST {
            &mut has_host
        } else if *name == header::FORWARDED {
            &mut false
        } else {
            continue;
        };
        if replace {
            // From anyone but a trusted proxy they are dropped, whichever are there.
            claimed.push(name.clone());
        } else {
            *known = true;
        }
    }
    for name in claimed {
        headers.remove(name);
    }
    let ip = peer.map(|p| p.ip());
    if matches!(mode, ForwardedHeaders::XForwarded | ForwardedHeaders::Both) {
        if let Some(ip) = ip {
            if has_for {
                append_list(headers, X_FORWARDED_FOR, &ip.to_string());
            } else {
                headers.insert(X_FORWARDED_FOR, ip_value(ip));
            }
        }
        if !has_proto {
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(if secure { "https" } else { "http" }));
        }
        if let Some(host) = host.filter(|_| !has_host) {
            headers.insert(X_FORWARDED_HOST, host.clone());
        }
    }
    if matches!(mode, ForwardedHeaders::Forwarded | ForwardedHeaders::Both) {
        append_list(headers, header::FORWARDED, &forwarded_element(ip, secure, host));
    }
}

/// An address as a header value, written without the formatting machinery for IPv4.
fn ip_value(ip: IpAddr) -> HeaderValue {
    let mut text = Vec::with_capacity(39);
    write_ip(&mut text, ip);
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).unwrap_or(HeaderValue::from_static("unknown"))
}

/// One RFC 7239 element: `for=192.0.2.1;proto=http;host=example.com`, IPv6 and ports quoted.
fn forwarded_element(ip: Option<IpAddr>, secure: bool, host: Option<&HeaderValue>) -> String {
    let mut element = match ip {
        Some(IpAddr::V4(v4)) => format!("for={v4};"),
        Some(IpAddr::V6(v6)) => format!("for=\"[{v6}]\";"),
        None => String::new(),
    };
    element.push_str(if secure { "proto=https" } else { "proto=http" });
    // A host that would need escaping is left out rather than risk breaking the header's syntax.
    if let Some(host) = host
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~:[]".contains(&b)))
    {
        if host.contains(':') {
            element.push_str(&format!(";host=\"{host}\""));
        } else {
            element.push_str(&format!(";host={host}"));
        }
    }
    element
}

/// Appends `item` to a comma-separated header, folding repeated headers into one line.
fn append_list(headers: &mut HeaderMap, name: HeaderName, item: &str) {
    let existing: Vec<&str> = headers.get_all(&name).iter().filter_map(|v| v.to_str().ok()).collect();
    let value = if existing.is_empty() { item.to_string() } else { format!("{}, {item}", existing.join(", ")) };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for octets in [[0, 0, 0, 0], [127, 0, 0, 1], [9, 10, 99, 100], [255, 254, 200, 101], [192, 0, 2, 7]] {
            let ip = IpAddr::from(octets);
            assert_eq!(ip_value(ip).to_str().unwrap(), ip.to_string());
        }
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(ip_value(v6).to_str().unwrap(), "2001:db8::1");
    }

    #[test]
    fn hop_by_hop_headers_go_and_end_to_end_ones_stay() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret-hop"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::PROXY_AUTHORIZATION, HeaderValue::from_static("Basic eA=="));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        // As long as `upgrade` and `keep-alive`: the prefix still says it is for the proxy.
        h.insert("proxy-x", HeaderValue::from_static("1"));
        h.insert("proxy-abcd", HeaderValue::from_static("1"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert("x-request-id", HeaderValue::from_static("abc"));
        remove_hop_by_hop(&mut h, false);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-request-id"]);
    }

    #[test]
    fn upgrades_keep_their_upgrade_header() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert!(!h.contains_key(header::CONNECTION));
        let mut plain = HeaderMap::new();
        plain.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!is_upgrade(&plain), "Upgrade without Connection: upgrade is not a request to switch");
    }

    /// What a client or a proxy in front of strata might send.
    fn incoming_forwarding_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.1"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("198.51.100.2"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(X_FORWARDED_HOST, HeaderValue::from_static("public.example"));
        h.insert(header::FORWARDED, HeaderValue::from_static("for=203.0.113.1"));
        h
    }

    #[test]
    fn forwarding_headers_from_a_trusted_proxy_are_extended() {
        let peer: SocketAddr = "192.0.2.7:5555".parse().unwrap();
        let host = HeaderValue::from_static("app.example:8080");
        let mut h = incoming_forwarding_headers();
        add_forwarding(&mut h, ForwardedHeaders::Both, Some(peer), false, true, Some(&host));
        assert_eq!(h[X_FORWARDED_FOR], "203.0.113.1, 198.51.100.2, 192.0.2.7");
        assert_eq!(h[X_FORWARDED_PROTO], "https", "the TLS-terminating proxy's word is kept");
        assert_eq!(h[X_FORWARDED_HOST], "public.example");
        assert_eq!(h[header::FORWARDED], "for=203.0.113.1, for=192.0.2.7;proto=http;host=\"app.example:8080\"");
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(forwarded_element(Some(v6.ip()), false, None), "for=\"[::1]\";proto=http");
        assert_eq!(forwarded_element(Some(v6.ip()), true, None), "for=\"[::1]\";proto=https");
        let mut none = incoming_forwarding_headers();
        add_forwarding(&mut none, ForwardedHeaders::None, Some(peer), false, true, Some(&host));
        assert!(none.is_empty(), "forwarded = \"none\" sends none: {none:?}");
    }

    #[test]
    fn forwarding_headers_from_anyone_else_are_replaced() {
        let peer: SocketAddr = "192.0.2.7:5555".parse().unwrap();
        let host = HeaderValue::from_static("app.example:8080");
        let mut h = incoming_forwarding_headers();
        add_forwarding(&mut h, ForwardedHeaders::Both, Some(peer), false, false, Some(&host));
        assert_eq!(h[X_FORWARDED_FOR], "192.0.2.7");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(h[X_FORWARDED_HOST], "app.example:8080");
        assert_eq!(h[header::FORWARDED], "for=192.0.2.7;proto=http;host=\"app.example:8080\"");
        // Over TLS this hop says `https`, whatever the client claimed.
        let mut h = incoming_forwarding_headers();
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        add_forwarding(&mut h, ForwardedHeaders::Both, Some(peer), true, false, Some(&host));
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[header::FORWARDED], "for=192.0.2.7;proto=https;host=\"app.example:8080\"");
        // A route that sends none still drops the client's claims.
        let mut h = incoming_forwarding_headers();
        add_forwarding(&mut h, ForwardedHeaders::None, Some(peer), false, false, Some(&host));
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn via_elements_are_found_in_any_position_and_not_inside_comments() {
        assert!(via_names(b"1.1 strata", "strata"));
        assert!(via_names(b"1.0 fred, 1.1 nginx,1.1 Strata (front)", "strata"));
        assert!(via_names(b"HTTP/2 strata", "strata"));
        assert!(!via_names(b"1.1 strata-edge, 1.1 example.com:8080", "strata"));
        assert!(!via_names(b"1.1 nginx (with, 1.1 strata inside a comment)", "strata"));
        assert!(!via_names(b"strata", "strata"), "the first word is the protocol, not the name");
        assert!(!via_names(b"", "strata"));
    }

    #[test]
    fn via_is_appended_as_one_list() {
        let via = Via::new("edge").unwrap();
        assert_eq!(via.element(Version::HTTP_10), "1.0 edge");
        assert_eq!(via.element(Version::HTTP_11), "1.1 edge");
        assert_eq!(via.element(Version::HTTP_2), "2 edge");
        let mut h = HeaderMap::new();
        append_via(&mut h, via.element(Version::HTTP_11));
        assert_eq!(h[header::VIA], "1.1 edge");
        let mut h = HeaderMap::new();
        h.append(header::VIA, HeaderValue::from_static("1.0 fred"));
        h.append(header::VIA, HeaderValue::from_static("1.1 nginx"));
        append_via(&mut h, via.element(Version::HTTP_2));
        assert_eq!(h.get_all(header::VIA).iter().collect::<Vec<_>>(), ["1.0 fred, 1.1 nginx, 2 edge"]);
    }
}
