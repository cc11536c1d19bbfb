//! A bare hyper server answering every request with the built-in `echo` app: the baseline that
//! `bench/load.sh` compares the `strata` gateway against.
//!
//! The handler is the very endpoint strata mounts for `app = "echo"`, and the connection settings
//! that touch an HTTP/1.1 request mirror the gateway's defaults (hyper-util's auto builder, keep-alive,
//! a 10 s header-read timeout, `TCP_NODELAY`, a multi-thread runtime). Left out as not per-request
//! costs: graceful shutdown, upgrades, the header-buffer limit and HTTP/2 tuning. What differs is then
//! what strata adds per request: its router, the (here empty) stack with its panic boundaries, and
//! the connection info extension. The load ratio strata/bare prices that.
//!
//! ```text
//! cargo run --release --manifest-path bench/hyper-peers/Cargo.toml --bin bare_hyper -- 127.0.0.1:3000
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use strata::http::Body;
use tokio::net::TcpListener;

fn main() -> ExitCode {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: bare_hyper ADDR   (e.g. 127.0.0.1:3000)");
        return ExitCode::from(2);
    };
    let addr: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: `{addr}` is not an address like 127.0.0.1:3000: {e}");
            return ExitCode::from(2);
        }
    };
    // The same runtime the gateway builds, so both contenders get the same worker threads.
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(addr)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let endpoint = strata_gateway::apps::by_name("echo").expect("the echo app is built in").endpoint;
    let listener = TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);

    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A production server bounds how long a client may take to send its headers; the timer is what
    // makes hyper enforce it. Same value as the gateway's default `header_read_timeout`.
    builder.http1().timer(TokioTimer::new()).keep_alive(true).header_read_timeout(Duration::from_secs(10));

    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and similar: pause instead of spinning or exiting.
                eprintln!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small responses go out at once instead of waiting for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let endpoint = endpoint.clone();
        let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let response = endpoint.call(req.map(Body::from));
            async move { Ok::<_, Infallible>(response.await) }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        tokio::spawn(async move {
            // A client closing mid-request is routine under load, not worth a log line.
            let _ = connection.await;
        });
    }
}
