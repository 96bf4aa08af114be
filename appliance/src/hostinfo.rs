//! Host facts for the dashboard: CPUs, NUMA layout, memory, hugepage use,
//! load, uptime and kernel.
//!
//! The NUMA layout and hugepage use come from the sysfs/procfs tree under
//! the `root` given (so they can be read from a captured tree, see
//! [`crate::hugepages::capture`]); the rest comes from `sysinfo`, which
//! always reads the running host.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

use crate::hugepages::{self, HugepageError, HugepageStatus};

/// Everything the dashboard shows about the machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostInfo {
    /// The host name.
    pub hostname: Option<String>,
    /// The kernel release (`uname -r`).
    pub kernel_version: Option<String>,
    /// The distribution and version, like `Debian GNU/Linux 12 (bookworm)`.
    pub os: Option<String>,
    /// Logical CPUs.
    pub cpu_count: usize,
    /// Physical cores, when the kernel says.
    pub physical_cores: Option<usize>,
    /// The CPU model (`model name` of the first CPU).
    pub cpu_model: Option<String>,
    /// NUMA nodes with their CPUs and memory; empty on a kernel without
    /// NUMA in sysfs.
    pub numa_nodes: Vec<NumaNode>,
    /// Memory and swap.
    pub memory: Memory,
    /// Hugepage pools, mounts and THP settings.
    pub hugepages: HugepageStatus,
    /// Load averages.
    pub load_average: LoadAverage,
    /// Seconds since boot.
    pub uptime_secs: u64,
}

/// One NUMA node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NumaNode {
    /// The node number.
    pub id: u32,
    /// Its CPUs, ascending (empty for a memory-only node).
    pub cpus: Vec<u32>,
    /// Its memory, bytes (`MemTotal` of the node's `meminfo`).
    pub memory_total_bytes: Option<u64>,
    /// Its free memory, bytes (`MemFree`).
    pub memory_free_bytes: Option<u64>,
}

/// Machine-wide memory, bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Memory {
    /// All RAM.
    pub total_bytes: u64,
    /// RAM available to new work without swapping (`MemAvailable`).
    pub available_bytes: u64,
    /// RAM not used at all (`MemFree`).
    pub free_bytes: u64,
    /// Swap space.
    pub swap_total_bytes: u64,
    /// Swap in use.
    pub swap_used_bytes: u64,
}

/// Run-queue load averages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoadAverage {
    /// Over one minute.
    pub one: f64,
    /// Over five minutes.
    pub five: f64,
    /// Over fifteen minutes.
    pub fifteen: f64,
}

/// Errors of collecting host facts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostInfoError {
    /// Reading the hugepage state failed.
    #[error("hugepage status: {0}")]
    Hugepages(#[from] HugepageError),
}

/// Collects the facts; NUMA and hugepages from the tree under `root`.
pub fn collect(root: &Path) -> Result<HostInfo, HostInfoError> {
    let system = System::new_with_specifics(
        RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing())
            .with_memory(MemoryRefreshKind::everything()),
    );
    let load = System::load_average();
    let cpu_model = system
        .cpus()
        .first()
        .map(|cpu| cpu.brand().trim().to_owned())
        .filter(|brand| !brand.is_empty());
    Ok(HostInfo {
        hostname: System::host_name(),
        kernel_version: System::kernel_version(),
        os: System::long_os_version(),
        cpu_count: system.cpus().len(),
        physical_cores: System::physical_core_count(),
        cpu_model,
        numa_nodes: numa_nodes(root),
        memory: Memory {
            total_bytes: system.total_memory(),
            available_bytes: system.available_memory(),
            free_bytes: system.free_memory(),
            swap_total_bytes: system.total_swap(),
            swap_used_bytes: system.used_swap(),
        },
        hugepages: hugepages::status(root)?,
        load_average: LoadAverage {
            one: load.one,
            five: load.five,
            fifteen: load.fifteen,
        },
        uptime_secs: System::uptime(),
    })
}

/// The NUMA nodes under `root` with their CPUs (`cpulist`) and memory
/// (`meminfo`); a value sysfs does not give is left empty.
pub fn numa_nodes(root: &Path) -> Vec<NumaNode> {
    let base = root.join("sys/devices/system/node");
    hugepages::nodes(root)
        .into_iter()
        .map(|id| {
            let dir = base.join(format!("node{id}"));
            let cpus = fs::read_to_string(dir.join("cpulist"))
                .ok()
                .and_then(|text| hugepages::parse_kernel_list(&text))
                .unwrap_or_default();
            let meminfo = fs::read_to_string(dir.join("meminfo")).unwrap_or_default();
            let bytes = |key| hugepages::meminfo_kib(&meminfo, key).map(|kib| kib * 1024);
            NumaNode {
                id,
                cpus,
                memory_total_bytes: bytes("MemTotal"),
                memory_free_bytes: bytes("MemFree"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's facts against the kernel's own files.
    #[test]
    fn collects_this_host() {
        let root = Path::new("/");
        let info = collect(root).unwrap();
        let online = fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
        let online = hugepages::parse_kernel_list(&online).unwrap();
        assert_eq!(info.cpu_count, online.len());
        let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(info.kernel_version.as_deref(), Some(release.trim()));
        let mut node_cpus: Vec<u32> = info
            .numa_nodes
            .iter()
            .flat_map(|n| n.cpus.clone())
            .collect();
        node_cpus.sort_unstable();
        assert_eq!(node_cpus, online, "every online CPU is on one node");
        assert!(info.memory.available_bytes <= info.memory.total_bytes);
        assert!(info.memory.total_bytes > 0 && info.uptime_secs > 0);
        assert!(info.cpu_model.is_some());
        // Totals only: other programs take and free pages meanwhile.
        let totals = |pools: &[hugepages::PoolStatus]| -> Vec<_> {
            pools.iter().map(|p| (p.node, p.size, p.total)).collect()
        };
        let now = hugepages::status(root).unwrap();
        assert_eq!(totals(&info.hugepages.pools), totals(&now.pools));
        let json = serde_json::to_value(&info).unwrap();
        assert!(json["load_average"]["one"].is_number(), "{json}");
    }

    #[test]
    fn numa_nodes_from_a_tree() {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().join("sys/devices/system/node");
        for (node, cpus, meminfo) in [
            (
                "node0",
                "0-1,4\n",
                "Node 0 MemTotal: 1000 kB\nNode 0 MemFree: 400 kB\n",
            ),
            ("node1", "\n", "Node 1 MemTotal: 2000 kB\n"),
        ] {
            fs::create_dir_all(base.join(node)).unwrap();
            fs::write(base.join(node).join("cpulist"), cpus).unwrap();
            fs::write(base.join(node).join("meminfo"), meminfo).unwrap();
        }
        fs::create_dir_all(base.join("power")).unwrap();
        let nodes = numa_nodes(root.path());
        assert_eq!(
            nodes,
            [
                NumaNode {
                    id: 0,
                    cpus: vec![0, 1, 4],
                    memory_total_bytes: Some(1_024_000),
                    memory_free_bytes: Some(409_600),
                },
                NumaNode {
                    id: 1,
                    cpus: vec![],
                    memory_total_bytes: Some(2_048_000),
                    memory_free_bytes: None,
                },
            ]
        );
    }
}
