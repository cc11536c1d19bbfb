//! strata: HTTP middleware as an onion.
//!
//! - [`stack`]: the core, generic over request and response types. [`Middleware`] is one trait with
//!   an `async fn handle(&self, req, next)`; [`from_fn`] makes one from a plain async function;
//!   [`Stack`] is an ordered list of layers whose first entry is the outermost, and [`Stack::serve`]
//!   wraps an endpoint in it. A panic in a layer becomes a response at that layer's boundary.
//! - [`check`]: layers declare [`Fact`]s about themselves; [`Stack::check`] turns them into
//!   ordering diagnostics (what is wrong, why, the fix).
//! - [`http`]: the HTTP instantiation — [`http::Request`], [`http::Response`], [`http::Body`] and
//!   response helpers.
//! - [`middleware`]: the production middlewares, one file each.
//! - [`apps`]: ready-made endpoints, such as `StaticFiles` (feature `static-files`) for a directory
//!   of files.
//! - [`server`] (feature `server`, on by default): [`serve`] serves a stack on a `TcpListener` —
//!   HTTP/1.1 and h2c on one port, connection timeouts and cap, graceful shutdown.
//! - `tower` (feature `tower`, on by default): a stack as a `tower::Layer`, any tower layer in a
//!   stack, and [`Service`] as a `tower::Service`.
//!
//! ```
//! use strata::http::{Body, Request, Response, Stack, from_fn};
//!
//! let service = Stack::new()
//!     .with(from_fn(|req, next| async move {
//!         let mut res = next.run(req).await;
//!         res.headers_mut().insert("x-outer", "1".parse().unwrap());
//!         res
//!     }))
//!     .serve(|_req: Request| async { Response::new(Body::from("hello")) });
//! # let _ = service;
//! ```
#![deny(unsafe_code)]
// docs.rs builds with `--cfg docsrs`: feature-gated items then say which feature they need.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

pub mod apps;
pub mod check;
pub mod http;
pub mod middleware;
#[cfg(feature = "server")]
pub mod server;
pub mod stack;
#[cfg(feature = "tower")]
pub mod tower;

pub use check::{Diagnostic, Fact, Facts, Severity};
#[cfg(feature = "server")]
pub use server::serve;
pub use stack::{
    BoxFuture, Endpoint, FromFn, FromPanic, Inspect, LayerInfo, LayerTime, LayerTimer, Middleware, NamedLayer, Next,
    Panic, Run, Service, Stack, from_fn,
};

/// The Rust snippets of the markdown docs, compiled and run as doctests so that they cannot drift
/// from the API (`cargo test -p strata-http --doc`).
#[cfg(doctest)]
mod markdown_docs {
    #[doc = include_str!("../README.md")]
    struct CrateReadme;
    #[doc = include_str!("../../../README.md")]
    struct Readme;
    #[doc = include_str!("../../../docs/middleware.md")]
    struct Middleware;
    #[doc = include_str!("../../../docs/middleware/access_log.md")]
    struct MiddlewareAccessLog;
    #[doc = include_str!("../../../docs/middleware/basic_auth.md")]
    struct MiddlewareBasicAuth;
    #[doc = include_str!("../../../docs/middleware/body_limit.md")]
    struct MiddlewareBodyLimit;
    #[doc = include_str!("../../../docs/middleware/compression.md")]
    struct MiddlewareCompression;
    #[doc = include_str!("../../../docs/middleware/cors.md")]
    struct MiddlewareCors;
    #[doc = include_str!("../../../docs/middleware/errors.md")]
    struct MiddlewareErrors;
    #[doc = include_str!("../../../docs/middleware/rate_limit.md")]
    struct MiddlewareRateLimit;
    #[doc = include_str!("../../../docs/middleware/request_id.md")]
    struct MiddlewareRequestId;
    #[doc = include_str!("../../../docs/middleware/timeout.md")]
    struct MiddlewareTimeout;
    #[doc = include_str!("../../../docs/middleware/timing.md")]
    struct MiddlewareTiming;
    #[cfg(feature = "forward-auth")]
    #[doc = include_str!("../../../docs/middleware/forward_auth.md")]
    struct MiddlewareForwardAuth;
    #[cfg(feature = "redirect")]
    #[doc = include_str!("../../../docs/middleware/redirect.md")]
    struct MiddlewareRedirect;
    #[cfg(feature = "rewrite")]
    #[doc = include_str!("../../../docs/middleware/rewrite.md")]
    struct MiddlewareRewrite;
    #[doc = include_str!("../../../docs/middleware/security_headers.md")]
    struct MiddlewareSecurityHeaders;
    #[doc = include_str!("../../../docs/middleware/headers.md")]
    struct MiddlewareHeaders;
    #[cfg(feature = "static-files")]
    #[doc = include_str!("../../../docs/static.md")]
    struct StaticFiles;
    #[doc = include_str!("../../../docs/middleware/ip_filter.md")]
    struct MiddlewareIpFilter;
    #[doc = include_str!("../../../docs/middleware/concurrency_limit.md")]
    struct MiddlewareConcurrencyLimit;
    #[cfg(feature = "jwt")]
    #[doc = include_str!("../../../docs/middleware/jwt.md")]
    struct MiddlewareJwt;
}
