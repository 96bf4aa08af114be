//! Fuzzes `lstack::classify::classify`, which reads every received frame
//! before anything else does: it must never panic, and what it lets through
//! must really be what it says.
//!
//! Input: a 28-byte header that gives the stack's MAC/IPv4/IPv6 addresses and
//! the NIC's checksum flags (see `lstack_fuzz` in `src/lib.rs`), then the
//! Ethernet frame. Besides "no panic", every verdict is checked against the
//! frame bytes by an independent, deliberately simple reading of the headers
//! (offsets, lengths, addresses, ports, flags and Internet checksums), and
//! the verdict must be deterministic, only widen when checksums are trusted,
//! and not change when the frame gains Ethernet padding or a trailing FCS.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lstack::classify::{classify, DropReason, FlowKey, LocalAddrs, RxChecked, Verdict};
use lstack_fuzz::Input;
use smoltcp::wire::{EthernetAddress, IpAddress, Ipv4Address, Ipv6Address};

const ETH: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;

/// Under `--cfg fuzzing` (cargo-fuzz's default) smoltcp's `verify_checksum`
/// always says yes, so checksums are only checked here when they are really
/// checked there: `scripts/fuzz.sh` builds with `--no-cfg-fuzzing`, so the
/// real checksum code runs and the `RxChecked` header flags are what let
/// mutated frames past it.
const REAL_CHECKSUMS: bool = !cfg!(fuzzing);

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::decode(data) else {
        return;
    };
    check(input.frame, &input.local, input.checked);
});

fn check(frame: &[u8], local: &LocalAddrs, checked: RxChecked) {
    let v = classify(frame, local, checked);
    assert_eq!(
        v,
        classify(frame, local, checked),
        "classify is not deterministic"
    );

    check_verdict(frame, local, checked, v);

    // Trusting the NIC's checksums can only let more through, never change a
    // verdict that the full checks already give.
    let strict = classify(frame, local, RxChecked::default());
    let lenient = classify(
        frame,
        local,
        RxChecked {
            ip_good: true,
            l4_good: true,
        },
    );
    if !is_drop(strict) {
        assert_eq!(v, strict, "checksum trust changed a good verdict");
    }
    if !is_drop(v) {
        assert_eq!(v, lenient, "trusting more checksums changed a good verdict");
        if let Verdict::Tcp { flow, .. } = v {
            // Pure arithmetic, but it runs on every segment: exercise it too.
            assert_eq!(flow.hash(0x5eed), flow.hash(0x5eed));
        }
        // Ethernet pads short frames to 60 bytes and some NICs leave the FCS
        // on: neither may change what a good frame is.
        let mut padded = frame.to_vec();
        padded.resize(frame.len().max(60), 0);
        padded.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(
            v,
            classify(&padded, local, checked),
            "Ethernet padding / trailing FCS changed the verdict"
        );
    }
}

fn is_drop(v: Verdict) -> bool {
    matches!(v, Verdict::Drop(_))
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Checks `v` against an independent reading of `frame`.
fn check_verdict(frame: &[u8], local: &LocalAddrs, checked: RxChecked, v: Verdict) {
    if frame.len() < ETH {
        assert_eq!(v, Verdict::Drop(DropReason::EthernetTruncated));
        return;
    }
    assert_ne!(
        v,
        Verdict::Drop(DropReason::EthernetTruncated),
        "len {}",
        frame.len()
    );

    let dst_mac = EthernetAddress::from_bytes(&frame[0..6]);
    let mac_ok = dst_mac == local.mac || dst_mac.is_broadcast() || dst_mac.is_multicast();
    assert_eq!(
        v == Verdict::Drop(DropReason::NotOurMac),
        !mac_ok,
        "{v:?} for MAC {dst_mac}"
    );
    if !mac_ok {
        return;
    }
    let ethertype = be16(frame, 12);
    let known = matches!(ethertype, ETHERTYPE_ARP | ETHERTYPE_IPV4 | ETHERTYPE_IPV6);
    assert_eq!(
        v == Verdict::Drop(DropReason::UnknownEthertype),
        !known,
        "{v:?} for ethertype {ethertype:#06x}"
    );

    match v {
        Verdict::Tcp { flow, syn } => check_tcp(frame, local, checked, flow, syn),
        Verdict::Udp { port } => check_udp(frame, local, checked, port),
        Verdict::Control { broadcast } => check_control(frame, local, checked, broadcast),
        Verdict::Drop(reason) => {
            use DropReason::*;
            let family = match reason {
                ArpMalformed => Some(ETHERTYPE_ARP),
                Ipv4Malformed | Ipv4Truncated | Ipv4BadChecksum | Ipv4NotOurs => {
                    Some(ETHERTYPE_IPV4)
                }
                Ipv6Malformed | Ipv6Truncated | Ipv6NotOurs => Some(ETHERTYPE_IPV6),
                _ => None,
            };
            if let Some(family) = family {
                assert_eq!(
                    ethertype, family,
                    "{reason:?} for ethertype {ethertype:#06x}"
                );
            }
            if reason == Ipv4BadChecksum {
                assert!(
                    !checked.ip_good,
                    "IPv4 checksum checked although the NIC did"
                );
            }
            if matches!(reason, TcpBadChecksum | UdpBadChecksum) && checked.l4_good {
                // Only the IPv6 zero UDP checksum is refused whatever the NIC says.
                assert_eq!(
                    reason, UdpBadChecksum,
                    "TCP checksum checked although the NIC did"
                );
                assert_eq!(
                    ethertype, ETHERTYPE_IPV6,
                    "{reason:?} with l4_good over IPv4"
                );
            }
        }
    }
}

/// The IP layer of a frame that passed, as read here.
struct Ip<'a> {
    src: IpAddress,
    dst: IpAddress,
    protocol: u8,
    /// The L4 bytes: the IP payload bounded by the IP length field.
    payload: &'a [u8],
    /// Whether `dst` is one of our unicast addresses.
    ours: bool,
}

/// Reads the IPv4 or IPv6 header of a frame that `classify` let through, and
/// checks what must hold of every IP packet it lets through.
fn read_ip<'a>(frame: &'a [u8], local: &LocalAddrs, checked: RxChecked) -> Ip<'a> {
    let ip = &frame[ETH..];
    match be16(frame, 12) {
        ETHERTYPE_IPV4 => {
            assert!(ip.len() >= 20, "IPv4 passed with {} header bytes", ip.len());
            assert_eq!(ip[0] >> 4, 4, "IPv4 version");
            let ihl = usize::from(ip[0] & 0xf) * 4;
            let total = usize::from(be16(ip, 2));
            assert!(
                ihl >= 20 && ihl <= total && total <= ip.len(),
                "ihl {ihl} total {total}"
            );
            if REAL_CHECKSUMS && !checked.ip_good {
                assert_eq!(csum_fold(csum_add(0, &ip[..ihl])), 0xffff, "IPv4 checksum");
            }
            let src = Ipv4Address::from([ip[12], ip[13], ip[14], ip[15]]);
            let dst = Ipv4Address::from([ip[16], ip[17], ip[18], ip[19]]);
            assert!(
                !src.is_multicast() && !src.is_broadcast(),
                "IPv4 source {src}"
            );
            let ours = Some(dst) == local.ipv4;
            assert!(
                ours || dst.is_broadcast()
                    || dst.is_multicast()
                    || Some(dst) == local.ipv4_broadcast,
                "IPv4 destination {dst} is not ours"
            );
            Ip {
                src: IpAddress::Ipv4(src),
                dst: IpAddress::Ipv4(dst),
                protocol: ip[9],
                payload: &ip[ihl..total],
                ours,
            }
        }
        ETHERTYPE_IPV6 => {
            assert!(ip.len() >= 40, "IPv6 passed with {} header bytes", ip.len());
            assert_eq!(ip[0] >> 4, 6, "IPv6 version");
            let payload_len = usize::from(be16(ip, 4));
            assert!(
                40 + payload_len <= ip.len(),
                "IPv6 payload length {payload_len}"
            );
            let src = Ipv6Address::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap());
            let dst = Ipv6Address::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap());
            assert!(!src.is_multicast(), "IPv6 source {src}");
            let ours = Some(dst) == local.ipv6 || Some(dst) == local.ipv6_link_local;
            assert!(
                ours || dst.is_multicast(),
                "IPv6 destination {dst} is not ours"
            );
            Ip {
                src: IpAddress::Ipv6(src),
                dst: IpAddress::Ipv6(dst),
                protocol: ip[6],
                payload: &ip[40..40 + payload_len],
                ours,
            }
        }
        other => panic!("an IP verdict for ethertype {other:#06x}"),
    }
}

/// The upper-layer protocol and payload behind IPv6 Hop-by-Hop (0),
/// Routing (43) and Destination Options (60) headers starting with `next`
/// over `payload` (as they are; a header that does not fit ends the walk).
fn after_ipv6_extensions(mut next: u8, mut payload: &[u8]) -> (u8, &[u8]) {
    while matches!(next, 0 | 43 | 60) && payload.len() >= 8 {
        let len = (usize::from(payload[1]) + 1) * 8;
        if len > payload.len() {
            break;
        }
        next = payload[0];
        payload = &payload[len..];
    }
    (next, payload)
}

fn is_ipv4_fragment(frame: &[u8]) -> bool {
    be16(frame, ETH + 6) & 0x3fff != 0
}

fn check_tcp(frame: &[u8], local: &LocalAddrs, checked: RxChecked, flow: FlowKey, syn: bool) {
    assert!(
        frame.len() >= ETH + 20 + 20,
        "TCP verdict for a {}-byte frame",
        frame.len()
    );
    let mut ip = read_ip(frame, local, checked);
    if let IpAddress::Ipv6(_) = ip.dst {
        // The stack takes TCP behind skippable IPv6 extension headers
        // (Hop-by-Hop, Routing, Destination Options): walk them.
        (ip.protocol, ip.payload) = after_ipv6_extensions(ip.protocol, ip.payload);
    }
    assert_eq!(
        ip.protocol, PROTO_TCP,
        "TCP verdict for IP protocol {}",
        ip.protocol
    );
    assert!(ip.ours, "TCP to a non-unicast destination {}", ip.dst);
    if let IpAddress::Ipv4(_) = ip.dst {
        assert!(!is_ipv4_fragment(frame), "TCP verdict for an IPv4 fragment");
    }
    let is_local = match flow.local_addr {
        IpAddress::Ipv4(a) => Some(a) == local.ipv4,
        IpAddress::Ipv6(a) => Some(a) == local.ipv6 || Some(a) == local.ipv6_link_local,
    };
    assert!(
        is_local,
        "flow.local_addr {} is not a local address",
        flow.local_addr
    );
    let tcp = ip.payload;
    assert!(tcp.len() >= 20, "TCP header of {} bytes", tcp.len());
    let data_offset = usize::from(tcp[12] >> 4) * 4;
    assert!(
        (20..=tcp.len()).contains(&data_offset),
        "TCP data offset {data_offset}"
    );
    let want = FlowKey {
        local_addr: ip.dst,
        local_port: be16(tcp, 2),
        remote_addr: ip.src,
        remote_port: be16(tcp, 0),
    };
    assert_eq!(flow, want, "flow disagrees with the frame");
    let (syn_bit, ack_bit) = (tcp[13] & 0x02 != 0, tcp[13] & 0x10 != 0);
    assert_eq!(
        syn,
        syn_bit && !ack_bit,
        "syn flag for TCP flags {:#04x}",
        tcp[13]
    );
    if REAL_CHECKSUMS && !checked.l4_good {
        assert!(l4_checksum_ok(&ip, PROTO_TCP, tcp), "TCP checksum");
    }
}

fn check_udp(frame: &[u8], local: &LocalAddrs, checked: RxChecked, port: u16) {
    assert!(
        frame.len() >= ETH + 20 + 8,
        "UDP verdict for a {}-byte frame",
        frame.len()
    );
    let ip = read_ip(frame, local, checked);
    assert_eq!(
        ip.protocol, PROTO_UDP,
        "UDP verdict for IP protocol {}",
        ip.protocol
    );
    let v6 = matches!(ip.dst, IpAddress::Ipv6(_));
    if v6 {
        assert!(
            frame.len() >= ETH + 40 + 8,
            "UDP/IPv6 verdict for a {}-byte frame",
            frame.len()
        );
    } else {
        assert!(!is_ipv4_fragment(frame), "UDP verdict for an IPv4 fragment");
    }
    let bytes = ip.payload;
    assert!(bytes.len() >= 8, "UDP header of {} bytes", bytes.len());
    let udp_len = usize::from(be16(bytes, 4));
    assert!(
        (8..=bytes.len()).contains(&udp_len),
        "UDP length {udp_len} of {}",
        bytes.len()
    );
    assert_eq!(port, be16(bytes, 2), "UDP port disagrees with the frame");
    let csum = be16(bytes, 6);
    if v6 {
        assert_ne!(csum, 0, "zero UDP checksum over IPv6");
    }
    if REAL_CHECKSUMS && !checked.l4_good && csum != 0 {
        assert!(
            l4_checksum_ok(&ip, PROTO_UDP, &bytes[..udp_len]),
            "UDP checksum"
        );
    }
}

fn check_control(frame: &[u8], local: &LocalAddrs, checked: RxChecked, broadcast: bool) {
    match be16(frame, 12) {
        ETHERTYPE_ARP => {
            assert!(broadcast, "ARP must reach every stack thread");
            let arp = &frame[ETH..];
            assert!(arp.len() >= 8 + 2 * 6 + 2 * 4, "ARP of {} bytes", arp.len());
            assert_eq!((arp[4], arp[5]), (6, 4), "ARP address lengths");
        }
        ETHERTYPE_IPV4 => {
            assert!(!broadcast, "IPv4 control traffic marked broadcast");
            let ip = read_ip(frame, local, checked);
            if !is_ipv4_fragment(frame) {
                assert!(
                    matches!(ip.protocol, 1 | 2),
                    "control verdict for IPv4 protocol {}",
                    ip.protocol
                );
                if ip.protocol == 1 {
                    assert!(ip.payload.len() >= 8, "ICMP of {} bytes", ip.payload.len());
                    assert!(
                        !REAL_CHECKSUMS || csum_fold(csum_add(0, ip.payload)) == 0xffff,
                        "ICMP checksum"
                    );
                }
            }
        }
        ETHERTYPE_IPV6 => {
            let ip = read_ip(frame, local, checked);
            let ndp = ip.protocol == PROTO_ICMPV6
                && ip.payload.first().is_some_and(|t| (133..=137).contains(t));
            assert_eq!(broadcast, ndp, "broadcast must be set for NDP and only NDP");
            match ip.protocol {
                PROTO_ICMPV6 => {
                    assert!(
                        ip.payload.len() >= 4,
                        "ICMPv6 of {} bytes",
                        ip.payload.len()
                    );
                    assert!(
                        !REAL_CHECKSUMS || l4_checksum_ok(&ip, PROTO_ICMPV6, ip.payload),
                        "ICMPv6 checksum"
                    );
                }
                0 | 43 | 44 | 59 | 60 => {}
                p => panic!("control verdict for IPv6 next header {p}"),
            }
        }
        other => panic!("control verdict for ethertype {other:#06x}"),
    }
}

/// Adds `data` as big-endian 16-bit words (odd tail zero-padded) to `sum`.
fn csum_add(mut sum: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for w in &mut chunks {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// Folds a sum into the 16-bit one's complement sum.
fn csum_fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn addr_bytes(a: &IpAddress) -> Vec<u8> {
    match a {
        IpAddress::Ipv4(a) => a.octets().to_vec(),
        IpAddress::Ipv6(a) => a.octets().to_vec(),
    }
}

/// Whether `segment` (checksum field included) sums to all ones with the
/// pseudo-header of `ip`.
fn l4_checksum_ok(ip: &Ip<'_>, protocol: u8, segment: &[u8]) -> bool {
    let mut sum = csum_add(0, &addr_bytes(&ip.src));
    sum = csum_add(sum, &addr_bytes(&ip.dst));
    sum += u64::from(protocol);
    sum += segment.len() as u64; // as two 16-bit words for IPv6's 32-bit length
    sum = csum_add(sum, segment);
    csum_fold(sum) == 0xffff
}
