//! `request_id`: gives every request an id, and keeps its W3C trace context valid.
//!
//! The id comes from the incoming header (by default `x-request-id`) when it is well formed and
//! trusted, otherwise it is a fresh UUID v4. It is put in the request's extensions as
//! [`crate::http::AssignedRequestId`] (for logs and inner layers), set on the request (so an upstream sees
//! it) and set on the response, whatever produced that response: the app, an inner layer that
//! answered by itself, or the 500 an inner panic became.
//!
//! With `trace_context = "propagate"` (the default) the `traceparent` header is validated as the
//! [W3C Trace Context](https://www.w3.org/TR/trace-context/) specifies. A valid one passes through
//! untouched, with its `tracestate`. A missing or invalid one is replaced by a new trace, and the
//! `tracestate` is dropped, since it described a trace that no longer applies. Either way the
//! result is in the request's extensions as [`TraceContext`].
//!
//! ```
//! use strata::http::{Body, Request, Response, Stack};
//! use strata::middleware::RequestId;
//!
//! let service = Stack::new()
//!     .with(RequestId::default()) // outermost: every layer inside sees the id
//!     .serve(|req: Request| async move {
//!         let id = req.extensions().get::<strata::http::AssignedRequestId>().cloned();
//!         Response::new(Body::from(format!("{:?}", id)))
//!     });
//! # let _ = service;
//! ```

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use crate::check::{Fact, Facts};
use crate::http::{Next, Request, Response};
use crate::middleware::{BuildContext, ConfigError};
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

/// The `[middleware.NAME]` table of kind `request_id`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestIdConfig {
    /// The header that carries the id, on the request and on the response. Default `x-request-id`.
    pub header: String,
    /// Whether a well-formed incoming id is reused. When false every request gets a new id (use it
    /// when clients are untrusted and ids must be unique). Default `true`.
    pub trust_incoming: bool,
    /// What to do with W3C Trace Context headers. Default [`TraceContextMode::Propagate`].
    pub trace_context: TraceContextMode,
}

impl Default for RequestIdConfig {
    fn default() -> Self {
        RequestIdConfig {
            header: "x-request-id".to_string(),
            trust_incoming: true,
            trace_context: TraceContextMode::Propagate,
        }
    }
}

/// What the `request_id` layer does with `traceparent` and `tracestate`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceContextMode {
    /// Keep a valid `traceparent` (and its `tracestate`); start a new trace when it is missing or
    /// invalid (and drop the `tracestate`). The result is in the request's extensions as [`TraceContext`].
    #[default]
    Propagate,
    /// Leave both headers alone and set no [`TraceContext`] extension.
    Off,
}

/// The request-id middleware (kind `request_id`). Build it with [`RequestId::new`] from a config, or
/// [`RequestId::default`] for the defaults.
///
/// Not to be confused with [`crate::http::AssignedRequestId`], the extension this layer puts on each request.
#[derive(Clone, Debug)]
pub struct RequestId {
    header: HeaderName,
    trust_incoming: bool,
    trace_context: TraceContextMode,
}

impl RequestId {
    /// Checks `config` and builds the layer. Fails when `header` is not a valid header name, or names
    /// one of the trace context headers (the layer rewrites those by its own rules).
    pub fn new(config: RequestIdConfig, _ctx: &BuildContext) -> Result<Self, ConfigError> {
        let header = HeaderName::from_bytes(config.header.as_bytes()).map_err(|_| {
            ConfigError::field(
                "header",
                format!(
                    "`{}` is not a valid header name: expected letters, digits and `-`, e.g. \"x-request-id\"",
                    config.header
                ),
            )
        })?;
        // The default name as a static one: a name parsed at run time is reference-counted, and
        // this layer clones it twice per request, from every worker thread.
        let header = if header == DEFAULT_HEADER { DEFAULT_HEADER } else { header };
        if header == TRACEPARENT || header == TRACESTATE {
            return Err(ConfigError::field(
                "header",
                format!(
                    "`{header}` is a trace context header, not a place for a request id: use e.g. \"x-request-id\""
                ),
            ));
        }
        Ok(RequestId { header, trust_incoming: config.trust_incoming, trace_context: config.trace_context })
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
            _ => new_request_id(),
        }
    }
}

impl Default for RequestId {
    /// The defaults: header `x-request-id`, incoming ids trusted, trace context propagated.
    fn default() -> Self {
        let config = RequestIdConfig::default();
        RequestId { header: DEFAULT_HEADER, trust_incoming: config.trust_incoming, trace_context: config.trace_context }
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

fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    shared_header_value(buf)
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

/// 128 uniformly random bits from the `uuid` crate's fast thread-local generator.
///
/// A v4 UUID fixes 6 of its 128 bits (version and variant). XORing one with a second rotated by 64
/// lands every fixed bit on a random one (the fixed positions 62..64 and 76..80 move to 126..128 and
/// 12..16), so every bit of the result is random, as trace ids should be.
fn random_u128() -> u128 {
    uuid::Uuid::new_v4().as_u128() ^ uuid::Uuid::new_v4().as_u128().rotate_left(64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::from_fn;
    use crate::http::{Body, Service, Stack, response};
    use crate::middleware::test_support::request;
    use http::StatusCode;

    /// What the app saw, handed back in the response's extensions.
    #[derive(Clone)]
    struct Seen {
        headers: HeaderMap,
        id: Option<AssignedId>,
        trace: Option<TraceContext>,
    }

    fn echo_app(req: Request) -> impl std::future::Future<Output = Response> + Send {
        let seen = Seen {
            headers: req.headers().clone(),
            id: req.extensions().get::<AssignedId>().cloned(),
            trace: req.extensions().get::<TraceContext>().copied(),
        };
        async move {
            let mut res = Response::new(Body::from("ok"));
            res.extensions_mut().insert(seen);
            res
        }
    }

    fn service(config: RequestIdConfig) -> Service {
        Stack::new().with(RequestId::new(config, &BuildContext::default()).unwrap()).serve(echo_app)
    }

    async fn call(service: &Service, headers: &[(&str, &str)]) -> (Response, Seen) {
        let res = service.call(request("GET", "/", headers)).await;
        let seen = res.extensions().get::<Seen>().cloned().expect("the app ran");
        (res, seen)
    }

    fn is_uuid_v4(value: &HeaderValue) -> bool {
        uuid::Uuid::parse_str(value.to_str().unwrap()).is_ok_and(|u| u.get_version_num() == 4)
    }

    #[tokio::test]
    async fn a_valid_incoming_id_is_reused_everywhere() {
        let svc = service(RequestIdConfig::default());
        let id = "abc-123._~+/=:@XYZ";
        let (res, seen) = call(&svc, &[("x-request-id", id)]).await;
        assert_eq!(res.headers()["x-request-id"], id);
        assert_eq!(seen.headers["x-request-id"], id);
        assert_eq!(seen.id, Some(AssignedId(HeaderValue::from_static(id))));
        let longest = "a".repeat(128);
        let (res, _) = call(&svc, &[("x-request-id", &longest)]).await;
        assert_eq!(res.headers()["x-request-id"], longest.as_str());
    }

    #[tokio::test]
    async fn inner_layers_see_the_id_as_the_current_one_until_the_response() {
        let svc = Stack::new().with(RequestId::default()).serve(|_req: Request| async move {
            let current = AssignedId::current().expect("set for the layers inside");
            response::text(StatusCode::OK, current.to_string())
        });
        let res = svc.call(request("GET", "/", &[])).await;
        let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
        let body = http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
        assert_eq!(body, id.as_bytes());
        assert_eq!(AssignedId::current(), None, "not outside the layer");
    }

    #[tokio::test]
    async fn a_malformed_incoming_id_is_replaced_with_a_uuid() {
        let svc = service(RequestIdConfig::default());
        let too_long = "a".repeat(129);
        for bad in ["", "has space", "semi;colon", "quote\"d", "per%cent", too_long.as_str()] {
            let (res, seen) = call(&svc, &[("x-request-id", bad)]).await;
            let id = &res.headers()["x-request-id"];
            assert!(is_uuid_v4(id), "{bad:?} was replaced by {id:?}");
            assert_eq!(&seen.headers["x-request-id"], id, "the app saw the replacement");
            assert_eq!(seen.headers.get_all("x-request-id").iter().count(), 1);
            assert_eq!(seen.id.as_ref().map(|i| &i.0), Some(id));
        }
        // Two ids are ambiguous: both go, one new id replaces them.
        let (res, seen) = call(&svc, &[("x-request-id", "one"), ("x-request-id", "two")]).await;
        assert!(is_uuid_v4(&res.headers()["x-request-id"]));
        assert_eq!(seen.headers.get_all("x-request-id").iter().count(), 1);
    }

    #[tokio::test]
    async fn a_missing_id_is_generated_and_unique() {
        let svc = service(RequestIdConfig::default());
        let (a, _) = call(&svc, &[]).await;
        let (b, _) = call(&svc, &[]).await;
        assert!(is_uuid_v4(&a.headers()["x-request-id"]));
        assert_ne!(a.headers()["x-request-id"], b.headers()["x-request-id"]);
    }

    #[tokio::test]
    async fn untrusted_incoming_ids_are_always_replaced() {
        let svc = service(RequestIdConfig { trust_incoming: false, ..Default::default() });
        let (res, seen) = call(&svc, &[("x-request-id", "valid-id")]).await;
        assert!(is_uuid_v4(&res.headers()["x-request-id"]));
        assert_eq!(seen.headers["x-request-id"], res.headers()["x-request-id"]);
    }

    #[tokio::test]
    async fn the_header_name_is_configurable() {
        let svc = service(RequestIdConfig { header: "X-Correlation-ID".into(), ..Default::default() });
        let (res, seen) = call(&svc, &[("x-correlation-id", "corr-1")]).await;
        assert_eq!(res.headers()["x-correlation-id"], "corr-1");
        assert_eq!(seen.headers["x-correlation-id"], "corr-1");
        assert!(res.headers().get("x-request-id").is_none());
    }

    #[test]
    fn bad_header_names_are_config_errors() {
        for bad in ["", "has space", "x-id\n", "traceparent", "TraceState"] {
            let err =
                RequestId::new(RequestIdConfig { header: bad.into(), ..Default::default() }, &BuildContext::default())
                    .unwrap_err();
            assert_eq!(err.field, Some("header"), "{bad:?}");
        }
    }

    #[test]
    fn config_defaults_and_unknown_fields() {
        let c: RequestIdConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(
            (c.header.as_str(), c.trust_incoming, c.trace_context),
            ("x-request-id", true, TraceContextMode::Propagate)
        );
        let c: RequestIdConfig = serde_json::from_str(r#"{"trace_context": "off", "trust_incoming": false}"#).unwrap();
        assert_eq!((c.trust_incoming, c.trace_context), (false, TraceContextMode::Off));
        assert!(serde_json::from_str::<RequestIdConfig>(r#"{"headr": "x"}"#).is_err());
        assert!(serde_json::from_str::<RequestIdConfig>(r#"{"trace_context": "on"}"#).is_err());
        let layer = RequestId::default();
        assert_eq!((layer.header().as_str(), layer.kind()), ("x-request-id", "request_id"));
        assert!(layer.facts().has(Fact::SetsRequestId));
    }

    #[tokio::test]
    async fn short_circuited_and_panicked_responses_carry_the_id() {
        let rid = || RequestId::new(RequestIdConfig::default(), &BuildContext::default()).unwrap();
        let rejecting = Stack::new()
            .with(rid())
            .with(from_fn(|_req: Request, _next: Next| async { response::status(StatusCode::UNAUTHORIZED) }))
            .serve(echo_app);
        let res = rejecting.call(request("GET", "/", &[("x-request-id", "rejected-1")])).await;
        assert_eq!(
            (res.status(), &res.headers()["x-request-id"]),
            (StatusCode::UNAUTHORIZED, &HeaderValue::from_static("rejected-1"))
        );

        let panicking_layer = Stack::new()
            .with(rid())
            .with(from_fn(|_req: Request, _next: Next| async {
                if true {
                    panic!("layer broke");
                }
                Response::new(Body::empty())
            }))
            .serve(echo_app);
        let res = panicking_layer.call(request("GET", "/", &[("x-request-id", "boom-1")])).await;
        assert_eq!(
            (res.status(), &res.headers()["x-request-id"]),
            (StatusCode::INTERNAL_SERVER_ERROR, &HeaderValue::from_static("boom-1"))
        );

        let panicking_app = Stack::new().with(rid()).serve(|_req: Request| async {
            if true {
                panic!("app broke");
            }
            Response::new(Body::empty())
        });
        let res = panicking_app.call(request("GET", "/", &[])).await;
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(is_uuid_v4(&res.headers()["x-request-id"]));
    }

    #[tokio::test]
    async fn an_inner_response_id_is_overridden_by_the_assigned_one() {
        let svc = Stack::new().with(RequestId::default()).serve(|_req: Request| async {
            let mut res = Response::new(Body::empty());
            res.headers_mut().insert("x-request-id", HeaderValue::from_static("from-the-app"));
            res
        });
        let res = svc.call(request("GET", "/", &[("x-request-id", "ours")])).await;
        assert_eq!(res.headers()["x-request-id"], "ours");
    }

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_parsing_follows_the_spec() {
        let t = TraceContext::parse(VALID.as_bytes()).unwrap();
        assert_eq!(t.version, 0);
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_id_hex(), "00f067aa0ba902b7");
        assert!(t.sampled() && !t.started_here);
        assert_eq!(t.to_header_value(), VALID);
        assert!(!TraceContext::parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().sampled());

        let invalid = [
            ("uppercase hex", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"),
            ("uppercase flags", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A"),
            ("version ff", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ("zero trace id", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            ("zero parent id", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            ("version 00 too long", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-"),
            ("version 00 with extra", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"),
            ("too short", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"),
            ("short trace id", "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01"),
            ("wrong separator", "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01"),
            ("non-hex", "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01"),
            ("non-hex version", "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ("higher version, no dash after flags", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"),
            ("empty", ""),
        ];
        for (why, value) in invalid {
            assert_eq!(TraceContext::parse(value.as_bytes()), None, "{why}: {value}");
        }

        // A future version may add fields after the flags, behind a dash.
        let future =
            TraceContext::parse(b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds")
                .unwrap();
        assert_eq!((future.version, future.trace_id_hex().as_str()), (0xcc, "4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(TraceContext::parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some());
    }

    #[test]
    fn started_traces_are_valid_random_and_sampled() {
        let a = TraceContext::start();
        let b = TraceContext::start();
        assert!(a.started_here && a.sampled() && a.version == 0);
        assert_ne!(a.trace_id, b.trace_id);
        assert_ne!(a.parent_id, b.parent_id);
        let header = a.to_header_value();
        assert_eq!(header.len(), 55);
        let reparsed = TraceContext::parse(header.as_bytes()).unwrap();
        assert_eq!(reparsed, TraceContext { started_here: false, ..a });
        let expected = format!("{:02x}-{}-{}-{:02x}", a.version, a.trace_id_hex(), a.parent_id_hex(), a.flags);
        assert_eq!(header.to_str().unwrap(), expected);
        // The fixed UUID bits do not show through: over many ids, the version nibble of a v4 UUID
        // (bits 76..80) is not always 4.
        assert!((0..64).map(|_| (random_u128() >> 76) & 0xf).any(|nibble| nibble != 4));
    }

    #[tokio::test]
    async fn a_valid_traceparent_and_its_tracestate_pass_through() {
        let svc = service(RequestIdConfig::default());
        let (_, seen) = call(
            &svc,
            &[("traceparent", VALID), ("tracestate", "congo=t61rcWkgMzE"), ("tracestate", "rojo=00f067aa0ba902b7")],
        )
        .await;
        assert_eq!(seen.headers["traceparent"], VALID);
        let states: Vec<_> = seen.headers.get_all("tracestate").iter().collect();
        assert_eq!(states, ["congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7"]);
        let trace = seen.trace.unwrap();
        assert_eq!((trace.trace_id_hex().as_str(), trace.started_here), ("4bf92f3577b34da6a3ce929d0e0e4736", false));

        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later";
        let (_, seen) = call(&svc, &[("traceparent", future), ("tracestate", "a=b")]).await;
        assert_eq!(
            (&seen.headers["traceparent"], &seen.headers["tracestate"]),
            (&HeaderValue::from_static(future), &HeaderValue::from_static("a=b"))
        );
    }

    #[tokio::test]
    async fn an_invalid_or_missing_traceparent_starts_a_new_trace_and_drops_tracestate() {
        let svc = service(RequestIdConfig::default());
        let cases: [&[(&str, &str)]; 4] = [
            &[("traceparent", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), ("tracestate", "a=b")],
            &[("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"), ("tracestate", "a=b")],
            &[("tracestate", "a=b")],
            &[("traceparent", VALID), ("traceparent", VALID), ("tracestate", "a=b")],
        ];
        for headers in cases {
            let (_, seen) = call(&svc, headers).await;
            let trace = seen.trace.expect("a trace context extension");
            assert!(trace.started_here, "{headers:?}");
            assert_ne!(trace.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(seen.headers.get_all("traceparent").iter().count(), 1);
            assert_eq!(seen.headers["traceparent"], trace.to_header_value());
            assert!(seen.headers["traceparent"].to_str().unwrap().ends_with("-01"));
            assert!(seen.headers.get("tracestate").is_none(), "{headers:?}");
        }
    }

    #[tokio::test]
    async fn trace_context_off_leaves_the_headers_alone() {
        let svc = service(RequestIdConfig { trace_context: TraceContextMode::Off, ..Default::default() });
        let bad = "ff-not-a-trace";
        let (_, seen) = call(&svc, &[("traceparent", bad), ("tracestate", "a=b")]).await;
        assert_eq!(
            (&seen.headers["traceparent"], &seen.headers["tracestate"]),
            (&HeaderValue::from_static(bad), &HeaderValue::from_static("a=b"))
        );
        assert!(seen.trace.is_none());
        let (_, seen) = call(&svc, &[]).await;
        assert!(seen.headers.get("traceparent").is_none() && seen.trace.is_none());
    }

    #[test]
    fn request_id_charset() {
        assert!(is_valid_request_id(b"A-z_0.9~+/=:@"));
        assert!(!is_valid_request_id(b""));
        assert!(!is_valid_request_id("é".as_bytes()));
        assert!(!is_valid_request_id(b"a\tb"));
        assert!(is_valid_request_id(&[b'x'; 128]) && !is_valid_request_id(&[b'x'; 129]));
    }
}
