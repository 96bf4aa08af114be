//! Receive-to-application latency of an lstack (`gazellectl lstack show
//! <ip> -l`): how long received data waited between the stack taking its
//! frame off the NIC queue and the application's read that returned it.
//!
//! The stack keeps a log2 histogram per stack thread: bucket 0 counts reads
//! that waited 0 ns, bucket `i` (1..=63) those that waited `2^(i-1)` to
//! `2^i - 1` ns (bucket 63 everything above). Percentiles are estimated from
//! the buckets, interpolating inside the one that holds the rank and keeping
//! the estimate between the exact minimum and maximum; so they are within a
//! factor of two of the truth, and exact when every sample is equal.

use serde::{Deserialize, Serialize};

/// Buckets of a latency histogram.
pub const LATENCY_BUCKETS: usize = 64;

/// The bucket of a latency of `ns` nanoseconds.
#[inline]
pub fn latency_bucket(ns: u64) -> usize {
    ((u64::BITS - ns.leading_zeros()) as usize).min(LATENCY_BUCKETS - 1)
}

/// The smallest and largest latency, in ns, bucket `i` holds.
pub fn bucket_bounds(i: usize) -> (u64, u64) {
    match i {
        0 => (0, 0),
        i if i >= LATENCY_BUCKETS - 1 => (1 << (LATENCY_BUCKETS - 2), u64::MAX),
        i => (1 << (i - 1), (1 << i) - 1),
    }
}

/// The latency of one stack thread's reads (or of all threads').
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RxLatency {
    /// Reads measured: reads that returned data whose arrival time the
    /// stack knew.
    pub count: u64,
    /// Sum of their latencies, ns.
    pub sum_ns: u64,
    /// Smallest latency, ns (0 with no reads).
    pub min_ns: u64,
    /// Largest latency, ns.
    pub max_ns: u64,
    /// Mean latency, ns.
    pub mean_ns: u64,
    /// Median, estimated from the buckets, ns.
    pub p50_ns: u64,
    /// 90th percentile, estimated from the buckets, ns.
    pub p90_ns: u64,
    /// 99th percentile, estimated from the buckets, ns.
    pub p99_ns: u64,
    /// Reads per bucket (see the module documentation), up to the last
    /// bucket that is not empty.
    pub buckets: Vec<u64>,
}

impl RxLatency {
    /// The summary of a histogram read from a stack thread. The parts are
    /// read one by one while readers go on recording, so they may disagree
    /// slightly; the mean is kept between the minimum and the maximum and the
    /// percentiles are taken over the buckets.
    pub fn new(count: u64, sum_ns: u64, min_ns: u64, max_ns: u64, mut buckets: Vec<u64>) -> Self {
        while buckets.last() == Some(&0) {
            buckets.pop();
        }
        if count == 0 || buckets.is_empty() {
            return RxLatency {
                buckets,
                ..Default::default()
            };
        }
        let min_ns = min_ns.min(max_ns);
        let mut r = RxLatency {
            count,
            sum_ns,
            min_ns,
            max_ns,
            mean_ns: (sum_ns / count).clamp(min_ns, max_ns),
            buckets,
            ..Default::default()
        };
        r.p50_ns = r.percentile_ns(0.50);
        r.p90_ns = r.percentile_ns(0.90);
        r.p99_ns = r.percentile_ns(0.99);
        r
    }

    /// The histogram of these latencies (ns), built the way a stack thread
    /// records them: for tests and tools that make one up.
    pub fn from_samples(samples: &[u64]) -> RxLatency {
        let mut buckets = vec![0; LATENCY_BUCKETS];
        for &s in samples {
            buckets[latency_bucket(s)] += 1;
        }
        RxLatency::new(
            samples.len() as u64,
            samples.iter().sum(),
            samples.iter().copied().min().unwrap_or(0),
            samples.iter().copied().max().unwrap_or(0),
            buckets,
        )
    }

    /// Several threads' histograms as one.
    pub fn merge<'a>(parts: impl IntoIterator<Item = &'a RxLatency>) -> RxLatency {
        let (mut count, mut sum, mut min, mut max) = (0u64, 0u64, u64::MAX, 0u64);
        let mut buckets = Vec::new();
        for p in parts {
            if p.count == 0 {
                continue;
            }
            count += p.count;
            sum = sum.wrapping_add(p.sum_ns);
            min = min.min(p.min_ns);
            max = max.max(p.max_ns);
            if buckets.len() < p.buckets.len() {
                buckets.resize(p.buckets.len(), 0);
            }
            for (b, n) in buckets.iter_mut().zip(&p.buckets) {
                *b += n;
            }
        }
        RxLatency::new(count, sum, min, max, buckets)
    }

    /// The latency below which a fraction `p` (0..=1) of the reads fell,
    /// estimated from the buckets, ns; 0 with no reads.
    pub fn percentile_ns(&self, p: f64) -> u64 {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return 0;
        }
        // The rank of the read wanted, 1-based.
        let rank = ((p.clamp(0.0, 1.0) * total as f64).ceil() as u64).clamp(1, total);
        // The extremes are known exactly.
        if rank == 1 {
            return self.min_ns;
        }
        if rank == total {
            return self.max_ns;
        }
        let mut below = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 && below + n >= rank {
                let (lo, hi) = bucket_bounds(i);
                // Nothing was smaller than the minimum or larger than the
                // maximum: narrow the bucket to them.
                let lo = lo.max(self.min_ns).min(self.max_ns);
                let hi = hi.min(self.max_ns).max(lo);
                // Spread the bucket's reads evenly over its range.
                let within = if n == 1 {
                    0.5
                } else {
                    (rank - below - 1) as f64 / (n - 1) as f64
                };
                return lo + ((hi - lo) as f64 * within).round() as u64;
            }
            below += n;
        }
        self.max_ns
    }
}

/// Answer to [`Request::LstackLatency`](crate::Request::LstackLatency).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LstackLatency {
    /// Process id.
    pub pid: u32,
    /// Process name.
    pub process: String,
    /// The stack's IPv4 address, if any.
    pub ip: Option<String>,
    /// One entry per stack thread (reads of that thread's sockets).
    pub threads: Vec<RxLatency>,
    /// Every thread's reads together.
    pub total: RxLatency,
}

impl LstackLatency {
    /// Fills `total` from `threads`.
    pub fn with_total(mut self) -> Self {
        self.total = RxLatency::merge(&self.threads);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(samples: &[u64]) -> RxLatency {
        RxLatency::from_samples(samples)
    }

    #[test]
    fn buckets_cover_every_value_once() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(1), 1);
        assert_eq!(latency_bucket(2), 2);
        assert_eq!(latency_bucket(3), 2);
        assert_eq!(latency_bucket(1023), 10);
        assert_eq!(latency_bucket(1024), 11);
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
        for v in [0u64, 1, 5, 1000, 1 << 40, (1 << 62) + 3, u64::MAX] {
            let (lo, hi) = bucket_bounds(latency_bucket(v));
            assert!(lo <= v && v <= hi, "{v} outside bucket {lo}..={hi}");
        }
        // Adjacent buckets meet without a gap.
        for i in 1..LATENCY_BUCKETS {
            assert_eq!(bucket_bounds(i).0, bucket_bounds(i - 1).1 + 1, "bucket {i}");
        }
    }

    #[test]
    fn equal_samples_give_exact_percentiles() {
        let h = hist(&[1500; 100]);
        assert_eq!(h.count, 100);
        assert_eq!((h.min_ns, h.mean_ns, h.max_ns), (1500, 1500, 1500));
        assert_eq!((h.p50_ns, h.p90_ns, h.p99_ns), (1500, 1500, 1500));
    }

    #[test]
    fn percentiles_land_in_the_bucket_of_the_true_value() {
        // 90 reads of 100 ns, 9 of 5 µs, 1 of 2 ms.
        let mut s = vec![100u64; 90];
        s.extend([5_000; 9]);
        s.push(2_000_000);
        let h = hist(&s);
        let same_bucket = |est: u64, truth: u64| latency_bucket(est) == latency_bucket(truth);
        assert!(same_bucket(h.p50_ns, 100), "p50 {}", h.p50_ns);
        assert!(h.p50_ns >= 100, "never below the minimum: {}", h.p50_ns);
        assert!(same_bucket(h.p90_ns, 100), "p90 {}", h.p90_ns);
        assert!(same_bucket(h.p99_ns, 5_000), "p99 {}", h.p99_ns);
        assert_eq!(h.percentile_ns(1.0), 2_000_000);
        assert_eq!(h.mean_ns, (90 * 100 + 9 * 5_000 + 2_000_000) / 100);
        assert!(h.min_ns <= h.p50_ns && h.p50_ns <= h.p90_ns && h.p90_ns <= h.p99_ns);
        assert!(h.p99_ns <= h.max_ns);
        // Nothing after the last non-empty bucket is kept.
        assert_eq!(h.buckets.len(), latency_bucket(2_000_000) + 1);
    }

    #[test]
    fn percentiles_interpolate_within_a_bucket() {
        // 1024..=2047 ns, one read each: all in bucket 11.
        let s: Vec<u64> = (1024..2048).collect();
        let h = hist(&s);
        let p50 = h.percentile_ns(0.5);
        assert!((1500..=1560).contains(&p50), "{p50}");
        assert_eq!(h.percentile_ns(0.0), 1024);
        assert_eq!(h.percentile_ns(1.0), 2047);
    }

    #[test]
    fn no_reads_is_all_zero() {
        let h = hist(&[]);
        assert_eq!(h, RxLatency::default());
        assert_eq!(h.percentile_ns(0.99), 0);
        assert_eq!(RxLatency::merge(&[h.clone(), h]), RxLatency::default());
    }

    #[test]
    fn merging_threads_is_the_histogram_of_all_reads() {
        let a = [10u64, 20, 30, 4000];
        let b = [7u64, 70_000];
        let all: Vec<u64> = a.iter().chain(&b).copied().collect();
        let merged = LstackLatency {
            threads: vec![hist(&a), hist(&[]), hist(&b)],
            ..Default::default()
        }
        .with_total()
        .total;
        assert_eq!(merged, hist(&all));
        assert_eq!((merged.min_ns, merged.max_ns, merged.count), (7, 70_000, 6));
    }

    #[test]
    fn torn_reads_stay_consistent() {
        // The sum was read after a large sample the count misses.
        let mut buckets = vec![0; LATENCY_BUCKETS];
        buckets[latency_bucket(100)] = 1;
        let h = RxLatency::new(1, 100 + 1_000_000, 100, 100, buckets);
        assert_eq!(h.mean_ns, 100);
        assert!(h.min_ns <= h.mean_ns && h.mean_ns <= h.max_ns);
    }
}
