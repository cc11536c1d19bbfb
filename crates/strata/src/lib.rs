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
//! - `tower` (feature `tower`, on by default): a stack as a `tower::Layer`, any tower layer in a
//!   stack, and [`Service`] as a `tower::Service`.
//!
//! ```
//! use strata::http::{Body, Request, Response};
//! use strata::{from_fn, Stack};
//!
//! let service = Stack::new()
//!     .with(from_fn(|req: Request, next: strata::http::Next| async move {
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

pub mod check;
pub mod http;
pub mod middleware;
pub mod stack;
#[cfg(feature = "tower")]
pub mod tower;

pub use check::{Diagnostic, Fact, Facts, Severity};
pub use stack::{
    BoxFuture, Endpoint, FromFn, FromPanic, Inspect, LayerInfo, LayerTime, LayerTimer, Middleware, NamedLayer, Next,
    Panic, Run, Service, Stack, from_fn,
};
