//! `nic_vlan_mode` on `net_af_packet` with the port's VLAN offloads (strip
//! on receive, insert on transmit): a kernel peer on VLAN 100 pings the
//! stack and echoes TCP data through it, every frame of the stack carries
//! the tag, and frames off the VLAN are dropped and counted (see
//! `vlan_scenario`). Its own test binary: one EAL per process. Needs root.

mod common;
mod vlan_scenario;

use netns_testbed::AfPacketEal;

#[test]
fn serves_its_vlan_with_the_ports_offloads() {
    vlan_scenario::run("lvlan", &AfPacketEal::default(), true, true);
}
