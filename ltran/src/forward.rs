//! The dispatcher loop: the bond's ports, the instances' rings, the
//! exception interface, all on one thread.
//!
//! Per loop: apply control commands, check links every `bond_miimon` ms
//! (both every `HOUSEKEEPING_US`), take a burst from the active port
//! (frames arriving on a backup port are dropped, as active-backup bonding
//! does), decide each frame's owner (one read of its headers, one lookup)
//! and gather it into that instance thread's batch, then hand each batch
//! that got frames to its ring in one enqueue. Then move what instance
//! threads queued for sending onto the active port, checking that it
//! speaks only for its own addresses: rings that sent recently are polled
//! on every loop, idle ones a few per loop in rotation
//! ([`TxScan`](crate::lanes::TxScan)), so a loop does not look at every
//! ring of every instance. A full ring drops and counts; nothing here
//! waits on an instance. No allocation, lock, clock read or system call
//! happens per frame: the batches are made when an instance registers.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    time::{Duration, Instant},
};

use dpdk::{Mbuf, MbufBatch, Mempool, Port, RxQueue, TxQueue};
use gazelle_ctl_proto::{
    BondPort, BondStatus, DepartedInstance, InstanceThread, LatencyStats, LtranStats, TableCounters,
};

use crate::{
    bond::{self, Bond, Change},
    lanes::{self, Gathered, TxScan},
    packet,
    table::{Decision, Limits, Slot, Tables, TxRefusal},
};

/// Receive-burst histogram buckets: empty, 1, 2-3, 4-7, 8-15, 16-31, 32+.
pub const BURST_BUCKETS: usize = 7;

/// Microseconds between looks at the command channel, the clock and the
/// link, scan and publish timers.
const HOUSEKEEPING_US: u64 = 100;

/// Loops between reads of the TSC for housekeeping (a loop with a full
/// burst takes microseconds, an empty one tens of nanoseconds).
const HOUSEKEEPING_LOOPS: u32 = 16;

/// How long a half-open connection (SYN seen, nothing acknowledged by the
/// remote yet) keeps its table entry after the remote's last segment. A
/// LAN handshake takes milliseconds; with two SYN-ACKs lost (smoltcp
/// retries after 1 s, then 2 s more) it completes about 3 s after the
/// client's SYN, and a client's retransmitted SYN restarts the clock.
/// Linux keeps SYN-RECV for a minute, but it has SYN cookies; ltran's
/// entries are its only record, so a flood's must go in seconds.
pub const HALF_OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Most connection-table entries aged per housekeeping tick (every
/// HOUSEKEEPING_US): up to some 2.5 million a second, in slices too small
/// to delay a burst.
const EXPIRE_BUDGET: usize = 256;

/// How many departed instances `ltran show` remembers.
const DEPARTED_KEPT: usize = 16;

/// Idle transmit rings polled per busy loop, in rotation; rings that sent
/// recently are polled on every loop besides.
const TX_PROBES: usize = 8;

/// Empty polls in a row after which a ring that sent is idle again (a
/// loop takes from tens of nanoseconds idle to microseconds busy).
const TX_COOL_AFTER: u32 = 1024;

/// Idle loops after which the dispatcher naps between loops (without
/// `busy_poll`); napping, it polls every transmit ring on each loop.
const NAP_AFTER: u32 = 1000;

/// How long a nap is.
const NAP: Duration = Duration::from_micros(50);

/// A port of the bond, opened.
#[derive(Debug)]
pub struct BondMember {
    /// The port (kept open for its lifetime).
    pub port: Port,
    /// Its only receive queue.
    pub rx: RxQueue,
    /// Its only transmit queue.
    pub tx: TxQueue,
    /// The kernel interface under it (af_packet/af_xdp), for link checks.
    pub iface: Option<String>,
}

/// The exception path to the kernel (a `net_tap` port).
#[derive(Debug)]
pub struct Kni {
    /// The tap port.
    pub port: Port,
    /// Its receive queue (the kernel's transmissions).
    pub rx: RxQueue,
    /// Its transmit queue (frames for the kernel).
    pub tx: TxQueue,
}

/// One thread's ring pair, as ltran holds it.
#[derive(Debug)]
pub struct ThreadRings {
    /// ltran -> lstack.
    pub rx: dpdk::Ring,
    /// lstack -> ltran.
    pub tx: dpdk::Ring,
}

/// What the control side asks the dispatcher.
#[derive(Debug)]
pub enum Command {
    /// Start serving an instance.
    Add {
        /// Its slot.
        slot: Slot,
        /// Its owner tag (`dpdk::owner`).
        tag: u32,
        /// Its addresses.
        ipv4: Ipv4Addr,
        /// IPv6, if any.
        ipv6: Option<Ipv6Addr>,
        /// One ring pair per thread.
        rings: Vec<ThreadRings>,
        /// Told when the instance is served.
        done: mpsc::Sender<()>,
    },
    /// Stop serving an instance and free what it had.
    Remove {
        /// Its slot.
        slot: Slot,
        /// Why (for `ltran show`).
        reason: String,
        /// Its pid.
        pid: u32,
        /// The process is known dead: put back the mbufs it held.
        reclaim: bool,
        /// Told what was freed.
        done: mpsc::Sender<DepartedInstance>,
    },
    /// The instance listens (`on`) or stopped listening.
    Listen {
        /// Its slot.
        slot: Slot,
        /// Where.
        addr: gazelle_ctl_proto::ListenAddr,
        /// Listen or unlisten.
        on: bool,
    },
}

#[derive(Debug, Default, Clone)]
struct ThreadCounters {
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
    rx_dropped: u64,
    tx_dropped: u64,
}

/// One stack thread of a served instance.
#[derive(Debug)]
struct Lane {
    rings: ThreadRings,
    /// Frames gathered for it during the current receive burst.
    pending: MbufBatch,
    counters: ThreadCounters,
}

#[derive(Debug)]
struct Served {
    tag: u32,
    ipv4: Ipv4Addr,
    ipv6: Option<Ipv6Addr>,
    /// One per thread, in thread order.
    lanes: Vec<Lane>,
}

/// Everything the dispatcher owns.
#[derive(Debug)]
pub struct Dispatcher {
    /// Bond ports, in `bond_ports` order.
    pub members: Vec<BondMember>,
    /// The exception interface, with `kni_switch`.
    pub kni: Option<Kni>,
    /// Receive pool (NIC receive; instances free into it).
    pub rx_pool: Arc<Mempool>,
    /// Transmit pool (instances allocate from it).
    pub tx_pool: Arc<Mempool>,
    /// The bond MAC.
    pub mac: [u8; 6],
    /// `bond_miimon`.
    pub miimon: Duration,
    /// Spin instead of sleeping when idle (benchmarks).
    pub busy_poll: bool,
    tables: Tables,
    bond: Bond,
    served: Vec<Option<Served>>,
    /// Lanes with frames gathered in the current burst.
    gathered: Gathered,
    /// Which transmit rings a loop polls.
    tx_scan: TxScan,
    /// This loop's transmit plan (reused: never allocates after start).
    tx_plan: Vec<usize>,
    /// What a transmit ring gave, and what of it goes out (reused).
    tx_got: MbufBatch,
    tx_out: MbufBatch,
    departed: Vec<DepartedInstance>,
    histogram: [u64; BURST_BUCKETS],
    announcements: u64,
    latency: LatencyStats,
    started: Instant,
}

/// Where the dispatcher publishes its numbers for the control thread.
pub type Published = Arc<Mutex<LtranStats>>;

impl Dispatcher {
    /// A dispatcher over opened ports and pools.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        members: Vec<BondMember>,
        kni: Option<Kni>,
        rx_pool: Arc<Mempool>,
        tx_pool: Arc<Mempool>,
        mac: [u8; 6],
        max_instances: usize,
        conn_capacity: usize,
        miimon: Duration,
        closed_linger: Duration,
    ) -> Self {
        let ports = members.len();
        Self {
            members,
            kni,
            rx_pool,
            tx_pool,
            mac,
            miimon,
            busy_poll: false,
            tables: Tables::new(
                mac,
                max_instances,
                conn_capacity,
                Limits {
                    half_open_timeout_ms: HALF_OPEN_TIMEOUT.as_millis() as u64,
                    closed_linger_ms: closed_linger.as_millis() as u64,
                },
            ),
            bond: Bond::new(ports),
            served: (0..max_instances).map(|_| None).collect(),
            gathered: Gathered::new(max_instances),
            tx_scan: TxScan::new(TX_COOL_AFTER),
            tx_plan: Vec::with_capacity(max_instances * usize::from(lanes::MAX_THREADS)),
            tx_got: MbufBatch::new(),
            tx_out: MbufBatch::new(),
            departed: Vec::new(),
            histogram: [0; BURST_BUCKETS],
            announcements: 0,
            latency: LatencyStats {
                tsc_hz: dpdk::tsc_hz(),
                ..LatencyStats::default()
            },
            started: Instant::now(),
        }
    }

    fn link_states(&self) -> Vec<bool> {
        self.members
            .iter()
            .map(|m| bond::combine(m.port.link().up, m.iface.as_deref()))
            .collect()
    }

    fn check_links(&mut self) {
        let links = self.link_states();
        match self.bond.update(&links) {
            Some(Change::Failover { from, to }) => {
                tracing::warn!(
                    from = ?from.map(|f| self.members[f].port.info().name.clone()),
                    to = %self.members[to].port.info().name,
                    "bond: traffic moves to another port; announcing with gratuitous ARP"
                );
                self.announce(to);
            }
            Some(Change::AllDown { from }) => {
                tracing::error!(
                    port = %self.members[from].port.info().name,
                    "bond: no port has a link; frames are dropped until one comes back"
                );
            }
            None => {}
        }
    }

    /// Gratuitous ARP (and unsolicited NA) for every served address, out of
    /// port `to`.
    fn announce(&mut self, to: usize) {
        let mut batch = MbufBatch::new();
        let mut addrs: Vec<(Ipv4Addr, Option<Ipv6Addr>)> = self
            .served
            .iter()
            .flatten()
            .map(|s| (s.ipv4, s.ipv6))
            .collect();
        // Instances sharing an address are announced once.
        addrs.sort_unstable();
        addrs.dedup();
        for (v4, v6) in addrs {
            for n in 0..2 {
                let Some(mut m) = self.rx_pool.alloc() else {
                    return;
                };
                let ok = match (n, v6) {
                    (0, _) => m
                        .append(42)
                        .map(|b| packet::gratuitous_arp(self.mac, v4, b)),
                    (_, Some(a)) => m.append(86).map(|b| packet::unsolicited_na(self.mac, a, b)),
                    _ => None,
                };
                if ok.is_some() && batch.push(m).is_ok() {
                    self.announcements += 1;
                }
                if batch.is_full() {
                    self.members[to].tx.tx_burst(&mut batch);
                    batch = MbufBatch::new();
                }
            }
        }
        if !batch.is_empty() {
            self.members[to].tx.tx_burst(&mut batch);
        }
    }

    fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::Add {
                slot,
                tag,
                ipv4,
                ipv6,
                rings,
                done,
            } => {
                let threads = rings.len();
                self.tables.add_instance(slot, ipv4, ipv6, threads as u16);
                self.served[slot as usize] = Some(Served {
                    tag,
                    ipv4,
                    ipv6,
                    lanes: rings
                        .into_iter()
                        .map(|rings| Lane {
                            rings,
                            pending: MbufBatch::new(),
                            counters: ThreadCounters::default(),
                        })
                        .collect(),
                });
                self.rescan();
                // Tell the network where the new address is.
                if let Some(a) = self.bond.active() {
                    self.announce_one(a, ipv4);
                }
                let _ = done.send(());
            }
            Command::Remove {
                slot,
                reason,
                pid,
                reclaim,
                done,
            } => {
                let connections_removed = self.tables.remove_instance(slot);
                let mut mbufs_reclaimed = 0;
                let mut ipv4 = String::new();
                if let Some(s) = self.served[slot as usize].take() {
                    ipv4 = s.ipv4.to_string();
                    let Served { tag, lanes, .. } = s;
                    // Drain both rings: what ltran queued to it and what it
                    // queued to send. Freeing clears the owner tag.
                    for Lane {
                        mut rings, pending, ..
                    } in lanes
                    {
                        drop(pending);
                        let r = &mut rings;
                        loop {
                            let mut b = MbufBatch::new();
                            if r.rx.dequeue(&mut b) + r.tx.dequeue(&mut b) == 0 {
                                break;
                            }
                        }
                    }
                    self.rescan();
                    if reclaim {
                        mbufs_reclaimed = (dpdk::owner::reclaim(&self.rx_pool, tag)
                            + dpdk::owner::reclaim(&self.tx_pool, tag))
                            as u64;
                    }
                }
                let d = DepartedInstance {
                    pid,
                    ipv4,
                    reason,
                    mbufs_reclaimed,
                    connections_removed,
                };
                self.departed.push(d.clone());
                if self.departed.len() > DEPARTED_KEPT {
                    self.departed.remove(0);
                }
                let _ = done.send(d);
            }
            Command::Listen { slot, addr, on } => {
                let r = if on {
                    self.tables.listen(slot, addr.ip, addr.port)
                } else {
                    self.tables.unlisten(slot, addr.ip, addr.port)
                };
                if let Err(e) = r {
                    tracing::warn!(slot, %e, "listen event refused");
                }
            }
        }
    }

    /// Tells the transmit scan which rings there are.
    fn rescan(&mut self) {
        let lanes = self.served.iter().enumerate().flat_map(|(slot, s)| {
            let threads = s.as_ref().map_or(0, |s| s.lanes.len());
            (0..threads).map(move |t| lanes::lane(slot as Slot, t as u16))
        });
        self.tx_scan.set_lanes(lanes);
    }

    fn announce_one(&mut self, port: usize, ip: Ipv4Addr) {
        if let Some(mut m) = self.rx_pool.alloc() {
            if let Some(b) = m.append(42) {
                packet::gratuitous_arp(self.mac, ip, b);
                let mut batch = MbufBatch::new();
                if batch.push(m).is_ok() {
                    self.members[port].tx.tx_burst(&mut batch);
                    self.announcements += 1;
                }
            }
        }
    }

    /// Runs until `quit` is set.
    pub fn run(
        &mut self,
        commands: &mpsc::Receiver<Command>,
        quit: &AtomicBool,
        published: &Published,
    ) {
        let mut batch = MbufBatch::new();
        let mut kni_out = MbufBatch::new();
        let mut backup = MbufBatch::new();
        let mut next_link = Instant::now();
        let mut next_publish = Instant::now();
        // Commands, the clock and the timers are looked at every
        // HOUSEKEEPING_US, by the TSC read every HOUSEKEEPING_LOOPS loops:
        // reading the clock and polling the channel on every loop took an
        // eighth to a quarter of ltran's time under the benchmark's load,
        // and even the TSC read is a tenth of an empty loop.
        let housekeeping_cycles = (dpdk::tsc_hz() / 1_000_000).max(1) * HOUSEKEEPING_US;
        let mut next_housekeeping = 0;
        let mut loops: u32 = 0;
        let mut now = Instant::now();
        let mut now_ms = 0;
        let mut idle: u32 = 0;
        while !quit.load(Ordering::Relaxed) {
            loops = loops.wrapping_add(1);
            if loops % HOUSEKEEPING_LOOPS == 1 && dpdk::tsc_cycles() >= next_housekeeping {
                next_housekeeping = dpdk::tsc_cycles() + housekeeping_cycles;
                while let Ok(cmd) = commands.try_recv() {
                    self.apply(cmd);
                }
                now = Instant::now();
                if now >= next_link {
                    self.check_links();
                    next_link = now + self.miimon;
                }
                now_ms = now.duration_since(self.started).as_millis() as u64;
                self.tables.expire(now_ms, EXPIRE_BUDGET);
            }
            let mut busy = false;

            // Receive.
            if let Some(active) = self.bond.active() {
                for (i, m) in self.members.iter_mut().enumerate() {
                    if i != active {
                        let n = m.rx.rx_burst(&mut backup);
                        self.tables.counters.backup_dropped += n as u64;
                        // Freed here.
                        backup.drain();
                    }
                }
                let n = self.members[active].rx.rx_burst(&mut batch);
                self.histogram[bucket(n)] += 1;
                if n > 0 {
                    busy = true;
                    let t0 = dpdk::tsc_cycles();
                    self.tables.counters.rx_frames += n as u64;
                    for m in batch.drain() {
                        self.dispatch(m, now_ms, &mut kni_out);
                    }
                    self.flush_gathered();
                    let spent = dpdk::tsc_cycles().saturating_sub(t0) / n as u64;
                    self.latency.samples += n as u64;
                    self.latency.dispatch_cycles_total += spent * n as u64;
                    self.latency.dispatch_cycles_max = self.latency.dispatch_cycles_max.max(spent);
                }
            }

            // Frames for the kernel, and what the kernel sends.
            if let Some(kni) = self.kni.as_mut() {
                if !kni_out.is_empty() {
                    let sent = kni.tx.tx_burst(&mut kni_out);
                    self.tables.counters.kni_rx += sent as u64;
                    // What the tap would not take is freed here: counted
                    // as a port refusal, as on the bond's ports.
                    self.tables.counters.tx_dropped += kni_out.len() as u64;
                    kni_out = MbufBatch::new();
                }
                let mut from_kernel = MbufBatch::new();
                if kni.rx.rx_burst(&mut from_kernel) > 0 {
                    busy = true;
                    if let Some(active) = self.bond.active() {
                        let sent = self.members[active].tx.tx_burst(&mut from_kernel);
                        self.tables.counters.kni_tx += sent as u64;
                    }
                    self.tables.counters.tx_dropped += from_kernel.len() as u64;
                }
            }

            // Transmit what the instances queued.
            busy |= self.transmit(now_ms, idle >= NAP_AFTER);

            if now >= next_publish {
                let snapshot = self.snapshot();
                *published.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
                next_publish = now + Duration::from_millis(100);
            }
            if busy || self.busy_poll {
                idle = 0;
            } else {
                idle = idle.saturating_add(1);
                if idle > NAP_AFTER {
                    std::thread::sleep(NAP);
                }
            }
        }
    }

    /// Gathers `m` (`len` bytes) for `slot`'s `thread`; its ring gets it
    /// with the rest of the burst in [`Self::flush_gathered`].
    #[inline(always)]
    fn deliver(&mut self, slot: Slot, thread: u16, mut m: Mbuf, len: usize) {
        let Some(s) = self.served.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let t = usize::from(thread).min(s.lanes.len() - 1);
        dpdk::owner::set(&mut m, s.tag);
        let lane = &mut s.lanes[t];
        lane.counters.rx_packets += 1;
        lane.counters.rx_bytes += len as u64;
        // A lane with frames gathered is listed already.
        if lane.pending.is_empty() {
            self.gathered.mark(lanes::lane(slot, t as u16));
        }
        if let Err(m) = lane.pending.push(m) {
            // Batch full: hand it over now and retry once.
            flush_one(lane, &mut self.tables.counters.ring_full);
            let _ = lane.pending.push(m);
        }
    }

    #[inline]
    fn dispatch(&mut self, m: Mbuf, now_ms: u64, kni_out: &mut MbufBatch) {
        let data = m.data();
        let len = data.len();
        match self.tables.rx(data, now_ms) {
            Decision::Deliver { slot, thread } => self.deliver(slot, thread, m, len),
            Decision::EachMember(ip) => {
                // A copy (from the receive pool) to every member but the
                // primary, which gets the frame itself. The group is
                // bounded by the instances; nothing is allocated but mbufs.
                let ip = IpAddr::V4(ip);
                let n = self.tables.members(ip).len();
                for i in 1..n {
                    let slot = self.tables.members(ip)[i];
                    let copy = self.rx_pool.alloc().and_then(|mut c| {
                        c.append(m.len())?.copy_from_slice(m.data());
                        Some(c)
                    });
                    let Some(copy) = copy else {
                        // The pool is dry: this member misses it, counted.
                        if let Some(s) = self.served[slot as usize].as_mut() {
                            s.lanes[0].counters.rx_dropped += 1;
                        }
                        continue;
                    };
                    self.deliver(slot, 0, copy, len);
                }
                if let Some(&primary) = self.tables.members(ip).first() {
                    self.deliver(primary, 0, m, len);
                }
            }
            Decision::AllIpv6 => {
                for slot in 0..self.served.len() {
                    if self.served[slot].as_ref().is_none_or(|s| s.ipv6.is_none()) {
                        continue;
                    }
                    let Some(mut copy) = self.rx_pool.alloc() else {
                        break;
                    };
                    let Some(buf) = copy.append(len) else {
                        continue;
                    };
                    buf.copy_from_slice(m.data());
                    self.deliver(slot as Slot, 0, copy, len);
                }
            }
            Decision::Kernel => {
                if self.kni.is_some() {
                    if let Err(m) = kni_out.push(m) {
                        drop(m);
                        self.tables.counters.tx_dropped += 1;
                    }
                } else {
                    self.tables.counters.unowned_dropped += 1;
                }
            }
            Decision::Drop => {}
        }
    }

    /// Hands every lane that got frames in this burst its batch, in one
    /// ring enqueue each.
    fn flush_gathered(&mut self) {
        while let Some(l) = self.gathered.pop() {
            let (slot, t) = lanes::split(l);
            let Some(lane) = self
                .served
                .get_mut(slot as usize)
                .and_then(Option::as_mut)
                .and_then(|s| s.lanes.get_mut(usize::from(t)))
            else {
                continue;
            };
            if !lane.pending.is_empty() {
                flush_one(lane, &mut self.tables.counters.ring_full);
            }
        }
    }

    /// Moves what instances queued for sending to the active port, from
    /// the rings [`TxScan`] picks for this loop (all of them when
    /// `napping`: a nap costs far more than looking); true if any frame
    /// moved.
    fn transmit(&mut self, now_ms: u64, napping: bool) -> bool {
        let active = self.bond.active();
        let mut plan = std::mem::take(&mut self.tx_plan);
        let probes = if napping { usize::MAX } else { TX_PROBES };
        self.tx_scan.plan(&mut plan, probes);
        let mut moved = false;
        for &i in &plan {
            let (slot, t) = lanes::split(self.tx_scan.lane(i));
            let n = self.transmit_lane(slot, t, active, now_ms);
            self.tx_scan.polled(i, n);
            moved |= n > 0;
        }
        self.tx_plan = plan;
        moved
    }

    /// Moves one burst from `slot`'s `t` transmit ring to port `active`;
    /// returns how many frames it took off the ring.
    fn transmit_lane(&mut self, slot: Slot, t: u16, active: Option<usize>, now_ms: u64) -> usize {
        let Some(lane) = self
            .served
            .get_mut(slot as usize)
            .and_then(Option::as_mut)
            .and_then(|s| s.lanes.get_mut(usize::from(t)))
        else {
            return 0;
        };
        let got = &mut self.tx_got;
        let n = lane.rings.tx.dequeue(got);
        if n == 0 {
            return 0;
        }
        let out = &mut self.tx_out;
        let c = &mut lane.counters;
        for mut m in got.drain() {
            let data = m.data();
            let len = data.len();
            match self.tables.tx(slot, t, data, now_ms) {
                Ok(()) => {
                    c.tx_packets += 1;
                    c.tx_bytes += len as u64;
                    // The NIC frees it: it is nobody's any more.
                    dpdk::owner::set(&mut m, 0);
                    let _ = out.push(m);
                }
                Err(refusal) => {
                    c.tx_dropped += 1;
                    match refusal {
                        TxRefusal::Spoofed => self.tables.counters.tx_spoofed += 1,
                        TxRefusal::Malformed => self.tables.counters.tx_malformed += 1,
                    }
                }
            }
        }
        if !out.is_empty() {
            let sent_before = out.len() as u64;
            if let Some(a) = active {
                for _ in 0..4 {
                    if out.is_empty() {
                        break;
                    }
                    self.members[a].tx.tx_burst(out);
                }
            }
            let left = out.len() as u64;
            self.tables.counters.tx_frames += sent_before - left;
            self.tables.counters.tx_dropped += left;
            c.tx_dropped += left;
            // What the port did not take is freed here.
            out.drain();
        }
        n
    }

    fn snapshot(&self) -> LtranStats {
        let active = self.bond.active();
        let ports = self
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let st = m.port.stats().unwrap_or_default();
                BondPort {
                    port_id: m.port.id(),
                    name: m.port.info().name.clone(),
                    iface: m.iface.clone(),
                    link_up: self.bond.links().get(i).copied().unwrap_or(false),
                    active: active == Some(i),
                    counters: gazelle_ctl_proto::PortCounters {
                        rx_packets: st.rx_packets,
                        tx_packets: st.tx_packets,
                        rx_bytes: st.rx_bytes,
                        tx_bytes: st.tx_bytes,
                        rx_missed: st.rx_missed,
                        rx_errors: st.rx_errors,
                        tx_errors: st.tx_errors,
                        rx_nombuf: st.rx_nombuf,
                    },
                }
            })
            .collect();
        let instances = self
            .served
            .iter()
            .enumerate()
            .filter_map(|(slot, s)| {
                let s = s.as_ref()?;
                let conns = self.tables.thread_connections(slot as Slot);
                Some(gazelle_ctl_proto::InstanceInfo {
                    slot: slot as u32,
                    ipv4: s.ipv4.to_string(),
                    ipv6: s.ipv6.map(|a| a.to_string()),
                    threads: s
                        .lanes
                        .iter()
                        .enumerate()
                        .map(|(t, lane)| {
                            let c = &lane.counters;
                            InstanceThread {
                                rx_packets: c.rx_packets,
                                rx_bytes: c.rx_bytes,
                                tx_packets: c.tx_packets,
                                tx_bytes: c.tx_bytes,
                                rx_dropped: c.rx_dropped,
                                tx_dropped: c.tx_dropped,
                                connections: conns.get(t).copied().unwrap_or(0),
                                rx_ring_used: lane.rings.rx.count(),
                                tx_ring_used: lane.rings.tx.count(),
                            }
                        })
                        .collect(),
                    ..Default::default()
                })
            })
            .collect();
        LtranStats {
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            bond: BondStatus {
                mode: 1,
                mac: crate::fmt_mac(self.mac),
                miimon_ms: self.miimon.as_millis() as u32,
                active,
                failovers: self.bond.failovers,
                announcements: self.announcements,
                backup_dropped: self.tables.counters.backup_dropped,
                ports,
            },
            dispatch: self.tables.counters.clone(),
            rx_burst_histogram: self.histogram.to_vec(),
            tables: TableCounters {
                connections: self.tables.connections() as u64,
                capacity: self.tables.capacity() as u64,
                listeners: self.tables.listeners() as u64,
                aged_out: self.tables.aged_out(),
                half_open: self.tables.half_open() as u64,
            },
            instances,
            departed: self.departed.clone(),
            latency: self.latency.clone(),
        }
    }
}

/// Hands `lane` its gathered batch; what the ring has no room for is
/// dropped and counted.
#[inline]
fn flush_one(lane: &mut Lane, ring_full: &mut u64) {
    lane.rings.rx.enqueue(&mut lane.pending);
    let left = lane.pending.len() as u64;
    if left > 0 {
        lane.counters.rx_dropped += left;
        *ring_full += left;
        // Freed here.
        lane.pending.drain();
    }
}

#[inline]
fn bucket(n: usize) -> usize {
    match n {
        0 => 0,
        1 => 1,
        2..=3 => 2,
        4..=7 => 3,
        8..=15 => 4,
        16..=31 => 5,
        _ => 6,
    }
}
