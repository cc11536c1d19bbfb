//! What a limit counts requests by: the [`Key`] of `rate_limit` and `concurrency_limit`, the
//! [`KeyExtractor`] behind custom keys, and [`MissingKey`], what a request without a value gets.
//!
//! ```
//! use strata::middleware::key::{Key, MissingKey};
//! use strata::middleware::ConcurrencyLimit;
//!
//! // At most 8 requests in flight per API key; requests without one are refused.
//! let limit = ConcurrencyLimit::builder()
//!     .max(8)
//!     .key(Key::Header(http::HeaderName::from_static("x-api-key")))
//!     .missing_key(MissingKey::Deny)
//!     .build()
//!     .expect("a valid concurrency limit");
//! # let _ = limit;
//! ```
//!
//! The key lives here, in the core, rather than in `rate_limit` (a feature with its own
//! dependencies), so that the light limits share it; `rate_limit` re-exports it under its old
//! paths.

use std::hash::Hasher;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderName;

use crate::check::{Fact, Facts};
use crate::http::Request;

/// What a limit groups requests by: each value of the key gets its own bucket (`rate_limit`) or
/// its own in-flight count (`concurrency_limit`).
#[derive(Clone)]
pub enum Key {
    /// The client address from [`ConnectionInfo`](crate::http::ConnectionInfo), which the gateway
    /// resolves through `[server] trusted_proxies`. The default.
    ClientIp,
    /// The value of a request header, e.g. an API key.
    Header(HeaderName),
    /// The [`AuthenticatedUser`](crate::http::AuthenticatedUser) an authentication layer outside set.
    User,
    /// One bucket for every request.
    Global,
    /// A key of your own: see [`Key::custom`].
    Custom(Arc<dyn KeyExtractor>),
}

impl Key {
    /// What a limit grouping requests by this key (with `missing` for the requests without one)
    /// reads, for the ordering rules: the user, the client's address, or nothing.
    pub(crate) fn facts(&self, missing: MissingKey) -> Facts {
        match self {
            Key::User => Facts::of(&[Fact::ReadsUser]).union(Key::missing_facts(missing)),
            Key::ClientIp => Facts::of(&[Fact::ReadsClientAddress, Fact::KeysOnClientAddress]),
            Key::Global => Facts::NONE,
            Key::Header(_) | Key::Custom(_) => Key::missing_facts(missing),
        }
    }

    fn missing_facts(missing: MissingKey) -> Facts {
        if missing == MissingKey::ClientIp { Facts::of(&[Fact::ReadsClientAddress]) } else { Facts::NONE }
    }

    /// A key computed from the request by `extractor`, such as a closure
    /// `|req: &Request| -> Option<impl Into<Bytes>>`. `None` means the request has no key:
    /// [`MissingKey`] decides. The value is hashed like a header's, never kept or logged in clear.
    ///
    /// ```
    /// use strata::http::Request;
    /// use strata::middleware::ConcurrencyLimit;
    /// use strata::middleware::key::Key;
    ///
    /// // At most 4 requests in flight per tenant, the first path segment: `/acme/orders` → `acme`.
    /// let per_tenant = Key::custom(|req: &Request| {
    ///     req.uri().path().split('/').nth(1).filter(|s| !s.is_empty()).map(str::to_owned)
    /// });
    /// let limit = ConcurrencyLimit::builder().max(4).key(per_tenant).build().unwrap();
    /// # let _ = limit;
    /// ```
    pub fn custom(extractor: impl KeyExtractor) -> Key {
        Key::Custom(Arc::new(extractor))
    }

    /// What the key is, for logs and refusals (never a value).
    pub(crate) fn describe(&self) -> String {
        match self {
            Key::ClientIp => "client_ip".into(),
            Key::Header(name) => format!("header {name}"),
            Key::User => "user".into(),
            Key::Global => "global".into(),
            Key::Custom(_) => "custom".into(),
        }
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::ClientIp => f.write_str("ClientIp"),
            Key::Header(name) => f.debug_tuple("Header").field(name).finish(),
            Key::User => f.write_str("User"),
            Key::Global => f.write_str("Global"),
            Key::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// Computes a request's key: the extension point behind [`Key::custom`]. Implemented
/// by every `Fn(&Request) -> Option<K>` closure whose `K` converts into [`Bytes`] (`String`,
/// `Vec<u8>`, `&'static str`, `Bytes`).
pub trait KeyExtractor: Send + Sync + 'static {
    /// The key of `req`, or `None` when it has none.
    fn key(&self, req: &Request) -> Option<Bytes>;
}

impl<F, K> KeyExtractor for F
where
    F: Fn(&Request) -> Option<K> + Send + Sync + 'static,
    K: Into<Bytes>,
{
    fn key(&self, req: &Request) -> Option<Bytes> {
        self(req).map(Into::into)
    }
}

/// What a request without the key's value gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "config", derive(serde::Deserialize), serde(rename_all = "snake_case"))]
pub enum MissingKey {
    /// Limited by its client address, as [`Key::ClientIp`] would limit it.
    #[default]
    ClientIp,
    /// Not limited.
    Allow,
    /// Refused with `403 Forbidden`.
    Deny,
}

/// Parses a config's key: `"client_ip"`, `"user"`, `"global"` or `"header:NAME"`; an error names
/// the config key `key`.
#[cfg(feature = "config")]
pub(crate) fn parse_key(text: &str) -> Result<Key, crate::middleware::ConfigError> {
    let expected = || {
        crate::middleware::ConfigError::field(
            "key",
            format!(
                "`{text}`: expected \"client_ip\", \"user\", \"global\" or \"header:NAME\" (e.g. \"header:x-api-key\")"
            ),
        )
    };
    match text {
        "client_ip" => Ok(Key::ClientIp),
        "user" => Ok(Key::User),
        "global" => Ok(Key::Global),
        _ => {
            let name = text.strip_prefix("header:").ok_or_else(expected)?;
            HeaderName::from_bytes(name.trim().as_bytes()).map(Key::Header).map_err(|_| expected())
        }
    }
}

/// The hasher of maps keyed by a key's 64-bit keyed hash (the rate limit's memory store, the
/// concurrency limit's counts): the keys are already uniform, hashing them again would only cost time.
#[derive(Default)]
pub(crate) struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `u64` keys; fold anything else in for completeness.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
