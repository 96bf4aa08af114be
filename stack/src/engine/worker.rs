//! A stack thread's loop ([`Worker::run`]) and its pass over the queues
//! ([`Worker::step`]), which run to completion drives too.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use dpdk::{Mbuf, MbufBatch, Mempool};
use smoltcp::{
    iface::Interface,
    socket::tcp,
    time::Instant as SmolInstant,
    wire::{IpAddress, IpEndpoint, IpVersion},
};

use super::{
    policy::{
        after_ingest, answer, answered, half_open_table, reap_half_open, route, settle,
        strip_ipv6_extensions, Route, ANSWER_MAX,
    },
    shard::Orphan,
    Command, ListenerShared, RxSocket, StackShared, ThreadShared,
};
use crate::{
    classify::{classify_seen, DropReason, RxChecked, Verdict},
    device::{FrameDevice, TxPath},
    handshake::HalfOpen,
    kernel::{KernelQueue, Side},
};

/// What a stack thread owns alone.
pub(crate) struct Worker {
    pub(crate) index: usize,
    pub(crate) shared: Arc<StackShared>,
    pub(crate) iface: Interface,
    pub(crate) rx: crate::device::RxSource,
    pub(crate) tx: TxPath,
    pub(crate) pool: Arc<Mempool>,
    pub(crate) clock: crate::clock::Clock,
    /// Next smoltcp deadline per shard, in µs since `clock` (u64::MAX: none).
    next_poll: Vec<u64>,
    /// Shards that need egress this loop.
    touched: Vec<bool>,
    touched_list: Vec<usize>,
    /// Ephemeral ports freed during a settle, reused to avoid allocating.
    released: Vec<(u16, IpEndpoint)>,
    /// This thread's handshakes in progress.
    half_open: HalfOpen,
    /// How the receive queue wakes a sleeping thread, if it can.
    pub(super) rx_wakeup: Option<dpdk::RxWakeup>,
    /// The thread's queue pair to the kernel (`kni_switch`,
    /// `flow_bifurcation`; see [`crate::kernel`]).
    pub(crate) kernel: Option<KernelQueue>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// How long an idle stack thread spins before it sleeps, at first and at
/// most (see [`Worker::run`]), in nanoseconds.
const SPIN_NS_START: u64 = 20_000;
const SPIN_NS_MIN: u64 = 2_000;
const SPIN_NS_MAX: u64 = 50_000;
/// smoltcp's silence after a neighbour request (`DISCOVERY_SILENT_TIME`).
const NEIGHBOUR_SILENCE_US: u64 = 1_000_000;

impl Worker {
    pub(crate) fn new(
        index: usize,
        shared: Arc<StackShared>,
        iface: Interface,
        rx: crate::device::RxSource,
        tx: TxPath,
        pool: Arc<Mempool>,
        clock: crate::clock::Clock,
    ) -> Self {
        let shards = shared.threads[index].shards.len();
        let half_open = half_open_table(&shared);
        Self {
            index,
            shared,
            iface,
            rx,
            tx,
            pool,
            clock,
            next_poll: vec![u64::MAX; shards],
            touched: vec![false; shards],
            touched_list: Vec::with_capacity(shards),
            released: Vec::new(),
            half_open,
            rx_wakeup: None,
            kernel: None,
        }
    }

    fn me(&self) -> &ThreadShared {
        &self.shared.threads[self.index]
    }

    /// Nanoseconds since `clock` (the stack's epoch): one clock read per
    /// loop serves smoltcp's timestamps (in µs) and the latency marks.
    fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    /// Runs until the stack shuts down.
    pub(crate) fn run(mut self) {
        self.prepare();
        let mut batch = MbufBatch::new();
        // Empty loops spin for `spin_ns` before the thread sleeps: longer
        // while work keeps coming back soon after a sleep, shorter while it
        // does not (on a 2-core machine a spinning thread is a cost).
        let mut spin_ns = SPIN_NS_START;
        let mut idle_since: Option<u64> = None;
        while !self.shared.shutdown.load(Ordering::Relaxed) {
            let now_ns = self.now_ns();
            if self.step(now_ns, &mut batch) {
                idle_since = None;
                continue;
            }
            self.me().stats.idle_loops.incr();
            let since = *idle_since.get_or_insert(now_ns);
            if self.shared.busy_poll || now_ns.saturating_sub(since) < spin_ns {
                std::hint::spin_loop();
                continue;
            }
            let slept = self.sleep(now_ns / 1000, &mut batch);
            idle_since = None;
            let woke = self.now_ns();
            spin_ns = match slept {
                // Woken by work soon after falling asleep: spinning a little
                // longer would have caught it without the sleep.
                Some(true) if woke.saturating_sub(now_ns) < SPIN_NS_MAX => {
                    (spin_ns * 2).clamp(SPIN_NS_MIN, SPIN_NS_MAX)
                }
                Some(_) => (spin_ns / 2).max(SPIN_NS_MIN),
                None => spin_ns,
            };
        }
        self.tx.flush();
    }

    /// What the thread looks up once before its loop: how its receive
    /// queue can wake it.
    pub(crate) fn prepare(&mut self) {
        self.rx_wakeup = self.rx.nic_queue().and_then(|q| q.wakeup());
        tracing::debug!(thread = self.index, wakeup = ?self.rx_wakeup, "how the stack thread sleeps");
    }

    /// One pass at `now_ns` (the arrival time of its burst): commands from
    /// the application, the frames of the receive queue and of other
    /// threads, egress of the shards that need it, the transmit burst, and
    /// handshakes that aged. Returns whether there was anything to do.
    /// `batch` is empty between passes (or holds frames [`Worker::sleep`]
    /// found while arming an interrupt).
    pub(crate) fn step(&mut self, now_ns: u64, batch: &mut MbufBatch) -> bool {
        let now = now_ns / 1000;
        self.tx.conformance.now_ns = now_ns;
        self.follow_bond();
        let mut busy = self.run_commands(now);

        // Receive: the NIC queue (or ltran's ring), then frames other
        // threads steered here. A steered frame is never copied to the
        // other threads again (they got their own copies), or two
        // threads would bounce a broadcast between them forever.
        // Up to `rx_per_pass` frames from the queue (`nic_read_number`), a
        // burst at a time, while bursts come back full.
        let mut budget = self.shared.rx_per_pass;
        let mut read = 0;
        loop {
            let want = budget.min(dpdk::BURST_SIZE);
            let got = self.rx.rx_burst_max(batch, want);
            read += got;
            budget -= got.min(budget);
            let from_nic = batch.len();
            let last = got < want || budget == 0;
            if last {
                while !batch.is_full() {
                    match self.me().steer.pop() {
                        Some(m) => {
                            let _ = batch.push(m);
                            self.me().stats.steered_in.incr();
                        }
                        None => break,
                    }
                }
            }
            if !batch.is_empty() {
                busy = true;
                for (i, m) in batch.drain().enumerate() {
                    let steered = i >= from_nic;
                    // A frame that trips a bug (ours or smoltcp's) is dropped
                    // and counted; it must not take the stack thread down.
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        self.ingress(now_ns, m, steered)
                    }));
                    if r.is_err() {
                        self.survived_panic("processing a received frame");
                    }
                }
            }
            if last {
                break;
            }
        }
        self.me().stats.rx_pass_max.raise(read as u64);

        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.egress(now_ns))) {
            Ok(b) => busy |= b,
            Err(_) => {
                self.touched.fill(false);
                self.touched_list.clear();
                self.survived_panic("polling sockets");
            }
        }
        busy |= self.kernel_pass(now_ns, batch);
        self.tx.flush();
        if self.half_open.len() > 0 {
            self.reap_half_open(now_ns);
        }
        busy
    }

    /// The exception path's part of a pass: the frames this pass handed
    /// the kernel go to it, and what the kernel sent (read every
    /// [`crate::kernel::KERNEL_POLL_NS`] at most) goes out on the NIC
    /// queue. `batch` is empty and stays so. Whether there was anything.
    #[inline]
    fn kernel_pass(&mut self, now_ns: u64, batch: &mut MbufBatch) -> bool {
        let Some(kernel) = self.kernel.as_mut() else {
            return false;
        };
        let stats = &self.shared.threads[self.index].stats;
        kernel.flush(stats);
        let got = kernel.receive(now_ns, false, batch);
        if got > 0 {
            stats.kernel_tx.add(got as u64);
            for m in batch.drain() {
                self.tx.push(m);
            }
        }
        got > 0
    }

    /// On lstack's own bond: follows a move of the active port the link
    /// monitor published (one atomic load per loop).
    #[inline]
    fn follow_bond(&mut self) {
        if let crate::device::RxSource::Bond(rx) = &self.rx {
            if let Some(active) = rx.moved() {
                self.switch_port(active);
            }
        }
    }

    /// Receives and transmits on port `active` of the bond from now on,
    /// sleeps on its queue, and (thread 0, once for the stack) announces
    /// the move out of it: a gratuitous ARP for `host_addr`, an unsolicited
    /// NA for `host_addr6`, so the switch and the peers learn the new path.
    #[cold]
    fn switch_port(&mut self, active: usize) {
        let crate::device::RxSource::Bond(rx) = &mut self.rx else {
            return;
        };
        rx.follow(active);
        self.tx.follow_bond(active);
        self.prepare();
        if self.index != 0 {
            return;
        }
        let mac = self.shared.local.mac.0;
        let mut frame = [0u8; dpdk::bond::NA_LEN];
        let mut sent = 0;
        if let Some(ip) = self.shared.local.ipv4 {
            let n = dpdk::bond::gratuitous_arp(mac, ip, &mut frame);
            self.send_frame(&frame[..n]);
            sent += 1;
        }
        if let Some(ip) = self.shared.local.ipv6 {
            let n = dpdk::bond::unsolicited_na(mac, ip, &mut frame);
            self.send_frame(&frame[..n]);
            sent += 1;
        }
        self.tx.flush();
        if let Some(b) = &self.shared.bond {
            b.announcements.add(sent);
        }
        tracing::info!(
            port = active,
            "bond: stack threads follow the new active port"
        );
    }

    /// Sends what answers `m` when [`route`] said `route` (see
    /// [`answer`]).
    fn answer(&mut self, m: &Mbuf, route: &Route, now_ns: u64) {
        let mut frame = [0u8; ANSWER_MAX];
        let Some(len) = answer(&self.shared, route, m.data(), now_ns, &mut frame) else {
            return;
        };
        if self.send_frame(&frame[..len]) {
            answered(&self.shared, self.index, route, now_ns);
        }
    }

    /// Sends a frame this layer built (not smoltcp), counted like its own.
    /// Returns whether it went to the transmit burst.
    fn send_frame(&mut self, frame: &[u8]) -> bool {
        let me = &self.shared.threads[self.index];
        let Some(mut out) = self.pool.alloc() else {
            me.stats.tx_nombuf.incr();
            return false;
        };
        let Some(buf) = out.append(frame.len()) else {
            return false;
        };
        buf.copy_from_slice(frame);
        me.stats.mib.count_tx(out.data());
        self.tx.push(out);
        true
    }

    /// Drops the handshakes the [`HalfOpen`] table gives up on: the oldest
    /// while it is over its limit, and any over their lifetime. Silently,
    /// as a kernel drops a request it gave up on: nothing is sent.
    fn reap_half_open(&mut self, now_ns: u64) {
        reap_half_open(&self.shared, self.index, &mut self.half_open, now_ns);
    }

    fn survived_panic(&self, what: &str) {
        let stats = &self.me().stats;
        stats.panics.incr();
        tracing::error!(
            thread = self.index,
            panics = stats.panics.get(),
            "stack thread recovered from a panic while {what}"
        );
    }

    /// Sleeps until frames arrive, the next timer, or the application
    /// wakes us (`mark_dirty`, `command`, a steered frame), whichever comes
    /// first. Where the receive queue can wake the thread (an af_packet
    /// socket, a receive interrupt) an idle stack costs nothing; a queue
    /// that cannot (ltran's ring) is looked at every `idle_sleep`.
    /// Frames found while arming an interrupt are left in `batch`.
    ///
    /// Returns `None` if it did not sleep (work was there, or a timer is
    /// due), else whether something woke it before its timeout.
    fn sleep(&mut self, now: u64, batch: &mut MbufBatch) -> Option<bool> {
        let next = self.next_poll.iter().copied().min().unwrap_or(u64::MAX);
        let mut max = match self.rx_wakeup {
            // Handshakes age even when nothing arrives.
            Some(_) if self.half_open.len() > 0 => 100_000,
            Some(_) => 1_000_000,
            None => self.shared.opts.idle_sleep.as_micros() as u64,
        };
        if self.kernel.as_ref().is_some_and(|k| k.wakeup.is_none()) {
            // A kernel side that cannot wake us is looked at every ms.
            max = max.min(1_000);
        }
        let wait = next.saturating_sub(now).min(max);
        if wait == 0 {
            return None;
        }
        let shared = Arc::clone(&self.shared);
        let me = &shared.threads[self.index];
        me.sleeping.fetch_add(1, Ordering::SeqCst);
        // Re-check after announcing: work queued before the flag was seen
        // would otherwise wait a whole sleep.
        let quiet = me.commands.is_empty()
            && me.steer.is_empty()
            && me.dirty.iter().all(|w| w.load(Ordering::SeqCst) == 0);
        let mut slept = None;
        if quiet && self.arm_rx(batch) {
            me.stats.sleeps.incr();
            let kernel = self.kernel.as_ref().and_then(|k| k.wakeup.as_ref());
            let woken = dpdk::wait_for_frames(
                &[std::os::fd::AsFd::as_fd(&me.wake_fd)],
                self.rx_wakeup.iter().chain(kernel),
                &mut [],
                Duration::from_micros(wait),
            );
            if woken.by_wake {
                let _ = me.wake_fd.read();
            }
            self.disarm_rx();
            slept = Some(woken.before_timeout);
        }
        me.sleeping.fetch_sub(1, Ordering::SeqCst);
        slept
    }

    /// The earliest smoltcp deadline of this thread's shards, in µs since
    /// the stack's clock started (`u64::MAX`: none).
    pub(super) fn next_timer_us(&self) -> u64 {
        self.next_poll.iter().copied().min().unwrap_or(u64::MAX)
    }

    /// Gets the receive queue ready to wake a sleep: arms its interrupt and
    /// receives once more (frames that came before arming raise nothing).
    /// False if frames came, into `batch`: no sleep then.
    pub(super) fn arm_rx(&mut self, batch: &mut MbufBatch) -> bool {
        let (Some(dpdk::RxWakeup::Interrupt { .. }), Some(q)) =
            (&self.rx_wakeup, self.rx.nic_queue_mut())
        else {
            return true;
        };
        if !q.arm_interrupt() {
            // The driver refused: sleep on the timer alone.
            return true;
        }
        if q.rx_burst(batch) > 0 {
            q.disarm_interrupt();
            return false;
        }
        true
    }

    /// After a sleep: disarms the interrupt armed by [`Worker::arm_rx`].
    pub(super) fn disarm_rx(&mut self) {
        if let (Some(dpdk::RxWakeup::Interrupt { .. }), Some(q)) =
            (&self.rx_wakeup, self.rx.nic_queue())
        {
            q.disarm_interrupt();
        }
    }

    fn touch(&mut self, shard: usize) {
        if !self.touched[shard] {
            self.touched[shard] = true;
            self.touched_list.push(shard);
        }
    }

    fn run_commands(&mut self, now: u64) -> bool {
        let mut any = false;
        let mut left = self.shared.commands_per_pass;
        while left > 0 {
            let Some(cmd) = self.shared.threads[self.index].commands.pop() else {
                break;
            };
            left -= 1;
            any = true;
            match cmd {
                Command::Connect {
                    shard,
                    mut socket,
                    remote,
                    local,
                    reply,
                    rx_mark,
                } => {
                    let res = socket.connect(self.iface.context(), remote, local);
                    let res = res.map(|()| {
                        let me = &self.shared.threads[self.index];
                        let mut inner = me.shards[shard].lock();
                        let h = inner.sockets.add(*socket);
                        inner.conns.push((h, tcp::State::SynSent));
                        rx_mark.arm(
                            &mut inner.armed,
                            RxSocket {
                                handle: h,
                                udp: false,
                                port: local.port,
                                remote: Some(remote),
                            },
                        );
                        drop(inner);
                        me.tcp_sockets.fetch_add(1, Ordering::Relaxed);
                        me.stats.mib.tcp.active_opens.incr();
                        h
                    });
                    *reply.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(res);
                    reply.event.notify();
                    self.touch(shard);
                    self.next_poll[shard] = now;
                }
                Command::Unlisten(listener) => self.unlisten(&listener),
            }
        }
        let taken = self.shared.commands_per_pass - left;
        self.me().stats.commands_pass_max.raise(taken as u64);
        any
    }

    fn unlisten(&mut self, listener: &Arc<ListenerShared>) {
        let me = &self.shared.threads[self.index];
        for (i, shard) in me.shards.iter().enumerate() {
            let mut inner = shard.lock();
            let inner = &mut *inner;
            let mut removed = 0;
            inner.spares.retain(|(h, l)| {
                if Arc::ptr_eq(l, listener) {
                    inner.sockets.remove(*h);
                    false
                } else {
                    true
                }
            });
            let half_open = &mut self.half_open;
            inner.embryos.retain(|e| {
                if Arc::ptr_eq(&e.listener, listener) {
                    inner.sockets.get_mut::<tcp::Socket<'_>>(e.handle).abort();
                    inner.orphans.push(Orphan {
                        handle: e.handle,
                        ephemeral: None,
                    });
                    half_open.leave(e.slot);
                    removed += 1;
                    false
                } else {
                    true
                }
            });
            if removed > 0 {
                // Handshakes cut short in SYN-RCVD.
                me.stats.mib.tcp.attempt_fails.add(removed);
                self.touched[i] = true;
                self.touched_list.push(i);
            }
        }
    }

    /// Takes one frame that arrived in the burst of `now_ns`; `steered`: it
    /// came from another thread, which counted it.
    fn ingress(&mut self, now_ns: u64, mut m: Mbuf, steered: bool) {
        let shared = &*self.shared;
        let me = &shared.threads[self.index];
        me.stats.rx_packets.incr();
        me.stats.rx_bytes.add(m.len() as u64);
        // A steered frame was untagged by the thread that received it.
        if let (Some(vlan), false) = (&shared.vlan, steered) {
            if !vlan.receive(&mut m) {
                me.stats.drop_frame(DropReason::NotOurVlan);
                return;
            }
        }
        let flags = m.ol_flags();
        let checked = RxChecked {
            ip_good: flags & dpdk_sys::flags::MBUF_F_RX_IP_CKSUM_MASK
                == dpdk_sys::flags::MBUF_F_RX_IP_CKSUM_GOOD,
            l4_good: flags & dpdk_sys::flags::MBUF_F_RX_L4_CKSUM_MASK
                == dpdk_sys::flags::MBUF_F_RX_L4_CKSUM_GOOD,
        };
        let (verdict, seen) = classify_seen(m.data(), &shared.local, checked);
        if !steered {
            me.stats.mib.count_rx(&verdict, &seen);
        }
        if let (Some(kernel), false) = (self.kernel.as_mut(), steered) {
            match crate::kernel::side(&shared.owned, &verdict, &seen) {
                Side::Stack => {}
                Side::Kernel => {
                    kernel.give(m, &me.stats);
                    return;
                }
                Side::Both => kernel.give_copy(&m, &self.pool, &me.stats),
            }
        }
        if seen.ipv6_ext_len > 0 && matches!(verdict, Verdict::Tcp { .. }) {
            let len = usize::from(seen.ipv6_ext_len);
            if strip_ipv6_extensions(m.data_mut(), len) {
                m.trim(len);
            }
        }
        let mut resolved = None;
        let route = route(
            shared,
            self.index,
            &mut self.tx.conformance,
            &mut self.half_open,
            &verdict,
            &seen,
            m.data_mut(),
            now_ns,
        );
        let (thread, shard) = match (route, verdict) {
            (Route::Deliver { thread, shard }, _) => (thread, shard),
            (Route::Drop, _) => return,
            (Route::Unreachable | Route::ChallengeAck { .. } | Route::SynChallenge { .. }, _) => {
                self.answer(&m, &route, now_ns);
                return;
            }
            (Route::Control, Verdict::Control { broadcast }) => {
                if broadcast && !steered && shared.threads.len() > 1 {
                    copy_to_others(shared, self.index, &self.pool, &m);
                }
                resolved = crate::conformance::neighbour_resolved(m.data());
                let mut thread = self.index;
                if matches!(
                    (seen.ip, seen.icmp_type),
                    (Some(IpVersion::Ipv4), Some(3)) | (Some(IpVersion::Ipv6), Some(2))
                ) {
                    thread = too_big(shared, self.index, &mut self.tx, &m, now_ns);
                }
                (thread, shared.threads[thread].control_shard())
            }
            // `route` says Control for control traffic only.
            (Route::Control, _) => return,
        };
        if thread != self.index {
            if shared.threads[thread].steer.push(m).is_err() {
                me.stats.steer_dropped.incr();
            } else {
                shared.threads[thread].wake();
            }
            return;
        }
        let ts = SmolInstant::from_micros((now_ns / 1000) as i64);
        {
            let mut inner = me.shards[shard].lock();
            self.tx.conformance.neighbours.start();
            let mut dev = FrameDevice {
                rx: Some(m),
                tx: &mut self.tx,
            };
            let iface = &mut self.iface;
            if let Verdict::Udp { port } = verdict {
                let inner = &mut *inner;
                me.stats
                    .mib
                    .deliver_udp(seen.ip == Some(IpVersion::Ipv6), || {
                        // A datagram with data that a socket of its port
                        // took without its queue growing met a full buffer.
                        let before = if seen.data {
                            inner.udp_queued(port)
                        } else {
                            None
                        };
                        let r = iface.poll_ingress_single(ts, &mut dev, &mut inner.sockets);
                        let full = before.is_some() && inner.udp_queued(port) == before;
                        (r, full)
                    });
            } else {
                iface.poll_ingress_single(ts, &mut dev, &mut inner.sockets);
            }
            dev.tx.conformance.rst_ack = None;
            if let Some(m) = dev.rx.take() {
                // UDP is never kept: a datagram a socket took would be
                // delivered twice.
                if matches!(verdict, Verdict::Udp { .. }) {
                    drop(m);
                } else {
                    let echo = matches!(seen.icmp_type, Some(8 | 128));
                    drop(dev.tx.conformance.neighbours.settle(m, echo));
                }
            }
            after_ingest(
                &mut inner,
                &self.shared,
                me,
                &mut self.half_open,
                (self.index, shard),
                &mut self.released,
                &verdict,
                &seen,
                now_ns,
            );
        }
        self.touch(shard);
        if let Some(addr) = resolved {
            self.ingest_waiting(now_ns, addr);
            self.touch_neighbour_waiters(now_ns);
        }
    }

    /// A neighbour became known: polls egress now on the shards due within
    /// smoltcp's neighbour-discovery silence (1 s), where a socket whose
    /// segment waits for that neighbour sleeps until then (smoltcp's
    /// `poll_at` gives the end of the silence, not "when the neighbour
    /// answers"). Without this a first connection to a new neighbour sends
    /// its SYN a second late. Bounded per frame by the thread's shards; an
    /// early egress poll of a shard with nothing due sends nothing.
    fn touch_neighbour_waiters(&mut self, now_ns: u64) {
        let horizon = now_ns / 1000 + NEIGHBOUR_SILENCE_US;
        for shard in 0..self.next_poll.len() {
            if self.next_poll[shard] <= horizon {
                self.touch(shard);
            }
        }
    }

    /// Ingests again the echo requests that waited for `addr`, now known
    /// (see [`crate::conformance::NeighbourWait`]).
    fn ingest_waiting(&mut self, now_ns: u64, addr: IpAddress) {
        while let Some(m) = self.tx.conformance.neighbours.take(addr) {
            // As a steered frame: counted once already, never copied on.
            self.ingress(now_ns, m, true);
        }
    }

    /// Polls egress on every shard that needs it; returns whether any did.
    fn egress(&mut self, now_ns: u64) -> bool {
        let now = now_ns / 1000;
        let me = &self.shared.threads[self.index];
        for (w, word) in me.dirty.iter().enumerate() {
            let mut bits = word.swap(0, Ordering::Acquire);
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let shard = w * 64 + b;
                if !self.touched[shard] {
                    self.touched[shard] = true;
                    self.touched_list.push(shard);
                }
            }
        }
        for (shard, due) in self.next_poll.iter().enumerate() {
            if *due <= now && !self.touched[shard] {
                self.touched[shard] = true;
                self.touched_list.push(shard);
            }
        }
        if self.touched_list.is_empty() {
            return false;
        }
        let ts = SmolInstant::from_micros(now as i64);
        let list = std::mem::take(&mut self.touched_list);
        for &shard in &list {
            self.touched[shard] = false;
            let me = &self.shared.threads[self.index];
            let mut inner = me.shards[shard].lock();
            self.iface.poll_maintenance(ts);
            let mut dev = FrameDevice {
                rx: None,
                tx: &mut self.tx,
            };
            self.iface.poll_egress(ts, &mut dev, &mut inner.sockets);
            settle(
                &mut inner,
                &self.shared,
                me,
                &mut self.half_open,
                (self.index, shard),
                &mut self.released,
                now_ns,
            );
            let next = self.iface.poll_at(ts, &inner.sockets);
            drop(inner);
            self.next_poll[shard] = next.map_or(u64::MAX, |t| t.total_micros().max(0) as u64);
            self.shared.release_ports(&mut self.released);
        }
        self.touched_list = list;
        self.touched_list.clear();
        true
    }
}

/// Takes an ICMP "fragmentation needed" or ICMPv6 Packet Too Big `m` that
/// thread `index` received (see [`crate::pmtu`]): if it quotes a flow
/// another thread owns, returns that thread, for the frame to go there;
/// else lowers the path MTU in `tx` if the quoted segment is in flight on a
/// flow of ours, counts it either way, and returns `index`.
fn too_big(shared: &StackShared, index: usize, tx: &mut TxPath, m: &Mbuf, now_ns: u64) -> usize {
    let Some(tb) = crate::pmtu::too_big(m.data()) else {
        return index;
    };
    if !shared.arrival_placement {
        let (owner, _) = shared.place(&tb.flow);
        if owner != index {
            return owner;
        }
    }
    let stats = &shared.threads[index].stats;
    if tx.conformance.in_flight(&tb.flow, tb.seq) {
        tx.pmtu.lower(tb.flow.remote_addr, tb.mtu, now_ns);
        stats.pmtu_learned.incr();
    } else {
        stats.pmtu_ignored.incr();
    }
    index
}

/// Sends a copy of a neighbour-discovery frame to every other thread.
fn copy_to_others(shared: &StackShared, index: usize, pool: &Mempool, m: &Mbuf) {
    let me = &shared.threads[index];
    for (i, t) in shared.threads.iter().enumerate() {
        if i == index {
            continue;
        }
        let Some(mut copy) = pool.alloc() else {
            me.stats.tx_nombuf.incr();
            return;
        };
        if let Some(buf) = copy.append(m.len()) {
            buf.copy_from_slice(m.data());
            if t.steer.push(copy).is_err() {
                me.stats.steer_dropped.incr();
            } else {
                t.wake();
            }
        }
    }
}
