//! What the `classify` fuzz target makes of its input, shared with the corpus
//! generator (`examples/gen_corpus.rs`) so that both read the same layout.
//!
//! An input is a [`HEADER_LEN`]-byte header followed by the Ethernet frame:
//!
//! | bytes    | meaning                                                        |
//! |----------|----------------------------------------------------------------|
//! | `0`      | flags, see [`flags`]                                           |
//! | `1`      | IPv4 prefix length (taken mod 33), gives `ipv4_broadcast`      |
//! | `2..8`   | our MAC address                                                |
//! | `8..12`  | our IPv4 address                                               |
//! | `12..28` | our IPv6 address                                               |
//! | `28..`   | the frame handed to `classify`                                 |
//!
//! The IPv6 link-local address is the MAC's EUI-64 `fe80::` address, as
//! `lstack::Stack` derives it. With [`flags::ADOPT_FRAME`] the MAC and IP
//! addresses are instead taken from the frame's own destination fields, so
//! that a mutated frame still counts as "ours" and reaches the deeper checks.
//!
//! The `ingest` target starts with the same header and goes on with several
//! frames; see [`ingest`].

pub mod ingest;

use lstack::classify::{LocalAddrs, RxChecked};
use smoltcp::wire::{EthernetAddress, Ipv4Address, Ipv4Cidr, Ipv6Address};

/// Bytes before the frame.
pub const HEADER_LEN: usize = 28;

/// Bits of header byte 0.
pub mod flags {
    /// `RxChecked::ip_good`: the NIC verified the IPv4 header checksum.
    pub const IP_GOOD: u8 = 1 << 0;
    /// `RxChecked::l4_good`: the NIC verified the TCP/UDP checksum.
    pub const L4_GOOD: u8 = 1 << 1;
    /// `LocalAddrs::ipv4` is set.
    pub const HAS_IPV4: u8 = 1 << 2;
    /// `LocalAddrs::ipv4_broadcast` is set (from the IPv4 address and prefix).
    pub const HAS_IPV4_BROADCAST: u8 = 1 << 3;
    /// `LocalAddrs::ipv6` is set.
    pub const HAS_IPV6: u8 = 1 << 4;
    /// `LocalAddrs::ipv6_link_local` is set (EUI-64 of the MAC).
    pub const HAS_IPV6_LINK_LOCAL: u8 = 1 << 5;
    /// Take MAC / IPv4 / IPv6 from the frame's destination fields (the
    /// `classify` target only; `ingest` has one interface for all frames).
    pub const ADOPT_FRAME: u8 = 1 << 6;
    /// The `ingest` target only: fill in the IPv4 header and TCP / UDP /
    /// ICMP / ICMPv6 checksums of every frame before `classify` sees it, as
    /// a peer that means harm would, so that mutated frames reach smoltcp
    /// (ICMP checksums have no `RxChecked` flag to let them past).
    pub const FIX_CHECKSUMS: u8 = 1 << 7;
}

/// The decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Header byte 0.
    pub flags: u8,
    /// Header byte 1 (used mod 33).
    pub ipv4_prefix: u8,
    /// Our MAC.
    pub mac: [u8; 6],
    /// Our IPv4 address.
    pub ipv4: [u8; 4],
    /// Our IPv6 address.
    pub ipv6: [u8; 16],
}

/// One fuzz input, decoded.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The stack's addresses.
    pub local: LocalAddrs,
    /// The offload flags.
    pub checked: RxChecked,
    /// The frame.
    pub frame: &'a [u8],
}

impl Header {
    /// Splits `data` into header and frame; `None` if shorter than the header.
    pub fn parse(data: &[u8]) -> Option<(Header, &[u8])> {
        let (h, frame) = data.split_at_checked(HEADER_LEN)?;
        let mut header = Header {
            flags: h[0],
            ipv4_prefix: h[1],
            mac: [0; 6],
            ipv4: [0; 4],
            ipv6: [0; 16],
        };
        header.mac.copy_from_slice(&h[2..8]);
        header.ipv4.copy_from_slice(&h[8..12]);
        header.ipv6.copy_from_slice(&h[12..28]);
        Some((header, frame))
    }

    /// The header's bytes, for the corpus generator.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = self.flags;
        b[1] = self.ipv4_prefix;
        b[2..8].copy_from_slice(&self.mac);
        b[8..12].copy_from_slice(&self.ipv4);
        b[12..28].copy_from_slice(&self.ipv6);
        b
    }

    /// The offload flags.
    pub fn checked(&self) -> RxChecked {
        RxChecked {
            ip_good: self.flags & flags::IP_GOOD != 0,
            l4_good: self.flags & flags::L4_GOOD != 0,
        }
    }

    /// The stack's addresses for `frame` (which matters with `ADOPT_FRAME`).
    pub fn local_addrs(&self, frame: &[u8]) -> LocalAddrs {
        let (mut mac, mut ipv4, mut ipv6) = (self.mac, self.ipv4, self.ipv6);
        if self.flags & flags::ADOPT_FRAME != 0 {
            if let Some(dst) = frame.get(0..6) {
                mac.copy_from_slice(dst);
            }
            match frame.get(12..14) {
                Some([0x08, 0x00]) => {
                    if let Some(dst) = frame.get(14 + 16..14 + 20) {
                        ipv4.copy_from_slice(dst);
                    }
                }
                Some([0x86, 0xdd]) => {
                    if let Some(dst) = frame.get(14 + 24..14 + 40) {
                        ipv6.copy_from_slice(dst);
                    }
                }
                _ => {}
            }
        }
        let mac = EthernetAddress(mac);
        let ipv4 = Ipv4Address::from(ipv4);
        let has = |bit: u8| self.flags & bit != 0;
        LocalAddrs {
            mac,
            ipv4: has(flags::HAS_IPV4).then_some(ipv4),
            ipv4_broadcast: if has(flags::HAS_IPV4_BROADCAST) {
                Ipv4Cidr::new(ipv4, self.ipv4_prefix % 33).broadcast()
            } else {
                None
            },
            ipv6: has(flags::HAS_IPV6).then_some(Ipv6Address::from(ipv6)),
            ipv6_link_local: has(flags::HAS_IPV6_LINK_LOCAL).then_some(link_local(mac)),
        }
    }
}

impl<'a> Input<'a> {
    /// Decodes a fuzz input; `None` if shorter than the header.
    pub fn decode(data: &'a [u8]) -> Option<Input<'a>> {
        let (header, frame) = Header::parse(data)?;
        Some(Input {
            local: header.local_addrs(frame),
            checked: header.checked(),
            frame,
        })
    }
}

/// The EUI-64 link-local address of `mac` (as `lstack::Stack` derives it).
pub fn link_local(mac: EthernetAddress) -> Ipv6Address {
    let m = mac.0;
    Ipv6Address::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 0x02,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}
