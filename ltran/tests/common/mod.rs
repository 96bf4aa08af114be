//! What ltran's integration tests share: config files, a running ltran
//! with its own DPDK file prefix (removed with it), its numbers.

#![allow(dead_code)] // each test binary uses its own part

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use gazelle_ctl_proto::{client, LtranStats, Request, Response};
use netns_testbed::{hugepages, ChildGuard, HugeEnv};

/// The ltran binary under test.
pub const LTRAN: &str = env!("CARGO_BIN_EXE_ltran");

/// Writes an ltran config with `forward_kit_args` and `extra` lines to
/// `dir/ltran.toml` (subnet 10.99.0.0/24; pools of 4096 mbufs unless
/// `extra` sets `rx_mbuf_pool_size`).
/// A binary of this workspace's build (`lstack-echo`, `gazellectl`,
/// `liblstack.so`), next to the test binary's `deps` directory.
///
/// # Panics
///
/// When it is not built, saying how to build it.
pub fn built(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let p = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace`)",
        p.display()
    );
    p
}

pub fn config(dir: &Path, eal: &[&str], extra: &str) -> PathBuf {
    let args: Vec<String> = eal.iter().map(|a| format!("{a:?}")).collect();
    let mut text = format!(
        "forward_kit_args = [{}]\n\
         dispatch_subnet = \"10.99.0.0\"\n\
         dispatch_subnet_length = 8\n\
         tx_mbuf_pool_size = 4096\n\
         {extra}",
        args.join(", ")
    );
    if !extra.contains("rx_mbuf_pool_size") {
        text.push_str("rx_mbuf_pool_size = 4096\n");
    }
    let p = dir.join("ltran.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// One bond of port 0 with MAC [`BOND_MAC`].
pub const ONE_BOND: &str = "bond_ports = [\"0x1\"]\nbond_macs = [\"02:00:00:00:00:99\"]\n";
/// The bond MAC of [`ONE_BOND`].
pub const BOND_MAC: &str = "02:00:00:00:00:99";

/// EAL arguments of a test ltran: core 0, no PCI, `prefix`, the huge dir,
/// at most `socket_mb` MiB of hugepages, then `vdevs`.
pub fn eal_args(prefix: &str, huge: &HugeEnv, socket_mb: u32, vdevs: &[String]) -> Vec<String> {
    let mut a = vec![
        "-l".to_owned(),
        "0".into(),
        "--no-pci".into(),
        "--no-telemetry".into(),
        "--log-level=*:notice".into(),
        format!("--file-prefix={prefix}"),
        format!("--huge-dir={}", huge.huge_dir.display()),
        format!("--socket-limit={socket_mb}"),
    ];
    a.extend(vdevs.iter().cloned());
    a
}

/// Removes what a DPDK primary of `prefix` leaves behind.
pub fn remove_prefix_files(prefix: &str, huge_dir: &Path) {
    let _ = hugepages::remove_dpdk_runtime_dir(prefix);
    if let Ok(dir) = std::fs::read_dir(huge_dir) {
        for f in dir.flatten() {
            if f.file_name()
                .to_string_lossy()
                .starts_with(&format!("{prefix}map_"))
            {
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
}

/// A running ltran; dropping it kills it and removes its prefix's files.
pub struct Ltran {
    /// The process (killed first on drop).
    pub child: ChildGuard,
    /// Its control socket.
    pub socket: PathBuf,
    /// Its run directory (`--run-dir`).
    pub run_dir: PathBuf,
    /// Its DPDK file prefix.
    pub prefix: String,
    huge_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Ltran {
    /// Starts ltran with `vdevs` as its ports and `extra` config lines (a
    /// bond needs them), and waits until it is ready.
    pub fn start(name: &str, vdevs: &[String], extra: &str) -> Ltran {
        let huge = hugepages::ensure(128).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let prefix = hugepages::dpdk_file_prefix(name);
        let eal = eal_args(&prefix, &huge, 128, vdevs);
        let eal: Vec<&str> = eal.iter().map(String::as_str).collect();
        let conf = config(dir.path(), &eal, extra);
        let run_dir = dir.path().join("run");
        let child = ChildGuard::spawn(
            Command::new(LTRAN)
                .arg("--config-file")
                .arg(&conf)
                .arg("--run-dir")
                .arg(&run_dir)
                .env("RUST_LOG", "info")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .unwrap();
        let mut l = Ltran {
            child,
            socket: gazelle_ctl_proto::paths::ltran_socket(&run_dir, ""),
            run_dir,
            prefix,
            huge_dir: huge.huge_dir.clone(),
            _dir: dir,
        };
        if let Err(e) = l
            .child
            .wait_for_output("ltran ready", Duration::from_secs(30))
        {
            panic!("ltran did not start: {e:#}\n{}", l.child.stderr_so_far());
        }
        l
    }

    /// `gazellectl ltran show`'s numbers.
    pub fn stats(&self) -> LtranStats {
        match client::request(
            &self.socket,
            "ltran",
            Request::LtranStats,
            Duration::from_secs(5),
        ) {
            Ok(Response::LtranStats(s)) => s,
            other => panic!("ltran show: {other:?}"),
        }
    }

    /// Waits up to `timeout` until `pred` holds for ltran's numbers;
    /// panics with them (and ltran's log) if it never does.
    pub fn wait_stats(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&LtranStats) -> bool,
    ) -> LtranStats {
        let end = Instant::now() + timeout;
        loop {
            let s = self.stats();
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < end,
                "{what}: not within {timeout:?}: {s:#?}\n{}",
                self.child.stderr_so_far()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Resident memory of ltran, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }
}

impl Drop for Ltran {
    fn drop(&mut self) {
        self.child.kill();
        remove_prefix_files(&self.prefix, &self.huge_dir);
    }
}

/// The ltran-test-instance binary (see its doc).
pub const TEST_INSTANCE: &str = env!("CARGO_BIN_EXE_ltran-test-instance");

/// A `net_af_packet` vdev on kernel interface `iface`.
pub fn af_packet_vdev(i: usize, iface: &str) -> String {
    format!("--vdev=net_af_packet{i},iface={iface},blocksz=4096,framesz=2048,framecnt=16384")
}

/// A registered `ltran-test-instance`, driven over its stdin.
pub struct Instance {
    /// The process.
    pub child: ChildGuard,
}

impl Instance {
    /// Registers `ip` (and `ip6`) with `ltran`, claiming the process name
    /// `claim`; waits until it is registered.
    pub fn start(ltran: &Ltran, ip: &str, ip6: Option<&str>, claim: &str) -> Instance {
        let mut cmd = Command::new(TEST_INSTANCE);
        cmd.arg("--socket")
            .arg(&ltran.socket)
            .args(["--ip", ip, "--claim", claim]);
        if let Some(a) = ip6 {
            cmd.args(["--ip6", a]);
        }
        cmd.args([
            "--",
            "-l",
            "0",
            "--no-pci",
            "--no-telemetry",
            "--log-level=*:notice",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = ChildGuard::spawn(&mut cmd).unwrap();
        if let Err(e) = child.wait_for_output("@@ registered", Duration::from_secs(30)) {
            panic!(
                "{ip} did not register: {e:#}\n{}\nltran: {}",
                child.stderr_so_far(),
                ltran.child.stderr_so_far()
            );
        }
        Instance { child }
    }

    /// Sends a command line and waits for the answer starting with `answer`.
    fn command(&mut self, line: &str, answer: &str) {
        use std::io::Write;
        let before = self.child.stdout_so_far().matches(answer).count();
        let stdin = self.child.stdin().expect("piped stdin");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        while self.child.stdout_so_far().matches(answer).count() == before {
            assert!(
                Instant::now() < end,
                "no {answer:?} after {line:?}: {}",
                self.child.stderr_so_far()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Puts `frame` on the instance's transmit ring.
    pub fn send(&mut self, frame: &[u8]) {
        let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
        self.command(&format!("send {hex}"), "@@ sent 1");
    }

    /// Tells ltran the instance listens on `ip:port`.
    pub fn listen(&mut self, ip: &str, port: u16) {
        self.command(&format!("listen {ip} {port}"), "@@ listening");
    }
}

/// The peer's address in [`topology`]s: 10.99.0.1, in the subnet the
/// test ltrans dispatch.
pub const PEER_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 99, 0, 1);

/// A peer namespace on a veth whose root end is for ltran's port, the
/// peer at [`PEER_IP`] (needs root).
pub fn topology(hint: &str, stack_ip: std::net::Ipv4Addr) -> netns_testbed::Topology {
    netns_testbed::require_root();
    netns_testbed::Topology::new(netns_testbed::TopologyOptions {
        name_hint: hint.into(),
        peer_ip4: PEER_IP,
        stack_ip4: stack_ip,
        ..Default::default()
    })
    .unwrap()
}
