//! `[log]`: the gateway's own runtime log (not the access log, which is a middleware).

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Source, did_you_mean};

/// How runtime log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`: the format and the filter of the runtime log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogSettings {
    /// `format = "text" | "json"`.
    pub format: LogFormat,
    /// `level`: a filter in `RUST_LOG` syntax (`"info"`, `"warn,strata_gateway::proxy=debug"`);
    /// `None`: `info`. The `RUST_LOG` environment variable, when set, takes precedence.
    pub level: Option<String>,
    /// Where `level` is written.
    pub level_span: Option<Range<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogSection {
    format: Option<Spanned<String>>,
    level: Option<Spanned<String>>,
}

pub(super) fn parse_log(source: Source<'_>, s: LogSection, errors: &mut Vec<ConfigError>) -> LogSettings {
    let mut settings = LogSettings::default();
    if let Some(format) = s.format {
        const CHOICES: &[&str] = &["text", "json"];
        match format.get_ref().as_str() {
            "text" => settings.format = LogFormat::Text,
            "json" => settings.format = LogFormat::Json,
            other => errors.push(source.error(
                format.span(),
                format!("`format = \"{other}\"`: expected \"text\" or \"json\"{}", did_you_mean(other, CHOICES)),
            )),
        }
    }
    if let Some(level) = s.level {
        match tracing_subscriber::EnvFilter::builder().parse(level.get_ref()) {
            Ok(_) => {
                settings.level_span = Some(level.span());
                settings.level = Some(level.into_inner());
            }
            Err(e) => errors.push(source.error(
                level.span(),
                format!(
                    "`level = \"{}\"`: {e}; expected a level (error, warn, info, debug, trace) or filters \
                     such as \"info,strata_gateway::proxy=debug\"",
                    level.get_ref()
                ),
            )),
        }
    }
    settings
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{ECHO, first_error, parse};
    use super::*;

    #[test]
    fn format_and_level_are_read() {
        let config = format!("[log]\nformat = \"json\"\nlevel = \"warn,strata_gateway::proxy=debug\"\n{ECHO}");
        let log = parse(&config).unwrap().log;
        assert_eq!(log.format, LogFormat::Json);
        assert_eq!(log.level.as_deref(), Some("warn,strata_gateway::proxy=debug"));
        assert_eq!(parse(ECHO).unwrap().log, LogSettings::default(), "text, and no level: info");
    }

    #[test]
    fn a_bad_level_is_located() {
        let config = format!("[log]\nformat = \"text\"\nlevel = \"info,[oops\"\n{ECHO}");
        let error = first_error(&config);
        assert_eq!((error.file.as_str(), error.line, error.column), ("test.toml", 3, 9), "{error}");
        assert!(error.message.contains("`level = \"info,[oops\"`"), "{error}");
        assert!(error.message.contains("expected a level (error, warn, info, debug, trace)"), "{error}");
    }

    #[test]
    fn a_bad_format_is_located_with_a_suggestion() {
        let error = first_error(&format!("[log]\nformat = \"jsn\"\n{ECHO}"));
        assert_eq!((error.line, error.column), (2, 10), "{error}");
        assert!(error.message.ends_with("; did you mean `json`?"), "{error}");
    }
}
