//! The engine's per-frame policy without DPDK, for the `ingest` fuzz target
//! (`fuzz/src/ingest.rs`) and the engine's unit tests: one stack thread's
//! shards, listener pool and decisions ([`super::policy`]), driven by the
//! caller's smoltcp interface and device instead of a NIC queue. What runs
//! is the code `Worker::step` runs; only the I/O around it (mbufs, queues,
//! steering to other threads) is the caller's. Not a stable API.
//!
//! A frame goes through [`Engine::receive`] (classify, the MIB counters,
//! [`super::policy::route`], the engine's own answers), then, if it is for
//! a shard, the caller's `Interface::poll_ingress_single` with
//! [`Engine::sockets`], then [`Engine::ingested`]. After the caller's
//! `poll_egress` on a shard, [`Engine::settle`] does the engine's
//! bookkeeping, and [`Engine::end_pass`] what the end of a pass does.
//! Every frame smoltcp transmits goes through [`TxFixes::on_transmit`], as
//! the stack's transmit path does.

use std::{
    net::Ipv4Addr,
    ops::{Deref, DerefMut},
    sync::{Arc, Mutex, MutexGuard},
};

use smoltcp::{
    iface::{SocketHandle, SocketSet},
    socket::tcp,
    wire::{IpEndpoint, IpListenEndpoint},
};

use super::{
    policy::{
        after_ingest, answer, answered, half_open_table, reap_half_open, route, settle,
        strip_ipv6_extensions, Route, ANSWER_MAX,
    },
    ListenerShared, ShardInner, StackShared,
};
use crate::{
    classify::{classify_seen, LocalAddrs, RxChecked, Seen, Verdict},
    conformance::Conformance,
    event::Event,
    handshake::HalfOpen,
    stats::ThreadStats,
    LstackConfig, StackOptions,
};

/// The thread the engine plays: the only one.
const THREAD: usize = 0;

/// One stack thread's policy state (see the module documentation).
#[derive(Debug)]
pub struct Engine {
    shared: Arc<StackShared>,
    half_open: HalfOpen,
    released: Vec<(u16, IpEndpoint)>,
}

/// A thread's RFC fixes over smoltcp (RFC 5961 checks of incoming segments,
/// the ACK of smoltcp's RSTs): its state, and what the transmit path does
/// to every frame smoltcp writes. The caller's device owns it, as the
/// stack's transmit path does.
#[derive(Debug)]
pub struct TxFixes(Conformance);

impl TxFixes {
    /// Room for `flows` TCP flows.
    pub fn new(flows: usize) -> Self {
        Self(Conformance::new(flows))
    }

    /// What the stack's transmit path does to `frame`, just written by
    /// smoltcp (checksums computed in software, as without offloads).
    pub fn on_transmit(&mut self, frame: &mut [u8]) {
        self.0.on_transmit(frame, true);
    }
}

/// What [`Engine::receive`] made of a frame.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// `classify`'s verdict.
    pub verdict: Verdict,
    seen: Seen,
    shard: Option<usize>,
}

impl Received {
    /// The shard whose sockets smoltcp ingests the frame with; `None`: it
    /// was dropped or answered.
    pub fn shard(&self) -> Option<usize> {
        self.shard
    }
}

/// A shard's sockets, locked.
#[derive(Debug)]
pub struct Sockets<'a>(MutexGuard<'a, ShardInner>);

impl Deref for Sockets<'_> {
    type Target = SocketSet<'static>;
    fn deref(&self) -> &SocketSet<'static> {
        &self.0.sockets
    }
}

impl DerefMut for Sockets<'_> {
    fn deref_mut(&mut self) -> &mut SocketSet<'static> {
        &mut self.0.sockets
    }
}

impl Engine {
    /// A stack of one thread with `tcp_shards` TCP shards (and the control
    /// shard), addresses `local`, at most `conn_limit` TCP connections, the
    /// flow hash keyed with `seed`, and the options of a default
    /// configuration otherwise.
    pub fn new(local: LocalAddrs, tcp_shards: usize, conn_limit: usize, seed: u64) -> Engine {
        // Only for the defaults it sizes: the addresses are `local`.
        let config = LstackConfig::new(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(255, 255, 255, 0),
            gazelle_config::MacAddr::new([2, 0, 0, 0, 0, 1]).expect("a unicast MAC"),
        );
        let mut opts = StackOptions::for_config(&config);
        opts.tcp_shards = tcp_shards.max(1);
        opts.control_socket = None;
        let shared = Arc::new(StackShared::new(1, opts, local, conn_limit, seed));
        let half_open = half_open_table(&shared);
        Engine {
            shared,
            half_open,
            released: Vec::new(),
        }
    }

    /// The stack's state (for the unit tests).
    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Arc<StackShared> {
        &self.shared
    }

    /// Whether the table of handshakes in progress is full.
    #[cfg(test)]
    pub(crate) fn half_open_is_full(&self) -> bool {
        self.half_open.is_full()
    }

    /// Listens on `port` of every address, IPv4 and IPv6, as a
    /// `TcpListener` does, with room for `backlog` unaccepted connections.
    pub fn listen(&self, port: u16, backlog: usize) {
        let listener = Arc::new(ListenerShared {
            endpoint: IpListenEndpoint { addr: None, port },
            v4: true,
            v6: true,
            backlog: backlog.clamp(1, 65535),
            queue: Mutex::new(Default::default()),
            pending: Default::default(),
            event: Event::new(),
            closed: Default::default(),
            buffers: Default::default(),
        });
        self.shared
            .listeners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(port)
            .or_default()
            .push(listener);
    }

    /// Shards, the control shard included (the last one).
    pub fn shards(&self) -> usize {
        self.shared.threads[THREAD].shards.len()
    }

    /// The control shard: ARP, NDP, ICMP, UDP.
    pub fn control_shard(&self) -> usize {
        self.shared.threads[THREAD].control_shard()
    }

    /// The sockets of `shard`, locked.
    pub fn sockets(&self, shard: usize) -> Sockets<'_> {
        Sockets(self.shared.threads[THREAD].shards[shard].lock())
    }

    /// The thread's counters.
    pub fn stats(&self) -> &ThreadStats {
        &self.shared.threads[THREAD].stats
    }

    /// Live TCP sockets (spares excluded).
    pub fn tcp_sockets(&self) -> usize {
        self.shared.tcp_sockets()
    }

    /// What the stack thread does with `frame`, received at `now_ns`
    /// (stack clock) with the checksum flags `checked`, before smoltcp
    /// sees it: classify, count, remove skippable IPv6 extension headers
    /// (the frame may get shorter), the RFC 5961 checks (which may rewrite
    /// it), the listener pool, and where it goes. A frame the engine answers
    /// itself (challenge ACK, SYN challenge, ICMP protocol unreachable) has
    /// its answer appended to `answer`.
    pub fn receive(
        &mut self,
        frame: &mut Vec<u8>,
        checked: RxChecked,
        now_ns: u64,
        fixes: &mut TxFixes,
        answer_out: &mut Vec<u8>,
    ) -> Received {
        let shared = &*self.shared;
        let me = &shared.threads[THREAD];
        fixes.0.now_ns = now_ns;
        me.stats.rx_packets.incr();
        me.stats.rx_bytes.add(frame.len() as u64);
        let (verdict, seen) = classify_seen(frame, &shared.local, checked);
        me.stats.mib.count_rx(&verdict, &seen);
        if seen.ipv6_ext_len > 0 && matches!(verdict, Verdict::Tcp { .. }) {
            let len = usize::from(seen.ipv6_ext_len);
            if strip_ipv6_extensions(frame, len) {
                frame.truncate(frame.len() - len);
            }
        }
        let r = route(
            shared,
            THREAD,
            &mut fixes.0,
            &mut self.half_open,
            &verdict,
            &seen,
            frame,
            now_ns,
        );
        let shard = match r {
            Route::Deliver { thread, shard } => (thread == THREAD).then_some(shard),
            Route::Drop => None,
            Route::Control => Some(me.control_shard()),
            Route::Unreachable | Route::ChallengeAck { .. } | Route::SynChallenge { .. } => {
                let mut out = [0u8; ANSWER_MAX];
                if let Some(len) = answer(shared, &r, frame, now_ns, &mut out) {
                    answer_out.extend_from_slice(&out[..len]);
                    answered(shared, THREAD, &r, now_ns);
                }
                None
            }
        };
        Received {
            verdict,
            seen,
            shard,
        }
    }

    /// After smoltcp ingested the frame `received` into its shard, at
    /// `now_ns`.
    pub fn ingested(&mut self, received: &Received, fixes: &mut TxFixes, now_ns: u64) {
        fixes.0.rst_ack = None;
        let Some(shard) = received.shard else {
            return;
        };
        let shared = &*self.shared;
        let me = &shared.threads[THREAD];
        let mut inner = me.shards[shard].lock();
        after_ingest(
            &mut inner,
            shared,
            me,
            &mut self.half_open,
            (THREAD, shard),
            &mut self.released,
            &received.verdict,
            &received.seen,
            now_ns,
        );
        drop(inner);
        self.release_ports();
    }

    /// The engine's bookkeeping after smoltcp polled `shard` at `now_ns`
    /// (its spares, handshakes, accept queues, counters, closed sockets).
    pub fn settle(&mut self, shard: usize, now_ns: u64) {
        let shared = &*self.shared;
        let me = &shared.threads[THREAD];
        let mut inner = me.shards[shard].lock();
        settle(
            &mut inner,
            shared,
            me,
            &mut self.half_open,
            (THREAD, shard),
            &mut self.released,
            now_ns,
        );
        drop(inner);
        self.release_ports();
    }

    /// The end of a pass at `now_ns`: handshakes that aged are dropped.
    pub fn end_pass(&mut self, now_ns: u64) {
        if self.half_open.len() > 0 {
            reap_half_open(&self.shared, THREAD, &mut self.half_open, now_ns);
        }
    }

    /// The application accepts a connection of any listener: its shard and
    /// socket.
    pub fn accept(&self) -> Option<(usize, SocketHandle, IpEndpoint)> {
        let map = self
            .shared
            .listeners
            .read()
            .unwrap_or_else(|e| e.into_inner());
        map.values().flatten().find_map(|l| {
            let a = l
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()?;
            Some((a.shard, a.handle, a.remote))
        })
    }

    /// The application drops a connection it accepted, as `TcpStream`'s
    /// drop does: reset with `abort` (`SO_LINGER` 0) or unread data, else
    /// closed; the engine reaps it once smoltcp is done with it.
    pub fn close(&self, shard: usize, handle: SocketHandle, abort: bool) {
        let mut inner = self.shared.threads[THREAD].shards[shard].lock();
        inner.armed.retain(|a| a.socket.handle != handle);
        let s = inner.sockets.get_mut::<tcp::Socket<'static>>(handle);
        if abort || s.recv_queue() > 0 {
            s.abort();
        } else {
            s.close();
        }
        inner.orphan(handle, None);
    }

    fn release_ports(&mut self) {
        self.shared.release_ports(&mut self.released);
    }
}

/// Nanoseconds on the stack clock of smoltcp's `now`, as the stack thread
/// times its passes.
pub fn now_ns(now: smoltcp::time::Instant) -> u64 {
    now.total_micros().max(0) as u64 * 1000
}
