//! The dashboard: the bond and each port's link and rates, ltran's
//! dispatch counters, every instance with its rates, connections and
//! state, drops by reason, the host's CPU, memory and hugepages, and the
//! live charts (drawn by `app.js` from the API's stream of rates).

use std::collections::BTreeMap;

use appliance::hostinfo::HostInfo;
use askama::Template;
use axum::extract::State;
use axum::response::Response;
use gazelle_ctl_proto::{LstackStats, Request, Response as CtlResponse};

use super::{bytes, duration, layout, render, si, Layout, Session};
use crate::api::{edits, machine};
use crate::problem::Json;
use crate::AppState;

/// One bond port.
#[derive(Debug)]
pub struct PortRow {
    name: String,
    iface: String,
    link: &'static str,
    active: bool,
    rx_pps: String,
    tx_pps: String,
    rx_bps: String,
    tx_bps: String,
    rx_packets: u64,
    tx_packets: u64,
    rx_missed: u64,
}

/// One counter with its rate.
#[derive(Debug)]
pub struct CounterRow {
    name: String,
    total: u64,
    rate: String,
}

/// One instance.
#[derive(Debug)]
pub struct InstanceRow {
    name: String,
    state: String,
    address: String,
    rx_pps: String,
    tx_pps: String,
    rx_bps: String,
    tx_bps: String,
    connections: String,
    restarts: u32,
}

/// One hugepage pool.
#[derive(Debug)]
pub struct PoolRow {
    node: String,
    size: String,
    total: u64,
    free: u64,
    used: String,
}

/// The bond in one line.
#[derive(Debug)]
pub struct BondSummary {
    mode: u8,
    mac: String,
    miimon_ms: u32,
    active: String,
    failovers: u64,
    uptime: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Dashboard {
    layout: Layout,
    bond: Option<BondSummary>,
    ltran_unavailable: Option<String>,
    ports: Vec<PortRow>,
    dispatch: Vec<CounterRow>,
    instances: Vec<InstanceRow>,
    drops: Vec<(String, String, u64)>,
    host: Option<HostSummary>,
    pools: Vec<PoolRow>,
}

/// The host in a few numbers.
#[derive(Debug)]
pub struct HostSummary {
    name: String,
    cpus: String,
    load: String,
    memory_used: String,
    memory_total: String,
    uptime: String,
}

fn host_summary(h: &HostInfo) -> HostSummary {
    let used = h
        .memory
        .total_bytes
        .saturating_sub(h.memory.available_bytes);
    HostSummary {
        name: h.hostname.clone().unwrap_or_default(),
        cpus: format!(
            "{} CPUs{}",
            h.cpu_count,
            h.cpu_model
                .as_ref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default()
        ),
        load: format!(
            "{:.2} / {:.2} / {:.2}",
            h.load_average.one, h.load_average.five, h.load_average.fifteen
        ),
        memory_used: format!(
            "{} ({:.0} %)",
            bytes(used),
            100.0 * used as f64 / h.memory.total_bytes.max(1) as f64
        ),
        memory_total: bytes(h.memory.total_bytes),
        uptime: duration(h.uptime_secs),
    }
}

/// `GET /dashboard`.
pub async fn page(State(state): State<AppState>, s: Session) -> Response {
    let layout = layout(&state, &s, "Dashboard").await;
    let sample = state.rates.borrow().clone();
    let ltran = state.daemons.ltran_stats().await;
    let (mut bond, mut ports, mut dispatch, mut ltran_unavailable) =
        (None, Vec::new(), Vec::new(), None);
    match &ltran {
        Ok(l) => {
            let b = &l.bond;
            bond = Some(BondSummary {
                mode: b.mode,
                mac: b.mac.clone(),
                miimon_ms: b.miimon_ms,
                active: b
                    .active
                    .and_then(|i| b.ports.get(i))
                    .map(|p| p.name.clone())
                    .unwrap_or_else(|| "none (no link up)".into()),
                failovers: b.failovers,
                uptime: duration(l.uptime_secs),
            });
            let port_rates = sample.ltran.as_ref().map(|r| &r.ports);
            for p in &b.ports {
                let r = port_rates.and_then(|rs| rs.iter().find(|r| r.name == p.name));
                let rate = |f: fn(&gazelle_ctl_proto::PortRates) -> f64, unit| {
                    si(r.map(f).unwrap_or(0.0), unit)
                };
                ports.push(PortRow {
                    name: p.name.clone(),
                    iface: p.iface.clone().unwrap_or_default(),
                    link: if p.link_up { "up" } else { "down" },
                    active: p.active,
                    rx_pps: rate(|r| r.rx_pps, "pkt/s"),
                    tx_pps: rate(|r| r.tx_pps, "pkt/s"),
                    rx_bps: rate(|r| r.rx_bps, "bit/s"),
                    tx_bps: rate(|r| r.tx_bps, "bit/s"),
                    rx_packets: p.counters.rx_packets,
                    tx_packets: p.counters.tx_packets,
                    rx_missed: p.counters.rx_missed,
                });
            }
            let rates: BTreeMap<&str, f64> = sample
                .ltran
                .as_ref()
                .map(|r| {
                    r.dispatch
                        .iter()
                        .map(|c| (c.name.as_str(), c.per_sec))
                        .collect()
                })
                .unwrap_or_default();
            dispatch = l
                .dispatch
                .entries()
                .into_iter()
                .map(|(name, total)| CounterRow {
                    name: name.to_owned(),
                    total,
                    rate: si(rates.get(name).copied().unwrap_or(0.0), "frames/s"),
                })
                .collect();
        }
        Err(p) => ltran_unavailable = Some(p.detail.clone()),
    }

    // Instances: the config's, their processes, their stacks' rates.
    let mut instances = Vec::new();
    let mut drops = Vec::new();
    if let Ok(Json(list)) = edits::list_instances(State(state.clone())).await {
        for i in list {
            let addr = i.addresses.host_addr.clone().unwrap_or_default();
            let r = sample
                .lstacks
                .iter()
                .find(|r| r.ip.as_deref() == Some(addr.as_str()));
            let rate = |f: fn(&gazelle_ctl_proto::LstackRates) -> f64, unit| {
                r.map(|r| si(f(r), unit)).unwrap_or_else(|| "–".into())
            };
            if let Ok(ip) = addr.parse() {
                if let Ok(CtlResponse::LstackStats(stats)) =
                    state.daemons.lstack(ip, Request::LstackStats).await
                {
                    drops.extend(drops_of(&i.name, &stats));
                }
            }
            instances.push(InstanceRow {
                name: i.name.clone(),
                state: i
                    .process
                    .as_ref()
                    .map(|p| format!("{:?}", p.state).to_lowercase())
                    .unwrap_or_else(|| "not supervised".into()),
                address: addr,
                rx_pps: rate(|r| r.rx_pps, "pkt/s"),
                tx_pps: rate(|r| r.tx_pps, "pkt/s"),
                rx_bps: rate(|r| r.rx_bps, "bit/s"),
                tx_bps: rate(|r| r.tx_bps, "bit/s"),
                connections: r
                    .map(|r| r.tcp_connections.to_string())
                    .unwrap_or_else(|| "–".into()),
                restarts: i.process.as_ref().map(|p| p.restarts).unwrap_or(0),
            });
        }
    }

    let host = machine::host(State(state.clone())).await.ok().map(|j| j.0);
    let pools = host
        .as_ref()
        .map(|h| {
            h.hugepages
                .pools
                .iter()
                .map(|p| PoolRow {
                    node: p
                        .node
                        .map(|n| format!("node {n}"))
                        .unwrap_or_else(|| "all".into()),
                    size: bytes(p.size_kb * 1024),
                    total: p.total,
                    free: p.free,
                    used: bytes(p.total.saturating_sub(p.free) * p.size_kb * 1024),
                })
                .collect()
        })
        .unwrap_or_default();
    render(&Dashboard {
        layout,
        bond,
        ltran_unavailable,
        ports,
        dispatch,
        instances,
        drops,
        host: host.as_ref().map(host_summary),
        pools,
    })
}

/// An lstack's drops by reason, all threads added up.
fn drops_of(name: &str, stats: &LstackStats) -> Vec<(String, String, u64)> {
    let total = stats.total();
    total
        .drops
        .iter()
        .map(|(reason, n)| (name.to_owned(), reason.clone(), *n))
        .collect()
}
