//! `appliance::hugepages`, the daemon's twin of `setup-hugepages.sh`, on
//! the same scenarios as the script: real reservations and hugetlbfs mounts
//! on this host (checked against the kernel's counters and
//! `/proc/self/mountinfo`), and every error case next to the script's run
//! of the same request: same exit code, same message, nothing changed. The
//! script's `--status --json` must equal [`hugepages::status`] serialised.
//!
//! Needs root; fails loudly without it. Tests that change the host hold a
//! [`Host`] guard that puts the pools back to their starting counts and
//! removes the temporary mounts, on panic too.

use std::fs;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod common;

use common::Host;

use appliance::hugepages::{self, Action, HugepageConfig, HugepageError, Nodes, PageSize, Pool};
use rstest::rstest;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/setup-hugepages.sh");
fn host_root() -> &'static Path {
    Path::new("/")
}

/// The kernel's count of a pool, read straight from sysfs.
fn kernel_count(pool: Pool) -> u64 {
    let text = fs::read_to_string(pool.dir(host_root()).join("nr_hugepages")).unwrap();
    text.trim().parse().unwrap()
}

fn pool(node: Option<u32>, size: PageSize) -> Pool {
    Pool { node, size }
}

/// The filesystem type and options of each mount at `path`, from
/// `/proc/self/mountinfo`.
fn mounts_at(path: &Path) -> Vec<String> {
    let wanted = format!(" {} ", path.display());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|line| line.contains(&wanted))
        .map(|line| line.split(" - ").nth(1).unwrap().to_owned())
        .collect()
}

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the script on the tree under `root` (`/`: the host).
fn script(root: &Path, args: &[String]) -> Run {
    let mut command = Command::new(SCRIPT);
    command.args(args);
    if root != host_root() {
        command.env("HUGEPAGES_ROOT", root);
    }
    let out = command.output().unwrap();
    Run {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// The config the script's options stand for.
fn config_of(args: &[String]) -> HugepageConfig {
    let mut config = HugepageConfig::default();
    let mut args = args.iter().map(String::as_str);
    while let Some(flag) = args.next() {
        let mut value = || args.next().expect("a value after the option");
        match flag {
            "--pages-2m" => drop(
                config
                    .pages
                    .insert(PageSize::SIZE_2M, value().parse().unwrap()),
            ),
            "--pages-1g" => drop(
                config
                    .pages
                    .insert(PageSize::SIZE_1G, value().parse().unwrap()),
            ),
            "--pages" => {
                let (size, n) = value().split_once('=').unwrap();
                config
                    .pages
                    .insert(size.parse().unwrap(), n.parse().unwrap());
            }
            "--node" => config.nodes = value().parse().unwrap(),
            "--ltran-dir" => config.ltran_dir = value().into(),
            "--lstack-dir" => config.lstack_dir = value().into(),
            "--ltran-size" => config.ltran_size = Some(value().parse().unwrap()),
            "--lstack-size" => config.lstack_size = Some(value().parse().unwrap()),
            "--no-mount" => config.mount = false,
            "--exact" => config.exact = true,
            "--allow-thp" => config.allow_thp = true,
            "--dry-run" => {}
            other => panic!("no such option {other}"),
        }
    }
    config
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// The script's output lines after its name, without `prefix`.
fn lines_after<'a>(out: &'a str, prefix: &'a str) -> impl Iterator<Item = String> + 'a {
    out.lines().filter_map(move |line| {
        let line = line.strip_prefix("setup-hugepages: ")?;
        Some(line.strip_prefix(prefix)?.to_owned())
    })
}

#[test]
fn plan_is_the_scripts_dry_run_and_changes_nothing() {
    let host = Host::new();
    let start = host.start(pool(None, PageSize::SIZE_2M));
    let node_start = host.start(pool(Some(0), PageSize::SIZE_2M));
    let (ltran, lstack) = (host.path("ltran"), host.path("lstack"));
    let args = strings(&[
        "--pages-2m",
        &(start + 8).to_string(),
        "--pages-1g",
        "0",
        "--ltran-dir",
        ltran.to_str().unwrap(),
        "--lstack-dir",
        lstack.to_str().unwrap(),
        "--ltran-size",
        "1G",
        "--dry-run",
    ]);
    let plan = hugepages::plan(host_root(), &config_of(&args).request()).unwrap();
    assert_eq!(
        plan.actions[0],
        Action::SetPages {
            pool: pool(None, PageSize::SIZE_2M),
            from: start,
            to: start + 8
        }
    );
    let run = script(host_root(), &args);
    assert_eq!(run.code, 0, "{run:#?}");
    let would: Vec<String> = lines_after(&run.stdout, "would ").collect();
    let planned: Vec<String> = plan.to_string().lines().map(str::to_owned).collect();
    assert_eq!(planned, would);
    assert_eq!(planned.len(), 5, "{planned:?}");
    let notes: Vec<String> = lines_after(&run.stdout, "")
        .filter(|l| !l.starts_with("would ") && !l.starts_with("dry run"))
        .collect();
    assert_eq!(plan.unchanged, notes);

    // Per node, a smaller count is kept, and both say so alike. The node
    // gets pages of its own first: a new machine has none to keep.
    let node_start = host.reserve_at_least(pool(Some(0), PageSize::SIZE_2M), node_start.max(2));
    let start = kernel_count(pool(None, PageSize::SIZE_2M));
    let fewer = strings(&["--pages-2m", "1", "--node", "0", "--no-mount", "--dry-run"]);
    let kept = hugepages::plan(host_root(), &config_of(&fewer).request()).unwrap();
    assert!(kept.is_empty());
    let run = script(host_root(), &fewer);
    let notes: Vec<String> = lines_after(&run.stdout, "").take(1).collect();
    assert_eq!(kept.unchanged, notes);
    assert!(kept.unchanged[0].contains(&format!("already {node_start}, more than the 1")));

    assert_eq!(kernel_count(pool(None, PageSize::SIZE_2M)), start);
    assert!(!ltran.exists() && !lstack.exists());
}

#[test]
fn apply_reserves_and_mounts_and_a_second_apply_changes_nothing() {
    let host = Host::new();
    let global = pool(None, PageSize::SIZE_2M);
    let start = host.start(global);
    let (ltran, lstack) = (host.path("ltran"), host.path("deeper/lstack"));
    let args = strings(&[
        "--pages-2m",
        &(start + 6).to_string(),
        "--ltran-dir",
        ltran.to_str().unwrap(),
        "--lstack-dir",
        lstack.to_str().unwrap(),
    ]);
    let request = config_of(&args).request();
    let plan = hugepages::plan(host_root(), &request).unwrap();
    let applied = hugepages::apply(&plan).unwrap();
    assert_eq!(applied.done, plan.actions);
    assert_eq!(kernel_count(global), start + 6);
    for dir in [&ltran, &lstack] {
        let mounts = mounts_at(dir);
        assert_eq!(mounts.len(), 1, "{}: {mounts:?}", dir.display());
        assert!(mounts[0].starts_with("hugetlbfs "), "{mounts:?}");
        assert!(mounts[0].contains("mode=700") && mounts[0].contains("pagesize=2M"));
    }

    // The same plan again: everything is in effect already.
    assert_eq!(hugepages::apply(&plan).unwrap().done, []);
    let again = hugepages::plan(host_root(), &request).unwrap();
    assert!(again.is_empty(), "{again}");
    assert_eq!(again.unchanged.len(), 3, "{:?}", again.unchanged);
    // And the script finds nothing to do on what the daemon set up.
    let run = script(host_root(), &args);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stdout.contains("nothing to change"), "{run:#?}");
    assert_eq!(kernel_count(global), start + 6);
    assert_eq!(mounts_at(&ltran).len(), 1);

    // Exact mode lowers (never below where the test started).
    let mut exact = request.clone();
    exact.reservations[0].pages = start + 2;
    exact.exact = true;
    hugepages::setup(host_root(), &exact).unwrap();
    assert_eq!(kernel_count(global), start + 2);

    drop(host);
    assert_eq!(kernel_count(global), start);
    assert!(mounts_at(&ltran).is_empty() && mounts_at(&lstack).is_empty());
}

#[test]
fn reserves_per_node() {
    let host = Host::new();
    let node0 = pool(Some(0), PageSize::SIZE_2M);
    let start = host.start(node0);
    let global_start = host.start(pool(None, PageSize::SIZE_2M));
    let mut config = HugepageConfig {
        nodes: Nodes::All,
        mount: false,
        ..HugepageConfig::default()
    };
    config.pages.insert(PageSize::SIZE_2M, start + 4);
    let applied = hugepages::setup(host_root(), &config.request()).unwrap();
    assert_eq!(
        applied.done,
        [Action::SetPages {
            pool: node0,
            from: start,
            to: start + 4
        }]
    );
    assert_eq!(kernel_count(node0), start + 4);
    assert_eq!(
        kernel_count(pool(None, PageSize::SIZE_2M)),
        global_start + 4
    );
}

#[test]
fn one_gigabyte_page_or_the_shortfall() {
    let host = Host::new();
    let node0 = pool(Some(0), PageSize::SIZE_1G);
    let start = host.start(node0);
    let (ltran, lstack) = (host.path("ltran"), host.path("lstack"));
    let mut config = HugepageConfig {
        nodes: Nodes::List(vec![0]),
        ltran_dir: ltran.clone(),
        lstack_dir: lstack.clone(),
        ..HugepageConfig::default()
    };
    config.pages.insert(PageSize::SIZE_1G, start + 1);
    match hugepages::setup(host_root(), &config.request()) {
        Ok(applied) => {
            assert_eq!(applied.done.len(), 5, "{applied:?}");
            assert_eq!(kernel_count(node0), start + 1);
            for dir in [&ltran, &lstack] {
                let mounts = mounts_at(dir);
                assert!(
                    mounts.len() == 1 && mounts[0].contains("pagesize=1024M"),
                    "{mounts:?}"
                );
            }
        }
        Err(error @ HugepageError::Shortfall { .. }) => {
            eprintln!("this host could not give a 1 GiB page: checking the shortfall instead");
            assert_eq!(error.exit_code(), 8);
            let text = error.to_string();
            assert!(
                text.contains(&format!("put back: 1G pages on node 0 to {start}")),
                "{text}"
            );
            assert_eq!(kernel_count(node0), start);
            assert!(!ltran.exists());
        }
        Err(other) => panic!("{other}"),
    }
}

/// A failed step after a successful reservation: the reservation is put
/// back and the error lists it, as the script does.
#[test]
fn a_failed_step_puts_back_what_apply_changed() {
    let host = Host::new();
    let global = pool(None, PageSize::SIZE_2M);
    let start = host.start(global);
    let mut config = HugepageConfig {
        ltran_dir: "/proc/hugepages-twin-test".into(),
        lstack_dir: host.path("lstack"),
        ..HugepageConfig::default()
    };
    config.pages.insert(PageSize::SIZE_2M, start + 4);
    let error = hugepages::setup(host_root(), &config.request()).unwrap_err();
    assert_eq!(error.exit_code(), 1, "{error}");
    let text = error.to_string();
    assert!(
        text.starts_with("create directory /proc/hugepages-twin-test failed: ")
            && text.ends_with(&format!("; put back: 2M pages machine-wide to {start}")),
        "{text}"
    );
    assert_eq!(kernel_count(global), start);
    assert!(!host.path("lstack").exists());
}

/// The script's `--status --json` and `status()` read the same machine at
/// nearly the same moment; other programs' DPDK tests take and free pages
/// meanwhile, so compare only runs where the state held still around the
/// script's read.
#[test]
fn script_json_status_equals_rust_status_on_the_host() {
    let _host = Host::new();
    let args = strings(&["--status", "--json"]);
    for _ in 0..50 {
        let before = hugepages::status(host_root()).unwrap();
        let run = script(host_root(), &args);
        let after = hugepages::status(host_root()).unwrap();
        assert_eq!(run.code, 0, "{run:#?}");
        if before == after {
            let from_script: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
            assert_eq!(from_script, serde_json::to_value(&before).unwrap());
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the host's hugepage state never held still for one script run");
}

/// A copy of the host's tree with a few changes: a THP mode, a mount point
/// with a space in its path, no 1 GiB pool on node 0.
#[test]
fn script_json_status_equals_rust_status_on_a_captured_tree() {
    let tree = tempfile::tempdir().unwrap();
    hugepages::capture(host_root(), tree.path()).unwrap();
    let root = tree.path();
    fs::write(
        root.join("sys/kernel/mm/transparent_hugepage/enabled"),
        "[always] madvise never\n",
    )
    .unwrap();
    let mountinfo = root.join("proc/self/mountinfo");
    let mut text = fs::read_to_string(&mountinfo).unwrap();
    text.push_str("900 1 0:99 / /mnt/huge\\040pages rw - hugetlbfs nodev rw,pagesize=1024M\n");
    fs::write(&mountinfo, text).unwrap();
    let node_1g = root.join("sys/devices/system/node/node0/hugepages/hugepages-1048576kB");
    fs::remove_dir_all(node_1g).unwrap();

    let run = script(root, &strings(&["--status", "--json"]));
    assert_eq!(run.code, 0, "{run:#?}");
    let from_script: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let status = hugepages::status(root).unwrap();
    assert_eq!(from_script, serde_json::to_value(&status).unwrap());
    let odd = status.mounts.last().unwrap();
    assert_eq!(
        (odd.path.as_str(), odd.size),
        ("/mnt/huge pages", PageSize::SIZE_1G)
    );
    assert_eq!(status.thp.enabled.as_deref(), Some("always"));
    assert!(!status
        .pools
        .iter()
        .any(|p| p.node == Some(0) && p.size == PageSize::SIZE_1G));
}

/// How a case changes the captured tree (`tree`) or the scratch
/// directory (`dir`) before both run.
type Tweak = fn(tree: &Path, dir: &Path);

fn no_tweak(_: &Path, _: &Path) {}

fn without_1g(tree: &Path, _: &Path) {
    fs::remove_dir_all(tree.join("sys/kernel/mm/hugepages/hugepages-1048576kB")).unwrap();
}

fn thp_always(tree: &Path, _: &Path) {
    let path = tree.join("sys/kernel/mm/transparent_hugepage/enabled");
    fs::write(path, "[always] madvise never\n").unwrap();
}

/// Leaves 10 MiB of memory to grow into, machine-wide and on node 0.
fn little_memory(tree: &Path, _: &Path) {
    for (file, keys) in [
        ("proc/meminfo", &["MemAvailable"][..]),
        (
            "sys/devices/system/node/node0/meminfo",
            &["MemFree", "Active(file)", "Inactive(file)", "SReclaimable"][..],
        ),
    ] {
        let path = tree.join(file);
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<String> = text
            .lines()
            .map(|line| {
                let key = line
                    .split(':')
                    .next()
                    .unwrap()
                    .split(' ')
                    .next_back()
                    .unwrap();
                let value = if key == "MemFree" || key == "MemAvailable" {
                    10_240
                } else {
                    0
                };
                match keys.contains(&key) {
                    true => format!("{}: {value} kB", line.split(':').next().unwrap()),
                    false => line.to_owned(),
                }
            })
            .collect();
        fs::write(path, lines.join("\n") + "\n").unwrap();
    }
}

fn mounted(tree: &Path, line: String) {
    let path = tree.join("proc/self/mountinfo");
    let text = fs::read_to_string(&path).unwrap() + &line;
    fs::write(path, text).unwrap();
}

fn hugetlbfs_outer(tree: &Path, dir: &Path) {
    let line = format!(
        "901 1 0:98 / {}/outer rw - hugetlbfs nodev rw,pagesize=2M\n",
        dir.display()
    );
    mounted(tree, line);
}

fn tmpfs_taken(tree: &Path, dir: &Path) {
    mounted(
        tree,
        format!("902 1 0:97 / {}/taken rw - tmpfs none rw\n", dir.display()),
    );
}

fn hugetlbfs_1g_taken(tree: &Path, dir: &Path) {
    let line = format!(
        "903 1 0:96 / {}/taken rw - hugetlbfs nodev rw,pagesize=1024M\n",
        dir.display()
    );
    mounted(tree, line);
}

fn a_file(_: &Path, dir: &Path) {
    fs::write(dir.join("taken"), "").unwrap();
}

/// Each error case through both: same exit code, the script's message is
/// the Rust error's text, and neither changed a pool or made a directory.
/// `{dir}` in the options is a scratch directory; `{grow}` is the tree's
/// 2 MiB count plus 8.
#[rstest]
#[case::unsupported_size(4, &["--pages-1g", "1", "--no-mount"], without_1g)]
#[case::unsupported_mount_size(4, &["--ltran-size", "4M"], no_tweak)]
#[case::no_such_node(10, &["--pages-2m", "1", "--node", "9", "--no-mount"], no_tweak)]
#[case::thp_always(7, &["--pages-2m", "{grow}", "--no-mount"], thp_always)]
#[case::memory(5, &["--pages-2m", "{grow}", "--pages", "1G=1", "--no-mount"], little_memory)]
#[case::memory_on_node(5, &["--pages-2m", "{grow}", "--node", "0", "--no-mount"], little_memory)]
#[case::nested(6, &["--ltran-dir", "{dir}/outer/ltran"], hugetlbfs_outer)]
#[case::nested_in_planned(6, &["--ltran-dir", "{dir}/a", "--lstack-dir", "{dir}/a/b"], no_tweak)]
#[case::other_filesystem(9, &["--lstack-dir", "{dir}/taken"], tmpfs_taken)]
#[case::other_page_size(9, &["--lstack-dir", "{dir}/taken"], hugetlbfs_1g_taken)]
#[case::not_a_directory(9, &["--lstack-dir", "{dir}/taken"], a_file)]
#[case::same_directory(2, &["--ltran-dir", "{dir}/same", "--lstack-dir", "{dir}/same/"], no_tweak)]
fn errors_agree_with_the_script(#[case] code: i32, #[case] args: &[&str], #[case] tweak: Tweak) {
    let tree = tempfile::tempdir().unwrap();
    hugepages::capture(host_root(), tree.path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pool_file = tree
        .path()
        .join("sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages");
    let start = fs::read_to_string(&pool_file).unwrap();
    let grow = (start.trim().parse::<u64>().unwrap() + 8).to_string();
    tweak(tree.path(), dir.path());
    let mut args: Vec<String> = args
        .iter()
        .map(|a| {
            a.replace("{dir}", dir.path().to_str().unwrap())
                .replace("{grow}", &grow)
        })
        .collect();
    // Mount points the case leaves out go to the scratch directory too.
    for (flag, name) in [("--ltran-dir", "ltran"), ("--lstack-dir", "lstack")] {
        if !args.iter().any(|a| a == "--no-mount" || a == flag) {
            args.extend([flag.to_owned(), format!("{}/{name}", dir.path().display())]);
        }
    }
    let entries_before = fs::read_dir(dir.path()).unwrap().count();

    let error = hugepages::plan(tree.path(), &config_of(&args).request()).unwrap_err();
    let run = script(tree.path(), &args);
    assert_eq!(
        (error.exit_code(), run.code),
        (code, code),
        "{error}\n{run:#?}"
    );
    let expected = format!("setup-hugepages: error: {error}");
    assert!(
        run.stderr
            .lines()
            .any(|l| l == expected || l == format!("{expected} (see --help)")),
        "the script says\n{}\nthe daemon says\n{expected}",
        run.stderr
    );
    assert_eq!(fs::read_to_string(&pool_file).unwrap(), start);
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), entries_before);
}

/// Not root: the script and `setup` (run by this test binary re-executed
/// as uid 65534) refuse alike, before any change.
#[test]
fn not_root_is_refused_alike() {
    let host = Host::new();
    let global = pool(None, PageSize::SIZE_2M);
    let start = host.start(global);
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "not_root_child", "--nocapture"])
        .env("NOT_ROOT_PAGES", (start + 2).to_string())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stdout = String::from_utf8(child.stdout).unwrap();
    assert!(child.status.success(), "{stdout}");
    let said = stdout
        .lines()
        .find_map(|l| l.strip_prefix("refused: "))
        .unwrap_or_else(|| panic!("the child did not report: {stdout}"));

    let run = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", SCRIPT])
        .args(["--pages-2m", &(start + 2).to_string(), "--no-mount"])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(3));
    let stderr = String::from_utf8(run.stderr).unwrap();
    assert_eq!(stderr.trim_end(), format!("setup-hugepages: error: {said}"));
    assert!(said.contains("running as uid 65534"));
    assert_eq!(kernel_count(global), start);
}

#[test]
#[ignore = "run by not_root_is_refused_alike as uid 65534"]
fn not_root_child() {
    let pages = std::env::var("NOT_ROOT_PAGES").unwrap().parse().unwrap();
    let mut config = HugepageConfig {
        mount: false,
        ..HugepageConfig::default()
    };
    config.pages.insert(PageSize::SIZE_2M, pages);
    let error = hugepages::setup(host_root(), &config.request()).unwrap_err();
    assert_eq!(error.exit_code(), 3, "{error}");
    println!("refused: {error}");
}
