//! What the tests that touch the kernel's network settings or run
//! processes share: a fresh network namespace to do it in, and the release
//! build's `liblstack.so`.

#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sched::{setns, CloneFlags};

/// A fresh network namespace, deleted on drop.
pub struct Netns {
    /// Its name (`ip netns`).
    pub name: String,
}

impl Netns {
    /// Creates `<prefix>-<pid>-<n>`. Needs root.
    pub fn new(prefix: &str) -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests create network namespaces: run them as root"
        );
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]));
        Self { name }
    }

    /// Runs `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) {
        run(Command::new("ip").args(["-n", &self.name]).args(args));
    }

    /// Sets a value with sysctl(8) inside the namespace: an independent
    /// writer for the starting state.
    pub fn set(&self, key: &str, value: &str) {
        run(Command::new("ip").args([
            "netns",
            "exec",
            &self.name,
            "sysctl",
            "-qw",
            &format!("{key}={value}"),
        ]));
    }

    /// Reads a value with sysctl(8) inside the namespace: an independent
    /// reader for the effects.
    pub fn get(&self, key: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "sysctl", "-n", key])
            .output()
            .unwrap();
        assert!(out.status.success(), "sysctl -n {key}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Runs `f` on a thread that has joined the namespace, so `/proc/sys/net`
    /// is the namespace's; threads and processes it starts are inside too.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = File::open(Path::new("/run/netns").join(&self.name)).unwrap();
        std::thread::scope(|s| {
            s.spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET).expect("setns into the test namespace");
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(cmd: &mut Command) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?}: {status}");
}

/// `liblstack.so` of this workspace's release build.
pub fn liblstack() -> PathBuf {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/liblstack.so");
    assert!(
        lib.is_file(),
        "{} is missing: build it with `cargo build --release -p lstack-preload`",
        lib.display()
    );
    lib
}
