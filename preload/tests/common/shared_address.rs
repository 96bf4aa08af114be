//! What the tests of one address shared by lstack and the kernel
//! (`kernel_path.rs`, `xdp_bifurcation.rs`) have in common: a stack
//! namespace and a peer namespace joined by a veth, the kernel's servers
//! (HTTP, SSH) on the stack's address, the peer's clients all at once, and
//! the stack's counters over its control socket.

#![allow(dead_code)]

use std::{
    net::Ipv4Addr,
    path::Path,
    process::{Command, Output, Stdio},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use netns_testbed::ChildGuard;

/// A stack namespace and a peer namespace joined by a veth, removed (with
/// every process in them) when dropped.
pub struct Pair {
    pub app: String,
    pub peer: String,
    pub app_if: String,
    pub peer_if: String,
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
    /// Namespaces and interfaces named after `tag` and this process. The
    /// stack's end gets `stack_mac` and, when given, the kernel address
    /// `kernel_cidr` (AF_XDP bifurcation: the kernel keeps the address on
    /// the NIC); the peer's end gets `peer_cidr` and computes its
    /// checksums (the stack checks what it receives).
    pub fn new(tag: &str, stack_mac: &str, kernel_cidr: Option<&str>, peer_cidr: &str) -> Pair {
        let id = std::process::id() % 100_000;
        let pair = Pair {
            app: format!("{tag}a-{id}"),
            peer: format!("{tag}p-{id}"),
            app_if: format!("{tag}a{id}"),
            peer_if: format!("{tag}p{id}"),
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
            stack_mac,
            "up",
        ]);
        if let Some(cidr) = kernel_cidr {
            ip(&["-n", &pair.app, "addr", "add", cidr, "dev", &pair.app_if]);
        }
        ip(&[
            "-n",
            &pair.peer,
            "addr",
            "add",
            peer_cidr,
            "dev",
            &pair.peer_if,
        ]);
        ip(&["-n", &pair.peer, "link", "set", &pair.peer_if, "up"]);
        ok(pair
            .peer_cmd("ethtool")
            .args(["-K", &pair.peer_if, "tx", "off"]));
        pair
    }

    fn in_ns(ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    /// `program` in the stack's namespace.
    pub fn app_cmd(&self, program: &str) -> Command {
        Self::in_ns(&self.app, program)
    }

    /// `program` in the peer's namespace.
    pub fn peer_cmd(&self, program: &str) -> Command {
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
pub fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawning");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The kernel's servers on the stack's address, in the stack's namespace:
/// HTTP on 8080 (`python3 -m http.server`, serving "served by the
/// kernel") and SSH on 2222 (dropbear, with a host key made in `dir`).
/// They stop when dropped.
pub struct KernelServers {
    _http: ChildGuard,
    _ssh: ChildGuard,
}

pub fn start_kernel_servers(pair: &Pair, dir: &Path, addr: Ipv4Addr) -> KernelServers {
    std::fs::write(dir.join("index.html"), "served by the kernel\n").unwrap();
    let mut http = pair.app_cmd("python3");
    http.args(["-m", "http.server", "8080", "--bind", &addr.to_string()])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let http = ChildGuard::spawn(&mut http).unwrap();
    let key = dir.join("host_key");
    ok(Command::new("dropbearkey")
        .args(["-t", "ed25519", "-f"])
        .arg(&key));
    let mut ssh = pair.app_cmd("dropbear");
    ssh.args(["-F", "-E", "-s", "-r"])
        .arg(&key)
        .args(["-p", &format!("{addr}:2222")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let ssh = ChildGuard::spawn(&mut ssh).unwrap();
    KernelServers {
        _http: http,
        _ssh: ssh,
    }
}

/// `redis-benchmark` (SET, GET) from the peer against `addr`:6379, in the
/// background; [`check_bench`] reads its result.
pub fn spawn_redis_benchmark(pair: &Pair, addr: Ipv4Addr) -> JoinHandle<Output> {
    let mut c = pair.peer_cmd("redis-benchmark");
    c.args([
        "-h",
        &addr.to_string(),
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
}

/// The benchmark ran, has a SET and a GET result, and saw no error.
pub fn check_bench(bench: JoinHandle<Output>) {
    let bench = bench.join().unwrap();
    let out = String::from_utf8_lossy(&bench.stdout);
    assert!(bench.status.success(), "redis-benchmark: {out} {bench:?}");
    for t in ["SET", "GET"] {
        assert!(
            // -q rewrites a progress line with \r before each result.
            out.split(['\r', '\n'])
                .any(|l| l.starts_with(&format!("{t}: ")) && l.contains("requests per second")),
            "no {t} result: {out}"
        );
    }
    assert!(
        !out.to_lowercase().contains("error"),
        "redis-benchmark saw errors: {out}"
    );
}

/// From the peer, the kernel on `addr` answers ping, serves the HTTP page
/// and completes an SSH key exchange ([`start_kernel_servers`]).
pub fn check_kernel_services(pair: &Pair, addr: Ipv4Addr) {
    let ping =
        ok(pair
            .peer_cmd("ping")
            .args(["-c", "5", "-i", "0.2", "-W", "2", &addr.to_string()]));
    assert!(ping.contains(" 0% packet loss"), "{ping}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let page = loop {
        let out = pair
            .peer_cmd("curl")
            .args(["-sf", "--max-time", "3", &format!("http://{addr}:8080/")])
            .output()
            .unwrap();
        if out.status.success() || Instant::now() > deadline {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(page, "served by the kernel\n");
    let keys = ok(pair.peer_cmd("ssh-keyscan").args([
        "-T",
        "5",
        "-t",
        "ed25519",
        "-p",
        "2222",
        &addr.to_string(),
    ]));
    assert!(keys.contains("ssh-ed25519 "), "no SSH host key: {keys:?}");
}

/// The kernel of the stack's namespace leaves lstack's ephemeral ports
/// alone.
pub fn check_ports_reserved(pair: &Pair) {
    let reserved = ok(pair
        .app_cmd("cat")
        .arg("/proc/sys/net/ipv4/ip_local_reserved_ports"));
    assert!(reserved.contains("49152-60999"), "reserved: {reserved:?}");
}

/// The counters of the stack on `addr`, over its control socket, if it
/// answers.
pub fn try_stats(addr: Ipv4Addr) -> Option<gazelle_ctl_proto::LstackStats> {
    let sock = gazelle_ctl_proto::paths::lstack_socket(
        &gazelle_ctl_proto::paths::run_dir(),
        "",
        addr.into(),
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
