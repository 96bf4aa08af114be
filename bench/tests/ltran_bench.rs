//! `ltran-bench --quick` runs end to end: both sides measure a non-zero
//! rate at both frame sizes and the table has its ratio lines. No
//! assertion on the numbers themselves (wall-clock rates on a shared VM).
//! Needs root, hugepages, `target/release/ltran` and dpdk-testpmd.

use std::process::Command;

const BENCH: &str = env!("CARGO_BIN_EXE_ltran-bench");

#[test]
fn quick_run_measures_both_sides_and_prints_ratios() {
    netns_testbed::require_root();
    let out = Command::new(BENCH)
        .arg("--quick")
        .output()
        .expect("running ltran-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ltran-bench --quick failed ({})\n{stdout}\n{stderr}",
        out.status
    );
    println!("{stdout}");
    assert!(
        stdout.contains("ltran/testpmd"),
        "no ratio column:\n{stdout}"
    );
    assert!(stdout.contains("NOISY"), "no noise warning:\n{stdout}");
    for size in [64, 1500] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("dispatch {size} B")) && l.contains(" Mpps "))
            .unwrap_or_else(|| panic!("no Mpps row for {size} B:\n{stdout}"));
        // metric words, unit, testpmd, ltran, ratio ("1.23x").
        let nums: Vec<f64> = row
            .split_whitespace()
            .filter_map(|w| w.trim_end_matches('x').parse().ok())
            .collect();
        // "dispatch", "64", "B" -> the size parses too: skip it.
        assert_eq!(nums.len(), 4, "unexpected row: {row}");
        let (testpmd, ltran, ratio) = (nums[1], nums[2], nums[3]);
        assert!(testpmd > 0.0, "testpmd rate not positive: {row}");
        assert!(ltran > 0.0, "ltran rate not positive: {row}");
        assert!(ratio > 0.0, "ratio not positive: {row}");
    }
}
