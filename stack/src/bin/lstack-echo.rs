//! lstack-echo: a TCP and UDP echo server on the user-space stack.
//!
//! Reads the lstack configuration (`--config`, else `LSTACK_CONF_PATH`, else
//! `/etc/gazelle/lstack.toml`), starts the stack, and echoes every byte it
//! receives on the TCP and UDP port given (default 7, the echo port), one
//! thread per TCP connection. Prints stack statistics on SIGINT/SIGTERM
//! or every `--stats` seconds.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{Context, Result};
use clap::Parser;
use lstack::{LstackConfig, Stack, StackOptions};

/// TCP/UDP echo server on lstack (kernel bypass over DPDK).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// lstack configuration file (TOML, or gazelle's lstack.conf syntax if it
    /// ends in .conf). Default: $LSTACK_CONF_PATH, else /etc/gazelle/lstack.toml.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Port to echo on (TCP and UDP).
    #[arg(long, short, default_value_t = 7)]
    port: u16,
    /// Print statistics every N seconds (0: only at exit).
    #[arg(long, default_value_t = 0)]
    stats: u64,
    /// Socket buffer size per direction, bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    buffer: usize,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = run(Args::parse()) {
        eprintln!("lstack-echo: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let config = match &args.config {
        Some(p) => LstackConfig::load(p),
        None => LstackConfig::load_from_env(),
    }
    .context("loading the lstack configuration")?;
    let mut opts = StackOptions::for_config(&config);
    opts.tcp_rx_buffer = args.buffer;
    opts.tcp_tx_buffer = args.buffer;
    let stack = Stack::start(&config, opts).context("starting lstack")?;

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [nix::sys::signal::SIGINT, nix::sys::signal::SIGTERM] {
        let s = Arc::clone(&stop);
        // A handler thread would be nicer; a flag polled below keeps it simple.
        signal_flag(sig, s);
    }

    // [::] without V6ONLY: IPv4 and IPv6 alike.
    let any = SocketAddr::new(IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED), args.port);
    let listener = stack
        .tcp_listen_dual(any, 4096, true)
        .context("listening")?;
    let udp = stack.udp_bind(any).context("binding UDP")?;
    println!(
        "lstack-echo: echoing TCP and UDP on port {} at {} (and {}); Ctrl-C stops",
        args.port,
        config.host_addr,
        config
            .host_addr6
            .map_or("no IPv6".to_owned(), |a| a.addr().to_string())
    );

    std::thread::Builder::new()
        .name("udp-echo".into())
        .spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(&buf[..n], from);
            }
        })?;
    std::thread::Builder::new()
        .name("tcp-accept".into())
        .spawn(move || {
            while let Ok((conn, _peer)) = listener.accept() {
                let _ = std::thread::Builder::new()
                    .name("tcp-echo".into())
                    .spawn(move || {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            match conn.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if conn.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                    });
            }
        })?;

    let mut ticks = 0u64;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        ticks += 1;
        if args.stats > 0 && ticks.is_multiple_of(args.stats * 5) {
            print_stats(&stack);
        }
    }
    print_stats(&stack);
    stack.shutdown();
    Ok(())
}

fn print_stats(stack: &Stack) {
    for i in 0..stack.threads() {
        let Some(s) = stack.thread_stats(i) else {
            continue;
        };
        let drops: Vec<String> = s
            .drops()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{}={n}", r.name()))
            .collect();
        println!(
            "thread {i}: rx {} pkts {} B, tx {} pkts {} B, tx_dropped {}, established {}, drops [{}]",
            s.rx_packets.get(),
            s.rx_bytes.get(),
            s.tx_packets.get(),
            s.tx_bytes.get(),
            s.tx_dropped.get(),
            s.tcp_established.get(),
            drops.join(" ")
        );
    }
    println!("connections open: {}", stack.tcp_connections());
}

static STOP_FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();

extern "C" fn on_signal(_: libc::c_int) {
    if let Some(f) = STOP_FLAG.get() {
        f.store(true, Ordering::Relaxed);
    }
}

fn signal_flag(sig: nix::sys::signal::Signal, flag: Arc<AtomicBool>) {
    let _ = STOP_FLAG.set(flag);
    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_signal),
        nix::sys::signal::SaFlags::SA_RESTART,
        nix::sys::signal::SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    #[allow(unsafe_code)]
    unsafe {
        let _ = nix::sys::signal::sigaction(sig, &action);
    }
}
