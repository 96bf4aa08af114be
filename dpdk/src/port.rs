//! Ethdev ports: configured, started and stopped as a whole; queues handed out
//! once each.

use std::{
    ffi::{CStr, CString},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use dpdk_sys::flags;

use crate::{mbuf::MbufBatch, DpdkError, Eal, Mempool};

/// How to bring a port up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    /// Receive queues wanted; clamped to what the port offers.
    pub rx_queues: u16,
    /// Transmit queues wanted; clamped to what the port offers.
    pub tx_queues: u16,
    /// Descriptors per receive queue (adjusted to the driver's limits).
    pub rx_desc: u16,
    /// Descriptors per transmit queue (adjusted to the driver's limits).
    pub tx_desc: u16,
    /// Receive every frame, not only those for the port's MAC.
    pub promiscuous: bool,
    /// Use receive and transmit checksum offloads where the port has them.
    pub checksum_offload: bool,
    /// Ask for receive interrupts, so a thread can sleep until frames
    /// arrive ([`RxQueue::wakeup`]); a port that has none is configured
    /// without them.
    pub rx_interrupts: bool,
    /// Use the VLAN strip (receive) and insert (transmit) offloads where
    /// the port has them, each on its own ([`PortInfo::rx_vlan_strip`],
    /// [`PortInfo::tx_vlan_insert`]). Only for a port whose user is on a
    /// VLAN: a stripped frame keeps its tag in the mbuf's metadata only
    /// ([`crate::Mbuf::rx_vlan_stripped`]).
    pub vlan_offload: bool,
}

impl Default for PortConfig {
    fn default() -> Self {
        Self {
            rx_queues: 1,
            tx_queues: 1,
            rx_desc: 1024,
            tx_desc: 1024,
            promiscuous: false,
            checksum_offload: true,
            rx_interrupts: false,
            vlan_offload: false,
        }
    }
}

/// What a port is and can do, read at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// The port id.
    pub port_id: u16,
    /// Device name, e.g. `net_af_packet0` or a PCI address.
    pub name: String,
    /// Driver name, e.g. `net_af_packet`.
    pub driver: String,
    /// Most receive queues the port offers.
    pub max_rx_queues: u16,
    /// Most transmit queues the port offers.
    pub max_tx_queues: u16,
    /// Receive queues configured.
    pub rx_queues: u16,
    /// Transmit queues configured.
    pub tx_queues: u16,
    /// Receive descriptors per queue after adjustment.
    pub rx_desc: u16,
    /// Transmit descriptors per queue after adjustment.
    pub tx_desc: u16,
    /// Receive offloads enabled (`RTE_ETH_RX_OFFLOAD_*`).
    pub rx_offloads: u64,
    /// Transmit offloads enabled (`RTE_ETH_TX_OFFLOAD_*`).
    pub tx_offloads: u64,
    /// NUMA socket of the device (-1 if unknown).
    pub socket: i32,
    /// The kernel interface behind the port (`net_af_packet`, `net_tap`,
    /// `net_af_xdp`...), 0 if none.
    pub if_index: u32,
    /// Receive interrupts were configured.
    pub rx_interrupts: bool,
}

impl PortInfo {
    /// Whether the port verifies IPv4/TCP/UDP checksums on receive.
    pub fn rx_checksum(&self) -> bool {
        let all = flags::RX_OFFLOAD_IPV4_CKSUM
            | flags::RX_OFFLOAD_TCP_CKSUM
            | flags::RX_OFFLOAD_UDP_CKSUM;
        self.rx_offloads & all == all
    }

    /// Whether the port computes IPv4/TCP/UDP checksums on transmit.
    pub fn tx_checksum(&self) -> bool {
        let all = flags::TX_OFFLOAD_IPV4_CKSUM
            | flags::TX_OFFLOAD_TCP_CKSUM
            | flags::TX_OFFLOAD_UDP_CKSUM;
        self.tx_offloads & all == all
    }

    /// Whether the port takes 802.1Q tags out of received frames, into
    /// the mbuf's metadata ([`crate::Mbuf::rx_vlan_stripped`]).
    pub fn rx_vlan_strip(&self) -> bool {
        self.rx_offloads & flags::RX_OFFLOAD_VLAN_STRIP != 0
    }

    /// Whether the port inserts the 802.1Q tag an mbuf asks for on
    /// transmit ([`crate::Mbuf::request_vlan_insert`]).
    pub fn tx_vlan_insert(&self) -> bool {
        self.tx_offloads & flags::TX_OFFLOAD_VLAN_INSERT != 0
    }
}

/// Link state as last read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStatus {
    /// Carrier present.
    pub up: bool,
    /// Speed in Mb/s (0 when unknown).
    pub speed_mbps: u32,
    /// Full duplex.
    pub full_duplex: bool,
}

/// Port counters (`rte_eth_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets the NIC dropped for lack of rx descriptors.
    pub rx_missed: u64,
    /// Erroneous received packets.
    pub rx_errors: u64,
    /// Failed transmissions.
    pub tx_errors: u64,
    /// Receive mbuf allocation failures.
    pub rx_nombuf: u64,
}

#[derive(Debug)]
struct PortShared {
    info: PortInfo,
    started: AtomicBool,
    // Receive queues hold mbufs of this pool: it must outlive the port.
    _pool: Arc<Mempool>,
}

/// How many ports the linked DPDK can address (`RTE_MAX_ETHPORTS` of its
/// build): port ids run from 0 below this.
pub const MAX_ETHPORTS: u16 = dpdk_sys::RTE_MAX_ETHPORTS as u16;

/// A configured, started ethdev port. Stopped and closed on drop once every
/// queue handle is gone too.
#[derive(Debug)]
pub struct Port {
    shared: Arc<PortShared>,
    queues: Vec<(RxQueue, TxQueue)>,
}

impl Port {
    /// Finds a port by device name (e.g. `net_af_packet0`).
    pub fn id_by_name(_eal: &Eal, name: &str) -> Result<u16, DpdkError> {
        let c_name = CString::new(name)
            .map_err(|_| DpdkError::from_errno(format!("port name {name:?}"), libc::EINVAL))?;
        let mut id = 0u16;
        // SAFETY: c_name is a valid C string and id a valid out-pointer.
        let ret = unsafe { dpdk_sys::rte_eth_dev_get_port_by_name(c_name.as_ptr(), &mut id) };
        DpdkError::check(ret, || format!("finding DPDK port {name:?}"))?;
        Ok(id)
    }

    /// The MAC address of port `port_id` (configured or not).
    pub fn mac_by_id(_eal: &Eal, port_id: u16) -> [u8; 6] {
        mac_of(port_id)
    }

    /// Link state of port `port_id`, without waiting.
    pub fn link_by_id(_eal: &Eal, port_id: u16) -> LinkStatus {
        link_of(port_id)
    }

    /// Counters of port `port_id`.
    pub fn stats_by_id(_eal: &Eal, port_id: u16) -> Result<PortStats, DpdkError> {
        stats_of(port_id)
    }

    /// Ports available to this process.
    pub fn count(_eal: &Eal) -> u16 {
        // SAFETY: the EAL is initialised.
        unsafe { dpdk_sys::rte_eth_dev_count_avail() }
    }

    /// Configures port `port_id` with `config`, sets up its queues with
    /// buffers from `pool`, and starts it.
    pub fn open(
        eal: &Eal,
        port_id: u16,
        config: &PortConfig,
        pool: Arc<Mempool>,
    ) -> Result<Self, DpdkError> {
        let _ = eal;
        // SAFETY: any port id may be asked about.
        if unsafe { dpdk_sys::rte_eth_dev_is_valid_port(port_id) } == 0 {
            return Err(DpdkError::from_errno(
                format!("opening DPDK port {port_id}: no such port"),
                libc::ENODEV,
            ));
        }
        let mut dev_info = dpdk_sys::rte_eth_dev_info::default();
        // SAFETY: port_id is valid and dev_info a valid out-pointer.
        let ret = unsafe { dpdk_sys::rte_eth_dev_info_get(port_id, &mut dev_info) };
        DpdkError::check(ret, || format!("reading device info of port {port_id}"))?;

        let name = port_name(port_id);
        let driver = if dev_info.driver_name.is_null() {
            String::new()
        } else {
            // SAFETY: the driver name is a static C string of the PMD.
            unsafe { CStr::from_ptr(dev_info.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        let rx_queues = config.rx_queues.clamp(1, dev_info.max_rx_queues.max(1));
        let tx_queues = config.tx_queues.clamp(1, dev_info.max_tx_queues.max(1));

        let mut conf = dpdk_sys::rte_eth_conf::default();
        let mut rx_offloads = 0;
        let mut tx_offloads = 0;
        if config.checksum_offload {
            let rx_want = flags::RX_OFFLOAD_IPV4_CKSUM
                | flags::RX_OFFLOAD_TCP_CKSUM
                | flags::RX_OFFLOAD_UDP_CKSUM;
            let tx_want = flags::TX_OFFLOAD_IPV4_CKSUM
                | flags::TX_OFFLOAD_TCP_CKSUM
                | flags::TX_OFFLOAD_UDP_CKSUM;
            if dev_info.rx_offload_capa & rx_want == rx_want {
                rx_offloads |= rx_want;
            }
            if dev_info.tx_offload_capa & tx_want == tx_want {
                tx_offloads |= tx_want;
            }
        }
        if config.vlan_offload {
            rx_offloads |= dev_info.rx_offload_capa & flags::RX_OFFLOAD_VLAN_STRIP;
            tx_offloads |= dev_info.tx_offload_capa & flags::TX_OFFLOAD_VLAN_INSERT;
        }
        if dev_info.tx_offload_capa & flags::TX_OFFLOAD_MBUF_FAST_FREE != 0 {
            // Every mbuf we send comes from one pool with refcount 1.
            tx_offloads |= flags::TX_OFFLOAD_MBUF_FAST_FREE;
        }
        conf.rxmode.offloads = rx_offloads;
        conf.txmode.offloads = tx_offloads;
        if rx_queues > 1 && dev_info.flow_type_rss_offloads != 0 {
            conf.rxmode.mq_mode = dpdk_sys::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = dev_info.flow_type_rss_offloads;
        }

        // af_packet has no receive interrupts: its sockets are the wakeup
        // (see RxQueue::wakeup).
        let mut rx_interrupts = config.rx_interrupts && driver != "net_af_packet";
        if rx_interrupts {
            conf.intr_conf.set_rxq(1);
            // SAFETY: conf is a fully initialised rte_eth_conf.
            let ret =
                unsafe { dpdk_sys::rte_eth_dev_configure(port_id, rx_queues, tx_queues, &conf) };
            if ret < 0 {
                tracing::info!(
                    port_id,
                    driver,
                    ret,
                    "no receive interrupts on this port: its threads poll while idle"
                );
                conf.intr_conf.set_rxq(0);
                rx_interrupts = false;
            }
        }
        let ret = if rx_interrupts {
            0
        } else {
            // SAFETY: conf is a fully initialised rte_eth_conf.
            unsafe { dpdk_sys::rte_eth_dev_configure(port_id, rx_queues, tx_queues, &conf) }
        };
        DpdkError::check(ret, || {
            format!(
                "configuring port {port_id} ({name}) with {rx_queues} rx / {tx_queues} tx queues"
            )
        })?;

        let mut rx_desc = config.rx_desc;
        let mut tx_desc = config.tx_desc;
        // SAFETY: valid port and out-pointers.
        let ret = unsafe {
            dpdk_sys::rte_eth_dev_adjust_nb_rx_tx_desc(port_id, &mut rx_desc, &mut tx_desc)
        };
        DpdkError::check(ret, || {
            format!("adjusting descriptor counts of port {port_id}")
        })?;

        // SAFETY: valid port.
        let socket = unsafe { dpdk_sys::rte_eth_dev_socket_id(port_id) };
        let socket_u = u32::try_from(socket).unwrap_or(dpdk_sys::SOCKET_ID_ANY as u32);
        for q in 0..rx_queues {
            let mut rxconf = dev_info.default_rxconf;
            rxconf.offloads = rx_offloads;
            // SAFETY: port configured; rxconf and the pool are valid.
            let ret = unsafe {
                dpdk_sys::rte_eth_rx_queue_setup(
                    port_id,
                    q,
                    rx_desc,
                    socket_u,
                    &rxconf,
                    pool.as_ptr().cast(),
                )
            };
            DpdkError::check(ret, || {
                format!("setting up rx queue {q} of port {port_id} ({rx_desc} descriptors)")
            })?;
        }
        for q in 0..tx_queues {
            let mut txconf = dev_info.default_txconf;
            txconf.offloads = tx_offloads;
            // SAFETY: port configured; txconf valid.
            let ret =
                unsafe { dpdk_sys::rte_eth_tx_queue_setup(port_id, q, tx_desc, socket_u, &txconf) };
            DpdkError::check(ret, || {
                format!("setting up tx queue {q} of port {port_id} ({tx_desc} descriptors)")
            })?;
        }
        // SAFETY: port configured with all queues set up.
        let ret = unsafe { dpdk_sys::rte_eth_dev_start(port_id) };
        DpdkError::check(ret, || format!("starting port {port_id} ({name})"))?;
        if config.promiscuous {
            // SAFETY: started port. Some virtual PMDs do not support it: not fatal.
            let ret = unsafe { dpdk_sys::rte_eth_promiscuous_enable(port_id) };
            if ret < 0 {
                tracing::debug!(port_id, ret, "promiscuous mode not supported");
            }
        }
        // Multicast is needed for IPv6 neighbour discovery.
        // SAFETY: started port.
        let _ = unsafe { dpdk_sys::rte_eth_allmulticast_enable(port_id) };

        let info = PortInfo {
            port_id,
            name,
            driver,
            max_rx_queues: dev_info.max_rx_queues,
            max_tx_queues: dev_info.max_tx_queues,
            rx_queues,
            tx_queues,
            rx_desc,
            tx_desc,
            rx_offloads,
            tx_offloads,
            socket,
            if_index: dev_info.if_index,
            rx_interrupts,
        };
        tracing::info!(?info, "DPDK port started");
        let shared = Arc::new(PortShared {
            info,
            started: AtomicBool::new(true),
            _pool: pool,
        });
        let queues = (0..rx_queues.max(tx_queues))
            .filter(|q| *q < rx_queues && *q < tx_queues)
            .map(|q| {
                (
                    RxQueue {
                        port: Arc::clone(&shared),
                        queue: q,
                    },
                    TxQueue {
                        port: Arc::clone(&shared),
                        queue: q,
                    },
                )
            })
            .collect();
        Ok(Self { shared, queues })
    }

    /// What the port is, as configured.
    pub fn info(&self) -> &PortInfo {
        &self.shared.info
    }

    /// The port id.
    pub fn id(&self) -> u16 {
        self.shared.info.port_id
    }

    /// Takes the (rx, tx) queue pairs; each can be handed to one thread.
    /// Returns an empty list on a second call.
    pub fn take_queues(&mut self) -> Vec<(RxQueue, TxQueue)> {
        std::mem::take(&mut self.queues)
    }

    /// The port's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        mac_of(self.id())
    }

    /// Link state, without waiting.
    pub fn link(&self) -> LinkStatus {
        link_of(self.id())
    }

    /// Port counters.
    pub fn stats(&self) -> Result<PortStats, DpdkError> {
        stats_of(self.id())
    }

    /// Sets the port's MTU (bytes of IP packet, without the Ethernet
    /// header); a `net_af_packet` port sets its kernel interface's.
    pub fn set_mtu(&mut self, mtu: u16) -> Result<(), DpdkError> {
        // SAFETY: valid port id.
        let ret = unsafe { dpdk_sys::rte_eth_dev_set_mtu(self.id(), mtu) };
        DpdkError::check(ret, || {
            format!("setting the MTU of port {} to {mtu}", self.id())
        })?;
        Ok(())
    }

    /// Sets the port's MAC address (a bond's slaves all take the bond's).
    pub fn set_mac(&mut self, mac: [u8; 6]) -> Result<(), DpdkError> {
        let mut addr = dpdk_sys::rte_ether_addr { addr_bytes: mac };
        // SAFETY: valid port and address.
        let ret = unsafe { dpdk_sys::rte_eth_dev_default_mac_addr_set(self.id(), &mut addr) };
        DpdkError::check(ret, || {
            format!("setting the MAC address of port {}", self.id())
        })?;
        Ok(())
    }
}

impl Drop for PortShared {
    fn drop(&mut self) {
        let id = self.info.port_id;
        if self.started.swap(false, Ordering::AcqRel) {
            // SAFETY: no queue handle is left (this is the last Arc), so no
            // thread is inside a burst call on this port.
            unsafe {
                dpdk_sys::rte_eth_dev_stop(id);
                dpdk_sys::rte_eth_dev_close(id);
            }
        }
    }
}

fn link_of(port_id: u16) -> LinkStatus {
    let mut link = dpdk_sys::rte_eth_link::default();
    // SAFETY: an out-pointer; DPDK checks the port id.
    unsafe { dpdk_sys::rte_eth_link_get_nowait(port_id, &mut link) };
    LinkStatus {
        up: link.link_status() != 0,
        speed_mbps: link.link_speed,
        full_duplex: link.link_duplex() != 0,
    }
}

fn port_name(port_id: u16) -> String {
    let mut buf = [0 as std::ffi::c_char; dpdk_sys::RTE_ETH_NAME_MAX_LEN as usize];
    // SAFETY: buf is RTE_ETH_NAME_MAX_LEN bytes as the API requires.
    let ret = unsafe { dpdk_sys::rte_eth_dev_get_name_by_port(port_id, buf.as_mut_ptr()) };
    if ret < 0 {
        return format!("port{port_id}");
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn mac_of(port_id: u16) -> [u8; 6] {
    let mut addr = dpdk_sys::rte_ether_addr::default();
    // SAFETY: valid port and out-pointer.
    unsafe { dpdk_sys::rte_eth_macaddr_get(port_id, &mut addr) };
    addr.addr_bytes
}

/// The port's counters. On a `net_af_packet` port, frames the kernel
/// dropped at the PMD's full receive rings count as missed, as a NIC
/// counts frames it had no descriptor for (the PMD itself reports none;
/// see [`crate::af_packet`]).
fn stats_of(port_id: u16) -> Result<PortStats, DpdkError> {
    let mut s = dpdk_sys::rte_eth_stats::default();
    // SAFETY: valid port and out-pointer.
    let ret = unsafe { dpdk_sys::rte_eth_stats_get(port_id, &mut s) };
    DpdkError::check(ret, || format!("reading stats of port {port_id}"))?;
    let mut kernel_drops = 0;
    let mut dev_info = dpdk_sys::rte_eth_dev_info::default();
    // SAFETY: port_id is valid (stats were read) and dev_info a valid out-pointer.
    if unsafe { dpdk_sys::rte_eth_dev_info_get(port_id, &mut dev_info) } == 0
        && !dev_info.driver_name.is_null()
        && dev_info.if_index != 0
    {
        // SAFETY: the driver name is a static C string of the PMD.
        let driver = unsafe { CStr::from_ptr(dev_info.driver_name) };
        if driver.to_bytes() == b"net_af_packet" {
            kernel_drops = crate::af_packet::socket_drops(dev_info.if_index);
        }
    }
    Ok(PortStats {
        rx_packets: s.ipackets,
        tx_packets: s.opackets,
        rx_bytes: s.ibytes,
        tx_bytes: s.obytes,
        rx_missed: s.imissed + kernel_drops,
        rx_errors: s.ierrors,
        tx_errors: s.oerrors,
        rx_nombuf: s.rx_nombuf,
    })
}

/// One receive queue of a port. `Send`, not `Sync`: one thread polls it.
#[derive(Debug)]
pub struct RxQueue {
    port: Arc<PortShared>,
    queue: u16,
}

impl RxQueue {
    /// Fills the free slots of `batch` with received packets; returns how many
    /// arrived.
    #[inline]
    pub fn rx_burst(&mut self, batch: &mut MbufBatch) -> usize {
        self.rx_burst_max(batch, crate::mbuf::BURST_SIZE)
    }

    /// As [`RxQueue::rx_burst`], receiving at most `max` frames.
    pub fn rx_burst_max(&mut self, batch: &mut MbufBatch, max: usize) -> usize {
        let (slots, room) = batch.spare_raw();
        let room = room.min(max);
        // SAFETY: this handle is the only user of the queue (not Sync, taken
        // once); `slots` has room for `room` pointers.
        let n = unsafe {
            dpdk_sys::shim_rte_eth_rx_burst(self.port.info.port_id, self.queue, slots, room as u16)
        };
        batch.filled(usize::from(n));
        usize::from(n)
    }

    /// The queue index.
    pub fn index(&self) -> u16 {
        self.queue
    }

    /// What the port is.
    pub fn port_info(&self) -> &PortInfo {
        &self.port.info
    }

    /// How a thread that found this queue empty can sleep until frames
    /// arrive, if it can: the PMD's packet sockets on a `net_af_packet`
    /// port (readable while their ring holds frames), or the queue's
    /// receive interrupt where the port was configured with one.
    pub fn wakeup(&self) -> Option<RxWakeup> {
        let info = &self.port.info;
        if info.driver == "net_af_packet" && info.if_index != 0 {
            let fds = crate::af_packet::socket_fds(info.if_index);
            return (!fds.is_empty()).then_some(RxWakeup::Readable(fds));
        }
        if info.driver == "net_af_xdp" {
            let fds = crate::af_xdp::socket_fds();
            return (!fds.is_empty()).then_some(RxWakeup::Readable(fds));
        }
        // net_memif (DPDK 22.11) has no receive interrupt: its
        // `rx_queue_intr_enable` refuses, and the queue has no descriptor.
        if !info.rx_interrupts || info.driver == "net_memif" {
            return None;
        }
        // SAFETY: a started port configured with receive interrupts.
        let fd = unsafe { dpdk_sys::rte_eth_dev_rx_intr_ctl_q_get_fd(info.port_id, self.queue) };
        (fd >= 0).then(|| {
            // An eventfd (vfio, memif) stays readable until read; other
            // drivers hand out the queue's own descriptor (net_tap: the tap
            // queue, where a read would take a frame), readable while frames
            // wait: receiving empties it.
            let eventfd = std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .is_ok_and(|l| l.as_os_str() == "anon_inode:[eventfd]");
            RxWakeup::Interrupt { fd, eventfd }
        })
    }

    /// Arms the queue's receive interrupt ([`RxWakeup::Interrupt`]) before a
    /// sleep; false if the driver refused. Frames that arrived before this
    /// raise nothing: receive once more after arming.
    pub fn arm_interrupt(&self) -> bool {
        // SAFETY: valid port and queue; the driver checks support.
        unsafe { dpdk_sys::rte_eth_dev_rx_intr_enable(self.port.info.port_id, self.queue) == 0 }
    }

    /// Disarms the receive interrupt after a sleep.
    pub fn disarm_interrupt(&self) {
        // SAFETY: valid port and queue.
        let _ =
            unsafe { dpdk_sys::rte_eth_dev_rx_intr_disable(self.port.info.port_id, self.queue) };
    }
}

/// Sleeps until frames arrive at one of the queues `rx` describes (none:
/// the timeout only), one of `wake` polls readable (eventfds of the caller's),
/// one of `extra` (the caller's other descriptors, with the events it waits
/// for; their `revents` are filled in) is ready, or `timeout` passes. An
/// interrupt eventfd that fired is read empty; `wake` is the caller's to
/// empty. Arm interrupts first ([`RxQueue::arm_interrupt`]).
pub fn wait_for_frames<'a>(
    wake: &[std::os::fd::BorrowedFd<'_>],
    rx: impl IntoIterator<Item = &'a RxWakeup>,
    extra: &mut [libc::pollfd],
    timeout: std::time::Duration,
) -> Woken {
    let readable = |fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // On the stack for the usual few descriptors: this runs on every sleep
    // of a stack thread, which must not allocate.
    let mut fds: smallvec::SmallVec<[libc::pollfd; 16]> = smallvec::SmallVec::new();
    let mut interrupt: smallvec::SmallVec<[bool; 16]> = smallvec::SmallVec::new();
    for w in wake {
        fds.push(readable(std::os::fd::AsRawFd::as_raw_fd(w)));
        interrupt.push(false);
    }
    for w in rx {
        match w {
            RxWakeup::Readable(fds_of) => {
                for fd in fds_of {
                    fds.push(readable(*fd));
                    interrupt.push(false);
                }
            }
            RxWakeup::Interrupt { fd, eventfd } => {
                fds.push(readable(*fd));
                interrupt.push(*eventfd);
            }
        }
    }
    let ours = fds.len();
    fds.extend(extra.iter().map(|p| libc::pollfd { revents: 0, ..*p }));
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: fds holds fds.len() initialised pollfds and ts is a valid
    // timespec; a descriptor closed meanwhile only reports POLLNVAL.
    let ready = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
    for (e, p) in extra.iter_mut().zip(&fds[ours..]) {
        e.revents = p.revents;
    }
    for (p, _) in fds[..ours]
        .iter()
        .zip(&interrupt)
        .filter(|(p, i)| **i && p.revents & libc::POLLIN != 0)
    {
        let mut v = 0u64;
        // SAFETY: an 8-byte read into a valid u64 from a descriptor poll
        // found readable.
        unsafe { libc::read(p.fd, (&raw mut v).cast(), 8) };
    }
    Woken {
        before_timeout: ready > 0,
        by_wake: fds[..wake.len()]
            .iter()
            .any(|p| p.revents & libc::POLLIN != 0),
    }
}

/// How a [`wait_for_frames`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Woken {
    /// Something woke it (frames or `wake`), not the timeout.
    pub before_timeout: bool,
    /// `wake` was readable: the caller empties it.
    pub by_wake: bool,
}

/// How to sleep until a receive queue has frames ([`RxQueue::wakeup`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RxWakeup {
    /// Descriptors that poll readable while frames wait: nothing to arm.
    Readable(Vec<std::os::fd::RawFd>),
    /// An interrupt descriptor, readable once frames arrived after
    /// [`RxQueue::arm_interrupt`].
    Interrupt {
        /// The descriptor.
        fd: std::os::fd::RawFd,
        /// It is an eventfd, read empty after waking; otherwise it is the
        /// queue's own descriptor and receiving empties it.
        eventfd: bool,
    },
}

/// One transmit queue of a port. `Send`, not `Sync`: one thread uses it.
#[derive(Debug)]
pub struct TxQueue {
    port: Arc<PortShared>,
    queue: u16,
}

impl TxQueue {
    /// Hands as many of `batch`'s mbufs to the NIC as it takes; the rest stay
    /// in the batch (front-shifted) for the caller to retry or drop.
    #[inline]
    pub fn tx_burst(&mut self, batch: &mut MbufBatch) -> usize {
        let (slots, n) = batch.held_raw();
        if n == 0 {
            return 0;
        }
        // SAFETY: exclusive queue handle; slots[..n] are owned mbufs whose
        // ownership passes to the driver for the first `sent`.
        let sent = unsafe {
            dpdk_sys::shim_rte_eth_tx_burst(self.port.info.port_id, self.queue, slots, n as u16)
        };
        batch.consumed(usize::from(sent));
        usize::from(sent)
    }

    /// The queue index.
    pub fn index(&self) -> u16 {
        self.queue
    }

    /// What the port is.
    pub fn port_info(&self) -> &PortInfo {
        &self.port.info
    }

    /// The port's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        mac_of(self.port.info.port_id)
    }

    /// Port counters.
    pub fn stats(&self) -> Result<PortStats, DpdkError> {
        stats_of(self.port.info.port_id)
    }
}
