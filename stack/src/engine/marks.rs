//! Receive-latency marks (see the module documentation of `engine`).

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use smoltcp::{
    iface::SocketHandle,
    socket::{tcp, udp},
    wire::IpEndpoint,
};

use super::ShardInner;
use crate::stats::LatencyHistogram;

/// When the data waiting on a socket arrived, for the receive latency (see
/// the module documentation). Read and written only under the socket's
/// shard lock; an atomic only so the application's socket and its shard can
/// share it.
#[derive(Debug, Default)]
pub(crate) struct RxMark(AtomicU64);

impl RxMark {
    /// Not known: data arrived before the socket was watched.
    const UNKNOWN: u64 = 0;
    /// The receive queue was empty; the socket is on its shard's `armed`
    /// list. Any other value is an arrival time, ns since the stack's epoch.
    const ARMED: u64 = u64::MAX;

    /// A new mark, shared by a socket and its shard.
    pub(crate) fn new() -> Arc<RxMark> {
        Arc::default()
    }

    /// Watches the next data of `socket` (whose queue is empty): puts it on
    /// its shard's `armed` list unless it is there already.
    pub(crate) fn arm(self: &Arc<Self>, armed: &mut Vec<Armed>, socket: RxSocket) {
        if self.0.load(Ordering::Relaxed) != Self::ARMED {
            self.0.store(Self::ARMED, Ordering::Relaxed);
            armed.push(Armed {
                socket,
                mark: Arc::clone(self),
            });
        }
    }

    /// Whether the socket is on its shard's `armed` list.
    pub(crate) fn is_armed(&self) -> bool {
        self.0.load(Ordering::Relaxed) == Self::ARMED
    }

    pub(super) fn stamp(&self, at_ns: u64) {
        self.0
            .store(at_ns.clamp(1, Self::ARMED - 1), Ordering::Relaxed);
    }

    /// After the application's read took data: records how long it waited
    /// (when known) into `latency`, and arms the socket again when the read
    /// left its queue empty (`rearm`). With data left, the mark stays: the
    /// next read is measured from the same arrival, an upper bound for the
    /// data that came later.
    pub(crate) fn took_data(
        self: &Arc<Self>,
        armed: &mut Vec<Armed>,
        rearm: Option<RxSocket>,
        now_ns: impl FnOnce() -> u64,
        latency: &LatencyHistogram,
    ) {
        let mark = self.0.load(Ordering::Relaxed);
        if mark != Self::UNKNOWN && mark != Self::ARMED {
            latency.record(now_ns().saturating_sub(mark));
        }
        if let Some(socket) = rearm {
            self.arm(armed, socket);
        }
    }
}

/// A socket whose next data is timed, and the traffic that can bring it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RxSocket {
    pub(crate) handle: SocketHandle,
    /// A UDP socket (else TCP).
    pub(crate) udp: bool,
    /// Its local port.
    pub(crate) port: u16,
    /// The peer of a TCP connection (UDP sockets go by port only).
    pub(crate) remote: Option<IpEndpoint>,
}

/// A socket whose receive queue was empty when last read.
#[derive(Debug)]
pub(crate) struct Armed {
    pub(crate) socket: RxSocket,
    mark: Arc<RxMark>,
}

/// Which sockets a received frame may have brought data to.
#[derive(Debug, Clone, Copy)]
pub(super) enum Arrival {
    /// A segment of one TCP flow.
    Tcp { port: u16, remote: IpEndpoint },
    /// A datagram to a local UDP port.
    Udp { port: u16 },
}

/// After smoltcp ingested a frame with data that arrived at `at_ns`: the
/// armed socket it filled gets that arrival time and leaves the list.
/// Entries are told apart by port and peer, so only the socket the frame
/// is for is looked at (for UDP, the few sockets of its port).
pub(super) fn stamp_arrivals(inner: &mut ShardInner, at_ns: u64, arrival: Arrival) {
    let ShardInner { sockets, armed, .. } = inner;
    match arrival {
        Arrival::Tcp { port, remote } => {
            let Some(i) = armed.iter().position(|a| {
                !a.socket.udp && a.socket.port == port && a.socket.remote == Some(remote)
            }) else {
                return;
            };
            if sockets
                .get::<tcp::Socket<'_>>(armed[i].socket.handle)
                .recv_queue()
                > 0
            {
                armed.swap_remove(i).mark.stamp(at_ns);
            }
        }
        Arrival::Udp { port } => armed.retain(|a| {
            if !a.socket.udp || a.socket.port != port {
                return true;
            }
            let ready = sockets.get::<udp::Socket<'_>>(a.socket.handle).can_recv();
            if ready {
                a.mark.stamp(at_ns);
            }
            !ready
        }),
    }
}
