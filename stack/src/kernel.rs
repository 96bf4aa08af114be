//! The path to the kernel for a standalone stack (`kni_switch`,
//! `flow_bifurcation`): one address served by lstack and by the kernel
//! together.
//!
//! A kernel interface (`net_tap`, or `virtio_user` on vhost-net) named
//! [`IFACE`] carries the stack's MAC and addresses. Every frame the NIC
//! delivers is classified as usual ([`crate::classify`]); then [`side`]
//! says whose it is:
//! - TCP and UDP to a port the stack owns ([`crate::ownership`]): the
//!   stack's; to any other port: the kernel's (ssh, an exporter, a
//!   kernel-run server on the same address);
//! - ICMP echo (ping): the kernel's; ARP, NDP and the other control
//!   traffic (ICMP errors, IGMP/MLD): both, the kernel getting a copy;
//! - protocols the stack does not speak (SCTP, GRE, unknown EtherTypes):
//!   the kernel's, instead of dropped.
//!
//! On a `net_af_xdp` port `flow_bifurcation` needs no tap: the kernel
//! keeps the address on the NIC's own interface, and the XDP program DPDK
//! loads there (gazelle-bpf's `xdp_object`, through the `xdp_prog=`
//! devarg; [`XdpPrep`], [`Helper::load_xdp`]) hands lstack the frames of
//! its own ports and passes the rest to the kernel unchanged; no frame
//! goes through [`side`]. The peer's ARP requests and neighbour
//! solicitations go to the kernel, which answers for the shared address;
//! smoltcp (0.14) fills its neighbour cache only from ARP and NDP, not
//! from IP frames, so lstack asks for the neighbours it needs itself and
//! [`Helper::want_neighbour`] (called from the transmit path when it
//! sends an ARP request or solicitation) lets the reply through to it.
//!
//! Each stack thread has its own queue pair on the interface
//! ([`KernelQueue`]): what it hands the kernel goes out in bursts at the
//! end of its pass, and what the kernel sends (its answers, its own
//! connections) leaves through the thread's NIC queue. The kernel side is
//! looked at every [`KERNEL_POLL_NS`] at most, since reading a tap queue is
//! a system call, and its descriptor wakes a sleeping thread. Nothing here
//! allocates, locks or reads the clock.

use std::{collections::BTreeMap, path::Path, sync::Arc};

use dpdk::{Mbuf, MbufBatch, Mempool, RxQueue, RxWakeup, TxQueue};
use smoltcp::wire::IpVersion;

use crate::{
    classify::{DropReason, Seen, Verdict},
    ownership::{PortOwnership, PortSink, Proto},
    stats::ThreadStats,
};

/// Where the helper's ownership maps are pinned (a bpffs; mounted if it
/// is not one).
pub const BPFFS: &str = "/sys/fs/bpf";

/// How long an ARP reply / neighbour advertisement lstack asked for goes
/// to lstack (AF_XDP bifurcation): smoltcp asks again a second later.
const NEIGHBOUR_WANT_NS: u64 = 3_000_000_000;

/// The eBPF helper of the kernel side.
#[derive(Debug)]
pub struct Helper {
    /// The interface the guard is on.
    iface: String,
    own: Arc<gazelle_bpf::Ownership>,
    guard: gazelle_bpf::TapGuard,
    nic_block: Option<gazelle_bpf::NicBlock>,
    /// AF_XDP bifurcation: the maps of the program DPDK loaded, and what
    /// keeps the host's one bifurcated instance ours.
    xdp: Option<(gazelle_bpf::XdpPinnedMaps, XdpPrep)>,
}

/// AF_XDP bifurcation (`flow_bifurcation` on a `net_af_xdp` port), before
/// EAL init: the host-wide lock, stale pins removed, and the XDP object
/// written where the `xdp_prog=` devarg points. DPDK's libbpf pins the
/// object's maps by name, so there is one such instance per host (bpffs).
#[derive(Debug)]
pub struct XdpPrep {
    /// Held (flock) while the instance lives; the kernel drops it when the
    /// process dies, even by SIGKILL.
    _lock: nix::fcntl::Flock<std::fs::File>,
    object: std::path::PathBuf,
}

/// The file lstack writes the XDP object of the instance with DPDK file
/// prefix `prefix` to.
pub(crate) fn xdp_object_path(prefix: &str) -> std::path::PathBuf {
    gazelle_ctl_proto::paths::run_dir().join(format!("xdp-{prefix}.o"))
}

impl XdpPrep {
    /// Takes the host's bifurcation lock (refused while another live
    /// process holds it), removes stale pins and writes the object.
    pub(crate) fn prepare(prefix: &str, iface: &str) -> Result<Self, String> {
        use std::io::Write;
        let dir = gazelle_ctl_proto::paths::run_dir();
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let lock_path = dir.join("xdp-bifurcation.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("opening {}: {e}", lock_path.display()))?;
        let mut lock = match nix::fcntl::Flock::lock(
            lock,
            nix::fcntl::FlockArg::LockExclusiveNonblock,
        ) {
            Ok(l) => l,
            Err(_) => {
                let holder = std::fs::read_to_string(&lock_path).unwrap_or_default();
                return Err(format!(
                    "another lstack (pid {}) already runs AF_XDP flow bifurcation on this host: \
                     its XDP maps are pinned by name at {}/lstack_xdp_* (one such instance per host)",
                    holder.trim(),
                    gazelle_bpf::XDP_PIN_ROOT
                ));
            }
        };
        let _ = lock.set_len(0);
        let _ = write!(lock, "{}", std::process::id());
        gazelle_bpf::ensure_bpffs(Path::new(gazelle_bpf::XDP_PIN_ROOT))
            .map_err(|e| e.to_string())?;
        gazelle_bpf::remove_xdp_pins().map_err(|e| e.to_string())?;
        if detach_xdp(iface) {
            tracing::warn!(
                iface,
                "removed the XDP program a killed lstack left on the interface"
            );
        }
        let object = xdp_object_path(prefix);
        std::fs::write(&object, gazelle_bpf::xdp_object())
            .map_err(|e| format!("writing {}: {e}", object.display()))?;
        Ok(Self {
            _lock: lock,
            object,
        })
    }
}

/// Takes `xdp_bifurcate` (ours, by name; nothing else) off `iface`;
/// returns whether it was there. DPDK attaches it through netlink and
/// detaches it only when the port closes, which a process that exits (or
/// is killed) does not do: at exit ([`KernelSide::release`]) and, after a
/// SIGKILL, at the next start (when the host lock says its instance is
/// gone), since DPDK refuses to attach over it.
fn detach_xdp(iface: &str) -> bool {
    let Ok(out) = std::process::Command::new("ip")
        .args(["-d", "link", "show", "dev", iface])
        .output()
    else {
        return false;
    };
    if !String::from_utf8_lossy(&out.stdout).contains("name xdp_bifurcate") {
        return false;
    }
    std::process::Command::new("ip")
        .args(["link", "set", "dev", iface, "xdp", "off"])
        .status()
        .is_ok_and(|s| s.success())
}

impl Drop for XdpPrep {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.object);
        let _ = gazelle_bpf::remove_xdp_pins();
    }
}

/// Feeds the ownership map from the stack's table.
#[derive(Debug)]
struct MapSink(Arc<gazelle_bpf::Ownership>);

impl PortSink for MapSink {
    fn publish(&self, proto: Proto, port: u16, owned: bool) {
        let proto = match proto {
            Proto::Tcp => gazelle_bpf::Proto::Tcp,
            Proto::Udp => gazelle_bpf::Proto::Udp,
        };
        self.0.set(proto, port, owned);
    }
}

impl Helper {
    /// Creates the ownership map pinned at `pin`, attaches the guard to the
    /// exception interface (`addrs`: the stack's addresses, martian as
    /// sources there), and, when the stack's port is a `net_af_packet` one
    /// on the kernel interface `nic`, the block on `nic`.
    pub fn load(
        pin: &Path,
        addrs: gazelle_bpf::GuardAddrs,
        nic: Option<&str>,
    ) -> Result<Self, gazelle_bpf::Error> {
        gazelle_bpf::ensure_bpffs(Path::new(BPFFS))?;
        let own = Arc::new(gazelle_bpf::Ownership::create(pin)?);
        let guard = gazelle_bpf::TapGuard::attach(IFACE, &own, addrs)?;
        let nic_block = nic
            .map(|n| gazelle_bpf::NicBlock::attach(n, &own))
            .transpose()?;
        Ok(Self {
            iface: IFACE.to_owned(),
            own,
            guard,
            nic_block,
            xdp: None,
        })
    }

    /// AF_XDP bifurcation, once DPDK loaded the XDP object `prep` wrote:
    /// opens its pinned maps and attaches the guard to the NIC's kernel
    /// interface `nic` (the kernel's RSTs for lstack's ports stay in).
    pub fn load_xdp(
        nic: &str,
        addrs: gazelle_bpf::GuardAddrs,
        prep: XdpPrep,
    ) -> Result<Self, gazelle_bpf::Error> {
        let own = Arc::new(gazelle_bpf::Ownership::open_pinned(Path::new(
            gazelle_bpf::XDP_PIN_OWN,
        ))?);
        let maps = gazelle_bpf::XdpPinnedMaps::open()?;
        let guard = gazelle_bpf::TapGuard::attach(nic, &own, addrs)?;
        Ok(Self {
            iface: nic.to_owned(),
            own,
            guard,
            nic_block: None,
            xdp: Some((maps, prep)),
        })
    }

    /// Lets the reply to an ARP request / neighbour solicitation for
    /// `addr` that the stack sends through the XDP program to the stack
    /// (the kernel gets the rest of ARP and NDP). A map update: only
    /// with AF_XDP bifurcation, and only per request.
    pub fn want_neighbour(&self, addr: std::net::IpAddr) {
        if let Some((maps, _)) = &self.xdp {
            if let Err(e) = maps.want_neighbour(addr, NEIGHBOUR_WANT_NS) {
                tracing::warn!(%addr, error = %e, "cannot ask the XDP program for a neighbour reply");
            }
        }
    }

    /// The kernel interface the guard is on: [`IFACE`], or the AF_XDP
    /// port's own interface.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// Whether this is AF_XDP bifurcation.
    pub fn is_xdp(&self) -> bool {
        self.xdp.is_some()
    }

    /// From now on the map follows `owned` (which first gives it every port
    /// owned so far).
    pub fn follow(&self, owned: &PortOwnership) {
        owned.set_sink(Arc::new(MapSink(Arc::clone(&self.own))));
    }

    /// The programs' counters by name: the guard's, and the block's if
    /// there is one.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        let guard = self.guard.counters();
        let mut out: BTreeMap<String, u64> = guard
            .named()
            .into_iter()
            .filter(|(n, _)| !n.starts_with("xdp_") && *n != "nic_blocked")
            .map(|(n, v)| (n.to_owned(), v))
            .collect();
        if let Some(b) = &self.nic_block {
            out.insert("nic_blocked".into(), b.counters().nic_blocked);
        }
        if let Some((maps, _)) = &self.xdp {
            out.extend(
                maps.counters()
                    .named()
                    .into_iter()
                    .filter(|(n, _)| n.starts_with("xdp_"))
                    .map(|(n, v)| (n.to_owned(), v)),
            );
        }
        out
    }
}

/// The kernel's name of the interface.
pub const IFACE: &str = "kni";

/// DPDK's name of the exception port's virtual device.
pub(crate) const VDEV_TAP: &str = "net_tap_lstack";
/// The same over vhost-net (`flow_bifurcation` where the host has it).
pub(crate) const VDEV_VIRTIO: &str = "virtio_user_lstack";

/// How often, at most, a thread reads the kernel's transmissions: 20 µs
/// adds at most that to the kernel's round trips (ping, ssh) and keeps a
/// busy thread from one system call per pass.
pub(crate) const KERNEL_POLL_NS: u64 = 20_000;

/// Whose a received frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The stack's alone.
    Stack,
    /// The kernel's alone.
    Kernel,
    /// Both get it (the kernel a copy).
    Both,
}

/// Whose the frame that `classify_seen` gave `verdict` and `seen` is, when
/// the stack shares its address with the kernel and owns the ports in
/// `owned`.
#[inline]
pub fn side(owned: &PortOwnership, verdict: &Verdict, seen: &Seen) -> Side {
    match *verdict {
        Verdict::Tcp { flow, .. } => {
            if owned.owns(Proto::Tcp, flow.local_port) {
                Side::Stack
            } else {
                Side::Kernel
            }
        }
        Verdict::Udp { port } => {
            if owned.owns(Proto::Udp, port) {
                Side::Stack
            } else {
                Side::Kernel
            }
        }
        Verdict::Control { .. } => match (seen.ip, seen.icmp_type) {
            // Echo request and reply: ping is the kernel's.
            (Some(IpVersion::Ipv4), Some(0 | 8)) | (Some(IpVersion::Ipv6), Some(128 | 129)) => {
                Side::Kernel
            }
            _ => Side::Both,
        },
        Verdict::Drop(DropReason::UnsupportedProtocol | DropReason::UnknownEthertype) => {
            Side::Kernel
        }
        Verdict::Drop(_) => Side::Stack,
    }
}

/// The kernel's side of the path, for the whole stack: its interface and
/// what reports on it.
#[derive(Debug)]
pub(crate) struct KernelSide {
    /// The kernel interface.
    pub(crate) iface: String,
    /// The stack's port ownership.
    owned: Arc<PortOwnership>,
    /// The eBPF helper, or why it is not loaded.
    helper: Result<Arc<Helper>, String>,
}

impl KernelSide {
    /// The kernel side of the stack of `shared` on the kernel interface
    /// `iface`, with `helper` (which then follows the stack's port
    /// ownership).
    pub(crate) fn new(
        shared: &crate::engine::StackShared,
        iface: String,
        helper: Result<Helper, String>,
    ) -> Self {
        if let Ok(h) = &helper {
            h.follow(&shared.owned);
        }
        Self {
            iface,
            owned: Arc::clone(&shared.owned),
            helper: helper.map(Arc::new),
        }
    }

    /// At exit: AF_XDP bifurcation takes its XDP program off the NIC, so
    /// the kernel alone serves the address (see [`detach_xdp`]).
    pub(crate) fn release(&self) {
        if self.helper.as_ref().is_ok_and(|h| h.is_xdp()) {
            detach_xdp(&self.iface);
        }
    }

    /// What each thread tells of the neighbours it asks for (AF_XDP
    /// bifurcation only: the XDP program then lets the replies to lstack).
    pub(crate) fn neighbour_hook(&self) -> Option<crate::conformance::NeighbourHook> {
        let helper = Arc::clone(self.helper.as_ref().ok().filter(|h| h.is_xdp())?);
        Some(crate::conformance::NeighbourHook(Arc::new(
            move |addr: smoltcp::wire::IpAddress| helper.want_neighbour(addr.into()),
        )))
    }

    /// What `gazellectl lstack show` says of it.
    pub(crate) fn status(&self) -> gazelle_ctl_proto::KernelPathStatus {
        gazelle_ctl_proto::KernelPathStatus {
            iface: self.iface.clone(),
            owned_tcp_ports: self.owned.owned(Proto::Tcp),
            owned_udp_ports: self.owned.owned(Proto::Udp),
            helper: self
                .helper
                .as_ref()
                .map(|h| h.counters())
                .unwrap_or_default(),
            helper_error: self.helper.as_ref().err().cloned(),
        }
    }
}

/// One stack thread's queue pair on the kernel interface.
#[derive(Debug)]
pub struct KernelQueue {
    rx: RxQueue,
    tx: TxQueue,
    /// Frames for the kernel, sent at the end of the pass.
    out: MbufBatch,
    /// When the kernel side is read next, on the stack clock.
    next_rx_ns: u64,
    /// What wakes a sleeping thread when the kernel sent something.
    pub(crate) wakeup: Option<RxWakeup>,
}

impl KernelQueue {
    /// The thread's queue pair `rx`, `tx` on the kernel interface.
    pub fn new(rx: RxQueue, tx: TxQueue) -> Self {
        let wakeup = rx.wakeup();
        Self {
            rx,
            tx,
            out: MbufBatch::new(),
            next_rx_ns: 0,
            wakeup,
        }
    }

    /// Hands `m` to the kernel (in this pass's burst).
    #[inline]
    pub fn give(&mut self, m: Mbuf, stats: &ThreadStats) {
        if let Err(m) = self.out.push(m) {
            self.flush(stats);
            if self.out.push(m).is_err() {
                stats.kernel_dropped.incr();
            }
        }
    }

    /// Hands the kernel a copy of `m` (ARP, NDP, ICMP errors).
    pub fn give_copy(&mut self, m: &Mbuf, pool: &Mempool, stats: &ThreadStats) {
        let Some(mut copy) = pool.alloc() else {
            stats.kernel_dropped.incr();
            return;
        };
        let Some(buf) = copy.append(m.len()) else {
            stats.kernel_dropped.incr();
            return;
        };
        buf.copy_from_slice(m.data());
        self.give(copy, stats);
    }

    /// Sends the kernel's burst; what its queue will not take is dropped
    /// and counted.
    pub fn flush(&mut self, stats: &ThreadStats) {
        if self.out.is_empty() {
            return;
        }
        let sent = self.tx.tx_burst(&mut self.out);
        stats.kernel_rx.add(sent as u64);
        let left = self.out.len();
        if left > 0 {
            stats.kernel_dropped.add(left as u64);
            self.out = MbufBatch::new();
        }
    }

    /// Reads what the kernel sent, if it is time (or `force`), into
    /// `batch`, for the caller to send out on the NIC. Returns how many.
    pub fn receive(&mut self, now_ns: u64, force: bool, batch: &mut MbufBatch) -> usize {
        if !force && now_ns < self.next_rx_ns {
            return 0;
        }
        self.next_rx_ns = now_ns + KERNEL_POLL_NS;
        self.rx.rx_burst(batch)
    }
}

#[cfg(test)]
mod tests {
    use smoltcp::wire::{IpAddress, Ipv4Address};

    use super::*;
    use crate::{classify::FlowKey, ownership::PortClaim};

    fn tcp(port: u16) -> Verdict {
        Verdict::Tcp {
            flow: FlowKey {
                local_addr: IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 2)),
                local_port: port,
                remote_addr: IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 1)),
                remote_port: 40000,
            },
            syn: true,
        }
    }

    fn icmp(v: IpVersion, t: u8) -> Seen {
        Seen {
            ip: Some(v),
            icmp_type: Some(t),
            ..Seen::default()
        }
    }

    #[test]
    fn owned_ports_are_the_stacks_and_the_rest_the_kernels() {
        let owned = std::sync::Arc::new(PortOwnership::default());
        let seen = Seen::default();
        assert_eq!(side(&owned, &tcp(6379), &seen), Side::Kernel);
        let claim = PortClaim::new(&owned, Proto::Tcp, 6379);
        assert_eq!(side(&owned, &tcp(6379), &seen), Side::Stack);
        assert_eq!(side(&owned, &tcp(22), &seen), Side::Kernel);
        assert_eq!(
            side(&owned, &Verdict::Udp { port: 6379 }, &seen),
            Side::Kernel,
            "TCP's claim is not UDP's"
        );
        drop(claim);
        assert_eq!(side(&owned, &tcp(6379), &seen), Side::Kernel);
    }

    #[test]
    fn ping_is_the_kernels_neighbours_and_errors_go_to_both() {
        let owned = PortOwnership::default();
        let control = Verdict::Control { broadcast: false };
        for (v, t) in [
            (IpVersion::Ipv4, 8),
            (IpVersion::Ipv4, 0),
            (IpVersion::Ipv6, 128),
            (IpVersion::Ipv6, 129),
        ] {
            assert_eq!(side(&owned, &control, &icmp(v, t)), Side::Kernel);
        }
        for (v, t) in [
            (IpVersion::Ipv4, 3),
            (IpVersion::Ipv6, 2),
            (IpVersion::Ipv6, 135),
        ] {
            assert_eq!(side(&owned, &control, &icmp(v, t)), Side::Both);
        }
        // ARP: no IP version seen.
        let arp = Verdict::Control { broadcast: true };
        assert_eq!(side(&owned, &arp, &Seen::default()), Side::Both);
        assert_eq!(
            side(
                &owned,
                &Verdict::Drop(DropReason::UnsupportedProtocol),
                &Seen::default()
            ),
            Side::Kernel
        );
        assert_eq!(
            side(
                &owned,
                &Verdict::Drop(DropReason::TcpBadChecksum),
                &Seen::default()
            ),
            Side::Stack,
            "a bad frame stays dropped"
        );
    }
}
