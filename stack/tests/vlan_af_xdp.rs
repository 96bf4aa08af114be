//! `nic_vlan_mode` on `net_af_xdp`, which has no VLAN offloads: the XDP
//! socket gets frames with their tags in the data, the stack takes them
//! out and puts its own in, in software. The same scenario as `vlan.rs`.
//! Its own test binary: one EAL per process. Needs root.

mod common;
mod vlan_scenario;

use netns_testbed::{AfPacketEal, Medium};

#[test]
fn serves_its_vlan_on_af_xdp() {
    let eal = AfPacketEal {
        medium: Medium::AfXdp,
        ..AfPacketEal::default()
    };
    vlan_scenario::run("lvlxdp", &eal, true, false);
}
