//! Running behind ltran (`use_ltran = 1`): attaching to ltran's DPDK memory
//! as a secondary process, registering, and keeping the registration.
//!
//! The registration connection is the instance's lease: ltran watches it
//! (and the process), and this side watches it too. If ltran goes away, the
//! memory and rings this process shares with it are gone and no new ltran
//! can give them back to a running secondary (DPDK cannot re-attach one), so
//! the process is told to stop: a clear message, then SIGTERM (the
//! application's own shutdown runs), then exit status 75 (EX_TEMPFAIL)
//! after 3 s if it is still there. A supervisor restarts it once ltran is
//! back; `gazellectl`/the appliance show why.

use std::{
    io::{BufReader, Write},
    os::unix::net::UnixStream,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use dpdk::{Eal, Mempool, Ring};
use gazelle_config::LstackConfig;
use gazelle_ctl_proto::{client, paths, ListenAddr, Registration, Request, Response};
use smoltcp::wire::IpListenEndpoint;

use crate::StackError;

/// Exit status when ltran goes away under a running instance.
pub const EXIT_LTRAN_GONE: i32 = 75;

/// The write side of the registration (listen events).
#[derive(Debug)]
pub(crate) struct LtranLink {
    conn: Mutex<UnixStream>,
    leaving: Arc<AtomicBool>,
}

impl LtranLink {
    /// Tells ltran about a listener (`on`) or its end. Best effort: if
    /// ltran is gone the process is stopping anyway.
    pub(crate) fn listen(&self, ep: &IpListenEndpoint, v6: bool, on: bool) {
        let ip = match ep.addr {
            Some(a) => std::net::IpAddr::from(a),
            None if v6 => std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            None => std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        };
        let addr = ListenAddr { ip, port: ep.port };
        let req = if on {
            Request::Listen(addr)
        } else {
            Request::Unlisten(addr)
        };
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = client::send(&*conn, &req) {
            tracing::warn!(%e, "telling ltran about a listener");
        }
    }

    /// The stack is stopping on purpose: ltran closing the connection is
    /// no longer a reason to stop the process.
    pub(crate) fn leave(&self) {
        self.leaving.store(true, Ordering::SeqCst);
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let _ = conn.shutdown(std::net::Shutdown::Both);
    }
}

/// What attaching gave.
#[derive(Debug)]
pub(crate) struct Attached {
    pub(crate) eal: Eal,
    pub(crate) pool: Arc<Mempool>,
    pub(crate) rings: Vec<(Ring, Ring)>,
    pub(crate) link: LtranLink,
}

fn ltran_err(message: impl Into<String>) -> StackError {
    StackError::Ltran(message.into())
}

/// The EAL arguments of a secondary of ltran's `file_prefix`.
///
/// Behind ltran an lstack drives no device: it only attaches ltran's rings
/// and pools. So unless the config chooses devices itself (`-a`/`-b`, their
/// long forms, or `--no-pci`), it gets `--no-pci`: it does not map the NICs'
/// registers (which would let an instance program the bond's NICs behind
/// ltran's back) and does not probe every PCI device at start.
pub(crate) fn secondary_args(dpdk_args: &[String], file_prefix: &str) -> Vec<String> {
    let mut args = vec!["lstack".to_owned()];
    if !gazelle_config::eal::chooses_devices(dpdk_args) {
        args.push("--no-pci".into());
    }
    let mut skip = false;
    for a in dpdk_args {
        if skip {
            skip = false;
            continue;
        }
        if a == "--file-prefix" || a == "--proc-type" {
            skip = true;
            continue;
        }
        if a.starts_with("--file-prefix=") || a.starts_with("--proc-type=") {
            continue;
        }
        args.push(a.clone());
    }
    args.push("--proc-type=secondary".into());
    args.push(format!("--file-prefix={file_prefix}"));
    args
}

/// Attaches to ltran and registers `threads` stack threads.
pub(crate) fn attach(
    config: &LstackConfig,
    run_dir: &std::path::Path,
    threads: usize,
) -> Result<Attached, StackError> {
    let socket = paths::ltran_socket(run_dir, &config.unix_prefix);
    let hello = match client::request(&socket, "ltran", Request::Hello, Duration::from_secs(5)) {
        Ok(Response::Hello(h)) => h,
        Ok(other) => return Err(ltran_err(format!("ltran answered Hello with {other:?}"))),
        Err(e) => return Err(ltran_err(format!("use_ltran = 1: {e}"))),
    };
    let before = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok();
    let eal = Eal::init(&secondary_args(&config.dpdk_args, &hello.file_prefix))?;
    crate::restore_app_affinity(config, before);
    dpdk::owner::enable(&eal, 0)?;

    let conn = UnixStream::connect(&socket)
        .map_err(|e| ltran_err(format!("connecting to ltran at {}: {e}", socket.display())))?;
    let process = std::fs::read_to_string("/proc/self/comm")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let reg = Registration {
        ipv4: config.host_addr,
        ipv6: config.host_addr6.as_ref().map(|c| c.addr()),
        mac: config.devices.to_string(),
        threads: threads as u16,
        process,
    };
    client::send(&conn, &Request::Register(reg))
        .map_err(|e| ltran_err(format!("registering with ltran: {e}")))?;
    let mut reader = BufReader::new(conn.try_clone().map_err(|e| ltran_err(e.to_string()))?);
    let registered = match client::receive(&mut reader) {
        Ok(Some(Response::Registered(r))) => r,
        Ok(Some(Response::Error { message })) => {
            return Err(ltran_err(format!(
                "ltran refused the registration: {message}"
            )))
        }
        Ok(other) => {
            return Err(ltran_err(format!(
                "ltran answered the registration with {other:?}"
            )))
        }
        Err(e) => return Err(ltran_err(format!("reading ltran's answer: {e}"))),
    };
    dpdk::owner::enable(&eal, registered.owner_tag)?;
    let pool = Arc::new(Mempool::lookup(&eal, &registered.tx_pool)?);
    let mut rings = Vec::new();
    for pair in &registered.rings {
        rings.push((Ring::lookup(&eal, &pair.rx)?, Ring::lookup(&eal, &pair.tx)?));
    }
    let leaving = Arc::new(AtomicBool::new(false));
    {
        let leaving = Arc::clone(&leaving);
        let ltran_pid = hello.pid;
        std::thread::Builder::new()
            .name("lstack-ltran".into())
            .spawn(move || watch(reader, &leaving, ltran_pid))
            .map_err(StackError::Thread)?;
    }
    tracing::info!(
        ltran_pid = hello.pid,
        slot = registered.slot,
        threads,
        file_prefix = %hello.file_prefix,
        "registered with ltran"
    );
    Ok(Attached {
        eal,
        pool,
        rings,
        link: LtranLink {
            conn: Mutex::new(conn),
            leaving,
        },
    })
}

fn watch(mut reader: BufReader<UnixStream>, leaving: &AtomicBool, ltran_pid: u32) {
    // ltran says nothing on this connection after the registration: the
    // end of file (or an error) is its end.
    loop {
        if leaving.load(Ordering::SeqCst) {
            return;
        }
        match client::receive(&mut reader) {
            Ok(Some(_)) => continue,
            _ => break,
        }
    }
    if leaving.load(Ordering::SeqCst) {
        return;
    }
    let msg = format!(
        "lstack: ltran (pid {ltran_pid}) went away; this process shares its DPDK memory and rings and cannot go on: stopping (SIGTERM, then exit {EXIT_LTRAN_GONE}); restart it once ltran is back"
    );
    tracing::error!("{msg}");
    let _ = writeln!(std::io::stderr(), "{msg}");
    let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::SIGTERM);
    std::thread::sleep(Duration::from_secs(3));
    std::process::exit(EXIT_LTRAN_GONE);
}

#[cfg(test)]
mod tests {
    use super::secondary_args;

    fn args(a: &[&str]) -> Vec<String> {
        let owned: Vec<String> = a.iter().map(|s| (*s).to_owned()).collect();
        secondary_args(&owned, "ltran")
    }

    #[test]
    fn secondaries_replace_prefix_and_type_and_skip_pci() {
        assert_eq!(
            args(&[
                "-l",
                "2",
                "--file-prefix",
                "mine",
                "--proc-type=primary",
                "--socket-mem",
                "512"
            ]),
            [
                "lstack",
                "--no-pci",
                "-l",
                "2",
                "--socket-mem",
                "512",
                "--proc-type=secondary",
                "--file-prefix=ltran"
            ]
        );
    }

    #[test]
    fn devices_the_config_chooses_are_left_alone() {
        for chosen in [
            &["-a", "0000:00:04.0"][..],
            &["-a0000:00:04.0"],
            &["--allow=0000:00:04.0"],
            &["-b", "0000:00:03.0"],
            &["--block", "0000:00:03.0"],
            &["--no-pci"],
        ] {
            let got = args(chosen);
            assert_eq!(
                got.iter().filter(|a| *a == "--no-pci").count(),
                usize::from(chosen == ["--no-pci"]),
                "{chosen:?} -> {got:?}"
            );
            assert!(got.iter().any(|a| a == chosen[0]), "{chosen:?} -> {got:?}");
        }
    }
}
