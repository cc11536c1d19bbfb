//! The gateway's `static` table of a route, mapped onto [`StaticFilesBuilder`].

use http::HeaderValue;
use serde::Deserialize;

use super::{FileIo, StaticFiles, StaticFilesBuilder};
use crate::middleware::{BuildContext, ConfigError};

/// A route's `static = { … }` table (or `static = "DIR"`, which is `root` alone). Every key but
/// `root` is optional, with the builder's defaults.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticFilesConfig {
    /// The directory served, relative to the config file's directory. Required.
    pub root: String,
    /// [`StaticFilesBuilder::index`] (default `true`).
    #[serde(default = "yes")]
    pub index: bool,
    /// [`StaticFilesBuilder::spa_fallback`]: a file relative to `root` (default none).
    #[serde(default)]
    pub spa_fallback: Option<String>,
    /// [`StaticFilesBuilder::precompressed`] (default `false`).
    #[serde(default)]
    pub precompressed: bool,
    /// [`StaticFilesBuilder::serve_hidden`] (default `false`).
    #[serde(default)]
    pub serve_hidden: bool,
    /// [`StaticFilesBuilder::cache_control`]: the header's value (default none).
    #[serde(default)]
    pub cache_control: Option<String>,
    /// [`StaticFilesBuilder::file_io`]: `"inline"` (default) or `"blocking_pool"`.
    #[serde(default)]
    pub file_io: FileIoConfig,
}

/// The `file_io` key of a `static` table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileIoConfig {
    /// [`FileIo::Inline`].
    #[default]
    Inline,
    /// [`FileIo::BlockingPool`].
    BlockingPool,
}

fn yes() -> bool {
    true
}

impl StaticFilesConfig {
    /// The table of `static = "DIR"`: `root` and every default.
    pub fn root(root: impl Into<String>) -> Self {
        StaticFilesConfig {
            root: root.into(),
            index: true,
            spa_fallback: None,
            precompressed: false,
            serve_hidden: false,
            cache_control: None,
            file_io: FileIoConfig::Inline,
        }
    }
}

impl StaticFiles {
    /// The builder the table describes, `root` resolved against the config file's directory, for
    /// a caller to add what the table does not say (the gateway sets the route's
    /// [mount path](StaticFilesBuilder::mount_path)) before [`build`](StaticFilesBuilder::build).
    pub fn builder_from_config(
        config: StaticFilesConfig,
        ctx: &BuildContext,
    ) -> Result<StaticFilesBuilder, ConfigError> {
        if config.root.trim().is_empty() {
            return Err(ConfigError::field("root", "expected the path of a directory"));
        }
        let mut builder = StaticFiles::builder(ctx.resolve(config.root.as_ref()))
            .index(config.index)
            .precompressed(config.precompressed)
            .serve_hidden(config.serve_hidden)
            .file_io(match config.file_io {
                FileIoConfig::Inline => FileIo::Inline,
                FileIoConfig::BlockingPool => FileIo::BlockingPool,
            });
        if let Some(fallback) = config.spa_fallback {
            builder = builder.spa_fallback(fallback);
        }
        if let Some(value) = config.cache_control {
            let value = HeaderValue::from_str(&value).map_err(|_| {
                ConfigError::field("cache_control", "expected a header value such as \"public, max-age=3600\"")
            })?;
            builder = builder.cache_control(value);
        }
        Ok(builder)
    }

    /// Builds the table's files, served at `/`, through [`StaticFilesBuilder::build`].
    pub fn from_config(config: StaticFilesConfig, ctx: &BuildContext) -> Result<Self, ConfigError> {
        Self::builder_from_config(config, ctx)?.build()
    }
}
