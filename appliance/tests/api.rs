//! The control API end to end: the real config store, machine applier
//! and supervisor behind the control socket, driven through the client and
//! through `appliancectl --json`; and the `applianced` binary itself,
//! stopped by SIGTERM.
//!
//! Everything runs inside a fresh network namespace, so the sysctls the
//! applier writes (`/proc/sys/net`) are that namespace's; they are read
//! back with sysctl(8) through `ip netns exec`. The supervised "instance"
//! is a shell (`exec sleep N`): it never opens a socket, so the preloaded
//! liblstack never starts a stack. A change of an instance's address is one
//! that can cut the operator off, so it waits for confirmation and, left
//! unconfirmed, is really rolled back: the sysctl it set, the generated
//! lstack config and the process all come back. Needs root.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use appliance::api::{self, ClientError, Handler, Request, Response, Which};
use appliance::machine::MachineApplier;
use appliance::store::{ConfigStore, RollbackWatcher, StoreOptions, SystemClock};
use appliance::supervisor::{Paths, ProcessState, Supervisor, SupervisorOptions};
use support::{liblstack, Netns};

const APPLIANCECTL: &str = env!("CARGO_BIN_EXE_appliancectl");
const APPLIANCED: &str = env!("CARGO_BIN_EXE_applianced");

/// An appliance config with one instance (`exec sleep <sleep>`) on
/// `host_addr`, and `net.ipv4.ip_forward` set when `ip_forward` is given.
fn config(sleep: u32, host_addr: &str, ip_forward: Option<u8>) -> String {
    let sysctl = ip_forward
        .map(|v| format!("\n[sysctl]\n\"net.ipv4.ip_forward\" = {v}\n"))
        .unwrap_or_default();
    format!(
        r#"[[instances]]
name = "app"
command = ["/bin/sh", "-c", "exec sleep {sleep}"]
restart = {{ mode = "on-failure", initial_backoff_ms = 50, max_backoff_ms = 200 }}

[instances.lstack]
host_addr = "{host_addr}"
mask_addr = "255.255.255.0"
devices = "02:00:00:00:00:01"
dpdk_args = ["--no-pci"]
{sysctl}"#
    )
}

fn appliancectl(socket: &Path, args: &[&str]) -> Output {
    Command::new(APPLIANCECTL)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("running appliancectl")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "appliancectl failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("appliancectl --json prints JSON")
}

fn app_pid(ask: &dyn Fn(Request) -> Result<Response, ClientError>) -> u32 {
    match ask(Request::Status).unwrap() {
        Response::Status { processes, .. } => {
            assert_eq!(processes.len(), 1, "{processes:?}");
            assert_eq!(processes[0].state, ProcessState::Running, "{processes:?}");
            processes[0].pid.unwrap()
        }
        other => panic!("{other:?}"),
    }
}

fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        None,
    )
    .is_ok()
}

#[test]
fn set_confirm_rollback_status_and_facts_through_the_socket() {
    let ns = Netns::new("apapi");
    ns.set("net.ipv4.ip_forward", "0");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("appliance.toml"),
        config(1000, "10.77.0.2", None),
    )
    .unwrap();
    let socket = dir.path().join("api/appliance.sock");
    let generated = dir.path().join("run/app.toml");

    ns.run(|| {
        let supervisor = Arc::new(Supervisor::new(SupervisorOptions {
            ready_uptime: Duration::from_millis(200),
            ..SupervisorOptions::default()
        }));
        let paths = Paths {
            lstack_lib: liblstack(),
            ltran_bin: dir.path().join("no-ltran"),
            runtime_dir: dir.path().join("run"),
            gazelle_run_dir: Some(dir.path().join("gazelle")),
        };
        let mut applier = MachineApplier::new("/", paths, Arc::clone(&supervisor));
        applier.ready_timeout = Some(Duration::from_secs(10));
        let mut store = ConfigStore::open(
            &state,
            StoreOptions {
                keep: 5,
                confirm_timeout: Duration::from_secs(2),
            },
            SystemClock,
            applier,
        )
        .unwrap();
        store.apply_at_start().unwrap();
        let store = Arc::new(Mutex::new(store));
        let watcher = RollbackWatcher::start(Arc::clone(&store), Duration::from_millis(100));
        let handler = Handler::new(Arc::clone(&store), Arc::clone(&supervisor), "/", SystemClock);
        let server = api::Server::start(&socket, move |r| handler.handle(r)).unwrap();
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the control socket is root-only");
        let ask = |r: Request| api::request(&socket, r, Duration::from_secs(30));

        assert_eq!(
            ask(Request::Ping).unwrap(),
            Response::Pong {
                daemon: "applianced".into(),
                pid: std::process::id()
            }
        );
        let first_pid = app_pid(&ask);
        // The boot apply set what the data path needs.
        assert_eq!(ns.get("net.ipv4.conf.all.rp_filter"), "0");

        // Validation only: a bad value names its field; nothing changes.
        let bad = config(1000, "10.77.0.2", None).replace(
            "dpdk_args",
            "tcp_conn_count = 30000\ndpdk_args",
        );
        match ask(Request::Validate { toml: bad.clone() }).unwrap_err() {
            ClientError::Refused { message, field } => {
                assert_eq!(field.as_deref(), Some("instances[0].lstack.tcp_conn_count"));
                assert!(message.contains("out of range 1..=20000"), "{message}");
            }
            other => panic!("{other}"),
        }
        assert!(matches!(
            ask(Request::SetConfig {
                toml: bad,
                base: None
            }),
            Err(ClientError::Refused { .. })
        ));
        assert_eq!(app_pid(&ask), first_pid, "an invalid set touches nothing");
        match ask(Request::Validate {
            toml: config(1000, "10.77.0.3", None),
        })
        .unwrap()
        {
            Response::Valid {
                confirmation_reasons,
                ..
            } => assert_eq!(confirmation_reasons, ["instance addresses or MACs changed"]),
            other => panic!("{other:?}"),
        }

        // A harmless change is applied and saved at once; it says which
        // running config it was made from, and that is still the one.
        let running = |ask: &dyn Fn(Request) -> Result<Response, ClientError>| match ask(
            Request::GetConfig {
                which: Which::Running,
            },
        )
        .unwrap()
        {
            Response::Config { toml: Some(t), .. } => t,
            other => panic!("{other:?}"),
        };
        let base_a = running(&ask);
        let saved_b = match ask(Request::SetConfig {
            toml: config(1001, "10.77.0.2", None),
            base: Some(base_a.clone()),
        })
        .unwrap()
        {
            Response::Changed(c) => {
                assert!(!c.confirmation_needed);
                assert!(c.pending.is_none());
                c.version.unwrap()
            }
            other => panic!("{other:?}"),
        };
        let b_pid = app_pid(&ask);
        assert_ne!(b_pid, first_pid, "the changed instance was restarted");
        assert!(!alive(first_pid));

        // A change made from the config before that one (a second client
        // that read it earlier) is refused and changes nothing: it would
        // silently undo the first client's change.
        match ask(Request::SetConfig {
            toml: config(1002, "10.77.0.2", None),
            base: Some(base_a),
        })
        .unwrap_err()
        {
            ClientError::Refused { message, field } => {
                assert!(message.contains("changed since"), "{message}");
                assert_eq!(field, None);
            }
            other => panic!("{other}"),
        }
        assert_eq!(app_pid(&ask), b_pid, "a refused change touches nothing");
        assert!(running(&ask).contains("1001"));

        // A change of address (and a sysctl) needs confirmation...
        match ask(Request::SetConfig {
            toml: config(1001, "10.77.0.3", Some(1)),
            base: None,
        })
        .unwrap()
        {
            Response::Changed(c) => {
                assert!(c.confirmation_needed);
                let pending = c.pending.unwrap();
                assert!(pending.seconds_left <= 2, "{pending:?}");
                assert_eq!(pending.reasons, ["instance addresses or MACs changed"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(ns.get("net.ipv4.ip_forward"), "1");
        assert!(std::fs::read_to_string(&generated)
            .unwrap()
            .contains("10.77.0.3"));
        let c_pid = app_pid(&ask);
        assert_ne!(c_pid, b_pid);
        // ...and, left unconfirmed, rolls back by itself.
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            match ask(Request::Status).unwrap() {
                Response::Status { pending: None, applying: false, .. } => break,
                Response::Status { .. } => {}
                other => panic!("{other:?}"),
            }
            assert!(Instant::now() < end, "no rollback 20 s after a 2 s deadline");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(ns.get("net.ipv4.ip_forward"), "0", "the sysctl came back");
        assert!(std::fs::read_to_string(&generated)
            .unwrap()
            .contains("10.77.0.2"));
        let rolled_pid = app_pid(&ask);
        assert_ne!(rolled_pid, c_pid, "the instance runs its old config again");
        assert!(!alive(c_pid));
        match ask(Request::GetConfig {
            which: Which::Running,
        })
        .unwrap()
        {
            Response::Config { toml, config, .. } => {
                let toml = toml.unwrap();
                assert!(toml.contains("10.77.0.2") && toml.contains("sleep 1001"), "{toml}");
                assert_eq!(config.unwrap().instances[0].command[2], "exec sleep 1001");
            }
            other => panic!("{other:?}"),
        }
        match ask(Request::Confirm).unwrap_err() {
            ClientError::Refused { message, .. } => {
                assert!(message.contains("no change is pending"), "{message}");
            }
            other => panic!("{other}"),
        }

        // Confirmed in time, a change stays and is saved.
        let Response::Changed(c) = ask(Request::SetConfig {
            toml: config(1001, "10.77.0.4", Some(1)),
            base: None,
        })
        .unwrap() else {
            panic!("not a change")
        };
        assert!(c.confirmation_needed);
        let Response::Confirmed { version: saved_d } = ask(Request::Confirm).unwrap() else {
            panic!("not confirmed")
        };
        assert_eq!(ns.get("net.ipv4.ip_forward"), "1");
        match ask(Request::History).unwrap() {
            Response::History { versions, pending } => {
                let ids: Vec<&str> = versions.iter().map(|v| v.id.as_str()).collect();
                assert_eq!(ids, [saved_d.as_str(), saved_b.as_str()]);
                assert!(pending.is_none());
            }
            other => panic!("{other:?}"),
        }
        match ask(Request::GetConfig { which: Which::Saved }).unwrap() {
            Response::Config { toml, .. } => assert!(toml.unwrap().contains("10.77.0.4")),
            other => panic!("{other:?}"),
        }

        // The operator's rollback of a pending change, before its deadline.
        let d_pid = app_pid(&ask);
        let Response::Changed(c) = ask(Request::SetConfig {
            toml: config(1001, "10.77.0.5", Some(0)),
            base: None,
        })
        .unwrap() else {
            panic!("not a change")
        };
        assert!(c.confirmation_needed);
        assert_eq!(ns.get("net.ipv4.ip_forward"), "0");
        assert_eq!(
            ask(Request::Rollback).unwrap(),
            Response::RolledBack {
                result: "ok".into()
            }
        );
        assert_eq!(ns.get("net.ipv4.ip_forward"), "1");
        assert!(std::fs::read_to_string(&generated)
            .unwrap()
            .contains("10.77.0.4"));
        assert_ne!(app_pid(&ask), d_pid);

        // Facts.
        match ask(Request::Host).unwrap() {
            Response::Host(h) => {
                assert!(h.cpu_count > 0);
                assert!(h.memory.total_bytes > 0);
                assert!(!h.hugepages.pools.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(ask(Request::Hugepages).unwrap(), Response::Hugepages(s) if !s.supported_sizes_kb.is_empty()));
        assert!(matches!(ask(Request::Nics).unwrap(), Response::Nics { .. }));

        // appliancectl, as scripts use it.
        let status = json(&appliancectl(&socket, &["--json", "status"]));
        assert_eq!(status["kind"], "status");
        assert_eq!(status["processes"][0]["name"], "app");
        assert_eq!(status["processes"][0]["state"], "running");
        assert_eq!(status["processes"][0]["kind"], "instance");
        let host = json(&appliancectl(&socket, &["--json", "host"]));
        assert!(host["cpu_count"].as_u64().unwrap() > 0, "{host}");
        let got = json(&appliancectl(&socket, &["--json", "config", "get"]));
        assert!(got["toml"].as_str().unwrap().contains("10.77.0.4"), "{got}");
        let history = json(&appliancectl(&socket, &["--json", "config", "history"]));
        assert_eq!(history["versions"].as_array().unwrap().len(), 2);
        let table = appliancectl(&socket, &["status"]);
        let text = String::from_utf8_lossy(&table.stdout);
        assert!(text.contains("app") && text.contains("running"), "{text}");
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, config(1001, "10.77.0.4", None).replace("dpdk_args", "colour = 1\ndpdk_args")).unwrap();
        let out = appliancectl(&socket, &["--json", "config", "validate", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
        let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(err["field"], "instances[0].lstack.colour", "{err}");
        // Only root may talk to the daemon.
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", APPLIANCECTL, "--socket"])
            .arg(&socket)
            .arg("status")
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not allowed to talk to applianced"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        drop(server);
        assert!(!socket.exists(), "the socket goes with the server");
        let out = appliancectl(&socket, &["status"]);
        assert_eq!(out.status.code(), Some(3));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "applianced is not running (no control socket at {})",
                socket.display()
            )),
            "{stderr}"
        );
        drop(watcher);
        let last = supervisor.status()[0].pid.unwrap();
        supervisor.stop_all();
        assert!(!alive(last));
    });
}

#[test]
fn applianced_runs_the_config_and_stops_cleanly_on_sigterm() {
    let ns = Netns::new("apapi");
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc/appliance.toml");
    std::fs::create_dir_all(etc.parent().unwrap()).unwrap();
    std::fs::write(&etc, config(1002, "10.77.1.2", None)).unwrap();
    let socket = dir.path().join("appliance.sock");
    let lib = liblstack();
    let mut daemon = Command::new("ip")
        .args(["netns", "exec", &ns.name, APPLIANCED, "--config"])
        .arg(&etc)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--socket")
        .arg(&socket)
        .arg("--runtime-dir")
        .arg(dir.path().join("run"))
        .arg("--lstack-lib")
        .arg(&lib)
        .args(["--ready-uptime-ms", "200"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // ip netns exec execs the daemon: same pid.
    let daemon_pid = daemon.id();
    let end = Instant::now() + Duration::from_secs(20);
    let child_pid = loop {
        let out = appliancectl(&socket, &["--json", "status"]);
        if out.status.success() {
            let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if status["processes"][0]["state"] == "running" {
                break u32::try_from(status["processes"][0]["pid"].as_u64().unwrap()).unwrap();
            }
        }
        if let Some(exit) = daemon.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(daemon.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("applianced exited with {exit}: {err}");
        }
        assert!(
            Instant::now() < end,
            "applianced not serving a running instance after 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // The config given by --config became the store's saved config.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("state/appliance.toml")).unwrap(),
        std::fs::read_to_string(&etc).unwrap()
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(daemon_pid).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = daemon.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < end,
            "applianced still running 30 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut log = String::new();
    std::io::Read::read_to_string(daemon.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(exit.success(), "applianced exited with {exit}: {log}");
    assert!(log.contains("took the config"), "{log}");
    assert!(log.contains("stopping process=app"), "{log}");
    assert!(!alive(child_pid), "the instance stopped with the daemon");
    assert!(!socket.exists(), "the control socket is removed");
}
