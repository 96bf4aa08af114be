//! The configuration of lstack, the per-application stack (gazelle's
//! `lstack.conf`).
//!
//! [`LstackConfig`] is the one type for it: the same struct is read from TOML
//! (our default, `/etc/gazelle/lstack.toml`) or from gazelle's own syntax
//! (`lstack.conf`), and serialized back to TOML. Key names, defaults and
//! ranges follow gazelle's `lstack_cfg.c`, except where a field's doc says
//! otherwise. Loading checks types per key (serde), then [`LstackConfig::validate`]
//! checks ranges and cross-key rules; the allowed ranges are public in
//! [`limits`].

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::check::{check_one_of, check_range, check_unix_prefix};
use crate::de::{flag, mac_list};
use crate::error::ConfigError;
use crate::format::config_file_api;
use crate::support;
use crate::value::{CpuList, Ipv6Cidr, MacAddr};

/// Where [`LstackConfig::load_from_env`] looks when [`LSTACK_CONF_ENV`] is
/// not set. gazelle's default is `/etc/gazelle/lstack.conf`; ours is TOML.
pub const DEFAULT_LSTACK_CONF_PATH: &str = "/etc/gazelle/lstack.toml";

/// Environment variable naming the lstack configuration file (as in gazelle).
pub const LSTACK_CONF_ENV: &str = "LSTACK_CONF_PATH";

/// Allowed values of the numeric keys, checked by [`LstackConfig::validate`].
pub mod limits {
    use std::ops::RangeInclusive;

    /// `tcp_conn_count`: gazelle's documented maximum is 20000 connections.
    pub const TCP_CONN_COUNT: RangeInclusive<u32> = 1..=20_000;
    /// `udp_conn_count` (ours): each UDP socket holds up to half a MiB of
    /// buffers, so 65535 of them are already 32 GiB.
    pub const UDP_CONN_COUNT: RangeInclusive<u32> = 1..=65_535;
    /// `mbuf_count_per_conn`: gazelle sets no upper bound; 4096 mbufs (8 MiB
    /// of 2 KiB buffers) per connection is far above any sensible setting.
    pub const MBUF_COUNT_PER_CONN: RangeInclusive<u32> = 1..=4096;
    /// `mem_cache_num`, as in gazelle.
    pub const MEM_CACHE_NUM: RangeInclusive<u32> = 16..=1024;
    /// `rpc_number`: RPCs handled per poll loop; ours (gazelle has no bound).
    pub const RPC_NUMBER: RangeInclusive<u32> = 1..=64;
    /// `nic_read_number`: packets read from the NIC per poll loop; ours
    /// (gazelle has no bound; 512 is the largest useful DPDK burst).
    pub const NIC_READ_NUMBER: RangeInclusive<u32> = 1..=512;
    /// `nic_rxqueue_size` and `nic_txqueue_size`, which must also be powers
    /// of two, as in gazelle.
    pub const NIC_QUEUE_SIZE: RangeInclusive<u32> = 512..=8192;
    /// `stack_num`: gazelle allows only 0 or 1 unpinned stack threads.
    pub const STACK_NUM: &[i64] = &[0, 1];
    /// `nic_vlan_mode`: -1 means no VLAN, otherwise the VLAN id.
    pub const NIC_VLAN_MODE: RangeInclusive<i32> = -1..=4094;
    /// `bond_mode`: -1 (no bonding), 1 (active-backup), 4 (802.3ad) or 6
    /// (adaptive load balancing).
    pub const BOND_MODE: &[i64] = &[-1, 1, 4, 6];

    /// The one `bond_mode` lstack implements besides -1: active-backup.
    pub const BOND_MODE_ACTIVE_BACKUP: i32 = 1;
    /// `bond_miimon`, in milliseconds: the same range as ltran's (see
    /// there why it stops at one minute).
    pub const BOND_MIIMON: RangeInclusive<u32> = crate::ltran::limits::BOND_MIIMON;
    /// `num_process`: processes sharing one NIC.
    pub const NUM_PROCESS: RangeInclusive<u32> = 1..=32;
    /// Most mbufs `tcp_conn_count * mbuf_count_per_conn` may ask for (2^24,
    /// i.e. 32 GiB of 2 KiB buffers).
    pub const MAX_MBUFS: u64 = 16_777_216;
    /// Longest `unix_prefix`.
    pub const UNIX_PREFIX_MAX_LEN: usize = 32;
    /// Longest network interface name (Linux `IFNAMSIZ - 1`).
    pub const IFNAME_MAX_LEN: usize = 15;
}

/// How stack threads relate to application threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", try_from = "String")]
pub enum StackThreadMode {
    /// Stack threads of their own poll the NIC and wake application threads
    /// (`"run-to-wakeup"`, gazelle's default).
    #[default]
    RunToWakeup,
    /// The stack runs inside the application's threads, each polling its own
    /// queue (`"run-to-completion"`).
    RunToCompletion,
}

impl StackThreadMode {
    /// The name used in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RunToWakeup => "run-to-wakeup",
            Self::RunToCompletion => "run-to-completion",
        }
    }
}

impl std::fmt::Display for StackThreadMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for StackThreadMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [Self::RunToWakeup, Self::RunToCompletion]
            .into_iter()
            .find(|mode| mode.as_str() == s)
            .ok_or_else(|| "expected \"run-to-wakeup\" or \"run-to-completion\"".to_owned())
    }
}

impl TryFrom<String> for StackThreadMode {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

/// Everything lstack reads from its configuration file.
///
/// Keys are gazelle's. Booleans may be written `true`/`false` or gazelle's
/// `1`/`0`. Only `host_addr`, `mask_addr` and `devices` are required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LstackConfig {
    /// DPDK EAL arguments, for example `["--socket-mem", "2048,0,0,0",
    /// "--huge-dir", "/mnt/hugepages", "--proc-type", "primary"]`; `-d` loads
    /// extra PMDs, `--vdev` adds virtual NICs. Default: none.
    #[serde(default)]
    pub dpdk_args: Vec<String>,

    /// Whether packets go through the ltran forwarder instead of straight to
    /// the NIC. Default `false` (standalone), unlike gazelle's 1: ltran is
    /// deprecated upstream.
    #[serde(default, deserialize_with = "flag")]
    pub use_ltran: bool,

    /// Whether traffic the stack does not own goes to the kernel, through a
    /// `net_tap` interface named `kni` carrying the stack's MAC and
    /// addresses (DPDK 22.11 has no rte_kni). Cannot be used with
    /// `use_ltran` or lstack's own bond. Default `false`.
    #[serde(default, deserialize_with = "flag")]
    pub kni_switch: bool,

    /// Whether traffic the stack does not own goes to the kernel through a
    /// `virtio_user` port on vhost-net (KNI's successor), or a `net_tap`
    /// one where the host has no `/dev/vhost-net`; the interface is named
    /// `kni` either way. Not with `kni_switch`. Default `false`.
    #[serde(default, deserialize_with = "flag")]
    pub flow_bifurcation: bool,

    /// Whether stack threads back off when idle. Listed but not supported by
    /// gazelle. Default `false`.
    #[serde(default, deserialize_with = "flag")]
    pub low_power_mode: bool,

    /// Most TCP connections open at once; sizes the mbuf pool.
    /// Default 1500, range [`limits::TCP_CONN_COUNT`].
    #[serde(default = "defaults::tcp_conn_count")]
    pub tcp_conn_count: u32,

    /// Most UDP sockets open at once (ours; gazelle has no bound): one
    /// more is refused with `ENOBUFS`. Each holds up to 512 KiB of
    /// buffers. Default 1024, range [`limits::UDP_CONN_COUNT`].
    #[serde(default = "defaults::udp_conn_count")]
    pub udp_conn_count: u32,

    /// mbufs reserved per TCP connection. Default 170, range
    /// [`limits::MBUF_COUNT_PER_CONN`]; `tcp_conn_count * mbuf_count_per_conn`
    /// is at most [`limits::MAX_MBUFS`].
    #[serde(default = "defaults::mbuf_count_per_conn")]
    pub mbuf_count_per_conn: u32,

    /// mbufs each thread caches from the shared pool. Default 32, range
    /// [`limits::MEM_CACHE_NUM`].
    #[serde(default = "defaults::mem_cache_num")]
    pub mem_cache_num: u32,

    /// Cross-thread requests a stack thread handles per poll loop. Default 4,
    /// range [`limits::RPC_NUMBER`].
    #[serde(default = "defaults::rpc_number")]
    pub rpc_number: u32,

    /// Packets a stack thread reads from its NIC queue per poll loop.
    /// Default 128, range [`limits::NIC_READ_NUMBER`].
    #[serde(default = "defaults::nic_read_number")]
    pub nic_read_number: u32,

    /// Descriptors per NIC receive queue. Default 4096; a power of two in
    /// [`limits::NIC_QUEUE_SIZE`].
    #[serde(default = "defaults::nic_rxqueue_size")]
    pub nic_rxqueue_size: u32,

    /// Descriptors per NIC transmit queue. Default 2048; a power of two in
    /// [`limits::NIC_QUEUE_SIZE`].
    #[serde(default = "defaults::nic_txqueue_size")]
    pub nic_txqueue_size: u32,

    /// CPUs the stack threads are pinned to, one thread and one NIC queue
    /// each, written like `"2"` or `"0,2-3"`. Default `"2"`.
    #[serde(default = "defaults::num_cpus")]
    pub num_cpus: CpuList,

    /// Extra stack threads that are not pinned to a CPU: 0 (default) or 1.
    #[serde(default)]
    pub stack_num: u32,

    /// Whether application threads are bound to the NUMA node of the stack
    /// thread serving them. Default `true`.
    #[serde(default = "defaults::yes", deserialize_with = "flag")]
    pub app_bind_numa: bool,

    /// CPUs application threads must not be bound to when `app_bind_numa` is
    /// on. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_exclude_cpus: Option<CpuList>,

    /// Whether the application's main thread is also bound to a stack CPU's
    /// NUMA node. Default `false`.
    #[serde(default, deserialize_with = "flag")]
    pub main_thread_affinity: bool,

    /// Whether the stack has threads of its own (`"run-to-wakeup"`, default)
    /// or runs inside application threads (`"run-to-completion"`).
    #[serde(default)]
    pub stack_thread_mode: StackThreadMode,

    /// Whether idle stack threads sleep until a receive interrupt (after a
    /// short adaptive spin) instead of busy-polling a core. Default `true`
    /// (gazelle's is `false`: on a small machine a spinning thread costs
    /// more than it saves); `false` is refused with `run-to-completion`.
    #[serde(default = "defaults::yes", deserialize_with = "flag")]
    pub stack_interrupt: bool,

    /// Whether small writes are batched before transmission. Default `false`.
    #[serde(default, deserialize_with = "flag")]
    pub send_cache_mode: bool,

    /// Whether UDP is handled in user space (`false` leaves UDP to the
    /// kernel). Default `true`.
    #[serde(default = "defaults::yes", deserialize_with = "flag")]
    pub udp_enable: bool,

    /// Whether connections between two lstack processes on this host skip
    /// the NIC (shared-memory rings). Default `false`.
    #[serde(default, deserialize_with = "flag")]
    pub use_sockmap: bool,

    /// Whether every listening socket is copied onto every stack thread, so
    /// each thread takes its own connections (the NIC's RSS and the stack's
    /// flow hash spread them). With `false` (gazelle's default), each
    /// listening port's connections are all served by one stack thread
    /// (ports are given to threads in turn as they are first listened on).
    /// Default `true`.
    #[serde(default = "defaults::yes", deserialize_with = "flag")]
    pub listen_shadow: bool,

    /// The stack's IPv4 address. Required. Must be a unicast address that is
    /// neither the network nor the broadcast address of its subnet.
    pub host_addr: Ipv4Addr,

    /// The IPv4 netmask, for example `"255.255.255.0"`. Required; must be
    /// contiguous and not `0.0.0.0`.
    pub mask_addr: Ipv4Addr,

    /// The default IPv4 gateway; must lie inside `host_addr/mask_addr` and
    /// differ from `host_addr`. Default: none (on-link traffic only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_addr: Option<Ipv4Addr>,

    /// The stack's IPv6 address, `"fd00::2"` (prefix /64) or `"fd00::2/112"`.
    /// Default: none (IPv6 off apart from link-local).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_addr6: Option<Ipv6Cidr>,

    /// MAC address of the NIC port the stack uses. Required. With
    /// `bond_mode = 1` it is the bond's MAC: both `bond_slave_mac` ports
    /// are given it (it may be one of theirs or another).
    pub devices: MacAddr,

    /// Prefix of the control sockets, so several lstack/ltran instances can
    /// share a host; must match `gazellectl -u`. At most 32 characters from
    /// `A-Z a-z 0-9 _ -`. Default `""`.
    #[serde(default)]
    pub unix_prefix: String,

    /// VLAN id to tag traffic with, or -1 (default) for none. Range
    /// [`limits::NIC_VLAN_MODE`].
    #[serde(default = "defaults::minus_one")]
    pub nic_vlan_mode: i32,

    /// Bonding mode: -1 (default, no bonding) or 1 (active-backup over the
    /// two `bond_slave_mac` ports, without ltran); gazelle's 4 and 6 are
    /// refused (see [`limits::BOND_MODE`]).
    #[serde(default = "defaults::minus_one")]
    pub bond_mode: i32,

    /// MAC addresses of the two bonded ports (DPDK ports, found by MAC);
    /// exactly two when `bond_mode` is 1, none otherwise. Written as a list, or as gazelle's single string
    /// `"aa:bb:cc:dd:ee:ff;aa:bb:cc:dd:ee:fe"`. Default: none.
    #[serde(default, deserialize_with = "mac_list")]
    pub bond_slave_mac: Vec<MacAddr>,

    /// Link-monitoring interval of the bond, in milliseconds. Default 10,
    /// range [`limits::BOND_MIIMON`].
    #[serde(default = "defaults::bond_miimon")]
    pub bond_miimon: u32,

    /// Whether several processes share the NIC by steering flows to them
    /// with NIC filters (deprecated upstream). Default `false`.
    #[serde(default, deserialize_with = "flag")]
    pub tuple_filter: bool,

    /// How many processes share the NIC. Default 1, range
    /// [`limits::NUM_PROCESS`].
    #[serde(default = "defaults::num_process")]
    pub num_process: u32,

    /// This process's index among `num_process`, from 0 (default).
    #[serde(default)]
    pub process_idx: u32,

    /// NUMA nodes of the processes sharing the NIC, in the CPU-list format.
    /// Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_numa: Option<CpuList>,

    /// Kernel interface behind an AF_XDP backend (gazelle derives it from
    /// `--vdev net_af_xdp,iface=...`). At most 15 characters, no `/`, `:` or
    /// whitespace. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp_eth_name: Option<String>,
}

/// The `net_af_xdp` virtual devices of `dpdk_args` (`--vdev=net_af_xdp0,iface=eth1,...`
/// or `--vdev net_af_xdp0,...`): the index in `dpdk_args` of the argument
/// holding the device spec, and its `iface=`.
pub fn af_xdp_vdevs(dpdk_args: &[String]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < dpdk_args.len() {
        let (at, spec) = if let Some(spec) = dpdk_args[i].strip_prefix("--vdev=") {
            (i, spec)
        } else if dpdk_args[i] == "--vdev" && i + 1 < dpdk_args.len() {
            i += 1;
            (i, dpdk_args[i].as_str())
        } else {
            i += 1;
            continue;
        };
        i += 1;
        let mut parts = spec.split(',');
        let driver = parts.next().unwrap_or_default();
        if !(driver.starts_with("net_af_xdp") || driver.starts_with("eth_af_xdp")) {
            continue;
        }
        if let Some(iface) = parts.find_map(|kv| kv.strip_prefix("iface=")) {
            out.push((at, iface.to_owned()));
        }
    }
    out
}

/// Default values, as serde wants functions; [`LstackConfig::new`] uses them
/// too so there is one source for each.
mod defaults {
    use crate::value::CpuList;

    pub(super) fn tcp_conn_count() -> u32 {
        1500
    }
    pub(super) fn udp_conn_count() -> u32 {
        1024
    }
    pub(super) fn mbuf_count_per_conn() -> u32 {
        170
    }
    pub(super) fn mem_cache_num() -> u32 {
        32
    }
    pub(super) fn rpc_number() -> u32 {
        4
    }
    pub(super) fn nic_read_number() -> u32 {
        128
    }
    pub(super) fn nic_rxqueue_size() -> u32 {
        4096
    }
    pub(super) fn nic_txqueue_size() -> u32 {
        2048
    }
    pub(super) fn num_cpus() -> CpuList {
        CpuList::new([2]).unwrap_or_else(|_| unreachable!("a one-CPU list is valid"))
    }
    pub(super) fn yes() -> bool {
        true
    }
    pub(super) fn minus_one() -> i32 {
        -1
    }
    pub(super) fn bond_miimon() -> u32 {
        10
    }
    pub(super) fn num_process() -> u32 {
        1
    }
}

config_file_api!(
    type = LstackConfig,
    gazelle_file = "lstack.conf",
    env = LSTACK_CONF_ENV,
    default_path = DEFAULT_LSTACK_CONF_PATH,
);

impl LstackConfig {
    /// A configuration with the three required values and every other key
    /// at its default.
    pub fn new(host_addr: Ipv4Addr, mask_addr: Ipv4Addr, devices: MacAddr) -> Self {
        Self {
            dpdk_args: Vec::new(),
            use_ltran: false,
            kni_switch: false,
            flow_bifurcation: false,
            low_power_mode: false,
            tcp_conn_count: defaults::tcp_conn_count(),
            udp_conn_count: defaults::udp_conn_count(),
            mbuf_count_per_conn: defaults::mbuf_count_per_conn(),
            mem_cache_num: defaults::mem_cache_num(),
            rpc_number: defaults::rpc_number(),
            nic_read_number: defaults::nic_read_number(),
            nic_rxqueue_size: defaults::nic_rxqueue_size(),
            nic_txqueue_size: defaults::nic_txqueue_size(),
            num_cpus: defaults::num_cpus(),
            stack_num: 0,
            app_bind_numa: defaults::yes(),
            app_exclude_cpus: None,
            main_thread_affinity: false,
            stack_thread_mode: StackThreadMode::default(),
            stack_interrupt: defaults::yes(),
            send_cache_mode: false,
            udp_enable: defaults::yes(),
            use_sockmap: false,
            listen_shadow: defaults::yes(),
            host_addr,
            mask_addr,
            gateway_addr: None,
            host_addr6: None,
            devices,
            unix_prefix: String::new(),
            nic_vlan_mode: defaults::minus_one(),
            bond_mode: defaults::minus_one(),
            bond_slave_mac: Vec::new(),
            bond_miimon: defaults::bond_miimon(),
            tuple_filter: false,
            num_process: defaults::num_process(),
            process_idx: 0,
            process_numa: None,
            xdp_eth_name: None,
        }
    }

    /// Checks value ranges and the rules between keys; loading runs it, and
    /// code that builds or edits a configuration should too.
    ///
    /// Besides the per-key ranges in [`limits`]: `mask_addr` is a contiguous
    /// non-zero netmask; `host_addr` is unicast and (for subnets larger than
    /// /31) neither the network nor the broadcast address; `gateway_addr` is
    /// inside the subnet and is not `host_addr`; `use_ltran` and `kni_switch`
    /// are not both on; `stack_interrupt` is used with neither
    /// `run-to-completion`; bonding is active-backup without ltran, over
    /// exactly two distinct `bond_slave_mac`s; the mbuf product is at most [`limits::MAX_MBUFS`];
    /// `process_idx < num_process`; `unix_prefix` and `xdp_eth_name` are
    /// well-formed names.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range(
            "tcp_conn_count",
            self.tcp_conn_count,
            limits::TCP_CONN_COUNT,
        )?;
        check_range(
            "udp_conn_count",
            self.udp_conn_count,
            limits::UDP_CONN_COUNT,
        )?;
        check_range(
            "mbuf_count_per_conn",
            self.mbuf_count_per_conn,
            limits::MBUF_COUNT_PER_CONN,
        )?;
        check_range("mem_cache_num", self.mem_cache_num, limits::MEM_CACHE_NUM)?;
        check_range("rpc_number", self.rpc_number, limits::RPC_NUMBER)?;
        check_range(
            "nic_read_number",
            self.nic_read_number,
            limits::NIC_READ_NUMBER,
        )?;
        check_queue_size("nic_rxqueue_size", self.nic_rxqueue_size)?;
        check_queue_size("nic_txqueue_size", self.nic_txqueue_size)?;
        check_one_of("stack_num", self.stack_num.into(), limits::STACK_NUM)?;
        check_range("nic_vlan_mode", self.nic_vlan_mode, limits::NIC_VLAN_MODE)?;
        check_one_of("bond_mode", self.bond_mode.into(), limits::BOND_MODE)?;
        check_range("bond_miimon", self.bond_miimon, limits::BOND_MIIMON)?;
        check_range("num_process", self.num_process, limits::NUM_PROCESS)?;
        self.check_implemented()?;
        self.check_addresses()?;
        self.check_names()?;
        self.check_combinations()
    }

    fn check_addresses(&self) -> Result<(), ConfigError> {
        let (host, mask) = (self.host_addr, self.mask_addr);
        let mask_bits = u32::from(mask);
        if mask_bits == 0 || mask_bits.leading_ones() + mask_bits.trailing_zeros() != 32 {
            return Err(ConfigError::BadNetmask { mask });
        }
        let not_unicast = |reason| Err(ConfigError::HostAddrNotUnicast { host, reason });
        if host.is_unspecified() {
            return not_unicast("0.0.0.0 means \"no address\"");
        }
        if host.is_loopback() {
            return not_unicast("it is a loopback address (127.0.0.0/8)");
        }
        if host.is_multicast() {
            return not_unicast("it is a multicast address (224.0.0.0/4)");
        }
        if host.is_broadcast() {
            return not_unicast("it is the limited broadcast address");
        }
        let host_bits = u32::from(host);
        // /31 (RFC 3021) and /32 subnets have no network or broadcast address.
        if self.netmask_prefix_len() <= 30 {
            if host_bits & !mask_bits == 0 {
                return Err(ConfigError::HostAddrReserved {
                    host,
                    mask,
                    which: "network",
                });
            }
            if host_bits | mask_bits == u32::MAX {
                return Err(ConfigError::HostAddrReserved {
                    host,
                    mask,
                    which: "broadcast",
                });
            }
        }
        if let Some(gateway) = self.gateway_addr {
            if u32::from(gateway) & mask_bits != host_bits & mask_bits {
                return Err(ConfigError::GatewayOutsideSubnet {
                    gateway,
                    host,
                    mask,
                });
            }
            if gateway == host {
                return Err(ConfigError::GatewayIsHost { gateway });
            }
        }
        Ok(())
    }

    /// Refuses the values of keys lstack does not implement (see
    /// [`crate::support::LSTACK`]): accepting them and doing something else
    /// would leave an operator believing in a behaviour that is not there.
    fn check_implemented(&self) -> Result<(), ConfigError> {
        let refuse = |name: &'static str, refused: bool, value: String| {
            if refused {
                Err(support::refusal(support::LSTACK, name, value))
            } else {
                Ok(())
            }
        };
        let flag = |b: bool| u8::from(b).to_string();
        refuse(
            "low_power_mode",
            self.low_power_mode,
            flag(self.low_power_mode),
        )?;
        refuse(
            "mbuf_count_per_conn",
            self.mbuf_count_per_conn != defaults::mbuf_count_per_conn(),
            self.mbuf_count_per_conn.to_string(),
        )?;
        refuse("stack_num", self.stack_num != 0, self.stack_num.to_string())?;
        refuse(
            "send_cache_mode",
            self.send_cache_mode,
            flag(self.send_cache_mode),
        )?;
        refuse("use_sockmap", self.use_sockmap, flag(self.use_sockmap))?;
        refuse("tuple_filter", self.tuple_filter, flag(self.tuple_filter))?;
        refuse(
            "num_process",
            self.num_process != 1,
            self.num_process.to_string(),
        )?;
        refuse(
            "process_idx",
            self.process_idx != 0,
            self.process_idx.to_string(),
        )?;
        refuse(
            "process_numa",
            self.process_numa.is_some(),
            format!(
                "{:?}",
                self.process_numa
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ),
        )
    }

    fn check_names(&self) -> Result<(), ConfigError> {
        check_unix_prefix(&self.unix_prefix)?;
        if let Some(name) = &self.xdp_eth_name {
            let well_formed = !name.is_empty()
                && name.len() <= limits::IFNAME_MAX_LEN
                && name != "."
                && name != ".."
                && !name
                    .chars()
                    .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
            if !well_formed {
                return Err(ConfigError::InvalidValue {
                    field: "xdp_eth_name".into(),
                    value: format!("{name:?}"),
                    reason: format!(
                        "an interface name has 1 to {} characters, none of them '/', ':' or whitespace",
                        limits::IFNAME_MAX_LEN
                    ),
                });
            }
            let vdevs = af_xdp_vdevs(&self.dpdk_args);
            if !vdevs.iter().any(|(_, iface)| iface == name) {
                let found: Vec<&str> = vdevs.iter().map(|(_, i)| i.as_str()).collect();
                return Err(ConfigError::InvalidValue {
                    field: "xdp_eth_name".into(),
                    value: format!("{name:?}"),
                    reason: format!(
                        "it names the kernel interface of a net_af_xdp port, but dpdk_args has \
                         no --vdev net_af_xdp...,iface={name} (net_af_xdp interfaces there: {})",
                        if found.is_empty() {
                            "none".to_owned()
                        } else {
                            found.join(", ")
                        }
                    ),
                });
            }
        }
        Ok(())
    }

    fn check_combinations(&self) -> Result<(), ConfigError> {
        if self.use_ltran && self.kni_switch {
            return Err(ConfigError::Conflict {
                first: "kni_switch = true".into(),
                second: "use_ltran = true".into(),
                reason:
                    "gazelle offers the KNI path to the kernel only without ltran; turn one off",
            });
        }
        if self.use_ltran && self.flow_bifurcation {
            return Err(ConfigError::Conflict {
                first: "flow_bifurcation = true".into(),
                second: "use_ltran = true".into(),
                reason: "behind ltran, ltran's own `kni_switch` is the path to the kernel; \
                         turn one off",
            });
        }
        if self.kni_switch && self.flow_bifurcation {
            return Err(ConfigError::Conflict {
                first: "kni_switch = true".into(),
                second: "flow_bifurcation = true".into(),
                reason: "both ask for the one path to the kernel (flow_bifurcation is \
                         kni_switch's successor); set one",
            });
        }
        if (self.kni_switch || self.flow_bifurcation)
            && self.bond_mode == limits::BOND_MODE_ACTIVE_BACKUP
        {
            return Err(ConfigError::Conflict {
                first: format!("bond_mode = {}", self.bond_mode),
                second: if self.kni_switch {
                    "kni_switch = true".into()
                } else {
                    "flow_bifurcation = true".into()
                },
                reason: "the path to the kernel is not built for lstack's own bond yet; \
                         bond behind ltran (its `kni_switch`) or use one port",
            });
        }
        if self.use_ltran && self.nic_vlan_mode != -1 {
            return Err(ConfigError::Conflict {
                first: format!("nic_vlan_mode = {}", self.nic_vlan_mode),
                second: "use_ltran = true".into(),
                reason: "behind ltran, ltran owns the port and hands lstack untagged frames; \
                         give ltran's port a VLAN interface (af_packet on eth0.100), or run \
                         lstack on its own port (use_ltran = 0)",
            });
        }
        if self.bond_mode != -1 && self.nic_vlan_mode != -1 {
            return Err(ConfigError::Conflict {
                first: format!("nic_vlan_mode = {}", self.nic_vlan_mode),
                second: format!("bond_mode = {}", self.bond_mode),
                reason: "lstack's own bond does not carry a VLAN yet; bond VLAN interfaces \
                         instead (af_packet on eth0.100 and eth1.100), or use one port",
            });
        }
        if !self.stack_interrupt && self.stack_thread_mode == StackThreadMode::RunToCompletion {
            return Err(ConfigError::Conflict {
                first: "stack_interrupt = false".into(),
                second: "stack_thread_mode = \"run-to-completion\"".into(),
                reason: "run-to-completion has no stack thread to busy-poll: the application's \
                         threads sleep on receive interrupts in their own waits",
            });
        }
        self.check_bond()?;
        let total = u64::from(self.tcp_conn_count) * u64::from(self.mbuf_count_per_conn);
        if total > limits::MAX_MBUFS {
            return Err(ConfigError::TooManyMbufs {
                tcp_conn_count: self.tcp_conn_count,
                mbuf_count_per_conn: self.mbuf_count_per_conn,
                total,
                max: limits::MAX_MBUFS,
            });
        }
        if self.process_idx >= self.num_process {
            return Err(ConfigError::ProcessIndex {
                process_idx: self.process_idx,
                num_process: self.num_process,
            });
        }
        Ok(())
    }

    /// Bonding: only active-backup (`bond_mode = 1`), only standalone
    /// (ltran owns the ports behind it, with its own bond), over exactly two
    /// distinct `bond_slave_mac`s; `bond_slave_mac` and `bond_miimon` only
    /// with a bond (no key is accepted and then ignored).
    fn check_bond(&self) -> Result<(), ConfigError> {
        if self.bond_mode == -1 {
            if !self.bond_slave_mac.is_empty() {
                return Err(ConfigError::Conflict {
                    first: format!("bond_slave_mac = {:?}", self.slave_macs()),
                    second: "bond_mode = -1".into(),
                    reason: "the bond's ports only mean something with a bond: set bond_mode = 1, or remove bond_slave_mac",
                });
            }
            if self.bond_miimon != defaults::bond_miimon() {
                return Err(ConfigError::Conflict {
                    first: format!("bond_miimon = {}", self.bond_miimon),
                    second: "bond_mode = -1".into(),
                    reason:
                        "link checks only run with a bond: set bond_mode = 1, or remove bond_miimon",
                });
            }
            return Ok(());
        }
        if self.bond_mode != limits::BOND_MODE_ACTIVE_BACKUP {
            return Err(ConfigError::InvalidValue {
                field: "bond_mode".into(),
                value: self.bond_mode.to_string(),
                reason: "only -1 (no bond) and 1 (active-backup) are implemented in lstack; \
                         802.3ad (4) and adaptive load balancing (6) are not"
                    .into(),
            });
        }
        if self.use_ltran {
            return Err(ConfigError::Conflict {
                first: "use_ltran = true".into(),
                second: "bond_mode = 1".into(),
                reason: "behind ltran the ports are ltran's: bond them there (bond_ports, bond_macs in ltran.toml)",
            });
        }
        if self.bond_slave_mac.len() != 2 {
            return Err(ConfigError::BondSlaveCount {
                bond_mode: self.bond_mode,
                count: self.bond_slave_mac.len(),
            });
        }
        if self.bond_slave_mac[0] == self.bond_slave_mac[1] {
            return Err(ConfigError::InvalidValue {
                field: "bond_slave_mac".into(),
                value: format!("{:?}", self.slave_macs()),
                reason:
                    "the two ports of the bond must be different ports (different MAC addresses)"
                        .into(),
            });
        }
        Ok(())
    }

    fn slave_macs(&self) -> Vec<String> {
        self.bond_slave_mac
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// mbufs the packet pool needs: `tcp_conn_count * mbuf_count_per_conn`
    /// for connection buffers, plus one receive and one transmit ring's worth
    /// (`nic_rxqueue_size + nic_txqueue_size`). Cannot overflow.
    pub fn mbuf_pool_size(&self) -> u64 {
        u64::from(self.tcp_conn_count) * u64::from(self.mbuf_count_per_conn)
            + u64::from(self.nic_rxqueue_size)
            + u64::from(self.nic_txqueue_size)
    }

    /// The prefix length of `mask_addr` (24 for 255.255.255.0). Counts the
    /// leading one bits, so it is only meaningful once `validate()` has
    /// accepted the mask.
    pub fn netmask_prefix_len(&self) -> u8 {
        // At most 32, so the conversion cannot fail.
        u8::try_from(u32::from(self.mask_addr).leading_ones()).unwrap_or(32)
    }
}

fn check_queue_size(field: &'static str, value: u32) -> Result<(), ConfigError> {
    let range = limits::NIC_QUEUE_SIZE;
    if range.contains(&value) && value.is_power_of_two() {
        Ok(())
    } else {
        Err(ConfigError::NotPowerOfTwo {
            field,
            value: value.into(),
            min: (*range.start()).into(),
            max: (*range.end()).into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rstest::rstest;

    use std::path::Path;

    use super::*;
    use crate::format::conf_path;
    use crate::test_support::{assert_refused, load_examples, toml_round_trip, Minimal};
    use crate::value::strategies::{any_cpu_list, any_ipv6_cidr, any_mac};

    const EXAMPLE_CONF: &str = include_str!("../examples/lstack.conf");

    /// The smallest valid file, in TOML.
    const MINIMAL_TOML: &str = "host_addr = \"192.168.1.10\"\n\
                                mask_addr = \"255.255.255.0\"\n\
                                devices = \"aa:bb:cc:dd:ee:ff\"\n";
    /// The same, in gazelle syntax.
    const MINIMAL_CONF: &str = "host_addr=\"192.168.1.10\"\n\
                                mask_addr=\"255.255.255.0\"\n\
                                devices=\"aa:bb:cc:dd:ee:ff\"\n";

    const MINIMAL: Minimal = Minimal {
        toml: MINIMAL_TOML,
        conf: MINIMAL_CONF,
    };

    fn minimal() -> LstackConfig {
        LstackConfig::new(
            Ipv4Addr::new(192, 168, 1, 10),
            Ipv4Addr::new(255, 255, 255, 0),
            "aa:bb:cc:dd:ee:ff".parse().unwrap(),
        )
    }

    /// The minimal file with `extra` lines, in TOML; for required keys, the
    /// line replaces the minimal one.
    fn toml_with(extra: &str) -> Result<LstackConfig, ConfigError> {
        MINIMAL.toml_with(extra)
    }

    fn conf_with(extra: &str) -> Result<LstackConfig, ConfigError> {
        MINIMAL.conf_with(extra)
    }

    #[test]
    fn minimal_file_gives_gazelle_defaults() {
        let from_toml = LstackConfig::from_toml_str(MINIMAL_TOML).unwrap();
        let from_conf = LstackConfig::from_gazelle_str(MINIMAL_CONF).unwrap();
        assert_eq!(from_toml, minimal());
        assert_eq!(from_conf, minimal());

        let c = minimal();
        assert!(c.dpdk_args.is_empty());
        assert!(!c.use_ltran && !c.kni_switch && !c.flow_bifurcation && !c.low_power_mode);
        assert_eq!(
            (c.tcp_conn_count, c.mbuf_count_per_conn, c.mem_cache_num),
            (1500, 170, 32)
        );
        assert_eq!((c.rpc_number, c.nic_read_number), (4, 128));
        assert_eq!((c.nic_rxqueue_size, c.nic_txqueue_size), (4096, 2048));
        assert_eq!(c.num_cpus.as_slice(), &[2]);
        assert_eq!(c.stack_num, 0);
        assert!(c.app_bind_numa && c.udp_enable);
        assert!(!c.main_thread_affinity && c.stack_interrupt && !c.send_cache_mode);
        assert!(!c.use_sockmap && c.listen_shadow && !c.tuple_filter);
        assert_eq!(c.stack_thread_mode, StackThreadMode::RunToWakeup);
        assert_eq!(c.app_exclude_cpus, None);
        assert_eq!((c.gateway_addr, c.host_addr6), (None, None));
        assert_eq!(c.unix_prefix, "");
        assert_eq!((c.nic_vlan_mode, c.bond_mode, c.bond_miimon), (-1, -1, 10));
        assert!(c.bond_slave_mac.is_empty());
        assert_eq!((c.num_process, c.process_idx), (1, 0));
        assert_eq!(
            (c.process_numa.clone(), c.xdp_eth_name.clone()),
            (None, None)
        );
        c.validate().unwrap();
    }

    #[test]
    fn example_files_are_equivalent() {
        let example: LstackConfig = load_examples("lstack");

        // And they set what lstack implements away from the defaults.
        assert_eq!(example.num_cpus.as_slice(), &[2, 4, 5]);
        assert_eq!((example.rpc_number, example.nic_read_number), (8, 64));
        assert!(!example.udp_enable && !example.app_bind_numa);
        assert_eq!(example.host_addr6.unwrap().prefix_len(), 64);
        assert_eq!(example.stack_thread_mode, StackThreadMode::RunToWakeup);
        assert!(example.dpdk_args.iter().any(|a| a == "--huge-dir"));
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("gazelle-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();

        let conf = dir.join("bad.conf");
        std::fs::write(&conf, format!("{MINIMAL_CONF}tcp_conn_count=30000\n")).unwrap();
        let err = LstackConfig::load(&conf).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: tcp_conn_count = 30000 is out of range 1..=20000",
                conf.display()
            )
        );
        assert_eq!(err.field(), Some("tcp_conn_count"));

        // A TOML syntax error reports its line.
        let toml = dir.join("bad.toml");
        std::fs::write(&toml, format!("{MINIMAL_CONF}\nmask_addr 5\n")).unwrap();
        let err = LstackConfig::load(&toml).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{}: line 5: ", toml.display())),
            "{err}"
        );

        let binary = dir.join("binary.conf");
        std::fs::write(&binary, b"host_addr=\"192.168.1.10\"\n\xff\xfe\n").unwrap();
        let err = LstackConfig::load(&binary).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: line 2: the file is not valid UTF-8 text",
                binary.display()
            )
        );

        let missing = dir.join("missing.toml");
        let err = LstackConfig::load(&missing).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("cannot read {}: ", missing.display())),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn env_path_defaults_to_etc() {
        assert_eq!(DEFAULT_LSTACK_CONF_PATH, "/etc/gazelle/lstack.toml");
        assert_eq!(LSTACK_CONF_ENV, "LSTACK_CONF_PATH");
        assert_eq!(
            conf_path(None, DEFAULT_LSTACK_CONF_PATH),
            Path::new(DEFAULT_LSTACK_CONF_PATH)
        );
    }

    #[test]
    fn booleans_accept_integers_in_both_syntaxes() {
        assert!(toml_with("use_ltran = 1").unwrap().use_ltran);
        assert!(toml_with("use_ltran = true").unwrap().use_ltran);
        assert!(!toml_with("udp_enable = 0").unwrap().udp_enable);
        assert!(conf_with("use_ltran=1").unwrap().use_ltran);
        assert!(conf_with("use_ltran=true").unwrap().use_ltran);
        assert!(!conf_with("udp_enable=0").unwrap().udp_enable);
    }

    const BOND: &str = "bond_mode = 1\nbond_miimon = 100\n";

    #[test]
    fn bond_slave_mac_in_both_spellings() {
        let list = toml_with(&format!(
            "{BOND}bond_slave_mac = [\"aa:bb:cc:dd:ee:ff\", \"aa:bb:cc:dd:ee:fe\"]"
        ))
        .unwrap();
        let joined = conf_with(
            "bond_mode=1\nbond_miimon=100\nbond_slave_mac=\"aa:bb:cc:dd:ee:ff;AA:BB:CC:DD:EE:FE\"",
        )
        .unwrap();
        assert_eq!(list.bond_slave_mac, joined.bond_slave_mac);
        assert_eq!(list.bond_slave_mac[1].to_string(), "aa:bb:cc:dd:ee:fe");
        assert_eq!((list.bond_mode, list.bond_miimon), (1, 100));
    }

    #[rstest]
    #[case("4")]
    #[case("6")]
    fn bond_modes_other_than_active_backup_are_refused(#[case] mode: &str) {
        let err = toml_with(&format!(
            "bond_mode = {mode}\nbond_slave_mac = [\"aa:bb:cc:dd:ee:01\", \"aa:bb:cc:dd:ee:02\"]"
        ))
        .unwrap_err();
        assert_eq!(err.field(), Some("bond_mode"), "{err}");
        let m = err.to_string();
        assert!(
            m.starts_with(&format!("bond_mode = {mode}"))
                && m.contains("only -1 (no bond) and 1 (active-backup)"),
            "{m}"
        );
    }

    #[test]
    fn bond_is_standalone_with_two_distinct_ports_and_its_keys_need_it() {
        let two = "bond_slave_mac = [\"aa:bb:cc:dd:ee:01\", \"aa:bb:cc:dd:ee:02\"]";
        let err = toml_with(&format!("{BOND}{two}\nuse_ltran = 1")).unwrap_err();
        assert!(
            err.to_string().contains("use_ltran") && err.to_string().contains("ltran"),
            "{err}"
        );
        let err =
            toml_with(&format!("{BOND}bond_slave_mac = [\"aa:bb:cc:dd:ee:01\"]")).unwrap_err();
        assert_eq!(err.field(), Some("bond_slave_mac"), "{err}");
        let err = toml_with(&format!(
            "{BOND}bond_slave_mac = [\"aa:bb:cc:dd:ee:01\", \"aa:bb:cc:dd:ee:01\"]"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("different"), "{err}");
        // Without a bond, its keys would be ignored: refused.
        let err = toml_with(two).unwrap_err();
        assert!(err.to_string().contains("bond_mode = -1"), "{err}");
        let err = toml_with("bond_miimon = 100").unwrap_err();
        assert!(err.to_string().contains("bond_mode = -1"), "{err}");
        // gazelle's defaults spelled out still load.
        toml_with("bond_mode = -1\nbond_miimon = 10\nbond_slave_mac = []").unwrap();
    }

    #[test]
    fn gazelle_readme_example_names_stale_keys() {
        // The README's example still has keys gazelle has since dropped.
        let text = format!("{MINIMAL_CONF}use_ltran=1\nnum_cpus=\"2\"\nnum_weakup=\"3\"\n");
        let err = LstackConfig::from_gazelle_str(&text).unwrap_err();
        assert_eq!(err.field(), Some("num_weakup"));
        let message = err.to_string();
        assert!(
            message.starts_with("unknown key \"num_weakup\" (allowed keys: dpdk_args, use_ltran, "),
            "{message}"
        );
        assert!(
            message.ends_with("process_numa, xdp_eth_name)"),
            "{message}"
        );
    }

    #[rstest]
    #[case("tcp_conn_count", "0", "1..=20000")]
    #[case("tcp_conn_count", "20001", "1..=20000")]
    #[case("udp_conn_count", "0", "1..=65535")]
    #[case("udp_conn_count", "65536", "1..=65535")]
    #[case("mbuf_count_per_conn", "0", "1..=4096")]
    #[case("mbuf_count_per_conn", "4097", "1..=4096")]
    #[case("mem_cache_num", "15", "16..=1024")]
    #[case("mem_cache_num", "1025", "16..=1024")]
    #[case("rpc_number", "0", "1..=64")]
    #[case("rpc_number", "65", "1..=64")]
    #[case("nic_read_number", "0", "1..=512")]
    #[case("nic_read_number", "513", "1..=512")]
    #[case("nic_rxqueue_size", "256", "power of two in 512..=8192")]
    #[case("nic_rxqueue_size", "1000", "power of two in 512..=8192")]
    #[case("nic_rxqueue_size", "16384", "power of two in 512..=8192")]
    #[case("nic_txqueue_size", "0", "power of two in 512..=8192")]
    #[case("nic_txqueue_size", "3000", "power of two in 512..=8192")]
    #[case("nic_txqueue_size", "16384", "power of two in 512..=8192")]
    #[case("stack_num", "2", "not one of 0, 1")]
    #[case("nic_vlan_mode", "-2", "-1..=4094")]
    #[case("nic_vlan_mode", "4095", "-1..=4094")]
    #[case("bond_mode", "0", "not one of -1, 1, 4, 6")]
    #[case("bond_mode", "2", "not one of -1, 1, 4, 6")]
    #[case("bond_mode", "5", "not one of -1, 1, 4, 6")]
    #[case("bond_miimon", "0", "1..=60000")]
    #[case("bond_miimon", "60001", "1..=60000")]
    #[case("num_process", "0", "1..=32")]
    #[case("num_process", "33", "1..=32")]
    fn out_of_range(#[case] field: &str, #[case] value: &str, #[case] allowed: &str) {
        assert_refused(
            MINIMAL.with::<LstackConfig>(field, value, value),
            field,
            &format!("{field} = {value} "),
            allowed,
        );
    }

    #[test]
    fn range_message_matches_spec() {
        let err = toml_with("tcp_conn_count = 30000").unwrap_err();
        assert_eq!(
            err.to_string(),
            "tcp_conn_count = 30000 is out of range 1..=20000"
        );
        let err = toml_with("nic_rxqueue_size = 1000").unwrap_err();
        assert_eq!(
            err.to_string(),
            "nic_rxqueue_size = 1000 must be a power of two in 512..=8192"
        );
    }

    #[rstest]
    #[case("tcp_conn_count", "1")]
    #[case("tcp_conn_count", "20000")]
    #[case("mem_cache_num", "16")]
    #[case("mem_cache_num", "1024")]
    #[case("nic_rxqueue_size", "512")]
    #[case("nic_txqueue_size", "8192")]
    fn range_edges_accepted(#[case] field: &str, #[case] value: &str) {
        for result in MINIMAL.with::<LstackConfig>(field, value, value) {
            result.unwrap();
        }
    }

    /// One bad value per key, in TOML and gazelle syntax: every error must be
    /// attributed to that key and mention it.
    #[rstest]
    #[case("dpdk_args", "5", "5")]
    #[case("dpdk_args", "[\"-l\", 1]", "[\"-l\", 1]")]
    #[case("use_ltran", "2", "2")]
    #[case("kni_switch", "\"yes\"", "\"yes\"")]
    #[case("flow_bifurcation", "-1", "-1")]
    #[case("low_power_mode", "[1]", "[1]")]
    #[case("tcp_conn_count", "\"1500\"", "\"1500\"")]
    #[case("tcp_conn_count", "-5", "-5")]
    #[case("mbuf_count_per_conn", "true", "true")]
    #[case("mem_cache_num", "4294967296", "4294967296")]
    #[case("rpc_number", "1.5", "\"1.5\"")]
    #[case("nic_read_number", "[]", "[]")]
    #[case("nic_rxqueue_size", "\"4096\"", "\"4096\"")]
    #[case("nic_txqueue_size", "-2048", "-2048")]
    #[case("num_cpus", "2", "2")]
    #[case("num_cpus", "\"\"", "\"\"")]
    #[case("num_cpus", "\"3-1\"", "\"3-1\"")]
    #[case("num_cpus", "\"0-40\"", "\"0-40\"")]
    #[case("stack_num", "\"0\"", "\"0\"")]
    #[case("app_bind_numa", "3", "3")]
    #[case("app_exclude_cpus", "\"x\"", "\"x\"")]
    #[case("main_thread_affinity", "\"1\"", "\"1\"")]
    #[case("stack_thread_mode", "\"fast\"", "\"fast\"")]
    #[case("stack_thread_mode", "1", "1")]
    #[case("stack_interrupt", "7", "7")]
    #[case("send_cache_mode", "\"0\"", "\"0\"")]
    #[case("udp_enable", "2", "2")]
    #[case("use_sockmap", "-1", "-1")]
    #[case("listen_shadow", "\"on\"", "\"on\"")]
    #[case("host_addr", "\"300.1.1.1\"", "\"300.1.1.1\"")]
    #[case("host_addr", "\"192.168.1.0\"", "\"192.168.1.0\"")]
    #[case("host_addr", "\"127.0.0.1\"", "\"127.0.0.1\"")]
    #[case("host_addr", "3232235786", "3232235786")]
    #[case("mask_addr", "\"255.0.255.0\"", "\"255.0.255.0\"")]
    #[case("mask_addr", "\"0.0.0.0\"", "\"0.0.0.0\"")]
    #[case("mask_addr", "24", "24")]
    #[case("gateway_addr", "\"gw\"", "\"gw\"")]
    #[case("gateway_addr", "\"10.1.0.1\"", "\"10.1.0.1\"")]
    #[case("gateway_addr", "\"192.168.1.10\"", "\"192.168.1.10\"")]
    #[case("host_addr6", "\"ff02::1\"", "\"ff02::1\"")]
    #[case("host_addr6", "\"fd00::2/129\"", "\"fd00::2/129\"")]
    #[case("devices", "\"01:00:5e:00:00:01\"", "\"01:00:5e:00:00:01\"")]
    #[case("devices", "\"aa:bb:cc:dd:ee\"", "\"aa:bb:cc:dd:ee\"")]
    #[case("unix_prefix", "\"a b\"", "\"a b\"")]
    #[case(
        "unix_prefix",
        "\"abcdefghijklmnopqrstuvwxyz0123456\"",
        "\"abcdefghijklmnopqrstuvwxyz0123456\""
    )]
    #[case("nic_vlan_mode", "\"10\"", "\"10\"")]
    #[case("bond_mode", "\"1\"", "\"1\"")]
    #[case("bond_slave_mac", "[\"zz\"]", "\"zz\"")]
    #[case("bond_slave_mac", "[\"ff:ff:ff:ff:ff:ff\"]", "\"ff:ff:ff:ff:ff:ff\"")]
    #[case("bond_slave_mac", "5", "5")]
    #[case("bond_miimon", "\"10\"", "\"10\"")]
    #[case("tuple_filter", "9", "9")]
    #[case("num_process", "\"1\"", "\"1\"")]
    #[case("process_idx", "-1", "-1")]
    #[case("process_idx", "1", "1")]
    #[case("process_numa", "\"0-\"", "\"0-\"")]
    #[case("xdp_eth_name", "5", "5")]
    #[case("xdp_eth_name", "\"\"", "\"\"")]
    #[case(
        "xdp_eth_name",
        "\"a-very-long-interface\"",
        "\"a-very-long-interface\""
    )]
    #[case("xdp_eth_name", "\"eth/0\"", "\"eth/0\"")]
    fn bad_value_names_its_key(#[case] field: &str, #[case] toml: &str, #[case] conf: &str) {
        assert_refused(
            MINIMAL.with::<LstackConfig>(field, toml, conf),
            field,
            "",
            field,
        );
    }

    #[rstest]
    #[case("host_addr")]
    #[case("mask_addr")]
    #[case("devices")]
    fn missing_required_key(#[case] field: &str) {
        let message = format!("missing required key \"{field}\"");
        assert_refused(
            MINIMAL.without::<LstackConfig>(field),
            field,
            &message,
            &message,
        );
    }

    #[test]
    fn unknown_key_in_both_syntaxes() {
        for err in [
            toml_with("foo = 1").unwrap_err(),
            conf_with("foo=1").unwrap_err(),
        ] {
            assert_eq!(err.field(), Some("foo"));
            assert!(err
                .to_string()
                .starts_with("unknown key \"foo\" (allowed keys: "));
        }
        // Values TOML allows but lstack never uses still name their key.
        for value in [
            "{ a = { b = [1, { c = 2 }] } }",
            "1979-05-27T07:32:00Z",
            "[[1], [\"x\"]]",
        ] {
            let err = toml_with(&format!("host_addr = {value}")).unwrap_err();
            assert_eq!(err.field(), Some("host_addr"), "{err}");
        }
        // A TOML table is an unknown key too, not a silently ignored section.
        let err =
            LstackConfig::from_toml_str(&format!("{MINIMAL_TOML}[lstack]\nx = 1\n")).unwrap_err();
        assert_eq!(err.field(), Some("lstack"));
    }

    #[test]
    fn typed_value_message() {
        let err = toml_with("devices = \"01:00:5e:00:00:01\"").unwrap_err();
        assert_eq!(
            err.to_string(),
            "devices = \"01:00:5e:00:00:01\": not a usable MAC address: it is a multicast \
             address (the first octet is odd); a port needs a unicast one"
        );
        let err = conf_with("use_ltran=2").unwrap_err();
        assert_eq!(
            err.to_string(),
            "use_ltran = 2: invalid value: integer `2`, expected true/false or 1/0"
        );
    }

    #[test]
    fn stack_thread_mode_messages() {
        let err = conf_with("stack_thread_mode=\"fast\"").unwrap_err();
        assert_eq!(
            err.to_string(),
            "stack_thread_mode = \"fast\": expected \"run-to-wakeup\" or \"run-to-completion\""
        );
        let err = conf_with("stack_thread_mode=1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "stack_thread_mode = 1: invalid type: integer `1`, expected a string"
        );
        for mode in [
            StackThreadMode::RunToWakeup,
            StackThreadMode::RunToCompletion,
        ] {
            assert_eq!(mode.to_string().parse::<StackThreadMode>(), Ok(mode));
        }
    }

    #[test]
    fn gateway_rules() {
        let err = toml_with("gateway_addr = \"10.1.0.1\"").unwrap_err();
        assert_eq!(
            err.to_string(),
            "gateway_addr = 10.1.0.1 is not inside host_addr/mask_addr 192.168.1.10/255.255.255.0"
        );
        let err = toml_with("gateway_addr = \"192.168.1.10\"").unwrap_err();
        assert!(matches!(err, ConfigError::GatewayIsHost { .. }), "{err}");
        assert_eq!(
            toml_with("gateway_addr = \"192.168.1.254\"")
                .unwrap()
                .gateway_addr,
            Some(Ipv4Addr::new(192, 168, 1, 254))
        );
    }

    #[rstest]
    #[case("192.168.1.0", "255.255.255.0", Some("network"))]
    #[case("192.168.1.255", "255.255.255.0", Some("broadcast"))]
    #[case("10.255.255.255", "255.0.0.0", Some("broadcast"))]
    #[case("192.168.1.8", "255.255.255.252", Some("network"))]
    #[case("192.168.1.11", "255.255.255.252", Some("broadcast"))]
    #[case("192.168.1.9", "255.255.255.252", None)]
    #[case("192.168.1.10", "255.255.255.252", None)]
    #[case("192.168.1.10", "255.255.255.254", None)]
    #[case("192.168.1.11", "255.255.255.254", None)]
    #[case("192.168.1.10", "255.255.255.255", None)]
    fn host_addr_in_subnet(#[case] host: &str, #[case] mask: &str, #[case] which: Option<&str>) {
        let result = toml_with(&format!("host_addr = \"{host}\"\nmask_addr = \"{mask}\""));
        match which {
            None => {
                result.unwrap();
            }
            Some(which) => {
                let err = result.unwrap_err();
                assert_eq!(err.field(), Some("host_addr"));
                assert_eq!(
                    err.to_string(),
                    format!("host_addr = {host} is the {which} address of host_addr/mask_addr {host}/{mask}")
                );
            }
        }
    }

    #[rstest]
    #[case("0.0.0.0")]
    #[case("127.0.0.1")]
    #[case("224.0.0.1")]
    #[case("255.255.255.255")]
    fn host_addr_must_be_unicast(#[case] host: &str) {
        let err = toml_with(&format!(
            "host_addr = \"{host}\"\nmask_addr = \"255.255.255.255\""
        ))
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::HostAddrNotUnicast { .. }),
            "{err}"
        );
    }

    #[rstest]
    #[case("255.255.255.0", Some(24))]
    #[case("255.255.255.255", Some(32))]
    #[case("128.0.0.0", Some(1))]
    #[case("0.0.0.0", None)]
    #[case("255.0.255.0", None)]
    #[case("0.255.255.255", None)]
    #[case("255.255.255.253", None)]
    fn netmask_must_be_contiguous(#[case] mask: &str, #[case] prefix: Option<u8>) {
        let mut config = minimal();
        config.host_addr = Ipv4Addr::new(192, 168, 1, 10);
        config.mask_addr = mask.parse().unwrap();
        match prefix {
            Some(prefix) => {
                config.validate().unwrap();
                assert_eq!(config.netmask_prefix_len(), prefix);
            }
            None => {
                let err = config.validate().unwrap_err();
                assert!(matches!(err, ConfigError::BadNetmask { .. }), "{err}");
                assert!(err.to_string().starts_with(&format!("mask_addr = {mask} ")));
            }
        }
    }

    /// The path to the kernel is for a standalone lstack, one of its two
    /// keys at a time, on one port; every other combination is refused
    /// naming the key, in both syntaxes and for configurations built in code.
    #[test]
    fn the_kernel_path_is_for_a_standalone_lstack_on_one_port() {
        assert!(toml_with("kni_switch = true").unwrap().kni_switch);
        assert!(conf_with("flow_bifurcation=1").unwrap().flow_bifurcation);
        for (lines, field, why) in [
            ("use_ltran = true\nkni_switch = true", "kni_switch", "ltran"),
            (
                "use_ltran = true\nflow_bifurcation = 1",
                "flow_bifurcation",
                "ltran",
            ),
            (
                "kni_switch = 1\nflow_bifurcation = 1",
                "kni_switch",
                "successor",
            ),
        ] {
            let err = toml_with(lines).unwrap_err();
            assert_eq!(err.field(), Some(field), "{err}");
            assert!(err.to_string().contains(why), "{err}");
        }
        let err = conf_with("use_ltran=1\nkni_switch=1").unwrap_err();
        assert_eq!(err.field(), Some("kni_switch"), "{err}");
        toml_with("use_ltran = true").unwrap();
        let mut c = minimal();
        (c.use_ltran, c.kni_switch) = (true, true);
        assert_eq!(c.validate().unwrap_err().field(), Some("kni_switch"));
        let mut c = minimal();
        (c.bond_mode, c.flow_bifurcation) = (limits::BOND_MODE_ACTIVE_BACKUP, true);
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains("flow_bifurcation"), "{err}");
    }

    /// A standalone lstack takes any VLAN id of the range; behind ltran a
    /// VLAN is refused, naming the key, its value and why, in both syntaxes.
    #[test]
    fn nic_vlan_mode_is_for_a_standalone_lstack() {
        for id in [0, 100, 4094] {
            assert_eq!(
                toml_with(&format!("nic_vlan_mode = {id}"))
                    .unwrap()
                    .nic_vlan_mode,
                id
            );
            assert_eq!(
                conf_with(&format!("nic_vlan_mode={id}"))
                    .unwrap()
                    .nic_vlan_mode,
                id
            );
        }
        toml_with("use_ltran = true\nnic_vlan_mode = -1").unwrap();
        let err = toml_with(
            "nic_vlan_mode = 100\nbond_mode = 1\n\
             bond_slave_mac = [\"aa:bb:cc:dd:ee:01\", \"aa:bb:cc:dd:ee:02\"]",
        )
        .unwrap_err();
        assert_eq!(err.field(), Some("nic_vlan_mode"), "{err}");
        assert!(err.to_string().contains("bond_mode = 1"), "{err}");
        for err in [
            toml_with("use_ltran = true\nnic_vlan_mode = 100").unwrap_err(),
            conf_with("use_ltran=1\nnic_vlan_mode=100").unwrap_err(),
        ] {
            assert_eq!(err.field(), Some("nic_vlan_mode"), "{err}");
            let message = err.to_string();
            assert!(
                message.starts_with("nic_vlan_mode = 100 and use_ltran = true cannot be used")
                    && message.contains("ltran owns the port"),
                "{message}"
            );
        }
        for bad in ["-2", "4095"] {
            let err = toml_with(&format!("nic_vlan_mode = {bad}")).unwrap_err();
            assert!(
                err.to_string().contains(bad) && err.to_string().contains("-1..=4094"),
                "{err}"
            );
        }
    }

    #[test]
    fn stack_interrupt_conflicts() {
        let err =
            conf_with("stack_interrupt=0\nstack_thread_mode=\"run-to-completion\"").unwrap_err();
        assert_eq!(err.field(), Some("stack_interrupt"), "{err}");
        assert!(err.to_string().contains("run-to-completion"), "{err}");
        conf_with("stack_interrupt=1\nstack_thread_mode=\"run-to-completion\"").unwrap();
        assert!(!conf_with("stack_interrupt=0").unwrap().stack_interrupt);
        assert_eq!(
            conf_with("stack_thread_mode=\"run-to-completion\"")
                .unwrap()
                .stack_thread_mode,
            StackThreadMode::RunToCompletion
        );
    }

    /// Each key lstack does not implement is refused beyond the one value
    /// it behaves as, naming the key, the value and what to do instead.
    #[rstest]
    #[case("low_power_mode", "1", "0")]
    #[case("mbuf_count_per_conn", "200", "170")]
    #[case("stack_num", "1", "0")]
    #[case("send_cache_mode", "1", "0")]
    #[case("use_sockmap", "1", "0")]
    #[case("tuple_filter", "1", "0")]
    #[case("num_process", "2", "1")]
    #[case("process_idx", "1", "0")]
    #[case("process_numa", "\"0\"", "(none)")]
    fn unimplemented_values_are_refused(
        #[case] field: &str,
        #[case] value: &str,
        #[case] accepted: &str,
    ) {
        let err = toml_with(&format!("{field} = {value}")).unwrap_err();
        assert_eq!(err.field(), Some(field), "{err}");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("{field} = "))
                && message.contains(&format!("is not implemented (only {accepted} is): ")),
            "{message}"
        );
        let key = support::find(support::LSTACK, field).unwrap();
        assert!(message.ends_with(key.note), "{message}");
        // The accepted value itself loads (gazelle files spell defaults out).
        if !accepted.starts_with('(') {
            toml_with(&format!("{field} = {accepted}")).unwrap();
        }
    }

    /// `xdp_eth_name` names the interface of a `net_af_xdp` vdev of
    /// `dpdk_args` (either `--vdev` spelling), and nothing else.
    #[test]
    fn xdp_eth_name_must_be_an_af_xdp_vdev_iface() {
        let args = "dpdk_args = [\"--vdev=net_af_packet0,iface=eth1\", \"--vdev\", \"net_af_xdp0,iface=eth0,start_queue=0\"]";
        let c = toml_with(&format!(
            "{args}\nxdp_eth_name = \"eth0\"\nflow_bifurcation = 1"
        ))
        .unwrap();
        assert_eq!(c.xdp_eth_name.as_deref(), Some("eth0"));
        assert_eq!(af_xdp_vdevs(&c.dpdk_args), vec![(2, "eth0".to_owned())]);
        for name in ["eth1", "eth2"] {
            let err = toml_with(&format!("{args}\nxdp_eth_name = \"{name}\"")).unwrap_err();
            assert_eq!(err.field(), Some("xdp_eth_name"), "{err}");
            assert!(err.to_string().contains("interfaces there: eth0"), "{err}");
        }
        let err = toml_with("xdp_eth_name = \"eth0\"").unwrap_err();
        assert!(err.to_string().contains("interfaces there: none"), "{err}");
        assert_eq!(
            af_xdp_vdevs(&["--vdev=net_af_xdp1,start_queue=0,iface=x".to_owned()]),
            vec![(0, "x".to_owned())]
        );
    }

    /// Every key of the schema is classified, in the schema's order, and
    /// every refused key is refused by `validate` (the table and the checks
    /// cannot drift apart).
    #[test]
    fn every_key_is_classified() {
        let mut full = minimal();
        full.gateway_addr = Some(Ipv4Addr::new(192, 168, 1, 1));
        full.host_addr6 = Some("fd00::2".parse().unwrap());
        full.app_exclude_cpus = Some("1".parse().unwrap());
        full.process_numa = Some("0".parse().unwrap());
        full.xdp_eth_name = Some("eth0".into());
        full.dpdk_args = vec!["--vdev=net_af_xdp0,iface=eth0".into()];
        let text = full.to_toml_string();
        let keys = crate::test_support::top_level_keys(&text);
        let table: Vec<&str> = support::LSTACK.iter().map(|k| k.name).collect();
        assert_eq!(keys, table);
    }

    #[test]
    fn pool_size_and_prefix() {
        let c = minimal();
        assert_eq!(c.mbuf_pool_size(), 1500 * 170 + 4096 + 2048);
        assert_eq!(c.netmask_prefix_len(), 24);
        let mut huge = minimal();
        huge.tcp_conn_count = u32::MAX;
        huge.mbuf_count_per_conn = u32::MAX;
        huge.nic_rxqueue_size = u32::MAX;
        huge.nic_txqueue_size = u32::MAX;
        assert_eq!(huge.mbuf_pool_size(), u64::MAX);
    }

    #[test]
    fn validate_checks_values_built_in_code() {
        let mut c = minimal();
        c.tcp_conn_count = 0;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::OutOfRange {
                field: "tcp_conn_count",
                ..
            })
        ));
    }

    #[test]
    fn the_examples_commented_bond_loads_in_both_syntaxes() {
        let toml = include_str!("../examples/lstack.toml").replace("# bond_", "bond_");
        let t = LstackConfig::from_toml_str(&toml).unwrap();
        let conf = EXAMPLE_CONF.replace("#bond_", "bond_");
        let c = LstackConfig::from_gazelle_str(&conf).unwrap();
        assert_eq!((t.bond_mode, t.bond_miimon), (1, 100));
        assert_eq!(t.bond_slave_mac.len(), 2);
        assert_eq!(
            (c.bond_mode, c.bond_miimon, &c.bond_slave_mac),
            (t.bond_mode, t.bond_miimon, &t.bond_slave_mac)
        );
    }

    #[test]
    fn example_round_trips_through_toml() {
        let config = LstackConfig::from_gazelle_str(EXAMPLE_CONF).unwrap();
        let text = config.to_toml_string();
        assert_eq!(LstackConfig::from_toml_str(&text).unwrap(), config);
        let minimal_text = minimal().to_toml_string();
        assert!(!minimal_text.contains("gateway_addr"), "{minimal_text}");
        assert_eq!(
            LstackConfig::from_toml_str(&minimal_text).unwrap(),
            minimal()
        );
    }

    prop_compose! {
        /// Any configuration `validate` accepts: the keys lstack refuses
        /// stay at the one value it accepts.
        fn any_config()(
            mac in any_mac(),
            num_cpus in any_cpu_list(),
            exclude in proptest::option::of(any_cpu_list()),
            host_addr6 in proptest::option::of(any_ipv6_cidr()),
            prefix in 8u8..=30,
            host_low in 1u32..=u32::MAX,
            numbers in (limits::TCP_CONN_COUNT, limits::UDP_CONN_COUNT, limits::MEM_CACHE_NUM,
                        limits::RPC_NUMBER, limits::NIC_READ_NUMBER, 9u32..=13, 9u32..=13),
            flags in proptest::collection::vec(any::<bool>(), 8),
            dpdk_args in proptest::collection::vec("[ -~]{0,12}", 0..6),
            vlan in limits::NIC_VLAN_MODE,
            unix_prefix in "[A-Za-z0-9_-]{0,32}",
        ) -> LstackConfig {
            let mask = u32::MAX << (32 - u32::from(prefix));
            // A host in 10.0.0.0/8 that is neither network nor broadcast.
            let host_part = (host_low % (!mask - 1)) + 1;
            let network = 0x0a00_0000 & mask;
            let mut c = LstackConfig::new(
                Ipv4Addr::from(network | host_part),
                Ipv4Addr::from(mask),
                mac,
            );
            c.gateway_addr = flags[7].then(|| Ipv4Addr::from(network | if host_part == 1 { 2 } else { 1 }));
            c.num_cpus = num_cpus;
            c.app_exclude_cpus = exclude;
            c.host_addr6 = host_addr6;
            (c.tcp_conn_count, c.udp_conn_count, c.mem_cache_num, c.rpc_number, c.nic_read_number) =
                (numbers.0, numbers.1, numbers.2, numbers.3, numbers.4);
            c.nic_rxqueue_size = 1 << numbers.5;
            c.nic_txqueue_size = 1 << numbers.6;
            c.use_ltran = flags[0];
            // A VLAN only for a standalone lstack.
            c.nic_vlan_mode = if c.use_ltran { -1 } else { vlan };
            c.app_bind_numa = flags[1];
            c.main_thread_affinity = flags[2];
            c.udp_enable = flags[3];
            c.stack_thread_mode = if flags[4] { StackThreadMode::RunToCompletion } else { StackThreadMode::RunToWakeup };
            c.stack_interrupt = flags[4] || flags[5];
            c.dpdk_args = dpdk_args;
            c.unix_prefix = unix_prefix;
            c
        }
    }

    proptest! {
        #[test]
        fn config_round_trips_through_toml(config in any_config()) {
            toml_round_trip(&config)?;
        }

        #[test]
        fn arbitrary_gazelle_text_never_panics(text in "(\\PC|\n){0,200}") {
            let _ = LstackConfig::from_gazelle_str(&text);
        }
    }
}
