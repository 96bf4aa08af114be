//! The engine's policy without DPDK: frames built here go through
//! [`Engine`] (the code `Worker::step` runs) and a smoltcp interface over an
//! in-memory device.

use std::sync::atomic::Ordering;

use smoltcp::{
    iface::{Config, Interface, SocketHandle},
    phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium},
    socket::tcp,
    time::Instant,
    wire::{
        EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, HardwareAddress, IpAddress,
        IpCidr, IpEndpoint, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket,
        TcpRepr, TcpSeqNumber,
    },
};

use super::{
    fuzzing::{Engine, Received, TxFixes},
    Accepted, RxMark,
};
use crate::classify::{DropReason, FlowKey, LocalAddrs, RxChecked, Verdict};

const OUR_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x02]);
const PEER_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x01]);
const OURS: Ipv4Address = Ipv4Address::new(10, 88, 0, 2);
const PEER: Ipv4Address = Ipv4Address::new(10, 88, 0, 1);
const PORT: u16 = 80;
const SEED: u64 = 0x5eed;

fn local() -> LocalAddrs {
    LocalAddrs {
        mac: OUR_MAC,
        ipv4: Some(OURS),
        ipv4_broadcast: Some(Ipv4Address::new(10, 88, 0, 255)),
        ipv6: None,
        ipv6_link_local: None,
    }
}

/// A segment from the peer's `port` to our [`PORT`].
fn segment(port: u16, control: TcpControl, seq: u32, ack: Option<u32>) -> Vec<u8> {
    segment_to(OUR_MAC, port, PORT, control, seq, ack, &[])
}

fn segment_to(
    dst_mac: EthernetAddress,
    src_port: u16,
    dst_port: u16,
    control: TcpControl,
    seq: u32,
    ack: Option<u32>,
    payload: &[u8],
) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port,
        dst_port,
        control,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: 64240,
        window_scale: None,
        max_seg_size: (control == TcpControl::Syn).then_some(1460),
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload,
    };
    let ip = Ipv4Repr {
        src_addr: PEER,
        dst_addr: OURS,
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let eth = EthernetRepr {
        src_addr: PEER_MAC,
        dst_addr: dst_mac,
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut buf = vec![0u8; eth.buffer_len() + ip.buffer_len() + tcp.buffer_len()];
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut f);
    let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
    let caps = ChecksumCapabilities::default();
    ip.emit(&mut p, &caps);
    tcp.emit(
        &mut TcpPacket::new_unchecked(p.payload_mut()),
        &IpAddress::Ipv4(PEER),
        &IpAddress::Ipv4(OURS),
        &caps,
    );
    buf
}

fn flow(port: u16) -> FlowKey {
    FlowKey {
        local_addr: IpAddress::Ipv4(OURS),
        local_port: PORT,
        remote_addr: IpAddress::Ipv4(PEER),
        remote_port: port,
    }
}

/// An in-memory device: one frame in, frames out kept.
struct Dev<'a> {
    rx: Option<&'a [u8]>,
    tx: &'a mut Vec<Vec<u8>>,
    fixes: &'a mut TxFixes,
}

struct Rx<'a>(&'a [u8]);
struct Tx<'a>(&'a mut Vec<Vec<u8>>, &'a mut TxFixes);

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.1.on_transmit(&mut buf);
        self.0.push(buf);
        r
    }
}

impl<'a> phy::Device for Dev<'a> {
    type RxToken<'b>
        = Rx<'a>
    where
        Self: 'b;
    type TxToken<'b>
        = Tx<'b>
    where
        Self: 'b;

    fn receive(&mut self, _: Instant) -> Option<(Rx<'a>, Tx<'_>)> {
        let frame = self.rx.take()?;
        Some((Rx(frame), Tx(self.tx, self.fixes)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(self.tx, self.fixes))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        crate::device::capabilities(false)
    }
}

/// One stack thread without DPDK: the engine, an interface, what it sent.
struct Thread {
    engine: Engine,
    iface: Interface,
    fixes: TxFixes,
    sent: Vec<Vec<u8>>,
    now: Instant,
}

impl Thread {
    fn new(tcp_shards: usize, conn_limit: usize) -> Thread {
        let engine = Engine::new(local(), tcp_shards, conn_limit, SEED);
        let mut fixes = TxFixes::new(16);
        let mut sent = Vec::new();
        let mut config = Config::new(HardwareAddress::Ethernet(OUR_MAC));
        config.random_seed = 1;
        let mut iface = Interface::new(
            config,
            &mut Dev {
                rx: None,
                tx: &mut sent,
                fixes: &mut fixes,
            },
            Instant::ZERO,
        );
        assert_eq!(
            crate::device::capabilities(false).medium,
            Medium::Ethernet,
            "the stack's device is Ethernet"
        );
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(OURS), 24));
        });
        // The peer is a known neighbour: replies need no ARP.
        let _ = iface.routes_mut().add_default_ipv4_route(PEER);
        let mut t = Thread {
            engine,
            iface,
            fixes,
            sent,
            now: Instant::from_millis(1),
        };
        t.feed(&arp_from_peer());
        t.sent.clear();
        t
    }

    fn now_ns(&self) -> u64 {
        super::fuzzing::now_ns(self.now)
    }

    /// What the engine makes of `frame`, without smoltcp.
    fn receive(&mut self, frame: &[u8]) -> (Received, Vec<u8>) {
        let mut f = frame.to_vec();
        let mut answer = Vec::new();
        let now = self.now_ns();
        let r = self.engine.receive(
            &mut f,
            RxChecked::default(),
            now,
            &mut self.fixes,
            &mut answer,
        );
        (r, answer)
    }

    /// A stack thread's pass with `frame`: receive, ingest, egress and
    /// settle of every shard.
    fn feed(&mut self, frame: &[u8]) -> Received {
        let mut f = frame.to_vec();
        let mut answer = Vec::new();
        let now = self.now_ns();
        let r = self.engine.receive(
            &mut f,
            RxChecked::default(),
            now,
            &mut self.fixes,
            &mut answer,
        );
        if !answer.is_empty() {
            self.sent.push(answer);
        }
        if let Some(shard) = r.shard() {
            let mut sockets = self.engine.sockets(shard);
            let mut dev = Dev {
                rx: Some(&f),
                tx: &mut self.sent,
                fixes: &mut self.fixes,
            };
            self.iface
                .poll_ingress_single(self.now, &mut dev, &mut sockets);
            drop(sockets);
            self.engine.ingested(&r, &mut self.fixes, now);
        }
        for shard in 0..self.engine.shards() {
            let mut sockets = self.engine.sockets(shard);
            let mut dev = Dev {
                rx: None,
                tx: &mut self.sent,
                fixes: &mut self.fixes,
            };
            self.iface.poll_egress(self.now, &mut dev, &mut sockets);
            drop(sockets);
            self.engine.settle(shard, now);
        }
        self.engine.end_pass(now);
        r
    }

    /// Spares and embryos (handshakes in progress) of `shard`.
    fn pool(&self, shard: usize) -> (usize, usize) {
        let inner = self.engine.shared().threads[0].shards[shard].lock();
        (inner.spares.len(), inner.embryos.len())
    }

    /// The last SYN-ACK sent: its sequence number.
    fn syn_ack(&self) -> Option<u32> {
        self.sent.iter().rev().find_map(|f| {
            let tcp = tcp_of(f)?;
            (tcp.syn() && tcp.ack()).then(|| tcp.seq_number().0 as u32)
        })
    }
}

fn tcp_of(frame: &[u8]) -> Option<TcpPacket<&[u8]>> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(&frame[14..]).ok()?;
    if ip.next_header() != IpProtocol::Tcp {
        return None;
    }
    let hl = usize::from(ip.header_len());
    TcpPacket::new_checked(&frame[14 + hl..14 + usize::from(ip.total_len())]).ok()
}

fn arp_from_peer() -> Vec<u8> {
    use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr};
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: PEER_MAC,
        source_protocol_addr: PEER,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: OURS,
    };
    let eth = EthernetRepr {
        src_addr: PEER_MAC,
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    };
    let mut buf = vec![0u8; eth.buffer_len() + arp.buffer_len()];
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut f);
    arp.emit(&mut ArpPacket::new_unchecked(f.payload_mut()));
    buf
}

#[test]
fn a_frame_for_another_mac_is_dropped_and_counted() {
    let mut t = Thread::new(4, 64);
    let other = EthernetAddress([0x02, 0, 0, 0, 0, 0x99]);
    let frame = segment_to(other, 40000, PORT, TcpControl::Syn, 1, None, &[]);
    let (r, answer) = t.receive(&frame);
    assert_eq!(r.verdict, Verdict::Drop(DropReason::NotOurMac));
    assert_eq!(r.shard(), None);
    assert!(answer.is_empty());
    assert_eq!(t.engine.stats().dropped(DropReason::NotOurMac), 1);
}

#[test]
fn tcp_flows_keep_their_shard_and_spread_over_shards() {
    let t = Thread::new(8, 64);
    let shared = t.engine.shared();
    let mut used = [false; 8];
    for port in 40000..40064 {
        let (thread, shard) = shared.place(&flow(port));
        assert_eq!(thread, 0, "one thread");
        assert!(shard < 8, "a TCP shard, never the control shard");
        assert_eq!(shared.place(&flow(port)), (thread, shard), "stable");
        used[shard] = true;
    }
    assert!(
        used.iter().filter(|u| **u).count() > 4,
        "64 flows spread over the shards: {used:?}"
    );
}

#[test]
fn segments_of_a_flow_go_to_its_shard() {
    let mut t = Thread::new(8, 64);
    for port in 40000..40016 {
        let (_, want) = t.engine.shared().place(&flow(port));
        let (r, _) = t.receive(&segment(port, TcpControl::None, 1, Some(1)));
        assert_eq!(r.shard(), Some(want), "port {port}");
    }
}

#[test]
fn a_syn_to_a_listening_port_gets_one_spare_on_the_exact_address() {
    let mut t = Thread::new(4, 64);
    t.engine.listen(PORT, 16);
    let (_, shard) = t.engine.shared().place(&flow(40000));
    let (r, _) = t.receive(&segment(40000, TcpControl::Syn, 100, None));
    assert_eq!(r.shard(), Some(shard));
    assert_eq!(t.pool(shard), (1, 0), "one spare");
    {
        let inner = t.engine.shared().threads[0].shards[shard].lock();
        let (h, _) = inner.spares[0];
        let s = inner.sockets.get::<tcp::Socket<'_>>(h);
        assert_eq!(s.state(), tcp::State::Listen);
        assert_eq!(s.listen_endpoint().addr, Some(IpAddress::Ipv4(OURS)));
        assert_eq!(s.listen_endpoint().port, PORT);
    }
    // Not ingested: the spare still listens, and serves the next SYN.
    let other = (40001..41000)
        .find(|p| t.engine.shared().place(&flow(*p)).1 == shard)
        .expect("another flow of the shard");
    t.receive(&segment(other, TcpControl::Syn, 100, None));
    assert_eq!(t.pool(shard), (1, 0), "still one spare");
}

#[test]
fn a_syn_to_a_closed_port_goes_to_smoltcp_which_resets_it() {
    let mut t = Thread::new(4, 64);
    let r = t.feed(&segment(40000, TcpControl::Syn, 100, None));
    assert!(r.shard().is_some());
    let (_, shard) = t.engine.shared().place(&flow(40000));
    assert_eq!(t.pool(shard), (0, 0), "no spare without a listener");
    let rst = t.sent.iter().filter_map(|f| tcp_of(f)).find(|s| s.rst());
    let rst = rst.expect("smoltcp answered with RST");
    assert_eq!(rst.ack_number().0 as u32, 101);
}

#[test]
fn a_syn_past_the_backlog_is_dropped_and_counted() {
    let mut t = Thread::new(4, 64);
    t.engine.listen(PORT, 1);
    // One connection waits in the accept queue: the backlog of 1 is full.
    {
        let map = t.engine.shared().listeners.read().unwrap();
        map[&PORT][0].queue.lock().unwrap().push_back(Accepted {
            thread: 0,
            shard: 0,
            handle: SocketHandle::default(),
            remote: IpEndpoint::new(IpAddress::Ipv4(PEER), 1),
            rx_mark: RxMark::new(),
        });
    }
    let (r, answer) = t.receive(&segment(40000, TcpControl::Syn, 100, None));
    assert_eq!(r.shard(), None, "dropped");
    assert!(answer.is_empty(), "silently");
    assert_eq!(t.engine.stats().accept_overflow.get(), 1);
    let (_, shard) = t.engine.shared().place(&flow(40000));
    assert_eq!(t.pool(shard), (0, 0), "no spare made for it");
}

#[test]
fn a_syn_past_the_connection_limit_is_dropped_and_counted() {
    let mut t = Thread::new(4, 1);
    t.engine.listen(PORT, 16);
    t.feed(&segment(40000, TcpControl::Syn, 100, None));
    assert_eq!(
        t.engine.tcp_sockets(),
        1,
        "the first handshake has a socket"
    );
    let (r, _) = t.receive(&segment(40001, TcpControl::Syn, 100, None));
    assert_eq!(r.shard(), None);
    assert_eq!(t.engine.stats().conn_limit_refused.get(), 1);
}

#[test]
fn a_full_half_open_table_challenges_unproven_sources() {
    let mut t = Thread::new(4, 64);
    t.engine.listen(PORT, 1024);
    // 16 handshakes (the table's floor) that never complete.
    let mut port = 41000;
    while !t.engine_half_open_full() {
        t.feed(&segment(port, TcpControl::Syn, 100, None));
        port += 1;
        assert!(port < 41100, "the half-open table fills");
    }
    let sent = t.sent.len();
    let (r, answer) = t.receive(&segment(40000, TcpControl::Syn, 100, None));
    assert_eq!(r.shard(), None, "no socket for it");
    let challenge = tcp_of(&answer).expect("a SYN-ACK challenge");
    assert!(challenge.syn() && challenge.ack());
    // Deliberately not the acknowledgment the client expects: what it
    // sends back proves it received the challenge.
    let proof = challenge.ack_number().0 as u32;
    assert_ne!(proof, 101);
    assert_eq!(t.engine.stats().syn_challenges.get(), 1);
    assert_eq!(t.sent.len(), sent, "smoltcp sent nothing");
    // RFC 9293 3.10.7.3: the client resets with SEQ = SEG.ACK, and its
    // source is proven.
    let (r, _) = t.receive(&segment(40000, TcpControl::Rst, proof, None));
    assert_eq!(r.shard(), None, "the answer goes no further");
    assert_eq!(t.engine.stats().syn_challenges_answered.get(), 1);
    // Its next SYN gets a socket although the table is still full.
    assert!(t.engine_half_open_full());
    let (r, answer) = t.receive(&segment(40000, TcpControl::Syn, 100, None));
    assert!(r.shard().is_some());
    assert!(answer.is_empty());
    // The proof is per address: its other flows get sockets too.
    let (r, answer) = t.receive(&segment(40002, TcpControl::Syn, 100, None));
    assert!(r.shard().is_some());
    assert!(answer.is_empty());
}

impl Thread {
    fn engine_half_open_full(&self) -> bool {
        self.engine.half_open_is_full()
    }
}

#[test]
fn a_handshake_goes_from_spare_to_embryo_to_the_accept_queue() {
    let mut t = Thread::new(4, 64);
    t.engine.listen(PORT, 16);
    let (_, shard) = t.engine.shared().place(&flow(40000));
    t.feed(&segment(40000, TcpControl::Syn, 100, None));
    let isn = t.syn_ack().expect("smoltcp answered the SYN");
    assert_eq!(t.pool(shard), (0, 1), "the spare took it: an embryo");
    assert_eq!(t.engine.stats().mib.tcp.passive_opens.get(), 1);
    assert!(t.engine.accept().is_none(), "not established yet");

    t.feed(&segment(
        40000,
        TcpControl::None,
        101,
        Some(isn.wrapping_add(1)),
    ));
    assert_eq!(t.pool(shard), (0, 0));
    assert_eq!(t.engine.stats().tcp_established.get(), 1);
    let (s, h, remote) = t.engine.accept().expect("an accepted connection");
    assert_eq!(s, shard);
    assert_eq!(remote, IpEndpoint::new(IpAddress::Ipv4(PEER), 40000));
    let state = t.engine.sockets(s).get::<tcp::Socket<'_>>(h).state();
    assert_eq!(state, tcp::State::Established);
    let map = t.engine.shared().listeners.read().unwrap();
    assert_eq!(map[&PORT][0].pending.load(Ordering::Relaxed), 0);
}

#[test]
fn a_retransmitted_syn_of_a_known_flow_removes_the_spares() {
    let mut t = Thread::new(1, 64);
    t.engine.listen(PORT, 16);
    t.feed(&segment(40000, TcpControl::Syn, 100, None));
    // Another flow leaves a spare listening in the (only) shard.
    t.receive(&segment(40001, TcpControl::Syn, 100, None));
    assert_eq!(t.pool(0), (1, 1));
    let (r, _) = t.receive(&segment(40000, TcpControl::Syn, 100, None));
    assert_eq!(r.shard(), Some(0), "to its own socket");
    assert_eq!(t.pool(0), (0, 1), "no spare to steal it");
}

#[test]
fn a_reset_handshake_leaves_the_pool_at_once() {
    let mut t = Thread::new(1, 64);
    t.engine.listen(PORT, 16);
    t.feed(&segment(40000, TcpControl::Syn, 100, None));
    assert_eq!(t.pool(0), (0, 1));
    assert_eq!(t.engine.tcp_sockets(), 1);
    // Ingest only: `ingested` settles the shard, before any egress.
    let rst = segment(40000, TcpControl::Rst, 101, None);
    let (r, _) = t.receive(&rst);
    let f = rst.clone();
    let mut sockets = t.engine.sockets(0);
    let mut dev = Dev {
        rx: Some(&f),
        tx: &mut t.sent,
        fixes: &mut t.fixes,
    };
    t.iface.poll_ingress_single(t.now, &mut dev, &mut sockets);
    drop(sockets);
    let now = t.now_ns();
    t.engine.ingested(&r, &mut t.fixes, now);
    assert_eq!(t.pool(0), (0, 0), "the embryo is gone");
    assert_eq!(t.engine.tcp_sockets(), 0);
    assert_eq!(t.engine.stats().mib.tcp.attempt_fails.get(), 1);
}

#[test]
fn a_bare_segment_to_a_listener_is_dropped() {
    let mut t = Thread::new(4, 64);
    t.engine.listen(PORT, 16);
    let bare = segment_to(OUR_MAC, 40000, PORT, TcpControl::Psh, 1, None, b"x");
    let (r, answer) = t.receive(&bare);
    assert!(matches!(r.verdict, Verdict::Tcp { syn: false, .. }));
    assert_eq!(r.shard(), None);
    assert!(answer.is_empty());
    // At a closed port smoltcp gets it (and answers with RST).
    let closed = segment_to(OUR_MAC, 40000, 81, TcpControl::Psh, 1, None, b"x");
    let (r, _) = t.receive(&closed);
    assert!(r.shard().is_some());
}
