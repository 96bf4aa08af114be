//! The configuration of ltran, the forwarder that owns the NIC and hands
//! packets to several lstack processes (gazelle's `ltran.conf`).
//!
//! [`LtranConfig`] is the one type for it, read from TOML (our default,
//! `/etc/gazelle/ltran.toml`) or from gazelle's own syntax (`ltran.conf`), and
//! serialized back to TOML. Key names, meanings, defaults and ranges follow
//! gazelle's `ltran_param.c`, except where a field's doc says otherwise; the
//! allowed ranges are public in [`limits`]. [`LtranConfig::check_lstack`]
//! says whether an lstack configuration can run behind this ltran.
//!
//! One key keeps a meaning its name hides: `dispatch_subnet_length` is the
//! number of *host* bits of the dispatch subnet, not its prefix length, so
//! gazelle's sample `dispatch_subnet="192.168.1.0"`,
//! `dispatch_subnet_length=8` is 192.168.1.0/24. Files keep gazelle's meaning
//! so that they import unchanged; [`LtranConfig::dispatch_prefix_len`] gives
//! the prefix length.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::check::{check_count, check_range, check_unix_prefix};
use crate::de::{argument_list, comma_mac_list, flag, port_mask_list};
use crate::error::ConfigError;
use crate::format::config_file_api;
use crate::lstack::LstackConfig;
use crate::value::{Ipv6Cidr, MacAddr, PortMask};

/// Where [`LtranConfig::load_from_env`] looks when [`LTRAN_CONF_ENV`] is not
/// set. gazelle's default is `/etc/gazelle/ltran.conf`; ours is TOML.
pub const DEFAULT_LTRAN_CONF_PATH: &str = "/etc/gazelle/ltran.toml";

/// Environment variable naming the ltran configuration file. Ours, mirroring
/// lstack's `LSTACK_CONF_PATH`: gazelle's ltran takes `--config-file` only.
pub const LTRAN_CONF_ENV: &str = "LTRAN_CONF_PATH";

/// Allowed values of the numeric and list keys, checked by
/// [`LtranConfig::validate`].
pub mod limits {
    use std::ops::RangeInclusive;

    /// `dispatch_max_clients`, as in gazelle: up to 32 lstack processes with
    /// one stack thread each, or one process with up to 32 stack threads.
    pub const DISPATCH_MAX_CLIENTS: RangeInclusive<u32> = 1..=32;

    /// `dispatch_subnet_length`, the number of host bits of the dispatch
    /// subnet (not its prefix length): 1..=16, i.e. a /31 (2 addresses) to a
    /// /16 (65,536 addresses). These are gazelle's own bounds, kept so that a
    /// file gazelle accepts imports and one it refuses is refused here too;
    /// the subnet only has to hold the addresses of at most
    /// [`DISPATCH_MAX_CLIENTS`] lstack instances, so a /16 is already ample.
    pub const DISPATCH_SUBNET_LENGTH: RangeInclusive<u32> = 1..=16;

    /// The only `bond_mode` ltran supports: 1, active-backup (one port
    /// carries the traffic, the others stand by).
    pub const BOND_MODE_ACTIVE_BACKUP: i32 = 1;

    /// `bond_miimon`, how often the bond checks its ports' links, in
    /// milliseconds. gazelle takes any positive number (up to 24 days); we
    /// stop at one minute: a bond that notices a dead link later than that
    /// fails over too late to be worth having, and a larger number is more
    /// likely a unit mistake (seconds or microseconds) than a wish.
    pub const BOND_MIIMON: RangeInclusive<u32> = 1..=60_000;

    /// How many bonds `bond_ports` may describe (one port mask each), as in
    /// gazelle (`GAZELLE_MAX_BOND_NUM`).
    pub const BONDS: RangeInclusive<usize> = 1..=2;

    /// `bond_mtu`, as in gazelle: 68 is the smallest MTU IPv4 allows
    /// (RFC 791), and gazelle has no jumbo frames. With a
    /// `dispatch_subnet6` the floor is [`IPV6_MIN_MTU`].
    pub const BOND_MTU: RangeInclusive<u32> = 68..=1500;

    /// The smallest MTU IPv6 allows (RFC 8200), required of `bond_mtu` when
    /// ltran dispatches IPv6.
    pub const IPV6_MIN_MTU: u32 = 1280;

    /// `bond_rx_queue_num` and `bond_tx_queue_num`, as in gazelle.
    pub const BOND_QUEUE_NUM: RangeInclusive<u32> = 1..=64;

    /// `tcp_conn_scan_interval`, in seconds. gazelle allows 0..=86400 (a
    /// day); we refuse 0, which in gazelle sweeps the connection and listen
    /// tables, under their lock, on every pass of the forwarding loop (and
    /// in ltran would forget a closed connection before its last ACK).
    pub const TCP_CONN_SCAN_INTERVAL: RangeInclusive<u32> = 1..=86_400;

    /// `rx_mbuf_pool_size` and `tx_mbuf_pool_size` (gazelle checks neither).
    /// ltran's pools keep a per-lcore cache of 512 mbufs, and DPDK refuses a
    /// pool smaller than 1.5 times its cache (768), so the floor is the next
    /// power of two; the ceiling is lstack's
    /// [`MAX_MBUFS`](crate::lstack::limits::MAX_MBUFS), 2^24 mbufs (some
    /// 36 GiB of hugepages), far above any real need.
    pub const MBUF_POOL_SIZE: RangeInclusive<u32> = 1024..=crate::lstack::limits::MAX_MBUFS as u32;

    /// Longest `unix_prefix`: lstack's rule, since the two must be equal.
    pub const UNIX_PREFIX_MAX_LEN: usize = crate::lstack::limits::UNIX_PREFIX_MAX_LEN;
}

/// The module ltran moves packets with. Reserved by gazelle, which reads the
/// key but knows only `"dpdk"`; so do we.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardKit {
    /// DPDK poll-mode drivers (`"dpdk"`).
    #[default]
    Dpdk,
}

/// Everything ltran reads from its configuration file.
///
/// Keys are gazelle's. Booleans may be written `true`/`false` or gazelle's
/// `1`/`0`; lists may be written as TOML lists or as gazelle's single
/// strings. Only `dispatch_subnet`, `dispatch_subnet_length`, `bond_ports`
/// and `bond_macs` are required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LtranConfig {
    /// The forwarding module; only `"dpdk"` (the default) exists.
    #[serde(default)]
    pub forward_kit: ForwardKit,

    /// DPDK EAL arguments, as a list or as gazelle's single string split at
    /// spaces (`"-l 0,1 --socket-mem 1024,0,0,0 --huge-dir /mnt/hugepages"`).
    /// gazelle requires the key and its builds need `--legacy-mem` and
    /// `--map-perfect`; we check neither. Default: none, as lstack's
    /// `dpdk_args`.
    #[serde(default, deserialize_with = "argument_list")]
    pub forward_kit_args: Vec<String>,

    /// Whether traffic no lstack handles goes to the kernel through rte_kni
    /// (DPDK before 23.11 only). Default `false`.
    #[serde(default, deserialize_with = "flag")]
    pub kni_switch: bool,

    /// Most lstack clients (processes, or stack threads of one process)
    /// ltran serves. Range [`limits::DISPATCH_MAX_CLIENTS`]. gazelle requires
    /// the key; our default is 32, its maximum, since a lower cap only turns
    /// clients away.
    #[serde(default = "defaults::dispatch_max_clients")]
    pub dispatch_max_clients: u32,

    /// Network address of the IPv4 subnet whose packets ltran dispatches to
    /// lstack instances (their `host_addr`s lie inside it). Required; must be
    /// the subnet's network address (host bits zero), with a non-zero network
    /// part, and not loopback, multicast or reserved.
    pub dispatch_subnet: Ipv4Addr,

    /// Number of host bits of the dispatch subnet (so 8 with
    /// `192.168.1.0` means 192.168.1.0/24; see the module doc). Required;
    /// range [`limits::DISPATCH_SUBNET_LENGTH`].
    pub dispatch_subnet_length: u32,

    /// The IPv6 subnet ltran dispatches, such as `"fd00:1::/64"` (a bare
    /// address means /64); it must be written as the network address. Our
    /// extension: gazelle's ltran leaves IPv6 to the kernel. Requires
    /// `bond_mtu` of at least [`limits::IPV6_MIN_MTU`]. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_subnet6: Option<Ipv6Cidr>,

    /// Bonding mode; only 1 (active-backup, the default) is supported, see
    /// [`limits::BOND_MODE_ACTIVE_BACKUP`].
    #[serde(default = "defaults::bond_mode")]
    pub bond_mode: i32,

    /// How often each bond checks its ports' links, in milliseconds.
    /// Range [`limits::BOND_MIIMON`]. gazelle requires the key; our default
    /// is 100, the value of the `ltran.conf` gazelle ships.
    #[serde(default = "defaults::bond_miimon")]
    pub bond_miimon: u32,

    /// The bonds ltran creates, one DPDK port mask each (`"0x3"` bonds ports
    /// 0 and 1). Written as a list or as gazelle's single string
    /// `"0x3,0xc"`. Required: [`limits::BONDS`] masks, no port in two of
    /// them.
    #[serde(deserialize_with = "port_mask_list")]
    pub bond_ports: Vec<PortMask>,

    /// The MAC address of each bond, in the order of `bond_ports` (one per
    /// bond, not per port). Written as a list or as gazelle's single string
    /// `"aa:bb:cc:dd:ee:ff,aa:bb:cc:dd:ee:fe"`. Required; unicast, no
    /// duplicates. An lstack behind ltran uses one of them as its `devices`.
    #[serde(deserialize_with = "comma_mac_list")]
    pub bond_macs: Vec<MacAddr>,

    /// MTU of the bonds. Default 1500, range [`limits::BOND_MTU`].
    #[serde(default = "defaults::bond_mtu")]
    pub bond_mtu: u32,

    /// Receive queues per bond. Default 1, range [`limits::BOND_QUEUE_NUM`].
    /// gazelle accepts the key but always uses 1.
    #[serde(default = "defaults::one")]
    pub bond_rx_queue_num: u32,

    /// Transmit queues per bond. Default 1, range
    /// [`limits::BOND_QUEUE_NUM`]. gazelle accepts the key but always uses 1.
    #[serde(default = "defaults::one")]
    pub bond_tx_queue_num: u32,

    /// How long, in seconds, a closed TCP connection (reset, or finished
    /// both ways) keeps its entry in ltran's connection table: gazelle's
    /// sweep interval, which ltran replaces by ageing entries a few at a
    /// time (half-open ones leave after seconds, whatever this says).
    /// Default 600 (gazelle's; its sample file sets 10), range
    /// [`limits::TCP_CONN_SCAN_INTERVAL`].
    #[serde(default = "defaults::tcp_conn_scan_interval")]
    pub tcp_conn_scan_interval: u32,

    /// Prefix of ltran's control sockets, so several ltran/lstack sets can
    /// share a host; every lstack behind this ltran, and `gazellectl -u`,
    /// must use the same one. At most 32 characters from `A-Z a-z 0-9 _ -`.
    /// Default `""`.
    #[serde(default)]
    pub unix_prefix: String,

    /// mbufs in each bond's receive pool. Default 307200 (gazelle's), range
    /// [`limits::MBUF_POOL_SIZE`]. gazelle's sample file misspells the key
    /// `rx_pool_mbuf_size`, which is refused here as unknown.
    #[serde(default = "defaults::rx_mbuf_pool_size")]
    pub rx_mbuf_pool_size: u32,

    /// mbufs in each bond's transmit pool. Default 30720 (gazelle's), range
    /// [`limits::MBUF_POOL_SIZE`].
    #[serde(default = "defaults::tx_mbuf_pool_size")]
    pub tx_mbuf_pool_size: u32,
}

/// Default values, as serde wants functions; [`LtranConfig::new`] uses them
/// too so there is one source for each.
mod defaults {
    pub(super) fn dispatch_max_clients() -> u32 {
        32
    }
    pub(super) fn bond_mode() -> i32 {
        super::limits::BOND_MODE_ACTIVE_BACKUP
    }
    pub(super) fn bond_miimon() -> u32 {
        100
    }
    pub(super) fn bond_mtu() -> u32 {
        1500
    }
    pub(super) fn one() -> u32 {
        1
    }
    pub(super) fn tcp_conn_scan_interval() -> u32 {
        600
    }
    pub(super) fn rx_mbuf_pool_size() -> u32 {
        307_200
    }
    pub(super) fn tx_mbuf_pool_size() -> u32 {
        30_720
    }
}

config_file_api!(
    type = LtranConfig,
    gazelle_file = "ltran.conf",
    env = LTRAN_CONF_ENV,
    default_path = DEFAULT_LTRAN_CONF_PATH,
);

impl LtranConfig {
    /// A configuration with the four required values and every other key at
    /// its default. `dispatch_subnet_length` counts host bits (8 for a /24).
    pub fn new(
        dispatch_subnet: Ipv4Addr,
        dispatch_subnet_length: u32,
        bond_ports: Vec<PortMask>,
        bond_macs: Vec<MacAddr>,
    ) -> Self {
        Self {
            forward_kit: ForwardKit::default(),
            forward_kit_args: Vec::new(),
            kni_switch: false,
            dispatch_max_clients: defaults::dispatch_max_clients(),
            dispatch_subnet,
            dispatch_subnet_length,
            dispatch_subnet6: None,
            bond_mode: defaults::bond_mode(),
            bond_miimon: defaults::bond_miimon(),
            bond_ports,
            bond_macs,
            bond_mtu: defaults::bond_mtu(),
            bond_rx_queue_num: defaults::one(),
            bond_tx_queue_num: defaults::one(),
            tcp_conn_scan_interval: defaults::tcp_conn_scan_interval(),
            unix_prefix: String::new(),
            rx_mbuf_pool_size: defaults::rx_mbuf_pool_size(),
            tx_mbuf_pool_size: defaults::tx_mbuf_pool_size(),
        }
    }

    /// Checks value ranges and the rules between keys; loading runs it, and
    /// code that builds or edits a configuration should too.
    ///
    /// Besides the per-key ranges in [`limits`]: `bond_mode` is 1;
    /// `dispatch_subnet` is the network address of its subnet, with a
    /// non-zero network part, outside loopback, multicast and reserved space;
    /// `dispatch_subnet6` is a network address too and comes with a
    /// `bond_mtu` of at least [`limits::IPV6_MIN_MTU`]; `bond_ports` lists
    /// [`limits::BONDS`] masks sharing no port; `bond_macs` has one distinct
    /// address per mask; `unix_prefix` is well-formed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range(
            "dispatch_max_clients",
            self.dispatch_max_clients,
            limits::DISPATCH_MAX_CLIENTS,
        )?;
        check_range(
            "dispatch_subnet_length",
            self.dispatch_subnet_length,
            limits::DISPATCH_SUBNET_LENGTH,
        )?;
        if self.bond_mode != limits::BOND_MODE_ACTIVE_BACKUP {
            return Err(ConfigError::InvalidValue {
                field: "bond_mode".into(),
                value: self.bond_mode.to_string(),
                reason: "only active-backup (1) is supported by ltran".into(),
            });
        }
        check_range("bond_miimon", self.bond_miimon, limits::BOND_MIIMON)?;
        check_range("bond_mtu", self.bond_mtu, limits::BOND_MTU)?;
        for (field, value) in [
            ("bond_rx_queue_num", self.bond_rx_queue_num),
            ("bond_tx_queue_num", self.bond_tx_queue_num),
        ] {
            check_range(field, value, limits::BOND_QUEUE_NUM)?;
            if value != 1 {
                return Err(crate::support::refusal(
                    crate::support::LTRAN,
                    field,
                    value.to_string(),
                ));
            }
        }
        check_range(
            "tcp_conn_scan_interval",
            self.tcp_conn_scan_interval,
            limits::TCP_CONN_SCAN_INTERVAL,
        )?;
        for (field, value) in [
            ("rx_mbuf_pool_size", self.rx_mbuf_pool_size),
            ("tx_mbuf_pool_size", self.tx_mbuf_pool_size),
        ] {
            check_range(field, value, limits::MBUF_POOL_SIZE)?;
        }
        check_unix_prefix(&self.unix_prefix)?;
        self.check_dispatch_subnet()?;
        self.check_dispatch_subnet6()?;
        self.check_bonds()
    }

    fn check_dispatch_subnet(&self) -> Result<(), ConfigError> {
        let subnet = self.dispatch_subnet;
        let refuse = |reason: String| {
            Err(ConfigError::InvalidValue {
                field: "dispatch_subnet".into(),
                value: format!("\"{subnet}\""),
                reason,
            })
        };
        let network = self.dispatch_network(subnet);
        if u32::from(network) == 0 {
            return refuse(format!(
                "it lies in 0.0.0.0/{}, whose network part is zero",
                self.dispatch_prefix_len()
            ));
        }
        if subnet.is_loopback() {
            return refuse("it is a loopback address (127.0.0.0/8)".into());
        }
        if subnet.octets()[0] >= 224 {
            return refuse("it is multicast or reserved space (224.0.0.0 and above)".into());
        }
        if network != subnet {
            return refuse(format!(
                "it is not the network address of its /{} (dispatch_subnet_length = {} host \
                 bits); write \"{network}\"",
                self.dispatch_prefix_len(),
                self.dispatch_subnet_length
            ));
        }
        Ok(())
    }

    fn check_dispatch_subnet6(&self) -> Result<(), ConfigError> {
        let Some(subnet6) = self.dispatch_subnet6 else {
            return Ok(());
        };
        let network =
            Ipv6Addr::from(u128::from(subnet6.addr()) & prefix_mask6(subnet6.prefix_len()));
        if network != subnet6.addr() {
            return Err(ConfigError::InvalidValue {
                field: "dispatch_subnet6".into(),
                value: format!("\"{subnet6}\""),
                reason: format!(
                    "it is not a network address; write \"{network}/{}\"",
                    subnet6.prefix_len()
                ),
            });
        }
        if self.bond_mtu < limits::IPV6_MIN_MTU {
            return Err(ConfigError::Conflict {
                first: format!("bond_mtu = {}", self.bond_mtu),
                second: format!("dispatch_subnet6 = \"{subnet6}\""),
                reason: "IPv6 needs an MTU of at least 1280 (RFC 8200); raise bond_mtu",
            });
        }
        Ok(())
    }

    fn check_bonds(&self) -> Result<(), ConfigError> {
        check_count("bond_ports", self.bond_ports.len(), limits::BONDS)?;
        let mut used = 0u32;
        for mask in &self.bond_ports {
            let shared = mask.bits() & used;
            if shared != 0 {
                return Err(ConfigError::Duplicate {
                    field: "bond_ports",
                    value: format!("port {}", shared.trailing_zeros()),
                });
            }
            used |= mask.bits();
        }
        if self.bond_macs.len() != self.bond_ports.len() {
            return Err(ConfigError::BondMacCount {
                bonds: self.bond_ports.len(),
                macs: self.bond_macs.len(),
            });
        }
        for (i, mac) in self.bond_macs.iter().enumerate() {
            if self.bond_macs[..i].contains(mac) {
                return Err(ConfigError::Duplicate {
                    field: "bond_macs",
                    value: mac.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The prefix length of the IPv4 dispatch subnet:
    /// `32 - dispatch_subnet_length` (24 for a length of 8). Only meaningful
    /// once `validate()` has accepted the length.
    pub fn dispatch_prefix_len(&self) -> u8 {
        // Saturates to 0 for out-of-range lengths, so it cannot fail.
        u8::try_from(32u32.saturating_sub(self.dispatch_subnet_length)).unwrap_or(0)
    }

    /// Whether ltran dispatches packets for IPv4 address `addr` (it lies in
    /// `dispatch_subnet`).
    pub fn dispatch_contains(&self, addr: Ipv4Addr) -> bool {
        self.dispatch_network(addr) == self.dispatch_subnet
    }

    /// Whether ltran dispatches packets for IPv6 address `addr` (there is a
    /// `dispatch_subnet6` and `addr` lies in it).
    pub fn dispatch6_contains(&self, addr: Ipv6Addr) -> bool {
        self.dispatch_subnet6.is_some_and(|subnet6| {
            let mask = prefix_mask6(subnet6.prefix_len());
            u128::from(addr) & mask == u128::from(subnet6.addr()) & mask
        })
    }

    /// `addr` with the dispatch subnet's host bits cleared.
    fn dispatch_network(&self, addr: Ipv4Addr) -> Ipv4Addr {
        let host_mask = 1u32
            .checked_shl(self.dispatch_subnet_length)
            .map_or(u32::MAX, |size| size - 1);
        Ipv4Addr::from(u32::from(addr) & !host_mask)
    }

    /// Checks that `lstack` can run behind this ltran, as gazelle requires:
    /// it has `use_ltran` on, its `host_addr` lies in the dispatch subnet,
    /// its `devices` MAC is one of `bond_macs` and its `unix_prefix` is
    /// ltran's (else it cannot find ltran's socket). Our IPv6 extension
    /// adds: an lstack with `host_addr6` needs a `dispatch_subnet6` holding
    /// it. The error names the lstack key at fault.
    ///
    /// Both configurations are assumed to have passed their own
    /// `validate()`.
    pub fn check_lstack(&self, lstack: &LstackConfig) -> Result<(), ConfigError> {
        let mismatch = |field, value: String, reason: String| {
            Err(ConfigError::LtranMismatch {
                field,
                value,
                reason,
            })
        };
        if !lstack.use_ltran {
            return mismatch(
                "use_ltran",
                "false".into(),
                "this lstack drives the NIC itself; set use_ltran = 1 to run it behind ltran"
                    .into(),
            );
        }
        if !self.dispatch_contains(lstack.host_addr) {
            return mismatch(
                "host_addr",
                lstack.host_addr.to_string(),
                format!(
                    "it is outside ltran's dispatch subnet {}/{} (dispatch_subnet = \"{}\", \
                     dispatch_subnet_length = {})",
                    self.dispatch_subnet,
                    self.dispatch_prefix_len(),
                    self.dispatch_subnet,
                    self.dispatch_subnet_length
                ),
            );
        }
        if !self.bond_macs.contains(&lstack.devices) {
            let macs: Vec<String> = self.bond_macs.iter().map(MacAddr::to_string).collect();
            return mismatch(
                "devices",
                lstack.devices.to_string(),
                format!("it is not one of ltran's bond_macs ({})", macs.join(", ")),
            );
        }
        if lstack.unix_prefix != self.unix_prefix {
            return mismatch(
                "unix_prefix",
                format!("{:?}", lstack.unix_prefix),
                format!(
                    "ltran's unix_prefix is {:?}; lstack finds ltran's socket only when both \
                     are the same",
                    self.unix_prefix
                ),
            );
        }
        if let Some(addr6) = lstack.host_addr6 {
            match self.dispatch_subnet6 {
                None => {
                    return mismatch(
                        "host_addr6",
                        addr6.to_string(),
                        "ltran has no dispatch_subnet6, so no IPv6 packet would reach this \
                         lstack; give ltran one or drop host_addr6"
                            .into(),
                    );
                }
                Some(subnet6) if !self.dispatch6_contains(addr6.addr()) => {
                    return mismatch(
                        "host_addr6",
                        addr6.to_string(),
                        format!("it is outside ltran's dispatch_subnet6 {subnet6}"),
                    );
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// The mask of an IPv6 prefix of `len` bits (1..=128, as [`Ipv6Cidr`]
/// guarantees; 0 gives an empty mask rather than overflowing).
fn prefix_mask6(len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(len.min(128)))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;
    use rstest::rstest;

    use super::*;
    use crate::format::conf_path;
    use crate::test_support::{assert_refused, load_examples, toml_round_trip, Minimal};
    use crate::value::strategies::{any_ipv6_cidr, any_mac, any_port_mask};

    const EXAMPLE_CONF: &str = include_str!("../examples/ltran.conf");

    /// The settings of the `ltran.conf` gazelle ships and shows in its
    /// README (the seed's example), in gazelle syntax.
    const GAZELLE_SAMPLE_CONF: &str = r#"
forward_kit_args="-l 0,1 --socket-mem 1024,0,0,0 --huge-dir /mnt/hugepages --proc-type primary --legacy-mem --map-perfect --syslog daemon"
forward_kit="dpdk"

kni_switch=0

dispatch_max_clients=30
dispatch_subnet="192.168.1.0"
dispatch_subnet_length=8

bond_mode=1
bond_mtu=1500
bond_miimon=100
bond_macs="aa:bb:cc:dd:ee:ff"
bond_ports="0x1"

tcp_conn_scan_interval=10
"#;

    /// The same settings, written by hand in TOML.
    const GAZELLE_SAMPLE_TOML: &str = r#"
forward_kit_args = [
    "-l", "0,1", "--socket-mem", "1024,0,0,0", "--huge-dir", "/mnt/hugepages",
    "--proc-type", "primary", "--legacy-mem", "--map-perfect", "--syslog", "daemon",
]
forward_kit = "dpdk"
kni_switch = false
dispatch_max_clients = 30
dispatch_subnet = "192.168.1.0"
dispatch_subnet_length = 8
bond_mode = 1
bond_mtu = 1500
bond_miimon = 100
bond_macs = ["aa:bb:cc:dd:ee:ff"]
bond_ports = ["0x1"]
tcp_conn_scan_interval = 10
"#;

    /// The smallest valid file, in TOML.
    const MINIMAL_TOML: &str = "dispatch_subnet = \"192.168.1.0\"\n\
                                dispatch_subnet_length = 8\n\
                                bond_ports = \"0x1\"\n\
                                bond_macs = \"aa:bb:cc:dd:ee:ff\"\n";
    /// The same, in gazelle syntax.
    const MINIMAL_CONF: &str = "dispatch_subnet=\"192.168.1.0\"\n\
                                dispatch_subnet_length=8\n\
                                bond_ports=\"0x1\"\n\
                                bond_macs=\"aa:bb:cc:dd:ee:ff\"\n";

    fn mac(text: &str) -> MacAddr {
        text.parse().unwrap()
    }

    const MINIMAL: Minimal = Minimal {
        toml: MINIMAL_TOML,
        conf: MINIMAL_CONF,
    };

    fn minimal() -> LtranConfig {
        LtranConfig::new(
            Ipv4Addr::new(192, 168, 1, 0),
            8,
            vec![PortMask::new([0]).unwrap()],
            vec![mac("aa:bb:cc:dd:ee:ff")],
        )
    }

    /// The minimal file with `extra` lines, in TOML; for required keys, the
    /// line replaces the minimal one.
    fn toml_with(extra: &str) -> Result<LtranConfig, ConfigError> {
        MINIMAL.toml_with(extra)
    }

    fn conf_with(extra: &str) -> Result<LtranConfig, ConfigError> {
        MINIMAL.conf_with(extra)
    }

    /// Every key of the schema is classified in `support::LTRAN`, in the
    /// schema's order, and a refused value is refused.
    #[test]
    fn every_key_is_classified() {
        let mut full = minimal();
        full.dispatch_subnet6 = Some("fd00:1::/64".parse().unwrap());
        let text = full.to_toml_string();
        let keys = crate::test_support::top_level_keys(&text);
        let table: Vec<&str> = crate::support::LTRAN.iter().map(|k| k.name).collect();
        assert_eq!(keys, table);
        full.bond_rx_queue_num = 2;
        let err = full.validate().unwrap_err();
        assert_eq!(err.field(), Some("bond_rx_queue_num"));
        assert!(
            err.to_string().contains("is not implemented (only 1 is)"),
            "{err}"
        );
    }

    #[test]
    fn minimal_file_gives_gazelle_defaults() {
        assert_eq!(LtranConfig::from_toml_str(MINIMAL_TOML).unwrap(), minimal());
        assert_eq!(
            LtranConfig::from_gazelle_str(MINIMAL_CONF).unwrap(),
            minimal()
        );

        let c = minimal();
        assert_eq!(c.forward_kit, ForwardKit::Dpdk);
        assert!(c.forward_kit_args.is_empty());
        assert!(!c.kni_switch);
        assert_eq!(c.dispatch_max_clients, 32);
        assert_eq!(c.dispatch_subnet6, None);
        assert_eq!((c.bond_mode, c.bond_miimon, c.bond_mtu), (1, 100, 1500));
        assert_eq!((c.bond_rx_queue_num, c.bond_tx_queue_num), (1, 1));
        assert_eq!(c.tcp_conn_scan_interval, 600);
        assert_eq!(c.unix_prefix, "");
        assert_eq!(
            (c.rx_mbuf_pool_size, c.tx_mbuf_pool_size),
            (307_200, 30_720)
        );
        c.validate().unwrap();
    }

    #[test]
    fn gazelle_sample_imports_as_its_toml() {
        let from_conf = LtranConfig::from_gazelle_str(GAZELLE_SAMPLE_CONF).unwrap();
        let from_toml = LtranConfig::from_toml_str(GAZELLE_SAMPLE_TOML).unwrap();
        assert_eq!(from_conf, from_toml);

        assert_eq!(from_conf.forward_kit_args.len(), 12);
        assert_eq!(from_conf.forward_kit_args[5], "/mnt/hugepages");
        assert_eq!(from_conf.dispatch_max_clients, 30);
        assert_eq!(from_conf.dispatch_prefix_len(), 24);
        assert!(from_conf.dispatch_contains(Ipv4Addr::new(192, 168, 1, 77)));
        assert!(!from_conf.dispatch_contains(Ipv4Addr::new(192, 168, 2, 1)));
        assert_eq!(from_conf.bond_ports.len(), 1);
        assert_eq!(from_conf.bond_ports[0].ports().collect::<Vec<_>>(), [0]);
        assert_eq!(from_conf.bond_macs, [mac("aa:bb:cc:dd:ee:ff")]);
        assert_eq!(from_conf.tcp_conn_scan_interval, 10);
        // Keys the sample leaves out keep gazelle's defaults.
        assert_eq!(from_conf.rx_mbuf_pool_size, 307_200);

        // The sample's commented-out pool sizes are misspelt; uncommented,
        // the misspelling is named rather than silently ignored.
        let text = format!("{GAZELLE_SAMPLE_CONF}rx_pool_mbuf_size = 307200\n");
        let err = LtranConfig::from_gazelle_str(&text).unwrap_err();
        assert_eq!(err.field(), Some("rx_pool_mbuf_size"));
        assert!(
            err.to_string()
                .starts_with("unknown key \"rx_pool_mbuf_size\" (allowed keys: forward_kit, "),
            "{err}"
        );
    }

    #[test]
    fn example_files_are_equivalent() {
        let example: LtranConfig = load_examples("ltran");
        // ltran.conf is not TOML: the extension picks the syntax.
        assert!(LtranConfig::from_toml_str(EXAMPLE_CONF).is_err());

        // And the examples set (nearly) everything away from the defaults.
        let defaults = minimal();
        assert_ne!(example.dispatch_max_clients, defaults.dispatch_max_clients);
        assert_ne!(example.bond_miimon, defaults.bond_miimon);
        // ltran runs exactly one bond (it refuses two at start), so the
        // examples show one: two ports, active-backup.
        assert_eq!(example.bond_ports.len(), 1);
        assert_eq!(example.bond_ports[0].ports().collect::<Vec<_>>(), [0, 1]);
        assert_eq!(example.bond_macs, [mac("aa:bb:cc:dd:ee:ff")]);
        assert_eq!(example.dispatch_subnet6, Some("fd00::/64".parse().unwrap()));
        assert_eq!(example.unix_prefix, "lstack0");
        assert_eq!(example.forward_kit_args.last().unwrap(), "ltran");
    }

    #[test]
    fn example_ltran_serves_example_lstack() {
        let ltran: LtranConfig = load_examples("ltran");
        let mut lstack: LstackConfig = load_examples("lstack");
        lstack.use_ltran = true;
        lstack.flow_bifurcation = false;
        lstack.validate().unwrap();
        ltran.check_lstack(&lstack).unwrap();
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("gazelle-config-ltran-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("bad.conf");
        std::fs::write(&conf, format!("{MINIMAL_CONF}bond_mtu=9000\n")).unwrap();
        let err = LtranConfig::load(&conf).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: bond_mtu = 9000 is out of range 68..=1500",
                conf.display()
            )
        );
        assert_eq!(err.field(), Some("bond_mtu"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn env_path_defaults_to_etc() {
        assert_eq!(DEFAULT_LTRAN_CONF_PATH, "/etc/gazelle/ltran.toml");
        assert_eq!(LTRAN_CONF_ENV, "LTRAN_CONF_PATH");
        assert_eq!(
            conf_path(None, DEFAULT_LTRAN_CONF_PATH),
            Path::new(DEFAULT_LTRAN_CONF_PATH)
        );
    }

    #[rstest]
    #[case("dispatch_max_clients", "0", "1..=32")]
    #[case("dispatch_max_clients", "33", "1..=32")]
    #[case("dispatch_subnet_length", "0", "1..=16")]
    #[case("dispatch_subnet_length", "17", "1..=16")]
    #[case("dispatch_subnet_length", "32", "1..=16")]
    #[case("bond_miimon", "0", "1..=60000")]
    #[case("bond_miimon", "60001", "1..=60000")]
    #[case("bond_mtu", "67", "68..=1500")]
    #[case("bond_mtu", "1501", "68..=1500")]
    #[case("bond_mtu", "9000", "68..=1500")]
    #[case("bond_rx_queue_num", "0", "1..=64")]
    #[case("bond_rx_queue_num", "65", "1..=64")]
    #[case("bond_tx_queue_num", "0", "1..=64")]
    #[case("bond_tx_queue_num", "65", "1..=64")]
    #[case("tcp_conn_scan_interval", "0", "1..=86400")]
    #[case("tcp_conn_scan_interval", "86401", "1..=86400")]
    #[case("rx_mbuf_pool_size", "1023", "1024..=16777216")]
    #[case("rx_mbuf_pool_size", "16777217", "1024..=16777216")]
    #[case("tx_mbuf_pool_size", "0", "1024..=16777216")]
    #[case("tx_mbuf_pool_size", "4294967295", "1024..=16777216")]
    fn out_of_range(#[case] field: &str, #[case] value: &str, #[case] range: &str) {
        let message = format!("{field} = {value} is out of range {range}");
        assert_refused(
            MINIMAL.with::<LtranConfig>(field, value, value),
            field,
            &message,
            &message,
        );
    }

    #[rstest]
    #[case("dispatch_max_clients", "1")]
    #[case("dispatch_max_clients", "32")]
    #[case("bond_miimon", "1")]
    #[case("bond_miimon", "60000")]
    #[case("bond_mtu", "68")]
    #[case("bond_mtu", "1500")]
    #[case("tcp_conn_scan_interval", "1")]
    #[case("tcp_conn_scan_interval", "86400")]
    #[case("rx_mbuf_pool_size", "1024")]
    #[case("tx_mbuf_pool_size", "16777216")]
    fn range_edges_accepted(#[case] field: &str, #[case] value: &str) {
        for result in MINIMAL.with::<LtranConfig>(field, value, value) {
            result.unwrap();
        }
    }

    #[rstest]
    #[case("-1")]
    #[case("0")]
    #[case("2")]
    #[case("4")]
    #[case("6")]
    fn only_active_backup_bonds(#[case] mode: &str) {
        let message = format!("bond_mode = {mode}: only active-backup (1) is supported by ltran");
        assert_refused(
            MINIMAL.with::<LtranConfig>("bond_mode", mode, mode),
            "bond_mode",
            &message,
            &message,
        );
        assert_eq!(toml_with("bond_mode = 1").unwrap(), minimal());
    }

    /// One bad value per key, in TOML and gazelle syntax: every error must be
    /// attributed to that key and mention it.
    #[rstest]
    #[case("forward_kit", "\"xdp\"", "\"xdp\"")]
    #[case("forward_kit", "1", "1")]
    #[case("forward_kit_args", "5", "5")]
    #[case("forward_kit_args", "[\"-l\", 1]", "[\"-l\", 1]")]
    #[case("kni_switch", "2", "2")]
    #[case("kni_switch", "\"on\"", "\"on\"")]
    #[case("dispatch_max_clients", "\"30\"", "\"30\"")]
    #[case("dispatch_max_clients", "-1", "-1")]
    #[case("dispatch_subnet", "\"192.168.1\"", "\"192.168.1\"")]
    #[case("dispatch_subnet", "\"192.168.1.0/24\"", "\"192.168.1.0/24\"")]
    #[case("dispatch_subnet", "3232235776", "3232235776")]
    #[case("dispatch_subnet", "\"192.168.1.5\"", "\"192.168.1.5\"")]
    #[case("dispatch_subnet_length", "\"8\"", "\"8\"")]
    #[case("dispatch_subnet_length", "-8", "-8")]
    #[case("dispatch_subnet6", "\"fd00::/0\"", "\"fd00::/0\"")]
    #[case("dispatch_subnet6", "\"fd00::1/64\"", "\"fd00::1/64\"")]
    #[case("dispatch_subnet6", "\"ff02::/16\"", "\"ff02::/16\"")]
    #[case("dispatch_subnet6", "\"10.0.0.0\"", "\"10.0.0.0\"")]
    #[case("bond_mode", "\"1\"", "\"1\"")]
    #[case("bond_miimon", "1.5", "\"1.5\"")]
    #[case("bond_ports", "\"1\"", "\"1\"")]
    #[case("bond_ports", "\"0x0\"", "\"0x0\"")]
    #[case("bond_ports", "[\"0x1\", 2]", "[\"0x1\", 2]")]
    #[case("bond_ports", "\"0x100000000\"", "\"0x100000000\"")]
    #[case("bond_ports", "3", "3")]
    #[case("bond_macs", "\"01:00:5e:00:00:01\"", "\"01:00:5e:00:00:01\"")]
    #[case("bond_macs", "\"aa:bb:cc:dd:ee\"", "\"aa:bb:cc:dd:ee\"")]
    #[case("bond_macs", "[5]", "[5]")]
    #[case("bond_mtu", "\"1500\"", "\"1500\"")]
    #[case("bond_rx_queue_num", "true", "true")]
    #[case("bond_tx_queue_num", "[]", "[]")]
    #[case("tcp_conn_scan_interval", "-10", "-10")]
    #[case("unix_prefix", "\"a b\"", "\"a b\"")]
    #[case("unix_prefix", "5", "5")]
    #[case("rx_mbuf_pool_size", "\"307200\"", "\"307200\"")]
    #[case("tx_mbuf_pool_size", "4294967296", "4294967296")]
    fn bad_value_names_its_key(#[case] field: &str, #[case] toml: &str, #[case] conf: &str) {
        assert_refused(
            MINIMAL.with::<LtranConfig>(field, toml, conf),
            field,
            &format!("{field} = "),
            "",
        );
    }

    #[rstest]
    #[case("dispatch_subnet")]
    #[case("dispatch_subnet_length")]
    #[case("bond_ports")]
    #[case("bond_macs")]
    fn missing_required_key(#[case] field: &str) {
        let message = format!("missing required key \"{field}\"");
        assert_refused(
            MINIMAL.without::<LtranConfig>(field),
            field,
            &message,
            &message,
        );
    }

    #[rstest]
    #[case("foo")]
    // gazelle's struct has a log switch, but no file key sets it (gazellectl
    // sets ltran's log level at run time), so a log key is unknown too.
    #[case("log_level")]
    #[case("rx_pool_mbuf_size")]
    #[case("dispatch_subnet_mask")]
    fn unknown_key_in_both_syntaxes(#[case] key: &str) {
        let message =
            format!("unknown key \"{key}\" (allowed keys: forward_kit, forward_kit_args, ");
        assert_refused(
            MINIMAL.with::<LtranConfig>(key, "1", "1"),
            key,
            &message,
            "rx_mbuf_pool_size, tx_mbuf_pool_size)",
        );
    }

    #[test]
    fn toml_table_is_an_unknown_key() {
        let err =
            LtranConfig::from_toml_str(&format!("{MINIMAL_TOML}[bond]\nmode = 1\n")).unwrap_err();
        assert_eq!(err.field(), Some("bond"));
    }

    #[test]
    fn forward_kit_messages() {
        let err = conf_with("forward_kit=\"xdp\"").unwrap_err();
        assert_eq!(
            err.to_string(),
            "forward_kit = \"xdp\": unknown variant `xdp`, expected `dpdk`"
        );
        assert_eq!(conf_with("forward_kit=\"dpdk\"").unwrap(), minimal());
    }

    #[test]
    fn forward_kit_args_as_string_or_list() {
        let joined = conf_with("forward_kit_args=\"-l 0,1  --huge-dir /mnt/h\"").unwrap();
        let listed =
            toml_with("forward_kit_args = [\"-l\", \"0,1\", \"--huge-dir\", \"/mnt/h\"]").unwrap();
        assert_eq!(joined, listed);
        assert_eq!(
            joined.forward_kit_args,
            ["-l", "0,1", "--huge-dir", "/mnt/h"]
        );
        // The list form is what gazelle syntax can write too.
        let conf_list =
            conf_with("forward_kit_args=[\"-l\", \"0,1\", \"--huge-dir\", \"/mnt/h\"]").unwrap();
        assert_eq!(conf_list, joined);
    }

    #[test]
    fn kni_switch_in_both_spellings() {
        for text in ["kni_switch = 1", "kni_switch = true"] {
            assert!(toml_with(text).unwrap().kni_switch);
        }
        for text in ["kni_switch=1", "kni_switch=TRUE"] {
            assert!(conf_with(text).unwrap().kni_switch);
        }
        assert!(!conf_with("kni_switch=0").unwrap().kni_switch);
    }

    #[rstest]
    #[case("192.168.1.0", 8, None)]
    #[case("192.168.0.0", 16, None)]
    #[case("192.168.1.0", 1, None)]
    #[case("10.0.0.2", 1, None)]
    #[case("1.0.0.0", 16, None)]
    #[case("192.168.1.5", 8, Some("it is not the network address of its /24 (dispatch_subnet_length = 8 host bits); write \"192.168.1.0\""))]
    #[case("192.168.1.0", 9, Some("it is not the network address of its /23 (dispatch_subnet_length = 9 host bits); write \"192.168.0.0\""))]
    #[case("10.0.0.3", 1, Some("write \"10.0.0.2\""))]
    #[case("0.0.0.0", 8, Some("network part is zero"))]
    #[case("0.0.255.0", 16, Some("network part is zero"))]
    #[case("127.0.0.0", 8, Some("loopback"))]
    #[case("224.0.0.0", 8, Some("multicast or reserved"))]
    #[case("255.255.255.0", 8, Some("multicast or reserved"))]
    fn dispatch_subnet_is_a_network(
        #[case] subnet: &str,
        #[case] length: u32,
        #[case] refused: Option<&str>,
    ) {
        let lines = format!("dispatch_subnet = \"{subnet}\"\ndispatch_subnet_length = {length}");
        match refused {
            None => {
                let config = toml_with(&lines).unwrap();
                assert_eq!(u32::from(config.dispatch_prefix_len()), 32 - length);
                assert!(config.dispatch_contains(subnet.parse().unwrap()));
            }
            Some(reason) => assert_refused(
                [toml_with(&lines)],
                "dispatch_subnet",
                &format!("dispatch_subnet = \"{subnet}\": "),
                reason,
            ),
        }
    }

    #[test]
    fn dispatch_subnet6_is_a_network() {
        let config = toml_with("dispatch_subnet6 = \"fd00:1::\"").unwrap();
        assert_eq!(
            config.dispatch_subnet6,
            Some("fd00:1::/64".parse().unwrap())
        );
        assert!(config.dispatch6_contains("fd00:1::ab".parse().unwrap()));
        assert!(!config.dispatch6_contains("fd00:2::ab".parse().unwrap()));
        assert!(!minimal().dispatch6_contains("fd00:1::ab".parse().unwrap()));
        toml_with("dispatch_subnet6 = \"2001:db8::1/128\"").unwrap();

        let err = conf_with("dispatch_subnet6=\"fd00:1::5/64\"").unwrap_err();
        assert_eq!(
            err.to_string(),
            "dispatch_subnet6 = \"fd00:1::5/64\": it is not a network address; write \"fd00:1::/64\""
        );
    }

    #[test]
    fn ipv6_dispatch_needs_an_ipv6_mtu() {
        let err = toml_with("dispatch_subnet6 = \"fd00::/64\"\nbond_mtu = 1279").unwrap_err();
        assert_eq!(err.field(), Some("bond_mtu"));
        assert_eq!(
            err.to_string(),
            "bond_mtu = 1279 and dispatch_subnet6 = \"fd00::/64\" cannot be used together: IPv6 \
             needs an MTU of at least 1280 (RFC 8200); raise bond_mtu"
        );
        toml_with("dispatch_subnet6 = \"fd00::/64\"\nbond_mtu = 1280").unwrap();
        toml_with("bond_mtu = 68").unwrap();
    }

    #[rstest]
    // One bond over two ports takes one MAC address: gazelle's MACs are per bond.
    #[case("bond_ports = \"0x3\"\nbond_macs = \"aa:bb:cc:dd:ee:ff\"", None)]
    #[case(
        "bond_ports = \"0x1,0x2\"\nbond_macs = \"aa:bb:cc:dd:ee:ff,aa:bb:cc:dd:ee:fe\"",
        None
    )]
    #[case(
        "bond_ports = \"0x1,0x2,0x4\"\nbond_macs = \"aa:bb:cc:dd:ee:ff\"",
        Some("bond_ports has 3 entries; 1..=2 are allowed")
    )]
    #[case(
        "bond_ports = \"\"\nbond_macs = \"aa:bb:cc:dd:ee:ff\"",
        Some("bond_ports has 0 entries; 1..=2 are allowed")
    )]
    #[case(
        "bond_ports = [\"0x3\", \"0x6\"]\nbond_macs = [\"aa:bb:cc:dd:ee:ff\", \"aa:bb:cc:dd:ee:fe\"]",
        Some("bond_ports names port 1 more than once")
    )]
    #[case(
        "bond_ports = \"0x1,0x2\"\nbond_macs = \"aa:bb:cc:dd:ee:ff\"",
        Some("bond_macs has 1 entries, but bond_ports has 2: give one MAC address per bond")
    )]
    #[case(
        "bond_ports = \"0x1\"\nbond_macs = \"aa:bb:cc:dd:ee:ff,aa:bb:cc:dd:ee:fe\"",
        Some("bond_macs has 2 entries, but bond_ports has 1: give one MAC address per bond")
    )]
    #[case(
        "bond_ports = \"0x1\"\nbond_macs = \"\"",
        Some("bond_macs has 0 entries, but bond_ports has 1: give one MAC address per bond")
    )]
    #[case(
        "bond_ports = \"0x1,0x2\"\nbond_macs = \"aa:bb:cc:dd:ee:ff,AA:BB:CC:DD:EE:FF\"",
        Some("bond_macs names aa:bb:cc:dd:ee:ff more than once")
    )]
    fn bond_rules(#[case] lines: &str, #[case] refused: Option<&str>) {
        match refused {
            None => {
                toml_with(lines).unwrap();
            }
            Some(message) => {
                let field = message.split(' ').next().unwrap();
                assert_refused([toml_with(lines)], field, message, message);
            }
        }
    }

    #[test]
    fn unix_prefix_follows_lstack_rules() {
        assert_eq!(
            toml_with("unix_prefix = \"gz_0\"").unwrap().unix_prefix,
            "gz_0"
        );
        let err = toml_with("unix_prefix = \"../x\"").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unix_prefix = \"../x\": use at most 32 characters from A-Z a-z 0-9 _ -"
        );
        assert_eq!(
            limits::UNIX_PREFIX_MAX_LEN,
            crate::lstack::limits::UNIX_PREFIX_MAX_LEN
        );
    }

    #[test]
    fn validate_checks_values_built_in_code() {
        let mut c = minimal();
        c.bond_ports.clear();
        assert!(matches!(
            c.validate(),
            Err(ConfigError::CountOutOfRange {
                field: "bond_ports",
                count: 0,
                ..
            })
        ));
        let mut c = minimal();
        c.dispatch_subnet_length = 40;
        assert_eq!(c.dispatch_prefix_len(), 0);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::OutOfRange {
                field: "dispatch_subnet_length",
                value: 40,
                ..
            })
        ));
    }

    #[test]
    fn prefix_masks() {
        assert_eq!(prefix_mask6(0), 0);
        assert_eq!(prefix_mask6(1), 1 << 127);
        assert_eq!(prefix_mask6(64), u128::MAX << 64);
        assert_eq!(prefix_mask6(128), u128::MAX);
        assert_eq!(prefix_mask6(200), u128::MAX);
    }

    /// An lstack that fits [`minimal`]'s ltran.
    fn client() -> LstackConfig {
        let mut lstack = LstackConfig::new(
            Ipv4Addr::new(192, 168, 1, 10),
            Ipv4Addr::new(255, 255, 255, 0),
            mac("aa:bb:cc:dd:ee:ff"),
        );
        lstack.use_ltran = true;
        lstack
    }

    /// A change to an ltran/lstack pair.
    type Edit = fn(&mut LtranConfig, &mut LstackConfig);

    /// Gives a closure in an rstest case the type [`Edit`], which rstest's
    /// `let` binding cannot infer on its own.
    fn edit(change: Edit) -> Edit {
        change
    }

    #[rstest]
    #[case::as_built(edit(|_, _| {}))]
    #[case::second_bond_mac(edit(|t, l| {
        t.bond_ports.push(PortMask::new([1]).unwrap());
        t.bond_macs.push(mac("02:00:00:00:00:02"));
        l.devices = mac("02:00:00:00:00:02");
    }))]
    #[case::edge_of_subnet(edit(|t, l| {
        t.dispatch_subnet_length = 4;
        l.host_addr = Ipv4Addr::new(192, 168, 1, 15);
    }))]
    #[case::same_prefix(edit(|t, l| {
        t.unix_prefix = "gz1".into();
        l.unix_prefix = "gz1".into();
    }))]
    #[case::ipv6_inside(edit(|t, l| {
        t.dispatch_subnet6 = Some("fd00:1::/64".parse().unwrap());
        l.host_addr6 = Some("fd00:1::10/64".parse().unwrap());
    }))]
    #[case::ipv6_only_in_ltran(edit(|t, _| {
        t.dispatch_subnet6 = Some("fd00:1::/64".parse().unwrap());
    }))]
    fn matching_lstack_is_accepted(#[case] edit: Edit) {
        let (mut ltran, mut lstack) = (minimal(), client());
        edit(&mut ltran, &mut lstack);
        ltran.validate().unwrap();
        lstack.validate().unwrap();
        ltran.check_lstack(&lstack).unwrap();
    }

    #[rstest]
    #[case::not_using_ltran("use_ltran", edit(|_, l| l.use_ltran = false))]
    #[case::host_outside("host_addr", edit(|_, l| {
        l.host_addr = Ipv4Addr::new(192, 168, 2, 10);
        l.mask_addr = Ipv4Addr::new(255, 255, 0, 0);
    }))]
    #[case::host_outside_small_subnet("host_addr", edit(|t, l| {
        t.dispatch_subnet_length = 3;
        l.host_addr = Ipv4Addr::new(192, 168, 1, 8);
    }))]
    #[case::mac_not_bonded("devices", edit(|_, l| l.devices = mac("02:00:00:00:00:09")))]
    #[case::prefix_differs("unix_prefix", edit(|t, _| t.unix_prefix = "gz1".into()))]
    #[case::ipv6_without_subnet6("host_addr6", edit(|_, l| {
        l.host_addr6 = Some("fd00:1::10/64".parse().unwrap());
    }))]
    #[case::ipv6_outside("host_addr6", edit(|t, l| {
        t.dispatch_subnet6 = Some("fd00:1::/64".parse().unwrap());
        l.host_addr6 = Some("fd00:2::10/64".parse().unwrap());
    }))]
    fn mismatched_lstack_is_refused(#[case] field: &str, #[case] edit: Edit) {
        let (mut ltran, mut lstack) = (minimal(), client());
        edit(&mut ltran, &mut lstack);
        ltran.validate().unwrap();
        lstack.validate().unwrap();
        assert_refused(
            [ltran.check_lstack(&lstack)],
            field,
            &format!("{field} = "),
            " does not fit ltran's configuration: ",
        );
    }

    #[test]
    fn mismatch_messages_say_what_ltran_has() {
        let ltran = minimal();
        let mut lstack = client();
        lstack.host_addr = Ipv4Addr::new(192, 168, 2, 10);
        lstack.mask_addr = Ipv4Addr::new(255, 255, 0, 0);
        assert_eq!(
            ltran.check_lstack(&lstack).unwrap_err().to_string(),
            "host_addr = 192.168.2.10 does not fit ltran's configuration: it is outside ltran's \
             dispatch subnet 192.168.1.0/24 (dispatch_subnet = \"192.168.1.0\", \
             dispatch_subnet_length = 8)"
        );
        let mut lstack = client();
        lstack.devices = mac("02:00:00:00:00:09");
        assert_eq!(
            ltran.check_lstack(&lstack).unwrap_err().to_string(),
            "devices = 02:00:00:00:00:09 does not fit ltran's configuration: it is not one of \
             ltran's bond_macs (aa:bb:cc:dd:ee:ff)"
        );
        let mut lstack = client();
        lstack.unix_prefix = "gz1".into();
        assert_eq!(
            ltran.check_lstack(&lstack).unwrap_err().to_string(),
            "unix_prefix = \"gz1\" does not fit ltran's configuration: ltran's unix_prefix is \"\"; \
             lstack finds ltran's socket only when both are the same"
        );
    }

    #[test]
    fn example_round_trips_through_toml() {
        let config = LtranConfig::from_gazelle_str(EXAMPLE_CONF).unwrap();
        let text = config.to_toml_string();
        assert_eq!(LtranConfig::from_toml_str(&text).unwrap(), config);
        let minimal_text = minimal().to_toml_string();
        assert!(!minimal_text.contains("dispatch_subnet6"), "{minimal_text}");
        assert!(
            minimal_text.contains("bond_ports = [\"0x1\"]"),
            "{minimal_text}"
        );
        assert_eq!(
            LtranConfig::from_toml_str(&minimal_text).unwrap(),
            minimal()
        );
    }

    prop_compose! {
        fn any_config()(
            first_octet in (1u8..=223).prop_filter("not loopback", |o| *o != 127),
            low_bits in any::<u32>(),
            length in limits::DISPATCH_SUBNET_LENGTH,
            subnet6 in proptest::option::of(any_ipv6_cidr()),
            (mask, split) in (any_port_mask(), any::<u32>()),
            macs in proptest::collection::btree_set(any_mac(), 2),
            numbers in (limits::DISPATCH_MAX_CLIENTS, limits::BOND_MIIMON, limits::BOND_MTU,
                        limits::BOND_QUEUE_NUM, limits::BOND_QUEUE_NUM,
                        limits::TCP_CONN_SCAN_INTERVAL, limits::MBUF_POOL_SIZE,
                        limits::MBUF_POOL_SIZE),
            kni_switch in any::<bool>(),
            forward_kit_args in proptest::collection::vec("[ -~]{0,12}", 0..6),
            unix_prefix in "[A-Za-z0-9_-]{0,32}",
        ) -> LtranConfig {
            let host_mask = (1u32 << length) - 1;
            let subnet = Ipv4Addr::from((u32::from(first_octet) << 24 | low_bits & 0x00ff_ffff) & !host_mask);
            // Split one mask into one or two bonds that share no port.
            let bonds: Vec<PortMask> = [mask.bits() & split, mask.bits() & !split]
                .into_iter()
                .filter_map(|bits| PortMask::from_bits(bits).ok())
                .collect();
            let macs: Vec<MacAddr> = macs.into_iter().take(bonds.len()).collect();
            let mut c = LtranConfig::new(subnet, length, bonds, macs);
            c.dispatch_subnet6 = subnet6.and_then(|cidr| {
                let network = u128::from(cidr.addr()) & prefix_mask6(cidr.prefix_len());
                Ipv6Cidr::new(Ipv6Addr::from(network), cidr.prefix_len()).ok()
            });
            (c.dispatch_max_clients, c.bond_miimon, c.bond_mtu, c.bond_rx_queue_num,
             c.bond_tx_queue_num, c.tcp_conn_scan_interval, c.rx_mbuf_pool_size,
             c.tx_mbuf_pool_size) = numbers;
            // ltran runs one queue per bond (see `support::LTRAN`).
            (c.bond_rx_queue_num, c.bond_tx_queue_num) = (1, 1);
            if c.dispatch_subnet6.is_some() {
                c.bond_mtu = c.bond_mtu.max(limits::IPV6_MIN_MTU);
            }
            c.kni_switch = kni_switch;
            c.forward_kit_args = forward_kit_args;
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
            let _ = LtranConfig::from_gazelle_str(&text);
        }
    }
}
