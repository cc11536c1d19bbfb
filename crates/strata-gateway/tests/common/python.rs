//! A Python script from `tests/upstream/` serving on a free loopback port.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_for_port};

/// `python3 tests/upstream/SCRIPT PORT`, listening on `addr`; stopped on drop.
pub struct PythonServer {
    child: Child,
    pub addr: SocketAddr,
}

impl PythonServer {
    /// Starts `tests/upstream/{script}` with a free port as its one argument and waits until it
    /// accepts connections.
    pub fn start(script: &str) -> PythonServer {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let path = format!("{}/tests/upstream/{script}", env!("CARGO_MANIFEST_DIR"));
        let child = Command::new("python3")
            .arg(path)
            .arg(addr.port().to_string())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let server = PythonServer { child, addr };
        assert!(wait_for_port(addr, Duration::from_secs(10)), "{script} did not start");
        server
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
