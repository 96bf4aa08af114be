//! AF_XDP flow bifurcation (`flow_bifurcation` on a `net_af_xdp` port): no
//! tap. The kernel keeps the stack's address on the NIC (the veth end in
//! the stack's namespace); DPDK loads gazelle's XDP program there
//! (`xdp_prog=`), which hands lstack the flows of the ports it owns and
//! passes the rest to the kernel unchanged. An unmodified redis-server
//! runs on lstack under `LD_PRELOAD` while the kernel, on the same
//! address and interface, answers ping and serves SSH (dropbear) and HTTP;
//! a peer namespace uses all of them at once. After a SIGKILL the kernel
//! owns the address alone.
//!
//! Needs root, hugepages, redis-server/redis-tools, dropbear,
//! openssh-client, curl, python3 (scripts/install-deps.sh).

#[path = "common/mod.rs"]
mod shared;
#[path = "common/shared_address.rs"]
mod shared_address;

use std::{
    net::Ipv4Addr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use gazelle_config::LstackConfig;
use netns_testbed::{hugepages, require_root, AfPacketEal, ChildGuard, Medium};
use shared::{liblstack, TempDir};
use shared_address::{
    check_bench, check_kernel_services, check_ports_reserved, ok, spawn_redis_benchmark,
    start_kernel_servers, Pair,
};

const STACK_IP: Ipv4Addr = Ipv4Addr::new(10, 94, 0, 2);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 94, 0, 1);
const STACK_MAC: &str = "02:00:00:94:00:02";

/// What a TCP connect from the peer to `port` of the stack's address
/// meets: "connected", "refused" or "timeout".
fn connect_from_peer(pair: &Pair, port: u16) -> String {
    let script = format!(
        "import socket\ns = socket.socket()\ns.settimeout(3)\n\
         try:\n    s.connect(('{STACK_IP}', {port}))\n    print('connected')\n\
         except ConnectionRefusedError:\n    print('refused')\n\
         except OSError as e:\n    print('timeout', e)\n"
    );
    ok(pair.peer_cmd("python3").args(["-c", &script]))
        .trim()
        .to_owned()
}

#[test]
fn redis_on_lstack_and_ping_ssh_http_on_the_kernel_share_one_address_over_af_xdp() {
    require_root();
    let pair = Pair::new(
        "xbf",
        STACK_MAC,
        Some(&format!("{STACK_IP}/24")),
        &format!("{PEER_IP}/24"),
    );
    let dir = TempDir::new("lstack-xdp-bifurcation");
    let huge = hugepages::ensure(256).expect("reserving 256 x 2 MiB hugepages");
    let prefix = hugepages::dpdk_file_prefix("xdp_bifurcation");
    let mut args = AfPacketEal {
        medium: Medium::AfXdp,
        ..AfPacketEal::default()
    }
    .args_for_ifaces(&[&pair.app_if], &huge, &prefix);
    args.remove(0);
    let mut cfg = LstackConfig::new(
        STACK_IP,
        Ipv4Addr::new(255, 255, 255, 0),
        STACK_MAC.parse().unwrap(),
    );
    cfg.dpdk_args = args;
    cfg.num_cpus = "1".parse().unwrap();
    cfg.flow_bifurcation = true;
    cfg.xdp_eth_name = Some(pair.app_if.clone());
    cfg.validate().unwrap();
    let conf = dir.path().join("lstack.toml");
    std::fs::write(&conf, cfg.to_toml_string()).unwrap();

    // The kernel's servers on the same address: HTTP and SSH.
    let _servers = start_kernel_servers(&pair, dir.path(), STACK_IP);

    // redis on lstack.
    let mut redis = start_redis(&pair, &conf);

    // A second bifurcated AF_XDP lstack on the host is refused (the pins
    // are named per host), clearly; its process runs on the kernel then.
    let mut second_cfg = cfg.clone();
    second_cfg.host_addr = Ipv4Addr::new(10, 94, 0, 3);
    let second_prefix = hugepages::dpdk_file_prefix("xdp_bifurcation_2");
    for a in &mut second_cfg.dpdk_args {
        if a.starts_with("--file-prefix") {
            *a = format!("--file-prefix={second_prefix}");
        }
    }
    let second_conf = dir.path().join("second.toml");
    std::fs::write(&second_conf, second_cfg.to_toml_string()).unwrap();
    let mut second = pair.app_cmd("env");
    second
        .arg(format!("LD_PRELOAD={}", liblstack().display()))
        .arg(format!("LSTACK_CONF_PATH={}", second_conf.display()))
        .args(["redis-server", "--port", "6390", "--save", ""])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut second = ChildGuard::spawn(&mut second).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !second
        .stderr_so_far()
        .contains("already runs AF_XDP flow bifurcation")
    {
        assert!(
            Instant::now() < deadline,
            "a second bifurcated AF_XDP lstack was not refused: {}",
            second.stderr_so_far()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    second.kill();
    let link = ok(pair
        .app_cmd("ip")
        .args(["-d", "link", "show", &pair.app_if]));
    assert!(link.contains("xdp_bifurcate"), "no xdp_bifurcate: {link}");
    let no_kni = pair.app_cmd("ip").args(["link", "show", "kni"]).output();
    assert!(!no_kni.unwrap().status.success(), "a kni tap in XDP mode");
    check_ports_reserved(&pair);

    // Everything at once from the peer: redis-benchmark on lstack while
    // ping, curl and an SSH key exchange reach the kernel.
    let bench = spawn_redis_benchmark(&pair, STACK_IP);
    check_kernel_services(&pair, STACK_IP);
    check_bench(bench);

    // The XDP program's counters, through `lstack show`.
    let k = try_stats()
        .and_then(|s| s.kernel_path)
        .expect("lstack show has no kernel path");
    let helper = |name: &str| {
        *k.helper
            .get(name)
            .unwrap_or_else(|| panic!("no helper counter {name}: {k:?}"))
    };
    eprintln!("lstack show kernel path: {k:?}");
    assert!(k.helper_error.is_none(), "{k:?}");
    assert_eq!(k.iface, pair.app_if, "{k:?}");
    assert!(helper("xdp_redirected") > 0, "{k:?}");
    assert!(helper("xdp_passed") > 0, "{k:?}");
    assert!(helper("xdp_neigh") > 0, "lstack's own ARP reply: {k:?}");
    assert!(helper("egress_passed") > 0, "the guard on the NIC: {k:?}");

    // After a SIGKILL the kernel owns the address alone.
    redis.kill();
    let _ = redis.try_wait();
    std::thread::sleep(Duration::from_millis(500));
    let ping =
        ok(pair
            .peer_cmd("ping")
            .args(["-c", "3", "-i", "0.2", "-W", "2", &STACK_IP.to_string()]));
    assert!(ping.contains(" 0% packet loss"), "{ping}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = connect_from_peer(&pair, 6379);
        if got == "refused" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "TCP to 6379 after SIGKILL: {got}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // DPDK attached the program through netlink: it outlives a SIGKILL
    // (with no socket it passes everything). The next start removes it and
    // the stale pins, and serves again.
    let link = ok(pair
        .app_cmd("ip")
        .args(["-d", "link", "show", &pair.app_if]));
    eprintln!("after SIGKILL: {link}");
    let redis = start_redis(&pair, &conf);
    let pong =
        ok(pair
            .peer_cmd("redis-cli")
            .args(["-h", &STACK_IP.to_string(), "-p", "6379", "ping"]));
    assert_eq!(pong.trim(), "PONG");
    // A clean exit (SIGTERM) closes DPDK's port, which detaches the
    // program.
    ok(Command::new("kill").args(["-TERM", &redis.id().to_string()]));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let link = ok(pair
            .app_cmd("ip")
            .args(["-d", "link", "show", &pair.app_if]));
        if !link.contains("prog/xdp") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "XDP program left after SIGTERM: {link}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(connect_from_peer(&pair, 6379), "refused");
    drop(pair);
    let _ = hugepages::remove_dpdk_runtime_dir(&prefix);
}

/// redis-server on lstack in the stack's namespace, once lstack owns 6379
/// (in the XDP program's map).
fn start_redis(pair: &Pair, conf: &std::path::Path) -> ChildGuard {
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
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(k) = try_stats().and_then(|s| s.kernel_path) {
            if k.owned_tcp_ports.contains(&6379) {
                return redis;
            }
        }
        if let Ok(Some(status)) = redis.try_wait() {
            let (o, e) = redis.final_output();
            panic!("redis-server on lstack exited ({status}): {o}\n{e}");
        }
        assert!(
            Instant::now() < deadline,
            "lstack does not own 6379 after 30 s: {}",
            redis.stderr_so_far()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn try_stats() -> Option<gazelle_ctl_proto::LstackStats> {
    shared_address::try_stats(STACK_IP)
}
