//! CPU time from `/proc`: a process's user + system ticks
//! (`/proc/<pid>/stat`), and the whole machine's (`/proc/stat`).

use std::time::Instant;

use anyhow::{Context, Result};

/// CPU ticks (user + system) process `pid` has used ("self" is not a pid:
/// pass [`std::process::id`]).
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat_ticks(&stat).with_context(|| format!("unreadable {path}: {stat:?}"))
}

/// utime + stime of a `/proc/<pid>/stat` line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(") ")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`_SC_CLK_TCK`), the unit of [`cpu_ticks`].
pub fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    #[allow(unsafe_code)]
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// CPU use of several processes over a window.
#[derive(Debug)]
pub struct CpuWindow {
    pids: Vec<u32>,
    start: Vec<u64>,
    at: Instant,
}

impl CpuWindow {
    /// Starts the window now for `pids`.
    pub fn start(pids: &[u32]) -> Result<Self> {
        Ok(Self {
            pids: pids.to_vec(),
            start: pids.iter().map(|&p| cpu_ticks(p)).collect::<Result<_>>()?,
            at: Instant::now(),
        })
    }

    /// CPU seconds each process used since [`CpuWindow::start`].
    pub fn seconds(&self) -> Result<Vec<f64>> {
        let hz = clock_ticks_per_sec();
        self.pids
            .iter()
            .zip(&self.start)
            .map(|(&p, &s)| Ok(cpu_ticks(p)?.saturating_sub(s) as f64 / hz))
            .collect()
    }

    /// Share of one CPU each process used since [`CpuWindow::start`].
    pub fn shares(&self) -> Result<Vec<f64>> {
        let secs = self.at.elapsed().as_secs_f64();
        Ok(self.seconds()?.into_iter().map(|s| s / secs).collect())
    }
}

/// The machine's CPU time by kind, all CPUs added up (the `cpu` line of
/// `/proc/stat`), in ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineCpu {
    /// user + nice.
    pub user: u64,
    /// system.
    pub system: u64,
    /// irq + softirq: packet processing the kernel did outside any process.
    pub interrupts: u64,
    /// idle + iowait.
    pub idle: u64,
    /// steal: time the hypervisor gave to others.
    pub steal: u64,
}

impl MachineCpu {
    /// Reads `/proc/stat` now.
    pub fn read() -> Result<Self> {
        let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        Self::parse(&text).with_context(|| "no readable `cpu` line in /proc/stat".to_owned())
    }

    fn parse(text: &str) -> Option<Self> {
        let line = text.lines().find(|l| l.starts_with("cpu "))?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        Some(Self {
            user: at(0) + at(1),
            system: at(2),
            idle: at(3) + at(4),
            interrupts: at(5) + at(6),
            steal: at(7),
        })
    }

    /// What was used between `earlier` and `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
            interrupts: self.interrupts.saturating_sub(earlier.interrupts),
            idle: self.idle.saturating_sub(earlier.idle),
            steal: self.steal.saturating_sub(earlier.steal),
        }
    }

    /// Share of all CPUs' time that was not idle.
    pub fn busy_share(&self) -> f64 {
        let busy = self.user + self.system + self.interrupts + self.steal;
        let all = busy + self.idle;
        if all == 0 {
            0.0
        } else {
            busy as f64 / all as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_skip_a_command_name_with_spaces_and_parens() {
        let stat = "4242 (tcp (echo) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    1234 567 0 0 20 0 3 0 100 1000 10 ...";
        assert_eq!(parse_stat_ticks(stat), Some(1234 + 567));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn own_process_has_ticks() {
        cpu_ticks(std::process::id()).unwrap();
    }

    #[test]
    fn machine_cpu_adds_kinds_and_differences() {
        let a = MachineCpu::parse("cpu  10 1 5 100 2 3 4 0 0 0\ncpu0 1 2 3\n").unwrap();
        assert_eq!(
            a,
            MachineCpu {
                user: 11,
                system: 5,
                interrupts: 7,
                idle: 102,
                steal: 0
            }
        );
        let b = MachineCpu::parse("cpu  20 1 5 200 2 3 14 0 0 0\n").unwrap();
        let d = b.since(&a);
        assert_eq!((d.user, d.interrupts, d.idle), (10, 10, 100));
        assert!((d.busy_share() - 20.0 / 120.0).abs() < 1e-9);
        assert!(MachineCpu::read().unwrap().idle > 0);
    }
}
