//! Just enough parsing of an Ethernet frame to dispatch it.
//!
//! Reads headers in place and never allocates; a frame too short for what
//! its headers claim is [`Malformed`]. Up to [`MAX_VLAN_TAGS`] 802.1Q/802.1ad
//! tags are looked through, so that a check of the network layer cannot be
//! dodged by tagging a frame (VLAN 0 is a priority tag any host may add).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Ethernet header length.
pub const ETH_LEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// 802.1Q.
const ETHERTYPE_VLAN: u16 = 0x8100;
/// 802.1ad (QinQ service tag).
const ETHERTYPE_QINQ: u16 = 0x88a8;
/// The pre-standard QinQ tag some switches still use.
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;
/// VLAN tags [`parse`] looks through; a frame with more is [`Net::Other`].
pub const MAX_VLAN_TAGS: u8 = 2;
/// Length of one VLAN tag.
const VLAN_TAG_LEN: usize = 4;
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;
/// TCP flag bits.
pub const TCP_FIN: u8 = 0x01;
/// SYN.
pub const TCP_SYN: u8 = 0x02;
/// RST.
pub const TCP_RST: u8 = 0x04;
/// ACK.
pub const TCP_ACK: u8 = 0x10;

/// The frame cannot be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// What a frame is, for dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// VLAN tags before the network layer (0 to [`MAX_VLAN_TAGS`]).
    pub vlan_tags: u8,
    /// Network layer (inside the tags).
    pub net: Net,
}

/// Network layer of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// ARP over IPv4.
    Arp {
        /// 1 request, 2 reply.
        op: u16,
        /// Sender protocol address.
        sender: Ipv4Addr,
        /// Target protocol address.
        target: Ipv4Addr,
    },
    /// IPv4 or IPv6.
    Ip {
        /// Source address.
        src: IpAddr,
        /// Destination address.
        dst: IpAddr,
        /// Transport.
        l4: L4,
    },
    /// Any other ethertype, including a VLAN tag beyond [`MAX_VLAN_TAGS`].
    Other(u16),
}

/// Transport layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// TCP with ports and flags.
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Flag byte (FIN..CWR).
        flags: u8,
    },
    /// UDP with ports.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// ICMP (v4).
    Icmp,
    /// ICMPv6; `ndp_target` is the target of a neighbour solicitation or
    /// advertisement.
    Icmpv6 {
        /// ICMPv6 type.
        kind: u8,
        /// NS/NA target address.
        ndp_target: Option<Ipv6Addr>,
    },
    /// Another protocol, or a fragment without the transport header.
    Other(u8),
}

#[inline]
fn be16(b: &[u8], at: usize) -> Result<u16, Malformed> {
    match b.get(at..at + 2) {
        Some(s) => Ok(u16::from_be_bytes([s[0], s[1]])),
        None => Err(Malformed),
    }
}

#[inline]
fn v4(b: &[u8], at: usize) -> Result<Ipv4Addr, Malformed> {
    match b.get(at..at + 4) {
        Some(s) => Ok(Ipv4Addr::new(s[0], s[1], s[2], s[3])),
        None => Err(Malformed),
    }
}

#[inline]
fn v6(b: &[u8], at: usize) -> Result<Ipv6Addr, Malformed> {
    match b.get(at..at + 16) {
        Some(s) => {
            let mut a = [0u8; 16];
            a.copy_from_slice(s);
            Ok(Ipv6Addr::from(a))
        }
        None => Err(Malformed),
    }
}

/// Parses a frame's headers.
pub fn parse(b: &[u8]) -> Result<Frame, Malformed> {
    if b.len() < ETH_LEN {
        return Err(Malformed);
    }
    let mut dst_mac = [0u8; 6];
    dst_mac.copy_from_slice(&b[0..6]);
    let mut src_mac = [0u8; 6];
    src_mac.copy_from_slice(&b[6..12]);
    let mut ethertype = be16(b, 12)?;
    let mut at = ETH_LEN;
    let mut vlan_tags = 0;
    while vlan_tags < MAX_VLAN_TAGS
        && matches!(
            ethertype,
            ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD
        )
    {
        // TCI (2 bytes), then the next ethertype.
        ethertype = be16(b, at + 2)?;
        at += VLAN_TAG_LEN;
        vlan_tags += 1;
    }
    let p = &b[at..];
    let net = match ethertype {
        ETHERTYPE_ARP => {
            // htype 1, ptype IPv4, hlen 6, plen 4.
            if p.len() < 28
                || be16(p, 0)? != 1
                || be16(p, 2)? != ETHERTYPE_IPV4
                || p[4] != 6
                || p[5] != 4
            {
                return Err(Malformed);
            }
            Net::Arp {
                op: be16(p, 6)?,
                sender: v4(p, 14)?,
                target: v4(p, 24)?,
            }
        }
        ETHERTYPE_IPV4 => {
            if p.len() < 20 || p[0] >> 4 != 4 {
                return Err(Malformed);
            }
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let total = usize::from(be16(p, 2)?);
            if ihl < 20 || total < ihl || p.len() < total {
                return Err(Malformed);
            }
            let frag_offset = be16(p, 6)? & 0x1fff;
            let proto = p[9];
            let l4 = if frag_offset != 0 {
                L4::Other(proto)
            } else {
                transport(proto, &p[ihl..total])?
            };
            Net::Ip {
                src: IpAddr::V4(v4(p, 12)?),
                dst: IpAddr::V4(v4(p, 16)?),
                l4,
            }
        }
        ETHERTYPE_IPV6 => {
            if p.len() < 40 || p[0] >> 4 != 6 {
                return Err(Malformed);
            }
            let payload = usize::from(be16(p, 4)?);
            if p.len() < 40 + payload {
                return Err(Malformed);
            }
            // Extension headers are not walked: their frames still reach
            // the owner of the destination, as "other".
            Net::Ip {
                src: IpAddr::V6(v6(p, 8)?),
                dst: IpAddr::V6(v6(p, 24)?),
                l4: transport(p[6], &p[40..40 + payload])?,
            }
        }
        other => Net::Other(other),
    };
    Ok(Frame {
        dst_mac,
        src_mac,
        vlan_tags,
        net,
    })
}

/// The common case of a received frame, read in place without building a
/// [`Frame`]: untagged IPv4 without options, to `mac`, carrying TCP, UDP
/// or ICMP, not a later fragment. Gives its source, destination and
/// transport exactly as [`parse`] would; `None` for anything else (other
/// MACs, tags, ARP, IPv6, options, fragments, other protocols and every
/// malformed frame), which [`parse`] then reads and judges.
#[inline]
pub fn ipv4_fast(b: &[u8], mac: &[u8; 6]) -> Option<(Ipv4Addr, Ipv4Addr, L4)> {
    // Ethernet and a 20-byte IPv4 header, checked once.
    let (h, _) = b.split_first_chunk::<{ ETH_LEN + 20 }>()?;
    if h[0..6] != mac[..] || h[12..14] != ETHERTYPE_IPV4.to_be_bytes() || h[14] != 0x45 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([h[16], h[17]]));
    // A later fragment (offset set) has no transport header.
    let fragment = u16::from_be_bytes([h[20], h[21]]) & 0x1fff != 0;
    let t = b.get(ETH_LEN + 20..ETH_LEN + total)?;
    if fragment {
        return None;
    }
    let l4 = match h[23] {
        PROTO_TCP if t.len() >= 20 => L4::Tcp {
            sport: u16::from_be_bytes([t[0], t[1]]),
            dport: u16::from_be_bytes([t[2], t[3]]),
            flags: t[13],
        },
        PROTO_UDP if t.len() >= 8 => L4::Udp {
            sport: u16::from_be_bytes([t[0], t[1]]),
            dport: u16::from_be_bytes([t[2], t[3]]),
        },
        PROTO_ICMP => L4::Icmp,
        _ => return None,
    };
    let src = Ipv4Addr::new(h[26], h[27], h[28], h[29]);
    let dst = Ipv4Addr::new(h[30], h[31], h[32], h[33]);
    Some((src, dst, l4))
}

fn transport(proto: u8, t: &[u8]) -> Result<L4, Malformed> {
    Ok(match proto {
        PROTO_TCP => {
            if t.len() < 20 {
                return Err(Malformed);
            }
            L4::Tcp {
                sport: be16(t, 0)?,
                dport: be16(t, 2)?,
                flags: t[13],
            }
        }
        PROTO_UDP => {
            if t.len() < 8 {
                return Err(Malformed);
            }
            L4::Udp {
                sport: be16(t, 0)?,
                dport: be16(t, 2)?,
            }
        }
        PROTO_ICMP => L4::Icmp,
        PROTO_ICMPV6 => {
            let kind = *t.first().ok_or(Malformed)?;
            // 135 neighbour solicitation, 136 advertisement: target at 8.
            let ndp_target = if kind == 135 || kind == 136 {
                Some(v6(t, 8)?)
            } else {
                None
            };
            L4::Icmpv6 { kind, ndp_target }
        }
        other => L4::Other(other),
    })
}

/// The IPv6 link-local address of `mac` (modified EUI-64, RFC 4291): the
/// one lstack gives itself, so the one every instance behind the bond MAC
/// speaks from.
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([mac[0] ^ 0x02, mac[1]]),
        u16::from_be_bytes([mac[2], 0xff]),
        u16::from_be_bytes([0xfe, mac[3]]),
        u16::from_be_bytes([mac[4], mac[5]]),
    )
}

pub use dpdk::bond::{gratuitous_arp, unsolicited_na};

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
        let total = 20 + l4.len();
        let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
        h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        h.extend_from_slice(l4);
        h
    }

    #[test]
    fn tcp_syn_is_parsed() {
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&6379u16.to_be_bytes());
        tcp[12] = 0x50;
        tcp[13] = TCP_SYN;
        let f = parse(&eth(0x0800, &ipv4(6, [10, 0, 0, 1], [10, 0, 0, 2], &tcp))).unwrap();
        assert_eq!(
            f.net,
            Net::Ip {
                src: "10.0.0.1".parse().unwrap(),
                dst: "10.0.0.2".parse().unwrap(),
                l4: L4::Tcp {
                    sport: 40000,
                    dport: 6379,
                    flags: TCP_SYN
                }
            }
        );
    }

    #[test]
    fn truncated_headers_are_malformed() {
        let mut tcp = vec![0u8; 20];
        tcp[13] = TCP_SYN;
        let full = eth(0x0800, &ipv4(6, [10, 0, 0, 1], [10, 0, 0, 2], &tcp));
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Err(Malformed), "cut at {cut}");
        }
        // A total length beyond the frame is malformed too.
        let mut lying = full.clone();
        lying[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(parse(&lying), Err(Malformed));
    }

    #[test]
    fn later_fragments_have_no_ports() {
        let mut ip = ipv4(17, [10, 0, 0, 1], [10, 0, 0, 2], &[0u8; 8]);
        ip[6..8].copy_from_slice(&0x0010u16.to_be_bytes());
        let f = parse(&eth(0x0800, &ip)).unwrap();
        assert!(matches!(
            f.net,
            Net::Ip {
                l4: L4::Other(17),
                ..
            }
        ));
    }

    #[test]
    fn vlan_tags_are_looked_through_up_to_two() {
        let udp = ipv4(17, [10, 0, 0, 1], [10, 0, 0, 2], &[0, 1, 0, 2, 0, 8, 0, 0]);
        let inner = parse(&eth(0x0800, &udp)).unwrap().net;
        for tpids in [
            &[0x8100u16][..],
            &[0x88a8, 0x8100],
            &[0x9100, 0x8100],
            &[0x8100, 0x8100],
        ] {
            let mut payload = Vec::new();
            for i in 0..tpids.len() {
                // TCI: VLAN 0 (priority tag), then the next ethertype.
                payload.extend_from_slice(&[0, 0]);
                let next = tpids.get(i + 1).copied().unwrap_or(0x0800);
                payload.extend_from_slice(&next.to_be_bytes());
            }
            payload.extend_from_slice(&udp);
            let f = parse(&eth(tpids[0], &payload)).unwrap();
            assert_eq!(f.vlan_tags as usize, tpids.len(), "{tpids:x?}");
            assert_eq!(f.net, inner, "{tpids:x?}");
        }
        // A third tag is not looked into.
        let mut three = Vec::new();
        for next in [0x8100u16, 0x8100, 0x0800] {
            three.extend_from_slice(&[0, 0]);
            three.extend_from_slice(&next.to_be_bytes());
        }
        three.extend_from_slice(&udp);
        let f = parse(&eth(0x8100, &three)).unwrap();
        assert_eq!((f.vlan_tags, f.net), (2, Net::Other(0x8100)));
        // A tag cut short is malformed.
        assert_eq!(parse(&eth(0x8100, &[0, 0, 8])), Err(Malformed));
    }

    #[test]
    fn link_local_is_lstacks_eui64() {
        assert_eq!(
            link_local([0x02, 0x00, 0x00, 0x12, 0x34, 0x56]),
            "fe80::ff:fe12:3456".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn gratuitous_arp_parses_back() {
        let mut buf = [0u8; 64];
        let n = gratuitous_arp([2, 1, 2, 3, 4, 5], "10.0.0.9".parse().unwrap(), &mut buf);
        let f = parse(&buf[..n]).unwrap();
        assert_eq!(f.dst_mac, [0xff; 6]);
        assert_eq!(
            f.net,
            Net::Arp {
                op: 1,
                sender: "10.0.0.9".parse().unwrap(),
                target: "10.0.0.9".parse().unwrap()
            }
        );
    }

    #[test]
    fn unsolicited_na_parses_back_with_a_valid_checksum() {
        let mut buf = [0u8; 128];
        let ip: Ipv6Addr = "fd00::9".parse().unwrap();
        let n = unsolicited_na([2, 1, 2, 3, 4, 5], ip, &mut buf);
        let f = parse(&buf[..n]).unwrap();
        assert!(matches!(
            f.net,
            Net::Ip { l4: L4::Icmpv6 { kind: 136, ndp_target: Some(t) }, .. } if t == ip
        ));
        // Recomputing over the message with its checksum in place gives 0xffff.
        let mut sum: u32 = 0;
        for c in buf[22..54].chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        sum += 32 + 58;
        for c in buf[54..86].chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
    }

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];

    /// What `parse` says of a frame `ipv4_fast` reads, in its terms.
    fn slow(b: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, L4)> {
        match parse(b).ok()? {
            Frame {
                dst_mac: MAC,
                vlan_tags: 0,
                net:
                    Net::Ip {
                        src: IpAddr::V4(s),
                        dst: IpAddr::V4(d),
                        l4,
                    },
                ..
            } => Some((s, d, l4)),
            _ => None,
        }
    }

    fn udp_frame() -> Vec<u8> {
        eth(
            0x0800,
            &ipv4(17, [10, 0, 0, 1], [10, 0, 0, 2], &[0, 1, 0, 2, 0, 8, 0, 0]),
        )
    }

    #[test]
    fn the_fast_path_reads_plain_ipv4_and_leaves_the_rest() {
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[13] = TCP_SYN;
        for f in [
            udp_frame(),
            eth(0x0800, &ipv4(6, [10, 0, 0, 1], [10, 0, 0, 2], &tcp)),
            eth(
                0x0800,
                &ipv4(1, [10, 0, 0, 1], [10, 0, 0, 2], &[8, 0, 0, 0]),
            ),
        ] {
            assert!(ipv4_fast(&f, &MAC).is_some());
            assert_eq!(ipv4_fast(&f, &MAC), slow(&f));
        }
        let mut other_mac = udp_frame();
        other_mac[5] = 9;
        let mut fragment = udp_frame();
        fragment[ETH_LEN + 7] = 1;
        let mut options = udp_frame();
        options[ETH_LEN] = 0x46;
        let mut short_udp = udp_frame();
        short_udp[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&27u16.to_be_bytes());
        let mut long_total = udp_frame();
        long_total[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&29u16.to_be_bytes());
        let gre = eth(0x0800, &ipv4(47, [10, 0, 0, 1], [10, 0, 0, 2], &[0; 4]));
        let arp = eth(0x0806, &[0; 28]);
        for f in [
            other_mac, fragment, options, short_udp, long_total, gre, arp,
        ] {
            assert_eq!(ipv4_fast(&f, &MAC), None, "{f:x?}");
        }
        let full = udp_frame();
        for cut in 0..full.len() {
            assert_eq!(ipv4_fast(&full[..cut], &MAC), None, "cut at {cut}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse(&bytes);
            let _ = ipv4_fast(&bytes, &MAC);
        }

        /// Whatever the fast path reads, the full parse reads the same.
        #[test]
        fn the_fast_path_agrees_with_parse(
            flips in proptest::collection::vec((0usize..64, proptest::num::u8::ANY), 0..4),
            // Half the frames whole: a cut one is malformed, fast path or not.
            cut in proptest::option::of(0usize..80),
            proto in proptest::sample::select(vec![1u8, 6, 17, 47, 58]),
        ) {
            // Distinct bytes, so that a field read from the wrong place shows.
            let l4: Vec<u8> = (1..=40).collect();
            let mut f = eth(0x0800, &ipv4(proto, [10, 0, 0, 1], [10, 0, 0, 2], &l4));
            for (at, v) in flips {
                if let Some(b) = f.get_mut(at) {
                    *b = v;
                }
            }
            if let Some(cut) = cut {
                f.truncate(f.len().saturating_sub(cut));
            }
            if let Some(fast) = ipv4_fast(&f, &MAC) {
                proptest::prop_assert_eq!(Some(fast), slow(&f));
            }
        }
    }
}
