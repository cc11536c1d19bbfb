//! The gateway's runtime log: what strata says about itself on stderr (startup, reloads, failing
//! upstreams, panics). The access log is another thing: a middleware writing its own lines.
//!
//! - **Filter**: the first of `RUST_LOG`, `STRATA_LOG` (the older name, kept as an alias),
//!   `[log] level` and `info`. An environment value that is not a valid filter is reported once
//!   and skipped, so the next source applies.
//! - **Format**: `[log] format = "text"` (human-readable lines) or `"json"` (one object per line:
//!   `timestamp`, `level`, `target`, the event's fields flattened, among them `message`).
//! - **Reload**: a reloaded config's `[log] level` replaces the filter in place (a reload layer),
//!   unless the environment chose it; the format is fixed when strata starts.
//!
//! Lines about a request carry its `request_id` field when a `request_id` layer gave it one
//! (see [`strata::http::AssignedRequestId::current`]).

use std::io::IsTerminal;
use std::sync::Mutex;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{LogFormat, LogSettings};

/// The environment variables that choose the filter over `[log] level`, the first set one winning.
pub const FILTER_VARIABLES: [&str; 2] = ["RUST_LOG", "STRATA_LOG"];

/// The filter when neither the environment nor the config sets one.
pub const DEFAULT_FILTER: &str = "info";

/// Where the runtime log's filter comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterSource {
    /// This environment variable: `[log] level` is ignored, at start and on reload.
    Environment(&'static str),
    /// `[log] level`.
    Config,
    /// Nothing set one: [`DEFAULT_FILTER`].
    Default,
}

/// The filter chosen at start, where it came from, and the environment values skipped on the way.
#[derive(Debug)]
pub struct FilterChoice {
    /// The filter to install.
    pub filter: EnvFilter,
    /// Where it came from.
    pub source: FilterSource,
    /// One sentence per environment variable whose value was not a valid filter.
    pub rejected: Vec<String>,
}

/// Chooses the filter from the environment (`var` reads a variable) and the config's `level`.
/// An empty variable counts as unset.
pub fn choose_filter(var: impl Fn(&str) -> Option<String>, level: Option<&str>) -> FilterChoice {
    let mut rejected = Vec::new();
    for name in FILTER_VARIABLES {
        let Some(value) = var(name).filter(|v| !v.trim().is_empty()) else { continue };
        match EnvFilter::builder().parse(&value) {
            Ok(filter) => return FilterChoice { filter, source: FilterSource::Environment(name), rejected },
            Err(e) => rejected.push(format!("{name}={value:?} is not a valid log filter ({e}); ignored")),
        }
    }
    // The config's level was checked when the config was parsed.
    if let Some(filter) = level.filter(|l| !l.trim().is_empty()).and_then(|l| EnvFilter::builder().parse(l).ok()) {
        return FilterChoice { filter, source: FilterSource::Config, rejected };
    }
    FilterChoice { filter: EnvFilter::new(DEFAULT_FILTER), source: FilterSource::Default, rejected }
}

/// The installed runtime log, kept to apply a reloaded config's `[log]` section.
pub struct RuntimeLog {
    format: LogFormat,
    /// The variable that chose the filter, when one did.
    environment: Option<&'static str>,
    filter: reload::Handle<EnvFilter, Registry>,
    /// The `[log] level` last applied, to tell a changed one.
    level: Mutex<Option<String>>,
}

impl RuntimeLog {
    /// Installs the process's runtime log on stderr as `settings` and the environment say. Call it
    /// once, before anything logs; a second call leaves the first log in place.
    pub fn install(settings: &LogSettings) -> RuntimeLog {
        let choice = choose_filter(|name| std::env::var(name).ok(), settings.level.as_deref());
        let (filter, handle) = reload::Layer::new(choice.filter);
        let (text, json) = match settings.format {
            LogFormat::Text => (
                Some(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_ansi(std::io::stderr().is_terminal()),
                ),
                None,
            ),
            LogFormat::Json => (
                None,
                Some(
                    tracing_subscriber::fmt::layer()
                        .json()
                        // The event's fields beside `timestamp`, `level` and `target`, not under `fields`.
                        .flatten_event(true)
                        .with_current_span(true)
                        .with_span_list(false)
                        .with_writer(std::io::stderr),
                ),
            ),
        };
        let installed = tracing_subscriber::registry().with(filter).with(text).with(json).try_init().is_ok();
        for rejected in &choice.rejected {
            // In the log's own format when it shows warnings; on stderr as it is otherwise, so an
            // operator whose variable was ignored always learns why.
            if installed && tracing::enabled!(tracing::Level::WARN) {
                tracing::warn!("{rejected}");
            } else {
                eprintln!("warning: {rejected}");
            }
        }
        let environment = match choice.source {
            FilterSource::Environment(name) => Some(name),
            FilterSource::Config | FilterSource::Default => None,
        };
        RuntimeLog { format: settings.format, environment, filter: handle, level: Mutex::new(settings.level.clone()) }
    }

    /// The format chosen at start.
    pub fn format(&self) -> LogFormat {
        self.format
    }

    /// Applies a reloaded config's `[log]` section: a changed `level` replaces the filter, unless
    /// the environment chose it. Returns the keys that changed but need a restart.
    pub fn reload(&self, settings: &LogSettings) -> Vec<&'static str> {
        let mut restart = Vec::new();
        if settings.format != self.format {
            restart.push("[log] format");
        }
        let mut level = self.level.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if settings.level == *level {
            return restart;
        }
        level.clone_from(&settings.level);
        if let Some(name) = self.environment {
            tracing::info!("`[log] level` changed, but {name} is set and chooses the runtime log's filter");
            return restart;
        }
        let choice = choose_filter(|_| None, settings.level.as_deref());
        let shown = choice.filter.to_string();
        match self.filter.reload(choice.filter) {
            Ok(()) => tracing::info!(level = %shown, "runtime log level changed"),
            Err(error) => tracing::warn!(%error, "cannot change the runtime log level"),
        }
        restart
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        |name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_string())
    }

    #[test]
    fn rust_log_wins_over_strata_log_and_the_config() {
        let choice = choose_filter(env(&[("RUST_LOG", "warn"), ("STRATA_LOG", "debug")]), Some("trace"));
        assert_eq!(choice.source, FilterSource::Environment("RUST_LOG"));
        assert_eq!(choice.filter.to_string(), "warn");
        assert!(choice.rejected.is_empty());
    }

    #[test]
    fn strata_log_is_an_alias_when_rust_log_is_unset_or_empty() {
        let choice = choose_filter(env(&[("STRATA_LOG", "debug")]), Some("warn"));
        assert_eq!(choice.source, FilterSource::Environment("STRATA_LOG"));
        let choice = choose_filter(env(&[("RUST_LOG", " "), ("STRATA_LOG", "debug")]), None);
        assert_eq!(choice.source, FilterSource::Environment("STRATA_LOG"));
        assert!(choice.rejected.is_empty());
    }

    #[test]
    fn an_invalid_variable_is_reported_and_skipped() {
        let choice = choose_filter(env(&[("RUST_LOG", "info,[bad"), ("STRATA_LOG", "=x=")]), Some("warn"));
        assert_eq!(choice.source, FilterSource::Config);
        assert_eq!(choice.filter.to_string(), "warn");
        assert_eq!(choice.rejected.len(), 2, "{:?}", choice.rejected);
        assert!(
            choice.rejected[0].starts_with("RUST_LOG=\"info,[bad\" is not a valid log filter"),
            "{:?}",
            choice.rejected
        );
        assert!(choice.rejected[1].starts_with("STRATA_LOG="), "{:?}", choice.rejected);
    }

    #[test]
    fn the_config_level_then_info() {
        let choice = choose_filter(env(&[]), Some("warn,strata_gateway::proxy=debug"));
        assert_eq!(choice.source, FilterSource::Config);
        let choice = choose_filter(env(&[]), None);
        assert_eq!(choice.source, FilterSource::Default);
        assert_eq!(choice.filter.to_string(), "info");
    }
}
