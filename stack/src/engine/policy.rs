//! The engine's decisions, apart from its I/O: where a classified frame
//! goes and what answers it ([`route`]), what a SYN gets
//! ([`prepare_listener`]), and the bookkeeping after smoltcp ran on a shard
//! ([`after_ingest`], [`settle`]). They take the frame's bytes, the shared
//! state and the thread's tables, never an mbuf or a queue, so they run
//! without DPDK: in the unit tests below and in the `ingest` fuzz target
//! (through [`super::fuzzing`]), as in both stack modes (through
//! `Worker::step`).

use std::sync::{atomic::Ordering, Arc};

use smoltcp::{
    iface::{SocketHandle, SocketSet},
    socket::{tcp, AnySocket},
    wire::{EthernetFrame, EthernetRepr, IpEndpoint, IpListenEndpoint, TcpControl},
};

use super::marks::{stamp_arrivals, Arrival};
use super::{
    shard::{Embryo, Orphan},
    Accepted, RxMark, RxSocket, ShardInner, StackShared, ThreadShared,
};
use crate::{
    classify::{DropReason, FlowKey, Seen, Verdict},
    conformance::{bare_segment_end, Conformance, Incoming},
    handshake::{Challenge, End as HalfOpenEnd, HalfOpen},
    stats::ThreadStats,
};

/// Where a classified frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// To smoltcp with `shard` of `thread`: steered there first when
    /// `thread` is another one.
    Deliver { thread: usize, shard: usize },
    /// Dropped (counted where a counter applies).
    Drop,
    /// Dropped (counted) and answered with ICMP protocol unreachable.
    Unreachable,
    /// A TCP segment of `flow` answered with a challenge ACK (RFC 5961 3.2,
    /// 4.2) carrying SND.NXT `seq`, RCV.NXT `ack` and our `window`.
    ChallengeAck {
        flow: FlowKey,
        seq: u32,
        ack: u32,
        window: u16,
    },
    /// A SYN of `flow` answered with a challenge instead of a socket (see
    /// [`crate::handshake`]).
    SynChallenge { flow: FlowKey },
    /// ARP, NDP, ICMP and other control traffic: the caller's (it copies
    /// broadcasts to the other threads and follows ICMP errors to the
    /// thread of the flow they quote).
    Control,
}

/// Where thread `index` sends the frame `frame` that `classify_seen` gave
/// `verdict` and `seen` (IPv6 extension headers of a TCP segment already
/// removed, see [`strip_ipv6_extensions`]), at `now_ns`: TCP by flow, after
/// the RFC 5961 checks of the flows it owns (which may rewrite the
/// segment's ACK field), bare segments and SYNs (the listener pool, see
/// [`prepare_listener`]), and answers to SYN challenges; UDP to the shard of
/// its connected socket or the control shard of its port's thread. Drops
/// are counted here.
#[inline]
#[allow(clippy::too_many_arguments)]
pub(crate) fn route(
    shared: &StackShared,
    index: usize,
    conformance: &mut Conformance,
    half_open: &mut HalfOpen,
    verdict: &Verdict,
    seen: &Seen,
    frame: &mut [u8],
    now_ns: u64,
) -> Route {
    let me = &shared.threads[index];
    match *verdict {
        Verdict::Drop(reason) => {
            me.stats.drop_frame(reason);
            if reason == DropReason::UnsupportedProtocol && conformance.icmp_errors.allow(now_ns) {
                Route::Unreachable
            } else {
                Route::Drop
            }
        }
        Verdict::Tcp { flow, syn } => {
            let (mut thread, shard) = shared.place(&flow);
            if shared.arrival_placement {
                // Behind ltran, ltran chose the thread (fewest
                // connections, or the one that opened the flow).
                thread = index;
            }
            if thread == index {
                match conformance.check_incoming(&flow, frame, now_ns) {
                    Incoming::Pass => {}
                    Incoming::Drop => return Route::Drop,
                    Incoming::Challenge { seq, ack, window } => {
                        return Route::ChallengeAck {
                            flow,
                            seq,
                            ack,
                            window,
                        }
                    }
                }
                if seen.tcp_bare {
                    // No connection takes it; in LISTEN it is dropped,
                    // at a closed port smoltcp's RST gets its ACK.
                    if shared.find_listener(&flow).is_some() {
                        return Route::Drop;
                    }
                    conformance.rst_ack = bare_segment_end(frame);
                }
            }
            if thread == index && syn {
                match prepare_listener(shared, me, half_open, shard, &flow, now_ns) {
                    SynAction::Ingest => {}
                    SynAction::Drop => return Route::Drop,
                    SynAction::Challenge => return Route::SynChallenge { flow },
                }
            } else if seen.tcp_rst
                && now_ns < shared.challenges_until.load(Ordering::Relaxed)
                && shared.challenge.answered(frame, &flow, now_ns)
            {
                // A client proved it receives what we send it.
                shared.verify(flow.remote_addr, now_ns);
                me.stats.syn_challenges_answered.incr();
                return Route::Drop;
            }
            Route::Deliver { thread, shard }
        }
        Verdict::Udp { port } => {
            let t = shared.udp_thread(port);
            let mut shard = shared.threads[t].control_shard();
            if shared.connected_udp_count.load(Ordering::Relaxed) > 0 {
                if let Some(flow) = crate::classify::udp_flow(frame) {
                    let map = shared
                        .connected_udp
                        .read()
                        .unwrap_or_else(|e| e.into_inner());
                    if let Some(s) = map.get(&flow) {
                        shard = *s;
                    }
                }
            }
            Route::Deliver { thread: t, shard }
        }
        Verdict::Control { .. } => Route::Control,
    }
}

/// Longest answer [`answer`] writes.
pub(crate) const ANSWER_MAX: usize = if Challenge::FRAME_MAX > crate::conformance::UNREACHABLE_MAX {
    Challenge::FRAME_MAX
} else {
    crate::conformance::UNREACHABLE_MAX
};

/// The frame that answers `frame` when [`route`] said `route` (a challenge
/// ACK, a SYN challenge or an ICMP protocol unreachable), written into
/// `out`; its length, or `None` when there is none to send.
pub(crate) fn answer(
    shared: &StackShared,
    route: &Route,
    frame: &[u8],
    now_ns: u64,
    out: &mut [u8; ANSWER_MAX],
) -> Option<usize> {
    match *route {
        Route::ChallengeAck {
            flow,
            seq,
            ack,
            window,
        } => {
            let eth = EthernetFrame::new_checked(frame).ok()?;
            let eth = EthernetRepr {
                src_addr: shared.local.mac,
                dst_addr: eth.src_addr(),
                ethertype: eth.ethertype(),
            };
            let tcp = crate::handshake::bare_segment(&flow, TcpControl::None, seq, ack, window);
            crate::handshake::emit_frame(&eth, flow.local_addr, flow.remote_addr, &tcp, out)
        }
        Route::SynChallenge { flow } => {
            shared
                .challenge
                .syn_ack(frame, &flow, now_ns, shared.local.mac, out)
        }
        Route::Unreachable => crate::conformance::protocol_unreachable(
            frame,
            shared.local.mac.0,
            shared.local.ipv4?,
            out,
        ),
        Route::Deliver { .. } | Route::Drop | Route::Control => None,
    }
}

/// After the answer [`answer`] wrote for `route` went out from thread
/// `index`: a SYN challenge is counted, and RSTs are looked at as possible
/// answers to it for two challenge periods.
pub(crate) fn answered(shared: &StackShared, index: usize, route: &Route, now_ns: u64) {
    if let Route::SynChallenge { .. } = route {
        shared.threads[index].stats.syn_challenges.incr();
        shared.challenges_until.store(
            now_ns + crate::handshake::CHALLENGE_PERIOD_NS * 2,
            Ordering::Relaxed,
        );
    }
}

/// Removes `len` bytes of IPv6 extension headers that `classify_seen`
/// found skippable in front of a TCP segment, so that smoltcp sees
/// IPv6/TCP (it passes only Hop-by-Hop, and the control shard has no TCP
/// sockets): moves the segment up and fixes the IPv6 header. True when it
/// did; the caller then cuts `len` bytes off the frame's end. Rare: a copy
/// of the segment, no allocation.
pub(crate) fn strip_ipv6_extensions(data: &mut [u8], len: usize) -> bool {
    const IP: usize = 14;
    const UPPER: usize = IP + 40;
    if data.len() < UPPER + len {
        return false;
    }
    let payload_len = u16::from_be_bytes([data[IP + 4], data[IP + 5]]);
    let Some(payload_len) = payload_len.checked_sub(len as u16) else {
        return false;
    };
    data.copy_within(UPPER + len.., UPPER);
    data[IP + 4..IP + 6].copy_from_slice(&payload_len.to_be_bytes());
    data[IP + 6] = 6;
    true
}

/// After smoltcp ingested a frame of `verdict` into the shard at `place`
/// (`inner`, locked), at `now_ns`: a handshake an RST reset leaves the
/// listener pool at once, and the armed sockets the frame brought data to
/// get its arrival time.
#[inline]
#[allow(clippy::too_many_arguments)]
pub(crate) fn after_ingest(
    inner: &mut ShardInner,
    shared: &StackShared,
    me: &ThreadShared,
    half_open: &mut HalfOpen,
    place: (usize, usize),
    released: &mut Vec<(u16, IpEndpoint)>,
    verdict: &Verdict,
    seen: &Seen,
    now_ns: u64,
) {
    if seen.tcp_rst && matches!(verdict, Verdict::Tcp { .. }) {
        // A handshake this RST reset went back to LISTEN with what
        // it learnt of the peer: take it out of the pool now, not
        // at the next egress, or a SYN later in this burst lands
        // on it (RFC 9293 3.10.7.3: a reset handshake leaves no
        // state).
        settle(inner, shared, me, half_open, place, released, now_ns);
    }
    if seen.data && !inner.armed.is_empty() {
        let arrival = match *verdict {
            Verdict::Tcp { flow, .. } => Some(Arrival::Tcp {
                port: flow.local_port,
                remote: IpEndpoint::new(flow.remote_addr, flow.remote_port),
            }),
            Verdict::Udp { port } => Some(Arrival::Udp { port }),
            _ => None,
        };
        if let Some(arrival) = arrival {
            stamp_arrivals(inner, now_ns, arrival);
        }
    }
}

/// What to do with a SYN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SynAction {
    /// Hand it to smoltcp: a spare listens for it (or nobody does, and
    /// smoltcp resets it).
    Ingest,
    /// Drop it (counted): accept queue full or connection limit.
    Drop,
    /// Answer it with a challenge: the half-open table is full and its
    /// source is not proven (see [`crate::handshake`]).
    Challenge,
}

/// Makes sure `shard` has a listening socket for a SYN of `flow` that
/// arrived at `now_ns`, or says why not.
///
/// Handshakes in progress do not count against the backlog: a flood of
/// SYNs that are never completed would fill it and lock real clients out.
/// They are bounded by the thread's [`HalfOpen`] table instead, and while
/// it is full only sources that answered a challenge get a socket.
pub(crate) fn prepare_listener(
    shared: &StackShared,
    me: &ThreadShared,
    half_open: &mut HalfOpen,
    shard: usize,
    flow: &FlowKey,
    now_ns: u64,
) -> SynAction {
    let Some(listener) = shared.find_listener(flow) else {
        // No listener: smoltcp answers with RST, as a kernel would.
        return SynAction::Ingest;
    };
    let unaccepted = listener
        .queue
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .len();
    if unaccepted >= listener.backlog {
        me.stats.accept_overflow.incr();
        return SynAction::Drop;
    }
    if shared.tcp_sockets() >= shared.conn_limit {
        me.stats.conn_limit_refused.incr();
        return SynAction::Drop;
    }
    let mut inner = me.shards[shard].lock();
    settle_spares(&mut inner, shared, me, half_open, shard, now_ns);
    let remote = IpEndpoint::new(flow.remote_addr, flow.remote_port);
    let duplicate = inner.sockets.iter().any(|(_, s)| {
        tcp::Socket::downcast(s).is_some_and(|t| {
            t.state() != tcp::State::Listen
                && t.remote_endpoint() == Some(remote)
                && t.local_endpoint()
                    .is_some_and(|l| l.port == flow.local_port)
        })
    });
    if duplicate {
        // A retransmitted SYN of a flow we already have: a spare listener
        // must not steal it from its socket, so drop the spares for now.
        let ShardInner {
            sockets, spares, ..
        } = &mut *inner;
        spares.retain(|(h, l)| {
            if Arc::ptr_eq(l, &listener) {
                sockets.remove(*h);
                false
            } else {
                true
            }
        });
        return SynAction::Ingest;
    }
    if half_open.is_full() && !shared.is_verified(&flow.remote_addr, now_ns) {
        return SynAction::Challenge;
    }
    // Spares listen on the exact local address, so a spare of one family's
    // wildcard never takes a SYN meant for another listener.
    let local = IpListenEndpoint {
        addr: Some(flow.local_addr),
        port: flow.local_port,
    };
    let has_spare = {
        let ShardInner {
            sockets, spares, ..
        } = &*inner;
        spares.iter().any(|(h, l)| {
            Arc::ptr_eq(l, &listener)
                && sockets.get::<tcp::Socket<'_>>(*h).listen_endpoint() == local
        })
    };
    if !has_spare {
        let req = *listener.buffers.lock().unwrap_or_else(|e| e.into_inner());
        let mut s = shared.new_tcp_socket(req);
        if s.listen(local).is_err() {
            return SynAction::Ingest;
        }
        let h = inner.sockets.add(s);
        inner.spares.push((h, listener));
    }
    SynAction::Ingest
}

/// Moves spares of `shard` that took a SYN (by `now_ns`) to the embryos.
fn settle_spares(
    inner: &mut ShardInner,
    shared: &StackShared,
    me: &ThreadShared,
    half_open: &mut HalfOpen,
    shard: usize,
    now_ns: u64,
) {
    let ShardInner {
        sockets,
        spares,
        embryos,
        ..
    } = inner;
    spares.retain(|(h, l)| {
        let s = sockets.get::<tcp::Socket<'_>>(*h);
        if s.state() == tcp::State::Listen {
            return true;
        }
        let verified = s
            .remote_endpoint()
            .is_some_and(|r| shared.is_verified(&r.addr, now_ns));
        l.pending.fetch_add(1, Ordering::Relaxed);
        me.tcp_sockets.fetch_add(1, Ordering::Relaxed);
        me.stats.mib.tcp.passive_opens.incr();
        embryos.push(Embryo {
            handle: *h,
            listener: Arc::clone(l),
            slot: half_open.admit(shard, *h, now_ns, verified),
        });
        false
    });
}

/// Bookkeeping after smoltcp ran on a shard (at `now_ns`): embryos that
/// completed go to their accept queue, failed ones back to the pool or away,
/// watched connections are counted, and orphans smoltcp is done with are
/// removed. Returns ephemeral ports to release.
#[allow(clippy::too_many_arguments)]
pub(crate) fn settle(
    inner: &mut ShardInner,
    shared: &StackShared,
    me: &ThreadShared,
    half_open: &mut HalfOpen,
    place: (usize, usize),
    released: &mut Vec<(u16, IpEndpoint)>,
    now_ns: u64,
) {
    settle_spares(inner, shared, me, half_open, place.1, now_ns);
    let ShardInner {
        sockets,
        embryos,
        orphans,
        conns,
        armed,
        ..
    } = inner;
    let tcp_mib = &me.stats.mib.tcp;
    if !embryos.is_empty() {
        embryos.retain(|e| {
            let (h, l) = (&e.handle, &e.listener);
            let s = sockets.get_mut::<tcp::Socket<'_>>(*h);
            let state = s.state();
            if state == tcp::State::SynReceived {
                return true;
            }
            half_open.leave(e.slot);
            match state {
                tcp::State::Listen => {
                    // The handshake was reset and smoltcp went back to
                    // LISTEN, keeping what it learnt of that peer (MSS,
                    // window scale, timers): the socket is not reused,
                    // a fresh spare takes the next SYN.
                    tcp_mib.attempt_fails.incr();
                    l.pending.fetch_sub(1, Ordering::Relaxed);
                    me.tcp_sockets.fetch_sub(1, Ordering::Relaxed);
                    sockets.remove(*h);
                    false
                }
                tcp::State::Closed | tcp::State::TimeWait => {
                    tcp_mib.attempt_fails.incr();
                    l.pending.fetch_sub(1, Ordering::Relaxed);
                    orphans.push(Orphan {
                        handle: *h,
                        ephemeral: None,
                    });
                    false
                }
                _ => {
                    l.pending.fetch_sub(1, Ordering::Relaxed);
                    me.stats.tcp_established.incr();
                    let Some(remote) = s.remote_endpoint() else {
                        s.abort();
                        orphans.push(Orphan {
                            handle: *h,
                            ephemeral: None,
                        });
                        return false;
                    };
                    conns.push((*h, s.state()));
                    // Data that came with the handshake's last ACK arrived
                    // in this loop's burst.
                    let rx_mark = RxMark::new();
                    if s.recv_queue() > 0 {
                        rx_mark.stamp(now_ns);
                    } else if let Some(local) = s.local_endpoint() {
                        rx_mark.arm(
                            armed,
                            RxSocket {
                                handle: *h,
                                udp: false,
                                port: local.port,
                                remote: Some(remote),
                            },
                        );
                    }
                    l.queue
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_back(Accepted {
                            thread: place.0,
                            shard: place.1,
                            handle: *h,
                            remote,
                            rx_mark,
                        });
                    l.event.notify();
                    false
                }
            }
        });
    }
    if !conns.is_empty() {
        watch_connections(conns, sockets, &me.stats);
    }
    if !orphans.is_empty() {
        orphans.retain(|o| {
            let state = sockets.get::<tcp::Socket<'_>>(o.handle).state();
            if state != tcp::State::Closed {
                return true;
            }
            // Watched connections left `conns` when they closed, above;
            // an armed one left `armed` when the application dropped it,
            // but a handle must never outlive its socket in either list:
            // a new socket may get it.
            if !armed.is_empty() {
                armed.retain(|a| a.socket.handle != o.handle);
            }
            sockets.remove(o.handle);
            me.tcp_sockets.fetch_sub(1, Ordering::Relaxed);
            if let Some(e) = o.ephemeral {
                released.push(e);
            }
            false
        });
    }
}

/// Counts what happened to the watched connections since the last look:
/// handshakes of `connect` that completed or failed, and connections reset
/// (or timed out) from ESTABLISHED or CLOSE-WAIT. Closed ones stop being
/// watched.
fn watch_connections(
    conns: &mut Vec<(SocketHandle, tcp::State)>,
    sockets: &SocketSet<'_>,
    stats: &ThreadStats,
) {
    use tcp::State::*;
    conns.retain_mut(|(h, last)| {
        let state = sockets.get::<tcp::Socket<'_>>(*h).state();
        if state == *last {
            return true;
        }
        match (*last, state) {
            (SynSent | SynReceived, Closed) => stats.mib.tcp.attempt_fails.incr(),
            (SynSent | SynReceived, Listen | SynSent | SynReceived) => {}
            (SynSent | SynReceived, _) => stats.tcp_established.incr(),
            (Established | CloseWait, Closed) => stats.mib.tcp.estab_resets.incr(),
            _ => {}
        }
        *last = state;
        state != Closed
    });
}

/// A thread's table of handshakes in progress: a bounded share of
/// `tcp_conn_count`, so that a flood of handshakes never takes the room of
/// established connections.
pub(crate) fn half_open_table(shared: &StackShared) -> HalfOpen {
    let limit = (shared.conn_limit / 4 / shared.threads.len()).max(16);
    HalfOpen::new(limit, shared.opts.syn_recv_lifetime)
}

/// Drops the handshakes thread `index`'s [`HalfOpen`] table gives up on
/// at `now_ns`: the oldest while it is over its limit, and any over their
/// lifetime. Silently, as a kernel drops a request it gave up on: nothing is
/// sent.
pub(crate) fn reap_half_open(
    shared: &StackShared,
    index: usize,
    half_open: &mut HalfOpen,
    now_ns: u64,
) {
    let me = &shared.threads[index];
    while let Some((slot, entry, why)) = half_open.victim(now_ns) {
        let mut inner = me.shards[entry.shard as usize].lock();
        let ShardInner {
            sockets, embryos, ..
        } = &mut *inner;
        if let Some(at) = embryos.iter().position(|e| e.slot == slot) {
            let embryo = embryos.swap_remove(at);
            debug_assert!(embryo.handle == entry.handle);
            sockets.remove(embryo.handle);
            embryo.listener.pending.fetch_sub(1, Ordering::Relaxed);
            me.tcp_sockets.fetch_sub(1, Ordering::Relaxed);
            me.stats.mib.tcp.attempt_fails.incr();
            match why {
                HalfOpenEnd::Evicted => me.stats.half_open_evicted.incr(),
                HalfOpenEnd::Expired => me.stats.half_open_expired.incr(),
            }
        }
        drop(inner);
        half_open.leave(slot);
    }
    me.stats.half_open.set(half_open.len() as u64);
}
