//! Waiting for socket readiness without spinning.
//!
//! An [`Event`] is a generation counter with a condition variable. A waiter
//! reads the generation, checks its condition under the shard lock, registers
//! the event as the socket's smoltcp waker, and sleeps until the generation
//! moves. The stack thread's wake (through smoltcp's waker or our own
//! notifications) bumps the generation, so no wakeup between the check and the
//! sleep is lost.

use std::{
    sync::{Arc, Condvar, Mutex},
    task::{Wake, Waker},
    time::{Duration, Instant},
};

/// A wakeable event; cheap to clone behind an `Arc`.
#[derive(Debug, Default)]
pub struct Event {
    generation: Mutex<u64>,
    cond: Condvar,
}

impl Event {
    /// A new event behind an `Arc`.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The current generation; pass it to [`Event::wait`].
    pub fn generation(&self) -> u64 {
        *self.generation.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes every waiter.
    pub fn notify(&self) {
        let mut g = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        *g = g.wrapping_add(1);
        drop(g);
        self.cond.notify_all();
    }

    /// Sleeps until the generation differs from `seen` or `deadline` passes.
    /// Returns false on timeout.
    pub fn wait(&self, seen: u64, deadline: Option<Instant>) -> bool {
        let mut g = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        while *g == seen {
            match deadline {
                None => g = self.cond.wait(g).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    let (ng, _) = self
                        .cond
                        .wait_timeout(g, (d - now).min(Duration::from_secs(3600)))
                        .unwrap_or_else(|e| e.into_inner());
                    g = ng;
                }
            }
        }
        true
    }

    /// A `Waker` that notifies this event, for smoltcp's socket wakers.
    pub fn waker(self: &Arc<Self>) -> Waker {
        Waker::from(Arc::clone(self))
    }
}

impl Wake for Event {
    fn wake(self: Arc<Self>) {
        self.notify();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_before_wait_is_not_lost() {
        let e = Event::new();
        let seen = e.generation();
        e.waker().wake();
        assert!(e.wait(seen, Some(Instant::now() + Duration::from_millis(10))));
    }

    #[test]
    fn wait_times_out_without_notify() {
        let e = Event::new();
        let seen = e.generation();
        assert!(!e.wait(seen, Some(Instant::now() + Duration::from_millis(5))));
    }

    #[test]
    fn wakes_a_thread_blocked_in_wait() {
        let e = Event::new();
        let seen = e.generation();
        let e2 = Arc::clone(&e);
        let t = std::thread::spawn(move || e2.wait(seen, None));
        std::thread::sleep(Duration::from_millis(20));
        e.notify();
        assert!(t.join().unwrap());
    }
}
