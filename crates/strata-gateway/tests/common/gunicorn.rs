//! The tests' Python upstreams under a real gunicorn: `tests/upstream/tasks_app.py`, or any WSGI
//! app of that folder.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running gunicorn (2 workers, 8 threads each) on a loopback port; stopped on drop.
pub struct Gunicorn {
    child: Option<Child>,
    pub addr: SocketAddr,
    // The SQLite file the workers share, and gunicorn's own log.
    dir: tempfile::TempDir,
    // `module:app` in tests/upstream, and the environment it is started with.
    app: String,
    env: Vec<(String, String)>,
    // More command-line options (e.g. `--certfile`), given on every (re)start.
    extra_args: Vec<String>,
}

impl Gunicorn {
    /// Starts the tasks app on a free port and waits until it accepts connections.
    pub fn start() -> Gunicorn {
        Self::start_app("tasks_app:app", &[])
    }

    /// Starts the tasks app like [`Gunicorn::start`], with more gunicorn options (e.g.
    /// `--certfile`, `--keyfile`, `--access-logfile`).
    pub fn start_with_args(extra_args: &[String]) -> Gunicorn {
        Self::launch("tasks_app:app", &[], extra_args)
    }

    /// Starts `app` (`module:app` in tests/upstream) with `env` on a free port and waits until it
    /// accepts connections.
    pub fn start_app(app: &str, env: &[(&str, &str)]) -> Gunicorn {
        Self::launch(app, env, &[])
    }

    /// Starts `app` like [`Gunicorn::start_app`], with more gunicorn options (e.g. `--certfile`,
    /// `--keyfile` to serve TLS).
    pub fn start_app_with_args(app: &str, env: &[(&str, &str)], extra_args: &[String]) -> Gunicorn {
        Self::launch(app, env, extra_args)
    }

    fn launch(app: &str, env: &[(&str, &str)], extra_args: &[String]) -> Gunicorn {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = SocketAddr::from(([127, 0, 0, 1], super::free_port()));
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut g = Gunicorn { child: None, addr, dir, app: app.to_string(), env, extra_args: extra_args.to_vec() };
        g.restart();
        g
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts it again on the same port with the same data (after [`Gunicorn::stop`]).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "gunicorn is already running");
        let app_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/upstream");
        let log = std::fs::File::create(self.dir.path().join("gunicorn.log")).unwrap();
        let child = Command::new("gunicorn")
            .args(["-w", "2", "-k", "gthread", "--threads", "8", "--graceful-timeout", "2", "--log-level", "warning"])
            .arg("-b")
            .arg(self.addr.to_string())
            .args(&self.extra_args)
            .arg("--chdir")
            .arg(&app_dir)
            .arg(&self.app)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("TASKS_DB", self.dir.path().join("tasks.db"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("gunicorn must be installed (.ci/run installs it with pip)");
        self.child = Some(child);
        if !super::wait_for_port(self.addr, Duration::from_secs(30)) {
            panic!("gunicorn did not start: {}", self.log());
        }
    }

    /// gunicorn's error log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gunicorn.log")).unwrap_or_default()
    }

    /// Stops gunicorn (SIGTERM, then SIGKILL after 10 s) and waits until the port is closed.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        // The workers exit with the master; wait until none accepts any more.
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(10)
            && std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok()
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Gunicorn {
    fn drop(&mut self) {
        self.stop();
    }
}
