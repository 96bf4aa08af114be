//! The stack on DPDK's `net_tap` port, which offers receive and transmit
//! checksum offload: the stack trusts the receive verdicts and leaves IPv4,
//! TCP and UDP checksums to the port on transmit (writing only the
//! pseudo-header sum). The kernel on the other side of the tap verifies every
//! checksum, so a wrong offload request shows up as lost traffic. Needs root.

mod common;

use std::{net::SocketAddr, process::Command, time::Duration};

use common::{kernel_echo_roundtrip, pattern, spawn_stack_echo};
use gazelle_config::LstackConfig;
use lstack::{DropReason, Stack, StackOptions};
use netns_testbed::{hugepages, require_root};

/// A network namespace deleted on drop.
struct Netns(String);

impl Netns {
    fn run(&self, args: &[&str]) -> std::process::Output {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn checksum_offload_on_net_tap() {
    require_root();
    let pid = std::process::id();
    let ns = Netns(format!("ltap-{pid}"));
    ip(&["netns", "add", &ns.0]);
    let tap = format!("ltap{:x}", pid);
    let huge = hugepages::ensure(256).expect("hugepages");
    let prefix = hugepages::dpdk_file_prefix("tap");
    let mac = format!("02:00:5a:{:02x}:{:02x}:01", (pid >> 8) as u8, pid as u8);
    let mut cfg = LstackConfig::new(
        "10.90.0.2".parse().unwrap(),
        "255.255.255.0".parse().unwrap(),
        mac.parse().unwrap(),
    );
    cfg.gateway_addr = Some("10.90.0.1".parse().unwrap());
    cfg.num_cpus = "1".parse().unwrap();
    cfg.dpdk_args = vec![
        "--lcores=0".into(),
        "--no-pci".into(),
        "--no-telemetry".into(),
        format!("--file-prefix={prefix}"),
        format!("--huge-dir={}", huge.huge_dir.display()),
        "--huge-unlink".into(),
        "--socket-limit=256".into(),
        "--log-level=*:notice".into(),
        format!("--vdev=net_tap0,iface={tap},mac={mac}"),
    ];
    let stack =
        Stack::start(&cfg, StackOptions::for_config(&cfg)).expect("starting lstack on net_tap");
    assert!(
        stack.tx_checksum_offload(),
        "net_tap offers IPv4/TCP/UDP transmit checksum offload"
    );

    // The kernel end of the tap becomes the peer host.
    ip(&["link", "set", &tap, "netns", &ns.0]);
    ns.run(&["ip", "addr", "add", "10.90.0.1/24", "dev", &tap]);
    ns.run(&["ip", "link", "set", &tap, "up"]);
    ns.run(&["ip", "link", "set", "lo", "up"]);

    ns.run(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.90.0.2"]);

    spawn_stack_echo(&stack, 7200);
    let to: SocketAddr = "10.90.0.2:7200".parse().unwrap();
    let nsfile = std::fs::File::open(format!("/var/run/netns/{}", ns.0)).unwrap();
    let streams: Vec<_> = std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&nsfile, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            (0..4)
                .map(|_| std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap())
                .collect()
        })
        .join()
        .unwrap()
    });
    for (i, st) in streams.into_iter().enumerate() {
        let data = pattern(i as u64 + 900, 512 * 1024);
        let got = kernel_echo_roundtrip(st, &data).expect("echo over net_tap");
        assert!(got == data, "client {i}: echoed bytes differ");
    }
    let bad: u64 = [
        DropReason::TcpBadChecksum,
        DropReason::Ipv4BadChecksum,
        DropReason::UdpBadChecksum,
    ]
    .iter()
    .map(|r| stack.thread_stats(0).unwrap().dropped(*r))
    .sum();
    assert_eq!(bad, 0, "checksum drops on a clean link");
    stack.shutdown();
    let _ = hugepages::remove_dpdk_runtime_dir(&prefix);
}
