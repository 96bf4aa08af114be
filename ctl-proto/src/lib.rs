//! The control protocol of lstack and ltran.
//!
//! `gazellectl`, the web UI and the daemons speak it over UNIX stream
//! sockets: the client sends one [`Request`] as a line of JSON, the daemon
//! answers with one [`Response`] line and closes. Statistics are typed here
//! so every reader (CLI tables, `--json`, the REST API, `/metrics`) shows the
//! same numbers under the same names: the stack's counters here, its MIB-2
//! counters in [`Snmp`] and its receive latency in [`RxLatency`].
//!
//! - [`paths`]: where each daemon's socket lives (`unix_prefix` as gazelle);
//! - [`client`]: one request, one answer, with errors that say whether the
//!   daemon is not running or refused;
//! - [`LstackRates`], [`LtranRates`], [`LtranLatency`]: what `gazellectl`
//!   and the web UI derive from two samples (rates) or from the cycle
//!   counters (latency), computed once for both;
//! - [`server`]: the accept loop a daemon runs on a thread of its own, checking
//!   its peers' credentials.

#![forbid(unsafe_code)]

pub mod client;
mod latency;
mod ltran;
mod mib;
pub mod paths;
pub mod server;
mod types;
mod views;

pub use latency::*;
pub use ltran::*;
pub use mib::*;
pub use types::*;
pub use views::*;

/// Version of the protocol; a daemon refuses requests of another.
pub const PROTOCOL_VERSION: u32 = 1;
