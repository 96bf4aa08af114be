//! The config store on real files in tempdirs: atomic saves, history,
//! validation before anything is touched, rollback of failed applies, and
//! confirm-or-rollback driven by a hand-moved clock, plus one run with a
//! real short timeout that checks only the resulting state.

use std::fs;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use appliance::config::{ApplianceConfig, NicEntry, NicRole};
use appliance::nic::DpdkDriver;
use appliance::store::{
    Applier, ChangeOutcome, ConfigStore, ManualClock, RollbackWatcher, StoreError, StoreOptions,
    SystemClock, TickOutcome, HISTORY_DIR, SAVED_FILE,
};

/// The daemon's side as seen from the store: records every (old, new) it
/// is asked to apply and fails when told to.
#[derive(Debug, Clone, Default)]
struct Recorder {
    calls: Arc<Mutex<Vec<(ApplianceConfig, ApplianceConfig)>>>,
    fail: Arc<Mutex<bool>>,
}

impl Recorder {
    fn calls(&self) -> Vec<(ApplianceConfig, ApplianceConfig)> {
        self.calls.lock().unwrap().clone()
    }
}

impl Applier for Recorder {
    fn apply(&mut self, old: &ApplianceConfig, new: &ApplianceConfig) -> anyhow::Result<()> {
        self.calls.lock().unwrap().push((old.clone(), new.clone()));
        if *self.fail.lock().unwrap() {
            anyhow::bail!("binding 0000:00:04.0 failed");
        }
        Ok(())
    }
}

const START: Duration = Duration::from_secs(1_750_000_000);
const TIMEOUT: Duration = Duration::from_secs(120);

fn store(
    keep: usize,
) -> (
    tempfile::TempDir,
    ConfigStore<Recorder, ManualClock>,
    ManualClock,
    Recorder,
) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(UNIX_EPOCH + START);
    let recorder = Recorder::default();
    let options = StoreOptions {
        keep,
        confirm_timeout: TIMEOUT,
    };
    let store = ConfigStore::open(
        dir.path().join("gazelle"),
        options,
        clock.clone(),
        recorder.clone(),
    )
    .unwrap();
    (dir, store, clock, recorder)
}

/// A change that cannot cut anyone off: a restart bound.
fn safe_change(base: &ApplianceConfig, max_backoff_ms: u64) -> ApplianceConfig {
    let mut new = base.clone();
    new.instances[0].restart.max_backoff_ms = max_backoff_ms;
    new
}

/// A change of the data NICs' driver: needs confirmation.
fn risky_change(base: &ApplianceConfig) -> ApplianceConfig {
    let mut new = base.clone();
    new.nics[2].driver = Some(DpdkDriver::VfioPci);
    new.nics[2].allow_noiommu = true;
    new
}

#[test]
fn a_safe_change_is_applied_and_saved_atomically() {
    let (dir, mut store, _clock, recorder) = store(5);
    let old = store.running().clone();
    assert_eq!(old, ApplianceConfig::image_default());
    assert_eq!(store.saved().unwrap(), None);
    let new = safe_change(&old, 60_000);
    let ChangeOutcome::Saved(version) = store.change(new.clone()).unwrap() else {
        panic!("a restart bound needs no confirmation");
    };
    assert_eq!(recorder.calls(), [(old, new.clone())]);
    assert_eq!(store.running(), &new);
    assert_eq!(store.saved().unwrap().as_ref(), Some(&new));
    assert_eq!(version.id, "20250615T150640.000Z");
    assert_eq!(store.history().unwrap(), std::slice::from_ref(&version));
    assert_eq!(store.read_version(&version.id).unwrap(), new);
    // Only the two files: no temp file is left behind.
    let root = dir.path().join("gazelle");
    let mut names: Vec<String> = fs::read_dir(&root)
        .unwrap()
        .chain(fs::read_dir(root.join(HISTORY_DIR)).unwrap())
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "appliance-20250615T150640.000Z.toml",
            "appliance.toml",
            "history"
        ]
    );

    // Reopened (a daemon restart), the store runs what was saved.
    let reopened = ConfigStore::open(
        &root,
        StoreOptions::default(),
        ManualClock::new(UNIX_EPOCH),
        Recorder::default(),
    )
    .unwrap();
    assert_eq!(reopened.running(), &new);
}

#[test]
fn an_invalid_change_touches_nothing() {
    let (dir, mut store, _clock, recorder) = store(5);
    let mut new = store.running().clone();
    new.nics.push(NicEntry {
        pci: None,
        mac: new.nics[0].mac,
        role: NicRole::Data,
        driver: None,
        allow_noiommu: false,
    });
    let err = store.change(new).unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("nics[3].mac"), "{err}");
    assert!(recorder.calls().is_empty());
    assert_eq!(store.running(), &ApplianceConfig::image_default());
    assert!(!dir.path().join("gazelle").join(SAVED_FILE).exists());
    assert!(store.history().unwrap().is_empty());
}

#[test]
fn a_failed_apply_is_rolled_back_at_once() {
    let (_dir, mut store, _clock, recorder) = store(5);
    let old = store.running().clone();
    *recorder.fail.lock().unwrap() = true;
    let new = risky_change(&old);
    let err = store.change(new.clone()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "applying the change failed: binding 0000:00:04.0 failed; rolled back: FAILED: binding 0000:00:04.0 failed"
    );
    // Applied forward, then backward; nothing pending, nothing saved.
    assert_eq!(
        recorder.calls(),
        [(old.clone(), new.clone()), (new, old.clone())]
    );
    assert_eq!(store.running(), &old);
    assert!(store.pending().is_none());
    assert_eq!(store.saved().unwrap(), None);
}

#[test]
fn an_unconfirmed_risky_change_reverts_at_its_deadline() {
    let (_dir, mut store, clock, recorder) = store(5);
    let base = safe_change(store.running(), 45_000);
    store.change(base.clone()).unwrap();
    let new = risky_change(&base);
    let ChangeOutcome::Pending { deadline, reasons } = store.change(new.clone()).unwrap() else {
        panic!("a NIC driver change must wait for confirmation");
    };
    assert_eq!(deadline, UNIX_EPOCH + START + TIMEOUT);
    assert_eq!(reasons, ["nics changed (roles, drivers or which NICs)"]);
    assert_eq!(store.running(), &new);
    assert_eq!(
        store.saved().unwrap().as_ref(),
        Some(&base),
        "pending changes are not saved"
    );
    // Another change waits for this one.
    assert!(matches!(
        store.change(base.clone()),
        Err(StoreError::Pending { .. })
    ));

    clock.advance(TIMEOUT);
    assert_eq!(
        store.tick(),
        TickOutcome::Idle,
        "the deadline itself is still in time"
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        store.tick(),
        TickOutcome::RolledBack {
            rollback: "ok".into()
        }
    );
    assert_eq!(store.running(), &base);
    assert!(store.pending().is_none());
    let calls = recorder.calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[1], (base.clone(), new.clone()));
    assert_eq!(calls[2], (new, base.clone()));
    assert_eq!(store.saved().unwrap().as_ref(), Some(&base));
    assert_eq!(store.history().unwrap().len(), 1);
}

#[test]
fn a_confirmed_change_is_saved_and_a_late_one_is_not() {
    let (_dir, mut store, clock, _recorder) = store(5);
    let base = store.running().clone();
    let new = risky_change(&base);
    store.change(new.clone()).unwrap();
    clock.advance(TIMEOUT - Duration::from_secs(1));
    let version = store.confirm().unwrap();
    assert_eq!(store.saved().unwrap().as_ref(), Some(&new));
    assert_eq!(store.read_version(&version.id).unwrap(), new);
    assert!(matches!(store.confirm(), Err(StoreError::NothingPending)));

    // Back to the original, confirmed too late.
    store.change(base.clone()).unwrap();
    clock.advance(TIMEOUT + Duration::from_secs(1));
    let err = store.confirm().unwrap_err();
    assert!(matches!(err, StoreError::ConfirmTooLate { .. }), "{err}");
    assert!(err.to_string().contains("rolled back (ok)"), "{err}");
    assert_eq!(store.running(), &new);
    assert_eq!(store.saved().unwrap().as_ref(), Some(&new));

    // Cancelled by the operator.
    store.change(base).unwrap();
    assert_eq!(store.cancel().unwrap(), "ok");
    assert_eq!(store.running(), &new);
}

#[test]
fn history_keeps_the_newest_versions_and_restores_them() {
    let (_dir, mut store, clock, _recorder) = store(3);
    let base = store.running().clone();
    let mut ids = Vec::new();
    for i in 1..=5u64 {
        clock.advance(Duration::from_secs(60));
        let ChangeOutcome::Saved(v) = store.change(safe_change(&base, 30_000 + i)).unwrap() else {
            panic!("safe change");
        };
        ids.push(v.id);
    }
    let kept: Vec<String> = store.history().unwrap().into_iter().map(|v| v.id).collect();
    assert_eq!(kept, [ids[4].clone(), ids[3].clone(), ids[2].clone()]);
    assert_eq!(
        store.read_version(&ids[2]).unwrap(),
        safe_change(&base, 30_003)
    );
    let err = store.read_version(&ids[0]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("no saved version {:?}", ids[0])),
        "{err}"
    );

    clock.advance(Duration::from_secs(60));
    let ChangeOutcome::Saved(restored) = store.restore(&ids[2]).unwrap() else {
        panic!("restoring a safe version");
    };
    assert_eq!(store.running(), &safe_change(&base, 30_003));
    assert_eq!(store.history().unwrap()[0].id, restored.id);
    assert_eq!(store.history().unwrap().len(), 3);

    // Two saves in the same millisecond get distinct ids, in order.
    clock.advance(Duration::from_secs(60));
    store.change(safe_change(&base, 40_000)).unwrap();
    store.change(safe_change(&base, 40_001)).unwrap();
    let newest = store.history().unwrap();
    assert_eq!(newest[0].id, format!("{}-001", newest[1].id));
    assert_eq!(
        store.read_version(&newest[0].id).unwrap(),
        safe_change(&base, 40_001)
    );
}

#[test]
fn a_real_timeout_rolls_back_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::default();
    let options = StoreOptions {
        keep: 5,
        confirm_timeout: Duration::from_millis(200),
    };
    let store = ConfigStore::open(dir.path(), options, SystemClock, recorder.clone()).unwrap();
    let base = store.running().clone();
    let store = Arc::new(Mutex::new(store));
    let _watcher = RollbackWatcher::start(Arc::clone(&store), Duration::from_millis(10));
    let new = risky_change(&base);
    let outcome = store.lock().unwrap().change(new.clone()).unwrap();
    assert!(matches!(outcome, ChangeOutcome::Pending { .. }));
    // Wait for the state, however long the machine takes (bounded only so a
    // broken watcher fails instead of hanging).
    let give_up = SystemTime::now() + Duration::from_secs(60);
    while store.lock().unwrap().pending().is_some() {
        assert!(
            SystemTime::now() < give_up,
            "the pending change was never rolled back"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let store = store.lock().unwrap();
    assert_eq!(store.running(), &base);
    assert_eq!(recorder.calls(), [(base.clone(), new.clone()), (new, base)]);
    assert_eq!(store.saved().unwrap(), None);
}
