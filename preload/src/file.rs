//! What an lstack file descriptor is, and the table from fd numbers to them.
//!
//! Every lstack socket holds a real kernel descriptor, so its number comes
//! from the process's own fd space and can never collide with a kernel fd:
//! the kernel socket `socket()` created (kept unused once the socket moved
//! to lstack), or an eventfd for accepted connections.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicI32, Ordering},
        Arc, Mutex, OnceLock,
    },
};

use arc_swap::ArcSwapOption;
use lstack_core::{BufferRequest, Interest, Readiness, Stack, TcpListener, TcpStream, UdpSocket};

use crate::runtime::FORKED;

/// A socket on the lstack path, or one that may still go there.
#[derive(Debug)]
pub enum Kind {
    /// Created by `socket()` for IPv4/IPv6 TCP or UDP; not yet bound to an
    /// lstack address or connected through lstack. Until then every call
    /// goes to its kernel socket.
    Fresh {
        /// `AF_INET` or `AF_INET6`.
        domain: i32,
        /// `SOCK_STREAM` or `SOCK_DGRAM`.
        stream: bool,
        /// Set by a `bind` to an lstack address (or a wildcard).
        bound: Mutex<Option<SocketAddr>>,
    },
    /// A listening socket; `kernel` is set when the fd's kernel socket also
    /// listens (wildcard bind), so local clients reach it too.
    Listener {
        /// The lstack listener, made on this process's stack when it runs
        /// ([`File::listener`]): a socket that listened before the stack
        /// started (a server that listens, then forks its workers) is set
        /// up by each process that first uses it. `None`: it cannot be set
        /// up in this process (no stack here, or the stack refused it, as
        /// logged); it then never has a connection to accept.
        listener: OnceLock<Option<TcpListener>>,
        /// The fd's kernel socket listens too.
        kernel: bool,
        /// The address bound (port included).
        bound: SocketAddr,
        /// `listen`'s backlog.
        backlog: usize,
    },
    /// A TCP connection.
    Stream(TcpStream),
    /// A UDP socket, with the peer of `connect` if any.
    Udp {
        socket: UdpSocket,
        peer: Mutex<Option<SocketAddr>>,
    },
}

/// One lstack descriptor.
#[derive(Debug)]
pub struct File {
    /// What it is.
    pub kind: Kind,
    /// `O_NONBLOCK`, as set by `socket`, `accept4`, `fcntl` or `ioctl`.
    pub nonblocking: AtomicBool,
    /// `TCP_NODELAY` asked for before the connection existed.
    pub nodelay: AtomicBool,
    /// `IPV6_V6ONLY`: an IPv6 wildcard does not take IPv4 traffic.
    pub v6only: AtomicBool,
    /// `SO_KEEPALIVE`.
    pub keepalive: AtomicBool,
    /// `TCP_KEEPIDLE`, seconds (Linux's default 7200).
    pub keepidle: std::sync::atomic::AtomicU32,
    /// `SO_LINGER` on with a zero timeout: close resets.
    pub linger_zero: AtomicBool,
    /// The application opened an IPv6 socket: IPv4 peers are shown to it as
    /// v4-mapped IPv6 addresses.
    pub map_v4: AtomicBool,
    /// `SO_RCVBUF`/`SO_SNDBUF` as asked (applied to TCP sockets created from
    /// it: the connection of `connect`, the connections a listener accepts).
    pub buffers: Mutex<BufferRequest>,
    /// `SO_RCVTIMEO` and `SO_SNDTIMEO` in µs (0: none): blocking reads,
    /// accepts and writes give up with `EAGAIN` after that long.
    pub timeouts: [std::sync::atomic::AtomicU64; 2],
    /// Pending error for `SO_ERROR`.
    pub so_error: AtomicI32,
    /// epoll instances this file was added to, so `close` can take it out of
    /// them as the kernel does.
    pub watchers: Mutex<Vec<std::sync::Weak<crate::epoll::EpollSet>>>,
    /// Options lstack does not honour, set while the socket was
    /// [`Kind::Fresh`]: counted when it becomes an lstack socket (if it
    /// stays on the kernel, they did take effect). At most
    /// [`PENDING_OPTIONS`].
    pending_options: Mutex<Vec<(libc::c_int, libc::c_int, u64)>>,
}

/// Distinct unhonoured options a fresh socket remembers.
const PENDING_OPTIONS: usize = 16;

impl File {
    /// A file of `kind`.
    pub fn new(kind: Kind, nonblocking: bool) -> Arc<Self> {
        Arc::new(Self {
            kind,
            nonblocking: AtomicBool::new(nonblocking),
            nodelay: AtomicBool::new(false),
            v6only: AtomicBool::new(default_v6only()),
            keepalive: AtomicBool::new(false),
            keepidle: std::sync::atomic::AtomicU32::new(7200),
            linger_zero: AtomicBool::new(false),
            map_v4: AtomicBool::new(false),
            buffers: Mutex::new(BufferRequest::default()),
            timeouts: Default::default(),
            so_error: AtomicI32::new(0),
            watchers: Mutex::new(Vec::new()),
            pending_options: Mutex::new(Vec::new()),
        })
    }

    /// An option lstack does not honour was set: counted now, or (on a
    /// fresh socket, which may still end on the kernel) when the socket
    /// becomes an lstack socket.
    pub fn unhonoured_option(&self, level: libc::c_int, name: libc::c_int) {
        if !matches!(self.kind, Kind::Fresh { .. }) {
            crate::fallback::unhonoured(level, name, 1);
            return;
        }
        let mut p = self
            .pending_options
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(seen) = p.iter_mut().find(|(l, n, _)| (*l, *n) == (level, name)) {
            seen.2 += 1;
        } else if p.len() < PENDING_OPTIONS {
            p.push((level, name, 1));
        } else {
            // More distinct options than remembered: counted now.
            drop(p);
            crate::fallback::unhonoured(level, name, 1);
        }
    }

    /// Whether calls on it return `EAGAIN` instead of waiting.
    pub fn nonblocking(&self) -> bool {
        self.nonblocking.load(Ordering::Relaxed)
    }

    /// Readiness, registering `hook` to be woken at the next change.
    /// `None` for a fresh socket (its kernel socket answers).
    pub fn poll_readiness(&self, hook: &std::task::Waker, interest: Interest) -> Option<Readiness> {
        match &self.kind {
            Kind::Fresh { .. } => None,
            Kind::Listener { .. } => Some(match self.listener() {
                Some(l) => l.poll_readiness(hook, interest),
                None => Readiness::default(),
            }),
            Kind::Stream(s) => Some(s.poll_readiness(hook, interest)),
            Kind::Udp { socket, peer } => {
                let peer = *peer.lock().unwrap_or_else(|e| e.into_inner());
                Some(socket.poll_readiness_from(hook, interest, peer))
            }
        }
    }
}

/// The system's `net.ipv6.bindv6only` (0 on Linux by default).
fn default_v6only() -> bool {
    static V: OnceLock<bool> = OnceLock::new();
    *V.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").is_ok_and(|s| s.trim() == "1")
    })
}

impl File {
    /// A listening socket's lstack listener, starting this process's stack
    /// (which sets up every listener of the process) if it is not running;
    /// `None` when that cannot be (said once) or the file is no listener.
    pub fn listener(&self) -> Option<&TcpListener> {
        let Kind::Listener {
            listener, bound, ..
        } = &self.kind
        else {
            return None;
        };
        if let Some(l) = listener.get() {
            return l.as_ref();
        }
        match crate::runtime::stack() {
            Some(st) => self.start_listener(st),
            None => {
                listener.get_or_init(|| {
                    tracing::warn!(%bound, "no stack runs in this process: the listener gets no connections here");
                    None
                });
            }
        }
        listener.get().and_then(Option::as_ref)
    }

    /// Sets a listening socket up on `st` if it is not yet (errors, such as
    /// the port taken, are logged: `listen` returned long ago).
    pub fn start_listener(&self, st: &Stack) {
        let Kind::Listener {
            listener,
            bound,
            backlog,
            ..
        } = &self.kind
        else {
            return;
        };
        listener.get_or_init(|| match self.listen_on(st, *bound, *backlog) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!(
                    "liblstack: pid {}: the listener on {bound} could not be set up on lstack: {e}; it gets no connections",
                    std::process::id()
                );
                tracing::error!(%bound, error = %e, "listener not set up");
                None
            }
        });
    }

    /// A listener on `st` for `bound` with this file's options.
    pub fn listen_on(
        &self,
        st: &Stack,
        bound: SocketAddr,
        backlog: usize,
    ) -> std::io::Result<TcpListener> {
        let v4_too = !self.v6only.load(Ordering::Relaxed);
        let l = st.tcp_listen_dual(bound, backlog, v4_too)?;
        l.set_buffers(self.buffers());
        Ok(l)
    }

    /// How to show `sa` to the application: IPv4 as v4-mapped IPv6 on an
    /// IPv6 socket.
    pub fn present(&self, sa: SocketAddr) -> SocketAddr {
        match sa {
            SocketAddr::V4(v4) if self.map_v4.load(Ordering::Relaxed) => {
                SocketAddr::new(std::net::IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            other => other,
        }
    }

    /// Applies the TCP options recorded on this file to its connection.
    pub fn apply_stream_options(&self) {
        let Kind::Stream(s) = &self.kind else { return };
        s.set_nodelay(self.nodelay.load(Ordering::Relaxed));
        let idle = u64::from(self.keepidle.load(Ordering::Relaxed));
        s.set_keep_alive(
            self.keepalive
                .load(Ordering::Relaxed)
                .then(|| std::time::Duration::from_secs(idle)),
        );
        s.set_abort_on_close(self.linger_zero.load(Ordering::Relaxed));
        s.set_read_timeout(self.timeout(0));
        s.set_write_timeout(self.timeout(1));
    }

    /// `SO_RCVTIMEO` (`dir` 0) or `SO_SNDTIMEO` (1).
    pub fn timeout(&self, dir: usize) -> Option<std::time::Duration> {
        match self.timeouts[dir].load(Ordering::Relaxed) {
            0 => None,
            us => Some(std::time::Duration::from_micros(us)),
        }
    }

    /// The buffer sizes asked for with `SO_RCVBUF`/`SO_SNDBUF`.
    pub fn buffers(&self) -> BufferRequest {
        *self.buffers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of this file's socket options for a file derived from it
    /// (a fresh socket becoming an lstack one, an accepted connection).
    pub fn inherit(&self, to: &File) {
        let pending = std::mem::take(
            &mut *self
                .pending_options
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for (level, name, times) in pending {
            crate::fallback::unhonoured(level, name, times);
        }
        *to.buffers.lock().unwrap_or_else(|e| e.into_inner()) = self.buffers();
        to.keepalive
            .store(self.keepalive.load(Ordering::Relaxed), Ordering::Relaxed);
        to.keepidle
            .store(self.keepidle.load(Ordering::Relaxed), Ordering::Relaxed);
        to.linger_zero
            .store(self.linger_zero.load(Ordering::Relaxed), Ordering::Relaxed);
        to.nodelay
            .store(self.nodelay.load(Ordering::Relaxed), Ordering::Relaxed);
        to.map_v4
            .store(self.map_v4.load(Ordering::Relaxed), Ordering::Relaxed);
        to.v6only
            .store(self.v6only.load(Ordering::Relaxed), Ordering::Relaxed);
        for (mine, theirs) in self.timeouts.iter().zip(&to.timeouts) {
            theirs.store(mine.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}

/// fd number -> lstack file. Lookups are lock-free.
pub struct Table {
    slots: Box<[ArcSwapOption<File>]>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Table({} slots)", self.slots.len())
    }
}

/// The process's table, sized by the hard fd limit (at most 1 Mi).
pub fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: valid out-pointer.
        let n = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            lim.rlim_max.min(1 << 20) as usize
        } else {
            65536
        };
        Table {
            slots: (0..n.max(1024)).map(|_| ArcSwapOption::empty()).collect(),
        }
    })
}

impl Table {
    /// The lstack file behind `fd`, if it is one.
    #[inline]
    pub fn get(&self, fd: i32) -> Option<Arc<File>> {
        if FORKED.load(Ordering::Relaxed) {
            return None;
        }
        let slot = self.slots.get(usize::try_from(fd).ok()?)?;
        slot.load_full()
    }

    /// Makes `fd` refer to `file`; returns what it referred to.
    pub fn set(&self, fd: i32, file: Arc<File>) -> Option<Arc<File>> {
        let slot = self.slots.get(usize::try_from(fd).ok()?)?;
        slot.swap(Some(file))
    }

    /// Forgets `fd`; returns the file it referred to.
    pub fn take(&self, fd: i32) -> Option<Arc<File>> {
        let slot = self.slots.get(usize::try_from(fd).ok()?)?;
        slot.swap(None)
    }

    /// Number of slots (the highest fd the table can hold, plus one).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the table has no slots (never).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Forgets every lstack descriptor (dropping the last reference closes
    /// each socket: FIN, or RST with unread data).
    pub fn close_all(&self) {
        for slot in self.slots.iter() {
            if slot.load().is_some() {
                slot.store(None);
            }
        }
    }

    /// Calls `f` with every descriptor and its lstack file.
    pub fn for_each(&self, mut f: impl FnMut(i32, &Arc<File>)) {
        for (fd, slot) in self.slots.iter().enumerate() {
            if let Some(file) = slot.load().as_ref() {
                f(fd as i32, file);
            }
        }
    }

    /// Sets up, on the stack that just started, every listener the process
    /// made before it ran.
    pub fn start_listeners(&self, st: &Stack) {
        for slot in self.slots.iter() {
            if let Some(f) = slot.load().as_ref() {
                f.start_listener(st);
            }
        }
    }

    /// In a child forked after lstack started in its parent: the stack's
    /// threads did not come along, so the inherited lstack sockets that
    /// were not handed a socket pair (see [`crate::handoff`]) cannot work.
    /// Each becomes a kernel descriptor that says so at once instead of
    /// hanging: a connection reads end-of-file (and writes fail with
    /// `EPIPE`), a listener never has a connection (a wildcard listener
    /// keeps its kernel side). Nothing of the parent's stack is touched
    /// (the files are leaked, not dropped). Returns how many there were.
    pub fn orphan_all(&self) -> usize {
        let mut n = 0;
        for (fd, slot) in self.slots.iter().enumerate() {
            let Some(f) = slot.swap(None) else { continue };
            n += 1;
            let fd = fd as i32;
            replace_with_dead(fd, &f);
            std::mem::forget(f);
        }
        n
    }

    /// Whether `fd` fits the table.
    pub fn fits(&self, fd: i32) -> bool {
        usize::try_from(fd).is_ok_and(|i| i < self.slots.len())
    }
}

/// Puts a kernel descriptor that fails cleanly in place of `fd` (see
/// [`Table::orphan_all`]), keeping its close-on-exec and non-blocking flags.
fn replace_with_dead(fd: i32, f: &File) {
    let real = crate::real::real();
    // SAFETY: plain descriptor calls on descriptors we create, and on `fd`,
    // which the application holds.
    unsafe {
        let dead = match &f.kind {
            Kind::Listener { kernel: true, .. } => return,
            Kind::Listener { bound, .. } => {
                // Listening on loopback, port chosen by the kernel: nobody
                // connects, accept says EAGAIN or waits.
                let (domain, lo) = if bound.is_ipv4() {
                    (libc::AF_INET, SocketAddr::from(([127, 0, 0, 1], 0)))
                } else {
                    (
                        libc::AF_INET6,
                        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0)),
                    )
                };
                let s = (real.socket)(domain, libc::SOCK_STREAM, 0);
                let mut sa: libc::sockaddr_storage = std::mem::zeroed();
                let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                let _ = crate::addr::write(
                    lo,
                    (&mut sa as *mut libc::sockaddr_storage).cast(),
                    &mut len,
                );
                if s < 0
                    || (real.bind)(s, (&sa as *const libc::sockaddr_storage).cast(), len) < 0
                    || (real.listen)(s, 1) < 0
                {
                    return;
                }
                s
            }
            _ => {
                // One end of a pair whose other end is closed: end of file.
                let mut pair = [-1; 2];
                if libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, pair.as_mut_ptr()) < 0 {
                    return;
                }
                (real.close)(pair[1]);
                pair[0]
            }
        };
        if f.nonblocking() {
            libc::fcntl(dead, libc::F_SETFL, libc::O_NONBLOCK);
        }
        let cloexec = libc::fcntl(fd, libc::F_GETFD) & libc::FD_CLOEXEC != 0;
        libc::dup3(dead, fd, if cloexec { libc::O_CLOEXEC } else { 0 });
        (real.close)(dead);
    }
}
