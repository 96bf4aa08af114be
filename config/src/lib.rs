//! Configuration schema of the gazelle-style stack.
//!
//! This crate knows what the stack's configuration files may say and refuses
//! anything else, with a message naming the key, the value and what would be
//! accepted. It does no I/O beyond reading the file it is asked to load.
//!
//! - [`lstack`]: [`LstackConfig`], the settings of lstack, the per-application
//!   stack (gazelle's `lstack.conf`), with its defaults, ranges
//!   ([`lstack::limits`]) and cross-key validation. ltran's schema will sit
//!   next to it as a sibling module, reusing everything below.
//! - [`value`]: typed values gazelle writes as strings ([`MacAddr`],
//!   [`CpuList`], [`Ipv6Cidr`], [`PortMask`]). They parse at the edge, so
//!   code holding one never sees a malformed value.
//! - [`gazelle_syntax`]: a parser for gazelle's libconfig-style syntax that
//!   turns a file into a [`toml::Table`], so a `.conf` file and the equivalent
//!   TOML file become the same value through the same serde code.
//! - [`format`](mod@format): choosing the syntax ([`Format`]) from a file name, parsing
//!   either into a table, and reading files.
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

#![forbid(unsafe_code)]

mod check;
mod de;
pub mod error;
pub mod format;
pub mod gazelle_syntax;
pub mod lstack;
pub mod value;

pub use error::{ConfigError, ValueError};
pub use format::Format;
pub use lstack::{LstackConfig, StackThreadMode, DEFAULT_LSTACK_CONF_PATH, LSTACK_CONF_ENV};
pub use value::{CpuList, Ipv6Cidr, MacAddr, PortMask};
