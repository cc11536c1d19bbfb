//! `ip_filter` through the real binary: clients on two loopback addresses (127.0.0.1 and
//! 127.0.0.2, bound with the client socket's local address), one allowed and one denied; the client
//! resolved through `[server] trusted_proxies` and `X-Forwarded-For` is what is filtered; a bad
//! block is a config error at its key's line and column.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{Strata, run, write_config};

fn config(filter: &str, server_extra: &str) -> String {
    format!(
        r#"
[server]
stack = ["errors", "filter"]
{server_extra}

[middleware.errors]
kind = "errors"

[middleware.filter]
kind = "ip_filter"
{filter}

[[route]]
prefix = "/"
app = "echo"
"#
    )
}

/// A client whose connections come from `from` (a loopback address).
fn client_from(from: &str) -> reqwest::Client {
    let local: IpAddr = from.parse().unwrap();
    reqwest::Client::builder().no_proxy().local_address(local).timeout(Duration::from_secs(20)).build().unwrap()
}

/// GET `/status/200` from `from`, with an optional `X-Forwarded-For`: the status and the body.
async fn get(strata: &Strata, from: &str, forwarded_for: Option<&str>) -> (u16, String) {
    let mut req = client_from(from).get(strata.url("/status/200"));
    if let Some(xff) = forwarded_for {
        req = req.header("x-forwarded-for", xff);
    }
    let res = req.send().await.expect("strata answers");
    let status = res.status().as_u16();
    (status, res.text().await.unwrap())
}

#[tokio::test]
async fn an_allowed_address_passes_and_another_is_refused() {
    let strata = Strata::start(Some(&config("allow = [\"127.0.0.1/32\"]", "")));
    let (status, body) = get(&strata, "127.0.0.1", None).await;
    assert_eq!((status, body.as_str()), (200, "200 OK\n"));
    let (status, body) = get(&strata, "127.0.0.2", None).await;
    assert_eq!(status, 403);
    // The `errors` layer outside formatted the refusal with its detail.
    assert!(body.contains("Requests from this address are not allowed."), "{body}");
}

#[tokio::test]
async fn deny_wins_inside_an_allowed_block() {
    let strata = Strata::start(Some(&config("allow = [\"127.0.0.0/8\"]\ndeny = [\"127.0.0.2\"]", "")));
    assert_eq!(get(&strata, "127.0.0.1", None).await.0, 200);
    assert_eq!(get(&strata, "127.0.0.2", None).await.0, 403);
    assert_eq!(get(&strata, "127.0.0.3", None).await.0, 200);
}

#[tokio::test]
async fn the_client_resolved_through_a_trusted_proxy_is_filtered() {
    // 127.0.0.1 is the trusted proxy; 127.0.0.2 is a client connecting directly.
    let strata = Strata::start(Some(&config(
        "allow = [\"198.51.100.0/24\"]\ndeny = [\"198.51.100.66\"]",
        "trusted_proxies = [\"127.0.0.1/32\"]",
    )));
    let statuses = [
        get(&strata, "127.0.0.1", Some("198.51.100.7")).await.0,
        get(&strata, "127.0.0.1", Some("198.51.100.66")).await.0,
        // A forged hop left of the one the proxy appended changes nothing.
        get(&strata, "127.0.0.1", Some("198.51.100.7, 198.51.100.66")).await.0,
        get(&strata, "127.0.0.1", Some("203.0.113.9, 198.51.100.7")).await.0,
        // Without the header the proxy itself is the client, and it is not allowed.
        get(&strata, "127.0.0.1", None).await.0,
        // From an untrusted peer the header is the client's own claim: ignored.
        get(&strata, "127.0.0.2", Some("198.51.100.7")).await.0,
    ];
    assert_eq!(statuses, [200, 403, 403, 200, 403, 403]);
}

#[test]
fn a_bad_block_is_an_error_at_its_key() {
    let file = write_config(&config("allow = [\"127.0.0.1/32\"]\ndeny = [\"10.0.0.0/33\"]", ""));
    let path = file.path.to_str().unwrap();
    let out = run(&["check", "--config", path], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    // `kind` is on line 10 of `config`, `allow` on 11, `deny` on 12.
    assert!(
        stderr.contains(&format!(
            "{path}:12:1: error: middleware `filter` (ip_filter): `10.0.0.0/33` is not an IP address or CIDR block"
        )),
        "{stderr}"
    );
    let file = write_config(&config("", ""));
    let out = run(&["check", "--config", file.path.to_str().unwrap()], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("needs `allow`, `deny` or both"), "{stderr}");
}
