//! Socket semantics: the same observable results on the kernel and under
//! `LD_PRELOAD=liblstack.so`.
//!
//! Each C program in `tests/posix/` is one conversation between an "app" (the side
//! under test) and a "peer" (always a plain kernel process), and prints a transcript
//! of what it observes (return values, errno names, bytes, event masks). Every
//! program runs twice, on one [`Topology`] with a [`KernelTwin`] built for it:
//!
//! 1. **kernel**: the app in the twin's app namespace (which holds the stack's
//!    addresses), the peer in the twin's peer namespace;
//! 2. **lstack**: the app in the root namespace with `LD_PRELOAD=<liblstack.so>` and
//!    `LSTACK_CONF_PATH` naming a configuration for the topology's `host_if`
//!    (its own DPDK `--file-prefix`), the peer in the topology's peer namespace.
//!
//! The peer sees the same addresses, interface names and ports both times. The two
//! runs' transcripts (app and peer, with exit statuses) must be equal; on a mismatch
//! the test prints them side by side, with the lstack app's stderr.
//!
//! The side that must be up first prints `ready` (see `posix/common.h`); the other is
//! started only then. Every run is bounded by [`RUN_TIMEOUT`]; what does not exit by
//! then is killed (and the kill is part of the transcript). The kernel run is the
//! baseline: if it fails, the program itself is broken and the test says so.
//!
//! One test per program, each with its own topology, so that tests run in parallel
//! never share a veth (only one DPDK process can own the `net_af_packet` port on a
//! `host_if`) and each lstack run is alone on its port; the programs also use
//! distinct TCP/UDP ports, as the lstack app's wildcard listeners also bind in the
//! root namespace.
//!
//! Needs root, hugepages, `cc`, and `target/release/liblstack.so`
//! (`cargo build --release -p lstack-preload`). Run:
//! `cargo test --release -p lstack-preload --test semantics`.

mod common;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use gazelle_config::StackThreadMode;
use netns_testbed::{hugepages, require_root, ChildGuard, KernelTwin, Topology, TopologyOptions};

/// Longest a run (both sides, from the first start to the last exit) may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Which side of a program listens first and prints `ready`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum First {
    Peer,
    App,
}

/// Compiles `tests/posix/<name>.c` into `dir` with `cc -O1 -Wall -Werror`.
fn compile(name: &str, dir: &Path) -> PathBuf {
    let src_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/posix");
    let src = src_dir.join(format!("{name}.c"));
    let out = dir.join(name);
    let result = Command::new("cc")
        .args(["-O1", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("running cc (is a C compiler installed?): {e}"));
    assert!(
        result.status.success(),
        "cc -O1 -Wall -Werror {} failed ({}):\n{}{}",
        src.display(),
        result.status,
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    out
}

/// What one side of a run printed, and how it ended.
#[derive(Debug, Default)]
struct Side {
    stdout: String,
    stderr: String,
    /// "exit status: 0", "signal: 9 (SIGKILL)", "killed after 30s", "not started...".
    end: String,
}

impl Side {
    /// Whether the side ended as it meant to: exit status 0, or the end it
    /// announced with a line `expect end: <end>` (a program killed by a
    /// signal on purpose).
    fn ok(&self) -> bool {
        let expected = self
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("expect end: "))
            .unwrap_or("exit status: 0");
        self.end == expected && !self.stdout.contains("FATAL")
    }
}

/// Both sides of one run.
#[derive(Debug)]
struct Run {
    app: Side,
    peer: Side,
}

impl Run {
    /// The transcript compared between the kernel and lstack runs.
    fn transcript(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (name, side) in [("app", &self.app), ("peer", &self.peer)] {
            lines.push(format!("--- {name}: {}", side.end));
            lines.extend(side.stdout.lines().map(|l| format!("{name}: {l}")));
        }
        lines
    }

    fn stderr_report(&self) -> String {
        let mut s = String::new();
        for (name, side) in [("app", &self.app), ("peer", &self.peer)] {
            if !side.stderr.trim().is_empty() {
                let lines: Vec<&str> = side.stderr.lines().collect();
                let tail = &lines[lines.len().saturating_sub(60)..];
                let _ = writeln!(s, "--- {name} stderr (last {} lines):", tail.len());
                for l in tail {
                    let _ = writeln!(s, "    {l}");
                }
            }
        }
        s
    }
}

/// Whether a line `ready` has appeared on the child's stdout.
fn printed_ready(child: &ChildGuard) -> bool {
    child.stdout_so_far().lines().any(|l| l == "ready")
}

/// Spawns `cmd` with stdin closed and stdout/stderr captured.
fn spawn(mut cmd: Command) -> ChildGuard {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    ChildGuard::spawn(&mut cmd).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Waits for `child` until `deadline`; kills it then if it still runs.
fn finish(child: Option<ChildGuard>, deadline: Instant) -> Side {
    let Some(mut child) = child else {
        return Side {
            end: "not started: the other side never printed \"ready\"".into(),
            ..Side::default()
        };
    };
    loop {
        match child.try_wait() {
            Ok(Some(_)) => {
                let out = child
                    .wait_with_output_timeout(Duration::from_secs(2))
                    .expect("reaped child");
                return Side {
                    stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                    end: out.status.to_string(),
                };
            }
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => {
                let (stdout, stderr) = (child.stdout_so_far(), child.stderr_so_far());
                child.kill();
                return Side {
                    stdout,
                    stderr,
                    end: format!("still running after {RUN_TIMEOUT:?}: killed"),
                };
            }
        }
    }
}

/// Runs `app` and `peer`, the `first` one first until it prints `ready`.
fn run_pair(first: First, app: Command, peer: Command) -> Run {
    let deadline = Instant::now() + RUN_TIMEOUT;
    let (first_cmd, second_cmd) = match first {
        First::App => (app, peer),
        First::Peer => (peer, app),
    };
    let mut first_child = spawn(first_cmd);
    let ready = loop {
        if printed_ready(&first_child) {
            break true;
        }
        if Instant::now() >= deadline || matches!(first_child.try_wait(), Ok(Some(_)) | Err(_)) {
            break false;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let second_child = ready.then(|| spawn(second_cmd));
    let (first_side, second_side) = thread::scope(|s| {
        let a = s.spawn(|| finish(Some(first_child), deadline));
        let b = s.spawn(|| finish(second_child, deadline));
        (a.join().expect("waiter"), b.join().expect("waiter"))
    });
    match first {
        First::App => Run {
            app: first_side,
            peer: second_side,
        },
        First::Peer => Run {
            app: second_side,
            peer: first_side,
        },
    }
}

/// The kernel run: app in the twin's app namespace, peer in the twin's peer namespace.
fn run_kernel(prog: &Path, topo: &Topology, twin: &KernelTwin, port: u16, first: First) -> Run {
    let mut app = twin.app_cmd(prog);
    app.args(app_args(topo, port));
    let mut peer = twin.peer_cmd(prog);
    peer.args(peer_args(topo, port));
    run_pair(first, app, peer)
}

/// The lstack run: app in the root namespace on liblstack.so, peer in the topology's
/// peer namespace.
fn run_lstack(
    prog: &Path,
    topo: &Topology,
    name: &str,
    port: u16,
    first: First,
    mode: StackThreadMode,
) -> Run {
    let lib = common::liblstack();
    let tmp = common::TempDir::new(&format!("lstack-semantics-conf-{name}"));
    let (mut config, prefix) = common::config_for(topo, name);
    config.stack_thread_mode = mode;
    let conf = tmp.path().join("lstack.toml");
    std::fs::write(&conf, config.to_toml_string())
        .unwrap_or_else(|e| panic!("writing {}: {e}", conf.display()));
    let mut app = Command::new(prog);
    app.args(app_args(topo, port))
        .env("LD_PRELOAD", &lib)
        .env("LSTACK_CONF_PATH", &conf);
    let mut peer = topo.cmd(prog);
    peer.args(peer_args(topo, port));
    let run = run_pair(first, app, peer);
    if let Err(e) = hugepages::remove_dpdk_runtime_dir(&prefix) {
        eprintln!("{e:#}");
    }
    run
}

fn app_args(topo: &Topology, port: u16) -> Vec<String> {
    vec![
        "app".into(),
        topo.peer_ip4.to_string(),
        port.to_string(),
        topo.peer_ip6.to_string(),
    ]
}

fn peer_args(topo: &Topology, port: u16) -> Vec<String> {
    vec![
        "peer".into(),
        topo.stack_ip4.to_string(),
        port.to_string(),
        topo.stack_ip6.to_string(),
    ]
}

/// The step a transcript line reports on: the text before " = " (the whole line if
/// there is none), e.g. `app: recv(4, MSG_DONTWAIT)`.
fn step(line: &str) -> &str {
    line.split(" = ").next().unwrap_or(line)
}

/// Kernel and lstack transcripts side by side. Rows are aligned on the longest common
/// subsequence of their steps, so the same step sits on one row even when its result
/// differs; rows that differ are marked `!`.
fn side_by_side(kernel: &[String], lstack: &[String]) -> String {
    let (n, m) = (kernel.len(), lstack.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if step(&kernel[i]) == step(&lstack[j]) {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let width = kernel.iter().map(String::len).max().unwrap_or(0).max(6);
    let mut out = format!("  {:<width$} | lstack\n", "kernel");
    let _ = writeln!(out, "  {:-<width$}-+-{:-<width$}", "", "");
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && step(&kernel[i]) == step(&lstack[j]) {
            let mark = if kernel[i] == lstack[j] { ' ' } else { '!' };
            let _ = writeln!(out, "{mark} {:<width$} | {}", kernel[i], lstack[j]);
            i += 1;
            j += 1;
        } else if j >= m || (i < n && lcs[i + 1][j] >= lcs[i][j + 1]) {
            let _ = writeln!(out, "! {:<width$} |", kernel[i]);
            i += 1;
        } else {
            let _ = writeln!(out, "! {:<width$} | {}", "", lstack[j]);
            j += 1;
        }
    }
    out
}

/// Runs program `name` on the kernel and on lstack and compares the transcripts.
fn check(name: &str, port: u16, first: First) {
    require_root();
    let lib = common::liblstack();
    let bin_dir = common::TempDir::new(&format!("lstack-semantics-{name}"));
    let prog = compile(name, bin_dir.path());
    let topo = Topology::new(TopologyOptions {
        name_hint: "psem".into(),
        kernel_twin: true,
        ..TopologyOptions::default()
    })
    .expect("creating the topology and its kernel twin");
    let twin = topo.kernel_twin.clone().expect("kernel twin");

    let kernel = run_kernel(&prog, &topo, &twin, port, first);
    assert!(
        kernel.app.ok() && kernel.peer.ok(),
        "{name}: the kernel baseline run failed, so the program itself is broken:\n{}\n{}",
        kernel.transcript().join("\n"),
        kernel.stderr_report()
    );

    let k = kernel.transcript();
    // Both ways of running the stack: its own threads, and inside the
    // application's (run to completion).
    for mode in [
        StackThreadMode::RunToWakeup,
        StackThreadMode::RunToCompletion,
    ] {
        let lstack = run_lstack(&prog, &topo, name, port, first, mode);
        let l = lstack.transcript();
        if k != l {
            panic!(
                "{name}: the transcripts differ (kernel baseline vs app on {}, {mode})\n\n{}\n{}",
                lib.display(),
                side_by_side(&k, &l),
                lstack.stderr_report()
            );
        }
    }
    eprintln!(
        "{name}: identical transcripts in both modes:\n{}",
        k.join("\n")
    );
}

#[test]
fn epoll_lt() {
    check("epoll_lt", 7100, First::Peer);
}

#[test]
fn epoll_et() {
    check("epoll_et", 7110, First::Peer);
}

#[test]
fn epoll_oneshot() {
    check("epoll_oneshot", 7120, First::Peer);
}

#[test]
fn epoll_rdhup() {
    check("epoll_rdhup", 7130, First::Peer);
}

#[test]
fn poll_mix() {
    check("poll_mix", 7140, First::Peer);
}

#[test]
fn select_mix() {
    check("select_mix", 7150, First::Peer);
}

#[test]
fn nb_connect() {
    check("nb_connect", 7160, First::Peer);
}

#[test]
fn blocking_io() {
    check("blocking_io", 7170, First::Peer);
}

#[test]
fn accept() {
    check("accept", 7180, First::App);
}

#[test]
fn half_close() {
    check("half_close", 7190, First::Peer);
}

#[test]
fn rst() {
    check("rst", 7200, First::Peer);
}

#[test]
fn sigpipe() {
    check("sigpipe", 7210, First::Peer);
}

#[test]
fn peek() {
    check("peek", 7220, First::Peer);
}

#[test]
fn fcntl_nonblock() {
    check("fcntl_nonblock", 7230, First::Peer);
}

#[test]
fn names() {
    check("names", 7240, First::Peer);
}

#[test]
fn udp_sendto() {
    check("udp_sendto", 7250, First::Peer);
}

#[test]
fn udp_connected() {
    check("udp_connected", 7260, First::Peer);
}

#[test]
fn signal_exit() {
    check("signal_exit", 7280, First::Peer);
}

#[test]
fn mmsg() {
    check("mmsg", 7290, First::App);
}

#[test]
fn close_range() {
    check("close_range", 7300, First::Peer);
}

#[test]
fn bufsize() {
    check("bufsize", 7310, First::App);
}

#[test]
fn close_exit() {
    check("close_exit", 7270, First::Peer);
}

/// Every program in `tests/posix` has a test above (a new program without one would
/// silently never run).
#[test]
fn every_program_has_a_test() {
    let tested = [
        "epoll_lt",
        "epoll_et",
        "epoll_oneshot",
        "epoll_rdhup",
        "poll_mix",
        "select_mix",
        "nb_connect",
        "blocking_io",
        "accept",
        "half_close",
        "rst",
        "sigpipe",
        "peek",
        "fcntl_nonblock",
        "names",
        "udp_sendto",
        "udp_connected",
        "close_exit",
        "signal_exit",
        "mmsg",
        "close_range",
        "bufsize",
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/posix");
    let mut programs: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".c").map(str::to_owned)
        })
        .collect();
    programs.sort();
    let mut expected: Vec<String> = tested.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(programs, expected);
}
