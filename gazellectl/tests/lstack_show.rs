//! `gazellectl lstack show` against a real lstack (the `lstack-echo` binary on
//! a DPDK `net_af_packet` port) with kernel clients in the peer namespace:
//! the counters, MIB-2 counters, receive latency and connections it prints
//! are the stack's, in tables and in JSON; asking an address nobody serves, or
//! ltran (not running), fails with a message saying so. Needs root, hugepages
//! and `target/release/lstack-echo` (`cargo build --release -p lstack`).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use netns_testbed::{
    hugepages, lstack_config, require_root, AfPacketEal, ChildGuard, Topology, TopologyOptions,
};

const GAZELLECTL: &str = env!("CARGO_BIN_EXE_gazellectl");

/// `lstack-echo`, built next to this test's binary.
fn lstack_echo() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .join("lstack-echo");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --release -p lstack`",
        bin.display()
    );
    bin
}

fn gazellectl(run_dir: &Path, args: &[&str]) -> Output {
    Command::new(GAZELLECTL)
        .arg("--run-dir")
        .arg(run_dir)
        .args(args)
        .output()
        .expect("running gazellectl")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "gazellectl failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("gazellectl --json prints JSON")
}

/// A running `lstack-echo` on its own topology, and where its control
/// socket is.
struct Echo {
    topo: Topology,
    run_dir: PathBuf,
    ip: String,
    process: ChildGuard,
    _dir: tempfile::TempDir,
}

fn start_echo(hint: &str, prefix: &str) -> Echo {
    require_root();
    let topo = Topology::new(TopologyOptions {
        name_hint: hint.into(),
        ..Default::default()
    })
    .unwrap();
    let huge = hugepages::ensure(64).unwrap();
    let prefix = hugepages::dpdk_file_prefix(prefix);
    let cfg = lstack_config(&topo, &huge, &AfPacketEal::default(), &prefix).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let conf = dir.path().join("lstack.toml");
    std::fs::write(&conf, cfg.to_toml_string()).unwrap();
    let mut process = ChildGuard::spawn(
        Command::new(lstack_echo())
            .args(["--port", "7"])
            .env("LSTACK_CONF_PATH", &conf)
            .env("GAZELLE_RUN_DIR", &run_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .unwrap();
    process
        .wait_for_output("echoing", Duration::from_secs(30))
        .unwrap();
    let ip = topo.stack_ip4.to_string();
    let socket = run_dir.join(format!("lstack-{ip}.sock"));
    let end = Instant::now() + Duration::from_secs(10);
    while !socket.exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(socket.exists(), "no control socket at {}", socket.display());
    Echo {
        topo,
        run_dir,
        ip,
        process,
        _dir: dir,
    }
}

/// A counter of `gazellectl ... -s --json`'s total: `path` like "icmp.in_echos".
fn counter(snmp: &serde_json::Value, path: &str) -> u64 {
    let mut v = &snmp["total"];
    for k in path.split('.') {
        v = &v[k];
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("no counter {path} in {snmp:#}"))
}

#[test]
fn mib_counters_and_read_latency_follow_real_traffic() {
    let echo = start_echo("gmib", "gazellectl-mib");
    let (topo, run_dir, ip) = (&echo.topo, &echo.run_dir, echo.ip.as_str());
    let snmp = || {
        json(&gazellectl(
            run_dir,
            &["--json", "lstack", "show", ip, "-s"],
        ))
    };
    let latency = || {
        json(&gazellectl(
            run_dir,
            &["--json", "lstack", "show", ip, "-l"],
        ))
    };
    let before = snmp();
    let reads_before = latency()["total"]["count"].as_u64().unwrap();

    // Five pings, v4 and v6.
    for addr in [topo.stack_ip4.to_string(), topo.stack_ip6.to_string()] {
        topo.run(["ping", "-c", "5", "-i", "0.2", "-W", "2", &addr])
            .unwrap();
    }

    // A TCP client echoes 20 messages one at a time (each taken by at least
    // one read of the server), then resets the connection.
    const MESSAGES: u64 = 20;
    let to = SocketAddr::new(topo.stack_ip4.into(), 7);
    let client = topo
        .in_netns(|| {
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(10)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            for i in 0..MESSAGES {
                let msg = [i as u8; 100];
                s.write_all(&msg).unwrap();
                let mut back = [0u8; 100];
                s.read_exact(&mut back).unwrap();
                assert_eq!(back, msg);
            }
            s
        })
        .unwrap();
    let open = snmp();
    assert!(counter(&open, "tcp.curr_estab") >= 1, "{open:#}");

    // The same over UDP, 10 datagrams; then 3 to a port nobody bound, and a
    // TCP connection to a port nobody listens on.
    const DATAGRAMS: u64 = 10;
    let udp_to = SocketAddr::new(topo.stack_ip4.into(), 7);
    let closed = SocketAddr::new(topo.stack_ip4.into(), 9);
    topo.in_netns(|| {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        for i in 0..DATAGRAMS {
            let msg = [i as u8; 50];
            s.send_to(&msg, udp_to).unwrap();
            let mut back = [0u8; 100];
            let (n, from) = s.recv_from(&mut back).unwrap();
            assert_eq!((&back[..n], from), (&msg[..], udp_to));
        }
        let other = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..3 {
            other.send_to(b"anyone?", closed).unwrap();
        }
        let refused = TcpStream::connect_timeout(&closed, Duration::from_secs(5));
        assert_eq!(
            refused.unwrap_err().kind(),
            std::io::ErrorKind::ConnectionRefused
        );
    })
    .unwrap();
    // SO_LINGER 0: closing sends RST, and the server's connection goes from
    // ESTABLISHED straight to CLOSED.
    nix::sys::socket::setsockopt(
        &client,
        nix::sys::socket::sockopt::Linger,
        &nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .unwrap();
    drop(client);

    let delta = |now: &serde_json::Value, path: &str| counter(now, path) - counter(&before, path);
    let end = Instant::now() + Duration::from_secs(10);
    let after = loop {
        // The reset and the port unreachables are counted as the stack
        // handles them; wait for the last of them.
        let now = snmp();
        if (delta(&now, "tcp.estab_resets") >= 1 && delta(&now, "udp.no_ports") >= 3)
            || Instant::now() > end
        {
            break now;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // At least one segment per message each way, one datagram per
    // datagram, one answer per ping and per stray datagram.
    let at_least = [
        ("ip.in_receives", 5 + MESSAGES + DATAGRAMS + 3),
        ("ip.in_delivers", 5 + MESSAGES + DATAGRAMS + 3),
        ("ip.out_requests", 5 + MESSAGES + DATAGRAMS + 3),
        ("icmp.in_msgs", 5),
        ("icmp.in_echos", 5),
        ("icmp.out_msgs", 5 + 3),
        ("icmp.out_echo_reps", 5),
        ("icmp.out_dest_unreachs", 3),
        ("ip6.in_receives", 5),
        ("icmp6.in_echos", 5),
        ("icmp6.out_echo_reps", 5),
        ("tcp.passive_opens", 1),
        ("tcp.estab_resets", 1),
        ("tcp.in_segs", MESSAGES + 1),
        ("tcp.out_segs", MESSAGES + 1),
        ("tcp.out_rsts", 1),
        ("tcp_ext.in_rsts", 1),
        ("tcp_ext.established", 1),
        ("udp.in_datagrams", DATAGRAMS),
        ("udp.out_datagrams", DATAGRAMS),
        ("udp.no_ports", 3),
    ];
    let short: Vec<String> = at_least
        .iter()
        .filter(|(path, n)| delta(&after, path) < *n)
        .map(|(path, n)| format!("{path} moved {} < {n}", delta(&after, path)))
        .collect();
    assert!(
        short.is_empty(),
        "{short:?}\nbefore {before:#}\nafter {after:#}"
    );
    // Nothing we sent was malformed.
    for path in [
        "ip.in_hdr_errors",
        "tcp.in_errs",
        "udp.in_errors",
        "icmp.in_errors",
    ] {
        assert_eq!(delta(&after, path), 0, "{path}: {after:#}");
    }
    // The total is the threads added up.
    assert_eq!(
        counter(&after, "ip.in_receives"),
        after["threads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["ip"]["in_receives"].as_u64().unwrap())
            .sum::<u64>()
    );

    // Every read of the server that returned data was measured: at least
    // one per TCP message and one per datagram.
    let l = latency();
    let t = &l["total"];
    let n = |k: &str| t[k].as_u64().unwrap_or_else(|| panic!("no {k} in {l:#}"));
    assert!(
        n("count") >= reads_before + MESSAGES + DATAGRAMS,
        "{MESSAGES} messages and {DATAGRAMS} datagrams read: {l:#}"
    );
    assert!(
        n("min_ns") <= n("mean_ns") && n("mean_ns") <= n("max_ns"),
        "{l:#}"
    );
    assert!(
        n("min_ns") <= n("p50_ns") && n("p50_ns") <= n("p99_ns"),
        "{l:#}"
    );
    assert!(n("p99_ns") <= n("max_ns"), "{l:#}");
    let bucketed: u64 = t["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap())
        .sum();
    assert_eq!(bucketed, n("count"), "{l:#}");

    // The tables.
    let table = gazellectl(run_dir, &["lstack", "show", ip, "-s"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success(), "{text}");
    assert!(text.contains("MIB-2 counters"), "{text}");
    let echos = text
        .lines()
        .find(|l| l.trim_start().starts_with("InEchos"))
        .unwrap_or_else(|| panic!("no InEchos row: {text}"));
    assert!(
        echos
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 5,
        "{text}"
    );
    let table = gazellectl(run_dir, &["lstack", "show", ip, "-l"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success(), "{text}");
    assert!(text.contains("receive latency"), "{text}");
    assert!(text.contains("reads by latency"), "{text}");

    // With a time, -s and -l print again and again until stopped.
    for view in ["-s", "-l"] {
        let mut watch = ChildGuard::spawn(
            Command::new(GAZELLECTL)
                .arg("--run-dir")
                .arg(run_dir)
                .args(["--json", "lstack", "show", ip, view, "1"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(2500));
        assert!(
            watch.try_wait().unwrap().is_none(),
            "gazellectl {view} 1 stopped by itself: {}",
            watch.stderr_so_far()
        );
        let out = watch.stdout_so_far();
        watch.kill();
        let docs = serde_json::Deserializer::from_str(&out)
            .into_iter::<serde_json::Value>()
            .filter(|d| d.as_ref().is_ok_and(|d| d["total"].is_object()))
            .count();
        assert!(docs >= 2, "gazellectl {view} 1 printed {docs} samples");
    }
}

#[test]
fn shows_counters_and_connections_of_a_running_lstack() {
    let mut started = start_echo("gctl", "gazellectl-show");
    let (topo, run_dir, ip) = (&started.topo, &started.run_dir, started.ip.clone());
    let echo = &mut started.process;
    let socket = run_dir.join(format!("lstack-{ip}.sock"));

    // Two kernel clients hold connections; each echoes 10 000 bytes.
    let to = SocketAddr::new(topo.stack_ip4.into(), 7);
    let clients: Vec<TcpStream> = topo
        .in_netns(|| {
            (0..2)
                .map(|_| {
                    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(10)).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let data = vec![7u8; 10_000];
                    s.write_all(&data).unwrap();
                    let mut back = vec![0u8; data.len()];
                    s.read_exact(&mut back).unwrap();
                    assert_eq!(back, data);
                    s
                })
                .collect()
        })
        .unwrap();

    // A client that trickles its request a byte at a time holds no one up,
    // and the stack hangs up on it (it once blocked every later request).
    let trickler = {
        let mut slow = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(120);
            while Instant::now() < end {
                if slow.write_all(b" ").is_err() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        })
    };

    let stats = json(&gazellectl(run_dir, &["--json", "lstack", "show", &ip]));
    assert_eq!(stats["ip"], serde_json::json!(ip));
    assert_eq!(stats["pid"], serde_json::json!(echo.id()));
    assert_eq!(stats["tcp_connections"], serde_json::json!(2), "{stats:#}");
    let t = &stats["threads"][0];
    assert!(t["rx_bytes"].as_u64().unwrap() >= 20_000, "{stats:#}");
    assert!(t["tx_bytes"].as_u64().unwrap() >= 20_000, "{stats:#}");
    assert_eq!(t["tcp_established"], serde_json::json!(2), "{stats:#}");
    assert!(stats["port"]["rx_packets"].as_u64().unwrap() >= t["rx_packets"].as_u64().unwrap() / 2);

    let conns = json(&gazellectl(
        run_dir,
        &["--json", "lstack", "show", &ip, "-c"],
    ));
    let estab: Vec<&serde_json::Value> = conns
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] == "ESTAB")
        .collect();
    assert_eq!(estab.len(), 2, "{conns:#}");
    for c in &estab {
        assert_eq!(c["local"], serde_json::json!(format!("{ip}:7")));
        assert!(
            c["remote"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{}:", topo.peer_ip4)),
            "{c}"
        );
    }
    assert!(conns
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["state"] == "LISTEN"));

    let table = gazellectl(run_dir, &["lstack", "show", &ip]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success());
    assert!(
        text.contains(&format!("lstack {ip} (pid {}", echo.id())),
        "{text}"
    );
    assert!(text.contains("conn_num: 2"), "{text}");

    let rate = json(&gazellectl(
        run_dir,
        &["--json", "lstack", "show", &ip, "-r"],
    ));
    assert_eq!(rate["interval_secs"], serde_json::json!(1.0), "{rate:#}");
    assert!(rate["rx_pps"].as_f64().unwrap() >= 0.0, "{rate:#}");
    assert_eq!(rate["tcp_connections"], serde_json::json!(2), "{rate:#}");
    drop(clients);
    assert!(
        trickler.join().unwrap(),
        "the stack never hung up on a client trickling its request"
    );

    // Nobody serves this address.
    let out = gazellectl(run_dir, &["lstack", "show", "192.0.2.99"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lstack 192.0.2.99 is not running"), "{err}");
    let out = gazellectl(run_dir, &["ltran", "show"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ltran is not running"), "{err}");

    // Stopped cleanly, the stack removes its socket.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(echo.id() as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = echo.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < end, "lstack-echo did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "lstack-echo exited with {status}");
    assert!(!socket.exists(), "{} left behind", socket.display());
}
