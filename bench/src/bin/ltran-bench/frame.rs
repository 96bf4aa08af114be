//! The UDP/IPv4 frames the generator sends.

use std::net::Ipv4Addr;

/// Smallest frame built: Ethernet + IPv4 + UDP headers and a little payload
/// (60 bytes: the Ethernet minimum without its FCS).
pub const MIN_FRAME: usize = 60;
/// Largest frame built: a 1500-byte IP packet (ltran's `bond_mtu`) plus
/// the Ethernet header.
pub const MAX_FRAME: usize = 1514;
/// Offset of the UDP source port in the frame.
pub const SPORT_OFFSET: usize = 14 + 20;

/// Addresses of the generated flow.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    /// Destination MAC (ltran's bond MAC, or anything for testpmd).
    pub dst_mac: [u8; 6],
    /// The generator's MAC.
    pub src_mac: [u8; 6],
    /// Source IP (a "client" outside the dispatch subnet's instances).
    pub src_ip: Ipv4Addr,
    /// Destination IP (the sink's registered address).
    pub dst_ip: Ipv4Addr,
    /// UDP destination port.
    pub dst_port: u16,
}

/// A UDP/IPv4 frame of exactly `size` bytes (Ethernet header to the end of
/// the payload, no FCS) with UDP source port `sport`, IPv4 header checksum
/// set and UDP checksum 0 (none, as IPv4 allows).
pub fn udp_frame(flow: &Flow, size: usize, sport: u16) -> Vec<u8> {
    assert!(
        (MIN_FRAME..=MAX_FRAME).contains(&size),
        "frame size {size} outside {MIN_FRAME}..={MAX_FRAME}"
    );
    let mut f = vec![0u8; size];
    f[0..6].copy_from_slice(&flow.dst_mac);
    f[6..12].copy_from_slice(&flow.src_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (size - 14) as u16;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&flow.src_ip.octets());
    ip[16..20].copy_from_slice(&flow.dst_ip.octets());
    let csum = ipv4_checksum(ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    let udp = &mut f[34..42];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&flow.dst_port.to_be_bytes());
    udp[4..6].copy_from_slice(&(ip_len - 20).to_be_bytes());
    for (i, b) in f[42..].iter_mut().enumerate() {
        *b = i as u8;
    }
    f
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> Flow {
        Flow {
            dst_mac: [2, 0, 0, 0, 0, 1],
            src_mac: [2, 0, 0, 0, 0, 2],
            src_ip: Ipv4Addr::new(10, 77, 0, 100),
            dst_ip: Ipv4Addr::new(10, 77, 0, 2),
            dst_port: 9,
        }
    }

    #[test]
    fn frames_have_the_asked_size_and_a_valid_ip_header() {
        for size in [MIN_FRAME, 64, 1500, MAX_FRAME] {
            let f = udp_frame(&flow(), size, 40000);
            assert_eq!(f.len(), size);
            assert_eq!(
                ipv4_checksum(&f[14..34]),
                0,
                "checksum over a valid header is 0"
            );
            assert_eq!(u16::from_be_bytes([f[16], f[17]]) as usize, size - 14);
            assert_eq!(u16::from_be_bytes([f[38], f[39]]) as usize, size - 34);
            assert_eq!(u16::from_be_bytes([f[34], f[35]]), 40000);
        }
    }
}
