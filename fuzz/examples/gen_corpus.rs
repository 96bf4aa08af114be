//! Writes the seed corpus of the `classify` fuzz target.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example gen_corpus [OUT_DIR]
//! ```
//!
//! OUT_DIR defaults to `fuzz/corpus/classify`; its files are replaced. Every
//! seed is a `lstack_fuzz::Header` (the stack's addresses and checksum-offload
//! flags) followed by an Ethernet frame. Good frames are built with smoltcp's
//! wire `Repr::emit` (so lengths and checksums are right) and addressed to the
//! header's addresses, so they reach the deepest checks; the malformed ones
//! are those frames with one thing broken. Each seed is run through
//! `classify` here and must get the verdict listed with it, so the corpus
//! really covers every branch it claims to.

use std::{fs, path::PathBuf};

use lstack::classify::{classify, DropReason, FlowKey, Verdict};
use lstack_fuzz::{flags, link_local, Header, Input};
use smoltcp::{
    phy::ChecksumCapabilities,
    wire::{
        ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
        EthernetRepr, Icmpv4Packet, Icmpv4Repr, Icmpv6Packet, Icmpv6Repr, IpAddress, IpProtocol,
        Ipv4Address, Ipv4Packet, Ipv4Repr, Ipv6Address, Ipv6Packet, Ipv6Repr, NdiscRepr,
        RawHardwareAddress, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, TcpTimestampRepr,
        UdpPacket, UdpRepr,
    },
};

const OUR_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x02]);
const PEER_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x01]);
const OUR_V4: Ipv4Address = Ipv4Address::new(10, 88, 0, 2);
const PEER_V4: Ipv4Address = Ipv4Address::new(10, 88, 0, 1);
const SUBNET_BROADCAST_V4: Ipv4Address = Ipv4Address::new(10, 88, 0, 255);
const OUR_V6: Ipv6Address = Ipv6Address::new(0xfd00, 0x88, 0, 0, 0, 0, 0, 2);
const PEER_V6: Ipv6Address = Ipv6Address::new(0xfd00, 0x88, 0, 0, 0, 0, 0, 1);
const PEER_LL: Ipv6Address = Ipv6Address::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

const ETH: usize = 14;
const IP4: usize = ETH + 20;
const IP6: usize = ETH + 40;

fn caps() -> ChecksumCapabilities {
    ChecksumCapabilities::default()
}

/// The header of most seeds: every address set, nothing checked by the NIC.
fn header() -> Header {
    Header {
        flags: flags::HAS_IPV4
            | flags::HAS_IPV4_BROADCAST
            | flags::HAS_IPV6
            | flags::HAS_IPV6_LINK_LOCAL,
        ipv4_prefix: 24,
        mac: OUR_MAC.0,
        ipv4: OUR_V4.octets(),
        ipv6: OUR_V6.octets(),
    }
}

fn eth(dst: EthernetAddress, ethertype: EthernetProtocol, payload: &[u8]) -> Vec<u8> {
    let repr = EthernetRepr {
        src_addr: PEER_MAC,
        dst_addr: dst,
        ethertype,
    };
    let mut buf = vec![0u8; repr.buffer_len() + payload.len()];
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    repr.emit(&mut f);
    f.payload_mut().copy_from_slice(payload);
    buf
}

fn ipv4(
    dst_mac: EthernetAddress,
    src: Ipv4Address,
    dst: Ipv4Address,
    proto: IpProtocol,
    l4: &[u8],
) -> Vec<u8> {
    let repr = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: proto,
        payload_len: l4.len(),
        hop_limit: 64,
    };
    let mut buf = vec![0u8; repr.buffer_len() + l4.len()];
    let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
    repr.emit(&mut p, &caps());
    p.payload_mut().copy_from_slice(l4);
    eth(dst_mac, EthernetProtocol::Ipv4, &buf)
}

fn ipv6(
    dst_mac: EthernetAddress,
    src: Ipv6Address,
    dst: Ipv6Address,
    next: IpProtocol,
    l4: &[u8],
) -> Vec<u8> {
    let repr = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: next,
        payload_len: l4.len(),
        hop_limit: 64,
    };
    let mut buf = vec![0u8; repr.buffer_len() + l4.len()];
    let mut p = Ipv6Packet::new_unchecked(&mut buf[..]);
    repr.emit(&mut p);
    p.payload_mut().copy_from_slice(l4);
    eth(dst_mac, EthernetProtocol::Ipv6, &buf)
}

fn tcp_repr(control: TcpControl, ack: Option<u32>, payload: &[u8]) -> TcpRepr<'_> {
    let syn = control == TcpControl::Syn;
    TcpRepr {
        src_port: 40000,
        dst_port: 80,
        control,
        seq_number: TcpSeqNumber(0x1000_0000),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: 64240,
        window_scale: syn.then_some(7),
        max_seg_size: syn.then_some(1460),
        sack_permitted: syn,
        sack_ranges: [None, None, None],
        timestamp: syn.then(|| TcpTimestampRepr::new(12345, 0)),
        payload,
    }
}

fn tcp(repr: &TcpRepr<'_>, src: IpAddress, dst: IpAddress) -> Vec<u8> {
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(
        &mut TcpPacket::new_unchecked(&mut buf[..]),
        &src,
        &dst,
        &caps(),
    );
    buf
}

fn udp(dst_port: u16, payload: &[u8], src: IpAddress, dst: IpAddress) -> Vec<u8> {
    let repr = UdpRepr {
        src_port: 5353,
        dst_port,
    };
    let mut buf = vec![0u8; repr.header_len() + payload.len()];
    repr.emit(
        &mut UdpPacket::new_unchecked(&mut buf[..]),
        &src,
        &dst,
        payload.len(),
        |b| b.copy_from_slice(payload),
        &caps(),
    );
    buf
}

fn icmpv4(repr: &Icmpv4Repr<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(&mut Icmpv4Packet::new_unchecked(&mut buf[..]), &caps());
    buf
}

fn icmpv6(repr: &Icmpv6Repr<'_>, src: Ipv6Address, dst: Ipv6Address) -> Vec<u8> {
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(
        &src,
        &dst,
        &mut Icmpv6Packet::new_unchecked(&mut buf[..]),
        &caps(),
    );
    buf
}

fn arp(op: ArpOperation, dst_mac: EthernetAddress, target_mac: EthernetAddress) -> Vec<u8> {
    let repr = ArpRepr::EthernetIpv4 {
        operation: op,
        source_hardware_addr: PEER_MAC,
        source_protocol_addr: PEER_V4,
        target_hardware_addr: target_mac,
        target_protocol_addr: OUR_V4,
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(&mut ArpPacket::new_unchecked(&mut buf[..]));
    eth(dst_mac, EthernetProtocol::Arp, &buf)
}

/// The Internet checksum of `data`.
fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Recomputes the IPv4 header checksum after an edit of the header.
fn fix_ipv4_checksum(frame: &mut [u8]) {
    let mut p = Ipv4Packet::new_unchecked(&mut frame[ETH..]);
    p.fill_checksum();
}

fn v4(a: Ipv4Address) -> IpAddress {
    IpAddress::Ipv4(a)
}

fn v6(a: Ipv6Address) -> IpAddress {
    IpAddress::Ipv6(a)
}

struct Seed {
    name: &'static str,
    header: Header,
    frame: Vec<u8>,
    expect: Verdict,
}

fn seeds() -> Vec<Seed> {
    let our_ll = link_local(OUR_MAC);
    let flow4 = FlowKey {
        local_addr: v4(OUR_V4),
        local_port: 80,
        remote_addr: v4(PEER_V4),
        remote_port: 40000,
    };
    let flow6 = FlowKey {
        local_addr: v6(OUR_V6),
        remote_addr: v6(PEER_V6),
        ..flow4
    };
    let drop = Verdict::Drop;
    let control = |broadcast| Verdict::Control { broadcast };
    let tcp_v4 = |syn| Verdict::Tcp { flow: flow4, syn };

    let syn = tcp_repr(TcpControl::Syn, None, &[]);
    let data = tcp_repr(
        TcpControl::Psh,
        Some(1),
        b"GET / HTTP/1.1\r\nHost: lstack\r\n\r\n",
    );
    let syn4 = ipv4(
        OUR_MAC,
        PEER_V4,
        OUR_V4,
        IpProtocol::Tcp,
        &tcp(&syn, v4(PEER_V4), v4(OUR_V4)),
    );
    let data4 = ipv4(
        OUR_MAC,
        PEER_V4,
        OUR_V4,
        IpProtocol::Tcp,
        &tcp(&data, v4(PEER_V4), v4(OUR_V4)),
    );
    let udp4 = ipv4(
        OUR_MAC,
        PEER_V4,
        OUR_V4,
        IpProtocol::Udp,
        &udp(
            53,
            b"\x12\x34\x01\x00\x00\x01\x00\x00",
            v4(PEER_V4),
            v4(OUR_V4),
        ),
    );
    let echo4 = ipv4(
        OUR_MAC,
        PEER_V4,
        OUR_V4,
        IpProtocol::Icmp,
        &icmpv4(&Icmpv4Repr::EchoRequest {
            ident: 0x4c53,
            seq_no: 1,
            data: b"lstack ping",
        }),
    );
    let syn6 = ipv6(
        OUR_MAC,
        PEER_V6,
        OUR_V6,
        IpProtocol::Tcp,
        &tcp(&syn, v6(PEER_V6), v6(OUR_V6)),
    );
    let udp6 = ipv6(
        OUR_MAC,
        PEER_V6,
        OUR_V6,
        IpProtocol::Udp,
        &udp(9000, b"datagram", v6(PEER_V6), v6(OUR_V6)),
    );
    let with = |mut f: Vec<u8>, edit: &dyn Fn(&mut Vec<u8>)| {
        edit(&mut f);
        f
    };

    let mut out = vec![
        // ---- good frames ----
        Seed {
            name: "arp-request",
            header: header(),
            frame: arp(
                ArpOperation::Request,
                EthernetAddress::BROADCAST,
                EthernetAddress([0; 6]),
            ),
            expect: control(true),
        },
        Seed {
            name: "arp-reply",
            header: header(),
            frame: arp(ArpOperation::Reply, OUR_MAC, OUR_MAC),
            expect: control(true),
        },
        Seed {
            name: "ipv4-tcp-syn",
            header: header(),
            frame: syn4.clone(),
            expect: tcp_v4(true),
        },
        Seed {
            name: "ipv4-tcp-data",
            header: header(),
            frame: data4.clone(),
            expect: tcp_v4(false),
        },
        Seed {
            // A SYN-ACK is no connection request; 54 bytes padded to Ethernet's 60.
            name: "ipv4-tcp-synack-padded",
            header: header(),
            frame: with(
                ipv4(
                    OUR_MAC,
                    PEER_V4,
                    OUR_V4,
                    IpProtocol::Tcp,
                    &tcp(
                        &TcpRepr {
                            window_scale: None,
                            max_seg_size: None,
                            sack_permitted: false,
                            timestamp: None,
                            ..tcp_repr(TcpControl::Syn, Some(1), &[])
                        },
                        v4(PEER_V4),
                        v4(OUR_V4),
                    ),
                ),
                &|f| f.resize(60, 0),
            ),
            expect: tcp_v4(false),
        },
        Seed {
            // Checksums left to the NIC (zero in the frame), which says they are good.
            name: "ipv4-tcp-offloaded",
            header: Header {
                flags: header().flags | flags::IP_GOOD | flags::L4_GOOD,
                ..header()
            },
            frame: with(data4.clone(), &|f| {
                f[ETH + 10..ETH + 12].fill(0);
                f[IP4 + 16..IP4 + 18].fill(0);
            }),
            expect: tcp_v4(false),
        },
        Seed {
            name: "ipv4-udp",
            header: header(),
            frame: udp4.clone(),
            expect: Verdict::Udp { port: 53 },
        },
        Seed {
            name: "ipv4-udp-subnet-broadcast",
            header: header(),
            frame: ipv4(
                EthernetAddress::BROADCAST,
                PEER_V4,
                SUBNET_BROADCAST_V4,
                IpProtocol::Udp,
                &udp(137, b"netbios?", v4(PEER_V4), v4(SUBNET_BROADCAST_V4)),
            ),
            expect: Verdict::Udp { port: 137 },
        },
        Seed {
            // IPv4 allows "no checksum".
            name: "ipv4-udp-zero-checksum",
            header: header(),
            frame: with(udp4.clone(), &|f| f[IP4 + 6..IP4 + 8].fill(0)),
            expect: Verdict::Udp { port: 53 },
        },
        Seed {
            name: "ipv4-icmp-echo",
            header: header(),
            frame: echo4.clone(),
            expect: control(false),
        },
        Seed {
            name: "ipv4-fragment-first",
            header: header(),
            frame: with(udp4.clone(), &|f| {
                Ipv4Packet::new_unchecked(&mut f[ETH..]).set_more_frags(true);
                fix_ipv4_checksum(f);
            }),
            expect: control(false),
        },
        Seed {
            name: "ipv4-fragment-last",
            header: header(),
            frame: with(udp4.clone(), &|f| {
                Ipv4Packet::new_unchecked(&mut f[ETH..]).set_frag_offset(1480);
                fix_ipv4_checksum(f);
            }),
            expect: control(false),
        },
        Seed {
            name: "ipv4-igmp-query",
            header: header(),
            frame: {
                let mut igmp = [0x11, 100, 0, 0, 0, 0, 0, 0];
                let c = inet_checksum(&igmp);
                igmp[2..4].copy_from_slice(&c.to_be_bytes());
                ipv4(
                    EthernetAddress([0x01, 0x00, 0x5e, 0, 0, 1]),
                    PEER_V4,
                    Ipv4Address::new(224, 0, 0, 1),
                    IpProtocol::Igmp,
                    &igmp,
                )
            },
            expect: control(false),
        },
        Seed {
            name: "ipv6-tcp-syn",
            header: header(),
            frame: syn6.clone(),
            expect: Verdict::Tcp {
                flow: flow6,
                syn: true,
            },
        },
        Seed {
            name: "ipv6-tcp-data-link-local",
            header: header(),
            frame: ipv6(
                OUR_MAC,
                PEER_LL,
                our_ll,
                IpProtocol::Tcp,
                &tcp(&data, v6(PEER_LL), v6(our_ll)),
            ),
            expect: Verdict::Tcp {
                flow: FlowKey {
                    local_addr: v6(our_ll),
                    remote_addr: v6(PEER_LL),
                    ..flow4
                },
                syn: false,
            },
        },
        Seed {
            name: "ipv6-udp",
            header: header(),
            frame: udp6.clone(),
            expect: Verdict::Udp { port: 9000 },
        },
        Seed {
            name: "ipv6-icmp-echo",
            header: header(),
            frame: ipv6(
                OUR_MAC,
                PEER_V6,
                OUR_V6,
                IpProtocol::Icmpv6,
                &icmpv6(
                    &Icmpv6Repr::EchoRequest {
                        ident: 0x4c53,
                        seq_no: 1,
                        data: b"lstack ping6",
                    },
                    PEER_V6,
                    OUR_V6,
                ),
            ),
            expect: control(false),
        },
        Seed {
            name: "ipv6-ndp-neighbor-solicit",
            header: header(),
            frame: {
                // To our solicited-node multicast group.
                let group = Ipv6Address::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 0x0002);
                let ns = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
                    target_addr: our_ll,
                    lladdr: Some(RawHardwareAddress::from(PEER_MAC)),
                });
                let mut f = ipv6(
                    EthernetAddress([0x33, 0x33, 0xff, 0, 0, 0x02]),
                    PEER_LL,
                    group,
                    IpProtocol::Icmpv6,
                    &icmpv6(&ns, PEER_LL, group),
                );
                f[ETH + 7] = 255; // NDP's hop limit
                f
            },
            expect: control(true),
        },
        Seed {
            // Hop-by-hop options (router alert) before an MLDv2 report: smoltcp's to parse.
            name: "ipv6-hop-by-hop-mld",
            header: header(),
            frame: ipv6(
                EthernetAddress([0x33, 0x33, 0, 0, 0, 0x16]),
                our_ll,
                Ipv6Address::new(0xff02, 0, 0, 0, 0, 0, 0, 0x16),
                IpProtocol::HopByHop,
                &[58, 0, 5, 2, 0, 0, 1, 0, 143, 0, 0, 0, 0, 0, 0, 0],
            ),
            expect: control(false),
        },
        Seed {
            name: "ipv6-fragment",
            header: header(),
            frame: ipv6(
                OUR_MAC,
                PEER_V6,
                OUR_V6,
                IpProtocol::Ipv6Frag,
                &[
                    17, 0, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef, 0x13, 0x88, 0x23, 0x28, 0, 16, 0, 0,
                ],
            ),
            expect: control(false),
        },
        Seed {
            // Header addresses unset: taken from the frame (flags::ADOPT_FRAME).
            name: "adopt-frame-ipv6-tcp",
            header: Header {
                flags: flags::HAS_IPV6 | flags::ADOPT_FRAME,
                ipv4_prefix: 0,
                mac: [0; 6],
                ipv4: [0; 4],
                ipv6: [0; 16],
            },
            frame: syn6.clone(),
            expect: Verdict::Tcp {
                flow: flow6,
                syn: true,
            },
        },
        // ---- malformed or not ours ----
        Seed {
            name: "eth-truncated",
            header: header(),
            frame: syn4[..13].to_vec(),
            expect: drop(DropReason::EthernetTruncated),
        },
        Seed {
            name: "eth-vlan-tagged",
            header: header(),
            frame: with(syn4.clone(), &|f| {
                f.splice(12..12, [0x81, 0x00, 0x00, 0x64]);
            }),
            expect: drop(DropReason::UnknownEthertype),
        },
        Seed {
            name: "eth-unknown-ethertype-lldp",
            header: header(),
            frame: {
                let mut f = eth(
                    EthernetAddress([0x01, 0x80, 0xc2, 0, 0, 0x0e]),
                    EthernetProtocol::Unknown(0x88cc),
                    &[
                        0x02, 0x07, 0x04, 0x02, 0, 0, 0, 0, 0x01, 0x04, 0x03, 0x05, 0x01, 0x31, 0,
                        0,
                    ],
                );
                f.resize(60, 0);
                f
            },
            expect: drop(DropReason::UnknownEthertype),
        },
        Seed {
            name: "eth-not-our-mac",
            header: header(),
            frame: with(syn4.clone(), &|f| f[5] = 0x99),
            expect: drop(DropReason::NotOurMac),
        },
        Seed {
            name: "arp-bad-address-lengths",
            header: header(),
            frame: with(
                arp(ArpOperation::Request, EthernetAddress::BROADCAST, OUR_MAC),
                &|f| f[ETH + 4] = 8,
            ),
            expect: drop(DropReason::ArpMalformed),
        },
        Seed {
            name: "ipv4-bad-header-checksum",
            header: header(),
            frame: with(syn4.clone(), &|f| f[ETH + 8] = 1),
            expect: drop(DropReason::Ipv4BadChecksum),
        },
        Seed {
            name: "ipv4-total-length-too-big",
            header: header(),
            frame: with(syn4.clone(), &|f| {
                f[ETH + 2..ETH + 4].copy_from_slice(&1500u16.to_be_bytes());
                fix_ipv4_checksum(f);
            }),
            expect: drop(DropReason::Ipv4Truncated),
        },
        Seed {
            name: "ipv4-header-length-too-small",
            header: header(),
            frame: with(syn4.clone(), &|f| {
                f[ETH] = 0x44;
                fix_ipv4_checksum(f);
            }),
            expect: drop(DropReason::Ipv4Malformed),
        },
        Seed {
            name: "ipv4-not-ours",
            header: header(),
            frame: ipv4(
                OUR_MAC,
                PEER_V4,
                Ipv4Address::new(10, 88, 0, 3),
                IpProtocol::Tcp,
                &tcp(&syn, v4(PEER_V4), v4(Ipv4Address::new(10, 88, 0, 3))),
            ),
            expect: drop(DropReason::Ipv4NotOurs),
        },
        Seed {
            name: "ipv4-broadcast-source",
            header: header(),
            frame: ipv4(
                OUR_MAC,
                Ipv4Address::BROADCAST,
                OUR_V4,
                IpProtocol::Udp,
                &udp(53, b"x", v4(Ipv4Address::BROADCAST), v4(OUR_V4)),
            ),
            expect: drop(DropReason::BadSource),
        },
        Seed {
            name: "ipv4-tcp-bad-checksum",
            header: header(),
            frame: with(data4.clone(), &|f| *f.last_mut().unwrap() ^= 0xff),
            expect: drop(DropReason::TcpBadChecksum),
        },
        Seed {
            name: "ipv4-tcp-bad-data-offset",
            header: header(),
            frame: with(syn4.clone(), &|f| f[IP4 + 12] = 0xf0),
            expect: drop(DropReason::TcpMalformed),
        },
        Seed {
            // The IP packet ends 12 bytes into the TCP header.
            name: "ipv4-tcp-short-header",
            header: header(),
            frame: with(syn4.clone(), &|f| {
                f.truncate(IP4 + 12);
                f[ETH + 2..ETH + 4].copy_from_slice(&32u16.to_be_bytes());
                fix_ipv4_checksum(f);
            }),
            expect: drop(DropReason::TcpMalformed),
        },
        Seed {
            name: "ipv4-udp-length-too-big",
            header: header(),
            frame: with(udp4.clone(), &|f| {
                f[IP4 + 4..IP4 + 6].copy_from_slice(&200u16.to_be_bytes())
            }),
            expect: drop(DropReason::UdpMalformed),
        },
        Seed {
            name: "ipv4-udp-bad-checksum",
            header: header(),
            frame: with(udp4.clone(), &|f| *f.last_mut().unwrap() ^= 0x55),
            expect: drop(DropReason::UdpBadChecksum),
        },
        Seed {
            name: "ipv4-icmp-bad-checksum",
            header: header(),
            frame: with(echo4.clone(), &|f| *f.last_mut().unwrap() ^= 0x55),
            expect: drop(DropReason::IcmpBadChecksum),
        },
        Seed {
            name: "ipv4-unsupported-protocol-gre",
            header: header(),
            frame: ipv4(
                OUR_MAC,
                PEER_V4,
                OUR_V4,
                IpProtocol::Unknown(47),
                &[0, 0, 0x08, 0x00],
            ),
            expect: drop(DropReason::UnsupportedProtocol),
        },
        Seed {
            name: "ipv6-payload-length-too-big",
            header: header(),
            frame: with(udp6.clone(), &|f| {
                f[ETH + 4..ETH + 6].copy_from_slice(&1000u16.to_be_bytes())
            }),
            expect: drop(DropReason::Ipv6Truncated),
        },
        Seed {
            name: "ipv6-not-ours",
            header: header(),
            frame: with(syn6.clone(), &|f| f[IP6 - 1] = 0x03),
            expect: drop(DropReason::Ipv6NotOurs),
        },
        Seed {
            // Forbidden over IPv6, even when the NIC says the checksum is fine.
            name: "ipv6-udp-zero-checksum",
            header: Header {
                flags: header().flags | flags::L4_GOOD,
                ..header()
            },
            frame: with(udp6.clone(), &|f| f[IP6 + 6..IP6 + 8].fill(0)),
            expect: drop(DropReason::UdpBadChecksum),
        },
    ];
    out.sort_by_key(|s| s.name);
    out
}

fn main() {
    let out_dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("corpus")
                .join("classify")
        });
    let seeds = seeds();

    // Check every seed before touching the directory.
    let mut failed = false;
    for seed in &seeds {
        let mut bytes = seed.header.to_bytes().to_vec();
        bytes.extend_from_slice(&seed.frame);
        let input = Input::decode(&bytes).expect("a header");
        let got = classify(input.frame, &input.local, input.checked);
        if got != seed.expect {
            eprintln!(
                "{}: expected {:?}, classify says {:?}",
                seed.name, seed.expect, got
            );
            failed = true;
        }
        assert!(bytes.len() < 2048, "{}: {} bytes", seed.name, bytes.len());
    }
    if failed {
        eprintln!("gen_corpus: some seeds do not get their expected verdict; nothing written");
        std::process::exit(1);
    }

    fs::create_dir_all(&out_dir).expect("creating the corpus directory");
    for entry in fs::read_dir(&out_dir).expect("reading the corpus directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_file() {
            fs::remove_file(&path).expect("removing an old seed");
        }
    }
    for seed in &seeds {
        let mut bytes = seed.header.to_bytes().to_vec();
        bytes.extend_from_slice(&seed.frame);
        fs::write(out_dir.join(seed.name), &bytes).expect("writing a seed");
        println!("{:>5} B  {:<30} {:?}", bytes.len(), seed.name, seed.expect);
    }
    println!("{} seeds written to {}", seeds.len(), out_dir.display());
}
