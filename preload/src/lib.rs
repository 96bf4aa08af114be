//! liblstack.so: unmodified applications on lstack through `LD_PRELOAD`.
//!
//! The library exports the C library's socket functions under their own
//! names. Each one looks its descriptor up in a lock-free table
//! ([`file::table`]); descriptors that are not lstack sockets go straight to
//! the C library's implementation ([`real`]), so kernel files, pipes and
//! sockets behave exactly as before, and DPDK itself (which calls `socket`,
//! `ioctl`, `epoll_wait`... from inside the stack) never notices us.
//!
//! Which sockets go to lstack (as in gazelle): IPv4/IPv6 TCP and UDP sockets
//! bound to an address of the stack or a wildcard, or connecting to an
//! address on the stack's subnets. Everything else (loopback, other
//! subnets, other families) stays on the kernel. A wildcard listener listens
//! on both, so local clients still reach it. `GAZELLE_BIND_PROCNAME` limits
//! acceleration to one process name.
//!
//! The stack starts when a socket first needs it, not at `socket`, `bind`
//! or `listen` ([`runtime::stack`]): a server that listens and then forks
//! its workers (nginx, pre-fork servers) leaves the stack to them, and each
//! worker starts its own (behind ltran, several processes share the
//! address; standalone, the first owns the NIC and the others' listeners
//! stay idle, as they say). A child forked after the stack started runs on
//! the kernel only, and the lstack sockets it inherited fail cleanly
//! ([`file::Table::orphan_all`]).
//!
//! Modules: [`real`] (the C library's functions), [`runtime`] (starting the
//! stack once), [`file`] (the descriptor table), [`addr`] (sockaddr
//! conversion), [`wait`] (sleeping on a mix of lstack and kernel
//! descriptors), [`epoll`] and [`poll`] (readiness over mixed sets),
//! [`signal`] (flushing before a terminating signal's default action), and
//! this file: the exported functions.

#![allow(clippy::missing_safety_doc)]

pub mod addr;
pub mod epoll;
pub mod fallback;
pub mod file;
pub mod handoff;
pub mod poll;
pub mod real;
pub mod runtime;
pub mod signal;
pub mod wait;

use std::{
    io,
    net::{Shutdown, SocketAddr},
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

use libc::{c_int, c_ulong, c_void, size_t, sockaddr, socklen_t, ssize_t};

use lstack_core::KernelPath;

use crate::{
    file::{table, File, Kind},
    real::real,
    runtime::{bypassed, stack},
};

/// Sets `errno`.
pub fn set_errno(e: i32) {
    // SAFETY: __errno_location returns the calling thread's errno.
    unsafe { *libc::__errno_location() = e };
}

/// The errno libc would give for an I/O error of ours.
pub fn errno_of(e: &io::Error) -> i32 {
    if let Some(code) = e.raw_os_error() {
        return code;
    }
    match e.kind() {
        io::ErrorKind::WouldBlock => libc::EAGAIN,
        io::ErrorKind::ConnectionRefused => libc::ECONNREFUSED,
        io::ErrorKind::ConnectionReset => libc::ECONNRESET,
        io::ErrorKind::ConnectionAborted => libc::ECONNABORTED,
        io::ErrorKind::BrokenPipe => libc::EPIPE,
        io::ErrorKind::NotConnected => libc::ENOTCONN,
        io::ErrorKind::TimedOut => libc::ETIMEDOUT,
        io::ErrorKind::AddrInUse => libc::EADDRINUSE,
        io::ErrorKind::AddrNotAvailable => libc::EADDRNOTAVAIL,
        io::ErrorKind::InvalidInput => libc::EINVAL,
        io::ErrorKind::Interrupted => libc::EINTR,
        // A stack limit such as udp_conn_count: no room for the socket.
        io::ErrorKind::OutOfMemory => libc::ENOBUFS,
        _ => libc::EIO,
    }
}

/// Runs `f`, turning a panic into `-1`/`EIO` (a panic must never unwind
/// into C) and logging it.
fn guarded<T: From<i8>>(what: &str, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => {
            tracing::error!("liblstack: panic in {what}; returning EIO");
            set_errno(libc::EIO);
            T::from(-1)
        }
    }
}

fn fail<T: From<i8>>(e: i32) -> T {
    set_errno(e);
    T::from(-1)
}

fn io_fail<T: From<i8>>(e: &io::Error) -> T {
    fail(errno_of(e))
}

/// The lstack file behind `fd` (None for kernel descriptors).
#[inline]
fn lookup(fd: c_int) -> Option<Arc<File>> {
    if bypassed() {
        return None;
    }
    table().get(fd)
}

// ---------------------------------------------------------------- creation

#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    // SAFETY: forwarding the caller's arguments.
    let fd = unsafe { (real().socket)(domain, ty, protocol) };
    if fd < 0 || bypassed() {
        if fd >= 0 && (domain == libc::AF_INET || domain == libc::AF_INET6) {
            runtime::note_forked_socket();
        }
        return fd;
    }
    guarded("socket", || {
        let base = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
        let ip = domain == libc::AF_INET || domain == libc::AF_INET6;
        let stream = base == libc::SOCK_STREAM && matches!(protocol, 0 | libc::IPPROTO_TCP);
        let dgram = base == libc::SOCK_DGRAM && matches!(protocol, 0 | libc::IPPROTO_UDP);
        let plan = if ip && (stream || dgram) {
            runtime::plan()
        } else {
            None
        };
        if plan.is_some() {
            if !table().fits(fd) {
                runtime::count_kernel_socket(KernelPath::DescriptorTableFull);
                fallback::beyond_table(fd);
                return fd;
            }
            if dgram && !runtime::udp_enabled() {
                runtime::count_kernel_socket(KernelPath::UdpDisabled);
                fallback::record(fd, KernelPath::UdpDisabled);
                return fd;
            }
            let kind = Kind::Fresh {
                domain,
                stream,
                bound: Mutex::new(None),
            };
            let file = File::new(kind, ty & libc::SOCK_NONBLOCK != 0);
            file.map_v4
                .store(domain == libc::AF_INET6, Ordering::Relaxed);
            table().set(fd, file);
        }
        fd
    })
}

#[no_mangle]
pub unsafe extern "C" fn bind(fd: c_int, a: *const sockaddr, len: socklen_t) -> c_int {
    let Some(f) = lookup(fd) else {
        // SAFETY: forwarding.
        return unsafe { (real().bind)(fd, a, len) };
    };
    guarded("bind", || {
        // SAFETY: caller's pointer and length.
        let sa = match unsafe { addr::read(a, len) } {
            Ok(sa) => sa,
            Err(e) => return fail(e),
        };
        let Kind::Fresh { stream, bound, .. } = &f.kind else {
            return fail(libc::EINVAL);
        };
        let Some(plan) = runtime::plan() else {
            return fail(libc::EIO);
        };
        let ours = plan.owns_addr(sa.ip());
        if !(ours || sa.ip().is_unspecified()) {
            // Not an lstack address: the kernel keeps this socket.
            runtime::count_kernel_socket(KernelPath::ForeignAddress);
            fallback::record(fd, KernelPath::ForeignAddress);
            table().take(fd);
            // SAFETY: forwarding.
            return unsafe { (real().bind)(fd, a, len) };
        }
        if !*stream {
            let Some(st) = stack() else {
                return fail(libc::EIO);
            };
            return match st.udp_bind(sa) {
                Ok(u) => {
                    let kind = Kind::Udp {
                        socket: u,
                        peer: Mutex::new(None),
                    };
                    let file = File::new(kind, f.nonblocking());
                    f.inherit(&file);
                    table().set(fd, file);
                    0
                }
                Err(e) => io_fail(&e),
            };
        }
        if sa.port() == 0 {
            // A client choosing its source address (or none) and an
            // ephemeral port: `connect` decides (lstack for the stack's
            // subnets), or `listen` (the kernel picks the port).
            *bound.lock().unwrap_or_else(|e| e.into_inner()) = Some(sa);
            return 0;
        }
        if sa.ip().is_unspecified() {
            // Wildcard: the kernel socket binds too, for local clients.
            // SAFETY: forwarding.
            if unsafe { (real().bind)(fd, a, len) } < 0 {
                return -1;
            }
        }
        *bound.lock().unwrap_or_else(|e| e.into_inner()) = Some(sa);
        0
    })
}

#[no_mangle]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    let Some(f) = lookup(fd) else {
        // SAFETY: forwarding.
        return unsafe { (real().listen)(fd, backlog) };
    };
    guarded("listen", || {
        let bound = match &f.kind {
            Kind::Fresh {
                stream: true,
                bound,
                ..
            } => *bound.lock().unwrap_or_else(|e| e.into_inner()),
            Kind::Listener { .. } => return 0,
            _ => return fail(libc::EOPNOTSUPP),
        };
        let Some(sa) = bound.filter(|sa| sa.port() != 0) else {
            // Listening without a port: the kernel picks one; kernel path.
            runtime::count_kernel_socket(KernelPath::ListenWithoutBind);
            fallback::record(fd, KernelPath::ListenWithoutBind);
            table().take(fd);
            // SAFETY: forwarding.
            return unsafe { (real().listen)(fd, backlog) };
        };
        let backlog = usize::try_from(backlog).unwrap_or(128).max(1);
        // With the stack running, the listener is made now (so `listen`
        // reports a taken port); before, by the process that first uses it
        // (the stack starts then): a server that forks its workers after
        // listening leaves its listeners to them.
        let listener = std::sync::OnceLock::new();
        if let Some(st) = runtime::running() {
            match f.listen_on(st, sa, backlog) {
                Ok(l) => {
                    let _ = listener.set(Some(l));
                }
                Err(e) => return io_fail(&e),
            }
        } else {
            runtime::listened_before_start();
        }
        let kernel = sa.ip().is_unspecified();
        if kernel {
            // SAFETY: forwarding; the kernel listener is polled without
            // blocking by accept, whatever the application's O_NONBLOCK.
            unsafe {
                if (real().listen)(fd, backlog as c_int) < 0 {
                    return -1;
                }
                let fl = (real().fcntl)(fd, libc::F_GETFL, 0);
                (real().fcntl)(fd, libc::F_SETFL, (fl | libc::O_NONBLOCK) as c_ulong);
            }
        }
        let file = File::new(
            Kind::Listener {
                listener,
                kernel,
                bound: sa,
                backlog,
            },
            f.nonblocking(),
        );
        f.inherit(&file);
        table().set(fd, file);
        0
    })
}

#[no_mangle]
pub unsafe extern "C" fn accept(fd: c_int, a: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: same contract.
    unsafe { accept4(fd, a, len, 0) }
}

#[no_mangle]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    a: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    let Some(f) = lookup(fd) else {
        // SAFETY: forwarding.
        let k = unsafe { (real().accept4)(fd, a, len, flags) };
        if k >= 0 {
            // A kernel-path listener's connections are on the kernel too.
            if let Some(why) = fallback::reason(fd) {
                runtime::count_kernel_socket(why);
                fallback::record(k, why);
            }
        }
        return k;
    };
    guarded("accept4", || {
        let Kind::Listener { kernel, .. } = &f.kind else {
            return fail(libc::EINVAL);
        };
        // None: no stack here; nothing to accept but the kernel side's.
        let listener = f.listener();
        let mut driven = false;
        let mut accept_deadline: Option<Option<std::time::Instant>> = None;
        loop {
            if let Some((stream, peer)) = listener.and_then(|l| l.try_accept()) {
                let cloexec = if flags & libc::SOCK_CLOEXEC != 0 {
                    libc::EFD_CLOEXEC
                } else {
                    0
                };
                // SAFETY: plain eventfd creation: the new descriptor's number.
                let nfd = unsafe { (real().eventfd)(0, cloexec | libc::EFD_NONBLOCK) };
                if nfd < 0 {
                    return -1;
                }
                if !table().fits(nfd) {
                    // SAFETY: closing the descriptor we just made.
                    unsafe { (real().close)(nfd) };
                    return fail(libc::EMFILE);
                }
                if f.nodelay.load(Ordering::Relaxed) {
                    stream.set_nodelay(true);
                }
                let file = File::new(Kind::Stream(stream), flags & libc::SOCK_NONBLOCK != 0);
                f.inherit(&file);
                file.apply_stream_options();
                table().set(nfd, file);
                // SAFETY: caller's buffers.
                if let Err(e) = unsafe { addr::write(f.present(peer), a, len) } {
                    return fail(e);
                }
                return nfd;
            }
            if *kernel {
                // SAFETY: forwarding; the kernel listener is non-blocking.
                let k = unsafe { (real().accept4)(fd, a, len, flags) };
                if k >= 0 {
                    runtime::count_kernel_socket(KernelPath::WildcardLocalClient);
                    fallback::record(k, KernelPath::WildcardLocalClient);
                    return k;
                }
                let e = io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO);
                if e != libc::EAGAIN {
                    return fail(e);
                }
            }
            if f.nonblocking() {
                // Run to completion nobody else runs the stack: once.
                if !driven && wait::drive_now() {
                    driven = true;
                    continue;
                }
                return fail(libc::EAGAIN);
            }
            let kfd = kernel.then_some(fd);
            // SO_RCVTIMEO bounds a blocking accept as a read (EAGAIN).
            let deadline = *accept_deadline
                .get_or_insert_with(|| f.timeout(0).map(|t| std::time::Instant::now() + t));
            let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return fail(libc::EAGAIN);
            }
            if let Err(e) = wait::until_ready(&[&*f], kfd, left) {
                return fail(e);
            }
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, a: *const sockaddr, len: socklen_t) -> c_int {
    let Some(f) = lookup(fd) else {
        // SAFETY: forwarding.
        return unsafe { (real().connect)(fd, a, len) };
    };
    guarded("connect", || {
        // SAFETY: caller's pointer and length.
        let sa = match unsafe { addr::read(a, len) } {
            Ok(sa) => sa,
            Err(e) => return fail(e),
        };
        if let Kind::Fresh { .. } = &f.kind {
            // Decided before the stack starts: a connection that stays on
            // the kernel does not start it.
            let Some(plan) = runtime::plan() else {
                return fail(libc::EIO);
            };
            if sa.ip().is_loopback() || !plan.on_link(sa.ip()) {
                let why = if sa.ip().is_loopback() {
                    KernelPath::Loopback
                } else {
                    KernelPath::OffSubnet
                };
                runtime::count_kernel_socket(why);
                fallback::record(fd, why);
                table().take(fd);
                // SAFETY: forwarding.
                return unsafe { (real().connect)(fd, a, len) };
            }
        }
        let Some(st) = stack() else {
            return fail(libc::EIO);
        };
        match &f.kind {
            Kind::Fresh { stream, .. } => {
                if *stream {
                    let s = match st.tcp_connect_start_with(sa, f.buffers()) {
                        Ok(s) => s,
                        Err(e) => return io_fail(&e),
                    };
                    if f.nodelay.load(Ordering::Relaxed) {
                        s.set_nodelay(true);
                    }
                    let nonblocking = f.nonblocking();
                    let file = File::new(Kind::Stream(s), nonblocking);
                    f.inherit(&file);
                    file.apply_stream_options();
                    table().set(fd, Arc::clone(&file));
                    if nonblocking {
                        return fail(libc::EINPROGRESS);
                    }
                    let Kind::Stream(s) = &file.kind else {
                        unreachable!()
                    };
                    loop {
                        match s.connect_result() {
                            Ok(true) => return 0,
                            Ok(false) => {
                                if let Err(e) =
                                    wait::until_ready(&[&*file], None, Some(Duration::from_secs(1)))
                                {
                                    return fail(e);
                                }
                            }
                            Err(e) => return io_fail(&e),
                        }
                    }
                }
                let local = SocketAddr::new(
                    if sa.is_ipv4() {
                        [0, 0, 0, 0].into()
                    } else {
                        std::net::Ipv6Addr::UNSPECIFIED.into()
                    },
                    0,
                );
                match st.udp_bind(local) {
                    Ok(u) => {
                        let kind = Kind::Udp {
                            socket: u,
                            peer: Mutex::new(Some(sa)),
                        };
                        let file = File::new(kind, f.nonblocking());
                        f.inherit(&file);
                        table().set(fd, file);
                        0
                    }
                    Err(e) => io_fail(&e),
                }
            }
            Kind::Udp { socket, peer } => {
                // A bound socket connects: from now on it gets only its
                // peer's datagrams, and its port's other traffic can go to a
                // new unconnected socket (iperf3's UDP server does this).
                let port = socket.local_addr().port();
                match st.udp_connect(port, sa) {
                    Ok(connected) => {
                        let file = File::new(
                            Kind::Udp {
                                socket: connected,
                                peer: Mutex::new(Some(sa)),
                            },
                            f.nonblocking(),
                        );
                        f.inherit(&file);
                        table().set(fd, file);
                        0
                    }
                    // Already connected to this peer elsewhere: filter instead.
                    Err(_) => {
                        *peer.lock().unwrap_or_else(|e| e.into_inner()) = Some(sa);
                        0
                    }
                }
            }
            Kind::Stream(_) => fail(libc::EISCONN),
            Kind::Listener { .. } => fail(libc::EINVAL),
        }
    })
}

// ---------------------------------------------------------------- data

/// Receives into `buf` from an lstack file.
fn recv_file(
    f: &File,
    buf: &mut [u8],
    flags: c_int,
    from: Option<(*mut sockaddr, *mut socklen_t)>,
) -> ssize_t {
    let nonblocking = f.nonblocking() || flags & libc::MSG_DONTWAIT != 0;
    match &f.kind {
        Kind::Stream(s) => match s.recv(buf, nonblocking, flags & libc::MSG_PEEK != 0) {
            Ok(n) => n as ssize_t,
            Err(e) => io_fail(&e),
        },
        Kind::Udp {
            socket,
            peer: connected,
        } => match recv_connected(socket, buf, nonblocking, connected) {
            Ok((n, peer)) => {
                if let Some((a, l)) = from {
                    // SAFETY: caller's buffers.
                    if let Err(e) = unsafe { addr::write(f.present(peer), a, l) } {
                        return fail(e);
                    }
                }
                n as ssize_t
            }
            Err(e) => io_fail(&e),
        },
        Kind::Listener { .. } | Kind::Fresh { .. } => fail(libc::ENOTCONN),
    }
}

/// Receives on a UDP socket; a connected one drops datagrams from anyone but
/// its peer, as the kernel does.
fn recv_connected(
    socket: &lstack_core::UdpSocket,
    buf: &mut [u8],
    nonblocking: bool,
    connected: &Mutex<Option<SocketAddr>>,
) -> io::Result<(usize, SocketAddr)> {
    loop {
        let (n, from) = socket.recv_from_mode(buf, nonblocking)?;
        match *connected.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(p) if p != from => continue,
            _ => return Ok((n, from)),
        }
    }
}

/// Sends `buf` on an lstack file; EPIPE raises SIGPIPE unless MSG_NOSIGNAL.
fn send_file(f: &File, buf: &[u8], flags: c_int, to: Option<SocketAddr>) -> ssize_t {
    let nonblocking = f.nonblocking() || flags & libc::MSG_DONTWAIT != 0;
    let r = match &f.kind {
        Kind::Stream(s) if nonblocking => s.send(buf, true),
        // A blocking write returns once everything is queued, as on Linux.
        Kind::Stream(s) => {
            let mut done = 0;
            while done < buf.len() {
                match s.send(&buf[done..], false) {
                    Ok(n) => done += n,
                    Err(_) if done > 0 => break,
                    Err(e) => return send_error(e, flags),
                }
            }
            Ok(done)
        }
        Kind::Udp { socket, peer } => {
            let dest = to.or(*peer.lock().unwrap_or_else(|e| e.into_inner()));
            match dest {
                Some(d) => socket.send_to_mode(buf, d, nonblocking),
                None => return fail(libc::EDESTADDRREQ),
            }
        }
        Kind::Listener { .. } | Kind::Fresh { .. } => return fail(libc::ENOTCONN),
    };
    match r {
        Ok(n) => n as ssize_t,
        Err(e) => send_error(e, flags),
    }
}

/// A failed send: errno, and SIGPIPE for EPIPE unless MSG_NOSIGNAL.
fn send_error(e: io::Error, flags: c_int) -> ssize_t {
    let code = errno_of(&e);
    if code == libc::EPIPE && flags & libc::MSG_NOSIGNAL == 0 {
        // SAFETY: raising a signal at ourselves, as the kernel would.
        unsafe { libc::raise(libc::SIGPIPE) };
    }
    fail(code)
}

/// Builds a mutable slice from the caller's buffer (empty for len 0).
///
/// # Safety
/// `p` must point to `len` writable bytes when `len > 0`.
unsafe fn buf_mut<'a>(p: *mut c_void, len: size_t) -> Option<&'a mut [u8]> {
    if len == 0 {
        return Some(&mut []);
    }
    if p.is_null() {
        return None;
    }
    // SAFETY: per the caller's contract.
    Some(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) })
}

/// Builds a slice from the caller's buffer (empty for len 0).
///
/// # Safety
/// `p` must point to `len` readable bytes when `len > 0`.
unsafe fn buf<'a>(p: *const c_void, len: size_t) -> Option<&'a [u8]> {
    if len == 0 {
        return Some(&[]);
    }
    if p.is_null() {
        return None;
    }
    // SAFETY: per the caller's contract.
    Some(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
}

#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, p: *mut c_void, len: size_t) -> ssize_t {
    let Some(f) = lookup(fd) else {
        // SAFETY: forwarding.
        return unsafe { (real().read)(fd, p, len) };
    };
    if matches!(f.kind, Kind::Fresh { .. }) {
        // SAFETY: forwarding.
        return unsafe { (real().read)(fd, p, len) };
    }
    guarded("read", || {
        // SAFETY: caller's buffer.
        let Some(b) = (unsafe { buf_mut(p, len) }) else {
            return fail(libc::EFAULT);
        };
        recv_file(&f, b, 0, None)
    })
}

#[no_mangle]
pub unsafe extern "C" fn recv(fd: c_int, p: *mut c_void, len: size_t, flags: c_int) -> ssize_t {
    // SAFETY: same contract.
    unsafe {
        recvfrom(
            fd,
            p,
            len,
            flags,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    }
}

#[no_mangle]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    p: *mut c_void,
    len: size_t,
    flags: c_int,
    a: *mut sockaddr,
    alen: *mut socklen_t,
) -> ssize_t {
    let Some(f) = lookup(fd).filter(|f| !matches!(f.kind, Kind::Fresh { .. })) else {
        // SAFETY: forwarding.
        return unsafe { (real().recvfrom)(fd, p, len, flags, a, alen) };
    };
    guarded("recvfrom", || {
        // SAFETY: caller's buffer.
        let Some(b) = (unsafe { buf_mut(p, len) }) else {
            return fail(libc::EFAULT);
        };
        recv_file(&f, b, flags, Some((a, alen)))
    })
}

#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, p: *const c_void, len: size_t) -> ssize_t {
    let Some(f) = lookup(fd).filter(|f| !matches!(f.kind, Kind::Fresh { .. })) else {
        // SAFETY: forwarding.
        return unsafe { (real().write)(fd, p, len) };
    };
    guarded("write", || {
        // SAFETY: caller's buffer.
        let Some(b) = (unsafe { buf(p, len) }) else {
            return fail(libc::EFAULT);
        };
        send_file(&f, b, 0, None)
    })
}

#[no_mangle]
pub unsafe extern "C" fn send(fd: c_int, p: *const c_void, len: size_t, flags: c_int) -> ssize_t {
    // SAFETY: same contract.
    unsafe { sendto(fd, p, len, flags, std::ptr::null(), 0) }
}

#[no_mangle]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    p: *const c_void,
    len: size_t,
    flags: c_int,
    a: *const sockaddr,
    alen: socklen_t,
) -> ssize_t {
    let Some(f) = lookup(fd) else {
        // SAFETY: forwarding.
        return unsafe { (real().sendto)(fd, p, len, flags, a, alen) };
    };
    guarded("sendto", || {
        // SAFETY: caller's buffer.
        let Some(b) = (unsafe { buf(p, len) }) else {
            return fail(libc::EFAULT);
        };
        let to = if a.is_null() {
            None
        } else {
            // SAFETY: caller's address.
            match unsafe { addr::read(a, alen) } {
                Ok(sa) => Some(sa),
                Err(e) => return fail(e),
            }
        };
        let f = match &f.kind {
            Kind::Fresh { .. } => match to.and_then(|to| autobind_udp(fd, &f, to)) {
                Some(bound) => bound,
                // SAFETY: forwarding: this socket stays on the kernel.
                None => return unsafe { (real().sendto)(fd, p, len, flags, a, alen) },
            },
            _ => f,
        };
        send_file(&f, b, flags, to)
    })
}

/// A fresh UDP socket that sends to an address on the stack's subnets gets
/// an ephemeral lstack port first, as the kernel would autobind it.
fn autobind_udp(fd: c_int, f: &Arc<File>, to: SocketAddr) -> Option<Arc<File>> {
    let Kind::Fresh { stream: false, .. } = f.kind else {
        return None;
    };
    let plan = runtime::plan()?;
    if to.ip().is_loopback() || !plan.on_link(to.ip()) {
        return None;
    }
    let st = stack()?;
    let any: std::net::IpAddr = if to.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    let socket = st.udp_bind(SocketAddr::new(any, 0)).ok()?;
    let file = File::new(
        Kind::Udp {
            socket,
            peer: Mutex::new(None),
        },
        f.nonblocking(),
    );
    f.inherit(&file);
    table().set(fd, Arc::clone(&file));
    Some(file)
}

thread_local! {
    /// Gather/scatter buffer for readv/writev/recvmsg/sendmsg on lstack sockets.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The iovecs of a call as slices.
///
/// # Safety
/// `iov` must point to `n` valid iovecs whose buffers are valid.
unsafe fn iovecs<'a>(iov: *const libc::iovec, n: c_int) -> Option<&'a [libc::iovec]> {
    if !(0..=libc::UIO_MAXIOV).contains(&n) {
        return None;
    }
    if n == 0 {
        return Some(&[]);
    }
    if iov.is_null() {
        return None;
    }
    // SAFETY: per the caller's contract.
    Some(unsafe { std::slice::from_raw_parts(iov, n as usize) })
}

fn gather_send(f: &File, iov: &[libc::iovec], flags: c_int, to: Option<SocketAddr>) -> ssize_t {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        s.clear();
        for v in iov {
            // SAFETY: the caller's iovec buffers are valid for iov_len bytes.
            if let Some(b) = unsafe { buf(v.iov_base, v.iov_len) } {
                s.extend_from_slice(b);
            } else {
                return fail(libc::EFAULT);
            }
        }
        send_file(f, &s, flags, to)
    })
}

fn scatter_recv(
    f: &File,
    iov: &[libc::iovec],
    flags: c_int,
    from: Option<(*mut sockaddr, *mut socklen_t)>,
) -> ssize_t {
    let total: usize = iov.iter().map(|v| v.iov_len).sum();
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        s.resize(total, 0);
        let n = recv_file(f, &mut s[..total], flags, from);
        if n <= 0 {
            return n;
        }
        let mut off = 0usize;
        for v in iov {
            if off >= n as usize {
                break;
            }
            let take = v.iov_len.min(n as usize - off);
            // SAFETY: the caller's iovec buffer holds iov_len >= take bytes.
            if let Some(dst) = unsafe { buf_mut(v.iov_base, take) } {
                dst.copy_from_slice(&s[off..off + take]);
            }
            off += take;
        }
        n
    })
}

#[no_mangle]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const libc::iovec, n: c_int) -> ssize_t {
    let Some(f) = lookup(fd).filter(|f| !matches!(f.kind, Kind::Fresh { .. })) else {
        // SAFETY: forwarding.
        return unsafe { (real().readv)(fd, iov, n) };
    };
    guarded("readv", || {
        // SAFETY: caller's iovecs.
        let Some(v) = (unsafe { iovecs(iov, n) }) else {
            return fail(libc::EINVAL);
        };
        scatter_recv(&f, v, 0, None)
    })
}

#[no_mangle]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const libc::iovec, n: c_int) -> ssize_t {
    let Some(f) = lookup(fd).filter(|f| !matches!(f.kind, Kind::Fresh { .. })) else {
        // SAFETY: forwarding.
        return unsafe { (real().writev)(fd, iov, n) };
    };
    guarded("writev", || {
        // SAFETY: caller's iovecs.
        let Some(v) = (unsafe { iovecs(iov, n) }) else {
            return fail(libc::EINVAL);
        };
        gather_send(&f, v, 0, None)
    })
}

#[no_mangle]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut libc::msghdr, flags: c_int) -> ssize_t {
    let Some(f) = lookup(fd).filter(|f| !matches!(f.kind, Kind::Fresh { .. })) else {
        // SAFETY: forwarding.
        return unsafe { (real().recvmsg)(fd, msg, flags) };
    };
    guarded("recvmsg", || {
        if msg.is_null() {
            return fail(libc::EFAULT);
        }
        // SAFETY: non-null msghdr from the caller.
        let m = unsafe { &mut *msg };
        // SAFETY: the msghdr's iovecs.
        let Some(v) = (unsafe { iovecs(m.msg_iov, m.msg_iovlen as c_int) }) else {
            return fail(libc::EINVAL);
        };
        m.msg_controllen = 0;
        m.msg_flags = 0;
        let from = (!m.msg_name.is_null())
            .then_some((m.msg_name.cast::<sockaddr>(), &mut m.msg_namelen as *mut _));
        scatter_recv(&f, v, flags, from)
    })
}

#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const libc::msghdr, flags: c_int) -> ssize_t {
    let Some(mut f) = lookup(fd) else {
        // SAFETY: forwarding.
        return unsafe { (real().sendmsg)(fd, msg, flags) };
    };
    if matches!(f.kind, Kind::Fresh { .. }) {
        // SAFETY: the caller's msghdr, read for its destination only.
        let to = unsafe { msg.as_ref() }
            .filter(|m| !m.msg_name.is_null())
            // SAFETY: the msghdr's address.
            .and_then(|m| unsafe { addr::read(m.msg_name.cast(), m.msg_namelen) }.ok());
        match to.and_then(|to| autobind_udp(fd, &f, to)) {
            Some(bound) => f = bound,
            // SAFETY: forwarding: this socket stays on the kernel.
            None => return unsafe { (real().sendmsg)(fd, msg, flags) },
        }
    }
    guarded("sendmsg", || {
        if msg.is_null() {
            return fail(libc::EFAULT);
        }
        // SAFETY: non-null msghdr from the caller.
        let m = unsafe { &*msg };
        // SAFETY: the msghdr's iovecs.
        let Some(v) = (unsafe { iovecs(m.msg_iov, m.msg_iovlen as c_int) }) else {
            return fail(libc::EINVAL);
        };
        let to = if m.msg_name.is_null() {
            None
        } else {
            // SAFETY: the msghdr's address.
            match unsafe { addr::read(m.msg_name.cast(), m.msg_namelen) } {
                Ok(sa) => Some(sa),
                Err(e) => return fail(e),
            }
        };
        gather_send(&f, v, flags, to)
    })
}

/// `recvmmsg` on an lstack socket: one `recvmsg` per message. Later messages
/// never wait with `MSG_WAITFORONE`; the timeout (as the kernel's) is
/// checked after each message received.
#[no_mangle]
pub unsafe extern "C" fn recvmmsg(
    fd: c_int,
    msgs: *mut libc::mmsghdr,
    vlen: libc::c_uint,
    flags: c_int,
    timeout: *mut libc::timespec,
) -> c_int {
    if lookup(fd).is_none() {
        // SAFETY: forwarding.
        return unsafe { (real().recvmmsg)(fd, msgs, vlen, flags, timeout) };
    }
    if msgs.is_null() && vlen > 0 {
        return fail(libc::EFAULT);
    }
    // SAFETY: the caller's timespec, if any.
    let deadline = match unsafe { timeout.as_ref() } {
        None => None,
        Some(t) if t.tv_sec < 0 || !(0..1_000_000_000).contains(&t.tv_nsec) => {
            return fail(libc::EINVAL)
        }
        Some(t) => {
            Some(std::time::Instant::now() + Duration::new(t.tv_sec as u64, t.tv_nsec as u32))
        }
    };
    let vlen = vlen.min(libc::UIO_MAXIOV as libc::c_uint) as usize;
    let mut done = 0;
    while done < vlen {
        let f = if done > 0 && flags & libc::MSG_WAITFORONE != 0 {
            (flags & !libc::MSG_WAITFORONE) | libc::MSG_DONTWAIT
        } else {
            flags & !libc::MSG_WAITFORONE
        };
        // SAFETY: entry `done` of the caller's array of `vlen` entries.
        let m = unsafe { &mut *msgs.add(done) };
        // SAFETY: the caller's msghdr.
        let n = unsafe { recvmsg(fd, &mut m.msg_hdr, f) };
        if n < 0 {
            if done == 0 {
                return -1;
            }
            break;
        }
        m.msg_len = n as libc::c_uint;
        done += 1;
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            break;
        }
    }
    done as c_int
}

/// `sendmmsg` on an lstack socket: one `sendmsg` per message, stopping at
/// the first that fails (its error is returned only if it was the first).
#[no_mangle]
pub unsafe extern "C" fn sendmmsg(
    fd: c_int,
    msgs: *mut libc::mmsghdr,
    vlen: libc::c_uint,
    flags: c_int,
) -> c_int {
    if lookup(fd).is_none() {
        // SAFETY: forwarding.
        return unsafe { (real().sendmmsg)(fd, msgs, vlen, flags) };
    }
    if msgs.is_null() && vlen > 0 {
        return fail(libc::EFAULT);
    }
    let vlen = vlen.min(libc::UIO_MAXIOV as libc::c_uint) as usize;
    let mut done = 0;
    while done < vlen {
        // SAFETY: entry `done` of the caller's array of `vlen` entries.
        let m = unsafe { &mut *msgs.add(done) };
        // SAFETY: the caller's msghdr.
        let n = unsafe { sendmsg(fd, &m.msg_hdr, flags) };
        if n < 0 {
            if done == 0 {
                return -1;
            }
            break;
        }
        m.msg_len = n as libc::c_uint;
        done += 1;
    }
    done as c_int
}

// ---------------------------------------------------------------- teardown

#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if !bypassed() {
        // Dropping the last reference closes the socket (FIN, or RST with
        // unread data).
        let _ = catch_unwind(|| {
            if let Some(f) = table().take(fd) {
                epoll::closed(fd, &f);
                // A child forked since may take the connection over.
                handoff::closing(&f);
            }
        });
        epoll::forget(fd);
        fallback::forget(fd);
    } else {
        handoff::child_closed(fd);
    }
    // SAFETY: forwarding.
    unsafe { (real().close)(fd) }
}

/// `close_range`: the lstack sockets in the range are closed as by `close`
/// (unless only `CLOSE_RANGE_CLOEXEC` is asked), then the C library's does
/// the rest.
#[no_mangle]
pub unsafe extern "C" fn close_range(
    first: libc::c_uint,
    last: libc::c_uint,
    flags: c_int,
) -> c_int {
    if !bypassed() && first <= last && flags as libc::c_uint & libc::CLOSE_RANGE_CLOEXEC == 0 {
        let end = last.min(table().len().saturating_sub(1) as libc::c_uint);
        let _ = catch_unwind(|| {
            for fd in first..=end {
                let fd = fd as c_int;
                if let Some(f) = table().take(fd) {
                    epoll::closed(fd, &f);
                    handoff::closing(&f);
                }
                epoll::forget(fd);
                fallback::forget(fd);
            }
        });
    }
    // SAFETY: forwarding.
    unsafe { (real().close_range)(first, last, flags) }
}

/// `sigaction`: see [`signal`](mod@signal) for the termination signals.
#[no_mangle]
pub unsafe extern "C" fn sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    // SAFETY: the caller's arguments, as for libc's sigaction.
    unsafe { signal::sigaction(sig, act, old) }
}

/// `signal`: see [`signal`](mod@signal) for the termination signals.
#[no_mangle]
pub unsafe extern "C" fn signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    // SAFETY: as for libc's signal.
    unsafe { signal::signal(sig, handler) }
}

#[no_mangle]
pub unsafe extern "C" fn shutdown(fd: c_int, how: c_int) -> c_int {
    let Some(f) = lookup(fd).filter(|f| !matches!(f.kind, Kind::Fresh { .. })) else {
        // SAFETY: forwarding.
        return unsafe { (real().shutdown)(fd, how) };
    };
    guarded("shutdown", || {
        let how = match how {
            libc::SHUT_RD => Shutdown::Read,
            libc::SHUT_WR => Shutdown::Write,
            libc::SHUT_RDWR => Shutdown::Both,
            _ => return fail(libc::EINVAL),
        };
        match &f.kind {
            Kind::Stream(s) => match s.shutdown(how) {
                Ok(()) => 0,
                Err(e) => io_fail(&e),
            },
            _ => fail(libc::ENOTCONN),
        }
    })
}

// ---------------------------------------------------------------- names and options

#[no_mangle]
pub unsafe extern "C" fn getsockname(fd: c_int, a: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: the caller's buffers.
    if let Some(r) = unsafe { handoff::child_name(fd, false, a, len) } {
        return r;
    }
    let Some(f) = lookup(fd) else {
        // SAFETY: forwarding.
        return unsafe { (real().getsockname)(fd, a, len) };
    };
    guarded("getsockname", || {
        let sa = match &f.kind {
            Kind::Fresh { bound, .. } => match *bound.lock().unwrap_or_else(|e| e.into_inner()) {
                Some(sa) => sa,
                // SAFETY: forwarding.
                None => return unsafe { (real().getsockname)(fd, a, len) },
            },
            Kind::Listener { bound, .. } => *bound,
            Kind::Stream(s) => match s.local_addr() {
                Ok(sa) => sa,
                Err(e) => return io_fail(&e),
            },
            Kind::Udp { socket, peer } => {
                let mut sa = socket.local_addr();
                let peer = *peer.lock().unwrap_or_else(|e| e.into_inner());
                if let (true, Some(p), Some(st)) =
                    (sa.ip().is_unspecified(), peer, runtime::running())
                {
                    if let Some(ip) = st.local_ip_for(p.ip()) {
                        sa.set_ip(ip);
                    }
                }
                sa
            }
        };
        // SAFETY: caller's buffers.
        match unsafe { addr::write(f.present(sa), a, len) } {
            Ok(()) => 0,
            Err(e) => fail(e),
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn getpeername(fd: c_int, a: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: the caller's buffers.
    if let Some(r) = unsafe { handoff::child_name(fd, true, a, len) } {
        return r;
    }
    let Some(f) = lookup(fd).filter(|f| !matches!(f.kind, Kind::Fresh { .. })) else {
        // SAFETY: forwarding.
        return unsafe { (real().getpeername)(fd, a, len) };
    };
    guarded("getpeername", || {
        let sa = match &f.kind {
            Kind::Stream(s) => match s.peer_addr() {
                Ok(sa) => sa,
                Err(e) => return io_fail(&e),
            },
            Kind::Udp { peer, .. } => match *peer.lock().unwrap_or_else(|e| e.into_inner()) {
                Some(sa) => sa,
                None => return fail(libc::ENOTCONN),
            },
            _ => return fail(libc::ENOTCONN),
        };
        if a.is_null() {
            return fail(libc::EFAULT);
        }
        // SAFETY: caller's buffers.
        match unsafe { addr::write(f.present(sa), a, len) } {
            Ok(()) => 0,
            Err(e) => fail(e),
        }
    })
}

/// Reads an int option value.
///
/// # Safety
/// `v` must point to `len` readable bytes.
unsafe fn int_opt(v: *const c_void, len: socklen_t) -> Option<c_int> {
    if v.is_null() || (len as usize) < std::mem::size_of::<c_int>() {
        return None;
    }
    // SAFETY: per the caller's contract.
    Some(unsafe { std::ptr::read_unaligned(v.cast::<c_int>()) })
}

#[no_mangle]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    v: *const c_void,
    len: socklen_t,
) -> c_int {
    let Some(f) = lookup(fd) else {
        if let Some(r) = handoff::child_setsockopt(fd, level) {
            return r;
        }
        // SAFETY: forwarding.
        return unsafe { (real().setsockopt)(fd, level, name, v, len) };
    };
    guarded("setsockopt", || {
        if !fallback::honoured(level, name) {
            f.unhonoured_option(level, name);
        }
        if level == libc::IPPROTO_IPV6 && name == libc::IPV6_V6ONLY {
            // SAFETY: caller's option buffer.
            if let Some(on) = unsafe { int_opt(v, len) } {
                f.v6only.store(on != 0, Ordering::Relaxed);
            }
        }
        match (level, name) {
            (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => {
                // SAFETY: caller's option buffer.
                let Some(on) = (unsafe { int_opt(v, len) }) else {
                    return fail(libc::EINVAL);
                };
                f.keepalive.store(on != 0, Ordering::Relaxed);
                f.apply_stream_options();
            }
            (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE) => {
                // SAFETY: caller's option buffer.
                let Some(secs) = (unsafe { int_opt(v, len) }) else {
                    return fail(libc::EINVAL);
                };
                if !(1..=32767).contains(&secs) {
                    return fail(libc::EINVAL);
                }
                f.keepidle.store(secs as u32, Ordering::Relaxed);
                f.apply_stream_options();
            }
            (libc::SOL_SOCKET, libc::SO_RCVBUF | libc::SO_SNDBUF) => {
                // SAFETY: caller's option buffer.
                let Some(size) = (unsafe { int_opt(v, len) }) else {
                    return fail(libc::EINVAL);
                };
                // As Linux: a negative size is a huge one (then capped).
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                if matches!(f.kind, Kind::Stream(_)) {
                    // An existing connection's buffers cannot be resized:
                    // accepted, and getsockopt keeps telling the real size.
                    return 0;
                }
                let mut req = f.buffers.lock().unwrap_or_else(|e| e.into_inner());
                if name == libc::SO_RCVBUF {
                    req.rx = Some(size);
                } else {
                    req.tx = Some(size);
                }
                if let Kind::Listener { listener, .. } = &f.kind {
                    if let Some(Some(l)) = listener.get() {
                        l.set_buffers(*req);
                    }
                }
            }
            (libc::SOL_SOCKET, libc::SO_RCVTIMEO | libc::SO_SNDTIMEO) => {
                if v.is_null() || (len as usize) < std::mem::size_of::<libc::timeval>() {
                    return fail(libc::EINVAL);
                }
                // SAFETY: a struct timeval, checked above.
                let t = unsafe { std::ptr::read_unaligned(v.cast::<libc::timeval>()) };
                if !(0..1_000_000).contains(&t.tv_usec) {
                    return fail(libc::EDOM);
                }
                // As Linux: a negative time is "no timeout".
                let us = if t.tv_sec < 0 {
                    0
                } else {
                    (t.tv_sec as u64)
                        .saturating_mul(1_000_000)
                        .saturating_add(t.tv_usec as u64)
                };
                let dir = usize::from(name == libc::SO_SNDTIMEO);
                f.timeouts[dir].store(us, Ordering::Relaxed);
                f.apply_stream_options();
                // The kernel socket keeps it too, for getsockopt.
                // SAFETY: forwarding the caller's checked buffer.
                unsafe { (real().setsockopt)(fd, level, name, v, len) };
                return 0;
            }
            (libc::SOL_SOCKET, libc::SO_LINGER) => {
                if v.is_null() || (len as usize) < std::mem::size_of::<libc::linger>() {
                    return fail(libc::EINVAL);
                }
                // SAFETY: a struct linger, checked above.
                let l = unsafe { std::ptr::read_unaligned(v.cast::<libc::linger>()) };
                f.linger_zero
                    .store(l.l_onoff != 0 && l.l_linger == 0, Ordering::Relaxed);
                f.apply_stream_options();
            }
            _ => {}
        }
        if level == libc::IPPROTO_TCP && name == libc::TCP_NODELAY {
            // SAFETY: caller's option buffer.
            let Some(on) = (unsafe { int_opt(v, len) }) else {
                return fail(libc::EINVAL);
            };
            f.nodelay.store(on != 0, Ordering::Relaxed);
            if let Kind::Stream(s) = &f.kind {
                s.set_nodelay(on != 0);
            }
        }
        match &f.kind {
            // The kernel socket still exists: let it validate and remember.
            // SAFETY: forwarding.
            Kind::Fresh { .. } | Kind::Listener { kernel: true, .. } => unsafe {
                (real().setsockopt)(fd, level, name, v, len)
            },
            // Options lstack does not model otherwise are accepted, as
            // gazelle does.
            _ => {
                if v.is_null() && len > 0 {
                    return fail(libc::EFAULT);
                }
                0
            }
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    v: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    let Some(f) = lookup(fd).filter(|f| !matches!(f.kind, Kind::Fresh { .. })) else {
        // SAFETY: the caller's buffers.
        if let Some(r) = unsafe { handoff::child_getsockopt(fd, level, name, v, len) } {
            return r;
        }
        // SAFETY: forwarding.
        return unsafe { (real().getsockopt)(fd, level, name, v, len) };
    };
    guarded("getsockopt", || {
        let value: c_int = match (level, name) {
            (libc::SOL_SOCKET, libc::SO_ERROR) => {
                let pending = f.so_error.swap(0, Ordering::Relaxed);
                if pending != 0 {
                    pending
                } else if let Kind::Stream(s) = &f.kind {
                    s.take_error().map_or(0, |k| errno_of(&io::Error::from(k)))
                } else {
                    0
                }
            }
            (libc::SOL_SOCKET, libc::SO_TYPE) => match &f.kind {
                Kind::Udp { .. } => libc::SOCK_DGRAM,
                _ => libc::SOCK_STREAM,
            },
            (libc::SOL_SOCKET, libc::SO_ACCEPTCONN) => {
                c_int::from(matches!(f.kind, Kind::Listener { .. }))
            }
            (libc::IPPROTO_TCP, libc::TCP_NODELAY) => {
                c_int::from(f.nodelay.load(Ordering::Relaxed))
            }
            (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => {
                c_int::from(f.keepalive.load(Ordering::Relaxed))
            }
            (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE) => f.keepidle.load(Ordering::Relaxed) as c_int,
            (libc::SOL_SOCKET, libc::SO_RCVBUF | libc::SO_SNDBUF) => {
                let Some(st) = stack() else {
                    return fail(libc::EIO);
                };
                // A connection's real buffers; what a listener's or a fresh
                // socket's connections will get.
                let (rx, tx) = match &f.kind {
                    Kind::Stream(s) => s.buffer_capacities(),
                    _ => st.tcp_buffer_sizes(f.buffers()),
                };
                (if name == libc::SO_RCVBUF { rx } else { tx }) as c_int
            }
            // SAFETY: forwarding to the reservation descriptor's kernel socket when it is one.
            _ => return unsafe { (real().getsockopt)(fd, level, name, v, len) },
        };
        if v.is_null() || len.is_null() {
            return fail(libc::EFAULT);
        }
        // SAFETY: non-null caller pointers.
        unsafe {
            let cap = *len as usize;
            let bytes = value.to_ne_bytes();
            let n = cap.min(bytes.len());
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), v.cast::<u8>(), n);
            *len = n as socklen_t;
        }
        0
    })
}

// ---------------------------------------------------------------- descriptor control

/// `fcntl` for lstack files: `F_GETFL`/`F_SETFL` track `O_NONBLOCK`;
/// duplicating commands duplicate the table entry too.
fn fcntl_file(fd: c_int, f: Arc<File>, cmd: c_int, arg: c_ulong) -> c_int {
    match cmd {
        libc::F_GETFL => {
            // SAFETY: forwarding to get the access mode bits.
            let fl = unsafe { (real().fcntl)(fd, cmd, arg) };
            if fl < 0 {
                return fl;
            }
            let fl = fl & !libc::O_NONBLOCK;
            if f.nonblocking() {
                fl | libc::O_NONBLOCK
            } else {
                fl
            }
        }
        libc::F_SETFL => {
            f.nonblocking
                .store(arg as c_int & libc::O_NONBLOCK != 0, Ordering::Relaxed);
            if matches!(f.kind, Kind::Listener { .. }) {
                return 0;
            }
            // SAFETY: forwarding (keeps the kernel descriptor's flags in step).
            unsafe { (real().fcntl)(fd, cmd, arg) }
        }
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            // SAFETY: forwarding.
            let n = unsafe { (real().fcntl)(fd, cmd, arg) };
            if n >= 0 {
                table().set(n, f);
            }
            n
        }
        // SAFETY: forwarding.
        _ => unsafe { (real().fcntl)(fd, cmd, arg) },
    }
}

// `fcntl` and `ioctl` are variadic in C; on x86-64 the optional argument
// arrives in the same register as a fixed third argument would, so these
// non-variadic definitions read it correctly for integer and pointer args.
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    let Some(f) = lookup(fd) else {
        // SAFETY: forwarding.
        return unsafe { (real().fcntl)(fd, cmd, arg) };
    };
    guarded("fcntl", || fcntl_file(fd, f, cmd, arg))
}

#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    // SAFETY: same contract.
    unsafe { fcntl(fd, cmd, arg) }
}

#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, req: c_ulong, arg: *mut c_void) -> c_int {
    let Some(f) = lookup(fd) else {
        // SAFETY: forwarding.
        return unsafe { (real().ioctl)(fd, req, arg) };
    };
    if matches!(f.kind, Kind::Fresh { .. }) {
        // Its kernel socket answers; FIONBIO is also the lstack socket's to
        // come (Python's `setblocking` sets it before `listen`, and a
        // listener that forgot it blocked asyncio's accept loop).
        // SAFETY: forwarding.
        let r = unsafe { (real().ioctl)(fd, req, arg) };
        if r == 0 && req == libc::FIONBIO && !arg.is_null() {
            // SAFETY: FIONBIO takes an int*.
            let on = unsafe { *arg.cast::<c_int>() } != 0;
            f.nonblocking.store(on, Ordering::Relaxed);
        }
        return r;
    }
    guarded("ioctl", || match req {
        libc::FIONBIO => {
            if arg.is_null() {
                return fail(libc::EFAULT);
            }
            // SAFETY: FIONBIO takes an int*.
            let on = unsafe { *arg.cast::<c_int>() } != 0;
            f.nonblocking.store(on, Ordering::Relaxed);
            0
        }
        libc::FIONREAD => {
            if arg.is_null() {
                return fail(libc::EFAULT);
            }
            let n = match &f.kind {
                Kind::Stream(s) => s.recv_queue(),
                _ => 0,
            };
            // SAFETY: FIONREAD takes an int*.
            unsafe { *arg.cast::<c_int>() = n.min(c_int::MAX as usize) as c_int };
            0
        }
        // SAFETY: forwarding.
        _ => unsafe { (real().ioctl)(fd, req, arg) },
    })
}

#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: forwarding.
    let n = unsafe { (real().dup)(fd) };
    if n >= 0 {
        if let Some(f) = lookup(fd) {
            table().set(n, f);
        } else {
            fallback::duplicated(fd, n);
        }
    }
    n
}

#[no_mangle]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    // SAFETY: same contract.
    unsafe { dup3_impl(old, new, 0, false) }
}

#[no_mangle]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    // SAFETY: same contract.
    unsafe { dup3_impl(old, new, flags, true) }
}

unsafe fn dup3_impl(old: c_int, new: c_int, flags: c_int, three: bool) -> c_int {
    let file = lookup(old);
    // SAFETY: forwarding.
    let r = unsafe {
        if three {
            (real().dup3)(old, new, flags)
        } else {
            (real().dup2)(old, new)
        }
    };
    if r >= 0 && old != new && !bypassed() {
        // `new` was closed by the kernel: forget what it was, then share `old`'s file.
        table().take(new);
        epoll::forget(new);
        fallback::duplicated(old, new);
        if let Some(f) = file {
            table().set(new, f);
        }
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn fork() -> libc::pid_t {
    // Each lstack connection gets a kernel socket pair the child can be
    // handed the connection over (see `handoff`).
    let prepared = if bypassed() {
        None
    } else {
        catch_unwind(handoff::prepare).ok()
    };
    // SAFETY: forwarding.
    let pid = unsafe { (real().fork)() };
    if pid == 0 && runtime::running().is_some() {
        // The stack's threads did not come along: the child uses the
        // kernel. Its connections become their pairs' ends; the other
        // lstack sockets it inherited fail cleanly.
        let handed = prepared.map_or(0, |p| handoff::after_fork(p, true));
        let orphans = table().orphan_all();
        runtime::FORKED.store(true, Ordering::SeqCst);
        signal::after_fork_child();
        runtime::after_fork_child(orphans, handed);
    } else if let Some(p) = prepared {
        if pid < 0 {
            handoff::discard(p);
        } else {
            handoff::after_fork(p, false);
        }
    }
    // A parent whose stack never started (it listened, then forked its
    // workers): the child is a process like any other, and starts its own
    // stack when it first needs one, setting up the listeners it inherited.
    pid
}

// A forked worker that drops privileges (nginx's workers become `user`
// before they use the listeners they inherited) starts its stack first,
// while it may still open the NIC and the hugepages.
macro_rules! privilege_drop {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> c_int {
            runtime::before_privilege_drop();
            // SAFETY: forwarding.
            unsafe { (real().$name)($($arg),*) }
        }
    )*};
}

privilege_drop! {
    setuid(uid: libc::uid_t);
    setgid(gid: libc::gid_t);
    setreuid(r: libc::uid_t, e: libc::uid_t);
    setregid(r: libc::gid_t, e: libc::gid_t);
    setresuid(r: libc::uid_t, e: libc::uid_t, s: libc::uid_t);
    setresgid(r: libc::gid_t, e: libc::gid_t, s: libc::gid_t);
}

/// `sendfile` to an lstack socket: read a chunk of the file and send it
/// (there is no kernel socket to splice into). Other descriptors: libc's.
#[no_mangle]
pub unsafe extern "C" fn sendfile(
    out_fd: c_int,
    in_fd: c_int,
    offset: *mut libc::off_t,
    count: size_t,
) -> ssize_t {
    let Some(f) = lookup(out_fd).filter(|f| !matches!(f.kind, Kind::Fresh { .. })) else {
        // SAFETY: forwarding.
        return unsafe { (real().sendfile)(out_fd, in_fd, offset, count) };
    };
    guarded("sendfile", || {
        const CHUNK: usize = 256 * 1024;
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            s.resize(count.min(CHUNK), 0);
            // SAFETY: reading into our scratch buffer from the caller's file,
            // at *offset when given (pread leaves the file position alone).
            let n = unsafe {
                if offset.is_null() {
                    (real().read)(in_fd, s.as_mut_ptr().cast(), s.len())
                } else {
                    libc::pread(in_fd, s.as_mut_ptr().cast(), s.len(), *offset)
                }
            };
            if n <= 0 {
                return n;
            }
            let sent = send_file(&f, &s[..n as usize], 0, None);
            let done = sent.max(0);
            // SAFETY: updating the caller's offset, or giving back the part of
            // the read the socket did not take.
            unsafe {
                if !offset.is_null() {
                    *offset += done as libc::off_t;
                } else if done < n {
                    libc::lseek(in_fd, -((n - done) as libc::off_t), libc::SEEK_CUR);
                }
            }
            sent
        })
    })
}

#[no_mangle]
pub unsafe extern "C" fn sendfile64(
    out_fd: c_int,
    in_fd: c_int,
    offset: *mut libc::off_t,
    count: size_t,
) -> ssize_t {
    // SAFETY: same contract (off_t is 64-bit on x86-64).
    unsafe { sendfile(out_fd, in_fd, offset, count) }
}
