//! ltran's control socket: registration of lstack instances and the
//! `gazellectl ltran` requests.
//!
//! Each connection gets a thread. A `Register` connection stays open as the
//! instance's lease: ltran watches it together with a pidfd of the peer
//! (pid from the socket's credentials, never from the message), so an
//! instance killed with SIGKILL is noticed at once and its rings, table
//! entries and mbufs are taken back while the others keep running.

use std::{
    io::{BufRead, BufReader, Read},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::net::{UnixListener, UnixStream},
    },
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    time::{Duration, Instant},
};

use dpdk::{Eal, Ring};
use gazelle_config::LtranConfig;
use gazelle_ctl_proto::{
    server, LtranHello, Registered, Registration, Request, Response, RingPair,
};

use crate::forward::{Command, Published, ThreadRings};

const CLOSED: &str = "closed its registration";

/// Most stack threads one instance may register.
pub const MAX_THREADS: u16 = 32;
/// Slots in each ring (power of two).
pub const RING_SIZE: u32 = 2048;

#[derive(Debug, Clone)]
struct Entry {
    pid: u32,
    uid: u32,
    process: String,
    ipv4: Ipv4Addr,
    ipv6: Option<Ipv6Addr>,
    since: Instant,
}

/// What the control side knows about instances.
#[derive(Debug)]
struct Registry {
    slots: Vec<Option<Entry>>,
    next_tag: u32,
}

/// Shared state of the control threads.
#[derive(Debug)]
pub struct Control {
    /// The EAL (rings are created here).
    pub eal: Eal,
    /// ltran's config.
    pub config: LtranConfig,
    /// The bond MAC.
    pub mac: [u8; 6],
    /// The EAL file prefix secondaries must use.
    pub file_prefix: String,
    /// Name of the pool instances allocate from.
    pub tx_pool: String,
    /// Where the dispatcher publishes numbers.
    pub published: Published,
    /// Set to stop ltran.
    pub quit: Arc<AtomicBool>,
    commands: Mutex<mpsc::Sender<Command>>,
    registry: Mutex<Registry>,
}

impl Control {
    /// Control state sending commands to the dispatcher over `commands`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        eal: Eal,
        config: LtranConfig,
        mac: [u8; 6],
        file_prefix: String,
        tx_pool: String,
        published: Published,
        quit: Arc<AtomicBool>,
        commands: mpsc::Sender<Command>,
    ) -> Self {
        let slots = config.dispatch_max_clients as usize;
        Self {
            eal,
            config,
            mac,
            file_prefix,
            tx_pool,
            published,
            quit,
            commands: Mutex::new(commands),
            registry: Mutex::new(Registry {
                slots: vec![None; slots],
                next_tag: 1,
            }),
        }
    }

    fn send(&self, cmd: Command) {
        let tx = self
            .commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let _ = tx.send(cmd);
    }

    fn stats(&self) -> Response {
        let mut stats = self
            .published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        for inst in &mut stats.instances {
            if let Some(Some(e)) = reg.slots.get(inst.slot as usize) {
                inst.pid = e.pid;
                inst.uid = e.uid;
                inst.process = e.process.clone();
                inst.registered_secs = e.since.elapsed().as_secs();
            }
        }
        Response::LtranStats(stats)
    }
}

/// Serves `listener` until ltran quits (the thread is left to die with the
/// process).
pub fn serve(control: Arc<Control>, listener: UnixListener) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("ltran-ctl".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                if !server::allowed(&conn) {
                    tracing::warn!(
                        "control connection from a user that is neither root nor ltran's: refused"
                    );
                    continue;
                }
                let control = Arc::clone(&control);
                let _ = std::thread::Builder::new()
                    .name("ltran-conn".into())
                    .spawn(move || connection(&control, conn));
            }
        })?;
    Ok(())
}

fn connection(control: &Arc<Control>, conn: UnixStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(&conn);
    let mut line = String::new();
    if (&mut reader)
        .take(64 * 1024)
        .read_line(&mut line)
        .unwrap_or(0)
        == 0
    {
        return;
    }
    let response = match server::parse_request(&line) {
        Err(refusal) => *refusal,
        Ok(Request::Ping) => Response::Pong {
            daemon: "ltran".into(),
            pid: std::process::id(),
        },
        Ok(Request::Hello) => Response::Hello(LtranHello {
            pid: std::process::id(),
            file_prefix: control.file_prefix.clone(),
            bond_mac: crate::fmt_mac(control.mac),
            max_clients: control.config.dispatch_max_clients,
        }),
        Ok(Request::LtranStats) => control.stats(),
        Ok(Request::LtranQuit) => {
            tracing::info!("quit requested over the control socket");
            control.quit.store(true, Ordering::SeqCst);
            Response::Ok
        }
        Ok(Request::Register(reg)) => {
            drop(reader);
            session(control, conn, reg);
            return;
        }
        Ok(other) => Response::Error {
            message: format!("ltran does not answer {other:?}"),
        },
    };
    let _ = server::write_response(&conn, &response);
}

/// Checks a registration and reserves a slot; the error is for the client.
fn admit(control: &Control, pid: u32, uid: u32, reg: &Registration) -> Result<(u32, u32), String> {
    let cfg = &control.config;
    let mac = crate::fmt_mac(control.mac);
    if !reg.mac.eq_ignore_ascii_case(&mac) {
        return Err(format!(
            "devices = {} is not the bond's MAC {mac} (bond_macs in ltran's config): set devices = \"{mac}\" in lstack's config",
            reg.mac
        ));
    }
    if !cfg.dispatch_contains(reg.ipv4) {
        return Err(format!(
            "host_addr {} is outside ltran's dispatch subnet {}/{}",
            reg.ipv4,
            cfg.dispatch_subnet,
            cfg.dispatch_prefix_len()
        ));
    }
    if let Some(a) = reg.ipv6 {
        if !cfg.dispatch6_contains(a) {
            return Err(format!(
                "host_addr6 {a} is outside ltran's dispatch_subnet6 ({})",
                cfg.dispatch_subnet6
                    .map_or("not set".to_owned(), |s| s.to_string())
            ));
        }
    }
    if reg.threads == 0 || reg.threads > MAX_THREADS {
        return Err(format!(
            "{} stack threads: ltran gives an instance 1 to {MAX_THREADS}",
            reg.threads
        ));
    }
    let mut r = control.registry.lock().unwrap_or_else(|e| e.into_inner());
    for e in r.slots.iter().flatten() {
        if e.ipv4 == reg.ipv4 || (reg.ipv6.is_some() && e.ipv6 == reg.ipv6) {
            let ip = if e.ipv4 == reg.ipv4 {
                IpAddr::V4(reg.ipv4)
            } else {
                IpAddr::V6(reg.ipv6.unwrap_or(Ipv6Addr::UNSPECIFIED))
            };
            return Err(format!(
                "{ip} is already registered by pid {} ({}) for {} s: one address belongs to one live instance",
                e.pid,
                e.process,
                e.since.elapsed().as_secs()
            ));
        }
        if e.pid == pid {
            return Err(format!("pid {pid} is already registered (as {})", e.ipv4));
        }
    }
    let Some(slot) = r.slots.iter().position(Option::is_none) else {
        return Err(format!(
            "ltran already serves {} instances (dispatch_max_clients)",
            r.slots.len()
        ));
    };
    let tag = r.next_tag;
    r.next_tag = r.next_tag.wrapping_add(1).max(1);
    r.slots[slot] = Some(Entry {
        pid,
        uid,
        process: reg.process.clone(),
        ipv4: reg.ipv4,
        ipv6: reg.ipv6,
        since: Instant::now(),
    });
    Ok((slot as u32, tag))
}

fn release(control: &Control, slot: u32) {
    let mut r = control.registry.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = r.slots.get_mut(slot as usize) {
        *s = None;
    }
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until `fds[i]` is readable; returns the readiness of each, or
/// `None` on timeout.
fn poll_readable(fds: &[i32], timeout_ms: i32) -> Option<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: p is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            return None;
        }
        return Some(p.iter().map(|p| p.revents != 0).collect());
    }
}

fn session(control: &Arc<Control>, conn: UnixStream, reg: Registration) {
    let refuse = |message: String| {
        tracing::warn!(ip = %reg.ipv4, %message, "registration refused");
        let _ = server::write_response(&conn, &Response::Error { message });
    };
    let cred = match nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials)
    {
        Ok(c) => c,
        Err(e) => return refuse(format!("cannot read the peer's credentials: {e}")),
    };
    let (pid, uid) = (cred.pid() as u32, cred.uid());
    let (slot, tag) = match admit(control, pid, uid, &reg) {
        Ok(x) => x,
        Err(m) => return refuse(m),
    };
    let pidfd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) => {
            release(control, slot);
            return refuse(format!("cannot watch pid {pid}: {e}"));
        }
    };
    let mut rings = Vec::new();
    let mut names = Vec::new();
    for t in 0..reg.threads {
        let rx_name = format!("lt{tag}r{t}");
        let tx_name = format!("lt{tag}t{t}");
        let made = Ring::create_spsc(&control.eal, &rx_name, RING_SIZE, -1).and_then(|rx| {
            Ring::create_spsc(&control.eal, &tx_name, RING_SIZE, -1)
                .map(|tx| ThreadRings { rx, tx })
        });
        match made {
            Ok(r) => rings.push(r),
            Err(e) => {
                release(control, slot);
                return refuse(format!("creating rings: {e}"));
            }
        }
        names.push(RingPair {
            rx: rx_name,
            tx: tx_name,
        });
    }
    let (done_tx, done_rx) = mpsc::channel();
    control.send(Command::Add {
        slot,
        tag,
        ipv4: reg.ipv4,
        ipv6: reg.ipv6,
        rings,
        done: done_tx,
    });
    if done_rx.recv_timeout(Duration::from_secs(5)).is_err() {
        release(control, slot);
        return refuse("the dispatcher did not take the instance (is ltran stopping?)".into());
    }
    tracing::info!(
        pid,
        uid,
        process = %reg.process,
        ip = %reg.ipv4,
        ipv6 = ?reg.ipv6,
        threads = reg.threads,
        slot,
        "instance registered"
    );
    let answer = Response::Registered(Registered {
        slot,
        owner_tag: tag,
        rings: names,
        tx_pool: control.tx_pool.clone(),
    });
    let reason = if server::write_response(&conn, &answer).is_err() {
        "did not read its registration".to_owned()
    } else {
        watch(control, &conn, &pidfd, slot)
    };

    // The process is gone (or closed its lease): if it is dead, the mbufs
    // it held come back; if it closed the lease while alive, give it a
    // moment to exit before deciding.
    let dead = poll_readable(&[pidfd.as_raw_fd()], 2000).is_some();
    let reason = if dead && reason == CLOSED {
        "process exited".to_owned()
    } else {
        reason
    };
    let (done_tx, done_rx) = mpsc::channel();
    control.send(Command::Remove {
        slot,
        reason: reason.clone(),
        pid,
        reclaim: dead,
        done: done_tx,
    });
    match done_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(d) => tracing::info!(
            pid,
            ip = %reg.ipv4,
            %reason,
            mbufs_reclaimed = d.mbufs_reclaimed,
            connections_removed = d.connections_removed,
            "instance removed"
        ),
        Err(_) => tracing::warn!(pid, "the dispatcher did not confirm the removal"),
    }
    release(control, slot);
}

/// Serves the instance's listen events until its process dies or the
/// connection ends; returns why.
fn watch(control: &Control, conn: &UnixStream, pidfd: &OwnedFd, slot: u32) -> String {
    let _ = conn.set_read_timeout(None);
    let mut reader = BufReader::new(conn);
    loop {
        if reader.buffer().is_empty() {
            match poll_readable(&[conn.as_raw_fd(), pidfd.as_raw_fd()], -1) {
                Some(r) if r[1] => return "process exited".into(),
                Some(_) => {}
                None => continue,
            }
        }
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return CLOSED.into(),
            Ok(_) => {}
        }
        match server::parse_request(&line) {
            Ok(Request::Listen(addr)) => control.send(Command::Listen {
                slot,
                addr,
                on: true,
            }),
            Ok(Request::Unlisten(addr)) => control.send(Command::Listen {
                slot,
                addr,
                on: false,
            }),
            Ok(other) => tracing::warn!(slot, ?other, "unexpected request on a registration"),
            Err(e) => tracing::warn!(slot, ?e, "unreadable request on a registration"),
        }
    }
}
