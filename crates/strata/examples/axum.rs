//! An axum app behind strata's `RequestId`, `Cors` and `RateLimit` layers.
//!
//! ```text
//! cargo run -p strata-http --example axum
//! curl -i http://127.0.0.1:3000/hello -H 'origin: https://app.example'
//! for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w '%{http_code} ' http://127.0.0.1:3000/hello; done  # 200 ×5, then 429
//! ```
//!
//! A rate limit keyed on the client's address reads strata's `ConnectionInfo`. `strata::serve` sets
//! it on every request; under `axum::serve`, one small axum layer hands axum's `ConnectInfo` over
//! (without it every client would share one bucket, and strata logs a warning saying so).

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use http::{HeaderValue, Method};
use strata::http::{ConnectionInfo, Stack};
use strata::middleware::rate_limit::{Quota, RateLimit};
use strata::middleware::{Cors, RequestId};

/// Gives strata the peer address axum accepted the connection from.
async fn connection_info(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let local = SocketAddr::from(([127, 0, 0, 1], 3000));
    req.extensions_mut().insert(ConnectionInfo::new(peer, local));
    next.run(req).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cors = Cors::builder()
        .allow_origin(HeaderValue::from_static("https://app.example"))
        .allow_methods([Method::GET, Method::POST])
        .build()?;
    let limit = RateLimit::builder().quota(Quota::per_second(5)).build()?;
    // One order: request_id is outermost, so even a preflight cors answers carries an id, and the
    // limit's 429s carry the CORS headers.
    let strata = Stack::new().with(RequestId::default()).with(cors).with(limit);
    let app = axum::Router::new()
        .route("/hello", axum::routing::get(|| async { "hello from axum\n" }))
        .layer(strata.into_tower_layer())
        // Added last, so outermost: it runs before strata's layers.
        .layer(axum::middleware::from_fn(connection_info));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
    Ok(())
}
