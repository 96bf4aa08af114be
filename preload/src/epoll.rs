//! epoll over a mix of kernel and lstack descriptors.
//!
//! An epoll instance is the kernel's: kernel descriptors are added to it as
//! usual. lstack descriptors are kept beside it in an [`EpollSet`]: each
//! interest has a waker that puts the descriptor on the set's ready list and
//! signals an eventfd when the socket's readiness changes. `epoll_wait`
//! reports lstack descriptors from the ready list (re-checking their real
//! readiness; level-triggered ones stay listed while ready, edge-triggered
//! and one-shot ones as epoll(7) says), adds the kernel's events, and sleeps
//! in a private epoll holding both the application's epoll and the eventfd.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, OnceLock, Weak,
    },
    task::{Wake, Waker},
    time::{Duration, Instant},
};

use arc_swap::ArcSwapOption;
use libc::{c_int, epoll_event};

use crate::{
    fail,
    file::{table, File, Kind},
    guarded, lookup,
    real::real,
    wait::poll_timeout,
};

struct Interest {
    events: u32,
    data: u64,
    file: Arc<File>,
    waker: Waker,
    disabled: bool,
}

/// The lstack side of one epoll instance.
pub struct EpollSet {
    epfd: c_int,
    /// Private epoll: the application's epoll plus `efd`.
    waiter: c_int,
    efd: c_int,
    signaled: AtomicBool,
    interests: Mutex<HashMap<c_int, Interest>>,
    ready: Mutex<HashSet<c_int>>,
}

impl std::fmt::Debug for EpollSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EpollSet(epfd {})", self.epfd)
    }
}

struct FdWake {
    set: Weak<EpollSet>,
    fd: c_int,
}

impl Wake for FdWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(set) = self.set.upgrade() {
            set.mark_ready(self.fd);
        }
    }
}

impl EpollSet {
    /// The lstack side of epoll `epfd`; `Err(errno)` if `epfd` is not an
    /// epoll instance (as `epoll_ctl` would say).
    fn new(epfd: c_int) -> Result<Arc<Self>, i32> {
        let last = || {
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL)
        };
        // SAFETY: creating our own descriptors; adding the application's epoll
        // into a private one is allowed (epoll instances nest).
        unsafe {
            let efd = (real().eventfd)(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC);
            if efd < 0 {
                return Err(last());
            }
            // Removing a descriptor that was never added: an epoll answers
            // ENOENT, anything else EINVAL or EBADF.
            let mut probe = epoll_event { events: 0, u64: 0 };
            if (real().epoll_ctl)(epfd, libc::EPOLL_CTL_DEL, efd, &mut probe) == 0
                || last() != libc::ENOENT
            {
                let e = last();
                (real().close)(efd);
                return Err(if e == libc::ENOENT { libc::EINVAL } else { e });
            }
            let waiter = (real().epoll_create1)(libc::EPOLL_CLOEXEC);
            if waiter < 0 {
                let e = last();
                (real().close)(efd);
                return Err(e);
            }
            for fd in [epfd, efd] {
                let mut ev = epoll_event {
                    events: libc::EPOLLIN as u32,
                    u64: fd as u64,
                };
                if (real().epoll_ctl)(waiter, libc::EPOLL_CTL_ADD, fd, &mut ev) < 0 {
                    let e = last();
                    (real().close)(efd);
                    (real().close)(waiter);
                    return Err(e);
                }
            }
            Ok(Arc::new(Self {
                epfd,
                waiter,
                efd,
                signaled: AtomicBool::new(false),
                interests: Mutex::new(HashMap::new()),
                ready: Mutex::new(HashSet::new()),
            }))
        }
    }

    fn mark_ready(&self, fd: c_int) {
        self.ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fd);
        if !self.signaled.swap(true, Ordering::SeqCst) {
            let one: u64 = 1;
            // SAFETY: 8-byte write to our eventfd.
            unsafe { (real().write)(self.efd, (&one as *const u64).cast(), 8) };
        }
    }

    /// Fills `out` with ready lstack events; returns how many.
    fn collect(&self, out: &mut [epoll_event]) -> usize {
        let candidates: Vec<c_int> = {
            let mut r = self.ready.lock().unwrap_or_else(|e| e.into_inner());
            if r.is_empty() {
                return 0;
            }
            r.drain().collect()
        };
        let mut keep = Vec::new();
        let mut n = 0;
        let mut interests = self.interests.lock().unwrap_or_else(|e| e.into_inner());
        for fd in candidates {
            let Some(i) = interests.get_mut(&fd) else {
                continue;
            };
            if i.disabled {
                continue;
            }
            let interest = lstack_core::Interest {
                read: i.events & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLPRI) as u32 != 0,
                write: i.events & libc::EPOLLOUT as u32 != 0,
            };
            let Some(r) = i.file.poll_readiness(&i.waker, interest) else {
                continue;
            };
            let mut mask = 0u32;
            if r.readable {
                mask |= (libc::EPOLLIN | libc::EPOLLRDNORM) as u32;
            }
            if r.writable {
                mask |= (libc::EPOLLOUT | libc::EPOLLWRNORM) as u32;
            }
            if r.read_closed {
                mask |= libc::EPOLLRDHUP as u32;
            }
            let always = (libc::EPOLLHUP | libc::EPOLLERR) as u32;
            if r.hangup {
                mask |= libc::EPOLLHUP as u32;
            }
            if r.error {
                mask |= libc::EPOLLERR as u32;
            }
            mask &= i.events | always;
            if mask == 0 {
                continue;
            }
            if n == out.len() {
                keep.push(fd);
                continue;
            }
            out[n] = epoll_event {
                events: mask,
                u64: i.data,
            };
            n += 1;
            if i.events & libc::EPOLLONESHOT as u32 != 0 {
                i.disabled = true;
            } else if i.events & libc::EPOLLET as u32 == 0 {
                // Level-triggered: report again while it stays ready.
                keep.push(fd);
            }
        }
        drop(interests);
        if !keep.is_empty() {
            self.ready
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(keep);
        }
        n
    }
}

impl Drop for EpollSet {
    fn drop(&mut self) {
        // SAFETY: closing our own descriptors.
        unsafe {
            (real().close)(self.waiter);
            (real().close)(self.efd);
        }
    }
}

fn sets() -> &'static [ArcSwapOption<EpollSet>] {
    static SETS: OnceLock<Box<[ArcSwapOption<EpollSet>]>> = OnceLock::new();
    SETS.get_or_init(|| (0..table().len()).map(|_| ArcSwapOption::empty()).collect())
}

fn set_of(epfd: c_int) -> Option<Arc<EpollSet>> {
    sets().get(usize::try_from(epfd).ok()?)?.load_full()
}

/// Takes a closed lstack descriptor out of every epoll it was added to.
pub fn closed(fd: c_int, file: &Arc<File>) {
    let watchers = std::mem::take(&mut *file.watchers.lock().unwrap_or_else(|e| e.into_inner()));
    tracing::debug!(fd, watchers = watchers.len(), "closed");
    for set in watchers.iter().filter_map(std::sync::Weak::upgrade) {
        let mut interests = set.interests.lock().unwrap_or_else(|e| e.into_inner());
        if interests
            .get(&fd)
            .is_some_and(|i| Arc::ptr_eq(&i.file, file))
        {
            interests.remove(&fd);
        }
    }
}

/// Drops the lstack side of `fd` if it was an epoll instance (on close).
pub fn forget(fd: c_int) {
    if let Some(slot) = usize::try_from(fd).ok().and_then(|i| sets().get(i)) {
        if slot.load().is_some() {
            slot.store(None);
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn epoll_ctl(
    epfd: c_int,
    op: c_int,
    fd: c_int,
    ev: *mut epoll_event,
) -> c_int {
    let Some(file) = lookup(fd).filter(|f| !matches!(f.kind, Kind::Fresh { .. })) else {
        // SAFETY: forwarding.
        return unsafe { (real().epoll_ctl)(epfd, op, fd, ev) };
    };
    guarded("epoll_ctl", || {
        if epfd == fd {
            return fail(libc::EINVAL);
        }
        let set = match set_of(epfd) {
            Some(s) => s,
            None => {
                let s = match EpollSet::new(epfd) {
                    Ok(s) => s,
                    Err(e) => return fail(e),
                };
                let slot = &sets()[epfd as usize];
                slot.store(Some(Arc::clone(&s)));
                s
            }
        };
        let ev = if op == libc::EPOLL_CTL_DEL {
            None
        } else if ev.is_null() {
            return fail(libc::EFAULT);
        } else {
            // SAFETY: non-null event from the caller.
            Some(unsafe { *ev })
        };
        if let Kind::Listener { kernel: true, .. } = file.kind {
            // Its kernel socket listens too: the kernel reports that side.
            let mut kev = ev.unwrap_or(epoll_event { events: 0, u64: 0 });
            // SAFETY: forwarding with a valid event.
            unsafe { (real().epoll_ctl)(epfd, op, fd, &mut kev) };
        }
        let mut interests = set.interests.lock().unwrap_or_else(|e| e.into_inner());
        tracing::debug!(
            epfd,
            op,
            fd,
            known = interests.contains_key(&fd),
            "epoll_ctl"
        );
        match (op, ev) {
            (libc::EPOLL_CTL_ADD, Some(ev)) => {
                if interests.contains_key(&fd) {
                    return fail(libc::EEXIST);
                }
                let waker = Waker::from(Arc::new(FdWake {
                    set: Arc::downgrade(&set),
                    fd,
                }));
                file.watchers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Arc::downgrade(&set));
                interests.insert(
                    fd,
                    Interest {
                        events: ev.events,
                        data: ev.u64,
                        file,
                        waker,
                        disabled: false,
                    },
                );
            }
            (libc::EPOLL_CTL_MOD, Some(ev)) => {
                let Some(i) = interests.get_mut(&fd) else {
                    return fail(libc::ENOENT);
                };
                i.events = ev.events;
                i.data = ev.u64;
                i.disabled = false;
                if !Arc::ptr_eq(&i.file, &file) {
                    file.watchers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Arc::downgrade(&set));
                    i.file = file;
                }
            }
            (libc::EPOLL_CTL_DEL, _) => {
                if interests.remove(&fd).is_none() {
                    return fail(libc::ENOENT);
                }
                return 0;
            }
            _ => return fail(libc::EINVAL),
        }
        drop(interests);
        // Check it now: it may already be ready.
        set.mark_ready(fd);
        0
    })
}

fn wait_impl(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout: c_int,
    sigmask: Option<*const libc::sigset_t>,
) -> c_int {
    let Some(set) = set_of(epfd) else {
        // SAFETY: forwarding.
        return unsafe {
            match sigmask {
                Some(m) => (real().epoll_pwait)(epfd, events, max, timeout, m),
                None => (real().epoll_wait)(epfd, events, max, timeout),
            }
        };
    };
    guarded("epoll_wait", || {
        if max <= 0 {
            return fail(libc::EINVAL);
        }
        if events.is_null() {
            return fail(libc::EFAULT);
        }
        // SAFETY: the caller provides room for `max` events.
        let out = unsafe { std::slice::from_raw_parts_mut(events, max as usize) };
        let deadline =
            (timeout >= 0).then(|| Instant::now() + Duration::from_millis(timeout as u64));
        loop {
            crate::wait::drive();
            let mut n = set.collect(out);
            if n < out.len() {
                // SAFETY: the rest of the caller's buffer.
                let k = unsafe {
                    (real().epoll_wait)(epfd, out[n..].as_mut_ptr(), (out.len() - n) as c_int, 0)
                };
                if k > 0 {
                    n += k as usize;
                } else if k < 0 && n == 0 {
                    return -1;
                }
            }
            if n > 0 {
                return n as c_int;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return 0;
            }
            // Arm the eventfd before the last look, so no wakeup is lost.
            set.signaled.store(false, Ordering::SeqCst);
            let mut v: u64 = 0;
            // SAFETY: draining our non-blocking eventfd.
            unsafe { (real().read)(set.efd, (&mut v as *mut u64).cast(), 8) };
            if !set
                .ready
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
            {
                continue;
            }
            if crate::runtime::running().is_some_and(|s| s.run_to_completion()) {
                // Run to completion: sleep where the stack can wake us too
                // (frames, its timers), on the application's epoll and our
                // eventfd (the signal mask is not applied there).
                let mut fds = [set.epfd, set.efd].map(|fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
                if crate::wait::sleep(&mut fds, deadline) < 0 {
                    return -1;
                }
                continue;
            }
            let mut tmp = [epoll_event { events: 0, u64: 0 }; 2];
            // SAFETY: sleeping in our private epoll (with the caller's mask if any).
            let r = unsafe {
                match sigmask {
                    Some(m) => (real().epoll_pwait)(
                        set.waiter,
                        tmp.as_mut_ptr(),
                        2,
                        poll_timeout(deadline),
                        m,
                    ),
                    None => {
                        (real().epoll_wait)(set.waiter, tmp.as_mut_ptr(), 2, poll_timeout(deadline))
                    }
                }
            };
            if r < 0 {
                return -1;
            }
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn epoll_wait(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout: c_int,
) -> c_int {
    wait_impl(epfd, events, max, timeout, None)
}

#[no_mangle]
pub unsafe extern "C" fn epoll_pwait(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout: c_int,
    sigmask: *const libc::sigset_t,
) -> c_int {
    wait_impl(
        epfd,
        events,
        max,
        timeout,
        (!sigmask.is_null()).then_some(sigmask),
    )
}
