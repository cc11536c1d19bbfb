//! Located errors and the machinery every section shares: byte spans to `file:line:column`,
//! serde's messages with a "did you mean", sections read key by key so that every bad key is
//! reported, and URL credentials masked in all that is shown.

use std::fmt;
use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeValue, ValueDeserializer};

/// One error in a config file, located by line and column (both 1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as given on the command line (or `<embedded default>`).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong and what was expected.
    pub message: String,
    /// The source line the error points at, for display.
    pub source_line: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}:{}:{}: error: {}", self.file, self.line, self.column, self.message)?;
        let gutter = self.line.to_string().len();
        writeln!(f, "{:gutter$} |", "")?;
        writeln!(f, "{} | {}", self.line, self.source_line)?;
        write!(f, "{:gutter$} | {:>col$}", "", "^", col = self.column)
    }
}

/// Every error found while loading a config (loading goes on after the first, to report them all).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The text of a config file and its name, turning byte spans into located errors.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    /// The file name used in messages.
    pub file: &'a str,
    /// The whole text.
    pub text: &'a str,
}

impl Source<'_> {
    /// An error at the start of `span`.
    pub fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let offset = span.start.min(self.text.len());
        let before = &self.text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[offset..].find('\n').map_or(self.text.len(), |i| offset + i);
        // Errors are printed and logged: a URL's password written in the config must not be.
        ConfigError {
            file: self.file.to_string(),
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
            message: redact_userinfo(&message.into()).into_owned(),
            source_line: redact_userinfo(self.text[line_start..line_end].trim_end_matches('\r')).into_owned(),
        }
    }

    /// A toml parse or deserialize error, located by its span (or at `fallback` without one).
    pub fn toml_error(&self, err: &toml::de::Error, fallback: Range<usize>) -> ConfigError {
        self.error(err.span().unwrap_or(fallback), improve_serde_message(err.message()))
    }
}

/// Deserializes a typed section from a subtree, keeping serde's error span.
pub fn from_value<T: DeserializeOwned>(source: Source<'_>, value: Spanned<DeValue<'_>>) -> Result<T, ConfigError> {
    let span = value.span();
    T::deserialize(ValueDeserializer::from(value)).map_err(|e| source.toml_error(&e, span))
}

/// Deserializes a table section into `T`, pushing every error to `errors` rather than only the
/// first: serde stops at the first key it rejects, so that key is reported, left out, and the rest
/// is deserialized again (at most once per key). `None` when the section cannot be read even
/// without its bad keys (a required key missing, or not a table); otherwise `T` without them, so
/// the caller's own checks of the other keys still run.
pub fn from_table<T: DeserializeOwned>(
    source: Source<'_>,
    value: Spanned<DeValue<'_>>,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    if !matches!(value.get_ref(), DeValue::Table(_)) {
        // Not a table: serde says what it is and what was expected.
        return from_value(source, value).map_err(|e| errors.push(e)).ok();
    }
    let span = value.span();
    let DeValue::Table(mut table) = value.into_inner() else { return None };
    let mut left_out: Vec<String> = Vec::new();
    loop {
        let attempt = Spanned::new(span.clone(), DeValue::Table(table.clone()));
        let error = match T::deserialize(ValueDeserializer::from(attempt)) {
            Ok(section) => return Some(section),
            Err(e) => e,
        };
        let at_fault = error.span().and_then(|at| {
            table
                .iter()
                .find(|(k, v)| within(&k.span(), &at) || within(&v.span(), &at))
                .map(|(k, _)| k.get_ref().to_string())
        });
        match at_fault {
            Some(key) => {
                errors.push(source.toml_error(&error, span.clone()));
                table.remove(key.as_str());
                left_out.push(key);
            }
            None => {
                // A required key missing because it was left out above is already reported.
                if !left_out.iter().any(|k| error.message().contains(&format!("`{k}`"))) {
                    errors.push(source.toml_error(&error, span.clone()));
                }
                return None;
            }
        }
    }
}

/// Whether the span `inner` starts inside `outer`.
fn within(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.start < outer.end.max(outer.start + 1)
}

/// `text` with the credentials of every URL in it masked: `http://user:pw@host` →
/// `http://user:***@host`, `redis://:pw@host` → `redis://:***@host`, `http://token@host` →
/// `http://***@host`. Config errors echo values and source lines, and a secret must not be among
/// them. Everything up to the URL's last `@` counts as credentials (a password may hold `/`), so
/// a rare `@` in a path is masked too: better too much than a password.
pub fn redact_userinfo(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The URL ends where a quote, a backtick or a space does (config text and messages).
        let end =
            tail.find(|c: char| matches!(c, '"' | '\'' | '`' | '<' | '>') || c.is_whitespace()).unwrap_or(tail.len());
        let url = &tail[..end];
        match url.rfind('@') {
            Some(at) => {
                match url[..at].split_once(':') {
                    Some((user, _)) if !user.contains('/') => {
                        out.push_str(user);
                        out.push_str(":***");
                    }
                    _ => out.push_str("***"),
                }
                out.push_str(&url[at..]);
            }
            None => out.push_str(url),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// `; did you mean `x`?` when `name` is close to one of `candidates`, else an empty string.
///
/// Close means a few edits away (a transposition counts as one, so `lgo` finds `log`), or a shared
/// beginning (`acess_log` finds `access_log`).
pub fn did_you_mean(name: &str, candidates: &[&str]) -> String {
    let allowed = (name.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(name, c), strsim::jaro_winkler(name, c), *c))
        .filter(|(edits, similarity, _)| *edits <= allowed || *similarity >= 0.85)
        .min_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)))
        .map(|(_, _, c)| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

/// `` `a`, `b`, `c` `` for messages.
pub fn quoted_list(items: &[&str]) -> String {
    items.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ")
}

/// Adds a "did you mean" to serde's "unknown field `x`, expected one of `a`, `b`" messages.
fn improve_serde_message(message: &str) -> String {
    let message = message.trim_end();
    let Some(rest) = message.strip_prefix("unknown field `").or_else(|| message.strip_prefix("unknown variant `"))
    else {
        return message.to_string();
    };
    let Some((name, expected)) = rest.split_once('`') else { return message.to_string() };
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    format!("{message}{}", did_you_mean(name, &candidates))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_util::{first_error, parse};

    #[test]
    fn display_shows_file_line_column_and_a_caret() {
        let e = first_error("[server]\nlisen = 1\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n");
        let text = e.to_string();
        assert!(text.starts_with("test.toml:2:1: error: unknown field `lisen`"), "{text}");
        assert!(text.contains("2 | lisen = 1\n  | ^"), "{text}");
    }

    #[test]
    fn suggestions_find_typos_but_not_unrelated_names() {
        assert_eq!(did_you_mean("lgo", &["log", "cors"]), "; did you mean `log`?");
        assert_eq!(did_you_mean("acess_log", &["access_log", "request_id"]), "; did you mean `access_log`?");
        assert_eq!(did_you_mean("lisen", &["listen", "stack"]), "; did you mean `listen`?");
        assert_eq!(did_you_mean("zzz", &["log", "cors"]), "");
        assert_eq!(did_you_mean("x", &[]), "");
    }

    #[test]
    fn an_upstream_password_is_never_shown() {
        for url in
            ["http://admin:hunter2@127.0.0.1:8000/", "http://admin:hun/ter2@127.0.0.1:8000", "http://hunter2@h:1"]
        {
            let text = format!("[[route]]\nprefix = \"/\"\nupstream = \"{url}\"  # prod\n");
            let errors = parse(&text).unwrap_err();
            let shown = errors.to_string();
            assert!(!shown.contains("hunter2") && !shown.contains("hun/ter2"), "{shown}");
            assert!(shown.contains(":***@") || shown.contains("//***@"), "{shown}");
        }
        // A config that does not even parse as TOML shows its line too.
        let errors = parse("[[route]]\nprefix = \"/\"\nupstream = \"http://a:hunter2@h:1\n").unwrap_err();
        assert!(!errors.to_string().contains("hunter2"), "{errors}");
    }

    #[test]
    fn userinfo_is_redacted_in_any_text() {
        assert_eq!(redact_userinfo("upstream `http://user:pw@host:1/x`"), "upstream `http://user:***@host:1/x`");
        assert_eq!(
            redact_userinfo("store = \"redis://:pw@127.0.0.1:6379\""),
            "store = \"redis://:***@127.0.0.1:6379\""
        );
        assert_eq!(redact_userinfo("http://token@h http://u:p@h2"), "http://***@h http://u:***@h2");
        assert_eq!(redact_userinfo("http://u:p/w@h/a"), "http://u:***@h/a");
        assert_eq!(redact_userinfo("http://127.0.0.1:8000/path"), "http://127.0.0.1:8000/path");
        assert_eq!(redact_userinfo("a@b, no URL"), "a@b, no URL");
    }
}
