//! sysctl planning, applying and restoring on the real /proc/sys of a
//! network namespace this test creates (with its own veth as the exception
//! interface) and deletes afterwards. The code under test runs on a thread
//! that has joined that namespace; the host's own values are checked to
//! stay as they were. Needs root; fails loudly without it.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use appliance::sysctl::{self, Applied, SysctlError, SysctlPlan};
use support::Netns;

/// A fresh network namespace holding a veth `kni0` (peer `kni0p`),
/// deleted on drop.
fn namespace_with_kni() -> Netns {
    let ns = Netns::new("apsys");
    ns.ip(&[
        "link", "add", "kni0", "type", "veth", "peer", "name", "kni0p",
    ]);
    ns
}

const HOST_KEYS: [&str; 2] = [
    "/proc/sys/net/ipv4/conf/all/rp_filter",
    "/proc/sys/net/ipv4/conf/default/rp_filter",
];

fn host_values() -> Vec<String> {
    HOST_KEYS
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

const ALL: &str = "net.ipv4.conf.all.rp_filter";
const KNI: &str = "net.ipv4.conf.kni0.rp_filter";
const DAD: &str = "net.ipv6.conf.kni0.accept_dad";

#[test]
fn apply_and_restore_in_a_namespace() {
    let host_before = host_values();
    let ns = namespace_with_kni();
    ns.set(ALL, "1");
    ns.set(KNI, "2");
    ns.set(DAD, "1");
    let root = Path::new("/");
    let wanted = sysctl::required(Some("kni0")).unwrap();

    let (plan, applied): (SysctlPlan, Applied) = ns.run(|| {
        let plan = sysctl::plan(root, &wanted).unwrap();
        let applied = sysctl::apply(root, &plan).unwrap();
        (plan, applied)
    });
    let changed: Vec<(String, String, String)> = plan
        .changes
        .iter()
        .map(|c| (c.key.to_string(), c.previous.clone(), c.value.clone()))
        .collect();
    let expected = [(ALL, "1", "0"), (KNI, "2", "0"), (DAD, "1", "0")]
        .map(|(k, p, v)| (k.to_owned(), p.to_owned(), v.to_owned()));
    assert_eq!(changed, expected);
    assert!(
        plan.to_string()
            .contains("sysctl net.ipv4.conf.kni0.rp_filter = 0 (now 2)"),
        "{plan}"
    );
    assert_eq!(applied.changes, plan.changes);
    assert_eq!(
        (
            ns.get(ALL).as_str(),
            ns.get(KNI).as_str(),
            ns.get(DAD).as_str()
        ),
        ("0", "0", "0")
    );

    // Planned again: nothing left to do.
    let again = ns.run(|| sysctl::plan(root, &wanted).unwrap());
    assert!(
        again.changes.is_empty() && again.unchanged.len() == 3,
        "{again}"
    );

    // The record survives serialization (the daemon keeps it on disk).
    let record = serde_json::to_string(&applied).unwrap();
    let applied: Applied = serde_json::from_str(&record).unwrap();
    ns.run(|| sysctl::restore(root, &applied)).unwrap();
    assert_eq!(
        (
            ns.get(ALL).as_str(),
            ns.get(KNI).as_str(),
            ns.get(DAD).as_str()
        ),
        ("1", "2", "1")
    );
    assert_eq!(
        host_values(),
        host_before,
        "the host's own rp_filter must not change"
    );
}

#[test]
fn a_failed_write_puts_back_what_was_written() {
    let host_before = host_values();
    let ns = namespace_with_kni();
    ns.set(ALL, "1");
    ns.set(KNI, "2");
    let root = Path::new("/");
    // The kernel refuses a non-number for rp_filter (EINVAL) after the
    // first key has been written.
    let overrides = BTreeMap::from([(KNI.to_owned(), "loose".to_owned())]);
    let wanted = sysctl::settings(Some("kni0"), &overrides).unwrap();
    let result = ns.run(|| {
        let plan = sysctl::plan(root, &wanted).unwrap();
        sysctl::apply(root, &plan)
    });
    let err = result.unwrap_err();
    assert!(matches!(err, SysctlError::Write { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("cannot set {KNI} = \"loose\"")),
        "{text}"
    );
    assert!(text.contains(&format!("restored {ALL} = 1")), "{text}");
    assert_eq!(ns.get(ALL), "1");
    assert_eq!(ns.get(KNI), "2");
    assert_eq!(host_values(), host_before);
}

#[test]
fn a_missing_interface_is_named_before_anything_changes() {
    let ns = namespace_with_kni();
    ns.set(ALL, "1");
    let wanted = sysctl::required(Some("nokni0")).unwrap();
    let err = ns
        .run(|| sysctl::plan(Path::new("/"), &wanted))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("cannot read sysctl net.ipv4.conf.nokni0.rp_filter"),
        "{text}"
    );
    assert!(text.contains("is the interface missing"), "{text}");
    assert_eq!(ns.get(ALL), "1");
}

#[test]
fn reads_a_tree_under_another_root() {
    // The same code on a copy of this host's values under a tempdir root.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("proc/sys/net/ipv4/conf/all");
    std::fs::create_dir_all(&conf).unwrap();
    let host = std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/rp_filter").unwrap();
    std::fs::write(conf.join("rp_filter"), &host).unwrap();
    let wanted = sysctl::required(None).unwrap();
    let plan = sysctl::plan(dir.path(), &wanted).unwrap();
    if host.trim() == "0" {
        assert!(plan.changes.is_empty());
    } else {
        let applied = sysctl::apply(dir.path(), &plan).unwrap();
        assert_eq!(
            std::fs::read_to_string(conf.join("rp_filter")).unwrap(),
            "0\n"
        );
        sysctl::restore(dir.path(), &applied).unwrap();
        assert_eq!(
            std::fs::read_to_string(conf.join("rp_filter"))
                .unwrap()
                .trim(),
            host.trim()
        );
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/rp_filter").unwrap(),
        host
    );
}
