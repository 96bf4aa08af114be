//! Port bookkeeping: which thread serves a listening port
//! ([`PortHomes`]), and the local ports of outgoing connections
//! ([`EphemeralPorts`]).

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use smoltcp::wire::IpEndpoint;

use crate::ownership::{PortOwnership, Proto};

/// Which stack thread serves each listening port (`listen_shadow = 0`):
/// ports get threads in turn as they are first listened on, and keep them.
#[derive(Debug)]
pub(crate) struct PortHomes {
    /// Per port: 0 (by the flow hash), or 1 + the thread.
    home: Box<[std::sync::atomic::AtomicU16]>,
    next: AtomicUsize,
    threads: usize,
}

impl PortHomes {
    pub(crate) fn new(threads: usize) -> Self {
        Self {
            home: (0..=u16::MAX)
                .map(|_| std::sync::atomic::AtomicU16::new(0))
                .collect(),
            next: AtomicUsize::new(0),
            threads: threads.clamp(1, usize::from(u16::MAX - 1)),
        }
    }

    /// The thread of `port`, if it was ever listened on.
    #[inline]
    pub(crate) fn get(&self, port: u16) -> Option<usize> {
        let h = self.home[usize::from(port)].load(Ordering::Relaxed);
        (h != 0).then(|| usize::from(h) - 1)
    }

    /// `port` is listened on: it gets the next thread, unless it has one.
    /// Returns its thread.
    pub(crate) fn listen(&self, port: u16) -> usize {
        if let Some(t) = self.get(port) {
            return t;
        }
        let t = self.next.fetch_add(1, Ordering::Relaxed) % self.threads;
        match self.home[usize::from(port)].compare_exchange(
            0,
            t as u16 + 1,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => t,
            Err(other) => usize::from(other) - 1,
        }
    }
}

/// Local ports handed out to outgoing connections, unique per remote end.
/// The search starts at a random place in the range (RFC 6056), as
/// Linux's does: a process that starts again right after another one with
/// the same address must not reuse the first one's ports, whose
/// connections the peer may still hold (in `LAST-ACK`, say), and an
/// off-path attacker must not be able to guess them.
#[derive(Debug)]
pub(crate) struct EphemeralPorts {
    used: HashSet<(u16, IpEndpoint)>,
    cursor: u16,
    /// Where ports are taken from ([`EPHEMERAL`], or [`EPHEMERAL_SHARED`]
    /// beside the kernel).
    range: std::ops::RangeInclusive<u16>,
    /// The stack's port ownership: a port handed out is the stack's until
    /// given back.
    owned: Arc<PortOwnership>,
}

impl Default for EphemeralPorts {
    fn default() -> Self {
        Self::new(Arc::default())
    }
}

/// The ephemeral port range, as Linux's default.
pub(crate) const EPHEMERAL: std::ops::RangeInclusive<u16> = 32768..=60999;

/// The ephemeral port range of a stack that shares its address with the
/// kernel (the exception path): the top of Linux's, which the stack
/// reserves in the kernel (`ip_local_reserved_ports`) so that the two
/// never pick the same local port (a port is one side's or the other's:
/// the kernel's connection on a port lstack owns would get lstack's RSTs).
pub(crate) const EPHEMERAL_SHARED: std::ops::RangeInclusive<u16> = 49152..=60999;

impl EphemeralPorts {
    /// No port in use; ports handed out are claimed in `owned`.
    pub(crate) fn new(owned: Arc<PortOwnership>) -> Self {
        Self::with_range(owned, EPHEMERAL)
    }

    /// As [`EphemeralPorts::new`], taking ports from `range`.
    pub(crate) fn with_range(
        owned: Arc<PortOwnership>,
        range: std::ops::RangeInclusive<u16>,
    ) -> Self {
        let span = u64::from(*range.end() - *range.start()) + 1;
        Self {
            used: HashSet::new(),
            cursor: (crate::random_seed() % span) as u16,
            range,
            owned,
        }
    }

    /// Takes a port not in use towards `remote` and not listened on.
    pub(crate) fn take(
        &mut self,
        remote: IpEndpoint,
        listening: impl Fn(u16) -> bool,
    ) -> Option<u16> {
        let span = u32::from(*self.range.end() - *self.range.start()) + 1;
        for _ in 0..span {
            self.cursor = ((u32::from(self.cursor) + 1) % span) as u16;
            let port = self.range.start() + self.cursor;
            if !listening(port) && self.used.insert((port, remote)) {
                self.owned.acquire(Proto::Tcp, port);
                return Some(port);
            }
        }
        None
    }

    /// Gives a port back.
    pub(crate) fn release(&mut self, port: u16, remote: IpEndpoint) {
        if self.used.remove(&(port, remote)) {
            self.owned.release(Proto::Tcp, port);
        }
    }
}

#[cfg(test)]
mod tests {
    use smoltcp::wire::{IpAddress, Ipv4Address};

    use super::*;

    fn remote() -> IpEndpoint {
        IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 1)), 80)
    }

    #[test]
    fn ports_start_at_a_random_place_and_are_unique_per_remote() {
        // A fixed start would give every new process the same first port:
        // 16 processes (random seeds per RandomState) do not all agree.
        let firsts: HashSet<u16> = (0..16)
            .map(|_| EphemeralPorts::default().take(remote(), |_| false).unwrap())
            .collect();
        assert!(firsts.len() > 1, "every start gave {firsts:?}");
        assert!(firsts.iter().all(|p| EPHEMERAL.contains(p)));

        let mut ports = EphemeralPorts::default();
        let a = ports.take(remote(), |_| false).unwrap();
        let b = ports.take(remote(), |p| p == a.wrapping_add(1)).unwrap();
        assert_ne!(a, b);
        assert_ne!(b, a.wrapping_add(1), "a listened port was handed out");
        ports.release(a, remote());
        let span = usize::from(*EPHEMERAL.end() - *EPHEMERAL.start()) + 1;
        let all: HashSet<u16> = std::iter::from_fn(|| ports.take(remote(), |_| false))
            .take(span)
            .collect();
        assert_eq!(all.len(), span - 1, "b is still taken");
        assert!(!all.contains(&b));
    }

    #[test]
    fn beside_the_kernel_ports_come_from_the_reserved_range_only() {
        let mut ports = EphemeralPorts::with_range(Arc::default(), EPHEMERAL_SHARED);
        let span = usize::from(*EPHEMERAL_SHARED.end() - *EPHEMERAL_SHARED.start()) + 1;
        let all: HashSet<u16> = std::iter::from_fn(|| ports.take(remote(), |_| false))
            .take(span + 10)
            .collect();
        assert_eq!(all.len(), span, "every port of the range once, then none");
        assert!(all.iter().all(|p| EPHEMERAL_SHARED.contains(p)));
    }

    #[test]
    fn ports_handed_out_are_owned_until_given_back() {
        let owned = Arc::new(PortOwnership::default());
        let mut ports = EphemeralPorts::new(Arc::clone(&owned));
        let a = ports.take(remote(), |_| false).unwrap();
        assert!(owned.owns(Proto::Tcp, a));
        ports.release(a, remote());
        assert!(!owned.owns(Proto::Tcp, a));
        ports.release(a, remote());
        assert!(
            !owned.owns(Proto::Tcp, a),
            "a second release changes nothing"
        );
    }
}
