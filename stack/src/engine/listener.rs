//! Listening ports as the application and every stack thread share them.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, AtomicUsize},
        Arc, Mutex,
    },
};

use smoltcp::{
    iface::SocketHandle,
    wire::{IpAddress, IpEndpoint, IpListenEndpoint},
};

use super::RxMark;
use crate::event::Event;

/// A connection that finished its handshake and waits in an accept queue.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub(crate) thread: usize,
    pub(crate) shard: usize,
    pub(crate) handle: SocketHandle,
    pub(crate) remote: IpEndpoint,
    pub(crate) rx_mark: Arc<RxMark>,
}

/// A listening port, shared by the application's listener and every thread.
#[derive(Debug)]
pub(crate) struct ListenerShared {
    pub(crate) endpoint: IpListenEndpoint,
    /// Accepts IPv4 connections (an IPv4 socket, or a dual-stack IPv6 one).
    pub(crate) v4: bool,
    /// Accepts IPv6 connections.
    pub(crate) v6: bool,
    pub(crate) backlog: usize,
    pub(crate) queue: Mutex<VecDeque<Accepted>>,
    /// Handshakes in progress, counted against the backlog.
    pub(crate) pending: AtomicUsize,
    pub(crate) event: Arc<Event>,
    pub(crate) closed: AtomicBool,
    /// Buffer sizes of the connections it accepts from now on.
    pub(crate) buffers: Mutex<crate::BufferRequest>,
}

impl ListenerShared {
    pub(super) fn accepts(&self, addr: &IpAddress) -> bool {
        let family = match addr {
            IpAddress::Ipv4(_) => self.v4,
            IpAddress::Ipv6(_) => self.v6,
        };
        family && self.endpoint.addr.is_none_or(|a| a == *addr)
    }
}
