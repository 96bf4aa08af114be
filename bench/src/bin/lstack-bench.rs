//! lstack-bench: the same unmodified programs on lstack and on the Linux
//! kernel stack, measured in one run, printed side by side with ratios.
//!
//! It builds one test topology with a kernel twin (netns-testbed): the lstack
//! side is a DPDK `net_af_packet` port on a veth whose peer namespace runs the
//! clients; the kernel side is the same addresses in a namespace pair joined
//! by a veth, all kernel. Servers run under `LD_PRELOAD=liblstack.so` on the
//! first and plainly on the second; clients are always plain kernel
//! programs in the peer. Measured: redis-benchmark SET/GET requests/s at
//! `-c 50` with `-P 1` and `-P 16`, TCP request/response latency p50/p99 on
//! one connection with 64-byte messages (lstack-rr), and bulk TCP
//! throughput both ways (iperf3). These 2-core VMs are noisy: read ratios,
//! not absolute numbers. Needs root.

use std::{
    cell::RefCell,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Parser;
use lstack_bench::lstack_conf::LstackConf;
use netns_testbed::{hugepages, AfPacketEal, ChildGuard, KernelTwin, Topology, TopologyOptions};

/// Benchmark lstack against the Linux kernel stack, side by side.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Shorter runs (for CI smoke tests): fewer requests, 3 s transfers.
    #[arg(long)]
    quick: bool,
    /// Print the results as JSON (one object) instead of a table.
    #[arg(long)]
    json: bool,
    /// liblstack.so to preload (default: next to this program).
    #[arg(long)]
    lib: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Kernel,
    Lstack,
}

struct Bench<'a> {
    topo: &'a Topology,
    twin: &'a KernelTwin,
    lib: PathBuf,
    tools: PathBuf,
    huge: hugepages::HugeEnv,
    runs: usize,
    /// The configurations written so far, removed (with their DPDK
    /// runtime directories) when the benchmark ends.
    confs: RefCell<Vec<LstackConf>>,
}

impl Drop for Bench<'_> {
    fn drop(&mut self) {
        for conf in self.confs.get_mut().drain(..) {
            if let Err(e) = conf.remove() {
                eprintln!("lstack-bench: {e:#}");
            }
        }
    }
}

impl Bench<'_> {
    /// A server command on `side`.
    fn server(&self, side: Side, program: &str) -> Result<Command> {
        Ok(match side {
            Side::Kernel => self.twin.app_cmd(program),
            Side::Lstack => {
                let mut cmd = Command::new(program);
                cmd.env("LD_PRELOAD", &self.lib)
                    .env("LSTACK_CONF_PATH", self.conf()?);
                cmd
            }
        })
    }

    /// A client command in the peer of `side`.
    fn client(&self, side: Side, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match side {
            Side::Kernel => self.twin.peer_cmd(program),
            Side::Lstack => self.topo.cmd(program),
        }
    }

    /// A fresh lstack configuration file (each preloaded process is its own
    /// DPDK primary and needs its own file prefix).
    fn conf(&self) -> Result<PathBuf> {
        let conf = LstackConf::write(
            self.topo,
            &self.huge,
            &AfPacketEal::default(),
            "lstack-bench",
            |_| {},
        )?;
        let path = conf.path.clone();
        self.confs.borrow_mut().push(conf);
        Ok(path)
    }

    /// Starts `cmd` and waits until the peer of `side` can connect to `port`.
    fn start(&self, side: Side, mut cmd: Command, port: u16) -> Result<ChildGuard> {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = ChildGuard::spawn(&mut cmd)?;
        let ip = self.topo.stack_ip4.to_string();
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = self
                .client(side, "nc")
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
        ]);
        let _server = self.start(side, cmd, 16379)?;
        let ip = self.topo.stack_ip4.to_string();
        let n = (self.runs * 50).to_string();
        for pipeline in ["1", "16"] {
            let text = Self::output(self.client(side, "redis-benchmark").args([
                "-h", &ip, "-p", "16379", "-t", "set,get", "-n", &n, "-c", "50", "-P", pipeline,
                "-q",
            ]))?;
            for (name, rps) in rates(&text) {
                out.push(Row::new(
                    side,
                    format!("redis {name} -c 50 -P {pipeline}"),
                    "req/s",
                    rps,
                    true,
                ));
            }
        }
        Ok(())
    }

    fn latency(&self, side: Side, out: &mut Vec<Row>) -> Result<()> {
        let rr = self.tools.join("lstack-rr");
        let mut cmd = self.server(side, rr.to_str().unwrap_or("lstack-rr"))?;
        cmd.args(["server", "7070"]);
        let _server = self.start(side, cmd, 7070)?;
        let addr = format!("{}:7070", self.topo.stack_ip4);
        let count = (self.runs * 5).to_string();
        let text = Self::output(
            self.client(side, &rr)
                .args(["client", &addr, "--size", "64", "--count", &count]),
        )?;
        let v: Vec<f64> = text
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if v.len() != 4 {
            bail!("unexpected lstack-rr output: {text}");
        }
        out.push(Row::new(side, "tcp rr 64 B p50".into(), "us", v[0], false));
        out.push(Row::new(side, "tcp rr 64 B p99".into(), "us", v[1], false));
        Ok(())
    }

    fn bulk(&self, side: Side, out: &mut Vec<Row>) -> Result<()> {
        let mut cmd = self.server(side, "iperf3")?;
        cmd.args(["-s", "-p", "15201"]);
        let _server = self.start(side, cmd, 15201)?;
        let ip = self.topo.stack_ip4.to_string();
        let secs = if self.runs < 1000 { "3" } else { "10" };
        for (label, extra) in [("to server", None), ("from server", Some("-R"))] {
            let mut c = self.client(side, "iperf3");
            c.args(["-c", &ip, "-p", "15201", "-t", secs, "--json"]);
            if let Some(x) = extra {
                c.arg(x);
            }
            let text = Self::output(&mut c)?;
            out.push(Row::new(
                side,
                format!("tcp bulk {label}"),
                "Mbit/s",
                received_bps(&text)? / 1e6,
                true,
            ));
        }
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
    higher_is_better: bool,
}

impl Row {
    fn new(
        side: Side,
        metric: String,
        unit: &'static str,
        value: f64,
        higher_is_better: bool,
    ) -> Self {
        Self {
            side,
            metric,
            unit,
            value,
            higher_is_better,
        }
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
    let at = json
        .find("\"sum_received\"")
        .context("no sum_received in iperf3 output")?;
    let rest = &json[at..];
    let key = "\"bits_per_second\":";
    let b = rest.find(key).context("no bits_per_second")? + key.len();
    Ok(rest[b..]
        .trim_start()
        .split([',', '\n', '}'])
        .next()
        .unwrap_or("")
        .trim()
        .parse()?)
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
    let bench = Bench {
        topo: &topo,
        twin,
        lib,
        tools,
        huge,
        runs: if args.quick { 400 } else { 4000 },
        confs: RefCell::default(),
    };

    let mut rows = Vec::new();
    type Step<'b> = fn(&Bench<'b>, Side, &mut Vec<Row>) -> Result<()>;
    let steps: [(&str, Step<'_>); 3] = [
        ("redis", Bench::redis),
        ("latency", Bench::latency),
        ("bulk", Bench::bulk),
    ];
    for (name, step) in steps {
        for side in [Side::Kernel, Side::Lstack] {
            eprintln!(
                "lstack-bench: {name} on {}...",
                if side == Side::Kernel {
                    "the kernel"
                } else {
                    "lstack"
                }
            );
            step(&bench, side, &mut rows).with_context(|| format!("{name} on {side:?}"))?;
        }
    }
    report(&rows, args.json);
    Ok(())
}

fn report(rows: &[Row], json: bool) {
    let mut metrics: Vec<&str> = Vec::new();
    for r in rows {
        if !metrics.contains(&r.metric.as_str()) {
            metrics.push(&r.metric);
        }
    }
    let find = |m: &str, s: Side| rows.iter().find(|r| r.metric == m && r.side == s);
    if json {
        let items: Vec<String> = metrics
            .iter()
            .filter_map(|m| {
                let (k, l) = (find(m, Side::Kernel)?, find(m, Side::Lstack)?);
                Some(format!(
                    "{{\"metric\":\"{m}\",\"unit\":\"{}\",\"kernel\":{:.2},\"lstack\":{:.2},\"lstack_over_kernel\":{:.3},\"higher_is_better\":{}}}",
                    k.unit,
                    k.value,
                    l.value,
                    l.value / k.value,
                    k.higher_is_better
                ))
            })
            .collect();
        println!("{{\"results\":[{}]}}", items.join(","));
        return;
    }
    println!(
        "{:<32} {:>8} {:>12} {:>12} {:>14}",
        "metric", "unit", "kernel", "lstack", "lstack/kernel"
    );
    for m in metrics {
        let (Some(k), Some(l)) = (find(m, Side::Kernel), find(m, Side::Lstack)) else {
            continue;
        };
        let better = if k.higher_is_better {
            "higher is better"
        } else {
            "lower is better"
        };
        println!(
            "{:<32} {:>8} {:>12.1} {:>12.1} {:>13.2}x  ({better})",
            m,
            k.unit,
            k.value,
            l.value,
            l.value / k.value
        );
    }
}
