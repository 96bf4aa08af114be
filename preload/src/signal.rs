//! Termination signals: send what is queued before the default action kills
//! the process.
//!
//! A kernel socket's queued data and FIN go out after its process dies; an
//! lstack socket's live in the process, so a `SIGTERM`, `SIGINT` or `SIGHUP`
//! whose action is the default (terminate, no `atexit`) would lose them.
//! Once the stack runs, every one of these signals left at `SIG_DFL` gets a
//! handler of ours instead. The handler only writes the signal's number to a
//! pipe; a thread of ours reads it, closes every lstack socket and flushes
//! (as at exit, up to 2 s), then restores `SIG_DFL` and raises the signal
//! again, so the process dies by it exactly as it would have (same exit
//! status to its parent). A second signal during the flush kills at once.
//!
//! The application never sees our handler: `sigaction` and `signal` report
//! `SIG_DFL` (with the flags and mask it gave) where ours stands in, and an
//! application that installs its own handler or `SIG_IGN` simply replaces
//! ours. In a child after `fork` ours is reset to `SIG_DFL` (the child runs
//! on the kernel and has no flushing thread); `exec` resets it anyway.

use std::{
    mem,
    sync::{
        atomic::{AtomicBool, AtomicI32, Ordering},
        Mutex,
    },
};

use libc::{c_int, sighandler_t};

use crate::real::real;

/// The signals whose default action terminates a process that would
/// otherwise have closed its sockets cleanly.
const MANAGED: [c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// Whether ours is installed, per signal of [`MANAGED`].
static OURS: [AtomicBool; 3] = [const { AtomicBool::new(false) }; 3];
/// What the application last set for a signal where ours stands in: its
/// `SIG_DFL` with its own flags and mask, reported back to it.
static APP_VIEW: Mutex<[Option<SigAction>; 3]> = Mutex::new([None; 3]);
/// Whether signal handling is ours (the stack runs in this process).
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The process the handlers belong to (a forked child is another).
static OWNER: AtomicI32 = AtomicI32::new(0);
/// Write end of the pipe to the flushing thread.
static PIPE_W: AtomicI32 = AtomicI32::new(-1);
/// Set by the first signal: a second one kills without waiting.
static FLUSHING: AtomicBool = AtomicBool::new(false);

#[derive(Clone, Copy)]
struct SigAction(libc::sigaction);

impl SigAction {
    fn zeroed() -> Self {
        // SAFETY: sigaction is a plain C struct; all-zero is SIG_DFL, no flags,
        // an empty mask.
        Self(unsafe { mem::zeroed() })
    }

    fn handler(handler: sighandler_t) -> Self {
        let mut a = Self::zeroed();
        a.0.sa_sigaction = handler;
        a
    }
}

fn slot(sig: c_int) -> Option<usize> {
    MANAGED.iter().position(|&s| s == sig)
}

fn real_sigaction(sig: c_int, act: Option<&SigAction>, old: Option<&mut SigAction>) -> c_int {
    let act = act.map_or(std::ptr::null(), |a| &a.0 as *const libc::sigaction);
    let old = old.map_or(std::ptr::null_mut(), |a| &mut a.0 as *mut libc::sigaction);
    // SAFETY: valid or null pointers to sigaction structs.
    unsafe { (real().sigaction)(sig, act, old) }
}

/// Our handler: async-signal-safe (raw syscalls and atomics only).
extern "C" fn on_signal(sig: c_int) {
    // SAFETY: errno of this thread, saved and restored around the handler.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: getpid is async-signal-safe.
    let here = unsafe { libc::getpid() };
    let w = PIPE_W.load(Ordering::Relaxed);
    if here != OWNER.load(Ordering::Relaxed) || w < 0 || FLUSHING.swap(true, Ordering::SeqCst) {
        // Not ours to flush (a forked child), or a second signal: the default
        // action, now. The signal is blocked while we run, so it is taken as
        // soon as this handler returns.
        default_and_raise(sig);
    } else {
        let b = sig as u8;
        // SAFETY: a one-byte write to our pipe; raw syscall, async-signal-safe.
        unsafe { libc::syscall(libc::SYS_write, w, &b as *const u8, 1usize) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

fn default_and_raise(sig: c_int) {
    real_sigaction(sig, Some(&SigAction::handler(libc::SIG_DFL)), None);
    // SAFETY: raise is async-signal-safe.
    unsafe { libc::raise(sig) };
}

/// Takes over the managed signals still at their default action. Called
/// once the stack has started; `flush` closes every socket and sends what is
/// queued.
pub fn install(flush: fn()) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 into a two-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "no pipe for signal handling: SIGTERM/SIGINT/SIGHUP kill without flushing"
        );
        return;
    }
    let r = fds[0];
    let spawned = std::thread::Builder::new()
        .name("lstack-signal".into())
        .spawn(move || flusher(r, flush));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no signal thread: SIGTERM/SIGINT/SIGHUP kill without flushing");
        return;
    }
    PIPE_W.store(fds[1], Ordering::SeqCst);
    // SAFETY: getpid has no preconditions.
    OWNER.store(unsafe { libc::getpid() }, Ordering::SeqCst);
    let mut view = APP_VIEW.lock().unwrap_or_else(|e| e.into_inner());
    for (i, &sig) in MANAGED.iter().enumerate() {
        let mut cur = SigAction::zeroed();
        real_sigaction(sig, None, Some(&mut cur));
        if cur.0.sa_sigaction == libc::SIG_DFL && take_over(sig) {
            view[i] = Some(cur);
        }
    }
    ACTIVE.store(true, Ordering::SeqCst);
}

/// Installs our handler for `sig` (all signals blocked while it runs).
fn take_over(sig: c_int) -> bool {
    let mut ours = SigAction::handler(on_signal as extern "C" fn(c_int) as sighandler_t);
    ours.0.sa_flags = libc::SA_RESTART;
    // SAFETY: filling a sigset_t we own.
    unsafe { libc::sigfillset(&mut ours.0.sa_mask) };
    let ok = real_sigaction(sig, Some(&ours), None) == 0;
    if let Some(i) = slot(sig) {
        OURS[i].store(ok, Ordering::SeqCst);
    }
    ok
}

/// The thread that flushes on a signal, then dies by it.
fn flusher(r: c_int, flush: fn()) {
    let mut b = 0u8;
    loop {
        // SAFETY: one-byte raw read from our pipe into a local.
        let n = unsafe { libc::syscall(libc::SYS_read, r, &mut b as *mut u8, 1usize) };
        if n == 1 {
            break;
        }
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return;
    }
    let sig = c_int::from(b);
    tracing::info!(
        signal = sig,
        "terminating signal: flushing lstack sockets first"
    );
    flush();
    real_sigaction(sig, Some(&SigAction::handler(libc::SIG_DFL)), None);
    // SAFETY: unblocking one signal in this thread's mask, then sending it to
    // the process: the default action ends the whole process.
    unsafe {
        let mut set: libc::sigset_t = mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::kill(libc::getpid(), sig);
    }
    // Only reached if the application blocks the signal in every other
    // thread and the kernel has not delivered it to us yet.
    std::thread::sleep(std::time::Duration::from_secs(1));
    // SAFETY: ending the process as the signal would have.
    unsafe { libc::_exit(128 + sig) };
}

/// In a child after `fork`: the flushing thread did not come along, so the
/// managed signals go back to their default action.
pub fn after_fork_child() {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return;
    }
    for (i, &sig) in MANAGED.iter().enumerate() {
        if OURS[i].swap(false, Ordering::SeqCst) {
            real_sigaction(sig, Some(&SigAction::handler(libc::SIG_DFL)), None);
        }
    }
}

/// `sigaction` as the application sees it.
///
/// # Safety
/// `act` and `old` are null or valid, as for libc's `sigaction`.
pub unsafe fn sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    let Some(i) = slot(sig).filter(|_| ACTIVE.load(Ordering::SeqCst)) else {
        // SAFETY: forwarding the caller's arguments.
        return unsafe { (real().sigaction)(sig, act, old) };
    };
    let mut view = APP_VIEW.lock().unwrap_or_else(|e| e.into_inner());
    let was_ours = OURS[i].load(Ordering::SeqCst);
    let before = view[i];
    let mut previous = SigAction::zeroed();
    // SAFETY: reading a valid sigaction of the caller's.
    let new = unsafe { act.as_ref() }.map(|a| SigAction(*a));
    match new {
        Some(n) if n.0.sa_sigaction == libc::SIG_DFL => {
            if real_sigaction(sig, None, Some(&mut previous)) != 0 || !take_over(sig) {
                return -1;
            }
            view[i] = Some(n);
        }
        Some(n) => {
            if real_sigaction(sig, Some(&n), Some(&mut previous)) != 0 {
                return -1;
            }
            OURS[i].store(false, Ordering::SeqCst);
            view[i] = None;
        }
        None => {
            if real_sigaction(sig, None, Some(&mut previous)) != 0 {
                return -1;
            }
        }
    }
    if !old.is_null() {
        // Where ours stood in: the application's own SIG_DFL.
        let reported = if was_ours {
            before.unwrap_or_else(|| SigAction::handler(libc::SIG_DFL))
        } else {
            previous
        };
        // SAFETY: non-null out-pointer from the caller.
        unsafe { *old = reported.0 };
    }
    0
}

/// `signal` with glibc's (BSD) semantics: the handler stays installed, the
/// signal is blocked while it runs, interrupted calls restart.
///
/// # Safety
/// As libc's `signal`.
pub unsafe fn signal(sig: c_int, handler: sighandler_t) -> sighandler_t {
    if slot(sig).is_none() || !ACTIVE.load(Ordering::SeqCst) {
        // SAFETY: forwarding.
        return unsafe { (real().signal)(sig, handler) };
    }
    let mut act = SigAction::handler(handler);
    act.0.sa_flags = libc::SA_RESTART;
    // SAFETY: a sigset_t we own.
    unsafe { libc::sigaddset(&mut act.0.sa_mask, sig) };
    let mut old = SigAction::zeroed();
    // SAFETY: pointers to our own structs.
    if unsafe { sigaction(sig, &act.0, &mut old.0) } != 0 {
        return libc::SIG_ERR;
    }
    old.0.sa_sigaction
}
