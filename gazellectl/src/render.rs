//! Tables for people (the `--json` form prints the same values).

use std::fmt::Write as _;

use gazelle_ctl_proto::{
    bucket_bounds, Connection, LstackLatency, LstackRates, LstackSnmp, LstackStats, RxLatency,
    ThreadCounters,
};

/// `gazellectl lstack show <ip>`.
pub fn lstack(s: &LstackStats) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "lstack {} (pid {} {}), up {} s",
        s.ip.as_deref().unwrap_or("-"),
        s.pid,
        s.process,
        s.uptime_secs
    );
    if let Some(ip6) = &s.ip6 {
        let _ = writeln!(o, "ipv6: {ip6}");
    }
    let _ = writeln!(
        o,
        "conn_num: {}  mbufs free: {}",
        s.tcp_connections, s.mbufs_available
    );
    let p = &s.port;
    let _ = writeln!(
        o,
        "port: rx {} pkts {} bytes, tx {} pkts {} bytes, rx_missed {}, rx_errors {}, tx_errors {}, rx_nombuf {}",
        p.rx_packets, p.rx_bytes, p.tx_packets, p.tx_bytes, p.rx_missed, p.rx_errors, p.tx_errors, p.rx_nombuf
    );
    if let Some(b) = &s.bond {
        let _ = writeln!(
            o,
            "bond: mode {} mac {} miimon {} ms, active port {}, failovers {}, announcements {}, backup frames dropped {}",
            b.mode,
            b.mac,
            b.miimon_ms,
            b.active
                .and_then(|i| b.ports.get(i))
                .map_or("none (no link)".to_owned(), |p| p.name.clone()),
            b.failovers,
            b.announcements,
            b.backup_dropped
        );
        crate::ltran_view::bond_ports(&mut o, b);
    }
    let _ = writeln!(
        o,
        "{:<7}{:>12}{:>14}{:>12}{:>14}{:>9}{:>9}{:>10}{:>11}{:>11}{:>12}{:>9}{:>10}{:>7}",
        "thread",
        "rx_pkts",
        "rx_bytes",
        "tx_pkts",
        "tx_bytes",
        "rx_drop",
        "tx_drop",
        "tx_nombuf",
        "steered_in",
        "steer_drop",
        "established",
        "refused",
        "acc_ovfl",
        "panics"
    );
    let row = |o: &mut String, name: &str, t: &ThreadCounters| {
        let _ = writeln!(
            o,
            "{:<7}{:>12}{:>14}{:>12}{:>14}{:>9}{:>9}{:>10}{:>11}{:>11}{:>12}{:>9}{:>10}{:>7}",
            name,
            t.rx_packets,
            t.rx_bytes,
            t.tx_packets,
            t.tx_bytes,
            t.dropped(),
            t.tx_dropped,
            t.tx_nombuf,
            t.steered_in,
            t.steer_dropped,
            t.tcp_established,
            t.conn_limit_refused,
            t.accept_overflow,
            t.panics
        );
    };
    for (i, t) in s.threads.iter().enumerate() {
        row(&mut o, &i.to_string(), t);
    }
    let total = s.total();
    if s.threads.len() > 1 {
        row(&mut o, "total", &total);
    }
    let _ = writeln!(
        o,
        "half-open connections: {} now, {} evicted (table full), {} expired; \
         SYN challenges: {} sent, {} answered",
        total.half_open,
        total.half_open_evicted,
        total.half_open_expired,
        total.syn_challenges,
        total.syn_challenges_answered
    );
    if total.pmtu_learned + total.pmtu_ignored + total.pmtu_split > 0 {
        let _ = writeln!(
            o,
            "path MTU: {} lowered, {} ICMP ignored, {} segments cut to fit",
            total.pmtu_learned, total.pmtu_ignored, total.pmtu_split
        );
    }
    if let Some(k) = &s.kernel_path {
        let _ = writeln!(
            o,
            "kernel path on {}: {} frames to the kernel, {} from it, {} dropped; \
             lstack owns TCP ports {} and UDP ports {}",
            k.iface,
            total.kernel_rx,
            total.kernel_tx,
            total.kernel_dropped,
            port_list(&k.owned_tcp_ports),
            port_list(&k.owned_udp_ports)
        );
        if let Some(e) = &k.helper_error {
            let _ = writeln!(o, "eBPF helper: not loaded ({e})");
        } else if !k.helper.is_empty() {
            let counters: Vec<String> = k.helper.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(o, "eBPF helper: {}", counters.join(", "));
        }
    }
    if !total.drops.is_empty() {
        let reasons: Vec<String> = total
            .drops
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(o, "rx drops by reason: {}", reasons.join(", "));
    }
    if !s.kernel_sockets.is_empty() {
        let reasons: Vec<String> = s
            .kernel_sockets
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(o, "sockets left on the kernel: {}", reasons.join(", "));
    }
    if !s.unhonoured_options.is_empty() {
        let options: Vec<String> = s
            .unhonoured_options
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            o,
            "socket options set but not honoured by lstack: {}",
            options.join(", ")
        );
    }
    o
}

/// `gazellectl lstack show <ip> -r`.
pub fn rates(r: &LstackRates) -> String {
    format!(
        "lstack {} over {:.1} s: rx {:.0} pps {:.3} Mbit/s, tx {:.0} pps {:.3} Mbit/s, drops {:.0}/s, new connections {:.0}/s, conn_num {}\n",
        r.ip.as_deref().unwrap_or("-"),
        r.interval_secs,
        r.rx_pps,
        r.rx_bps / 1e6,
        r.tx_pps,
        r.tx_bps / 1e6,
        r.drops_per_sec,
        r.established_per_sec,
        r.tcp_connections
    )
}

/// The first line of a view: which lstack.
/// Ports as `6379, 8080` (at most 16, then how many more), or `none`.
fn port_list(ports: &[u16]) -> String {
    if ports.is_empty() {
        return "none".into();
    }
    let mut shown: Vec<String> = ports.iter().take(16).map(u16::to_string).collect();
    if ports.len() > 16 {
        shown.push(format!("and {} more", ports.len() - 16));
    }
    shown.join(", ")
}

fn heading(ip: Option<&str>, pid: u32, process: &str, what: &str) -> String {
    format!(
        "lstack {} (pid {pid} {process}): {what}\n",
        ip.unwrap_or("-")
    )
}

/// `gazellectl lstack show <ip> -s`: one row per counter, one column per
/// thread (and the total when there are several), grouped as in
/// `/proc/net/snmp`.
pub fn snmp(s: &LstackSnmp) -> String {
    let mut o = heading(s.ip.as_deref(), s.pid, &s.process, "MIB-2 counters");
    let mut columns: Vec<_> = s.threads.iter().map(|t| t.sections()).collect();
    let mut names: Vec<String> = (0..s.threads.len()).map(|i| i.to_string()).collect();
    if s.threads.len() != 1 {
        columns.push(s.total.sections());
        names.push("total".into());
    }
    let _ = write!(o, "{:<20}", "counter");
    for n in &names {
        let _ = write!(o, "{n:>14}");
    }
    o.push('\n');
    for (i, (group, entries)) in s.total.sections().iter().enumerate() {
        let _ = writeln!(o, "{group}:");
        for (j, (name, _)) in entries.iter().enumerate() {
            let _ = write!(o, "  {name:<18}");
            for c in &columns {
                let _ = write!(o, "{:>14}", c[i].1[j].1);
            }
            o.push('\n');
        }
    }
    o
}

/// A duration in nanoseconds, in the unit that suits it.
pub fn fmt_ns(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns} ns"),
        1_000..=999_999 => format!("{:.1} µs", ns as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.2} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

/// `gazellectl lstack show <ip> -l`: per thread and in all, how long data
/// waited between its frame's arrival and the read that returned it, and
/// the histogram of all threads' reads.
pub fn latency(l: &LstackLatency) -> String {
    let mut o = heading(
        l.ip.as_deref(),
        l.pid,
        &l.process,
        "receive latency, frame arrival to the application's read",
    );
    let _ = writeln!(
        o,
        "{:<7}{:>12}{:>11}{:>11}{:>11}{:>11}{:>11}{:>11}",
        "thread", "reads", "mean", "min", "p50", "p90", "p99", "max"
    );
    let row = |o: &mut String, name: &str, r: &RxLatency| {
        let _ = writeln!(
            o,
            "{:<7}{:>12}{:>11}{:>11}{:>11}{:>11}{:>11}{:>11}",
            name,
            r.count,
            fmt_ns(r.mean_ns),
            fmt_ns(r.min_ns),
            fmt_ns(r.p50_ns),
            fmt_ns(r.p90_ns),
            fmt_ns(r.p99_ns),
            fmt_ns(r.max_ns)
        );
    };
    for (i, t) in l.threads.iter().enumerate() {
        row(&mut o, &i.to_string(), t);
    }
    if l.threads.len() != 1 {
        row(&mut o, "total", &l.total);
    }
    let total: u64 = l.total.buckets.iter().sum();
    if total > 0 {
        let _ = writeln!(
            o,
            "reads by latency, from .. below (percentiles are estimated from these):"
        );
        for (i, &n) in l.total.buckets.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let (lo, hi) = bucket_bounds(i);
            let hi = hi.saturating_add(1);
            let bar = "#".repeat(((n * 40).div_ceil(total)) as usize);
            let _ = writeln!(
                o,
                "  {:>10} .. {:<10}{:>12}  {bar}",
                fmt_ns(lo),
                fmt_ns(hi),
                n
            );
        }
    }
    o
}

/// `gazellectl lstack show <ip> -c`: the stack's sockets, then those the
/// process kept on the kernel, each with the reason.
pub fn connections(c: &[Connection]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<7}{:<12}{:>9}{:>9}{:>9}{:>9}  {:<46}{:<46}path",
        "thread", "state", "recv_q", "send_q", "rcvbuf", "sndbuf", "local", "remote"
    );
    for x in c {
        let (thread, path) = match &x.kernel {
            None => (x.thread.to_string(), "lstack".to_owned()),
            Some(k) => (
                "-".to_owned(),
                format!("kernel ({} fd {}): {}", k.protocol, k.fd, k.reason),
            ),
        };
        let _ = writeln!(
            o,
            "{:<7}{:<12}{:>9}{:>9}{:>9}{:>9}  {:<46}{:<46}{}",
            thread,
            x.state,
            x.recv_queue,
            x.send_queue,
            x.recv_capacity,
            x.send_capacity,
            x.local,
            x.remote,
            path
        );
    }
    let kernel = c.iter().filter(|x| x.kernel.is_some()).count();
    let _ = writeln!(
        o,
        "{} sockets: {} on lstack, {kernel} on the kernel",
        c.len(),
        c.len() - kernel
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rx: u64, bytes: u64, est: u64) -> LstackStats {
        LstackStats {
            ip: Some("10.0.0.2".into()),
            threads: vec![
                ThreadCounters {
                    rx_packets: rx,
                    rx_bytes: bytes,
                    tcp_established: est,
                    ..Default::default()
                },
                ThreadCounters {
                    rx_packets: rx,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn snmp_table_has_a_column_per_thread_and_the_total() {
        let mut a = gazelle_ctl_proto::Snmp::default();
        a.ip.in_receives = 5;
        a.icmp.in_echos = 2;
        let mut b = a;
        b.ip.in_receives = 7;
        let s = LstackSnmp {
            pid: 9,
            process: "echo".into(),
            ip: Some("10.0.0.2".into()),
            threads: vec![a, b],
            ..Default::default()
        }
        .with_total();
        let t = snmp(&s);
        assert!(
            t.starts_with("lstack 10.0.0.2 (pid 9 echo): MIB-2 counters"),
            "{t}"
        );
        let words = |prefix: &str| -> Vec<String> {
            let line = t
                .lines()
                .find(|l| l.trim_start().starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in {t}"));
            line.split_whitespace().map(str::to_owned).collect()
        };
        assert_eq!(words("counter"), ["counter", "0", "1", "total"]);
        assert_eq!(words("InReceives"), ["InReceives", "5", "7", "12"]);
        assert_eq!(words("InEchos"), ["InEchos", "2", "2", "4"]);
        for group in [
            "Ip:", "Icmp:", "Tcp:", "Udp:", "Ip6:", "Icmp6:", "Udp6:", "TcpExt:",
        ] {
            assert!(t.lines().any(|l| l == group), "{group} missing: {t}");
        }
        // One thread: no total column.
        let one = LstackSnmp {
            threads: vec![a],
            ..Default::default()
        }
        .with_total();
        assert!(!snmp(&one).contains("total"));
    }

    #[test]
    fn latency_table_summarises_and_draws_the_histogram() {
        let mut buckets = vec![0; 12];
        buckets[gazelle_ctl_proto::latency_bucket(1_500)] = 3;
        buckets[gazelle_ctl_proto::latency_bucket(900)] = 1;
        let t0 = RxLatency::new(4, 900 + 3 * 1_500, 900, 1_500, buckets);
        let l = LstackLatency {
            pid: 9,
            process: "echo".into(),
            ip: Some("10.0.0.2".into()),
            threads: vec![t0, RxLatency::default()],
            ..Default::default()
        }
        .with_total();
        let t = latency(&l);
        assert!(t.contains("receive latency"), "{t}");
        let total = t.lines().find(|l| l.starts_with("total")).unwrap();
        let words: Vec<&str> = total.split_whitespace().collect();
        // total, reads, then value/unit pairs: mean min p50 p90 p99 max.
        assert_eq!(words[1], "4");
        assert_eq!(&words[2..4], ["1.4", "µs"]);
        assert_eq!(&words[4..6], ["900", "ns"]);
        assert_eq!(&words[12..14], ["1.5", "µs"]);
        assert!(
            t.lines()
                .any(|l| l.contains("512 ns .. 1.0 µs") && l.contains(" 1  ###")),
            "{t}"
        );
        assert!(
            t.lines()
                .any(|l| l.contains("1.0 µs .. 2.0 µs") && l.contains(" 3  ###")),
            "{t}"
        );
        assert_eq!(fmt_ns(2_500_000), "2.50 ms");
        assert_eq!(fmt_ns(3_000_000_000), "3.00 s");
    }

    #[test]
    fn lstacks_own_bond_shows_the_active_port_and_each_link() {
        let t = lstack(&sample(1, 1, 1));
        assert!(!t.contains("bond:"), "no bond, no line: {t}");
        let mut s = sample(1, 1, 1);
        let port = |id: u16, up: bool, active: bool| gazelle_ctl_proto::BondPort {
            port_id: id,
            name: format!("net_af_packet{id}"),
            iface: Some(format!("veth{id}")),
            link_up: up,
            active,
            ..Default::default()
        };
        s.bond = Some(gazelle_ctl_proto::BondStatus {
            mode: 1,
            mac: "02:00:00:00:00:01".into(),
            miimon_ms: 20,
            active: Some(1),
            failovers: 1,
            announcements: 2,
            backup_dropped: 5,
            ports: vec![port(0, false, false), port(1, true, true)],
        });
        let t = lstack(&s);
        assert!(
            t.contains("bond: mode 1 mac 02:00:00:00:00:01 miimon 20 ms, active port net_af_packet1, failovers 1, announcements 2, backup frames dropped 5"),
            "{t}"
        );
        assert!(
            t.lines()
                .any(|l| l.starts_with("0 ") && l.contains("down") && l.contains("backup")),
            "{t}"
        );
        assert!(
            t.lines()
                .any(|l| l.starts_with("1 ") && l.contains(" up ") && l.contains("active")),
            "{t}"
        );
    }

    #[test]
    fn tables_show_every_thread_and_the_total() {
        let t = lstack(&sample(7, 70, 1));
        assert!(t.contains("lstack 10.0.0.2"), "{t}");
        assert_eq!(
            t.lines()
                .filter(|l| l.starts_with("0 ") || l.starts_with("1 "))
                .count(),
            2,
            "{t}"
        );
        assert!(
            t.lines()
                .any(|l| l.starts_with("total") && l.contains("14")),
            "{t}"
        );
        assert!(!t.contains("left on the kernel"), "{t}");
        let mut s = sample(7, 70, 1);
        s.kernel_sockets = [("loopback".to_owned(), 2), ("udp_enable = 0".to_owned(), 1)].into();
        let t = lstack(&s);
        assert!(
            t.contains("sockets left on the kernel: loopback 2, udp_enable = 0 1"),
            "{t}"
        );
        assert!(!t.contains("not honoured"), "{t}");
        s.unhonoured_options = [("IPPROTO_TCP/TCP_DEFER_ACCEPT".to_owned(), 3)].into();
        let t = lstack(&s);
        assert!(
            t.contains(
                "socket options set but not honoured by lstack: IPPROTO_TCP/TCP_DEFER_ACCEPT 3"
            ),
            "{t}"
        );
    }

    #[test]
    fn the_connection_list_marks_kernel_path_sockets_with_the_reason() {
        let on_stack = Connection {
            thread: 1,
            state: "ESTAB".into(),
            local: "10.0.0.2:6379".into(),
            remote: "10.0.0.1:40000".into(),
            ..Default::default()
        };
        let on_kernel = Connection {
            state: "LISTEN".into(),
            local: "127.0.0.1:6379".into(),
            remote: "*".into(),
            kernel: Some(gazelle_ctl_proto::KernelPathSocket {
                fd: 7,
                protocol: "tcp".into(),
                reason: "bound to an address not on the stack".into(),
            }),
            ..Default::default()
        };
        let t = connections(&[on_stack, on_kernel]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[1].starts_with("1 ") && lines[1].ends_with("lstack"),
            "{t}"
        );
        assert!(
            lines[2].starts_with("- ")
                && lines[2].ends_with("kernel (tcp fd 7): bound to an address not on the stack"),
            "{t}"
        );
        assert!(t.contains("2 sockets: 1 on lstack, 1 on the kernel"), "{t}");
    }
}
