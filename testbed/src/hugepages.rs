//! Hugepages for DPDK tests: reserve enough 2 MiB pages, make sure hugetlbfs is
//! mounted, and give every DPDK process its own `--file-prefix`.
//!
//! Each DPDK process of a test uses its own file prefix and `--huge-unlink`, so
//! processes never share or leak hugepage files; [`remove_dpdk_runtime_dir`] removes
//! the small runtime directory EAL still leaves under `/var/run/dpdk`.

use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context};
use nix::fcntl::{Flock, FlockArg};
use nix::mount::MsFlags;

/// The pool of 2 MiB pages (the x86-64 default size, the only one tests use).
const NR_2M_PAGES: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
/// Where the 2 MiB hugetlbfs is (or gets) mounted.
const HUGE_DIR: &str = "/dev/hugepages";
/// Serialises changes to the page pool between test processes running side by side.
const LOCK_FILE: &str = "/run/lock/netns-testbed-hugepages.lock";
/// Where EAL keeps per-prefix runtime files (primary process running as root).
const DPDK_RUNTIME_DIR: &str = "/var/run/dpdk";

/// Serial numbers for [`dpdk_file_prefix`].
static PREFIX_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A usable hugepage setup, as returned by [`ensure`].
#[derive(Clone, Debug)]
pub struct HugeEnv {
    /// A hugetlbfs mount of 2 MiB pages, for EAL's `--huge-dir`.
    pub huge_dir: PathBuf,
    /// Size of a page in bytes (2 MiB).
    pub page_size: u64,
    /// Pages in the pool after [`ensure`] (at least what was asked for).
    pub total_pages: u64,
}

/// Makes sure at least `min_2m_pages` 2 MiB hugepages exist and hugetlbfs is mounted at
/// `/dev/hugepages`. Needs root.
///
/// The pool is only ever grown, never shrunk. Fails, saying how much memory is free,
/// when the kernel cannot provide the pages.
pub fn ensure(min_2m_pages: u64) -> anyhow::Result<HugeEnv> {
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .with_context(|| format!("opening lock file {LOCK_FILE}"))?;
    let _lock = Flock::lock(lock, FlockArg::LockExclusive)
        .map_err(|(_, errno)| errno)
        .with_context(|| format!("locking {LOCK_FILE}"))?;

    let mut total = read_u64(NR_2M_PAGES)?;
    if total < min_2m_pages {
        tracing::info!(from = total, to = min_2m_pages, "reserving 2 MiB hugepages");
        fs::write(NR_2M_PAGES, min_2m_pages.to_string())
            .with_context(|| format!("writing {min_2m_pages} to {NR_2M_PAGES}"))?;
        total = read_u64(NR_2M_PAGES)?;
        if total < min_2m_pages {
            let free = meminfo_kb("MemFree").map_or("unknown".into(), |kb| format!("{kb} kB"));
            bail!(
                "asked the kernel for {min_2m_pages} 2 MiB hugepages ({} MiB) in \
                 {NR_2M_PAGES} but it only has {total}: MemFree is {free}; free memory \
                 (or `echo 3 > /proc/sys/vm/drop_caches`) and retry",
                min_2m_pages * 2
            );
        }
    }
    ensure_mounted(Path::new(HUGE_DIR))?;
    Ok(HugeEnv {
        huge_dir: PathBuf::from(HUGE_DIR),
        page_size: 2 << 20,
        total_pages: total,
    })
}

/// Mounts a 2 MiB hugetlbfs at `dir` unless one is there already.
fn ensure_mounted(dir: &Path) -> anyhow::Result<()> {
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [_, mount_point, fs_type, options, ..] = fields[..] {
            if Path::new(mount_point) != dir {
                continue;
            }
            if fs_type != "hugetlbfs" {
                bail!(
                    "{} is mounted, but as {fs_type}, not hugetlbfs",
                    dir.display()
                );
            }
            // Without pagesize= the mount uses the default size, 2 MiB on x86-64.
            if options.contains("pagesize=") && !options.contains("pagesize=2M") {
                bail!(
                    "{} is a hugetlbfs of other than 2 MiB pages ({options})",
                    dir.display()
                );
            }
            return Ok(());
        }
    }
    tracing::info!(dir = %dir.display(), "mounting hugetlbfs");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    nix::mount::mount(
        Some("nodev"),
        dir,
        Some("hugetlbfs"),
        MsFlags::empty(),
        Some("pagesize=2M"),
    )
    .with_context(|| format!("mount -t hugetlbfs -o pagesize=2M nodev {}", dir.display()))
}

fn read_u64(path: &str) -> anyhow::Result<u64> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    text.trim()
        .parse()
        .with_context(|| format!("{path} holds {text:?}, not a number"))
}

/// A field of /proc/meminfo, in kB.
fn meminfo_kb(field: &str) -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    meminfo.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// An EAL `--file-prefix` unique to this process and call: `<test_name>_<pid>_<n>`,
/// with `test_name` cut down to at most 24 ASCII letters, digits and `_`.
pub fn dpdk_file_prefix(test_name: &str) -> String {
    let name: String = test_name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(24)
        .collect();
    let serial = PREFIX_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{name}_{}_{serial}", std::process::id())
}

/// Removes the runtime directory (`/var/run/dpdk/<prefix>`) EAL leaves behind after a
/// primary process with `--file-prefix=<prefix>` exited. Already gone is fine.
pub fn remove_dpdk_runtime_dir(prefix: &str) -> anyhow::Result<()> {
    if prefix.is_empty() || prefix.contains('/') || prefix.starts_with('.') {
        bail!("{prefix:?} is not a DPDK file prefix");
    }
    let dir = Path::new(DPDK_RUNTIME_DIR).join(prefix);
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        other => other.with_context(|| format!("removing {}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_prefixes_are_unique_and_tame() {
        let a = dpdk_file_prefix("my test::case/with-odd chars and a long tail");
        let b = dpdk_file_prefix("my test::case/with-odd chars and a long tail");
        assert_ne!(a, b);
        assert!(a.starts_with("my_test__case_with_odd_c_"), "{a}");
        assert!(
            a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{a}"
        );
    }

    #[test]
    fn meminfo_fields_are_read() {
        assert!(meminfo_kb("MemTotal").is_some_and(|kb| kb > 0));
        assert_eq!(meminfo_kb("NoSuchField"), None);
    }

    #[test]
    fn runtime_dir_removal_refuses_paths() {
        assert!(remove_dpdk_runtime_dir("../etc").is_err());
        assert!(remove_dpdk_runtime_dir("").is_err());
    }
}
