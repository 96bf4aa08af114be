//! lstack-demo: the lstack echo server on a throw-away test topology.
//!
//! Creates a network namespace `lstack-demo` as a peer host joined by a veth
//! pair, reserves hugepages, writes an lstack configuration for the veth's
//! DPDK end, runs `lstack-echo` (found next to this binary) on it, and tells
//! the operator how to reach it. Ctrl-C stops the server and removes the
//! namespace and veth.

use std::{
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use clap::Parser;
use netns_testbed::{hugepages, AfPacketEal, Topology, TopologyOptions};

/// Run the lstack echo server on a demo topology (needs root).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Echo port (TCP and UDP).
    #[arg(long, default_value_t = 7)]
    port: u16,
    /// Stack thread CPU list (gazelle's num_cpus).
    #[arg(long, default_value = "1")]
    num_cpus: String,
    /// Print statistics every N seconds (0: only at exit).
    #[arg(long, default_value_t = 10)]
    stats: u64,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("lstack-demo: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "needs root: it creates a network namespace and reserves hugepages (run it with sudo)"
        );
    }
    let echo = std::env::current_exe()?.with_file_name("lstack-echo");
    if !echo.exists() {
        bail!(
            "{} not found: build the workspace first (cargo build --release)",
            echo.display()
        );
    }
    eprintln!("lstack-demo: reserving hugepages and creating the peer namespace...");
    let huge = hugepages::ensure(256).context("reserving 256 x 2 MiB hugepages")?;
    let topo = Topology::new(TopologyOptions {
        name_hint: "lstack-demo".into(),
        ..Default::default()
    })
    .context("creating the demo topology")?;
    let prefix = hugepages::dpdk_file_prefix("lstack_demo");
    let eal = AfPacketEal {
        program: "lstack".into(),
        ..Default::default()
    };
    let mut cfg = netns_testbed::lstack_config(&topo, &huge, &eal, &prefix)?;
    cfg.num_cpus = args.num_cpus.parse().context("--num-cpus")?;
    cfg.validate()?;
    let conf: PathBuf =
        std::env::temp_dir().join(format!("lstack-demo-{}.toml", std::process::id()));
    std::fs::write(&conf, cfg.to_toml_string())
        .with_context(|| format!("writing {}", conf.display()))?;

    let ns = &topo.ns;
    let ip4 = topo.stack_ip4;
    let ip6 = topo.stack_ip6;
    let p = args.port;
    println!(
        "\nlstack-demo: lstack (kernel bypass, DPDK net_af_packet on {host_if}) will answer on {ip4} and {ip6}.\n\
         The peer host is the network namespace {ns}. Try, in another shell:\n\
         \x20 sudo ip netns exec {ns} ping -c 3 {ip4}\n\
         \x20 sudo ip netns exec {ns} ping -6 -c 3 {ip6}\n\
         \x20 echo hello | sudo ip netns exec {ns} nc -N {ip4} {p}\n\
         \x20 echo hello | sudo ip netns exec {ns} nc -u -w1 {ip4} {p}\n\
         Configuration: {conf}\nCtrl-C stops the server and removes the namespace.\n",
        host_if = topo.host_if,
        conf = conf.display()
    );

    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_signal),
        nix::sys::signal::SaFlags::empty(),
        nix::sys::signal::SigSet::empty(),
    );
    for sig in [nix::sys::signal::SIGINT, nix::sys::signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        #[allow(unsafe_code)]
        unsafe {
            nix::sys::signal::sigaction(sig, &action).context("installing signal handlers")?;
        }
    }
    let mut child = Command::new(&echo)
        .args([
            "--config",
            conf.to_str().unwrap_or_default(),
            "--port",
            &p.to_string(),
            "--stats",
            &args.stats.to_string(),
        ])
        .spawn()
        .with_context(|| format!("starting {}", echo.display()))?;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if STOP.load(Ordering::Relaxed) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::SIGTERM,
            );
            break child.wait().ok();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = std::fs::remove_file(&conf);
    eprintln!("lstack-demo: removing namespace {ns}");
    topo.teardown()?;
    let _ = hugepages::remove_dpdk_runtime_dir(&prefix);
    match status {
        Some(s) if s.success() || STOP.load(Ordering::Relaxed) => Ok(()),
        Some(s) => bail!("lstack-echo exited with {s}"),
        None => Ok(()),
    }
}
