//! lstack-rr: TCP request/response latency, the plain POSIX way.
//!
//! `lstack-rr server PORT` echoes fixed-size messages on every connection;
//! `lstack-rr client ADDR --size 64 --count 20000` sends a message, waits for
//! its echo, repeats, and prints `p50_us p99_us p99.9_us mean_us rps` on one line.
//! It uses only std's blocking sockets, so it runs unchanged on the kernel
//! and under `LD_PRELOAD=liblstack.so`.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Instant,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

/// TCP request/response latency (one connection, fixed-size messages).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Echo every message back (all addresses, one thread per connection).
    Server {
        /// TCP port.
        port: u16,
        /// Message size (must match the client's).
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// Measure round trips against a server.
    Client {
        /// Server address, e.g. 10.88.0.2:7070.
        addr: SocketAddr,
        /// Message size in bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Round trips measured.
        #[arg(long, default_value_t = 20000)]
        count: usize,
        /// Round trips run first and not measured.
        #[arg(long, default_value_t = 1000)]
        warmup: usize,
    },
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("lstack-rr: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    match args.mode {
        Mode::Server { port, size } => {
            let l = TcpListener::bind(("0.0.0.0", port))
                .with_context(|| format!("binding port {port}"))?;
            println!("listening on {port}");
            for conn in l.incoming() {
                let mut c = conn.context("accept")?;
                std::thread::spawn(move || {
                    let _ = c.set_nodelay(true);
                    let mut buf = vec![0u8; size];
                    while c.read_exact(&mut buf).is_ok() {
                        if c.write_all(&buf).is_err() {
                            break;
                        }
                    }
                });
            }
            Ok(())
        }
        Mode::Client {
            addr,
            size,
            count,
            warmup,
        } => {
            if size == 0 || count == 0 {
                bail!("--size and --count must be positive");
            }
            let mut c =
                TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
            c.set_nodelay(true)?;
            let msg = vec![0x5au8; size];
            let mut back = vec![0u8; size];
            let mut rtts = Vec::with_capacity(count);
            let start = Instant::now();
            for i in 0..warmup + count {
                let t = Instant::now();
                c.write_all(&msg)?;
                c.read_exact(&mut back)?;
                if i >= warmup {
                    rtts.push(t.elapsed().as_secs_f64() * 1e6);
                }
            }
            let total = start.elapsed().as_secs_f64();
            if back != msg {
                bail!("echo differs from what was sent");
            }
            rtts.sort_by(f64::total_cmp);
            let pct = |p: f64| rtts[((rtts.len() as f64 * p) as usize).min(rtts.len() - 1)];
            let mean = rtts.iter().sum::<f64>() / rtts.len() as f64;
            println!(
                "{:.1} {:.1} {:.1} {:.1} {:.0}",
                pct(0.50),
                pct(0.99),
                pct(0.999),
                mean,
                (warmup + count) as f64 / total
            );
            Ok(())
        }
    }
}
