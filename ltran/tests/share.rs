//! Forked workers keep the fast path: two `lstack-echo` processes spawned
//! by this test (siblings: the same parent) register the same address with
//! ltran and both listen on port 7; kernel clients in a peer namespace
//! connect several times, every byte echoed, and ltran spreads the
//! connections over both. A third process of the same user registering
//! that address from outside the family (a grandchild of this test, its
//! parent a shell) is refused with a message naming the rule.
//!
//! Needs root, hugepages, python3 and the workspace's build of
//! `lstack-echo` next to ltran (`cargo build --workspace`).

mod common;

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use common::{af_packet_vdev, built, topology, Ltran};
use netns_testbed::ChildGuard;

const SHARED_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 20);
const CONNECTIONS: usize = 8;

fn lstack_config(dir: &Path, name: &str, mac: &str) -> PathBuf {
    let text = format!(
        r#"dpdk_args = ["--no-pci", "--no-telemetry", "--log-level=*:notice"]
use_ltran = true
num_cpus = "0"
host_addr = "{SHARED_IP}"
mask_addr = "255.255.255.0"
devices = "{mac}"
tcp_conn_count = 200
"#
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// `lstack-echo` on port 7 with `conf`, through `wrapper` (a program and
/// its arguments before lstack-echo's path) if given.
/// Runs the python client `script` (its arguments: the shared address and
/// [`CONNECTIONS`]) in the peer namespace until it prints `ok `; on failure,
/// panics with its output and the servers' stderr.
fn run_clients(topo: &netns_testbed::Topology, script: &str, servers: &[ChildGuard]) -> ChildGuard {
    let mut client = topo
        .spawn(
            topo.cmd("python3")
                .args([
                    "-c",
                    script,
                    &SHARED_IP.to_string(),
                    &CONNECTIONS.to_string(),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .unwrap();
    if let Err(e) = client.wait_for_output("ok ", Duration::from_secs(60)) {
        let stderr: Vec<String> = servers.iter().map(ChildGuard::stderr_so_far).collect();
        panic!(
            "the clients did not finish: {e:#}\n{}{}\nservers: {}",
            client.stdout_so_far(),
            client.stderr_so_far(),
            stderr.join("\n")
        );
    }
    client
}

fn echo(ltran: &Ltran, conf: &Path, wrapper: &[&str]) -> Command {
    let mut cmd = match wrapper {
        [] => Command::new(built("lstack-echo")),
        [program, args @ ..] => {
            let mut c = Command::new(program);
            c.args(args).arg(built("lstack-echo"));
            c
        }
    };
    cmd.args(["--port", "7"])
        .env("LSTACK_CONF_PATH", conf)
        .env("GAZELLE_RUN_DIR", &ltran.run_dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Opens `CONNECTIONS` connections to port 7 one after the other, each
/// echoing 64 KiB checked byte for byte, prints `ok N` with all of them
/// open, keeps them open 5 s, then closes them.
const CLIENT: &str = r#"
import os, socket, sys, time
ip, n = sys.argv[1], int(sys.argv[2])
socks, ok = [], 0
for i in range(n):
    s = socket.create_connection((ip, 7), 10)
    s.settimeout(20)
    data = os.urandom(65536)
    s.sendall(data)
    got = bytearray()
    while len(got) < len(data):
        b = s.recv(65536)
        if not b:
            break
        got += b
    ok += bytes(got) == data
    socks.append(s)
print("ok" if ok == n else "FAILED", ok, flush=True)
time.sleep(5)
for s in socks:
    s.close()
sys.exit(0 if ok == n else 1)
"#;

#[test]
fn siblings_share_an_address_and_strangers_are_refused() {
    let topo = topology("ltsh", SHARED_IP);
    let mac = topo.stack_mac.to_string();
    let ltran = Ltran::start(
        "ltran-share",
        &[af_packet_vdev(0, &topo.host_if)],
        &format!("bond_ports = [\"0x1\"]\nbond_macs = [\"{mac}\"]\n"),
    );
    let dir = tempfile::tempdir().unwrap();

    // Two workers, both children of this test.
    let mut workers: Vec<ChildGuard> = ["a", "b"]
        .iter()
        .map(|n| {
            ChildGuard::spawn(&mut echo(&ltran, &lstack_config(dir.path(), n, &mac), &[])).unwrap()
        })
        .collect();
    for w in &mut workers {
        if let Err(e) = w.wait_for_output("echoing TCP", Duration::from_secs(60)) {
            panic!(
                "a worker did not start: {e:#}\n{}\nltran: {}",
                w.stderr_so_far(),
                ltran.child.stderr_so_far()
            );
        }
    }
    let shown = ltran.wait_stats("both workers listed", Duration::from_secs(10), |s| {
        s.instances.len() == 2
    });
    assert!(
        shown
            .instances
            .iter()
            .all(|i| i.ipv4 == SHARED_IP.to_string()),
        "{:#?}",
        shown.instances
    );
    let mut pids: Vec<u32> = shown.instances.iter().map(|i| i.pid).collect();
    pids.sort_unstable();
    let mut want: Vec<u32> = workers.iter().map(ChildGuard::id).collect();
    want.sort_unstable();
    assert_eq!(pids, want);
    // Each has told ltran it listens (the event follows the listen call
    // on the lease); the dispatcher takes it within a housekeeping tick.
    std::thread::sleep(Duration::from_millis(500));
    topo.wait_connectable(
        SocketAddr::from((SHARED_IP, 7)),
        &mut workers[0],
        Duration::from_secs(30),
    )
    .unwrap();

    let client = run_clients(&topo, CLIENT, &workers);
    // With every connection open (the probe's may linger too), each
    // worker holds some of them.
    let held = |s: &gazelle_ctl_proto::LtranStats| -> Vec<u64> {
        s.instances
            .iter()
            .map(|i| i.threads.iter().map(|t| t.connections).sum())
            .collect()
    };
    let during = ltran.wait_stats(
        "every connection in the table",
        Duration::from_secs(3),
        |s| held(s).iter().sum::<u64>() >= CONNECTIONS as u64,
    );
    assert!(
        held(&during)
            .iter()
            .all(|&h| h >= CONNECTIONS as u64 / 2 - 1),
        "connections not spread over both workers: {:?}",
        held(&during)
    );
    let out = client
        .wait_with_output_timeout(Duration::from_secs(30))
        .unwrap();
    assert!(
        out.status.success(),
        "echo failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("ok {CONNECTIONS}")));

    // A process of the same user but not of the family: its parent is a
    // shell that is neither a worker nor the workers' parent.
    // Accepted, it would serve on: its group is killed after a while.
    let stranger = ChildGuard::spawn(&mut echo(
        &ltran,
        &lstack_config(dir.path(), "stranger", &mac),
        &["sh", "-c", "\"$0\" \"$@\"; exit $?"],
    ))
    .unwrap()
    .wait_with_output_timeout(Duration::from_secs(30))
    .unwrap_or_else(|e| panic!("an unrelated process joined {SHARED_IP}: {e:#}"));
    let err = String::from_utf8_lossy(&stranger.stderr);
    assert!(
        !stranger.status.success(),
        "an unrelated process joined {SHARED_IP}: {err}"
    );
    assert!(
        err.contains(&format!("{SHARED_IP} is already registered by pid"))
            && err.contains("which is not this process's parent or sibling")
            && err.contains("one address belongs to one process family"),
        "unclear refusal: {err}"
    );
    assert_eq!(ltran.stats().instances.len(), 2);
    for w in &mut workers {
        assert!(w.try_wait().unwrap().is_none(), "a worker died");
    }
}

/// Opens `n` keep-alive HTTP connections to port 18090, one after the
/// other, each answered with the page (checked), prints `ok N` with all of
/// them open, keeps them open 5 s, then closes them.
const HTTP_CLIENT: &str = r#"
import socket, sys, time
ip, n = sys.argv[1], int(sys.argv[2])
socks, ok = [], 0
for i in range(n):
    s = socket.create_connection((ip, 18090), 10)
    s.settimeout(20)
    s.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while b"served by a forked nginx worker" not in got:
        b = s.recv(65536)
        if not b:
            break
        got += b
    ok += got.startswith(b"HTTP/1.1 200") and b"served by a forked nginx worker" in got
    socks.append(s)
print("ok" if ok == n else "FAILED", ok, flush=True)
time.sleep(5)
for s in socks:
    s.close()
sys.exit(0 if ok == n else 1)
"#;

/// nginx as Debian ships it (a master, two workers that drop to
/// `www-data`) under `LD_PRELOAD` behind ltran: the master never starts a
/// stack, each worker registers the same address as its own instance, and
/// kernel clients' connections are served by both.
#[test]
fn nginx_workers_behind_ltran_both_serve() {
    let topo = topology("ltng", SHARED_IP);
    let mac = topo.stack_mac.to_string();
    let ltran = Ltran::start(
        "ltran-nginx",
        &[af_packet_vdev(0, &topo.host_if)],
        &format!("bond_ports = [\"0x1\"]\nbond_macs = [\"{mac}\"]\n"),
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let www = d.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "served by a forked nginx worker\n").unwrap();
    let conf = d.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "user www-data;\nworker_processes 2;\npid {d}/nginx.pid;\nerror_log stderr notice;\n\
             events {{ worker_connections 768; }}\n\
             http {{ sendfile on; tcp_nopush on; access_log off;\n\
               client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f;\n\
               uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;\n\
               server {{ listen {SHARED_IP}:18090; root {r}; }} }}\n",
            d = d.display(),
            r = www.display(),
        ),
    )
    .unwrap();
    let mut master = ChildGuard::spawn(
        Command::new("nginx")
            .args(["-c", conf.to_str().unwrap(), "-g", "daemon off;"])
            .env("LD_PRELOAD", built("liblstack.so"))
            .env("LSTACK_CONF_PATH", lstack_config(d, "nginx", &mac))
            .env("GAZELLE_RUN_DIR", &ltran.run_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .unwrap();
    let shown = ltran.wait_stats("both workers registered", Duration::from_secs(60), |s| {
        s.instances.len() == 2
    });
    assert!(
        shown
            .instances
            .iter()
            .all(|i| i.ipv4 == SHARED_IP.to_string()),
        "{:#?}",
        shown.instances
    );
    assert!(
        shown.instances.iter().all(|i| i.pid != master.id()),
        "the master registered: {:#?}",
        shown.instances
    );
    std::thread::sleep(Duration::from_millis(500));
    topo.wait_connectable(
        SocketAddr::from((SHARED_IP, 18090)),
        &mut master,
        Duration::from_secs(30),
    )
    .unwrap();
    let client = run_clients(&topo, HTTP_CLIENT, std::slice::from_ref(&master));
    let held = |s: &gazelle_ctl_proto::LtranStats| -> Vec<u64> {
        s.instances
            .iter()
            .map(|i| i.threads.iter().map(|t| t.connections).sum())
            .collect()
    };
    let during = ltran.wait_stats(
        "every connection in the table",
        Duration::from_secs(3),
        |s| held(s).iter().sum::<u64>() >= CONNECTIONS as u64,
    );
    assert!(
        held(&during).iter().all(|&h| h >= 2),
        "connections not spread over both workers: {:?}",
        held(&during)
    );
    let out = client
        .wait_with_output_timeout(Duration::from_secs(30))
        .unwrap();
    assert!(
        out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains(&format!("ok {CONNECTIONS}")),
        "HTTP through both workers failed: {}{}\nnginx: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        master.stderr_so_far()
    );
    assert!(
        master.try_wait().unwrap().is_none(),
        "nginx died: {}",
        master.stderr_so_far()
    );
}
