//! Once a second, one task asks ltran and every lstack for their counters
//! (the same control-socket request `gazellectl` makes; the data path does
//! nothing per packet for it) and publishes the rates since the last
//! sample on a watch channel. Every live-stream subscriber and every rates
//! request reads that one sample: ten dashboards cost what one does. The
//! same look gives the receive latency of the second (each lstack's
//! cumulative histogram minus the one of the last look) and feeds the
//! bond's failover history (see [`crate::history`]).
//!
//! It also follows a change pending confirmation that this server made:
//! when applianced no longer reports it pending, the audit log gets how it
//! ended (confirmed elsewhere, or rolled back at its deadline).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use appliance::api::{Request as ApiRequest, Response as ApiResponse, Which};
use gazelle_ctl_proto::{
    LstackRates, LstackStats, LtranRates, LtranStats, Request, Response, RxLatency,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::AuditEntry;
use crate::history::{latency_between, LatencySecond};
use crate::{AppState, PendingChange, RollbackNote};

/// The rates of one second, for every daemon that answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RatesSample {
    /// When the sample was taken, ms since the Unix epoch (0: none yet).
    pub time_unix_ms: u64,
    /// Samples taken since the server started.
    pub sequence: u64,
    /// ltran's rates, when it runs (and answered twice).
    pub ltran: Option<LtranRates>,
    /// Every lstack's rates, by address.
    pub lstacks: Vec<LstackRates>,
    /// The receive latency of every instance's reads since the last
    /// sample (none: no reads measured).
    pub rx_latency: Option<LatencySecond>,
    /// Daemons that did not answer this time, with why.
    pub unavailable: Vec<String>,
}

/// How often the daemons are asked.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Starts the poller on the current runtime.
pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_ltran: Option<(Instant, LtranStats)> = None;
        let mut last_lstacks: BTreeMap<IpAddr, (Instant, LstackStats)> = BTreeMap::new();
        let mut last_latency: BTreeMap<IpAddr, RxLatency> = BTreeMap::new();
        let mut sequence = 0;
        loop {
            ticker.tick().await;
            sequence += 1;
            let mut sample = RatesSample {
                time_unix_ms: unix_ms(SystemTime::now()),
                sequence,
                ..RatesSample::default()
            };
            match state.daemons.ltran_stats().await {
                Ok(stats) => {
                    let now = Instant::now();
                    if let Some((then, prev)) = &last_ltran {
                        sample.ltran = Some(LtranRates::between(prev, &stats, now - *then));
                    }
                    state
                        .bond_history
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .observe(sample.time_unix_ms, &stats.bond);
                    last_ltran = Some((now, stats));
                }
                Err(p) => {
                    last_ltran = None;
                    state
                        .bond_history
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .lost();
                    if state.daemons.ltran_socket().exists() {
                        sample.unavailable.push(p.detail);
                    }
                }
            }
            let mut seen = BTreeMap::new();
            for lstack in state.daemons.lstacks() {
                match state.daemons.lstack(lstack.ip, Request::LstackStats).await {
                    Ok(Response::LstackStats(stats)) => {
                        let now = Instant::now();
                        if let Some((then, prev)) = last_lstacks.get(&lstack.ip) {
                            sample
                                .lstacks
                                .push(LstackRates::between(prev, &stats, now - *then));
                        }
                        seen.insert(lstack.ip, (now, stats));
                    }
                    Ok(_) => sample
                        .unavailable
                        .push(format!("lstack {} answered another question", lstack.ip)),
                    Err(p) => sample.unavailable.push(p.detail),
                }
            }
            last_lstacks = seen;
            // The histograms are cumulative: the second's reads are the
            // difference from the last look, per stack, then merged.
            let mut latency_now = BTreeMap::new();
            let mut second = Vec::new();
            for ip in last_lstacks.keys() {
                if let Ok(Response::LstackLatency(l)) =
                    state.daemons.lstack(*ip, Request::LstackLatency).await
                {
                    if let Some(d) = last_latency
                        .get(ip)
                        .and_then(|before| latency_between(before, &l.total))
                    {
                        second.push(d);
                    }
                    latency_now.insert(*ip, l.total);
                }
            }
            last_latency = latency_now;
            sample.rx_latency = LatencySecond::of(&RxLatency::merge(&second));
            state.rates.send_replace(Arc::new(sample));
            follow_pending(&state).await;
        }
    })
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Logs how a pending change this server made ended, once applianced no
/// longer reports it pending.
pub async fn follow_pending(state: &AppState) {
    let Some(change) = state
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
    else {
        return;
    };
    let Ok(ApiResponse::Status {
        pending: None,
        applying: false,
        ..
    }) = state.daemons.appliance(ApiRequest::Status, false).await
    else {
        return;
    };
    let saved = match state
        .daemons
        .appliance(
            ApiRequest::GetConfig {
                which: Which::Saved,
            },
            false,
        )
        .await
    {
        Ok(ApiResponse::Config { toml, .. }) => toml,
        _ => return,
    };
    {
        let mut pending = state.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.as_ref().map(|p| &p.toml) != Some(&change.toml) {
            return;
        }
        *pending = None;
    }
    let (outcome, detail) = if saved.as_deref() == Some(change.toml.as_str()) {
        ("confirmed", "confirmed outside this server (appliancectl)")
    } else {
        note_rollback(state, &change, "applianced").await;
        (
            "rolled_back",
            "not confirmed before its deadline: applianced rolled it back",
        )
    };
    let mut entry = AuditEntry::new(&change.who, change.from, "config.pending-ended", outcome);
    entry.who = "applianced".into();
    entry.detail = Some(format!("{detail} (change made by {})", change.who));
    state.audit.record(&entry);
}

/// Keeps what a rollback of `change` restored (the diff from it to what
/// runs now) for the pages to show.
pub async fn note_rollback(state: &AppState, change: &PendingChange, by: &str) {
    let restored = match state
        .daemons
        .appliance(
            ApiRequest::GetConfig {
                which: Which::Running,
            },
            false,
        )
        .await
    {
        Ok(ApiResponse::Config { toml, .. }) => toml,
        _ => None,
    };
    let diff = restored
        .map(|r| crate::audit::diff(&change.toml, &r, "rolled back", "restored"))
        .unwrap_or_default();
    *state
        .last_rollback
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(RollbackNote {
        at_unix_ms: unix_ms(SystemTime::now()),
        by: by.to_owned(),
        change_by: change.who.clone(),
        diff,
    });
}
