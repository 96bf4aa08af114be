//! The kernel settings (`/proc/sys`) the data path needs, applied so that
//! they can be taken back.
//!
//! [`required`] says what gazelle's model needs and why; [`settings`] adds
//! the operator's `[sysctl]` overrides. [`plan`] reads the current values
//! and keeps only what differs (printable as a dry run); [`apply`] writes
//! them, returning an [`Applied`] record of the previous values that
//! [`restore`] writes back. If a write fails half-way, `apply` itself puts
//! back what it had already changed.
//!
//! Keys are written as `sysctl(8)` does: dotted, with a `.` inside an
//! interface name written as `/` (`net.ipv4.conf.eth0/100.rp_filter`).
//! Every function takes the root of the tree (`/` on a real machine);
//! `/proc/sys/net` shows the network namespace of the calling thread.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Errors of reading, planning, applying and restoring sysctls.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SysctlError {
    /// A key that is not a well-formed sysctl name.
    #[error("sysctl key {key:?} is malformed: {reason}")]
    BadKey {
        /// The key as given.
        key: String,
        /// What is wrong, and what a key looks like.
        reason: &'static str,
    },

    /// The key's file does not exist or cannot be read.
    #[error("cannot read sysctl {key} ({}): {source}{}", path.display(), hint(key, source))]
    Read {
        /// The key.
        key: SysctlKey,
        /// Its file.
        path: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },

    /// Writing a value failed; the values already written were restored (or
    /// the restore failed too, as `restore` says).
    #[error("cannot set {key} = {value:?}: {source}; {restore}")]
    Write {
        /// The key.
        key: SysctlKey,
        /// The refused value.
        value: String,
        /// What the kernel said.
        source: io::Error,
        /// What happened to the keys written before this one.
        restore: String,
    },

    /// Restoring recorded values failed for some keys.
    #[error("could not restore {}", failures.join("; "))]
    Restore {
        /// One entry per key, `key = value: error`.
        failures: Vec<String>,
    },
}

fn hint(key: &SysctlKey, source: &io::Error) -> &'static str {
    let per_interface =
        key.parts.len() > 3 && key.parts[1].starts_with("ipv") && key.parts[2] == "conf";
    if source.kind() == io::ErrorKind::NotFound && per_interface {
        " (is the interface missing from this network namespace?)"
    } else {
        ""
    }
}

/// A sysctl name, like `net.ipv4.conf.all.rp_filter`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SysctlKey {
    parts: Vec<String>,
}

impl SysctlKey {
    /// The key of a per-interface setting, `net.<family>.conf.<interface>.<name>`.
    pub fn interface(family: &str, interface: &str, name: &str) -> Result<Self, SysctlError> {
        Self::from_parts([
            ("net", false),
            (family, false),
            ("conf", false),
            (interface, true),
            (name, false),
        ])
    }

    fn from_parts<'a>(
        parts: impl IntoIterator<Item = (&'a str, bool)>,
    ) -> Result<Self, SysctlError> {
        let mut checked = Vec::new();
        let mut shown = Vec::new();
        for (part, may_have_dot) in parts {
            shown.push(part.replace('.', "/"));
            let bad = part.is_empty()
                || part == "."
                || part == ".."
                || part.contains(['/', '\0'])
                || part.chars().any(char::is_whitespace)
                || (!may_have_dot && part.contains('.'));
            if bad {
                return Err(SysctlError::BadKey {
                    key: shown.join("."),
                    reason: "each dot-separated part is a non-empty name without whitespace \
                             (write a '.' inside an interface name as '/')",
                });
            }
            checked.push(part.to_owned());
        }
        if checked.len() < 2 {
            return Err(SysctlError::BadKey {
                key: shown.join("."),
                reason: "a key has at least two parts, like \"vm.nr_hugepages\"",
            });
        }
        Ok(Self { parts: checked })
    }

    /// The file holding the value under `root`.
    pub fn path(&self, root: &Path) -> PathBuf {
        let mut path = root.join("proc/sys");
        path.extend(&self.parts);
        path
    }
}

impl FromStr for SysctlKey {
    type Err = SysctlError;

    fn from_str(s: &str) -> Result<Self, SysctlError> {
        let parts: Vec<String> = s.split('.').map(|p| p.replace('/', ".")).collect();
        Self::from_parts(parts.iter().map(|p| (p.as_str(), true)))
    }
}

impl fmt::Display for SysctlKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<String> = self.parts.iter().map(|p| p.replace('.', "/")).collect();
        f.write_str(&shown.join("."))
    }
}

impl Serialize for SysctlKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SysctlKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A value wanted for a key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlSetting {
    /// The key.
    pub key: SysctlKey,
    /// The value, as written to the file.
    pub value: String,
    /// Why the appliance wants it.
    pub reason: String,
}

/// What gazelle's data path needs from the kernel. `kni_interface` is the
/// exception interface (tap or virtio-user) that shares the stack's
/// addresses, when there is one.
///
/// - `net.ipv4.conf.all.rp_filter = 0`: the kernel applies the larger of
///   `all` and the interface's own value, so the interface setting alone
///   cannot turn reverse-path filtering off.
/// - `net.ipv4.conf.<kni>.rp_filter = 0`: packets ltran hands to the kernel
///   arrive on the exception interface, while the route back to their
///   source may point elsewhere (or nowhere); strict or loose filtering
///   would drop them.
/// - `net.ipv6.conf.<kni>.accept_dad = 0`: the exception interface carries
///   the same IPv6 address as the user-space stack, which answers the
///   kernel's duplicate-address probe, so the kernel would disable the
///   address as a duplicate.
pub fn required(kni_interface: Option<&str>) -> Result<Vec<SysctlSetting>, SysctlError> {
    let setting = |key: SysctlKey, value: &str, reason: &str| SysctlSetting {
        key,
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let mut wanted = vec![setting(
        "net.ipv4.conf.all.rp_filter".parse()?,
        "0",
        "the kernel uses max(all, interface): the exception interface's 0 needs all = 0",
    )];
    if let Some(kni) = kni_interface {
        wanted.push(setting(
            SysctlKey::interface("ipv4", kni, "rp_filter")?,
            "0",
            "packets ltran passes to the kernel arrive on the exception interface",
        ));
        wanted.push(setting(
            SysctlKey::interface("ipv6", kni, "accept_dad")?,
            "0",
            "the exception interface shares its IPv6 address with the user-space stack",
        ));
    }
    Ok(wanted)
}

/// [`required`] plus the operator's overrides (`[sysctl]` in the appliance
/// config): an override of a required key replaces its value, others are
/// added, in key order.
pub fn settings(
    kni_interface: Option<&str>,
    overrides: &BTreeMap<String, String>,
) -> Result<Vec<SysctlSetting>, SysctlError> {
    let mut wanted = required(kni_interface)?;
    for (key, value) in overrides {
        let key: SysctlKey = key.parse()?;
        match wanted.iter_mut().find(|s| s.key == key) {
            Some(existing) => {
                existing.value.clone_from(value);
                existing.reason = "set in the appliance config (overrides the default)".into();
            }
            None => wanted.push(SysctlSetting {
                key,
                value: value.clone(),
                reason: "set in the appliance config".into(),
            }),
        }
    }
    Ok(wanted)
}

/// Reads one value, with whitespace runs (the tabs of multi-value keys)
/// turned into single spaces.
pub fn read(root: &Path, key: &SysctlKey) -> Result<String, SysctlError> {
    let path = key.path(root);
    fs::read_to_string(&path)
        .map(|text| normalize(&text))
        .map_err(|source| SysctlError::Read {
            key: key.clone(),
            path,
            source,
        })
}

fn normalize(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One key to change: its value now and the one wanted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysctlChange {
    /// The key.
    pub key: SysctlKey,
    /// Its value before the change (what a restore writes back).
    pub previous: String,
    /// The value written.
    pub value: String,
    /// Why.
    pub reason: String,
}

/// What [`apply`] would write. `Display` prints it as a dry run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlPlan {
    /// Keys whose value differs from the wanted one, in order.
    pub changes: Vec<SysctlChange>,
    /// Keys that already have the wanted value.
    pub unchanged: Vec<SysctlKey>,
}

impl fmt::Display for SysctlPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changes.is_empty() {
            writeln!(f, "sysctl: nothing to change")?;
        }
        for c in &self.changes {
            writeln!(
                f,
                "sysctl {} = {} (now {}): {}",
                c.key, c.value, c.previous, c.reason
            )?;
        }
        for key in &self.unchanged {
            writeln!(f, "sysctl {key}: already set")?;
        }
        Ok(())
    }
}

/// Reads the current value of every wanted key and keeps the ones that
/// differ. Fails, naming the key, if any cannot be read, so that nothing
/// is applied for a config naming an interface that is not there.
pub fn plan(root: &Path, wanted: &[SysctlSetting]) -> Result<SysctlPlan, SysctlError> {
    let mut plan = SysctlPlan {
        changes: Vec::new(),
        unchanged: Vec::new(),
    };
    for setting in wanted {
        let previous = read(root, &setting.key)?;
        if previous == normalize(&setting.value) {
            plan.unchanged.push(setting.key.clone());
        } else {
            plan.changes.push(SysctlChange {
                key: setting.key.clone(),
                previous,
                value: setting.value.clone(),
                reason: setting.reason.clone(),
            });
        }
    }
    Ok(plan)
}

/// The changes [`apply`] made, with the previous values: what [`restore`]
/// needs (serializable, so a daemon can keep it across restarts).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The changes, in the order they were made.
    pub changes: Vec<SysctlChange>,
}

/// Writes every change of `plan` in order. If one fails, the keys already
/// written get their previous values back before the error is returned.
pub fn apply(root: &Path, plan: &SysctlPlan) -> Result<Applied, SysctlError> {
    let mut applied = Applied::default();
    for change in &plan.changes {
        if let Err(source) = write(root, &change.key, &change.value) {
            let restore = match restore(root, &applied) {
                Ok(()) if applied.changes.is_empty() => "nothing had been changed".to_owned(),
                Ok(()) => format!("restored {}", keys(&applied)),
                Err(e) => format!("RESTORE FAILED: {e}"),
            };
            return Err(SysctlError::Write {
                key: change.key.clone(),
                value: change.value.clone(),
                source,
                restore,
            });
        }
        tracing::info!(key = %change.key, value = %change.value, previous = %change.previous, "sysctl set");
        applied.changes.push(change.clone());
    }
    Ok(applied)
}

fn keys(applied: &Applied) -> String {
    applied
        .changes
        .iter()
        .map(|c| format!("{} = {}", c.key, c.previous))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes back the previous values of `applied`, newest first. Tries every
/// key even if one fails, and reports all failures.
pub fn restore(root: &Path, applied: &Applied) -> Result<(), SysctlError> {
    let failures: Vec<String> = applied
        .changes
        .iter()
        .rev()
        .filter_map(|c| {
            write(root, &c.key, &c.previous)
                .err()
                .map(|e| format!("{} = {}: {e}", c.key, c.previous))
        })
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(SysctlError::Restore { failures })
    }
}

/// Writes a value; the file must exist (sysctls are never created).
fn write(root: &Path, key: &SysctlKey, value: &str) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(key.path(root))?;
    file.write_all(format!("{value}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_like_sysctl() {
        let key: SysctlKey = "net.ipv4.conf.eth0/100.rp_filter".parse().unwrap();
        assert_eq!(key.to_string(), "net.ipv4.conf.eth0/100.rp_filter");
        assert_eq!(
            key.path(Path::new("/")),
            Path::new("/proc/sys/net/ipv4/conf/eth0.100/rp_filter")
        );
        assert_eq!(
            SysctlKey::interface("ipv4", "eth0.100", "rp_filter").unwrap(),
            key
        );
        for bad in [
            "",
            "vm",
            "net..ipv4",
            "net.ipv4.conf. x.rp_filter",
            "net/../x.y",
        ] {
            let err = bad.parse::<SysctlKey>().unwrap_err();
            assert!(matches!(err, SysctlError::BadKey { .. }), "{bad}: {err}");
        }
        assert!(SysctlKey::interface("ipv4", "../..", "rp_filter").is_err());
        assert!(SysctlKey::interface("ipv4", "a/b", "rp_filter").is_err());
    }

    #[test]
    fn overrides_replace_or_add() {
        let overrides = BTreeMap::from([
            ("net.ipv4.conf.all.rp_filter".to_owned(), "2".to_owned()),
            ("net.core.somaxconn".to_owned(), "4096".to_owned()),
        ]);
        let wanted = settings(Some("kni0"), &overrides).unwrap();
        let shown: Vec<String> = wanted
            .iter()
            .map(|s| format!("{}={}", s.key, s.value))
            .collect();
        assert_eq!(
            shown,
            [
                "net.ipv4.conf.all.rp_filter=2",
                "net.ipv4.conf.kni0.rp_filter=0",
                "net.ipv6.conf.kni0.accept_dad=0",
                "net.core.somaxconn=4096"
            ]
        );
        let bad = BTreeMap::from([("net..x".to_owned(), "1".to_owned())]);
        assert!(settings(None, &bad).is_err());
    }
}
