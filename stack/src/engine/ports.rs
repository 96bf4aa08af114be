//! Port bookkeeping: which thread serves a listening port
//! ([`PortHomes`]), and the local ports of outgoing connections
//! ([`EphemeralPorts`]).

use std::{
    collections::HashSet,
    sync::atomic::{AtomicUsize, Ordering},
};

use smoltcp::wire::IpEndpoint;

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
#[derive(Debug, Default)]
pub(crate) struct EphemeralPorts {
    used: HashSet<(u16, IpEndpoint)>,
    cursor: u16,
}

/// The ephemeral port range, as Linux's default.
pub(crate) const EPHEMERAL: std::ops::RangeInclusive<u16> = 32768..=60999;

impl EphemeralPorts {
    /// Takes a port not in use towards `remote` and not listened on.
    pub(crate) fn take(
        &mut self,
        remote: IpEndpoint,
        listening: impl Fn(u16) -> bool,
    ) -> Option<u16> {
        let span = u32::from(*EPHEMERAL.end() - *EPHEMERAL.start()) + 1;
        for _ in 0..span {
            self.cursor = self.cursor.wrapping_add(1) % span as u16;
            let port = EPHEMERAL.start() + self.cursor;
            if !listening(port) && self.used.insert((port, remote)) {
                return Some(port);
            }
        }
        None
    }

    /// Gives a port back.
    pub(crate) fn release(&mut self, port: u16, remote: IpEndpoint) {
        self.used.remove(&(port, remote));
    }
}
