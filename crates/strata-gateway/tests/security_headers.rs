//! `security_headers` through the real binary: the preset on app responses and on a 401 made
//! inside, HSTS over TLS only (curl over HTTPS, reqwest over plain HTTP), a fresh CSP nonce per
//! request that a gunicorn upstream receives and that matches the policy, the upstream's own
//! headers kept or overridden, and a bad value reported at its file:line:column by `strata check`.

mod common;

use std::process::Command;

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use common::gunicorn::Gunicorn;
use common::tls::{TestCa, write_leaf};
use common::{Strata, client, run, write_config};

/// A cheap argon2id PHC string for `password` (tests need no real cost).
fn argon2id(password: &str) -> String {
    let params = Params::new(1024, 1, 1, None).unwrap();
    let salt = SaltString::encode_b64(b"security-headers").unwrap();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

fn text<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn the_preset_decorates_app_responses_and_a_401_made_inside_without_hsts_over_plain_http() {
    let strata = Strata::start(Some(&format!(
        r#"
[server]
stack = ["security", "auth"]

[middleware.security]
kind = "security_headers"

[middleware.auth]
kind = "basic_auth"
users = {{ alice = "{}" }}

[[route]]
prefix = "/"
app = "echo"
"#,
        argon2id("s3cret")
    )));
    let anonymous = client().get(strata.url("/status/200")).send().await.unwrap();
    let alice = client().get(strata.url("/status/200")).basic_auth("alice", Some("s3cret")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(alice.status(), 200);
    for res in [&anonymous, &alice] {
        let h = res.headers();
        assert_eq!(text(h, "x-content-type-options"), Some("nosniff"), "{}", res.status());
        assert_eq!(text(h, "x-frame-options"), Some("DENY"));
        assert_eq!(text(h, "referrer-policy"), Some("strict-origin-when-cross-origin"));
        assert_eq!(text(h, "strict-transport-security"), None, "never over plain HTTP (RFC 6797 §7.2)");
    }
}

#[test]
fn hsts_is_sent_over_tls_only() {
    let ca = TestCa::new();
    let config = write_config(
        r#"
[server]
stack = ["security"]

[server.tls]
listen = "127.0.0.1:0"
certificates = [{ cert = "site.pem", key = "site.key" }]

[middleware.security]
kind = "security_headers"
hsts_max_age = "730d"
hsts_preload = true

[[route]]
prefix = "/"
app = "echo"
"#,
    );
    std::fs::write(config.dir.path().join("ca.pem"), ca.pem()).unwrap();
    write_leaf(config.dir.path(), "site", &ca.leaf("site", &["site.test"], 2));
    let strata = Strata::start_tls(config);
    let port = strata.https_addr().port();
    let head = |url: String, extra: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "10", "-o", "/dev/null", "-D", "-", "--cacert"])
            .arg(strata.config_dir().join("ca.pem"))
            .args(["--resolve", &format!("site.test:{port}:127.0.0.1")])
            .args(extra)
            .arg(url)
            .output()
            .expect("run curl");
        assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().to_ascii_lowercase()
    };
    let hsts = "strict-transport-security: max-age=63072000; includesubdomains; preload";
    for version in ["--http1.1", "--http2"] {
        let https = head(format!("https://site.test:{port}/status/200"), &[version]);
        assert!(https.contains(hsts), "{version}: {https}");
        assert!(https.contains("x-content-type-options: nosniff"), "{https}");
    }
    let plain = head(strata.url("/status/200"), &[]);
    assert!(plain.contains("x-content-type-options: nosniff"), "{plain}");
    assert!(!plain.contains("strict-transport-security"), "{plain}");
}

fn nonce_config(upstream: &str, extra: &str) -> String {
    format!(
        r#"
[server]
stack = ["security"]

[middleware.security]
kind = "security_headers"
content_security_policy = "default-src 'self'; script-src 'self' 'nonce-{{nonce}}'"
{extra}

[[route]]
prefix = "/"
upstream = "{upstream}"
"#
    )
}

#[tokio::test]
async fn a_fresh_nonce_per_request_reaches_a_gunicorn_upstream_and_matches_the_policy() {
    let app = Gunicorn::start_app("nonce_app:app", &[]);
    let strata = Strata::start(Some(&nonce_config(&app.url(), "")));
    let mut nonces = Vec::new();
    for _ in 0..3 {
        // The client's own nonce never reaches the upstream.
        let res = client().get(strata.url("/page")).header("x-csp-nonce", "spoofed").send().await.unwrap();
        assert_eq!(res.status(), 200);
        let policy = text(res.headers(), "content-security-policy").expect("a policy").to_string();
        let body = res.text().await.unwrap();
        let nonce = body.strip_prefix("<script nonce=\"").and_then(|b| b.strip_suffix("\">run()</script>"));
        let nonce = nonce.unwrap_or_else(|| panic!("{body}")).to_string();
        assert_eq!(nonce.len(), 24, "{body}");
        assert_eq!(policy, format!("default-src 'self'; script-src 'self' 'nonce-{nonce}'"));
        nonces.push(nonce);
    }
    nonces.sort();
    nonces.dedup();
    assert_eq!(nonces.len(), 3, "one nonce per request");
}

#[tokio::test]
async fn the_upstreams_own_headers_are_kept_unless_override_is_set() {
    let app = Gunicorn::start_app("nonce_app:app", &[]);
    let kept = Strata::start(Some(&nonce_config(&app.url(), "")));
    let res = client().get(kept.url("/own")).send().await.unwrap();
    assert_eq!(text(res.headers(), "x-frame-options"), Some("SAMEORIGIN"));
    assert_eq!(text(res.headers(), "content-security-policy"), Some("default-src *"));
    assert_eq!(text(res.headers(), "x-content-type-options"), Some("nosniff"));
    let overridden = Strata::start(Some(&nonce_config(&app.url(), "override = true")));
    let res = client().get(overridden.url("/own")).send().await.unwrap();
    let frame: Vec<_> = res.headers().get_all("x-frame-options").iter().collect();
    assert_eq!(frame, ["DENY"]);
    assert!(text(res.headers(), "content-security-policy").unwrap().contains("'nonce-"));
}

#[test]
fn a_bad_value_is_reported_at_its_line_and_column() {
    let config = write_config(
        "[server]\nstack = [\"security\"]\n\n[middleware.security]\nkind = \"security_headers\"\nframe_options = \"ALLOW-FROM https://a.example\"\n\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n",
    );
    let file = config.path.to_str().unwrap();
    let out = run(&["check", "--config", file], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{file}:6:1: error: middleware `security` (security_headers): `ALLOW-FROM https://a.example`: expected \"DENY\", \"SAMEORIGIN\" or \"off\"")),
        "{stderr}"
    );
}
