//! `compression`: compresses response bodies with br, zstd or gzip, as the client's
//! `Accept-Encoding` allows and the server prefers.
//!
//! ```
//! use strata::http::{Request, Response, Stack};
//! use strata::middleware::compression::{Algorithm, Compression, Level};
//!
//! let compression = Compression::builder()
//!     .algorithms([Algorithm::Br, Algorithm::Gzip])
//!     .level(Level::Fastest)
//!     .level_for(Algorithm::Br, Level::Precise(5))
//!     .min_size(512)
//!     .build()?;
//! let service = Stack::new()
//!     .with(compression)
//!     .serve(|_req: Request| async { Response::new("hello".into()) });
//! # let _ = service;
//! # Ok::<(), strata::middleware::ConfigError>(())
//! ```
//!
//! Bodies are compressed as they stream, one frame at a time, so memory stays bounded whatever the
//! body's size; `text/event-stream` bodies are flushed after every frame so each server-sent event
//! reaches the browser on its own. Responses that must not or need not be compressed (already
//! encoded, ranges, 204, small, media and archives, `no-transform`) pass through untouched.
//!
//! **Metadata matches the body a GET would get.** A HEAD response carries the headers of the GET
//! (RFC 9110 §9.3.2): `Vary: accept-encoding`, and when the GET would be compressed, its
//! `Content-Encoding`, weakened `ETag` and no `Content-Length`. A `304` carries the `ETag` and `Vary`
//! its `200` would have carried (RFC 9110 §15.4.5). A strong `ETag` names exact bytes, so a
//! compressed response's `"x"` becomes `W/"x"`; a client then revalidates with
//! `If-None-Match: W/"x"`, which an upstream comparing tags as plain strings would never match.
//! The strong form of each weak tag is therefore **added** to `If-None-Match` on the way in (`W/"x"`
//! → `W/"x", "x"`): `If-None-Match` compares weakly (RFC 9110 §13.1.2), so to a correct upstream the
//! two are the same tag, and an upstream whose own tags are weak still finds the one it issued.
//!
//! The same in the gateway's TOML:
//!
//! ```toml
//! [middleware.compression]
//! kind = "compression"
//! algorithms = ["br", "gzip"]
//! level = { br = 5, gzip = "fastest" }
//! min_size = 512
//! ```
//!
//! See `docs/middleware/compression.md` for every option and rule.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use http_body::Body as _;

use super::ConfigError;
use crate::check::{Fact, Facts};
use crate::http::headers::{add_vary, is_tchar};
use crate::http::{Body, Next, Request, Response};
use crate::stack::Middleware;

mod accept_encoding;
mod body;
mod builder;
#[cfg(feature = "config")]
mod config;
mod level;
mod metadata;
#[cfg(test)]
mod tests;

use accept_encoding::negotiate;
use body::{CompressedBody, Encoder};
pub use builder::{CompressionBuilder, DEFAULT_EXCLUDED_CONTENT_TYPES};
#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub use config::{CompressionConfig, Levels};
pub use level::{Algorithm, Level};
use metadata::{declared_length, entity_tags, has_no_transform, media_essence, weaken_etag, with_strong_forms};

/// The `compression` middleware. Build it with [`Compression::builder`], or take
/// [`Compression::default`] (br, zstd, gzip at their default levels, 1 KiB minimum, the default
/// exclusions).
///
/// ```
/// use strata::http::{Request, Response, Stack};
/// use strata::middleware::Compression;
///
/// let service = Stack::new()
///     .with(Compression::default())
///     .serve(|_req: Request| async { Response::new("hello".into()) });
/// # let _ = service;
/// ```
#[derive(Clone, Debug)]
pub struct Compression {
    /// The offered codings, most preferred first, each with its resolved level.
    algorithms: Box<[(Algorithm, i32)]>,
    min_size: u64,
    excluded: Box<[TypePattern]>,
}

/// One `content_types` entry, parsed once at build.
#[derive(Clone, Debug)]
struct TypePattern {
    /// `!type`: compress what earlier entries excluded.
    include: bool,
    /// Lowercase; without the trailing `*` when `prefix`.
    text: Box<str>,
    prefix: bool,
}

impl TypePattern {
    fn parse(entry: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| ConfigError::field("content_types", format!("`{entry}`: {why}"));
        let trimmed = entry.trim();
        let (include, rest) = match trimmed.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, trimmed),
        };
        let (text, prefix) = match rest.strip_suffix('*') {
            Some(text) => (text, true),
            None => (rest, false),
        };
        let Some((kind, subtype)) = text.split_once('/') else {
            return Err(bad("expected a media type such as `image/png`, `image/*` or `application/grpc*`"));
        };
        // `*` is a token character, but here it may only end the pattern.
        let valid = |s: &str| s.bytes().all(|b| is_tchar(b) && b != b'*');
        if kind.is_empty() || !valid(kind) || !valid(subtype) || (!prefix && subtype.is_empty()) {
            return Err(bad("expected `type/subtype`, with `*` allowed only at the end and no parameters"));
        }
        Ok(TypePattern { include, text: text.to_ascii_lowercase().into(), prefix })
    }

    /// Whether the pattern matches a media type essence (`type/subtype`, any case).
    fn matches(&self, essence: &str) -> bool {
        if self.prefix {
            essence.len() >= self.text.len()
                && essence.as_bytes()[..self.text.len()].eq_ignore_ascii_case(self.text.as_bytes())
        } else {
            essence.eq_ignore_ascii_case(&self.text)
        }
    }
}

impl Compression {
    /// Starts a [`CompressionBuilder`] with the defaults.
    pub fn builder() -> CompressionBuilder {
        CompressionBuilder::default()
    }

    /// The codings this layer offers, most preferred first, with their resolved numeric levels.
    pub fn algorithms(&self) -> impl Iterator<Item = (Algorithm, i32)> + '_ {
        self.algorithms.iter().copied()
    }

    fn excludes_type(&self, essence: &str) -> bool {
        // Last match wins, so `!image/svg+xml` after `image/*` re-includes SVG.
        self.excluded.iter().rev().find(|p| p.matches(essence)).is_some_and(|p| !p.include)
    }

    /// Whether the response could be compressed for some client: when this is false the coding
    /// does not depend on `Accept-Encoding`, so no `Vary` is added either.
    ///
    /// A HEAD response usually has no body to measure (an upstream sends none): its
    /// `Content-Length` header, which describes the GET's body, stands in for the body's length.
    fn eligible(&self, res: &Response, head: bool) -> bool {
        let status = res.status();
        if status.is_informational()
            || matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED | StatusCode::PARTIAL_CONTENT)
        {
            return false;
        }
        let headers = res.headers();
        if !self.may_transform(headers) || headers.contains_key(header::CONTENT_RANGE) {
            return false;
        }
        let body = res.body();
        let length = match (body.is_end_stream(), head) {
            (false, _) => body.size_hint().exact(),
            (true, true) => declared_length(headers),
            (true, false) => return false,
        };
        if length.is_some_and(|n| n < self.min_size) {
            return false;
        }
        // Without a type we cannot tell text from already-compressed bytes; a known length at
        // least lets `min_size` be honoured, so only those bodies are compressed.
        headers.contains_key(header::CONTENT_TYPE) || length.is_some()
    }

    /// What the headers alone decide: not already encoded, no `no-transform`, a type not
    /// excluded (an absent type is decided by the caller).
    fn may_transform(&self, headers: &HeaderMap) -> bool {
        if headers.contains_key(header::CONTENT_ENCODING) {
            return false;
        }
        // RFC 9110 §7.7: an intermediary must not transform the content of a `no-transform` response.
        if headers.get_all(header::CACHE_CONTROL).iter().any(has_no_transform) {
            return false;
        }
        match headers.get(header::CONTENT_TYPE) {
            None => true,
            Some(value) => value.to_str().is_ok_and(|v| !self.excludes_type(media_essence(v))),
        }
    }

    /// A `304`: the `Vary` and `ETag` its `200` would have had (RFC 9110 §15.4.5).
    ///
    /// A `304` carries no body and rarely a type, so whether the `200` would have been compressed is
    /// judged from what it does carry (no `Content-Encoding`, no `no-transform`, a type not
    /// excluded) and this request's `Accept-Encoding`. One more witness decides the `ETag`: a client
    /// that revalidated with the strong tag itself (and not its weak form) holds the identity body,
    /// so it keeps that tag — say, one below `min_size`, which was never compressed.
    fn not_modified(&self, res: &mut Response, plan: &Plan) {
        if !self.may_transform(res.headers()) {
            return;
        }
        add_vary(res.headers_mut(), "accept-encoding");
        if plan.coding.is_none() {
            return;
        }
        let holds_identity = match (res.headers().get(header::ETAG), &plan.if_none_match) {
            (Some(etag), Some(sent)) => {
                let tags = entity_tags(sent.as_bytes());
                tags.clone().any(|(weak, tag)| !weak && tag == etag.as_bytes())
                    && !tags.clone().any(|(weak, tag)| weak && tag == etag.as_bytes())
            }
            _ => false,
        };
        if !holds_identity {
            weaken_etag(res.headers_mut());
        }
    }

    fn compress(&self, mut res: Response, plan: Plan) -> Response {
        if plan.range {
            return res;
        }
        if res.status() == StatusCode::NOT_MODIFIED {
            self.not_modified(&mut res, &plan);
            return res;
        }
        if !self.eligible(&res, plan.head) {
            return res;
        }
        // The coding chosen depends on Accept-Encoding even when the answer is "none".
        add_vary(res.headers_mut(), "accept-encoding");
        let Some((algorithm, level)) = plan.coding else {
            return res;
        };
        if plan.head {
            // The GET's headers without its body. The body goes too: hyper would announce a
            // body it knows the length of as the identity `Content-Length`.
            encoded_headers(res.headers_mut(), algorithm);
            *res.body_mut() = Body::empty();
            return res;
        }
        let event_stream = res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| media_essence(v).eq_ignore_ascii_case("text/event-stream"));
        let encoder = match Encoder::new(algorithm, level) {
            Ok(encoder) => encoder,
            Err(error) => {
                tracing::warn!(
                    %error,
                    algorithm = algorithm.as_str(),
                    request_id = crate::http::AssignedRequestId::current().map(tracing::field::display),
                    "could not start a compressor; sent uncompressed"
                );
                return res;
            }
        };

        encoded_headers(res.headers_mut(), algorithm);

        let (parts, body) = res.into_parts();
        let body = CompressedBody {
            inner: body,
            encoder: Some(encoder),
            flush_every_frame: event_stream,
            unflushed: false,
            trailers: None,
        };
        Response::from_parts(parts, Body::wrap(body))
    }
}

impl Default for Compression {
    /// br, zstd, gzip at their default levels; 1 KiB minimum; the default exclusions.
    fn default() -> Self {
        CompressionBuilder::default().build().expect("the default compression settings are valid")
    }
}

/// The headers of a body compressed with `algorithm`.
fn encoded_headers(headers: &mut HeaderMap, algorithm: Algorithm) {
    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(algorithm.as_str()));
    // The compressed length is unknown until the end; byte ranges of the identity body no longer apply.
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    weaken_etag(headers);
}

/// What the request decided before it was handed on (the request itself is moved inward).
struct Plan {
    head: bool,
    range: bool,
    coding: Option<(Algorithm, i32)>,
    /// The client's `If-None-Match` as it sent it (a `304` needs to know which tag it holds).
    if_none_match: Option<HeaderValue>,
}

impl Middleware<Request, Response> for Compression {
    async fn handle(&self, mut req: Request, next: Next) -> Response {
        let if_none_match = req.headers().get(header::IF_NONE_MATCH).cloned();
        if let Some(sent) = &if_none_match
            && let Some(extended) = with_strong_forms(sent)
        {
            req.headers_mut().insert(header::IF_NONE_MATCH, extended);
        }
        let plan = Plan {
            head: req.method() == Method::HEAD,
            range: req.headers().contains_key(header::RANGE),
            coding: negotiate(req.headers(), &self.algorithms),
            if_none_match,
        };
        let res = next.run(req).await;
        self.compress(res, plan)
    }

    fn kind(&self) -> &'static str {
        "compression"
    }

    fn facts(&self) -> Facts {
        Facts::of(&[Fact::RewritesBody, Fact::FlushesEvents])
    }
}
