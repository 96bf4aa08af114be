//! Prometheus `/metrics`: every counter of ltran and of each lstack, the
//! supervisor's process states and the host's facts, in the text
//! exposition format (`prometheus-client`), asked of the daemons at scrape
//! time.
//!
//! The counters of a statistics struct are taken field by field from its
//! serialised form, so a counter added to gazelle-ctl-proto shows up here
//! without a change (`gazelle_lstack_thread_rx_packets_total{instance,
//! thread}`, `gazelle_ltran_dispatch_total{counter}`,
//! `gazelle_lstack_drops_total{instance, thread, reason}`...). Fields that
//! are levels rather than counts are gauges (see [`GAUGES`]).
//!
//! Who may scrape is [`MetricsAccess`]: by default loopback clients and
//! holders of an API token.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use appliance::api::{Request as ApiRequest, Response as ApiResponse};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use gazelle_ctl_proto::{Request as CtlRequest, Response as CtlResponse};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::guard::{bearer, client_ip};
use crate::problem::Problem;
use crate::{AppState, MetricsAccess};

/// Fields of the statistics that are levels, not counts.
pub const GAUGES: &[&str] = &[
    "half_open",
    "rx_ring_used",
    "tx_ring_used",
    "connections",
    "tcp_connections",
    "mbufs_available",
    "capacity",
    "listeners",
    "uptime_secs",
    "registered_secs",
];

type Labels = Vec<(String, String)>;
/// A gauge that holds a float (load averages, latencies).
type FloatGauge = Gauge<f64, AtomicU64>;

/// Families by name, filled as the daemons' answers are read, then
/// registered all at once.
#[derive(Default)]
struct Builder {
    counters: BTreeMap<String, (String, Family<Labels, Counter>)>,
    gauges: BTreeMap<String, (String, Family<Labels, FloatGauge>)>,
    /// Metrics without labels (a family would print `name{} value`).
    plain_counters: BTreeMap<String, (String, Counter)>,
    plain_gauges: BTreeMap<String, (String, FloatGauge)>,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl Builder {
    fn counter(&mut self, name: &str, help: &str, labels: &Labels, value: u64) {
        if labels.is_empty() {
            let (_, c) = self
                .plain_counters
                .entry(name.to_owned())
                .or_insert_with(|| (help.to_owned(), Counter::default()));
            c.inc_by(value);
            return;
        }
        let (_, family) = self
            .counters
            .entry(name.to_owned())
            .or_insert_with(|| (help.to_owned(), Family::default()));
        family.get_or_create(labels).inc_by(value);
    }

    fn gauge(&mut self, name: &str, help: &str, labels: &Labels, value: f64) {
        if labels.is_empty() {
            let (_, g) = self
                .plain_gauges
                .entry(name.to_owned())
                .or_insert_with(|| (help.to_owned(), FloatGauge::default()));
            g.set(value);
            return;
        }
        let (_, family) = self
            .gauges
            .entry(name.to_owned())
            .or_insert_with(|| (help.to_owned(), Family::default()));
        family.get_or_create(labels).set(value);
    }

    /// Every number of a serialised struct, as `<prefix>_<field>`, counters
    /// unless named in [`GAUGES`]; maps of counters (drops by reason) get
    /// their key as the `reason` label.
    fn fields(&mut self, prefix: &str, help: &str, labels: &Labels, value: &serde_json::Value) {
        let Some(object) = value.as_object() else {
            return;
        };
        for (key, v) in object {
            let name = format!("{prefix}_{key}");
            if let Some(n) = v.as_u64() {
                if GAUGES.contains(&key.as_str()) {
                    self.gauge(&name, help, labels, n as f64);
                } else {
                    self.counter(&name, help, labels, n);
                }
            } else if let Some(map) = v.as_object() {
                if map.values().all(serde_json::Value::is_u64) {
                    for (reason, n) in map {
                        let mut l = labels.clone();
                        l.push(("reason".into(), reason.clone()));
                        self.counter(&name, help, &l, n.as_u64().unwrap_or(0));
                    }
                }
            }
        }
    }

    fn finish(self) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::with_prefix("gazelle");
        for (name, (help, family)) in self.counters {
            registry.register(name, help, family);
        }
        for (name, (help, family)) in self.gauges {
            registry.register(name, help, family);
        }
        for (name, (help, metric)) in self.plain_counters {
            registry.register(name, help, metric);
        }
        for (name, (help, metric)) in self.plain_gauges {
            registry.register(name, help, metric);
        }
        let mut out = String::new();
        encode(&mut out, &registry)?;
        Ok(out)
    }
}

async fn collect(state: &AppState) -> Builder {
    let mut b = Builder::default();
    let none = Labels::new();
    match state.daemons.ltran_stats().await {
        Ok(s) => {
            b.gauge(
                "ltran_up",
                "ltran answers on its control socket",
                &none,
                1.0,
            );
            b.gauge(
                "ltran_uptime_seconds",
                "Seconds since ltran started",
                &none,
                s.uptime_secs as f64,
            );
            for p in &s.bond.ports {
                let l = labels(&[("port", &p.port_id.to_string()), ("name", &p.name)]);
                b.gauge(
                    "ltran_port_link_up",
                    "Link of a bond port (1 up)",
                    &l,
                    f64::from(u8::from(p.link_up)),
                );
                b.gauge(
                    "ltran_port_active",
                    "The bond port carrying traffic (1)",
                    &l,
                    f64::from(u8::from(p.active)),
                );
                b.fields(
                    "ltran_port",
                    "Counters of a bond port",
                    &l,
                    &serde_json::to_value(p.counters).unwrap_or_default(),
                );
            }
            b.counter(
                "ltran_bond_failovers",
                "Times traffic moved to another bond port",
                &none,
                s.bond.failovers,
            );
            b.counter(
                "ltran_bond_announcements",
                "Gratuitous ARPs and unsolicited NAs sent",
                &none,
                s.bond.announcements,
            );
            for (counter, n) in s.dispatch.entries() {
                b.counter(
                    "ltran_dispatch",
                    "What ltran's dispatcher did with frames, by counter",
                    &labels(&[("counter", counter)]),
                    n,
                );
            }
            b.fields(
                "ltran_table",
                "ltran's connection and listen tables",
                &none,
                &serde_json::to_value(&s.tables).unwrap_or_default(),
            );
            const BURSTS: [&str; 7] = ["0", "1", "2-3", "4-7", "8-15", "16-31", "32+"];
            for (size, n) in BURSTS.iter().zip(&s.rx_burst_histogram) {
                b.counter(
                    "ltran_rx_bursts",
                    "Receive polls by burst size",
                    &labels(&[("size", size)]),
                    *n,
                );
            }
            b.fields(
                "ltran_latency",
                "ltran's dispatch latency, TSC cycles",
                &none,
                &serde_json::to_value(&s.latency).unwrap_or_default(),
            );
            for i in &s.instances {
                for (t, c) in i.threads.iter().enumerate() {
                    let l = labels(&[
                        ("instance", &i.ipv4),
                        ("process", &i.process),
                        ("thread", &t.to_string()),
                    ]);
                    b.fields(
                        "ltran_instance",
                        "Ring counters of an instance thread, as ltran sees them",
                        &l,
                        &serde_json::to_value(c).unwrap_or_default(),
                    );
                }
            }
            b.gauge(
                "ltran_instances",
                "Registered instances",
                &none,
                s.instances.len() as f64,
            );
        }
        Err(_) => b.gauge(
            "ltran_up",
            "ltran answers on its control socket",
            &none,
            0.0,
        ),
    }
    for lstack in state.daemons.lstacks() {
        let ip = lstack.ip.to_string();
        let l = labels(&[("instance", &ip)]);
        let Ok(CtlResponse::LstackStats(s)) = state
            .daemons
            .lstack(lstack.ip, CtlRequest::LstackStats)
            .await
        else {
            b.gauge(
                "lstack_up",
                "The lstack answers on its control socket",
                &l,
                0.0,
            );
            continue;
        };
        b.gauge(
            "lstack_up",
            "The lstack answers on its control socket",
            &l,
            1.0,
        );
        b.gauge(
            "lstack_uptime_seconds",
            "Seconds since the stack started",
            &l,
            s.uptime_secs as f64,
        );
        b.gauge(
            "lstack_tcp_connections",
            "TCP connections alive",
            &l,
            s.tcp_connections as f64,
        );
        b.gauge(
            "lstack_mbufs_available",
            "Free mbufs in the stack's pool",
            &l,
            s.mbufs_available as f64,
        );
        for (reason, n) in &s.kernel_sockets {
            let mut with_reason = l.clone();
            with_reason.push(("reason".into(), reason.clone()));
            b.counter(
                "lstack_kernel_sockets",
                "Sockets the process kept on the kernel, by reason",
                &with_reason,
                *n,
            );
        }
        if let Some(k) = &s.kernel_path {
            for (counter, n) in &k.helper {
                let mut with_counter = l.clone();
                with_counter.push(("counter".into(), counter.clone()));
                b.counter(
                    "lstack_kernel_path_helper",
                    "Packets the kernel side's eBPF helper passed or dropped, by counter",
                    &with_counter,
                    *n,
                );
            }
            for (proto, ports) in [("tcp", &k.owned_tcp_ports), ("udp", &k.owned_udp_ports)] {
                let mut with_proto = l.clone();
                with_proto.push(("proto".into(), proto.into()));
                b.gauge(
                    "lstack_kernel_path_owned_ports",
                    "Ports of the shared address that lstack owns (the rest are the kernel's)",
                    &with_proto,
                    ports.len() as f64,
                );
            }
        }
        for (option, n) in &s.unhonoured_options {
            let mut with_option = l.clone();
            with_option.push(("option".into(), option.clone()));
            b.counter(
                "lstack_unhonoured_socket_options",
                "Socket options the application set that lstack does not honour, by option",
                &with_option,
                *n,
            );
        }
        b.fields(
            "lstack_port",
            "Counters of the lstack's DPDK port",
            &l,
            &serde_json::to_value(s.port).unwrap_or_default(),
        );
        for (t, c) in s.threads.iter().enumerate() {
            let lt = labels(&[("instance", &ip), ("thread", &t.to_string())]);
            b.fields(
                "lstack_thread",
                "Counters of a stack thread (drops by reason)",
                &lt,
                &serde_json::to_value(c).unwrap_or_default(),
            );
        }
        if let Ok(CtlResponse::LstackSnmp(snmp)) = state
            .daemons
            .lstack(lstack.ip, CtlRequest::LstackSnmp)
            .await
        {
            for (group, entries) in snmp.total.sections() {
                for (counter, n) in entries {
                    b.counter(
                        "lstack_snmp",
                        "MIB-2 counters of all stack threads",
                        &labels(&[("instance", &ip), ("group", group), ("counter", counter)]),
                        n,
                    );
                }
            }
        }
        if let Ok(CtlResponse::LstackLatency(lat)) = state
            .daemons
            .lstack(lstack.ip, CtlRequest::LstackLatency)
            .await
        {
            b.counter(
                "lstack_rx_latency_reads",
                "Reads whose receive latency was measured",
                &l,
                lat.total.count,
            );
            b.counter(
                "lstack_rx_latency_ns_sum",
                "Sum of receive latencies, ns",
                &l,
                lat.total.sum_ns,
            );
            b.gauge(
                "lstack_rx_latency_p99_ns",
                "99th percentile of the receive latency, ns",
                &l,
                lat.total.p99_ns as f64,
            );
        }
    }
    match state.daemons.appliance(ApiRequest::Status, false).await {
        Ok(ApiResponse::Status {
            processes, pending, ..
        }) => {
            b.gauge(
                "appliance_up",
                "applianced answers on its control socket",
                &none,
                1.0,
            );
            b.gauge(
                "appliance_change_pending",
                "A config change waits for confirmation (1)",
                &none,
                f64::from(u8::from(pending.is_some())),
            );
            for p in &processes {
                for state_name in ["starting", "running", "backoff", "failed", "stopped"] {
                    let l = labels(&[("process", &p.name), ("state", state_name)]);
                    let on = p.state.to_string() == state_name;
                    b.gauge(
                        "appliance_process_state",
                        "Supervised process state (1 for the current one)",
                        &l,
                        f64::from(u8::from(on)),
                    );
                }
                b.counter(
                    "appliance_process_restarts",
                    "Restarts of a supervised process",
                    &labels(&[("process", &p.name)]),
                    u64::from(p.restarts),
                );
            }
        }
        _ => b.gauge(
            "appliance_up",
            "applianced answers on its control socket",
            &none,
            0.0,
        ),
    }
    if let Ok(ApiResponse::Host(h)) = state.daemons.appliance(ApiRequest::Host, false).await {
        b.gauge("host_cpus", "CPUs", &none, h.cpu_count as f64);
        b.gauge(
            "host_numa_nodes",
            "NUMA nodes",
            &none,
            h.numa_nodes.len() as f64,
        );
        b.gauge(
            "host_memory_total_bytes",
            "Memory",
            &none,
            h.memory.total_bytes as f64,
        );
        b.gauge(
            "host_memory_available_bytes",
            "Memory available",
            &none,
            h.memory.available_bytes as f64,
        );
        for (period, v) in [
            ("1", h.load_average.one),
            ("5", h.load_average.five),
            ("15", h.load_average.fifteen),
        ] {
            b.gauge(
                "host_load_average",
                "Load average",
                &labels(&[("minutes", period)]),
                v,
            );
        }
        b.gauge(
            "host_uptime_seconds",
            "Seconds since boot",
            &none,
            h.uptime_secs as f64,
        );
        for pool in &h.hugepages.pools {
            let node = pool
                .node
                .map_or_else(|| "all".to_owned(), |n| n.to_string());
            let l = labels(&[("size_kb", &pool.size_kb.to_string()), ("node", &node)]);
            b.gauge(
                "host_hugepages_total",
                "Hugepages reserved",
                &l,
                pool.total as f64,
            );
            b.gauge(
                "host_hugepages_free",
                "Hugepages free",
                &l,
                pool.free as f64,
            );
        }
    }
    b
}

/// `GET /metrics`.
pub async fn serve(State(state): State<AppState>, request: Request) -> Response {
    let token_ok =
        matches!(bearer(request.headers()), Some(Ok(t)) if state.auth.token(t).is_some());
    let loopback = client_ip(&request).is_some_and(|ip| ip.is_loopback());
    let allowed = match state.metrics_access {
        MetricsAccess::Open => true,
        MetricsAccess::Loopback => loopback || token_ok,
        MetricsAccess::Token => token_ok,
    };
    if !allowed {
        return Problem::unauthorized(
            "/metrics answers loopback clients and API tokens (Authorization: Bearer <token>); \
             see --metrics",
        )
        .into_response();
    }
    match collect(&state).await.finish() {
        Ok(text) => {
            let mut response = text.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        Err(e) => Problem::internal(format!("encoding the metrics: {e}")).into_response(),
    }
}
