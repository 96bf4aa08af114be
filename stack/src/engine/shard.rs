//! Socket shards: the socket sets a stack thread splits its TCP sockets
//! into, with the bookkeeping of their listener pool.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use smoltcp::{
    iface::{SocketHandle, SocketSet},
    socket::{tcp, udp},
    wire::IpEndpoint,
};

use super::{Armed, ListenerShared};

/// One shard of sockets and the bookkeeping of its listener pool.
#[derive(Debug)]
pub(crate) struct Shard {
    inner: Mutex<ShardInner>,
}

impl Shard {
    pub(super) fn new() -> Self {
        Self {
            inner: Mutex::new(ShardInner {
                sockets: SocketSet::new(Vec::new()),
                spares: Vec::new(),
                embryos: Vec::new(),
                orphans: Vec::new(),
                conns: Vec::new(),
                armed: Vec::new(),
                udp_ports: HashMap::new(),
            }),
        }
    }

    /// Locks the shard. A panic while holding it does not make it unusable:
    /// the socket set has no invariant a half-done operation breaks.
    pub(crate) fn lock(&self) -> MutexGuard<'_, ShardInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sockets of a shard.
pub(crate) struct ShardInner {
    pub(crate) sockets: SocketSet<'static>,
    /// Listening sockets waiting for a SYN.
    pub(super) spares: Vec<(SocketHandle, Arc<ListenerShared>)>,
    /// Former spares that took a SYN and are not yet established.
    pub(super) embryos: Vec<Embryo>,
    /// Sockets the application closed, removed once smoltcp is done with them.
    pub(super) orphans: Vec<Orphan>,
    /// Connections (accepted, or connecting and connected) with the state
    /// they had at the last look, for the TCP counters; dropped once closed.
    pub(super) conns: Vec<(SocketHandle, tcp::State)>,
    /// Sockets with an empty receive queue whose next data is timed.
    pub(crate) armed: Vec<Armed>,
    /// The UDP sockets of this shard by local port, to see whether a
    /// datagram found room in its socket.
    pub(crate) udp_ports: HashMap<u16, Vec<SocketHandle>>,
}

impl ShardInner {
    /// Bytes queued for the application in the UDP sockets of `port`;
    /// `None` when the shard has none.
    pub(super) fn udp_queued(&self, port: u16) -> Option<usize> {
        let handles = self.udp_ports.get(&port)?;
        Some(
            handles
                .iter()
                .map(|h| self.sockets.get::<udp::Socket<'_>>(*h).recv_queue())
                .sum(),
        )
    }
}

impl std::fmt::Debug for ShardInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardInner")
            .field("spares", &self.spares.len())
            .field("embryos", &self.embryos.len())
            .field("orphans", &self.orphans.len())
            .field("conns", &self.conns.len())
            .field("armed", &self.armed.len())
            .finish_non_exhaustive()
    }
}

/// A handshake in progress (SYN-RECEIVED): a former spare of `listener`,
/// with its place in the thread's [`HalfOpen`] table.
#[derive(Debug)]
pub(super) struct Embryo {
    pub(super) handle: SocketHandle,
    pub(super) listener: Arc<ListenerShared>,
    pub(super) slot: u32,
}

#[derive(Debug)]
pub(super) struct Orphan {
    pub(super) handle: SocketHandle,
    /// The ephemeral (port, remote) to give back once the socket is gone.
    pub(super) ephemeral: Option<(u16, IpEndpoint)>,
}

impl ShardInner {
    /// Hands a socket the application closed to the stack for reaping.
    pub(crate) fn orphan(&mut self, handle: SocketHandle, ephemeral: Option<(u16, IpEndpoint)>) {
        self.orphans.push(Orphan { handle, ephemeral });
    }
}
