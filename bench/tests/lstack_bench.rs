//! `lstack-bench --quick --json` runs end to end: every row has the kernel
//! and lstack in both stack modes, each with a positive value, the CPU its
//! server and the machine used, and (for rates) the rate per CPU-second and
//! the ratios to the kernel. No assertion on the numbers themselves
//! (wall-clock rates on a shared VM). Needs root, hugepages and the
//! servers and clients scripts/install-deps.sh installs.

use std::process::Command;

const BENCH: &str = env!("CARGO_BIN_EXE_lstack-bench");

/// Runs `lstack-bench` with `args` and returns its JSON results.
fn results_of(args: &[&str]) -> (Vec<serde_json::Value>, String) {
    let out = Command::new(BENCH)
        .args(args)
        .output()
        .expect("running lstack-bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "lstack-bench {args:?} failed ({})\n{stdout}\n{stderr}",
        out.status
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON output");
    let results = v["results"].as_array().expect("a results array").clone();
    assert!(!results.is_empty(), "no results: {stdout}");
    (results, stdout)
}

#[test]
fn quick_run_measures_every_side_with_its_cpu() {
    netns_testbed::require_root();
    // The preload library must be next to the bench (cargo builds it into
    // the same directory as a dependency-free cdylib of the workspace).
    let dir = std::path::Path::new(BENCH).parent().unwrap();
    let lib = dir.join("liblstack.so");
    assert!(
        lib.exists(),
        "{} missing: build it first (cargo build --release -p lstack-preload)",
        lib.display()
    );
    let (results, stdout) = results_of(&["--quick", "--json"]);
    let metrics: Vec<&str> = results
        .iter()
        .map(|r| r["metric"].as_str().unwrap())
        .collect();
    for want in [
        "redis SET -c 50 -P 1",
        "redis GET -c 50 -P 16",
        "redis SET -c 1000 -P 1",
        "tcp rr 64 B",
        "tcp rr 64 B p99.9",
        "tcp bulk to server",
        "tcp bulk from server",
        "nginx wrk -c 100",
    ] {
        assert!(metrics.contains(&want), "no {want:?} row in {metrics:?}");
    }
    for r in &results {
        let metric = r["metric"].as_str().unwrap();
        let rate = r["higher_is_better"].as_bool().unwrap();
        let sides = r["sides"].as_array().unwrap();
        let labels: Vec<&str> = sides.iter().map(|s| s["side"].as_str().unwrap()).collect();
        assert_eq!(
            labels,
            ["kernel", "lstack-rtw", "lstack-rtc"],
            "{metric}: sides"
        );
        for s in sides {
            let side = s["side"].as_str().unwrap();
            let num = |k: &str| {
                s[k].as_f64()
                    .unwrap_or_else(|| panic!("{metric} on {side}: no {k} in {s}"))
            };
            assert!(num("value") > 0.0, "{metric} on {side}: {s}");
            assert!(num("wall_s") > 0.0, "{metric} on {side}: {s}");
            assert!(num("machine_s") > 0.0, "{metric} on {side}: {s}");
            assert!(num("server_s") >= 0.0, "{metric} on {side}: {s}");
            assert!(num("over_kernel") > 0.0, "{metric} on {side}: {s}");
            assert!(!s["medium"].as_str().unwrap().is_empty());
            if rate && num("server_s") > 0.0 {
                assert!(num("per_server_cpu_s") > 0.0, "{metric} on {side}: {s}");
                assert!(num("per_machine_cpu_s") > 0.0, "{metric} on {side}: {s}");
            }
        }
    }
    println!("{stdout}");
}

/// The other media: lstack on `net_af_xdp`, and the kernel once more with
/// segmentation offload off, each a side of its own with its medium named.
#[test]
fn af_xdp_and_the_kernel_without_gso_are_sides_of_their_own() {
    netns_testbed::require_root();
    let (results, stdout) = results_of(&[
        "--quick",
        "--json",
        "--only",
        "rr,bulk",
        "--modes",
        "rtc",
        "--media",
        "af_xdp",
        "--kernel-without-gso",
    ]);
    for r in &results {
        let metric = r["metric"].as_str().unwrap();
        let sides = r["sides"].as_array().unwrap();
        let labels: Vec<&str> = sides.iter().map(|s| s["side"].as_str().unwrap()).collect();
        assert_eq!(
            labels,
            ["kernel", "kernel-nogso", "lstack-rtc-xdp"],
            "{metric}: sides"
        );
        for s in sides {
            assert!(s["value"].as_f64().unwrap() > 0.0, "{metric}: {s}");
        }
        let media: Vec<&str> = sides
            .iter()
            .map(|s| s["medium"].as_str().unwrap())
            .collect();
        assert!(media[1].contains("GSO off"), "{media:?}");
        assert!(media[2].contains("net_af_xdp"), "{media:?}");
    }
    println!("{stdout}");
}

/// lstack to lstack: over `net_memif` the client runs on lstack too, and
/// the rows stand beside the kernel's (kernel to kernel).
#[test]
fn memif_sides_run_the_client_on_lstack_too() {
    netns_testbed::require_root();
    let (results, stdout) = results_of(&[
        "--quick", "--json", "--only", "rr,redis", "--modes", "rtc", "--media", "memif",
    ]);
    assert!(!results.is_empty());
    for r in &results {
        let metric = r["metric"].as_str().unwrap();
        let sides = r["sides"].as_array().unwrap();
        let labels: Vec<&str> = sides.iter().map(|s| s["side"].as_str().unwrap()).collect();
        assert_eq!(labels, ["kernel", "lstack-rtc-memif"], "{metric}: sides");
        for s in sides {
            assert!(s["value"].as_f64().unwrap() > 0.0, "{metric}: {s}");
        }
        let medium = sides[1]["medium"].as_str().unwrap();
        assert!(medium.contains("net_memif"), "{medium}");
        assert!(medium.contains("client on lstack"), "{medium}");
    }
    println!("{stdout}");
}
