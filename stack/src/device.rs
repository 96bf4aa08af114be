//! smoltcp's `Device` over DPDK mbufs, one frame at a time.
//!
//! Receive hands smoltcp the mbuf's own data (parsed in place, no copy);
//! transmit writes straight into a fresh mbuf's data room and queues it in a
//! fixed-size burst that goes to the NIC when full or at the end of a loop.

use std::sync::Arc;

use dpdk::{Mbuf, MbufBatch, Mempool, Ring, RxQueue, TxQueue};
use smoltcp::{
    phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium},
    time::Instant,
};

use crate::stats::ThreadStats;

/// Largest Ethernet frame without FCS at MTU 1500.
pub const MAX_FRAME: usize = 1514;

/// How many times a full NIC queue is retried before frames are dropped.
const TX_RETRIES: usize = 8;

/// Where a stack thread's frames come from: its NIC queue, or (behind
/// ltran) its receive ring.
#[derive(Debug)]
pub enum RxSource {
    /// A NIC receive queue (`use_ltran = 0`).
    Port(RxQueue),
    /// The ring ltran fills (`use_ltran = 1`).
    Ring(Ring),
    /// Queue `i` of both ports of lstack's own bond (`bond_mode = 1`).
    Bond(crate::bond::BondRx),
}

impl RxSource {
    /// Fills `batch` with what arrived.
    #[inline]
    pub fn rx_burst(&mut self, batch: &mut MbufBatch) -> usize {
        self.rx_burst_max(batch, dpdk::BURST_SIZE)
    }

    /// As [`RxSource::rx_burst`], reading at most `max` frames.
    pub fn rx_burst_max(&mut self, batch: &mut MbufBatch, max: usize) -> usize {
        match self {
            Self::Port(q) => q.rx_burst_max(batch, max),
            Self::Ring(r) => r.dequeue_max(batch, max),
            Self::Bond(b) => b.rx_burst_max(batch, max),
        }
    }

    /// The NIC queue frames come from now (the active port's on a bond),
    /// if they come from a NIC.
    pub fn nic_queue(&self) -> Option<&RxQueue> {
        match self {
            Self::Port(q) => Some(q),
            Self::Ring(_) => None,
            Self::Bond(b) => Some(b.active_queue()),
        }
    }

    /// [`RxSource::nic_queue`], mutably.
    pub fn nic_queue_mut(&mut self) -> Option<&mut RxQueue> {
        match self {
            Self::Port(q) => Some(q),
            Self::Ring(_) => None,
            Self::Bond(b) => Some(b.active_queue_mut()),
        }
    }
}

/// Where a stack thread's frames go: its NIC queue, or ltran's ring.
#[derive(Debug)]
pub enum TxSink {
    /// A NIC transmit queue (`use_ltran = 0`).
    Port(TxQueue),
    /// The ring ltran drains (`use_ltran = 1`).
    Ring(Ring),
    /// Queue `i` of both ports of lstack's own bond (`bond_mode = 1`).
    Bond(crate::bond::BondTx),
}

impl TxSink {
    #[inline]
    fn tx_burst(&mut self, batch: &mut MbufBatch) -> usize {
        match self {
            Self::Port(q) => q.tx_burst(batch),
            Self::Ring(r) => r.enqueue(batch),
            Self::Bond(b) => b.tx_burst(batch),
        }
    }
}

/// A stack thread's transmit side: its NIC queue, pool and pending burst.
#[derive(Debug)]
pub struct TxPath {
    queue: TxSink,
    pool: Arc<Mempool>,
    batch: MbufBatch,
    stats: Arc<ThreadStats>,
    /// Where smoltcp writes a frame when the pool is empty; it is then dropped.
    scratch: Box<[u8; MAX_FRAME]>,
    /// The NIC computes IPv4/TCP/UDP checksums on transmit.
    offload: bool,
    /// The thread's RFC fixes over smoltcp: they see every frame it writes.
    pub(crate) conformance: crate::conformance::Conformance,
    /// Lowered path MTUs: TCP segments larger are cut to fit.
    pub(crate) pmtu: crate::pmtu::PathMtu,
    /// The VLAN whose tag every frame gets (`nic_vlan_mode`).
    vlan: Option<crate::vlan::Vlan>,
}

impl TxPath {
    /// A transmit path over `queue` with buffers from `pool`, for a thread
    /// holding at most `flows` TCP connections, tagging its frames for
    /// `vlan` if it is on one.
    pub fn new(
        queue: TxSink,
        pool: Arc<Mempool>,
        stats: Arc<ThreadStats>,
        flows: usize,
        vlan: Option<crate::vlan::Vlan>,
    ) -> Self {
        let offload = match &queue {
            TxSink::Port(q) => q.port_info().tx_checksum(),
            TxSink::Ring(_) => false,
            TxSink::Bond(b) => b.tx_checksum(),
        };
        Self {
            queue,
            pool,
            batch: MbufBatch::new(),
            stats,
            scratch: Box::new([0; MAX_FRAME]),
            offload,
            conformance: crate::conformance::Conformance::new(flows),
            pmtu: crate::pmtu::PathMtu::new(),
            vlan,
        }
    }

    /// On a bond: sends on port `active` from now on.
    pub(crate) fn follow_bond(&mut self, active: usize) {
        if let TxSink::Bond(b) = &mut self.queue {
            b.follow(active);
        }
    }

    /// Whether transmit checksums are offloaded to the NIC.
    pub fn offload(&self) -> bool {
        self.offload
    }

    /// Queues a frame, sending the burst if it is full. On a VLAN, the
    /// frame gets its tag here (or the port is asked to add it).
    #[inline]
    pub fn push(&mut self, mut m: Mbuf) {
        if let Some(vlan) = &self.vlan {
            if !vlan.transmit(&mut m) {
                self.stats.tx_dropped.incr();
                return;
            }
        }
        self.stats.tx_packets.incr();
        self.stats.tx_bytes.add(m.len() as u64);
        if let Err(m) = self.batch.push(m) {
            self.flush();
            if self.batch.push(m).is_err() {
                self.stats.tx_dropped.incr();
            }
        }
    }

    /// Counts `m` in the MIB, asks the NIC for its checksums if it does
    /// them, and queues it.
    #[inline]
    fn emit(&mut self, mut m: Mbuf) {
        self.stats.mib.count_tx(m.data());
        if self.offload {
            // A tag put into the data later moves L3 by its length.
            let tag_len = self.vlan.map_or(0, |v| v.data_tag_len());
            request_checksums(&mut m, tag_len as u16);
        }
        self.push(m);
    }

    /// Sends the TCP segment `m` as the pieces `plan` cuts it into (see
    /// [`crate::pmtu`]): `m` itself becomes the first, the others go into
    /// fresh mbufs. A piece the pool has no mbuf for is dropped, counted,
    /// and so are those after it: TCP retransmits them.
    #[cold]
    fn emit_split(&mut self, mut m: Mbuf, plan: crate::pmtu::Split) {
        let software = !self.offload;
        let len = m.len();
        self.scratch[..len].copy_from_slice(m.data());
        let first = plan.cut_first(m.data_mut(), software);
        m.trim(len - first);
        self.stats.pmtu_split.incr();
        self.emit(m);
        for i in 1..plan.pieces() {
            let Some(mut p) = self.pool.alloc() else {
                self.stats.tx_nombuf.incr();
                return;
            };
            let Some(buf) = p.append(plan.piece_len(i)) else {
                self.stats.tx_dropped.incr();
                return;
            };
            plan.write(&self.scratch[..len], i, buf, software);
            self.emit(p);
        }
    }

    /// Sends everything queued; what the NIC will not take after a few tries
    /// is dropped and counted (TCP retransmits it).
    #[inline]
    pub fn flush(&mut self) {
        for _ in 0..TX_RETRIES {
            if self.batch.is_empty() {
                return;
            }
            self.queue.tx_burst(&mut self.batch);
        }
        let left = self.batch.len() as u64;
        if left > 0 {
            self.stats.tx_dropped.add(left);
            self.batch = MbufBatch::new();
        }
    }
}

/// A `Device` that yields at most one received frame and transmits into
/// `tx`. Built per smoltcp call; costs nothing to create.
#[derive(Debug)]
pub struct FrameDevice<'a> {
    /// The frame smoltcp will receive, if any.
    pub rx: Option<Mbuf>,
    /// Where transmitted frames go.
    pub tx: &'a mut TxPath,
}

/// The capabilities every stack device reports: Ethernet, MTU 1500, and
/// checksums verified on receive by [`crate::classify`], so smoltcp only
/// computes them on transmit, and not even there for IPv4/TCP/UDP when
/// `tx_offload` says the NIC does it.
pub fn capabilities(tx_offload: bool) -> DeviceCapabilities {
    let mut caps = DeviceCapabilities::default();
    caps.medium = Medium::Ethernet;
    caps.max_transmission_unit = MAX_FRAME;
    caps.max_burst_size = Some(dpdk::BURST_SIZE);
    let mut csum = ChecksumCapabilities::default();
    let l34 = if tx_offload {
        Checksum::None
    } else {
        Checksum::Tx
    };
    csum.ipv4 = l34;
    csum.tcp = l34;
    csum.udp = l34;
    csum.icmpv4 = Checksum::Tx;
    csum.icmpv6 = Checksum::Tx;
    caps.checksum = csum;
    caps
}

impl phy::Device for FrameDevice<'_> {
    type RxToken<'b>
        = MbufRxToken<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = MbufTxToken<'b>
    where
        Self: 'b;

    /// Lends the frame; it stays in `rx` for the caller to free or keep
    /// (see [`crate::conformance::NeighbourWait`]). Only for
    /// `Interface::poll_ingress_single`, which receives once per call.
    fn receive(&mut self, _ts: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let FrameDevice { rx, tx } = self;
        let m = rx.as_ref()?;
        Some((MbufRxToken(m), MbufTxToken { tx }))
    }

    fn transmit(&mut self, _ts: Instant) -> Option<Self::TxToken<'_>> {
        Some(MbufTxToken { tx: self.tx })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        capabilities(self.tx.offload)
    }
}

/// A received mbuf, lent to smoltcp.
#[derive(Debug)]
pub struct MbufRxToken<'a>(&'a Mbuf);

impl phy::RxToken for MbufRxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.0.data())
    }
}

/// Permission to send one frame. smoltcp may drop it unused, which costs
/// nothing: the mbuf is only taken in `consume`.
#[derive(Debug)]
pub struct MbufTxToken<'a> {
    tx: &'a mut TxPath,
}

impl phy::TxToken for MbufTxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        // Every frame smoltcp builds is counted in the MIB, also one then
        // dropped for want of an mbuf (as RFC 1213's OutRequests counts
        // discarded datagrams): smoltcp considers it sent.
        let tx = self.tx;
        let Some(mut m) = tx.pool.alloc() else {
            tx.stats.tx_nombuf.incr();
            let len = len.min(MAX_FRAME);
            let r = f(&mut tx.scratch[..len]);
            tx.stats.mib.count_tx(&tx.scratch[..len]);
            return r;
        };
        let Some(buf) = m.append(len) else {
            // Larger than an mbuf's data room: smoltcp never builds frames
            // over the MTU we report, so this is a bug; drop it counted.
            tx.stats.tx_dropped.incr();
            let len = len.min(MAX_FRAME);
            let r = f(&mut tx.scratch[..len]);
            tx.stats.mib.count_tx(&tx.scratch[..len]);
            return r;
        };
        let r = f(buf);
        tx.conformance.on_transmit(m.data_mut(), !tx.offload);
        if let Some(mtu) = tx.pmtu.exceeded(m.data(), tx.conformance.now_ns) {
            if let Some(plan) = crate::pmtu::Split::plan(m.data(), mtu) {
                tx.emit_split(m, plan);
                return r;
            }
        }
        tx.emit(m);
        r
    }
}

/// Asks the NIC to fill in the IPv4 header and TCP/UDP checksums of the
/// frame smoltcp just wrote (which left them alone, see [`capabilities`]);
/// `tag_len` bytes of VLAN tag will be in front of its L3 header when the
/// NIC sees it.
fn request_checksums(m: &mut Mbuf, tag_len: u16) {
    if let Some((flags, l2, l3)) = prepare_checksum_offload(m.data_mut()) {
        m.set_tx_offload(flags, l2 + tag_len, l3);
    }
}

/// Prepares `frame` for transmit checksum offload: zeroes the IPv4 header
/// checksum, stores the pseudo-header sum the NIC starts from in the TCP/UDP
/// checksum field, and returns the `MBUF_F_TX_*` flags with the L2 and L3
/// header lengths. ICMP and IP fragments keep their software checksums.
/// `None`: nothing for the NIC to do.
fn prepare_checksum_offload(frame: &mut [u8]) -> Option<(u64, u16, u16)> {
    use dpdk::mbuf::offload::{ipv4_phdr_cksum, ipv6_phdr_cksum};
    use dpdk_sys::flags::*;
    const ETH: usize = 14;
    if frame.len() < ETH + 20 {
        return None;
    }
    let (mut flags, l3_len, proto) = match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => {
            let ihl = usize::from(frame[ETH] & 0x0f) * 4;
            let fragment = u16::from_be_bytes([frame[ETH + 6], frame[ETH + 7]]) & 0x3fff != 0;
            frame[ETH + 10] = 0;
            frame[ETH + 11] = 0;
            let proto = if fragment { 0 } else { frame[ETH + 9] };
            (MBUF_F_TX_IPV4 | MBUF_F_TX_IP_CKSUM, ihl, proto)
        }
        0x86dd if frame.len() >= ETH + 40 => (MBUF_F_TX_IPV6, 40, frame[ETH + 6]),
        _ => return None,
    };
    let (l4_flag, csum_at) = match proto {
        6 => (MBUF_F_TX_TCP_CKSUM, ETH + l3_len + 16),
        17 => (MBUF_F_TX_UDP_CKSUM, ETH + l3_len + 6),
        _ => (0, 0),
    };
    if l4_flag != 0 && csum_at + 2 <= frame.len() {
        let ip = &frame[ETH..];
        let phdr = if flags & MBUF_F_TX_IPV4 != 0 {
            ipv4_phdr_cksum(ip, flags | l4_flag)
        } else {
            ipv6_phdr_cksum(ip, flags | l4_flag)
        };
        if let Some(sum) = phdr {
            frame[csum_at..csum_at + 2].copy_from_slice(&sum.to_ne_bytes());
            flags |= l4_flag;
        }
    }
    if flags & MBUF_F_TX_IPV4 == 0 && flags & (MBUF_F_TX_TCP_CKSUM | MBUF_F_TX_UDP_CKSUM) == 0 {
        // IPv6 without an L4 checksum to offload.
        return None;
    }
    Some((flags, ETH as u16, l3_len as u16))
}

#[cfg(test)]
mod tests {
    use smoltcp::{
        phy::ChecksumCapabilities,
        wire::{
            EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol, Ipv4Packet,
            Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
            UdpPacket, UdpRepr,
        },
    };

    use super::*;

    /// What a NIC does with an offload request: the ones' complement sum of
    /// the L4 bytes, starting from the pseudo-header sum stored in the field.
    fn nic_finish(l4: &mut [u8], csum_at: usize) {
        let mut sum: u32 = 0;
        for c in l4.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        l4[csum_at..csum_at + 2].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    }

    fn no_csum() -> ChecksumCapabilities {
        let mut c = ChecksumCapabilities::ignored();
        c.icmpv4 = Checksum::None;
        c
    }

    #[test]
    fn ipv4_tcp_offload_yields_valid_checksums() {
        let (src, dst) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let payload = b"hello offload, odd length!";
        let tcp = TcpRepr {
            src_port: 1234,
            dst_port: 80,
            control: TcpControl::Psh,
            seq_number: TcpSeqNumber(77),
            ack_number: Some(TcpSeqNumber(5)),
            window_len: 512,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None, None, None],
            timestamp: None,
            payload,
        };
        let ip = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let eth = EthernetRepr {
            src_addr: Default::default(),
            dst_addr: Default::default(),
            ethertype: EthernetProtocol::Ipv4,
        };
        let mut buf = vec![0u8; 14 + 20 + tcp.buffer_len()];
        let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
        eth.emit(&mut f);
        let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
        ip.emit(&mut p, &no_csum());
        tcp.emit(
            &mut TcpPacket::new_unchecked(p.payload_mut()),
            &IpAddress::Ipv4(src),
            &IpAddress::Ipv4(dst),
            &no_csum(),
        );

        let (flags, l2, l3) = prepare_checksum_offload(&mut buf).expect("offload requested");
        assert_eq!((l2, l3), (14, 20));
        use dpdk_sys::flags::*;
        assert_eq!(
            flags,
            MBUF_F_TX_IPV4 | MBUF_F_TX_IP_CKSUM | MBUF_F_TX_TCP_CKSUM
        );
        nic_finish(&mut buf[14..34], 10);
        nic_finish(&mut buf[34..], 16);
        let p = Ipv4Packet::new_checked(&buf[14..]).unwrap();
        assert!(p.verify_checksum());
        let t = TcpPacket::new_checked(p.payload()).unwrap();
        assert!(t.verify_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst)));
    }

    #[test]
    fn ipv6_udp_offload_yields_valid_checksums() {
        let src = "fd00::1".parse().unwrap();
        let dst = "fd00::2".parse().unwrap();
        let payload = b"udp over v6";
        let udp = UdpRepr {
            src_port: 53,
            dst_port: 5353,
        };
        let ip = Ipv6Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Udp,
            payload_len: 8 + payload.len(),
            hop_limit: 64,
        };
        let eth = EthernetRepr {
            src_addr: Default::default(),
            dst_addr: Default::default(),
            ethertype: EthernetProtocol::Ipv6,
        };
        let mut buf = vec![0u8; 14 + 40 + 8 + payload.len()];
        let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
        eth.emit(&mut f);
        let mut p = Ipv6Packet::new_unchecked(f.payload_mut());
        ip.emit(&mut p);
        udp.emit(
            &mut UdpPacket::new_unchecked(p.payload_mut()),
            &IpAddress::Ipv6(src),
            &IpAddress::Ipv6(dst),
            payload.len(),
            |b| b.copy_from_slice(payload),
            &no_csum(),
        );
        let (flags, _, l3) = prepare_checksum_offload(&mut buf).expect("offload requested");
        assert_eq!(l3, 40);
        assert_eq!(
            flags,
            dpdk_sys::flags::MBUF_F_TX_IPV6 | dpdk_sys::flags::MBUF_F_TX_UDP_CKSUM
        );
        nic_finish(&mut buf[54..], 6);
        let u = UdpPacket::new_checked(&buf[54..]).unwrap();
        assert!(u.verify_checksum(&IpAddress::Ipv6(src), &IpAddress::Ipv6(dst)));
    }

    #[test]
    fn arp_and_short_frames_need_nothing() {
        let mut arp = vec![0u8; 42];
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert_eq!(prepare_checksum_offload(&mut arp), None);
        assert_eq!(prepare_checksum_offload(&mut [0u8; 20]), None);
    }
}
