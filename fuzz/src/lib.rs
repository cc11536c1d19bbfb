//! The checks behind strata's fuzz targets, one function per parser that reads bytes from the
//! network or from a config file.
//!
//! Each check takes the fuzzer's bytes, feeds them to the parser through its public API (a
//! middleware in a real stack where the parser is private to it) and asserts what must hold for
//! every input: no panic, and the parser's own properties (a normalised path normalises to itself,
//! a duration is described in a form that parses back to it, an error names its line and column).
//!
//! The same functions run twice: under libFuzzer from `fuzz/fuzz_targets/*.rs`, and over the kept
//! corpus (`fuzz/corpus/<target>/`) as a plain test of the gateway crate
//! (`crates/strata-gateway/tests/fuzz_corpus.rs`, which includes this file as a module), so the
//! corpus guards against regressions on every `cargo test` without a fuzzing toolchain.
//!
//! A stack turns a panic inside a layer into a 500. Under libFuzzer the panic hook aborts first, so
//! it is still a crash; in the plain test the checks assert the status is not a 500 instead.
#![deny(unsafe_code)]

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use strata::http::client_ip::{ForwardedHeader, TrustedProxies, client_ip};
use strata::http::path::{EscapedSlashes, Normalized, PathPolicy};
use strata::http::{AuthenticatedUser, Body, GeneratedError, Response, Service, Stack};
use strata::middleware::rate_limit::gcra::{Gcra, parse_rate};
use strata::middleware::{
    BasicAuth, BuildContext, Compression, Cors, CorsConfig, Errors, MAX_DURATION, RateLimit, RateLimitConfig,
    RequestId, RequestIdConfig, TraceContext, describe_duration, parse_duration, parse_duration_at_most,
};

/// A check: panics when the input breaks a property of its parser.
pub type Check = fn(&[u8]);

/// Every check, by the name of its fuzz target and corpus directory.
pub const TARGETS: &[(&str, Check)] = &[
    ("path_normalize", path_normalize),
    ("qvalue_lists", qvalue_lists),
    ("basic_auth_header", basic_auth_header),
    ("htpasswd", htpasswd),
    ("cors_origin", cors_origin),
    ("trace_context", trace_context),
    ("client_ip", client_ip_headers),
    ("rate_and_duration", rate_and_duration),
    ("config", config),
];

/// One runtime for the middlewares' futures, made once: building one per input would dominate.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a current-thread runtime")
    })
}

fn call(service: &Service, req: Request<Body>) -> Response {
    runtime().block_on(service.call(req))
}

/// The input as lines, each one usable as a header value (lines that are not are skipped).
fn header_lines(text: &str) -> Vec<HeaderValue> {
    text.split('\n').filter_map(|line| HeaderValue::from_str(line).ok()).collect()
}

fn is_control(c: char) -> bool {
    c.is_ascii_control()
}

// ---- path normalisation ----------------------------------------------------------------------------

/// `PathPolicy::normalize` under all six policies: never panics; a path it returns starts with `/`,
/// has no `.`/`..` segment, no control character or raw backslash, no `//` when merging, no
/// encoded slash under `Reject`, and normalises to itself (served as is, never redirected again).
pub fn path_normalize(data: &[u8]) {
    let Ok(path) = std::str::from_utf8(data) else { return };
    for merge in [true, false] {
        for action in [EscapedSlashes::Reject, EscapedSlashes::Keep, EscapedSlashes::Redirect] {
            let policy = PathPolicy::new().merge_slashes(merge).escaped_slashes(action);
            let out = match policy.normalize(path) {
                Err(e) => {
                    assert!(!e.detail().is_empty());
                    continue;
                }
                Ok(Normalized::Path(p)) => p.into_owned(),
                Ok(Normalized::Redirect(p)) => {
                    assert_eq!(action, EscapedSlashes::Redirect, "{path:?}: only Redirect redirects");
                    p
                }
            };
            let context = || format!("{path:?} → {out:?} (merge {merge}, {action:?})");
            assert!(out.starts_with('/'), "{}", context());
            assert!(!out.split('/').any(|s| s == "." || s == ".."), "dot segment left: {}", context());
            assert!(!out.contains(is_control) && !out.contains('\\'), "{}", context());
            if merge {
                assert!(!out.contains("//"), "slashes not merged: {}", context());
            }
            if action == EscapedSlashes::Reject {
                let upper = out.to_ascii_uppercase();
                assert!(!upper.contains("%2F") && !upper.contains("%5C"), "{}", context());
            }
            match policy.normalize(&out) {
                Ok(Normalized::Path(Cow::Borrowed(again))) => assert_eq!(again, out, "{}", context()),
                other => panic!("not idempotent: {} normalises to {other:?}", context()),
            }
        }
    }
}

// ---- q-value lists ---------------------------------------------------------------------------------

const BODY_TEXT: &str = "strata compresses text bodies when the client accepts a coding. ";

fn compression_service() -> &'static Service {
    static SERVICE: OnceLock<Service> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let layer = Compression::default();
        Stack::new().with(layer).serve(|_req: Request<Body>| async {
            let mut res = Response::new(Body::from(BODY_TEXT.repeat(40)));
            res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
            res
        })
    })
}

fn errors_service() -> &'static Service {
    static SERVICE: OnceLock<Service> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let layer = Errors::default();
        Stack::new().with(layer).serve(|_req: Request<Body>| async {
            let mut res = strata::http::response::status(StatusCode::SERVICE_UNAVAILABLE);
            res.extensions_mut().insert(GeneratedError::new());
            res
        })
    })
}

/// The q-value grammar (`strata::http::headers::parse_qvalue`) on the first line; every line as an
/// `Accept-Encoding` line through the compression layer and as an `Accept` line through the
/// errors layer. A coding is chosen only when the client named it (or `*`); the error keeps its
/// status and comes in one of the three formats.
pub fn qvalue_lists(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let first = text.split('\n').next().unwrap_or_default();
    if let Some(q) = strata::http::headers::parse_qvalue(first) {
        assert!(q <= 1000 && (first.starts_with('0') || first.starts_with('1')), "{first:?} → {q}");
    }
    let lines = header_lines(&text);

    let mut req = Request::new(Body::empty());
    for line in &lines {
        req.headers_mut().append(header::ACCEPT_ENCODING, line.clone());
    }
    let res = call(compression_service(), req);
    assert_eq!(res.status(), StatusCode::OK, "{lines:?}");
    if let Some(coding) = res.headers().get(header::CONTENT_ENCODING) {
        let coding = coding.to_str().expect("a coding name").to_ascii_lowercase();
        assert!(["br", "zstd", "gzip"].contains(&coding.as_str()), "{coding}");
        let named = lines.iter().any(|l| {
            let l = String::from_utf8_lossy(l.as_bytes()).to_ascii_lowercase();
            l.contains(&coding) || l.contains('*')
        });
        assert!(named, "{coding} chosen for {lines:?}");
    }

    let mut req = Request::new(Body::empty());
    for line in &lines {
        req.headers_mut().append(header::ACCEPT, line.clone());
    }
    let res = call(errors_service(), req);
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{lines:?}");
    let content_type = res.headers().get(header::CONTENT_TYPE).map(|v| v.as_bytes().to_vec()).unwrap_or_default();
    let content_type = String::from_utf8_lossy(&content_type);
    assert!(
        ["text/plain", "application/problem+json", "text/html"].iter().any(|t| content_type.starts_with(t)),
        "{content_type} for {lines:?}"
    );
}

// ---- Authorization: Basic ----------------------------------------------------------------------------

/// `{SHA}` of `secret`: a fast scheme, so each input costs microseconds, not an argon2 run.
const ALICE_HASH: &str = "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=";

fn basic_auth_service() -> &'static Service {
    static SERVICE: OnceLock<Service> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let auth = BasicAuth::builder().user("alice", ALICE_HASH).max_failures(0).build().expect("a valid user");
        Stack::new().with(auth).serve(|req: Request<Body>| async move {
            let user = req.extensions().get::<AuthenticatedUser>().map(|u| u.0.to_string()).unwrap_or_default();
            let mut res = Response::new(Body::empty());
            if let Ok(value) = HeaderValue::from_str(&user) {
                res.headers_mut().insert("x-user", value);
            }
            res
        })
    })
}

/// Every line as an `Authorization` line (repeated lines are repeated headers) in front of a
/// `basic_auth` layer with one user, `alice:secret`. The answer is a 200 for alice or a 401 with
/// a challenge; a 200 needs exactly one `Authorization` line.
pub fn basic_auth_header(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let lines = header_lines(&text);
    let mut req = Request::new(Body::empty());
    for line in &lines {
        req.headers_mut().append(header::AUTHORIZATION, line.clone());
    }
    let res = call(basic_auth_service(), req);
    match res.status() {
        StatusCode::OK => {
            assert_eq!(lines.len(), 1, "accepted repeated Authorization headers: {lines:?}");
            assert_eq!(res.headers().get("x-user").map(HeaderValue::as_bytes), Some(&b"alice"[..]), "{lines:?}");
        }
        StatusCode::UNAUTHORIZED => assert!(res.headers().contains_key(header::WWW_AUTHENTICATE)),
        other => panic!("{other} for {lines:?}"),
    }
}

// ---- htpasswd ------------------------------------------------------------------------------------------

/// The input as an htpasswd file (through `BasicAuthBuilder::htpasswd`): built or refused with an
/// error naming the field, never a panic. Plaintext entries are allowed when the input's first byte
/// is odd, so both settings are explored.
///
/// Inputs with argon2 (`$argon2`) or bcrypt (`$2`) entries are skipped: building computes a dummy
/// hash at the entry's cost on purpose (equal timing for unknown users), which would make inputs
/// with absurd costs slow rather than wrong. Their parsers are the `password-hash` and `bcrypt`
/// crates'.
pub fn htpasswd(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if text.contains("$argon2") || text.contains("$2") {
        return;
    }
    thread_local! {
        static FILE: std::path::PathBuf = std::env::temp_dir().join(format!(
            "strata-fuzz-htpasswd-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ).replace(['(', ')'], ""));
    }
    let path = FILE.with(Clone::clone);
    std::fs::write(&path, text).expect("the temporary directory is writable");
    let allow_plaintext = data.first().is_some_and(|b| b % 2 == 1);
    match BasicAuth::builder().htpasswd(&path).allow_plaintext(allow_plaintext).build() {
        Ok(auth) => {
            for (user, _) in auth.weak_hashes() {
                assert!(!user.is_empty() && !user.contains(':'), "{user:?}");
            }
        }
        Err(e) => {
            assert!(!e.message.is_empty());
            assert!(matches!(e.field, Some("htpasswd" | "users") | None), "{e:?}");
        }
    }
}

// ---- CORS --------------------------------------------------------------------------------------------

/// All lines but the last as `allow_origins`, the last as a request's `Origin`. A config is built or
/// refused with an error for `allow_origins`; a built layer answers a preflight and a simple request
/// with `Access-Control-Allow-Origin` exactly when `Cors::allows_origin` says the origin may read.
pub fn cors_origin(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines: Vec<&str> = text.split('\n').collect();
    let origin = lines.pop().unwrap_or_default();
    let config =
        CorsConfig { allow_origins: lines.iter().map(|line| line.to_string()).collect(), ..CorsConfig::default() };
    let cors = match Cors::from_config(config, &BuildContext::default()) {
        Ok(cors) => cors,
        Err(e) => {
            assert!(!e.message.is_empty());
            return;
        }
    };
    let Ok(origin) = HeaderValue::from_str(origin) else { return };
    let allowed = cors.allows_origin(&origin);
    let service = Stack::new().with(cors).serve(|_req: Request<Body>| async { Response::new(Body::empty()) });

    let mut preflight = Request::new(Body::empty());
    *preflight.method_mut() = Method::OPTIONS;
    preflight.headers_mut().insert(header::ORIGIN, origin.clone());
    preflight.headers_mut().insert(header::ACCESS_CONTROL_REQUEST_METHOD, HeaderValue::from_static("GET"));
    let res = call(&service, preflight);
    assert_ne!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(res.headers().contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN), allowed, "preflight from {origin:?}");
    assert_eq!(res.status().is_success(), allowed, "preflight from {origin:?}: {}", res.status());

    let mut simple = Request::new(Body::empty());
    simple.headers_mut().insert(header::ORIGIN, origin.clone());
    let res = call(&service, simple);
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers().contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN), allowed, "GET from {origin:?}");
}

// ---- trace context and request ids --------------------------------------------------------------------

fn request_id_service() -> &'static Service {
    static SERVICE: OnceLock<Service> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let layer =
            RequestId::from_config(RequestIdConfig::default(), &BuildContext::default()).expect("defaults build");
        // The endpoint answers with the trace headers it received, for the check to compare.
        Stack::new().with(layer).serve(|req: Request<Body>| async move {
            let mut res = Response::new(Body::empty());
            for name in ["traceparent", "tracestate", "x-request-id"] {
                for value in req.headers().get_all(name) {
                    res.headers_mut().append(HeaderName::from_static(name), value.clone());
                }
            }
            if let Some(trace) = req.extensions().get::<TraceContext>() {
                res.extensions_mut().insert(*trace);
            }
            res
        })
    })
}

/// `TraceContext::parse` on the whole input (a version-00 value prints back as it came), then the
/// lines through a `request_id` layer: line 1 as `traceparent`, line 2 as `x-request-id`, the rest as
/// `tracestate`. Inner layers see exactly one valid `traceparent`; the caller's is kept when valid,
/// otherwise its `tracestate` is dropped; a request id is always set.
pub fn trace_context(data: &[u8]) {
    if let Some(trace) = TraceContext::parse(data) {
        assert_ne!(trace.version, 0xff);
        assert!(trace.trace_id != [0; 16] && trace.parent_id != [0; 8]);
        let printed = trace.to_header_value();
        if trace.version == 0 {
            assert_eq!(printed.as_bytes(), data);
        } else {
            assert_eq!(printed.as_bytes(), &data[..55]);
        }
    }

    let text = String::from_utf8_lossy(data);
    let lines: Vec<Option<HeaderValue>> = text.split('\n').map(|l| HeaderValue::from_str(l).ok()).collect();
    let mut req = Request::new(Body::empty());
    let incoming = lines.first().cloned().flatten();
    if let Some(traceparent) = &incoming {
        req.headers_mut().insert("traceparent", traceparent.clone());
    }
    if let Some(Some(id)) = lines.get(1) {
        req.headers_mut().insert("x-request-id", id.clone());
    }
    let states: Vec<HeaderValue> = lines.iter().skip(2).flatten().cloned().collect();
    for state in &states {
        req.headers_mut().append("tracestate", state.clone());
    }
    let res = call(request_id_service(), req);
    assert_eq!(res.status(), StatusCode::OK);
    let seen: Vec<&HeaderValue> = res.headers().get_all("traceparent").iter().collect();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let trace = TraceContext::parse(seen[0].as_bytes()).expect("inner layers see a valid traceparent");
    assert_eq!(
        res.extensions().get::<TraceContext>().map(|t| (t.trace_id, t.parent_id)),
        Some((trace.trace_id, trace.parent_id))
    );
    let kept = incoming.as_ref().is_some_and(|v| TraceContext::parse(v.as_bytes()).is_some());
    if kept {
        assert_eq!(Some(seen[0]), incoming.as_ref());
        assert_eq!(res.headers().get_all("tracestate").iter().count(), states.len());
    } else {
        assert!(res.headers().get("tracestate").is_none(), "a tracestate outlived its invalid traceparent");
    }
    assert!(res.headers().contains_key("x-request-id"), "no request id");
}

// ---- client IP ---------------------------------------------------------------------------------------------

/// Line 1: trusted CIDRs separated by spaces; line 2: the peer's address; the rest: header lines, sent
/// as both `X-Forwarded-For` and `Forwarded`, read under either setting. An untrusted peer is always
/// the client; the client is always in canonical form (an IPv4-mapped address as IPv4).
pub fn client_ip_headers(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let cidrs: Vec<&str> = lines.next().unwrap_or_default().split(' ').filter(|s| !s.is_empty()).collect();
    let trusted = match TrustedProxies::parse(&cidrs) {
        Ok(trusted) => trusted,
        Err(e) => {
            assert_eq!(cidrs.get(e.index), Some(&e.text.as_str()));
            TrustedProxies::parse(["0.0.0.0/0", "::/0"]).expect("valid blocks")
        }
    };
    let peer = lines.next().and_then(|p| p.trim().parse().ok()).unwrap_or([127, 0, 0, 1].into());
    let mut headers = HeaderMap::new();
    for line in lines.filter_map(|l| HeaderValue::from_str(l).ok()) {
        headers.append("x-forwarded-for", line.clone());
        headers.append("forwarded", line);
    }
    for reading in [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded] {
        let trusted = trusted.clone().reading(reading);
        let client = client_ip(peer, &headers, &trusted);
        assert_eq!(client, client.to_canonical(), "{reading:?}");
        if !trusted.contains(peer) {
            assert_eq!(client, peer.to_canonical(), "an untrusted peer's header was read ({reading:?})");
        }
    }
}

// ---- rates and durations ---------------------------------------------------------------------------------

/// `parse_duration` (and a tighter bound), `parse_rate` and a whole `rate_limit` config on the input.
/// A duration is at most its bound and its description parses back to it; a rate admits at least one
/// request per at least one second; a `rate_limit` builds or names the field at fault.
pub fn rate_and_duration(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_duration(text) {
        Ok(d) => {
            assert!(d <= MAX_DURATION, "{text:?} → {d:?}");
            assert_eq!(parse_duration(&describe_duration(d)), Ok(d), "{text:?}");
        }
        Err(e) => assert!(e.contains("expected a duration"), "{e}"),
    }
    if let Ok(d) = parse_duration_at_most(text, Duration::from_secs(90)) {
        assert!(d <= Duration::from_secs(90));
    }
    if let Ok((count, period)) = parse_rate(text) {
        assert!(count >= 1 && period >= Duration::from_secs(1), "{text:?}");
        if let Ok(gcra) = Gcra::new(count, period, count) {
            let _ = gcra.in_micros();
        }
    }
    let config = RateLimitConfig { rate: Some(text.to_string()), ..RateLimitConfig::default() };
    if let Err(e) = RateLimit::from_config(config, &BuildContext::default()) {
        assert!(!e.message.is_empty());
    }
}

// ---- the gateway's config ------------------------------------------------------------------------------------

/// Middleware kinds whose construction has no side effect beyond memory: the others read files
/// (`basic_auth`'s htpasswd, `errors` pages), open log files (`access_log`), connect to Redis
/// (`rate_limit`) or compute slow hashes, which have their own targets.
const SIDE_EFFECT_FREE: &[&str] = &["request_id", "timing", "cors", "compression", "timeout", "body_limit"];

/// The input as a config file, as `strata check` loads it: `Config::parse`, then `Gateway::build`
/// when every middleware is of a side-effect-free kind. Every error names the file, a line that
/// exists and a column, and prints as `file:line:column: error: …`.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    const FILE: &str = "fuzz.toml";
    let check_errors = |errors: &strata_gateway::config::ConfigErrors| {
        assert!(!errors.0.is_empty(), "an empty error list");
        let lines = text.split('\n').count();
        for e in &errors.0 {
            assert_eq!(e.file, FILE);
            assert!(e.line >= 1 && e.line <= lines && e.column >= 1, "{e:?} in {lines} lines");
            assert!(!e.message.is_empty());
            let prefix = format!("{FILE}:{}:{}: error: ", e.line, e.column);
            assert!(e.to_string().starts_with(&prefix), "{e}");
        }
    };
    let config = match strata_gateway::config::Config::parse(FILE, text, strata_gateway::apps::NAMES) {
        Ok(config) => config,
        Err(errors) => return check_errors(&errors),
    };
    if !config.middleware.iter().all(|m| SIDE_EFFECT_FREE.contains(&m.kind.as_str())) {
        return;
    }
    // Upstream routes make connection pools, which belong to a runtime.
    let _guard = runtime().enter();
    if let Err(errors) = strata_gateway::Gateway::build(config, &BuildContext::default()) {
        check_errors(&errors);
    }
}
