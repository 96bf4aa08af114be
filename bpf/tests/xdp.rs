//! xdp_bifurcate on a veth end, with no AF_XDP socket bound: frames for
//! lstack fall back to XDP_PASS (so the kernel answers), and the counters
//! say which path each frame took. Root required. (A full AF_XDP receive
//! test needs DPDK and is done by the integrator.)

mod common;

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use common::*;
use gazelle_bpf::{Proto, XdpBifurcation};

fn connect_kind(topo: &Topo, dst: IpAddr, port: u16) -> ErrorKind {
    topo.in_b(|| {
        match TcpStream::connect_timeout(&SocketAddr::new(dst, port), Duration::from_millis(1500)) {
            Ok(_) => panic!("connected to a closed port?"),
            Err(e) => e.kind(),
        }
    })
}

#[test]
fn xdp_owned_port_falls_back_to_kernel_without_socket() {
    let (topo, _fs, own) = setup("xdp");
    own.set(Proto::Tcp, 7000, true);
    let xdp = topo
        .in_a(|| XdpBifurcation::attach(&topo.if_a, &own))
        .unwrap();
    assert!(ip_n(&topo.a, &["link", "show", &topo.if_a]).contains("xdp"));

    // Owned: redirect to xsks_map, no socket on the queue -> XDP_PASS ->
    // the kernel answers RST.
    for dst in [IpAddr::V4(A4), IpAddr::V6(A6)] {
        assert_eq!(connect_kind(&topo, dst, 7000), ErrorKind::ConnectionRefused);
    }
    let c = xdp.counters();
    assert!(
        c.xdp_no_socket >= 2,
        "SYNs to the owned port were meant for lstack: {c:?}"
    );
    assert_eq!(c.xdp_redirected, 0, "{c:?}");

    // Not owned: plain pass.
    for dst in [IpAddr::V4(A4), IpAddr::V6(A6)] {
        assert_eq!(connect_kind(&topo, dst, 7001), ErrorKind::ConnectionRefused);
    }
    let after = xdp.counters();
    assert_eq!(after.xdp_no_socket, c.xdp_no_socket, "{after:?}");
    assert!(after.xdp_passed >= c.xdp_passed + 2, "{after:?}");

    // UDP by destination port too.
    own.set(Proto::Udp, 7002, true);
    topo.in_b(|| {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.send_to(b"x", SocketAddr::new(IpAddr::V4(A4), 7002))
            .unwrap();
    });
    wait_until(
        "UDP to an owned port counted",
        Duration::from_secs(2),
        || xdp.counters().xdp_no_socket > after.xdp_no_socket,
    );
}

#[test]
fn xdp_icmp_error_quoting_owned_source_port_is_for_lstack() {
    let (topo, _fs, own) = setup("icmp");
    let xdp = topo
        .in_a(|| XdpBifurcation::attach(&topo.if_a, &own))
        .unwrap();
    let send = |sport| {
        topo.in_b(|| {
            RawSender::new(&topo.if_b)
                .unwrap()
                .send(&icmp4_unreach_frame(sport))
                .unwrap()
        })
    };

    own.set(Proto::Udp, 7003, true);
    send(7003);
    wait_until(
        "ICMP error for an owned port",
        Duration::from_secs(2),
        || xdp.counters().xdp_no_socket == 1,
    );
    let c = xdp.counters();
    send(7004);
    wait_until(
        "ICMP error for another port passed",
        Duration::from_secs(2),
        || xdp.counters().xdp_passed > c.xdp_passed,
    );
    assert_eq!(xdp.counters().xdp_no_socket, 1);
}

#[test]
fn xdp_wanted_neighbour_replies_go_to_lstack() {
    let (topo, _fs, own) = setup("neigh");
    let xdp = topo
        .in_a(|| XdpBifurcation::attach(&topo.if_a, &own))
        .unwrap();

    // a resolves b: b's ARP reply / neighbour advertisement arrives on the
    // XDP interface. Waits until a has b's link-layer address again.
    let resolve = |dst: IpAddr| {
        ip_n(&topo.a, &["neigh", "flush", "to", &dst.to_string()]);
        topo.in_a(|| {
            let bind = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            UdpSocket::bind(bind)
                .unwrap()
                .send_to(b"x", SocketAddr::new(dst, 9))
                .unwrap();
        });
        wait_until("neighbour resolved", Duration::from_secs(3), || {
            let n = ip_n(&topo.a, &["neigh", "show", "to", &dst.to_string()]);
            n.contains("lladdr")
        });
    };
    for dst in [IpAddr::V4(B4), IpAddr::V6(B6)] {
        resolve(dst);
        assert_eq!(xdp.counters().xdp_neigh, 0, "{dst} not wanted yet");
    }
    for (i, dst) in [IpAddr::V4(B4), IpAddr::V6(B6)].into_iter().enumerate() {
        xdp.want_neighbour(dst, 10_000_000_000).unwrap();
        resolve(dst);
        let c = xdp.counters();
        assert_eq!(
            c.xdp_neigh,
            i as u64 + 1,
            "{dst}: wanted reply for lstack: {c:?}"
        );
    }
    // Expired wishes are ignored.
    let before = xdp.counters().xdp_neigh;
    for dst in [IpAddr::V4(B4), IpAddr::V6(B6)] {
        xdp.want_neighbour(dst, 0).unwrap();
        resolve(dst);
    }
    assert_eq!(xdp.counters().xdp_neigh, before);
}
