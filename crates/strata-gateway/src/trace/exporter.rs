//! The OTLP/HTTP exporter: a bounded queue the requests never wait on, and one task that turns
//! what it receives into spans and POSTs them as `ExportTraceServiceRequest` protobuf to
//! `{endpoint}/v1/traces`.
//!
//! - The queue holds [`QUEUE_REQUESTS`] finished requests. When it is full, a request's spans are
//!   dropped and counted: a slow or absent collector never slows the traffic.
//! - The task sends a batch when it holds [`BATCH_SPANS`] spans, or every [`BATCH_INTERVAL`]. An
//!   export that fails or takes longer than [`EXPORT_TIMEOUT`] is dropped and counted, and a
//!   warning is logged at most once per [`WARN_INTERVAL`].
//! - Exporters are process-wide, one per collector and service name ([`Exporter::shared`]): a
//!   reload that keeps `[tracing]` keeps the running exporter and its queue. An exporter no router
//!   uses any more is dropped with its queue's sender; its task then exports what is left and ends.
//! - At shutdown, [`flush_all`] exports what is queued, within a bounded wait.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tokio::sync::{mpsc, oneshot};

use super::{Finished, spans};

/// Finished requests the queue holds before it drops new ones.
pub const QUEUE_REQUESTS: usize = 2048;
/// Spans sent in one export at most.
pub const BATCH_SPANS: usize = 512;
/// How long spans wait for a batch to fill before they are sent anyway.
pub const BATCH_INTERVAL: Duration = Duration::from_secs(1);
/// How long one export may take, connecting included.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// The least time between two warnings about failed exports.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// What the queue carries to the exporter's task.
enum Item {
    /// A traced request whose response head was ready.
    Finished(Box<Finished>),
    /// Export everything received before this, then answer.
    Flush(oneshot::Sender<()>),
}

/// One collector's exporter: its queue and (until [`Exporter::start`]) the receiving end its
/// task will own.
pub struct Exporter {
    // `{endpoint}/v1/traces`.
    url: Uri,
    service_name: String,
    queue: mpsc::Sender<Item>,
    // Taken by `start`: `Some` until the task runs.
    waiting: Mutex<Option<mpsc::Receiver<Item>>>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").field("url", &self.url).field("service_name", &self.service_name).finish()
    }
}

/// Spans exported and dropped, by every exporter of the process: the counters never go back
/// when a reload replaces an exporter.
struct Counts {
    exported: AtomicU64,
    dropped: AtomicU64,
}

static COUNTS: Counts = Counts { exported: AtomicU64::new(0), dropped: AtomicU64::new(0) };

/// Every exporter of the process, held weakly: the routers own them.
static EXPORTERS: Mutex<Vec<Weak<Exporter>>> = Mutex::new(Vec::new());

impl Exporter {
    /// The process's exporter to `endpoint` as `service_name`: the one a live router already
    /// uses, or a new one (whose task starts with [`Exporter::start`]).
    pub fn shared(endpoint: &Uri, service_name: &str) -> Arc<Exporter> {
        let url = traces_url(endpoint);
        let mut all = EXPORTERS.lock().unwrap_or_else(PoisonError::into_inner);
        all.retain(|e| e.strong_count() > 0);
        if let Some(found) =
            all.iter().filter_map(Weak::upgrade).find(|e| e.url == url && e.service_name == service_name)
        {
            return found;
        }
        let (queue, receiver) = mpsc::channel(QUEUE_REQUESTS);
        let exporter = Arc::new(Exporter {
            url,
            service_name: service_name.to_string(),
            queue,
            waiting: Mutex::new(Some(receiver)),
        });
        all.push(Arc::downgrade(&exporter));
        exporter
    }

    /// Spawns the exporter's task, unless it already runs. Call it inside a Tokio runtime.
    pub fn start(&self) {
        let Some(receiver) = self.waiting.lock().unwrap_or_else(PoisonError::into_inner).take() else {
            return;
        };
        let task = Task {
            url: self.url.clone(),
            resource: Resource {
                attributes: vec![KeyValue {
                    key: "service.name".to_string(),
                    value: Some(AnyValue { value: Some(any_value::Value::StringValue(self.service_name.clone())) }),
                    ..Default::default()
                }],
                ..Default::default()
            },
            client: Client::builder(TokioExecutor::new()).build_http(),
            last_warning: None,
        };
        tokio::spawn(task.run(receiver));
    }

    /// Spans exported, spans dropped, by every exporter of the process since it started.
    pub fn stats(&self) -> (u64, u64) {
        (COUNTS.exported.load(Ordering::Relaxed), COUNTS.dropped.load(Ordering::Relaxed))
    }

    /// Queues a finished request without waiting; counts its spans as dropped when the queue is full.
    pub(super) fn queue(&self, finished: Finished) {
        let spans = finished.span_count();
        if self.queue.try_send(Item::Finished(Box::new(finished))).is_err() {
            COUNTS.dropped.fetch_add(spans, Ordering::Relaxed);
        }
    }

    /// Exports what is queued, waiting at most until `deadline`. False when the task does not
    /// run or did not finish in time.
    async fn flush(&self, deadline: tokio::time::Instant) -> bool {
        if self.waiting.lock().unwrap_or_else(PoisonError::into_inner).is_some() {
            return false;
        }
        let (done, answered) = oneshot::channel();
        let flushed = async { self.queue.send(Item::Flush(done)).await.is_ok() && answered.await.is_ok() };
        tokio::time::timeout_at(deadline, flushed).await.unwrap_or(false)
    }
}

/// Exports what every exporter of the process has queued, waiting at most `limit` in all (at
/// shutdown, after the last requests were served).
pub async fn flush_all(limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    let exporters: Vec<Arc<Exporter>> =
        EXPORTERS.lock().unwrap_or_else(PoisonError::into_inner).iter().filter_map(Weak::upgrade).collect();
    for exporter in exporters {
        if !exporter.flush(deadline).await {
            tracing::warn!(collector = %exporter.url, "spans still queued at shutdown were not all exported in time");
        }
    }
}

/// The OTLP/HTTP traces URL of an endpoint: its path (without a trailing `/`) then `/v1/traces`.
fn traces_url(endpoint: &Uri) -> Uri {
    let base = endpoint.to_string();
    let base = base.trim_end_matches('/');
    // `otlp_endpoint` was parsed as an http:// URL with a host: appending a path keeps it one.
    format!("{base}/v1/traces").parse().unwrap_or_else(|_| endpoint.clone())
}

/// The exporter's task: receives, batches and sends.
struct Task {
    url: Uri,
    resource: Resource,
    client: Client<HttpConnector, Full<Bytes>>,
    last_warning: Option<Instant>,
}

impl Task {
    async fn run(mut self, mut receiver: mpsc::Receiver<Item>) {
        let mut batch: Vec<Span> = Vec::new();
        let mut tick = tokio::time::interval(BATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                item = receiver.recv() => match item {
                    Some(Item::Finished(finished)) => {
                        spans::append(&finished, &mut batch);
                        if batch.len() >= BATCH_SPANS {
                            self.export(&mut batch).await;
                        }
                    }
                    Some(Item::Flush(done)) => {
                        self.export(&mut batch).await;
                        let _ = done.send(());
                    }
                    None => {
                        // No router uses this exporter any more: send what is left, then end.
                        self.export(&mut batch).await;
                        return;
                    }
                },
                _ = tick.tick() => self.export(&mut batch).await,
            }
        }
    }

    /// Sends `batch` (emptied) in one request; counts its spans as exported or dropped.
    async fn export(&mut self, batch: &mut Vec<Span>) {
        if batch.is_empty() {
            return;
        }
        let spans = std::mem::take(batch);
        let count = spans.len() as u64;
        let body = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "strata".to_string(),
                        version: env!("CARGO_PKG_VERSION").to_string(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        let mut req = http::Request::new(Full::new(Bytes::from(body)));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = self.url.clone();
        req.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
        let client = &self.client;
        let sent = tokio::time::timeout(EXPORT_TIMEOUT, async move {
            let res = client.request(req).await.map_err(|e| e.to_string())?;
            let status = res.status();
            // Read to the end, so that the connection can be reused.
            let _ = res.into_body().collect().await;
            if status.is_success() { Ok(()) } else { Err(format!("the collector answered {status}")) }
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {EXPORT_TIMEOUT:?}")));
        match sent {
            Ok(()) => {
                COUNTS.exported.fetch_add(count, Ordering::Relaxed);
            }
            Err(error) => {
                COUNTS.dropped.fetch_add(count, Ordering::Relaxed);
                if self.last_warning.is_none_or(|at| at.elapsed() >= WARN_INTERVAL) {
                    self.last_warning = Some(Instant::now());
                    tracing::warn!(collector = %self.url, %error, spans = count, "span export failed: spans dropped");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_follows_the_endpoints_own() {
        assert_eq!(
            traces_url(&"http://127.0.0.1:4318".parse().unwrap()).to_string(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(traces_url(&"http://c:4318/otlp/".parse().unwrap()).to_string(), "http://c:4318/otlp/v1/traces");
    }

    #[test]
    fn routers_with_the_same_collector_share_one_exporter() {
        let a = Exporter::shared(&"http://127.0.0.1:1".parse().unwrap(), "same");
        let b = Exporter::shared(&"http://127.0.0.1:1/".parse().unwrap(), "same");
        let other = Exporter::shared(&"http://127.0.0.1:1".parse().unwrap(), "other");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &other));
    }
}
