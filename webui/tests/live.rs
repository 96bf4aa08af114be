//! The API against the real thing: the `applianced` binary running a real
//! ltran (owning a veth of a network-namespace topology, DPDK
//! `net_af_packet`) and an unmodified `redis-server` on lstack behind it,
//! loaded by a kernel `redis-cli` in the peer namespace; the
//! `gazelle-webui` binary in front, over HTTPS with its self-signed
//! certificate, driven with `curl` as a script would.
//!
//! - every statistic over REST equals `gazellectl --json` of the same
//!   moment (counters asked before and after the CLI bracket its values);
//! - a bond change over REST is pending, runs (ltran's live bond has it)
//!   and is confirmed; another is left to roll back by itself, and does;
//!   an invalid one is refused naming `ltran.bond_mtu`, with ltran
//!   untouched;
//! - the audit log has them all; the live stream and /metrics answer;
//!   plain HTTP redirects to HTTPS.
//!
//! Needs root, hugepages, curl, redis-server/redis-tools and
//! `target/release/{applianced,ltran,liblstack.so,gazellectl}` (`cargo
//! build --release -p appliance -p ltran -p lstack-preload -p gazellectl`).

mod rig;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rig::{release, wait_for, Rig, PASSWORD, PORT};
use serde_json::{json, Value};

/// The REST API through curl.
struct Api {
    base: String,
    cacert: PathBuf,
    token: Option<String>,
}

impl Api {
    /// `(status, body)`.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        extra: &[&str],
    ) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "120", "-X", method, "--cacert"])
            .arg(&self.cacert)
            .args(["-w", "\n%{http_code}"]);
        if let Some(t) = &self.token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        if let Some(b) = body {
            cmd.args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &b.to_string(),
            ]);
        }
        cmd.args(extra).arg(format!("{}{path}", self.base));
        let out = cmd.output().expect("running curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    fn get(&self, path: &str) -> Value {
        let (code, body) = self.call("GET", path, None, &[]);
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    fn send(&self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        let (code, text) = self.call(method, path, Some(body), &[]);
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

fn gazellectl(run_dir: &Path, args: &[&str]) -> Value {
    let out = Command::new(release("gazellectl"))
        .arg("--run-dir")
        .arg(run_dir)
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gazellectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `mid` was taken between `before` and `after`: the same shape, the same
/// strings, and every number between the two (counters only grow; levels
/// move within what they were).
fn between(before: &Value, mid: &Value, after: &Value, at: &str) {
    match (before, mid, after) {
        (Value::Object(a), Value::Object(m), Value::Object(b)) => {
            let keys = |o: &serde_json::Map<String, Value>| o.keys().cloned().collect::<Vec<_>>();
            assert_eq!(
                keys(m),
                keys(a),
                "{at}: REST and gazellectl have other fields"
            );
            for (k, v) in m {
                between(&a[k], v, &b[k], &format!("{at}.{k}"));
            }
        }
        (Value::Array(a), Value::Array(m), Value::Array(b)) => {
            assert_eq!(a.len(), m.len(), "{at}: lengths differ");
            assert_eq!(b.len(), m.len(), "{at}: lengths differ");
            for (i, v) in m.iter().enumerate() {
                between(&a[i], v, &b[i], &format!("{at}[{i}]"));
            }
        }
        (Value::Number(a), Value::Number(m), Value::Number(b)) => {
            let (a, m, b) = (
                a.as_f64().unwrap(),
                m.as_f64().unwrap(),
                b.as_f64().unwrap(),
            );
            assert!(
                a.min(b) - 1e-6 <= m && m <= a.max(b) + 1e-6,
                "{at}: gazellectl says {m}, REST said {a} before and {b} after"
            );
        }
        (a, m, _) => assert_eq!(a, m, "{at}"),
    }
}

#[test]
fn rest_equals_gazellectl_and_bond_changes_confirm_or_roll_back() {
    let rig = Rig::start("webui", 10);
    let (ip, gazelle_run) = (rig.ip.clone(), rig.gazelle_run.clone());
    let topo = &rig.topo;
    let dir = rig.dir.path().to_owned();
    let https = rig.https;
    let http = rig.http;
    let mut api = Api {
        base: rig.base(),
        cacert: rig.cacert(),
        token: None,
    };

    // A browser's login, then an admin token for the rest (made with the
    // session's CSRF token and our own Origin).
    let jar = dir.join("cookies");
    let jar_s = jar.to_str().unwrap();
    let (code, body) = api.call(
        "POST",
        "/api/v1/auth/login",
        Some(&json!({"username": "admin", "password": PASSWORD})),
        &["-c", jar_s],
    );
    assert_eq!(code, 200, "{body}");
    let csrf = serde_json::from_str::<Value>(&body).unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let origin = format!("Origin: https://localhost:{https}");
    let (code, body) = api.call(
        "POST",
        "/api/v1/tokens",
        Some(&json!({"name": "live-test", "role": "admin"})),
        &[
            "-b",
            jar_s,
            "-H",
            &format!("X-CSRF-Token: {csrf}"),
            "-H",
            &origin,
        ],
    );
    assert_eq!(code, 201, "{body}");
    api.token = Some(
        serde_json::from_str::<Value>(&body).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned(),
    );

    // Traffic from a kernel client, then the statistics side by side.
    wait_for(
        "redis answering through lstack",
        Duration::from_secs(30),
        || {
            topo.cmd("redis-cli")
                .args(["-h", &ip, "-p", PORT, "PING"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
        },
    );
    for i in 0..50 {
        let out = topo
            .cmd("redis-cli")
            .args(["-h", &ip, "-p", PORT, "SET", &format!("k{i}"), "v"])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let views: [(String, Vec<&str>); 8] = [
        ("/api/v1/stats/ltran".into(), vec!["ltran", "show"]),
        (
            "/api/v1/stats/ltran/instances".into(),
            vec!["ltran", "show", "-i"],
        ),
        (
            "/api/v1/stats/ltran/burst".into(),
            vec!["ltran", "show", "-b"],
        ),
        (
            "/api/v1/stats/ltran/latency".into(),
            vec!["ltran", "show", "-l"],
        ),
        (
            format!("/api/v1/stats/lstack/{ip}"),
            vec!["lstack", "show", ip.as_str()],
        ),
        (
            format!("/api/v1/stats/lstack/{ip}/connections"),
            vec!["lstack", "show", ip.as_str(), "-c"],
        ),
        (
            format!("/api/v1/stats/lstack/{ip}/snmp"),
            vec!["lstack", "show", ip.as_str(), "-s"],
        ),
        (
            format!("/api/v1/stats/lstack/{ip}/latency"),
            vec!["lstack", "show", ip.as_str(), "-l"],
        ),
    ];
    for (path, args) in &views {
        let before = api.get(path);
        let cli = gazellectl(&gazelle_run, args);
        let after = api.get(path);
        between(&before, &cli, &after, path);
    }
    let stats = api.get(&format!("/api/v1/stats/lstack/{ip}"));
    assert!(
        stats["threads"][0]["rx_packets"].as_u64().unwrap() > 50,
        "{stats}"
    );

    // The live stream and /metrics (loopback).
    let (_, stream) = api.call(
        "GET",
        "/api/v1/stats/stream",
        None,
        &["-N", "--max-time", "4"],
    );
    assert!(
        stream.contains("event: rates") && stream.contains("\"rx_pps\""),
        "{stream}"
    );
    let anonymous = Api {
        base: api.base.clone(),
        cacert: api.cacert.clone(),
        token: None,
    };
    let (code, metrics) = anonymous.call("GET", "/metrics", None, &[]);
    assert_eq!(code, 200, "{metrics}");
    assert!(
        metrics.contains("gazelle_ltran_dispatch_total{counter=\"tcp\"}"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("gazelle_appliance_process_state{process=\"redis\",state=\"running\"} 1.0"),
        "{metrics}"
    );

    // A bond change: pending, in force, confirmed.
    let ltran_pid = api.get("/api/v1/stats/ltran")["pid"].clone();
    let (code, change) = api.send("PATCH", "/api/v1/bond", &json!({"miimon_ms": 50}));
    assert_eq!(code, 200, "{change}");
    assert_eq!(change["confirmation_needed"], true, "{change}");
    let live = api.get("/api/v1/bond");
    assert_eq!(
        live["live"]["miimon_ms"], 50,
        "ltran runs the new bond: {live}"
    );
    assert_ne!(
        api.get("/api/v1/stats/ltran")["pid"],
        ltran_pid,
        "ltran was restarted"
    );
    let (code, confirmed) = api.send("POST", "/api/v1/config/confirm", &json!(null));
    assert_eq!(code, 200, "{confirmed}");
    let saved = api.get("/api/v1/config?which=saved");
    assert!(
        saved["toml"].as_str().unwrap().contains("bond_miimon = 50"),
        "{saved}"
    );

    // Another, left alone: rolled back at its deadline, ltran back on 50.
    let (code, change) = api.send("PATCH", "/api/v1/bond", &json!({"miimon_ms": 70}));
    assert_eq!(code, 200, "{change}");
    assert_eq!(change["confirmation_needed"], true);
    assert_eq!(api.get("/api/v1/bond")["live"]["miimon_ms"], 70);
    wait_for("the rollback", Duration::from_secs(90), || {
        let s = api.get("/api/v1/status");
        s["pending"].is_null() && !s["applying"].as_bool().unwrap_or(true)
    });
    wait_for(
        "ltran back on the old bond",
        Duration::from_secs(60),
        || api.get("/api/v1/bond")["live"]["miimon_ms"] == 50,
    );
    assert_eq!(api.get("/api/v1/bond")["config"]["miimon_ms"], 50);

    // An invalid change: refused naming the field, nothing touched.
    let pid_before = api.get("/api/v1/stats/ltran")["pid"].clone();
    let running_before = api.get("/api/v1/config")["toml"].clone();
    let (code, problem) = api.send("PATCH", "/api/v1/bond", &json!({"mtu": 9000}));
    assert_eq!(code, 422, "{problem}");
    assert_eq!(problem["field"], "ltran.bond_mtu", "{problem}");
    assert_eq!(
        api.get("/api/v1/stats/ltran")["pid"],
        pid_before,
        "ltran was touched"
    );
    assert_eq!(api.get("/api/v1/config")["toml"], running_before);

    // The audit log has all of it (the rollback as the poller saw it).
    wait_for(
        "the rollback in the audit log",
        Duration::from_secs(10),
        || {
            api.get("/api/v1/audit")
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["outcome"] == "rolled_back")
        },
    );
    let audit = api.get("/api/v1/audit");
    let outcomes: Vec<(String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for expected in [
        ("bond.update", "pending"),
        ("config.confirm", "confirmed"),
        ("config.pending-ended", "rolled_back"),
        ("bond.update", "refused"),
    ] {
        assert!(
            outcomes
                .iter()
                .any(|(a, o)| a == expected.0 && o == expected.1),
            "no {expected:?} in {outcomes:?}"
        );
    }

    // Plain HTTP only redirects.
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
        ])
        .arg(format!("http://127.0.0.1:{http}/api/v1/bond?x=1"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("308 https://127.0.0.1:{https}/api/v1/bond?x=1")
    );

    rig.stop();
}
