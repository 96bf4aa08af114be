//! The machine: supervised processes, host facts, hugepages.

use appliance::api::{PendingInfo, Request as ApiRequest, Response as ApiResponse};
use appliance::hostinfo::HostInfo;
use appliance::hugepages::HugepageStatus;
use appliance::supervisor::ProcessStatus;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::daemons::unexpected;
use crate::problem::{Json, Problem};
use crate::AppState;

/// The supervised processes and the pending change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Status {
    /// Every supervised process (ltran, the instances), in start order:
    /// state, pid, restarts, last exit, output tail.
    pub processes: Vec<ProcessStatus>,
    /// The change pending confirmation, if any.
    pub pending: Option<PendingInfo>,
    /// A change is being applied right now (then `pending` is unknown).
    pub applying: bool,
}

/// `appliancectl status`: every process and the pending change.
#[utoipa::path(
    get,
    path = "/api/v1/status",
    tag = "machine",
    responses((status = 200, description = "The processes", body = Status))
)]
pub async fn status(State(state): State<AppState>) -> Result<Json<Status>, Problem> {
    match state.daemons.appliance(ApiRequest::Status, false).await? {
        ApiResponse::Status {
            processes,
            pending,
            applying,
        } => Ok(Json(Status {
            processes,
            pending,
            applying,
        })),
        other => Err(unexpected(&other)),
    }
}

/// Host facts: CPUs and NUMA nodes, memory, hugepages, load.
#[utoipa::path(
    get,
    path = "/api/v1/host",
    tag = "machine",
    responses((status = 200, description = "Host facts", body = HostInfo))
)]
pub async fn host(State(state): State<AppState>) -> Result<Json<HostInfo>, Problem> {
    match state.daemons.appliance(ApiRequest::Host, false).await? {
        ApiResponse::Host(h) => Ok(Json(*h)),
        other => Err(unexpected(&other)),
    }
}

/// Hugepage pools, hugetlbfs mounts, transparent hugepages.
#[utoipa::path(
    get,
    path = "/api/v1/host/hugepages",
    tag = "machine",
    responses((status = 200, description = "Hugepages", body = HugepageStatus))
)]
pub async fn hugepages(State(state): State<AppState>) -> Result<Json<HugepageStatus>, Problem> {
    match state
        .daemons
        .appliance(ApiRequest::Hugepages, false)
        .await?
    {
        ApiResponse::Hugepages(h) => Ok(Json(h)),
        other => Err(unexpected(&other)),
    }
}
