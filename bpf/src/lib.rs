//! gazelle-bpf: the kernel-side helper that keeps the kernel and lstack apart
//! when both serve the same IP address. lstack owns some TCP/UDP ports, the
//! kernel the rest.
//!
//! # The pieces
//!
//! * [`Ownership`]: one per lstack instance. A `BPF_MAP_TYPE_ARRAY` of 2048
//!   `u64` words (`BPF_F_MMAPABLE`), one bit per (protocol, local port):
//!   protocol index `p` (0 = TCP, 1 = UDP), port `n` is bit `n % 64` of word
//!   `(p * 65536 + n) / 64`. A set bit means lstack owns that port on this
//!   instance's address. User space mmaps the 16 KiB and flips bits with
//!   `AtomicU64::fetch_or`/`fetch_and`: taking or releasing a port costs no
//!   syscall. The map is pinned (e.g. `/sys/fs/bpf/gazelle/<name>/own`).
//! * [`TapGuard`]: two TC programs on the exception interface (the tap on
//!   which lstack hands the kernel the frames it does not own):
//!   - `egress_guard` (what the kernel sends) drops the TCP RSTs (IPv4 and
//!     IPv6) whose source port lstack owns, and the ICMP port/protocol
//!     unreachables and ICMPv6 port unreachables whose quoted TCP/UDP packet
//!     went to a port lstack owns: they would reset lstack's peers. The
//!     quoted packet is the one the kernel *received* (from lstack's peer),
//!     so the local port is its *destination* port. (Errors lstack receives,
//!     checked by `xdp_bifurcate`, quote packets lstack sent: there the local
//!     port is the quoted *source* port.)
//!   - `ingress_rpf` (what lstack hands to the kernel) is a strict reverse
//!     path filter: martian sources (0/8, 127/8, multicast, 255.255.255.255,
//!     `::`, `::1`, ff00::/8, the instance's own addresses) are dropped, and so
//!     are sources whose route back (`bpf_fib_lookup`, input lookup on this
//!     ifindex) does not leave through this interface. IPv6 link-local
//!     sources (fe80::/10) are on-link by definition and pass (the lookup
//!     refuses link-local addresses, which would break neighbour discovery);
//!     so does `::` for ICMPv6 (duplicate address detection). `bpf_fib_lookup`
//!     answers `FWD_DISABLED` on an interface without forwarding enabled;
//!     such packets pass and count as `rpf_unchecked`, and the `rp_filter`
//!     sysctl, which [`TapGuard::attach`] sets to 1 as a second line, still
//!     applies to IPv4.
//! * [`XdpBifurcation`]: `xdp_bifurcate` for an interface driven by DPDK's
//!   `net_af_xdp`: TCP/UDP to an owned destination port, ICMP errors quoting
//!   an owned source port, and ARP replies / neighbour advertisements lstack
//!   asked for ([`XdpBifurcation::want_neighbour`]) go to the AF_XDP socket of
//!   the receiving queue (`xsks_map`); everything else to the kernel.
//! * [`Counters`]: per-CPU counters, one per reason, summed over CPUs.
//!
//! The eBPF programs are C (`progs/*.c`), compiled by `build.rs` with clang
//! and embedded; Rust eBPF would need nightly and bpf-linker.
//!
//! # How the programs share the ownership map
//!
//! By pin path. [`Ownership::create`] loads a one-map object (`progs/own.c`)
//! with aya's `EbpfLoader::map_pin_path("own", pin)`, which creates the map and
//! pins it there. [`TapGuard::attach`] and [`XdpBifurcation::attach`] load
//! their objects with the same `map_pin_path("own", pin)`: aya 0.14 then opens
//! the pinned map (`BPF_OBJ_GET`) instead of creating one, and relocates the
//! programs against it. aya 0.14 has no API to hand the loader an existing map
//! fd, and loading everything from one object would tie the map's lifetime to
//! the programs; the pin also lets another process (ltran, gazellectl) open
//! the same map. The pin's directory must be on a bpffs: see
//! [`ensure_bpffs`].
//!
//! # Attachment: links that die with the process
//!
//! On kernels >= 6.6 aya 0.14 attaches TC programs with TCX links
//! (`bpf_link_create`), and XDP programs with an XDP bpf_link on kernels that
//! have it (>= 5.9), falling back to netlink otherwise. A link lives as long as
//! its fd: dropping [`TapGuard`] / [`XdpBifurcation`] detaches, and so does the
//! death of the process, even by SIGKILL (tested). With the netlink fallback
//! (old kernels) aya detaches in `Drop`, and a SIGKILLed process would leave
//! the filter behind. A `clsact` qdisc is still added (an existing one is
//! fine) so the netlink fallback has somewhere to attach.
//!
//! # DPDK 22.11 `net_af_xdp` and a pre-attached program
//!
//! Read from DPDK v22.11 `drivers/net/af_xdp/rte_eth_af_xdp.c` and libxdp
//! 1.3.1 `lib/libxdp/xsk.c` (Debian's DPDK 22.11 PMD links libxdp.so.1):
//!
//! * Without `xdp_prog=`: DPDK calls `xsk_socket__create` with
//!   `libbpf_flags = 0`, so libxdp sets up the XDP program itself. It looks
//!   for an attached program named exactly `xsk_def_prog` (its own default,
//!   with a matching `xsk_prog_version`), alone or inside a libxdp
//!   dispatcher. Any other pre-attached program, `xdp_bifurcate` included, is
//!   not reused: libxdp loads its default program and tries to attach it
//!   through its dispatcher, which refuses an interface that already has a
//!   program not using a dispatcher ("Existing program is not using a
//!   dispatcher, can't replace; unload first", `-EBUSY`); the socket, and so
//!   the port, fails to start. So a pre-attached `xdp_bifurcate` does NOT
//!   work with plain `net_af_xdp`. (libxdp would adopt a program named
//!   `xsk_def_prog` that carries its `xsk_prog_version` BTF variable and an
//!   `xsks_map`; renaming `xdp_bifurcate` to pass as libxdp's own program
//!   was not attempted.)
//! * With `xdp_prog=<path>`: DPDK loads the object itself with libbpf
//!   (`bpf_object__open_file` + `bpf_object__load`: fresh maps, not ours),
//!   requires a map named `xsks_map`, attaches the object's first program
//!   with `XDP_FLAGS_UPDATE_IF_NOEXIST` through netlink (so it also fails if
//!   a program is already attached), passes `XSK_LIBBPF_FLAGS__INHIBIT_PROG_LOAD`
//!   to libxdp, inserts each queue's socket into its `xsks_map`, and detaches
//!   whatever XDP program is on the interface when the port closes. Sharing
//!   our ownership map with that copy would need libbpf's pin-by-name
//!   (`__uint(pinning, LIBBPF_PIN_BY_NAME)`, fixed path
//!   `/sys/fs/bpf/<map name>`), i.e. one instance per host.
//!
//! lstack uses the second path (`flow_bifurcation` on a `net_af_xdp`
//! port): [`xdp_object`] is `xdp_bifurcate` with its `own`, `arp_wanted`
//! and `counters` maps renamed `lstack_xdp_own`, `lstack_xdp_arp`,
//! `lstack_xdp_cnt` and marked `LIBBPF_PIN_BY_NAME`. Checked with Debian's
//! libbpf 1.1.2 (the one the PMD links): `bpf_object__open_file(path,
//! NULL)` + `bpf_object__load` pins them under `/sys/fs/bpf` (which must be
//! a bpffs, else the load fails), and a second load reuses the pinned maps.
//! lstack removes stale pins first ([`remove_xdp_pins`]), writes the object
//! to a file named in `xdp_prog=`, and after EAL init opens the maps with
//! [`Ownership::open_pinned`] and [`XdpPinnedMaps::open`]. Limits: one such
//! program per bpffs (fixed pin names); DPDK attaches it through netlink,
//! so after a SIGKILL it stays attached (it then passes everything: no
//! socket in `xsks_map`) until the next start removes it.
//!
//! Neither path reuses a program attached by [`XdpBifurcation::attach`]:
//! with it, the integrator must fill `xsks_map` with the AF_XDP sockets
//! (e.g. by creating them without DPDK's program management), which DPDK
//! 22.11 does not offer. Without sockets in `xsks_map` the redirect falls
//! back to `XDP_PASS`, which is what the tests check.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use aya::programs::tc::{self, SchedClassifier, TcAttachType};
use aya::programs::{Xdp, XdpMode};
use aya::{include_bytes_aligned, Ebpf, EbpfLoader};
use serde::Serialize;

const OWN_OBJ: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/own.o"));
const TAP_OBJ: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tap_guard.o"));
const XDP_OBJ: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_bifurcate.o"));
const NIC_OBJ: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nic_block.o"));
const XDP_PINNED_OBJ: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_pinned.o"));

/// `xdp_bifurcate` built for DPDK's `net_af_xdp` `xdp_prog=<file>` devarg
/// (`progs/xdp_pinned.c`): its ownership, `arp_wanted` and counters maps
/// carry libbpf's `LIBBPF_PIN_BY_NAME`, so the libbpf inside DPDK pins
/// them at [`XDP_PIN_OWN`], [`XDP_PIN_ARP`] and [`XDP_PIN_COUNTERS`] (or
/// reuses maps already pinned there) when it loads the file; `xsks_map`
/// is DPDK's. Write it to a file before EAL init; after it, open the maps
/// with [`Ownership::open_pinned`] and [`XdpPinnedMaps::open`]. The names
/// are fixed: one such program per bpffs (host).
pub fn xdp_object() -> &'static [u8] {
    XDP_PINNED_OBJ
}

/// libbpf's default pin root, where [`xdp_object`]'s maps are pinned.
pub const XDP_PIN_ROOT: &str = "/sys/fs/bpf";
/// The ownership map of [`xdp_object`].
pub const XDP_PIN_OWN: &str = "/sys/fs/bpf/lstack_xdp_own";
/// The `arp_wanted` map of [`xdp_object`].
pub const XDP_PIN_ARP: &str = "/sys/fs/bpf/lstack_xdp_arp";
/// The counters of [`xdp_object`].
pub const XDP_PIN_COUNTERS: &str = "/sys/fs/bpf/lstack_xdp_cnt";

/// Removes the pins of [`xdp_object`]'s maps (left by a killed process:
/// libbpf would reuse the maps, stale ownership bits included). Missing
/// pins are fine.
pub fn remove_xdp_pins() -> Result<(), Error> {
    for pin in [XDP_PIN_OWN, XDP_PIN_ARP, XDP_PIN_COUNTERS] {
        match fs::remove_file(pin) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("removing stale pin {pin}"))(e)),
        }
    }
    Ok(())
}

/// Name of the ownership map in every object.
const OWN_MAP: &str = "own";
/// 2 protocols x 65536 ports, one bit each.
const OWN_WORDS: usize = 2 * 65536 / 64;
const OWN_BYTES: usize = OWN_WORDS * 8;
/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Errors from creating maps and loading or attaching programs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{0} is not on a bpffs (mount one there, e.g. with gazelle_bpf::ensure_bpffs)")]
    NotBpffs(PathBuf),
    #[error("loading eBPF object: {0}")]
    Ebpf(#[from] aya::EbpfError),
    #[error("eBPF program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("eBPF map: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("adding clsact qdisc: {0}")]
    Tc(#[from] aya::programs::tc::TcError),
    #[error("eBPF object has no {0}")]
    Missing(&'static str),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Transport protocol of an owned port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    const fn index(self) -> usize {
        match self {
            Proto::Tcp => 0,
            Proto::Udp => 1,
        }
    }
}

/// Mounts a bpffs on `dir` unless it already is on one. Returns whether it
/// mounted. `/sys/fs/bpf` is the usual place; systemd mounts it, containers
/// often do not.
pub fn ensure_bpffs(dir: &Path) -> Result<bool, Error> {
    fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    if is_bpffs(dir)? {
        return Ok(false);
    }
    rustix::mount::mount("bpf", dir, "bpf", rustix::mount::MountFlags::empty(), None).map_err(
        |e| Error::Io {
            what: format!("mounting bpffs on {}", dir.display()),
            source: e.into(),
        },
    )?;
    Ok(true)
}

fn is_bpffs(dir: &Path) -> Result<bool, Error> {
    let st = rustix::fs::statfs(dir).map_err(|e| Error::Io {
        what: format!("statfs {}", dir.display()),
        source: e.into(),
    })?;
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// The ownership bitmap of one lstack instance, shared with the programs.
#[derive(Debug)]
pub struct Ownership {
    /// Keeps the map alive (and the fd the mapping came from).
    _map: MapData,
    /// Start of the `OWN_BYTES` shared mapping of the map's values.
    words: NonNull<AtomicU64>,
    pin: PathBuf,
}

// SAFETY: the mapping is only ever accessed through `AtomicU64`, which is
// `Sync`; the pointer stays valid until `Drop` (which needs `&mut self`).
unsafe impl Send for Ownership {}
// SAFETY: as above: shared access is atomic.
unsafe impl Sync for Ownership {}

impl Ownership {
    /// Creates the map and pins it at `pin` (e.g.
    /// `/sys/fs/bpf/gazelle/<name>/own`), replacing a stale pin of the same
    /// path (left by a process that was killed). The pin's directory is
    /// created if missing and must be on a bpffs.
    pub fn create(pin: &Path) -> Result<Self, Error> {
        let dir = pin
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        if !is_bpffs(dir)? {
            return Err(Error::NotBpffs(dir.to_path_buf()));
        }
        match fs::remove_file(pin) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("removing stale pin {}", pin.display()))(e)),
        }
        let mut obj = EbpfLoader::new().map_pin_path(OWN_MAP, pin).load(OWN_OBJ)?;
        let map = match obj.take_map(OWN_MAP) {
            Some(Map::Array(data)) => data,
            _ => return Err(Error::Missing("array map `own`")),
        };
        Self::mapped(map, pin)
    }

    /// Opens the ownership map pinned at `pin` by someone else (e.g. the
    /// libbpf inside DPDK, for [`xdp_object`]) and maps it. The map must be
    /// an mmapable array of 2048 `u64`. Dropping it removes the pin too.
    pub fn open_pinned(pin: &Path) -> Result<Self, Error> {
        let map = MapData::from_pin(pin)?;
        let info = map.info()?;
        if info.max_entries() as usize != OWN_WORDS || info.value_size() != 8 {
            return Err(Error::Missing("2048 x u64 ownership array at the pin"));
        }
        Self::mapped(map, pin)
    }

    fn mapped(map: MapData, pin: &Path) -> Result<Self, Error> {
        // SAFETY: a fresh shared mapping (null hint: the kernel picks the
        // address, so nothing of ours is replaced) of exactly the map's value
        // area: 2048 u64 of an mmapable BPF array. The fd outlives the call;
        // the mapping itself keeps the map alive until munmap.
        let addr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                OWN_BYTES,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                map.fd().as_fd(),
                0,
            )
        }
        .map_err(|e| Error::Io {
            what: "mmap of the ownership map".into(),
            source: e.into(),
        })?;
        let words = NonNull::new(addr.cast::<AtomicU64>()).ok_or(Error::Missing("mmap address"))?;
        Ok(Self {
            _map: map,
            words,
            pin: pin.to_path_buf(),
        })
    }

    /// Where the map is pinned.
    pub fn pin_path(&self) -> &Path {
        &self.pin
    }

    fn word(&self, proto: Proto, port: u16) -> (&AtomicU64, u64) {
        let bit = proto.index() * 65536 + usize::from(port);
        // SAFETY: bit < 2 * 65536 so bit / 64 < OWN_WORDS: in bounds of the
        // mapping, which is page aligned (so 8-byte aligned) and lives as long
        // as `self`. The kernel and the programs only touch these words with
        // plain or atomic 8-byte accesses, never through a Rust reference.
        let word = unsafe { &*self.words.as_ptr().add(bit / 64) };
        (word, 1u64 << (bit % 64))
    }

    /// Marks `port` of `proto` as owned (or not) by lstack: one atomic
    /// read-modify-write on the shared mapping, no syscall.
    pub fn set(&self, proto: Proto, port: u16, owned: bool) {
        let (word, mask) = self.word(proto, port);
        if owned {
            word.fetch_or(mask, Ordering::SeqCst);
        } else {
            word.fetch_and(!mask, Ordering::SeqCst);
        }
    }

    /// Whether lstack owns `port` of `proto`.
    pub fn owns(&self, proto: Proto, port: u16) -> bool {
        let (word, mask) = self.word(proto, port);
        word.load(Ordering::SeqCst) & mask != 0
    }
}

impl Drop for Ownership {
    fn drop(&mut self) {
        // SAFETY: `words` is the start of the OWN_BYTES mapping made in
        // `create`; `&mut self` means no reference into it is alive.
        let _ = unsafe { rustix::mm::munmap(self.words.as_ptr().cast(), OWN_BYTES) };
        let _ = fs::remove_file(&self.pin);
        if let Some(dir) = self.pin.parent() {
            // Only succeeds if empty; a bpffs mount point stays anyway.
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Counter indexes, as in `progs/common.h`.
#[derive(Debug, Clone, Copy)]
#[repr(u32)]
enum Counter {
    EgressPassed = 0,
    RstDropped = 1,
    IcmpUnreachDropped = 2,
    IngressPassed = 3,
    RpfMartianDropped = 4,
    RpfNoRouteDropped = 5,
    RpfUnchecked = 6,
    XdpRedirected = 7,
    XdpNoSocket = 8,
    XdpPassed = 9,
    XdpNeigh = 10,
    NicBlocked = 11,
}

/// Packet counters, summed over CPUs. [`TapGuard::counters`] fills the TC
/// ones, [`XdpBifurcation::counters`] the `xdp_` ones; the others stay 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Frames the kernel sent that egress_guard let through.
    pub egress_passed: u64,
    /// Kernel RSTs from a port lstack owns, dropped.
    pub rst_dropped: u64,
    /// Kernel ICMP/ICMPv6 unreachables quoting a port lstack owns, dropped.
    pub icmp_unreach_dropped: u64,
    /// Frames lstack handed to the kernel that ingress_rpf let through.
    pub ingress_passed: u64,
    /// Martian or own source address, dropped.
    pub rpf_martian_dropped: u64,
    /// No route back through this interface, dropped.
    pub rpf_no_route_dropped: u64,
    /// Let through unchecked: forwarding is off on the interface, so
    /// `bpf_fib_lookup` would not look up (rp_filter still applies).
    pub rpf_unchecked: u64,
    /// Redirected to an AF_XDP socket.
    pub xdp_redirected: u64,
    /// For lstack, but no AF_XDP socket on the queue: passed to the kernel.
    pub xdp_no_socket: u64,
    /// Not for lstack: passed to the kernel.
    pub xdp_passed: u64,
    /// ARP replies / neighbour advertisements lstack asked for (also counted
    /// in `xdp_redirected` or `xdp_no_socket`).
    pub xdp_neigh: u64,
    /// Frames the kernel did not take on a `net_af_packet` port's interface
    /// ([`NicBlock`]).
    pub nic_blocked: u64,
}

impl Counters {
    /// The counters as (name, value) pairs, for the control protocol.
    pub fn named(&self) -> [(&'static str, u64); 12] {
        [
            ("egress_passed", self.egress_passed),
            ("rst_dropped", self.rst_dropped),
            ("icmp_unreach_dropped", self.icmp_unreach_dropped),
            ("ingress_passed", self.ingress_passed),
            ("rpf_martian_dropped", self.rpf_martian_dropped),
            ("rpf_no_route_dropped", self.rpf_no_route_dropped),
            ("rpf_unchecked", self.rpf_unchecked),
            ("xdp_redirected", self.xdp_redirected),
            ("xdp_no_socket", self.xdp_no_socket),
            ("xdp_passed", self.xdp_passed),
            ("xdp_neigh", self.xdp_neigh),
            ("nic_blocked", self.nic_blocked),
        ]
    }
}

fn read_counters(obj: &Ebpf) -> Counters {
    match obj.map("counters") {
        Some(map) => counters_of(map),
        None => Counters::default(),
    }
}

fn counters_of(map: &Map) -> Counters {
    let Ok(arr) = PerCpuArray::<_, u64>::try_from(map) else {
        return Counters::default();
    };
    let get = |c: Counter| -> u64 {
        arr.get(&(c as u32), 0)
            .map(|v| v.iter().copied().fold(0u64, u64::wrapping_add))
            .unwrap_or(0)
    };
    Counters {
        egress_passed: get(Counter::EgressPassed),
        rst_dropped: get(Counter::RstDropped),
        icmp_unreach_dropped: get(Counter::IcmpUnreachDropped),
        ingress_passed: get(Counter::IngressPassed),
        rpf_martian_dropped: get(Counter::RpfMartianDropped),
        rpf_no_route_dropped: get(Counter::RpfNoRouteDropped),
        rpf_unchecked: get(Counter::RpfUnchecked),
        xdp_redirected: get(Counter::XdpRedirected),
        xdp_no_socket: get(Counter::XdpNoSocket),
        xdp_passed: get(Counter::XdpPassed),
        xdp_neigh: get(Counter::XdpNeigh),
        nic_blocked: get(Counter::NicBlocked),
    }
}

/// Loads `image` with the `own` map taken from `own`'s pin.
fn load_with_own(image: &[u8], own: &Ownership) -> Result<Ebpf, Error> {
    Ok(EbpfLoader::new()
        .map_pin_path(OWN_MAP, own.pin_path())
        .load(image)?)
}

/// The instance's own addresses, martian as sources on the tap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuardAddrs {
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

/// `struct guard_cfg` of progs/tap_guard.c.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct GuardCfg {
    has_ipv4: u32,
    ipv4: [u8; 4],
    has_ipv6: u32,
    ipv6: [u8; 16],
}

// SAFETY: repr(C), only integer fields and arrays of u8, no padding
// (4 + 4 + 4 + 16 bytes, alignment 4): every bit pattern is valid.
unsafe impl aya::Pod for GuardCfg {}

/// `egress_guard` and `ingress_rpf` attached to an exception interface.
/// Dropping it detaches both.
#[derive(Debug)]
pub struct TapGuard {
    obj: Ebpf,
}

impl TapGuard {
    /// Adds clsact to `ifname` (an existing one is fine), attaches
    /// `egress_guard` (egress) and `ingress_rpf` (ingress) using `own`, and
    /// sets `net.ipv4.conf.<ifname>.rp_filter` to 1.
    pub fn attach(ifname: &str, own: &Ownership, addrs: GuardAddrs) -> Result<Self, Error> {
        add_clsact(ifname)?;
        let mut obj = load_with_own(TAP_OBJ, own)?;
        let cfg = GuardCfg {
            has_ipv4: u32::from(addrs.ipv4.is_some()),
            ipv4: addrs.ipv4.map(|a| a.octets()).unwrap_or_default(),
            has_ipv6: u32::from(addrs.ipv6.is_some()),
            ipv6: addrs.ipv6.map(|a| a.octets()).unwrap_or_default(),
        };
        let mut cfg_map = Array::<_, GuardCfg>::try_from(
            obj.map_mut("guard_cfg")
                .ok_or(Error::Missing("map `guard_cfg`"))?,
        )?;
        cfg_map.set(0, cfg, 0)?;
        for (name, at) in [
            ("egress_guard", TcAttachType::Egress),
            ("ingress_rpf", TcAttachType::Ingress),
        ] {
            let prog: &mut SchedClassifier = obj
                .program_mut(name)
                .ok_or(Error::Missing("TC program"))?
                .try_into()?;
            prog.load()?;
            prog.attach(ifname, at)?;
        }
        let sysctl = format!("/proc/sys/net/ipv4/conf/{ifname}/rp_filter");
        fs::write(&sysctl, "1").map_err(io_err(format!("writing {sysctl}")))?;
        Ok(Self { obj })
    }

    /// Current counters (TC ones).
    pub fn counters(&self) -> Counters {
        read_counters(&self.obj)
    }
}

/// `nic_block` on the ingress of the kernel interface under a DPDK
/// `net_af_packet` port: DPDK's packet socket still sees every frame, the
/// kernel none (its address is on the exception interface). Dropping it
/// detaches.
#[derive(Debug)]
pub struct NicBlock {
    obj: Ebpf,
}

impl NicBlock {
    /// Adds clsact to `ifname` (an existing one is fine) and attaches
    /// `nic_block` to its ingress.
    pub fn attach(ifname: &str, own: &Ownership) -> Result<Self, Error> {
        add_clsact(ifname)?;
        let mut obj = load_with_own(NIC_OBJ, own)?;
        let prog: &mut SchedClassifier = obj
            .program_mut("nic_block")
            .ok_or(Error::Missing("TC program"))?
            .try_into()?;
        prog.load()?;
        prog.attach(ifname, TcAttachType::Ingress)?;
        Ok(Self { obj })
    }

    /// Current counters (`nic_blocked`).
    pub fn counters(&self) -> Counters {
        read_counters(&self.obj)
    }
}

/// Adds a clsact qdisc to `ifname`; one already there is fine.
fn add_clsact(ifname: &str) -> Result<(), Error> {
    if let Err(e) = tc::qdisc_add_clsact(ifname) {
        let exists = match &e {
            tc::TcError::NetlinkError(n) => n.raw_os_error() == Some(libc::EEXIST),
            tc::TcError::AlreadyAttached => true,
            _ => false,
        };
        if !exists {
            return Err(e.into());
        }
    }
    Ok(())
}

/// `xdp_bifurcate` attached to an interface. Dropping it detaches.
#[derive(Debug)]
pub struct XdpBifurcation {
    obj: Ebpf,
    arp_wanted: Mutex<HashMap<MapData, [u8; 16], u64>>,
}

impl XdpBifurcation {
    /// Attaches `xdp_bifurcate` to `ifname` using `own` (kernel-chosen mode:
    /// native if the driver has it, generic otherwise).
    pub fn attach(ifname: &str, own: &Ownership) -> Result<Self, Error> {
        let mut obj = load_with_own(XDP_OBJ, own)?;
        let arp_wanted = HashMap::try_from(
            obj.take_map("arp_wanted")
                .ok_or(Error::Missing("map `arp_wanted`"))?,
        )?;
        let prog: &mut Xdp = obj
            .program_mut("xdp_bifurcate")
            .ok_or(Error::Missing("XDP program"))?
            .try_into()?;
        prog.load()?;
        prog.attach(ifname, XdpMode::Default)?;
        Ok(Self {
            obj,
            arp_wanted: Mutex::new(arp_wanted),
        })
    }

    /// Sends ARP replies / neighbour advertisements for `addr` to lstack for
    /// the next `for_ns` nanoseconds. One map update syscall.
    pub fn want_neighbour(&self, addr: IpAddr, for_ns: u64) -> Result<(), Error> {
        want(&self.arp_wanted, addr, for_ns)
    }

    /// Current counters (`xdp_` ones).
    pub fn counters(&self) -> Counters {
        read_counters(&self.obj)
    }
}

/// The `arp_wanted` map and counters of the [`xdp_object`] DPDK loaded,
/// opened from their pins (the ownership map: [`Ownership::open_pinned`]).
#[derive(Debug)]
pub struct XdpPinnedMaps {
    arp_wanted: Mutex<HashMap<MapData, [u8; 16], u64>>,
    counters: Map,
}

impl XdpPinnedMaps {
    /// Opens [`XDP_PIN_ARP`] and [`XDP_PIN_COUNTERS`].
    pub fn open() -> Result<Self, Error> {
        let arp = HashMap::try_from(Map::HashMap(MapData::from_pin(XDP_PIN_ARP)?))?;
        let counters = Map::PerCpuArray(MapData::from_pin(XDP_PIN_COUNTERS)?);
        Ok(Self {
            arp_wanted: Mutex::new(arp),
            counters,
        })
    }

    /// As [`XdpBifurcation::want_neighbour`].
    pub fn want_neighbour(&self, addr: IpAddr, for_ns: u64) -> Result<(), Error> {
        want(&self.arp_wanted, addr, for_ns)
    }

    /// Current counters (`xdp_` ones).
    pub fn counters(&self) -> Counters {
        counters_of(&self.counters)
    }
}

/// Sends ARP replies / neighbour advertisements for `addr` to lstack for
/// the next `for_ns` nanoseconds.
fn want(
    map: &Mutex<HashMap<MapData, [u8; 16], u64>>,
    addr: IpAddr,
    for_ns: u64,
) -> Result<(), Error> {
    let key = match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    };
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let now_ns = u64::try_from(now.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        + u64::try_from(now.tv_nsec).unwrap_or(0);
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    map.insert(key, now_ns.saturating_add(for_ns), 0)?;
    Ok(())
}
