//! `ip_filter`: which client addresses may reach the layers inside it, as `allow` and `deny` lists
//! of CIDR blocks. Anything else gets `403 Forbidden`.
//!
//! ```
//! use strata::http::client_ip::Cidr;
//! use strata::http::{Request, Response, Stack};
//! use strata::middleware::IpFilter;
//!
//! let cidr = |text| Cidr::parse(text).expect("a CIDR block");
//! // The office network, except its guest Wi-Fi.
//! let filter = IpFilter::builder().allow(cidr("10.0.0.0/8")).deny(cidr("10.99.0.0/16")).build()?;
//! assert!(filter.allows("10.1.2.3".parse().unwrap()));
//! assert!(!filter.allows("10.99.0.7".parse().unwrap()));
//! assert!(!filter.allows("192.0.2.1".parse().unwrap()));
//! let service = Stack::new().with(filter).serve(|_req: Request| async { Response::new("inside".into()) });
//! # let _ = service;
//! # Ok::<(), strata::middleware::ConfigError>(())
//! ```
//!
//! The rules, in the order they apply (clearer than nginx's first-match list, where the order of
//! the lines decides):
//!
//! 1. **A request without a client address is refused** (fail closed): no
//!    [`ConnectionInfo`] in its extensions means the filter cannot tell who is calling. Servers set
//!    it for stacks with this layer (`strata::serve` and the gateway do); a stack served some other
//!    way must insert it, or every request is refused.
//! 2. **Deny wins**: an address in `deny` is refused, whatever `allow` says.
//! 3. **With an allow list, anything not in it is refused.** Without one (only `deny`), every
//!    address not denied passes.
//!
//! The address filtered is [`ConnectionInfo::client`]: the TCP peer, or, when the peer is one of
//! the server's trusted proxies, the client its forwarding header names (see
//! [`crate::http::client_ip`]). An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, what a dual-stack
//! socket reports) is the IPv4 address: `192.0.2.0/24` matches it.
//!
//! The refusal is a `403` marked [`GeneratedError`] (an `errors` layer outside formats it) and
//! [`Refusal`] (the reason names the rule and the address, for logs and `strata explain`).
//!
//! The lists are merged into sorted, disjoint address ranges when the layer is built: a lookup is a
//! binary search, so a list of thousands of blocks costs a few comparisons more than a list of one.
//!
//! With the `config` feature, `IpFilterConfig` is the gateway's `kind = "ip_filter"` table
//! (`allow = ["10.0.0.0/8"]`, `deny = ["10.99.0.0/16"]`) and `IpFilter::from_config` maps it onto
//! the builder.

use std::net::IpAddr;

use http::{StatusCode, header};

use super::ConfigError;
use crate::Middleware;
use crate::check::{Fact, Facts};
use crate::http::client_ip::Cidr;
use crate::http::{ConnectionInfo, GeneratedError, Next, Refusal, Request, Response, response};

/// What clients are told.
const DETAIL: &str = "Requests from this address are not allowed.";
/// The body for stacks without an `errors` layer (which replaces it).
const BODY: &str = "403 Forbidden\n\nRequests from this address are not allowed.\n";

/// The `ip_filter` middleware. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct IpFilter {
    /// `None`: no allow list, every address not denied passes.
    allow: Option<Ranges>,
    deny: Ranges,
}

impl IpFilter {
    /// Starts an [`IpFilterBuilder`] with empty lists.
    pub fn builder() -> IpFilterBuilder {
        IpFilterBuilder::default()
    }

    /// Whether a request from `client` passes the lists (deny first, then the allow list if any).
    pub fn allows(&self, client: IpAddr) -> bool {
        self.verdict(client.to_canonical()).is_none()
    }

    /// `None` when `client` passes, else which list refused it.
    fn verdict(&self, client: IpAddr) -> Option<&'static str> {
        if self.deny.contains(client) {
            return Some("is in deny");
        }
        match &self.allow {
            Some(allow) if !allow.contains(client) => Some("is not in allow"),
            _ => None,
        }
    }
}

/// The typed lists of an [`IpFilter`]; [`IpFilterBuilder::build`] validates them and merges each
/// into sorted ranges.
#[derive(Clone, Debug, Default)]
pub struct IpFilterBuilder {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
}

impl IpFilterBuilder {
    /// Allows one more block. With at least one allowed block, addresses in none are refused.
    pub fn allow(mut self, cidr: Cidr) -> Self {
        self.allow.push(cidr);
        self
    }

    /// Allows each of `cidrs` (added to those already allowed).
    pub fn allow_cidrs(mut self, cidrs: impl IntoIterator<Item = Cidr>) -> Self {
        self.allow.extend(cidrs);
        self
    }

    /// Denies one more block: its addresses are refused even when an allowed block holds them.
    pub fn deny(mut self, cidr: Cidr) -> Self {
        self.deny.push(cidr);
        self
    }

    /// Denies each of `cidrs` (added to those already denied).
    pub fn deny_cidrs(mut self, cidrs: impl IntoIterator<Item = Cidr>) -> Self {
        self.deny.extend(cidrs);
        self
    }

    /// Merges the lists into sorted, disjoint ranges. Fails when both are empty: such a filter
    /// would pass everything, which is never what a config that names it means.
    pub fn build(self) -> Result<IpFilter, ConfigError> {
        if self.allow.is_empty() && self.deny.is_empty() {
            return Err(ConfigError::new(
                "an ip_filter needs `allow`, `deny` or both: e.g. allow = [\"10.0.0.0/8\"], deny = [\"10.99.0.0/16\"]",
            ));
        }
        let allow = if self.allow.is_empty() { None } else { Some(Ranges::new(&self.allow)) };
        Ok(IpFilter { allow, deny: Ranges::new(&self.deny) })
    }
}

/// A list of blocks as sorted, disjoint, non-adjacent ranges of addresses, one list per family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Ranges {
    v4: Box<[(u32, u32)]>,
    v6: Box<[(u128, u128)]>,
}

impl Ranges {
    fn new(cidrs: &[Cidr]) -> Ranges {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for cidr in cidrs {
            let len = u32::from(cidr.prefix_len());
            match cidr.network() {
                IpAddr::V4(network) => {
                    let first = u32::from(network);
                    v4.push((first, first | u32::MAX.checked_shr(len).unwrap_or(0)));
                }
                IpAddr::V6(network) => {
                    let first = u128::from(network);
                    v6.push((first, first | u128::MAX.checked_shr(len).unwrap_or(0)));
                }
            }
        }
        Ranges { v4: merge(v4, |n| n.checked_add(1)), v6: merge(v6, |n| n.checked_add(1)) }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => within(&self.v4, u32::from(a)),
            IpAddr::V6(a) => within(&self.v6, u128::from(a)),
        }
    }
}

/// Sorts `ranges` and merges the ones that overlap or touch (`next` is the address after one, `None`
/// past the last address).
fn merge<T: Ord + Copy>(mut ranges: Vec<(T, T)>, next: fn(T) -> Option<T>) -> Box<[(T, T)]> {
    ranges.sort_unstable();
    let mut merged: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges {
        match merged.last_mut() {
            Some(prev) if next(prev.1).is_none_or(|after| first <= after) => prev.1 = prev.1.max(last),
            _ => merged.push((first, last)),
        }
    }
    merged.into_boxed_slice()
}

/// Whether `n` is in one of the sorted, disjoint `ranges`: the last range starting at or before
/// `n` is the only one that can hold it.
fn within<T: Ord + Copy>(ranges: &[(T, T)], n: T) -> bool {
    let after = ranges.partition_point(|&(first, _)| first <= n);
    after > 0 && n <= ranges[after - 1].1
}

#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub use self::config::IpFilterConfig;

#[cfg(feature = "config")]
mod config {
    use serde::Deserialize;

    use super::{IpFilter, IpFilterBuilder};
    use crate::http::client_ip::{Cidr, CidrError};
    use crate::middleware::{BuildContext, ConfigError};

    /// The `[middleware.NAME]` table of kind `ip_filter`.
    #[derive(Clone, Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct IpFilterConfig {
        /// Blocks whose addresses may pass (`"10.0.0.0/8"`, `"::1/128"`, a bare address). When
        /// empty (the default), every address not denied passes.
        #[serde(default)]
        pub allow: Vec<String>,
        /// Blocks whose addresses are refused, even when `allow` holds them. Default: none.
        #[serde(default)]
        pub deny: Vec<String>,
    }

    impl IpFilter {
        /// Parses the table's blocks and builds the filter through [`IpFilterBuilder::build`];
        /// an entry that is not a block is an error naming its list (`allow` or `deny`).
        pub fn from_config(config: IpFilterConfig, _ctx: &BuildContext) -> Result<Self, ConfigError> {
            IpFilterBuilder::default()
                .allow_cidrs(parse("allow", &config.allow)?)
                .deny_cidrs(parse("deny", &config.deny)?)
                .build()
        }
    }

    fn parse(field: &'static str, list: &[String]) -> Result<Vec<Cidr>, ConfigError> {
        list.iter()
            .enumerate()
            .map(|(index, text)| {
                Cidr::parse(text)
                    .ok_or_else(|| ConfigError::field(field, CidrError { index, text: text.clone() }.to_string()))
            })
            .collect()
    }
}

impl Middleware<Request, Response> for IpFilter {
    async fn handle(&self, req: Request, next: Next) -> Response {
        let Some(client) = req.extensions().get::<ConnectionInfo>().map(|c| c.client.to_canonical()) else {
            return Refusal::mark(forbidden(), "no client address (ConnectionInfo) on the request: refused");
        };
        match self.verdict(client) {
            None => next.run(req).await,
            Some(rule) => Refusal::mark(forbidden(), format!("client {client} {rule}")),
        }
    }

    fn kind(&self) -> &'static str {
        "ip_filter"
    }

    fn facts(&self) -> Facts {
        // CanFail: its 403 is an error an `errors` layer outside should format. It decides by
        // client address, so behind an untrusted proxy it would judge the proxy, not the client.
        Facts::of(&[Fact::ShortCircuits, Fact::CanFail, Fact::ReadsClientAddress, Fact::KeysOnClientAddress])
    }
}

fn forbidden() -> Response {
    let mut res = response::text(StatusCode::FORBIDDEN, BODY);
    // A refused client gains nothing from keeping its connection.
    res.headers_mut().insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    res.extensions_mut().insert(GeneratedError::with_detail(DETAIL));
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Service, Stack};
    use crate::middleware::test_support::{body_text, from_client, request};

    fn cidr(text: &str) -> Cidr {
        Cidr::parse(text).unwrap_or_else(|| panic!("{text} is a CIDR block"))
    }

    fn filter(allow: &[&str], deny: &[&str]) -> IpFilter {
        IpFilter::builder()
            .allow_cidrs(allow.iter().map(|t| cidr(t)))
            .deny_cidrs(deny.iter().map(|t| cidr(t)))
            .build()
            .expect("a valid filter")
    }

    fn service(filter: IpFilter) -> Service {
        Stack::new().with(filter).serve(|_req: Request| async { response::text(StatusCode::OK, "inside") })
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn reason(res: &Response) -> String {
        res.extensions().get::<Refusal>().map(|r| r.reason.to_string()).unwrap_or_default()
    }

    #[test]
    fn an_empty_filter_is_a_build_error() {
        let e = IpFilter::builder().build().unwrap_err();
        assert_eq!(e.field, None);
        assert!(e.message.contains("needs `allow`, `deny` or both"), "{e}");
    }

    #[test]
    fn deny_wins_over_allow_and_an_allow_list_refuses_the_rest() {
        let f = filter(&["10.0.0.0/8", "192.0.2.7"], &["10.99.0.0/16"]);
        assert!(f.allows(ip("10.0.0.0")) && f.allows(ip("10.255.255.255")) && f.allows(ip("192.0.2.7")));
        assert!(!f.allows(ip("10.99.0.0")) && !f.allows(ip("10.99.255.255")), "denied inside an allowed block");
        assert!(f.allows(ip("10.98.255.255")) && f.allows(ip("10.100.0.0")), "just outside the denied block");
        assert!(!f.allows(ip("192.0.2.8")) && !f.allows(ip("11.0.0.0")), "not in allow");
        assert!(!f.allows(ip("::1")), "an IPv6 client is in no IPv4 block");
    }

    #[test]
    fn a_deny_list_alone_passes_everyone_else() {
        let f = filter(&[], &["203.0.113.0/24", "2001:db8::/32"]);
        assert!(!f.allows(ip("203.0.113.200")) && !f.allows(ip("2001:db8::1")));
        assert!(f.allows(ip("203.0.114.1")) && f.allows(ip("2001:db9::1")) && f.allows(ip("127.0.0.1")));
    }

    #[test]
    fn ipv6_blocks_and_edges() {
        let f = filter(&["2001:db8:abcd::/48", "::1", "::/128"], &["2001:db8:abcd:ff00::/56"]);
        assert!(f.allows(ip("2001:db8:abcd::")) && f.allows(ip("2001:db8:abcd:feff:ffff:ffff:ffff:ffff")));
        assert!(!f.allows(ip("2001:db8:abcd:ff00::1")) && !f.allows(ip("2001:db8:abce::")));
        assert!(f.allows(ip("::1")) && f.allows(ip("::")) && !f.allows(ip("::2")));
        // The whole address space, both families: `/0` must not overflow.
        let all = filter(&["0.0.0.0/0", "::/0"], &["255.255.255.255", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"]);
        assert!(all.allows(ip("0.0.0.0")) && all.allows(ip("255.255.255.254")) && !all.allows(ip("255.255.255.255")));
        assert!(all.allows(ip("::")) && !all.allows(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
    }

    #[test]
    fn ipv4_mapped_ipv6_addresses_are_their_ipv4_address() {
        let f = filter(&["192.0.2.0/24"], &["192.0.2.66"]);
        assert!(f.allows(ip("::ffff:192.0.2.1")));
        assert!(!f.allows(ip("::ffff:192.0.2.66")), "denied through its mapped form too");
        assert!(!f.allows(ip("::ffff:198.51.100.1")));
        // A mapped address in the config is the IPv4 address as well.
        let mapped = filter(&["::ffff:198.51.100.9"], &[]);
        assert!(mapped.allows(ip("198.51.100.9")) && mapped.allows(ip("::ffff:198.51.100.9")));
    }

    #[test]
    fn overlapping_and_adjacent_blocks_merge_into_disjoint_ranges() {
        let f = filter(&["10.0.1.0/24", "10.0.0.0/24", "10.0.0.128/25", "10.0.3.0/24", "255.255.255.255"], &["::1"]);
        let allow = f.allow.as_ref().unwrap();
        let v4 = |a: &str| u32::from(a.parse::<std::net::Ipv4Addr>().unwrap());
        let range = |a: &str, b: &str| (v4(a), v4(b));
        assert_eq!(
            &*allow.v4,
            [
                range("10.0.0.0", "10.0.1.255"),
                range("10.0.3.0", "10.0.3.255"),
                range("255.255.255.255", "255.255.255.255")
            ]
        );
        assert!(f.allows(ip("10.0.1.255")) && !f.allows(ip("10.0.2.0")) && f.allows(ip("10.0.3.0")));
    }

    /// Many blocks against a linear scan of the same blocks: the merged ranges decide the same.
    #[test]
    fn the_range_lookup_agrees_with_a_linear_scan() {
        let blocks: Vec<Cidr> = (0..2000u32)
            .map(|i| cidr(&format!("{}.{}.{}.0/{}", 1 + i % 200, (i * 7) % 256, (i * 13) % 256, 16 + i % 9)))
            .collect();
        let f = IpFilter::builder().allow_cidrs(blocks.iter().copied()).build().unwrap();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let candidate = IpAddr::V4(std::net::Ipv4Addr::from((state >> 32) as u32));
            assert_eq!(f.allows(candidate), blocks.iter().any(|b| b.contains(candidate)), "{candidate}");
        }
    }

    #[tokio::test]
    async fn refused_requests_get_a_marked_403_and_allowed_ones_reach_the_app() {
        let svc = service(filter(&["10.0.0.0/8"], &["10.99.0.0/16"]));
        let res = svc.call(from_client(request("GET", "/", &[]), "10.1.2.3")).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body_text(res).await, "inside");

        let res = svc.call(from_client(request("GET", "/", &[]), "10.99.1.1")).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert_eq!(reason(&res), "client 10.99.1.1 is in deny");
        assert_eq!(res.extensions().get::<GeneratedError>().and_then(|g| g.detail()), Some(DETAIL));

        let res = svc.call(from_client(request("GET", "/", &[]), "::ffff:203.0.113.5")).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert_eq!(reason(&res), "client 203.0.113.5 is not in allow", "named by its canonical form");
    }

    #[tokio::test]
    async fn a_request_without_a_client_address_is_refused() {
        let svc = service(filter(&[], &["203.0.113.0/24"]));
        let res = svc.call(request("GET", "/", &[])).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "fail closed, even with a deny list only");
        assert!(reason(&res).starts_with("no client address"), "{}", reason(&res));
    }

    #[test]
    fn facts_say_it_answers_by_itself_by_client_address() {
        let facts = filter(&["10.0.0.0/8"], &[]).facts();
        for fact in [Fact::ShortCircuits, Fact::CanFail, Fact::ReadsClientAddress, Fact::KeysOnClientAddress] {
            assert!(facts.has(fact), "{fact:?}");
        }
    }

    #[cfg(feature = "config")]
    #[test]
    fn the_config_names_the_list_of_a_bad_entry() {
        let ctx = crate::middleware::BuildContext::default();
        let from = |allow: &[&str], deny: &[&str]| {
            let strings = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
            IpFilter::from_config(IpFilterConfig { allow: strings(allow), deny: strings(deny) }, &ctx)
        };
        let e = from(&["10.0.0.0/8", "10.0.0.0/33"], &[]).unwrap_err();
        assert_eq!(e.field, Some("allow"));
        assert!(e.message.starts_with("`10.0.0.0/33` is not an IP address or CIDR block"), "{e}");
        assert_eq!(from(&[], &["example.com"]).unwrap_err().field, Some("deny"));
        assert_eq!(from(&[], &[]).unwrap_err(), IpFilter::builder().build().unwrap_err());
        let f = from(&["10.0.0.0/8"], &["10.99.0.0/16"]).unwrap();
        assert!(f.allows(ip("10.1.1.1")) && !f.allows(ip("10.99.1.1")));
        let table: IpFilterConfig = toml::from_str("allow = [\"::1\"]").unwrap();
        assert_eq!(table.allow, ["::1"]);
        assert!(toml::from_str::<IpFilterConfig>("allowed = [\"::1\"]").is_err(), "unknown keys are errors");
    }
}
