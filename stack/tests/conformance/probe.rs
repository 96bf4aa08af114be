//! A raw TCP/IP peer for the conformance tests: an AF_PACKET socket on the
//! peer's end of a veth that sends hand-made frames from an address of its
//! own (one the peer's kernel does not hold, so that kernel never answers
//! for it) and reads what the target sends back. It answers ARP and
//! neighbour solicitations for that address itself while it waits.

#![allow(dead_code)]

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::{AtomicU16, Ordering},
    time::{Duration, Instant},
};

/// TCP flag bits.
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;

/// How long a reply the target owes may take; only a bound for a test that
/// would otherwise hang, never a measurement.
pub const REPLY_WITHIN: Duration = Duration::from_secs(5);

/// The probe's own addresses, on the peer's subnets.
pub const PROBE_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x0f, 0x77];
pub const PROBE_IP4: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 77);
pub const PROBE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x88, 0, 0, 0, 0, 0, 0x77);
/// Second addresses, used by one test only, so the target has never
/// resolved them before it.
pub const FRESH_IP4: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 78);
pub const FRESH_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x88, 0, 0, 0, 0, 0, 0x78);

/// What is probed: a host on the other end of a veth.
#[derive(Clone, Debug)]
pub struct Target {
    /// "kernel" or "lstack", for messages.
    pub name: &'static str,
    /// The namespace holding the probe's end of the veth.
    pub ns: String,
    /// The probe's end of the veth.
    pub ifname: String,
    pub mac: [u8; 6],
    pub ip4: Ipv4Addr,
    pub ip6: Ipv6Addr,
}

/// A TCP segment or another packet the target sent.
#[derive(Clone, Debug)]
pub enum Packet {
    Tcp(Segment),
    /// An ICMPv4 message: type, code, the rest of it (from byte 4 on).
    Icmp4 {
        ty: u8,
        code: u8,
        body: Vec<u8>,
    },
    /// An ICMPv6 message: type, code, the rest of it (from byte 4 on).
    Icmp6 {
        ty: u8,
        code: u8,
        body: Vec<u8>,
    },
}

/// A TCP segment the target sent.
#[derive(Clone, Debug)]
pub struct Segment {
    pub v6: bool,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
    /// The TCP checksum is right (a kernel target on a veth leaves it to
    /// an offload that never happens: check it on lstack only).
    pub checksum_ok: bool,
}

impl Segment {
    /// tcpdump-like flags: `[S.]`, `[R.]`, `[.]`.
    pub fn flag_str(&self) -> String {
        let mut s = String::from("[");
        for (bit, c) in [(SYN, 'S'), (FIN, 'F'), (RST, 'R'), (PSH, 'P'), (URG, 'U')] {
            if self.flags & bit != 0 {
                s.push(c);
            }
        }
        if self.flags & ACK != 0 {
            s.push('.');
        }
        s.push(']');
        s
    }

    /// The MSS option, if the segment carries one.
    pub fn mss(&self) -> Option<u16> {
        tcp_option(&self.options, 2).map(|v| u16::from_be_bytes([v[0], v[1]]))
    }

    /// The window-scale option, if the segment carries one.
    pub fn window_scale(&self) -> Option<u8> {
        tcp_option(&self.options, 3).map(|v| v[0])
    }

    /// Whether the segment carries a timestamp option.
    pub fn has_timestamps(&self) -> bool {
        tcp_option(&self.options, 8).is_some()
    }

    /// The timestamp option's TSval and TSecr, if present.
    pub fn timestamps(&self) -> Option<(u32, u32)> {
        let v = tcp_option(&self.options, 8).filter(|v| v.len() == 8)?;
        Some((
            u32::from_be_bytes(v[..4].try_into().unwrap()),
            u32::from_be_bytes(v[4..].try_into().unwrap()),
        ))
    }

    /// The length of the IP packet that carried the segment (no IPv4
    /// options or IPv6 extension headers: the targets send none).
    pub fn ip_len(&self) -> usize {
        (if self.v6 { 40 } else { 20 }) + 20 + self.options.len() + self.payload.len()
    }
}

/// The value of TCP option `kind` in `opts`.
fn tcp_option(opts: &[u8], kind: u8) -> Option<&[u8]> {
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => return None,
            1 => i += 1,
            k => {
                let len = usize::from(*opts.get(i + 1)?);
                if len < 2 || i + len > opts.len() {
                    return None;
                }
                if k == kind {
                    return Some(&opts[i + 2..i + len]);
                }
                i += len;
            }
        }
    }
    None
}

/// A fresh source port for each flow a test opens.
pub fn fresh_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(41000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One's-complement sum of `b` added to `acc` (not folded).
fn sum(mut acc: u32, b: &[u8]) -> u32 {
    for c in b.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The raw socket and the addresses it speaks for.
pub struct Probe {
    fd: OwnedFd,
    ifindex: i32,
    pub target: Target,
}

impl Probe {
    /// Opens the probe's socket in `target`'s peer namespace.
    pub fn open(target: &Target) -> Probe {
        let ifname = target.ifname.clone();
        let (fd, ifindex) = netns_testbed::in_namespace(&target.ns, move || {
            // SAFETY: plain socket syscalls on a fresh fd with valid arguments.
            unsafe {
                let proto = (libc::ETH_P_ALL as u16).to_be();
                let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto));
                assert!(fd >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
                let name = std::ffi::CString::new(ifname).unwrap();
                let index = libc::if_nametoindex(name.as_ptr()) as i32;
                assert!(index > 0, "no interface {name:?}");
                let mut addr: libc::sockaddr_ll = std::mem::zeroed();
                addr.sll_family = libc::AF_PACKET as u16;
                addr.sll_protocol = proto;
                addr.sll_ifindex = index;
                let r = libc::bind(
                    fd,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
                (OwnedFd::from_raw_fd(fd), index)
            }
        })
        .expect("entering the peer namespace");
        Probe {
            fd,
            ifindex,
            target: target.clone(),
        }
    }

    /// Sends one Ethernet frame.
    pub fn send(&self, frame: &[u8]) {
        // SAFETY: sendto on our own fd with a valid buffer and address.
        unsafe {
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = self.ifindex;
            addr.sll_halen = 6;
            let n = libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(
                n,
                frame.len() as isize,
                "sendto: {}",
                std::io::Error::last_os_error()
            );
        }
    }

    /// Reads frames until `want` accepts a packet of the target (returned)
    /// or `within` passes (`None`). Every packet of the target seen on the
    /// way is also given to `seen`. ARP and neighbour solicitations for the
    /// probe's address are answered meanwhile.
    pub fn wait_for(
        &self,
        within: Duration,
        mut want: impl FnMut(&Packet) -> bool,
        mut seen: impl FnMut(&Packet),
    ) -> Option<Packet> {
        let end = Instant::now() + within;
        let mut buf = vec![0u8; 4096];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll on one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
            if r <= 0 {
                continue;
            }
            // SAFETY: recv into our own buffer.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                continue;
            }
            let frame = &buf[..n as usize];
            if frame.len() < 14 || frame[6..12] != self.target.mac {
                continue;
            }
            if self.answer_neighbour(frame) {
                continue;
            }
            if let Some(p) = self.parse(frame) {
                seen(&p);
                if want(&p) {
                    return Some(p);
                }
            }
        }
    }

    /// The next TCP segment of the flow `sport` <- `dport` that `want`
    /// accepts.
    pub fn wait_segment(
        &self,
        dport: u16,
        sport: u16,
        mut want: impl FnMut(&Segment) -> bool,
    ) -> Option<Segment> {
        let p = self.wait_for(
            REPLY_WITHIN,
            |p| matches!(p, Packet::Tcp(s) if s.sport == dport && s.dport == sport && want(s)),
            |_| {},
        )?;
        match p {
            Packet::Tcp(s) => Some(s),
            _ => None,
        }
    }

    /// Answers an ARP request or neighbour solicitation for the probe's
    /// address; returns whether `frame` was one.
    fn answer_neighbour(&self, frame: &[u8]) -> bool {
        let et = u16::from_be_bytes([frame[12], frame[13]]);
        if et == 0x0806 && frame.len() >= 42 {
            let a = &frame[14..];
            let asked = &a[24..28];
            if a[7] == 1 && (asked == PROBE_IP4.octets() || asked == FRESH_IP4.octets()) {
                let mut r = Vec::with_capacity(42);
                r.extend_from_slice(&a[8..14]);
                r.extend_from_slice(&PROBE_MAC);
                r.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
                r.extend_from_slice(&PROBE_MAC);
                r.extend_from_slice(asked);
                r.extend_from_slice(&a[8..18]);
                self.send(&r);
            }
            return true;
        }
        if et == 0x86dd && frame.len() >= 14 + 40 + 24 && frame[14 + 6] == 58 {
            let icmp = &frame[54..];
            let asked = &icmp[8..24];
            if icmp[0] == 135 && (asked == PROBE_IP6.octets() || asked == FRESH_IP6.octets()) {
                let src: [u8; 16] = frame[22..38].try_into().unwrap();
                let src = Ipv6Addr::from(src);
                let mut body = vec![0x60, 0, 0, 0];
                body.extend_from_slice(asked);
                body.extend_from_slice(&[2, 1]);
                body.extend_from_slice(&PROBE_MAC);
                let from: [u8; 16] = asked.try_into().unwrap();
                let mut m = vec![136, 0, 0, 0];
                m.extend_from_slice(&body);
                self.send(&self.icmp6_frame_from(Ipv6Addr::from(from), src, &m));
                return true;
            }
        }
        false
    }

    fn parse(&self, frame: &[u8]) -> Option<Packet> {
        let et = u16::from_be_bytes([frame[12], frame[13]]);
        let (v6, proto, l4, addrs) = match et {
            0x0800 => {
                let ip = frame.get(14..)?;
                let ihl = usize::from(ip[0] & 0xf) * 4;
                let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
                (false, ip[9], ip.get(ihl..total)?, ip.get(12..20)?)
            }
            0x86dd => {
                let ip = frame.get(14..)?;
                let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
                (true, ip[6], ip.get(40..40 + len)?, ip.get(8..40)?)
            }
            _ => return None,
        };
        let pseudo = sum(0, addrs) + l4.len() as u32 + u32::from(proto);
        match proto {
            6 if l4.len() >= 20 => {
                let off = usize::from(l4[12] >> 4) * 4;
                Some(Packet::Tcp(Segment {
                    v6,
                    sport: u16::from_be_bytes([l4[0], l4[1]]),
                    dport: u16::from_be_bytes([l4[2], l4[3]]),
                    seq: u32::from_be_bytes(l4[4..8].try_into().unwrap()),
                    ack: u32::from_be_bytes(l4[8..12].try_into().unwrap()),
                    flags: l4[13],
                    window: u16::from_be_bytes([l4[14], l4[15]]),
                    options: l4.get(20..off)?.to_vec(),
                    payload: l4.get(off..)?.to_vec(),
                    checksum_ok: fold(sum(pseudo, l4)) == 0,
                }))
            }
            1 if !v6 && l4.len() >= 8 => Some(Packet::Icmp4 {
                ty: l4[0],
                code: l4[1],
                body: l4[4..].to_vec(),
            }),
            58 if v6 && l4.len() >= 8 => Some(Packet::Icmp6 {
                ty: l4[0],
                code: l4[1],
                body: l4[4..].to_vec(),
            }),
            _ => None,
        }
    }

    fn ether(&self, ethertype: u16) -> Vec<u8> {
        let mut f = Vec::with_capacity(128);
        f.extend_from_slice(&self.target.mac);
        f.extend_from_slice(&PROBE_MAC);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    /// An IPv4 packet of protocol `proto` to the target.
    pub fn ipv4_frame(&self, proto: u8, id: u16, l4: &[u8]) -> Vec<u8> {
        let mut f = self.ether(0x0800);
        let total = (20 + l4.len()) as u16;
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&id.to_be_bytes());
        ip.extend_from_slice(&[0x40, 0, 64, proto, 0, 0]);
        ip.extend_from_slice(&PROBE_IP4.octets());
        ip.extend_from_slice(&self.target.ip4.octets());
        let c = fold(sum(0, &ip));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(l4);
        f
    }

    /// An IPv6 packet to `dst` whose first header after the fixed one is
    /// `next` (`ext`, extension headers, come before `l4`; `l4_proto` is
    /// the upper layer for its checksum, which the caller has filled in).
    fn ipv6_frame(&self, dst: Ipv6Addr, next: u8, hop_limit: u8, rest: &[u8]) -> Vec<u8> {
        let mut f = self.ether(0x86dd);
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(rest.len() as u16).to_be_bytes());
        f.extend_from_slice(&[next, hop_limit]);
        f.extend_from_slice(&PROBE_IP6.octets());
        f.extend_from_slice(&dst.octets());
        f.extend_from_slice(rest);
        f
    }

    fn pseudo_sum(&self, v6: bool, proto: u8, len: usize) -> u32 {
        if v6 {
            let mut acc = sum(0, &PROBE_IP6.octets());
            acc = sum(acc, &self.target.ip6.octets());
            acc + (len as u32) + u32::from(proto)
        } else {
            let mut acc = sum(0, &PROBE_IP4.octets());
            acc = sum(acc, &self.target.ip4.octets());
            acc + (len as u32) + u32::from(proto)
        }
    }

    /// An ICMPv6 message to `dst` (hop limit 255, as NDP needs).
    pub fn icmp6_frame(&self, dst: Ipv6Addr, ty: u8, code: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![ty, code, 0, 0];
        m.extend_from_slice(body);
        self.icmp6_frame_from(PROBE_IP6, dst, &m)
    }

    /// The ICMPv6 message `m` (checksum field zero) from `src` to `dst`.
    pub fn icmp6_frame_from(&self, src: Ipv6Addr, dst: Ipv6Addr, m: &[u8]) -> Vec<u8> {
        let mut m = m.to_vec();
        let acc = sum(sum(0, &src.octets()), &dst.octets()) + m.len() as u32 + 58;
        let c = fold(sum(acc, &m));
        m[2..4].copy_from_slice(&c.to_be_bytes());
        let mut f = self.ether(0x86dd);
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(m.len() as u16).to_be_bytes());
        f.extend_from_slice(&[58, 255]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        f.extend_from_slice(&m);
        f
    }

    /// An ICMP echo request to the target from `src`.
    pub fn echo4_from(&self, src: Ipv4Addr, id: u16) -> Vec<u8> {
        let mut m = vec![8, 0, 0, 0];
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m.extend_from_slice(b"conformance");
        let c = fold(sum(0, &m));
        m[2..4].copy_from_slice(&c.to_be_bytes());
        let mut f = self.ipv4_frame(1, id, &m);
        f[14 + 12..14 + 16].copy_from_slice(&src.octets());
        f[14 + 10] = 0;
        f[14 + 11] = 0;
        let c = fold(sum(0, &f[14..34]));
        f[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
        f
    }

    /// An ICMP "fragmentation needed" (IPv4) or Packet Too Big (IPv6)
    /// reporting next-hop `mtu`, as a router on the way would send it,
    /// quoting the target's segment `s` but with `seq`.
    pub fn too_big(&self, s: &Segment, seq: u32, mtu: u16) -> Vec<u8> {
        let mut tcp = Vec::with_capacity(20);
        tcp.extend_from_slice(&s.sport.to_be_bytes());
        tcp.extend_from_slice(&s.dport.to_be_bytes());
        tcp.extend_from_slice(&seq.to_be_bytes());
        tcp.extend_from_slice(&s.ack.to_be_bytes());
        tcp.extend_from_slice(&[((20 + s.options.len()) / 4) as u8 * 16, s.flags]);
        tcp.extend_from_slice(&s.window.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0]);
        if s.v6 {
            let mut body = vec![0, 0];
            body.extend_from_slice(&mtu.to_be_bytes());
            body.extend_from_slice(&[0x60, 0, 0, 0]);
            body.extend_from_slice(&((s.ip_len() - 40) as u16).to_be_bytes());
            body.extend_from_slice(&[6, 64]);
            body.extend_from_slice(&self.target.ip6.octets());
            body.extend_from_slice(&PROBE_IP6.octets());
            body.extend_from_slice(&tcp);
            self.icmp6_frame(self.target.ip6, 2, 0, &body)
        } else {
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&(s.ip_len() as u16).to_be_bytes());
            ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
            ip.extend_from_slice(&self.target.ip4.octets());
            ip.extend_from_slice(&PROBE_IP4.octets());
            let c = fold(sum(0, &ip));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            let mut m = vec![3, 4, 0, 0, 0, 0];
            m.extend_from_slice(&mtu.to_be_bytes());
            m.extend_from_slice(&ip);
            m.extend_from_slice(&tcp);
            let c = fold(sum(0, &m));
            m[2..4].copy_from_slice(&c.to_be_bytes());
            self.ipv4_frame(1, 2, &m)
        }
    }

    /// A TCP header and payload with a correct checksum.
    #[allow(clippy::too_many_arguments)]
    pub fn tcp_bytes(
        &self,
        v6: bool,
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        options: &[u8],
        payload: &[u8],
    ) -> Vec<u8> {
        assert!(options.len().is_multiple_of(4));
        let mut t = Vec::with_capacity(20 + options.len() + payload.len());
        t.extend_from_slice(&sport.to_be_bytes());
        t.extend_from_slice(&dport.to_be_bytes());
        t.extend_from_slice(&seq.to_be_bytes());
        t.extend_from_slice(&ack.to_be_bytes());
        t.push(((20 + options.len()) / 4) as u8 * 16);
        t.push(flags);
        t.extend_from_slice(&65535u16.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 0]);
        t.extend_from_slice(options);
        t.extend_from_slice(payload);
        let c = fold(sum(self.pseudo_sum(v6, 6, t.len()), &t));
        t[16..18].copy_from_slice(&c.to_be_bytes());
        t
    }

    /// A TCP segment to the target in a frame.
    #[allow(clippy::too_many_arguments)]
    pub fn tcp_frame(
        &self,
        v6: bool,
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        options: &[u8],
        payload: &[u8],
    ) -> Vec<u8> {
        let t = self.tcp_bytes(v6, sport, dport, seq, ack, flags, options, payload);
        if v6 {
            self.ipv6_frame(self.target.ip6, 6, 64, &t)
        } else {
            self.ipv4_frame(6, 1, &t)
        }
    }

    /// A TCP segment to the target over IPv6 behind extension header `ext`
    /// (whose first byte, the next header, is set to TCP here) of type
    /// `ext_type`.
    pub fn tcp6_behind(&self, ext_type: u8, ext: &[u8], tcp: &[u8]) -> Vec<u8> {
        let mut rest = ext.to_vec();
        rest[0] = 6;
        rest.extend_from_slice(tcp);
        self.ipv6_frame(self.target.ip6, ext_type, 64, &rest)
    }
}

/// A connection the probe opened, in the probe's terms.
#[derive(Clone, Copy, Debug)]
pub struct Conn {
    pub v6: bool,
    pub sport: u16,
    pub dport: u16,
    /// The next sequence number the probe sends (the target's RCV.NXT).
    pub snd_nxt: u32,
    /// The next sequence number the probe expects (the target's SND.NXT).
    pub rcv_nxt: u32,
}

/// SYN options of a Linux client: MSS 1460, SACK permitted, no timestamps,
/// window scale 7.
pub const SYN_OPTIONS: [u8; 12] = [2, 4, 0x05, 0xb4, 4, 2, 1, 1, 1, 3, 3, 7];

impl Probe {
    /// Sends a SYN from `sport` with `options`, returns the SYN-ACK.
    pub fn syn(&self, v6: bool, sport: u16, dport: u16, iss: u32, options: &[u8]) -> Segment {
        self.send(&self.tcp_frame(v6, sport, dport, iss, 0, SYN, options, &[]));
        self.wait_segment(dport, sport, |s| s.flags & (SYN | ACK) == SYN | ACK)
            .unwrap_or_else(|| panic!("{}: no SYN-ACK from port {dport}", self.target.name))
    }

    /// Opens a connection to `dport` (handshake with `options`).
    pub fn connect_with(&self, v6: bool, dport: u16, options: &[u8]) -> Conn {
        let sport = fresh_port();
        let iss = 0x1000_0000u32.wrapping_mul(u32::from(sport));
        let sa = self.syn(v6, sport, dport, iss, options);
        assert_eq!(
            sa.ack,
            iss.wrapping_add(1),
            "{}: SYN-ACK ack",
            self.target.name
        );
        let c = Conn {
            v6,
            sport,
            dport,
            snd_nxt: iss.wrapping_add(1),
            rcv_nxt: sa.seq.wrapping_add(1),
        };
        self.send_flags(&c, ACK, &[]);
        c
    }

    /// Opens a connection to `dport` with [`SYN_OPTIONS`].
    pub fn connect(&self, v6: bool, dport: u16) -> Conn {
        self.connect_with(v6, dport, &SYN_OPTIONS)
    }

    /// Sends a segment of `c` at its current numbers (does not advance them).
    pub fn send_flags(&self, c: &Conn, flags: u8, payload: &[u8]) {
        self.send_at(c, c.snd_nxt, c.rcv_nxt, flags, payload);
    }

    /// Sends a segment of `c` with explicit numbers.
    pub fn send_at(&self, c: &Conn, seq: u32, ack: u32, flags: u8, payload: &[u8]) {
        self.send(&self.tcp_frame(c.v6, c.sport, c.dport, seq, ack, flags, &[], payload));
    }

    /// Sends `data` on `c` (one segment) and advances it.
    pub fn send_data(&self, c: &mut Conn, data: &[u8]) {
        self.send_flags(c, ACK | PSH, data);
        c.snd_nxt = c.snd_nxt.wrapping_add(data.len() as u32);
    }

    /// Reads `n` bytes of in-order data on `c`, acknowledging every segment;
    /// returns them and the largest segment seen. Panics if they do not
    /// come.
    pub fn read_data(&self, c: &mut Conn, n: usize) -> (Vec<u8>, usize) {
        let mut largest = 0;
        let got = self.read_data_checked(c, n, |s| largest = largest.max(s.payload.len()));
        (got, largest)
    }

    /// [`Probe::read_data`], showing `check` every segment with data that
    /// comes meanwhile, in order or not.
    pub fn read_data_checked(
        &self,
        c: &mut Conn,
        n: usize,
        mut check: impl FnMut(&Segment),
    ) -> Vec<u8> {
        let mut got = Vec::new();
        while got.len() < n {
            let s = self
                .wait_segment(c.dport, c.sport, |s| !s.payload.is_empty())
                .unwrap_or_else(|| {
                    panic!(
                        "{}: only {} of {n} bytes came back",
                        self.target.name,
                        got.len()
                    )
                });
            check(&s);
            if s.seq == c.rcv_nxt {
                got.extend_from_slice(&s.payload);
                c.rcv_nxt = c.rcv_nxt.wrapping_add(s.payload.len() as u32);
            }
            self.send_flags(c, ACK, &[]);
        }
        got
    }

    /// Sends `data` and expects it echoed back whole.
    pub fn echo(&self, c: &mut Conn, data: &[u8]) {
        self.send_data(c, data);
        let (got, _) = self.read_data(c, data.len());
        assert_eq!(got, data, "{}: echoed bytes", self.target.name);
    }
}
