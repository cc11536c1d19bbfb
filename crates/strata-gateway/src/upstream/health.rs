//! Active health checks: `GET path` to every target of a route each `interval`, on a connection of
//! its own (never one of the request pool's, whose state says nothing about a new connection), with
//! `Connection: close`. A `2xx` or `3xx` answer within `timeout` passes.
//!
//! One task per route, started by [`start`] once a runtime runs (`strata check` and `explain` build
//! gateways and start nothing). The task holds the route's targets weakly: when a reload drops the
//! route, the task ends at its next tick.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use http::{HeaderValue, Request, header};
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::Upstreams;
use crate::config::HealthCheck;

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
        let checks = upstreams.targets.iter().map(|t| probe(&t.addr, &t.host, &check));
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
async fn probe(addr: &str, host: &HeaderValue, check: &HealthCheck) -> bool {
    let exchange = async {
        let stream = TcpStream::connect(addr).await.ok()?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await.ok()?;
        let req = Request::get(check.path.as_str())
            .header(header::HOST, host)
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
