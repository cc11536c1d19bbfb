//! The `axum-classic` contender of `bench/load.sh`: the classic stack of `examples/classic.toml`
//! (timing → request id → access log → CORS → Basic auth) written the way an axum 0.8 + tower-http
//! user would write it, in front of the very endpoint strata mounts for `app = "echo"`.
//!
//! Layer by layer, outermost first:
//!
//! - **timing**: an `axum::middleware::from_fn` adding `x-response-time: 0.123ms`;
//! - **request id**: tower-http's `SetRequestIdLayer` (`MakeRequestUuid`) outside the log and
//!   `PropagateRequestIdLayer` inside it, as tower-http's own docs arrange them;
//! - **access log**: tower-http's `TraceLayer`, one INFO event per response, formatted as JSON by
//!   `tracing-subscriber` and written to a file through `tracing-appender`'s non-blocking writer;
//! - **CORS**: tower-http's `CorsLayer` with the same origins (an exact one and an
//!   `https://*.example.com` pattern, via a predicate), methods, headers, exposed headers,
//!   credentials and max-age as the strata config;
//! - **Basic auth**: an `axum::middleware::from_fn_with_state` that verifies the argon2id hash on
//!   tokio's blocking pool (as axum's examples advise for password hashing) and, as a careful axum
//!   user would add (neither axum nor tower-http has one), remembers verified credentials for five
//!   minutes: a `RwLock<HashMap>` keyed by a salted SHA-256 of `user:password` (no plaintext kept),
//!   bounded at 10,000 entries. So strata's `basic_auth`, which caches too, is compared framework
//!   against framework. With `--no-cache` (the `axum-classic-nocache` contender) it verifies argon2
//!   on every request, as the typical axum code does.
//!
//! The connection settings mirror `bench/hyper-peers/src/bin/bare_hyper.rs` (hyper-util's auto
//! builder, keep-alive, a 10 s header-read timeout, `TCP_NODELAY`, a multi-thread runtime), so the
//! three servers differ only in what runs per request.
//!
//! ```text
//! cargo build --release --manifest-path bench/axum-classic/Cargo.toml
//! bench/axum-classic/target/release/axum-classic 127.0.0.1:3000 /tmp/access.log 'alice:$argon2id$v=19$...'
//! ```

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use argon2::password_hash::PasswordHash;
use argon2::{Argon2, PasswordVerifier};
use axum::Router;
use axum::body::{Body as AxumBody, Bytes};
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use sha2::{Digest, Sha256};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::LatencyUnit;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

const USAGE: &str = "usage: axum-classic [--no-cache] ADDR ACCESS_LOG USER:ARGON2_HASH...   (e.g. 127.0.0.1:3000 /tmp/access.log 'alice:$argon2id$...')";

/// How long a verified credential is trusted without hashing again: strata's default `cache_ttl` (5 minutes).
const CACHE_TTL: Duration = Duration::from_secs(300);
/// The most credentials remembered at once.
const CACHE_CAPACITY: usize = 10_000;

/// The `WWW-Authenticate` challenge, the same as strata's for `realm = "tasks"`.
const CHALLENGE: &str = "Basic realm=\"tasks\", charset=\"UTF-8\"";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let cache = match args.first().map(String::as_str) {
        Some("--no-cache") => {
            args.remove(0);
            false
        }
        _ => true,
    };
    let [addr, log, users @ ..] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let addr: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: `{addr}` is not an address like 127.0.0.1:3000: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut table = HashMap::new();
    for entry in users {
        let Some((user, hash)) = entry.split_once(':') else {
            eprintln!("error: `{entry}` is not USER:HASH\n{USAGE}");
            return ExitCode::from(2);
        };
        // Checked once here so that a typo fails at start-up, not as a 401 under load.
        if let Err(e) = PasswordHash::new(hash) {
            eprintln!("error: the hash of `{user}` is not a PHC string: {e}");
            return ExitCode::from(2);
        }
        table.insert(user.to_string(), hash.to_string());
    }
    if table.is_empty() {
        eprintln!("error: at least one USER:HASH is required\n{USAGE}");
        return ExitCode::from(2);
    }
    // The same runtime as the gateway and bare_hyper, so every contender gets the same worker threads.
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let users = Users { hashes: Arc::new(table), cache: cache.then(|| Arc::new(CredentialCache::new())) };
    match runtime.block_on(serve(addr, PathBuf::from(log), users)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// User name → argon2 PHC string, and the verified credentials when caching.
#[derive(Clone)]
struct Users {
    hashes: Arc<HashMap<String, String>>,
    cache: Option<Arc<CredentialCache>>,
}

/// Verified credentials: salted SHA-256 of `user:password` → when they stop being trusted.
struct CredentialCache {
    salt: [u8; 32],
    verified: RwLock<HashMap<[u8; 32], Instant>>,
}

impl CredentialCache {
    fn new() -> Self {
        // A per-process random salt from the standard library's randomly keyed hasher, so the
        // digests in memory cannot be looked up in a precomputed table.
        let mut salt = [0u8; 32];
        for chunk in salt.chunks_mut(8) {
            chunk.copy_from_slice(&RandomState::new().build_hasher().finish().to_le_bytes());
        }
        CredentialCache { salt, verified: RwLock::new(HashMap::new()) }
    }

    fn key(&self, user: &str, password: &str) -> [u8; 32] {
        Sha256::new().chain_update(self.salt).chain_update(user).chain_update(b":").chain_update(password).finalize().into()
    }

    fn contains(&self, key: &[u8; 32]) -> bool {
        let verified = self.verified.read().unwrap_or_else(PoisonError::into_inner);
        verified.get(key).is_some_and(|expires| *expires > Instant::now())
    }

    fn insert(&self, key: [u8; 32]) {
        let now = Instant::now();
        let mut verified = self.verified.write().unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= CACHE_CAPACITY {
            verified.retain(|_, expires| *expires > now);
            if verified.len() >= CACHE_CAPACITY {
                verified.clear();
            }
        }
        verified.insert(key, now + CACHE_TTL);
    }
}

async fn serve(addr: SocketAddr, log: PathBuf, users: Users) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
    // The guard flushes the writer thread when dropped; `serve` only returns on an error.
    let (writer, _flush_guard) = tracing_appender::non_blocking(file);
    tracing_subscriber::fmt().json().with_max_level(Level::INFO).with_writer(writer).init();

    let listener = TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);

    let app = router(users);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // As in bare_hyper and the gateway: hyper enforces the header-read timeout through the timer.
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
        let service = TowerToHyperService::new(app.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        tokio::spawn(async move {
            // A client closing mid-request is routine under load, not worth a log line.
            let _ = connection.await;
        });
    }
}

/// The echo endpoint behind the classic stack. `ServiceBuilder` lists layers outermost first, the
/// same order as the strata config's `stack` array.
fn router(users: Users) -> Router {
    let echo = strata_gateway::apps::by_name("echo").expect("the echo app is built in").endpoint;
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(|origin, _parts| allowed_origin(origin)))
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
        .expose_headers([HeaderName::from_static("x-request-id"), HeaderName::from_static("x-response-time")])
        .allow_credentials(true)
        .max_age(Duration::from_secs(600));
    let access_log = TraceLayer::new_for_http()
        .make_span_with(|req: &Request| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), path = req.uri().path(), request_id = id)
        })
        // One line per request, when the response is ready, like strata's access log.
        .on_request(())
        .on_response(DefaultOnResponse::new().level(Level::INFO).latency_unit(LatencyUnit::Micros));

    Router::new()
        // Every path goes to the echo app, as a strata route with prefix "/" does.
        .fallback(move |req: Request| {
            let echo = echo.clone();
            async move { echo.call(to_strata(req)).await.into_response() }
        })
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn(timing))
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(access_log)
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(cors)
                .layer(middleware::from_fn_with_state(users, basic_auth)),
        )
}

/// `http://localhost:5173` or `https://LABELS.example.com`: the `allow_origins` of the strata config.
fn allowed_origin(origin: &HeaderValue) -> bool {
    let Ok(origin) = origin.to_str() else { return false };
    if origin.eq_ignore_ascii_case("http://localhost:5173") {
        return true;
    }
    let lower = origin.to_ascii_lowercase();
    lower
        .strip_prefix("https://")
        .and_then(|host| host.strip_suffix(".example.com"))
        .is_some_and(|labels| !labels.is_empty() && !labels.starts_with('.') && !labels.contains(['/', ':', '?', '#']))
}

/// Adds `x-response-time`, the time from entering this layer to the response head coming back.
async fn timing(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let mut res = next.run(req).await;
    let millis = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(value) = HeaderValue::try_from(format!("{millis:.3}ms")) {
        res.headers_mut().insert(HeaderName::from_static("x-response-time"), value);
    }
    res
}

/// Basic authentication against argon2 hashes, with or without the cache of verified credentials.
async fn basic_auth(State(users): State<Users>, req: Request, next: Next) -> Response {
    let Some((user, password)) = credentials(req.headers()) else { return unauthorized() };
    let Some(hash) = users.hashes.get(&user).cloned() else { return unauthorized() };
    let key = users.cache.as_ref().map(|cache| cache.key(&user, &password));
    if let (Some(cache), Some(key)) = (&users.cache, &key)
        && cache.contains(key)
    {
        return next.run(req).await;
    }
    // Argon2 takes tens of milliseconds of CPU by design: on an async worker it would stall every
    // other connection of that thread, so it goes to the blocking pool, as axum's examples advise.
    let verified = tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .unwrap_or(false);
    if !verified {
        return unauthorized();
    }
    if let (Some(cache), Some(key)) = (&users.cache, key) {
        cache.insert(key);
    }
    next.run(req).await
}

/// The user and password of an `Authorization: Basic` header.
fn credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, CHALLENGE)], "Unauthorized\n").into_response()
}

/// axum's request as the echo endpoint's: `strata::http::Body::wrap` needs a `Sync` body, which
/// axum's is not, hence [`SyncBody`]; an empty body (every GET of the load run) needs no wrapper.
fn to_strata(req: Request) -> strata::http::Request {
    req.map(|body| {
        if http_body::Body::is_end_stream(&body) {
            strata::http::Body::empty()
        } else {
            strata::http::Body::wrap(SyncBody(sync_wrapper::SyncWrapper::new(body)))
        }
    })
}

/// axum's body made `Sync` the sound way: `SyncWrapper` only ever hands out `&mut` access.
struct SyncBody(sync_wrapper::SyncWrapper<AxumBody>);

impl http_body::Body for SyncBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        // axum's body is a boxed body, hence `Unpin`.
        Pin::new(self.get_mut().0.get_mut()).poll_frame(cx)
    }
}
