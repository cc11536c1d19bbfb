//! TOML → typed config. Every error names the file, line and column, what was expected, and a
//! "did you mean" when a name is close to a known one.
//!
//! The document is parsed once into a span-preserving tree; each section is then deserialized from
//! its own subtree, so serde's errors (unknown key, wrong type, missing field) carry the exact span of
//! the key or value at fault. Middleware tables are kept as subtrees: parsing checks each against its
//! kind's config struct (through the registry), and building deserializes it again for the kind's
//! constructor.
//!
//! Loading goes on after an error, to report every one in a single run: a key whose value is
//! rejected is reported and left out of its section, and the rest of the section is still read
//! (see [`from_table`]). The constructors' own checks run when the gateway is built, once parsing
//! found nothing wrong.

mod admin;
mod error;
mod log;
mod route;
mod server;
mod traces;
mod upstream;

pub use admin::Admin;
pub use error::{
    ConfigError, ConfigErrors, Source, did_you_mean, from_table, from_value, quoted_list, redact_userinfo,
};
pub use log::{LogFormat, LogSettings};
pub use route::{
    ForwardedHeaders, MAX_CONNECT_TIMEOUT, MAX_IDLE_TIMEOUT, MAX_UPSTREAM_TIMEOUT, ProxyOptions, Route, StaticTarget,
    Target, UpstreamTlsOptions,
};
pub use server::{
    CertificateFiles, ClientAuth, DEFAULT_REDIRECT_EXEMPT, DEFAULT_VIA_PSEUDONYM, MAX_SHUTDOWN_GRACE, MAX_WORKERS,
    Runtime, Server, TlsSettings,
};
pub use traces::TraceSettings;
pub use upstream::{
    Balance, HashOn, HealthCheck, MAX_EJECT_AFTER, MAX_EJECTION, MAX_HEALTH_PERIOD, MAX_RETRIES, MAX_TARGETS,
    MAX_WEIGHT, UpstreamOptions, UpstreamTarget,
};

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::hosts::HostPattern;
use route::{RouteSection, normalize_prefix, parse_hosts, parse_static};
use server::{ServerSection, parse_server};
use upstream::parse_targets;

/// The top-level keys a config may have.
const TOP_LEVEL_KEYS: &[&str] = &["server", "middleware", "route", "admin", "log", "tracing"];

/// A reference to a named middleware in a `stack` array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameRef {
    /// The middleware name.
    pub name: String,
    /// Where the reference is written.
    pub span: Range<usize>,
}

/// A `[middleware.NAME]` table, kept as a subtree for the registry.
#[derive(Clone, Debug)]
pub struct MiddlewareDecl<'a> {
    /// The name routes refer to.
    pub name: String,
    /// The kind (registry key).
    pub kind: String,
    /// Where `kind = ...` is written.
    pub kind_span: Range<usize>,
    /// The table without its `kind` key.
    pub table: Spanned<DeValue<'a>>,
}

/// A whole config, checked for structure and references; middleware tables not yet built.
#[derive(Clone, Debug)]
pub struct Config<'a> {
    /// The file's name and text.
    pub source: Source<'a>,
    /// `[server]`.
    pub server: Server,
    /// `[middleware.*]`, in name order.
    pub middleware: Vec<MiddlewareDecl<'a>>,
    /// `[[route]]`, in file order.
    pub routes: Vec<Route>,
    /// `[admin]`: the admin listener, when configured.
    pub admin: Option<Admin>,
    /// `[log]`: the runtime log's format and filter.
    pub log: LogSettings,
    /// `[tracing]`: OTLP span export, when configured.
    pub tracing: Option<TraceSettings>,
}

impl<'a> Config<'a> {
    /// Parses and checks a config. `file` is the name used in messages.
    pub fn parse(file: &'a str, text: &'a str, app_names: &[&str]) -> Result<Config<'a>, ConfigErrors> {
        let source = Source { file, text };
        let root = DeTable::parse(text).map_err(|e| ConfigErrors(vec![source.toml_error(&e, 0..0)]))?;
        let mut errors = Vec::new();
        let mut config = Config {
            source,
            server: Server::default(),
            middleware: Vec::new(),
            routes: Vec::new(),
            admin: None,
            log: LogSettings::default(),
            tracing: None,
        };
        let mut route_values = Vec::new();
        let mut server_section = None;

        for (key, value) in root.into_inner() {
            match key.get_ref().as_ref() {
                "server" => server_section = from_table::<ServerSection>(source, value, &mut errors),
                "middleware" => config.parse_middleware(value, &mut errors),
                "route" => match value.into_inner() {
                    DeValue::Array(items) => route_values = items.into_iter().collect(),
                    _ => errors.push(source.error(key.span(), "`route` must be an array of tables: write `[[route]]`")),
                },
                "admin" => {
                    config.admin = from_table::<admin::AdminSection>(source, value, &mut errors)
                        .and_then(|s| admin::parse_admin(source, s, &mut errors));
                }
                "log" => {
                    if let Some(s) = from_table::<log::LogSection>(source, value, &mut errors) {
                        config.log = log::parse_log(source, s, &mut errors);
                    }
                }
                "tracing" => {
                    config.tracing = from_table::<traces::TracingSection>(source, value, &mut errors)
                        .and_then(|s| traces::parse_tracing(source, s, &mut errors));
                }
                other => errors.push(source.error(
                    key.span(),
                    format!(
                        "unknown section `{other}`, expected one of {}{}",
                        quoted_list(TOP_LEVEL_KEYS),
                        did_you_mean(other, TOP_LEVEL_KEYS)
                    ),
                )),
            }
        }

        // Each table's keys and types now, so they are reported beside the other sections' errors.
        for decl in &config.middleware {
            crate::registry::check_table(decl, source, &mut errors);
        }
        let defined: HashSet<&str> = config.middleware.iter().map(|m| m.name.as_str()).collect();
        let defined_names: Vec<&str> = config.middleware.iter().map(|m| m.name.as_str()).collect();
        let check_refs = |stack: Vec<Spanned<String>>, errors: &mut Vec<ConfigError>| -> Vec<NameRef> {
            stack
                .into_iter()
                .map(|s| {
                    let span = s.span();
                    let name = s.into_inner();
                    if !defined.contains(name.as_str()) {
                        errors.push(source.error(
                            span.clone(),
                            format!(
                                "no middleware named `{name}`: define it in a `[middleware.{name}]` table{}",
                                did_you_mean(&name, &defined_names)
                            ),
                        ));
                    }
                    NameRef { name, span }
                })
                .collect()
        };

        if let Some(s) = server_section {
            config.server = parse_server(source, s, &mut errors, |stack, errors| check_refs(stack, errors));
            check_duplicates(source, &[], &config.server.stack, &mut errors);
        }
        // Each (host, prefix) pair is one place; `None` is "any host no route names".
        let mut prefixes: BTreeMap<(Option<HostPattern>, String), Range<usize>> = BTreeMap::new();
        for mut value in route_values {
            let span = value.span();
            // `static` is read apart: a string or a table of the files' own keys.
            let static_value = match value.get_mut() {
                DeValue::Table(table) => table.remove("static"),
                _ => None,
            };
            let Some(mut section) = from_table::<RouteSection>(source, value, &mut errors) else { continue };
            let stack = check_refs(std::mem::take(&mut section.stack), &mut errors);
            check_duplicates(source, &config.server.stack, &stack, &mut errors);
            let mut proxy = section.proxy_options(source, section.upstream.is_some(), &mut errors);
            let upstream_options = section.upstream_options(source, section.upstream.is_some(), &mut errors);
            proxy.via_pseudonym.clone_from(&config.server.via_pseudonym);
            let prefix_span = section.prefix.span();
            let prefix = match normalize_prefix(section.prefix.get_ref()) {
                Ok(p) => p,
                Err(msg) => {
                    errors.push(source.error(prefix_span, msg));
                    continue;
                }
            };
            let hosts = parse_hosts(source, section.host.take(), &mut errors);
            let places: Vec<Option<HostPattern>> =
                if hosts.is_empty() { vec![None] } else { hosts.iter().cloned().map(Some).collect() };
            for host in places {
                let key = (host, prefix.clone());
                if let Some(first) = prefixes.get(&key) {
                    let first = source.error(first.clone(), "");
                    let on = key.0.as_ref().map(|h| format!(" for host `{h}`")).unwrap_or_default();
                    errors.push(source.error(
                        prefix_span.clone(),
                        format!("a route with prefix `{prefix}`{on} is already defined at line {}", first.line),
                    ));
                    break;
                }
                prefixes.insert(key, prefix_span.clone());
            }
            let static_span = static_value.as_ref().map(Spanned::span);
            if let Some(at) = static_span.clone().filter(|_| section.app.is_some() || section.upstream.is_some()) {
                errors.push(source.error(at, "a route has one target: `app`, `upstream` or `static`, not two"));
                continue;
            }
            if let Some(value) = static_value {
                let span = value.span();
                if let Some(target) = parse_static(source, value, &mut errors) {
                    config.routes.push(Route {
                        prefix,
                        hosts,
                        stack,
                        target: Target::Static(target),
                        target_span: span,
                        proxy,
                        upstream: upstream_options,
                    });
                }
                continue;
            }
            let (target, target_span) = match (section.app, section.upstream) {
                (Some(app), None) => {
                    if !app_names.contains(&app.get_ref().as_str()) {
                        errors.push(source.error(
                            app.span(),
                            format!(
                                "unknown app `{}`, expected one of {}{}",
                                app.get_ref(),
                                quoted_list(app_names),
                                did_you_mean(app.get_ref(), app_names)
                            ),
                        ));
                    }
                    (Target::App(app.get_ref().clone()), app.span())
                }
                (None, Some(upstream)) => {
                    let span = upstream.span();
                    match parse_targets(source, upstream, &mut errors) {
                        Some(targets) => (Target::Upstream(targets), span),
                        None => continue,
                    }
                }
                (Some(app), Some(_)) => {
                    errors.push(source.error(app.span(), "a route has either `app` or `upstream`, not both"));
                    continue;
                }
                (None, None) => {
                    errors.push(source.error(
                        span,
                        "a route needs a target: `app = \"tasks\"` (a built-in app), `upstream = \"http://127.0.0.1:8000\"` \
                         or `static = \"./public\"` (files)",
                    ));
                    continue;
                }
            };
            config.routes.push(Route { prefix, hosts, stack, target, target_span, proxy, upstream: upstream_options });
        }
        if config.routes.is_empty() && errors.is_empty() {
            errors.push(source.error(
                0..0,
                "no routes: add at least one `[[route]]` with a `prefix` and an `app`, `upstream` or `static`",
            ));
        }
        if let Some(admin) = &config.admin {
            let public = std::iter::once(config.server.listen).chain(config.server.tls.as_ref().map(|t| t.listen));
            // Port 0 is any free port: two of them never clash.
            if admin.listen.port() != 0 && public.into_iter().any(|addr| addr == admin.listen) {
                errors.push(source.error(
                    admin.listen_span.clone(),
                    format!(
                        "`[admin] listen = \"{}\"` is a public listener's address: the admin endpoints need \
                         an address of their own, e.g. \"127.0.0.1:9901\"",
                        admin.listen
                    ),
                ));
            }
        }
        // In file order, as a compiler lists them: sections are read in turn, not top to bottom.
        errors.sort_by_key(|e| (e.line, e.column));
        if errors.is_empty() { Ok(config) } else { Err(ConfigErrors(errors)) }
    }

    fn parse_middleware(&mut self, value: Spanned<DeValue<'a>>, errors: &mut Vec<ConfigError>) {
        let source = self.source;
        let span = value.span();
        let DeValue::Table(table) = value.into_inner() else {
            errors.push(
                source.error(span, "`middleware` must be a table of named middlewares: write `[middleware.NAME]`"),
            );
            return;
        };
        for (name, value) in table {
            let name_span = name.span();
            let name = name.into_inner().into_owned();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                errors.push(source.error(
                    name_span.clone(),
                    format!("middleware name `{name}`: expected letters, digits, `_` or `-`"),
                ));
            }
            let table_span = value.span();
            let DeValue::Table(mut table) = value.into_inner() else {
                errors.push(source.error(name_span, format!("`middleware.{name}` must be a table with a `kind` key")));
                continue;
            };
            let Some(kind) = table.remove("kind") else {
                errors.push(source.error(
                    name_span,
                    format!(
                        "`[middleware.{name}]` has no `kind`: say which middleware it is, e.g. `kind = \"access_log\"`"
                    ),
                ));
                continue;
            };
            let kind_span = kind.span();
            let Some(kind_name) = kind.get_ref().as_str().map(str::to_string) else {
                errors.push(
                    source.error(kind_span, format!("`kind` must be a string, found {}", kind.get_ref().type_str())),
                );
                continue;
            };
            self.middleware.push(MiddlewareDecl {
                name,
                kind: kind_name,
                kind_span,
                table: Spanned::new(table_span, DeValue::Table(table)),
            });
        }
    }
}

/// Parses durations like `"10s"`, `"500ms"`, `"2m"`, `"1h"`: the library's parser, so `[server]`,
/// route and middleware settings all read durations the same way.
pub use strata::middleware::parse_duration;

/// Reports each middleware named a second time in one route's onion — the server stack (`outer`,
/// empty when `stack` is the server stack itself), then the route's own — at the second reference.
/// A layer listed twice runs twice per request: a rate limit would count every request twice.
fn check_duplicates(source: Source<'_>, outer: &[NameRef], stack: &[NameRef], errors: &mut Vec<ConfigError>) {
    let outer_place = if outer.is_empty() { "" } else { " (the server stack wraps every route)" };
    for (i, reference) in stack.iter().enumerate() {
        let first = match outer.iter().find(|r| r.name == reference.name) {
            Some(r) => Some((r, "`[server] stack`", outer_place)),
            None => stack[..i].iter().find(|r| r.name == reference.name).map(|r| (r, "this `stack`", "")),
        };
        if let Some((first, place, why)) = first {
            let at = source.error(first.span.clone(), "");
            errors.push(source.error(
                reference.span.clone(),
                format!(
                    "middleware `{}` is already in this onion: {place} at line {}, column {}{why}; a layer runs \
                     once per request, so list it once",
                    reference.name, at.line, at.column
                ),
            ));
        }
    }
}

#[cfg(test)]
mod test_util {
    use super::*;

    pub(super) const APPS: &[&str] = &["tasks", "echo"];

    pub(super) fn parse(text: &str) -> Result<Config<'_>, ConfigErrors> {
        Config::parse("test.toml", text, APPS)
    }

    pub(super) fn first_error(text: &str) -> ConfigError {
        parse(text).expect_err("config should be rejected").0.remove(0)
    }

    pub(super) const GOOD: &str = r#"
[server]
listen = "127.0.0.1:9000"
stack = ["timing", "log"]
shutdown_grace = "3s"

[middleware.log]
kind = "access_log"
format = "json"

[middleware.timing]
kind = "timing"

[[route]]
prefix = "/api/"
stack = []
app = "tasks"

[[route]]
prefix = "/"
upstream = "http://127.0.0.1:8000"
"#;

    pub(super) const ECHO: &str = "[[route]]\nprefix = \"/\"\napp = \"echo\"\n";
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::test_util::{ECHO, GOOD, first_error, parse};
    use super::*;

    #[test]
    fn a_good_config_parses_into_its_parts() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(3));
        assert_eq!(c.server.stack.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["timing", "log"]);
        let kinds: Vec<_> = c.middleware.iter().map(|m| (m.name.as_str(), m.kind.as_str())).collect();
        assert_eq!(kinds, [("log", "access_log"), ("timing", "timing")]);
        assert!(c.middleware[0].table.get_ref().as_table().unwrap().get("kind").is_none());
        assert_eq!(c.routes[0].prefix, "/api");
        assert_eq!(c.routes[0].target, Target::App("tasks".into()));
        let one = UpstreamTarget { url: "http://127.0.0.1:8000".parse().unwrap(), weight: 1 };
        assert_eq!(c.routes[1].target, Target::Upstream(vec![one]));
    }

    #[test]
    fn unknown_keys_point_at_the_key_with_a_suggestion() {
        let e = first_error("[server]\nlisen = \"127.0.0.1:1\"\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n");
        assert_eq!((e.line, e.column), (2, 1), "{e}");
        assert!(e.message.contains("unknown field `lisen`") && e.message.contains("did you mean `listen`?"), "{e}");
        let e = first_error("[servr]\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n");
        assert_eq!((e.line, e.column), (1, 2), "{e}");
        assert!(e.message.contains("did you mean `server`?"), "{e}");
    }

    #[test]
    fn undefined_middleware_names_are_errors_with_suggestions() {
        let e = first_error(
            "[server]\nstack = [\"lgo\"]\n[middleware.log]\nkind = \"access_log\"\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n",
        );
        assert_eq!((e.line, e.column), (2, 10), "{e}");
        assert!(e.message.contains("no middleware named `lgo`") && e.message.contains("did you mean `log`?"), "{e}");
    }

    #[test]
    fn routes_need_exactly_one_target() {
        let e = first_error("[[route]]\nprefix = \"/\"\napp = \"echo\"\nupstream = \"http://127.0.0.1:1\"\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("not both"), "{e}");
        let e = first_error("[[route]]\nprefix = \"/\"\n");
        assert!(e.message.contains("needs a target"), "{e}");
        let e = first_error("[[route]]\nprefix = \"/\"\napp = \"task\"\n");
        assert!(e.message.contains("unknown app `task`") && e.message.contains("did you mean `tasks`?"), "{e}");
    }

    #[test]
    fn bad_values_are_located_and_explained() {
        let e = first_error("[server]\nlisten = \"localhost\"\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n");
        assert_eq!((e.line, e.column), (2, 10), "{e}");
        assert!(e.message.contains("expected an IP address and port"), "{e}");
        let e = first_error("[server]\nshutdown_grace = \"soon\"\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n");
        assert!(e.message.contains("expected a duration"), "{e}");
        let e = first_error("[[route]]\nprefix = \"api\"\napp = \"echo\"\n");
        assert!(e.message.contains("starting with `/`"), "{e}");
        let e = first_error("[[route]]\nprefix = \"/\"\nupstream = \"ftp://x\"\n");
        assert!(e.message.contains("expected an http or https URL"), "{e}");
        let e = first_error("[server]\nhttp2 = \"yes\"\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n");
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn syntax_errors_and_missing_kind_are_located() {
        let e = first_error("[server\n");
        assert_eq!(e.line, 1, "{e}");
        let e = first_error("[middleware.log]\nformat = \"json\"\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n");
        assert!(e.message.contains("has no `kind`"), "{e}");
        assert_eq!(e.line, 1, "{e}");
    }

    #[test]
    fn duplicate_prefixes_are_rejected() {
        let e =
            first_error("[[route]]\nprefix = \"/a\"\napp = \"echo\"\n[[route]]\nprefix = \"/a/\"\napp = \"tasks\"\n");
        assert_eq!(e.line, 5, "{e}");
        assert!(e.message.contains("already defined at line 2"), "{e}");
    }

    #[test]
    fn every_error_is_reported_not_just_the_first() {
        let errors = parse("[server]\nlisten = \"x\"\nstack = [\"nope\"]\n[[route]]\nprefix = \"/\"\napp = \"nope\"\n")
            .unwrap_err();
        assert_eq!(errors.0.len(), 3, "{errors}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn huge_durations_are_errors_at_the_value_not_panics_later() {
        for huge in ["99999999999999999h", "99999999999999999999999h", "8761h"] {
            let text = format!("[server]\nshutdown_grace = \"{huge}\"\n{ECHO}");
            let e = first_error(&text);
            assert_eq!((e.line, e.column), (2, 18), "{e}");
            assert!(
                e.message.starts_with(&format!("`shutdown_grace`: `{huge}`: expected a duration of at most")),
                "{e}"
            );
        }
        let e = first_error(&format!("[server]\nshutdown_grace = \"61m\"\n{ECHO}"));
        assert_eq!(e.message, "`shutdown_grace`: `61m`: expected a duration of at most 1h", "{e}");
        assert_eq!(
            parse(&format!("[server]\nshutdown_grace = \"1h\"\n{ECHO}")).unwrap().server.shutdown_grace,
            MAX_SHUTDOWN_GRACE
        );

        let route = |key: &str, value: &str| {
            format!("[[route]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\n{key} = \"{value}\"\n")
        };
        for (key, too_long, bound) in
            [("timeout", "25h", "24h"), ("connect_timeout", "6m", "5m"), ("idle_timeout", "61m", "1h")]
        {
            let e = first_error(&route(key, too_long));
            assert_eq!((e.line, e.column), (4, key.len() + 4), "{e}");
            assert_eq!(e.message, format!("`{key}`: `{too_long}`: expected a duration of at most {bound}"), "{e}");
            assert!(parse(&route(key, bound)).is_ok(), "{key} = {bound} is allowed");
        }
        let e = first_error(&route("timeout", "99999999999999999999999h"));
        assert!(e.message.contains("expected a duration of at most 24h"), "{e}");
    }

    const TWO: &str = "[middleware.limit]\nkind = \"timing\"\n[middleware.log]\nkind = \"access_log\"\n";

    #[test]
    fn a_middleware_twice_in_one_onion_is_an_error_at_the_second() {
        let e = first_error(&format!("[server]\nstack = [\"limit\", \"log\", \"limit\"]\n{TWO}{ECHO}"));
        assert_eq!((e.line, e.column), (2, 26), "{e}");
        assert!(
            e.message.contains("middleware `limit` is already in this onion: this `stack` at line 2, column 10"),
            "{e}"
        );

        let text = format!(
            "[server]\nstack = [\"limit\"]\n{TWO}[[route]]\nprefix = \"/\"\napp = \"echo\"\nstack = [\"log\", \"limit\"]\n"
        );
        let e = first_error(&text);
        assert_eq!((e.line, e.column), (10, 17), "{e}");
        assert!(
            e.message.contains(
                "already in this onion: `[server] stack` at line 2, column 10 (the server stack wraps every route)"
            ),
            "{e}"
        );

        let text = format!("{TWO}[[route]]\nprefix = \"/\"\napp = \"echo\"\nstack = [\"log\", \"log\"]\n");
        let e = first_error(&text);
        assert_eq!((e.line, e.column), (8, 17), "{e}");

        // One middleware in several routes is one layer in each onion: allowed.
        let text = format!(
            "[server]\nstack = [\"log\"]\n{TWO}[[route]]\nprefix = \"/a\"\napp = \"echo\"\nstack = [\"limit\"]\n\
             [[route]]\nprefix = \"/b\"\napp = \"tasks\"\nstack = [\"limit\"]\n"
        );
        assert!(parse(&text).is_ok());
    }

    #[test]
    fn type_errors_in_every_section_are_reported_together() {
        let text = "[server]\nmax_header_bytes = -1\nworkers = \"two\"\nlisten = \"x\"\n\
                    [middleware.limit]\nkind = \"rate_limit\"\nrate = \"10/s\"\nburst = -5\nnope = 1\n\
                    [[route]]\nprefix = \"/\"\napp = \"echo\"\nstrip_prefix = \"yes\"\nstack = [\"limit\", \"limit\"]\n";
        let errors = parse(text).unwrap_err().0;
        let at: Vec<(usize, usize)> = errors.iter().map(|e| (e.line, e.column)).collect();
        assert_eq!(
            at,
            [(2, 20), (3, 11), (4, 10), (8, 9), (9, 1), (13, 16), (14, 19)],
            "{}",
            ConfigErrors(errors.clone())
        );
        assert!(errors[0].message.contains("invalid value: integer `-1`"), "{}", errors[0]);
        assert!(errors[2].message.contains("expected an IP address and port"), "{}", errors[2]);
        assert!(errors[4].message.contains("unknown field `nope`"), "{}", errors[4]);
        assert!(errors[6].message.contains("already in this onion"), "{}", errors[6]);
    }

    #[test]
    fn a_missing_required_key_is_reported_once() {
        // The bad `prefix` is reported; that it is then missing is not a second error.
        let errors = parse("[[route]]\nprefix = 1\napp = \"echo\"\n").unwrap_err().0;
        assert_eq!(errors.len(), 1, "{}", ConfigErrors(errors.clone()));
        assert_eq!((errors[0].line, errors[0].column), (2, 10));
        let errors = parse("[[route]]\napp = \"echo\"\n").unwrap_err().0;
        assert_eq!(errors.len(), 1, "{}", ConfigErrors(errors.clone()));
        assert!(errors[0].message.contains("missing field `prefix`"), "{}", errors[0]);
        let errors = parse("server = 1\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n").unwrap_err().0;
        assert_eq!(errors.len(), 1, "{}", ConfigErrors(errors.clone()));
    }
}
