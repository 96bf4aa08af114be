//! lstack's own active-backup bond (`bond_mode = 1`, issue 17 item 4): two
//! veth pairs from the stack's af_packet ports into the peer namespace,
//! whose two ends sit on a bridge carrying the peer's addresses, as two
//! switch ports would. A kernel client's TCP connection exchanges data;
//! then the active port's veth goes down, and the same connection carries
//! on over the other port, new IPv4 and IPv6 connections succeed, and the
//! stack's status shows the failover. With the bond keys ignored (only the
//! first port opened) the connection stalls once its port is down and the
//! test fails.
//! Needs root; fails loudly without it.

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream as KernelStream},
    process::Command,
    time::Duration,
};

use common::{pattern, spawn_stack_echo, wait_until};
use gazelle_ctl_proto::BondStatus;
use lstack::{Stack, StackOptions};
use netns_testbed::{hugepages, require_root, AfPacketEal, Topology, TopologyOptions};

const PORT: u16 = 7600;

fn sh(cmd: &str) {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn iface_mac(iface: &str) -> String {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/address"))
        .unwrap_or_else(|e| panic!("MAC address of {iface}: {e}"))
        .trim()
        .to_owned()
}

/// Sends `data` on `s` and reads its echo back, in pieces so neither side's
/// buffers fill; checks every byte.
fn echo(s: &mut KernelStream, data: &[u8], what: &str) {
    let mut buf = vec![0u8; 16 * 1024];
    for (i, chunk) in data.chunks(buf.len()).enumerate() {
        s.write_all(chunk)
            .unwrap_or_else(|e| panic!("{what}: writing piece {i}: {e}"));
        let got = &mut buf[..chunk.len()];
        s.read_exact(got)
            .unwrap_or_else(|e| panic!("{what}: reading the echo of piece {i}: {e}"));
        assert!(got == chunk, "{what}: piece {i} echoed differently");
    }
}

fn connect(topo: &Topology, to: SocketAddr) -> KernelStream {
    let s = topo
        .in_netns(move || KernelStream::connect_timeout(&to, Duration::from_secs(10)))
        .expect("entering the peer namespace")
        .unwrap_or_else(|e| panic!("connecting to {to}: {e}"));
    // Generous: a failover takes a link check, the switch's learning and
    // TCP's retransmission timer.
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

fn bond(stack: &Stack) -> BondStatus {
    stack
        .stats_snapshot()
        .bond
        .expect("the stack's status has no bond: bond_mode = 1 was ignored")
}

#[test]
fn active_backup_bond_fails_over_and_the_connection_survives() {
    require_root();
    let topo = Topology::new(TopologyOptions {
        name_hint: "lbond".into(),
        extra_links: 1,
        ..Default::default()
    })
    .expect("creating the test topology");
    // The peer's two ends on one bridge that carries its addresses: a switch
    // in front of the two ports.
    let ns = &topo.ns;
    let extra = &topo.extra_links[0];
    sh(&format!(
        "ip -n {ns} addr flush dev {p} && ip -n {ns} link add lbondbr type bridge && \
         ip -n {ns} link set {p} master lbondbr && ip -n {ns} link set {e} master lbondbr && \
         ip -n {ns} link set lbondbr up && ip -n {ns} addr add {ip}/{len} dev lbondbr && \
         ip -n {ns} addr add {ip6}/{len6} dev lbondbr nodad && \
         ip netns exec {ns} ethtool -K lbondbr tx off tso off gso off >/dev/null",
        p = topo.peer_if,
        e = extra.peer_if,
        ip = topo.peer_ip4,
        len = topo.prefix4,
        ip6 = topo.peer_ip6,
        len6 = topo.prefix6,
    ));

    let huge = hugepages::ensure(256).expect("reserving 256 x 2 MiB hugepages");
    let prefix = hugepages::dpdk_file_prefix("lbond");
    // Two stack threads: each has its queue of both ports.
    let eal = AfPacketEal {
        qpairs: 2,
        ..Default::default()
    };
    let mut config = netns_testbed::lstack_config(&topo, &huge, &eal, &prefix).unwrap();
    let mut args = eal.args_all_links(&topo, &huge, &prefix);
    args.remove(0);
    config.dpdk_args = args;
    config.num_cpus = "0,1".parse().unwrap();
    // The bond's MAC is neither port's own.
    let pid = std::process::id().to_be_bytes();
    let bond_mac = format!("02:b0:{:02x}:{:02x}:{:02x}:01", pid[1], pid[2], pid[3]);
    config.devices = bond_mac.parse().unwrap();
    config.bond_mode = 1;
    config.bond_miimon = 20;
    config.bond_slave_mac = vec![
        iface_mac(&topo.host_if).parse().unwrap(),
        iface_mac(&extra.host_if).parse().unwrap(),
    ];
    let opts = StackOptions::for_config(&config);
    let stack = Stack::start(&config, opts).expect("starting lstack on the bond");
    assert_eq!(
        crate::format_mac(stack.mac()),
        bond_mac,
        "the stack uses the bond's MAC"
    );

    assert!(
        wait_until(Duration::from_secs(10), || {
            let b = bond(&stack);
            b.active.is_some() && b.ports.iter().all(|p| p.link_up)
        }),
        "both links up: {:?}",
        bond(&stack)
    );
    let before = bond(&stack);
    assert_eq!(before.mode, 1);
    assert_eq!(before.mac, bond_mac);
    assert_eq!(before.miimon_ms, 20);
    assert_eq!(before.failovers, 0);
    let first = before.active.unwrap();

    spawn_stack_echo(&stack, PORT);
    let to4 = SocketAddr::new(topo.stack_ip4.into(), PORT);
    let to6 = SocketAddr::new(topo.stack_ip6.into(), PORT);
    let mut long = connect(&topo, to4);
    echo(&mut long, &pattern(1, 256 * 1024), "before the failover");
    // More connections, spread over both threads, carried across too.
    let mut others: Vec<KernelStream> = (0..8).map(|_| connect(&topo, to4)).collect();
    for (i, s) in others.iter_mut().enumerate() {
        echo(
            s,
            &pattern(10 + i as u64, 16 * 1024),
            "another connection before the failover",
        );
    }

    // The active port's veth goes down: its operstate says so.
    let cut = before.ports[first]
        .iface
        .clone()
        .expect("an af_packet port names its interface");
    sh(&format!("ip link set {cut} down"));
    assert!(
        wait_until(Duration::from_secs(10), || {
            let b = bond(&stack);
            b.failovers >= 1 && b.active.is_some_and(|a| a != first)
        }),
        "no failover after {cut} went down: {:?}",
        bond(&stack)
    );

    // The same connection carries on over the other port, and new ones
    // (IPv4 and IPv6) are made through it.
    echo(
        &mut long,
        &pattern(2, 256 * 1024),
        "the connection across the failover",
    );
    for (i, s) in others.iter_mut().enumerate() {
        echo(
            s,
            &pattern(20 + i as u64, 16 * 1024),
            "another connection across the failover",
        );
    }
    let mut v4 = connect(&topo, to4);
    echo(
        &mut v4,
        &pattern(3, 64 * 1024),
        "a new IPv4 connection after the failover",
    );
    let mut v6 = connect(&topo, to6);
    echo(
        &mut v6,
        &pattern(4, 64 * 1024),
        "a new IPv6 connection after the failover",
    );

    let after = bond(&stack);
    let second = after.active.unwrap();
    assert_ne!(second, first, "{after:?}");
    assert!(after.failovers >= 1, "{after:?}");
    assert!(
        after.announcements >= 1,
        "the move was announced: {after:?}"
    );
    assert!(!after.ports[first].link_up, "{after:?}");
    assert!(
        after.ports[second].link_up && after.ports[second].active,
        "{after:?}"
    );
    assert!(
        after.ports[second].counters.rx_packets > 0 && after.ports[second].counters.tx_packets > 0,
        "traffic went through the new active port: {after:?}"
    );
    // No preemption: the link comes back, the traffic stays where it is.
    sh(&format!("ip link set {cut} up"));
    assert!(wait_until(Duration::from_secs(10), || bond(&stack).ports
        [first]
        .link_up));
    let back = bond(&stack);
    assert_eq!(back.active, Some(second), "{back:?}");
    echo(
        &mut long,
        &pattern(5, 64 * 1024),
        "after the link came back",
    );
    for t in 0..2 {
        assert!(
            stack.thread_stats(t).unwrap().tcp_established.get() > 0,
            "thread {t} carried no connection"
        );
    }
    drop((long, v4, v6, others));
    stack.shutdown();
}

fn format_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
