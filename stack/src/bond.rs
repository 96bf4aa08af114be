//! A standalone lstack's own active-backup bond (`bond_mode = 1`): two
//! ports, both given the bond's MAC (`devices`); each stack thread has queue
//! `i` of both. Traffic goes in and out of the active port only; what
//! arrives on the backup is dropped and counted, as a Linux active-backup
//! bond does.
//!
//! The choice of the active port is [`dpdk::bond`]'s (shared with ltran):
//! a monitor thread checks both links every `bond_miimon` ms (DPDK's link
//! state and, for af_packet/af_xdp ports, the kernel interface's operstate)
//! and publishes the active index in an atomic. Stack threads read it once
//! per loop (no syscall, lock or clock read per packet), switch their
//! queues when it changes, and thread 0 announces the move with a
//! gratuitous ARP (and an unsolicited NA for `host_addr6`) out of the new
//! port.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use dpdk::{bond::Bond, Eal, MbufBatch, RxQueue, TxQueue};
use gazelle_ctl_proto::{BondPort, BondStatus, PortCounters};

use crate::{engine::StackShared, stats::Counter};

/// How long the monitor sleeps at most between looks at the shutdown flag.
const SHUTDOWN_POLL: Duration = Duration::from_millis(50);

/// One port of the bond, as the monitor and the status see it.
#[derive(Debug)]
pub(crate) struct Member {
    /// DPDK port id.
    pub(crate) port_id: u16,
    /// DPDK device name.
    pub(crate) name: String,
    /// The kernel interface under an af_packet/af_xdp port.
    pub(crate) iface: Option<String>,
    /// Link as last checked.
    link_up: AtomicBool,
}

impl Member {
    /// A member for port `port_id` named `name` over `iface`.
    pub(crate) fn new(port_id: u16, name: String, iface: Option<String>) -> Self {
        Self {
            port_id,
            name,
            iface,
            link_up: AtomicBool::new(false),
        }
    }
}

/// The bond's state, shared by the monitor, the stack threads and the
/// status.
#[derive(Debug)]
pub(crate) struct BondShared {
    /// The two ports, in `bond_slave_mac` order.
    pub(crate) members: [Member; 2],
    /// The bond's MAC (`devices`).
    pub(crate) mac: [u8; 6],
    /// `bond_miimon`.
    pub(crate) miimon: Duration,
    /// Index in `members` of the port carrying traffic. Port 0 until the
    /// first link check says otherwise; it stays on the last active port
    /// while no link is up.
    active: AtomicUsize,
    /// Whether any link was up at the last check.
    any_up: AtomicBool,
    /// Times traffic moved to the other port.
    failovers: AtomicU64,
    /// Gratuitous ARPs and unsolicited NAs sent to announce a move.
    pub(crate) announcements: Counter,
    /// Frames dropped on the backup port, per stack thread (one writer each).
    backup_dropped: Box<[Counter]>,
}

impl BondShared {
    /// A bond over `members` with MAC `mac`, checked every `miimon`, for
    /// `threads` stack threads.
    pub(crate) fn new(
        members: [Member; 2],
        mac: [u8; 6],
        miimon: Duration,
        threads: usize,
    ) -> Self {
        Self {
            members,
            mac,
            miimon,
            active: AtomicUsize::new(0),
            any_up: AtomicBool::new(true),
            failovers: AtomicU64::new(0),
            announcements: Counter::default(),
            backup_dropped: (0..threads).map(|_| Counter::default()).collect(),
        }
    }

    /// The port carrying traffic.
    #[inline]
    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// One link check: reads both links, applies them to `bond` and
    /// publishes the result. Returns whether the active port changed.
    fn check(&self, eal: &Eal, bond: &mut Bond) -> bool {
        let links = self
            .members
            .each_ref()
            .map(|m| dpdk::bond::link_up(eal, m.port_id, m.iface.as_deref()));
        for (m, up) in self.members.iter().zip(links) {
            m.link_up.store(up, Ordering::Relaxed);
        }
        let change = bond.update(&links);
        self.failovers.store(bond.failovers, Ordering::Relaxed);
        self.any_up
            .store(bond.active().is_some(), Ordering::Relaxed);
        match change {
            Some(dpdk::bond::Change::Failover { from, to }) => {
                let moved = self.active.swap(to, Ordering::AcqRel) != to;
                if from.is_some() {
                    tracing::warn!(
                        from = %self.members[1 - to].name,
                        to = %self.members[to].name,
                        "bond: traffic moves to the other port; announcing with gratuitous ARP"
                    );
                }
                moved
            }
            Some(dpdk::bond::Change::AllDown { from }) => {
                tracing::error!(
                    port = %self.members[from].name,
                    "bond: no port has a link; frames are dropped until one comes back"
                );
                false
            }
            None => false,
        }
    }

    /// Counts `n` frames thread `thread` dropped on the backup port.
    #[inline]
    pub(crate) fn count_backup_drop(&self, thread: usize, n: usize) {
        if let Some(c) = self.backup_dropped.get(thread) {
            c.add(n as u64);
        }
    }

    /// The bond as `gazellectl lstack show` prints it.
    pub(crate) fn status(&self, eal: &Eal) -> BondStatus {
        let active = self.active();
        BondStatus {
            mode: 1,
            mac: crate::fmt_mac(self.mac),
            miimon_ms: u32::try_from(self.miimon.as_millis()).unwrap_or(u32::MAX),
            active: self.any_up.load(Ordering::Relaxed).then_some(active),
            failovers: self.failovers.load(Ordering::Relaxed),
            announcements: self.announcements.get(),
            backup_dropped: self.backup_dropped.iter().map(Counter::get).sum(),
            ports: self
                .members
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let st = dpdk::Port::stats_by_id(eal, m.port_id).unwrap_or_default();
                    BondPort {
                        port_id: m.port_id,
                        name: m.name.clone(),
                        iface: m.iface.clone(),
                        link_up: m.link_up.load(Ordering::Relaxed),
                        active: i == active,
                        counters: PortCounters {
                            rx_packets: st.rx_packets,
                            tx_packets: st.tx_packets,
                            rx_bytes: st.rx_bytes,
                            tx_bytes: st.tx_bytes,
                            rx_missed: st.rx_missed,
                            rx_errors: st.rx_errors,
                            tx_errors: st.tx_errors,
                            rx_nombuf: st.rx_nombuf,
                        },
                    }
                })
                .collect(),
        }
    }
}

/// Starts the link monitor of `shared`'s bond: a thread that checks the
/// links every `bond_miimon` ms until the stack shuts down, and wakes the
/// stack threads when the active port changes (a sleeping thread waits on
/// the old port's queue).
pub(crate) fn spawn_monitor(
    eal: Eal,
    shared: Arc<StackShared>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("lstack-bond".into())
        .spawn(move || {
            let Some(bond_shared) = shared.bond.as_deref() else {
                return;
            };
            let mut bond = Bond::new(2);
            while !shared.shutdown.load(Ordering::Relaxed) {
                if bond_shared.check(&eal, &mut bond) {
                    for t in shared.threads.iter() {
                        t.mark_dirty(t.control_shard());
                    }
                }
                let mut left = bond_shared.miimon;
                while !left.is_zero() && !shared.shutdown.load(Ordering::Relaxed) {
                    let nap = left.min(SHUTDOWN_POLL);
                    std::thread::sleep(nap);
                    left -= nap;
                }
            }
        })
}

/// A stack thread's receive side on a bond: queue `i` of both ports.
#[derive(Debug)]
pub struct BondRx {
    queues: [RxQueue; 2],
    active: usize,
    thread: usize,
    shared: Arc<BondShared>,
}

impl BondRx {
    /// Thread `thread`'s queues `queues` (one per port) of `shared`'s bond.
    pub(crate) fn new(queues: [RxQueue; 2], thread: usize, shared: Arc<BondShared>) -> Self {
        let active = shared.active();
        Self {
            queues,
            active,
            thread,
            shared,
        }
    }

    /// Receives at most `max` frames from the active port into `batch`;
    /// what waits on the backup port is dropped and counted.
    #[inline]
    pub fn rx_burst_max(&mut self, batch: &mut MbufBatch, max: usize) -> usize {
        let mut backup = MbufBatch::new();
        let n = self.queues[1 - self.active].rx_burst(&mut backup);
        if n > 0 {
            self.shared.count_backup_drop(self.thread, n);
        }
        self.queues[self.active].rx_burst_max(batch, max)
    }

    /// The active port's queue (to sleep on).
    pub fn active_queue(&self) -> &RxQueue {
        &self.queues[self.active]
    }

    /// The active port's queue, mutably (to arm its interrupt).
    pub fn active_queue_mut(&mut self) -> &mut RxQueue {
        &mut self.queues[self.active]
    }

    /// The port the bond has made active since this thread last looked,
    /// if it changed.
    #[inline]
    pub(crate) fn moved(&self) -> Option<usize> {
        let now = self.shared.active();
        (now != self.active).then_some(now)
    }

    /// Receives from port `active` from now on.
    pub(crate) fn follow(&mut self, active: usize) {
        self.active = active;
    }
}

/// A stack thread's transmit side on a bond: queue `i` of both ports.
#[derive(Debug)]
pub struct BondTx {
    queues: [TxQueue; 2],
    active: usize,
}

impl BondTx {
    /// Thread queues `queues` (one per port), sending on port `active`.
    pub(crate) fn new(queues: [TxQueue; 2], active: usize) -> Self {
        Self { queues, active }
    }

    /// Sends what it can of `batch` on the active port.
    #[inline]
    pub fn tx_burst(&mut self, batch: &mut MbufBatch) -> usize {
        self.queues[self.active].tx_burst(batch)
    }

    /// Whether both ports compute transmit checksums.
    pub fn tx_checksum(&self) -> bool {
        self.queues.iter().all(|q| q.port_info().tx_checksum())
    }

    /// Sends on port `active` from now on.
    pub(crate) fn follow(&mut self, active: usize) {
        self.active = active;
    }
}
