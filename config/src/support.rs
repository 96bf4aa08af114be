//! What lstack and ltran do with each configuration key: the one place
//! every key is classified.
//!
//! A key is either **implemented** (its value changes what the daemon
//! does), **ours** (an extension gazelle does not have), or **refused**
//! beyond one value: the value lstack or ltran always behaves as is
//! accepted (so gazelle's files that spell out defaults still load), and
//! any other is refused by `validate()` with [`ConfigError::NotImplemented`],
//! which says what to do instead. No key is accepted and then ignored.
//!
//! The tables also render the README's compatibility table
//! ([`markdown`]); a test keeps the README in step with them and checks
//! that every key of the schemas is classified.

use crate::error::ConfigError;

/// How a key is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// gazelle's key, and its value is acted on.
    Implemented,
    /// Our key (gazelle has no such key), acted on.
    Ours,
    /// Only `accepted` is allowed; any other value is refused.
    Refused {
        /// The one value accepted, as written in a file.
        accepted: &'static str,
    },
}

/// One key of a configuration file.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The key as written in the file.
    pub name: &'static str,
    /// How it is treated.
    pub support: Support,
    /// For an implemented key, what it does here where that differs from
    /// gazelle; for a refused one, why and what to do instead.
    pub note: &'static str,
}

const fn implemented(name: &'static str, note: &'static str) -> Key {
    Key {
        name,
        support: Support::Implemented,
        note,
    }
}

const fn ours(name: &'static str, note: &'static str) -> Key {
    Key {
        name,
        support: Support::Ours,
        note,
    }
}

const fn refused(name: &'static str, accepted: &'static str, note: &'static str) -> Key {
    Key {
        name,
        support: Support::Refused { accepted },
        note,
    }
}

/// Every key of `lstack.toml` / `lstack.conf`.
pub const LSTACK: &[Key] = &[
    implemented("dpdk_args", "EAL arguments; `--vdev` adds virtual NICs"),
    implemented("use_ltran", "default 0 (gazelle: 1)"),
    implemented(
        "kni_switch",
        "no rte_kni in DPDK 22.11: a `net_tap` interface `kni` with lstack's MAC and addresses gets what lstack does not own",
    ),
    implemented(
        "flow_bifurcation",
        "as `kni_switch`, over `virtio_user` + vhost-net where `/dev/vhost-net` exists, else `net_tap`; on a `net_af_xdp` port no tap: the kernel keeps the address on the NIC and an XDP program (loaded by DPDK through `xdp_prog=`, maps pinned by name in `/sys/fs/bpf`: one such lstack per host) hands lstack only its own flows",
    ),
    refused(
        "low_power_mode",
        "0",
        "unsupported in gazelle too; idle stack threads sleep on receive interrupts (`stack_interrupt`)",
    ),
    implemented("tcp_conn_count", "most TCP connections; sizes the tables"),
    ours("udp_conn_count", "most UDP sockets; one more gets ENOBUFS"),
    refused(
        "mbuf_count_per_conn",
        "170",
        "a connection's data lives in its socket buffers, sized by SO_RCVBUF/SO_SNDBUF, not in mbufs; remove the key",
    ),
    implemented("mem_cache_num", "per-thread mempool cache (at most 512, DPDK's limit)"),
    implemented("rpc_number", "application requests a stack thread takes per poll loop"),
    implemented("nic_read_number", "frames a stack thread reads from its queue per poll loop"),
    implemented("nic_rxqueue_size", ""),
    implemented("nic_txqueue_size", ""),
    implemented("num_cpus", "one stack thread and NIC queue per CPU"),
    refused(
        "stack_num",
        "0",
        "unpinned stack threads are not implemented; list one CPU per stack thread in `num_cpus`",
    ),
    implemented(
        "app_bind_numa",
        "the application's threads run on the NUMA nodes of the stack CPUs",
    ),
    implemented("app_exclude_cpus", "CPUs taken out of the application's affinity"),
    implemented("main_thread_affinity", ""),
    implemented("stack_thread_mode", "\"run-to-wakeup\" or \"run-to-completion\""),
    implemented(
        "stack_interrupt",
        "default 1 (gazelle: 0): idle threads sleep on receive interrupts; 0 busy-polls a core",
    ),
    refused(
        "send_cache_mode",
        "0",
        "not implemented; writes are sent at the stack thread's next poll (Nagle batches small writes unless TCP_NODELAY is set)",
    ),
    implemented("udp_enable", "0 leaves every UDP socket on the kernel"),
    refused(
        "use_sockmap",
        "0",
        "not implemented; local connections go through the NIC (or use loopback, which stays on the kernel)",
    ),
    implemented(
        "listen_shadow",
        "1 (default; gazelle: 0): every stack thread takes connections of every listener; 0: each listening port's connections are on one stack thread",
    ),
    implemented("host_addr", ""),
    implemented("mask_addr", ""),
    implemented("gateway_addr", ""),
    implemented("host_addr6", "an address with an optional prefix length"),
    implemented(
        "devices",
        "the MAC address of the port lstack opens (with `bond_mode = 1`, of the bond)",
    ),
    implemented("unix_prefix", "prefix of the control sockets, as `gazellectl -u`"),
    implemented(
        "nic_vlan_mode",
        "standalone only (refused with `use_ltran = 1` and with `bond_mode = 1`): frames of other VLANs or untagged are dropped, counted as `not_our_vlan`; the port's VLAN offloads where it has them",
    ),
    implemented(
        "bond_mode",
        "-1 or 1 (active-backup, standalone only: behind ltran use ltran's bond); 4 and 6 are refused",
    ),
    implemented(
        "bond_slave_mac",
        "the two ports, by MAC; `devices` is the bond's MAC, which both take",
    ),
    implemented("bond_miimon", "ms between link checks (DPDK's and the kernel interface's)"),
    refused(
        "tuple_filter",
        "0",
        "not implemented (deprecated upstream); share a NIC through ltran",
    ),
    refused(
        "num_process",
        "1",
        "processes sharing one NIC through NIC filters are not implemented; run them behind ltran",
    ),
    refused("process_idx", "0", "only with `num_process`, which lstack refuses"),
    refused(
        "process_numa",
        "(none)",
        "only with `num_process`, which lstack refuses",
    ),
    implemented(
        "xdp_eth_name",
        "the kernel interface of the `net_af_xdp` port `flow_bifurcation` bifurcates with XDP; must be the `iface=` of a `--vdev net_af_xdp` in `dpdk_args` (derived from it when there is one)",
    ),
];

/// Every key of `ltran.toml` / `ltran.conf`.
pub const LTRAN: &[Key] = &[
    implemented("forward_kit", "only \"dpdk\" exists"),
    implemented("forward_kit_args", "EAL arguments"),
    implemented(
        "kni_switch",
        "a `net_tap` exception port carries what no lstack owns",
    ),
    implemented("dispatch_max_clients", ""),
    implemented("dispatch_subnet", ""),
    implemented("dispatch_subnet_length", "host bits of the subnet"),
    ours(
        "dispatch_subnet6",
        "IPv6 dispatch (gazelle leaves IPv6 to the kernel)",
    ),
    implemented("bond_mode", "1, active-backup"),
    implemented("bond_miimon", ""),
    implemented("bond_ports", ""),
    implemented("bond_macs", ""),
    implemented("bond_mtu", "set on every port of every bond"),
    refused(
        "bond_rx_queue_num",
        "1",
        "gazelle always uses 1 too; spread load with more lstack threads instead",
    ),
    refused(
        "bond_tx_queue_num",
        "1",
        "gazelle always uses 1 too; spread load with more lstack threads instead",
    ),
    implemented(
        "tcp_conn_scan_interval",
        "seconds a closed connection's entry is kept",
    ),
    implemented("unix_prefix", ""),
    implemented("rx_mbuf_pool_size", ""),
    implemented("tx_mbuf_pool_size", ""),
];

/// The entry of `name` in `keys`.
pub fn find(keys: &'static [Key], name: &str) -> Option<&'static Key> {
    keys.iter().find(|k| k.name == name)
}

/// The error for `name = value` when only the table's accepted value is.
///
/// # Panics
/// If `name` is not a refused key of `keys` (a bug caught by the tests).
pub(crate) fn refusal(keys: &'static [Key], name: &'static str, value: String) -> ConfigError {
    let key = find(keys, name).unwrap_or_else(|| panic!("{name} is not classified"));
    let Support::Refused { accepted } = key.support else {
        panic!("{name} is not a refused key")
    };
    ConfigError::NotImplemented {
        field: name,
        value,
        accepted,
        advice: key.note,
    }
}

/// The compatibility table of `keys` as Markdown, for the README.
pub fn markdown(keys: &[Key]) -> String {
    let mut out = String::from("| key | status | notes |\n|---|---|---|\n");
    for k in keys {
        let status = match k.support {
            Support::Implemented => "implemented".to_owned(),
            Support::Ours => "ours".to_owned(),
            Support::Refused { accepted } => format!("refused except `{accepted}`"),
        };
        out.push_str(&format!("| `{}` | {status} | {} |\n", k.name, k.note));
    }
    out
}
