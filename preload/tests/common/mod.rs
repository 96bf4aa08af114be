//! Shared set-up of the preload integration tests: where `liblstack.so` is, an lstack
//! configuration file for a topology (the same settings as the stack's own integration
//! tests in `stack/tests/common`), and scratch directories that remove themselves.

#![allow(dead_code)]

use std::{
    fs,
    path::{Path, PathBuf},
};

use gazelle_config::LstackConfig;
use netns_testbed::{hugepages, AfPacketEal, Topology};

/// `liblstack.so` of the profile this test binary was built in: the test binary is
/// `target/<profile>/deps/<name>-<hash>`, the library `target/<profile>/liblstack.so`.
///
/// # Panics
///
/// When it is not there, saying how to build it.
pub fn liblstack() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test binary");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let lib = profile_dir.join("liblstack.so");
    assert!(
        lib.is_file(),
        "{} is missing: build it with cargo build --release -p lstack-preload \
         (the test binary is {})",
        lib.display(),
        exe.display()
    );
    lib
}

/// The lstack configuration for a stack on `topo.host_if` (`net_af_packet`), with the
/// topology's addresses, the peer as gateway, the stack thread on CPU 1, and a DPDK
/// `--file-prefix` of its own (returned too, to remove its runtime directory later).
pub fn config_for(topo: &Topology, name: &str) -> (LstackConfig, String) {
    let huge = hugepages::ensure(256).expect("reserving 256 x 2 MiB hugepages");
    let prefix = hugepages::dpdk_file_prefix(name);
    let cfg = netns_testbed::lstack_config(topo, &huge, &AfPacketEal::default(), &prefix)
        .expect("the test configuration");
    (cfg, prefix)
}

/// A directory under the system temporary directory, removed with everything in it
/// when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `<tmp>/<name>-<pid>-<n>`.
    pub fn new(name: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static SERIAL: AtomicU32 = AtomicU32::new(0);
        let n = SERIAL.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        TempDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs `cmd` to completion and returns its stdout.
///
/// # Panics
///
/// When it cannot start or exits unsuccessfully, with its output.
pub fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The SHA-256 of a file, in hex (`sha256sum`).
pub fn sha256(path: &Path) -> String {
    let out = run_ok(std::process::Command::new("sha256sum").arg(path));
    out.split_whitespace().next().unwrap().to_owned()
}

/// The names (`comm`) of process `pid`'s threads.
pub fn thread_names(pid: u32) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect()
}
