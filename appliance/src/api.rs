//! The appliance's local control API: typed requests and responses over a
//! UNIX socket, shared by `appliancectl` and the web UI.
//!
//! The framing is gazelle-ctl-proto's: the client sends one [`Envelope`]
//! (protocol version and [`Request`]) as a line of JSON, the daemon answers
//! one [`Response`] line and closes. The socket ([`DEFAULT_SOCKET`]) is mode
//! 0600 in a 0700 directory and the server answers only root and its own
//! user (peer credentials), so by default only root can drive the machine.
//!
//! - [`Handler`]: what each request does, over the config store, the
//!   supervisor and the machine's `/sys` and `/proc` (testable without a
//!   socket);
//! - [`Server`]: the accept loop, one thread per connection so a slow
//!   apply does not hold up a status query;
//! - [`request`]: one request, one answer, with errors that say whether the
//!   daemon is not running.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use gazelle_ctl_proto::client::{exchange, ExchangeError};
use gazelle_ctl_proto::server::ServeOptions;
use serde::{Deserialize, Serialize};

use crate::config::ApplianceConfig;
use crate::hostinfo::{self, HostInfo};
use crate::hugepages::{self, HugepageStatus};
use crate::nic::{self, Nic, NicSelector};
use crate::store::{self, Applier, ChangeOutcome, Clock, ConfigStore, StoreError};
use crate::supervisor::{ProcessAction, ProcessKind, ProcessStatus, Supervisor};

/// Where `applianced` listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/gazelle/appliance.sock";
/// Version of this protocol; the daemon refuses requests of another.
pub const API_VERSION: u32 = 1;
/// Longest request line accepted (a config file travels in one).
const MAX_REQUEST: u64 = 1024 * 1024;

/// One request with the protocol version it was written for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`API_VERSION`] of the client.
    pub version: u32,
    /// What it asks.
    pub request: Request,
}

/// Which config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Which {
    /// What the machine runs now (including a change pending confirmation).
    Running,
    /// What is on disk: what a reboot runs.
    Saved,
}

/// What a client can ask `applianced`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Request {
    /// Is the daemon there.
    Ping,
    /// The running or saved config.
    GetConfig {
        /// Which one.
        which: Which,
    },
    /// Validate the config (TOML text) and apply it: saved at once, or
    /// pending confirmation when it can cut the operator off.
    SetConfig {
        /// The whole appliance config as TOML.
        toml: String,
        /// The running config (TOML, as [`Request::GetConfig`] returned it)
        /// this one was made from. When given and the running config is no
        /// longer that (another client changed it meanwhile), nothing
        /// changes and the answer is an error: an edit never silently
        /// undoes someone else's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base: Option<String>,
    },
    /// Only validate the config (TOML text); nothing changes.
    Validate {
        /// The whole appliance config as TOML.
        toml: String,
    },
    /// Keep the change pending confirmation (save it).
    Confirm,
    /// Revert the change pending confirmation now.
    Rollback,
    /// The saved versions, newest first.
    History,
    /// One saved version's config.
    GetVersion {
        /// The version's id, as [`Request::History`] lists it.
        id: String,
    },
    /// Make a saved version the running config (as a change).
    Restore {
        /// The version's id, as [`Request::History`] lists it.
        id: String,
    },
    /// Every supervised process and the pending change.
    Status,
    /// The PCI NICs with driver, MAC, link, NUMA node and role.
    Nics,
    /// Host facts: CPUs, NUMA, memory, hugepages, load.
    Host,
    /// Hugepage pools, hugetlbfs mounts and THP.
    Hugepages,
    /// Start, stop or restart one supervised instance (until the next
    /// config change or reboot).
    Process {
        /// The instance's name.
        name: String,
        /// What to do.
        action: ProcessAction,
    },
}

/// A change waiting for confirmation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PendingInfo {
    /// When it rolls back by itself, UTC (`20250102T030405.678Z`).
    pub deadline: String,
    /// The same, ms since the Unix epoch.
    pub deadline_unix_ms: u64,
    /// Seconds left until then.
    pub seconds_left: u64,
    /// What in it can cut the operator off.
    pub reasons: Vec<String>,
}

/// How a set (or restore) went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangeResult {
    /// Whether it must be confirmed (see `pending`) or it rolls back.
    pub confirmation_needed: bool,
    /// The saved version, when it was saved at once.
    pub version: Option<String>,
    /// The deadline and reasons, when it needs confirmation.
    pub pending: Option<PendingInfo>,
}

/// A saved version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionInfo {
    /// Its id (the UTC time of the save).
    pub id: String,
    /// Its file.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub path: PathBuf,
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    /// Answer to [`Request::Ping`].
    Pong {
        /// `applianced`.
        daemon: String,
        /// Its process id.
        pid: u32,
    },
    /// Answer to [`Request::GetConfig`].
    Config {
        /// Which one.
        which: Which,
        /// As TOML (what `config set` takes back); `None` for a saved
        /// config before the first save.
        toml: Option<String>,
        /// The same, structured.
        config: Option<ApplianceConfig>,
        /// The change pending confirmation, if any.
        pending: Option<PendingInfo>,
    },
    /// Answer to [`Request::SetConfig`] and [`Request::Restore`].
    Changed(ChangeResult),
    /// Answer to [`Request::Validate`]: the config is valid.
    Valid {
        /// How many instances it runs, and whether it has ltran.
        summary: String,
        /// What applying it would need confirmed, compared with the running
        /// config (empty: it would be saved at once).
        confirmation_reasons: Vec<String>,
    },
    /// Answer to [`Request::GetVersion`].
    Version {
        /// Its id.
        id: String,
        /// As TOML.
        toml: String,
        /// The same, structured.
        config: ApplianceConfig,
    },
    /// Answer to [`Request::Process`]: the process's status after it.
    Process(ProcessStatus),
    /// Answer to [`Request::Confirm`].
    Confirmed {
        /// The version saved.
        version: String,
    },
    /// Answer to [`Request::Rollback`].
    RolledBack {
        /// "ok", or why undoing failed.
        result: String,
    },
    /// Answer to [`Request::History`].
    History {
        /// Newest first.
        versions: Vec<VersionInfo>,
        /// The change pending confirmation, if any.
        pending: Option<PendingInfo>,
    },
    /// Answer to [`Request::Status`].
    Status {
        /// Every supervised process, in start order.
        processes: Vec<ProcessStatus>,
        /// The change pending confirmation, if any.
        pending: Option<PendingInfo>,
        /// A change is being applied right now (then `pending` is unknown).
        applying: bool,
    },
    /// Answer to [`Request::Nics`].
    Nics {
        /// The PCI NICs, by address.
        nics: Vec<Nic>,
    },
    /// Answer to [`Request::Host`].
    Host(Box<HostInfo>),
    /// Answer to [`Request::Hugepages`].
    Hugepages(HugepageStatus),
    /// The request was understood and refused, or failed.
    Error {
        /// What went wrong, for an operator.
        message: String,
        /// The config field at fault, like `instances[0].lstack.host_addr`.
        field: Option<String>,
    },
}

impl Response {
    fn error(message: impl Into<String>) -> Self {
        Self::Error {
            message: message.into(),
            field: None,
        }
    }
}

fn pending_info(deadline: SystemTime, reasons: &[String], now: SystemTime) -> PendingInfo {
    PendingInfo {
        deadline: store::timestamp(deadline),
        deadline_unix_ms: deadline
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0),
        seconds_left: deadline
            .duration_since(now)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        reasons: reasons.to_vec(),
    }
}

fn store_error(e: StoreError) -> Response {
    let field = match &e {
        StoreError::Invalid(inner) => inner.field(),
        _ => None,
    };
    Response::Error {
        message: e.to_string(),
        field,
    }
}

/// Answers requests from a config store, a supervisor and the machine's
/// tree under `root`.
pub struct Handler<A, C> {
    store: Arc<Mutex<ConfigStore<A, C>>>,
    supervisor: Arc<Supervisor>,
    root: PathBuf,
    clock: C,
}

impl<A, C> std::fmt::Debug for Handler<A, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl<A: Applier, C: Clock + Clone> Handler<A, C> {
    /// A handler over `store` (shared with the rollback watcher),
    /// `supervisor` (the one the store's applier drives), and the sysfs/
    /// procfs under `root`; `clock` is the store's.
    pub fn new(
        store: Arc<Mutex<ConfigStore<A, C>>>,
        supervisor: Arc<Supervisor>,
        root: impl Into<PathBuf>,
        clock: C,
    ) -> Self {
        Self {
            store,
            supervisor,
            root: root.into(),
            clock,
        }
    }

    fn store(&self) -> std::sync::MutexGuard<'_, ConfigStore<A, C>> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pending(&self, store: &ConfigStore<A, C>) -> Option<PendingInfo> {
        store
            .pending()
            .map(|p| pending_info(p.deadline, &p.reasons, self.clock.now()))
    }

    fn change_result(&self, outcome: ChangeOutcome) -> Response {
        match outcome {
            ChangeOutcome::Saved(version) => Response::Changed(ChangeResult {
                confirmation_needed: false,
                version: Some(version.id),
                pending: None,
            }),
            ChangeOutcome::Pending { deadline, reasons } => Response::Changed(ChangeResult {
                confirmation_needed: true,
                version: None,
                pending: Some(pending_info(deadline, &reasons, self.clock.now())),
            }),
        }
    }

    /// Answers one request.
    pub fn handle(&self, request: Request) -> Response {
        match request {
            Request::Ping => Response::Pong {
                daemon: "applianced".into(),
                pid: std::process::id(),
            },
            Request::GetConfig { which } => {
                let store = self.store();
                let config = match which {
                    Which::Running => Some(store.running().clone()),
                    Which::Saved => match store.saved() {
                        Ok(saved) => saved,
                        Err(e) => return store_error(e),
                    },
                };
                Response::Config {
                    which,
                    toml: config.as_ref().map(ApplianceConfig::to_toml_string),
                    config,
                    pending: self.pending(&store),
                }
            }
            Request::SetConfig { toml, base } => match ApplianceConfig::parse(&toml) {
                Err(e) => store_error(StoreError::Invalid(e)),
                Ok(config) => {
                    // Compared and changed under one lock: nothing can
                    // come between.
                    let mut store = self.store();
                    if base.is_some_and(|b| b != store.running().to_toml_string()) {
                        return Response::error(
                            "the running config changed since this change was made from it \
                             (another change was applied meanwhile); nothing changed: \
                             read it again and retry",
                        );
                    }
                    let result = store.change(config);
                    drop(store);
                    match result {
                        Ok(outcome) => self.change_result(outcome),
                        Err(e) => store_error(e),
                    }
                }
            },
            Request::Validate { toml } => match ApplianceConfig::from_toml_str(&toml) {
                Err(e) => store_error(StoreError::Invalid(e)),
                Ok((config, resolved)) => {
                    let reasons = store::cut_off_risks(self.store().running(), &config);
                    Response::Valid {
                        summary: format!(
                            "valid: {} instance(s), {}, {} NIC(s)",
                            config.instances.len(),
                            if resolved.ltran.is_some() {
                                "with ltran"
                            } else {
                                "without ltran"
                            },
                            config.nics.len()
                        ),
                        confirmation_reasons: reasons,
                    }
                }
            },
            Request::Confirm => match self.store().confirm() {
                Ok(version) => Response::Confirmed {
                    version: version.id,
                },
                Err(e) => store_error(e),
            },
            Request::Rollback => match self.store().cancel() {
                Ok(result) => Response::RolledBack { result },
                Err(e) => store_error(e),
            },
            Request::History => {
                let store = self.store();
                match store.history() {
                    Ok(versions) => Response::History {
                        versions: versions
                            .into_iter()
                            .map(|v| VersionInfo {
                                id: v.id,
                                path: v.path,
                            })
                            .collect(),
                        pending: self.pending(&store),
                    },
                    Err(e) => store_error(e),
                }
            }
            Request::GetVersion { id } => match self.store().read_version(&id) {
                Ok(config) => Response::Version {
                    id,
                    toml: config.to_toml_string(),
                    config,
                },
                Err(e) => store_error(e),
            },
            Request::Process { name, action } => {
                match self.supervisor.process(&name) {
                    Some(p) if p.kind == ProcessKind::Instance => {}
                    Some(_) => {
                        return Response::error(format!(
                            "{name} is not an instance: only [[instances]] are started and stopped one by one"
                        ))
                    }
                    None => {
                        return Response::error(format!("no instance is named {name:?}"));
                    }
                }
                match self.supervisor.control(&name, action) {
                    Ok(status) => Response::Process(status),
                    Err(e) => Response::error(e.to_string()),
                }
            }
            Request::Restore { id } => {
                let result = self.store().restore(&id);
                match result {
                    Ok(outcome) => self.change_result(outcome),
                    Err(e) => store_error(e),
                }
            }
            Request::Status => {
                // A change being applied holds the store; the processes
                // are still worth showing meanwhile.
                let (pending, applying) = match self.store.try_lock() {
                    Ok(store) => (self.pending(&store), false),
                    Err(std::sync::TryLockError::Poisoned(e)) => {
                        (self.pending(&e.into_inner()), false)
                    }
                    Err(std::sync::TryLockError::WouldBlock) => (None, true),
                };
                Response::Status {
                    processes: self.supervisor.status(),
                    pending,
                    applying,
                }
            }
            Request::Nics => match nic::inventory(&self.root) {
                Ok(mut nics) => {
                    let management: Vec<NicSelector> = match self.store.try_lock() {
                        Ok(store) => store
                            .running()
                            .nics
                            .iter()
                            .filter(|n| n.role == crate::config::NicRole::Management)
                            .filter_map(crate::config::NicEntry::selector)
                            .collect(),
                        Err(_) => Vec::new(),
                    };
                    // Without a management NIC in the config, the default
                    // route's NIC stays marked (the inventory's guess).
                    if !management.is_empty() {
                        nic::mark_management(&mut nics, &management);
                    }
                    Response::Nics { nics }
                }
                Err(e) => Response::error(format!("NIC inventory: {e}")),
            },
            Request::Host => match hostinfo::collect(&self.root) {
                Ok(info) => Response::Host(Box::new(info)),
                Err(e) => Response::error(format!("host facts: {e}")),
            },
            Request::Hugepages => match hugepages::status(&self.root) {
                Ok(status) => Response::Hugepages(status),
                Err(e) => Response::error(format!("hugepage status: {e}")),
            },
        }
    }
}

/// The control socket being served; dropping it stops serving and removes
/// the socket file.
#[derive(Debug)]
pub struct Server {
    inner: gazelle_ctl_proto::server::Server,
}

impl Server {
    /// Serves `handler` at `path` on a thread of its own, each connection
    /// on a thread of its own.
    ///
    /// The directory is created (mode 0700) if missing, the socket is mode
    /// 0600, and only root and this process's user are answered. A socket
    /// file left by a process that exited is replaced; one that a live
    /// process serves is an `AddrInUse` error.
    pub fn start(
        path: &Path,
        handler: impl Fn(Request) -> Response + Send + Sync + 'static,
    ) -> io::Result<Server> {
        let options = ServeOptions {
            max_request: MAX_REQUEST,
            timeout: Duration::from_secs(10),
            max_connections: 16,
            busy_reply: serde_json::to_string(&Response::error(
                "applianced is busy: answering as many requests as it takes at once; try again",
            ))
            .ok(),
        };
        let inner = gazelle_ctl_proto::server::Server::serve_lines(
            path,
            "appliance-api",
            options,
            move |line| answer(line, &handler),
        )
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{e} (is applianced running already?)"),
                )
            } else {
                e
            }
        })?;
        Ok(Server { inner })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        self.inner.path()
    }
}

/// The answer line to one request line.
fn answer(line: &str, handler: &dyn Fn(Request) -> Response) -> String {
    let response = match serde_json::from_str::<Envelope>(line) {
        Ok(e) if e.version == API_VERSION => handler(e.request),
        Ok(e) => Response::error(format!(
            "API version {} is not this daemon's ({API_VERSION}): use the appliancectl of the same release",
            e.version
        )),
        Err(e) => Response::error(format!("unreadable request: {e}")),
    };
    serde_json::to_string(&response).unwrap_or_else(|e| {
        serde_json::to_string(&Response::error(format!("answer not serialisable: {e}")))
            .unwrap_or_default()
    })
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing listens at the socket.
    #[error("applianced is not running (no control socket at {})", path.display())]
    NotRunning {
        /// The socket looked for.
        path: PathBuf,
    },
    /// Not allowed to connect.
    #[error("not allowed to talk to applianced at {}: run as root", path.display())]
    Denied {
        /// The socket.
        path: PathBuf,
    },
    /// The conversation failed.
    #[error("talking to applianced at {}: {source}", path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The answer was not this protocol's.
    #[error("applianced answered something unreadable: {detail}")]
    Protocol {
        /// What was wrong with it.
        detail: String,
    },
    /// The daemon understood and refused (or failed).
    #[error("{message}")]
    Refused {
        /// Its message.
        message: String,
        /// The config field at fault, if any.
        field: Option<String>,
    },
}

/// Sends `request` to the daemon at `path` and returns its answer; a
/// [`Response::Error`] becomes [`ClientError::Refused`]. `timeout` bounds
/// each read and write (a set that restarts processes can take a while).
pub fn request(path: &Path, request: Request, timeout: Duration) -> Result<Response, ClientError> {
    let line = serde_json::to_string(&Envelope {
        version: API_VERSION,
        request,
    })
    .map_err(|e| ClientError::Protocol {
        detail: e.to_string(),
    })?;
    let answer = exchange(path, &line, timeout).map_err(|e| {
        let path = path.to_owned();
        match e {
            ExchangeError::NotRunning => ClientError::NotRunning { path },
            ExchangeError::Denied => ClientError::Denied { path },
            ExchangeError::Io(source) => ClientError::Io { path, source },
            ExchangeError::NoAnswer => ClientError::Protocol {
                detail: e.to_string(),
            },
        }
    })?;
    match serde_json::from_str(&answer) {
        Ok(Response::Error { message, field }) => Err(ClientError::Refused { message, field }),
        Ok(r) => Ok(r),
        Err(e) => Err(ClientError::Protocol {
            detail: e.to_string(),
        }),
    }
}
