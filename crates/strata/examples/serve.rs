//! A stack served with `strata::serve`: a request id on every response, a rate limit of 5
//! requests a second per client address, HTTP/1.1 and h2c on one port, and a graceful shutdown on
//! Ctrl-C (in-flight requests get up to 10 s to finish).
//!
//! ```sh
//! cargo run -p strata-http --example serve -- 127.0.0.1:3000
//! curl -i localhost:3000/                     # HTTP/1.1
//! curl -i --http2-prior-knowledge localhost:3000/
//! ```

use strata::http::{Body, Request, Response, Stack};
use strata::middleware::RequestId;
use strata::middleware::rate_limit::{Quota, RateLimit};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3000".into());
    // Keyed by client address: `strata::serve` gives every request its `ConnectionInfo`.
    let rate_limit = RateLimit::builder().quota(Quota::per_second(5)).build()?;
    let service = Stack::new()
        .with(RequestId::default())
        .with(rate_limit)
        .serve(|req: Request| async move { Response::new(Body::from(format!("hello over {:?}\n", req.version()))) });

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let drained = strata::serve(listener, service)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    println!("stopped{}", if drained { "" } else { " (some connections were cut at the end of the grace period)" });
    Ok(())
}
