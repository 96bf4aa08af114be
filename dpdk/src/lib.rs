//! Safe owners over the system DPDK.
//!
//! Every raw pointer from `dpdk-sys` is owned by exactly one value here, which
//! frees it in `Drop`:
//! - [`eal`]: process-wide EAL initialisation from an argument list (once);
//! - [`mempool`]: packet-buffer pools ([`Mempool`]);
//! - [`mbuf`]: one owned packet buffer ([`Mbuf`]) and fixed-size bursts of them
//!   ([`MbufBatch`]), so the hot path never allocates;
//! - [`port`]: ethdev ports, configured and started as a whole, whose queues are
//!   handed out once as [`RxQueue`]/[`TxQueue`] values (DPDK queues are not
//!   thread-safe, so each is `Send` but not `Sync`);
//! - [`ring`]: `rte_ring`s carrying mbufs between threads and processes;
//! - [`cleanup`]: what a primary whose start failed after the EAL came up
//!   puts back (runtime directory, hugepage files);
//! - [`af_packet`]: frames the kernel dropped at a `net_af_packet` port's
//!   sockets, which that PMD does not count, so a port's `rx_missed` does;
//! - [`af_xdp`]: the sockets a `net_af_xdp` port's thread sleeps on;
//! - [`bond`]: active-backup bonding (ltran's and a standalone lstack's):
//!   which port is active, link checks, failover announcements.
//!
//! Failures are [`DpdkError`]s: what was being attempted, and DPDK's own
//! `rte_strerror` text for the `rte_errno` or negative return it gave.

pub mod af_packet;
pub mod af_xdp;
pub mod bond;
pub mod cleanup;
pub mod eal;
pub mod error;
pub mod mbuf;
pub mod mempool;
pub mod owner;
pub mod port;
pub mod ring;

pub use eal::Eal;
pub use error::DpdkError;
pub use mbuf::{Mbuf, MbufBatch, BURST_SIZE};
pub use mempool::Mempool;
pub use port::{
    wait_for_frames, LinkStatus, Port, PortConfig, PortInfo, PortStats, RxQueue, RxWakeup, TxQueue,
    Woken, MAX_ETHPORTS,
};
pub use ring::Ring;

/// Reads the CPU's time-stamp counter (cheap, monotonic on constant-TSC CPUs).
pub fn tsc_cycles() -> u64 {
    // SAFETY: reads a CPU counter; no memory is touched.
    unsafe { dpdk_sys::shim_rte_get_tsc_cycles() }
}

/// Time-stamp counter ticks per second (measured by the EAL at init).
pub fn tsc_hz() -> u64 {
    // SAFETY: reads a value the EAL computed; no memory is touched.
    unsafe { dpdk_sys::shim_rte_get_tsc_hz() }
}
