//! Test topology: two network namespaces joined by a veth pair, a private
//! bpffs mount for pins, and raw frame injection. Everything is named after
//! the test process's pid and a per-process counter, and removed in `Drop`
//! (which also runs when a test panics).

#![allow(dead_code)] // each test binary uses a different subset

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const A4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
pub const B4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
pub const A6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
pub const B6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
/// Routed via another interface in A: a source from there arriving on the
/// veth fails strict reverse path filtering.
pub const DUMMY4: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 5);
pub const DUMMY6: Ipv6Addr = Ipv6Addr::new(0xfd01, 0, 0, 0, 0, 0, 0, 5);
pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Fails loudly: these tests attach eBPF programs and create namespaces.
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "gazelle-bpf tests need root (BPF, netns, veth, bpffs): run them as root, \
         e.g. `sudo -E cargo test -p gazelle-bpf`"
    );
}

pub fn unique_tag() -> String {
    format!(
        "{}x{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{:?} failed: {}{}",
        args,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip -n <ns> <args>`, asserting success; returns stdout.
pub fn ip_n(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["ip", "-n", ns];
    all.extend_from_slice(args);
    run(&all)
}

/// Namespaces `a` (the guarded side, interface `if_a`) and `b` (the peer,
/// `if_b`), 10.200.0.0/24 and fd00::/64, plus another interface in `a` that routes
/// 10.201.0.0/24 and fd01::/64.
#[derive(Debug)]
pub struct Topo {
    pub a: String,
    pub b: String,
    pub if_a: String,
    pub if_b: String,
}

impl Topo {
    pub fn new() -> Self {
        require_root();
        let tag = unique_tag();
        let t = Topo {
            a: format!("gbpf-a-{tag}"),
            b: format!("gbpf-b-{tag}"),
            if_a: format!("ga{tag}"),
            if_b: format!("gb{tag}"),
        };
        assert!(t.if_a.len() < 16, "interface name too long: {}", t.if_a);
        run(&["ip", "netns", "add", &t.a]);
        // From here on Drop cleans up, even if a later step panics.
        run(&["ip", "netns", "add", &t.b]);
        let (mac_a, mac_b) = (fmt_mac(MAC_A), fmt_mac(MAC_B));
        #[rustfmt::skip]
        run(&["ip", "link", "add", &t.if_a, "netns", &t.a, "address", &mac_a, "type", "veth",
              "peer", "name", &t.if_b, "netns", &t.b, "address", &mac_b]);
        for (ns, ifn, v4, v6) in [(&t.a, &t.if_a, A4, A6), (&t.b, &t.if_b, B4, B6)] {
            ip_n(ns, &["addr", "add", &format!("{v4}/24"), "dev", ifn]);
            ip_n(
                ns,
                &["addr", "add", &format!("{v6}/64"), "dev", ifn, "nodad"],
            );
            ip_n(ns, &["link", "set", ifn, "up"]);
            ip_n(ns, &["link", "set", "lo", "up"]);
        }
        // No dummy driver on every kernel: a veth pair inside a does.
        ip_n(
            &t.a,
            &[
                "link", "add", "gother", "type", "veth", "peer", "name", "gother1",
            ],
        );
        ip_n(&t.a, &["addr", "add", "10.201.0.1/24", "dev", "gother"]);
        ip_n(
            &t.a,
            &["addr", "add", "fd01::1/64", "dev", "gother", "nodad"],
        );
        ip_n(&t.a, &["link", "set", "gother1", "up"]);
        ip_n(&t.a, &["link", "set", "gother", "up"]);
        t
    }

    /// Runs `f` on a thread inside namespace `ns` (sockets, netlink, if
    /// names and /proc/sys/net all follow the thread's namespace).
    pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                let fd = File::open(format!("/run/netns/{ns}")).expect("open netns");
                rustix::thread::move_into_link_name_space(
                    std::os::fd::AsFd::as_fd(&fd),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .expect("setns");
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    pub fn in_a<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        Self::in_ns(&self.a, f)
    }

    pub fn in_b<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        Self::in_ns(&self.b, f)
    }

    pub fn sysctl_a(&self, path: &str, value: &str) {
        self.in_a(|| std::fs::write(format!("/proc/sys/{path}"), value).expect("sysctl"));
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        // Deleting a namespace deletes the interfaces in it.
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A private bpffs mounted for one test, unmounted in Drop.
#[derive(Debug)]
pub struct BpfFs {
    pub dir: PathBuf,
}

impl BpfFs {
    pub fn new() -> Self {
        require_root();
        let dir = PathBuf::from(format!("/tmp/gazelle-bpf-test-{}", unique_tag()));
        let fs = BpfFs { dir };
        assert!(
            gazelle_bpf::ensure_bpffs(&fs.dir).expect("mount bpffs"),
            "fresh dir already bpffs?"
        );
        fs
    }

    pub fn pin(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("own")
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.dir, rustix::mount::UnmountFlags::DETACH);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An AF_PACKET socket bound to one interface, for injecting raw frames.
pub struct RawSender {
    fd: OwnedFd,
    ifindex: i32,
}

impl RawSender {
    /// Must be called inside the interface's namespace.
    pub fn new(ifname: &str) -> io::Result<Self> {
        let ifindex = rustix::net::netdevice::name_to_index(
            &rustix::net::socket(
                rustix::net::AddressFamily::INET,
                rustix::net::SocketType::DGRAM,
                None,
            )?,
            ifname,
        )? as i32;
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd, ifindex })
    }

    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: buffer and address pointers are valid for the lengths given.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn csum_add(mut sum: u32, data: &[u8]) -> u32 {
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from(c[0]) << 8
        };
        sum += u32::from(w);
    }
    sum
}

fn csum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// Ethernet(B -> A) / IPv4 / UDP frame with source address `src`.
pub fn udp4_frame(src: Ipv4Addr, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let u = udp(4444, dport, payload);
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&((20 + u.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = csum_fold(csum_add(0, &ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&MAC_B);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&u); // UDP checksum 0: none, allowed in IPv4
    f
}

/// Ethernet(B -> A) / IPv4 / ICMP port unreachable from `B4`, quoting a UDP
/// datagram that A sent from `quoted_sport` to B.
pub fn icmp4_unreach_frame(quoted_sport: u16) -> Vec<u8> {
    let mut quoted = udp4_frame(A4, B4, 9, b"quoted")[14..].to_vec();
    quoted[20..22].copy_from_slice(&quoted_sport.to_be_bytes());
    let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&quoted);
    let c = csum_fold(csum_add(0, &icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = udp4_frame(B4, A4, 0, &[]);
    f.truncate(14 + 20);
    f[14 + 9] = 1; // ICMP
    f[14 + 2..14 + 4].copy_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    f[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
    let c = csum_fold(csum_add(0, &f[14..34]));
    f[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&icmp);
    f
}

/// Ethernet(B -> A) / IPv6 / UDP frame with source address `src`.
pub fn udp6_frame(src: Ipv6Addr, dst: Ipv6Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = udp(4444, dport, payload);
    let mut sum = csum_add(0, &src.octets());
    sum = csum_add(sum, &dst.octets());
    sum = csum_add(sum, &(u.len() as u32).to_be_bytes());
    sum = csum_add(sum, &[0, 0, 0, 17]);
    sum = csum_add(sum, &u);
    let c = match csum_fold(sum) {
        0 => 0xffff,
        c => c,
    };
    u[6..8].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&MAC_B);
    f.extend_from_slice(&[0x86, 0xdd]);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(u.len() as u16).to_be_bytes());
    f.extend_from_slice(&[17, 64]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&u);
    f
}

/// The usual start of a test: a topology, a bpffs and an ownership map
/// pinned in it (`name` names the pin directory).
pub fn setup(name: &str) -> (Topo, BpfFs, gazelle_bpf::Ownership) {
    let topo = Topo::new();
    let fs = BpfFs::new();
    let own = gazelle_bpf::Ownership::create(&fs.pin(name)).expect("create ownership map");
    (topo, fs, own)
}
