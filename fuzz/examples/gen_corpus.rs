//! Writes the seed corpora of the fuzz targets.
//!
//! ```text
//! cargo run --release --manifest-path fuzz/Cargo.toml --example gen_corpus [TARGET [OUT_DIR]]
//! ```
//!
//! TARGET is `classify`, `ingest` or `all` (the default); OUT_DIR (only with
//! one target) defaults to `fuzz/corpus/TARGET`. The files of the directory
//! are replaced.
//!
//! `classify`: every seed is a `lstack_fuzz::Header` (the stack's addresses
//! and checksum-offload flags) followed by an Ethernet frame. Good frames are
//! built with smoltcp's wire `Repr::emit` (so lengths and checksums are
//! right) and addressed to the header's addresses, so they reach the deepest
//! checks; the malformed ones are those frames with one thing broken. Each
//! seed is run through `classify` here and must get the verdict listed with
//! it, so the corpus really covers every branch it claims to.
//!
//! `ingest`: the same header, then records of frames (`lstack_fuzz::ingest`):
//! every `classify` seed as one record, and conversations with the stack
//! that the harness sets up (a SYN, data, FIN, RST on the established
//! connection, out-of-order and overlapping segments, UDP, ICMP echo, NDP,
//! ARP, an IPv4 fragment pair, timers). Each is run through the harness here,
//! which must not panic, and must make the stack answer as listed with it.

use std::{
    fs,
    path::{Path, PathBuf},
};

use lstack::classify::{classify, DropReason, FlowKey, Verdict};
use lstack_fuzz::{
    flags, ingest,
    ingest::{action, Harness, Link, Record},
    link_local, Header, Input,
};
use smoltcp::{
    phy::ChecksumCapabilities,
    socket::tcp::State as TcpState,
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

// ---------------------------------------------------------------------------
// ingest
// ---------------------------------------------------------------------------

/// A frame smoltcp transmitted, as far as the expectations need it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    Arp(ArpOperation),
    Tcp {
        src: u16,
        dst: u16,
        seq: u32,
        flags: u8,
        payload: Vec<u8>,
    },
    Udp {
        src: u16,
        dst: u16,
        payload: Vec<u8>,
    },
    /// ICMP or ICMPv6 message type.
    Icmp(u8),
    Icmpv6(u8),
    Other,
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

fn parse_sent(frame: &[u8]) -> Sent {
    let eth = EthernetFrame::new_checked(frame).expect("an Ethernet frame");
    let (proto, l4) = match eth.ethertype() {
        EthernetProtocol::Arp => {
            let arp =
                ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).expect("ARP")).expect("ARP");
            let ArpRepr::EthernetIpv4 { operation, .. } = arp else {
                return Sent::Other;
            };
            return Sent::Arp(operation);
        }
        EthernetProtocol::Ipv4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).expect("IPv4");
            if ip.more_frags() || ip.frag_offset() != 0 {
                return Sent::Other;
            }
            let hl = usize::from(ip.header_len());
            let total = usize::from(ip.total_len());
            (ip.next_header(), &eth.payload()[hl..total])
        }
        EthernetProtocol::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).expect("IPv6");
            let len = usize::from(ip.payload_len());
            (ip.next_header(), &eth.payload()[40..40 + len])
        }
        _ => return Sent::Other,
    };
    match proto {
        IpProtocol::Tcp => {
            let t = TcpPacket::new_checked(l4).expect("TCP");
            let flags = u8::from(t.fin())
                | u8::from(t.syn()) << 1
                | u8::from(t.rst()) << 2
                | u8::from(t.ack()) << 4;
            Sent::Tcp {
                src: t.src_port(),
                dst: t.dst_port(),
                seq: t.seq_number().0 as u32,
                flags,
                payload: t.payload().to_vec(),
            }
        }
        IpProtocol::Udp => {
            let u = UdpPacket::new_checked(l4).expect("UDP");
            Sent::Udp {
                src: u.src_port(),
                dst: u.dst_port(),
                payload: u.payload().to_vec(),
            }
        }
        IpProtocol::Icmp => Sent::Icmp(l4[0]),
        IpProtocol::Icmpv6 => Sent::Icmpv6(l4[0]),
        _ => Sent::Other,
    }
}

/// What a seed made the stack do.
#[derive(Debug)]
struct Outcome {
    /// Frames sent after the set-up.
    sent: Vec<Sent>,
    /// The set-up connection's state at the end (`None`: gone).
    conn: Option<TcpState>,
}

impl Outcome {
    /// The payload bytes of our TCP segments to `port`, in order of sending
    /// and without repeats of a sequence number.
    fn tcp_stream_to(&self, port: u16) -> Vec<u8> {
        let mut seen = Vec::new();
        let mut out = Vec::new();
        for s in &self.sent {
            if let Sent::Tcp {
                dst, seq, payload, ..
            } = s
            {
                if *dst == port && !payload.is_empty() && !seen.contains(seq) {
                    seen.push(*seq);
                    out.extend_from_slice(payload);
                }
            }
        }
        out
    }

    fn tcp_flags_to(&self, port: u16, flags: u8) -> bool {
        self.sent.iter().any(
            |s| matches!(s, Sent::Tcp { dst, flags: f, .. } if *dst == port && f & flags == flags),
        )
    }
}

type Expect = Box<dyn Fn(&Outcome) -> bool>;

struct IngestSeed {
    name: String,
    bytes: Vec<u8>,
    /// What it must do, in words and as a check.
    expect: (&'static str, Expect),
}

fn run_ingest(bytes: &[u8]) -> Outcome {
    let (header, rest) = Header::parse(bytes).expect("a header");
    let mut h = Harness::with_log(&header);
    let setup = h.tx.log.as_ref().map_or(0, Vec::len);
    for r in ingest::records(rest) {
        h.step(&r);
    }
    h.finish();
    let log = h.tx.log.take().unwrap_or_default();
    Outcome {
        sent: log[setup..].iter().map(|f| parse_sent(f)).collect(),
        conn: h.conn_state(),
    }
}

/// An input: `header`, then `(delay, actions, frame)` records.
fn records(header: &Header, records: &[(u8, u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = header.to_bytes().to_vec();
    for (delay, actions, frame) in records {
        Record {
            delay: *delay,
            actions: *actions,
            frame,
        }
        .encode(&mut out);
    }
    out
}

/// Splits the IPv4 payload of `frame` into fragments at `at` (a multiple of
/// 8), ident `ident`.
fn fragment_ipv4(frame: &[u8], at: usize, ident: u16) -> [Vec<u8>; 2] {
    let ip = Ipv4Packet::new_checked(&frame[ETH..]).expect("IPv4");
    let hl = usize::from(ip.header_len());
    let payload = ip.payload().to_vec();
    assert_eq!(at % 8, 0);
    let make = |part: &[u8], offset: usize, more: bool| {
        let mut f = frame[..ETH + hl].to_vec();
        f.extend_from_slice(part);
        let mut p = Ipv4Packet::new_unchecked(&mut f[ETH..]);
        p.set_total_len((hl + part.len()) as u16);
        p.set_ident(ident);
        p.set_dont_frag(false);
        p.set_more_frags(more);
        p.set_frag_offset(offset as u16);
        p.fill_checksum();
        f
    };
    [
        make(&payload[..at], 0, true),
        make(&payload[at..], at, false),
    ]
}

fn ingest_seeds() -> Vec<IngestSeed> {
    // Checksums filled in by the harness, so that mutations reach smoltcp.
    let hdr = Header {
        flags: header().flags | flags::FIX_CHECKSUMS,
        ..header()
    };
    let base = Harness::new(&hdr);
    let isn = base
        .our_isn
        .expect("the harness sets up a connection with the standard header");
    assert_eq!(
        base.conn_state(),
        Some(TcpState::Established),
        "the set-up connection is established"
    );
    let link = base.flow().expect("a set-up connection");
    let peer_seq = ingest::PEER_ISN.wrapping_add(1);
    let our_seq = isn.wrapping_add(1);
    let rw = action::READ | action::ECHO;
    let data = |seq: u32, payload: &'static [u8]| {
        link.tcp(&ingest::segment(
            TcpControl::Psh,
            seq,
            Some(our_seq),
            payload,
        ))
    };
    let peer = ingest::PEER_PORT;
    let mut out: Vec<IngestSeed> = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>, what: &'static str, check: Expect| {
        out.push(IngestSeed {
            name: name.to_string(),
            bytes,
            expect: (what, check),
        })
    };

    // Every classify seed, as the one frame of an input.
    for s in seeds() {
        add(
            &format!("classify-{}", s.name),
            records(&s.header, &[(0, rw, s.frame)]),
            "no panic",
            Box::new(|_| true),
        );
    }

    add(
        "tcp-syn-port7",
        records(
            &hdr,
            &[(
                1,
                rw,
                link.tcp(&TcpRepr {
                    src_port: peer + 1,
                    ..ingest::peer_syn()
                }),
            )],
        ),
        "a SYN-ACK to the new port",
        Box::new(move |o| o.tcp_flags_to(peer + 1, SYN | ACK)),
    );
    add(
        "tcp-data-echo",
        records(&hdr, &[(1, rw, data(peer_seq, b"hello lstack\n"))]),
        "the data echoed back",
        Box::new(|o| o.tcp_stream_to(ingest::PEER_PORT) == b"hello lstack\n"),
    );
    add(
        "tcp-out-of-order-overlap",
        records(
            &hdr,
            &[
                // 20..30 first, then 5..20, then 0..10 overlapping it.
                (1, rw, data(peer_seq + 20, b"uvwxyz0123")),
                (2, rw, data(peer_seq + 5, b"fghijklmnopqrst")),
                (3, rw, data(peer_seq, b"abcdefghij")),
            ],
        ),
        "the 30 bytes echoed back in order",
        Box::new(|o| o.tcp_stream_to(ingest::PEER_PORT) == b"abcdefghijklmnopqrstuvwxyz0123"),
    );
    add(
        "tcp-peer-fin-then-close",
        records(
            &hdr,
            &[
                (
                    1,
                    rw,
                    link.tcp(&ingest::segment(
                        TcpControl::Fin,
                        peer_seq,
                        Some(our_seq),
                        &[],
                    )),
                ),
                (2, rw | action::CLOSE, Vec::new()),
                (
                    3,
                    0,
                    link.tcp(&ingest::segment(
                        TcpControl::None,
                        peer_seq + 1,
                        Some(our_seq + 1),
                        &[],
                    )),
                ),
            ],
        ),
        "our FIN, then the connection gone",
        Box::new(|o| o.tcp_flags_to(ingest::PEER_PORT, FIN) && o.conn.is_none()),
    );
    add(
        "tcp-close-time-wait",
        records(
            &hdr,
            &[
                (1, action::CLOSE, Vec::new()),
                (
                    2,
                    rw,
                    link.tcp(&ingest::segment(
                        TcpControl::Fin,
                        peer_seq,
                        Some(our_seq + 1),
                        &[],
                    )),
                ),
            ],
        ),
        "our FIN, TIME-WAIT, then closed by the timer",
        Box::new(|o| o.tcp_flags_to(ingest::PEER_PORT, FIN) && o.conn.is_none()),
    );
    add(
        "tcp-rst",
        records(
            &hdr,
            &[(
                1,
                rw,
                link.tcp(&ingest::segment(TcpControl::Rst, peer_seq, None, &[])),
            )],
        ),
        "the connection gone",
        Box::new(|o| o.conn.is_none()),
    );
    add(
        "tcp-abort",
        records(&hdr, &[(1, action::ABORT, Vec::new())]),
        "an RST to the peer",
        Box::new(|o| o.tcp_flags_to(ingest::PEER_PORT, RST) && o.conn.is_none()),
    );
    add(
        "tcp-send-retransmit",
        records(
            &hdr,
            &[
                (1, action::SEND | (3 << action::SIZE_SHIFT), Vec::new()),
                (128 + 4, 0, Vec::new()),
            ],
        ),
        "128 bytes sent twice (retransmission timer)",
        Box::new(|o| {
            o.sent
                .iter()
                .filter(|s| matches!(s, Sent::Tcp { payload, .. } if payload.len() == 128))
                .count()
                >= 2
        }),
    );
    add(
        "tcp-send-acked",
        records(
            &hdr,
            &[
                (1, action::SEND | (7 << action::SIZE_SHIFT), Vec::new()),
                (
                    5,
                    rw,
                    link.tcp(&ingest::segment(
                        TcpControl::Psh,
                        peer_seq,
                        // The first full segment: MSS 1460 less the
                        // timestamp option the stack's sockets add.
                        Some(our_seq + 1448),
                        b"thanks",
                    )),
                ),
            ],
        ),
        "2048 bytes sent (1448 + the rest once acked), then the reply echoed",
        Box::new(|o| {
            let s = o.tcp_stream_to(ingest::PEER_PORT);
            s.len() == 2048 + 6 && s.ends_with(b"thanks")
        }),
    );
    add(
        "udp-echo-port7",
        records(&hdr, &[(1, rw, link.udp(5353, 7, b"udp to port 7"))]),
        "the datagram echoed back",
        Box::new(|o| {
            o.sent.iter().any(
                |s| matches!(s, Sent::Udp { src: 7, dst: 5353, payload } if payload == b"udp to port 7"),
            )
        }),
    );
    add(
        "udp-closed-port",
        records(&hdr, &[(1, rw, link.udp(5353, 9, b"nobody"))]),
        "ICMP port unreachable",
        Box::new(|o| o.sent.contains(&Sent::Icmp(3))),
    );
    {
        let udp = link.udp_datagram(5353, 7, &[0x5a; 64]);
        let whole = link.frame(IpProtocol::Udp, &udp);
        let [a, b] = fragment_ipv4(&whole, 32, 0x4242);
        add(
            "ipv4-fragment-pair-udp",
            records(&hdr, &[(1, 0, a), (2, rw, b)]),
            "the reassembled datagram echoed back",
            Box::new(|o| {
                o.sent.iter().any(
                    |s| matches!(s, Sent::Udp { src: 7, payload, .. } if payload == &[0x5a; 64]),
                )
            }),
        );
    }
    add(
        "icmpv4-echo-socket",
        records(
            &hdr,
            &[(
                1,
                rw,
                link.echo_request(ingest::ICMP_IDENT, 1, b"ping lstack"),
            )],
        ),
        "an echo reply",
        Box::new(|o| o.sent.contains(&Sent::Icmp(0))),
    );
    let link6 = Link {
        ours: v6(OUR_V6),
        peer: v6(PEER_V6),
        ..link
    };
    add(
        "icmpv6-echo",
        records(
            &hdr,
            &[(1, rw, link6.echo_request(0x1234, 1, b"ping6 lstack"))],
        ),
        "an echo reply",
        Box::new(|o| o.sent.contains(&Sent::Icmpv6(129))),
    );
    add(
        "ndp-neighbor-solicit",
        records(
            &hdr,
            &[(
                1,
                0,
                ingest::neighbor_solicit(
                    EthernetAddress([0x02, 0, 0, 0, 0, 0x99]),
                    Ipv6Address::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x99),
                    link_local(OUR_MAC),
                ),
            )],
        ),
        "a neighbour advertisement",
        Box::new(|o| o.sent.contains(&Sent::Icmpv6(136))),
    );
    add(
        "arp-request-for-us",
        records(
            &hdr,
            &[(
                1,
                0,
                ingest::arp_request(
                    EthernetAddress([0x02, 0, 0, 0, 0, 0x05]),
                    Ipv4Address::new(10, 88, 0, 5),
                    OUR_V4,
                ),
            )],
        ),
        "an ARP reply",
        Box::new(|o| o.sent.contains(&Sent::Arp(ArpOperation::Reply))),
    );
    {
        // Without an IPv4 address the set-up connection runs over IPv6.
        let hdr6 = Header {
            flags: hdr.flags & !(flags::HAS_IPV4 | flags::HAS_IPV4_BROADCAST),
            ..hdr
        };
        let h6 = Harness::new(&hdr6);
        let link = h6.flow().expect("an IPv6 set-up connection");
        assert!(matches!(link.ours, IpAddress::Ipv6(_)));
        assert_eq!(h6.conn_state(), Some(TcpState::Established));
        let our_seq = h6.our_isn.expect("a SYN-ACK").wrapping_add(1);
        add(
            "ipv6-tcp-data-echo",
            records(
                &hdr6,
                &[(
                    1,
                    rw,
                    link.tcp(&ingest::segment(
                        TcpControl::Psh,
                        peer_seq,
                        Some(our_seq),
                        b"hello over IPv6\n",
                    )),
                )],
            ),
            "the data echoed back",
            Box::new(|o| o.tcp_stream_to(ingest::PEER_PORT) == b"hello over IPv6\n"),
        );
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

// ---------------------------------------------------------------------------

fn classify_corpus() -> Result<Vec<(String, Vec<u8>, String)>, ()> {
    let mut failed = false;
    let mut out = Vec::new();
    for seed in seeds() {
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
        out.push((seed.name.to_string(), bytes, format!("{:?}", seed.expect)));
    }
    if failed {
        return Err(());
    }
    Ok(out)
}

/// `ingest::fix_checksums` keeps good frames good and mends bad checksums.
fn check_fix_checksums() -> bool {
    let mut ok = true;
    for s in seeds() {
        let mut fixed = s.frame.clone();
        ingest::fix_checksums(&mut fixed);
        let mut bytes = s.header.to_bytes().to_vec();
        bytes.extend_from_slice(&fixed);
        let input = Input::decode(&bytes).expect("a header");
        let got = classify(input.frame, &input.local, input.checked);
        let bad_checksum = matches!(
            got,
            Verdict::Drop(
                DropReason::Ipv4BadChecksum
                    | DropReason::TcpBadChecksum
                    | DropReason::IcmpBadChecksum
                    | DropReason::UdpBadChecksum
            )
        );
        let want_same = !matches!(s.expect, Verdict::Drop(_));
        let zero_udp_v6 = s.name == "ipv6-udp-zero-checksum";
        if (want_same && got != s.expect) || (bad_checksum && !zero_udp_v6) {
            eprintln!(
                "{}: after fix_checksums classify says {got:?} (seed: {:?})",
                s.name, s.expect
            );
            ok = false;
        }
    }
    ok
}

fn ingest_corpus() -> Result<Vec<(String, Vec<u8>, String)>, ()> {
    let mut failed = !check_fix_checksums();
    let mut out = Vec::new();
    for seed in ingest_seeds() {
        let outcome = run_ingest(&seed.bytes);
        let (what, check) = &seed.expect;
        if !check(&outcome) {
            eprintln!(
                "{}: expected {what}; the stack sent {:?}, connection {:?}",
                seed.name, outcome.sent, outcome.conn
            );
            failed = true;
        }
        assert!(
            seed.bytes.len() < 4096,
            "{}: {} bytes",
            seed.name,
            seed.bytes.len()
        );
        out.push((seed.name, seed.bytes, what.to_string()));
    }
    if failed {
        return Err(());
    }
    Ok(out)
}

fn write_corpus(dir: &Path, seeds: &[(String, Vec<u8>, String)]) {
    fs::create_dir_all(dir).expect("creating the corpus directory");
    for entry in fs::read_dir(dir).expect("reading the corpus directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_file() {
            fs::remove_file(&path).expect("removing an old seed");
        }
    }
    for (name, bytes, what) in seeds {
        fs::write(dir.join(name), bytes).expect("writing a seed");
        println!("{:>5} B  {:<40} {what}", bytes.len(), name);
    }
    println!("{} seeds written to {}", seeds.len(), dir.display());
}

fn main() {
    let mut args = std::env::args().skip(1);
    let target = args.next().unwrap_or_else(|| "all".to_string());
    let out_dir = args.next().map(PathBuf::from);
    let targets: &[&str] = match target.as_str() {
        "all" => &["classify", "ingest"],
        "classify" => &["classify"],
        "ingest" => &["ingest"],
        other => {
            eprintln!("usage: gen_corpus [classify|ingest|all [OUT_DIR]] (not '{other}')");
            std::process::exit(2);
        }
    };
    if out_dir.is_some() && targets.len() > 1 {
        eprintln!("gen_corpus: OUT_DIR needs a single target");
        std::process::exit(2);
    }

    // Check every seed of every target before touching a directory.
    let mut corpora = Vec::new();
    for &t in targets {
        let seeds = match t {
            "classify" => classify_corpus(),
            _ => ingest_corpus(),
        };
        let Ok(seeds) = seeds else {
            eprintln!("gen_corpus: some {t} seeds do not do what they should; nothing written");
            std::process::exit(1);
        };
        corpora.push((t, seeds));
    }
    for (t, seeds) in corpora {
        let dir = out_dir.clone().unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("corpus")
                .join(t)
        });
        write_corpus(&dir, &seeds);
    }
}
