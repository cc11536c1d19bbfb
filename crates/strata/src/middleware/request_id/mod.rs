//! `request_id`: gives every request an id, and keeps its W3C trace context valid.
//!
//! ```
//! use http::{HeaderName, HeaderValue};
//! use strata::http::{AssignedRequestId, Body, Request, Response, Stack};
//! use strata::middleware::{RequestId, TraceContextMode};
//!
//! # fn main() -> Result<(), strata::middleware::ConfigError> {
//! let request_id = RequestId::builder()
//!     .header(HeaderName::from_static("x-correlation-id"))
//!     .trust_incoming(false) // clients are untrusted: every request gets a new id
//!     .trace_context(TraceContextMode::Propagate)
//!     .build()?;
//! let service = Stack::new()
//!     .with(request_id) // outermost: every layer inside sees the id
//!     .serve(|req: Request| async move {
//!         let id = req.extensions().get::<AssignedRequestId>().cloned();
//!         Response::new(Body::from(format!("{:?}", id)))
//!     });
//! # let _ = service;
//!
//! // Ids of your own making: anything `is_valid_request_id` accepts.
//! let counter = std::sync::atomic::AtomicU64::new(0);
//! let numbered = RequestId::builder()
//!     .generator(move || {
//!         let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
//!         HeaderValue::from_str(&format!("req-{n}")).unwrap()
//!     })
//!     .build()?;
//! # let _ = numbered;
//! # Ok(())
//! # }
//! ```
//!
//! The id comes from the incoming header (by default `x-request-id`) when it is well formed and
//! trusted, otherwise it is made by the layer's [`IdGenerator`] (by default [`UuidV4`], a fresh
//! random UUID v4). It is put in the request's extensions as [`crate::http::AssignedRequestId`]
//! (for logs and inner layers), set on the request (so an upstream sees it) and set on the
//! response, whatever produced that response: the app, an inner layer that answered by itself, or
//! the 500 an inner panic became.
//!
//! With `trace_context = "propagate"` (the default) the `traceparent` header is validated as the
//! [W3C Trace Context](https://www.w3.org/TR/trace-context/) specifies. A valid one passes through
//! untouched, with its `tracestate`. A missing or invalid one is replaced by a new trace, and the
//! `tracestate` is dropped, since it described a trace that no longer applies. Either way the
//! result is in the request's extensions as [`TraceContext`].

#[cfg(feature = "config")]
mod config;
pub(crate) mod random;
#[cfg(test)]
mod tests;

#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub use config::RequestIdConfig;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue};

use self::random::{random_bytes, random_u128};
use crate::check::{Fact, Facts};
use crate::http::{Next, Request, Response};
use crate::middleware::ConfigError;
use crate::stack::Middleware;

use crate::http::AssignedRequestId as AssignedId;

/// The `traceparent` header of W3C Trace Context.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The `tracestate` header of W3C Trace Context.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The default request-id header.
const DEFAULT_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest incoming id that is reused; longer ones are replaced. Long enough for any UUID,
/// ULID or cloud load balancer's trace id, short enough that an id cannot bloat every log line.
const MAX_ID_LEN: usize = 128;

/// What the `request_id` layer does with `traceparent` and `tracestate`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "config", derive(serde::Deserialize), serde(rename_all = "lowercase"))]
pub enum TraceContextMode {
    /// Keep a valid `traceparent` (and its `tracestate`); start a new trace when it is missing or
    /// invalid (and drop the `tracestate`). The result is in the request's extensions as [`TraceContext`].
    #[default]
    Propagate,
    /// Leave both headers alone and set no [`TraceContext`] extension.
    Off,
}

/// Makes the id of a request that brought no usable one: the extension point of [`RequestId`].
///
/// A closure `Fn() -> HeaderValue` is one. What it returns must pass [`is_valid_request_id`] (so
/// that any log format can hold it unescaped); when it does not, the layer uses a [`UuidV4`] for
/// that request instead and logs a warning once, so a faulty generator never sends a bad header
/// or a request without an id.
pub trait IdGenerator: Send + Sync + 'static {
    /// A new id; called once per request that needs one, from any thread.
    fn generate(&self) -> HeaderValue;
}

impl<F> IdGenerator for F
where
    F: Fn() -> HeaderValue + Send + Sync + 'static,
{
    fn generate(&self) -> HeaderValue {
        self()
    }
}

/// The default [`IdGenerator`]: a random UUID v4 in its lowercase hyphenated form
/// (`xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`), from the operating system's random source.
#[derive(Clone, Copy, Debug, Default)]
pub struct UuidV4;

impl IdGenerator for UuidV4 {
    fn generate(&self) -> HeaderValue {
        new_uuid_v4()
    }
}

/// The request-id middleware (kind `request_id`). Build it with [`RequestId::builder`], or
/// [`RequestId::default`] for the defaults.
///
/// Not to be confused with [`crate::http::AssignedRequestId`], the extension this layer puts on each request.
#[derive(Clone)]
pub struct RequestId {
    header: HeaderName,
    trust_incoming: bool,
    trace_context: TraceContextMode,
    /// `None` for the default [`UuidV4`]: no dynamic call and no validation on the common path.
    generator: Option<Arc<dyn IdGenerator>>,
    /// Whether a generated id that failed validation was logged already.
    warned_invalid: Arc<AtomicBool>,
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestId")
            .field("header", &self.header)
            .field("trust_incoming", &self.trust_incoming)
            .field("trace_context", &self.trace_context)
            .field("generator", &if self.generator.is_some() { "custom" } else { "uuid v4" })
            .finish()
    }
}

/// The settings of a [`RequestId`] layer as typed values; [`build`](Self::build) validates them
/// (the gateway's `kind = "request_id"` tables go through it too).
#[derive(Clone)]
pub struct RequestIdBuilder {
    header: HeaderName,
    trust_incoming: bool,
    trace_context: TraceContextMode,
    generator: Option<Arc<dyn IdGenerator>>,
}

impl Default for RequestIdBuilder {
    /// Header `x-request-id`, incoming ids trusted, trace context propagated, UUID v4 ids.
    fn default() -> Self {
        RequestIdBuilder {
            header: DEFAULT_HEADER,
            trust_incoming: true,
            trace_context: TraceContextMode::Propagate,
            generator: None,
        }
    }
}

impl fmt::Debug for RequestIdBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestIdBuilder")
            .field("header", &self.header)
            .field("trust_incoming", &self.trust_incoming)
            .field("trace_context", &self.trace_context)
            .field("generator", &if self.generator.is_some() { "custom" } else { "uuid v4" })
            .finish()
    }
}

impl RequestIdBuilder {
    /// The header that carries the id, on the request and on the response (default
    /// `x-request-id`). The trace context headers are refused: the layer rewrites them by their
    /// own rules.
    pub fn header(mut self, header: HeaderName) -> Self {
        self.header = header;
        self
    }

    /// Whether a well-formed incoming id is reused (default `true`). When false every request
    /// gets a new id (use it when clients are untrusted and ids must be unique).
    pub fn trust_incoming(mut self, trust: bool) -> Self {
        self.trust_incoming = trust;
        self
    }

    /// What to do with W3C Trace Context headers (default [`TraceContextMode::Propagate`]).
    pub fn trace_context(mut self, mode: TraceContextMode) -> Self {
        self.trace_context = mode;
        self
    }

    /// What makes new ids (default [`UuidV4`]): an [`IdGenerator`], such as a closure
    /// `Fn() -> HeaderValue`. See [`IdGenerator`] for what happens to an invalid id.
    pub fn generator(mut self, generator: impl IdGenerator) -> Self {
        self.generator = Some(Arc::new(generator));
        self
    }

    /// Validates the settings and builds the layer.
    pub fn build(self) -> Result<RequestId, ConfigError> {
        if self.header == TRACEPARENT || self.header == TRACESTATE {
            return Err(ConfigError::field(
                "header",
                format!(
                    "`{}` is a trace context header, not a place for a request id: use e.g. \"x-request-id\"",
                    self.header
                ),
            ));
        }
        // The default name as a static one: a name parsed at run time is reference-counted, and
        // this layer clones it twice per request, from every worker thread.
        let header = if self.header == DEFAULT_HEADER { DEFAULT_HEADER } else { self.header };
        Ok(RequestId {
            header,
            trust_incoming: self.trust_incoming,
            trace_context: self.trace_context,
            generator: self.generator,
            warned_invalid: Arc::new(AtomicBool::new(false)),
        })
    }
}

impl RequestId {
    /// Starts a [`RequestIdBuilder`] with the defaults.
    pub fn builder() -> RequestIdBuilder {
        RequestIdBuilder::default()
    }

    /// The header this layer reads and writes.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    fn choose_id(&self, headers: &HeaderMap) -> HeaderValue {
        let mut values = headers.get_all(&self.header).iter();
        match (values.next(), values.next()) {
            // A repeated header is ambiguous (which one would the logs show?), so it is replaced.
            (Some(value), None) if self.trust_incoming && is_valid_request_id(value.as_bytes()) => value.clone(),
            _ => self.new_id(),
        }
    }

    /// A new id from the generator, or a UUID v4 when the generator's is invalid.
    fn new_id(&self) -> HeaderValue {
        let Some(generator) = &self.generator else { return new_uuid_v4() };
        let id = generator.generate();
        if is_valid_request_id(id.as_bytes()) {
            return id;
        }
        if !self.warned_invalid.swap(true, Ordering::Relaxed) {
            // The length only: the value is not known to be safe to write into a log.
            tracing::warn!(
                header = %self.header,
                len = id.len(),
                "the request id generator made an id outside the allowed characters or lengths; using a UUID v4 instead"
            );
        }
        new_uuid_v4()
    }
}

impl Default for RequestId {
    /// The defaults: header `x-request-id`, incoming ids trusted, trace context propagated, UUID v4 ids.
    fn default() -> Self {
        RequestIdBuilder::default().build().unwrap_or_else(|_| unreachable!("the defaults are valid"))
    }
}

impl Middleware<Request, Response> for RequestId {
    async fn handle(&self, mut req: Request, next: Next) -> Response {
        let id = self.choose_id(req.headers());
        // `insert` replaces every incoming value, so the upstream sees exactly the id we log.
        req.headers_mut().insert(self.header.clone(), id.clone());
        req.extensions_mut().insert(AssignedId(id.clone()));
        if self.trace_context == TraceContextMode::Propagate {
            let trace = propagate_trace_context(req.headers_mut());
            req.extensions_mut().insert(trace);
        }
        // The task's current id too, for log lines written where the request is out of reach.
        let mut res = AssignedId(id.clone()).scope(next.run(req)).await;
        // Overrides whatever an inner layer set: the client must see the id the logs carry.
        res.headers_mut().insert(self.header.clone(), id);
        res
    }

    fn kind(&self) -> &'static str {
        "request_id"
    }

    fn facts(&self) -> Facts {
        Facts::of(&[Fact::SetsRequestId])
    }
}

/// Whether an incoming id is reused: 1 to 128 characters of `A-Z a-z 0-9 . _ ~ + / = : @ -`.
///
/// The set covers UUIDs, ULIDs, base64 and the ids of common load balancers, and excludes spaces,
/// quotes and control characters, so an id can be written into any log format unescaped.
pub fn is_valid_request_id(id: &[u8]) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id.iter().all(|&b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'+' | b'/' | b'=' | b':' | b'@' | b'-')
        })
}

/// A random UUID v4 (RFC 9562), lowercase and hyphenated: 122 random bits, version `4`, variant `10`.
fn new_uuid_v4() -> HeaderValue {
    let mut bytes: [u8; 16] = random_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut text = [b'-'; 36];
    for (range, part) in [(0..8, 0..4), (9..13, 4..6), (14..18, 6..8), (19..23, 8..10), (24..36, 10..16)] {
        hex_into(&mut text[range], &bytes[part]);
    }
    shared_header_value(text)
}

/// A header value over bytes made on the request path, in one reference-counted allocation: the
/// request, its extensions and the response then share it (a copied value would allocate again
/// on its first clone).
fn shared_header_value<const N: usize>(text: [u8; N]) -> HeaderValue {
    // Only ever called with hex digits and hyphens, which are always valid header bytes.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text)).expect("hex digits and hyphens")
}

/// The W3C trace context of a request, set in its extensions by the `request_id` layer when
/// `trace_context = "propagate"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The `traceparent` version (`0` for the current specification).
    pub version: u8,
    /// The trace id: never all zeros.
    pub trace_id: [u8; 16],
    /// The id of the caller's span (the parent of whatever this request does): never all zeros.
    pub parent_id: [u8; 8],
    /// The trace flags; bit 0 is "sampled".
    pub flags: u8,
    /// True when this layer started the trace because the incoming `traceparent` was missing or invalid.
    pub started_here: bool,
}

impl TraceContext {
    /// Parses and validates a `traceparent` value as W3C Trace Context specifies: `version-traceid-parentid-flags`
    /// in lowercase hex; version `ff` is invalid; an all-zero trace id or parent id is invalid;
    /// version `00` is exactly 55 characters; a higher version may be longer when a `-` follows the
    /// flags (what a future version adds after it is ignored).
    pub fn parse(value: &[u8]) -> Option<TraceContext> {
        if value.len() < 55 {
            return None;
        }
        let version = hex_byte(&value[0..2])?;
        if version == 0xff {
            return None;
        }
        let longer_ok = version != 0 && value[55..].first().is_none_or(|&b| b == b'-');
        if value.len() != 55 && !longer_ok {
            return None;
        }
        if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        for (i, byte) in trace_id.iter_mut().enumerate() {
            *byte = hex_byte(&value[3 + 2 * i..5 + 2 * i])?;
        }
        let mut parent_id = [0u8; 8];
        for (i, byte) in parent_id.iter_mut().enumerate() {
            *byte = hex_byte(&value[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&value[53..55])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceContext { version, trace_id, parent_id, flags, started_here: false })
    }

    /// A new trace: random trace id and parent id, version `00`, flags `01` (sampled).
    ///
    /// Sampled, because strata records no spans itself: the services behind it make the recording
    /// decision, and the common default (OpenTelemetry's parent-based sampler) follows the parent's
    /// flag. Flags `00` would silently turn tracing off for every request that arrived without a
    /// trace; a service that wants fewer traces samples with its own ratio.
    pub fn start() -> TraceContext {
        let trace = random_u128().max(1);
        let parent = (random_u128() as u64).max(1);
        TraceContext {
            version: 0,
            trace_id: trace.to_be_bytes(),
            parent_id: parent.to_be_bytes(),
            flags: 0x01,
            started_here: true,
        }
    }

    /// The trace id as 32 lowercase hex digits, as logs and tracing backends show it.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The parent id as 16 lowercase hex digits.
    pub fn parent_id_hex(&self) -> String {
        hex(&self.parent_id)
    }

    /// Whether the "sampled" flag is set.
    pub fn sampled(&self) -> bool {
        self.flags & 0x01 != 0
    }

    /// The `traceparent` value in the 55-character form (`vv-trace-parent-ff`).
    pub fn to_header_value(&self) -> HeaderValue {
        // Written into a fixed buffer: this runs for every request that arrives without a trace.
        let mut text = [b'-'; 55];
        hex_into(&mut text[0..2], &[self.version]);
        hex_into(&mut text[3..35], &self.trace_id);
        hex_into(&mut text[36..52], &self.parent_id);
        hex_into(&mut text[53..55], &[self.flags]);
        shared_header_value(text)
    }
}

/// Keeps a valid `traceparent` (and `tracestate`) or replaces them with a new trace.
fn propagate_trace_context(headers: &mut HeaderMap) -> TraceContext {
    let mut values = headers.get_all(&TRACEPARENT).iter();
    // Two traceparents cannot both describe the caller, so a repeated header is invalid.
    let incoming = match (values.next(), values.next()) {
        (Some(value), None) => TraceContext::parse(value.as_bytes()),
        _ => None,
    };
    if let Some(trace) = incoming {
        return trace;
    }
    let trace = TraceContext::start();
    headers.insert(TRACEPARENT, trace.to_header_value());
    // The spec forbids reading tracestate when traceparent could not be parsed; it belongs to a
    // trace this request is no longer part of.
    headers.remove(&TRACESTATE);
    trace
}

/// Two lowercase hex digits as a byte. Uppercase is rejected, as the specification requires.
fn hex_byte(pair: &[u8]) -> Option<u8> {
    fn digit(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        }
    }
    Some(digit(pair[0])? << 4 | digit(pair[1])?)
}

fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex_into(&mut out, bytes);
    String::from_utf8(out).unwrap_or_default()
}

/// Lowercase hex of `bytes` into `out`, which is twice as long.
fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}
