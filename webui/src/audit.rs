//! The audit log: who changed what, when, from where, and how it ended.
//!
//! One JSON object per line in `<state-dir>/audit.jsonl` (mode 0600),
//! appended and flushed before the answer goes out. Config changes carry
//! the diff of the running config (unified, of the TOML), and their
//! outcome: `saved`, `pending` (with the deadline), `confirmed`,
//! `rolled_back`, `refused` or `failed`. A pending change that applianced
//! rolled back by itself is noticed by the poller and logged too.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One audited action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// When, UTC (`20250102T030405.678Z`).
    pub time: String,
    /// The same, ms since the Unix epoch.
    pub time_unix_ms: u64,
    /// The account, `token:<name>`, or `applianced` for what it did alone.
    pub who: String,
    /// The client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// What was done (`config.set`, `bond.update`, `instance.stop`,
    /// `login`, `token.create`...).
    pub action: String,
    /// What it was done to (an instance, a device, a token id...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `saved`, `pending`, `confirmed`, `rolled_back`, `refused`,
    /// `failed`, `ok`.
    pub outcome: String,
    /// The message of a refusal or failure, or the pending deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The change to the running config, as a unified diff of its TOML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

impl AuditEntry {
    /// An entry stamped now.
    pub fn new(who: &str, from: Option<IpAddr>, action: &str, outcome: &str) -> Self {
        let now = SystemTime::now();
        Self {
            time: appliance::store::timestamp(now),
            time_unix_ms: now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            who: who.to_owned(),
            from: from.map(|ip| ip.to_string()),
            action: action.to_owned(),
            target: None,
            outcome: outcome.to_owned(),
            detail: None,
            diff: None,
        }
    }
}

/// The log file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    lock: Mutex<()>,
}

impl AuditLog {
    /// The log at `<state_dir>/audit.jsonl`.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join("audit.jsonl"),
            lock: Mutex::new(()),
        }
    }

    /// Appends `entry` (and says so in the daemon's log when it cannot).
    pub fn record(&self, entry: &AuditEntry) {
        use std::os::unix::fs::OpenOptionsExt as _;
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let result = (|| -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&self.path)?;
            let mut line = serde_json::to_string(entry).map_err(std::io::Error::other)?;
            line.push('\n');
            file.write_all(line.as_bytes())?;
            file.sync_data()
        })();
        match result {
            Ok(()) => tracing::info!(
                who = %entry.who,
                action = %entry.action,
                outcome = %entry.outcome,
                "audit"
            ),
            Err(e) => tracing::error!(
                "writing the audit log {}: {e}; entry: {entry:?}",
                self.path.display()
            ),
        }
    }

    /// The last `limit` entries, oldest first.
    pub fn tail(&self, limit: usize) -> std::io::Result<Vec<AuditEntry>> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut entries = std::collections::VecDeque::with_capacity(limit.min(4096));
        for line in BufReader::new(file).lines() {
            let line = line?;
            if let Ok(entry) = serde_json::from_str::<AuditEntry>(&line) {
                if entries.len() == limit {
                    entries.pop_front();
                }
                if limit > 0 {
                    entries.push_back(entry);
                }
            }
        }
        Ok(entries.into())
    }
}

/// A unified diff of two config texts (empty when equal).
pub fn diff(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    if old == new {
        return String::new();
    }
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_name, new_name)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_append_and_the_tail_is_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path());
        for i in 0..5 {
            let mut e = AuditEntry::new("admin", None, "config.set", "saved");
            e.target = Some(i.to_string());
            log.record(&e);
        }
        let tail = log.tail(2).unwrap();
        let targets: Vec<_> = tail.iter().map(|e| e.target.clone().unwrap()).collect();
        assert_eq!(targets, ["3", "4"]);
        assert_eq!(log.tail(100).unwrap().len(), 5);
    }

    #[test]
    fn diff_is_unified() {
        let d = diff("a = 1\nb = 2\n", "a = 1\nb = 3\n", "running", "new");
        assert!(d.contains("-b = 2\n+b = 3\n"), "{d}");
        assert!(d.starts_with("--- running\n+++ new\n"), "{d}");
        assert_eq!(diff("x", "x", "a", "b"), "");
    }
}
