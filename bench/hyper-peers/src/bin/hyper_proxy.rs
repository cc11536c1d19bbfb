//! The floor of a reverse proxy built on hyper: what `bench/proxy-load.sh` compares `strata-bare`
//! against to tell the cost of strata's proxy from the cost of the HTTP engine under it.
//!
//! It does the least a keep-alive HTTP/1.1 proxy can, in the way that costs least on hyper:
//! - one single-threaded runtime per core, each accepting on a listener of its own
//!   (`SO_REUSEPORT`, as nginx's `reuseport`), so no connection or wake-up ever crosses threads;
//! - each client connection gets one upstream connection of its own, opened when the client
//!   connects and used for its every request: no pool to look up, lock or refill;
//! - the request and the response pass through unchanged (no header rewritten, added or removed,
//!   no `Via`, no forwarded headers, no timeouts, no error pages): an upstream failure closes the
//!   client's connection.
//!
//! So it is not a usable proxy, only a measure of hyper's server and client and tokio doing one
//! exchange each per request.
//!
//! ```text
//! cargo run --release --manifest-path bench/hyper-peers/Cargo.toml --bin hyper_proxy -- 127.0.0.1:3000 127.0.0.1:8080
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream] = args.as_slice() else {
        eprintln!("usage: hyper_proxy LISTEN UPSTREAM   (e.g. 127.0.0.1:3000 127.0.0.1:8080)");
        return ExitCode::from(2);
    };
    let (listen, upstream): (SocketAddr, SocketAddr) = match (listen.parse(), upstream.parse()) {
        (Ok(l), Ok(u)) => (l, u),
        _ => {
            eprintln!("error: LISTEN and UPSTREAM are addresses like 127.0.0.1:3000");
            return ExitCode::from(2);
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads: Vec<_> = (0..cores)
        .map(|_| {
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(serve(listen, upstream))
            })
        })
        .collect();
    println!("listening on http://{listen} with {cores} threads, proxying to http://{upstream}");
    for thread in threads {
        if let Err(e) = thread.join().expect("a serving thread panicked") {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

/// Accepts on this thread's own listener and serves each connection on this thread.
async fn serve(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<()> {
    let socket = if listen.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(listen)?;
    let listener = socket.listen(1024)?;
    loop {
        let (client, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = proxy_connection(client, upstream).await {
                eprintln!("connection: {e}");
            }
        });
    }
}

/// Opens the client's own upstream connection, then serves the client's requests over it.
async fn proxy_connection(client: TcpStream, upstream: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    client.set_nodelay(true)?;
    let upstream = TcpStream::connect(upstream).await?;
    upstream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(upstream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    // One request at a time per HTTP/1.1 connection: the lock is only held to queue the request.
    let sender: Arc<Mutex<SendRequest<Incoming>>> = Arc::new(Mutex::new(sender));
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let sent = sender.lock().expect("not poisoned").send_request(req);
        async move { sent.await.map(|res: Response<Incoming>| res) }
    });
    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(client), service).await?;
    Ok(())
}
