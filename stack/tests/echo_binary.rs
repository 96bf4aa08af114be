//! The `lstack-echo` binary as an operator runs it: configured by a gazelle
//! `lstack.conf` through `LSTACK_CONF_PATH`, serving kernel clients of the
//! peer namespace, stopping cleanly on SIGTERM; and refusing a bad
//! configuration with a message that names the field. Needs root.

mod common;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use common::{connect_from_peer, kernel_echo_roundtrip, pattern};
use netns_testbed::{require_root, AfPacketEal, Topology, TopologyOptions};

const BIN: &str = env!("CARGO_BIN_EXE_lstack-echo");

fn quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|a| format!("\"{a}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

#[test]
fn serves_from_a_gazelle_conf_and_stops_on_sigterm() {
    require_root();
    let topo = Topology::new(TopologyOptions {
        name_hint: "leb".into(),
        ..Default::default()
    })
    .unwrap();
    let cfg = common::config_for(&topo, "leb", &AfPacketEal::default());
    let dir = std::env::temp_dir().join(format!("lstack-echo-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("lstack.conf");
    std::fs::write(
        &conf,
        format!(
            "# gazelle syntax\ndpdk_args={}\nuse_ltran=0\nkni_switch=0\nnum_cpus=\"1\"\nhost_addr=\"{}\"\nmask_addr=\"255.255.255.0\"\ngateway_addr=\"{}\"\nhost_addr6=\"{}\"\ndevices=\"{}\"\ntcp_conn_count=1500\n",
            quote_list(&cfg.dpdk_args),
            cfg.host_addr,
            topo.peer_ip4,
            topo.stack_ip6,
            cfg.devices
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["--port", "7"])
        .env("LSTACK_CONF_PATH", &conf)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(
        line.contains("echoing TCP and UDP on port 7"),
        "first line: {line:?}"
    );

    let to = SocketAddr::new(topo.stack_ip4.into(), 7);
    for (i, s) in connect_from_peer(&topo, to, 3).into_iter().enumerate() {
        let data = pattern(i as u64, 100_000);
        assert!(kernel_echo_roundtrip(s, &data).unwrap() == data);
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "lstack-echo exited with {status}");
    let mut rest = String::new();
    for l in out.lines() {
        rest.push_str(&l.unwrap());
        rest.push('\n');
    }
    assert!(
        rest.contains("thread 0: rx"),
        "statistics at exit: {rest:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    std::thread::sleep(Duration::from_millis(10));
}

#[test]
fn refuses_a_bad_config_naming_the_field() {
    let dir = std::env::temp_dir().join(format!("lstack-echo-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("lstack.toml");
    std::fs::write(
        &conf,
        "host_addr = \"10.0.0.2\"\nmask_addr = \"255.255.255.0\"\ndevices = \"02:00:00:00:00:01\"\ntcp_conn_count = 30000\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--config", conf.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("tcp_conn_count") && stderr.contains("30000") && stderr.contains("20000"),
        "stderr: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A config path that is not a regular file is refused at once, whether it
/// comes from `--config` or `LSTACK_CONF_PATH`: `/dev/zero` would be read
/// until the process is killed for memory, and a FIFO nobody writes to
/// would hang the start.
#[test]
fn refuses_a_config_that_is_not_a_regular_file() {
    let dir = std::env::temp_dir().join(format!("lstack-echo-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("lstack.toml");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for (path, what, by_env) in [
        (Path::new("/dev/zero"), "it is a character device", false),
        (Path::new("/dev/zero"), "it is a character device", true),
        (fifo.as_path(), "it is a FIFO", false),
        (dir.as_path(), "it is a directory", true),
    ] {
        let mut cmd = Command::new(BIN);
        if by_env {
            cmd.env("LSTACK_CONF_PATH", path);
        } else {
            cmd.arg("--config").arg(path);
        }
        let mut child =
            netns_testbed::ChildGuard::spawn(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()))
                .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "lstack-echo still reading {} after 30 s",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let (stdout, stderr) = child.final_output();
        let out = format!("{stdout}{stderr}");
        assert_eq!(status.code(), Some(1), "{}: {out}", path.display());
        assert!(
            out.contains(&format!("cannot read {}: {what}", path.display())),
            "{}: {out}",
            path.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A start that cannot succeed says why, and leaves nothing of DPDK behind:
/// `num_cpus` naming a CPU the process may not use is refused before the
/// EAL starts; a start that fails once the EAL is up (no port with the
/// configured MAC) puts back the runtime directory and hugepage files of
/// its `--file-prefix`.
#[test]
fn a_failed_start_says_why_and_leaves_nothing_behind() {
    require_root();
    let topo = Topology::new(TopologyOptions {
        name_hint: "lfs".into(),
        ..Default::default()
    })
    .unwrap();
    // Without --huge-unlink, so the hugepage files stay until removed.
    let mut cfg = common::config_for(&topo, "lfs", &AfPacketEal::default());
    cfg.dpdk_args.retain(|a| a != "--huge-unlink");
    let prefix = dpdk::cleanup::file_prefix(&cfg.dpdk_args);
    let huge_dir = cfg
        .dpdk_args
        .iter()
        .find_map(|a| a.strip_prefix("--huge-dir="))
        .expect("the test config names its hugetlbfs")
        .to_owned();
    let leftovers = || -> Vec<String> {
        let mut left = Vec::new();
        let run_dir = Path::new("/var/run/dpdk").join(&prefix);
        if run_dir.exists() {
            left.push(run_dir.display().to_string());
        }
        for e in std::fs::read_dir(&huge_dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{prefix}map_")) {
                left.push(name);
            }
        }
        left
    };
    let dir = std::env::temp_dir().join(format!("lstack-echo-fail-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |cfg: &gazelle_config::LstackConfig| {
        let conf = dir.join("lstack.toml");
        std::fs::write(&conf, cfg.to_toml_string()).unwrap();
        let out = Command::new(BIN)
            .args(["--config", conf.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let mut cpus = cfg.clone();
    cpus.num_cpus = "999".parse().unwrap();
    let (code, stderr) = run(&cpus);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("num_cpus = \"999\": CPU 999 is not one this process may run on"),
        "{stderr}"
    );
    assert!(!stderr.contains("EAL"), "the EAL started: {stderr}");
    assert_eq!(leftovers(), Vec::<String>::new());

    let mut no_port = cfg.clone();
    no_port.devices = "02:00:00:00:99:99".parse().unwrap();
    let (code, stderr) = run(&no_port);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("no DPDK port has this MAC address"),
        "{stderr}"
    );
    assert_eq!(leftovers(), Vec::<String>::new(), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
