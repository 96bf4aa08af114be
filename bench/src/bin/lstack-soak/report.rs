//! The soak's report: what moved, what was wrong, where frames were lost
//! and what it cost in CPU; as text or JSON, with the verdict.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use gazelle_ctl_proto::{LstackStats, ThreadCounters};
use serde::Serialize;

use crate::{
    counters::{KernelSnapshot, LinkCounters, LOSS_WORDS},
    tcp::ConnResult,
    udp::UdpResult,
};

/// A connection with no progress for longer than this is counted as stalled.
pub const STALL: Duration = Duration::from_secs(10);

/// Everything a soak reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What was run.
    pub settings: Settings,
    /// The TCP streams.
    pub tcp: TcpReport,
    /// The UDP probes.
    pub udp: UdpReport,
    /// The lstack's drop counters (differences over the soak).
    pub lstack: LstackDrops,
    /// The kernel's drop counters (differences over the soak).
    pub kernel: KernelDrops,
    /// CPU each side consumed.
    pub cpu: CpuReport,
    /// Pass or fail, and why.
    pub verdict: Verdict,
}

/// What was run.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// TCP connections.
    pub connections: usize,
    /// Seconds of streaming asked for.
    pub duration_s: u64,
    /// Seconds it actually streamed (less after Ctrl-C).
    pub streamed_s: f64,
    /// Load generator threads.
    pub threads: usize,
    /// Most unechoed bytes per connection.
    pub window_bytes: usize,
    /// UDP probes per second.
    pub udp_rate: u32,
    /// The run's seed.
    pub seed: u64,
    /// Longest stall allowed, seconds.
    pub max_stall_s: u64,
    /// The af_packet PMD's ring block size.
    pub af_packet_blocksz: u32,
    /// The af_packet PMD's ring frame size.
    pub af_packet_framesz: u32,
    /// The af_packet PMD's frames per ring.
    pub af_packet_framecnt: u32,
    /// lstack's receive queue size.
    pub nic_rxqueue_size: u32,
    /// lstack-echo's socket buffer per direction, bytes.
    pub echo_buffer_bytes: usize,
}

/// The TCP streams.
#[derive(Debug, Clone, Serialize)]
pub struct TcpReport {
    /// Bytes written, all connections.
    pub bytes_sent: u64,
    /// Bytes echoed back, all connections.
    pub bytes_echoed: u64,
    /// Echoed bytes that were not what was sent (must be 0).
    pub corrupted_bytes: u64,
    /// The first corrupted byte: `connection N, offset M`.
    pub first_corruption: Option<String>,
    /// Echo throughput, one direction, Gbit/s.
    pub gbit_per_s: f64,
    /// Slowest connection's echo throughput, Mbit/s.
    pub per_connection_min_mbit_s: f64,
    /// Median connection's echo throughput, Mbit/s.
    pub per_connection_median_mbit_s: f64,
    /// Connections with no progress for more than 10 s at some point.
    pub stalled_over_10s: usize,
    /// The longest stall, seconds.
    pub worst_stall_s: f64,
    /// Which connection, and when its stall began (seconds into the run).
    pub worst_stall_connection: Option<usize>,
    /// Seconds into the run when the worst stall began.
    pub worst_stall_from_s: f64,
    /// Connections that ended early, and why.
    pub connection_errors: Vec<String>,
}

/// The UDP probes.
#[derive(Debug, Clone, Serialize)]
pub struct UdpReport {
    /// Datagrams sent.
    pub sent: u64,
    /// Distinct datagrams echoed intact.
    pub echoed: u64,
    /// Sent and never echoed.
    pub lost: u64,
    /// `lost` as a percentage of `sent`.
    pub lost_pct: f64,
    /// Echoes that were not intact.
    pub corrupt: u64,
    /// Echoes of a datagram already echoed.
    pub duplicates: u64,
    /// Sends the peer's kernel refused.
    pub send_errors: u64,
}

/// The lstack's counters over the soak: every drop `gazellectl lstack
/// show` shows.
#[derive(Debug, Clone, Serialize)]
pub struct LstackDrops {
    /// Frames the port received.
    pub rx_packets: u64,
    /// Frames the port sent.
    pub tx_packets: u64,
    /// Frames lost before the port saw them: for af_packet, the kernel's
    /// drops at the socket's full receive ring (`tp_drops`).
    pub rx_missed: u64,
    /// `rx_missed` as a percentage of the frames that arrived.
    pub rx_missed_pct: f64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Receive mbuf allocation failures.
    pub rx_nombuf: u64,
    /// Frames dropped at a full NIC transmit queue (all threads).
    pub tx_dropped: u64,
    /// Transmits that found no mbuf (all threads).
    pub tx_nombuf: u64,
    /// Frames dropped at a full steering queue (all threads).
    pub steer_dropped: u64,
    /// Connections dropped at a full accept queue.
    pub accept_overflow: u64,
    /// Connections refused at `tcp_conn_count`.
    pub conn_limit_refused: u64,
    /// Received frames dropped, by reason (all threads; reasons that
    /// happened).
    pub drops_by_reason: BTreeMap<String, u64>,
    /// The same per stack thread.
    pub threads: Vec<ThreadDrops>,
    /// Its MIB-2 counters (`gazellectl lstack show -s`), by `Group.Name`:
    /// header, checksum and port errors among them.
    pub mib: BTreeMap<String, u64>,
}

/// One stack thread's drops over the soak.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadDrops {
    /// Frames dropped at a full NIC transmit queue.
    pub tx_dropped: u64,
    /// Transmits that found no mbuf.
    pub tx_nombuf: u64,
    /// Frames dropped at a full steering queue.
    pub steer_dropped: u64,
    /// Received frames dropped, by reason.
    pub drops: BTreeMap<String, u64>,
}

/// The kernel's counters over the soak.
#[derive(Debug, Clone, Serialize)]
pub struct KernelDrops {
    /// The peer's veth end (in its namespace).
    pub peer_link: LinkCounters,
    /// The stack's veth end (root namespace).
    pub host_link: LinkCounters,
    /// The peer namespace's MIB counters: drops, errors, retransmissions.
    pub peer_mib: BTreeMap<String, i64>,
    /// Input backlog drops, whole machine.
    pub softnet_dropped: u64,
}

/// CPU each side consumed over the soak (from just before the connections
/// open to just after the last echo drained).
#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    /// Length of that window, seconds: the denominator of the shares.
    pub window_s: f64,
    /// lstack-echo's user + system time, seconds.
    pub lstack_echo_s: f64,
    /// The same as a share of one CPU.
    pub lstack_echo_cpus: f64,
    /// The load generator's (this process's) user + system time, seconds.
    pub load_generator_s: f64,
    /// The same as a share of one CPU.
    pub load_generator_cpus: f64,
    /// The machine's interrupt and softirq time, seconds (packet work the
    /// kernel does outside any process).
    pub machine_interrupts_s: f64,
    /// Share of all the machine's CPU time that was busy.
    pub machine_busy_share: f64,
    /// CPUs online.
    pub cpus: usize,
}

/// Pass or fail.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// No corrupted byte, no stall over the limit, no broken connection.
    pub ok: bool,
    /// What failed, one sentence each.
    pub failures: Vec<String>,
}

/// The TCP part of the report.
pub fn tcp_report(conns: &[ConnResult], streamed: Duration) -> TcpReport {
    let secs = streamed.as_secs_f64().max(1e-3);
    let mut rates: Vec<f64> = conns
        .iter()
        .map(|c| c.echoed as f64 * 8.0 / secs / 1e6)
        .collect();
    rates.sort_by(f64::total_cmp);
    let worst = conns.iter().max_by_key(|c| c.worst_stall);
    let echoed: u64 = conns.iter().map(|c| c.echoed).sum();
    TcpReport {
        bytes_sent: conns.iter().map(|c| c.sent).sum(),
        bytes_echoed: echoed,
        corrupted_bytes: conns.iter().map(|c| c.corrupt).sum(),
        first_corruption: conns.iter().find_map(|c| {
            c.first_corrupt
                .map(|o| format!("connection {}, offset {o}", c.id))
        }),
        gbit_per_s: echoed as f64 * 8.0 / secs / 1e9,
        per_connection_min_mbit_s: rates.first().copied().unwrap_or(0.0),
        per_connection_median_mbit_s: rates.get(rates.len() / 2).copied().unwrap_or(0.0),
        stalled_over_10s: conns.iter().filter(|c| c.worst_stall > STALL).count(),
        worst_stall_s: worst.map_or(0.0, |c| c.worst_stall.as_secs_f64()),
        worst_stall_connection: worst.filter(|c| !c.worst_stall.is_zero()).map(|c| c.id),
        worst_stall_from_s: worst.map_or(0.0, |c| c.worst_stall_from.as_secs_f64()),
        connection_errors: conns
            .iter()
            .filter_map(|c| {
                c.error
                    .as_ref()
                    .map(|e| format!("connection {}: {e}", c.id))
            })
            .collect(),
    }
}

/// The UDP part of the report.
pub fn udp_report(r: &UdpResult) -> UdpReport {
    UdpReport {
        sent: r.sent,
        echoed: r.echoed,
        lost: r.lost(),
        lost_pct: percent(r.lost(), r.sent),
        corrupt: r.corrupt,
        duplicates: r.duplicates,
        send_errors: r.send_errors,
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn drops_since(
    after: &BTreeMap<String, u64>,
    before: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(before.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// The lstack part of the report: `after` minus `before`, of its counters
/// and of its MIB-2 counters `mib`.
pub fn lstack_drops(
    before: &LstackStats,
    after: &LstackStats,
    mib: BTreeMap<String, u64>,
) -> LstackDrops {
    let (p0, p1) = (&before.port, &after.port);
    let d = |a: u64, b: u64| a.saturating_sub(b);
    let thread = |i: usize, t: &ThreadCounters| {
        let empty = ThreadCounters::default();
        let b = before.threads.get(i).unwrap_or(&empty);
        ThreadDrops {
            tx_dropped: d(t.tx_dropped, b.tx_dropped),
            tx_nombuf: d(t.tx_nombuf, b.tx_nombuf),
            steer_dropped: d(t.steer_dropped, b.steer_dropped),
            drops: drops_since(&t.drops, &b.drops),
        }
    };
    let threads: Vec<ThreadDrops> = after
        .threads
        .iter()
        .enumerate()
        .map(|(i, t)| thread(i, t))
        .collect();
    let (t0, t1) = (before.total(), after.total());
    let rx_missed = d(p1.rx_missed, p0.rx_missed);
    let rx_packets = d(p1.rx_packets, p0.rx_packets);
    LstackDrops {
        rx_packets,
        tx_packets: d(p1.tx_packets, p0.tx_packets),
        rx_missed,
        rx_missed_pct: percent(rx_missed, rx_missed + rx_packets),
        rx_errors: d(p1.rx_errors, p0.rx_errors),
        tx_errors: d(p1.tx_errors, p0.tx_errors),
        rx_nombuf: d(p1.rx_nombuf, p0.rx_nombuf),
        tx_dropped: d(t1.tx_dropped, t0.tx_dropped),
        tx_nombuf: d(t1.tx_nombuf, t0.tx_nombuf),
        steer_dropped: d(t1.steer_dropped, t0.steer_dropped),
        accept_overflow: d(t1.accept_overflow, t0.accept_overflow),
        conn_limit_refused: d(t1.conn_limit_refused, t0.conn_limit_refused),
        drops_by_reason: drops_since(&t1.drops, &t0.drops),
        threads,
        mib,
    }
}

/// The kernel part of the report: `after` minus `before`.
pub fn kernel_drops(before: &KernelSnapshot, after: &KernelSnapshot) -> KernelDrops {
    KernelDrops {
        peer_link: after.peer_link.since(&before.peer_link),
        host_link: after.host_link.since(&before.host_link),
        peer_mib: after.mib_since(before),
        softnet_dropped: after.softnet_dropped.saturating_sub(before.softnet_dropped),
    }
}

/// What failed: corrupted bytes or datagrams, a stall over `max_stall`,
/// connections that broke.
pub fn verdict(tcp: &TcpReport, udp: &UdpReport, max_stall: Duration) -> Verdict {
    let mut failures = Vec::new();
    if tcp.corrupted_bytes > 0 {
        failures.push(format!(
            "{} corrupted byte(s) in the TCP echoes (first at {})",
            tcp.corrupted_bytes,
            tcp.first_corruption.as_deref().unwrap_or("?")
        ));
    }
    if udp.corrupt > 0 {
        failures.push(format!("{} corrupted UDP echo(es)", udp.corrupt));
    }
    if tcp.worst_stall_s > max_stall.as_secs_f64() {
        failures.push(format!(
            "connection {} made no progress for {:.1} s from {:.1} s into the run \
             (--max-stall is {} s)",
            tcp.worst_stall_connection.unwrap_or(0),
            tcp.worst_stall_s,
            tcp.worst_stall_from_s,
            max_stall.as_secs()
        ));
    }
    if !tcp.connection_errors.is_empty() {
        failures.push(format!(
            "{} connection(s) broke: {}",
            tcp.connection_errors.len(),
            tcp.connection_errors.join("; ")
        ));
    }
    Verdict {
        ok: failures.is_empty(),
        failures,
    }
}

/// A line of MIB counters: segments in and out, then every other counter
/// that changed and that `show` picks.
fn mib_line(o: &mut String, label: &str, counters: &[(&str, i64)], show: impl Fn(&str) -> bool) {
    let get = |key: &str| counters.iter().find(|(k, _)| *k == key).map_or(0, |c| c.1);
    let changed: Vec<String> = counters
        .iter()
        .filter(|(k, v)| *v != 0 && !k.ends_with("InSegs") && !k.ends_with("OutSegs") && show(k))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let _ = writeln!(
        o,
        "  {label} segments in {} out {}; changed: {}",
        get("Tcp.InSegs"),
        get("Tcp.OutSegs"),
        if changed.is_empty() {
            "none".to_owned()
        } else {
            changed.join(" ")
        }
    );
}

fn gb(bytes: u64) -> f64 {
    bytes as f64 / 1e9
}

impl Report {
    /// The report as text, for people.
    pub fn text(&self) -> String {
        let (s, t, u, l, k, c) = (
            &self.settings,
            &self.tcp,
            &self.udp,
            &self.lstack,
            &self.kernel,
            &self.cpu,
        );
        let mut o = String::new();
        let _ = writeln!(
            o,
            "lstack-soak: {} connections for {:.0} s (window {} KiB, {} load threads), \
             UDP {}/s, seed {}; af_packet blocksz {} framesz {} framecnt {}, \
             nic_rxqueue_size {}, echo buffers {} KiB",
            s.connections,
            s.streamed_s,
            s.window_bytes / 1024,
            s.threads,
            s.udp_rate,
            s.seed,
            s.af_packet_blocksz,
            s.af_packet_framesz,
            s.af_packet_framecnt,
            s.nic_rxqueue_size,
            s.echo_buffer_bytes / 1024
        );
        let _ = writeln!(
            o,
            "tcp:  {:.3} GB sent, {:.3} GB echoed, {} corrupted bytes, {:.3} Gbit/s; \
             per connection min {:.1} / median {:.1} Mbit/s",
            gb(t.bytes_sent),
            gb(t.bytes_echoed),
            t.corrupted_bytes,
            t.gbit_per_s,
            t.per_connection_min_mbit_s,
            t.per_connection_median_mbit_s
        );
        let _ = writeln!(
            o,
            "      {} connections stalled > 10 s; worst stall {:.1} s{}; {} broke",
            t.stalled_over_10s,
            t.worst_stall_s,
            t.worst_stall_connection
                .map(|i| format!(" (connection {i}, from {:.1} s)", t.worst_stall_from_s))
                .unwrap_or_default(),
            t.connection_errors.len()
        );
        let _ = writeln!(
            o,
            "udp:  {} sent, {} echoed, {} lost ({:.2} %), {} corrupt, {} duplicates, \
             {} send errors",
            u.sent, u.echoed, u.lost, u.lost_pct, u.corrupt, u.duplicates, u.send_errors
        );
        let _ = writeln!(o, "where frames were lost:");
        let _ = writeln!(
            o,
            "  lstack port:    rx {} tx {}; rx_missed {} ({:.2} % of arrivals: af_packet ring \
             full), rx_nombuf {}, rx_errors {}, tx_errors {}",
            l.rx_packets,
            l.tx_packets,
            l.rx_missed,
            l.rx_missed_pct,
            l.rx_nombuf,
            l.rx_errors,
            l.tx_errors
        );
        let reasons: Vec<String> = l
            .drops_by_reason
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        let _ = writeln!(
            o,
            "  lstack threads: tx_dropped {}, tx_nombuf {}, steer_dropped {}, \
             accept_overflow {}, conn_limit_refused {}, drops [{}]",
            l.tx_dropped,
            l.tx_nombuf,
            l.steer_dropped,
            l.accept_overflow,
            l.conn_limit_refused,
            reasons.join(" ")
        );
        let lstack_mib: Vec<(&str, i64)> =
            l.mib.iter().map(|(k, v)| (k.as_str(), *v as i64)).collect();
        mib_line(&mut o, "lstack MIB:    ", &lstack_mib, |name| {
            LOSS_WORDS.iter().any(|w| name.contains(w))
        });
        for (name, link) in [("peer veth", &k.peer_link), ("stack veth", &k.host_link)] {
            let _ = writeln!(
                o,
                "  {:<16}rx {} (dropped {}, errors {}), tx {} (dropped {}, errors {})",
                format!("{name}:"),
                link.rx_packets,
                link.rx_dropped,
                link.rx_errors,
                link.tx_packets,
                link.tx_dropped,
                link.tx_errors
            );
        }
        let peer_mib: Vec<(&str, i64)> = k.peer_mib.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        mib_line(&mut o, "peer kernel:   ", &peer_mib, |_| true);
        let _ = writeln!(
            o,
            "  machine:        softnet backlog drops {}",
            k.softnet_dropped
        );
        let _ = writeln!(
            o,
            "cpu:  lstack-echo {:.1} s ({:.2} CPUs), load generator {:.1} s ({:.2} CPUs), \
             interrupts {:.1} s; machine {:.0} % busy of {} CPUs (over {:.0} s)",
            c.lstack_echo_s,
            c.lstack_echo_cpus,
            c.load_generator_s,
            c.load_generator_cpus,
            c.machine_interrupts_s,
            c.machine_busy_share * 100.0,
            c.cpus,
            c.window_s
        );
        if self.verdict.ok {
            let _ = writeln!(o, "verdict: ok");
        } else {
            for f in &self.verdict.failures {
                let _ = writeln!(o, "FAILED: {f}");
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(id: usize, echoed: u64, stall: u64) -> ConnResult {
        ConnResult {
            id,
            sent: echoed,
            echoed,
            worst_stall: Duration::from_secs(stall),
            worst_stall_from: Duration::from_secs(1),
            ..ConnResult::default()
        }
    }

    #[test]
    fn throughput_stalls_and_verdict() {
        let conns = [
            conn(0, 1_000_000, 0),
            conn(1, 3_000_000, 12),
            conn(2, 2_000_000, 31),
        ];
        let t = tcp_report(&conns, Duration::from_secs(8));
        assert_eq!(t.bytes_echoed, 6_000_000);
        assert!((t.per_connection_min_mbit_s - 1.0).abs() < 1e-9);
        assert!((t.per_connection_median_mbit_s - 2.0).abs() < 1e-9);
        assert_eq!(t.stalled_over_10s, 2);
        assert_eq!(t.worst_stall_connection, Some(2));
        let u = udp_report(&UdpResult {
            sent: 10,
            echoed: 9,
            ..UdpResult::default()
        });
        assert_eq!((u.lost, u.lost_pct), (1, 10.0));
        let v = verdict(&t, &u, Duration::from_secs(30));
        assert!(!v.ok);
        assert!(
            v.failures[0].contains("connection 2 made no progress for 31.0 s"),
            "{v:?}"
        );
        assert!(verdict(&t, &u, Duration::from_secs(40)).ok);
    }

    #[test]
    fn a_corrupted_byte_fails_whatever_else() {
        let mut c = conn(3, 100, 0);
        c.corrupt = 1;
        c.first_corrupt = Some(42);
        let t = tcp_report(&[c], Duration::from_secs(1));
        let v = verdict(
            &t,
            &udp_report(&UdpResult::default()),
            Duration::from_secs(30),
        );
        assert_eq!(
            v.failures,
            ["1 corrupted byte(s) in the TCP echoes (first at connection 3, offset 42)"]
        );
    }

    #[test]
    fn lstack_differences_include_every_drop_counter() {
        let mut before = LstackStats::default();
        before.threads.push(ThreadCounters::default());
        before.threads[0].drops.insert("Malformed".into(), 2);
        let mut after = before.clone();
        after.port.rx_packets = 300;
        after.port.rx_missed = 100;
        after.threads[0].tx_dropped = 4;
        after.threads[0].drops.insert("Malformed".into(), 5);
        after.threads[0].drops.insert("NotForUs".into(), 1);
        let l = lstack_drops(&before, &after, BTreeMap::new());
        assert_eq!((l.rx_missed, l.rx_missed_pct), (100, 25.0));
        assert_eq!(l.tx_dropped, 4);
        assert_eq!(l.drops_by_reason["Malformed"], 3);
        assert_eq!(l.threads[0].drops["NotForUs"], 1);
        let json = serde_json::to_value(&l).unwrap();
        for key in [
            "rx_missed",
            "rx_nombuf",
            "rx_errors",
            "tx_dropped",
            "tx_nombuf",
            "steer_dropped",
            "drops_by_reason",
            "mib",
        ] {
            assert!(json.get(key).is_some(), "{key} missing: {json}");
        }
    }
}
