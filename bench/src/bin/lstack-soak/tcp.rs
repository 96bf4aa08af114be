//! The TCP load: N connections from the peer, each streaming its own
//! pseudo-random bytes ([`crate::pattern`]) to the echo server with at most
//! `window` bytes not yet echoed, and checking every byte that comes back.
//!
//! A few worker threads each drive a share of the connections with
//! non-blocking sockets and `poll`, so 200 connections cost a few threads,
//! not 400, on a machine whose two CPUs the stack needs too. After the run
//! time the workers stop writing and wait (up to the drain limit) until
//! every byte sent has come back, then close.

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    os::fd::AsFd,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use nix::poll::{poll, PollFd, PollFlags};

use crate::{pattern, Live};

/// What the TCP load does.
#[derive(Debug, Clone)]
pub struct TcpLoad {
    /// The echo server.
    pub target: SocketAddr,
    /// Connections to open.
    pub connections: usize,
    /// Worker threads driving them.
    pub threads: usize,
    /// Most bytes a connection has sent and not yet seen echoed.
    pub window: usize,
    /// The run's seed; each connection's stream is derived from it.
    pub seed: u64,
    /// How long to stream.
    pub run_for: Duration,
    /// How long, after that, to wait for the last echoes.
    pub drain_limit: Duration,
    /// Test hook: flip one byte of the first data connection 0 receives,
    /// before it is checked (the check must notice).
    pub flip_byte: bool,
}

/// What one connection did.
#[derive(Debug, Clone, Default)]
pub struct ConnResult {
    /// Its index (0-based, the order they were opened in).
    pub id: usize,
    /// Bytes written.
    pub sent: u64,
    /// Bytes echoed back.
    pub echoed: u64,
    /// Echoed bytes that were not what was sent at their offset (including
    /// any beyond what was sent).
    pub corrupt: u64,
    /// Stream offset of the first corrupted byte.
    pub first_corrupt: Option<u64>,
    /// Longest time with bytes outstanding and none coming back.
    pub worst_stall: Duration,
    /// When that stall began, counted from the start of the load.
    pub worst_stall_from: Duration,
    /// Why the connection ended early, if it did.
    pub error: Option<String>,
}

/// Opens the connections (in the calling thread's network namespace),
/// one after the other.
pub fn connect(load: &TcpLoad) -> Result<Vec<TcpStream>> {
    (0..load.connections)
        .map(|i| {
            let s = TcpStream::connect_timeout(&load.target, Duration::from_secs(5)).with_context(
                || {
                    format!(
                        "opening connection {i} of {} to {}",
                        load.connections, load.target
                    )
                },
            )?;
            s.set_nonblocking(true)
                .context("making a socket non-blocking")?;
            Ok(s)
        })
        .collect()
}

/// Streams over `streams` as `load` says until the run time is over and the
/// echoes drained (or `live.abort`), and returns what each connection did,
/// in order.
pub fn run(load: &TcpLoad, streams: Vec<TcpStream>, live: &Live) -> Vec<ConnResult> {
    let start = Instant::now();
    let threads = load.threads.clamp(1, streams.len().max(1));
    let mut groups: Vec<Vec<Conn>> = (0..threads).map(|_| Vec::new()).collect();
    for (id, stream) in streams.into_iter().enumerate() {
        groups[id % threads].push(Conn::new(id, stream, load, start));
    }
    let mut results: Vec<ConnResult> = std::thread::scope(|s| {
        let handles: Vec<_> = groups
            .into_iter()
            .map(|mut group| {
                s.spawn(move || {
                    drive(&mut group, load, live, start);
                    group.into_iter().map(|c| c.result).collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    results.sort_by_key(|r| r.id);
    results
}

/// One connection while it runs.
struct Conn {
    stream: TcpStream,
    seed: u64,
    result: ConnResult,
    /// When bytes last came back (or, with nothing outstanding, when the
    /// first of the next outstanding ones went out).
    last_progress: Instant,
    flip_pending: bool,
    start: Instant,
}

/// Buffers a worker reuses.
struct Scratch {
    read: Vec<u8>,
    write: Vec<u8>,
    expected: Vec<u8>,
}

impl Conn {
    fn new(id: usize, stream: TcpStream, load: &TcpLoad, start: Instant) -> Self {
        Self {
            stream,
            seed: pattern::stream_seed(load.seed, id as u64),
            result: ConnResult {
                id,
                ..ConnResult::default()
            },
            last_progress: start,
            flip_pending: load.flip_byte && id == 0,
            start,
        }
    }

    fn outstanding(&self) -> u64 {
        self.result.sent.saturating_sub(self.result.echoed)
    }

    fn finished(&self) -> bool {
        self.result.error.is_some() || self.outstanding() == 0
    }

    fn fail(&mut self, why: String) {
        self.result.error.get_or_insert(why);
    }

    /// Reads what is there (a few reads at most, to stay fair to the
    /// others) and checks it.
    fn receive(&mut self, buf: &mut Scratch, live: &Live, now: Instant) {
        for _ in 0..4 {
            match (&self.stream).read(&mut buf.read) {
                Ok(0) => {
                    let at = self.result.echoed;
                    self.fail(format!("the server closed the connection after {at} bytes"));
                    return;
                }
                Ok(n) => {
                    let data = &mut buf.read[..n];
                    if std::mem::take(&mut self.flip_pending) {
                        data[0] ^= 0xff;
                    }
                    let offset = self.result.echoed;
                    let (mut bad, mut first) =
                        pattern::verify(self.seed, offset, data, &mut buf.expected);
                    // Bytes beyond what was sent cannot be an echo.
                    let beyond = (offset + n as u64).saturating_sub(self.result.sent);
                    if beyond > 0 {
                        bad = bad.max(beyond);
                        first = first.or(Some(self.result.sent));
                    }
                    self.result.corrupt += bad;
                    if self.result.first_corrupt.is_none() {
                        self.result.first_corrupt = first;
                    }
                    self.result.echoed += n as u64;
                    live.tcp_echoed.fetch_add(n as u64, Ordering::Relaxed);
                    self.note_gap(now);
                    self.last_progress = now;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(format!("reading: {e}"));
                    return;
                }
            }
        }
    }

    /// Writes the next bytes of the stream, as many as the window allows.
    fn send(&mut self, load: &TcpLoad, buf: &mut Scratch, live: &Live, now: Instant) {
        let room = (load.window as u64).saturating_sub(self.outstanding());
        let n = (room as usize).min(buf.write.len());
        if n == 0 {
            return;
        }
        let chunk = &mut buf.write[..n];
        pattern::fill(self.seed, self.result.sent, chunk);
        match (&self.stream).write(chunk) {
            Ok(w) => {
                if self.outstanding() == 0 {
                    self.last_progress = now;
                }
                self.result.sent += w as u64;
                live.tcp_sent.fetch_add(w as u64, Ordering::Relaxed);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(e) => self.fail(format!("writing: {e}")),
        }
    }

    /// Records the time since the last progress if bytes are outstanding.
    fn note_gap(&mut self, now: Instant) {
        if self.outstanding() == 0 || self.result.error.is_some() {
            return;
        }
        let gap = now.saturating_duration_since(self.last_progress);
        if gap > self.result.worst_stall {
            self.result.worst_stall = gap;
            self.result.worst_stall_from = self.last_progress.saturating_duration_since(self.start);
        }
    }
}

/// One worker's loop over its connections.
fn drive(conns: &mut [Conn], load: &TcpLoad, live: &Live, start: Instant) {
    let mut buf = Scratch {
        read: vec![0u8; 64 * 1024],
        write: vec![0u8; 16 * 1024],
        expected: Vec::new(),
    };
    let stop_writing = start + load.run_for;
    let give_up = stop_writing + load.drain_limit;
    let mut flags = Vec::with_capacity(conns.len());
    loop {
        let now = Instant::now();
        if live.abort.load(Ordering::Relaxed) {
            break;
        }
        let writing = now < stop_writing;
        if !writing && (conns.iter().all(Conn::finished) || now >= give_up) {
            break;
        }
        flags.clear();
        flags.extend(conns.iter().map(|c| {
            let mut f = PollFlags::empty();
            if c.result.error.is_none() {
                f |= PollFlags::POLLIN;
                if writing && c.outstanding() < load.window as u64 {
                    f |= PollFlags::POLLOUT;
                }
            }
            f
        }));
        let mut fds: Vec<PollFd<'_>> = conns
            .iter()
            .zip(&flags)
            .map(|(c, &f)| PollFd::new(c.stream.as_fd(), f))
            .collect();
        let ready = poll(&mut fds, 100u16);
        let revents: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        if let Err(e) = ready {
            if e != nix::errno::Errno::EINTR {
                for c in conns.iter_mut() {
                    c.fail(format!("poll: {e}"));
                }
                break;
            }
        }
        let now = Instant::now();
        for (c, r) in conns.iter_mut().zip(revents) {
            if r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                c.receive(&mut buf, live, now);
            }
            if writing && r.contains(PollFlags::POLLOUT) && c.result.error.is_none() {
                c.send(load, &mut buf, live, now);
            }
            c.note_gap(now);
        }
    }
    let now = Instant::now();
    for c in conns.iter_mut() {
        c.note_gap(now);
        if c.result.error.is_none() && c.outstanding() > 0 {
            let left = c.outstanding();
            c.fail(format!(
                "{left} bytes never came back (gave up {} s after the run)",
                load.drain_limit.as_secs()
            ));
        }
        let _ = c.stream.shutdown(std::net::Shutdown::Both);
    }
}
