//! Supervision of ltran and the lstack applications: started in dependency
//! order, restarted with exponential backoff, stopped in reverse order.
//!
//! A [`ProcessSpec`] says what to run: argv, environment, files to write
//! first (the generated `ltran.toml` / `<instance>.toml`), the restart
//! policy, how readiness is recognised and which process it needs running
//! first. [`specs_from_config`] turns an [`ApplianceConfig`] into specs: ltran
//! first when there is an `[ltran]` section (`ltran --config-file
//! <run>/ltran.toml`, ready once its control socket answers a ping), then one
//! spec per `[[instances]]` entry, run with `LD_PRELOAD=<liblstack.so>` and
//! `LSTACK_CONF_PATH=<run>/<name>.toml`, ready once it stayed up
//! [`SupervisorOptions::ready_uptime`]; an instance with `use_ltran` waits
//! for ltran.
//!
//! [`Supervisor::apply`] moves the running set to a new list of specs:
//! processes whose spec is unchanged keep running, the others are stopped
//! (last first) and started (first first). Every process has a thread of its
//! own that spawns it, watches readiness, waits for its exit and decides on
//! a restart; a second thread per child reaps it, and one per output stream
//! copies its stdout/stderr line by line into `tracing` (target
//! `appliance::child`, fields `process` and `stream`; under systemd this
//! ends up in the journal with the daemon's own log) and into a short
//! in-memory tail shown in [`ProcessStatus::output_tail`].
//!
//! Stopping sends SIGTERM, waits [`SupervisorOptions::stop_timeout`], then
//! sends SIGKILL to the child's whole process group (every child leads a
//! group of its own, so a Ctrl-C at the daemon's terminal reaches the
//! daemon only, which stops the children in order).

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{BufRead as _, BufReader, Read};
use std::os::unix::fs::DirBuilderExt as _;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gazelle_config::{LstackConfig, LtranConfig};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::config::{ApplianceConfig, Resolved, RestartMode, RestartPolicy};

/// Default path of `liblstack.so` on the appliance.
pub const DEFAULT_LSTACK_LIB: &str = "/usr/lib/gazelle/liblstack.so";
/// Default path of the ltran binary on the appliance.
pub const DEFAULT_LTRAN_BIN: &str = "/usr/sbin/ltran";
/// Default directory of the generated ltran/lstack configs.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/gazelle/appliance";
/// Name of ltran's process in status lists.
pub const LTRAN: &str = "ltran";

/// Where the supervised programs and their generated files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// `liblstack.so`, preloaded into every instance.
    pub lstack_lib: PathBuf,
    /// The ltran binary.
    pub ltran_bin: PathBuf,
    /// Where `ltran.toml` and `<instance>.toml` are written (created mode
    /// 0700).
    pub runtime_dir: PathBuf,
    /// gazelle's run directory (control sockets) given to every process as
    /// `GAZELLE_RUN_DIR`; `None` leaves the variable alone and uses
    /// `gazelle_ctl_proto::paths::run_dir()` to find ltran's socket.
    pub gazelle_run_dir: Option<PathBuf>,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            lstack_lib: DEFAULT_LSTACK_LIB.into(),
            ltran_bin: DEFAULT_LTRAN_BIN.into(),
            runtime_dir: DEFAULT_RUNTIME_DIR.into(),
            gazelle_run_dir: None,
        }
    }
}

impl Paths {
    /// The run directory ltran's and lstack's control sockets live in.
    pub fn gazelle_run_dir(&self) -> PathBuf {
        self.gazelle_run_dir
            .clone()
            .unwrap_or_else(gazelle_ctl_proto::paths::run_dir)
    }
}

/// Timings of the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupervisorOptions {
    /// A process without a readiness probe counts as running after it
    /// stayed up this long.
    pub ready_uptime: Duration,
    /// A process with a probe that does not answer within this long is
    /// killed and counts as failed.
    pub ready_timeout: Duration,
    /// How long a stop waits after SIGTERM before SIGKILL.
    pub stop_timeout: Duration,
    /// A process that ran this long resets its count of restarts in a row
    /// (what `max_restarts` limits).
    pub stable_uptime: Duration,
    /// How often a readiness probe is tried.
    pub probe_interval: Duration,
    /// Lines of output kept per process for [`ProcessStatus::output_tail`].
    pub output_tail_lines: usize,
}

impl Default for SupervisorOptions {
    fn default() -> Self {
        Self {
            ready_uptime: Duration::from_millis(1000),
            ready_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(10),
            stable_uptime: Duration::from_secs(60),
            probe_interval: Duration::from_millis(50),
            output_tail_lines: 40,
        }
    }
}

/// What a supervised process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ProcessKind {
    /// The ltran dispatcher.
    Ltran,
    /// An application on lstack (`[[instances]]`).
    Instance,
    /// Anything else (tests, helpers).
    Other,
}

/// How a process shows it is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// It stayed up [`SupervisorOptions::ready_uptime`].
    Uptime,
    /// Its gazelle control socket answers a ping.
    ControlSocket {
        /// The socket.
        path: PathBuf,
    },
}

/// One process to supervise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// Unique name (`ltran`, or the instance's name).
    pub name: String,
    /// What it is.
    pub kind: ProcessKind,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Environment added to the daemon's.
    pub env: BTreeMap<String, String>,
    /// Files written before every start (path, content): generated configs.
    pub files: Vec<(PathBuf, String)>,
    /// When to restart it.
    pub restart: RestartPolicy,
    /// How readiness is recognised.
    pub readiness: Readiness,
    /// The process that must be running before this one starts.
    pub after: Option<String>,
    /// Control sockets the process removes when it ends cleanly but leaves
    /// behind when it dies (SIGKILL) or leaves through `exit()` (an
    /// application that handles SIGTERM itself, under `LD_PRELOAD`):
    /// removed once the process is gone, unless something answers on them.
    pub leftovers: Vec<PathBuf>,
}

impl ProcessSpec {
    /// A spec of kind [`ProcessKind::Other`] with the default restart policy
    /// and readiness by uptime.
    pub fn new(name: impl Into<String>, argv: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            name: name.into(),
            kind: ProcessKind::Other,
            argv: argv.into_iter().map(Into::into).collect(),
            env: BTreeMap::new(),
            files: Vec::new(),
            restart: RestartPolicy::default(),
            readiness: Readiness::Uptime,
            after: None,
            leftovers: Vec::new(),
        }
    }
}

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ProcessState {
    /// Spawned (or waiting for the process it needs), not ready yet.
    Starting,
    /// Ready and up.
    Running,
    /// Exited; restarts after `backoff_ms`.
    Backoff,
    /// Given up on: `max_restarts` reached, restart mode `never` after a
    /// failure, or it could not be spawned and may not be retried.
    Failed,
    /// Not running on purpose: stopped, or exited cleanly under a policy
    /// that does not restart then.
    Stopped,
}

impl fmt::Display for ProcessState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Backoff => "backoff",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        })
    }
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExitInfo {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Signal number, if a signal killed it.
    pub signal: Option<i32>,
    /// For people: `exited with code 1`, `killed by SIGKILL`, `could not
    /// be started: ...`.
    pub description: String,
}

impl ExitInfo {
    fn from_status(status: ExitStatus) -> Self {
        let signal = status.signal();
        let description = match (status.code(), signal) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(sig)) => match Signal::try_from(sig) {
                Ok(s) => format!("killed by {s}"),
                Err(_) => format!("killed by signal {sig}"),
            },
            (None, None) => status.to_string(),
        };
        Self {
            code: status.code(),
            signal,
            description,
        }
    }

    fn spawn_failed(error: &str) -> Self {
        Self {
            code: None,
            signal: None,
            description: format!("could not be started: {error}"),
        }
    }

    /// Whether this counts as a failure for `on-failure`.
    pub fn is_failure(&self) -> bool {
        self.code != Some(0)
    }
}

/// What the supervisor knows about one process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProcessStatus {
    /// Its name.
    pub name: String,
    /// What it is.
    pub kind: ProcessKind,
    /// Its state.
    pub state: ProcessState,
    /// Process id while it runs.
    pub pid: Option<u32>,
    /// Restarts since the supervisor took it on.
    pub restarts: u32,
    /// Restarts in a row without [`SupervisorOptions::stable_uptime`] of
    /// uptime (what `max_restarts` limits).
    pub restarts_in_a_row: u32,
    /// The delay of the current or last backoff, ms.
    pub backoff_ms: Option<u64>,
    /// How its last run ended.
    pub last_exit: Option<ExitInfo>,
    /// When it entered its state, UTC (`20250102T030405.678Z`).
    pub since: String,
    /// The same, ms since the Unix epoch.
    pub since_unix_ms: u64,
    /// Its command line.
    pub argv: Vec<String>,
    /// What it waits for or why it failed, when there is something to say.
    pub note: Option<String>,
    /// Its last lines of output (`stdout: ...` / `stderr: ...`), across
    /// runs, each run starting with `--- started, pid N`.
    pub output_tail: Vec<String>,
}

/// Why [`Supervisor::wait_running`] gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not running after {}s: {}", timeout.as_secs_f32(), describe(.processes))]
pub struct NotRunning {
    /// How long it waited.
    pub timeout: Duration,
    /// The processes that were not running, with their status.
    pub processes: Vec<ProcessStatus>,
}

fn describe(processes: &[ProcessStatus]) -> String {
    processes
        .iter()
        .map(|p| {
            let mut s = format!("{} is {}", p.name, p.state);
            if let Some(exit) = &p.last_exit {
                s.push_str(&format!(" (last run {})", exit.description));
            }
            if let Some(note) = &p.note {
                s.push_str(&format!(" ({note})"));
            }
            if let Some(line) = p.output_tail.last() {
                s.push_str(&format!("; last output: {line}"));
            }
            s
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why [`Supervisor::wait_for`] returned without its condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// No process has the name.
    #[error("no process is called {0:?}")]
    Unknown(String),
    /// The time ran out; the process's status then.
    #[error("{} did not get there in time: it is {} ({})", .0.name, .0.state, describe(std::slice::from_ref(.0)))]
    Timeout(Box<ProcessStatus>),
}

/// The delay before restart number `in_a_row` (1-based) of a series:
/// `initial_backoff_ms` doubled for each earlier restart, capped at
/// `max_backoff_ms`.
pub fn backoff_delay(policy: &RestartPolicy, in_a_row: u32) -> Duration {
    let doublings = in_a_row.saturating_sub(1).min(32);
    let ms = policy
        .initial_backoff_ms
        .saturating_mul(1u64 << doublings)
        .min(policy.max_backoff_ms.max(policy.initial_backoff_ms));
    Duration::from_millis(ms)
}

/// Errors of [`Supervisor::apply`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    /// Two specs have one name.
    #[error("two processes are named {0:?}")]
    DuplicateName(String),
    /// A spec names a process to start after that is not in the list before it.
    #[error("{name} is to start after {after}, which is not an earlier process")]
    UnknownDependency {
        /// The process.
        name: String,
        /// What it names.
        after: String,
    },
    /// A spec without a program.
    #[error("{0}: the command is empty")]
    EmptyCommand(String),
    /// A file could not be written.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// No supervised process has this name.
    #[error("no supervised process is named {0:?}")]
    UnknownProcess(String),
    /// The thread of a process could not be created.
    #[error("starting the supervision thread of {name}: {source}")]
    Thread {
        /// The process.
        name: String,
        /// What the system said.
        source: std::io::Error,
    },
}

/// Builds the process list of `config` (validated, `resolved` from its
/// [`ApplianceConfig::validate`]): ltran first if there is an `[ltran]`
/// section, then the instances in order.
///
/// `ltran_devices` are the PCI addresses of the data NICs: unless its
/// `forward_kit_args` choose devices themselves, ltran's EAL gets them as
/// its allow-list (`-a`), so it probes and maps no other device (another
/// NIC left on a DPDK driver for something else, say).
pub fn specs_from_config(
    config: &ApplianceConfig,
    resolved: &Resolved,
    paths: &Paths,
    ltran_devices: Option<&[String]>,
) -> Vec<ProcessSpec> {
    let run_dir = paths.gazelle_run_dir();
    let mut common_env = BTreeMap::new();
    if let Some(dir) = &paths.gazelle_run_dir {
        common_env.insert(
            gazelle_ctl_proto::paths::RUN_DIR_ENV.to_owned(),
            dir.display().to_string(),
        );
    }
    let mut specs = Vec::new();
    if let Some(ltran) = &resolved.ltran {
        specs.push(ltran_spec(
            ltran,
            ltran_devices,
            paths,
            &run_dir,
            &common_env,
        ));
    }
    for (instance, lstack) in config.instances.iter().zip(&resolved.lstacks) {
        let conf = paths.runtime_dir.join(format!("{}.toml", instance.name));
        let mut env = common_env.clone();
        env.insert("LD_PRELOAD".into(), paths.lstack_lib.display().to_string());
        env.insert(
            gazelle_config::LSTACK_CONF_ENV.into(),
            conf.display().to_string(),
        );
        // The instance's own settings win, as the config documents.
        env.extend(instance.environment.clone());
        let instance_run_dir = env
            .get(gazelle_ctl_proto::paths::RUN_DIR_ENV)
            .map_or_else(|| run_dir.clone(), PathBuf::from);
        let control_socket = gazelle_ctl_proto::paths::lstack_socket(
            &instance_run_dir,
            &lstack.unix_prefix,
            lstack.host_addr.into(),
        );
        specs.push(ProcessSpec {
            name: instance.name.clone(),
            kind: ProcessKind::Instance,
            argv: instance.command.clone(),
            env,
            files: vec![(conf, lstack_file(lstack))],
            restart: instance.restart.clone(),
            readiness: Readiness::Uptime,
            after: (lstack.use_ltran && resolved.ltran.is_some()).then(|| LTRAN.to_owned()),
            leftovers: vec![control_socket],
        });
    }
    specs
}

fn ltran_spec(
    ltran: &LtranConfig,
    devices: Option<&[String]>,
    paths: &Paths,
    run_dir: &Path,
    env: &BTreeMap<String, String>,
) -> ProcessSpec {
    let mut ltran = ltran.clone();
    match devices {
        Some(devices) if !gazelle_config::eal::chooses_devices(&ltran.forward_kit_args) => {
            for pci in devices {
                ltran
                    .forward_kit_args
                    .extend(["-a".to_owned(), pci.clone()]);
            }
        }
        _ => {}
    }
    let conf = paths.runtime_dir.join("ltran.toml");
    let socket = gazelle_ctl_proto::paths::ltran_socket(run_dir, &ltran.unix_prefix);
    ProcessSpec {
        name: LTRAN.to_owned(),
        kind: ProcessKind::Ltran,
        argv: vec![
            paths.ltran_bin.display().to_string(),
            "--config-file".into(),
            conf.display().to_string(),
        ],
        env: env.clone(),
        files: vec![(
            conf,
            format!(
                "# Generated by applianced from [ltran] of the appliance config; edits are overwritten.\n{}",
                ltran.to_toml_string()
            ),
        )],
        restart: RestartPolicy::default(),
        readiness: Readiness::ControlSocket {
            path: socket.clone(),
        },
        after: None,
        leftovers: vec![socket],
    }
}

fn lstack_file(lstack: &LstackConfig) -> String {
    format!(
        "# Generated by applianced from the instance's lstack section; edits are overwritten.\n{}",
        lstack.to_toml_string()
    )
}

/// What an operator can do to one supervised process, between config
/// changes (a stopped process stays stopped until started, restarted or
/// changed by a new config; a reboot runs the config again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ProcessAction {
    /// Start it if it is not running (stopped, failed, or given up on).
    Start,
    /// Stop it (SIGTERM, then SIGKILL after the stop timeout); it is not
    /// restarted.
    Stop,
    /// Stop it if it runs, then start it again.
    Restart,
}

/// Starts, watches and stops a set of processes.
#[derive(Debug)]
pub struct Supervisor {
    options: SupervisorOptions,
    units: Mutex<Vec<Unit>>,
}

#[derive(Debug)]
struct Unit {
    spec: ProcessSpec,
    shared: Arc<Shared>,
    events: Sender<Event>,
    thread: Option<JoinHandle<()>>,
}

/// State of one process, shared between its thread and the supervisor.
#[derive(Debug)]
struct Shared {
    status: Mutex<ProcessStatus>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ProcessStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, state: ProcessState, update: impl FnOnce(&mut ProcessStatus)) {
        let mut status = self.lock();
        if status.state != state {
            let now = SystemTime::now();
            status.since = crate::store::timestamp(now);
            status.since_unix_ms = unix_ms(now);
            tracing::info!(process = %status.name, from = %status.state, to = %state, "state");
        }
        status.state = state;
        update(&mut status);
        drop(status);
        self.changed.notify_all();
    }

    fn snapshot(&self) -> ProcessStatus {
        self.lock().clone()
    }

    /// Adds a line of output to the tail, keeping the last `keep`.
    fn push_output(&self, line: String, keep: usize) {
        let mut status = self.lock();
        let tail = &mut status.output_tail;
        if tail.len() >= keep.max(1) {
            tail.remove(0);
        }
        tail.push(line);
        drop(status);
        self.changed.notify_all();
    }
}

#[derive(Debug)]
enum Event {
    /// The child of generation `.0` ended.
    Exited(u64, ExitStatus),
    /// Stop it and end the thread.
    Stop,
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Supervisor {
    /// A supervisor with nothing to supervise yet.
    pub fn new(options: SupervisorOptions) -> Self {
        Self {
            options,
            units: Mutex::new(Vec::new()),
        }
    }

    /// Its options.
    pub fn options(&self) -> &SupervisorOptions {
        &self.options
    }

    fn units(&self) -> MutexGuard<'_, Vec<Unit>> {
        self.units.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `specs` the supervised set, in that order: processes whose
    /// spec is unchanged keep running; removed or changed ones (and the
    /// ones that start after a changed one) are stopped, last first; new and
    /// changed ones are started, first first, each after the process it
    /// names in `after` is running. Returns once the stops are done and the
    /// starts are under way; [`Self::wait_running`] waits for readiness.
    pub fn apply(&self, specs: Vec<ProcessSpec>) -> Result<(), SupervisorError> {
        check_specs(&specs)?;
        let mut units = self.units();
        // Which current units stay: same spec, and whatever they start
        // after stays too.
        let mut keep: Vec<bool> = Vec::with_capacity(units.len());
        for (i, unit) in units.iter().enumerate() {
            // A failed process is started again: applying is the
            // operator's "try again".
            let same =
                specs.contains(&unit.spec) && unit.shared.lock().state != ProcessState::Failed;
            let dep_kept = match &unit.spec.after {
                None => true,
                Some(after) => units[..i]
                    .iter()
                    .zip(&keep)
                    .any(|(u, k)| &u.spec.name == after && *k),
            };
            keep.push(same && dep_kept);
        }
        let old: Vec<(Unit, bool)> = units.drain(..).zip(keep).collect();
        let mut kept = Vec::new();
        for (unit, keep) in old.into_iter().rev() {
            if keep {
                kept.push(unit);
            } else {
                stop_unit(unit);
            }
        }
        for spec in specs {
            if let Some(pos) = kept.iter().position(|u| u.spec == spec) {
                units.push(kept.swap_remove(pos));
                continue;
            }
            for (path, content) in &spec.files {
                write_file(path, content)?;
            }
            let dependency = spec.after.as_ref().and_then(|after| {
                units
                    .iter()
                    .find(|u| &u.spec.name == after)
                    .map(|u| Arc::clone(&u.shared))
            });
            units.push(self.start_unit(spec, dependency)?);
        }
        Ok(())
    }

    fn start_unit(
        &self,
        spec: ProcessSpec,
        dependency: Option<Arc<Shared>>,
    ) -> Result<Unit, SupervisorError> {
        let now = SystemTime::now();
        let shared = Arc::new(Shared {
            status: Mutex::new(ProcessStatus {
                name: spec.name.clone(),
                kind: spec.kind,
                state: ProcessState::Starting,
                pid: None,
                restarts: 0,
                restarts_in_a_row: 0,
                backoff_ms: None,
                last_exit: None,
                since: crate::store::timestamp(now),
                since_unix_ms: unix_ms(now),
                argv: spec.argv.clone(),
                note: None,
                output_tail: Vec::new(),
            }),
            changed: Condvar::new(),
        });
        let (events, thread) = self.spawn_runner(spec.clone(), Arc::clone(&shared), dependency)?;
        tracing::info!(process = %spec.name, argv = ?spec.argv, "supervising");
        Ok(Unit {
            spec,
            shared,
            events,
            thread: Some(thread),
        })
    }

    /// The thread that runs `spec` and keeps `shared` up to date.
    fn spawn_runner(
        &self,
        spec: ProcessSpec,
        shared: Arc<Shared>,
        dependency: Option<Arc<Shared>>,
    ) -> Result<(Sender<Event>, JoinHandle<()>), SupervisorError> {
        let (events, receiver) = mpsc::channel();
        let name = spec.name.clone();
        let runner = Runner {
            spec,
            options: self.options,
            shared,
            events: events.clone(),
            receiver,
            dependency,
            generation: 0,
        };
        let thread = thread::Builder::new()
            .name(format!("sup-{name}"))
            .spawn(move || runner.run())
            .map_err(|source| SupervisorError::Thread { name, source })?;
        Ok((events, thread))
    }

    /// The status of every process, in start order.
    pub fn status(&self) -> Vec<ProcessStatus> {
        self.units().iter().map(|u| u.shared.snapshot()).collect()
    }

    /// The status of the process called `name`.
    pub fn process(&self, name: &str) -> Option<ProcessStatus> {
        self.units()
            .iter()
            .find(|u| u.spec.name == name)
            .map(|u| u.shared.snapshot())
    }

    /// Starts, stops or restarts the process called `name` and returns its
    /// status once the stop is done and the start under way. The unit keeps
    /// its counters (restarts, last exit, output tail); a stop by the
    /// operator is not a failure and is not followed by a restart.
    pub fn control(
        &self,
        name: &str,
        action: ProcessAction,
    ) -> Result<ProcessStatus, SupervisorError> {
        let unknown = || SupervisorError::UnknownProcess(name.to_owned());
        if matches!(action, ProcessAction::Stop | ProcessAction::Restart) {
            // Joined outside the lock: a stop can take the stop timeout,
            // and status queries go on meanwhile.
            let (events, thread) = {
                let mut units = self.units();
                let unit = units
                    .iter_mut()
                    .find(|u| u.spec.name == name)
                    .ok_or_else(unknown)?;
                (unit.events.clone(), unit.thread.take())
            };
            let _ = events.send(Event::Stop);
            if let Some(thread) = thread {
                let _ = thread.join();
            }
        }
        let mut units = self.units();
        let index = units
            .iter()
            .position(|u| u.spec.name == name)
            .ok_or_else(unknown)?;
        if matches!(action, ProcessAction::Start | ProcessAction::Restart) {
            let running = units[index]
                .thread
                .as_ref()
                .is_some_and(|t| !t.is_finished());
            if !running {
                if let Some(thread) = units[index].thread.take() {
                    let _ = thread.join();
                }
                let spec = units[index].spec.clone();
                let dependency = spec.after.as_ref().and_then(|after| {
                    units
                        .iter()
                        .find(|u| &u.spec.name == after)
                        .map(|u| Arc::clone(&u.shared))
                });
                let shared = Arc::clone(&units[index].shared);
                shared.set(ProcessState::Starting, |s| {
                    s.note = None;
                    s.restarts_in_a_row = 0;
                    s.backoff_ms = None;
                });
                let (events, thread) = self.spawn_runner(spec, shared, dependency)?;
                units[index].events = events;
                units[index].thread = Some(thread);
            }
        }
        Ok(units[index].shared.snapshot())
    }

    /// Waits until the process called `name` satisfies `done`, up to
    /// `timeout`, and returns its status then.
    pub fn wait_for(
        &self,
        name: &str,
        timeout: Duration,
        done: impl Fn(&ProcessStatus) -> bool,
    ) -> Result<ProcessStatus, WaitError> {
        let shared = self
            .units()
            .iter()
            .find(|u| u.spec.name == name)
            .map(|u| Arc::clone(&u.shared))
            .ok_or_else(|| WaitError::Unknown(name.to_owned()))?;
        let end = Instant::now() + timeout;
        let mut status = shared.lock();
        loop {
            if done(&status) {
                drop(status);
                return Ok(shared.snapshot());
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(status);
                return Err(WaitError::Timeout(Box::new(shared.snapshot())));
            }
            status = shared
                .changed
                .wait_timeout(status, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits until every process is running, or has stopped cleanly under a
    /// policy that does not restart it (a one-shot job). Fails, with the
    /// status of the others, as soon as one has failed or after `timeout`.
    pub fn wait_running(&self, timeout: Duration) -> Result<(), NotRunning> {
        let shared: Vec<Arc<Shared>> = self.units().iter().map(|u| Arc::clone(&u.shared)).collect();
        let end = Instant::now() + timeout;
        for unit in &shared {
            let mut status = unit.lock();
            loop {
                match status.state {
                    ProcessState::Running | ProcessState::Stopped => break,
                    ProcessState::Failed => {
                        drop(status);
                        return Err(self.not_running(timeout));
                    }
                    ProcessState::Starting | ProcessState::Backoff => {}
                }
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    drop(status);
                    return Err(self.not_running(timeout));
                }
                status = unit
                    .changed
                    .wait_timeout(status, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        Ok(())
    }

    fn not_running(&self, timeout: Duration) -> NotRunning {
        NotRunning {
            timeout,
            processes: self
                .status()
                .into_iter()
                .filter(|p| !matches!(p.state, ProcessState::Running | ProcessState::Stopped))
                .collect(),
        }
    }

    /// Stops every process, last first (SIGTERM, then SIGKILL after
    /// [`SupervisorOptions::stop_timeout`]), and forgets them.
    pub fn stop_all(&self) {
        let units: Vec<Unit> = self.units().drain(..).collect();
        for unit in units.into_iter().rev() {
            stop_unit(unit);
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn check_specs(specs: &[ProcessSpec]) -> Result<(), SupervisorError> {
    for (i, spec) in specs.iter().enumerate() {
        if specs[..i].iter().any(|s| s.name == spec.name) {
            return Err(SupervisorError::DuplicateName(spec.name.clone()));
        }
        if spec.argv.first().is_none_or(String::is_empty) {
            return Err(SupervisorError::EmptyCommand(spec.name.clone()));
        }
        if let Some(after) = &spec.after {
            if !specs[..i].iter().any(|s| &s.name == after) {
                return Err(SupervisorError::UnknownDependency {
                    name: spec.name.clone(),
                    after: after.clone(),
                });
            }
        }
    }
    Ok(())
}

fn write_file(path: &Path, content: &str) -> Result<(), SupervisorError> {
    let err = |source| SupervisorError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
    }
    crate::store::write_atomically(path, content).map_err(|e| match e {
        crate::store::StoreError::Io { source, .. } => err(source),
        other => err(std::io::Error::other(other.to_string())),
    })
}

fn stop_unit(mut unit: Unit) {
    tracing::info!(process = %unit.spec.name, "stopping");
    let _ = unit.events.send(Event::Stop);
    if let Some(thread) = unit.thread.take() {
        let _ = thread.join();
    }
}

/// The thread of one process.
struct Runner {
    spec: ProcessSpec,
    options: SupervisorOptions,
    shared: Arc<Shared>,
    events: Sender<Event>,
    receiver: Receiver<Event>,
    dependency: Option<Arc<Shared>>,
    generation: u64,
}

/// What the thread does next.
enum Next {
    Restart,
    End,
}

impl Runner {
    fn run(mut self) {
        loop {
            if !self.wait_for_dependency() {
                self.shared.set(ProcessState::Stopped, |s| s.note = None);
                return;
            }
            match self.run_once() {
                Next::Restart => {}
                Next::End => return,
            }
        }
    }

    /// Waits until the process this one starts after is running. False if
    /// told to stop meanwhile.
    fn wait_for_dependency(&mut self) -> bool {
        let Some(dep) = self.dependency.clone() else {
            return true;
        };
        let after = self.spec.after.clone().unwrap_or_default();
        loop {
            if dep.lock().state == ProcessState::Running {
                self.shared.set(ProcessState::Starting, |s| s.note = None);
                return true;
            }
            self.shared.set(ProcessState::Starting, |s| {
                s.note = Some(format!("waiting for {after} to be running"));
            });
            match self.receiver.recv_timeout(self.options.probe_interval) {
                Ok(Event::Stop) | Err(RecvTimeoutError::Disconnected) => return false,
                Ok(Event::Exited(..)) | Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Spawns the process, watches it until it ends (or is told to stop),
    /// and decides what comes next.
    fn run_once(&mut self) -> Next {
        for (path, content) in &self.spec.files {
            if let Err(e) = write_file(path, content) {
                return self.exited(ExitInfo::spawn_failed(&e.to_string()), None);
            }
        }
        self.generation += 1;
        let generation = self.generation;
        let mut command = Command::new(&self.spec.argv[0]);
        command
            .args(&self.spec.argv[1..])
            // systemd's readiness socket is applianced's, not the children's.
            .env_remove("NOTIFY_SOCKET")
            .envs(&self.spec.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                let info = ExitInfo::spawn_failed(&format!("{}: {e}", self.spec.argv[0]));
                tracing::error!(process = %self.spec.name, error = %info.description);
                return self.exited(info, None);
            }
        };
        let pid = child.id();
        let started = Instant::now();
        tracing::info!(process = %self.spec.name, pid, "started");
        // The tail spans runs (why the last one died is worth seeing);
        // a marker separates them.
        self.shared.push_output(
            format!("--- started, pid {pid}"),
            self.options.output_tail_lines,
        );
        if let Some(out) = child.stdout.take() {
            self.copy_output(out, "stdout");
        }
        if let Some(err) = child.stderr.take() {
            self.copy_output(err, "stderr");
        }
        {
            let events = self.events.clone();
            let name = self.spec.name.clone();
            let reaper = thread::Builder::new()
                .name(format!("reap-{name}"))
                .spawn(move || {
                    if let Ok(status) = child.wait() {
                        let _ = events.send(Event::Exited(generation, status));
                    }
                });
            if let Err(e) = reaper {
                tracing::error!(process = %self.spec.name, error = %e, "no reaper thread; killing");
                let _ = signal::killpg(Pid::from_raw(pid_i32(pid)), Signal::SIGKILL);
                return self.exited(ExitInfo::spawn_failed(&e.to_string()), None);
            }
        }
        self.shared.set(ProcessState::Starting, |s| {
            s.pid = Some(pid);
            s.note = None;
        });

        // Starting: until ready, exited, or told to stop.
        let ready_deadline = started + self.options.ready_timeout;
        let ready = loop {
            let probe_ok = match &self.spec.readiness {
                Readiness::Uptime => started.elapsed() >= self.options.ready_uptime,
                Readiness::ControlSocket { path } => ping(path),
            };
            if probe_ok {
                break true;
            }
            if Instant::now() >= ready_deadline {
                break false;
            }
            let wait = match &self.spec.readiness {
                Readiness::Uptime => self
                    .options
                    .ready_uptime
                    .saturating_sub(started.elapsed())
                    .max(Duration::from_millis(1)),
                Readiness::ControlSocket { .. } => self.options.probe_interval,
            };
            match self.receiver.recv_timeout(wait) {
                Ok(Event::Exited(g, status)) if g == generation => {
                    return self.exited(ExitInfo::from_status(status), Some(started));
                }
                Ok(Event::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    return self.stop(pid, generation);
                }
                Ok(Event::Exited(..)) | Err(RecvTimeoutError::Timeout) => {}
            }
        };
        if !ready {
            let what = match &self.spec.readiness {
                Readiness::ControlSocket { path } => {
                    format!("its control socket {} did not answer", path.display())
                }
                Readiness::Uptime => "it did not stay up".to_owned(),
            };
            tracing::error!(process = %self.spec.name, pid, "not ready within {:?}: {what}; killing it", self.options.ready_timeout);
            let exit = self.terminate(pid, generation);
            let info = ExitInfo {
                description: format!(
                    "not ready within {}s ({what}); then {}",
                    self.options.ready_timeout.as_secs_f32(),
                    exit.as_ref().map_or("gone", |e| e.description.as_str())
                ),
                ..exit.unwrap_or_else(|| ExitInfo::spawn_failed("lost"))
            };
            return self.exited(info, Some(started));
        }
        self.shared.set(ProcessState::Running, |s| s.note = None);

        // Running: until it exits or is told to stop.
        loop {
            match self.receiver.recv() {
                Ok(Event::Exited(g, status)) if g == generation => {
                    return self.exited(ExitInfo::from_status(status), Some(started));
                }
                Ok(Event::Exited(..)) => {}
                Ok(Event::Stop) | Err(_) => return self.stop(pid, generation),
            }
        }
    }

    /// Copies one output stream of the child into tracing and the tail.
    fn copy_output(&self, stream: impl Read + Send + 'static, which: &'static str) {
        let shared = Arc::clone(&self.shared);
        let name = self.spec.name.clone();
        let keep = self.options.output_tail_lines;
        let spawned = thread::Builder::new()
            .name(format!("{which}-{name}"))
            .spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']);
                    tracing::info!(target: "appliance::child", process = %name, stream = which, "{line}");
                    shared.push_output(format!("{which}: {line}"), keep);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(process = %self.spec.name, error = %e, "cannot copy {which}: no thread");
        }
    }

    /// SIGTERM, wait, SIGKILL to the group, wait. The exit, if seen.
    fn terminate(&mut self, pid: u32, generation: u64) -> Option<ExitInfo> {
        let target = Pid::from_raw(pid_i32(pid));
        if let Err(e) = signal::kill(target, Signal::SIGTERM) {
            tracing::warn!(process = %self.spec.name, pid, error = %e, "SIGTERM");
        }
        let deadline = Instant::now() + self.options.stop_timeout;
        let mut killed = false;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            let event = if killed {
                self.receiver.recv_timeout(Duration::from_secs(30))
            } else {
                self.receiver.recv_timeout(wait)
            };
            match event {
                Ok(Event::Exited(g, status)) if g == generation => {
                    // Whatever it left in its group goes with it.
                    let _ = signal::killpg(target, Signal::SIGKILL);
                    return Some(ExitInfo::from_status(status));
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) if !killed => {
                    tracing::warn!(
                        process = %self.spec.name,
                        pid,
                        "still running {:?} after SIGTERM; sending SIGKILL",
                        self.options.stop_timeout
                    );
                    let _ = signal::killpg(target, Signal::SIGKILL);
                    killed = true;
                }
                Err(_) => return None,
            }
        }
    }

    fn stop(&mut self, pid: u32, generation: u64) -> Next {
        let exit = self.terminate(pid, generation);
        self.remove_leftovers();
        tracing::info!(process = %self.spec.name, pid, exit = ?exit.as_ref().map(|e| &e.description), "stopped");
        self.shared.set(ProcessState::Stopped, |s| {
            s.pid = None;
            s.note = None;
            s.backoff_ms = None;
            if exit.is_some() {
                s.last_exit = exit;
            }
        });
        Next::End
    }

    /// The process ended (or never started): record it, and back off and
    /// restart, or give up, as the policy says.
    fn exited(&mut self, info: ExitInfo, started: Option<Instant>) -> Next {
        self.remove_leftovers();
        let failure = info.is_failure();
        tracing::warn!(process = %self.spec.name, exit = %info.description, "exited");
        let stable = started.is_some_and(|s| s.elapsed() >= self.options.stable_uptime);
        let policy = self.spec.restart.clone();
        let restart = match policy.mode {
            RestartMode::Never => false,
            RestartMode::OnFailure => failure,
            RestartMode::Always => true,
        };
        let mut in_a_row = {
            let status = self.shared.lock();
            if stable {
                0
            } else {
                status.restarts_in_a_row
            }
        };
        if !restart {
            let state = if failure {
                ProcessState::Failed
            } else {
                ProcessState::Stopped
            };
            self.shared.set(state, |s| {
                s.pid = None;
                s.last_exit = Some(info);
                s.backoff_ms = None;
                s.restarts_in_a_row = in_a_row;
                s.note = (state == ProcessState::Failed)
                    .then(|| "restart mode \"never\": not restarted".to_owned());
            });
            return self.idle_until_stopped();
        }
        if policy.max_restarts.is_some_and(|max| in_a_row >= max) {
            let max = policy.max_restarts.unwrap_or_default();
            tracing::error!(process = %self.spec.name, "gave up after {max} restarts in a row");
            self.shared.set(ProcessState::Failed, |s| {
                s.pid = None;
                s.last_exit = Some(info);
                s.backoff_ms = None;
                s.restarts_in_a_row = in_a_row;
                s.note = Some(format!(
                    "gave up after max_restarts = {max} restarts in a row"
                ));
            });
            return self.idle_until_stopped();
        }
        in_a_row += 1;
        let delay = backoff_delay(&policy, in_a_row);
        self.shared.set(ProcessState::Backoff, |s| {
            s.pid = None;
            s.last_exit = Some(info);
            s.backoff_ms = Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
            s.restarts_in_a_row = in_a_row;
            s.note = None;
        });
        let end = Instant::now() + delay;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.receiver.recv_timeout(left) {
                Ok(Event::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    self.shared
                        .set(ProcessState::Stopped, |s| s.backoff_ms = None);
                    return Next::End;
                }
                Ok(Event::Exited(..)) => {}
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
        self.shared.set(ProcessState::Starting, |s| s.restarts += 1);
        Next::Restart
    }

    /// Removes the control sockets the ended process left behind (nothing
    /// answers on them any more).
    fn remove_leftovers(&self) {
        for path in &self.spec.leftovers {
            if path.exists() && std::os::unix::net::UnixStream::connect(path).is_err() {
                match fs::remove_file(path) {
                    Ok(()) => {
                        tracing::info!(process = %self.spec.name, path = %path.display(), "removed the control socket it left behind")
                    }
                    Err(e) => {
                        tracing::warn!(process = %self.spec.name, path = %path.display(), error = %e, "cannot remove the control socket it left behind")
                    }
                }
            }
        }
    }

    /// A process left failed or stopped: its thread waits for the stop that
    /// removes it, so the status stays visible.
    fn idle_until_stopped(&mut self) -> Next {
        loop {
            match self.receiver.recv() {
                Ok(Event::Exited(..)) => {}
                Ok(Event::Stop) | Err(_) => return Next::End,
            }
        }
    }
}

fn pid_i32(pid: u32) -> i32 {
    i32::try_from(pid).unwrap_or(i32::MAX)
}

/// Whether a gazelle control socket answers a ping.
fn ping(path: &Path) -> bool {
    matches!(
        gazelle_ctl_proto::client::request(
            path,
            "ltran",
            gazelle_ctl_proto::Request::Ping,
            Duration::from_millis(500)
        ),
        Ok(gazelle_ctl_proto::Response::Pong { .. })
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use super::*;

    fn policy(
        mode: RestartMode,
        initial: u64,
        max: u64,
        max_restarts: Option<u32>,
    ) -> RestartPolicy {
        RestartPolicy {
            mode,
            initial_backoff_ms: initial,
            max_backoff_ms: max,
            max_restarts,
        }
    }

    fn options() -> SupervisorOptions {
        SupervisorOptions {
            ready_uptime: Duration::from_millis(150),
            ready_timeout: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(5),
            stable_uptime: Duration::from_secs(60),
            probe_interval: Duration::from_millis(20),
            output_tail_lines: 10,
        }
    }

    fn sh(name: &str, script: &str, restart: RestartPolicy) -> ProcessSpec {
        let mut spec = ProcessSpec::new(name, ["/bin/sh", "-c", script]);
        spec.restart = restart;
        spec
    }

    const LONG: Duration = Duration::from_secs(20);

    fn is(state: ProcessState) -> impl Fn(&ProcessStatus) -> bool {
        move |s| s.state == state
    }

    /// Whether any process of group `pgid` still exists, after giving
    /// init up to 5 s to reap members that were orphaned by the kill.
    fn group_alive(pgid: u32) -> bool {
        let end = Instant::now() + Duration::from_secs(5);
        while signal::killpg(Pid::from_raw(pid_i32(pgid)), None).is_ok() {
            if Instant::now() > end {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn operator_stops_starts_and_restarts_one_process() {
        let sup = Supervisor::new(options());
        let forever = policy(RestartMode::Always, 50, 100, None);
        sup.apply(vec![
            sh("a", "exec sleep 60", forever.clone()),
            sh("b", "exec sleep 60", forever),
        ])
        .unwrap();
        sup.wait_running(LONG).unwrap();
        let first = sup.process("a").unwrap().pid.unwrap();
        let other = sup.process("b").unwrap().pid.unwrap();

        let stopped = sup.control("a", ProcessAction::Stop).unwrap();
        assert_eq!(stopped.state, ProcessState::Stopped);
        assert!(!group_alive(first), "a still runs after its stop");
        // Even under restart mode "always", a stop by the operator stays.
        thread::sleep(Duration::from_millis(300));
        assert_eq!(sup.process("a").unwrap().state, ProcessState::Stopped);
        assert_eq!(sup.process("b").unwrap().pid, Some(other), "b untouched");

        sup.control("a", ProcessAction::Start).unwrap();
        let started = sup.wait_for("a", LONG, is(ProcessState::Running)).unwrap();
        let second = started.pid.unwrap();
        assert_ne!(second, first);
        // Starting what runs changes nothing.
        assert_eq!(
            sup.control("a", ProcessAction::Start).unwrap().pid,
            Some(second)
        );

        sup.control("a", ProcessAction::Restart).unwrap();
        let again = sup.wait_for("a", LONG, is(ProcessState::Running)).unwrap();
        assert!(again.pid.is_some_and(|p| p != second), "{again:?}");
        assert!(!group_alive(second));
        assert!(
            again
                .output_tail
                .iter()
                .filter(|l| l.starts_with("--- started"))
                .count()
                >= 3
        );

        assert!(matches!(
            sup.control("nobody", ProcessAction::Stop),
            Err(SupervisorError::UnknownProcess(_))
        ));
        sup.stop_all();
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = policy(RestartMode::OnFailure, 100, 1000, None);
        let delays: Vec<u64> = (1..=7)
            .map(|n| u64::try_from(backoff_delay(&p, n).as_millis()).unwrap())
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(backoff_delay(&p, 10_000), Duration::from_millis(1000));
    }

    #[test]
    fn failing_process_backs_off_longer_each_time_then_fails() {
        let sup = Supervisor::new(options());
        sup.apply(vec![sh(
            "crash",
            "sleep 0.05; exit 1",
            policy(RestartMode::OnFailure, 100, 400, Some(4)),
        )])
        .unwrap();
        // Every backoff the process goes through, in order, as its thread
        // announces them.
        let seen = StdMutex::new(Vec::new());
        let status = sup
            .wait_for("crash", LONG, |s| {
                if s.state == ProcessState::Backoff {
                    let mut seen = seen.lock().unwrap();
                    if seen.last() != Some(&(s.restarts, s.backoff_ms)) {
                        seen.push((s.restarts, s.backoff_ms));
                    }
                }
                s.state == ProcessState::Failed
            })
            .unwrap();
        let backoffs: Vec<Option<u64>> = seen.into_inner().unwrap().iter().map(|b| b.1).collect();
        assert_eq!(
            backoffs,
            [Some(100), Some(200), Some(400), Some(400)],
            "{status:?}"
        );
        assert_eq!(status.restarts, 4);
        assert_eq!(status.pid, None);
        let exit = status.last_exit.as_ref().unwrap();
        assert_eq!((exit.code, exit.signal), (Some(1), None));
        assert!(
            status.note.as_deref().unwrap().contains("max_restarts = 4"),
            "{status:?}"
        );
        let err = sup.wait_running(Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("crash is failed"), "{err}");
    }

    #[test]
    fn on_failure_leaves_a_clean_exit_stopped() {
        let sup = Supervisor::new(options());
        sup.apply(vec![sh(
            "job",
            "exit 0",
            policy(RestartMode::OnFailure, 10, 10, None),
        )])
        .unwrap();
        let status = sup
            .wait_for("job", LONG, is(ProcessState::Stopped))
            .unwrap();
        assert_eq!(status.restarts, 0);
        assert_eq!(status.last_exit.unwrap().code, Some(0));
        // A one-shot job that ended cleanly does not hold up readiness.
        sup.wait_running(Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn never_does_not_restart_a_failure() {
        let sup = Supervisor::new(options());
        sup.apply(vec![sh(
            "once",
            "exit 3",
            policy(RestartMode::Never, 10, 10, None),
        )])
        .unwrap();
        let status = sup
            .wait_for("once", LONG, is(ProcessState::Failed))
            .unwrap();
        assert_eq!(status.restarts, 0);
        assert_eq!(status.last_exit.unwrap().code, Some(3));
        assert!(status.note.unwrap().contains("never"));
    }

    #[test]
    fn always_restarts_clean_exits_too() {
        let sup = Supervisor::new(options());
        sup.apply(vec![sh(
            "loop",
            "exit 0",
            policy(RestartMode::Always, 10, 20, Some(3)),
        )])
        .unwrap();
        let status = sup
            .wait_for("loop", LONG, is(ProcessState::Failed))
            .unwrap();
        assert_eq!(status.restarts, 3);
        assert_eq!(status.last_exit.unwrap().code, Some(0));
    }

    #[test]
    fn a_killed_process_is_restarted() {
        let sup = Supervisor::new(options());
        sup.apply(vec![sh(
            "server",
            "exec sleep 1000",
            policy(RestartMode::OnFailure, 50, 100, None),
        )])
        .unwrap();
        let first = sup
            .wait_for("server", LONG, is(ProcessState::Running))
            .unwrap();
        let pid = first.pid.unwrap();
        signal::kill(Pid::from_raw(pid_i32(pid)), Signal::SIGKILL).unwrap();
        let again = sup
            .wait_for("server", LONG, |s| {
                s.state == ProcessState::Running && s.restarts == 1
            })
            .unwrap();
        assert_ne!(again.pid, Some(pid));
        let exit = again.last_exit.unwrap();
        assert_eq!(exit.signal, Some(9));
        assert_eq!(exit.description, "killed by SIGKILL");
        sup.stop_all();
        assert!(!group_alive(again.pid.unwrap()));
    }

    #[test]
    fn starts_in_order_and_stops_in_reverse() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let spec = |name: &str, after: Option<&str>| {
            // Says when it starts and when SIGTERM reaches it.
            let script = format!(
                "echo start {name} >> {log}; trap 'echo stop {name} >> {log}; exit 0' TERM; \
                 while :; do sleep 0.02; done",
                log = log.display()
            );
            let mut s = sh(name, &script, RestartPolicy::default());
            s.after = after.map(str::to_owned);
            s
        };
        let sup = Supervisor::new(options());
        sup.apply(vec![
            spec("a", None),
            spec("b", Some("a")),
            spec("c", Some("b")),
        ])
        .unwrap();
        sup.wait_running(LONG).unwrap();
        let pids: Vec<u32> = sup.status().iter().map(|s| s.pid.unwrap()).collect();
        sup.stop_all();
        let text = fs::read_to_string(&log).unwrap();
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            ["start a", "start b", "start c", "stop c", "stop b", "stop a"]
        );
        assert!(sup.status().is_empty());
        for pid in pids {
            assert!(!group_alive(pid), "process group {pid} still alive");
        }
    }

    #[test]
    fn sigkill_after_the_stop_timeout() {
        let sup = Supervisor::new(SupervisorOptions {
            stop_timeout: Duration::from_millis(300),
            ..options()
        });
        // Ignores SIGTERM, and so does its sleep child (ignored signals
        // are inherited).
        sup.apply(vec![sh(
            "stubborn",
            "trap '' TERM; while :; do sleep 0.02; done",
            RestartPolicy::default(),
        )])
        .unwrap();
        let pid = sup
            .wait_for("stubborn", LONG, is(ProcessState::Running))
            .unwrap()
            .pid
            .unwrap();
        // Keep the thread's last status: stop_all forgets the process.
        let shared = Arc::clone(&sup.units()[0].shared);
        let started = Instant::now();
        sup.stop_all();
        assert!(started.elapsed() >= Duration::from_millis(300));
        let status = shared.snapshot();
        assert_eq!(status.state, ProcessState::Stopped);
        let exit = status.last_exit.unwrap();
        assert_eq!(exit.signal, Some(9), "{exit:?}");
        assert!(!group_alive(pid), "the sleep child went with it");
    }

    #[test]
    fn sigterm_is_enough_for_a_well_behaved_process() {
        let sup = Supervisor::new(options());
        sup.apply(vec![sh(
            "polite",
            "exec sleep 1000",
            RestartPolicy::default(),
        )])
        .unwrap();
        sup.wait_for("polite", LONG, is(ProcessState::Running))
            .unwrap();
        let shared = Arc::clone(&sup.units()[0].shared);
        sup.stop_all();
        let exit = shared.snapshot().last_exit.unwrap();
        assert_eq!(exit.signal, Some(15), "{exit:?}");
    }

    #[test]
    fn output_is_kept_per_process() {
        let sup = Supervisor::new(options());
        sup.apply(vec![sh(
            "talker",
            "echo to stdout; echo to stderr >&2; exec sleep 1000",
            RestartPolicy::default(),
        )])
        .unwrap();
        let status = sup
            .wait_for("talker", LONG, |s| {
                s.state == ProcessState::Running && s.output_tail.len() == 3
            })
            .unwrap_or_else(|e| panic!("{e}"));
        let pid = status.pid.unwrap();
        let mut tail = status.output_tail;
        assert_eq!(tail[0], format!("--- started, pid {pid}"));
        tail.sort();
        assert_eq!(tail[1..], ["stderr: to stderr", "stdout: to stdout"]);
    }

    #[test]
    fn a_missing_program_fails_to_spawn() {
        let sup = Supervisor::new(options());
        let mut spec = ProcessSpec::new("ghost", ["/nonexistent/ltran", "--config-file", "x"]);
        spec.restart = policy(RestartMode::OnFailure, 10, 10, Some(1));
        sup.apply(vec![spec]).unwrap();
        let status = sup
            .wait_for("ghost", LONG, is(ProcessState::Failed))
            .unwrap();
        let exit = status.last_exit.unwrap();
        assert!(
            exit.description
                .starts_with("could not be started: /nonexistent/ltran: "),
            "{exit:?}"
        );
        assert_eq!(status.restarts, 1);
    }

    #[test]
    fn a_dependent_waits_for_its_dependency() {
        let sup = Supervisor::new(options());
        let mut b = sh("b", "exec sleep 1000", RestartPolicy::default());
        b.after = Some("a".into());
        sup.apply(vec![
            sh("a", "exit 1", policy(RestartMode::Never, 10, 10, None)),
            b,
        ])
        .unwrap();
        sup.wait_for("a", LONG, is(ProcessState::Failed)).unwrap();
        let b = sup.process("b").unwrap();
        assert_eq!(b.state, ProcessState::Starting);
        assert_eq!(b.pid, None);
        assert_eq!(b.note.as_deref(), Some("waiting for a to be running"));
        let err = sup.wait_running(Duration::from_millis(200)).unwrap_err();
        assert_eq!(err.processes.len(), 2, "{err}");
    }

    #[test]
    fn apply_keeps_unchanged_processes_and_restarts_changed_ones() {
        let sup = Supervisor::new(options());
        let a = sh("a", "exec sleep 1000", RestartPolicy::default());
        let b = sh("b", "exec sleep 1001", RestartPolicy::default());
        let mut c = sh("c", "exec sleep 1002", RestartPolicy::default());
        c.after = Some("b".into());
        sup.apply(vec![a.clone(), b.clone(), c.clone()]).unwrap();
        sup.wait_running(LONG).unwrap();
        let before: Vec<Option<u32>> = sup.status().iter().map(|s| s.pid).collect();

        // b changes: b and c (which starts after b) restart, a stays.
        let b2 = sh("b", "exec sleep 1003", RestartPolicy::default());
        sup.apply(vec![a.clone(), b2.clone(), c.clone()]).unwrap();
        sup.wait_running(LONG).unwrap();
        let after: Vec<Option<u32>> = sup.status().iter().map(|s| s.pid).collect();
        assert_eq!(after[0], before[0]);
        assert_ne!(after[1], before[1]);
        assert_ne!(after[2], before[2]);
        assert!(!group_alive(before[1].unwrap()));

        // c goes away.
        sup.apply(vec![a, b2]).unwrap();
        let names: Vec<String> = sup.status().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(!group_alive(after[2].unwrap()));

        let mut bad = sh("x", "true", RestartPolicy::default());
        bad.after = Some("nobody".into());
        assert!(matches!(
            sup.apply(vec![bad]),
            Err(SupervisorError::UnknownDependency { .. })
        ));
    }

    #[test]
    fn control_socket_readiness() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("ltran.sock");
        let sup = Supervisor::new(SupervisorOptions {
            ready_timeout: Duration::from_secs(20),
            ..options()
        });
        let mut spec = sh("ltran", "exec sleep 1000", RestartPolicy::default());
        spec.readiness = Readiness::ControlSocket {
            path: socket.clone(),
        };
        sup.apply(vec![spec]).unwrap();
        // Up, but not ready until something answers on the socket.
        let status = sup.wait_for("ltran", LONG, |s| s.pid.is_some()).unwrap();
        assert_eq!(status.state, ProcessState::Starting);
        let _server = gazelle_ctl_proto::server::Server::start(&socket, "fake-ltran", |_| {
            gazelle_ctl_proto::Response::Pong {
                daemon: "ltran".into(),
                pid: 1,
            }
        })
        .unwrap();
        let status = sup
            .wait_for("ltran", LONG, is(ProcessState::Running))
            .unwrap();
        assert_eq!(status.restarts, 0);
    }

    #[test]
    fn no_answer_on_the_control_socket_is_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::new(SupervisorOptions {
            ready_timeout: Duration::from_millis(300),
            ..options()
        });
        let mut spec = sh(
            "ltran",
            "exec sleep 1000",
            policy(RestartMode::OnFailure, 10, 10, Some(1)),
        );
        spec.readiness = Readiness::ControlSocket {
            path: dir.path().join("never.sock"),
        };
        sup.apply(vec![spec]).unwrap();
        let status = sup
            .wait_for("ltran", LONG, is(ProcessState::Failed))
            .unwrap();
        let exit = status.last_exit.unwrap();
        assert!(
            exit.description.starts_with("not ready within 0.3s"),
            "{exit:?}"
        );
        assert!(exit.description.contains("killed by SIGTERM"), "{exit:?}");
        assert_eq!(status.restarts, 1);
    }

    #[test]
    fn control_sockets_left_behind_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join("stale.sock");
        let live = dir.path().join("live.sock");
        // Bound and closed: the file stays, nobody answers.
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let _listener = std::os::unix::net::UnixListener::bind(&live).unwrap();
        let sup = Supervisor::new(options());
        let mut spec = sh("dies", "exit 0", RestartPolicy::default());
        spec.leftovers = vec![stale.clone(), live.clone()];
        sup.apply(vec![spec]).unwrap();
        sup.wait_for("dies", LONG, is(ProcessState::Stopped))
            .unwrap();
        assert!(!stale.exists());
        assert!(live.exists(), "a socket something answers on stays");
    }

    #[test]
    fn specs_of_the_image_default() {
        let config = ApplianceConfig::image_default();
        let resolved = config.validate().unwrap();
        let paths = Paths {
            lstack_lib: "/opt/liblstack.so".into(),
            ltran_bin: "/opt/ltran".into(),
            runtime_dir: "/run/test-appliance".into(),
            gazelle_run_dir: Some("/run/test-gazelle".into()),
        };
        let devices = ["0000:00:04.0".to_owned(), "0000:00:05.0".to_owned()];
        let specs = specs_from_config(&config, &resolved, &paths, Some(&devices));
        assert_eq!(specs.len(), 2);
        let ltran = &specs[0];
        assert_eq!(ltran.kind, ProcessKind::Ltran);
        assert_eq!(
            ltran.argv,
            [
                "/opt/ltran",
                "--config-file",
                "/run/test-appliance/ltran.toml"
            ]
        );
        assert_eq!(
            ltran.readiness,
            Readiness::ControlSocket {
                path: "/run/test-gazelle/ltran.sock".into()
            }
        );
        // ltran's EAL gets the data NICs as its allow-list, after the config's
        // own arguments.
        let mut back = LtranConfig::from_toml_str(&ltran.files[0].1).unwrap();
        let args = back
            .forward_kit_args
            .split_off(back.forward_kit_args.len() - 4);
        assert_eq!(args, ["-a", "0000:00:04.0", "-a", "0000:00:05.0"]);
        assert_eq!(Some(back), resolved.ltran);
        // Arguments that choose devices themselves are left alone.
        let mut own = resolved.clone();
        let own_ltran = own.ltran.as_mut().unwrap();
        own_ltran
            .forward_kit_args
            .push("--allow=0000:00:09.0".into());
        let specs_own = specs_from_config(&config, &own, &paths, Some(&devices));
        let back = LtranConfig::from_toml_str(&specs_own[0].files[0].1).unwrap();
        assert_eq!(
            back.forward_kit_args,
            own.ltran.as_ref().unwrap().forward_kit_args
        );
        // Without the addresses (a data NIC that cannot be told), no list.
        let specs_none = specs_from_config(&config, &resolved, &paths, None);
        let back = LtranConfig::from_toml_str(&specs_none[0].files[0].1).unwrap();
        assert_eq!(Some(back), resolved.ltran);

        let redis = &specs[1];
        assert_eq!(redis.name, "redis");
        assert_eq!(redis.after.as_deref(), Some(LTRAN));
        assert_eq!(redis.argv[0], "redis-server");
        assert_eq!(redis.env["LD_PRELOAD"], "/opt/liblstack.so");
        assert_eq!(
            redis.env["LSTACK_CONF_PATH"],
            "/run/test-appliance/redis.toml"
        );
        assert_eq!(redis.env["GAZELLE_RUN_DIR"], "/run/test-gazelle");
        assert_eq!(redis.env["GAZELLE_BIND_PROCNAME"], "redis-server");
        assert_eq!(
            redis.files[0].0,
            Path::new("/run/test-appliance/redis.toml")
        );
        let back = LstackConfig::from_toml_str(&redis.files[0].1).unwrap();
        assert_eq!(back, resolved.lstacks[0]);
        assert_eq!(
            redis.leftovers,
            [Path::new("/run/test-gazelle/lstack-192.168.100.10.sock")]
        );
        assert_eq!(ltran.leftovers, [Path::new("/run/test-gazelle/ltran.sock")]);
    }
}
