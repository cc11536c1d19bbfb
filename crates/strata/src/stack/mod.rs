//! The onion: [`Middleware`], [`Next`], [`Stack`], [`from_fn`] and the [`Service`] a stack becomes.
//!
//! A stack is a list of layers. The first layer added is the outermost: it sees the request first and
//! the response last. Nothing here ever reverses that order.
//!
//! The core is generic over the request and response types; HTTP is one instantiation
//! (see [`crate::http`]). A panic inside a layer or the endpoint never escapes the stack: it is caught at
//! that layer's boundary and turned into a response by [`FromPanic`], so every layer outside it still
//! runs on the way out. That boundary is the [`Run`] future `next.run(req)` returns: one guard per
//! layer, around the layer's future and its creation alike, named after the layer.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use crate::check::{self, Diagnostic, Facts};

mod timer;

pub use timer::{LayerTime, LayerTimer};
use timer::{TimerSlots, Timing};

/// A boxed, sendable future: what a layer or an endpoint returns once its type is erased.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One layer of the onion.
///
/// `handle` receives the request and the rest of the stack as [`Next`]. It may change the request,
/// call `next.run(req).await` and change the response, or answer by itself (short-circuit) without
/// calling `next`. Implementations are ordinary `async fn`s:
///
/// ```
/// use strata::http::{Next, Request, Response};
/// use strata::Middleware;
///
/// /// Adds a fixed header to every response.
/// struct PoweredBy(http::HeaderValue);
///
/// impl Middleware<Request, Response> for PoweredBy {
///     async fn handle(&self, req: Request, next: Next) -> Response {
///         let mut res = next.run(req).await;
///         res.headers_mut().insert("x-powered-by", self.0.clone());
///         res
///     }
/// }
/// ```
pub trait Middleware<Req, Res>: Send + Sync + 'static {
    /// Handles one request; `next` runs the layers inside this one and then the endpoint.
    fn handle(&self, req: Req, next: Next<Req, Res>) -> impl Future<Output = Res> + Send;

    /// The kind of middleware, e.g. `"cors"`; shown by `explain` and used by the ordering rules.
    fn kind(&self) -> &'static str {
        short_type_name::<Self>()
    }

    /// What this layer declares about itself, for [`Stack::check`] and `explain`.
    fn facts(&self) -> Facts {
        Facts::NONE
    }

    /// Problems with this layer's own configuration that do not stop it from working (a weak
    /// password hash, say), reported by [`Stack::check`] and `strata check`. The `layer` field of each
    /// diagnostic is filled in with the layer's name.
    fn diagnostics(&self) -> Vec<Diagnostic> {
        Vec::new()
    }
}

/// Builds a response out of a caught panic. The stack needs one for its response type.
///
/// The panic's message is for logs only: an implementation must not show it to the client.
pub trait FromPanic: Sized {
    /// The response that replaces the output of a layer (or endpoint) that panicked.
    fn from_panic(panic: &Panic<'_>) -> Self;
}

/// A panic caught at a layer's boundary.
#[derive(Debug)]
pub struct Panic<'a> {
    /// The name of the layer (or `"app"` for the endpoint) that panicked.
    pub layer: &'a str,
    /// The panic payload as text, when it was a string. For logs, never for clients.
    pub message: &'a str,
}

impl Panic<'_> {
    fn log(&self) {
        tracing::error!(
            layer = self.layer,
            panic = self.message,
            request_id = crate::http::AssignedRequestId::current().map(tracing::field::display),
            "a layer panicked; answered with an error response"
        );
    }
}

fn payload_text(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "<non-string panic payload>"
    }
}

/// The innermost handler: the application a stack wraps.
///
/// Any `Fn(Req) -> impl Future<Output = Res>` is an endpoint, and so is a [`Service`], so stacks nest.
pub trait Endpoint<Req, Res>: Send + Sync + 'static {
    /// Answers one request.
    fn call(&self, req: Req) -> BoxFuture<Res>;
}

impl<F, Fut, Req, Res> Endpoint<Req, Res> for F
where
    F: Fn(Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Res> + Send + 'static,
{
    fn call(&self, req: Req) -> BoxFuture<Res> {
        // Allocated first, so that the future is written into the box rather than copied there
        // (see `Named::call`).
        let slot = Box::new_uninit();
        let boxed = Box::write(slot, self(req));
        Box::into_pin(boxed)
    }
}

/// The object-safe form of [`Middleware`], so a stack can hold layers of different types.
trait DynMiddleware<Req, Res>: Send + Sync + 'static {
    fn call(self: Arc<Self>, req: Req, next: Next<Req, Res>) -> BoxFuture<Res>;
}

/// A named middleware, ready to be placed in a [`Stack`].
pub struct NamedLayer<Req, Res> {
    name: Arc<str>,
    // The same name, as the layer's `Run` reports a panic under it.
    panic_name: &'static str,
    kind: &'static str,
    facts: Facts,
    diagnostics: Arc<[Diagnostic]>,
    inner: Arc<dyn DynMiddleware<Req, Res>>,
}

struct Named<M> {
    middleware: M,
}

impl<M, Req, Res> DynMiddleware<Req, Res> for Named<M>
where
    M: Middleware<Req, Res>,
    Req: Send + 'static,
    Res: FromPanic + Send + 'static,
{
    fn call(self: Arc<Self>, req: Req, next: Next<Req, Res>) -> BoxFuture<Res> {
        // No panic guard here: the `Run` this future is polled by is the layer's boundary, and it
        // also covers a `handle` that panics before its future exists (called on the first poll).
        // Allocated before the future exists, so that the future is written straight into the box:
        // `Box::pin(future)` builds it on the stack and then copies all of it into the box, its
        // largest state included (several hundred bytes for most layers).
        let slot = Box::new_uninit();
        let boxed = Box::write(slot, async move { self.middleware.handle(req, next).await });
        Box::into_pin(boxed)
    }
}

/// The name a panic at a layer's boundary is reported under, kept for the life of the process.
///
/// A [`Run`] holds this `&'static str` rather than a reference-counted name, so that guarding each
/// layer costs no reference count per request (every request on every core would otherwise touch
/// the same counter). Names are few and reused across reloads; each distinct one is kept once.
fn lasting_name(name: &str) -> &'static str {
    static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(kept) = names.iter().find(|kept| **kept == name) {
        return kept;
    }
    let kept: &'static str = Box::leak(name.into());
    names.push(kept);
    kept
}

impl<Req, Res> NamedLayer<Req, Res>
where
    Req: Send + 'static,
    Res: FromPanic + Send + 'static,
{
    /// Names a middleware. The name is what `explain`, diagnostics and per-layer timing show.
    pub fn new<M: Middleware<Req, Res>>(name: impl Into<Arc<str>>, middleware: M) -> Self {
        let name = name.into();
        let diagnostics =
            middleware.diagnostics().into_iter().map(|d| Diagnostic { layer: name.to_string(), ..d }).collect();
        NamedLayer {
            panic_name: lasting_name(&name),
            kind: middleware.kind(),
            facts: middleware.facts(),
            diagnostics,
            inner: Arc::new(Named { middleware }),
            name,
        }
    }
}

impl<Req, Res> NamedLayer<Req, Res> {
    /// The layer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The layer's kind (e.g. `"cors"`).
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// What the layer declares about itself.
    pub fn facts(&self) -> Facts {
        self.facts
    }

    /// The same layer, declaring `facts` instead of what its middleware declared: for a layer whose
    /// middleware cannot say (a tower layer, see `strata::tower::layer`).
    pub fn with_facts(mut self, facts: Facts) -> Self {
        self.facts = facts;
        self
    }

    /// What the layer reported about its own configuration (see [`Middleware::diagnostics`]).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// The description used by ordering checks and `explain`.
    pub fn info(&self) -> LayerInfo {
        LayerInfo { name: self.name.to_string(), kind: self.kind, facts: self.facts }
    }
}

impl<Req, Res> Clone for NamedLayer<Req, Res> {
    fn clone(&self) -> Self {
        NamedLayer {
            name: self.name.clone(),
            panic_name: self.panic_name,
            kind: self.kind,
            facts: self.facts,
            diagnostics: self.diagnostics.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl<Req, Res> fmt::Debug for NamedLayer<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NamedLayer")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("facts", &self.facts)
            .finish()
    }
}

/// A layer as the ordering rules and `explain` see it: name, kind and declared facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    /// The layer's name (the config's middleware name, or its kind when unnamed).
    pub name: String,
    /// The layer's kind.
    pub kind: &'static str,
    /// What the layer declares about itself.
    pub facts: Facts,
}

/// An ordered list of layers, outermost first. Turn it into a [`Service`] with [`Stack::serve`].
pub struct Stack<Req, Res> {
    layers: Vec<NamedLayer<Req, Res>>,
}

impl<Req, Res> Default for Stack<Req, Res> {
    fn default() -> Self {
        Stack { layers: Vec::new() }
    }
}

impl<Req, Res> Clone for Stack<Req, Res> {
    fn clone(&self) -> Self {
        Stack { layers: self.layers.clone() }
    }
}

impl<Req, Res> fmt::Debug for Stack<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.layers.iter().map(|l| &l.name)).finish()
    }
}

impl<Req, Res> Stack<Req, Res>
where
    Req: Send + 'static,
    Res: FromPanic + Send + 'static,
{
    /// An empty stack: requests go straight to the endpoint.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a middleware inside the ones already added, named after its kind.
    pub fn with<M: Middleware<Req, Res>>(self, middleware: M) -> Self {
        let name = middleware.kind();
        self.with_layer(NamedLayer::new(name, middleware))
    }

    /// Adds a middleware inside the ones already added, under the given name.
    pub fn with_named<M: Middleware<Req, Res>>(self, name: impl Into<Arc<str>>, middleware: M) -> Self {
        self.with_layer(NamedLayer::new(name, middleware))
    }

    /// Adds a prepared [`NamedLayer`] inside the ones already added.
    pub fn with_layer(mut self, layer: NamedLayer<Req, Res>) -> Self {
        self.layers.push(layer);
        self
    }

    /// Adds every layer of `inner` inside the layers of this stack, keeping their order.
    pub fn then(mut self, inner: Stack<Req, Res>) -> Self {
        self.layers.extend(inner.layers);
        self
    }

    /// The layers, outermost first.
    pub fn layers(&self) -> &[NamedLayer<Req, Res>] {
        &self.layers
    }

    /// The layers as the ordering rules see them, outermost first.
    pub fn infos(&self) -> Vec<LayerInfo> {
        self.layers.iter().map(NamedLayer::info).collect()
    }

    /// Runs the ordering rules over this stack, after each layer's report on its own configuration:
    /// each diagnostic says what is wrong, why, and the fix.
    pub fn check(&self) -> Vec<Diagnostic> {
        let mut all: Vec<Diagnostic> = self.layers.iter().flat_map(|l| l.diagnostics.iter().cloned()).collect();
        all.extend(check::check(&self.infos()));
        all
    }

    /// Wraps `endpoint` in this stack. The result answers requests and can itself be an endpoint.
    pub fn serve<E: Endpoint<Req, Res>>(self, endpoint: E) -> Service<Req, Res> {
        self.serve_arc(Arc::new(endpoint))
    }

    /// Like [`Stack::serve`], for an endpoint that is already shared.
    pub fn serve_arc(self, endpoint: Arc<dyn Endpoint<Req, Res>>) -> Service<Req, Res> {
        let names = self.layers.iter().map(|l| l.name.clone()).chain(std::iter::once(Arc::from("app"))).collect();
        Service { chain: Arc::new(Chain { layers: self.layers.into_boxed_slice(), endpoint, names }) }
    }
}

struct Chain<Req, Res> {
    layers: Box<[NamedLayer<Req, Res>]>,
    endpoint: Arc<dyn Endpoint<Req, Res>>,
    // The layers' names then "app", shared by every LayerTimer of this chain.
    names: Arc<[Arc<str>]>,
}

/// A stack wrapped around its endpoint: call it with a request to get a response.
///
/// Cloning is cheap (one reference count); the stack is built once and shared by every request.
pub struct Service<Req, Res> {
    chain: Arc<Chain<Req, Res>>,
}

impl<Req, Res> Clone for Service<Req, Res> {
    fn clone(&self) -> Self {
        Service { chain: self.chain.clone() }
    }
}

impl<Req, Res> fmt::Debug for Service<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("layers", &self.chain.layers.iter().map(|l| &l.name).collect::<Vec<_>>())
            .finish()
    }
}

impl<Req, Res> Service<Req, Res>
where
    Req: Send + 'static,
    Res: FromPanic + Send + 'static,
{
    /// Runs a request through every layer, outermost first, then the endpoint.
    pub fn call(&self, req: Req) -> Run<Res> {
        Next { chain: self.chain.clone(), index: 0, timer: None, inspect: None }.run(req)
    }

    /// [`Service::call`], timing every layer and the endpoint: once the returned future is done,
    /// the [`LayerTimer`] holds each layer's time (to its response head), when each was entered and
    /// which one answered. A server uses it for per-layer metrics and traces; a timing layer in
    /// the stack reads the same measurements instead of taking its own.
    pub fn call_timed(&self, req: Req) -> (Run<Res>, LayerTimer) {
        let (next, timer) = Next { chain: self.chain.clone(), index: 0, timer: None, inspect: None }.timed();
        (next.run(req), timer)
    }

    /// [`Service::call_timed`], showing `inspect` the request as it enters each layer (and the
    /// endpoint) and the response as each one returns it; see [`Inspect`]. A debugging tool (it is
    /// what `strata explain --request` runs): a request that is not inspected pays nothing for it.
    pub fn call_inspected(&self, req: Req, inspect: Arc<dyn Inspect<Req, Res>>) -> (Run<Res>, LayerTimer) {
        let next = Next { chain: self.chain.clone(), index: 0, timer: None, inspect: Some(inspect) };
        let (next, timer) = next.timed();
        (next.run(req), timer)
    }

    /// The layers, outermost first.
    pub fn layers(&self) -> &[NamedLayer<Req, Res>] {
        &self.chain.layers
    }

    /// Every fact any of the layers declares.
    pub fn facts(&self) -> Facts {
        self.chain.layers.iter().fold(Facts::NONE, |all, l| all.union(l.facts))
    }
}

impl<Req, Res> Endpoint<Req, Res> for Service<Req, Res>
where
    Req: Send + 'static,
    Res: FromPanic + Send + 'static,
{
    fn call(&self, req: Req) -> BoxFuture<Res> {
        Box::pin(Service::call(self, req))
    }
}

/// The rest of the stack, as seen from inside one layer: the layers inside it, then the endpoint.
pub struct Next<Req, Res> {
    chain: Arc<Chain<Req, Res>>,
    index: usize,
    // Present only when the request is timed (below a layer that asked for per-layer timing, or
    // from the top with `Service::call_timed`): an untimed request pays nothing.
    timer: Option<Arc<TimerSlots>>,
    // Present only under `Service::call_inspected`, like the timer: an uninspected request pays
    // one `None` check per layer.
    inspect: Option<Arc<dyn Inspect<Req, Res>>>,
}

/// Watches one request go through the onion: what each layer received and what it returned.
///
/// Given to [`Service::call_inspected`]. `layer` is the position in the chain, outermost first,
/// the same positions [`LayerTimer::layers`] reports: `0` is the outermost layer, the number of
/// layers is the endpoint. The request is shown as it enters a layer (so what layer `i + 1`
/// receives is what layer `i` passed on), the response as the layer returns it (so what layer `i`
/// returned, compared with what layer `i + 1` returned, is what layer `i` changed on the way out).
/// A layer that answers by itself is the innermost one whose `request` was called.
///
/// A panic in a layer is answered at that layer's boundary before `response` is called: the hook
/// sees the `500` the layer stands for. The hooks run on the request's task, in the time of the
/// layer outside the one they report: keep them short (copy what you need, look at it later).
/// A [`Service`] used as an endpoint is one step here; its own layers are not inspected.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use strata::{Inspect, Stack, from_fn, Next};
/// # #[derive(Debug)] struct Res(u16);
/// # impl strata::FromPanic for Res { fn from_panic(_: &strata::Panic<'_>) -> Self { Res(500) } }
///
/// #[derive(Default)]
/// struct Trail(Mutex<Vec<String>>);
///
/// impl Inspect<String, Res> for Trail {
///     fn request(&self, layer: usize, req: &String) {
///         self.0.lock().unwrap().push(format!("{layer} got {req}"));
///     }
///     fn response(&self, layer: usize, res: &Res) {
///         self.0.lock().unwrap().push(format!("{layer} returned {}", res.0));
///     }
/// }
///
/// let service = Stack::new()
///     .with(from_fn(|req: String, next: Next<String, Res>| next.run(req + "!")))
///     .serve(|_req: String| async { Res(200) });
/// let trail = Arc::new(Trail::default());
/// let (run, _timer) = service.call_inspected("hi".into(), trail.clone());
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(run);
/// assert_eq!(*trail.0.lock().unwrap(), ["0 got hi", "1 got hi!", "1 returned 200", "0 returned 200"]);
/// ```
pub trait Inspect<Req, Res>: Send + Sync + 'static {
    /// The request as it enters layer `layer` (or the endpoint).
    fn request(&self, layer: usize, req: &Req);
    /// The response layer `layer` (or the endpoint) returned.
    fn response(&self, layer: usize, res: &Res);
}

impl<Req, Res> fmt::Debug for Next<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rest: Vec<&str> = self.chain.layers[self.index..].iter().map(|l| l.name()).collect();
        f.debug_struct("Next").field("layers", &rest).finish()
    }
}

impl<Req, Res> Next<Req, Res>
where
    Req: Send + 'static,
    Res: FromPanic + Send + 'static,
{
    /// Passes the request to the next layer inward (or the endpoint) and resolves to its response.
    #[inline(always)]
    pub fn run(self, req: Req) -> Run<Res> {
        let Next { chain, index, timer, inspect } = self;
        if let Some(inspect) = &inspect {
            inspect.request(index, &req);
        }
        let timing = timer.as_ref().map(|t| t.enter(index));
        // Called inside the guard, on the first poll: a panic while creating the future is the
        // layer's too.
        let (future, layer) = match chain.layers.get(index) {
            Some(layer) => {
                let (inner, name) = (layer.inner.clone(), layer.panic_name);
                (inner.call(req, Next { chain, index: index + 1, timer, inspect: inspect.clone() }), name)
            }
            None => (chain.endpoint.call(req), "app"),
        };
        let run = Run { future, layer, timing };
        match inspect {
            None => run,
            // Outside the `Run` that turns a panic into a response, so the hook sees that response;
            // and outside its timing, so the hook's time is not the layer's.
            Some(inspect) => {
                let watched: BoxFuture<Res> = Box::pin(async move {
                    let res = run.await;
                    inspect.response(index, &res);
                    res
                });
                Run { future: watched, layer, timing: None }
            }
        }
    }

    /// The layers still to run, outermost first (not counting the endpoint).
    pub fn remaining(&self) -> &[NamedLayer<Req, Res>] {
        &self.chain.layers[self.index..]
    }

    /// Times every layer still to run, and the endpoint, for this request.
    ///
    /// Returns the `Next` to run and a [`LayerTimer`] that, once the response is back, holds how long
    /// each remaining layer took until it returned its response (the response head: streaming a body
    /// happens later). A timing middleware uses it to report per-layer `Server-Timing`. When the
    /// request is already timed from further out (by an outer layer, or by
    /// [`Service::call_timed`]), the timer is a view of that one: the layers are measured once.
    pub fn timed(mut self) -> (Self, LayerTimer) {
        let slots = match &self.timer {
            Some(slots) => slots.clone(),
            None => {
                let slots = TimerSlots::new(self.chain.names.clone(), self.index);
                self.timer = Some(slots.clone());
                slots
            }
        };
        let from = self.index;
        (self, LayerTimer { from, slots })
    }
}

/// The future returned by [`Next::run`] and [`Service::call`].
pub struct Run<Res> {
    future: BoxFuture<Res>,
    // The layer this future runs (`"app"` for the endpoint): a panic in it is answered here, in its name.
    layer: &'static str,
    timing: Option<Timing>,
}

impl<Res> fmt::Debug for Run<Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Run")
    }
}

impl<Res: FromPanic> Future for Run<Res> {
    type Output = Res;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Res> {
        let this = &mut *self;
        // The response is handed on as the layer's poll returned it (no `Result` around it to
        // unwrap), so it is not copied once more per layer on its way out.
        let polled =
            std::panic::catch_unwind(AssertUnwindSafe(|| this.future.as_mut().poll(cx))).unwrap_or_else(|payload| {
                let panic = Panic { layer: this.layer, message: payload_text(&*payload) };
                panic.log();
                Poll::Ready(Res::from_panic(&panic))
            });
        if polled.is_ready()
            && let Some(t) = this.timing.take()
        {
            t.timer.add(t.index, t.started.elapsed());
        }
        polled
    }
}

/// A middleware made from a plain async function or closure `(req, next) -> res`, for any request
/// and response types. For HTTP stacks, [`crate::http::from_fn`] fixes the types, so a closure's
/// arguments need no annotations.
///
/// ```
/// use strata::http::{Next, Request, Stack};
/// use strata::from_fn;
///
/// let stack = Stack::new().with(from_fn(|req: Request, next: Next| async move {
///     let started = std::time::Instant::now();
///     let res = next.run(req).await;
///     tracing::debug!(elapsed = ?started.elapsed(), status = %res.status());
///     res
/// }));
/// # let _ = stack;
/// ```
pub fn from_fn<F, Fut, Req, Res>(f: F) -> FromFn<F, Fut>
where
    F: Fn(Req, Next<Req, Res>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Res> + Send + 'static,
{
    FromFn { f, kind: "fn", facts: Facts::NONE, _future: PhantomData }
}

/// The middleware [`from_fn`] returns.
pub struct FromFn<F, Fut> {
    f: F,
    kind: &'static str,
    facts: Facts,
    // `fn() -> Fut` keeps FromFn Send + Sync whatever the future type is.
    _future: PhantomData<fn() -> Fut>,
}

impl<F, Fut> FromFn<F, Fut> {
    /// Sets the kind this function middleware reports (default `"fn"`).
    pub fn with_kind(mut self, kind: &'static str) -> Self {
        self.kind = kind;
        self
    }

    /// Declares facts about this function middleware, for the ordering rules.
    pub fn with_facts(mut self, facts: Facts) -> Self {
        self.facts = facts;
        self
    }
}

impl<F, Fut, Req, Res> Middleware<Req, Res> for FromFn<F, Fut>
where
    F: Fn(Req, Next<Req, Res>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Res> + Send + 'static,
    Req: 'static,
    Res: 'static,
{
    fn handle(&self, req: Req, next: Next<Req, Res>) -> impl Future<Output = Res> + Send {
        (self.f)(req, next)
    }

    fn kind(&self) -> &'static str {
        self.kind
    }

    fn facts(&self) -> Facts {
        self.facts
    }
}

fn short_type_name<T: ?Sized>() -> &'static str {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

#[cfg(test)]
mod tests;
