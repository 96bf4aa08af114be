//! Handshakes in progress, and what keeps a SYN flood from holding them.
//!
//! A peer that sends SYNs and never completes them, from addresses that may
//! not even exist, makes a stack hold a socket per SYN. A kernel bounds its
//! SYN queue and, when it is full, answers with SYN cookies: the SYN-ACK
//! carries the state, and nothing is held until the final ACK proves the
//! client real. smoltcp's sockets cannot take a cookie (each chooses its own
//! initial sequence number and starts from LISTEN), so this module proves
//! clients real another way, also without holding anything for them:
//!
//! - [`HalfOpen`]: each stack thread's handshakes, bounded in number (a
//!   share of `tcp_conn_count`) and in age (`syn_recv_lifetime`, like a
//!   kernel's SYN-ACK retries). Over the bound, the oldest handshake of an
//!   unproven source makes room first.
//! - [`Challenge`]: while the table is full, a SYN from a source not yet
//!   proven gets no socket but a *challenge*: a SYN-ACK whose acknowledgment
//!   number is a keyed hash of the flow and the minute, deliberately not the
//!   one the client expects. RFC 9293 (3.10.7.3) makes a client in SYN-SENT
//!   answer such a segment with `<SEQ=SEG.ACK><CTL=RST>` and keep trying;
//!   Linux retries its SYN at once (within its minimum RTO), others after
//!   their usual SYN retransmission timeout. The RST returns the hash, which
//!   only a host that received our SYN-ACK can know, so its source address
//!   is [`VerifiedSources`] for a while. Its next SYN gets a socket even
//!   though the table is full, and floods from spoofed addresses can never
//!   push it out.
//!
//! Nothing here reads the clock or allocates per frame beyond the table's
//! bound; only the stack thread touches a [`HalfOpen`].

use std::{
    collections::{HashMap, VecDeque},
    hash::BuildHasher,
    time::Duration,
};

use smoltcp::{
    iface::SocketHandle,
    phy::ChecksumCapabilities,
    wire::{
        EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
        Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
    },
};

use crate::classify::FlowKey;

/// How long a verified source keeps its standing, and how long after the
/// last challenge RSTs are checked for one.
const VERIFIED_FOR: Duration = Duration::from_secs(120);
/// Most sources remembered as verified; the oldest go first.
const MAX_VERIFIED: usize = 8192;
/// A challenge's hash changes every minute; the previous minute's is
/// accepted too.
pub(crate) const CHALLENGE_PERIOD_NS: u64 = 60_000_000_000;

/// The half-open connections (SYN-RECEIVED) of one stack thread, oldest
/// first (see the module documentation). Every operation is O(1)
/// amortised, and none allocates once the table has grown to its bound.
#[derive(Debug)]
pub(crate) struct HalfOpen {
    /// Live entries; a free slot is `None`.
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    /// (slot, serial) in arrival order, one queue for sources not proven
    /// and one for verified ones; an entry whose slot has another serial
    /// by now is stale and skipped.
    unproven: VecDeque<(u32, u64)>,
    proven: VecDeque<(u32, u64)>,
    next_serial: u64,
    live: usize,
    limit: usize,
    lifetime_ns: u64,
}

/// One handshake: where its socket is and when it began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    serial: u64,
    /// The shard holding its socket.
    pub(crate) shard: u32,
    /// Its socket.
    pub(crate) handle: SocketHandle,
    born_ns: u64,
    verified: bool,
}

/// Why a half-open connection was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The table was full: the oldest made room for a new one.
    Evicted,
    /// Older than the lifetime.
    Expired,
}

impl HalfOpen {
    /// A table of at most `limit` entries (at least 1) that live at most
    /// `lifetime`.
    pub(crate) fn new(limit: usize, lifetime: Duration) -> Self {
        let limit = limit.max(1);
        Self {
            slots: Vec::with_capacity(limit),
            free: Vec::with_capacity(limit),
            unproven: VecDeque::with_capacity(limit),
            proven: VecDeque::new(),
            next_serial: 1,
            live: 0,
            limit,
            lifetime_ns: u64::try_from(lifetime.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// Live entries.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// Whether a new handshake would go over the bound: the time to
    /// challenge sources not proven yet.
    pub(crate) fn is_full(&self) -> bool {
        self.live >= self.limit
    }

    /// Records a new handshake of socket `handle` in `shard` at `now_ns`,
    /// from a `verified` source or not; returns its slot. The table may go
    /// over its bound until the next [`HalfOpen::victim`] calls.
    pub(crate) fn admit(
        &mut self,
        shard: usize,
        handle: SocketHandle,
        now_ns: u64,
        verified: bool,
    ) -> u32 {
        let serial = self.next_serial;
        self.next_serial += 1;
        let entry = Some(Entry {
            serial,
            shard: shard as u32,
            handle,
            born_ns: now_ns,
            verified,
        });
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = entry;
                slot
            }
            None => {
                self.slots.push(entry);
                (self.slots.len() - 1) as u32
            }
        };
        self.live += 1;
        // Handshakes that completed left stale entries behind; drop them
        // once they outnumber the live ones, so the queues stay O(limit).
        if self.unproven.len() + self.proven.len() >= 2 * self.live.max(self.limit) {
            let slots = &self.slots;
            let live = |&(slot, serial): &(u32, u64)| {
                slots[slot as usize].is_some_and(|e| e.serial == serial)
            };
            self.unproven.retain(live);
            self.proven.retain(live);
        }
        if verified {
            self.proven.push_back((slot, serial));
        } else {
            self.unproven.push_back((slot, serial));
        }
        slot
    }

    /// The handshake in `slot` ended (established, reset, or dropped).
    pub(crate) fn leave(&mut self, slot: u32) {
        if let Some(e) = self.slots.get_mut(slot as usize) {
            if e.take().is_some() {
                self.free.push(slot);
                self.live -= 1;
            }
        }
    }

    /// The next entry to drop at `now_ns`, if any: while the table is over
    /// its bound the oldest from an unproven source (a verified one only
    /// when there is none), then any over its lifetime. The caller drops
    /// the connection and calls [`HalfOpen::leave`].
    pub(crate) fn victim(&mut self, now_ns: u64) -> Option<(u32, Entry, End)> {
        let (unproven, proven) = (self.oldest(false), self.oldest(true));
        if self.live > self.limit {
            let (slot, entry) = unproven.or(proven)?;
            self.take_front(entry.verified);
            return Some((slot, entry, End::Evicted));
        }
        let expired = |e: &Entry| now_ns.saturating_sub(e.born_ns) > self.lifetime_ns;
        let (slot, entry) = [unproven, proven]
            .into_iter()
            .flatten()
            .find(|(_, e)| expired(e))?;
        self.take_front(entry.verified);
        Some((slot, entry, End::Expired))
    }

    /// The oldest live entry of one queue, dropping stale ones in front.
    fn oldest(&mut self, verified: bool) -> Option<(u32, Entry)> {
        let queue = if verified {
            &mut self.proven
        } else {
            &mut self.unproven
        };
        while let Some(&(slot, serial)) = queue.front() {
            match self.slots[slot as usize] {
                Some(e) if e.serial == serial => return Some((slot, e)),
                _ => {
                    queue.pop_front();
                }
            }
        }
        None
    }

    fn take_front(&mut self, verified: bool) {
        if verified {
            self.proven.pop_front();
        } else {
            self.unproven.pop_front();
        }
    }
}

/// Sources that answered a challenge, each until its deadline; at most
/// [`MAX_VERIFIED`], the oldest forgotten first. Only hosts that receive
/// what we send to an address can get it here, so a flood of spoofed
/// addresses cannot fill it.
#[derive(Debug, Default)]
pub(crate) struct VerifiedSources {
    until: HashMap<IpAddress, u64>,
    order: VecDeque<(IpAddress, u64)>,
}

impl VerifiedSources {
    /// Whether `addr` answered a challenge that is still good at `now_ns`.
    pub(crate) fn contains(&self, addr: &IpAddress, now_ns: u64) -> bool {
        self.until.get(addr).is_some_and(|&t| t > now_ns)
    }

    /// Remembers `addr` as verified from `now_ns` on.
    pub(crate) fn insert(&mut self, addr: IpAddress, now_ns: u64) {
        let until = now_ns + VERIFIED_FOR.as_nanos() as u64;
        while self.until.len() >= MAX_VERIFIED || self.order.len() >= 2 * MAX_VERIFIED {
            let Some((old, t)) = self.order.pop_front() else {
                break;
            };
            if self.until.get(&old) == Some(&t) {
                self.until.remove(&old);
            }
        }
        self.until.insert(addr, until);
        self.order.push_back((addr, until));
    }

    /// Sources remembered.
    pub(crate) fn len(&self) -> usize {
        self.until.len()
    }
}

/// Challenges: the keyed hash, the SYN-ACK that carries it and the check
/// of the RST that brings it back.
#[derive(Debug)]
pub(crate) struct Challenge {
    key: std::collections::hash_map::RandomState,
}

impl Challenge {
    /// Challenges with a random key of this process's.
    pub(crate) fn new() -> Self {
        Self {
            key: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The acknowledgment number a challenge to `flow` carries in the
    /// period of `now_ns` (`back` periods before): never zero, and never
    /// `client_next`, the one the client would accept.
    fn value(&self, flow: &FlowKey, now_ns: u64, back: u64) -> u32 {
        let period = (now_ns / CHALLENGE_PERIOD_NS).wrapping_sub(back);
        let h = self.key.hash_one((
            flow.local_addr,
            flow.local_port,
            flow.remote_addr,
            flow.remote_port,
            period,
        ));
        (h as u32) | 1
    }

    /// The challenge SYN-ACK answering the SYN `frame` of `flow` at
    /// `now_ns`, written into `out` (at least [`Challenge::FRAME_MAX`]
    /// bytes); returns its length, or `None` if `frame` is not a TCP SYN
    /// it can answer. It goes back to the MAC the SYN came from, so it
    /// needs no neighbour lookup (a spoofed on-link source never answers
    /// one).
    pub(crate) fn syn_ack(
        &self,
        frame: &[u8],
        flow: &FlowKey,
        now_ns: u64,
        our_mac: EthernetAddress,
        out: &mut [u8],
    ) -> Option<usize> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        let client_seq = match eth.ethertype() {
            EthernetProtocol::Ipv4 => {
                let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
                TcpPacket::new_checked(ip.payload()).ok()?.seq_number()
            }
            EthernetProtocol::Ipv6 => {
                let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
                if ip.next_header() != IpProtocol::Tcp {
                    return None;
                }
                TcpPacket::new_checked(ip.payload()).ok()?.seq_number()
            }
            _ => return None,
        };
        let client_next = client_seq + 1;
        let mut ack = self.value(flow, now_ns, 0);
        if TcpSeqNumber(ack as i32) == client_next {
            ack = ack.wrapping_add(2);
        }
        // Our side's number does not matter: the client resets.
        let tcp = bare_segment(flow, TcpControl::Syn, ack.rotate_left(16), ack, 0);
        let eth = EthernetRepr {
            src_addr: our_mac,
            dst_addr: eth.src_addr(),
            ethertype: eth.ethertype(),
        };
        emit_frame(&eth, flow.local_addr, flow.remote_addr, &tcp, out)
    }

    /// Room [`Challenge::syn_ack`] needs: Ethernet, IPv6 and a bare TCP
    /// header.
    pub(crate) const FRAME_MAX: usize = 14 + 40 + 20;

    /// Whether the TCP segment `frame` of `flow` is the RST a client sends
    /// back for a challenge of the last two periods.
    pub(crate) fn answered(&self, frame: &[u8], flow: &FlowKey, now_ns: u64) -> bool {
        let Some(seq) = rst_seq(frame) else {
            return false;
        };
        (0..2).any(|back| {
            let v = self.value(flow, now_ns, back);
            seq == v || seq == v.wrapping_add(2)
        })
    }
}

/// A segment of `flow` from our side with no options and no data.
pub(crate) fn bare_segment(
    flow: &FlowKey,
    control: TcpControl,
    seq: u32,
    ack: u32,
    window: u16,
) -> TcpRepr<'static> {
    TcpRepr {
        src_port: flow.local_port,
        dst_port: flow.remote_port,
        control,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: Some(TcpSeqNumber(ack as i32)),
        window_len: window,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload: &[],
    }
}

/// Writes `tcp` from `src` to `dst` in an Ethernet frame `eth` into `out`,
/// with software checksums; returns its length, or `None` if `out` is too
/// small or the addresses are of two families.
pub(crate) fn emit_frame(
    eth: &EthernetRepr,
    src: IpAddress,
    dst: IpAddress,
    tcp: &TcpRepr<'_>,
    out: &mut [u8],
) -> Option<usize> {
    let caps = ChecksumCapabilities::default();
    let tcp_len = tcp.buffer_len();
    let total = eth.buffer_len()
        + tcp_len
        + match src {
            IpAddress::Ipv4(_) => 20,
            IpAddress::Ipv6(_) => 40,
        };
    let mut f = EthernetFrame::new_unchecked(out.get_mut(..total)?);
    eth.emit(&mut f);
    let payload = match (src, dst) {
        (IpAddress::Ipv4(src_addr), IpAddress::Ipv4(dst_addr)) => {
            let ip = Ipv4Repr {
                src_addr,
                dst_addr,
                next_header: IpProtocol::Tcp,
                payload_len: tcp_len,
                hop_limit: 64,
            };
            let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
            ip.emit(&mut p, &caps);
            let header = ip.buffer_len();
            &mut f.payload_mut()[header..]
        }
        (IpAddress::Ipv6(src_addr), IpAddress::Ipv6(dst_addr)) => {
            let ip = Ipv6Repr {
                src_addr,
                dst_addr,
                next_header: IpProtocol::Tcp,
                payload_len: tcp_len,
                hop_limit: 64,
            };
            ip.emit(&mut Ipv6Packet::new_unchecked(f.payload_mut()));
            let header = ip.buffer_len();
            &mut f.payload_mut()[header..]
        }
        _ => return None,
    };
    tcp.emit(&mut TcpPacket::new_unchecked(payload), &src, &dst, &caps);
    Some(total)
}

/// The sequence number of the TCP RST (without ACK) in `frame`.
fn rst_seq(frame: &[u8]) -> Option<u32> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let tcp = match eth.ethertype() {
        EthernetProtocol::Ipv4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
            TcpPacket::new_checked(ip.payload()).ok()?.into_inner()
        }
        EthernetProtocol::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
            if ip.next_header() != IpProtocol::Tcp {
                return None;
            }
            TcpPacket::new_checked(ip.payload()).ok()?.into_inner()
        }
        _ => return None,
    };
    let tcp = TcpPacket::new_unchecked(tcp);
    (tcp.rst() && !tcp.ack() && !tcp.syn()).then(|| tcp.seq_number().0 as u32)
}

#[cfg(test)]
mod tests {
    use smoltcp::wire::{Ipv4Address, Ipv6Address};

    use super::*;

    fn handle(n: usize) -> SocketHandle {
        // Handles come from a socket set; any set gives distinct ones.
        let mut set = smoltcp::iface::SocketSet::new(Vec::new());
        let mut last = None;
        for _ in 0..=n {
            last = Some(set.add(smoltcp::socket::udp::Socket::new(
                smoltcp::socket::udp::PacketBuffer::new(Vec::new(), Vec::new()),
                smoltcp::socket::udp::PacketBuffer::new(Vec::new(), Vec::new()),
            )));
        }
        last.unwrap()
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn over_the_bound_the_oldest_unproven_goes_first() {
        let mut t = HalfOpen::new(3, Duration::from_secs(60));
        let a = t.admit(0, handle(0), S, true);
        let b = t.admit(1, handle(1), 2 * S, false);
        let _c = t.admit(2, handle(2), 3 * S, false);
        assert!(t.is_full());
        assert_eq!(t.victim(4 * S), None, "at the bound, nothing goes");
        t.admit(3, handle(3), 4 * S, false);
        let (slot, e, why) = t.victim(4 * S).unwrap();
        assert_eq!((slot, e.shard, why), (b, 1, End::Evicted));
        t.leave(slot);
        assert_eq!(t.victim(4 * S), None);
        // Unproven ones only while there are any: then the verified one.
        let d = t.admit(4, handle(4), 5 * S, true);
        let (slot, _, _) = t.victim(5 * S).unwrap();
        assert_ne!(slot, a);
        assert_ne!(slot, d);
        t.leave(slot);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn entries_expire_after_their_lifetime_and_completed_ones_never() {
        let mut t = HalfOpen::new(100, Duration::from_secs(3));
        let done = t.admit(0, handle(0), 0, false);
        let old = t.admit(0, handle(1), S, true);
        let young = t.admit(0, handle(2), 3 * S, false);
        t.leave(done); // established
        assert_eq!(t.victim(3 * S), None);
        let (slot, _, why) = t.victim(4 * S + 1).unwrap();
        assert_eq!((slot, why), (old, End::Expired));
        t.leave(slot);
        assert_eq!(t.victim(4 * S + 1), None);
        assert_eq!(t.victim(6 * S + 1).map(|v| v.0), Some(young));
    }

    #[test]
    fn queues_stay_bounded_however_many_handshakes_complete() {
        let mut t = HalfOpen::new(8, Duration::from_secs(60));
        for i in 0..100_000u64 {
            let slot = t.admit(0, handle(0), i, i % 2 == 0);
            t.leave(slot);
        }
        assert!(t.unproven.len() + t.proven.len() <= 16);
        assert!(t.slots.len() <= 1);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn verified_sources_are_bounded_and_expire() {
        let mut v = VerifiedSources::default();
        let a = IpAddress::Ipv4(Ipv4Address::new(192, 0, 2, 1));
        v.insert(a, 0);
        assert!(v.contains(&a, VERIFIED_FOR.as_nanos() as u64 - 1));
        assert!(!v.contains(&a, VERIFIED_FOR.as_nanos() as u64));
        for i in 0..(MAX_VERIFIED as u32 + 10) {
            v.insert(IpAddress::Ipv4(Ipv4Address::from(0x0a00_0000 + i)), 1);
        }
        assert!(v.len() <= MAX_VERIFIED);
        assert!(!v.contains(&a, 1), "the oldest went first");
    }

    fn syn(flow: &FlowKey, seq: u32) -> Vec<u8> {
        let tcp = TcpRepr {
            src_port: flow.remote_port,
            dst_port: flow.local_port,
            control: TcpControl::Syn,
            seq_number: TcpSeqNumber(seq as i32),
            ack_number: None,
            window_len: 64240,
            window_scale: Some(7),
            max_seg_size: Some(1460),
            sack_permitted: true,
            sack_ranges: [None, None, None],
            timestamp: None,
            payload: &[],
        };
        let eth = EthernetRepr {
            src_addr: EthernetAddress([2, 0, 0, 0, 0, 2]),
            dst_addr: EthernetAddress([2, 0, 0, 0, 0, 1]),
            ethertype: match flow.local_addr {
                IpAddress::Ipv4(_) => EthernetProtocol::Ipv4,
                IpAddress::Ipv6(_) => EthernetProtocol::Ipv6,
            },
        };
        let mut out = vec![0u8; 128];
        let n = emit_frame(&eth, flow.remote_addr, flow.local_addr, &tcp, &mut out).unwrap();
        out.truncate(n);
        out
    }

    /// The RST a client's stack sends for an unacceptable SYN-ACK:
    /// `<SEQ=SEG.ACK><CTL=RST>`, built from the challenge frame alone.
    fn client_rst(challenge: &[u8]) -> Vec<u8> {
        let mut f = challenge.to_vec();
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        let (l3, v6) = (14, eth.ethertype() == EthernetProtocol::Ipv6);
        let l4 = l3 + if v6 { 40 } else { 20 };
        // Swap addresses and ports, seq = the SYN-ACK's ack, flags = RST.
        let (a, b) = if v6 { (l3 + 8, 16) } else { (l3 + 12, 4) };
        let src: Vec<u8> = f[a..a + b].to_vec();
        let dst: Vec<u8> = f[a + b..a + 2 * b].to_vec();
        f[a..a + b].copy_from_slice(&dst);
        f[a + b..a + 2 * b].copy_from_slice(&src);
        let ports: Vec<u8> = f[l4..l4 + 4].to_vec();
        f[l4..l4 + 2].copy_from_slice(&ports[2..4]);
        f[l4 + 2..l4 + 4].copy_from_slice(&ports[0..2]);
        let ack: Vec<u8> = f[l4 + 8..l4 + 12].to_vec();
        f[l4 + 4..l4 + 8].copy_from_slice(&ack);
        f[l4 + 8..l4 + 12].fill(0);
        f[l4 + 13] = 0x04;
        f
    }

    #[rstest::rstest]
    #[case::v4(
        IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 2)),
        IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 9))
    )]
    #[case::v6(
        IpAddress::Ipv6(Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 2)),
        IpAddress::Ipv6(Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 9))
    )]
    fn a_challenge_is_answered_only_by_whoever_received_it(
        #[case] local: IpAddress,
        #[case] remote: IpAddress,
    ) {
        let c = Challenge::new();
        let flow = FlowKey {
            local_addr: local,
            local_port: 6379,
            remote_addr: remote,
            remote_port: 40000,
        };
        let our_mac = EthernetAddress([2, 0, 0, 0, 0, 1]);
        let syn = syn(&flow, 1000);
        let mut out = [0u8; Challenge::FRAME_MAX];
        let n = c.syn_ack(&syn, &flow, 5 * S, our_mac, &mut out).unwrap();
        let frame = &out[..n];
        // A well-formed SYN-ACK with valid checksums, to the SYN's sender,
        // whose acknowledgment the client cannot accept.
        let eth = EthernetFrame::new_checked(frame).unwrap();
        assert_eq!(eth.dst_addr(), EthernetAddress([2, 0, 0, 0, 0, 2]));
        assert_eq!(eth.src_addr(), our_mac);
        let tcp_bytes = if remote.version() == smoltcp::wire::IpVersion::Ipv4 {
            let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
            assert!(ip.verify_checksum());
            ip.payload().to_vec()
        } else {
            Ipv6Packet::new_checked(eth.payload())
                .unwrap()
                .payload()
                .to_vec()
        };
        let tcp = TcpPacket::new_checked(&tcp_bytes[..]).unwrap();
        assert!(tcp.verify_checksum(&local, &remote));
        assert!(tcp.syn() && tcp.ack());
        assert_eq!((tcp.src_port(), tcp.dst_port()), (6379, 40000));
        assert_ne!(tcp.ack_number(), TcpSeqNumber(1001));

        // The client's RST brings the value back: good this minute and the
        // next, not later, and not for another flow.
        let rst = client_rst(frame);
        assert!(c.answered(&rst, &flow, 5 * S));
        assert!(c.answered(&rst, &flow, 5 * S + CHALLENGE_PERIOD_NS));
        assert!(!c.answered(&rst, &flow, 5 * S + 2 * CHALLENGE_PERIOD_NS));
        let other = FlowKey {
            remote_port: 40001,
            ..flow
        };
        assert!(!c.answered(&rst, &other, 5 * S));
        // A guess, another key, or a segment that is no RST do not pass.
        assert!(!Challenge::new().answered(&rst, &flow, 5 * S));
        assert!(!c.answered(&syn, &flow, 5 * S));
        let mut guess = rst.clone();
        let seq_at = guess.len() - 20 + 4;
        guess[seq_at] ^= 0x40;
        assert!(!c.answered(&guess, &flow, 5 * S));
    }
}
