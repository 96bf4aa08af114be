//! An instance cannot speak for another, tagged or not: a registered
//! secondary (`ltran-test-instance`, registered as lstack registers) puts
//! forged frames on its transmit ring (UDP from another instance's address
//! in a VLAN-0 tag, in QinQ and in a 0x9100 tag, a VLAN-0 ARP claiming the
//! peer's own address, IPv6 from the peer's link-local address, an
//! ethertype the check does not read), then a legitimate frame. A capture
//! in the peer namespace sees the legitimate frame and none of the forged
//! ones, and ltran counts them (`tx_spoofed`, `tx_malformed`).
//!
//! Needs root, hugepages and python3 (the capture: an AF_PACKET socket).

mod common;

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    process::Stdio,
    time::Duration,
};

use common::{af_packet_vdev, topology, Instance, Ltran, BOND_MAC, ONE_BOND, PEER_IP};
use ltran::packet::link_local;

const SENDER_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 10);
const OTHER_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 11);

fn mac(text: &str) -> [u8; 6] {
    let v: Vec<u8> = text
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

/// Ethernet header with these VLAN TPIDs (VLAN 0) before `ethertype`.
fn eth(dst: [u8; 6], src: [u8; 6], tpids: &[u16], ethertype: u16) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    for &t in tpids {
        f.extend_from_slice(&t.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn udp4(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let total = (28 + payload.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let mut sum = 0u32;
    for c in ip.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    // UDP without a checksum (0: none, allowed over IPv4).
    ip.extend_from_slice(&[0x13, 0x88, 0x27, 0x0f]);
    ip.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0]);
    ip.extend_from_slice(payload);
    ip
}

/// An ARP reply saying `ip` is at `mac`, padded with `marker`.
fn arp_reply(mac: [u8; 6], ip: Ipv4Addr, marker: &[u8]) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 2];
    a.extend_from_slice(&mac);
    a.extend_from_slice(&ip.octets());
    a.extend_from_slice(&[0xff; 6]);
    a.extend_from_slice(&ip.octets());
    a.extend_from_slice(marker);
    a
}

fn udp6(src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&len.to_be_bytes());
    ip.extend_from_slice(&[17, 64]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(&[0x13, 0x88, 0x27, 0x0f]);
    ip.extend_from_slice(&len.to_be_bytes());
    ip.extend_from_slice(&[0, 0]);
    ip.extend_from_slice(payload);
    ip
}

/// Captures on `iface` in the peer until a frame holding `LEGIT` came
/// and half a second more passed; prints every marker seen.
const CAPTURE: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
s.settimeout(0.1)
print("ready", flush=True)
seen, end, deadline = set(), None, time.time() + 60
while time.time() < (end or deadline):
    try:
        f = s.recv(65535)
    except socket.timeout:
        continue
    for m in [b"FORGED%d" % i for i in range(1, 10)] + [b"LEGIT"]:
        if m in f:
            seen.add(m.decode())
            if m == b"LEGIT" and end is None:
                end = time.time() + 0.5
print("seen", " ".join(sorted(seen)), flush=True)
"#;

#[test]
fn forged_frames_do_not_leave_tagged_or_not() {
    let topo = topology("lts", SENDER_IP);
    let ltran = Ltran::start(
        "ltran-spoofing",
        &[af_packet_vdev(0, &topo.host_if)],
        &format!("{ONE_BOND}dispatch_subnet6 = \"fd00:99::/64\"\n"),
    );
    let mut sender = Instance::start(&ltran, &SENDER_IP.to_string(), None, "redis-server");
    let _other = Instance::start(&ltran, &OTHER_IP.to_string(), None, "nginx");
    // The name shown is the kernel's, not the one claimed.
    let shown = ltran.wait_stats("both instances listed", Duration::from_secs(10), |s| {
        s.instances.len() == 2
    });
    assert!(
        shown
            .instances
            .iter()
            .all(|i| i.process == "ltran-test-inst"),
        "{:#?}",
        shown.instances
    );

    let mut capture = topo
        .spawn(
            topo.cmd("python3")
                .args(["-c", CAPTURE, &topo.peer_if])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .unwrap();
    capture
        .wait_for_output("ready", Duration::from_secs(30))
        .unwrap();

    let bond = mac(BOND_MAC);
    let peer = topo.peer_mac().unwrap().octets();
    let before = ltran.stats().dispatch;
    let forged: Vec<Vec<u8>> = vec![
        // UDP from the other instance's address, VLAN 0.
        [
            eth(peer, bond, &[0x8100], 0x0800),
            udp4(OTHER_IP, PEER_IP, b"FORGED1"),
        ]
        .concat(),
        // ARP claiming the peer's own address, VLAN 0.
        [
            eth([0xff; 6], bond, &[0x8100], 0x0806),
            arp_reply(bond, PEER_IP, b"FORGED2"),
        ]
        .concat(),
        // QinQ.
        [
            eth(peer, bond, &[0x88a8, 0x8100], 0x0800),
            udp4(OTHER_IP, PEER_IP, b"FORGED3"),
        ]
        .concat(),
        // The pre-standard QinQ tag.
        [
            eth(peer, bond, &[0x9100], 0x0800),
            udp4(OTHER_IP, PEER_IP, b"FORGED4"),
        ]
        .concat(),
        // IPv6 from the peer's own link-local address.
        [
            eth([0x33, 0x33, 0, 0, 0, 1], bond, &[], 0x86dd),
            udp6(link_local(peer), "ff02::1".parse().unwrap(), b"FORGED5"),
        ]
        .concat(),
        // An ethertype the check does not read (local experimental).
        [eth(peer, bond, &[], 0x88b5), b"FORGED6".repeat(8)].concat(),
    ];
    for f in &forged {
        sender.send(f);
    }
    // Sent last on the same ring: once it is out, so is anything before it.
    sender.send(
        &[
            eth(peer, bond, &[], 0x0800),
            udp4(SENDER_IP, PEER_IP, b"LEGIT"),
        ]
        .concat(),
    );

    let out = capture
        .wait_with_output_timeout(Duration::from_secs(90))
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let seen = out
        .lines()
        .find_map(|l| l.strip_prefix("seen"))
        .unwrap_or_else(|| panic!("the capture said nothing: {out}"));
    assert!(
        seen.contains("LEGIT"),
        "the legitimate frame did not leave: {out}"
    );
    assert!(!seen.contains("FORGED"), "forged frames left: {seen}");
    let after = ltran.stats().dispatch;
    assert_eq!(after.tx_spoofed - before.tx_spoofed, 5, "{after:#?}");
    assert_eq!(after.tx_malformed - before.tx_malformed, 1, "{after:#?}");
}
