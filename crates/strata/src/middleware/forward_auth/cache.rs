//! The verdict cache: keyed MACs of everything an auth request carries → the admission it got, in
//! bounded shards (see the module docs of [`super`] for what is cached and why).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hmac::Mac;

use super::Admission;
use crate::middleware::ConfigError;
use crate::middleware::mac_cache::MacCache;

/// Admissions by keyed MAC of their auth request; nothing of the request itself is stored.
pub(super) type VerdictCache = MacCache<Arc<Admission>>;

/// What an auth request says about the request it asks about: the parts the cache key covers.
pub(super) struct Asked<'a> {
    pub(super) method: &'a [u8],
    pub(super) proto: &'a [u8],
    pub(super) host: &'a [u8],
    pub(super) uri: &'a [u8],
    pub(super) client: Option<IpAddr>,
    pub(super) headers: &'a http::HeaderMap,
}

impl MacCache<Arc<Admission>> {
    /// A cache of `capacity` admissions, each kept for `ttl`.
    pub(super) fn verdicts(ttl: Duration, capacity: usize) -> Result<Self, ConfigError> {
        MacCache::new(ttl, capacity, "verdict cache")
    }

    /// The MAC of everything the auth request carries: the forwarded method, scheme, host, URI and
    /// client, and every value of each header in `names` (in that order). Each part is
    /// length-prefixed and each header's values counted, so no two different requests write the
    /// same bytes.
    pub(super) fn key(&self, asked: &Asked<'_>, names: &[http::HeaderName]) -> [u8; 32] {
        let mut mac = self.mac();
        let mut part = |bytes: &[u8]| {
            mac.update(&(bytes.len() as u64).to_le_bytes());
            mac.update(bytes);
        };
        part(asked.method);
        part(asked.proto);
        part(asked.host);
        part(asked.uri);
        match asked.client {
            Some(IpAddr::V4(ip)) => part(&ip.octets()),
            Some(IpAddr::V6(ip)) => part(&ip.octets()),
            None => part(b""),
        }
        for name in names {
            let values = asked.headers.get_all(name);
            part(&(values.iter().count() as u64).to_le_bytes());
            for value in values {
                part(value.as_bytes());
            }
        }
        mac.finalize().into_bytes().into()
    }
}
