//! The line formats byte for byte: JSON identical to what serde_json writes, combined escaping as
//! nginx does it, and the calendar conversion.

use std::borrow::Cow;
use std::time::UNIX_EPOCH;

use super::format::*;
use super::*;
use crate::http::client_ip::write_ip;

#[test]
fn calendar_conversion() {
    let at = |secs: u64, millis: u64| Civil::from(UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis));
    assert_eq!(at(0, 0).rfc3339(), "1970-01-01T00:00:00.000Z");
    assert_eq!(at(951_782_400, 7).rfc3339(), "2000-02-29T00:00:00.007Z");
    assert_eq!(at(1_709_164_800, 0).rfc3339(), "2024-02-29T00:00:00.000Z");
    assert_eq!(at(1_234_567_890, 999).rfc3339(), "2009-02-13T23:31:30.999Z");
    assert_eq!(at(4_102_444_800, 0).rfc3339(), "2100-01-01T00:00:00.000Z");
    assert_eq!(at(253_402_300_799, 0).rfc3339(), "9999-12-31T23:59:59.000Z");
    let t = at(1_234_567_890, 0);
    assert_eq!((t.day, t.month_abbr(), t.year), (13, "Feb", 2009));
    assert_eq!(Civil::from(UNIX_EPOCH - Duration::from_secs(5)).rfc3339(), "1970-01-01T00:00:00.000Z");
    // Every day of a 400-year cycle round-trips against a simple day counter.
    let (mut y, mut m, mut d) = (1970i64, 1u32, 1u32);
    for days in 0..146_097 {
        assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let len = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m as usize - 1];
        d += 1;
        if d > len {
            (d, m) = (1, m + 1);
            if m > 12 {
                (m, y) = (1, y + 1);
            }
        }
    }
}

/// The JSON line as it was made with `serde_json` before it was written by hand: the format's
/// reference, byte for byte.
fn reference_json(e: &Entry, status: u16, elapsed_nanos: u128) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct JsonLine<'a> {
        time: String,
        remote_addr: Option<String>,
        method: &'a str,
        path: &'a str,
        query: Option<&'a str>,
        protocol: &'static str,
        status: u16,
        bytes_sent: u64,
        duration_ms: f64,
        request_id: Option<Cow<'a, str>>,
        user: Option<&'a str>,
        user_agent: Option<Cow<'a, str>>,
        referer: Option<Cow<'a, str>>,
    }
    let line = JsonLine {
        time: Civil::from(e.time).rfc3339(),
        remote_addr: e.remote.map(|ip| ip.to_string()),
        method: e.method.as_str(),
        path: e.uri.path(),
        query: e.uri.query(),
        protocol: protocol(e.version),
        status,
        bytes_sent: e.bytes_sent,
        duration_ms: (elapsed_nanos / 1_000) as f64 / 1_000.0,
        request_id: lossy(&e.request_id),
        user: e.user.as_deref(),
        user_agent: lossy(&e.user_agent),
        referer: lossy(&e.referer),
    };
    serde_json::to_vec(&line).unwrap()
}

fn entry(remote: Option<&str>, uri: &str, text: &[u8], user: Option<&str>) -> Entry {
    let value = HeaderValue::from_bytes(text).unwrap();
    Entry {
        time: UNIX_EPOCH + Duration::from_millis(1_795_000_000_123),
        started: Instant::now(),
        remote: remote.map(|r| r.parse().unwrap()),
        method: Method::from_bytes(b"PROPFIND").unwrap(),
        uri: uri.parse().unwrap(),
        version: Version::HTTP_2,
        request_id: Some(value.clone()),
        user: user.map(Arc::from),
        user_agent: Some(value.clone()),
        referer: Some(value),
        status: None,
        bodiless: false,
        bytes_sent: 0,
    }
}

#[test]
fn json_lines_are_byte_identical_to_serde_json() {
    let entries = [
        entry(Some("203.0.113.7"), "/a/b?x=1&y=%22", b"curl/8.5", Some("alice")),
        entry(Some("2001:db8::1"), "/", b"tab\there \"quoted\" back\\slash", Some("b\u{f6}b \"x\"\n")),
        entry(Some("::ffff:10.0.0.1"), "*", b"obs-text \xe9\xff", None),
        entry(None, "http://example.com:8080/p?q", b"\t\x80\t", Some("")),
        entry(Some("0.0.0.0"), "/%E2%9C%93", b"\xe2\x9c\x93 utf-8", Some("\u{1}\u{7}\r")),
    ];
    for e in &entries {
        for (status, bytes, nanos) in
            [(200, 0, 0), (499, 5, 999), (101, 1 << 40, 1_234_567), (599, 7, 86_400_000_000_123)]
        {
            let e = Entry { bytes_sent: bytes, ..clone_entry(e) };
            let mut ours = Vec::new();
            write_json(&mut ours, &e, status, nanos);
            assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&reference_json(&e, status, nanos)));
        }
    }
}

fn clone_entry(e: &Entry) -> Entry {
    Entry {
        time: e.time,
        started: e.started,
        remote: e.remote,
        method: e.method.clone(),
        uri: e.uri.clone(),
        version: e.version,
        request_id: e.request_id.clone(),
        user: e.user.clone(),
        user_agent: e.user_agent.clone(),
        referer: e.referer.clone(),
        status: e.status,
        bodiless: e.bodiless,
        bytes_sent: e.bytes_sent,
    }
}

#[test]
fn durations_are_written_as_serde_json_writes_the_float() {
    let samples = (0..20_000u128)
        .chain((0..60).map(|shift| 1u128 << shift))
        .chain((1..=18).map(|exp| 10u128.pow(exp)))
        .chain((1..=18).map(|exp| 10u128.pow(exp) - 1))
        .chain([123_456_789, 1_000_001, 999_999_999_999_999, 1_000_000_000_000_001, 3_600_000_000]);
    for micros in samples {
        let mut ours = Vec::new();
        json_millis(&mut ours, micros);
        let reference = serde_json::to_vec(&(micros as f64 / 1_000.0)).unwrap();
        assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&reference), "{micros} µs");
    }
}

#[test]
fn json_strings_escape_as_serde_json_does() {
    let every_ascii: String = (0u8..128).map(char::from).collect();
    for text in [every_ascii.as_str(), "", "plain", "é ✓ \u{2028} \u{10ffff}", "\"\\\"\\"] {
        let mut ours = Vec::new();
        json_str(&mut ours, text);
        assert_eq!(ours, serde_json::to_vec(text).unwrap(), "{text:?}");
    }
}

#[test]
fn numbers_and_addresses_are_written_as_display_writes_them() {
    for n in [0, 1, 9, 10, 99, 100, 65_535, u64::MAX] {
        let mut out = Vec::new();
        push_u64(&mut out, n);
        assert_eq!(out, n.to_string().as_bytes());
    }
    for ip in ["0.0.0.0", "255.255.255.255", "10.0.12.1", "::1", "2001:db8::ff00:42:8329", "::"] {
        let ip: IpAddr = ip.parse().unwrap();
        let mut out = Vec::new();
        write_ip(&mut out, ip);
        assert_eq!(out, ip.to_string().as_bytes());
    }
    for year in [0, 7, 1970, 9999, 10_000, 292_277] {
        let mut out = Vec::new();
        push_year(&mut out, year);
        assert_eq!(out, format!("{year:04}").as_bytes());
    }
}

#[test]
fn escaping_matches_nginx() {
    let mut out = Vec::new();
    escape_into(&mut out, b"a \"b\"\\\x1b[31m\x7f\x80", false);
    assert_eq!(out, br"a \x22b\x22\x5C\x1B[31m\x7F\x80");
    out.clear();
    escape_into(&mut out, b"a b", true);
    assert_eq!(out, br"a\x20b");
}
