//! Ethernet MAC addresses as the test bed reads and writes them (`02:00:00:00:00:01`).

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context};

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// A locally administered unicast address (`02:…`) whose low five bytes are
    /// `tag`'s low 40 bits, big endian.
    pub fn local(tag: u64) -> Self {
        let b = tag.to_be_bytes();
        MacAddr([0x02, b[3], b[4], b[5], b[6], b[7]])
    }

    /// The six bytes, first on the wire first.
    pub fn octets(self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = anyhow::Error;

    /// Parses six colon-separated hex bytes, as sysfs and `ip link` print them.
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let mut out = [0u8; 6];
        let mut parts = s.trim().split(':');
        for byte in &mut out {
            let part = parts
                .next()
                .with_context(|| format!("MAC address {s:?} has fewer than 6 bytes"))?;
            if part.is_empty() || part.len() > 2 {
                bail!("MAC address {s:?}: byte {part:?} is not 1 or 2 hex digits");
            }
            *byte = u8::from_str_radix(part, 16)
                .with_context(|| format!("MAC address {s:?}: byte {part:?} is not hex"))?;
        }
        if parts.next().is_some() {
            bail!("MAC address {s:?} has more than 6 bytes");
        }
        Ok(MacAddr(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_round_trip() {
        let mac: MacAddr = "c6:00:14:a3:A6:15\n".parse().unwrap();
        assert_eq!(mac.0, [0xc6, 0x00, 0x14, 0xa3, 0xa6, 0x15]);
        assert_eq!(mac.to_string(), "c6:00:14:a3:a6:15");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "00:11:22:33:44",
            "00:11:22:33:44:55:66",
            "0g:11:22:33:44:55",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn local_is_unicast_and_locally_administered() {
        let mac = MacAddr::local(0x1234_5678_9abc);
        assert_eq!(mac.0, [0x02, 0x34, 0x56, 0x78, 0x9a, 0xbc]);
        assert_eq!(mac.0[0] & 0x01, 0, "multicast bit set");
        assert_eq!(mac.0[0] & 0x02, 0x02, "not locally administered");
    }
}
