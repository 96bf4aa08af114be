//! The supervisor running a real application on lstack: an unmodified
//! `redis-server` under `LD_PRELOAD=liblstack.so` (its own DPDK primary on
//! `net_af_packet` over a veth, `use_ltran = 0`: ltran is not written yet),
//! built from an appliance config exactly as the daemon does. A kernel
//! `redis-cli` in the peer namespace talks to it; after a `kill -9` the
//! supervisor restarts it and redis answers again; a stop ends it cleanly
//! (process gone, its lstack control socket removed).
//!
//! Needs root, hugepages, redis-server/redis-tools and
//! `target/release/liblstack.so` (`cargo build --release -p lstack-preload`).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
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
        instances: vec![Instance {
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
            lstack: SubConfig::Inline(table),
        }],
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
    let specs = specs_from_config(&config, &resolved, &paths);
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
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(new_pid).unwrap()),
            None
        )
        .is_err(),
        "redis (pid {new_pid}) still exists after the stop"
    );
    assert!(
        !socket.exists(),
        "{} left behind after a clean stop",
        socket.display()
    );
    assert!(
        redis_cli(&topo, &["PING"]).is_err(),
        "something still answers"
    );
    hugepages::remove_dpdk_runtime_dir(&prefix).unwrap();
    topo.teardown().unwrap();
}
