//! The echo stub that answers for upstreams when `explain --request` does not call them.

use super::*;

/// What the upstream of a stubbed route received, recorded by [`EchoStub`].
#[derive(Clone, Debug, Serialize)]
pub struct UpstreamRequest {
    /// The method.
    pub method: String,
    /// The path and query the upstream is asked for.
    pub path: String,
    /// Its headers, secrets redacted, in order.
    pub headers: Vec<(String, String)>,
}

/// Answers in place of an upstream: `200` with a JSON echo of the request it got (method, path,
/// headers with secrets redacted), which it also keeps for the trace.
#[derive(Debug)]
pub struct EchoStub {
    redactor: Mutex<Redactor>,
    received: Mutex<Option<UpstreamRequest>>,
}

impl EchoStub {
    /// A stub that redacts the four well-known secret headers (see [`EchoStub::redact`]).
    pub fn new() -> EchoStub {
        EchoStub { redactor: Mutex::new(Redactor::default()), received: Mutex::new(None) }
    }

    /// Redacts with `redactor` from now on (the config's secret headers are known once it is
    /// loaded, after the stub was handed to the build).
    pub fn redact(&self, redactor: Redactor) {
        *lock(&self.redactor) = redactor;
    }

    /// The last request the stub answered, taken.
    pub fn take(&self) -> Option<UpstreamRequest> {
        lock(&self.received).take()
    }
}

impl Default for EchoStub {
    fn default() -> Self {
        EchoStub::new()
    }
}

impl Endpoint<Request, Response> for EchoStub {
    fn call(&self, req: Request) -> BoxFuture<Response> {
        let seen = UpstreamRequest {
            method: req.method().to_string(),
            path: req.uri().path_and_query().map_or("/", |pq| pq.as_str()).to_string(),
            headers: lock(&self.redactor).show(req.headers()),
        };
        let echo = serde_json::json!({
            "stub": "strata explain: the upstream was not called (--live calls it)",
            "method": seen.method,
            "path": seen.path,
            "headers": seen.headers,
        });
        *lock(&self.received) = Some(seen);
        let mut res = response::text(StatusCode::OK, format!("{echo}\n"));
        res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Box::pin(std::future::ready(res))
    }
}
