//! The path normalisation policy and Host validation, against a real upstream that resolves paths
//! itself: Python's `http.server` serving a directory with `admin/secret.txt` and
//! `public/hello.txt`. `/admin` is behind `basic_auth`, `/public` and `/` are open, all three proxy
//! to it. Every spelling of the secret's path is sent as exact bytes, over raw HTTP/1.1 and over
//! h2c, since curl, reqwest and the `url` crate would normalise it before sending. None may return
//! the secret without credentials.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use argon2::password_hash::{PasswordHasher, SaltString};
use bytes::Bytes;
use common::Strata;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};

const SECRET: &str = "TOP-SECRET-c0ffee";
const HELLO: &str = "hello from public";
/// `alice:wonderland`.
const CREDENTIALS: &str = "Basic YWxpY2U6d29uZGVybGFuZA==";

/// A Python process on a loopback port, killed on drop.
struct Python {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Python {
    /// `python3 -m http.server` over a directory holding `admin/secret.txt` and `public/hello.txt`.
    fn file_server() -> Python {
        let dir = tempfile::tempdir().unwrap();
        for (file, text) in [("admin/secret.txt", SECRET), ("public/hello.txt", HELLO)] {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let root = dir.path().to_str().unwrap().to_string();
        Python::start(dir, |port| {
            vec![
                "-m".into(),
                "http.server".into(),
                "--bind".into(),
                "127.0.0.1".into(),
                port,
                "--directory".into(),
                root,
            ]
        })
    }

    /// A Python `http.server` handler that answers every GET with the `Host` and the path it
    /// received: what strata forwarded.
    fn probe() -> Python {
        const SCRIPT: &str = r#"
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class Probe(BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("host=%s\npath=%s\n" % (self.headers.get("Host"), self.path)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
HTTPServer(("127.0.0.1", int(sys.argv[1])), Probe).serve_forever()
"#;
        Python::start(tempfile::tempdir().unwrap(), |port| vec!["-c".into(), SCRIPT.into(), port])
    }

    fn start(dir: tempfile::TempDir, args: impl FnOnce(String) -> Vec<String>) -> Python {
        let addr = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
        let child = Command::new("python3")
            .args(args(addr.port().to_string()))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 must be installed");
        // Dropped (and killed) if the port never opens.
        let python = Python { child, addr, _dir: dir };
        assert!(common::wait_for_port(addr, Duration::from_secs(20)), "python did not start on {addr}");
        python
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cheap argon2id hash: the binary under test is a debug build, where full-cost argon2 is slow.
fn argon2_hash(password: &str) -> String {
    let params = argon2::Params::new(1024, 1, 1, None).unwrap();
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    argon.hash_password(password.as_bytes(), &SaltString::from_b64("c2FsdHNhbHRzYWx0").unwrap()).unwrap().to_string()
}

/// Request ids, timing and an access log on every response; `/admin` behind basic auth; `routes`
/// are the `[[route]]` tables; `server` extra `[server]` keys.
fn config(server: &str, routes: &str, log: &Path) -> String {
    format!(
        r#"
[server]
stack = ["rid", "timing", "log"]
{server}

[middleware.rid]
kind = "request_id"

[middleware.timing]
kind = "timing"

[middleware.log]
kind = "access_log"
format = "json"
output = "{log}"

[middleware.auth]
kind = "basic_auth"
realm = "files"
users = {{ alice = "{hash}" }}

{routes}
"#,
        log = log.display(),
        hash = argon2_hash("wonderland")
    )
}

/// `/admin` (auth), `/public` and `/` to the file server, `/probe` to the probe.
fn plain_routes(files: &Python, probe: &Python) -> String {
    format!(
        r#"
[[route]]
prefix = "/admin"
stack = ["auth"]
upstream = "{files}"

[[route]]
prefix = "/public"
upstream = "{files}"

[[route]]
prefix = "/"
upstream = "{files}"

[[route]]
prefix = "/probe"
upstream = "{probe}"
"#,
        files = files.url(""),
        probe = probe.url(""),
    )
}

/// A response, as far as these tests look at it.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Lower-case names.
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Sends `head` (request line and headers, without the final blank line) as exact bytes on a new
/// HTTP/1.1 connection, with `Connection: close`, and reads the whole answer.
fn raw(addr: SocketAddr, head: &str) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no response head for {head:?}: {text:?}"));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    // Bodies here are small and, from Python, not chunked; strata's own are short texts.
    Answer { status, headers, body: body.to_string() }
}

/// `GET path` over raw HTTP/1.1 with a plain `Host`.
fn get(addr: SocketAddr, path: &str, authorization: Option<&str>) -> Answer {
    let auth = authorization.map(|a| format!("\r\nAuthorization: {a}")).unwrap_or_default();
    raw(addr, &format!("GET {path} HTTP/1.1\r\nHost: files.example{auth}"))
}

/// `GET path` over h2c with prior knowledge, the path put in `:path` exactly as given.
async fn get_h2(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> Answer {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let uri = http::Uri::builder().scheme("http").authority(addr.to_string()).path_and_query(path).build().unwrap();
    let mut req = http::Request::builder().uri(uri);
    for (name, value) in extra {
        req = req.header(*name, *value);
    }
    let res =
        tokio::time::timeout(Duration::from_secs(20), sender.send_request(req.body(Empty::<Bytes>::new()).unwrap()))
            .await
            .expect("h2 answer in time")
            .unwrap();
    let status = res.status().as_u16();
    let headers =
        res.headers().iter().map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or("").to_string())).collect();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Answer { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
}

/// Spellings of the secret's path, and what each must get without credentials. A `308` is
/// followed: its `Location` must be protected in turn.
const SPELLINGS: &[(&str, u16)] = &[
    ("/admin/secret.txt", 401),
    ("/public/../admin/secret.txt", 401),
    ("/public/%2e%2e/admin/secret.txt", 401),
    ("/public/%2E%2e/admin/secret.txt", 401),
    ("/public/.%2e/admin/secret.txt", 401),
    ("/public/%2e./admin/secret.txt", 401),
    ("/public/x/../../admin/secret.txt", 401),
    ("//admin/secret.txt", 401),
    ("/public//../admin/secret.txt", 401),
    ("///admin//secret.txt", 401),
    ("/./admin/secret.txt", 401),
    ("/admin/./secret.txt", 401),
    ("/admin/.", 401),
    ("/%61dmin/secret.txt", 401),
    ("/admin/secret%2etxt", 401),
    ("/public/%2e%2e/admin/secret.txt?x=../y", 401),
    // Decoded once only: Python decodes it once too, to `%2e%2e`, a name that does not exist.
    ("/public/%252e%252e/admin/secret.txt", 404),
    ("/public/..%252fadmin/secret.txt", 404),
    // Case-sensitive routes; the file system is case-sensitive too.
    ("/ADMIN/secret.txt", 404),
    ("/Admin/secret.txt", 404),
    ("/public/..%2Fadmin/secret.txt", 400),
    ("/public/..%2fadmin/secret.txt", 400),
    ("/public/%2e%2e%2fadmin/secret.txt", 400),
    ("/admin%2Fsecret.txt", 400),
    ("/public/..%5Cadmin/secret.txt", 400),
    ("/public/..%5cadmin%5csecret.txt", 400),
    ("/public/..\\admin\\secret.txt", 400),
    ("/public\\..\\admin/secret.txt", 400),
    ("/public/..;/admin/secret.txt", 400),
    ("/public/..;x=1/admin/secret.txt", 400),
    ("/public/.;/../admin/secret.txt", 400),
    ("/admin;x=1/secret.txt", 400),
    ("/;x/admin/secret.txt", 400),
    ("/admin;/secret.txt", 400),
    ("/public/../../admin/secret.txt", 400),
    ("/%2e%2e/admin/secret.txt", 400),
    ("/..", 400),
    ("/public/%00/../../admin/secret.txt", 400),
    ("/public/%zz/../../admin/secret.txt", 400),
    ("/public/%2/../../admin/secret.txt", 400),
];

/// Checks one answer to a credential-less request for the secret.
fn assert_protected(spelling: &str, expected: u16, answer: &Answer, via: &str) {
    assert!(!answer.body.contains(SECRET), "{via} {spelling}: the secret leaked: {answer:?}");
    assert!(matches!(answer.status, 400 | 401 | 404 | 308), "{via} {spelling}: {answer:?}");
    assert_eq!(answer.status, expected, "{via} {spelling}: {answer:?}");
    if answer.status == 400 {
        // Strata's own sentence, never the path.
        assert!(answer.body.starts_with("400 Bad Request"), "{via} {spelling}: {answer:?}");
        assert!(!answer.body.contains("admin"), "{via} {spelling}: {answer:?}");
    }
}

#[test]
fn no_spelling_of_a_protected_path_reaches_it_without_credentials_over_http_1_1() {
    let (files, probe, logs) = (Python::file_server(), Python::probe(), tempfile::tempdir().unwrap());
    let log = logs.path().join("access.log");
    let strata = Strata::start(Some(&config("", &plain_routes(&files, &probe), &log)));
    // The hole this closes: the upstream itself resolves every one of these to the secret.
    for path in ["/public/../admin/secret.txt", "/public/%2e%2e/admin/secret.txt", "/public/..%2Fadmin/secret.txt"] {
        let direct = raw(files.addr, &format!("GET {path} HTTP/1.1\r\nHost: x"));
        assert_eq!((direct.status, direct.body.as_str()), (200, SECRET), "{path} direct to the upstream");
    }
    for (spelling, expected) in SPELLINGS {
        let answer = get(strata.addr, spelling, None);
        assert_protected(spelling, *expected, &answer, "HTTP/1.1");
        // Refusals come through the server stack: decorated like any response.
        assert!(answer.header("x-request-id").is_some(), "{spelling}: {answer:?}");
        assert!(answer.header("x-response-time").is_some(), "{spelling}: {answer:?}");
    }
    // And the refusals are logged, with the path as it was sent.
    let start = std::time::Instant::now();
    let logged = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= SPELLINGS.len() || start.elapsed() > Duration::from_secs(10) {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let lines: Vec<serde_json::Value> = logged.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.iter().any(|l| l["status"] == 400 && l["path"] == "/public/..;/admin/secret.txt"), "{logged}");
}

#[test]
fn legitimate_requests_still_work_and_the_upstream_gets_the_normalised_path() {
    let (files, probe, logs) = (Python::file_server(), Python::probe(), tempfile::tempdir().unwrap());
    let strata = Strata::start(Some(&config("", &plain_routes(&files, &probe), &logs.path().join("a.log"))));
    for path in ["/public/hello.txt", "/public/%68ello.txt", "/public/./hello.txt", "/public//hello.txt"] {
        let answer = get(strata.addr, path, None);
        assert_eq!((answer.status, answer.body.as_str()), (200, HELLO), "{path}");
    }
    for path in ["/admin/secret.txt", "/public/../admin/secret.txt", "/%61dmin/secret%2Etxt"] {
        let answer = get(strata.addr, path, Some(CREDENTIALS));
        assert_eq!((answer.status, answer.body.as_str()), (200, SECRET), "{path}");
    }
    // What was authorised is what is fetched: the upstream receives the normalised path, query
    // untouched.
    let seen = get(strata.addr, "/probe/a/./b/../%63%3a//d?q=%2e%2e/x&y=1", None);
    assert_eq!(seen.status, 200, "{seen:?}");
    assert!(seen.body.contains("path=/probe/a/c%3A/d?q=%2e%2e/x&y=1\n"), "{seen:?}");
    assert!(seen.body.contains("host=files.example\n"), "{seen:?}");
    // Parameters that do not change the route pass, untouched.
    let seen = get(strata.addr, "/probe/x;jsessionid=1/y;v=2", None);
    assert!(seen.body.contains("path=/probe/x;jsessionid=1/y;v=2\n"), "{seen:?}");
}

#[tokio::test]
async fn no_spelling_reaches_it_over_h2c_either() {
    let (files, probe, logs) = (Python::file_server(), Python::probe(), tempfile::tempdir().unwrap());
    let strata = Strata::start(Some(&config("", &plain_routes(&files, &probe), &logs.path().join("a.log"))));
    for (spelling, expected) in SPELLINGS {
        let answer = get_h2(strata.addr, spelling, &[]).await;
        assert_protected(spelling, *expected, &answer, "h2c");
        assert!(answer.header("x-request-id").is_some(), "{spelling}: {answer:?}");
    }
    let answer = get_h2(strata.addr, "/public/../admin/secret.txt", &[("authorization", CREDENTIALS)]).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, SECRET));
    let answer = get_h2(strata.addr, "/public/%68ello.txt", &[]).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, HELLO));
    let seen = get_h2(strata.addr, "/probe/x/../y", &[]).await;
    assert!(seen.body.contains("path=/probe/y\n"), "{seen:?}");
    assert!(seen.body.contains(&format!("host={}\n", strata.addr)), ":authority is the host: {seen:?}");
    // RFC 9113 §8.3.1: a Host that disagrees with :authority.
    let answer = get_h2(strata.addr, "/public/hello.txt", &[("host", "other.example")]).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(answer.header("x-request-id").is_some(), "{answer:?}");
}

#[test]
fn with_strip_prefix_and_base_paths_the_spellings_are_still_protected() {
    let (files, logs) = (Python::file_server(), tempfile::tempdir().unwrap());
    // Each route serves its own directory: the upstream's base path replaces the prefix.
    let routes = format!(
        r#"
[[route]]
prefix = "/admin"
stack = ["auth"]
upstream = "{admin}"
strip_prefix = true

[[route]]
prefix = "/public"
upstream = "{public}"
strip_prefix = true

[[route]]
prefix = "/"
upstream = "{public}"
strip_prefix = true
"#,
        admin = files.url("/admin"),
        public = files.url("/public"),
    );
    let strata = Strata::start(Some(&config("", &routes, &logs.path().join("a.log"))));
    for (spelling, expected) in SPELLINGS {
        // `/ADMIN/…` falls to `/`, which serves the public directory: not found there either.
        let answer = get(strata.addr, spelling, None);
        assert_protected(spelling, *expected, &answer, "strip_prefix");
    }
    for (path, credentials, body) in [
        ("/public/hello.txt", None, HELLO),
        ("/hello.txt", None, HELLO),
        ("/admin/secret.txt", Some(CREDENTIALS), SECRET),
        ("/public/../admin/secret.txt", Some(CREDENTIALS), SECRET),
    ] {
        let answer = get(strata.addr, path, credentials);
        assert_eq!((answer.status, answer.body.as_str()), (200, body), "{path}");
    }
}

#[test]
fn escaped_slashes_can_redirect_to_a_path_that_is_itself_protected() {
    let (files, probe, logs) = (Python::file_server(), Python::probe(), tempfile::tempdir().unwrap());
    let server = "escaped_slashes = \"redirect\"";
    let strata = Strata::start(Some(&config(server, &plain_routes(&files, &probe), &logs.path().join("a.log"))));
    for (path, location) in [
        ("/public/..%2Fadmin/secret.txt", "/admin/secret.txt"),
        ("/public/..%5cadmin%2fsecret.txt?a=1", "/admin/secret.txt?a=1"),
        ("/public\\..\\admin\\secret.txt", "/admin/secret.txt"),
    ] {
        let answer = get(strata.addr, path, None);
        assert_eq!((answer.status, answer.header("location")), (308, Some(location)), "{path}: {answer:?}");
        assert!(answer.header("x-request-id").is_some(), "{answer:?}");
        let followed = get(strata.addr, location, None);
        assert_eq!(followed.status, 401, "{location}: {followed:?}");
        assert!(!followed.body.contains(SECRET));
    }
    assert_eq!(get(strata.addr, "/public/..%2F..%2F..%2Fadmin", None).status, 400, "above the root");
    let answer = get(strata.addr, "/public/hello.txt", None);
    assert_eq!((answer.status, answer.body.as_str()), (200, HELLO));
}

#[test]
fn kept_escaped_slashes_and_unmerged_slashes_reach_the_upstream_as_data() {
    let (files, probe, logs) = (Python::file_server(), Python::probe(), tempfile::tempdir().unwrap());
    let server = "escaped_slashes = \"keep\"\nmerge_slashes = false";
    let strata = Strata::start(Some(&config(server, &plain_routes(&files, &probe), &logs.path().join("a.log"))));
    for (path, seen) in [
        ("/probe/a%2fb", "/probe/a%2Fb"),
        ("/probe/a\\b", "/probe/a%5Cb"),
        ("/probe//x/./y", "/probe//x/y"),
        ("/probe/..%2F..", "/probe/..%2F.."),
    ] {
        let answer = get(strata.addr, path, None);
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
        assert!(answer.body.contains(&format!("path={seen}\n")), "{path}: {answer:?}");
    }
}

#[test]
fn host_is_validated_as_rfc_9112_asks() {
    let (files, probe, logs) = (Python::file_server(), Python::probe(), tempfile::tempdir().unwrap());
    let strata = Strata::start(Some(&config("", &plain_routes(&files, &probe), &logs.path().join("a.log"))));
    let bad = [
        "GET /public/hello.txt HTTP/1.1",
        "GET /public/hello.txt HTTP/1.1\r\nHost: a.example\r\nHost: b.example",
        "GET /public/hello.txt HTTP/1.1\r\nHost: a.example\r\nhost: a.example",
        "GET /public/hello.txt HTTP/1.1\r\nHost: user@a.example",
        "GET /public/hello.txt HTTP/1.1\r\nHost: a.example:http",
        "GET /public/hello.txt HTTP/1.1\r\nHost: a/b",
        "GET /public/hello.txt HTTP/1.1\r\nHost: ",
        "GET /public/hello.txt HTTP/1.1\r\nHost: [::1",
        "GET http://user@a.example/public/hello.txt HTTP/1.1\r\nHost: a.example",
        // Asterisk-form and CONNECT's authority-form are not served.
        "OPTIONS * HTTP/1.1\r\nHost: a.example",
        "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443",
    ];
    for head in bad {
        let answer = raw(strata.addr, head);
        assert_eq!(answer.status, 400, "{head:?}: {answer:?}");
        assert!(answer.header("x-request-id").is_some(), "{head:?}: {answer:?}");
        assert!(!answer.body.contains(HELLO));
    }
    for head in [
        "GET /public/hello.txt HTTP/1.0",
        "GET /public/hello.txt HTTP/1.1\r\nHost: a.example:8080",
        "GET /public/hello.txt HTTP/1.1\r\nHost: [::1]:8080",
        "GET /public/hello.txt HTTP/1.1\r\nHost: 127.0.0.1",
    ] {
        let answer = raw(strata.addr, head);
        assert_eq!((answer.status, answer.body.as_str()), (200, HELLO), "{head:?}");
    }
    // An absolute-form target names the host: it replaces Host for every layer and the upstream.
    let seen = raw(strata.addr, "GET http://other.example:81/probe/a/../b HTTP/1.1\r\nHost: evil.example");
    assert_eq!(seen.status, 200, "{seen:?}");
    assert!(seen.body.contains("host=other.example:81\npath=/probe/b\n"), "{seen:?}");
    let seen = raw(strata.addr, "GET http://other.example/probe/x HTTP/1.1");
    assert!(seen.body.contains("host=other.example\n"), "no Host needed: {seen:?}");
    let answer = raw(strata.addr, "GET http://other.example/public/../admin/secret.txt HTTP/1.1\r\nHost: x");
    assert_eq!(answer.status, 401, "{answer:?}");
}
