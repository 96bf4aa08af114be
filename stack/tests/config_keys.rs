//! lstack configuration keys that change how the stack runs are acted on,
//! not accepted and ignored (the keys lstack does not implement are refused
//! by the config crate; see `gazelle_config::support`). One stack per test
//! binary (DPDK's EAL starts once per process), so one test. Needs root.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{connect_from_peer, echo_in_parallel, spawn_stack_echo};

/// `stack_interrupt = 0` makes an idle stack thread busy-poll (it never
/// sleeps, as gazelle's default does), and `app_exclude_cpus` takes a CPU
/// out of the affinity of the thread that started the stack (the
/// application's threads created later inherit it). `nic_read_number = 1`
/// and `rpc_number = 1` bound what a pass of the stack thread takes: one
/// frame off the queue, one application request (a connect).
#[test]
fn stack_interrupt_0_busy_polls_and_app_exclude_cpus_is_applied() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        cpus >= 2,
        "this test needs 2 CPUs to exclude one, found {cpus}"
    );
    let env = common::start("lkeys", |config, _| {
        config.stack_interrupt = false;
        config.app_exclude_cpus = Some("0".parse().unwrap());
        config.nic_read_number = 1;
        config.rpc_number = 1;
    });
    let stats = env.stack.thread_stats(0).expect("thread 0");
    let (loops, sleeps) = (stats.idle_loops.get(), stats.sleeps.get());
    // Idle for a while: a thread that may sleep would have (it sleeps after
    // at most 50 µs of spinning).
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        stats.idle_loops.get() > loops,
        "the stack thread did not loop at all"
    );
    assert_eq!(
        stats.sleeps.get(),
        sleeps,
        "stack_interrupt = 0: the idle stack thread slept"
    );

    let mine = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
    assert!(
        !mine.is_set(0).unwrap(),
        "app_exclude_cpus = \"0\": the application thread may still run on CPU 0"
    );
    assert!(
        (1..cpus).any(|c| mine.is_set(c).unwrap_or(false)),
        "the application thread was left no CPU"
    );

    // Bulk data from the peer arrives in bursts of frames; connects made
    // back to back queue requests. Each pass takes one of each at most.
    spawn_stack_echo(&env.stack, 7300);
    let to = SocketAddr::new(env.topo.stack_ip4.into(), 7300);
    echo_in_parallel(connect_from_peer(&env.topo, to, 4), 1 << 20, 9);
    let peer = env
        .topo
        .in_netns(|| std::net::TcpListener::bind((env.topo.peer_ip4, 7301)).unwrap())
        .unwrap();
    let to_peer = SocketAddr::new(env.topo.peer_ip4.into(), 7301);
    let connecting: Vec<_> = (0..64)
        .map(|_| env.stack.tcp_connect_start(to_peer).unwrap())
        .collect();
    for _ in &connecting {
        peer.accept().unwrap();
    }
    assert!(
        stats.rx_packets.get() > 500,
        "too little traffic to judge: {} frames",
        stats.rx_packets.get()
    );
    assert_eq!(
        stats.rx_pass_max.get(),
        1,
        "nic_read_number = 1: a pass read more than one frame"
    );
    assert_eq!(
        stats.commands_pass_max.get(),
        1,
        "rpc_number = 1: a pass took more than one request"
    );
    drop(connecting);
    env.stack.shutdown();
}
