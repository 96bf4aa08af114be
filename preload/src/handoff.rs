//! Connections handed to a child forked after the stack started: a server
//! that accepts, forks a process for the connection and closes its own
//! descriptor (PostgreSQL's postmaster and its backends; inetd-style
//! servers).
//!
//! The child has no stack: the stack's threads stay in the parent. So at
//! `fork`, each of the parent's lstack connections (at most
//! [`MAX_PER_FORK`]) gets a kernel socket pair. In the child, its end takes
//! the connection's descriptor number; the parent keeps the other end.
//! - While the parent keeps its descriptor, the connection is the
//!   parent's: the child's end carries nothing (a read there waits). A
//!   child that only works beside the connections (a snapshot, a helper
//!   that execs) never notices.
//! - When the parent closes its descriptor, the connection passes to the
//!   child: two threads of the parent copy bytes between the lstack
//!   connection and the pair, each direction until it ends (a FIN either
//!   way is passed on as one), and the connection closes when both have.
//!   If the child's end is already closed (the child exited), the close is
//!   an ordinary close.
//! - In the child, the pair's end answers `getsockname`/`getpeername` with
//!   the connection's addresses and accepts TCP and IP level options
//!   (which the parent's stack does not get); reads, writes and waits are
//!   the kernel's.
//!
//! Bounded: at most [`MAX_PER_FORK`] pairs per fork and [`MAX_PENDING`]
//! parent ends waiting for a close (the oldest are dropped first); a fork
//! of a process with more connections leaves the rest closed in the child,
//! as before.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc, Mutex, OnceLock, Weak,
};

use libc::c_int;

use crate::{
    file::{table, File, Kind},
    real::real,
};

/// Connections given a pair at one fork; more stay closed in the child.
pub const MAX_PER_FORK: usize = 64;
/// Parent ends kept waiting for their connection's close.
pub const MAX_PENDING: usize = 256;

/// A socket address as the kernel writes it.
#[derive(Clone, Copy)]
struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl RawAddr {
    /// `getsockname` (or, with `peer`, `getpeername`) of `fd` through the
    /// preload's own answers for lstack sockets.
    fn of(fd: c_int, peer: bool) -> Option<Self> {
        let mut a = RawAddr {
            // SAFETY: all-zero is a valid sockaddr_storage.
            storage: unsafe { std::mem::zeroed() },
            len: std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        };
        let p = (&raw mut a.storage).cast::<libc::sockaddr>();
        // SAFETY: a sockaddr_storage out-pointer and its length.
        let r = unsafe {
            if peer {
                crate::getpeername(fd, p, &mut a.len)
            } else {
                crate::getsockname(fd, p, &mut a.len)
            }
        };
        (r == 0).then_some(a)
    }

    /// Writes it to the caller's buffer as `getsockname` does (truncated,
    /// the full length in `len`).
    ///
    /// # Safety
    /// `a` must point to `*len` writable bytes, `len` must be valid.
    unsafe fn write(&self, a: *mut libc::sockaddr, len: *mut libc::socklen_t) -> c_int {
        if a.is_null() || len.is_null() {
            return crate::fail(libc::EFAULT);
        }
        // SAFETY: per the caller's contract.
        unsafe {
            let n = (*len).min(self.len) as usize;
            std::ptr::copy_nonoverlapping((&raw const self.storage).cast::<u8>(), a.cast(), n);
            *len = self.len;
        }
        0
    }
}

/// One connection's pair, made just before a fork.
struct Pair {
    fd: c_int,
    file: Arc<File>,
    parent_end: c_int,
    child_end: c_int,
    local: RawAddr,
    peer: RawAddr,
}

/// What a fork prepared: the pairs, given to [`after_fork`].
pub struct Prepared(Vec<Pair>);

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Prepared({} pairs)", self.0.len())
    }
}

/// Makes a pair for each of the process's lstack connections (at most
/// [`MAX_PER_FORK`]); nothing when the stack does not run here.
pub fn prepare() -> Prepared {
    let mut pairs = Vec::new();
    if crate::runtime::running().is_none() {
        return Prepared(pairs);
    }
    table().for_each(|fd, f| {
        if pairs.len() >= MAX_PER_FORK || !matches!(f.kind, Kind::Stream(_)) {
            return;
        }
        let (Some(local), Some(peer)) = (RawAddr::of(fd, false), RawAddr::of(fd, true)) else {
            return;
        };
        let mut ends = [-1; 2];
        // SAFETY: creating a socket pair into a two-int array.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                ends.as_mut_ptr(),
            )
        };
        if r == 0 {
            pairs.push(Pair {
                fd,
                file: Arc::clone(f),
                parent_end: ends[0],
                child_end: ends[1],
                local,
                peer,
            });
        }
    });
    Prepared(pairs)
}

/// After a `fork` that failed: the pairs are closed.
pub fn discard(prepared: Prepared) {
    for p in prepared.0 {
        // SAFETY: closing both ends of our own pair.
        unsafe {
            (real().close)(p.parent_end);
            (real().close)(p.child_end);
        }
    }
}

/// In the parent after `fork` (`child` is false) or in the child: keeps
/// its ends and closes the other side's. In the child, each connection's
/// descriptor becomes its pair's end (before the other lstack descriptors
/// are made to fail, which skips these). Returns how many connections the
/// child can be handed.
pub fn after_fork(prepared: Prepared, child: bool) -> usize {
    let n = prepared.0.len();
    for p in prepared.0 {
        if child {
            // SAFETY: plain descriptor calls on our pair and on the
            // application's descriptor number.
            unsafe {
                (real().close)(p.parent_end);
                let cloexec = (real().fcntl)(p.fd, libc::F_GETFD, 0) & libc::FD_CLOEXEC != 0;
                if p.file.nonblocking() {
                    (real().fcntl)(
                        p.child_end,
                        libc::F_SETFL,
                        libc::O_NONBLOCK as libc::c_ulong,
                    );
                }
                (real().dup3)(p.child_end, p.fd, if cloexec { libc::O_CLOEXEC } else { 0 });
                (real().close)(p.child_end);
            }
            // The parent's file stays the parent's: leaked here, not
            // dropped (dropping would touch the parent's stack).
            if let Some(f) = table().take(p.fd) {
                std::mem::forget(f);
            }
            std::mem::forget(p.file);
            child_addrs().insert(p.fd, (p.local, p.peer));
        } else {
            // SAFETY: closing the child's end of our pair.
            unsafe { (real().close)(p.child_end) };
            pend(Pending {
                file: Arc::downgrade(&p.file),
                end: p.parent_end,
            });
        }
    }
    n
}

// ---------------------------------------------------------------- parent

/// A parent end waiting for its connection's close.
struct Pending {
    file: Weak<File>,
    end: c_int,
}

static PENDING: Mutex<Vec<Pending>> = Mutex::new(Vec::new());
/// `PENDING.len()`, read without the lock on every close.
static PENDING_COUNT: AtomicUsize = AtomicUsize::new(0);

fn pend(p: Pending) {
    let mut list = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    // Ends of connections gone some other way or of children that closed
    // theirs (exited: a snapshot, an exec), then the oldest beyond the
    // bound.
    list.retain(|q| {
        let alive = q.file.strong_count() > 0 && child_holds(q.end);
        if !alive {
            // SAFETY: closing our own pair end.
            unsafe { (real().close)(q.end) };
        }
        alive
    });
    while list.len() >= MAX_PENDING {
        let q = list.remove(0);
        // SAFETY: closing our own pair end.
        unsafe { (real().close)(q.end) };
    }
    list.push(p);
    PENDING_COUNT.store(list.len(), Ordering::Relaxed);
}

/// Whether the other end of `end` (the child's) is still open.
fn child_holds(end: c_int) -> bool {
    let mut p = libc::pollfd {
        fd: end,
        events: 0,
        revents: 0,
    };
    // SAFETY: one pollfd, no wait.
    let r = unsafe { (real().poll)(&mut p, 1, 0) };
    r == 0 || (r > 0 && p.revents & (libc::POLLHUP | libc::POLLERR) == 0)
}

/// The parent closes its last descriptor of `file` (the caller holds the
/// only reference left): if a child forked since holds the connection's
/// pair, the connection passes to it (the most recent such child).
/// Returns whether it did.
pub fn closing(file: &Arc<File>) -> bool {
    // Another descriptor of the parent (a dup) still holds it: not yet.
    if PENDING_COUNT.load(Ordering::Relaxed) == 0 || Arc::strong_count(file) > 1 {
        return false;
    }
    let mine: Vec<c_int> = {
        let mut list = PENDING.lock().unwrap_or_else(|e| e.into_inner());
        let mut mine = Vec::new();
        list.retain(|q| {
            let same = q.file.as_ptr() == Arc::as_ptr(file);
            if same {
                mine.push(q.end);
            }
            !same
        });
        PENDING_COUNT.store(list.len(), Ordering::Relaxed);
        mine
    };
    let mut handed = false;
    for end in mine.into_iter().rev() {
        if !handed && child_holds(end) {
            handed = spawn_relay(Arc::clone(file), end);
            if handed {
                continue;
            }
        }
        // SAFETY: closing our own pair end.
        unsafe { (real().close)(end) };
    }
    handed
}

/// A connection and the pair end it is relayed to; both close when the
/// last of its two threads is done.
struct Relay {
    file: Arc<File>,
    end: c_int,
}

impl Drop for Relay {
    fn drop(&mut self) {
        // SAFETY: closing our own pair end.
        unsafe { (real().close)(self.end) };
    }
}

impl Relay {
    fn stream(&self) -> &lstack_core::TcpStream {
        match &self.file.kind {
            Kind::Stream(s) => s,
            _ => unreachable!("only connections are relayed"),
        }
    }

    /// Child to connection, until the child's end says end of file (or
    /// fails): then the connection gets a FIN.
    fn up(&self) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: reading into our buffer from our pair end.
            let n = unsafe { (real().read)(self.end, buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if n <= 0 {
                let _ = self.stream().shutdown(std::net::Shutdown::Write);
                return;
            }
            let mut data = &buf[..n as usize];
            while !data.is_empty() {
                match self.stream().send(data, false) {
                    Ok(k) => data = &data[k..],
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        }
    }

    /// Connection to child, until the peer's FIN (or a reset): then the
    /// child's end gets end of file.
    fn down(&self) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match self.stream().recv(&mut buf, false, false) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => break,
            };
            let mut off = 0;
            while off < n {
                // SAFETY: sending our buffer on our pair end; no SIGPIPE.
                let k = unsafe {
                    (real().send)(
                        self.end,
                        buf[off..n].as_ptr().cast(),
                        n - off,
                        libc::MSG_NOSIGNAL,
                    )
                };
                if k < 0 {
                    if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    return;
                }
                off += k as usize;
            }
        }
        // SAFETY: half-closing our own pair end.
        unsafe { (real().shutdown)(self.end, libc::SHUT_WR) };
    }
}

/// Starts relaying `file`'s connection to the pair end `end`.
fn spawn_relay(file: Arc<File>, end: c_int) -> bool {
    let relay = Arc::new(Relay { file, end });
    let up = Arc::clone(&relay);
    let spawned = std::thread::Builder::new()
        .name("lstack-handoff".into())
        .spawn(move || up.up())
        .is_ok();
    if !spawned {
        return false;
    }
    std::thread::Builder::new()
        .name("lstack-handoff".into())
        .spawn(move || relay.down())
        .is_ok()
}

// ---------------------------------------------------------------- child

/// In a child: the descriptors that are handed connections' pair ends,
/// with the connections' local and peer addresses.
struct ChildAddrs(Mutex<Vec<(c_int, (RawAddr, RawAddr))>>);

impl ChildAddrs {
    fn insert(&self, fd: c_int, addrs: (RawAddr, RawAddr)) {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        v.retain(|(f, _)| *f != fd);
        v.push((fd, addrs));
    }

    fn get(&self, fd: c_int) -> Option<(RawAddr, RawAddr)> {
        let v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        v.iter().find(|(f, _)| *f == fd).map(|(_, a)| *a)
    }
}

static CHILD: OnceLock<ChildAddrs> = OnceLock::new();

fn child_addrs() -> &'static ChildAddrs {
    CHILD.get_or_init(|| ChildAddrs(Mutex::new(Vec::new())))
}

/// In a child, whether `fd` is a handed connection: `Some` with what to
/// answer `getsockname` (or, with `peer`, `getpeername`).
fn handed(fd: c_int) -> Option<(RawAddr, RawAddr)> {
    CHILD.get()?.get(fd)
}

/// `getsockname`/`getpeername` of a handed connection in a child; `None`
/// for any other descriptor.
///
/// # Safety
/// As `getsockname`.
pub unsafe fn child_name(
    fd: c_int,
    peer: bool,
    a: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
) -> Option<c_int> {
    let (local, remote) = handed(fd)?;
    let addr = if peer { remote } else { local };
    // SAFETY: per the caller's contract.
    Some(unsafe { addr.write(a, len) })
}

/// `setsockopt` on a handed connection in a child: TCP and IP level
/// options are accepted (the connection is the parent's stack's); `None`
/// for other descriptors and socket-level options (the pair's end takes
/// those).
pub fn child_setsockopt(fd: c_int, level: c_int) -> Option<c_int> {
    if level == libc::SOL_SOCKET {
        return None;
    }
    handed(fd).map(|_| 0)
}

/// `getsockopt` on a handed connection in a child: TCP and IP level
/// options read as 0, the domain as the connection's; `None` otherwise.
///
/// # Safety
/// As `getsockopt`.
pub unsafe fn child_getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    v: *mut libc::c_void,
    len: *mut libc::socklen_t,
) -> Option<c_int> {
    let (local, _) = handed(fd)?;
    let value = match (level, name) {
        (libc::SOL_SOCKET, libc::SO_DOMAIN) => c_int::from(local.storage.ss_family),
        (libc::SOL_SOCKET, _) => return None,
        _ => 0,
    };
    if v.is_null() || len.is_null() {
        return Some(crate::fail(libc::EFAULT));
    }
    // SAFETY: non-null caller pointers.
    unsafe {
        let bytes = value.to_ne_bytes();
        let n = (*len as usize).min(bytes.len());
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), v.cast::<u8>(), n);
        *len = n as libc::socklen_t;
    }
    Some(0)
}

/// In a child, `fd` was closed (or replaced).
pub fn child_closed(fd: c_int) {
    if let Some(c) = CHILD.get() {
        c.0.lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(f, _)| *f != fd);
    }
}
