//! The C library's own functions, found with `dlsym(RTLD_NEXT, ...)`.
//!
//! Everything this library interposes must reach the kernel through these,
//! never through the plain symbol (which would be ourselves again).

use std::{ffi::CStr, sync::OnceLock};

use libc::{
    c_int, c_uint, c_ulong, c_void, msghdr, nfds_t, pollfd, size_t, sockaddr, socklen_t, ssize_t,
};

macro_rules! real_fns {
    ($($name:ident : fn($($arg:ty),*) -> $ret:ty;)*) => {
        /// Pointers to the C library's implementations.
        #[allow(missing_debug_implementations)]
        pub struct Real {
            $(pub $name: unsafe extern "C" fn($($arg),*) -> $ret,)*
        }

        fn resolve() -> Real {
            Real {
                $($name: {
                    let name = concat!(stringify!($name), "\0");
                    let name = CStr::from_bytes_with_nul(name.as_bytes()).expect("NUL-terminated");
                    // SAFETY: dlsym with a valid C string; RTLD_NEXT finds the
                    // next definition after this library, i.e. libc's.
                    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
                    if p.is_null() {
                        // Without the C library's function nothing can work.
                        let msg = concat!("liblstack: dlsym(", stringify!($name), ") failed\n");
                        // SAFETY: raw write of a static buffer to stderr.
                        unsafe { libc::syscall(libc::SYS_write, 2, msg.as_ptr(), msg.len()) };
                        std::process::abort();
                    }
                    // SAFETY: the symbol has this C signature in glibc.
                    unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($arg),*) -> $ret>(p) }
                },)*
            }
        }
    };
}

real_fns! {
    socket: fn(c_int, c_int, c_int) -> c_int;
    bind: fn(c_int, *const sockaddr, socklen_t) -> c_int;
    listen: fn(c_int, c_int) -> c_int;
    accept: fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int;
    accept4: fn(c_int, *mut sockaddr, *mut socklen_t, c_int) -> c_int;
    connect: fn(c_int, *const sockaddr, socklen_t) -> c_int;
    read: fn(c_int, *mut c_void, size_t) -> ssize_t;
    write: fn(c_int, *const c_void, size_t) -> ssize_t;
    readv: fn(c_int, *const libc::iovec, c_int) -> ssize_t;
    writev: fn(c_int, *const libc::iovec, c_int) -> ssize_t;
    recv: fn(c_int, *mut c_void, size_t, c_int) -> ssize_t;
    send: fn(c_int, *const c_void, size_t, c_int) -> ssize_t;
    recvfrom: fn(c_int, *mut c_void, size_t, c_int, *mut sockaddr, *mut socklen_t) -> ssize_t;
    sendto: fn(c_int, *const c_void, size_t, c_int, *const sockaddr, socklen_t) -> ssize_t;
    recvmsg: fn(c_int, *mut msghdr, c_int) -> ssize_t;
    sendmsg: fn(c_int, *const msghdr, c_int) -> ssize_t;
    close: fn(c_int) -> c_int;
    shutdown: fn(c_int, c_int) -> c_int;
    getsockname: fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int;
    getpeername: fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int;
    getsockopt: fn(c_int, c_int, c_int, *mut c_void, *mut socklen_t) -> c_int;
    setsockopt: fn(c_int, c_int, c_int, *const c_void, socklen_t) -> c_int;
    fcntl: fn(c_int, c_int, c_ulong) -> c_int;
    ioctl: fn(c_int, c_ulong, *mut c_void) -> c_int;
    epoll_create: fn(c_int) -> c_int;
    epoll_create1: fn(c_int) -> c_int;
    epoll_ctl: fn(c_int, c_int, c_int, *mut libc::epoll_event) -> c_int;
    epoll_wait: fn(c_int, *mut libc::epoll_event, c_int, c_int) -> c_int;
    epoll_pwait: fn(c_int, *mut libc::epoll_event, c_int, c_int, *const libc::sigset_t) -> c_int;
    poll: fn(*mut pollfd, nfds_t, c_int) -> c_int;
    ppoll: fn(*mut pollfd, nfds_t, *const libc::timespec, *const libc::sigset_t) -> c_int;
    select: fn(c_int, *mut libc::fd_set, *mut libc::fd_set, *mut libc::fd_set, *mut libc::timeval) -> c_int;
    dup: fn(c_int) -> c_int;
    dup2: fn(c_int, c_int) -> c_int;
    dup3: fn(c_int, c_int, c_int) -> c_int;
    fork: fn() -> libc::pid_t;
    sendfile: fn(c_int, c_int, *mut libc::off_t, size_t) -> ssize_t;
    eventfd: fn(c_uint, c_int) -> c_int;
    recvmmsg: fn(c_int, *mut libc::mmsghdr, c_uint, c_int, *mut libc::timespec) -> c_int;
    sendmmsg: fn(c_int, *mut libc::mmsghdr, c_uint, c_int) -> c_int;
    close_range: fn(c_uint, c_uint, c_int) -> c_int;
    sigaction: fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int;
    signal: fn(c_int, libc::sighandler_t) -> libc::sighandler_t;
    setuid: fn(libc::uid_t) -> c_int;
    setgid: fn(libc::gid_t) -> c_int;
    setreuid: fn(libc::uid_t, libc::uid_t) -> c_int;
    setregid: fn(libc::gid_t, libc::gid_t) -> c_int;
    setresuid: fn(libc::uid_t, libc::uid_t, libc::uid_t) -> c_int;
    setresgid: fn(libc::gid_t, libc::gid_t, libc::gid_t) -> c_int;
}

/// The C library's functions (resolved on first use).
pub fn real() -> &'static Real {
    static REAL: OnceLock<Real> = OnceLock::new();
    REAL.get_or_init(resolve)
}
