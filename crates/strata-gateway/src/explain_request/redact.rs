//! What a trace shows of headers: secrets redacted, and what a layer changed.

use super::*;

/// Which headers hold secrets, and how a header is shown.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// Secret headers besides the four every redactor knows.
    extra: Vec<HeaderName>,
}

impl Redactor {
    /// Redacts `authorization`, `proxy-authorization`, `cookie`, `set-cookie`, and `extra`.
    pub fn new(extra: Vec<HeaderName>) -> Redactor {
        Redactor { extra }
    }

    /// Whether `name`'s values are secrets.
    pub fn is_secret(&self, name: &HeaderName) -> bool {
        name == header::AUTHORIZATION
            || name == header::PROXY_AUTHORIZATION
            || name == header::COOKIE
            || name == header::SET_COOKIE
            || self.extra.contains(name)
    }

    /// `headers` as `(name, value)` pairs in their order, secrets redacted, values as text
    /// (non-UTF-8 bytes replaced).
    pub fn show(&self, headers: &HeaderMap) -> Vec<(String, String)> {
        headers.iter().map(|(name, value)| (name.to_string(), self.value(name, value))).collect()
    }

    fn value(&self, name: &HeaderName, value: &HeaderValue) -> String {
        if self.is_secret(name) { REDACTED.to_string() } else { String::from_utf8_lossy(value.as_bytes()).into_owned() }
    }

    /// Every value of `name` in `headers`, joined by `, ` (redacted when secret).
    fn joined(&self, headers: &HeaderMap, name: &HeaderName) -> String {
        let values: Vec<String> = headers.get_all(name).iter().map(|v| self.value(name, v)).collect();
        values.join(", ")
    }
}

/// How a layer changed a header map: what it added, changed (old then new value) and removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HeaderDiff {
    /// Headers present after but not before: `(name, value)`.
    pub added: Vec<(String, String)>,
    /// Headers present on both sides with other values: `(name, before, after)`.
    pub changed: Vec<(String, String, String)>,
    /// Headers present before but not after: `(name, value)`.
    pub removed: Vec<(String, String)>,
}

impl HeaderDiff {
    /// What turned `before` into `after`, secrets redacted (a changed secret shows as changed,
    /// both sides `[redacted]`). Names in the order they appear in `after`, then `before`.
    pub fn between(before: &HeaderMap, after: &HeaderMap, redactor: &Redactor) -> HeaderDiff {
        let mut diff = HeaderDiff::default();
        for name in after.keys() {
            if !before.contains_key(name) {
                diff.added.push((name.to_string(), redactor.joined(after, name)));
            } else if !before.get_all(name).iter().eq(after.get_all(name).iter()) {
                diff.changed.push((name.to_string(), redactor.joined(before, name), redactor.joined(after, name)));
            }
        }
        for name in before.keys() {
            if !after.contains_key(name) {
                diff.removed.push((name.to_string(), redactor.joined(before, name)));
            }
        }
        diff
    }

    /// Everything in `headers`, as added (what a layer that answered by itself made).
    pub fn all_added(headers: &HeaderMap, redactor: &Redactor) -> HeaderDiff {
        HeaderDiff::between(&HeaderMap::new(), headers, redactor)
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}
