//! The supervisor running a real application on lstack: an unmodified
//! `redis-server` under `LD_PRELOAD=liblstack.so`, built from an appliance
//! config exactly as the daemon does, once as its own DPDK primary on
//! `net_af_packet` over a veth (`use_ltran = 0`) and once behind a real
//! ltran that owns the veth (`use_ltran = 1`, ltran started first and
//! ready once its control socket answers). A kernel `redis-cli` in the peer
//! namespace talks to it; after a `kill -9` the supervisor restarts it and
//! redis answers again; a stop ends everything cleanly, last started first
//! (processes gone, control sockets removed).
//!
//! Needs root, hugepages, redis-server/redis-tools and
//! `target/release/{liblstack.so,ltran}` (`cargo build --release -p
//! lstack-preload -p ltran`). The tests take turns: each runs DPDK.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use appliance::config::{ApplianceConfig, Instance, RestartMode, RestartPolicy, SubConfig};
use appliance::supervisor::{
    specs_from_config, Paths, ProcessState, Supervisor, SupervisorOptions,
};
use netns_testbed::{
    hugepages, lstack_config, require_root, AfPacketEal, Topology, TopologyOptions,
};
use support::liblstack;

const PORT: &str = "16390";

/// One DPDK test at a time.
static TURN: Mutex<()> = Mutex::new(());

/// The ltran binary of this workspace's release build.
fn ltran_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/ltran");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build --release -p ltran`",
        bin.display()
    );
    bin
}

/// The redis instance of the appliance config, with `lstack` as its
/// lstack settings.
fn redis_instance(lstack: toml::Table) -> Instance {
    Instance {
        name: "redis".into(),
        command: [
            "redis-server",
            "--port",
            PORT,
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ]
        .map(String::from)
        .to_vec(),
        environment: BTreeMap::new(),
        restart: RestartPolicy {
            mode: RestartMode::OnFailure,
            initial_backoff_ms: 200,
            max_backoff_ms: 2000,
            max_restarts: Some(5),
        },
        lstack: SubConfig::Inline(lstack),
    }
}

/// Whether a connection to redis's port fails within 3 s (redis-cli would
/// wait for the kernel's SYN retries to an address nobody answers for).
fn nothing_listens(topo: &Topology) -> bool {
    let to = std::net::SocketAddr::new(topo.stack_ip4.into(), PORT.parse().unwrap());
    topo.in_netns(|| std::net::TcpStream::connect_timeout(&to, Duration::from_secs(3)).is_err())
        .unwrap()
}

fn pid_gone(pid: u32) -> bool {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        None,
    )
    .is_err()
}

/// `redis-cli` in the peer namespace against the stack's address.
fn redis_cli(topo: &Topology, args: &[&str]) -> Result<String, String> {
    let ip = topo.stack_ip4.to_string();
    let out = topo
        .cmd("redis-cli")
        .args(["-h", &ip, "-p", PORT])
        .args(args)
        .output()
        .map_err(|e| format!("running redis-cli: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && !stdout.starts_with("Could not connect") {
        Ok(stdout)
    } else {
        Err(format!(
            "{}: {stdout} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Polls PING until redis answers PONG.
fn wait_for_pong(topo: &Topology, sup: &Supervisor) {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        match redis_cli(topo, &["PING"]) {
            Ok(answer) if answer == "PONG" => return,
            last => assert!(
                Instant::now() < end,
                "redis does not answer from the peer after 30 s: {last:?}\nstatus: {:#?}",
                sup.status()
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for_file(path: &Path, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while !path.exists() {
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[test]
fn redis_on_lstack_is_supervised_restarted_and_stopped() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let topo = Topology::new(TopologyOptions {
        name_hint: "apsup".into(),
        ..Default::default()
    })
    .unwrap();
    let huge = hugepages::ensure(64).unwrap();
    let prefix = hugepages::dpdk_file_prefix("appliance-supervisor");
    let lstack = lstack_config(&topo, &huge, &AfPacketEal::default(), &prefix).unwrap();
    let dir = tempfile::tempdir().unwrap();

    // The appliance config the daemon would hold: one instance, inline
    // lstack settings for this topology.
    let table: toml::Table = toml::from_str(&lstack.to_toml_string()).unwrap();
    let config = ApplianceConfig {
        instances: vec![redis_instance(table)],
        ..ApplianceConfig::empty()
    };
    let resolved = config.validate().unwrap();
    let gazelle_run = dir.path().join("gazelle");
    let paths = Paths {
        lstack_lib: liblstack(),
        ltran_bin: dir.path().join("no-ltran"),
        runtime_dir: dir.path().join("appliance"),
        gazelle_run_dir: Some(gazelle_run.clone()),
    };
    let specs = specs_from_config(&config, &resolved, &paths, None);
    assert_eq!(specs.len(), 1, "no [ltran] section: no ltran process");

    let sup = Supervisor::new(SupervisorOptions {
        ready_uptime: Duration::from_millis(500),
        stop_timeout: Duration::from_secs(10),
        ..SupervisorOptions::default()
    });
    sup.apply(specs).unwrap();
    sup.wait_running(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    let generated = std::fs::read_to_string(paths.runtime_dir.join("redis.toml")).unwrap();
    assert!(generated.contains(&format!("host_addr = \"{}\"", topo.stack_ip4)));

    // A kernel client in the peer namespace reaches redis through lstack.
    wait_for_pong(&topo, &sup);
    assert_eq!(redis_cli(&topo, &["SET", "who", "lstack"]).unwrap(), "OK");
    assert_eq!(redis_cli(&topo, &["GET", "who"]).unwrap(), "lstack");
    let socket = gazelle_ctl_proto::paths::lstack_socket(&gazelle_run, "", topo.stack_ip4.into());
    assert!(
        wait_for_file(&socket, Duration::from_secs(10)),
        "no lstack control socket at {}",
        socket.display()
    );
    let first = sup.process("redis").unwrap();
    let pid = first.pid.unwrap();
    assert_eq!(first.restarts, 0);

    // kill -9: the supervisor notices and starts a new redis.
    let killed = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let again = sup
        .wait_for("redis", Duration::from_secs(30), |s| {
            s.state == ProcessState::Running && s.restarts == 1
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let new_pid = again.pid.unwrap();
    assert_ne!(new_pid, pid);
    assert_eq!(again.last_exit.unwrap().signal, Some(9));
    wait_for_pong(&topo, &sup);
    // A fresh redis: the old key is gone, new ones work.
    assert_eq!(redis_cli(&topo, &["GET", "who"]).unwrap(), "");
    assert_eq!(redis_cli(&topo, &["SET", "who", "again"]).unwrap(), "OK");
    assert_eq!(redis_cli(&topo, &["GET", "who"]).unwrap(), "again");
    assert!(wait_for_file(&socket, Duration::from_secs(10)));

    // A clean stop: the process is gone, and so is its control socket
    // (redis handles SIGTERM and leaves through exit(), where liblstack
    // does not remove the socket; the supervisor removes what is left).
    sup.stop_all();
    assert!(sup.status().is_empty());
    assert!(
        pid_gone(new_pid),
        "redis (pid {new_pid}) still exists after the stop"
    );
    assert!(
        !socket.exists(),
        "{} left behind after a clean stop",
        socket.display()
    );
    assert!(nothing_listens(&topo), "something still answers");
    hugepages::remove_dpdk_runtime_dir(&prefix).unwrap();
    topo.teardown().unwrap();
}

#[test]
fn ltran_first_then_redis_behind_it_restarted_and_stopped_in_reverse() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let topo = Topology::new(TopologyOptions {
        name_hint: "apltr".into(),
        ..Default::default()
    })
    .unwrap();
    let huge = hugepages::ensure(128).unwrap();
    let prefix = hugepages::dpdk_file_prefix("appliance-ltran");
    let dir = tempfile::tempdir().unwrap();
    let o = topo.stack_ip4.octets();
    let mac = topo.stack_mac.to_string();
    // ltran owns the veth (one port, one bond); redis runs behind it.
    let ltran: toml::Table = toml::from_str(&format!(
        r#"forward_kit_args = ["-l", "0", "--no-pci", "--no-telemetry", "--file-prefix={prefix}", "--huge-dir={huge}", "--socket-limit=192", "--log-level=*:notice", "--vdev=net_af_packet0,iface={iface},blocksz=4096,framesz=2048,framecnt=16384"]
dispatch_max_clients = 4
dispatch_subnet = "{a}.{b}.{c}.0"
dispatch_subnet_length = 8
bond_mode = 1
bond_miimon = 20
bond_ports = ["0x1"]
bond_macs = ["{mac}"]
rx_mbuf_pool_size = 4096
tx_mbuf_pool_size = 4096
"#,
        huge = huge.huge_dir.display(),
        iface = topo.host_if,
        a = o[0],
        b = o[1],
        c = o[2],
    ))
    .unwrap();
    let lstack: toml::Table = toml::from_str(&format!(
        r#"dpdk_args = ["--no-pci", "--no-telemetry", "--log-level=*:notice"]
use_ltran = true
num_cpus = "1"
host_addr = "{ip}"
mask_addr = "255.255.255.0"
devices = "{mac}"
tcp_conn_count = 200
"#,
        ip = topo.stack_ip4
    ))
    .unwrap();
    let config = ApplianceConfig {
        ltran: Some(SubConfig::Inline(ltran)),
        instances: vec![redis_instance(lstack)],
        ..ApplianceConfig::empty()
    };
    let resolved = config.validate().unwrap_or_else(|e| panic!("{e}"));
    let gazelle_run = dir.path().join("gazelle");
    let paths = Paths {
        lstack_lib: liblstack(),
        ltran_bin: ltran_bin(),
        runtime_dir: dir.path().join("appliance"),
        gazelle_run_dir: Some(gazelle_run.clone()),
    };
    let specs = specs_from_config(&config, &resolved, &paths, None);
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["ltran", "redis"]);

    let sup = Supervisor::new(SupervisorOptions {
        ready_uptime: Duration::from_millis(500),
        ready_timeout: Duration::from_secs(60),
        stop_timeout: Duration::from_secs(10),
        ..SupervisorOptions::default()
    });
    sup.apply(specs).unwrap();
    sup.wait_running(Duration::from_secs(90))
        .unwrap_or_else(|e| panic!("{e}"));
    let status = sup.status();
    let (ltran_status, redis_status) = (&status[0], &status[1]);
    // redis was started only once ltran answered on its socket.
    assert!(
        redis_status.since_unix_ms >= ltran_status.since_unix_ms,
        "{status:#?}"
    );
    let ltran_socket = gazelle_ctl_proto::paths::ltran_socket(&gazelle_run, "");
    assert!(ltran_socket.exists());

    wait_for_pong(&topo, &sup);
    assert_eq!(redis_cli(&topo, &["SET", "via", "ltran"]).unwrap(), "OK");
    assert_eq!(redis_cli(&topo, &["GET", "via"]).unwrap(), "ltran");

    // kill -9 the instance: ltran stays, redis comes back behind it.
    let pid = redis_status.pid.unwrap();
    let ltran_pid = ltran_status.pid.unwrap();
    assert!(Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let again = sup
        .wait_for("redis", Duration::from_secs(60), |s| {
            s.state == ProcessState::Running && s.restarts == 1
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(again.pid, Some(pid));
    wait_for_pong(&topo, &sup);
    assert_eq!(redis_cli(&topo, &["SET", "via", "again"]).unwrap(), "OK");
    assert_eq!(redis_cli(&topo, &["GET", "via"]).unwrap(), "again");
    let ltran_now = sup.process("ltran").unwrap();
    assert_eq!(ltran_now.pid, Some(ltran_pid), "ltran was not restarted");
    assert_eq!(ltran_now.restarts, 0);

    // Stop: redis first, then ltran; both gone, their sockets too.
    let redis_socket =
        gazelle_ctl_proto::paths::lstack_socket(&gazelle_run, "", topo.stack_ip4.into());
    sup.stop_all();
    assert!(pid_gone(again.pid.unwrap()), "redis still exists");
    assert!(pid_gone(ltran_pid), "ltran still exists");
    assert!(
        !ltran_socket.exists(),
        "{} left behind",
        ltran_socket.display()
    );
    assert!(
        !redis_socket.exists(),
        "{} left behind",
        redis_socket.display()
    );
    assert!(nothing_listens(&topo), "something still answers");
    hugepages::remove_dpdk_runtime_dir(&prefix).unwrap();
    topo.teardown().unwrap();
}
