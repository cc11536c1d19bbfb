//! [`SecurityHeadersBuilder`]: the typed values of a [`SecurityHeaders`] layer, and the one
//! function that validates them and precomputes every header value.

use std::time::Duration;

use http::{HeaderName, HeaderValue, header};

use crate::middleware::ConfigError;

use super::{NoncePolicy, SecurityHeaders};

/// The placeholder a Content Security Policy names the per-request nonce with.
pub(super) const NONCE_PLACEHOLDER: &str = "{nonce}";
/// The longest `max-age` accepted: two years, the HSTS preload list's recommendation.
pub const MAX_HSTS_MAX_AGE: Duration = Duration::from_secs(2 * 365 * 24 * 3600);
/// The shortest `max-age` the HSTS preload list accepts: one year.
const PRELOAD_MIN_MAX_AGE: Duration = Duration::from_secs(365 * 24 * 3600);

/// `X-Frame-Options`: whether other sites may show the page in a frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FrameOptions {
    /// `DENY`: never in a frame.
    #[default]
    Deny,
    /// `SAMEORIGIN`: only in frames of the same origin.
    SameOrigin,
    /// Not sent (a CSP `frame-ancestors` directive, which supersedes it, decides).
    Off,
}

impl FrameOptions {
    /// The header value, `None` for [`FrameOptions::Off`].
    pub fn header_value(self) -> Option<HeaderValue> {
        match self {
            FrameOptions::Deny => Some(HeaderValue::from_static("DENY")),
            FrameOptions::SameOrigin => Some(HeaderValue::from_static("SAMEORIGIN")),
            FrameOptions::Off => None,
        }
    }
}

/// `Referrer-Policy`: how much of the page's URL browsers send in `Referer` (W3C Referrer Policy).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReferrerPolicy {
    /// `no-referrer`.
    NoReferrer,
    /// `no-referrer-when-downgrade`.
    NoReferrerWhenDowngrade,
    /// `origin`.
    Origin,
    /// `origin-when-cross-origin`.
    OriginWhenCrossOrigin,
    /// `same-origin`.
    SameOrigin,
    /// `strict-origin`.
    StrictOrigin,
    /// `strict-origin-when-cross-origin`: the full URL to the same origin, the origin alone to
    /// others over HTTPS, nothing to HTTP (browsers' own default).
    #[default]
    StrictOriginWhenCrossOrigin,
    /// `unsafe-url`.
    UnsafeUrl,
}

impl ReferrerPolicy {
    /// Every policy, in the specification's order.
    pub const ALL: [ReferrerPolicy; 8] = [
        ReferrerPolicy::NoReferrer,
        ReferrerPolicy::NoReferrerWhenDowngrade,
        ReferrerPolicy::Origin,
        ReferrerPolicy::OriginWhenCrossOrigin,
        ReferrerPolicy::SameOrigin,
        ReferrerPolicy::StrictOrigin,
        ReferrerPolicy::StrictOriginWhenCrossOrigin,
        ReferrerPolicy::UnsafeUrl,
    ];

    /// The policy's token, as the header carries it.
    pub fn as_str(self) -> &'static str {
        match self {
            ReferrerPolicy::NoReferrer => "no-referrer",
            ReferrerPolicy::NoReferrerWhenDowngrade => "no-referrer-when-downgrade",
            ReferrerPolicy::Origin => "origin",
            ReferrerPolicy::OriginWhenCrossOrigin => "origin-when-cross-origin",
            ReferrerPolicy::SameOrigin => "same-origin",
            ReferrerPolicy::StrictOrigin => "strict-origin",
            ReferrerPolicy::StrictOriginWhenCrossOrigin => "strict-origin-when-cross-origin",
            ReferrerPolicy::UnsafeUrl => "unsafe-url",
        }
    }

    /// The policy a token names (case-insensitively, as browsers read it).
    pub fn from_token(token: &str) -> Option<ReferrerPolicy> {
        Self::ALL.into_iter().find(|p| p.as_str().eq_ignore_ascii_case(token.trim()))
    }
}

/// The typed configuration of a [`SecurityHeaders`] layer; [`SecurityHeadersBuilder::build`]
/// validates it, and the gateway's `kind = "security_headers"` tables go through the same function.
///
/// Defaults (the preset): HSTS on with a one-year `max-age` and `includeSubDomains`, no
/// `preload`; `nosniff`; `X-Frame-Options: DENY`; `Referrer-Policy: strict-origin-when-cross-origin`;
/// no `Permissions-Policy`, no Content Security Policy; the nonce's request header `x-csp-nonce`;
/// headers the app set are kept.
#[derive(Clone, Debug)]
pub struct SecurityHeadersBuilder {
    hsts: bool,
    hsts_max_age: Duration,
    hsts_include_subdomains: bool,
    hsts_preload: bool,
    content_type_options: bool,
    frame_options: FrameOptions,
    referrer_policy: Option<ReferrerPolicy>,
    permissions_policy: Option<HeaderValue>,
    content_security_policy: Option<String>,
    csp_report_only: bool,
    nonce_header: Option<HeaderName>,
    overwrite: bool,
}

impl Default for SecurityHeadersBuilder {
    fn default() -> Self {
        SecurityHeadersBuilder {
            hsts: true,
            hsts_max_age: PRELOAD_MIN_MAX_AGE,
            hsts_include_subdomains: true,
            hsts_preload: false,
            content_type_options: true,
            frame_options: FrameOptions::Deny,
            referrer_policy: Some(ReferrerPolicy::StrictOriginWhenCrossOrigin),
            permissions_policy: None,
            content_security_policy: None,
            csp_report_only: false,
            nonce_header: Some(HeaderName::from_static("x-csp-nonce")),
            overwrite: false,
        }
    }
}

impl SecurityHeadersBuilder {
    /// Whether `Strict-Transport-Security` is sent (on HTTPS requests). Default: `true`.
    pub fn hsts(mut self, on: bool) -> Self {
        self.hsts = on;
        self
    }

    /// HSTS `max-age`: whole seconds, at most [`MAX_HSTS_MAX_AGE`]. Default: one year. Zero tells
    /// browsers to forget an earlier HSTS policy.
    pub fn hsts_max_age(mut self, max_age: Duration) -> Self {
        self.hsts_max_age = max_age;
        self
    }

    /// HSTS `includeSubDomains`. Default: `true`.
    pub fn hsts_include_subdomains(mut self, on: bool) -> Self {
        self.hsts_include_subdomains = on;
        self
    }

    /// HSTS `preload` (asks to be on browsers' built-in list; needs `includeSubDomains` and a
    /// `max-age` of at least a year). Default: `false`.
    pub fn hsts_preload(mut self, on: bool) -> Self {
        self.hsts_preload = on;
        self
    }

    /// Whether `X-Content-Type-Options: nosniff` is sent. Default: `true`.
    pub fn content_type_options(mut self, on: bool) -> Self {
        self.content_type_options = on;
        self
    }

    /// `X-Frame-Options`. Default: [`FrameOptions::Deny`].
    pub fn frame_options(mut self, options: FrameOptions) -> Self {
        self.frame_options = options;
        self
    }

    /// `Referrer-Policy`, `None` to send none. Default: `strict-origin-when-cross-origin`.
    pub fn referrer_policy(mut self, policy: Option<ReferrerPolicy>) -> Self {
        self.referrer_policy = policy;
        self
    }

    /// `Permissions-Policy` (e.g. `camera=(), microphone=(), geolocation=()`). Default: none.
    pub fn permissions_policy(mut self, policy: HeaderValue) -> Self {
        self.permissions_policy = Some(policy);
        self
    }

    /// The Content Security Policy; each `{nonce}` in it is replaced by the request's nonce
    /// (write `'nonce-{nonce}'` in a `script-src` or `style-src`). Default: none.
    pub fn content_security_policy(mut self, policy: impl Into<String>) -> Self {
        self.content_security_policy = Some(policy.into());
        self
    }

    /// Sends the policy as `Content-Security-Policy-Report-Only` (browsers report violations
    /// without blocking). Default: `false`.
    pub fn csp_report_only(mut self, on: bool) -> Self {
        self.csp_report_only = on;
        self
    }

    /// The request header the nonce is sent inward in (for an upstream server), `None` for the
    /// request extension alone. Default: `x-csp-nonce`.
    pub fn nonce_header(mut self, name: Option<HeaderName>) -> Self {
        self.nonce_header = name;
        self
    }

    /// Whether the layer replaces headers the app (or an inner layer) already set. Default:
    /// `false`, the app's own values are kept.
    pub fn override_existing(mut self, on: bool) -> Self {
        self.overwrite = on;
        self
    }

    /// Validates the values and precomputes every header value.
    ///
    /// Fails on an HSTS `max-age` that is not whole seconds or over [`MAX_HSTS_MAX_AGE`], on
    /// `preload` without `includeSubDomains` or with a `max-age` under a year, and on an empty
    /// Content Security Policy or one that is not a valid header value. Each error names the TOML
    /// key at fault.
    pub fn build(self) -> Result<SecurityHeaders, ConfigError> {
        let mut fixed = Vec::new();
        if self.content_type_options {
            fixed.push((header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")));
        }
        if let Some(value) = self.frame_options.header_value() {
            fixed.push((header::X_FRAME_OPTIONS, value));
        }
        if let Some(policy) = self.referrer_policy {
            fixed.push((header::REFERRER_POLICY, HeaderValue::from_static(policy.as_str())));
        }
        if let Some(policy) = &self.permissions_policy {
            fixed.push((HeaderName::from_static("permissions-policy"), policy.clone()));
        }
        let hsts = if self.hsts { Some(self.hsts_value()?) } else { None };
        let mut nonce_policy = None;
        if let Some(policy) = &self.content_security_policy {
            let header = if self.csp_report_only {
                header::CONTENT_SECURITY_POLICY_REPORT_ONLY
            } else {
                header::CONTENT_SECURITY_POLICY
            };
            let policy = policy.trim();
            if policy.is_empty() {
                return Err(ConfigError::field("content_security_policy", "expected a policy, not an empty text"));
            }
            // A sample nonce of the real alphabet and length: if this renders, every nonce does.
            let sample = policy.replace(NONCE_PLACEHOLDER, "AAAAAAAAAAAAAAAAAAAA+/+/");
            let value = HeaderValue::from_str(&sample).map_err(|_| {
                ConfigError::field(
                    "content_security_policy",
                    "not a valid header value: it contains a line break, a control or a non-ASCII character",
                )
            })?;
            if policy.contains(NONCE_PLACEHOLDER) {
                let parts = policy.split(NONCE_PLACEHOLDER).map(str::to_owned).collect();
                nonce_policy = Some(NoncePolicy { header, parts, request_header: self.nonce_header.clone() });
            } else {
                fixed.push((header, value));
            }
        }
        Ok(SecurityHeaders { fixed, hsts, nonce_policy, overwrite: self.overwrite })
    }

    fn hsts_value(&self) -> Result<HeaderValue, ConfigError> {
        let age = self.hsts_max_age;
        if age > MAX_HSTS_MAX_AGE {
            return Err(ConfigError::field(
                "hsts_max_age",
                "expected at most 730 days (two years, the HSTS preload list's recommendation; Chromium caps it at one year)",
            ));
        }
        if age.subsec_nanos() != 0 {
            return Err(ConfigError::field("hsts_max_age", "HSTS max-age counts whole seconds"));
        }
        if self.hsts_preload && !self.hsts_include_subdomains {
            return Err(ConfigError::field(
                "hsts_preload",
                "preload needs hsts_include_subdomains = true: the preload list covers every subdomain",
            ));
        }
        if self.hsts_preload && age < PRELOAD_MIN_MAX_AGE {
            return Err(ConfigError::field(
                "hsts_preload",
                "preload needs an hsts_max_age of at least a year (\"365d\"): the preload list refuses shorter ones",
            ));
        }
        let mut value = format!("max-age={}", age.as_secs());
        if self.hsts_include_subdomains {
            value.push_str("; includeSubDomains");
        }
        if self.hsts_preload {
            value.push_str("; preload");
        }
        // Digits, letters, `=`, `;` and spaces.
        Ok(HeaderValue::from_str(&value).expect("an HSTS value is visible ASCII"))
    }
}
