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
    /// One-shot wakers of other waiters (epoll, poll) with the directions
    /// ([`RX`], [`TX`]) they care about, woken by the next matching notify.
    hooks: Mutex<Vec<(Waker, u8)>>,
}

/// Direction bit: data (or end of stream, or a connection) arrived.
pub const RX: u8 = 1;
/// Direction bit: room to send appeared.
pub const TX: u8 = 2;

/// A waker that notifies an [`Event`] for one direction.
#[derive(Debug)]
struct DirWake {
    event: Arc<Event>,
    dir: u8,
}

impl Wake for DirWake {
    fn wake(self: Arc<Self>) {
        self.event.notify_dir(self.dir);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.event.notify_dir(self.dir);
    }
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

    /// Wakes every waiter, and every hook once.
    pub fn notify(&self) {
        self.notify_dir(RX | TX);
    }

    /// Wakes every blocked waiter, and once each hook that cares about
    /// `dir`.
    pub fn notify_dir(&self, dir: u8) {
        let mut g = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        *g = g.wrapping_add(1);
        drop(g);
        self.cond.notify_all();
        // Wake matching hooks in place: no allocation on the stack thread.
        // Hooks never take this lock, so waking under it cannot deadlock.
        let mut hooks = self.hooks.lock().unwrap_or_else(|e| e.into_inner());
        let mut i = 0;
        while i < hooks.len() {
            if hooks[i].1 & dir != 0 {
                let (w, _) = hooks.swap_remove(i);
                w.wake();
            } else {
                i += 1;
            }
        }
    }

    /// Wakes `waker` once on the next notify (a waker that would wake the
    /// same task as one already registered is not added twice).
    pub fn add_hook(&self, waker: &Waker) {
        self.add_hook_dir(waker, RX | TX);
    }

    /// Wakes `waker` once on the next notify for a direction in `dirs`.
    pub fn add_hook_dir(&self, waker: &Waker, dirs: u8) {
        let mut hooks = self.hooks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = hooks.iter_mut().find(|(h, _)| h.will_wake(waker)) {
            h.1 |= dirs;
        } else {
            hooks.push((waker.clone(), dirs));
        }
    }

    /// A waker that notifies this event for direction `dir` only (register
    /// it as smoltcp's receive or send waker).
    pub fn dir_waker(self: &Arc<Self>, dir: u8) -> Waker {
        Waker::from(Arc::new(DirWake {
            event: Arc::clone(self),
            dir,
        }))
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
    fn hooks_fire_once_and_are_not_duplicated() {
        struct Count(std::sync::atomic::AtomicU32);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let c = Arc::new(Count(Default::default()));
        let w = Waker::from(Arc::clone(&c));
        let e = Event::new();
        e.add_hook(&w);
        e.add_hook(&w);
        e.notify();
        e.notify();
        assert_eq!(c.0.load(std::sync::atomic::Ordering::SeqCst), 1);
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
