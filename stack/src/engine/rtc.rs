//! Run to completion: application threads drive the stack contexts
//! themselves instead of stack threads doing it.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex,
    },
    time::Duration,
};

use dpdk::MbufBatch;

use super::{Event, StackShared, Worker};

/// Run to completion: how many egress passes a thread may leave due
/// (writes, closes) before it runs one itself; they are sent together,
/// one transmit burst, when the thread next waits in the stack.
pub(crate) const RTC_EGRESS_BATCH: u32 = 32;

thread_local! {
    /// Egress passes this thread left due since it last drove the stack.
    static RTC_PENDING: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Run to completion: the stack contexts application threads drive (one
/// per NIC queue; `None` once the stack stopped), how to sleep until their
/// queues have frames, and the one thread that sleeps on them.
pub(crate) struct Rtc {
    pub(crate) contexts: Box<[Mutex<Option<RtcContext>>]>,
    wakeups: Box<[Option<dpdk::RxWakeup>]>,
    /// Someone sleeps on the queues (or is about to).
    poller: AtomicBool,
    /// Until when (µs on the stack clock) the poller sleeps at most;
    /// `u64::MAX` when none does.
    poll_until_us: AtomicU64,
    /// When (ns on the stack clock) a pass last found work: a queue that
    /// cannot wake a sleeper (`net_memif`, ltran's ring) is polled again
    /// rather than napped on for two naps (`idle_sleep`) after it.
    last_busy_ns: AtomicU64,
    /// What wakes a sleeper when the kernel sent something on the
    /// exception path (see [`crate::kernel`]).
    kernel_wakeups: Vec<dpdk::RxWakeup>,
}

impl Rtc {
    pub(crate) fn new(contexts: Vec<RtcContext>) -> Self {
        let wakeups = contexts
            .iter()
            .map(|c| c.worker.rx_wakeup.clone())
            .collect();
        let kernel_wakeups = contexts
            .iter()
            .filter_map(|c| c.worker.kernel.as_ref()?.wakeup.clone())
            .collect();
        Self {
            contexts: contexts.into_iter().map(|c| Mutex::new(Some(c))).collect(),
            wakeups,
            kernel_wakeups,
            poller: AtomicBool::new(false),
            poll_until_us: AtomicU64::new(u64::MAX),
            last_busy_ns: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for Rtc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rtc")
            .field("contexts", &self.contexts.len())
            .field("poller", &self.poller)
            .finish_non_exhaustive()
    }
}

/// A stack context that application threads drive (run to completion):
/// what a stack thread would own, and its receive burst.
pub(crate) struct RtcContext {
    pub(crate) worker: Worker,
    pub(crate) batch: MbufBatch,
}

impl std::fmt::Debug for RtcContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtcContext")
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

impl RtcContext {
    /// Gives the calling application thread an lcore (once per thread), so
    /// its mempool operations use a per-lcore cache.
    fn register_thread(&self) {
        thread_local! {
            static REGISTERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        }
        if self.worker.shared.ltran.get().is_some() {
            // Behind ltran the pools are shared: stay cacheless.
            return;
        }
        let _ = REGISTERED.try_with(|r| {
            if !r.replace(true) {
                if let Some(eal) = dpdk::Eal::current() {
                    let _ = dpdk::eal::register_thread(&eal);
                }
            }
        });
    }
}

impl StackShared {
    /// Whether application threads run the stack (run to completion).
    pub(crate) fn run_to_completion(&self) -> bool {
        self.rtc.get().is_some()
    }

    /// Run to completion: one pass of every stack context no other thread
    /// is driving right now. Returns whether any had work.
    pub fn drive(&self) -> bool {
        self.drive_contexts().0
    }

    /// [`Self::drive`], and whether every context was driven (none was
    /// held by another thread).
    fn drive_contexts(&self) -> (bool, bool) {
        let Some(rtc) = self.rtc.get() else {
            return (false, false);
        };
        let _ = RTC_PENDING.try_with(|p| p.set(0));
        let (mut busy, mut all) = (false, true);
        let mut next_us = u64::MAX;
        for c in rtc.contexts.iter() {
            let Ok(mut guard) = c.try_lock() else {
                all = false;
                continue;
            };
            if let Some(ctx) = guard.as_mut() {
                ctx.register_thread();
                let now = self.clock.now_ns();
                busy |= ctx.worker.step(now, &mut ctx.batch);
                next_us = next_us.min(ctx.worker.next_timer_us());
            }
        }
        if busy {
            rtc.last_busy_ns
                .store(self.clock.now_ns(), Ordering::Relaxed);
        }
        // A timer that came due earlier than the poller means to wake
        // (a retransmission this pass armed, say) must not wait for it.
        if next_us < rtc.poll_until_us.load(Ordering::SeqCst) {
            for t in self.threads.iter() {
                t.wake();
            }
        }
        (busy, all)
    }

    /// Run to completion: whether this thread's writes or closes left an
    /// egress pass due that it has not run yet.
    pub fn egress_pending(&self) -> bool {
        self.run_to_completion() && RTC_PENDING.try_with(|p| p.get() > 0).unwrap_or(false)
    }

    /// Run to completion, for a non-blocking call that found nothing: one
    /// pass of the stack (nobody else may run it), the first time only.
    /// Returns whether it drove: the caller looks again.
    pub(crate) fn drive_once(&self, driven: &mut bool) -> bool {
        if *driven || !self.run_to_completion() {
            return false;
        }
        *driven = true;
        self.drive();
        true
    }

    /// Marks `shard` of `thread` for an egress pass. With stack threads
    /// the thread is woken if it sleeps. Run to completion the pass is
    /// batched: it runs when this thread next waits in the stack
    /// (`epoll_wait`, `poll`, a blocking call) or drives it otherwise, or
    /// once [`RTC_EGRESS_BATCH`] passes are due; at once only while another
    /// thread sleeps on the queues (which would not do it before it wakes).
    pub(crate) fn egress(&self, thread: usize, shard: usize) {
        let Some(rtc) = self.rtc.get() else {
            self.threads[thread].mark_dirty(shard);
            return;
        };
        let t = &self.threads[thread];
        t.dirty[shard / 64].fetch_or(1 << (shard % 64), Ordering::SeqCst);
        let now = rtc.poll_until_us.load(Ordering::SeqCst) != u64::MAX
            || RTC_PENDING
                .try_with(|p| {
                    let n = p.get() + 1;
                    p.set(n);
                    n >= RTC_EGRESS_BATCH
                })
                .unwrap_or(true);
        if now && !self.drive_contexts().1 {
            t.wake();
        }
    }

    /// Waits until `event` moves past `seen` or `deadline` passes; returns
    /// false on timeout. With stack threads this is [`Event::wait`]. Run to
    /// completion, the caller runs the stack while it waits: a pass, and
    /// when there was nothing to do a sleep until frames arrive, a timer is
    /// due or another thread wakes it.
    pub(crate) fn wait_event(
        &self,
        event: &Event,
        seen: u64,
        deadline: Option<std::time::Instant>,
    ) -> bool {
        if !self.run_to_completion() {
            return event.wait(seen, deadline);
        }
        loop {
            if event.generation() != seen {
                return true;
            }
            let busy = self.drive();
            if event.generation() != seen {
                return true;
            }
            let now = std::time::Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return false;
            }
            if busy {
                continue;
            }
            let left = deadline.map(|d| d - now);
            if !self.sleep_for_work(&mut [], left) {
                // Another thread drives: it notifies `event`.
                let cap = now + Duration::from_millis(1);
                event.wait(seen, Some(deadline.map_or(cap, |d| d.min(cap))));
            }
        }
    }

    /// Run to completion: sleeps until frames arrive at a queue, a timer
    /// of the stack is due, one of `extra` (the caller's descriptors, with
    /// the events it waits for; `revents` filled in) is ready, another
    /// thread wakes the stack, or `limit` passes. Returns true when the
    /// caller should drive again now (it slept, or frames are waiting), false
    /// when another thread polls or drives already (it notifies sockets'
    /// events: the caller waits on its own instead) or the stack stopped.
    ///
    /// One thread at a time polls, and it holds no context while it sleeps:
    /// other threads send, receive and drive meanwhile without waking it.
    pub fn sleep_for_work(&self, extra: &mut [libc::pollfd], limit: Option<Duration>) -> bool {
        let Some(rtc) = self.rtc.get() else {
            return false;
        };
        if rtc
            .poller
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return false;
        }
        let slept = self.poll_once(rtc, extra, limit);
        rtc.poller.store(false, Ordering::SeqCst);
        slept
    }

    fn poll_once(&self, rtc: &Rtc, extra: &mut [libc::pollfd], limit: Option<Duration>) -> bool {
        let now_ns = self.clock.now_ns();
        let now_us = now_ns / 1000;
        if rtc.wakeups.iter().any(Option::is_none)
            && now_ns.saturating_sub(rtc.last_busy_ns.load(Ordering::Relaxed))
                < 2 * self.opts.idle_sleep.as_nanos() as u64
        {
            // A queue that cannot wake a sleeper, and work a moment ago:
            // drive again rather than nap (the caller's kernel descriptors
            // wait this long at most). Longer than a nap and its timer
            // slack: a peer that napped finds us polling when its request
            // comes, so two napping ends cannot keep each other napping
            // (with 50 us, a third of lstack-rr's round trips over memif
            // met a nap).
            return true;
        }
        let mut wait = limit.map_or(u64::MAX, |l| l.as_micros() as u64);
        let mut frames = false;
        {
            let mut guards: smallvec::SmallVec<[_; 8]> = smallvec::SmallVec::new();
            for c in rtc.contexts.iter() {
                match c.try_lock() {
                    Ok(g) => guards.push(g),
                    Err(_) => return false,
                }
            }
            for g in guards.iter_mut() {
                let Some(ctx) = g.as_mut() else {
                    return false;
                };
                wait = wait.min(ctx.worker.next_timer_us().saturating_sub(now_us));
                if !ctx.worker.arm_rx(&mut ctx.batch) {
                    // Frames came meanwhile: drive again at once.
                    frames = true;
                    break;
                }
                if ctx.worker.rx_wakeup.is_none() {
                    // Nothing to sleep on: look again soon.
                    wait = wait.min(self.opts.idle_sleep.as_micros() as u64);
                }
            }
        }
        if frames {
            self.disarm_all(rtc);
            return true;
        }
        let mut wait = wait.min(1_000_000);
        if let Some(b) = &self.bond {
            // The queues slept on are those of the port active when the
            // contexts were made: after a failover, frames on the other
            // port are found at the next look, at most `bond_miimon` away.
            wait = wait.min(b.miimon.as_micros() as u64);
        }
        for t in self.threads.iter() {
            t.sleeping.fetch_add(1, Ordering::SeqCst);
        }
        rtc.poll_until_us
            .store(now_us.saturating_add(wait), Ordering::SeqCst);
        // After announcing the sleep: work queued or a timer armed before
        // the announcement was seen would otherwise wait a whole sleep.
        let quiet = self.threads.iter().all(|t| {
            t.commands.is_empty()
                && t.steer.is_empty()
                && t.dirty.iter().all(|w| w.load(Ordering::SeqCst) == 0)
        }) && rtc.contexts.iter().all(|c| {
            c.try_lock().is_ok_and(|g| {
                g.as_ref()
                    .is_some_and(|ctx| ctx.worker.next_timer_us() >= now_us.saturating_add(wait))
            })
        });
        if quiet && wait > 0 {
            self.threads[0].stats.sleeps.incr();
            let wake: smallvec::SmallVec<[_; 8]> = self
                .threads
                .iter()
                .map(|t| std::os::fd::AsFd::as_fd(&t.wake_fd))
                .collect();
            let woken = dpdk::wait_for_frames(
                &wake,
                rtc.wakeups.iter().flatten().chain(&rtc.kernel_wakeups),
                extra,
                Duration::from_micros(wait),
            );
            if woken.by_wake {
                for t in self.threads.iter() {
                    let _ = t.wake_fd.read();
                }
            }
        }
        rtc.poll_until_us.store(u64::MAX, Ordering::SeqCst);
        for t in self.threads.iter() {
            t.sleeping.fetch_sub(1, Ordering::SeqCst);
        }
        self.disarm_all(rtc);
        true
    }

    fn disarm_all(&self, rtc: &Rtc) {
        for c in rtc.contexts.iter() {
            let mut g = c.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(ctx) = g.as_mut() {
                ctx.worker.disarm_rx();
            }
        }
    }
}
