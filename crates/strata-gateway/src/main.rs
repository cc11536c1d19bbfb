//! The `strata` command: serve, check, explain, hash-password.

use std::io::{IsTerminal, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use strata::Severity;
use strata_gateway::{Gateway, LoadError, load, server};

/// strata: HTTP middleware as an onion, in front of a built-in app or any upstream.
#[derive(Parser)]
#[command(name = "strata", version, about, propagate_version = true)]
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
        /// Reload the config when the file changes (SIGHUP always reloads it).
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
    /// Print the onion of every route, outermost layer first, with what each layer declares.
    Explain {
        /// The TOML config; without it the embedded default is explained.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Read a password from stdin (no echo on a terminal) and print its argon2id hash for configs.
    HashPassword,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli.command {
        Command::Serve { config, listen, watch } => serve(config, listen, watch),
        Command::Check { config, strict } => check(config, strict),
        Command::Explain { config } => explain(config),
        Command::HashPassword => hash_password(),
    }
}

fn load_or_report(config: Option<&PathBuf>) -> Result<Gateway, ExitCode> {
    load(config.map(PathBuf::as_path)).map_err(|e| {
        eprintln!("{e}");
        match e {
            LoadError::Read(..) => ExitCode::from(1),
            LoadError::Invalid(errors) => {
                let n = errors.0.len();
                eprintln!("\n{n} error{} in the config; strata did not start", if n == 1 { "" } else { "s" });
                ExitCode::from(2)
            }
        }
    })
}

/// How often `--watch` looks at the config file's modification time.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

fn serve(config: Option<PathBuf>, listen: Option<SocketAddr>, watch: bool) -> ExitCode {
    let gateway = match load_or_report(config.as_ref()) {
        Ok(g) => g,
        Err(code) => return code,
    };
    gateway.log_warnings();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // Named for `top -H` and `/proc/PID/task/*/comm` (the runtime's blocking threads share it).
    builder.thread_name("strata-worker");
    if let Some(workers) = gateway.server.workers {
        builder.worker_threads(workers);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let workers = runtime.metrics().num_workers();
    tracing::info!("serving with {workers} worker thread{}", if workers == 1 { "" } else { "s" });
    runtime.block_on(async move {
        // Before the listener exists: an unhandled SIGHUP would end the process.
        let hangup = server::Hangup::register();
        let addr = listen.unwrap_or(gateway.server.listen);
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {addr}: {e}");
                return ExitCode::from(1);
            }
        };
        let bound = listener.local_addr().unwrap_or(addr);
        println!("strata listening on http://{bound}");
        for route in &gateway.routes {
            println!("  {} -> {}", route.prefix, route.target.description);
        }
        let live = Arc::new(server::LiveRouter::new(gateway.router.clone()));
        let reloader = match config {
            Some(path) => {
                let reloader = server::Reloader {
                    path,
                    live: live.clone(),
                    running: gateway.server.clone(),
                    listen_overridden: listen.is_some(),
                };
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
        let served = server::serve(listener, live, &gateway.server, server::shutdown_signal()).await;
        reloader.abort();
        // The last requests' log lines are still queued to the writer threads.
        strata::middleware::access_log::flush_all();
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
    let gateway = match load_or_report(config.as_ref()) {
        Ok(g) => g,
        Err(code) => return code,
    };
    let name = config.as_ref().map_or("<embedded default>".to_string(), |p| p.display().to_string());
    let mut diagnostics: Vec<(String, strata::Diagnostic)> =
        gateway.layer_diagnostics.iter().map(|d| (String::new(), d.clone())).collect();
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
    println!("{name}: {} route(s), {errors} error(s), {warnings} warning(s)", gateway.routes.len());
    if errors > 0 || (strict && warnings > 0) { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

fn explain(config: Option<PathBuf>) -> ExitCode {
    let gateway = match load_or_report(config.as_ref()) {
        Ok(g) => g,
        Err(code) => return code,
    };
    println!("Each route's onion, outermost first: the request goes down the list, the response comes back up.");
    for route in &gateway.routes {
        println!("\nroute {}", route.prefix);
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

fn hash_password() -> ExitCode {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    // OsRng needs password-hash's `getrandom` feature, enabled in Cargo.toml.
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
    let salt = SaltString::generate(&mut OsRng);
    match argon2::Argon2::default().hash_password(password.as_bytes(), &salt) {
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
