//! `timeout`: a deadline for the response head. When the layers inside it (and the app or upstream)
//! have not answered in time, the request is abandoned and the client gets `504 Gateway Timeout`.
//!
//! ```
//! use std::time::Duration;
//! use strata::http::{Request, Response, Stack};
//! use strata::middleware::Timeout;
//!
//! let service = Stack::new()
//!     .with(Timeout::after(Duration::from_secs(5))?)
//!     .serve(|_req: Request| async { Response::new("fast enough".into()) });
//! # let _ = service;
//! # Ok::<(), strata::middleware::ConfigError>(())
//! ```
//!
//! - The deadline covers the **response head** only. A response that has started streams for as
//!   long as it needs: a long download or a server-sent events stream is not cut off, and a slow
//!   body is the client's and upstream's business, not a reason to break a response half sent.
//! - Abandoning means dropping the inner future: an upstream request in flight is cancelled (its
//!   connection closed), an app's work stops at its next `.await`.
//! - The 504 is marked [`GeneratedError`](crate::http::GeneratedError), so an `errors` layer outside formats it, and the layers
//!   outside decorate it like any other response (CORS, request id, timing).
//!
//! Place it inside the layers that must see every request (access log, CORS) so they log and
//! decorate the 504.
//!
//! The deadline is above zero and at most [`Timeout::MAX`] (a day): [`Timeout::after`] refuses
//! anything else, as the gateway's `duration = "…"` key does (with the `config` feature,
//! `TimeoutConfig` and `Timeout::from_config`).

use std::time::Duration;

use http::StatusCode;

use super::ConfigError;
use crate::Middleware;
use crate::check::{Fact, Facts};
use crate::http::{Next, Refusal, Request, Response, response};

/// What clients are told when the deadline passes (as text, or reformatted by an `errors` layer).
const DETAIL: &str = "The server did not answer in time.";

/// The `timeout` middleware. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Timeout {
    duration: Duration,
}

impl Timeout {
    /// The longest deadline accepted: a day. A response head later than that is not a response
    /// anyone waits for, and a deadline computed from a far larger value could overflow.
    pub const MAX: Duration = Duration::from_secs(24 * 3600);

    /// A timeout layer with the given deadline: above zero and at most [`Timeout::MAX`], else an
    /// error naming the config key `duration`.
    pub fn after(duration: Duration) -> Result<Self, ConfigError> {
        if duration.is_zero() || duration > Self::MAX {
            return Err(ConfigError::field("duration", "expected a duration above zero and at most 24h"));
        }
        Ok(Timeout { duration })
    }

    /// The deadline.
    pub fn duration(&self) -> Duration {
        self.duration
    }
}

#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub use self::config::TimeoutConfig;

#[cfg(feature = "config")]
mod config {
    use serde::Deserialize;

    use super::Timeout;
    use crate::middleware::{BuildContext, ConfigError, parse_duration};

    /// The `[middleware.NAME]` table of kind `timeout`.
    #[derive(Clone, Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct TimeoutConfig {
        /// How long the inner layers may take to produce the response head: `"500ms"`, `"30s"`, `"2m"`.
        /// Required.
        pub duration: String,
    }

    impl Timeout {
        /// Parses the table's duration and builds through [`Timeout::after`].
        pub fn from_config(config: TimeoutConfig, _ctx: &BuildContext) -> Result<Self, ConfigError> {
            let duration = parse_duration(&config.duration).map_err(|msg| ConfigError::field("duration", msg))?;
            Timeout::after(duration)
        }
    }
}

impl Middleware<Request, Response> for Timeout {
    async fn handle(&self, req: Request, next: Next) -> Response {
        match tokio::time::timeout(self.duration, next.run(req)).await {
            Ok(res) => res,
            Err(_) => {
                tracing::warn!(
                    timeout = ?self.duration,
                    request_id = crate::http::AssignedRequestId::current().map(tracing::field::display),
                    "no response head in time: answered 504"
                );
                let res = response::generated_error(StatusCode::GATEWAY_TIMEOUT, DETAIL);
                Refusal::mark(res, format!("no response head within {:?}", self.duration))
            }
        }
    }

    fn kind(&self) -> &'static str {
        "timeout"
    }

    fn facts(&self) -> Facts {
        // It answers by itself, with an error of its own making.
        Facts::of(&[Fact::ShortCircuits, Fact::CanFail])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Body, GeneratedError, Stack};
    use crate::middleware::test_support::request;

    #[cfg(feature = "config")]
    fn config(duration: &str) -> Result<Timeout, ConfigError> {
        Timeout::from_config(TimeoutConfig { duration: duration.into() }, &crate::middleware::BuildContext::default())
    }

    #[test]
    fn the_typed_deadline_is_validated_as_the_config_is() {
        assert_eq!(Timeout::after(Duration::from_millis(1)).unwrap().duration(), Duration::from_millis(1));
        assert_eq!(Timeout::after(Timeout::MAX).unwrap().duration(), Duration::from_secs(24 * 3600));
        for bad in [Duration::ZERO, Timeout::MAX + Duration::from_nanos(1), Duration::MAX] {
            let e = Timeout::after(bad).unwrap_err();
            assert_eq!(e.field, Some("duration"), "{bad:?}: {e}");
        }
    }

    #[cfg(feature = "config")]
    #[test]
    fn durations_are_validated_at_build_time() {
        assert_eq!(config("250ms").unwrap().duration(), Duration::from_millis(250));
        assert_eq!(config("2m").unwrap().duration(), Duration::from_secs(120));
        for bad in ["0s", "soon", "10", "25h"] {
            let e = config(bad).unwrap_err();
            assert_eq!(e.field, Some("duration"), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn a_slow_inner_layer_gets_a_marked_504() {
        let service =
            Stack::new().with(Timeout::after(Duration::from_millis(50)).unwrap()).serve(|_req: Request| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Response::new(Body::from("too late"))
            });
        let started = std::time::Instant::now();
        let res = service.call(request("GET", "/", &[])).await;
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(res.extensions().get::<GeneratedError>().and_then(|g| g.detail()), Some(DETAIL));
        assert_eq!(res.extensions().get::<Refusal>().unwrap().reason, "no response head within 50ms");
        assert_eq!(res.body().as_bytes().unwrap(), b"504 Gateway Timeout\n\nThe server did not answer in time.\n");
    }

    #[tokio::test]
    async fn a_fast_answer_passes_untouched_and_its_body_may_stream_longer() {
        let service =
            Stack::new().with(Timeout::after(Duration::from_millis(100)).unwrap()).serve(|_req: Request| async {
                type Chunk = Result<http_body::Frame<bytes::Bytes>, std::io::Error>;
                let (tx, body) = futures_channel::mpsc::unbounded::<Chunk>();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let _ = tx.unbounded_send(Ok(http_body::Frame::data(bytes::Bytes::from_static(b"late body"))));
                });
                Response::new(Body::wrap(http_body_util::StreamBody::new(body)))
            });
        let res = service.call(request("GET", "/", &[])).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.into_body().collect_limited(100).await.unwrap();
        assert_eq!(body, "late body");
    }
}
