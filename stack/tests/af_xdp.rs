//! The stack on DPDK's `net_af_xdp` over a veth (native XDP on the veth, the
//! port's mempool as the XDP socket's memory): kernel clients of the peer
//! namespace are served over IPv4 and IPv6, and an idle stack thread
//! sleeps on the XDP socket instead of spinning, and wakes for frames.
//! Its own test binary: one EAL per process. Needs root.

mod common;

use std::net::SocketAddr;

use common::{
    assert_idle_thread_sleeps, connect_from_peer, kernel_echo_roundtrip, pattern, spawn_stack_echo,
};
use netns_testbed::{AfPacketEal, Medium};

#[test]
fn serves_kernel_clients_and_sleeps_on_the_xdp_socket() {
    let eal = AfPacketEal {
        medium: Medium::AfXdp,
        ..AfPacketEal::default()
    };
    let env = common::start_with("lxd", &eal, |_, _| {});
    assert!(
        !dpdk::af_xdp::socket_fds().is_empty(),
        "the af_xdp port opened no XDP socket"
    );
    const PORT: u16 = 7500;
    spawn_stack_echo(&env.stack, PORT);

    // Data both ways over IPv4 and IPv6, checked byte for byte.
    for (i, ip) in [
        std::net::IpAddr::from(env.topo.stack_ip4),
        env.topo.stack_ip6.into(),
    ]
    .into_iter()
    .enumerate()
    {
        let streams = connect_from_peer(&env.topo, SocketAddr::new(ip, PORT), 4);
        for (j, s) in streams.into_iter().enumerate() {
            let data = pattern((i * 10 + j) as u64, 512 * 1024);
            assert_eq!(kernel_echo_roundtrip(s, &data).unwrap(), data, "{ip}");
        }
    }

    // Idle with connections open, the thread sleeps in poll on the XDP
    // socket: a few ticks of the window, not all of them.
    let mut streams = connect_from_peer(
        &env.topo,
        SocketAddr::new(env.topo.stack_ip4.into(), PORT),
        3,
    );
    assert_idle_thread_sleeps("af_xdp");
    // And it wakes for frames: every connection echoes after the sleep.
    let last = streams.pop().unwrap();
    for (i, s) in streams.into_iter().chain([last]).enumerate() {
        let data = pattern(50 + i as u64, 256 * 1024);
        assert_eq!(kernel_echo_roundtrip(s, &data).unwrap(), data);
    }
    let port = env.stack.port_stats().unwrap();
    println!("af_xdp port: {port:?}");
    assert_eq!(port.rx_errors + port.tx_errors, 0, "{port:?}");
}
