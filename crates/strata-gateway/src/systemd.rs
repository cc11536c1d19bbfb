//! systemd's service notifications (`sd_notify(3)`), for units of `Type=notify`.
//!
//! systemd passes a unix datagram socket in `NOTIFY_SOCKET` (a path, or `@name` for an abstract
//! socket); each notification is one datagram of `KEY=VALUE` lines. strata sends:
//!
//! - `READY=1` once its listener is bound, so units ordered after it start only when it accepts
//!   connections;
//! - `RELOADING=1` with `MONOTONIC_USEC=…` when a reload begins, and `READY=1` when it ended (the new
//!   config swapped in or rejected), so `systemctl reload` returns when the reload is done;
//! - `STOPPING=1` when the graceful shutdown begins.
//!
//! Without `NOTIFY_SOCKET` (not started by systemd) every call does nothing. A failure to send is
//! logged and otherwise ignored: notifications must never stop the server.

use std::io;

/// The variable systemd sets to the notification socket's address.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// `READY=1`: startup or a reload is complete. `status` is shown by `systemctl status`.
pub fn ready(status: &str) {
    send_logged(&format!("READY=1\nSTATUS={}", one_line(status)));
}

/// `RELOADING=1` with the monotonic time systemd uses to match it with the reload it started.
pub fn reloading() {
    let mut message = String::from("RELOADING=1\nSTATUS=reloading the config");
    if let Some(usec) = monotonic_usec() {
        message.push_str(&format!("\nMONOTONIC_USEC={usec}"));
    }
    send_logged(&message);
}

/// `STOPPING=1`: the graceful shutdown has begun.
pub fn stopping() {
    send_logged("STOPPING=1\nSTATUS=stopping: finishing in-flight requests");
}

/// Sends `message` to `NOTIFY_SOCKET`. `Ok(false)` when the variable is unset (nothing to do).
pub fn notify(message: &str) -> io::Result<bool> {
    let Some(address) = std::env::var_os(NOTIFY_SOCKET) else {
        return Ok(false);
    };
    send(&address, message)?;
    Ok(true)
}

fn send_logged(message: &str) {
    if let Err(error) = notify(message) {
        // The first line names the notification; the rest is status text.
        let what = message.lines().next().unwrap_or_default();
        tracing::warn!(%error, notification = what, "cannot notify systemd");
    }
}

#[cfg(unix)]
fn send(address: &std::ffi::OsStr, message: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::UnixDatagram;

    let bytes = address.as_bytes();
    let socket = UnixDatagram::unbound()?;
    let sent = match bytes.first() {
        Some(b'/') => socket.send_to(message.as_bytes(), std::path::Path::new(address))?,
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Some(b'@') => {
            #[cfg(target_os = "android")]
            use std::os::android::net::SocketAddrExt;
            #[cfg(target_os = "linux")]
            use std::os::linux::net::SocketAddrExt;
            // `@name` is the abstract name `name`: a leading NUL byte, not a file.
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(&bytes[1..])?;
            socket.send_to_addr(message.as_bytes(), &addr)?
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{NOTIFY_SOCKET}={}: expected an absolute path or @abstract-name", address.to_string_lossy()),
            ));
        }
    };
    if sent != message.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "the notification was truncated"));
    }
    Ok(())
}

#[cfg(not(unix))]
fn send(_address: &std::ffi::OsStr, _message: &str) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "systemd notifications need unix sockets"))
}

/// `CLOCK_MONOTONIC` in microseconds, as systemd reads it (`std::time::Instant` does not expose it).
#[cfg(unix)]
fn monotonic_usec() -> Option<u64> {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(now.tv_sec).ok()?;
    let micros = u64::try_from(now.tv_nsec).ok()? / 1_000;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

#[cfg(not(unix))]
fn monotonic_usec() -> Option<u64> {
    None
}

/// Status text must stay on its line: a newline would start another `KEY=VALUE` assignment.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_cannot_add_assignments() {
        assert_eq!(one_line("a\nWATCHDOG=1\r"), "a WATCHDOG=1 ");
    }

    #[cfg(unix)]
    #[test]
    fn relative_and_unsupported_addresses_are_errors() {
        for address in ["relative.sock", "vsock:2:1234", ""] {
            let error = send(std::ffi::OsStr::new(address), "READY=1").unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::Unsupported, "{address}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = monotonic_usec().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = monotonic_usec().unwrap();
        assert!(b >= a + 2_000, "{a} then {b}");
    }
}
