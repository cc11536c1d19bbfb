//! `redirect` and `rewrite` through the real binary: the status and `Location` clients see (with
//! reqwest not following redirects, and curl), open-redirect and header-injection attempts, the
//! path a gunicorn upstream receives after a rewrite (with and without `strip_prefix`), rewrites
//! that would climb above the root, and config errors located by `strata check`.

mod common;

use std::process::Command;

use common::gunicorn::Gunicorn;
use common::{Strata, run, write_config};

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The status, `Location` and body of a GET.
async fn get(strata: &Strata, path: &str) -> (u16, Option<String>, String) {
    let res = client().get(strata.url(path)).send().await.expect("strata answers");
    let status = res.status().as_u16();
    let location = res.headers().get("location").map(|v| v.to_str().unwrap().to_string());
    (status, location, res.text().await.unwrap())
}

const REDIRECTS: &str = r#"
[middleware.moved]
kind = "redirect"
rules = [
  { regex = '^/blog/(?<year>\d{4})/(.*)$', to = '/posts/${year}-$2' },
  { regex = '^/go/(.*)$', to = '/$1' },
  { prefix = "/docs", to = "https://docs.example.com", status = 301 },
  { regex = '^/search/(.*)$', to = '/find?q=$1', status = 302 },
]

[middleware.slash]
kind = "redirect"
trailing_slash = "add"

[[route]]
prefix = "/"
app = "echo"
stack = ["moved"]

[[route]]
prefix = "/pages"
app = "echo"
stack = ["slash"]
"#;

#[tokio::test]
async fn clients_see_the_rules_status_and_location() {
    let strata = Strata::start(Some(REDIRECTS));
    let cases = [
        ("/blog/2024/hello?ref=rss", 308, "/posts/2024-hello?ref=rss"),
        ("/docs/guide/intro", 301, "https://docs.example.com/guide/intro"),
        ("/search/rust?page=2", 302, "/find?q=rust"),
        ("/pages/about?x=1", 308, "/pages/about/?x=1"),
    ];
    for (path, status, location) in cases {
        let (got, got_location, body) = get(&strata, path).await;
        assert_eq!((got, got_location.as_deref()), (status, Some(location)), "{path}: {body}");
    }
    // Not matched: the app answers (the echo app's 404 names the path it received).
    let (status, location, body) = get(&strata, "/docsify").await;
    assert_eq!((status, location), (404, None));
    assert!(body.contains("no route for `/docsify`"), "{body}");
    let (status, location, body) = get(&strata, "/pages/app.js").await;
    assert_eq!((status, location), (404, None), "a file keeps its name");
    assert!(body.contains("no route for `/app.js`"), "{body}");
    let (status, location, _) = get(&strata, "/anything/x?y=1").await;
    assert_eq!((status, location), (200, None));

    // curl sees the same, and following it lands on the app.
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "--max-time", "10"])
        .arg(strata.url("/blog/2023/x"))
        .output()
        .expect("curl");
    let addr = strata.addr;
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("308 http://{addr}/posts/2023-x"));
}

#[tokio::test]
async fn no_path_turns_the_location_into_another_host_or_a_header() {
    let strata = Strata::start(Some(REDIRECTS));
    // The gateway merges the slashes before the layer runs; the layer merges them again in what
    // a group puts at the start of the target.
    for path in ["/go//evil.example/x", "/go/%2F%2Fevil.example", "/go/%5Cevil.example"] {
        let (status, location, body) = get(&strata, path).await;
        match status {
            308 => {
                let location = location.unwrap();
                assert!(location.starts_with('/') && !location.starts_with("//"), "{path} → {location}");
                assert!(!location.starts_with("/\\"), "{path} → {location}");
            }
            // Encoded slashes are refused by the server's path policy before any layer.
            400 => assert!(location.is_none(), "{path}: {body}"),
            other => panic!("{path}: {other} {body}"),
        }
    }
    let (status, location, _) = get(&strata, "/go//evil.example/x").await;
    assert_eq!((status, location.as_deref()), (308, Some("/evil.example/x")));
    // An encoded CR LF never becomes a header: refused before routing.
    let res = client().get(strata.url("/go/x%0d%0aSet-Cookie:%20a=1")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 400);
    assert!(res.headers().get("set-cookie").is_none() && res.headers().get("location").is_none());
}

#[tokio::test]
async fn plain_http_requests_are_sent_to_https() {
    let strata = Strata::start(Some(
        r#"
[middleware.secure]
kind = "redirect"
https = true
https_port = 8443
rules = [{ prefix = "/old", to = "/new" }]

[[route]]
prefix = "/"
app = "echo"
stack = ["secure"]
"#,
    ));
    let (status, location, _) = get(&strata, "/old/a?b=1").await;
    assert_eq!((status, location.as_deref()), (308, Some("https://127.0.0.1:8443/new/a?b=1")));
    let (status, location, _) = get(&strata, "/x").await;
    assert_eq!((status, location.as_deref()), (308, Some("https://127.0.0.1:8443/x")));
    // The host the client named, without its port.
    let res = client().get(strata.url("/x")).header("host", "shop.example:80").send().await.unwrap();
    assert_eq!(res.headers()["location"], "https://shop.example:8443/x");
}

fn rewrite_config(upstream: &str) -> String {
    format!(
        r#"
[middleware.paths]
kind = "rewrite"
rules = [
  {{ regex = '^/old/(.*)$', to = '/new/$1' }},
  {{ regex = '^/item/(\d+)$', to = '/items?id=$1' }},
  {{ regex = '^/up/(.)x$', to = '/.$1/secret' }},
  {{ regex = '^/in/(.)x$', to = '/a/.$1/secret' }},
]

[middleware.api]
kind = "rewrite"
rules = [
  {{ prefix = "/api/v1", to = "/api/v2" }},
  {{ regex = '^/api/legacy/(.*)$', to = '/legacy/$1' }},
]

[[route]]
prefix = "/api"
upstream = "{upstream}"
strip_prefix = true
stack = ["api"]

[[route]]
prefix = "/"
upstream = "{upstream}"
stack = ["paths"]
"#
    )
}

/// The request target the upstream received (`RAW_URI`), or the status when it was not reached.
async fn received(strata: &Strata, path: &str) -> Result<String, u16> {
    let (status, _, body) = get(strata, path).await;
    match status {
        200 => Ok(body.lines().next().unwrap_or_default().to_string()),
        other => Err(other),
    }
}

#[tokio::test]
async fn the_upstream_receives_the_rewritten_path() {
    let upstream = Gunicorn::start_app("path_echo_app:app", &[]);
    let strata = Strata::start(Some(&rewrite_config(&upstream.url())));
    assert_eq!(received(&strata, "/old/a/b?x=1&y=2").await, Ok("/new/a/b?x=1&y=2".into()));
    assert_eq!(received(&strata, "/item/42?ignored=1").await, Ok("/items?id=42".into()));
    assert_eq!(received(&strata, "/other?x=1").await, Ok("/other?x=1".into()), "no rule: untouched");
    // Under a route that strips its prefix: the prefix is removed from the rewritten path…
    assert_eq!(received(&strata, "/api/v1/tasks?q=1").await, Ok("/v2/tasks?q=1".into()));
    assert_eq!(received(&strata, "/api/tasks").await, Ok("/tasks".into()));
    // …unless the rewrite moved the path out from under it: then it is sent whole.
    assert_eq!(received(&strata, "/api/legacy/x").await, Ok("/legacy/x".into()));
}

#[tokio::test]
async fn a_rewrite_never_sends_a_path_above_the_root() {
    let upstream = Gunicorn::start_app("path_echo_app:app", &[]);
    let strata = Strata::start(Some(&rewrite_config(&upstream.url())));
    // `/.` + `.` + `/secret` is `/../secret`: refused with a 400, the upstream never asked.
    let res = client().get(strata.url("/up/.x")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 400);
    assert!(res.text().await.unwrap().contains("The path climbs above the root with '..'."));
    // `/a/` + `..` + `/secret` is normalised to `/secret` before it is sent.
    assert_eq!(received(&strata, "/in/.x").await, Ok("/secret".into()));
}

#[test]
fn bad_rules_are_located_by_check() {
    let config = write_config(
        "[middleware.moved]\nkind = \"redirect\"\nrules = [{ regex = '^/old/((', to = '/new' }]\n\n\
         [middleware.paths]\nkind = \"rewrite\"\nrules = [\n  { prefix = '/a', to = 'https://elsewhere.example/' },\n]\n\n\
         [[route]]\nprefix = \"/\"\napp = \"echo\"\nstack = [\"moved\", \"paths\"]\n",
    );
    let file = config.path.to_str().unwrap();
    let out = run(&["check", "--config", file], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}:3:1: error: middleware `moved` (redirect): rule 1 (`^/old/((`): not a valid regex: regex parse error"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("unclosed group"), "the regex crate's own message: {stderr}");

    let config = write_config(
        "[middleware.paths]\nkind = \"rewrite\"\nrules = [\n  { prefix = '/a', to = 'https://elsewhere.example/' },\n]\n\n\
         [[route]]\nprefix = \"/\"\napp = \"echo\"\nstack = [\"paths\"]\n",
    );
    let file = config.path.to_str().unwrap();
    let out = run(&["check", "--config", file], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}:3:1: error: middleware `paths` (rewrite): rule 1 (`/a`): a rewrite target is a path on this server"
        )),
        "{stderr}"
    );

    // A key the kind does not have is located at the key.
    let config = write_config(
        "[middleware.slash]\nkind = \"redirect\"\ntrailing_slash = \"sometimes\"\n\n[[route]]\nprefix = \"/\"\napp = \"echo\"\nstack = [\"slash\"]\n",
    );
    let file = config.path.to_str().unwrap();
    let out = run(&["check", "--config", file], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{file}:3:18: error: unknown variant `sometimes`")), "{stderr}");
}

#[test]
fn check_warns_about_a_redirect_behind_authentication() {
    let config = write_config(
        "[middleware.auth]\nkind = \"basic_auth\"\nusers = { alice = \"$argon2id$v=19$m=19456,t=2,p=1$LLkVIMhQoh6WuT+JmOktrA$MLzwBru1zEjIK1UrLGtwGlyXmLnCg1cOwWR76SSFm08\" }\n\n\
         [middleware.moved]\nkind = \"redirect\"\nrules = [{ prefix = '/old', to = '/new' }]\n\n\
         [[route]]\nprefix = \"/\"\napp = \"echo\"\nstack = [\"auth\", \"moved\"]\n",
    );
    let out = run(&["check", "--config", config.path.to_str().unwrap()], "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("redirect-inside-auth"), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
}
