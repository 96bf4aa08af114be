//! `appliancectl`: the command line front end of `applianced`'s control
//! socket.

#![deny(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use appliance::api::{self, ClientError, PendingInfo, Request, Response, Which};
use appliance::supervisor::ProcessAction;
use clap::{Parser, Subcommand};

/// Drive the appliance daemon: its config (with confirm-or-rollback), the
/// supervised processes, NICs, host facts and hugepages.
///
/// Exit codes: 0 done; 1 the daemon refused or failed (the message says
/// why, naming the config field at fault); 2 usage error; 3 applianced is
/// not running; 4 talking to it failed.
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// applianced's control socket.
    #[arg(long, global = true, default_value = api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print the daemon's answer as JSON (errors too: {"error": ..., "field": ...}).
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for an answer (a change waits for the processes it
    /// restarts).
    #[arg(long, global = true, default_value_t = 120)]
    timeout: u64,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Every supervised process (state, pid, restarts, last exit) and the
    /// change pending confirmation.
    Status,
    /// The appliance config.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// The PCI NICs: driver, interface, MAC, link, speed, NUMA node, role.
    Nics,
    /// Host facts: CPUs, NUMA nodes, memory, hugepage use, load.
    Host,
    /// Hugepage pools, hugetlbfs mounts and transparent hugepages.
    Hugepages,
    /// Start, stop or restart one instance (until the next config change
    /// or reboot).
    Instance {
        /// start, stop or restart.
        #[arg(value_enum)]
        action: InstanceAction,
        /// The instance's name.
        name: String,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum InstanceAction {
    Start,
    Stop,
    Restart,
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Print the running config as TOML (--saved: the one on disk).
    Get {
        /// The saved config (what a reboot runs) instead of the running one.
        #[arg(long)]
        saved: bool,
    },
    /// Validate and apply a config file. A change that can cut you off
    /// (NICs, ltran, addresses) must be confirmed before its deadline or it
    /// rolls back by itself.
    Set {
        /// The appliance config (TOML).
        file: PathBuf,
    },
    /// Only validate a config file; say what applying it would need
    /// confirmed.
    Validate {
        /// The appliance config (TOML).
        file: PathBuf,
    },
    /// Keep the change pending confirmation (saves it).
    Confirm,
    /// Revert the change pending confirmation now.
    Rollback,
    /// The saved versions, newest first.
    History,
    /// Make a saved version the running config (as a change).
    Restore {
        /// The version id, as `config history` lists it.
        id: String,
    },
    /// Print a saved version as TOML.
    Show {
        /// The version id, as `config history` lists it.
        id: String,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let request = match &args.command {
        Cmd::Status => Request::Status,
        Cmd::Nics => Request::Nics,
        Cmd::Instance { action, name } => Request::Process {
            name: name.clone(),
            action: match action {
                InstanceAction::Start => ProcessAction::Start,
                InstanceAction::Stop => ProcessAction::Stop,
                InstanceAction::Restart => ProcessAction::Restart,
            },
        },
        Cmd::Host => Request::Host,
        Cmd::Hugepages => Request::Hugepages,
        Cmd::Config(c) => match c {
            ConfigCmd::Get { saved } => Request::GetConfig {
                which: if *saved { Which::Saved } else { Which::Running },
            },
            ConfigCmd::Set { file } | ConfigCmd::Validate { file } => {
                let toml = match appliance::store::read_text(file) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("appliancectl: reading {}: {e}", file.display());
                        return ExitCode::from(2);
                    }
                };
                if matches!(c, ConfigCmd::Set { .. }) {
                    Request::SetConfig { toml, base: None }
                } else {
                    Request::Validate { toml }
                }
            }
            ConfigCmd::Confirm => Request::Confirm,
            ConfigCmd::Rollback => Request::Rollback,
            ConfigCmd::History => Request::History,
            ConfigCmd::Restore { id } => Request::Restore { id: id.clone() },
            ConfigCmd::Show { id } => Request::GetVersion { id: id.clone() },
        },
    };
    match api::request(&args.socket, request, Duration::from_secs(args.timeout)) {
        Ok(response) => {
            if args.json {
                match serde_json::to_string_pretty(&response) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("appliancectl: {e}");
                        return ExitCode::from(4);
                    }
                }
            } else {
                print_human(&response);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let code = match &e {
                ClientError::Refused { .. } => 1,
                ClientError::NotRunning { .. } => 3,
                _ => 4,
            };
            if args.json {
                let field = match &e {
                    ClientError::Refused { field, .. } => field.clone(),
                    _ => None,
                };
                println!(
                    "{}",
                    serde_json::json!({ "error": e.to_string(), "field": field })
                );
            }
            eprintln!("appliancectl: {e}");
            ExitCode::from(code)
        }
    }
}

fn pending_text(p: &PendingInfo) -> String {
    format!(
        "a change is PENDING CONFIRMATION: it rolls back by itself at {} (in {} s) unless you run `appliancectl config confirm`; it changes: {}",
        p.deadline,
        p.seconds_left,
        p.reasons.join("; ")
    )
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn print_human(response: &Response) {
    match response {
        Response::Pong { daemon, pid } => println!("{daemon} is running (pid {pid})"),
        Response::Config { toml, which, .. } => match toml {
            Some(t) => print!("{t}"),
            None => println!(
                "# no {} config yet",
                if *which == Which::Saved {
                    "saved"
                } else {
                    "running"
                }
            ),
        },
        Response::Changed(c) => match (&c.version, &c.pending) {
            (_, Some(p)) => println!("applied; {}", pending_text(p)),
            (Some(v), None) => println!("applied and saved as version {v}"),
            (None, None) => println!("applied"),
        },
        Response::Valid {
            summary,
            confirmation_reasons,
        } => {
            println!("{summary}");
            if confirmation_reasons.is_empty() {
                println!("applying it would be saved at once");
            } else {
                println!(
                    "applying it would need confirmation: {}",
                    confirmation_reasons.join("; ")
                );
            }
        }
        Response::Confirmed { version } => println!("confirmed and saved as version {version}"),
        Response::Version { toml, .. } => print!("{toml}"),
        Response::Process(p) => println!(
            "{}: {}{}",
            p.name,
            p.state,
            p.pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
        ),
        Response::RolledBack { result } => println!("rolled back: {result}"),
        Response::History { versions, pending } => {
            if versions.is_empty() {
                println!("no saved versions yet");
            }
            for v in versions {
                println!("{}  {}", v.id, v.path.display());
            }
            if let Some(p) = pending {
                println!("{}", pending_text(p));
            }
        }
        Response::Status {
            processes,
            pending,
            applying,
        } => {
            if processes.is_empty() {
                println!("no supervised processes");
            } else {
                println!(
                    "{:<16} {:<9} {:<9} {:>8} {:>8}  {:<25} LAST EXIT",
                    "NAME", "KIND", "STATE", "PID", "RESTARTS", "SINCE"
                );
            }
            for p in processes {
                let kind = serde_json::to_value(p.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let mut last = or_dash(p.last_exit.as_ref().map(|e| e.description.clone()));
                if let Some(note) = &p.note {
                    last.push_str(&format!(" ({note})"));
                }
                if let Some(ms) = p.backoff_ms.filter(|_| p.state.to_string() == "backoff") {
                    last.push_str(&format!(" (restart in {ms} ms)"));
                }
                println!(
                    "{:<16} {:<9} {:<9} {:>8} {:>8}  {:<25} {last}",
                    p.name,
                    kind,
                    p.state.to_string(),
                    or_dash(p.pid),
                    p.restarts,
                    p.since
                );
            }
            if *applying {
                println!("a config change is being applied");
            }
            if let Some(p) = pending {
                println!("{}", pending_text(p));
            }
        }
        Response::Nics { nics } => {
            if nics.is_empty() {
                println!("no PCI NICs");
                return;
            }
            println!(
                "{:<14} {:<16} {:<10} {:<17} {:<6} {:>7} {:>4}  ROLE",
                "PCI", "DRIVER", "IFACE", "MAC", "LINK", "SPEED", "NUMA"
            );
            for n in nics {
                let iface = n.interface.as_ref();
                println!(
                    "{:<14} {:<16} {:<10} {:<17} {:<6} {:>7} {:>4}  {}",
                    n.pci.to_string(),
                    or_dash(n.driver.clone()),
                    or_dash(iface.map(|i| i.name.clone())),
                    or_dash(iface.and_then(|i| i.mac)),
                    or_dash(iface.map(|i| i.operstate.clone())),
                    or_dash(iface.and_then(|i| i.speed_mbps).map(|s| format!("{s}M"))),
                    or_dash(n.numa_node),
                    if n.management { "management" } else { "-" }
                );
            }
        }
        Response::Host(h) => {
            println!("hostname:  {}", or_dash(h.hostname.clone()));
            println!("os:        {}", or_dash(h.os.clone()));
            println!("kernel:    {}", or_dash(h.kernel_version.clone()));
            println!(
                "cpus:      {} ({} cores) {}",
                h.cpu_count,
                or_dash(h.physical_cores),
                h.cpu_model.clone().unwrap_or_default()
            );
            for n in &h.numa_nodes {
                println!(
                    "node {}:    cpus {:?}, memory {} MiB ({} MiB free)",
                    n.id,
                    n.cpus,
                    or_dash(n.memory_total_bytes.map(|b| b >> 20)),
                    or_dash(n.memory_free_bytes.map(|b| b >> 20))
                );
            }
            println!(
                "memory:    {} MiB, {} MiB available",
                h.memory.total_bytes >> 20,
                h.memory.available_bytes >> 20
            );
            for p in &h.hugepages.pools {
                if p.node.is_none() {
                    println!("hugepages: {} x {}: {} free", p.total, p.size, p.free);
                }
            }
            println!(
                "load:      {:.2} {:.2} {:.2}",
                h.load_average.one, h.load_average.five, h.load_average.fifteen
            );
            println!("uptime:    {} s", h.uptime_secs);
        }
        Response::Hugepages(s) => {
            for p in &s.pools {
                let at = p
                    .node
                    .map_or("machine-wide".to_owned(), |n| format!("node {n}"));
                println!(
                    "{} pages {at}: {} total, {} free, {} surplus",
                    p.size, p.total, p.free, p.surplus
                );
            }
            for m in &s.mounts {
                println!("hugetlbfs {} ({}): {}", m.path, m.size, m.fs_options);
            }
            println!(
                "transparent hugepages: enabled={} defrag={}",
                or_dash(s.thp.enabled.clone()),
                or_dash(s.thp.defrag.clone())
            );
        }
        Response::Error { message, .. } => println!("error: {message}"),
    }
}
