//! Asking a daemon: one request, one answer.

use std::{
    io::{self, BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{Envelope, Request, Response, PROTOCOL_VERSION};

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens at the socket's path.
    #[error("{daemon} is not running (no control socket at {path})")]
    NotRunning {
        /// `lstack` or `ltran`, and which one.
        daemon: String,
        /// The socket looked for.
        path: PathBuf,
    },
    /// Not allowed to connect.
    #[error("not allowed to talk to {daemon} at {path}: run as root or as the daemon's user")]
    Denied {
        /// As above.
        daemon: String,
        /// As above.
        path: PathBuf,
    },
    /// The conversation failed.
    #[error("talking to {daemon} at {path}: {source}")]
    Io {
        /// As above.
        daemon: String,
        /// As above.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The answer was not the protocol's.
    #[error("{daemon} answered something unreadable: {detail}")]
    Protocol {
        /// As above.
        daemon: String,
        /// What was wrong with it.
        detail: String,
    },
    /// The daemon understood and refused (or failed).
    #[error("{daemon}: {message}")]
    Refused {
        /// As above.
        daemon: String,
        /// Its message.
        message: String,
    },
}

/// Why a line exchange with a daemon got no answer line.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Nothing listens at the socket's path.
    #[error("no control socket")]
    NotRunning,
    /// Not allowed to connect.
    #[error("not allowed to connect")]
    Denied,
    /// The conversation failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The daemon closed the connection without a word.
    #[error("it closed the connection without answering (refused our credentials?)")]
    NoAnswer,
}

/// Sends one request `line` (without the newline) to the daemon at `path`
/// and returns its answer line; `timeout` bounds each read and write. Both
/// this protocol and the appliance's API travel this way.
pub fn exchange(path: &Path, line: &str, timeout: Duration) -> Result<String, ExchangeError> {
    let mut stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ExchangeError::NotRunning,
        io::ErrorKind::PermissionDenied => ExchangeError::Denied,
        _ => ExchangeError::Io(e),
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut request = String::with_capacity(line.len() + 1);
    request.push_str(line);
    request.push('\n');
    stream.write_all(request.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer)?;
    if answer.is_empty() {
        return Err(ExchangeError::NoAnswer);
    }
    Ok(answer)
}

/// Sends `request` to the daemon at `path` (called `daemon` in errors) and
/// returns its answer; a [`Response::Error`] becomes [`ClientError::Refused`].
pub fn request(
    path: &Path,
    daemon: &str,
    request: Request,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let daemon = daemon.to_owned();
    let path = path.to_owned();
    let line = serde_json::to_string(&Envelope {
        version: PROTOCOL_VERSION,
        request,
    })
    .expect("requests serialise");
    let answer = exchange(&path, &line, timeout).map_err(|e| match e {
        ExchangeError::NotRunning => ClientError::NotRunning {
            daemon: daemon.clone(),
            path: path.clone(),
        },
        ExchangeError::Denied => ClientError::Denied {
            daemon: daemon.clone(),
            path: path.clone(),
        },
        ExchangeError::Io(source) => ClientError::Io {
            daemon: daemon.clone(),
            path: path.clone(),
            source,
        },
        ExchangeError::NoAnswer => ClientError::Protocol {
            daemon: daemon.clone(),
            detail: e.to_string(),
        },
    })?;
    match serde_json::from_str(&answer) {
        Ok(Response::Error { message }) => Err(ClientError::Refused { daemon, message }),
        Ok(r) => Ok(r),
        Err(e) => Err(ClientError::Protocol {
            daemon,
            detail: e.to_string(),
        }),
    }
}

/// Writes one request line on an open connection (a registration session).
pub fn send(mut conn: impl Write, request: &Request) -> io::Result<()> {
    let mut line = serde_json::to_string(&Envelope {
        version: PROTOCOL_VERSION,
        request: request.clone(),
    })
    .expect("requests serialise");
    line.push('\n');
    conn.write_all(line.as_bytes())
}

/// Reads one response line from an open connection; `None` at end of file.
pub fn receive(conn: &mut impl BufRead) -> io::Result<Option<Response>> {
    let mut line = String::new();
    if conn.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    serde_json::from_str(&line)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
