//! The no-allocation test's body, shared by `no_alloc.rs` (run to wakeup)
//! and `no_alloc_rtc.rs` (run to completion): one stack per process, so
//! each mode is a test binary of its own, with its own counting allocator.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    net::SocketAddr,
    sync::atomic::{AtomicU64, Ordering},
};

use gazelle_config::StackThreadMode;

use crate::common::{self, connect_from_peer, kernel_echo_roundtrip, pattern, spawn_stack_echo};

/// Counts allocations made by threads named `lstack-stack*` (the stack
/// threads, and run to completion the test's driving thread).
struct Counting;

static STACK_ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static IS_STACK: Cell<Option<bool>> = const { Cell::new(None) };
}

fn on_stack_thread() -> bool {
    IS_STACK
        .try_with(|c| match c.get() {
            Some(v) => v,
            None => {
                // Thread names are set before the thread runs; reading it does not allocate.
                let v = std::thread::current()
                    .name()
                    .is_some_and(|n| n.starts_with("lstack-stack"));
                c.set(Some(v));
                v
            }
        })
        .unwrap_or(false)
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if on_stack_thread() {
            STACK_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if on_stack_thread() {
            STACK_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Moves megabytes through connections of a stack in `mode` and checks
/// that no pass of the stack allocated. Run to completion the passes run
/// on application threads: a thread named like a stack thread drives the
/// stack in a loop (as an event loop waiting in the stack does), and its
/// passes are the ones counted; it must have found work.
pub fn run(mode: StackThreadMode) {
    let env = common::start("lna", |cfg, _| cfg.stack_thread_mode = mode);
    assert_eq!(
        env.stack.run_to_completion(),
        mode == StackThreadMode::RunToCompletion
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy_passes = std::sync::Arc::new(AtomicU64::new(0));
    let driver = env.stack.run_to_completion().then(|| {
        let (stack, stop, busy) = (env.stack.clone(), stop.clone(), busy_passes.clone());
        std::thread::Builder::new()
            .name("lstack-stack-driver".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if stack.drive() {
                        busy.fetch_add(1, Ordering::Relaxed);
                    } else {
                        stack.sleep_for_work(&mut [], Some(std::time::Duration::from_millis(1)));
                    }
                }
            })
            .expect("spawning the driving thread")
    });
    const PORT: u16 = 7300;
    spawn_stack_echo(&env.stack, PORT);
    let to = SocketAddr::new(env.topo.stack_ip4.into(), PORT);
    let mut streams = connect_from_peer(&env.topo, to, 8);
    // Warm up: connections established, every shard and buffer touched.
    let warm: Vec<_> = streams.drain(..4).collect();
    for (i, s) in warm.into_iter().enumerate() {
        assert!(
            kernel_echo_roundtrip(s, &pattern(i as u64, 256 * 1024))
                .unwrap()
                .len()
                == 256 * 1024
        );
    }
    let before = STACK_ALLOCS.load(Ordering::Relaxed);
    let mut moved = 0;
    for (i, s) in streams.into_iter().enumerate() {
        let data = pattern(50 + i as u64, 2 << 20);
        let got = kernel_echo_roundtrip(s, &data).unwrap();
        assert!(got == data);
        moved += 2 * data.len();
    }
    let allocs = STACK_ALLOCS.load(Ordering::Relaxed) - before;
    let busy_during = busy_passes.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    if let Some(d) = driver {
        d.join().expect("the driving thread");
        assert!(busy_during > 0, "the driving thread ran no pass with work");
        println!("passes with work on the driving thread: {busy_during}");
    }
    println!(
        "stack-thread allocations while moving {} MiB: {allocs}",
        moved >> 20
    );
    assert!(
        before > 0,
        "the counter saw the stack's setup allocations (the test can fail)"
    );
    assert_eq!(allocs, 0, "stack threads allocated on the data path");
}
