//! The admin dashboard in a real browser: strata serves three routes under a bounded load while
//! headless Chromium loads `/` from the admin listener, lets the page poll `/api/stats` for a few
//! seconds of virtual time and prints the DOM, which the test reads through the page's `data-*`
//! hooks. A screenshot of the page at 1280×800 is taken too; set `STRATA_DASHBOARD_PNG=PATH` to
//! keep a copy (the one in `docs/img/dashboard.png` was made so). `.ci/run` installs Chromium.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Strata, chromium, client, free_port, wait_for_port};

/// `alice:wonderland`, the user of the `auth` layer.
const CREDENTIALS: &str = "Basic YWxpY2U6d29uZGVybGFuZA==";

/// The gateway under test: `/private` behind basic auth, `/api` proxied to two targets of which
/// one never answers, and the tasks app at `/` behind a rate limit; every route inside the
/// server's `rid` and a `timing` layer where it has one.
fn config(admin: SocketAddr, live_target: SocketAddr, dead_target: SocketAddr) -> String {
    format!(
        r#"
[server]
stack = ["rid"]

[admin]
listen = "{admin}"

[middleware.rid]
kind = "request_id"

[middleware.timing]
kind = "timing"

[middleware.limit]
kind = "rate_limit"
rate = "20/s"

[middleware.auth]
kind = "basic_auth"
users = {{ alice = "$argon2id$v=19$m=19456,t=2,p=1$LLkVIMhQoh6WuT+JmOktrA$MLzwBru1zEjIK1UrLGtwGlyXmLnCg1cOwWR76SSFm08" }}

[[route]]
prefix = "/private"
stack = ["timing", "auth"]
app = "echo"

[[route]]
prefix = "/api"
upstream = ["http://{live_target}", "http://{dead_target}"]
strip_prefix = true
eject_after = 2
eject_for = "5m"

[[route]]
prefix = "/"
stack = ["timing", "limit"]
app = "tasks"
"#
    )
}

/// The requests the load sends in turn: mostly refused ones on `/private`, a few with the right
/// password (verified once, then cached), proxied ones and the tasks list.
const LOAD: [(&str, Option<&str>); 5] = [
    ("/private/anything", None),
    ("/private/anything", Some(CREDENTIALS)),
    ("/private/anything", None),
    ("/api/anything", None),
    ("/tasks", None),
];

/// Sends [`LOAD`] round and round from `workers` tasks until `stop` is set, at most `max`
/// requests or for `limit`, pausing briefly between requests so that Chromium and the gateway
/// keep their share of the CPU; returns how many got an answer.
async fn load(base: String, workers: usize, max: u64, limit: Duration, stop: Arc<AtomicBool>) -> u64 {
    let sent = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (base, stop, sent, answered) = (base.clone(), stop.clone(), sent.clone(), answered.clone());
            tokio::spawn(async move {
                let http = client();
                let mut i = w;
                while !stop.load(Ordering::Relaxed)
                    && started.elapsed() < limit
                    && sent.fetch_add(1, Ordering::Relaxed) < max
                {
                    let (path, auth) = LOAD[i % LOAD.len()];
                    i += 1;
                    let mut req = http.get(format!("{base}{path}"));
                    if let Some(auth) = auth {
                        req = req.header("authorization", auth);
                    }
                    if req.send().await.is_ok() {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    answered.load(Ordering::Relaxed)
}

/// The part of `dom` from the start tag that carries `hook` (e.g. `data-route="/private"`) to the
/// next `</section>` (route blocks hold none).
fn block<'a>(dom: &'a str, hook: &str) -> Option<&'a str> {
    let start = dom[..dom.find(hook)?].rfind('<')?;
    let rest = &dom[start..];
    Some(&rest[..rest.find("</section>").unwrap_or(rest.len())])
}

/// The text of the first element of `html` carrying `hook` (e.g. `data-metric="p50"`).
fn text_of<'a>(html: &'a str, hook: &str) -> Option<&'a str> {
    let rest = &html[html.find(hook)?..];
    let text = &rest[rest.find('>')? + 1..];
    Some(&text[..text.find('<')?])
}

/// The value of attribute `name` on the first element of `html` carrying `hook`.
fn attribute<'a>(html: &'a str, hook: &str, name: &str) -> Option<&'a str> {
    let start = html[..html.find(hook)?].rfind('<')?;
    let tag = &html[start..start + html[start..].find('>')?];
    let value = &tag[tag.find(&format!(" {name}=\""))? + name.len() + 3..];
    Some(&value[..value.find('"')?])
}

/// The values of attribute `name` in `html`, in document order.
fn all_values<'a>(html: &'a str, name: &str) -> Vec<&'a str> {
    let needle = format!(" {name}=\"");
    html.match_indices(&needle)
        .filter_map(|(at, _)| {
            let value = &html[at + needle.len()..];
            Some(&value[..value.find('"')?])
        })
        .collect()
}

fn number(text: &str) -> u64 {
    text.replace(',', "").trim().parse().unwrap_or_else(|_| panic!("not a count: {text:?}"))
}

/// The page's figures read from one DOM print.
struct Read {
    polls: u64,
    /// Per route: the cumulative count at the page's first poll and at its last one.
    requests: Vec<(String, u64, u64)>,
}

/// Checks what every print of the page must show, and returns its counts.
fn check_dom(dom: &str, live: SocketAddr, dead: SocketAddr) -> Read {
    let polls = number(text_of(dom, "id=\"updated\"").expect("the poll count"));
    assert!(polls >= 3, "the page polled {polls} times");
    // The load's clients (and the browser's own fetch to the admin listener does not count).
    let connections = number(text_of(dom, "id=\"connections\"").expect("the connection count"));
    assert!(connections >= 1, "{connections} connections open under load");

    let mut requests = Vec::new();
    for route in ["/private", "/api", "/"] {
        let hook = format!("data-route=\"{route}\"");
        let html = block(dom, &hook).unwrap_or_else(|| panic!("no block for route {route}"));
        let first = number(attribute(html, &hook, "data-first-requests").expect("data-first-requests"));
        let last = number(text_of(html, "data-metric=\"requests\"").expect("the request count"));
        requests.push((route.to_string(), first, last));
        let rps = text_of(html, "data-metric=\"rps\"").unwrap();
        assert!(rps.ends_with(" req/s"), "{route}: rps {rps:?}");
        for q in ["p50", "p95", "p99"] {
            let value = text_of(html, &format!("data-metric=\"{q}\"")).unwrap();
            assert!(
                value.ends_with(" µs") || value.ends_with(" ms") || value.ends_with(" s"),
                "{route}: {q} = {value:?}"
            );
            assert!(value.chars().next().is_some_and(|c| c.is_ascii_digit()), "{route}: {q} = {value:?}");
        }
    }

    // The onion, outermost first, as `strata explain` prints it; the target is `app`.
    let private = block(dom, "data-route=\"/private\"").unwrap();
    assert_eq!(all_values(private, "data-layer"), ["rid", "timing", "auth", "app"]);
    assert_eq!(all_values(block(dom, "data-route=\"/\"").unwrap(), "data-layer"), ["rid", "timing", "limit", "app"]);
    assert_eq!(all_values(block(dom, "data-route=\"/api\"").unwrap(), "data-layer"), ["rid", "app"]);
    // The refused requests: 4xx in the route's status mix, answered by `auth` itself.
    let refused = number(attribute(private, "data-class=\"4xx\"", "data-value").unwrap());
    assert!(refused > 0, "no 4xx on /private");
    let auth_row = &private[private.find("data-layer=\"auth\"").unwrap()..];
    let auth_row = &auth_row[..auth_row.find("</tr>").unwrap()];
    assert!(auth_row.contains("4xx "), "auth answered no 4xx: {auth_row}");
    assert!(number(text_of(dom, "data-metric=\"failures\"").unwrap()) > 0);

    // One target answers, the other was ejected after two refused connections.
    let live_hook = format!("data-target=\"http://{live}/\"");
    let dead_hook = format!("data-target=\"http://{dead}/\"");
    assert_eq!(attribute(dom, &live_hook, "data-up"), Some("true"), "{live_hook}");
    assert_eq!(attribute(dom, &dead_hook, "data-up"), Some("false"), "{dead_hook}");
    Read { polls, requests }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_each_route_its_latency_and_its_layers_under_load() {
    let upstream = Strata::start(Some("[[route]]\nprefix = \"/\"\napp = \"echo\"\n"));
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let strata = Strata::start(Some(&config(admin, upstream.addr, dead)));
    assert!(wait_for_port(admin, Duration::from_secs(10)), "no admin listener on {admin}");

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load(strata.url(""), 2, 50_000, Duration::from_secs(120), stop.clone()));
    // Let every route see traffic before the first look.
    let http = client();
    let started = Instant::now();
    loop {
        let stats: serde_json::Value =
            http.get(format!("http://{admin}/api/stats")).send().await.unwrap().json().await.unwrap();
        let routes = stats["routes"].as_array().unwrap();
        if routes.iter().filter(|r| r["name"] != "(unmatched)").all(|r| r["requests"].as_u64() >= Some(20)) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the load did not reach every route: {stats}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let page = format!("http://{admin}/");
    let look = |budget| {
        let page = page.clone();
        tokio::task::spawn_blocking(move || chromium::dump_dom(&page, budget))
    };
    let (dom, log) = look(6_000).await.unwrap();
    assert!(dom.contains("data-route"), "the page showed no route: {dom}\nchromium: {log}");
    let earlier = check_dom(&dom, upstream.addr, dead);
    let (dom, log) = look(6_000).await.unwrap();
    assert!(dom.contains("data-route"), "the page showed no route: {dom}\nchromium: {log}");
    let later = check_dom(&dom, upstream.addr, dead);
    for ((route, _, before), (_, first, last)) in earlier.requests.iter().zip(&later.requests) {
        // Within one look (its last poll against its first) and from one look to the next.
        assert!(last > first, "{route}: {first} at the first poll, {last} at the last ({} polls)", later.polls);
        assert!(last > before, "{route}: {before} in the first look, {last} in the second");
    }

    let shots = tempfile::tempdir().unwrap();
    let png = shots.path().join("dashboard.png");
    let shot = {
        let (page, png) = (page.clone(), png.clone());
        tokio::task::spawn_blocking(move || chromium::screenshot(&page, &png, (1280, 800), 6_000))
    };
    let log = shot.await.unwrap();
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot ({e}): {log}"));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    // A blank 1280×800 page compresses to a few KB; the dashboard's text and bars do not.
    assert!(bytes.len() > 40_000, "a screenshot of {} bytes shows next to nothing", bytes.len());
    if let Some(keep) = std::env::var_os("STRATA_DASHBOARD_PNG") {
        std::fs::copy(&png, keep).unwrap();
    }

    stop.store(true, Ordering::Relaxed);
    let answered = load.await.unwrap();
    assert!(answered > 100, "the load got {answered} answers");
}
