//! ltran: the DPDK primary process that owns the data NICs, bonds them
//! (active-backup) and dispatches frames to up to 32 lstack processes
//! through shared-memory rings.
//!
//! - [`packet`]: header parsing for dispatch, gratuitous ARP/NA frames;
//! - [`table`]: ownership, connection and listen tables and the dispatch
//!   decisions (no DPDK: unit-tested on byte frames);
//! - [`conn_table`]: the TCP connection table: keyed hash, half-open
//!   ageing and per-instance quotas;
//! - [`bond`]: the active-backup state machine and link checks;
//! - [`forward`]: the dispatcher loop over DPDK ports and rings;
//! - [`lanes`]: which instance rings a loop visits (per-burst gathering,
//!   the bounded scan of transmit rings);
//! - [`control`]: the control socket (registration, `gazellectl ltran`);
//! - [`run`]: putting it together from an [`LtranConfig`](gazelle_config::LtranConfig),
//!   and the checks a start (and `ltran --check`) runs before DPDK; a
//!   start that fails after the EAL came up puts back what it took
//!   ([`dpdk::cleanup`]).

pub use dpdk::bond;
pub mod conn_table;
pub mod control;
pub mod forward;
pub mod lanes;
pub mod packet;
pub mod run;
pub mod table;

/// `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}
