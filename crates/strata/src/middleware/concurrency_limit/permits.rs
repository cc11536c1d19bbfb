//! The counts behind a [`ConcurrencyLimit`](super::ConcurrencyLimit): one fair semaphore per key
//! (a single one for a global limit) with its bounded queue, the sharded map that forgets a key as
//! soon as its last request ends, and the response body that holds a permit until it ends.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::Semaphore;

use crate::http::{Body, BoxError};
use crate::middleware::key::Prehashed;

/// Shards of the per-key map: a shard is locked for one lookup, so contention needs two requests
/// landing in the same shard at the same instant.
const SHARDS: usize = 32;

/// The in-flight count of one key: `max` permits, and how many requests wait for one.
#[derive(Debug)]
pub(super) struct Slot {
    /// Fair: permits go to waiters in the order they came, and a newcomer never takes one while
    /// others wait.
    semaphore: Semaphore,
    waiting: AtomicUsize,
}

impl Slot {
    fn new(max: usize) -> Self {
        Slot { semaphore: Semaphore::new(max), waiting: AtomicUsize::new(0) }
    }
}

/// Why no permit was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// Every permit is taken and there is no queue.
    Full,
    /// Every permit is taken and the queue is full.
    QueueFull,
    /// The request waited `max_wait` in the queue without getting a permit.
    Waited,
}

/// Where the counts live.
#[derive(Debug)]
pub(super) enum Slots {
    /// One count for every request.
    Global(Arc<Slot>),
    /// One count per key, present while the key has requests in flight or waiting.
    PerKey(Arc<KeyedSlots>),
}

impl Slots {
    pub(super) fn global(max: usize) -> Self {
        Slots::Global(Arc::new(Slot::new(max)))
    }

    pub(super) fn per_key(max: usize) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::default()).collect();
        Slots::PerKey(Arc::new(KeyedSlots { shards, max }))
    }

    /// A claim on the count of `key` (a keyed hash; ignored by a global limit), which keeps a
    /// per-key entry alive until it is dropped.
    pub(super) fn lease(&self, key: u64) -> Lease {
        match self {
            Slots::Global(slot) => Lease { slot: slot.clone(), entry: None },
            Slots::PerKey(keyed) => keyed.lease(key),
        }
    }

    /// How many keys have requests in flight or waiting (always 0 for a global limit).
    pub(super) fn keys(&self) -> usize {
        match self {
            Slots::Global(_) => 0,
            Slots::PerKey(keyed) => keyed.shards.iter().map(|s| lock(s).len()).sum(),
        }
    }

    /// How many requests hold a permit right now, over every key.
    pub(super) fn in_flight(&self, max: usize) -> usize {
        match self {
            Slots::Global(slot) => max - slot.semaphore.available_permits(),
            Slots::PerKey(keyed) => keyed
                .shards
                .iter()
                .map(|s| lock(s).values().map(|e| max - e.slot.semaphore.available_permits()).sum::<usize>())
                .sum(),
        }
    }
}

type Map = HashMap<u64, Entry, BuildHasherDefault<Prehashed>>;

/// The per-key counts.
#[derive(Debug)]
pub(super) struct KeyedSlots {
    shards: Box<[Mutex<Map>]>,
    max: usize,
}

/// One key's count, and how many leases (requests in flight or waiting) keep it.
#[derive(Debug)]
struct Entry {
    slot: Arc<Slot>,
    leases: usize,
}

impl KeyedSlots {
    fn shard(&self, key: u64) -> &Mutex<Map> {
        // The keys are keyed hashes: their low bits are as uniform as any.
        &self.shards[(key as usize) % SHARDS]
    }

    fn lease(self: &Arc<Self>, key: u64) -> Lease {
        let mut shard = lock(self.shard(key));
        let entry = shard.entry(key).or_insert_with(|| Entry { slot: Arc::new(Slot::new(self.max)), leases: 0 });
        entry.leases += 1;
        Lease { slot: entry.slot.clone(), entry: Some((self.clone(), key)) }
    }

    fn release(&self, key: u64) {
        let mut shard = lock(self.shard(key));
        if let Some(entry) = shard.get_mut(&key) {
            entry.leases -= 1;
            // A key with nothing in flight and nobody waiting is exactly like an absent key.
            if entry.leases == 0 {
                shard.remove(&key);
            }
        }
    }
}

/// The map's critical sections never panic midway, so a poisoned lock still holds a consistent map.
fn lock(shard: &Mutex<Map>) -> std::sync::MutexGuard<'_, Map> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A claim on one key's count: keeps its entry in the map while it lives.
#[derive(Debug)]
pub(super) struct Lease {
    slot: Arc<Slot>,
    entry: Option<(Arc<KeyedSlots>, u64)>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some((keyed, key)) = &self.entry {
            keyed.release(*key);
        }
    }
}

impl Lease {
    /// A permit at once when one is free; otherwise a place in the queue (at most `queue` wait)
    /// for at most `max_wait`. Dropping the future (the client went away) leaves the queue.
    pub(super) async fn acquire(self, queue: usize, max_wait: Duration) -> Result<Permit, Refused> {
        // A semaphore closes only when told to, and this one never is.
        if self.slot.semaphore.try_acquire().map(|permit| permit.forget()).is_ok() {
            return Ok(Permit { lease: self });
        }
        if queue == 0 {
            return Err(Refused::Full);
        }
        let joined =
            self.slot.waiting.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| (w < queue).then_some(w + 1));
        if joined.is_err() {
            return Err(Refused::QueueFull);
        }
        let waiting = Waiting(self.slot.clone());
        let acquired = match tokio::time::timeout(max_wait, self.slot.semaphore.acquire()).await {
            Ok(Ok(permit)) => {
                permit.forget();
                Ok(())
            }
            Ok(Err(_closed)) => Err(Refused::Full),
            Err(_elapsed) => Err(Refused::Waited),
        };
        drop(waiting);
        acquired.map(|()| Permit { lease: self })
    }
}

/// A place in a slot's queue, given up when dropped (admitted, timed out, or the request dropped).
struct Waiting(Arc<Slot>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One request's permit: returned to its key's count when dropped.
#[derive(Debug)]
pub(super) struct Permit {
    lease: Lease,
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Before the lease's own drop, which may remove the key's entry: the next waiter (if any)
        // gets the permit, and keeps the entry alive with its own lease.
        self.lease.slot.semaphore.add_permits(1);
    }
}

/// A response body that holds its request's permit until it ends, fails or is dropped (the
/// client went away): a streaming response counts as in flight for as long as it streams.
pub(super) struct PermitBody {
    inner: Body,
    permit: Option<Permit>,
}

impl PermitBody {
    pub(super) fn new(inner: Body, permit: Permit) -> Self {
        PermitBody { inner, permit: Some(permit) }
    }
}

impl http_body::Body for PermitBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None | Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => http_body::Body::is_end_stream(&this.inner),
            Poll::Pending => false,
        };
        if ended {
            this.permit = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
