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

/// Sends `request` to the daemon at `path` (called `daemon` in errors) and
/// returns its answer; a [`Response::Error`] becomes [`ClientError::Refused`].
pub fn request(
    path: &Path,
    daemon: &str,
    request: Request,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let io_err = |source: io::Error| ClientError::Io {
        daemon: daemon.to_owned(),
        path: path.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ClientError::NotRunning {
            daemon: daemon.to_owned(),
            path: path.to_owned(),
        },
        io::ErrorKind::PermissionDenied => ClientError::Denied {
            daemon: daemon.to_owned(),
            path: path.to_owned(),
        },
        _ => io_err(e),
    })?;
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    let mut line = serde_json::to_string(&Envelope {
        version: PROTOCOL_VERSION,
        request,
    })
    .expect("requests serialise");
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io_err)?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(io_err)?;
    if answer.is_empty() {
        return Err(ClientError::Protocol {
            daemon: daemon.to_owned(),
            detail: "it closed the connection without answering (refused our credentials?)".into(),
        });
    }
    match serde_json::from_str(&answer) {
        Ok(Response::Error { message }) => Err(ClientError::Refused {
            daemon: daemon.to_owned(),
            message,
        }),
        Ok(r) => Ok(r),
        Err(e) => Err(ClientError::Protocol {
            daemon: daemon.to_owned(),
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
