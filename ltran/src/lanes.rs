//! Which instance rings the dispatcher visits, as bookkeeping over lane
//! numbers (no DPDK, so unit-tested here).
//!
//! A lane is one stack thread of one instance: its receive ring (ltran to
//! lstack) and its transmit ring (lstack to ltran).
//!
//! - [`Gathered`]: the lanes a receive burst gathered frames for, each
//!   listed once, so that each gets its frames in one ring enqueue and
//!   lanes that got nothing are not looked at.
//! - [`TxScan`]: which transmit rings to poll on a loop. Rings that moved
//!   frames recently ("hot") are polled on every loop; the others are
//!   probed a bounded number per loop, in rotation, so an idle ring is
//!   still found within `cold rings / probes` loops but a loop never
//!   costs a look at every ring of every instance.

use crate::conn_table::Slot;

/// Most stack threads (ring pairs) one instance may register.
pub const MAX_THREADS: u16 = 32;

/// A lane's number: `slot * MAX_THREADS + thread`.
pub type Lane = u32;

/// The lane of `slot`'s `thread` (below [`MAX_THREADS`]).
#[inline]
pub fn lane(slot: Slot, thread: u16) -> Lane {
    debug_assert!(thread < MAX_THREADS);
    slot * Lane::from(MAX_THREADS) + Lane::from(thread)
}

/// The slot and thread of `lane`.
#[inline]
pub fn split(lane: Lane) -> (Slot, u16) {
    (
        lane / Lane::from(MAX_THREADS),
        (lane % Lane::from(MAX_THREADS)) as u16,
    )
}

/// The lanes frames were gathered for since the last [`Gathered::pop`]
/// emptied it, each once. Sized at start for every possible lane: marking
/// never allocates.
#[derive(Debug)]
pub struct Gathered {
    marked: Vec<bool>,
    list: Vec<Lane>,
}

impl Gathered {
    /// Room for the lanes of `max_instances` instances.
    pub fn new(max_instances: usize) -> Self {
        let lanes = max_instances * usize::from(MAX_THREADS);
        Self {
            marked: vec![false; lanes],
            list: Vec::with_capacity(lanes),
        }
    }

    /// Notes that `lane` has frames waiting.
    #[inline]
    pub fn mark(&mut self, lane: Lane) {
        if let Some(m) = self.marked.get_mut(lane as usize) {
            if !*m {
                *m = true;
                self.list.push(lane);
            }
        }
    }

    /// Takes one marked lane out (in no particular order).
    #[inline]
    pub fn pop(&mut self) -> Option<Lane> {
        let lane = self.list.pop()?;
        self.marked[lane as usize] = false;
        Some(lane)
    }

    /// Lanes marked.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether none is marked.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

#[derive(Debug, Clone, Copy)]
struct TxLane {
    lane: Lane,
    hot: bool,
    /// Polls in a row that found the ring empty while hot.
    empty_polls: u32,
}

/// Which transmit rings to poll on each loop (see the module doc).
#[derive(Debug)]
pub struct TxScan {
    lanes: Vec<TxLane>,
    /// Indices into `lanes` of the hot ones.
    hot: Vec<usize>,
    /// Where the rotation over cold lanes goes on.
    cursor: usize,
    cool_after: u32,
}

impl TxScan {
    /// A scan in which a hot ring turns cold after `cool_after` empty
    /// polls in a row.
    pub fn new(cool_after: u32) -> Self {
        Self {
            lanes: Vec::new(),
            hot: Vec::new(),
            cursor: 0,
            cool_after: cool_after.max(1),
        }
    }

    /// Sets the lanes there are (on an instance's arrival or departure);
    /// lanes kept stay hot or cold as they were. Allocates: not for the
    /// hot path.
    pub fn set_lanes(&mut self, lanes: impl IntoIterator<Item = Lane>) {
        let old = std::mem::take(&mut self.lanes);
        self.lanes = lanes
            .into_iter()
            .map(|lane| {
                old.iter()
                    .find(|o| o.lane == lane)
                    .copied()
                    .unwrap_or(TxLane {
                        lane,
                        hot: false,
                        empty_polls: 0,
                    })
            })
            .collect();
        self.hot = (0..self.lanes.len())
            .filter(|&i| self.lanes[i].hot)
            .collect();
        if self.cursor >= self.lanes.len() {
            self.cursor = 0;
        }
    }

    /// Lanes there are.
    pub fn len(&self) -> usize {
        self.lanes.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }

    /// The lanes to poll on this loop into `out` (cleared first), as
    /// indices for [`Self::lane`] and [`Self::polled`]: every hot lane,
    /// then up to `probes` cold ones, going on from where the last loop
    /// stopped. Allocates only if `out` has less capacity than
    /// [`Self::len`].
    pub fn plan(&mut self, out: &mut Vec<usize>, probes: usize) {
        out.clear();
        out.extend_from_slice(&self.hot);
        let n = self.lanes.len();
        let mut probes = probes.min(n - self.hot.len());
        let mut steps = 0;
        while probes > 0 && steps < n {
            let i = self.cursor;
            self.cursor = if i + 1 == n { 0 } else { i + 1 };
            steps += 1;
            if !self.lanes[i].hot {
                out.push(i);
                probes -= 1;
            }
        }
    }

    /// The lane at index `i` of a plan.
    #[inline]
    pub fn lane(&self, i: usize) -> Lane {
        self.lanes[i].lane
    }

    /// Tells what a poll of index `i` moved: a cold lane that moved frames
    /// turns hot, a hot one empty `cool_after` times in a row turns cold.
    #[inline]
    pub fn polled(&mut self, i: usize, moved: usize) {
        let l = &mut self.lanes[i];
        if moved > 0 {
            l.empty_polls = 0;
            if !l.hot {
                l.hot = true;
                self.hot.push(i);
            }
        } else if l.hot {
            l.empty_polls += 1;
            if l.empty_polls >= self.cool_after {
                l.hot = false;
                l.empty_polls = 0;
                if let Some(at) = self.hot.iter().position(|&h| h == i) {
                    self.hot.swap_remove(at);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_number_slot_and_thread_both_ways() {
        for (slot, thread) in [(0, 0), (0, 31), (1, 0), (31, 17)] {
            assert_eq!(split(lane(slot, thread)), (slot, thread));
        }
        assert_ne!(lane(0, 31), lane(1, 0));
    }

    #[test]
    fn gathered_lists_each_lane_once_until_popped() {
        let mut g = Gathered::new(2);
        let room = g.list.capacity();
        for l in [lane(1, 3), lane(0, 0), lane(1, 3), lane(0, 0), lane(1, 31)] {
            g.mark(l);
        }
        assert_eq!(g.len(), 3);
        let mut got = Vec::new();
        while let Some(l) = g.pop() {
            got.push(l);
        }
        got.sort_unstable();
        assert_eq!(got, vec![lane(0, 0), lane(1, 3), lane(1, 31)]);
        assert!(g.is_empty());
        // Popped lanes can be marked again.
        g.mark(lane(1, 3));
        assert_eq!(g.pop(), Some(lane(1, 3)));
        // Every lane at once fits in what was reserved; beyond is ignored.
        for l in 0..64 {
            g.mark(l);
        }
        g.mark(64);
        assert_eq!(g.len(), 64);
        assert_eq!(g.list.capacity(), room);
    }

    fn plan(s: &mut TxScan, probes: usize) -> Vec<Lane> {
        let mut out = Vec::new();
        s.plan(&mut out, probes);
        out.into_iter().map(|i| s.lane(i)).collect()
    }

    /// Polls the plan, `busy` lanes moving frames, the rest nothing.
    fn poll(s: &mut TxScan, probes: usize, busy: &[Lane]) -> Vec<Lane> {
        let mut out = Vec::new();
        s.plan(&mut out, probes);
        for &i in &out {
            let moved = usize::from(busy.contains(&s.lane(i)));
            s.polled(i, moved);
        }
        out.into_iter().map(|i| s.lane(i)).collect()
    }

    #[test]
    fn few_rings_are_all_polled_on_every_loop() {
        let mut s = TxScan::new(4);
        s.set_lanes([5, 6, 7]);
        for _ in 0..3 {
            let mut p = plan(&mut s, 8);
            p.sort_unstable();
            assert_eq!(p, vec![5, 6, 7]);
        }
    }

    #[test]
    fn idle_rings_are_probed_a_bounded_number_per_loop_and_all_in_turn() {
        let mut s = TxScan::new(16);
        s.set_lanes(0..100);
        let mut seen = [0u32; 100];
        for _ in 0..25 {
            let p = poll(&mut s, 4, &[]);
            assert_eq!(p.len(), 4);
            for l in p {
                seen[l as usize] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
    }

    #[test]
    fn a_busy_ring_is_polled_on_every_loop_until_it_idles() {
        let mut s = TxScan::new(3);
        s.set_lanes(0..20);
        // Found by the rotation within 10 loops.
        let mut found = None;
        for n in 0..10 {
            if poll(&mut s, 2, &[13]).contains(&13) {
                found = Some(n);
                break;
            }
        }
        assert!(found.is_some());
        // Then polled on every loop, beside two probes.
        for _ in 0..50 {
            let p = poll(&mut s, 2, &[13]);
            assert!(p.contains(&13));
            assert_eq!(p.len(), 3);
        }
        // Idle: still polled for `cool_after` loops, then back in rotation.
        for _ in 0..3 {
            assert!(poll(&mut s, 2, &[]).contains(&13));
        }
        let p = poll(&mut s, 2, &[]);
        assert_eq!(p.len(), 2);
        // Not polled again before its turn comes round.
        let mut gap = 1;
        while !poll(&mut s, 2, &[]).contains(&13) {
            gap += 1;
        }
        assert!((2..=10).contains(&gap), "{gap}");
    }

    #[test]
    fn many_busy_rings_are_all_polled_and_the_cold_ones_still_probed() {
        let mut s = TxScan::new(8);
        s.set_lanes(0..10);
        let busy: Vec<Lane> = (0..9).collect();
        for _ in 0..10 {
            poll(&mut s, 1, &busy);
        }
        let mut p = poll(&mut s, 1, &busy);
        p.sort_unstable();
        assert_eq!(p, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn changing_the_lanes_keeps_hot_ones_hot_and_forgets_the_gone() {
        let mut s = TxScan::new(100);
        s.set_lanes([1, 2, 3]);
        for _ in 0..3 {
            poll(&mut s, 1, &[2, 3]);
        }
        s.set_lanes([2, 4, 5, 6]);
        for _ in 0..4 {
            let p = plan(&mut s, 1);
            assert!(p.contains(&2), "{p:?}");
            assert!(!p.contains(&3) && !p.contains(&1), "{p:?}");
            assert_eq!(p.len(), 2);
        }
        s.set_lanes([]);
        assert!(plan(&mut s, 1).is_empty());
    }

    #[test]
    fn unbounded_probes_poll_every_ring() {
        let mut s = TxScan::new(8);
        s.set_lanes(0..50);
        poll(&mut s, 4, &[]);
        poll(&mut s, 4, &[7]);
        let mut p = poll(&mut s, usize::MAX, &[7]);
        p.sort_unstable();
        assert_eq!(p, (0..50).collect::<Vec<_>>());
    }
}
