//! Two stack threads on a port with two queue pairs (`num_cpus = "0,1"`,
//! af_packet `qpairs=2`, which spreads flows over its queues by the kernel's
//! own hash). Frames that arrive on the queue of the thread that does not own
//! their flow are steered to the owner; ARP and NDP reach both threads.
//! Needs root; fails loudly without it.

mod common;

use std::{
    net::{SocketAddr, UdpSocket as KernelUdp},
    time::Duration,
};

use common::{connect_from_peer, echo_in_parallel, pattern, ping, spawn_stack_echo};
use netns_testbed::AfPacketEal;

#[test]
fn two_threads_share_the_work_and_steer_flows() {
    let eal = AfPacketEal {
        qpairs: 2,
        ..Default::default()
    };
    let env = common::start_with("lmq", &eal, |cfg, _| {
        cfg.num_cpus = "0,1".parse().unwrap();
    });
    assert_eq!(env.stack.threads(), 2, "one stack thread per queue pair");

    ping(&env.topo, env.topo.stack_ip4.into(), 3);
    ping(&env.topo, env.topo.stack_ip6.into(), 3);

    const PORT: u16 = 7100;
    spawn_stack_echo(&env.stack, PORT);
    let to = SocketAddr::new(env.topo.stack_ip4.into(), PORT);
    let streams = connect_from_peer(&env.topo, to, 32);
    echo_in_parallel(streams, 128 * 1024, 500);

    // Both threads carried established connections.
    for t in 0..2 {
        let s = env.stack.thread_stats(t).unwrap();
        assert!(s.tcp_established.get() > 0, "thread {t} got no connection");
        assert!(s.rx_packets.get() > 0, "thread {t} received nothing");
    }

    // UDP from many source ports: each datagram served by its port's owner.
    let udp = env
        .stack
        .udp_bind(SocketAddr::from(([0, 0, 0, 0], 7101)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&buf[..n], from);
        }
    });
    let target = SocketAddr::new(env.topo.stack_ip4.into(), 7101);
    env.topo
        .in_netns(|| {
            for i in 0..20u64 {
                let k = KernelUdp::bind("0.0.0.0:0").unwrap();
                k.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                let data = pattern(i, 200);
                let mut buf = [0u8; 2048];
                let ok = (0..5).any(|_| {
                    k.send_to(&data, target).unwrap();
                    matches!(k.recv_from(&mut buf), Ok((n, _)) if buf[..n] == data[..])
                });
                assert!(ok, "UDP datagram {i} not echoed");
            }
        })
        .unwrap();

    // Connecting out from the stack works whichever queue the replies land on.
    let server = env
        .topo
        .in_netns(|| {
            std::net::TcpListener::bind(SocketAddr::new(env.topo.remote_ip4.into(), 9100)).unwrap()
        })
        .unwrap();
    let accepter = std::thread::spawn(move || {
        (0..8)
            .map(|_| server.accept().unwrap().0)
            .collect::<Vec<_>>()
    });
    let remote = SocketAddr::new(env.topo.remote_ip4.into(), 9100);
    let conns: Vec<_> = (0..8)
        .map(|i| {
            env.stack
                .tcp_connect(remote, Some(Duration::from_secs(10)))
                .unwrap_or_else(|e| panic!("connect {i}: {e}"))
        })
        .collect();
    assert_eq!(accepter.join().unwrap().len(), 8);
    drop(conns);
    let steered: u64 = (0..2)
        .map(|t| env.stack.thread_stats(t).unwrap().steered_in.get())
        .sum();
    println!("frames steered between threads: {steered}");
}
