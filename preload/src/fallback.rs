//! What the process does not accelerate, said rather than hidden: the TCP
//! and UDP sockets it keeps on the kernel (by descriptor, with the
//! [`KernelPath`] reason), and the socket options it sets that lstack does
//! not honour (counted by option, each logged once).
//!
//! The stack reads both through [`view`] for `gazellectl lstack show -c`,
//! its statistics and the REST API. Nothing here is on the data path:
//! recording is one atomic store when a socket is created, bound, connected
//! or closed, and listing runs only when asked.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering},
        OnceLock,
    },
};

use gazelle_ctl_proto::{Connection, KernelPathSocket};
use libc::c_int;
use lstack_core::{KernelPath, ProcessView};

use crate::{file::table, real::real};

/// The view the stack is given.
pub fn view() -> ProcessView {
    ProcessView {
        kernel_sockets: list,
        unhonoured_options,
    }
}

// ---------------------------------------------------------------- kernel-path sockets

/// Per descriptor (as lstack's table is sized): 0, or 1 + the index of the
/// reason in [`KernelPath::ALL`].
fn reasons() -> &'static [AtomicU8] {
    static R: OnceLock<Box<[AtomicU8]>> = OnceLock::new();
    R.get_or_init(|| (0..table().len()).map(|_| AtomicU8::new(0)).collect())
}

fn slot(fd: c_int) -> Option<&'static AtomicU8> {
    usize::try_from(fd).ok().and_then(|i| reasons().get(i))
}

/// Records that `fd` is a socket on the kernel's path, and why.
pub fn record(fd: c_int, why: KernelPath) {
    if let (Some(s), Some(i)) = (slot(fd), KernelPath::ALL.iter().position(|&k| k == why)) {
        s.store(i as u8 + 1, Ordering::Relaxed);
    }
}

/// Why `fd` is on the kernel's path, if it was recorded.
pub fn reason(fd: c_int) -> Option<KernelPath> {
    let i = slot(fd)?.load(Ordering::Relaxed);
    (i > 0).then(|| KernelPath::ALL.get(usize::from(i) - 1).copied())?
}

/// `fd` was closed.
pub fn forget(fd: c_int) {
    if let Some(s) = slot(fd) {
        if s.load(Ordering::Relaxed) != 0 {
            s.store(0, Ordering::Relaxed);
        }
    }
}

/// `new` became a duplicate of `old`: it shares `old`'s reason, if any.
pub fn duplicated(old: c_int, new: c_int) {
    match reason(old) {
        Some(why) => record(new, why),
        None => forget(new),
    }
}

/// Reads an int socket option of a kernel socket.
fn int_option(fd: c_int, level: c_int, name: c_int) -> Option<c_int> {
    let mut v: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: an int out-pointer and its length.
    let r = unsafe { (real().getsockopt)(fd, level, name, (&raw mut v).cast(), &mut len) };
    (r == 0).then_some(v)
}

/// `getsockname` or `getpeername` of a kernel socket, as text.
fn endpoint(fd: c_int, peer: bool) -> Option<String> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let f = if peer {
        real().getpeername
    } else {
        real().getsockname
    };
    // SAFETY: a sockaddr_storage out-pointer and its length.
    if unsafe { f(fd, (&raw mut ss).cast(), &mut len) } != 0 {
        return None;
    }
    // SAFETY: the kernel wrote `len` bytes of a socket address.
    let sa = unsafe { crate::addr::read((&raw const ss).cast(), len) }.ok()?;
    Some(sa.to_string())
}

/// A TCP state number of `struct tcp_info` as `ss` names it.
fn tcp_state(n: u8) -> &'static str {
    match n {
        1 => "ESTAB",
        2 => "SYN-SENT",
        3 => "SYN-RECV",
        4 => "FIN-WAIT-1",
        5 => "FIN-WAIT-2",
        6 => "TIME-WAIT",
        8 => "CLOSE-WAIT",
        9 => "LAST-ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        _ => "CLOSE",
    }
}

/// A queue length by `ioctl` (`SIOCINQ`, `SIOCOUTQ`), 0 when it fails.
fn queued(fd: c_int, req: libc::c_ulong) -> u64 {
    let mut n: c_int = 0;
    // SAFETY: an int out-pointer, as both requests want.
    let r = unsafe { (real().ioctl)(fd, req, (&raw mut n).cast()) };
    if r == 0 {
        u64::try_from(n).unwrap_or(0)
    } else {
        0
    }
}

/// One recorded descriptor as a connection entry; `None` (and forgotten)
/// when it is no longer an IP socket (closed behind our back, by a raw
/// `close_range` or `syscall`).
fn describe(fd: c_int, why: KernelPath) -> Option<Connection> {
    let domain = int_option(fd, libc::SOL_SOCKET, libc::SO_DOMAIN);
    let ty = int_option(fd, libc::SOL_SOCKET, libc::SO_TYPE);
    let (Some(libc::AF_INET | libc::AF_INET6), Some(ty @ (libc::SOCK_STREAM | libc::SOCK_DGRAM))) =
        (domain, ty)
    else {
        forget(fd);
        return None;
    };
    let local = endpoint(fd, false).unwrap_or_else(|| "*".into());
    let remote = endpoint(fd, true);
    let tcp = ty == libc::SOCK_STREAM;
    let (state, recv_queue, send_queue) = if tcp {
        // SAFETY: all-zero is a valid tcp_info.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: a tcp_info out-pointer and its length.
        let r = unsafe {
            (real().getsockopt)(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&raw mut info).cast(),
                &mut len,
            )
        };
        let state = if r == 0 { info.tcpi_state } else { 7 };
        if state == 10 {
            // As `ss`: a listener's accept queue and backlog.
            (
                "LISTEN",
                u64::from(info.tcpi_unacked),
                u64::from(info.tcpi_sacked),
            )
        } else {
            (
                tcp_state(state),
                queued(fd, libc::FIONREAD as libc::c_ulong),
                queued(fd, libc::TIOCOUTQ as libc::c_ulong),
            )
        }
    } else {
        (
            if remote.is_some() { "ESTAB" } else { "UNCONN" },
            queued(fd, libc::FIONREAD as libc::c_ulong),
            queued(fd, libc::TIOCOUTQ as libc::c_ulong),
        )
    };
    Some(Connection {
        thread: 0,
        state: state.into(),
        local,
        remote: remote.unwrap_or_else(|| "*".into()),
        recv_queue,
        send_queue,
        recv_capacity: int_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUF)
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0),
        send_capacity: int_option(fd, libc::SOL_SOCKET, libc::SO_SNDBUF)
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0),
        kernel: Some(KernelPathSocket {
            fd,
            protocol: if tcp { "tcp" } else { "udp" }.into(),
            reason: why.name().into(),
        }),
    })
}

/// Every recorded kernel-path socket still open, by descriptor.
pub fn list() -> Vec<Connection> {
    let mut out = Vec::new();
    for (fd, r) in reasons().iter().enumerate() {
        let i = r.load(Ordering::Relaxed);
        if i == 0 {
            continue;
        }
        let Some(&why) = KernelPath::ALL.get(usize::from(i) - 1) else {
            continue;
        };
        if let Some(c) = describe(fd as c_int, why) {
            out.push(c);
        }
    }
    out
}

/// Says once that sockets beyond lstack's descriptor table stay on the
/// kernel (each is counted).
pub fn beyond_table(fd: c_int) {
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            fd,
            slots = table().len(),
            "descriptor beyond lstack's table: this socket and later ones like it stay on the \
             kernel (said once; `gazellectl lstack show` counts them). Raise the hard limit of \
             open files (RLIMIT_NOFILE, at most 1048576) before the process starts to avoid it"
        );
    }
}

// ---------------------------------------------------------------- socket options

/// Whether lstack honours a socket option on its sockets (the preload
/// applies it, or lstack behaves as the option asks anyway).
pub fn honoured(level: c_int, name: c_int) -> bool {
    matches!(
        (level, name),
        (
            libc::SOL_SOCKET,
            libc::SO_KEEPALIVE
                | libc::SO_RCVBUF
                | libc::SO_SNDBUF
                | libc::SO_RCVTIMEO
                | libc::SO_SNDTIMEO
                | libc::SO_LINGER
                // A port in TIME-WAIT can always be bound again on lstack.
                | libc::SO_REUSEADDR
        ) | (libc::IPPROTO_TCP, libc::TCP_NODELAY | libc::TCP_KEEPIDLE)
            | (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)
    )
}

/// A socket option's name, as the C headers spell it.
pub fn option_name(level: c_int, name: c_int) -> String {
    let known = match level {
        libc::SOL_SOCKET => match name {
            libc::SO_REUSEPORT => Some("SO_REUSEPORT"),
            libc::SO_BROADCAST => Some("SO_BROADCAST"),
            libc::SO_PRIORITY => Some("SO_PRIORITY"),
            libc::SO_OOBINLINE => Some("SO_OOBINLINE"),
            libc::SO_RCVLOWAT => Some("SO_RCVLOWAT"),
            libc::SO_SNDLOWAT => Some("SO_SNDLOWAT"),
            libc::SO_RCVBUFFORCE => Some("SO_RCVBUFFORCE"),
            libc::SO_SNDBUFFORCE => Some("SO_SNDBUFFORCE"),
            libc::SO_MARK => Some("SO_MARK"),
            libc::SO_BINDTODEVICE => Some("SO_BINDTODEVICE"),
            libc::SO_TIMESTAMP => Some("SO_TIMESTAMP"),
            libc::SO_BUSY_POLL => Some("SO_BUSY_POLL"),
            libc::SO_INCOMING_CPU => Some("SO_INCOMING_CPU"),
            libc::SO_ZEROCOPY => Some("SO_ZEROCOPY"),
            _ => None,
        },
        libc::IPPROTO_TCP => match name {
            libc::TCP_MAXSEG => Some("TCP_MAXSEG"),
            libc::TCP_CORK => Some("TCP_CORK"),
            libc::TCP_KEEPINTVL => Some("TCP_KEEPINTVL"),
            libc::TCP_KEEPCNT => Some("TCP_KEEPCNT"),
            libc::TCP_SYNCNT => Some("TCP_SYNCNT"),
            libc::TCP_LINGER2 => Some("TCP_LINGER2"),
            libc::TCP_DEFER_ACCEPT => Some("TCP_DEFER_ACCEPT"),
            libc::TCP_WINDOW_CLAMP => Some("TCP_WINDOW_CLAMP"),
            libc::TCP_QUICKACK => Some("TCP_QUICKACK"),
            libc::TCP_CONGESTION => Some("TCP_CONGESTION"),
            libc::TCP_USER_TIMEOUT => Some("TCP_USER_TIMEOUT"),
            libc::TCP_FASTOPEN => Some("TCP_FASTOPEN"),
            libc::TCP_NOTSENT_LOWAT => Some("TCP_NOTSENT_LOWAT"),
            _ => None,
        },
        libc::IPPROTO_IP => match name {
            libc::IP_TOS => Some("IP_TOS"),
            libc::IP_TTL => Some("IP_TTL"),
            libc::IP_RECVERR => Some("IP_RECVERR"),
            libc::IP_PKTINFO => Some("IP_PKTINFO"),
            libc::IP_MTU_DISCOVER => Some("IP_MTU_DISCOVER"),
            libc::IP_FREEBIND => Some("IP_FREEBIND"),
            libc::IP_TRANSPARENT => Some("IP_TRANSPARENT"),
            libc::IP_MULTICAST_TTL => Some("IP_MULTICAST_TTL"),
            libc::IP_ADD_MEMBERSHIP => Some("IP_ADD_MEMBERSHIP"),
            _ => None,
        },
        libc::IPPROTO_IPV6 => match name {
            libc::IPV6_TCLASS => Some("IPV6_TCLASS"),
            libc::IPV6_UNICAST_HOPS => Some("IPV6_UNICAST_HOPS"),
            libc::IPV6_RECVPKTINFO => Some("IPV6_RECVPKTINFO"),
            libc::IPV6_RECVERR => Some("IPV6_RECVERR"),
            _ => None,
        },
        _ => None,
    };
    let level_name = match level {
        libc::SOL_SOCKET => "SOL_SOCKET".to_owned(),
        libc::IPPROTO_TCP => "IPPROTO_TCP".to_owned(),
        libc::IPPROTO_IP => "IPPROTO_IP".to_owned(),
        libc::IPPROTO_IPV6 => "IPPROTO_IPV6".to_owned(),
        libc::IPPROTO_UDP => "IPPROTO_UDP".to_owned(),
        other => format!("level {other}"),
    };
    match known {
        Some(n) => format!("{level_name}/{n}"),
        None => format!("{level_name}/option {name}"),
    }
}

/// Distinct options counted by name; more go to [`OTHER`].
const OPTION_SLOTS: usize = 64;

/// One counted option: its key (`level << 32 | name`, plus one; 0 = free)
/// and how many times it was set.
struct OptionSlot {
    key: AtomicU64,
    count: AtomicU64,
}

static OPTIONS: [OptionSlot; OPTION_SLOTS] = [const {
    OptionSlot {
        key: AtomicU64::new(0),
        count: AtomicU64::new(0),
    }
}; OPTION_SLOTS];

/// Options set beyond the [`OPTION_SLOTS`] counted by name.
static OTHER: AtomicU64 = AtomicU64::new(0);

/// The name [`OTHER`] is shown under.
const OTHER_NAME: &str = "other options";

fn key(level: c_int, name: c_int) -> u64 {
    ((u64::from(level as u32) << 32) | u64::from(name as u32)) + 1
}

/// The application set an option lstack does not honour on one of its
/// sockets (`times` times): counted, and said once per option.
pub fn unhonoured(level: c_int, name: c_int, times: u64) {
    let k = key(level, name);
    for s in &OPTIONS {
        match s
            .key
            .compare_exchange(0, k, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                s.count.fetch_add(times, Ordering::Relaxed);
                tracing::warn!(
                    option = %option_name(level, name),
                    "an lstack socket was given an option lstack does not honour: accepted \
                     without effect, as gazelle does (said once per option; `gazellectl lstack \
                     show` counts them)"
                );
                return;
            }
            Err(found) if found == k => {
                s.count.fetch_add(times, Ordering::Relaxed);
                return;
            }
            Err(_) => {}
        }
    }
    OTHER.fetch_add(times, Ordering::Relaxed);
}

/// Options set that lstack does not honour: name, times set.
pub fn unhonoured_options() -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = OPTIONS
        .iter()
        .filter_map(|s| {
            let k = s.key.load(Ordering::Acquire);
            let n = s.count.load(Ordering::Relaxed);
            (k != 0 && n > 0).then(|| {
                let k = k - 1;
                (option_name((k >> 32) as u32 as c_int, k as u32 as c_int), n)
            })
        })
        .collect();
    let other = OTHER.load(Ordering::Relaxed);
    if other > 0 {
        out.insert(OTHER_NAME.into(), other);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_named_as_the_headers_spell_them() {
        assert_eq!(
            option_name(libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT),
            "IPPROTO_TCP/TCP_DEFER_ACCEPT"
        );
        assert_eq!(
            option_name(libc::SOL_SOCKET, 9999),
            "SOL_SOCKET/option 9999"
        );
        assert_eq!(option_name(77, 3), "level 77/option 3");
    }

    #[test]
    fn what_the_preload_applies_is_honoured_and_the_rest_is_not() {
        assert!(honoured(libc::IPPROTO_TCP, libc::TCP_NODELAY));
        assert!(honoured(libc::SOL_SOCKET, libc::SO_RCVTIMEO));
        assert!(!honoured(libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT));
        assert!(!honoured(libc::IPPROTO_IP, libc::IP_TOS));
    }

    #[test]
    fn unhonoured_options_are_counted_by_name() {
        // Levels no test elsewhere uses, so the shared counters are ours.
        unhonoured(1001, 1, 1);
        unhonoured(1001, 1, 1);
        unhonoured(1001, 2, 3);
        let got = unhonoured_options();
        assert_eq!(got.get("level 1001/option 1"), Some(&2), "{got:?}");
        assert_eq!(got.get("level 1001/option 2"), Some(&3), "{got:?}");
    }

    #[test]
    fn a_duplicate_shares_the_reason_and_a_close_forgets_it() {
        record(900, KernelPath::Loopback);
        assert_eq!(reason(900), Some(KernelPath::Loopback));
        duplicated(900, 901);
        assert_eq!(reason(901), Some(KernelPath::Loopback));
        forget(900);
        assert_eq!(reason(900), None);
        duplicated(900, 901);
        assert_eq!(reason(901), None, "dup2 of a plain fd onto it");
        record(-1, KernelPath::Loopback);
        assert_eq!(reason(-1), None);
    }
}
