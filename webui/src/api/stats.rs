//! Statistics: every view of `gazellectl`, with the same values its
//! `--json` prints (the same gazelle-ctl-proto types, asked the same way),
//! and the rates of the poller, also as a live stream.
//!
//! | gazellectl | here |
//! | --- | --- |
//! | `ltran show` | `GET /api/v1/stats/ltran` |
//! | `ltran show -i` | `GET /api/v1/stats/ltran/instances` |
//! | `ltran show -b` | `GET /api/v1/stats/ltran/burst` |
//! | `ltran show -l` | `GET /api/v1/stats/ltran/latency` |
//! | `ltran show -r` | `GET /api/v1/stats/ltran/rates` |
//! | `lstack show IP` | `GET /api/v1/stats/lstack/{ip}` |
//! | `lstack show IP -c` | `GET /api/v1/stats/lstack/{ip}/connections` |
//! | `lstack show IP -s` | `GET /api/v1/stats/lstack/{ip}/snmp` |
//! | `lstack show IP -l` | `GET /api/v1/stats/lstack/{ip}/latency` |
//! | `lstack show IP -r` | `GET /api/v1/stats/lstack/{ip}/rates` |

use std::convert::Infallible;
use std::net::IpAddr;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use gazelle_ctl_proto::{
    Connection, InstanceInfo, LstackLatency, LstackRates, LstackSnmp, LstackStats, LtranLatency,
    LtranRates, LtranStats, Request, Response,
};
use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt as _};

use crate::daemons::LstackRef;
use crate::poller::RatesSample;
use crate::problem::{Json, Path, Problem};
use crate::AppState;

/// `gazellectl ltran show --json`: bond, dispatch counters, tables,
/// instances, burst histogram, latency counters.
#[utoipa::path(
    get,
    path = "/api/v1/stats/ltran",
    tag = "statistics",
    responses((status = 200, description = "ltran's statistics", body = LtranStats))
)]
pub async fn ltran(State(state): State<AppState>) -> Result<Json<LtranStats>, Problem> {
    state.daemons.ltran_stats().await.map(Json)
}

/// `gazellectl ltran show -i --json`: instances, per thread.
#[utoipa::path(
    get,
    path = "/api/v1/stats/ltran/instances",
    tag = "statistics",
    responses((status = 200, description = "Registered instances", body = Vec<InstanceInfo>))
)]
pub async fn ltran_instances(
    State(state): State<AppState>,
) -> Result<Json<Vec<InstanceInfo>>, Problem> {
    state.daemons.ltran_stats().await.map(|s| Json(s.instances))
}

/// `gazellectl ltran show -b --json`: receive bursts by size (`[0]` empty
/// polls, then 1, 2-3, 4-7, 8-15, 16-31, 32+ frames).
#[utoipa::path(
    get,
    path = "/api/v1/stats/ltran/burst",
    tag = "statistics",
    responses((status = 200, description = "Burst histogram", body = Vec<u64>))
)]
pub async fn ltran_burst(State(state): State<AppState>) -> Result<Json<Vec<u64>>, Problem> {
    state
        .daemons
        .ltran_stats()
        .await
        .map(|s| Json(s.rx_burst_histogram))
}

/// `gazellectl ltran show -l --json`: dispatch latency, ns.
#[utoipa::path(
    get,
    path = "/api/v1/stats/ltran/latency",
    tag = "statistics",
    responses((status = 200, description = "Dispatch latency", body = LtranLatency))
)]
pub async fn ltran_latency(State(state): State<AppState>) -> Result<Json<LtranLatency>, Problem> {
    state
        .daemons
        .ltran_stats()
        .await
        .map(|s| Json(LtranLatency::of(&s)))
}

fn latest(state: &AppState) -> std::sync::Arc<RatesSample> {
    state.rates.borrow().clone()
}

fn no_rates_yet(daemon: &str) -> Problem {
    Problem::unavailable(
        daemon,
        format!("no rates of {daemon} yet: it is not running, or was sampled only once (rates need two samples a second apart)"),
    )
}

/// `gazellectl ltran show -r --json`: rates over the last second.
#[utoipa::path(
    get,
    path = "/api/v1/stats/ltran/rates",
    tag = "statistics",
    responses((status = 200, description = "ltran's rates", body = LtranRates))
)]
pub async fn ltran_rates(State(state): State<AppState>) -> Result<Json<LtranRates>, Problem> {
    latest(&state)
        .ltran
        .clone()
        .map(Json)
        .ok_or_else(|| no_rates_yet("ltran"))
}

/// The lstacks serving statistics (their control sockets), by address.
#[utoipa::path(
    get,
    path = "/api/v1/stats/lstack",
    tag = "statistics",
    responses((status = 200, description = "The lstacks", body = Vec<LstackRef>))
)]
pub async fn lstacks(State(state): State<AppState>) -> Json<Vec<LstackRef>> {
    Json(state.daemons.lstacks())
}

fn parse_ip(ip: &str) -> Result<IpAddr, Problem> {
    ip.parse().map_err(|_| {
        Problem::not_found(format!(
            "{ip:?} is not an lstack's address: lstacks are named by their host_addr (GET /api/v1/stats/lstack)"
        ))
    })
}

async fn ask(state: &AppState, ip: &str, request: Request) -> Result<Response, Problem> {
    let ip = parse_ip(ip)?;
    state.daemons.lstack(ip, request).await
}

fn other(ip: &str) -> Problem {
    Problem::bad_gateway(&format!("lstack {ip}"), "it answered another question")
}

/// `gazellectl lstack show IP --json`: port, per-thread counters, drops
/// by reason.
#[utoipa::path(
    get,
    path = "/api/v1/stats/lstack/{ip}",
    tag = "statistics",
    params(("ip" = String, Path, description = "The lstack's address (host_addr)")),
    responses((status = 200, description = "The lstack's counters", body = LstackStats))
)]
pub async fn lstack(
    State(state): State<AppState>,
    Path(ip): Path<String>,
) -> Result<Json<LstackStats>, Problem> {
    match ask(&state, &ip, Request::LstackStats).await? {
        Response::LstackStats(s) => Ok(Json(s)),
        _ => Err(other(&ip)),
    }
}

/// `gazellectl lstack show IP -c --json`: every TCP socket, as `ss` shows
/// them.
#[utoipa::path(
    get,
    path = "/api/v1/stats/lstack/{ip}/connections",
    tag = "statistics",
    params(("ip" = String, Path, description = "The lstack's address (host_addr)")),
    responses((status = 200, description = "Connections", body = Vec<Connection>))
)]
pub async fn lstack_connections(
    State(state): State<AppState>,
    Path(ip): Path<String>,
) -> Result<Json<Vec<Connection>>, Problem> {
    match ask(&state, &ip, Request::LstackConnections).await? {
        Response::LstackConnections { connections } => Ok(Json(connections)),
        _ => Err(other(&ip)),
    }
}

/// `gazellectl lstack show IP -s --json`: MIB-2 counters per thread and in
/// all.
#[utoipa::path(
    get,
    path = "/api/v1/stats/lstack/{ip}/snmp",
    tag = "statistics",
    params(("ip" = String, Path, description = "The lstack's address (host_addr)")),
    responses((status = 200, description = "MIB-2 counters", body = LstackSnmp))
)]
pub async fn lstack_snmp(
    State(state): State<AppState>,
    Path(ip): Path<String>,
) -> Result<Json<LstackSnmp>, Problem> {
    match ask(&state, &ip, Request::LstackSnmp).await? {
        Response::LstackSnmp(s) => Ok(Json(s)),
        _ => Err(other(&ip)),
    }
}

/// `gazellectl lstack show IP -l --json`: receive latency, frame arrival
/// to the application's read.
#[utoipa::path(
    get,
    path = "/api/v1/stats/lstack/{ip}/latency",
    tag = "statistics",
    params(("ip" = String, Path, description = "The lstack's address (host_addr)")),
    responses((status = 200, description = "Receive latency", body = LstackLatency))
)]
pub async fn lstack_latency(
    State(state): State<AppState>,
    Path(ip): Path<String>,
) -> Result<Json<LstackLatency>, Problem> {
    match ask(&state, &ip, Request::LstackLatency).await? {
        Response::LstackLatency(l) => Ok(Json(l)),
        _ => Err(other(&ip)),
    }
}

/// `gazellectl lstack show IP -r --json`: rates over the last second.
#[utoipa::path(
    get,
    path = "/api/v1/stats/lstack/{ip}/rates",
    tag = "statistics",
    params(("ip" = String, Path, description = "The lstack's address (host_addr)")),
    responses((status = 200, description = "The lstack's rates", body = LstackRates))
)]
pub async fn lstack_rates(
    State(state): State<AppState>,
    Path(ip): Path<String>,
) -> Result<Json<LstackRates>, Problem> {
    let addr = parse_ip(&ip)?.to_string();
    latest(&state)
        .lstacks
        .iter()
        .find(|r| r.ip.as_deref() == Some(addr.as_str()))
        .cloned()
        .map(Json)
        .ok_or_else(|| no_rates_yet(&format!("lstack {addr}")))
}

/// The rates of ltran and every lstack over the last second.
#[utoipa::path(
    get,
    path = "/api/v1/stats/rates",
    tag = "statistics",
    responses((status = 200, description = "The newest sample", body = RatesSample))
)]
pub async fn rates(State(state): State<AppState>) -> Json<RatesSample> {
    Json((*latest(&state)).clone())
}

/// The rates, pushed once a second as Server-Sent Events (`event: rates`,
/// `data:` a RatesSample), for live charts. Every subscriber reads the one
/// sample the server takes each second.
#[utoipa::path(
    get,
    path = "/api/v1/stats/stream",
    tag = "statistics",
    responses((status = 200, description = "An endless text/event-stream of RatesSample", content_type = "text/event-stream", body = String))
)]
pub async fn stream(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = WatchStream::new(state.rates.subscribe()).filter_map(|sample| {
        (sample.sequence > 0).then(|| {
            Ok(Event::default()
                .event("rates")
                .id(sample.sequence.to_string())
                .json_data(&*sample)
                .unwrap_or_else(|_| Event::default().comment("unserialisable sample")))
        })
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
