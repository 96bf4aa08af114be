//! Starting the stack inside the application, once, and deciding which
//! process and which sockets it accelerates.

use std::{
    cell::Cell,
    sync::{
        atomic::{AtomicBool, Ordering},
        OnceLock,
    },
};

use lstack_core::{LstackConfig, Stack, StackOptions};

thread_local! {
    /// Set while this thread runs our own code that may call wrapped
    /// functions (stack start-up): those calls go straight to the kernel.
    static BYPASS: Cell<bool> = const { Cell::new(false) };
}

/// Set in a child after `fork`: the stack's threads do not exist there, so
/// every socket call goes to the kernel (as gazelle does).
pub static FORKED: AtomicBool = AtomicBool::new(false);

/// Whether the log level (`LSTACK_LOG`) asks for the one-line summary of
/// kernel-path sockets at exit (info or more).
static SUMMARY_AT_EXIT: AtomicBool = AtomicBool::new(false);

/// The configuration's `udp_enable`: with `false`, UDP sockets stay on the
/// kernel (set once, before the stack exists).
static UDP_ENABLED: AtomicBool = AtomicBool::new(true);

/// Whether UDP sockets may go to lstack (`udp_enable`); meaningful once
/// [`stack`] returned one.
pub fn udp_enabled() -> bool {
    UDP_ENABLED.load(Ordering::Relaxed)
}

/// In a forked child: says once, on stderr, that its IP sockets stay on
/// the kernel (the stack's threads did not come along), so a worker that
/// is not accelerated is never silently so.
pub fn note_forked_socket() {
    static SAID: AtomicBool = AtomicBool::new(false);
    if FORKED.load(Ordering::Relaxed) && !SAID.swap(true, Ordering::Relaxed) {
        let msg = format!(
            "liblstack: pid {} is a forked child of an accelerated process: its sockets \
             stay on the kernel (lstack runs in the parent only)\n",
            std::process::id()
        );
        // SAFETY: write(2) of a valid buffer to stderr.
        unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    }
}

/// Whether calls on this thread must bypass lstack.
pub fn bypassed() -> bool {
    FORKED.load(Ordering::Relaxed) || BYPASS.try_with(Cell::get).unwrap_or(true)
}

struct BypassGuard(bool);

impl BypassGuard {
    fn new() -> Self {
        Self(BYPASS.try_with(|b| b.replace(true)).unwrap_or(true))
    }
}

impl Drop for BypassGuard {
    fn drop(&mut self) {
        let prev = self.0;
        let _ = BYPASS.try_with(|b| b.set(prev));
    }
}

/// The stack of this process, started on first use; `None` when this
/// process is not accelerated or the stack could not start (said once on
/// stderr and in the log: the application then runs on the kernel).
pub fn stack() -> Option<&'static Stack> {
    static STACK: OnceLock<Option<Stack>> = OnceLock::new();
    if bypassed() {
        return None;
    }
    let s = STACK
        .get_or_init(|| {
            let _guard = BypassGuard::new();
            start()
        })
        .as_ref();
    let _ = STACK_FOR_EXIT.set(s);
    s
}

fn process_name() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn start() -> Option<Stack> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LSTACK_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let name = process_name();
    if let Ok(only) = std::env::var("GAZELLE_BIND_PROCNAME") {
        if !only.is_empty() && only != name {
            tracing::info!(process = %name, GAZELLE_BIND_PROCNAME = %only, "not accelerated");
            return None;
        }
    }
    let config = match LstackConfig::load_from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("liblstack: {name}: not accelerated: {e}");
            tracing::error!(error = %e, "lstack configuration refused");
            return None;
        }
    };
    UDP_ENABLED.store(config.udp_enable, Ordering::Relaxed);
    SUMMARY_AT_EXIT.store(tracing::enabled!(tracing::Level::INFO), Ordering::Relaxed);
    if !config.udp_enable {
        tracing::info!("udp_enable = 0: every UDP socket stays on the kernel");
    }
    match Stack::start(&config, StackOptions::for_config(&config)) {
        Ok(s) => {
            tracing::info!(process = %name, "lstack started");
            // SAFETY: registering a plain extern "C" function.
            unsafe { libc::atexit(at_exit) };
            crate::signal::install(flush_before_exit);
            Some(s)
        }
        Err(e) => {
            eprintln!("liblstack: {name}: not accelerated: starting lstack: {e}");
            tracing::error!(error = %e, "lstack could not start");
            None
        }
    }
}

/// At exit, close every lstack socket as the kernel closes a dying process's
/// descriptors, and give the stack a moment to send what is still queued and
/// the FINs: its threads die with the process.
extern "C" fn at_exit() {
    if FORKED.load(Ordering::Relaxed) {
        return;
    }
    if let Some(Some(stack)) = STACK_FOR_EXIT.get() {
        let kernel = stack.kernel_sockets();
        if SUMMARY_AT_EXIT.load(Ordering::Relaxed) && !kernel.is_empty() {
            let reasons: Vec<String> = kernel.iter().map(|(k, n)| format!("{k} {n}")).collect();
            // Not through tracing: its thread-locals may be gone at exit.
            let msg = format!(
                "liblstack: pid {}: sockets left on the kernel: {} (gazellectl lstack show counts them while it runs)\n",
                std::process::id(),
                reasons.join(", ")
            );
            // SAFETY: write(2) of a valid buffer to stderr.
            unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
        }
    }
    let _ = std::panic::catch_unwind(flush_before_exit);
}

/// Closes every lstack socket and waits (up to 2 s) until what they queued
/// and their FINs are sent: at exit, and before a terminating signal's
/// default action.
fn flush_before_exit() {
    let Some(Some(stack)) = STACK_FOR_EXIT.get() else {
        return;
    };
    crate::file::table().close_all();
    if !stack.flush(std::time::Duration::from_secs(2)) {
        tracing::warn!("exiting with TCP data or FINs still unsent");
    }
}

/// The stack, for `at_exit` (which must not start one).
static STACK_FOR_EXIT: OnceLock<Option<&'static Stack>> = OnceLock::new();
