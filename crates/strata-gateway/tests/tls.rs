//! TLS termination through the real binary: HTTP/1.1 and HTTP/2 over TLS with curl, SNI picking
//! with `openssl s_client`, certificates swapped by a reload while a TLS connection stays open,
//! bad files reported at their config value, `redirect_http`, `X-Forwarded-Proto: https` at an
//! upstream, the expiry warning of `strata check`, and client certificates (mTLS).
//!
//! Certificates are made with rcgen: one test CA signs every server and client certificate, so
//! clients trust the CA's file.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tls::{TestCa, write_leaf};
use common::{ConfigFile, Strata, write_config};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// A `[server.tls]` config serving the echo app with the certificates `site` (the default) and
/// `api`, plus `extra` lines in `[server.tls]` and `routes` (default: echo on `/`).
fn tls_config(extra: &str, routes: &str) -> String {
    let routes = if routes.is_empty() { "[[route]]\nprefix = \"/\"\napp = \"echo\"\n" } else { routes };
    format!(
        r#"[server.tls]
listen = "127.0.0.1:0"
certificates = [
    {{ cert = "site.pem", key = "site.key" }},
    {{ cert = "api.pem", key = "api.key" }},
]
{extra}

{routes}"#
    )
}

/// A config directory with the CA and two certificates: `site` (site.test, www.site.test) and
/// `api` (api.test, *.api.test).
fn setup(ca: &TestCa, config: &str) -> ConfigFile {
    let file = write_config(config);
    let dir = file.dir.path();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    write_leaf(dir, "site", &ca.leaf("site", &["site.test", "www.site.test"], 30));
    write_leaf(dir, "api", &ca.leaf("api", &["api.test", "*.api.test"], 30));
    file
}

/// Sends SIGHUP to `strata` and waits until its log says the reload ended with `outcome`.
fn reload(strata: &Strata, outcome: &str) {
    let before = strata.stderr().matches(outcome).count();
    strata.signal("HUP");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if strata.stderr().matches(outcome).count() > before {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no `{outcome}` after SIGHUP: {}", strata.stderr());
}

/// `curl` over TLS to `name` (resolved to the TLS listener), trusting the test CA; `-w` output last.
fn curl(strata: &Strata, name: &str, path: &str, args: &[&str]) -> Output {
    let port = strata.https_addr().port();
    Command::new("curl")
        .args(["-s", "--max-time", "10", "--cacert"])
        .arg(strata.config_dir().join("ca.pem"))
        .arg("--resolve")
        .arg(format!("{name}:{port}:127.0.0.1"))
        .args(args)
        .arg(format!("https://{name}:{port}{path}"))
        .output()
        .expect("run curl")
}

/// The subject line `openssl s_client` shows for the certificate served to `server_name`.
fn served_subject(strata: &Strata, server_name: Option<&str>) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &strata.https_addr().to_string()]);
    match server_name {
        Some(name) => cmd.args(["-servername", name]),
        None => cmd.arg("-noservername"),
    };
    let out = cmd.stdin(Stdio::null()).output().expect("run openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().find(|l| l.starts_with("subject=")).unwrap_or_else(|| panic!("no subject in: {text}")).to_string()
}

#[test]
fn http_1_1_and_http_2_over_tls_with_alpn() {
    let ca = TestCa::new();
    let strata = Strata::start_tls(setup(&ca, &tls_config("", "")));
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let out = curl(&strata, "site.test", "/anything", &[flag, "-w", "\n%{http_code} %{http_version}"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{flag}: {text} {}", String::from_utf8_lossy(&out.stderr));
        assert!(text.ends_with(&format!("\n200 {version}")), "{flag}: {text}");
        assert!(text.contains("\"path\":\"/anything\""), "{text}");
    }
    // The plain listener still serves plain HTTP beside it.
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{}/anything", strata.addr))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
}

#[test]
fn http2_off_offers_only_http_1_1() {
    let ca = TestCa::new();
    let strata = Strata::start_tls(setup(&ca, &format!("[server]\nhttp2 = false\n{}", tls_config("", ""))));
    let out = curl(&strata, "site.test", "/anything", &["--http2", "-o", "/dev/null", "-w", "%{http_version}"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1.1", "ALPN offered no h2");
}

#[test]
fn sni_picks_the_certificate_and_unknown_names_get_the_first() {
    let ca = TestCa::new();
    let strata = Strata::start_tls(setup(&ca, &tls_config("", "")));
    let cases = [
        (Some("site.test"), "site"),
        (Some("www.site.test"), "site"),
        (Some("api.test"), "api"),
        (Some("API.Test"), "api"),
        (Some("eu.api.test"), "api"),
        (Some("a.eu.api.test"), "site"),
        (Some("unknown.example"), "site"),
        (None, "site"),
    ];
    for (name, subject) in cases {
        let shown = served_subject(&strata, name);
        assert!(
            shown.ends_with(&format!("CN = {subject}")) || shown.ends_with(&format!("CN={subject}")),
            "{name:?}: {shown}"
        );
    }
    // curl verifies the picked certificate against the name it asked for.
    let out = curl(&strata, "eu.api.test", "/anything", &["-o", "/dev/null", "-w", "%{http_code}"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
}

/// A TLS client trusting only the test CA, over tokio-rustls.
fn tls_connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(strata_gateway::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn tls_connect(connector: &tokio_rustls::TlsConnector, addr: SocketAddr, name: &str) -> TlsStream {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(name.to_string()).unwrap();
    connector.connect(name, tcp).await.expect("TLS handshake")
}

/// The subject CN of the certificate the server presented on `stream`.
fn presented_cn(stream: &TlsStream) -> String {
    let der = &stream.get_ref().1.peer_certificates().expect("a server certificate")[0];
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    cert.subject().iter_common_name().next().unwrap().as_str().unwrap().to_string()
}

/// One keep-alive HTTP/1.1 GET on `stream`: the status and the body.
async fn get(stream: &mut tokio::io::BufReader<TlsStream>, host: &str, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\n\r\n");
    stream.get_mut().write_all(request.as_bytes()).await.unwrap();
    let mut status_line = String::new();
    stream.read_line(&mut status_line).await.unwrap();
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut length = 0;
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_certificates_for_new_handshakes_and_keeps_open_connections() {
    let ca = TestCa::new();
    let strata = Strata::start_tls(setup(&ca, &tls_config("", "")));
    let connector = tls_connector(&ca.pem());

    let open = within(tls_connect(&connector, strata.https_addr(), "site.test")).await;
    assert_eq!(presented_cn(&open), "site");
    let mut open = tokio::io::BufReader::new(open);
    assert_eq!(within(get(&mut open, "site.test", "/anything")).await.0, 200);

    write_leaf(strata.config_dir(), "site", &ca.leaf("site renewed", &["site.test"], 30));
    reload(&strata, "config reloaded");

    assert_eq!(
        within(get(&mut open, "site.test", "/anything/again")).await.0,
        200,
        "the open connection still answers"
    );
    let fresh = within(tls_connect(&connector, strata.https_addr(), "site.test")).await;
    assert_eq!(presented_cn(&fresh), "site renewed", "a new handshake gets the new certificate");

    // A key that does not match its certificate is refused; the renewed certificate keeps serving.
    let other = ca.leaf("other", &["site.test"], 30);
    std::fs::write(strata.config_dir().join("site.key"), &other.key).unwrap();
    reload(&strata, "config rejected");
    assert!(strata.stderr().contains("the key does not match the certificate"), "{}", strata.stderr());
    let after = within(tls_connect(&connector, strata.https_addr(), "site.test")).await;
    assert_eq!(presented_cn(&after), "site renewed");
    let mut after = tokio::io::BufReader::new(after);
    assert_eq!(within(get(&mut after, "site.test", "/anything")).await.0, 200);
}

/// `f`, failing the test after 10 seconds.
#[test]
fn strict_sni_host_answers_421_to_a_request_for_another_host_than_the_handshakes() {
    let ca = TestCa::new();
    let status = |strata: &Strata, sni: &str, host: &str| {
        let host = format!("Host: {host}");
        let out = curl(strata, sni, "/anything", &["-o", "/dev/null", "-w", "%{http_code}", "-H", &host]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let strict = Strata::start_tls(setup(&ca, &tls_config("strict_sni_host = true", "")));
    assert_eq!(status(&strict, "site.test", "site.test"), "200");
    // The port and case of Host do not matter; the name does.
    assert_eq!(status(&strict, "www.site.test", "WWW.site.test:443"), "200");
    assert_eq!(status(&strict, "site.test", "api.test"), "421", "{}", strict.stderr());
    // Without the option, a host the certificate does not name is served as before.
    let lenient = Strata::start_tls(setup(&ca, &tls_config("", "")));
    assert_eq!(status(&lenient, "site.test", "api.test"), "200");
}

#[test]
fn with_watch_a_renewed_certificate_is_served_without_a_signal() {
    let ca = TestCa::new();
    let strata = Strata::start_tls_args(setup(&ca, &tls_config("", "")), &["--watch"]);
    assert!(served_subject(&strata, Some("site.test")).ends_with("CN = site"), "{}", strata.stderr());
    // Only the certificate files change, not the config. The key and the certificate are written
    // one after the other: a look between the two sees a mismatched pair, which is rejected, and
    // the next look serves the pair.
    write_leaf(strata.config_dir(), "site", &ca.leaf("site renewed", &["site.test"], 30));
    let start = Instant::now();
    while !served_subject(&strata, Some("site.test")).ends_with("CN = site renewed") {
        assert!(start.elapsed() < Duration::from_secs(10), "not renewed: {}", strata.stderr());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(strata.stderr().contains("a certificate or key file changed: reloading"), "{}", strata.stderr());
    // The other certificate was untouched and is still served.
    assert!(served_subject(&strata, Some("api.test")).ends_with("CN = api"));
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f).await.expect("done within 10 s")
}

/// `strata check` on `config` in a directory set up by [`setup`], after `prepare` changed it.
fn check(config: &str, prepare: impl FnOnce(&Path)) -> (Output, ConfigFile) {
    let ca = TestCa::new();
    let file = setup(&ca, config);
    prepare(file.dir.path());
    let out = Command::new(common::strata_bin()).arg("check").arg("--config").arg(&file.path).output().unwrap();
    (out, file)
}

#[test]
fn bad_files_are_config_errors_at_their_value() {
    let config = tls_config("", "");
    // Line 4 holds the `site` pair (`key` at column 32), line 5 the `api` pair (`cert` at
    // column 14, `key` at column 31).
    let (out, file) = check(&config, |dir| std::fs::remove_file(dir.join("api.pem")).unwrap());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let config_path = file.path.display();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let missing = file.dir.path().join("api.pem");
    assert!(
        stderr.contains(&format!("{config_path}:5:14: error: `cert`: {}: cannot read the file", missing.display())),
        "{stderr}"
    );

    // Keys are secrets: a broken key file is named, never quoted.
    const SECRET: &str = "c2VjcmV0LWtleS1tYXRlcmlhbA";
    let (out, file) = check(&config, |dir| {
        let broken = format!("-----BEGIN PRIVATE KEY-----\n{SECRET}!!\n-----END PRIVATE KEY-----\n");
        std::fs::write(dir.join("api.key"), broken).unwrap();
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let key = file.dir.path().join("api.key");
    assert!(stderr.contains(&format!("{}:5:31: error: `key`: {}: ", file.path.display(), key.display())), "{stderr}");
    assert!(!stderr.contains(SECRET), "a key file's contents are never shown: {stderr}");

    let (out, file) = check(&config, |dir| std::fs::write(dir.join("site.key"), "no key here\n").unwrap());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{}:4:32: error: `key`: ", file.path.display())), "{stderr}");
    assert!(stderr.contains("no PEM private key"), "{stderr}");

    // A key from another certificate.
    let (out, file) = check(&config, |dir| std::fs::copy(dir.join("site.key"), dir.join("api.key")).map(drop).unwrap());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let cert = file.dir.path().join("api.pem");
    assert!(
        stderr.contains(&format!("{}:5:31: error: `key`: ", file.path.display()))
            && stderr.contains(&format!("the key does not match the certificate in {}", cert.display())),
        "{stderr}"
    );
    assert!(stderr.contains("1 error in the config"), "{stderr}");
}

#[test]
fn check_warns_about_a_certificate_expiring_within_two_weeks() {
    let ca = TestCa::new();
    let file = setup(&ca, &tls_config("", ""));
    write_leaf(file.dir.path(), "api", &ca.leaf("api", &["api.test"], 5));
    let out = Command::new(common::strata_bin()).arg("check").arg("--config").arg(&file.path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "a warning is not an error: {stdout}");
    let api = file.dir.path().join("api.pem");
    let line =
        stdout.lines().find(|l| l.starts_with("warning[certificate-expiry]")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.contains(&format!("certificate {} expires on 20", api.display())) && line.ends_with("(in 5 days)"),
        "{line}"
    );
    assert!(!stdout.contains("site.pem"), "30 days left is no news: {stdout}");
    let strict =
        Command::new(common::strata_bin()).args(["check", "--strict", "--config"]).arg(&file.path).output().unwrap();
    assert_eq!(strict.status.code(), Some(1));
}

/// A plain GET with `Host: host` to the plain listener: status and `Location`.
fn plain_get(strata: &Strata, host: &str, path: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "--path-as-is", "--max-time", "10", "-o", "/dev/null", "-H"])
        .arg(format!("host: {host}"))
        .args(["-w", "%{http_code} %{redirect_url}"])
        .arg(format!("http://{}{path}", strata.addr))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, location) = text.split_once(' ').unwrap_or((&text, ""));
    (status.to_string(), location.to_string())
}

#[test]
fn redirect_http_sends_plain_requests_to_https_except_exempt_paths() {
    let ca = TestCa::new();
    let strata = Strata::start_tls(setup(&ca, &tls_config("redirect_http = true", "")));
    let port = strata.https_addr().port();
    let (status, location) = plain_get(&strata, "site.test:8080", "/anything/x?a=1&b=2");
    assert_eq!(status, "308");
    assert_eq!(location, format!("https://site.test:{port}/anything/x?a=1&b=2"));
    let (status, location) = plain_get(&strata, "[::1]:80", "/a/../anything");
    assert_eq!((status.as_str(), location), ("308", format!("https://[::1]:{port}/anything")), "normalised first");
    // The default exemption: ACME HTTP-01 challenges stay on plain HTTP (the echo app has no
    // such path: its 404 shows the request was served, not redirected).
    assert_eq!(plain_get(&strata, "site.test", "/.well-known/acme-challenge/t").0, "404");
    let log = strata.stderr();
    assert!(!log.contains("WARN"), "{log}");
    // Over TLS nothing is redirected.
    let out = curl(&strata, "site.test", "/anything", &["-o", "/dev/null", "-w", "%{http_code}"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");

    let strata =
        Strata::start_tls(setup(&ca, &tls_config("redirect_http = true\nredirect_exempt = [\"/anything/open\"]", "")));
    assert_eq!(plain_get(&strata, "site.test", "/anything/open/1").0, "200");
    assert_eq!(plain_get(&strata, "site.test", "/.well-known/acme-challenge/t").0, "308");
}

#[test]
fn an_upstream_sees_that_the_request_came_over_tls() {
    let echo = Strata::start(Some("[[route]]\nprefix = \"/\"\napp = \"echo\"\n"));
    let routes = format!("[[route]]\nprefix = \"/\"\nupstream = \"http://{}\"\nforwarded = \"both\"\n", echo.addr);
    let ca = TestCa::new();
    let strata = Strata::start_tls(setup(&ca, &tls_config("", &routes)));
    let out = curl(&strata, "site.test", "/anything", &["-H", "x-forwarded-proto: http"]);
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{out:?}"));
    let headers = &body["headers"];
    assert_eq!(headers["x-forwarded-proto"], "https", "{body}");
    assert!(headers["forwarded"].as_str().unwrap().contains(";proto=https;"), "{body}");
    let plain = Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .arg(format!("http://{}/anything", strata.addr))
        .output()
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&plain.stdout).unwrap();
    assert_eq!(body["headers"]["x-forwarded-proto"], "http", "{body}");
}

#[test]
fn client_certificates_are_required_with_client_ca() {
    let ca = TestCa::new();
    let strata = Strata::start_tls(setup(&ca, &tls_config("client_ca = \"ca.pem\"", "")));
    let client = ca.client("a client");
    write_leaf(strata.config_dir(), "client", &client);
    let without = curl(&strata, "site.test", "/anything", &["-o", "/dev/null", "-w", "%{http_code}"]);
    assert!(!without.status.success(), "no client certificate: refused");
    assert_eq!(String::from_utf8_lossy(&without.stdout), "000");
    let dir = strata.config_dir();
    let with = curl(
        &strata,
        "site.test",
        "/anything",
        &[
            "--cert",
            dir.join("client.pem").to_str().unwrap(),
            "--key",
            dir.join("client.key").to_str().unwrap(),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&with.stdout), "200", "{}", String::from_utf8_lossy(&with.stderr));

    // A certificate from another CA is refused too.
    let stranger = TestCa::new().client("stranger");
    write_leaf(dir, "stranger", &stranger);
    let out = curl(
        &strata,
        "site.test",
        "/anything",
        &[
            "--cert",
            dir.join("stranger.pem").to_str().unwrap(),
            "--key",
            dir.join("stranger.key").to_str().unwrap(),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "000");

    // `optional`: served without a certificate.
    let strata = Strata::start_tls(setup(&ca, &tls_config("client_ca = \"ca.pem\"\nclient_auth = \"optional\"", "")));
    let out = curl(&strata, "site.test", "/anything", &["-o", "/dev/null", "-w", "%{http_code}"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
}

#[test]
fn a_silent_client_is_cut_at_the_header_read_timeout() {
    let ca = TestCa::new();
    let config = format!("[server]\nheader_read_timeout = \"1s\"\n{}", tls_config("", ""));
    let strata = Strata::start_tls(setup(&ca, &config));
    let mut tcp = std::net::TcpStream::connect(strata.https_addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 1];
    let read = std::io::Read::read(&mut tcp, &mut buf);
    assert!(matches!(read, Ok(0)) || read.is_err(), "{read:?}");
    assert!(start.elapsed() < Duration::from_secs(5), "closed after {:?}", start.elapsed());
    assert!(!strata.stderr().contains("WARN"), "a failed handshake is no warning: {}", strata.stderr());
}
