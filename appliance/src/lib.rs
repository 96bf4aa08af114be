//! The appliance's machine side: everything gazelle asks an operator to do by
//! hand before the data path can run, done from one declarative config.
//!
//! - [`hugepages`]: reserving hugepages per NUMA node and mounting hugetlbfs
//!   (the Rust twin of `scripts/setup-hugepages.sh`: same rules, same errors);
//! - [`hostinfo`]: host facts for the dashboard (CPUs, NUMA layout, memory,
//!   hugepage use, load).
//! - [`nic`]: the PCI NIC inventory (driver, interface, link, NUMA node,
//!   IOMMU group, routes) and `dpdk-devbind`-style driver binding, planned
//!   (printable as a dry run, refusing what would cut the operator off) apart
//!   from performed (verified, restoring the previous driver on failure);
//! - [`sysctl`]: the kernel settings the data path needs (rp_filter on the
//!   exception interface), applied with their previous values recorded;
//! - [`config`]: the appliance config (`/etc/gazelle/appliance.toml`), one
//!   file holding or referencing the ltran and lstack configs, validated as
//!   a whole with errors that name the field path;
//! - [`store`]: running vs saved config, atomic saves with history, and
//!   confirm-or-rollback for changes that can cut the operator off;
//! - [`supervisor`]: ltran and the lstack applications started in
//!   dependency order, restarted with backoff, stopped in reverse order,
//!   their output copied into `tracing`;
//! - [`machine`]: the store's [`store::Applier`] for the real machine:
//!   hugepages, NIC binding, sysctls, then the supervised processes, with
//!   what it changed recorded so a rollback puts it back;
//! - [`api`]: the local control API (typed JSON-lines requests on a
//!   root-only UNIX socket) that `appliancectl` and the web UI use.
//!
//! The binaries are `applianced` (the daemon: config store, machine
//! applier, supervisor, control socket, rollback watcher) and
//! `appliancectl` (its command line front end).
//!
//! Every function that reads or writes the kernel's state takes the root of
//! the tree it works on (`/` on a real machine), so its logic is tested
//! against real directory trees as well as against the host itself.

#![deny(unsafe_code)]

pub mod api;
pub mod config;
pub mod hostinfo;
pub mod hugepages;
pub mod machine;
pub mod nic;
pub mod store;
pub mod supervisor;
pub mod sysctl;
