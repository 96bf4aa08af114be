//! The dashboard in a real browser against the real thing: Debian's
//! headless Chromium, driven by Playwright (`playwright-core` from npm,
//! installed on first use into `target/browser-test`; never a downloaded
//! browser), against `gazelle-webui` in front of applianced, ltran and
//! redis-server on lstack (see `rig`), with `redis-benchmark` in the peer
//! namespace making traffic.
//!
//! The script, `tests/browser/dashboard.cjs` (the VM harness runs it too,
//! against the booted image), logs in; sees the counters and charts
//! (receive latency among them) move while traffic flows and settle when
//! it stops; finds the bond's failover history; changes
//! the bond's miimon and confirms it in the banner; makes another change
//! and lets the countdown run out, then reads on the page what the
//! rollback restored; adds an instance and sees it serve a kernel client;
//! makes a viewer account and finds no buttons that change things on any
//! page as that viewer, and the server refusing a forged change; checks
//! labels, titles and that no page logs a console error. Screenshots of
//! every page (laptop and phone widths) go to `target/browser-artifacts`.
//!
//! Needs root, hugepages, node and npm (the npm registry on first use),
//! `/usr/bin/chromium`, redis-server/redis-tools and the release binaries
//! the rig names.

mod rig;

use std::path::{Path, PathBuf};
use std::process::Command;

use rig::{Rig, PASSWORD, PORT};

/// The Playwright driver, pinned.
const PLAYWRIGHT: &str = "playwright-core@1.65.2";
const CHROMIUM: &str = "/usr/bin/chromium";

fn target() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}

/// `target/browser-test/node_modules`, with playwright-core in it.
fn playwright() -> PathBuf {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: the browser test needs Debian's chromium (scripts/install-deps.sh installs it)"
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "node is missing: the browser test needs Node.js and npm (scripts/install-deps.sh installs them)"
    );
    let dir = target().join("browser-test");
    let modules = dir.join("node_modules");
    if !modules.join("playwright-core/package.json").exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("npm")
            .args([
                "install",
                "--no-save",
                "--no-audit",
                "--no-fund",
                "--prefix",
            ])
            .arg(&dir)
            .arg(PLAYWRIGHT)
            // The driver only: never a browser download.
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .status()
            .expect("running npm")
            .success();
        assert!(ok, "npm install {PLAYWRIGHT} failed");
    }
    modules
}

#[test]
fn the_dashboard_runs_the_appliance_in_a_browser() {
    let modules = playwright();
    // Long enough to click Confirm, short enough to wait out.
    let rig = Rig::start("dash", 30);
    let artifacts = target().join("browser-artifacts");
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).unwrap();
    // A second address for the instance the browser adds.
    let o = rig.topo.stack_ip4.octets();
    let new_ip = format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3].wrapping_add(10));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.cjs");
    let status = Command::new("node")
        .arg(&script)
        .env("NODE_PATH", &modules)
        .env("CHROMIUM", CHROMIUM)
        .env("BASE", rig.base())
        .env("PASSWORD", PASSWORD)
        .env("ARTIFACTS", &artifacts)
        .env("NS", &rig.topo.ns)
        .env("STACK_IP", &rig.ip)
        .env("REDIS_PORT", PORT)
        .env("NEW_IP", &new_ip)
        .env("NEW_PORT", "16392")
        // The self-signed certificate of the rig.
        .env("NODE_EXTRA_CA_CERTS", rig.cacert())
        .status()
        .expect("running node");
    assert!(
        status.success(),
        "the browser script failed (screenshots in {})",
        artifacts.display()
    );
    for page in [
        "login",
        "dashboard",
        "dashboard-phone",
        "bond",
        "bond-invalid",
        "bond-pending",
        "rolled-back",
        "instances",
        "instance",
        "account",
        "devices",
        "subnets",
        "config",
        "audit",
        "viewer-bond",
    ] {
        assert!(
            artifacts.join(format!("{page}.png")).exists(),
            "no screenshot of {page}"
        );
    }
    rig.stop();
}
