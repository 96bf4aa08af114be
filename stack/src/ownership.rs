//! Which local ports the stack owns, when it shares its address with the
//! kernel (the exception path, `kni_switch` / `flow_bifurcation`).
//!
//! A port is lstack's while a listener, a bound UDP socket, an accepted
//! connection or an outgoing connection's ephemeral port holds it
//! ([`PortClaim`]); every other port of the address is the kernel's. The
//! stack threads read this table for every frame on the exception path:
//! one relaxed atomic load, no lock, no syscall. Claims and releases
//! happen as sockets open and close, never per packet; the first claim of
//! a port and its last release are also published to a [`PortSink`] (the
//! pinned eBPF ownership map the kernel-side programs read, see
//! `gazelle-bpf`), under a small lock taken only on those transitions.

use std::sync::{
    atomic::{AtomicU16, Ordering},
    Arc, Mutex, OnceLock,
};

/// A transport protocol whose ports are owned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    fn index(self) -> usize {
        match self {
            Proto::Tcp => 0,
            Proto::Udp => 1,
        }
    }
}

/// Where the transitions of ownership go besides this table.
pub trait PortSink: Send + Sync + std::fmt::Debug {
    /// `port` of `proto` became owned (`true`) or free (`false`).
    fn publish(&self, proto: Proto, port: u16, owned: bool);
}

/// Holders per port and protocol.
#[derive(Debug)]
pub struct PortOwnership {
    holders: [Box<[AtomicU16]>; 2],
    sink: OnceLock<Arc<dyn PortSink>>,
    transitions: Mutex<()>,
}

impl Default for PortOwnership {
    fn default() -> Self {
        let table = || (0..=u16::MAX).map(|_| AtomicU16::new(0)).collect();
        Self {
            holders: [table(), table()],
            sink: OnceLock::new(),
            transitions: Mutex::new(()),
        }
    }
}

impl PortOwnership {
    /// Whether the stack owns `port` of `proto`.
    #[inline]
    pub fn owns(&self, proto: Proto, port: u16) -> bool {
        self.holders[proto.index()][usize::from(port)].load(Ordering::Relaxed) != 0
    }

    /// Sends the transitions to `sink` from now on, after it was given
    /// every port owned so far. Only the first sink is kept.
    pub fn set_sink(&self, sink: Arc<dyn PortSink>) {
        let _t = self.transitions.lock().unwrap_or_else(|e| e.into_inner());
        if self.sink.set(Arc::clone(&sink)).is_ok() {
            for proto in [Proto::Tcp, Proto::Udp] {
                for port in 0..=u16::MAX {
                    if self.owns(proto, port) {
                        sink.publish(proto, port, true);
                    }
                }
            }
        }
    }

    /// One more holder of `port` of `proto`.
    pub fn acquire(&self, proto: Proto, port: u16) {
        let cell = &self.holders[proto.index()][usize::from(port)];
        // Saturates rather than wraps: 65 535 holders of one port keep it
        // owned until the count falls back (it never falls below the
        // holders that are really there).
        let before = cell
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| n.checked_add(1))
            .unwrap_or(u16::MAX);
        if before == 0 {
            self.transition(proto, port);
        }
    }

    /// One holder of `port` of `proto` fewer.
    pub fn release(&self, proto: Proto, port: u16) {
        let cell = &self.holders[proto.index()][usize::from(port)];
        if let Ok(1) = cell.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| n.checked_sub(1))
        {
            self.transition(proto, port);
        }
    }

    /// Publishes the current state of `port`: under the lock, so that an
    /// acquire and a release racing on one port publish in the order of
    /// the table's final state.
    fn transition(&self, proto: Proto, port: u16) {
        if let Some(sink) = self.sink.get() {
            let _t = self.transitions.lock().unwrap_or_else(|e| e.into_inner());
            sink.publish(proto, port, self.owns(proto, port));
        }
    }

    /// Every owned port of `proto`, ascending.
    pub fn owned(&self, proto: Proto) -> Vec<u16> {
        (0..=u16::MAX).filter(|p| self.owns(proto, *p)).collect()
    }
}

/// One holder's claim on a port, released when dropped.
#[derive(Debug)]
pub struct PortClaim {
    table: Arc<PortOwnership>,
    proto: Proto,
    port: u16,
}

impl PortClaim {
    /// Claims `port` of `proto` in `table`.
    pub fn new(table: &Arc<PortOwnership>, proto: Proto, port: u16) -> Self {
        table.acquire(proto, port);
        Self {
            table: Arc::clone(table),
            proto,
            port,
        }
    }
}

impl Drop for PortClaim {
    fn drop(&mut self) {
        self.table.release(self.proto, self.port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Log(Mutex<Vec<(Proto, u16, bool)>>);

    impl PortSink for Log {
        fn publish(&self, proto: Proto, port: u16, owned: bool) {
            self.0.lock().unwrap().push((proto, port, owned));
        }
    }

    #[test]
    fn a_port_is_owned_while_any_claim_holds_it_and_only_transitions_are_published() {
        let table = Arc::new(PortOwnership::default());
        let early = PortClaim::new(&table, Proto::Udp, 53);
        let log = Arc::new(Log::default());
        table.set_sink(log.clone());
        assert_eq!(*log.0.lock().unwrap(), vec![(Proto::Udp, 53, true)]);

        let a = PortClaim::new(&table, Proto::Tcp, 6379);
        let b = PortClaim::new(&table, Proto::Tcp, 6379);
        assert!(table.owns(Proto::Tcp, 6379));
        assert!(!table.owns(Proto::Udp, 6379), "protocols are apart");
        drop(a);
        assert!(table.owns(Proto::Tcp, 6379), "b still holds it");
        drop(b);
        assert!(!table.owns(Proto::Tcp, 6379));
        drop(early);
        assert_eq!(
            *log.0.lock().unwrap(),
            vec![
                (Proto::Udp, 53, true),
                (Proto::Tcp, 6379, true),
                (Proto::Tcp, 6379, false),
                (Proto::Udp, 53, false),
            ]
        );
        assert!(table.owned(Proto::Tcp).is_empty());
    }

    #[test]
    fn racing_claims_leave_the_sink_agreeing_with_the_table() {
        #[derive(Debug, Default)]
        struct Last(Mutex<Option<bool>>);
        impl PortSink for Last {
            fn publish(&self, _: Proto, _: u16, owned: bool) {
                *self.0.lock().unwrap() = Some(owned);
            }
        }
        let table = Arc::new(PortOwnership::default());
        let last = Arc::new(Last::default());
        table.set_sink(last.clone());
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..2000 {
                        drop(PortClaim::new(&table, Proto::Tcp, 80));
                    }
                });
            }
        });
        assert!(!table.owns(Proto::Tcp, 80));
        assert_eq!(*last.0.lock().unwrap(), Some(false));
    }
}
