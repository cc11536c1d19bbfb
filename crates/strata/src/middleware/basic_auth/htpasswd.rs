//! Apache-style htpasswd files: `user:hash` lines, `#` comments and blank lines skipped.

use crate::middleware::ConfigError;

/// One `user → hash` line of the config, before parsing.
pub(super) struct Entry {
    pub(super) user: String,
    pub(super) hash: String,
    /// The config field it came from, for [`ConfigError::field`].
    pub(super) field: &'static str,
    /// Where it was written (`user `x``, `path:line: user `x``), for error messages.
    pub(super) place: String,
}

/// The entries of an htpasswd file, with `path:line` places for error messages.
pub(super) fn parse_htpasswd(text: &str, path: &str) -> Result<Vec<Entry>, ConfigError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let place = format!("{path}:{}", i + 1);
        let Some((user, hash)) = line.split_once(':') else {
            return Err(ConfigError::field("htpasswd", format!("{place}: expected `user:hash`")));
        };
        out.push(Entry {
            user: user.to_string(),
            hash: hash.to_string(),
            field: "htpasswd",
            place: format!("{place}: user `{user}`"),
        });
    }
    Ok(out)
}
