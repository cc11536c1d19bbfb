//! `jwt` through the real binary: tokens minted by Python's PyJWT (RS256 and ES256, from a PEM key
//! the test wrote and from a JWKS), a JWKS endpoint that rotates its key and counts its fetches,
//! claims forwarded to the echo app over the client's spoofed headers, and bad configs refused by
//! `strata check` at file:line:column.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::python::PythonServer;
use common::{Strata, client, run, write_config};

/// A stack of one `jwt` layer named `auth` (its table's other keys in `keys`) before the echo app.
fn config(keys: &str) -> String {
    format!(
        r#"
[server]
stack = ["auth"]

[middleware.auth]
kind = "jwt"
{keys}

[[route]]
prefix = "/"
app = "echo"
"#
    )
}

/// GET `/anything` with `Authorization: Bearer TOKEN` and extra headers; the status and the body.
async fn get(strata: &Strata, token: &str, extra: &[(&str, &str)]) -> (u16, String, reqwest::header::HeaderMap) {
    let mut req = client().get(strata.url("/anything")).bearer_auth(token);
    for (name, value) in extra {
        req = req.header(*name, *value);
    }
    let res = req.send().await.expect("strata answers");
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    (status, res.text().await.unwrap(), headers)
}

async fn text(url: String) -> String {
    client().get(url).send().await.unwrap().text().await.unwrap()
}

/// Writes a fresh private key and its public key beside the config, with openssl.
fn write_key_pair(dir: &std::path::Path, name: &str, genpkey_args: &[&str]) {
    let private = dir.join(format!("{name}.key"));
    let status = Command::new("openssl")
        .arg("genpkey")
        .args(genpkey_args)
        .arg("-out")
        .arg(&private)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl genpkey {genpkey_args:?}");
    let public = dir.join(format!("{name}.pub.pem"));
    let status = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .status()
        .unwrap();
    assert!(status.success(), "openssl pkey -pubout");
}

/// A token PyJWT signs with `alg` and the private key in `key_file`.
fn pyjwt_token(key_file: &std::path::Path, alg: &str, sub: &str) -> String {
    let script = r#"
import sys, time, jwt
key = open(sys.argv[1]).read()
print(jwt.encode({"sub": sys.argv[3], "exp": int(time.time()) + 600}, key, algorithm=sys.argv[2]))
"#;
    let out = Command::new("python3").arg("-c").arg(script).arg(key_file).arg(alg).arg(sub).output().expect("python3");
    assert!(out.status.success(), "pyjwt: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn pyjwt_tokens_verify_against_pem_public_keys() {
    for (alg, genpkey) in [
        ("RS256", &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"][..]),
        ("ES256", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"][..]),
    ] {
        let file = write_config(&config(&format!("algorithms = \"{alg}\"\npublic_key = \"signer.pub.pem\"")));
        write_key_pair(file.dir.path(), "signer", genpkey);
        write_key_pair(file.dir.path(), "stranger", genpkey);
        let strata = serve_in(&file);
        let token = pyjwt_token(&file.dir.path().join("signer.key"), alg, "alice");
        let (status, body, _) = get(&strata, &token, &[]).await;
        assert_eq!(status, 200, "{alg}: {body}");
        let forged = pyjwt_token(&file.dir.path().join("stranger.key"), alg, "alice");
        let (status, _, headers) = get(&strata, &forged, &[]).await;
        assert_eq!(status, 401, "{alg} signed by another key");
        let challenge = headers["www-authenticate"].to_str().unwrap();
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        assert!(!challenge.contains(&forged[..20]), "the challenge never quotes the token");
    }
}

/// Serves the config file `file` (which names files beside it) from its own directory.
fn serve_in(file: &common::ConfigFile) -> Strata {
    let text = std::fs::read_to_string(&file.path).unwrap();
    // `public_key` is relative to the config's directory: make it absolute for a config written elsewhere.
    let text = text.replace("public_key = \"", &format!("public_key = \"{}/", file.dir.path().display()));
    Strata::start(Some(&text))
}

#[tokio::test]
async fn a_rotated_jwks_key_is_picked_up_after_exactly_one_refresh() {
    let idp = PythonServer::start("jwks_idp.py");
    let strata = Strata::start(Some(&config(&format!(
        "algorithms = [\"RS256\", \"ES256\"]\njwks_url = \"{}/jwks.json\"\njwks_min_refresh = \"2s\"\n\
         issuer = \"https://idp.test\"\naudience = \"api\"",
        idp.url()
    ))));
    let fetches = || text(format!("{}/fetches", idp.url()));
    let token = |kid: &str| text(format!("{}/token?kid={kid}", idp.url()));
    let (old, ec) = (token("rsa-1").await, token("ec-1").await);
    assert_eq!(fetches().await, "0", "the JWKS is fetched at first use, not at start");
    assert_eq!(get(&strata, &old, &[]).await.0, 200);
    assert_eq!(get(&strata, &ec, &[]).await.0, 200, "PyJWT's ES256 token");
    assert_eq!(fetches().await, "1");

    client().post(format!("{}/rotate", idp.url())).send().await.unwrap();
    let new = token("rsa-2").await;
    // Until jwks_min_refresh has passed since the first fetch, an unknown kid cannot trigger another.
    assert_eq!(get(&strata, &new, &[]).await.0, 401);
    assert_eq!(fetches().await, "1");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, body, _) = get(&strata, &new, &[]).await;
    assert_eq!(status, 200, "the new kid after one refresh: {body}");
    assert_eq!(fetches().await, "2");
    let (status, _, headers) = get(&strata, &old, &[]).await;
    assert_eq!(status, 401, "the rotated-out key no longer verifies");
    let challenge = headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains("error_description=\"The access token was signed with an unknown key.\""),
        "{challenge}"
    );
    assert_eq!(get(&strata, &new, &[]).await.0, 200);
    assert_eq!(fetches().await, "2", "nothing else was fetched");
    assert!(!strata.stderr().contains(&new), "no token in the logs");
}

#[tokio::test]
async fn forwarded_claims_reach_the_app_over_spoofed_headers_and_missing_tokens_get_the_challenge() {
    let idp = PythonServer::start("jwks_idp.py");
    let strata = Strata::start(Some(&config(&format!(
        "algorithms = \"RS256\"\njwks_url = \"{}/jwks.json\"\nrealm = \"api\"\n\
         forward_claims = {{ sub = \"x-user\", email = \"x-email\" }}",
        idp.url()
    ))));
    let token = text(format!("{}/token?kid=rsa-1&sub=carol", idp.url())).await;
    let (status, body, _) = get(&strata, &token, &[("x-user", "admin"), ("x-email", "root@evil.example")]).await;
    assert_eq!(status, 200, "{body}");
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["headers"]["x-user"], "carol");
    assert_eq!(echoed["headers"]["x-email"], "alice@example.com");

    let res = client().get(strata.url("/anything")).header("x-user", "admin").send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer realm=\"api\"");
}

#[tokio::test]
async fn a_jwks_that_cannot_be_fetched_is_a_503_not_a_401() {
    let unused = common::free_port();
    let strata = Strata::start(Some(&config(&format!(
        "algorithms = \"RS256\"\njwks_url = \"http://127.0.0.1:{unused}/jwks.json\"\njwks_timeout = \"1s\""
    ))));
    let (status, _, headers) = get(&strata, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln", &[]).await;
    assert_eq!(status, 503);
    assert!(headers.contains_key("retry-after"));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !strata.stderr().contains("JWKS fetch failed") {
        assert!(std::time::Instant::now() < deadline, "no log line: {}", strata.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn bad_jwt_tables_fail_check_at_their_key() {
    let cases = [
        ("algorithms = [\"RS512\"]\njwks_url = \"http://127.0.0.1:9/jwks\"", 7, "unknown algorithm `RS512`"),
        ("algorithms = \"none\"", 7, "never accepted"),
        ("algorithms = \"RS256\"", 7, "RS256 needs `public_key` or `jwks_url`"),
        ("algorithms = \"HS256\"\nsecret = \"too short\"", 8, "expected at least 32 bytes"),
        ("algorithms = \"RS256\"\npublic_key = \"nowhere.pem\"", 8, "cannot read"),
        ("algorithms = \"RS256\"\njwks_url = \"http://127.0.0.1:9/jwks\"\nleeway = \"2h\"", 9, "at most 1h"),
    ];
    for (keys, line, expected) in cases {
        let file = write_config(&config(keys));
        let path = file.path.to_str().unwrap();
        let out = run(&["check", "--config", path], "");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{keys}: {stderr}");
        assert!(stderr.contains(&format!("{path}:{line}:1: error: ")), "{keys}: {stderr}");
        assert!(stderr.contains(expected), "{keys}: {stderr}");
    }
}
