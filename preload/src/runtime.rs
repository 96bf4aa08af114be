//! Starting the stack inside the application, once, and deciding which
//! process and which sockets it accelerates.

use std::{
    cell::Cell,
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering},
        OnceLock,
    },
};

use lstack_core::{KernelPath, LstackConfig, Stack, StackOptions};

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
/// kernel (set once, with the plan).
static UDP_ENABLED: AtomicBool = AtomicBool::new(true);

/// Whether UDP sockets may go to lstack (`udp_enable`); meaningful once
/// [`plan`] returned one.
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
            "liblstack: pid {} is a forked child of a process whose lstack runs: its sockets \
             stay on the kernel (lstack runs in the parent only)\n",
            std::process::id()
        );
        // SAFETY: write(2) of a valid buffer to stderr.
        unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    }
}

/// A listener was made before the stack started.
static LISTENED_BEFORE_START: AtomicBool = AtomicBool::new(false);

/// Notes that a listener waits for the stack to start.
pub fn listened_before_start() {
    LISTENED_BEFORE_START.store(true, Ordering::Relaxed);
}

/// Before `setuid` and its kin: a process with listeners waiting for its
/// stack starts it now, with the privileges it has (opening the NIC, the
/// hugepages, the run directory), as nginx's workers need.
pub fn before_privilege_drop() {
    if LISTENED_BEFORE_START.load(Ordering::Relaxed) && running().is_none() {
        let _ = stack();
    }
}

/// The standalone address lock's descriptor (-1: none).
static LOCK_FD: AtomicI32 = AtomicI32::new(-1);

/// In a child forked after its parent's stack started: drops its copy of
/// the address lock (the parent keeps it) and says on stderr what became of
/// the `orphans` lstack sockets it inherited.
pub fn after_fork_child(orphans: usize, handed: usize) {
    let fd = LOCK_FD.swap(-1, Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: closing our own descriptor (the parent's lock stays).
        unsafe { (crate::real::real().close)(fd) };
    }
    if orphans == 0 {
        return;
    }
    let msg = format!(
        "liblstack: pid {} was forked after lstack started in its parent: its {orphans} \
         other inherited lstack socket(s) are closed here (connections read end of file, \
         listeners get no connections); {handed} connection(s) pass to it when the parent \
         closes them, carried by the parent's stack. Servers keep the fast path in forked \
         workers when they listen, then fork, before using the listeners\n",
        std::process::id()
    );
    // SAFETY: write(2) of a valid buffer to stderr.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
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

/// What the configuration says about this process, read once without
/// starting anything: whether it is accelerated, and the stack's addresses.
/// Sockets are sorted onto the lstack or the kernel path with it, so a
/// process can create, bind and listen on sockets before its stack runs.
#[derive(Debug)]
pub struct Plan {
    config: LstackConfig,
    /// The stack's options, the control socket's path among them: read
    /// with the environment as the process started (`GAZELLE_RUN_DIR`),
    /// since servers clear theirs before the stack starts (nginx does).
    opts: StackOptions,
    /// The run directory (`GAZELLE_RUN_DIR`), for the NIC's lock.
    run_dir: std::path::PathBuf,
    /// The stack's on-link subnets: (address, prefix length).
    subnets: Vec<(IpAddr, u8)>,
}

impl Plan {
    /// Whether `ip` is one of the stack's addresses (IPv6 link-local
    /// addresses are the running stack's to say).
    pub fn owns_addr(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => a == self.config.host_addr,
            IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80 => {
                stack().is_some_and(|s| s.owns_addr(ip))
            }
            IpAddr::V6(a) => self.config.host_addr6.is_some_and(|c| c.addr() == a),
        }
    }

    /// Whether `ip` is on one of the stack's subnets.
    pub fn on_link(&self, ip: IpAddr) -> bool {
        self.subnets
            .iter()
            .any(|&(net, len)| lstack_core::same_prefix(net, ip, len))
    }
}

/// This process's plan: `None` when it is not accelerated
/// (`GAZELLE_BIND_PROCNAME` names another process, or the configuration is
/// refused: said once on stderr and in the log).
pub fn plan() -> Option<&'static Plan> {
    static PLAN: OnceLock<Option<Plan>> = OnceLock::new();
    if bypassed() {
        return None;
    }
    PLAN.get_or_init(|| {
        let _guard = BypassGuard::new();
        load_plan()
    })
    .as_ref()
}

static STACK: OnceLock<Option<Stack>> = OnceLock::new();

/// The stack of this process if it runs already (never starts one).
pub fn running() -> Option<&'static Stack> {
    if bypassed() {
        return None;
    }
    STACK.get().and_then(Option::as_ref)
}

/// The stack of this process, started on first use; `None` when this
/// process is not accelerated or the stack could not start (said once on
/// stderr and in the log: the application then runs on the kernel).
///
/// The stack starts when a socket first needs it (a connect, an accept, a
/// wait on a listener, a UDP bind), not at `socket`, `bind` or `listen`: a
/// server that listens and then forks its workers (nginx, pre-fork
/// servers) leaves the stack to the workers. When it starts, every
/// listener the process made before is set up on it.
pub fn stack() -> Option<&'static Stack> {
    if bypassed() {
        return None;
    }
    let plan = plan()?;
    let s = STACK
        .get_or_init(|| {
            let _guard = BypassGuard::new();
            start(plan)
        })
        .as_ref();
    let _ = STACK_FOR_EXIT.set(s);
    if let Some(st) = s {
        static LISTENERS: std::sync::Once = std::sync::Once::new();
        LISTENERS.call_once(|| {
            for (why, n) in KernelPath::ALL.iter().zip(&KERNEL_BEFORE_START) {
                for _ in 0..n.swap(0, Ordering::Relaxed) {
                    st.count_kernel_socket(*why);
                }
            }
            crate::file::table().start_listeners(st);
        });
    }
    s
}

/// Sockets kept on the kernel before the stack started, by reason.
static KERNEL_BEFORE_START: [AtomicU64; KernelPath::ALL.len()] =
    [const { AtomicU64::new(0) }; KernelPath::ALL.len()];

/// Counts a socket kept on the kernel, and why (in the stack's counters, or
/// kept until it starts).
pub fn count_kernel_socket(why: KernelPath) {
    if let Some(st) = running() {
        st.count_kernel_socket(why);
    } else if let Some(i) = KernelPath::ALL.iter().position(|&k| k == why) {
        KERNEL_BEFORE_START[i].fetch_add(1, Ordering::Relaxed);
    }
}

fn process_name() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn load_plan() -> Option<Plan> {
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
    // The summary at exit, and the flush of a stack if one runs by then.
    // SAFETY: registering a plain extern "C" function.
    unsafe { libc::atexit(at_exit) };
    let mut subnets = vec![(IpAddr::V4(config.host_addr), config.netmask_prefix_len())];
    if let Some(c) = &config.host_addr6 {
        subnets.push((IpAddr::V6(c.addr()), c.prefix_len()));
    }
    let mut opts = StackOptions::for_config(&config);
    opts.process = Some(crate::fallback::view());
    Some(Plan {
        opts,
        run_dir: gazelle_ctl_proto::paths::run_dir(),
        config,
        subnets,
    })
}

fn start(plan: &Plan) -> Option<Stack> {
    let name = process_name();
    let config = &plan.config;
    // A standalone stack owns its NIC alone: a second process on the same
    // address (a sibling worker, another copy of the server) would see
    // every frame too and answer for the first one's connections.
    let lock = if config.use_ltran {
        None
    } else {
        match claim_address(config, &plan.run_dir) {
            Ok(l) => Some(l),
            Err(why) => {
                eprintln!(
                    "liblstack: {name} (pid {}): not accelerated: {why}",
                    std::process::id()
                );
                tracing::warn!(%why, "lstack not started");
                return None;
            }
        }
    };
    match Stack::start(config, plan.opts.clone()) {
        Ok(s) => {
            tracing::info!(process = %name, "lstack started");
            // Held (open, locked) while the process lives.
            if let Some(l) = lock {
                LOCK_FD.store(std::os::fd::IntoRawFd::into_raw_fd(l), Ordering::Relaxed);
            }
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

/// Whether process `pid` runs and is not exiting (`PF_EXITING` in
/// `/proc/<pid>/stat`'s flags; a zombie or a missing process is not live).
fn process_is_live(pid: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // After the command name in parentheses: state, then fields 4..; the
    // flags are the 9th field, the 7th after the state.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let mut fields = rest.split_whitespace();
    let state = fields.next().unwrap_or("X");
    let flags: u64 = fields.nth(5).and_then(|f| f.parse().ok()).unwrap_or(0);
    const PF_EXITING: u64 = 0x4;
    !matches!(state, "Z" | "X" | "x") && flags & PF_EXITING == 0
}

/// Takes the NIC's lock file in the run directory
/// (`lstack-<address>-<hash of device, EAL arguments, network namespace>.lock`;
/// `flock`, released by the kernel when the process ends, however it
/// ends), writing our pid into it; the error names the process that holds
/// it.
fn claim_address(config: &LstackConfig, dir: &std::path::Path) -> Result<std::fs::File, String> {
    use std::io::{Read, Seek, Write};
    let _ = std::fs::create_dir_all(dir);
    // One NIC: the same device and EAL arguments in the same network
    // namespace (test topologies reuse addresses in namespaces of their own).
    let netns = std::fs::read_link("/proc/self/ns/net").unwrap_or_default();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&(&config.devices, &config.dpdk_args, netns), &mut h);
    let path = dir.join(format!(
        "{}lstack-{}-{:016x}.lock",
        config.unix_prefix,
        config.host_addr,
        std::hash::Hasher::finish(&h)
    ));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // A holder that is exiting (a worker of a server being restarted, or
    // the one that just took the lock and has not written its pid yet) is
    // waited for, up to 5 s; a live one is not.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            break;
        }
        let mut holder = String::new();
        let _ = f.rewind();
        let _ = f.read_to_string(&mut holder);
        let pid = holder.trim().to_owned();
        let live = !pid.is_empty() && process_is_live(&pid);
        if live || std::time::Instant::now() >= until {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            return Err(format!(
                "{} is served by lstack in pid {pid} ({}), and a standalone lstack owns its NIC \
                 alone: its sockets here stay idle (listeners never get a connection). To share \
                 an address between processes (forked workers), run ltran and set use_ltran = 1",
                config.host_addr,
                comm.trim()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = f.set_len(0);
    let _ = f.rewind();
    let _ = writeln!(f, "{}", std::process::id());
    Ok(f)
}

/// At exit, close every lstack socket as the kernel closes a dying process's
/// descriptors, and give the stack a moment to send what is still queued and
/// the FINs: its threads die with the process.
extern "C" fn at_exit() {
    if FORKED.load(Ordering::Relaxed) {
        return;
    }
    let kernel = match STACK.get() {
        Some(Some(stack)) => stack.kernel_sockets(),
        // No stack ran (or none started yet): the counts kept for it.
        _ => KernelPath::ALL
            .iter()
            .zip(&KERNEL_BEFORE_START)
            .map(|(k, n)| (k.name().to_owned(), n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect(),
    };
    if SUMMARY_AT_EXIT.load(Ordering::Relaxed) {
        summary_line(
            "sockets left on the kernel",
            &kernel,
            " (gazellectl lstack show counts them while it runs)",
        );
        summary_line(
            "socket options set but not honoured by lstack",
            &crate::fallback::unhonoured_options(),
            "",
        );
    }
    let _ = std::panic::catch_unwind(flush_before_exit);
}

/// Writes `liblstack: pid N: <what>: name count, ...<tail>` on stderr,
/// unless `counts` is empty; not through tracing, whose thread-locals may be
/// gone at exit.
fn summary_line(what: &str, counts: &std::collections::BTreeMap<String, u64>, tail: &str) {
    if counts.is_empty() {
        return;
    }
    let named: Vec<String> = counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let msg = format!(
        "liblstack: pid {}: {what}: {}{tail}\n",
        std::process::id(),
        named.join(", ")
    );
    // SAFETY: write(2) of a valid buffer to stderr.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
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
    stack.release_kernel_path();
}

/// The stack, for `at_exit` (which must not start one).
static STACK_FOR_EXIT: OnceLock<Option<&'static Stack>> = OnceLock::new();
