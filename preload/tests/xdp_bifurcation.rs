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

use std::{
    net::Ipv4Addr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use gazelle_config::LstackConfig;
use netns_testbed::{hugepages, require_root, AfPacketEal, ChildGuard, Medium};
use shared::{liblstack, TempDir};

const STACK_IP: Ipv4Addr = Ipv4Addr::new(10, 94, 0, 2);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 94, 0, 1);
const STACK_MAC: &str = "02:00:00:94:00:02";

/// A stack host namespace and a peer namespace joined by a veth, removed
/// (with every process in them) when dropped. The stack's end carries the
/// stack's MAC and, in the kernel, its address.
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
    fn new() -> Pair {
        let id = std::process::id() % 100_000;
        let pair = Pair {
            app: format!("xbfa-{id}"),
            peer: format!("xbfp-{id}"),
            app_if: format!("xbfa{id}"),
            peer_if: format!("xbfp{id}"),
        };
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
            &pair.peer_if,
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
            &pair.app,
            "addr",
            "add",
            &format!("{STACK_IP}/24"),
            "dev",
            &pair.app_if,
        ]);
        ip(&[
            "-n",
            &pair.peer,
            "addr",
            "add",
            &format!("{PEER_IP}/24"),
            "dev",
            &pair.peer_if,
        ]);
        ip(&["-n", &pair.peer, "link", "set", &pair.peer_if, "up"]);
        // The stack checks what it receives: the peer computes its checksums.
        let out = pair
            .peer_cmd("ethtool")
            .args(["-K", &pair.peer_if, "tx", "off"])
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
    let pair = Pair::new();
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
    // The kernel leaves lstack's ephemeral ports alone on the shared address.
    let reserved = ok(pair
        .app_cmd("cat")
        .arg("/proc/sys/net/ipv4/ip_local_reserved_ports"));
    assert!(reserved.contains("49152-60999"), "reserved: {reserved:?}");

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
    let page = ok(pair.peer_cmd("curl").args([
        "-sf",
        "--max-time",
        "5",
        "--retry",
        "3",
        &format!("http://{STACK_IP}:8080/"),
    ]));
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
            out.split(['\r', '\n'])
                .any(|l| l.starts_with(&format!("{t}: ")) && l.contains("requests per second")),
            "no {t} result: {out}"
        );
    }
    assert!(
        !out.to_lowercase().contains("error"),
        "redis-benchmark saw errors: {out}"
    );

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

/// The stack's counters over its control socket, if it answers.
fn try_stats() -> Option<gazelle_ctl_proto::LstackStats> {
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
        Ok(gazelle_ctl_proto::Response::LstackStats(s)) => Some(s),
        _ => None,
    }
}
