//! The listener pool's decisions: what a SYN gets ([`prepare_listener`]),
//! and the bookkeeping after smoltcp ran on a shard ([`settle`]).

use std::sync::{atomic::Ordering, Arc};

use smoltcp::{
    iface::{SocketHandle, SocketSet},
    socket::{tcp, AnySocket},
    wire::{IpEndpoint, IpListenEndpoint},
};

use super::{
    shard::{Embryo, Orphan},
    Accepted, RxMark, RxSocket, ShardInner, StackShared, ThreadShared,
};
use crate::{classify::FlowKey, handshake::HalfOpen, stats::ThreadStats};

/// What to do with a SYN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SynAction {
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
pub(super) fn prepare_listener(
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
pub(super) fn settle(
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
