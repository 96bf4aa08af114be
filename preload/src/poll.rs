//! `poll`, `ppoll`, `select` and `pselect` over a mix of kernel and lstack
//! descriptors. Without lstack descriptors they go straight to the kernel.
//! With some: lstack readiness is read directly (registering this thread's
//! waker), kernel descriptors are polled together with this thread's
//! eventfd, and the call sleeps in the kernel until either side moves.

use std::time::{Duration, Instant};

use libc::{c_int, nfds_t, pollfd};

use crate::{
    fail,
    file::{File, Kind},
    guarded, lookup,
    real::real,
    wait::{poll_timeout, with_waiter},
};

fn revents_of(f: &File, events: i16, waker: &std::task::Waker) -> Option<i16> {
    let interest = lstack_core::Interest {
        read: events & (libc::POLLIN | libc::POLLRDNORM | libc::POLLRDHUP | libc::POLLPRI) != 0,
        write: events & (libc::POLLOUT | libc::POLLWRNORM) != 0,
    };
    let r = f.poll_readiness(waker, interest)?;
    let mut re = 0i16;
    if r.readable {
        re |= libc::POLLIN | libc::POLLRDNORM;
    }
    if r.writable {
        re |= libc::POLLOUT | libc::POLLWRNORM;
    }
    if r.read_closed {
        re |= libc::POLLRDHUP;
    }
    let mut out = re & events;
    if r.hangup {
        out |= libc::POLLHUP;
    }
    if r.error {
        out |= libc::POLLERR;
    }
    Some(out)
}

/// Polls `fds`; `deadline` None waits forever.
fn poll_mixed(
    fds: &mut [pollfd],
    deadline: Option<Instant>,
    sigmask: Option<*const libc::sigset_t>,
) -> c_int {
    let files: Vec<Option<std::sync::Arc<File>>> = fds
        .iter()
        .map(|p| lookup(p.fd).filter(|f| !matches!(f.kind, Kind::Fresh { .. })))
        .collect();
    let r = with_waiter(|w| {
        let mut kernel: Vec<pollfd> = Vec::with_capacity(fds.len() + 1);
        loop {
            crate::wait::drive();
            w.drain();
            let mut ready = 0;
            for (p, f) in fds.iter_mut().zip(&files) {
                if let Some(f) = f {
                    p.revents = revents_of(f, p.events, w.waker()).unwrap_or(0);
                    if p.revents != 0 {
                        ready += 1;
                    }
                }
            }
            kernel.clear();
            kernel.extend(
                fds.iter()
                    .zip(&files)
                    .filter(|(_, f)| f.is_none())
                    .map(|(p, _)| pollfd { revents: 0, ..*p }),
            );
            kernel.push(pollfd {
                fd: w.efd,
                events: libc::POLLIN,
                revents: 0,
            });
            let timeout = if ready > 0 { 0 } else { poll_timeout(deadline) };
            let n = kernel.len() as nfds_t;
            let rtc = crate::runtime::running().is_some_and(|s| s.run_to_completion());
            // SAFETY: `kernel` holds n valid pollfds.
            let r = unsafe {
                match sigmask {
                    // Run to completion the thread sleeps where the stack can
                    // wake it (the signal mask is not applied there).
                    _ if rtc && timeout != 0 => crate::wait::sleep(&mut kernel, deadline),
                    Some(m) => {
                        let ts = (timeout >= 0).then(|| libc::timespec {
                            tv_sec: libc::time_t::from(timeout / 1000),
                            tv_nsec: libc::c_long::from(timeout % 1000) * 1_000_000,
                        });
                        let tsp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const _);
                        (real().ppoll)(kernel.as_mut_ptr(), n, tsp, m)
                    }
                    None => (real().poll)(kernel.as_mut_ptr(), n, timeout),
                }
            };
            if r < 0 {
                return -1;
            }
            let mut k = kernel.iter();
            for (p, f) in fds.iter_mut().zip(&files) {
                if f.is_none() {
                    let kp = k.next().expect("one kernel pollfd per kernel fd");
                    p.revents = kp.revents;
                    if p.revents != 0 {
                        ready += 1;
                    }
                }
            }
            if ready > 0 || deadline.is_some_and(|d| Instant::now() >= d) {
                return ready;
            }
        }
    });
    r.unwrap_or_else(fail)
}

#[no_mangle]
pub unsafe extern "C" fn poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int {
    if fds.is_null() || n == 0 || !any_lstack(fds, n) {
        crate::wait::flush_pending();
        // SAFETY: forwarding.
        return unsafe { (real().poll)(fds, n, timeout) };
    }
    guarded("poll", || {
        // SAFETY: the caller's array of n pollfds.
        let fds = unsafe { std::slice::from_raw_parts_mut(fds, n as usize) };
        let deadline =
            (timeout >= 0).then(|| Instant::now() + Duration::from_millis(timeout as u64));
        poll_mixed(fds, deadline, None)
    })
}

#[no_mangle]
pub unsafe extern "C" fn ppoll(
    fds: *mut pollfd,
    n: nfds_t,
    ts: *const libc::timespec,
    sigmask: *const libc::sigset_t,
) -> c_int {
    if fds.is_null() || n == 0 || !any_lstack(fds, n) {
        crate::wait::flush_pending();
        // SAFETY: forwarding.
        return unsafe { (real().ppoll)(fds, n, ts, sigmask) };
    }
    guarded("ppoll", || {
        // SAFETY: the caller's array and timespec.
        let (fds, ts) = unsafe { (std::slice::from_raw_parts_mut(fds, n as usize), ts.as_ref()) };
        let deadline = ts.map(|t| {
            Instant::now()
                + Duration::new(
                    t.tv_sec.max(0) as u64,
                    t.tv_nsec.clamp(0, 999_999_999) as u32,
                )
        });
        poll_mixed(fds, deadline, (!sigmask.is_null()).then_some(sigmask))
    })
}

fn any_lstack(fds: *const pollfd, n: nfds_t) -> bool {
    // SAFETY: the caller's array of n pollfds.
    let fds = unsafe { std::slice::from_raw_parts(fds, n as usize) };
    fds.iter()
        .any(|p| lookup(p.fd).is_some_and(|f| !matches!(f.kind, Kind::Fresh { .. })))
}

/// `select` in terms of `poll_mixed`.
fn select_mixed(
    nfds: c_int,
    rd: *mut libc::fd_set,
    wr: *mut libc::fd_set,
    ex: *mut libc::fd_set,
    deadline: Option<Instant>,
    sigmask: Option<*const libc::sigset_t>,
) -> c_int {
    let mut fds = Vec::new();
    for fd in 0..nfds.min(libc::FD_SETSIZE as c_int) {
        let mut events = 0;
        // SAFETY: FD_ISSET on the caller's (non-null) sets.
        unsafe {
            if !rd.is_null() && libc::FD_ISSET(fd, rd) {
                events |= libc::POLLIN;
            }
            if !wr.is_null() && libc::FD_ISSET(fd, wr) {
                events |= libc::POLLOUT;
            }
            if !ex.is_null() && libc::FD_ISSET(fd, ex) {
                events |= libc::POLLPRI;
            }
        }
        if events != 0 {
            fds.push(pollfd {
                fd,
                events,
                revents: 0,
            });
        }
    }
    let r = poll_mixed(&mut fds, deadline, sigmask);
    if r < 0 {
        return r;
    }
    let mut count = 0;
    // SAFETY: clearing and setting bits of the caller's sets.
    unsafe {
        for set in [rd, wr, ex] {
            if !set.is_null() {
                libc::FD_ZERO(set);
            }
        }
        for p in &fds {
            if p.revents & libc::POLLNVAL != 0 {
                return fail(libc::EBADF);
            }
            if !rd.is_null()
                && p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
                && p.events & libc::POLLIN != 0
            {
                libc::FD_SET(p.fd, rd);
                count += 1;
            }
            if !wr.is_null()
                && p.revents & (libc::POLLOUT | libc::POLLERR) != 0
                && p.events & libc::POLLOUT != 0
            {
                libc::FD_SET(p.fd, wr);
                count += 1;
            }
            if !ex.is_null() && p.revents & libc::POLLPRI != 0 {
                libc::FD_SET(p.fd, ex);
                count += 1;
            }
        }
    }
    count
}

fn sets_have_lstack(nfds: c_int, sets: [*mut libc::fd_set; 3]) -> bool {
    (0..nfds.min(libc::FD_SETSIZE as c_int)).any(|fd| {
        // SAFETY: FD_ISSET on the caller's non-null sets.
        sets.iter()
            .any(|s| !s.is_null() && unsafe { libc::FD_ISSET(fd, *s) })
            && lookup(fd).is_some_and(|f| !matches!(f.kind, Kind::Fresh { .. }))
    })
}

#[no_mangle]
pub unsafe extern "C" fn select(
    nfds: c_int,
    rd: *mut libc::fd_set,
    wr: *mut libc::fd_set,
    ex: *mut libc::fd_set,
    tv: *mut libc::timeval,
) -> c_int {
    if !sets_have_lstack(nfds, [rd, wr, ex]) {
        crate::wait::flush_pending();
        // SAFETY: forwarding.
        return unsafe { (real().select)(nfds, rd, wr, ex, tv) };
    }
    guarded("select", || {
        // SAFETY: the caller's timeval, if any.
        let deadline = unsafe { tv.as_ref() }.map(|t| {
            Instant::now()
                + Duration::new(
                    t.tv_sec.max(0) as u64,
                    (t.tv_usec.clamp(0, 999_999) * 1000) as u32,
                )
        });
        select_mixed(nfds, rd, wr, ex, deadline, None)
    })
}

#[no_mangle]
pub unsafe extern "C" fn pselect(
    nfds: c_int,
    rd: *mut libc::fd_set,
    wr: *mut libc::fd_set,
    ex: *mut libc::fd_set,
    ts: *const libc::timespec,
    sigmask: *const libc::sigset_t,
) -> c_int {
    guarded("pselect", || {
        // SAFETY: the caller's timespec, if any.
        let deadline = unsafe { ts.as_ref() }.map(|t| {
            Instant::now()
                + Duration::new(
                    t.tv_sec.max(0) as u64,
                    t.tv_nsec.clamp(0, 999_999_999) as u32,
                )
        });
        select_mixed(
            nfds,
            rd,
            wr,
            ex,
            deadline,
            (!sigmask.is_null()).then_some(sigmask),
        )
    })
}
