//! strata and tower, both ways.
//!
//! - **A stack in a tower app.** [`Stack::into_tower_layer`](crate::stack::Stack::into_tower_layer)
//!   makes a strata stack a [`tower_layer::Layer`]: `axum::Router::new().route(..).layer(stack.into_tower_layer())`.
//!   The request body, whatever its type, becomes a strata [`Body`] (see [`Body::new`]); the service
//!   inside gets an `http::Request<strata::http::Body>` (axum's `Router` and tower-http's services
//!   take any body) and its response body is kept as it is, `size_hint` and `is_end_stream`
//!   included, so `content-length` survives.
//! - **A tower layer in a stack.** [`layer`] makes any tower layer a strata [`NamedLayer`](crate::http::NamedLayer):
//!   `Stack::new().with_layer(strata::tower::layer("powered_by", SetResponseHeaderLayer::overriding(..)))`.
//!   The tower layer wraps a [`NextService`]: the rest of the stack as a `tower::Service`.
//! - [`Service`] is a `tower::Service` (always ready; it never fails, its errors are
//!   responses).
//!
//! # How the bridges pass the request on
//! Both bridges build their services once, when the stack is served or the tower layer applied,
//! never per request: a tower service may hold state that must outlive one request (a concurrency
//! limit's semaphore, a rate limit's bucket), and building one per request would also cost a clone
//! of the layer's configuration each time. What changes per request (the rest of the strata stack,
//! [`Next`]; or the inner tower service, ready for one call) travels in the request's extensions, in a
//! slot the bridge fills and the service on the other side empties. The trade-offs:
//! - the first bridge a request crosses gives it an extension map and a slot (two small
//!   allocations); nested bridges stack their values in that one slot;
//! - a layer on the way that replaces the request's extensions (building a new request from
//!   scratch) cuts the chain: the other side finds no slot and answers a logged `500`;
//! - the rest of the stack runs once per request, with the request it was put on: a tower layer
//!   that calls its inner service with a copy of the request (a retry layer's clone) or a second
//!   time gets a logged `500` for that call.
//!
//! Readiness is honoured where it is asked for: the tower service of a tower layer, and the inner
//! service of a stack used as a tower layer, are each cloned for the request and polled ready
//! before they are called (as `tower::ServiceExt::oneshot` does). The strata side is always ready:
//! its back pressure is a response (a `429`, a `503`).
//!
//! # How errors map
//! strata's errors are responses; a tower service's are `Err` values. An `Err` from a tower layer's
//! service, or from the service a stack wraps, becomes a `500 Internal Server Error` marked
//! [`GeneratedError`] (so an `errors` layer outside formats it for the client), and the error is
//! logged with the layer's name, never shown to the client. A tower layer that means another
//! status says so with a response (tower-http's `TimeoutLayer` answers `408`). A panic in a tower
//! layer is a panic in a strata layer: a `500` at that layer's boundary, the layers outside still run.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::{Either, Map, Ready, ready};
use sync_wrapper::SyncWrapper;
use tower_layer::Layer as TowerLayer;
use tower_service::Service as TowerService;

use crate::http::{Body, BoxError, GeneratedError, Request, Response, response};
use crate::stack::{BoxFuture, Endpoint, FromPanic, Middleware, Next, Run, Service, Stack};

/// The future of a strata service called as a tower service: the stack's own future, never failing.
pub type ServiceFuture<Res> = Map<Run<Res>, fn(Res) -> Result<Res, Infallible>>;

impl<Req, Res> TowerService<Req> for Service<Req, Res>
where
    Req: Send + 'static,
    Res: FromPanic + Send + 'static,
{
    type Response = Res;
    type Error = Infallible;
    type Future = ServiceFuture<Res>;

    /// Always ready: a stack's back pressure is a response, not a wait.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        Service::call(self, req).map(Ok)
    }
}

/// A strata stack as a tower layer; made by
/// [`Stack::into_tower_layer`](crate::stack::Stack::into_tower_layer).
///
/// ```
/// use strata::http::Stack;
/// use strata::middleware::RequestId;
///
/// let app: axum::Router = axum::Router::new()
///     .route("/", axum::routing::get(|| async { "hello" }))
///     .layer(Stack::new().with(RequestId::default()).into_tower_layer());
/// # let _ = app;
/// ```
#[derive(Clone, Debug)]
pub struct StackLayer {
    stack: Stack<Request, Response>,
}

impl StackLayer {
    /// A tower layer of one strata middleware, named after its kind.
    pub fn from_middleware<M: Middleware<Request, Response>>(middleware: M) -> Self {
        Stack::new().with(middleware).into_tower_layer()
    }

    /// The stack this layer applies, outermost layer first.
    pub fn stack(&self) -> &Stack<Request, Response> {
        &self.stack
    }
}

impl Stack<Request, Response> {
    /// This stack as a [`tower_layer::Layer`], for an axum router or any tower service taking an
    /// `http::Request<strata::http::Body>`; see [`crate::tower`].
    pub fn into_tower_layer(self) -> StackLayer {
        StackLayer { stack: self }
    }
}

impl crate::stack::NamedLayer<Request, Response> {
    /// This one layer as a [`tower_layer::Layer`]; see [`Stack::into_tower_layer`].
    pub fn into_tower_layer(self) -> StackLayer {
        Stack::new().with_layer(self).into_tower_layer()
    }

    /// A tower layer as a strata layer: see [`layer`].
    pub fn from_tower<L, ResBody>(name: impl Into<Arc<str>>, tower_layer: L) -> Self
    where
        L: TowerLayer<NextService>,
        L::Service: TowerService<Request, Response = http::Response<ResBody>> + Clone + Send + Sync + 'static,
        <L::Service as TowerService<Request>>::Error: Into<BoxError>,
        <L::Service as TowerService<Request>>::Future: Send + 'static,
        ResBody: http_body::Body<Data = Bytes> + Send + 'static,
        ResBody::Error: Into<BoxError>,
    {
        layer(name, tower_layer)
    }
}

impl<S, ResBody> TowerLayer<S> for StackLayer
where
    S: TowerService<Request, Response = http::Response<ResBody>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Service = StackService<S>;

    /// Serves the stack once, around `inner`: the stack is not rebuilt per request.
    fn layer(&self, inner: S) -> StackService<S> {
        StackService { service: self.stack.clone().serve(InnerEndpoint::<S>(PhantomData)), inner }
    }
}

/// A tower service running a strata stack, then the tower service inside it; made by [`StackLayer`].
#[derive(Clone, Debug)]
pub struct StackService<S> {
    service: Service<Request, Response>,
    inner: S,
}

impl<S, B, ResBody> TowerService<http::Request<B>> for StackService<S>
where
    S: TowerService<Request, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ServiceFuture<Response>;

    /// Always ready: the stack may answer without the inner service, whose readiness is awaited
    /// when a request reaches it.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let mut req = req.map(Body::new);
        // The clone this request will call, once ready, if it gets through the stack.
        put(req.extensions_mut(), self.inner.clone());
        TowerService::call(&mut self.service, req)
    }
}

/// The endpoint of a stack used as a tower layer: the inner tower service the request carries.
struct InnerEndpoint<S>(PhantomData<fn() -> S>);

impl<S, ResBody> Endpoint<Request, Response> for InnerEndpoint<S>
where
    S: TowerService<Request, Response = http::Response<ResBody>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    fn call(&self, mut req: Request) -> BoxFuture<Response> {
        let Some(inner) = take::<S>(req.extensions_mut()) else {
            return Box::pin(ready(lost_slot("the service inside the stack")));
        };
        Box::pin(call_ready(inner, req, "the service inside the stack"))
    }
}

/// The rest of a strata stack (the layers inside a tower layer, then the endpoint) as a
/// `tower::Service`: what a tower layer placed in a stack with [`layer`] wraps.
///
/// Cloneable and always ready. It runs the rest of the stack for the request it is called with,
/// which carries it (see [the module docs](crate::tower)).
#[derive(Clone, Copy, Debug, Default)]
pub struct NextService {
    _private: (),
}

impl TowerService<Request> for NextService {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<ServiceFuture<Response>, Ready<Result<Response, Infallible>>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        match take::<Next<Request, Response>>(req.extensions_mut()) {
            Some(next) => Either::Left(next.run(req).map(Ok)),
            None => Either::Right(ready(Ok(lost_slot("the rest of the stack")))),
        }
    }
}

/// A tower layer as a strata [`NamedLayer`](crate::http::NamedLayer) named `name`, of kind `"tower"`.
///
/// The tower layer is applied once, here, around a [`NextService`]; each request clones the
/// resulting service, polls it ready and calls it. That service must be `Clone`, and `Send + Sync`
/// (a strata layer is shared by every request), with a `Send` future, an error that converts into
/// [`BoxError`] and any `Send` body. The layer declares no facts ([`Facts::NONE`](crate::Facts::NONE)): say what it
/// does with [`NamedLayer::with_facts`](crate::stack::NamedLayer::with_facts) so that
/// [`Stack::check`] can order it.
///
/// ```
/// use http::{HeaderValue, header::HeaderName};
/// use strata::http::{Body, Request, Response, Stack};
/// use tower_http::set_header::SetResponseHeaderLayer;
///
/// let powered_by = SetResponseHeaderLayer::overriding(HeaderName::from_static("x-powered-by"), HeaderValue::from_static("strata"));
/// let service = Stack::new()
///     .with_layer(strata::tower::layer("powered_by", powered_by))
///     .serve(|_req: Request| async { Response::new(Body::from("hello")) });
/// assert_eq!(service.layers()[0].name(), "powered_by");
/// ```
pub fn layer<L, ResBody>(name: impl Into<Arc<str>>, tower_layer: L) -> crate::stack::NamedLayer<Request, Response>
where
    L: TowerLayer<NextService>,
    L::Service: TowerService<Request, Response = http::Response<ResBody>> + Clone + Send + Sync + 'static,
    <L::Service as TowerService<Request>>::Error: Into<BoxError>,
    <L::Service as TowerService<Request>>::Future: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let name = name.into();
    let service = tower_layer.layer(NextService::default());
    let middleware = FromTower { service, name: name.clone(), _body: PhantomData };
    crate::stack::NamedLayer::new(name, middleware)
}

/// The strata middleware around a tower layer's service (see [`layer`]).
struct FromTower<T, ResBody> {
    service: T,
    // For the log line of an error.
    name: Arc<str>,
    _body: PhantomData<fn() -> ResBody>,
}

impl<T, ResBody> Middleware<Request, Response> for FromTower<T, ResBody>
where
    T: TowerService<Request, Response = http::Response<ResBody>> + Clone + Send + Sync + 'static,
    T::Error: Into<BoxError>,
    T::Future: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    fn handle(&self, mut req: Request, next: Next<Request, Response>) -> impl Future<Output = Response> + Send {
        put(req.extensions_mut(), next);
        let service = self.service.clone();
        call_ready(service, req, &self.name)
    }

    fn kind(&self) -> &'static str {
        "tower"
    }
}

/// Polls `service` ready, calls it with `req`, and turns an error into a `500` (see the module docs).
async fn call_ready<S, ResBody>(mut service: S, req: Request, who: &str) -> Response
where
    S: TowerService<Request, Response = http::Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    if let Err(error) = poll_fn(|cx| service.poll_ready(cx)).await {
        return failed(who, error.into());
    }
    match service.call(req).await {
        Ok(res) => res.map(Body::new),
        Err(error) => failed(who, error.into()),
    }
}

fn failed(who: &str, error: BoxError) -> Response {
    tracing::error!(
        layer = who,
        error = %error,
        request_id = crate::http::AssignedRequestId::current().map(tracing::field::display),
        "a tower service failed; answered 500"
    );
    internal_error()
}

fn lost_slot(what: &str) -> Response {
    tracing::error!(
        missing = what,
        request_id = crate::http::AssignedRequestId::current().map(tracing::field::display),
        "a layer dropped the request's extensions, which carry the rest of the chain (or called it twice); answered 500"
    );
    internal_error()
}

fn internal_error() -> Response {
    let mut res = response::text(http::StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n");
    res.extensions_mut().insert(GeneratedError::new());
    res
}

/// The values of one type a request carries from one side of a bridge to the other, in its
/// extensions.
///
/// Extensions must be `Clone + Sync`, which a `Next` or a tower service need not be. The values are
/// only ever reached through `&mut`, so a [`SyncWrapper`] makes them `Sync` without a lock, and a
/// clone of the extensions gets an empty slot: the request the values were put on keeps them.
/// Bridges nested inside each other (a tower layer inside another) stack their values in the one
/// slot, innermost on top, so that after the first bridge a put or a take is neither a hash-map
/// insertion nor an allocation.
struct Slot<T> {
    values: SyncWrapper<Stacked<T>>,
}

/// The innermost value, and the ones it covers.
struct Stacked<T> {
    top: Option<T>,
    covered: Vec<T>,
}

impl<T> Clone for Slot<T> {
    fn clone(&self) -> Self {
        Slot { values: SyncWrapper::new(Stacked { top: None, covered: Vec::new() }) }
    }
}

fn put<T: Send + 'static>(extensions: &mut http::Extensions, value: T) {
    match extensions.get_mut::<Slot<T>>() {
        Some(slot) => {
            let stacked = slot.values.get_mut();
            if let Some(outer) = stacked.top.replace(value) {
                stacked.covered.push(outer);
            }
        }
        None => {
            extensions.insert(Slot { values: SyncWrapper::new(Stacked { top: Some(value), covered: Vec::new() }) });
        }
    }
}

fn take<T: Send + 'static>(extensions: &mut http::Extensions) -> Option<T> {
    let stacked = extensions.get_mut::<Slot<T>>()?.values.get_mut();
    let value = stacked.top.take();
    stacked.top = stacked.covered.pop();
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_gives_its_value_once_and_brings_back_the_one_it_covered() {
        let mut extensions = http::Extensions::new();
        put(&mut extensions, "outer".to_string());
        put(&mut extensions, "inner".to_string());
        let copy = extensions.clone();
        assert_eq!(take::<String>(&mut extensions).as_deref(), Some("inner"));
        assert_eq!(take::<String>(&mut extensions).as_deref(), Some("outer"));
        assert_eq!(take::<String>(&mut extensions), None);
        // A copy of the extensions carries no value: the request it was put on keeps it.
        let mut copy = copy;
        assert_eq!(take::<String>(&mut copy), None);
    }
}
