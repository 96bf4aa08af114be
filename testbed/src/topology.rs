//! The peer host: a network namespace on the far end of a veth pair.
//!
//! ```text
//!   root namespace                     namespace `ns` (the peer host)
//!  ┌──────────────────────────┐       ┌─────────────────────────────────────┐
//!  │ DPDK net_af_packet ──────┤ veth  ├── peer_if  peer_ip4/24, peer_ip6/64  │
//!  │ on host_if (no address,  ├───────┤                                     │
//!  │ MAC = stack_mac)         │       │   remote0 (veth)  remote_ip4/24,    │
//!  └──────────────────────────┘       │                   remote_ip6/64     │
//!                                     └─────────────────────────────────────┘
//! ```
//!
//! The stack behind `host_if` uses `stack_ip4` with the peer as its gateway; kernel
//! servers bound to `remote_ip4` are then "another subnet, through the gateway". The
//! peer owns both addresses, so nothing has to be forwarded.
//!
//! # The kernel twin
//!
//! With [`TopologyOptions::kernel_twin`], the topology also builds a second, purely
//! kernel copy of the same network ([`KernelTwin`]), for tests that compare what a
//! program observes on lstack with what it observes on the Linux kernel:
//!
//! ```text
//!   namespace `twin.app_ns`            namespace `twin.peer_ns` (a second peer host)
//!  ┌──────────────────────────┐       ┌─────────────────────────────────────┐
//!  │ app_if  stack_ip4/24,    │ veth  ├── peer_if  peer_ip4/24, peer_ip6/64  │
//!  │         stack_ip6/64,    ├───────┤                                     │
//!  │ MAC = stack_mac,         │       │   remote0 (veth)  remote_ip4/24,    │
//!  │ default routes via peer  │       │                   remote_ip6/64     │
//!  └──────────────────────────┘       └─────────────────────────────────────┘
//! ```
//!
//! A program run with [`KernelTwin::app_cmd`] sees exactly what the stack sees (its
//! own address `stack_ip4`/`stack_ip6` on a /24 and /64 with the peer as gateway), and
//! a program run with [`KernelTwin::peer_cmd`] sees exactly what a program in the main
//! peer namespace sees (same addresses, same interface names, same remote subnet).
//!
//! The twin's app side lives in its own namespace, not in the root namespace, on
//! purpose: the root namespace must never carry `stack_ip4` (rule: nothing in the root
//! namespace gets an address), and while a DPDK stack uses that address on `host_if`
//! in the same test process, a kernel route to the same subnet in the root namespace
//! would capture the traffic of programs that are meant to go through lstack. Both
//! twin namespaces and their veth are separate from the main topology, so the main
//! peer and the twin peer can run the same servers on the same addresses and ports at
//! the same time. The twin's veth never enters the root namespace: it is created
//! inside `app_ns` with its other end directly in `peer_ns`, and disappears with them.
//!
//! Every resource is registered for removal as soon as it exists, so a topology that
//! fails half way through [`Topology::new`] cleans up as well as a finished one.

use std::fs;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::mac::MacAddr;
use crate::process::{command_line, run_checked, wait_tcp_listening, ChildGuard};

/// Where `ip netns` keeps its namespace handles.
const NETNS_RUN_DIR: &str = "/run/netns";
/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;
/// Name hint used when the caller gives none (or none with usable characters).
const DEFAULT_HINT: &str = "tb";
/// The interface carrying the remote addresses, inside the namespace.
const REMOTE_IF: &str = "remote0";
/// The other end of [`REMOTE_IF`]'s veth pair, also inside the namespace.
const REMOTE_PEER_IF: &str = "remote0p";
/// Suffix of a kernel twin's app namespace name, after the topology's.
const TWIN_APP_SUFFIX: &str = "-tapp";
/// Suffix of a kernel twin's peer namespace name, after the topology's.
const TWIN_PEER_SUFFIX: &str = "-tpeer";

/// Topologies created by this process so far; part of every name.
static TOPOLOGY_COUNTER: AtomicU32 = AtomicU32::new(0);

/// How to build a [`Topology`]. `TopologyOptions::default()` gives the documented
/// addresses and a single veth pair.
#[derive(Clone, Debug)]
pub struct TopologyOptions {
    /// Short tag for the namespace and interface names (lower-case letters and digits
    /// are kept, at most 12; interface names keep only the first 2). Default `"tb"`.
    pub name_hint: String,
    /// Additional veth pairs, without addresses, for tests that need several ports
    /// (bonding). Their peer ends are up inside the namespace.
    pub extra_links: usize,
    /// Add permanent neighbour entries in the peer for `stack_ip4`/`stack_ip6` ->
    /// `stack_mac`, so the peer never has to resolve the stack's address.
    pub static_neighbour: bool,
    /// The peer's address on `peer_if` (the stack's gateway). Default 10.88.0.1.
    pub peer_ip4: Ipv4Addr,
    /// The address the stack is meant to use. Default 10.88.0.2.
    pub stack_ip4: Ipv4Addr,
    /// Prefix length of the IPv4 subnets. Default 24.
    pub prefix4: u8,
    /// An address of the peer on another subnet, on `remote0`. Default 10.89.0.1.
    pub remote_ip4: Ipv4Addr,
    /// The peer's IPv6 address on `peer_if`. Default fd00:88::1.
    pub peer_ip6: Ipv6Addr,
    /// The IPv6 address the stack is meant to use. Default fd00:88::2.
    pub stack_ip6: Ipv6Addr,
    /// Prefix length of the IPv6 subnets. Default 64.
    pub prefix6: u8,
    /// An IPv6 address of the peer on another subnet. Default fd00:89::1.
    pub remote_ip6: Ipv6Addr,
    /// MTU of both veth ends. Default 1500.
    pub mtu: u32,
    /// Also build a [`KernelTwin`]: a kernel "app" namespace holding `stack_ip4` and
    /// `stack_ip6`, joined by its own veth to a second peer namespace set up like the
    /// main one (see the module documentation). Default `false`.
    pub kernel_twin: bool,
}

impl Default for TopologyOptions {
    fn default() -> Self {
        TopologyOptions {
            name_hint: DEFAULT_HINT.to_owned(),
            extra_links: 0,
            static_neighbour: false,
            peer_ip4: Ipv4Addr::new(10, 88, 0, 1),
            stack_ip4: Ipv4Addr::new(10, 88, 0, 2),
            prefix4: 24,
            remote_ip4: Ipv4Addr::new(10, 89, 0, 1),
            peer_ip6: Ipv6Addr::new(0xfd00, 0x88, 0, 0, 0, 0, 0, 1),
            stack_ip6: Ipv6Addr::new(0xfd00, 0x88, 0, 0, 0, 0, 0, 2),
            prefix6: 64,
            remote_ip6: Ipv6Addr::new(0xfd00, 0x89, 0, 0, 0, 0, 0, 1),
            mtu: 1500,
            kernel_twin: false,
        }
    }
}

/// One veth pair: `host_if` in the root namespace, `peer_if` in the topology's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// The root-namespace end, for a DPDK `net_af_packet` vdev.
    pub host_if: String,
    /// The end inside the namespace.
    pub peer_if: String,
}

/// A peer host in its own network namespace, linked to the root namespace by a veth
/// pair. Dropping it kills whatever still runs in the namespace and removes the
/// namespace and its veths.
#[derive(Debug)]
pub struct Topology {
    /// Name of the network namespace (`ip netns`), unique per process and topology.
    pub ns: String,
    /// Root-namespace end of the main veth: no address, MAC `stack_mac`, up.
    pub host_if: String,
    /// Namespace end of the main veth, carrying `peer_ip4` and `peer_ip6`.
    pub peer_if: String,
    /// Interface in the namespace carrying `remote_ip4` and `remote_ip6`: one end of a
    /// veth pair that stays in the namespace (the test kernels have no `dummy` driver).
    pub remote_if: String,
    /// MAC address of `host_if`, which a DPDK port on it reports as its own.
    pub stack_mac: MacAddr,
    /// The peer's address on the veth: the stack's gateway.
    pub peer_ip4: Ipv4Addr,
    /// The address the stack should use.
    pub stack_ip4: Ipv4Addr,
    /// Prefix length of the IPv4 subnets.
    pub prefix4: u8,
    /// A peer address on another subnet (on `remote_if`), reached through the gateway.
    pub remote_ip4: Ipv4Addr,
    /// The peer's IPv6 address on the veth.
    pub peer_ip6: Ipv6Addr,
    /// The IPv6 address the stack should use.
    pub stack_ip6: Ipv6Addr,
    /// Prefix length of the IPv6 subnets.
    pub prefix6: u8,
    /// A peer IPv6 address on another subnet.
    pub remote_ip6: Ipv6Addr,
    /// The additional veth pairs asked for with [`TopologyOptions::extra_links`].
    pub extra_links: Vec<Link>,
    /// The kernel copy of this network, when asked for with
    /// [`TopologyOptions::kernel_twin`].
    pub kernel_twin: Option<KernelTwin>,
    cleanup: Cleanup,
}

/// A kernel-only copy of a topology: a namespace standing in for the stack's host
/// (`app_ns`, holding `stack_ip4`/`stack_ip6` on `app_if`) joined by a veth pair to a
/// second peer namespace (`peer_ns`, set up exactly like [`Topology::ns`]). Built with
/// [`TopologyOptions::kernel_twin`]; removed with its topology.
///
/// The interfaces carry the same names as the main link (`app_if` is named like
/// `host_if`, `peer_if` like the main `peer_if`, plus `remote0`): they live in other
/// namespaces, so the names cannot collide, and a program in the twin sees the same
/// interface names as its counterpart on the main topology.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelTwin {
    /// The namespace standing in for the stack's host: `<ns>-tapp`.
    pub app_ns: String,
    /// The second peer host: `<ns>-tpeer`.
    pub peer_ns: String,
    /// The app end of the twin veth, in `app_ns`: `stack_ip4`, `stack_ip6`, MAC
    /// `stack_mac`, default routes via the peer.
    pub app_if: String,
    /// The peer end of the twin veth, in `peer_ns`: `peer_ip4`, `peer_ip6`.
    pub peer_if: String,
}

impl KernelTwin {
    /// A command running `program` in the twin's app namespace
    /// (`ip netns exec <app_ns> program`): where a plain kernel program stands in for
    /// one running on lstack.
    pub fn app_cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.app_ns]).arg(program);
        cmd
    }

    /// A command running `program` in the twin's peer namespace
    /// (`ip netns exec <peer_ns> program`).
    pub fn peer_cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.peer_ns]).arg(program);
        cmd
    }

    /// Runs `args` (program first) in the twin's app namespace to completion; fails,
    /// with the command line and its output, when it exits unsuccessfully.
    pub fn run_app<I, S>(&self, args: I) -> anyhow::Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut args = args.into_iter();
        let program = args.next().context("KernelTwin::run_app needs a program")?;
        run_checked(self.app_cmd(program).args(args))
    }

    /// Runs `args` (program first) in the twin's peer namespace to completion.
    pub fn run_peer<I, S>(&self, args: I) -> anyhow::Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut args = args.into_iter();
        let program = args
            .next()
            .context("KernelTwin::run_peer needs a program")?;
        run_checked(self.peer_cmd(program).args(args))
    }
}

impl Topology {
    /// Creates the namespace, veth pair(s) and addresses described by `opts`.
    ///
    /// Needs root. Removes leftovers of crashed earlier runs with the same hint first
    /// (see [`cleanup_stale`]).
    pub fn new(opts: TopologyOptions) -> anyhow::Result<Topology> {
        let hint = sanitize_hint(&opts.name_hint);
        let pid = std::process::id();
        let serial = TOPOLOGY_COUNTER.fetch_add(1, Ordering::Relaxed);
        let names = Names { hint, pid, serial };
        let ns = names.netns();
        let main = names.link(0)?;
        let extra = (1..=opts.extra_links)
            .map(|i| names.link(i))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let stack_mac = MacAddr::local(u64::from(pid) << 16 | u64::from(serial & 0xffff));

        if let Err(e) = cleanup_stale(&names.hint) {
            tracing::warn!("removing leftovers of earlier runs failed: {e:#}");
        }
        require_ethtool()?;

        let mut cleanup = Cleanup::default();
        remove_leftover_netns(&ns)?;
        ip(&format!("netns add {ns}")).with_context(|| format!("creating namespace {ns}"))?;
        cleanup.push(Resource::Netns(ns.clone()));
        ip(&format!("-n {ns} link set lo up"))?;

        for (i, link) in std::iter::once(&main).chain(&extra).enumerate() {
            create_link(
                &mut cleanup,
                &ns,
                link,
                opts.mtu,
                (i == 0).then_some(stack_mac),
            )
            .with_context(|| {
                format!(
                    "creating veth {} <-> {} (in {ns})",
                    link.host_if, link.peer_if
                )
            })?;
        }

        configure_peer(&ns, &main.peer_if, &opts, stack_mac)?;

        let kernel_twin = if opts.kernel_twin {
            Some(
                create_twin(&mut cleanup, &ns, &main, &opts, stack_mac)
                    .context("creating the kernel twin")?,
            )
        } else {
            None
        };

        tracing::info!(ns = %ns, host_if = %main.host_if, peer_if = %main.peer_if, "topology up");
        Ok(Topology {
            ns,
            host_if: main.host_if,
            peer_if: main.peer_if,
            remote_if: REMOTE_IF.to_owned(),
            stack_mac,
            peer_ip4: opts.peer_ip4,
            stack_ip4: opts.stack_ip4,
            prefix4: opts.prefix4,
            remote_ip4: opts.remote_ip4,
            peer_ip6: opts.peer_ip6,
            stack_ip6: opts.stack_ip6,
            prefix6: opts.prefix6,
            remote_ip6: opts.remote_ip6,
            extra_links: extra,
            kernel_twin,
            cleanup,
        })
    }

    /// The main veth pair.
    pub fn link(&self) -> Link {
        Link {
            host_if: self.host_if.clone(),
            peer_if: self.peer_if.clone(),
        }
    }

    /// The MAC address of `host_if`, read from sysfs (equal to `stack_mac`).
    pub fn host_mac(&self) -> anyhow::Result<MacAddr> {
        let path = format!("/sys/class/net/{}/address", self.host_if);
        fs::read_to_string(&path)
            .with_context(|| format!("reading {path}"))?
            .parse()
    }

    /// The MAC address of `peer_if`, read with `ip -o link` in the namespace.
    pub fn peer_mac(&self) -> anyhow::Result<MacAddr> {
        let out = ip(&format!("-n {} -o link show dev {}", self.ns, self.peer_if))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mac = text
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .with_context(|| format!("no link/ether in `ip -o link` output: {text}"))?;
        mac.parse()
    }

    /// A command running `program` inside the namespace (`ip netns exec <ns> program`).
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns]).arg(program);
        cmd
    }

    /// Runs `args` (program first) inside the namespace to completion; fails, with the
    /// command line and its output, when it exits unsuccessfully.
    pub fn run<I, S>(&self, args: I) -> anyhow::Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut args = args.into_iter();
        let program = args
            .next()
            .context("Topology::run needs at least a program name")?;
        let mut cmd = self.cmd(program);
        cmd.args(args);
        run_checked(&mut cmd)
    }

    /// Starts `cmd`, which must come from [`Topology::cmd`], and returns a guard that
    /// kills it when dropped. Set stdout/stderr to `Stdio::piped()` to capture them.
    pub fn spawn(&self, cmd: &mut Command) -> anyhow::Result<ChildGuard> {
        let args: Vec<_> = cmd.get_args().take(3).collect();
        if cmd.get_program() != "ip" || args != ["netns", "exec", self.ns.as_str()] {
            bail!(
                "Topology::spawn: `{}` was not built with Topology::cmd, so it would not \
                 run inside namespace {}",
                command_line(cmd),
                self.ns
            );
        }
        ChildGuard::spawn(cmd)
    }

    /// Waits until something listens on TCP `port` inside the namespace (see
    /// [`wait_tcp_listening`]).
    pub fn wait_tcp_listening(&self, port: u16, timeout: Duration) -> anyhow::Result<()> {
        wait_tcp_listening(&self.ns, port, timeout)
    }

    /// Waits until a kernel client in the namespace can open a TCP connection to `to`
    /// (and closes it at once): the way to know that `server`, a stack-side server, is
    /// serving. Fails with the server's output if it exits first or `timeout` passes.
    pub fn wait_connectable(
        &self,
        to: SocketAddr,
        server: &mut ChildGuard,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let attempt = Duration::from_millis(300);
            if self.in_netns(|| TcpStream::connect_timeout(&to, attempt).is_ok())? {
                return Ok(());
            }
            if let Some(status) = server.try_wait()? {
                let (stdout, stderr) = server.final_output();
                bail!(
                    "the server exited ({status}) before {to} accepted connections\n\
                     stdout: {stdout}\nstderr: {stderr}"
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{to} accepted no connection within {timeout:?}\nstderr: {}",
                    server.stderr_so_far()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `f` on a new thread that has entered the namespace, and returns its result.
    ///
    /// Sockets created there stay in the namespace: this is how a test binds a kernel
    /// listener in the peer without any external program.
    pub fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        in_namespace(&self.ns, f)
    }

    /// The processes running inside the namespace. A child started with
    /// [`Topology::cmd`] shows up here only once `ip netns exec` has entered it.
    pub fn pids(&self) -> anyhow::Result<Vec<u32>> {
        netns_pids(&self.ns)
    }

    /// Tears the topology down now, reporting failures (dropping it does the same and
    /// only logs them).
    pub fn teardown(mut self) -> anyhow::Result<()> {
        self.cleanup.run()
    }
}

/// The parts every name of one topology is made of.
struct Names {
    hint: String,
    pid: u32,
    serial: u32,
}

impl Names {
    /// `<hint>-<pid>-<serial>`: namespace names have no length limit worth worrying about.
    fn netns(&self) -> String {
        format!("{}-{}-{}", self.hint, self.pid, self.serial)
    }

    /// Veth names `<hint[..2]><pid hex>x<serial hex>{h,p}<index hex>`, at most 15 bytes.
    fn link(&self, index: usize) -> anyhow::Result<Link> {
        let short = &self.hint[..self.hint.len().min(2)];
        let name = |role: char| format!("{short}{:x}x{:x}{role}{index:x}", self.pid, self.serial);
        let link = Link {
            host_if: name('h'),
            peer_if: name('p'),
        };
        if link.host_if.len() > IFNAME_MAX {
            bail!(
                "interface name {} is longer than {IFNAME_MAX} bytes (pid {}, topology #{}, \
                 link #{index}): use fewer extra links or topologies per process",
                link.host_if,
                self.pid,
                self.serial
            );
        }
        Ok(link)
    }
}

/// Keeps lower-case ASCII letters and digits of `hint`, at most 12; `"tb"` if none.
fn sanitize_hint(hint: &str) -> String {
    let clean: String = hint
        .chars()
        .filter_map(|c| {
            let c = c.to_ascii_lowercase();
            (c.is_ascii_lowercase() || c.is_ascii_digit()).then_some(c)
        })
        .take(12)
        .collect();
    if clean.is_empty() {
        DEFAULT_HINT.to_owned()
    } else {
        clean
    }
}

/// The pid in a namespace name made by [`Names::netns`] with `hint`.
/// Kernel twin namespaces (`<hint>-<pid>-<serial>-tapp`/`-tpeer`) count too.
fn netns_owner(hint: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(hint)?.strip_prefix('-')?;
    let (pid, serial) = rest.split_once('-')?;
    let serial = [TWIN_APP_SUFFIX, TWIN_PEER_SUFFIX]
        .iter()
        .find_map(|suffix| serial.strip_suffix(suffix))
        .unwrap_or(serial);
    serial.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// The pid in an interface name made by [`Names::link`] with `hint`.
fn link_owner(hint: &str, name: &str) -> Option<u32> {
    let short = &hint[..hint.len().min(2)];
    let (pid, rest) = name.strip_prefix(short)?.split_once('x')?;
    let (serial, index) = rest.split_once(['h', 'p'])?;
    let is_hex = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit());
    if !(is_hex(serial) && is_hex(index)) {
        return None;
    }
    u32::from_str_radix(pid, 16).ok()
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Runs `f` on a new thread that has entered the network namespace `ns` (an
/// `ip netns` name), and returns its result. Sockets created there stay in `ns`.
pub fn in_namespace<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    let path = netns_path(ns);
    let handle = fs::File::open(&path).with_context(|| format!("opening {path:?}"))?;
    thread::scope(|scope| {
        scope
            .spawn(move || {
                nix::sched::setns(&handle, CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("entering namespace {path:?}"))?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn netns_path(ns: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(ns)
}

/// Removes namespaces and veths left by earlier runs with name hint `prefix` whose
/// process no longer exists (a test that crashed or was killed before its drop ran).
/// Returns how many were removed.
pub fn cleanup_stale(prefix: &str) -> anyhow::Result<usize> {
    let hint = sanitize_hint(prefix);
    let mut removed = 0;
    let mut errors = Vec::new();

    match fs::read_dir(NETNS_RUN_DIR) {
        Ok(entries) => {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if netns_owner(&hint, &name).is_some_and(|pid| !pid_alive(pid)) {
                    tracing::info!(ns = %name, "removing stale namespace");
                    match delete_netns(&name) {
                        Ok(()) => removed += 1,
                        Err(e) => errors.push(e),
                    }
                }
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => errors.push(anyhow::Error::new(e).context(format!("listing {NETNS_RUN_DIR}"))),
    }

    let links = fs::read_dir("/sys/class/net").context("listing /sys/class/net")?;
    for entry in links.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if link_owner(&hint, &name).is_some_and(|pid| !pid_alive(pid)) {
            tracing::info!(link = %name, "removing stale veth");
            match delete_link(&name) {
                Ok(()) => removed += 1,
                Err(e) => errors.push(e),
            }
        }
    }

    if errors.is_empty() {
        Ok(removed)
    } else {
        bail!("removing stale test resources: {}", join_errors(&errors))
    }
}

/// A namespace with this exact name can only be a leftover of a dead process whose pid
/// we now have: remove it rather than fail on "File exists".
fn remove_leftover_netns(ns: &str) -> anyhow::Result<()> {
    if netns_path(ns).exists() {
        tracing::warn!(ns, "namespace already exists (pid reuse?): removing it");
        delete_netns(ns)?;
    }
    Ok(())
}

/// An interface index for the host end of a veth pair (see [`create_link`]): above
/// the small sequential ones the kernel hands out, with random high bits and random
/// low 16 bits that no other link of this process has had.
///
/// DPDK's af_packet PMD joins the fanout group `(pid ^ ifindex) & 0xffff`. A process
/// opening several of our links (ltran's bond ports) gets distinct groups because the
/// low bits differ; two DPDK processes on two links collide only if the XOR of their
/// pids equals the XOR of the links' low bits. Low bits that counted up from one
/// random start made that XOR tiny, like that of two sequential pids: two children
/// started one after the other on two topologies of one test collided often. Random
/// low bits make it 1 in 65536, whatever the pids.
fn host_ifindex() -> u32 {
    static USED: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut used = USED.lock().unwrap_or_else(|e| e.into_inner());
    let low = loop {
        let low = fastrand::u16(..);
        if !used.contains(&low) || used.len() >= 1 << 15 {
            break low;
        }
    };
    used.push(low);
    // 2..245 << 16: from 131072 to just under 16 million.
    (fastrand::u32(2..245) << 16) | u32::from(low)
}

/// Creates one veth pair with its peer end inside `ns`, registering it for cleanup at
/// once, and configures both ends (MTU, offloads, up; `mac` on the host end if given).
fn create_link(
    cleanup: &mut Cleanup,
    ns: &str,
    link: &Link,
    mtu: u32,
    mac: Option<MacAddr>,
) -> anyhow::Result<()> {
    let (host, peer) = (link.host_if.as_str(), link.peer_if.as_str());
    if Path::new("/sys/class/net").join(host).exists() {
        tracing::warn!(host, "interface already exists (pid reuse?): removing it");
        delete_link(host)?;
    }
    // Creating the peer directly in the namespace leaves no moment where it sits,
    // unowned, in the root namespace.
    //
    // The host end gets an index from `host_ifindex`. DPDK's af_packet PMD joins its
    // sockets to the fanout group `(pid ^ ifindex) & 0xffff`, and fanout groups are
    // per network namespace: two DPDK processes on different host ends whose pid and
    // ifindex happen to XOR to the same group fail with EINVAL ("could not set
    // PACKET_FANOUT"). Random low bits make that a 1 in 65536 chance.
    let mut index = host_ifindex();
    let mut attempt = 0;
    loop {
        match ip(&format!(
            "link add {host} index {index} type veth peer name {peer} netns {ns}"
        )) {
            Ok(_) => break,
            // Most likely the index is taken: draw another.
            Err(e) if attempt < 8 && !Path::new("/sys/class/net").join(host).exists() => {
                tracing::debug!(host, index, "creating the link failed, retrying: {e:#}");
                // Other high bits, the same low ones.
                index = (index & 0xffff) | (fastrand::u32(2..245) << 16);
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
    cleanup.push(Resource::Link(host.to_owned()));

    // host_if belongs to DPDK: the root namespace's kernel must stay silent on it (no
    // IPv6 link-local address, router solicitations or MLD reports for the stack to
    // receive) and must neither answer ARP nor forward what arrives on it.
    let conf = |family: &str, knob: &str| format!("/proc/sys/net/{family}/conf/{host}/{knob}");
    set_sysctl(&conf("ipv6", "disable_ipv6"), "1", true)?;
    set_sysctl(&conf("ipv4", "forwarding"), "0", false)?;
    set_sysctl(&conf("ipv4", "arp_ignore"), "8", false)?;
    if let Some(mac) = mac {
        ip(&format!("link set {host} address {mac}"))?;
    }
    ip(&format!("link set {host} mtu {mtu} up"))?;
    ethtool_off(None, host, &["tx", "rx", "tso", "gso", "gro", "lro"])?;

    // The peer's link-local address would otherwise stay tentative for a second of
    // duplicate address detection after it comes up.
    sysctl_in(ns, &format!("net.ipv6.conf.{peer}.accept_dad=0"))?;
    ip(&format!("-n {ns} link set {peer} mtu {mtu} up"))?;
    // The kernel peer must send complete frames with real checksums: a raw-socket
    // user-space stack sees neither partial checksums nor GSO super-frames fixed up.
    ethtool_off(Some(ns), peer, &["tx", "tso", "gso", "gro"])?;
    Ok(())
}

/// Gives the peer end `peer_if` in namespace `ns` the peer's addresses, adds the
/// `remote0` interface with the remote addresses, turns on forwarding and, if asked
/// for, the static neighbour entries for the stack's addresses.
fn configure_peer(
    ns: &str,
    peer: &str,
    opts: &TopologyOptions,
    stack_mac: MacAddr,
) -> anyhow::Result<()> {
    let (p4, p6) = (opts.prefix4, opts.prefix6);
    ip(&format!(
        "-n {ns} addr add {}/{p4} dev {peer}",
        opts.peer_ip4
    ))?;
    ip(&format!(
        "-n {ns} addr add {}/{p6} dev {peer} nodad",
        opts.peer_ip6
    ))?;

    // The kernels this runs on have no `dummy` driver (and cannot load modules), so
    // the remote addresses sit on one end of a veth pair that never leaves the
    // namespace; with both ends up it has carrier, like a dummy.
    ip(&format!(
        "-n {ns} link add {REMOTE_IF} type veth peer name {REMOTE_PEER_IF}"
    ))?;
    ip(&format!(
        "-n {ns} addr add {}/{p4} dev {REMOTE_IF}",
        opts.remote_ip4
    ))?;
    ip(&format!(
        "-n {ns} addr add {}/{p6} dev {REMOTE_IF} nodad",
        opts.remote_ip6
    ))?;
    ip(&format!("-n {ns} link set {REMOTE_PEER_IF} up"))?;
    ip(&format!("-n {ns} link set {REMOTE_IF} up"))?;

    // Not needed (the peer owns the remote addresses itself), but it makes the peer
    // a router in every sense, should a test add routes behind it.
    sysctl_in(ns, "net.ipv4.ip_forward=1")?;

    if opts.static_neighbour {
        for addr in [opts.stack_ip4.to_string(), opts.stack_ip6.to_string()] {
            ip(&format!(
                "-n {ns} neigh replace {addr} lladdr {stack_mac} dev {peer} nud permanent"
            ))?;
        }
    }
    Ok(())
}

/// Builds the [`KernelTwin`] of topology `ns`: namespaces `<ns>-tapp` and
/// `<ns>-tpeer` (each registered for removal at once), a veth created inside the app
/// namespace with its other end directly in the peer namespace (so it never touches
/// the root namespace), the stack's addresses and MAC on the app end with default
/// routes via the peer, and the peer end configured like the main peer.
fn create_twin(
    cleanup: &mut Cleanup,
    ns: &str,
    main: &Link,
    opts: &TopologyOptions,
    stack_mac: MacAddr,
) -> anyhow::Result<KernelTwin> {
    let twin = KernelTwin {
        app_ns: format!("{ns}{TWIN_APP_SUFFIX}"),
        peer_ns: format!("{ns}{TWIN_PEER_SUFFIX}"),
        app_if: main.host_if.clone(),
        peer_if: main.peer_if.clone(),
    };
    let (app_ns, peer_ns) = (twin.app_ns.as_str(), twin.peer_ns.as_str());
    let (app, peer) = (twin.app_if.as_str(), twin.peer_if.as_str());
    for name in [app_ns, peer_ns] {
        remove_leftover_netns(name)?;
        ip(&format!("netns add {name}")).with_context(|| format!("creating namespace {name}"))?;
        cleanup.push(Resource::Netns(name.to_owned()));
        ip(&format!("-n {name} link set lo up"))?;
    }
    ip(&format!(
        "-n {app_ns} link add {app} type veth peer name {peer} netns {peer_ns}"
    ))?;
    ip(&format!("-n {app_ns} link set {app} address {stack_mac}"))?;
    // No duplicate address detection: addresses usable at once, as on the stack.
    sysctl_in(app_ns, &format!("net.ipv6.conf.{app}.accept_dad=0"))?;
    sysctl_in(peer_ns, &format!("net.ipv6.conf.{peer}.accept_dad=0"))?;
    ip(&format!("-n {app_ns} link set {app} mtu {} up", opts.mtu))?;
    ip(&format!("-n {peer_ns} link set {peer} mtu {} up", opts.mtu))?;
    // The same offloads off as on the main peer: the twin peer sends the same frames.
    ethtool_off(Some(peer_ns), peer, &["tx", "tso", "gso", "gro"])?;

    let (p4, p6) = (opts.prefix4, opts.prefix6);
    ip(&format!(
        "-n {app_ns} addr add {}/{p4} dev {app}",
        opts.stack_ip4
    ))?;
    ip(&format!(
        "-n {app_ns} addr add {}/{p6} dev {app} nodad",
        opts.stack_ip6
    ))?;
    // The stack's gateway is the peer: so is the twin app's.
    ip(&format!(
        "-n {app_ns} route add default via {} dev {app}",
        opts.peer_ip4
    ))?;
    ip(&format!(
        "-n {app_ns} -6 route add default via {} dev {app}",
        opts.peer_ip6
    ))?;

    configure_peer(peer_ns, peer, opts, stack_mac)?;
    tracing::info!(app_ns, peer_ns, "kernel twin up");
    Ok(twin)
}

/// Writes a sysctl of the root namespace; a missing file is fine when `optional`
/// (IPv6 disabled on the kernel command line, for example).
fn set_sysctl(path: &str, value: &str, optional: bool) -> anyhow::Result<()> {
    match fs::write(path, value) {
        Err(e) if optional && e.kind() == ErrorKind::NotFound => Ok(()),
        other => other.with_context(|| format!("writing {value} to {path}")),
    }
}

/// Fails with an installation hint unless `ethtool` can be run.
fn require_ethtool() -> anyhow::Result<()> {
    match Command::new("ethtool").arg("--version").output() {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => bail!(
            "ethtool is not installed, and without it the kernel peer sends partial \
             checksums and GSO frames the stack cannot take: apt-get install ethtool"
        ),
        Err(e) => Err(e).context("running `ethtool --version`"),
    }
}

/// `ethtool -K <iface> <feature> off...`, in namespace `ns` if given. Features the
/// device cannot change ("Could not change any device features") are not an error.
fn ethtool_off(ns: Option<&str>, iface: &str, features: &[&str]) -> anyhow::Result<()> {
    let mut cmd = match ns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns, "ethtool"]);
            cmd
        }
        None => Command::new("ethtool"),
    };
    cmd.args(["-K", iface]);
    for feature in features {
        cmd.args([feature, "off"]);
    }
    let line = command_line(&cmd);
    let output = cmd
        .output()
        .with_context(|| format!("could not start `{line}`"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() && !stderr.contains("Could not change") {
        bail!("`{line}` failed ({})\n{stdout}{stderr}", output.status);
    }
    if stdout.contains("[requested off]") || stderr.contains("Could not change") {
        tracing::warn!(iface, "some offloads stay on: {stdout}{stderr}");
    }
    Ok(())
}

/// Runs `ip <args>` in the root namespace (`-n <ns>` reaches into one). `args` is split
/// on whitespace: every name and address used here is free of it.
fn ip(args: &str) -> anyhow::Result<Output> {
    run_checked(Command::new("ip").args(args.split_whitespace()))
}

/// Sets `key=value` with `sysctl -w` inside namespace `ns`.
fn sysctl_in(ns: &str, setting: &str) -> anyhow::Result<()> {
    run_checked(Command::new("ip").args(["netns", "exec", ns, "sysctl", "-q", "-w", setting]))
        .map(drop)
}

/// Something a topology created, to be removed when it goes away.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resource {
    /// A named network namespace.
    Netns(String),
    /// A veth, by its root-namespace end (deleting one end deletes the pair).
    Link(String),
}

/// Created resources, removed in reverse order of creation when dropped.
#[derive(Debug, Default)]
struct Cleanup(Vec<Resource>);

/// Every namespace and link of this process's topologies not removed yet.
/// A topology kept in a `static` (shared by a test file's tests) is never
/// dropped: these are removed when the process exits instead, so a test run
/// leaves nothing behind.
static LIVE: std::sync::Mutex<Vec<Resource>> = std::sync::Mutex::new(Vec::new());

extern "C" fn remove_live_at_exit() {
    let Ok(mut live) = LIVE.try_lock() else {
        return;
    };
    let mut rest = Cleanup(std::mem::take(&mut *live));
    drop(live);
    if let Err(e) = rest.run() {
        eprintln!("netns-testbed: at exit: {e:#}");
    }
}

impl Cleanup {
    /// Records `r` for removal, on drop or at the latest when the process
    /// exits.
    fn push(&mut self, r: Resource) {
        static AT_EXIT: std::sync::Once = std::sync::Once::new();
        AT_EXIT.call_once(|| {
            // SAFETY: registers a plain function with no captured state.
            #[allow(unsafe_code)]
            unsafe {
                libc::atexit(remove_live_at_exit)
            };
        });
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(r.clone());
        self.0.push(r);
    }

    /// Removes every resource, continuing past failures, and reports them all.
    fn run(&mut self) -> anyhow::Result<()> {
        let mut errors = Vec::new();
        while let Some(resource) = self.0.pop() {
            LIVE.lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|r| *r != resource);
            let result = match &resource {
                Resource::Netns(ns) => delete_netns(ns),
                Resource::Link(link) => delete_link(link),
            };
            if let Err(e) = result {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("tearing down the topology: {}", join_errors(&errors))
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Err(e) = self.run() {
            tracing::error!("{e:#}");
            eprintln!("netns-testbed: {e:#}");
        }
    }
}

/// Kills every process in namespace `ns`, then deletes it. Already gone is fine.
fn delete_netns(ns: &str) -> anyhow::Result<()> {
    if !netns_path(ns).exists() {
        return Ok(());
    }
    // A process still on its way in (`ip netns exec` between open and setns) escapes
    // this; it then runs on in a namespace nobody can reach until it exits.
    for pid in netns_pids(ns)? {
        tracing::debug!(ns, pid, "killing process left in namespace");
        if let Ok(pid) = i32::try_from(pid) {
            // ESRCH: it exited meanwhile.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    ip(&format!("netns del {ns}")).with_context(|| format!("deleting namespace {ns}"))?;
    Ok(())
}

/// The processes in namespace `ns` (`ip netns pids`).
fn netns_pids(ns: &str) -> anyhow::Result<Vec<u32>> {
    let out = ip(&format!("netns pids {ns}"))
        .with_context(|| format!("listing processes in namespace {ns}"))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// Deletes a link of the root namespace. Already gone (with its namespace) is fine.
fn delete_link(name: &str) -> anyhow::Result<()> {
    if !Path::new("/sys/class/net").join(name).exists() {
        return Ok(());
    }
    match ip(&format!("link del {name}")) {
        Err(_) if !Path::new("/sys/class/net").join(name).exists() => Ok(()),
        other => other
            .map(drop)
            .with_context(|| format!("deleting link {name}")),
    }
}

fn join_errors(errors: &[anyhow::Error]) -> String {
    errors
        .iter()
        .map(|e| format!("{e:#}"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_is_sanitized() {
        assert_eq!(sanitize_hint("Bond_Test-1"), "bondtest1");
        assert_eq!(sanitize_hint("___"), "tb");
        assert_eq!(sanitize_hint("averyveryverylonghint"), "averyveryver");
    }

    #[test]
    fn names_fit_and_parse_back() {
        let names = Names {
            hint: "bond".into(),
            pid: 4_194_303, // the largest pid Linux hands out
            serial: 0xfff,
        };
        let link = names.link(15).unwrap();
        assert_eq!(link.host_if, "bo3fffffxfffhf");
        assert_eq!(link.peer_if, "bo3fffffxfffpf");
        assert!(link.host_if.len() <= IFNAME_MAX);
        assert_eq!(link_owner("bond", &link.host_if), Some(4_194_303));
        assert_eq!(link_owner("bond", &link.peer_if), Some(4_194_303));
        assert_eq!(names.netns(), "bond-4194303-4095");
        assert_eq!(netns_owner("bond", &names.netns()), Some(4_194_303));
        for suffix in [TWIN_APP_SUFFIX, TWIN_PEER_SUFFIX] {
            let twin = format!("{}{suffix}", names.netns());
            assert_eq!(netns_owner("bond", &twin), Some(4_194_303), "{twin}");
        }
    }

    #[test]
    fn too_long_names_are_an_error() {
        let names = Names {
            hint: "tb".into(),
            pid: 4_194_303,
            serial: 0xffff_ffff,
        };
        assert!(names.link(0).is_err());
    }

    #[test]
    fn foreign_names_have_no_owner() {
        for name in [
            "eth0", "tb", "tbx", "tb12x", "tb12x3q0", "tb12x3h", "tb1gx3h0",
        ] {
            assert_eq!(link_owner("tb", name), None, "{name}");
        }
        for name in [
            "tb",
            "tb-1",
            "tb-x-1",
            "tbx-1-2",
            "other-1-2",
            "tb-1-2-tother",
            "tb-1-tapp",
        ] {
            assert_eq!(netns_owner("tb", name), None, "{name}");
        }
    }
}
