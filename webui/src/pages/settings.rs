//! The forms of the parts an operator edits one at a time: the bond, the
//! dispatch subnets, the devices. Each posts to the same handler as the
//! REST API (one whole-config change through applianced); a refusal comes
//! back as the form with the message next to the field it names.

use appliance::nic::DpdkDriver;
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;

use super::{
    change_message, int_field, layout, list_field, render, Change, FieldErrors, Layout, Session,
};
use crate::api::edits::{self, BondUpdate, Device, DeviceRole, DeviceUpdate, SubnetsUpdate};
use crate::problem::{Json, Path};
use crate::AppState;

// ---- bond -------------------------------------------------------------------

/// The bond form's fields, as typed.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct BondForm {
    #[serde(default)]
    bond_mode: String,
    #[serde(default)]
    bond_miimon: String,
    #[serde(default)]
    bond_ports: String,
    #[serde(default)]
    bond_macs: String,
    #[serde(default)]
    bond_mtu: String,
}

const BOND_INPUTS: &[&str] = &[
    "bond_mode",
    "bond_miimon",
    "bond_ports",
    "bond_macs",
    "bond_mtu",
];

/// A live bond port.
#[derive(Debug)]
pub struct LivePort {
    name: String,
    link: &'static str,
    active: bool,
}

#[derive(Template)]
#[template(path = "bond.html")]
struct BondPage {
    layout: Layout,
    form: BondForm,
    errors: FieldErrors,
    config_file: Option<String>,
    no_ltran: Option<String>,
    live: Option<String>,
    live_ports: Vec<LivePort>,
    failovers: Option<u64>,
    history: Vec<FailoverRow>,
    kept: usize,
}

/// A failover, as the bond page lists it.
#[derive(Debug)]
pub struct FailoverRow {
    at: String,
    from: String,
    to: String,
    reason: String,
}

async fn bond_view(
    state: &AppState,
    s: &Session,
    form: Option<BondForm>,
    errors: FieldErrors,
) -> Response {
    let layout = layout(state, s, "Bond").await;
    let bond = edits::get_bond(State(state.clone())).await;
    let (mut page_form, mut config_file, mut no_ltran, mut live, mut live_ports, mut failovers) =
        (BondForm::default(), None, None, None, Vec::new(), None);
    let mut history = Vec::new();
    match bond {
        Ok(Json(b)) => {
            let none = || "none (no link up)".to_owned();
            history = b
                .failover_history
                .iter()
                .map(|f| FailoverRow {
                    at: super::utc(f.at_unix_ms),
                    from: f.from.clone().unwrap_or_else(none),
                    to: f.to.clone().unwrap_or_else(none),
                    reason: f.reason.clone(),
                })
                .collect();
            if let Some(c) = &b.config {
                page_form = BondForm {
                    bond_mode: c.mode.map(|v| v.to_string()).unwrap_or_default(),
                    bond_miimon: c.miimon_ms.map(|v| v.to_string()).unwrap_or_default(),
                    bond_ports: c.ports.join(", "),
                    bond_macs: c.macs.join(", "),
                    bond_mtu: c.mtu.map(|v| v.to_string()).unwrap_or_default(),
                };
            } else {
                no_ltran = Some("The config has no [ltran] section, so there is no bond: add one on the Configuration page.".to_owned());
            }
            config_file = b.config_file;
            match (&b.live, &b.live_unavailable) {
                (Some(l), _) => {
                    live = Some(format!(
                        "mode {}, MAC {}, link check every {} ms",
                        l.mode, l.mac, l.miimon_ms
                    ));
                    failovers = Some(l.failovers);
                    live_ports = l
                        .ports
                        .iter()
                        .map(|p| LivePort {
                            name: p.name.clone(),
                            link: if p.link_up { "up" } else { "down" },
                            active: p.active,
                        })
                        .collect();
                }
                (None, Some(why)) => live = Some(format!("ltran is not running: {why}")),
                (None, None) => {}
            }
        }
        Err(p) => no_ltran = Some(p.detail),
    }
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let page = BondPage {
        layout,
        form: form.unwrap_or(page_form),
        errors,
        config_file,
        no_ltran,
        live,
        live_ports,
        failovers,
        history,
        kept: crate::history::FAILOVERS_KEPT,
    };
    (status, render(&page)).into_response()
}

/// `GET /bond`.
pub async fn bond_page(State(state): State<AppState>, s: Session) -> Response {
    bond_view(&state, &s, None, FieldErrors::default()).await
}

/// `POST /bond`.
pub async fn bond_update(State(state): State<AppState>, change: Change) -> Response {
    let form: BondForm = match change.form() {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut errors = FieldErrors::default();
    let update = BondUpdate {
        mode: int_field(&mut errors, "bond_mode", &form.bond_mode, "the mode"),
        miimon_ms: int_field(&mut errors, "bond_miimon", &form.bond_miimon, "ms"),
        ports: Some(list_field(&form.bond_ports)).filter(|v| !v.is_empty()),
        macs: Some(list_field(&form.bond_macs)).filter(|v| !v.is_empty()),
        mtu: int_field(&mut errors, "bond_mtu", &form.bond_mtu, "bytes"),
    };
    if !errors.is_empty() {
        return bond_view(&state, &change.session, Some(form), errors).await;
    }
    match edits::update_bond(
        State(state.clone()),
        Extension(change.session.who.clone()),
        change.ip,
        Json(update),
    )
    .await
    {
        Ok(Json(c)) => change.done("/bond", &change_message("Bond changed", &c)),
        Err(p) => {
            let errors = FieldErrors::from_problem(&p, BOND_INPUTS);
            bond_view(&state, &change.session, Some(form), errors).await
        }
    }
}

// ---- subnets ----------------------------------------------------------------

/// The subnets form's fields.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SubnetsForm {
    #[serde(default)]
    dispatch_subnet: String,
    #[serde(default)]
    dispatch_subnet_length: String,
    #[serde(default)]
    dispatch_subnet6: String,
}

const SUBNET_INPUTS: &[&str] = &[
    "dispatch_subnet",
    "dispatch_subnet_length",
    "dispatch_subnet6",
];

#[derive(Template)]
#[template(path = "subnets.html")]
struct SubnetsPage {
    layout: Layout,
    form: SubnetsForm,
    errors: FieldErrors,
    instances: Vec<edits::InstanceAddresses>,
    unavailable: Option<String>,
}

async fn subnets_view(
    state: &AppState,
    s: &Session,
    form: Option<SubnetsForm>,
    errors: FieldErrors,
) -> Response {
    let layout = layout(state, s, "Subnets and addresses").await;
    let (current, instances, unavailable) = match edits::get_subnets(State(state.clone())).await {
        Ok(Json(n)) => (
            SubnetsForm {
                dispatch_subnet: n.dispatch_subnet.unwrap_or_default(),
                dispatch_subnet_length: n
                    .dispatch_subnet_length
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
                dispatch_subnet6: n.dispatch_subnet6.unwrap_or_default(),
            },
            n.instances,
            None,
        ),
        Err(p) => (SubnetsForm::default(), Vec::new(), Some(p.detail)),
    };
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let page = SubnetsPage {
        layout,
        form: form.unwrap_or(current),
        errors,
        instances,
        unavailable,
    };
    (status, render(&page)).into_response()
}

/// `GET /subnets`.
pub async fn subnets_page(State(state): State<AppState>, s: Session) -> Response {
    subnets_view(&state, &s, None, FieldErrors::default()).await
}

/// `POST /subnets`.
pub async fn subnets_update(State(state): State<AppState>, change: Change) -> Response {
    let form: SubnetsForm = match change.form() {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut errors = FieldErrors::default();
    let update = SubnetsUpdate {
        dispatch_subnet: Some(form.dispatch_subnet.trim().to_owned()).filter(|s| !s.is_empty()),
        dispatch_subnet_length: int_field(
            &mut errors,
            "dispatch_subnet_length",
            &form.dispatch_subnet_length,
            "host bits",
        ),
        // An empty field removes the IPv6 subnet, as the API's "" does.
        dispatch_subnet6: Some(form.dispatch_subnet6.trim().to_owned()),
    };
    if !errors.is_empty() {
        return subnets_view(&state, &change.session, Some(form), errors).await;
    }
    match edits::update_subnets(
        State(state.clone()),
        Extension(change.session.who.clone()),
        change.ip,
        Json(update),
    )
    .await
    {
        Ok(Json(c)) => change.done("/subnets", &change_message("Subnets changed", &c)),
        Err(p) => {
            let errors = FieldErrors::from_problem(&p, SUBNET_INPUTS);
            subnets_view(&state, &change.session, Some(form), errors).await
        }
    }
}

// ---- devices ----------------------------------------------------------------

/// A device row.
#[derive(Debug)]
pub struct DeviceRow {
    d: Device,
    role: &'static str,
    driver: String,
    link: String,
    speed: String,
}

/// A device change under review: what it will do.
#[derive(Debug)]
pub struct Review {
    pci: String,
    role: String,
    driver: String,
    effects: Vec<String>,
}

#[derive(Template)]
#[template(path = "devices.html")]
struct DevicesPage {
    layout: Layout,
    devices: Vec<DeviceRow>,
    unavailable: Option<String>,
    review: Option<Review>,
    error: Option<String>,
}

fn role_name(r: DeviceRole) -> &'static str {
    match r {
        DeviceRole::Management => "management",
        DeviceRole::Data => "data",
        DeviceRole::Unmanaged => "unmanaged",
    }
}

fn driver_name(d: Option<DpdkDriver>) -> &'static str {
    match d {
        Some(DpdkDriver::UioPciGeneric) => "uio_pci_generic",
        Some(DpdkDriver::VfioPci) => "vfio-pci",
        None => "",
    }
}

async fn devices_view(
    state: &AppState,
    s: &Session,
    review: Option<Review>,
    error: Option<String>,
) -> Response {
    let layout = layout(state, s, "Devices").await;
    let (devices, unavailable) = match edits::list_devices(State(state.clone())).await {
        Ok(Json(list)) => (
            list.into_iter()
                .map(|d| DeviceRow {
                    role: role_name(d.role),
                    driver: driver_name(d.configured_driver).to_owned(),
                    link: match d.link {
                        Some(true) => "up".into(),
                        Some(false) => "down".into(),
                        None => "–".into(),
                    },
                    speed: d
                        .speed_mbps
                        .map(|s| format!("{s} Mbit/s"))
                        .unwrap_or_else(|| "–".into()),
                    d,
                })
                .collect(),
            None,
        ),
        Err(p) => (Vec::new(), Some(p.detail)),
    };
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let page = DevicesPage {
        layout,
        devices,
        unavailable,
        review,
        error,
    };
    (status, render(&page)).into_response()
}

/// `GET /devices`.
pub async fn devices_page(State(state): State<AppState>, s: Session) -> Response {
    devices_view(&state, &s, None, None).await
}

/// The device form.
#[derive(Debug, Deserialize)]
pub struct DeviceForm {
    role: DeviceRole,
    #[serde(default)]
    driver: String,
    /// `review` (say what it will do) or `apply`.
    step: String,
}

/// What changing `d` to `role`/`driver` will do, in words.
fn effects(d: &Device, role: DeviceRole, driver: Option<DpdkDriver>) -> Vec<String> {
    let iface = d.interface.clone().unwrap_or_else(|| d.pci.clone());
    let now = d.driver.clone().unwrap_or_else(|| "no driver".into());
    let mut out = Vec::new();
    match role {
        DeviceRole::Data => {
            let to = driver
                .map(|x| driver_name(Some(x)).to_owned())
                .unwrap_or_else(|| "the machine's default DPDK driver".into());
            if d.on_dpdk_driver {
                out.push(format!("{} stays with DPDK; its driver becomes {to}.", d.pci));
            } else {
                out.push(format!(
                    "{iface} is taken from the kernel ({now}) and bound to {to}: the kernel loses the interface, its addresses and every connection on it (an SSH session over it ends)."
                ));
            }
            out.push("ltran restarts with the new port set, and the instances behind it restart.".into());
        }
        DeviceRole::Management => {
            if d.on_dpdk_driver {
                out.push(format!(
                    "{} is given back to its kernel driver and leaves DPDK: ltran and the instances restart without it.",
                    d.pci
                ));
            } else {
                out.push(format!("{iface} stays on the kernel ({now}) as the management NIC."));
            }
        }
        DeviceRole::Unmanaged => out.push(format!(
            "{} leaves the config: the appliance no longer touches it, and it stays bound as it is now ({now}).",
            d.pci
        )),
    }
    out.push("A change that can cut you off runs pending: confirm it in the banner, or it rolls back by itself.".into());
    out
}

/// `POST /devices/{pci}`: `step=review` says what the change will do;
/// `step=apply` applies it.
pub async fn device_update(
    State(state): State<AppState>,
    Path(pci): Path<String>,
    change: Change,
) -> Response {
    let form: DeviceForm = match change.form() {
        Ok(f) => f,
        Err(r) => return r,
    };
    let driver = match form.driver.as_str() {
        "" => None,
        "uio_pci_generic" => Some(DpdkDriver::UioPciGeneric),
        "vfio-pci" => Some(DpdkDriver::VfioPci),
        other => {
            return devices_view(
                &state,
                &change.session,
                None,
                Some(format!(
                    "driver {other:?} is not one of uio_pci_generic, vfio-pci"
                )),
            )
            .await
        }
    };
    if form.step == "review" {
        let review = match edits::get_device(State(state.clone()), Path(pci.clone())).await {
            Ok(Json(d)) => Review {
                pci: d.pci.clone(),
                role: role_name(form.role).to_owned(),
                driver: driver_name(driver).to_owned(),
                effects: effects(&d, form.role, driver),
            },
            Err(p) => return devices_view(&state, &change.session, None, Some(p.detail)).await,
        };
        return devices_view(&state, &change.session, Some(review), None).await;
    }
    match edits::update_device(
        State(state.clone()),
        Extension(change.session.who.clone()),
        change.ip,
        Path(pci.clone()),
        Json(DeviceUpdate {
            role: form.role,
            driver,
        }),
    )
    .await
    {
        Ok(Json(c)) => change.done("/devices", &change_message(&format!("{pci} changed"), &c)),
        Err(p) => {
            let msg = match &p.field {
                Some(f) => format!("{} ({f})", p.detail),
                None => p.detail,
            };
            devices_view(&state, &change.session, None, Some(msg)).await
        }
    }
}
