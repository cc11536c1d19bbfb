//! The classic pipeline built in Rust instead of TOML — the same stack as `examples/classic.toml`:
//! timing → request_id → access_log → cors → basic_auth → the tasks app.
//!
//! ```sh
//! cargo run --release -p strata-gateway --example classic -- 127.0.0.1:8080
//! curl -u alice:wonderland localhost:8080/tasks
//! ```

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, header};
use strata::http::Stack;
use strata::middleware::{AccessLog, BasicAuth, Cors, LogFormat, RequestId, Timing};
use strata_gateway::{apps, server};

/// alice / wonderland, made with `strata hash-password`.
const ALICE: &str = "$argon2id$v=19$m=19456,t=2,p=1$LLkVIMhQoh6WuT+JmOktrA$MLzwBru1zEjIK1UrLGtwGlyXmLnCg1cOwWR76SSFm08";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".into());
    let cors = Cors::builder()
        .allow_origins(["http://localhost:5173", "https://*.example.com"].map(HeaderValue::from_static))
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
        .expose_headers(["x-request-id", "x-response-time"].map(HeaderName::from_static))
        .allow_credentials(true)
        .max_age(Duration::from_secs(600))
        .build()?;
    let auth = BasicAuth::builder().realm("tasks").user("alice", ALICE).build()?;

    let log = AccessLog::builder().format(LogFormat::Json).to_stdout().build()?;

    // Outermost first, exactly as in the TOML `stack` array.
    let stack = Stack::new()
        .with(Timing::default())
        .with(RequestId::default())
        .with_named("log", log.clone())
        .with(cors)
        .with_named("auth", auth);
    for diagnostic in stack.check() {
        eprintln!("{diagnostic}");
    }
    let tasks = apps::by_name("tasks").ok_or("the tasks app is built in")?;
    let service = stack.serve_arc(tasks.endpoint);

    // Before the bind: a SIGTERM from then on shuts down gracefully.
    let shutdown = server::shutdown_signal();
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("classic stack listening on http://{}", listener.local_addr()?);
    strata::serve(listener, service).with_graceful_shutdown(shutdown).await?;
    // The writer thread does not outlive the process: the last lines are written before it exits.
    log.flush();
    Ok(())
}
