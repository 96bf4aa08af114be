//! `ltran-test-instance`: an instance for ltran's integration tests, not a
//! program to deploy. It registers with ltran exactly as lstack does
//! (Hello, a DPDK secondary of ltran's file prefix, Register on a
//! connection kept open as the lease), drains its receive rings, and does
//! what its stdin says, so a test can act as a misbehaving instance:
//!
//! - `send HEX`: puts the frame (hex bytes, Ethernet header first) on its
//!   first transmit ring, in an mbuf of ltran's transmit pool; answers
//!   `@@ sent N` (N: frames the ring took, 0 or 1);
//! - `listen IP PORT`: sends a listen event on the lease; answers
//!   `@@ listening`;
//! - `count`: answers `@@ count FRAMES` (frames taken off its rings);
//! - `quit` or end of input: exits.
//!
//! Prints `@@ registered SLOT TAG` once registered, and exits with status
//! 75 when ltran closes the lease.

use std::{
    io::{BufRead, BufReader, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::net::UnixStream,
    path::PathBuf,
    sync::mpsc,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use clap::Parser;
use dpdk::{Eal, MbufBatch, Mempool, Ring};
use gazelle_ctl_proto::{client, ListenAddr, Registration, Request, Response};

/// An instance that registers with ltran like lstack and sends what it is
/// told to (for ltran's tests).
#[derive(Debug, Parser)]
struct Args {
    /// ltran's control socket.
    #[arg(long)]
    socket: PathBuf,
    /// The IPv4 address to register.
    #[arg(long)]
    ip: Ipv4Addr,
    /// The IPv6 address to register, if any.
    #[arg(long)]
    ip6: Option<Ipv6Addr>,
    /// The process name to claim in the registration.
    #[arg(long, default_value = "ltran-test-instance")]
    claim: String,
    /// EAL arguments (after `--`); `--proc-type` and `--file-prefix` are added.
    #[arg(last = true)]
    eal: Vec<String>,
}

fn reply(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "@@ {line}");
    let _ = out.flush();
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("ltran-test-instance: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let hello = match client::request(
        &args.socket,
        "ltran",
        Request::Hello,
        Duration::from_secs(5),
    )? {
        Response::Hello(h) => h,
        other => bail!("ltran answered Hello with {other:?}"),
    };
    let mut eal_args = vec!["ltran-test-instance".to_owned()];
    eal_args.extend(args.eal.iter().cloned());
    eal_args.push("--proc-type=secondary".into());
    eal_args.push(format!("--file-prefix={}", hello.file_prefix));
    let eal = Eal::init(&eal_args).context("attaching to ltran as a DPDK secondary")?;
    dpdk::owner::enable(&eal, 0)?;

    let conn = UnixStream::connect(&args.socket)?;
    let reg = Registration {
        ipv4: args.ip,
        ipv6: args.ip6,
        mac: hello.bond_mac,
        threads: 1,
        process: args.claim,
    };
    client::send(&conn, &Request::Register(reg))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let registered = match client::receive(&mut reader)? {
        Some(Response::Registered(r)) => r,
        Some(Response::Error { message }) => bail!("ltran refused the registration: {message}"),
        other => bail!("ltran answered the registration with {other:?}"),
    };
    dpdk::owner::enable(&eal, registered.owner_tag)?;
    let mut rx = Vec::new();
    for pair in &registered.rings {
        rx.push(Ring::lookup(&eal, &pair.rx)?);
    }
    let mut tx = Ring::lookup(&eal, &registered.rings[0].tx)?;
    let pool = Mempool::lookup(&eal, &registered.tx_pool)?;
    std::thread::spawn(move || {
        while let Ok(Some(_)) = client::receive(&mut reader) {}
        eprintln!("ltran-test-instance: ltran closed the registration; exiting");
        std::process::exit(75);
    });
    let (commands, incoming) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if commands.send(line).is_err() {
                break;
            }
        }
    });
    reply(&format!(
        "registered {} {}",
        registered.slot, registered.owner_tag
    ));

    let mut frames = 0u64;
    loop {
        let mut got = 0;
        for ring in &mut rx {
            // Dropping the batch frees the frames into ltran's pool.
            got += ring.dequeue(&mut MbufBatch::new());
        }
        frames += got as u64;
        let line = match incoming.try_recv() {
            Ok(l) => l,
            Err(mpsc::TryRecvError::Empty) => {
                if got == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
                continue;
            }
            Err(mpsc::TryRecvError::Disconnected) => return Ok(()),
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["send", hex] => {
                let bytes = decode_hex(hex).with_context(|| format!("send {hex}"))?;
                let mut m = pool.alloc().context("ltran's transmit pool is empty")?;
                m.append(bytes.len())
                    .context("frame larger than an mbuf")?
                    .copy_from_slice(&bytes);
                let mut batch = MbufBatch::new();
                let _ = batch.push(m);
                reply(&format!("sent {}", tx.enqueue(&mut batch)));
            }
            ["listen", ip, port] => {
                let addr = ListenAddr {
                    ip: ip.parse::<IpAddr>()?,
                    port: port.parse()?,
                };
                client::send(&conn, &Request::Listen(addr))?;
                reply("listening");
            }
            ["count"] => reply(&format!("count {frames}")),
            ["quit"] => return Ok(()),
            _ => bail!("unknown command {line:?}"),
        }
    }
}

fn decode_hex(hex: &str) -> Result<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        bail!("odd number of hex digits");
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).context("not hex"))
        .collect()
}
