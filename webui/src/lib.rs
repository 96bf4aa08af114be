//! `gazelle-webui`: the appliance's management plane over HTTPS.
//!
//! The REST API (`/api/v1`, JSON, documented by the OpenAPI 3 document at
//! `/api/v1/openapi.json`, made from the Rust types) sits on two typed
//! APIs and adds no state of its own to the machine:
//!
//! - [`daemons`]: applianced's control socket (the config store with its
//!   confirm-or-rollback, the supervisor, NICs, host facts) and the
//!   ltran/lstack control sockets (every statistic `gazellectl` shows),
//!   each asked on a blocking thread;
//! - [`api`]: the handlers, one module per resource: the whole config, the
//!   parts an operator edits one at a time (devices, bond, subnets,
//!   instances: each edit is one whole-config change through applianced,
//!   validated as a whole and never half-applied), statistics, host facts,
//!   accounts and tokens, the audit log;
//! - [`poller`]: one task that asks the daemons once a second and publishes
//!   the rates to every subscriber of the live stream (Server-Sent Events),
//!   so the data path pays nothing per packet and nothing per viewer;
//! - [`metrics`]: Prometheus `/metrics` (loopback or a token by default);
//! - [`auth`] and [`guard`]: accounts with roles, `__Host-` session cookies
//!   with CSRF tokens and an Origin check, API tokens, the login rate
//!   limit, security headers;
//! - [`audit`]: who changed what (with the config diff), when, from where,
//!   and the outcome, as JSON lines;
//! - [`problem`]: every error as `application/problem+json`;
//! - [`pages`]: the HTML dashboard (askama templates) over the same
//!   handlers, sessions, CSRF tokens and audit log, usable without
//!   JavaScript but for its live charts and the confirm countdown;
//! - [`tls`]: the certificate (the operator's, or a self-signed one made
//!   on first start) and the redirect from plain HTTP.
//!
//! [`app`] builds the router from an [`AppState`], so tests drive it with
//! `tower::ServiceExt::oneshot` without a socket; `main` only wires
//! sockets, TLS and signals.

#![deny(unsafe_code)]
// Handlers answer `Result<_, Problem>`: the error is the response body,
// built once per failed request, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use tokio::sync::watch;

pub mod api;
pub mod audit;
pub mod auth;
pub mod daemons;
pub mod guard;
pub mod history;
pub mod metrics;
pub mod pages;
pub mod poller;
pub mod problem;
pub mod tls;

pub use api::openapi;

/// Largest request body accepted (a whole config travels in one, and
/// applianced takes at most 1 MiB).
pub const MAX_BODY: usize = 1024 * 1024;

/// Who may read `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricsAccess {
    /// Clients on loopback, and anyone with an API token.
    Loopback,
    /// Only clients with an API token.
    Token,
    /// Anyone who reaches the port.
    Open,
}

/// A change pending confirmation that this server made, followed until it
/// is confirmed or rolled back (so the audit log says how it ended even
/// when applianced rolled it back by itself).
#[derive(Debug, Clone)]
pub struct PendingChange {
    /// Who made it.
    pub who: String,
    /// From where.
    pub from: Option<IpAddr>,
    /// The config it made running, as TOML.
    pub toml: String,
}

/// A pending change that was rolled back, as the pages tell it.
#[derive(Debug, Clone)]
pub struct RollbackNote {
    /// When, ms since the Unix epoch.
    pub at_unix_ms: u64,
    /// Who rolled it back (an account, or `applianced` at the deadline).
    pub by: String,
    /// Who made the change.
    pub change_by: String,
    /// What was undone and restored: a unified diff from the rolled-back
    /// config to the restored one (empty when unknown).
    pub diff: String,
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct Shared {
    /// Where the daemons are.
    pub daemons: daemons::Daemons,
    /// Accounts, sessions, tokens.
    pub auth: auth::Auth,
    /// The audit log.
    pub audit: audit::AuditLog,
    /// Who may read `/metrics`.
    pub metrics_access: MetricsAccess,
    /// The newest rates, from the poller.
    pub rates: watch::Sender<Arc<poller::RatesSample>>,
    /// Edits read the running config, change one part and send it back:
    /// one at a time.
    pub edit_lock: tokio::sync::Mutex<()>,
    /// The pending change this server made, if any.
    pub pending: Mutex<Option<PendingChange>>,
    /// applianced's runtime directory (the MACs of NICs on DPDK drivers).
    pub appliance_runtime_dir: std::path::PathBuf,
    /// The last rollback of a change this server made, for the pages.
    pub last_rollback: Mutex<Option<RollbackNote>>,
    /// The bond's failovers the poller saw.
    pub bond_history: Mutex<history::BondHistory>,
}

/// The handlers' state.
pub type AppState = Arc<Shared>;

impl Shared {
    /// State over `daemons`, with accounts and the audit log in `auth`
    /// and `audit`.
    pub fn new(
        daemons: daemons::Daemons,
        auth: auth::Auth,
        audit: audit::AuditLog,
        metrics_access: MetricsAccess,
    ) -> AppState {
        Arc::new(Self {
            daemons,
            auth,
            audit,
            metrics_access,
            rates: watch::Sender::new(Arc::new(poller::RatesSample::default())),
            edit_lock: tokio::sync::Mutex::new(()),
            pending: Mutex::new(None),
            appliance_runtime_dir: appliance::supervisor::DEFAULT_RUNTIME_DIR.into(),
            last_rollback: Mutex::new(None),
            bond_history: Mutex::new(history::BondHistory::default()),
        })
    }
}

/// The whole application: `/api/v1`, `/metrics`, the HTML pages, with
/// authentication, CSRF and role checks, body limits and security headers.
pub fn app(state: AppState) -> Router {
    let (api, _doc) = api::router().split_for_parts();
    let api = api
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::authenticate,
        ))
        .with_state(state.clone());
    Router::new()
        .merge(api)
        .route(
            "/metrics",
            axum::routing::get(metrics::serve).with_state(state.clone()),
        )
        .merge(pages::router(state.clone()))
        .fallback(guard::not_found)
        .method_not_allowed_fallback(guard::method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        // A bug must not take the connection down without an answer.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            guard::panicked,
        ))
        .layer(axum::middleware::from_fn(guard::security_headers))
}
