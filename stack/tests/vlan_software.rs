//! `nic_vlan_mode` with the tags handled in software (as on a port without
//! VLAN offloads, e.g. `net_af_xdp`): the `net_af_packet` PMD then leaves
//! received tags in the data and sends the stack's frames as they are. The
//! same scenario as `vlan.rs`. Its own test binary: one EAL per process.
//! Needs root.

mod common;
mod vlan_scenario;

use netns_testbed::AfPacketEal;

#[test]
fn serves_its_vlan_with_tags_in_software() {
    vlan_scenario::run("lvlsw", &AfPacketEal::default(), false, true);
}
