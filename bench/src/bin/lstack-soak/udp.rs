//! UDP echo probes at a fixed rate: each datagram carries a magic, its
//! sequence number, its length, pseudo-random bytes and a checksum of all
//! of that, so an echo is known to be whole, ours and not seen before.

use std::{
    io::ErrorKind,
    net::{SocketAddr, UdpSocket},
    os::fd::AsFd,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use nix::poll::{poll, PollFd, PollFlags};

use crate::{pattern, Live};

const MAGIC: &[u8; 4] = b"SOAK";
/// Magic, sequence number, length.
const HEADER: usize = 4 + 8 + 2;
/// The checksum at the end.
const TRAILER: usize = 8;
/// Datagram sizes cycle through 64..=1400 bytes.
const MIN_LEN: usize = 64;
const MAX_LEN: usize = 1400;

/// What the probes do.
#[derive(Debug, Clone)]
pub struct UdpProbes {
    /// The echo server.
    pub target: SocketAddr,
    /// Datagrams per second (0: none).
    pub rate: u32,
    /// The run's seed.
    pub seed: u64,
    /// How long to send.
    pub run_for: Duration,
    /// How long to wait for late echoes afterwards.
    pub grace: Duration,
}

/// What the probes saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpResult {
    /// Datagrams the kernel accepted for sending.
    pub sent: u64,
    /// Distinct datagrams that came back intact.
    pub echoed: u64,
    /// Echoes that were not intact (bad magic, length or checksum, or a
    /// sequence number never sent).
    pub corrupt: u64,
    /// Echoes of a datagram already echoed.
    pub duplicates: u64,
    /// Sends the kernel refused (ENOBUFS, EAGAIN...).
    pub send_errors: u64,
}

impl UdpResult {
    /// Sent and never echoed.
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.echoed)
    }
}

/// The datagram with sequence number `seq`.
pub fn datagram(seed: u64, seq: u64) -> Vec<u8> {
    let len = MIN_LEN + (pattern::mix(seq ^ seed) % (MAX_LEN - MIN_LEN + 1) as u64) as usize;
    let mut d = vec![0u8; len];
    d[..4].copy_from_slice(MAGIC);
    d[4..12].copy_from_slice(&seq.to_le_bytes());
    d[12..14].copy_from_slice(&(len as u16).to_le_bytes());
    pattern::fill(seed, seq << 16, &mut d[HEADER..len - TRAILER]);
    let sum = checksum(&d[..len - TRAILER]);
    d[len - TRAILER..].copy_from_slice(&sum.to_le_bytes());
    d
}

/// The sequence number of an intact datagram; `None` if it is not one.
pub fn check(d: &[u8]) -> Option<u64> {
    if d.len() < HEADER + TRAILER || &d[..4] != MAGIC {
        return None;
    }
    let len = u16::from_le_bytes([d[12], d[13]]) as usize;
    let (body, sum) = d.split_at(d.len() - TRAILER);
    if len != d.len() || checksum(body).to_le_bytes() != sum {
        return None;
    }
    Some(u64::from_le_bytes(d[4..12].try_into().ok()?))
}

/// FNV-1a, 64 bits.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Sends and checks probes (from the calling thread's network namespace)
/// until the run time is over and the grace period passed, or
/// `live.abort` is set.
pub fn run(p: &UdpProbes, live: &Live) -> Result<UdpResult> {
    let mut r = UdpResult::default();
    if p.rate == 0 {
        return Ok(r);
    }
    let bind: SocketAddr = if p.target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()?;
    let sock = UdpSocket::bind(bind).context("binding the UDP probe socket")?;
    sock.connect(p.target)
        .with_context(|| format!("connecting the UDP probe socket to {}", p.target))?;
    sock.set_nonblocking(true)?;
    let mut seen: Vec<u64> = Vec::new();
    let mut buf = vec![0u8; 2048];
    let start = Instant::now();
    let stop_sending = start + p.run_for;
    let end = stop_sending + p.grace;
    let interval = Duration::from_secs(1) / p.rate;
    let mut next = start;
    let mut seq = 0u64;
    loop {
        let now = Instant::now();
        if now >= end || live.abort.load(Ordering::Relaxed) {
            break;
        }
        // On time, or catching up after being descheduled, a bounded burst.
        let mut burst = 0;
        while now < stop_sending && next <= now && burst < 64 {
            match sock.send(&datagram(p.seed, seq)) {
                Ok(_) => {
                    r.sent += 1;
                    live.udp_sent.store(r.sent, Ordering::Relaxed);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => r.send_errors += 1,
            }
            seq += 1;
            next += interval;
            burst += 1;
        }
        let wait = if now < stop_sending {
            next.saturating_duration_since(Instant::now())
        } else {
            end.saturating_duration_since(Instant::now())
        };
        let ms = wait.as_millis().clamp(1, 100) as u16;
        let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, ms);
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => match check(&buf[..n]).filter(|&s| s < seq) {
                    Some(s) => {
                        let (word, bit) = ((s / 64) as usize, 1u64 << (s % 64));
                        if seen.len() <= word {
                            seen.resize(word + 1, 0);
                        }
                        if seen[word] & bit != 0 {
                            r.duplicates += 1;
                        } else {
                            seen[word] |= bit;
                            r.echoed += 1;
                            live.udp_echoed.store(r.echoed, Ordering::Relaxed);
                        }
                    }
                    None => r.corrupt += 1,
                },
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // ECONNREFUSED after an ICMP port unreachable: counted by
                // the kernel (Udp NoPorts on the other side); keep going.
                Err(_) => break,
            }
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_check_and_carry_their_number() {
        for seq in [0u64, 1, 2, 1000, u64::from(u32::MAX) + 7] {
            let d = datagram(42, seq);
            assert!((MIN_LEN..=MAX_LEN).contains(&d.len()), "{}", d.len());
            assert_eq!(check(&d), Some(seq));
        }
        let lens: std::collections::BTreeSet<usize> =
            (0..100).map(|s| datagram(42, s).len()).collect();
        assert!(lens.len() > 50, "sizes vary: {lens:?}");
    }

    #[test]
    fn any_flipped_byte_or_cut_is_noticed() {
        let d = datagram(7, 12345);
        for i in 0..d.len() {
            let mut bad = d.clone();
            bad[i] ^= 0x10;
            assert_eq!(check(&bad), None, "flip at {i}");
        }
        assert_eq!(check(&d[..d.len() - 1]), None);
        assert_eq!(check(&d[..10]), None);
        assert_eq!(check(&[]), None);
    }
}
