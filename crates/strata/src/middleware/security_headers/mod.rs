//! `security_headers`: the response headers that tell browsers to be strict — HSTS, `nosniff`,
//! framing, referrers, permissions and a Content Security Policy with a fresh nonce per request.
//!
//! ```
//! use strata::http::{Request, Response, Stack};
//! use strata::middleware::{CspNonce, SecurityHeaders};
//!
//! let headers = SecurityHeaders::builder()
//!     .content_security_policy("default-src 'self'; script-src 'self' 'nonce-{nonce}'")
//!     .build()?;
//! let service = Stack::new().with(headers).serve(|req: Request| async move {
//!     // The same nonce the response's policy names: put it on the page's <script> tags.
//!     let nonce = req.extensions().get::<CspNonce>().map(|n| n.as_str().to_owned()).unwrap_or_default();
//!     Response::new(format!("<script nonce=\"{nonce}\">hello()</script>").into())
//! });
//! # let _ = service;
//! # Ok::<(), strata::middleware::ConfigError>(())
//! ```
//!
//! The preset, each header of which can be turned off (the defaults are helmet's, Node's usual
//! choice, where it has one):
//!
//! | header | default |
//! | --- | --- |
//! | `Strict-Transport-Security` | `max-age=31536000; includeSubDomains`, **on HTTPS requests only** |
//! | `X-Content-Type-Options` | `nosniff` |
//! | `X-Frame-Options` | `DENY` (or `SAMEORIGIN`) |
//! | `Referrer-Policy` | `strict-origin-when-cross-origin` |
//! | `Permissions-Policy` | not sent unless configured |
//! | `Content-Security-Policy` (or `-Report-Only`) | not sent unless configured |
//!
//! # Decisions worth knowing
//!
//! - **The app wins.** A header the app (or an inner layer) already set is left as it is, so a
//!   page that needs its own policy keeps it; [`SecurityHeadersBuilder::override_existing`] makes
//!   the layer replace them instead. One switch for all headers: which header an app may own is a
//!   per-route decision, and routes have stacks of their own.
//! - **HSTS only over HTTPS** ([RFC 6797 §7.2]): a request is HTTPS when its connection is TLS
//!   ([`ConnectionInfo::secure`]) or its URI's scheme is `https` (HTTP/2). Behind a proxy that
//!   terminates TLS the connection to strata is plain, so the proxy should send HSTS itself.
//!   Because the layer reads [`ConnectionInfo`], with HSTS on it declares
//!   [`Fact::ReadsClientAddress`], which is what makes servers provide it.
//! - **A nonce per request.** A `{nonce}` in the policy is replaced by 144 fresh random bits
//!   (base64, 24 characters) on every request. The app gets the same nonce as a [`CspNonce`] in
//!   the request's extensions and, for an upstream server, in a request header (`x-csp-nonce` by
//!   default), which replaces any value the client sent.
//! - Every value is checked and made into a `HeaderValue` by [`SecurityHeadersBuilder::build`];
//!   a request costs a few header inserts (and a nonce, when the policy has one).
//!
//! [RFC 6797 §7.2]: https://www.rfc-editor.org/rfc/rfc6797#section-7.2

use bytes::Bytes;
use http::header::Entry;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::check::{Fact, Facts};
use crate::http::{ConnectionInfo, Next, Request, Response};
use crate::stack::Middleware;

mod builder;
#[cfg(feature = "config")]
mod config;
#[cfg(test)]
mod tests;

pub use builder::{FrameOptions, ReferrerPolicy, SecurityHeadersBuilder};
#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub use config::SecurityHeadersConfig;

/// The random bytes of a nonce: 144 bits, 24 base64 characters without padding.
const NONCE_BYTES: usize = 18;

/// The `security_headers` layer. Build it with [`SecurityHeaders::builder`] (or, with the
/// `config` feature, `SecurityHeaders::from_config`); [`SecurityHeaders::default`] is the preset.
#[derive(Clone, Debug)]
pub struct SecurityHeaders {
    /// The headers every response gets, precomputed.
    fixed: Vec<(HeaderName, HeaderValue)>,
    /// `Strict-Transport-Security`, for HTTPS requests.
    hsts: Option<HeaderValue>,
    /// A policy with `{nonce}`, rendered per request.
    nonce_policy: Option<NoncePolicy>,
    /// Whether headers already in the response are replaced.
    overwrite: bool,
}

/// A Content Security Policy that names a per-request nonce.
#[derive(Clone, Debug)]
struct NoncePolicy {
    /// `content-security-policy` or `content-security-policy-report-only`.
    header: HeaderName,
    /// The policy's text around each `{nonce}`: the nonce goes between two parts.
    parts: Vec<String>,
    /// The request header an upstream reads the nonce from.
    request_header: Option<HeaderName>,
}

/// The CSP nonce of the current request, in the request's extensions for the app: the value to
/// put in the `nonce` attribute of the page's `<script>` and `<style>` tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CspNonce(HeaderValue);

impl CspNonce {
    /// The nonce: 24 characters of standard base64.
    pub fn as_str(&self) -> &str {
        // Made from base64 characters only.
        self.0.to_str().unwrap_or_default()
    }

    /// The nonce as a header value.
    pub fn as_header_value(&self) -> &HeaderValue {
        &self.0
    }

    /// A new random nonce.
    fn generate() -> CspNonce {
        let bytes: [u8; NONCE_BYTES] = crate::middleware::request_id::random::random_bytes();
        let text = base64(&bytes);
        // Base64 characters are visible ASCII: always a valid header value.
        CspNonce(HeaderValue::from_maybe_shared(Bytes::from(text)).unwrap_or(HeaderValue::from_static("")))
    }
}

/// Standard base64 of a whole number of 3-byte groups (no padding needed).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len() / 3 * 4);
    for group in bytes.chunks_exact(3) {
        let n = (u32::from(group[0]) << 16) | (u32::from(group[1]) << 8) | u32::from(group[2]);
        for shift in [18, 12, 6, 0] {
            out.push(char::from(ALPHABET[(n >> shift) as usize & 63]));
        }
    }
    out
}

impl Default for SecurityHeaders {
    /// The preset: HSTS (one year, subdomains, HTTPS only), `nosniff`, `X-Frame-Options: DENY`,
    /// `Referrer-Policy: strict-origin-when-cross-origin`.
    fn default() -> Self {
        SecurityHeadersBuilder::default().build().expect("the preset is valid")
    }
}

impl SecurityHeaders {
    /// Starts a [`SecurityHeadersBuilder`] with the preset.
    pub fn builder() -> SecurityHeadersBuilder {
        SecurityHeadersBuilder::default()
    }

    /// The `Strict-Transport-Security` value sent on HTTPS requests, if HSTS is on.
    pub fn hsts_value(&self) -> Option<&HeaderValue> {
        self.hsts.as_ref()
    }

    fn put(&self, headers: &mut HeaderMap, name: &HeaderName, value: HeaderValue) {
        if self.overwrite {
            headers.insert(name, value);
        } else if let Entry::Vacant(slot) = headers.entry(name) {
            slot.insert(value);
        }
    }
}

/// Whether the request came over HTTPS: a TLS connection, or an `https` URI (HTTP/2's `:scheme`).
fn is_https(req: &Request) -> bool {
    req.extensions().get::<ConnectionInfo>().is_some_and(|c| c.secure)
        || req.uri().scheme() == Some(&http::uri::Scheme::HTTPS)
}

impl NoncePolicy {
    /// The policy with `nonce` in place of each `{nonce}`.
    fn render(&self, nonce: &CspNonce) -> Option<HeaderValue> {
        let nonce = nonce.as_str();
        let len = self.parts.iter().map(String::len).sum::<usize>() + nonce.len() * (self.parts.len() - 1);
        let mut text = String::with_capacity(len);
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                text.push_str(nonce);
            }
            text.push_str(part);
        }
        // Checked at build with a nonce of the same alphabet: this does not fail.
        HeaderValue::from_maybe_shared(Bytes::from(text)).ok()
    }
}

impl Middleware<Request, Response> for SecurityHeaders {
    async fn handle(&self, mut req: Request, next: Next) -> Response {
        let https = self.hsts.is_some() && is_https(&req);
        let nonce = self.nonce_policy.as_ref().map(|policy| {
            let nonce = CspNonce::generate();
            if let Some(name) = &policy.request_header {
                // `insert` replaces whatever the client sent under that name.
                req.headers_mut().insert(name, nonce.0.clone());
            }
            req.extensions_mut().insert(nonce.clone());
            (policy, nonce)
        });
        let mut res = next.run(req).await;
        let headers = res.headers_mut();
        for (name, value) in &self.fixed {
            self.put(headers, name, value.clone());
        }
        if let Some(hsts) = self.hsts.as_ref().filter(|_| https) {
            self.put(headers, &http::header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
        if let Some((policy, nonce)) = nonce
            && let Some(value) = policy.render(&nonce)
        {
            self.put(headers, &policy.header, value);
        }
        res
    }

    fn kind(&self) -> &'static str {
        "security_headers"
    }

    fn facts(&self) -> Facts {
        let facts = Facts::of(&[Fact::DecoratesResponses]);
        // HSTS reads `ConnectionInfo::secure`: servers provide it to stacks with this fact.
        if self.hsts.is_some() { facts.with(Fact::ReadsClientAddress) } else { facts }
    }
}
