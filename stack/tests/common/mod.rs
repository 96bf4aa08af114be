//! Shared setup of the stack integration tests: a peer network namespace
//! joined by a veth pair, the stack as DPDK primary on the host end through
//! `net_af_packet`, real hugepages.

#![allow(dead_code)]

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream as KernelStream},
    time::{Duration, Instant},
};

use gazelle_config::lstack::LstackConfig;
use lstack::{Stack, StackOptions};
use netns_testbed::{hugepages, require_root, AfPacketEal, Topology, TopologyOptions};

/// A running stack on its own topology.
pub struct Env {
    // Dropped in this order: the stack closes its port (an af_xdp port
    // takes its XDP program off the veth) before the topology goes.
    pub stack: Stack,
    pub topo: Topology,
    pub config: LstackConfig,
}

/// The lstack configuration for `topo`, with `dpdk_args` for its af_packet port.
pub fn config_for(topo: &Topology, name: &str, eal: &AfPacketEal) -> LstackConfig {
    let huge = hugepages::ensure(256).expect("reserving 256 x 2 MiB hugepages");
    let prefix = hugepages::dpdk_file_prefix(name);
    netns_testbed::lstack_config(topo, &huge, eal, &prefix).expect("the test configuration")
}

/// Builds a topology and starts a stack on it.
pub fn start(name: &str, tune: impl FnOnce(&mut LstackConfig, &mut StackOptions)) -> Env {
    start_with(name, &AfPacketEal::default(), tune)
}

/// Like [`start`], with explicit af_packet EAL settings (e.g. several queue pairs).
pub fn start_with(
    name: &str,
    eal: &AfPacketEal,
    tune: impl FnOnce(&mut LstackConfig, &mut StackOptions),
) -> Env {
    let options = TopologyOptions {
        name_hint: name.to_owned(),
        ..Default::default()
    };
    start_on(options, eal, tune)
}

/// Like [`start`], on a topology built from `options`.
pub fn start_topology(
    options: TopologyOptions,
    tune: impl FnOnce(&mut LstackConfig, &mut StackOptions),
) -> Env {
    start_on(options, &AfPacketEal::default(), tune)
}

fn start_on(
    options: TopologyOptions,
    eal: &AfPacketEal,
    tune: impl FnOnce(&mut LstackConfig, &mut StackOptions),
) -> Env {
    require_root();
    let name = options.name_hint.clone();
    let topo = Topology::new(options).expect("creating the test topology");
    let mut config = config_for(&topo, &name, eal);
    let mut opts = StackOptions::for_config(&config);
    tune(&mut config, &mut opts);
    let stack = Stack::start(&config, opts).expect("starting lstack on the af_packet port");
    Env {
        topo,
        stack,
        config,
    }
}

/// Sends raw frames from the peer's end of the veth through an AF_PACKET
/// socket.
pub fn send_raw(topo: &Topology, frames: &[Vec<u8>]) {
    let ifname = topo.peer_if.clone();
    topo.in_netns(move || {
        // SAFETY: plain socket syscalls on a fresh fd with valid buffers.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            let name = std::ffi::CString::new(ifname).unwrap();
            let index = libc::if_nametoindex(name.as_ptr());
            assert!(index > 0);
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = index as i32;
            addr.sll_halen = 6;
            for f in frames {
                let n = libc::sendto(
                    fd,
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(
                    n,
                    f.len() as isize,
                    "sendto: {}",
                    std::io::Error::last_os_error()
                );
            }
            libc::close(fd);
        }
    })
    .unwrap();
}

/// The Internet checksum of `b`.
pub fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Deterministic test data.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sends `data` on a kernel stream while reading the echo back on a clone,
/// and returns what came back.
pub fn kernel_echo_roundtrip(stream: KernelStream, data: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = stream.try_clone()?;
    let len = data.len();
    let handle = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let mut got = Vec::with_capacity(len);
        let mut buf = vec![0u8; 65536];
        while got.len() < len {
            let n = match reader.read(&mut buf) {
                // net_tap signals the process (SIGIO) for its queues.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => r?,
            };
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        Ok(got)
    });
    let mut w = stream;
    for chunk in data.chunks(16 * 1024) {
        w.write_all(chunk)?;
    }
    let got = handle.join().expect("reader thread panicked")?;
    w.shutdown(std::net::Shutdown::Write)?;
    Ok(got)
}

/// Connects kernel sockets from inside the peer namespace.
pub fn connect_from_peer(topo: &Topology, to: SocketAddr, count: usize) -> Vec<KernelStream> {
    topo.in_netns(|| {
        (0..count)
            .map(|i| {
                KernelStream::connect_timeout(&to, Duration::from_secs(10))
                    .unwrap_or_else(|e| panic!("kernel client {i} connecting to {to}: {e}"))
            })
            .collect()
    })
    .expect("entering the peer namespace")
}

/// Polls `f` until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Starts an echo server on the stack: one thread per connection.
pub fn spawn_stack_echo(stack: &Stack, port: u16) {
    // [::] without V6ONLY: IPv4 and IPv6 clients alike.
    let any6 = SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), port);
    let listener = stack
        .tcp_listen_dual(any6, 1024, true)
        .expect("listening on the stack");
    std::thread::spawn(move || {
        while let Ok((conn, _)) = listener.accept() {
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 32 * 1024];
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
                let _ = conn.shutdown(std::net::Shutdown::Write);
            });
        }
    });
}

/// Pings `addr` from the peer (`-6` chosen by the address family) until
/// `count` replies came back; panics with ping's output if they do not
/// within 10 s.
pub fn ping(topo: &Topology, addr: std::net::IpAddr, count: u32) {
    ping_from(topo, addr, count, None)
}

/// Like [`ping`], with a source address of the peer.
pub fn ping_from(
    topo: &Topology,
    addr: std::net::IpAddr,
    count: u32,
    source: Option<std::net::IpAddr>,
) {
    let mut args = vec!["ping".to_owned()];
    if addr.is_ipv6() {
        args.push("-6".into());
    }
    // `count` replies within 10 s, not `count` replies to `count` requests:
    // the stack answers ping, but a request may be lost like any frame (at
    // a full receive ring while the other tests of the binary load the
    // same link, counted there as rx_missed), and ping then sends another.
    args.extend(["-c", &count.to_string(), "-i", "0.2", "-w", "10"].map(String::from));
    if let Some(s) = source {
        args.extend(["-I".to_owned(), s.to_string()]);
    }
    args.push(addr.to_string());
    if let Err(e) = topo.run(&args) {
        panic!("{}: {e:#}", args.join(" "));
    }
}

/// Runs one echo round trip of `size` bytes per stream, all in parallel,
/// and checks every byte; returns the seconds it took.
pub fn echo_in_parallel(streams: Vec<KernelStream>, size: usize, seed: u64) -> f64 {
    let start = Instant::now();
    let handles: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            std::thread::spawn(move || {
                let data = pattern(seed + i as u64, size);
                let got =
                    kernel_echo_roundtrip(s, &data).unwrap_or_else(|e| panic!("client {i}: {e}"));
                assert_eq!(got.len(), data.len(), "client {i}: echoed length");
                assert!(got == data, "client {i}: echoed bytes differ");
            })
        })
        .collect();
    for h in handles {
        h.join().expect("echo client failed");
    }
    start.elapsed().as_secs_f64()
}

/// CPU ticks (user + system) of this process's threads named `lstack-stack*`.
pub fn stack_thread_ticks() -> u64 {
    let mut total = 0;
    let mut threads = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("lstack-stack") {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        // Fields after the command name's closing parenthesis: state is
        // field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(") ").unwrap().1;
        let f: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|x| x.parse().unwrap())
            .collect();
        total += f[0] + f[1];
        threads += 1;
    }
    assert!(threads > 0, "no lstack-stack thread found");
    total
}

pub fn ticks_per_sec() -> u64 {
    // SAFETY: sysconf reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).unwrap_or(100).max(1)
}

/// Over a 3 s window with nothing to do, the stack threads of this process
/// are given under 4 % of one CPU's ticks. A spinning thread takes every
/// tick; one that sleeps on its queue none or a few (timers, the spin
/// before each sleep); one that cannot sleep on the queue and naps 200 µs
/// between polls took 26 of 300 on af_xdp, and fails.
pub fn assert_idle_thread_sleeps(medium: &str) {
    let window = Duration::from_secs(3);
    let before = stack_thread_ticks();
    std::thread::sleep(window);
    let used = stack_thread_ticks() - before;
    let available = ticks_per_sec() * window.as_secs();
    println!("idle stack thread on {medium}: {used} of {available} CPU ticks");
    assert!(
        used * 25 < available,
        "the idle stack thread on {medium} used {used} of {available} ticks: it does not sleep"
    );
}
