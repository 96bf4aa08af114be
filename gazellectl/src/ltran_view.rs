//! `gazellectl ltran show` tables (the `--json` form prints the same values).

use std::{fmt::Write as _, time::Duration};

use gazelle_ctl_proto::{DispatchCounters, LtranStats};
use serde::Serialize;

/// `ltran show`: ports of the bond, dispatch counters, instances.
pub fn overview(s: &LtranStats) -> String {
    let mut o = String::new();
    let b = &s.bond;
    let _ = writeln!(
        o,
        "ltran (pid {}), up {} s; bond mode {} mac {} miimon {} ms, failovers {}, announcements {}",
        s.pid, s.uptime_secs, b.mode, b.mac, b.miimon_ms, b.failovers, b.announcements
    );
    let _ = writeln!(
        o,
        "{:<4} {:<18} {:<10} {:<5} {:<7} {:>12} {:>12} {:>14} {:>14} {:>9} {:>9} {:>9}",
        "port",
        "name",
        "iface",
        "link",
        "role",
        "rx_pkts",
        "tx_pkts",
        "rx_bytes",
        "tx_bytes",
        "rx_miss",
        "rx_err",
        "tx_err"
    );
    for p in &b.ports {
        let c = &p.counters;
        let _ = writeln!(
            o,
            "{:<4} {:<18} {:<10} {:<5} {:<7} {:>12} {:>12} {:>14} {:>14} {:>9} {:>9} {:>9}",
            p.port_id,
            p.name,
            p.iface.as_deref().unwrap_or("-"),
            if p.link_up { "up" } else { "down" },
            if p.active { "active" } else { "backup" },
            c.rx_packets,
            c.tx_packets,
            c.rx_bytes,
            c.tx_bytes,
            c.rx_missed,
            c.rx_errors,
            c.tx_errors
        );
    }
    let _ = writeln!(o, "dispatch:");
    for (k, v) in dispatch_fields(&s.dispatch) {
        let _ = writeln!(o, "  {k:<18} {v}");
    }
    let t = &s.tables;
    let _ = writeln!(
        o,
        "tables: {} connections ({} half-open, capacity {}), {} listeners, {} aged out",
        t.connections, t.half_open, t.capacity, t.listeners, t.aged_out
    );
    o.push_str(&instances(s));
    o
}

fn dispatch_fields(d: &DispatchCounters) -> Vec<(&'static str, u64)> {
    vec![
        ("rx_frames", d.rx_frames),
        ("tx_frames", d.tx_frames),
        ("arp", d.arp),
        ("icmp", d.icmp),
        ("tcp", d.tcp),
        ("udp", d.udp),
        ("ipv6", d.ipv6),
        ("kni_rx", d.kni_rx),
        ("kni_tx", d.kni_tx),
        ("unowned_dropped", d.unowned_dropped),
        ("not_for_us", d.not_for_us),
        ("malformed", d.malformed),
        ("ring_full", d.ring_full),
        ("backup_dropped", d.backup_dropped),
        ("syn_no_listener", d.syn_no_listener),
        ("conn_table_full", d.conn_table_full),
        ("conn_quota_full", d.conn_quota_full),
        ("conn_evicted", d.conn_evicted),
        ("tx_spoofed", d.tx_spoofed),
        ("tx_malformed", d.tx_malformed),
        ("tx_dropped", d.tx_dropped),
    ]
}

/// `ltran show -i`: registered instances, per thread, and departed ones.
pub fn instances(s: &LtranStats) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "instances: {}", s.instances.len());
    for i in &s.instances {
        let _ = writeln!(
            o,
            "  slot {} pid {} uid {} {} ip {}{} threads {} registered {} s ago",
            i.slot,
            i.pid,
            i.uid,
            i.process,
            i.ipv4,
            i.ipv6
                .as_deref()
                .map(|a| format!(" ip6 {a}"))
                .unwrap_or_default(),
            i.threads.len(),
            i.registered_secs
        );
        let _ = writeln!(
            o,
            "    {:<6} {:>12} {:>14} {:>12} {:>14} {:>8} {:>8} {:>6} {:>7} {:>7}",
            "thread",
            "rx_pkts",
            "rx_bytes",
            "tx_pkts",
            "tx_bytes",
            "rx_drop",
            "tx_drop",
            "conns",
            "rx_ring",
            "tx_ring"
        );
        for (t, c) in i.threads.iter().enumerate() {
            let _ = writeln!(
                o,
                "    {:<6} {:>12} {:>14} {:>12} {:>14} {:>8} {:>8} {:>6} {:>7} {:>7}",
                t,
                c.rx_packets,
                c.rx_bytes,
                c.tx_packets,
                c.tx_bytes,
                c.rx_dropped,
                c.tx_dropped,
                c.connections,
                c.rx_ring_used,
                c.tx_ring_used
            );
        }
    }
    if !s.departed.is_empty() {
        let _ = writeln!(o, "departed:");
        for d in &s.departed {
            let _ = writeln!(
                o,
                "  pid {} ip {}: {}; {} mbufs reclaimed, {} connections removed",
                d.pid, d.ipv4, d.reason, d.mbufs_reclaimed, d.connections_removed
            );
        }
    }
    o
}

/// `ltran show -b`: receive bursts by size.
pub fn burst(s: &LtranStats) -> String {
    const LABELS: [&str; 7] = ["0", "1", "2-3", "4-7", "8-15", "16-31", "32+"];
    let total: u64 = s.rx_burst_histogram.iter().sum();
    let mut o = String::from("rx burst size    polls        share\n");
    for (label, n) in LABELS.iter().zip(&s.rx_burst_histogram) {
        let share = if total > 0 {
            *n as f64 * 100.0 / total as f64
        } else {
            0.0
        };
        let _ = writeln!(o, "{label:<16} {n:<12} {share:5.1}%");
    }
    o
}

/// `ltran show -l`: dispatch latency.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    /// Frames measured.
    pub samples: u64,
    /// Mean cycles from a burst's arrival to its frame's enqueue, in ns.
    pub mean_ns: f64,
    /// Largest per-frame share of a burst, in ns.
    pub max_ns: f64,
}

impl Latency {
    /// From ltran's cycle counters.
    pub fn of(s: &LtranStats) -> Latency {
        let l = &s.latency;
        let ns = |cycles: f64| {
            if l.tsc_hz == 0 {
                0.0
            } else {
                cycles * 1e9 / l.tsc_hz as f64
            }
        };
        Latency {
            samples: l.samples,
            mean_ns: ns(l.dispatch_cycles_total as f64 / l.samples.max(1) as f64),
            max_ns: ns(l.dispatch_cycles_max as f64),
        }
    }
}

/// The latency table.
pub fn latency(l: &Latency) -> String {
    format!(
        "dispatch latency (arrival to instance ring): {} frames, mean {:.0} ns, max {:.0} ns\n",
        l.samples, l.mean_ns, l.max_ns
    )
}

/// `ltran show -r`: per-second rates between two samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LtranRates {
    /// Seconds between the samples.
    pub interval_secs: f64,
    /// Dispatch counters per second.
    pub dispatch: Vec<(String, f64)>,
    /// Per port: (name, rx pps, tx pps, rx bit/s, tx bit/s).
    pub ports: Vec<(String, f64, f64, f64, f64)>,
    /// Per instance: (ipv4, rx pps, tx pps).
    pub instances: Vec<(String, f64, f64)>,
}

impl LtranRates {
    /// The rates from `a` to `b`.
    pub fn between(a: &LtranStats, b: &LtranStats, interval: Duration) -> Self {
        let secs = interval.as_secs_f64().max(1e-9);
        let r = |x: u64, y: u64| (if y >= x { y - x } else { y }) as f64 / secs;
        let da = dispatch_fields(&a.dispatch);
        let dispatch = dispatch_fields(&b.dispatch)
            .into_iter()
            .zip(da)
            .map(|((k, y), (_, x))| (k.to_owned(), r(x, y)))
            .collect();
        let ports = b
            .bond
            .ports
            .iter()
            .map(|p| {
                let q = a.bond.ports.iter().find(|q| q.port_id == p.port_id);
                let (pc, qc) = (&p.counters, q.map(|q| q.counters).unwrap_or_default());
                (
                    p.name.clone(),
                    r(qc.rx_packets, pc.rx_packets),
                    r(qc.tx_packets, pc.tx_packets),
                    r(qc.rx_bytes, pc.rx_bytes) * 8.0,
                    r(qc.tx_bytes, pc.tx_bytes) * 8.0,
                )
            })
            .collect();
        let sum = |i: &gazelle_ctl_proto::InstanceInfo| {
            i.threads
                .iter()
                .fold((0, 0), |(rx, tx), t| (rx + t.rx_packets, tx + t.tx_packets))
        };
        let instances = b
            .instances
            .iter()
            .map(|i| {
                let (rx, tx) = sum(i);
                let (prx, ptx) = a
                    .instances
                    .iter()
                    .find(|j| j.slot == i.slot && j.pid == i.pid)
                    .map(sum)
                    .unwrap_or((0, 0));
                (i.ipv4.clone(), r(prx, rx), r(ptx, tx))
            })
            .collect();
        Self {
            interval_secs: secs,
            dispatch,
            ports,
            instances,
        }
    }
}

/// The rates table.
pub fn rates(r: &LtranRates) -> String {
    let mut o = format!("rates over {:.1} s\n", r.interval_secs);
    for (name, rx, tx, rxb, txb) in &r.ports {
        let _ = writeln!(
            o,
            "port {name}: rx {rx:.0} pkt/s {:.1} Mbit/s, tx {tx:.0} pkt/s {:.1} Mbit/s",
            rxb / 1e6,
            txb / 1e6
        );
    }
    for (ip, rx, tx) in &r.instances {
        let _ = writeln!(o, "instance {ip}: rx {rx:.0} pkt/s, tx {tx:.0} pkt/s");
    }
    for (k, v) in &r.dispatch {
        if *v > 0.0 {
            let _ = writeln!(o, "  {k:<18} {v:.0}/s");
        }
    }
    o
}
