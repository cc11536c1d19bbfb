//! Requests a middleware sends to another service: an auth service asked about each request, a
//! JWKS endpoint that publishes signing keys.
//!
//! Middlewares take an [`HttpClient`] (a trait, so a program can bring its own: one with its TLS
//! settings, a proxy, a mock in tests). [`PlainHttpClient`], the default, speaks plain HTTP/1.1
//! with a connection pool; the gateway supplies one that also speaks `https://` with the system's
//! trusted roots, through [`SharedResources`](crate::middleware::SharedResources).
//!
//! ```no_run
//! use strata::http::client::{HttpClient, PlainHttpClient};
//! use strata::http::Body;
//!
//! # async fn run() -> Result<(), strata::http::BoxError> {
//! let client = PlainHttpClient::new();
//! let req = http::Request::get("http://127.0.0.1:9000/.well-known/jwks.json").body(Body::empty())?;
//! let res = client.send(req).await?;
//! assert!(res.status().is_success());
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{Body, BoxError};

/// The future an [`HttpClient`] answers with.
pub type SendFuture = Pin<Box<dyn Future<Output = Result<http::Response<Body>, BoxError>> + Send + 'static>>;

/// Sends one request to another service and returns its response (status, headers and a body to
/// read). Errors are transport failures (connection refused, TLS, a reset); any status is an `Ok`.
///
/// Callers put their own deadline around [`HttpClient::send`]: the client has none.
pub trait HttpClient: Send + Sync + 'static {
    /// Sends `req`, whose URI is absolute (`http://host:port/path`).
    fn send(&self, req: http::Request<Body>) -> SendFuture;
}

impl<F, Fut> HttpClient for F
where
    F: Fn(http::Request<Body>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<http::Response<Body>, BoxError>> + Send + 'static,
{
    fn send(&self, req: http::Request<Body>) -> SendFuture {
        Box::pin(self(req))
    }
}

/// An [`HttpClient`] for plain `http://` URIs, over HTTP/1.1 with kept-alive connections (a pool
/// per client). An `https://` URI is an error: bring a TLS-capable client for those.
#[derive(Clone, Debug)]
pub struct PlainHttpClient {
    client: Client<HttpConnector, Body>,
}

impl PlainHttpClient {
    /// A client with its own connection pool. Must be called within a tokio runtime's context only
    /// when sending, not when built.
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        PlainHttpClient { client: Client::builder(TokioExecutor::new()).build(connector) }
    }
}

impl Default for PlainHttpClient {
    fn default() -> Self {
        PlainHttpClient::new()
    }
}

impl HttpClient for PlainHttpClient {
    fn send(&self, req: http::Request<Body>) -> SendFuture {
        if req.uri().scheme() != Some(&http::uri::Scheme::HTTP) {
            let uri = req.uri().clone();
            return Box::pin(async move {
                Err(format!("`{uri}`: this client speaks plain http:// only (give the layer a TLS-capable HttpClient)")
                    .into())
            });
        }
        let sent = self.client.request(req);
        Box::pin(async move {
            let res = sent.await?;
            Ok(res.map(Body::from))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_https_uri_is_refused_with_a_clear_error() {
        let req = http::Request::get("https://127.0.0.1:1/keys").body(Body::empty()).unwrap();
        let err = PlainHttpClient::new().send(req).await.unwrap_err();
        assert!(err.to_string().contains("plain http:// only"), "{err}");
    }

    #[tokio::test]
    async fn a_request_reaches_a_real_server_and_its_body_comes_back() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed before its request head ended");
                head.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello").await.unwrap();
            String::from_utf8(head).unwrap()
        });
        let req = http::Request::get(format!("http://{addr}/keys")).body(Body::empty()).unwrap();
        let res = PlainHttpClient::new().send(req).await.unwrap();
        assert_eq!(res.status(), http::StatusCode::OK);
        assert_eq!(res.into_body().collect_limited(100).await.unwrap(), "hello");
        assert!(server.await.unwrap().starts_with("GET /keys HTTP/1.1\r\n"));
    }

    #[tokio::test]
    async fn a_closure_is_a_client() {
        let client = |req: http::Request<Body>| async move {
            Ok::<_, BoxError>(http::Response::new(Body::from(req.uri().path().to_string())))
        };
        let res =
            client.send(http::Request::get("http://auth.invalid/check").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(res.into_body().collect_limited(100).await.unwrap(), "/check");
    }
}
