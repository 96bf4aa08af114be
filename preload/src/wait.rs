//! Sleeping until an lstack socket (and maybe a kernel descriptor) is ready.
//!
//! Each application thread that ever waits owns an eventfd. Sockets it waits
//! on get a one-shot hook that writes to that eventfd when their readiness
//! changes; the thread sleeps in the kernel's `poll` on the eventfd plus any
//! kernel descriptors of the same call, so one sleep covers both worlds and
//! an idle application burns no CPU.
//!
//! Run to completion (`stack_thread_mode = "run-to-completion"`) there is no
//! stack thread to change that readiness: a thread that waits runs the
//! stack itself ([`drive`]) and sleeps where the stack can wake it
//! ([`sleep`]): on the NIC queue, the stack's timers and the same
//! descriptors.

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

/// Run to completion: one pass of the stack on this thread. Returns whether
/// the stack had work (nothing to do with stack threads).
pub fn drive() -> bool {
    crate::runtime::running().is_some_and(|s| s.run_to_completion() && s.drive())
}

/// Run to completion: one pass of the stack on this thread; false (and no
/// pass) with stack threads.
pub fn drive_now() -> bool {
    crate::runtime::running()
        .filter(|s| s.run_to_completion())
        .map(|s| s.drive())
        .is_some()
}

/// Run to completion: sends what this thread's writes left due before it
/// waits outside the stack (a `poll` of kernel descriptors only).
pub fn flush_pending() {
    if let Some(s) = crate::runtime::running().filter(|s| s.egress_pending()) {
        s.drive();
    }
}

/// Sleeps until one of `fds` (kernel descriptors with the events waited
/// for; `revents` filled in) is ready or `deadline` passes, like `poll`;
/// run to completion, also until the stack has work (frames, a timer).
/// Returns `poll`'s result: the number of `fds` ready, or -1 (errno set).
pub fn sleep(fds: &mut [libc::pollfd], deadline: Option<Instant>) -> c_int {
    if let Some(st) = crate::runtime::running().filter(|s| s.run_to_completion()) {
        let limit = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if st.sleep_for_work(fds, limit) {
            return fds.iter().filter(|p| p.revents != 0).count() as c_int;
        }
        // Another thread runs the stack and wakes our hooks: sleep on our
        // descriptors, briefly, and drive again.
        let soon = Instant::now() + Duration::from_millis(1);
        let d = deadline.map_or(soon, |d| d.min(soon));
        // SAFETY: fds holds fds.len() valid pollfds.
        return unsafe {
            (real().poll)(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                poll_timeout(Some(d)),
            )
        };
    }
    // SAFETY: fds holds fds.len() valid pollfds.
    unsafe {
        (real().poll)(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            poll_timeout(deadline),
        )
    }
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
    drive();
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
        let r = sleep(&mut fds[..n], deadline);
        if r < 0 {
            let e = std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINTR);
            return Err(e);
        }
        Ok(())
    })?
}
