//! Per-layer timing of one request: the [`LayerTimer`] a timed call or a timing layer reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long each layer took for one request, from a timed point inward (see [`Next::timed`](super::Next::timed) and
/// [`Service::call_timed`](super::Service::call_timed)). Cloning is cheap: clones read the same measurements.
#[derive(Clone, Debug)]
pub struct LayerTimer {
    // The chain index of the first layer this view reports.
    pub(super) from: usize,
    pub(super) slots: Arc<TimerSlots>,
}

/// The measurements of one timed request, shared by the [`LayerTimer`] views of it.
#[derive(Debug)]
pub(super) struct TimerSlots {
    // The chain index of slot 0.
    first: usize,
    // Every name of the chain (layers, then "app"); slot `i` is `names[first + i]`.
    names: Arc<[Arc<str>]>,
    // When the timer was made: the origin of `started`.
    origin: Instant,
    // Per slot, when the layer was entered, in nanoseconds after `origin`, plus one (0: never
    // entered). Atomics, because a layer may run its inner layers on another task.
    started: Box<[AtomicU64]>,
    // Per slot, the time from entering the layer until its response came back, inner layers included.
    inclusive_nanos: Box<[AtomicU64]>,
}

impl TimerSlots {
    pub(super) fn new(names: Arc<[Arc<str>]>, first: usize) -> Arc<TimerSlots> {
        let slots = names.len() - first;
        Arc::new(TimerSlots {
            first,
            names,
            origin: Instant::now(),
            started: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            inclusive_nanos: (0..slots).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    pub(super) fn enter(self: &Arc<Self>, index: usize) -> Timing {
        let started = Instant::now();
        if let Some(slot) = index.checked_sub(self.first).and_then(|i| self.started.get(i)) {
            slot.store(nanos(started.saturating_duration_since(self.origin)).saturating_add(1), Ordering::Relaxed);
        }
        Timing { timer: self.clone(), index, started }
    }

    pub(super) fn add(&self, index: usize, elapsed: Duration) {
        if let Some(slot) = index.checked_sub(self.first).and_then(|i| self.inclusive_nanos.get(i)) {
            slot.fetch_add(nanos(elapsed), Ordering::Relaxed);
        }
    }

    fn inclusive(&self, slot: usize) -> u64 {
        self.inclusive_nanos.get(slot).map_or(0, |n| n.load(Ordering::Relaxed))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One timed layer (or the endpoint) of one request, as [`LayerTimer::layers`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerTime<'a> {
    /// The layer's name, or `"app"` for the endpoint.
    pub name: &'a str,
    /// When the request entered the layer, after the timer was made; `None`: it never got there
    /// (a layer further out answered by itself).
    pub entered: Option<Duration>,
    /// From entering the layer until its response came back, the layers inside it included.
    pub inclusive: Duration,
    /// The time spent in the layer alone: `inclusive` minus the inner layers' `inclusive`.
    pub exclusive: Duration,
}

impl LayerTimer {
    // The slot of the first layer this view reports.
    fn start(&self) -> usize {
        self.from - self.slots.first
    }

    /// Each timed layer (outermost first, then `"app"` for the endpoint) with the time spent in it
    /// alone: its own time minus the time of the layers inside it.
    pub fn exclusive(&self) -> impl Iterator<Item = (&str, Duration)> {
        self.layers().map(|t| (t.name, t.exclusive))
    }

    /// Each timed layer, outermost first, then `"app"` for the endpoint: when it was entered, and
    /// its time with and without the layers inside it.
    pub fn layers(&self) -> impl Iterator<Item = LayerTime<'_>> {
        let slots = &*self.slots;
        (self.start()..slots.started.len()).map(move |i| {
            let inclusive = slots.inclusive(i);
            let started = slots.started[i].load(Ordering::Relaxed);
            LayerTime {
                name: &slots.names[slots.first + i],
                entered: started.checked_sub(1).map(Duration::from_nanos),
                inclusive: Duration::from_nanos(inclusive),
                exclusive: Duration::from_nanos(inclusive.saturating_sub(slots.inclusive(i + 1))),
            }
        })
    }

    /// The position (among [`LayerTimer::layers`]) of the layer that answered the request by
    /// itself: the innermost one the request reached. It is the last position, the endpoint's,
    /// when the request went all the way through; `None` before the request entered any layer.
    pub fn answered_by(&self) -> Option<usize> {
        let slots = &*self.slots;
        (self.start()..slots.started.len())
            .rev()
            .find(|&i| slots.started[i].load(Ordering::Relaxed) != 0)
            .map(|i| i - self.start())
    }

    /// When the timer was made (for [`Service::call_timed`](super::Service::call_timed), just before the first layer ran):
    /// [`LayerTime::entered`] counts from here.
    pub fn origin(&self) -> Instant {
        self.slots.origin
    }

    /// The time of the first timed layer, everything inside it included.
    pub fn total(&self) -> Duration {
        Duration::from_nanos(self.slots.inclusive(self.start()))
    }
}

pub(super) struct Timing {
    pub(super) timer: Arc<TimerSlots>,
    pub(super) index: usize,
    pub(super) started: Instant,
}
