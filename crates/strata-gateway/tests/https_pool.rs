//! A pool of `https://` targets behind the real `strata` binary: two gunicorn instances of
//! `tests/upstream/whoami_app.py` (each answering its own name) serving TLS with one certificate
//! from a CA made here (rcgen), which the system does not trust.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::gunicorn::Gunicorn;
use common::tls::TestPki;
use common::{Strata, client};

/// Two whoami instances, `a` and `b`, serving TLS with the PKI's leaf certificate, started side
/// by side.
fn two_tls_whoamis(pki: &TestPki) -> [Gunicorn; 2] {
    let arg = |p: &Path| p.to_str().unwrap().to_string();
    let tls =
        ["--certfile".to_string(), arg(&pki.path("cert.pem")), "--keyfile".to_string(), arg(&pki.path("key.pem"))];
    let started: Vec<Gunicorn> = std::thread::scope(|s| {
        let handles: Vec<_> = ["a", "b"]
            .map(|name| {
                let tls = &tls;
                s.spawn(move || Gunicorn::start_app_with_args("whoami_app:app", &[("WHOAMI", name)], tls))
            })
            .into_iter()
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    started.try_into().unwrap_or_else(|_| unreachable!())
}

/// A config whose one route balances over `https://HOST:PORT` for each of `ports`, trusting
/// the PKI's CA, with `extra` route keys.
fn config(pki: &TestPki, host: &str, ports: &[u16], extra: &str) -> String {
    let list: Vec<String> = ports.iter().map(|port| format!("\"https://{host}:{port}\"")).collect();
    format!(
        "[[route]]\nprefix = \"/\"\nupstream = [{}]\ntls_ca_file = \"{}\"\n{extra}\n",
        list.join(", "),
        pki.path("ca.pem").display()
    )
}

/// Sends `count` sequential `GET /` and counts the answers by status and body.
async fn tally(strata: &Strata, count: usize) -> BTreeMap<(u16, String), usize> {
    let http = client();
    let mut seen = BTreeMap::new();
    for _ in 0..count {
        let res = http.get(strata.url("/")).send().await.unwrap();
        let status = res.status().as_u16();
        *seen.entry((status, res.text().await.unwrap())).or_default() += 1;
    }
    seen
}

fn answers(pairs: &[(u16, &str, usize)]) -> BTreeMap<(u16, String), usize> {
    pairs.iter().map(|(status, body, n)| ((*status, (*body).to_string()), *n)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_reaches_both_tls_targets_and_survives_losing_one() {
    let pki = TestPki::new();
    let [a, mut b] = two_tls_whoamis(&pki);
    let ports = [a.addr.port(), b.addr.port()];
    let strata = Strata::start(Some(&config(&pki, "127.0.0.1", &ports, "")));
    // Round robin: each verified target gets every other request.
    assert_eq!(tally(&strata, 10).await, answers(&[(200, "a", 5), (200, "b", 5)]), "{}", strata.stderr());

    // `b` goes away (its pooled TLS connections with it): each request that picks it is retried
    // on `a`, until `b` is ejected.
    b.stop();
    assert_eq!(tally(&strata, 20).await, answers(&[(200, "a", 20)]), "{}", strata.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_server_name_applies_to_every_target_of_the_pool() {
    let pki = TestPki::new();
    let [a, b] = two_tls_whoamis(&pki);
    let ports = [a.addr.port(), b.addr.port()];
    // Reached by `localhost`, verified as `upstream.test`: a name in the certificate.
    let named = config(&pki, "localhost", &ports, "tls_server_name = \"upstream.test\"");
    let strata = Strata::start(Some(&named));
    assert_eq!(tally(&strata, 10).await, answers(&[(200, "a", 5), (200, "b", 5)]), "{}", strata.stderr());

    // A name the certificate does not have: every request tries both targets (the retry goes to
    // the other one) and neither is accepted.
    let misnamed = config(&pki, "127.0.0.1", &ports, "tls_server_name = \"other.test\"\neject_after = 0");
    let strata = Strata::start(Some(&misnamed));
    assert_eq!(tally(&strata, 4).await.keys().map(|(status, _)| *status).collect::<Vec<_>>(), [502]);
    // The reason is logged (at most once a while per route, not once per failure).
    let start = Instant::now();
    while !strata.stderr().contains("invalid peer certificate") && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = strata.stderr();
    assert!(log.contains("invalid peer certificate") && log.contains("\"other.test\""), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_speak_tls_to_https_targets() {
    let pki = TestPki::new();
    let [a, b] = two_tls_whoamis(&pki);
    let ports = [a.addr.port(), b.addr.port()];
    let check = "[route.health_check]\npath = \"/healthz\"\ninterval = \"300ms\"\ntimeout = \"300ms\"\nunhealthy_threshold = 1\n";
    let strata = Strata::start(Some(&config(&pki, "127.0.0.1", &ports, check)));
    // Several checks have run: a check that did not speak TLS would have taken both targets out
    // after its first failure, and every request would be a 503.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(tally(&strata, 10).await, answers(&[(200, "a", 5), (200, "b", 5)]), "{}", strata.stderr());
    assert!(!strata.stderr().contains("out of rotation"), "{}", strata.stderr());
}
