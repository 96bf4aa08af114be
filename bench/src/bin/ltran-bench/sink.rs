//! The sink: an instance registered with ltran exactly as lstack registers
//! (Hello, a DPDK secondary of ltran's file prefix, Register on a
//! connection kept open as the lease), which drains its receive rings and
//! counts frames, doing nothing else with them.
//!
//! Driven over stdin like the generator: `count SEQ` answers
//! `@@ count SEQ FRAMES BYTES T_NS`; `quit` or end of input exits. Prints
//! `@@ registered SLOT TAG RINGS` once registered. When ltran closes the
//! registration it exits with status 75, saying so.

use std::{
    io::BufReader,
    net::Ipv4Addr,
    os::unix::net::UnixStream,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{bail, Context, Result};
use dpdk::{Eal, MbufBatch, Ring};
use gazelle_ctl_proto::{client, Registration, Request, Response};

use crate::gen::{monotonic_ns, reply, serve_stdin};

/// Sink options (hidden subcommand `sink`).
#[derive(Debug, clap::Args)]
pub struct SinkArgs {
    /// ltran's control socket.
    #[arg(long)]
    pub socket: PathBuf,
    /// The address to register (inside ltran's dispatch subnet).
    #[arg(long)]
    pub ip: Ipv4Addr,
    /// Ring pairs (stack threads) to register.
    #[arg(long, default_value_t = 1)]
    pub threads: u16,
    /// Microseconds to nap when every ring is empty (0: spin).
    #[arg(long, default_value_t = 20)]
    pub nap_us: u64,
    /// EAL arguments (after `--`); `--proc-type` and `--file-prefix` are added.
    #[arg(last = true)]
    pub eal: Vec<String>,
}

#[derive(Debug, Default)]
struct Shared {
    quit: AtomicBool,
    frames: AtomicU64,
    bytes: AtomicU64,
}

pub fn run(args: SinkArgs) -> Result<()> {
    let hello = match client::request(
        &args.socket,
        "ltran",
        Request::Hello,
        Duration::from_secs(5),
    )
    .context("sink: asking ltran for its file prefix")?
    {
        Response::Hello(h) => h,
        other => bail!("sink: ltran answered Hello with {other:?}"),
    };
    let mut eal_args = vec!["ltran-bench-sink".to_owned()];
    eal_args.extend(args.eal.iter().cloned());
    eal_args.push("--proc-type=secondary".into());
    eal_args.push(format!("--file-prefix={}", hello.file_prefix));
    let eal = Eal::init(&eal_args).context("sink: attaching to ltran as a DPDK secondary")?;
    // Frees must clear the owner tag, or ltran's reclaim would see our
    // freed mbufs as held (as lstack does: enable first, then the tag).
    dpdk::owner::enable(&eal, 0).context("sink: mbuf owner tags")?;

    let conn = UnixStream::connect(&args.socket)
        .with_context(|| format!("sink: connecting to {}", args.socket.display()))?;
    let reg = Registration {
        ipv4: args.ip,
        ipv6: None,
        mac: hello.bond_mac.clone(),
        threads: args.threads,
        process: "ltran-bench-sink".into(),
    };
    client::send(&conn, &Request::Register(reg)).context("sink: registering")?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let registered = match client::receive(&mut reader).context("sink: reading ltran's answer")? {
        Some(Response::Registered(r)) => r,
        Some(Response::Error { message }) => {
            bail!("sink: ltran refused the registration: {message}")
        }
        other => bail!("sink: ltran answered the registration with {other:?}"),
    };
    dpdk::owner::enable(&eal, registered.owner_tag).context("sink: mbuf owner tags")?;
    let mut rings = Vec::new();
    for pair in &registered.rings {
        rings.push(
            Ring::lookup(&eal, &pair.rx)
                .with_context(|| format!("sink: looking up ring {}", pair.rx))?,
        );
    }
    // The lease: ltran says nothing more on it; its end means ltran is gone.
    std::thread::Builder::new()
        .name("sink-lease".into())
        .spawn(move || {
            let _keep = conn;
            while let Ok(Some(_)) = client::receive(&mut reader) {}
            eprintln!("ltran-bench sink: ltran closed the registration; exiting");
            std::process::exit(75);
        })?;

    let shared = Arc::new(Shared::default());
    {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("sink-control".into())
            .spawn(move || control(&shared))?;
    }
    reply(&format!(
        "registered {} {} {}",
        registered.slot,
        registered.owner_tag,
        rings.len()
    ));

    let (mut frames, mut bytes) = (0u64, 0u64);
    let nap = Duration::from_micros(args.nap_us);
    while !shared.quit.load(Ordering::Relaxed) {
        let mut got = 0;
        for ring in &mut rings {
            let mut batch = MbufBatch::new();
            let n = ring.dequeue(&mut batch);
            if n > 0 {
                got += n;
                for i in 0..n {
                    bytes += batch.get(i).map_or(0, |d| d.len() as u64);
                }
            }
            // Dropping the batch frees the frames into ltran's pool.
        }
        if got > 0 {
            frames += got as u64;
            shared.frames.store(frames, Ordering::Relaxed);
            shared.bytes.store(bytes, Ordering::Relaxed);
        } else if !nap.is_zero() {
            std::thread::sleep(nap);
        }
    }
    Ok(())
}

fn control(shared: &Shared) {
    let count = || {
        format!(
            "{} {} {}",
            shared.frames.load(Ordering::Relaxed),
            shared.bytes.load(Ordering::Relaxed),
            monotonic_ns()
        )
    };
    serve_stdin(count, |_| false);
    shared.quit.store(true, Ordering::Relaxed);
}
