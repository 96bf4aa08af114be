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
use lstack_core::{BufferRequest, Interest, Readiness, TcpListener, TcpStream, UdpSocket};

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
        /// The lstack listener.
        listener: TcpListener,
        /// The fd's kernel socket listens too.
        kernel: bool,
        /// The address bound (port included).
        bound: SocketAddr,
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
}

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
        })
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
            Kind::Listener { listener, .. } => Some(listener.poll_readiness(hook, interest)),
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

    /// A copy of this file's socket options for a file derived from it.
    pub fn inherit(&self, to: &File) {
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

    /// Whether `fd` fits the table.
    pub fn fits(&self, fd: i32) -> bool {
        usize::try_from(fd).is_ok_and(|i| i < self.slots.len())
    }
}
