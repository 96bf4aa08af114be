//! The OpenAPI document is the contract: schemathesis (a property-based API
//! fuzzer, from PyPI) reads `/api/v1/openapi.json` from the live HTTPS
//! server and sends it requests made from the schemas (valid and invalid
//! ones); every answer must be a documented status with a documented
//! content type and a body valid against its schema, and none may be a
//! 5xx. The server runs over a real applianced handler and stand-in
//! ltran/lstack sockets (see `support`), with an admin token.
//!
//! schemathesis is installed on first use into `target/schemathesis` (a
//! venv; needs python3-venv and PyPI), pinned to [`SCHEMATHESIS`].

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use gazelle_webui::auth::Role;
use support::Fixture;

const SCHEMATHESIS: &str = "schemathesis==4.32.5";

fn schemathesis() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/schemathesis");
    let st = venv.join("bin/st");
    if !st.exists() {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 (with python3-venv) is needed for the contract test")
            .success();
        assert!(
            ok,
            "python3 -m venv {} failed (install python3-venv)",
            venv.display()
        );
        let ok = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", SCHEMATHESIS])
            .status()
            .unwrap()
            .success();
        assert!(ok, "pip install {SCHEMATHESIS} failed");
    }
    st
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_matches_the_openapi_document() {
    let st = schemathesis();
    let f = Fixture::new();
    let _poller = gazelle_webui::poller::spawn(f.state.clone());
    let (_, token) = f
        .state
        .auth
        .create_token("admin", "schemathesis", Role::Admin)
        .unwrap();
    let tls = f.dir.path().join("tls");
    gazelle_webui::tls::ensure_certificate(&tls, &[]).unwrap();
    let config = gazelle_webui::tls::server_config(&tls).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = f.app.clone();
    let server = tokio::spawn(async move {
        axum_server::from_tcp_rustls(
            listener,
            axum_server::tls_rustls::RustlsConfig::from_config(config),
        )
        .serve(app.into_make_service_with_connect_info::<SocketAddr>())
        .await
    });
    let report = f.dir.path().join("junit.xml");
    let st_dir = st.parent().unwrap().parent().unwrap().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(st)
            .arg("run")
            .arg(format!("https://localhost:{port}/api/v1/openapi.json"))
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args(["--tls-verify", "false"])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance",
            ])
            // The live stream never ends: it is checked by the handler tests.
            .args(["--exclude-path", "/api/v1/stats/stream"])
            .args(["--max-examples", "15", "--workers", "1", "--seed", "1"])
            .args(["--request-timeout", "30"])
            .arg(format!("--report-junit-path={}", report.display()))
            .args(["--report", "junit"])
            .env("NO_COLOR", "1")
            // Its cache of failures stays with the build, not the sources.
            .current_dir(st_dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    server.abort();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis found answers that break the contract ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // It really ran: operations were tested.
    assert!(stdout.contains("passed"), "{stdout}");
}
