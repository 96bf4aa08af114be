//! Starting ltran: `--check` refuses what a start refuses, CPUs are checked
//! before the EAL runs, and a start that fails after the EAL came up leaves
//! nothing of its DPDK file prefix behind (runtime directory, hugepage
//! files).
//!
//! The last test needs root and hugepages (it reserves them itself).

use std::{
    path::Path,
    process::{Command, Output},
};

use netns_testbed::{hugepages, require_root};

mod common;

use common::{config, remove_prefix_files, LTRAN, ONE_BOND};

fn ltran(config: &Path, check: bool, run_dir: &Path) -> Output {
    let mut cmd = Command::new(LTRAN);
    cmd.arg("--config-file")
        .arg(config)
        .arg("--run-dir")
        .arg(run_dir);
    if check {
        cmd.arg("--check");
    }
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_refuses_two_bonds_as_a_start_does() {
    let dir = tempfile::tempdir().unwrap();
    let two_bonds = config(
        dir.path(),
        &["--no-pci"],
        "bond_ports = [\"0x1\", \"0x2\"]\nbond_macs = [\"02:00:00:00:00:99\", \"02:00:00:00:00:98\"]\n",
    );
    let run_dir = dir.path().join("run");
    let checked = ltran(&two_bonds, true, &run_dir);
    assert_eq!(checked.status.code(), Some(2), "{}", stderr(&checked));
    assert!(
        stderr(&checked).contains("ltran runs one bond, the config lists 2 port masks"),
        "{}",
        stderr(&checked)
    );
    // A start says the same, before the EAL prints anything.
    let started = ltran(&two_bonds, false, &run_dir);
    assert!(!started.status.success());
    assert!(
        stderr(&started).contains("ltran runs one bond") && !stderr(&started).contains("EAL"),
        "{}",
        stderr(&started)
    );

    let one_bond = config(dir.path(), &["--no-pci"], ONE_BOND);
    let ok = ltran(&one_bond, true, &run_dir);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).ends_with(": ok\n"));
}

#[test]
fn cpus_outside_the_affinity_mask_are_refused_before_the_eal() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let p = config(dir.path(), &["-l", "999", "--no-pci"], ONE_BOND);
    for check in [true, false] {
        let o = ltran(&p, check, &run_dir);
        let err = stderr(&o);
        assert!(!o.status.success(), "--check {check}: {err}");
        assert!(
            err.contains("forward_kit_args: -l 999 names CPU 999, but ltran may only run on CPUs "),
            "--check {check}: {err}"
        );
        assert!(!err.contains("EAL"), "the EAL ran: {err}");
    }
}

/// What of `prefix` is left in the runtime directory and the huge dir.
fn leftovers(prefix: &str, huge_dir: &Path) -> Vec<String> {
    let mut left = Vec::new();
    let run = Path::new("/var/run/dpdk").join(prefix);
    if run.exists() {
        left.push(run.display().to_string());
    }
    for f in std::fs::read_dir(huge_dir).unwrap().flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{prefix}map_")) {
            left.push(f.path().display().to_string());
        }
    }
    left
}

#[test]
fn a_start_that_fails_after_the_eal_leaves_nothing_of_its_prefix() {
    require_root();
    let huge = hugepages::ensure(64).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    // (what fails, extra config lines, what ltran says)
    let cases = [
        (
            "a bond port that does not exist",
            "bond_ports = [\"0x2\"]\nbond_macs = [\"02:00:00:00:00:99\"]\n".to_owned(),
            "bond_ports: port 1 does not exist",
        ),
        (
            "a receive pool larger than the memory",
            format!("{ONE_BOND}rx_mbuf_pool_size = 4000000\n"),
            "rx_mbuf_pool_size",
        ),
    ];
    for (what, extra, says) in cases {
        let prefix = hugepages::dpdk_file_prefix("ltran-failed-start");
        let eal = common::eal_args(&prefix, &huge, 64, &["--vdev=net_null0".to_owned()]);
        let eal: Vec<&str> = eal.iter().map(String::as_str).collect();
        let text = config(dir.path(), &eal, &extra);
        let o = ltran(&text, false, &run_dir);
        let err = stderr(&o);
        // The EAL came up, then the start failed.
        assert!(
            !o.status.success() && err.contains("DPDK EAL initialised") && err.contains(says),
            "{what}: {err}"
        );
        let left = leftovers(&prefix, &huge.huge_dir);
        remove_prefix_files(&prefix, &huge.huge_dir);
        assert!(left.is_empty(), "{what}: left behind {left:?}\n{err}");
    }
}

/// A `--config-file` that is not a regular file is refused at once: ltran
/// used to read `/dev/zero` until it was killed for memory, and to hang on
/// a FIFO nobody writes to.
#[test]
fn a_config_file_that_is_not_a_regular_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("ltran.toml");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let run_dir = dir.path().join("run");
    for (path, what) in [
        (Path::new("/dev/zero"), "it is a character device"),
        (fifo.as_path(), "it is a FIFO"),
    ] {
        for check in [true, false] {
            let mut cmd = Command::new(LTRAN);
            cmd.arg("--config-file")
                .arg(path)
                .arg("--run-dir")
                .arg(&run_dir);
            if check {
                cmd.arg("--check");
            }
            let mut child = cmd
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() {
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("ltran still reading {} after 30 s", path.display());
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let out = child.wait_with_output().unwrap();
            assert!(!out.status.success(), "{}", stderr(&out));
            assert!(
                stderr(&out).contains(&format!("cannot read {}: {what}", path.display())),
                "{}",
                stderr(&out)
            );
        }
    }
}

/// `bond_mtu` is set on the bond's ports: on a `net_af_packet` port, its
/// kernel interface's MTU follows (1500 before).
#[test]
fn bond_mtu_is_set_on_the_ports() {
    require_root();
    let topo = common::topology("ltran-mtu", "10.77.3.2".parse().unwrap());
    let mtu_file = format!("/sys/class/net/{}/mtu", topo.host_if);
    let mtu = || {
        std::fs::read_to_string(&mtu_file)
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(mtu(), "1500");
    let running = common::Ltran::start(
        "ltran-mtu",
        &[common::af_packet_vdev(0, &topo.host_if)],
        &format!("{ONE_BOND}bond_mtu = 1400\n"),
    );
    assert_eq!(mtu(), "1400", "bond_mtu = 1400 was not applied");
    drop(running);
}
