//! NIC inventory against this host's real sysfs and procfs, and bind
//! planning and performing against copies of this host's sysfs entries of
//! a real NIC (files and symlinks as the kernel shows them).
//!
//! Nothing here writes to the host's /sys: every write goes to a tempdir
//! copy. Needs root (reading `driver_override`, creating a veth); fails
//! loudly without it.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use appliance::nic::{
    default_driver, dpdk_addresses, inventory, mark_management, perform, plan_bind,
    plan_bind_address, BindOptions, BindPlan, BindStep, BindTarget, DpdkDriver, DpdkNicLedger,
    NetInterface, Nic, NicError, NicSelector, PciAddr, RestoreOutcome,
};

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests read root-only sysfs attributes and create a veth: run them as root"
    );
}

/// The host's first PCI NIC that the kernel drives (this VM has a virtio one).
fn host_nic() -> Nic {
    let nics = inventory(Path::new("/")).expect("inventory of the host");
    nics.into_iter()
        .find(|n| n.interface.is_some())
        .expect("this host has a PCI NIC with a kernel interface (ls -l /sys/class/net/*/device)")
}

/// Copies the host entry at `path` into `dst` at the same place: symlinks as
/// symlinks with their (relative) targets unchanged, directories
/// recursively without following links, files with their content, or empty
/// (same mode) when the kernel refuses to read them (write-only attributes
/// such as `unbind`).
fn copy_host(dst: &Path, path: &Path) {
    let to = dst.join(path.strip_prefix("/").unwrap());
    fs::create_dir_all(to.parent().unwrap()).unwrap();
    let meta = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if meta.file_type().is_symlink() {
        if !to.exists() && fs::symlink_metadata(&to).is_err() {
            symlink(fs::read_link(path).unwrap(), &to).unwrap();
        }
    } else if meta.is_dir() {
        fs::create_dir_all(&to).unwrap();
        for entry in fs::read_dir(path).unwrap() {
            copy_host(dst, &entry.unwrap().path());
        }
    } else {
        let content = fs::read(path).unwrap_or_default();
        fs::write(&to, content).unwrap();
        fs::set_permissions(&to, fs::Permissions::from_mode(meta.permissions().mode())).unwrap();
    }
}

/// A tree holding what binding `nic` touches, copied from the host: the
/// device (its bus link and real directory), its interface link, its
/// driver's directory, the bus's `drivers_probe`, the IOMMU groups, the
/// route tables, and `lo` as a virtual interface that must stay out.
fn copy_of_host_nic(nic: &Nic) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let bus_link = PathBuf::from("/sys/bus/pci/devices").join(nic.pci.as_str());
    copy_host(&root, &bus_link);
    copy_host(&root, &fs::canonicalize(&bus_link).unwrap());
    let iface = nic.interface_name().unwrap();
    copy_host(&root, &Path::new("/sys/class/net").join(iface));
    copy_host(&root, Path::new("/sys/class/net/lo"));
    copy_host(&root, &fs::canonicalize("/sys/class/net/lo").unwrap());
    if let Some(driver) = &nic.driver {
        copy_host(&root, &Path::new("/sys/bus/pci/drivers").join(driver));
        // Some kernels build their driver with the bind attributes
        // suppressed (virtio-pci on these machines' 6.18 has no `bind` or
        // `unbind`): the copy gets them as a driver that has them shows
        // them (write-only, empty), since the tests below are about the
        // steps and their restore, not about that driver.
        for attr in ["bind", "unbind"] {
            let file = root.join(format!("sys/bus/pci/drivers/{driver}/{attr}"));
            if fs::symlink_metadata(&file).is_err() {
                fs::write(&file, "").unwrap();
                fs::set_permissions(&file, fs::Permissions::from_mode(0o200)).unwrap();
            }
        }
    }
    copy_host(&root, Path::new("/sys/bus/pci/drivers_probe"));
    copy_host(&root, Path::new("/sys/kernel/iommu_groups"));
    for table in ["route", "ipv6_route"] {
        let content = fs::read(Path::new("/proc/net").join(table)).unwrap();
        fs::create_dir_all(root.join("proc/net")).unwrap();
        fs::write(root.join("proc/net").join(table), content).unwrap();
    }
    (dir, root)
}

/// Keeps only the header line of the copied route tables: the state of a
/// NIC nothing routes through.
fn drop_routes(root: &Path) {
    for table in ["route", "ipv6_route"] {
        let path = root.join("proc/net").join(table);
        let text = fs::read_to_string(&path).unwrap();
        let header = if table == "route" {
            format!("{}\n", text.lines().next().unwrap())
        } else {
            String::new()
        };
        fs::write(path, header).unwrap();
    }
}

const UIO: BindTarget = BindTarget::Dpdk(DpdkDriver::UioPciGeneric);

/// A copy of the host NIC's tree with the routes dropped (a NIC free to
/// take), its inventory, and the host's view of the NIC.
struct FreeNic {
    _dir: tempfile::TempDir,
    root: PathBuf,
    host: Nic,
    nics: Vec<Nic>,
}

impl FreeNic {
    /// `module_loaded`: make the `/sys/module/uio_pci_generic` directory
    /// by hand, the one fact this host (which cannot load modules) lacks.
    fn new(module_loaded: bool) -> Self {
        let host = host_nic();
        let (dir, root) = copy_of_host_nic(&host);
        drop_routes(&root);
        if module_loaded {
            fs::create_dir_all(root.join("sys/module/uio_pci_generic")).unwrap();
        }
        let nics = inventory(&root).unwrap();
        Self {
            _dir: dir,
            root,
            host,
            nics,
        }
    }

    fn plan(&self, target: &BindTarget, options: BindOptions) -> Result<BindPlan, NicError> {
        plan_bind(&self.root, &self.nics[0], target, options)
    }
}

fn read(path: impl AsRef<Path>) -> String {
    fs::read_to_string(path.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
}

#[test]
fn host_inventory_matches_sysfs_and_ip() {
    require_root();
    let nics = inventory(Path::new("/")).unwrap();
    // Every PCI function of class 02 (network) is listed, nothing else.
    let mut expected: Vec<String> = fs::read_dir("/sys/bus/pci/devices")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| read(p.join("class")).starts_with("0x02"))
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    expected.sort();
    let listed: Vec<&str> = nics.iter().map(|n| n.pci.as_str()).collect();
    assert_eq!(listed, expected);
    assert!(!nics.is_empty(), "this host has PCI NICs");

    let nic = host_nic();
    let iface = nic.interface.as_ref().unwrap();
    let net = Path::new("/sys/class/net").join(&iface.name);
    assert_eq!(
        iface.mac.unwrap().to_string(),
        read(net.join("address")).trim()
    );
    assert_eq!(iface.operstate, read(net.join("operstate")).trim());
    let dev = Path::new("/sys/bus/pci/devices").join(nic.pci.as_str());
    assert_eq!(
        nic.driver.as_deref(),
        fs::read_link(dev.join("driver"))
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
    );
    assert_eq!(
        format!("{:#06x}", nic.vendor),
        read(dev.join("vendor")).trim()
    );
    assert_eq!(
        format!("{:#08x}", nic.class),
        read(dev.join("class")).trim()
    );

    // `ip route` is an independent reader of the same routing table: the
    // NIC the default route leaves through is the management NIC and
    // carries that route.
    let ip = Command::new("ip")
        .args(["-4", "route", "show", "default"])
        .output()
        .unwrap();
    let default = String::from_utf8(ip.stdout).unwrap();
    let default_dev = default
        .split_whitespace()
        .skip_while(|w| *w != "dev")
        .nth(1);
    for nic in &nics {
        let name = nic.interface_name();
        if name.is_some() && name == default_dev {
            assert!(nic.management, "{nic:?}");
            assert!(nic
                .routes()
                .iter()
                .any(|r| r.is_default && r.destination == "0.0.0.0/0"));
        }
    }
}

#[test]
fn veths_are_not_pci_nics() {
    require_root();
    // A veth of our own, down and without addresses (so no routes).
    let name = format!("apnic{}", std::process::id() % 100_000);
    let peer = format!("{name}p");
    let status = Command::new("ip")
        .args(["link", "add", &name, "type", "veth", "peer", "name", &peer])
        .status()
        .unwrap();
    assert!(status.success(), "ip link add {name}");
    let result = std::panic::catch_unwind(|| {
        assert!(Path::new("/sys/class/net").join(&name).exists());
        let nics = inventory(Path::new("/")).unwrap();
        for nic in &nics {
            let iface = nic.interface_name().unwrap_or("");
            assert!(
                !iface.starts_with("apnic"),
                "veth listed as a PCI NIC: {nic:?}"
            );
        }
        // Every interface the inventory reports is backed by a PCI device.
        for nic in nics.iter().filter(|n| n.interface.is_some()) {
            let real =
                fs::canonicalize(Path::new("/sys/class/net").join(nic.interface_name().unwrap()))
                    .unwrap();
            assert!(
                real.to_str().unwrap().contains(nic.pci.as_str()),
                "{}",
                real.display()
            );
        }
    });
    let _ = Command::new("ip").args(["link", "del", &name]).status();
    result.unwrap();
}

#[test]
fn copied_tree_inventories_like_the_host() {
    require_root();
    let host = host_nic();
    let (_dir, root) = copy_of_host_nic(&host);
    let copied = inventory(&root).unwrap();
    assert_eq!(copied.len(), 1, "{copied:?}");
    let nic = &copied[0];
    assert_eq!(nic.pci, host.pci);
    assert_eq!(nic.driver, host.driver);
    assert_eq!(nic.driver_override, host.driver_override);
    assert_eq!(nic.numa_node, host.numa_node);
    assert_eq!(nic.interface_name(), host.interface_name());
    assert_eq!(
        nic.interface.as_ref().unwrap().mac,
        host.interface.as_ref().unwrap().mac
    );
    assert_eq!(nic.routes(), host.routes());
    assert_eq!(nic.management, host.management);
}

#[test]
fn refuses_a_nic_carrying_routes() {
    require_root();
    let host = host_nic();
    assert!(
        !host.routes().is_empty(),
        "the host NIC carries this VM's routes"
    );
    let (_dir, root) = copy_of_host_nic(&host);
    let nics = inventory(&root).unwrap();
    let target = UIO;
    let err = plan_bind(&root, &nics[0], &target, BindOptions::default()).unwrap_err();
    let text = err.to_string();
    // The default route makes it the management NIC too; that is said first.
    assert!(matches!(err, NicError::ManagementNic { .. }), "{text}");
    assert!(
        text.contains(host.pci.as_str()) && text.contains("management"),
        "{text}"
    );

    // As a data NIC (config names another management NIC), the routes
    // still stop it.
    let mut nics = nics;
    let other = NicSelector::Pci("0000:00:1f.0".parse().unwrap());
    let unmatched = mark_management(&mut nics, std::slice::from_ref(&other));
    assert_eq!(unmatched, [&other]);
    let err = plan_bind(&root, &nics[0], &target, BindOptions::default()).unwrap_err();
    match &err {
        NicError::ActiveRoutes {
            interface, routes, ..
        } => {
            assert_eq!(Some(interface.as_str()), host.interface_name());
            assert_eq!(routes.len(), host.routes().len());
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("0.0.0.0/0 via"), "{err}");

    // Forced, the plan goes ahead and says what is lost.
    let forced = BindOptions {
        force: true,
        ..BindOptions::default()
    };
    let plan = plan_bind(&root, &nics[0], &target, forced).unwrap();
    assert!(
        plan.warnings.iter().any(|w| w.contains("routes via")),
        "{plan}"
    );
}

#[test]
fn management_nic_is_refused_even_without_routes() {
    require_root();
    let mut free = FreeNic::new(false);
    assert!(!free.nics[0].management && free.nics[0].routes().is_empty());
    let mac = free.host.interface.as_ref().unwrap().mac.unwrap();
    assert!(mark_management(&mut free.nics, &[NicSelector::Mac(mac)]).is_empty());
    let err = free.plan(&UIO, BindOptions::default()).unwrap_err();
    assert!(matches!(err, NicError::ManagementNic { .. }), "{err}");
}

#[test]
fn plan_for_a_free_nic_in_kernel_order() {
    require_root();
    let FreeNic {
        _dir,
        root,
        host,
        nics,
    } = FreeNic::new(false);
    let pci = host.pci.as_str();
    let driver = host.driver.clone().unwrap();
    let plan = plan_bind_address(&root, &nics, &host.pci, &UIO, BindOptions::default()).unwrap();
    // The copied tree has no uio_pci_generic module, as this host has none.
    let expected = vec![
        BindStep::LoadModule {
            module: "uio_pci_generic".into(),
            check: root.join("sys/module/uio_pci_generic"),
        },
        BindStep::Write {
            path: root.join(format!("sys/bus/pci/devices/{pci}/driver_override")),
            value: "uio_pci_generic".into(),
            why: "only this driver may claim the device",
        },
        BindStep::Write {
            path: root.join(format!("sys/bus/pci/drivers/{driver}/unbind")),
            value: pci.into(),
            why: "release it from its current driver",
        },
        BindStep::Write {
            path: root.join("sys/bus/pci/drivers_probe"),
            value: pci.into(),
            why: "let the overriding driver probe it",
        },
        BindStep::Verify {
            link: root.join(format!("sys/bus/pci/devices/{pci}/driver")),
            driver: "uio_pci_generic".into(),
        },
    ];
    assert_eq!(plan.steps, expected);
    assert_eq!(plan.previous.driver.as_deref(), Some(driver.as_str()));

    let printed = plan.to_string();
    println!("{printed}");
    assert!(
        printed.starts_with(&format!("bind {pci} ({driver}, interface ")),
        "{printed}"
    );
    assert!(
        printed.contains("  1. modprobe uio_pci_generic"),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("  3. write \"{pci}\" to ")),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("device back to {driver}")),
        "{printed}"
    );

    // Already on the wanted driver: nothing to do.
    let back = plan_bind(
        &root,
        &nics[0],
        &BindTarget::Kernel(driver.clone()),
        BindOptions::default(),
    )
    .unwrap();
    assert!(back.steps.is_empty());
    assert!(back.to_string().contains("nothing to do"));

    let unknown: PciAddr = "0000:00:1f.7".parse().unwrap();
    let err = plan_bind_address(
        &root,
        &nics,
        &unknown,
        &BindTarget::Dpdk(DpdkDriver::VfioPci),
        BindOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("no PCI network device 0000:00:1f.7 (known: {pci})")
    );
}

#[test]
fn vfio_needs_an_iommu_or_explicit_permission() {
    require_root();
    let FreeNic {
        _dir, root, nics, ..
    } = FreeNic::new(false);
    let vfio = BindTarget::Dpdk(DpdkDriver::VfioPci);
    // This host has no IOMMU: /sys/kernel/iommu_groups is empty.
    assert_eq!(
        fs::read_dir(root.join("sys/kernel/iommu_groups"))
            .unwrap()
            .count(),
        0
    );
    let err = plan_bind(&root, &nics[0], &vfio, BindOptions::default()).unwrap_err();
    assert!(matches!(err, NicError::NoIommu { .. }), "{err}");
    assert!(err.to_string().contains("uio_pci_generic"), "{err}");

    let allowed = BindOptions {
        allow_noiommu: true,
        ..BindOptions::default()
    };
    let plan = plan_bind(&root, &nics[0], &vfio, allowed).unwrap();
    let order: Vec<String> = plan
        .steps
        .iter()
        .map(|s| match s {
            BindStep::LoadModule { module, .. } => format!("modprobe {module}"),
            BindStep::Write { path, .. } => path.file_name().unwrap().to_str().unwrap().to_owned(),
            BindStep::Verify { .. } => "verify".to_owned(),
        })
        .collect();
    assert_eq!(
        order,
        [
            "modprobe vfio_pci",
            "enable_unsafe_noiommu_mode",
            "driver_override",
            "unbind",
            "drivers_probe",
            "verify"
        ]
    );
    assert!(
        plan.warnings.iter().any(|w| w.contains("no-IOMMU")),
        "{plan}"
    );

    // With an IOMMU group present (as the kernel would create), no refusal.
    // The group directory is copied from nowhere: this host has none, so
    // its existence is the one fact supplied by hand.
    fs::create_dir(root.join("sys/kernel/iommu_groups/0")).unwrap();
    let plan = plan_bind(&root, &nics[0], &vfio, BindOptions::default()).unwrap();
    assert!(plan.warnings.is_empty(), "{plan}");
}

#[test]
fn default_driver_follows_the_iommu() {
    require_root();
    let FreeNic { _dir, root, .. } = FreeNic::new(false);
    let groups = root.join("sys/kernel/iommu_groups");
    assert_eq!(fs::read_dir(&groups).unwrap().count(), 0);
    assert_eq!(default_driver(&root), DpdkDriver::UioPciGeneric);
    // The unsafe no-IOMMU mode is not an IOMMU: still uio_pci_generic.
    let noiommu = root.join("sys/module/vfio/parameters");
    fs::create_dir_all(&noiommu).unwrap();
    fs::write(noiommu.join("enable_unsafe_noiommu_mode"), "Y\n").unwrap();
    assert_eq!(default_driver(&root), DpdkDriver::UioPciGeneric);
    fs::create_dir(groups.join("0")).unwrap();
    assert_eq!(default_driver(&root), DpdkDriver::VfioPci);
    // A machine whose /sys has no iommu_groups at all (IOMMU support not
    // built in) gets uio_pci_generic too.
    fs::remove_dir_all(&groups).unwrap();
    assert_eq!(default_driver(&root), DpdkDriver::UioPciGeneric);
}

#[test]
fn perform_outside_root_cannot_load_modules_and_changes_nothing() {
    require_root();
    let free = FreeNic::new(false);
    let (root, host) = (&free.root, &free.host);
    let override_path = root.join(format!("sys/bus/pci/devices/{}/driver_override", host.pci));
    let before = read(&override_path);
    let plan = free.plan(&UIO, BindOptions::default()).unwrap();
    let err = perform(&plan).unwrap_err();
    match &err {
        NicError::BindFailed(failure) => {
            assert_eq!(failure.step_number, 1);
            assert_eq!(failure.restore, RestoreOutcome::NothingChanged);
            assert!(failure.reason.contains("running kernel"), "{failure}");
        }
        other => panic!("{other}"),
    }
    assert_eq!(read(&override_path), before);
    assert_eq!(read(root.join("sys/bus/pci/drivers_probe")), "");
}

#[test]
fn failed_verification_restores_the_previous_binding() {
    require_root();
    let free = FreeNic::new(true);
    let (root, host) = (&free.root, &free.host);
    let plan = free.plan(&UIO, BindOptions::default()).unwrap();
    assert_eq!(plan.steps.len(), 4, "{plan}");
    // A copied tree does not react to writes, so the driver link keeps
    // naming the old driver and verification fails: the restore path runs.
    let err = perform(&plan).unwrap_err();
    let pci = host.pci.as_str();
    let driver = host.driver.clone().unwrap();
    match &err {
        NicError::BindFailed(failure) => {
            assert_eq!(failure.step_number, 4);
            assert_eq!(
                failure.reason,
                format!("the device is bound to {driver}, not uio_pci_generic")
            );
            assert_eq!(
                failure.restore,
                RestoreOutcome::Restored {
                    driver: Some(driver.clone())
                }
            );
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("restored: bound to"), "{err}");
    let dev = root.join(format!("sys/bus/pci/devices/{pci}"));
    // What was written, in the files the kernel reads: the override was set
    // and then cleared again, the old driver was asked to let go, the bus
    // to probe.
    assert_eq!(read(dev.join("driver_override")), "\n");
    assert_eq!(
        read(root.join(format!("sys/bus/pci/drivers/{driver}/unbind"))),
        format!("{pci}\n")
    );
    assert_eq!(
        read(root.join("sys/bus/pci/drivers_probe")),
        format!("{pci}\n")
    );
}

#[test]
fn restore_reports_when_the_old_driver_is_gone() {
    require_root();
    let free = FreeNic::new(true);
    let (root, host) = (&free.root, &free.host);
    let plan = free.plan(&UIO, BindOptions::default()).unwrap();
    // Remove the device's driver link, as an unbind that happened but no
    // probe that followed would leave it; with the bind file of the old
    // driver gone too, the restore cannot succeed and must say so.
    let dev = root.join(format!("sys/bus/pci/devices/{}", host.pci));
    fs::remove_file(dev.join("driver")).unwrap();
    let driver = host.driver.clone().unwrap();
    fs::remove_file(root.join(format!("sys/bus/pci/drivers/{driver}/bind"))).unwrap();
    let err = perform(&plan).unwrap_err();
    match &err {
        NicError::BindFailed(failure) => {
            let RestoreOutcome::Failed { reason: why } = &failure.restore else {
                panic!("{failure}");
            };
            assert!(
                failure.reason.contains("no driver claimed the device"),
                "{failure}"
            );
            assert!(why.contains(&format!("binding to {driver}")), "{why}");
            assert!(why.contains("left without a driver"), "{why}");
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("RESTORE FAILED"), "{err}");
}

fn virtio(pci: &str, driver: &str, mac: Option<&str>) -> Nic {
    Nic {
        pci: pci.parse().unwrap(),
        vendor: 0x1af4,
        device: 0x1000,
        class: 0x020000,
        driver: Some(driver.to_owned()),
        driver_override: None,
        numa_node: None,
        iommu_group: None,
        interface: mac.map(|m| NetInterface {
            name: "eth1".to_owned(),
            mac: Some(m.parse().unwrap()),
            carrier: Some(true),
            operstate: "up".to_owned(),
            speed_mbps: None,
            routes: Vec::new(),
        }),
        management: false,
    }
}

#[test]
fn ledger_finds_a_dpdk_bound_nic_by_the_mac_it_had() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/dpdk-nics");
    // No file yet: an empty ledger, not an error.
    let empty = DpdkNicLedger::load(&path).unwrap();
    assert_eq!(empty, DpdkNicLedger::default());

    let mac = "52:54:00:12:34:57".parse().unwrap();
    let mut ledger = DpdkNicLedger::default();
    ledger.insert("0000:00:04.0".parse().unwrap(), mac);
    ledger.save(&path).unwrap();
    let loaded = DpdkNicLedger::load(&path).unwrap();
    assert_eq!(loaded, ledger);

    let bound = [
        virtio("0000:00:03.0", "virtio-pci", Some("52:54:00:12:34:56")),
        virtio("0000:00:04.0", "uio_pci_generic", None),
    ];
    assert_eq!(
        loaded.find(&bound, mac).map(|n| n.pci.to_string()),
        Some("0000:00:04.0".to_owned())
    );
    assert!(loaded
        .find(&bound, "52:54:00:12:34:58".parse().unwrap())
        .is_none());
    // Back on its kernel driver (the kernel knows the MAC again) or on no
    // driver at all: the ledger entry does not match.
    let back = [virtio("0000:00:04.0", "virtio-pci", None)];
    assert!(loaded.find(&back, mac).is_none());
    let vfio = [virtio("0000:00:04.0", "vfio-pci", None)];
    assert!(loaded.find(&vfio, mac).is_some());
}

#[test]
fn dpdk_addresses_of_bound_nics_by_pci_or_remembered_mac() {
    let mac = "52:54:00:12:34:57".parse().unwrap();
    let mut ledger = DpdkNicLedger::default();
    ledger.insert("0000:00:04.0".parse().unwrap(), mac);
    let inventory = [
        virtio("0000:00:03.0", "virtio-pci", Some("52:54:00:12:34:56")),
        virtio("0000:00:04.0", "uio_pci_generic", None),
        virtio("0000:00:05.0", "vfio-pci", None),
    ];
    let by_mac = NicSelector::Mac(mac);
    let by_pci = NicSelector::Pci("0000:00:05.0".parse().unwrap());
    let found = dpdk_addresses(&inventory, &ledger, &[by_pci.clone(), by_mac.clone()]);
    assert_eq!(
        found
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["0000:00:05.0", "0000:00:04.0"]
    );
    // One on a kernel driver, or not there at all: no list.
    let kernel = NicSelector::Pci("0000:00:03.0".parse().unwrap());
    assert!(dpdk_addresses(&inventory, &ledger, &[by_mac.clone(), kernel]).is_none());
    let absent = NicSelector::Pci("0000:00:09.0".parse().unwrap());
    assert!(dpdk_addresses(&inventory, &ledger, &[absent]).is_none());
    let unknown = NicSelector::Mac("52:54:00:12:34:99".parse().unwrap());
    assert!(dpdk_addresses(&inventory, &ledger, &[by_pci, unknown]).is_none());
}

#[test]
fn a_damaged_ledger_is_an_error_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dpdk-nics");
    fs::write(
        &path,
        "# header\n0000:00:04.0 52:54:00:12:34:57\n0000:00:05.0 nonsense\n",
    )
    .unwrap();
    let err = DpdkNicLedger::load(&path).unwrap_err().to_string();
    assert!(err.contains("dpdk-nics") && err.contains("line 3"), "{err}");
}
