//! What application threads share with the stack threads: per thread
//! ([`ThreadShared`]) and for the whole stack ([`StackShared`]).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, OnceLock, RwLock,
    },
};

use crossbeam_queue::ArrayQueue;
use dpdk::Mbuf;
use smoltcp::{
    iface::SocketHandle,
    socket::tcp,
    wire::{IpAddress, IpEndpoint},
};

use super::{EphemeralPorts, ListenerShared, PortHomes, Rtc, RxMark, Shard};
use crate::{
    classify::{FlowKey, LocalAddrs},
    event::Event,
    handshake::{Challenge, VerifiedSources},
    stats::ThreadStats,
    StackOptions,
};

/// Capacity of each thread's steering and command queues.
const QUEUE_DEPTH: usize = 4096;

/// Work an application thread asks a stack thread to do.
pub(crate) enum Command {
    /// Start a connection: smoltcp needs the interface's context for it.
    Connect {
        shard: usize,
        socket: Box<tcp::Socket<'static>>,
        remote: IpEndpoint,
        local: IpEndpoint,
        reply: Arc<ConnectReply>,
        /// The new socket's receive-latency mark.
        rx_mark: Arc<RxMark>,
    },
    /// A listener closed: drop its spares and unaccepted handshakes.
    Unlisten(Arc<ListenerShared>),
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Connect { remote, local, .. } => write!(f, "Connect({local} -> {remote})"),
            Command::Unlisten(l) => write!(f, "Unlisten({})", l.endpoint),
        }
    }
}

/// Where a stack thread answers a [`Command::Connect`].
#[derive(Debug, Default)]
pub(crate) struct ConnectReply {
    pub(crate) result: Mutex<Option<Result<SocketHandle, tcp::ConnectError>>>,
    pub(crate) event: Arc<Event>,
}

/// What application threads share with one stack thread.
#[derive(Debug)]
pub(crate) struct ThreadShared {
    pub(crate) shards: Box<[Shard]>,
    pub(super) commands: ArrayQueue<Command>,
    pub(super) steer: ArrayQueue<Mbuf>,
    /// Shards the application touched (wrote, read, closed): egress due.
    pub(super) dirty: Box<[AtomicU64]>,
    pub(crate) stats: Arc<ThreadStats>,
    /// Threads sleeping on `wake_fd`: the stack thread, or (run to
    /// completion) application threads waiting for the stack.
    pub(super) sleeping: AtomicUsize,
    /// Written (only while someone sleeps) to wake it: an eventfd slept on
    /// beside the receive queue.
    pub(super) wake_fd: nix::sys::eventfd::EventFd,
    /// Live TCP sockets of this thread (spares excluded).
    pub(crate) tcp_sockets: AtomicUsize,
}

impl ThreadShared {
    fn new(tcp_shards: usize) -> Self {
        let shards = (0..=tcp_shards).map(|_| Shard::new()).collect();
        let words = (tcp_shards + 1).div_ceil(64);
        Self {
            shards,
            commands: ArrayQueue::new(QUEUE_DEPTH),
            steer: ArrayQueue::new(QUEUE_DEPTH),
            dirty: (0..words).map(|_| AtomicU64::new(0)).collect(),
            stats: Arc::new(ThreadStats::default()),
            sleeping: AtomicUsize::new(0),
            wake_fd: nix::sys::eventfd::EventFd::from_flags(
                nix::sys::eventfd::EfdFlags::EFD_NONBLOCK
                    | nix::sys::eventfd::EfdFlags::EFD_CLOEXEC,
            )
            .expect("an eventfd for a stack thread"),
            tcp_sockets: AtomicUsize::new(0),
        }
    }

    /// Index of the control shard.
    pub(crate) fn control_shard(&self) -> usize {
        self.shards.len() - 1
    }

    /// Marks `shard` as needing an egress poll and wakes the thread if it
    /// sleeps.
    pub(crate) fn mark_dirty(&self, shard: usize) {
        // SeqCst here and in `Worker::sleep`: the store of the dirty bit and
        // the load of `sleeping` must not be reordered, or a wakeup is lost.
        self.dirty[shard / 64].fetch_or(1 << (shard % 64), Ordering::SeqCst);
        self.wake();
    }

    /// Wakes the thread if it sleeps: a syscall only then, never per
    /// request while it runs.
    pub(super) fn wake(&self) {
        if self.sleeping.load(Ordering::SeqCst) > 0 {
            // EAGAIN (the counter is full) means it is woken already.
            let _ = self.wake_fd.write(1);
        }
    }

    /// Queues a command; fails only if the thread is hopelessly behind.
    pub(crate) fn command(&self, cmd: Command) -> Result<(), Command> {
        self.commands.push(cmd)?;
        self.wake();
        Ok(())
    }
}

/// State shared by the whole stack.
#[derive(Debug)]
pub(crate) struct StackShared {
    pub(crate) threads: Box<[ThreadShared]>,
    pub(crate) listeners: RwLock<HashMap<u16, Vec<Arc<ListenerShared>>>>,
    pub(crate) ephemeral: Mutex<EphemeralPorts>,
    /// The ports the stack owns, for the exception path (see
    /// [`crate::ownership`]).
    pub(crate) owned: Arc<crate::ownership::PortOwnership>,
    /// Where ephemeral ports (TCP and UDP) come from.
    pub(crate) ephemeral_range: std::ops::RangeInclusive<u16>,
    pub(crate) seed: u64,
    pub(crate) opts: StackOptions,
    pub(crate) local: LocalAddrs,
    pub(crate) shutdown: AtomicBool,
    /// Most TCP connections at once (`tcp_conn_count`).
    pub(crate) conn_limit: usize,
    /// Most UDP sockets at once (`udp_conn_count`), and how many are open.
    pub(crate) udp_limit: usize,
    pub(crate) udp_sockets: AtomicUsize,
    /// SYN flood defence (see [`crate::handshake`]): the challenge key,
    /// the sources that answered one (looked at only while there are any),
    /// and until when (ns) RSTs may be answers to challenges sent.
    pub(crate) challenge: Challenge,
    verified: Mutex<VerifiedSources>,
    verified_count: AtomicUsize,
    pub(super) challenges_until: AtomicU64,
    /// Connected UDP sockets: flow -> shard of the port's thread. Looked at
    /// only while `connected_udp_count` is non-zero.
    pub(crate) connected_udp: RwLock<HashMap<FlowKey, usize>>,
    pub(crate) connected_udp_count: AtomicUsize,
    /// TCP flows stay on the thread they arrive on (behind ltran, which
    /// places them); otherwise the flow hash places them.
    pub(crate) arrival_placement: bool,
    /// Idle stack threads spin instead of sleeping (`stack_interrupt = 0`).
    pub(crate) busy_poll: bool,
    /// Application requests a thread takes per pass (`rpc_number`).
    pub(crate) commands_per_pass: usize,
    /// Frames a thread reads from its queue per pass (`nic_read_number`).
    pub(crate) rx_per_pass: usize,
    /// `listen_shadow = 0` with several threads: per local port, 0 or
    /// 1 + the thread that serves every TCP flow of that port (set when the
    /// port is first listened on, and kept, so a flow never changes thread).
    pub(crate) port_home: Option<PortHomes>,
    /// The VLAN the stack is on (`nic_vlan_mode`): received frames are
    /// untagged before anything else looks at them, or dropped.
    pub(crate) vlan: Option<crate::vlan::Vlan>,
    /// Run to completion: the stack contexts application threads drive
    /// (one per NIC queue; `None` once the stack stopped). Empty when
    /// stack threads run.
    pub(crate) rtc: OnceLock<Rtc>,
    /// The registration with ltran, which hears about listeners.
    pub(crate) ltran: std::sync::OnceLock<crate::ltran::LtranLink>,
    /// Time zero of the stack's clock: smoltcp's timestamps and the
    /// receive-latency marks count from here.
    pub(crate) clock: crate::clock::Clock,
    /// lstack's own bond (`bond_mode = 1`), if it has one.
    pub(crate) bond: Option<Arc<crate::bond::BondShared>>,
}

impl StackShared {
    /// The stack shares its address with the kernel (the exception path):
    /// its ephemeral ports come from [`super::EPHEMERAL_SHARED`], which the
    /// kernel is told to leave alone.
    pub(crate) fn share_ports_with_kernel(&mut self) {
        self.ephemeral_range = super::EPHEMERAL_SHARED;
        self.ephemeral = Mutex::new(EphemeralPorts::with_range(
            Arc::clone(&self.owned),
            super::EPHEMERAL_SHARED,
        ));
    }

    /// Gives back the ephemeral ports a settle freed (`released` ends
    /// empty); no lock when there are none.
    pub(crate) fn release_ports(&self, released: &mut Vec<(u16, smoltcp::wire::IpEndpoint)>) {
        if released.is_empty() {
            return;
        }
        let mut eph = self.ephemeral.lock().unwrap_or_else(|e| e.into_inner());
        for (port, remote) in released.drain(..) {
            eph.release(port, remote);
        }
    }

    pub(crate) fn new(
        threads: usize,
        opts: StackOptions,
        local: LocalAddrs,
        conn_limit: usize,
        seed: u64,
    ) -> Self {
        let shards = opts.tcp_shards;
        let owned = Arc::new(crate::ownership::PortOwnership::default());
        Self {
            threads: (0..threads).map(|_| ThreadShared::new(shards)).collect(),
            listeners: RwLock::new(HashMap::new()),
            ephemeral: Mutex::new(EphemeralPorts::new(Arc::clone(&owned))),
            owned,
            ephemeral_range: super::EPHEMERAL,
            seed,
            opts,
            local,
            shutdown: AtomicBool::new(false),
            conn_limit,
            udp_limit: usize::MAX,
            udp_sockets: AtomicUsize::new(0),
            challenge: Challenge::new(),
            verified: Mutex::new(VerifiedSources::default()),
            verified_count: AtomicUsize::new(0),
            challenges_until: AtomicU64::new(0),
            connected_udp: RwLock::new(HashMap::new()),
            connected_udp_count: AtomicUsize::new(0),
            arrival_placement: false,
            busy_poll: false,
            commands_per_pass: usize::MAX,
            rx_per_pass: dpdk::BURST_SIZE,
            port_home: None,
            vlan: None,
            ltran: std::sync::OnceLock::new(),
            rtc: OnceLock::new(),
            clock: crate::clock::Clock::new(),
            bond: None,
        }
    }

    /// Nanoseconds since [`StackShared::epoch`].
    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    /// (thread, shard) that own `flow`: by the flow hash, or the thread of
    /// its local port ([`PortHomes`], `listen_shadow = 0`).
    #[inline]
    pub(crate) fn place(&self, flow: &FlowKey) -> (usize, usize) {
        let h = flow.hash(self.seed);
        let threads = self.threads.len() as u64;
        let shards = self.opts.tcp_shards as u64;
        let mut thread = (h % threads) as usize;
        if let Some(home) = self.port_home.as_ref().and_then(|p| p.get(flow.local_port)) {
            thread = home;
        }
        (thread, ((h / threads) % shards) as usize)
    }

    /// Whether `addr` answered a SYN challenge recently (see
    /// [`crate::handshake`]).
    pub(crate) fn is_verified(&self, addr: &IpAddress, now_ns: u64) -> bool {
        self.verified_count.load(Ordering::Relaxed) > 0
            && self
                .verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(addr, now_ns)
    }

    pub(super) fn verify(&self, addr: IpAddress, now_ns: u64) {
        let mut v = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        v.insert(addr, now_ns);
        self.verified_count.store(v.len(), Ordering::Relaxed);
    }

    /// The thread that owns UDP port `port`.
    #[inline]
    pub(crate) fn udp_thread(&self, port: u16) -> usize {
        usize::from(port) % self.threads.len()
    }

    /// Whether every socket the application closed has had all its data and
    /// its FIN acknowledged (what a process must wait for before it exits).
    pub(crate) fn orphans_flushed(&self) -> bool {
        self.threads.iter().all(|t| {
            t.shards.iter().all(|shard| {
                let inner = shard.lock();
                inner.orphans.iter().all(|o| {
                    let s = inner.sockets.get::<tcp::Socket<'_>>(o.handle);
                    // Flushed once the peer has acknowledged everything,
                    // our FIN included: once the process is gone nothing
                    // retransmits a lost segment.
                    s.send_queue() == 0
                        && !matches!(
                            s.state(),
                            tcp::State::Established
                                | tcp::State::CloseWait
                                | tcp::State::SynReceived
                                | tcp::State::FinWait1
                                | tcp::State::Closing
                                | tcp::State::LastAck
                        )
                })
            })
        })
    }

    /// TCP sockets alive over all threads.
    pub(crate) fn tcp_sockets(&self) -> usize {
        self.threads
            .iter()
            .map(|t| t.tcp_sockets.load(Ordering::Relaxed))
            .sum()
    }

    pub(super) fn find_listener(&self, flow: &FlowKey) -> Option<Arc<ListenerShared>> {
        let map = self.listeners.read().unwrap_or_else(|e| e.into_inner());
        map.get(&flow.local_port)?
            .iter()
            .find(|l| l.accepts(&flow.local_addr) && !l.closed.load(Ordering::Relaxed))
            .cloned()
    }

    /// The receive and send buffer sizes a TCP socket gets for `req`.
    pub(crate) fn tcp_buffer_sizes(&self, req: crate::BufferRequest) -> (usize, usize) {
        let rx = req
            .rx
            .map_or(self.opts.tcp_rx_buffer, |v| v.saturating_mul(2));
        let tx = req
            .tx
            .map_or(self.opts.tcp_tx_buffer, |v| v.saturating_mul(2));
        (
            crate::tcp_rx_buffer_size(rx),
            tx.clamp(crate::MIN_TCP_TX_BUFFER, crate::MAX_TCP_TX_BUFFER),
        )
    }

    /// A new TCP socket with the buffers `req` asks for (or the configured
    /// ones).
    pub(crate) fn new_tcp_socket(&self, req: crate::BufferRequest) -> tcp::Socket<'static> {
        let (rx, tx) = self.tcp_buffer_sizes(req);
        let rx = tcp::SocketBuffer::new(vec![0; rx]);
        let tx = tcp::SocketBuffer::new(vec![0; tx]);
        let mut s = tcp::Socket::new(rx, tx);
        // Timestamps offered on our SYN and in a SYN-ACK answering a SYN
        // that has them (smoltcp drops them when the peer's SYN does not).
        s.set_tsval_generator(Some(tcp_tsval));
        s.set_nagle_enabled(self.opts.nagle);
        s.set_ack_delay(
            self.opts
                .ack_delay
                .map(|d| smoltcp::time::Duration::from_micros(d.as_micros() as u64)),
        );
        s
    }
}

/// The TSval of our TCP timestamps (RFC 7323): a millisecond clock from a
/// random start of this process's. smoltcp takes a bare `fn() -> u32`, so
/// the offset is per process, not per connection as RFC 7323 7.1 suggests;
/// it still tells a peer nothing of the host's uptime.
fn tcp_tsval() -> u32 {
    static START: std::sync::OnceLock<(std::time::Instant, u32)> = std::sync::OnceLock::new();
    let (start, offset) =
        START.get_or_init(|| (std::time::Instant::now(), crate::random_seed() as u32));
    (start.elapsed().as_millis() as u32).wrapping_add(*offset)
}
