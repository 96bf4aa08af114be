//! `listen_shadow = 0` (gazelle's default): each listening port's
//! connections are all served by one stack thread, ports taking the threads
//! in turn, even though the NIC (af_packet `qpairs=2`, the kernel's flow
//! hash) spreads their frames over both queues. With the key ignored, the
//! flow hash would spread each port's connections over both threads.
//! Needs root; fails loudly without it.

mod common;

use std::net::SocketAddr;

use common::{connect_from_peer, echo_in_parallel, spawn_stack_echo};
use netns_testbed::AfPacketEal;

#[test]
fn listen_shadow_0_serves_each_port_from_one_thread() {
    let eal = AfPacketEal {
        qpairs: 2,
        ..Default::default()
    };
    let env = common::start_with("lshadow", &eal, |cfg, _| {
        cfg.num_cpus = "0,1".parse().unwrap();
        cfg.listen_shadow = false;
    });
    assert_eq!(env.stack.threads(), 2, "one stack thread per queue pair");

    const PORTS: [u16; 2] = [7200, 7201];
    const PER_PORT: usize = 16;
    let mut streams = Vec::new();
    for port in PORTS {
        spawn_stack_echo(&env.stack, port);
        let to = SocketAddr::new(env.topo.stack_ip4.into(), port);
        streams.extend(connect_from_peer(&env.topo, to, PER_PORT));
    }
    // Listed while open (the kernel clients are connected; the stack's side
    // is established or about to be).
    let conns = env.stack.connections();
    let shown = format!("{conns:#?}");
    let mut homes = Vec::new();
    for port in PORTS {
        let suffix = format!(":{port}");
        let threads: Vec<usize> = conns
            .iter()
            .filter(|c| c.state != "LISTEN" && c.local.ends_with(&suffix))
            .map(|c| c.thread)
            .collect();
        assert!(
            threads.len() >= PER_PORT,
            "port {port}: {} connections listed, {PER_PORT} expected: {shown}",
            threads.len()
        );
        assert!(
            threads.iter().all(|&t| t == threads[0]),
            "port {port}: connections on several threads {threads:?} with listen_shadow = 0"
        );
        homes.push(threads[0]);
    }
    assert_ne!(
        homes[0], homes[1],
        "the two ports should take the two threads in turn"
    );
    // And they carry data.
    echo_in_parallel(streams, 16 * 1024, 500);
    // The NIC did spread the flows: the thread that does not own a frame's
    // port passed it to the one that does.
    let steered: u64 = (0..2)
        .map(|t| env.stack.thread_stats(t).unwrap().steered_in.get())
        .sum();
    assert!(steered > 0, "no frame was steered between the threads");
    env.stack.shutdown();
}
