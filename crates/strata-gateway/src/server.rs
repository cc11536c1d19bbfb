//! Listeners and connections: HTTP/1.1 with keep-alive and HTTP/2 (prior-knowledge h2c) on one port,
//! header size limits, a header-read timeout, and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::sync::Arc;

use strata::http::{Body, ConnectionInfo, Request, Response, Service};
use strata::{Fact, Facts, Run};
use tokio::net::TcpListener;

use crate::config::Server;
use crate::routes::Router;

/// What a listener hands each request to: a gateway's [`Router`] or any library [`Service`].
pub trait Handler: Send + Sync + 'static {
    /// Answers one request.
    fn handle(&self, req: Request) -> Run<Response>;

    /// What its layers declare (the server sets [`ConnectionInfo`] only when one reads it).
    fn facts(&self) -> Facts;
}

impl Handler for Router {
    fn handle(&self, req: Request) -> Run<Response> {
        self.call(req)
    }

    fn facts(&self) -> Facts {
        Router::facts(self)
    }
}

impl Handler for Service {
    fn handle(&self, req: Request) -> Run<Response> {
        self.call(req)
    }

    fn facts(&self) -> Facts {
        Service::facts(self)
    }
}

/// hyper refuses HTTP/1 read buffers smaller than this.
const MIN_HTTP1_BUFFER: usize = 8 * 1024;

/// Serves `handler` on `listener` until `shutdown` resolves, then stops accepting and gives in-flight
/// requests up to `settings.shutdown_grace` to finish.
///
/// Returns whether every connection finished within the grace period.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    settings: &Server,
    shutdown: impl Future<Output = ()>,
) -> io::Result<bool> {
    let builder = connection_builder(settings);
    let graceful = GracefulShutdown::new();
    let local = listener.local_addr()?;
    // Inserting into a request's extensions allocates: only for stacks that read the address.
    let set_connection_info = handler.facts().has(Fact::ReadsClientAddress);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and similar: pause instead of spinning or exiting.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small responses go out at once instead of waiting for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let trusted = settings.trusted_proxies.clone();
        let hyper_service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let mut req = req.map(Body::from);
            if set_connection_info {
                // Per request, not per connection: a proxy multiplexes many clients on one connection.
                let info = ConnectionInfo::resolve(peer, local, req.headers(), &trusted);
                req.extensions_mut().insert(info);
            }
            let response = handler.handle(req);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), hyper_service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(grace = ?settings.shutdown_grace, "shutting down: no new connections, waiting for in-flight requests");
    match tokio::time::timeout(settings.shutdown_grace, graceful.shutdown()).await {
        Ok(()) => Ok(true),
        Err(_) => {
            tracing::warn!("grace period over: closing the remaining connections");
            Ok(false)
        }
    }
}

fn connection_builder(settings: &Server) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes.max(MIN_HTTP1_BUFFER));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)));
    if !settings.http2 {
        builder = builder.http1_only();
    }
    builder
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received SIGINT"),
        () = terminate => tracing::info!("received SIGTERM"),
    }
}
