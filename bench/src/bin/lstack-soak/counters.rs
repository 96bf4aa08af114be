//! Counters read before and after a soak, to say where frames were lost:
//! the lstack's own (over its control socket, what `gazellectl lstack show`
//! and `-s` print), and the peer kernel's (`/proc/net/snmp`, `/proc/net/netstat`
//! and `ip -s link`, read inside the peer's namespace), the root
//! namespace's veth end, and the machine's softnet backlog drops.

use std::{collections::BTreeMap, path::Path, process::Command, time::Duration};

use anyhow::{bail, Context, Result};
use gazelle_ctl_proto::{client, LstackSnmp, LstackStats, Request, Response, Snmp};
use netns_testbed::{run_checked, Topology};
use serde::Serialize;

/// The peer kernel's MIB counters the report always shows, by
/// `Group.Name`: its drops, errors and retransmissions.
pub const PEER_MIB: &[&str] = &[
    "Ip.InDiscards",
    "Ip.OutDiscards",
    "Ip.InHdrErrors",
    "Ip.InAddrErrors",
    "Tcp.InSegs",
    "Tcp.OutSegs",
    "Tcp.RetransSegs",
    "Tcp.InErrs",
    "Tcp.OutRsts",
    "Tcp.EstabResets",
    "Udp.InDatagrams",
    "Udp.OutDatagrams",
    "Udp.InErrors",
    "Udp.RcvbufErrors",
    "Udp.SndbufErrors",
    "Udp.NoPorts",
    "Udp.InCsumErrors",
    "TcpExt.ListenDrops",
    "TcpExt.ListenOverflows",
    "TcpExt.TCPBacklogDrop",
    "TcpExt.PruneCalled",
    "TcpExt.RcvPruned",
    "TcpExt.OfoPruned",
    "TcpExt.TCPRcvQDrop",
    "TcpExt.TCPOFODrop",
    "TcpExt.TCPZeroWindowDrop",
    "TcpExt.TCPTimeouts",
    "TcpExt.TCPLossProbes",
    "TcpExt.TCPFastRetrans",
    "TcpExt.TCPSlowStartRetrans",
    "TcpExt.TCPLostRetransmit",
    "TcpExt.TCPSpuriousRTOs",
    "TcpExt.TCPRetransFail",
    "TcpExt.TCPAbortOnData",
    "TcpExt.TCPAbortOnTimeout",
    "TcpExt.TCPMemoryPressures",
];

/// Words in a MIB counter's name that make it worth showing when it
/// changed, though it is not in [`PEER_MIB`].
pub const LOSS_WORDS: &[&str] = &[
    "Drop", "Prune", "Discard", "Err", "Retrans", "Fail", "Overflow", "Abort", "Timeout", "Loss",
    "Lost",
];

/// An interface's counters (`ip -s link`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkCounters {
    /// Frames received.
    pub rx_packets: u64,
    /// Frames dropped on receive.
    pub rx_dropped: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Frames dropped on transmit (for a veth: the other end's backlog
    /// was full).
    pub tx_dropped: u64,
    /// Transmit errors.
    pub tx_errors: u64,
}

impl LinkCounters {
    /// What changed between `earlier` and `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            rx_packets: self.rx_packets.saturating_sub(earlier.rx_packets),
            rx_dropped: self.rx_dropped.saturating_sub(earlier.rx_dropped),
            rx_errors: self.rx_errors.saturating_sub(earlier.rx_errors),
            tx_packets: self.tx_packets.saturating_sub(earlier.tx_packets),
            tx_dropped: self.tx_dropped.saturating_sub(earlier.tx_dropped),
            tx_errors: self.tx_errors.saturating_sub(earlier.tx_errors),
        }
    }
}

/// The kernel's counters at one moment.
#[derive(Debug, Clone, Default)]
pub struct KernelSnapshot {
    /// The peer namespace's MIB counters, by `Group.Name`.
    pub peer_mib: BTreeMap<String, i64>,
    /// The peer's veth end, in its namespace.
    pub peer_link: LinkCounters,
    /// The stack's veth end, in the root namespace (the af_packet port's
    /// interface).
    pub host_link: LinkCounters,
    /// Frames dropped at full per-CPU input backlogs, whole machine
    /// (`/proc/net/softnet_stat`; not per namespace).
    pub softnet_dropped: u64,
}

impl KernelSnapshot {
    /// Reads everything now.
    pub fn read(topo: &Topology) -> Result<Self> {
        let mib = topo
            .run(["cat", "/proc/net/snmp", "/proc/net/netstat"])
            .context("reading the peer namespace's /proc/net/snmp and netstat")?;
        let peer_link = topo
            .run(["ip", "-s", "-j", "link", "show", "dev", &topo.peer_if])
            .context("reading the peer's veth counters")?;
        let host_link = run_checked(Command::new("ip").args([
            "-s",
            "-j",
            "link",
            "show",
            "dev",
            &topo.host_if,
        ]))
        .context("reading the stack's veth counters")?;
        let softnet = std::fs::read_to_string("/proc/net/softnet_stat")
            .context("reading /proc/net/softnet_stat")?;
        Ok(Self {
            peer_mib: parse_mib(&String::from_utf8_lossy(&mib.stdout)),
            peer_link: parse_link(&peer_link.stdout)?,
            host_link: parse_link(&host_link.stdout)?,
            softnet_dropped: parse_softnet_dropped(&softnet)?,
        })
    }

    /// The peer MIB counters of the report ([`PEER_MIB`], then every other
    /// loss-related one that changed), as differences since `earlier`.
    pub fn mib_since(&self, earlier: &Self) -> BTreeMap<String, i64> {
        let delta = |k: &str| {
            self.peer_mib.get(k).copied().unwrap_or(0)
                - earlier.peer_mib.get(k).copied().unwrap_or(0)
        };
        let mut out: BTreeMap<String, i64> =
            PEER_MIB.iter().map(|&k| (k.to_owned(), delta(k))).collect();
        for k in self.peer_mib.keys() {
            let name = k.split_once('.').map_or(k.as_str(), |(_, n)| n);
            if !out.contains_key(k) && LOSS_WORDS.iter().any(|w| name.contains(w)) {
                let d = delta(k);
                if d != 0 {
                    out.insert(k.clone(), d);
                }
            }
        }
        out
    }
}

/// `/proc/net/snmp` and `/proc/net/netstat`: pairs of lines `Group: names`
/// and `Group: values`, as `Group.Name` -> value.
pub fn parse_mib(text: &str) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let (Some((group, names)), Some((group2, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        if group != group2 {
            continue;
        }
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = v.parse() {
                out.insert(format!("{group}.{n}"), v);
            }
        }
    }
    out
}

/// The counters in `ip -s -j link show dev X` output.
pub fn parse_link(json: &[u8]) -> Result<LinkCounters> {
    let v: serde_json::Value =
        serde_json::from_slice(json).context("`ip -j link` printed no JSON")?;
    let stats = &v[0]["stats64"];
    let get = |dir: &str, name: &str| -> Result<u64> {
        stats[dir][name]
            .as_u64()
            .with_context(|| format!("no stats64.{dir}.{name} in `ip -s -j link` output: {v}"))
    };
    Ok(LinkCounters {
        rx_packets: get("rx", "packets")?,
        rx_dropped: get("rx", "dropped")?,
        rx_errors: get("rx", "errors")?,
        tx_packets: get("tx", "packets")?,
        tx_dropped: get("tx", "dropped")?,
        tx_errors: get("tx", "errors")?,
    })
}

/// The sum of the `dropped` column (the second, hexadecimal) of
/// `/proc/net/softnet_stat` over all CPUs.
pub fn parse_softnet_dropped(text: &str) -> Result<u64> {
    let mut sum = 0;
    for line in text.lines() {
        let Some(hex) = line.split_whitespace().nth(1) else {
            bail!("unreadable /proc/net/softnet_stat line: {line:?}");
        };
        sum += u64::from_str_radix(hex, 16)
            .with_context(|| format!("unreadable /proc/net/softnet_stat line: {line:?}"))?;
    }
    Ok(sum)
}

/// The lstack's counters, from its control socket at `socket`.
pub fn lstack_stats(socket: &Path) -> Result<LstackStats> {
    match client::request(
        socket,
        "lstack",
        Request::LstackStats,
        Duration::from_secs(5),
    )? {
        Response::LstackStats(s) => Ok(s),
        other => bail!("lstack answered LstackStats with {other:?}"),
    }
}

/// The lstack's MIB-2 counters, all threads added up, from its control
/// socket at `socket`.
pub fn lstack_snmp(socket: &Path) -> Result<Snmp> {
    match client::request(
        socket,
        "lstack",
        Request::LstackSnmp,
        Duration::from_secs(5),
    )? {
        Response::LstackSnmp(s) => Ok(LstackSnmp::with_total(s).total),
        other => bail!("lstack answered LstackSnmp with {other:?}"),
    }
}

/// Every counter of `after` minus `before`, by `Group.Name`.
pub fn snmp_since(before: &Snmp, after: &Snmp) -> BTreeMap<String, u64> {
    let before: BTreeMap<String, u64> = flatten(before).collect();
    flatten(after)
        .map(|(k, v)| {
            let d = v.saturating_sub(before.get(&k).copied().unwrap_or(0));
            (k, d)
        })
        .collect()
}

fn flatten(s: &Snmp) -> impl Iterator<Item = (String, u64)> {
    s.sections().into_iter().flat_map(|(group, entries)| {
        entries
            .into_iter()
            .map(move |(name, v)| (format!("{group}.{name}"), v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNMP: &str = "\
Ip: Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams InUnknownProtos InDiscards
Ip: 1 64 100 0 0 0 0 3
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 200 0 0 0 200 5000 6000 42 0 1 0
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 10 0 2 10 1 0 0 0 0
TcpExt: SyncookiesSent TCPBacklogDrop TCPOFODrop TCPSackMerged TCPRcvCollapsed
TcpExt: 0 5 7 9 11
";

    #[test]
    fn mib_pairs_become_group_dot_name() {
        let m = parse_mib(SNMP);
        assert_eq!(m["Tcp.RetransSegs"], 42);
        assert_eq!(m["Tcp.MaxConn"], -1);
        assert_eq!(m["Udp.RcvbufErrors"], 1);
        assert_eq!(m["TcpExt.TCPBacklogDrop"], 5);
        assert_eq!(m["Ip.InDiscards"], 3);
    }

    #[test]
    fn mib_differences_show_the_fixed_list_and_changed_losses() {
        let before = KernelSnapshot {
            peer_mib: parse_mib(SNMP),
            ..KernelSnapshot::default()
        };
        let after = KernelSnapshot {
            peer_mib: parse_mib(
                &SNMP
                    .replace("5000 6000 42", "9000 9900 50")
                    .replace("0 5 7 9 11", "0 5 7 19 21"),
            ),
            ..KernelSnapshot::default()
        };
        let d = after.mib_since(&before);
        for k in PEER_MIB {
            assert!(d.contains_key(*k), "{k} missing");
        }
        assert_eq!(d["Tcp.RetransSegs"], 8);
        assert_eq!(d["Tcp.InSegs"], 4000);
        assert_eq!(d["TcpExt.TCPBacklogDrop"], 0);
        // Changed, but not a loss counter: left out.
        assert!(!d.contains_key("TcpExt.TCPSackMerged"));
        assert!(!d.contains_key("TcpExt.TCPRcvCollapsed"));
    }

    #[test]
    fn link_counters_come_from_stats64() {
        let json = br#"[{"ifindex":1,"ifname":"v","stats64":{"rx":{"bytes":9,"packets":3,"errors":1,"dropped":2,"over_errors":0,"multicast":0},"tx":{"bytes":8,"packets":4,"errors":0,"dropped":5,"carrier_errors":0,"collisions":0}}}]"#;
        let l = parse_link(json).unwrap();
        assert_eq!(
            l,
            LinkCounters {
                rx_packets: 3,
                rx_dropped: 2,
                rx_errors: 1,
                tx_packets: 4,
                tx_dropped: 5,
                tx_errors: 0
            }
        );
        assert!(parse_link(b"[]").is_err());
    }

    #[test]
    fn lstack_mib_differences_name_every_counter() {
        let mut before = Snmp::default();
        before.tcp.in_segs = 10;
        let mut after = before;
        after.tcp.in_segs = 25;
        after.udp.in_errors = 2;
        let d = snmp_since(&before, &after);
        assert_eq!(d["Tcp.InSegs"], 15);
        assert_eq!(d["Udp.InErrors"], 2);
        assert_eq!(d["Ip.InHdrErrors"], 0);
        assert!(d.contains_key("TcpExt.ListenOverflows"), "{d:?}");
    }

    #[test]
    fn softnet_drops_add_up_over_cpus() {
        let t = "0d525879 00001cf5 00000002 00000000\n064f8086 00000010 00000001 00000000\n";
        assert_eq!(parse_softnet_dropped(t).unwrap(), 0x1cf5 + 0x10);
        assert!(parse_softnet_dropped("zz\n").is_err());
    }
}
