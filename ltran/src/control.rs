//! ltran's control socket: registration of lstack instances and the
//! `gazellectl ltran` requests.
//!
//! Each connection gets a thread. A `Register` connection stays open as the
//! instance's lease: ltran watches it together with a pidfd of the peer
//! (pid from the socket's credentials, never from the message), so an
//! instance killed with SIGKILL is noticed at once and its rings, table
//! entries and mbufs are taken back while the others keep running.
//!
//! An address belongs to one process family: a second instance may
//! register it only as the holders' child or sibling (parents read from
//! `/proc`, not claimed), as the same user, with the same IPv4 and IPv6
//! pair; forked workers of one server then share the address and its
//! listening ports (see [`table`](crate::table)).
//!
//! Every line read here is bounded: at most [`MAX_LINE`] bytes, and once its
//! first byte is in, its newline must follow within [`LINE_DEADLINE`]. A
//! request line that breaks either is refused; on a lease, the lease is
//! closed and the instance removed, with the reason logged and shown.

use std::{
    io::Read,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::net::{UnixListener, UnixStream},
    },
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Arc, Mutex,
    },
    time::{Duration, Instant},
};

use dpdk::{Eal, Ring};
use gazelle_config::LtranConfig;
use gazelle_ctl_proto::{
    server, LtranHello, Registered, Registration, Request, Response, RingPair,
};

use crate::forward::{Command, Published, ThreadRings};

const CLOSED: &str = "closed its registration";

/// Most stack threads one instance may register (the dispatcher numbers
/// its rings by it).
pub const MAX_THREADS: u16 = crate::lanes::MAX_THREADS;
/// Slots in each ring (power of two).
pub const RING_SIZE: u32 = 2048;
/// Longest line read on a control connection, newline included: the
/// bound of every other control socket (ctl-proto's server).
pub const MAX_LINE: usize = 64 * 1024;
/// How long a line may take from its first byte to its newline. lstack
/// writes each line at once; a peer that trickles bytes is cut off.
pub const LINE_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
struct Entry {
    pid: u32,
    /// Its parent when it registered (the kernel's, `/proc/<pid>/stat`).
    ppid: u32,
    uid: u32,
    process: String,
    ipv4: Ipv4Addr,
    ipv6: Option<Ipv6Addr>,
    since: Instant,
}

/// What the control side knows about instances.
#[derive(Debug)]
struct Registry {
    slots: Vec<Option<Entry>>,
    next_tag: u32,
}

/// Shared state of the control threads.
#[derive(Debug)]
pub struct Control {
    /// The EAL (rings are created here).
    pub eal: Eal,
    /// ltran's config.
    pub config: LtranConfig,
    /// The bond MAC.
    pub mac: [u8; 6],
    /// The EAL file prefix secondaries must use.
    pub file_prefix: String,
    /// Name of the pool instances allocate from.
    pub tx_pool: String,
    /// Where the dispatcher publishes numbers.
    pub published: Published,
    /// Set to stop ltran.
    pub quit: Arc<AtomicBool>,
    commands: Mutex<mpsc::Sender<Command>>,
    registry: Mutex<Registry>,
}

impl Control {
    /// Control state sending commands to the dispatcher over `commands`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        eal: Eal,
        config: LtranConfig,
        mac: [u8; 6],
        file_prefix: String,
        tx_pool: String,
        published: Published,
        quit: Arc<AtomicBool>,
        commands: mpsc::Sender<Command>,
    ) -> Self {
        let slots = config.dispatch_max_clients as usize;
        Self {
            eal,
            config,
            mac,
            file_prefix,
            tx_pool,
            published,
            quit,
            commands: Mutex::new(commands),
            registry: Mutex::new(Registry {
                slots: vec![None; slots],
                next_tag: 1,
            }),
        }
    }

    fn send(&self, cmd: Command) {
        let tx = self
            .commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let _ = tx.send(cmd);
    }

    fn stats(&self) -> Response {
        let mut stats = self
            .published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        for inst in &mut stats.instances {
            if let Some(Some(e)) = reg.slots.get(inst.slot as usize) {
                inst.pid = e.pid;
                inst.uid = e.uid;
                inst.process = e.process.clone();
                inst.registered_secs = e.since.elapsed().as_secs();
            }
        }
        Response::LtranStats(stats)
    }
}

/// Requests answered at once, leases aside (each registration's lease is a
/// connection of its own, bounded by `dispatch_max_clients`): one more is
/// told ltran is busy.
const MAX_REQUESTS_AT_ONCE: usize = 16;

/// Serves `listener` until ltran quits (the thread is left to die with the
/// process).
pub fn serve(control: Arc<Control>, listener: UnixListener) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("ltran-ctl".into())
        .spawn(move || {
            let requests = Arc::new(AtomicUsize::new(0));
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                if !server::allowed(&conn) {
                    tracing::warn!(
                        "control connection from a user that is neither root nor ltran's: refused"
                    );
                    continue;
                }
                if requests.fetch_add(1, Ordering::SeqCst) >= MAX_REQUESTS_AT_ONCE {
                    requests.fetch_sub(1, Ordering::SeqCst);
                    tracing::warn!(
                        limit = MAX_REQUESTS_AT_ONCE,
                        "control connection turned away: as many requests being answered as allowed"
                    );
                    let _ = conn.set_nonblocking(true);
                    let message =
                        "ltran is busy: answering as many requests as it takes at once; try again"
                            .into();
                    let _ = server::write_response(&conn, &Response::Error { message });
                    continue;
                }
                let control = Arc::clone(&control);
                let slot = Arc::clone(&requests);
                let spawned = std::thread::Builder::new()
                    .name("ltran-conn".into())
                    .spawn(move || connection(&control, conn, &slot));
                if spawned.is_err() {
                    requests.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })?;
    Ok(())
}

/// Answers one connection; `requests` counts it until it is answered or
/// becomes a registration's lease.
fn connection(control: &Arc<Control>, conn: UnixStream, requests: &AtomicUsize) {
    struct Answered<'a>(Option<&'a AtomicUsize>);
    impl Answered<'_> {
        fn release(&mut self) {
            if let Some(r) = self.0.take() {
                r.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
    impl Drop for Answered<'_> {
        fn drop(&mut self) {
            self.release();
        }
    }
    let mut answered = Answered(Some(requests));
    let _ = conn.set_write_timeout(Some(LINE_DEADLINE));
    // The first line is due at once: its deadline runs from the connection.
    let mut lines = Lines::new(Some(Instant::now()));
    let line = match lines.next(&conn, None) {
        Next::Line(l) => l,
        Next::TooLong => {
            tracing::warn!("control request longer than {MAX_LINE} bytes: refused");
            let message = format!("request longer than {MAX_LINE} bytes: refused");
            let _ = server::write_response(&conn, &Response::Error { message });
            return;
        }
        Next::TooSlow | Next::Closed | Next::Exited => return,
    };
    let response = match server::parse_request(&line) {
        Err(refusal) => *refusal,
        Ok(Request::Ping) => Response::Pong {
            daemon: "ltran".into(),
            pid: std::process::id(),
        },
        Ok(Request::Hello) => Response::Hello(LtranHello {
            pid: std::process::id(),
            file_prefix: control.file_prefix.clone(),
            bond_mac: crate::fmt_mac(control.mac),
            max_clients: control.config.dispatch_max_clients,
        }),
        Ok(Request::LtranStats) => control.stats(),
        Ok(Request::LtranQuit) => {
            tracing::info!("quit requested over the control socket");
            control.quit.store(true, Ordering::SeqCst);
            Response::Ok
        }
        Ok(Request::Register(reg)) => {
            // A lease: bounded by dispatch_max_clients, not by the requests.
            answered.release();
            // What the instance sent after its registration stays in `lines`.
            session(control, conn, lines, reg);
            return;
        }
        Ok(other) => Response::Error {
            message: format!("ltran does not answer {other:?}"),
        },
    };
    let _ = server::write_response(&conn, &response);
}

/// Checks that the addresses of `reg` are host addresses of ltran's
/// dispatch subnets: inside them, and neither the IPv4 network nor the
/// broadcast address (a /31 has neither, RFC 3021) nor the IPv6
/// subnet-router anycast address (host part zero; a /127 has none,
/// RFC 6164). The error is for the client.
fn check_addresses(cfg: &LtranConfig, reg: &Registration) -> Result<(), String> {
    let len = cfg.dispatch_prefix_len();
    let subnet = format!("{}/{len}", cfg.dispatch_subnet);
    if !cfg.dispatch_contains(reg.ipv4) {
        return Err(format!(
            "host_addr {} is outside ltran's dispatch subnet {subnet}",
            reg.ipv4
        ));
    }
    if len <= 30 {
        let host_bits = 32 - u32::from(len);
        let network = u32::from(cfg.dispatch_subnet);
        let broadcast = network | ((1u32 << host_bits) - 1);
        let what = match u32::from(reg.ipv4) {
            a if a == network => Some("network"),
            a if a == broadcast => Some("broadcast"),
            _ => None,
        };
        if let Some(what) = what {
            return Err(format!(
                "host_addr {} is the {what} address of ltran's dispatch subnet {subnet}: use a host address, {}..={}",
                reg.ipv4,
                Ipv4Addr::from(network + 1),
                Ipv4Addr::from(broadcast - 1)
            ));
        }
    }
    if let Some(a) = reg.ipv6 {
        let Some(subnet6) = cfg.dispatch_subnet6.filter(|_| cfg.dispatch6_contains(a)) else {
            return Err(format!(
                "host_addr6 {a} is outside ltran's dispatch_subnet6 ({})",
                cfg.dispatch_subnet6
                    .map_or("not set".to_owned(), |s| s.to_string())
            ));
        };
        let host_bits = 128 - u32::from(subnet6.prefix_len());
        let host_mask = u128::MAX.checked_shr(128 - host_bits).unwrap_or(0);
        if host_bits >= 2 && u128::from(a) & host_mask == 0 {
            return Err(format!(
                "host_addr6 {a} is the subnet-router anycast address of ltran's dispatch_subnet6 {subnet6} (host part zero): use a host address"
            ));
        }
    }
    Ok(())
}

/// The kernel's name of process `pid` (`/proc/<pid>/comm`): what ltran
/// shows, rather than the name a client claims.
fn process_name(pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end_matches('\n').to_owned())
}

/// The kernel's parent of process `pid` (`/proc/<pid>/stat`, the field
/// after the name, which may hold spaces and parentheses).
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Whether a process (`pid`, `ppid`, `uid`) registering `reg` may share
/// the addresses `holders` hold (all those whose IPv4 or IPv6 address is
/// one of `reg`'s): only as the same pair of addresses, of the same user,
/// and of the same process family as one of them (its child, or its
/// sibling through a parent other than init, which every orphan has).
/// The error is for the client.
fn may_share(
    holders: &[&Entry],
    pid: u32,
    ppid: u32,
    uid: u32,
    reg: &Registration,
) -> Result<(), String> {
    let Some(first) = holders.first() else {
        return Ok(());
    };
    let held = |e: &Entry| {
        if e.ipv4 == reg.ipv4 {
            IpAddr::V4(reg.ipv4)
        } else {
            IpAddr::V6(reg.ipv6.unwrap_or(Ipv6Addr::UNSPECIFIED))
        }
    };
    let by = |e: &Entry| {
        format!(
            "{} is already registered by pid {} ({}) for {} s",
            held(e),
            e.pid,
            e.process,
            e.since.elapsed().as_secs()
        )
    };
    let v6 = |a: Option<Ipv6Addr>| a.map_or("no IPv6 address".to_owned(), |a| a.to_string());
    if let Some(e) = holders
        .iter()
        .find(|e| e.ipv4 != reg.ipv4 || e.ipv6 != reg.ipv6)
    {
        return Err(format!(
            "{}, with {} and {}: instances share an address only as the same IPv4 and IPv6 pair",
            by(e),
            e.ipv4,
            v6(e.ipv6)
        ));
    }
    if let Some(e) = holders.iter().find(|e| e.uid != uid) {
        return Err(format!(
            "{} as uid {}, not this process's uid {uid}: one address belongs to one user's process family",
            by(e),
            e.uid
        ));
    }
    let related = holders
        .iter()
        .any(|e| ppid == e.pid || (ppid == e.ppid && ppid > 1));
    if !related {
        return Err(format!(
            "{}, which is not this process's parent or sibling (pid {pid}, parent {ppid}): one address belongs to one process family",
            by(first)
        ));
    }
    Ok(())
}

/// Checks a registration and reserves a slot for `process` (its name,
/// `ppid` its parent); the error is for the client.
fn admit(
    control: &Control,
    pid: u32,
    ppid: u32,
    uid: u32,
    process: &str,
    reg: &Registration,
) -> Result<(u32, u32), String> {
    let cfg = &control.config;
    let mac = crate::fmt_mac(control.mac);
    if !reg.mac.eq_ignore_ascii_case(&mac) {
        return Err(format!(
            "devices = {} is not the bond's MAC {mac} (bond_macs in ltran's config): set devices = \"{mac}\" in lstack's config",
            reg.mac
        ));
    }
    check_addresses(cfg, reg)?;
    if reg.threads == 0 || reg.threads > MAX_THREADS {
        return Err(format!(
            "{} stack threads: ltran gives an instance 1 to {MAX_THREADS}",
            reg.threads
        ));
    }
    let mut r = control.registry.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(e) = r.slots.iter().flatten().find(|e| e.pid == pid) {
        return Err(format!("pid {pid} is already registered (as {})", e.ipv4));
    }
    let holders: Vec<&Entry> = r
        .slots
        .iter()
        .flatten()
        .filter(|e| e.ipv4 == reg.ipv4 || (reg.ipv6.is_some() && e.ipv6 == reg.ipv6))
        .collect();
    may_share(&holders, pid, ppid, uid, reg)?;
    let Some(slot) = r.slots.iter().position(Option::is_none) else {
        return Err(format!(
            "ltran already serves {} instances (dispatch_max_clients)",
            r.slots.len()
        ));
    };
    let tag = r.next_tag;
    r.next_tag = r.next_tag.wrapping_add(1).max(1);
    r.slots[slot] = Some(Entry {
        pid,
        ppid,
        uid,
        process: process.to_owned(),
        ipv4: reg.ipv4,
        ipv6: reg.ipv6,
        since: Instant::now(),
    });
    Ok((slot as u32, tag))
}

fn release(control: &Control, slot: u32) {
    let mut r = control.registry.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = r.slots.get_mut(slot as usize) {
        *s = None;
    }
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until `fds[i]` is readable; returns the readiness of each, or
/// `None` on timeout.
fn poll_readable(fds: &[i32], timeout_ms: i32) -> Option<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: p is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            return None;
        }
        return Some(p.iter().map(|p| p.revents != 0).collect());
    }
}

/// What [`Lines::next`] found.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// A whole line (newline included).
    Line(String),
    /// The peer closed the connection (or reading failed).
    Closed,
    /// The watched pidfd became readable: the process exited.
    Exited,
    /// More than [`MAX_LINE`] bytes without a newline.
    TooLong,
    /// A line begun and not finished within [`LINE_DEADLINE`].
    TooSlow,
}

/// Lines of a control connection, each bounded in length and time; holds
/// at most [`MAX_LINE`] plus one read of bytes.
#[derive(Debug)]
struct Lines {
    buf: Vec<u8>,
    /// When the line being read began (its first byte came in).
    started: Option<Instant>,
    /// How long a line may take ([`LINE_DEADLINE`]).
    deadline: Duration,
}

impl Lines {
    /// A reader whose first line counts as begun at `started`, if given.
    fn new(started: Option<Instant>) -> Self {
        Self {
            buf: Vec::new(),
            started,
            deadline: LINE_DEADLINE,
        }
    }

    /// The next line from `conn`; also returns [`Next::Exited`] when
    /// `pidfd` becomes readable while no line is complete.
    fn next(&mut self, conn: &UnixStream, pidfd: Option<RawFd>) -> Next {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                if end >= MAX_LINE {
                    return Next::TooLong;
                }
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                self.started = (!self.buf.is_empty()).then(Instant::now);
                return Next::Line(String::from_utf8_lossy(&line).into_owned());
            }
            if self.buf.len() >= MAX_LINE {
                return Next::TooLong;
            }
            let timeout_ms = match self.started {
                None => -1,
                Some(t) => {
                    let left = self.deadline.saturating_sub(t.elapsed());
                    if left.is_zero() {
                        return Next::TooSlow;
                    }
                    // Rounded up, so that the deadline has passed on waking.
                    left.as_millis().min(i32::MAX as u128) as i32 + 1
                }
            };
            let mut fds = vec![conn.as_raw_fd()];
            fds.extend(pidfd);
            match poll_readable(&fds, timeout_ms) {
                Some(r) if r.get(1) == Some(&true) => return Next::Exited,
                Some(_) => {}
                // Timed out (the loop then says TooSlow) or interrupted.
                None => continue,
            }
            let mut chunk = [0u8; 4096];
            match (&mut &*conn).read(&mut chunk) {
                Ok(0) => return Next::Closed,
                Ok(n) => {
                    self.started.get_or_insert_with(Instant::now);
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                    ) => {}
                Err(_) => return Next::Closed,
            }
        }
    }
}

fn session(control: &Arc<Control>, conn: UnixStream, lines: Lines, reg: Registration) {
    let refuse = |message: String| {
        tracing::warn!(ip = %reg.ipv4, %message, "registration refused");
        let _ = server::write_response(&conn, &Response::Error { message });
    };
    let cred = match nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials)
    {
        Ok(c) => c,
        Err(e) => return refuse(format!("cannot read the peer's credentials: {e}")),
    };
    let (pid, uid) = (cred.pid() as u32, cred.uid());
    let Some(process) = process_name(pid) else {
        return refuse(format!(
            "cannot read /proc/{pid}/comm of the registering process"
        ));
    };
    let Some(ppid) = parent_pid(pid) else {
        return refuse(format!(
            "cannot read /proc/{pid}/stat of the registering process"
        ));
    };
    let (slot, tag) = match admit(control, pid, ppid, uid, &process, &reg) {
        Ok(x) => x,
        Err(m) => return refuse(m),
    };
    let pidfd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) => {
            release(control, slot);
            return refuse(format!("cannot watch pid {pid}: {e}"));
        }
    };
    let mut rings = Vec::new();
    let mut names = Vec::new();
    for t in 0..reg.threads {
        let rx_name = format!("lt{tag}r{t}");
        let tx_name = format!("lt{tag}t{t}");
        let made = Ring::create_spsc(&control.eal, &rx_name, RING_SIZE, -1).and_then(|rx| {
            Ring::create_spsc(&control.eal, &tx_name, RING_SIZE, -1)
                .map(|tx| ThreadRings { rx, tx })
        });
        match made {
            Ok(r) => rings.push(r),
            Err(e) => {
                release(control, slot);
                return refuse(format!("creating rings: {e}"));
            }
        }
        names.push(RingPair {
            rx: rx_name,
            tx: tx_name,
        });
    }
    let (done_tx, done_rx) = mpsc::channel();
    control.send(Command::Add {
        slot,
        tag,
        ipv4: reg.ipv4,
        ipv6: reg.ipv6,
        rings,
        done: done_tx,
    });
    if done_rx.recv_timeout(Duration::from_secs(5)).is_err() {
        release(control, slot);
        return refuse("the dispatcher did not take the instance (is ltran stopping?)".into());
    }
    tracing::info!(
        pid,
        ppid,
        uid,
        %process,
        claimed = %reg.process,
        ip = %reg.ipv4,
        ipv6 = ?reg.ipv6,
        threads = reg.threads,
        slot,
        "instance registered"
    );
    let answer = Response::Registered(Registered {
        slot,
        owner_tag: tag,
        rings: names,
        tx_pool: control.tx_pool.clone(),
    });
    let reason = if server::write_response(&conn, &answer).is_err() {
        "did not read its registration".to_owned()
    } else {
        watch(control, &conn, lines, &pidfd, slot)
    };

    // The process is gone (or closed its lease): if it is dead, the mbufs
    // it held come back; if it closed the lease while alive, give it a
    // moment to exit before deciding.
    let dead = poll_readable(&[pidfd.as_raw_fd()], 2000).is_some();
    let reason = if dead && reason == CLOSED {
        "process exited".to_owned()
    } else {
        reason
    };
    let (done_tx, done_rx) = mpsc::channel();
    control.send(Command::Remove {
        slot,
        reason: reason.clone(),
        pid,
        reclaim: dead,
        done: done_tx,
    });
    match done_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(d) => tracing::info!(
            pid,
            ip = %reg.ipv4,
            %reason,
            mbufs_reclaimed = d.mbufs_reclaimed,
            connections_removed = d.connections_removed,
            "instance removed"
        ),
        Err(_) => tracing::warn!(pid, "the dispatcher did not confirm the removal"),
    }
    release(control, slot);
}

/// Serves the instance's listen events until its process dies or the
/// connection ends; returns why.
fn watch(
    control: &Control,
    conn: &UnixStream,
    mut lines: Lines,
    pidfd: &OwnedFd,
    slot: u32,
) -> String {
    loop {
        let line = match lines.next(conn, Some(pidfd.as_raw_fd())) {
            Next::Line(l) => l,
            Next::Closed => return CLOSED.into(),
            Next::Exited => return "process exited".into(),
            Next::TooLong => {
                let reason =
                    format!("sent a line longer than {MAX_LINE} bytes on its registration");
                tracing::warn!(slot, %reason, "closing the registration");
                return reason;
            }
            Next::TooSlow => {
                let reason = format!(
                    "left a line unfinished for {} s on its registration",
                    LINE_DEADLINE.as_secs()
                );
                tracing::warn!(slot, %reason, "closing the registration");
                return reason;
            }
        };
        match server::parse_request(&line) {
            Ok(Request::Listen(addr)) => control.send(Command::Listen {
                slot,
                addr,
                on: true,
            }),
            Ok(Request::Unlisten(addr)) => control.send(Command::Listen {
                slot,
                addr,
                on: false,
            }),
            Ok(other) => tracing::warn!(slot, ?other, "unexpected request on a registration"),
            Err(e) => tracing::warn!(slot, ?e, "unreadable request on a registration"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn config() -> LtranConfig {
        let mut c = LtranConfig::new(
            "10.0.0.0".parse().unwrap(),
            8,
            vec!["0x1".parse().unwrap()],
            vec!["02:00:00:00:00:01".parse().unwrap()],
        );
        c.dispatch_subnet6 = Some("fd00:1::/64".parse().unwrap());
        c
    }

    fn reg(ipv4: &str, ipv6: Option<&str>) -> Registration {
        Registration {
            ipv4: ipv4.parse().unwrap(),
            ipv6: ipv6.map(|a| a.parse().unwrap()),
            mac: "02:00:00:00:00:01".into(),
            threads: 1,
            process: "x".into(),
        }
    }

    #[test]
    fn network_broadcast_and_anycast_addresses_are_refused() {
        let c = config();
        check_addresses(&c, &reg("10.0.0.1", Some("fd00:1::1"))).unwrap();
        check_addresses(&c, &reg("10.0.0.254", None)).unwrap();
        let e = check_addresses(&c, &reg("10.0.0.0", None)).unwrap_err();
        assert_eq!(
            e,
            "host_addr 10.0.0.0 is the network address of ltran's dispatch subnet 10.0.0.0/24: \
             use a host address, 10.0.0.1..=10.0.0.254"
        );
        let e = check_addresses(&c, &reg("10.0.0.255", None)).unwrap_err();
        assert!(
            e.starts_with("host_addr 10.0.0.255 is the broadcast address"),
            "{e}"
        );
        let e = check_addresses(&c, &reg("10.0.1.5", None)).unwrap_err();
        assert!(
            e.contains("outside ltran's dispatch subnet 10.0.0.0/24"),
            "{e}"
        );
        let e = check_addresses(&c, &reg("10.0.0.5", Some("fd00:1::"))).unwrap_err();
        assert!(
            e.starts_with("host_addr6 fd00:1:: is the subnet-router anycast"),
            "{e}"
        );
        let e = check_addresses(&c, &reg("10.0.0.5", Some("fd00:2::5"))).unwrap_err();
        assert!(e.contains("outside ltran's dispatch_subnet6"), "{e}");

        // A /31 has no network or broadcast address (RFC 3021).
        let mut c31 = config();
        c31.dispatch_subnet_length = 1;
        check_addresses(&c31, &reg("10.0.0.0", None)).unwrap();
        check_addresses(&c31, &reg("10.0.0.1", None)).unwrap();
    }

    #[test]
    fn the_process_name_is_the_kernels() {
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(
            process_name(std::process::id()),
            Some(comm.trim().to_owned())
        );
        assert_eq!(process_name(u32::MAX), None);
    }

    #[test]
    fn lines_are_split_and_what_follows_is_kept() {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"one\ntwo\nthr").unwrap();
        let mut lines = Lines::new(None);
        assert_eq!(lines.next(&a, None), Next::Line("one\n".into()));
        assert_eq!(lines.next(&a, None), Next::Line("two\n".into()));
        b.write_all(b"ee\n").unwrap();
        assert_eq!(lines.next(&a, None), Next::Line("three\n".into()));
        drop(b);
        assert_eq!(lines.next(&a, None), Next::Closed);
    }

    #[test]
    fn a_line_without_end_is_cut_at_the_limit() {
        let (a, b) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            let chunk = vec![b'x'; 4096];
            // Until the reader gives up and the socket closes.
            while (&b).write_all(&chunk).is_ok() {}
        });
        let mut lines = Lines::new(None);
        assert_eq!(lines.next(&a, None), Next::TooLong);
        assert!(lines.buf.len() < MAX_LINE + 4096, "{}", lines.buf.len());
        drop(a);
        writer.join().unwrap();

        // A whole line over the limit is refused too.
        let (a, mut b) = UnixStream::pair().unwrap();
        let w = std::thread::spawn(move || {
            let mut long = vec![b'x'; MAX_LINE];
            long.push(b'\n');
            let _ = b.write_all(&long);
        });
        assert_eq!(Lines::new(None).next(&a, None), Next::TooLong);
        w.join().unwrap();
    }

    #[test]
    fn a_trickled_line_runs_out_of_time() {
        let (a, b) = UnixStream::pair().unwrap();
        let trickler = std::thread::spawn(move || {
            // A byte every 20 ms, never a newline, until the reader is gone.
            while (&b).write_all(b"x").is_ok() {
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let mut lines = Lines::new(None);
        lines.deadline = Duration::from_millis(300);
        assert_eq!(lines.next(&a, None), Next::TooSlow);
        drop(a);
        trickler.join().unwrap();
    }

    #[test]
    fn a_dead_process_ends_the_wait() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pidfd = pidfd_open(child.id()).unwrap();
        child.wait().unwrap();
        assert_eq!(
            Lines::new(None).next(&a, Some(pidfd.as_raw_fd())),
            Next::Exited
        );
    }

    fn holder(pid: u32, ppid: u32, uid: u32, ipv4: &str, ipv6: Option<&str>) -> Entry {
        Entry {
            pid,
            ppid,
            uid,
            process: "nginx".into(),
            ipv4: ipv4.parse().unwrap(),
            ipv6: ipv6.map(|a| a.parse().unwrap()),
            since: Instant::now(),
        }
    }

    #[test]
    fn an_address_is_shared_only_within_a_process_family() {
        let r = reg("10.0.0.2", None);
        let worker = holder(200, 100, 33, "10.0.0.2", None);
        // Nobody holds it.
        may_share(&[], 300, 1, 0, &r).unwrap();
        // A sibling (same master), and a holder's child.
        may_share(&[&worker], 201, 100, 33, &r).unwrap();
        may_share(&[&worker], 300, 200, 33, &r).unwrap();
        // The related one may be any holder.
        let other = holder(250, 240, 33, "10.0.0.2", None);
        may_share(&[&other, &worker], 201, 100, 33, &r).unwrap();
        // Unrelated: another parent, or a grandchild.
        let e = may_share(&[&worker], 400, 399, 33, &r).unwrap_err();
        assert!(
            e.starts_with("10.0.0.2 is already registered by pid 200 (nginx) for 0 s, which is not this process's parent or sibling"),
            "{e}"
        );
        assert!(
            e.ends_with("one address belongs to one process family"),
            "{e}"
        );
        // Orphans are all init's children: no family through pid 1.
        let orphan = holder(200, 1, 33, "10.0.0.2", None);
        may_share(&[&orphan], 201, 1, 33, &r).unwrap_err();
        // Same family, another user.
        let e = may_share(&[&worker], 201, 100, 0, &r).unwrap_err();
        assert!(e.contains("as uid 33, not this process's uid 0"), "{e}");
    }

    #[test]
    fn a_shared_address_is_the_same_ipv4_and_ipv6_pair() {
        let both = holder(200, 100, 0, "10.0.0.2", Some("fd00:1::2"));
        may_share(&[&both], 201, 100, 0, &reg("10.0.0.2", Some("fd00:1::2"))).unwrap();
        for r in [
            reg("10.0.0.2", None),
            reg("10.0.0.2", Some("fd00:1::3")),
            reg("10.0.0.3", Some("fd00:1::2")),
        ] {
            let e = may_share(&[&both], 201, 100, 0, &r).unwrap_err();
            assert!(e.contains("same IPv4 and IPv6 pair"), "{e}");
        }
        let v4 = holder(200, 100, 0, "10.0.0.2", None);
        let e = may_share(&[&v4], 201, 100, 0, &reg("10.0.0.2", Some("fd00:1::2"))).unwrap_err();
        assert!(e.contains("with 10.0.0.2 and no IPv6 address"), "{e}");
    }

    #[test]
    fn the_parent_is_the_kernels() {
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        assert_eq!(parent_pid(child.id()), Some(me));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(parent_pid(me), Some(std::os::unix::process::parent_id()));
        assert_eq!(parent_pid(u32::MAX), None);
    }
}
