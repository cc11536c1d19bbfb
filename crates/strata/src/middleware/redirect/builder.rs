//! [`RedirectBuilder`]: the typed values of a [`Redirect`] layer, and the one function that
//! validates them and compiles the rules.

use http::StatusCode;

use crate::middleware::ConfigError;
use crate::middleware::path_rule::{CompiledRule, PathRule, Targets};

use super::{Redirect, TrailingSlash};

/// The statuses a redirect may have: the four that say "moved" without asking the client to
/// change anything else (`303` turns every method into `GET`, `300` asks the user to choose).
const REDIRECT_STATUSES: [u16; 4] = [301, 302, 307, 308];

/// The typed configuration of a [`Redirect`] layer; [`RedirectBuilder::build`] validates it, and
/// the gateway's `kind = "redirect"` tables go through the same function.
///
/// Defaults: no rules, status `308 Permanent Redirect`, no HTTPS redirect, trailing slashes
/// ignored. At least one of them must be set.
#[derive(Clone, Debug)]
pub struct RedirectBuilder {
    rules: Vec<(PathRule, Option<StatusCode>)>,
    status: StatusCode,
    https: bool,
    https_port: Option<u16>,
    trailing_slash: TrailingSlash,
}

impl Default for RedirectBuilder {
    fn default() -> Self {
        RedirectBuilder {
            rules: Vec::new(),
            status: StatusCode::PERMANENT_REDIRECT,
            https: false,
            https_port: None,
            trailing_slash: TrailingSlash::Ignore,
        }
    }
}

impl RedirectBuilder {
    /// Adds a rule, tried after those already added, answered with the layer's status.
    pub fn rule(mut self, rule: PathRule) -> Self {
        self.rules.push((rule, None));
        self
    }

    /// Adds a rule answered with `status` (301, 302, 307 or 308) rather than the layer's.
    pub fn rule_with_status(mut self, rule: PathRule, status: StatusCode) -> Self {
        self.rules.push((rule, Some(status)));
        self
    }

    /// The status of every redirect without its own: 301, 302, 307 or 308 (default 308).
    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Whether requests that came over plain HTTP are redirected to HTTPS (default `false`).
    pub fn https(mut self, https: bool) -> Self {
        self.https = https;
        self
    }

    /// The port HTTPS is served on, when not 443 (it is then written in the `Location`).
    pub fn https_port(mut self, port: u16) -> Self {
        self.https_port = Some(port);
        self
    }

    /// What to do with trailing slashes when no rule matched (default: nothing).
    pub fn trailing_slash(mut self, policy: TrailingSlash) -> Self {
        self.trailing_slash = policy;
        self
    }

    /// Validates the values and compiles the rules.
    ///
    /// Fails on a bad regex, a group the pattern does not have, a target that is not a path or an
    /// absolute URL with its host written out, a character a URI cannot hold, a status other than
    /// 301, 302, 307 and 308, an `https_port` without `https` or of 0, and a layer with nothing
    /// to do. Each error names the TOML key at fault (`rules` with the rule's number).
    pub fn build(self) -> Result<Redirect, ConfigError> {
        check_status("status", self.status)?;
        let mut rules = Vec::with_capacity(self.rules.len());
        for (i, (rule, status)) in self.rules.iter().enumerate() {
            let compiled = CompiledRule::compile(rule, i + 1, Targets::PathsOrUrls)?;
            let status = status.unwrap_or(self.status);
            check_status("rules", status)
                .map_err(|e| ConfigError::field("rules", format!("{}: {}", compiled.label(), e.message)))?;
            rules.push((compiled, status));
        }
        let https = match (self.https, self.https_port) {
            (false, Some(_)) => {
                return Err(ConfigError::field("https_port", "only means something with `https = true`"));
            }
            (_, Some(0)) => return Err(ConfigError::field("https_port", "expected a port from 1 to 65535")),
            (true, port) => Some(port),
            (false, None) => None,
        };
        if rules.is_empty() && https.is_none() && self.trailing_slash == TrailingSlash::Ignore {
            return Err(ConfigError::new(
                "a redirect with no `rules`, no `https = true` and `trailing_slash = \"ignore\"` would never redirect",
            ));
        }
        Ok(Redirect { rules, status: self.status, https, trailing_slash: self.trailing_slash })
    }
}

fn check_status(field: &'static str, status: StatusCode) -> Result<(), ConfigError> {
    if REDIRECT_STATUSES.contains(&status.as_u16()) {
        Ok(())
    } else {
        Err(ConfigError::field(
            field,
            format!(
                "`{}`: expected 301, 302, 307 or 308 (308 and 307 keep the method and body; 301 and 302 let browsers turn a POST into a GET)",
                status.as_u16()
            ),
        ))
    }
}
