//! Frames the kernel dropped before a `net_af_packet` port saw them.
//!
//! DPDK 22.11's af_packet PMD reads frames from `PACKET_MMAP` rings of its
//! own sockets and reports no drops: when a ring is full the kernel drops
//! the frame and counts it only in the socket's `PACKET_STATISTICS`
//! (`tp_drops`). [`socket_drops`] finds this process's packet sockets bound
//! to an interface and adds up what they dropped, so the port's `imissed`
//! can say where those frames went (see [`crate::Port::stats`]).
//!
//! Reading `PACKET_STATISTICS` resets the kernel's counters, so the sums
//! are kept here, per interface, for the life of the process; nothing else
//! in the process may read them (the PMD of this DPDK version does not).

use std::{collections::BTreeMap, fs, mem, os::fd::RawFd, sync::Mutex};

/// Drops seen so far, per interface index.
static DROPS: Mutex<BTreeMap<u32, u64>> = Mutex::new(BTreeMap::new());

/// Frames the kernel dropped, since this process opened them, at the
/// packet sockets of this process bound to interface `ifindex` (a full
/// receive ring). Reads `/proc/self/fd`: a control-path call, not one for
/// every burst.
pub fn socket_drops(ifindex: u32) -> u64 {
    let mut sums = DROPS.lock().unwrap_or_else(|e| e.into_inner());
    let fresh: u64 = socket_fds(ifindex)
        .into_iter()
        .map(|fd| u64::from(take_drops(fd).unwrap_or(0)))
        .sum();
    let total = sums.entry(ifindex).or_default();
    *total += fresh;
    *total
}

/// This process's packet sockets bound to interface `ifindex`: the PMD's,
/// whose receive ring makes them poll readable while frames wait.
pub fn socket_fds(ifindex: u32) -> Vec<RawFd> {
    process_sockets(|fd| bound_packet_socket(fd) == Some(ifindex))
}

/// This process's socket descriptors for which `keep` holds. Reads
/// `/proc/self/fd`: a control-path call.
pub(crate) fn process_sockets(mut keep: impl FnMut(RawFd) -> bool) -> Vec<RawFd> {
    let mut fds = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc/self/fd") {
        for entry in dir.flatten() {
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<RawFd>().ok())
            else {
                continue;
            };
            let is_socket = fs::read_link(entry.path()).is_ok_and(|target| {
                target
                    .as_os_str()
                    .as_encoded_bytes()
                    .starts_with(b"socket:")
            });
            if is_socket && keep(fd) {
                fds.push(fd);
            }
        }
    }
    fds
}

/// The address family (`SO_DOMAIN`) of socket `fd`; `None` for any other fd.
pub(crate) fn socket_domain(fd: RawFd) -> Option<libc::c_int> {
    let mut domain: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: domain and len are valid out-pointers of the sizes given; a
    // closed or non-socket fd only makes the call fail.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&raw mut domain).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(domain)
}

/// The interface a packet socket `fd` is bound to; `None` for any other fd.
fn bound_packet_socket(fd: RawFd) -> Option<u32> {
    if socket_domain(fd)? != libc::AF_PACKET {
        return None;
    }
    // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: addr and len are valid out-pointers of the sizes given.
    let r = unsafe { libc::getsockname(fd, (&raw mut addr).cast(), &mut len) };
    (r == 0 && addr.sll_ifindex > 0).then_some(addr.sll_ifindex as u32)
}

/// The drops the kernel counted at packet socket `fd` since the last call
/// (reading them resets them).
fn take_drops(fd: RawFd) -> Option<u32> {
    let mut stats = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: stats and len are valid out-pointers of the sizes given.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&raw mut stats).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(stats.tp_drops)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet socket on loopback whose ring is never read: frames sent
    /// past its receive buffer are dropped by the kernel and show up here.
    #[test]
    fn counts_what_the_kernel_dropped_at_a_packet_socket() {
        if !nix_is_root() {
            panic!("this test opens a packet socket: run it as root");
        }
        // SAFETY: plain socket call.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from((libc::ETH_P_ALL as u16).to_be()),
            )
        };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let small: libc::c_int = 4096;
        // SAFETY: valid pointer and size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&raw const small).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        // SAFETY: a valid C string.
        let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        assert!(lo > 0);
        // SAFETY: sockaddr_ll is plain data.
        let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = lo as i32;
        // SAFETY: addr is a valid sockaddr_ll of the size given.
        let r = unsafe {
            libc::bind(
                fd,
                (&raw const addr).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
        assert_eq!(bound_packet_socket(fd), Some(lo));
        let before = socket_drops(lo);
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = udp.local_addr().unwrap();
        for _ in 0..200 {
            udp.send_to(&[0u8; 1000], to).unwrap();
        }
        let after = socket_drops(lo);
        assert!(after > before, "no drops counted: {before} -> {after}");
        // Read again: the sum stays (the kernel's counter was reset).
        assert!(socket_drops(lo) >= after);
        // SAFETY: fd is ours.
        unsafe { libc::close(fd) };
    }

    fn nix_is_root() -> bool {
        // SAFETY: plain getter.
        unsafe { libc::geteuid() == 0 }
    }
}
