//! A reusable network test bed: a DPDK process on one end of a veth pair, real kernel
//! tools in a network namespace on the other.
//!
//! Integration tests of the stack need a *real* remote host: a kernel that answers ARP
//! and NDP, runs `curl`, `redis-benchmark` or `ping`, and checks every checksum. This
//! crate builds one per test, cheaply and without leaking anything:
//!
//! - [`topology`]: [`Topology`] creates a network namespace (the peer host) and a veth
//!   pair. `host_if` stays in the root namespace with no address, for a DPDK
//!   `net_af_packet` vdev to own; `peer_if` lives in the namespace with the peer's
//!   addresses, and a second interface there (standing in for a `dummy`, which the
//!   test kernels lack) carries a "remote" address on another subnet, reachable from
//!   the stack through the peer as its gateway. Everything a topology creates is
//!   registered for removal the moment it exists, so dropping a half-built topology
//!   cleans up too; [`cleanup_stale`] removes what a crashed run left behind. Kernel
//!   programs run in the peer through [`Topology::cmd`], [`Topology::run`] and
//!   [`Topology::spawn`]; [`Topology::in_netns`] binds kernel sockets there directly.
//!   With [`TopologyOptions::kernel_twin`] a topology also builds a [`KernelTwin`]: the
//!   same network once more, all kernel, with the stack's addresses in an "app"
//!   namespace of their own, so that a program can be run once on lstack and once on
//!   the kernel and seen from identical peers.
//! - [`mac`]: the [`MacAddr`] type used for the stack's and the peer's addresses.
//! - [`process`]: running programs with errors that carry the command line and its
//!   output ([`run_checked`]), children that are killed and reaped on drop
//!   ([`ChildGuard`]), and bounded polling for a listening TCP port
//!   ([`wait_tcp_listening`]).
//! - [`hugepages`]: reserving 2 MiB hugepages and mounting hugetlbfs for DPDK, plus a
//!   unique `--file-prefix` per DPDK process.
//! - [`eal`]: the EAL arguments that put a DPDK port on a topology's `host_if` through
//!   `net_af_packet` ([`eal_args_af_packet`], [`AfPacketEal`]).
//!
//! # Rules
//!
//! - Only loopback and addresses inside namespaces the test created itself are ever
//!   targeted. The default addresses (10.88.0.0/24, 10.89.0.0/24, fd00:88::/64,
//!   fd00:89::/64) exist only inside a topology's namespaces (its peer, and its kernel
//!   twin's); nothing in the root namespace gets an address, a route or a neighbour
//!   entry.
//! - Tests that need root (namespaces, veths, hugepages) call [`require_root`] first, so
//!   that they fail loudly when run unprivileged instead of silently passing.
//! - Names are unique per process and per topology (prefix, pid, counter), so tests in
//!   one binary and test binaries run side by side never collide.

#![deny(unsafe_code)]

pub mod apps;
pub mod eal;
pub mod hugepages;
pub mod mac;
pub mod process;
pub mod topology;

pub use eal::{eal_args_af_packet, lstack_config, AfPacketEal, Medium};
pub use hugepages::HugeEnv;
pub use mac::MacAddr;
pub use process::{run_checked, wait_tcp_listening, ChildGuard};
pub use topology::{cleanup_stale, in_namespace, KernelTwin, Link, Topology, TopologyOptions};

/// Panics, with a message saying why, unless the process runs as root.
///
/// Call this first in every test that creates namespaces, veths or hugepages: such a
/// test must fail when it cannot run, never pass without having run.
///
/// # Panics
///
/// When the effective user id is not 0.
#[track_caller]
pub fn require_root() {
    let euid = nix::unistd::geteuid();
    assert!(
        euid.is_root(),
        "this test needs root (CAP_NET_ADMIN, hugepages): run as root, as CI does \
         (effective uid is {euid})"
    );
}
