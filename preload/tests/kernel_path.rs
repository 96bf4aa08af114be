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
#[path = "common/shared_address.rs"]
mod shared_address;

use std::{
    net::Ipv4Addr,
    process::Stdio,
    time::{Duration, Instant},
};

use gazelle_config::{LstackConfig, StackThreadMode};
use netns_testbed::{hugepages, require_root, AfPacketEal, ChildGuard};
use rstest::rstest;
use shared::{liblstack, TempDir};
use shared_address::{
    check_bench, check_kernel_services, check_ports_reserved, ok, spawn_redis_benchmark,
    start_kernel_servers, Pair,
};

const STACK_IP: Ipv4Addr = Ipv4Addr::new(10, 93, 0, 2);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 93, 0, 1);
const STACK_MAC: &str = "02:00:00:93:00:02";

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
    let pair = Pair::new(
        &format!("kp{tag}"),
        STACK_MAC,
        None,
        &format!("{PEER_IP}/24"),
    );
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
    let _servers = start_kernel_servers(&pair, dir.path(), STACK_IP);
    check_ports_reserved(&pair);

    let (rx0, tx0) = kni_packets(&pair);
    // Everything at once from the peer: redis-benchmark on lstack while
    // ping, curl and an SSH key exchange reach the kernel.
    let bench = spawn_redis_benchmark(&pair, STACK_IP);
    check_kernel_services(&pair, STACK_IP);
    check_bench(bench);

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
    shared_address::try_stats(STACK_IP)
        .unwrap_or_else(|| panic!("the stack on {STACK_IP} does not answer for its counters"))
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
