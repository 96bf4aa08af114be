//! Sleeping until an lstack socket (and maybe a kernel descriptor) is ready.
//!
//! Each application thread that ever waits owns an eventfd. Sockets it waits
//! on get a one-shot hook that writes to that eventfd when their readiness
//! changes; the thread sleeps in the kernel's `poll` on the eventfd plus any
//! kernel descriptors of the same call, so one sleep covers both worlds and
//! an idle application burns no CPU.

use std::{
    sync::Arc,
    task::{Wake, Waker},
    time::{Duration, Instant},
};

use libc::c_int;

use crate::{file::File, real::real};

/// A thread's eventfd and the waker that signals it.
#[derive(Debug)]
pub struct ThreadWaiter {
    /// The eventfd (non-blocking, close-on-exec).
    pub efd: c_int,
    waker: Waker,
}

#[derive(Debug)]
struct EfdWake(c_int);

impl Wake for EfdWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let one: u64 = 1;
        // SAFETY: 8-byte write to our eventfd; EAGAIN (counter full) is fine.
        unsafe { (real().write)(self.0, (&one as *const u64).cast(), 8) };
    }
}

impl ThreadWaiter {
    fn new() -> Option<Self> {
        // SAFETY: plain eventfd creation.
        let efd = unsafe { (real().eventfd)(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return None;
        }
        Some(Self {
            efd,
            waker: Waker::from(Arc::new(EfdWake(efd))),
        })
    }

    /// The waker hooks register.
    pub fn waker(&self) -> &Waker {
        &self.waker
    }

    /// Empties the eventfd after a wakeup.
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: 8-byte read from our non-blocking eventfd.
        unsafe { (real().read)(self.efd, (&mut v as *mut u64).cast(), 8) };
    }
}

impl Drop for ThreadWaiter {
    fn drop(&mut self) {
        // SAFETY: closing our own descriptor.
        unsafe { (real().close)(self.efd) };
    }
}

thread_local! {
    static WAITER: Option<ThreadWaiter> = ThreadWaiter::new();
}

/// Runs `f` with this thread's waiter.
pub fn with_waiter<R>(f: impl FnOnce(&ThreadWaiter) -> R) -> Result<R, i32> {
    WAITER
        .try_with(|w| w.as_ref().map(f))
        .ok()
        .flatten()
        .ok_or(libc::ENOMEM)
}

/// Milliseconds left until `deadline`, for `poll` (-1: forever).
pub fn poll_timeout(deadline: Option<Instant>) -> c_int {
    match deadline {
        None => -1,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            // Round up so a 0.4 ms remainder does not spin.
            c_int::try_from(left.as_micros().div_ceil(1000)).unwrap_or(c_int::MAX)
        }
    }
}

/// Sleeps until one of `files` has any readiness, `kernel_fd` is readable,
/// or `timeout` passes. Returns early on any of these; the caller re-checks.
pub fn until_ready(
    files: &[&File],
    kernel_fd: Option<c_int>,
    timeout: Option<Duration>,
) -> Result<(), i32> {
    let deadline = timeout.map(|t| Instant::now() + t);
    with_waiter(|w| {
        w.drain();
        for f in files {
            if let Some(r) = f.poll_readiness(w.waker(), lstack_core::Interest::BOTH) {
                if r.readable || r.writable || r.hangup {
                    return Ok(());
                }
            }
        }
        let mut fds = [
            libc::pollfd {
                fd: w.efd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: kernel_fd.unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let n = if kernel_fd.is_some() { 2 } else { 1 };
        // SAFETY: fds holds n valid pollfds.
        let r = unsafe { (real().poll)(fds.as_mut_ptr(), n, poll_timeout(deadline)) };
        if r < 0 {
            let e = std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINTR);
            return Err(e);
        }
        Ok(())
    })?
}
