//! ltran-bench: ltran's dispatch rate into lstack rings, beside
//! `dpdk-testpmd` forwarding on the same kind of port, in one run.
//!
//! Both sides get frames from the same generator (this program's hidden
//! `gen` mode: a DPDK primary with its own file prefix owning the *server*
//! end of a `net_memif` pair) and are the memif *client*:
//!
//! - ltran: the real `ltran` binary (`--busy-poll`, a generated ltran.toml
//!   whose `forward_kit_args` carry the memif vdev, `bond_ports = ["0x1"]`)
//!   and a sink (hidden `sink` mode) that registers over ltran's control
//!   socket exactly as lstack does, attaches as a DPDK secondary and drains
//!   its receive ring. Rate = frames the sink took off its ring per second;
//!   ltran's drops come from `LtranStats` (what `gazellectl ltran show`
//!   prints).
//! - testpmd: `dpdk-testpmd` in io forwarding mode from the memif port to a
//!   `net_null` port (which frees what it is given, as the sink does). Rate
//!   = frames the null port transmitted per second (testpmd's counters).
//!
//! Frames are UDP/IPv4 to the sink's address, source ports cycling over
//! 1024 values, 64 and 1500 bytes (Ethernet header to payload end). Each
//! measurement is a fixed window after a warm-up. These 2-core VMs are
//! noisy: read the ratio, not the absolute numbers. Needs root.

mod frame;
mod gen;
mod sink;

use std::{
    io::Write,
    net::Ipv4Addr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use gazelle_config::{LtranConfig, MacAddr, PortMask};
use gazelle_ctl_proto::{client, DispatchCounters, LtranStats, Request, Response};
use lstack_bench::{cpu::CpuWindow, interrupt};
use netns_testbed::{hugepages, ChildGuard};

/// Measure ltran's dispatch rate beside dpdk-testpmd's io forwarding.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Short runs (CI smoke test): 1 s warm-up and a 2 s window per case.
    #[arg(long)]
    quick: bool,
    /// Print the results as JSON (one object) instead of a table.
    #[arg(long)]
    json: bool,
    /// The ltran binary (default: next to this program).
    #[arg(long)]
    ltran: Option<PathBuf>,
    /// The testpmd binary (default: dpdk-testpmd on PATH, Debian's package dpdk).
    #[arg(long, default_value = "dpdk-testpmd")]
    testpmd: String,
    /// Frame sizes in bytes (Ethernet header to payload end, no FCS).
    #[arg(long, value_delimiter = ',', default_values_t = [64usize, 1500])]
    sizes: Vec<usize>,
    #[command(subcommand)]
    role: Option<Role>,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// (internal) the traffic generator.
    #[command(hide = true)]
    Gen(gen::GenArgs),
    /// (internal) the registered instance that drains its rings.
    #[command(hide = true)]
    Sink(sink::SinkArgs),
}

const BOND_MAC: &str = "02:4c:42:00:00:01";
const SUBNET: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 0);
const SINK_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 100);
/// ltran's receive pool: a few thousand mbufs (hugepages are shared).
const LTRAN_RX_MBUFS: u32 = 8192;
const LTRAN_TX_MBUFS: u32 = 1024;
/// Free 2 MiB pages wanted before starting (generator, ltran or testpmd).
const HUGEPAGES_NEEDED: u64 = 64;
const HUGE_DIR: &str = "/dev/hugepages";

fn main() {
    let args = Args::parse();
    let result = match args.role {
        Some(Role::Gen(g)) => gen::run(g),
        Some(Role::Sink(s)) => sink::run(s),
        None => run(&args),
    };
    if let Err(e) = result {
        eprintln!("ltran-bench: {e:#}");
        std::process::exit(1);
    }
}

/// Sleeps `d`, failing if the run was interrupted (SIGINT/SIGTERM), so that
/// the children are killed and the DPDK files removed on the way out.
fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        if interrupt::interrupted() {
            bail!("interrupted");
        }
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

/// Starts `cmd` in its own process group, killed if this process dies.
fn spawn(cmd: &mut Command) -> Result<ChildGuard> {
    // SAFETY: the closure runs between fork and exec and only calls prctl,
    // which is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    ChildGuard::spawn(cmd)
}

/// A DPDK file prefix whose runtime directory (/var/run/dpdk/PREFIX) and
/// hugepage files are removed on drop. Declare it before the processes
/// that use it, so that they are killed first.
#[derive(Debug)]
struct DpdkPrefix(String);

impl DpdkPrefix {
    fn new(name: &str) -> Self {
        Self(hugepages::dpdk_file_prefix(name))
    }
}

impl Drop for DpdkPrefix {
    fn drop(&mut self) {
        if let Err(e) = hugepages::remove_dpdk_runtime_dir(&self.0) {
            eprintln!("ltran-bench: cleaning up: {e:#}");
        }
        let stem = format!("{}map_", self.0);
        if let Ok(dir) = std::fs::read_dir(HUGE_DIR) {
            for f in dir.flatten() {
                if f.file_name().to_string_lossy().starts_with(&stem) {
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
    }
}

/// A scratch directory (configs, sockets), removed on drop.
#[derive(Debug)]
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child that answers `@@ ` lines on stdout to commands on stdin (the
/// generator and the sink).
#[derive(Debug)]
struct Node {
    name: &'static str,
    child: ChildGuard,
    seq: u64,
}

impl Node {
    fn spawn(name: &'static str, cmd: &mut Command) -> Result<Self> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Ok(Self {
            name,
            child: spawn(cmd)?,
            seq: 0,
        })
    }

    fn send(&mut self, line: &str) -> Result<()> {
        let name = self.name;
        let stdin = self.child.stdin().context("no stdin")?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("telling the {name} {line:?}"))
    }

    fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.child.stdout_so_far().trim_end(),
            self.child.stderr_so_far().trim_end()
        )
    }

    /// Waits for a `@@ ` line starting with `prefix`; returns its rest.
    fn wait_line(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        let needle = format!("@@ {prefix}");
        let end = Instant::now() + timeout;
        loop {
            let out = self.child.stdout_so_far();
            if let Some(line) = out.lines().find(|l| l.starts_with(&needle)) {
                return Ok(line[needle.len()..].trim().to_owned());
            }
            if let Some(status) = self.child.try_wait()? {
                std::thread::sleep(Duration::from_millis(200));
                bail!(
                    "the {} exited ({status}) before saying {prefix:?}\n{}",
                    self.name,
                    self.output()
                );
            }
            if Instant::now() > end {
                bail!(
                    "the {} did not say {prefix:?} within {timeout:?}\n{}",
                    self.name,
                    self.output()
                );
            }
            sleep(Duration::from_millis(2))?;
        }
    }

    /// `count SEQ` -> the numbers of its answer.
    fn count(&mut self) -> Result<Vec<u64>> {
        self.seq += 1;
        let seq = self.seq;
        self.send(&format!("count {seq}"))?;
        let rest = self.wait_line(&format!("count {seq} "), Duration::from_secs(5))?;
        rest.split_whitespace()
            .map(|w| {
                w.parse()
                    .with_context(|| format!("{}: {rest:?}", self.name))
            })
            .collect()
    }
}

/// Where each process runs.
#[derive(Debug, Clone, Copy)]
struct Cpus {
    gen: usize,
    fwd: usize,
    sink: usize,
    total: usize,
}

impl Cpus {
    fn pick() -> Result<Self> {
        let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))?;
        let cpus: Vec<usize> = (0..nix::sched::CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect();
        Ok(match cpus.as_slice() {
            [] => bail!("no CPU in this process's affinity mask"),
            [a] => Self {
                gen: *a,
                fwd: *a,
                sink: *a,
                total: 1,
            },
            [a, b] => Self {
                gen: *a,
                fwd: *b,
                sink: *b,
                total: 2,
            },
            [a, b, c, ..] => Self {
                gen: *a,
                fwd: *b,
                sink: *c,
                total: cpus.len(),
            },
        })
    }

    fn describe(&self) -> String {
        let sink = if self.sink == self.fwd {
            format!(
                "the sink shares CPU {} with ltran (it naps when its ring is empty, but ltran does not have the core to itself)",
                self.sink
            )
        } else {
            format!("the sink on CPU {}", self.sink)
        };
        let gen = if self.gen == self.fwd {
            " (one CPU only: everything shares it)"
        } else {
            ""
        };
        format!(
            "{} CPU(s): generator on CPU {}{gen}; ltran (--busy-poll) on CPU {}, {sink}; testpmd's forwarding lcore on CPU {}, its idle command-line lcore on CPU {}",
            self.total, self.gen, self.fwd, self.fwd, self.gen
        )
    }
}

/// Timing of one run.
#[derive(Debug, Clone, Copy)]
struct Timing {
    warmup: Duration,
    window: Duration,
}

/// One side's result at one frame size.
#[derive(Debug, Clone, Default)]
struct Measured {
    /// Frames delivered per second.
    pps: f64,
    /// Bits per second of those frames (no FCS, no preamble).
    bps: f64,
    /// Frames the generator got onto the memif ring per second.
    offered_pps: f64,
    /// Frames dropped in the window, and why.
    drops: u64,
    drop_detail: String,
    /// Share of the generator's transmit bursts that found the memif ring
    /// full (high: the receiving side is the bottleneck).
    full_share: f64,
    /// CPU time each process got in the window, as a share of one CPU:
    /// generator, forwarder (ltran or testpmd), sink (ltran side only).
    cpu_gen: f64,
    cpu_fwd: f64,
    cpu_sink: Option<f64>,
}

/// The generator's counters: `[sent, received, t_ns, bursts, full]`.
fn offered(g0: &[u64], g1: &[u64]) -> (f64, f64) {
    let pps = (g1[0] - g0[0]) as f64 / ((g1[2] - g0[2]) as f64 / 1e9);
    let bursts = (g1[3] - g0[3]).max(1);
    (pps, (g1[4] - g0[4]) as f64 / bursts as f64)
}

#[derive(Debug)]
struct Env {
    exe: PathBuf,
    ltran: PathBuf,
    testpmd: PathBuf,
    cpus: Cpus,
    timing: Timing,
    scratch: PathBuf,
    sizes: Vec<usize>,
}

impl Env {
    fn eal_common(&self, lcores: &str, prefix: &str, unlink: bool) -> Vec<String> {
        let mut v = vec![
            format!("--lcores={lcores}"),
            "--no-pci".into(),
            "--no-telemetry".into(),
            format!("--file-prefix={prefix}"),
            format!("--huge-dir={HUGE_DIR}"),
            "--socket-limit=128".into(),
            "--log-level=*:notice".into(),
        ];
        if unlink {
            v.push("--huge-unlink".into());
        }
        v
    }

    fn memif_socket(&self, side: &str) -> PathBuf {
        self.scratch.join(format!("memif-{side}.sock"))
    }

    /// Starts the generator (memif server on `socket`) and waits until its
    /// port is up.
    fn generator(&self, prefix: &DpdkPrefix, socket: &Path) -> Result<Node> {
        let mut cmd = Command::new(&self.exe);
        cmd.args([
            "gen",
            "--dst-mac",
            BOND_MAC,
            "--src-ip",
            &CLIENT_IP.to_string(),
            "--dst-ip",
            &SINK_IP.to_string(),
            "--",
        ]);
        cmd.args(self.eal_common(&format!("0@{}", self.cpus.gen), &prefix.0, true));
        cmd.arg(format!(
            "--vdev=net_memif0,role=server,socket={},socket-abstract=no",
            socket.display()
        ));
        let mut node = Node::spawn("generator", &mut cmd)?;
        node.wait_line("ready", Duration::from_secs(30))?;
        Ok(node)
    }

    fn ltran_side(&self) -> Result<Vec<Measured>> {
        let socket = self.memif_socket("ltran");
        let gen_prefix = DpdkPrefix::new("lbench_gen");
        let mut gen = self.generator(&gen_prefix, &socket)?;

        let ltran_prefix = DpdkPrefix::new("lbench_ltran");
        let mut config = LtranConfig::new(
            SUBNET,
            8,
            vec!["0x1".parse::<PortMask>()?],
            vec![BOND_MAC.parse::<MacAddr>()?],
        );
        config.forward_kit_args =
            self.eal_common(&format!("0@{}", self.cpus.fwd), &ltran_prefix.0, false);
        config.forward_kit_args.push(format!(
            "--vdev=net_memif0,role=client,socket={},socket-abstract=no",
            socket.display()
        ));
        config.rx_mbuf_pool_size = LTRAN_RX_MBUFS;
        config.tx_mbuf_pool_size = LTRAN_TX_MBUFS;
        config.dispatch_max_clients = 4;
        config
            .validate()
            .context("the generated ltran config is invalid")?;
        let conf_path = self.scratch.join("ltran.toml");
        std::fs::write(&conf_path, config.to_toml_string())?;
        let run_dir = self.scratch.join("run");
        std::fs::create_dir_all(&run_dir)?;
        let ctl = gazelle_ctl_proto::paths::ltran_socket(&run_dir, &config.unix_prefix);

        let mut cmd = Command::new(&self.ltran);
        cmd.arg("--config-file")
            .arg(&conf_path)
            .arg("--run-dir")
            .arg(&run_dir)
            .arg("--busy-poll")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut ltran = spawn(&mut cmd)?;
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            match client::request(&ctl, "ltran", Request::Hello, Duration::from_secs(2)) {
                Ok(Response::Hello(_)) => break,
                Ok(other) => bail!("ltran answered Hello with {other:?}"),
                Err(e) => {
                    if let Some(status) = ltran.try_wait()? {
                        std::thread::sleep(Duration::from_millis(200));
                        bail!(
                            "ltran exited ({status}) while starting: {}",
                            ltran.stderr_so_far()
                        );
                    }
                    if Instant::now() > end {
                        bail!(
                            "ltran did not answer on {} within 30 s ({e}): {}",
                            ctl.display(),
                            ltran.stderr_so_far()
                        );
                    }
                }
            }
            sleep(Duration::from_millis(50))?;
        }
        gen.wait_line("link-up", Duration::from_secs(20))
            .context("the memif link between the generator and ltran did not come up")?;

        let mut cmd = Command::new(&self.exe);
        cmd.arg("sink")
            .arg("--socket")
            .arg(&ctl)
            .args(["--ip", &SINK_IP.to_string(), "--"])
            .args([
                format!("--lcores=1@{}", self.cpus.sink),
                "--no-pci".into(),
                "--no-telemetry".into(),
                format!("--huge-dir={HUGE_DIR}"),
                "--log-level=*:notice".into(),
            ]);
        let mut sink = Node::spawn("sink", &mut cmd)?;
        sink.wait_line("registered", Duration::from_secs(30))
            .with_context(|| format!("ltran's log: {}", ltran.stderr_so_far()))?;
        let stats = || -> Result<LtranStats> {
            match client::request(&ctl, "ltran", Request::LtranStats, Duration::from_secs(5))? {
                Response::LtranStats(s) => Ok(s),
                other => bail!("ltran answered LtranStats with {other:?}"),
            }
        };
        // ltran publishes its numbers every 100 ms and checks links every
        // bond_miimon ms: give it a moment to see the memif link.
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let s = stats()?;
            if s.bond.active.is_some() {
                break;
            }
            if Instant::now() > end {
                bail!(
                    "ltran's bond has no active port after 10 s (memif link down?): {:?}",
                    s.bond
                );
            }
            sleep(Duration::from_millis(50))?;
        }

        let mut out = Vec::new();
        for &size in &self.sizes {
            gen.send(&format!("go {size}"))?;
            sleep(self.timing.warmup)?;
            let cpu = CpuWindow::start(&[gen.child.id(), ltran.id(), sink.child.id()])?;
            let (l0, s0, g0) = (stats()?, sink.count()?, gen.count()?);
            sleep(self.timing.window)?;
            let (s1, g1, l1) = (sink.count()?, gen.count()?, stats()?);
            let cpu = cpu.shares()?;
            gen.send("pause")?;
            let secs = (s1[2] - s0[2]) as f64 / 1e9;
            let frames = s1[0] - s0[0];
            let bytes = s1[1] - s0[1];
            let d = delta(&l0.dispatch, &l1.dispatch);
            let port =
                |s: &LtranStats| s.bond.ports.first().map(|p| p.counters).unwrap_or_default();
            let (p0, p1) = (port(&l0), port(&l1));
            let nombuf = p1.rx_nombuf - p0.rx_nombuf;
            let missed = p1.rx_missed - p0.rx_missed;
            let misaddressed = d.not_for_us + d.unowned_dropped + d.malformed;
            if misaddressed > 0 {
                bail!(
                    "{size} B: ltran dropped {misaddressed} frames as not for it (not_for_us {}, unowned {}, malformed {}): the generated frames are wrong",
                    d.not_for_us, d.unowned_dropped, d.malformed
                );
            }
            if frames == 0 {
                bail!(
                    "{size} B: the sink received nothing in {secs:.1} s (generator sent {}, ltran rx_frames +{}, udp +{}, ring_full +{}); ltran's log: {}",
                    g1[0] - g0[0],
                    d.rx_frames,
                    d.udp,
                    d.ring_full,
                    ltran.stderr_so_far()
                );
            }
            let (offered_pps, full_share) = offered(&g0, &g1);
            out.push(Measured {
                pps: frames as f64 / secs,
                bps: bytes as f64 * 8.0 / secs,
                offered_pps,
                full_share,
                cpu_gen: cpu[0],
                cpu_fwd: cpu[1],
                cpu_sink: Some(cpu[2]),
                drops: d.ring_full + nombuf + missed,
                drop_detail: format!(
                    "ring_full {}, rx_nombuf {nombuf}, rx_missed {missed} (ltran rx_frames +{}, udp +{})",
                    d.ring_full, d.rx_frames, d.udp
                ),
            });
            sleep(Duration::from_millis(300))?;
        }
        let _ = sink.send("quit");
        let _ = gen.send("quit");
        Ok(out)
    }

    fn testpmd_side(&self) -> Result<Vec<Measured>> {
        let socket = self.memif_socket("testpmd");
        let gen_prefix = DpdkPrefix::new("lbench_gen");
        let mut gen = self.generator(&gen_prefix, &socket)?;

        let prefix = DpdkPrefix::new("lbench_testpmd");
        let mut cmd = Command::new("stdbuf");
        cmd.arg("-oL").arg(&self.testpmd);
        cmd.args(self.eal_common(
            &format!("0@{},1@{}", self.cpus.gen, self.cpus.fwd),
            &prefix.0,
            true,
        ));
        cmd.arg(format!(
            "--vdev=net_memif0,role=client,socket={},socket-abstract=no",
            socket.display()
        ));
        cmd.arg("--vdev=net_null0,no-rx=1");
        cmd.args([
            "--",
            "-i",
            "--forward-mode=io",
            "--nb-cores=1",
            "--rxd=1024",
            "--txd=1024",
            &format!("--total-num-mbufs={LTRAN_RX_MBUFS}"),
        ]);
        let mut pmd = Testpmd {
            node: Node::spawn("testpmd", &mut cmd)?,
        };
        pmd.wait_prompt(1)?;
        gen.wait_line("link-up", Duration::from_secs(20))
            .context("the memif link between the generator and testpmd did not come up")?;
        pmd.node.send("start")?;
        pmd.wait_prompt(2)?;

        let mut out = Vec::new();
        for &size in &self.sizes {
            gen.send(&format!("go {size}"))?;
            sleep(self.timing.warmup)?;
            let cpu = CpuWindow::start(&[gen.child.id(), pmd.node.child.id()])?;
            let t0 = Instant::now();
            let (n0, g0) = (pmd.stats()?, gen.count()?);
            sleep(self.timing.window)?;
            let t1 = Instant::now();
            let (n1, g1) = (pmd.stats()?, gen.count()?);
            let cpu = cpu.shares()?;
            gen.send("pause")?;
            let secs = (t1 - t0).as_secs_f64();
            let frames = n1.tx_null - n0.tx_null;
            if frames == 0 {
                bail!(
                    "{size} B: testpmd forwarded nothing in {secs:.1} s (generator sent {})\n{}",
                    g1[0] - g0[0],
                    pmd.node.output()
                );
            }
            let drops = (n1.rx_missed - n0.rx_missed) + (n1.rx_nombuf - n0.rx_nombuf);
            let (offered_pps, full_share) = offered(&g0, &g1);
            out.push(Measured {
                pps: frames as f64 / secs,
                bps: frames as f64 * size as f64 * 8.0 / secs,
                offered_pps,
                full_share,
                cpu_gen: cpu[0],
                cpu_fwd: cpu[1],
                cpu_sink: None,
                drops,
                drop_detail: format!(
                    "memif rx_missed {}, rx_nombuf {}",
                    n1.rx_missed - n0.rx_missed,
                    n1.rx_nombuf - n0.rx_nombuf
                ),
            });
            sleep(Duration::from_millis(300))?;
        }
        let _ = pmd.node.send("stop");
        let _ = pmd.node.send("quit");
        let _ = gen.send("quit");
        let _ = pmd
            .node
            .child
            .wait_for_output("Bye", Duration::from_secs(5));
        Ok(out)
    }
}

/// Counter differences of the dispatcher.
fn delta(a: &DispatchCounters, b: &DispatchCounters) -> DispatchCounters {
    DispatchCounters {
        rx_frames: b.rx_frames - a.rx_frames,
        udp: b.udp - a.udp,
        ring_full: b.ring_full - a.ring_full,
        not_for_us: b.not_for_us - a.not_for_us,
        unowned_dropped: b.unowned_dropped - a.unowned_dropped,
        malformed: b.malformed - a.malformed,
        ..DispatchCounters::default()
    }
}

/// testpmd in interactive mode, read through its (line-buffered) stdout.
#[derive(Debug)]
struct Testpmd {
    node: Node,
}

#[derive(Debug, Clone, Copy)]
struct PmdCounters {
    tx_null: u64,
    rx_missed: u64,
    rx_nombuf: u64,
}

impl Testpmd {
    /// Waits until testpmd has printed `n` prompts.
    fn wait_prompt(&mut self, n: usize) -> Result<()> {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if self.node.child.stdout_so_far().matches("testpmd> ").count() >= n {
                return Ok(());
            }
            if let Some(status) = self.node.child.try_wait()? {
                std::thread::sleep(Duration::from_millis(200));
                bail!("testpmd exited ({status})\n{}", self.node.output());
            }
            if Instant::now() > end {
                bail!("testpmd did not prompt within 30 s\n{}", self.node.output());
            }
            sleep(Duration::from_millis(5))?;
        }
    }

    /// `show port stats` of the memif port (0) and the null port (1).
    fn stats(&mut self) -> Result<PmdCounters> {
        let rx = self.port(0)?;
        let tx = self.port(1)?;
        Ok(PmdCounters {
            tx_null: field(&tx, "TX-packets:")?,
            rx_missed: field(&rx, "RX-missed:")?,
            rx_nombuf: field(&rx, "RX-nombuf:")?,
        })
    }

    fn port(&mut self, port: u16) -> Result<String> {
        let header = format!("NIC statistics for port {port} ");
        let before = self.node.child.stdout_so_far().matches(&header).count();
        self.node.send(&format!("show port stats {port}"))?;
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let out = self.node.child.stdout_so_far();
            if out.matches(&header).count() > before {
                if let Some(at) = out.rfind(&header) {
                    let block = &out[at..];
                    // The block ends with a line of '#' after the throughput lines.
                    if let Some(end) = block.find("Tx-pps:") {
                        if block[end..].contains("####") {
                            return Ok(block[..end].to_owned());
                        }
                    }
                }
            }
            if let Some(status) = self.node.child.try_wait()? {
                bail!("testpmd exited ({status})\n{}", self.node.output());
            }
            if Instant::now() > end {
                bail!(
                    "testpmd did not show port {port}'s stats\n{}",
                    self.node.output()
                );
            }
            sleep(Duration::from_millis(2))?;
        }
    }
}

/// The number after `name` in testpmd's output.
fn field(block: &str, name: &str) -> Result<u64> {
    let at = block
        .find(name)
        .with_context(|| format!("no {name} in testpmd's output: {block}"))?;
    block[at + name.len()..]
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .with_context(|| format!("unreadable {name} in testpmd's output: {block}"))
}

/// Finds `program` as given or on PATH.
fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

fn free_hugepages() -> Result<u64> {
    let path = "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages";
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    Ok(text.trim().parse()?)
}

fn run(args: &Args) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("needs root: it runs DPDK processes on hugepages (run it with sudo)");
    }
    for &s in &args.sizes {
        if !(frame::MIN_FRAME..=frame::MAX_FRAME).contains(&s) {
            bail!(
                "--sizes: {s} is outside {}..={} bytes",
                frame::MIN_FRAME,
                frame::MAX_FRAME
            );
        }
    }
    let exe = std::env::current_exe()?;
    let ltran = args.ltran.clone().unwrap_or_else(|| {
        exe.parent()
            .map(|d| d.join("ltran"))
            .unwrap_or_else(|| PathBuf::from("ltran"))
    });
    if !ltran.is_file() {
        bail!(
            "{} not found: build it with cargo build --release -p ltran (or pass --ltran)",
            ltran.display()
        );
    }
    let testpmd = find_program(&args.testpmd).with_context(|| {
        format!(
            "{} not found: install Debian's package dpdk (it ships /usr/bin/dpdk-testpmd) or pass --testpmd",
            args.testpmd
        )
    })?;
    if find_program("stdbuf").is_none() {
        bail!("stdbuf (coreutils) not found: it keeps testpmd's output line-buffered");
    }
    interrupt::install()?;
    let huge = hugepages::ensure(HUGEPAGES_NEEDED)?;
    if huge.huge_dir != Path::new(HUGE_DIR) {
        bail!(
            "hugetlbfs is at {}, expected {HUGE_DIR}",
            huge.huge_dir.display()
        );
    }
    let free = free_hugepages()?;
    if free < HUGEPAGES_NEEDED {
        bail!(
            "only {free} free 2 MiB hugepages (want {HUGEPAGES_NEEDED}); other DPDK processes hold the rest: retry later"
        );
    }
    let scratch = Scratch(std::env::temp_dir().join(format!("ltran-bench-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0)?;
    let (timing, rounds) = if args.quick {
        (
            Timing {
                warmup: Duration::from_secs(1),
                window: Duration::from_secs(2),
            },
            1,
        )
    } else {
        (
            Timing {
                warmup: Duration::from_secs(2),
                window: Duration::from_secs(5),
            },
            3,
        )
    };
    let env = Env {
        exe,
        ltran,
        testpmd,
        cpus: Cpus::pick()?,
        timing,
        scratch: scratch.0.clone(),
        sizes: args.sizes.clone(),
    };
    let started = Instant::now();
    // Alternate the sides, so that load from elsewhere on the machine
    // falls on both alike; each side keeps the median round.
    let mut ltran_rounds = Vec::new();
    let mut pmd_rounds = Vec::new();
    for round in 1..=rounds {
        eprintln!(
            "ltran-bench: round {round}/{rounds}: ltran (generator -> memif -> ltran -> ring -> sink)..."
        );
        ltran_rounds.push(env.ltran_side().context("measuring ltran")?);
        eprintln!(
            "ltran-bench: round {round}/{rounds}: dpdk-testpmd (generator -> memif -> testpmd io -> net_null)..."
        );
        pmd_rounds.push(env.testpmd_side().context("measuring dpdk-testpmd")?);
    }
    let results: Vec<Result_> = env
        .sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| Result_ {
            size,
            ltran: Spread::of(ltran_rounds.iter().map(|r| r[i].clone()).collect()),
            testpmd: Spread::of(pmd_rounds.iter().map(|r| r[i].clone()).collect()),
        })
        .collect();
    report(&env, rounds, &results, args.json, started.elapsed());
    Ok(())
}

/// One frame size, both sides.
#[derive(Debug)]
struct Result_ {
    size: usize,
    ltran: Spread,
    testpmd: Spread,
}

/// The median round of one side, with the range over rounds.
#[derive(Debug)]
struct Spread {
    median: Measured,
    min_pps: f64,
    max_pps: f64,
}

impl Spread {
    fn of(mut rounds: Vec<Measured>) -> Self {
        rounds.sort_by(|a, b| a.pps.total_cmp(&b.pps));
        Self {
            min_pps: rounds.first().map_or(0.0, |m| m.pps),
            max_pps: rounds.last().map_or(0.0, |m| m.pps),
            median: rounds[(rounds.len() - 1) / 2].clone(),
        }
    }
}

fn report(env: &Env, rounds: usize, results: &[Result_], json: bool, took: Duration) {
    let mode = format!(
        "{rounds} round(s) alternating the sides, each {} s warm-up + {} s window per frame size, median round shown",
        env.timing.warmup.as_secs(),
        env.timing.window.as_secs()
    );
    if json {
        let side = |m: &Spread| {
            let x = &m.median;
            format!(
                "{{\"pps\":{:.0},\"bps\":{:.0},\"min_pps\":{:.0},\"max_pps\":{:.0},\"offered_pps\":{:.0},\"ring_full_share\":{:.3},\"drops\":{},\"cpu_generator\":{:.2},\"cpu_forwarder\":{:.2}}}",
                x.pps, x.bps, m.min_pps, m.max_pps, x.offered_pps, x.full_share, x.drops, x.cpu_gen, x.cpu_fwd
            )
        };
        let items: Vec<String> = results
            .iter()
            .map(|r| {
                format!(
                    "{{\"frame_bytes\":{},\"testpmd\":{},\"ltran\":{},\"ltran_over_testpmd\":{:.3}}}",
                    r.size,
                    side(&r.testpmd),
                    side(&r.ltran),
                    r.ltran.median.pps / r.testpmd.median.pps
                )
            })
            .collect();
        println!(
            "{{\"port\":\"net_memif\",\"mode\":\"{mode}\",\"cpus\":\"{}\",\"results\":[{}]}}",
            env.cpus.describe().replace('"', "'"),
            items.join(",")
        );
        return;
    }
    println!("ltran-bench: ltran dispatch (memif -> ltran -> lstack ring -> sink) vs dpdk-testpmd io forwarding (memif -> net_null)");
    println!(
        "ports: net_memif, copy mode (generator = server; ltran's bond port / testpmd = client)"
    );
    println!("run: {mode}; took {:.0} s", took.as_secs_f64());
    println!("cpus: {}", env.cpus.describe());
    println!("NOISY: a shared 2-core VM, busy-polling processes sharing cores with each other and with whatever else runs; read the ratio (and the CPU shares below), not the absolute numbers");
    println!();
    println!(
        "{:<18} {:>8} {:>12} {:>12} {:>14}",
        "metric", "unit", "testpmd", "ltran", "ltran/testpmd"
    );
    for r in results {
        let (l, p) = (&r.ltran.median, &r.testpmd.median);
        println!(
            "{:<18} {:>8} {:>12.3} {:>12.3} {:>13.2}x  (higher is better)",
            format!("dispatch {} B", r.size),
            "Mpps",
            p.pps / 1e6,
            l.pps / 1e6,
            l.pps / p.pps
        );
        println!(
            "{:<18} {:>8} {:>12.2} {:>12.2} {:>13.2}x  (higher is better)",
            format!("dispatch {} B", r.size),
            "Gbit/s",
            p.bps / 1e9,
            l.bps / 1e9,
            l.bps / p.bps
        );
        println!(
            "{:<18} {:>8} {:>12.3} {:>12.3} {:>13.2}x  (rate per CPU the forwarder got)",
            format!("dispatch {} B", r.size),
            "Mpps/CPU",
            p.pps / 1e6 / p.cpu_fwd.max(0.01),
            l.pps / 1e6 / l.cpu_fwd.max(0.01),
            (l.pps / l.cpu_fwd.max(0.01)) / (p.pps / p.cpu_fwd.max(0.01))
        );
    }
    println!();
    for r in results {
        for (name, m) in [("ltran", &r.ltran), ("testpmd", &r.testpmd)] {
            let x = &m.median;
            let sink = x
                .cpu_sink
                .map_or(String::new(), |c| format!(", sink {:.0}%", c * 100.0));
            println!(
                "{} B {name}: {:.3} Mpps (rounds {:.3}..{:.3}); offered {:.3} Mpps, {:.0}% of generator bursts found the memif ring full; dropped {} ({}); CPU: generator {:.0}%, {name} {:.0}%{sink}",
                r.size,
                x.pps / 1e6,
                m.min_pps / 1e6,
                m.max_pps / 1e6,
                x.offered_pps / 1e6,
                x.full_share * 100.0,
                x.drops,
                x.drop_detail,
                x.cpu_gen * 100.0,
                x.cpu_fwd * 100.0,
            );
        }
    }
    println!("(ring full often: the forwarder is the bottleneck and its rate is measured; rarely: the generator is, and the ratio only bounds the difference)");
}
