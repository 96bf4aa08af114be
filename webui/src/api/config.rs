//! The whole config, with applianced's confirm-or-rollback unchanged: a
//! change that can cut the operator off (NICs, ltran, instance addresses)
//! runs *pending* until confirmed, and rolls back by itself at its
//! deadline; an invalid one is refused naming its field, with nothing
//! changed.

use appliance::api::{
    ChangeResult, PendingInfo, Request as ApiRequest, Response as ApiResponse, VersionInfo, Which,
};
use appliance::config::ApplianceConfig;
use axum::extract::State;
use axum::Extension;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::audit::{self, AuditEntry};
use crate::auth::Principal;
use crate::daemons::unexpected;
use crate::guard::ClientIp;
use crate::problem::{Json, Path, Problem, Query};
use crate::{AppState, PendingChange};

/// Which config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WhichConfig {
    /// What runs now (a change pending confirmation included).
    #[default]
    Running,
    /// What is on disk: what a reboot runs.
    Saved,
}

/// `?which=`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WhichQuery {
    /// `running` (default) or `saved`.
    pub which: Option<WhichConfig>,
}

/// A config, as TOML and structured.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConfigView {
    /// Which one.
    pub which: WhichConfig,
    /// As TOML (what PUT takes back); absent for a saved config before the
    /// first save.
    pub toml: Option<String>,
    /// The same, structured.
    pub config: Option<ApplianceConfig>,
    /// The change pending confirmation, if any.
    pub pending: Option<PendingInfo>,
}

/// A whole config as TOML.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigText {
    /// The appliance config (`/etc/gazelle/appliance.toml`).
    pub toml: String,
}

/// A whole config to apply, optionally with the running config it was
/// made from.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigChange {
    /// The appliance config (`/etc/gazelle/appliance.toml`).
    pub toml: String,
    /// The running config's TOML as `GET /api/v1/config` returned it, when
    /// this one was made from it: if the running config has changed since
    /// (another operator's change), nothing is applied and the answer is
    /// 409. Left out, the config replaces whatever runs.
    #[serde(default)]
    pub base: Option<String>,
}

/// A config that validated.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Validation {
    /// How many instances it runs, whether it has ltran, how many NICs.
    pub summary: String,
    /// What applying it would need confirmed (empty: saved at once).
    pub confirmation_reasons: Vec<String>,
}

/// A confirmed change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Confirmed {
    /// The version it was saved as.
    pub version: String,
}

/// A rolled-back change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RolledBack {
    /// `ok`, or why undoing failed.
    pub result: String,
}

/// The saved versions.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct History {
    /// Newest first.
    pub versions: Vec<VersionInfo>,
    /// The change pending confirmation, if any.
    pub pending: Option<PendingInfo>,
}

/// One saved version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionView {
    /// Its id.
    pub id: String,
    /// As TOML.
    pub toml: String,
    /// The same, structured.
    pub config: ApplianceConfig,
}

/// `?from=&to=`: `running`, `saved` or a version id.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    /// The older side (default `saved`).
    pub from: Option<String>,
    /// The newer side (default `running`).
    pub to: Option<String>,
}

/// The difference between two configs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConfigDiff {
    /// The older side.
    pub from: String,
    /// The newer side.
    pub to: String,
    /// A unified diff of their TOML (empty when equal).
    pub diff: String,
}

/// The running config's TOML (for diffs).
pub async fn running_toml(state: &AppState) -> Result<(ApplianceConfig, String), Problem> {
    match state
        .daemons
        .appliance(
            ApiRequest::GetConfig {
                which: Which::Running,
            },
            false,
        )
        .await?
    {
        ApiResponse::Config {
            config: Some(config),
            toml: Some(toml),
            ..
        } => Ok((config, toml)),
        other => Err(unexpected(&other)),
    }
}

/// What a change is, for the audit log.
#[derive(Debug, Clone)]
pub struct ChangeRecord<'a> {
    /// The action (`config.set`, `bond.update`...).
    pub action: &'a str,
    /// What it was done to.
    pub target: Option<String>,
    /// The running config before, as TOML.
    pub old: &'a str,
    /// The config sent, as TOML (`None`: read back after a restore).
    pub new: Option<&'a str>,
}

/// Sends a change (`SetConfig` or `Restore`) to applianced and records it
/// in the audit log with the diff from `old` to `new` and how it went.
pub async fn change(
    state: &AppState,
    who: &Principal,
    ip: ClientIp,
    record: ChangeRecord<'_>,
    request: ApiRequest,
) -> Result<ChangeResult, Problem> {
    let ChangeRecord {
        action,
        target,
        old,
        new,
    } = record;
    let result = state.daemons.appliance(request, true).await;
    let mut entry = AuditEntry::new(&who.name, ip.0, action, "");
    entry.target = target;
    let result = match result {
        Ok(ApiResponse::Changed(c)) => Ok(c),
        Ok(other) => Err(unexpected(&other)),
        Err(p) => Err(p),
    };
    // What runs now, for the diff (a restore's new side is only known
    // once applied).
    let new_text = match (&result, new) {
        (_, Some(t)) => Some(t.to_owned()),
        (Ok(_), None) => running_toml(state).await.ok().map(|(_, t)| t),
        (Err(_), None) => None,
    };
    match &result {
        Ok(c) if c.confirmation_needed => {
            entry.outcome = "pending".into();
            entry.detail = c
                .pending
                .as_ref()
                .map(|p| format!("confirm before {} ({})", p.deadline, p.reasons.join("; ")));
            if let Some(t) = &new_text {
                *state.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(PendingChange {
                    who: who.name.clone(),
                    from: ip.0,
                    toml: t.clone(),
                });
            }
        }
        Ok(c) => {
            entry.outcome = "saved".into();
            entry.detail = c.version.as_ref().map(|v| format!("version {v}"));
        }
        Err(p) => {
            entry.outcome = if p.status == 422 || p.status == 409 {
                "refused".into()
            } else {
                "failed".into()
            };
            let field = p
                .field
                .as_ref()
                .map(|f| format!(" [{f}]"))
                .unwrap_or_default();
            entry.detail = Some(format!("{}{field}", p.detail));
        }
    }
    if let Some(t) = &new_text {
        let d = audit::diff(old, t, "running", "new");
        entry.diff = (!d.is_empty()).then_some(d);
    }
    state.audit.record(&entry);
    result
}

/// Records `entry` with how applianced's `answer` went: `on_ok` turns
/// the expected answer into the result (and completes the entry), or
/// hands back an unexpected one; a refusal is logged as `refused`.
pub fn audited<T>(
    state: &AppState,
    mut entry: AuditEntry,
    answer: Result<ApiResponse, Problem>,
    on_ok: impl FnOnce(ApiResponse, &mut AuditEntry) -> Result<T, ApiResponse>,
) -> Result<T, Problem> {
    let result = match answer {
        Ok(answer) => on_ok(answer, &mut entry).map_err(|other| {
            entry.outcome = "failed".into();
            unexpected(&other)
        }),
        Err(problem) => {
            entry.outcome = "refused".into();
            entry.detail = Some(problem.detail.clone());
            Err(problem)
        }
    };
    state.audit.record(&entry);
    result
}

/// The running or saved config.
#[utoipa::path(
    get,
    path = "/api/v1/config",
    tag = "config",
    params(WhichQuery),
    responses((status = 200, description = "The config", body = ConfigView))
)]
pub async fn get_config(
    State(state): State<AppState>,
    Query(q): Query<WhichQuery>,
) -> Result<Json<ConfigView>, Problem> {
    let which = q.which.unwrap_or_default();
    let request = ApiRequest::GetConfig {
        which: match which {
            WhichConfig::Running => Which::Running,
            WhichConfig::Saved => Which::Saved,
        },
    };
    match state.daemons.appliance(request, false).await? {
        ApiResponse::Config {
            toml,
            config,
            pending,
            ..
        } => Ok(Json(ConfigView {
            which,
            toml,
            config,
            pending,
        })),
        other => Err(unexpected(&other)),
    }
}

/// Apply a whole config: validated as a whole, then saved at once, or
/// *pending confirmation* (with its deadline) when it can cut the operator
/// off. A refused config names its field (422) and changes nothing; one
/// made from a `base` that no longer runs is refused (409).
#[utoipa::path(
    put,
    path = "/api/v1/config",
    tag = "config",
    request_body = ConfigChange,
    responses((status = 200, description = "Applied: saved, or pending confirmation", body = ChangeResult))
)]
pub async fn set_config(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    ip: ClientIp,
    Json(body): Json<ConfigChange>,
) -> Result<Json<ChangeResult>, Problem> {
    let _edit = state.edit_lock.lock().await;
    let (_, old) = running_toml(&state).await?;
    // The diff shows the config as applianced will hold it.
    let new = ApplianceConfig::parse(&body.toml)
        .map(|c| c.to_toml_string())
        .unwrap_or_else(|_| body.toml.clone());
    let record = ChangeRecord {
        action: "config.set",
        target: None,
        old: &old,
        new: Some(&new),
    };
    change(
        &state,
        &p,
        ip,
        record,
        ApiRequest::SetConfig {
            toml: body.toml,
            base: body.base,
        },
    )
    .await
    .map(Json)
}

/// Validate a whole config without applying it.
#[utoipa::path(
    post,
    path = "/api/v1/config/validate",
    tag = "config",
    request_body = ConfigText,
    responses((status = 200, description = "Valid", body = Validation))
)]
pub async fn validate(
    State(state): State<AppState>,
    Json(body): Json<ConfigText>,
) -> Result<Json<Validation>, Problem> {
    match state
        .daemons
        .appliance(ApiRequest::Validate { toml: body.toml }, false)
        .await?
    {
        ApiResponse::Valid {
            summary,
            confirmation_reasons,
        } => Ok(Json(Validation {
            summary,
            confirmation_reasons,
        })),
        other => Err(unexpected(&other)),
    }
}

/// Keep the change pending confirmation: save it.
#[utoipa::path(
    post,
    path = "/api/v1/config/confirm",
    tag = "config",
    responses((status = 200, description = "Saved", body = Confirmed))
)]
pub async fn confirm(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    ip: ClientIp,
) -> Result<Json<Confirmed>, Problem> {
    let answer = state.daemons.appliance(ApiRequest::Confirm, true).await;
    let entry = AuditEntry::new(&p.name, ip.0, "config.confirm", "confirmed");
    audited(&state, entry, answer, |answer, entry| match answer {
        ApiResponse::Confirmed { version } => {
            entry.detail = Some(format!("version {version}"));
            *state.pending.lock().unwrap_or_else(|e| e.into_inner()) = None;
            Ok(Json(Confirmed { version }))
        }
        other => Err(other),
    })
}

/// Revert the change pending confirmation now.
#[utoipa::path(
    post,
    path = "/api/v1/config/rollback",
    tag = "config",
    responses((status = 200, description = "Rolled back", body = RolledBack))
)]
pub async fn rollback(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    ip: ClientIp,
) -> Result<Json<RolledBack>, Problem> {
    let answer = state.daemons.appliance(ApiRequest::Rollback, true).await;
    let entry = AuditEntry::new(&p.name, ip.0, "config.rollback", "rolled_back");
    audited(&state, entry, answer, |answer, entry| match answer {
        ApiResponse::RolledBack { result } => {
            entry.detail = Some(result.clone());
            *state.pending.lock().unwrap_or_else(|e| e.into_inner()) = None;
            Ok(Json(RolledBack { result }))
        }
        other => Err(other),
    })
}

/// The saved versions, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/config/history",
    tag = "config",
    responses((status = 200, description = "The versions", body = History))
)]
pub async fn history(State(state): State<AppState>) -> Result<Json<History>, Problem> {
    match state.daemons.appliance(ApiRequest::History, false).await? {
        ApiResponse::History { versions, pending } => Ok(Json(History { versions, pending })),
        other => Err(unexpected(&other)),
    }
}

/// A version id as history lists them (a UTC timestamp, maybe with a
/// suffix): anything else is no version.
fn check_version_id(id: &str) -> Result<(), Problem> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Problem::not_found(format!(
            "no saved version {id:?}: ids look like 20250102T030405.678Z (GET /api/v1/config/history)"
        )))
    }
}

async fn read_version(state: &AppState, id: &str) -> Result<VersionView, Problem> {
    check_version_id(id)?;
    match state
        .daemons
        .appliance(ApiRequest::GetVersion { id: id.to_owned() }, false)
        .await?
    {
        ApiResponse::Version { id, toml, config } => Ok(VersionView { id, toml, config }),
        other => Err(unexpected(&other)),
    }
}

/// One saved version.
#[utoipa::path(
    get,
    path = "/api/v1/config/history/{id}",
    tag = "config",
    params(("id" = String, Path, description = "The version's id, as history lists it")),
    responses((status = 200, description = "The version", body = VersionView))
)]
pub async fn version(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<VersionView>, Problem> {
    read_version(&state, &id).await.map(Json)
}

/// Make a saved version the running config, as a change (saved, or
/// pending confirmation).
#[utoipa::path(
    post,
    path = "/api/v1/config/history/{id}/restore",
    tag = "config",
    params(("id" = String, Path, description = "The version's id, as history lists it")),
    responses((status = 200, description = "Applied: saved, or pending confirmation", body = ChangeResult))
)]
pub async fn restore(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    ip: ClientIp,
    Path(id): Path<String>,
) -> Result<Json<ChangeResult>, Problem> {
    check_version_id(&id)?;
    let _edit = state.edit_lock.lock().await;
    let (_, old) = running_toml(&state).await?;
    let record = ChangeRecord {
        action: "config.restore",
        target: Some(id.clone()),
        old: &old,
        new: None,
    };
    change(&state, &p, ip, record, ApiRequest::Restore { id })
        .await
        .map(Json)
}

async fn side(state: &AppState, name: &str) -> Result<String, Problem> {
    let which = match name {
        "running" => Which::Running,
        "saved" => Which::Saved,
        id => return read_version(state, id).await.map(|v| v.toml),
    };
    match state
        .daemons
        .appliance(ApiRequest::GetConfig { which }, false)
        .await?
    {
        ApiResponse::Config { toml, .. } => Ok(toml.unwrap_or_default()),
        other => Err(unexpected(&other)),
    }
}

/// The difference between two configs: `running`, `saved` or version ids.
#[utoipa::path(
    get,
    path = "/api/v1/config/diff",
    tag = "config",
    params(DiffQuery),
    responses((status = 200, description = "The diff", body = ConfigDiff))
)]
pub async fn diff(
    State(state): State<AppState>,
    Query(q): Query<DiffQuery>,
) -> Result<Json<ConfigDiff>, Problem> {
    let from = q.from.unwrap_or_else(|| "saved".into());
    let to = q.to.unwrap_or_else(|| "running".into());
    let (a, b) = (side(&state, &from).await?, side(&state, &to).await?);
    Ok(Json(ConfigDiff {
        diff: audit::diff(&a, &b, &from, &to),
        from,
        to,
    }))
}
