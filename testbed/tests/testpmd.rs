//! Proves the topology and the EAL arguments together: Debian's `dpdk-testpmd` in
//! `icmpecho` mode owns `host_if` through `net_af_packet` and answers the peer's ARP
//! and pings. Needs root, hugepages and the `dpdk` package.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use netns_testbed::hugepages::{self, dpdk_file_prefix, remove_dpdk_runtime_dir};
use netns_testbed::{require_root, AfPacketEal, ChildGuard, Topology, TopologyOptions};

/// Panics with an installation hint unless `program` can be started.
fn require_program(program: &str, package: &str) {
    if let Err(e) = Command::new(program).arg("--version").output() {
        panic!("this test needs `{program}` ({e}): apt-get install {package}");
    }
}

/// The first `RX-packets: N` after `Accumulated forward statistics` in testpmd output.
fn accumulated_rx_packets(out: &str) -> Option<u64> {
    let (_, tail) = out.split_once("Accumulated forward statistics")?;
    let (_, after) = tail.split_once("RX-packets:")?;
    after.split_whitespace().next()?.parse().ok()
}

#[test]
fn testpmd_icmpecho_on_af_packet_answers_pings_from_the_peer() {
    require_root();
    require_program("dpdk-testpmd", "dpdk");
    let huge = hugepages::ensure(256).expect("reserving hugepages");
    let topo = Topology::new(TopologyOptions {
        name_hint: "pmd".into(),
        ..TopologyOptions::default()
    })
    .expect("creating topology");
    let prefix = dpdk_file_prefix("testpmd_icmpecho");

    // testpmd forwards on lcores other than the main one: it needs two.
    let eal = AfPacketEal {
        program: "dpdk-testpmd".into(),
        lcores: "0,1".into(),
        ..AfPacketEal::default()
    };
    let mut args = eal.args(&topo, &huge, &prefix);
    args.extend(
        [
            "--",
            "-i",
            "--forward-mode=icmpecho",
            "--total-num-mbufs=2048",
            "--auto-start",
        ]
        .map(String::from),
    );
    let mut cmd = Command::new(&args[0]);
    cmd.args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut testpmd = ChildGuard::spawn(&mut cmd).unwrap();
    testpmd
        .wait_for_output("testpmd> ", Duration::from_secs(30))
        .expect("testpmd starting");

    let stack = topo.stack_ip4.to_string();
    let direct = topo.run(["ping", "-c", "3", "-W", "2", &stack]);
    // From the address on the other subnet, as a stack using the peer as gateway sees it.
    let remote = topo.remote_ip4.to_string();
    let via_gateway = topo.run(["ping", "-c", "3", "-W", "2", "-I", &remote, &stack]);
    let neighbours = topo.run(["ip", "neigh", "show", "dev", &topo.peer_if]);

    writeln!(testpmd.stdin().unwrap(), "quit").unwrap();
    testpmd.close_stdin();
    let out = testpmd
        .wait_with_output_timeout(Duration::from_secs(30))
        .expect("testpmd quitting");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    remove_dpdk_runtime_dir(&prefix).unwrap();

    let direct = direct.unwrap_or_else(|e| panic!("{e:#}\ntestpmd:\n{stdout}\n{stderr}"));
    let text = String::from_utf8_lossy(&direct.stdout);
    assert!(text.contains("3 received"), "{text}");
    let via_gateway = via_gateway.unwrap_or_else(|e| panic!("{e:#}\ntestpmd:\n{stdout}\n{stderr}"));
    let text = String::from_utf8_lossy(&via_gateway.stdout);
    assert!(text.contains("3 received"), "{text}");
    // The peer learnt the stack's MAC by ARP, answered by testpmd.
    let neighbours = String::from_utf8(neighbours.unwrap().stdout).unwrap();
    assert!(
        neighbours.contains(&format!("{stack} lladdr {}", topo.stack_mac)),
        "{neighbours}"
    );

    assert!(
        out.status.success(),
        "testpmd: {}\n{stdout}\n{stderr}",
        out.status
    );
    let rx = accumulated_rx_packets(&stdout);
    assert!(rx.is_some_and(|n| n >= 7), "rx {rx:?}:\n{stdout}");
}
