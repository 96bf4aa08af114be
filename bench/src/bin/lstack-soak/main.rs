//! lstack-soak: a long, checked load on the lstack echo server, and an
//! account of every frame lost on the way.
//!
//! It runs `lstack-echo` on a DPDK `net_af_packet` port (a veth into a peer
//! network namespace, netns-testbed) and loads it from the peer with N TCP
//! connections, each streaming its own seeded pseudo-random bytes and
//! checking every byte echoed ([`tcp`], [`pattern`]), plus numbered and
//! checksummed UDP echo probes at a fixed rate ([`udp`]). Every 10 s it
//! prints progress; at the end a report ([`report`]): bytes moved and
//! corrupted, per-connection throughput, stalls, UDP losses, every drop
//! counter of the lstack and of the peer's kernel over the run
//! ([`counters`]), and the CPU each side used. It fails (exit 1, saying
//! why) on any corrupted byte, a stall longer than `--max-stall` or a
//! broken connection. Needs root.

mod counters;
mod pattern;
mod report;
mod tcp;
mod udp;

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Parser;
use lstack_bench::{
    cpu::{CpuWindow, MachineCpu},
    interrupt,
    lstack_conf::LstackConf,
};
use netns_testbed::{hugepages, AfPacketEal, ChildGuard, Topology, TopologyOptions};

use crate::{
    counters::{lstack_snmp, lstack_stats, snmp_since, KernelSnapshot},
    report::Report,
};

/// Soak lstack-echo with checked TCP streams and UDP probes, and count
/// every frame lost.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Seconds to stream [default: 600, or 20 with --quick].
    #[arg(long)]
    duration: Option<u64>,
    /// A short run (20 s) for smoke tests.
    #[arg(long)]
    quick: bool,
    /// TCP connections.
    #[arg(long, default_value_t = 200)]
    connections: usize,
    /// Fail if a connection makes no progress for longer than this (seconds).
    #[arg(long, default_value_t = 30)]
    max_stall: u64,
    /// Print the report as JSON (one object) on stdout.
    #[arg(long)]
    json: bool,
    /// Load generator threads for the TCP connections.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Most bytes a connection has sent and not yet seen echoed.
    #[arg(long, default_value_t = 128 * 1024)]
    window: usize,
    /// UDP probes per second (0: none).
    #[arg(long, default_value_t = 1000)]
    udp_rate: u32,
    /// Seed of the streams' bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// af_packet ring: frames per ring [default: the testbed's].
    #[arg(long)]
    framecnt: Option<u32>,
    /// af_packet ring: block size, bytes [default: the testbed's].
    #[arg(long)]
    blocksz: Option<u32>,
    /// af_packet ring: frame size, bytes [default: the testbed's].
    #[arg(long)]
    framesz: Option<u32>,
    /// lstack's nic_rxqueue_size [default: lstack's].
    #[arg(long)]
    nic_rxqueue_size: Option<u32>,
    /// lstack-echo's socket buffer per direction, bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    echo_buffer: usize,
    /// The lstack-echo binary [default: next to this program].
    #[arg(long)]
    echo: Option<PathBuf>,
    /// Test hook: flip one echoed byte before it is checked; the run must
    /// then fail.
    #[arg(long, hide = true)]
    flip_byte: bool,
}

/// Counters the load updates as it goes (for progress lines), and the flag
/// that stops it early.
#[derive(Debug, Default)]
pub struct Live {
    /// TCP bytes written so far.
    pub tcp_sent: AtomicU64,
    /// TCP bytes echoed back so far.
    pub tcp_echoed: AtomicU64,
    /// UDP probes sent so far.
    pub udp_sent: AtomicU64,
    /// Distinct UDP probes echoed so far.
    pub udp_echoed: AtomicU64,
    /// Stop at once (the server died, or Ctrl-C).
    pub abort: AtomicBool,
}

/// Where the echo server listens (TCP and UDP).
const ECHO_PORT: u16 = 7;
/// How often progress is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("lstack-soak: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "needs root: it creates a network namespace and reserves hugepages (run it with sudo)"
        );
    }
    let echo = match &args.echo {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("lstack-echo"),
    };
    if !echo.exists() {
        bail!(
            "{} not found: build it with cargo build --release -p lstack (or pass --echo)",
            echo.display()
        );
    }
    let duration = Duration::from_secs(args.duration.unwrap_or(if args.quick { 20 } else { 600 }));
    let max_stall = Duration::from_secs(args.max_stall);

    eprintln!("lstack-soak: reserving hugepages and creating the peer namespace...");
    let huge = hugepages::ensure(256).context("reserving 256 x 2 MiB hugepages")?;
    let topo = Topology::new(TopologyOptions {
        name_hint: "soak".into(),
        ..Default::default()
    })
    .context("creating the soak topology")?;
    let defaults = AfPacketEal::default();
    let eal = AfPacketEal {
        program: "lstack-soak".into(),
        framecnt: args.framecnt.unwrap_or(defaults.framecnt),
        blocksz: args.blocksz.unwrap_or(defaults.blocksz),
        framesz: args.framesz.unwrap_or(defaults.framesz),
        ..defaults
    };
    let conf = LstackConf::write(&topo, &huge, &eal, "lstack-soak", |c| {
        if let Some(n) = args.nic_rxqueue_size {
            c.nic_rxqueue_size = n;
        }
    })?;
    let run_dir = std::env::temp_dir().join(format!("lstack-soak-{}-run", std::process::id()));
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;

    let result = soak(
        &args, &topo, &echo, &conf, &eal, &run_dir, duration, max_stall,
    );

    let _ = std::fs::remove_dir_all(&run_dir);
    let _ = conf.remove();
    topo.teardown().context("removing the soak topology")?;
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    if !report.verdict.ok {
        bail!("FAILED: {}", report.verdict.failures.join("; "));
    }
    Ok(())
}

/// Starts lstack-echo, loads it, stops it and builds the report.
#[allow(clippy::too_many_arguments)]
fn soak(
    args: &Args,
    topo: &Topology,
    echo: &Path,
    conf: &LstackConf,
    eal: &AfPacketEal,
    run_dir: &Path,
    duration: Duration,
    max_stall: Duration,
) -> Result<Report> {
    let mut server = ChildGuard::spawn(
        Command::new(echo)
            .arg("--config")
            .arg(&conf.path)
            .args([
                "--port",
                &ECHO_PORT.to_string(),
                "--buffer",
                &args.echo_buffer.to_string(),
            ])
            .env("GAZELLE_RUN_DIR", run_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )?;
    server
        .wait_for_output("lstack-echo: echoing", Duration::from_secs(60))
        .context("starting lstack-echo")?;
    let target = SocketAddr::new(IpAddr::V4(topo.stack_ip4), ECHO_PORT);
    topo.wait_connectable(target, &mut server, Duration::from_secs(30))?;
    let socket = gazelle_ctl_proto::paths::lstack_socket(
        run_dir,
        &conf.config.unix_prefix,
        IpAddr::V4(topo.stack_ip4),
    );

    interrupt::install()?;

    let lstack_before = lstack_stats(&socket).context("asking lstack-echo for its counters")?;
    let mib_before = lstack_snmp(&socket).context("asking lstack-echo for its MIB counters")?;
    let kernel_before = KernelSnapshot::read(topo)?;
    let machine_before = MachineCpu::read()?;
    let cpu = CpuWindow::start(&[server.id(), std::process::id()])?;
    let window_start = Instant::now();

    let load = tcp::TcpLoad {
        target,
        connections: args.connections,
        threads: args.threads,
        window: args.window,
        seed: args.seed,
        run_for: duration,
        drain_limit: max_stall + Duration::from_secs(5),
        flip_byte: args.flip_byte,
    };
    let probes = udp::UdpProbes {
        target,
        rate: args.udp_rate,
        seed: pattern::mix(args.seed ^ 0x5544_5000),
        run_for: duration,
        grace: Duration::from_secs(2),
    };
    let live = Live::default();
    eprintln!(
        "lstack-soak: {} connections and {} UDP probes/s for {} s...",
        args.connections,
        args.udp_rate,
        duration.as_secs()
    );
    let mut server_died = None;
    let (conns, udp, streamed) = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            topo.in_netns(|| -> Result<_> {
                let streams = tcp::connect(&load)?;
                let started = Instant::now();
                std::thread::scope(|s| {
                    let probes = s.spawn(|| udp::run(&probes, &live));
                    let conns = tcp::run(&load, streams, &live);
                    let streamed = started.elapsed().min(duration);
                    let udp = probes
                        .join()
                        .unwrap_or_else(|p| std::panic::resume_unwind(p))?;
                    Ok((conns, udp, streamed))
                })
            })?
        });
        let mut last = (Instant::now(), 0u64);
        let mut next_line = Instant::now() + PROGRESS_EVERY;
        while !worker.is_finished() {
            std::thread::sleep(Duration::from_millis(200));
            if interrupt::interrupted() {
                live.abort.store(true, Ordering::SeqCst);
            }
            if server_died.is_none() {
                if let Ok(Some(status)) = server.try_wait() {
                    server_died = Some(format!(
                        "lstack-echo exited ({status}) during the soak: {}",
                        server.stderr_so_far()
                    ));
                    live.abort.store(true, Ordering::SeqCst);
                }
            }
            if Instant::now() >= next_line {
                next_line += PROGRESS_EVERY;
                last = progress(&live, &socket, window_start, last, &lstack_before);
            }
        }
        worker
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })?;
    if let Some(why) = server_died {
        bail!(why);
    }

    let lstack_after = lstack_stats(&socket).context("asking lstack-echo for its counters")?;
    let mib_after = lstack_snmp(&socket).context("asking lstack-echo for its MIB counters")?;
    let kernel_after = KernelSnapshot::read(topo)?;
    let machine = MachineCpu::read()?.since(&machine_before);
    let secs = cpu.seconds()?;
    let window = window_start.elapsed().as_secs_f64();

    // lstack-echo stops on SIGTERM (printing its counters).
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::SIGTERM,
    );
    let out = server.wait_with_output_timeout(Duration::from_secs(15))?;
    if !out.status.success() {
        eprintln!(
            "lstack-soak: lstack-echo exited with {} when stopped: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let tcp = report::tcp_report(&conns, streamed);
    let udp = report::udp_report(&udp);
    let verdict = report::verdict(&tcp, &udp, max_stall);
    let hz = 1.0 / lstack_bench::cpu::clock_ticks_per_sec();
    Ok(Report {
        settings: report::Settings {
            connections: args.connections,
            duration_s: duration.as_secs(),
            streamed_s: streamed.as_secs_f64(),
            threads: args.threads,
            window_bytes: args.window,
            udp_rate: args.udp_rate,
            seed: args.seed,
            max_stall_s: max_stall.as_secs(),
            af_packet_blocksz: eal.blocksz,
            af_packet_framesz: eal.framesz,
            af_packet_framecnt: eal.framecnt,
            nic_rxqueue_size: conf.config.nic_rxqueue_size,
            echo_buffer_bytes: args.echo_buffer,
        },
        tcp,
        udp,
        lstack: report::lstack_drops(
            &lstack_before,
            &lstack_after,
            snmp_since(&mib_before, &mib_after),
        ),
        kernel: report::kernel_drops(&kernel_before, &kernel_after),
        cpu: report::CpuReport {
            window_s: window,
            lstack_echo_s: secs[0],
            lstack_echo_cpus: secs[0] / window,
            load_generator_s: secs[1],
            load_generator_cpus: secs[1] / window,
            machine_interrupts_s: machine.interrupts as f64 * hz,
            machine_busy_share: machine.busy_share(),
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
        },
        verdict,
    })
}

/// Prints one progress line and returns the time and echoed bytes it was
/// computed at.
fn progress(
    live: &Live,
    socket: &Path,
    start: Instant,
    (last_at, last_echoed): (Instant, u64),
    lstack_before: &gazelle_ctl_proto::LstackStats,
) -> (Instant, u64) {
    let now = Instant::now();
    let echoed = live.tcp_echoed.load(Ordering::Relaxed);
    let gbit =
        (echoed - last_echoed) as f64 * 8.0 / now.duration_since(last_at).as_secs_f64() / 1e9;
    let missed = lstack_stats(socket).map_or("?".to_owned(), |s| {
        s.port
            .rx_missed
            .saturating_sub(lstack_before.port.rx_missed)
            .to_string()
    });
    eprintln!(
        "[{:>4} s] tcp {:.2} GB sent, {:.2} GB echoed, {gbit:.2} Gbit/s | udp {} sent, {} echoed | lstack rx_missed {missed}",
        now.duration_since(start).as_secs(),
        live.tcp_sent.load(Ordering::Relaxed) as f64 / 1e9,
        echoed as f64 / 1e9,
        live.udp_sent.load(Ordering::Relaxed),
        live.udp_echoed.load(Ordering::Relaxed),
    );
    (now, echoed)
}
