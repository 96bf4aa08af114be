//! `gazellectl ltran show` tables (the `--json` form prints the same values).

use std::fmt::Write as _;

use gazelle_ctl_proto::{BondStatus, LtranLatency, LtranRates, LtranStats};

/// `ltran show`: ports of the bond, dispatch counters, instances.
pub fn overview(s: &LtranStats) -> String {
    let mut o = String::new();
    let b = &s.bond;
    let _ = writeln!(
        o,
        "ltran (pid {}), up {} s; bond mode {} mac {} miimon {} ms, failovers {}, announcements {}",
        s.pid, s.uptime_secs, b.mode, b.mac, b.miimon_ms, b.failovers, b.announcements
    );
    bond_ports(&mut o, b);
    let _ = writeln!(o, "dispatch:");
    for (k, v) in s.dispatch.entries() {
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

/// `ltran show -i`: registered instances, per thread, and departed ones.
pub fn instances(s: &LtranStats) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "instances: {}", s.instances.len());
    for i in &s.instances {
        // Forked workers of one server may share an address (ltran spreads
        // new connections over them): say with whom.
        let sharing: Vec<String> = s
            .instances
            .iter()
            .filter(|j| j.slot != i.slot && j.ipv4 == i.ipv4)
            .map(|j| j.slot.to_string())
            .collect();
        let _ = writeln!(
            o,
            "  slot {} pid {} uid {} {} ip {}{}{} threads {} registered {} s ago",
            i.slot,
            i.pid,
            i.uid,
            i.process,
            i.ipv4,
            i.ipv6
                .as_deref()
                .map(|a| format!(" ip6 {a}"))
                .unwrap_or_default(),
            if sharing.is_empty() {
                String::new()
            } else {
                format!(" (shared with slot {})", sharing.join(", "))
            },
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

/// The latency table.
pub fn latency(l: &LtranLatency) -> String {
    format!(
        "dispatch latency (arrival to instance ring): {} frames, mean {:.0} ns, max {:.0} ns\n",
        l.samples, l.mean_ns, l.max_ns
    )
}

/// The rates table.
pub fn rates(r: &LtranRates) -> String {
    let mut o = format!("rates over {:.1} s\n", r.interval_secs);
    for p in &r.ports {
        let _ = writeln!(
            o,
            "port {}: rx {:.0} pkt/s {:.1} Mbit/s, tx {:.0} pkt/s {:.1} Mbit/s",
            p.name,
            p.rx_pps,
            p.rx_bps / 1e6,
            p.tx_pps,
            p.tx_bps / 1e6
        );
    }
    for i in &r.instances {
        let _ = writeln!(
            o,
            "instance {}: rx {:.0} pkt/s, tx {:.0} pkt/s",
            i.ipv4, i.rx_pps, i.tx_pps
        );
    }
    for c in &r.dispatch {
        if c.per_sec > 0.0 {
            let _ = writeln!(o, "  {:<18} {:.0}/s", c.name, c.per_sec);
        }
    }
    o
}

/// The ports of bond `b`, one row each: link, role and counters (in
/// `ltran show`, and in `lstack show` for lstack's own bond).
pub fn bond_ports(o: &mut String, b: &BondStatus) {
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
}

#[cfg(test)]
mod tests {
    use gazelle_ctl_proto::InstanceInfo;

    use super::*;

    #[test]
    fn instances_sharing_an_address_say_with_whom() {
        let inst = |slot, ipv4: &str| InstanceInfo {
            slot,
            pid: 100 + slot,
            process: "nginx".into(),
            ipv4: ipv4.into(),
            ..Default::default()
        };
        let s = LtranStats {
            instances: vec![
                inst(0, "10.0.0.2"),
                inst(1, "10.0.0.5"),
                inst(2, "10.0.0.5"),
            ],
            ..Default::default()
        };
        let text = instances(&s);
        assert!(
            text.contains("pid 100 uid 0 nginx ip 10.0.0.2 threads"),
            "{text}"
        );
        assert!(
            text.contains("pid 101 uid 0 nginx ip 10.0.0.5 (shared with slot 2) threads"),
            "{text}"
        );
        assert!(
            text.contains("pid 102 uid 0 nginx ip 10.0.0.5 (shared with slot 1) threads"),
            "{text}"
        );
    }
}
