//! Where smoltcp's behaviour on the wire differs from the RFCs, and what
//! lstack does about it in its own layer (smoltcp itself is used as
//! published; the upstream reports are in `docs/smoltcp-upstream.md`).
//!
//! Two hooks see every TCP segment: [`Conformance::check_incoming`] before
//! smoltcp ingests a frame, [`Conformance::on_transmit`] after smoltcp
//! wrote one. Between them they keep, per flow of this thread, the
//! sequence numbers a kernel would check a segment against ([`FlowSeq`]:
//! SND.UNA, SND.NXT, RCV.NXT, the window we advertised), learned from the
//! segments themselves since smoltcp does not expose them. With those:
//! - an RST inside the window but not at RCV.NXT, and a SYN on a
//!   synchronized connection, get a challenge ACK and go no further
//!   (RFC 5961 3.2, 4.2; smoltcp closes on any in-window RST and drops the
//!   SYN silently);
//! - a segment with data whose ACK is below SND.UNA (reordering) has its
//!   ACK raised to SND.UNA, so smoltcp takes its data, and an ACK beyond
//!   SND.NXT (of bytes not sent yet) answered with an ACK and dropped
//!   (RFC 9293 3.10.7.4;
//!   smoltcp drops the whole segment);
//! - the RST smoltcp sends for a segment without ACK to a closed port is
//!   made `[R.] seq 0 ack SEG.SEQ+SEG.LEN` (RFC 9293 3.10.7.1);
//! - a Neighbour Advertisement for our address gets the Override flag
//!   (RFC 4861 7.2.4).
//!
//! Everything a peer can make this hold is bounded: at most `capacity`
//! flows (the thread's share of `tcp_conn_count`), allocated up front;
//! challenge ACKs and ICMP errors are rate-limited per thread and per flow.
//! The frame has passed [`crate::classify`] already; smoltcp does not check
//! receive checksums again (see [`crate::device::capabilities`]), so a
//! rewritten received header keeps its old checksum.

use std::collections::HashMap;

use smoltcp::wire::{IpAddress, Ipv4Address, Ipv6Address};

use crate::classify::FlowKey;

/// TCP flag bits.
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// How long a flow may go unseen before its entry may be reused when the
/// table is full.
const IDLE_NS: u64 = 120_000_000_000;
/// The same for a flow we have sent a FIN on: it is closing (FIN-WAIT,
/// LAST-ACK, TIME-WAIT), and without its entry it only loses the checks
/// for the rest of its short life. Without this, connections that closed
/// gracefully would fill the table for two minutes and every new one
/// would go unchecked.
const CLOSING_IDLE_NS: u64 = 1_000_000_000;
/// A full table is swept for reusable entries at most this often: a sweep
/// visits every entry, and a flood of new flows must not pay it per
/// segment.
const SWEEP_GAP_NS: u64 = 1_000_000_000;
/// At most one challenge ACK per flow in this time (Linux's
/// `tcp_invalid_ratelimit`).
const FLOW_CHALLENGE_GAP_NS: u64 = 500_000_000;
/// Largest distance below SND.UNA an old ACK may have to still be raised
/// (RFC 5961 5.2 accepts ACKs down to SND.UNA - MAX.SND.WND).
const MAX_OLD_ACK: u32 = 1 << 30;

/// A token bucket over the caller's clock (no clock read of its own).
#[derive(Debug, Clone)]
pub(crate) struct RateLimit {
    tokens: u64,
    burst: u64,
    per_sec: u64,
    last_ns: u64,
}

impl RateLimit {
    /// `per_sec` on average, at most `burst` at once.
    pub(crate) fn new(per_sec: u64, burst: u64) -> Self {
        Self {
            tokens: burst,
            burst,
            per_sec,
            last_ns: 0,
        }
    }

    /// Takes a token at `now_ns` if there is one.
    pub(crate) fn allow(&mut self, now_ns: u64) -> bool {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        let fresh = elapsed.saturating_mul(self.per_sec) / 1_000_000_000;
        if fresh > 0 {
            self.tokens = (self.tokens + fresh).min(self.burst);
            self.last_ns = now_ns;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// What a kernel would know of a flow's sequence space, as seen from here.
#[derive(Debug, Clone, Copy)]
struct FlowSeq {
    /// Our initial sequence number.
    iss: u32,
    /// SND.UNA: the highest acknowledgment the peer sent that covers
    /// something we sent.
    snd_una: u32,
    /// SND.NXT: one past the last sequence number we sent.
    snd_nxt: u32,
    /// RCV.NXT: the last acknowledgment we sent, advanced by in-order data
    /// since.
    rcv_nxt: u32,
    /// The window we last advertised, unscaled, and our shift.
    window: u16,
    shift: u8,
    /// RCV.NXT is known (not so in SYN-SENT).
    synced: bool,
    /// The peer acknowledged our SYN.
    established: bool,
    /// A FIN went either way: the connection is closing (a SYN may then
    /// start a new one, RFC 9293 3.10.7.4 / RFC 6191).
    closing: bool,
    last_ns: u64,
    challenged_ns: u64,
}

/// A TCP segment located in a frame.
#[derive(Debug, Clone, Copy)]
struct TcpAt {
    /// Offset of the TCP header in the frame.
    off: usize,
    /// End of the TCP segment in the frame.
    end: usize,
    src: IpAddress,
    dst: IpAddress,
}

impl TcpAt {
    /// Finds the TCP header of an Ethernet/IPv4 or Ethernet/IPv6 frame
    /// (no IPv6 extension headers), checking every length it uses.
    fn find(frame: &[u8]) -> Option<TcpAt> {
        let et = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
        let ip = frame.get(14..)?;
        let (off, end, src, dst) = match et {
            0x0800 => {
                let ihl = usize::from(ip.first()? & 0xf) * 4;
                let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
                let frag = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x3fff;
                if *ip.get(9)? != 6 || ihl < 20 || frag != 0 || total < ihl {
                    return None;
                }
                let src: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
                let dst: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
                (
                    14 + ihl,
                    14 + total,
                    IpAddress::Ipv4(Ipv4Address::from(src)),
                    IpAddress::Ipv4(Ipv4Address::from(dst)),
                )
            }
            0x86dd => {
                if *ip.get(6)? != 6 {
                    return None;
                }
                let len = usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
                let src: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
                let dst: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
                (
                    14 + 40,
                    14 + 40 + len,
                    IpAddress::Ipv6(Ipv6Address::from(src)),
                    IpAddress::Ipv6(Ipv6Address::from(dst)),
                )
            }
            _ => return None,
        };
        let tcp = frame.get(off..end)?;
        let data_off = usize::from(*tcp.get(12)? >> 4) * 4;
        if data_off < 20 || data_off > tcp.len() {
            return None;
        }
        Some(TcpAt { off, end, src, dst })
    }

    fn u16_at(frame: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([frame[at], frame[at + 1]])
    }

    fn u32_at(frame: &[u8], at: usize) -> u32 {
        u32::from_be_bytes([frame[at], frame[at + 1], frame[at + 2], frame[at + 3]])
    }

    fn sport(&self, f: &[u8]) -> u16 {
        Self::u16_at(f, self.off)
    }
    fn dport(&self, f: &[u8]) -> u16 {
        Self::u16_at(f, self.off + 2)
    }
    fn seq(&self, f: &[u8]) -> u32 {
        Self::u32_at(f, self.off + 4)
    }
    fn ack(&self, f: &[u8]) -> u32 {
        Self::u32_at(f, self.off + 8)
    }
    fn flags(&self, f: &[u8]) -> u8 {
        f[self.off + 13]
    }
    fn window(&self, f: &[u8]) -> u16 {
        Self::u16_at(f, self.off + 14)
    }
    fn options<'f>(&self, f: &'f [u8]) -> &'f [u8] {
        &f[self.off + 20..self.off + usize::from(f[self.off + 12] >> 4) * 4]
    }
    fn payload_len(&self, f: &[u8]) -> u32 {
        (self.end - self.off - usize::from(f[self.off + 12] >> 4) * 4) as u32
    }
    /// SEG.LEN: payload plus SYN and FIN.
    fn seg_len(&self, f: &[u8]) -> u32 {
        let flags = self.flags(f);
        self.payload_len(f) + u32::from(flags & SYN != 0) + u32::from(flags & FIN != 0)
    }

    /// Recomputes the TCP checksum in software.
    fn fill_checksum(&self, f: &mut [u8]) {
        let mut p = smoltcp::wire::TcpPacket::new_unchecked(&mut f[self.off..self.end]);
        p.fill_checksum(&self.src, &self.dst);
    }
}

/// The window-scale option's shift in `opts`, if present.
fn window_shift(opts: &[u8]) -> Option<u8> {
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => return None,
            1 => i += 1,
            kind => {
                let len = usize::from(*opts.get(i + 1)?);
                if len < 2 {
                    return None;
                }
                if kind == 3 && len == 3 {
                    return opts.get(i + 2).copied();
                }
                i += len;
            }
        }
    }
    None
}

/// `a` comes after `b` in sequence space.
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// What to do with a received TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// Give it to smoltcp.
    Pass,
    /// Answer with a challenge ACK carrying these numbers; smoltcp never
    /// sees the segment.
    Challenge { seq: u32, ack: u32, window: u16 },
    /// Drop it: a challenge ACK was owed but is over its rate limit.
    Drop,
}

/// A thread's conformance state: the flows' sequence numbers and the
/// pending fix of smoltcp's next RST.
#[derive(Debug)]
pub(crate) struct Conformance {
    flows: HashMap<FlowKey, FlowSeq>,
    capacity: usize,
    /// No sweep of a full table before this time.
    next_sweep_ns: u64,
    /// Set while smoltcp ingests a segment without ACK: (the peer's port,
    /// SEG.SEQ + SEG.LEN) for the RST it may answer with.
    pub(crate) rst_ack: Option<(u16, u32)>,
    /// Challenge ACKs of this thread (RFC 5961 7).
    challenges: RateLimit,
    /// ICMP errors of this thread (as Linux's `icmp_msgs_per_sec` and
    /// `icmp_msgs_burst`).
    pub(crate) icmp_errors: RateLimit,
    /// The time of the current pass, for entries written on transmit.
    pub(crate) now_ns: u64,
    /// Echo requests waiting for their neighbour.
    pub(crate) neighbours: NeighbourWait,
}

impl Conformance {
    /// Room for `capacity` flows, allocated now.
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(16);
        Self {
            flows: HashMap::with_capacity(capacity),
            capacity,
            next_sweep_ns: 0,
            rst_ack: None,
            challenges: RateLimit::new(1000, 100),
            icmp_errors: RateLimit::new(1000, 50),
            now_ns: 0,
            neighbours: NeighbourWait::new(),
        }
    }

    /// Flows tracked now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.flows.len()
    }

    /// Looks at a TCP segment of `flow` before smoltcp does; may rewrite
    /// its ACK field (an old ACK on data is raised to SND.UNA).
    pub(crate) fn check_incoming(
        &mut self,
        flow: &FlowKey,
        frame: &mut [u8],
        now_ns: u64,
    ) -> Incoming {
        let Some(e) = self.flows.get_mut(flow) else {
            return Incoming::Pass;
        };
        let Some(t) = TcpAt::find(frame) else {
            return Incoming::Pass;
        };
        e.last_ns = now_ns;
        let flags = t.flags(frame);
        let seq = t.seq(frame);
        if !e.synced {
            // SYN-SENT: smoltcp checks what comes; a SYN-ACK gives RCV.NXT.
            if flags & (SYN | ACK | RST) == SYN | ACK {
                e.rcv_nxt = seq.wrapping_add(t.seg_len(frame));
                e.synced = true;
                if window_shift(t.options(frame)).is_none() {
                    // Without the peer's window scaling smoltcp drops ours.
                    e.shift = 0;
                }
            }
            return Incoming::Pass;
        }
        let challenge = |e: &mut FlowSeq, limit: &mut RateLimit| {
            if now_ns.saturating_sub(e.challenged_ns) < FLOW_CHALLENGE_GAP_NS
                && e.challenged_ns != 0
                || !limit.allow(now_ns)
            {
                return Incoming::Drop;
            }
            e.challenged_ns = now_ns.max(1);
            Incoming::Challenge {
                seq: e.snd_nxt,
                ack: e.rcv_nxt,
                window: e.window,
            }
        };
        if flags & RST != 0 {
            if seq == e.rcv_nxt {
                self.flows.remove(flow);
                return Incoming::Pass;
            }
            let window = (u32::from(e.window) << e.shift.min(14)).max(1);
            let beyond = seq.wrapping_sub(e.rcv_nxt);
            if beyond > 0 && beyond < window {
                return challenge(e, &mut self.challenges);
            }
            // Out of the window: smoltcp drops it silently, as it should.
            return Incoming::Pass;
        }
        if flags & (SYN | ACK) == SYN {
            if e.established && !e.closing {
                return challenge(e, &mut self.challenges);
            }
            return Incoming::Pass;
        }
        if flags & FIN != 0 {
            e.closing = true;
        }
        if flags & ACK != 0 {
            let ack = t.ack(frame);
            if after(ack, e.snd_nxt) {
                // RFC 9293 3.10.7.4: an ACK of something not yet sent is
                // answered with an ACK and the segment dropped. smoltcp
                // takes acknowledgements up to the end of its send buffer,
                // queued or not, and would then never send the bytes in
                // between: the peer's stream would lose them.
                return challenge(e, &mut self.challenges);
            }
            if !e.established && after(ack, e.iss) {
                e.established = true;
            }
            if after(ack, e.snd_una) && !after(ack, e.snd_nxt) {
                e.snd_una = ack;
            } else if after(e.snd_una, ack)
                && e.snd_una.wrapping_sub(ack) <= MAX_OLD_ACK
                && t.seg_len(frame) > 0
            {
                frame[t.off + 8..t.off + 12].copy_from_slice(&e.snd_una.to_be_bytes());
            }
        }
        if seq == e.rcv_nxt {
            e.rcv_nxt = e.rcv_nxt.wrapping_add(t.seg_len(frame));
        }
        Incoming::Pass
    }

    /// Whether `seq` is in flight on `flow`, a flow of ours: within
    /// SND.UNA..SND.NXT (RFC 5927 5.2, what an ICMP error quoting one of our
    /// segments must carry). `false` for a flow not tracked here.
    pub(crate) fn in_flight(&self, flow: &FlowKey, seq: u32) -> bool {
        self.flows
            .get(flow)
            .is_some_and(|e| !after(e.snd_una, seq) && after(e.snd_nxt, seq))
    }

    /// Looks at a frame smoltcp just wrote, before it goes out: learns the
    /// sequence numbers of our TCP segments and fixes what smoltcp gets
    /// wrong. `software_checksums`: checksums are ours to compute (no
    /// transmit offload).
    pub(crate) fn on_transmit(&mut self, frame: &mut [u8], software_checksums: bool) {
        self.neighbours.saw_transmit(frame);
        if neighbour_advert_override(frame) {
            return;
        }
        let Some(t) = TcpAt::find(frame) else {
            return;
        };
        let flags = t.flags(frame);
        let flow = FlowKey {
            local_addr: t.src,
            local_port: t.sport(frame),
            remote_addr: t.dst,
            remote_port: t.dport(frame),
        };
        if flags & RST != 0 {
            if flags & ACK == 0 {
                if let Some((port, ack)) = self.rst_ack.take() {
                    if port == flow.remote_port {
                        frame[t.off + 8..t.off + 12].copy_from_slice(&ack.to_be_bytes());
                        frame[t.off + 13] = flags | ACK;
                        if software_checksums {
                            t.fill_checksum(frame);
                        }
                    }
                }
            }
            self.flows.remove(&flow);
            return;
        }
        let seq = t.seq(frame);
        let end = seq.wrapping_add(t.seg_len(frame));
        let now_ns = self.now_ns;
        if flags & SYN != 0 {
            let fresh = FlowSeq {
                iss: seq,
                snd_una: seq,
                snd_nxt: end,
                rcv_nxt: if flags & ACK != 0 { t.ack(frame) } else { 0 },
                synced: flags & ACK != 0,
                window: t.window(frame),
                shift: window_shift(t.options(frame)).unwrap_or(0),
                established: false,
                closing: false,
                last_ns: now_ns,
                challenged_ns: 0,
            };
            if self.flows.len() >= self.capacity && !self.flows.contains_key(&flow) {
                if now_ns >= self.next_sweep_ns {
                    self.next_sweep_ns = now_ns.saturating_add(SWEEP_GAP_NS);
                    self.flows.retain(|_, e| {
                        let idle = now_ns.saturating_sub(e.last_ns);
                        idle < if e.closing { CLOSING_IDLE_NS } else { IDLE_NS }
                    });
                }
                if self.flows.len() >= self.capacity {
                    // Untracked, this flow behaves as smoltcp alone would.
                    return;
                }
            }
            self.flows.insert(flow, fresh);
            return;
        }
        let Some(e) = self.flows.get_mut(&flow) else {
            return;
        };
        if after(end, e.snd_nxt) {
            e.snd_nxt = end;
        }
        if flags & FIN != 0 {
            e.closing = true;
        }
        if flags & ACK != 0 {
            e.rcv_nxt = t.ack(frame);
            e.window = t.window(frame);
        }
    }
}

/// How many frames wait for their neighbour at most (per thread).
const PENDING_FRAMES: usize = 8;

/// Frames whose answer waits for a neighbour to be resolved (RFC 1122
/// 2.3.2.2: keep at least one packet per pending neighbour). When smoltcp
/// cannot address an answer it makes no socket wait for (an echo reply, the
/// RST of a closed port, an ICMP error), it sends an ARP request or
/// neighbour solicitation and drops the answer. The engine then keeps the
/// received frame that caused it (the mbuf itself, no copy) and ingests it
/// again when the neighbour answers, so the answer goes out then. Answers
/// of TCP and UDP sockets need no help: smoltcp holds their egress until
/// the neighbour is known. At most [`PENDING_FRAMES`] per thread; the
/// newest replaces the oldest.
#[derive(Debug)]
pub(crate) struct NeighbourWait {
    /// Told of every neighbour asked for (AF_XDP bifurcation: see
    /// [`crate::kernel::Helper::want_neighbour`]).
    pub(crate) hook: Option<NeighbourHook>,
    /// The neighbour smoltcp asked for during the current ingest.
    asked: Option<IpAddress>,
    /// smoltcp sent anything during the current ingest.
    sent: bool,
    slots: Vec<Option<(IpAddress, dpdk::Mbuf)>>,
    next: usize,
}

impl NeighbourWait {
    fn new() -> Self {
        Self {
            hook: None,
            asked: None,
            sent: false,
            slots: (0..PENDING_FRAMES).map(|_| None).collect(),
            next: 0,
        }
    }

    /// Before an ingest.
    pub(crate) fn start(&mut self) {
        self.asked = None;
        self.sent = false;
    }

    /// After an ingest of `m`: keeps it if smoltcp asked for a neighbour
    /// meanwhile, or if `m` is an echo request that got no reply at all
    /// (smoltcp asks for one neighbour a second per interface and drops
    /// what else misses meanwhile without asking), waiting for its sender;
    /// returns `None` then, else hands `m` back to be freed.
    pub(crate) fn settle(&mut self, m: dpdk::Mbuf, echo_request: bool) -> Option<dpdk::Mbuf> {
        let addr = match self.asked.take() {
            Some(addr) => addr,
            None if echo_request && !self.sent => match ip_source(m.data()) {
                Some(addr) => addr,
                None => return Some(m),
            },
            None => return Some(m),
        };
        self.slots[self.next] = Some((addr, m));
        self.next = (self.next + 1) % PENDING_FRAMES;
        None
    }

    /// One frame waiting for `addr`, removed from the table.
    pub(crate) fn take(&mut self, addr: IpAddress) -> Option<dpdk::Mbuf> {
        let slot = self
            .slots
            .iter_mut()
            .find(|s| s.as_ref().is_some_and(|(a, _)| *a == addr))?;
        slot.take().map(|(_, m)| m)
    }

    /// Notes an ARP request or neighbour solicitation we send.
    fn saw_transmit(&mut self, frame: &[u8]) {
        self.sent = true;
        if let Some(addr) = neighbour_asked(frame) {
            self.asked = Some(addr);
            if let Some(hook) = &self.hook {
                (hook.0)(addr);
            }
        }
    }
}

/// Called with the address of every ARP request / neighbour solicitation
/// the stack sends (rare: smoltcp asks at most once a second per address).
#[derive(Clone)]
pub(crate) struct NeighbourHook(pub(crate) std::sync::Arc<dyn Fn(IpAddress) + Send + Sync>);

impl std::fmt::Debug for NeighbourHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NeighbourHook")
    }
}

/// The address an ARP request or neighbour solicitation in `frame` asks
/// for.
fn neighbour_asked(frame: &[u8]) -> Option<IpAddress> {
    match frame.get(12..14)? {
        [0x08, 0x06] if frame.get(20..22)? == [0, 1] => {
            let a: [u8; 4] = frame.get(38..42)?.try_into().ok()?;
            Some(IpAddress::Ipv4(Ipv4Address::from(a)))
        }
        [0x86, 0xdd] if *frame.get(20)? == 58 && *frame.get(54)? == 135 => {
            let a: [u8; 16] = frame.get(62..78)?.try_into().ok()?;
            Some(IpAddress::Ipv6(Ipv6Address::from(a)))
        }
        _ => None,
    }
}

/// The source address of an IPv4 or IPv6 packet in `frame`.
fn ip_source(frame: &[u8]) -> Option<IpAddress> {
    match frame.get(12..14)? {
        [0x08, 0x00] => {
            let a: [u8; 4] = frame.get(26..30)?.try_into().ok()?;
            Some(IpAddress::Ipv4(Ipv4Address::from(a)))
        }
        [0x86, 0xdd] => {
            let a: [u8; 16] = frame.get(22..38)?.try_into().ok()?;
            Some(IpAddress::Ipv6(Ipv6Address::from(a)))
        }
        _ => None,
    }
}

/// The neighbour an ARP message or neighbour advertisement in `frame`
/// tells us about.
pub(crate) fn neighbour_resolved(frame: &[u8]) -> Option<IpAddress> {
    match frame.get(12..14)? {
        [0x08, 0x06] => {
            let a: [u8; 4] = frame.get(28..32)?.try_into().ok()?;
            Some(IpAddress::Ipv4(Ipv4Address::from(a)))
        }
        [0x86, 0xdd] if *frame.get(20)? == 58 && *frame.get(54)? == 136 => {
            let a: [u8; 16] = frame.get(62..78)?.try_into().ok()?;
            Some(IpAddress::Ipv6(Ipv6Address::from(a)))
        }
        _ => None,
    }
}

/// SEG.SEQ + SEG.LEN of a TCP segment without ACK, SYN or RST in `frame`
/// (the segments a closed port answers with `[R.]`), with the peer's port.
pub(crate) fn bare_segment_end(frame: &[u8]) -> Option<(u16, u32)> {
    let t = TcpAt::find(frame)?;
    if t.flags(frame) & (ACK | SYN | RST) != 0 {
        return None;
    }
    Some((t.sport(frame), t.seq(frame).wrapping_add(t.seg_len(frame))))
}

/// Sets the Override flag of a solicited Neighbour Advertisement smoltcp
/// wrote (it sends Solicited alone); returns whether `frame` was one.
fn neighbour_advert_override(frame: &mut [u8]) -> bool {
    const ICMP: usize = 14 + 40;
    if frame.len() < ICMP + 24
        || frame[12..14] != [0x86, 0xdd]
        || frame[14 + 6] != 58
        || frame[ICMP] != 136
    {
        return false;
    }
    let flags = frame[ICMP + 4];
    // Solicited without Router: an answer for one of our unicast addresses.
    if flags & 0xe0 == 0x40 {
        frame[ICMP + 4] = flags | 0x20;
        // The checksum is always software for ICMPv6; patch it for the
        // one changed bit (RFC 1624).
        let old = u16::from_be_bytes([frame[ICMP + 2], frame[ICMP + 3]]);
        let word = u16::from_be_bytes([flags, frame[ICMP + 5]]);
        let mut s = u32::from(!old) + u32::from(!word) + u32::from(word | 0x2000);
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        frame[ICMP + 2..ICMP + 4].copy_from_slice(&(!(s as u16)).to_be_bytes());
    }
    true
}

/// Writes into `out` an ICMP destination unreachable, protocol unreachable
/// (type 3 code 2, RFC 1122 3.2.2.1) answering the IPv4 datagram in
/// `frame` if it is unicast to `our_ip` at `our_mac`; returns its length.
/// The reply goes back to the MAC the datagram came from and quotes its
/// header and first 8 bytes (RFC 792).
pub(crate) fn protocol_unreachable(
    frame: &[u8],
    our_mac: [u8; 6],
    our_ip: Ipv4Address,
    out: &mut [u8],
) -> Option<usize> {
    if frame.get(..6)? != our_mac || frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = frame.get(14..)?;
    let ihl = usize::from(ip.first()? & 0xf) * 4;
    if ip.get(16..20)? != our_ip.octets() || ihl < 20 {
        return None;
    }
    // Never about a fragment but the first.
    if u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x1fff != 0 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    let quote = ip.get(..total.min(ihl + 8))?;
    let icmp_len = 8 + quote.len();
    let len = 14 + 20 + icmp_len;
    let out = out.get_mut(..len)?;
    out[..6].copy_from_slice(frame.get(6..12)?);
    out[6..12].copy_from_slice(&our_mac);
    out[12..14].copy_from_slice(&[0x08, 0x00]);
    let h = &mut out[14..34];
    h.copy_from_slice(&[
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    h[2..4].copy_from_slice(&((20 + icmp_len) as u16).to_be_bytes());
    h[12..16].copy_from_slice(&our_ip.octets());
    h[16..20].copy_from_slice(ip.get(12..16)?);
    smoltcp::wire::Ipv4Packet::new_unchecked(&mut *h).fill_checksum();
    let m = &mut out[34..];
    m[..8].copy_from_slice(&[3, 2, 0, 0, 0, 0, 0, 0]);
    m[8..].copy_from_slice(quote);
    smoltcp::wire::Icmpv4Packet::new_unchecked(&mut *m).fill_checksum();
    Some(len)
}

/// Room [`protocol_unreachable`] needs: Ethernet, two IPv4 headers of at
/// most 60 bytes, ICMP and 8 bytes.
pub(crate) const UNREACHABLE_MAX: usize = 14 + 20 + 8 + 60 + 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_refills_over_time_up_to_burst() {
        let mut r = RateLimit::new(10, 3);
        let t0 = 5_000_000_000;
        assert!((0..3).all(|_| r.allow(t0)));
        assert!(!r.allow(t0));
        // 100 ms later one more token.
        assert!(r.allow(t0 + 100_000_000));
        assert!(!r.allow(t0 + 100_000_000));
        assert!((0..3).all(|_| r.allow(t0 + 60_000_000_000)));
        assert!(!r.allow(t0 + 60_000_000_000));
    }

    #[test]
    fn sequence_comparison_wraps() {
        assert!(after(5, u32::MAX - 5));
        assert!(!after(u32::MAX - 5, 5));
        assert!(!after(7, 7));
    }

    /// An IPv4 TCP segment of ours with `flags` and no payload (ports
    /// zero: the caller writes them).
    fn our_segment(flags: u8) -> [u8; 14 + 20 + 20] {
        let mut f = [0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&40u16.to_be_bytes());
        f[14 + 9] = 6;
        f[34 + 12] = 0x50;
        f[34 + 13] = flags;
        f
    }

    /// A peer that acknowledges bytes we have not sent yet gets an ACK
    /// with our real SND.NXT, and smoltcp never sees its segment.
    #[test]
    fn an_ack_of_unsent_data_is_answered_and_dropped() {
        let mut c = Conformance::new(16);
        c.now_ns = 1_000_000_000;
        let mut f = our_segment(SYN | ACK);
        f[34..36].copy_from_slice(&7000u16.to_be_bytes());
        f[36..38].copy_from_slice(&40000u16.to_be_bytes());
        f[38..42].copy_from_slice(&1000u32.to_be_bytes());
        f[42..46].copy_from_slice(&5000u32.to_be_bytes());
        c.on_transmit(&mut f, true);
        // Then 100 bytes of data are sent: SND.NXT = 1101.
        let mut d = [0u8; 14 + 20 + 20 + 100];
        d[..54].copy_from_slice(&our_segment(ACK));
        d[16..18].copy_from_slice(&140u16.to_be_bytes());
        d[34..36].copy_from_slice(&7000u16.to_be_bytes());
        d[36..38].copy_from_slice(&40000u16.to_be_bytes());
        d[38..42].copy_from_slice(&1001u32.to_be_bytes());
        d[42..46].copy_from_slice(&5000u32.to_be_bytes());
        c.on_transmit(&mut d, true);
        let flow = FlowKey {
            local_addr: IpAddress::Ipv4(Ipv4Address::new(0, 0, 0, 0)),
            local_port: 7000,
            remote_addr: IpAddress::Ipv4(Ipv4Address::new(0, 0, 0, 0)),
            remote_port: 40000,
        };
        // The peer's ACKs (its ports and numbers the other way round).
        let mut peer = |ack: u32| {
            let mut p = our_segment(ACK);
            p[34..36].copy_from_slice(&40000u16.to_be_bytes());
            p[36..38].copy_from_slice(&7000u16.to_be_bytes());
            p[38..42].copy_from_slice(&5000u32.to_be_bytes());
            p[42..46].copy_from_slice(&ack.to_be_bytes());
            c.check_incoming(&flow, &mut p, 1_000_000_000)
        };
        assert_eq!(peer(1001), Incoming::Pass, "the handshake's ACK");
        assert_eq!(peer(1101), Incoming::Pass, "all that was sent");
        assert_eq!(
            peer(1113),
            Incoming::Challenge {
                seq: 1101,
                ack: 5000,
                window: 0
            },
            "12 bytes never sent"
        );
        // Within the per-flow gap the next one is dropped without an ACK.
        assert_eq!(peer(1200), Incoming::Drop);
    }

    #[test]
    fn table_never_exceeds_its_capacity() {
        let mut c = Conformance::new(16);
        // A SYN-ACK frame of ours, rewritten with new ports each time.
        let mut f = our_segment(SYN | ACK);
        for port in 0..100u16 {
            f[34..36].copy_from_slice(&port.to_be_bytes());
            c.on_transmit(&mut f, true);
        }
        assert_eq!(c.len(), 16);
        // Much later, idle entries make room again.
        c.now_ns = IDLE_NS * 2;
        f[34..36].copy_from_slice(&9999u16.to_be_bytes());
        c.on_transmit(&mut f, true);
        assert_eq!(c.len(), 1);
    }

    /// Connections that closed gracefully leave the table within a second
    /// or so, and a full table is swept at most once a second.
    #[test]
    fn closed_flows_make_room_and_sweeps_are_rate_limited() {
        let mut c = Conformance::new(16);
        let mut f = our_segment(SYN | ACK);
        let t0 = 10 * SWEEP_GAP_NS;
        c.now_ns = t0;
        // 16 connections opened, then closed by us (our FIN).
        for port in 0..16u16 {
            f[34..36].copy_from_slice(&port.to_be_bytes());
            f[34 + 13] = SYN | ACK;
            c.on_transmit(&mut f, true);
            f[34 + 13] = FIN | ACK;
            c.on_transmit(&mut f, true);
        }
        assert_eq!(c.len(), 16);
        // Full, half a second later: a new flow sweeps, finds nothing
        // closed long enough ago, and goes untracked.
        let half = SWEEP_GAP_NS / 2;
        f[34 + 13] = SYN | ACK;
        c.now_ns = t0 + half;
        f[34..36].copy_from_slice(&100u16.to_be_bytes());
        c.on_transmit(&mut f, true);
        assert_eq!(c.len(), 16);
        // The closed entries are old enough now, but the last sweep was
        // less than SWEEP_GAP_NS ago: no sweep, still untracked.
        c.now_ns = t0 + CLOSING_IDLE_NS + half / 2;
        assert!(c.now_ns < t0 + half + SWEEP_GAP_NS);
        f[34..36].copy_from_slice(&101u16.to_be_bytes());
        c.on_transmit(&mut f, true);
        assert_eq!(c.len(), 16);
        // Once the gap has passed, the sweep drops every closed flow.
        c.now_ns = t0 + half + SWEEP_GAP_NS;
        f[34..36].copy_from_slice(&102u16.to_be_bytes());
        c.on_transmit(&mut f, true);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn protocol_unreachable_has_valid_checksums_and_quotes_the_datagram() {
        let ours = Ipv4Address::new(10, 0, 0, 1);
        // IPv4, protocol 253, 12 bytes of payload, to us.
        let mut f = [0u8; 14 + 20 + 12];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&32u16.to_be_bytes());
        f[14 + 8] = 64;
        f[14 + 9] = 253;
        f[26..30].copy_from_slice(&[10, 0, 0, 2]);
        f[30..34].copy_from_slice(&ours.octets());
        let mut out = [0u8; UNREACHABLE_MAX];
        let len = protocol_unreachable(&f, [2, 0, 0, 0, 0, 1], ours, &mut out).unwrap();
        let ip = smoltcp::wire::Ipv4Packet::new_checked(&out[14..len]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.dst_addr(), Ipv4Address::new(10, 0, 0, 2));
        let icmp = smoltcp::wire::Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        assert_eq!((icmp.msg_type(), icmp.msg_code()), (3.into(), 2));
        // The datagram's header and its first 8 bytes.
        assert_eq!(&icmp.as_ref()[8..], &f[14..14 + 28]);
        assert_eq!(&out[..6], &f[6..12]);
    }

    #[test]
    fn truncated_frames_never_panic() {
        let mut c = Conformance::new(16);
        let flow = FlowKey {
            local_addr: IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 1)),
            local_port: 1,
            remote_addr: IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 2)),
            remote_port: 2,
        };
        let mut f = [0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&40u16.to_be_bytes());
        f[14 + 9] = 6;
        f[34 + 12] = 0xf0; // data offset beyond the segment
        for len in 0..f.len() {
            let mut g = f[..len].to_vec();
            c.on_transmit(&mut g, true);
            let _ = c.check_incoming(&flow, &mut g, 1);
            let _ = bare_segment_end(&g);
            let mut out = [0u8; UNREACHABLE_MAX];
            let _ = protocol_unreachable(&g, [0; 6], Ipv4Address::new(0, 0, 0, 0), &mut out);
        }
    }
}
