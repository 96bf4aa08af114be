//! Path MTU discovery (RFC 1191, RFC 8201) in lstack's own layer.
//!
//! smoltcp sends every TCP segment as large as the peer's MSS allows, with
//! DF set, and ignores ICMP "fragmentation needed" and ICMPv6 Packet Too
//! Big; it has no way to lower an established connection's MSS. So:
//! - a Too Big message is taken only if it quotes a TCP flow this thread
//!   tracks with a sequence number in SND.UNA..SND.NXT (RFC 5927 5.2: what
//!   a blind attacker cannot guess), its MTU clamped to 552 (IPv4, as
//!   Linux's `min_pmtu`) or 1280 (IPv6); it lowers the path MTU of the
//!   quoted destination in a small table ([`PathMtu`]) for
//!   [`PMTU_EXPIRES_NS`] (RFC 1191 5 and Linux: 10 minutes), then the path
//!   is tried at full size again;
//! - on transmit, a TCP segment larger than its destination's path MTU is
//!   cut into segments that fit ([`Split`]): same headers and options,
//!   consecutive sequence numbers, FIN and PSH on the last one only. smoltcp
//!   never knows: the peer acknowledges what it sent, in smaller pieces.
//!
//! The table is per stack thread (a flow's frames, and the Too Big messages
//! quoting it, are handled by the thread that owns it), at most
//! [`PMTU_ENTRIES`] destinations, allocated up front. While it is empty the
//! transmit path does one comparison per frame; with entries, only frames
//! larger than the smallest MTU in it are looked up.
//!
//! UDP and ICMP are not cut: a datagram larger than the path MTU still goes
//! out whole with DF and is lost on that path, as before.

use smoltcp::wire::{IpAddress, Ipv4Address, Ipv6Address};

use crate::classify::FlowKey;

/// Destinations with a lowered path MTU one thread remembers.
pub(crate) const PMTU_ENTRIES: usize = 64;
/// How long a lowered path MTU holds (Linux's `mtu_expires`).
pub(crate) const PMTU_EXPIRES_NS: u64 = 600_000_000_000;
/// The smallest IPv4 path MTU taken from a Too Big message (Linux's
/// `min_pmtu`); a smaller one is raised to it.
pub(crate) const MIN_PMTU_V4: u16 = 552;
/// The IPv6 minimum link MTU (RFC 8200 5).
pub(crate) const MIN_PMTU_V6: u16 = 1280;
/// The IP MTU of our link: nothing above it is ever lowered to.
pub(crate) const LINK_MTU: u16 = (crate::device::MAX_FRAME - 14) as u16;
/// At most this many segments come out of one (1460 bytes of payload at
/// the IPv4 minimum take 4).
const MAX_PIECES: usize = 8;

const ETH: usize = 14;

/// A Too Big message: the flow of ours it quotes, the quoted sequence
/// number and the MTU it reports, already clamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooBig {
    pub(crate) flow: FlowKey,
    pub(crate) seq: u32,
    pub(crate) mtu: u16,
}

/// Reads an ICMP "fragmentation needed" (type 3 code 4) or ICMPv6 Packet
/// Too Big (type 2) in `frame`, quoting a TCP segment; the frame's
/// checksums were verified by [`crate::classify`]. `None`: not one, or
/// nothing to learn from it (an MTU at or above our link's).
pub(crate) fn too_big(frame: &[u8]) -> Option<TooBig> {
    let ip = frame.get(ETH..)?;
    match frame.get(12..14)? {
        [0x08, 0x00] => {
            let ihl = usize::from(ip.first()? & 0xf) * 4;
            if *ip.get(9)? != 1 || u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x3fff != 0 {
                return None;
            }
            let icmp = ip.get(ihl..)?;
            if icmp.get(..2)? != [3, 4] {
                return None;
            }
            let q = icmp.get(8..)?;
            let qihl = usize::from(q.first()? & 0xf) * 4;
            if q[0] >> 4 != 4 || qihl < 20 || *q.get(9)? != 6 {
                return None;
            }
            let tcp = q.get(qihl..qihl + 8)?;
            let src: [u8; 4] = q.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = q.get(16..20)?.try_into().ok()?;
            let mut mtu = u16::from_be_bytes([icmp[6], icmp[7]]);
            if mtu == 0 {
                // A router from before RFC 1191: the next plateau below
                // the quoted datagram's length (RFC 1191 7).
                let quoted = u16::from_be_bytes([*q.get(2)?, *q.get(3)?]);
                mtu = [1492, 1006, 576]
                    .into_iter()
                    .find(|p| *p < quoted)
                    .unwrap_or(MIN_PMTU_V4);
            }
            learnable(
                IpAddress::Ipv4(Ipv4Address::from(src)),
                IpAddress::Ipv4(Ipv4Address::from(dst)),
                tcp,
                u32::from(mtu).max(u32::from(MIN_PMTU_V4)),
            )
        }
        [0x86, 0xdd] => {
            if *ip.get(6)? != 58 {
                return None;
            }
            let icmp = ip.get(40..)?;
            if icmp.get(..2)? != [2, 0] {
                return None;
            }
            let mtu = u32::from_be_bytes(icmp.get(4..8)?.try_into().ok()?);
            let q = icmp.get(8..)?;
            if q.first()? >> 4 != 6 || *q.get(6)? != 6 {
                return None;
            }
            let src: [u8; 16] = q.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = q.get(24..40)?.try_into().ok()?;
            learnable(
                IpAddress::Ipv6(Ipv6Address::from(src)),
                IpAddress::Ipv6(Ipv6Address::from(dst)),
                q.get(40..48)?,
                mtu.max(u32::from(MIN_PMTU_V6)),
            )
        }
        _ => None,
    }
}

/// The [`TooBig`] of a quoted segment from `src` (ours) to `dst` whose
/// first 8 TCP bytes are `tcp`, if `mtu` is below our link's.
fn learnable(src: IpAddress, dst: IpAddress, tcp: &[u8], mtu: u32) -> Option<TooBig> {
    if mtu >= u32::from(LINK_MTU) {
        return None;
    }
    Some(TooBig {
        flow: FlowKey {
            local_addr: src,
            local_port: u16::from_be_bytes([tcp[0], tcp[1]]),
            remote_addr: dst,
            remote_port: u16::from_be_bytes([tcp[2], tcp[3]]),
        },
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        mtu: mtu as u16,
    })
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    dst: IpAddress,
    mtu: u16,
    expires_ns: u64,
}

/// A thread's lowered path MTUs, by destination: at most [`PMTU_ENTRIES`],
/// each for [`PMTU_EXPIRES_NS`].
#[derive(Debug)]
pub(crate) struct PathMtu {
    entries: Vec<Entry>,
    /// The smallest MTU in `entries` (`u16::MAX` when empty): a frame whose
    /// IP packet is no larger needs no lookup.
    smallest: u16,
}

impl PathMtu {
    /// An empty table, its room allocated now.
    pub(crate) fn new() -> Self {
        Self {
            entries: Vec::with_capacity(PMTU_ENTRIES),
            smallest: u16::MAX,
        }
    }

    /// Lowers the path MTU to `dst` to `mtu` until `now_ns` plus
    /// [`PMTU_EXPIRES_NS`]; never raises one (RFC 1191 3: a larger MTU
    /// from a Too Big message is ignored). When full, the entry closest to
    /// expiry makes room.
    pub(crate) fn lower(&mut self, dst: IpAddress, mtu: u16, now_ns: u64) {
        let expires_ns = now_ns.saturating_add(PMTU_EXPIRES_NS);
        if let Some(e) = self.entries.iter_mut().find(|e| e.dst == dst) {
            if e.expires_ns <= now_ns || mtu < e.mtu {
                e.mtu = mtu;
                e.expires_ns = expires_ns;
            }
        } else if self.entries.len() < PMTU_ENTRIES {
            self.entries.push(Entry {
                dst,
                mtu,
                expires_ns,
            });
        } else if let Some(e) = self.entries.iter_mut().min_by_key(|e| e.expires_ns) {
            *e = Entry {
                dst,
                mtu,
                expires_ns,
            };
        }
        self.recompute();
    }

    fn recompute(&mut self) {
        self.smallest = self.entries.iter().map(|e| e.mtu).min().unwrap_or(u16::MAX);
    }

    /// The path MTU that the IP packet in `frame` exceeds, if a lowered
    /// one holds for its destination at `now_ns`. Costs one comparison
    /// while the table is empty or the frame small.
    #[inline]
    pub(crate) fn exceeded(&mut self, frame: &[u8], now_ns: u64) -> Option<u16> {
        if frame.len() <= ETH + usize::from(self.smallest) {
            return None;
        }
        self.exceeded_slow(frame, now_ns)
    }

    #[cold]
    fn exceeded_slow(&mut self, frame: &[u8], now_ns: u64) -> Option<u16> {
        let before = self.entries.len();
        self.entries.retain(|e| e.expires_ns > now_ns);
        if self.entries.len() != before {
            self.recompute();
        }
        let (dst, ip_len) = ip_destination(frame)?;
        let e = self.entries.iter().find(|e| e.dst == dst)?;
        (ip_len > usize::from(e.mtu)).then_some(e.mtu)
    }

    /// Destinations with a lowered path MTU now (expired ones included
    /// until a lookup drops them).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// How a TCP segment is cut to fit a path MTU: where its parts are and
/// how much payload each piece takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Split {
    /// Length of the Ethernet, IP and TCP headers (options included).
    headers: usize,
    /// Offset of the IP header's end (the TCP header) in the frame.
    tcp_off: usize,
    v6: bool,
    /// Payload bytes of the segment.
    payload: usize,
    /// Payload bytes per piece (the last may have fewer).
    mss: usize,
}

impl Split {
    /// How to cut the TCP segment in `frame` (Ethernet, IPv4 without
    /// fragmentation or IPv6 without extension headers, as smoltcp writes
    /// them) so that every IP packet is at most `mtu` bytes; `None` if it is
    /// not such a segment, fits already, is a SYN, or would take more than
    /// [`MAX_PIECES`] pieces.
    pub(crate) fn plan(frame: &[u8], mtu: u16) -> Option<Split> {
        let (v6, tcp_off, end) = match frame.get(12..14)? {
            [0x08, 0x00] => {
                let ip = frame.get(ETH..)?;
                let ihl = usize::from(ip.first()? & 0xf) * 4;
                let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
                let frag = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x3fff;
                if *ip.get(9)? != 6 || ihl < 20 || frag != 0 {
                    return None;
                }
                (false, ETH + ihl, ETH + total)
            }
            [0x86, 0xdd] => {
                let ip = frame.get(ETH..)?;
                if *ip.get(6)? != 6 {
                    return None;
                }
                let len = usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
                (true, ETH + 40, ETH + 40 + len)
            }
            _ => return None,
        };
        let tcp = frame.get(tcp_off..end)?;
        let data_off = usize::from(*tcp.get(12)? >> 4) * 4;
        if data_off < 20 || data_off > tcp.len() || tcp[13] & 0x02 != 0 {
            return None;
        }
        let headers = tcp_off + data_off;
        let payload = end - headers;
        let mss = (usize::from(mtu) + ETH).checked_sub(headers)?;
        if end - ETH <= usize::from(mtu) || mss == 0 || payload.div_ceil(mss) > MAX_PIECES {
            return None;
        }
        Some(Split {
            headers,
            tcp_off,
            v6,
            payload,
            mss,
        })
    }

    /// How many segments come out.
    pub(crate) fn pieces(&self) -> usize {
        self.payload.div_ceil(self.mss)
    }

    /// Length of piece `i`'s frame.
    pub(crate) fn piece_len(&self, i: usize) -> usize {
        let start = i * self.mss;
        self.headers + self.mss.min(self.payload - start)
    }

    /// Writes piece `i` of the segment `frame` into `out` (at least
    /// [`Split::piece_len`] bytes; `out` may be `frame` itself for piece 0,
    /// see [`Split::cut_first`]): the headers with the IP length, SEQ and
    /// flags of the piece, and its payload. `software_checksums`: the IP
    /// and TCP checksums are computed here; otherwise they are left for
    /// the NIC (see [`crate::device`]).
    pub(crate) fn write(&self, frame: &[u8], i: usize, out: &mut [u8], software_checksums: bool) {
        let start = i * self.mss;
        let len = self.piece_len(i);
        out[..self.headers].copy_from_slice(&frame[..self.headers]);
        out[self.headers..len].copy_from_slice(
            &frame[self.headers + start..self.headers + start + len - self.headers],
        );
        self.fix_headers(&mut out[..len], i, software_checksums);
    }

    /// Makes `frame` itself piece 0: its headers fixed, its payload cut;
    /// returns its new length (the caller trims the buffer). Write the
    /// other pieces from `frame` before this.
    pub(crate) fn cut_first(&self, frame: &mut [u8], software_checksums: bool) -> usize {
        let len = self.piece_len(0);
        self.fix_headers(&mut frame[..len], 0, software_checksums);
        len
    }

    fn fix_headers(&self, f: &mut [u8], i: usize, software_checksums: bool) {
        let last = i + 1 == self.pieces();
        let ip_len = f.len() - ETH;
        if self.v6 {
            f[ETH + 4..ETH + 6].copy_from_slice(&((ip_len - 40) as u16).to_be_bytes());
        } else {
            f[ETH + 2..ETH + 4].copy_from_slice(&(ip_len as u16).to_be_bytes());
            let id = u16::from_be_bytes([f[ETH + 4], f[ETH + 5]]).wrapping_add(i as u16);
            f[ETH + 4..ETH + 6].copy_from_slice(&id.to_be_bytes());
        }
        let t = self.tcp_off;
        let seq = u32::from_be_bytes([f[t + 4], f[t + 5], f[t + 6], f[t + 7]])
            .wrapping_add((i * self.mss) as u32);
        f[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
        if !last {
            // FIN and PSH belong to the last piece only.
            f[t + 13] &= !(0x01 | 0x08);
        }
        if software_checksums {
            let (src, dst) = if self.v6 {
                let s: [u8; 16] = f[ETH + 8..ETH + 24].try_into().unwrap_or_default();
                let d: [u8; 16] = f[ETH + 24..ETH + 40].try_into().unwrap_or_default();
                (
                    IpAddress::Ipv6(Ipv6Address::from(s)),
                    IpAddress::Ipv6(Ipv6Address::from(d)),
                )
            } else {
                smoltcp::wire::Ipv4Packet::new_unchecked(&mut f[ETH..t]).fill_checksum();
                let s: [u8; 4] = f[ETH + 12..ETH + 16].try_into().unwrap_or_default();
                let d: [u8; 4] = f[ETH + 16..ETH + 20].try_into().unwrap_or_default();
                (
                    IpAddress::Ipv4(Ipv4Address::from(s)),
                    IpAddress::Ipv4(Ipv4Address::from(d)),
                )
            };
            smoltcp::wire::TcpPacket::new_unchecked(&mut f[t..]).fill_checksum(&src, &dst);
        }
    }
}

/// The destination address and IP packet length of the IPv4 or IPv6
/// packet in `frame`.
fn ip_destination(frame: &[u8]) -> Option<(IpAddress, usize)> {
    match frame.get(12..14)? {
        [0x08, 0x00] => {
            let d: [u8; 4] = frame.get(30..34)?.try_into().ok()?;
            Some((
                IpAddress::Ipv4(Ipv4Address::from(d)),
                usize::from(u16::from_be_bytes([frame[16], frame[17]])),
            ))
        }
        [0x86, 0xdd] => {
            let d: [u8; 16] = frame.get(38..54)?.try_into().ok()?;
            Some((
                IpAddress::Ipv6(Ipv6Address::from(d)),
                40 + usize::from(u16::from_be_bytes([frame[18], frame[19]])),
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use smoltcp::wire::{Ipv4Packet, Ipv6Packet, TcpPacket};

    use super::*;

    const SRC4: [u8; 4] = [10, 0, 0, 1];
    const DST4: [u8; 4] = [10, 0, 0, 2];

    /// A TCP segment of ours over IPv4 (DF, id 7) or IPv6 with `options`,
    /// `flags` and `payload`, checksums filled in.
    fn segment(v6: bool, flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
        let tcp_len = 20 + options.len() + payload.len();
        let ip_hdr = if v6 { 40 } else { 20 };
        let mut f = vec![0u8; ETH + ip_hdr + tcp_len];
        let t = ETH + ip_hdr;
        if v6 {
            f[12..14].copy_from_slice(&[0x86, 0xdd]);
            f[ETH] = 0x60;
            f[ETH + 4..ETH + 6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
            f[ETH + 6] = 6;
            f[ETH + 7] = 64;
            f[ETH + 8..ETH + 24]
                .copy_from_slice(&"fd00::1".parse::<Ipv6Address>().unwrap().octets());
            f[ETH + 24..ETH + 40]
                .copy_from_slice(&"fd00::2".parse::<Ipv6Address>().unwrap().octets());
        } else {
            f[12..14].copy_from_slice(&[0x08, 0x00]);
            f[ETH] = 0x45;
            f[ETH + 2..ETH + 4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
            f[ETH + 5] = 7;
            f[ETH + 6] = 0x40;
            f[ETH + 8] = 64;
            f[ETH + 9] = 6;
            f[ETH + 12..ETH + 16].copy_from_slice(&SRC4);
            f[ETH + 16..ETH + 20].copy_from_slice(&DST4);
            Ipv4Packet::new_unchecked(&mut f[ETH..t]).fill_checksum();
        }
        f[t..t + 2].copy_from_slice(&80u16.to_be_bytes());
        f[t + 2..t + 4].copy_from_slice(&40000u16.to_be_bytes());
        f[t + 4..t + 8].copy_from_slice(&0xffff_ff00u32.to_be_bytes());
        f[t + 8..t + 12].copy_from_slice(&1234u32.to_be_bytes());
        f[t + 12] = (((20 + options.len()) / 4) as u8) << 4;
        f[t + 13] = flags;
        f[t + 14..t + 16].copy_from_slice(&1000u16.to_be_bytes());
        f[t + 20..t + 20 + options.len()].copy_from_slice(options);
        f[t + 20 + options.len()..].copy_from_slice(payload);
        let (s, d) = addrs(&f, v6);
        TcpPacket::new_unchecked(&mut f[t..]).fill_checksum(&s, &d);
        f
    }

    fn addrs(f: &[u8], v6: bool) -> (IpAddress, IpAddress) {
        if v6 {
            let p = Ipv6Packet::new_unchecked(&f[ETH..]);
            (p.src_addr().into(), p.dst_addr().into())
        } else {
            let p = Ipv4Packet::new_unchecked(&f[ETH..]);
            (p.src_addr().into(), p.dst_addr().into())
        }
    }

    /// Cuts `f` as the transmit path does and returns the pieces.
    fn cut(f: &[u8], mtu: u16) -> Vec<Vec<u8>> {
        let plan = Split::plan(f, mtu).expect("a segment to cut");
        let mut pieces = Vec::new();
        for i in 1..plan.pieces() {
            let mut out = vec![0u8; plan.piece_len(i)];
            plan.write(f, i, &mut out, true);
            pieces.push(out);
        }
        let mut first = f.to_vec();
        let len = plan.cut_first(&mut first, true);
        first.truncate(len);
        pieces.insert(0, first);
        pieces
    }

    fn check_pieces(v6: bool, mtu: u16) {
        let payload: Vec<u8> = (0..1448u32).map(|i| (i * 7 % 251) as u8).collect();
        // NOP NOP timestamps: 12 bytes of options, as smoltcp writes them.
        let options = [1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3];
        let f = segment(v6, 0x10 | 0x08 | 0x01, &options, &payload);
        let pieces = cut(&f, mtu);
        let hdr = ETH + if v6 { 40 } else { 20 } + 32;
        let mss = usize::from(mtu) + ETH - hdr;
        assert_eq!(pieces.len(), payload.len().div_ceil(mss));
        let mut data = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            assert!(
                p.len() - ETH <= usize::from(mtu),
                "piece {i}: {} bytes",
                p.len()
            );
            let (s, d) = addrs(p, v6);
            let tcp = if v6 {
                let ip = Ipv6Packet::new_checked(&p[ETH..]).unwrap();
                assert_eq!(usize::from(ip.payload_len()), p.len() - ETH - 40);
                TcpPacket::new_checked(&p[ETH + 40..]).unwrap()
            } else {
                let ip = Ipv4Packet::new_checked(&p[ETH..]).unwrap();
                assert!(ip.verify_checksum(), "piece {i}: IPv4 checksum");
                assert_eq!(usize::from(ip.total_len()), p.len() - ETH);
                assert_eq!(ip.ident(), 7 + i as u16);
                assert!(ip.dont_frag());
                TcpPacket::new_checked(&p[ETH + 20..]).unwrap()
            };
            assert!(tcp.verify_checksum(&s, &d), "piece {i}: TCP checksum");
            assert_eq!(
                tcp.seq_number().0 as u32,
                0xffff_ff00u32.wrapping_add(data.len() as u32),
                "piece {i}: SEQ"
            );
            assert_eq!(tcp.ack_number().0, 1234);
            assert_eq!(tcp.options(), &options);
            let last = i + 1 == pieces.len();
            assert_eq!(tcp.fin(), last, "piece {i}: FIN");
            assert_eq!(tcp.psh(), last, "piece {i}: PSH");
            assert!(tcp.ack());
            data.extend_from_slice(tcp.payload());
        }
        assert_eq!(data, payload, "the payload, byte for byte");
    }

    #[test]
    fn split_segments_are_byte_exact_with_valid_checksums() {
        check_pieces(false, 1000);
        check_pieces(false, MIN_PMTU_V4);
        check_pieces(true, MIN_PMTU_V6);
    }

    #[test]
    fn what_fits_or_is_not_data_is_not_cut() {
        let f = segment(false, 0x10, &[], &[0; 900]);
        assert_eq!(Split::plan(&f, 1000), None);
        assert!(Split::plan(&f, 900).is_some());
        let syn = segment(false, 0x02, &[], &[0; 900]);
        assert_eq!(Split::plan(&syn, 600), None);
        let mut udp = f.clone();
        udp[ETH + 9] = 17;
        assert_eq!(Split::plan(&udp, 600), None);
        for len in 0..f.len() {
            let _ = Split::plan(&f[..len], 600);
            let _ = too_big(&f[..len]);
        }
    }

    /// An ICMP "fragmentation needed" with `mtu` quoting `quoted`.
    fn frag_needed(quoted: &[u8], mtu: u16) -> Vec<u8> {
        let mut f = vec![0u8; ETH + 20 + 8];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[ETH] = 0x45;
        f[ETH + 9] = 1;
        f[ETH + 20] = 3;
        f[ETH + 21] = 4;
        f[ETH + 26..ETH + 28].copy_from_slice(&mtu.to_be_bytes());
        f.extend_from_slice(&quoted[ETH..ETH + 28]);
        f
    }

    #[test]
    fn too_big_names_the_flow_and_clamps_the_mtu() {
        let seg = segment(false, 0x10, &[], &[0; 1400]);
        let tb = too_big(&frag_needed(&seg, 1000)).unwrap();
        assert_eq!(tb.mtu, 1000);
        assert_eq!(tb.seq, 0xffff_ff00);
        assert_eq!(tb.flow.local_port, 80);
        assert_eq!(tb.flow.remote_port, 40000);
        assert_eq!(
            tb.flow.remote_addr,
            IpAddress::Ipv4(Ipv4Address::from(DST4))
        );
        assert_eq!(too_big(&frag_needed(&seg, 68)).unwrap().mtu, MIN_PMTU_V4);
        // No MTU given: the plateau below the quoted 1440 bytes.
        assert_eq!(too_big(&frag_needed(&seg, 0)).unwrap().mtu, 1006);
        // Nothing to learn at or above our link's MTU.
        assert_eq!(too_big(&frag_needed(&seg, 1500)), None);
        // Other ICMP errors are not Too Big.
        let mut unreachable = frag_needed(&seg, 1000);
        unreachable[ETH + 21] = 3;
        assert_eq!(too_big(&unreachable), None);

        let seg6 = segment(true, 0x10, &[], &[0; 1400]);
        let mut ptb = vec![0u8; ETH + 40 + 8];
        ptb[12..14].copy_from_slice(&[0x86, 0xdd]);
        ptb[ETH] = 0x60;
        ptb[ETH + 6] = 58;
        ptb[ETH + 40] = 2;
        ptb[ETH + 44..ETH + 48].copy_from_slice(&1000u32.to_be_bytes());
        ptb.extend_from_slice(&seg6[ETH..ETH + 48]);
        let tb = too_big(&ptb).unwrap();
        assert_eq!(tb.mtu, MIN_PMTU_V6, "IPv6 never below 1280");
        assert_eq!(tb.flow.local_port, 80);
    }

    #[test]
    fn table_lowers_never_raises_expires_and_stays_bounded() {
        let mut t = PathMtu::new();
        let big = segment(false, 0x10, &[], &[0; 1400]);
        assert_eq!(t.exceeded(&big, 0), None);
        let dst = IpAddress::Ipv4(Ipv4Address::from(DST4));
        t.lower(dst, 1000, 0);
        assert_eq!(t.exceeded(&big, 1), Some(1000));
        t.lower(dst, 1200, 2);
        assert_eq!(t.exceeded(&big, 3), Some(1000), "a larger MTU is ignored");
        let small = segment(false, 0x10, &[], &[0; 900]);
        assert_eq!(t.exceeded(&small, 3), None);
        assert_eq!(t.exceeded(&big, PMTU_EXPIRES_NS), None, "expired");
        assert_eq!(t.len(), 0);
        for i in 0..(PMTU_ENTRIES as u32 * 2) {
            let a = IpAddress::Ipv4(Ipv4Address::from((0x0a01_0000 + i).to_be_bytes()));
            t.lower(a, 1000, u64::from(i));
        }
        assert_eq!(t.len(), PMTU_ENTRIES);
    }
}
