//! `ltran`: the dispatcher daemon.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, OnceLock,
    },
};

use clap::Parser;
use gazelle_config::LtranConfig;

/// The gazelle dispatcher: owns the data NICs (an active-backup bond) as
/// the DPDK primary and hands frames to the lstack processes registered
/// with it (`use_ltran = 1`) through shared-memory rings.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Stop it with SIGTERM or `gazellectl ltran quit`; registered lstack processes then exit with a message (they cannot outlive the DPDK memory they share with ltran)."
)]
struct Args {
    /// The config file: TOML, or gazelle's ltran.conf syntax when the name
    /// ends in .conf. Default: $LTRAN_CONF_PATH, else /etc/gazelle/ltran.toml.
    #[arg(long, value_name = "PATH")]
    config_file: Option<PathBuf>,
    /// Check the config as a start would before it touches DPDK, and exit
    /// (0 when it would start, 2 when not).
    #[arg(long)]
    check: bool,
    /// Directory of the control sockets (default $GAZELLE_RUN_DIR or /run/gazelle).
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,
    /// Poll flat out even when idle (for benchmarks; uses a whole core).
    #[arg(long)]
    busy_poll: bool,
    /// Kernel name of the exception interface created with kni_switch = 1.
    #[arg(long, default_value = "kni", value_name = "NAME")]
    kni_name: String,
}

static QUIT: OnceLock<Arc<AtomicBool>> = OnceLock::new();

extern "C" fn on_signal(_: libc::c_int) {
    if let Some(q) = QUIT.get() {
        q.store(true, Ordering::SeqCst);
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let path = args.config_file.clone().unwrap_or_else(|| {
        std::env::var_os(gazelle_config::ltran::LTRAN_CONF_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(gazelle_config::ltran::DEFAULT_LTRAN_CONF_PATH))
    });
    let config = match LtranConfig::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ltran: {}: {e}", path.display());
            return std::process::ExitCode::from(2);
        }
    };
    if args.check {
        // The same checks a start runs before it touches DPDK.
        return match ltran::run::check(&config) {
            Ok(()) => {
                println!("{}: ok", path.display());
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ltran: {}: {e:#}", path.display());
                std::process::ExitCode::from(2)
            }
        };
    }
    let quit = Arc::new(AtomicBool::new(false));
    let _ = QUIT.set(Arc::clone(&quit));
    let handler = nix::sys::signal::SigHandler::Handler(on_signal);
    for sig in [nix::sys::signal::SIGTERM, nix::sys::signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic.
        let _ = unsafe { nix::sys::signal::signal(sig, handler) };
    }
    let opts = ltran::run::Options {
        run_dir: args
            .run_dir
            .unwrap_or_else(gazelle_ctl_proto::paths::run_dir),
        busy_poll: args.busy_poll,
        kni_name: args.kni_name,
    };
    match ltran::run::run(config, &opts, quit) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ltran: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
