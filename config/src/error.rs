//! Errors shared by every configuration file this crate reads.
//!
//! [`ConfigError`] is what loading or validating a whole file returns. Each
//! variant carries the key at fault, the value that was refused and what would
//! have been accepted, so the message alone tells an operator what to change.
//! [`ValueError`] is the narrower error of parsing one typed value
//! ([`MacAddr`](crate::MacAddr), [`CpuList`](crate::CpuList),
//! [`Ipv6Cidr`](crate::Ipv6Cidr), [`PortMask`](crate::PortMask)) with
//! [`FromStr`](std::str::FromStr); when
//! that happens while loading a file it is reported as
//! [`ConfigError::InvalidValue`] naming the key.

use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Why a configuration file could not be loaded, or a configuration value was
/// refused by `validate()`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// The file is not UTF-8 text.
    #[error("line {line}: the file is not valid UTF-8 text")]
    NotUtf8 {
        /// 1-based line holding the first byte that is not UTF-8.
        line: usize,
    },

    /// Another error, found while loading a specific file.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The file being loaded.
        path: PathBuf,
        /// What was wrong with it.
        source: Box<ConfigError>,
    },

    /// The text is not well-formed (gazelle `.conf` syntax or TOML).
    #[error("line {line}: {message}")]
    Syntax {
        /// 1-based line where the problem was found.
        line: usize,
        /// What was expected there.
        message: String,
    },

    /// A key that the schema does not have.
    #[error("unknown key \"{key}\" (allowed keys: {})", allowed.join(", "))]
    UnknownKey {
        /// The key as written in the file.
        key: String,
        /// Every key the schema accepts.
        allowed: &'static [&'static str],
    },

    /// A key that has no default was not given.
    #[error("missing required key \"{key}\"")]
    MissingKey {
        /// The key that must be present.
        key: &'static str,
    },

    /// A value lstack or ltran does not implement (see
    /// [`crate::support`]): only `accepted` is.
    #[error("{field} = {value} is not implemented (only {accepted} is): {advice}")]
    NotImplemented {
        /// The key.
        field: &'static str,
        /// The value as it was written.
        value: String,
        /// The one value accepted.
        accepted: &'static str,
        /// Why, and what to do instead.
        advice: &'static str,
    },

    /// A value of the wrong type or format for its key.
    #[error("{field} = {value}: {reason}")]
    InvalidValue {
        /// The key.
        field: String,
        /// The value as it was written (strings quoted).
        value: String,
        /// What is wrong and what would be right.
        reason: String,
    },

    /// A number outside the range its key allows.
    #[error("{field} = {value} is out of range {min}..={max}")]
    OutOfRange {
        /// The key.
        field: &'static str,
        /// The refused value.
        value: i64,
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },

    /// A ring size that is not a power of two in the allowed range.
    #[error("{field} = {value} must be a power of two in {min}..={max}")]
    NotPowerOfTwo {
        /// The key.
        field: &'static str,
        /// The refused value.
        value: i64,
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },

    /// A number that must be one of a few listed values.
    #[error("{field} = {value} is not one of {}", join_numbers(allowed))]
    NotOneOf {
        /// The key.
        field: &'static str,
        /// The refused value.
        value: i64,
        /// The values that are accepted.
        allowed: &'static [i64],
    },

    /// `mask_addr` is not a usable netmask.
    #[error(
        "mask_addr = {mask} must be a contiguous netmask such as 255.255.255.0 (and not 0.0.0.0)"
    )]
    BadNetmask {
        /// The refused mask.
        mask: Ipv4Addr,
    },

    /// `host_addr` is not an address a host can own.
    #[error("host_addr = {host} is not a unicast host address: {reason}")]
    HostAddrNotUnicast {
        /// The refused address.
        host: Ipv4Addr,
        /// For example "it is a loopback address".
        reason: &'static str,
    },

    /// `host_addr` is its subnet's network or broadcast address.
    #[error("host_addr = {host} is the {which} address of host_addr/mask_addr {host}/{mask}")]
    HostAddrReserved {
        /// The refused address.
        host: Ipv4Addr,
        /// The configured netmask.
        mask: Ipv4Addr,
        /// "network" or "broadcast".
        which: &'static str,
    },

    /// `gateway_addr` is not reachable on the local subnet.
    #[error("gateway_addr = {gateway} is not inside host_addr/mask_addr {host}/{mask}")]
    GatewayOutsideSubnet {
        /// The refused gateway.
        gateway: Ipv4Addr,
        /// The configured host address.
        host: Ipv4Addr,
        /// The configured netmask.
        mask: Ipv4Addr,
    },

    /// `gateway_addr` equals `host_addr`.
    #[error("gateway_addr = {gateway} must differ from host_addr = {gateway}")]
    GatewayIsHost {
        /// The address given to both keys.
        gateway: Ipv4Addr,
    },

    /// Two settings that gazelle does not allow together.
    #[error("{first} and {second} cannot be used together: {reason}")]
    Conflict {
        /// One key, with its value (`use_ltran = true`).
        first: String,
        /// The other key, with its value.
        second: String,
        /// Why, and what to change.
        reason: &'static str,
    },

    /// Bonding is on but `bond_slave_mac` does not list two ports.
    #[error("bond_slave_mac has {count} entries, but bond_mode = {bond_mode} needs exactly 2")]
    BondSlaveCount {
        /// The configured bonding mode.
        bond_mode: i32,
        /// How many MAC addresses were given.
        count: usize,
    },

    /// A list with too few or too many entries.
    #[error("{field} has {count} entries; {min}..={max} are allowed")]
    CountOutOfRange {
        /// The key.
        field: &'static str,
        /// How many entries were given.
        count: usize,
        /// Fewest entries allowed.
        min: usize,
        /// Most entries allowed.
        max: usize,
    },

    /// A list names the same thing twice where each must be unique.
    #[error("{field} names {value} more than once")]
    Duplicate {
        /// The key.
        field: &'static str,
        /// What is repeated, for example `port 1` or a MAC address.
        value: String,
    },

    /// ltran's `bond_macs` does not give one MAC address per bond.
    #[error(
        "bond_macs has {macs} entries, but bond_ports has {bonds}: give one MAC address per bond"
    )]
    BondMacCount {
        /// How many port masks (bonds) `bond_ports` lists.
        bonds: usize,
        /// How many MAC addresses `bond_macs` lists.
        macs: usize,
    },

    /// An lstack setting that does not fit the ltran it would register with.
    #[error("{field} = {value} does not fit ltran's configuration: {reason}")]
    LtranMismatch {
        /// The lstack key.
        field: &'static str,
        /// Its value (strings quoted).
        value: String,
        /// What ltran has instead, and what to change.
        reason: String,
    },

    /// The mbuf pool asked for is larger than this crate allows.
    #[error(
        "tcp_conn_count * mbuf_count_per_conn = {tcp_conn_count} * {mbuf_count_per_conn} = {total} \
         mbufs is more than {max}"
    )]
    TooManyMbufs {
        /// The configured `tcp_conn_count`.
        tcp_conn_count: u32,
        /// The configured `mbuf_count_per_conn`.
        mbuf_count_per_conn: u32,
        /// Their product.
        total: u64,
        /// The largest product accepted.
        max: u64,
    },

    /// `process_idx` does not name one of the `num_process` processes.
    #[error("process_idx = {process_idx} must be less than num_process = {num_process}")]
    ProcessIndex {
        /// The configured index.
        process_idx: u32,
        /// The configured process count.
        num_process: u32,
    },

    /// A structural problem not tied to one key (not expected in practice).
    #[error("malformed configuration: {message}")]
    Malformed {
        /// The deserializer's message.
        message: String,
    },
}

impl ConfigError {
    /// The key this error is about, if it concerns one in particular (for
    /// two-key conflicts, the first). Errors wrapped in
    /// [`ConfigError::InFile`] report their inner key.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::InFile { source, .. } => source.field(),
            Self::UnknownKey { key, .. } => Some(key),
            Self::MissingKey { key } => Some(key),
            Self::InvalidValue { field, .. } => Some(field),
            Self::NotImplemented { field, .. } => Some(field),
            Self::OutOfRange { field, .. }
            | Self::NotPowerOfTwo { field, .. }
            | Self::NotOneOf { field, .. }
            | Self::CountOutOfRange { field, .. }
            | Self::Duplicate { field, .. }
            | Self::LtranMismatch { field, .. } => Some(field),
            Self::BondMacCount { .. } => Some("bond_macs"),
            Self::BadNetmask { .. } => Some("mask_addr"),
            Self::HostAddrNotUnicast { .. } | Self::HostAddrReserved { .. } => Some("host_addr"),
            Self::GatewayOutsideSubnet { .. } | Self::GatewayIsHost { .. } => Some("gateway_addr"),
            Self::Conflict { first, .. } => first.split(" =").next(),
            Self::BondSlaveCount { .. } => Some("bond_slave_mac"),
            Self::TooManyMbufs { .. } => Some("tcp_conn_count"),
            Self::ProcessIndex { .. } => Some("process_idx"),
            Self::Read { .. }
            | Self::NotUtf8 { .. }
            | Self::Syntax { .. }
            | Self::Malformed { .. } => None,
        }
    }

    /// The line a syntax error was found on, if this is one.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::InFile { source, .. } => source.line(),
            Self::Syntax { line, .. } | Self::NotUtf8 { line } => Some(*line),
            _ => None,
        }
    }

    pub(crate) fn in_file(self, path: impl Into<PathBuf>) -> Self {
        match self {
            // Already names its file.
            Self::Read { .. } | Self::InFile { .. } => self,
            other => Self::InFile {
                path: path.into(),
                source: Box::new(other),
            },
        }
    }
}

fn join_numbers(values: &[i64]) -> String {
    values
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a string is not a valid typed value. The input is kept for callers;
/// the message says what is wrong with it without repeating it, because the
/// configuration error that wraps it already shows the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// Not a usable unicast MAC address.
    #[error("not a usable MAC address: {reason}")]
    MacAddr {
        /// The refused text.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Not a CPU list in gazelle's format.
    #[error("not a CPU list like \"0,2-3\": {reason}")]
    CpuList {
        /// The refused text.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Not a port mask in gazelle's `0x...` form, or one naming no port or a
    /// port DPDK cannot address.
    #[error("not a port mask like \"0x3\": {reason}")]
    PortMask {
        /// The refused text.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Not a usable IPv6 interface address.
    #[error("not a usable IPv6 address like \"fd00::2\" or \"fd00::2/112\": {reason}")]
    Ipv6Cidr {
        /// The refused text.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_field_value_and_allowed() {
        let e = ConfigError::OutOfRange {
            field: "tcp_conn_count",
            value: 30000,
            min: 1,
            max: 20000,
        };
        assert_eq!(
            e.to_string(),
            "tcp_conn_count = 30000 is out of range 1..=20000"
        );
        assert_eq!(e.field(), Some("tcp_conn_count"));

        let e = ConfigError::NotPowerOfTwo {
            field: "nic_rxqueue_size",
            value: 1000,
            min: 512,
            max: 8192,
        };
        assert_eq!(
            e.to_string(),
            "nic_rxqueue_size = 1000 must be a power of two in 512..=8192"
        );

        let e = ConfigError::GatewayOutsideSubnet {
            gateway: Ipv4Addr::new(10, 1, 0, 1),
            host: Ipv4Addr::new(192, 168, 1, 10),
            mask: Ipv4Addr::new(255, 255, 255, 0),
        };
        assert_eq!(
            e.to_string(),
            "gateway_addr = 10.1.0.1 is not inside host_addr/mask_addr 192.168.1.10/255.255.255.0"
        );

        let e = ConfigError::NotOneOf {
            field: "bond_mode",
            value: 2,
            allowed: &[-1, 1, 4, 6],
        };
        assert_eq!(e.to_string(), "bond_mode = 2 is not one of -1, 1, 4, 6");
    }

    #[test]
    fn in_file_prefixes_path_once() {
        let e = ConfigError::Syntax {
            line: 7,
            message: "expected key=value".into(),
        }
        .in_file("/etc/gazelle/lstack.conf");
        assert_eq!(
            e.to_string(),
            "/etc/gazelle/lstack.conf: line 7: expected key=value"
        );
        assert_eq!(e.line(), Some(7));
        let again = e.in_file("/other");
        assert!(again.to_string().starts_with("/etc/gazelle/lstack.conf: "));
    }

    #[test]
    fn read_error_names_path() {
        let e = ConfigError::Read {
            path: "/x/y".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert!(e.to_string().starts_with("cannot read /x/y: "), "{e}");
        assert_eq!(e.field(), None);
    }

    #[test]
    fn conflict_reports_first_key() {
        let e = ConfigError::Conflict {
            first: "use_ltran = true".into(),
            second: "kni_switch = true".into(),
            reason: "r",
        };
        assert_eq!(e.field(), Some("use_ltran"));
    }
}
