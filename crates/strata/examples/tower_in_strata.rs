//! tower-http's `SetResponseHeaderLayer` and `TimeoutLayer` inside a strata stack, served by
//! `strata::serve`.
//!
//! ```text
//! cargo run -p strata-http --example tower_in_strata
//! curl -i http://127.0.0.1:3000/      # x-powered-by and a Server-Timing entry per layer
//! curl -i http://127.0.0.1:3000/slow  # 408 from tower-http's timeout after 1 s
//! ```

use std::time::Duration;

use http::{HeaderValue, StatusCode, header::HeaderName};
use strata::http::{Body, Request, Response, Stack};
use strata::middleware::Timing;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

async fn app(req: Request) -> Response {
    if req.uri().path() == "/slow" {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    Response::new(Body::from("hello from strata\n"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let powered_by =
        SetResponseHeaderLayer::overriding(HeaderName::from_static("x-powered-by"), HeaderValue::from_static("strata"));
    let timeout = TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, Duration::from_secs(1));
    let stack = Stack::new()
        .with(Timing::default())
        .with_layer(strata::tower::layer("powered_by", powered_by))
        .with_layer(strata::tower::layer("timeout", timeout));
    for layer in stack.infos() {
        println!("{} ({})", layer.name, layer.kind);
    }
    let service = stack.serve(app);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    // HTTP/1.1 and h2c, the connection timeouts, and each request's `ConnectionInfo`.
    strata::serve(listener, service).await?;
    Ok(())
}
