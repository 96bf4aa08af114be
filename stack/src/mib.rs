//! MIB-2 counters (RFC 1213: IP, ICMP, TCP, UDP, and their IPv6 groups)
//! for `gazellectl lstack show -s`.
//!
//! smoltcp keeps no such counters, so they are counted where frames pass
//! through our code:
//! - **ingress**, from the classifier's verdict and what it saw on the way
//!   ([`Mib::count_rx`]): nothing is parsed twice;
//! - **egress**, by reading the headers of each frame smoltcp wrote into a
//!   transmit buffer ([`Mib::count_tx`]);
//! - **UDP delivery**: smoltcp answers a unicast datagram no socket takes
//!   with ICMP Port Unreachable, which [`Mib::count_tx`] counts as `NoPorts`;
//!   [`Mib::deliver_udp`] counts a datagram as delivered when ingesting it
//!   produced no answer at all (see there);
//! - **TCP connection states**, from the transitions the stack threads
//!   observe on their sockets (`engine`).
//!
//! Each stack thread owns one [`Mib`] and is its only writer; counting is a
//! few relaxed stores per frame, with no allocation, lock or system call.

use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpVersion, Ipv4Packet, Ipv6Packet};

use crate::{
    classify::{DropReason, Seen, Verdict},
    stats::Counter,
};

/// IP protocol numbers met on egress.
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;
/// IPv6 extension headers smoltcp may put before the transport header
/// (hop-by-hop for MLD reports, destination options, routing).
const IPV6_EXTENSIONS: [u8; 3] = [0, 60, 43];

/// ICMP and ICMPv6 message types counted by type.
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_ECHO: u8 = 8;
const ICMP_PORT_UNREACH: u8 = 3;
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_ECHO: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
const ICMPV6_PORT_UNREACH: u8 = 4;

/// The IP group of one family (see `gazelle_ctl_proto::IpMib` for what each
/// counts).
#[derive(Debug, Default)]
pub struct IpCounters {
    /// `InReceives`.
    pub in_receives: Counter,
    /// `InHdrErrors`.
    pub in_hdr_errors: Counter,
    /// `InAddrErrors`.
    pub in_addr_errors: Counter,
    /// `InUnknownProtos`.
    pub in_unknown_protos: Counter,
    /// `InDelivers`.
    pub in_delivers: Counter,
    /// `OutRequests`.
    pub out_requests: Counter,
}

/// The ICMP group of one family.
#[derive(Debug, Default)]
pub struct IcmpCounters {
    /// `InMsgs`.
    pub in_msgs: Counter,
    /// `InErrors`.
    pub in_errors: Counter,
    /// `InDestUnreachs`.
    pub in_dest_unreachs: Counter,
    /// `InEchos`.
    pub in_echos: Counter,
    /// `InEchoReps`.
    pub in_echo_reps: Counter,
    /// `OutMsgs`.
    pub out_msgs: Counter,
    /// `OutDestUnreachs`.
    pub out_dest_unreachs: Counter,
    /// `OutEchos`.
    pub out_echos: Counter,
    /// `OutEchoReps`.
    pub out_echo_reps: Counter,
}

/// The TCP group, both families. `CurrEstab` is a gauge read from the
/// sockets when asked; `RetransSegs` is not counted (smoltcp does not say
/// which segments are retransmissions).
#[derive(Debug, Default)]
pub struct TcpCounters {
    /// `ActiveOpens`.
    pub active_opens: Counter,
    /// `PassiveOpens`.
    pub passive_opens: Counter,
    /// `AttemptFails`.
    pub attempt_fails: Counter,
    /// `EstabResets`.
    pub estab_resets: Counter,
    /// `InSegs`.
    pub in_segs: Counter,
    /// `OutSegs`.
    pub out_segs: Counter,
    /// `InErrs`.
    pub in_errs: Counter,
    /// `OutRsts`.
    pub out_rsts: Counter,
    /// Segments received with RST (not in RFC 1213).
    pub in_rsts: Counter,
}

/// The UDP group of one family.
#[derive(Debug, Default)]
pub struct UdpCounters {
    /// `InDatagrams`.
    pub in_datagrams: Counter,
    /// `NoPorts`.
    pub no_ports: Counter,
    /// `InErrors`.
    pub in_errors: Counter,
    /// `RcvbufErrors`: datagrams a socket's full receive buffer dropped.
    pub rcvbuf_errors: Counter,
    /// `OutDatagrams`.
    pub out_datagrams: Counter,
}

/// The MIB-2 counters of one stack thread.
#[derive(Debug, Default)]
pub struct Mib {
    /// IPv4.
    pub ip: IpCounters,
    /// IPv6.
    pub ip6: IpCounters,
    /// ICMPv4.
    pub icmp: IcmpCounters,
    /// ICMPv6.
    pub icmp6: IcmpCounters,
    /// TCP, both families.
    pub tcp: TcpCounters,
    /// UDP over IPv4.
    pub udp: UdpCounters,
    /// UDP over IPv6.
    pub udp6: UdpCounters,
    /// Frames written, of any kind (for [`Mib::deliver_udp`]).
    frames_out: Counter,
}

impl Mib {
    fn family(&self, v6: bool) -> (&IpCounters, &IcmpCounters, &UdpCounters) {
        if v6 {
            (&self.ip6, &self.icmp6, &self.udp6)
        } else {
            (&self.ip, &self.icmp, &self.udp)
        }
    }

    /// Counts a received frame from its classification. Call once per frame
    /// the port delivered (not again for a frame another thread steered
    /// here). UDP datagrams are only counted as received by IP here; whether
    /// a socket took them is [`Mib::deliver_udp`]'s business.
    #[inline]
    pub fn count_rx(&self, verdict: &Verdict, seen: &Seen) {
        let Some(version) = seen.ip else {
            // ARP, or not IP, or not for our MAC.
            return;
        };
        let (ip, icmp, udp) = self.family(version == IpVersion::Ipv6);
        ip.in_receives.incr();
        match *verdict {
            Verdict::Drop(reason) => match reason {
                DropReason::Ipv4Malformed
                | DropReason::Ipv4Truncated
                | DropReason::Ipv4BadChecksum
                | DropReason::Ipv6Malformed
                | DropReason::Ipv6Truncated
                | DropReason::BadSource => ip.in_hdr_errors.incr(),
                DropReason::Ipv4NotOurs | DropReason::Ipv6NotOurs => ip.in_addr_errors.incr(),
                DropReason::UnsupportedProtocol => ip.in_unknown_protos.incr(),
                // IP delivered these; the transport found them in error.
                DropReason::TcpMalformed | DropReason::TcpBadChecksum => {
                    ip.in_delivers.incr();
                    self.tcp.in_segs.incr();
                    self.tcp.in_errs.incr();
                }
                DropReason::UdpMalformed | DropReason::UdpBadChecksum => {
                    ip.in_delivers.incr();
                    udp.in_errors.incr();
                }
                DropReason::IcmpMalformed | DropReason::IcmpBadChecksum => {
                    ip.in_delivers.incr();
                    icmp.in_msgs.incr();
                    icmp.in_errors.incr();
                }
                // Not IP: `seen.ip` is unset for these.
                DropReason::EthernetTruncated
                | DropReason::NotOurMac
                | DropReason::NotOurVlan
                | DropReason::UnknownEthertype
                | DropReason::ArpMalformed => {}
            },
            Verdict::Tcp { .. } => {
                ip.in_delivers.incr();
                self.tcp.in_segs.incr();
                if seen.tcp_rst {
                    self.tcp.in_rsts.incr();
                }
            }
            Verdict::Udp { .. } => ip.in_delivers.incr(),
            Verdict::Control { .. } => {
                if seen.fragment {
                    // Delivered (or not) once smoltcp has reassembled it.
                    return;
                }
                ip.in_delivers.incr();
                if let Some(t) = seen.icmp_type {
                    icmp.in_msgs.incr();
                    let (echo, reply, unreach) = if version == IpVersion::Ipv6 {
                        (ICMPV6_ECHO, ICMPV6_ECHO_REPLY, ICMPV6_DEST_UNREACH)
                    } else {
                        (ICMP_ECHO, ICMP_ECHO_REPLY, ICMP_DEST_UNREACH)
                    };
                    if t == echo {
                        icmp.in_echos.incr();
                    } else if t == reply {
                        icmp.in_echo_reps.incr();
                    } else if t == unreach {
                        icmp.in_dest_unreachs.incr();
                    }
                }
            }
        }
    }

    /// Runs `deliver` (smoltcp ingesting one UDP datagram of the given
    /// family through a device whose frames go to [`Mib::count_tx`]) and
    /// counts the datagram in `InDatagrams` or `NoPorts`, or, when
    /// `deliver` says a socket took it but its receive buffer was full (it
    /// returns true with its result; smoltcp drops such a datagram
    /// silently), in `InErrors` and `RcvbufErrors` as Linux does.
    ///
    /// smoltcp queues a datagram a socket takes and writes nothing; for one
    /// no socket takes it writes its answer at once: the Port Unreachable
    /// ([`Mib::count_tx`] counts `NoPorts`), or, when it does not know the
    /// sender's link address, the ARP request or neighbour solicitation it
    /// sends instead (counted as `NoPorts` here). A unicast datagram that
    /// finds no socket while smoltcp holds back its solicitations (at most
    /// one a second per neighbour) is the one miscounted: as delivered.
    /// Broadcast and multicast datagrams get no answer, so they count as
    /// delivered, as Linux counts them apart from `NoPorts`.
    #[inline]
    pub fn deliver_udp<R>(&self, v6: bool, deliver: impl FnOnce() -> (R, bool)) -> R {
        let udp = self.family(v6).2;
        let (no_ports, frames) = (udp.no_ports.get(), self.frames_out.get());
        let (r, buffer_full) = deliver();
        if udp.no_ports.get() == no_ports {
            if buffer_full {
                udp.in_errors.incr();
                udp.rcvbuf_errors.incr();
            } else if self.frames_out.get() == frames {
                udp.in_datagrams.incr();
            } else {
                udp.no_ports.incr();
            }
        }
        r
    }

    /// Counts a frame the stack is sending. Reads only the headers, bounds
    /// checked; a frame it cannot parse is not counted.
    #[inline]
    pub fn count_tx(&self, frame: &[u8]) {
        self.frames_out.incr();
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return;
        };
        match eth.ethertype() {
            EthernetProtocol::Ipv4 => {
                let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
                    return;
                };
                if ip.frag_offset() != 0 {
                    // A later fragment: the datagram was counted with its
                    // first one.
                    return;
                }
                self.ip.out_requests.incr();
                self.count_tx_transport(false, ip.next_header().into(), ip.payload());
            }
            EthernetProtocol::Ipv6 => {
                let Ok(ip) = Ipv6Packet::new_checked(eth.payload()) else {
                    return;
                };
                self.ip6.out_requests.incr();
                let (mut next, mut rest) = (u8::from(ip.next_header()), ip.payload());
                for _ in 0..IPV6_EXTENSIONS.len() {
                    if !IPV6_EXTENSIONS.contains(&next) {
                        break;
                    }
                    let (Some(&n), Some(&len)) = (rest.first(), rest.get(1)) else {
                        return;
                    };
                    let Some(after) = rest.get((usize::from(len) + 1) * 8..) else {
                        return;
                    };
                    (next, rest) = (n, after);
                }
                self.count_tx_transport(true, next, rest);
            }
            _ => {}
        }
    }

    fn count_tx_transport(&self, v6: bool, protocol: u8, payload: &[u8]) {
        let (_, icmp, udp) = self.family(v6);
        match (protocol, v6) {
            (PROTO_TCP, _) => {
                // Flags are byte 13 of the header; RST is bit 2.
                let Some(&flags) = payload.get(13) else {
                    return;
                };
                self.tcp.out_segs.incr();
                if flags & 0x04 != 0 {
                    self.tcp.out_rsts.incr();
                }
            }
            (PROTO_UDP, _) => udp.out_datagrams.incr(),
            (PROTO_ICMP, false) | (PROTO_ICMPV6, true) => {
                let (Some(&kind), Some(&code)) = (payload.first(), payload.get(1)) else {
                    return;
                };
                icmp.out_msgs.incr();
                // An error message quotes the offending datagram's IP
                // header after its own 8 bytes; its protocol field is at
                // byte 9 (IPv4) or 6 (IPv6) of that header.
                let (echo, reply, unreach, port, quoted_protocol) = if v6 {
                    (
                        ICMPV6_ECHO,
                        ICMPV6_ECHO_REPLY,
                        ICMPV6_DEST_UNREACH,
                        ICMPV6_PORT_UNREACH,
                        8 + 6,
                    )
                } else {
                    (
                        ICMP_ECHO,
                        ICMP_ECHO_REPLY,
                        ICMP_DEST_UNREACH,
                        ICMP_PORT_UNREACH,
                        8 + 9,
                    )
                };
                if kind == reply {
                    icmp.out_echo_reps.incr();
                } else if kind == echo {
                    icmp.out_echos.incr();
                } else if kind == unreach {
                    icmp.out_dest_unreachs.incr();
                    if code == port && payload.get(quoted_protocol) == Some(&PROTO_UDP) {
                        udp.no_ports.incr();
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::VecDeque, sync::Arc};

    use smoltcp::{
        iface::{Config, Interface, SocketSet},
        phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium},
        socket::udp,
        time::Instant,
        wire::{
            ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetRepr, HardwareAddress,
            Icmpv4Packet, Icmpv4Repr, Icmpv6Packet, Icmpv6Repr, IpAddress, IpCidr,
            IpListenEndpoint, IpProtocol, Ipv4Address, Ipv4Repr, Ipv6Address, Ipv6Repr, NdiscRepr,
            TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket, UdpRepr,
        },
    };

    use super::*;
    use crate::classify::{classify_seen, LocalAddrs, RxChecked};

    const OUR_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 2]);
    const PEER_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 1]);
    const OUR_IP: Ipv4Address = Ipv4Address::new(10, 88, 0, 2);
    const PEER_IP: Ipv4Address = Ipv4Address::new(10, 88, 0, 1);
    const OUR_IP6: Ipv6Address = Ipv6Address::new(0xfd00, 0x88, 0, 0, 0, 0, 0, 2);
    const PEER_IP6: Ipv6Address = Ipv6Address::new(0xfd00, 0x88, 0, 0, 0, 0, 0, 1);

    fn local() -> LocalAddrs {
        LocalAddrs {
            mac: OUR_MAC,
            ipv4: Some(OUR_IP),
            ipv4_broadcast: Some(Ipv4Address::new(10, 88, 0, 255)),
            ipv6: Some(OUR_IP6),
            ipv6_link_local: None,
        }
    }

    fn csum() -> ChecksumCapabilities {
        ChecksumCapabilities::default()
    }

    /// An Ethernet frame from the peer to us around an IPv4 packet whose
    /// payload `body` writes.
    fn ipv4_frame(proto: IpProtocol, len: usize, body: impl FnOnce(&mut [u8])) -> Vec<u8> {
        let ip = Ipv4Repr {
            src_addr: PEER_IP,
            dst_addr: OUR_IP,
            next_header: proto,
            payload_len: len,
            hop_limit: 64,
        };
        let eth = EthernetRepr {
            src_addr: PEER_MAC,
            dst_addr: OUR_MAC,
            ethertype: EthernetProtocol::Ipv4,
        };
        let mut buf = vec![0u8; eth.buffer_len() + ip.buffer_len() + len];
        let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
        eth.emit(&mut f);
        let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
        ip.emit(&mut p, &csum());
        body(p.payload_mut());
        buf
    }

    fn ipv6_frame(proto: IpProtocol, len: usize, body: impl FnOnce(&mut [u8])) -> Vec<u8> {
        let ip = Ipv6Repr {
            src_addr: PEER_IP6,
            dst_addr: OUR_IP6,
            next_header: proto,
            payload_len: len,
            // What neighbour discovery requires; anything else accepts it.
            hop_limit: 255,
        };
        let eth = EthernetRepr {
            src_addr: PEER_MAC,
            dst_addr: OUR_MAC,
            ethertype: EthernetProtocol::Ipv6,
        };
        let mut buf = vec![0u8; eth.buffer_len() + ip.buffer_len() + len];
        let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
        eth.emit(&mut f);
        let mut p = Ipv6Packet::new_unchecked(f.payload_mut());
        ip.emit(&mut p);
        body(p.payload_mut());
        buf
    }

    fn echo_request(seq: u16) -> Vec<u8> {
        let data = b"ping payload";
        let icmp = Icmpv4Repr::EchoRequest {
            ident: 7,
            seq_no: seq,
            data,
        };
        ipv4_frame(IpProtocol::Icmp, icmp.buffer_len(), |b| {
            icmp.emit(&mut Icmpv4Packet::new_unchecked(b), &csum())
        })
    }

    /// The peer asking for our MAC address, which tells smoltcp the peer's.
    fn arp_request() -> Vec<u8> {
        let arp = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: PEER_MAC,
            source_protocol_addr: PEER_IP,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: OUR_IP,
        };
        let eth = EthernetRepr {
            src_addr: PEER_MAC,
            dst_addr: EthernetAddress::BROADCAST,
            ethertype: EthernetProtocol::Arp,
        };
        let mut buf = vec![0u8; eth.buffer_len() + arp.buffer_len()];
        let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
        eth.emit(&mut f);
        arp.emit(&mut ArpPacket::new_unchecked(f.payload_mut()));
        buf
    }

    /// The same for IPv6: a neighbour solicitation with the peer's MAC.
    fn neighbor_solicit() -> Vec<u8> {
        let ns = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
            target_addr: OUR_IP6,
            lladdr: Some(PEER_MAC.into()),
        });
        ipv6_frame(IpProtocol::Icmpv6, ns.buffer_len(), |b| {
            ns.emit(
                &PEER_IP6,
                &OUR_IP6,
                &mut Icmpv6Packet::new_unchecked(b),
                &csum(),
            )
        })
    }

    fn echo_request6() -> Vec<u8> {
        let icmp = Icmpv6Repr::EchoRequest {
            ident: 9,
            seq_no: 1,
            data: b"ping6",
        };
        ipv6_frame(IpProtocol::Icmpv6, icmp.buffer_len(), |b| {
            icmp.emit(
                &PEER_IP6,
                &OUR_IP6,
                &mut Icmpv6Packet::new_unchecked(b),
                &csum(),
            )
        })
    }

    fn tcp_segment(control: TcpControl, payload: &[u8]) -> Vec<u8> {
        let tcp = TcpRepr {
            src_port: 40000,
            dst_port: 9,
            control,
            seq_number: TcpSeqNumber(1000),
            ack_number: (control != TcpControl::Syn).then_some(TcpSeqNumber(1)),
            window_len: 1024,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None, None, None],
            timestamp: None,
            payload,
        };
        ipv4_frame(IpProtocol::Tcp, tcp.buffer_len(), |b| {
            tcp.emit(
                &mut TcpPacket::new_unchecked(b),
                &IpAddress::Ipv4(PEER_IP),
                &IpAddress::Ipv4(OUR_IP),
                &csum(),
            )
        })
    }

    fn udp_datagram(dst_port: u16) -> Vec<u8> {
        let udp = UdpRepr {
            src_port: 5000,
            dst_port,
        };
        let payload = b"hello";
        ipv4_frame(IpProtocol::Udp, udp.header_len() + payload.len(), |b| {
            udp.emit(
                &mut UdpPacket::new_unchecked(b),
                &IpAddress::Ipv4(PEER_IP),
                &IpAddress::Ipv4(OUR_IP),
                payload.len(),
                |p| p.copy_from_slice(payload),
                &csum(),
            )
        })
    }

    /// A smoltcp interface with our addresses, fed one frame at a time as
    /// the stack threads do, each frame it sends counted by `count_tx` as
    /// it is written (as `device::MbufTxToken` does).
    struct Wire {
        iface: Interface,
        dev: TestDevice,
        sockets: SocketSet<'static>,
        mib: Arc<Mib>,
    }

    struct TestDevice {
        rx: VecDeque<Vec<u8>>,
        mib: Arc<Mib>,
    }

    struct RxTok(Vec<u8>);
    struct TxTok<'a>(&'a Mib);

    impl phy::RxToken for RxTok {
        fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
            f(&self.0)
        }
    }

    impl phy::TxToken for TxTok<'_> {
        fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
            let mut buf = vec![0; len];
            let r = f(&mut buf);
            self.0.count_tx(&buf);
            r
        }
    }

    impl phy::Device for TestDevice {
        type RxToken<'a> = RxTok;
        type TxToken<'a> = TxTok<'a>;
        fn receive(&mut self, _: Instant) -> Option<(RxTok, TxTok<'_>)> {
            let f = self.rx.pop_front()?;
            Some((RxTok(f), TxTok(&self.mib)))
        }
        fn transmit(&mut self, _: Instant) -> Option<TxTok<'_>> {
            Some(TxTok(&self.mib))
        }
        fn capabilities(&self) -> DeviceCapabilities {
            let mut c = DeviceCapabilities::default();
            c.medium = Medium::Ethernet;
            c.max_transmission_unit = 1514;
            c
        }
    }

    impl Wire {
        /// An interface that knows the peer's MAC address (as after the
        /// peer resolved ours), with the counters of that exchange reset.
        fn new() -> Wire {
            let mut w = Wire::unprimed();
            w.receive(arp_request());
            w.receive(neighbor_solicit());
            w.mib = Arc::default();
            w.dev.mib = Arc::clone(&w.mib);
            w
        }

        /// An interface that has not heard from the peer yet.
        fn unprimed() -> Wire {
            let mib = Arc::new(Mib::default());
            let mut dev = TestDevice {
                rx: VecDeque::new(),
                mib: Arc::clone(&mib),
            };
            let mut iface = Interface::new(
                Config::new(HardwareAddress::Ethernet(OUR_MAC)),
                &mut dev,
                Instant::from_secs(1),
            );
            iface.update_ip_addrs(|a| {
                a.push(IpCidr::new(IpAddress::Ipv4(OUR_IP), 24)).unwrap();
                a.push(IpCidr::new(IpAddress::Ipv6(OUR_IP6), 64)).unwrap();
            });
            Wire {
                iface,
                dev,
                sockets: SocketSet::new(Vec::new()),
                mib,
            }
        }

        fn bind_udp(&mut self, port: u16) {
            let buf = || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 512]);
            let mut s = udp::Socket::new(buf(), buf());
            s.bind(IpListenEndpoint { addr: None, port }).unwrap();
            self.sockets.add(s);
        }

        /// Classifies and counts `frame`, hands it to smoltcp if it passed,
        /// and counts what smoltcp sends.
        fn receive(&mut self, frame: Vec<u8>) {
            let (verdict, seen) = classify_seen(&frame, &local(), RxChecked::default());
            self.mib.count_rx(&verdict, &seen);
            if matches!(verdict, Verdict::Drop(_)) {
                return;
            }
            self.dev.rx.push_back(frame);
            let Wire {
                iface,
                dev,
                sockets,
                mib,
            } = self;
            let mut ingest = || iface.poll_ingress_single(Instant::from_secs(2), dev, sockets);
            if matches!(verdict, Verdict::Udp { .. }) {
                mib.deliver_udp(seen.ip == Some(IpVersion::Ipv6), || (ingest(), false));
            } else {
                ingest();
            }
            self.iface
                .poll_egress(Instant::from_secs(2), &mut self.dev, &mut self.sockets);
        }
    }

    #[test]
    fn echo_request_and_its_reply() {
        let mut w = Wire::new();
        w.receive(echo_request(1));
        let m = &w.mib;
        assert_eq!(m.ip.in_receives.get(), 1);
        assert_eq!(m.ip.in_delivers.get(), 1);
        assert_eq!(m.icmp.in_msgs.get(), 1);
        assert_eq!(m.icmp.in_echos.get(), 1);
        assert_eq!(m.icmp.in_errors.get(), 0);
        // smoltcp answered: one datagram out, an echo reply.
        assert_eq!(m.ip.out_requests.get(), 1);
        assert_eq!(m.icmp.out_msgs.get(), 1);
        assert_eq!(m.icmp.out_echo_reps.get(), 1);
        assert_eq!(m.ip6.in_receives.get(), 0);
    }

    #[test]
    fn icmp_with_a_bad_checksum_is_an_error_not_an_echo() {
        let mut w = Wire::new();
        let mut f = echo_request(2);
        let n = f.len();
        f[n - 1] ^= 0xff;
        w.receive(f);
        assert_eq!(w.mib.icmp.in_msgs.get(), 1);
        assert_eq!(w.mib.icmp.in_errors.get(), 1);
        assert_eq!(w.mib.icmp.in_echos.get(), 0);
        assert_eq!(w.mib.icmp.out_msgs.get(), 0);
    }

    #[test]
    fn ipv6_echo_counts_in_the_icmp6_group() {
        let mut w = Wire::new();
        w.receive(echo_request6());
        let m = &w.mib;
        assert_eq!(m.ip6.in_receives.get(), 1);
        assert_eq!(m.ip6.in_delivers.get(), 1);
        assert_eq!(m.icmp6.in_echos.get(), 1);
        assert_eq!(m.icmp6.out_echo_reps.get(), 1);
        assert_eq!(m.ip6.out_requests.get(), 1);
        assert_eq!(m.icmp.in_msgs.get(), 0);
        assert_eq!(m.ip.in_receives.get(), 0);
    }

    #[test]
    fn truncated_ip_headers_are_header_errors() {
        let mut w = Wire::new();
        let f = echo_request(3);
        // Shorter than an IPv4 header.
        w.receive(f[..14 + 12].to_vec());
        // A total length beyond the frame.
        let mut long = f.clone();
        long[16] = 0x05;
        w.receive(long);
        // A wrong header checksum.
        let mut bad = f;
        bad[14 + 8] ^= 1;
        w.receive(bad);
        let m = &w.mib;
        assert_eq!(m.ip.in_receives.get(), 3);
        assert_eq!(m.ip.in_hdr_errors.get(), 3);
        assert_eq!(m.ip.in_delivers.get(), 0);
        assert_eq!(m.icmp.in_msgs.get(), 0);
    }

    #[test]
    fn foreign_destinations_and_unknown_protocols() {
        let mut w = Wire::new();
        let mut other = echo_request(4);
        // Destination 10.88.0.3; fix the header checksum so only the address is wrong.
        other[14 + 19] = 3;
        let mut ip = Ipv4Packet::new_unchecked(&mut other[14..]);
        ip.fill_checksum();
        w.receive(other);
        w.receive(ipv4_frame(IpProtocol::Unknown(253), 8, |_| {}));
        let m = &w.mib;
        assert_eq!(m.ip.in_receives.get(), 2);
        assert_eq!(m.ip.in_addr_errors.get(), 1);
        assert_eq!(m.ip.in_unknown_protos.get(), 1);
        assert_eq!(m.ip.in_delivers.get(), 0);
    }

    #[test]
    fn bad_tcp_segments_are_errors_and_segments() {
        let mut w = Wire::new();
        let mut f = tcp_segment(TcpControl::None, b"data");
        let n = f.len();
        f[n - 1] ^= 0x55;
        w.receive(f);
        // A data offset pointing past the segment.
        let mut g = tcp_segment(TcpControl::None, b"");
        g[14 + 20 + 12] = 0xf0;
        w.receive(g);
        let m = &w.mib;
        assert_eq!(m.tcp.in_segs.get(), 2);
        assert_eq!(m.tcp.in_errs.get(), 2);
        assert_eq!(m.ip.in_delivers.get(), 2);
        assert_eq!(m.tcp.out_segs.get(), 0);
    }

    #[test]
    fn syn_to_a_closed_port_is_answered_with_a_reset() {
        let mut w = Wire::new();
        w.receive(tcp_segment(TcpControl::Syn, b""));
        let m = &w.mib;
        assert_eq!(m.tcp.in_segs.get(), 1);
        assert_eq!(m.tcp.in_errs.get(), 0);
        assert_eq!(m.tcp.out_segs.get(), 1);
        assert_eq!(m.tcp.out_rsts.get(), 1);
        assert_eq!(m.tcp.in_rsts.get(), 0);
    }

    #[test]
    fn resets_received_are_counted() {
        let mut w = Wire::new();
        w.receive(tcp_segment(TcpControl::Rst, b""));
        assert_eq!(w.mib.tcp.in_segs.get(), 1);
        assert_eq!(w.mib.tcp.in_rsts.get(), 1);
        // Nobody answers a reset.
        assert_eq!(w.mib.tcp.out_segs.get(), 0);
    }

    #[test]
    fn udp_to_a_closed_port_is_no_ports_not_delivered() {
        let mut w = Wire::new();
        w.bind_udp(53);
        w.receive(udp_datagram(53));
        assert_eq!(w.mib.udp.in_datagrams.get(), 1);
        assert_eq!(w.mib.udp.no_ports.get(), 0);
        w.receive(udp_datagram(54));
        let m = &w.mib;
        assert_eq!(m.udp.in_datagrams.get(), 1);
        assert_eq!(m.udp.no_ports.get(), 1);
        assert_eq!(m.icmp.out_dest_unreachs.get(), 1);
        assert_eq!(m.icmp.out_msgs.get(), 1);
        assert_eq!(m.ip.in_delivers.get(), 2);
        assert_eq!(m.udp6.no_ports.get(), 0);
    }

    #[test]
    fn no_ports_also_when_smoltcp_must_resolve_the_sender_first() {
        let mut w = Wire::unprimed();
        w.receive(udp_datagram(54));
        let m = &w.mib;
        // smoltcp sent an ARP request instead of its Port Unreachable.
        assert_eq!(m.udp.no_ports.get(), 1);
        assert_eq!(m.udp.in_datagrams.get(), 0);
        assert_eq!(m.icmp.out_msgs.get(), 0);
        w.bind_udp(53);
        w.receive(udp_datagram(53));
        assert_eq!(w.mib.udp.in_datagrams.get(), 1);
        assert_eq!(w.mib.udp.no_ports.get(), 1);
    }

    #[test]
    fn bad_udp_is_an_input_error() {
        let mut w = Wire::new();
        let mut f = udp_datagram(53);
        let n = f.len();
        f[n - 1] ^= 1;
        w.receive(f);
        assert_eq!(w.mib.udp.in_errors.get(), 1);
        assert_eq!(w.mib.udp.in_datagrams.get(), 0);
        assert_eq!(w.mib.udp.no_ports.get(), 0);
    }

    #[test]
    fn udp_sent_counts_out_datagrams() {
        let m = Mib::default();
        // Our own datagrams look the same as the peer's on the wire.
        m.count_tx(&udp_datagram(53));
        assert_eq!(m.ip.out_requests.get(), 1);
        assert_eq!(m.udp.out_datagrams.get(), 1);
        let icmp = Icmpv4Repr::EchoRequest {
            ident: 1,
            seq_no: 1,
            data: b"",
        };
        m.count_tx(&ipv4_frame(IpProtocol::Icmp, icmp.buffer_len(), |b| {
            icmp.emit(&mut Icmpv4Packet::new_unchecked(b), &csum())
        }));
        assert_eq!(m.icmp.out_echos.get(), 1);
    }

    #[test]
    fn fragments_are_received_but_not_yet_delivered() {
        let w = Wire::new();
        let mut f = udp_datagram(53);
        f[14 + 6] = 0x20; // more fragments
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
        ip.fill_checksum();
        let (verdict, seen) = classify_seen(&f, &local(), RxChecked::default());
        assert!(seen.fragment, "{verdict:?}");
        w.mib.count_rx(&verdict, &seen);
        assert_eq!(w.mib.ip.in_receives.get(), 1);
        assert_eq!(w.mib.ip.in_delivers.get(), 0);
        assert_eq!(w.mib.udp.in_datagrams.get(), 0);
        // Egress: only the first fragment counts the datagram.
        let m = Mib::default();
        m.count_tx(&f);
        let mut later = f.clone();
        later[14 + 7] = 0x10;
        m.count_tx(&later);
        assert_eq!(m.ip.out_requests.get(), 1);
    }

    #[test]
    fn arp_and_other_macs_are_not_ip() {
        let mut w = Wire::new();
        let mut other = echo_request(5);
        other[5] = 0x99;
        w.receive(other);
        let mut arp = vec![0u8; 42];
        arp[..6].copy_from_slice(&[0xff; 6]);
        arp[12] = 0x08;
        arp[13] = 0x06;
        w.receive(arp.clone());
        w.mib.count_tx(&arp);
        assert_eq!(w.mib.ip.in_receives.get(), 0);
        assert_eq!(w.mib.ip.out_requests.get(), 0);
    }

    #[test]
    fn any_damage_is_counted_without_panicking() {
        // Every truncation and every single-byte corruption of a few
        // frames, both directions.
        let frames = [
            echo_request(6),
            echo_request6(),
            tcp_segment(TcpControl::Syn, b"x"),
            udp_datagram(7),
        ];
        let m = Mib::default();
        let mut inspected = 0u64;
        for f in &frames {
            for len in 0..=f.len() {
                let (v, s) = classify_seen(&f[..len], &local(), RxChecked::default());
                m.count_rx(&v, &s);
                m.count_tx(&f[..len]);
                inspected += 1;
            }
            for i in 0..f.len() {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut g = f.clone();
                    g[i] ^= flip;
                    let (v, s) = classify_seen(&g, &local(), RxChecked::default());
                    m.count_rx(&v, &s);
                    m.count_tx(&g);
                    inspected += 1;
                }
            }
        }
        // Every IP frame was received by one family or the other.
        let received = m.ip.in_receives.get() + m.ip6.in_receives.get();
        assert!(received > 0 && received <= inspected);
    }
}
