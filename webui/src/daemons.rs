//! The daemons the API sits on: applianced's control socket (config,
//! processes, NICs, host facts) and the ltran/lstack control sockets
//! (statistics), each asked on a blocking thread so a slow daemon holds up
//! no other request.
//!
//! A daemon that is not running becomes a 503 problem naming it; a
//! refusal of applianced becomes a 422 (naming the config field) or a 409.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use appliance::api::{self as appliance_api, ClientError};
use gazelle_ctl_proto::{client, paths, LtranStats, Request, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::problem::Problem;

/// Where the daemons are.
#[derive(Debug, Clone)]
pub struct Daemons {
    /// applianced's control socket.
    pub appliance_socket: PathBuf,
    /// gazelle's run directory (ltran's and every lstack's socket).
    pub run_dir: PathBuf,
    /// gazelle's `unix_prefix` of the sockets.
    pub unix_prefix: String,
    /// How long a config change may take (it restarts processes).
    pub change_timeout: Duration,
    /// How long a statistics or status question may take.
    pub query_timeout: Duration,
}

/// An lstack whose control socket is in the run directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct LstackRef {
    /// Its address (`host_addr`), the id of its statistics.
    #[schema(value_type = String)]
    pub ip: IpAddr,
    /// Its control socket.
    #[schema(value_type = String)]
    pub socket: PathBuf,
}

fn appliance_problem(e: ClientError) -> Problem {
    match e {
        ClientError::Refused { message, field } => {
            if field.is_some() || message.starts_with("invalid config") {
                Problem::invalid_config(message, field)
            } else if message.contains("no saved version")
                || message.contains("no instance is named")
            {
                Problem::not_found(message)
            } else if message.contains("busy") {
                Problem::unavailable("applianced", message)
            } else {
                Problem::conflict(message)
            }
        }
        ClientError::NotRunning { .. } | ClientError::Denied { .. } | ClientError::Io { .. } => {
            Problem::unavailable("applianced", e.to_string())
        }
        other => Problem::bad_gateway("applianced", other.to_string()),
    }
}

fn ctl_problem(daemon: &str, e: client::ClientError) -> Problem {
    match e {
        client::ClientError::Refused { message, .. } => {
            Problem::bad_gateway(daemon, format!("{daemon}: {message}"))
        }
        client::ClientError::Protocol { .. } => Problem::bad_gateway(daemon, e.to_string()),
        _ => Problem::unavailable(daemon, e.to_string()),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Problem> + Send + 'static,
) -> Result<T, Problem> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Problem::internal(format!("a worker thread failed: {e}")))?
}

impl Daemons {
    /// Asks applianced; `change` says the request may take as long as a
    /// config change.
    pub async fn appliance(
        &self,
        request: appliance_api::Request,
        change: bool,
    ) -> Result<appliance_api::Response, Problem> {
        let path = self.appliance_socket.clone();
        let timeout = if change {
            self.change_timeout
        } else {
            self.query_timeout
        };
        blocking(move || appliance_api::request(&path, request, timeout).map_err(appliance_problem))
            .await
    }

    /// ltran's control socket.
    pub fn ltran_socket(&self) -> PathBuf {
        paths::ltran_socket(&self.run_dir, &self.unix_prefix)
    }

    /// Asks ltran for everything `gazellectl ltran show` prints.
    pub async fn ltran_stats(&self) -> Result<LtranStats, Problem> {
        let path = self.ltran_socket();
        let timeout = self.query_timeout;
        blocking(move || {
            match client::request(&path, "ltran", Request::LtranStats, timeout)
                .map_err(|e| ctl_problem("ltran", e))?
            {
                Response::LtranStats(s) => Ok(s),
                other => Err(Problem::bad_gateway(
                    "ltran",
                    format!("ltran answered another question: {}", kind(&other)),
                )),
            }
        })
        .await
    }

    /// Asks the lstack at `ip`.
    pub async fn lstack(&self, ip: IpAddr, request: Request) -> Result<Response, Problem> {
        let path = paths::lstack_socket(&self.run_dir, &self.unix_prefix, ip);
        let timeout = self.query_timeout;
        let daemon = format!("lstack {ip}");
        blocking(move || {
            if !path.exists() {
                return Err(Problem::unavailable(
                    &daemon,
                    format!(
                        "no lstack serves {ip}: no control socket at {}",
                        path.display()
                    ),
                ));
            }
            client::request(&path, &daemon, request, timeout).map_err(|e| ctl_problem(&daemon, e))
        })
        .await
    }

    /// The lstacks whose control sockets are in the run directory, by
    /// address.
    pub fn lstacks(&self) -> Vec<LstackRef> {
        list_lstacks(&self.run_dir, &self.unix_prefix)
    }
}

/// The sockets named `<prefix>lstack-<ip>.sock` in `run_dir`.
pub fn list_lstacks(run_dir: &Path, unix_prefix: &str) -> Vec<LstackRef> {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return Vec::new();
    };
    let lead = format!("{unix_prefix}lstack-");
    let mut found: Vec<LstackRef> = entries
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?;
            let ip: IpAddr = name
                .strip_prefix(&lead)?
                .strip_suffix(".sock")?
                .parse()
                .ok()?;
            Some(LstackRef { ip, socket: path })
        })
        .collect();
    found.sort_by_key(|l| l.ip);
    found
}

/// The name of a response's kind, for messages.
fn kind(r: &Response) -> String {
    serde_json::to_value(r)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str().map(str::to_owned)))
        .unwrap_or_else(|| "?".into())
}

/// The kind of an unexpected applianced answer, as a 502.
pub fn unexpected(r: &appliance_api::Response) -> Problem {
    let kind = serde_json::to_value(r)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str().map(str::to_owned)))
        .unwrap_or_else(|| "?".into());
    Problem::bad_gateway(
        "applianced",
        format!("applianced answered another question ({kind})"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_only_lstack_sockets_of_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "lstack-10.0.0.2.sock",
            "lstack-fd00::2.sock",
            "x_lstack-10.0.0.3.sock",
            "ltran.sock",
            "lstack-nonsense.sock",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let ips: Vec<String> = list_lstacks(dir.path(), "")
            .iter()
            .map(|l| l.ip.to_string())
            .collect();
        assert_eq!(ips, ["10.0.0.2", "fd00::2"]);
        let ips: Vec<String> = list_lstacks(dir.path(), "x_")
            .iter()
            .map(|l| l.ip.to_string())
            .collect();
        assert_eq!(ips, ["10.0.0.3"]);
    }
}
