//! Ingress classification: the first look at every received frame.
//!
//! Before a frame reaches smoltcp, this module checks it through smoltcp's
//! checked wire views (lengths, versions, checksums unless the NIC already
//! verified them), counts and drops what is malformed or not ours with a
//! [`DropReason`], and says where a good frame goes: TCP by its flow (so the
//! stack can hand it to the one shard that holds the flow's socket), UDP by
//! local port, everything else (ARP, ICMP, NDP, fragments) to the control
//! shard. Nothing here allocates or panics on any input; a fuzz target
//! (`fuzz/fuzz_targets/classify.rs`) holds it to that.
//!
//! [`classify_seen`] also reports what it saw on the way ([`Seen`]: IP
//! version, ICMP type, TCP RST, data) so the MIB-2 counters
//! ([`crate::mib`]) need not parse the frame again.

use smoltcp::wire::{
    ArpPacket, EthernetAddress, EthernetFrame, EthernetProtocol, Icmpv4Packet, Icmpv6Packet,
    IpAddress, IpProtocol, IpVersion, Ipv4Address, Ipv4Packet, Ipv6Address, Ipv6Packet, TcpPacket,
    UdpPacket,
};

/// Why a received frame was dropped before reaching the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    EthernetTruncated,
    /// Unicast to another MAC address.
    NotOurMac,
    /// An EtherType the stack does not handle (VLAN tags included).
    UnknownEthertype,
    /// ARP packet too short or not Ethernet/IPv4.
    ArpMalformed,
    /// IPv4 header too short, wrong version or bad header length.
    Ipv4Malformed,
    /// IPv4 total length larger than the frame or smaller than the header.
    Ipv4Truncated,
    /// IPv4 header checksum wrong.
    Ipv4BadChecksum,
    /// IPv4 destination is not an address of this stack.
    Ipv4NotOurs,
    /// IPv6 header too short or wrong version.
    Ipv6Malformed,
    /// IPv6 payload length larger than the frame.
    Ipv6Truncated,
    /// IPv6 destination is not an address of this stack.
    Ipv6NotOurs,
    /// TCP header too short or data offset out of bounds.
    TcpMalformed,
    /// TCP checksum wrong.
    TcpBadChecksum,
    /// UDP header too short or its length field disagrees with IP.
    UdpMalformed,
    /// UDP checksum wrong.
    UdpBadChecksum,
    /// ICMP message too short.
    IcmpMalformed,
    /// ICMP checksum wrong.
    IcmpBadChecksum,
    /// An IP protocol the stack does not handle.
    UnsupportedProtocol,
    /// Source address is multicast or broadcast (never a valid sender).
    BadSource,
    /// Untagged, or tagged for another VLAN, on a stack on one VLAN
    /// (`nic_vlan_mode`, see [`crate::vlan`]).
    NotOurVlan,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 20] = [
        DropReason::EthernetTruncated,
        DropReason::NotOurMac,
        DropReason::UnknownEthertype,
        DropReason::ArpMalformed,
        DropReason::Ipv4Malformed,
        DropReason::Ipv4Truncated,
        DropReason::Ipv4BadChecksum,
        DropReason::Ipv4NotOurs,
        DropReason::Ipv6Malformed,
        DropReason::Ipv6Truncated,
        DropReason::Ipv6NotOurs,
        DropReason::TcpMalformed,
        DropReason::TcpBadChecksum,
        DropReason::UdpMalformed,
        DropReason::UdpBadChecksum,
        DropReason::IcmpMalformed,
        DropReason::IcmpBadChecksum,
        DropReason::UnsupportedProtocol,
        DropReason::BadSource,
        DropReason::NotOurVlan,
    ];
    /// Number of reasons.
    pub const COUNT: usize = Self::ALL.len();

    /// Stable snake_case name, used in statistics output.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::EthernetTruncated => "eth_truncated",
            DropReason::NotOurMac => "not_our_mac",
            DropReason::UnknownEthertype => "unknown_ethertype",
            DropReason::ArpMalformed => "arp_malformed",
            DropReason::Ipv4Malformed => "ipv4_malformed",
            DropReason::Ipv4Truncated => "ipv4_truncated",
            DropReason::Ipv4BadChecksum => "ipv4_bad_checksum",
            DropReason::Ipv4NotOurs => "ipv4_not_ours",
            DropReason::Ipv6Malformed => "ipv6_malformed",
            DropReason::Ipv6Truncated => "ipv6_truncated",
            DropReason::Ipv6NotOurs => "ipv6_not_ours",
            DropReason::TcpMalformed => "tcp_malformed",
            DropReason::TcpBadChecksum => "tcp_bad_checksum",
            DropReason::UdpMalformed => "udp_malformed",
            DropReason::UdpBadChecksum => "udp_bad_checksum",
            DropReason::IcmpMalformed => "icmp_malformed",
            DropReason::IcmpBadChecksum => "icmp_bad_checksum",
            DropReason::UnsupportedProtocol => "unsupported_protocol",
            DropReason::BadSource => "bad_source",
            DropReason::NotOurVlan => "not_our_vlan",
        }
    }

    /// Index into a counter array.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A TCP flow as seen from this stack: local and remote ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Our address.
    pub local_addr: IpAddress,
    /// Our port.
    pub local_port: u16,
    /// The peer's address.
    pub remote_addr: IpAddress,
    /// The peer's port.
    pub remote_port: u16,
}

impl FlowKey {
    /// A keyed hash of the flow; `seed` is per process so that peers cannot
    /// aim many flows at one shard.
    #[inline]
    pub fn hash(&self, seed: u64) -> u64 {
        #[inline]
        fn fold(a: &IpAddress) -> u64 {
            match a {
                IpAddress::Ipv4(v4) => u64::from(u32::from_be_bytes(v4.octets())),
                IpAddress::Ipv6(v6) => {
                    let o = u128::from_be_bytes(v6.octets());
                    (o as u64) ^ ((o >> 64) as u64).rotate_left(29)
                }
            }
        }
        let ports = (u64::from(self.local_port) << 16) | u64::from(self.remote_port);
        let mut h = seed ^ 0x9e37_79b9_7f4a_7c15;
        for word in [fold(&self.local_addr), fold(&self.remote_addr), ports] {
            h = (h ^ word).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            h ^= h >> 31;
        }
        h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 29)
    }
}

/// Where a good frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A TCP segment of `flow`; `syn` is set for a connection request (SYN
    /// without ACK).
    Tcp {
        /// The flow it belongs to.
        flow: FlowKey,
        /// SYN without ACK: may need a listener.
        syn: bool,
    },
    /// A UDP datagram to local port `port`.
    Udp {
        /// Destination port.
        port: u16,
    },
    /// ARP, ICMP, NDP, IP fragments and the like: handled by the control shard.
    Control {
        /// Every stack thread needs to see it (ARP, NDP: neighbour state).
        broadcast: bool,
    },
    /// Counted and dropped.
    Drop(DropReason),
}

/// What the classifier needs to know about this stack.
#[derive(Debug, Clone, Copy)]
pub struct LocalAddrs {
    /// Our MAC address.
    pub mac: EthernetAddress,
    /// Our IPv4 address, if any.
    pub ipv4: Option<Ipv4Address>,
    /// The IPv4 subnet's broadcast address.
    pub ipv4_broadcast: Option<Ipv4Address>,
    /// Our IPv6 address, if any.
    pub ipv6: Option<Ipv6Address>,
    /// Our IPv6 link-local address.
    pub ipv6_link_local: Option<Ipv6Address>,
}

/// Checksums the NIC already checked, from the mbuf's offload flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxChecked {
    /// The IPv4 header checksum is known good.
    pub ip_good: bool,
    /// The TCP/UDP checksum is known good.
    pub l4_good: bool,
}

/// What the classifier learned of a frame on the way to its verdict, for
/// the MIB-2 counters. Fields stay at their defaults past the point where
/// the frame was dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// The frame was for us (our MAC, broadcast or multicast) and its
    /// EtherType was IPv4 or IPv6.
    pub ip: Option<IpVersion>,
    /// An IPv4 fragment, or an IPv6 packet whose next header is a fragment
    /// header: smoltcp reassembles it, so it is not delivered yet.
    pub fragment: bool,
    /// The type of an ICMP or ICMPv6 message long enough to have one.
    pub icmp_type: Option<u8>,
    /// A TCP segment with RST set.
    pub tcp_rst: bool,
    /// A TCP segment or a UDP datagram with payload: something a socket
    /// may queue for the application.
    pub data: bool,
    /// A TCP segment with none of ACK, SYN and RST: one no synchronized
    /// connection or listener takes (RFC 9293 3.10.7).
    pub tcp_bare: bool,
    /// Bytes of IPv6 extension headers (Hop-by-Hop, Destination Options,
    /// a finished Routing header) in front of a TCP segment, all of whose
    /// options may be skipped: the stack removes them before smoltcp,
    /// which only passes Hop-by-Hop and never to a TCP shard.
    pub ipv6_ext_len: u16,
}

/// Classifies one received frame.
#[inline]
pub fn classify(frame: &[u8], local: &LocalAddrs, checked: RxChecked) -> Verdict {
    classify_seen(frame, local, checked).0
}

/// Classifies one received frame ([`classify`]) and says what it saw.
pub fn classify_seen(frame: &[u8], local: &LocalAddrs, checked: RxChecked) -> (Verdict, Seen) {
    let mut seen = Seen::default();
    let verdict = classify_frame(frame, local, checked, &mut seen);
    (verdict, seen)
}

fn classify_frame(
    frame: &[u8],
    local: &LocalAddrs,
    checked: RxChecked,
    seen: &mut Seen,
) -> Verdict {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return Verdict::Drop(DropReason::EthernetTruncated);
    };
    let dst = eth.dst_addr();
    if !dst.is_broadcast() && !dst.is_multicast() && dst != local.mac {
        return Verdict::Drop(DropReason::NotOurMac);
    }
    match eth.ethertype() {
        EthernetProtocol::Arp => {
            let Ok(arp) = ArpPacket::new_checked(eth.payload()) else {
                return Verdict::Drop(DropReason::ArpMalformed);
            };
            if arp.hardware_len() != 6 || arp.protocol_len() != 4 {
                return Verdict::Drop(DropReason::ArpMalformed);
            }
            Verdict::Control { broadcast: true }
        }
        EthernetProtocol::Ipv4 => {
            seen.ip = Some(IpVersion::Ipv4);
            classify_ipv4(eth.payload(), local, checked, seen)
        }
        EthernetProtocol::Ipv6 => {
            seen.ip = Some(IpVersion::Ipv6);
            classify_ipv6(eth.payload(), local, checked, seen)
        }
        _ => Verdict::Drop(DropReason::UnknownEthertype),
    }
}

fn classify_ipv4(bytes: &[u8], local: &LocalAddrs, checked: RxChecked, seen: &mut Seen) -> Verdict {
    let Ok(ip) = Ipv4Packet::new_checked(bytes) else {
        // new_checked fails for both a short header and a bad total length;
        // tell them apart for the counters.
        return Verdict::Drop(
            if bytes.len() >= 20 && bytes[0] >> 4 == 4 && usize::from(bytes[0] & 0xf) * 4 >= 20 {
                DropReason::Ipv4Truncated
            } else {
                DropReason::Ipv4Malformed
            },
        );
    };
    if ip.version() != 4 {
        return Verdict::Drop(DropReason::Ipv4Malformed);
    }
    if !checked.ip_good && !ip.verify_checksum() {
        return Verdict::Drop(DropReason::Ipv4BadChecksum);
    }
    let src = ip.src_addr();
    if src.is_multicast() || src.is_broadcast() {
        return Verdict::Drop(DropReason::BadSource);
    }
    let dst = ip.dst_addr();
    let ours = Some(dst) == local.ipv4;
    if !ours && !dst.is_broadcast() && !dst.is_multicast() && Some(dst) != local.ipv4_broadcast {
        return Verdict::Drop(DropReason::Ipv4NotOurs);
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        // smoltcp reassembles fragments in the control shard.
        seen.fragment = true;
        return Verdict::Control { broadcast: false };
    }
    let payload = ip.payload();
    let (src, dst) = (IpAddress::Ipv4(src), IpAddress::Ipv4(dst));
    match ip.next_header() {
        IpProtocol::Tcp if ours => classify_tcp(payload, src, dst, checked, seen),
        IpProtocol::Tcp => Verdict::Drop(DropReason::Ipv4NotOurs),
        IpProtocol::Udp => classify_udp(payload, src, dst, checked, seen),
        IpProtocol::Icmp => {
            let Ok(icmp) = Icmpv4Packet::new_checked(payload) else {
                return Verdict::Drop(DropReason::IcmpMalformed);
            };
            seen.icmp_type = Some(icmp.msg_type().into());
            if !icmp.verify_checksum() {
                return Verdict::Drop(DropReason::IcmpBadChecksum);
            }
            Verdict::Control { broadcast: false }
        }
        IpProtocol::Igmp => Verdict::Control { broadcast: false },
        _ => Verdict::Drop(DropReason::UnsupportedProtocol),
    }
}

fn classify_ipv6(bytes: &[u8], local: &LocalAddrs, checked: RxChecked, seen: &mut Seen) -> Verdict {
    let Ok(ip) = Ipv6Packet::new_checked(bytes) else {
        return Verdict::Drop(if bytes.len() >= 40 && bytes[0] >> 4 == 6 {
            DropReason::Ipv6Truncated
        } else {
            DropReason::Ipv6Malformed
        });
    };
    if ip.version() != 6 {
        return Verdict::Drop(DropReason::Ipv6Malformed);
    }
    let src = ip.src_addr();
    if src.is_multicast() {
        return Verdict::Drop(DropReason::BadSource);
    }
    let dst = ip.dst_addr();
    let ours = Some(dst) == local.ipv6 || Some(dst) == local.ipv6_link_local;
    if !ours && !dst.is_multicast() {
        return Verdict::Drop(DropReason::Ipv6NotOurs);
    }
    let Some(payload) = ip.payload().get(..usize::from(ip.payload_len())) else {
        return Verdict::Drop(DropReason::Ipv6Truncated);
    };
    let (src, dst) = (IpAddress::Ipv6(src), IpAddress::Ipv6(dst));
    match ip.next_header() {
        IpProtocol::Tcp if ours => classify_tcp(payload, src, dst, checked, seen),
        IpProtocol::Tcp => Verdict::Drop(DropReason::Ipv6NotOurs),
        IpProtocol::Udp => classify_udp(payload, src, dst, checked, seen),
        IpProtocol::Icmpv6 => {
            let Ok(icmp) = Icmpv6Packet::new_checked(payload) else {
                return Verdict::Drop(DropReason::IcmpMalformed);
            };
            seen.icmp_type = Some(icmp.msg_type().into());
            if !icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()) {
                return Verdict::Drop(DropReason::IcmpBadChecksum);
            }
            // Neighbour discovery updates per-thread neighbour caches.
            let ndp = matches!(icmp.msg_type().into(), 133u8..=137u8);
            Verdict::Control { broadcast: ndp }
        }
        // Extension headers (hop-by-hop for MLD, fragments): smoltcp parses them.
        IpProtocol::Ipv6Frag => {
            seen.fragment = true;
            Verdict::Control { broadcast: false }
        }
        IpProtocol::HopByHop | IpProtocol::Ipv6Route | IpProtocol::Ipv6Opts => {
            match skippable_extensions(ip.next_header(), payload) {
                Some((IpProtocol::Tcp, len)) if ours => {
                    seen.ipv6_ext_len = len as u16;
                    classify_tcp(&payload[len..], src, dst, checked, seen)
                }
                _ => Verdict::Control { broadcast: false },
            }
        }
        IpProtocol::Ipv6NoNxt => Verdict::Control { broadcast: false },
        _ => Verdict::Drop(DropReason::UnsupportedProtocol),
    }
}

/// Walks IPv6 extension headers starting with `first` over `bytes`: when
/// they are Hop-by-Hop and Destination Options headers whose options are
/// all Pad1, PadN or of a type to skip when unknown (RFC 8200 4.2, action
/// bits 00), and Routing headers with no segments left (4.4), returns the
/// upper-layer protocol and where it starts. At most 8 headers.
fn skippable_extensions(first: IpProtocol, bytes: &[u8]) -> Option<(IpProtocol, usize)> {
    let mut next = first;
    let mut at = 0usize;
    for _ in 0..8 {
        match next {
            IpProtocol::HopByHop | IpProtocol::Ipv6Opts | IpProtocol::Ipv6Route => {}
            other => return Some((other, at)),
        }
        let h = bytes.get(at..at + 8)?;
        let len = (usize::from(h[1]) + 1) * 8;
        let header = bytes.get(at..at + len)?;
        if next == IpProtocol::Ipv6Route {
            if header[3] != 0 {
                return None;
            }
        } else {
            let mut i = 2;
            while i < len {
                match header[i] {
                    0 => i += 1,
                    t if t & 0xc0 == 0 => i += 2 + usize::from(*header.get(i + 1)?),
                    _ => return None,
                }
            }
            if i != len {
                return None;
            }
        }
        next = IpProtocol::from(h[0]);
        at += len;
    }
    None
}

fn classify_tcp(
    bytes: &[u8],
    src: IpAddress,
    dst: IpAddress,
    checked: RxChecked,
    seen: &mut Seen,
) -> Verdict {
    let Ok(tcp) = TcpPacket::new_checked(bytes) else {
        return Verdict::Drop(DropReason::TcpMalformed);
    };
    if !checked.l4_good && !tcp.verify_checksum(&src, &dst) {
        return Verdict::Drop(DropReason::TcpBadChecksum);
    }
    seen.tcp_rst = tcp.rst();
    seen.tcp_bare = !tcp.ack() && !tcp.syn() && !tcp.rst();
    seen.data = !tcp.payload().is_empty();
    Verdict::Tcp {
        flow: FlowKey {
            local_addr: dst,
            local_port: tcp.dst_port(),
            remote_addr: src,
            remote_port: tcp.src_port(),
        },
        syn: tcp.syn() && !tcp.ack(),
    }
}

fn classify_udp(
    bytes: &[u8],
    src: IpAddress,
    dst: IpAddress,
    checked: RxChecked,
    seen: &mut Seen,
) -> Verdict {
    let Ok(udp) = UdpPacket::new_checked(bytes) else {
        return Verdict::Drop(DropReason::UdpMalformed);
    };
    if usize::from(udp.len()) > bytes.len() {
        return Verdict::Drop(DropReason::UdpMalformed);
    }
    if !checked.l4_good && !udp.verify_checksum(&src, &dst) {
        return Verdict::Drop(DropReason::UdpBadChecksum);
    }
    if matches!(dst, IpAddress::Ipv6(_)) && udp.checksum() == 0 {
        // A zero UDP checksum is forbidden over IPv6 (RFC 8200 8.1).
        return Verdict::Drop(DropReason::UdpBadChecksum);
    }
    seen.data = true;
    Verdict::Udp {
        port: udp.dst_port(),
    }
}

/// The flow of a UDP datagram `classify` accepted (`Verdict::Udp`), for
/// delivering it to a connected socket. `None` for anything else.
pub fn udp_flow(frame: &[u8]) -> Option<FlowKey> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let (src, dst, payload) = match eth.ethertype() {
        EthernetProtocol::Ipv4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
            if ip.next_header() != IpProtocol::Udp {
                return None;
            }
            (
                IpAddress::Ipv4(ip.src_addr()),
                IpAddress::Ipv4(ip.dst_addr()),
                ip.payload(),
            )
        }
        EthernetProtocol::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
            if ip.next_header() != IpProtocol::Udp {
                return None;
            }
            (
                IpAddress::Ipv6(ip.src_addr()),
                IpAddress::Ipv6(ip.dst_addr()),
                ip.payload(),
            )
        }
        _ => return None,
    };
    let udp = UdpPacket::new_checked(payload).ok()?;
    Some(FlowKey {
        local_addr: dst,
        local_port: udp.dst_port(),
        remote_addr: src,
        remote_port: udp.src_port(),
    })
}

#[cfg(test)]
mod tests {
    use smoltcp::wire::{
        EthernetRepr, IpProtocol, Ipv4Repr, TcpControl, TcpRepr, TcpSeqNumber, UdpRepr,
    };

    use super::*;

    const OUR_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 2]);
    const PEER_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 1]);
    const OUR_IP: Ipv4Address = Ipv4Address::new(10, 88, 0, 2);
    const PEER_IP: Ipv4Address = Ipv4Address::new(10, 88, 0, 1);

    fn local() -> LocalAddrs {
        LocalAddrs {
            mac: OUR_MAC,
            ipv4: Some(OUR_IP),
            ipv4_broadcast: Some(Ipv4Address::new(10, 88, 0, 255)),
            ipv6: Some(Ipv6Address::new(0xfd00, 0x88, 0, 0, 0, 0, 0, 2)),
            ipv6_link_local: None,
        }
    }

    /// Builds an Ethernet/IPv4/TCP frame with correct checksums.
    fn tcp_frame(syn: bool, payload: &[u8]) -> Vec<u8> {
        let tcp = TcpRepr {
            src_port: 40000,
            dst_port: 7,
            control: if syn {
                TcpControl::Syn
            } else {
                TcpControl::None
            },
            seq_number: TcpSeqNumber(1000),
            ack_number: if syn { None } else { Some(TcpSeqNumber(1)) },
            window_len: 1024,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None, None, None],
            timestamp: None,
            payload,
        };
        let ip = Ipv4Repr {
            src_addr: PEER_IP,
            dst_addr: OUR_IP,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let eth = EthernetRepr {
            src_addr: PEER_MAC,
            dst_addr: OUR_MAC,
            ethertype: EthernetProtocol::Ipv4,
        };
        let mut buf = vec![0u8; eth.buffer_len() + ip.buffer_len() + tcp.buffer_len()];
        let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
        eth.emit(&mut f);
        let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
        ip.emit(&mut p, &smoltcp::phy::ChecksumCapabilities::default());
        let mut t = TcpPacket::new_unchecked(p.payload_mut());
        tcp.emit(
            &mut t,
            &IpAddress::Ipv4(PEER_IP),
            &IpAddress::Ipv4(OUR_IP),
            &smoltcp::phy::ChecksumCapabilities::default(),
        );
        buf
    }

    fn udp_frame(dst_port: u16) -> Vec<u8> {
        let udp = UdpRepr {
            src_port: 5000,
            dst_port,
        };
        let payload = b"hello";
        let ip = Ipv4Repr {
            src_addr: PEER_IP,
            dst_addr: OUR_IP,
            next_header: IpProtocol::Udp,
            payload_len: udp.header_len() + payload.len(),
            hop_limit: 64,
        };
        let eth = EthernetRepr {
            src_addr: PEER_MAC,
            dst_addr: OUR_MAC,
            ethertype: EthernetProtocol::Ipv4,
        };
        let mut buf =
            vec![0u8; eth.buffer_len() + ip.buffer_len() + udp.header_len() + payload.len()];
        let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
        eth.emit(&mut f);
        let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
        ip.emit(&mut p, &smoltcp::phy::ChecksumCapabilities::default());
        let mut u = UdpPacket::new_unchecked(p.payload_mut());
        udp.emit(
            &mut u,
            &IpAddress::Ipv4(PEER_IP),
            &IpAddress::Ipv4(OUR_IP),
            payload.len(),
            |b| b.copy_from_slice(payload),
            &smoltcp::phy::ChecksumCapabilities::default(),
        );
        buf
    }

    #[test]
    fn good_syn_is_tcp_with_flow() {
        let v = classify(&tcp_frame(true, &[]), &local(), RxChecked::default());
        let Verdict::Tcp { flow, syn } = v else {
            panic!("{v:?}")
        };
        assert!(syn);
        assert_eq!(flow.local_port, 7);
        assert_eq!(flow.remote_port, 40000);
        assert_eq!(flow.local_addr, IpAddress::Ipv4(OUR_IP));
    }

    #[test]
    fn data_segment_is_not_syn() {
        let v = classify(&tcp_frame(false, b"abc"), &local(), RxChecked::default());
        assert!(matches!(v, Verdict::Tcp { syn: false, .. }), "{v:?}");
    }

    #[test]
    fn tcp_checksum_corruption_is_counted() {
        let mut f = tcp_frame(false, b"abcdef");
        let n = f.len();
        f[n - 1] ^= 0xff;
        assert_eq!(
            classify(&f, &local(), RxChecked::default()),
            Verdict::Drop(DropReason::TcpBadChecksum)
        );
        // The NIC said the checksum was good: trusted.
        let trusted = RxChecked {
            ip_good: true,
            l4_good: true,
        };
        assert!(matches!(
            classify(&f, &local(), trusted),
            Verdict::Tcp { .. }
        ));
    }

    #[test]
    fn ipv4_header_checksum_corruption() {
        let mut f = tcp_frame(false, b"x");
        f[14 + 8] ^= 1; // TTL
        assert_eq!(
            classify(&f, &local(), RxChecked::default()),
            Verdict::Drop(DropReason::Ipv4BadChecksum)
        );
    }

    #[test]
    fn truncated_frames_at_every_length_never_pass_as_tcp() {
        let f = tcp_frame(false, b"payload!");
        for len in 0..f.len() {
            let v = classify(&f[..len], &local(), RxChecked::default());
            assert!(matches!(v, Verdict::Drop(_)), "len {len}: {v:?}");
        }
    }

    #[test]
    fn ipv4_total_length_beyond_frame() {
        let mut f = tcp_frame(false, b"x");
        // total_len = 1400 while the frame carries ~41 bytes of IP.
        f[16] = 0x05;
        f[17] = 0x78;
        assert_eq!(
            classify(
                &f,
                &local(),
                RxChecked {
                    ip_good: true,
                    l4_good: false
                }
            ),
            Verdict::Drop(DropReason::Ipv4Truncated)
        );
    }

    #[test]
    fn other_mac_and_other_ip_are_not_ours() {
        let mut f = tcp_frame(false, b"x");
        f[5] = 0x99;
        assert_eq!(
            classify(&f, &local(), RxChecked::default()),
            Verdict::Drop(DropReason::NotOurMac)
        );
        let mut l = local();
        l.ipv4 = Some(Ipv4Address::new(10, 88, 0, 3));
        assert_eq!(
            classify(&tcp_frame(false, b"x"), &l, RxChecked::default()),
            Verdict::Drop(DropReason::Ipv4NotOurs)
        );
    }

    #[test]
    fn unknown_ethertype_and_vlan() {
        let mut f = tcp_frame(false, b"x");
        f[12] = 0x81;
        f[13] = 0x00;
        assert_eq!(
            classify(&f, &local(), RxChecked::default()),
            Verdict::Drop(DropReason::UnknownEthertype)
        );
    }

    #[test]
    fn udp_goes_by_port_and_bad_length_drops() {
        let f = udp_frame(9);
        assert_eq!(
            classify(&f, &local(), RxChecked::default()),
            Verdict::Udp { port: 9 }
        );
        let mut bad = f.clone();
        // UDP length field larger than the datagram.
        let off = 14 + 20 + 4;
        bad[off] = 0x10;
        let v = classify(&bad, &local(), RxChecked::default());
        assert!(
            matches!(
                v,
                Verdict::Drop(DropReason::UdpMalformed | DropReason::UdpBadChecksum)
            ),
            "{v:?}"
        );
    }

    #[test]
    fn flow_hash_depends_on_every_field_and_seed() {
        let a = FlowKey {
            local_addr: IpAddress::Ipv4(OUR_IP),
            local_port: 7,
            remote_addr: IpAddress::Ipv4(PEER_IP),
            remote_port: 40000,
        };
        let mut b = a;
        b.remote_port = 40001;
        assert_ne!(a.hash(1), b.hash(1));
        assert_ne!(a.hash(1), a.hash(2));
        assert_eq!(a.hash(7), a.hash(7));
        // Spread: 4096 consecutive ports over 64 shards, none empty or hot.
        let mut counts = [0u32; 64];
        for p in 0..4096u16 {
            let mut k = a;
            k.remote_port = 30000 + p;
            counts[(k.hash(42) % 64) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (32..=100).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn every_reason_has_a_distinct_name_and_index() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
    }
}
