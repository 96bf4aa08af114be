//! The TCP connection table: which instance thread holds which
//! connection, bounded so that no instance (and no one flooding it) can
//! take another's room.
//!
//! Entries live in a slab allocated once at start; a hash table of slab
//! indices finds them by 4-tuple. The hash is keyed with a per-process
//! random key ([`ConnHasher`]), so a remote cannot pick 4-tuples that land
//! in one bucket.
//!
//! Each entry is in one of three states, and on one of its instance's
//! three lists (intrusive, doubly linked through the slab):
//!
//! - **half-open**: a SYN was seen and the remote has not acknowledged
//!   anything yet. Ordered by the remote's last segment; the head is
//!   removed once it is [`Limits::half_open_timeout_ms`] old.
//! - **established**: the remote acknowledged (its ACK, or the SYN-ACK of a
//!   connection the instance opened). Stays however long it idles: a later
//!   segment must still find its thread.
//! - **closed**: reset, or finished both ways. Ordered by its last segment;
//!   removed after [`Limits::closed_linger_ms`].
//!
//! Ageing pops list heads, a bounded number per call ([`ConnTable::expire`]),
//! so it never scans the table. Quotas: with `n` instances registered,
//! each may hold `capacity / n` entries (its share), of which at most half
//! half-open. A new connection of an instance at its half-open bound
//! evicts the instance's oldest half-open entry rather than being refused,
//! so real clients still get in during a SYN flood; at its share it evicts
//! its oldest closed, then half-open entry; when the table is full, an
//! instance under its share takes an evictable entry of one over its
//! share. Only when nothing can be evicted is a connection refused.

use std::{
    hash::{BuildHasher, Hash},
    net::IpAddr,
};

use hashbrown::HashTable;

/// The keyed hasher of the table: SipHash-1-3 with keys from the OS's
/// random source, fresh in every table (std's `RandomState`). SipHash is
/// made to withstand an attacker who sees only timing; foldhash, a third
/// faster here (21 ns against 33 ns per lookup of a 60 000-entry table,
/// FxHash 15 ns), says itself it does not. At ltran's ~400 ns per frame
/// the difference is a few percent of TCP dispatch.
pub type ConnHasher = std::hash::RandomState;

/// An instance's index in ltran.
pub type Slot = u32;

/// A connection, as seen from the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnKey {
    /// The remote address.
    pub remote: IpAddr,
    /// The instance's address.
    pub local: IpAddr,
    /// The remote port.
    pub rport: u16,
    /// The instance's port.
    pub lport: u16,
}

impl Hash for ConnKey {
    /// Two or three words rather than the derive's dozen writes: the
    /// keyed hasher costs per write.
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        match (self.remote, self.local) {
            (IpAddr::V4(r), IpAddr::V4(l)) => {
                h.write_u64(u64::from(u32::from(r)) << 32 | u64::from(u32::from(l)));
            }
            (r, l) => {
                let wide = |a: IpAddr| match a {
                    IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
                    IpAddr::V6(a) => u128::from(a),
                };
                h.write_u128(wide(r));
                h.write_u128(wide(l));
            }
        }
        h.write_u32(u32::from(self.rport) << 16 | u32::from(self.lport));
    }
}

/// Timeouts of the table.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a half-open entry lives after the remote's last segment.
    pub half_open_timeout_ms: u64,
    /// How long a closed entry stays after its last segment.
    pub closed_linger_ms: u64,
}

/// Why a new connection got no entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The instance holds its share, all established.
    Quota,
    /// The table is full and nothing in it may be evicted.
    Full,
}

/// Which thread a new entry goes to.
#[derive(Debug, Clone, Copy)]
pub enum Thread {
    /// The instance's thread with the fewest connections.
    Fewest,
    /// This one (a connection the instance opened from it).
    Given(u16),
}

/// Who sent a segment of a known connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The remote (received).
    Remote,
    /// The instance (sent).
    Instance,
}

/// TCP flag bits, as in the header.
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    HalfOpen = 0,
    Established = 1,
    Closed = 2,
}

const FIN_IN: u8 = 1;
const FIN_OUT: u8 = 2;

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: ConnKey,
    slot: Slot,
    thread: u16,
    state: State,
    fins: u8,
    last_seen: u64,
    prev: u32,
    next: u32,
}

#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
    len: u32,
}

impl List {
    const EMPTY: List = List {
        head: NIL,
        tail: NIL,
        len: 0,
    };
}

#[derive(Debug, Clone)]
struct Owner {
    /// Indexed by `State`.
    lists: [List; 3],
    /// Entries per thread.
    threads: Vec<u64>,
}

impl Owner {
    fn total(&self) -> u32 {
        self.lists.iter().map(|l| l.len).sum()
    }
}

/// What happened to entries so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Evicted to make room for a new connection.
    pub evicted: u64,
    /// Removed by ageing (half-open or closed).
    pub aged_out: u64,
}

/// The connection table (see the module doc).
#[derive(Debug)]
pub struct ConnTable<S = ConnHasher> {
    index: HashTable<u32>,
    hasher: S,
    slab: Vec<Entry>,
    /// Head of the free slab entries, chained through `next`.
    free: u32,
    owners: Vec<Option<Owner>>,
    live_owners: usize,
    capacity: usize,
    limits: Limits,
    /// Where the next [`ConnTable::expire`] starts, for fairness.
    cursor: usize,
    /// What happened so far.
    pub stats: TableStats,
}

impl ConnTable<ConnHasher> {
    /// A table of `capacity` entries for up to `max_owners` instances,
    /// keyed with a fresh random key.
    pub fn new(capacity: usize, max_owners: usize, limits: Limits) -> Self {
        Self::with_hasher(capacity, max_owners, limits, ConnHasher::new())
    }
}

impl<S: BuildHasher> ConnTable<S> {
    /// As [`ConnTable::new`], with `hasher`.
    pub fn with_hasher(capacity: usize, max_owners: usize, limits: Limits, hasher: S) -> Self {
        assert!(capacity < NIL as usize, "capacity {capacity} too large");
        let blank = Entry {
            key: ConnKey {
                remote: IpAddr::from([0u8; 4]),
                local: IpAddr::from([0u8; 4]),
                rport: 0,
                lport: 0,
            },
            slot: 0,
            thread: 0,
            state: State::Closed,
            fins: 0,
            last_seen: 0,
            prev: NIL,
            next: NIL,
        };
        let slab = (0..capacity)
            .map(|i| Entry {
                next: if i + 1 < capacity { i as u32 + 1 } else { NIL },
                ..blank
            })
            .collect();
        Self {
            index: HashTable::with_capacity(capacity),
            hasher,
            slab,
            free: if capacity > 0 { 0 } else { NIL },
            owners: vec![None; max_owners],
            live_owners: 0,
            capacity,
            limits,
            cursor: 0,
            stats: TableStats::default(),
        }
    }

    /// Entries in the table.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Its capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Half-open entries, all instances.
    pub fn half_open(&self) -> usize {
        self.owners
            .iter()
            .flatten()
            .map(|o| o.lists[State::HalfOpen as usize].len as usize)
            .sum()
    }

    /// Half-open entries of `slot`.
    pub fn half_open_of(&self, slot: Slot) -> usize {
        self.owner(slot)
            .map_or(0, |o| o.lists[State::HalfOpen as usize].len as usize)
    }

    /// Entries of `slot`.
    pub fn len_of(&self, slot: Slot) -> usize {
        self.owner(slot).map_or(0, |o| o.total() as usize)
    }

    /// Entries per thread of `slot`.
    pub fn thread_counts(&self, slot: Slot) -> &[u64] {
        self.owner(slot).map_or(&[], |o| o.threads.as_slice())
    }

    /// The most entries one instance may hold now.
    pub fn share(&self) -> usize {
        self.capacity / self.live_owners.max(1)
    }

    /// The most half-open entries one instance may hold now.
    pub fn half_open_bound(&self) -> usize {
        (self.share() / 2).max(1)
    }

    fn owner(&self, slot: Slot) -> Option<&Owner> {
        self.owners.get(slot as usize)?.as_ref()
    }

    /// Makes room for `slot` with `threads` threads.
    pub fn add_owner(&mut self, slot: Slot, threads: u16) {
        let o = &mut self.owners[slot as usize];
        if o.is_none() {
            self.live_owners += 1;
        }
        *o = Some(Owner {
            lists: [List::EMPTY; 3],
            threads: vec![0; usize::from(threads.max(1))],
        });
    }

    /// Removes `slot` and every entry it had; returns how many.
    pub fn remove_owner(&mut self, slot: Slot) -> u64 {
        let Some(o) = self.owners.get(slot as usize).and_then(Option::as_ref) else {
            return 0;
        };
        let heads = o.lists.map(|l| l.head);
        let mut removed = 0;
        for head in heads {
            let mut i = head;
            while i != NIL {
                let next = self.slab[i as usize].next;
                self.unindex(i);
                self.release(i);
                removed += 1;
                i = next;
            }
        }
        self.owners[slot as usize] = None;
        self.live_owners -= 1;
        removed
    }

    fn hash(&self, key: &ConnKey) -> u64 {
        self.hasher.hash_one(key)
    }

    fn find(&self, key: &ConnKey) -> Option<u32> {
        let slab = &self.slab;
        self.index
            .find(self.hash(key), |&i| slab[i as usize].key == *key)
            .copied()
    }

    fn unindex(&mut self, i: u32) {
        let hash = self.hash(&self.slab[i as usize].key);
        if let Ok(e) = self.index.find_entry(hash, |&j| j == i) {
            e.remove();
        }
    }

    /// Puts slab entry `i` back on the free chain (it must be off its list).
    fn release(&mut self, i: u32) {
        let e = &mut self.slab[i as usize];
        e.prev = NIL;
        e.next = self.free;
        self.free = i;
    }

    fn unlink(&mut self, i: u32) {
        let Entry {
            slot,
            state,
            prev,
            next,
            ..
        } = self.slab[i as usize];
        if prev != NIL {
            self.slab[prev as usize].next = next;
        }
        if next != NIL {
            self.slab[next as usize].prev = prev;
        }
        if let Some(o) = self.owners[slot as usize].as_mut() {
            let l = &mut o.lists[state as usize];
            if l.head == i {
                l.head = next;
            }
            if l.tail == i {
                l.tail = prev;
            }
            l.len -= 1;
        }
    }

    fn push_tail(&mut self, i: u32, state: State) {
        let slot = self.slab[i as usize].slot;
        let Some(o) = self.owners[slot as usize].as_mut() else {
            return;
        };
        let l = &mut o.lists[state as usize];
        let tail = l.tail;
        l.tail = i;
        if l.head == NIL {
            l.head = i;
        }
        l.len += 1;
        if tail != NIL {
            self.slab[tail as usize].next = i;
        }
        let e = &mut self.slab[i as usize];
        e.prev = tail;
        e.next = NIL;
        e.state = state;
    }

    /// Moves entry `i` to the tail of the list of `state`.
    fn move_to(&mut self, i: u32, state: State) {
        self.unlink(i);
        self.push_tail(i, state);
    }

    /// Removes entry `i` from the table entirely.
    fn remove(&mut self, i: u32) {
        let Entry { slot, thread, .. } = self.slab[i as usize];
        self.unlink(i);
        self.unindex(i);
        if let Some(n) = self.owners[slot as usize]
            .as_mut()
            .and_then(|o| o.threads.get_mut(usize::from(thread)))
        {
            *n = n.saturating_sub(1);
        }
        self.release(i);
    }

    /// Records a segment of a known connection with TCP `flags` from
    /// `from` at `now` (ms); returns the connection's slot and thread, or
    /// `None` if the connection is not in the table.
    pub fn segment(
        &mut self,
        key: &ConnKey,
        from: Side,
        flags: u8,
        now: u64,
    ) -> Option<(Slot, u16)> {
        let i = self.find(key)?;
        let e = &mut self.slab[i as usize];
        let (slot, thread, state) = (e.slot, e.thread, e.state);
        match from {
            Side::Remote => e.fins |= if flags & FIN != 0 { FIN_IN } else { 0 },
            Side::Instance => e.fins |= if flags & FIN != 0 { FIN_OUT } else { 0 },
        }
        // A half-open entry lives on the remote's segments (its SYN
        // retransmissions), and on the SYNs of a connection the instance
        // opens, not on the instance's SYN-ACK retransmissions: those
        // would keep a flood's entries alive.
        let refresh =
            state != State::HalfOpen || from == Side::Remote || flags & (SYN | ACK) == SYN;
        if refresh {
            e.last_seen = now;
        }
        let next = if flags & RST != 0 || e.fins == FIN_IN | FIN_OUT {
            State::Closed
        } else if state == State::HalfOpen && from == Side::Remote && flags & ACK != 0 {
            State::Established
        } else {
            state
        };
        // Half-open and closed lists stay ordered by last segment.
        if next != state || (refresh && next != State::Established) {
            self.move_to(i, next);
        }
        Some((slot, thread))
    }

    /// Adds a half-open connection of `slot` at `now` (ms), on `thread`;
    /// returns the thread it got. Evicts (and counts) what the quotas say
    /// must go; refuses only when nothing may.
    pub fn insert(
        &mut self,
        key: ConnKey,
        slot: Slot,
        thread: Thread,
        now: u64,
    ) -> Result<u16, Refused> {
        let Some(o) = self.owner(slot) else {
            return Err(Refused::Full);
        };
        let half_open = o.lists[State::HalfOpen as usize].len as usize;
        let total = o.total() as usize;
        if half_open >= self.half_open_bound() {
            self.evict_from(slot, &[State::HalfOpen]);
        } else if total >= self.share() && !self.evict_from(slot, &[State::Closed, State::HalfOpen])
        {
            return Err(Refused::Quota);
        }
        if self.free == NIL {
            // Full, and this instance is under its share: someone is over.
            let share = self.share() as u32;
            let over = (0..self.owners.len() as Slot).find(|&s| {
                s != slot
                    && self.owner(s).is_some_and(|o| {
                        o.total() > share
                            && (o.lists[State::Closed as usize].len > 0
                                || o.lists[State::HalfOpen as usize].len > 0)
                    })
            });
            match over {
                Some(s) => {
                    self.evict_from(s, &[State::Closed, State::HalfOpen]);
                }
                None => return Err(Refused::Full),
            }
        }
        let o = self.owners[slot as usize].as_mut().expect("checked above");
        let thread = match thread {
            Thread::Given(t) if usize::from(t) < o.threads.len() => t,
            Thread::Given(_) | Thread::Fewest => o
                .threads
                .iter()
                .enumerate()
                .min_by_key(|(_, n)| **n)
                .map_or(0, |(t, _)| t as u16),
        };
        o.threads[usize::from(thread)] += 1;
        let i = self.free;
        self.free = self.slab[i as usize].next;
        self.slab[i as usize] = Entry {
            key,
            slot,
            thread,
            state: State::HalfOpen,
            fins: 0,
            last_seen: now,
            prev: NIL,
            next: NIL,
        };
        self.push_tail(i, State::HalfOpen);
        let hash = self.hash(&key);
        let slab = &self.slab;
        self.index
            .insert_unique(hash, i, |&j| self.hasher.hash_one(slab[j as usize].key));
        Ok(thread)
    }

    /// Evicts the oldest entry of `slot` in the first of `states` that has
    /// one; false if none has.
    fn evict_from(&mut self, slot: Slot, states: &[State]) -> bool {
        let Some(o) = self.owner(slot) else {
            return false;
        };
        let Some(i) = states
            .iter()
            .map(|&s| o.lists[s as usize].head)
            .find(|&h| h != NIL)
        else {
            return false;
        };
        self.remove(i);
        self.stats.evicted += 1;
        true
    }

    /// Removes half-open and closed entries past their time at `now` (ms),
    /// at most `budget` of them, taking instances in turn; returns how
    /// many. Entries are ordered by age within each list, so this only
    /// looks at list heads.
    pub fn expire(&mut self, now: u64, budget: usize) -> usize {
        let mut removed = 0;
        let n = self.owners.len();
        for k in 0..n {
            let slot = ((self.cursor + k) % n) as Slot;
            for (state, after) in [
                (State::HalfOpen, self.limits.half_open_timeout_ms),
                (State::Closed, self.limits.closed_linger_ms),
            ] {
                while removed < budget {
                    let Some(head) = self
                        .owner(slot)
                        .map(|o| o.lists[state as usize].head)
                        .filter(|&h| h != NIL)
                    else {
                        break;
                    };
                    if now.saturating_sub(self.slab[head as usize].last_seen) < after {
                        break;
                    }
                    self.remove(head);
                    removed += 1;
                }
            }
            if removed >= budget {
                self.cursor = slot as usize;
                break;
            }
        }
        self.stats.aged_out += removed as u64;
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        half_open_timeout_ms: 5_000,
        closed_linger_ms: 60_000,
    };

    fn key(remote: u32, rport: u16) -> ConnKey {
        ConnKey {
            remote: IpAddr::from(remote.to_be_bytes()),
            local: IpAddr::from([10, 0, 0, 2]),
            rport,
            lport: 80,
        }
    }

    fn table(capacity: usize, owners: &[u16]) -> ConnTable {
        let mut t = ConnTable::new(capacity, 4, LIMITS);
        for (slot, &threads) in owners.iter().enumerate() {
            t.add_owner(slot as Slot, threads);
        }
        t
    }

    /// Checks every list against the index and the counts.
    fn check(t: &ConnTable) {
        let mut listed = 0;
        for (slot, o) in t.owners.iter().enumerate() {
            let Some(o) = o else { continue };
            let mut per_thread = vec![0u64; o.threads.len()];
            for (s, l) in o.lists.iter().enumerate() {
                let (mut i, mut prev, mut n, mut last) = (l.head, NIL, 0, 0);
                while i != NIL {
                    let e = &t.slab[i as usize];
                    assert_eq!((e.slot as usize, e.state as usize, e.prev), (slot, s, prev));
                    if s != State::Established as usize {
                        assert!(e.last_seen >= last, "list {s} of {slot} out of order");
                        last = e.last_seen;
                    }
                    assert_eq!(t.find(&e.key), Some(i));
                    per_thread[usize::from(e.thread)] += 1;
                    (prev, i, n) = (i, e.next, n + 1);
                }
                assert_eq!((l.tail, l.len), (prev, n));
                listed += n as usize;
            }
            assert_eq!(per_thread, o.threads);
        }
        assert_eq!(listed, t.len());
    }

    #[test]
    fn the_hash_is_keyed_afresh_for_every_table() {
        // Unkeyed (FxHash), every process puts a 4-tuple in the same
        // bucket, so a remote can aim flows at one.
        let (a, b) = (table(16, &[]), table(16, &[]));
        let differs = (0..8).any(|r| a.hash(&key(r, 1)) != b.hash(&key(r, 1)));
        assert!(differs);
    }

    #[test]
    fn a_handshake_makes_an_entry_established_and_it_stays() {
        let mut t = table(16, &[2]);
        let k = key(1, 1000);
        assert_eq!(t.insert(k, 0, Thread::Fewest, 0), Ok(0));
        assert_eq!(t.half_open(), 1);
        // The instance's SYN-ACK changes nothing, the remote's ACK does.
        t.segment(&k, Side::Instance, SYN | ACK, 10);
        assert_eq!(t.half_open(), 1);
        assert_eq!(t.segment(&k, Side::Remote, ACK, 20), Some((0, 0)));
        assert_eq!(t.half_open(), 0);
        assert_eq!(t.expire(1_000_000_000, 100), 0);
        assert_eq!(t.len(), 1);
        check(&t);
    }

    #[test]
    fn half_open_entries_expire_after_the_remotes_last_segment() {
        let mut t = table(16, &[1]);
        let (a, b) = (key(1, 1), key(2, 2));
        t.insert(a, 0, Thread::Fewest, 0).unwrap();
        t.insert(b, 0, Thread::Fewest, 1_000).unwrap();
        // SYN-ACK retransmissions of the instance do not keep `a` alive;
        // the remote's SYN retransmission keeps `b` alive.
        t.segment(&a, Side::Instance, SYN | ACK, 3_000);
        t.segment(&b, Side::Remote, SYN, 3_000);
        check(&t);
        assert_eq!(t.expire(4_999, 100), 0);
        assert_eq!(t.expire(5_000, 100), 1);
        assert!(t.segment(&a, Side::Remote, ACK, 5_000).is_none());
        assert_eq!(t.expire(7_999, 100), 0);
        assert_eq!(t.expire(8_000, 100), 1);
        assert!(t.is_empty());
        assert_eq!(t.thread_counts(0), &[0]);
        assert_eq!(t.stats.aged_out, 2);
        check(&t);
    }

    #[test]
    fn closed_entries_linger_then_go() {
        let mut t = table(16, &[1]);
        let (a, b) = (key(1, 1), key(2, 2));
        for k in [a, b] {
            t.insert(k, 0, Thread::Fewest, 0).unwrap();
            t.segment(&k, Side::Remote, ACK, 0);
        }
        t.segment(&a, Side::Remote, RST, 100);
        t.segment(&b, Side::Remote, FIN | ACK, 200);
        t.segment(&b, Side::Instance, FIN | ACK, 300);
        check(&t);
        assert_eq!(t.expire(60_099, 100), 0);
        assert_eq!(t.expire(60_100, 100), 1);
        assert_eq!(t.expire(60_300, 100), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn expiry_does_a_bounded_slice_of_work() {
        let mut t = table(128, &[1, 1]);
        for r in 0..40 {
            t.insert(key(r, 1), r % 2, Thread::Fewest, 0).unwrap();
        }
        assert_eq!(t.expire(10_000, 16), 16);
        assert_eq!(t.len(), 24);
        assert_eq!(t.expire(10_000, 16), 16);
        assert_eq!(t.expire(10_000, 16), 8);
        check(&t);
    }

    #[test]
    fn a_flood_evicts_its_own_oldest_half_open_entries() {
        // Two instances: a share of 32 each, at most 16 half-open.
        let mut t = table(64, &[1, 1]);
        assert_eq!((t.share(), t.half_open_bound()), (32, 16));
        let real = key(7, 7);
        t.insert(real, 0, Thread::Fewest, 0).unwrap();
        t.segment(&real, Side::Remote, ACK, 0);
        for r in 100..1100 {
            t.insert(key(r, 1), 0, Thread::Fewest, u64::from(r))
                .unwrap();
        }
        assert_eq!(t.half_open_of(0), 16);
        assert_eq!(t.len_of(0), 17);
        assert_eq!(t.stats.evicted, 1000 - 16);
        // The newest survive; the established one was never touched.
        assert!(t.segment(&key(1099, 1), Side::Remote, SYN, 2000).is_some());
        assert!(t.segment(&key(100, 1), Side::Remote, SYN, 2000).is_none());
        assert!(t.segment(&real, Side::Remote, ACK, 2000).is_some());
        // The other instance has all its room.
        for r in 0..32 {
            t.insert(key(r, 2), 1, Thread::Fewest, 0).unwrap();
            t.segment(&key(r, 2), Side::Remote, ACK, 0);
        }
        assert_eq!(t.len_of(1), 32);
        check(&t);
    }

    #[test]
    fn an_instance_at_its_share_of_established_connections_is_refused() {
        let mut t = table(8, &[1, 1]);
        for r in 0..4 {
            t.insert(key(r, 1), 0, Thread::Fewest, 0).unwrap();
            t.segment(&key(r, 1), Side::Remote, ACK, 0);
        }
        assert_eq!(
            t.insert(key(9, 1), 0, Thread::Fewest, 0),
            Err(Refused::Quota)
        );
        // A closed one makes room.
        t.segment(&key(0, 1), Side::Remote, RST, 0);
        assert_eq!(t.insert(key(9, 1), 0, Thread::Fewest, 0), Ok(0));
        assert_eq!(t.stats.evicted, 1);
        check(&t);
    }

    #[test]
    fn a_full_table_takes_room_from_an_instance_over_its_share() {
        // Alone, instance 0 fills the table (its share is all of it).
        let mut t = table(8, &[1]);
        for r in 0..4 {
            t.insert(key(r, 1), 0, Thread::Fewest, 0).unwrap();
            t.segment(&key(r, 1), Side::Remote, ACK, 0);
        }
        for r in 4..8 {
            t.insert(key(r, 1), 0, Thread::Fewest, 0).unwrap();
        }
        assert_eq!(t.len(), 8);
        // A second instance registers: its share (4) is free to take,
        // from 0's half-open entries.
        t.add_owner(1, 1);
        for r in 0..4 {
            assert_eq!(t.insert(key(r, 2), 1, Thread::Fewest, 0), Ok(0));
            t.segment(&key(r, 2), Side::Remote, ACK, 0);
        }
        assert_eq!((t.len_of(0), t.len_of(1)), (4, 4));
        assert_eq!(t.stats.evicted, 4);
        // Only established entries left anywhere: a third is refused.
        t.add_owner(2, 1);
        assert_eq!(
            t.insert(key(0, 3), 2, Thread::Fewest, 0),
            Err(Refused::Full)
        );
        check(&t);
    }

    #[test]
    fn threads_are_filled_evenly_and_removal_forgets_all() {
        let mut t = table(16, &[3]);
        let threads: Vec<u16> = (0..6)
            .map(|r| t.insert(key(r, 1), 0, Thread::Fewest, 0).unwrap())
            .collect();
        assert_eq!(threads, [0, 1, 2, 0, 1, 2]);
        assert_eq!(t.insert(key(9, 9), 0, Thread::Given(2), 0), Ok(2));
        assert_eq!(t.thread_counts(0), &[2, 2, 3]);
        t.segment(&key(0, 1), Side::Remote, ACK, 0);
        t.segment(&key(1, 1), Side::Remote, RST, 0);
        check(&t);
        assert_eq!(t.remove_owner(0), 7);
        assert!(t.is_empty());
        // Every slab entry is free again.
        t.add_owner(0, 1);
        for r in 0..16 {
            t.insert(key(r, 5), 0, Thread::Fewest, 0).unwrap();
            t.segment(&key(r, 5), Side::Remote, ACK, 0);
        }
        assert_eq!(t.len(), 16);
        check(&t);
    }
}
