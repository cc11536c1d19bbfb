//! An OTLP/HTTP trace receiver on a free loopback port: accepts `POST /v1/traces` with an
//! `application/x-protobuf` body and decodes it with the official `opentelemetry-proto` messages,
//! as a collector does.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// A span as received, with the `service.name` of its resource.
#[derive(Clone, Debug)]
pub struct Received {
    pub service: String,
    pub span: Span,
}

/// The receiver; stops accepting when dropped.
pub struct OtlpReceiver {
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<Received>>>,
    // Requests that were not a decodable OTLP/HTTP protobuf export.
    rejected: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    /// Listens on a free loopback port.
    pub async fn start() -> OtlpReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the receiver");
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let rejected = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (spans.clone(), rejected.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (spans, rejected) = (s.clone(), r.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| receive(req, spans.clone(), rejected.clone()));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        OtlpReceiver { addr, spans, rejected, task }
    }

    /// `http://ADDR`, the `otlp_endpoint` to configure.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    /// What was refused (wrong path, method, content type, or a body that is not the message).
    pub fn rejected(&self) -> Vec<String> {
        self.rejected.lock().unwrap().clone()
    }

    /// Waits up to `limit` until `count` spans of trace `trace_id` (32 hex digits) arrived, and
    /// returns the trace's spans (fewer when the time ran out).
    pub async fn wait_for_trace(&self, trace_id: &str, count: usize, limit: Duration) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let found: Vec<Received> = self.spans().into_iter().filter(|r| hex(&r.span.trace_id) == trace_id).collect();
            if found.len() >= count || start.elapsed() >= limit {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    req: Request<hyper::body::Incoming>,
    spans: Arc<Mutex<Vec<Received>>>,
    rejected: Arc<Mutex<Vec<String>>>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let what = format!("{} {} {:?}", req.method(), req.uri().path(), req.headers().get("content-type"));
    let well_formed = req.method() == hyper::Method::POST
        && req.uri().path() == "/v1/traces"
        && req.headers().get("content-type").is_some_and(|v| v == "application/x-protobuf");
    let body = req.into_body().collect().await?.to_bytes();
    let decoded = ExportTraceServiceRequest::decode(body).ok().filter(|_| well_formed);
    let Some(export) = decoded else {
        rejected.lock().unwrap().push(what);
        let mut res = Response::new(Full::new(Bytes::new()));
        *res.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(res);
    };
    let mut received = spans.lock().unwrap();
    for resource_spans in export.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|v| match v {
                Value::StringValue(s) => s.clone(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.push(Received { service: service.clone(), span });
            }
        }
    }
    let mut res = Response::new(Full::new(Bytes::from(ExportTraceServiceResponse::default().encode_to_vec())));
    res.headers_mut().insert("content-type", "application/x-protobuf".parse().unwrap());
    Ok(res)
}

/// Lowercase hex of an id.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A span attribute's value as text (strings as they are, numbers and booleans formatted).
pub fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span.attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()?;
    Some(match value {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}
