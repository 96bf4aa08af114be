//! `gazellectl`: what lstack and ltran are doing, in gazelle's command-line
//! form.
//!
//! ```text
//! gazellectl lstack show <ip> [-r | -s | -c | -l] [time]
//! gazellectl ltran show [-r | -i | -b | -l] [time]
//! gazellectl ltran quit
//! ```
//!
//! Every view has a `--json` form for scripts. With `time`, the view is
//! printed again every `time` seconds (rates: measured over `time` seconds)
//! until interrupted.

use std::{net::IpAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::bail;
use clap::{Args, Parser, Subcommand};
use gazelle_ctl_proto::{client, paths, LtranStats, Request, Response};

mod ltran_view;
mod render;

/// Statistics and control of lstack and ltran.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Prefix of the control sockets (gazelle's `unix_prefix`; must match
    /// the daemons' configs).
    #[arg(short = 'u', long, global = true, default_value = "")]
    unix_prefix: String,
    /// Directory of the control sockets [default: $GAZELLE_RUN_DIR or /run/gazelle].
    #[arg(long, global = true)]
    run_dir: Option<PathBuf>,
    /// Print JSON instead of tables (one document per sample).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Top,
}

#[derive(Debug, Subcommand)]
enum Top {
    /// An lstack process (an application on the user-space stack).
    Lstack {
        #[command(subcommand)]
        command: LstackCmd,
    },
    /// The ltran dispatcher.
    Ltran {
        #[command(subcommand)]
        command: LtranCmd,
    },
}

#[derive(Debug, Subcommand)]
enum LstackCmd {
    /// Show the counters of the lstack whose address is IP.
    Show(LstackShow),
}

#[derive(Debug, Args)]
struct LstackShow {
    /// The lstack's address (its `host_addr`).
    ip: IpAddr,
    /// Rates per second instead of totals.
    #[arg(short = 'r', long = "rate", group = "view")]
    rate: bool,
    /// MIB-2 counters: IP, ICMP, TCP, UDP (and IPv6), per thread and total.
    #[arg(short = 's', long = "snmp", group = "view")]
    snmp: bool,
    /// Connections: state, addresses, queues and buffers.
    #[arg(short = 'c', long = "conn", group = "view")]
    conn: bool,
    /// Receive latency: from a frame's arrival to the application's read.
    #[arg(short = 'l', long = "latency", group = "view")]
    latency: bool,
    /// Print again every TIME seconds (with -r: the rate's interval).
    time: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum LtranCmd {
    /// Show ltran's counters.
    Show(LtranShow),
    /// Stop ltran.
    Quit,
}

#[derive(Debug, Args)]
struct LtranShow {
    /// Rates per second.
    #[arg(short = 'r', group = "view")]
    rate: bool,
    /// Registered instances.
    #[arg(short = 'i', group = "view")]
    instances: bool,
    /// Burst-size histogram.
    #[arg(short = 'b', group = "view")]
    burst: bool,
    /// Latency.
    #[arg(short = 'l', group = "view")]
    latency: bool,
    /// Print again every TIME seconds.
    time: Option<u64>,
}

const TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gazellectl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let run_dir = cli.run_dir.clone().unwrap_or_else(paths::run_dir);
    match &cli.command {
        Top::Lstack {
            command: LstackCmd::Show(show),
        } => {
            let path = paths::lstack_socket(&run_dir, &cli.unix_prefix, show.ip);
            let daemon = format!("lstack {}", show.ip);
            let ask = |req: Request| -> anyhow::Result<Response> {
                Ok(client::request(&path, &daemon, req, TIMEOUT)?)
            };
            if show.rate {
                let interval = Duration::from_secs(show.time.unwrap_or(1).max(1));
                let mut prev = stats(ask(Request::LstackStats)?)?;
                loop {
                    std::thread::sleep(interval);
                    let cur = stats(ask(Request::LstackStats)?)?;
                    let rates = gazelle_ctl_proto::LstackRates::between(&prev, &cur, interval);
                    print(cli.json, &rates, || render::rates(&rates))?;
                    if show.time.is_none() {
                        return Ok(());
                    }
                    prev = cur;
                }
            }
            repeat(show.time, || {
                if show.conn {
                    let Response::LstackConnections { connections } =
                        ask(Request::LstackConnections)?
                    else {
                        bail!("{daemon} answered another question");
                    };
                    print(cli.json, &connections, || render::connections(&connections))
                } else if show.snmp {
                    let Response::LstackSnmp(s) = ask(Request::LstackSnmp)? else {
                        bail!("{daemon} answered another question");
                    };
                    print(cli.json, &s, || render::snmp(&s))
                } else if show.latency {
                    let Response::LstackLatency(l) = ask(Request::LstackLatency)? else {
                        bail!("{daemon} answered another question");
                    };
                    print(cli.json, &l, || render::latency(&l))
                } else {
                    let s = stats(ask(Request::LstackStats)?)?;
                    print(cli.json, &s, || render::lstack(&s))
                }
            })
        }
        Top::Ltran { command } => {
            let path = paths::ltran_socket(&run_dir, &cli.unix_prefix);
            let ask = |req: Request| -> anyhow::Result<Response> {
                Ok(client::request(&path, "ltran", req, TIMEOUT)?)
            };
            let ltran_stats = || -> anyhow::Result<LtranStats> {
                match ask(Request::LtranStats)? {
                    Response::LtranStats(s) => Ok(s),
                    other => bail!("ltran answered another question: {other:?}"),
                }
            };
            match command {
                LtranCmd::Quit => {
                    ask(Request::LtranQuit)?;
                    if cli.json {
                        println!("{{\"quit\": true}}");
                    } else {
                        println!("ltran is stopping");
                    }
                    Ok(())
                }
                LtranCmd::Show(show) if show.rate => {
                    let interval = Duration::from_secs(show.time.unwrap_or(1).max(1));
                    let mut prev = ltran_stats()?;
                    loop {
                        std::thread::sleep(interval);
                        let cur = ltran_stats()?;
                        let r = gazelle_ctl_proto::LtranRates::between(&prev, &cur, interval);
                        print(cli.json, &r, || ltran_view::rates(&r))?;
                        if show.time.is_none() {
                            return Ok(());
                        }
                        prev = cur;
                    }
                }
                LtranCmd::Show(show) => repeat(show.time, || {
                    let s = ltran_stats()?;
                    if show.instances {
                        print(cli.json, &s.instances, || ltran_view::instances(&s))
                    } else if show.burst {
                        print(cli.json, &s.rx_burst_histogram, || ltran_view::burst(&s))
                    } else if show.latency {
                        let l = gazelle_ctl_proto::LtranLatency::of(&s);
                        print(cli.json, &l, || ltran_view::latency(&l))
                    } else {
                        print(cli.json, &s, || ltran_view::overview(&s))
                    }
                }),
            }
        }
    }
}

fn stats(r: Response) -> anyhow::Result<gazelle_ctl_proto::LstackStats> {
    match r {
        Response::LstackStats(s) => Ok(s),
        other => bail!("unexpected answer: {other:?}"),
    }
}

/// Runs `show` once, or every `time` seconds until interrupted.
fn repeat(time: Option<u64>, mut show: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<()> {
    show()?;
    if let Some(t) = time {
        loop {
            std::thread::sleep(Duration::from_secs(t.max(1)));
            show()?;
        }
    }
    Ok(())
}

fn print<T: serde::Serialize>(
    json: bool,
    value: &T,
    table: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", table());
    }
    Ok(())
}
