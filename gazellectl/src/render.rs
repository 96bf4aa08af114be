//! Tables for people (the `--json` form prints the same values).

use std::{fmt::Write as _, time::Duration};

use gazelle_ctl_proto::{Connection, LstackStats, ThreadCounters};
use serde::Serialize;

/// Per-second rates between two samples of an lstack's counters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rates {
    /// The lstack's address.
    pub ip: Option<String>,
    /// Seconds between the samples.
    pub interval_secs: f64,
    /// Frames received per second.
    pub rx_pps: f64,
    /// Frames sent per second.
    pub tx_pps: f64,
    /// Received bits per second.
    pub rx_bps: f64,
    /// Sent bits per second.
    pub tx_bps: f64,
    /// Received frames dropped per second.
    pub drops_per_sec: f64,
    /// Connections established per second.
    pub established_per_sec: f64,
    /// TCP connections alive at the second sample.
    pub tcp_connections: u64,
}

impl Rates {
    /// The rates from `a` to `b`, taken `interval` apart. A counter that went
    /// backwards (the process restarted) counts from zero.
    pub fn between(a: &LstackStats, b: &LstackStats, interval: Duration) -> Rates {
        let (ta, tb) = (a.total(), b.total());
        let secs = interval.as_secs_f64().max(1e-9);
        let rate = |f: fn(&ThreadCounters) -> u64| {
            let (x, y) = (f(&ta), f(&tb));
            (if y >= x { y - x } else { y }) as f64 / secs
        };
        Rates {
            ip: b.ip.clone(),
            interval_secs: secs,
            rx_pps: rate(|t| t.rx_packets),
            tx_pps: rate(|t| t.tx_packets),
            rx_bps: rate(|t| t.rx_bytes) * 8.0,
            tx_bps: rate(|t| t.tx_bytes) * 8.0,
            drops_per_sec: rate(ThreadCounters::dropped),
            established_per_sec: rate(|t| t.tcp_established),
            tcp_connections: b.tcp_connections,
        }
    }
}

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
    if !total.drops.is_empty() {
        let reasons: Vec<String> = total
            .drops
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(o, "rx drops by reason: {}", reasons.join(", "));
    }
    o
}

/// `gazellectl lstack show <ip> -r`.
pub fn rates(r: &Rates) -> String {
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

/// `gazellectl lstack show <ip> -c`.
pub fn connections(c: &[Connection]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<7}{:<12}{:>9}{:>9}{:>9}{:>9}  {:<46}remote",
        "thread", "state", "recv_q", "send_q", "rcvbuf", "sndbuf", "local"
    );
    for x in c {
        let _ = writeln!(
            o,
            "{:<7}{:<12}{:>9}{:>9}{:>9}{:>9}  {:<46}{}",
            x.thread,
            x.state,
            x.recv_queue,
            x.send_queue,
            x.recv_capacity,
            x.send_capacity,
            x.local,
            x.remote
        );
    }
    let _ = writeln!(o, "{} sockets", c.len());
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
    fn rates_are_per_second_over_all_threads() {
        let r = Rates::between(
            &sample(100, 1000, 1),
            &sample(300, 5000, 5),
            Duration::from_secs(2),
        );
        assert_eq!(r.rx_pps, 200.0);
        assert_eq!(r.rx_bps, 16000.0);
        assert_eq!(r.established_per_sec, 2.0);
    }

    #[test]
    fn a_restarted_process_counts_from_zero() {
        let r = Rates::between(
            &sample(1000, 0, 0),
            &sample(10, 0, 0),
            Duration::from_secs(1),
        );
        assert_eq!(r.rx_pps, 20.0);
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
    }
}
