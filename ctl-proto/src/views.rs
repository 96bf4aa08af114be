//! Values derived from the statistics: per-second rates between two
//! samples and ltran's dispatch latency in nanoseconds.
//!
//! `gazellectl` prints them (`lstack show -r`, `ltran show -r`, `ltran
//! show -l`) and the web UI serves and streams them, so both compute them
//! here, the same way.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{DispatchCounters, InstanceInfo, LstackStats, LtranStats, ThreadCounters};

/// Per-second rate of a counter that went from `x` to `y` in `secs`; a
/// counter that went backwards (the process restarted) counts from zero.
fn per_sec(x: u64, y: u64, secs: f64) -> f64 {
    (if y >= x { y - x } else { y }) as f64 / secs
}

/// Per-second rates between two samples of an lstack's counters
/// (`gazellectl lstack show <ip> -r`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LstackRates {
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

impl LstackRates {
    /// The rates from `a` to `b`, taken `interval` apart.
    pub fn between(a: &LstackStats, b: &LstackStats, interval: Duration) -> LstackRates {
        let (ta, tb) = (a.total(), b.total());
        let secs = interval.as_secs_f64().max(1e-9);
        let rate = |f: fn(&ThreadCounters) -> u64| per_sec(f(&ta), f(&tb), secs);
        LstackRates {
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

impl DispatchCounters {
    /// Every counter with its name, in `gazellectl ltran show`'s order.
    pub fn entries(&self) -> Vec<(&'static str, u64)> {
        let d = self;
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
}

/// One dispatch counter's rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CounterRate {
    /// The counter, as in [`DispatchCounters`].
    pub name: String,
    /// Per second.
    pub per_sec: f64,
}

/// One bond port's rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PortRates {
    /// DPDK device name.
    pub name: String,
    /// Frames received per second.
    pub rx_pps: f64,
    /// Frames sent per second.
    pub tx_pps: f64,
    /// Received bits per second.
    pub rx_bps: f64,
    /// Sent bits per second.
    pub tx_bps: f64,
}

/// One registered instance's rates, as ltran sees them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceRates {
    /// The instance's IPv4 address.
    pub ipv4: String,
    /// Frames ltran queued to it per second.
    pub rx_pps: f64,
    /// Frames it sent through ltran per second.
    pub tx_pps: f64,
}

/// `gazellectl ltran show -r`: per-second rates between two samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LtranRates {
    /// Seconds between the samples.
    pub interval_secs: f64,
    /// Dispatch counters per second.
    pub dispatch: Vec<CounterRate>,
    /// Per bond port.
    pub ports: Vec<PortRates>,
    /// Per registered instance.
    pub instances: Vec<InstanceRates>,
}

impl LtranRates {
    /// The rates from `a` to `b`, taken `interval` apart.
    pub fn between(a: &LtranStats, b: &LtranStats, interval: Duration) -> Self {
        let secs = interval.as_secs_f64().max(1e-9);
        let r = |x: u64, y: u64| per_sec(x, y, secs);
        let dispatch = b
            .dispatch
            .entries()
            .into_iter()
            .zip(a.dispatch.entries())
            .map(|((name, y), (_, x))| CounterRate {
                name: name.to_owned(),
                per_sec: r(x, y),
            })
            .collect();
        let ports = b
            .bond
            .ports
            .iter()
            .map(|p| {
                let q = a.bond.ports.iter().find(|q| q.port_id == p.port_id);
                let (pc, qc) = (&p.counters, q.map(|q| q.counters).unwrap_or_default());
                PortRates {
                    name: p.name.clone(),
                    rx_pps: r(qc.rx_packets, pc.rx_packets),
                    tx_pps: r(qc.tx_packets, pc.tx_packets),
                    rx_bps: r(qc.rx_bytes, pc.rx_bytes) * 8.0,
                    tx_bps: r(qc.tx_bytes, pc.tx_bytes) * 8.0,
                }
            })
            .collect();
        let sum = |i: &InstanceInfo| {
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
                InstanceRates {
                    ipv4: i.ipv4.clone(),
                    rx_pps: r(prx, rx),
                    tx_pps: r(ptx, tx),
                }
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

/// `gazellectl ltran show -l`: dispatch latency in nanoseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LtranLatency {
    /// Frames measured.
    pub samples: u64,
    /// Mean cycles from a burst's arrival to its frame's enqueue, in ns.
    pub mean_ns: f64,
    /// Largest per-frame share of a burst, in ns.
    pub max_ns: f64,
}

impl LtranLatency {
    /// From ltran's cycle counters.
    pub fn of(s: &LtranStats) -> LtranLatency {
        let l = &s.latency;
        let ns = |cycles: f64| {
            if l.tsc_hz == 0 {
                0.0
            } else {
                cycles * 1e9 / l.tsc_hz as f64
            }
        };
        LtranLatency {
            samples: l.samples,
            mean_ns: ns(l.dispatch_cycles_total as f64 / l.samples.max(1) as f64),
            max_ns: ns(l.dispatch_cycles_max as f64),
        }
    }
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
        let r = LstackRates::between(
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
        let r = LstackRates::between(
            &sample(1000, 0, 0),
            &sample(10, 0, 0),
            Duration::from_secs(1),
        );
        assert_eq!(r.rx_pps, 20.0);
    }

    #[test]
    fn ltran_rates_name_every_dispatch_counter() {
        let mut a = LtranStats::default();
        let mut b = LtranStats::default();
        a.dispatch.tcp = 10;
        b.dispatch.tcp = 30;
        let r = LtranRates::between(&a, &b, Duration::from_secs(2));
        assert_eq!(
            r.dispatch.len(),
            DispatchCounters::default().entries().len()
        );
        let tcp = r.dispatch.iter().find(|c| c.name == "tcp").unwrap();
        assert_eq!(tcp.per_sec, 10.0);
    }
}
