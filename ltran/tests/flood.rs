//! A SYN flood at one instance does not keep another from taking
//! connections, on real parts: ltran on a veth (`net_af_packet`), a flood
//! target that listens on port 80 and drains its ring without answering
//! (`ltran-test-instance`, registered as lstack registers), and
//! `lstack-echo` behind ltran as the other instance. From the peer
//! namespace a raw socket sends SYNs from spoofed sources, each a new
//! flow, well past the connection table's capacity (131072); while it
//! runs, kernel clients in the peer connect to the echo and get their
//! bytes back. Once the flood stops, its half-open entries leave the
//! table within seconds.
//!
//! Needs root, hugepages, python3 and the release build of lstack-echo
//! (`cargo build --release -p lstack`).

mod common;

use std::{
    net::{Ipv4Addr, SocketAddr},
    process::{Command, Stdio},
    time::Duration,
};

use common::{af_packet_vdev, built, topology, Instance, Ltran, BOND_MAC, ONE_BOND};
use netns_testbed::ChildGuard;

const TARGET_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 10);
const ECHO_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 11);
/// ltran's connection table (run::CONN_CAPACITY).
const CAPACITY: u64 = 1 << 17;

/// SYNs to `argv[1]`:80 from 11.0.0.0/8, every frame a new 4-tuple,
/// until killed; from the peer (`argv[2]`: interface, `argv[3]`: bond
/// MAC), at most `argv[4]` frames a second.
///
/// The rate is bounded because the test is about ltran's tables, not about
/// out-running it: a flood faster than the forwarder drains its port loses
/// frames in the kernel's af_packet ring before ltran sees them, the
/// legitimate clients' frames among them, and on this 2-core machine an
/// unpaced sender (1.2 million frames a second here) stalled the echo
/// clients' TCP in retransmission backoff, on the base commit too.
const FLOOD: &str = r#"
import socket, struct, sys, time
dst, iface, mac = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3].replace(":", ""))
rate = int(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
src_mac = s.getsockname()[4]
ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0x4000, 64, 6, 0,
                           bytes(4), socket.inet_aton(dst)))
tcp = bytearray(struct.pack("!HHIIBBHHH", 0, 80, 1, 0, 0x50, 0x02, 65535, 0, 0))
frame = bytearray(mac + src_mac + b"\x08\x00") + ip + tcp
print("flooding", flush=True)
n = 0
start = time.monotonic()
while True:
    n += 1
    frame[26:30] = struct.pack("!I", 0x0b000000 | (n >> 6) & 0xffffff)
    frame[34:36] = struct.pack("!H", 1024 + (n & 63))
    s.send(frame)
    if n % 1024 == 0:
        ahead = n / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
"#;

/// Frames a second of [`FLOOD`]: a table's worth of new flows in about a
/// second and a half.
const FLOOD_RATE: u64 = 100_000;

/// `n` connections to the echo one after another, each sending 64 KiB
/// and reading it back. Prints "ok N".
const CLIENTS: &str = r#"
import os, socket, sys
ip, n = sys.argv[1], int(sys.argv[2])
ok = 0
for i in range(n):
    data = os.urandom(65536)
    s = socket.create_connection((ip, 7), 20)
    s.settimeout(20)
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        b = s.recv(65536)
        if not b:
            break
        got += b
    s.close()
    ok += got == data
print("ok", ok, flush=True)
sys.exit(0 if ok == n else 1)
"#;

#[test]
fn a_syn_flood_at_one_instance_leaves_the_others_reachable() {
    let topo = topology("ltf", ECHO_IP);
    let ltran = Ltran::start("ltran-flood", &[af_packet_vdev(0, &topo.host_if)], ONE_BOND);
    let mut target = Instance::start(&ltran, &TARGET_IP.to_string(), None, "target");
    target.listen(&TARGET_IP.to_string(), 80);

    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("echo.toml");
    std::fs::write(
        &conf,
        format!(
            "dpdk_args = [\"--no-pci\", \"--no-telemetry\", \"--log-level=*:notice\"]\n\
             use_ltran = true\nnum_cpus = \"0\"\nhost_addr = \"{ECHO_IP}\"\n\
             mask_addr = \"255.255.255.0\"\ndevices = \"{BOND_MAC}\"\ntcp_conn_count = 2000\n"
        ),
    )
    .unwrap();
    let mut echo = ChildGuard::spawn(
        Command::new(built("lstack-echo"))
            .args(["--port", "7"])
            .env("LSTACK_CONF_PATH", &conf)
            .env("GAZELLE_RUN_DIR", &ltran.run_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .unwrap();
    topo.wait_connectable(
        SocketAddr::from((ECHO_IP, 7)),
        &mut echo,
        Duration::from_secs(30),
    )
    .unwrap();

    let flood = topo
        .spawn(
            topo.cmd("python3")
                .args([
                    "-c",
                    FLOOD,
                    &TARGET_IP.to_string(),
                    &topo.peer_if,
                    BOND_MAC,
                    &FLOOD_RATE.to_string(),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .unwrap();
    // Until the flood has sent well over a table's worth of new flows.
    ltran.wait_stats("the flood reached ltran", Duration::from_secs(180), |s| {
        s.dispatch.rx_frames > CAPACITY * 3 / 2
    });
    // It goes on while kernel clients use the other instance.
    let clients = topo
        .cmd("python3")
        .args(["-c", CLIENTS, &ECHO_IP.to_string(), "10"])
        .output()
        .unwrap();
    let during = ltran.stats();
    drop(flood);
    let out = String::from_utf8_lossy(&clients.stdout);
    assert!(
        clients.status.success() && out.contains("ok 10"),
        "connections to the other instance failed during the flood: {out}{}\n{:#?}",
        String::from_utf8_lossy(&clients.stderr),
        during.dispatch
    );
    let d = &during.dispatch;
    assert!(d.conn_evicted > 0, "{d:#?}");
    assert_eq!(d.conn_table_full + d.conn_quota_full, 0, "{d:#?}");
    assert!(during.tables.connections <= CAPACITY);

    // The flood's half-open entries leave within seconds of its end.
    let after = ltran.wait_stats(
        "the half-open entries aged out",
        Duration::from_secs(60),
        |s| s.tables.half_open == 0,
    );
    assert!(after.tables.aged_out > 0, "{:#?}", after.tables);
    assert!(
        after.tables.connections < 100,
        "entries left: {:#?}",
        after.tables
    );
    assert!(echo.try_wait().unwrap().is_none(), "lstack-echo died");
}
