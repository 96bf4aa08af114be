//! What the handler tests share: the app over a real applianced handler
//! (config store, confirm-or-rollback, supervisor) served on a real
//! control socket in a temporary directory, with an applier that only
//! records what it was asked to apply; stand-in ltran and lstack control
//! sockets that answer fixed, growing counters; and requests built the way
//! a browser or a script sends them.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use appliance::api::{self as appliance_api, Handler};
use appliance::config::ApplianceConfig;
use appliance::store::{Applier, ConfigStore, RollbackWatcher, StoreOptions, SystemClock};
use appliance::supervisor::{Supervisor, SupervisorOptions};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use gazelle_ctl_proto::{
    BondPort, BondStatus, InstanceInfo, InstanceThread, LstackStats, LtranStats, ThreadCounters,
};
use gazelle_webui::auth::{Auth, Role};
use gazelle_webui::daemons::Daemons;
use gazelle_webui::{app, audit::AuditLog, AppState, MetricsAccess, Shared};
use tower::ServiceExt as _;

pub const ADMIN_PASSWORD: &str = "admin-password-1";
pub const VIEWER_PASSWORD: &str = "viewer-password-1";
pub const LSTACK_IP: &str = "192.168.100.10";

/// Records every config the store applies.
#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Vec<ApplianceConfig>>>);

impl Applier for Recorder {
    fn apply(&mut self, _old: &ApplianceConfig, new: &ApplianceConfig) -> anyhow::Result<()> {
        self.0.lock().unwrap().push(new.clone());
        Ok(())
    }
}

pub type Store = Arc<Mutex<ConfigStore<Recorder, SystemClock>>>;

pub struct Fixture {
    pub state: AppState,
    pub app: Router,
    pub store: Store,
    pub applied: Recorder,
    pub appliance: Option<appliance_api::Server>,
    pub ltran: Option<gazelle_ctl_proto::server::Server>,
    pub lstack: Option<gazelle_ctl_proto::server::Server>,
    _watcher: RollbackWatcher,
    /// Last: the servers' drops wake their accept loops through the
    /// sockets in it.
    pub dir: tempfile::TempDir,
}

/// ltran's statistics, a little further on each time they are asked for.
pub fn ltran_stats(n: u64) -> LtranStats {
    let mut s = LtranStats {
        pid: 4242,
        uptime_secs: 100 + n,
        bond: BondStatus {
            mode: 1,
            mac: "52:54:00:12:34:57".into(),
            miimon_ms: 100,
            active: Some(0),
            failovers: 2,
            announcements: 3,
            backup_dropped: 0,
            ports: vec![
                BondPort {
                    port_id: 0,
                    name: "net_af_packet0".into(),
                    iface: Some("veth0".into()),
                    link_up: true,
                    active: true,
                    ..Default::default()
                },
                BondPort {
                    port_id: 1,
                    name: "net_af_packet1".into(),
                    iface: Some("veth1".into()),
                    link_up: false,
                    active: false,
                    ..Default::default()
                },
            ],
        },
        rx_burst_histogram: vec![n, 2, 3, 4, 5, 6, 7],
        instances: vec![InstanceInfo {
            slot: 0,
            pid: 99,
            process: "redis-server".into(),
            ipv4: LSTACK_IP.into(),
            threads: vec![InstanceThread {
                rx_packets: 10 * n,
                tx_packets: 5 * n,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    s.bond.ports[0].counters.rx_packets = 1000 * n;
    s.bond.ports[0].counters.rx_bytes = 64_000 * n;
    s.dispatch.tcp = 100 * n;
    s.dispatch.rx_frames = 1000 * n;
    s.latency.tsc_hz = 1_000_000_000;
    s.latency.samples = n;
    s.latency.dispatch_cycles_total = 500 * n;
    s.latency.dispatch_cycles_max = 900;
    s
}

pub fn lstack_stats(n: u64) -> LstackStats {
    LstackStats {
        pid: 99,
        process: "redis-server".into(),
        ip: Some(LSTACK_IP.into()),
        uptime_secs: 50 + n,
        tcp_connections: 3,
        kernel_sockets: [("loopback".to_owned(), 2)].into(),
        unhonoured_options: [("IPPROTO_TCP/TCP_DEFER_ACCEPT".to_owned(), 1)].into(),
        threads: vec![ThreadCounters {
            rx_packets: 20 * n,
            tx_packets: 10 * n,
            drops: [("malformed".to_owned(), n)].into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub struct Options {
    pub ltran: bool,
    pub lstack: bool,
    pub confirm_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ltran: true,
            lstack: true,
            confirm_timeout: Duration::from_secs(120),
        }
    }
}

impl Fixture {
    pub fn new() -> Self {
        Self::with(Options::default())
    }

    pub fn with(options: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("run");
        std::fs::create_dir_all(&run_dir).unwrap();
        let applied = Recorder::default();
        let store = ConfigStore::open(
            dir.path().join("store"),
            StoreOptions {
                keep: 5,
                confirm_timeout: options.confirm_timeout,
            },
            SystemClock,
            applied.clone(),
        )
        .unwrap();
        let store = Arc::new(Mutex::new(store));
        let watcher = RollbackWatcher::start(Arc::clone(&store), Duration::from_millis(50));
        let supervisor = Arc::new(Supervisor::new(SupervisorOptions::default()));
        let handler = Handler::new(Arc::clone(&store), supervisor, "/", SystemClock);
        let socket = dir.path().join("appliance.sock");
        let appliance = appliance_api::Server::start(&socket, move |r| handler.handle(r)).unwrap();
        let ltran = options.ltran.then(|| {
            let n = AtomicU64::new(1);
            gazelle_ctl_proto::server::Server::start(
                &run_dir.join("ltran.sock"),
                "fake-ltran",
                move |r| match r {
                    gazelle_ctl_proto::Request::LtranStats => {
                        gazelle_ctl_proto::Response::LtranStats(ltran_stats(
                            n.fetch_add(1, Ordering::Relaxed),
                        ))
                    }
                    _ => gazelle_ctl_proto::Response::Error {
                        message: "not this".into(),
                    },
                },
            )
            .unwrap()
        });
        let lstack = options.lstack.then(|| {
            let n = AtomicU64::new(1);
            let reads = AtomicU64::new(1);
            gazelle_ctl_proto::server::Server::start(
                &run_dir.join(format!("lstack-{LSTACK_IP}.sock")),
                "fake-lstack",
                move |r| match r {
                    gazelle_ctl_proto::Request::LstackStats => {
                        gazelle_ctl_proto::Response::LstackStats(lstack_stats(
                            n.fetch_add(1, Ordering::Relaxed),
                        ))
                    }
                    gazelle_ctl_proto::Request::LstackConnections => {
                        gazelle_ctl_proto::Response::LstackConnections {
                            connections: vec![
                                gazelle_ctl_proto::Connection {
                                    thread: 0,
                                    state: "LISTEN".into(),
                                    local: format!("{LSTACK_IP}:6379"),
                                    remote: "*".into(),
                                    recv_queue: 0,
                                    send_queue: 0,
                                    recv_capacity: 65536,
                                    send_capacity: 65536,
                                    kernel: None,
                                },
                                gazelle_ctl_proto::Connection {
                                    thread: 0,
                                    state: "ESTAB".into(),
                                    local: "127.0.0.1:40000".into(),
                                    remote: "127.0.0.1:5432".into(),
                                    recv_queue: 0,
                                    send_queue: 0,
                                    recv_capacity: 131072,
                                    send_capacity: 16384,
                                    kernel: Some(gazelle_ctl_proto::KernelPathSocket {
                                        fd: 9,
                                        protocol: "tcp".into(),
                                        reason: "loopback".into(),
                                    }),
                                },
                            ],
                        }
                    }
                    gazelle_ctl_proto::Request::LstackSnmp => {
                        gazelle_ctl_proto::Response::LstackSnmp(
                            gazelle_ctl_proto::LstackSnmp {
                                pid: 99,
                                process: "redis-server".into(),
                                ip: Some(LSTACK_IP.into()),
                                threads: vec![gazelle_ctl_proto::Snmp::default()],
                                ..Default::default()
                            }
                            .with_total(),
                        )
                    }
                    gazelle_ctl_proto::Request::LstackLatency => {
                        gazelle_ctl_proto::Response::LstackLatency(
                            gazelle_ctl_proto::LstackLatency {
                                pid: 99,
                                process: "redis-server".into(),
                                ip: Some(LSTACK_IP.into()),
                                // Two more reads (1 µs and 2 µs) each time.
                                threads: vec![{
                                    let m = reads.fetch_add(1, Ordering::Relaxed);
                                    gazelle_ctl_proto::RxLatency::new(
                                        2 * m,
                                        3000 * m,
                                        1000,
                                        2000,
                                        vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, m, m],
                                    )
                                }],
                                ..Default::default()
                            }
                            .with_total(),
                        )
                    }
                    _ => gazelle_ctl_proto::Response::Error {
                        message: "not this".into(),
                    },
                },
            )
            .unwrap()
        });
        let state_dir = dir.path().join("state");
        std::fs::create_dir_all(&state_dir).unwrap();
        let (auth, _) = Auth::open(
            &state_dir,
            Some(ADMIN_PASSWORD.into()),
            Duration::from_secs(600),
        )
        .unwrap();
        auth.create_account("viewer", Role::Viewer, VIEWER_PASSWORD)
            .unwrap();
        let daemons = Daemons {
            appliance_socket: socket,
            run_dir,
            unix_prefix: String::new(),
            change_timeout: Duration::from_secs(30),
            query_timeout: Duration::from_secs(5),
        };
        let state = Shared::new(
            daemons,
            auth,
            AuditLog::new(&state_dir),
            MetricsAccess::Loopback,
        );
        Self {
            app: app(state.clone()),
            state,
            dir,
            store,
            applied,
            appliance: Some(appliance),
            ltran,
            lstack,
            _watcher: watcher,
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn running(&self) -> ApplianceConfig {
        self.store.lock().unwrap().running().clone()
    }

    pub fn applied_count(&self) -> usize {
        self.applied.0.lock().unwrap().len()
    }

    pub async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .unwrap();
        Answer {
            status,
            headers,
            body: body.to_vec(),
        }
    }

    /// Logs in and returns the session.
    pub async fn login(&self, username: &str, password: &str) -> Session {
        let answer = self
            .send(
                req(Method::POST, "/api/v1/auth/login")
                    .json(&serde_json::json!({"username": username, "password": password})),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        let cookie = answer
            .headers
            .get(header::SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        Session {
            cookie,
            csrf: answer.json()["csrf_token"].as_str().unwrap().to_owned(),
        }
    }
}

pub struct Session {
    /// `name=value`.
    pub cookie: String,
    pub csrf: String,
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .map_or("", |v| v.to_str().unwrap())
    }

    /// Asserts a problem of `status`, and returns it.
    pub fn problem(&self, status: StatusCode) -> serde_json::Value {
        assert_eq!(self.status, status, "{}", self.text());
        assert_eq!(self.content_type(), "application/problem+json");
        let p = self.json();
        for key in ["type", "title", "status", "detail"] {
            assert!(p.get(key).is_some(), "problem without {key}: {p}");
        }
        assert_eq!(p["status"], status.as_u16());
        p
    }
}

/// A request as a client on another machine sends it (Host set, from
/// 192.0.2.7).
pub struct Req(axum::http::request::Builder);

pub fn req(method: Method, path: &str) -> Req {
    Req(Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "localhost")
        .extension(ConnectInfo(SocketAddr::from(([192, 0, 2, 7], 40000)))))
}

impl Req {
    pub fn header(self, name: &str, value: &str) -> Self {
        Self(self.0.header(name, value))
    }

    /// With the session's cookie, its CSRF token and our Origin.
    pub fn session(self, s: &Session) -> Self {
        self.header("cookie", &s.cookie)
            .header("x-csrf-token", &s.csrf)
            .header("origin", "https://localhost")
    }

    pub fn cookie_only(self, s: &Session) -> Self {
        self.header("cookie", &s.cookie)
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn from(self, addr: [u8; 4]) -> Self {
        Self(
            self.0
                .extension(ConnectInfo(SocketAddr::from((addr, 40000)))),
        )
    }

    pub fn json(self, body: &serde_json::Value) -> Request<Body> {
        self.0
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    }

    pub fn raw(self, content_type: &str, body: impl Into<Body>) -> Request<Body> {
        self.0
            .header(header::CONTENT_TYPE, content_type)
            .body(body.into())
            .unwrap()
    }

    pub fn empty(self) -> Request<Body> {
        self.0.body(Body::empty()).unwrap()
    }
}
