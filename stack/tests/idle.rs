//! An idle stack thread sleeps: with connections open and nothing moving it
//! uses almost no CPU (it used to spin on the queue, a whole core of these
//! 2-core machines), and it wakes at once for frames and for the
//! application. Measured in CPU ticks the thread was given, not in time.
//! Needs root.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{connect_from_peer, kernel_echo_roundtrip, pattern, spawn_stack_echo};

/// CPU ticks (user + system) of this process's threads named `lstack-stack*`.
fn stack_thread_ticks() -> u64 {
    let mut total = 0;
    let mut threads = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("lstack-stack") {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        // Fields after the command name's closing parenthesis: state is
        // field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(") ").unwrap().1;
        let f: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|x| x.parse().unwrap())
            .collect();
        total += f[0] + f[1];
        threads += 1;
    }
    assert!(threads > 0, "no lstack-stack thread found");
    total
}

fn ticks_per_sec() -> u64 {
    // SAFETY: sysconf reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).unwrap_or(100).max(1)
}

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
    let window = Duration::from_secs(3);
    let before = stack_thread_ticks();
    std::thread::sleep(window);
    let used = stack_thread_ticks() - before;
    let available = ticks_per_sec() * window.as_secs();
    println!("idle stack thread: {used} of {available} CPU ticks");
    assert!(
        used * 10 < available,
        "the idle stack thread used {used} of {available} ticks: it does not sleep"
    );

    // And it wakes: every connection still echoes at once after the sleep.
    for (i, s) in streams.into_iter().enumerate() {
        let data = pattern(10 + i as u64, 256 * 1024);
        assert_eq!(kernel_echo_roundtrip(s, &data).unwrap(), data);
    }
}
