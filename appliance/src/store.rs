//! The config store: the running configuration, the saved one, and the
//! last saved versions.
//!
//! The saved config is `<dir>/appliance.toml`; every save also keeps a copy
//! as `<dir>/history/appliance-<UTC timestamp>.toml`, of which the newest
//! [`StoreOptions::keep`] stay. Files are replaced atomically (temp file in
//! the same directory, fsync, rename, fsync of the directory), so a crash
//! leaves the old file or the new one, never a mix.
//!
//! A change ([`ConfigStore::change`]) is validated as a whole first; an
//! invalid one touches nothing. It is then applied through the daemon's
//! [`Applier`]; if that fails, the applier is called again with old and new
//! swapped and the running config stays the old one. A change that can cut
//! the operator off (NICs, ltran's bond and subnet, instance addresses)
//! becomes *pending*: it runs but is not saved, and unless
//! [`ConfigStore::confirm`] is called before its deadline,
//! [`ConfigStore::tick`] (called by [`RollbackWatcher`] or the daemon's own
//! loop) reverts it. A daemon restart while a change is pending comes back
//! with the saved config, which is the same rollback.
//!
//! Time comes from a [`Clock`], so tests move it by hand.

use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{ApplianceConfig, ApplianceConfigError};

/// File name of the saved config inside the store directory.
pub const SAVED_FILE: &str = "appliance.toml";
/// Directory of saved versions inside the store directory.
pub const HISTORY_DIR: &str = "history";

/// Where time comes from.
pub trait Clock: Send + Sync {
    /// The current wall-clock time (deadlines and history timestamps).
    fn now(&self) -> SystemTime;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to: for tests and simulations.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<SystemTime>>);

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: SystemTime) -> Self {
        Self(Arc::new(Mutex::new(start)))
    }

    /// Moves the clock (and every clone of it) forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What makes a config real on the machine; the daemon implements it over
/// hugepages, NIC binding, sysctls and the supervisor.
pub trait Applier {
    /// Moves the machine from `old` to `new`. On error the store calls it
    /// again with the two swapped, so an implementation may leave a partial
    /// change behind as long as applying the reverse cleans it up.
    fn apply(&mut self, old: &ApplianceConfig, new: &ApplianceConfig) -> anyhow::Result<()>;
}

/// Settings of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// How many saved versions to keep in `history/` (at least 1).
    pub keep: usize,
    /// How long a change that can cut the operator off waits for
    /// confirmation before it is rolled back.
    pub confirm_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            keep: 20,
            confirm_timeout: Duration::from_secs(120),
        }
    }
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done ("writing", "renaming to", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },

    /// The new (or stored) config is invalid; nothing was changed.
    #[error("invalid config, nothing changed: {0}")]
    Invalid(#[from] ApplianceConfigError),

    /// Another change is waiting for confirmation.
    #[error("a change is pending confirmation until {}; confirm or roll it back first", timestamp(*deadline))]
    Pending {
        /// When it rolls back by itself.
        deadline: SystemTime,
    },

    /// `confirm` or `cancel` without a pending change.
    #[error("no change is pending confirmation")]
    NothingPending,

    /// The confirmation came after the deadline; the change was rolled back.
    #[error("too late: the deadline {} has passed and the change was rolled back ({rollback})", timestamp(*deadline))]
    ConfirmTooLate {
        /// The missed deadline.
        deadline: SystemTime,
        /// How the rollback went.
        rollback: String,
    },

    /// Applying failed; the applier was called with old and new swapped.
    #[error("applying the change failed: {error}; rolled back: {rollback}")]
    ApplyFailed {
        /// What the applier said.
        error: String,
        /// "ok", or why undoing failed too.
        rollback: String,
    },

    /// No saved version has this id.
    #[error("no saved version {id:?} (have: {})", known.join(", "))]
    UnknownVersion {
        /// The id asked for.
        id: String,
        /// The ids that exist.
        known: Vec<String>,
    },
}

/// A saved version in `history/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Its id, the UTC timestamp of the save (`20250102T030405.678Z`).
    pub id: String,
    /// The file.
    pub path: PathBuf,
}

/// A change waiting for confirmation.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingChange {
    /// The config before the change, restored on rollback.
    pub previous: ApplianceConfig,
    /// When it rolls back unless confirmed.
    pub deadline: SystemTime,
    /// Why it needs confirmation.
    pub reasons: Vec<String>,
}

/// How a change ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeOutcome {
    /// Applied and saved.
    Saved(Version),
    /// Applied, not saved: confirm before `deadline` or it rolls back.
    Pending {
        /// When it rolls back.
        deadline: SystemTime,
        /// What in the change can cut the operator off.
        reasons: Vec<String>,
    },
}

/// What [`ConfigStore::tick`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TickOutcome {
    /// Nothing was due.
    Idle,
    /// A pending change passed its deadline and was reverted; `rollback`
    /// is "ok" or why the applier failed.
    RolledBack {
        /// How the reverse apply went.
        rollback: String,
    },
}

/// The running and saved configuration, with history and confirm-or-rollback.
pub struct ConfigStore<A, C = SystemClock> {
    dir: PathBuf,
    options: StoreOptions,
    clock: C,
    applier: A,
    running: ApplianceConfig,
    pending: Option<PendingChange>,
}

impl<A, C> fmt::Debug for ConfigStore<A, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigStore")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .field("pending", &self.pending.as_ref().map(|p| p.deadline))
            .finish_non_exhaustive()
    }
}

impl<A: Applier, C: Clock> ConfigStore<A, C> {
    /// Opens the store in `dir` (created if missing). The running config
    /// starts as the saved one, or the image default when nothing is saved
    /// yet; the store does not apply it (the daemon applies it at boot).
    pub fn open(
        dir: impl Into<PathBuf>,
        options: StoreOptions,
        clock: C,
        applier: A,
    ) -> Result<Self, StoreError> {
        let dir = dir.into();
        create_dir(&dir.join(HISTORY_DIR))?;
        let saved_path = dir.join(SAVED_FILE);
        let running = if saved_path.exists() {
            read_config(&saved_path)?
        } else {
            ApplianceConfig::image_default()
        };
        Ok(Self {
            dir,
            options: StoreOptions {
                keep: options.keep.max(1),
                ..options
            },
            clock,
            applier,
            running,
            pending: None,
        })
    }

    /// The config the machine runs now (including a pending change).
    pub fn running(&self) -> &ApplianceConfig {
        &self.running
    }

    /// The config on disk, what a reboot would run. `None` before the first save.
    pub fn saved(&self) -> Result<Option<ApplianceConfig>, StoreError> {
        let path = self.dir.join(SAVED_FILE);
        if path.exists() {
            read_config(&path).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The change waiting for confirmation, if any.
    pub fn pending(&self) -> Option<&PendingChange> {
        self.pending.as_ref()
    }

    /// The applier (to inspect it, or reach the daemon's state through it).
    pub fn applier(&self) -> &A {
        &self.applier
    }

    /// Applies the running config to a machine that runs none of it yet
    /// (the daemon's start): the applier goes from
    /// [`ApplianceConfig::empty`] to the running config. Unlike a change, a
    /// failure is not undone (there is nothing older to go back to): what
    /// did apply stays, supervised processes keep retrying, and the error
    /// says what did not; the operator's next change starts from the
    /// running config as usual.
    pub fn apply_at_start(&mut self) -> anyhow::Result<()> {
        self.applier.apply(&ApplianceConfig::empty(), &self.running)
    }

    /// Validates `new` as a whole, applies it, and saves it, or (if it can
    /// cut the operator off) leaves it pending confirmation. A failed apply
    /// is rolled back at once and the running config stays as it was.
    pub fn change(&mut self, new: ApplianceConfig) -> Result<ChangeOutcome, StoreError> {
        if let Some(pending) = &self.pending {
            return Err(StoreError::Pending {
                deadline: pending.deadline,
            });
        }
        new.validate()?;
        let old = self.running.clone();
        if let Err(error) = self.applier.apply(&old, &new) {
            let rollback = match self.applier.apply(&new, &old) {
                Ok(()) => "ok".to_owned(),
                Err(e) => format!("FAILED: {e:#}"),
            };
            tracing::warn!(error = %format!("{error:#}"), %rollback, "config change failed");
            return Err(StoreError::ApplyFailed {
                error: format!("{error:#}"),
                rollback,
            });
        }
        self.running = new;
        let reasons = cut_off_risks(&old, &self.running);
        if reasons.is_empty() {
            return self.save_running().map(ChangeOutcome::Saved);
        }
        let deadline = self.clock.now() + self.options.confirm_timeout;
        tracing::info!(deadline = %timestamp(deadline), ?reasons, "config change pending confirmation");
        self.pending = Some(PendingChange {
            previous: old,
            deadline,
            reasons: reasons.clone(),
        });
        Ok(ChangeOutcome::Pending { deadline, reasons })
    }

    /// Keeps the pending change: saves it. After the deadline the change is
    /// rolled back instead and this fails.
    pub fn confirm(&mut self) -> Result<Version, StoreError> {
        let Some(pending) = &self.pending else {
            return Err(StoreError::NothingPending);
        };
        let deadline = pending.deadline;
        if self.clock.now() > deadline {
            let rollback = self.roll_back_pending();
            return Err(StoreError::ConfirmTooLate { deadline, rollback });
        }
        self.pending = None;
        self.save_running()
    }

    /// Reverts the pending change now (the operator's "cancel"). Returns
    /// "ok" or why the reverse apply failed.
    pub fn cancel(&mut self) -> Result<String, StoreError> {
        if self.pending.is_none() {
            return Err(StoreError::NothingPending);
        }
        Ok(self.roll_back_pending())
    }

    /// Rolls back a pending change whose deadline has passed. Call it
    /// regularly (see [`RollbackWatcher`]).
    pub fn tick(&mut self) -> TickOutcome {
        match &self.pending {
            Some(p) if self.clock.now() > p.deadline => TickOutcome::RolledBack {
                rollback: self.roll_back_pending(),
            },
            _ => TickOutcome::Idle,
        }
    }

    fn roll_back_pending(&mut self) -> String {
        let Some(pending) = self.pending.take() else {
            return "nothing pending".to_owned();
        };
        let result = self.applier.apply(&self.running, &pending.previous);
        // The machine is assumed back on the old config either way: the
        // saved file still holds it, so a restart converges there too.
        self.running = pending.previous;
        match result {
            Ok(()) => {
                tracing::warn!("unconfirmed config change rolled back");
                "ok".to_owned()
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "rolling back an unconfirmed change failed");
                format!("FAILED: {e:#}")
            }
        }
    }

    /// The saved versions, newest first.
    pub fn history(&self) -> Result<Vec<Version>, StoreError> {
        let dir = self.dir.join(HISTORY_DIR);
        let entries = fs::read_dir(&dir).map_err(|source| StoreError::Io {
            action: "listing",
            path: dir.clone(),
            source,
        })?;
        let mut versions: Vec<Version> = entries
            .filter_map(|e| {
                let path = e.ok()?.path();
                let name = path.file_name()?.to_str()?;
                let id = name
                    .strip_prefix("appliance-")?
                    .strip_suffix(".toml")?
                    .to_owned();
                Some(Version { id, path })
            })
            .collect();
        // Timestamps of one width sort as text.
        versions.sort_by(|a, b| b.id.cmp(&a.id));
        Ok(versions)
    }

    /// Reads a saved version.
    pub fn read_version(&self, id: &str) -> Result<ApplianceConfig, StoreError> {
        let versions = self.history()?;
        let version =
            versions
                .iter()
                .find(|v| v.id == id)
                .ok_or_else(|| StoreError::UnknownVersion {
                    id: id.to_owned(),
                    known: versions.iter().map(|v| v.id.clone()).collect(),
                })?;
        read_config(&version.path)
    }

    /// Makes a saved version the running config, as a [`Self::change`]
    /// (validated, applied, confirm-or-rollback when risky).
    pub fn restore(&mut self, id: &str) -> Result<ChangeOutcome, StoreError> {
        let config = self.read_version(id)?;
        self.change(config)
    }

    /// Writes the running config as the saved one and into the history,
    /// then prunes the history to `keep` versions.
    fn save_running(&mut self) -> Result<Version, StoreError> {
        let text = self.running.to_toml_string();
        write_atomically(&self.dir.join(SAVED_FILE), &text)?;
        let history = self.dir.join(HISTORY_DIR);
        let base = timestamp(self.clock.now());
        // Two saves within a millisecond get a suffix, which sorts after.
        let mut id = base.clone();
        let mut n = 1;
        while history.join(format!("appliance-{id}.toml")).exists() {
            id = format!("{base}-{n:03}");
            n += 1;
        }
        let path = history.join(format!("appliance-{id}.toml"));
        write_atomically(&path, &text)?;
        for old in self.history()?.into_iter().skip(self.options.keep) {
            fs::remove_file(&old.path).map_err(|source| StoreError::Io {
                action: "pruning",
                path: old.path.clone(),
                source,
            })?;
        }
        tracing::info!(version = %id, "config saved");
        Ok(Version { id, path })
    }
}

/// What in going from `old` to `new` can cut the operator off: NIC roles
/// and drivers, ltran (bond, dispatch subnet), and the addresses, masks,
/// gateways and MACs of instances.
pub fn cut_off_risks(old: &ApplianceConfig, new: &ApplianceConfig) -> Vec<String> {
    let mut reasons = Vec::new();
    if old.nics != new.nics {
        reasons.push("nics changed (roles, drivers or which NICs)".to_owned());
    }
    if old.ltran != new.ltran {
        reasons.push("[ltran] changed (bond, dispatch subnet)".to_owned());
    }
    let addressing = |c: &ApplianceConfig| -> Vec<(String, Vec<Option<toml::Value>>)> {
        c.instances
            .iter()
            .map(|i| {
                let keys = [
                    "host_addr",
                    "mask_addr",
                    "gateway_addr",
                    "host_addr6",
                    "devices",
                    "use_ltran",
                ];
                let values = match &i.lstack {
                    crate::config::SubConfig::Inline(t) => {
                        keys.iter().map(|k| t.get(*k).cloned()).collect()
                    }
                    crate::config::SubConfig::Path(p) => vec![Some(p.display().to_string().into())],
                };
                (i.name.clone(), values)
            })
            .collect()
    };
    if addressing(old) != addressing(new) {
        reasons.push("instance addresses or MACs changed".to_owned());
    }
    reasons
}

/// Rolls back unconfirmed changes by itself: a thread calling
/// [`ConfigStore::tick`] every `interval` until dropped.
#[derive(Debug)]
pub struct RollbackWatcher {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl RollbackWatcher {
    /// Starts watching `store`.
    pub fn start<A, C>(store: Arc<Mutex<ConfigStore<A, C>>>, interval: Duration) -> Self
    where
        A: Applier + Send + 'static,
        C: Clock + 'static,
    {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                store.lock().unwrap_or_else(|e| e.into_inner()).tick();
                thread::sleep(interval);
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for RollbackWatcher {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads a config file as text: a regular file of bounded size
/// ([`gazelle_config::format::read_file`]) holding UTF-8.
pub fn read_text(path: &Path) -> std::io::Result<String> {
    let bytes = gazelle_config::format::read_file(path)?;
    String::from_utf8(bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        )
    })
}

fn read_config(path: &Path) -> Result<ApplianceConfig, StoreError> {
    let text = read_text(path).map_err(|source| StoreError::Io {
        action: "reading",
        path: path.to_owned(),
        source,
    })?;
    let config = ApplianceConfig::parse(&text)?;
    config.validate()?;
    Ok(config)
}

fn create_dir(dir: &Path) -> Result<(), StoreError> {
    fs::create_dir_all(dir).map_err(|source| StoreError::Io {
        action: "creating",
        path: dir.to_owned(),
        source,
    })
}

/// Replaces `path` with `text` so that a crash leaves the old or the new
/// content: a temp file in the same directory (same filesystem, so rename
/// is atomic), written and fsynced, renamed over `path`, and the directory
/// fsynced so the rename itself is durable.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let io = |action, path: &Path| {
        let path = path.to_owned();
        move |source| StoreError::Io {
            action,
            path,
            source,
        }
    };
    let result = (|| {
        let mut file = fs::File::create(&tmp).map_err(io("creating", &tmp))?;
        file.write_all(text.as_bytes())
            .map_err(io("writing", &tmp))?;
        file.sync_all().map_err(io("syncing", &tmp))?;
        fs::rename(&tmp, path).map_err(io("renaming over", path))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing directory", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `time` as a UTC timestamp of fixed width, `20250102T030405.678Z`.
pub fn timestamp(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(UNIX_EPOCH), "19700101T000000.000Z");
        // 2000-02-29 12:34:56.789 UTC.
        let t = UNIX_EPOCH + Duration::from_millis(951_827_696_789);
        assert_eq!(timestamp(t), "20000229T123456.789Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_799);
        assert_eq!(timestamp(t), "20991231T235959.000Z");
    }
}
