//! Putting back what the EAL took when a start fails after it came up.
//!
//! A primary's EAL leaves its runtime directory (`/var/run/dpdk/<prefix>`
//! for root) and one hugepage file per segment (`<hugedir>/<prefix>map_<n>`)
//! behind when the process ends; the files keep their hugepages from the
//! pool until a primary of the same prefix starts again, which after a
//! failed start may be never. [`after_failed_start`] removes them.
//!
//! Only a process whose EAL initialised as primary may call it: then the
//! prefix is its own (a second primary of a live prefix fails in EAL init).

use std::{
    io::ErrorKind,
    path::{Path, PathBuf},
};

/// Releases the EAL (`rte_eal_cleanup`) and removes the runtime directory
/// and the hugepage files of `prefix`. Every DPDK object (pools, ports,
/// rings) must be dropped already. Failures are logged, not returned: the
/// start has failed already and says why.
pub fn after_failed_start(args: &[String], prefix: &str) {
    // SAFETY: the EAL was initialised by this process and every DPDK
    // object made since has been dropped (the caller's contract), so no
    // pointer into the memory this unmaps is left; nothing uses DPDK after.
    let rc = unsafe { dpdk_sys::rte_eal_cleanup() };
    if rc != 0 {
        tracing::warn!(
            rc,
            "rte_eal_cleanup failed; removing the prefix's files anyway"
        );
    }
    let dir = runtime_dir(prefix);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => tracing::info!(dir = %dir.display(), "removed the EAL runtime directory"),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(dir = %dir.display(), %e, "cannot remove the EAL runtime directory")
        }
    }
    for huge_dir in huge_dirs(args) {
        let Ok(entries) = std::fs::read_dir(&huge_dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if is_hugepage_file_of(&entry.file_name().to_string_lossy(), prefix) {
                let path = entry.path();
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(file = %path.display(), %e, "cannot remove a hugepage file");
                }
            }
        }
    }
}

/// The `--file-prefix` EAL arguments `args` give (the last one), or DPDK's
/// default, `rte`.
pub fn file_prefix(args: &[String]) -> String {
    let mut prefix = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--file-prefix" {
            prefix = it.next().cloned();
        } else if let Some(p) = a.strip_prefix("--file-prefix=") {
            prefix = Some(p.to_owned());
        }
    }
    prefix.unwrap_or_else(|| "rte".to_owned())
}

/// Where the EAL keeps the runtime files of `prefix`: `/var/run/dpdk/` for
/// root, else `$XDG_RUNTIME_DIR/dpdk/` or `/tmp/dpdk/` (DPDK's
/// `eal_create_runtime_dir`).
fn runtime_dir(prefix: &str) -> PathBuf {
    // SAFETY: getuid cannot fail.
    let base = if unsafe { libc::getuid() } == 0 {
        PathBuf::from("/var/run")
    } else {
        std::env::var_os("XDG_RUNTIME_DIR").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
    };
    base.join("dpdk").join(prefix)
}

/// The hugetlbfs directories the EAL used: `--huge-dir`, else every
/// hugetlbfs mount.
fn huge_dirs(args: &[String]) -> Vec<PathBuf> {
    let mut given = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--huge-dir" {
            given.extend(it.next().map(PathBuf::from));
        } else if let Some(d) = a.strip_prefix("--huge-dir=") {
            given.push(PathBuf::from(d));
        }
    }
    if !given.is_empty() {
        return given;
    }
    std::fs::read_to_string("/proc/mounts")
        .map(|m| hugetlbfs_mounts(&m))
        .unwrap_or_default()
}

fn hugetlbfs_mounts(mounts: &str) -> Vec<PathBuf> {
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"hugetlbfs")).then(|| Path::new(f[1]).to_owned())
        })
        .collect()
}

/// `<prefix>map_<n>`, the EAL's name for a hugepage file (exactly that, so
/// prefix `a` never takes `amap_map_0` of prefix `amap_`).
fn is_hugepage_file_of(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix("map_"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_prefix_is_the_last_given_or_rte() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(file_prefix(&args(&["-l", "0"])), "rte");
        assert_eq!(
            file_prefix(&args(&["--file-prefix=a", "--file-prefix", "b"])),
            "b"
        );
        assert_eq!(file_prefix(&args(&["--file-prefix", "x"])), "x");
    }

    #[test]
    fn hugepage_files_of_a_prefix_and_no_other() {
        assert!(is_hugepage_file_of("ltranmap_0", "ltran"));
        assert!(is_hugepage_file_of("ltranmap_17", "ltran"));
        assert!(!is_hugepage_file_of("ltranXmap_0", "ltran"));
        assert!(!is_hugepage_file_of("amap_map_0", "a"));
        assert!(!is_hugepage_file_of("ltranmap_", "ltran"));
        assert!(!is_hugepage_file_of("rtemap_0", "ltran"));
    }

    #[test]
    fn huge_dir_from_the_arguments_else_the_mounts() {
        let args: Vec<String> = ["-l", "0", "--huge-dir", "/mnt/a", "--huge-dir=/mnt/b"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            huge_dirs(&args),
            [PathBuf::from("/mnt/a"), PathBuf::from("/mnt/b")]
        );
        let mounts = "proc /proc proc rw 0 0\n\
                      nodev /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n\
                      none /mnt/huge1G hugetlbfs rw,pagesize=1024M 0 0\n";
        assert_eq!(
            hugetlbfs_mounts(mounts),
            [
                PathBuf::from("/dev/hugepages"),
                PathBuf::from("/mnt/huge1G")
            ]
        );
    }
}
