//! Requests, responses and the statistics they carry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One request, with the protocol version it was written for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION) of the client.
    pub version: u32,
    /// What it asks.
    pub request: Request,
}

/// What a client can ask a daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Request {
    /// Any daemon: who is there (a health check).
    Ping,
    /// lstack: counters of the stack, its threads and its port.
    LstackStats,
    /// lstack: every TCP connection and listener.
    LstackConnections,
    /// lstack: MIB-2 counters (IP, ICMP, TCP, UDP and their IPv6 groups).
    LstackSnmp,
    /// lstack: receive-to-application latency.
    LstackLatency,
    /// ltran: how to attach to its DPDK memory.
    Hello,
    /// ltran: register an lstack instance (the connection stays open).
    Register(crate::Registration),
    /// ltran, on a registration connection: the instance listens here.
    Listen(crate::ListenAddr),
    /// ltran, on a registration connection: it stopped listening here.
    Unlisten(crate::ListenAddr),
    /// ltran: everything `gazellectl ltran show` prints.
    LtranStats,
    /// ltran: stop (instances then exit, see the README).
    LtranQuit,
}

/// A daemon's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    /// Answer to [`Request::Ping`].
    Pong {
        /// `lstack` or `ltran`.
        daemon: String,
        /// Its process id.
        pid: u32,
    },
    /// Answer to [`Request::LstackStats`].
    LstackStats(LstackStats),
    /// Answer to [`Request::LstackConnections`].
    LstackConnections {
        /// One entry per socket.
        connections: Vec<Connection>,
    },
    /// Answer to [`Request::LstackSnmp`].
    LstackSnmp(crate::LstackSnmp),
    /// Answer to [`Request::LstackLatency`].
    LstackLatency(crate::LstackLatency),
    /// Answer to [`Request::Hello`].
    Hello(crate::LtranHello),
    /// Answer to [`Request::Register`].
    Registered(crate::Registered),
    /// Answer to [`Request::LtranStats`].
    LtranStats(crate::LtranStats),
    /// Done (listen events, quit).
    Ok,
    /// The request was understood and refused, or failed.
    Error {
        /// What went wrong, for an operator.
        message: String,
    },
}

/// Counters of one lstack process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LstackStats {
    /// Process id.
    pub pid: u32,
    /// Process name (`/proc/self/comm`).
    pub process: String,
    /// The stack's IPv4 address (`host_addr`), if any.
    pub ip: Option<String>,
    /// The stack's IPv6 address (`host_addr6`), if any.
    pub ip6: Option<String>,
    /// Seconds since the stack started.
    pub uptime_secs: u64,
    /// TCP connections alive, closing ones included (gazelle's `conn_num`).
    pub tcp_connections: u64,
    /// Free mbufs in the stack's pool.
    pub mbufs_available: u64,
    /// TCP and UDP sockets the process kept on the kernel, by reason
    /// (loopback, `udp_enable = 0`...): nothing falls back silently.
    #[serde(default)]
    pub kernel_sockets: BTreeMap<String, u64>,
    /// Socket options the application set that lstack does not honour on
    /// its sockets (accepted, as gazelle does, but without effect), by
    /// option name: times set. Each is also logged once.
    #[serde(default)]
    pub unhonoured_options: BTreeMap<String, u64>,
    /// The DPDK port's own counters (with a bond, its ports' added up).
    pub port: PortCounters,
    /// The bond, when lstack bonds two ports itself (`bond_mode = 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bond: Option<crate::BondStatus>,
    /// The path to the kernel, when the stack shares its address with it
    /// (`kni_switch`, `flow_bifurcation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_path: Option<KernelPathStatus>,
    /// One entry per stack thread.
    pub threads: Vec<ThreadCounters>,
}

/// The path to the kernel of a stack that shares its address with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KernelPathStatus {
    /// The kernel's interface carrying the address (`kni`).
    pub iface: String,
    /// The TCP ports the stack owns (listening, connected): every other
    /// TCP port of the address is the kernel's.
    pub owned_tcp_ports: Vec<u16>,
    /// The UDP ports the stack owns.
    pub owned_udp_ports: Vec<u16>,
    /// The eBPF helper's counters (passed, dropped by reason), when it is
    /// loaded: a missing key means the program that counts it is not.
    #[serde(default)]
    pub helper: BTreeMap<String, u64>,
    /// Why the eBPF helper is not loaded, if it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helper_error: Option<String>,
}

impl LstackStats {
    /// The threads' counters added up.
    pub fn total(&self) -> ThreadCounters {
        let mut t = ThreadCounters::default();
        for c in &self.threads {
            t.add(c);
        }
        t
    }
}

/// Counters of a DPDK port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PortCounters {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets the NIC dropped for lack of receive descriptors.
    pub rx_missed: u64,
    /// Erroneous packets received.
    pub rx_errors: u64,
    /// Failed transmissions.
    pub tx_errors: u64,
    /// Receive mbuf allocation failures.
    pub rx_nombuf: u64,
}

/// Counters of one stack thread.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ThreadCounters {
    /// Frames received from the NIC queue.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames handed to the NIC queue.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Frames dropped because the NIC queue stayed full.
    pub tx_dropped: u64,
    /// Transmits that found the mbuf pool empty.
    pub tx_nombuf: u64,
    /// Frames another thread's queue received for this one.
    pub steered_in: u64,
    /// Frames dropped because the owning thread's steering queue was full.
    pub steer_dropped: u64,
    /// Connections refused at `tcp_conn_count`.
    pub conn_limit_refused: u64,
    /// Connection requests dropped on a full accept queue.
    pub accept_overflow: u64,
    /// Connections established (accepted or connected).
    pub tcp_established: u64,
    /// Handshakes in progress (SYN-RECEIVED) now.
    #[serde(default)]
    pub half_open: u64,
    /// Handshakes dropped to make room for newer ones (a full half-open
    /// table: a SYN flood, or clients that never finish).
    #[serde(default)]
    pub half_open_evicted: u64,
    /// Handshakes dropped because they did not complete in time.
    #[serde(default)]
    pub half_open_expired: u64,
    /// SYNs answered with a challenge instead of a socket: the half-open
    /// table was full and the source not yet proven real.
    #[serde(default)]
    pub syn_challenges: u64,
    /// Challenges answered: sources proven real.
    #[serde(default)]
    pub syn_challenges_answered: u64,
    /// ICMP Too Big messages that lowered a path MTU.
    #[serde(default)]
    pub pmtu_learned: u64,
    /// ICMP Too Big messages ignored: no flow of ours, or a sequence number
    /// not in flight (RFC 5927).
    #[serde(default)]
    pub pmtu_ignored: u64,
    /// TCP segments cut to fit a lowered path MTU.
    #[serde(default)]
    pub pmtu_split: u64,
    /// Frames handed to the kernel on the exception path (`kni_switch`,
    /// `flow_bifurcation`).
    #[serde(default)]
    pub kernel_rx: u64,
    /// Frames the kernel sent out through the stack's NIC queue.
    #[serde(default)]
    pub kernel_tx: u64,
    /// Frames for the kernel dropped (its queue full, no mbuf for a copy).
    #[serde(default)]
    pub kernel_dropped: u64,
    /// Loop iterations with nothing to do.
    pub idle_loops: u64,
    /// Times the thread slept, idle.
    pub sleeps: u64,
    /// Panics caught and survived (each one a bug to report).
    pub panics: u64,
    /// Received frames dropped, by reason (malformed, not for us...).
    pub drops: BTreeMap<String, u64>,
}

impl ThreadCounters {
    /// Adds `o`'s counters to these.
    pub fn add(&mut self, o: &ThreadCounters) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.tx_dropped += o.tx_dropped;
        self.tx_nombuf += o.tx_nombuf;
        self.steered_in += o.steered_in;
        self.steer_dropped += o.steer_dropped;
        self.conn_limit_refused += o.conn_limit_refused;
        self.accept_overflow += o.accept_overflow;
        self.tcp_established += o.tcp_established;
        self.half_open += o.half_open;
        self.half_open_evicted += o.half_open_evicted;
        self.half_open_expired += o.half_open_expired;
        self.syn_challenges += o.syn_challenges;
        self.syn_challenges_answered += o.syn_challenges_answered;
        self.pmtu_learned += o.pmtu_learned;
        self.pmtu_ignored += o.pmtu_ignored;
        self.pmtu_split += o.pmtu_split;
        self.kernel_rx += o.kernel_rx;
        self.kernel_tx += o.kernel_tx;
        self.kernel_dropped += o.kernel_dropped;
        self.idle_loops += o.idle_loops;
        self.sleeps += o.sleeps;
        self.panics += o.panics;
        for (k, v) in &o.drops {
            *self.drops.entry(k.clone()).or_default() += v;
        }
    }

    /// Every received frame dropped, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.drops.values().sum()
    }
}

/// One socket of an lstack process: a TCP socket of the stack, or a TCP or
/// UDP socket the process kept on the kernel (then `kernel` says why).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Connection {
    /// Stack thread that owns it (0 for a kernel-path socket).
    pub thread: usize,
    /// TCP state, as `ss` names it (`ESTAB`, `LISTEN`, `TIME-WAIT`...);
    /// `UNCONN` for a UDP socket.
    pub state: String,
    /// Local address and port.
    pub local: String,
    /// Remote address and port (`*` for a listener).
    pub remote: String,
    /// Bytes received, not yet read by the application.
    pub recv_queue: u64,
    /// Bytes written, not yet acknowledged by the peer.
    pub send_queue: u64,
    /// Receive buffer size.
    pub recv_capacity: u64,
    /// Send buffer size.
    pub send_capacity: u64,
    /// Set for a socket on the kernel's path: its descriptor, protocol and
    /// why it is not on lstack. Absent for the stack's own sockets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelPathSocket>,
}

/// Why and where a socket of an accelerated process stays on the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KernelPathSocket {
    /// The descriptor in the process.
    pub fd: i32,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Why it is on the kernel (the names of
    /// [`LstackStats::kernel_sockets`]).
    pub reason: String,
}
