//! `gazellectl lstack show` against a real lstack (the `lstack-echo` binary on
//! a DPDK `net_af_packet` port) with kernel clients in the peer namespace:
//! the counters and connections it prints are the stack's, in tables and in
//! JSON; asking an address nobody serves, or ltran (not running), fails with
//! a message saying so. Needs root, hugepages and `target/release/lstack-echo`
//! (`cargo build --release -p lstack`).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
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

#[test]
fn shows_counters_and_connections_of_a_running_lstack() {
    require_root();
    let topo = Topology::new(TopologyOptions {
        name_hint: "gctl".into(),
        ..Default::default()
    })
    .unwrap();
    let huge = hugepages::ensure(64).unwrap();
    let prefix = hugepages::dpdk_file_prefix("gazellectl-show");
    let cfg = lstack_config(&topo, &huge, &AfPacketEal::default(), &prefix).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let conf = dir.path().join("lstack.toml");
    std::fs::write(&conf, cfg.to_toml_string()).unwrap();

    let mut echo = ChildGuard::spawn(
        Command::new(lstack_echo())
            .args(["--port", "7"])
            .env("LSTACK_CONF_PATH", &conf)
            .env("GAZELLE_RUN_DIR", &run_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .unwrap();
    echo.wait_for_output("echoing", Duration::from_secs(30))
        .unwrap();
    let ip = topo.stack_ip4.to_string();
    let socket = run_dir.join(format!("lstack-{ip}.sock"));
    let end = Instant::now() + Duration::from_secs(10);
    while !socket.exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(socket.exists(), "no control socket at {}", socket.display());

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

    let stats = json(&gazellectl(&run_dir, &["--json", "lstack", "show", &ip]));
    assert_eq!(stats["ip"], serde_json::json!(ip));
    assert_eq!(stats["pid"], serde_json::json!(echo.id()));
    assert_eq!(stats["tcp_connections"], serde_json::json!(2), "{stats:#}");
    let t = &stats["threads"][0];
    assert!(t["rx_bytes"].as_u64().unwrap() >= 20_000, "{stats:#}");
    assert!(t["tx_bytes"].as_u64().unwrap() >= 20_000, "{stats:#}");
    assert_eq!(t["tcp_established"], serde_json::json!(2), "{stats:#}");
    assert!(stats["port"]["rx_packets"].as_u64().unwrap() >= t["rx_packets"].as_u64().unwrap() / 2);

    let conns = json(&gazellectl(
        &run_dir,
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

    let table = gazellectl(&run_dir, &["lstack", "show", &ip]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success());
    assert!(
        text.contains(&format!("lstack {ip} (pid {}", echo.id())),
        "{text}"
    );
    assert!(text.contains("conn_num: 2"), "{text}");

    let rate = json(&gazellectl(
        &run_dir,
        &["--json", "lstack", "show", &ip, "-r"],
    ));
    assert_eq!(rate["interval_secs"], serde_json::json!(1.0), "{rate:#}");
    assert!(rate["rx_pps"].as_f64().unwrap() >= 0.0, "{rate:#}");
    assert_eq!(rate["tcp_connections"], serde_json::json!(2), "{rate:#}");
    drop(clients);

    // Nobody serves this address.
    let out = gazellectl(&run_dir, &["lstack", "show", "192.0.2.99"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lstack 192.0.2.99 is not running"), "{err}");
    let out = gazellectl(&run_dir, &["ltran", "show"]);
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
