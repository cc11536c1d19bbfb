//! Active health checks: `GET path` to every target of a route each `interval`, on a connection of
//! its own (never one of the request pool's, whose state says nothing about a new connection), with
//! `Connection: close`, spoken as the route's requests are (TLS to an `https://` target, verified
//! the same way; HTTP/2 for an `http2 = true` route). A `2xx` or `3xx` answer within `timeout`
//! passes.
//!
//! One task per route, started by [`start`] once a runtime runs (`strata check` and `explain` build
//! gateways and start nothing). The task holds the route's targets weakly: when a reload drops the
//! route, the task ends at its next tick.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use http::StatusCode;
use http::{Request, header};
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::{Backend, Upstreams};
use crate::config::HealthCheck;
use crate::pool::UpstreamStream;

/// Starts the health check of `upstreams`, if its route has one. Must be called inside a runtime.
pub fn start(upstreams: &Arc<Upstreams>) {
    let Some(check) = upstreams.options.health_check.clone() else { return };
    let weak = Arc::downgrade(upstreams);
    tokio::spawn(run(weak, check));
}

/// Passed and failed checks in a row, per target.
#[derive(Clone, Copy, Default)]
struct Streak {
    passed: u32,
    failed: u32,
}

async fn run(upstreams: Weak<Upstreams>, check: HealthCheck) {
    let mut tick = tokio::time::interval(check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut streaks: Vec<Streak> = Vec::new();
    loop {
        tick.tick().await;
        let Some(upstreams) = upstreams.upgrade() else { return };
        streaks.resize(upstreams.targets.len(), Streak::default());
        let checks = upstreams.targets.iter().map(|t| probe(t, &check));
        let results = futures_util::future::join_all(checks).await;
        for (index, (passed, streak)) in results.into_iter().zip(streaks.iter_mut()).enumerate() {
            if passed {
                *streak = Streak { passed: streak.passed.saturating_add(1), failed: 0 };
                if streak.passed >= check.healthy_threshold {
                    upstreams.set_up(index, true);
                    upstreams.uneject(index);
                }
            } else {
                *streak = Streak { passed: 0, failed: streak.failed.saturating_add(1) };
                if streak.failed >= check.unhealthy_threshold {
                    upstreams.set_up(index, false);
                }
            }
        }
        // Not held across the wait: a reload may drop the route meanwhile.
        drop(upstreams);
    }
}

/// One check of one target: whether it answered `2xx`/`3xx` within the timeout.
async fn probe(target: &Backend, check: &HealthCheck) -> bool {
    let exchange = async {
        let tcp = TcpStream::connect(&target.addr).await.ok()?;
        let _ = tcp.set_nodelay(true);
        let stream = match &target.tls {
            None => UpstreamStream::Plain(tcp),
            Some(tls) => UpstreamStream::Tls(Box::new(tls.handshake(tcp).await.ok()?)),
        };
        if target.http2 {
            return probe_h2(stream, target, check).await;
        }
        let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await.ok()?;
        let req = Request::get(check.path.as_str())
            .header(header::HOST, &target.host)
            .header(header::CONNECTION, "close")
            .header(header::USER_AGENT, "strata-health-check")
            .body(Empty::new())
            .ok()?;
        let answer = sender.send_request(req);
        tokio::pin!(answer);
        // The connection is driven here, beside the request. It may end as the answer arrives
        // (`Connection: close`): the answer is then ready, or says why it never came.
        let res = tokio::select! {
            biased;
            res = &mut answer => res,
            _ = conn => answer.await,
        };
        res.ok().map(|res| res.status())
    };
    matches!(
        tokio::time::timeout(check.timeout, exchange).await,
        Ok(Some(status)) if status.is_success() || status.is_redirection()
    )
}

/// The check over HTTP/2: the target is named in the URI (`:authority`), and the connection is
/// dropped with the answer.
async fn probe_h2(stream: UpstreamStream, target: &Backend, check: &HealthCheck) -> Option<StatusCode> {
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .ok()?;
    let driver = tokio::spawn(conn);
    let scheme = if target.tls.is_some() { "https" } else { "http" };
    let uri = format!("{scheme}://{}{}", target.authority, check.path);
    let req = Request::get(uri).header(header::USER_AGENT, "strata-health-check").body(Empty::new()).ok()?;
    let status = sender.send_request(req).await.ok().map(|res| res.status());
    driver.abort();
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ProxyOptions, UpstreamOptions, UpstreamTarget};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    /// A loopback server answering `/healthz` with 200 while `healthy` is set, else 500.
    async fn server(healthy: Arc<AtomicBool>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let healthy = healthy.clone();
                let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let ok = healthy.load(Ordering::SeqCst) && req.uri().path() == "/healthz";
                    async move {
                        let mut res = http::Response::new(Empty::<Bytes>::new());
                        *res.status_mut() =
                            if ok { http::StatusCode::OK } else { http::StatusCode::INTERNAL_SERVER_ERROR };
                        Ok::<_, std::convert::Infallible>(res)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        addr
    }

    /// A loopback server speaking only HTTP/2 (prior knowledge), answering 200 on `/healthz`.
    async fn h2_server() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let mut res = http::Response::new(Empty::<Bytes>::new());
                    if req.uri().path() != "/healthz" {
                        *res.status_mut() = StatusCode::NOT_FOUND;
                    }
                    Ok::<_, std::convert::Infallible>(res)
                });
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        addr
    }

    #[tokio::test]
    async fn an_http2_route_is_checked_over_http2() {
        let addr = h2_server().await;
        let targets = [UpstreamTarget { url: format!("http://{addr}").parse().unwrap(), weight: 1 }];
        let check = HealthCheck {
            path: "/healthz".parse().unwrap(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold: 1,
            unhealthy_threshold: 1,
        };
        let h2 = ProxyOptions { http2: true, ..ProxyOptions::default() };
        let upstreams = Upstreams::new(&targets, "/", &h2, &UpstreamOptions::default(), Vec::new());
        assert!(probe(&upstreams.targets[0], &check).await, "an h2-only target passes over HTTP/2");
        let other = HealthCheck { path: "/missing".parse().unwrap(), ..check.clone() };
        assert!(!probe(&upstreams.targets[0], &other).await, "a 404 fails");
        let h1 = Upstreams::new(&targets, "/", &ProxyOptions::default(), &UpstreamOptions::default(), Vec::new());
        assert!(!probe(&h1.targets[0], &check).await, "HTTP/1.1 gets no answer from an h2-only target");
    }

    #[tokio::test]
    async fn thresholds_take_a_target_out_and_bring_it_back_and_the_task_ends_with_the_route() {
        let healthy = Arc::new(AtomicBool::new(true));
        let good = server(Arc::new(AtomicBool::new(true))).await;
        let flaky = server(healthy.clone()).await;
        let check = HealthCheck {
            path: "/healthz".parse().unwrap(),
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(500),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
        };
        let targets: Vec<UpstreamTarget> = [&good, &flaky]
            .iter()
            .map(|a| UpstreamTarget { url: format!("http://{a}").parse().unwrap(), weight: 1 })
            .collect();
        let options = UpstreamOptions { health_check: Some(check), ..Default::default() };
        let upstreams = Arc::new(Upstreams::new(&targets, "/", &ProxyOptions::default(), &options, Vec::new()));
        start(&upstreams);
        let is_up = |i: usize| upstreams.targets[i].up.load(Ordering::SeqCst);
        let wait_for = |want: bool| async move {
            for _ in 0..100 {
                if is_up(1) == want {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            false
        };
        healthy.store(false, Ordering::SeqCst);
        assert!(wait_for(false).await, "two failed checks take it out");
        assert!(is_up(0));
        assert!((0..10).all(|_| upstreams.pick(None, 0) == Some(0)));
        healthy.store(true, Ordering::SeqCst);
        assert!(wait_for(true).await, "two passed checks bring it back");
        let weak = Arc::downgrade(&upstreams);
        drop(upstreams);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(weak.upgrade().is_none(), "the task holds the targets only while checking");
    }
}
