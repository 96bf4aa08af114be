//! The daemon's [`Applier`]: makes an [`ApplianceConfig`] real on the
//! machine, in the order the data path needs it.
//!
//! 1. **Processes that hold the machine's resources stop first** when the
//!    hugepages or NICs change (a DPDK process keeps its pages mapped and
//!    its NIC open).
//! 2. **Hugepages** ([`crate::hugepages`]): the `[hugepages]` reservations
//!    and mounts, planned against the machine and applied all-or-nothing;
//!    the pool counts from before are kept to put back. An empty section
//!    leaves the machine's pages alone.
//! 3. **NICs** ([`crate::nic`]): every data NIC handed to its DPDK driver,
//!    refusing the management NIC and NICs carrying routes; a NIC named in
//!    the config that this machine does not have is an error naming it (a
//!    host without uio/vfio and without such NICs simply configures none).
//! 4. **sysctls** ([`crate::sysctl`]): what the data path needs plus the
//!    `[sysctl]` overrides, with the previous values kept.
//! 5. **Processes** ([`crate::supervisor`]): the supervised set becomes the
//!    config's; with [`MachineApplier::ready_timeout`] set, applying waits
//!    until every process runs and fails (so the store rolls back) if one
//!    does not.
//!
//! Every step is state-based (it plans from what the machine has now), so
//! applying a config twice changes nothing the second time. What a step
//! changed is recorded; when the store then asks for the exact reverse (a
//! failed change, a rollback, a cancelled change), the record is undone:
//! the previous sysctl values, drivers, mounts and pool counts come back,
//! not just what the older config would plan.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _};

use crate::config::{ApplianceConfig, HugepagesSection, NicEntry, NicRole};
use crate::hugepages::{self, Action, HugepageRequest, MountRequest, Nodes, PoolSnapshot};
use crate::nic::{self, BindOptions, BindPlan, BindTarget, DpdkNicLedger, NicSelector};
use crate::store::Applier;
use crate::supervisor::{specs_from_config, Paths, Supervisor};
use crate::sysctl;

/// The file in the runtime directory that remembers the MACs of the NICs
/// handed to DPDK ([`DpdkNicLedger`]).
pub const DPDK_NIC_LEDGER: &str = "dpdk-nics";

/// Applies appliance configs to the machine under `root`.
#[derive(Debug)]
pub struct MachineApplier {
    root: PathBuf,
    paths: Paths,
    supervisor: Arc<Supervisor>,
    /// Wait this long for every supervised process to run before an apply
    /// counts as done; `None` returns as soon as they are started.
    pub ready_timeout: Option<Duration>,
    last: Option<Record>,
}

/// What one forward apply changed, to undo it.
#[derive(Debug)]
struct Record {
    from: ApplianceConfig,
    to: ApplianceConfig,
    pools: Option<PoolSnapshot>,
    mounts: Vec<PathBuf>,
    binds: Vec<BindPlan>,
    sysctls: sysctl::Applied,
}

impl MachineApplier {
    /// An applier for the machine whose sysfs/procfs are under `root` (`/`
    /// on a real machine), starting programs from `paths` under
    /// `supervisor`.
    pub fn new(root: impl Into<PathBuf>, paths: Paths, supervisor: Arc<Supervisor>) -> Self {
        Self {
            root: root.into(),
            paths,
            supervisor,
            ready_timeout: Some(Duration::from_secs(30)),
            last: None,
        }
    }

    /// The supervisor it drives.
    pub fn supervisor(&self) -> &Arc<Supervisor> {
        &self.supervisor
    }

    /// Where the programs are.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// The sysfs/procfs root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn forward(&self, new: &ApplianceConfig, record: &mut Record) -> anyhow::Result<()> {
        self.apply_hugepages(&new.hugepages, record)
            .context("hugepages")?;
        self.apply_nics(&record.from.nics.clone(), &new.nics, record)
            .context("NICs")?;
        self.apply_sysctls(new, record).context("sysctls")?;
        Ok(())
    }

    fn apply_hugepages(
        &self,
        section: &HugepagesSection,
        record: &mut Record,
    ) -> anyhow::Result<()> {
        if section.pages.is_empty() && section.mounts.is_empty() {
            return Ok(());
        }
        let request = hugepage_request(section)?;
        let plan = hugepages::plan(&self.root, &request)?;
        if plan.is_empty() {
            return Ok(());
        }
        record.pools = Some(PoolSnapshot::take(&self.root)?);
        let applied = hugepages::apply(&plan)?;
        record.mounts = applied
            .done
            .iter()
            .filter_map(|a| match a {
                Action::Mount { path, .. } => Some(path.clone()),
                _ => None,
            })
            .collect();
        tracing::info!(actions = ?applied.done.iter().map(ToString::to_string).collect::<Vec<_>>(), "hugepages set up");
        Ok(())
    }

    fn apply_nics(
        &self,
        old: &[NicEntry],
        new: &[NicEntry],
        record: &mut Record,
    ) -> anyhow::Result<()> {
        let data: Vec<(usize, &NicEntry)> = new
            .iter()
            .enumerate()
            .filter(|(_, n)| n.role == NicRole::Data)
            .collect();
        if data.is_empty() {
            return Ok(());
        }
        let mut inventory = nic::inventory(&self.root)?;
        let ledger_path = self.paths.runtime_dir.join(DPDK_NIC_LEDGER);
        let mut ledger = DpdkNicLedger::load(&ledger_path)?;
        let management: Vec<NicSelector> = new
            .iter()
            .filter(|n| n.role == NicRole::Management)
            .filter_map(NicEntry::selector)
            .collect();
        nic::mark_management(&mut inventory, &management);
        for (i, entry) in data {
            let Some(selector) = entry.selector() else {
                continue;
            };
            let found = inventory.iter().find(|n| selector.matches(n)).or_else(|| {
                // Bound to DPDK by an earlier run of the daemon: no kernel
                // interface tells its MAC any more, the ledger does.
                match &selector {
                    NicSelector::Mac(mac) => ledger.find(&inventory, *mac),
                    NicSelector::Pci(_) => None,
                }
            });
            let Some(found) = found else {
                // A data NIC already on its DPDK driver has no kernel
                // interface and so no MAC to be found by; one that was in the
                // previous config too is taken to be bound already.
                if old.contains(entry) {
                    tracing::info!(nic = %selector, "data NIC not visible to the kernel; assuming it is still bound");
                    continue;
                }
                return Err(anyhow!(
                    "nics[{i}]: this machine has no PCI NIC with {selector} (PCI NICs here: {})",
                    if inventory.is_empty() {
                        "none".to_owned()
                    } else {
                        inventory
                            .iter()
                            .map(|n| match n.interface.as_ref().and_then(|i| i.mac) {
                                Some(mac) => format!("{} mac {mac}", n.pci),
                                None => n.pci.to_string(),
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ));
            };
            let plan = nic::plan_bind(
                &self.root,
                found,
                &BindTarget::Dpdk(entry.dpdk_driver(&self.root)),
                BindOptions {
                    force: false,
                    allow_noiommu: entry.allow_noiommu,
                },
            )
            .with_context(|| format!("nics[{i}] ({selector})"))?;
            if plan.steps.is_empty() {
                continue;
            }
            if let Some(mac) = found.interface.as_ref().and_then(|i| i.mac) {
                // Noted before the bind, so that a daemon killed halfway
                // still finds the NIC by its MAC.
                ledger.insert(found.pci.clone(), mac);
                ledger.save(&ledger_path)?;
            }
            nic::perform(&plan).with_context(|| format!("nics[{i}] ({selector})"))?;
            record.binds.push(plan);
        }
        Ok(())
    }

    /// The PCI addresses of the data NICs of `nics` (see
    /// [`nic::dpdk_addresses`]), for ltran's EAL allow-list; `None` when
    /// there are none or one cannot be told, and then ltran probes every
    /// device on a DPDK driver, as the EAL does by default.
    fn data_nic_addresses(&self, nics: &[NicEntry]) -> Option<Vec<String>> {
        let selectors = nics
            .iter()
            .filter(|n| n.role == NicRole::Data)
            .map(NicEntry::selector)
            .collect::<Option<Vec<NicSelector>>>()?;
        if selectors.is_empty() {
            return None;
        }
        let unknown = |e: &dyn std::fmt::Display| {
            tracing::warn!("no EAL allow-list for ltran: it probes every DPDK device: {e}");
        };
        let inventory = nic::inventory(&self.root).map_err(|e| unknown(&e)).ok()?;
        let ledger = DpdkNicLedger::load(&self.paths.runtime_dir.join(DPDK_NIC_LEDGER))
            .map_err(|e| unknown(&e))
            .ok()?;
        let found = nic::dpdk_addresses(&inventory, &ledger, &selectors);
        if found.is_none() {
            tracing::info!("a data NIC is not on a DPDK driver where expected: ltran's EAL probes every DPDK device");
        }
        Some(found?.iter().map(ToString::to_string).collect())
    }

    fn apply_sysctls(&self, new: &ApplianceConfig, record: &mut Record) -> anyhow::Result<()> {
        let overrides: BTreeMap<String, String> = new
            .sysctl
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        let wanted = sysctl::settings(None, &overrides)?;
        let plan = sysctl::plan(&self.root, &wanted)?;
        record.sysctls = sysctl::apply(&self.root, &plan)?;
        Ok(())
    }

    /// Puts back what `record` changed, newest first; tries every part and
    /// reports every failure.
    fn undo(&self, record: &Record) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        if let Err(e) = sysctl::restore(&self.root, &record.sysctls) {
            problems.push(format!("sysctls: {e}"));
        }
        for plan in record.binds.iter().rev() {
            let Some(previous) = &plan.previous.driver else {
                continue;
            };
            let result = nic::inventory(&self.root).and_then(|nics| {
                let back = nic::plan_bind_address(
                    &self.root,
                    &nics,
                    &plan.pci,
                    &BindTarget::Kernel(previous.clone()),
                    BindOptions {
                        force: true,
                        allow_noiommu: false,
                    },
                )?;
                nic::perform(&back)
            });
            if let Err(e) = result {
                problems.push(format!("giving {} back to {previous}: {e}", plan.pci));
            }
        }
        for mount in record.mounts.iter().rev() {
            if let Err(e) = nix::mount::umount(mount) {
                problems.push(format!("umount {}: {e}", mount.display()));
            }
        }
        if let Some(pools) = &record.pools {
            if let Err(e) = pools.restore() {
                problems.push(format!("hugepage pools: {e}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(anyhow!(
                "undoing the machine changes: {}",
                problems.join("; ")
            ))
        }
    }
}

impl Applier for MachineApplier {
    fn apply(&mut self, old: &ApplianceConfig, new: &ApplianceConfig) -> anyhow::Result<()> {
        let resolved = new.validate().context("the config to apply")?;
        if old.hugepages != new.hugepages || old.nics != new.nics {
            tracing::info!("hugepages or NICs change: stopping the supervised processes first");
            self.supervisor.stop_all();
        }
        let reverse = self.last.take().filter(|r| r.from == *new && r.to == *old);
        match reverse {
            Some(record) => {
                tracing::info!("undoing the last change");
                self.undo(&record)?;
            }
            None => {
                let mut record = Record {
                    from: old.clone(),
                    to: new.clone(),
                    pools: None,
                    mounts: Vec::new(),
                    binds: Vec::new(),
                    sysctls: sysctl::Applied::default(),
                };
                let result = self.forward(new, &mut record);
                // Kept even on failure: the store's reverse apply undoes
                // what did happen.
                self.last = Some(record);
                result?;
            }
        }
        let devices = self.data_nic_addresses(&new.nics);
        let specs = specs_from_config(new, &resolved, &self.paths, devices.as_deref());
        self.supervisor
            .apply(specs)
            .context("starting the processes")?;
        if let Some(timeout) = self.ready_timeout {
            self.supervisor.wait_running(timeout)?;
        }
        Ok(())
    }
}

/// The `[hugepages]` section as a request to [`hugepages::plan`]: one
/// reservation per entry (on its node, or machine-wide), one mount per
/// entry with its page size.
pub fn hugepage_request(section: &HugepagesSection) -> anyhow::Result<HugepageRequest> {
    let size = |s: crate::config::PageSize| {
        hugepages::PageSize::from_kib(s.kib()).ok_or_else(|| anyhow!("page size {s} unknown"))
    };
    let mut reservations = Vec::new();
    for p in &section.pages {
        reservations.push(hugepages::Reservation {
            size: size(p.size)?,
            pages: p.count,
            nodes: p.node.map_or(Nodes::MachineWide, |n| Nodes::List(vec![n])),
        });
    }
    let mut mounts = Vec::new();
    for m in &section.mounts {
        mounts.push(MountRequest {
            dir: m.dir.clone(),
            size: Some(size(m.page_size)?),
            purpose: "the appliance".into(),
        });
    }
    Ok(HugepageRequest {
        reservations,
        mounts,
        exact: false,
        allow_thp: false,
    })
}
