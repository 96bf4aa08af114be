//! The appliance's machine side: everything gazelle asks an operator to do by
//! hand before the data path can run, done from one declarative config.
//!
//! - [`hugepages`]: reserving hugepages per NUMA node and mounting hugetlbfs
//!   (the Rust twin of `scripts/setup-hugepages.sh`: same rules, same errors);
//! - [`hostinfo`]: host facts for the dashboard (CPUs, NUMA layout, memory,
//!   hugepage use, load).
//!
//! Every function that reads or writes the kernel's state takes the root of
//! the tree it works on (`/` on a real machine), so its logic is tested
//! against real directory trees as well as against the host itself.

pub mod nic;
pub mod sysctl;
pub mod config;
pub mod store;
