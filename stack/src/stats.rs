//! Per-thread counters: written by one stack thread with relaxed atomics (no
//! locked instructions on x86 for plain stores of its own counters), read by
//! anyone. These feed `gazellectl lstack show` and the web UI.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{classify::DropReason, mib::Mib};

/// Counters of one stack thread.
#[derive(Debug, Default)]
pub struct ThreadStats {
    /// Frames received from the NIC queue.
    pub rx_packets: Counter,
    /// Bytes received from the NIC queue.
    pub rx_bytes: Counter,
    /// Frames handed to the NIC queue.
    pub tx_packets: Counter,
    /// Bytes handed to the NIC queue.
    pub tx_bytes: Counter,
    /// Frames dropped because the NIC queue stayed full.
    pub tx_dropped: Counter,
    /// Transmits that found the mbuf pool empty.
    pub tx_nombuf: Counter,
    /// Frames another stack thread's queue received for this one.
    pub steered_in: Counter,
    /// Frames dropped because the owning thread's steering queue was full.
    pub steer_dropped: Counter,
    /// Connection requests refused: `tcp_conn_count` reached.
    pub conn_limit_refused: Counter,
    /// Connection requests dropped: the listener's accept queue was full.
    pub accept_overflow: Counter,
    /// Connections established (accepted or connected).
    pub tcp_established: Counter,
    /// Loop iterations that found nothing to do.
    pub idle_loops: Counter,
    /// Times the thread slept because it was idle.
    pub sleeps: Counter,
    /// Panics the thread caught and survived (each one is a bug to report).
    pub panics: Counter,
    /// MIB-2 counters (`gazellectl lstack show -s`).
    pub mib: Mib,
    drops: [Counter; DropReason::COUNT],
}

impl ThreadStats {
    /// Counts a dropped frame.
    #[inline]
    pub fn drop_frame(&self, reason: DropReason) {
        self.drops[reason.index()].incr();
    }

    /// Frames dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()].get()
    }

    /// All drop counters, by reason.
    pub fn drops(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|r| (*r, self.dropped(*r)))
    }

    /// Sum of every drop counter.
    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().map(Counter::get).sum()
    }
}

/// A statistics counter with one writer.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    #[inline]
    pub fn incr(&self) {
        self.add(1);
    }

    /// Adds `n`. Only the owning thread writes, so load+store is enough and
    /// avoids a locked read-modify-write on the hot path.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}
