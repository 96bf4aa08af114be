//! What ltran and its lstack clients say to each other, and what ltran
//! tells `gazellectl`.
//!
//! An lstack with `use_ltran = 1` connects to ltran's control socket, asks
//! [`Request::Hello`](crate::Request::Hello) (ltran's DPDK file prefix, so
//! it can attach as a secondary), then on a second connection
//! [`Request::Register`](crate::Request::Register). That connection stays
//! open for the life of the instance: it carries listen/unlisten events, and
//! its end (or the process's death) is how ltran learns the instance is gone.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::PortCounters;

/// Answer to `Hello`: how to attach to ltran's DPDK memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LtranHello {
    /// ltran's process id.
    pub pid: u32,
    /// The `--file-prefix` of ltran's EAL: secondaries must use the same.
    pub file_prefix: String,
    /// The bond's MAC address, which every lstack uses as its own.
    pub bond_mac: String,
    /// Instances ltran accepts at most (`dispatch_max_clients`).
    pub max_clients: u32,
}

/// `Register`: an lstack asks for its rings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The instance's IPv4 address (`host_addr`).
    pub ipv4: std::net::Ipv4Addr,
    /// Its IPv6 address (`host_addr6`), if any.
    pub ipv6: Option<std::net::Ipv6Addr>,
    /// The MAC it was configured with (`devices`): must be the bond's.
    pub mac: String,
    /// Stack threads, one ring pair each.
    pub threads: u16,
    /// Process name, for `ltran show -i`.
    pub process: String,
}

/// Answer to `Register`: the names of everything the instance may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// The instance's slot in ltran (0-based).
    pub slot: u32,
    /// The owner tag the instance writes into mbufs it allocates
    /// (`dpdk::owner`).
    pub owner_tag: u32,
    /// One pair per stack thread, in thread order.
    pub rings: Vec<RingPair>,
    /// The pool the instance allocates transmit mbufs from.
    pub tx_pool: String,
}

/// The rings of one stack thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingPair {
    /// ltran -> lstack.
    pub rx: String,
    /// lstack -> ltran.
    pub tx: String,
}

/// Everything `gazellectl ltran show` prints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LtranStats {
    /// ltran's process id.
    pub pid: u32,
    /// Seconds since ltran started.
    pub uptime_secs: u64,
    /// The bond and its ports.
    pub bond: BondStatus,
    /// What the dispatcher did with the frames it saw.
    pub dispatch: DispatchCounters,
    /// Receive bursts by size: `[0]` empty polls, then 1, 2-3, 4-7, 8-15,
    /// 16-31, 32+ frames.
    pub rx_burst_histogram: Vec<u64>,
    /// Connection and listen tables.
    pub tables: TableCounters,
    /// Registered instances.
    pub instances: Vec<InstanceInfo>,
    /// The last instances that went away, newest last.
    pub departed: Vec<DepartedInstance>,
    /// Cycles from a frame's arrival at ltran to its enqueue into an
    /// instance ring, and to the instance taking it off the ring.
    pub latency: LatencyStats,
}

/// Active-backup bond state (ltran's, or a standalone lstack's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BondStatus {
    /// `bond_mode` (1: active-backup).
    pub mode: u8,
    /// The bond's MAC.
    pub mac: String,
    /// Link check interval, ms.
    pub miimon_ms: u32,
    /// Index in `ports` of the port carrying traffic, if any link is up.
    pub active: Option<usize>,
    /// Times traffic moved to another port.
    pub failovers: u64,
    /// Gratuitous ARPs (and unsolicited NAs) sent to announce a move.
    pub announcements: u64,
    /// Frames received on a backup port and dropped (active-backup takes
    /// only what arrives on the active port).
    #[serde(default)]
    pub backup_dropped: u64,
    /// The bond's ports.
    pub ports: Vec<BondPort>,
}

/// One port of the bond.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BondPort {
    /// DPDK port id.
    pub port_id: u16,
    /// DPDK device name (`net_af_packet0`, a PCI address...).
    pub name: String,
    /// Kernel interface under a virtual device, when there is one.
    pub iface: Option<String>,
    /// Link up (DPDK's view and, for af_packet/af_xdp ports, the kernel
    /// interface's operstate).
    pub link_up: bool,
    /// Carries traffic now.
    pub active: bool,
    /// The port's own counters.
    pub counters: PortCounters,
}

/// Dispatcher counters (gazelle's arp/icmp/tcp/kni columns and ours).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DispatchCounters {
    /// Frames taken from the active port.
    pub rx_frames: u64,
    /// Frames sent on the active port.
    pub tx_frames: u64,
    /// ARP frames delivered to an instance.
    pub arp: u64,
    /// ICMP (v4) frames delivered.
    pub icmp: u64,
    /// TCP segments delivered.
    pub tcp: u64,
    /// UDP datagrams delivered.
    pub udp: u64,
    /// IPv6 frames delivered (NDP, ICMPv6, TCP, UDP).
    pub ipv6: u64,
    /// Frames handed to the kernel exception interface (the ones it took;
    /// the rest count in `tx_dropped`).
    pub kni_rx: u64,
    /// Frames the kernel sent through the exception interface that left on
    /// the active port (the rest count in `tx_dropped`).
    pub kni_tx: u64,
    /// Frames for an address no instance owns, dropped (no exception path).
    pub unowned_dropped: u64,
    /// Unicast frames for another MAC, dropped.
    pub not_for_us: u64,
    /// Frames too short or malformed to classify, dropped.
    pub malformed: u64,
    /// Frames dropped because the instance's receive ring was full.
    pub ring_full: u64,
    /// Frames received on a backup port, dropped (active-backup).
    pub backup_dropped: u64,
    /// TCP SYNs to a port nobody listens on (passed to the owner, which resets them).
    pub syn_no_listener: u64,
    /// New connections refused because the connection table was full and
    /// held nothing that could be evicted (every instance over its share
    /// holds only established connections).
    pub conn_table_full: u64,
    /// New connections refused because their instance held its share of
    /// the connection table in established connections.
    #[serde(default)]
    pub conn_quota_full: u64,
    /// Connection-table entries (half-open or closed) evicted to make room
    /// for a new connection: an instance's oldest half-open one when it
    /// has its most half-open entries (a SYN flood), or one of an instance
    /// over its share when the table is full.
    #[serde(default)]
    pub conn_evicted: u64,
    /// Frames an instance sent with a source it does not own, dropped
    /// (also looked for inside up to two VLAN tags).
    pub tx_spoofed: u64,
    /// Frames an instance sent that the transmit check cannot read
    /// (truncated, more than two VLAN tags, an ethertype other than ARP,
    /// IPv4 or IPv6), dropped.
    #[serde(default)]
    pub tx_malformed: u64,
    /// Frames dropped because the port would not take them.
    pub tx_dropped: u64,
}

/// Connection/listen table sizes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TableCounters {
    /// TCP connections known.
    pub connections: u64,
    /// Connection table capacity.
    pub capacity: u64,
    /// Listening (address, port) pairs.
    pub listeners: u64,
    /// Entries removed by ageing (handshakes that did not complete in
    /// seconds, closed connections after `tcp_conn_scan_interval`).
    pub aged_out: u64,
    /// Half-open connections (SYN seen, not yet acknowledged by the
    /// remote) in the table now.
    #[serde(default)]
    pub half_open: u64,
}

/// One registered lstack.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceInfo {
    /// ltran's slot.
    pub slot: u32,
    /// Process id (from the socket's peer credentials).
    pub pid: u32,
    /// User id (peer credentials).
    pub uid: u32,
    /// Process name.
    pub process: String,
    /// IPv4 address.
    pub ipv4: String,
    /// IPv6 address, if any.
    pub ipv6: Option<String>,
    /// Seconds since it registered.
    pub registered_secs: u64,
    /// One entry per stack thread.
    pub threads: Vec<InstanceThread>,
}

/// Counters of one instance thread's ring pair.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceThread {
    /// Frames queued to the thread.
    pub rx_packets: u64,
    /// Bytes queued to the thread.
    pub rx_bytes: u64,
    /// Frames taken from the thread's transmit ring.
    pub tx_packets: u64,
    /// Bytes taken from it.
    pub tx_bytes: u64,
    /// Frames dropped: receive ring full.
    pub rx_dropped: u64,
    /// Frames dropped: spoofed source or port refused.
    pub tx_dropped: u64,
    /// TCP connections ltran routes to the thread.
    pub connections: u64,
    /// Frames waiting in the receive ring now.
    pub rx_ring_used: u32,
    /// Frames waiting in the transmit ring now.
    pub tx_ring_used: u32,
}

/// An instance that went away.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DepartedInstance {
    /// Its process id.
    pub pid: u32,
    /// Its IPv4 address.
    pub ipv4: String,
    /// `exited`, `killed by signal N`, `unregistered`...
    pub reason: String,
    /// Mbufs it held when it died, put back into the pools.
    pub mbufs_reclaimed: u64,
    /// Connection-table entries removed.
    pub connections_removed: u64,
}

/// Latency in TSC cycles, with the TSC rate to convert.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LatencyStats {
    /// TSC ticks per second.
    pub tsc_hz: u64,
    /// Frames measured.
    pub samples: u64,
    /// Sum of arrival-to-enqueue cycles.
    pub dispatch_cycles_total: u64,
    /// Largest arrival-to-enqueue cycles.
    pub dispatch_cycles_max: u64,
}

/// Where a listen event applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ListenAddr {
    /// Local address.
    pub ip: IpAddr,
    /// Local port.
    pub port: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_from_an_older_ltran_still_parse() {
        // What an ltran from before the connection-table quotas and the
        // VLAN-aware transmit check sent: no conn_quota_full, conn_evicted,
        // tx_malformed or half_open.
        let mut stats = serde_json::to_value(LtranStats::default()).unwrap();
        for (section, key) in [
            ("dispatch", "conn_quota_full"),
            ("dispatch", "conn_evicted"),
            ("dispatch", "tx_malformed"),
            ("tables", "half_open"),
        ] {
            let removed = stats[section].as_object_mut().unwrap().remove(key);
            assert!(removed.is_some(), "{section}.{key}");
        }
        let parsed: LtranStats = serde_json::from_value(stats).unwrap();
        assert_eq!(parsed, LtranStats::default());
    }
}
