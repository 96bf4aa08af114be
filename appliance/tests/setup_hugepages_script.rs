//! `scripts/setup-hugepages.sh` on the real host: real hugepage reservations
//! (a few 2 MiB pages above what the host has, one 1 GiB page) and real
//! hugetlbfs mounts in temporary directories, checked against the kernel's
//! own counters and `/proc/self/mountinfo`. Cases this host cannot produce
//! (no 1 GiB support, THP `enabled=always`) run against a captured copy of
//! its sysfs/procfs tree through `HUGEPAGES_ROOT`.
//!
//! Needs root; fails loudly without it. Every test that changes the host
//! holds a [`Host`] guard: the pools are put back to their starting counts
//! (never below) and the temporary mounts are removed, on panic too.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

mod common;

use appliance::hugepages::{self, PageSize, Pool};
use common::{mountinfo, mounts_below, Host};
use tempfile::TempDir;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/setup-hugepages.sh");
const GLOBAL_2M: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";
const NODE0_2M: &str = "/sys/devices/system/node/node0/hugepages/hugepages-2048kB";
const NODE0_1G: &str = "/sys/devices/system/node/node0/hugepages/hugepages-1048576kB";

/// The filesystem type and options of the mounts at `path`.
fn mounted_at(path: &Path) -> Vec<(String, String)> {
    mountinfo()
        .into_iter()
        .filter(|(p, _, _)| p == path)
        .map(|(_, fstype, options)| (fstype, options))
        .collect()
}

fn count(dir: &str, file: &str) -> u64 {
    let text = fs::read_to_string(Path::new(dir).join(file)).unwrap();
    text.trim().parse().unwrap()
}

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn script(args: &[&str]) -> Run {
    script_with(Command::new(SCRIPT).args(args))
}

fn script_in(root: &Path, args: &[&str]) -> Run {
    script_with(Command::new(SCRIPT).args(args).env("HUGEPAGES_ROOT", root))
}

fn script_with(command: &mut Command) -> Run {
    let out = command.output().expect("run setup-hugepages.sh");
    Run {
        code: out.status.code().expect("the script exits, not killed"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// A copy of the host's hugepage-related sysfs/procfs files.
fn captured_tree() -> TempDir {
    let tree = tempfile::tempdir().unwrap();
    hugepages::capture(Path::new("/"), tree.path()).unwrap();
    tree
}

#[track_caller]
fn assert_fails(run: &Run, code: i32, words: &[&str]) {
    assert_eq!(run.code, code, "{run:#?}");
    for word in words {
        assert!(run.stderr.contains(word), "stderr lacks {word:?}: {run:#?}");
    }
}

#[test]
fn help_covers_the_options_exit_codes_and_thp_rule() {
    let run = script(&["--help"]);
    assert_eq!(run.code, 0, "{run:#?}");
    for word in [
        "--pages-2m",
        "--pages-1g",
        "--node",
        "--ltran-dir",
        "--lstack-dir",
        "--no-mount",
        "--status",
        "--json",
        "--dry-run",
        "--exact",
        "--allow-thp",
        "enabled=always",
        "Exit codes",
        "HUGEPAGES_ROOT",
    ] {
        assert!(run.stdout.contains(word), "--help does not mention {word}");
    }
    let bare = script(&[]);
    assert_eq!(bare.code, 2, "no arguments is a usage error: {bare:#?}");
    assert!(bare.stderr.contains("Usage:"));
    assert_fails(
        &script(&["--pages-2m", "many"]),
        2,
        &["'many' is not a page count"],
    );
    assert_fails(&script(&["--json"]), 2, &["--json goes with --status"]);
    assert_fails(
        &script(&["--ltran-dir", "relative", "--dry-run"]),
        2,
        &["mount point relative for ltran must be an absolute path"],
    );
}

#[test]
fn dry_run_prints_every_action_and_touches_nothing() {
    let host = Host::new();
    let start = count(GLOBAL_2M, "nr_hugepages");
    let (ltran, lstack) = (host.path("ltran"), host.path("lstack"));
    let want = (start + 8).to_string();
    let run = script(&[
        "--dry-run",
        "--pages-2m",
        &want,
        "--ltran-dir",
        ltran.to_str().unwrap(),
        "--lstack-dir",
        lstack.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{run:#?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!("setup-hugepages: would set 2M pages machine-wide from {start} to {want}"),
            format!(
                "setup-hugepages: would create directory {} (mode 0700)",
                ltran.display()
            ),
            format!(
                "setup-hugepages: would create directory {} (mode 0700)",
                lstack.display()
            ),
            format!(
                "setup-hugepages: would mount hugetlbfs on {} for ltran (pagesize=2M,mode=0700)",
                ltran.display()
            ),
            format!(
                "setup-hugepages: would mount hugetlbfs on {} for lstack (pagesize=2M,mode=0700)",
                lstack.display()
            ),
            "setup-hugepages: dry run: nothing was changed".to_owned(),
        ]
    );
    assert_eq!(count(GLOBAL_2M, "nr_hugepages"), start);
    assert!(
        !ltran.exists() && !lstack.exists(),
        "a dry run created a directory"
    );
    assert!(mounts_below(host.dir()).is_empty());
}

#[test]
fn reserves_and_mounts_then_a_second_run_changes_nothing() {
    let host = Host::new();
    let start = host.start(Pool {
        node: None,
        size: PageSize::SIZE_2M,
    });
    assert_eq!(count(GLOBAL_2M, "nr_hugepages"), start);
    let (ltran, lstack) = (host.path("ltran"), host.path("nested/lstack"));
    let want = (start + 8).to_string();
    let args = [
        "--pages-2m",
        &want,
        "--ltran-dir",
        ltran.to_str().unwrap(),
        "--lstack-dir",
        lstack.to_str().unwrap(),
    ];
    let first = script(&args);
    assert_eq!(first.code, 0, "{first:#?}");
    assert_eq!(count(GLOBAL_2M, "nr_hugepages"), start + 8);
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap();
    assert!(
        meminfo.contains(&format!("HugePages_Total: {:>7}", start + 8)),
        "/proc/meminfo disagrees:\n{meminfo}"
    );
    for dir in [&ltran, &lstack] {
        let mounts = mounted_at(dir);
        assert_eq!(mounts.len(), 1, "{}: {mounts:?}", dir.display());
        let (fstype, options) = &mounts[0];
        assert_eq!(fstype, "hugetlbfs");
        assert!(
            options.contains("pagesize=2M") && options.contains("mode=700"),
            "{options}"
        );
        let mode = fs::metadata(dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700, "{}", dir.display());
    }
    assert!(first.stdout.contains("setup-hugepages: done"), "{first:#?}");

    let second = script(&args);
    assert_eq!(second.code, 0, "{second:#?}");
    assert!(
        second
            .stdout
            .contains("nothing to change: the machine already matches the request"),
        "{second:#?}"
    );
    assert!(second
        .stdout
        .contains(&format!("2M pages machine-wide: already {want}")));
    assert_eq!(count(GLOBAL_2M, "nr_hugepages"), start + 8);
    assert_eq!(mounted_at(&ltran).len(), 1, "mounted twice");
    assert_eq!(mounted_at(&lstack).len(), 1, "mounted twice");

    // Asking for fewer keeps the pool unless --exact.
    let fewer = (start + 4).to_string();
    let kept = script(&["--pages-2m", &fewer, "--no-mount"]);
    assert_eq!(kept.code, 0, "{kept:#?}");
    assert!(
        kept.stdout.contains("kept (exact mode would lower it)"),
        "{kept:#?}"
    );
    assert_eq!(count(GLOBAL_2M, "nr_hugepages"), start + 8);
    let exact = script(&["--pages-2m", &fewer, "--no-mount", "--exact"]);
    assert_eq!(exact.code, 0, "{exact:#?}");
    assert_eq!(count(GLOBAL_2M, "nr_hugepages"), start + 4);

    drop(host);
    assert_eq!(
        count(GLOBAL_2M, "nr_hugepages"),
        start,
        "the guard put the pool back"
    );
    assert!(mounted_at(&ltran).is_empty() && mounted_at(&lstack).is_empty());
}

#[test]
fn reserves_per_node() {
    let host = Host::new();
    let start_node = host.start(Pool {
        node: Some(0),
        size: PageSize::SIZE_2M,
    });
    let start_all = host.start(Pool {
        node: None,
        size: PageSize::SIZE_2M,
    });
    let want = (start_node + 6).to_string();
    let run = script(&["--pages-2m", &want, "--node", "0", "--no-mount"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stdout.contains(&format!(
        "set 2M pages on node 0 from {start_node} to {want}"
    )));
    assert_eq!(count(NODE0_2M, "nr_hugepages"), start_node + 6);
    assert_eq!(count(GLOBAL_2M, "nr_hugepages"), start_all + 6);
    let again = script(&["--pages-2m", &want, "--node", "all", "--no-mount"]);
    assert_eq!(again.code, 0, "{again:#?}");
    assert!(again.stdout.contains("nothing to change"), "{again:#?}");
}

/// One 1 GiB page on node 0 and mounts of that size, or, if the kernel
/// cannot give one, the shortfall error with the pool put back.
#[test]
fn one_gigabyte_page_or_the_shortfall() {
    let host = Host::new();
    let start = host.start(Pool {
        node: Some(0),
        size: PageSize::SIZE_1G,
    });
    let (ltran, lstack) = (host.path("ltran-1G"), host.path("lstack-1G"));
    let want = (start + 1).to_string();
    let run = script(&[
        "--pages-1g",
        &want,
        "--node",
        "0",
        "--ltran-dir",
        ltran.to_str().unwrap(),
        "--lstack-dir",
        lstack.to_str().unwrap(),
    ]);
    if run.code == 0 {
        assert_eq!(count(NODE0_1G, "nr_hugepages"), start + 1);
        for dir in [&ltran, &lstack] {
            let mounts = mounted_at(dir);
            assert_eq!(mounts.len(), 1, "{mounts:?}");
            assert!(mounts[0].1.contains("pagesize=1024M"), "{mounts:?}");
        }
    } else {
        eprintln!("this host could not give a 1 GiB page: checking the shortfall error instead");
        assert_fails(
            &run,
            8,
            &[
                &format!("asked the kernel for {want} 1G pages on node 0 and it has"),
                &format!("put back: 1G pages on node 0 to {start}"),
            ],
        );
        assert_eq!(count(NODE0_1G, "nr_hugepages"), start);
        assert!(!ltran.exists() && mounts_below(host.dir()).is_empty());
    }
}

#[test]
fn status_agrees_with_the_kernel() {
    let _host = Host::new();
    let json = script(&["--status", "--json"]);
    assert_eq!(json.code, 0, "{json:#?}");
    let status: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let pools = status["pools"].as_array().unwrap();
    let global = pools
        .iter()
        .find(|p| p["node"].is_null() && p["size_kb"] == 2048)
        .unwrap();
    // Only totals: other programs' DPDK tests take and free pages meanwhile.
    assert_eq!(global["total"], count(GLOBAL_2M, "nr_hugepages"));
    assert_eq!(global["surplus"], count(GLOBAL_2M, "surplus_hugepages"));
    let node0 = pools
        .iter()
        .find(|p| p["node"] == 0 && p["size"] == "2M")
        .unwrap();
    assert_eq!(node0["total"], count(NODE0_2M, "nr_hugepages"));
    assert!(
        node0["reserved"].is_null(),
        "the kernel has no per-node count"
    );
    let sizes: Vec<u64> = fs::read_dir("/sys/kernel/mm/hugepages")
        .unwrap()
        .map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.trim_start_matches("hugepages-")
                .trim_end_matches("kB")
                .parse()
                .unwrap()
        })
        .collect();
    let mut listed: Vec<u64> =
        serde_json::from_value(status["supported_sizes_kb"].clone()).unwrap();
    listed.sort_unstable();
    let mut sizes = sizes;
    sizes.sort_unstable();
    assert_eq!(listed, sizes);
    let hugetlbfs: Vec<String> = mountinfo()
        .into_iter()
        .filter(|(_, fstype, _)| fstype == "hugetlbfs")
        .map(|(path, _, _)| path.to_string_lossy().into_owned())
        .collect();
    let shown: Vec<&str> = status["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["path"].as_str().unwrap())
        .collect();
    assert_eq!(shown, hugetlbfs);
    let enabled = fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap();
    assert!(enabled.contains(&format!("[{}]", status["thp"]["enabled"].as_str().unwrap())));

    let table = script(&["--status"]);
    assert_eq!(table.code, 0, "{table:#?}");
    let row = table
        .stdout
        .lines()
        .find(|l| l.starts_with("all   2M"))
        .expect("a machine-wide 2M row");
    let total: u64 = row.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert_eq!(total, count(GLOBAL_2M, "nr_hugepages"));
    assert!(table.stdout.contains("NODE  SIZE"), "{table:#?}");
}

#[test]
fn not_root_is_refused_before_any_change() {
    let host = Host::new();
    let start = host.start(Pool {
        node: None,
        size: PageSize::SIZE_2M,
    });
    let want = (start + 2).to_string();
    let run = script_with(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", SCRIPT])
            .args(["--pages-2m", &want, "--no-mount"]),
    );
    assert_fails(
        &run,
        3,
        &[
            "needs root (running as uid 65534)",
            "a dry run need no root",
        ],
    );
    assert_eq!(count(GLOBAL_2M, "nr_hugepages"), start);
}

#[test]
fn unsupported_page_size_lists_the_supported_ones() {
    let _host = Host::new();
    assert_fails(
        &script(&["--pages", "4M=1", "--no-mount"]),
        4,
        &["page size 4M is not supported by this kernel/CPU (supported: 2M, 1G;"],
    );
    // A CPU without 1 GiB pages: the kernel has no such pool.
    let tree = captured_tree();
    fs::remove_dir_all(
        tree.path()
            .join("sys/kernel/mm/hugepages/hugepages-1048576kB"),
    )
    .unwrap();
    assert_fails(
        &script_in(tree.path(), &["--pages-1g", "1", "--no-mount"]),
        4,
        &["page size 1G is not supported by this kernel/CPU (supported: 2M; see "],
    );
}

#[test]
fn not_enough_memory_says_how_much_is_free_and_needed() {
    let host = Host::new();
    let start = host.start(Pool {
        node: None,
        size: PageSize::SIZE_2M,
    });
    let available = fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap();
    // Twice what is available: far beyond any fluctuation.
    let more = available / 1024;
    let want = (start + more).to_string();
    let run = script(&["--pages-2m", &want, "--no-mount"]);
    assert_fails(
        &run,
        5,
        &[
            &format!("the request needs {} MiB more (2M pages +{more})", more * 2),
            "MiB is free (MemAvailable in /proc/meminfo)",
            "ask for fewer pages",
        ],
    );
    let node = script(&["--pages-2m", &want, "--node", "0", "--no-mount"]);
    assert_fails(
        &node,
        5,
        &["not enough free memory on node 0", "node0/meminfo"],
    );
    assert_eq!(count(GLOBAL_2M, "nr_hugepages"), start);
}

#[test]
fn mount_point_inside_a_hugetlbfs_mount_is_refused() {
    let host = Host::new();
    let start = host.start(Pool {
        node: None,
        size: PageSize::SIZE_2M,
    });
    let outer = host.path("outer");
    let made = script(&[
        "--ltran-dir",
        outer.to_str().unwrap(),
        "--lstack-dir",
        host.path("other").to_str().unwrap(),
    ]);
    assert_eq!(made.code, 0, "{made:#?}");
    let inner = outer.join("inner");
    let want = (start + 2).to_string();
    let run = script(&[
        "--pages-2m",
        &want,
        "--ltran-dir",
        host.path("ltran").to_str().unwrap(),
        "--lstack-dir",
        inner.to_str().unwrap(),
    ]);
    assert_fails(
        &run,
        6,
        &[&format!(
            "mount point {} for lstack is inside the hugetlbfs mount {}",
            inner.display(),
            outer.display()
        )],
    );
    assert_eq!(
        count(GLOBAL_2M, "nr_hugepages"),
        start,
        "refused before reserving"
    );
    assert!(!inner.exists() && !host.path("ltran").exists());
    // A hugetlbfs the script did not mount counts too (the test mounts its
    // own: whether the host has /dev/hugepages is not the test's business).
    let own = host.path("own");
    fs::create_dir(&own).unwrap();
    let mounted = Command::new("mount")
        .args([
            "-t",
            "hugetlbfs",
            "-o",
            "pagesize=2M",
            "none",
            own.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(mounted.success(), "mount hugetlbfs on {}", own.display());
    let nested = own.join("ltran");
    assert_fails(
        &script(&["--dry-run", "--ltran-dir", nested.to_str().unwrap()]),
        6,
        &[&format!("is inside the hugetlbfs mount {}", own.display())],
    );
}

#[test]
fn a_directory_mounted_otherwise_is_refused() {
    let host = Host::new();
    let (tmpfs, big) = (host.path("tmpfs"), host.path("big"));
    for (dir, fstype, options) in [
        (&tmpfs, "tmpfs", "size=1m"),
        (&big, "hugetlbfs", "pagesize=1G"),
    ] {
        fs::create_dir(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", fstype, "-o", options, "none", dir.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success(), "mount {fstype} on {}", dir.display());
    }
    let other = host.path("other");
    let run = script(&[
        "--ltran-dir",
        tmpfs.to_str().unwrap(),
        "--lstack-dir",
        other.to_str().unwrap(),
    ]);
    assert_fails(
        &run,
        9,
        &[&format!(
            "{} for ltran is already a mount point of tmpfs",
            tmpfs.display()
        )],
    );
    let run = script(&[
        "--ltran-dir",
        other.to_str().unwrap(),
        "--lstack-dir",
        big.to_str().unwrap(),
    ]);
    assert_fails(
        &run,
        9,
        &["is already a hugetlbfs mount with pagesize=1G, not 2M"],
    );
    assert!(!other.exists(), "refused before creating anything");
}

#[test]
fn unknown_node_names_the_nodes_there_are() {
    assert_fails(
        &script(&["--pages-2m", "1", "--node", "63", "--dry-run"]),
        10,
        &["NUMA node 63 does not exist (nodes here: 0"],
    );
}

#[test]
fn thp_always_stops_growth_unless_allowed() {
    let tree = captured_tree();
    let thp = tree
        .path()
        .join("sys/kernel/mm/transparent_hugepage/enabled");
    fs::write(&thp, "[always] madvise never\n").unwrap();
    let pool = tree
        .path()
        .join("sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages");
    let start: u64 = fs::read_to_string(&pool).unwrap().trim().parse().unwrap();
    let want = (start + 8).to_string();

    let run = script_in(tree.path(), &["--pages-2m", &want, "--no-mount"]);
    assert_fails(
        &run,
        7,
        &["transparent hugepages are enabled=always", "--allow-thp"],
    );
    assert_eq!(fs::read_to_string(&pool).unwrap().trim(), start.to_string());

    // Nothing to grow: THP does not matter.
    let same = script_in(
        tree.path(),
        &["--pages-2m", &start.to_string(), "--no-mount"],
    );
    assert_eq!(same.code, 0, "{same:#?}");

    let allowed = script_in(
        tree.path(),
        &["--pages-2m", &want, "--no-mount", "--allow-thp"],
    );
    assert_eq!(allowed.code, 0, "{allowed:#?}");
    assert!(allowed
        .stderr
        .contains("warning: transparent hugepages are enabled=always"));
    assert_eq!(fs::read_to_string(&pool).unwrap().trim(), want);
}

/// A reservation that succeeded is put back when a later step fails.
#[test]
fn a_failed_step_puts_back_what_the_run_changed() {
    let host = Host::new();
    let start = host.start(Pool {
        node: None,
        size: PageSize::SIZE_2M,
    });
    let want = (start + 4).to_string();
    // /proc refuses new directories: the mkdir fails after the reservation.
    let run = script(&[
        "--pages-2m",
        &want,
        "--ltran-dir",
        "/proc/setup-hugepages-test",
        "--lstack-dir",
        host.path("lstack").to_str().unwrap(),
    ]);
    assert_fails(
        &run,
        1,
        &[
            "create directory /proc/setup-hugepages-test failed",
            &format!("put back: 2M pages machine-wide to {start}"),
        ],
    );
    assert!(run
        .stdout
        .contains(&format!("set 2M pages machine-wide from {start} to {want}")));
    assert_eq!(count(GLOBAL_2M, "nr_hugepages"), start);
    assert!(mounts_below(host.dir()).is_empty());
}
