//! The stack against the Linux kernel of a real peer host (a network
//! namespace), over a real DPDK port (`net_af_packet` on a veth) with real
//! hugepages. Needs root; fails loudly without it.
//!
//! One stack serves every test of this file (DPDK allows one EAL per
//! process); each test uses its own ports.

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener as KernelListener, UdpSocket as KernelUdp},
    sync::OnceLock,
    time::Duration,
};

use common::{
    checksum, connect_from_peer, echo_in_parallel, kernel_echo_roundtrip, pattern, ping, ping_from,
    send_raw, spawn_stack_echo, wait_until, Env,
};
use lstack::DropReason;

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| common::start("lst", |_, _| {}))
}

fn drops(env: &Env, reason: DropReason) -> u64 {
    (0..env.stack.threads())
        .map(|i| env.stack.thread_stats(i).unwrap().dropped(reason))
        .sum()
}

#[test]
fn answers_ping_v4_and_v6() {
    let env = env();
    ping(&env.topo, env.topo.stack_ip4.into(), 3);
    ping(&env.topo, env.topo.stack_ip6.into(), 3);
    // Through the gateway route too: the peer's other address as the source.
    ping_from(
        &env.topo,
        env.topo.stack_ip4.into(),
        2,
        Some(env.topo.remote_ip4.into()),
    );
}

#[test]
fn hundred_kernel_clients_echo_one_mib_each() {
    let env = env();
    const PORT: u16 = 7000;
    const CLIENTS: usize = 100;
    const SIZE: usize = 1 << 20;
    spawn_stack_echo(&env.stack, PORT);
    let to = SocketAddr::new(env.topo.stack_ip4.into(), PORT);
    let streams = connect_from_peer(&env.topo, to, CLIENTS);
    let secs = echo_in_parallel(streams, SIZE, 0);
    let mbits = (CLIENTS * SIZE * 2 * 8) as f64 / secs / 1e6;
    println!("echo: {CLIENTS} clients x {SIZE} B in {secs:.2} s = {mbits:.0} Mbit/s both ways");
}

#[test]
fn ipv6_tcp_echo() {
    let env = env();
    const PORT: u16 = 7006;
    spawn_stack_echo(&env.stack, PORT);
    let to = SocketAddr::new(env.topo.stack_ip6.into(), PORT);
    let streams = connect_from_peer(&env.topo, to, 4);
    for (i, s) in streams.into_iter().enumerate() {
        let data = pattern(100 + i as u64, 256 * 1024);
        let got = kernel_echo_roundtrip(s, &data).expect("IPv6 echo");
        assert!(got == data, "IPv6 client {i}: echoed bytes differ");
    }
}

#[test]
fn udp_echo_v4_and_v6() {
    let env = env();
    const PORT: u16 = 7001;
    let sock = env
        .stack
        .udp_bind(SocketAddr::from(([0, 0, 0, 0], PORT)))
        .expect("binding UDP");
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
        }
    });
    for target in [
        SocketAddr::new(env.topo.stack_ip4.into(), PORT),
        SocketAddr::new(env.topo.stack_ip6.into(), PORT),
    ] {
        env.topo
            .in_netns(|| {
                let bind: SocketAddr = if target.is_ipv4() {
                    "0.0.0.0:0".parse().unwrap()
                } else {
                    "[::]:0".parse().unwrap()
                };
                let k = KernelUdp::bind(bind).unwrap();
                k.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                for (i, size) in [1usize, 64, 512, 1200, 1400]
                    .into_iter()
                    .cycle()
                    .take(50)
                    .enumerate()
                {
                    let data = pattern(i as u64, size);
                    let mut buf = vec![0u8; 2048];
                    let mut ok = false;
                    for _try in 0..5 {
                        k.send_to(&data, target).unwrap();
                        if let Ok((n, from)) = k.recv_from(&mut buf) {
                            assert_eq!(from, target);
                            assert_eq!(
                                &buf[..n],
                                &data[..],
                                "datagram {i} of {size} B to {target}"
                            );
                            ok = true;
                            break;
                        }
                    }
                    assert!(ok, "no echo for datagram {i} ({size} B) to {target}");
                }
            })
            .unwrap();
    }
}

#[test]
fn stack_client_connects_out_through_the_gateway() {
    let env = env();
    const PORT: u16 = 9000;
    // A kernel echo server on the peer's other subnet: reachable only via the gateway.
    let server = env
        .topo
        .in_netns(|| {
            KernelListener::bind(SocketAddr::new(env.topo.remote_ip4.into(), PORT)).unwrap()
        })
        .unwrap();
    let peer_seen = std::thread::spawn(move || {
        let (mut s, from) = server.accept().unwrap();
        let mut buf = vec![0u8; 65536];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).unwrap();
        }
        from
    });
    let remote = SocketAddr::new(env.topo.remote_ip4.into(), PORT);
    let conn = env
        .stack
        .tcp_connect(remote, Some(Duration::from_secs(10)))
        .expect("connecting out");
    let data = pattern(7, 300 * 1024);
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut sent = 0;
    while got.len() < data.len() {
        if sent < data.len() {
            conn.set_nonblocking(true);
            match conn.write(&data[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("write: {e}"),
            }
        }
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("read: {e}"),
        }
    }
    assert!(
        got == data,
        "echo through the gateway differs ({} of {} bytes)",
        got.len(),
        data.len()
    );
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let from = peer_seen.join().unwrap();
    assert_eq!(
        from.ip(),
        std::net::IpAddr::from(env.topo.stack_ip4),
        "the peer saw the stack's address"
    );
}

#[test]
fn refused_connections_both_ways() {
    let env = env();
    // Stack -> kernel port with no listener: RST from the peer.
    let remote = SocketAddr::new(env.topo.peer_ip4.into(), 9);
    let err = env
        .stack
        .tcp_connect(remote, Some(Duration::from_secs(10)))
        .expect_err("nothing listens on port 9");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    // Kernel -> stack port with no listener: RST from the stack.
    let to = SocketAddr::new(env.topo.stack_ip4.into(), 7999);
    let r = env
        .topo
        .in_netns(|| std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5)).map(|_| ()))
        .unwrap();
    assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::ConnectionRefused);
}

fn ipv4_tcp_frame(env: &Env, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&env.stack.mac());
    f.extend_from_slice(&env.topo.peer_mac().unwrap().0);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = 20 + 20 + payload.len();
    let mut ip = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0x40,
        0,
        64,
        6,
        0,
        0,
    ];
    ip.extend_from_slice(&env.topo.peer_ip4.octets());
    ip.extend_from_slice(&env.topo.stack_ip4.octets());
    let sum = checksum(&ip);
    ip[10] = (sum >> 8) as u8;
    ip[11] = sum as u8;
    f.extend_from_slice(&ip);
    // TCP header with a checksum that is certainly wrong (0x0000 is never valid here
    // unless the real one is 0, which we rule out below).
    let tcp = [
        0x9c, 0x40, 0x1b, 0x58, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10, 0x10, 0, 0xde, 0xad, 0, 0,
    ];
    f.extend_from_slice(&tcp);
    f.extend_from_slice(payload);
    f
}

#[test]
fn malformed_frames_are_counted_and_dropped() {
    let env = env();
    let good = ipv4_tcp_frame(env, b"hello");
    let mut bad_ip_sum = good.clone();
    bad_ip_sum[14 + 10] ^= 0xff;
    let mut long_ip = good.clone();
    long_ip[14 + 2] = 0x05; // total length 1400 > frame
    let mut ethertype = good.clone();
    ethertype[12] = 0x88;
    ethertype[13] = 0xb5; // local experimental ethertype
    let mut short_tcp = good[..14 + 20 + 8].to_vec();
    let tl = 20 + 8;
    short_tcp[14 + 2] = 0;
    short_tcp[14 + 3] = tl as u8;
    short_tcp[14 + 10] = 0;
    short_tcp[14 + 11] = 0;
    let sum = checksum(&short_tcp[14..34]);
    short_tcp[14 + 10] = (sum >> 8) as u8;
    short_tcp[14 + 11] = sum as u8;

    let before: Vec<u64> = [
        DropReason::TcpBadChecksum,
        DropReason::Ipv4BadChecksum,
        DropReason::Ipv4Truncated,
        DropReason::UnknownEthertype,
        DropReason::TcpMalformed,
    ]
    .iter()
    .map(|r| drops(env, *r))
    .collect();
    let mib_before = env.stack.snmp_snapshot().total;
    send_raw(
        &env.topo,
        &[good.clone(), bad_ip_sum, long_ip, ethertype, short_tcp],
    );
    let reasons = [
        DropReason::TcpBadChecksum,
        DropReason::Ipv4BadChecksum,
        DropReason::Ipv4Truncated,
        DropReason::UnknownEthertype,
        DropReason::TcpMalformed,
    ];
    let ok = wait_until(Duration::from_secs(5), || {
        reasons
            .iter()
            .zip(&before)
            .all(|(r, b)| drops(env, *r) > *b)
    });
    let now: Vec<_> = reasons.iter().map(|r| (r.name(), drops(env, *r))).collect();
    assert!(
        ok,
        "drop counters did not all move: before {before:?}, now {now:?}"
    );
    // The MIB counts the same frames: a bad IP checksum and a total length
    // beyond the frame are header errors; a bad TCP checksum (`good` has one
    // too) and a header cut short are TCP input errors; the four IPv4 frames
    // were all received.
    let mib = env.stack.snmp_snapshot().total;
    assert!(
        mib.ip.in_hdr_errors >= mib_before.ip.in_hdr_errors + 2,
        "{mib_before:?} -> {mib:?}"
    );
    assert!(mib.tcp.in_errs >= mib_before.tcp.in_errs + 2, "{mib:?}");
    assert!(mib.tcp.in_segs >= mib_before.tcp.in_segs + 2, "{mib:?}");
    assert!(
        mib.ip.in_receives >= mib_before.ip.in_receives + 4,
        "{mib:?}"
    );
    // The stack still works after the garbage.
    assert!(env
        .topo
        .run([
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            &env.topo.stack_ip4.to_string()
        ])
        .is_ok());
}

/// Sets `SO_LINGER` to zero on a kernel socket: closing it sends RST.
fn linger_zero(s: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a linger struct of the size passed.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as u32,
        )
    };
    assert_eq!(r, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
}

#[test]
fn tcp_counters_and_read_latency_of_connections_the_stack_opens() {
    let env = env();
    const PORT: u16 = 9100;
    const MESSAGES: usize = 12;
    let before = env.stack.snmp_snapshot().total;
    let reads_before = env.stack.latency_snapshot().total.count;

    // A kernel echo server in the peer that resets the connection once it
    // has echoed every message.
    let server = env
        .topo
        .in_netns(|| KernelListener::bind(SocketAddr::new(env.topo.peer_ip4.into(), PORT)).unwrap())
        .unwrap();
    let (reset_now, reset_rx) = std::sync::mpsc::channel::<()>();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = server.accept().unwrap();
        let mut buf = [0u8; 64];
        for _ in 0..MESSAGES {
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
        }
        reset_rx.recv().unwrap();
        linger_zero(&s);
    });

    let remote = SocketAddr::new(env.topo.peer_ip4.into(), PORT);
    let conn = env
        .stack
        .tcp_connect(remote, Some(Duration::from_secs(10)))
        .expect("connecting out");
    // One message at a time: every echo is taken by at least one read.
    let mut reads = 0;
    for i in 0..MESSAGES {
        conn.write_all(&[i as u8; 64]).unwrap();
        let mut got = 0;
        let mut buf = [0u8; 64];
        while got < 64 {
            let n = conn.read(&mut buf[got..]).unwrap();
            assert!(n > 0, "EOF after {got} bytes of message {i}");
            got += n;
            reads += 1;
        }
        assert_eq!(buf, [i as u8; 64]);
    }
    let open = env.stack.snmp_snapshot().total;
    assert!(open.tcp.curr_estab >= 1, "{open:?}");
    assert!(open.tcp.active_opens > before.tcp.active_opens, "{open:?}");
    assert!(
        open.tcp_ext.established > before.tcp_ext.established,
        "{open:?}"
    );
    assert!(
        open.tcp.out_segs >= before.tcp.out_segs + MESSAGES as u64,
        "{open:?}"
    );
    assert!(
        open.tcp.in_segs >= before.tcp.in_segs + MESSAGES as u64,
        "{open:?}"
    );

    // Every read that returned data was measured.
    let lat = env.stack.latency_snapshot();
    assert!(
        lat.total.count >= reads_before + reads,
        "{reads} reads, {lat:?}"
    );
    let t = &lat.total;
    assert!(t.min_ns <= t.mean_ns && t.mean_ns <= t.max_ns, "{t:?}");
    assert!(
        t.min_ns <= t.p50_ns && t.p50_ns <= t.p99_ns && t.p99_ns <= t.max_ns,
        "{t:?}"
    );
    assert_eq!(t.count, lat.threads.iter().map(|x| x.count).sum::<u64>());

    // The peer resets: ESTABLISHED straight to CLOSED.
    reset_now.send(()).unwrap();
    peer.join().unwrap();
    let reset = wait_until(Duration::from_secs(5), || {
        let m = env.stack.snmp_snapshot().total;
        m.tcp.estab_resets > before.tcp.estab_resets && m.tcp_ext.in_rsts > before.tcp_ext.in_rsts
    });
    assert!(reset, "{:?}", env.stack.snmp_snapshot().total);
    drop(conn);

    // A connection nobody accepts: SYN-SENT to CLOSED.
    let err = env
        .stack
        .tcp_connect(
            SocketAddr::new(env.topo.peer_ip4.into(), 9),
            Some(Duration::from_secs(10)),
        )
        .expect_err("nothing listens on port 9");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    let failed = wait_until(Duration::from_secs(5), || {
        env.stack.snmp_snapshot().total.tcp.attempt_fails > before.tcp.attempt_fails
    });
    let after = env.stack.snmp_snapshot().total;
    assert!(failed, "{after:?}");
    assert!(
        after.tcp.active_opens >= before.tcp.active_opens + 2,
        "{after:?}"
    );
}
