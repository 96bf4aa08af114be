//! The parts of the config an operator edits one at a time: devices (NIC
//! roles and drivers), the bond, the subnets and the instances.
//!
//! Every edit reads the running config, changes its part and sends the
//! whole config back to applianced as one change (under
//! [`crate::Shared::edit_lock`]): it is validated as a whole (a refusal
//! names the field, like `ltran.bond_mtu`, and changes nothing), applied
//! as one transaction, and left pending confirmation when it can cut the
//! operator off, exactly as `PUT /api/v1/config` is.

use std::collections::BTreeMap;

use appliance::api::{ChangeResult, Request as ApiRequest, Response as ApiResponse};
use appliance::config::{ApplianceConfig, Instance, NicEntry, NicRole, RestartPolicy, SubConfig};
use appliance::nic::{DpdkDriver, DpdkNicLedger, Nic, PciAddr};
use appliance::supervisor::{ProcessAction, ProcessStatus};
use axum::extract::State;
use axum::Extension;
use gazelle_ctl_proto::BondStatus;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::config::{audited, change, running_toml, ChangeRecord};
use crate::audit::AuditEntry;
use crate::auth::Principal;
use crate::daemons::unexpected;
use crate::guard::ClientIp;
use crate::problem::{Json, Path, Problem};
use crate::AppState;

/// Reads the running config, lets `edit` change it, and applies the
/// result as one change.
async fn edit(
    state: &AppState,
    who: &Principal,
    ip: ClientIp,
    action: &str,
    target: Option<String>,
    edit: impl FnOnce(&mut ApplianceConfig) -> Result<(), Problem>,
) -> Result<ChangeResult, Problem> {
    let _edit = state.edit_lock.lock().await;
    let (running, old) = running_toml(state).await?;
    let mut new = running;
    edit(&mut new)?;
    // Validated here too, so a value TOML cannot hold (a u64 beyond
    // i64) is refused naming its field instead of reaching the encoder.
    let check = new.clone();
    let valid = tokio::task::spawn_blocking(move || check.validate())
        .await
        .map_err(|e| Problem::internal(e.to_string()))?
        .map_err(|e| {
            let field = e.field();
            Problem::invalid_config(format!("invalid config, nothing changed: {e}"), field)
        })
        .and_then(|_| {
            toml::to_string(&new).map_err(|e| {
                Problem::invalid_config(format!("not representable in TOML: {e}"), None)
            })
        });
    let toml = match valid {
        Ok(toml) => toml,
        Err(problem) => {
            let mut entry = AuditEntry::new(&who.name, ip.0, action, "refused");
            entry.target = target;
            let field = problem
                .field
                .as_ref()
                .map(|f| format!(" [{f}]"))
                .unwrap_or_default();
            entry.detail = Some(format!("{}{field}", problem.detail));
            state.audit.record(&entry);
            return Err(problem);
        }
    };
    let record = ChangeRecord {
        action,
        target,
        old: &old,
        new: Some(&toml),
    };
    change(
        state,
        who,
        ip,
        record,
        // Made from `old`: applianced refuses it if another client (an
        // `appliancectl config set`) changed the config meanwhile.
        ApiRequest::SetConfig {
            toml: toml.clone(),
            base: Some(old.clone()),
        },
    )
    .await
}

fn text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn texts(v: Option<&toml::Value>) -> Vec<String> {
    v.and_then(toml::Value::as_array)
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default()
}

/// Sets `key` to `value`, or removes it when `value` is an empty string.
fn put(table: &mut toml::Table, key: &str, value: Option<toml::Value>) {
    match value {
        None => {}
        Some(toml::Value::String(s)) if s.is_empty() => {
            table.remove(key);
        }
        Some(v) => {
            table.insert(key.to_owned(), v);
        }
    }
}

// ---- devices ------------------------------------------------------------

/// What the config makes of a NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceRole {
    /// The operator's way in: left to the kernel.
    Management,
    /// Handed to DPDK.
    Data,
    /// Not in the config: left alone.
    Unmanaged,
}

/// A PCI NIC: the inventory and what the config makes of it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Device {
    /// PCI address (the id).
    pub pci: String,
    /// PCI vendor id, hex.
    pub vendor: String,
    /// PCI device id, hex.
    pub device: String,
    /// The driver bound now.
    pub driver: Option<String>,
    /// Bound to a DPDK driver (uio_pci_generic, vfio-pci) now.
    pub on_dpdk_driver: bool,
    /// Kernel interface, while on a kernel driver.
    pub interface: Option<String>,
    /// MAC address (the kernel's, or the one recorded when it went to DPDK).
    pub mac: Option<String>,
    /// Carrier, while on a kernel driver.
    pub link: Option<bool>,
    /// The kernel's operstate.
    pub operstate: Option<String>,
    /// Link speed, Mbit/s.
    pub speed_mbps: Option<u32>,
    /// NUMA node.
    pub numa_node: Option<u32>,
    /// IOMMU group.
    pub iommu_group: Option<u32>,
    /// The role the config gives it.
    pub role: DeviceRole,
    /// The DPDK driver the config asks for (a data NIC; absent: the
    /// machine's default).
    pub configured_driver: Option<DpdkDriver>,
    /// Its entry in the config's `nics`, if any.
    pub config_index: Option<usize>,
}

/// A device's new role (and driver).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceUpdate {
    /// `management`, `data` or `unmanaged` (removes it from the config).
    pub role: DeviceRole,
    /// For a data NIC: `uio_pci_generic` or `vfio-pci`; absent: the
    /// machine's default.
    pub driver: Option<DpdkDriver>,
}

fn ledger(state: &AppState) -> DpdkNicLedger {
    DpdkNicLedger::load(&state.appliance_runtime_dir.join("dpdk-nics")).unwrap_or_default()
}

/// The index in `entries` of the config entry that names `nic`.
fn entry_of(
    entries: &[NicEntry],
    nic: &Nic,
    inventory: &[Nic],
    ledger: &DpdkNicLedger,
) -> Option<usize> {
    entries.iter().position(|e| match (&e.pci, e.mac) {
        (Some(pci), _) => *pci == nic.pci,
        (None, Some(mac)) => {
            nic.interface.as_ref().and_then(|i| i.mac) == Some(mac)
                || ledger
                    .find(inventory, mac)
                    .is_some_and(|n| n.pci == nic.pci)
        }
        (None, None) => false,
    })
}

async fn inventory(state: &AppState) -> Result<Vec<Nic>, Problem> {
    match state.daemons.appliance(ApiRequest::Nics, false).await? {
        ApiResponse::Nics { nics } => Ok(nics),
        other => Err(unexpected(&other)),
    }
}

async fn devices(state: &AppState) -> Result<Vec<Device>, Problem> {
    let nics = inventory(state).await?;
    let (config, _) = running_toml(state).await?;
    let ledger = ledger(state);
    Ok(nics
        .iter()
        .map(|nic| {
            let index = entry_of(&config.nics, nic, &nics, &ledger);
            let entry = index.map(|i| &config.nics[i]);
            let iface = nic.interface.as_ref();
            let mac = iface
                .and_then(|i| i.mac)
                .or_else(|| entry.and_then(|e| e.mac))
                .map(|m| m.to_string());
            Device {
                pci: nic.pci.to_string(),
                vendor: format!("{:04x}", nic.vendor),
                device: format!("{:04x}", nic.device),
                driver: nic.driver.clone(),
                on_dpdk_driver: nic.on_dpdk_driver(),
                interface: iface.map(|i| i.name.clone()),
                mac,
                link: iface.and_then(|i| i.carrier),
                operstate: iface.map(|i| i.operstate.clone()),
                speed_mbps: iface.and_then(|i| i.speed_mbps),
                numa_node: nic.numa_node,
                iommu_group: nic.iommu_group,
                role: match entry.map(|e| e.role) {
                    Some(NicRole::Management) => DeviceRole::Management,
                    Some(NicRole::Data) => DeviceRole::Data,
                    None => DeviceRole::Unmanaged,
                },
                configured_driver: entry.and_then(|e| e.driver),
                config_index: index,
            }
        })
        .collect())
}

fn parse_pci(pci: &str) -> Result<PciAddr, Problem> {
    pci.parse::<PciAddr>()
        .map_err(|e| Problem::not_found(format!("no device {e}")))
}

/// The PCI NICs: driver, MAC, link, speed, NUMA node, and their role.
#[utoipa::path(
    get,
    path = "/api/v1/devices",
    tag = "devices",
    responses((status = 200, description = "The NICs", body = Vec<Device>))
)]
pub async fn list_devices(State(state): State<AppState>) -> Result<Json<Vec<Device>>, Problem> {
    devices(&state).await.map(Json)
}

/// One NIC.
#[utoipa::path(
    get,
    path = "/api/v1/devices/{pci}",
    tag = "devices",
    params(("pci" = String, Path, description = "PCI address, like 0000:00:04.0")),
    responses((status = 200, description = "The NIC", body = Device))
)]
pub async fn get_device(
    State(state): State<AppState>,
    Path(pci): Path<String>,
) -> Result<Json<Device>, Problem> {
    let pci = parse_pci(&pci)?.to_string();
    devices(&state)
        .await?
        .into_iter()
        .find(|d| d.pci == pci)
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no NIC at {pci}")))
}

/// Change a NIC's role and driver (a change that needs confirmation).
#[utoipa::path(
    put,
    path = "/api/v1/devices/{pci}",
    tag = "devices",
    params(("pci" = String, Path, description = "PCI address, like 0000:00:04.0")),
    request_body = DeviceUpdate,
    responses((status = 200, description = "Applied: saved, or pending confirmation", body = ChangeResult))
)]
pub async fn update_device(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    ip: ClientIp,
    Path(pci): Path<String>,
    Json(update): Json<DeviceUpdate>,
) -> Result<Json<ChangeResult>, Problem> {
    let pci = parse_pci(&pci)?;
    let nics = inventory(&state).await?;
    let nic = nics
        .iter()
        .find(|n| n.pci == pci)
        .cloned()
        .ok_or_else(|| Problem::not_found(format!("no NIC at {pci}")))?;
    let ledger = ledger(&state);
    edit(
        &state,
        &p,
        ip,
        "device.update",
        Some(pci.to_string()),
        |config| {
            let index = entry_of(&config.nics, &nic, &nics, &ledger);
            let role = match update.role {
                DeviceRole::Unmanaged => {
                    if let Some(i) = index {
                        config.nics.remove(i);
                    }
                    return Ok(());
                }
                DeviceRole::Management => NicRole::Management,
                DeviceRole::Data => NicRole::Data,
            };
            let driver = if role == NicRole::Data {
                update.driver
            } else {
                None
            };
            match index {
                Some(i) => {
                    let e = &mut config.nics[i];
                    e.role = role;
                    e.driver = driver;
                    e.allow_noiommu &= driver == Some(DpdkDriver::VfioPci);
                }
                None => config.nics.push(NicEntry {
                    pci: Some(pci.clone()),
                    mac: None,
                    role,
                    driver,
                    allow_noiommu: false,
                }),
            }
            Ok(())
        },
    )
    .await
    .map(Json)
}

// ---- bond -----------------------------------------------------------------

/// ltran's bond as the config has it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BondConfig {
    /// `bond_mode` (1: active-backup).
    pub mode: Option<i64>,
    /// `bond_miimon`: link check interval, ms.
    pub miimon_ms: Option<i64>,
    /// `bond_ports`: the port mask, like `["0x3"]`.
    pub ports: Vec<String>,
    /// `bond_macs`: the bond's MAC.
    pub macs: Vec<String>,
    /// `bond_mtu`.
    pub mtu: Option<i64>,
}

/// The bond: configured and live.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Bond {
    /// As configured (absent: the config has no `[ltran]`).
    pub config: Option<BondConfig>,
    /// The file ltran's config is in, when it is not inline (edit it there).
    pub config_file: Option<String>,
    /// As ltran runs it: active port, links, failovers (absent when ltran
    /// is not running).
    pub live: Option<BondStatus>,
    /// Why `live` is absent.
    pub live_unavailable: Option<String>,
    /// The failovers this server saw, newest first (at most
    /// [`FAILOVERS_KEPT`](crate::history::FAILOVERS_KEPT)).
    #[serde(default)]
    pub failover_history: Vec<crate::history::Failover>,
}

/// A change of the bond; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BondUpdate {
    /// `bond_mode` (1: active-backup).
    pub mode: Option<i64>,
    /// `bond_miimon`, ms.
    pub miimon_ms: Option<i64>,
    /// `bond_ports`, like `["0x3"]`.
    pub ports: Option<Vec<String>>,
    /// `bond_macs`.
    pub macs: Option<Vec<String>>,
    /// `bond_mtu`.
    pub mtu: Option<i64>,
}

fn ltran_table(config: &mut ApplianceConfig) -> Result<&mut toml::Table, Problem> {
    match &mut config.ltran {
        None => Err(Problem::not_found(
            "the config has no [ltran] section, so no bond or dispatch subnet; add one with PUT /api/v1/config",
        )),
        Some(SubConfig::Path(path)) => Err(Problem::conflict(format!(
            "ltran's config is in {}: edit it there, or make it inline with PUT /api/v1/config",
            path.display()
        ))),
        Some(SubConfig::Inline(table)) => Ok(table),
    }
}

/// The bond: mode, miimon, ports, MACs, MTU; and live: active port, links,
/// failovers.
#[utoipa::path(
    get,
    path = "/api/v1/bond",
    tag = "bond",
    responses((status = 200, description = "The bond", body = Bond))
)]
pub async fn get_bond(State(state): State<AppState>) -> Result<Json<Bond>, Problem> {
    let (config, _) = running_toml(&state).await?;
    let (configured, file) = match &config.ltran {
        None => (None, None),
        Some(sub) => {
            let file = match sub {
                SubConfig::Path(p) => Some(p.display().to_string()),
                SubConfig::Inline(_) => None,
            };
            let sub = sub.clone();
            let table = tokio::task::spawn_blocking(move || sub.table())
                .await
                .map_err(|e| Problem::internal(e.to_string()))?
                .unwrap_or_default();
            let int = |k: &str| table.get(k).and_then(toml::Value::as_integer);
            (
                Some(BondConfig {
                    mode: int("bond_mode"),
                    miimon_ms: int("bond_miimon"),
                    ports: texts(table.get("bond_ports")),
                    macs: texts(table.get("bond_macs")),
                    mtu: int("bond_mtu"),
                }),
                file,
            )
        }
    };
    let (live, live_unavailable) = match state.daemons.ltran_stats().await {
        Ok(s) => (Some(s.bond), None),
        Err(p) => (None, Some(p.detail)),
    };
    Ok(Json(Bond {
        config: configured,
        config_file: file,
        live,
        live_unavailable,
        failover_history: state
            .bond_history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failovers(),
    }))
}

/// Change the bond (restarts ltran, and the instances behind it; needs
/// confirmation).
#[utoipa::path(
    patch,
    path = "/api/v1/bond",
    tag = "bond",
    request_body = BondUpdate,
    responses((status = 200, description = "Applied: saved, or pending confirmation", body = ChangeResult))
)]
pub async fn update_bond(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    ip: ClientIp,
    Json(u): Json<BondUpdate>,
) -> Result<Json<ChangeResult>, Problem> {
    edit(&state, &p, ip, "bond.update", None, |config| {
        let t = ltran_table(config)?;
        put(t, "bond_mode", u.mode.map(Into::into));
        put(t, "bond_miimon", u.miimon_ms.map(Into::into));
        put(t, "bond_ports", u.ports.map(Into::into));
        put(t, "bond_macs", u.macs.map(Into::into));
        put(t, "bond_mtu", u.mtu.map(Into::into));
        Ok(())
    })
    .await
    .map(Json)
}

// ---- subnets ----------------------------------------------------------------

/// An instance's addresses.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InstanceAddresses {
    /// The instance.
    pub name: String,
    /// `host_addr`.
    pub host_addr: Option<String>,
    /// `mask_addr`.
    pub mask_addr: Option<String>,
    /// `gateway_addr`.
    pub gateway_addr: Option<String>,
    /// `host_addr6`.
    pub host_addr6: Option<String>,
}

/// ltran's dispatch subnets and the instances' addresses.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Subnets {
    /// `dispatch_subnet` (IPv4 network).
    pub dispatch_subnet: Option<String>,
    /// `dispatch_subnet_length`: host bits, as gazelle counts them (8: a /24).
    pub dispatch_subnet_length: Option<i64>,
    /// `dispatch_subnet6` (IPv6 network with its prefix length).
    pub dispatch_subnet6: Option<String>,
    /// Each instance's addresses (change them with PATCH
    /// /api/v1/instances/{name}).
    pub instances: Vec<InstanceAddresses>,
}

/// A change of the dispatch subnets; absent fields stay, an empty
/// `dispatch_subnet6` removes it.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubnetsUpdate {
    /// `dispatch_subnet`.
    pub dispatch_subnet: Option<String>,
    /// `dispatch_subnet_length` (host bits).
    pub dispatch_subnet_length: Option<i64>,
    /// `dispatch_subnet6` (`""` removes it).
    pub dispatch_subnet6: Option<String>,
}

async fn lstack_table(sub: &SubConfig) -> toml::Table {
    let sub = sub.clone();
    tokio::task::spawn_blocking(move || sub.table().unwrap_or_default())
        .await
        .unwrap_or_default()
}

fn addresses(name: &str, t: &toml::Table) -> InstanceAddresses {
    let get = |k: &str| t.get(k).map(text);
    InstanceAddresses {
        name: name.to_owned(),
        host_addr: get("host_addr"),
        mask_addr: get("mask_addr"),
        gateway_addr: get("gateway_addr"),
        host_addr6: get("host_addr6"),
    }
}

/// ltran's dispatch subnets (v4, v6) and every instance's addresses.
#[utoipa::path(
    get,
    path = "/api/v1/subnets",
    tag = "subnets",
    responses((status = 200, description = "The subnets", body = Subnets))
)]
pub async fn get_subnets(State(state): State<AppState>) -> Result<Json<Subnets>, Problem> {
    let (config, _) = running_toml(&state).await?;
    let ltran = match &config.ltran {
        Some(sub) => lstack_table(sub).await,
        None => toml::Table::new(),
    };
    let mut instances = Vec::new();
    for i in &config.instances {
        instances.push(addresses(&i.name, &lstack_table(&i.lstack).await));
    }
    Ok(Json(Subnets {
        dispatch_subnet: ltran.get("dispatch_subnet").map(text),
        dispatch_subnet_length: ltran
            .get("dispatch_subnet_length")
            .and_then(toml::Value::as_integer),
        dispatch_subnet6: ltran.get("dispatch_subnet6").map(text),
        instances,
    }))
}

/// Change ltran's dispatch subnets (needs confirmation).
#[utoipa::path(
    patch,
    path = "/api/v1/subnets",
    tag = "subnets",
    request_body = SubnetsUpdate,
    responses((status = 200, description = "Applied: saved, or pending confirmation", body = ChangeResult))
)]
pub async fn update_subnets(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    ip: ClientIp,
    Json(u): Json<SubnetsUpdate>,
) -> Result<Json<ChangeResult>, Problem> {
    edit(&state, &p, ip, "subnets.update", None, |config| {
        let t = ltran_table(config)?;
        put(t, "dispatch_subnet", u.dispatch_subnet.map(Into::into));
        put(
            t,
            "dispatch_subnet_length",
            u.dispatch_subnet_length.map(Into::into),
        );
        put(t, "dispatch_subnet6", u.dispatch_subnet6.map(Into::into));
        Ok(())
    })
    .await
    .map(Json)
}

// ---- instances --------------------------------------------------------------

/// An application run under lstack: its config and its process.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InstanceView {
    /// Its name (the id).
    pub name: String,
    /// The program and its arguments.
    pub command: Vec<String>,
    /// Extra environment.
    pub environment: BTreeMap<String, String>,
    /// How it is restarted.
    pub restart: RestartPolicy,
    /// Its lstack section as written (inline keys, or `{"path": ...}`).
    #[schema(value_type = Object)]
    pub lstack: serde_json::Value,
    /// Its addresses.
    pub addresses: InstanceAddresses,
    /// `num_cpus`: the stack threads' CPUs, like `"1"` or `"2,3"`.
    pub num_cpus: Option<String>,
    /// `use_ltran`: behind ltran (true) or owning a NIC.
    pub use_ltran: Option<bool>,
    /// The supervised process: state, pid, restarts, last exit, output
    /// tail (absent when applianced does not run it).
    pub process: Option<ProcessStatus>,
}

/// A change of an instance; absent fields stay, an empty `host_addr6` or
/// `gateway_addr` removes it.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceUpdate {
    /// The program and its arguments.
    pub command: Option<Vec<String>>,
    /// Extra environment (replaces the whole map).
    pub environment: Option<BTreeMap<String, String>>,
    /// How it is restarted.
    pub restart: Option<RestartPolicy>,
    /// `host_addr`.
    pub host_addr: Option<String>,
    /// `mask_addr`.
    pub mask_addr: Option<String>,
    /// `gateway_addr` (`""` removes it).
    pub gateway_addr: Option<String>,
    /// `host_addr6` (`""` removes it).
    pub host_addr6: Option<String>,
    /// `num_cpus`: the stack threads' CPUs.
    pub num_cpus: Option<String>,
}

async fn processes(state: &AppState) -> Vec<ProcessStatus> {
    match state.daemons.appliance(ApiRequest::Status, false).await {
        Ok(ApiResponse::Status { processes, .. }) => processes,
        _ => Vec::new(),
    }
}

async fn view(i: &Instance, processes: &[ProcessStatus]) -> InstanceView {
    let table = lstack_table(&i.lstack).await;
    InstanceView {
        name: i.name.clone(),
        command: i.command.clone(),
        environment: i.environment.clone(),
        restart: i.restart.clone(),
        lstack: serde_json::to_value(&i.lstack).unwrap_or_default(),
        addresses: addresses(&i.name, &table),
        num_cpus: table.get("num_cpus").map(text),
        use_ltran: table.get("use_ltran").map(|v| match v {
            toml::Value::Boolean(b) => *b,
            toml::Value::Integer(n) => *n != 0,
            _ => false,
        }),
        process: processes.iter().find(|p| p.name == i.name).cloned(),
    }
}

/// Every instance, with its process.
#[utoipa::path(
    get,
    path = "/api/v1/instances",
    tag = "instances",
    responses((status = 200, description = "The instances", body = Vec<InstanceView>))
)]
pub async fn list_instances(
    State(state): State<AppState>,
) -> Result<Json<Vec<InstanceView>>, Problem> {
    let (config, _) = running_toml(&state).await?;
    let processes = processes(&state).await;
    let mut out = Vec::new();
    for i in &config.instances {
        out.push(view(i, &processes).await);
    }
    Ok(Json(out))
}

fn not_an_instance(name: &str) -> Problem {
    Problem::not_found(format!(
        "no instance is named {name:?} (GET /api/v1/instances)"
    ))
}

/// One instance, with its process.
#[utoipa::path(
    get,
    path = "/api/v1/instances/{name}",
    tag = "instances",
    params(("name" = String, Path, description = "The instance's name")),
    responses((status = 200, description = "The instance", body = InstanceView))
)]
pub async fn get_instance(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<InstanceView>, Problem> {
    let (config, _) = running_toml(&state).await?;
    let i = config
        .instances
        .iter()
        .find(|i| i.name == name)
        .ok_or_else(|| not_an_instance(&name))?;
    Ok(Json(view(i, &processes(&state).await).await))
}

/// Add an instance.
#[utoipa::path(
    post,
    path = "/api/v1/instances",
    tag = "instances",
    request_body = Instance,
    responses((status = 200, description = "Applied: saved, or pending confirmation", body = ChangeResult))
)]
pub async fn create_instance(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    ip: ClientIp,
    Json(instance): Json<Instance>,
) -> Result<Json<ChangeResult>, Problem> {
    let name = instance.name.clone();
    edit(&state, &p, ip, "instance.create", Some(name), |config| {
        config.instances.push(instance);
        Ok(())
    })
    .await
    .map(Json)
}

/// Change an instance: command, environment, restart policy, addresses,
/// stack threads (an address change needs confirmation).
#[utoipa::path(
    patch,
    path = "/api/v1/instances/{name}",
    tag = "instances",
    params(("name" = String, Path, description = "The instance's name")),
    request_body = InstanceUpdate,
    responses((status = 200, description = "Applied: saved, or pending confirmation", body = ChangeResult))
)]
pub async fn update_instance(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    ip: ClientIp,
    Path(name): Path<String>,
    Json(u): Json<InstanceUpdate>,
) -> Result<Json<ChangeResult>, Problem> {
    edit(&state, &p, ip, "instance.update", Some(name.clone()), |config| {
        let i = config
            .instances
            .iter_mut()
            .find(|i| i.name == name)
            .ok_or_else(|| not_an_instance(&name))?;
        if let Some(c) = u.command {
            i.command = c;
        }
        if let Some(e) = u.environment {
            i.environment = e;
        }
        if let Some(r) = u.restart {
            i.restart = r;
        }
        let lstack_keys = [
            ("host_addr", u.host_addr),
            ("mask_addr", u.mask_addr),
            ("gateway_addr", u.gateway_addr),
            ("host_addr6", u.host_addr6),
            ("num_cpus", u.num_cpus),
        ];
        if lstack_keys.iter().any(|(_, v)| v.is_some()) {
            let SubConfig::Inline(t) = &mut i.lstack else {
                return Err(Problem::conflict(format!(
                    "instance {name}'s lstack config is a file: edit its addresses there, or make it inline with PUT /api/v1/config"
                )));
            };
            for (key, value) in lstack_keys {
                put(t, key, value.map(Into::into));
            }
        }
        Ok(())
    })
    .await
    .map(Json)
}

/// Remove an instance (it is stopped).
#[utoipa::path(
    delete,
    path = "/api/v1/instances/{name}",
    tag = "instances",
    params(("name" = String, Path, description = "The instance's name")),
    responses((status = 200, description = "Applied: saved, or pending confirmation", body = ChangeResult))
)]
pub async fn delete_instance(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    ip: ClientIp,
    Path(name): Path<String>,
) -> Result<Json<ChangeResult>, Problem> {
    edit(
        &state,
        &p,
        ip,
        "instance.delete",
        Some(name.clone()),
        |config| {
            let before = config.instances.len();
            config.instances.retain(|i| i.name != name);
            if config.instances.len() == before {
                return Err(not_an_instance(&name));
            }
            Ok(())
        },
    )
    .await
    .map(Json)
}

/// Start, stop or restart an instance's process (until the next config
/// change or reboot; not a config change).
#[utoipa::path(
    post,
    path = "/api/v1/instances/{name}/{action}",
    tag = "instances",
    params(
        ("name" = String, Path, description = "The instance's name"),
        ("action" = ProcessAction, Path, description = "start, stop or restart")
    ),
    responses((status = 200, description = "The process after it", body = ProcessStatus))
)]
pub async fn control_instance(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    ip: ClientIp,
    Path((name, action)): Path<(String, ProcessAction)>,
) -> Result<Json<ProcessStatus>, Problem> {
    let verb = match action {
        ProcessAction::Start => "instance.start",
        ProcessAction::Stop => "instance.stop",
        ProcessAction::Restart => "instance.restart",
    };
    let answer = state
        .daemons
        .appliance(
            ApiRequest::Process {
                name: name.clone(),
                action,
            },
            true,
        )
        .await;
    let mut entry = AuditEntry::new(&p.name, ip.0, verb, "ok");
    entry.target = Some(name);
    audited(&state, entry, answer, |answer, _| match answer {
        ApiResponse::Process(status) => Ok(Json(status)),
        other => Err(other),
    })
}
