//! Connection-level limits. The connection watchdog, the connection cap and their counts belong to
//! the library's server ([`strata::server`], which the gateway's listeners run on); what is left
//! here is the process's part: raising the open-file limit the default cap is derived from.

pub use strata::server::{ConnectionCount, LogEvery, MAX_CONNECTIONS, TrackedBody, connection_cap, descriptor_limit};

/// Raises the soft limit on open file descriptors to the hard limit, as nginx's
/// `worker_rlimit_nofile` would be set by hand, and returns the limit in force (`None` where it
/// cannot be read).
pub fn raise_descriptor_limit() -> Option<u64> {
    #[cfg(unix)]
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(%error, "cannot raise the open-file limit");
    }
    descriptor_limit()
}
