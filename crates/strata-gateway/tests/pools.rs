//! Routes with several upstream targets, behind the real `strata` binary: real gunicorn instances
//! (`tests/upstream/whoami_app.py`, each answering its own name) and a Python upstream that resets
//! every connection (`tests/upstream/resetter.py`).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::gunicorn::Gunicorn;
use common::python::PythonServer;
use common::{Strata, client, free_port};

/// `whoami_app` under gunicorn, answering `name`.
fn whoami(name: &str) -> Gunicorn {
    Gunicorn::start_app("whoami_app:app", &[("WHOAMI", name)])
}

/// Three named instances, started side by side.
fn three() -> [Gunicorn; 3] {
    let started: Vec<Gunicorn> = std::thread::scope(|s| {
        let handles: Vec<_> = ["a", "b", "c"].map(|n| s.spawn(move || whoami(n))).into_iter().collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    started.try_into().unwrap_or_else(|_| unreachable!())
}

/// `tests/upstream/resetter.py` on a free port; stopped on drop.
struct Resetter {
    server: PythonServer,
}

impl Resetter {
    fn start() -> Resetter {
        Resetter { server: PythonServer::start("resetter.py") }
    }

    fn url(&self) -> String {
        self.server.url()
    }

    /// The requests it received (and reset), by method.
    async fn attempts(&self) -> HashMap<String, u64> {
        client().get(format!("{}/attempts", self.url())).send().await.unwrap().json().await.unwrap()
    }
}

/// A `[[route]]` at `prefix` to `targets`, with `extra` keys (and tables) after it.
fn route(prefix: &str, targets: &[String], extra: &str) -> String {
    let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!("[[route]]\nprefix = \"{prefix}\"\nupstream = [{}]\nstrip_prefix = true\n{extra}\n", list.join(", "))
}

/// Who answered `GET path`, with the status.
async fn who(http: &reqwest::Client, strata: &Strata, path: &str) -> (u16, String) {
    let res = http.get(strata.url(path)).send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_reaches_every_target_survives_losing_one_and_returns_to_it() {
    let [a, b, c] = three();
    let urls = [a.url(), b.url(), c.url()];
    let config = route(
        "/",
        &urls,
        "retries = 1\neject_after = 2\neject_for = \"1s\"\n\
         [route.health_check]\npath = \"/healthz\"\ninterval = \"1s\"\ntimeout = \"1s\"\n\
         healthy_threshold = 1\nunhealthy_threshold = 1\n",
    );
    let strata = Strata::start(Some(&config));
    let http = client();

    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..30 {
        let (status, name) = who(&http, &strata, "/").await;
        assert_eq!(status, 200);
        *seen.entry(name).or_default() += 1;
    }
    assert_eq!(seen, BTreeMap::from([("a".into(), 10), ("b".into(), 10), ("c".into(), 10)]), "round robin");

    // 300 requests from 4 tasks; `b` is stopped once 50 have been answered.
    let b = Arc::new(Mutex::new(b));
    let done = Arc::new(AtomicUsize::new(0));
    let killer = {
        let (b, done) = (b.clone(), done.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            while done.load(Ordering::SeqCst) < 50 && start.elapsed() < Duration::from_secs(20) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::task::spawn_blocking(move || b.lock().unwrap().stop()).await.unwrap();
        })
    };
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (http, url, done) = (http.clone(), strata.url("/"), done.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                for _ in 0..75 {
                    let res = http.get(&url).send().await.unwrap();
                    let status = res.status().as_u16();
                    let body = res.text().await.unwrap();
                    if status != 200 {
                        failures.push((status, body));
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
                failures
            })
        })
        .collect();
    let mut failures = Vec::new();
    for task in tasks {
        failures.extend(task.await.unwrap());
    }
    killer.await.unwrap();
    assert_eq!(done.load(Ordering::SeqCst), 300);
    assert!(failures.is_empty(), "every request answered by a live target: {failures:?}\n{}", strata.stderr());
    // The passive ejection took it out at once; the health check says so within its period, once.
    let port = format!(":{}", b.lock().unwrap().addr.port());
    let out_lines = |log: &str| log.lines().filter(|l| l.contains("out of rotation") && l.contains(&port)).count();
    let start = Instant::now();
    while out_lines(&strata.stderr()) == 0 && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Two more check periods: still one line.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let log = strata.stderr();
    assert_eq!(out_lines(&log), 1, "one line per change, not per request:\n{log}");

    // Back: the health check sees it and it gets its share again.
    tokio::task::spawn_blocking({
        let b = b.clone();
        move || b.lock().unwrap().restart()
    })
    .await
    .unwrap();
    let start = Instant::now();
    let mut back = false;
    while !back && start.elapsed() < Duration::from_secs(10) {
        let (status, name) = who(&http, &strata, "/").await;
        assert_eq!(status, 200);
        back = name == "b";
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(back, "the restarted target receives traffic again:\n{}", strata.stderr());
    assert!(strata.stderr().contains("back in rotation"), "{}", strata.stderr());
}

#[tokio::test]
async fn hashing_on_a_header_sends_each_user_to_one_target() {
    let [a, b, c] = three();
    let config = route("/", &[a.url(), b.url(), c.url()], "balance = \"hash\"\nhash_on = \"header:x-user\"\n");
    let strata = Strata::start(Some(&config));
    let http = client();
    let mut homes: BTreeMap<String, String> = BTreeMap::new();
    for user in 0..12 {
        let user = format!("user-{user}");
        for _ in 0..4 {
            let res = http.get(strata.url("/")).header("x-user", &user).send().await.unwrap();
            assert_eq!(res.status(), 200);
            let name = res.text().await.unwrap();
            let home = homes.entry(user.clone()).or_insert_with(|| name.clone());
            assert_eq!(*home, name, "{user} always lands on the same target");
        }
    }
    let targets: std::collections::BTreeSet<&String> = homes.values().collect();
    assert!(targets.len() >= 2, "users are spread over the targets: {homes:?}");
    // Without the header: round robin.
    let names: std::collections::BTreeSet<String> =
        futures_util::future::join_all((0..6).map(|_| who(&http, &strata, "/")))
            .await
            .into_iter()
            .map(|r| r.1)
            .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[tokio::test]
async fn every_target_out_is_a_503_decorated_by_the_server_stack() {
    let closed = [free_port(), free_port()].map(|p| format!("http://127.0.0.1:{p}"));
    let config = format!(
        "[server]\nstack = [\"rid\"]\n[middleware.rid]\nkind = \"request_id\"\n{}",
        route("/", &closed, "eject_after = 1\neject_for = \"30s\"\n")
    );
    let strata = Strata::start(Some(&config));
    let http = client();
    // Both refuse: the first target fails, the retry on the second fails, both are ejected.
    let first = http.get(strata.url("/x")).send().await.unwrap();
    assert_eq!(first.status(), 502);
    assert!(first.headers().contains_key("x-request-id"));
    let res = http.get(strata.url("/x")).send().await.unwrap();
    assert_eq!(res.status(), 503, "{}", strata.stderr());
    assert!(res.headers().contains_key("x-request-id"), "the server stack decorates it");
    let wait: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((25..=30).contains(&wait), "until the first ejection ends: {wait}");
    let log = strata.stderr();
    assert!(log.contains("upstream ejected after failures in a row"), "{log}");
    for port in closed.iter().map(|u| u.rsplit(':').next().unwrap()) {
        assert!(log.lines().any(|l| l.contains("ejected") && l.contains(port) && l.contains("route=/")), "{log}");
    }
}

#[tokio::test]
async fn a_sent_body_is_never_retried_an_unsent_one_is_and_bodiless_gets_are() {
    let resetter = Resetter::start();
    let app = whoami("app");
    let closed = format!("http://127.0.0.1:{}", free_port());
    let resetting = resetter.url();
    let config = format!(
        "{}{}",
        route("/reset", &[resetting, app.url()], "eject_after = 0\n"),
        route("/refused", &[closed, app.url()], "eject_after = 0\n")
    );
    let strata = Strata::start(Some(&config));
    let http = client();

    // POSTs alternate between the resetter and the app; the resetter reads each body, then resets.
    let mut statuses = Vec::new();
    for i in 0..4 {
        let res = http.post(strata.url("/reset/x")).body(format!("order {i}")).send().await.unwrap();
        let status = res.status().as_u16();
        let body = res.text().await.unwrap();
        if status == 200 {
            assert_eq!(body, format!("app:order {i}"));
        }
        statuses.push(status);
    }
    let failed = statuses.iter().filter(|&&s| s == 502).count() as u64;
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count() as u64 + failed, 4, "{statuses:?}");
    assert!(failed >= 1, "{statuses:?}");
    assert_eq!(resetter.attempts().await.get("POST").copied(), Some(failed), "one attempt each, never sent again");

    // Bodiless GETs are idempotent: one reset, then the app answers.
    for _ in 0..4 {
        assert_eq!(who(&http, &strata, "/reset/x").await, (200, "app".to_string()));
    }
    assert!(resetter.attempts().await.get("GET").copied().unwrap_or(0) >= 1);

    // A refused connection sent nothing: the POST goes to the app with its body intact.
    for i in 0..4 {
        let res = http.post(strata.url("/refused/x")).body(format!("upload {i}")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.text().await.unwrap(), format!("app:upload {i}"));
    }
}

#[test]
fn explain_shows_the_targets_their_weights_and_the_balance() {
    let config = common::write_config(
        "[[route]]\nprefix = \"/api\"\nupstream = [{ url = \"http://127.0.0.1:8001\", weight = 3 }, \"http://127.0.0.1:8002/base\"]\n\
         balance = \"least_requests\"\n[route.health_check]\npath = \"/healthz\"\n\
         [[route]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:8003\"\n",
    );
    let out = common::run(&["explain", "--config", config.path.to_str().unwrap()], "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(
            "->     upstream least_requests [http://127.0.0.1:8001/ (weight 3), http://127.0.0.1:8002/base (weight 1)]"
        ),
        "{text}"
    );
    assert!(text.contains("->     upstream http://127.0.0.1:8003/"), "one target reads as before: {text}");
    // Checking builds the gateway and starts nothing: no health check runs, nothing is logged.
    let out = common::run(&["check", "--config", config.path.to_str().unwrap()], "");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn health_checks_run_without_traffic_and_stop_when_a_reload_drops_them() {
    let resetter = Resetter::start();
    let targets = [resetter.url(), format!("http://127.0.0.1:{}", free_port())];
    let checked =
        route("/", &targets, "[route.health_check]\npath = \"/healthz\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\n");
    let strata = Strata::start(Some(&checked));
    let checks = || async { resetter.attempts().await.get("GET").copied().unwrap_or(0) };
    // No request is sent: the checks start with the server.
    let start = Instant::now();
    while checks().await < 3 && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(checks().await >= 3, "{}", strata.stderr());
    // Each target goes out once (three failed checks), however many checks fail after that.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(strata.stderr().matches("taken out of rotation").count(), 2, "{}", strata.stderr());

    std::fs::write(strata.config_path(), route("/", &targets, "")).unwrap();
    strata.signal("HUP");
    let start = Instant::now();
    while !strata.stderr().contains("config reloaded") && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(strata.stderr().contains("config reloaded"), "{}", strata.stderr());
    // The old route's task ends at its next tick (one may still be under way).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_reload = checks().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(checks().await, after_reload, "no health check runs once the route is gone");
}
