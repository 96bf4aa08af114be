//! Active-backup bonding (gazelle's `bond_mode = 1`): one port carries all
//! traffic; when its link goes down the first port whose link is up takes
//! over, and the move is announced with gratuitous ARPs so the switch (and
//! the peers) learn the new path. There is no preemption: a recovered port
//! stays backup until the active one fails.

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
}
