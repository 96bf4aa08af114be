//! lstack: a user-space TCP/IP stack (smoltcp) over a DPDK port.
//!
//! Layers, bottom up:
//! - [`device`]: smoltcp's `Device` over DPDK mbufs. Receive parses frames in
//!   place in the mbuf; transmit writes into a fresh mbuf and sends in bursts.
//! - [`vlan`]: with `nic_vlan_mode`, the 802.1Q tag comes off every
//!   received frame before anything else looks at it (or the frame is
//!   dropped) and goes onto every frame sent, by the port or in place.
//! - [`classify`]: the first look at every frame: checks lengths and
//!   checksums, counts and drops bad or foreign frames per [`DropReason`], and
//!   says which thread and socket shard a good one belongs to.
//! - `engine`: the stack threads. One per NIC queue (`num_cpus`, pinned), each
//!   with its own smoltcp `Interface`, TCP sockets sharded by flow hash so a
//!   packet only meets the sockets of its shard, and a listener pool that
//!   gives smoltcp's one-shot listening sockets a real backlog.
//! - `handshake`: handshakes in progress, bounded in number and age, and
//!   the challenge that lets real clients in while a SYN flood fills them.
//! - [`socket`]: the native socket API ([`TcpListener`], [`TcpStream`],
//!   [`UdpSocket`]) that application threads call and the POSIX layer
//!   (`liblstack.so`) builds on.
//! - [`stats`]: per-thread counters for `gazellectl`, the receive-latency
//!   histogram among them.
//! - [`mib`]: MIB-2 counters (IP, ICMP, TCP, UDP), counted from the
//!   classifier's verdicts on ingress and from the frames the stack writes on
//!   egress, since smoltcp keeps none.
//!
//! [`Stack::start`] wires it together from an [`LstackConfig`]: EAL, port,
//! mempool, interfaces, threads.

#![deny(unsafe_code)]

pub mod bond;
pub mod classify;
mod clock;
mod conformance;
mod control;
pub mod device;
mod engine;
pub mod event;
mod handshake;
pub mod kernel;
mod ltran;
pub mod mib;
pub mod ownership;
mod pmtu;
pub mod socket;
pub mod stats;
pub mod vlan;

/// The engine's per-frame policy without DPDK, for the `ingest` fuzz target
/// (see `engine/fuzzing.rs`). Not a stable API.
#[doc(hidden)]
pub use engine::fuzzing;

use std::{
    hash::{BuildHasher, Hasher},
    net::Ipv6Addr,
    sync::{atomic::Ordering, Arc, Mutex},
    thread::JoinHandle,
    time::Duration,
};

pub use classify::DropReason;
use dpdk::{Eal, Mempool, Port, PortConfig, PortStats};
pub use gazelle_config::lstack::{LstackConfig, StackThreadMode};
use smoltcp::{
    iface::{Config as IfaceConfig, Interface},
    wire::{
        EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address, Ipv4Cidr, Ipv6Address,
    },
};
pub use socket::{Interest, Readiness, TcpListener, TcpStream, UdpSocket};
pub use stats::ThreadStats;

use crate::{
    classify::LocalAddrs,
    device::{RxSource, TxPath, TxSink},
    engine::{StackShared, Worker},
};

/// After EAL pinned the calling thread to its main lcore: unless the
/// config asks for that (`main_thread_affinity`), give the application its
/// CPUs back, limited to the NUMA nodes of the stack's CPUs
/// (`app_bind_numa`) and without `app_exclude_cpus`. Threads the
/// application creates later inherit it. A limit that would leave no CPU is
/// not applied (and said in the log).
pub(crate) fn restore_app_affinity(config: &LstackConfig, before: Option<nix::sched::CpuSet>) {
    if config.main_thread_affinity {
        return;
    }
    let Some(before) = before else {
        return;
    };
    let cpus = app_cpus(config, &before);
    let mut set = nix::sched::CpuSet::new();
    for &cpu in &cpus {
        let _ = set.set(cpu);
    }
    let target = if cpus.is_empty() {
        tracing::warn!(
            app_bind_numa = config.app_bind_numa,
            app_exclude_cpus = ?config.app_exclude_cpus.as_ref().map(ToString::to_string),
            "no CPU is left for the application: its affinity is left as it was"
        );
        before
    } else {
        set
    };
    let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &target);
}

/// The CPUs of `before` the application keeps (see
/// [`restore_app_affinity`]).
fn app_cpus(config: &LstackConfig, before: &nix::sched::CpuSet) -> Vec<usize> {
    let nodes: Vec<usize> = config
        .num_cpus
        .as_slice()
        .iter()
        .filter_map(|&c| numa_node_of(c as usize))
        .collect();
    let excluded: &[u16] = config
        .app_exclude_cpus
        .as_ref()
        .map(|l| l.as_slice())
        .unwrap_or(&[]);
    (0..nix::sched::CpuSet::count())
        .filter(|&c| before.is_set(c).unwrap_or(false))
        .filter(|&c| {
            !config.app_bind_numa
                || nodes.is_empty()
                || numa_node_of(c).is_none_or(|n| nodes.contains(&n))
        })
        .filter(|&c| u16::try_from(c).map_or(true, |c| !excluded.contains(&c)))
        .collect()
}

/// The NUMA node of `cpu`, from sysfs (`None` on a kernel without NUMA).
fn numa_node_of(cpu: usize) -> Option<usize> {
    std::fs::read_dir(format!("/sys/devices/system/cpu/cpu{cpu}"))
        .ok()?
        .filter_map(Result::ok)
        .find_map(|e| e.file_name().to_str()?.strip_prefix("node")?.parse().ok())
}

/// Why a TCP or UDP socket of an accelerated process stays on the kernel:
/// every such socket is counted under one of these (no silent fallback),
/// shown by `gazellectl lstack show` and the REST API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelPath {
    /// Connected to a loopback address.
    Loopback,
    /// Connected to an address outside the stack's subnets.
    OffSubnet,
    /// Bound to an address the stack does not have.
    ForeignAddress,
    /// Listening without a port (no `bind`, or port 0): the kernel picks it.
    ListenWithoutBind,
    /// A UDP socket, with `udp_enable = 0`.
    UdpDisabled,
    /// A descriptor number beyond lstack's table.
    DescriptorTableFull,
    /// Accepted by the kernel side of a wildcard listener: a client on
    /// this host (loopback or a kernel address).
    WildcardLocalClient,
}

impl KernelPath {
    /// Every reason, in the order of their counters.
    pub const ALL: [KernelPath; 7] = [
        Self::Loopback,
        Self::OffSubnet,
        Self::ForeignAddress,
        Self::ListenWithoutBind,
        Self::UdpDisabled,
        Self::DescriptorTableFull,
        Self::WildcardLocalClient,
    ];

    /// The reason's name in statistics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Loopback => "loopback",
            Self::OffSubnet => "destination off the stack's subnets",
            Self::ForeignAddress => "bound to an address not on the stack",
            Self::ListenWithoutBind => "listen without a port",
            Self::UdpDisabled => "udp_enable = 0",
            Self::DescriptorTableFull => "descriptor beyond lstack's table",
            Self::WildcardLocalClient => "local client of a wildcard listener",
        }
    }
}

/// Largest TCP receive buffer a socket gets: 65535 << 5 bytes (about
/// 2 MiB), a size [`tcp_rx_buffer_size`] allows.
pub const MAX_TCP_RX_BUFFER: usize = 65535 << 5;

/// The TCP receive buffer a socket gets when `requested` bytes are asked
/// for: within [`MIN_TCP_RX_BUFFER`]..=[`MAX_TCP_RX_BUFFER`], and above
/// 65535 rounded down to 65535 << k.
///
/// The rounding makes a smoltcp 0.14 bug harmless. Its SYN-ACK carries the
/// window unscaled (`min(buffer, 65535)`, as RFC 7323 wants), but it
/// stores that value and reads it back as if scaled, so until it sends its
/// next segment it accepts data up to `65535 << shift` bytes ahead, where
/// `shift` is the smallest with `buffer >> shift <= 65535`. For any other
/// buffer size that is more than the buffer holds: a peer sending past the
/// window it was offered overran the buffer and panicked the stack thread
/// (found by the `ingest` fuzz target; reproducer in `fuzz/regressions/`).
/// With `buffer = 65535 << shift` the window it accepts is exactly the
/// (still empty) buffer. Below 65536 bytes no scaling happens at all.
pub const fn tcp_rx_buffer_size(requested: usize) -> usize {
    let b = if requested < MIN_TCP_RX_BUFFER {
        MIN_TCP_RX_BUFFER
    } else if requested > MAX_TCP_RX_BUFFER {
        MAX_TCP_RX_BUFFER
    } else {
        requested
    };
    if b <= 65535 {
        return b;
    }
    let k = usize::BITS - 1 - (b / 65535).leading_zeros();
    65535 << k
}

/// Smallest TCP receive and send buffers (as Linux's `SOCK_MIN_RCVBUF` and
/// `SOCK_MIN_SNDBUF`).
pub const MIN_TCP_RX_BUFFER: usize = 2304;
/// See [`MIN_TCP_RX_BUFFER`].
pub const MIN_TCP_TX_BUFFER: usize = 4608;
/// Largest TCP send buffer a socket gets.
pub const MAX_TCP_TX_BUFFER: usize = 4 << 20;

/// Buffer sizes an application asked for with `SO_RCVBUF`/`SO_SNDBUF`
/// (`None`: the stack's default). As Linux, the stack doubles the value asked
/// for and keeps it between its minimum and maximum; see
/// [`Stack::tcp_buffer_sizes`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferRequest {
    /// `SO_RCVBUF`, bytes.
    pub rx: Option<usize>,
    /// `SO_SNDBUF`, bytes.
    pub tx: Option<usize>,
}

/// Tunables of the stack that gazelle's `lstack.conf` does not have.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// TCP socket shards per stack thread (see the `engine` docs). More
    /// shards: fewer sockets met per packet, more to scan for timers.
    pub tcp_shards: usize,
    /// Receive buffer of each TCP socket, bytes (as
    /// [`tcp_rx_buffer_size`] rounds it).
    pub tcp_rx_buffer: usize,
    /// Send buffer of each TCP socket, bytes.
    pub tcp_tx_buffer: usize,
    /// Datagrams queued per UDP socket and direction.
    pub udp_packets: usize,
    /// Payload bytes queued per UDP socket and direction.
    pub udp_buffer: usize,
    /// Nagle's algorithm on new sockets (on, as in Linux; `TCP_NODELAY` turns
    /// it off).
    pub nagle: bool,
    /// Delayed-ACK timeout (`None`: acknowledge at once).
    pub ack_delay: Option<Duration>,
    /// Longest sleep of an idle stack thread; it polls flat out while busy.
    pub idle_sleep: Duration,
    /// How long a handshake may stay in SYN-RECEIVED before the stack drops
    /// it (a kernel gives up after its SYN-ACK retries, about a minute).
    pub syn_recv_lifetime: Duration,
    /// Where to serve `gazellectl` (see [`gazelle_ctl_proto::paths`]);
    /// `None`: no control socket.
    pub control_socket: Option<std::path::PathBuf>,
    /// The run directory, where ltran's control socket is
    /// ([`gazelle_ctl_proto::paths::run_dir`] when the options were made:
    /// an application may clear its environment before its stack starts).
    pub run_dir: std::path::PathBuf,
    /// With `nic_vlan_mode`, use the port's VLAN strip and insert offloads
    /// where it has them (default); false tags and untags every frame in
    /// software (see [`vlan`]).
    pub vlan_offload: bool,
    /// What the process around the stack knows and the stack does not (its
    /// kernel-path sockets, options it set that lstack ignores), for
    /// `gazellectl` and the REST API; `None`: nothing to add.
    pub process: Option<ProcessView>,
}

/// The accelerated process's view of its sockets, given to the stack by
/// the layer that intercepts the socket calls (`liblstack.so`).
#[derive(Debug, Clone, Copy)]
pub struct ProcessView {
    /// The TCP and UDP sockets it kept on the kernel, with the reason.
    pub kernel_sockets: fn() -> Vec<gazelle_ctl_proto::Connection>,
    /// Socket options set that lstack does not honour: name, times set.
    pub unhonoured_options: fn() -> std::collections::BTreeMap<String, u64>,
}

impl StackOptions {
    /// Defaults sized for `config`: about 32 connections per shard at
    /// `tcp_conn_count`.
    pub fn for_config(config: &LstackConfig) -> Self {
        let per_thread = (config.tcp_conn_count as usize).div_ceil(config.num_cpus.len().max(1));
        Self {
            tcp_shards: per_thread.div_ceil(32).next_power_of_two().clamp(1, 1024),
            // A kernel's initial receive buffer (tcp_rmem[1]) is 128 KiB.
            tcp_rx_buffer: tcp_rx_buffer_size(128 * 1024),
            tcp_tx_buffer: 64 * 1024,
            udp_packets: 256,
            udp_buffer: 256 * 1024,
            nagle: true,
            ack_delay: Some(Duration::from_millis(10)),
            idle_sleep: Duration::from_micros(200),
            syn_recv_lifetime: Duration::from_secs(60),
            run_dir: gazelle_ctl_proto::paths::run_dir(),
            control_socket: Some(gazelle_ctl_proto::paths::lstack_socket(
                &gazelle_ctl_proto::paths::run_dir(),
                &config.unix_prefix,
                std::net::IpAddr::V4(config.host_addr),
            )),
            vlan_offload: true,
            process: None,
        }
    }
}

/// Why the stack could not start.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] gazelle_config::ConfigError),
    /// A DPDK call failed.
    #[error(transparent)]
    Dpdk(#[from] dpdk::DpdkError),
    /// `use_ltran = 1` and ltran could not be reached or refused us.
    #[error("{0}")]
    Ltran(String),
    /// The kernel interface of the exception path (`kni_switch`,
    /// `flow_bifurcation`) could not be set up.
    #[error("kni_switch/flow_bifurcation: the kernel interface {iface}: {reason}")]
    KernelIface {
        /// Its name.
        iface: String,
        /// What failed.
        reason: String,
    },
    /// DPDK found no port at all.
    #[error("DPDK found no network port: bind a NIC to a DPDK driver or add a virtual device to dpdk_args (e.g. \"--vdev=net_af_packet0,iface=eth1\")")]
    NoPort,
    /// dpdk_args add virtual devices, yet DPDK has no port: their probe failed.
    #[error("DPDK opened none of the virtual devices in dpdk_args ({0}): DPDK's own messages above say why")]
    VdevNotOpened(String),
    /// No port has the MAC address of `devices`.
    #[error("devices = {wanted}: no DPDK port has this MAC address (ports: {available})")]
    PortNotFound {
        /// The configured MAC.
        wanted: String,
        /// The ports found, as `id=mac` pairs.
        available: String,
    },
    /// No port has a MAC address of `bond_slave_mac`.
    #[error("bond_slave_mac: no DPDK port has the MAC address {wanted} (ports: {available})")]
    BondPortNotFound {
        /// The configured MAC.
        wanted: String,
        /// The ports found, as `id=mac` pairs.
        available: String,
    },
    /// The two ports of the bond give different numbers of queue pairs.
    #[error("bond_slave_mac: the ports have {first} and {second} queue pairs; a stack thread needs the same queue of both")]
    BondQueues {
        /// Queue pairs of the first port.
        first: usize,
        /// Queue pairs of the second port.
        second: usize,
    },
    /// A stack thread could not be pinned to its CPU.
    #[error("num_cpus: cannot pin stack thread {thread} to CPU {cpu}: {reason}")]
    Cpu {
        /// Thread index.
        thread: usize,
        /// The CPU from `num_cpus`.
        cpu: u16,
        /// The OS's answer.
        reason: String,
    },
    /// A thread could not be created.
    #[error("starting stack thread: {0}")]
    Thread(#[source] std::io::Error),
    /// `num_cpus` names a CPU this process may not run on.
    #[error("num_cpus = \"{num_cpus}\": CPU {cpu} is not one this process may run on (it may use {allowed})")]
    CpuUnavailable {
        /// The configured list.
        num_cpus: String,
        /// The first CPU of it that is missing.
        cpu: u16,
        /// The CPUs the process's affinity allows, as a list.
        allowed: String,
    },
}

/// The EAL arguments of a standalone lstack: `dpdk_args` after a program
/// name.
fn eal_args(config: &LstackConfig) -> Vec<String> {
    let mut args: Vec<String> = std::iter::once("lstack".to_owned())
        .chain(config.dpdk_args.iter().cloned())
        .chain(kernel_vdev(config))
        .collect();
    if let Some((at, _)) = xdp_bifurcation(config) {
        // Only the index of `dpdk_args` shifts by the program name.
        let prefix = dpdk::cleanup::file_prefix(&args);
        let object = kernel::xdp_object_path(&prefix);
        args[at + 1].push_str(&format!(",xdp_prog={}", object.display()));
    }
    args
}

/// The `net_af_xdp` vdev of `dpdk_args` that `flow_bifurcation` bifurcates
/// with XDP (no tap: the kernel keeps the address on that interface): its
/// index in `dpdk_args` (the argument holding the device spec) and its
/// `iface=`. With `xdp_eth_name`, the vdev on that interface (validation
/// checked there is one); without, the only `net_af_xdp` vdev.
fn xdp_bifurcation(config: &LstackConfig) -> Option<(usize, String)> {
    if config.use_ltran || !config.flow_bifurcation {
        return None;
    }
    let vdevs = gazelle_config::lstack::af_xdp_vdevs(&config.dpdk_args);
    match &config.xdp_eth_name {
        Some(name) => vdevs.into_iter().find(|(_, iface)| iface == name),
        None if vdevs.len() == 1 => vdevs.into_iter().next(),
        None => None,
    }
}

/// The EAL argument that adds the exception path's port, if the config
/// asks for one: `virtio_user` on vhost-net for `flow_bifurcation` where
/// the host has `/dev/vhost-net`, a `net_tap` otherwise. Either carries
/// the stack's MAC (`devices`) and is named [`kernel::IFACE`].
fn kernel_vdev(config: &LstackConfig) -> Option<String> {
    if config.use_ltran
        || !(config.kni_switch || config.flow_bifurcation)
        || xdp_bifurcation(config).is_some()
    {
        return None;
    }
    let queues = config.num_cpus.len().max(1);
    let (iface, mac) = (kernel::IFACE, &config.devices);
    if config.flow_bifurcation && std::path::Path::new("/dev/vhost-net").exists() {
        Some(format!(
            "--vdev={},path=/dev/vhost-net,iface={iface},mac={mac},queues={queues}",
            kernel::VDEV_VIRTIO
        ))
    } else {
        Some(format!(
            "--vdev={},iface={iface},mac={mac}",
            kernel::VDEV_TAP
        ))
    }
}

/// Sets up the kernel's side of the exception path before its port starts:
/// no IPv6 address of its own making (its link-local would be the stack's,
/// from the same MAC) and strict reverse-path filtering (gazelle asks the
/// operator for `rp_filter = 1`; lstack sets it).
fn prepare_kernel_iface() {
    let iface = kernel::IFACE;
    for (path, value) in [
        (
            format!("/proc/sys/net/ipv6/conf/{iface}/addr_gen_mode"),
            "1",
        ),
        (format!("/proc/sys/net/ipv4/conf/{iface}/rp_filter"), "1"),
    ] {
        if let Err(e) = std::fs::write(&path, value) {
            tracing::warn!(%path, error = %e, "cannot set a sysctl of the kernel interface");
        }
    }
    reserve_ephemeral_ports();
}

/// Tells the kernel to leave the stack's ephemeral ports alone
/// (`net.ipv4.ip_local_reserved_ports`, IPv6 too): on a shared address a
/// local port is one side's or the other's, and the kernel would otherwise
/// pick ports from the same range as the stack. Added to what is reserved
/// already; left in place at exit (another stack may share it).
fn reserve_ephemeral_ports() {
    let path = "/proc/sys/net/ipv4/ip_local_reserved_ports";
    let range = engine::EPHEMERAL_SHARED;
    let ours = format!("{}-{}", range.start(), range.end());
    let now = std::fs::read_to_string(path).unwrap_or_default();
    let now = now.trim();
    if now.split(',').any(|r| r == ours) {
        return;
    }
    let value = if now.is_empty() {
        ours
    } else {
        format!("{now},{ours}")
    };
    match std::fs::write(path, &value) {
        Ok(()) => {
            tracing::info!(reserved = %value, "the kernel leaves lstack's ephemeral ports alone")
        }
        Err(e) => tracing::warn!(
            %path,
            error = %e,
            "cannot reserve lstack's ephemeral ports in the kernel: a kernel connection may pick a port lstack owns"
        ),
    }
}

/// Loads the kernel side's eBPF helper ([`kernel::Helper`]), its
/// ownership map pinned under `BPFFS/gazelle/lstack-<file prefix>/`. On a
/// `net_af_packet` port it is required (without its block the kernel would
/// take the NIC's frames as its own too and answer lstack's peers): an
/// error then. Elsewhere the path works without it, less guarded: the
/// reason is kept for `lstack show` and logged.
fn load_kernel_helper(
    config: &LstackConfig,
    port: &Port,
) -> Result<Result<kernel::Helper, String>, StackError> {
    let args = eal_args(config);
    let info = port.info();
    let nic = (info.driver == "net_af_packet")
        .then(|| dpdk::bond::vdev_iface(&args, &info.name))
        .flatten();
    let pin = std::path::Path::new(kernel::BPFFS)
        .join("gazelle")
        .join(format!("lstack-{}", dpdk::cleanup::file_prefix(&args)))
        .join("own");
    let addrs = gazelle_bpf::GuardAddrs {
        ipv4: Some(config.host_addr),
        ipv6: config.host_addr6.as_ref().map(|c| c.addr()),
    };
    match kernel::Helper::load(&pin, addrs, nic.as_deref()) {
        Ok(h) => {
            tracing::info!(pin = %pin.display(), nic = ?nic, "kernel path: eBPF helper loaded");
            Ok(Ok(h))
        }
        Err(e) if nic.is_some() => Err(StackError::KernelIface {
            iface: nic.unwrap_or_default(),
            reason: format!(
                "the eBPF program that keeps the kernel off a net_af_packet port's \
                 interface did not load ({e}); the kernel would answer lstack's peers too"
            ),
        }),
        Err(e) => {
            tracing::warn!(error = %e, "kernel path without its eBPF helper: the kernel's RSTs for lstack's ports are not dropped");
            Ok(Err(e.to_string()))
        }
    }
}

/// Gives the kernel interface the stack's addresses and brings it up
/// (iproute2's `ip`, once at start).
fn configure_kernel_iface(config: &LstackConfig) -> Result<(), StackError> {
    let iface = kernel::IFACE;
    let fail = |reason: String| StackError::KernelIface {
        iface: iface.to_owned(),
        reason,
    };
    let mut commands: Vec<Vec<String>> = vec![vec![
        "addr".into(),
        "replace".into(),
        format!("{}/{}", config.host_addr, config.netmask_prefix_len()),
        "dev".into(),
        iface.into(),
    ]];
    if let Some(c) = &config.host_addr6 {
        commands.push(vec![
            "-6".into(),
            "addr".into(),
            "replace".into(),
            format!("{}/{}", c.addr(), c.prefix_len()),
            "dev".into(),
            iface.into(),
            "nodad".into(),
        ]);
    }
    commands.push(vec!["link".into(), "set".into(), iface.into(), "up".into()]);
    for args in commands {
        let out = std::process::Command::new("ip")
            .args(&args)
            .output()
            .map_err(|e| fail(format!("cannot run `ip` (iproute2): {e}")))?;
        if !out.status.success() {
            return Err(fail(format!(
                "`ip {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    tracing::info!(
        iface,
        ipv4 = %config.host_addr,
        ipv6 = ?config.host_addr6.as_ref().map(|c| c.addr()),
        "the kernel shares the address: what lstack does not own goes to it"
    );
    Ok(())
}

/// Checks, before anything starts, that every CPU of `num_cpus` is one this
/// process may run on (its affinity mask: the machine's CPUs, less what
/// taskset or a cgroup took away).
fn check_cpus(config: &LstackConfig) -> Result<(), StackError> {
    let Ok(allowed) = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) else {
        return Ok(());
    };
    let usable: Vec<usize> = (0..nix::sched::CpuSet::count())
        .filter(|&c| allowed.is_set(c).unwrap_or(false))
        .collect();
    for &cpu in config.num_cpus.as_slice() {
        if !usable.contains(&usize::from(cpu)) {
            return Err(StackError::CpuUnavailable {
                num_cpus: config.num_cpus.to_string(),
                cpu,
                allowed: gazelle_config::value::cpu_ranges(&usable),
            });
        }
    }
    Ok(())
}

/// What the stack runs on: a NIC it owns, or ltran's rings.
struct Backend {
    eal: Eal,
    pool: Arc<Mempool>,
    queues: Vec<(RxSource, TxSink)>,
    ports: Vec<Port>,
    port_id: Option<u16>,
    tx_offload: bool,
    mac: [u8; 6],
    ltran: Option<ltran::LtranLink>,
    vlan: Option<vlan::Vlan>,
    bond: Option<Arc<bond::BondShared>>,
    /// One queue pair per thread on the kernel interface (the exception
    /// path), if the config asks for it.
    kernel: Vec<(dpdk::RxQueue, dpdk::TxQueue)>,
    /// The kernel side's eBPF helper, or why it did not load.
    kernel_helper: Option<Result<kernel::Helper, String>>,
}

/// A running stack: cheap to clone; the threads stop when
/// [`Stack::shutdown`] is called or the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Stack {
    pub(crate) shared: Arc<StackShared>,
    runtime: Arc<Runtime>,
}

#[derive(Debug)]
struct Runtime {
    shared: Arc<StackShared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// The ports the stack opened (two with a bond), closed at shutdown.
    port: Mutex<Vec<Port>>,
    pool: Arc<Mempool>,
    port_id: Option<u16>,
    eal: Eal,
    tx_offload: bool,
    /// The stack's on-link subnets: (address, prefix length).
    subnets: Vec<(std::net::IpAddr, u8)>,
    started: std::time::Instant,
    /// Sockets of the process that stayed on the kernel, by [`KernelPath`].
    kernel_sockets: [std::sync::atomic::AtomicU64; KernelPath::ALL.len()],
    /// The `gazellectl` socket, served while the stack runs.
    control: Mutex<Option<gazelle_ctl_proto::server::Server>>,
    /// The kernel's side of the exception path, if the stack has one.
    kernel_side: Option<kernel::KernelSide>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        stop(&self.shared, &self.threads);
    }
}

fn stop(shared: &StackShared, threads: &Mutex<Vec<JoinHandle<()>>>) {
    shared.shutdown.store(true, Ordering::SeqCst);
    let handles: Vec<_> = threads
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .collect();
    for t in &shared.threads {
        t.mark_dirty(0);
    }
    for h in handles {
        let _ = h.join();
    }
    // Run to completion: the contexts go (each holds the shared state, so
    // keeping them would keep it alive), after a last flush.
    if let Some(rtc) = shared.rtc.get() {
        for c in rtc.contexts.iter() {
            let mut g = c.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(ctx) = g.as_mut() {
                ctx.worker.tx.flush();
            }
            *g = None;
        }
    }
}

impl Stack {
    /// Starts the stack described by `config`: initialises the EAL with
    /// `dpdk_args`, opens the port whose MAC is `devices` (with
    /// `bond_mode = 1`, the two `bond_slave_mac` ports as one bond, see
    /// [`bond`]) with one queue pair per `num_cpus` entry (fewer if the port
    /// has fewer queues), and runs one pinned stack thread per queue pair.
    ///
    /// Everything that can be checked before DPDK is: the configuration and
    /// the CPUs of `num_cpus`. A start that fails after this process's EAL
    /// came up as the primary puts back what the EAL took (its runtime
    /// directory and hugepage files, [`dpdk::cleanup`]), so a failed start
    /// leaves nothing of its `--file-prefix` behind.
    pub fn start(config: &LstackConfig, opts: StackOptions) -> Result<Stack, StackError> {
        config.validate()?;
        check_cpus(config)?;
        let eal_before = dpdk::Eal::is_initialised();
        let started = Self::start_checked(config, opts);
        if started.is_err() && !eal_before && !config.use_ltran && dpdk::Eal::is_initialised() {
            // Every DPDK object of the start is dropped by now.
            let args = eal_args(config);
            dpdk::cleanup::after_failed_start(&args, &dpdk::cleanup::file_prefix(&args));
        }
        started
    }

    fn start_checked(config: &LstackConfig, opts: StackOptions) -> Result<Stack, StackError> {
        let want_threads = config.num_cpus.len() as u16;
        let Backend {
            eal,
            pool,
            queues,
            ports,
            port_id,
            tx_offload,
            mac,
            ltran,
            vlan,
            bond,
            kernel,
            kernel_helper,
        } = if config.use_ltran {
            Self::attach_ltran(config, &opts.run_dir, want_threads)?
        } else if config.bond_mode == gazelle_config::lstack::limits::BOND_MODE_ACTIVE_BACKUP {
            Self::open_bond(config, want_threads)?
        } else {
            Self::open_port(config, want_threads, opts.vlan_offload)?
        };
        if queues.len() < usize::from(want_threads) {
            tracing::warn!(
                num_cpus = %config.num_cpus,
                queues = queues.len(),
                "the port has fewer queue pairs than num_cpus lists: running {} stack thread(s) on the first CPU(s)",
                queues.len()
            );
        }
        let mac = EthernetAddress(mac);

        let ipv4: Ipv4Address = config.host_addr;
        let prefix = config.netmask_prefix_len();
        let v4cidr = Ipv4Cidr::new(ipv4, prefix);
        let local = LocalAddrs {
            mac,
            ipv4: Some(ipv4),
            ipv4_broadcast: v4cidr.broadcast(),
            ipv6: config.host_addr6.as_ref().map(|c| c.addr()),
            ipv6_link_local: Some(link_local(mac)),
        };
        let seed = random_seed();
        let opts_threads = queues.len();
        let mut stack_shared = StackShared::new(
            opts_threads,
            opts,
            local,
            config.tcp_conn_count as usize,
            seed,
        );
        stack_shared.arrival_placement = ltran.is_some();
        stack_shared.udp_limit = config.udp_conn_count as usize;
        stack_shared.busy_poll = !config.stack_interrupt;
        stack_shared.commands_per_pass = config.rpc_number as usize;
        stack_shared.rx_per_pass = config.nic_read_number as usize;
        if !config.listen_shadow && opts_threads > 1 && ltran.is_none() {
            stack_shared.port_home = Some(engine::PortHomes::new(opts_threads));
        }
        stack_shared.vlan = vlan;
        if kernel_helper.is_some() {
            stack_shared.share_ports_with_kernel();
        }
        if let Some(link) = ltran {
            let _ = stack_shared.ltran.set(link);
        }
        stack_shared.bond = bond;
        let shared = Arc::new(stack_shared);
        let is_secondary = shared.ltran.get().is_some();
        let clock = shared.clock;
        let mut handles = Vec::new();
        let run_to_completion = config.stack_thread_mode == StackThreadMode::RunToCompletion;
        let mut contexts = Vec::new();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), StackError>>();
        let kernel_side = kernel_helper.map(|h| {
            let iface = h
                .as_ref()
                .ok()
                .map_or(kernel::IFACE, |h| h.iface())
                .to_owned();
            kernel::KernelSide::new(&shared, iface, h)
        });
        let neighbour_hook = kernel_side.as_ref().and_then(|k| k.neighbour_hook());
        let mut kernel = kernel.into_iter();
        for (index, (rxq, txq)) in queues.into_iter().enumerate() {
            let cpu = config.num_cpus.as_slice()[index];
            let stats = Arc::clone(&shared.threads[index].stats);
            let per_thread = (config.tcp_conn_count as usize).div_ceil(opts_threads.max(1));
            let mut tx = TxPath::new(txq, Arc::clone(&pool), stats, per_thread, vlan);
            tx.conformance.neighbours.hook = neighbour_hook.clone();
            let mut iface_config = IfaceConfig::new(HardwareAddress::Ethernet(mac));
            iface_config.random_seed = seed ^ index as u64;
            let now = smoltcp::time::Instant::from_micros((clock.now_ns() / 1000) as i64);
            let mut iface = Interface::new(
                iface_config,
                &mut device::FrameDevice {
                    rx: None,
                    tx: &mut tx,
                },
                now,
            );
            iface.update_ip_addrs(|addrs| {
                let _ = addrs.push(IpCidr::Ipv4(v4cidr));
                if let Some(c) = &config.host_addr6 {
                    let _ = addrs.push(IpCidr::new(IpAddress::Ipv6(c.addr()), c.prefix_len()));
                }
                let _ = addrs.push(IpCidr::new(IpAddress::Ipv6(link_local(mac)), 64));
            });
            if let Some(gw) = config.gateway_addr {
                let _ = iface.routes_mut().add_default_ipv4_route(gw);
            }
            let mut worker = Worker::new(
                index,
                Arc::clone(&shared),
                iface,
                rxq,
                tx,
                Arc::clone(&pool),
                clock,
            );
            worker.kernel = kernel
                .next()
                .map(|(rx, tx)| kernel::KernelQueue::new(rx, tx));
            if run_to_completion {
                // No stack thread: the application's threads drive it.
                worker.prepare();
                contexts.push(engine::RtcContext {
                    worker,
                    batch: dpdk::MbufBatch::new(),
                });
                continue;
            }
            let ready = ready_tx.clone();
            let h = std::thread::Builder::new()
                .name(format!("lstack-stack{index}"))
                .spawn(move || {
                    let mut set = nix::sched::CpuSet::new();
                    let pinned = set.set(usize::from(cpu)).and_then(|()| {
                        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
                    });
                    if let Err(e) = pinned {
                        let _ = ready.send(Err(StackError::Cpu {
                            thread: index,
                            cpu,
                            reason: e.desc().to_owned(),
                        }));
                        return;
                    }
                    // Behind ltran the pools are shared with other
                    // processes, whose lcore ids would collide with ours
                    // in per-lcore caches: stay cacheless there.
                    if !is_secondary && !dpdk::eal::register_thread(&eal) {
                        tracing::warn!(
                            thread = index,
                            "no DPDK lcore slot left: mempool caches off for this thread"
                        );
                    }
                    let _ = ready.send(Ok(()));
                    drop(ready);
                    worker.run();
                })
                .map_err(StackError::Thread)?;
            handles.push(h);
        }
        drop(ready_tx);
        if shared.bond.is_some() {
            handles
                .push(bond::spawn_monitor(eal, Arc::clone(&shared)).map_err(StackError::Thread)?);
        }
        if run_to_completion {
            let _ = shared.rtc.set(engine::Rtc::new(contexts));
        }
        let threads = Mutex::new(handles);
        let mut failure = None;
        for r in ready_rx.iter() {
            if let Err(e) = r {
                failure.get_or_insert(e);
            }
        }
        if let Some(e) = failure {
            stop(&shared, &threads);
            return Err(e);
        }
        tracing::info!(
            port = ?port_id,
            threads = opts_threads,
            mac = %fmt_mac(mac.0),
            ipv4 = %v4cidr,
            ipv6 = ?config.host_addr6.as_ref().map(|c| c.to_string()),
            "lstack started"
        );
        let runtime = Arc::new(Runtime {
            shared: Arc::clone(&shared),
            threads,
            port: Mutex::new(ports),
            pool,
            port_id,
            eal,
            tx_offload,
            subnets: {
                let mut v = vec![(std::net::IpAddr::V4(config.host_addr), prefix)];
                if let Some(c) = &config.host_addr6 {
                    v.push((std::net::IpAddr::V6(c.addr()), c.prefix_len()));
                }
                v
            },
            started: std::time::Instant::now(),
            kernel_sockets: Default::default(),
            control: Mutex::new(None),
            kernel_side,
        });
        let stack = Stack { shared, runtime };
        if let Some(path) = stack.shared.opts.control_socket.clone() {
            control::serve(&stack, &path);
        }
        Ok(stack)
    }

    /// Opens the NIC whose MAC is `devices` as the DPDK primary.
    /// On `nic_vlan_mode`'s VLAN, with the port's VLAN offloads if
    /// `vlan_offload` and it has them.
    /// Starts DPDK's EAL as the primary for a standalone stack; returns it
    /// and how many ports it found (an error when none).
    fn init_eal(config: &LstackConfig) -> Result<(Eal, u16), StackError> {
        let args = eal_args(config);
        // EAL pins the calling thread to its main lcore; unless the config
        // asks for that (gazelle's main_thread_affinity), give the
        // application its CPUs back so its threads are not all on one core.
        let before = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok();
        let eal = Eal::init(&args)?;
        restore_app_affinity(config, before);
        let port_count = Port::count(&eal);
        if port_count == 0 {
            return Err(no_port_error(&config.dpdk_args));
        }
        Ok((eal, port_count))
    }

    fn open_port(
        config: &LstackConfig,
        want_threads: u16,
        vlan_offload: bool,
    ) -> Result<Backend, StackError> {
        // AF_XDP bifurcation: the XDP object DPDK loads is written (and the
        // host's lock taken) before EAL init.
        let xdp = xdp_bifurcation(config)
            .map(|(_, iface)| {
                let prefix = dpdk::cleanup::file_prefix(&eal_args(config));
                kernel::XdpPrep::prepare(&prefix, &iface)
                    .map(|prep| (iface.clone(), prep))
                    .map_err(|reason| StackError::KernelIface { iface, reason })
            })
            .transpose()?;
        if xdp.is_some() {
            // The kernel keeps the address on the NIC: ports apart as on
            // the tap path.
            reserve_ephemeral_ports();
        }
        let (eal, port_count) = Self::init_eal(config)?;
        let wanted = config.devices.octets();
        let kernel_id = if kernel_vdev(config).is_some() {
            let id = Port::id_by_name(&eal, kernel::VDEV_VIRTIO)
                .or_else(|_| Port::id_by_name(&eal, kernel::VDEV_TAP))?;
            prepare_kernel_iface();
            Some(id)
        } else {
            None
        };
        let mut available = Vec::new();
        let mut port_id = None;
        for id in 0..port_count {
            if Some(id) == kernel_id {
                // The kernel's port has the stack's MAC too.
                continue;
            }
            let mac = Port::mac_by_id(&eal, id);
            if mac == wanted {
                port_id = Some(id);
            }
            available.push(format!("{id}={}", fmt_mac(mac)));
        }
        let port_id = port_id.ok_or_else(|| StackError::PortNotFound {
            wanted: config.devices.to_string(),
            available: available.join(", "),
        })?;

        let rx_desc = config.nic_rxqueue_size as u16;
        let tx_desc = config.nic_txqueue_size as u16;
        let per_thread =
            u32::from(rx_desc) + u32::from(tx_desc) + 2 * dpdk::BURST_SIZE as u32 + 4096;
        let pool_size = per_thread * u32::from(want_threads) + 2048;
        let cache = config.mem_cache_num.min(512);
        let pool = Arc::new(Mempool::create(
            &eal,
            &format!("lstack_rx_{}", std::process::id()),
            pool_size,
            cache,
            dpdk::mempool::DEFAULT_DATA_ROOM,
            -1,
        )?);
        let port_config = PortConfig {
            rx_queues: want_threads,
            tx_queues: want_threads,
            rx_desc,
            tx_desc,
            promiscuous: false,
            checksum_offload: true,
            rx_interrupts: true,
            vlan_offload: vlan_offload && config.nic_vlan_mode >= 0,
        };
        let mut port = Port::open(&eal, port_id, &port_config, Arc::clone(&pool))?;
        wait_for_link(&port);
        let queues: Vec<_> = port
            .take_queues()
            .into_iter()
            .map(|(rx, tx)| (RxSource::Port(rx), TxSink::Port(tx)))
            .collect();
        let mut ports = vec![port];
        let mut kernel = Vec::new();
        let mut kernel_helper = None;
        if let Some(id) = kernel_id {
            let threads = queues.len() as u16;
            let kernel_config = PortConfig {
                rx_queues: threads,
                tx_queues: threads,
                checksum_offload: false,
                vlan_offload: false,
                ..port_config
            };
            let mut kport = Port::open(&eal, id, &kernel_config, Arc::clone(&pool))?;
            kernel = kport.take_queues();
            configure_kernel_iface(config)?;
            ports.push(kport);
            kernel_helper = Some(load_kernel_helper(config, &ports[0])?);
        }
        if let Some((iface, prep)) = xdp {
            let addrs = gazelle_bpf::GuardAddrs {
                ipv4: Some(config.host_addr),
                ipv6: config.host_addr6.as_ref().map(|c| c.addr()),
            };
            // Required: without the ownership map the program hands
            // lstack nothing, and without the guard the kernel resets
            // lstack's peers.
            let helper = kernel::Helper::load_xdp(&iface, addrs, prep).map_err(|e| {
                StackError::KernelIface {
                    iface: iface.clone(),
                    reason: format!(
                        "AF_XDP flow bifurcation: the maps of the XDP program DPDK loaded \
                         (pinned at {}/lstack_xdp_*) or the TC guard: {e}",
                        gazelle_bpf::XDP_PIN_ROOT
                    ),
                }
            })?;
            tracing::info!(
                %iface,
                "AF_XDP flow bifurcation: the kernel keeps the address on the NIC; \
                 XDP hands lstack its own flows"
            );
            kernel_helper = Some(Ok(helper));
        }
        let port = &ports[0];
        let tx_offload = port.info().tx_checksum();
        let mac = port.mac();
        // -1: no VLAN (validation keeps the rest within 0..=4094).
        let vlan = u16::try_from(config.nic_vlan_mode).ok().map(|id| {
            let info = port.info();
            tracing::info!(
                vlan = id,
                rx_strip = info.rx_vlan_strip(),
                tx_insert = info.tx_vlan_insert(),
                "on a VLAN: tags the port does not strip or insert are handled in software"
            );
            vlan::Vlan::new(id, info.rx_vlan_strip(), info.tx_vlan_insert())
        });
        Ok(Backend {
            eal,
            pool,
            queues,
            ports,
            port_id: Some(port_id),
            tx_offload,
            mac,
            ltran: None,
            vlan,
            bond: None,
            kernel,
            kernel_helper,
        })
    }

    /// Opens the two ports of `bond_slave_mac` as lstack's own
    /// active-backup bond (see [`bond`]): the same queue pairs on both,
    /// both given the bond's MAC (`devices`).
    fn open_bond(config: &LstackConfig, want_threads: u16) -> Result<Backend, StackError> {
        let (eal, port_count) = Self::init_eal(config)?;
        let args = eal_args(config);
        let macs: Vec<[u8; 6]> = (0..port_count)
            .map(|id| Port::mac_by_id(&eal, id))
            .collect();
        let find = |wanted: &gazelle_config::value::MacAddr| {
            macs.iter()
                .position(|m| *m == wanted.octets())
                .and_then(|i| u16::try_from(i).ok())
                .ok_or_else(|| StackError::BondPortNotFound {
                    wanted: wanted.to_string(),
                    available: macs
                        .iter()
                        .enumerate()
                        .map(|(id, m)| format!("{id}={}", fmt_mac(*m)))
                        .collect::<Vec<_>>()
                        .join(", "),
                })
        };
        let ids = [
            find(&config.bond_slave_mac[0])?,
            find(&config.bond_slave_mac[1])?,
        ];

        let rx_desc = config.nic_rxqueue_size as u16;
        let tx_desc = config.nic_txqueue_size as u16;
        // Both ports' receive rings are filled from the one pool.
        let per_thread =
            2 * (u32::from(rx_desc) + u32::from(tx_desc)) + 2 * dpdk::BURST_SIZE as u32 + 4096;
        let pool_size = per_thread * u32::from(want_threads) + 2048;
        let pool = Arc::new(Mempool::create(
            &eal,
            &format!("lstack_rx_{}", std::process::id()),
            pool_size,
            config.mem_cache_num.min(512),
            dpdk::mempool::DEFAULT_DATA_ROOM,
            -1,
        )?);
        let port_config = PortConfig {
            rx_queues: want_threads,
            tx_queues: want_threads,
            rx_desc,
            tx_desc,
            // Where a port cannot take the bond's MAC, it still receives
            // the frames sent to it.
            promiscuous: true,
            checksum_offload: true,
            rx_interrupts: true,
            vlan_offload: false,
        };
        let mac = config.devices.octets();
        let mut ports = Vec::new();
        let mut pairs = Vec::new();
        for id in ids {
            let mut port = Port::open(&eal, id, &port_config, Arc::clone(&pool))?;
            if let Err(e) = port.set_mac(mac) {
                tracing::warn!(port = id, %e, "cannot give the port the bond's MAC; relying on promiscuous mode");
            }
            pairs.push(port.take_queues());
            ports.push(port);
        }
        let (first, second) = (pairs[0].len(), pairs[1].len());
        if first != second {
            return Err(StackError::BondQueues { first, second });
        }
        let members = [0, 1].map(|i| {
            let name = ports[i].info().name.clone();
            let iface = dpdk::bond::vdev_iface(&args, &name);
            tracing::info!(port = ids[i], %name, ?iface, "bond port up");
            bond::Member::new(ids[i], name, iface)
        });
        let shared = Arc::new(bond::BondShared::new(
            members,
            mac,
            std::time::Duration::from_millis(u64::from(config.bond_miimon)),
            first,
        ));
        let second_pairs = pairs.pop().unwrap_or_default();
        let first_pairs = pairs.pop().unwrap_or_default();
        let queues = first_pairs
            .into_iter()
            .zip(second_pairs)
            .enumerate()
            .map(|(i, ((rx0, tx0), (rx1, tx1)))| {
                (
                    RxSource::Bond(bond::BondRx::new([rx0, rx1], i, Arc::clone(&shared))),
                    TxSink::Bond(bond::BondTx::new([tx0, tx1], shared.active())),
                )
            })
            .collect();
        let tx_offload = ports.iter().all(|p| p.info().tx_checksum());
        Ok(Backend {
            eal,
            pool,
            queues,
            ports,
            port_id: None,
            tx_offload,
            mac,
            ltran: None,
            // Refused by validation: the bond does not carry a VLAN yet.
            vlan: None,
            bond: Some(shared),
            kernel: Vec::new(),
            kernel_helper: None,
        })
    }

    /// Attaches to ltran as a secondary and registers one ring pair per
    /// stack thread.
    fn attach_ltran(
        config: &LstackConfig,
        run_dir: &std::path::Path,
        want_threads: u16,
    ) -> Result<Backend, StackError> {
        let a = ltran::attach(config, run_dir, usize::from(want_threads))?;
        Ok(Backend {
            eal: a.eal,
            pool: a.pool,
            queues: a
                .rings
                .into_iter()
                .map(|(rx, tx)| (RxSource::Ring(rx), TxSink::Ring(tx)))
                .collect(),
            ports: Vec::new(),
            port_id: None,
            tx_offload: false,
            mac: config.devices.octets(),
            ltran: Some(a.link),
            // Refused by validation: ltran owns the port.
            vlan: None,
            bond: None,
            kernel: Vec::new(),
            kernel_helper: None,
        })
    }

    /// At exit: hands the address back to the kernel where that needs
    /// doing (AF_XDP bifurcation: its XDP program leaves the NIC; the tap
    /// goes with the process anyway). Idempotent.
    pub fn release_kernel_path(&self) {
        if let Some(k) = &self.runtime.kernel_side {
            k.release();
        }
    }

    /// Stops the stack threads (idempotent). Sockets stop working.
    pub fn shutdown(&self) {
        self.runtime
            .control
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        stop(&self.shared, &self.runtime.threads);
        if let Some(link) = self.shared.ltran.get() {
            link.leave();
        }
        self.runtime
            .port
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Number of stack threads.
    pub fn threads(&self) -> usize {
        self.shared.threads.len()
    }

    /// Counters of stack thread `i`.
    pub fn thread_stats(&self, i: usize) -> Option<&ThreadStats> {
        self.shared.threads.get(i).map(|t| &*t.stats)
    }

    /// The VLAN the stack is on (`nic_vlan_mode`), with the offloads its
    /// port does for it.
    pub fn vlan(&self) -> Option<vlan::Vlan> {
        self.shared.vlan
    }

    /// Counters of the DPDK port.
    pub fn port_stats(&self) -> Result<PortStats, dpdk::DpdkError> {
        if let Some(b) = &self.shared.bond {
            let mut sum = PortStats::default();
            for m in &b.members {
                let s = Port::stats_by_id(&self.runtime.eal, m.port_id)?;
                sum.rx_packets += s.rx_packets;
                sum.tx_packets += s.tx_packets;
                sum.rx_bytes += s.rx_bytes;
                sum.tx_bytes += s.tx_bytes;
                sum.rx_missed += s.rx_missed;
                sum.rx_errors += s.rx_errors;
                sum.tx_errors += s.tx_errors;
                sum.rx_nombuf += s.rx_nombuf;
            }
            return Ok(sum);
        }
        match self.runtime.port_id {
            Some(id) => Port::stats_by_id(&self.runtime.eal, id),
            None => Ok(PortStats::default()),
        }
    }

    /// Whether the application's threads run the stack
    /// (`stack_thread_mode = "run-to-completion"`): then a thread that waits
    /// for the network calls [`Stack::drive`] and sleeps with
    /// [`Stack::sleep_for_work`], and socket calls that would block do so
    /// themselves.
    pub fn run_to_completion(&self) -> bool {
        self.shared.run_to_completion()
    }

    /// Run to completion: one pass of the stack (receive, sockets, timers,
    /// transmit) on the calling thread, for every stack context no other
    /// thread is running. Returns whether there was work. Does nothing with
    /// stack threads.
    pub fn drive(&self) -> bool {
        self.shared.drive()
    }

    /// Run to completion: whether this thread's writes left data to send
    /// that waits for its next pass ([`Self::drive`]); writes are batched
    /// until the thread waits in the stack.
    pub fn egress_pending(&self) -> bool {
        self.shared.egress_pending()
    }

    /// Run to completion: sleeps until frames arrive, a stack timer is due,
    /// another thread wakes the stack, one of `extra` is ready (`revents`
    /// filled in) or `limit` passes. Returns true when the caller should
    /// drive again (it slept, or frames wait); false without sleeping when
    /// another thread polls or drives the stack, or the stack stopped: the
    /// caller then waits its own way (briefly) and drives again.
    pub fn sleep_for_work(&self, extra: &mut [libc::pollfd], limit: Option<Duration>) -> bool {
        self.shared.sleep_for_work(extra, limit)
    }

    /// TCP connections alive (including ones closing).
    pub fn tcp_connections(&self) -> usize {
        self.shared.tcp_sockets()
    }

    /// Free mbufs in the stack's pool.
    pub fn mbufs_available(&self) -> u32 {
        self.runtime.pool.available()
    }

    /// Waits (at most `timeout`) until every TCP connection the application
    /// closed has had its remaining data and FIN acknowledged. Returns
    /// whether it did.
    /// A process calls this before it exits, since the stack's threads die
    /// with it (the kernel would have gone on sending).
    pub fn flush(&self, timeout: Duration) -> bool {
        let end = std::time::Instant::now() + timeout;
        loop {
            if self.shared.orphans_flushed() {
                return true;
            }
            if std::time::Instant::now() >= end {
                return false;
            }
            // Run to completion nobody else sends it.
            if !self.shared.drive() {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }

    /// The stack's own address of `remote`'s family, as the source of a
    /// connection or datagram to it.
    pub fn local_ip_for(&self, remote: std::net::IpAddr) -> Option<std::net::IpAddr> {
        let l = &self.shared.local;
        match remote {
            std::net::IpAddr::V4(_) => l.ipv4.map(std::net::IpAddr::V4),
            std::net::IpAddr::V6(_) => l.ipv6.map(std::net::IpAddr::V6),
        }
    }

    /// Counts a socket the process keeps on the kernel, and why.
    pub fn count_kernel_socket(&self, why: KernelPath) {
        let i = KernelPath::ALL.iter().position(|&k| k == why).unwrap_or(0);
        self.runtime.kernel_sockets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The sockets kept on the kernel so far, by reason (non-zero only).
    pub fn kernel_sockets(&self) -> std::collections::BTreeMap<String, u64> {
        KernelPath::ALL
            .iter()
            .zip(&self.runtime.kernel_sockets)
            .map(|(k, n)| (k.name().to_owned(), n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Whether `ip` is an address of this stack.
    pub fn owns_addr(&self, ip: std::net::IpAddr) -> bool {
        let l = &self.shared.local;
        match ip {
            std::net::IpAddr::V4(a) => l.ipv4 == Some(a),
            std::net::IpAddr::V6(a) => l.ipv6 == Some(a) || l.ipv6_link_local == Some(a),
        }
    }

    /// Whether `ip` is on one of the stack's subnets (so a connection to it
    /// belongs on the user-space stack, not the kernel's).
    pub fn on_link(&self, ip: std::net::IpAddr) -> bool {
        self.runtime
            .subnets
            .iter()
            .any(|(net, len)| same_prefix(*net, ip, *len))
    }

    /// Whether the NIC computes transmit checksums (IPv4, TCP, UDP).
    pub fn tx_checksum_offload(&self) -> bool {
        self.runtime.tx_offload
    }

    /// The stack's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.shared.local.mac.0
    }
}

/// Whether `a` and `b` share their first `len` bits (false across
/// families): `b` is on `a`'s subnet of that prefix length.
pub fn same_prefix(a: std::net::IpAddr, b: std::net::IpAddr, len: u8) -> bool {
    use std::net::IpAddr::{V4, V6};
    match (a, b) {
        (V4(a), V4(b)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (V6(a), V6(b)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// `aa:bb:cc:dd:ee:ff`, as operators write MACs (smoltcp prints dashes).
/// The error for an EAL without ports: which virtual devices dpdk_args asked for
/// (`--vdev=X` or `--vdev X`), if any, since then their probe is what failed.
fn no_port_error(dpdk_args: &[String]) -> StackError {
    let mut vdevs = Vec::new();
    let mut args = dpdk_args.iter();
    while let Some(arg) = args.next() {
        if let Some(dev) = arg.strip_prefix("--vdev=") {
            vdevs.push(dev.to_owned());
        } else if arg == "--vdev" {
            vdevs.extend(args.next().cloned());
        }
    }
    if vdevs.is_empty() {
        StackError::NoPort
    } else {
        StackError::VdevNotOpened(vdevs.join(" "))
    }
}

fn fmt_mac(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// The EUI-64 link-local address of `mac` (fe80::/64).
fn link_local(mac: EthernetAddress) -> Ipv6Address {
    let m = mac.0;
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([m[0] ^ 0x02, m[1]]),
        u16::from_be_bytes([m[2], 0xff]),
        u16::from_be_bytes([0xfe, m[3]]),
        u16::from_be_bytes([m[4], m[5]]),
    )
}

/// A per-process random seed (std's hasher keys come from the OS RNG).
/// Waits a moment (at most [`LINK_WAIT`]) for a port whose link is still
/// down after its start: a NIC's link and a `net_memif` client's connection
/// come up a little after. A neighbour request sent meanwhile is lost, and
/// smoltcp asks again only a second later, so an application's first
/// connect would wait that second. A link still down after the wait (no
/// cable, a memif server without its client) is logged, and the stack runs.
fn wait_for_link(port: &Port) {
    if port.link().up {
        return;
    }
    let end = std::time::Instant::now() + LINK_WAIT;
    while std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
        if port.link().up {
            return;
        }
    }
    tracing::info!(
        port = port.info().port_id,
        waited_ms = LINK_WAIT.as_millis() as u64,
        "the port's link is down: the stack runs and uses it once it comes up"
    );
}

/// How long [`wait_for_link`] waits.
const LINK_WAIT: Duration = Duration::from_millis(500);

pub(crate) fn random_seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::tcp_rx_buffer_size as size;

    #[test]
    fn receive_buffers_over_64k_are_65535_shifted() {
        assert_eq!(size(0), super::MIN_TCP_RX_BUFFER);
        assert_eq!(size(4096), 4096);
        assert_eq!(size(65535), 65535);
        assert_eq!(size(65536), 65535);
        assert_eq!(size(131069), 65535);
        assert_eq!(size(131070), 131070);
        assert_eq!(size(128 * 1024), 131070);
        assert_eq!(size(1 << 20), 65535 << 4);
        assert_eq!(size(usize::MAX), super::MAX_TCP_RX_BUFFER);
        // Every size over 64 KiB is one whose window scale makes smoltcp's
        // post-SYN-ACK window (65535 << scale) exactly the buffer.
        for r in (65536..4 << 20).step_by(4099) {
            let b = size(r);
            let bits = usize::BITS - b.leading_zeros();
            let shift = bits.saturating_sub(16);
            assert!(65535 << shift <= b, "{r} -> {b}: window {}", 65535 << shift);
            assert!(b <= r.max(65535));
        }
    }

    use super::*;

    #[test]
    fn no_port_error_names_the_virtual_devices_that_failed() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches!(
            no_port_error(&args(&["--no-pci", "-l", "0"])),
            StackError::NoPort
        ));
        let err = no_port_error(&args(&[
            "--vdev=net_af_packet0,iface=eth1",
            "--vdev",
            "net_tap0",
        ]));
        assert_eq!(
            err.to_string(),
            "DPDK opened none of the virtual devices in dpdk_args \
             (net_af_packet0,iface=eth1 net_tap0): DPDK's own messages above say why"
        );
    }

    #[test]
    fn prefixes_match_by_length() {
        let a = "10.88.0.2".parse().unwrap();
        assert!(same_prefix(a, "10.88.0.77".parse().unwrap(), 24));
        assert!(!same_prefix(a, "10.89.0.2".parse().unwrap(), 24));
        assert!(same_prefix(a, "10.89.0.2".parse().unwrap(), 8));
        assert!(same_prefix(a, "1.2.3.4".parse().unwrap(), 0));
        assert!(same_prefix(
            "fd00:88::2".parse().unwrap(),
            "fd00:88::99".parse().unwrap(),
            64
        ));
        assert!(!same_prefix(
            "fd00:88::2".parse().unwrap(),
            "fd00:89::2".parse().unwrap(),
            64
        ));
        assert!(!same_prefix(a, "fd00:88::2".parse().unwrap(), 0));
    }

    #[test]
    fn link_local_is_eui64() {
        let ll = link_local(EthernetAddress([0x02, 0x00, 0x00, 0x12, 0x34, 0x56]));
        assert_eq!(ll, "fe80::ff:fe12:3456".parse::<Ipv6Addr>().unwrap());
    }

    /// `flow_bifurcation` on a `net_af_xdp` port: no tap, and DPDK is
    /// handed the XDP object (`xdp_prog=`, named by the file prefix) on
    /// that vdev alone, in either `--vdev` spelling.
    #[test]
    fn af_xdp_bifurcation_hands_dpdk_the_program_and_adds_no_tap() {
        let mut cfg = LstackConfig::new(
            "10.0.0.2".parse().unwrap(),
            "255.255.255.0".parse().unwrap(),
            "02:00:00:00:00:01".parse().unwrap(),
        );
        cfg.dpdk_args = ["--file-prefix=px", "--vdev", "net_af_xdp0,iface=eth0"]
            .map(String::from)
            .to_vec();
        cfg.flow_bifurcation = true;
        let object = kernel::xdp_object_path("px");
        assert_eq!(
            eal_args(&cfg),
            vec![
                "lstack".to_owned(),
                "--file-prefix=px".into(),
                "--vdev".into(),
                format!("net_af_xdp0,iface=eth0,xdp_prog={}", object.display()),
            ]
        );
        assert!(kernel_vdev(&cfg).is_none());
        // Two af_xdp ports: xdp_eth_name says which.
        cfg.dpdk_args = [
            "--file-prefix=px",
            "--vdev=net_af_xdp0,iface=eth0",
            "--vdev=net_af_xdp1,iface=eth1",
        ]
        .map(String::from)
        .to_vec();
        assert!(xdp_bifurcation(&cfg).is_none());
        cfg.xdp_eth_name = Some("eth1".into());
        let args = eal_args(&cfg);
        assert_eq!(args[2], "--vdev=net_af_xdp0,iface=eth0");
        assert!(args[3].ends_with(&format!(",xdp_prog={}", object.display())));
        // kni_switch and af_packet keep the tap.
        cfg.flow_bifurcation = false;
        cfg.kni_switch = true;
        assert!(kernel_vdev(&cfg).is_some());
        assert!(!eal_args(&cfg).iter().any(|a| a.contains("xdp_prog")));
    }

    #[test]
    fn shards_scale_with_connection_count() {
        let mut cfg = LstackConfig::new(
            "10.0.0.2".parse().unwrap(),
            "255.255.255.0".parse().unwrap(),
            "02:00:00:00:00:01".parse().unwrap(),
        );
        cfg.tcp_conn_count = 20000;
        cfg.num_cpus = "0".parse().unwrap();
        assert_eq!(StackOptions::for_config(&cfg).tcp_shards, 1024);
        cfg.tcp_conn_count = 1500;
        assert_eq!(StackOptions::for_config(&cfg).tcp_shards, 64);
    }
}
