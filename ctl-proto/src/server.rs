//! Serving control requests on a thread of the daemon.

use std::{
    fs,
    io::{self, Read, Write},
    os::unix::{
        fs::{DirBuilderExt, PermissionsExt},
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{Envelope, Request, Response, PROTOCOL_VERSION};

/// Longest request line [`Server::start`] accepts.
const MAX_REQUEST: u64 = 64 * 1024;

/// How a [`Server`] answers its connections.
///
/// Each connection is answered on a thread of its own, so a slow client
/// never holds up the next one; at most `max_connections` are answered at
/// once, and every one has `timeout` for its whole request line, however
/// slowly it trickles in, and again for taking the answer. Nothing a client
/// sends can make the server hold more than `max_connections` threads and
/// `max_request` bytes each.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Longest request line read; a longer one is answered as unreadable.
    pub max_request: u64,
    /// Time a client has to send its whole request line, and then again to
    /// take the answer.
    pub timeout: Duration,
    /// Connections answered at once; one more gets `busy_reply` (if any) and
    /// is closed.
    pub max_connections: usize,
    /// The line (without the newline) a connection over `max_connections`
    /// gets, in the served protocol; `None`: closed without a word.
    pub busy_reply: Option<String>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_request: MAX_REQUEST,
            timeout: Duration::from_secs(5),
            max_connections: 16,
            busy_reply: None,
        }
    }
}

/// A control socket being served; dropping it stops serving and removes
/// the socket file.
#[derive(Debug)]
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Answers one request line with one response line (without the newline).
type LineHandler = dyn Fn(&str) -> String + Send + Sync;

impl Server {
    /// Serves `handler` at `path` on a new thread named `name` (see
    /// [`ServeOptions`] for how connections are answered).
    ///
    /// The directory is created (mode 700) if missing; the socket is mode
    /// 600 and only root and this process's user are answered. A socket
    /// file left by a process that exited is replaced; one that a live
    /// process serves is an `AddrInUse` error.
    pub fn start(
        path: &Path,
        name: &str,
        handler: impl Fn(Request) -> Response + Send + Sync + 'static,
    ) -> io::Result<Server> {
        let options = ServeOptions {
            busy_reply: Some(response_line(&Response::Error {
                message: "busy: answering as many requests as it takes at once; try again".into(),
            })),
            ..ServeOptions::default()
        };
        Server::serve_lines(path, name, options, move |line| {
            let response = match parse_request(line) {
                Ok(request) => handler(request),
                Err(refusal) => *refusal,
            };
            response_line(&response)
        })
    }

    /// Serves a line protocol of the caller's (the appliance's API) the way
    /// [`Server::start`] serves this one: the same socket, credentials check
    /// and framing, one request line in and `handler`'s line out.
    pub fn serve_lines(
        path: &Path,
        name: &str,
        options: ServeOptions,
        handler: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> io::Result<Server> {
        let listener = bind(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<LineHandler> = Arc::new(handler);
        let thread = {
            let stop = Arc::clone(&stop);
            let name = name.to_owned();
            std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || serve(&listener, &stop, &name, &options, &handler))?
        };
        Ok(Server {
            path: path.to_owned(),
            stop,
            thread: Some(thread),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept call.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = fs::remove_file(&self.path);
    }
}

/// Binds a control socket at `path` the way [`Server::start`] does: the
/// directory is created (mode 700) if missing, the socket is mode 600, a
/// stale socket file is replaced and a live one is an `AddrInUse` error.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is served by another live process", path.display()),
            ));
        }
        fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

fn serve(
    listener: &UnixListener,
    stop: &AtomicBool,
    name: &str,
    options: &ServeOptions,
    handler: &Arc<LineHandler>,
) {
    let busy = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(conn) = conn else { continue };
        if !allowed(&conn) {
            tracing::warn!(
                socket = name,
                "control connection refused: neither root nor our user"
            );
            continue;
        }
        if busy.fetch_add(1, Ordering::SeqCst) >= options.max_connections {
            busy.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(
                socket = name,
                limit = options.max_connections,
                "control connection turned away: as many being answered as allowed"
            );
            if let Some(reply) = &options.busy_reply {
                // Never wait for a client that does not read.
                let _ = conn.set_nonblocking(true);
                let mut writer = &conn;
                let _ = writer.write_all(format!("{reply}\n").as_bytes());
            }
            continue;
        }
        let (handler, options, taken) = (Arc::clone(handler), options.clone(), Arc::clone(&busy));
        let spawned = std::thread::Builder::new()
            .name(format!("{name}-conn"))
            .spawn(move || {
                if let Err(e) = answer(&conn, &options, &*handler) {
                    tracing::debug!(error = %e, "control connection");
                }
                taken.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            busy.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(socket = name, error = %e, "no thread for a control connection");
        }
    }
}

/// Root and this process's own user may ask.
pub fn allowed(conn: &UnixStream) -> bool {
    match nix::sys::socket::getsockopt(conn, nix::sys::socket::sockopt::PeerCredentials) {
        Ok(cred) => cred.uid() == 0 || cred.uid() == nix::unistd::geteuid().as_raw(),
        Err(_) => false,
    }
}

fn answer(conn: &UnixStream, options: &ServeOptions, handler: &LineHandler) -> io::Result<()> {
    let line = read_request(conn, options.max_request, options.timeout)?;
    let mut out = handler(&String::from_utf8_lossy(&line));
    out.push('\n');
    conn.set_write_timeout(Some(options.timeout))?;
    let mut writer = conn;
    writer.write_all(out.as_bytes())
}

/// Reads one request line of at most `max` bytes (a longer one is cut
/// there, and the handler finds it unreadable) within `timeout` in all: a
/// client that trickles bytes gets no more time than one that stalls.
fn read_request(mut conn: &UnixStream, max: u64, timeout: Duration) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    let mut line = Vec::new();
    let mut chunk = [0u8; 4096];
    while line.len() < max {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no whole request line within {timeout:?}"),
            ));
        }
        conn.set_read_timeout(Some(left))?;
        let want = chunk.len().min(max - line.len());
        let n = match conn.read(&mut chunk[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(end) = chunk[..n].iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&chunk[..=end]);
            return Ok(line);
        }
        line.extend_from_slice(&chunk[..n]);
    }
    Ok(line)
}

/// Reads one request line: the request, or the error response to send back
/// (unreadable, or another protocol version).
pub fn parse_request(line: &str) -> Result<Request, Box<Response>> {
    match serde_json::from_str::<Envelope>(line) {
        Ok(e) if e.version == PROTOCOL_VERSION => Ok(e.request),
        Ok(e) => Err(Box::new(Response::Error {
            message: format!(
                "protocol version {} is not this daemon's ({PROTOCOL_VERSION}): use the gazellectl of the same release",
                e.version
            ),
        })),
        Err(e) => Err(Box::new(Response::Error {
            message: match unknown_kind(line) {
                // Same version, a request this daemon's build does not have: a
                // daemon started before an upgrade of gazellectl.
                Some(kind) => format!(
                    "this daemon does not know the request {kind:?}: it is older than the client; \
                     restart it from the same release"
                ),
                None => format!("unreadable request: {e}"),
            },
        })),
    }
}

/// The `kind` of a request line of this protocol version that names a kind
/// [`Request`] does not have.
fn unknown_kind(line: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    if value.get("version")?.as_u64()? != u64::from(PROTOCOL_VERSION) {
        return None;
    }
    let kind = value.get("request")?.get("kind")?.as_str()?;
    // A known kind with bad fields is unreadable, not unknown.
    let probe = serde_json::json!({ "kind": kind });
    match serde_json::from_value::<Request>(probe) {
        Err(e) if e.to_string().starts_with("unknown variant") => Some(kind.to_owned()),
        _ => None,
    }
}

/// A response as its line, without the newline.
pub fn response_line(response: &Response) -> String {
    serde_json::to_string(response).expect("responses serialise")
}

/// Writes one response line.
pub fn write_response(mut conn: impl Write, response: &Response) -> io::Result<()> {
    let mut out = response_line(response);
    out.push('\n');
    conn.write_all(out.as_bytes())
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};

    use super::*;
    use crate::{client, client::ClientError, LstackStats};

    fn stats() -> LstackStats {
        LstackStats {
            pid: 42,
            process: "redis-server".into(),
            tcp_connections: 7,
            ..LstackStats::default()
        }
    }

    #[test]
    fn answers_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/lstack-10.0.0.2.sock");
        let server = Server::start(&path, "test-ctl", |req| match req {
            Request::LstackStats => Response::LstackStats(stats()),
            _ => Response::Error {
                message: "not here".into(),
            },
        })
        .unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let got = client::request(
            &path,
            "lstack",
            Request::LstackStats,
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(got, Response::LstackStats(stats()));
        let err = client::request(
            &path,
            "lstack",
            Request::LstackConnections,
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(matches!(&err, ClientError::Refused { message, .. } if message == "not here"));
        drop(server);
        assert!(!path.exists(), "socket file removed");
        let err = client::request(
            &path,
            "lstack 10.0.0.2",
            Request::LstackStats,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(err, ClientError::NotRunning { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("lstack 10.0.0.2 is not running"),
            "{err}"
        );
    }

    #[test]
    fn a_line_server_with_threads_answers_while_a_request_is_pending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lines.sock");
        // "wait" blocks until "go" arrives: served one at a time, "go" would
        // not be read while "wait" is pending, and "wait" would time out.
        let (go, gone) = std::sync::mpsc::sync_channel::<()>(1);
        let (started, waiting) = std::sync::mpsc::sync_channel::<()>(1);
        let (gone, started) = (std::sync::Mutex::new(gone), std::sync::Mutex::new(started));
        let options = ServeOptions::default();
        let _server =
            Server::serve_lines(&path, "lines", options, move |line| match line.trim_end() {
                "wait" => {
                    started.lock().unwrap().send(()).unwrap();
                    match gone.lock().unwrap().recv_timeout(Duration::from_secs(5)) {
                        Ok(()) => "released".into(),
                        Err(e) => format!("never released: {e}"),
                    }
                }
                "go" => {
                    go.send(()).unwrap();
                    "sent".into()
                }
                other => format!("unknown {other}"),
            })
            .unwrap();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || client::exchange(&path, "wait", Duration::from_secs(30)))
        };
        waiting.recv_timeout(Duration::from_secs(30)).unwrap();
        let sent = client::exchange(&path, "go", Duration::from_secs(30)).unwrap();
        assert_eq!(sent, "sent\n");
        assert_eq!(waiter.join().unwrap().unwrap(), "released\n");

        drop(_server);
        let err = client::exchange(&path, "go", Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, client::ExchangeError::NotRunning), "{err}");
    }

    /// A client that trickles its request a byte at a time, each byte well
    /// within a read timeout, is cut off at the request deadline, and while
    /// it trickles another client is answered.
    #[test]
    fn a_trickling_client_is_cut_off_and_blocks_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sock");
        let options = ServeOptions {
            timeout: Duration::from_millis(600),
            ..ServeOptions::default()
        };
        let _server = Server::serve_lines(&path, "t", options, |line| {
            format!("got {}", line.trim_end())
        })
        .unwrap();
        let mut slow = UnixStream::connect(&path).unwrap();
        let trickler = std::thread::spawn(move || {
            // 40 bytes, one every 100 ms: 4 s in all, never 600 ms apart.
            for (sent, b) in b"0123456789012345678901234567890123456789"
                .iter()
                .enumerate()
            {
                if slow.write_all(&[*b]).is_err() {
                    return sent;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = slow.write_all(b"\n");
            let mut answer = String::new();
            let _ = BufReader::new(&slow).read_line(&mut answer);
            assert!(
                answer.is_empty(),
                "a trickled request was answered: {answer}"
            );
            40
        });
        std::thread::sleep(Duration::from_millis(250));
        let quick = client::exchange(&path, "quick", Duration::from_secs(30)).unwrap();
        assert_eq!(quick, "got quick\n");
        let sent = trickler.join().unwrap();
        assert!(sent < 40, "the trickling client was never cut off");
    }

    #[test]
    fn connections_over_the_limit_are_told_busy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.sock");
        let _server = Server::start(&path, "b", |_| Response::LstackStats(stats())).unwrap();
        // Sixteen connections that say nothing hold every slot.
        let held: Vec<UnixStream> = (0..16)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        let err = client::request(
            &path,
            "lstack",
            Request::LstackStats,
            Duration::from_secs(30),
        )
        .unwrap_err();
        assert!(
            matches!(&err, ClientError::Refused { message, .. } if message.starts_with("busy")),
            "{err}"
        );
        // Their slots come back when they go.
        drop(held);
        let answered = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            client::request(
                &path,
                "lstack",
                Request::LstackStats,
                Duration::from_secs(30),
            )
            .is_ok()
        });
        assert!(answered, "slots were not given back");
    }

    #[test]
    fn an_overlong_request_is_cut_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.sock");
        let _server = Server::start(&path, "l", |_| Response::LstackStats(stats())).unwrap();
        let mut c = UnixStream::connect(&path).unwrap();
        let writer = {
            let mut c = c.try_clone().unwrap();
            std::thread::spawn(move || {
                // 1 MiB with no newline: the server stops reading at 64 KiB.
                let chunk = vec![b'x'; 64 * 1024];
                (0..16).take_while(|_| c.write_all(&chunk).is_ok()).count()
            })
        };
        let mut s = String::new();
        BufReader::new(&mut c).read_line(&mut s).unwrap();
        let r: Response = serde_json::from_str(&s).unwrap();
        assert!(
            matches!(&r, Response::Error { message } if message.starts_with("unreadable request")),
            "{r:?}"
        );
        drop(c);
        assert!(writer.join().unwrap() < 16, "the server read the whole MiB");
    }

    #[test]
    fn refuses_a_live_socket_and_replaces_a_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.sock");
        let first = Server::start(&path, "a", |_| Response::Error {
            message: "a".into(),
        })
        .unwrap();
        let err = Server::start(&path, "b", |_| Response::Error {
            message: "b".into(),
        })
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        // A file left behind by a dead process: bound, never served.
        drop(first);
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let _second = Server::start(&path, "b", |_| Response::Error {
            message: "b".into(),
        })
        .unwrap();
        let err =
            client::request(&path, "x", Request::LstackStats, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(&err, ClientError::Refused { message, .. } if message == "b"));
    }

    #[test]
    fn refuses_other_versions_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let _s = Server::start(&path, "v", |_| Response::LstackStats(stats())).unwrap();
        let ask = |line: &str| {
            let mut c = UnixStream::connect(&path).unwrap();
            c.write_all(line.as_bytes()).unwrap();
            let mut s = String::new();
            BufReader::new(&c).read_line(&mut s).unwrap();
            serde_json::from_str::<Response>(&s).unwrap()
        };
        let r = ask("{\"version\":99,\"request\":{\"kind\":\"lstack_stats\"}}\n");
        assert!(
            matches!(r, Response::Error { message } if message.contains("protocol version 99"))
        );
        let r = ask(&format!(
            "{{\"version\":{PROTOCOL_VERSION},\"request\":{{\"kind\":\"lstack_teleport\"}}}}\n"
        ));
        assert!(
            matches!(&r, Response::Error { message } if message.starts_with("this daemon does not know the request \"lstack_teleport\"")),
            "{r:?}"
        );
        // A known kind with a missing field is unreadable, not unknown.
        let r = ask(&format!(
            "{{\"version\":{PROTOCOL_VERSION},\"request\":{{\"kind\":\"register\"}}}}\n"
        ));
        assert!(
            matches!(&r, Response::Error { message } if message.starts_with("unreadable request")),
            "{r:?}"
        );
        let r = ask("hello\n");
        assert!(
            matches!(r, Response::Error { message } if message.starts_with("unreadable request"))
        );
    }
}
