//! Active-backup bonding (gazelle's `bond_mode = 1`): one port carries all
//! traffic; when its link goes down the first port whose link is up takes
//! over, and the move is announced with gratuitous ARPs so the switch (and
//! the peers) learn the new path. There is no preemption: a recovered port
//! stays backup until the active one fails.
//!
//! Shared by ltran's bond and a standalone lstack's: the choice of the
//! active port ([`Bond`]), the link check ([`link_up`], which also asks the
//! kernel about an af_packet/af_xdp port's interface, whose link the PMD
//! does not follow), and the announcements ([`gratuitous_arp`],
//! [`unsolicited_na`]).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::{Eal, Port};

/// What a link check changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Traffic moved to port index `to` (from `from`, if one was active).
    Failover {
        /// The previous active port.
        from: Option<usize>,
        /// The new one.
        to: usize,
    },
    /// No port has a link.
    AllDown {
        /// The port that was active.
        from: usize,
    },
}

/// Which port of the bond is active.
#[derive(Debug, Clone)]
pub struct Bond {
    up: Vec<bool>,
    active: Option<usize>,
    /// Times traffic moved.
    pub failovers: u64,
}

impl Bond {
    /// A bond of `ports` ports, none up yet.
    pub fn new(ports: usize) -> Self {
        Self {
            up: vec![false; ports],
            active: None,
            failovers: 0,
        }
    }

    /// The active port's index.
    pub fn active(&self) -> Option<usize> {
        self.active
    }

    /// Link states as last seen.
    pub fn links(&self) -> &[bool] {
        &self.up
    }

    /// Applies fresh link states (one per port); returns what changed.
    pub fn update(&mut self, links: &[bool]) -> Option<Change> {
        let n = self.up.len();
        self.up.copy_from_slice(&links[..n]);
        if let Some(a) = self.active {
            if self.up[a] {
                return None;
            }
        }
        let from = self.active;
        self.active = self.up.iter().position(|&u| u);
        match (from, self.active) {
            (_, Some(to)) => {
                if from.is_some() {
                    self.failovers += 1;
                }
                Some(Change::Failover { from, to })
            }
            (Some(from), None) => Some(Change::AllDown { from }),
            (None, None) => None,
        }
    }
}

/// Whether port `port_id` has a link: DPDK's view and, for a port over a
/// kernel interface `iface` (af_packet, af_xdp), that interface's too
/// (those PMDs' link status does not follow a veth's). Reads /sys: for the
/// link monitor, not a hot path.
pub fn link_up(eal: &Eal, port_id: u16, iface: Option<&str>) -> bool {
    combine(Port::link_by_id(eal, port_id).up, iface)
}

/// A port's link from DPDK's view `dpdk_up` and its kernel interface's.
pub fn combine(dpdk_up: bool, iface: Option<&str>) -> bool {
    match iface.and_then(kernel_link_up) {
        Some(k) => dpdk_up && k,
        None => dpdk_up,
    }
}

/// Whether the kernel interface `iface` has a working link
/// (`/sys/class/net/<iface>/operstate` is `up`, or `unknown` with carrier).
/// `None` when the interface does not exist.
pub fn kernel_link_up(iface: &str) -> Option<bool> {
    let base = std::path::Path::new("/sys/class/net").join(iface);
    let state = std::fs::read_to_string(base.join("operstate")).ok()?;
    Some(match state.trim() {
        "up" => true,
        "unknown" => std::fs::read_to_string(base.join("carrier"))
            .map(|c| c.trim() == "1")
            .unwrap_or(false),
        _ => false,
    })
}

/// The kernel interface behind a `--vdev` device (`iface=` of af_packet or
/// af_xdp), by device name, from EAL arguments.
pub fn vdev_iface(args: &[String], device: &str) -> Option<String> {
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        let spec = if let Some(s) = a.strip_prefix("--vdev=") {
            s.to_owned()
        } else if a == "--vdev" {
            it.peek().map(|s| s.to_string())?
        } else {
            continue;
        };
        let mut parts = spec.split(',');
        if parts.next() != Some(device) {
            continue;
        }
        for kv in parts {
            if let Some(v) = kv.strip_prefix("iface=") {
                return Some(v.to_owned());
            }
        }
    }
    None
}

/// Length of a [`gratuitous_arp`] frame.
pub const GARP_LEN: usize = 42;
/// Length of an [`unsolicited_na`] frame.
pub const NA_LEN: usize = 86;

/// Builds a gratuitous ARP request announcing that `ip` is at `mac`
/// (sender = target = `ip`, broadcast), into `out` (at least
/// [`GARP_LEN`] bytes); returns the frame length.
pub fn gratuitous_arp(mac: [u8; 6], ip: Ipv4Addr, out: &mut [u8]) -> usize {
    let f = &mut out[..GARP_LEN];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes());
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes());
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    f[32..38].copy_from_slice(&[0; 6]);
    f[38..42].copy_from_slice(&ip.octets());
    GARP_LEN
}

/// Builds an unsolicited neighbour advertisement (override flag, to
/// all-nodes) announcing that `ip` is at `mac`, into `out` (at least
/// [`NA_LEN`] bytes); returns the frame length.
pub fn unsolicited_na(mac: [u8; 6], ip: Ipv6Addr, out: &mut [u8]) -> usize {
    const ICMPV6: u8 = 58;
    let f = &mut out[..NA_LEN];
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    f[0..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    let ip6 = &mut f[14..54];
    ip6.fill(0);
    ip6[0] = 0x60;
    ip6[4..6].copy_from_slice(&32u16.to_be_bytes());
    ip6[6] = ICMPV6;
    ip6[7] = 255;
    ip6[8..24].copy_from_slice(&ip.octets());
    ip6[24..40].copy_from_slice(&all_nodes.octets());
    let icmp = &mut f[54..86];
    icmp.fill(0);
    icmp[0] = 136;
    icmp[4] = 0x20; // override
    icmp[8..24].copy_from_slice(&ip.octets());
    icmp[24] = 2; // target link-layer address option
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(&mac);
    // Checksum over the pseudo-header and the message.
    let mut sum: u32 = 0;
    for chunk in ip.octets().chunks(2).chain(all_nodes.octets().chunks(2)) {
        sum += u32::from(u16::from_be_bytes([chunk[0], chunk[1]]));
    }
    sum += 32 + u32::from(ICMPV6);
    for chunk in icmp.chunks(2) {
        sum += u32::from(u16::from_be_bytes([chunk[0], chunk[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    icmp[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    NA_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_up_port_becomes_active_and_stays_until_it_fails() {
        let mut b = Bond::new(2);
        assert_eq!(b.update(&[false, false]), None);
        assert_eq!(
            b.update(&[true, true]),
            Some(Change::Failover { from: None, to: 0 })
        );
        assert_eq!(b.failovers, 0, "the first choice is not a failover");
        assert_eq!(
            b.update(&[false, true]),
            Some(Change::Failover {
                from: Some(0),
                to: 1
            })
        );
        assert_eq!(b.failovers, 1);
        // Port 0 recovers: no preemption.
        assert_eq!(b.update(&[true, true]), None);
        assert_eq!(b.active(), Some(1));
        assert_eq!(
            b.update(&[true, false]),
            Some(Change::Failover {
                from: Some(1),
                to: 0
            })
        );
        assert_eq!(b.update(&[false, false]), Some(Change::AllDown { from: 0 }));
        assert_eq!(b.active(), None);
        assert_eq!(
            b.update(&[false, true]),
            Some(Change::Failover { from: None, to: 1 })
        );
    }

    #[test]
    fn loopback_has_a_link_and_a_missing_interface_is_none() {
        assert_eq!(kernel_link_up("no-such-if0"), None);
        // lo reports operstate "unknown" with carrier 1.
        assert_eq!(kernel_link_up("lo"), Some(true));
    }

    #[test]
    fn every_port_down_at_start_is_no_change_and_failovers_count_only_moves() {
        let mut b = Bond::new(2);
        assert_eq!(b.update(&[false, false]), None);
        assert_eq!(b.active(), None);
        assert_eq!(
            b.update(&[false, true]),
            Some(Change::Failover { from: None, to: 1 })
        );
        assert_eq!(b.links(), &[false, true]);
        assert_eq!(b.update(&[false, false]), Some(Change::AllDown { from: 1 }));
        assert_eq!(b.failovers, 0, "losing every link moves nothing");
        assert_eq!(
            b.update(&[true, false]),
            Some(Change::Failover { from: None, to: 0 })
        );
        assert_eq!(b.failovers, 0);
    }

    #[test]
    fn vdev_iface_finds_the_interface_of_a_device() {
        let args: Vec<String> = [
            "prog",
            "--vdev=net_af_packet0,iface=veth0,qpairs=2",
            "--vdev",
            "net_af_packet1,iface=veth1",
            "--vdev=net_null0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            vdev_iface(&args, "net_af_packet0").as_deref(),
            Some("veth0")
        );
        assert_eq!(
            vdev_iface(&args, "net_af_packet1").as_deref(),
            Some("veth1")
        );
        assert_eq!(vdev_iface(&args, "net_null0"), None);
        assert_eq!(vdev_iface(&args, "net_af_packet"), None);
    }

    #[test]
    fn gratuitous_arp_announces_ip_at_mac() {
        let mac = [2, 1, 2, 3, 4, 5];
        let mut buf = [0u8; 64];
        assert_eq!(
            gratuitous_arp(mac, Ipv4Addr::new(10, 0, 0, 9), &mut buf),
            42
        );
        assert_eq!(&buf[0..6], &[0xff; 6], "broadcast");
        assert_eq!(&buf[6..12], &mac);
        assert_eq!(&buf[12..14], &[0x08, 0x06]);
        assert_eq!(&buf[20..22], &[0, 1], "a request");
        assert_eq!(&buf[22..28], &mac, "sender MAC");
        assert_eq!(&buf[28..32], &[10, 0, 0, 9], "sender IP");
        assert_eq!(&buf[38..42], &[10, 0, 0, 9], "target IP = sender IP");
    }

    #[test]
    fn unsolicited_na_has_override_and_a_valid_checksum() {
        let mac = [2, 1, 2, 3, 4, 5];
        let ip: Ipv6Addr = "fd00::9".parse().unwrap();
        let mut buf = [0u8; 128];
        assert_eq!(unsolicited_na(mac, ip, &mut buf), 86);
        assert_eq!(&buf[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(buf[54], 136, "neighbour advertisement");
        assert_eq!(buf[58] & 0x20, 0x20, "override");
        assert_eq!(&buf[62..78], &ip.octets(), "target");
        assert_eq!(&buf[80..86], &mac, "target link-layer address");
        let mut sum: u32 = 0;
        for c in buf[22..54].chunks(2).chain(buf[54..86].chunks(2)) {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        sum += 32 + 58;
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
    }
}
