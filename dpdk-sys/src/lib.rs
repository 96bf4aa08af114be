//! Raw FFI to the system DPDK (22.11, found through pkg-config).
//!
//! Two parts and nothing else:
//! - bindgen output over a narrow allowlist of `librte_*` functions and types
//!   (EAL, ethdev, mempool, ring);
//! - a C shim (`shim/shim.c`) for DPDK's static-inline functions and macros
//!   (rx/tx burst, mbuf alloc/free/mtod/append, ring bursts, `rte_errno`),
//!   whose functions are prefixed `shim_`.
//!
//! Flag values that DPDK defines as function-like macros are mirrored in
//! [`flags`]; the shim's `_Static_assert`s fail the build if the system DPDK
//! ever disagrees. The safe layer lives in the `dpdk` crate.
#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case)]
#![allow(
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc
)]
#![allow(missing_debug_implementations, unsafe_op_in_unsafe_fn)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

/// Offload and mbuf flag bits (checked against the C headers at build time).
pub mod flags {
    /// `RTE_ETH_RX_OFFLOAD_VLAN_STRIP`
    pub const RX_OFFLOAD_VLAN_STRIP: u64 = 1 << 0;
    /// `RTE_ETH_TX_OFFLOAD_VLAN_INSERT`
    pub const TX_OFFLOAD_VLAN_INSERT: u64 = 1 << 0;
    /// `RTE_ETH_RX_OFFLOAD_IPV4_CKSUM`
    pub const RX_OFFLOAD_IPV4_CKSUM: u64 = 1 << 1;
    /// `RTE_ETH_RX_OFFLOAD_UDP_CKSUM`
    pub const RX_OFFLOAD_UDP_CKSUM: u64 = 1 << 2;
    /// `RTE_ETH_RX_OFFLOAD_TCP_CKSUM`
    pub const RX_OFFLOAD_TCP_CKSUM: u64 = 1 << 3;
    /// `RTE_ETH_TX_OFFLOAD_IPV4_CKSUM`
    pub const TX_OFFLOAD_IPV4_CKSUM: u64 = 1 << 1;
    /// `RTE_ETH_TX_OFFLOAD_UDP_CKSUM`
    pub const TX_OFFLOAD_UDP_CKSUM: u64 = 1 << 2;
    /// `RTE_ETH_TX_OFFLOAD_TCP_CKSUM`
    pub const TX_OFFLOAD_TCP_CKSUM: u64 = 1 << 3;
    /// `RTE_ETH_TX_OFFLOAD_MULTI_SEGS`
    pub const TX_OFFLOAD_MULTI_SEGS: u64 = 1 << 15;
    /// `RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE`
    pub const TX_OFFLOAD_MBUF_FAST_FREE: u64 = 1 << 16;
    /// `RTE_MBUF_F_RX_VLAN`: `vlan_tci` holds the frame's 802.1Q tag.
    pub const MBUF_F_RX_VLAN: u64 = 1 << 0;
    /// `RTE_MBUF_F_RX_VLAN_STRIPPED`: the tag was taken out of the data.
    pub const MBUF_F_RX_VLAN_STRIPPED: u64 = 1 << 6;
    /// `RTE_MBUF_F_TX_VLAN`: insert the tag `vlan_tci` on transmit.
    pub const MBUF_F_TX_VLAN: u64 = 1 << 57;
    /// `RTE_MBUF_F_RX_RSS_HASH`
    pub const MBUF_F_RX_RSS_HASH: u64 = 1 << 1;
    /// `RTE_MBUF_F_RX_IP_CKSUM_MASK`
    pub const MBUF_F_RX_IP_CKSUM_MASK: u64 = (1 << 4) | (1 << 7);
    /// `RTE_MBUF_F_RX_IP_CKSUM_GOOD`
    pub const MBUF_F_RX_IP_CKSUM_GOOD: u64 = 1 << 7;
    /// `RTE_MBUF_F_RX_IP_CKSUM_BAD`
    pub const MBUF_F_RX_IP_CKSUM_BAD: u64 = 1 << 4;
    /// `RTE_MBUF_F_RX_L4_CKSUM_MASK`
    pub const MBUF_F_RX_L4_CKSUM_MASK: u64 = (1 << 3) | (1 << 8);
    /// `RTE_MBUF_F_RX_L4_CKSUM_GOOD`
    pub const MBUF_F_RX_L4_CKSUM_GOOD: u64 = 1 << 8;
    /// `RTE_MBUF_F_RX_L4_CKSUM_BAD`
    pub const MBUF_F_RX_L4_CKSUM_BAD: u64 = 1 << 3;
    /// `RTE_MBUF_F_TX_TCP_CKSUM`
    pub const MBUF_F_TX_TCP_CKSUM: u64 = 1 << 52;
    /// `RTE_MBUF_F_TX_UDP_CKSUM`
    pub const MBUF_F_TX_UDP_CKSUM: u64 = 3 << 52;
    /// `RTE_MBUF_F_TX_IP_CKSUM`
    pub const MBUF_F_TX_IP_CKSUM: u64 = 1 << 54;
    /// `RTE_MBUF_F_TX_IPV4`
    pub const MBUF_F_TX_IPV4: u64 = 1 << 55;
    /// `RTE_MBUF_F_TX_IPV6`
    pub const MBUF_F_TX_IPV6: u64 = 1 << 56;
}
