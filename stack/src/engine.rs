//! The stack threads: one per NIC queue, each polling its queue, demuxing
//! frames to socket shards and running smoltcp.
//!
//! ## Why shards
//! smoltcp matches every ingress segment against every socket of the set it
//! is given and walks every socket on egress. With 20 000 connections one set
//! would make each packet cost 20 000 comparisons. Each thread therefore
//! keeps its TCP sockets in `shards` small [`SocketSet`]s chosen by a keyed
//! hash of the flow ([`FlowKey::hash`]); a frame is handed to smoltcp with
//! only its flow's shard, and egress walks only shards that had traffic, were
//! touched by the application, or have a timer due. The last shard of every
//! thread is the control shard: ARP, ICMP, NDP, fragments and UDP sockets.
//!
//! ## Why a listener pool
//! A smoltcp listening socket turns into the connection it accepts. So each
//! listening port keeps, in every shard that receives a SYN for it, a spare
//! socket in `Listen` state, created just before the SYN is ingested. Since a
//! flow always hashes to the same shard, the socket that took the SYN also
//! gets the rest of the flow. Established connections move to the
//! listener's accept queue.
//!
//! ## Threads
//! A flow belongs to thread `hash % threads`. When a NIC spreads flows over
//! several queues by its own hash, a thread passes frames of flows it does
//! not own to the owner's steering queue; ARP and NDP go to every thread.
//!
//! ## Counting
//! Each frame from the port is counted in the MIB-2 counters ([`crate::mib`])
//! by the thread that took it off its queue. TCP connection counters come
//! from the state changes a thread sees after polling a shard: spares that
//! took a SYN (passive opens), handshakes completed or failed, and the
//! connections each shard watches (`ShardInner::conns`) for resets.
//!
//! ## Receive latency
//! Every socket carries an [`RxMark`]. When a read leaves a socket's receive
//! queue empty, the socket is *armed*: put on its shard's `armed` list.
//! After smoltcp ingests a frame with data into the shard, the armed
//! sockets whose queue is no longer empty get the arrival time of the burst
//! the frame came in, and leave the list. The application's next read
//! records how long that data waited ([`crate::stats::LatencyHistogram`]).
//! Only data frames look at the list, and only at the entry of their flow
//! (UDP: of their port); the application's read costs a clock read and a
//! few atomic adds.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard, OnceLock, RwLock,
    },
    time::Duration,
};

use crossbeam_queue::ArrayQueue;
use dpdk::{Mbuf, MbufBatch, Mempool};
use smoltcp::{
    iface::{Interface, SocketHandle, SocketSet},
    socket::AnySocket,
    socket::{tcp, udp},
    time::Instant as SmolInstant,
    wire::{
        EthernetFrame, EthernetRepr, IpAddress, IpEndpoint, IpListenEndpoint, IpVersion, TcpControl,
    },
};

use crate::{
    classify::{classify_seen, DropReason, FlowKey, LocalAddrs, RxChecked, Verdict},
    conformance::{bare_segment_end, Incoming},
    device::{FrameDevice, TxPath},
    event::Event,
    handshake::{Challenge, End as HalfOpenEnd, HalfOpen, VerifiedSources},
    stats::{LatencyHistogram, ThreadStats},
    StackOptions,
};

/// Capacity of each thread's steering and command queues.
const QUEUE_DEPTH: usize = 4096;

/// One shard of sockets and the bookkeeping of its listener pool.
#[derive(Debug)]
pub(crate) struct Shard {
    inner: Mutex<ShardInner>,
}

impl Shard {
    fn new() -> Self {
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
    spares: Vec<(SocketHandle, Arc<ListenerShared>)>,
    /// Former spares that took a SYN and are not yet established.
    embryos: Vec<Embryo>,
    /// Sockets the application closed, removed once smoltcp is done with them.
    orphans: Vec<Orphan>,
    /// Connections (accepted, or connecting and connected) with the state
    /// they had at the last look, for the TCP counters; dropped once closed.
    conns: Vec<(SocketHandle, tcp::State)>,
    /// Sockets with an empty receive queue whose next data is timed.
    pub(crate) armed: Vec<Armed>,
    /// The UDP sockets of this shard by local port, to see whether a
    /// datagram found room in its socket.
    pub(crate) udp_ports: HashMap<u16, Vec<SocketHandle>>,
}

impl ShardInner {
    /// Bytes queued for the application in the UDP sockets of `port`;
    /// `None` when the shard has none.
    fn udp_queued(&self, port: u16) -> Option<usize> {
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
struct Embryo {
    handle: SocketHandle,
    listener: Arc<ListenerShared>,
    slot: u32,
}

#[derive(Debug)]
struct Orphan {
    handle: SocketHandle,
    /// The ephemeral (port, remote) to give back once the socket is gone.
    ephemeral: Option<(u16, IpEndpoint)>,
}

impl ShardInner {
    /// Hands a socket the application closed to the stack for reaping.
    pub(crate) fn orphan(&mut self, handle: SocketHandle, ephemeral: Option<(u16, IpEndpoint)>) {
        self.orphans.push(Orphan { handle, ephemeral });
    }
}

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

    fn stamp(&self, at_ns: u64) {
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
enum Arrival {
    /// A segment of one TCP flow.
    Tcp { port: u16, remote: IpEndpoint },
    /// A datagram to a local UDP port.
    Udp { port: u16 },
}

/// After smoltcp ingested a frame with data that arrived at `at_ns`: the
/// armed socket it filled gets that arrival time and leaves the list.
/// Entries are told apart by port and peer, so only the socket the frame
/// is for is looked at (for UDP, the few sockets of its port).
fn stamp_arrivals(inner: &mut ShardInner, at_ns: u64, arrival: Arrival) {
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
    fn accepts(&self, addr: &IpAddress) -> bool {
        let family = match addr {
            IpAddress::Ipv4(_) => self.v4,
            IpAddress::Ipv6(_) => self.v6,
        };
        family && self.endpoint.addr.is_none_or(|a| a == *addr)
    }
}

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
    commands: ArrayQueue<Command>,
    steer: ArrayQueue<Mbuf>,
    /// Shards the application touched (wrote, read, closed): egress due.
    dirty: Box<[AtomicU64]>,
    pub(crate) stats: Arc<ThreadStats>,
    /// Threads sleeping on `wake_fd`: the stack thread, or (run to
    /// completion) application threads waiting for the stack.
    sleeping: AtomicUsize,
    /// Written (only while someone sleeps) to wake it: an eventfd slept on
    /// beside the receive queue.
    wake_fd: nix::sys::eventfd::EventFd,
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
    fn wake(&self) {
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
    challenges_until: AtomicU64,
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

/// Which stack thread serves each listening port (`listen_shadow = 0`):
/// ports get threads in turn as they are first listened on, and keep them.
#[derive(Debug)]
pub(crate) struct PortHomes {
    /// Per port: 0 (by the flow hash), or 1 + the thread.
    home: Box<[std::sync::atomic::AtomicU16]>,
    next: AtomicUsize,
    threads: usize,
}

impl PortHomes {
    pub(crate) fn new(threads: usize) -> Self {
        Self {
            home: (0..=u16::MAX)
                .map(|_| std::sync::atomic::AtomicU16::new(0))
                .collect(),
            next: AtomicUsize::new(0),
            threads: threads.clamp(1, usize::from(u16::MAX - 1)),
        }
    }

    /// The thread of `port`, if it was ever listened on.
    #[inline]
    pub(crate) fn get(&self, port: u16) -> Option<usize> {
        let h = self.home[usize::from(port)].load(Ordering::Relaxed);
        (h != 0).then(|| usize::from(h) - 1)
    }

    /// `port` is listened on: it gets the next thread, unless it has one.
    /// Returns its thread.
    pub(crate) fn listen(&self, port: u16) -> usize {
        if let Some(t) = self.get(port) {
            return t;
        }
        let t = self.next.fetch_add(1, Ordering::Relaxed) % self.threads;
        match self.home[usize::from(port)].compare_exchange(
            0,
            t as u16 + 1,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => t,
            Err(other) => usize::from(other) - 1,
        }
    }
}

impl StackShared {
    pub(crate) fn new(
        threads: usize,
        opts: StackOptions,
        local: LocalAddrs,
        conn_limit: usize,
        seed: u64,
    ) -> Self {
        let shards = opts.tcp_shards;
        Self {
            threads: (0..threads).map(|_| ThreadShared::new(shards)).collect(),
            listeners: RwLock::new(HashMap::new()),
            ephemeral: Mutex::new(EphemeralPorts::default()),
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
        let now_us = self.clock.now_ns() / 1000;
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
                rtc.wakeups.iter().flatten(),
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

    fn verify(&self, addr: IpAddress, now_ns: u64) {
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

    fn find_listener(&self, flow: &FlowKey) -> Option<Arc<ListenerShared>> {
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

/// Local ports handed out to outgoing connections, unique per remote end.
#[derive(Debug, Default)]
pub(crate) struct EphemeralPorts {
    used: HashSet<(u16, IpEndpoint)>,
    cursor: u16,
}

/// The ephemeral port range, as Linux's default.
pub(crate) const EPHEMERAL: std::ops::RangeInclusive<u16> = 32768..=60999;

impl EphemeralPorts {
    /// Takes a port not in use towards `remote` and not listened on.
    pub(crate) fn take(
        &mut self,
        remote: IpEndpoint,
        listening: impl Fn(u16) -> bool,
    ) -> Option<u16> {
        let span = u32::from(*EPHEMERAL.end() - *EPHEMERAL.start()) + 1;
        for _ in 0..span {
            self.cursor = self.cursor.wrapping_add(1) % span as u16;
            let port = EPHEMERAL.start() + self.cursor;
            if !listening(port) && self.used.insert((port, remote)) {
                return Some(port);
            }
        }
        None
    }

    /// Gives a port back.
    pub(crate) fn release(&mut self, port: u16, remote: IpEndpoint) {
        self.used.remove(&(port, remote));
    }
}

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
}

impl Rtc {
    pub(crate) fn new(contexts: Vec<RtcContext>) -> Self {
        let wakeups = contexts
            .iter()
            .map(|c| c.worker.rx_wakeup.clone())
            .collect();
        Self {
            contexts: contexts.into_iter().map(|c| Mutex::new(Some(c))).collect(),
            wakeups,
            poller: AtomicBool::new(false),
            poll_until_us: AtomicU64::new(u64::MAX),
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
    rx_wakeup: Option<dpdk::RxWakeup>,
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
        // A bounded share of tcp_conn_count: a flood of handshakes never
        // takes the room of established connections.
        let half_open_limit = (shared.conn_limit / 4 / shared.threads.len()).max(16);
        let half_open = HalfOpen::new(half_open_limit, shared.opts.syn_recv_lifetime);
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
        self.tx.flush();
        if self.half_open.len() > 0 {
            self.reap_half_open(now_ns);
        }
        busy
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

    /// Answers the SYN `m` of `flow` with a challenge instead of a socket
    /// (see [`crate::handshake`]).
    fn challenge(&mut self, m: &Mbuf, flow: &FlowKey, now_ns: u64) {
        let shared = &*self.shared;
        let me = &shared.threads[self.index];
        let mut frame = [0u8; Challenge::FRAME_MAX];
        let Some(len) =
            shared
                .challenge
                .syn_ack(m.data(), flow, now_ns, shared.local.mac, &mut frame)
        else {
            return;
        };
        let Some(mut out) = self.pool.alloc() else {
            me.stats.tx_nombuf.incr();
            return;
        };
        let Some(buf) = out.append(len) else {
            return;
        };
        buf.copy_from_slice(&frame[..len]);
        me.stats.mib.count_tx(out.data());
        me.stats.syn_challenges.incr();
        shared.challenges_until.store(
            now_ns + crate::handshake::CHALLENGE_PERIOD_NS * 2,
            Ordering::Relaxed,
        );
        self.tx.push(out);
    }

    /// Answers the TCP segment `m` of `flow` with a challenge ACK
    /// (RFC 5961 3.2, 4.2) carrying SND.NXT `seq`, RCV.NXT `ack` and our
    /// `window`, back to the MAC it came from.
    fn challenge_ack(&mut self, m: &Mbuf, flow: &FlowKey, seq: u32, ack: u32, window: u16) {
        let Ok(eth) = EthernetFrame::new_checked(m.data()) else {
            return;
        };
        let eth = EthernetRepr {
            src_addr: self.shared.local.mac,
            dst_addr: eth.src_addr(),
            ethertype: eth.ethertype(),
        };
        let tcp = crate::handshake::bare_segment(flow, TcpControl::None, seq, ack, window);
        let mut frame = [0u8; Challenge::FRAME_MAX];
        let Some(len) =
            crate::handshake::emit_frame(&eth, flow.local_addr, flow.remote_addr, &tcp, &mut frame)
        else {
            return;
        };
        self.send_frame(&frame[..len]);
    }

    /// Answers the IPv4 datagram `m` of a protocol we do not speak with
    /// ICMP protocol unreachable, if it was unicast to us.
    fn protocol_unreachable(&mut self, m: &Mbuf) {
        let Some(ip) = self.shared.local.ipv4 else {
            return;
        };
        let mut frame = [0u8; crate::conformance::UNREACHABLE_MAX];
        if let Some(len) = crate::conformance::protocol_unreachable(
            m.data(),
            self.shared.local.mac.0,
            ip,
            &mut frame,
        ) {
            self.send_frame(&frame[..len]);
        }
    }

    /// Sends a frame this layer built (not smoltcp), counted like its own.
    fn send_frame(&mut self, frame: &[u8]) {
        let me = &self.shared.threads[self.index];
        let Some(mut out) = self.pool.alloc() else {
            me.stats.tx_nombuf.incr();
            return;
        };
        let Some(buf) = out.append(frame.len()) else {
            return;
        };
        buf.copy_from_slice(frame);
        me.stats.mib.count_tx(out.data());
        self.tx.push(out);
    }

    /// Drops the handshakes the [`HalfOpen`] table gives up on: the oldest
    /// while it is over its limit, and any over their lifetime. Silently,
    /// as a kernel drops a request it gave up on: nothing is sent.
    fn reap_half_open(&mut self, now_ns: u64) {
        let me = &self.shared.threads[self.index];
        while let Some((slot, entry, why)) = self.half_open.victim(now_ns) {
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
            self.half_open.leave(slot);
        }
        me.stats.half_open.set(self.half_open.len() as u64);
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
        let max = match self.rx_wakeup {
            // Handshakes age even when nothing arrives.
            Some(_) if self.half_open.len() > 0 => 100_000,
            Some(_) => 1_000_000,
            None => self.shared.opts.idle_sleep.as_micros() as u64,
        };
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
            let woken = dpdk::wait_for_frames(
                &[std::os::fd::AsFd::as_fd(&me.wake_fd)],
                self.rx_wakeup.as_ref(),
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
    fn next_timer_us(&self) -> u64 {
        self.next_poll.iter().copied().min().unwrap_or(u64::MAX)
    }

    /// Gets the receive queue ready to wake a sleep: arms its interrupt and
    /// receives once more (frames that came before arming raise nothing).
    /// False if frames came, into `batch`: no sleep then.
    fn arm_rx(&mut self, batch: &mut MbufBatch) -> bool {
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
    fn disarm_rx(&mut self) {
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
        if seen.ipv6_ext_len > 0 && matches!(verdict, Verdict::Tcp { .. }) {
            strip_ipv6_extensions(&mut m, usize::from(seen.ipv6_ext_len));
        }
        let mut resolved = None;
        let (thread, shard) = match verdict {
            Verdict::Drop(reason) => {
                me.stats.drop_frame(reason);
                if reason == DropReason::UnsupportedProtocol
                    && self.tx.conformance.icmp_errors.allow(now_ns)
                {
                    self.protocol_unreachable(&m);
                }
                return;
            }
            Verdict::Tcp { flow, syn } => {
                let (mut thread, shard) = shared.place(&flow);
                if shared.arrival_placement {
                    // Behind ltran, ltran chose the thread (fewest
                    // connections, or the one that opened the flow).
                    thread = self.index;
                }
                if thread == self.index {
                    match self
                        .tx
                        .conformance
                        .check_incoming(&flow, m.data_mut(), now_ns)
                    {
                        Incoming::Pass => {}
                        Incoming::Drop => return,
                        Incoming::Challenge { seq, ack, window } => {
                            self.challenge_ack(&m, &flow, seq, ack, window);
                            return;
                        }
                    }
                    if seen.tcp_bare {
                        // No connection takes it; in LISTEN it is dropped,
                        // at a closed port smoltcp's RST gets its ACK.
                        if shared.find_listener(&flow).is_some() {
                            return;
                        }
                        self.tx.conformance.rst_ack = bare_segment_end(m.data());
                    }
                }
                if thread == self.index && syn {
                    match prepare_listener(shared, me, &mut self.half_open, shard, &flow, now_ns) {
                        SynAction::Ingest => {}
                        SynAction::Drop => return,
                        SynAction::Challenge => {
                            self.challenge(&m, &flow, now_ns);
                            return;
                        }
                    }
                } else if seen.tcp_rst
                    && now_ns < shared.challenges_until.load(Ordering::Relaxed)
                    && shared.challenge.answered(m.data(), &flow, now_ns)
                {
                    // A client proved it receives what we send it.
                    shared.verify(flow.remote_addr, now_ns);
                    me.stats.syn_challenges_answered.incr();
                    return;
                }
                (thread, shard)
            }
            Verdict::Udp { port } => {
                let t = shared.udp_thread(port);
                let mut shard = shared.threads[t].control_shard();
                if shared.connected_udp_count.load(Ordering::Relaxed) > 0 {
                    if let Some(flow) = crate::classify::udp_flow(m.data()) {
                        let map = shared
                            .connected_udp
                            .read()
                            .unwrap_or_else(|e| e.into_inner());
                        if let Some(s) = map.get(&flow) {
                            shard = *s;
                        }
                    }
                }
                (t, shard)
            }
            Verdict::Control { broadcast } => {
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
            if seen.tcp_rst && matches!(verdict, Verdict::Tcp { .. }) {
                // A handshake this RST reset went back to LISTEN with what
                // it learnt of the peer: take it out of the pool now, not
                // at the next egress, or a SYN later in this burst lands
                // on it (RFC 9293 3.10.7.3: a reset handshake leaves no
                // state).
                settle(
                    &mut inner,
                    &self.shared,
                    me,
                    &mut self.half_open,
                    (self.index, shard),
                    &mut self.released,
                    now_ns,
                );
            }
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
            if seen.data && !inner.armed.is_empty() {
                let arrival = match verdict {
                    Verdict::Tcp { flow, .. } => Some(Arrival::Tcp {
                        port: flow.local_port,
                        remote: IpEndpoint::new(flow.remote_addr, flow.remote_port),
                    }),
                    Verdict::Udp { port } => Some(Arrival::Udp { port }),
                    _ => None,
                };
                if let Some(arrival) = arrival {
                    stamp_arrivals(&mut inner, now_ns, arrival);
                }
            }
        }
        self.touch(shard);
        if let Some(addr) = resolved {
            self.ingest_waiting(now_ns, addr);
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
            if !self.released.is_empty() {
                let mut eph = self
                    .shared
                    .ephemeral
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                for (port, remote) in self.released.drain(..) {
                    eph.release(port, remote);
                }
            }
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

/// Removes `len` bytes of IPv6 extension headers that [`classify_seen`]
/// found skippable in front of a TCP segment, so that smoltcp sees
/// IPv6/TCP (it passes only Hop-by-Hop, and the control shard has no TCP
/// sockets). Rare: a copy of the segment, no allocation.
fn strip_ipv6_extensions(m: &mut Mbuf, len: usize) {
    const IP: usize = 14;
    const UPPER: usize = IP + 40;
    let data = m.data_mut();
    if data.len() < UPPER + len {
        return;
    }
    let payload_len = u16::from_be_bytes([data[IP + 4], data[IP + 5]]);
    let Some(payload_len) = payload_len.checked_sub(len as u16) else {
        return;
    };
    data.copy_within(UPPER + len.., UPPER);
    data[IP + 4..IP + 6].copy_from_slice(&payload_len.to_be_bytes());
    data[IP + 6] = 6;
    m.trim(len);
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

/// What to do with a SYN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SynAction {
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
fn prepare_listener(
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
fn settle(
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
