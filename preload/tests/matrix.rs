//! The compatibility matrix: unmodified Debian servers with a minimal
//! configuration, each started under `LD_PRELOAD=liblstack.so` on the stack's
//! address and loaded by its own client tool from the peer namespace, with
//! zero errors and a data check (a GET returns the value SET, a body's
//! SHA-256 matches the file, an echo returns exactly what was sent). Every
//! row also proves the server ran on lstack: its stack's control socket
//! counts the connections it took (a silent fall-back to the kernel fails the
//! row; the kernel has no address on the stack's subnet anyway).
//!
//! Rows expected not to work yet ([`Expect::NotYet`]) must fail, quickly and
//! with a message (every wait is bounded); the test fails when they start to
//! work, so that flipping them to [`Expect::Works`] is one line. The README's
//! matrix is rendered from the rows' results: the test fails when it is
//! stale and rewrites it with `UPDATE_README=1`. Each row's result is also
//! written to `target/compat-matrix/<row>.json`. `MATRIX_ROWS=a,b` runs only
//! those rows (and then leaves the README alone).
//!
//! One topology: the stack at `stack_ip4` on the main veth, a second stack
//! (the backend of HAProxy, the lstack server of the client rows) at
//! [`SIDE_IP`] on an extra veth, both bridged in the peer namespace. Needs
//! root, hugepages and the packages of scripts/install-deps.sh.

#[path = "common/mod.rs"]
mod common;

use std::{
    fmt::Write as _,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use common::{liblstack, sha256, thread_names, TempDir};
use gazelle_config::{LstackConfig, StackThreadMode};
use gazelle_ctl_proto::{client, Request, Response};
use netns_testbed::{hugepages, require_root, AfPacketEal, ChildGuard, Topology, TopologyOptions};

const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");

/// The second stack's address, on the main stack's subnet.
const SIDE_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 3);

/// How long a server may take to accept connections, and a client to finish.
const START: Duration = Duration::from_secs(20);
const CLIENT: Duration = Duration::from_secs(60);

/// What a row is expected to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Loaded with zero errors and the data checked.
    Works,
    /// Fails (quickly, with a message), for this reason. No row is "not
    /// yet" today; the variant stays for the next application that is.
    #[allow(dead_code)]
    NotYet(&'static str),
}

/// One application of the matrix.
#[derive(Debug)]
struct Row {
    /// File name of its result and `MATRIX_ROWS` name.
    id: &'static str,
    /// The application, as the README names it.
    app: &'static str,
    /// The command line printing its version.
    version: &'static [&'static str],
    /// What loads it (and checks the data).
    client: &'static str,
    mode: StackThreadMode,
    expect: Expect,
    /// The README's note when it works.
    notes: &'static str,
    run: fn(&Bed, StackThreadMode) -> Result<(), String>,
}

const RTW: StackThreadMode = StackThreadMode::RunToWakeup;
const RTC: StackThreadMode = StackThreadMode::RunToCompletion;

const ROWS: &[Row] = &[
    Row {
        id: "redis",
        app: "redis-server",
        version: &["redis-server", "--version"],
        client: "redis-benchmark, redis-cli",
        mode: RTW,
        expect: Expect::Works,
        notes: "SET/GET/INCR/LPUSH benchmark, then GET returns the value SET",
        run: redis,
    },
    Row {
        id: "redis-rtc",
        app: "redis-server",
        version: &["redis-server", "--version"],
        client: "redis-benchmark, redis-cli",
        mode: RTC,
        expect: Expect::Works,
        notes: "as above, the stack run by redis's own thread",
        run: redis,
    },
    Row {
        id: "nginx",
        app: "nginx (`master_process off`)",
        version: &["nginx", "-v"],
        client: "curl, wrk",
        mode: RTW,
        expect: Expect::Works,
        notes: "a 1 MiB file's SHA-256 matches; wrk without errors or non-2xx",
        run: nginx_single,
    },
    Row {
        id: "nginx-default",
        app: "nginx (Debian's default: master, `worker_processes auto`)",
        version: &["nginx", "-v"],
        client: "curl",
        mode: RTW,
        expect: Expect::Works,
        notes: "the master listens and never starts a stack; the first worker owns the NIC, the other says so and idles (behind ltran both serve)",
        run: nginx_default,
    },
    Row {
        id: "memcached",
        app: "memcached (`-t 4`)",
        version: &["memcached", "-V"],
        client: "memcslap, python set/get",
        mode: RTW,
        expect: Expect::Works,
        notes: "4 worker threads; get returns each value set",
        run: memcached,
    },
    Row {
        id: "postgresql",
        app: "PostgreSQL (postmaster, as user postgres)",
        version: &["/usr/lib/postgresql/15/bin/postgres", "--version"],
        client: "pgbench, psql",
        mode: RTW,
        expect: Expect::Works,
        notes: "the postmaster accepts on lstack and forks a backend per connection: its stack hands each connection to the backend over a kernel socket pair (the backend's own I/O is the kernel's)",
        run: postgresql,
    },
    Row {
        id: "haproxy",
        app: "HAProxy in front of an lstack nginx",
        version: &["haproxy", "-v"],
        client: "curl, wrk",
        mode: RTW,
        expect: Expect::Works,
        notes: "both on lstack (two stacks); the body's SHA-256 matches",
        run: haproxy,
    },
    Row {
        id: "node",
        app: "Node.js `http.createServer`",
        version: &["node", "--version"],
        client: "curl, wrk",
        mode: RTW,
        expect: Expect::Works,
        notes: "the body's SHA-256 matches; wrk without errors",
        run: node,
    },
    Row {
        id: "python-asyncio",
        app: "Python `asyncio.start_server` echo",
        version: &["/usr/bin/python3", "--version"],
        client: "python socket clients",
        mode: RTW,
        expect: Expect::Works,
        notes: "8 connections echo exactly the 256 KiB each sent",
        run: python_asyncio,
    },
    Row {
        id: "iperf3",
        app: "iperf3 server",
        version: &["iperf3", "--version"],
        client: "iperf3 (TCP both ways, UDP)",
        mode: RTW,
        expect: Expect::Works,
        notes: "no error in the JSON reports; bytes received",
        run: iperf3,
    },
    Row {
        id: "curl",
        app: "curl (client)",
        version: &["curl", "--version"],
        client: "itself, against a kernel and an lstack server",
        mode: RTW,
        expect: Expect::Works,
        notes: "downloads from python http.server (kernel) and nginx (lstack) match",
        run: curl_client,
    },
    Row {
        id: "wget",
        app: "wget (client)",
        version: &["wget", "--version"],
        client: "itself, against a kernel and an lstack server",
        mode: RTW,
        expect: Expect::Works,
        notes: "downloads from python http.server (kernel) and nginx (lstack) match",
        run: wget_client,
    },
];

/// Applications that cannot work through `LD_PRELOAD` at all, and why.
const CANNOT: &[(&str, &str)] = &[
    (
        "statically linked binaries (Go with `CGO_ENABLED=0`, musl static builds)",
        "no dynamic loader runs, so `LD_PRELOAD` is never read; Go also makes its own system calls without libc",
    ),
    (
        "io_uring-based network I/O (e.g. servers built on liburing for sockets)",
        "the socket operations are submitted to the kernel ring, never through libc's socket calls",
    ),
    (
        "setuid/setcap binaries run by an unprivileged user",
        "the loader ignores `LD_PRELOAD` paths outside the trusted directories in secure-execution mode",
    ),
    (
        "applications issuing raw `syscall(2)` for sockets",
        "calls that bypass libc's symbols are not interposed",
    ),
];

// ---------------------------------------------------------------------------
// The test bed.

/// The topology, with a second link bridged to the first in the peer.
#[derive(Debug)]
struct Bed {
    topo: Topology,
}

impl Bed {
    fn new() -> Bed {
        require_root();
        let topo = Topology::new(TopologyOptions {
            name_hint: "mtx".into(),
            extra_links: 1,
            ..Default::default()
        })
        .expect("topology");
        // The peer's address moves to a bridge of both peer ends: the side
        // stack is on the main stack's subnet (lstack takes connections to
        // its own subnets only).
        let (ns, p0, p1) = (&topo.ns, &topo.peer_if, &topo.extra_links[0].peer_if);
        let cidr = format!("{}/{}", topo.peer_ip4, topo.prefix4);
        for args in [
            format!("-n {ns} link add mtxbr type bridge forward_delay 0 stp_state 0"),
            format!("-n {ns} addr del {cidr} dev {p0}"),
            format!("-n {ns} link set {p0} master mtxbr"),
            format!("-n {ns} link set {p1} master mtxbr"),
            format!("-n {ns} addr add {cidr} dev mtxbr"),
            format!("-n {ns} link set mtxbr up"),
        ] {
            common::run_ok(Command::new("ip").args(args.split(' ')));
        }
        Bed { topo }
    }
}

/// Which stack a process gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// `stack_ip4` on the main link.
    Main,
    /// [`SIDE_IP`] on the extra link.
    Side,
}

/// An lstack configuration, its run directory (control sockets) and scratch
/// space for the application.
#[derive(Debug)]
struct Lstack {
    ip: Ipv4Addr,
    conf: PathBuf,
    run_dir: PathBuf,
    dir: TempDir,
}

impl Lstack {
    fn new(bed: &Bed, name: &str, mode: StackThreadMode, side: Side) -> Lstack {
        let topo = &bed.topo;
        let dir = TempDir::new(&format!("lstack-matrix-{name}"));
        // Readable by the unprivileged servers (postgres) too.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let (mut cfg, prefix): (LstackConfig, String) = common::config_for(topo, name);
        if side == Side::Side {
            let huge = hugepages::ensure(256).unwrap();
            let mut args = AfPacketEal::default().args_for_ifaces(
                &[topo.extra_links[0].host_if.as_str()],
                &huge,
                &prefix,
            );
            args.remove(0);
            cfg.dpdk_args = args;
            cfg.host_addr = SIDE_IP;
            cfg.host_addr6 = None;
            // DPDK's af_packet port has the interface's MAC.
            let mac = std::fs::read_to_string(format!(
                "/sys/class/net/{}/address",
                topo.extra_links[0].host_if
            ))
            .unwrap();
            cfg.devices = mac.trim().parse().unwrap();
        }
        cfg.stack_thread_mode = mode;
        let conf = dir.path().join("lstack.toml");
        std::fs::write(&conf, cfg.to_toml_string()).unwrap();
        let run_dir = dir.path().join("run");
        std::fs::create_dir_all(&run_dir).unwrap();
        std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let ip = if side == Side::Side {
            SIDE_IP
        } else {
            topo.stack_ip4
        };
        Lstack {
            ip,
            conf,
            run_dir,
            dir,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The environment putting a process on this stack.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LD_PRELOAD", liblstack().display().to_string()),
            ("LSTACK_CONF_PATH", self.conf.display().to_string()),
            ("GAZELLE_RUN_DIR", self.run_dir.display().to_string()),
            ("LSTACK_LOG", "info".into()),
        ]
    }

    /// `program` under LD_PRELOAD on this stack, output piped.
    fn cmd(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.envs(self.env())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip.into(), port)
    }

    /// (PassiveOpens, ActiveOpens) of the stack of the running process, from
    /// its control socket: the proof that it runs on lstack.
    fn tcp_opens(&self) -> Result<(u64, u64), String> {
        let socket =
            gazelle_ctl_proto::paths::lstack_socket(&self.run_dir, "", IpAddr::V4(self.ip));
        match client::request(
            &socket,
            "lstack",
            Request::LstackSnmp,
            Duration::from_secs(5),
        ) {
            Ok(Response::LstackSnmp(s)) => {
                let t = s.with_total().total.tcp;
                Ok((t.passive_opens, t.active_opens))
            }
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(format!("no lstack behind {}: {e}", socket.display())),
        }
    }

    /// Fails unless the stack took at least `min` connections.
    fn took(&self, min: u64) -> Result<(), String> {
        let (passive, _) = self.tcp_opens()?;
        check(
            passive >= min,
            format!("the stack took {passive} connections, expected at least {min}"),
        )
    }
}

fn check(ok: bool, why: impl Into<String>) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(why.into())
    }
}

fn spawn(cmd: &mut Command) -> Result<ChildGuard, String> {
    ChildGuard::spawn(cmd).map_err(|e| format!("{e:#}"))
}

/// Waits (bounded) until a kernel client in the peer connects to `to`.
fn serving(bed: &Bed, to: SocketAddr, server: &mut ChildGuard) -> Result<(), String> {
    bed.topo
        .wait_connectable(to, server, START)
        .map_err(|e| format!("{e:#}"))
}

/// Runs `cmd` to completion within [`CLIENT`]; its stdout, or why not.
fn run(cmd: &mut Command) -> Result<String, String> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = spawn(cmd)?
        .wait_with_output_timeout(CLIENT)
        .map_err(|e| format!("{e:#}"))?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{cmd:?} failed ({}):\n{stdout}\n{stderr}",
            out.status
        ))
    }
}

/// Fails when the server has exited.
fn alive(server: &mut ChildGuard) -> Result<(), String> {
    match server.try_wait() {
        Ok(None) => Ok(()),
        Ok(Some(status)) => Err(format!(
            "`{}` exited ({status}): {}",
            server.command(),
            server.stderr_so_far()
        )),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// A file of `len` deterministic, incompressible-looking bytes.
fn pattern_file(path: &Path, len: usize) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(path, bytes).unwrap();
}

/// curl from the peer: downloads `url` and compares it with `file`.
fn peer_download(bed: &Bed, url: &str, file: &Path, into: &Path) -> Result<(), String> {
    run(bed.topo.cmd("curl").args([
        "-sS",
        "--fail",
        "--max-time",
        "20",
        "-o",
        into.to_str().unwrap(),
        url,
    ]))?;
    check(
        sha256(into) == sha256(file),
        format!("{url}: the body differs from {}", file.display()),
    )
}

/// wrk from the peer, 3 s: no socket errors, no non-2xx answers.
fn peer_wrk(bed: &Bed, url: &str) -> Result<(), String> {
    let out = run(bed
        .topo
        .cmd("wrk")
        .args(["-t", "1", "-c", "20", "-d", "3s", url]))?;
    check(
        out.contains("Requests/sec") && !out.contains("Socket errors") && !out.contains("Non-2xx"),
        format!("wrk: {out}"),
    )
}

// ---------------------------------------------------------------------------
// The rows.

fn redis(bed: &Bed, mode: StackThreadMode) -> Result<(), String> {
    let l = Lstack::new(bed, "redis", mode, Side::Main);
    let port = "16379";
    let mut server = spawn(l.cmd("redis-server").args([
        "--port",
        port,
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
    ]))?;
    serving(bed, l.addr(16379), &mut server)?;
    // The mode is real: a stack thread beside redis only in run-to-wakeup.
    let stack_threads = thread_names(server.id())
        .iter()
        .filter(|n| n.starts_with("lstack-stack"))
        .count();
    check(
        stack_threads == usize::from(mode == RTW),
        format!("{stack_threads} lstack-stack threads in {mode}"),
    )?;
    let ip = l.ip.to_string();
    let out = run(bed.topo.cmd("redis-benchmark").args([
        "-h",
        &ip,
        "-p",
        port,
        "-t",
        "set,get,incr,lpush",
        "-n",
        "20000",
        "-c",
        "20",
        "-q",
    ]))?;
    for t in ["SET:", "GET:", "INCR:", "LPUSH:"] {
        check(out.contains(t), format!("no {t} result: {out}"))?;
    }
    check(!out.contains("rror"), format!("redis-benchmark: {out}"))?;
    let cli = |args: &[&str]| {
        run(bed
            .topo
            .cmd("redis-cli")
            .args(["-h", &ip, "-p", port])
            .args(args))
        .map(|s| s.trim().to_owned())
    };
    let value = format!("matrix-{}", std::process::id());
    check(cli(&["set", "matrix:key", &value])? == "OK", "SET")?;
    let got = cli(&["get", "matrix:key"])?;
    check(got == value, format!("GET returned {got:?}, SET {value:?}"))?;
    l.took(20)?;
    alive(&mut server)
}

fn nginx_single(bed: &Bed, mode: StackThreadMode) -> Result<(), String> {
    let l = Lstack::new(bed, "nginx", mode, Side::Main);
    let (mut server, file) = start_nginx(&l, 18080)?;
    serving(bed, l.addr(18080), &mut server)?;
    let base = format!("http://{}:18080", l.ip);
    peer_download(
        bed,
        &format!("{base}/1m.bin"),
        &file,
        &l.path().join("got.bin"),
    )?;
    peer_wrk(bed, &format!("{base}/index.html"))?;
    l.took(21)?;
    alive(&mut server)
}

/// nginx with `master_process off` serving `www/1m.bin` and `www/index.html`
/// from `l`'s directory; returns it and the file.
fn start_nginx(l: &Lstack, port: u16) -> Result<(ChildGuard, PathBuf), String> {
    let www = l.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from nginx on lstack\n").unwrap();
    let file = www.join("1m.bin");
    pattern_file(&file, 1 << 20);
    let conf = l.path().join("nginx.conf");
    std::fs::write(&conf, netns_testbed::apps::nginx_conf(l.path(), &www, port)).unwrap();
    let server = spawn(l.cmd("nginx").args([
        "-c",
        conf.to_str().unwrap(),
        "-p",
        l.path().to_str().unwrap(),
    ]))?;
    Ok((server, file))
}

fn nginx_default(bed: &Bed, mode: StackThreadMode) -> Result<(), String> {
    let l = Lstack::new(bed, "nginx-default", mode, Side::Main);
    let www = l.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let file = www.join("index.html");
    std::fs::write(&file, "hello from nginx workers\n").unwrap();
    // The shape of Debian's /etc/nginx/nginx.conf: a master and a worker
    // per CPU (only paths moved to the scratch directory, in the foreground).
    let d = l.path().display();
    let conf = l.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nuser www-data;\nworker_processes auto;\npid {d}/nginx.pid;\nerror_log stderr;\n\
             events {{ worker_connections 768; }}\n\
             http {{ sendfile on; tcp_nopush on; access_log off;\n\
               client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f;\n\
               uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;\n\
               server {{ listen 18081 default_server; root {}; index index.html; }} }}\n",
            www.display()
        ),
    )
    .unwrap();
    let mut server = spawn(l.cmd("nginx").args([
        "-c",
        conf.to_str().unwrap(),
        "-p",
        l.path().to_str().unwrap(),
    ]))?;
    serving(bed, l.addr(18081), &mut server)?;
    let url = format!("http://{}:18081/index.html", l.ip);
    let got = l.path().join("got.html");
    let r = run(bed.topo.cmd("curl").args([
        "-sS",
        "--fail",
        "--max-time",
        "5",
        "-o",
        got.to_str().unwrap(),
        &url,
    ]));
    r.map_err(|e| format!("{e}\nnginx: {}", server.stderr_so_far()))?;
    check(sha256(&got) == sha256(&file), "the body differs")?;
    alive(&mut server)
}

fn memcached(bed: &Bed, mode: StackThreadMode) -> Result<(), String> {
    let l = Lstack::new(bed, "memcached", mode, Side::Main);
    let ip = l.ip.to_string();
    let mut server = spawn(l.cmd("memcached").args([
        "-t", "4", "-p", "11311", "-U", "0", "-l", &ip, "-m", "64", "-u", "root",
    ]))?;
    serving(bed, l.addr(11311), &mut server)?;
    let servers = format!("{ip}:11311");
    for test in ["set", "get"] {
        let out = run(bed.topo.cmd("memcslap").args([
            "--servers",
            &servers,
            "--test",
            test,
            "--concurrency",
            "8",
            "--execute-number",
            "2000",
        ]))?;
        check(
            out.contains("Time total")
                && !out.to_lowercase().contains("error")
                && !out.to_lowercase().contains("fail"),
            format!("memcslap --test {test}: {out}"),
        )?;
    }
    // The data: 200 distinct values set, each read back.
    let script = "import socket, sys\n\
                  s = socket.create_connection((sys.argv[1], 11311), timeout=10)\n\
                  f = s.makefile('rb')\n\
                  for i in range(200):\n\
                  \x20   v = ('value-%d-' % i).encode() * (i + 1)\n\
                  \x20   s.sendall(b'set mtx%d 0 0 %d\\r\\n%s\\r\\n' % (i, len(v), v))\n\
                  \x20   assert f.readline() == b'STORED\\r\\n'\n\
                  for i in range(200):\n\
                  \x20   v = ('value-%d-' % i).encode() * (i + 1)\n\
                  \x20   s.sendall(b'get mtx%d\\r\\n' % i)\n\
                  \x20   assert f.readline() == b'VALUE mtx%d 0 %d\\r\\n' % (i, len(v)), i\n\
                  \x20   assert f.read(len(v) + 2) == v + b'\\r\\n', i\n\
                  \x20   assert f.readline() == b'END\\r\\n', i\n\
                  print('checked 200')\n";
    let out = run(bed.topo.cmd("/usr/bin/python3").args(["-c", script, &ip]))?;
    check(out.contains("checked 200"), out)?;
    l.took(9)?;
    alive(&mut server)
}

fn postgresql(bed: &Bed, mode: StackThreadMode) -> Result<(), String> {
    const BIN: &str = "/usr/lib/postgresql/15/bin";
    let l = Lstack::new(bed, "postgresql", mode, Side::Main);
    let data = l.path().join("data");
    run(Command::new("runuser").args([
        "-u",
        "postgres",
        "--",
        &format!("{BIN}/initdb"),
        "-A",
        "trust",
        "-D",
        data.to_str().unwrap(),
    ]))?;
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .unwrap();
    writeln!(
        conf,
        "listen_addresses = '{}'\nport = 15432\nunix_socket_directories = '{}'",
        l.ip,
        l.path().display()
    )
    .unwrap();
    let mut hba = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("pg_hba.conf"))
        .unwrap();
    writeln!(hba, "host all all 0.0.0.0/0 trust").unwrap();
    // DPDK as user postgres: hugepages of its own and the capabilities of
    // an af_packet port (ambient, so they survive the change of user).
    let huge = HugeMount::new(&l.path().join("huge"), "postgres")?;
    let conf_text = std::fs::read_to_string(&l.conf).unwrap();
    let huge_dir = conf_text
        .split('"')
        .find(|a| a.starts_with("--huge-dir="))
        .expect("--huge-dir in the configuration")
        .to_owned();
    std::fs::write(
        &l.conf,
        conf_text.replace(&huge_dir, &format!("--huge-dir={}", huge.0.display())),
    )
    .unwrap();
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        "--inh-caps=+net_raw,+net_admin,+ipc_lock",
        "--ambient-caps=+net_raw,+net_admin,+ipc_lock",
        "--",
        "env",
    ])
    .args(l.env().iter().map(|(k, v)| format!("{k}={v}")))
    .arg(format!("{BIN}/postgres"))
    .args(["-D", data.to_str().unwrap()])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut server = spawn(&mut cmd)?;
    serving(bed, l.addr(15432), &mut server)?;
    let ip = l.ip.to_string();
    let pg = |program: &str| {
        let mut c = bed.topo.cmd(program);
        c.env("PGCONNECT_TIMEOUT", "5")
            .args(["-h", &ip, "-p", "15432", "-U", "postgres"]);
        c
    };
    let with_log = |e: String| format!("{e}\npostgres: {}", server.stderr_so_far());
    run(pg("pgbench").args(["-i", "-s", "1", "postgres"])).map_err(with_log)?;
    let out = run(pg("pgbench").args(["-c", "4", "-j", "2", "-t", "200", "postgres"]))
        .map_err(with_log)?;
    check(
        out.contains("number of failed transactions: 0"),
        format!("pgbench: {out}"),
    )?;
    let count =
        run(pg("psql").args(["-tAc", "select count(*) from pgbench_accounts", "postgres"]))?;
    check(count.trim() == "100000", format!("count: {count}"))?;
    l.took(5)?;
    alive(&mut server)
}

/// A hugetlbfs mount owned by `user`, unmounted when dropped.
#[derive(Debug)]
struct HugeMount(PathBuf);

impl HugeMount {
    fn new(dir: &Path, user: &str) -> Result<HugeMount, String> {
        std::fs::create_dir_all(dir).unwrap();
        let uid = run(Command::new("id").args(["-u", user]))?;
        run(Command::new("mount").args([
            "-t",
            "hugetlbfs",
            "-o",
            &format!("pagesize=2M,uid={},mode=0700", uid.trim()),
            "nodev",
            dir.to_str().unwrap(),
        ]))?;
        Ok(HugeMount(dir.to_owned()))
    }
}

impl Drop for HugeMount {
    fn drop(&mut self) {
        // The postmaster's children may still be dying, their hugepages
        // mapped: retry a while, then detach the mount lazily.
        for _ in 0..50 {
            let quiet = Command::new("umount")
                .arg(&self.0)
                .stderr(Stdio::null())
                .status();
            if quiet.is_ok_and(|s| s.success()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn haproxy(bed: &Bed, mode: StackThreadMode) -> Result<(), String> {
    let backend = Lstack::new(bed, "haproxy-nginx", mode, Side::Side);
    let (mut nginx, file) = start_nginx(&backend, 18082)?;
    serving(bed, backend.addr(18082), &mut nginx)?;
    let l = Lstack::new(bed, "haproxy", mode, Side::Main);
    let conf = l.path().join("haproxy.cfg");
    std::fs::write(
        &conf,
        format!(
            "global\n  maxconn 1024\n\
             defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend fe\n  bind {}:18443\n  default_backend be\n\
             backend be\n  server nginx {SIDE_IP}:18082\n",
            l.ip
        ),
    )
    .unwrap();
    // -db: foreground, no daemon.
    let mut server = spawn(l.cmd("haproxy").args(["-db", "-f", conf.to_str().unwrap()]))?;
    serving(bed, l.addr(18443), &mut server)?;
    let url = format!("http://{}:18443/1m.bin", l.ip);
    peer_download(bed, &url, &file, &l.path().join("got.bin"))?;
    peer_wrk(bed, &format!("http://{}:18443/index.html", l.ip))?;
    l.took(21)?;
    let (_, active) = l.tcp_opens()?;
    check(
        active >= 1,
        "haproxy opened no connection on lstack to nginx",
    )?;
    backend.took(1)?;
    alive(&mut nginx)?;
    alive(&mut server)
}

fn node(bed: &Bed, mode: StackThreadMode) -> Result<(), String> {
    let l = Lstack::new(bed, "node", mode, Side::Main);
    let file = l.path().join("body.bin");
    pattern_file(&file, 1 << 20);
    let script = l.path().join("server.js");
    std::fs::write(
        &script,
        "const http = require('http');\n\
         const body = require('fs').readFileSync(process.argv[2]);\n\
         http.createServer((req, res) => {\n\
           res.writeHead(200, { 'content-length': body.length });\n\
           res.end(body);\n\
         }).listen(+process.argv[3], process.argv[4], () => console.log('listening'));\n",
    )
    .unwrap();
    let mut server = spawn(l.cmd("node").args([
        script.to_str().unwrap(),
        file.to_str().unwrap(),
        "18083",
        &l.ip.to_string(),
    ]))?;
    serving(bed, l.addr(18083), &mut server)?;
    let url = format!("http://{}:18083/", l.ip);
    peer_download(bed, &url, &file, &l.path().join("got.bin"))?;
    peer_wrk(bed, &url)?;
    l.took(21)?;
    alive(&mut server)
}

fn python_asyncio(bed: &Bed, mode: StackThreadMode) -> Result<(), String> {
    let l = Lstack::new(bed, "asyncio", mode, Side::Main);
    let server_py = "import asyncio, sys\n\
                     async def echo(r, w):\n\
                     \x20   print('accepted', flush=True)\n\
                     \x20   while data := await r.read(65536):\n\
                     \x20       w.write(data)\n\
                     \x20       await w.drain()\n\
                     \x20   w.close()\n\
                     async def main():\n\
                     \x20   s = await asyncio.start_server(echo, sys.argv[1], 18084)\n\
                     \x20   print('listening', flush=True)\n\
                     \x20   await s.serve_forever()\n\
                     asyncio.run(main())\n";
    let mut server = spawn(
        l.cmd("/usr/bin/python3")
            .args(["-c", server_py, &l.ip.to_string()]),
    )?;
    serving(bed, l.addr(18084), &mut server)?;
    // Each connection sends 256 KiB (from a second thread) while reading the
    // echo; a connection counts only when it got exactly its bytes and then
    // the end of the stream. Exceptions count as failures.
    let client_py = "import os, socket, sys, threading\n\
                     ok, bad = [], []\n\
                     def one(i):\n\
                     \x20   try:\n\
                     \x20       data = os.urandom(256 * 1024)\n\
                     \x20       s = socket.create_connection((sys.argv[1], 18084), timeout=10)\n\
                     \x20       t = threading.Thread(target=s.sendall, args=(data,))\n\
                     \x20       t.start()\n\
                     \x20       got = b''\n\
                     \x20       while len(got) < len(data):\n\
                     \x20           chunk = s.recv(65536)\n\
                     \x20           if not chunk: break\n\
                     \x20           got += chunk\n\
                     \x20       t.join()\n\
                     \x20       s.shutdown(socket.SHUT_WR)\n\
                     \x20       rest = s.recv(1)\n\
                     \x20       (ok if got == data and not rest else bad).append(i)\n\
                     \x20   except Exception as e:\n\
                     \x20       bad.append((i, repr(e)))\n\
                     ts = [threading.Thread(target=one, args=(i,)) for i in range(8)]\n\
                     [t.start() for t in ts]\n\
                     [t.join() for t in ts]\n\
                     print('echoed', len(ok), 'failed', bad)\n";
    let out = run(bed
        .topo
        .cmd("/usr/bin/python3")
        .args(["-c", client_py, &l.ip.to_string()]))?;
    check(
        out.contains("echoed 8 failed []"),
        format!(
            "echo: {out}\nserver (prints `accepted` per connection): {}",
            server.stdout_so_far()
        ),
    )?;
    l.took(8)?;
    alive(&mut server)
}

fn iperf3(bed: &Bed, mode: StackThreadMode) -> Result<(), String> {
    let l = Lstack::new(bed, "iperf3", mode, Side::Main);
    let mut server = spawn(l.cmd("iperf3").args(["-s", "-p", "15201"]))?;
    serving(bed, l.addr(15201), &mut server)?;
    let ip = l.ip.to_string();
    for extra in [&[][..], &["-R"], &["-u", "-b", "50M"]] {
        let out = run(bed
            .topo
            .cmd("iperf3")
            .args(["-c", &ip, "-p", "15201", "-t", "3", "--json"])
            .args(extra))?;
        let v: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| format!("iperf3 JSON: {e}: {out}"))?;
        check(v.get("error").is_none(), format!("iperf3 {extra:?}: {out}"))?;
        let end = &v["end"];
        let received = if extra.first() == Some(&"-u") {
            let sum = &end["sum"];
            sum["packets"].as_u64().unwrap_or(0) - sum["lost_packets"].as_u64().unwrap_or(0)
        } else {
            end["sum_received"]["bytes"].as_u64().unwrap_or(0)
        };
        check(received > 0, format!("iperf3 {extra:?}: nothing received"))?;
    }
    l.took(3)?;
    alive(&mut server)
}

/// A kernel HTTP server in the peer and an lstack nginx (side stack): the
/// preloaded client (main stack) downloads a file from both.
fn client_row(bed: &Bed, mode: StackThreadMode, client: &str) -> Result<(), String> {
    let side = Lstack::new(bed, &format!("{client}-nginx"), mode, Side::Side);
    let (mut nginx, file) = start_nginx(&side, 18085)?;
    serving(bed, side.addr(18085), &mut nginx)?;
    let mut kernel = bed.topo.cmd("/usr/bin/python3");
    kernel
        .args(["-m", "http.server", "18086", "--bind"])
        .arg(bed.topo.peer_ip4.to_string())
        .arg("--directory")
        .arg(file.parent().unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _kernel = bed.topo.spawn(&mut kernel).map_err(|e| format!("{e:#}"))?;
    bed.topo
        .wait_tcp_listening(18086, START)
        .map_err(|e| format!("{e:#}"))?;
    let l = Lstack::new(bed, client, mode, Side::Main);
    for (i, url) in [
        format!("http://{}:18086/1m.bin", bed.topo.peer_ip4),
        format!("http://{SIDE_IP}:18085/1m.bin"),
    ]
    .iter()
    .enumerate()
    {
        let got = l.path().join(format!("got-{i}.bin"));
        let mut cmd = l.cmd("timeout");
        cmd.args(["30", client]);
        match client {
            "curl" => cmd.args(["-sS", "--fail", "-o"]),
            _ => cmd.args(["-q", "-O"]),
        };
        cmd.arg(&got).arg(url);
        let out = cmd.output().map_err(|e| format!("{client}: {e}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        check(
            out.status.success(),
            format!("{client} {url}: {}: {stderr}", out.status),
        )?;
        // On lstack: the stack started and kept no socket on the kernel.
        check(
            !stderr.contains("not accelerated") && !stderr.contains("sockets left on the kernel"),
            format!("{client} {url} was not on lstack: {stderr}"),
        )?;
        check(
            sha256(&got) == sha256(&file),
            format!("{client} {url}: the download differs"),
        )?;
    }
    side.took(1)?;
    alive(&mut nginx)
}

fn curl_client(bed: &Bed, mode: StackThreadMode) -> Result<(), String> {
    client_row(bed, mode, "curl")
}

fn wget_client(bed: &Bed, mode: StackThreadMode) -> Result<(), String> {
    client_row(bed, mode, "wget")
}

// ---------------------------------------------------------------------------
// Results and the README.

/// The version an application's binary prints: the first word with a digit
/// and a dot, without the `v=`, `name/` or `v` before it.
fn version(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output();
    let Ok(out) = out else {
        return "not installed".into();
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(|w| w.rsplit(['=', '/']).next().unwrap_or(w))
        .map(|w| w.trim_start_matches('v'))
        .find(|w| w.contains('.') && w.starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or("?")
        .to_owned()
}

/// A row's outcome.
#[derive(Debug)]
struct Outcome {
    status: &'static str,
    notes: String,
    /// Why the row failed the test, if it did.
    failure: Option<String>,
}

fn judge(row: &Row, result: Result<(), String>) -> Outcome {
    match (row.expect, result) {
        (Expect::Works, Ok(())) => Outcome {
            status: "works",
            notes: row.notes.into(),
            failure: None,
        },
        (Expect::Works, Err(e)) => Outcome {
            status: "FAILS",
            notes: e.lines().next().unwrap_or("").into(),
            failure: Some(e),
        },
        // Not the failure expected: lstack did not even start.
        (Expect::NotYet(_), Err(e)) if e.contains("not accelerated") => Outcome {
            status: "FAILS",
            notes: "lstack did not start".into(),
            failure: Some(format!("fails, but not for the expected reason: {e}")),
        },
        (Expect::NotYet(why), Err(e)) => {
            println!("{}: fails as expected: {e}", row.id);
            Outcome {
                status: "not yet",
                notes: why.into(),
                failure: None,
            }
        }
        (Expect::NotYet(_), Ok(())) => Outcome {
            status: "works (unexpected)",
            notes: "now works: make its `expect` Expect::Works".into(),
            failure: Some(format!(
                "{} works now: change its row to `expect: Expect::Works`",
                row.id
            )),
        },
    }
}

/// `target/compat-matrix`.
fn results_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).expect("target/<profile>/deps/<exe>");
    target.join("compat-matrix")
}

fn escape(cell: &str) -> String {
    cell.replace('|', "\\|")
}

fn markdown(rows: &[(&Row, String, Outcome)]) -> String {
    let mut t = String::from(
        "| Application | Version | Client (peer namespace) | Mode | Status | Notes |\n\
         |---|---|---|---|---|---|\n",
    );
    for (row, version, outcome) in rows {
        writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} |",
            escape(row.app),
            escape(version),
            escape(row.client),
            row.mode,
            outcome.status,
            escape(&outcome.notes)
        )
        .unwrap();
    }
    for (app, why) in CANNOT {
        writeln!(
            t,
            "| {} | any | - | - | cannot work through LD_PRELOAD | {} |",
            escape(app),
            escape(why)
        )
        .unwrap();
    }
    t
}

/// `text` with the block between the matrix markers replaced by `table`.
fn with_table(text: &str, table: &str) -> String {
    let begin = "<!-- compat-matrix (generated) -->\n";
    let end = "<!-- /compat-matrix -->";
    let start = text
        .find(begin)
        .unwrap_or_else(|| panic!("README has no {begin:?} marker"))
        + begin.len();
    let stop = start
        + text[start..]
            .find(end)
            .unwrap_or_else(|| panic!("README has no {end:?} marker"));
    format!("{}{table}{}", &text[..start], &text[stop..])
}

#[test]
fn compatibility_matrix() {
    let only: Option<Vec<String>> = std::env::var("MATRIX_ROWS")
        .ok()
        .map(|s| s.split(',').map(str::to_owned).collect());
    let bed = Bed::new();
    let out_dir = results_dir();
    std::fs::create_dir_all(&out_dir).unwrap();
    let mut done = Vec::new();
    for row in ROWS {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|r| r == row.id))
        {
            continue;
        }
        println!("== {}", row.id);
        let outcome = judge(row, (row.run)(&bed, row.mode));
        let version = version(row.version);
        let json = serde_json::json!({
            "application": row.app,
            "version": version,
            "client": row.client,
            "mode": row.mode.as_str(),
            "status": outcome.status,
            "notes": outcome.notes,
            "failure": outcome.failure,
        });
        std::fs::write(
            out_dir.join(format!("{}.json", row.id)),
            serde_json::to_string_pretty(&json).unwrap(),
        )
        .unwrap();
        println!("{}: {} {}", row.id, outcome.status, outcome.notes);
        done.push((row, version, outcome));
    }
    let failures: Vec<String> = done
        .iter()
        .filter_map(|(r, _, o)| o.failure.as_ref().map(|f| format!("{}: {f}", r.id)))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    if only.is_some() {
        return;
    }
    let text = std::fs::read_to_string(README).expect("reading README.md");
    let want = with_table(&text, &markdown(&done));
    if std::env::var_os("UPDATE_README").is_some() {
        std::fs::write(README, &want).expect("writing README.md");
        return;
    }
    // Versions are the machine's packages (a newer point release is not a
    // stale README); applications, modes, statuses and notes must match.
    assert!(
        without_versions(&text) == without_versions(&want),
        "README.md's compatibility matrix is stale: run \
         `UPDATE_README=1 cargo test --release -p lstack-preload --test matrix`"
    );
}

/// `text` with the second cell of every table row blanked (the matrix's
/// version column; other tables are the same on both sides anyway).
fn without_versions(text: &str) -> String {
    text.lines()
        .map(|l| {
            if !l.starts_with("| ") {
                return l.to_owned();
            }
            let mut cells: Vec<&str> = l.split(" | ").collect();
            if cells.len() > 2 {
                cells[1] = "";
            }
            cells.join(" | ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}
