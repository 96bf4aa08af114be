//! Configuration schemas of the gazelle-style stack: lstack and ltran.
//!
//! This crate knows what the stack's configuration files may say and refuses
//! anything else, with a message naming the key, the value and what would be
//! accepted. It does no I/O beyond reading the file it is asked to load.
//!
//! - [`lstack`]: [`LstackConfig`], the settings of lstack, the per-application
//!   stack (gazelle's `lstack.conf`), with its defaults, ranges
//!   ([`lstack::limits`]) and cross-key validation.
//! - [`ltran`]: [`LtranConfig`], the settings of ltran, the forwarder that
//!   owns the NIC and dispatches packets to several lstack processes
//!   (gazelle's `ltran.conf`), with its ranges ([`ltran::limits`]) and
//!   [`LtranConfig::check_lstack`], which says whether an lstack
//!   configuration can run behind it. Both schemas share everything below.
//! - [`value`]: typed values gazelle writes as strings ([`MacAddr`],
//!   [`CpuList`], [`Ipv6Cidr`], [`PortMask`]). They parse at the edge, so
//!   code holding one never sees a malformed value.
//! - [`gazelle_syntax`]: a parser for gazelle's libconfig-style syntax that
//!   turns a file into a [`toml::Table`], so a `.conf` file and the equivalent
//!   TOML file become the same value through the same serde code.
//! - [`format`](mod@format): choosing the syntax ([`Format`]) from a file name, parsing
//!   either into a table, and reading files; every schema gets the same
//!   `from_toml_str`, `from_gazelle_str`, `load`, `load_from_env` and
//!   `to_toml_string` from there.
//! - [`error`]: [`ConfigError`] for loading and validation, [`ValueError`] for
//!   a single typed value.
//!
//! Loading is always: text → [`toml::Table`] (syntax errors, with a line) →
//! the config struct via serde (type errors, unknown and missing keys, each
//! naming its key) → `validate()` (ranges and rules between keys). Ranges are
//! therefore checked in one place whatever the syntax.
//!
//! ```
//! use gazelle_config::LstackConfig;
//!
//! let conf = r#"
//!     dpdk_args = ["--socket-mem", "2048,0,0,0", "--huge-dir", "/mnt/hugepages"]
//!     use_ltran = 0
//!     num_cpus = "2,4-5"
//!     host_addr = "192.168.1.10"
//!     mask_addr = "255.255.255.0"
//!     gateway_addr = "192.168.1.1"
//!     devices = "aa:bb:cc:dd:ee:ff"
//! "#;
//! let from_conf = LstackConfig::from_gazelle_str(conf)?;
//! assert_eq!(from_conf.num_cpus.as_slice(), &[2, 4, 5]);
//! assert_eq!(from_conf.netmask_prefix_len(), 24);
//!
//! // The TOML form of the same settings loads to the same value.
//! let from_toml = LstackConfig::from_toml_str(&from_conf.to_toml_string())?;
//! assert_eq!(from_toml, from_conf);
//!
//! let err = LstackConfig::from_gazelle_str(&conf.replace("num_cpus", "tcp_conn_count = 30000 num_cpus"))
//!     .unwrap_err();
//! assert_eq!(err.to_string(), "tcp_conn_count = 30000 is out of range 1..=20000");
//! # Ok::<(), gazelle_config::ConfigError>(())
//! ```
//!
//! ltran's file imports the same way. Note that gazelle's
//! `dispatch_subnet_length` counts host bits: 8 with `192.168.1.0` is a /24.
//!
//! ```
//! use std::net::Ipv4Addr;
//!
//! use gazelle_config::{LstackConfig, LtranConfig};
//!
//! let conf = r#"
//!     forward_kit_args="-l 0,1 --socket-mem 1024,0,0,0 --huge-dir /mnt/hugepages-ltran"
//!     dispatch_subnet="192.168.1.0"
//!     dispatch_subnet_length=8
//!     bond_ports="0x3"
//!     bond_macs="aa:bb:cc:dd:ee:ff"
//! "#;
//! let ltran = LtranConfig::from_gazelle_str(conf)?;
//! assert_eq!(ltran.forward_kit_args[1], "0,1");
//! assert_eq!(ltran.dispatch_prefix_len(), 24);
//! // One active-backup bond over ports 0 and 1, with one MAC address.
//! assert_eq!(ltran.bond_ports[0].ports().collect::<Vec<_>>(), [0, 1]);
//! assert_eq!(LtranConfig::from_toml_str(&ltran.to_toml_string())?, ltran);
//!
//! // An lstack can run behind it if its address is in the dispatch subnet
//! // and its MAC address is one of the bond's.
//! let mut lstack = LstackConfig::new(
//!     Ipv4Addr::new(192, 168, 1, 10),
//!     Ipv4Addr::new(255, 255, 255, 0),
//!     ltran.bond_macs[0],
//! );
//! lstack.use_ltran = true;
//! ltran.check_lstack(&lstack)?;
//!
//! // Moved to another subnet, it would get no packets from this ltran.
//! lstack.host_addr = Ipv4Addr::new(192, 168, 2, 10);
//! let err = ltran.check_lstack(&lstack).unwrap_err();
//! assert_eq!(err.field(), Some("host_addr"));
//!
//! let err = LtranConfig::from_gazelle_str(&conf.replace("bond_ports", "bond_mode=4 bond_ports"))
//!     .unwrap_err();
//! assert_eq!(err.to_string(), "bond_mode = 4: only active-backup (1) is supported by ltran");
//! # Ok::<(), gazelle_config::ConfigError>(())
//! ```

#![forbid(unsafe_code)]

mod check;
mod de;
pub mod eal;
pub mod error;
pub mod format;
pub mod gazelle_syntax;
pub mod lstack;
pub mod ltran;
pub mod support;
#[cfg(test)]
mod test_support;
pub mod value;

pub use error::{ConfigError, ValueError};
pub use format::Format;
pub use lstack::{LstackConfig, StackThreadMode, DEFAULT_LSTACK_CONF_PATH, LSTACK_CONF_ENV};
pub use ltran::{ForwardKit, LtranConfig, DEFAULT_LTRAN_CONF_PATH, LTRAN_CONF_ENV};
pub use value::{CpuList, Ipv6Cidr, MacAddr, PortMask};
