//! [`ForwardAuthBuilder`]: the typed values of a [`ForwardAuth`] layer, and the one function that
//! validates them.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use http::uri::Scheme;
use http::{HeaderName, Method, Uri, header};

use super::cache::VerdictCache;
use super::{
    ForwardAuth, OnError, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_METHOD, X_FORWARDED_PROTO, X_FORWARDED_URI,
};
use crate::http::client::{HttpClient, PlainHttpClient};
use crate::middleware::{ConfigError, MAX_DURATION, describe_duration};

/// The largest denial body the layer holds in memory to pass on: a login page fits many times.
pub const MAX_BODY_BYTES_LIMIT: usize = 16 * 1024 * 1024;

/// The typed configuration of a [`ForwardAuth`] layer; [`ForwardAuthBuilder::build`] validates it,
/// and the gateway's `kind = "forward_auth"` tables go through the same function.
///
/// Defaults: no address (required), method `GET`, request headers `Authorization` and `Cookie`, no
/// response headers copied, no user header, a 5 s timeout, [`OnError::Deny`], a 64 KiB bound on
/// denial bodies, no cache (10 000 entries when `cache_ttl` turns it on), the
/// [`PlainHttpClient`] (plain `http://` only).
pub struct ForwardAuthBuilder {
    address: Option<Uri>,
    method: Method,
    request_headers: Vec<HeaderName>,
    response_headers: Vec<HeaderName>,
    user_header: Option<HeaderName>,
    timeout: Duration,
    on_error: OnError,
    max_body_bytes: usize,
    cache_ttl: Duration,
    cache_capacity: usize,
    client: Option<Arc<dyn HttpClient>>,
}

impl Default for ForwardAuthBuilder {
    fn default() -> Self {
        ForwardAuthBuilder {
            address: None,
            method: Method::GET,
            request_headers: vec![header::AUTHORIZATION, header::COOKIE],
            response_headers: Vec::new(),
            user_header: None,
            timeout: Duration::from_secs(5),
            on_error: OnError::Deny,
            max_body_bytes: 64 * 1024,
            cache_ttl: Duration::ZERO,
            cache_capacity: 10_000,
            client: None,
        }
    }
}

/// Headers that describe a connection or a body's framing, never a request's meaning: copying
/// them to or from the auth service would corrupt a message.
const FRAMING: [HeaderName; 7] = [
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::HOST,
];

impl ForwardAuthBuilder {
    /// The auth service's URL (`http://` or `https://`, with a host): every request is asked about
    /// there. Required.
    pub fn address(mut self, address: Uri) -> Self {
        self.address = Some(address);
        self
    }

    /// The method of the auth requests (default `GET`). They never carry a body.
    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// Replaces the client headers sent to the auth service (default `Authorization` and `Cookie`).
    /// The `X-Forwarded-*` headers are always sent; `Host` and framing headers cannot be listed.
    pub fn auth_request_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.request_headers = names.into_iter().collect();
        self
    }

    /// The headers copied from an admitting answer onto the request (default none). The client's
    /// own values of these names are removed first, whatever the service answers.
    pub fn auth_response_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.response_headers = names.into_iter().collect();
        self
    }

    /// The header of an admitting answer that names the user: it becomes the request's
    /// [`AuthenticatedUser`](crate::http::AuthenticatedUser), and is copied like the
    /// [`auth_response_headers`](Self::auth_response_headers) (added to them when not listed).
    pub fn user_header(mut self, name: HeaderName) -> Self {
        self.user_header = Some(name);
        self
    }

    /// How long the auth service has to answer, status and body (default 5 s): above zero, at
    /// most [`MAX_DURATION`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What to do when the service gives no answer (default [`OnError::Deny`]).
    pub fn on_error(mut self, on_error: OnError) -> Self {
        self.on_error = on_error;
        self
    }

    /// The largest denial body passed on to the client (default 64 KiB, at most
    /// [`MAX_BODY_BYTES_LIMIT`]); a longer one is replaced by an empty body.
    pub fn max_body_bytes(mut self, max: usize) -> Self {
        self.max_body_bytes = max;
        self
    }

    /// How long an admission is remembered (default zero: no cache), at most [`MAX_DURATION`].
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// How many admissions the cache holds at most (default 10 000; at least 1 when it is on).
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// The client the auth requests are sent with (default: a [`PlainHttpClient`] of the layer's
    /// own, which speaks plain `http://` only).
    pub fn client(mut self, client: Arc<dyn HttpClient>) -> Self {
        self.client = Some(client);
        self
    }

    /// Validates the values.
    ///
    /// Fails on a missing address, one that is not `http://` or `https://` with a host (or carries
    /// a user or password), an `https://` address without a [`client`](Self::client), a header
    /// list naming `Host`, a framing header or (for requests) one of the `X-Forwarded-*` the layer
    /// sets, a zero or too long timeout, a cache TTL over [`MAX_DURATION`] or a zero capacity with
    /// the cache on, and a body bound over [`MAX_BODY_BYTES_LIMIT`]. Each error names the TOML key
    /// at fault.
    pub fn build(self) -> Result<ForwardAuth, ConfigError> {
        let address = self.address.ok_or_else(|| ConfigError::field("address", "expected the auth service's URL"))?;
        let scheme = address.scheme();
        let https = scheme == Some(&Scheme::HTTPS);
        if scheme != Some(&Scheme::HTTP) && !https {
            return Err(ConfigError::field("address", format!("`{address}`: expected an http:// or https:// URL")));
        }
        match address.authority() {
            None => return Err(ConfigError::field("address", format!("`{address}`: expected a host"))),
            Some(a) if a.as_str().contains('@') => {
                return Err(ConfigError::field(
                    "address",
                    "expected no user or password in the URL: the service sees the client's credentials through auth_request_headers",
                ));
            }
            Some(_) => {}
        }
        let client: Arc<dyn HttpClient> = match self.client {
            Some(client) => client,
            None if https => {
                return Err(ConfigError::field(
                    "address",
                    "an https:// address needs a TLS-capable client (give one with `client`; the gateway's speaks https)",
                ));
            }
            None => Arc::new(PlainHttpClient::new()),
        };

        let forwarded = [X_FORWARDED_METHOD, X_FORWARDED_PROTO, X_FORWARDED_HOST, X_FORWARDED_URI, X_FORWARDED_FOR];
        let mut request_headers: Vec<HeaderName> = Vec::new();
        for name in self.request_headers {
            if FRAMING.contains(&name) {
                return Err(ConfigError::field(
                    "auth_request_headers",
                    format!("`{name}` describes the connection, not the request: it cannot be forwarded"),
                ));
            }
            if forwarded.contains(&name) {
                return Err(ConfigError::field(
                    "auth_request_headers",
                    format!("`{name}` is set by the layer itself from the request it asks about"),
                ));
            }
            if !request_headers.contains(&name) {
                request_headers.push(name);
            }
        }
        let mut response_headers: Vec<HeaderName> = Vec::new();
        for name in self.response_headers.into_iter().chain(self.user_header.clone()) {
            if FRAMING.contains(&name) {
                let field =
                    if Some(&name) == self.user_header.as_ref() { "user_header" } else { "auth_response_headers" };
                return Err(ConfigError::field(
                    field,
                    format!("`{name}` describes the auth service's connection: it cannot be copied onto the request"),
                ));
            }
            if !response_headers.contains(&name) {
                response_headers.push(name);
            }
        }

        if self.timeout.is_zero() {
            return Err(ConfigError::field("timeout", "expected a duration above zero"));
        }
        if self.timeout > MAX_DURATION {
            return Err(ConfigError::field(
                "timeout",
                format!("expected a duration of at most {} (365 days)", describe_duration(MAX_DURATION)),
            ));
        }
        if self.max_body_bytes > MAX_BODY_BYTES_LIMIT {
            return Err(ConfigError::field(
                "max_body_bytes",
                format!("expected at most {MAX_BODY_BYTES_LIMIT} bytes (16 MiB): denial bodies are held in memory"),
            ));
        }
        if self.cache_ttl > MAX_DURATION {
            return Err(ConfigError::field(
                "cache_ttl",
                format!("expected a duration of at most {} (365 days)", describe_duration(MAX_DURATION)),
            ));
        }
        let cache = match self.cache_ttl.is_zero() {
            true => None,
            false if self.cache_capacity == 0 => {
                return Err(ConfigError::field(
                    "cache_capacity",
                    "expected at least 1 entry (to turn the cache off, set cache_ttl to zero)",
                ));
            }
            false => Some(VerdictCache::verdicts(self.cache_ttl, self.cache_capacity)?),
        };

        Ok(ForwardAuth {
            address,
            method: self.method,
            request_headers: request_headers.into(),
            response_headers: response_headers.into(),
            user_header: self.user_header,
            timeout: self.timeout,
            on_error: self.on_error,
            max_body_bytes: self.max_body_bytes,
            cache,
            client,
            failing: AtomicBool::new(false),
            warned_body: AtomicBool::new(false),
        })
    }
}
