//! The two line formats, `combined` and `json`, written byte by byte into a reused buffer, and the
//! UTC calendar arithmetic their timestamps need.

use std::borrow::Cow;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Uri, Version};

use crate::http::client_ip::write_ip;

use super::Entry;

pub(super) fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// The request target as the client sent it: path and query, or the whole URI for the other forms
/// (a CONNECT authority, `*`).
fn target(uri: &Uri) -> Cow<'_, str> {
    match uri.path_and_query() {
        Some(pq) => Cow::Borrowed(pq.as_str()),
        None => Cow::Owned(uri.to_string()),
    }
}

pub(super) fn write_combined(out: &mut Vec<u8>, e: &Entry, status: u16) {
    match e.remote {
        Some(ip) => write_ip(out, ip),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" - ");
    match &e.user {
        // Spaces are escaped too: the user is the one unquoted free-text field.
        Some(user) if !user.is_empty() => escape_into(out, user.as_bytes(), true),
        _ => out.push(b'-'),
    }
    out.extend_from_slice(b" [");
    let t = Civil::from(e.time);
    push_2digits(out, t.day);
    out.push(b'/');
    out.extend_from_slice(t.month_abbr().as_bytes());
    out.push(b'/');
    push_year(out, t.year);
    out.push(b':');
    push_2digits(out, t.hour);
    out.push(b':');
    push_2digits(out, t.minute);
    out.push(b':');
    push_2digits(out, t.second);
    out.extend_from_slice(b" +0000] \"");
    escape_into(out, e.method.as_str().as_bytes(), false);
    out.push(b' ');
    escape_into(out, target(&e.uri).as_bytes(), false);
    out.push(b' ');
    out.extend_from_slice(protocol(e.version).as_bytes());
    out.extend_from_slice(b"\" ");
    push_u64(out, u64::from(status));
    out.push(b' ');
    // Apache's %b: "-" rather than 0 when no bytes were sent.
    match e.bytes_sent {
        0 => out.push(b'-'),
        n => push_u64(out, n),
    }
    for value in [&e.referer, &e.user_agent] {
        out.extend_from_slice(b" \"");
        match value {
            Some(v) if !v.is_empty() => escape_into(out, v.as_bytes(), false),
            _ => out.push(b'-'),
        }
        out.push(b'"');
    }
}

/// A number in decimal, without the formatting machinery (this runs for every line).
pub(super) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn push_2digits(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&[b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8]);
}

/// A year as at least four digits, as `{:04}` writes it.
pub(super) fn push_year(out: &mut Vec<u8>, year: i64) {
    if (0..10_000).contains(&year) {
        let y = year as u32;
        push_2digits(out, y / 100);
        push_2digits(out, y % 100);
    } else {
        let _ = write!(out, "{year:04}");
    }
}

/// nginx's escaping: `"`, `\` and bytes outside printable ASCII become `\xHH` (and spaces too when
/// asked), so no value can end a quoted field, forge a line, or smuggle terminal escapes.
pub(super) fn escape_into(out: &mut Vec<u8>, value: &[u8], escape_space: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) || (escape_space && b == b' ') {
            out.extend_from_slice(&[b'\\', b'x', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        } else {
            out.push(b);
        }
    }
}

/// The JSON line, written by hand in exactly the bytes `serde_json` writes (a test holds it to
/// that): field order and names are part of the format, log pipelines key on them.
pub(super) fn write_json(out: &mut Vec<u8>, e: &Entry, status: u16, elapsed_nanos: u128) {
    out.extend_from_slice(b"{\"time\":\"");
    Civil::from(e.time).write_rfc3339(out);
    out.extend_from_slice(b"\",\"remote_addr\":");
    match e.remote {
        Some(ip) => {
            out.push(b'"');
            write_ip(out, ip);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"method\":");
    json_str(out, e.method.as_str());
    out.extend_from_slice(b",\"path\":");
    json_str(out, e.uri.path());
    out.extend_from_slice(b",\"query\":");
    json_opt(out, e.uri.query());
    out.extend_from_slice(b",\"protocol\":");
    json_str(out, protocol(e.version));
    out.extend_from_slice(b",\"status\":");
    push_u64(out, u64::from(status));
    out.extend_from_slice(b",\"bytes_sent\":");
    push_u64(out, e.bytes_sent);
    out.extend_from_slice(b",\"duration_ms\":");
    // Microsecond precision: finer is noise, coarser hides fast responses.
    json_millis(out, elapsed_nanos / 1_000);
    out.extend_from_slice(b",\"request_id\":");
    json_opt(out, lossy(&e.request_id).as_deref());
    out.extend_from_slice(b",\"user\":");
    json_opt(out, e.user.as_deref());
    out.extend_from_slice(b",\"user_agent\":");
    json_opt(out, lossy(&e.user_agent).as_deref());
    out.extend_from_slice(b",\"referer\":");
    json_opt(out, lossy(&e.referer).as_deref());
    out.push(b'}');
}

/// `micros / 1000` as the JSON number `serde_json` writes for that `f64`: the shortest decimal
/// that reads back as the same number, which for a whole count of microseconds is the
/// millisecond figure with its trailing zeros dropped (and one kept after the point: `3.0`).
pub(super) fn json_millis(out: &mut Vec<u8>, micros: u128) {
    // Past ~30 years the shortest form may use an exponent: leave those to serde_json.
    if micros >= 1_000_000_000_000_000 {
        let _ = serde_json::to_writer(&mut *out, &(micros as f64 / 1_000.0));
        return;
    }
    let (whole, mut frac) = ((micros / 1_000) as u64, (micros % 1_000) as u32);
    push_u64(out, whole);
    out.push(b'.');
    if frac == 0 {
        out.push(b'0');
        return;
    }
    let mut digits = 3;
    while frac % 10 == 0 {
        frac /= 10;
        digits -= 1;
    }
    let text = [b'0' + (frac / 100) as u8, b'0' + (frac / 10 % 10) as u8, b'0' + (frac % 10) as u8];
    out.extend_from_slice(&text[3 - digits..]);
}

/// The bytes a JSON string cannot hold as they are: control characters, `"` and `\\`.
const JSON_ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = b < 0x20 || b == b'"' as usize || b == b'\\' as usize;
        b += 1;
    }
    table
};

fn json_opt(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => json_str(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string with `serde_json`'s escapes: `"` and `\\`, the short forms `\\b \\t \\n \\f \\r`, and
/// `\\u00xx` for the other control characters; everything else, UTF-8 included, as it is.
pub(super) fn json_str(out: &mut Vec<u8>, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = value.as_bytes();
    // Fast path: most values need no escape at all, and are copied in one go.
    if !bytes.iter().any(|&b| JSON_ESCAPED[usize::from(b)]) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x09 => b't',
            0x0a => b'n',
            0x0c => b'f',
            0x0d => b'r',
            0x00..=0x1f => b'u',
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        if short == b'u' {
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        } else {
            out.extend_from_slice(&[b'\\', short]);
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// A header value as text. Values may hold non-UTF-8 bytes (obs-text): those show as replacement
/// characters rather than failing the line.
pub(super) fn lossy(value: &Option<HeaderValue>) -> Option<Cow<'_, str>> {
    value.as_ref().map(|v| String::from_utf8_lossy(v.as_bytes()))
}

/// A UTC time broken into calendar fields, without a date-time dependency.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Civil {
    pub(super) year: i64,
    month: u32,
    pub(super) day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    millis: u32,
}

impl From<SystemTime> for Civil {
    fn from(time: SystemTime) -> Self {
        // A clock set before 1970 is clamped to the epoch rather than failing a log line.
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (year, month, day) = civil_from_days((secs / 86_400) as i64);
        let of_day = (secs % 86_400) as u32;
        Civil {
            year,
            month,
            day,
            hour: of_day / 3600,
            minute: of_day / 60 % 60,
            second: of_day % 60,
            millis: since.subsec_millis(),
        }
    }
}

impl Civil {
    pub(super) fn month_abbr(&self) -> &'static str {
        const NAMES: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
        NAMES[(self.month as usize).saturating_sub(1) % 12]
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    fn write_rfc3339(&self, out: &mut Vec<u8>) {
        push_year(out, self.year);
        out.push(b'-');
        push_2digits(out, self.month);
        out.push(b'-');
        push_2digits(out, self.day);
        out.push(b'T');
        push_2digits(out, self.hour);
        out.push(b':');
        push_2digits(out, self.minute);
        out.push(b':');
        push_2digits(out, self.second);
        out.push(b'.');
        out.push(b'0' + (self.millis / 100 % 10) as u8);
        push_2digits(out, self.millis % 100);
        out.push(b'Z');
    }

    #[cfg(test)]
    pub(super) fn rfc3339(&self) -> String {
        let mut out = Vec::new();
        self.write_rfc3339(&mut out);
        String::from_utf8(out).expect("digits and punctuation")
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar: Howard
/// Hinnant's `civil_from_days` (<https://howardhinnant.github.io/date_algorithms.html>).
pub(super) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year starting in March, 0..=365
    let mp = (5 * doy + 2) / 153; // month starting in March, 0..=11
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
