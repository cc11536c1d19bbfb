//! An axum app behind strata's `Cors` and `RequestId` layers.
//!
//! ```text
//! cargo run -p strata-http --example axum
//! curl -i http://127.0.0.1:3000/hello -H 'origin: https://app.example'
//! ```

use http::{HeaderValue, Method};
use strata::http::Stack;
use strata::middleware::{Cors, RequestId};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cors = Cors::builder()
        .allow_origin(HeaderValue::from_static("https://app.example"))
        .allow_methods([Method::GET, Method::POST])
        .build()?;
    // One order: request_id is outermost, so even a preflight cors answers carries an id.
    let strata = Stack::new().with(RequestId::default()).with(cors);
    let app = axum::Router::new()
        .route("/hello", axum::routing::get(|| async { "hello from axum\n" }))
        .layer(strata.into_tower_layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
