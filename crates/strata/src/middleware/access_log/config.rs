//! The `[middleware.NAME]` table of kind `access_log`, mapped onto [`AccessLogBuilder`].

use std::path::Path;

use serde::Deserialize;

use super::{AccessLog, LogFormat};
use crate::middleware::{BuildContext, ConfigError};

/// The `[middleware.NAME]` table of kind `access_log`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogConfig {
    /// The line format. Default [`LogFormat::Combined`].
    pub format: LogFormat,
    /// Where lines go: `"stdout"` (default), `"stderr"`, or a file path (appended to, created if
    /// missing; a relative path is resolved against the config file's directory).
    pub output: String,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig { format: LogFormat::Combined, output: "stdout".to_string() }
    }
}

impl AccessLog {
    /// Builds the layer a config table describes, through [`AccessLogBuilder`](super::AccessLogBuilder).
    /// With [`SharedResources::log_outputs`](crate::middleware::SharedResources::log_outputs), outputs are opened through that registry, so layers
    /// (and reloads) writing to the same place share one output.
    pub fn from_config(config: AccessLogConfig, ctx: &BuildContext) -> Result<Self, ConfigError> {
        let mut builder = AccessLog::builder().format(config.format);
        builder = match config.output.as_str() {
            "stdout" => builder.to_stdout(),
            "stderr" => builder.to_stderr(),
            // An empty path stays empty, for `build` to reject.
            "" => builder.to_file(""),
            path => builder.to_file(ctx.resolve(Path::new(path))),
        };
        if let Some(outputs) = &ctx.shared.log_outputs {
            builder = builder.outputs(outputs);
        }
        builder.build()
    }
}
