//! Per-thread counters: written by one stack thread with relaxed atomics (no
//! locked instructions on x86 for plain stores of its own counters), read by
//! anyone. These feed `gazellectl lstack show` and the web UI.
//!
//! The exception is [`LatencyHistogram`]: application threads record into
//! it as they read, so it takes atomic read-modify-writes.

use std::sync::atomic::{AtomicU64, Ordering};

use gazelle_ctl_proto::{latency_bucket, RxLatency, LATENCY_BUCKETS};

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
    /// Handshakes in progress (SYN-RECEIVED) now: a gauge.
    pub half_open: Counter,
    /// Handshakes dropped to make room for newer ones: the thread's
    /// half-open table was full (a SYN flood, or clients that never finish).
    pub half_open_evicted: Counter,
    /// Handshakes dropped because they did not complete in time.
    pub half_open_expired: Counter,
    /// SYNs answered with a challenge instead of a socket (the half-open
    /// table was full and the source not proven).
    pub syn_challenges: Counter,
    /// Challenges answered: sources proven real.
    pub syn_challenges_answered: Counter,
    /// ICMP "fragmentation needed" / Packet Too Big messages that lowered
    /// a path MTU (RFC 1191, RFC 8201).
    pub pmtu_learned: Counter,
    /// Such messages ignored: they quoted no flow of ours, or a sequence
    /// number outside what is in flight (RFC 5927).
    pub pmtu_ignored: Counter,
    /// TCP segments cut to fit a lowered path MTU.
    pub pmtu_split: Counter,
    /// Frames handed to the kernel on the exception path (`kni_switch`,
    /// `flow_bifurcation`): its ports, ping, copies of ARP and NDP.
    pub kernel_rx: Counter,
    /// Frames the kernel sent out through this thread's NIC queue.
    pub kernel_tx: Counter,
    /// Frames for the kernel dropped: its queue stayed full, or no mbuf
    /// for a copy.
    pub kernel_dropped: Counter,
    /// Most frames read from the queue in one pass (at most
    /// `nic_read_number`).
    pub rx_pass_max: Counter,
    /// Most application requests taken in one pass (at most `rpc_number`).
    pub commands_pass_max: Counter,
    /// Loop iterations that found nothing to do.
    pub idle_loops: Counter,
    /// Times the thread slept because it was idle.
    pub sleeps: Counter,
    /// Panics the thread caught and survived (each one is a bug to report).
    pub panics: Counter,
    /// MIB-2 counters (`gazellectl lstack show -s`).
    pub mib: Mib,
    /// How long data received on this thread's sockets waited for the
    /// application's read (`gazellectl lstack show -l`).
    pub rx_latency: LatencyHistogram,
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

    /// Raises the value to `v` if it is lower: for a maximum, kept by its
    /// one writer.
    #[inline]
    pub fn raise(&self, v: u64) {
        if v > self.get() {
            self.set(v);
        }
    }

    /// Sets the value: for a gauge, which its one writer keeps current.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram of latencies in nanoseconds with log2 buckets (see
/// [`gazelle_ctl_proto::latency_bucket`]), plus count, sum, minimum and
/// maximum. Any thread may record: each field is one atomic add (or a
/// compare for the extremes, taken only when they move), and no lock.
#[derive(Debug)]
pub struct LatencyHistogram {
    count: AtomicU64,
    sum_ns: AtomicU64,
    min_ns: AtomicU64,
    max_ns: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS],
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
            min_ns: AtomicU64::new(u64::MAX),
            max_ns: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl LatencyHistogram {
    /// Records one latency of `ns` nanoseconds.
    #[inline]
    pub fn record(&self, ns: u64) {
        self.buckets[latency_bucket(ns)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        if ns < self.min_ns.load(Ordering::Relaxed) {
            self.min_ns.fetch_min(ns, Ordering::Relaxed);
        }
        if ns > self.max_ns.load(Ordering::Relaxed) {
            self.max_ns.fetch_max(ns, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// What it holds now, with its mean and percentiles.
    pub fn snapshot(&self) -> RxLatency {
        RxLatency::new(
            self.count.load(Ordering::Relaxed),
            self.sum_ns.load(Ordering::Relaxed),
            self.min_ns.load(Ordering::Relaxed),
            self.max_ns.load(Ordering::Relaxed),
            self.buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_records_what_the_summary_reports() {
        let h = LatencyHistogram::default();
        assert_eq!(h.snapshot(), RxLatency::default());
        for ns in [900, 1_100, 1_000, 250_000] {
            h.record(ns);
        }
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.sum_ns, 253_000);
        assert_eq!((s.min_ns, s.max_ns), (900, 250_000));
        assert_eq!(s.mean_ns, 63_250);
        assert_eq!(s.buckets.iter().sum::<u64>(), 4);
        assert_eq!(s.buckets[latency_bucket(1_000)], 2);
        assert!(s.min_ns <= s.p50_ns && s.p50_ns <= s.p99_ns && s.p99_ns <= s.max_ns);
    }

    #[test]
    fn concurrent_readers_lose_no_sample() {
        let h = std::sync::Arc::new(LatencyHistogram::default());
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let h = std::sync::Arc::clone(&h);
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        h.record(t * 1_000 + i % 7);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = h.snapshot();
        assert_eq!(s.count, 40_000);
        assert_eq!(s.buckets.iter().sum::<u64>(), 40_000);
        assert_eq!((s.min_ns, s.max_ns), (0, 3_006));
    }
}
