//! What a peer or an application can make the stack hold is bounded, on a
//! real port (`net_af_packet` on a veth, the peer's kernel as the
//! network). Needs root; fails loudly without it.
//!
//! SYN floods from spoofed sources, with real kernel clients connecting
//! while the flood runs: the flood's sources never complete a handshake;
//! half of them are on the stack's own subnet but answer no ARP (the stack
//! can never send their SYN-ACK), half are behind the gateway (the SYN-ACK
//! leaves and nobody answers). Without a bound on half-open connections
//! they would hold the listener's backlog and `tcp_conn_count` for good.
//!
//! One stack serves every test of this file (one EAL per process).

mod common;

use std::{
    io::ErrorKind,
    net::{Ipv4Addr, SocketAddr, TcpStream as KernelStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        OnceLock,
    },
    time::Duration,
};

use common::{kernel_echo_roundtrip, pattern, send_raw, spawn_stack_echo, wait_until, Env};
use netns_testbed::TopologyOptions;

const PORT: u16 = 7100;

fn half_open(env: &Env) -> u64 {
    (0..env.stack.threads())
        .map(|i| env.stack.thread_stats(i).unwrap().half_open.get())
        .sum()
}

fn sum(env: &Env, f: impl Fn(&lstack::ThreadStats) -> u64) -> u64 {
    (0..env.stack.threads())
        .map(|i| f(env.stack.thread_stats(i).unwrap()))
        .sum()
}

/// A TCP SYN from `src`:`sport` to the stack, with correct checksums.
fn syn_frame(env: &Env, src: Ipv4Addr, sport: u16, seq: u32) -> Vec<u8> {
    let dst = env.topo.stack_ip4;
    let mut tcp = vec![0u8; 24];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&PORT.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = 6 << 4; // 24-byte header: one MSS option
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    tcp[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]); // MSS 1460
    let mut pseudo = Vec::with_capacity(12 + tcp.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 6, 0, tcp.len() as u8]);
    pseudo.extend_from_slice(&tcp);
    let sum = common::checksum(&pseudo);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());

    let total = (20 + tcp.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let sum = common::checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());

    let mut f = Vec::with_capacity(14 + total as usize);
    f.extend_from_slice(&env.stack.mac());
    f.extend_from_slice(&env.topo.peer_mac().unwrap().0);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&tcp);
    f
}

/// 2000 spoofed sources: 1000 on the stack's /16 that no host holds (no
/// ARP answer), 1000 behind the gateway (SYN-ACKs leave, nobody answers).
fn spoofed_syns(env: &Env, round: u32) -> Vec<Vec<u8>> {
    (0..2000u32)
        .map(|i| {
            let src = if i % 2 == 0 {
                Ipv4Addr::new(10, 88, 10 + (i / 500) as u8, (i / 2 % 250) as u8 + 1)
            } else {
                Ipv4Addr::new(10, 150, (i / 250) as u8, (i % 250) as u8 + 1)
            };
            let sport = 1024 + ((i * 7 + round * 13) % 60000) as u16;
            syn_frame(env, src, sport, i.wrapping_mul(2_654_435_761) ^ round)
        })
        .collect()
}

/// Sockets an application may open.
const UDP_LIMIT: u32 = 64;
/// `tcp_conn_count`, and the share of it handshakes may hold (a quarter).
const TCP_CONN_COUNT: u32 = 256;
const HALF_OPEN_LIMIT: u64 = TCP_CONN_COUNT as u64 / 4;

/// The tests of this file take turns: the flood would make the port lose
/// the other tests' frames.
fn turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        common::start_topology(
            TopologyOptions {
                name_hint: "limits".into(),
                prefix4: 16,
                ..Default::default()
            },
            |config, opts| {
                // A small table, so that the flood overfills it many times.
                config.tcp_conn_count = TCP_CONN_COUNT;
                config.udp_conn_count = UDP_LIMIT;
                opts.syn_recv_lifetime = Duration::from_secs(3);
            },
        )
    })
}

#[test]
fn a_spoofed_syn_flood_neither_locks_out_real_clients_nor_stays() {
    let _turn = turn();
    let env = env();
    spawn_stack_echo(&env.stack, PORT);
    let to = SocketAddr::new(env.topo.stack_ip4.into(), PORT);

    // The flood: 2000 sources, over and over, until the clients are done;
    // meanwhile real clients connect from the peer, one after another, and
    // each echoes its bytes. (A client SYN lost at a full receive ring is
    // sent again by the client's kernel; the connect timeout allows that.)
    let flooding = AtomicBool::new(true);
    let rounds: Vec<Vec<Vec<u8>>> = (0..4).map(|r| spoofed_syns(env, r)).collect();
    let (sent, connected) = std::thread::scope(|scope| {
        // At full speed, for at least 3 s (as the flood that once locked a
        // listener out for good) and as long as the clients take.
        let flood = scope.spawn(|| {
            let started = std::time::Instant::now();
            let mut sent = 0usize;
            let mut round = 0;
            while flooding.load(Ordering::Relaxed) || started.elapsed() < Duration::from_secs(3) {
                send_raw(&env.topo, &rounds[round % rounds.len()]);
                sent += 2000;
                round += 1;
            }
            sent
        });
        // Stops the flood however this thread leaves the scope (a failed
        // assertion too), or the scope would wait for it forever.
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Relaxed);
            }
        }
        let stop = Stop(&flooding);
        // The clients come once the flood filled the table.
        assert!(
            wait_until(Duration::from_secs(30), || half_open(env)
                >= HALF_OPEN_LIMIT
                || sum(env, |s| s.syn_challenges.get()) > 0),
            "the flood never filled the half-open table (half-open {})",
            half_open(env)
        );
        let mut connected = 0;
        for i in 0..30u64 {
            let stream = env
                .topo
                .in_netns(|| KernelStream::connect_timeout(&to, Duration::from_secs(20)))
                .unwrap()
                .unwrap_or_else(|e| {
                    panic!(
                        "real client {i} could not connect during the flood: {e} \
                         (half-open {}, challenges {} sent {} answered, refused at tcp_conn_count {})",
                        half_open(env),
                        sum(env, |s| s.syn_challenges.get()),
                        sum(env, |s| s.syn_challenges_answered.get()),
                        sum(env, |s| s.conn_limit_refused.get()),
                    )
                });
            let data = pattern(i, 4096);
            let got = kernel_echo_roundtrip(stream, &data).expect("echo during the flood");
            assert!(got == data, "client {i}: echoed bytes differ");
            connected += 1;
        }
        drop(stop);
        (flood.join().unwrap(), connected)
    });
    let (challenges, answered) = (
        sum(env, |s| s.syn_challenges.get()),
        sum(env, |s| s.syn_challenges_answered.get()),
    );
    let port = env.stack.port_stats().unwrap();
    println!(
        "flood: {sent} spoofed SYNs sent, {} received, {} lost at the port's ring; \
         {connected} real clients connected; {challenges} SYNs challenged, {answered} \
         challenges answered; half-open now {}",
        port.rx_packets,
        port.rx_missed,
        half_open(env)
    );
    assert!(
        challenges > 1000,
        "the flood never filled the half-open table: the test proves nothing"
    );
    // The real clients proved themselves; the spoofed sources never could.
    assert!(answered >= 1, "no client answered a challenge");
    assert!(
        answered <= connected,
        "{answered} challenges answered by {connected} clients: spoofed sources got through"
    );

    // After the flood every half-open connection goes within its lifetime.
    assert!(
        wait_until(Duration::from_secs(60), || half_open(env) == 0),
        "half-open connections stay after the flood: {} (expired so far {})",
        half_open(env),
        sum(env, |s| s.half_open_expired.get()),
    );
    assert!(sum(env, |s| s.half_open_expired.get()) > 0);
    // Nothing of the flood holds a place under tcp_conn_count any more:
    // the stack's live TCP sockets are at most the clients' leftovers
    // (TIME-WAIT), and new clients get in.
    assert!(
        wait_until(Duration::from_secs(60), || env.stack.tcp_connections() == 0),
        "TCP sockets still held: {}",
        env.stack.tcp_connections()
    );
    let streams = common::connect_from_peer(&env.topo, to, 10);
    common::echo_in_parallel(streams, 64 * 1024, 99);
}

/// UDP sockets are bounded by `udp_conn_count`: one more is refused with an
/// error that names the key (`ENOBUFS` through `liblstack.so`), and closing
/// one makes room again.
#[test]
fn udp_sockets_stop_at_udp_conn_count() {
    let _turn = turn();
    let env = env();
    let any = SocketAddr::from(([0, 0, 0, 0], 0));
    let mut open = Vec::new();
    let err = loop {
        match env.stack.udp_bind(any) {
            Ok(s) => open.push(s),
            Err(e) => break e,
        }
        assert!(
            open.len() <= UDP_LIMIT as usize,
            "{} UDP sockets opened with udp_conn_count = {UDP_LIMIT}",
            open.len()
        );
    };
    assert_eq!(open.len(), UDP_LIMIT as usize, "refused early: {err}");
    assert_eq!(err.kind(), ErrorKind::OutOfMemory, "{err}");
    assert!(
        err.to_string()
            .contains(&format!("udp_conn_count = {UDP_LIMIT}")),
        "{err}"
    );
    // Connected sockets count too.
    let peer = SocketAddr::new(env.topo.peer_ip4.into(), 9);
    let err = env.stack.udp_connect(40000, peer).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OutOfMemory, "{err}");
    open.pop();
    let again = env
        .stack
        .udp_connect(40000, peer)
        .expect("a slot was given back");
    drop(again);
    drop(open);
    env.stack.udp_bind(any).expect("every slot was given back");
}

/// A datagram that reaches a socket whose receive buffer is full is
/// dropped, and counted as Linux counts it (`RcvbufErrors`, `InErrors`),
/// not as delivered.
#[test]
fn datagrams_a_full_socket_drops_are_counted() {
    let _turn = turn();
    let env = env();
    const PORT: u16 = 7200;
    let sock = env
        .stack
        .udp_bind(SocketAddr::from(([0, 0, 0, 0], PORT)))
        .expect("binding UDP");
    let before = env.stack.snmp_snapshot().total.udp;
    // 600 datagrams of 1000 bytes: more than the 256 KiB and 256 datagrams
    // a socket queues, and nobody reads them.
    let to = SocketAddr::new(env.topo.stack_ip4.into(), PORT);
    env.topo
        .in_netns(|| {
            let k = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            for _ in 0..600 {
                k.send_to(&[7u8; 1000], to).unwrap();
                std::thread::sleep(Duration::from_micros(200));
            }
        })
        .unwrap();
    let counted = || {
        let u = env.stack.snmp_snapshot().total.udp;
        (
            u.in_datagrams - before.in_datagrams,
            u.rcvbuf_errors - before.rcvbuf_errors,
            u.in_errors - before.in_errors,
        )
    };
    // Every datagram is counted once: queued or dropped (unless the port
    // lost it first, which the pacing makes unlikely and rx_missed shows).
    let all = wait_until(Duration::from_secs(10), || {
        let (delivered, dropped, _) = counted();
        delivered + dropped == 600
    });
    let (delivered, dropped, errors) = counted();
    println!(
        "600 datagrams to a socket nobody reads: {delivered} queued, {dropped} dropped at its \
         full buffer, all counted: {all}"
    );
    assert!(
        delivered <= 256,
        "{delivered} datagrams counted as delivered"
    );
    assert!(
        dropped >= 300,
        "only {dropped} counted as dropped at the full socket"
    );
    assert_eq!(errors, dropped, "RcvbufErrors are InErrors too");
    drop(sock);
}
