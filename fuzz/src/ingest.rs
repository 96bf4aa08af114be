//! The `ingest` fuzz target's harness: lstack's whole receive path minus
//! DPDK, shared with the corpus generator (`examples/gen_corpus.rs`), which
//! runs it to learn the sequence numbers of the connection it sets up.
//!
//! ## Input
//! The [`Header`] of the `classify` target (addresses and
//! checksum flags; [`flags::ADOPT_FRAME`](crate::flags::ADOPT_FRAME) is
//! ignored: one interface serves every frame), then up to [`MAX_RECORDS`]
//! records of [`RECORD_HEADER`] bytes and a frame:
//!
//! | bytes  | meaning                                                     |
//! |--------|-------------------------------------------------------------|
//! | `0`    | clock advance before the frame, see [`delay`]               |
//! | `1`    | what the application does after it, see [`action`]          |
//! | `2..4` | frame length, big-endian (cut to what the input has left)   |
//! | `4..`  | the frame                                                   |
//!
//! ## What runs
//! [`Harness::new`] builds what `lstack::Stack` builds for a stack thread:
//! a smoltcp `Interface` (Ethernet, the header's MAC / IPv4 / IPv6 /
//! link-local addresses, a default IPv4 route, the device capabilities of
//! `lstack::device::capabilities(false)`) over an in-memory device, and the
//! engine of one stack thread without DPDK ([`lstack::fuzzing::Engine`]:
//! [`TCP_SHARDS`] TCP shards and the control shard, the stack's default
//! options, listeners on TCP ports [`ECHO_PORT`] and [`HTTP_PORT`]; a UDP
//! socket on [`ECHO_PORT`] and an ICMP socket on [`ICMP_IDENT`] in the
//! control shard; TCP receive buffers of 131070 bytes, window scale 1, as
//! `lstack::tcp_rx_buffer_size` rounds the default: a 131072-byte buffer is
//! what `regression-tcp-window-overrun-scaled` overruns). It then feeds a
//! handshake from a peer ([`Harness::flow`]), ARP / neighbour solicitation
//! first so the peer is in the neighbour cache, so that one TCP connection
//! is established (and accepted) before the fuzz input starts.
//!
//! Each record ([`Harness::step`]) advances the fake clock, fills in the
//! frame's checksums if the header has
//! [`flags::FIX_CHECKSUMS`](crate::flags::FIX_CHECKSUMS) (see
//! [`fix_checksums`]), and hands the frame to the engine's own policy, the
//! code a stack thread runs (`Engine::receive`): `classify`, the MIB
//! counters, the RFC 5961 checks, the shard of its flow, the listener pool
//! for SYNs (spares, backlog, connection limit, SYN challenges), and the
//! engine's own answers; then, unless the engine dropped or answered it, to
//! `Interface::poll_ingress_single` with that shard's sockets and the
//! engine's bookkeeping after it. The application then reads / echoes /
//! sends / closes, and every shard is polled for egress and settled by the
//! engine (handshakes to the accept queue, which the application empties;
//! closed sockets reaped). Every frame smoltcp transmits goes through the
//! engine's transmit-side fixes first, as on the stack's transmit path.
//! [`Harness::finish`] then lets the timers fire.
//!
//! ## Invariants
//! Besides "no panic": every frame smoltcp transmits (and every answer the
//! engine builds itself) fits the MTU the device reports, comes from our MAC
//! and IP addresses, and is well formed by `classify`'s own reading (not
//! truncated, no bad length or checksum; read as its receiver would);
//! `poll_at` is never before time 0 nor more than [`MAX_TIMER`] after now.
//!
//! ## Not modelled
//! One stack thread, so no steering between threads, and no path MTU
//! learning from ICMP errors (the stack thread's, not the engine policy's);
//! UDP / ICMP queues smaller than the stack's; the application's side is
//! what [`action`] lists (it accepts every connection, and drops those that
//! reach `Closed`). smoltcp is built as the fuzz build builds it: with debug
//! assertions and overflow checks (cargo-fuzz's default), which lstack's
//! release build does not have, so a panic found here may be a silent
//! misbehaviour there.

use lstack::{
    classify::{classify, DropReason, LocalAddrs, RxChecked, Verdict},
    device::{capabilities, MAX_FRAME},
    fuzzing::{now_ns, Engine, TxFixes},
};
use smoltcp::{
    iface::{Config, Interface, PollResult, SocketHandle},
    phy::{self, ChecksumCapabilities, DeviceCapabilities},
    socket::{icmp, tcp, udp, AnySocket},
    time::{Duration, Instant},
    wire::{
        ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
        EthernetRepr, HardwareAddress, Icmpv4Packet, Icmpv4Repr, Icmpv6Packet, Icmpv6Repr,
        IpAddress, IpCidr, IpEndpoint, IpProtocol, Ipv4Address, Ipv4Cidr, Ipv4Packet, Ipv4Repr,
        Ipv6Address, Ipv6Packet, Ipv6Repr, NdiscRepr, RawHardwareAddress, TcpControl, TcpPacket,
        TcpRepr, TcpSeqNumber, TcpTimestampRepr, UdpPacket, UdpRepr,
    },
};

use crate::Header;

/// TCP port with a listener that the set-up connection uses; also the UDP
/// port of the control shard's UDP socket.
pub const ECHO_PORT: u16 = 7;
/// Second TCP listening port (the `classify` seeds' SYNs go there).
pub const HTTP_PORT: u16 = 80;
/// Ident the ICMP socket is bound to.
pub const ICMP_IDENT: u16 = 0x4c53;
/// The peer's port of the set-up connection.
pub const PEER_PORT: u16 = 40001;
/// The peer's initial sequence number of the set-up connection.
pub const PEER_ISN: u32 = 0x2000_0000;
/// smoltcp's random seed: fixed, so that our initial sequence number is the
/// same for every input (and known to the corpus generator).
pub const RANDOM_SEED: u64 = 0x6c73_7461_636b_6675;
/// Bytes before each frame.
pub const RECORD_HEADER: usize = 4;
/// Frames per input; the rest of an input is ignored.
pub const MAX_RECORDS: usize = 8;
/// Most TCP connections at once (the engine's connection limit): more SYNs
/// are dropped before smoltcp sees them.
pub const MAX_TCP_CONNECTIONS: usize = 8;
/// TCP shards of the engine: flows spread over them by the flow hash.
pub const TCP_SHARDS: usize = 4;
/// Backlog of the two listeners.
pub const BACKLOG: usize = 8;
/// Latest `poll_at` accepted after `now`: smoltcp's longest timer is the
/// 60 s retransmission timeout.
pub const MAX_TIMER: Duration = Duration::from_secs(120);

/// UDP and ICMP socket queues (smaller than the stack's: only their size
/// would differ, and zeroing them is most of the set-up time).
const DGRAM_PACKETS: usize = 16;
const DGRAM_BUFFER: usize = 16 * 1024;
/// How often one poll of egress is repeated while smoltcp has work.
const EGRESS_ROUNDS: usize = 8;
/// How many timer deadlines [`Harness::finish`] jumps to.
const FINISH_ROUNDS: usize = 4;

/// Bits of a record's action byte: what the application does after the
/// frame was ingested.
pub mod action {
    /// Read every socket that has data (TCP `recv_slice`, UDP, ICMP).
    pub const READ: u8 = 1 << 0;
    /// Send [`send_len`](super::send_len) bytes on every TCP connection.
    pub const SEND: u8 = 1 << 1;
    /// `close()` the set-up connection (FIN).
    pub const CLOSE: u8 = 1 << 2;
    /// `abort()` the set-up connection (RST).
    pub const ABORT: u8 = 1 << 3;
    /// With [`READ`]: send what was read back (TCP echo, UDP / ICMP to the
    /// sender).
    pub const ECHO: u8 = 1 << 4;
    /// Bits 5..8: log2 of the bytes [`SEND`] sends, over 16.
    pub const SIZE_SHIFT: u32 = 5;
}

/// Bytes an action byte with [`action::SEND`] sends: 16 to 2048.
pub fn send_len(actions: u8) -> usize {
    16 << (actions >> action::SIZE_SHIFT)
}

/// The clock advance of a record's delay byte: 0-127 ms, then 0-63.5 s in
/// steps of 0.5 s (delayed ACK, retransmission, TIME-WAIT, reassembly and
/// neighbour-cache timers).
pub fn delay(b: u8) -> Duration {
    if b < 128 {
        Duration::from_millis(u64::from(b))
    } else {
        Duration::from_millis(u64::from(b - 128) * 500)
    }
}

/// One record of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// See [`delay`].
    pub delay: u8,
    /// See [`action`].
    pub actions: u8,
    /// The frame.
    pub frame: &'a [u8],
}

impl Record<'_> {
    /// Appends the record's bytes to `out` (the frame must fit in 16 bits).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let len = u16::try_from(self.frame.len()).expect("a frame of at most 65535 bytes");
        out.push(self.delay);
        out.push(self.actions);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(self.frame);
    }
}

/// The records of the bytes after the header.
pub fn records(mut data: &[u8]) -> impl Iterator<Item = Record<'_>> {
    std::iter::from_fn(move || {
        if data.len() < RECORD_HEADER {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
        let rest = &data[RECORD_HEADER..];
        let (frame, tail) = rest.split_at(len.min(rest.len()));
        let r = Record {
            delay: data[0],
            actions: data[1],
            frame,
        };
        data = tail;
        Some(r)
    })
    .take(MAX_RECORDS)
}

/// Runs one input: set-up, its records, timers. Panics on a failed invariant.
pub fn run(data: &[u8]) {
    let Some((header, rest)) = Header::parse(data) else {
        return;
    };
    let mut h = Harness::new(&header);
    for r in records(rest) {
        h.step(&r);
    }
    h.finish();
}

/// Makes glibc's malloc keep freed memory instead of handing it back to the
/// kernel: every input allocates (and frees) a few hundred KiB of socket
/// buffers, and trimming / `mmap`ing them each time costs more than the
/// stack's own work (about 3x fewer runs per second). Harmless elsewhere.
pub fn keep_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called once at start-up,
    // before the fuzz loop allocates.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TOP_PAD, 16 << 20);
    }
}

/// The addresses of one input: ours (as `classify` sees them and as the
/// interface has them) and the set-up connection's peer.
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    /// Ours.
    pub local: LocalAddrs,
    /// Our IPv4 prefix length.
    pub ipv4_prefix: u8,
    /// The peer's MAC: ours with the last byte 1 (2 if ours is 1).
    pub peer_mac: EthernetAddress,
    /// An IPv4 peer on our subnet, also the default gateway.
    pub peer_v4: Option<Ipv4Address>,
    /// An IPv6 peer: our address with the last byte 1 (2 if ours is 1).
    pub peer_v6: Option<Ipv6Address>,
    /// A link-local peer: `fe80::1`.
    pub peer_ll: Option<Ipv6Address>,
}

impl Addrs {
    /// The addresses of `header`, made acceptable to smoltcp (which panics
    /// on a non-unicast MAC or IP address): the MAC's multicast bit is
    /// cleared, non-unicast IP addresses count as absent, and so does an
    /// IPv6 address in `::/64` (no configuration has one).
    pub fn new(header: &Header) -> Addrs {
        let mut h = *header;
        h.mac[0] &= !1;
        let mut local = h.local_addrs(&[]);
        local.ipv4 = local
            .ipv4
            .filter(|a| !(a.is_broadcast() || a.is_multicast() || a.is_unspecified()));
        if local.ipv4.is_none() {
            local.ipv4_broadcast = None;
        }
        // Nor an IPv6 address in `::/64`: its /64 would put `::1` on the
        // link, and smoltcp sends to (and solicits) `::1` from `::1`.
        local.ipv6 = local
            .ipv6
            .filter(|a| !a.is_multicast() && a.octets()[..8] != [0; 8]);
        let prefix = h.ipv4_prefix % 33;
        let other = |last: u8| if last == 1 { 2 } else { 1 };
        let mut peer_mac = local.mac.0;
        peer_mac[5] = other(peer_mac[5]);
        let peer_v4 = local.ipv4.map(|a| {
            let n = u32::from(a);
            let mask = if prefix == 0 {
                0
            } else {
                !0u32 << (32 - prefix)
            };
            let net = n & mask;
            Ipv4Address::from(if prefix >= 31 {
                n ^ 1
            } else if net.wrapping_add(1) != n {
                net.wrapping_add(1)
            } else {
                net.wrapping_add(2)
            })
        });
        let peer_v6 = local.ipv6.map(|a| {
            let mut o = a.octets();
            o[15] = other(o[15]);
            Ipv6Address::from(o)
        });
        let peer_ll = local
            .ipv6_link_local
            .map(|_| Ipv6Address::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));
        Addrs {
            local,
            ipv4_prefix: prefix,
            peer_mac: EthernetAddress(peer_mac),
            peer_v4,
            peer_v6,
            peer_ll,
        }
    }

    /// The set-up connection's addresses: over IPv4 if we have an IPv4
    /// address, else IPv6, else link-local; `None` without any.
    pub fn flow(&self) -> Option<Link> {
        let l = &self.local;
        let (ours, peer) = if let (Some(a), Some(p)) = (l.ipv4, self.peer_v4) {
            (IpAddress::Ipv4(a), IpAddress::Ipv4(p))
        } else if let (Some(a), Some(p)) = (l.ipv6, self.peer_v6) {
            (IpAddress::Ipv6(a), IpAddress::Ipv6(p))
        } else if let (Some(a), Some(p)) = (l.ipv6_link_local, self.peer_ll) {
            (IpAddress::Ipv6(a), IpAddress::Ipv6(p))
        } else {
            return None;
        };
        Some(Link {
            our_mac: l.mac,
            peer_mac: self.peer_mac,
            ours,
            peer,
        })
    }
}

/// Two ends of an IP conversation on the link, for building the peer's
/// frames to us (checksums filled in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Our MAC.
    pub our_mac: EthernetAddress,
    /// The peer's MAC.
    pub peer_mac: EthernetAddress,
    /// Our IP address.
    pub ours: IpAddress,
    /// The peer's IP address.
    pub peer: IpAddress,
}

/// An Ethernet frame from `src` to `dst`.
pub fn ethernet(
    src: EthernetAddress,
    dst: EthernetAddress,
    ethertype: EthernetProtocol,
    payload: &[u8],
) -> Vec<u8> {
    let repr = EthernetRepr {
        src_addr: src,
        dst_addr: dst,
        ethertype,
    };
    let mut buf = vec![0u8; repr.buffer_len() + payload.len()];
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    repr.emit(&mut f);
    f.payload_mut().copy_from_slice(payload);
    buf
}

/// An ARP request from `src_mac` / `src` for `target`, broadcast.
pub fn arp_request(src_mac: EthernetAddress, src: Ipv4Address, target: Ipv4Address) -> Vec<u8> {
    let repr = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: src_mac,
        source_protocol_addr: src,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(&mut ArpPacket::new_unchecked(&mut buf[..]));
    ethernet(
        src_mac,
        EthernetAddress::BROADCAST,
        EthernetProtocol::Arp,
        &buf,
    )
}

/// The solicited-node multicast group of `a` and its MAC.
pub fn solicited_node(a: Ipv6Address) -> (Ipv6Address, EthernetAddress) {
    let o = a.octets();
    let group = Ipv6Address::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    );
    let mac = EthernetAddress([0x33, 0x33, 0xff, o[13], o[14], o[15]]);
    (group, mac)
}

/// A neighbour solicitation from `src_mac` / `src` for `target`, to its
/// solicited-node group, with the source link-layer address option.
pub fn neighbor_solicit(
    src_mac: EthernetAddress,
    src: Ipv6Address,
    target: Ipv6Address,
) -> Vec<u8> {
    let (group, group_mac) = solicited_node(target);
    let ns = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
        target_addr: target,
        lladdr: Some(RawHardwareAddress::from(src_mac)),
    });
    let mut icmp = vec![0u8; ns.buffer_len()];
    ns.emit(
        &src,
        &group,
        &mut Icmpv6Packet::new_unchecked(&mut icmp[..]),
        &ChecksumCapabilities::default(),
    );
    let mut f = ip_frame(
        src_mac,
        group_mac,
        IpAddress::Ipv6(src),
        IpAddress::Ipv6(group),
        IpProtocol::Icmpv6,
        &icmp,
    );
    f[14 + 7] = 255; // NDP's hop limit
    f
}

/// An IPv4 or IPv6 frame (by the addresses' family) carrying `l4`.
pub fn ip_frame(
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src: IpAddress,
    dst: IpAddress,
    proto: IpProtocol,
    l4: &[u8],
) -> Vec<u8> {
    match (src, dst) {
        (IpAddress::Ipv4(src), IpAddress::Ipv4(dst)) => {
            let repr = Ipv4Repr {
                src_addr: src,
                dst_addr: dst,
                next_header: proto,
                payload_len: l4.len(),
                hop_limit: 64,
            };
            let mut buf = vec![0u8; repr.buffer_len() + l4.len()];
            let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
            repr.emit(&mut p, &ChecksumCapabilities::default());
            p.payload_mut().copy_from_slice(l4);
            ethernet(src_mac, dst_mac, EthernetProtocol::Ipv4, &buf)
        }
        (IpAddress::Ipv6(src), IpAddress::Ipv6(dst)) => {
            let repr = Ipv6Repr {
                src_addr: src,
                dst_addr: dst,
                next_header: proto,
                payload_len: l4.len(),
                hop_limit: 64,
            };
            let mut buf = vec![0u8; repr.buffer_len() + l4.len()];
            let mut p = Ipv6Packet::new_unchecked(&mut buf[..]);
            repr.emit(&mut p);
            p.payload_mut().copy_from_slice(l4);
            ethernet(src_mac, dst_mac, EthernetProtocol::Ipv6, &buf)
        }
        _ => panic!("mixed address families: {src} -> {dst}"),
    }
}

impl Link {
    /// A frame from the peer to us carrying `l4`.
    pub fn frame(&self, proto: IpProtocol, l4: &[u8]) -> Vec<u8> {
        ip_frame(self.peer_mac, self.our_mac, self.peer, self.ours, proto, l4)
    }

    /// A TCP segment from the peer to us.
    pub fn tcp(&self, repr: &TcpRepr<'_>) -> Vec<u8> {
        self.frame(IpProtocol::Tcp, &self.tcp_segment(repr))
    }

    /// The TCP segment alone (for fragmenting it).
    pub fn tcp_segment(&self, repr: &TcpRepr<'_>) -> Vec<u8> {
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(
            &mut TcpPacket::new_unchecked(&mut buf[..]),
            &self.peer,
            &self.ours,
            &ChecksumCapabilities::default(),
        );
        buf
    }

    /// The UDP datagram alone.
    pub fn udp_datagram(&self, src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
        let repr = UdpRepr { src_port, dst_port };
        let mut buf = vec![0u8; repr.header_len() + payload.len()];
        repr.emit(
            &mut UdpPacket::new_unchecked(&mut buf[..]),
            &self.peer,
            &self.ours,
            payload.len(),
            |b| b.copy_from_slice(payload),
            &ChecksumCapabilities::default(),
        );
        buf
    }

    /// A UDP datagram from the peer to us.
    pub fn udp(&self, src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
        self.frame(
            IpProtocol::Udp,
            &self.udp_datagram(src_port, dst_port, payload),
        )
    }

    /// An ICMP or ICMPv6 echo request from the peer to us.
    pub fn echo_request(&self, ident: u16, seq_no: u16, data: &[u8]) -> Vec<u8> {
        match (self.peer, self.ours) {
            (IpAddress::Ipv4(_), _) => {
                let repr = Icmpv4Repr::EchoRequest {
                    ident,
                    seq_no,
                    data,
                };
                let mut buf = vec![0u8; repr.buffer_len()];
                repr.emit(
                    &mut Icmpv4Packet::new_unchecked(&mut buf[..]),
                    &ChecksumCapabilities::default(),
                );
                self.frame(IpProtocol::Icmp, &buf)
            }
            (IpAddress::Ipv6(src), IpAddress::Ipv6(dst)) => {
                let repr = Icmpv6Repr::EchoRequest {
                    ident,
                    seq_no,
                    data,
                };
                let mut buf = vec![0u8; repr.buffer_len()];
                repr.emit(
                    &src,
                    &dst,
                    &mut Icmpv6Packet::new_unchecked(&mut buf[..]),
                    &ChecksumCapabilities::default(),
                );
                self.frame(IpProtocol::Icmpv6, &buf)
            }
            _ => unreachable!("mixed address families"),
        }
    }
}

/// A peer's TCP segment of the set-up connection (ports [`PEER_PORT`] to
/// [`ECHO_PORT`]), no options.
pub fn segment(control: TcpControl, seq: u32, ack: Option<u32>, payload: &[u8]) -> TcpRepr<'_> {
    TcpRepr {
        src_port: PEER_PORT,
        dst_port: ECHO_PORT,
        control,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: 502, // x 128 (window scale 7) = 64256
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload,
    }
}

/// The peer's SYN of the set-up connection, with Linux's options.
pub fn peer_syn() -> TcpRepr<'static> {
    TcpRepr {
        window_len: 64240,
        window_scale: Some(7),
        max_seg_size: Some(1460),
        sack_permitted: true,
        timestamp: Some(TcpTimestampRepr::new(1, 0)),
        ..segment(TcpControl::Syn, PEER_ISN, None, &[])
    }
}

/// Where the device puts what smoltcp transmits: one reusable buffer; each
/// frame is checked, then discarded.
#[derive(Debug)]
pub struct TxSink {
    buf: Vec<u8>,
    local: LocalAddrs,
    /// The stack's transmit-side fixes, which see every frame smoltcp writes.
    fixes: TxFixes,
    /// Frames transmitted so far.
    pub frames: usize,
    /// Copies of the transmitted frames, when set (for the corpus generator).
    pub log: Option<Vec<Vec<u8>>>,
    /// (source port, destination port, sequence number) of the last SYN-ACK.
    pub last_syn_ack: Option<(u16, u16, u32)>,
}

impl TxSink {
    fn new(local: LocalAddrs) -> TxSink {
        TxSink {
            buf: Vec::with_capacity(MAX_FRAME),
            local,
            fixes: TxFixes::new(MAX_TCP_CONNECTIONS),
            frames: 0,
            log: None,
            last_syn_ack: None,
        }
    }

    /// A frame the engine built itself (an answer to a received frame).
    fn answer(&mut self, frame: &[u8]) {
        self.buf.clear();
        self.buf.extend_from_slice(frame);
        self.sent();
    }

    fn sent(&mut self) {
        let frame = &self.buf[..];
        check_transmitted(frame, &self.local);
        self.frames += 1;
        if let Some((src, dst, seq)) = syn_ack(frame) {
            self.last_syn_ack = Some((src, dst, seq));
        }
        if let Some(log) = &mut self.log {
            log.push(frame.to_vec());
        }
    }
}

/// The ports and sequence number of a SYN-ACK frame.
fn syn_ack(frame: &[u8]) -> Option<(u16, u16, u32)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let payload = match eth.ethertype() {
        EthernetProtocol::Ipv4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
            (ip.next_header() == IpProtocol::Tcp).then_some(())?;
            &eth.payload()[usize::from(ip.header_len())..usize::from(ip.total_len())]
        }
        EthernetProtocol::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
            (ip.next_header() == IpProtocol::Tcp).then_some(())?;
            &eth.payload()[40..40 + usize::from(ip.payload_len())]
        }
        _ => return None,
    };
    let tcp = TcpPacket::new_checked(payload).ok()?;
    (tcp.syn() && tcp.ack()).then(|| (tcp.src_port(), tcp.dst_port(), tcp.seq_number().0 as u32))
}

/// `classify`'s reasons for a frame that is not well formed.
fn malformed(r: DropReason) -> bool {
    use DropReason::*;
    matches!(
        r,
        EthernetTruncated
            | ArpMalformed
            | Ipv4Malformed
            | Ipv4Truncated
            | Ipv4BadChecksum
            | Ipv6Malformed
            | Ipv6Truncated
            | TcpMalformed
            | TcpBadChecksum
            | UdpMalformed
            | UdpBadChecksum
            | IcmpMalformed
            | IcmpBadChecksum
    )
}

/// The invariants of a frame smoltcp transmitted (`local`: ours).
pub fn check_transmitted(frame: &[u8], local: &LocalAddrs) {
    assert!(
        frame.len() <= MAX_FRAME,
        "smoltcp built a {}-byte frame, over the device's MTU of {MAX_FRAME}",
        frame.len()
    );
    // As its receiver sees it: the destination MAC and IP address are its.
    let mut receiver = LocalAddrs {
        mac: EthernetAddress([0; 6]),
        ipv4: None,
        ipv4_broadcast: None,
        ipv6: None,
        ipv6_link_local: None,
    };
    if let Some(dst) = frame.get(0..6) {
        receiver.mac = EthernetAddress::from_bytes(dst);
    }
    let ethertype = frame.get(12..14).map(|e| u16::from_be_bytes([e[0], e[1]]));
    let (mut src4, mut src6) = (None, None);
    match ethertype {
        Some(0x0800) => {
            if let Some(ip) = frame.get(14..34) {
                receiver.ipv4 = Some(Ipv4Address::from([ip[16], ip[17], ip[18], ip[19]]));
                src4 = Some(Ipv4Address::from([ip[12], ip[13], ip[14], ip[15]]));
            }
        }
        Some(0x86dd) => {
            if let Some(ip) = frame.get(14..54) {
                let addr =
                    |at: usize| Ipv6Address::from(<[u8; 16]>::try_from(&ip[at..at + 16]).unwrap());
                receiver.ipv6 = Some(addr(24));
                src6 = Some(addr(8));
            }
        }
        _ => {}
    }
    let v = classify(frame, &receiver, RxChecked::default());
    assert_ne!(
        v,
        Verdict::Drop(DropReason::EthernetTruncated),
        "smoltcp transmitted a truncated frame: {}",
        hex(frame)
    );
    if let Verdict::Drop(r) = v {
        assert!(
            !malformed(r),
            "smoltcp transmitted a frame classify drops as {r:?}: {}",
            hex(frame)
        );
    }
    assert_eq!(
        &frame[6..12],
        local.mac.as_bytes(),
        "smoltcp transmitted a frame from another MAC: {}",
        hex(frame)
    );
    if let Some(src) = src4 {
        assert!(
            Some(src) == local.ipv4 || src.is_unspecified(),
            "smoltcp transmitted from IPv4 address {src}, not ours: {}",
            hex(frame)
        );
    }
    if let Some(src) = src6 {
        assert!(
            Some(src) == local.ipv6 || Some(src) == local.ipv6_link_local || src.is_unspecified(),
            "smoltcp transmitted from IPv6 address {src}, not ours: {}",
            hex(frame)
        );
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The Internet checksum sum of `data` (odd tail zero-padded), unfolded.
fn sum(data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    let mut s: u32 = 0;
    for w in &mut chunks {
        s += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        s += u32::from(*last) << 8;
    }
    s
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Fills in the IPv4 header checksum and the TCP / UDP / ICMP / ICMPv6
/// checksum right after the IP header (no IPv6 extension headers, no
/// fragments), wherever the lengths allow; leaves the rest alone.
pub fn fix_checksums(frame: &mut [u8]) {
    const ETH: usize = 14;
    if frame.len() < ETH {
        return;
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let ip = &mut frame[ETH..];
    let (pseudo, proto, l4) = match ethertype {
        0x0800 => {
            if ip.len() < 20 {
                return;
            }
            let ihl = usize::from(ip[0] & 0xf) * 4;
            if ihl < 20 || ihl > ip.len() {
                return;
            }
            ip[10..12].fill(0);
            let c = !fold(sum(&ip[..ihl]));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
            if total < ihl || total > ip.len() || fragment {
                return;
            }
            let proto = ip[9];
            let pseudo = sum(&ip[12..20]) + u32::from(proto);
            (pseudo, proto, &mut ip[ihl..total])
        }
        0x86dd => {
            if ip.len() < 40 {
                return;
            }
            let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            if 40 + len > ip.len() {
                return;
            }
            let proto = ip[6];
            let pseudo = sum(&ip[8..40]) + u32::from(proto);
            (pseudo, proto, &mut ip[40..40 + len])
        }
        _ => return,
    };
    let (at, covered, with_pseudo) = match proto {
        6 if l4.len() >= 20 => (16, l4.len(), true),
        17 if l4.len() >= 8 => {
            let len = usize::from(u16::from_be_bytes([l4[4], l4[5]]));
            if !(8..=l4.len()).contains(&len) {
                return;
            }
            (6, len, true)
        }
        1 if ethertype == 0x0800 && l4.len() >= 4 => (2, l4.len(), false),
        58 if ethertype == 0x86dd && l4.len() >= 4 => (2, l4.len(), true),
        _ => return,
    };
    let l4 = &mut l4[..covered];
    l4[at..at + 2].fill(0);
    let mut s = sum(l4);
    if with_pseudo {
        s += pseudo + covered as u32; // the length as one or two 16-bit words
    }
    let mut c = !fold(s);
    if proto == 17 && c == 0 {
        c = 0xffff; // 0 means "no checksum"
    }
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// The in-memory device: at most one received frame, transmits into a
/// [`TxSink`]; capabilities as lstack's DPDK device without TX offload.
struct Dev<'a> {
    rx: Option<&'a [u8]>,
    tx: &'a mut TxSink,
}

struct RxTok<'a>(&'a [u8]);
struct TxTok<'a>(&'a mut TxSink);

impl phy::RxToken for RxTok<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.0)
    }
}

impl phy::TxToken for TxTok<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let sink = self.0;
        assert!(
            len <= MAX_FRAME,
            "smoltcp asked for a {len}-byte transmit buffer, over the device's MTU of {MAX_FRAME}"
        );
        sink.buf.clear();
        sink.buf.resize(len, 0);
        let r = f(&mut sink.buf);
        sink.fixes.on_transmit(&mut sink.buf);
        sink.sent();
        r
    }
}

impl<'a> phy::Device for Dev<'a> {
    type RxToken<'b>
        = RxTok<'a>
    where
        Self: 'b;
    type TxToken<'b>
        = TxTok<'b>
    where
        Self: 'b;

    fn receive(&mut self, _: Instant) -> Option<(RxTok<'a>, TxTok<'_>)> {
        let frame = self.rx.take()?;
        Some((RxTok(frame), TxTok(self.tx)))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxTok<'_>> {
        Some(TxTok(self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        capabilities(false)
    }
}

/// One stack thread's interface and engine, minus DPDK.
pub struct Harness {
    iface: Interface,
    /// The engine's policy, shards and listener pool.
    engine: Engine,
    /// What smoltcp transmitted.
    pub tx: TxSink,
    /// The fake clock.
    pub now: Instant,
    /// The input's addresses.
    pub addrs: Addrs,
    checked: RxChecked,
    /// The set-up connection (shard, socket), while the application has it.
    pub conn: Option<(usize, SocketHandle)>,
    /// Our initial sequence number on the set-up connection, if it got a
    /// SYN-ACK out.
    pub our_isn: Option<u32>,
    /// The connections the application accepted: (shard, socket).
    accepted: Vec<(usize, SocketHandle)>,
    udp: SocketHandle,
    icmp: SocketHandle,
    app_buf: Vec<u8>,
    /// [`flags::FIX_CHECKSUMS`](crate::flags::FIX_CHECKSUMS) and where the
    /// fixed frame goes.
    fix_checksums: bool,
    fixed_buf: Vec<u8>,
    /// The received frame as the engine sees it (it may rewrite it).
    rx_buf: Vec<u8>,
    /// The engine's answer to a received frame.
    answer_buf: Vec<u8>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("now", &self.now)
            .field("addrs", &self.addrs)
            .field("conn", &self.conn)
            .field("our_isn", &self.our_isn)
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// Builds the interface and sockets for `header` and sets up the
    /// connection (see the module docs).
    pub fn new(header: &Header) -> Harness {
        Self::build(header, false)
    }

    /// As [`Harness::new`], keeping a copy of every transmitted frame in
    /// `tx.log` from the start.
    pub fn with_log(header: &Header) -> Harness {
        Self::build(header, true)
    }

    fn build(header: &Header, log: bool) -> Harness {
        let addrs = Addrs::new(header);
        let local = addrs.local;
        let mut tx = TxSink::new(local);
        if log {
            tx.log = Some(Vec::new());
        }
        let now = Instant::ZERO;
        let mut config = Config::new(HardwareAddress::Ethernet(local.mac));
        config.random_seed = RANDOM_SEED;
        let mut iface = Interface::new(
            config,
            &mut Dev {
                rx: None,
                tx: &mut tx,
            },
            now,
        );
        iface.update_ip_addrs(|a| {
            if let Some(v4) = local.ipv4 {
                let _ = a.push(IpCidr::Ipv4(Ipv4Cidr::new(v4, addrs.ipv4_prefix)));
            }
            if let Some(v6) = local.ipv6 {
                let _ = a.push(IpCidr::new(IpAddress::Ipv6(v6), 64));
            }
            if let Some(ll) = local.ipv6_link_local {
                let _ = a.push(IpCidr::new(IpAddress::Ipv6(ll), 64));
            }
        });
        if let Some(gw) = addrs.peer_v4 {
            let _ = iface.routes_mut().add_default_ipv4_route(gw);
        }

        let engine = Engine::new(local, TCP_SHARDS, MAX_TCP_CONNECTIONS, RANDOM_SEED);
        engine.listen(ECHO_PORT, BACKLOG);
        engine.listen(HTTP_PORT, BACKLOG);

        let mut control = engine.sockets(engine.control_shard());
        let mut u = udp::Socket::new(
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; DGRAM_PACKETS],
                vec![0; DGRAM_BUFFER],
            ),
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; DGRAM_PACKETS],
                vec![0; DGRAM_BUFFER],
            ),
        );
        u.bind(ECHO_PORT).expect("binding UDP");
        let udp = control.add(u);
        let mut i = icmp::Socket::new(
            icmp::PacketBuffer::new(
                vec![icmp::PacketMetadata::EMPTY; DGRAM_PACKETS],
                vec![0; DGRAM_BUFFER],
            ),
            icmp::PacketBuffer::new(
                vec![icmp::PacketMetadata::EMPTY; DGRAM_PACKETS],
                vec![0; DGRAM_BUFFER],
            ),
        );
        i.bind(icmp::Endpoint::Ident(ICMP_IDENT))
            .expect("binding ICMP");
        let icmp = control.add(i);
        drop(control);

        let mut h = Harness {
            iface,
            engine,
            tx,
            now,
            addrs,
            checked: header.checked(),
            conn: None,
            our_isn: None,
            accepted: Vec::new(),
            udp,
            icmp,
            app_buf: vec![0; 2048],
            fix_checksums: header.flags & crate::flags::FIX_CHECKSUMS != 0,
            fixed_buf: Vec::new(),
            rx_buf: Vec::new(),
            answer_buf: Vec::new(),
        };
        h.set_up_connection();
        h
    }

    /// The set-up connection's addresses (see [`Addrs::flow`]).
    pub fn flow(&self) -> Option<Link> {
        self.addrs.flow()
    }

    /// The set-up connection's socket state.
    pub fn conn_state(&self) -> Option<tcp::State> {
        self.conn
            .map(|(shard, h)| self.engine.sockets(shard).get::<tcp::Socket<'_>>(h).state())
    }

    fn set_up_connection(&mut self) {
        let Some(link) = self.flow() else {
            return;
        };
        // The peer introduces itself, so that replies need no resolution.
        let a = self.addrs;
        if let (Some(ours), Some(peer)) = (a.local.ipv4, a.peer_v4) {
            self.feed(&arp_request(a.peer_mac, peer, ours));
        }
        if let (Some(ours), Some(peer)) = (a.local.ipv6, a.peer_v6) {
            self.feed(&neighbor_solicit(a.peer_mac, peer, ours));
        }
        if let (Some(ours), Some(peer)) = (a.local.ipv6_link_local, a.peer_ll) {
            self.feed(&neighbor_solicit(a.peer_mac, peer, ours));
        }

        self.tx.last_syn_ack = None;
        self.feed(&link.tcp(&peer_syn()));
        let Some((ECHO_PORT, PEER_PORT, isn)) = self.tx.last_syn_ack else {
            return;
        };
        self.our_isn = Some(isn);
        let ack = TcpRepr {
            timestamp: Some(TcpTimestampRepr::new(2, 0)),
            ..segment(
                TcpControl::None,
                PEER_ISN.wrapping_add(1),
                Some(isn.wrapping_add(1)),
                &[],
            )
        };
        self.feed(&link.tcp(&ack));
        let remote = IpEndpoint::new(link.peer, PEER_PORT);
        let engine = &self.engine;
        self.conn = self.accepted.iter().copied().find(|&(shard, h)| {
            let sockets = engine.sockets(shard);
            let t = sockets.get::<tcp::Socket<'_>>(h);
            t.remote_endpoint() == Some(remote) && t.state() == tcp::State::Established
        });
    }

    /// Ingests `frame` and polls egress, at the current time.
    fn feed(&mut self, frame: &[u8]) {
        self.ingest(frame);
        self.egress();
    }

    /// One record: clock, frame, application, egress.
    pub fn step(&mut self, r: &Record<'_>) {
        self.now += delay(r.delay);
        if self.fix_checksums {
            let mut frame = std::mem::take(&mut self.fixed_buf);
            frame.clear();
            frame.extend_from_slice(r.frame);
            fix_checksums(&mut frame);
            self.ingest(&frame);
            self.fixed_buf = frame;
        } else {
            self.ingest(r.frame);
        }
        self.app(r.actions);
        self.egress();
    }

    /// Lets the timers fire: jumps to each deadline `poll_at` gives, a few
    /// times.
    pub fn finish(&mut self) {
        for _ in 0..FINISH_ROUNDS {
            let next = (0..self.engine.shards())
                .filter_map(|shard| self.iface.poll_at(self.now, &self.engine.sockets(shard)))
                .min();
            match next {
                Some(t) if t > self.now => self.now = t,
                Some(_) => self.now += Duration::from_millis(1),
                None => return,
            }
            self.egress();
        }
    }

    /// What `Worker::ingress` does with a frame: the engine's policy, then
    /// smoltcp with the shard it chose.
    pub fn ingest(&mut self, frame: &[u8]) -> Verdict {
        let now_ns = now_ns(self.now);
        let mut buf = std::mem::take(&mut self.rx_buf);
        buf.clear();
        buf.extend_from_slice(frame);
        let mut answer = std::mem::take(&mut self.answer_buf);
        answer.clear();
        let r = self.engine.receive(
            &mut buf,
            self.checked,
            now_ns,
            &mut self.tx.fixes,
            &mut answer,
        );
        if !answer.is_empty() {
            self.tx.answer(&answer);
        }
        if let Some(shard) = r.shard() {
            let mut sockets = self.engine.sockets(shard);
            let mut dev = Dev {
                rx: Some(&buf),
                tx: &mut self.tx,
            };
            self.iface
                .poll_ingress_single(self.now, &mut dev, &mut sockets);
            assert!(dev.rx.is_none(), "smoltcp left the received frame alone");
            drop(sockets);
            self.engine.ingested(&r, &mut self.tx.fixes, now_ns);
        }
        self.rx_buf = buf;
        self.answer_buf = answer;
        r.verdict
    }

    /// The application's side of one record.
    fn app(&mut self, actions: u8) {
        let echo = actions & action::ECHO != 0;
        let buf = &mut self.app_buf[..];
        if actions & action::READ != 0 {
            for shard in 0..self.engine.shards() {
                let mut sockets = self.engine.sockets(shard);
                for (_, s) in sockets.iter_mut() {
                    let Some(t) = tcp::Socket::downcast_mut(s) else {
                        continue;
                    };
                    for _ in 0..4 {
                        if !t.can_recv() {
                            break;
                        }
                        let Ok(n) = t.recv_slice(buf) else {
                            break;
                        };
                        if echo && t.can_send() {
                            let _ = t.send_slice(&buf[..n]);
                        }
                    }
                }
            }
            let mut control = self.engine.sockets(self.engine.control_shard());
            let u = control.get_mut::<udp::Socket<'_>>(self.udp);
            for _ in 0..4 {
                let Ok((n, meta)) = u.recv_slice(buf) else {
                    break;
                };
                if echo {
                    // As lstack does: the peer only, the stack picks the source address
                    // (echoing from the address a broadcast came to would be wrong).
                    let _ = u.send_slice(&buf[..n], meta.endpoint);
                }
            }
            let i = control.get_mut::<icmp::Socket<'_>>(self.icmp);
            for _ in 0..4 {
                let Ok((n, from)) = i.recv_slice(buf) else {
                    break;
                };
                if echo {
                    let _ = i.send_slice(&buf[..n], from);
                }
            }
        }
        if actions & action::SEND != 0 {
            let n = send_len(actions).min(buf.len());
            for (k, b) in buf[..n].iter_mut().enumerate() {
                *b = b'a' + (k % 26) as u8;
            }
            for shard in 0..self.engine.shards() {
                let mut sockets = self.engine.sockets(shard);
                for (_, s) in sockets.iter_mut() {
                    if let Some(t) = tcp::Socket::downcast_mut(s) {
                        if t.may_send() {
                            let _ = t.send_slice(&buf[..n]);
                        }
                    }
                }
            }
        }
        if let Some((shard, h)) = self.conn {
            // The application closes its socket (with SO_LINGER 0 for
            // ABORT): the engine reaps it once smoltcp is done.
            let abort = actions & action::ABORT != 0;
            if abort || actions & action::CLOSE != 0 {
                self.engine.close(shard, h, abort);
                self.accepted.retain(|a| *a != (shard, h));
                self.conn = None;
            }
        }
    }

    /// What `Worker::egress` does for every shard (smoltcp's egress, the
    /// `poll_at` check, the engine's settle), the end of the pass, then the
    /// application: it accepts what the listeners queued and drops the
    /// connections that closed.
    pub fn egress(&mut self) {
        let now_ns = now_ns(self.now);
        self.iface.poll_maintenance(self.now);
        for shard in 0..self.engine.shards() {
            let mut sockets = self.engine.sockets(shard);
            for _ in 0..EGRESS_ROUNDS {
                let mut dev = Dev {
                    rx: None,
                    tx: &mut self.tx,
                };
                if self.iface.poll_egress(self.now, &mut dev, &mut sockets) == PollResult::None {
                    break;
                }
            }
            if let Some(at) = self.iface.poll_at(self.now, &sockets) {
                assert!(
                    at >= Instant::ZERO && at <= self.now + MAX_TIMER,
                    "poll_at says {at} at {}",
                    self.now
                );
            }
            drop(sockets);
            self.engine.settle(shard, now_ns);
        }
        self.engine.end_pass(now_ns);
        while let Some((shard, h, _)) = self.engine.accept() {
            self.accepted.push((shard, h));
        }
        let engine = &self.engine;
        self.accepted.retain(|&(shard, h)| {
            let closed =
                engine.sockets(shard).get::<tcp::Socket<'_>>(h).state() == tcp::State::Closed;
            if closed {
                engine.close(shard, h, false);
            }
            !closed
        });
        if let Some(c) = self.conn {
            if !self.accepted.contains(&c) {
                self.conn = None;
            }
        }
    }
}
