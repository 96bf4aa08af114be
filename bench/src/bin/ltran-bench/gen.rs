//! The traffic generator: a DPDK primary of its own owning the server end
//! of a `net_memif` pair, sending UDP frames as fast as the port takes them.
//!
//! Driven over stdin, answering on stdout with lines that start with `@@ `
//! (DPDK logs to stdout too):
//! - `go SIZE`: send SIZE-byte frames (source port cycling over `--flows`);
//! - `pause`: stop sending;
//! - `count SEQ`: answers `@@ count SEQ SENT RECEIVED T_NS BURSTS FULL`
//!   (frames sent and received so far, CLOCK_MONOTONIC nanoseconds,
//!   transmit bursts tried and how many of them found the memif ring full:
//!   a high share means the receiving side is the bottleneck);
//! - `quit`, or end of input: exit.
//!
//! Prints `@@ ready` once the port is started and `@@ link-up` once the
//! memif peer has connected.

use std::{
    io::{BufRead, Write},
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{bail, Context, Result};
use dpdk::{Eal, MbufBatch, Mempool, Port, PortConfig};

use crate::frame::{self, Flow};

/// Generator options (hidden subcommand `gen`).
#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// EAL arguments (after `--`).
    #[arg(last = true)]
    pub eal: Vec<String>,
    /// Destination MAC of the frames.
    #[arg(long)]
    pub dst_mac: String,
    /// Source IP.
    #[arg(long)]
    pub src_ip: Ipv4Addr,
    /// Destination IP.
    #[arg(long)]
    pub dst_ip: Ipv4Addr,
    /// UDP destination port.
    #[arg(long, default_value_t = 9)]
    pub dst_port: u16,
    /// Distinct UDP source ports, cycled through.
    #[arg(long, default_value_t = 1024)]
    pub flows: u16,
}

#[derive(Debug, Default)]
struct Shared {
    /// Frame size to send; 0 = paused.
    size: AtomicUsize,
    quit: AtomicBool,
    sent: AtomicU64,
    received: AtomicU64,
    bursts: AtomicU64,
    full: AtomicU64,
}

pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("MAC address {s:?}"))?;
    parts
        .try_into()
        .map_err(|_| anyhow::anyhow!("MAC address {s:?}: not six bytes"))
}

/// Monotonic clock in nanoseconds (comparable between processes).
pub fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: t is a valid timespec to write into; CLOCK_MONOTONIC exists.
    let ret = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    assert_eq!(ret, 0, "CLOCK_MONOTONIC is always readable");
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Prints one `@@` reply line and flushes.
pub fn reply(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "@@ {line}");
    let _ = out.flush();
}

pub fn run(args: GenArgs) -> Result<()> {
    let mut eal_args = vec!["ltran-bench-gen".to_owned()];
    eal_args.extend(args.eal.iter().cloned());
    let eal = Eal::init(&eal_args).context("generator: starting the DPDK EAL")?;
    if Port::count(&eal) != 1 {
        bail!(
            "generator: expected exactly one DPDK port (the memif server), found {}",
            Port::count(&eal)
        );
    }
    let pool = Arc::new(
        Mempool::create(
            &eal,
            "gen_pool",
            4095,
            256,
            dpdk::mempool::DEFAULT_DATA_ROOM,
            -1,
        )
        .context("generator: creating its mbuf pool")?,
    );
    let config = PortConfig {
        rx_queues: 1,
        tx_queues: 1,
        rx_desc: 1024,
        tx_desc: 1024,
        promiscuous: false,
        checksum_offload: false,
        rx_interrupts: false,
        vlan_offload: false,
    };
    let mut port = Port::open(&eal, 0, &config, Arc::clone(&pool))
        .context("generator: opening the memif server port")?;
    let (mut rx, mut tx) = port
        .take_queues()
        .into_iter()
        .next()
        .context("generator: the port has no queue pair")?;
    let flow = Flow {
        dst_mac: parse_mac(&args.dst_mac)?,
        src_mac: port.mac(),
        src_ip: args.src_ip,
        dst_ip: args.dst_ip,
        dst_port: args.dst_port,
    };
    let flows = args.flows.max(1);

    let shared = Arc::new(Shared::default());
    {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("gen-control".into())
            .spawn(move || control(&shared))?;
    }
    reply("ready");

    let mut link_up = false;
    let mut size = 0usize;
    let mut template = Vec::new();
    let mut pending = MbufBatch::new();
    let mut seq: u16 = 0;
    let (mut sent, mut received, mut bursts, mut full) = (0u64, 0u64, 0u64, 0u64);
    while !shared.quit.load(Ordering::Relaxed) {
        let want = shared.size.load(Ordering::Relaxed);
        if want != size {
            size = want;
            pending = MbufBatch::new();
            if size != 0 {
                template = frame::udp_frame(&flow, size, 0);
            }
        }
        let mut incoming = MbufBatch::new();
        let n = rx.rx_burst(&mut incoming);
        if n > 0 {
            received += n as u64;
            shared.received.store(received, Ordering::Relaxed);
        }
        drop(incoming);
        if size == 0 || !link_up {
            if !link_up && port.link().up {
                link_up = true;
                reply("link-up");
            }
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        while !pending.is_full() {
            let Some(mut m) = pool.alloc() else { break };
            let Some(buf) = m.append(size) else {
                bail!("generator: an mbuf has no room for {size} bytes");
            };
            buf.copy_from_slice(&template);
            let sport = 1024 + seq % flows;
            seq = seq.wrapping_add(1);
            buf[frame::SPORT_OFFSET..frame::SPORT_OFFSET + 2].copy_from_slice(&sport.to_be_bytes());
            if pending.push(m).is_err() {
                break;
            }
        }
        let n = tx.tx_burst(&mut pending);
        bursts += 1;
        if !pending.is_empty() {
            full += 1;
        }
        sent += n as u64;
        shared.sent.store(sent, Ordering::Relaxed);
        shared.bursts.store(bursts, Ordering::Relaxed);
        shared.full.store(full, Ordering::Relaxed);
    }
    drop(pending);
    Ok(())
}

/// Reads commands from stdin until `quit` or end of input, answering
/// `count SEQ` with `@@ count SEQ ` and `count()`'s numbers and passing
/// any other command to `other` (which answers false if it does not know it).
pub fn serve_stdin(count: impl Fn() -> String, mut other: impl FnMut(&[&str]) -> bool) {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["count", seq] => reply(&format!("count {seq} {}", count())),
            ["quit"] => break,
            w if other(w) => {}
            _ => reply(&format!("error unknown command {line:?}")),
        }
    }
}

fn control(shared: &Shared) {
    let count = || {
        format!(
            "{} {} {} {} {}",
            shared.sent.load(Ordering::Relaxed),
            shared.received.load(Ordering::Relaxed),
            monotonic_ns(),
            shared.bursts.load(Ordering::Relaxed),
            shared.full.load(Ordering::Relaxed)
        )
    };
    serve_stdin(count, |words| {
        match words {
            ["go", size] => match size.parse::<usize>() {
                Ok(s) if (frame::MIN_FRAME..=frame::MAX_FRAME).contains(&s) => {
                    shared.size.store(s, Ordering::Relaxed);
                    reply(&format!("going {s}"));
                }
                _ => reply(&format!(
                    "error frame size {size} outside {}..={}",
                    frame::MIN_FRAME,
                    frame::MAX_FRAME
                )),
            },
            ["pause"] => {
                shared.size.store(0, Ordering::Relaxed);
                reply("paused");
            }
            _ => return false,
        }
        true
    });
    shared.quit.store(true, Ordering::Relaxed);
}
