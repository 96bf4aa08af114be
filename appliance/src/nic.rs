//! NIC inventory and driver binding, the job of DPDK's `dpdk-devbind`.
//!
//! [`inventory`] lists the PCI network functions (class `0x02xxxx`) under
//! `<root>/sys/bus/pci/devices` with what an operator needs before handing
//! one to DPDK: ids, the driver and any `driver_override`, the kernel
//! interface (matched through the `<root>/sys/class/net/*` links, which for
//! virtio sit one device below the PCI function), MAC, link state, speed,
//! NUMA node, IOMMU group, the routes through it (`<root>/proc/net/route`
//! and `ipv6_route`) and whether it is the management NIC. Virtual
//! interfaces (veth, tap, bridges) have no PCI function and never appear.
//!
//! Binding is split in two. [`plan_bind`] only reads: it decides what would
//! be written where and in which order, or refuses with the reason (the
//! management NIC, a NIC carrying routes, vfio-pci without an IOMMU). A
//! [`BindPlan`] prints as the operator's dry run. [`perform`] carries a plan
//! out step by step, verifies the result, and on any failure puts the
//! previous driver back and reports both what failed and how the restore
//! went.
//!
//! Every function takes the root of the tree it works on (`/` on a real
//! machine), so tests run the same code on copies of a real host's sysfs.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use gazelle_config::MacAddr;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Errors of inventory, planning and binding.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NicError {
    /// A sysfs or procfs file or directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// What was being read.
        path: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },

    /// A file applianced keeps (the DPDK NIC ledger) could not be written.
    #[error("cannot write {}: {source}", path.display())]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },

    /// The PCI address names no network function in the inventory.
    #[error("no PCI network device {pci} (known: {})", if known.is_empty() { "none".to_owned() } else { known.join(", ") })]
    UnknownDevice {
        /// The address asked for.
        pci: PciAddr,
        /// The addresses of the network functions that do exist.
        known: Vec<String>,
    },

    /// Binding would take the management interface away from the kernel.
    #[error(
        "refusing to unbind {pci} ({}): it is the management NIC; \
         unbinding it cuts the operator off (force to override)",
        interface.as_deref().unwrap_or("no interface")
    )]
    ManagementNic {
        /// The device.
        pci: PciAddr,
        /// Its kernel interface.
        interface: Option<String>,
    },

    /// Binding would remove an interface the kernel routes through.
    #[error(
        "refusing to unbind {pci} ({interface}): it carries active routes ({}); \
         move them off it first (or force)",
        routes.join("; ")
    )]
    ActiveRoutes {
        /// The device.
        pci: PciAddr,
        /// Its kernel interface.
        interface: String,
        /// The routes, as `destination via gateway`.
        routes: Vec<String>,
    },

    /// vfio-pci was asked for on a machine with no IOMMU.
    #[error(
        "refusing to bind {pci} to vfio-pci: the machine has no IOMMU (no entries in \
         {}) and vfio's enable_unsafe_noiommu_mode is not on; enable the IOMMU \
         (intel_iommu=on / a vIOMMU), use uio_pci_generic, or allow no-IOMMU mode explicitly",
        groups.display()
    )]
    NoIommu {
        /// The device.
        pci: PciAddr,
        /// The IOMMU group directory that was empty or missing.
        groups: PathBuf,
    },

    /// A step of a bind failed; the previous driver was (or could not be)
    /// put back.
    #[error("{0}")]
    BindFailed(Box<BindFailure>),
}

/// Which step of a bind failed, why, and what the restore did.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("binding {pci} to {driver} failed at step {step_number} ({step}): {reason}; {restore}")]
pub struct BindFailure {
    /// The device.
    pub pci: PciAddr,
    /// The driver it was to be bound to.
    pub driver: String,
    /// 1-based number of the failed step in the plan.
    pub step_number: usize,
    /// The failed step, as the plan prints it.
    pub step: String,
    /// What went wrong.
    pub reason: String,
    /// What the restore did.
    pub restore: RestoreOutcome,
}

/// What happened when a failed bind was undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreOutcome {
    /// Nothing had been written yet, so there was nothing to undo.
    NothingChanged,
    /// The previous driver (or no driver) and `driver_override` are back.
    Restored {
        /// The driver the device is bound to again, if it had one.
        driver: Option<String>,
    },
    /// Undoing failed too: the device is in the state described.
    Failed {
        /// What went wrong during the restore, and the state left behind.
        reason: String,
    },
}

impl fmt::Display for RestoreOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NothingChanged => f.write_str("nothing had been changed"),
            Self::Restored { driver: Some(d) } => write!(f, "restored: bound to {d} again"),
            Self::Restored { driver: None } => f.write_str("restored: unbound as before"),
            Self::Failed { reason } => write!(f, "RESTORE FAILED: {reason}"),
        }
    }
}

/// A PCI function address in the kernel's long form, `dddd:bb:dd.f`
/// (domain, bus, device, function), always lower-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PciAddr(String);

impl PciAddr {
    /// The address as sysfs spells it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for PciAddr {
    type Err = String;

    /// Accepts `dddd:bb:dd.f` and the short `bb:dd.f` (domain 0000), in
    /// either case.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{s:?} is not a PCI address like \"0000:00:03.0\" \
                 (domain:bus:device.function, hex)"
            )
        };
        let long = match s.len() {
            12 => s.to_ascii_lowercase(),
            7 => format!("0000:{}", s.to_ascii_lowercase()),
            _ => return Err(bad()),
        };
        let bytes = long.as_bytes();
        let shape_ok = bytes.iter().enumerate().all(|(i, &b)| match i {
            4 | 7 => b == b':',
            10 => b == b'.',
            11 => (b'0'..=b'7').contains(&b),
            _ => b.is_ascii_hexdigit(),
        });
        // The device number is five bits: 00..=1f.
        let device_ok = u8::from_str_radix(&long[8..10], 16).is_ok_and(|d| d < 0x20);
        if shape_ok && device_ok {
            Ok(Self(long))
        } else {
            Err(bad())
        }
    }
}

impl fmt::Display for PciAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for PciAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PciAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// How a configuration names a NIC: by PCI address (stable across driver
/// changes) or by MAC (what gazelle's configs use).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NicSelector {
    /// The PCI function.
    Pci(PciAddr),
    /// The permanent MAC the kernel showed while it drove the NIC.
    Mac(MacAddr),
}

impl NicSelector {
    /// Whether `nic` is the NIC this selector names.
    pub fn matches(&self, nic: &Nic) -> bool {
        match self {
            Self::Pci(pci) => &nic.pci == pci,
            Self::Mac(mac) => nic.interface.as_ref().and_then(|i| i.mac) == Some(*mac),
        }
    }
}

impl fmt::Display for NicSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pci(pci) => write!(f, "pci {pci}"),
            Self::Mac(mac) => write!(f, "mac {mac}"),
        }
    }
}

/// One PCI network function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Nic {
    /// Its PCI address.
    pub pci: PciAddr,
    /// PCI vendor id (`0x1af4` is virtio, `0x8086` Intel).
    pub vendor: u16,
    /// PCI device id.
    pub device: u16,
    /// The 24-bit PCI class code (`0x020000` is Ethernet).
    pub class: u32,
    /// The driver bound now, if any (`virtio-pci`, `uio_pci_generic`, ...).
    pub driver: Option<String>,
    /// The driver forced by `driver_override`, if one is set.
    pub driver_override: Option<String>,
    /// NUMA node the device is attached to, if the machine reports one.
    pub numa_node: Option<u32>,
    /// IOMMU group, if the device is behind an IOMMU.
    pub iommu_group: Option<u32>,
    /// The kernel interface, present only while a kernel network driver
    /// drives the device. (A function with several netdevs reports the first
    /// by name; network PCI functions almost always have one.)
    pub interface: Option<NetInterface>,
    /// Whether this is the management NIC: by default the one the default
    /// route leaves through; [`mark_management`] sets it from the config.
    pub management: bool,
}

impl Nic {
    /// The interface's name, if the kernel drives the device.
    pub fn interface_name(&self) -> Option<&str> {
        self.interface.as_ref().map(|i| i.name.as_str())
    }

    /// Active routes through the device's interface (empty without one).
    pub fn routes(&self) -> &[Route] {
        self.interface.as_ref().map_or(&[], |i| &i.routes)
    }

    /// Whether the device is bound to one of the [`DpdkDriver`]s.
    pub fn on_dpdk_driver(&self) -> bool {
        self.driver
            .as_deref()
            .is_some_and(|d| DpdkDriver::ALL.iter().any(|k| k.name() == d))
    }
}

/// The kernel's view of a NIC it drives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NetInterface {
    /// Interface name (`eth0`, `enp3s0`).
    pub name: String,
    /// Its MAC address, if it is a usable unicast one.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub mac: Option<MacAddr>,
    /// Whether the link has carrier (`None` while the interface is down).
    pub carrier: Option<bool>,
    /// RFC 2863 operational state as the kernel names it (`up`, `down`, ...).
    pub operstate: String,
    /// Link speed in Mb/s, if the driver knows it (virtio often does not).
    pub speed_mbps: Option<u32>,
    /// Active routes that leave through it.
    pub routes: Vec<Route>,
}

/// An active route out of an interface, from `/proc/net/route` or
/// `/proc/net/ipv6_route`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Route {
    /// The interface it leaves through.
    pub interface: String,
    /// Destination network, like `0.0.0.0/0` or `fd00::/64`.
    pub destination: String,
    /// Next hop, if the route has one.
    pub gateway: Option<String>,
    /// Whether this is a default route (`/0`).
    pub is_default: bool,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.destination)?;
        if let Some(gw) = &self.gateway {
            write!(f, " via {gw}")?;
        }
        write!(f, " dev {}", self.interface)
    }
}

// Flags from the kernel's route.h / ipv6_route.h.
const RTF_UP: u32 = 0x0001;
const RTF_GATEWAY: u32 = 0x0002;
const RTF_REJECT: u32 = 0x0200;
/// IPv6: routes to the host's own addresses (the local table).
const RTF_LOCAL: u32 = 0x8000_0000;

/// Parses `/proc/net/route` text: every route that is up and not a reject
/// route. Lines that do not parse are skipped (the header among them).
pub fn parse_ipv4_routes(text: &str) -> Vec<Route> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [iface, dest, gateway, flags, _refcnt, _use, _metric, mask, ..] = fields[..] else {
                return None;
            };
            let hex = |s: &str| u32::from_str_radix(s, 16).ok();
            let (dest, gateway, flags, mask) = (hex(dest)?, hex(gateway)?, hex(flags)?, hex(mask)?);
            if flags & RTF_UP == 0 || flags & RTF_REJECT != 0 || iface == "lo" {
                return None;
            }
            // The kernel prints each network-order address as a native
            // integer, so its native bytes are the address's bytes.
            let addr = |v: u32| Ipv4Addr::from(v.to_ne_bytes());
            let prefix = u32::from_be_bytes(mask.to_ne_bytes()).leading_ones();
            Some(Route {
                interface: iface.to_owned(),
                destination: format!("{}/{prefix}", addr(dest)),
                gateway: (flags & RTF_GATEWAY != 0).then(|| addr(gateway).to_string()),
                is_default: prefix == 0,
            })
        })
        .collect()
}

/// Parses `/proc/net/ipv6_route` text: routes that are up, excluding the
/// ones every IPv6 interface has by itself (link-local `fe80::/10`,
/// multicast `ff00::/8`, the host's own addresses) and reject routes, so
/// that what is left is routing someone configured or learned.
pub fn parse_ipv6_routes(text: &str) -> Vec<Route> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [dest, plen, _src, _src_plen, next_hop, _metric, _refcnt, _use, flags, iface] =
                fields[..]
            else {
                return None;
            };
            let addr = |s: &str| u128::from_str_radix(s, 16).ok().map(Ipv6Addr::from);
            let (dest, plen, next_hop) = (
                addr(dest)?,
                u8::from_str_radix(plen, 16).ok()?,
                addr(next_hop)?,
            );
            let flags = u32::from_str_radix(flags, 16).ok()?;
            let automatic =
                (dest.segments()[0] & 0xffc0) == 0xfe80 || dest.segments()[0] >> 8 == 0xff;
            if flags & RTF_UP == 0
                || flags & (RTF_REJECT | RTF_LOCAL) != 0
                || iface == "lo"
                || automatic
            {
                return None;
            }
            Some(Route {
                interface: iface.to_owned(),
                destination: format!("{dest}/{plen}"),
                gateway: (flags & RTF_GATEWAY != 0).then(|| next_hop.to_string()),
                is_default: plen == 0,
            })
        })
        .collect()
}

/// Reads every active route of the tree's network namespace.
pub fn routes(root: &Path) -> Result<Vec<Route>, NicError> {
    let mut all = parse_ipv4_routes(&read_text(&root.join("proc/net/route"))?);
    // A kernel without IPv6 has no ipv6_route file.
    let v6 = root.join("proc/net/ipv6_route");
    if v6.exists() {
        all.extend(parse_ipv6_routes(&read_text(&v6)?));
    }
    Ok(all)
}

/// Lists the PCI network functions under `root`, sorted by PCI address.
///
/// The NIC (or NICs) that a default route leaves through is marked as the
/// management NIC; a config that names one calls [`mark_management`].
pub fn inventory(root: &Path) -> Result<Vec<Nic>, NicError> {
    let routes = routes(root)?;
    let interfaces = interfaces_by_pci(root)?;
    let devices_dir = root.join("sys/bus/pci/devices");
    let mut nics = Vec::new();
    for entry in read_dir_names(&devices_dir)? {
        let Ok(pci) = entry.parse::<PciAddr>() else {
            continue;
        };
        let dir = devices_dir.join(&entry);
        let Some(class) = read_attr(&dir.join("class")).and_then(|c| parse_hex_u32(&c)) else {
            continue;
        };
        if class >> 16 != 0x02 {
            continue;
        }
        let interface = interfaces.get(&pci).map(|name| {
            let net = root.join("sys/class/net").join(name);
            NetInterface {
                name: name.clone(),
                mac: read_attr(&net.join("address")).and_then(|m| m.parse().ok()),
                carrier: read_attr(&net.join("carrier")).map(|c| c == "1"),
                operstate: read_attr(&net.join("operstate")).unwrap_or_else(|| "unknown".into()),
                speed_mbps: read_attr(&net.join("speed")).and_then(|s| s.parse().ok()),
                routes: routes
                    .iter()
                    .filter(|r| &r.interface == name)
                    .cloned()
                    .collect(),
            }
        });
        let management = interface
            .as_ref()
            .is_some_and(|i| i.routes.iter().any(|r| r.is_default));
        nics.push(Nic {
            vendor: read_hex_u16(&dir.join("vendor")),
            device: read_hex_u16(&dir.join("device")),
            class,
            driver: link_name(&dir.join("driver")),
            driver_override: read_attr(&dir.join("driver_override"))
                .filter(|o| o != "(null)" && !o.is_empty()),
            numa_node: read_attr(&dir.join("numa_node")).and_then(|n| n.parse().ok()),
            iommu_group: link_name(&dir.join("iommu_group")).and_then(|g| g.parse().ok()),
            interface,
            management,
            pci,
        });
    }
    nics.sort_by(|a, b| a.pci.cmp(&b.pci));
    Ok(nics)
}

/// Makes exactly the NICs `selectors` name the management NICs (replacing
/// the default-route guess of [`inventory`]). Returns the selectors that
/// matched no NIC, so a caller can say the config names a NIC that is not
/// there.
pub fn mark_management<'a>(nics: &mut [Nic], selectors: &'a [NicSelector]) -> Vec<&'a NicSelector> {
    for nic in nics.iter_mut() {
        nic.management = selectors.iter().any(|s| s.matches(nic));
    }
    selectors
        .iter()
        .filter(|s| !nics.iter().any(|n| s.matches(n)))
        .collect()
}

/// Maps each PCI function to the kernel interface below it, found by
/// resolving the `/sys/class/net/<name>` links: the last path component that
/// is a PCI address is the function (virtio puts the netdev under a
/// `virtioN` child device). Interfaces without one are virtual.
fn interfaces_by_pci(root: &Path) -> Result<BTreeMap<PciAddr, String>, NicError> {
    let net_dir = root.join("sys/class/net");
    let mut map = BTreeMap::new();
    let mut names = read_dir_names(&net_dir)?;
    names.sort();
    for name in names {
        let Ok(target) = fs::canonicalize(net_dir.join(&name)) else {
            continue;
        };
        let pci = target
            .components()
            .filter_map(|c| match c {
                Component::Normal(part) => part.to_str()?.parse::<PciAddr>().ok(),
                _ => None,
            })
            .next_back();
        if let Some(pci) = pci {
            map.entry(pci).or_insert(name);
        }
    }
    Ok(map)
}

/// The MACs of the NICs applianced handed to a DPDK driver, by PCI address.
///
/// A NIC on uio_pci_generic or vfio-pci has no kernel interface, so its MAC
/// (which the config may name it by) cannot be read back; a restarted daemon
/// finds it here. It lives in the runtime directory: after a reboot the NICs
/// are on their kernel drivers again and the ledger is gone with `/run`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DpdkNicLedger {
    macs: BTreeMap<PciAddr, MacAddr>,
}

impl DpdkNicLedger {
    /// The ledger in `path`; empty when the file does not exist. A file that
    /// cannot be parsed is an error naming it (it is only ever written whole).
    pub fn load(path: &Path) -> Result<Self, NicError> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(NicError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let mut macs = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parsed = line
                .split_once(char::is_whitespace)
                .and_then(|(pci, mac)| Some((pci.parse().ok()?, mac.trim().parse().ok()?)));
            let Some((pci, mac)) = parsed else {
                return Err(NicError::Read {
                    path: path.to_owned(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("line {}: want `<pci address> <mac>`, got {line:?}", n + 1),
                    ),
                });
            };
            macs.insert(pci, mac);
        }
        Ok(Self { macs })
    }

    /// Notes that the NIC at `pci` had `mac`.
    pub fn insert(&mut self, pci: PciAddr, mac: MacAddr) {
        self.macs.insert(pci, mac);
    }

    /// Writes the ledger to `path` atomically (a temporary file renamed).
    pub fn save(&self, path: &Path) -> Result<(), NicError> {
        let mut text =
            String::from("# NICs applianced handed to a DPDK driver: <pci address> <mac it had>\n");
        for (pci, mac) in &self.macs {
            text.push_str(&format!("{pci} {mac}\n"));
        }
        let tmp = path.with_extension("tmp");
        let write = |p: &Path| -> std::io::Result<()> {
            if let Some(dir) = p.parent() {
                fs::create_dir_all(dir)?;
            }
            fs::write(p, &text)?;
            fs::rename(p, path)
        };
        write(&tmp).map_err(|source| NicError::WriteFile {
            path: path.to_owned(),
            source,
        })
    }

    /// The NIC of `inventory` that had `mac` and is on a DPDK driver now
    /// (no kernel interface). A ledger entry whose device went back to a
    /// kernel driver, or to none, does not match: its MAC is then the
    /// kernel's to tell.
    pub fn find<'a>(&self, inventory: &'a [Nic], mac: MacAddr) -> Option<&'a Nic> {
        inventory.iter().find(|n| {
            n.interface.is_none() && self.macs.get(&n.pci) == Some(&mac) && n.on_dpdk_driver()
        })
    }
}

/// The PCI address of each NIC `selectors` name, in order, all of them on a
/// [`DpdkDriver`] now: by PCI address, or by MAC through `ledger` (a bound
/// NIC has no kernel interface to tell its MAC). `None` if one is not found
/// so.
pub fn dpdk_addresses(
    inventory: &[Nic],
    ledger: &DpdkNicLedger,
    selectors: &[NicSelector],
) -> Option<Vec<PciAddr>> {
    selectors
        .iter()
        .map(|selector| {
            let found = match selector {
                NicSelector::Pci(_) => inventory.iter().find(|n| selector.matches(n)),
                NicSelector::Mac(mac) => ledger.find(inventory, *mac),
            };
            found.filter(|n| n.on_dpdk_driver()).map(|n| n.pci.clone())
        })
        .collect()
}

/// A driver DPDK can drive a PCI NIC through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DpdkDriver {
    /// `uio_pci_generic`: works everywhere, no IOMMU protection, no
    /// interrupts for MSI-X-only devices.
    #[serde(rename = "uio_pci_generic")]
    UioPciGeneric,
    /// `vfio-pci`: DMA confined by the IOMMU; needs one (or the unsafe
    /// no-IOMMU mode).
    #[serde(rename = "vfio-pci")]
    VfioPci,
}

impl DpdkDriver {
    /// Every driver, for messages that list the allowed values.
    pub const ALL: [Self; 2] = [Self::UioPciGeneric, Self::VfioPci];

    /// The driver's name in `/sys/bus/pci/drivers`.
    pub fn name(self) -> &'static str {
        match self {
            Self::UioPciGeneric => "uio_pci_generic",
            Self::VfioPci => "vfio-pci",
        }
    }

    /// The kernel module that provides it (as `/sys/module` names it).
    pub fn module(self) -> &'static str {
        match self {
            Self::UioPciGeneric => "uio_pci_generic",
            Self::VfioPci => "vfio_pci",
        }
    }
}

impl fmt::Display for DpdkDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a device should end up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindTarget {
    /// Handed to DPDK through one of its drivers.
    Dpdk(DpdkDriver),
    /// Given back to a kernel driver (e.g. `virtio-pci`, `ixgbe`); never
    /// refused, since it returns an interface rather than removing one.
    Kernel(String),
}

impl BindTarget {
    fn driver_name(&self) -> &str {
        match self {
            Self::Dpdk(d) => d.name(),
            Self::Kernel(name) => name,
        }
    }

    fn module(&self) -> String {
        match self {
            Self::Dpdk(d) => d.module().to_owned(),
            Self::Kernel(name) => name.replace('-', "_"),
        }
    }
}

/// What the operator allows beyond the safe default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BindOptions {
    /// Unbind even the management NIC or a NIC carrying routes.
    pub force: bool,
    /// Use vfio-pci without an IOMMU by turning on vfio's unsafe no-IOMMU
    /// mode (DMA is then unconfined: any device bug can write anywhere).
    pub allow_noiommu: bool,
}

/// One step of a [`BindPlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindStep {
    /// Load a kernel module with `modprobe`, then check that `check` exists.
    LoadModule {
        /// Argument to modprobe.
        module: String,
        /// `<root>/sys/module/<module>`, which appears once it is loaded.
        check: PathBuf,
    },
    /// Write `value` into the sysfs file `path`.
    Write {
        /// The attribute written.
        path: PathBuf,
        /// What is written (a newline is added).
        value: String,
        /// Why, for the operator.
        why: &'static str,
    },
    /// Check that the device's `driver` link names `driver`.
    Verify {
        /// The device's `driver` link.
        link: PathBuf,
        /// The driver expected there.
        driver: String,
    },
}

impl fmt::Display for BindStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LoadModule { module, check } => {
                write!(f, "modprobe {module} (then {} must exist)", check.display())
            }
            Self::Write { path, value, why } => {
                write!(f, "write {value:?} to {} ({why})", path.display())
            }
            Self::Verify { link, driver } => {
                write!(f, "check that {} points to {driver}", link.display())
            }
        }
    }
}

/// The device's binding before the plan runs: what a failure restores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousBinding {
    /// The driver bound before, if any.
    pub driver: Option<String>,
    /// The `driver_override` before, if one was set.
    pub driver_override: Option<String>,
}

/// What binding one device would do; [`perform`] carries it out.
/// `Display` prints it as a dry run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindPlan {
    /// The root the paths below live in.
    pub root: PathBuf,
    /// The device.
    pub pci: PciAddr,
    /// Its kernel interface now, if any (it disappears with the unbind).
    pub interface: Option<String>,
    /// The driver it ends up with.
    pub driver: String,
    /// Its binding now, restored on failure.
    pub previous: PreviousBinding,
    /// The steps, in order; empty when the device already has the driver.
    pub steps: Vec<BindStep>,
    /// Things the operator should know that do not stop the plan.
    pub warnings: Vec<String>,
}

impl fmt::Display for BindPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from = self.previous.driver.as_deref().unwrap_or("no driver");
        let iface = self
            .interface
            .as_deref()
            .map(|i| format!(", interface {i}"))
            .unwrap_or_default();
        if self.steps.is_empty() {
            return writeln!(
                f,
                "{} ({from}{iface}): already bound to {}, nothing to do",
                self.pci, self.driver
            );
        }
        writeln!(f, "bind {} ({from}{iface}) to {}:", self.pci, self.driver)?;
        for (i, step) in self.steps.iter().enumerate() {
            writeln!(f, "  {}. {step}", i + 1)?;
        }
        for warning in &self.warnings {
            writeln!(f, "  warning: {warning}")?;
        }
        let override_before = self.previous.driver_override.as_deref().unwrap_or("(none)");
        writeln!(
            f,
            "  on failure: driver_override back to {override_before}, device back to {from}"
        )
    }
}

/// The DPDK driver for a data NIC whose config does not name one: vfio-pci
/// where the machine has an IOMMU (`root/sys/kernel/iommu_groups` lists a
/// group: DMA stays confined), uio_pci_generic otherwise (it works without
/// one, as in a VM without a vIOMMU).
pub fn default_driver(root: &Path) -> DpdkDriver {
    if read_dir_names(&root.join("sys/kernel/iommu_groups")).is_ok_and(|g| !g.is_empty()) {
        DpdkDriver::VfioPci
    } else {
        DpdkDriver::UioPciGeneric
    }
}

/// Where `root/sys/kernel/iommu_groups` lists no group and
/// `enable_unsafe_noiommu_mode` is not on, vfio-pci cannot work.
fn iommu_available(root: &Path) -> bool {
    let groups = read_dir_names(&root.join("sys/kernel/iommu_groups")).unwrap_or_default();
    !groups.is_empty() || noiommu_enabled(root)
}

fn noiommu_path(root: &Path) -> PathBuf {
    root.join("sys/module/vfio/parameters/enable_unsafe_noiommu_mode")
}

fn noiommu_enabled(root: &Path) -> bool {
    read_attr(&noiommu_path(root)).is_some_and(|v| v == "Y" || v == "1")
}

/// Decides how to bind `nic` to `target`, reading (never writing) the tree
/// under `root`: whether the module is loaded and whether there is an IOMMU.
///
/// The order follows the kernel's rules: the module is loaded first (so
/// the driver exists), `driver_override` is set so that only the wanted
/// driver may claim the device, the current driver lets go, `drivers_probe`
/// makes the bus match the device again (now only to the override), and the
/// `driver` link is checked.
///
/// Refuses, unless `options.force`: a NIC marked management, and a NIC
/// whose interface carries active routes. Refuses vfio-pci without an IOMMU
/// unless `options.allow_noiommu`, in which case the plan turns vfio's
/// no-IOMMU mode on.
pub fn plan_bind(
    root: &Path,
    nic: &Nic,
    target: &BindTarget,
    options: BindOptions,
) -> Result<BindPlan, NicError> {
    let driver = target.driver_name().to_owned();
    let device_dir = root.join("sys/bus/pci/devices").join(nic.pci.as_str());
    let mut plan = BindPlan {
        root: root.to_owned(),
        pci: nic.pci.clone(),
        interface: nic.interface_name().map(str::to_owned),
        driver: driver.clone(),
        previous: PreviousBinding {
            driver: nic.driver.clone(),
            driver_override: nic.driver_override.clone(),
        },
        steps: Vec::new(),
        warnings: Vec::new(),
    };
    if nic.driver.as_deref() == Some(driver.as_str()) {
        return Ok(plan);
    }
    if let BindTarget::Dpdk(dpdk) = target {
        if nic.management {
            if !options.force {
                return Err(NicError::ManagementNic {
                    pci: nic.pci.clone(),
                    interface: plan.interface.clone(),
                });
            }
            plan.warnings
                .push("forced: this is the management NIC".into());
        }
        if let Some(iface) = &nic.interface {
            if !iface.routes.is_empty() {
                if !options.force {
                    return Err(NicError::ActiveRoutes {
                        pci: nic.pci.clone(),
                        interface: iface.name.clone(),
                        routes: iface.routes.iter().map(Route::to_string).collect(),
                    });
                }
                plan.warnings.push(format!(
                    "forced: routes via {} disappear: {}",
                    iface.name,
                    iface
                        .routes
                        .iter()
                        .map(Route::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
        }
        if *dpdk == DpdkDriver::VfioPci && !iommu_available(root) {
            if !options.allow_noiommu {
                return Err(NicError::NoIommu {
                    pci: nic.pci.clone(),
                    groups: root.join("sys/kernel/iommu_groups"),
                });
            }
            plan.warnings.push(
                "no IOMMU: vfio runs in unsafe no-IOMMU mode, the device's DMA is unconfined"
                    .into(),
            );
        }
    }
    let module = target.module();
    let module_dir = root.join("sys/module").join(&module);
    if !module_dir.exists() {
        plan.steps.push(BindStep::LoadModule {
            module,
            check: module_dir,
        });
    }
    if *target == BindTarget::Dpdk(DpdkDriver::VfioPci) && !iommu_available(root) {
        plan.steps.push(BindStep::Write {
            path: noiommu_path(root),
            value: "1".into(),
            why: "allow vfio without an IOMMU, as explicitly allowed",
        });
    }
    plan.steps.push(BindStep::Write {
        path: device_dir.join("driver_override"),
        value: driver.clone(),
        why: "only this driver may claim the device",
    });
    if let Some(current) = &nic.driver {
        plan.steps.push(BindStep::Write {
            path: root
                .join("sys/bus/pci/drivers")
                .join(current)
                .join("unbind"),
            value: nic.pci.to_string(),
            why: "release it from its current driver",
        });
    }
    plan.steps.push(BindStep::Write {
        path: root.join("sys/bus/pci/drivers_probe"),
        value: nic.pci.to_string(),
        why: "let the overriding driver probe it",
    });
    plan.steps.push(BindStep::Verify {
        link: device_dir.join("driver"),
        driver,
    });
    if let (Some(group), BindTarget::Dpdk(DpdkDriver::VfioPci)) = (nic.iommu_group, target) {
        let others = iommu_group_peers(root, group, &nic.pci);
        if !others.is_empty() {
            plan.warnings.push(format!(
                "IOMMU group {group} also holds {}; vfio needs every device of the group unbound or on vfio-pci",
                others.join(", ")
            ));
        }
    }
    Ok(plan)
}

/// Other devices in the same IOMMU group that have a driver other than
/// vfio-pci, as `address (driver)`.
fn iommu_group_peers(root: &Path, group: u32, pci: &PciAddr) -> Vec<String> {
    let dir = root.join(format!("sys/kernel/iommu_groups/{group}/devices"));
    let mut peers: Vec<String> = read_dir_names(&dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|name| name != pci.as_str())
        .filter_map(|name| {
            let driver = link_name(&root.join("sys/bus/pci/devices").join(&name).join("driver"))?;
            (driver != "vfio-pci").then(|| format!("{name} ({driver})"))
        })
        .collect();
    peers.sort();
    peers
}

/// Finds `pci` among `nics` and plans its binding (see [`plan_bind`]).
pub fn plan_bind_address(
    root: &Path,
    nics: &[Nic],
    pci: &PciAddr,
    target: &BindTarget,
    options: BindOptions,
) -> Result<BindPlan, NicError> {
    let nic = nics
        .iter()
        .find(|n| &n.pci == pci)
        .ok_or_else(|| NicError::UnknownDevice {
            pci: pci.clone(),
            known: nics.iter().map(|n| n.pci.to_string()).collect(),
        })?;
    plan_bind(root, nic, target, options)
}

/// Carries out `plan`. On failure at any step, undoes what was written:
/// `driver_override` back to its previous value, the device unbound from
/// whatever holds it and bound to its previous driver, and that checked.
/// The error says which step failed, why, and how the restore went.
///
/// Modules are loaded only when the plan's root is `/`: `modprobe` acts on
/// the running kernel, not on a copied tree.
pub fn perform(plan: &BindPlan) -> Result<(), NicError> {
    let mut changed = false;
    for (index, step) in plan.steps.iter().enumerate() {
        let result = run_step(&plan.root, step);
        changed |= matches!(step, BindStep::Write { .. }) || result.is_ok();
        if let Err(reason) = result {
            let restore = if changed {
                restore(plan)
            } else {
                RestoreOutcome::NothingChanged
            };
            return Err(NicError::BindFailed(Box::new(BindFailure {
                pci: plan.pci.clone(),
                driver: plan.driver.clone(),
                step_number: index + 1,
                step: step.to_string(),
                reason,
                restore,
            })));
        }
    }
    if !plan.steps.is_empty() {
        tracing::info!(pci = %plan.pci, driver = %plan.driver, "bound");
    }
    Ok(())
}

fn run_step(root: &Path, step: &BindStep) -> Result<(), String> {
    match step {
        BindStep::LoadModule { module, check } => {
            if root != Path::new("/") {
                return Err(format!(
                    "module {module} is not loaded in {} and modprobe can only load into the running kernel (root /)",
                    root.display()
                ));
            }
            let output = Command::new("modprobe")
                .arg(module)
                .output()
                .map_err(|e| format!("cannot run modprobe: {e}"))?;
            if !output.status.success() {
                return Err(format!(
                    "modprobe {module} failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
            if !check.exists() {
                return Err(format!(
                    "modprobe {module} succeeded but {} does not exist",
                    check.display()
                ));
            }
            Ok(())
        }
        BindStep::Write { path, value, .. } => write_attr(path, value).map_err(|e| e.to_string()),
        BindStep::Verify { link, driver } => match link_name(link) {
            Some(now) if &now == driver => Ok(()),
            Some(now) => Err(format!("the device is bound to {now}, not {driver}")),
            None => Err(format!(
                "no driver claimed the device ({} is missing)",
                link.display()
            )),
        },
    }
}

/// Puts the device back as `plan.previous` describes.
fn restore(plan: &BindPlan) -> RestoreOutcome {
    let root = &plan.root;
    let device_dir = root.join("sys/bus/pci/devices").join(plan.pci.as_str());
    let drivers = root.join("sys/bus/pci/drivers");
    let pci = plan.pci.as_str();
    let mut problems = Vec::new();
    // An empty write clears the override; otherwise the previous one returns.
    let previous_override = plan.previous.driver_override.clone().unwrap_or_default();
    if let Err(e) = write_attr(&device_dir.join("driver_override"), &previous_override) {
        problems.push(format!("resetting driver_override: {e}"));
    }
    let now = link_name(&device_dir.join("driver"));
    if now != plan.previous.driver {
        if let Some(now) = &now {
            if let Err(e) = write_attr(&drivers.join(now).join("unbind"), pci) {
                problems.push(format!("unbinding from {now}: {e}"));
            }
        }
        if let Some(previous) = &plan.previous.driver {
            if let Err(e) = write_attr(&drivers.join(previous).join("bind"), pci) {
                problems.push(format!("binding to {previous}: {e}"));
            }
        }
    }
    let after = link_name(&device_dir.join("driver"));
    if after != plan.previous.driver {
        problems.push(format!(
            "the device is left {}",
            after.map_or("without a driver".to_owned(), |d| format!("bound to {d}"))
        ));
    }
    if problems.is_empty() {
        tracing::warn!(pci = %plan.pci, "bind failed; previous driver restored");
        RestoreOutcome::Restored {
            driver: plan.previous.driver.clone(),
        }
    } else {
        RestoreOutcome::Failed {
            reason: problems.join("; "),
        }
    }
}

/// Writes one sysfs attribute. The file must exist: sysfs attributes are
/// never created, so a missing one means a missing driver or device.
fn write_attr(path: &Path, value: &str) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    file.write_all(format!("{value}\n").as_bytes())
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("writing {value:?} to {}: {e}", path.display()),
            )
        })
}

fn read_text(path: &Path) -> Result<String, NicError> {
    fs::read_to_string(path).map_err(|source| NicError::Read {
        path: path.to_owned(),
        source,
    })
}

fn read_dir_names(dir: &Path) -> Result<Vec<String>, NicError> {
    let entries = fs::read_dir(dir).map_err(|source| NicError::Read {
        path: dir.to_owned(),
        source,
    })?;
    Ok(entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect())
}

/// A sysfs attribute, trimmed; `None` if it is missing or the kernel
/// refuses to read it (`speed` of a down link returns EINVAL).
fn read_attr(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

fn link_name(path: &Path) -> Option<String> {
    let target = fs::read_link(path).ok()?;
    target.file_name()?.to_str().map(str::to_owned)
}

fn parse_hex_u32(text: &str) -> Option<u32> {
    u32::from_str_radix(text.trim_start_matches("0x"), 16).ok()
}

fn read_hex_u16(path: &Path) -> u16 {
    read_attr(path)
        .and_then(|t| u16::from_str_radix(t.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines copied from this development host's /proc/net files.
    const ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
        eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
    const IPV6_ROUTE: &str = "\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo
fd000000000000000000000000000002 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000004 00000000 80200001     eth0
ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";

    #[test]
    fn ipv4_routes() {
        let routes = parse_ipv4_routes(ROUTE);
        let shown: Vec<String> = routes.iter().map(Route::to_string).collect();
        assert_eq!(
            shown,
            ["0.0.0.0/0 via 192.0.2.1 dev eth0", "192.0.2.0/24 dev eth0"]
        );
        assert!(routes[0].is_default);
        assert!(!routes[1].is_default);
    }

    #[test]
    fn ipv6_routes_skip_automatic_ones() {
        let shown: Vec<String> = parse_ipv6_routes(IPV6_ROUTE)
            .iter()
            .map(Route::to_string)
            .collect();
        assert_eq!(shown, ["fd00::/64 dev eth0", "::/0 via fd00::1 dev eth0"]);
    }

    #[test]
    fn pci_addresses() {
        let long: PciAddr = "0000:00:03.0".parse().unwrap();
        assert_eq!(long.as_str(), "0000:00:03.0");
        assert_eq!("00:03.0".parse::<PciAddr>().unwrap(), long);
        assert_eq!(
            "0000:AF:1F.7".parse::<PciAddr>().unwrap().as_str(),
            "0000:af:1f.7"
        );
        for bad in [
            "",
            "0000:00:03",
            "0000:00:03.8",
            "0000:00:20.0",
            "000g:00:03.0",
            "0000-00:03.0",
            "virtio2",
        ] {
            let err = bad.parse::<PciAddr>().unwrap_err();
            assert!(err.contains("not a PCI address"), "{bad}: {err}");
        }
    }
}
