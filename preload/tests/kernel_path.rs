//! One address, lstack and the kernel together (`kni_switch`,
//! `flow_bifurcation`): an unmodified redis-server runs on lstack under
//! `LD_PRELOAD` while the kernel, on the same address through the
//! exception interface, answers ping and serves SSH (dropbear) and HTTP;
//! a peer namespace uses all of them at once.
//!
//! Each test builds its own pair of namespaces (the stack's host and the
//! peer) joined by a veth: the stack runs inside its namespace, so the
//! exception interface it creates, and the kernel servers on it, are that
//! namespace's alone. Needs root, hugepages, redis-server/redis-tools,
//! dropbear, openssh-client, curl, python3 (scripts/install-deps.sh).

#[path = "common/mod.rs"]
mod shared;

use std::{
    net::Ipv4Addr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use gazelle_config::{LstackConfig, StackThreadMode};
use netns_testbed::{hugepages, require_root, AfPacketEal, ChildGuard};
use rstest::rstest;
use shared::{liblstack, TempDir};

const STACK_IP: Ipv4Addr = Ipv4Addr::new(10, 93, 0, 2);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 93, 0, 1);
const STACK_MAC: &str = "02:00:00:93:00:02";

/// A stack host namespace and a peer namespace joined by a veth, removed
/// (with every process in them) when dropped.
struct Pair {
    app: String,
    peer: String,
    app_if: String,
    peer_if: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pair {
    fn new(tag: &str) -> Pair {
        let id = std::process::id() % 100_000;
        let pair = Pair {
            app: format!("kp{tag}a-{id}"),
            peer: format!("kp{tag}p-{id}"),
            app_if: format!("kp{tag}a{id}"),
            peer_if: format!("kp{tag}p{id}"),
        };
        let peer_if = pair.peer_if.clone();
        ip(&["netns", "add", &pair.app]);
        ip(&["netns", "add", &pair.peer]);
        ip(&[
            "link",
            "add",
            &pair.app_if,
            "netns",
            &pair.app,
            "type",
            "veth",
            "peer",
            "name",
            &peer_if,
            "netns",
            &pair.peer,
        ]);
        for ns in [&pair.app, &pair.peer] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&[
            "-n",
            &pair.app,
            "link",
            "set",
            &pair.app_if,
            "address",
            STACK_MAC,
            "up",
        ]);
        ip(&[
            "-n",
            &pair.peer,
            "addr",
            "add",
            &format!("{PEER_IP}/24"),
            "dev",
            &peer_if,
        ]);
        ip(&["-n", &pair.peer, "link", "set", &peer_if, "up"]);
        // The stack checks what it receives: the peer computes its checksums.
        let out = pair
            .peer_cmd("ethtool")
            .args(["-K", &peer_if, "tx", "off"])
            .output()
            .unwrap();
        assert!(out.status.success(), "ethtool: {out:?}");
        pair
    }

    fn in_ns(ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    fn app_cmd(&self, program: &str) -> Command {
        Self::in_ns(&self.app, program)
    }

    fn peer_cmd(&self, program: &str) -> Command {
        Self::in_ns(&self.peer, program)
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.app, &self.peer] {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
    }
}

/// Runs `cmd` and returns its stdout, failing the test with its output
/// when it fails.
fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawning");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The kernel interface's (rx, tx) packet counters, as the kernel counts
/// them inside `ns`.
fn kni_packets(pair: &Pair) -> (u64, u64) {
    let read = |what: &str| -> u64 {
        let out = ok(pair
            .app_cmd("cat")
            .arg(format!("/sys/class/net/kni/statistics/{what}")));
        out.trim().parse().unwrap()
    };
    (read("rx_packets"), read("tx_packets"))
}

#[rstest]
#[case::kni_switch_run_to_wakeup("kni_switch", StackThreadMode::RunToWakeup)]
#[case::flow_bifurcation_run_to_completion("flow_bifurcation", StackThreadMode::RunToCompletion)]
fn redis_on_lstack_and_ping_ssh_http_on_the_kernel_share_one_address(
    #[case] key: &str,
    #[case] mode: StackThreadMode,
) {
    // One at a time: both cases serve the same address, whose control
    // socket (/run/gazelle/lstack-<ip>.sock) is one path.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let tag = if key == "kni_switch" { "k" } else { "f" };
    let pair = Pair::new(tag);
    let dir = TempDir::new("lstack-kernel-path");
    let huge = hugepages::ensure(256).expect("reserving 256 x 2 MiB hugepages");
    let prefix = hugepages::dpdk_file_prefix(&format!("kernel_path_{tag}"));
    let mut args = AfPacketEal::default().args_for_ifaces(&[&pair.app_if], &huge, &prefix);
    args.remove(0);
    let mut cfg = LstackConfig::new(
        STACK_IP,
        Ipv4Addr::new(255, 255, 255, 0),
        STACK_MAC.parse().unwrap(),
    );
    cfg.dpdk_args = args;
    cfg.num_cpus = "1".parse().unwrap();
    cfg.stack_thread_mode = mode;
    match key {
        "kni_switch" => cfg.kni_switch = true,
        _ => cfg.flow_bifurcation = true,
    }
    cfg.validate().unwrap();
    let conf = dir.path().join("lstack.toml");
    std::fs::write(&conf, cfg.to_toml_string()).unwrap();

    // redis on lstack.
    let mut redis = pair.app_cmd("env");
    redis
        .arg(format!("LD_PRELOAD={}", liblstack().display()))
        .arg(format!("LSTACK_CONF_PATH={}", conf.display()))
        .args([
            "redis-server",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut redis = ChildGuard::spawn(&mut redis).unwrap();

    // The exception interface comes up with the stack's address.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = pair
            .app_cmd("ip")
            .args(["-4", "addr", "show", "dev", "kni"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains(&format!("{STACK_IP}/24")) {
            break;
        }
        if let Ok(Some(status)) = redis.try_wait() {
            let (o, e) = redis.final_output();
            panic!("redis-server on lstack exited ({status}): {o}\n{e}");
        }
        assert!(
            Instant::now() < deadline,
            "no kernel interface `kni` with {STACK_IP}/24 in 20 s: {}",
            redis.stderr_so_far()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The kernel's servers on the same address: HTTP and SSH.
    std::fs::write(dir.path().join("index.html"), "served by the kernel\n").unwrap();
    let mut http = pair.app_cmd("python3");
    http.args(["-m", "http.server", "8080", "--bind", &STACK_IP.to_string()])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _http = ChildGuard::spawn(&mut http).unwrap();
    let key_path = dir.path().join("host_key");
    ok(Command::new("dropbearkey")
        .args(["-t", "ed25519", "-f"])
        .arg(&key_path));
    let mut ssh = pair.app_cmd("dropbear");
    ssh.args(["-F", "-E", "-s", "-r"])
        .arg(&key_path)
        .args(["-p", &format!("{STACK_IP}:2222")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let _ssh = ChildGuard::spawn(&mut ssh).unwrap();

    // The kernel leaves lstack's ephemeral ports alone on the shared address.
    let reserved = ok(pair
        .app_cmd("cat")
        .arg("/proc/sys/net/ipv4/ip_local_reserved_ports"));
    assert!(reserved.contains("49152-60999"), "reserved: {reserved:?}");

    let (rx0, tx0) = kni_packets(&pair);
    // Everything at once from the peer: redis-benchmark on lstack while
    // ping, curl and an SSH key exchange reach the kernel.
    let bench = {
        let mut c = pair.peer_cmd("redis-benchmark");
        c.args([
            "-h",
            &STACK_IP.to_string(),
            "-p",
            "6379",
            "-t",
            "set,get",
            "-n",
            "50000",
            "-c",
            "20",
            "-q",
        ]);
        std::thread::spawn(move || c.output().unwrap())
    };
    let ping =
        ok(pair
            .peer_cmd("ping")
            .args(["-c", "5", "-i", "0.2", "-W", "2", &STACK_IP.to_string()]));
    assert!(ping.contains(" 0% packet loss"), "{ping}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let page = loop {
        let out = pair
            .peer_cmd("curl")
            .args([
                "-sf",
                "--max-time",
                "3",
                &format!("http://{STACK_IP}:8080/"),
            ])
            .output()
            .unwrap();
        if out.status.success() || Instant::now() > deadline {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(page, "served by the kernel\n");
    let keys = ok(pair.peer_cmd("ssh-keyscan").args([
        "-T",
        "5",
        "-t",
        "ed25519",
        "-p",
        "2222",
        &STACK_IP.to_string(),
    ]));
    assert!(keys.contains("ssh-ed25519 "), "no SSH host key: {keys:?}");

    let bench = bench.join().unwrap();
    let out = String::from_utf8_lossy(&bench.stdout);
    assert!(bench.status.success(), "redis-benchmark: {out} {:?}", bench);
    for t in ["SET", "GET"] {
        assert!(
            // -q rewrites a progress line with \r before each result.
            out.split(['\r', '\n'])
                .any(|l| l.starts_with(&format!("{t}: ")) && l.contains("requests per second")),
            "no {t} result: {out}"
        );
    }
    assert!(
        !out.to_lowercase().contains("error"),
        "redis-benchmark saw errors: {out}"
    );

    // The kernel saw the ping, HTTP and SSH and answered through lstack's port.
    let (rx1, tx1) = kni_packets(&pair);
    assert!(
        rx1 - rx0 >= 5 && tx1 - tx0 >= 5,
        "kni counted {} received and {} sent",
        rx1 - rx0,
        tx1 - tx0
    );

    // Spoofed sources the stack hands the kernel (UDP to a port lstack does
    // not own) are dropped and counted by the helper's reverse-path filter:
    // the loopback address and the stack's own address.
    let before = kernel_path(&ask_stats());
    let helper = |k: &gazelle_ctl_proto::KernelPathStatus, name: &str| {
        *k.helper
            .get(name)
            .unwrap_or_else(|| panic!("no helper counter {name}: {k:?}"))
    };
    for src in ["127.0.0.1", &STACK_IP.to_string()] {
        ok(pair.peer_cmd("python3").args([
            "-c",
            SEND_SPOOFED,
            &pair.peer_if,
            STACK_MAC,
            src,
            &STACK_IP.to_string(),
        ]));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let after = loop {
        let k = kernel_path(&ask_stats());
        if helper(&k, "rpf_martian_dropped") >= helper(&before, "rpf_martian_dropped") + 2
            || Instant::now() > deadline
        {
            break k;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        helper(&after, "rpf_martian_dropped") - helper(&before, "rpf_martian_dropped"),
        2,
        "{after:?}"
    );
    assert!(after.helper_error.is_none(), "{after:?}");
    // The kernel never took the NIC's frames as its own (the veth under
    // net_af_packet), and it answered the peer (ping, HTTP, SSH) through
    // lstack's port; redis's port is lstack's.
    assert!(helper(&after, "nic_blocked") > 0, "{after:?}");
    assert!(helper(&after, "egress_passed") > 0, "{after:?}");
    assert!(after.owned_tcp_ports.contains(&6379), "{after:?}");
    let stats = ask_stats();
    let total = stats.total();
    assert!(
        total.kernel_rx > 0 && total.kernel_tx > 0,
        "kernel_rx {} kernel_tx {}",
        total.kernel_rx,
        total.kernel_tx
    );

    // A SIGKILL leaves nothing: the exception interface, its programs and
    // the block on the NIC go with the process.
    redis.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let kni = pair
            .app_cmd("ip")
            .args(["link", "show", "kni"])
            .output()
            .unwrap();
        let tc = ok(pair
            .app_cmd("tc")
            .args(["filter", "show", "dev", &pair.app_if, "ingress"]));
        let xdp_or_bpf = ok(pair
            .app_cmd("ip")
            .args(["-d", "link", "show", &pair.app_if]));
        if !kni.status.success() && tc.trim().is_empty() && !xdp_or_bpf.contains("bpf") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left after SIGKILL: kni {:?}, tc {tc:?}, link {xdp_or_bpf:?}",
            kni.status
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let fresh = ok(pair
        .app_cmd("ip")
        .args(["-d", "link", "show", &pair.app_if]));
    assert!(!fresh.contains("tcx"), "{fresh}");
    drop(pair);
    let _ = hugepages::remove_dpdk_runtime_dir(&prefix);
}

/// The stack's counters, over its control socket.
fn ask_stats() -> gazelle_ctl_proto::LstackStats {
    let sock = gazelle_ctl_proto::paths::lstack_socket(
        &gazelle_ctl_proto::paths::run_dir(),
        "",
        STACK_IP.into(),
    );
    match gazelle_ctl_proto::client::request(
        &sock,
        "lstack",
        gazelle_ctl_proto::Request::LstackStats,
        Duration::from_secs(5),
    ) {
        Ok(gazelle_ctl_proto::Response::LstackStats(s)) => s,
        other => panic!("asking {} for its counters: {other:?}", sock.display()),
    }
}

fn kernel_path(s: &gazelle_ctl_proto::LstackStats) -> gazelle_ctl_proto::KernelPathStatus {
    s.kernel_path
        .clone()
        .unwrap_or_else(|| panic!("lstack show has no kernel path: {s:?}"))
}

/// Sends one UDP datagram to port 9 (no socket of lstack's: the kernel's)
/// with a forged source, as an attacker on the peer's link would: argv
/// interface, destination MAC, source IP, destination IP.
const SEND_SPOOFED: &str = r#"
import socket, struct, sys
ifname, mac, src, dst = sys.argv[1:5]
def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
payload = b"spoofed"
udp = struct.pack("!HHHH", 40000, 9, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                 socket.inet_aton(src), socket.inet_aton(dst))
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, len(udp))
udp = udp[:6] + struct.pack("!H", csum(pseudo + udp) or 0xffff) + udp[8:]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
me = s.getsockname()[4]
s.send(bytes.fromhex(mac.replace(":", "")) + me + b"\x08\x00" + ip + udp)
"#;
