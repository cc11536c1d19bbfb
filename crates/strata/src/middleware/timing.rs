//! `timing`: how long the response took, for people and for browsers.
//!
//! ```
//! use http::HeaderName;
//! use strata::http::{Body, Request, Response, Stack};
//! use strata::middleware::Timing;
//!
//! let timing = Timing::builder()
//!     .response_time_header(HeaderName::from_static("x-took"))
//!     .allow_origins(["https://app.example.com"])
//!     .build()?;
//! let service = Stack::new()
//!     .with(timing) // first: it times only what is inside it
//!     .serve(|_req: Request| async { Response::new(Body::from("hello")) });
//! # let _ = service;
//! # Ok::<(), strata::middleware::ConfigError>(())
//! ```
//!
//! - A response-time header (default `x-response-time: 12.345ms`): time from entering this layer
//!   until the response head came back to it.
//! - `Server-Timing` with one metric per layer inside this one — the time spent in that layer alone,
//!   the layers inside it excluded — plus `app` and `total`, so a browser's devtools show where the
//!   time went. Upstream `Server-Timing` metrics are kept beside them.
//! - Optionally `Timing-Allow-Origin`, which lets cross-origin pages read those timings.
//!
//! Put it first in the stack: it times only what is inside it. Times are to the response head; the
//! body streams afterwards and is not included.

use std::time::{Duration, Instant};

use http::header::{HeaderName, HeaderValue};

use super::ConfigError;
use crate::Middleware;
use crate::http::headers::is_tchar;
use crate::http::{Next, Request, Response};

const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");
const TIMING_ALLOW_ORIGIN: HeaderName = HeaderName::from_static("timing-allow-origin");
const RESPONSE_TIME: HeaderName = HeaderName::from_static("x-response-time");

/// The `timing` middleware. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Timing {
    header: Option<HeaderName>,
    server_timing: bool,
    per_layer: bool,
    timing_allow_origin: Option<HeaderValue>,
}

impl Default for Timing {
    /// `x-response-time` and per-layer `Server-Timing`, no `Timing-Allow-Origin`.
    fn default() -> Self {
        Timing::builder().build().expect("the default timing is valid")
    }
}

impl Timing {
    /// A builder, starting from the defaults: `x-response-time`, per-layer `Server-Timing`, no
    /// `Timing-Allow-Origin`.
    pub fn builder() -> TimingBuilder {
        TimingBuilder::default()
    }
}

/// Who may read the timings cross-origin.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum AllowOrigin {
    #[default]
    Nobody,
    Any,
    /// Origins still to be checked by [`TimingBuilder::build`].
    Origins(Vec<String>),
}

/// Builds a [`Timing`] from typed values; [`TimingBuilder::build`] checks the origins and
/// prepares the header values.
#[derive(Clone, Debug)]
pub struct TimingBuilder {
    header: Option<HeaderName>,
    server_timing: bool,
    per_layer: bool,
    allow_origin: AllowOrigin,
}

impl Default for TimingBuilder {
    fn default() -> Self {
        TimingBuilder {
            header: Some(RESPONSE_TIME),
            server_timing: true,
            per_layer: true,
            allow_origin: AllowOrigin::Nobody,
        }
    }
}

impl TimingBuilder {
    /// The response-time header; `None` turns it off. Default `x-response-time`.
    pub fn response_time_header(mut self, header: impl Into<Option<HeaderName>>) -> Self {
        self.header = header.into();
        self
    }

    /// Whether to add `Server-Timing`. Default `true`.
    pub fn server_timing(mut self, on: bool) -> Self {
        self.server_timing = on;
        self
    }

    /// Whether `Server-Timing` lists every layer (`true`) or only `total` (`false`). Default `true`.
    pub fn per_layer(mut self, on: bool) -> Self {
        self.per_layer = on;
        self
    }

    /// Lets any origin read the timings (`Timing-Allow-Origin: *`).
    pub fn allow_any_origin(mut self) -> Self {
        self.allow_origin = AllowOrigin::Any;
        self
    }

    /// Lets these origins read the timings cross-origin (`Timing-Allow-Origin`), each an origin
    /// such as `https://app.example.com` (scheme, host, optional port), checked by
    /// [`build`](TimingBuilder::build); `"*"` among them means any origin. Replaces the origins set
    /// before; an empty list sends no header (the default).
    pub fn allow_origins<I>(mut self, origins: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let origins: Vec<String> = origins.into_iter().map(Into::into).collect();
        self.allow_origin = if origins.is_empty() { AllowOrigin::Nobody } else { AllowOrigin::Origins(origins) };
        self
    }

    /// Checks the origins and builds the layer.
    ///
    /// # Errors
    /// A [`ConfigError`] for the field `timing_allow_origin` when an origin is not `*` or an
    /// `http`/`https` origin.
    pub fn build(self) -> Result<Timing, ConfigError> {
        let timing_allow_origin = match self.allow_origin {
            AllowOrigin::Nobody => None,
            AllowOrigin::Any => Some(HeaderValue::from_static("*")),
            AllowOrigin::Origins(origins) => {
                for origin in &origins {
                    if origin != "*" && !is_origin(origin) {
                        return Err(ConfigError::field(
                            "timing_allow_origin",
                            format!("`{origin}`: expected \"*\" or an origin such as \"https://app.example.com\""),
                        ));
                    }
                }
                let value = if origins.iter().any(|o| o == "*") { "*".to_string() } else { origins.join(", ") };
                Some(HeaderValue::try_from(value).map_err(|_| {
                    ConfigError::field("timing_allow_origin", "expected origins made of visible ASCII characters")
                })?)
            }
        };
        // The default name as a static one: a name parsed at run time is reference-counted, and
        // this layer clones it per response, from every worker thread.
        let header = self.header.map(|name| if name == RESPONSE_TIME { RESPONSE_TIME } else { name });
        Ok(Timing { header, server_timing: self.server_timing, per_layer: self.per_layer, timing_allow_origin })
    }
}

#[cfg(feature = "config")]
pub use config::TimingConfig;

#[cfg(feature = "config")]
mod config {
    use serde::Deserialize;

    use super::{Timing, TimingBuilder};
    use crate::middleware::{BuildContext, ConfigError};
    use http::HeaderName;

    /// The `[middleware.NAME]` table of kind `timing`.
    #[derive(Clone, Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct TimingConfig {
        /// The response-time header; an empty string turns it off. Default `x-response-time`.
        pub header: String,
        /// Whether to add `Server-Timing`. Default `true`.
        pub server_timing: bool,
        /// Whether `Server-Timing` lists every layer (`true`) or only `total` (`false`). Default `true`.
        pub per_layer: bool,
        /// Origins allowed to read the timings cross-origin (`Timing-Allow-Origin`): `["*"]` or a
        /// list of origins. Default: none (the header is not sent).
        pub timing_allow_origin: Vec<String>,
    }

    impl Default for TimingConfig {
        fn default() -> Self {
            TimingConfig {
                header: "x-response-time".to_string(),
                server_timing: true,
                per_layer: true,
                timing_allow_origin: Vec::new(),
            }
        }
    }

    impl Timing {
        /// Builds the layer a config table describes, through [`TimingBuilder`].
        pub fn from_config(config: TimingConfig, _ctx: &BuildContext) -> Result<Self, ConfigError> {
            let header = if config.header.is_empty() {
                None
            } else {
                Some(HeaderName::try_from(config.header.as_str()).map_err(|_| {
                    ConfigError::field("header", format!("`{}` is not a valid header name", config.header))
                })?)
            };
            TimingBuilder::default()
                .response_time_header(header)
                .server_timing(config.server_timing)
                .per_layer(config.per_layer)
                .allow_origins(config.timing_allow_origin)
                .build()
        }
    }
}

fn is_origin(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once("://") else { return false };
    matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.contains(['/', '?', '#', ' ', ','])
}

/// Milliseconds with microsecond precision (rounded to the nearest), as `Server-Timing` and
/// `x-response-time` show them: `12.345`. 64-bit integer arithmetic only: this runs several times
/// per response, and float formatting (or 128-bit division) costs more than everything else the
/// layer does.
fn write_millis(out: &mut Vec<u8>, d: Duration) {
    let micros = d.as_secs().saturating_mul(1_000_000).saturating_add(u64::from(d.subsec_nanos() + 500) / 1_000);
    let (whole, frac) = (micros / 1_000, micros % 1_000);
    let mut digits = [0u8; 24];
    let mut at = digits.len();
    for digit in [frac % 10, frac / 10 % 10, frac / 100] {
        at -= 1;
        digits[at] = b'0' + digit as u8;
    }
    at -= 1;
    digits[at] = b'.';
    let mut rest = whole;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// A metric name must be a token; layer names from code may hold anything else (names from a
/// config are tokens already, and are copied as they are).
fn push_metric_name(out: &mut Vec<u8>, name: &str) {
    if name.is_empty() {
        out.push(b'_');
    } else if name.bytes().all(is_tchar) {
        out.extend_from_slice(name.as_bytes());
    } else {
        out.extend(name.chars().map(|c| if c.is_ascii() && is_tchar(c as u8) { c as u8 } else { b'_' }));
    }
}

impl Middleware<Request, Response> for Timing {
    async fn handle(&self, req: Request, next: Next) -> Response {
        let started = Instant::now();
        let (next, timer) = if self.server_timing && self.per_layer {
            let (next, timer) = next.timed();
            (next, Some(timer))
        } else {
            (next, None)
        };
        let mut res = next.run(req).await;
        let total = started.elapsed();
        let headers = res.headers_mut();
        if let Some(name) = &self.header {
            let mut value = Vec::with_capacity(16);
            write_millis(&mut value, total);
            value.extend_from_slice(b"ms");
            if let Ok(value) = HeaderValue::try_from(value) {
                headers.insert(name.clone(), value);
            }
        }
        if self.server_timing {
            // One buffer for the whole header: this runs on every response.
            let mut metrics = Vec::with_capacity(128);
            for (name, spent) in timer.iter().flat_map(|t| t.exclusive()) {
                push_metric_name(&mut metrics, name);
                metrics.extend_from_slice(b";dur=");
                write_millis(&mut metrics, spent);
                metrics.extend_from_slice(b", ");
            }
            metrics.extend_from_slice(b"total;dur=");
            write_millis(&mut metrics, total);
            if let Ok(value) = HeaderValue::try_from(metrics) {
                // Appended: an upstream's own Server-Timing metrics stay beside ours.
                headers.append(SERVER_TIMING, value);
            }
        }
        if let Some(origin) = &self.timing_allow_origin {
            headers.insert(TIMING_ALLOW_ORIGIN, origin.clone());
        }
        res
    }

    fn kind(&self) -> &'static str {
        "timing"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::from_fn;
    use crate::http::{Stack, response};
    use crate::middleware::test_support::request;
    use http::StatusCode;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)
    }

    fn sleeper(ms: u64) -> impl Middleware<Request, Response> {
        from_fn(move |req: Request, next: Next| async move {
            std::thread::sleep(Duration::from_millis(ms));
            next.run(req).await
        })
    }

    /// Parses `a;dur=1.5, b;dur=2` into (name, ms) pairs.
    fn metrics(value: &str) -> Vec<(String, f64)> {
        value
            .split(", ")
            .map(|m| {
                let (name, dur) = m.split_once(";dur=").unwrap();
                (name.to_string(), dur.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn server_timing_lists_each_layer_alone_then_the_app_and_the_total() {
        let service =
            Stack::new().with(Timing::default()).with_named("auth", sleeper(20)).with_named("log", sleeper(0)).serve(
                |_req: Request| async {
                    std::thread::sleep(Duration::from_millis(10));
                    response::text(StatusCode::OK, "ok")
                },
            );
        let res = block_on(service.call(request("GET", "/", &[])));
        let m = metrics(res.headers()[SERVER_TIMING].to_str().unwrap());
        let names: Vec<&str> = m.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["auth", "log", "app", "total"]);
        assert!(m[0].1 >= 20.0, "auth alone {:?}", m[0]);
        assert!(m[1].1 < m[0].1, "log alone is less than auth alone: {m:?}");
        assert!(m[2].1 >= 10.0, "app {:?}", m[2]);
        let parts: f64 = m[..3].iter().map(|(_, ms)| ms).sum();
        assert!(m[3].1 >= parts - 0.01, "total covers the parts: {m:?}");
        let rt = res.headers()["x-response-time"].to_str().unwrap();
        let rt: f64 = rt.strip_suffix("ms").unwrap().parse().unwrap();
        assert!(rt >= 30.0, "{rt}");
    }

    #[test]
    fn errors_from_inner_layers_are_timed_too() {
        let service = Stack::new()
            .with(Timing::default())
            .with(from_fn(|_req: Request, _next: Next| async move { response::status(StatusCode::UNAUTHORIZED) }))
            .serve(|_req: Request| async {
                if true {
                    panic!("not reached");
                }
                response::status(StatusCode::OK)
            });
        let res = block_on(service.call(request("GET", "/", &[])));
        assert_eq!(res.status(), 401);
        assert!(res.headers().contains_key("x-response-time"));
        assert!(res.headers()[SERVER_TIMING].to_str().unwrap().contains("total;dur="));
        let panicking = Stack::new().with(Timing::default()).serve(|_req: Request| async {
            if true {
                panic!("boom");
            }
            response::status(StatusCode::OK)
        });
        let res = block_on(panicking.call(request("GET", "/", &[])));
        assert_eq!(res.status(), 500);
        assert!(res.headers()[SERVER_TIMING].to_str().unwrap().starts_with("app;dur="));
    }

    #[test]
    fn upstream_metrics_are_kept_and_options_apply() {
        let timing = Timing::builder()
            .response_time_header(HeaderName::from_static("x-took"))
            .per_layer(false)
            .allow_origins(["https://a.example", "https://b.example:8443"])
            .build()
            .unwrap();
        let service = Stack::new().with(timing).with_named("inner", sleeper(0)).serve(|_req: Request| async {
            let mut res = response::status(StatusCode::OK);
            res.headers_mut().insert(SERVER_TIMING, HeaderValue::from_static("db;dur=4.2"));
            res
        });
        let res = block_on(service.call(request("GET", "/", &[])));
        let values: Vec<&str> = res.headers().get_all(SERVER_TIMING).iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(values.len(), 2);
        assert_eq!(values[0], "db;dur=4.2");
        assert!(values[1].starts_with("total;dur="), "only the total without per_layer: {values:?}");
        assert!(res.headers().contains_key("x-took") && !res.headers().contains_key("x-response-time"));
        assert_eq!(res.headers()[TIMING_ALLOW_ORIGIN], "https://a.example, https://b.example:8443");
    }

    #[test]
    fn durations_are_milliseconds_rounded_to_the_microsecond() {
        let millis = |nanos: u64| {
            let mut out = Vec::new();
            write_millis(&mut out, Duration::from_nanos(nanos));
            String::from_utf8(out).unwrap()
        };
        assert_eq!(millis(0), "0.000");
        assert_eq!(millis(499), "0.000");
        assert_eq!(millis(500), "0.001");
        assert_eq!(millis(12_345_678), "12.346");
        assert_eq!(millis(1_000_000), "1.000");
        assert_eq!(millis(999_999_999), "1000.000");
        assert_eq!(millis(86_400_000_000_000), "86400000.000");
        assert_eq!(millis(u64::MAX), "18446744073709.552");
        let mut longest = Vec::new();
        write_millis(&mut longest, Duration::MAX);
        assert_eq!(longest, b"18446744073709551.615", "saturates instead of overflowing");
        // The same figure as `{:.3}` of the float milliseconds, away from rounding ties.
        for nanos in (0..5_000_000u64).step_by(7_919).filter(|n| n % 1_000 != 500) {
            assert_eq!(millis(nanos), format!("{:.3}", nanos as f64 / 1e6), "{nanos} ns");
        }
    }

    #[test]
    fn layer_names_become_tokens() {
        let token = |name: &str| {
            let mut out = Vec::new();
            push_metric_name(&mut out, name);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(token("log"), "log");
        assert_eq!(token("my layer/1"), "my_layer_1");
        assert_eq!(token("é"), "_");
        assert_eq!(token(""), "_");
    }

    #[test]
    fn the_builder_rejects_bad_origins_and_any_origin_is_a_star() {
        for bad in [vec!["example.com"], vec!["https://a.example", "ftp://b.example"], vec!["https://a.example/path"]] {
            let err = Timing::builder().allow_origins(bad.clone()).build().unwrap_err();
            assert_eq!(err.field, Some("timing_allow_origin"), "{bad:?}: {err}");
        }
        let star = |timing: Timing| {
            let service = Stack::new().with(timing).serve(|_req: Request| async { response::status(StatusCode::OK) });
            block_on(service.call(request("GET", "/", &[]))).headers().get(TIMING_ALLOW_ORIGIN).cloned()
        };
        assert_eq!(star(Timing::builder().allow_any_origin().build().unwrap()).unwrap(), "*");
        assert_eq!(star(Timing::builder().allow_origins(["https://a.example", "*"]).build().unwrap()).unwrap(), "*");
        let none: [&str; 0] = [];
        assert_eq!(star(Timing::builder().allow_any_origin().allow_origins(none).build().unwrap()), None);
        let off = Timing::builder().response_time_header(None).server_timing(false).build().unwrap();
        let service = Stack::new().with(off).serve(|_req: Request| async { response::status(StatusCode::OK) });
        assert!(block_on(service.call(request("GET", "/", &[]))).headers().is_empty());
    }

    #[cfg(feature = "config")]
    #[test]
    fn bad_config_is_rejected_with_the_field() {
        let bad_header = TimingConfig { header: "bad header".into(), ..TimingConfig::default() };
        let ctx = crate::middleware::BuildContext::default();
        assert_eq!(Timing::from_config(bad_header, &ctx).unwrap_err().field, Some("header"));
        let bad_origin = TimingConfig { timing_allow_origin: vec!["example.com".into()], ..TimingConfig::default() };
        assert_eq!(Timing::from_config(bad_origin, &ctx).unwrap_err().field, Some("timing_allow_origin"));
        let off = TimingConfig { header: String::new(), server_timing: false, ..TimingConfig::default() };
        let service = Stack::new()
            .with(Timing::from_config(off, &ctx).unwrap())
            .serve(|_req: Request| async { response::status(StatusCode::OK) });
        let res = block_on(service.call(request("GET", "/", &[])));
        assert!(res.headers().is_empty(), "{:?}", res.headers());
    }
}
