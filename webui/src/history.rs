//! What the poller derives from one sample to the next, beyond rates: the
//! receive latency of the last second (from the difference of two
//! cumulative histograms). Pure functions of the samples, so the tests
//! drive them with made-up sequences.

use gazelle_ctl_proto::{bucket_bounds, RxLatency};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The receive latency of the reads of one interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LatencySecond {
    /// Reads measured in the interval.
    pub reads: u64,
    /// Their median latency, µs (estimated from the histogram's buckets).
    pub p50_us: f64,
    /// Their 99th percentile, µs (estimated from the histogram's buckets).
    pub p99_us: f64,
}

/// The reads recorded between two snapshots of the same cumulative
/// histogram; `None` when there were none, or when `now` is not a later
/// snapshot of `before` (the stack restarted: its counts fell).
pub fn latency_between(before: &RxLatency, now: &RxLatency) -> Option<RxLatency> {
    if now.count <= before.count || now.buckets.len() < before.buckets.len() {
        return None;
    }
    let mut buckets = Vec::with_capacity(now.buckets.len());
    for (i, &n) in now.buckets.iter().enumerate() {
        let b = before.buckets.get(i).copied().unwrap_or(0);
        buckets.push(n.checked_sub(b)?);
    }
    let first = buckets.iter().position(|&n| n > 0)?;
    let last = buckets.iter().rposition(|&n| n > 0)?;
    // The interval's own extremes are unknown: its outer buckets bound them
    // (and nothing was below the all-time minimum or above the maximum).
    let min = bucket_bounds(first).0.max(now.min_ns);
    let max = bucket_bounds(last).1.min(now.max_ns).max(min);
    Some(RxLatency::new(
        now.count - before.count,
        now.sum_ns.wrapping_sub(before.sum_ns),
        min,
        max,
        buckets,
    ))
}

impl LatencySecond {
    /// The summary of the reads of an interval (several stacks' merged).
    pub fn of(reads: &RxLatency) -> Option<Self> {
        (reads.count > 0).then(|| LatencySecond {
            reads: reads.count,
            p50_us: reads.p50_ns as f64 / 1000.0,
            p99_us: reads.p99_ns as f64 / 1000.0,
        })
    }
}
