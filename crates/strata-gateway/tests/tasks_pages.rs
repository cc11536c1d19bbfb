//! The built-in tasks app's paged list, through the real binary: `GET /tasks` answers a JSON array
//! of at most `limit` tasks and names the next page in a `Link` header.

mod common;

use std::time::{Duration, Instant};

use common::{Strata, client};
use futures_util::future::join_all;
use serde_json::{Value, json};

const TASKS_UNDER_API: &str = r#"
[[route]]
prefix = "/api"
app = "tasks"
"#;

/// Creates `n` tasks whose titles are `title(i)`, a few requests at a time.
async fn create(strata: &Strata, n: usize, title: impl Fn(usize) -> String, path: &str) {
    let http = client();
    for chunk in (0..n).collect::<Vec<_>>().chunks(16) {
        let requests = chunk.iter().map(|&i| http.post(strata.url(path)).json(&json!({ "title": title(i) })).send());
        for res in join_all(requests).await {
            assert_eq!(res.unwrap().status(), 201);
        }
    }
}

/// The target of a `Link: <…>; rel="next"` header, if there is one.
fn next_link(res: &reqwest::Response) -> Option<String> {
    let link = res.headers().get("link")?.to_str().unwrap();
    let target = link.strip_prefix('<')?.split_once('>')?;
    assert_eq!(target.1, "; rel=\"next\"", "{link}");
    Some(target.0.to_string())
}

#[tokio::test]
async fn following_next_links_lists_every_task_once() {
    let strata = Strata::start(Some(TASKS_UNDER_API));
    create(&strata, 230, |i| format!("task {i}"), "/api/tasks").await;
    let http = client();

    let first = http.get(strata.url("/api/tasks")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(next_link(&first).as_deref(), Some("/api/tasks?limit=100&cursor=100"));
    let page: Vec<Value> = first.json().await.unwrap();
    assert_eq!(page.len(), 100, "the default page size");

    let mut ids = Vec::new();
    let mut next = Some("/api/tasks?limit=75".to_string());
    let mut pages = 0;
    while let Some(path) = next.take() {
        pages += 1;
        assert!(pages <= 10, "the walk ends");
        let res = http.get(strata.url(&path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        next = next_link(&res);
        let page: Vec<Value> = res.json().await.unwrap();
        ids.extend(page.iter().map(|t| t["id"].as_u64().unwrap()));
    }
    assert_eq!(pages, 4, "75 + 75 + 75 + 5");
    assert_eq!(ids, (1..=230).collect::<Vec<u64>>());

    for (query, needle) in [("limit=0", "`limit`"), ("limit=5000", "from 1 to 1000"), ("cursor=abc", "`cursor`")] {
        let res = http.get(strata.url(&format!("/api/tasks?{query}"))).send().await.unwrap();
        assert_eq!(res.status(), 400, "{query}");
        let body: Value = res.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains(needle), "{query}: {body}");
    }
}

/// 10,000 tasks of 1000-character titles are ~10 MB of JSON: before paging, 64 clients reading the
/// list at once took the gateway's memory past a gigabyte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_readers_of_a_full_list_stay_small() {
    let strata = Strata::start(Some(TASKS_UNDER_API));
    let started = Instant::now();
    create(&strata, 10_000, |i| format!("{i:05}{}", "x".repeat(995)), "/api/tasks").await;
    let full = client().post(strata.url("/api/tasks")).json(&json!({"title": "one more"})).send().await.unwrap();
    assert_eq!(full.status(), 507, "the list is full");
    let filled = common::peak_rss_kib(strata.child.id());

    let http = client();
    for _ in 0..3 {
        let reads = (0..64).map(|_| async {
            let res = http.get(strata.url("/api/tasks")).send().await.unwrap();
            assert_eq!(res.status(), 200);
            assert!(next_link(&res).is_some());
            res.bytes().await.unwrap().len()
        });
        for len in join_all(reads).await {
            assert!((100_000..120_000).contains(&len), "a page of 100 tasks: {len} bytes");
        }
    }
    let peak = common::peak_rss_kib(strata.child.id());
    assert!(
        peak.saturating_sub(filled) < 64 * 1024,
        "192 reads of a full list grew the peak RSS from {filled} KiB to {peak} KiB"
    );
    assert!(started.elapsed() < Duration::from_secs(120), "took {:?}", started.elapsed());
}
