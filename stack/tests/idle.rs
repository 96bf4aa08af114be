//! An idle stack thread sleeps: with connections open and nothing moving it
//! uses almost no CPU (it used to spin on the queue, a whole core of these
//! 2-core machines), and it wakes at once for frames and for the
//! application. Measured in CPU ticks the thread was given, not in time.
//! Needs root.

mod common;

use std::net::SocketAddr;

use common::{
    assert_idle_thread_sleeps, connect_from_peer, kernel_echo_roundtrip, pattern, spawn_stack_echo,
};

#[test]
fn idle_stack_thread_sleeps_and_wakes_for_traffic() {
    let env = common::start("lid", |_, _| {});
    const PORT: u16 = 7400;
    spawn_stack_echo(&env.stack, PORT);
    let to = SocketAddr::new(env.topo.stack_ip4.into(), PORT);
    let mut streams = connect_from_peer(&env.topo, to, 4);
    let first = streams.pop().unwrap();
    assert_eq!(
        kernel_echo_roundtrip(first, &pattern(1, 64 * 1024)).unwrap(),
        pattern(1, 64 * 1024)
    );

    // Idle with three connections open: a spinning thread would take every
    // tick of the window; a sleeping one a few (timers, the spin before
    // each sleep).
    assert_idle_thread_sleeps("af_packet");

    // And it wakes: every connection still echoes at once after the sleep.
    for (i, s) in streams.into_iter().enumerate() {
        let data = pattern(10 + i as u64, 256 * 1024);
        assert_eq!(kernel_echo_roundtrip(s, &data).unwrap(), data);
    }
}
