//! Running programs for tests: errors that say what ran and what it printed, children
//! that cannot outlive the test, and bounded waits (an error, never a hang).

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// How often bounded waits poll.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The command line of `cmd`, quoted where needed, for error messages and logs.
pub fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+*".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Runs `cmd` to completion with stdin closed and stdout/stderr captured.
///
/// Fails when the program cannot be started or exits unsuccessfully; the error names the
/// command line, the exit status and everything it printed.
pub fn run_checked(cmd: &mut Command) -> anyhow::Result<Output> {
    let line = command_line(cmd);
    tracing::debug!(command = %line, "running");
    let output = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("could not start `{line}`"))?;
    if !output.status.success() {
        bail!(
            "`{line}` failed ({})\n{}",
            output.status,
            describe_output(&output.stdout, &output.stderr)
        );
    }
    Ok(output)
}

/// The captured output of a program, labelled, for error messages.
fn describe_output(stdout: &[u8], stderr: &[u8]) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(stdout).trim_end(),
        String::from_utf8_lossy(stderr).trim_end()
    )
}

/// A pipe of the child drained by a thread into a buffer, so the child never blocks on
/// a full pipe and its output is available for assertions and error messages.
#[derive(Debug)]
struct Capture {
    buffer: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

impl Capture {
    fn start(mut pipe: impl Read + Send + 'static) -> Self {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buffer);
        let reader = thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&chunk[..n]);
            }
        });
        Capture {
            buffer,
            reader: Some(reader),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        self.buffer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until the pipe hit end of file, or the deadline passed (a grandchild may
    /// hold the pipe open: then the output so far is all there is).
    fn finish(&mut self, deadline: Instant) -> Vec<u8> {
        while let Some(reader) = &self.reader {
            if reader.is_finished() {
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
            } else if Instant::now() >= deadline {
                break;
            } else {
                thread::sleep(Duration::from_millis(5));
            }
        }
        self.snapshot()
    }
}

/// A running child process that is killed (SIGKILL, with its whole process group) and
/// reaped when dropped, so a failing test cannot leave servers behind.
///
/// Piped stdout and stderr are drained in the background; read them with
/// [`ChildGuard::stdout_so_far`], [`ChildGuard::wait_for_output`] or
/// [`ChildGuard::wait_with_output_timeout`].
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    command: String,
    stdout: Option<Capture>,
    stderr: Option<Capture>,
    reaped: Option<ExitStatus>,
}

impl ChildGuard {
    /// Starts `cmd` in a new process group (so drop can kill its helpers too).
    ///
    /// Whatever the caller set for stdin/stdout/stderr is kept; piped output is captured.
    pub fn spawn(cmd: &mut Command) -> anyhow::Result<Self> {
        let command = command_line(cmd);
        tracing::debug!(command = %command, "spawning");
        let mut child = cmd
            .process_group(0)
            .spawn()
            .with_context(|| format!("could not start `{command}`"))?;
        let stdout = child.stdout.take().map(Capture::start);
        let stderr = child.stderr.take().map(Capture::start);
        Ok(ChildGuard {
            child,
            command,
            stdout,
            stderr,
            reaped: None,
        })
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The command line the child was started with.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// The child's stdin, when it was spawned with `Stdio::piped()`.
    pub fn stdin(&mut self) -> Option<&mut ChildStdin> {
        self.child.stdin.as_mut()
    }

    /// Closes the child's stdin (many programs exit at end of input).
    pub fn close_stdin(&mut self) {
        self.child.stdin = None;
    }

    /// What the child has written to a piped stdout so far (empty if not piped).
    pub fn stdout_so_far(&self) -> String {
        lossy(self.stdout.as_ref().map(Capture::snapshot))
    }

    /// What the child has written to a piped stderr so far (empty if not piped).
    pub fn stderr_so_far(&self) -> String {
        lossy(self.stderr.as_ref().map(Capture::snapshot))
    }

    /// The exit status if the child has exited, without waiting.
    pub fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if self.reaped.is_none() {
            self.reaped = self
                .child
                .try_wait()
                .with_context(|| format!("checking whether `{}` exited", self.command))?;
        }
        Ok(self.reaped)
    }

    /// Waits until `needle` appears in the child's captured stdout or stderr.
    ///
    /// Fails, with the output so far, if the child exits first or `timeout` passes.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stdout_so_far().contains(needle) || self.stderr_so_far().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.try_wait()? {
                // The pipes may still hold the last words.
                let (out, err) = self.finish_captures(Instant::now() + Duration::from_secs(1));
                if out.contains(needle) || err.contains(needle) {
                    return Ok(());
                }
                bail!(
                    "`{}` exited ({status}) before printing {needle:?}\n{}",
                    self.command,
                    describe_output(out.as_bytes(), err.as_bytes())
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "`{}` did not print {needle:?} within {timeout:?}\n{}",
                    self.command,
                    describe_output(
                        self.stdout_so_far().as_bytes(),
                        self.stderr_so_far().as_bytes()
                    )
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Waits up to `timeout` for the child to exit and returns its status and captured
    /// output (whatever the status). On timeout the child is killed and the error
    /// carries its output so far.
    pub fn wait_with_output_timeout(mut self, timeout: Duration) -> anyhow::Result<Output> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                self.kill();
                let (out, err) = self.finish_captures(Instant::now() + Duration::from_secs(1));
                bail!(
                    "`{}` did not exit within {timeout:?}; killed it\n{}",
                    self.command,
                    describe_output(out.as_bytes(), err.as_bytes())
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        let (stdout, stderr) = self.finish_captures(Instant::now() + Duration::from_secs(2));
        Ok(Output {
            status,
            stdout: stdout.into_bytes(),
            stderr: stderr.into_bytes(),
        })
    }

    /// Everything a child that has exited printed, (stdout, stderr): unlike
    /// [`ChildGuard::stdout_so_far`], this waits (up to a second) for the pipes
    /// to be drained, so its last words are there.
    pub fn final_output(&mut self) -> (String, String) {
        self.finish_captures(Instant::now() + Duration::from_secs(1))
    }

    fn finish_captures(&mut self, deadline: Instant) -> (String, String) {
        let out = lossy(self.stdout.as_mut().map(|c| c.finish(deadline)));
        let err = lossy(self.stderr.as_mut().map(|c| c.finish(deadline)));
        (out, err)
    }

    /// Kills the child's process group with SIGKILL and reaps the child. Idempotent.
    pub fn kill(&mut self) {
        if self.reaped.is_some() {
            return;
        }
        // The child leads its own process group (spawned with `process_group(0)`), so
        // this also reaches anything it forked. Errors only mean it is gone already.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(status) => self.reaped = Some(status),
            Err(e) => tracing::warn!(command = %self.command, "reaping child: {e}"),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

fn lossy(bytes: Option<Vec<u8>>) -> String {
    String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned()
}

/// Waits until a TCP socket listens on `port` (any address) inside namespace `ns`,
/// polling `ss -Hltn` there.
///
/// Fails if `ss` fails (for example: no such namespace) or `timeout` passes first.
pub fn wait_tcp_listening(ns: &str, port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut ss = Command::new("ip");
        ss.args(["netns", "exec", ns, "ss", "-Hltn"]);
        let output = run_checked(&mut ss)
            .with_context(|| format!("listing TCP listeners in namespace {ns}"))?;
        let listing = String::from_utf8_lossy(&output.stdout);
        if listening_ports(&listing).any(|p| p == port) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "nothing listened on TCP port {port} in namespace {ns} within {timeout:?}; \
                 listeners were:\n{listing}"
            );
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// The local ports of `ss -Hltn` output lines (`LISTEN 0 128 0.0.0.0:8080 0.0.0.0:*`,
/// `[::]:22`, `*:80`, `10.0.0.1%eth0:53`).
fn listening_ports(ss_output: &str) -> impl Iterator<Item = u16> + '_ {
    ss_output.lines().filter_map(|line| {
        let local = line.split_whitespace().nth(3)?;
        local.rsplit_once(':')?.1.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ss_ports_are_parsed_for_v4_v6_wildcard_and_scoped() {
        let out = "LISTEN 0      128          0.0.0.0:8080      0.0.0.0:*\n\
                   LISTEN 0      4096            [::]:22           [::]:*\n\
                   LISTEN 0      10                 *:80              *:*\n\
                   LISTEN 0      5     10.0.0.1%eth0:53         0.0.0.0:*\n\
                   garbage\n";
        assert_eq!(listening_ports(out).collect::<Vec<_>>(), [8080, 22, 80, 53]);
    }

    #[test]
    fn command_line_quotes_only_what_needs_it() {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", "tb-1-0", "sh", "-c", "echo 'hi' there"]);
        assert_eq!(
            command_line(&cmd),
            r"ip netns exec tb-1-0 sh -c 'echo '\''hi'\'' there'"
        );
    }

    #[test]
    fn run_checked_reports_command_status_and_output() {
        let err = run_checked(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]))
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("sh -c"), "{msg}");
        assert!(msg.contains("exit status: 3"), "{msg}");
        assert!(msg.contains("out") && msg.contains("err"), "{msg}");
    }

    #[test]
    fn run_checked_reports_missing_program() {
        let err = run_checked(&mut Command::new("/nonexistent/program")).unwrap_err();
        assert!(
            format!("{err:#}").contains("could not start `/nonexistent/program`"),
            "{err:#}"
        );
    }

    #[test]
    fn child_guard_kills_on_drop() {
        let guard = ChildGuard::spawn(Command::new("sleep").arg("1000")).unwrap();
        let pid = guard.id();
        drop(guard);
        // Reaped, so the pid is gone (not even a zombie).
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn child_guard_captures_output_and_times_out() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo ready; exec sleep 1000"])
            .stdout(Stdio::piped());
        let mut guard = ChildGuard::spawn(&mut cmd).unwrap();
        guard
            .wait_for_output("ready", Duration::from_secs(5))
            .unwrap();
        let err = guard
            .wait_with_output_timeout(Duration::from_millis(100))
            .unwrap_err();
        assert!(format!("{err:#}").contains("did not exit"), "{err:#}");
    }

    #[test]
    fn child_guard_returns_output_of_finished_child() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo hello; echo oops >&2; exit 2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = ChildGuard::spawn(&mut cmd)
            .unwrap()
            .wait_with_output_timeout(Duration::from_secs(5))
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(out.stdout, b"hello\n");
        assert_eq!(out.stderr, b"oops\n");
    }
}
