//! Serving control requests on a thread of the daemon.

use std::{
    fs,
    io::{self, BufRead, BufReader, Read, Write},
    os::unix::{
        fs::{DirBuilderExt, PermissionsExt},
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::{Envelope, Request, Response, PROTOCOL_VERSION};

/// Longest request line [`Server::start`] accepts.
const MAX_REQUEST: u64 = 64 * 1024;

/// How a [`Server`] answers its connections.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Longest request line read; the rest of a longer one is not.
    pub max_request: u64,
    /// Bound on each read and write of a connection.
    pub timeout: Duration,
    /// Answer each connection on a thread of its own, so a slow request does
    /// not hold up the next one (otherwise one at a time, in order).
    pub thread_per_connection: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_request: MAX_REQUEST,
            timeout: Duration::from_secs(5),
            thread_per_connection: false,
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
    /// Serves `handler` at `path` on a new thread named `name`, one
    /// connection at a time.
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
        Server::serve_lines(path, name, ServeOptions::default(), move |line| {
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
        if !options.thread_per_connection {
            if let Err(e) = answer(&conn, options, &**handler) {
                tracing::debug!(socket = name, error = %e, "control connection");
            }
            continue;
        }
        let (handler, options) = (Arc::clone(handler), options.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("{name}-conn"))
            .spawn(move || {
                if let Err(e) = answer(&conn, &options, &*handler) {
                    tracing::debug!(error = %e, "control connection");
                }
            });
        if let Err(e) = spawned {
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
    conn.set_read_timeout(Some(options.timeout))?;
    conn.set_write_timeout(Some(options.timeout))?;
    let mut line = String::new();
    BufReader::new(conn.take(options.max_request)).read_line(&mut line)?;
    let mut out = handler(&line);
    out.push('\n');
    let mut writer = conn;
    writer.write_all(out.as_bytes())
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
        let options = ServeOptions {
            thread_per_connection: true,
            ..ServeOptions::default()
        };
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
