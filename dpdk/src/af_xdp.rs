//! The sockets of `net_af_xdp` ports, for sleeping until frames arrive.
//!
//! DPDK 22.11's af_xdp PMD offers no receive interrupts, but its XDP sockets
//! poll readable while their receive ring holds frames (the kernel fills it
//! in its receive softirq), so a stack thread can sleep in `poll` on them
//! exactly as on an af_packet port's packet sockets.

use std::os::fd::RawFd;

/// This process's XDP sockets.
///
/// An XDP socket cannot tell which interface it is bound to without a
/// netlink socket-diag query, so with several af_xdp ports in one process
/// each port's sleeper waits on all of them: a frame for one port can wake
/// another port's thread for nothing (it finds no frames and sleeps again),
/// but no frame is ever slept through.
pub fn socket_fds() -> Vec<RawFd> {
    crate::af_packet::process_sockets(|fd| {
        crate::af_packet::socket_domain(fd) == Some(libc::AF_XDP)
    })
}
