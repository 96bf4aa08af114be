//! The real thing, for the tests that drive it from outside: a
//! network-namespace topology, the `applianced` binary running a real
//! ltran (owning the topology's veth through DPDK `net_af_packet`) and an
//! unmodified `redis-server` on lstack behind it, and the `gazelle-webui`
//! binary in front over HTTPS with its self-signed certificate.
//!
//! Needs root, hugepages, redis-server/redis-tools and
//! `target/release/{applianced,ltran,liblstack.so,gazellectl}` (`cargo
//! build --release -p appliance -p ltran -p lstack-preload -p gazellectl`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netns_testbed::{hugepages, require_root, Topology, TopologyOptions};

/// redis-server's port.
pub const PORT: &str = "16391";
/// The first admin's password.
pub const PASSWORD: &str = "live-test-password";

/// A release binary of the workspace, which must have been built.
pub fn release(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/release")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: cargo build --release -p appliance -p ltran -p lstack-preload -p gazellectl",
        path.display()
    );
    path
}

/// A TCP port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills a child on drop (SIGTERM, then SIGKILL after 15 s).
pub struct Daemon(pub Child, pub &'static str);

impl Daemon {
    /// SIGTERM, then SIGKILL after 15 s; how it ended.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.0.id()).unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > end {
                let _ = self.0.kill();
                return self.0.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            eprintln!("stopping {}", self.1);
            self.stop();
        }
    }
}

/// Waits until `done`, polling every 200 ms; fails after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < end, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The appliance and its web UI on a topology.
pub struct Rig {
    /// gazelle-webui (stopped first).
    pub webui: Daemon,
    /// applianced (with ltran and the instances).
    pub applianced: Daemon,
    /// The peer namespace and the veth.
    pub topo: Topology,
    /// The instance's address.
    pub ip: String,
    /// applianced's control socket.
    pub socket: PathBuf,
    /// gazelle's run directory (ltran's and the lstacks' sockets).
    pub gazelle_run: PathBuf,
    /// The HTTPS port on 127.0.0.1.
    pub https: u16,
    /// The plain-HTTP redirect's port.
    pub http: u16,
    /// gazelle-webui's state directory.
    pub state_dir: PathBuf,
    prefix: String,
    rp_before: String,
    /// Last: everything above lives in it.
    pub dir: tempfile::TempDir,
}

const RP_FILTER: &str = "/proc/sys/net/ipv4/conf/all/rp_filter";

impl Rig {
    /// Starts it all: changes pending confirmation roll back after
    /// `confirm_timeout_secs`; returns once ltran and redis run and the
    /// web UI answers.
    pub fn start(name_hint: &str, confirm_timeout_secs: u32) -> Rig {
        require_root();
        let topo = Topology::new(TopologyOptions {
            name_hint: name_hint.into(),
            ..Default::default()
        })
        .unwrap();
        let huge = hugepages::ensure(128).unwrap();
        let prefix = hugepages::dpdk_file_prefix(&format!("{name_hint}-live"));
        let dir = tempfile::tempdir().unwrap();
        let gazelle_run = dir.path().join("gazelle");
        let o = topo.stack_ip4.octets();
        let ip = topo.stack_ip4.to_string();
        let config = format!(
            r#"[ltran]
forward_kit_args = ["-l", "0", "--no-pci", "--no-telemetry", "--file-prefix={prefix}", "--huge-dir={huge}", "--socket-limit=192", "--log-level=*:notice", "--vdev=net_af_packet0,iface={iface},blocksz=4096,framesz=2048,framecnt=4096"]
dispatch_max_clients = 4
dispatch_subnet = "{a}.{b}.{c}.0"
dispatch_subnet_length = 8
bond_mode = 1
bond_miimon = 100
bond_ports = ["0x1"]
bond_macs = ["{mac}"]
rx_mbuf_pool_size = 4096
tx_mbuf_pool_size = 4096

[[instances]]
name = "redis"
command = ["redis-server", "--port", "{PORT}", "--save", "", "--appendonly", "no", "--protected-mode", "no"]
restart = {{ mode = "on-failure", initial_backoff_ms = 200, max_backoff_ms = 2000 }}

[instances.lstack]
dpdk_args = ["--no-pci", "--no-telemetry", "--log-level=*:notice"]
use_ltran = 1
num_cpus = "1"
host_addr = "{ip}"
mask_addr = "255.255.255.0"
devices = "{mac}"
tcp_conn_count = 200
"#,
            huge = huge.huge_dir.display(),
            iface = topo.host_if,
            a = o[0],
            b = o[1],
            c = o[2],
            mac = topo.stack_mac,
        );
        let etc = dir.path().join("etc/appliance.toml");
        std::fs::create_dir_all(etc.parent().unwrap()).unwrap();
        std::fs::write(&etc, config).unwrap();
        // applianced sets what the data path needs (rp_filter) in this
        // namespace; put back afterwards.
        let rp_before = std::fs::read_to_string(RP_FILTER).unwrap();
        let socket = dir.path().join("appliance.sock");
        let applianced = Daemon(
            Command::new(release("applianced"))
                .arg("--config")
                .arg(&etc)
                .arg("--state-dir")
                .arg(dir.path().join("store"))
                .arg("--socket")
                .arg(&socket)
                .arg("--runtime-dir")
                .arg(dir.path().join("run"))
                .arg("--lstack-lib")
                .arg(release("liblstack.so"))
                .arg("--ltran-bin")
                .arg(release("ltran"))
                .arg("--gazelle-run-dir")
                .arg(&gazelle_run)
                .args([
                    "--confirm-timeout",
                    &confirm_timeout_secs.to_string(),
                    "--ready-timeout",
                    "60",
                    "--ready-uptime-ms",
                    "500",
                ])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
            "applianced",
        );
        let status = || {
            appliance::api::request(
                &socket,
                appliance::api::Request::Status,
                Duration::from_secs(10),
            )
        };
        let running = || {
            matches!(status(), Ok(appliance::api::Response::Status { processes, .. })
                if processes.len() == 2 && processes.iter().all(|p| p.state == appliance::supervisor::ProcessState::Running))
        };
        wait_for("ltran and redis running", Duration::from_secs(90), running);

        let state_dir = dir.path().join("webui");
        let pw = dir.path().join("pw");
        std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
        let (https, http) = (free_port(), free_port());
        let webui = Daemon(
            Command::new(env!("CARGO_BIN_EXE_gazelle-webui"))
                .args(["--listen", &format!("127.0.0.1:{https}")])
                .args(["--http-redirect", &format!("127.0.0.1:{http}")])
                .arg("--state-dir")
                .arg(&state_dir)
                .arg("--appliance-socket")
                .arg(&socket)
                .arg("--run-dir")
                .arg(&gazelle_run)
                .arg("--initial-password-file")
                .arg(&pw)
                .spawn()
                .unwrap(),
            "gazelle-webui",
        );
        let rig = Rig {
            webui,
            applianced,
            topo,
            ip,
            socket,
            gazelle_run,
            https,
            http,
            state_dir,
            prefix,
            rp_before,
            dir,
        };
        wait_for("gazelle-webui answering", Duration::from_secs(30), || {
            rig.cacert().exists()
                && Command::new("curl")
                    .args(["-sSf", "-o", "/dev/null", "--cacert"])
                    .arg(rig.cacert())
                    .arg(format!("{}/api/v1/openapi.json", rig.base()))
                    .status()
                    .is_ok_and(|s| s.success())
        });
        rig
    }

    /// `https://localhost:<port>` (the certificate's name).
    pub fn base(&self) -> String {
        format!("https://localhost:{}", self.https)
    }

    /// The web UI's self-signed certificate.
    pub fn cacert(&self) -> PathBuf {
        self.state_dir.join("tls/cert.pem")
    }

    /// Stops the web UI and applianced (each must stop cleanly), and puts
    /// the host back.
    pub fn stop(mut self) {
        assert!(
            self.webui.stop().success(),
            "gazelle-webui did not stop cleanly on SIGTERM"
        );
        assert!(
            self.applianced.stop().success(),
            "applianced did not stop cleanly"
        );
        std::fs::write(RP_FILTER, &self.rp_before).unwrap();
        hugepages::remove_dpdk_runtime_dir(&self.prefix).unwrap();
        let Rig { topo, .. } = self;
        topo.teardown().unwrap();
    }
}
