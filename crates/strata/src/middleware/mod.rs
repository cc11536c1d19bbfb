//! The production middlewares, a module (or a folder, when it has parts) each.
//!
//! Every middleware is built in Rust from typed values — a constructor (`Timeout::after`) or a
//! builder (`Cors::builder()…build()`) whose one validating function returns a [`ConfigError`]
//! naming the field at fault. With the `config` feature, each also has a serde table (`XConfig`,
//! the gateway's TOML) and `X::from_config(config, &BuildContext)`, which only turns strings into
//! typed values and goes through the same validation: the gateway's registry of kinds is one line
//! per kind.
//!
//! The heavy ones are features: `compression`, `basic-auth`, `rate-limit` (and its `redis` store).

use std::fmt;
#[cfg(feature = "config")]
use std::path::{Path, PathBuf};

#[cfg(feature = "compression")]
#[cfg_attr(docsrs, doc(cfg(feature = "compression")))]
pub mod compression;
#[cfg(all(feature = "compression", feature = "config"))]
pub use compression::CompressionConfig;
#[cfg(feature = "compression")]
pub use compression::{Compression, CompressionBuilder};

pub mod errors;
#[cfg(feature = "config")]
pub use errors::ErrorsConfig;
pub use errors::{Errors, ErrorsBuilder, GeneratedError};

pub mod cors;
#[cfg(feature = "config")]
pub use cors::CorsConfig;
pub use cors::{Cors, CorsBuilder};
#[cfg(feature = "basic-auth")]
#[cfg_attr(docsrs, doc(cfg(feature = "basic-auth")))]
pub mod basic_auth;
#[cfg(all(feature = "basic-auth", feature = "config"))]
pub use basic_auth::BasicAuthConfig;
#[cfg(feature = "basic-auth")]
pub use basic_auth::{BasicAuth, BasicAuthBuilder, HashScheme, VerifyPool};

pub mod access_log;
pub mod request_id;
#[cfg(feature = "config")]
pub use access_log::AccessLogConfig;
pub use access_log::{AccessLog, AccessLogBuilder, AccessLogSink, LogFormat, LogOutput, LogOutputs};
#[cfg(feature = "config")]
pub use request_id::RequestIdConfig;
pub use request_id::{IdGenerator, RequestId, RequestIdBuilder, TraceContext, TraceContextMode, UuidV4};
pub mod timing;
#[cfg(feature = "config")]
pub use timing::TimingConfig;
pub use timing::{Timing, TimingBuilder};
pub mod timeout;
pub use timeout::Timeout;
#[cfg(feature = "config")]
pub use timeout::TimeoutConfig;
pub mod body_limit;
pub use body_limit::BodyLimit;
#[cfg(feature = "config")]
pub use body_limit::BodyLimitConfig;
#[cfg(feature = "rate-limit")]
#[cfg_attr(docsrs, doc(cfg(feature = "rate-limit")))]
pub mod rate_limit;
#[cfg(all(feature = "rate-limit", feature = "config"))]
pub use rate_limit::RateLimitConfig;
#[cfg(feature = "rate-limit")]
pub use rate_limit::{Quota, RateLimit, RateLimitBuilder};
#[cfg(feature = "forward-auth")]
#[cfg_attr(docsrs, doc(cfg(feature = "forward-auth")))]
pub mod forward_auth;
#[cfg(all(feature = "forward-auth", feature = "config"))]
pub use forward_auth::ForwardAuthConfig;
#[cfg(feature = "forward-auth")]
pub use forward_auth::{ForwardAuth, ForwardAuthBuilder};
#[cfg(any(feature = "redirect", feature = "rewrite"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "redirect", feature = "rewrite"))))]
pub mod path_rule;
#[cfg(any(feature = "redirect", feature = "rewrite"))]
pub use path_rule::PathRule;
#[cfg(feature = "redirect")]
#[cfg_attr(docsrs, doc(cfg(feature = "redirect")))]
pub mod redirect;
#[cfg(feature = "redirect")]
pub use redirect::{Redirect, RedirectBuilder, TrailingSlash};
#[cfg(all(feature = "redirect", feature = "config"))]
pub use redirect::{RedirectConfig, RedirectRuleConfig};
#[cfg(feature = "rewrite")]
#[cfg_attr(docsrs, doc(cfg(feature = "rewrite")))]
pub mod rewrite;
#[cfg(feature = "rewrite")]
pub use rewrite::{OriginalUri, Rewrite, RewriteBuilder};
#[cfg(all(feature = "rewrite", feature = "config"))]
pub use rewrite::{RewriteConfig, RewriteRuleConfig};
pub mod security_headers;
#[cfg(feature = "config")]
pub use security_headers::SecurityHeadersConfig;
pub use security_headers::{CspNonce, SecurityHeaders, SecurityHeadersBuilder};
pub mod headers;
#[cfg(feature = "config")]
pub use headers::{HeaderRulesConfig, HeadersConfig};
pub use headers::{Headers, HeadersBuilder};
pub mod ip_filter;
pub mod key;
#[cfg(feature = "config")]
pub use ip_filter::IpFilterConfig;
pub use ip_filter::{IpFilter, IpFilterBuilder};
pub mod concurrency_limit;
#[cfg(feature = "config")]
pub use concurrency_limit::ConcurrencyLimitConfig;
pub use concurrency_limit::{ConcurrencyLimit, ConcurrencyLimitBuilder};
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub mod jwt;
#[cfg(all(feature = "jwt", feature = "config"))]
pub use jwt::JwtConfig;
#[cfg(feature = "jwt")]
pub use jwt::{Jwt, JwtBuilder};
#[cfg(any(feature = "basic-auth", feature = "forward-auth"))]
mod mac_cache;
#[cfg(test)]
mod test_support;

/// The longest duration [`parse_duration`] accepts: a year (8760 hours). No timeout or interval
/// sensibly runs longer, and a deadline computed as `Instant + Duration` panics when the sum
/// overflows, so an absurd value must stop at load time rather than in a connection.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
/// Parses a config duration in the humantime forms: `"500ms"`, `"10s"`, `"1.5s"`, `"1m30s"`,
/// `"2h 15m"` (units `ns`, `us`, `ms`, `s`, `m`, `h`, `d`, `w`, and their long names), at most
/// [`MAX_DURATION`]. Shared by every setting that takes one, so they all accept the same forms.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    parse_duration_at_most(text, MAX_DURATION)
}

#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
/// Parses a duration as [`parse_duration`] does, accepting at most `max` (itself capped at
/// [`MAX_DURATION`]), for settings with a tighter sensible bound.
pub fn parse_duration_at_most(text: &str, max: std::time::Duration) -> Result<std::time::Duration, String> {
    let max = max.min(MAX_DURATION);
    let text = text.trim();
    let too_long = || {
        let year = if max == MAX_DURATION { " (365 days)" } else { "" };
        format!("`{text}`: expected a duration of at most {}{year}", describe_duration(max))
    };
    let duration = match humantime::parse_duration(text) {
        Ok(duration) => duration,
        // A number too large for the parser is too long, not malformed.
        Err(humantime::DurationError::NumberOverflow) => return Err(too_long()),
        Err(_) => {
            return Err(format!("`{text}`: expected a duration such as \"500ms\", \"1.5s\", \"1m30s\" or \"2h\""));
        }
    };
    if duration > max {
        return Err(too_long());
    }
    Ok(duration)
}

/// `"24h"`, `"10m"`, `"30s"` or `"500ms"`: the largest whole unit, in the syntax configs use.
pub fn describe_duration(duration: std::time::Duration) -> String {
    let millis = duration.as_millis();
    match millis {
        0 => "0s".to_string(),
        m if m % 3_600_000 == 0 => format!("{}h", m / 3_600_000),
        m if m % 60_000 == 0 => format!("{}m", m / 60_000),
        m if m % 1_000 == 0 => format!("{}s", m / 1_000),
        m => format!("{m}ms"),
    }
}

#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
/// What a constructor may need besides its own config.
#[derive(Clone, Debug, Default)]
pub struct BuildContext {
    /// The directory relative paths in a config are resolved against (the config file's directory).
    pub base_dir: PathBuf,
    /// What the layers built with this context share (threads, for one), rather than each
    /// owning its own.
    pub shared: SharedResources,
}

#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
/// Resources the layers built with one [`BuildContext`] share: each `None` gives every layer its
/// own. The gateway makes them once per process, so its routes and reloads share one bound.
#[derive(Clone, Default)]
pub struct SharedResources {
    /// The threads every `basic_auth` layer verifies slow hashes on, so that they share one bound
    /// on CPU and argon2 memory.
    #[cfg(feature = "basic-auth")]
    #[cfg_attr(docsrs, doc(cfg(feature = "basic-auth")))]
    pub verify_pool: Option<basic_auth::VerifyPool>,
    /// The registry access-log layers open their outputs through, so that layers (and the layers
    /// of a reloaded config) writing to the same place share one output. A server keeps one for
    /// its life; `None` gives each layer an output of its own.
    pub log_outputs: Option<access_log::LogOutputs>,
    /// The client the layers that call other services (an auth service, a JWKS endpoint) send
    /// their requests with; `None` gives each a [`PlainHttpClient`](crate::http::client::PlainHttpClient)
    /// (plain `http://` only). The gateway shares one that also speaks `https://`.
    #[cfg(feature = "client")]
    #[cfg_attr(docsrs, doc(cfg(feature = "client")))]
    pub http_client: Option<std::sync::Arc<dyn crate::http::client::HttpClient>>,
}

#[cfg(feature = "config")]
impl fmt::Debug for SharedResources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("SharedResources");
        #[cfg(feature = "basic-auth")]
        out.field("verify_pool", &self.verify_pool);
        out.field("log_outputs", &self.log_outputs);
        #[cfg(feature = "client")]
        out.field("http_client", &self.http_client.as_ref().map(|_| "HttpClient"));
        out.finish()
    }
}

#[cfg(feature = "config")]
impl SharedResources {
    /// Shares `outputs` between the access-log layers built with these resources.
    pub fn with_log_outputs(mut self, outputs: access_log::LogOutputs) -> Self {
        self.log_outputs = Some(outputs);
        self
    }

    /// Sends the requests of the layers built with these resources (an auth service's, a JWKS
    /// endpoint's) through `client`.
    #[cfg(feature = "client")]
    #[cfg_attr(docsrs, doc(cfg(feature = "client")))]
    pub fn with_http_client(mut self, client: std::sync::Arc<dyn crate::http::client::HttpClient>) -> Self {
        self.http_client = Some(client);
        self
    }

    /// Shares `pool` between the `basic_auth` layers built with these resources.
    #[cfg(feature = "basic-auth")]
    #[cfg_attr(docsrs, doc(cfg(feature = "basic-auth")))]
    pub fn with_verify_pool(mut self, pool: basic_auth::VerifyPool) -> Self {
        self.verify_pool = Some(pool);
        self
    }
}

#[cfg(feature = "config")]
impl BuildContext {
    /// Resolves a path from a config against [`BuildContext::base_dir`].
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() { path.to_path_buf() } else { self.base_dir.join(path) }
    }
}

/// Accepts `"x"` as well as `["x", "y"]`, so `allow_headers = "*"` or `algorithms = "RS256"` reads
/// naturally in TOML.
#[cfg(feature = "config")]
pub(crate) fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct OneOrMany;

    impl<'de> serde::de::Visitor<'de> for OneOrMany {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a list of strings")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<String>, E> {
            Ok(vec![v.to_string()])
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(item) = seq.next_element::<String>()? {
                out.push(item);
            }
            Ok(out)
        }
    }

    deserializer.deserialize_any(OneOrMany)
}

/// A configuration a middleware's constructor rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The config field at fault, when one is (the gateway points at its line and column).
    pub field: Option<&'static str>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl ConfigError {
    /// An error about one field.
    pub fn field(field: &'static str, message: impl Into<String>) -> Self {
        ConfigError { field: Some(field), message: message.into() }
    }

    /// An error about the config as a whole.
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError { field: None, message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(field) => write!(f, "`{field}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::http::{Body, Request, Response, Stack};

    #[test]
    #[cfg(feature = "config")]
    fn durations_parse_in_every_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration(" 10s "), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h 15m"), Ok(Duration::from_secs(8100)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        for bad in ["10", "-1s", "s", "", "1 h x", "1.5", "10 parsecs"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("expected a duration such as"), "{bad}: {e}");
        }
    }

    #[test]
    #[cfg(feature = "config")]
    fn durations_are_bounded_by_a_year_and_overflow_is_an_error() {
        assert_eq!(parse_duration("8760h"), Ok(MAX_DURATION));
        assert_eq!(parse_duration("31536000000ms"), Ok(MAX_DURATION));
        for huge in ["8761h", "525601m", "99999999999999999h", "99999999999999999999999h", "18446744073709551615ms"] {
            let e = parse_duration(huge).unwrap_err();
            assert_eq!(e, format!("`{huge}`: expected a duration of at most 8760h (365 days)"), "{huge}");
        }
    }

    #[test]
    #[cfg(feature = "config")]
    fn a_tighter_bound_is_named_in_its_unit() {
        let hour = Duration::from_secs(3600);
        assert_eq!(parse_duration_at_most("60m", hour), Ok(hour));
        assert_eq!(parse_duration_at_most("61m", hour).unwrap_err(), "`61m`: expected a duration of at most 1h");
        let e = parse_duration_at_most("2s", Duration::from_millis(1500)).unwrap_err();
        assert!(e.ends_with("at most 1500ms"), "{e}");
        // A bound above the global one is capped by it.
        assert!(parse_duration_at_most("9000h", Duration::MAX).is_err());
    }

    #[test]
    fn durations_are_described_in_their_largest_whole_unit() {
        assert_eq!(describe_duration(Duration::from_secs(24 * 3600)), "24h");
        assert_eq!(describe_duration(Duration::from_secs(600)), "10m");
        assert_eq!(describe_duration(Duration::from_secs(90)), "90s");
        assert_eq!(describe_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(describe_duration(Duration::ZERO), "0s");
    }

    // `Duration::MAX` is refused when the layer is built; the longest accepted deadline must not be
    // computed with a panicking `+` either.
    #[tokio::test]
    async fn a_timeout_of_duration_max_answers_instead_of_panicking() {
        assert_eq!(Timeout::after(Duration::MAX).unwrap_err().field, Some("duration"));
        let service = Stack::new()
            .with(Timeout::after(Timeout::MAX).unwrap())
            .serve(|_req: Request| async { Response::new(Body::from("in time")) });
        let res = service.call(Request::new(Body::empty())).await;
        assert_eq!(res.status(), http::StatusCode::OK);
        assert_eq!(res.into_body().collect_limited(100).await.unwrap(), "in time");
    }
}
