//! The stack's clock: nanoseconds since the stack started, read from the
//! CPU's time-stamp counter.
//!
//! Every loop of a stack thread and every timed read needs the time; the
//! TSC (which the EAL measured at start) costs a few nanoseconds where
//! `clock_gettime` costs tens and showed up in profiles of the stack thread.
//! On a CPU without an invariant TSC (or before the EAL knows its rate) the
//! clock falls back to the monotonic clock.

use std::time::Instant;

/// Time since a start, in nanoseconds; cheap to read from any thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    start: Instant,
    tsc: Option<Tsc>,
}

#[derive(Debug, Clone, Copy)]
struct Tsc {
    start: u64,
    /// Nanoseconds per tick, as a 32.32 fixed-point number.
    ns_per_tick: u64,
}

impl Clock {
    /// A clock starting now.
    pub(crate) fn new() -> Self {
        let hz = dpdk::tsc_hz();
        let tsc = (hz != 0 && invariant_tsc()).then(|| Tsc {
            start: dpdk::tsc_cycles(),
            ns_per_tick: ((1_000_000_000u128 << 32) / u128::from(hz)) as u64,
        });
        Self {
            start: Instant::now(),
            tsc,
        }
    }

    /// Nanoseconds since the clock started.
    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        match self.tsc {
            Some(t) => {
                let ticks = dpdk::tsc_cycles().wrapping_sub(t.start);
                ((u128::from(ticks) * u128::from(t.ns_per_tick)) >> 32) as u64
            }
            None => self.start.elapsed().as_nanos() as u64,
        }
    }
}

/// Whether the TSC ticks at a constant rate and does not stop in idle
/// states, so all CPUs' counters agree (`constant_tsc` and `nonstop_tsc`).
fn invariant_tsc() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
        c.lines()
            .find(|l| l.starts_with("flags"))
            .is_some_and(|l| l.contains(" constant_tsc") && l.contains(" nonstop_tsc"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_moves_forward_with_real_time() {
        let c = Clock::new();
        let a = c.now_ns();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = c.now_ns();
        assert!(b > a);
        // Within the bounds of a sleep, whichever source it reads.
        assert!(b - a >= 19_000_000, "{a} -> {b}");
    }
}
