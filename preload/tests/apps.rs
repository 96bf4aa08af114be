//! Unmodified Debian binaries on lstack through `LD_PRELOAD=liblstack.so`,
//! driven by real clients in the peer namespace (and the other way round).
//! Needs root, hugepages, and redis-server/redis-tools, nginx, curl, wrk,
//! iperf3 and python3 (scripts/install-deps.sh installs them).
//!
//! Each preloaded process starts its own stack as the DPDK primary on the
//! same veth, so the tests of this file run one at a time.

// The shared test helpers name the stack crate `lstack`.
extern crate lstack_core as lstack;

#[path = "../../stack/tests/common/mod.rs"]
mod common;
#[path = "common/mod.rs"]
mod shared;

use shared::{liblstack, run_ok, sha256, thread_names};
use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{Mutex, MutexGuard, OnceLock},
    time::Duration,
};

use gazelle_config::StackThreadMode;
use netns_testbed::{require_root, AfPacketEal, ChildGuard, Topology, TopologyOptions};
use rstest::rstest;

/// The one topology of this file, and the lock that serialises the tests.
fn topo() -> (MutexGuard<'static, ()>, &'static Topology) {
    static LOCK: Mutex<()> = Mutex::new(());
    static TOPO: OnceLock<Topology> = OnceLock::new();
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let topo = TOPO.get_or_init(|| {
        Topology::new(TopologyOptions {
            name_hint: "lpa".into(),
            ..Default::default()
        })
        .expect("topology")
    });
    (guard, topo)
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lstack-apps-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes a fresh lstack config (its own DPDK file prefix) and returns its path.
fn conf(topo: &Topology, name: &str, mode: StackThreadMode) -> PathBuf {
    let mut cfg = common::config_for(topo, name, &AfPacketEal::default());
    cfg.stack_thread_mode = mode;
    let path = scratch(name).join("lstack.toml");
    std::fs::write(&path, cfg.to_toml_string()).unwrap();
    path
}

/// `cmd` under LD_PRELOAD with lstack configured for `topo`, its stack run
/// by `mode`.
fn preloaded(topo: &Topology, name: &str, program: &str, mode: StackThreadMode) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("LD_PRELOAD", liblstack())
        .env("LSTACK_CONF_PATH", conf(topo, name, mode));
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// `name: N requests per second` lines of redis-benchmark -q.
fn benchmark_rates(out: &str) -> Vec<(String, f64)> {
    out.split(['\r', '\n'])
        .filter_map(|l| {
            let (name, rest) = l.trim().split_once(": ")?;
            let rps = rest
                .strip_suffix(" requests per second")
                .or_else(|| rest.split(" requests per second").next())?;
            Some((name.to_owned(), rps.trim().parse().ok()?))
        })
        .filter(|(_, r)| *r > 0.0)
        .collect()
}

#[rstest]
fn redis_server_serves_redis_benchmark(
    #[values(StackThreadMode::RunToWakeup, StackThreadMode::RunToCompletion)] mode: StackThreadMode,
) {
    let (_g, topo) = topo();
    let port = "16379";
    let mut cmd = preloaded(topo, "redis", "redis-server", mode);
    cmd.args([
        "--port",
        port,
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
    ]);
    let mut server = ChildGuard::spawn(&mut cmd).unwrap();
    let ip = topo.stack_ip4.to_string();
    topo.wait_connectable(
        SocketAddr::new(topo.stack_ip4.into(), 16379),
        &mut server,
        Duration::from_secs(20),
    )
    .unwrap();
    // The mode is real: a stack thread runs beside redis only in
    // run-to-wakeup; run to completion redis's own thread runs the stack.
    let stack_threads = thread_names(server.id())
        .iter()
        .filter(|n| n.starts_with("lstack-stack"))
        .count();
    match mode {
        StackThreadMode::RunToWakeup => assert_eq!(stack_threads, 1, "{mode}"),
        StackThreadMode::RunToCompletion => assert_eq!(stack_threads, 0, "{mode}"),
    }

    let out = run_ok(topo.cmd("redis-benchmark").args([
        "-h",
        &ip,
        "-p",
        port,
        "-t",
        "set,get,incr,lpush,lrange_100",
        "-n",
        "200000",
        "-c",
        "50",
        "-q",
    ]));
    let rates = benchmark_rates(&out);
    for t in [
        "SET",
        "GET",
        "INCR",
        "LPUSH",
        "LRANGE_100 (first 100 elements)",
    ] {
        assert!(
            rates.iter().any(|(n, _)| n == t),
            "no result for {t}: {out}"
        );
    }
    assert!(
        !out.contains("rror"),
        "redis-benchmark reported errors: {out}"
    );
    let piped = run_ok(topo.cmd("redis-benchmark").args([
        "-h", &ip, "-p", port, "-t", "set,get", "-n", "200000", "-c", "50", "-P", "16", "-q",
    ]));
    let prates = benchmark_rates(&piped);
    assert!(
        prates.iter().any(|(n, _)| n == "SET") && prates.iter().any(|(n, _)| n == "GET"),
        "{piped}"
    );
    assert!(!piped.contains("rror"), "{piped}");
    println!("redis on lstack, -c 50: {rates:?}\nredis on lstack, -c 50 -P 16: {prates:?}");

    // Consistency, through lstack from the peer and through the kernel locally.
    let cli = |args: &[&str]| {
        run_ok(
            topo.cmd("redis-cli")
                .args(["-h", &ip, "-p", port])
                .args(args),
        )
        .trim()
        .to_owned()
    };
    assert_eq!(cli(&["set", "lstack:check", "42"]), "OK");
    assert!(cli(&["del", "lstack:counter"]).parse::<u32>().is_ok());
    run_ok(topo.cmd("redis-cli").args([
        "-h",
        &ip,
        "-p",
        port,
        "-r",
        "100",
        "incr",
        "lstack:counter",
    ]));
    assert_eq!(cli(&["get", "lstack:counter"]), "100");
    assert!(cli(&["dbsize"]).parse::<u64>().unwrap() >= 2);
    let local = run_ok(Command::new("redis-cli").args([
        "-h",
        "127.0.0.1",
        "-p",
        port,
        "get",
        "lstack:check",
    ]));
    assert_eq!(
        local.trim(),
        "42",
        "the kernel side of the wildcard listener sees the same server"
    );
}

#[rstest]
fn nginx_serves_files_and_wrk(
    #[values(StackThreadMode::RunToWakeup, StackThreadMode::RunToCompletion)] mode: StackThreadMode,
) {
    let (_g, topo) = topo();
    let dir = scratch("nginx");
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from nginx on lstack\n").unwrap();
    for (name, size) in [("1m.bin", 1usize << 20), ("100m.bin", 100 << 20)] {
        std::fs::write(www.join(name), common::pattern(size as u64, size)).unwrap();
    }
    let conf_path = dir.join("nginx.conf");
    std::fs::write(
        &conf_path,
        netns_testbed::apps::nginx_conf(&dir, &www, 18080),
    )
    .unwrap();
    let mut cmd = preloaded(topo, "nginx", "nginx", mode);
    cmd.args([
        "-c",
        conf_path.to_str().unwrap(),
        "-p",
        dir.to_str().unwrap(),
    ]);
    let mut server = ChildGuard::spawn(&mut cmd).unwrap();
    topo.wait_connectable(
        SocketAddr::new(topo.stack_ip4.into(), 18080),
        &mut server,
        Duration::from_secs(20),
    )
    .unwrap();

    for name in ["1m.bin", "100m.bin"] {
        let got = dir.join(format!("got-{name}"));
        let url = format!("http://{}:18080/{name}", topo.stack_ip4);
        let w = run_ok(topo.cmd("curl").args([
            "-sS",
            "--fail",
            "-o",
            got.to_str().unwrap(),
            "-w",
            "%{speed_download}",
            &url,
        ]));
        assert_eq!(
            sha256(&got),
            sha256(&www.join(name)),
            "{name} differs after download"
        );
        println!(
            "curl {name}: {:.0} Mbit/s",
            w.trim().parse::<f64>().unwrap_or(0.0) * 8.0 / 1e6
        );
    }
    let url = format!("http://{}:18080/index.html", topo.stack_ip4);
    let out = run_ok(
        topo.cmd("wrk")
            .args(["-t", "2", "-c", "100", "-d", "30s", &url]),
    );
    println!("{out}");
    assert!(
        !out.contains("Socket errors"),
        "wrk saw socket errors: {out}"
    );
    assert!(!out.contains("Non-2xx"), "wrk saw non-2xx answers: {out}");
    assert!(out.contains("Requests/sec"), "{out}");
    assert!(
        server.try_wait().unwrap().is_none(),
        "nginx died: {}",
        server.stderr_so_far()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn iperf_bps(json: &str, key: &str) -> f64 {
    // "sum_received": {... "bits_per_second": N ...} (or sum_sent); enough
    // structure-free parsing for one number.
    let at = json
        .find(key)
        .unwrap_or_else(|| panic!("no {key} in iperf3 output: {json}"));
    let rest = &json[at..];
    let b =
        rest.find("\"bits_per_second\":").expect("bits_per_second") + "\"bits_per_second\":".len();
    rest[b..]
        .trim_start()
        .split([',', '\n', '}'])
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[rstest]
fn iperf3_tcp_both_directions_and_udp(
    #[values(StackThreadMode::RunToWakeup, StackThreadMode::RunToCompletion)] mode: StackThreadMode,
) {
    let (_g, topo) = topo();
    let mut cmd = preloaded(topo, "iperf3", "iperf3", mode);
    cmd.args(["-s", "-p", "15201"]);
    let mut server = ChildGuard::spawn(&mut cmd).unwrap();
    topo.wait_connectable(
        SocketAddr::new(topo.stack_ip4.into(), 15201),
        &mut server,
        Duration::from_secs(20),
    )
    .unwrap();
    let ip = topo.stack_ip4.to_string();
    let up = run_ok(
        topo.cmd("iperf3")
            .args(["-c", &ip, "-p", "15201", "-t", "10", "--json"]),
    );
    let down = run_ok(
        topo.cmd("iperf3")
            .args(["-c", &ip, "-p", "15201", "-t", "10", "-R", "--json"]),
    );
    let (u, d) = (
        iperf_bps(&up, "\"sum_received\""),
        iperf_bps(&down, "\"sum_received\""),
    );
    println!(
        "iperf3 to lstack: {:.0} Mbit/s, from lstack (-R): {:.0} Mbit/s",
        u / 1e6,
        d / 1e6
    );
    assert!(u > 0.0 && d > 0.0);

    // UDP: the server connects its socket to the client and binds a new one
    // on the same port; the datagrams must reach the connected one.
    let udp = run_ok(topo.cmd("iperf3").args([
        "-c", &ip, "-p", "15201", "-u", "-b", "50M", "-t", "5", "--json",
    ]));
    let at = udp.rfind("\"sum\"").expect("iperf3 UDP summary");
    let field = |k: &str| -> f64 {
        let rest = &udp[at..];
        let key = format!("\"{k}\":");
        let b = rest.find(&key).unwrap_or_else(|| panic!("no {k}: {udp}")) + key.len();
        rest[b..]
            .trim_start()
            .split([',', '\n', '}'])
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (packets, lost) = (field("packets"), field("lost_packets"));
    println!("iperf3 UDP to lstack at 50 Mbit/s: {packets} datagrams, {lost} lost");
    assert!(
        packets > 0.0 && lost < packets,
        "no UDP datagram reached the server: {udp}"
    );
    assert!(
        server.try_wait().unwrap().is_none(),
        "iperf3 server died: {}",
        server.stderr_so_far()
    );
}

#[rstest]
fn preloaded_clients_reach_kernel_servers(
    #[values(StackThreadMode::RunToWakeup, StackThreadMode::RunToCompletion)] mode: StackThreadMode,
) {
    let (_g, topo) = topo();
    let dir = scratch("clients");
    let file = dir.join("data.bin");
    std::fs::write(&file, common::pattern(77, 3 << 20)).unwrap();
    // A kernel HTTP server and a kernel redis in the peer namespace.
    let mut http = topo.cmd("python3");
    http.args([
        "-m",
        "http.server",
        "18081",
        "--bind",
        &topo.peer_ip4.to_string(),
        "--directory",
        dir.to_str().unwrap(),
    ]);
    http.stdout(Stdio::null()).stderr(Stdio::null());
    let mut http = topo.spawn(&mut http).unwrap();
    let mut redis = topo.cmd("redis-server");
    redis.args([
        "--port",
        "16380",
        "--bind",
        &topo.peer_ip4.to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
    ]);
    redis.stdout(Stdio::null());
    let mut redis = topo.spawn(&mut redis).unwrap();
    topo.wait_tcp_listening(18081, Duration::from_secs(20))
        .unwrap();
    topo.wait_tcp_listening(16380, Duration::from_secs(20))
        .unwrap();
    let _ = (&mut http, &mut redis);

    let got = dir.join("got.bin");
    let url = format!("http://{}:18081/data.bin", topo.peer_ip4);
    let mut curl = preloaded(topo, "curl", "curl", mode);
    curl.args(["-sS", "--fail", "-o", got.to_str().unwrap(), &url]);
    run_ok(&mut curl);
    assert_eq!(
        sha256(&got),
        sha256(&file),
        "curl under LD_PRELOAD downloaded different bytes"
    );

    let mut bench = preloaded(topo, "rbench", "redis-benchmark", mode);
    bench.args([
        "-h",
        &topo.peer_ip4.to_string(),
        "-p",
        "16380",
        "-t",
        "set,get",
        "-n",
        "50000",
        "-c",
        "20",
        "-q",
    ]);
    let out = run_ok(&mut bench);
    let rates = benchmark_rates(&out);
    assert!(
        rates.iter().any(|(n, _)| n == "SET") && rates.iter().any(|(n, _)| n == "GET"),
        "{out}"
    );
    assert!(!out.contains("rror"), "{out}");
    println!("redis-benchmark on lstack -> kernel redis: {rates:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `udp_enable = 0` leaves UDP sockets on the kernel and TCP on lstack: in
/// the same accelerated process a TCP socket binds the stack's address
/// (only lstack has it) while a UDP socket cannot (the kernel has no such
/// address: EADDRNOTAVAIL). With the default, both bind. Fails if the key
/// is ignored.
#[test]
fn udp_enable_0_leaves_udp_on_the_kernel() {
    let (_g, topo) = topo();
    let script = "import socket, sys\n\
                  ip = sys.argv[1]\n\
                  t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n\
                  t.bind((ip, 17771))\n\
                  print('tcp bound', flush=True)\n\
                  u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                  try:\n\
                  \x20   u.bind((ip, 0))\n\
                  \x20   print('udp bound')\n\
                  except OSError as e:\n\
                  \x20   print('udp errno', e.errno)\n";
    for (enable, want) in [(true, "udp bound"), (false, "udp errno 99")] {
        let name = if enable { "udp-on" } else { "udp-off" };
        let mut cfg = common::config_for(topo, name, &AfPacketEal::default());
        cfg.udp_enable = enable;
        let path = scratch(name).join("lstack.toml");
        std::fs::write(&path, cfg.to_toml_string()).unwrap();
        let mut py = Command::new("python3");
        py.env("LD_PRELOAD", liblstack())
            .env("LSTACK_CONF_PATH", &path)
            .args(["-c", script, &topo.stack_ip4.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = run_ok(&mut py);
        assert!(
            out.contains("tcp bound") && out.contains(want),
            "udp_enable = {enable}: expected {want:?}, got {out:?}"
        );
    }
}

/// `SO_RCVTIMEO` bounds a blocking `recv` and `accept` on lstack sockets as
/// on Linux (EAGAIN): an application that relies on a receive timeout must
/// not block forever. The peer's kernel server accepts and stays silent.
/// The client binds the stack's address with port 0 first (choosing its
/// source address, as `curl --interface` does), which must stay on lstack.
#[test]
fn so_rcvtimeo_ends_a_blocking_recv_and_accept_with_eagain() {
    let (_g, topo) = topo();
    const PORT: u16 = 18090;
    let mut silent = topo.cmd("python3");
    silent.args([
        "-c",
        "import socket, time\n\
         l = socket.socket()\n\
         l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         l.bind(('0.0.0.0', 18090))\n\
         l.listen()\n\
         c, _ = l.accept()\n\
         time.sleep(60)\n",
    ]);
    silent.stdout(Stdio::null()).stderr(Stdio::null());
    let _silent = topo.spawn(&mut silent).unwrap();
    topo.wait_tcp_listening(PORT, Duration::from_secs(20))
        .unwrap();
    let script = "import socket, struct, sys\n\
                  peer, me = sys.argv[1], sys.argv[2]\n\
                  tv = struct.pack('ll', 0, 200000)\n\
                  c = socket.socket()\n\
                  c.bind((me, 0))\n\
                  c.connect((peer, 18090))\n\
                  c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)\n\
                  try:\n\
                  \x20   c.recv(10)\n\
                  \x20   print('recv returned')\n\
                  except OSError as e:\n\
                  \x20   print('recv errno', e.errno)\n\
                  l = socket.socket()\n\
                  l.bind((me, 18091))\n\
                  l.listen()\n\
                  l.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)\n\
                  try:\n\
                  \x20   l.accept()\n\
                  \x20   print('accept returned')\n\
                  except OSError as e:\n\
                  \x20   print('accept errno', e.errno)\n";
    for mode in [
        StackThreadMode::RunToWakeup,
        StackThreadMode::RunToCompletion,
    ] {
        // `timeout` only guards the test against the hang being tested.
        let mut py = preloaded(topo, "rcvtimeo", "timeout", mode);
        py.args([
            "60",
            "python3",
            "-c",
            script,
            &topo.peer_ip4.to_string(),
            &topo.stack_ip4.to_string(),
        ]);
        let out = run_ok(&mut py);
        assert!(
            out.contains("recv errno 11") && out.contains("accept errno 11"),
            "{mode:?}: SO_RCVTIMEO was not honoured: {out:?}"
        );
    }
}

/// No silent fallback: every socket an accelerated process keeps on the
/// kernel is counted by reason and said at exit (and shown by `gazellectl
/// lstack show` meanwhile). Here a loopback listener (bound to an address
/// not on the stack) and a loopback client.
#[test]
fn kernel_path_sockets_are_counted_and_said_at_exit() {
    let (_g, topo) = topo();
    let script = "import socket\n\
                  l = socket.socket()\n\
                  l.bind(('127.0.0.1', 0))\n\
                  l.listen()\n\
                  c = socket.socket()\n\
                  c.connect(l.getsockname())\n\
                  s, _ = l.accept()\n\
                  c.sendall(b'kernel')\n\
                  print(s.recv(10).decode())\n";
    let mut py = preloaded(topo, "fallback", "python3", StackThreadMode::RunToWakeup);
    py.env("LSTACK_LOG", "info").args(["-c", script]);
    let out = py.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("kernel"),
        "{stdout}\n{stderr}"
    );
    // The listener, and the connection it accepted.
    assert!(
        stderr.contains(
            "sockets left on the kernel: bound to an address not on the stack 2, loopback 1"
        ),
        "no summary of the kernel-path sockets at exit: {stderr}"
    );
}

/// `gazellectl lstack show <ip> -c` lists the sockets a process keeps on
/// the kernel one by one, with the reason, beside the stack's own; options
/// lstack does not honour are counted by option and logged once each.
#[test]
fn kernel_path_sockets_are_listed_and_unhonoured_options_counted() {
    let (_g, topo) = topo();
    let me = topo.stack_ip4.to_string();
    let script = "import socket, sys\n\
                  me = sys.argv[1]\n\
                  l = socket.socket()\n\
                  l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                  l.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 5)\n\
                  l.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 6)\n\
                  l.bind((me, 18096))\n\
                  l.listen()\n\
                  l.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 16)\n\
                  k = socket.socket()\n\
                  k.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)\n\
                  k.bind(('127.0.0.1', 0))\n\
                  k.listen()\n\
                  u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                  u.connect(('127.0.0.1', 9))\n\
                  l.settimeout(0.2)\n\
                  try:\n\
                  \x20   l.accept()\n\
                  except OSError:\n\
                  \x20   pass\n\
                  print('ready', k.fileno(), k.getsockname()[1], u.fileno(), flush=True)\n\
                  sys.stdin.read()\n";
    let mut py = preloaded(topo, "listed", "python3", StackThreadMode::RunToWakeup);
    py.env("LSTACK_LOG", "info")
        .args(["-c", script, &me])
        .stdin(Stdio::piped());
    let mut py = ChildGuard::spawn(&mut py).unwrap();
    py.wait_for_output("ready", Duration::from_secs(30))
        .unwrap();
    let ready = py.stdout_so_far();
    let nums: Vec<i64> = ready
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect();
    let (kfd, kport, ufd) = (nums[0], nums[1], nums[2]);

    let sock = gazelle_ctl_proto::paths::lstack_socket(
        &gazelle_ctl_proto::paths::run_dir(),
        "",
        topo.stack_ip4.into(),
    );
    let ask = |req| {
        gazelle_ctl_proto::client::request(&sock, "lstack", req, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("asking {}: {e}", sock.display()))
    };
    let gazelle_ctl_proto::Response::LstackConnections { connections } =
        ask(gazelle_ctl_proto::Request::LstackConnections)
    else {
        panic!("lstack answered another question");
    };
    let shown = format!("{connections:#?}");
    let listener = connections
        .iter()
        .find(|c| c.local == format!("{me}:18096"))
        .unwrap_or_else(|| panic!("the lstack listener is not listed: {shown}"));
    assert_eq!(listener.state, "LISTEN", "{shown}");
    assert!(listener.kernel.is_none(), "{shown}");
    let kernel_listener = connections
        .iter()
        .find(|c| c.kernel.as_ref().is_some_and(|k| i64::from(k.fd) == kfd))
        .unwrap_or_else(|| panic!("the loopback listener (fd {kfd}) is not listed: {shown}"));
    assert_eq!(kernel_listener.state, "LISTEN", "{shown}");
    assert_eq!(
        kernel_listener.local,
        format!("127.0.0.1:{kport}"),
        "{shown}"
    );
    let k = kernel_listener.kernel.as_ref().unwrap();
    assert_eq!(
        (k.protocol.as_str(), k.reason.as_str()),
        ("tcp", "bound to an address not on the stack"),
        "{shown}"
    );
    let udp = connections
        .iter()
        .find(|c| c.kernel.as_ref().is_some_and(|k| i64::from(k.fd) == ufd))
        .unwrap_or_else(|| panic!("the loopback UDP socket (fd {ufd}) is not listed: {shown}"));
    assert_eq!(udp.remote, "127.0.0.1:9", "{shown}");
    let k = udp.kernel.as_ref().unwrap();
    assert_eq!(
        (k.protocol.as_str(), k.reason.as_str()),
        ("udp", "loopback"),
        "{shown}"
    );
    assert_eq!(
        connections.iter().filter(|c| c.kernel.is_some()).count(),
        2,
        "{shown}"
    );

    let gazelle_ctl_proto::Response::LstackStats(stats) =
        ask(gazelle_ctl_proto::Request::LstackStats)
    else {
        panic!("lstack answered another question");
    };
    let options = &stats.unhonoured_options;
    assert_eq!(
        options.get("IPPROTO_TCP/TCP_DEFER_ACCEPT"),
        Some(&2),
        "{options:?}"
    );
    assert_eq!(options.get("IPPROTO_IP/IP_TOS"), Some(&1), "{options:?}");
    // Set on a socket that stayed on the kernel, where it took effect.
    assert!(!options.contains_key("IPPROTO_TCP/TCP_CORK"), "{options:?}");
    assert!(
        !options.keys().any(|k| k.contains("SO_REUSEADDR")),
        "{options:?}"
    );

    py.close_stdin();
    let out = py
        .wait_with_output_timeout(Duration::from_secs(30))
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr
            .matches("option=IPPROTO_TCP/TCP_DEFER_ACCEPT")
            .count(),
        1,
        "the unhonoured option is not logged exactly once: {stderr}"
    );
    assert!(
        stderr.contains(
            "socket options set but not honoured by lstack: IPPROTO_IP/IP_TOS 1, IPPROTO_TCP/TCP_DEFER_ACCEPT 2"
        ),
        "no summary of unhonoured options at exit: {stderr}"
    );
}

/// Child processes of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The pid written in the standalone stack's lock file whose name starts
/// with `prefix` and whose holder is one of `pids`.
fn lock_holder(prefix: &str, pids: &[u32]) -> u32 {
    let run_dir = gazelle_ctl_proto::paths::run_dir();
    let holders: Vec<u32> = std::fs::read_dir(&run_dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            if !(name.starts_with(prefix) && name.ends_with(".lock")) {
                return None;
            }
            std::fs::read_to_string(e.path()).ok()?.trim().parse().ok()
        })
        .collect();
    let mine: Vec<u32> = holders
        .iter()
        .copied()
        .filter(|p| pids.contains(p))
        .collect();
    assert_eq!(
        mine.len(),
        1,
        "lock holders {holders:?}, candidates {pids:?}"
    );
    mine[0]
}

/// nginx as Debian ships it (`/etc/nginx/nginx.conf`'s shape): a master
/// that listens and forks `worker_processes auto` workers, which drop to
/// `www-data` and accept. Only `daemon off` is added, so the test owns the
/// process. Standalone, the first worker to use the listener starts the
/// stack and owns the NIC; the other says why it stays idle.
#[rstest]
fn nginx_default_config_serves_from_forked_workers(
    #[values(StackThreadMode::RunToWakeup, StackThreadMode::RunToCompletion)] mode: StackThreadMode,
) {
    let (_g, topo) = topo();
    let dir = scratch("nginx-default");
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let body = common::pattern(1 << 20, 1 << 20);
    std::fs::write(www.join("1m.bin"), &body).unwrap();
    let conf_path = dir.join("nginx.conf");
    std::fs::write(
        &conf_path,
        format!(
            "user www-data;\nworker_processes auto;\npid {d}/nginx.pid;\n\
             error_log stderr notice;\n\
             events {{ worker_connections 768; }}\n\
             http {{\n  sendfile on;\n  tcp_nopush on;\n  types_hash_max_size 2048;\n\
               include /etc/nginx/mime.types;\n  default_type application/octet-stream;\n\
               access_log off;\n  gzip on;\n\
               client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f;\n\
               uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;\n\
               server {{ listen {ip}:18081; root {r}; }}\n}}\n",
            d = dir.display(),
            r = www.display(),
            ip = topo.stack_ip4,
        ),
    )
    .unwrap();
    let mut cmd = preloaded(topo, "nginx-default", "nginx", mode);
    cmd.args(["-c", conf_path.to_str().unwrap(), "-g", "daemon off;"]);
    let mut master = ChildGuard::spawn(&mut cmd).unwrap();
    topo.wait_connectable(
        SocketAddr::new(topo.stack_ip4.into(), 18081),
        &mut master,
        Duration::from_secs(30),
    )
    .unwrap();

    let got = dir.join("got.bin");
    let url = format!("http://{}:18081/1m.bin", topo.stack_ip4);
    for _ in 0..3 {
        run_ok(
            // Bounded: a listener nobody accepts on still completes
            // handshakes, and curl would wait for the answer forever.
            topo.cmd("curl").args([
                "-sS",
                "--fail",
                "--max-time",
                "30",
                "-o",
                got.to_str().unwrap(),
                &url,
            ]),
        );
        assert_eq!(
            std::fs::read(&got).unwrap(),
            body,
            "the file differs after download"
        );
    }
    std::fs::write(www.join("index.html"), "served by a forked worker\n").unwrap();
    let small = format!("http://{}:18081/index.html", topo.stack_ip4);
    let out = run_ok(topo.cmd("wrk").args([
        "-t",
        "2",
        "-c",
        "50",
        "-d",
        "5s",
        "--timeout",
        "10s",
        &small,
    ]));
    println!("{out}");
    assert!(
        !out.contains("Socket errors"),
        "wrk saw socket errors: {out}"
    );
    assert!(!out.contains("Non-2xx"), "wrk saw non-2xx answers: {out}");

    // The master never started a stack; exactly one worker did (it holds
    // the address's lock), and the other said why it stays idle.
    let workers = children(master.id());
    assert!(workers.len() >= 2, "workers: {workers:?}");
    let owner = lock_holder(&format!("lstack-{}-", topo.stack_ip4), &workers);
    assert!(
        workers.contains(&owner),
        "lock held by {owner}, workers {workers:?}"
    );
    let owner_threads = thread_names(owner);
    if mode == StackThreadMode::RunToWakeup {
        assert!(
            owner_threads.iter().any(|n| n.starts_with("lstack-stack")),
            "{owner_threads:?}"
        );
    }
    assert!(
        !thread_names(master.id())
            .iter()
            .any(|n| n.starts_with("lstack") || n.starts_with("eal")),
        "the master started a stack: {:?}",
        thread_names(master.id())
    );
    let stderr = master.stderr_so_far();
    assert!(
        stderr.contains(&format!("is served by lstack in pid {owner} (nginx)")),
        "the idle worker did not say why: {stderr}"
    );
    assert!(!stderr.contains("accept4() failed"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A child forked after its parent's stack started (PostgreSQL's shape):
/// a connection the parent closes after the fork is handed to the child,
/// carried by the parent's stack; one the parent keeps stays the parent's
/// (the child's read waits, then times out), and the child's inherited
/// listener fails at once. The child says what it got; nothing hangs.
#[rstest]
fn a_connection_passes_to_a_child_forked_after_the_stack_started(
    #[values(StackThreadMode::RunToWakeup, StackThreadMode::RunToCompletion)] mode: StackThreadMode,
) {
    let (_g, topo) = topo();
    let script = format!(
        "import os, socket, sys\n\
         l = socket.socket()\n\
         l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         l.bind(('{ip}', 18082))\n\
         l.listen()\n\
         print('listening', flush=True)\n\
         s, _ = l.accept()\n\
         pid = os.fork()\n\
         if pid == 0:\n\
         \x20   s.settimeout(1)\n\
         \x20   try:\n\
         \x20       s.recv(100)\n\
         \x20       print('child read the parent connection', flush=True)\n\
         \x20   except socket.timeout:\n\
         \x20       print('child waited', flush=True)\n\
         \x20   os._exit(0)\n\
         _, status = os.waitpid(pid, 0)\n\
         s.sendall(b'parent still serves')\n\
         s.close()\n\
         print('first child status', status, flush=True)\n\
         s, _ = l.accept()\n\
         pid = os.fork()\n\
         if pid == 0:\n\
         \x20   s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n\
         \x20   peer = s.getpeername()\n\
         \x20   got = b''\n\
         \x20   while len(got) < 5:\n\
         \x20       got += s.recv(100)\n\
         \x20   s.sendall(b'child serves ' + got + b' from port ' + str(peer[1]).encode() + b' ' + bytes(200000))\n\
         \x20   s.close()\n\
         \x20   os._exit(0)\n\
         s.close()\n\
         _, status = os.waitpid(pid, 0)\n\
         print('second child status', status, flush=True)\n",
        ip = topo.stack_ip4
    );
    let mut py = preloaded(topo, "forked", "python3", mode);
    py.args(["-c", &script]);
    let mut server = ChildGuard::spawn(&mut py).unwrap();
    // Not wait_connectable: its probe would be the one connection accepted.
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while !server.stdout_so_far().contains("listening") && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = topo
        .cmd("python3")
        .args([
            "-c",
            &format!(
                "import socket\n\
                 s = socket.create_connection(('{ip}', 18082), timeout=20)\n\
                 print(s.recv(100).decode(), flush=True)\n\
                 s = socket.create_connection(('{ip}', 18082), timeout=20)\n\
                 s.sendall(b'hello')\n\
                 got = b''\n\
                 while True:\n\
                 \x20   b = s.recv(65536)\n\
                 \x20   if not b:\n\
                 \x20       break\n\
                 \x20   got += b\n\
                 print(got[:-200000].decode(), len(got), flush=True)\n\
                 print('my port', s.getsockname()[1], flush=True)\n",
                ip = topo.stack_ip4
            ),
        ])
        .output()
        .unwrap();
    let client = String::from_utf8_lossy(&out.stdout);
    let until = std::time::Instant::now() + Duration::from_secs(30);
    let mut status = None;
    while status.is_none() && std::time::Instant::now() < until {
        status = server.try_wait().unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let stdout = server.stdout_so_far();
    let stderr = server.stderr_so_far();
    let all = format!(
        "client: {client}{}\nserver: {stdout}\n{stderr}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(status.is_some_and(|s| s.success()), "{all}");
    // The kept connection: the child waited, the parent served it.
    assert!(stdout.contains("child waited"), "{all}");
    assert!(stdout.contains("first child status 0"), "{all}");
    assert!(client.contains("parent still serves"), "{all}");
    // The handed one: the child read, answered (with the client's port
    // from getpeername) and closed; the client read all of it, then end
    // of file.
    assert!(stdout.contains("second child status 0"), "{all}");
    let port = client
        .lines()
        .find_map(|l| l.strip_prefix("my port "))
        .unwrap_or_else(|| panic!("{all}"));
    assert!(
        client.contains(&format!("child serves hello from port {port} ")),
        "{all}"
    );
    let want_len = format!("child serves hello from port {port} ").len() + 200_000;
    assert!(client.contains(&format!(" {want_len}\n")), "{all}");
    assert!(
        stderr.contains("1 connection(s) pass to it when the parent closes them"),
        "{all}"
    );
}
