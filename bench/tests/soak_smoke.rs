//! `lstack-soak --quick` end to end: 200 connections for 20 s against
//! lstack-echo on an af_packet port, with no corrupted byte, no stall over
//! the limit, every counter of the report present, and every frame that
//! reached the stack's veth accounted for (received by lstack or counted
//! as rx_missed). And the check itself checked: a run told to flip one
//! echoed byte must fail and count exactly that byte. No assertion on
//! throughput (wall-clock rates on a shared VM). Needs root, hugepages and
//! `target/release/lstack-echo` (`cargo build --release -p lstack`).

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    sync::Mutex,
    time::Duration,
};

use netns_testbed::{require_root, ChildGuard};
use serde_json::Value;

const SOAK: &str = env!("CARGO_BIN_EXE_lstack-soak");

/// The soaks share two CPUs with everything else: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs lstack-soak with `args` (plus `--json`) and returns its output and
/// the report it printed.
fn soak(args: &[&str]) -> (Output, Value) {
    let echo = Path::new(SOAK).with_file_name("lstack-echo");
    assert!(
        echo.exists(),
        "{} is missing: build it with `cargo build --release -p lstack`",
        echo.display()
    );
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut cmd = Command::new(SOAK);
    cmd.args(args)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // A bound against a hang, far above a quick run's length; not a timing
    // assertion.
    let out = ChildGuard::spawn(&mut cmd)
        .expect("starting lstack-soak")
        .wait_with_output_timeout(Duration::from_secs(600))
        .expect("lstack-soak finished");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "lstack-soak printed no JSON report ({e}, {}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, report)
}

fn u64_at(report: &Value, path: &str) -> u64 {
    report
        .pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no number at {path} in the report:\n{report:#}"))
}

/// Every counter the report must have, as JSON pointers.
const COUNTERS: &[&str] = &[
    "/tcp/bytes_sent",
    "/tcp/bytes_echoed",
    "/tcp/corrupted_bytes",
    "/tcp/gbit_per_s",
    "/tcp/per_connection_min_mbit_s",
    "/tcp/per_connection_median_mbit_s",
    "/tcp/stalled_over_10s",
    "/tcp/worst_stall_s",
    "/udp/sent",
    "/udp/echoed",
    "/udp/lost",
    "/udp/corrupt",
    "/lstack/rx_packets",
    "/lstack/tx_packets",
    "/lstack/rx_missed",
    "/lstack/rx_missed_pct",
    "/lstack/rx_nombuf",
    "/lstack/rx_errors",
    "/lstack/tx_errors",
    "/lstack/tx_dropped",
    "/lstack/tx_nombuf",
    "/lstack/steer_dropped",
    "/lstack/accept_overflow",
    "/lstack/conn_limit_refused",
    "/lstack/threads/0/tx_dropped",
    "/lstack/threads/0/tx_nombuf",
    "/lstack/threads/0/steer_dropped",
    "/lstack/mib/Tcp.InErrs",
    "/lstack/mib/Udp.InErrors",
    "/lstack/mib/Ip.InHdrErrors",
    "/kernel/peer_link/rx_dropped",
    "/kernel/peer_link/tx_dropped",
    "/kernel/peer_link/rx_errors",
    "/kernel/host_link/rx_packets",
    "/kernel/host_link/rx_dropped",
    "/kernel/host_link/tx_dropped",
    "/kernel/peer_mib/Tcp.RetransSegs",
    "/kernel/peer_mib/Udp.InErrors",
    "/kernel/peer_mib/Udp.RcvbufErrors",
    "/kernel/peer_mib/Udp.SndbufErrors",
    "/kernel/peer_mib/TcpExt.TCPBacklogDrop",
    "/kernel/peer_mib/TcpExt.TCPRcvQDrop",
    "/kernel/peer_mib/TcpExt.ListenDrops",
    "/kernel/softnet_dropped",
    "/cpu/lstack_echo_s",
    "/cpu/load_generator_s",
    "/cpu/machine_busy_share",
];

#[test]
fn quick_soak_echoes_every_byte_and_counts_every_frame() {
    require_root();
    let (out, report) = soak(&["--quick"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for path in COUNTERS {
        assert!(
            report.pointer(path).is_some_and(Value::is_number),
            "the report has no counter {path}:\n{report:#}"
        );
    }
    for map in ["/lstack/drops_by_reason", "/lstack/threads/0/drops"] {
        assert!(
            report.pointer(map).is_some_and(Value::is_object),
            "the report has no {map}:\n{report:#}"
        );
    }
    assert_eq!(u64_at(&report, "/tcp/corrupted_bytes"), 0, "{report:#}");
    assert_eq!(u64_at(&report, "/udp/corrupt"), 0, "{report:#}");
    let worst = report["tcp"]["worst_stall_s"].as_f64().unwrap_or(f64::MAX);
    let limit = u64_at(&report, "/settings/max_stall_s") as f64;
    assert!(
        worst <= limit,
        "a stall of {worst} s (limit {limit} s):\n{report:#}"
    );
    assert!(
        out.status.success(),
        "lstack-soak --quick failed ({}):\n{stderr}\n{report:#}",
        out.status
    );
    assert_eq!(report["verdict"]["ok"], Value::Bool(true), "{report:#}");
    let sent = u64_at(&report, "/tcp/bytes_sent");
    assert!(sent > 0, "nothing was streamed:\n{report:#}");
    assert_eq!(sent, u64_at(&report, "/tcp/bytes_echoed"), "{report:#}");
    assert!(u64_at(&report, "/udp/sent") > 0, "{report:#}");

    // Every frame the peer put on the veth reached the stack's end of it,
    // where lstack either received it or counted it as missed. The two
    // sides are read a moment apart, around the last FINs: a little slack.
    let arrived = u64_at(&report, "/kernel/host_link/rx_packets");
    let seen = u64_at(&report, "/lstack/rx_packets") + u64_at(&report, "/lstack/rx_missed");
    let slack = 1000 + arrived / 1000;
    assert!(
        arrived.abs_diff(seen) <= slack,
        "{arrived} frames arrived at the stack's veth but lstack received or missed {seen}:\n\
         {report:#}"
    );
}

#[test]
fn a_flipped_byte_fails_the_soak() {
    require_root();
    let (out, report) = soak(&["--duration", "3", "--connections", "20", "--flip-byte"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a soak with a flipped byte passed:\n{report:#}"
    );
    assert!(
        stderr.contains("1 corrupted byte(s) in the TCP echoes"),
        "the failure does not name the corrupted byte:\n{stderr}"
    );
    assert_eq!(u64_at(&report, "/tcp/corrupted_bytes"), 1, "{report:#}");
    assert_eq!(report["verdict"]["ok"], Value::Bool(false), "{report:#}");
}
