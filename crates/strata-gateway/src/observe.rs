//! Watching each request the router dispatches: the future that records it in the metrics (and
//! hands it to the tracer) once its response head is ready.
//!
//! A router without an `[admin]` listener or `[tracing]` watches nothing, and its requests pay
//! for one branch: [`Dispatched`] then only wraps the stack's future.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use strata::http::Response;
use strata::{LayerTimer, Run};

use crate::explain_request::LiveCapture;
use crate::metrics::{self, RouteMetrics};
use crate::trace::Traced;

/// What is recorded of one watched request when its response head is ready.
pub struct Watch {
    /// The route's metrics; `None` when metrics are off (tracing alone watches the request).
    pub metrics: Option<Arc<RouteMetrics>>,
    /// The stack's per-layer timer for this request.
    pub timer: LayerTimer,
    /// The request's method, as an index of [`metrics::METHODS`].
    pub method: usize,
    /// Set for a request sampled for `/debug/requests`.
    pub capture: Option<Box<LiveCapture>>,
    /// The request's trace, when it is sampled.
    pub trace: Option<Traced>,
}

impl Watch {
    /// Starts watching: with metrics, the request counts as in flight until its response head is ready, or until it is dropped.
    pub fn start(metrics: Option<Arc<RouteMetrics>>, timer: LayerTimer, method: usize, trace: Option<Traced>) -> Watch {
        if metrics.is_some() {
            metrics::global().in_flight.add(1);
        }
        Watch { metrics, timer, method, capture: None, trace }
    }

    /// Also records the request for `/debug/requests`.
    pub fn with_capture(mut self, capture: LiveCapture) -> Watch {
        self.capture = Some(Box::new(capture));
        self
    }

    fn finish(mut self, res: &Response) {
        if let Some(metrics) = &self.metrics {
            metrics.record(self.method, res.status(), &self.timer);
        }
        if let Some(capture) = self.capture.take() {
            crate::explain_request::live_log().push(&capture.finish(&self.timer, res));
        }
        if let Some(trace) = self.trace.take() {
            trace.finish(&self.timer, res);
        }
        // `Drop` ends the in-flight count.
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if self.metrics.is_some() {
            metrics::global().in_flight.add(-1);
        }
    }
}

/// The future of one dispatched request: the stack's, and what watches it.
pub struct Dispatched {
    run: Run<Response>,
    watch: Option<Watch>,
}

impl Dispatched {
    /// A request nothing watches.
    pub fn plain(run: Run<Response>) -> Dispatched {
        Dispatched { run, watch: None }
    }

    /// A watched request.
    pub fn watched(run: Run<Response>, watch: Watch) -> Dispatched {
        Dispatched { run, watch: Some(watch) }
    }
}

impl Future for Dispatched {
    type Output = Response;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        let this = &mut *self;
        let res = std::task::ready!(Pin::new(&mut this.run).poll(cx));
        if let Some(watch) = this.watch.take() {
            watch.finish(&res);
        }
        Poll::Ready(res)
    }
}
