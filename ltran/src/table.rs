//! The dispatcher's tables and decisions, without DPDK: who owns which
//! address, which thread holds which TCP connection, who listens where.
//!
//! [`Tables::rx`] decides where a received frame goes; [`Tables::tx`]
//! checks a frame an instance sends (it may only speak for its own
//! addresses) and learns the connections it opens; [`Tables::expire`]
//! ages the connection table a bounded slice at a time (see
//! [`conn_table`](crate::conn_table) for its states and quotas).
//!
//! Instances may share an address (forked workers of one server, admitted
//! by the control side): an address maps to a group of instances, the
//! first of them its primary. ARP for the address reaches every member;
//! ICMP, UDP and TCP segments of no known connection go to the primary; a
//! SYN goes to the member listening on its port with the fewest
//! connections, and the rest of that connection follows it. Everything
//! here runs on the dispatcher thread only, so there are no locks; the
//! tables are sized at start and never grow on the hot path. Times are
//! milliseconds from any monotonic origin.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use gazelle_ctl_proto::DispatchCounters;
use rustc_hash::FxHashMap;

pub use crate::conn_table::{Limits, Slot};
use crate::{
    conn_table::{ConnKey, ConnTable, Refused, Side, Thread},
    packet::{self, Net, L4, TCP_ACK, TCP_RST, TCP_SYN},
};

/// Where a received frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// To one thread of one instance.
    Deliver {
        /// The instance.
        slot: Slot,
        /// Its stack thread.
        thread: u16,
    },
    /// A copy to every instance with an IPv6 address (multicast NDP such as
    /// router advertisements).
    AllIpv6,
    /// A copy to thread 0 of every instance sharing this address (ARP:
    /// each stack keeps its own neighbour cache); see [`Tables::members`].
    /// Only said when more than one instance holds it.
    EachMember(Ipv4Addr),
    /// Nobody here owns it: to the kernel's exception interface if there is
    /// one, else dropped.
    Kernel,
    /// Dropped (already counted).
    Drop,
}

/// Why a transmitted frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxRefusal {
    /// Headers cannot be parsed, or are not ARP, IPv4 or IPv6 (inside at
    /// most two VLAN tags): nothing the check can vouch for.
    Malformed,
    /// Source MAC or address is not the instance's own, or an ARP or
    /// neighbour advertisement claims another's address.
    Spoofed,
}

/// Where unicast IPv4 to an address goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Route {
    /// The primary of the address's group.
    primary: Slot,
    /// Its stack threads.
    threads: u16,
}

#[derive(Debug, Clone)]
struct Instance {
    ipv4: Ipv4Addr,
    ipv6: Option<Ipv6Addr>,
    /// Stack threads (one ring pair each).
    threads: u16,
}

/// The dispatcher's state.
#[derive(Debug)]
pub struct Tables {
    mac: [u8; 6],
    /// The link-local address of `mac`, which every instance has.
    link_local: Ipv6Addr,
    /// The instances holding each address, in the order they came: the
    /// first is the primary.
    v4: FxHashMap<Ipv4Addr, Vec<Slot>>,
    v6: FxHashMap<Ipv6Addr, Vec<Slot>>,
    /// Each IPv4 address's primary and its thread count: what a received
    /// unicast frame needs, in one lookup (kept in step with `v4`).
    v4_route: FxHashMap<Ipv4Addr, Route>,
    instances: Vec<Option<Instance>>,
    conns: ConnTable,
    /// Who listens on each (address, port): the instances, by slot.
    listens: FxHashMap<(IpAddr, u16), Vec<Slot>>,
    /// What happened to received and sent frames.
    pub counters: DispatchCounters,
}

impl Tables {
    /// Tables for the bond MAC `mac`, up to `max_instances` instances and
    /// `capacity` TCP connections, aged by `limits`.
    pub fn new(mac: [u8; 6], max_instances: usize, capacity: usize, limits: Limits) -> Self {
        Self {
            mac,
            link_local: packet::link_local(mac),
            v4: FxHashMap::with_capacity_and_hasher(max_instances, Default::default()),
            v6: FxHashMap::with_capacity_and_hasher(max_instances, Default::default()),
            v4_route: FxHashMap::with_capacity_and_hasher(max_instances, Default::default()),
            instances: vec![None; max_instances],
            conns: ConnTable::new(capacity, max_instances, limits),
            listens: FxHashMap::default(),
            counters: DispatchCounters::default(),
        }
    }

    /// Adds an instance. The registry has already checked that the slot is
    /// free and that the addresses are free or held by the instance's
    /// process family (then it joins their group, after them).
    pub fn add_instance(
        &mut self,
        slot: Slot,
        ipv4: Ipv4Addr,
        ipv6: Option<Ipv6Addr>,
        threads: u16,
    ) {
        let bound = self.instances.len();
        join(self.v4.entry(ipv4).or_default(), slot, bound);
        if let Some(a) = ipv6 {
            join(self.v6.entry(a).or_default(), slot, bound);
        }
        self.instances[slot as usize] = Some(Instance {
            ipv4,
            ipv6,
            threads: threads.max(1),
        });
        self.reroute_v4(ipv4);
        self.conns.add_owner(slot, threads);
    }

    /// Brings `v4_route` for `a` in step with its group in `v4`.
    fn reroute_v4(&mut self, a: Ipv4Addr) {
        match self.v4.get(&a).and_then(|g| g.first().copied()) {
            Some(primary) => {
                let threads = self.threads(primary);
                self.v4_route.insert(a, Route { primary, threads });
            }
            None => {
                self.v4_route.remove(&a);
            }
        }
    }

    /// Removes an instance with its listeners and connections, and its
    /// addresses unless other instances share them (the next one becomes
    /// their primary); returns how many connections were removed.
    pub fn remove_instance(&mut self, slot: Slot) -> u64 {
        let Some(inst) = self.instances.get_mut(slot as usize).and_then(Option::take) else {
            return 0;
        };
        leave(&mut self.v4, inst.ipv4, slot);
        self.reroute_v4(inst.ipv4);
        if let Some(a) = inst.ipv6 {
            leave(&mut self.v6, a, slot);
        }
        self.listens.retain(|_, slots| {
            slots.retain(|&s| s != slot);
            !slots.is_empty()
        });
        self.conns.remove_owner(slot)
    }

    /// Records that `slot` listens on `ip:port` (an unspecified `ip` means
    /// every address of the instance). An instance can only listen on its
    /// own addresses: anything else is refused.
    pub fn listen(&mut self, slot: Slot, ip: IpAddr, port: u16) -> Result<(), String> {
        let bound = self.instances.len();
        for ip in self.own_addrs(slot, ip)? {
            join(self.listens.entry((ip, port)).or_default(), slot, bound);
        }
        Ok(())
    }

    /// Undoes [`Self::listen`] for `slot` only: the other instances sharing
    /// the address keep listening.
    pub fn unlisten(&mut self, slot: Slot, ip: IpAddr, port: u16) -> Result<(), String> {
        for ip in self.own_addrs(slot, ip)? {
            leave(&mut self.listens, (ip, port), slot);
        }
        Ok(())
    }

    /// The instances holding `ip`, the primary first (empty if none).
    pub fn members(&self, ip: IpAddr) -> &[Slot] {
        match ip {
            IpAddr::V4(a) => self.v4.get(&a),
            IpAddr::V6(a) => self.v6.get(&a),
        }
        .map_or(&[], Vec::as_slice)
    }

    fn own_addrs(&self, slot: Slot, ip: IpAddr) -> Result<Vec<IpAddr>, String> {
        let inst = self
            .instances
            .get(slot as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| format!("instance {slot} is not registered"))?;
        let mine: Vec<IpAddr> = std::iter::once(IpAddr::V4(inst.ipv4))
            .chain(inst.ipv6.map(IpAddr::V6))
            .collect();
        match ip {
            IpAddr::V4(a) if a.is_unspecified() => Ok(vec![IpAddr::V4(inst.ipv4)]),
            IpAddr::V6(a) if a.is_unspecified() => Ok(mine),
            ip if mine.contains(&ip) => Ok(vec![ip]),
            ip => Err(format!("{ip} is not this instance's address")),
        }
    }

    /// Connections ltran routes to each thread of `slot`.
    pub fn thread_connections(&self, slot: Slot) -> &[u64] {
        self.conns.thread_counts(slot)
    }

    /// TCP connections in the table.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Connection table capacity.
    pub fn capacity(&self) -> usize {
        self.conns.capacity()
    }

    /// Half-open TCP connections in the table.
    pub fn half_open(&self) -> usize {
        self.conns.half_open()
    }

    /// Connection table entries removed by ageing so far.
    pub fn aged_out(&self) -> u64 {
        self.conns.stats.aged_out
    }

    /// Removes half-open and closed connections past their time, at most
    /// `budget` of them; returns how many. Call it often (every
    /// housekeeping tick): it only looks at the oldest entries.
    pub fn expire(&mut self, now: u64, budget: usize) -> usize {
        self.conns.expire(now, budget)
    }

    /// Listening (address, port) pairs (one however many instances
    /// sharing the address listen on it).
    pub fn listeners(&self) -> usize {
        self.listens.len()
    }

    /// The primary of the instances holding `ip`.
    fn owner(&self, ip: IpAddr) -> Option<Slot> {
        match ip {
            IpAddr::V4(a) => self.v4_route.get(&a).map(|r| r.primary),
            IpAddr::V6(a) => self
                .v6
                .get(&a)
                .and_then(|g| g.first().copied())
                .or_else(|| {
                    // Every instance has the bond MAC's link-local address: the
                    // first instance with IPv6 answers for it.
                    if a == self.link_local {
                        self.first_v6()
                    } else {
                        None
                    }
                }),
        }
    }

    fn first_v6(&self) -> Option<Slot> {
        self.instances
            .iter()
            .position(|i| i.as_ref().is_some_and(|i| i.ipv6.is_some()))
            .map(|p| p as Slot)
    }

    fn threads(&self, slot: Slot) -> u16 {
        self.instances[slot as usize]
            .as_ref()
            .map_or(1, |i| i.threads)
    }

    /// Decides where a received frame goes, counting it; `now` in ms.
    ///
    /// Plain unicast IPv4 to the bond MAC (nearly all traffic) is read in
    /// place ([`packet::ipv4_fast`]) and routed with one lookup of its
    /// destination; everything else goes through the full parse. Both give
    /// the same decisions and counts (tested).
    #[inline]
    pub fn rx(&mut self, frame: &[u8], now: u64) -> Decision {
        match packet::ipv4_fast(frame, &self.mac) {
            Some((src, dst, l4)) => self.rx_v4(src, dst, l4, now),
            None => self.rx_parsed(frame, now),
        }
    }

    /// [`Self::rx`] through the full parse.
    fn rx_parsed(&mut self, frame: &[u8], now: u64) -> Decision {
        let Ok(f) = packet::parse(frame) else {
            self.counters.malformed += 1;
            return Decision::Drop;
        };
        let unicast = f.dst_mac[0] & 1 == 0;
        if unicast && f.dst_mac != self.mac {
            self.counters.not_for_us += 1;
            return Decision::Drop;
        }
        if f.vlan_tags > 0 {
            // lstack has no VLANs: tagged frames are the kernel's.
            return Decision::Kernel;
        }
        match f.net {
            Net::Arp { target, .. } => match self.v4.get(&target).map(Vec::as_slice) {
                Some(&[slot]) => {
                    self.counters.arp += 1;
                    Decision::Deliver { slot, thread: 0 }
                }
                Some([_, _, ..]) => {
                    self.counters.arp += 1;
                    Decision::EachMember(target)
                }
                _ => Decision::Kernel,
            },
            Net::Ip { src, dst, l4 } => self.rx_ip(src, dst, l4, now),
            Net::Other(_) => Decision::Kernel,
        }
    }

    fn rx_ip(&mut self, src: IpAddr, dst: IpAddr, l4: L4, now: u64) -> Decision {
        let (IpAddr::V4(src4), IpAddr::V4(dst4)) = (src, dst) else {
            return self.rx_ip_any(src, dst, l4, now);
        };
        self.rx_v4(src4, dst4, l4, now)
    }

    /// An IPv4 packet to `dst`: one lookup gives its primary and the
    /// primary's threads.
    #[inline]
    fn rx_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr, l4: L4, now: u64) -> Decision {
        let Some(&Route { primary, threads }) = self.v4_route.get(&dst) else {
            return Decision::Kernel;
        };
        match l4 {
            L4::Udp { dport, .. } => {
                self.counters.udp += 1;
                // The same rule lstack uses to place a UDP port (without a
                // division for the usual single thread).
                let thread = if threads == 1 { 0 } else { dport % threads };
                Decision::Deliver {
                    slot: primary,
                    thread,
                }
            }
            L4::Tcp {
                sport,
                dport,
                flags,
            } => {
                let key = ConnKey {
                    remote: IpAddr::V4(src),
                    local: IpAddr::V4(dst),
                    rport: sport,
                    lport: dport,
                };
                match self.tcp_in(primary, key, flags, now) {
                    Some((slot, thread)) => {
                        self.counters.tcp += 1;
                        Decision::Deliver { slot, thread }
                    }
                    None => Decision::Drop,
                }
            }
            L4::Icmp => {
                self.counters.icmp += 1;
                Decision::Deliver {
                    slot: primary,
                    thread: 0,
                }
            }
            _ => Decision::Deliver {
                slot: primary,
                thread: 0,
            },
        }
    }

    /// IPv6, or IPv4 mixed with IPv6 (which no frame has).
    fn rx_ip_any(&mut self, src: IpAddr, dst: IpAddr, l4: L4, now: u64) -> Decision {
        let v6 = dst.is_ipv6();
        let owner = match (dst, l4) {
            (
                IpAddr::V6(d),
                L4::Icmpv6 {
                    kind: 135,
                    ndp_target: Some(t),
                },
            ) if d.is_multicast() => self.owner(IpAddr::V6(t)),
            (IpAddr::V6(d), L4::Icmpv6 { .. }) if d.is_multicast() => {
                return if self.first_v6().is_some() {
                    self.counters.ipv6 += 1;
                    Decision::AllIpv6
                } else {
                    Decision::Kernel
                };
            }
            _ => self.owner(dst),
        };
        let Some(slot) = owner else {
            return Decision::Kernel;
        };
        let decision = match l4 {
            L4::Tcp {
                sport,
                dport,
                flags,
            } => {
                let key = ConnKey {
                    remote: src,
                    local: dst,
                    rport: sport,
                    lport: dport,
                };
                match self.tcp_in(slot, key, flags, now) {
                    Some((slot, thread)) => {
                        if !v6 {
                            self.counters.tcp += 1;
                        }
                        Decision::Deliver { slot, thread }
                    }
                    None => return Decision::Drop,
                }
            }
            L4::Udp { dport, .. } => {
                if !v6 {
                    self.counters.udp += 1;
                }
                // The same rule lstack uses to place a UDP port.
                let thread = dport % self.threads(slot);
                Decision::Deliver { slot, thread }
            }
            L4::Icmp => {
                self.counters.icmp += 1;
                Decision::Deliver { slot, thread: 0 }
            }
            _ => Decision::Deliver { slot, thread: 0 },
        };
        if v6 {
            self.counters.ipv6 += 1;
        }
        decision
    }

    /// Instance and thread for a received TCP segment to an address whose
    /// primary is `primary`; `None` when dropped.
    fn tcp_in(&mut self, primary: Slot, key: ConnKey, flags: u8, now: u64) -> Option<(Slot, u16)> {
        if let Some((owner, thread)) = self.conns.segment(&key, Side::Remote, flags, now) {
            // The owner must still hold the address (link-local aside,
            // which only the primary answers).
            if owner == primary || self.members(key.local).contains(&owner) {
                return Some((owner, thread));
            }
        }
        if flags & (TCP_SYN | TCP_ACK | TCP_RST) != TCP_SYN {
            // Not a new connection and not one we know: the primary's first
            // thread answers it (with a reset, unless it knows better).
            return Some((primary, 0));
        }
        let Some(slot) = self.listener(primary, &key) else {
            self.counters.syn_no_listener += 1;
            return Some((primary, 0));
        };
        let placed = self.conns.insert(key, slot, Thread::Fewest, now);
        self.count_insert(placed).ok().map(|thread| (slot, thread))
    }

    /// The instance a new connection `key` goes to: of those listening on
    /// its address and port that hold the address (or the primary, for the
    /// shared link-local address), the one with the fewest connections,
    /// the first listener on a tie. Bounded by the instances.
    fn listener(&self, primary: Slot, key: &ConnKey) -> Option<Slot> {
        let listening = self.listens.get(&(key.local, key.lport))?;
        let members = self.members(key.local);
        listening
            .iter()
            .copied()
            .filter(|&s| s == primary || members.contains(&s))
            .min_by_key(|&s| self.conns.len_of(s))
    }

    /// Counts what [`ConnTable::insert`] did.
    fn count_insert(&mut self, placed: Result<u16, Refused>) -> Result<u16, Refused> {
        self.counters.conn_evicted = self.conns.stats.evicted;
        match placed {
            Err(Refused::Full) => self.counters.conn_table_full += 1,
            Err(Refused::Quota) => self.counters.conn_quota_full += 1,
            Ok(_) => {}
        }
        placed
    }

    /// Checks a frame `slot`'s `thread` sends and learns the connections it
    /// opens; `now` in ms. A connection the table has no room for still
    /// goes out (counted): its answers then reach the instance's first
    /// thread.
    pub fn tx(&mut self, slot: Slot, thread: u16, frame: &[u8], now: u64) -> Result<(), TxRefusal> {
        // Tagged or not, the same checks apply to what is inside.
        let f = packet::parse(frame).map_err(|_| TxRefusal::Malformed)?;
        if f.src_mac != self.mac {
            return Err(TxRefusal::Spoofed);
        }
        let Some(inst) = self.instances.get(slot as usize).and_then(Option::as_ref) else {
            return Err(TxRefusal::Spoofed);
        };
        // Its own addresses, and the link-local one all instances share.
        let own_v6 = |a: Ipv6Addr| Some(a) == inst.ipv6 || a == self.link_local;
        match f.net {
            Net::Arp { sender, .. } => {
                // 0.0.0.0 is an address probe (RFC 5227).
                if sender != inst.ipv4 && !sender.is_unspecified() {
                    return Err(TxRefusal::Spoofed);
                }
            }
            Net::Ip { src, dst, l4 } => {
                let own = match src {
                    IpAddr::V4(a) => a == inst.ipv4,
                    // :: for duplicate address detection (RFC 4862).
                    IpAddr::V6(a) => own_v6(a) || a.is_unspecified(),
                };
                if !own {
                    return Err(TxRefusal::Spoofed);
                }
                // A neighbour advertisement claims its target address.
                if let L4::Icmpv6 {
                    kind: 136,
                    ndp_target: Some(t),
                } = l4
                {
                    if !own_v6(t) {
                        return Err(TxRefusal::Spoofed);
                    }
                }
                if let L4::Tcp {
                    sport,
                    dport,
                    flags,
                } = l4
                {
                    self.tcp_out(
                        slot,
                        thread,
                        ConnKey {
                            remote: dst,
                            local: src,
                            rport: dport,
                            lport: sport,
                        },
                        flags,
                        now,
                    );
                }
            }
            Net::Other(_) => return Err(TxRefusal::Malformed),
        }
        Ok(())
    }

    fn tcp_out(&mut self, slot: Slot, thread: u16, key: ConnKey, flags: u8, now: u64) {
        if self
            .conns
            .segment(&key, Side::Instance, flags, now)
            .is_some()
        {
            return;
        }
        // A connection the instance opens (SYN) is learnt on the thread that
        // sent it, so the answer comes back there.
        if flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
            let placed = self.conns.insert(key, slot, Thread::Given(thread), now);
            let _ = self.count_insert(placed);
        }
    }
}

/// Adds `slot` to `group` (once, at most `bound` members).
fn join(group: &mut Vec<Slot>, slot: Slot, bound: usize) {
    if !group.contains(&slot) && group.len() < bound {
        group.push(slot);
    }
}

/// Takes `slot` out of the group at `key`, and the group out when empty.
fn leave<K: std::hash::Hash + Eq>(map: &mut FxHashMap<K, Vec<Slot>>, key: K, slot: Slot) {
    if let Some(group) = map.get_mut(&key) {
        group.retain(|&s| s != slot);
        if group.is_empty() {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::TCP_FIN;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
    const PEER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x20];

    fn frame(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn tcp4(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Vec<u8> {
        let src: Ipv4Addr = src.parse().unwrap();
        let dst: Ipv4Addr = dst.parse().unwrap();
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
        ip.extend_from_slice(&src.octets());
        ip.extend_from_slice(&dst.octets());
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&sport.to_be_bytes());
        tcp[2..4].copy_from_slice(&dport.to_be_bytes());
        tcp[12] = 0x50;
        tcp[13] = flags;
        ip.extend_from_slice(&tcp);
        ip
    }

    fn udp4(src: &str, dst: &str, dport: u16) -> Vec<u8> {
        let src: Ipv4Addr = src.parse().unwrap();
        let dst: Ipv4Addr = dst.parse().unwrap();
        let mut ip = vec![0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0];
        ip.extend_from_slice(&src.octets());
        ip.extend_from_slice(&dst.octets());
        let mut udp = vec![0u8; 8];
        udp[0..2].copy_from_slice(&5000u16.to_be_bytes());
        udp[2..4].copy_from_slice(&dport.to_be_bytes());
        ip.extend_from_slice(&udp);
        ip
    }

    fn arp(op: u16, sender: &str, target: &str) -> Vec<u8> {
        let sender: Ipv4Addr = sender.parse().unwrap();
        let target: Ipv4Addr = target.parse().unwrap();
        let mut a = vec![0, 1, 8, 0, 6, 4];
        a.extend_from_slice(&op.to_be_bytes());
        a.extend_from_slice(&PEER);
        a.extend_from_slice(&sender.octets());
        a.extend_from_slice(&[0; 6]);
        a.extend_from_slice(&target.octets());
        a
    }

    const LIMITS: Limits = Limits {
        half_open_timeout_ms: 5_000,
        closed_linger_ms: 10_000,
    };

    fn tables() -> Tables {
        let mut t = Tables::new(MAC, 4, 8, LIMITS);
        t.add_instance(0, "10.0.0.2".parse().unwrap(), None, 1);
        t.add_instance(
            1,
            "10.0.0.3".parse().unwrap(),
            Some("fd00::3".parse().unwrap()),
            2,
        );
        t
    }

    fn rx_tcp(t: &mut Tables, dst: &str, sport: u16, dport: u16, flags: u8) -> Decision {
        t.rx(
            &frame(
                MAC,
                PEER,
                0x0800,
                &tcp4("10.0.0.100", sport, dst, dport, flags),
            ),
            0,
        )
    }

    #[test]
    fn arp_goes_to_the_owner_and_the_rest_to_the_kernel() {
        let mut t = tables();
        let req = frame([0xff; 6], PEER, 0x0806, &arp(1, "10.0.0.100", "10.0.0.3"));
        assert_eq!(t.rx(&req, 0), Decision::Deliver { slot: 1, thread: 0 });
        let reply = frame(MAC, PEER, 0x0806, &arp(2, "10.0.0.100", "10.0.0.2"));
        assert_eq!(t.rx(&reply, 0), Decision::Deliver { slot: 0, thread: 0 });
        let other = frame([0xff; 6], PEER, 0x0806, &arp(1, "10.0.0.100", "10.0.0.77"));
        assert_eq!(t.rx(&other, 0), Decision::Kernel);
        assert_eq!(t.counters.arp, 2);
    }

    #[test]
    fn other_macs_and_garbage_are_dropped_and_counted() {
        let mut t = tables();
        let f = frame(
            PEER,
            PEER,
            0x0800,
            &tcp4("10.0.0.100", 1, "10.0.0.2", 80, TCP_SYN),
        );
        assert_eq!(t.rx(&f, 0), Decision::Drop);
        assert_eq!(t.counters.not_for_us, 1);
        assert_eq!(t.rx(&[1, 2, 3], 0), Decision::Drop);
        assert_eq!(t.counters.malformed, 1);
    }

    #[test]
    fn syns_spread_over_the_threads_with_fewest_connections() {
        let mut t = Tables::new(MAC, 4, 64, LIMITS);
        t.add_instance(1, "10.0.0.3".parse().unwrap(), None, 2);
        t.listen(1, "0.0.0.0".parse().unwrap(), 6379).unwrap();
        let threads: Vec<_> = (0..4)
            .map(
                |i| match rx_tcp(&mut t, "10.0.0.3", 40000 + i, 6379, TCP_SYN) {
                    Decision::Deliver { slot: 1, thread } => thread,
                    d => panic!("{d:?}"),
                },
            )
            .collect();
        assert_eq!(threads, vec![0, 1, 0, 1]);
        assert_eq!(t.thread_connections(1), &[2, 2]);
        // The rest of each connection follows its SYN.
        for i in 0..4u16 {
            assert_eq!(
                rx_tcp(&mut t, "10.0.0.3", 40000 + i, 6379, TCP_ACK),
                Decision::Deliver {
                    slot: 1,
                    thread: threads[usize::from(i)]
                }
            );
        }
    }

    #[test]
    fn syn_without_listener_goes_to_thread_zero_and_is_not_learnt() {
        let mut t = tables();
        assert_eq!(
            rx_tcp(&mut t, "10.0.0.3", 40000, 80, TCP_SYN),
            Decision::Deliver { slot: 1, thread: 0 }
        );
        assert_eq!(t.counters.syn_no_listener, 1);
        assert_eq!(t.connections(), 0);
    }

    #[test]
    fn connections_an_instance_opens_are_learnt_on_its_thread() {
        let mut t = tables();
        let syn = frame(
            PEER,
            MAC,
            0x0800,
            &tcp4("10.0.0.3", 33000, "10.0.0.100", 80, TCP_SYN),
        );
        t.tx(1, 1, &syn, 0).unwrap();
        let synack = frame(
            MAC,
            PEER,
            0x0800,
            &tcp4("10.0.0.100", 80, "10.0.0.3", 33000, TCP_SYN | TCP_ACK),
        );
        assert_eq!(t.rx(&synack, 0), Decision::Deliver { slot: 1, thread: 1 });
    }

    #[test]
    fn an_instance_cannot_speak_for_another() {
        let mut t = tables();
        let spoof = frame(
            PEER,
            MAC,
            0x0800,
            &tcp4("10.0.0.2", 1, "10.0.0.100", 80, TCP_SYN),
        );
        assert_eq!(t.tx(1, 0, &spoof, 0), Err(TxRefusal::Spoofed));
        let arp_spoof = frame([0xff; 6], MAC, 0x0806, &arp(2, "10.0.0.2", "10.0.0.100"));
        assert_eq!(t.tx(1, 0, &arp_spoof, 0), Err(TxRefusal::Spoofed));
        let other_mac = frame(
            PEER,
            PEER,
            0x0800,
            &tcp4("10.0.0.3", 1, "10.0.0.100", 80, TCP_SYN),
        );
        assert_eq!(t.tx(1, 0, &other_mac, 0), Err(TxRefusal::Spoofed));
        assert!(t.listen(1, "10.0.0.2".parse().unwrap(), 80).is_err());
        let own = frame(
            PEER,
            MAC,
            0x0800,
            &tcp4("10.0.0.3", 1, "10.0.0.100", 80, TCP_SYN),
        );
        assert_eq!(t.tx(1, 0, &own, 0), Ok(()));
    }

    /// `payload` of `ethertype` inside VLAN tags with these TPIDs (VLAN 0).
    fn tagged(
        dst: [u8; 6],
        src: [u8; 6],
        tpids: &[u16],
        ethertype: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut inner = Vec::new();
        for (i, _) in tpids.iter().enumerate() {
            inner.extend_from_slice(&[0, 0]);
            let next = tpids.get(i + 1).copied().unwrap_or(ethertype);
            inner.extend_from_slice(&next.to_be_bytes());
        }
        inner.extend_from_slice(payload);
        frame(dst, src, tpids[0], &inner)
    }

    fn udp6(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
        let mut ip6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        ip6.extend_from_slice(&src.octets());
        ip6.extend_from_slice(&dst.octets());
        ip6.extend_from_slice(&[0x13, 0x88, 0, 53, 0, 8, 0, 0]);
        ip6
    }

    fn na(src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
        let mut ip6 = vec![0x60, 0, 0, 0, 0, 24, 58, 255];
        ip6.extend_from_slice(&src.octets());
        ip6.extend_from_slice(&"ff02::1".parse::<Ipv6Addr>().unwrap().octets());
        let mut icmp = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
        icmp.extend_from_slice(&target.octets());
        ip6.extend_from_slice(&icmp);
        ip6
    }

    #[test]
    fn forged_frames_inside_vlan_tags_are_refused_too() {
        let mut t = tables();
        for tpids in [
            &[0x8100u16][..],
            &[0x88a8, 0x8100],
            &[0x9100, 0x8100],
            &[0x9100],
        ] {
            // UDP from the other instance's address.
            let udp = tagged(
                PEER,
                MAC,
                tpids,
                0x0800,
                &udp4("10.0.0.2", "10.0.0.100", 53),
            );
            assert_eq!(t.tx(1, 0, &udp, 0), Err(TxRefusal::Spoofed), "{tpids:x?}");
            // ARP claiming the peer's own address.
            let a = tagged(
                [0xff; 6],
                MAC,
                tpids,
                0x0806,
                &arp(2, "10.0.0.100", "10.0.0.100"),
            );
            assert_eq!(t.tx(1, 0, &a, 0), Err(TxRefusal::Spoofed), "{tpids:x?}");
            // The same frames from its own address go out, tagged or not.
            let own = tagged(
                PEER,
                MAC,
                tpids,
                0x0800,
                &udp4("10.0.0.3", "10.0.0.100", 53),
            );
            assert_eq!(t.tx(1, 0, &own, 0), Ok(()), "{tpids:x?}");
        }
        // Three tags deep is not looked into: refused as unreadable.
        let deep = tagged(
            PEER,
            MAC,
            &[0x88a8, 0x8100, 0x8100],
            0x0800,
            &udp4("10.0.0.3", "10.0.0.100", 53),
        );
        assert_eq!(t.tx(1, 0, &deep, 0), Err(TxRefusal::Malformed));
    }

    #[test]
    fn ethertypes_the_check_does_not_read_are_refused() {
        let mut t = tables();
        for ethertype in [0x88b5u16, 0x8863, 0x88cc, 0x0842] {
            let f = frame(PEER, MAC, ethertype, &[0u8; 46]);
            assert_eq!(
                t.tx(1, 0, &f, 0),
                Err(TxRefusal::Malformed),
                "{ethertype:#x}"
            );
        }
    }

    #[test]
    fn only_the_bond_macs_link_local_address_is_the_instances() {
        let mut t = tables();
        let own_ll = packet::link_local(MAC);
        let peer_ll = packet::link_local(PEER);
        let dst: Ipv6Addr = "fe80::1".parse().unwrap();
        let ok = frame(PEER, MAC, 0x86dd, &udp6(own_ll, dst));
        assert_eq!(t.tx(1, 0, &ok, 0), Ok(()));
        for src in [
            peer_ll,
            "fe80::1234".parse().unwrap(),
            "fd00::2".parse().unwrap(),
        ] {
            let f = frame(PEER, MAC, 0x86dd, &udp6(src, dst));
            assert_eq!(t.tx(1, 0, &f, 0), Err(TxRefusal::Spoofed), "{src}");
        }
        // An advertisement may only claim the instance's own addresses.
        let own: Ipv6Addr = "fd00::3".parse().unwrap();
        for target in [own, own_ll] {
            let f = frame([0x33, 0x33, 0, 0, 0, 1], MAC, 0x86dd, &na(own, target));
            assert_eq!(t.tx(1, 0, &f, 0), Ok(()), "{target}");
        }
        for target in [peer_ll, "fd00::2".parse().unwrap()] {
            let f = frame([0x33, 0x33, 0, 0, 0, 1], MAC, 0x86dd, &na(own, target));
            assert_eq!(t.tx(1, 0, &f, 0), Err(TxRefusal::Spoofed), "{target}");
        }
        // Received, only the shared link-local address is an instance's.
        let to = |d: Ipv6Addr| frame(MAC, PEER, 0x86dd, &udp6("fe80::9".parse().unwrap(), d));
        assert_eq!(
            t.rx(&to(own_ll), 0),
            Decision::Deliver { slot: 1, thread: 1 }
        );
        assert_eq!(t.rx(&to(peer_ll), 0), Decision::Kernel);
    }

    #[test]
    fn udp_follows_the_port_rule_of_lstack() {
        let mut t = tables();
        for port in [53u16, 54, 1000, 1001] {
            let f = frame(MAC, PEER, 0x0800, &udp4("10.0.0.100", "10.0.0.3", port));
            assert_eq!(
                t.rx(&f, 0),
                Decision::Deliver {
                    slot: 1,
                    thread: port % 2
                }
            );
        }
        let f = frame(MAC, PEER, 0x0800, &udp4("10.0.0.100", "10.0.0.9", 53));
        assert_eq!(t.rx(&f, 0), Decision::Kernel);
    }

    #[test]
    fn closed_connections_age_out_and_live_ones_stay() {
        let mut t = tables();
        t.listen(0, "10.0.0.2".parse().unwrap(), 80).unwrap();
        rx_tcp(&mut t, "10.0.0.2", 1, 80, TCP_SYN);
        rx_tcp(&mut t, "10.0.0.2", 1, 80, TCP_ACK);
        rx_tcp(&mut t, "10.0.0.2", 2, 80, TCP_SYN);
        rx_tcp(&mut t, "10.0.0.2", 2, 80, TCP_ACK);
        rx_tcp(&mut t, "10.0.0.2", 2, 80, TCP_FIN | TCP_ACK);
        let fin = frame(
            PEER,
            MAC,
            0x0800,
            &tcp4("10.0.0.2", 80, "10.0.0.100", 2, TCP_FIN | TCP_ACK),
        );
        t.tx(0, 0, &fin, 0).unwrap();
        assert_eq!(t.connections(), 2);
        assert_eq!(t.expire(9_999, 100), 0, "too recent");
        assert_eq!(t.expire(10_000, 100), 1);
        assert_eq!(t.expire(u64::MAX / 2, 100), 0, "established stays");
        assert_eq!(t.connections(), 1);
        assert_eq!(t.thread_connections(0), &[1]);
    }

    /// A SYN from `src:sport` to `dst:80`, as received.
    fn syn_from(src: Ipv4Addr, sport: u16, dst: &str) -> Vec<u8> {
        frame(
            MAC,
            PEER,
            0x0800,
            &tcp4(&src.to_string(), sport, dst, 80, TCP_SYN),
        )
    }

    /// Instances 0 (10.0.0.2) and 1 (10.0.0.3), one thread each, and a
    /// table of `capacity`; instance 1 listens on port 80.
    fn two_instances(capacity: usize) -> Tables {
        let mut t = Tables::new(MAC, 4, capacity, LIMITS);
        t.add_instance(0, "10.0.0.2".parse().unwrap(), None, 1);
        t.add_instance(1, "10.0.0.3".parse().unwrap(), None, 1);
        t.listen(1, "10.0.0.3".parse().unwrap(), 80).unwrap();
        t
    }

    #[test]
    fn a_syn_flood_at_one_instance_leaves_room_for_the_others() {
        let mut t = two_instances(1024);
        t.listen(0, "10.0.0.2".parse().unwrap(), 80).unwrap();
        // A real client of instance 0 completes its handshake first.
        let client = Ipv4Addr::new(192, 0, 2, 7);
        t.rx(&syn_from(client, 1, "10.0.0.2"), 0);
        let ack = |t: &mut Tables, sport, dst: &str, now| {
            let f = tcp4(&client.to_string(), sport, dst, 80, TCP_ACK);
            t.rx(&frame(MAC, PEER, 0x0800, &f), now)
        };
        ack(&mut t, 1, "10.0.0.2", 0);
        // Then 10 times the table's capacity of spoofed SYNs, each a new
        // flow, at instance 0.
        for n in 0..10_240u32 {
            let src = Ipv4Addr::from(0x0b00_0000 + n);
            let d = t.rx(&syn_from(src, 1024 + (n % 50_000) as u16, "10.0.0.2"), 1000);
            assert_eq!(d, Decision::Deliver { slot: 0, thread: 0 });
        }
        assert!(t.connections() <= 1024);
        assert_eq!(t.counters.conn_table_full, 0);
        assert!(t.counters.conn_evicted >= 10_240 - 512, "{:?}", t.counters);
        // Instance 1 still takes new connections, all it may hold.
        for p in 0..512u16 {
            assert_eq!(
                t.rx(&syn_from(client, 2000 + p, "10.0.0.3"), 1000),
                Decision::Deliver { slot: 1, thread: 0 }
            );
            ack(&mut t, 2000 + p, "10.0.0.3", 1000);
        }
        assert_eq!(t.counters.conn_table_full + t.counters.conn_quota_full, 0);
        // And a real client of instance 0 gets through its handshake
        // during the flood.
        t.rx(&syn_from(client, 2, "10.0.0.2"), 1000);
        for n in 0..100u32 {
            let src = Ipv4Addr::from(0x0c00_0000 + n);
            t.rx(&syn_from(src, 1024, "10.0.0.2"), 1000);
        }
        ack(&mut t, 2, "10.0.0.2", 1000);
        // The flood's entries are gone 5 s after their last segment; the
        // established connections stay.
        assert!(t.half_open() > 0);
        while t.expire(5_999, 256) > 0 {}
        assert!(t.half_open() > 0, "too early");
        while t.expire(6_000, 256) > 0 {}
        assert_eq!(t.half_open(), 0);
        assert_eq!(t.connections(), 514, "{:?}", t.counters);
        assert_eq!(t.thread_connections(0), &[2]);
        assert_eq!(t.thread_connections(1), &[512]);
    }

    #[test]
    fn an_instance_sending_syns_cannot_take_anothers_room() {
        let mut t = two_instances(64);
        for p in 0..1000u16 {
            let syn = frame(
                PEER,
                MAC,
                0x0800,
                &tcp4("10.0.0.2", 10_000 + p, "10.0.0.100", 80, TCP_SYN),
            );
            assert_eq!(t.tx(0, 0, &syn, 0), Ok(()), "its frames still go out");
        }
        for p in 0..32u16 {
            assert_eq!(
                rx_tcp(&mut t, "10.0.0.3", 3000 + p, 80, TCP_SYN),
                Decision::Deliver { slot: 1, thread: 0 }
            );
            rx_tcp(&mut t, "10.0.0.3", 3000 + p, 80, TCP_ACK);
        }
        assert_eq!(t.counters.conn_table_full + t.counters.conn_quota_full, 0);
    }

    #[test]
    fn an_instance_at_its_share_of_established_connections_is_refused() {
        let mut t = tables();
        t.listen(0, "10.0.0.2".parse().unwrap(), 80).unwrap();
        // Two instances, a table of 8: a share of 4.
        for p in 0..4 {
            rx_tcp(&mut t, "10.0.0.2", p, 80, TCP_SYN);
            rx_tcp(&mut t, "10.0.0.2", p, 80, TCP_ACK);
        }
        assert_eq!(rx_tcp(&mut t, "10.0.0.2", 99, 80, TCP_SYN), Decision::Drop);
        assert_eq!(t.counters.conn_quota_full, 1);
    }

    #[test]
    fn removing_an_instance_forgets_everything_it_had() {
        let mut t = tables();
        t.listen(1, "0.0.0.0".parse().unwrap(), 6379).unwrap();
        rx_tcp(&mut t, "10.0.0.3", 1, 6379, TCP_SYN);
        rx_tcp(&mut t, "10.0.0.3", 2, 6379, TCP_SYN);
        assert_eq!(t.remove_instance(1), 2);
        assert_eq!(t.listeners(), 0);
        assert_eq!(
            rx_tcp(&mut t, "10.0.0.3", 1, 6379, TCP_ACK),
            Decision::Kernel
        );
    }

    #[test]
    fn neighbour_solicitations_go_to_the_target_owner() {
        let mut t = tables();
        let target: Ipv6Addr = "fd00::3".parse().unwrap();
        let mut ip6 = vec![0x60, 0, 0, 0, 0, 24, 58, 255];
        ip6.extend_from_slice(&"fd00::100".parse::<Ipv6Addr>().unwrap().octets());
        ip6.extend_from_slice(&"ff02::1:ff00:3".parse::<Ipv6Addr>().unwrap().octets());
        let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&target.octets());
        ip6.extend_from_slice(&icmp);
        let f = frame([0x33, 0x33, 0xff, 0, 0, 3], PEER, 0x86dd, &ip6);
        assert_eq!(t.rx(&f, 0), Decision::Deliver { slot: 1, thread: 0 });
        assert_eq!(t.counters.ipv6, 1);
    }

    /// Instances 1 and 2 share 10.0.0.5 (1 first: the primary), one
    /// thread each; instance 0 holds 10.0.0.2.
    fn shared() -> Tables {
        let mut t = Tables::new(MAC, 4, 64, LIMITS);
        t.add_instance(0, "10.0.0.2".parse().unwrap(), None, 1);
        t.add_instance(1, "10.0.0.5".parse().unwrap(), None, 1);
        t.add_instance(2, "10.0.0.5".parse().unwrap(), None, 1);
        t
    }

    /// Instances with one, two and shared addresses, several threads,
    /// listeners: the ground the fast path has to agree with the full
    /// parse on.
    fn varied() -> Tables {
        let mut t = Tables::new(MAC, 4, 64, LIMITS);
        t.add_instance(0, "10.0.0.2".parse().unwrap(), None, 1);
        t.add_instance(1, "10.0.0.3".parse().unwrap(), None, 3);
        t.add_instance(2, "10.0.0.5".parse().unwrap(), None, 2);
        t.add_instance(3, "10.0.0.5".parse().unwrap(), None, 1);
        t.listen(1, "0.0.0.0".parse().unwrap(), 80).unwrap();
        t.listen(2, "10.0.0.5".parse().unwrap(), 80).unwrap();
        t.listen(3, "10.0.0.5".parse().unwrap(), 80).unwrap();
        t
    }

    proptest::proptest! {
        /// Received frames give the same decisions and counts, and leave
        /// the same connections behind, read by the fast path or by the
        /// full parse.
        #[test]
        fn the_fast_path_decides_as_the_full_parse(
            frames in proptest::collection::vec(
                (
                    0usize..5,
                    proptest::sample::select(vec![1u8, 6, 6, 6, 17, 17, 47]),
                    0u16..4,
                    proptest::sample::select(vec![80u16, 81, 9]),
                    proptest::sample::select(vec![
                        TCP_SYN, TCP_ACK, TCP_SYN | TCP_ACK, TCP_FIN | TCP_ACK, TCP_RST, 0,
                    ]),
                    0usize..3,
                    proptest::option::of((0usize..60, proptest::num::u8::ANY)),
                ),
                1..60,
            ),
        ) {
            let mut fast = varied();
            let mut slow = varied();
            let dsts = ["10.0.0.2", "10.0.0.3", "10.0.0.5", "10.0.0.9", "10.0.0.5"];
            for (i, (dst, proto, sport, dport, flags, mac, flip)) in frames.into_iter().enumerate() {
                let mut ip = match proto {
                    6 => tcp4("10.0.0.100", 40000 + sport, dsts[dst], dport, flags),
                    17 => udp4("10.0.0.100", dsts[dst], dport),
                    p => {
                        let mut ip = udp4("10.0.0.100", dsts[dst], dport);
                        ip[9] = p;
                        ip
                    }
                };
                if let Some((at, v)) = flip {
                    if let Some(b) = ip.get_mut(at) {
                        *b = v;
                    }
                }
                let dst_mac = [MAC, [0xff; 6], PEER][mac];
                let f = frame(dst_mac, PEER, 0x0800, &ip);
                let now = i as u64 * 100;
                let (a, b) = (fast.rx(&f, now), slow.rx_parsed(&f, now));
                proptest::prop_assert_eq!(a, b, "frame {}: {:x?}", i, f);
                proptest::prop_assert_eq!(&fast.counters, &slow.counters);
            }
            proptest::prop_assert_eq!(fast.connections(), slow.connections());
            for s in 0..4 {
                proptest::prop_assert_eq!(fast.thread_connections(s), slow.thread_connections(s));
            }
        }
    }

    #[test]
    fn the_one_lookup_route_follows_the_groups() {
        let mut t = shared();
        let udp = |t: &mut Tables| {
            t.rx(
                &frame(MAC, PEER, 0x0800, &udp4("10.0.0.100", "10.0.0.5", 7)),
                0,
            )
        };
        assert_eq!(udp(&mut t), Decision::Deliver { slot: 1, thread: 0 });
        t.remove_instance(1);
        assert_eq!(udp(&mut t), Decision::Deliver { slot: 2, thread: 0 });
        t.add_instance(1, "10.0.0.5".parse().unwrap(), None, 4);
        assert_eq!(udp(&mut t), Decision::Deliver { slot: 2, thread: 0 });
        t.remove_instance(2);
        assert_eq!(udp(&mut t), Decision::Deliver { slot: 1, thread: 3 });
        t.remove_instance(1);
        assert_eq!(udp(&mut t), Decision::Kernel);
    }

    fn slot_of(d: Decision) -> Slot {
        match d {
            Decision::Deliver { slot, thread: 0 } => slot,
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn syns_spread_over_the_members_listening() {
        let mut t = shared();
        t.listen(1, "0.0.0.0".parse().unwrap(), 80).unwrap();
        t.listen(2, "10.0.0.5".parse().unwrap(), 80).unwrap();
        let slots: Vec<Slot> = (0..6)
            .map(|p| slot_of(rx_tcp(&mut t, "10.0.0.5", 40000 + p, 80, TCP_SYN)))
            .collect();
        assert_eq!(slots, vec![1, 2, 1, 2, 1, 2]);
        assert_eq!(t.thread_connections(1), &[3]);
        assert_eq!(t.thread_connections(2), &[3]);
        assert_eq!(t.listeners(), 1, "one (address, port) pair");
        // Only members listening get them.
        t.listen(2, "10.0.0.5".parse().unwrap(), 8080).unwrap();
        for p in 0..3 {
            assert_eq!(
                slot_of(rx_tcp(&mut t, "10.0.0.5", 50000 + p, 8080, TCP_SYN)),
                2
            );
        }
    }

    #[test]
    fn a_retransmitted_syn_and_the_rest_of_a_connection_reach_its_member() {
        let mut t = shared();
        t.listen(1, "10.0.0.5".parse().unwrap(), 80).unwrap();
        t.listen(2, "10.0.0.5".parse().unwrap(), 80).unwrap();
        let first = slot_of(rx_tcp(&mut t, "10.0.0.5", 40000, 80, TCP_SYN));
        let second = slot_of(rx_tcp(&mut t, "10.0.0.5", 40001, 80, TCP_SYN));
        assert_ne!(first, second);
        for _ in 0..3 {
            // Retransmitted: the other member now has fewer, yet it stays.
            assert_eq!(
                slot_of(rx_tcp(&mut t, "10.0.0.5", 40001, 80, TCP_SYN)),
                second
            );
        }
        for flags in [TCP_ACK, TCP_ACK | TCP_FIN, TCP_RST] {
            assert_eq!(
                slot_of(rx_tcp(&mut t, "10.0.0.5", 40001, 80, flags)),
                second
            );
        }
        // An answer from the member that owns it is learnt as its own.
        let synack = frame(
            PEER,
            MAC,
            0x0800,
            &tcp4("10.0.0.5", 80, "10.0.0.100", 40000, TCP_SYN | TCP_ACK),
        );
        t.tx(first, 0, &synack, 0).unwrap();
        assert_eq!(
            slot_of(rx_tcp(&mut t, "10.0.0.5", 40000, 80, TCP_ACK)),
            first
        );
    }

    #[test]
    fn arp_reaches_every_member_and_the_rest_goes_to_the_primary() {
        let mut t = shared();
        let req = frame([0xff; 6], PEER, 0x0806, &arp(1, "10.0.0.100", "10.0.0.5"));
        let d = t.rx(&req, 0);
        assert_eq!(d, Decision::EachMember("10.0.0.5".parse().unwrap()));
        assert_eq!(t.members("10.0.0.5".parse().unwrap()), &[1, 2]);
        let reply = frame(MAC, PEER, 0x0806, &arp(2, "10.0.0.100", "10.0.0.5"));
        assert_eq!(t.rx(&reply, 0), d);
        assert_eq!(t.counters.arp, 2);
        // A lone holder's ARP is delivered as before.
        let lone = frame([0xff; 6], PEER, 0x0806, &arp(1, "10.0.0.100", "10.0.0.2"));
        assert_eq!(t.rx(&lone, 0), Decision::Deliver { slot: 0, thread: 0 });
        // UDP, ICMP and segments of no known connection: the primary.
        let udp = frame(MAC, PEER, 0x0800, &udp4("10.0.0.100", "10.0.0.5", 53));
        assert_eq!(slot_of(t.rx(&udp, 0)), 1);
        let mut icmp = udp4("10.0.0.100", "10.0.0.5", 53);
        icmp[9] = 1;
        assert_eq!(slot_of(t.rx(&frame(MAC, PEER, 0x0800, &icmp), 0)), 1);
        assert_eq!(t.counters.icmp, 1);
        assert_eq!(slot_of(rx_tcp(&mut t, "10.0.0.5", 1, 80, TCP_ACK)), 1);
        // A SYN nobody listens on: the primary resets it.
        assert_eq!(slot_of(rx_tcp(&mut t, "10.0.0.5", 1, 80, TCP_SYN)), 1);
        assert_eq!(t.counters.syn_no_listener, 1);
    }

    #[test]
    fn every_member_may_send_as_the_address() {
        let mut t = shared();
        for slot in [1, 2] {
            let f = frame(PEER, MAC, 0x0800, &udp4("10.0.0.5", "10.0.0.100", 53));
            assert_eq!(t.tx(slot, 0, &f, 0), Ok(()));
            let a = frame([0xff; 6], MAC, 0x0806, &arp(2, "10.0.0.5", "10.0.0.100"));
            assert_eq!(t.tx(slot, 0, &a, 0), Ok(()));
            let other = frame(PEER, MAC, 0x0800, &udp4("10.0.0.2", "10.0.0.100", 53));
            assert_eq!(t.tx(slot, 0, &other, 0), Err(TxRefusal::Spoofed));
        }
        assert!(t.listen(1, "10.0.0.2".parse().unwrap(), 80).is_err());
    }

    #[test]
    fn a_member_leaving_takes_only_its_own() {
        let mut t = shared();
        t.listen(1, "10.0.0.5".parse().unwrap(), 80).unwrap();
        t.listen(2, "10.0.0.5".parse().unwrap(), 80).unwrap();
        t.listen(2, "10.0.0.5".parse().unwrap(), 81).unwrap();
        let a = slot_of(rx_tcp(&mut t, "10.0.0.5", 1, 80, TCP_SYN));
        rx_tcp(&mut t, "10.0.0.5", 1, 80, TCP_ACK);
        let b = slot_of(rx_tcp(&mut t, "10.0.0.5", 2, 80, TCP_SYN));
        rx_tcp(&mut t, "10.0.0.5", 2, 80, TCP_ACK);
        assert_eq!((a, b), (1, 2));
        // The primary leaves: its connection goes, 2 keeps its own and
        // becomes the primary.
        assert_eq!(t.remove_instance(1), 1);
        assert_eq!(t.members("10.0.0.5".parse().unwrap()), &[2]);
        assert_eq!(slot_of(rx_tcp(&mut t, "10.0.0.5", 2, 80, TCP_ACK)), 2);
        assert_eq!(slot_of(rx_tcp(&mut t, "10.0.0.5", 3, 80, TCP_SYN)), 2);
        assert_eq!(slot_of(rx_tcp(&mut t, "10.0.0.5", 4, 81, TCP_SYN)), 2);
        let udp = frame(MAC, PEER, 0x0800, &udp4("10.0.0.100", "10.0.0.5", 53));
        assert_eq!(slot_of(t.rx(&udp, 0)), 2);
        let req = frame([0xff; 6], PEER, 0x0806, &arp(1, "10.0.0.100", "10.0.0.5"));
        assert_eq!(t.rx(&req, 0), Decision::Deliver { slot: 2, thread: 0 });
        assert_eq!(t.counters.syn_no_listener, 0);
        assert_eq!(t.listeners(), 2);
        // A newcomer joins after it; 2 stays the primary.
        t.add_instance(1, "10.0.0.5".parse().unwrap(), None, 1);
        assert_eq!(t.members("10.0.0.5".parse().unwrap()), &[2, 1]);
        t.remove_instance(1);
        // The last member leaving frees the address.
        assert_eq!(t.remove_instance(2), 3);
        assert!(t.members("10.0.0.5".parse().unwrap()).is_empty());
        assert_eq!(t.listeners(), 0);
        assert_eq!(t.rx(&udp, 0), Decision::Kernel);
        assert_eq!(t.rx(&req, 0), Decision::Kernel);
        // And another may take it.
        t.add_instance(3, "10.0.0.5".parse().unwrap(), None, 1);
        assert_eq!(slot_of(t.rx(&udp, 0)), 3);
    }

    #[test]
    fn unlisten_by_one_member_leaves_the_others_listening() {
        let mut t = shared();
        t.listen(1, "0.0.0.0".parse().unwrap(), 80).unwrap();
        t.listen(2, "0.0.0.0".parse().unwrap(), 80).unwrap();
        t.unlisten(1, "0.0.0.0".parse().unwrap(), 80).unwrap();
        assert_eq!(t.listeners(), 1);
        for p in 0..4 {
            assert_eq!(slot_of(rx_tcp(&mut t, "10.0.0.5", p, 80, TCP_SYN)), 2);
        }
        t.unlisten(2, "10.0.0.5".parse().unwrap(), 80).unwrap();
        assert_eq!(t.listeners(), 0);
        assert_eq!(slot_of(rx_tcp(&mut t, "10.0.0.5", 9, 80, TCP_SYN)), 1);
        assert_eq!(t.counters.syn_no_listener, 1);
    }

    #[test]
    fn ipv6_addresses_are_shared_alike() {
        let mut t = Tables::new(MAC, 4, 64, LIMITS);
        let v6: Ipv6Addr = "fd00::5".parse().unwrap();
        t.add_instance(1, "10.0.0.5".parse().unwrap(), Some(v6), 1);
        t.add_instance(2, "10.0.0.5".parse().unwrap(), Some(v6), 1);
        assert_eq!(t.members(IpAddr::V6(v6)), &[1, 2]);
        let f = frame(MAC, PEER, 0x86dd, &udp6("fd00::9".parse().unwrap(), v6));
        assert_eq!(slot_of(t.rx(&f, 0)), 1);
        t.remove_instance(1);
        assert_eq!(slot_of(t.rx(&f, 0)), 2);
        t.remove_instance(2);
        assert_eq!(t.rx(&f, 0), Decision::Kernel);
    }
}
