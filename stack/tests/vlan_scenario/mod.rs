//! The scenario of `vlan.rs` (the port's VLAN offloads) and
//! `vlan_software.rs` (tags handled in software): lstack with
//! `nic_vlan_mode = 100` serves a peer whose addresses are on a VLAN 100
//! sub-interface of its veth end, while the plain veth end has none. Only
//! a stack that tags what it sends and takes the tag off what it receives
//! is reached; one that ignores the key is not (its untagged answers land
//! on the peer's plain interface, and it drops the tagged requests as an
//! unknown EtherType). Untagged frames and frames of another VLAN are
//! dropped and counted as `not_our_vlan`.

use std::{
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use lstack::{DropReason, Stack, StackOptions};
use netns_testbed::{require_root, AfPacketEal, Topology, TopologyOptions};

use crate::common::{
    checksum, connect_from_peer, echo_in_parallel, ping, send_raw, spawn_stack_echo, wait_until,
    Env,
};

/// The stack's VLAN.
pub const VLAN: u16 = 100;
const PORT: u16 = 7600;

/// Runs the scenario on a new topology named after `name`, the stack's port
/// made by `eal`; `offload`: let the stack use the port's VLAN offloads,
/// `expect_offloads`: the port then has both (`net_af_packet`) or none
/// (`net_af_xdp`).
pub fn run(name: &str, eal: &AfPacketEal, offload: bool, expect_offloads: bool) {
    require_root();
    let topo = Topology::new(TopologyOptions {
        name_hint: name.to_owned(),
        ..Default::default()
    })
    .expect("creating the test topology");
    let vlan_if = move_peer_to_vlan(&topo, VLAN);
    let mut config = crate::common::config_for(&topo, name, eal);
    config.nic_vlan_mode = i32::from(VLAN);
    let mut opts = StackOptions::for_config(&config);
    opts.vlan_offload = offload;
    let stack = Stack::start(&config, opts).expect("starting lstack on VLAN 100");
    let env = Env {
        stack,
        topo,
        config,
    };
    // The kernel peer reaches the stack over its VLAN interface only.
    ping(&env.topo, env.topo.stack_ip4.into(), 3);
    ping(&env.topo, env.topo.stack_ip6.into(), 3);
    spawn_stack_echo(&env.stack, PORT);
    for (i, ip) in [IpAddr::from(env.topo.stack_ip4), env.topo.stack_ip6.into()]
        .into_iter()
        .enumerate()
    {
        // Full-size segments: 1518-byte tagged frames both ways.
        let streams = connect_from_peer(&env.topo, SocketAddr::new(ip, PORT), 2);
        echo_in_parallel(streams, 256 * 1024, 10 * i as u64);
    }

    // Checked after the traffic: a stack that ignores the key fails on
    // the wire first.
    let vlan = env
        .stack
        .vlan()
        .expect("nic_vlan_mode = 100: the stack is on a VLAN");
    assert_eq!(vlan.id(), VLAN);
    let used = offload && expect_offloads;
    assert_eq!(
        (vlan.rx_strip(), vlan.tx_insert()),
        (used, used),
        "the port's VLAN offloads are used exactly when allowed and offered"
    );

    let seen = vlan_if.stack_frames();
    println!(
        "{} frames of the stack seen by {}, {} of them tagged for VLAN {VLAN}",
        seen.len(),
        vlan_if.name,
        seen.iter().filter(|v| **v == Some(VLAN)).count()
    );
    assert!(
        seen.len() >= 8,
        "only {} frames of the stack seen on the peer's veth end",
        seen.len()
    );
    assert!(
        seen.iter().all(|v| *v == Some(VLAN)),
        "a frame of the stack was not tagged for VLAN {VLAN}: {seen:?}"
    );

    // Untagged frames and frames of VLAN 101 from the peer's plain veth end
    // (ICMP echo requests the stack would answer) are dropped and counted.
    let before = not_our_vlan(&env);
    let mut frames = Vec::new();
    for i in 0..5 {
        frames.push(echo_request(&env, None, i));
        frames.push(echo_request(&env, Some(VLAN + 1), i));
    }
    send_raw(&env.topo, &frames);
    let counted = wait_until(Duration::from_secs(5), || not_our_vlan(&env) >= before + 10);
    assert!(
        counted,
        "10 frames off VLAN {VLAN} sent, not_our_vlan went from {before} to {}",
        not_our_vlan(&env)
    );
    // And the stack still serves VLAN 100.
    ping(&env.topo, env.topo.stack_ip4.into(), 1);
    let port = env.stack.port_stats().unwrap();
    println!("port: {port:?}");
    env.stack.shutdown();
}

/// Sum of the `not_our_vlan` drops of every stack thread.
fn not_our_vlan(env: &Env) -> u64 {
    (0..env.stack.threads())
        .map(|i| {
            env.stack
                .thread_stats(i)
                .unwrap()
                .dropped(DropReason::NotOurVlan)
        })
        .sum()
}

/// The peer's interface on VLAN `id` of its veth end: a tap device
/// `vl<id>` holding the peer's addresses, whose frames a relay thread
/// tags onto the veth end, and whose tagged frames of VLAN `id` it
/// untags into the tap; the plain veth end keeps no address. This is
/// what an `ip link add link <veth> type vlan id <id>` interface does,
/// built in user space because the test kernels have no 8021q driver
/// (nor the bridge's VLAN filtering, nor tc's vlan action). The relay
/// also records the VLAN of every frame from the stack.
struct VlanIf {
    name: String,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    stack_frames: Arc<Mutex<Vec<Option<u16>>>>,
}

impl VlanIf {
    /// The VLANs (`None`: untagged) of the first frames from the stack.
    fn stack_frames(&self) -> Vec<Option<u16>> {
        self.stack_frames
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for VlanIf {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Moves the peer's addresses from its veth end to a VLAN `id` interface
/// of it (see [`VlanIf`]).
fn move_peer_to_vlan(topo: &Topology, id: u16) -> VlanIf {
    let peer = topo.peer_if.clone();
    let name = format!("vl{id}");
    let run = |args: &[&str]| {
        topo.run(args)
            .unwrap_or_else(|e| panic!("{}: {e:#}", args.join(" ")))
    };
    run(&["ip", "addr", "flush", "dev", &peer]);
    let (tap, wire) = {
        let (name, peer) = (name.clone(), peer.clone());
        topo.in_netns(move || (open_tap(&name), open_packet_socket(&peer)))
            .expect("entering the peer namespace")
    };
    let mac = topo.peer_mac().expect("the peer's MAC").to_string();
    run(&[
        "sysctl",
        "-qw",
        &format!("net.ipv6.conf.{name}.accept_dad=0"),
    ]);
    run(&["ip", "link", "set", &name, "address", &mac, "up"]);
    let v4 = format!("{}/{}", topo.peer_ip4, topo.prefix4);
    let v6 = format!("{}/{}", topo.peer_ip6, topo.prefix6);
    run(&["ip", "addr", "add", &v4, "dev", &name]);
    run(&["ip", "addr", "add", &v6, "dev", &name, "nodad"]);

    let stop = Arc::new(AtomicBool::new(false));
    let stack_frames = Arc::new(Mutex::new(Vec::new()));
    let (tap, wire) = (Arc::new(tap), Arc::new(wire));
    let stack_mac = topo.stack_mac.octets();
    let mut threads = Vec::new();
    {
        let (tap, wire, stop) = (Arc::clone(&tap), Arc::clone(&wire), Arc::clone(&stop));
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let Some(n) = read_ready(&tap, &mut buf[4..]) else {
                    continue;
                };
                if n < 14 {
                    continue;
                }
                // The MACs move to the front, the tag goes behind them.
                buf.copy_within(4..16, 0);
                buf[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
                buf[14..16].copy_from_slice(&id.to_be_bytes());
                // SAFETY: a send of initialised bytes on a bound socket.
                unsafe { libc::send(wire.as_raw_fd(), buf.as_ptr().cast(), n + 4, 0) };
            }
        }));
    }
    {
        let (frames, stop) = (Arc::clone(&stack_frames), Arc::clone(&stop));
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let Some((n, vlan, outgoing)) = recv_tagged(&wire, &mut buf) else {
                    continue;
                };
                if outgoing || n < 14 {
                    continue;
                }
                let from_stack = buf[6..12] == stack_mac;
                let mut start = 0;
                let mut vlan = vlan;
                if vlan.is_none() && n >= 18 && buf[12..14] == [0x81, 0x00] {
                    // A tag the kernel left in the data: take it out.
                    vlan = Some(u16::from_be_bytes([buf[14], buf[15]]) & 0x0fff);
                    buf.copy_within(0..12, 4);
                    start = 4;
                }
                let frame = &buf[start..n];
                if from_stack {
                    let mut f = frames.lock().unwrap_or_else(|e| e.into_inner());
                    if f.len() < 64 {
                        f.push(vlan);
                    }
                }
                if vlan == Some(id) {
                    // SAFETY: a write of initialised bytes to the tap.
                    unsafe { libc::write(tap.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
                }
            }
        }));
    }
    VlanIf {
        name,
        stop,
        threads,
        stack_frames,
    }
}

/// A tap device `name` in the calling thread's namespace (it lives as long
/// as the descriptor).
fn open_tap(name: &str) -> OwnedFd {
    #[repr(C)]
    struct IfReq {
        name: [libc::c_char; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    for (d, s) in req.name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: open of a path, then TUNSETIFF with a valid ifreq.
    unsafe {
        let fd = libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        assert!(fd >= 0, "/dev/net/tun: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let r = libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req);
        assert_eq!(
            r,
            0,
            "TUNSETIFF {name}: {}",
            std::io::Error::last_os_error()
        );
        fd
    }
}

/// A packet socket on interface `ifname` of the calling thread's
/// namespace that reports the VLAN tag the kernel keeps beside a frame
/// (`PACKET_AUXDATA`).
fn open_packet_socket(ifname: &str) -> OwnedFd {
    let name = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: plain socket calls on a fresh descriptor, with valid
    // pointers and lengths.
    unsafe {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto));
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let fd = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
        assert!(addr.sll_ifindex > 0);
        let r = libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
        let on: libc::c_int = 1;
        let r = libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_AUXDATA,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        );
        assert_eq!(r, 0, "PACKET_AUXDATA: {}", std::io::Error::last_os_error());
        fd
    }
}

/// Waits up to 100 ms for `fd` to be readable, then reads into `buf`.
fn read_ready(fd: &OwnedFd, buf: &mut [u8]) -> Option<usize> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, then a read into a live buffer.
    unsafe {
        if libc::poll(&mut p, 1, 100) <= 0 {
            return None;
        }
        usize::try_from(libc::read(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        ))
        .ok()
    }
}

/// Receives a frame from packet socket `fd` within 100 ms: its length,
/// the VLAN id the kernel took out of it (if any), and whether it is one
/// the interface sent.
fn recv_tagged(fd: &OwnedFd, buf: &mut [u8]) -> Option<(usize, Option<u16>, bool)> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut p, 1, 100) } <= 0 {
        return None;
    }
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 16];
    // SAFETY: a zeroed sockaddr_ll and msghdr pointing at live buffers of
    // the given lengths.
    let (n, msg, from) = unsafe {
        let mut from: libc::sockaddr_ll = std::mem::zeroed();
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (&raw mut from).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        let n = libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT);
        (n, msg, from)
    };
    let n = usize::try_from(n).ok()?;
    let mut vlan = None;
    // SAFETY: the control messages the kernel wrote into `control`, walked
    // with the libc macros; PACKET_AUXDATA carries a tpacket_auxdata.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA {
                let aux: libc::tpacket_auxdata =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                    vlan = Some(aux.tp_vlan_tci & 0x0fff);
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Some((n, vlan, from.sll_pkttype == libc::PACKET_OUTGOING))
}

/// An ICMP echo request from the peer to the stack, tagged for `vlan` or
/// untagged: one the stack answers if it takes it.
fn echo_request(env: &Env, vlan: Option<u16>, seq: u16) -> Vec<u8> {
    let topo = &env.topo;
    let mut f = topo.stack_mac.octets().to_vec();
    f.extend_from_slice(&topo.peer_mac().expect("the peer's MAC").octets());
    if let Some(id) = vlan {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
    }
    f.extend_from_slice(&[0x08, 0x00]);
    let icmp_len = 8 + 32;
    let mut ip = vec![0x45, 0, 0, (20 + icmp_len) as u8, 0, 1, 0, 0, 64, 1, 0, 0];
    ip.extend_from_slice(&topo.peer_ip4.octets());
    ip.extend_from_slice(&topo.stack_ip4.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34];
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend((0..32).map(|i| i as u8));
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&icmp);
    f
}
