//! ltran's control socket against a real ltran (its bond port a
//! `net_null` that receives nothing): registrations of a subnet's network,
//! broadcast and anycast addresses are refused; the name shown is the
//! kernel's, not the one claimed; and a registration lease that sends a
//! line without end (64 MiB) or trickles one is closed, at no memory cost.
//!
//! The registering process is this test itself: ltran takes the pid from
//! the socket's credentials, so no DPDK secondary is needed for these.
//! Needs root and hugepages (reserved by the test).

mod common;

use std::{
    io::{BufReader, Read, Write},
    net::{Ipv4Addr, Ipv6Addr},
    os::unix::net::UnixStream,
    time::Duration,
};

use common::{Ltran, BOND_MAC, ONE_BOND};
use gazelle_ctl_proto::{client, Registration, Request, Response};
use netns_testbed::require_root;

fn ltran(name: &str) -> Ltran {
    require_root();
    Ltran::start(
        name,
        &["--vdev=net_null0,no-rx=1".to_owned()],
        &format!("{ONE_BOND}dispatch_subnet6 = \"fd00:99::/64\"\n"),
    )
}

fn registration(ipv4: &str, ipv6: Option<&str>) -> Registration {
    Registration {
        ipv4: ipv4.parse::<Ipv4Addr>().unwrap(),
        ipv6: ipv6.map(|a| a.parse::<Ipv6Addr>().unwrap()),
        mac: BOND_MAC.into(),
        threads: 1,
        process: "redis-server".into(),
    }
}

/// Registers this process; returns the lease and ltran's answer.
fn register(l: &Ltran, reg: Registration) -> (UnixStream, Response) {
    let conn = UnixStream::connect(&l.socket).unwrap();
    client::send(&conn, &Request::Register(reg)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let answer = client::receive(&mut reader)
        .unwrap()
        .expect("an answer to Register");
    (conn, answer)
}

fn refusal(l: &Ltran, reg: Registration) -> String {
    match register(l, reg).1 {
        Response::Error { message } => message,
        other => panic!("registration accepted: {other:?}"),
    }
}

#[test]
fn network_broadcast_and_anycast_addresses_cannot_be_registered() {
    let l = ltran("ltran-ctl-addrs");
    let m = refusal(&l, registration("10.99.0.0", None));
    assert!(
        m.contains("10.99.0.0 is the network address of ltran's dispatch subnet 10.99.0.0/24"),
        "{m}"
    );
    let m = refusal(&l, registration("10.99.0.255", None));
    assert!(m.contains("10.99.0.255 is the broadcast address"), "{m}");
    let m = refusal(&l, registration("10.99.0.7", Some("fd00:99::")));
    assert!(m.contains("subnet-router anycast address"), "{m}");
    assert!(l.stats().instances.is_empty());
    // A host address next to them is fine.
    let (_lease, answer) = register(&l, registration("10.99.0.254", Some("fd00:99::1")));
    assert!(matches!(answer, Response::Registered(_)), "{answer:?}");
}

#[test]
fn the_name_shown_is_the_kernels_not_the_claimed_one() {
    let l = ltran("ltran-ctl-comm");
    let (_lease, answer) = register(&l, registration("10.99.0.10", None));
    assert!(matches!(answer, Response::Registered(_)), "{answer:?}");
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
    let s = l.wait_stats("the instance listed", Duration::from_secs(10), |s| {
        s.instances.len() == 1
    });
    assert_eq!(s.instances[0].pid, std::process::id());
    assert_eq!(s.instances[0].process, comm.trim_end());
    assert_ne!(s.instances[0].process, "redis-server");
}

/// Waits until ltran lists this process as departed; returns the reason.
fn departed_reason(l: &Ltran) -> String {
    let me = std::process::id();
    let s = l.wait_stats(
        "the lease closed and the instance removed",
        Duration::from_secs(60),
        |s| s.departed.iter().any(|d| d.pid == me),
    );
    assert!(s.instances.is_empty(), "{s:#?}");
    s.departed
        .iter()
        .find(|d| d.pid == me)
        .map(|d| d.reason.clone())
        .unwrap()
}

/// Reads until ltran closes the lease (or a minute passes: then fails).
fn assert_closed(mut lease: &UnixStream) {
    lease
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match lease.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("ltran did not close the lease: {e}"),
        }
    }
}

#[test]
fn a_line_without_end_closes_the_lease_and_costs_no_memory() {
    let l = ltran("ltran-ctl-long");
    let (lease, answer) = register(&l, registration("10.99.0.11", None));
    assert!(matches!(answer, Response::Registered(_)), "{answer:?}");
    let before = l.rss_kib();
    // 64 MiB without a newline, as long as ltran reads.
    let writer = {
        let lease = lease.try_clone().unwrap();
        std::thread::spawn(move || {
            let chunk = vec![b'x'; 1 << 20];
            let mut sent = 0usize;
            while sent < 64 << 20 {
                if (&lease).write_all(&chunk).is_err() {
                    break;
                }
                sent += chunk.len();
            }
            sent
        })
    };
    let reason = departed_reason(&l);
    assert_eq!(
        reason, "sent a line longer than 65536 bytes on its registration",
        "{reason}"
    );
    let grown = l.rss_kib().saturating_sub(before);
    assert_closed(&lease);
    let sent = writer.join().unwrap();
    assert!(
        grown < 16 << 10,
        "ltran grew by {grown} KiB while {sent} bytes came in"
    );
    assert!(
        l.child.stderr_so_far().contains("closing the registration"),
        "the reason is not logged"
    );
}

#[test]
fn a_trickled_line_closes_the_lease() {
    let l = ltran("ltran-ctl-trickle");
    let (lease, answer) = register(&l, registration("10.99.0.12", None));
    assert!(matches!(answer, Response::Registered(_)), "{answer:?}");
    let trickler = {
        let lease = lease.try_clone().unwrap();
        std::thread::spawn(move || {
            // A byte every 200 ms, never a newline, for at most a minute.
            for _ in 0..300 {
                if (&lease).write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let reason = departed_reason(&l);
    assert_eq!(
        reason, "left a line unfinished for 5 s on its registration",
        "{reason}"
    );
    assert_closed(&lease);
    trickler.join().unwrap();
}

/// Connections that say nothing hold at most 16 request slots: the next
/// one is told ltran is busy, a registration's lease does not count, and
/// the slots come back as the silent ones are cut off.
#[test]
fn silent_connections_cannot_take_every_request_slot() {
    let l = ltran("ltran-ctl-busy");
    let (_lease, answer) = register(&l, registration("10.99.0.13", None));
    assert!(matches!(answer, Response::Registered(_)), "{answer:?}");
    let silent: Vec<UnixStream> = (0..16)
        .map(|_| UnixStream::connect(&l.socket).unwrap())
        .collect();
    // ltran accepts in order: these 16 before the 17th below.
    let err =
        client::request(&l.socket, "ltran", Request::Ping, Duration::from_secs(10)).unwrap_err();
    assert!(err.to_string().contains("ltran is busy"), "{err}");
    drop(silent);
    let answered = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        client::request(&l.socket, "ltran", Request::Ping, Duration::from_secs(10)).is_ok()
    });
    assert!(answered, "the slots never came back");
}
