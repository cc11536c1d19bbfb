//! Ordering rules: what layers declare about themselves ([`Fact`]s) turned into [`Diagnostic`]s.
//!
//! A rule never names a middleware type: it reasons over facts ("short-circuits", "must see every
//! request"), so a new middleware gets the right diagnostics by declaring the right facts. The list a
//! rule sees is one whole onion, outermost first, optionally ending with the app as a pseudo-layer of
//! kind `"app"` (so rules can reason about what the app does, e.g. stream server-sent events).

use std::fmt;

/// One thing a layer (or app) can declare about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fact {
    /// May answer by itself without calling the layers inside it (401, 429, a preflight reply…).
    ShortCircuits,
    /// Must see every request, including the ones inner layers reject (e.g. access logs).
    SeesEveryRequest,
    /// Answers CORS preflights, which must not be rejected by layers outside it.
    AnswersPreflight,
    /// Assigns the request id.
    SetsRequestId,
    /// Uses the request id (logs it, forwards it).
    ReadsRequestId,
    /// Turns failures inside it into clean error responses.
    RecoversErrors,
    /// May fail with an error response of its own making (a panic, an upstream failure).
    CanFail,
    /// Rewrites (compresses, transforms) response bodies.
    RewritesBody,
    /// Rewrites bodies but flushes each server-sent event as it comes.
    FlushesEvents,
    /// Streams `text/event-stream` responses (an app or upstream).
    StreamsEvents,
    /// Reads the client's address ([`crate::http::ConnectionInfo`]); servers set it only for stacks
    /// that have such a layer.
    ReadsClientAddress,
    /// Groups requests by client address (a rate limit keyed on it): wrong client addresses merge
    /// clients.
    KeysOnClientAddress,
    /// Authenticates requests (basic auth, bearer tokens, an auth service) and refuses the others.
    Authenticates,
    /// Sets the [`AuthenticatedUser`](crate::http::AuthenticatedUser) for the layers inside it.
    SetsUser,
    /// Uses the [`AuthenticatedUser`](crate::http::AuthenticatedUser) (a rate limit keyed on it, a
    /// header made from it), so it must sit inside the layer that sets it.
    ReadsUser,
    /// Limits the rate of requests (a token bucket per key).
    LimitsRate,
    /// Limits the requests in flight at once, holding each one's permit until its response ends.
    LimitsConcurrency,
    /// Adds headers to every response that passes through it (security headers, header rules): the
    /// responses that layers outside it make by themselves go without them.
    DecoratesResponses,
    /// Answers some requests with a redirect instead of calling the layers inside it.
    Redirects,
    /// Reads the route the request matched ([`MatchedRoute`](crate::http::MatchedRoute)); servers
    /// set it only for stacks that have such a layer.
    ReadsRoute,
}

impl Fact {
    /// Every fact, in a stable order (for display).
    pub const ALL: [Fact; 20] = [
        Fact::ShortCircuits,
        Fact::SeesEveryRequest,
        Fact::AnswersPreflight,
        Fact::SetsRequestId,
        Fact::ReadsRequestId,
        Fact::RecoversErrors,
        Fact::CanFail,
        Fact::RewritesBody,
        Fact::FlushesEvents,
        Fact::StreamsEvents,
        Fact::ReadsClientAddress,
        Fact::KeysOnClientAddress,
        Fact::Authenticates,
        Fact::SetsUser,
        Fact::ReadsUser,
        Fact::LimitsRate,
        Fact::LimitsConcurrency,
        Fact::DecoratesResponses,
        Fact::Redirects,
        Fact::ReadsRoute,
    ];

    const fn bit(self) -> u32 {
        1 << self as u32
    }

    /// A short phrase for `explain`.
    pub fn describe(self) -> &'static str {
        match self {
            Fact::ShortCircuits => "may answer without calling inner layers",
            Fact::SeesEveryRequest => "must see every request",
            Fact::AnswersPreflight => "answers CORS preflights",
            Fact::SetsRequestId => "sets the request id",
            Fact::ReadsRequestId => "uses the request id",
            Fact::RecoversErrors => "turns failures inside it into error responses",
            Fact::CanFail => "can fail",
            Fact::RewritesBody => "rewrites response bodies",
            Fact::FlushesEvents => "flushes each server-sent event",
            Fact::StreamsEvents => "streams server-sent events",
            Fact::ReadsClientAddress => "uses the client's address",
            Fact::KeysOnClientAddress => "groups requests by client address",
            Fact::Authenticates => "authenticates requests",
            Fact::SetsUser => "sets the authenticated user",
            Fact::ReadsUser => "uses the authenticated user",
            Fact::LimitsRate => "limits the request rate",
            Fact::LimitsConcurrency => "limits requests in flight",
            Fact::DecoratesResponses => "adds headers to every response",
            Fact::Redirects => "answers with redirects",
            Fact::ReadsRoute => "uses the matched route",
        }
    }
}

/// A set of [`Fact`]s (a bit set: copying and testing are free).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Facts(u32);

impl Facts {
    /// No facts.
    pub const NONE: Facts = Facts(0);

    /// A set holding the given facts.
    pub const fn of(facts: &[Fact]) -> Facts {
        let mut bits = 0;
        let mut i = 0;
        while i < facts.len() {
            bits |= facts[i].bit();
            i += 1;
        }
        Facts(bits)
    }

    /// This set plus `fact`.
    pub const fn with(self, fact: Fact) -> Facts {
        Facts(self.0 | fact.bit())
    }

    /// Every fact in either set.
    pub const fn union(self, other: Facts) -> Facts {
        Facts(self.0 | other.0)
    }

    /// Whether `fact` is in the set.
    pub const fn has(self, fact: Fact) -> bool {
        self.0 & fact.bit() != 0
    }

    /// The facts in the set, in [`Fact::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Fact> {
        Fact::ALL.into_iter().filter(move |f| self.has(*f))
    }
}

impl fmt::Debug for Facts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// How serious a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth knowing (a mode in force), not a problem: `--strict` does not fail on it.
    Note,
    /// Probably a mistake; the stack still works as written.
    Warning,
    /// The configuration cannot work as intended.
    Error,
}

/// A finding about a stack's order: what is wrong, why it breaks, and the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// How serious it is.
    pub severity: Severity,
    /// A stable identifier of the rule, e.g. `log-inside-short-circuit`.
    pub rule: &'static str,
    /// The name of the layer the diagnostic is about.
    pub layer: String,
    /// What is wrong.
    pub message: String,
    /// Why it breaks, in one line.
    pub why: String,
    /// What to change.
    pub fix: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{level}[{}]: {}\n  why: {}\n  fix: {}", self.rule, self.message, self.why, self.fix)
    }
}

use crate::stack::LayerInfo;

type Rule = fn(&[LayerInfo], &mut Vec<Diagnostic>);

/// The rules, in the order their diagnostics are reported.
const RULES: &[Rule] = &[
    sees_every_request_inside_short_circuit,
    preflight_inside_short_circuit,
    request_id_set_too_late,
    recovery_not_outermost,
    rewrites_event_streams,
    user_read_before_set,
    concurrency_limit_outside_rate_limit,
    decorates_inside_short_circuit,
    redirect_inside_auth,
];

/// Runs every ordering rule over one onion (outermost first; the app, if present, last).
pub fn check(layers: &[LayerInfo]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for rule in RULES {
        rule(layers, &mut out);
    }
    out
}

/// What the ordering rules cannot see in a stack: where it is deployed.
///
/// A server knows whether it sits behind a proxy only from its configuration. The gateway decides
/// as follows (see `docs/config.md`): `[server] behind_proxy` when set; otherwise it is behind a
/// proxy when it listens on a loopback address only, since then every peer is a local process (in
/// practice a reverse proxy on the same host) and would be "the client" of every request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deployment {
    /// Requests arrive through a proxy, so the TCP peer is the proxy, not the client.
    pub behind_proxy: bool,
    /// The proxy's address is among the trusted proxies, so the client address is resolved from
    /// its forwarding header.
    pub proxy_trusted: bool,
}

/// The rules that need to know the [`Deployment`], over one onion (outermost first).
pub fn check_deployment(layers: &[LayerInfo], deployment: &Deployment) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if deployment.behind_proxy && !deployment.proxy_trusted {
        for l in layers.iter().filter(|l| l.facts.has(Fact::KeysOnClientAddress)) {
            out.push(Diagnostic {
                severity: Severity::Warning,
                rule: "client-ip-behind-untrusted-proxy",
                layer: l.name.clone(),
                message: format!("{} groups requests by client address, but the proxy in front of strata is not trusted", label(l)),
                why: "every request then comes from the proxy's address: all clients share one bucket, and one client can exhaust it for everyone".to_string(),
                fix: "list the proxy's address in `[server] trusted_proxies` (e.g. [\"127.0.0.1/32\"]), or set `[server] behind_proxy = false` if clients connect directly".to_string(),
            });
        }
    }
    out
}

/// Each pair (outer, inner) where `outer` has `outer_fact` and sits outside `inner`, which has `inner_fact`.
fn pairs(layers: &[LayerInfo], outer_fact: Fact, inner_fact: Fact) -> impl Iterator<Item = (&LayerInfo, &LayerInfo)> {
    layers.iter().enumerate().filter(move |(_, l)| l.facts.has(outer_fact)).flat_map(move |(i, outer)| {
        layers[i + 1..].iter().filter(move |l| l.facts.has(inner_fact)).map(move |inner| (outer, inner))
    })
}

fn label(l: &LayerInfo) -> String {
    if l.name == l.kind { format!("`{}`", l.name) } else { format!("`{}` ({})", l.name, l.kind) }
}

fn sees_every_request_inside_short_circuit(layers: &[LayerInfo], out: &mut Vec<Diagnostic>) {
    for (outer, inner) in pairs(layers, Fact::ShortCircuits, Fact::SeesEveryRequest) {
        out.push(Diagnostic {
            severity: Severity::Warning,
            rule: "sees-every-request-inside-short-circuit",
            layer: inner.name.clone(),
            message: format!("{} is inside {}, which can answer by itself", label(inner), label(outer)),
            why: format!(
                "requests that {} rejects never reach {}, so they are never seen (or logged)",
                outer.name, inner.name
            ),
            fix: format!("move {} before {} in the stack", inner.name, outer.name),
        });
    }
}

fn preflight_inside_short_circuit(layers: &[LayerInfo], out: &mut Vec<Diagnostic>) {
    for (outer, inner) in pairs(layers, Fact::ShortCircuits, Fact::AnswersPreflight) {
        out.push(Diagnostic {
            severity: Severity::Warning,
            rule: "cors-inside-short-circuit",
            layer: inner.name.clone(),
            message: format!("{} is inside {}, which can answer by itself", label(inner), label(outer)),
            why: format!(
                "{} can reject preflights (they carry no credentials and count against rate limits) before {} answers them, and its error responses (401, 429…) carry no CORS headers, so scripts cannot read them",
                outer.name, inner.name
            ),
            fix: format!("move {} before {} in the stack", inner.name, outer.name),
        });
    }
}

fn request_id_set_too_late(layers: &[LayerInfo], out: &mut Vec<Diagnostic>) {
    for (outer, inner) in pairs(layers, Fact::ReadsRequestId, Fact::SetsRequestId) {
        out.push(Diagnostic {
            severity: Severity::Warning,
            rule: "request-id-set-too-late",
            layer: outer.name.clone(),
            message: format!("{} uses the request id but is outside {}, which sets it", label(outer), label(inner)),
            why: format!("{} runs before the id exists, so its output has no request id", outer.name),
            fix: format!("move {} before {} in the stack", inner.name, outer.name),
        });
    }
}

fn recovery_not_outermost(layers: &[LayerInfo], out: &mut Vec<Diagnostic>) {
    for (outer, inner) in pairs(layers, Fact::CanFail, Fact::RecoversErrors) {
        out.push(Diagnostic {
            severity: Severity::Warning,
            rule: "errors-not-outermost",
            layer: inner.name.clone(),
            message: format!(
                "{} can fail but sits outside {}, which turns failures into clean responses",
                label(outer),
                label(inner)
            ),
            why: format!("failures in {} bypass {} and reach the client unformatted", outer.name, inner.name),
            fix: format!("move {} before {} in the stack", inner.name, outer.name),
        });
    }
}

fn rewrites_event_streams(layers: &[LayerInfo], out: &mut Vec<Diagnostic>) {
    for (outer, inner) in pairs(layers, Fact::RewritesBody, Fact::StreamsEvents) {
        if outer.facts.has(Fact::FlushesEvents) {
            continue;
        }
        out.push(Diagnostic {
            severity: Severity::Warning,
            rule: "body-rewrite-breaks-event-stream",
            layer: outer.name.clone(),
            message: format!("{} rewrites bodies of {}, which streams server-sent events", label(outer), label(inner)),
            why: "a rewriting layer that buffers delays every event until its buffer fills: the browser sees nothing"
                .to_string(),
            fix: format!("let {} flush per event, skip text/event-stream, or remove it from this route", outer.name),
        });
    }
}

fn user_read_before_set(layers: &[LayerInfo], out: &mut Vec<Diagnostic>) {
    for (outer, inner) in pairs(layers, Fact::ReadsUser, Fact::SetsUser) {
        out.push(Diagnostic {
            severity: Severity::Warning,
            rule: "user-read-before-set",
            layer: outer.name.clone(),
            message: format!("{} uses the authenticated user but is outside {}, which sets it", label(outer), label(inner)),
            why: format!(
                "requests reach {} before they are authenticated, so it never sees a user (a rate limit keyed on `user` treats every request as having no key)",
                outer.name
            ),
            fix: format!("move {} before {} in the stack", inner.name, outer.name),
        });
    }
}

fn concurrency_limit_outside_rate_limit(layers: &[LayerInfo], out: &mut Vec<Diagnostic>) {
    for (outer, inner) in pairs(layers, Fact::LimitsConcurrency, Fact::LimitsRate) {
        out.push(Diagnostic {
            severity: Severity::Warning,
            rule: "concurrency-limit-outside-rate-limit",
            layer: outer.name.clone(),
            message: format!("{} limits requests in flight but is outside {}, which limits their rate", label(outer), label(inner)),
            why: format!(
                "requests that {} will reject first take (or queue for) an in-flight permit: a client over its rate can fill the queue and delay everyone else; the cheaper check should reject first",
                inner.name
            ),
            fix: format!("move {} before {} in the stack", inner.name, outer.name),
        });
    }
}

fn decorates_inside_short_circuit(layers: &[LayerInfo], out: &mut Vec<Diagnostic>) {
    // A CORS layer's own answers are preflights, which browsers consume without rendering: they
    // need no security headers.
    for (outer, inner) in pairs(layers, Fact::ShortCircuits, Fact::DecoratesResponses) {
        if outer.facts.has(Fact::AnswersPreflight) || outer.facts.has(Fact::DecoratesResponses) {
            continue;
        }
        out.push(Diagnostic {
            severity: Severity::Warning,
            rule: "headers-inside-short-circuit",
            layer: inner.name.clone(),
            message: format!("{} adds response headers but is inside {}, which can answer by itself", label(inner), label(outer)),
            why: format!(
                "the responses {} makes by itself (401, 429, 503…) never pass through {}, so they go out without its headers",
                outer.name, inner.name
            ),
            fix: format!("move {} before {} in the stack", inner.name, outer.name),
        });
    }
}

fn redirect_inside_auth(layers: &[LayerInfo], out: &mut Vec<Diagnostic>) {
    for (outer, inner) in pairs(layers, Fact::Authenticates, Fact::Redirects) {
        out.push(Diagnostic {
            severity: Severity::Warning,
            rule: "redirect-inside-auth",
            layer: inner.name.clone(),
            message: format!("{} redirects requests but is inside {}, which authenticates them", label(inner), label(outer)),
            why: format!(
                "a client without credentials gets {}'s 401 instead of the redirect, even for moved public pages and http→https redirects",
                outer.name
            ),
            fix: format!("move {} before {} in the stack", inner.name, outer.name),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str, facts: &[Fact]) -> LayerInfo {
        LayerInfo { name: name.to_string(), kind: "test", facts: Facts::of(facts) }
    }

    fn rules(layers: &[LayerInfo]) -> Vec<(&'static str, String)> {
        check(layers).into_iter().map(|d| (d.rule, d.layer)).collect()
    }

    #[test]
    fn facts_are_a_set() {
        let f = Facts::of(&[Fact::ShortCircuits, Fact::CanFail]);
        assert!(f.has(Fact::ShortCircuits) && f.has(Fact::CanFail) && !f.has(Fact::RewritesBody));
        assert_eq!(f.iter().collect::<Vec<_>>(), [Fact::ShortCircuits, Fact::CanFail]);
        assert!(Facts::NONE.with(Fact::RewritesBody).has(Fact::RewritesBody));
    }

    #[test]
    fn logging_inside_a_short_circuit_is_reported_and_outside_is_not() {
        let bad = [layer("auth", &[Fact::ShortCircuits]), layer("log", &[Fact::SeesEveryRequest])];
        assert_eq!(rules(&bad), [("sees-every-request-inside-short-circuit", "log".to_string())]);
        let good = [layer("log", &[Fact::SeesEveryRequest]), layer("auth", &[Fact::ShortCircuits])];
        assert!(rules(&good).is_empty());
    }

    #[test]
    fn cors_inside_auth_is_reported() {
        let bad =
            [layer("auth", &[Fact::ShortCircuits]), layer("cors", &[Fact::AnswersPreflight, Fact::ShortCircuits])];
        assert_eq!(rules(&bad), [("cors-inside-short-circuit", "cors".to_string())]);
        let good =
            [layer("cors", &[Fact::AnswersPreflight, Fact::ShortCircuits]), layer("auth", &[Fact::ShortCircuits])];
        assert!(rules(&good).is_empty());
    }

    #[test]
    fn request_id_must_be_set_outside_its_readers() {
        let bad = [layer("log", &[Fact::ReadsRequestId]), layer("rid", &[Fact::SetsRequestId])];
        assert_eq!(rules(&bad), [("request-id-set-too-late", "log".to_string())]);
        let good = [layer("rid", &[Fact::SetsRequestId]), layer("log", &[Fact::ReadsRequestId])];
        assert!(rules(&good).is_empty());
    }

    #[test]
    fn error_recovery_must_be_outside_what_can_fail() {
        let bad = [layer("proxy", &[Fact::CanFail]), layer("errors", &[Fact::RecoversErrors])];
        assert_eq!(rules(&bad), [("errors-not-outermost", "errors".to_string())]);
        let good = [layer("errors", &[Fact::RecoversErrors]), layer("proxy", &[Fact::CanFail])];
        assert!(rules(&good).is_empty());
    }

    #[test]
    fn body_rewrites_over_event_streams_need_flushing() {
        let bad = [layer("gzip", &[Fact::RewritesBody]), layer("app", &[Fact::StreamsEvents])];
        assert_eq!(rules(&bad), [("body-rewrite-breaks-event-stream", "gzip".to_string())]);
        let flushing =
            [layer("gzip", &[Fact::RewritesBody, Fact::FlushesEvents]), layer("app", &[Fact::StreamsEvents])];
        assert!(rules(&flushing).is_empty());
    }

    #[test]
    fn rate_limit_outside_cors_is_reported_by_the_preflight_rule() {
        let limit = layer("limit", &[Fact::ShortCircuits, Fact::CanFail, Fact::KeysOnClientAddress]);
        let cors = layer("cors", &[Fact::AnswersPreflight, Fact::ShortCircuits]);
        assert_eq!(rules(&[limit.clone(), cors.clone()]), [("cors-inside-short-circuit", "cors".to_string())]);
        assert!(rules(&[cors, limit]).is_empty());
    }

    #[test]
    fn the_user_must_be_set_outside_its_readers() {
        let auth = layer("jwt", &[Fact::ShortCircuits, Fact::Authenticates, Fact::SetsUser]);
        let limit = layer("per-user", &[Fact::ShortCircuits, Fact::LimitsRate, Fact::ReadsUser]);
        assert_eq!(rules(&[limit.clone(), auth.clone()]), [("user-read-before-set", "per-user".to_string())]);
        assert!(rules(&[auth, limit]).is_empty());
    }

    #[test]
    fn the_rate_limit_must_reject_before_the_concurrency_limit() {
        let rate = layer("rate", &[Fact::ShortCircuits, Fact::LimitsRate]);
        let inflight = layer("inflight", &[Fact::ShortCircuits, Fact::LimitsConcurrency]);
        assert_eq!(
            rules(&[inflight.clone(), rate.clone()]),
            [("concurrency-limit-outside-rate-limit", "inflight".to_string())]
        );
        assert!(rules(&[rate, inflight]).is_empty());
    }

    #[test]
    fn response_headers_must_wrap_the_layers_that_answer_by_themselves() {
        let headers = layer("security", &[Fact::DecoratesResponses]);
        let auth = layer("auth", &[Fact::ShortCircuits, Fact::Authenticates]);
        assert_eq!(rules(&[auth.clone(), headers.clone()]), [("headers-inside-short-circuit", "security".to_string())]);
        assert!(rules(&[headers.clone(), auth]).is_empty());
        // CORS answers only preflights by itself; they need no security headers.
        let cors = layer("cors", &[Fact::AnswersPreflight, Fact::ShortCircuits]);
        assert!(rules(&[cors, headers]).is_empty());
    }

    #[test]
    fn redirects_must_not_require_credentials() {
        let auth = layer("auth", &[Fact::ShortCircuits, Fact::Authenticates]);
        let moved = layer("moved", &[Fact::ShortCircuits, Fact::Redirects]);
        assert_eq!(rules(&[auth.clone(), moved.clone()]), [("redirect-inside-auth", "moved".to_string())]);
        assert!(rules(&[moved, auth]).is_empty());
    }

    #[test]
    fn client_address_keys_behind_an_untrusted_proxy_are_reported() {
        let layers = [layer("log", &[Fact::ReadsClientAddress]), layer("limit", &[Fact::KeysOnClientAddress])];
        let found = |d: Deployment| -> Vec<(&'static str, String)> {
            check_deployment(&layers, &d).into_iter().map(|d| (d.rule, d.layer)).collect()
        };
        assert_eq!(
            found(Deployment { behind_proxy: true, proxy_trusted: false }),
            [("client-ip-behind-untrusted-proxy", "limit".to_string())]
        );
        assert!(found(Deployment { behind_proxy: true, proxy_trusted: true }).is_empty());
        assert!(found(Deployment { behind_proxy: false, proxy_trusted: false }).is_empty());
    }

    #[test]
    fn a_diagnostic_prints_what_why_and_fix() {
        let d = &check(&[layer("auth", &[Fact::ShortCircuits]), layer("log", &[Fact::SeesEveryRequest])])[0];
        let text = d.to_string();
        assert!(
            text.starts_with("warning[sees-every-request-inside-short-circuit]: `log` (test) is inside `auth` (test)"),
            "{text}"
        );
        assert!(text.contains("\n  why: ") && text.contains("\n  fix: move log before auth"), "{text}");
    }
}
