//! The connection cap: how many client connections may be open at once, and the count that
//! admits them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The largest `max_connections` accepted.
pub const MAX_CONNECTIONS: usize = 10_000_000;

/// Descriptors kept free of client connections for the rest of the process: upstream
/// connections, log files, Redis, config reloads.
const RESERVED_DESCRIPTORS: u64 = 256;

/// The open client connections of a server, against its `max_connections`.
#[derive(Debug)]
pub struct ConnectionCount {
    open: AtomicUsize,
    max: usize,
}

impl ConnectionCount {
    /// A count that admits at most `max` connections.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(ConnectionCount { open: AtomicUsize::new(0), max })
    }

    /// A slot for one more connection, or `None` when `max` are open.
    pub fn admit(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let previous = self.open.fetch_add(1, Ordering::AcqRel);
        if previous >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(ConnectionSlot { count: self.clone() })
    }

    /// The most connections admitted at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// One admitted connection; frees its slot when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    count: Arc<ConnectionCount>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.count.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The `max_connections` used when the config sets none: half the descriptors the process may
/// open, less a reserve, since a proxied connection also holds one to its upstream.
pub fn connection_cap(descriptor_limit: u64) -> usize {
    let cap = descriptor_limit.saturating_sub(RESERVED_DESCRIPTORS) / 2;
    usize::try_from(cap.clamp(1, MAX_CONNECTIONS as u64)).unwrap_or(MAX_CONNECTIONS)
}

/// The process's soft limit on open file descriptors (`None` where it cannot be read).
pub fn descriptor_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rlimit::getrlimit(rlimit::Resource::NOFILE).ok().map(|(soft, _)| soft)
    }
    #[cfg(not(unix))]
    None
}

/// Counts events that must not each be logged (refused connections, failed accepts) and logs
/// their number at most once per interval.
#[derive(Debug)]
pub struct LogEvery {
    interval: Duration,
    last: Option<Instant>,
    pending: u64,
}

impl LogEvery {
    /// A counter that reports at most once per `interval`.
    pub fn new(interval: Duration) -> Self {
        LogEvery { interval, last: None, pending: 0 }
    }

    /// Counts one event; returns the number to report when one is due (this one included).
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        self.pending += 1;
        if self.last.is_some_and(|last| now.saturating_duration_since(last) < self.interval) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    #[test]
    fn the_count_admits_up_to_its_maximum_and_frees_slots_on_drop() {
        let count = ConnectionCount::new(2);
        let a = count.admit().unwrap();
        let _b = count.admit().unwrap();
        assert!(count.admit().is_none());
        assert_eq!(count.open(), 2);
        drop(a);
        assert!(count.admit().is_some());
    }

    #[test]
    fn the_default_cap_leaves_room_for_upstream_connections() {
        assert_eq!(connection_cap(20_000), 9_872);
        assert_eq!(connection_cap(100), 1);
        assert_eq!(connection_cap(u64::MAX), MAX_CONNECTIONS);
    }

    #[tokio::test(start_paused = true)]
    async fn log_every_reports_the_count_once_per_interval() {
        let mut log = LogEvery::new(Duration::from_secs(10));
        assert_eq!(log.hit(Instant::now()), Some(1));
        assert_eq!(log.hit(Instant::now()), None);
        assert_eq!(log.hit(Instant::now()), None);
        advance(Duration::from_secs(10)).await;
        assert_eq!(log.hit(Instant::now()), Some(3));
    }
}
