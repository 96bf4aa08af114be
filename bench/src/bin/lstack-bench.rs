//! lstack-bench: the same unmodified programs on lstack and on the Linux
//! kernel stack, measured in one run, printed side by side with ratios and
//! with the CPU each side consumed.
//!
//! It builds one test topology with a kernel twin (netns-testbed): the lstack
//! side is a DPDK port on a veth (`net_af_packet`, or `net_af_xdp` with
//! `--media af_xdp`) whose peer namespace runs the clients; the kernel side
//! is the same addresses in a namespace pair joined by a veth, all kernel.
//! With `--kernel-without-gso` the kernel is measured a second time with
//! segmentation offload off on its server's veth: a veth passes the kernel's
//! 64 KiB segments on unsegmented (a NIC would cut them in hardware), which
//! lstack, sending MTU-sized frames, does not get. Servers run under `LD_PRELOAD=liblstack.so` (once
//! per stack mode: its own stack thread, "run-to-wakeup", and inside the
//! application's threads, "run-to-completion") and plainly on the kernel;
//! clients are always plain kernel programs in the peer.
//!
//! Measured: redis-benchmark SET/GET requests/s at `-c 50` with `-P 1` and
//! `-P 16` and at `-c 1000`; TCP request/response on one connection with
//! 64-byte messages (lstack-rr): rate and p50/p99/p99.9; bulk TCP both ways
//! (iperf3); nginx serving a small file to `wrk -c 100`. For every row: the
//! CPU-seconds the server process used (all its threads, user + system,
//! `/proc/<pid>/stat`) and the whole machine used (`/proc/stat`, clients and
//! kernel included) while the client ran, and the rate per CPU-second.
//! These 2-core VMs are noisy: read ratios, not absolute numbers. Needs root.

use std::{
    cell::RefCell,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use gazelle_config::StackThreadMode;
use lstack_bench::{
    cpu::{clock_ticks_per_sec, cpu_ticks, MachineCpu},
    lstack_conf::LstackConf,
};
use netns_testbed::{
    hugepages, AfPacketEal, ChildGuard, KernelTwin, Medium, Topology, TopologyOptions,
};
use serde::Serialize;

/// Benchmark lstack against the Linux kernel stack, side by side, with the
/// CPU each side used.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Shorter runs (for CI smoke tests): fewer requests, 2 s transfers.
    #[arg(long)]
    quick: bool,
    /// Print the results as JSON (one object) instead of a table.
    #[arg(long)]
    json: bool,
    /// liblstack.so to preload (default: next to this program).
    #[arg(long)]
    lib: Option<PathBuf>,
    /// lstack's stack modes to measure (the kernel is always measured).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Mode::Rtw, Mode::Rtc])]
    modes: Vec<Mode>,
    /// Which benchmarks to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Step::all())]
    only: Vec<Step>,
    /// The DPDK virtual NICs lstack is measured on (each with every mode).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [MediumArg::AfPacket])]
    media: Vec<MediumArg>,
    /// Also measure the kernel with TSO/GSO off on its server's veth, so it
    /// sends MTU-sized frames as lstack does.
    #[arg(long)]
    kernel_without_gso: bool,
}

/// A DPDK virtual NIC on the veth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum MediumArg {
    /// `net_af_packet` (PACKET_MMAP rings).
    #[value(name = "af_packet")]
    AfPacket,
    /// `net_af_xdp` (native XDP on the veth, an XDP socket).
    #[value(name = "af_xdp")]
    AfXdp,
    /// `net_memif` between two preloaded processes: lstack to lstack, the
    /// client under `LD_PRELOAD` too (no veth, no kernel on the path).
    #[value(name = "memif")]
    Memif,
}

impl MediumArg {
    fn link(self) -> Link {
        match self {
            MediumArg::AfPacket => Link::Veth(Medium::AfPacket),
            MediumArg::AfXdp => Link::Veth(Medium::AfXdp),
            MediumArg::Memif => Link::Memif,
        }
    }
}

/// What an lstack side's frames cross.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// A DPDK port on the topology's veth; the client is a kernel program
    /// in the peer namespace.
    Veth(Medium),
    /// A `net_memif` link to a client that runs on lstack too.
    Memif,
}

/// The lstack server's address on a memif link, and its client's.
const MEMIF_SERVER: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 77, 0, 1);
const MEMIF_CLIENT: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 77, 0, 2);

/// An lstack stack mode, by gazelle's `stack_thread_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// `run-to-wakeup`: the stack runs on its own thread.
    Rtw,
    /// `run-to-completion`: the application's threads run the stack.
    Rtc,
}

impl From<Mode> for StackThreadMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Rtw => StackThreadMode::RunToWakeup,
            Mode::Rtc => StackThreadMode::RunToCompletion,
        }
    }
}

/// One benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Step {
    Redis,
    Rr,
    Bulk,
    Nginx,
}

impl Step {
    fn all() -> Vec<Self> {
        vec![Self::Redis, Self::Rr, Self::Bulk, Self::Nginx]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// The baseline: ratios are over it.
    Kernel,
    /// The kernel with TSO/GSO off on its server's veth.
    KernelWithoutGso,
    Lstack(Mode, Link),
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Kernel => "kernel",
            Side::KernelWithoutGso => "kernel-nogso",
            Side::Lstack(Mode::Rtw, Link::Veth(Medium::AfPacket)) => "lstack-rtw",
            Side::Lstack(Mode::Rtc, Link::Veth(Medium::AfPacket)) => "lstack-rtc",
            Side::Lstack(Mode::Rtw, Link::Veth(Medium::AfXdp)) => "lstack-rtw-xdp",
            Side::Lstack(Mode::Rtc, Link::Veth(Medium::AfXdp)) => "lstack-rtc-xdp",
            Side::Lstack(Mode::Rtw, Link::Memif) => "lstack-rtw-memif",
            Side::Lstack(Mode::Rtc, Link::Memif) => "lstack-rtc-memif",
        }
    }

    fn medium(self) -> &'static str {
        match self {
            Side::Kernel => "kernel TCP/IP over a veth pair (TSO/GSO on: 64 KiB segments)",
            Side::KernelWithoutGso => {
                "kernel TCP/IP over a veth pair, TSO/GSO off on the server's end"
            }
            Side::Lstack(_, Link::Veth(Medium::AfPacket)) => {
                "DPDK net_af_packet on a veth (qpairs 1)"
            }
            Side::Lstack(_, Link::Veth(Medium::AfXdp)) => {
                "DPDK net_af_xdp on a veth (native XDP, 1 queue, no busy polling)"
            }
            Side::Lstack(_, Link::Memif) => {
                "DPDK net_memif between two processes, the client on lstack too \
                 (same mode; no receive interrupt: polled, napping when idle)"
            }
        }
    }
}

struct Bench<'a> {
    topo: &'a Topology,
    twin: &'a KernelTwin,
    lib: PathBuf,
    tools: PathBuf,
    huge: hugepages::HugeEnv,
    quick: bool,
    /// The configurations written so far, removed (with their DPDK
    /// runtime directories) when the benchmark ends.
    confs: RefCell<Vec<LstackConf>>,
    /// Scratch directory (nginx's files, memif sockets), removed at the end.
    scratch: PathBuf,
    /// The memif socket of the lstack server started last (its client
    /// connects there).
    memif: RefCell<Option<PathBuf>>,
}

impl Drop for Bench<'_> {
    fn drop(&mut self) {
        for conf in self.confs.get_mut().drain(..) {
            if let Err(e) = conf.remove() {
                eprintln!("lstack-bench: {e:#}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// CPU used while one client ran.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Cpu {
    /// The server process, all threads, user + system.
    server_s: f64,
    /// The whole machine (every CPU's non-idle time).
    machine_s: f64,
    /// Wall-clock length of the measurement.
    wall_s: f64,
}

/// Measures the CPU of `server` and of the machine around `f`.
fn measured<T>(server: u32, f: impl FnOnce() -> Result<T>) -> Result<(T, Cpu)> {
    let hz = clock_ticks_per_sec();
    let (s0, m0, t0) = (cpu_ticks(server)?, MachineCpu::read()?, Instant::now());
    let out = f()?;
    let (s1, m1) = (cpu_ticks(server)?, MachineCpu::read()?);
    let m = m1.since(&m0);
    Ok((
        out,
        Cpu {
            server_s: s1.saturating_sub(s0) as f64 / hz,
            machine_s: (m.user + m.system + m.interrupts + m.steal) as f64 / hz,
            wall_s: t0.elapsed().as_secs_f64(),
        },
    ))
}

impl Bench<'_> {
    /// A server command on `side`.
    fn server(&self, side: Side, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        Ok(match side {
            Side::Kernel | Side::KernelWithoutGso => self.twin.app_cmd(program),
            Side::Lstack(mode, Link::Memif) => {
                let n = self.confs.borrow().len();
                let socket = self.scratch.join(format!("memif-{n}.sock"));
                let conf = self.memif_conf(mode, &socket, true)?;
                self.memif.replace(Some(socket));
                let mut cmd = Command::new(program);
                cmd.env("LD_PRELOAD", &self.lib)
                    .env("LSTACK_CONF_PATH", conf);
                cmd
            }
            Side::Lstack(mode, Link::Veth(medium)) => {
                // An XDP program left on the veth by a server that died
                // (the af_xdp PMD removes its own on a clean exit) would
                // take every frame from the next server.
                let status = Command::new("ip")
                    .args(["link", "set", "dev", &self.topo.host_if, "xdp", "off"])
                    .status()
                    .context("running ip")?;
                if !status.success() {
                    bail!("ip link set dev {} xdp off: {status}", self.topo.host_if);
                }
                let mut cmd = Command::new(program);
                cmd.env("LD_PRELOAD", &self.lib)
                    .env("LSTACK_CONF_PATH", self.conf(mode, medium)?);
                cmd
            }
        })
    }

    /// A client command in the peer of `side` (on a memif link: on lstack,
    /// at the other end of the last server's link).
    fn client(&self, side: Side, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        Ok(match side {
            Side::Kernel | Side::KernelWithoutGso => self.twin.peer_cmd(program),
            Side::Lstack(mode, Link::Memif) => {
                let socket = self
                    .memif
                    .borrow()
                    .clone()
                    .context("a memif client before its server")?;
                let mut cmd = Command::new(program);
                cmd.env("LD_PRELOAD", &self.lib)
                    .env("LSTACK_CONF_PATH", self.memif_conf(mode, &socket, false)?);
                cmd
            }
            Side::Lstack(_, Link::Veth(_)) => self.topo.cmd(program),
        })
    }

    /// The server's address on `side`.
    fn server_ip(&self, side: Side) -> String {
        match side {
            Side::Lstack(_, Link::Memif) => MEMIF_SERVER.to_string(),
            _ => self.topo.stack_ip4.to_string(),
        }
    }

    /// A fresh configuration for one end of a memif link on `socket`.
    fn memif_conf(&self, mode: Mode, socket: &Path, server: bool) -> Result<PathBuf> {
        let ip = if server { MEMIF_SERVER } else { MEMIF_CLIENT };
        let conf = LstackConf::write_memif(&self.huge, socket, server, ip, "lstack-bench", |c| {
            c.stack_thread_mode = mode.into();
            c.tcp_conn_count = c.tcp_conn_count.max(2000);
        })?;
        let path = conf.path.clone();
        self.confs.borrow_mut().push(conf);
        Ok(path)
    }

    /// A fresh lstack configuration file (each preloaded process is its own
    /// DPDK primary and needs its own file prefix).
    fn conf(&self, mode: Mode, medium: Medium) -> Result<PathBuf> {
        let conf = LstackConf::write(
            self.topo,
            &self.huge,
            &AfPacketEal {
                medium,
                ..AfPacketEal::default()
            },
            "lstack-bench",
            |c| {
                c.stack_thread_mode = mode.into();
                // redis at -c 1000 and wrk -c 100 with room to spare.
                c.tcp_conn_count = c.tcp_conn_count.max(2000);
            },
        )?;
        let path = conf.path.clone();
        self.confs.borrow_mut().push(conf);
        Ok(path)
    }

    /// Starts `cmd` and waits until the peer of `side` can connect to `port`.
    fn start(&self, side: Side, mut cmd: Command, port: u16) -> Result<ChildGuard> {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = ChildGuard::spawn(&mut cmd)?;
        let ip = self.server_ip(side);
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = self
                .client(side, "nc")?
                .args(["-z", "-w", "1", &ip, &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?
                .success();
            if ok {
                return Ok(child);
            }
            if let Some(status) = child.try_wait()? {
                bail!("{cmd:?} exited with {status}: {}", child.stderr_so_far());
            }
            if Instant::now() > end {
                bail!(
                    "{cmd:?}: nothing listens on port {port} after 20 s: {}",
                    child.stderr_so_far()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn output(cmd: &mut Command) -> Result<String> {
        let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "{cmd:?} failed ({}): {text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(text)
    }

    fn redis(&self, side: Side, out: &mut Vec<Row>) -> Result<()> {
        let mut cmd = self.server(side, "redis-server")?;
        cmd.args([
            "--port",
            "16379",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--maxclients",
            "4000",
        ]);
        let server = self.start(side, cmd, 16379)?;
        let ip = self.server_ip(side);
        for (clients, pipeline) in [(50, 1), (50, 16), (1000, 1)] {
            for test in ["set", "get"] {
                let n = if self.quick { 20_000 } else { 200_000 } * pipeline;
                let (text, cpu) = measured(server.id(), || {
                    Self::output(self.client(side, "redis-benchmark")?.args([
                        "-h",
                        &ip,
                        "-p",
                        "16379",
                        "-t",
                        test,
                        "-n",
                        &n.to_string(),
                        "-c",
                        &clients.to_string(),
                        "-P",
                        &pipeline.to_string(),
                        "-q",
                    ]))
                })?;
                let (name, rps) = rates(&text)
                    .into_iter()
                    .next()
                    .with_context(|| format!("no rate in redis-benchmark's output: {text}"))?;
                out.push(Row::rate(
                    side,
                    format!("redis {name} -c {clients} -P {pipeline}"),
                    "req/s",
                    rps,
                    cpu,
                ));
            }
        }
        Ok(())
    }

    fn rr(&self, side: Side, out: &mut Vec<Row>) -> Result<()> {
        let rr = self.tools.join("lstack-rr");
        let mut cmd = self.server(side, &rr)?;
        cmd.args(["server", "7070"]);
        let server = self.start(side, cmd, 7070)?;
        let addr = format!("{}:7070", self.server_ip(side));
        let count = if self.quick { 5_000 } else { 50_000 }.to_string();
        let (text, cpu) = measured(server.id(), || {
            Self::output(
                self.client(side, &rr)?
                    .args(["client", &addr, "--size", "64", "--count", &count]),
            )
        })?;
        let v: Vec<f64> = text
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        let [p50, p99, p999, _mean, rate] = v[..] else {
            bail!("unexpected lstack-rr output: {text}");
        };
        out.push(Row::rate(side, "tcp rr 64 B".into(), "trans/s", rate, cpu));
        for (name, value) in [("p50", p50), ("p99", p99), ("p99.9", p999)] {
            out.push(Row::latency(
                side,
                format!("tcp rr 64 B {name}"),
                value,
                cpu,
            ));
        }
        Ok(())
    }

    fn bulk(&self, side: Side, out: &mut Vec<Row>) -> Result<()> {
        let mut cmd = self.server(side, "iperf3")?;
        cmd.args(["-s", "-p", "15201"]);
        let server = self.start(side, cmd, 15201)?;
        let ip = self.server_ip(side);
        let secs = if self.quick { "2" } else { "10" };
        for (label, extra) in [("to server", None), ("from server", Some("-R"))] {
            let mut c = self.client(side, "iperf3")?;
            c.args(["-c", &ip, "-p", "15201", "-t", secs, "--json"]);
            if let Some(x) = extra {
                c.arg(x);
            }
            let (text, cpu) = measured(server.id(), || Self::output(&mut c))?;
            out.push(Row::rate(
                side,
                format!("tcp bulk {label}"),
                "Mbit/s",
                received_bps(&text)? / 1e6,
                cpu,
            ));
        }
        Ok(())
    }

    fn nginx(&self, side: Side, out: &mut Vec<Row>) -> Result<()> {
        let dir = self.scratch.join(format!("nginx-{}", side.label()));
        let www = dir.join("www");
        std::fs::create_dir_all(&www).with_context(|| format!("creating {}", www.display()))?;
        std::fs::write(www.join("index.html"), "x".repeat(612))?;
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, netns_testbed::apps::nginx_conf(&dir, &www, 18080))?;
        let mut cmd = self.server(side, "nginx")?;
        cmd.arg("-c").arg(&conf).arg("-p").arg(&dir);
        let server = self.start(side, cmd, 18080)?;
        let url = format!("http://{}:18080/index.html", self.server_ip(side));
        let secs = if self.quick { "2s" } else { "10s" };
        let (text, cpu) = measured(server.id(), || {
            Self::output(
                self.client(side, "wrk")?
                    .args(["-t", "2", "-c", "100", "-d", secs, &url]),
            )
        })?;
        if text.contains("Socket errors") || text.contains("Non-2xx") {
            bail!("wrk saw errors: {text}");
        }
        let rps = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no Requests/sec in wrk's output: {text}"))?;
        out.push(Row::rate(
            side,
            "nginx wrk -c 100".into(),
            "req/s",
            rps,
            cpu,
        ));
        Ok(())
    }
}

/// One measurement.
#[derive(Debug, Clone)]
struct Row {
    side: Side,
    metric: String,
    unit: &'static str,
    value: f64,
    /// A rate (higher is better, and per CPU-second makes sense), or a
    /// latency (lower is better).
    rate: bool,
    cpu: Cpu,
}

impl Row {
    fn rate(side: Side, metric: String, unit: &'static str, value: f64, cpu: Cpu) -> Self {
        Self {
            side,
            metric,
            unit,
            value,
            rate: true,
            cpu,
        }
    }

    fn latency(side: Side, metric: String, value: f64, cpu: Cpu) -> Self {
        Self {
            side,
            metric,
            unit: "us",
            value,
            rate: false,
            cpu,
        }
    }

    /// The rate per CPU-second of the server and of the machine (a rate
    /// times the wall time is the amount of work done).
    fn per_cpu(&self) -> Option<(f64, f64)> {
        let work = self.value * self.cpu.wall_s;
        (self.rate && self.cpu.server_s > 0.0 && self.cpu.machine_s > 0.0)
            .then(|| (work / self.cpu.server_s, work / self.cpu.machine_s))
    }
}

/// `NAME: N requests per second` lines of redis-benchmark -q.
fn rates(text: &str) -> Vec<(String, f64)> {
    text.split(['\r', '\n'])
        .filter_map(|l| {
            let (name, rest) = l.trim().split_once(": ")?;
            let n = rest
                .split(" requests per second")
                .next()?
                .trim()
                .parse()
                .ok()?;
            rest.contains("requests per second")
                .then(|| (name.to_owned(), n))
        })
        .collect()
}

fn received_bps(json: &str) -> Result<f64> {
    let v: serde_json::Value = serde_json::from_str(json).context("iperf3's JSON")?;
    v.pointer("/end/sum_received/bits_per_second")
        .and_then(serde_json::Value::as_f64)
        .context("no end.sum_received.bits_per_second in iperf3's output")
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("lstack-bench: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "needs root: it creates network namespaces and reserves hugepages (run it with sudo)"
        );
    }
    let exe = std::env::current_exe()?;
    let tools = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let lib = args
        .lib
        .clone()
        .unwrap_or_else(|| tools.join("liblstack.so"));
    if !lib.exists() {
        bail!(
            "{} not found: build it with cargo build --release -p lstack-preload (or pass --lib)",
            lib.display()
        );
    }
    eprintln!("lstack-bench: setting up the topology and its kernel twin...");
    let huge = hugepages::ensure(256)?;
    let topo = Topology::new(TopologyOptions {
        name_hint: "bench".into(),
        kernel_twin: true,
        ..Default::default()
    })?;
    let twin = topo
        .kernel_twin
        .as_ref()
        .context("the topology has no kernel twin")?;
    let scratch = std::env::temp_dir().join(format!("lstack-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let bench = Bench {
        topo: &topo,
        twin,
        lib,
        tools,
        huge,
        quick: args.quick,
        confs: RefCell::default(),
        scratch,
        memif: RefCell::default(),
    };
    let mut sides = vec![Side::Kernel];
    if args.kernel_without_gso {
        sides.push(Side::KernelWithoutGso);
    }
    for medium in &args.media {
        for m in &args.modes {
            let side = Side::Lstack(*m, medium.link());
            if !sides.contains(&side) {
                sides.push(side);
            }
        }
    }

    let mut rows = Vec::new();
    type Run<'b> = fn(&Bench<'b>, Side, &mut Vec<Row>) -> Result<()>;
    let steps: [(Step, &str, Run<'_>); 4] = [
        (Step::Redis, "redis", Bench::redis),
        (Step::Rr, "tcp request/response", Bench::rr),
        (Step::Bulk, "bulk tcp", Bench::bulk),
        (Step::Nginx, "nginx", Bench::nginx),
    ];
    for (step, name, f) in steps {
        if !args.only.contains(&step) {
            continue;
        }
        for &side in &sides {
            eprintln!("lstack-bench: {name} on {}...", side.label());
            let _offloads = (side == Side::KernelWithoutGso)
                .then(|| GsoOff::new(twin))
                .transpose()?;
            f(&bench, side, &mut rows).with_context(|| format!("{name} on {}", side.label()))?;
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json(&rows, &sides))?);
    } else {
        table(&rows, &sides);
    }
    Ok(())
}

/// TSO and GSO off on the kernel twin's server end while it lives (on
/// again when dropped).
struct GsoOff<'t>(&'t KernelTwin);

impl<'t> GsoOff<'t> {
    fn new(twin: &'t KernelTwin) -> Result<Self> {
        Self::set(twin, "off")?;
        Ok(Self(twin))
    }

    fn set(twin: &KernelTwin, state: &str) -> Result<()> {
        let status = Command::new("ip")
            .args(["netns", "exec", &twin.app_ns, "ethtool", "-K", &twin.app_if])
            .args(["tso", state, "gso", state])
            .stdout(Stdio::null())
            .status()
            .context("running ethtool")?;
        if !status.success() {
            bail!(
                "ethtool -K {} tso {state} gso {state}: {status}",
                twin.app_if
            );
        }
        Ok(())
    }
}

impl Drop for GsoOff<'_> {
    fn drop(&mut self) {
        if let Err(e) = Self::set(self.0, "on") {
            eprintln!("lstack-bench: {e:#}");
        }
    }
}

/// Metrics in the order they were measured.
fn metrics(rows: &[Row]) -> Vec<&Row> {
    let mut first: Vec<&Row> = Vec::new();
    for r in rows {
        if !first.iter().any(|f| f.metric == r.metric) {
            first.push(r);
        }
    }
    first
}

#[derive(Serialize)]
struct JsonSide {
    side: &'static str,
    medium: &'static str,
    value: f64,
    #[serde(flatten)]
    cpu: Cpu,
    per_server_cpu_s: Option<f64>,
    per_machine_cpu_s: Option<f64>,
    /// This side over the kernel's: the value, and the per-CPU rates.
    over_kernel: Option<f64>,
    per_server_cpu_over_kernel: Option<f64>,
    per_machine_cpu_over_kernel: Option<f64>,
}

#[derive(Serialize)]
struct JsonMetric {
    metric: String,
    unit: &'static str,
    higher_is_better: bool,
    sides: Vec<JsonSide>,
}

fn json(rows: &[Row], sides: &[Side]) -> serde_json::Value {
    let find = |m: &str, s: Side| rows.iter().find(|r| r.metric == m && r.side == s);
    let results: Vec<JsonMetric> = metrics(rows)
        .into_iter()
        .map(|first| {
            let kernel = find(&first.metric, Side::Kernel);
            let kpc = kernel.and_then(Row::per_cpu);
            JsonMetric {
                metric: first.metric.clone(),
                unit: first.unit,
                higher_is_better: first.rate,
                sides: sides
                    .iter()
                    .filter_map(|&s| find(&first.metric, s))
                    .map(|r| {
                        let pc = r.per_cpu();
                        JsonSide {
                            side: r.side.label(),
                            medium: r.side.medium(),
                            value: r.value,
                            cpu: r.cpu,
                            per_server_cpu_s: pc.map(|p| p.0),
                            per_machine_cpu_s: pc.map(|p| p.1),
                            over_kernel: kernel.map(|k| r.value / k.value),
                            per_server_cpu_over_kernel: pc.zip(kpc).map(|(p, k)| p.0 / k.0),
                            per_machine_cpu_over_kernel: pc.zip(kpc).map(|(p, k)| p.1 / k.1),
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    serde_json::json!({ "results": results })
}

fn table(rows: &[Row], sides: &[Side]) {
    let find = |m: &str, s: Side| rows.iter().find(|r| r.metric == m && r.side == s);
    let lstack: Vec<Side> = sides
        .iter()
        .copied()
        .filter(|s| *s != Side::Kernel)
        .collect();
    let short = |s: &Side| {
        s.label()
            .strip_prefix("lstack-")
            .unwrap_or(s.label())
            .to_owned()
    };
    println!("media:");
    for s in sides {
        println!("  {:<14} {}", s.label(), s.medium());
    }
    print!("\n{:<40} {:>10}", "metric", "unit");
    for s in sides {
        print!(" {:>14}", s.label());
    }
    for s in &lstack {
        print!(" {:>14}", format!("{}/k", short(s)));
    }
    println!();
    let line = |label: &str, unit: &str, vals: Vec<Option<f64>>, prec: usize| {
        print!("{label:<40} {unit:>10}");
        for v in &vals {
            match v {
                Some(v) => print!(" {:>14.*}", prec, v),
                None => print!(" {:>14}", "-"),
            }
        }
        let k = vals.first().copied().flatten();
        for v in &vals[1..] {
            match (v, k) {
                (Some(v), Some(k)) if k > 0.0 => print!(" {:>13.2}x", v / k),
                _ => print!(" {:>14}", "-"),
            }
        }
        println!();
    };
    for first in metrics(rows) {
        let m = &first.metric;
        let get = |f: &dyn Fn(&Row) -> Option<f64>| -> Vec<Option<f64>> {
            sides.iter().map(|&s| find(m, s).and_then(f)).collect()
        };
        let better = if first.rate { "higher" } else { "lower" };
        line(
            &format!("{m} ({better} better)"),
            first.unit,
            get(&|r| Some(r.value)),
            1,
        );
        if first.rate {
            line("  server CPU", "s", get(&|r| Some(r.cpu.server_s)), 2);
            line(
                "  per server CPU-second",
                &format!("{}/cpu-s", first.unit.split('/').next().unwrap_or("")),
                get(&|r| r.per_cpu().map(|p| p.0)),
                0,
            );
            line("  machine CPU", "s", get(&|r| Some(r.cpu.machine_s)), 2);
            line(
                "  per machine CPU-second",
                &format!("{}/cpu-s", first.unit.split('/').next().unwrap_or("")),
                get(&|r| r.per_cpu().map(|p| p.1)),
                0,
            );
        }
    }
    println!(
        "\nCPU: the server process's user + system time, and every CPU's non-idle time \
         (clients and kernel included), while the client ran. Ratios: lstack over the kernel."
    );
}
