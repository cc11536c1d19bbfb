//! The real client IP behind trusted proxies: one resolver for every layer that keys, logs or
//! filters by address.
//!
//! The TCP peer is the client unless it is a proxy strata trusts. Then the client is the right-most
//! hop of the forwarding header that is not itself a trusted proxy: each trusted proxy appends the
//! address it received the request from, so walking from the right, the first untrusted address is
//! the last one a trusted proxy vouched for. Everything to its left was written by the client and may
//! be forged. Headers from untrusted peers are ignored entirely.
//!
//! Only one forwarding header is read ([`ForwardedHeader`]): a proxy rewrites the one it knows and
//! passes the other through untouched, so reading both would let a client forge its address in the
//! header the proxy does not manage.
//!
//! ```
//! use std::net::IpAddr;
//! use strata::http::client_ip::{TrustedProxies, client_ip};
//!
//! let trusted = TrustedProxies::parse(["10.0.0.0/8"]).unwrap();
//! let mut headers = http::HeaderMap::new();
//! headers.insert("x-forwarded-for", "198.51.100.9, 203.0.113.5, 10.1.2.3".parse().unwrap());
//! let peer: IpAddr = "10.0.0.1".parse().unwrap();
//! // 10.1.2.3 is another trusted proxy; 203.0.113.5 is the first untrusted hop from the right.
//! assert_eq!(client_ip(peer, &headers, &trusted), "203.0.113.5".parse::<IpAddr>().unwrap());
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::HeaderMap;

/// Which forwarding header trusted proxies set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (what most proxies and load balancers set).
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

impl ForwardedHeader {
    /// Parses `"x-forwarded-for"` or `"forwarded"` (any case).
    pub fn parse(text: &str) -> Option<Self> {
        if text.eq_ignore_ascii_case("x-forwarded-for") {
            Some(ForwardedHeader::XForwardedFor)
        } else if text.eq_ignore_ascii_case("forwarded") {
            Some(ForwardedHeader::Forwarded)
        } else {
            None
        }
    }
}

/// One parsed CIDR block, e.g. `10.0.0.0/8` or `::1/128`; a bare address is that one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr(Block);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    V4 { network: u32, mask: u32 },
    V6 { network: u128, mask: u128 },
}

impl Cidr {
    /// Parses `"10.0.0.0/8"`, `"::1/128"` or a bare address; `None` when it is neither.
    pub fn parse(text: &str) -> Option<Cidr> {
        let text = text.trim();
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
            None => (text, None),
        };
        match addr.parse::<IpAddr>().ok()?.to_canonical() {
            IpAddr::V4(a) => {
                let len = len.unwrap_or(32);
                if len > 32 {
                    return None;
                }
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                Some(Cidr(Block::V4 { network: u32::from(a) & mask, mask }))
            }
            IpAddr::V6(a) => {
                let len = len.unwrap_or(128);
                if len > 128 {
                    return None;
                }
                let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
                Some(Cidr(Block::V6 { network: u128::from(a) & mask, mask }))
            }
        }
    }

    /// The block's first address (`10.0.0.0` for `10.0.0.0/8`).
    pub fn network(self) -> IpAddr {
        match self.0 {
            Block::V4 { network, .. } => IpAddr::V4(network.into()),
            Block::V6 { network, .. } => IpAddr::V6(network.into()),
        }
    }

    /// The block's prefix length (`8` for `10.0.0.0/8`, `32` or `128` for one address).
    pub fn prefix_len(self) -> u8 {
        // A mask is a run of leading ones: at most 128, so the count fits.
        match self.0 {
            Block::V4 { mask, .. } => mask.leading_ones() as u8,
            Block::V6 { mask, .. } => mask.leading_ones() as u8,
        }
    }

    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(self, ip: IpAddr) -> bool {
        match (self.0, ip.to_canonical()) {
            (Block::V4 { network, mask }, IpAddr::V4(a)) => u32::from(a) & mask == network,
            (Block::V6 { network, mask }, IpAddr::V6(a)) => u128::from(a) & mask == network,
            _ => false,
        }
    }
}

/// A CIDR that did not parse: its position in the list and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CidrError {
    /// The 0-based index of the entry in the list given to [`TrustedProxies::parse`].
    pub index: usize,
    /// The entry as written.
    pub text: String,
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not an IP address or CIDR block: expected e.g. \"10.0.0.0/8\", \"127.0.0.1/32\" or \"::1/128\"",
            self.text
        )
    }
}

impl std::error::Error for CidrError {}

/// The proxies whose forwarding headers strata believes, and which header they set.
///
/// Empty by default: the TCP peer is the client and forwarding headers are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    blocks: Vec<Cidr>,
    header: ForwardedHeader,
}

impl TrustedProxies {
    /// No trusted proxies: the peer address is always the client.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses CIDR blocks (`"10.0.0.0/8"`); a bare address means that one address.
    pub fn parse<I, S>(cidrs: I) -> Result<Self, CidrError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let blocks = cidrs
            .into_iter()
            .enumerate()
            .map(|(index, s)| Cidr::parse(s.as_ref()).ok_or_else(|| CidrError { index, text: s.as_ref().to_string() }))
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies { blocks, header: ForwardedHeader::default() })
    }

    /// Reads `header` instead of the default `X-Forwarded-For`.
    pub fn reading(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// The forwarding header trusted proxies set.
    pub fn header(&self) -> ForwardedHeader {
        self.header
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Whether `ip` is a trusted proxy (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.blocks.iter().any(|b| b.contains(ip))
    }
}

/// The client's address: `peer` itself unless `peer` is a trusted proxy, then the right-most hop of
/// the forwarding header that is not a trusted proxy.
///
/// When every hop is trusted, the left-most one is the client. A hop that is not an address
/// (`unknown`, an obfuscated identifier, garbage) ends the walk: the trusted proxy to its right is
/// the furthest address anyone can vouch for. Malformed headers never panic.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    let mut client = peer;
    match trusted.header {
        ForwardedHeader::XForwardedFor => {
            let hops =
                headers.get_all("x-forwarded-for").iter().rev().flat_map(|v| v.as_bytes().rsplit(|b| *b == b','));
            walk(hops, trusted, &mut client);
        }
        ForwardedHeader::Forwarded => {
            let hops = headers
                .get_all("forwarded")
                .iter()
                .rev()
                .flat_map(|v| split_unquoted(v.as_bytes(), b',').into_iter().rev())
                .map(forwarded_for);
            walk(hops, trusted, &mut client);
        }
    }
    client
}

/// Moves `client` left through `hops` (right-most first) while the current client is trusted.
fn walk<'a>(hops: impl Iterator<Item = &'a [u8]>, trusted: &TrustedProxies, client: &mut IpAddr) {
    for hop in hops {
        if !trusted.contains(*client) {
            return;
        }
        match parse_hop(hop) {
            Some(ip) => *client = ip,
            None => return,
        }
    }
}

/// `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]`, `[::1]:80`, with optional quotes and spaces.
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(hop).ok()?.trim().trim_matches('"');
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    // `[v6]` without a port (with one, it parsed as a socket address above).
    let inner = text.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<Ipv6Addr>().ok().map(|a| IpAddr::V6(a).to_canonical())
}

/// The `for=` value of one `Forwarded` element (`for=1.2.3.4;proto=https`), or an empty slice.
fn forwarded_for(element: &[u8]) -> &[u8] {
    for pair in split_unquoted(element, b';') {
        let pair = pair.trim_ascii();
        if pair.len() > 4 && pair[..4].eq_ignore_ascii_case(b"for=") {
            return &pair[4..];
        }
    }
    &[]
}

/// Splits on `sep` outside double quotes (`for="[::1]:80"` may hold separators in theory).
fn split_unquoted(bytes: &[u8], sep: u8) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, b) in bytes.iter().enumerate() {
        match *b {
            b'"' => quoted = !quoted,
            b if b == sep && !quoted => {
                parts.push(&bytes[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&bytes[start..]);
    parts
}

/// Appends `ip` as `Display` writes it. IPv4, the common case, is written digit by digit: the
/// access log and the proxy's `X-Forwarded-For` write an address for every request, and `Display`
/// goes through the formatting machinery.
pub fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let v4 = [[0, 0, 0, 0], [127, 0, 0, 1], [9, 10, 99, 100], [255, 254, 200, 101]].map(IpAddr::from);
        for ip in v4.into_iter().chain([v6]) {
            let mut out = b"x=".to_vec();
            write_ip(&mut out, ip);
            assert_eq!(String::from_utf8(out).unwrap(), format!("x={ip}"));
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(name: &str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn cidrs_parse_and_match() {
        let t = TrustedProxies::parse(["10.0.0.0/8", "127.0.0.1/32", "::1", "fd00::/8", "192.168.1.7"]).unwrap();
        assert!(t.contains(ip("10.255.0.1")) && !t.contains(ip("11.0.0.1")));
        assert!(t.contains(ip("127.0.0.1")) && !t.contains(ip("127.0.0.2")));
        assert!(t.contains(ip("::1")) && t.contains(ip("fd12::5")) && !t.contains(ip("fe80::1")));
        assert!(t.contains(ip("::ffff:10.1.1.1")), "IPv4-mapped addresses match IPv4 blocks");
        assert!(t.contains(ip("192.168.1.7")) && !t.contains(ip("192.168.1.8")));
        assert!(TrustedProxies::parse(["0.0.0.0/0"]).unwrap().contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "10.0.0/8", "localhost", "::1/129", "", "10.0.0.0/x"] {
            let e = TrustedProxies::parse(["10.0.0.0/8", bad]).unwrap_err();
            assert_eq!(e.index, 1, "{bad}");
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let t = TrustedProxies::parse(["10.0.0.0/8"]).unwrap();
        let h = headers("x-forwarded-for", &["1.2.3.4"]);
        assert_eq!(client_ip(ip("203.0.113.1"), &h, &t), ip("203.0.113.1"));
        assert_eq!(client_ip(ip("203.0.113.1"), &h, &TrustedProxies::none()), ip("203.0.113.1"));
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let t = TrustedProxies::parse(["10.0.0.0/8"]).unwrap();
        // The client forged "6.6.6.6"; the trusted proxy appended what it saw: 1.2.3.4.
        let h = headers("x-forwarded-for", &["6.6.6.6, 1.2.3.4, 10.0.0.9"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("1.2.3.4"));
        // Several header lines are one list, in order.
        let h = headers("x-forwarded-for", &["6.6.6.6", "1.2.3.4", "10.0.0.9"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("1.2.3.4"));
        // All hops trusted: the left-most is the client.
        let h = headers("x-forwarded-for", &["10.9.9.9, 10.0.0.9"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("10.9.9.9"));
        // No header from a trusted peer: the peer.
        assert_eq!(client_ip(ip("10.0.0.1"), &HeaderMap::new(), &t), ip("10.0.0.1"));
        // Ports and brackets are tolerated.
        let h = headers("x-forwarded-for", &["[2001:db8::1]:443, 1.2.3.4:5678"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("1.2.3.4"));
    }

    #[test]
    fn malformed_hops_stop_at_the_last_trusted_address() {
        let t = TrustedProxies::parse(["10.0.0.0/8"]).unwrap();
        for garbage in ["unknown", "", ",,,", "1.2.3.4.5", "[::1", "\"", "for=", "💥"] {
            let value = format!("{garbage}, 10.0.0.9");
            let Ok(v) = http::HeaderValue::from_bytes(value.as_bytes()) else { continue };
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-for", v);
            assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("10.0.0.9"), "{garbage:?}");
        }
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", http::HeaderValue::from_bytes(b"\xff\xfe, 10.0.0.9").unwrap());
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("10.0.0.9"));
    }

    #[test]
    fn forwarded_is_read_when_chosen_and_only_then() {
        let t =
            TrustedProxies::parse(["10.0.0.0/8", "2001:db8:cafe::/48"]).unwrap().reading(ForwardedHeader::Forwarded);
        let h =
            headers("forwarded", &["for=6.6.6.6", "For=\"[2001:db8::17]:4711\";proto=https, for=10.0.0.3;by=10.0.0.1"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("2001:db8::17"));
        let h = headers("forwarded", &["for=192.0.2.60:8080;proto=http, for=_hidden"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("10.0.0.1"), "an obfuscated hop is not an address");
        // X-Forwarded-For is ignored when Forwarded is the chosen header, and vice versa.
        let h = headers("x-forwarded-for", &["1.2.3.4"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("10.0.0.1"));
        let xff = TrustedProxies::parse(["10.0.0.0/8"]).unwrap();
        let h = headers("forwarded", &["for=1.2.3.4"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &xff), ip("10.0.0.1"));
    }

    #[test]
    fn header_names_parse() {
        assert_eq!(ForwardedHeader::parse("X-Forwarded-For"), Some(ForwardedHeader::XForwardedFor));
        assert_eq!(ForwardedHeader::parse("forwarded"), Some(ForwardedHeader::Forwarded));
        assert_eq!(ForwardedHeader::parse("x-real-ip"), None);
    }
}
