//! `gazelle-webui`: wires the API of the `gazelle_webui` library to its
//! sockets: HTTPS on `--listen`, the redirect on `--http-redirect`, the
//! poller, and SIGTERM/SIGINT.

#![deny(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use gazelle_webui::auth::{Auth, INITIAL_PASSWORD_FILE};
use gazelle_webui::{app, audit, daemons, poller, tls, MetricsAccess, Shared};

/// The appliance's REST API over HTTPS: configuration through applianced
/// (with its confirm-or-rollback), statistics of ltran and every lstack,
/// a live stream of rates, an audit log and Prometheus /metrics.
///
/// First login: on its first start (no accounts.json in --state-dir) the
/// server makes an account `admin` with a generated password, prints it
/// once on stderr (the journal: `journalctl -u gazelle-webui`) and writes
/// it to <state-dir>/initial-admin-password (mode 0400, root only) until
/// the password is changed (PUT /api/v1/auth/password).
/// --initial-password-file sets that first password instead.
///
/// Then: curl --cacert <state-dir>/tls/cert.pem -c cookies \
///   -H 'Content-Type: application/json' \
///   -d '{"username":"admin","password":"..."}' https://HOST/api/v1/auth/login
///
/// The API is described at /api/v1/openapi.json. The certificate is
/// <tls-dir>/cert.pem and key.pem: the operator's, or a self-signed one
/// made on first start. Logs: stderr; WEBUI_LOG sets the filter.
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// Address and port of the HTTPS server.
    #[arg(long, default_value = "0.0.0.0:443")]
    listen: SocketAddr,
    /// Accounts, tokens, the audit log and (unless --tls-dir) the
    /// certificate.
    #[arg(long, default_value = "/var/lib/gazelle/webui")]
    state_dir: PathBuf,
    /// Directory of cert.pem and key.pem [default: <state-dir>/tls].
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// Another name or address for a self-signed certificate (repeatable).
    #[arg(long = "tls-name")]
    tls_names: Vec<String>,
    /// Plain-HTTP listener that only redirects to HTTPS (e.g. 0.0.0.0:80).
    #[arg(long)]
    http_redirect: Option<SocketAddr>,
    /// applianced's control socket.
    #[arg(long, default_value = appliance::api::DEFAULT_SOCKET)]
    appliance_socket: PathBuf,
    /// applianced's runtime directory (the MACs of NICs it gave to DPDK).
    #[arg(long, default_value = appliance::supervisor::DEFAULT_RUNTIME_DIR)]
    appliance_runtime_dir: PathBuf,
    /// gazelle's run directory, where ltran's and every lstack's control
    /// socket are [default: $GAZELLE_RUN_DIR or /run/gazelle].
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// gazelle's `unix_prefix` of the control sockets.
    #[arg(long, default_value = "")]
    unix_prefix: String,
    /// Who may read /metrics.
    #[arg(long, value_enum, default_value = "loopback")]
    metrics: MetricsAccess,
    /// Seconds a browser session may stay unused before it ends.
    #[arg(long, default_value_t = 900)]
    session_idle_timeout: u64,
    /// A file holding the first admin password (used only when no
    /// accounts exist yet), instead of a generated one.
    #[arg(long)]
    initial_password_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEBUI_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gazelle-webui: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("gazelle-webui: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&args.state_dir)
            .with_context(|| format!("creating {}", args.state_dir.display()))?;
    }
    let tls_dir = args
        .tls_dir
        .clone()
        .unwrap_or_else(|| args.state_dir.join("tls"));
    if tls::ensure_certificate(&tls_dir, &args.tls_names)? {
        tracing::info!(dir = %tls_dir.display(), "made a self-signed certificate");
    }
    let tls_config = tls::server_config(&tls_dir)?;

    let initial = match &args.initial_password_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading {}", f.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
        ),
        None => None,
    };
    let (auth, first) = Auth::open(
        &args.state_dir,
        initial,
        Duration::from_secs(args.session_idle_timeout.max(1)),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(first) = first {
        match &first.file {
            Some(file) => eprintln!(
                "gazelle-webui: first start: log in as admin with password {} \
                 (also in {}, root only, until it is changed)",
                first.password,
                file.display()
            ),
            None => eprintln!(
                "gazelle-webui: first start: the admin account has the password of {}",
                args.initial_password_file
                    .as_deref()
                    .unwrap_or(std::path::Path::new("?"))
                    .display()
            ),
        }
    } else if args.state_dir.join(INITIAL_PASSWORD_FILE).exists() {
        tracing::warn!(
            "the admin still has its generated first password ({}); change it",
            args.state_dir.join(INITIAL_PASSWORD_FILE).display()
        );
    }

    let daemons = daemons::Daemons {
        appliance_socket: args.appliance_socket.clone(),
        run_dir: args
            .run_dir
            .clone()
            .unwrap_or_else(gazelle_ctl_proto::paths::run_dir),
        unix_prefix: args.unix_prefix.clone(),
        change_timeout: Duration::from_secs(120),
        query_timeout: Duration::from_secs(5),
    };
    let mut shared = Shared::new(
        daemons,
        auth,
        audit::AuditLog::new(&args.state_dir),
        args.metrics,
    );
    if let Some(s) = std::sync::Arc::get_mut(&mut shared) {
        s.appliance_runtime_dir = args.appliance_runtime_dir.clone();
    }
    let _poller = poller::spawn(shared.clone());

    let handle = axum_server::Handle::new();
    let signal_handle = handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("stopping");
        signal_handle.graceful_shutdown(Some(Duration::from_secs(5)));
    });
    if let Some(addr) = args.http_redirect {
        let port = args.listen.port();
        let redirect = axum::Router::new()
            .fallback(move |request: axum::extract::Request| tls::redirect(port, request));
        let redirect_handle = handle.clone();
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("listening on {addr} (--http-redirect)"))?;
        listener.set_nonblocking(true)?;
        tokio::spawn(async move {
            if let Err(e) = axum_server::from_tcp(listener)
                .handle(redirect_handle)
                .serve(redirect.into_make_service())
                .await
            {
                tracing::error!("the HTTP redirect stopped: {e}");
            }
        });
        tracing::info!(%addr, "redirecting plain HTTP to HTTPS");
    }
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("listening on {} (--listen)", args.listen))?;
    listener.set_nonblocking(true)?;
    tracing::info!(listen = %args.listen, "serving HTTPS");
    axum_server::from_tcp_rustls(
        listener,
        axum_server::tls_rustls::RustlsConfig::from_config(tls_config),
    )
    .handle(handle)
    .serve(app(shared).into_make_service_with_connect_info::<SocketAddr>())
    .await
    .context("serving HTTPS")
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}
