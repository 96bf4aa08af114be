//! The native socket API: what the POSIX layer (`liblstack.so`) sits on.
//!
//! Application threads call these from their own threads. Each call locks
//! only the shard that holds its socket (never a global lock), copies data
//! in or out of the socket buffer, marks the shard for the stack thread and
//! returns. Blocking calls sleep on an [`Event`] registered as the socket's
//! smoltcp waker; they never spin.

use std::{
    io,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use smoltcp::{
    iface::SocketHandle,
    socket::AnySocket,
    socket::{tcp, udp},
    wire::{IpAddress, IpEndpoint, IpListenEndpoint},
};

use crate::{
    classify::FlowKey,
    engine::{
        Accepted, Armed, Command, ConnectReply, ListenerShared, RxMark, RxSocket, StackShared,
    },
    event::Event,
    ownership::{PortClaim, Proto},
    BufferRequest, Stack,
};

fn to_endpoint(addr: SocketAddr) -> IpEndpoint {
    IpEndpoint::new(IpAddress::from(addr.ip()), addr.port())
}

fn to_socket_addr(ep: IpEndpoint) -> SocketAddr {
    SocketAddr::new(ep.addr.into(), ep.port)
}

/// Readiness of a socket, as `poll(2)` would report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Data (or EOF, or a pending connection) can be read without blocking.
    pub readable: bool,
    /// Data can be written without blocking.
    pub writable: bool,
    /// The peer closed its sending side (EOF reached once buffered data is read).
    pub read_closed: bool,
    /// The connection is gone (reset, or fully closed).
    pub hangup: bool,
    /// The connection failed (refused or reset): `POLLERR`.
    pub error: bool,
}

/// What a readiness hook wants to be woken for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interest {
    /// Data, end of stream, or an incoming connection.
    pub read: bool,
    /// Room to send.
    pub write: bool,
}

impl Interest {
    /// Both directions.
    pub const BOTH: Interest = Interest {
        read: true,
        write: true,
    };

    fn dirs(self) -> u8 {
        let d = (if self.read { crate::event::RX } else { 0 })
            | (if self.write { crate::event::TX } else { 0 });
        // Hang-ups and errors are always reported: with no interest, any
        // change (state changes wake both directions) is one.
        if d == 0 {
            crate::event::RX | crate::event::TX
        } else {
            d
        }
    }
}

impl Stack {
    /// Listens on `addr` (port 0 is refused; an unspecified IP means every
    /// address of the stack) with room for `backlog` unaccepted connections.
    pub fn tcp_listen(&self, addr: SocketAddr, backlog: usize) -> io::Result<TcpListener> {
        self.tcp_listen_dual(addr, backlog, false)
    }

    /// The receive and send buffer sizes a TCP socket gets for `req`: the
    /// value asked for doubled (as Linux reports it), the receive buffer as
    /// [`tcp_rx_buffer_size`](crate::tcp_rx_buffer_size) rounds it, the send buffer within [`MIN_TCP_TX_BUFFER`](crate::MIN_TCP_TX_BUFFER)..=[`MAX_TCP_TX_BUFFER`](crate::MAX_TCP_TX_BUFFER);
    /// the stack's defaults where nothing is asked.
    pub fn tcp_buffer_sizes(&self, req: BufferRequest) -> (usize, usize) {
        self.shared.tcp_buffer_sizes(req)
    }

    /// Like [`Stack::tcp_listen`]; with `v4_too`, an IPv6 wildcard also
    /// accepts IPv4 connections (an IPv6 socket without `IPV6_V6ONLY`).
    pub fn tcp_listen_dual(
        &self,
        addr: SocketAddr,
        backlog: usize,
        v4_too: bool,
    ) -> io::Result<TcpListener> {
        if addr.port() == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "listening on port 0 is not supported",
            ));
        }
        let ip = IpAddress::from(addr.ip());
        let endpoint = if addr.ip().is_unspecified() {
            IpListenEndpoint {
                addr: None,
                port: addr.port(),
            }
        } else {
            if !self.owns(&ip) {
                return Err(io::Error::new(
                    io::ErrorKind::AddrNotAvailable,
                    format!("{} is not an address of this stack", addr.ip()),
                ));
            }
            IpListenEndpoint {
                addr: Some(ip),
                port: addr.port(),
            }
        };
        let dual = v4_too && addr.is_ipv6() && addr.ip().is_unspecified();
        let shared = Arc::new(ListenerShared {
            endpoint,
            v4: addr.is_ipv4() || dual,
            v6: addr.is_ipv6(),
            backlog: backlog.clamp(1, 65535),
            queue: Mutex::new(Default::default()),
            pending: Default::default(),
            event: Event::new(),
            closed: Default::default(),
            buffers: Default::default(),
        });
        let mut map = self
            .shared
            .listeners
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let list = map.entry(addr.port()).or_default();
        let clash = list.iter().any(|l| {
            ((l.v4 && shared.v4) || (l.v6 && shared.v6))
                && (l.endpoint.addr.is_none()
                    || endpoint.addr.is_none()
                    || l.endpoint.addr == endpoint.addr)
        });
        if clash {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{addr} is already listened on"),
            ));
        }
        list.push(Arc::clone(&shared));
        drop(map);
        if let Some(homes) = &self.shared.port_home {
            let t = homes.listen(addr.port());
            tracing::debug!(
                port = addr.port(),
                thread = t,
                "listen_shadow = 0: the port's connections are served by one stack thread"
            );
        }
        if let Some(link) = self.shared.ltran.get() {
            link.listen(&endpoint, shared.v6, true);
        }
        Ok(TcpListener {
            _claim: PortClaim::new(&self.shared.owned, Proto::Tcp, addr.port()),
            stack: Arc::clone(&self.shared),
            shared,
            nonblocking: AtomicBool::new(false),
        })
    }

    /// Connects to `remote`, blocking until established or refused, for at
    /// most `timeout` (`None`: smoltcp's own retransmission limits).
    pub fn tcp_connect(
        &self,
        remote: SocketAddr,
        timeout: Option<Duration>,
    ) -> io::Result<TcpStream> {
        let stream = self.tcp_connect_start(remote)?;
        let deadline = timeout.map(|t| Instant::now() + t);
        stream.wait_connected(deadline)?;
        Ok(stream)
    }

    /// Starts connecting to `remote` and returns at once (the non-blocking
    /// `connect`, `EINPROGRESS`); see [`TcpStream::connect_result`].
    pub fn tcp_connect_start(&self, remote: SocketAddr) -> io::Result<TcpStream> {
        self.tcp_connect_start_with(remote, BufferRequest::default())
    }

    /// [`Stack::tcp_connect_start`] with the socket buffers `buffers` asks
    /// for.
    pub fn tcp_connect_start_with(
        &self,
        remote: SocketAddr,
        buffers: BufferRequest,
    ) -> io::Result<TcpStream> {
        let shared = &self.shared;
        let local_ip = match remote {
            SocketAddr::V4(_) => shared.local.ipv4.map(IpAddress::Ipv4),
            SocketAddr::V6(_) => shared.local.ipv6.map(IpAddress::Ipv6),
        }
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("the stack has no address of {remote}'s family"),
            )
        })?;
        let remote_ep = to_endpoint(remote);
        let listening = |port: u16| {
            shared
                .listeners
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&port)
                .is_some_and(|l| !l.is_empty())
        };
        let port = shared
            .ephemeral
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(remote_ep, listening)
            .ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "no free local port"))?;
        let release = || {
            shared
                .ephemeral
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .release(port, remote_ep)
        };
        if shared.tcp_sockets() >= shared.conn_limit {
            release();
            return Err(io::Error::other(format!(
                "tcp_conn_count = {} connections reached",
                shared.conn_limit
            )));
        }
        let local = IpEndpoint::new(local_ip, port);
        let flow = FlowKey {
            local_addr: local_ip,
            local_port: port,
            remote_addr: remote_ep.addr,
            remote_port: remote_ep.port,
        };
        let (thread, shard) = shared.place(&flow);
        let reply = Arc::new(ConnectReply::default());
        let seen = reply.event.generation();
        let rx_mark = RxMark::new();
        let cmd = Command::Connect {
            shard,
            socket: Box::new(shared.new_tcp_socket(buffers)),
            remote: remote_ep,
            local,
            reply: Arc::clone(&reply),
            rx_mark: Arc::clone(&rx_mark),
        };
        if shared.threads[thread].command(cmd).is_err() {
            release();
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "stack thread command queue full",
            ));
        }
        let mut seen = seen;
        let handle = loop {
            if let Some(r) = reply
                .result
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                break r;
            }
            if shared.shutdown.load(Ordering::Relaxed) {
                release();
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the stack is shut down",
                ));
            }
            shared.wait_event(
                &reply.event,
                seen,
                Some(Instant::now() + Duration::from_millis(100)),
            );
            seen = reply.event.generation();
        };
        let handle = match handle {
            Ok(h) => h,
            Err(e) => {
                release();
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("connect to {remote}: {e}"),
                ));
            }
        };
        Ok(TcpStream {
            stack: Arc::clone(shared),
            thread,
            shard,
            handle,
            event: Event::new(),
            ephemeral: Some((port, remote_ep)),
            _claim: None,
            nonblocking: AtomicBool::new(false),
            read_shut: AtomicBool::new(false),
            life: Default::default(),
            reset_reported: AtomicBool::new(false),
            write_shut: AtomicBool::new(false),
            abort_on_close: AtomicBool::new(false),
            timeouts: [AtomicU64::new(0), AtomicU64::new(0)],
            rx_mark,
        })
    }

    /// Binds a UDP socket to `addr` with `buffer` bytes of receive and send
    /// space.
    pub fn udp_bind(&self, addr: SocketAddr) -> io::Result<UdpSocket> {
        if addr.port() == 0 {
            // An ephemeral port: the first free one from a per-call start.
            let range = self.shared.ephemeral_range.clone();
            let span = u32::from(*range.end() - *range.start()) + 1;
            let start = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
                % span;
            for i in 0..span {
                let port = *range.start() + ((start + i) % span) as u16;
                match self.udp_bind(SocketAddr::new(addr.ip(), port)) {
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                    r => return r,
                }
            }
            return Err(io::Error::new(io::ErrorKind::AddrInUse, "no free UDP port"));
        }
        let ip = IpAddress::from(addr.ip());
        if !addr.ip().is_unspecified() && !self.owns(&ip) {
            return Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("{} is not an address of this stack", addr.ip()),
            ));
        }
        let shared = &self.shared;
        let slot = UdpSlot::take(shared)?;
        let packets = shared.opts.udp_packets;
        let bytes = shared.opts.udp_buffer;
        let rx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; packets], vec![0; bytes]);
        let tx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; packets], vec![0; bytes]);
        let mut sock = udp::Socket::new(rx, tx);
        let ep = if addr.ip().is_unspecified() {
            IpListenEndpoint {
                addr: None,
                port: addr.port(),
            }
        } else {
            IpListenEndpoint {
                addr: Some(ip),
                port: addr.port(),
            }
        };
        sock.bind(ep).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("bind {addr}: {e}"))
        })?;
        let thread = shared.udp_thread(addr.port());
        let shard = shared.threads[thread].control_shard();
        let mut inner = shared.threads[thread].shards[shard].lock();
        let in_use = inner.sockets.iter().any(|(_, s)| {
            udp::Socket::downcast(s).is_some_and(|u| u.endpoint().port == addr.port())
        });
        if in_use {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("UDP port {} is in use", addr.port()),
            ));
        }
        let handle = inner.sockets.add(sock);
        inner.udp_ports.entry(addr.port()).or_default().push(handle);
        let rx_mark = RxMark::new();
        rx_mark.arm(&mut inner.armed, udp_rx(handle, addr.port()));
        drop(inner);
        Ok(UdpSocket {
            stack: Arc::clone(shared),
            thread,
            shard,
            handle,
            event: Event::new(),
            nonblocking: AtomicBool::new(false),
            connected: None,
            rx_mark,
            _slot: slot,
            _claim: PortClaim::new(&shared.owned, Proto::Udp, addr.port()),
        })
    }

    /// A UDP socket on local `port` connected to `remote`: it gets the
    /// datagrams of that peer only, while an unconnected socket may take the
    /// port's other traffic (what iperf3's UDP server does). The caller
    /// frees the port first if it held it unconnected.
    pub fn udp_connect(&self, port: u16, remote: SocketAddr) -> io::Result<UdpSocket> {
        let shared = &self.shared;
        let local_ip = self.local_ip_for(remote.ip()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("no local address for {remote}"),
            )
        })?;
        let flow = FlowKey {
            local_addr: IpAddress::from(local_ip),
            local_port: port,
            remote_addr: IpAddress::from(remote.ip()),
            remote_port: remote.port(),
        };
        let slot = UdpSlot::take(shared)?;
        let packets = shared.opts.udp_packets;
        let bytes = shared.opts.udp_buffer;
        let rx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; packets], vec![0; bytes]);
        let tx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; packets], vec![0; bytes]);
        let mut sock = udp::Socket::new(rx, tx);
        sock.bind(IpListenEndpoint {
            addr: Some(flow.local_addr),
            port,
        })
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bind port {port}: {e}"),
            )
        })?;
        // The port's thread, and a shard of it chosen by the flow.
        let thread = shared.udp_thread(port);
        let shard = shared.place(&flow).1;
        let mut map = shared
            .connected_udp
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if map.contains_key(&flow) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("UDP port {port} is already connected to {remote}"),
            ));
        }
        let rx_mark = RxMark::new();
        let handle = {
            let mut inner = shared.threads[thread].shards[shard].lock();
            let handle = inner.sockets.add(sock);
            inner.udp_ports.entry(port).or_default().push(handle);
            rx_mark.arm(&mut inner.armed, udp_rx(handle, port));
            handle
        };
        map.insert(flow, shard);
        shared.connected_udp_count.fetch_add(1, Ordering::Relaxed);
        Ok(UdpSocket {
            stack: Arc::clone(shared),
            thread,
            shard,
            handle,
            event: Event::new(),
            nonblocking: AtomicBool::new(false),
            connected: Some(flow),
            rx_mark,
            _slot: slot,
            _claim: PortClaim::new(&shared.owned, Proto::Udp, port),
        })
    }

    fn owns(&self, ip: &IpAddress) -> bool {
        self.owns_addr((*ip).into())
    }
}

/// A listening TCP socket. Dropping it stops listening; connections not yet
/// accepted are reset.
#[derive(Debug)]
pub struct TcpListener {
    stack: Arc<StackShared>,
    shared: Arc<ListenerShared>,
    nonblocking: AtomicBool,
    /// Its port is the stack's while it listens (the exception path).
    _claim: PortClaim,
}

impl TcpListener {
    /// Sets the buffer sizes (`SO_RCVBUF`/`SO_SNDBUF`) of the connections it
    /// accepts from now on (as Linux, accepted sockets inherit the
    /// listener's).
    pub fn set_buffers(&self, buffers: BufferRequest) {
        *self
            .shared
            .buffers
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = buffers;
    }

    /// Takes a waiting connection without blocking.
    pub fn try_accept(&self) -> Option<(TcpStream, SocketAddr)> {
        let a = self
            .shared
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()?;
        let remote = to_socket_addr(a.remote);
        Some((
            TcpStream::from_accepted(&self.stack, a, self.shared.endpoint.port),
            remote,
        ))
    }

    /// Waits for a connection (or returns `WouldBlock` if non-blocking).
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let mut driven = false;
        loop {
            let seen = self.shared.event.generation();
            if let Some(a) = self
                .shared
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()
            {
                let remote = to_socket_addr(a.remote);
                return Ok((
                    TcpStream::from_accepted(&self.stack, a, self.shared.endpoint.port),
                    remote,
                ));
            }
            if self.nonblocking.load(Ordering::Relaxed) {
                if self.stack.drive_once(&mut driven) {
                    continue;
                }
                return Err(io::ErrorKind::WouldBlock.into());
            }
            if self.stack.shutdown.load(Ordering::Relaxed) {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the stack is shut down",
                ));
            }
            self.stack.wait_event(
                &self.shared.event,
                seen,
                Some(Instant::now() + Duration::from_millis(500)),
            );
        }
    }

    /// Makes `accept` return `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&self, nonblocking: bool) {
        self.nonblocking.store(nonblocking, Ordering::Relaxed);
    }

    /// Whether calls return `WouldBlock` instead of waiting.
    pub fn is_nonblocking(&self) -> bool {
        self.nonblocking.load(Ordering::Relaxed)
    }

    /// Readable when a connection waits; `hook` is woken once when the next
    /// one arrives.
    pub fn poll_readiness(&self, hook: &std::task::Waker, _interest: Interest) -> Readiness {
        self.shared.event.add_hook(hook);
        Readiness {
            readable: self.pending() > 0,
            ..Default::default()
        }
    }

    /// Connections waiting to be accepted.
    pub fn pending(&self) -> usize {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// The address listened on.
    pub fn local_addr(&self) -> SocketAddr {
        let ep = self.shared.endpoint;
        let ip = ep.addr.map_or(
            std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            Into::into,
        );
        SocketAddr::new(ip, ep.port)
    }

    /// The event notified when a connection arrives (for epoll integration).
    pub fn event(&self) -> &Arc<Event> {
        &self.shared.event
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        {
            let mut map = self
                .stack
                .listeners
                .write()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(list) = map.get_mut(&self.shared.endpoint.port) {
                list.retain(|l| !Arc::ptr_eq(l, &self.shared));
                if list.is_empty() {
                    map.remove(&self.shared.endpoint.port);
                }
            }
        }
        if let Some(link) = self.stack.ltran.get() {
            link.listen(&self.shared.endpoint, self.shared.v6, false);
        }
        for t in self.stack.threads.iter() {
            let _ = t.command(Command::Unlisten(Arc::clone(&self.shared)));
        }
        let queued: Vec<Accepted> = self
            .shared
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for a in queued {
            // Reset: the application never saw these connections.
            let mut s = TcpStream::from_accepted(&self.stack, a, self.shared.endpoint.port);
            s.abort_on_drop();
        }
    }
}

fn tcp_readiness(s: &tcp::Socket<'_>) -> Readiness {
    let state = s.state();
    let closed = state == tcp::State::Closed;
    let connecting = matches!(state, tcp::State::SynSent | tcp::State::SynReceived);
    Readiness {
        readable: s.can_recv() || (!s.may_recv() && !connecting),
        writable: s.can_send() || closed,
        read_closed: !s.may_recv() && !connecting,
        hangup: closed || state == tcp::State::TimeWait,
        error: false,
    }
}

/// A TCP connection.
#[derive(Debug)]
pub struct TcpStream {
    stack: Arc<StackShared>,
    thread: usize,
    shard: usize,
    handle: SocketHandle,
    event: Arc<Event>,
    ephemeral: Option<(u16, IpEndpoint)>,
    /// An accepted connection keeps its port the stack's, also after its
    /// listener closed (an outgoing one's ephemeral port is claimed by
    /// the ephemeral table).
    _claim: Option<PortClaim>,
    nonblocking: AtomicBool,
    read_shut: AtomicBool,
    /// How far the connection got: LIFE_UP once established, LIFE_FIN once
    /// the peer's FIN arrived (see `observe`).
    life: std::sync::atomic::AtomicU8,
    /// ECONNRESET was returned once; later calls see EOF / EPIPE, as on Linux.
    reset_reported: AtomicBool,
    /// The application shut down (or closed) the sending side: our FIN.
    write_shut: AtomicBool,
    /// `SO_LINGER` with a zero timeout: close with RST.
    abort_on_close: AtomicBool,
    /// When the data waiting to be read arrived (receive latency).
    rx_mark: Arc<RxMark>,
    /// `SO_RCVTIMEO` and `SO_SNDTIMEO` in µs (0: wait forever): a blocking
    /// read or write that waited this long fails with `WouldBlock`.
    timeouts: [AtomicU64; 2],
}

const LIFE_UP: u8 = 1;
const LIFE_FIN: u8 = 2;

impl TcpStream {
    fn from_accepted(stack: &Arc<StackShared>, a: Accepted, port: u16) -> Self {
        Self {
            _claim: Some(PortClaim::new(&stack.owned, Proto::Tcp, port)),
            stack: Arc::clone(stack),
            thread: a.thread,
            shard: a.shard,
            handle: a.handle,
            event: Event::new(),
            ephemeral: None,
            nonblocking: AtomicBool::new(false),
            read_shut: AtomicBool::new(false),
            life: Default::default(),
            reset_reported: AtomicBool::new(false),
            write_shut: AtomicBool::new(false),
            abort_on_close: AtomicBool::new(false),
            timeouts: [AtomicU64::new(0), AtomicU64::new(0)],
            rx_mark: a.rx_mark,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut tcp::Socket<'static>) -> R) -> R {
        self.with_armed(|s, _| f(s))
    }

    /// [`TcpStream::with`], with the shard's armed sockets too.
    fn with_armed<R>(&self, f: impl FnOnce(&mut tcp::Socket<'static>, &mut Vec<Armed>) -> R) -> R {
        let mut inner = self.stack.threads[self.thread].shards[self.shard].lock();
        let inner = &mut *inner;
        let s = inner.sockets.get_mut::<tcp::Socket<'static>>(self.handle);
        self.observe(s.state());
        f(s, &mut inner.armed)
    }

    /// Remembers what the connection went through: smoltcp only shows
    /// `Closed` at the end, whether the peer closed (FIN) or reset it (RST).
    fn observe(&self, state: tcp::State) {
        use tcp::State::*;
        match state {
            Established | FinWait1 | FinWait2 => self.life.fetch_max(LIFE_UP, Ordering::Relaxed),
            CloseWait | LastAck | Closing | TimeWait => {
                self.life.fetch_max(LIFE_FIN, Ordering::Relaxed)
            }
            _ => 0,
        };
    }

    /// Whether the connection was reset by the peer (it was up, never saw
    /// the peer's FIN, and is now closed).
    fn was_reset(&self, state: tcp::State) -> bool {
        state == tcp::State::Closed && self.life.load(Ordering::Relaxed) == LIFE_UP
    }

    /// The connection's error, if it failed: refused (never established) or
    /// reset (closed without the peer's FIN). Not consumed.
    pub fn error(&self) -> Option<io::ErrorKind> {
        self.with(|s| {
            if s.state() != tcp::State::Closed {
                return None;
            }
            let life = self.life.load(Ordering::Relaxed);
            if life == 0 {
                return Some(io::ErrorKind::ConnectionRefused);
            }
            // Closed while we never sent our FIN, or before the peer's FIN
            // arrived: the peer reset it.
            let we_closed = self.write_shut.load(Ordering::Relaxed);
            (!we_closed || life == LIFE_UP).then_some(io::ErrorKind::ConnectionReset)
        })
    }

    /// Takes the pending error once, as `getsockopt(SO_ERROR)` does: after
    /// it, reads see end of stream and writes `EPIPE`.
    pub fn take_error(&self) -> Option<io::ErrorKind> {
        let e = self.error()?;
        (!self.reset_reported.swap(true, Ordering::Relaxed)).then_some(e)
    }

    /// Lets the stack send what the application queued (or announce the
    /// window a read opened): at once when the application runs the stack
    /// (run to completion), else by waking the stack thread.
    fn kick(&self) {
        self.stack.egress(self.thread, self.shard);
    }

    fn wait(&self, seen: u64, deadline: Option<Instant>) -> io::Result<()> {
        if self.stack.shutdown.load(Ordering::Relaxed) {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the stack is shut down",
            ));
        }
        // Bounded sleeps so a shut-down stack is noticed.
        let cap = Instant::now() + Duration::from_millis(500);
        let d = deadline.map_or(cap, |d| d.min(cap));
        self.stack.wait_event(&self.event, seen, Some(d));
        match deadline {
            Some(d) if Instant::now() >= d => Err(io::ErrorKind::TimedOut.into()),
            _ => Ok(()),
        }
    }

    fn wait_connected(&self, deadline: Option<Instant>) -> io::Result<()> {
        loop {
            let seen = self.event.generation();
            match self.connect_result()? {
                true => return Ok(()),
                false => {
                    let waker = self.event.waker();
                    self.with(|s| s.register_send_waker(&waker));
                    // Re-check: the state may have changed before registration.
                    if self.connect_result()? {
                        return Ok(());
                    }
                    self.wait(seen, deadline)?;
                }
            }
        }
    }

    /// For a connection started with [`Stack::tcp_connect_start`]: `Ok(true)`
    /// once established, `Ok(false)` while the handshake runs, an error
    /// (`ConnectionRefused`, `TimedOut`) when it failed.
    pub fn connect_result(&self) -> io::Result<bool> {
        self.with(|s| match s.state() {
            tcp::State::SynSent | tcp::State::SynReceived => Ok(false),
            tcp::State::Closed if self.life.load(Ordering::Relaxed) == 0 => Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "connection refused",
            )),
            _ => Ok(true),
        })
    }

    /// Reads into `buf`; `Ok(0)` is end of stream.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv(buf, self.nonblocking.load(Ordering::Relaxed), false)
    }

    /// How long a blocking read waits before it fails with `WouldBlock`
    /// (`SO_RCVTIMEO`; `None`: forever).
    pub fn set_read_timeout(&self, t: Option<Duration>) {
        self.timeouts[0].store(timeout_us(t), Ordering::Relaxed);
    }

    /// How long a blocking write waits for room (`SO_SNDTIMEO`).
    pub fn set_write_timeout(&self, t: Option<Duration>) {
        self.timeouts[1].store(timeout_us(t), Ordering::Relaxed);
    }

    /// When a blocking wait of direction `dir` (0 read, 1 write) started
    /// now gives up.
    fn deadline(&self, dir: usize) -> Option<Instant> {
        match self.timeouts[dir].load(Ordering::Relaxed) {
            0 => None,
            us => Some(Instant::now() + Duration::from_micros(us)),
        }
    }

    /// Waits as [`TcpStream::wait`]; a passed `deadline` is `WouldBlock`,
    /// as a socket timeout is on Linux (EAGAIN).
    fn wait_timed(&self, seen: u64, deadline: Option<Instant>) -> io::Result<()> {
        match self.wait(seen, deadline) {
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(io::ErrorKind::WouldBlock.into()),
            r => r,
        }
    }

    /// Reads into `buf`, waiting unless `nonblocking`; with `peek` the data
    /// stays queued (`MSG_PEEK`).
    pub fn recv(&self, buf: &mut [u8], nonblocking: bool, peek: bool) -> io::Result<usize> {
        if buf.is_empty() || self.read_shut.load(Ordering::Relaxed) {
            return Ok(0);
        }
        let mut driven = false;
        let deadline = if nonblocking { None } else { self.deadline(0) };
        loop {
            let seen = self.event.generation();
            let waker = self.event.waker();
            let r = self.with_armed(|s, armed| {
                if s.can_recv() {
                    if peek {
                        return Some(
                            s.peek_slice(buf)
                                .map_err(|e| io::Error::other(e.to_string())),
                        );
                    }
                    let r = s.recv_slice(buf);
                    if let Ok(n) = r {
                        if n > 0 {
                            let rearm = match (s.recv_queue(), s.local_endpoint()) {
                                (0, Some(local)) => Some(RxSocket {
                                    handle: self.handle,
                                    udp: false,
                                    port: local.port,
                                    remote: s.remote_endpoint(),
                                }),
                                _ => None,
                            };
                            self.rx_mark.took_data(
                                armed,
                                rearm,
                                || self.stack.now_ns(),
                                &self.stack.threads[self.thread].stats.rx_latency,
                            );
                        }
                    }
                    return Some(r.map_err(|e| io::Error::other(e.to_string())));
                }
                if !s.may_recv() {
                    return Some(match s.state() {
                        tcp::State::SynSent | tcp::State::SynReceived => {
                            Err(io::ErrorKind::NotConnected.into())
                        }
                        st if self.was_reset(st)
                            && !self.reset_reported.swap(true, Ordering::Relaxed) =>
                        {
                            Err(io::ErrorKind::ConnectionReset.into())
                        }
                        _ => Ok(0),
                    });
                }
                s.register_recv_waker(&waker);
                None
            });
            match r {
                Some(Ok(n)) => {
                    if n > 0 && !peek {
                        // Reading opened the receive window: let the stack announce it.
                        self.kick();
                    }
                    return Ok(n);
                }
                Some(Err(e)) => return Err(e),
                None if nonblocking && !self.stack.drive_once(&mut driven) => {
                    return Err(io::ErrorKind::WouldBlock.into())
                }
                None if nonblocking => {}
                None => self.wait_timed(seen, deadline)?,
            }
        }
    }

    /// Writes some of `buf`; blocks while the send buffer is full.
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        self.send(buf, self.nonblocking.load(Ordering::Relaxed))
    }

    /// Writes some of `buf`, waiting for room unless `nonblocking`.
    pub fn send(&self, buf: &[u8], nonblocking: bool) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut driven = false;
        let deadline = if nonblocking { None } else { self.deadline(1) };
        loop {
            let seen = self.event.generation();
            let waker = self.event.waker();
            let r = self.with(|s| {
                if !s.may_send() {
                    return Some(match s.state() {
                        tcp::State::SynSent | tcp::State::SynReceived => {
                            Err(io::ErrorKind::NotConnected.into())
                        }
                        st if self.was_reset(st)
                            && !self.reset_reported.swap(true, Ordering::Relaxed) =>
                        {
                            Err(io::ErrorKind::ConnectionReset.into())
                        }
                        _ => Err(io::ErrorKind::BrokenPipe.into()),
                    });
                }
                if s.can_send() {
                    return Some(
                        s.send_slice(buf)
                            .map_err(|e| io::Error::other(e.to_string())),
                    );
                }
                s.register_send_waker(&waker);
                None
            });
            match r {
                Some(Ok(n)) => {
                    self.kick();
                    return Ok(n);
                }
                Some(Err(e)) => return Err(e),
                None if nonblocking && !self.stack.drive_once(&mut driven) => {
                    return Err(io::ErrorKind::WouldBlock.into())
                }
                None if nonblocking => {}
                None => self.wait_timed(seen, deadline)?,
            }
        }
    }

    /// Writes all of `buf`.
    pub fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.write(buf)?;
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Closes the sending side (FIN); `Read` stops further reads locally.
    pub fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        if matches!(how, std::net::Shutdown::Write | std::net::Shutdown::Both) {
            self.write_shut.store(true, Ordering::Relaxed);
            self.with(|s| s.close());
            self.kick();
        }
        if matches!(how, std::net::Shutdown::Read | std::net::Shutdown::Both) {
            self.read_shut.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Current readiness; `hook` is woken once on the next change in a
    /// direction of `interest` (data or state for reading, room or state for
    /// writing), whatever the readiness now. For epoll and poll.
    pub fn poll_readiness(&self, hook: &std::task::Waker, interest: Interest) -> Readiness {
        self.event.add_hook_dir(hook, interest.dirs());
        let (rx, tx) = (
            self.event.dir_waker(crate::event::RX),
            self.event.dir_waker(crate::event::TX),
        );
        let r = self.with(|s| {
            s.register_recv_waker(&rx);
            s.register_send_waker(&tx);
            tcp_readiness(s)
        });
        self.with_error(r)
    }

    /// Current readiness, without blocking.
    pub fn readiness(&self) -> Readiness {
        let r = self.with(|s| tcp_readiness(s));
        self.with_error(r)
    }

    fn with_error(&self, mut r: Readiness) -> Readiness {
        if r.hangup {
            r.error = self.error().is_some();
        }
        r
    }

    /// Makes reads and writes return `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&self, nonblocking: bool) {
        self.nonblocking.store(nonblocking, Ordering::Relaxed);
    }

    /// Whether calls return `WouldBlock` instead of waiting.
    pub fn is_nonblocking(&self) -> bool {
        self.nonblocking.load(Ordering::Relaxed)
    }

    /// Turns Nagle's algorithm off (`true`) or on.
    pub fn set_nodelay(&self, nodelay: bool) {
        self.with(|s| s.set_nagle_enabled(!nodelay));
    }

    /// Sends keep-alive probes after `idle` without traffic (`None`: off),
    /// as `SO_KEEPALIVE` with `TCP_KEEPIDLE`.
    pub fn set_keep_alive(&self, idle: Option<Duration>) {
        let idle = idle.map(|d| smoltcp::time::Duration::from_millis(d.as_millis() as u64));
        self.with(|s| s.set_keep_alive(idle));
        // smoltcp winds the timer up; the stack must poll the shard to
        // learn its new deadline, or an idle connection never probes.
        self.kick();
    }

    /// With `true`, closing resets the connection (RST) instead of a
    /// graceful FIN: `SO_LINGER` with a zero timeout.
    pub fn set_abort_on_close(&self, abort: bool) {
        self.abort_on_close.store(abort, Ordering::Relaxed);
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.with(|s| s.remote_endpoint())
            .map(to_socket_addr)
            .ok_or_else(|| io::ErrorKind::NotConnected.into())
    }

    /// Our address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.with(|s| s.local_endpoint())
            .map(to_socket_addr)
            .ok_or_else(|| io::ErrorKind::NotConnected.into())
    }

    /// Bytes received and not yet read.
    pub fn recv_queue(&self) -> usize {
        self.with(|s| s.recv_queue())
    }

    /// The sizes of its receive and send buffers, bytes.
    pub fn buffer_capacities(&self) -> (usize, usize) {
        self.with(|s| (s.recv_capacity(), s.send_capacity()))
    }

    /// The smoltcp state name (for statistics).
    pub fn state(&self) -> tcp::State {
        self.with(|s| s.state())
    }

    /// The event notified on readiness changes once a wait registered it.
    pub fn event(&self) -> &Arc<Event> {
        &self.event
    }

    fn abort_on_drop(&mut self) {
        self.with(|s| s.abort());
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        let me = &self.stack.threads[self.thread];
        {
            let mut inner = me.shards[self.shard].lock();
            if self.rx_mark.is_armed() {
                inner.armed.retain(|a| a.socket.handle != self.handle);
            }
            let s = inner.sockets.get_mut::<tcp::Socket<'static>>(self.handle);
            if s.recv_queue() > 0 || self.abort_on_close.load(Ordering::Relaxed) {
                // Unread data (or SO_LINGER 0) on close: reset, as a kernel does.
                s.abort();
            } else {
                s.close();
            }
            inner.orphan(self.handle, self.ephemeral.take());
        }
        self.stack.egress(self.thread, self.shard);
    }
}

/// A bound UDP socket.
#[derive(Debug)]
pub struct UdpSocket {
    stack: Arc<StackShared>,
    thread: usize,
    shard: usize,
    handle: SocketHandle,
    event: Arc<Event>,
    nonblocking: AtomicBool,
    /// The flow of a connected socket (see [`Stack::udp_connect`]).
    connected: Option<FlowKey>,
    /// When the oldest datagram waiting arrived (receive latency).
    rx_mark: Arc<RxMark>,
    /// Its place under `udp_conn_count`, given back when it is dropped.
    _slot: UdpSlot,
    /// Its port is the stack's while it is open (the exception path).
    _claim: PortClaim,
}

/// One of the `udp_conn_count` UDP sockets a stack may have at once.
#[derive(Debug)]
struct UdpSlot(Arc<StackShared>);

impl UdpSlot {
    /// Takes a slot, or fails with `ENOBUFS` (what Linux says when a
    /// socket's memory is refused) naming the limit.
    fn take(stack: &Arc<StackShared>) -> io::Result<UdpSlot> {
        let open = stack.udp_sockets.fetch_add(1, Ordering::Relaxed);
        if open >= stack.udp_limit {
            stack.udp_sockets.fetch_sub(1, Ordering::Relaxed);
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!(
                    "udp_conn_count = {} UDP sockets are open already (raise udp_conn_count in the lstack configuration)",
                    stack.udp_limit
                ),
            ));
        }
        Ok(UdpSlot(Arc::clone(stack)))
    }
}

impl Drop for UdpSlot {
    fn drop(&mut self) {
        self.0.udp_sockets.fetch_sub(1, Ordering::Relaxed);
    }
}

impl UdpSocket {
    fn with<R>(&self, f: impl FnOnce(&mut udp::Socket<'static>) -> R) -> R {
        self.with_armed(|s, _| f(s))
    }

    /// [`UdpSocket::with`], with the shard's armed sockets too.
    fn with_armed<R>(&self, f: impl FnOnce(&mut udp::Socket<'static>, &mut Vec<Armed>) -> R) -> R {
        let mut inner = self.stack.threads[self.thread].shards[self.shard].lock();
        let inner = &mut *inner;
        f(
            inner.sockets.get_mut::<udp::Socket<'static>>(self.handle),
            &mut inner.armed,
        )
    }

    /// Receives one datagram; returns its length and sender. A datagram
    /// longer than `buf` is truncated.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.recv_from_mode(buf, self.nonblocking.load(Ordering::Relaxed))
    }

    /// Like [`UdpSocket::recv_from`], waiting unless `nonblocking`.
    pub fn recv_from_mode(
        &self,
        buf: &mut [u8],
        nonblocking: bool,
    ) -> io::Result<(usize, SocketAddr)> {
        let mut driven = false;
        loop {
            let seen = self.event.generation();
            let waker = self.event.waker();
            let r = self.with_armed(|s, armed| {
                if s.can_recv() {
                    let r = s.recv().map(|(data, meta)| {
                        let n = data.len().min(buf.len());
                        buf[..n].copy_from_slice(&data[..n]);
                        (n, to_socket_addr(meta.endpoint))
                    });
                    if r.is_ok() {
                        let rearm = (!s.can_recv()).then(|| udp_rx(self.handle, s.endpoint().port));
                        self.rx_mark.took_data(
                            armed,
                            rearm,
                            || self.stack.now_ns(),
                            &self.stack.threads[self.thread].stats.rx_latency,
                        );
                    }
                    return Some(r);
                }
                s.register_recv_waker(&waker);
                None
            });
            match r {
                Some(Ok(v)) => return Ok(v),
                Some(Err(e)) => return Err(io::Error::other(e.to_string())),
                None if nonblocking && !self.stack.drive_once(&mut driven) => {
                    return Err(io::ErrorKind::WouldBlock.into())
                }
                None if nonblocking => {}
                None => {
                    if self.stack.shutdown.load(Ordering::Relaxed) {
                        return Err(io::Error::new(
                            io::ErrorKind::NotConnected,
                            "the stack is shut down",
                        ));
                    }
                    self.stack.wait_event(
                        &self.event,
                        seen,
                        Some(Instant::now() + Duration::from_millis(500)),
                    );
                }
            }
        }
    }

    /// Sends one datagram to `to`.
    pub fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.send_to_mode(buf, to, self.nonblocking.load(Ordering::Relaxed))
    }

    /// Like [`UdpSocket::send_to`], waiting for room unless `nonblocking`.
    pub fn send_to_mode(&self, buf: &[u8], to: SocketAddr, nonblocking: bool) -> io::Result<usize> {
        let ep = to_endpoint(to);
        loop {
            let seen = self.event.generation();
            let waker = self.event.waker();
            let r = self.with(|s| {
                if s.can_send() {
                    return Some(s.send_slice(buf, ep));
                }
                s.register_send_waker(&waker);
                None
            });
            match r {
                Some(Ok(())) => {
                    self.stack.egress(self.thread, self.shard);
                    return Ok(buf.len());
                }
                Some(Err(udp::SendError::BufferFull)) | None if !nonblocking => {
                    self.stack.wait_event(
                        &self.event,
                        seen,
                        Some(Instant::now() + Duration::from_millis(100)),
                    );
                }
                Some(Err(udp::SendError::BufferFull)) | None => {
                    return Err(io::ErrorKind::WouldBlock.into())
                }
                Some(Err(e)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("send to {to}: {e}"),
                    ))
                }
            }
        }
    }

    /// Makes receives return `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&self, nonblocking: bool) {
        self.nonblocking.store(nonblocking, Ordering::Relaxed);
    }

    /// Whether calls return `WouldBlock` instead of waiting.
    pub fn is_nonblocking(&self) -> bool {
        self.nonblocking.load(Ordering::Relaxed)
    }

    /// Current readiness; `hook` is woken once on the next change in a
    /// direction of `interest`.
    pub fn poll_readiness(&self, hook: &std::task::Waker, interest: Interest) -> Readiness {
        self.poll_readiness_from(hook, interest, None)
    }

    /// Like [`UdpSocket::poll_readiness`], for a socket connected to `peer`:
    /// datagrams from anyone else are dropped first, under the same lock.
    pub fn poll_readiness_from(
        &self,
        hook: &std::task::Waker,
        interest: Interest,
        peer: Option<SocketAddr>,
    ) -> Readiness {
        self.event.add_hook_dir(hook, interest.dirs());
        let (rx, tx) = (
            self.event.dir_waker(crate::event::RX),
            self.event.dir_waker(crate::event::TX),
        );
        let peer = peer.map(to_endpoint);
        self.with_armed(|s, armed| {
            if let Some(ep) = peer {
                let mut discarded = false;
                while let Ok((_, meta)) = s.peek() {
                    if meta.endpoint == ep {
                        break;
                    }
                    let _ = s.recv();
                    discarded = true;
                }
                // The mark was the arrival of what was thrown away.
                if discarded && !s.can_recv() {
                    self.rx_mark
                        .arm(armed, udp_rx(self.handle, s.endpoint().port));
                }
            }
            s.register_recv_waker(&rx);
            s.register_send_waker(&tx);
            Readiness {
                readable: s.can_recv(),
                writable: s.can_send(),
                ..Default::default()
            }
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        let ep = self.with(|s| s.endpoint());
        let ip = ep.addr.map_or(
            std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            Into::into,
        );
        SocketAddr::new(ip, ep.port)
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        if let Some(flow) = self.connected {
            let mut map = self
                .stack
                .connected_udp
                .write()
                .unwrap_or_else(|e| e.into_inner());
            map.remove(&flow);
            self.stack
                .connected_udp_count
                .fetch_sub(1, Ordering::Relaxed);
        }
        let mut inner = self.stack.threads[self.thread].shards[self.shard].lock();
        if self.rx_mark.is_armed() {
            inner.armed.retain(|a| a.socket.handle != self.handle);
        }
        let port = inner
            .sockets
            .get::<udp::Socket<'_>>(self.handle)
            .endpoint()
            .port;
        if let Some(handles) = inner.udp_ports.get_mut(&port) {
            handles.retain(|h| *h != self.handle);
            if handles.is_empty() {
                inner.udp_ports.remove(&port);
            }
        }
        inner.sockets.remove(self.handle);
    }
}

/// The UDP socket `handle` on `port`, as its shard's `armed` list knows it.
fn udp_rx(handle: SocketHandle, port: u16) -> RxSocket {
    RxSocket {
        handle,
        udp: true,
        port,
        remote: None,
    }
}

/// A socket timeout in µs for [`TcpStream::set_read_timeout`] (0: none; a
/// non-zero duration below 1 µs is 1 µs, not "forever").
fn timeout_us(t: Option<Duration>) -> u64 {
    t.map_or(0, |d| {
        u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
    })
}
