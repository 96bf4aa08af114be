//! The hold a hugepage test takes on the host, shared by the script's tests
//! and the Rust twin's (each test binary uses part of it).

#![allow(dead_code)]

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
};

use appliance::hugepages::{Pool, PoolSnapshot};
use tempfile::TempDir;

/// A test's turn on the host (tests that change or compare pools take
/// turns), the pool counts to put back and a directory for its mounts. On
/// drop, even after a failed assertion, its mounts go and the pools are put
/// back as they were.
pub struct Host {
    pools: PoolSnapshot,
    dir: TempDir,
    _turn: MutexGuard<'static, ()>,
}

impl Host {
    pub fn new() -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests reserve real hugepages and mount hugetlbfs: run them as root"
        );
        static TURN: Mutex<()> = Mutex::new(());
        let turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Self {
            pools: PoolSnapshot::take(Path::new("/")).expect("read the host's pools"),
            dir: tempfile::tempdir().unwrap(),
            _turn: turn,
        }
    }

    /// The test's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `name` inside the test's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The count `pool` had when the test started.
    pub fn start(&self, pool: Pool) -> u64 {
        self.pools.count(pool).unwrap()
    }

    /// Makes `pool` hold at least `pages` pages, for a test that needs some
    /// reserved whatever the machine had (a new machine has none); put back
    /// with the rest on drop. Returns the count it holds now.
    pub fn reserve_at_least(&self, pool: Pool, pages: u64) -> u64 {
        let path = pool.dir(Path::new("/")).join("nr_hugepages");
        let count =
            |path: &Path| -> u64 { fs::read_to_string(path).unwrap().trim().parse().unwrap() };
        if count(&path) < pages {
            fs::write(&path, format!("{pages}\n")).unwrap();
        }
        let now = count(&path);
        assert!(
            now >= pages,
            "the kernel gave {pool} only {now} of the {pages} pages this test needs"
        );
        now
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for mount in mounts_below(self.dir.path()).into_iter().rev() {
            if let Err(e) = nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH) {
                eprintln!("could not unmount {}: {e}", mount.display());
            }
        }
        if let Err(e) = self.pools.restore() {
            eprintln!("could not put the host's hugepage pools back: {e}");
        }
    }
}

/// Every mount of this process: (mount point, filesystem type, super
/// options), in mount order, read straight from `/proc/self/mountinfo`.
pub fn mountinfo() -> Vec<(PathBuf, String, String)> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .map(|line| {
            let (before, after) = line.split_once(" - ").unwrap();
            let path = before.split(' ').nth(4).unwrap();
            let mut after = after.split(' ');
            let fstype = after.next().unwrap().to_owned();
            let options = after.nth(1).unwrap_or_default().to_owned();
            (PathBuf::from(path), fstype, options)
        })
        .collect()
}

/// Mount points at or below `dir`, in mount order.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    mountinfo()
        .into_iter()
        .map(|(path, _, _)| path)
        .filter(|path| path.starts_with(dir))
        .collect()
}
