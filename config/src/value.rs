//! Typed configuration values that gazelle writes as strings.
//!
//! Each type parses with [`FromStr`], prints with [`Display`] in a form that
//! parses back to the same value, and (de)serializes with serde as that
//! string. Construction checks everything the type promises, so code holding
//! a [`MacAddr`], [`CpuList`], [`Ipv6Cidr`] or [`PortMask`] never has to
//! re-check it.

use std::collections::BTreeSet;
use std::fmt::{self, Display};
use std::marker::PhantomData;
use std::net::Ipv6Addr;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::error::ValueError;

/// A unicast Ethernet MAC address, written `aa:bb:cc:dd:ee:ff` (either case).
///
/// Multicast (including broadcast) and all-zero addresses are refused: a NIC
/// port cannot own them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr([u8; 6]);

impl MacAddr {
    /// Checks that `octets` is a usable unicast address.
    pub fn new(octets: [u8; 6]) -> Result<Self, ValueError> {
        let refuse = |reason| ValueError::MacAddr {
            input: format_mac(&octets),
            reason,
        };
        if octets == [0; 6] {
            return Err(refuse("the all-zero address belongs to no port"));
        }
        if octets[0] & 1 == 1 {
            return Err(refuse(
                "it is a multicast address (the first octet is odd); a port needs a unicast one",
            ));
        }
        Ok(Self(octets))
    }

    /// The six octets, first one sent on the wire first.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }
}

fn format_mac(octets: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = octets;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

impl FromStr for MacAddr {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let malformed = || ValueError::MacAddr {
            input: s.to_owned(),
            reason: "expected six two-digit hex octets separated by ':', like aa:bb:cc:dd:ee:ff",
        };
        let mut octets = [0u8; 6];
        let mut parts = s.split(':');
        for octet in &mut octets {
            let part = parts.next().ok_or_else(malformed)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(malformed());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| malformed())?;
        }
        if parts.next().is_some() {
            return Err(malformed());
        }
        Self::new(octets).map_err(|e| match e {
            ValueError::MacAddr { reason, .. } => ValueError::MacAddr {
                input: s.to_owned(),
                reason,
            },
            other => other,
        })
    }
}

impl Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_mac(&self.0))
    }
}

/// A set of CPU numbers in gazelle's list format: comma-separated numbers and
/// inclusive ranges, such as `"2"`, `"0,1"`, `"2-5"` or `"0,2-3"`.
///
/// Kept sorted and without duplicates. It is never empty, holds at most
/// [`CpuList::MAX_CPUS`] CPUs, and every number is at most
/// [`CpuList::MAX_CPU_ID`] (glibc's `cpu_set_t` holds 1024 CPUs).
/// [`Display`] prints the shortest form, merging runs into ranges (`0-3,8`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CpuList(Vec<u16>);

impl CpuList {
    /// Most CPUs one list may name (gazelle's `CFG_MAX_CPUS`).
    pub const MAX_CPUS: usize = 32;
    /// Highest CPU number accepted.
    pub const MAX_CPU_ID: u16 = 1023;

    /// Builds a list from CPU numbers in any order, dropping duplicates.
    pub fn new(cpus: impl IntoIterator<Item = u16>) -> Result<Self, ValueError> {
        let set: BTreeSet<u16> = cpus.into_iter().collect();
        let input = || set.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        if set.is_empty() {
            return Err(ValueError::CpuList {
                input: String::new(),
                reason: "it is empty; name at least one CPU".into(),
            });
        }
        if let Some(&too_high) = set.iter().find(|&&cpu| cpu > Self::MAX_CPU_ID) {
            return Err(ValueError::CpuList {
                input: input(),
                reason: format!("CPU {too_high} is above {}", Self::MAX_CPU_ID),
            });
        }
        if set.len() > Self::MAX_CPUS {
            return Err(ValueError::CpuList {
                input: input(),
                reason: format!(
                    "it names {} CPUs; at most {} are allowed",
                    set.len(),
                    Self::MAX_CPUS
                ),
            });
        }
        Ok(Self(set.into_iter().collect()))
    }

    /// The CPU numbers, ascending.
    pub fn as_slice(&self) -> &[u16] {
        &self.0
    }

    /// How many CPUs the list names (at least one).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always `false`: an empty list cannot be built. Present for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `cpu` is in the list.
    pub fn contains(&self, cpu: u16) -> bool {
        self.0.binary_search(&cpu).is_ok()
    }

    /// The CPU numbers, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.0.iter().copied()
    }
}

impl FromStr for CpuList {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let refuse = |reason: String| ValueError::CpuList {
            input: s.to_owned(),
            reason,
        };
        let number = |text: &str| -> Result<u16, ValueError> {
            let text = text.trim();
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(refuse(format!("{text:?} is not a CPU number")));
            }
            match text.parse::<u16>() {
                Ok(cpu) if cpu <= Self::MAX_CPU_ID => Ok(cpu),
                _ => Err(refuse(format!("CPU {text} is above {}", Self::MAX_CPU_ID))),
            }
        };

        if s.trim().is_empty() {
            return Err(refuse("it is empty; name at least one CPU".into()));
        }
        let mut set = BTreeSet::new();
        for item in s.split(',') {
            let (first, last) = match item.split_once('-') {
                Some((lo, hi)) => (number(lo)?, number(hi)?),
                None => {
                    let cpu = number(item)?;
                    (cpu, cpu)
                }
            };
            if first > last {
                return Err(refuse(format!(
                    "the range {first}-{last} runs backwards; write {last}-{first}"
                )));
            }
            // Ranges are at most MAX_CPU_ID long, and we stop as soon as the
            // set is too big, so this loop stays short whatever the input.
            for cpu in first..=last {
                set.insert(cpu);
                if set.len() > Self::MAX_CPUS {
                    return Err(refuse(format!(
                        "it names more than {} CPUs",
                        Self::MAX_CPUS
                    )));
                }
            }
        }
        Self::new(set).map_err(|e| match e {
            ValueError::CpuList { reason, .. } => refuse(reason),
            other => other,
        })
    }
}

impl Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut cpus = self.0.iter().copied().peekable();
        let mut first_run = true;
        while let Some(start) = cpus.next() {
            let mut end = start;
            while let Some(&next) = cpus.peek() {
                if next != end + 1 {
                    break;
                }
                end = next;
                cpus.next();
            }
            if !first_run {
                f.write_str(",")?;
            }
            first_run = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

/// An IPv6 interface address with its prefix length, written `fd00::2/112`
/// or, with gazelle's implied /64, just `fd00::2`.
///
/// The prefix length is 1..=128. Unspecified (`::`), loopback (`::1`),
/// multicast (`ff00::/8`) and link-local (`fe80::/10`, which the stack derives
/// from the MAC address itself) addresses are refused. [`Display`] always
/// prints the prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Cidr {
    addr: Ipv6Addr,
    prefix_len: u8,
}

impl Ipv6Cidr {
    /// Prefix length used when the text gives none, as gazelle does.
    pub const DEFAULT_PREFIX_LEN: u8 = 64;

    /// Checks that `addr` is a usable interface address and `prefix_len` is
    /// in 1..=128.
    pub fn new(addr: Ipv6Addr, prefix_len: u8) -> Result<Self, ValueError> {
        let refuse = |reason: &str| ValueError::Ipv6Cidr {
            input: format!("{addr}/{prefix_len}"),
            reason: reason.to_owned(),
        };
        if !(1..=128).contains(&prefix_len) {
            return Err(refuse("the prefix length must be in 1..=128"));
        }
        if addr.is_unspecified() {
            return Err(refuse("the unspecified address :: cannot be assigned"));
        }
        if addr.is_loopback() {
            return Err(refuse(
                "the loopback address ::1 cannot be assigned to a NIC",
            ));
        }
        if addr.is_multicast() {
            return Err(refuse("it is a multicast address (ff00::/8)"));
        }
        if addr.segments()[0] & 0xffc0 == 0xfe80 {
            return Err(refuse(
                "it is link-local (fe80::/10); the stack derives that one from the MAC address",
            ));
        }
        Ok(Self { addr, prefix_len })
    }

    /// The interface address.
    pub fn addr(&self) -> Ipv6Addr {
        self.addr
    }

    /// The prefix length, 1..=128.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }
}

impl FromStr for Ipv6Cidr {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let refuse = |reason: String| ValueError::Ipv6Cidr {
            input: s.to_owned(),
            reason,
        };
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: Ipv6Addr = addr_text
            .parse()
            .map_err(|_| refuse(format!("{addr_text:?} is not IPv6 address syntax")))?;
        let prefix_len = match prefix_text {
            None => Self::DEFAULT_PREFIX_LEN,
            Some(text) => {
                if text.is_empty() || text.len() > 3 || !text.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(refuse(format!("prefix length {text:?} is not a number")));
                }
                text.parse()
                    .map_err(|_| refuse("the prefix length must be in 1..=128".into()))?
            }
        };
        Self::new(addr, prefix_len).map_err(|e| match e {
            ValueError::Ipv6Cidr { reason, .. } => refuse(reason),
            other => other,
        })
    }
}

impl Display for Ipv6Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// A set of DPDK port ids, written as gazelle's hex port mask: bit `n` set
/// means port `n`, so `"0x1"` is port 0 and `"0x6"` ports 1 and 2.
///
/// Never empty, and every port id is below [`PortMask::MAX_PORTS`].
/// [`Display`] prints the mask in lower-case hex with its `0x` prefix, the only
/// form gazelle reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortMask(u32);

impl PortMask {
    /// How many ports DPDK can address: `RTE_MAX_ETHPORTS` of the DPDK the
    /// appliance is built against (32, DPDK's default and Debian 12's
    /// 22.11 build). gazelle itself stops at 8 (masks up to `0xff`). ltran
    /// fails to compile against a DPDK whose `RTE_MAX_ETHPORTS` differs.
    pub const MAX_PORTS: u16 = 32;

    /// A mask of the given port ids, in any order, duplicates ignored.
    pub fn new(ports: impl IntoIterator<Item = u16>) -> Result<Self, ValueError> {
        let mut bits = 0u32;
        for port in ports {
            if port >= Self::MAX_PORTS {
                return Err(ValueError::PortMask {
                    input: port.to_string(),
                    reason: Self::too_high(),
                });
            }
            bits |= 1 << port;
        }
        Self::from_bits(bits)
    }

    /// A mask from its bits (bit `n` is port `n`); refused if no bit is set.
    pub fn from_bits(bits: u32) -> Result<Self, ValueError> {
        if bits == 0 {
            return Err(ValueError::PortMask {
                input: "0x0".into(),
                reason: "it names no port; set at least one bit".into(),
            });
        }
        Ok(Self(bits))
    }

    /// The mask's bits: bit `n` is port `n`.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// The port ids, ascending.
    pub fn ports(self) -> impl Iterator<Item = u16> {
        (0..Self::MAX_PORTS).filter(move |&port| self.contains(port))
    }

    /// Whether port `port` is in the mask.
    pub fn contains(self, port: u16) -> bool {
        port < Self::MAX_PORTS && self.0 & (1 << port) != 0
    }

    /// How many ports the mask names (at least one).
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Always `false`: an empty mask cannot be built. Present for API symmetry.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn too_high() -> String {
        format!(
            "DPDK has ports 0..={} only (RTE_MAX_ETHPORTS = {})",
            Self::MAX_PORTS - 1,
            Self::MAX_PORTS
        )
    }
}

// Every bit of the mask's integer is a port DPDK can address, and no more.
const _: () = assert!(PortMask::MAX_PORTS as u32 == u32::BITS);

impl FromStr for PortMask {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let refuse = |reason: String| ValueError::PortMask {
            input: s.to_owned(),
            reason,
        };
        // gazelle insists on the lower-case prefix; so do we, so that a file
        // we accept is one gazelle reads the same way.
        let digits = s
            .strip_prefix("0x")
            .ok_or_else(|| refuse("write it as 0x followed by hex digits".into()))?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(refuse("write it as 0x followed by hex digits".into()));
        }
        let significant = digits.trim_start_matches('0');
        if significant.len() > 8 {
            return Err(refuse(Self::too_high()));
        }
        let bits = u32::from_str_radix(
            if significant.is_empty() {
                "0"
            } else {
                significant
            },
            16,
        )
        .map_err(|_| refuse(Self::too_high()))?;
        Self::from_bits(bits).map_err(|e| match e {
            ValueError::PortMask { reason, .. } => refuse(reason),
            other => other,
        })
    }
}

impl Display for PortMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// Serde support shared by the typed values: serialize the `Display` form,
/// deserialize from a string through `FromStr`.
macro_rules! serde_as_string {
    ($ty:ty, $expecting:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_str(FromStrVisitor::<$ty>::new($expecting))
            }
        }
    };
}

serde_as_string!(
    MacAddr,
    "a MAC address string such as \"aa:bb:cc:dd:ee:ff\""
);
serde_as_string!(CpuList, "a CPU list string such as \"0,2-3\"");
serde_as_string!(Ipv6Cidr, "an IPv6 address string such as \"fd00::2/64\"");
serde_as_string!(PortMask, "a port mask string such as \"0x3\"");

struct FromStrVisitor<T> {
    expecting: &'static str,
    target: PhantomData<T>,
}

impl<T> FromStrVisitor<T> {
    fn new(expecting: &'static str) -> Self {
        Self {
            expecting,
            target: PhantomData,
        }
    }
}

impl<T: FromStr<Err = ValueError>> Visitor<'_> for FromStrVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        text.parse().map_err(E::custom)
    }
}

/// Proptest strategies for the typed values, shared with other modules' tests.
#[cfg(test)]
pub(crate) mod strategies {
    use std::net::Ipv6Addr;

    use proptest::prelude::*;

    use super::{CpuList, Ipv6Cidr, MacAddr, PortMask};

    pub(crate) fn any_mac() -> impl Strategy<Value = MacAddr> {
        any::<[u8; 6]>().prop_filter_map("unicast, non-zero", |o| MacAddr::new(o).ok())
    }

    pub(crate) fn any_cpu_list() -> impl Strategy<Value = CpuList> {
        prop::collection::btree_set(0..=CpuList::MAX_CPU_ID, 1..=CpuList::MAX_CPUS)
            .prop_map(|set| CpuList::new(set).unwrap())
    }

    pub(crate) fn any_port_mask() -> impl Strategy<Value = PortMask> {
        (1..=u32::MAX).prop_map(|bits| PortMask::from_bits(bits).unwrap())
    }

    pub(crate) fn any_ipv6_cidr() -> impl Strategy<Value = Ipv6Cidr> {
        (any::<u128>(), 1u8..=128).prop_filter_map("usable address", |(bits, len)| {
            Ipv6Cidr::new(Ipv6Addr::from(bits), len).ok()
        })
    }
}

/// CPU numbers in ascending order written as runs: `[0, 1, 2, 5]` is
/// `0-2,5` (the form `/sys/devices/system/cpu/online` uses). Any number of
/// CPUs, unlike a [`CpuList`].
pub fn cpu_ranges(cpus: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        while i + 1 < cpus.len() && cpus[i + 1] == cpus[i] + 1 {
            i += 1;
        }
        out.push(if cpus[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", cpus[i])
        });
        i += 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rstest::rstest;

    use super::strategies::*;
    use super::*;

    #[rstest]
    #[case("aa:bb:cc:dd:ee:ff", [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff])]
    #[case("AA:BB:CC:DD:EE:FE", [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xfe])]
    #[case("02:00:00:00:00:01", [2, 0, 0, 0, 0, 1])]
    fn mac_parses(#[case] text: &str, #[case] octets: [u8; 6]) {
        let mac: MacAddr = text.parse().unwrap();
        assert_eq!(mac.octets(), octets);
        assert_eq!(mac.to_string(), text.to_ascii_lowercase());
    }

    #[rstest]
    #[case("", "six two-digit")]
    #[case("aa:bb:cc:dd:ee", "six two-digit")]
    #[case("aa:bb:cc:dd:ee:ff:00", "six two-digit")]
    #[case("aa-bb-cc-dd-ee-ff", "six two-digit")]
    #[case("a:bb:cc:dd:ee:ff", "six two-digit")]
    #[case("+a:bb:cc:dd:ee:ff", "six two-digit")]
    #[case("gg:bb:cc:dd:ee:ff", "six two-digit")]
    #[case("aa:bb:cc:dd:ee:ff ", "six two-digit")]
    #[case("00:00:00:00:00:00", "all-zero")]
    #[case("01:00:5e:00:00:01", "multicast")]
    #[case("ff:ff:ff:ff:ff:ff", "multicast")]
    #[case("aé:bb:cc:dd:ee:ff", "six two-digit")]
    fn mac_refused(#[case] text: &str, #[case] why: &str) {
        let err = text.parse::<MacAddr>().unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
        assert!(matches!(err, ValueError::MacAddr { input, .. } if input == text));
    }

    #[rstest]
    #[case("2", &[2])]
    #[case("0,1", &[0, 1])]
    #[case("2-5", &[2, 3, 4, 5])]
    #[case("0,2-3", &[0, 2, 3])]
    #[case("3,1,2,1", &[1, 2, 3])]
    #[case(" 4 , 6 - 7 ", &[4, 6, 7])]
    #[case("0-31", &(0..32).collect::<Vec<u16>>())]
    #[case("0-31,0-31", &(0..32).collect::<Vec<u16>>())]
    #[case("1023", &[1023])]
    fn cpu_list_parses(#[case] text: &str, #[case] cpus: &[u16]) {
        let list: CpuList = text.parse().unwrap();
        assert_eq!(list.as_slice(), cpus);
        assert_eq!(list.len(), cpus.len());
        assert!(!list.is_empty());
        assert!(list.contains(cpus[0]));
    }

    #[rstest]
    #[case("", "empty")]
    #[case("  ", "empty")]
    #[case("1,", "not a CPU number")]
    #[case(",1", "not a CPU number")]
    #[case("1,,2", "not a CPU number")]
    #[case("a", "not a CPU number")]
    #[case("-1", "not a CPU number")]
    #[case("1-", "not a CPU number")]
    #[case("1-2-3", "not a CPU number")]
    #[case("+1", "not a CPU number")]
    #[case("5-2", "runs backwards")]
    #[case("1024", "above 1023")]
    #[case("99999999999", "above 1023")]
    #[case("0-32", "more than 32")]
    #[case("0-65535", "above 1023")]
    #[case("0-1023", "more than 32")]
    fn cpu_list_refused(#[case] text: &str, #[case] why: &str) {
        let err = text.parse::<CpuList>().unwrap_err();
        assert!(err.to_string().contains(why), "{text:?}: {err}");
    }

    #[test]
    fn cpu_list_displays_runs() {
        let list = CpuList::new([8, 0, 1, 2, 3, 5, 10, 11]).unwrap();
        assert_eq!(list.to_string(), "0-3,5,8,10-11");
        assert!(CpuList::new([]).is_err());
        assert!(CpuList::new(0..33).is_err());
        assert!(CpuList::new([2000]).is_err());
    }

    #[rstest]
    #[case("fd00::2", "fd00::2", 64)]
    #[case("fd00::2/112", "fd00::2", 112)]
    #[case("2001:db8::1/128", "2001:db8::1", 128)]
    #[case("2001:db8::1/1", "2001:db8::1", 1)]
    fn ipv6_parses(#[case] text: &str, #[case] addr: &str, #[case] prefix: u8) {
        let cidr: Ipv6Cidr = text.parse().unwrap();
        assert_eq!(cidr.addr(), addr.parse::<Ipv6Addr>().unwrap());
        assert_eq!(cidr.prefix_len(), prefix);
        assert_eq!(cidr.to_string(), format!("{addr}/{prefix}"));
    }

    #[rstest]
    #[case("", "syntax")]
    #[case("192.168.1.1", "syntax")]
    #[case("fd00::2/", "not a number")]
    #[case("fd00::2/0", "1..=128")]
    #[case("fd00::2/129", "1..=128")]
    #[case("fd00::2/99999", "not a number")]
    #[case("fd00::2/+64", "not a number")]
    #[case("fd00::2/64/1", "not a number")]
    #[case("::", "unspecified")]
    #[case("::1", "loopback")]
    #[case("ff02::1", "multicast")]
    #[case("fe80::1/64", "link-local")]
    #[case("febf::1", "link-local")]
    fn ipv6_refused(#[case] text: &str, #[case] why: &str) {
        let err = text.parse::<Ipv6Cidr>().unwrap_err();
        assert!(err.to_string().contains(why), "{text:?}: {err}");
    }

    #[rstest]
    #[case("0x1", &[0])]
    #[case("0x3", &[0, 1])]
    #[case("0x6", &[1, 2])]
    #[case("0xaa", &[1, 3, 5, 7])]
    #[case("0xAA", &[1, 3, 5, 7])]
    #[case("0x0001", &[0])]
    #[case("0x80000000", &[31])]
    #[case("0x000000080000000", &[31])]
    #[case("0xffffffff", &(0..32).collect::<Vec<u16>>())]
    fn port_mask_parses(#[case] text: &str, #[case] ports: &[u16]) {
        let mask: PortMask = text.parse().unwrap();
        assert_eq!(mask.ports().collect::<Vec<_>>(), ports);
        assert_eq!(mask.len(), ports.len());
        assert!(!mask.is_empty());
        assert!(mask.contains(ports[0]));
        assert!(!mask.contains(PortMask::MAX_PORTS));
        assert_eq!(PortMask::new(ports.iter().copied()).unwrap(), mask);
        assert_eq!(mask.to_string().parse::<PortMask>().unwrap(), mask);
    }

    #[rstest]
    #[case("", "0x followed by hex digits")]
    #[case("3", "0x followed by hex digits")]
    #[case("0X3", "0x followed by hex digits")]
    #[case("0x", "0x followed by hex digits")]
    #[case("0xg", "0x followed by hex digits")]
    #[case("0x-1", "0x followed by hex digits")]
    #[case("0x3 ", "0x followed by hex digits")]
    #[case("0x1,0x2", "0x followed by hex digits")]
    #[case("0x0", "names no port")]
    #[case("0x00", "names no port")]
    #[case("0x100000000", "ports 0..=31 only")]
    #[case("0xfffffffffffffffffffff", "ports 0..=31 only")]
    fn port_mask_refused(#[case] text: &str, #[case] why: &str) {
        let err = text.parse::<PortMask>().unwrap_err();
        assert!(err.to_string().contains(why), "{text:?}: {err}");
        assert!(matches!(err, ValueError::PortMask { input, .. } if input == text));
    }

    #[test]
    fn port_mask_from_ids() {
        let mask = PortMask::new([3, 0, 3]).unwrap();
        assert_eq!((mask.bits(), mask.to_string()), (0b1001, "0x9".to_owned()));
        assert!(PortMask::new([]).is_err());
        let err = PortMask::new([32]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not a port mask like \"0x3\": DPDK has ports 0..=31 only (RTE_MAX_ETHPORTS = 32)"
        );
    }

    #[test]
    fn serde_uses_strings() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Holder {
            mac: MacAddr,
            cpus: CpuList,
            ip6: Ipv6Cidr,
            ports: PortMask,
        }
        let text =
            "mac = \"AA:BB:CC:DD:EE:FE\"\ncpus = \"1,0\"\nip6 = \"fd00::2\"\nports = \"0x03\"\n";
        let holder: Holder = toml::from_str(text).unwrap();
        let out = toml::to_string(&holder).unwrap();
        assert_eq!(
            out,
            "mac = \"aa:bb:cc:dd:ee:fe\"\ncpus = \"0-1\"\nip6 = \"fd00::2/64\"\nports = \"0x3\"\n"
        );
        let err =
            toml::from_str::<Holder>("mac = 5\ncpus = \"1\"\nip6 = \"fd00::2\"\nports = \"0x1\"")
                .unwrap_err()
                .to_string();
        assert!(err.contains("a MAC address string"), "{err}");
    }

    proptest! {
        #[test]
        fn mac_round_trips(mac in any_mac()) {
            prop_assert_eq!(mac.to_string().parse::<MacAddr>().unwrap(), mac);
            prop_assert_eq!(mac.to_string().to_uppercase().parse::<MacAddr>().unwrap(), mac);
        }

        #[test]
        fn cpu_list_round_trips(list in any_cpu_list()) {
            prop_assert_eq!(list.to_string().parse::<CpuList>().unwrap(), list);
        }

        #[test]
        fn ipv6_cidr_round_trips(cidr in any_ipv6_cidr()) {
            prop_assert_eq!(cidr.to_string().parse::<Ipv6Cidr>().unwrap(), cidr);
        }

        #[test]
        fn port_mask_round_trips(mask in any_port_mask()) {
            prop_assert_eq!(mask.to_string().parse::<PortMask>().unwrap(), mask);
            prop_assert_eq!(PortMask::new(mask.ports()).unwrap(), mask);
        }

        #[test]
        fn parsers_never_panic(text in "\\PC{0,40}") {
            let _ = text.parse::<PortMask>();
            let _ = text.parse::<MacAddr>();
            let _ = text.parse::<CpuList>();
            let _ = text.parse::<Ipv6Cidr>();
        }
    }
}
