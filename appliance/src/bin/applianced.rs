//! `applianced`: the appliance daemon. Applies the appliance config to the
//! machine (hugepages, NICs, sysctls), supervises ltran and the lstack
//! applications, and serves the control API that `appliancectl` and the
//! web UI use.

#![deny(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use appliance::api::{self, Handler};
use appliance::config::{ApplianceConfig, DEFAULT_APPLIANCE_CONF_PATH};
use appliance::machine::MachineApplier;
use appliance::store::{self, ConfigStore, RollbackWatcher, StoreOptions, SystemClock};
use appliance::supervisor::{self, Paths, Supervisor, SupervisorOptions};
use clap::Parser;
use sd_notify::NotifyState;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// The appliance daemon: one config for the whole machine, applied and
/// supervised.
///
/// At start it takes the config (see --config and --state-dir), reserves
/// hugepages and mounts hugetlbfs, binds the data NICs to their DPDK driver,
/// sets the sysctls the data path needs, then starts ltran (when the config
/// has an [ltran] section) and every [[instances]] entry under
/// LD_PRELOAD=liblstack.so, restarting them with backoff when they fail. If
/// applying fails, it says why and keeps running so the config can be fixed
/// through the control socket (`appliancectl config set`).
///
/// SIGTERM or SIGINT stops the processes in reverse order (SIGTERM, then
/// SIGKILL after --stop-timeout) and exits 0. Logs go to stderr (the
/// journal under systemd); APPLIANCE_LOG sets the filter (default info;
/// e.g. APPLIANCE_LOG=debug or APPLIANCE_LOG=appliance::child=warn to hide
/// the children's output).
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// The config to start from. If it is the store's own file
    /// (<state-dir>/appliance.toml) it is simply used; another existing
    /// file replaces the store's saved config at start. If neither exists
    /// the daemon starts from the image's default config and says so.
    #[arg(long, default_value = DEFAULT_APPLIANCE_CONF_PATH)]
    config: PathBuf,
    /// Directory of the config store: appliance.toml (the saved config) and
    /// history/ (the last saved versions). Default: the directory of
    /// --config.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The control socket (mode 0600, answers root only).
    #[arg(long, default_value = api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// liblstack.so, preloaded into every instance.
    #[arg(long, default_value = supervisor::DEFAULT_LSTACK_LIB)]
    lstack_lib: PathBuf,
    /// The ltran binary.
    #[arg(long, default_value = supervisor::DEFAULT_LTRAN_BIN)]
    ltran_bin: PathBuf,
    /// Where the generated ltran.toml and <instance>.toml are written.
    #[arg(long, default_value = supervisor::DEFAULT_RUNTIME_DIR)]
    runtime_dir: PathBuf,
    /// gazelle's run directory (ltran's and lstack's control sockets),
    /// passed to the processes as GAZELLE_RUN_DIR. Default: $GAZELLE_RUN_DIR
    /// or /run/gazelle, left to the processes.
    #[arg(long)]
    gazelle_run_dir: Option<PathBuf>,
    /// Root of the sysfs/procfs tree to work on.
    #[arg(long, default_value = "/", hide = true)]
    root: PathBuf,
    /// Seconds a change that can cut the operator off (NICs, ltran,
    /// addresses) waits for `appliancectl config confirm` before it rolls
    /// back by itself.
    #[arg(long, default_value_t = 120)]
    confirm_timeout: u64,
    /// Seconds a change waits for every process to run before it counts as
    /// failed (and is rolled back).
    #[arg(long, default_value_t = 30)]
    ready_timeout: u64,
    /// Seconds a stop waits after SIGTERM before SIGKILL.
    #[arg(long, default_value_t = 10)]
    stop_timeout: u64,
    /// Milliseconds a process without a readiness probe must stay up to
    /// count as running (ltran is ready when its control socket answers).
    #[arg(long, default_value_t = 1000)]
    ready_uptime_ms: u64,
    /// Saved versions kept in history/.
    #[arg(long, default_value_t = 20)]
    keep: usize,
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("APPLIANCE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("applianced: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    // Handlers that only note the signal (the children, after exec, have
    // the default actions again); the main thread waits for it below.
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("handling SIGTERM/SIGINT")?;
    let state_dir = args.state_dir.clone().unwrap_or_else(|| {
        args.config
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned()
    });
    let saved = state_dir.join(store::SAVED_FILE);
    take_config(&args.config, &saved)?;

    let supervisor = Arc::new(Supervisor::new(SupervisorOptions {
        ready_uptime: Duration::from_millis(args.ready_uptime_ms),
        stop_timeout: Duration::from_secs(args.stop_timeout),
        ..SupervisorOptions::default()
    }));
    let paths = Paths {
        lstack_lib: args.lstack_lib.clone(),
        ltran_bin: args.ltran_bin.clone(),
        runtime_dir: args.runtime_dir.clone(),
        gazelle_run_dir: args.gazelle_run_dir.clone(),
    };
    let mut applier = MachineApplier::new(&args.root, paths, Arc::clone(&supervisor));
    applier.ready_timeout = Some(Duration::from_secs(args.ready_timeout));
    let mut store = ConfigStore::open(
        &state_dir,
        StoreOptions {
            keep: args.keep,
            confirm_timeout: Duration::from_secs(args.confirm_timeout),
        },
        SystemClock,
        applier,
    )
    .with_context(|| format!("opening the config store in {}", state_dir.display()))?;
    tracing::info!(store = %state_dir.display(), "applying the config");
    notify(&[NotifyState::Status("applying the config")]);
    let status = match store.apply_at_start() {
        Ok(()) => "running the config".to_owned(),
        Err(e) => {
            tracing::error!(
                "applying the config failed: {e:#}; the control socket stays up so it can be fixed (appliancectl config set)"
            );
            format!("the config failed to apply: {e:#}")
        }
    };
    let store = Arc::new(Mutex::new(store));
    let watcher = RollbackWatcher::start(Arc::clone(&store), Duration::from_millis(500));
    let handler = Handler::new(
        Arc::clone(&store),
        Arc::clone(&supervisor),
        &args.root,
        SystemClock,
    );
    let server = api::Server::start(&args.socket, move |request| handler.handle(request))
        .with_context(|| format!("serving the control socket {}", args.socket.display()))?;
    tracing::info!(socket = %args.socket.display(), "applianced ready");
    // Under systemd (Type=notify) the unit becomes active only now, so
    // `systemctl is-system-running --wait` means the appliance answers.
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);

    let signal = signals.forever().next().unwrap_or(SIGTERM);
    let name = if signal == SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    };
    tracing::info!(signal = name, "stopping");
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    drop(server);
    drop(watcher);
    supervisor.stop_all();
    tracing::info!("stopped");
    Ok(())
}

/// Tells systemd (when it started us with a notify socket) how we are; a
/// failure only costs the readiness report, so it is logged, not fatal.
fn notify(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::warn!("telling systemd our state: {e}");
    }
}

/// Makes `config` the store's saved config (`saved`) when it is another
/// file that exists; says when neither exists and the image default is
/// used.
fn take_config(config: &Path, saved: &Path) -> anyhow::Result<()> {
    let same = config == saved
        || matches!((config.canonicalize(), saved.canonicalize()), (Ok(a), Ok(b)) if a == b);
    if same || !config.exists() {
        if !saved.exists() {
            tracing::warn!(
                "no config at {}: starting from the image's default config (appliancectl config get shows it)",
                config.display()
            );
        }
        return Ok(());
    }
    let text = appliance::store::read_text(config)
        .with_context(|| format!("reading {}", config.display()))?;
    ApplianceConfig::from_toml_str(&text).with_context(|| format!("{}", config.display()))?;
    if std::fs::read_to_string(saved).ok().as_deref() != Some(text.as_str()) {
        if let Some(dir) = saved.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        store::write_atomically(saved, &text)?;
        tracing::info!(from = %config.display(), to = %saved.display(), "took the config");
    }
    Ok(())
}
