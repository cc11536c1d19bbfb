//! The `strata` command: serve, check, explain, hash-password, init, completions, man.

use std::io::{IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use strata::Severity;
use strata::middleware::LogOutputs;
use strata_gateway::config::LogSettings;
use strata_gateway::runtime_log::RuntimeLog;
use strata_gateway::{ConfigFile, Gateway, LoadError, explain_request, server, systemd};

/// The version and the git revision it was built from (`-dirty` when the work tree differed from
/// it; `unknown` outside a checkout), set by build.rs.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("STRATA_GIT_REVISION"), ")");

/// strata: HTTP middleware as an onion, in front of a built-in app or any upstream.
#[derive(Parser)]
#[command(name = "strata", version = VERSION, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the config (default: the embedded tasks app on 127.0.0.1:8080).
    Serve {
        /// The TOML config; without it the embedded default is served.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen here instead of the config's `[server] listen`, e.g. 127.0.0.1:9000.
        #[arg(long, short)]
        listen: Option<SocketAddr>,
        /// Serve HTTPS here instead of the config's `[server.tls] listen`, e.g. 127.0.0.1:9443.
        #[arg(long)]
        tls_listen: Option<SocketAddr>,
        /// Reload the config when the file changes (SIGHUP always reloads it, and reopens log files).
        #[arg(long, requires = "config")]
        watch: bool,
    },
    /// Load and validate a config, then report ordering problems. Exit 1 on errors.
    Check {
        /// The TOML config; without it the embedded default is checked.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Treat warnings as errors.
        #[arg(long)]
        strict: bool,
    },
    /// Print the onion of every route, outermost layer first, with what each layer declares; with
    /// --request, run one request through its route's onion in-process and show what each layer did.
    Explain {
        /// The TOML config; without it the embedded default is explained.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Run this request (`METHOD TARGET`, e.g. `OPTIONS /api/tasks`) through the onion, without a
        /// listener: each layer's outcome, header changes and time, then the response.
        #[arg(long, value_name = "METHOD TARGET")]
        request: Option<String>,
        /// A request header, `Name: value` (repeatable).
        #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", requires = "request")]
        headers: Vec<String>,
        /// The request's `Host` (default: the one given with -H, else `localhost`).
        #[arg(long, requires = "request")]
        host: Option<String>,
        /// The request body.
        #[arg(long, requires = "request")]
        data: Option<String>,
        /// Call the upstreams for real (default: an echo stub answers for them with what it received).
        #[arg(long, requires = "request")]
        live: bool,
        /// Print the trace as one JSON document.
        #[arg(long, requires = "request")]
        json: bool,
    },
    /// Read a password from stdin (no echo on a terminal) and print its argon2id hash for configs.
    HashPassword,
    /// Write a commented starter config: the classic stack in front of an upstream (or a built-in
    /// app), with a Basic-auth user whose generated password is printed once. Never overwrites.
    Init {
        /// Where to write it.
        #[arg(long, short, default_value = "strata.toml")]
        output: PathBuf,
        /// Serve this built-in app instead of the upstream http://127.0.0.1:8000.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(strata_gateway::apps::NAMES))]
        app: Option<String>,
    },
    /// Print a shell completion script to stdout, e.g. `strata completions bash > /etc/bash_completion.d/strata`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print a manual page (roff) to stdout: strata(1), or with a subcommand strata-SUBCOMMAND(1).
    Man {
        /// The subcommand whose page to print, e.g. `serve`.
        subcommand: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The commands that read a config install the runtime log as its `[log]` says, once it is
    // parsed (`load_or_report`); the others with the defaults and the environment.
    if !matches!(cli.command, Command::Serve { .. } | Command::Check { .. } | Command::Explain { .. }) {
        RuntimeLog::install(&LogSettings::default());
    }
    match cli.command {
        Command::Serve { config, listen, tls_listen, watch } => serve(config, listen, tls_listen, watch),
        Command::Check { config, strict } => check(config, strict),
        Command::Explain { config, request: None, .. } => explain(config),
        Command::Explain { config, request: Some(line), headers, host, data, live, json } => {
            let spec = strata_gateway::explain_request::RequestSpec { line, headers, host, data };
            explain_request(config, &spec, live, json)
        }
        Command::HashPassword => hash_password(),
        Command::Init { output, app } => init(&output, app.as_deref()),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "strata", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man { subcommand } => man(subcommand.as_deref()),
    }
}

/// Reports a config that could not be loaded on stderr; the exit code says which failure it was.
fn report_load_error(loaded: Result<Gateway, LoadError>) -> Result<Gateway, ExitCode> {
    loaded.map_err(load_error_code)
}

fn load_error_code(e: LoadError) -> ExitCode {
    eprintln!("{e}");
    match e {
        LoadError::Read(..) => ExitCode::from(1),
        LoadError::Invalid(errors) => {
            let n = errors.0.len();
            eprintln!("\n{n} error{} in the config; strata did not start", if n == 1 { "" } else { "s" });
            ExitCode::from(2)
        }
    }
}

/// Loads the config, installing the runtime log between parsing (which finds its `[log]`) and
/// building (whose middlewares may log). Errors go to stderr as plain text whatever `[log]` says:
/// they are for the person starting strata, and the log may not exist yet. Access logs open their
/// outputs through `log_outputs`.
fn load_or_report(config: Option<&PathBuf>, log_outputs: &LogOutputs) -> Result<(Gateway, RuntimeLog), ExitCode> {
    let report = load_error_code;
    let file = ConfigFile::read(config.map(PathBuf::as_path)).map_err(report)?;
    let parsed = file.parse().map_err(report)?;
    let runtime_log = RuntimeLog::install(&parsed.log);
    let gateway = file.build(parsed, log_outputs).map_err(report)?;
    Ok((gateway, runtime_log))
}

/// How often `--watch` looks at the config file's modification time.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// How long `serve` waits at shutdown for the spans still queued to be exported.
const SPAN_FLUSH_LIMIT: Duration = Duration::from_secs(2);

/// The runtime `serve` runs on and, with `runtime = "per_core"`, the per-core runtimes serving the
/// connections. Per core, the runtime of `serve` is the control runtime: one thread (the main one)
/// for the accept loops, the admin listener, reloads, health checks and trace exports.
fn start_runtimes(
    settings: &strata_gateway::config::Server,
) -> std::io::Result<(tokio::runtime::Runtime, Option<Arc<strata::server::Workers>>)> {
    use strata_gateway::config::Runtime;
    let (runtime, workers) = match settings.runtime {
        Runtime::PerCore => {
            let runtime =
                tokio::runtime::Builder::new_current_thread().thread_name("strata-control").enable_all().build()?;
            let workers =
                strata::server::Workers::start(settings.workers.unwrap_or_else(strata::server::Workers::available))?;
            (runtime, Some(workers))
        }
        Runtime::WorkStealing => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            // Named for `top -H` and `/proc/PID/task/*/comm` (the runtime's blocking threads share it).
            builder.thread_name("strata-worker");
            if let Some(workers) = settings.workers {
                builder.worker_threads(workers);
            }
            (builder.enable_all().build()?, None)
        }
    };
    let threads = workers.as_ref().map_or_else(|| runtime.metrics().num_workers(), |w| w.len());
    tracing::info!(
        "serving with {threads} worker thread{} ({})",
        if threads == 1 { "" } else { "s" },
        settings.runtime.name()
    );
    Ok((runtime, workers))
}

fn serve(config: Option<PathBuf>, listen: Option<SocketAddr>, tls_listen: Option<SocketAddr>, watch: bool) -> ExitCode {
    // The access-log outputs of every config this process serves: one per file or stream, shared by
    // the layers writing there and across reloads, reopened on SIGHUP and flushed at shutdown.
    let log_outputs = LogOutputs::new();
    let (gateway, runtime_log) = match load_or_report(config.as_ref(), &log_outputs) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let tls_addr = match (&gateway.server.tls, tls_listen) {
        (Some(tls), _) => Some(tls_listen.unwrap_or(tls.listen)),
        (None, Some(_)) => {
            eprintln!("error: --tls-listen needs a `[server.tls]` section with the certificates to serve");
            return ExitCode::from(2);
        }
        (None, None) => None,
    };
    gateway.log_warnings();
    let (runtime, workers) = match start_runtimes(&gateway.server) {
        Ok(started) => started,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // Each connection holds a descriptor (a proxied one two): the soft limit is often far below
    // what the system allows.
    let descriptors = strata_gateway::limits::raise_descriptor_limit();
    let max_connections = gateway
        .server
        .max_connections
        .unwrap_or_else(|| strata_gateway::limits::connection_cap(descriptors.unwrap_or(1024)));
    tracing::info!(open_files = descriptors, max_connections, "connection limits");
    runtime.block_on(async move {
        // Before the listener exists: an unhandled SIGHUP would end the process, and a SIGTERM
        // would skip the graceful shutdown.
        let hangup = server::Hangup::register();
        let stop_requested = server::shutdown_signal();
        // Every SIGHUP also reopens access-log files (logrotate renames them, then signals), whether
        // or not there is a config to reload, and whether or not it is valid.
        let mut reopen_signal = server::Hangup::register();
        let reopened = log_outputs.clone();
        let reopener = tokio::spawn(async move {
            loop {
                reopen_signal.recv().await;
                reopened.reopen();
            }
        });
        let addr = listen.unwrap_or(gateway.server.listen);
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {addr}: {e}");
                return ExitCode::from(1);
            }
        };
        let bound = listener.local_addr().unwrap_or(addr);
        let tls_listener = match tls_addr {
            Some(addr) => match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => Some(l),
                Err(e) => {
                    eprintln!("error: cannot listen on {addr} (TLS): {e}");
                    return ExitCode::from(1);
                }
            },
            None => None,
        };
        let admin_listener = match &gateway.admin {
            Some(admin) => match tokio::net::TcpListener::bind(admin.listen).await {
                Ok(l) => Some((l, admin.clone())),
                Err(e) => {
                    eprintln!("error: cannot listen on {} (admin): {e}", admin.listen);
                    return ExitCode::from(1);
                }
            },
            None => None,
        };
        println!("strata listening on http://{bound}");
        if let Some(tls) = &tls_listener {
            println!("strata listening on https://{}", tls.local_addr().map_or(String::new(), |a| a.to_string()));
        }
        if let Some((l, _)) = &admin_listener {
            println!("strata admin on http://{}", l.local_addr().map_or(String::new(), |a| a.to_string()));
        }
        for route in &gateway.routes {
            println!("  {} -> {}", route.name(), route.target.description);
        }
        // Inside the runtime, before the router is moved into the live one.
        gateway.start();
        // Moved, not cloned: after the first reload nothing may keep this router, whose pools would
        // otherwise hold their upstream connections open (in CLOSE-WAIT) for good.
        let live = Arc::new(server::LiveRouter::new(gateway.router));
        let reloader = match config {
            Some(path) => {
                let mut reloader =
                    server::Reloader::new(path, live.clone(), gateway.server.clone(), log_outputs.clone());
                reloader.listen_overridden = listen.is_some();
                reloader.tls_listen_overridden = tls_listen.is_some();
                reloader.admin = gateway.admin.clone();
                reloader.runtime_log = Some(runtime_log);
                tokio::spawn(reloader.run(hangup, watch.then_some(WATCH_INTERVAL)))
            }
            // The embedded default cannot change; SIGHUP is still caught, and says so.
            None => tokio::spawn(async move {
                let mut hangup = hangup;
                loop {
                    hangup.recv().await;
                    tracing::info!("received SIGHUP: serving the embedded default, nothing to reload");
                }
            }),
        };
        let connections = strata_gateway::limits::ConnectionCount::new(max_connections);
        let admin_state = strata_gateway::admin::AdminState::new(live.clone(), connections.clone());
        let admin_stop = tokio_util::sync::CancellationToken::new();
        let admin = admin_listener.map(|(listener, settings)| {
            let (state, stop) = (admin_state.clone(), admin_stop.clone());
            tokio::spawn(async move {
                if let Err(error) = strata_gateway::admin::serve(listener, &settings, state, stop.cancelled()).await {
                    tracing::error!(%error, "the admin listener failed");
                }
            })
        });
        // After the bind: connections made from now on wait in the listen queue, so units ordered
        // after this one may start.
        systemd::ready(&format!("serving on http://{bound}"));
        let shutdown = async {
            stop_requested.await;
            // Readiness fails from now on; the admin endpoints answer until the traffic is done.
            admin_state.draining.store(true, std::sync::atomic::Ordering::Relaxed);
            systemd::stopping();
        };
        let listeners =
            server::Listeners { plain: listener, tls: tls_listener, connections: Some(connections), workers };
        let served = server::serve_listeners(listeners, live, &gateway.server, shutdown).await;
        admin_stop.cancel();
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        reloader.abort();
        reopener.abort();
        // The last requests' log lines are still queued to the writer threads.
        log_outputs.flush();
        // And their spans to the trace exporters: sent now, within a bounded wait.
        strata_gateway::trace::flush_all(SPAN_FLUSH_LIMIT).await;
        match served {
            Ok(_) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        }
    })
}

fn check(config: Option<PathBuf>, strict: bool) -> ExitCode {
    let gateway = match load_or_report(config.as_ref(), &LogOutputs::new()) {
        Ok((gateway, _)) => gateway,
        Err(code) => return code,
    };
    let name = config.as_ref().map_or("<embedded default>".to_string(), |p| p.display().to_string());
    let mut diagnostics: Vec<(String, strata::Diagnostic)> =
        gateway.layer_diagnostics.iter().map(|d| (String::new(), d.clone())).collect();
    diagnostics.extend(gateway.target_diagnostics());
    diagnostics.extend(gateway.diagnostics());
    let mut errors = 0;
    let mut warnings = 0;
    for (prefix, d) in &diagnostics {
        match d.severity {
            Severity::Error => errors += 1,
            Severity::Warning => warnings += 1,
            Severity::Note => {}
        }
        if prefix.is_empty() {
            println!("middleware {}: {d}\n", d.layer);
        } else {
            println!("route {prefix}: {d}\n");
        }
    }
    for unused in &gateway.unused {
        warnings += 1;
        println!("warning[unused-middleware]: `{unused}` is defined but no stack uses it\n");
    }
    let now = std::time::SystemTime::now();
    for warning in gateway.tls_certificates.iter().filter_map(|c| c.expiry_warning(now)) {
        warnings += 1;
        println!("warning[certificate-expiry]: {warning}\n");
    }
    if let Some(warning) = gateway.admin.as_ref().and_then(strata_gateway::admin::exposure_warning) {
        warnings += 1;
        println!("warning[admin-exposed]: {warning}\n");
    }
    println!("{name}: {} route(s), {errors} error(s), {warnings} warning(s)", gateway.routes.len());
    if errors > 0 || (strict && warnings > 0) { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

fn explain(config: Option<PathBuf>) -> ExitCode {
    let gateway = match load_or_report(config.as_ref(), &LogOutputs::new()) {
        Ok((gateway, _)) => gateway,
        Err(code) => return code,
    };
    println!("Each route's onion, outermost first: the request goes down the list, the response comes back up.");
    for route in &gateway.routes {
        println!("\nroute {}", route.name());
        let mut n = 0;
        let server = gateway.server_layers.iter().map(|l| ("server", l));
        let own = route.layers.iter().map(|l| ("route", l));
        for (scope, layer) in server.chain(own) {
            n += 1;
            let facts: Vec<&str> = layer.facts.iter().map(|f| f.describe()).collect();
            let facts = if facts.is_empty() { String::new() } else { format!("  — {}", facts.join("; ")) };
            println!("  {n:>2}. {scope:<6} {:<16} ({}){facts}", layer.name, layer.kind);
        }
        let facts: Vec<&str> = route.target.facts.iter().map(|f| f.describe()).collect();
        let facts = if facts.is_empty() { String::new() } else { format!("  — {}", facts.join("; ")) };
        println!("      ->     {}{facts}", route.target.description);
    }
    let diagnostics = gateway.diagnostics();
    if !diagnostics.is_empty() {
        println!("\n{} ordering problem(s): run `strata check` for details", diagnostics.len());
    }
    ExitCode::SUCCESS
}

/// `explain --request`: the request through its route's onion, in-process; upstreams answered by
/// an echo stub unless `live`.
fn explain_request(config: Option<PathBuf>, spec: &explain_request::RequestSpec, live: bool, json: bool) -> ExitCode {
    let stub = (!live).then(|| Arc::new(explain_request::EchoStub::new()));
    let options = strata_gateway::routes::BuildOptions {
        upstream_stub: stub
            .clone()
            .map(|s| s as Arc<dyn strata::Endpoint<strata::http::Request, strata::http::Response>>),
    };
    let gateway = match report_load_error(strata_gateway::load_with(config.as_deref(), &options)) {
        Ok(g) => g,
        Err(code) => return code,
    };
    let redactor = explain_request::Redactor::new(gateway.server.secret_headers.clone());
    if let Some(stub) = &stub {
        stub.redact(redactor.clone());
    }
    let req = match spec.build(gateway.server.listen) {
        Ok(req) => req,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let trace = runtime.block_on(explain_request::explain(&gateway, req, stub.as_deref(), &redactor));
    if json {
        println!("{:#}", trace.to_json());
    } else {
        print!("{}", trace.render());
    }
    ExitCode::SUCCESS
}

fn hash_password() -> ExitCode {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ");
        let second = rpassword::prompt_password("Again: ");
        match (first, second) {
            (Ok(a), Ok(b)) if a == b => a,
            (Ok(_), Ok(_)) => {
                eprintln!("error: the passwords differ");
                return ExitCode::from(1);
            }
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("error: cannot read the password: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        let mut input = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut input) {
            eprintln!("error: cannot read the password from stdin: {e}");
            return ExitCode::from(1);
        }
        // One password per run: the first line, without its line ending.
        input.lines().next().unwrap_or("").to_string()
    };
    if password.is_empty() {
        eprintln!("error: empty password");
        return ExitCode::from(1);
    }
    match hash(&password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: hashing failed: {e}");
            ExitCode::from(1)
        }
    }
}

/// An argon2id PHC string for `password`, with the argon2 crate's default cost (OWASP's minimum:
/// 19 MiB, 2 passes) and a random salt.
fn hash(password: &str) -> Result<String, argon2::password_hash::Error> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    // OsRng needs password-hash's `getrandom` feature, enabled in Cargo.toml.
    let salt = SaltString::generate(&mut OsRng);
    Ok(argon2::Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// The starter config `strata init` fills in.
const STARTER: &str = include_str!("starter.toml");
/// The user `strata init` creates.
const STARTER_USER: &str = "admin";
/// The upstream `strata init` puts strata in front of: a common port for app servers (gunicorn's).
const STARTER_UPSTREAM: &str = "http://127.0.0.1:8000";

fn init(output: &Path, app: Option<&str>) -> ExitCode {
    let password = random_password();
    let hash = match hash(&password) {
        Ok(hash) => hash,
        Err(e) => {
            eprintln!("error: hashing the generated password failed: {e}");
            return ExitCode::from(1);
        }
    };
    let (summary, route) = match app {
        Some(app) => (format!("app {app}"), starter_app_route(app)),
        None => (format!("upstream {STARTER_UPSTREAM}"), starter_upstream_route()),
    };
    let file_name = output.file_name().map_or("strata.toml".into(), |n| n.to_string_lossy());
    let text = STARTER
        .replace("@FILE@", &file_name)
        .replace("@TARGET_SUMMARY@", &summary)
        .replace("@USER@", STARTER_USER)
        .replace("@HASH@", &hash)
        .replace("@ROUTE@", &route);
    // `create_new` refuses an existing file (or symlink) in the same system call that creates it,
    // so no file is ever overwritten, even one that appears between a check and the write.
    let mut file = match std::fs::OpenOptions::new().write(true).create_new(true).open(output) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            eprintln!(
                "error: {} already exists; strata init never overwrites a file (choose another with --output)",
                output.display()
            );
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("error: cannot create {}: {e}", output.display());
            return ExitCode::from(1);
        }
    };
    if let Err(e) = file.write_all(text.as_bytes()).and_then(|()| file.sync_all()) {
        eprintln!("error: cannot write {}: {e}", output.display());
        // Half a config is worse than none; this file is ours, made just above.
        let _ = std::fs::remove_file(output);
        return ExitCode::from(1);
    }
    let shown = output.display();
    println!("wrote {shown}: timing → request_id → log → errors → cors → auth → {summary}");
    println!();
    println!("Basic auth user `{STARTER_USER}`, password (shown this once; the file holds only its hash):");
    println!();
    println!("    {password}");
    println!();
    println!("Next: set the CORS origins, then");
    println!("    strata check --config {shown}");
    println!("    strata serve --config {shown}");
    ExitCode::SUCCESS
}

/// 22 letters and digits from the operating system's generator: about 131 random bits.
fn random_password() -> String {
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    // Letters and digits only, so the password needs no quoting in shells and URLs.
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const LENGTH: usize = 22;
    // The largest multiple of 62 a byte can hold: bytes at or above it are skipped, so that every
    // letter is equally likely (a plain `% 62` would favour the first eight).
    const LIMIT: u8 = 62 * 4;
    let mut password = String::with_capacity(LENGTH);
    let mut bytes = [0u8; 64];
    // A buffer of 64 bytes almost always yields 22 letters; each further round skips 1/32 of its bytes.
    while password.len() < LENGTH {
        OsRng.fill_bytes(&mut bytes);
        let letters = bytes.iter().filter(|&&b| b < LIMIT).map(|&b| char::from(ALPHABET[usize::from(b % 62)]));
        password.extend(letters.take(LENGTH - password.len()));
    }
    password
}

/// The end of the starter config for an upstream: the auth layer's last key, then the route.
fn starter_upstream_route() -> String {
    format!(
        "# Tell the upstream who logged in, in this request header (a value the client sent under this
# name is replaced, so the upstream can trust it).
forward_user_header = \"x-forwarded-user\"

[[route]]
# Every path: the longest matching prefix wins, so more specific routes can be added beside it.
prefix = \"/\"
# The app strata protects, e.g. `gunicorn -b 127.0.0.1:8000 app:app`: http://host:port[/base].
upstream = \"{STARTER_UPSTREAM}\"
# How long the upstream may take to send its response head (then 504) and to accept a
# connection (then 502).
timeout = \"60s\"
connect_timeout = \"5s\"
"
    )
}

/// The end of the starter config for a built-in app.
fn starter_app_route(app: &str) -> String {
    let what = match app {
        "tasks" => "The built-in tasks API: GET and POST /tasks, GET, PUT, PATCH and DELETE /tasks/{id}",
        "echo" => "The built-in echo app: /anything, /status/{code}, /delay/{ms}, /sse/{n} and more",
        _ => "A built-in app",
    };
    format!(
        "
[[route]]
# Every path: the longest matching prefix wins, so more specific routes can be added beside it.
prefix = \"/\"
# {what}.
app = \"{app}\"
"
    )
}

/// Prints the manual page strata(1), or strata-SUBCOMMAND(1), from the same definition as `--help`.
fn man(subcommand: Option<&str>) -> ExitCode {
    // Built, so that subcommands carry their full names (`strata-serve`, `strata serve`), as
    // clap_mangen's own page-per-subcommand generator does.
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    let page_of = match subcommand {
        None => command,
        Some(name) => match command.find_subcommand(name) {
            Some(sub) => sub.clone(),
            None => {
                let names: Vec<&str> = command.get_subcommands().map(clap::Command::get_name).collect();
                eprintln!("error: no subcommand `{name}`; expected one of: {}", names.join(", "));
                return ExitCode::from(2);
            }
        },
    };
    let mut page = Vec::new();
    let rendered = clap_mangen::Man::new(page_of).render(&mut page);
    if let Err(e) = rendered.and_then(|()| std::io::stdout().write_all(&page)) {
        eprintln!("error: cannot write the manual page: {e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// jemalloc instead of the system's allocator: glibc's keeps the memory of closed connections
/// (hundreds of MiB after 10,000 of them), jemalloc gives it back.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read when it starts: a background thread returns freed pages to the
/// system (after `dirty_decay_ms`, 10 s by default) even while the server is idle, when no
/// allocation would trigger it. `MALLOC_CONF`-style options in `_RJEM_MALLOC_CONF` still apply.
// SAFETY: jemalloc reads this symbol as a NUL-terminated C string, which it is; nothing writes it.
#[cfg(feature = "jemalloc")]
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: &[u8; 23] = b"background_thread:true\0";
