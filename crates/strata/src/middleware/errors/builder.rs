//! [`ErrorsBuilder`]: the typed settings of an [`Errors`] layer, and the one function that
//! validates them and reads every page file once.

use std::collections::HashMap;
use std::path::PathBuf;

use bytes::Bytes;
use http::StatusCode;

use super::{ErrorFormat, ErrorStatuses, Errors};
use crate::middleware::ConfigError;

/// Where a page's HTML comes from.
#[derive(Clone, Debug)]
enum PageSource {
    Html(Bytes),
    /// Read once, by [`ErrorsBuilder::build`].
    File(PathBuf),
}

/// The settings of an [`Errors`] layer; [`ErrorsBuilder::build`] validates them, and the
/// gateway's `kind = "errors"` tables go through the same function.
///
/// Defaults: 5xx only, text unless the client prefers JSON, app-written bodies kept, no pages.
#[derive(Clone, Debug, Default)]
pub struct ErrorsBuilder {
    statuses: ErrorStatuses,
    replace_app_errors: bool,
    default_format: ErrorFormat,
    pages: Vec<(StatusCode, PageSource)>,
}

impl ErrorsBuilder {
    /// Which error statuses are formatted: [`ErrorStatuses::Server`] (5xx) or [`ErrorStatuses::All`].
    pub fn statuses(mut self, statuses: ErrorStatuses) -> Self {
        self.statuses = statuses;
        self
    }

    /// Also replace error bodies the application wrote itself (default: only empty bodies, strata's
    /// bare panic body and responses marked [`GeneratedError`](crate::http::GeneratedError)).
    pub fn replace_app_errors(mut self, replace: bool) -> Self {
        self.replace_app_errors = replace;
        self
    }

    /// The format sent when the client's `Accept` has no preference between JSON and text.
    pub fn default_format(mut self, format: ErrorFormat) -> Self {
        self.default_format = format;
        self
    }

    /// Serves `html` for `status` to clients that accept `text/html` (replaces an earlier page for
    /// the same status). The status must be one this layer formats.
    pub fn page(mut self, status: StatusCode, html: impl Into<Bytes>) -> Self {
        self.pages.push((status, PageSource::Html(html.into())));
        self
    }

    /// Serves the contents of the file at `path` for `status`, read once by
    /// [`build`](Self::build) (a relative path is relative to the working directory).
    pub fn page_file(mut self, status: StatusCode, path: impl Into<PathBuf>) -> Self {
        self.pages.push((status, PageSource::File(path.into())));
        self
    }

    /// Validates the settings and reads every page file. Fails, naming the `pages` key, on a page
    /// for a status this layer does not format (a 404 page needs [`ErrorStatuses::All`]) and on a
    /// file that cannot be read.
    pub fn build(self) -> Result<Errors, ConfigError> {
        let in_scope = |status: StatusCode| scope_contains(self.statuses, status);
        let mut pages = HashMap::with_capacity(self.pages.len());
        for (status, source) in self.pages {
            if !in_scope(status) {
                let why = if status.is_client_error() {
                    format!("page for {status}: 4xx pages need `statuses = \"all\"`")
                } else {
                    format!("page for {status}: only 4xx and 5xx statuses have error pages")
                };
                return Err(ConfigError::field("pages", why));
            }
            let html = match source {
                PageSource::Html(html) => html,
                PageSource::File(path) => std::fs::read(&path).map(Bytes::from).map_err(|e| {
                    ConfigError::field("pages", format!("page for {status}: cannot read {}: {e}", path.display()))
                })?,
            };
            pages.insert(status, html);
        }
        Ok(Errors {
            statuses: self.statuses,
            replace_app_errors: self.replace_app_errors,
            default_format: self.default_format,
            pages,
        })
    }
}

/// Whether `statuses` covers `status`.
pub(super) fn scope_contains(statuses: ErrorStatuses, status: StatusCode) -> bool {
    status.is_server_error() || (statuses == ErrorStatuses::All && status.is_client_error())
}
