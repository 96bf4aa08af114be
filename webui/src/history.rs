//! What the poller derives from one sample to the next, beyond rates: the
//! receive latency of the last second (from the difference of two
//! cumulative histograms) and the bond's failover history (from the
//! differences of two bond states). Pure functions of the samples, so the
//! tests drive them with made-up sequences.

use std::collections::VecDeque;

use gazelle_ctl_proto::{bucket_bounds, BondStatus, RxLatency};
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

/// One move of the bond's traffic from a port to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Failover {
    /// When the poller saw it, ms since the Unix epoch (within a second
    /// of when ltran made it).
    pub at_unix_ms: u64,
    /// The port that carried traffic before (none: no link was up).
    pub from: Option<String>,
    /// The port that carries it now (none: no link is up).
    pub to: Option<String>,
    /// Why, as far as the two states tell.
    pub reason: String,
}

/// Failovers kept.
pub const FAILOVERS_KEPT: usize = 50;

/// The bond's last failovers, newest first, from the bond states the
/// poller reads once a second.
#[derive(Debug, Default)]
pub struct BondHistory {
    last: Option<BondStatus>,
    failovers: VecDeque<Failover>,
}

fn port_name(b: &BondStatus, i: Option<usize>) -> Option<String> {
    let p = b.ports.get(i?)?;
    Some(match &p.iface {
        Some(iface) => format!("{} ({iface})", p.name),
        None => p.name.clone(),
    })
}

impl BondHistory {
    /// Compares `now` with the state seen before and records a failover
    /// when the active port changed or ltran counted more failovers.
    pub fn observe(&mut self, at_unix_ms: u64, now: &BondStatus) {
        let Some(before) = self.last.replace(now.clone()) else {
            return;
        };
        // ltran restarted (its counter fell): a new bond, not a failover.
        if now.failovers < before.failovers {
            return;
        }
        let counted = now.failovers - before.failovers;
        let from = port_name(&before, before.active);
        let to = port_name(now, now.active);
        if from == to && counted == 0 {
            return;
        }
        let link_of =
            |b: &BondStatus, i: Option<usize>| i.and_then(|i| b.ports.get(i)).map(|p| p.link_up);
        let mut reason = match (before.active, now.active) {
            (Some(_), None) => "every link went down".to_owned(),
            (None, Some(_)) => format!("link up on {}", to.as_deref().unwrap_or("?")),
            _ if link_of(now, before.active) == Some(false) => {
                format!("link down on {}", from.as_deref().unwrap_or("?"))
            }
            _ if from == to => "traffic moved away and back within a second".to_owned(),
            _ => "ltran moved the traffic (links unchanged)".to_owned(),
        };
        if counted > 1 {
            reason.push_str(&format!(
                "; ltran counted {counted} failovers since the last look"
            ));
        }
        self.failovers.push_front(Failover {
            at_unix_ms,
            from,
            to,
            reason,
        });
        self.failovers.truncate(FAILOVERS_KEPT);
    }

    /// ltran did not answer: the next state starts afresh.
    pub fn lost(&mut self) {
        self.last = None;
    }

    /// The failovers kept, newest first.
    pub fn failovers(&self) -> Vec<Failover> {
        self.failovers.iter().cloned().collect()
    }
}
