//! Ownership map and TapGuard with real packets between two namespaces.
//! Root required.

mod common;

use std::io::{BufRead, BufReader, ErrorKind};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use aya::programs::tc::TcAttachType;
use aya::programs::SchedClassifier;
use common::*;
use gazelle_bpf::{GuardAddrs, Ownership, Proto, TapGuard};

const PORT: u16 = 7000;

fn addrs() -> GuardAddrs {
    GuardAddrs {
        ipv4: Some(A4),
        ipv6: Some(A6),
    }
}

/// Connects from namespace b to `dst`:PORT. Refused = the kernel's RST came
/// through; timed out = it was dropped (the SYN gets no answer).
fn tcp_probe(topo: &Topo, dst: IpAddr) -> ErrorKind {
    topo.in_b(|| {
        match TcpStream::connect_timeout(&SocketAddr::new(dst, PORT), Duration::from_millis(1500)) {
            Ok(_) => panic!("connected to a closed port?"),
            Err(e) => e.kind(),
        }
    })
}

/// Sends a datagram from namespace b to `dst`:PORT and waits for an answer.
/// Refused = the kernel's port unreachable came through; WouldBlock/TimedOut
/// = it was dropped.
fn udp_probe(topo: &Topo, dst: IpAddr) -> ErrorKind {
    topo.in_b(|| {
        let bind: SocketAddr = if dst.is_ipv4() {
            "0.0.0.0:0".parse().unwrap()
        } else {
            "[::]:0".parse().unwrap()
        };
        let s = UdpSocket::bind(bind).unwrap();
        s.connect(SocketAddr::new(dst, PORT)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(1000)))
            .unwrap();
        s.send(b"hello").unwrap();
        let mut buf = [0u8; 64];
        match s.recv(&mut buf) {
            Ok(_) => panic!("answer from a closed port?"),
            Err(e) => e.kind(),
        }
    })
}

fn dropped(k: ErrorKind) -> bool {
    matches!(k, ErrorKind::TimedOut | ErrorKind::WouldBlock)
}

#[test]
fn ownership_set_owns_and_pin_lifetime() {
    let fs = BpfFs::new();
    let pin = fs.pin("inst");
    let own = Ownership::create(&pin).unwrap();
    assert!(pin.exists(), "pin must exist while the Ownership lives");
    for port in [0u16, 1, 63, 64, 80, 7000, 65535] {
        assert!(!own.owns(Proto::Tcp, port) && !own.owns(Proto::Udp, port));
        own.set(Proto::Tcp, port, true);
        assert!(own.owns(Proto::Tcp, port));
        assert!(!own.owns(Proto::Udp, port), "TCP and UDP bits are separate");
        own.set(Proto::Udp, port, true);
        own.set(Proto::Tcp, port, false);
        assert!(!own.owns(Proto::Tcp, port) && own.owns(Proto::Udp, port));
        own.set(Proto::Udp, port, false);
    }
    // Neighbouring bits are independent.
    own.set(Proto::Tcp, 64, true);
    assert!(!own.owns(Proto::Tcp, 63) && !own.owns(Proto::Tcp, 65));
    // The map the programs see is the pinned one: read it through the pin
    // with the syscall API and check the bit layout.
    let map = aya::maps::MapData::from_pin(&pin).unwrap();
    let arr = aya::maps::Array::<_, u64>::try_from(aya::maps::Map::Array(map)).unwrap();
    assert_eq!(arr.get(&1, 0).unwrap(), 1, "TCP port 64 is bit 0 of word 1");
    own.set(Proto::Udp, 65535, true);
    assert_eq!(
        arr.get(&2047, 0).unwrap(),
        1 << 63,
        "UDP port 65535 is the last bit"
    );
    drop(own);
    assert!(!pin.exists(), "pin removed on drop");
    assert!(
        !pin.parent().unwrap().exists(),
        "empty pin directory removed on drop"
    );
}

#[test]
fn ownership_replaces_stale_pin() {
    let fs = BpfFs::new();
    let pin = fs.pin("stale");
    let first = Ownership::create(&pin).unwrap();
    first.set(Proto::Tcp, 1, true);
    // A second instance on the same path (the first one's process having
    // died without cleaning up) gets a fresh map.
    let second = Ownership::create(&pin).unwrap();
    assert!(!second.owns(Proto::Tcp, 1));
    std::mem::forget(first); // its Drop would remove the second one's pin
    drop(second);
    assert!(!pin.exists());
}

/// tcpdump on the peer's interface, printing every TCP segment from
/// `PORT` with RST set, one line each, until [`RstCapture::stop`].
struct RstCapture(std::process::Child);

impl RstCapture {
    fn start(topo: &Topo) -> RstCapture {
        let filter = format!(
            "(tcp src port {PORT} and tcp[tcpflags] & tcp-rst != 0) or \
             (ip6 and tcp src port {PORT} and ip6[53] & 4 != 0)"
        );
        let child = Command::new("ip")
            .args([
                "netns", "exec", &topo.b, "tcpdump", "-nn", "-l", "-U", "-i", &topo.if_b,
            ])
            .arg(&filter)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump (scripts/install-deps.sh installs it)");
        let mut cap = RstCapture(child);
        // tcpdump says it listens on stderr once the capture is open.
        let mut err = BufReader::new(cap.0.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        err.read_line(&mut line).unwrap();
        assert!(line.contains("listening on"), "tcpdump: {line}");
        cap
    }

    /// Stops the capture; the RST segments it saw.
    fn stop(mut self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let mut out = String::new();
        std::io::Read::read_to_string(self.0.stdout.as_mut().unwrap(), &mut out).unwrap();
        let _ = self.0.wait();
        out.lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }
}

#[test]
fn egress_guard_drops_rst_from_owned_port() {
    let (topo, _fs, own) = setup("rst");
    let guard = topo
        .in_a(|| TapGuard::attach(&topo.if_a, &own, addrs()))
        .unwrap();

    own.set(Proto::Tcp, PORT, true);
    let capture = RstCapture::start(&topo);
    for dst in [IpAddr::V4(A4), IpAddr::V6(A6)] {
        let k = tcp_probe(&topo, dst);
        assert!(
            dropped(k),
            "{dst}: owned port, the kernel's RST must not reach the peer (got {k:?})"
        );
    }
    let seen = capture.stop();
    assert!(seen.is_empty(), "RSTs on the wire: {seen:?}");
    let c = guard.counters();
    assert!(
        c.rst_dropped >= 2,
        "rst_dropped counts IPv4 and IPv6 RSTs: {c:?}"
    );

    own.set(Proto::Tcp, PORT, false);
    let capture = RstCapture::start(&topo);
    for dst in [IpAddr::V4(A4), IpAddr::V6(A6)] {
        let k = tcp_probe(&topo, dst);
        assert_eq!(
            k,
            ErrorKind::ConnectionRefused,
            "{dst}: port not owned, the RST goes out"
        );
    }
    // The same capture sees them: it would have seen the first ones.
    let seen = capture.stop();
    assert!(
        seen.iter().any(|l| l.contains(&format!("{A4}.{PORT} >")))
            && seen.iter().any(|l| l.contains(&format!("{A6}.{PORT} >"))),
        "tcpdump saw no IPv4 and IPv6 RST: {seen:?}"
    );
    let after = guard.counters();
    assert_eq!(after.rst_dropped, c.rst_dropped, "{after:?}");
    assert!(after.egress_passed > c.egress_passed, "{after:?}");

    // The port owned again, but the helper unloaded: the RSTs are back on
    // the wire (so what the first capture did not see, the guard stopped).
    own.set(Proto::Tcp, PORT, true);
    drop(guard);
    let capture = RstCapture::start(&topo);
    for dst in [IpAddr::V4(A4), IpAddr::V6(A6)] {
        assert_eq!(tcp_probe(&topo, dst), ErrorKind::ConnectionRefused, "{dst}");
    }
    let seen = capture.stop();
    assert!(
        seen.iter().any(|l| l.contains(&format!("{A4}.{PORT} >")))
            && seen.iter().any(|l| l.contains(&format!("{A6}.{PORT} >"))),
        "helper unloaded, yet tcpdump saw no RST: {seen:?}"
    );
}

#[test]
fn egress_guard_drops_port_unreachable_for_owned_port() {
    let (topo, _fs, own) = setup("unreach");
    let guard = topo
        .in_a(|| TapGuard::attach(&topo.if_a, &own, addrs()))
        .unwrap();

    own.set(Proto::Udp, PORT, true);
    own.set(Proto::Tcp, PORT, false); // TCP bit must not matter for UDP
    for dst in [IpAddr::V4(A4), IpAddr::V6(A6)] {
        let k = udp_probe(&topo, dst);
        assert!(
            dropped(k),
            "{dst}: owned UDP port, no port unreachable may reach the peer (got {k:?})"
        );
    }
    let c = guard.counters();
    assert!(c.icmp_unreach_dropped >= 2, "{c:?}");

    own.set(Proto::Udp, PORT, false);
    own.set(Proto::Tcp, PORT, true); // nor the other way round
    for dst in [IpAddr::V4(A4), IpAddr::V6(A6)] {
        let k = udp_probe(&topo, dst);
        assert_eq!(
            k,
            ErrorKind::ConnectionRefused,
            "{dst}: not owned, port unreachable goes out"
        );
    }
    assert_eq!(
        guard.counters().icmp_unreach_dropped,
        c.icmp_unreach_dropped
    );
}

#[test]
fn ingress_rpf_drops_spoofed_sources() {
    let (topo, _fs, own) = setup("rpf");
    // bpf_fib_lookup only looks up on interfaces that forward.
    topo.sysctl_a(&format!("net/ipv4/conf/{}/forwarding", topo.if_a), "1");
    topo.sysctl_a(&format!("net/ipv6/conf/{}/forwarding", topo.if_a), "1");
    let guard = topo
        .in_a(|| TapGuard::attach(&topo.if_a, &own, addrs()))
        .unwrap();
    let rp = topo.in_a(|| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{}/rp_filter", topo.if_a))
    });
    assert_eq!(rp.unwrap().trim(), "1", "attach sets rp_filter");

    // Receivers in a, bound before anything is sent.
    let (r4, r6) = topo.in_a(|| {
        let r4 = UdpSocket::bind("0.0.0.0:9000").unwrap();
        let r6 = UdpSocket::bind("[::]:9001").unwrap();
        for r in [&r4, &r6] {
            r.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
        }
        (r4, r6)
    });
    let before = guard.counters();
    topo.in_b(|| {
        let tx = RawSender::new(&topo.if_b).unwrap();
        // Spoofed: martian (loopback, our own address, multicast) ...
        tx.send(&udp4_frame(
            "127.0.0.1".parse().unwrap(),
            A4,
            9000,
            b"martian-lo",
        ))
        .unwrap();
        tx.send(&udp4_frame(A4, A4, 9000, b"martian-own")).unwrap();
        tx.send(&udp4_frame(
            "224.0.0.9".parse().unwrap(),
            A4,
            9000,
            b"martian-mc",
        ))
        .unwrap();
        tx.send(&udp6_frame(
            "::1".parse().unwrap(),
            A6,
            9001,
            b"martian6-lo",
        ))
        .unwrap();
        tx.send(&udp6_frame(A6, A6, 9001, b"martian6-own")).unwrap();
        // ... routed through another interface, or not at all ...
        tx.send(&udp4_frame(DUMMY4, A4, 9000, b"wrong-if")).unwrap();
        tx.send(&udp4_frame(
            "192.0.2.77".parse().unwrap(),
            A4,
            9000,
            b"no-route",
        ))
        .unwrap();
        tx.send(&udp6_frame(DUMMY6, A6, 9001, b"wrong-if6"))
            .unwrap();
        // ... and genuine.
        tx.send(&udp4_frame(B4, A4, 9000, b"good4")).unwrap();
        tx.send(&udp6_frame(B6, A6, 9001, b"good6")).unwrap();
    });
    let mut buf = [0u8; 64];
    let (n, from) = r4
        .recv_from(&mut buf)
        .expect("the genuine IPv4 datagram passes");
    assert_eq!((&buf[..n], from.ip()), (&b"good4"[..], IpAddr::V4(B4)));
    let (n, from) = r6
        .recv_from(&mut buf)
        .expect("the genuine IPv6 datagram passes");
    assert_eq!((&buf[..n], from.ip()), (&b"good6"[..], IpAddr::V6(B6)));
    assert!(
        r4.recv_from(&mut buf).is_err() && r6.recv_from(&mut buf).is_err(),
        "nothing spoofed gets through"
    );

    let c = guard.counters();
    assert_eq!(
        c.rpf_martian_dropped - before.rpf_martian_dropped,
        5,
        "{c:?}"
    );
    assert_eq!(
        c.rpf_no_route_dropped - before.rpf_no_route_dropped,
        3,
        "{c:?}"
    );
    assert!(c.ingress_passed >= before.ingress_passed + 2, "{c:?}");
    assert_eq!(c.rpf_unchecked, 0, "{c:?}");
}

#[test]
fn ingress_rpf_without_forwarding_counts_unchecked() {
    let (topo, _fs, own) = setup("unchecked");
    let guard = topo
        .in_a(|| TapGuard::attach(&topo.if_a, &own, addrs()))
        .unwrap();
    topo.in_b(|| {
        let tx = RawSender::new(&topo.if_b).unwrap();
        tx.send(&udp4_frame(
            "127.0.0.1".parse().unwrap(),
            A4,
            9000,
            b"martian",
        ))
        .unwrap();
        tx.send(&udp4_frame(DUMMY4, A4, 9000, b"wrong-if")).unwrap();
    });
    wait_until("both frames seen", Duration::from_secs(2), || {
        let c = guard.counters();
        c.rpf_martian_dropped == 1 && c.rpf_unchecked == 1
    });
    assert_eq!(
        guard.counters().rpf_no_route_dropped,
        0,
        "no route lookup without forwarding"
    );
}

fn tcx_count(topo: &Topo, at: TcAttachType) -> usize {
    topo.in_a(|| {
        SchedClassifier::query_tcx(&topo.if_a, at)
            .map(|(_, progs)| progs.len())
            .unwrap_or(0)
    })
}

fn xdp_attached(topo: &Topo) -> bool {
    ip_n(&topo.a, &["link", "show", &topo.if_a]).contains("xdp")
}

/// Child side of `sigkill_leaves_no_attachment`: does nothing unless the
/// parent test spawned this binary with the environment below.
#[test]
fn sigkill_child() {
    let (Ok(ns), Ok(ifname), Ok(pin)) = (
        std::env::var("GAZELLE_BPF_CHILD_NS"),
        std::env::var("GAZELLE_BPF_CHILD_IF"),
        std::env::var("GAZELLE_BPF_CHILD_PIN"),
    ) else {
        return;
    };
    let own = Ownership::create(pin.as_ref()).unwrap();
    own.set(Proto::Tcp, PORT, true);
    let (guard, xdp) = Topo::in_ns(&ns, || {
        (
            TapGuard::attach(&ifname, &own, GuardAddrs::default()).unwrap(),
            gazelle_bpf::XdpBifurcation::attach(&ifname, &own).unwrap(),
        )
    });
    println!("ATTACHED");
    std::thread::sleep(Duration::from_secs(120));
    drop((guard, xdp));
}

#[test]
fn sigkill_leaves_no_attachment() {
    let topo = Topo::new();
    let fs = BpfFs::new();
    let pin = fs.pin("killed");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sigkill_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("GAZELLE_BPF_CHILD_NS", &topo.a)
        .env("GAZELLE_BPF_CHILD_IF", &topo.if_a)
        .env("GAZELLE_BPF_CHILD_PIN", &pin)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 || line.contains("ATTACHED") {
            break;
        }
    }
    if !line.contains("ATTACHED") {
        let _ = child.kill();
        panic!("child did not attach: {:?}", child.wait());
    }
    assert!(
        tcx_count(&topo, TcAttachType::Ingress) >= 1 && tcx_count(&topo, TcAttachType::Egress) >= 1
    );
    assert!(xdp_attached(&topo), "child's XDP program is attached");

    child.kill().unwrap(); // SIGKILL: no Drop runs
    child.wait().unwrap();
    wait_until(
        "TCX links to go with the process",
        Duration::from_secs(5),
        || {
            tcx_count(&topo, TcAttachType::Ingress) == 0
                && tcx_count(&topo, TcAttachType::Egress) == 0
        },
    );
    wait_until(
        "XDP link to go with the process",
        Duration::from_secs(5),
        || !xdp_attached(&topo),
    );
    let tc = run(&[
        "tc", "-n", &topo.a, "filter", "show", "dev", &topo.if_a, "ingress",
    ]) + &run(&[
        "tc", "-n", &topo.a, "filter", "show", "dev", &topo.if_a, "egress",
    ]);
    assert!(tc.trim().is_empty(), "no netlink TC filters either: {tc}");

    // The pin outlives a SIGKILL (bpffs); a new instance replaces it.
    assert!(pin.exists());
    let own = Ownership::create(&pin).unwrap();
    assert!(
        !own.owns(Proto::Tcp, PORT),
        "fresh map, not the dead instance's"
    );
    drop(own);
    assert!(!pin.exists());
}
