//! Failed logins per client: after `max_failures` failures within `failure_window` from one client
//! address, its further attempts are refused (429) before any hash is checked, so one client cannot
//! spend the verification threads' CPU on guesses.
//!
//! - **An attempt is charged before it is verified**, and given back if the password was right. So
//!   a client sending many wrong passwords at once is held to `max_failures` verifications too, not
//!   only one that sends them one after another.
//! - **A window starts at a client's first failure** and ends `failure_window` later; the count then
//!   starts again from zero. A refused client is told when that is (`Retry-After`).
//! - **A success gives back only its own charge**: it does not forget earlier failures, so someone
//!   holding one valid account cannot reset their count between guesses at another. Failures of
//!   one client never count against another.
//! - **IPv6 clients are counted per /64**: one host usually holds a whole /64 and could otherwise
//!   change address for every guess.
//! - **Bounded memory**: at most [`CAPACITY`] clients are tracked (a few MiB), in shards with one
//!   short-held lock each. A full shard drops expired entries first, then the one whose window began
//!   longest ago (it would be the next to expire anyway). A client whose attempts all succeeded
//!   leaves no entry.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How many clients the table tracks at most.
pub(super) const CAPACITY: usize = 65_536;
const SHARDS: usize = 16;

/// The failure counts of recent clients.
pub(super) struct FailureLimit {
    max_failures: u32,
    window: Duration,
    shards: Box<[Mutex<HashMap<IpAddr, Record>>]>,
    per_shard: usize,
    /// Picks a client's shard; random per layer so nobody can aim many addresses at one shard.
    shard_hasher: RandomState,
}

/// One client's failures in its current window.
struct Record {
    /// When the window began (the first charged attempt).
    since: Instant,
    /// Failures so far, including attempts still being verified.
    failures: u32,
    /// Whether a refusal in this window was logged already.
    logged: bool,
}

/// An attempt charged to a client while it is verified; [`FailureLimit::refund`] it on success.
#[must_use = "a charge that is dropped stays a failure"]
pub(super) struct Charge {
    client: IpAddr,
    since: Instant,
}

/// Why a client's attempt is refused without being verified.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Refusal {
    /// Until the client's window ends.
    pub(super) retry_after: Duration,
    /// Whether this is the first refusal of the window (worth one log line).
    pub(super) first: bool,
}

impl FailureLimit {
    /// `max_failures` must be at least 1 and `window` non-zero (the builder checks both).
    pub(super) fn new(max_failures: u32, window: Duration, capacity: usize) -> FailureLimit {
        let shards = capacity.clamp(1, SHARDS);
        FailureLimit {
            max_failures,
            window,
            shards: (0..shards).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(shards),
            shard_hasher: RandomState::new(),
        }
    }

    /// The failures allowed per window.
    pub(super) fn max_failures(&self) -> u32 {
        self.max_failures
    }

    /// How long a window lasts.
    pub(super) fn window(&self) -> Duration {
        self.window
    }

    /// What failures are counted under: the address, or for IPv6 its /64.
    pub(super) fn key_of(client: IpAddr) -> IpAddr {
        match client.to_canonical() {
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::from(u64::MAX)))),
            v4 => v4,
        }
    }

    /// Refuses a client that used up its failures, without charging it (for credentials answered
    /// from the cache: cheap, but a refused client gets no answer about its password either way).
    pub(super) fn check(&self, client: IpAddr, now: Instant) -> Result<(), Refusal> {
        let key = Self::key_of(client);
        let mut shard = self.shard(&key);
        match shard.get_mut(&key) {
            Some(record) if self.is_current(record, now) && record.failures >= self.max_failures => {
                Err(self.refusal(record, now))
            }
            _ => Ok(()),
        }
    }

    /// Charges one attempt to `client`, or refuses it when it used up its failures.
    pub(super) fn charge(&self, client: IpAddr, now: Instant) -> Result<Charge, Refusal> {
        let key = Self::key_of(client);
        let mut shard = self.shard(&key);
        if let Some(record) = shard.get_mut(&key) {
            if self.is_current(record, now) {
                if record.failures >= self.max_failures {
                    return Err(self.refusal(record, now));
                }
                record.failures += 1;
                return Ok(Charge { client: key, since: record.since });
            }
            *record = Record { since: now, failures: 1, logged: false };
            return Ok(Charge { client: key, since: now });
        }
        if shard.len() >= self.per_shard {
            shard.retain(|_, r| self.is_current(r, now));
            if shard.len() >= self.per_shard {
                // Only for a client not seen in a while, before a full hash verification.
                if let Some(oldest) = shard.iter().min_by_key(|(_, r)| r.since).map(|(k, _)| *k) {
                    shard.remove(&oldest);
                }
            }
        }
        shard.insert(key, Record { since: now, failures: 1, logged: false });
        Ok(Charge { client: key, since: now })
    }

    /// The charged attempt succeeded (or was never verified): it is not a failure.
    pub(super) fn refund(&self, charge: Charge) {
        let mut shard = self.shard(&charge.client);
        if let Some(record) = shard.get_mut(&charge.client) {
            // A newer window does not owe this charge anything.
            if record.since == charge.since {
                record.failures = record.failures.saturating_sub(1);
                if record.failures == 0 {
                    shard.remove(&charge.client);
                }
            }
        }
    }

    fn is_current(&self, record: &Record, now: Instant) -> bool {
        now.saturating_duration_since(record.since) < self.window
    }

    fn refusal(&self, record: &mut Record, now: Instant) -> Refusal {
        let retry_after = self.window.saturating_sub(now.saturating_duration_since(record.since));
        let first = !record.logged;
        record.logged = true;
        Refusal { retry_after, first }
    }

    fn shard(&self, key: &IpAddr) -> MutexGuard<'_, HashMap<IpAddr, Record>> {
        // Truncation is fine: any bits of a uniform hash pick a uniform shard.
        let index = self.shard_hasher.hash_one(key) as usize % self.shards.len();
        // No code that can panic runs under the lock, so a poisoned one is still consistent.
        self.shards[index].lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_client_is_refused_after_its_failures_until_the_window_ends() {
        let limit = FailureLimit::new(3, Duration::from_secs(60), 100);
        let t0 = Instant::now();
        let client = ip("203.0.113.7");
        for i in 0..3 {
            let _failed = limit.charge(client, t0 + Duration::from_secs(i)).expect("within the allowance");
        }
        let refusal = limit.charge(client, t0 + Duration::from_secs(10)).err().unwrap();
        assert_eq!(refusal, Refusal { retry_after: Duration::from_secs(50), first: true });
        let again = limit.charge(client, t0 + Duration::from_secs(20)).err().unwrap();
        assert_eq!(again, Refusal { retry_after: Duration::from_secs(40), first: false });
        assert_eq!(limit.check(client, t0 + Duration::from_secs(59)).unwrap_err().retry_after, Duration::from_secs(1));
        // Another client is unaffected.
        assert!(limit.check(ip("203.0.113.8"), t0).is_ok());
        let _other = limit.charge(ip("203.0.113.8"), t0).unwrap();
        // The window began at the first failure; once it is over, the count starts again.
        let later = t0 + Duration::from_secs(60);
        assert!(limit.check(client, later).is_ok());
        let _failed = limit.charge(client, later).unwrap();
        assert!(limit.charge(client, later).is_ok() && limit.charge(client, later).is_ok());
        assert!(limit.charge(client, later).is_err());
    }

    #[test]
    fn a_success_gives_back_its_own_charge_only() {
        let limit = FailureLimit::new(2, Duration::from_secs(60), 100);
        let t0 = Instant::now();
        let client = ip("198.51.100.1");
        let _failed = limit.charge(client, t0).unwrap();
        let success = limit.charge(client, t0).unwrap();
        limit.refund(success);
        // One failure remains: one more attempt, then refused.
        let _failed = limit.charge(client, t0).unwrap();
        assert!(limit.charge(client, t0).is_err());
        assert!(limit.check(client, t0).is_err(), "refused even with credentials from the cache");

        // Only successes: no entry stays behind.
        let fresh = ip("198.51.100.2");
        let charge = limit.charge(fresh, t0).unwrap();
        assert_eq!(limit.len(), 2);
        limit.refund(charge);
        assert_eq!(limit.len(), 1);

        // A charge from an expired window does not reduce the new window's count.
        let old = limit.charge(fresh, t0).unwrap();
        let later = t0 + Duration::from_secs(61);
        let _f1 = limit.charge(fresh, later).unwrap();
        let _f2 = limit.charge(fresh, later).unwrap();
        limit.refund(old);
        assert!(limit.charge(fresh, later).is_err());
    }

    #[test]
    fn ipv6_clients_count_per_64_and_mapped_ipv4_as_ipv4() {
        let limit = FailureLimit::new(1, Duration::from_secs(60), 100);
        let t0 = Instant::now();
        let _failed = limit.charge(ip("2001:db8:1:2::1"), t0).unwrap();
        assert!(limit.charge(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), t0).is_err(), "same /64");
        assert!(limit.charge(ip("2001:db8:1:3::1"), t0).is_ok(), "another /64");
        let _failed = limit.charge(ip("192.0.2.1"), t0).unwrap();
        assert!(limit.charge(ip("::ffff:192.0.2.1"), t0).is_err());
    }

    #[test]
    fn the_table_stays_bounded_and_evicts_the_oldest_windows() {
        let limit = FailureLimit::new(1, Duration::from_secs(60), 32);
        let t0 = Instant::now();
        let addr = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        for i in 0..1000 {
            let _failed = limit.charge(addr(i), t0 + Duration::from_millis(u64::from(i))).unwrap();
        }
        assert!(limit.len() <= 32, "{}", limit.len());
        let now = t0 + Duration::from_secs(1);
        assert!(limit.check(addr(999), now).is_err(), "the newest client is still tracked");
        assert!(limit.check(addr(0), now).is_ok(), "the oldest was evicted");
        // Expired entries go first, whatever their age.
        let later = t0 + Duration::from_secs(120);
        let _failed = limit.charge(ip("192.0.2.9"), later).unwrap();
        assert!(limit.check(ip("192.0.2.9"), later).is_err());
    }
}
