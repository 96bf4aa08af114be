//! The topology against the real kernel: addresses, offloads, running programs in the
//! peer, and that nothing outlives a topology. Needs root.

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netns_testbed::{cleanup_stale, require_root, ChildGuard, Topology, TopologyOptions};

fn topology(hint: &str) -> Topology {
    require_root();
    Topology::new(TopologyOptions {
        name_hint: hint.into(),
        ..TopologyOptions::default()
    })
    .expect("creating topology")
}

fn stdout_of(topo: &Topology, args: &[&str]) -> String {
    String::from_utf8(topo.run(args).unwrap().stdout).unwrap()
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Until `ip netns exec` has entered the namespace and exec'd, a child is not in it.
fn wait_until_in_netns(topo: &Topology, pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = topo.pids().unwrap();
        if pids.contains(&pid) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{pid} not in {}: {pids:?}",
            topo.ns
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn addresses_are_where_the_docs_say() {
    let topo = topology("addr");
    assert!(topo.host_if.len() <= 15 && topo.peer_if.len() <= 15);

    // host_if belongs to DPDK: no address of either family.
    let host_addrs = Command::new("ip")
        .args(["-o", "addr", "show", "dev", &topo.host_if])
        .output()
        .unwrap();
    assert!(host_addrs.status.success());
    assert_eq!(String::from_utf8_lossy(&host_addrs.stdout), "");

    let peer = stdout_of(&topo, &["ip", "-o", "addr", "show", "dev", &topo.peer_if]);
    assert!(peer.contains("inet 10.88.0.1/24"), "{peer}");
    assert!(peer.contains("inet6 fd00:88::1/64"), "{peer}");
    assert!(!peer.contains("tentative"), "{peer}");
    let remote = stdout_of(&topo, &["ip", "-o", "addr", "show", "dev", &topo.remote_if]);
    assert!(remote.contains("inet 10.89.0.1/24"), "{remote}");
    assert!(remote.contains("inet6 fd00:89::1/64"), "{remote}");
    assert_eq!(topo.stack_ip4.to_string(), "10.88.0.2");
    assert_eq!(topo.stack_ip6.to_string(), "fd00:88::2");

    let forward = stdout_of(&topo, &["sysctl", "-n", "net.ipv4.ip_forward"]);
    assert_eq!(forward.trim(), "1");
    // No static neighbour unless asked for.
    let neigh = stdout_of(&topo, &["ip", "neigh", "show", "dev", &topo.peer_if]);
    assert!(!neigh.contains("PERMANENT"), "{neigh}");

    assert_eq!(topo.host_mac().unwrap(), topo.stack_mac);
    let peer_mac = topo.peer_mac().unwrap();
    assert_ne!(peer_mac, topo.stack_mac);
    let sys = stdout_of(
        &topo,
        &["cat", &format!("/sys/class/net/{}/address", topo.peer_if)],
    );
    assert_eq!(sys.trim(), peer_mac.to_string());
}

#[test]
fn links_are_up_with_mtu_1500_and_offloads_off() {
    let topo = topology("offl");
    let sys = |attr: &str| {
        fs::read_to_string(format!("/sys/class/net/{}/{attr}", topo.host_if))
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(sys("mtu"), "1500");
    assert_eq!(sys("operstate"), "up");
    let peer_link = stdout_of(&topo, &["ip", "-o", "link", "show", "dev", &topo.peer_if]);
    assert!(peer_link.contains("mtu 1500"), "{peer_link}");
    assert!(peer_link.contains("state UP"), "{peer_link}");

    let peer = stdout_of(&topo, &["ethtool", "-k", &topo.peer_if]);
    let host = String::from_utf8(
        Command::new("ethtool")
            .args(["-k", &topo.host_if])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for feature in [
        "tx-checksumming: off",
        "tcp-segmentation-offload: off",
        "generic-segmentation-offload: off",
        "generic-receive-offload: off",
    ] {
        assert!(peer.contains(feature), "peer lacks {feature:?}:\n{peer}");
        assert!(host.contains(feature), "host lacks {feature:?}:\n{host}");
    }
    assert!(host.contains("rx-checksumming: off"), "{host}");
    assert!(host.contains("large-receive-offload: off"), "{host}");
}

#[test]
fn static_neighbour_option_adds_permanent_entries() {
    require_root();
    let topo = Topology::new(TopologyOptions {
        name_hint: "neigh".into(),
        static_neighbour: true,
        ..TopologyOptions::default()
    })
    .unwrap();
    let neigh = stdout_of(&topo, &["ip", "neigh", "show", "dev", &topo.peer_if]);
    let mac = topo.stack_mac.to_string();
    assert!(
        neigh.contains(&format!("10.88.0.2 lladdr {mac} PERMANENT")),
        "{neigh}"
    );
    assert!(
        neigh.contains(&format!("fd00:88::2 lladdr {mac} PERMANENT")),
        "{neigh}"
    );
}

#[test]
fn run_failures_carry_command_and_output() {
    let topo = topology("run");
    let err = topo
        .run(["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 4"])
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&format!("ip netns exec {} sh -c", topo.ns)),
        "{msg}"
    );
    assert!(msg.contains("exit status: 4"), "{msg}");
    assert!(
        msg.contains("to-stdout") && msg.contains("to-stderr"),
        "{msg}"
    );
}

#[test]
fn kernel_listener_in_peer_is_seen_and_absent_one_times_out() {
    let topo = topology("tcp");
    let remote = topo.remote_ip4;
    let listener = topo
        .in_netns(move || TcpListener::bind((remote, 0)))
        .unwrap()
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    topo.wait_tcp_listening(port, Duration::from_secs(5))
        .unwrap();
    // The socket really is in the peer: the peer's kernel connects to it.
    topo.run(["bash", "-c", &format!("exec 3<>/dev/tcp/{remote}/{port}")])
        .unwrap();
    // And not in the root namespace.
    assert!(std::net::TcpStream::connect((remote, port)).is_err());

    drop(listener);
    let started = Instant::now();
    let err = topo
        .wait_tcp_listening(port, Duration::from_millis(300))
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        format!("{err:#}").contains(&format!("nothing listened on TCP port {port}")),
        "{err:#}"
    );
}

#[test]
fn wait_connectable_sees_a_server_and_reports_one_that_died() {
    let topo = topology("conn");
    let remote = topo.remote_ip4;
    let listener = topo
        .in_netns(move || TcpListener::bind((remote, 0)))
        .unwrap()
        .unwrap();
    let to = listener.local_addr().unwrap();
    let mut server = ChildGuard::spawn(topo.cmd("sleep").arg("1000")).unwrap();
    topo.wait_connectable(to, &mut server, Duration::from_secs(10))
        .unwrap();

    // Nothing listens any more and the "server" exits with its last words.
    drop(listener);
    let mut dead = ChildGuard::spawn(
        topo.cmd("sh")
            .args(["-c", "echo bind failed >&2; exit 3"])
            .stderr(Stdio::piped()),
    )
    .unwrap();
    let err = topo
        .wait_connectable(to, &mut dead, Duration::from_secs(60))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("exited") && err.contains("bind failed"),
        "{err}"
    );
}

#[test]
fn spawned_children_run_in_the_peer_and_die_with_their_guard() {
    let topo = topology("spawn");
    let guard = topo.spawn(topo.cmd("sleep").arg("1000")).unwrap();
    let pid = guard.id();
    wait_until_in_netns(&topo, pid);
    drop(guard);
    assert!(!Path::new(&format!("/proc/{pid}")).exists());

    // A command not made by Topology::cmd would run in the root namespace: refused.
    let err = topo.spawn(Command::new("sleep").arg("1000")).unwrap_err();
    assert!(
        format!("{err:#}").contains("not built with Topology::cmd"),
        "{err:#}"
    );
}

#[test]
fn drop_removes_namespace_veths_and_processes() {
    require_root();
    let topo = Topology::new(TopologyOptions {
        name_hint: "drop".into(),
        extra_links: 2,
        ..TopologyOptions::default()
    })
    .unwrap();
    assert_eq!(topo.extra_links.len(), 2);
    let ns = topo.ns.clone();
    let mut hosts = vec![topo.host_if.clone()];
    hosts.extend(topo.extra_links.iter().map(|l| l.host_if.clone()));
    for link in &topo.extra_links {
        assert!(link_exists(&link.host_if));
        let peer = stdout_of(&topo, &["ip", "-o", "addr", "show", "dev", &link.peer_if]);
        assert!(!peer.contains("inet "), "extra link has an address: {peer}");
    }
    assert!(netns_exists(&ns));
    // A process nobody guards: the topology must kill it.
    let mut orphan = topo.cmd("sleep").arg("1000").spawn().unwrap();
    wait_until_in_netns(&topo, orphan.id());

    drop(topo);

    assert!(!netns_exists(&ns), "namespace {ns} survived");
    let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(&ns));
    for host in &hosts {
        assert!(!link_exists(host), "veth {host} survived");
    }
    let status = orphan.wait().unwrap();
    assert!(!status.success(), "orphan was not killed: {status}");
}

#[test]
fn teardown_reports_success() {
    let topo = topology("tear");
    let (ns, host) = (topo.ns.clone(), topo.host_if.clone());
    topo.teardown().unwrap();
    assert!(!netns_exists(&ns) && !link_exists(&host));
}

#[test]
fn parallel_topologies_do_not_collide() {
    require_root();
    let build = || {
        Topology::new(TopologyOptions {
            name_hint: "par".into(),
            ..TopologyOptions::default()
        })
        .unwrap()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(build);
        let b = s.spawn(build);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a.ns, b.ns);
    assert_ne!(a.host_if, b.host_if);
    assert_ne!(a.stack_mac, b.stack_mac);
    // Host ends get random interface indexes, far from the kernel's sequential ones, so
    // that DPDK af_packet processes on them land in different fanout groups
    // ((pid ^ ifindex) & 0xffff): sequential pids and indexes collided in CI.
    let ifindex = |name: &str| -> u32 {
        fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    for topo in [&a, &b] {
        let index = ifindex(&topo.host_if);
        assert!(index >= 100_000, "{} has ifindex {index}", topo.host_if);
    }
    // One process's links never share the low 16 bits (its pid is the same for all),
    // and those bits are not a count: two DPDK children started one after the other
    // (pids p, p + 1) on the two links must not land in one fanout group, which
    // needs (ia ^ ib) & 0xffff to differ from p ^ (p + 1), a small number.
    let (ia, ib) = (ifindex(&a.host_if), ifindex(&b.host_if));
    assert_ne!(ia & 0xffff, ib & 0xffff, "ifindexes {ia} and {ib}");
    let more: Vec<u32> = (0..6)
        .map(|_| {
            let t = build();
            ifindex(&t.host_if) & 0xffff
        })
        .collect();
    let small_xors = more.windows(2).filter(|w| (w[0] ^ w[1]) < 16).count();
    assert!(
        small_xors < 3,
        "low bits of successive links look like a count: {more:?}"
    );
    // Same addresses, different namespaces.
    for topo in [&a, &b] {
        topo.run(["ping", "-c", "1", "-W", "2", &topo.remote_ip4.to_string()])
            .unwrap();
    }
}

#[test]
fn cleanup_stale_removes_only_leftovers_of_dead_processes() {
    require_root();
    // A pid that certainly existed and is now gone.
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let me = std::process::id();

    let stale_ns = format!("stale-{dead}-0");
    let live_ns = format!("stale-{me}-99999");
    let (stale_host, stale_peer) = (format!("st{dead:x}x0h0"), format!("st{dead:x}x0p0"));
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    };
    ip(&["netns", "add", &stale_ns]);
    ip(&["netns", "add", &live_ns]);
    ip(&[
        "link",
        "add",
        &stale_host,
        "type",
        "veth",
        "peer",
        "name",
        &stale_peer,
    ]);

    let removed = cleanup_stale("stale").unwrap();

    let live_survived = netns_exists(&live_ns);
    ip(&["netns", "del", &live_ns]);
    assert!(live_survived, "namespace of a live process was removed");
    assert!(!netns_exists(&stale_ns), "{stale_ns} survived");
    assert!(!link_exists(&stale_host) && !link_exists(&stale_peer));
    assert!(removed >= 2, "removed {removed}");
}

#[test]
fn failed_construction_leaves_nothing_behind() {
    require_root();
    // Namespace and veth exist by the time the bad prefix is rejected.
    let err = Topology::new(TopologyOptions {
        name_hint: "fail".into(),
        prefix4: 33,
        ..TopologyOptions::default()
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("/33"), "{err:#}");

    let pid = std::process::id();
    let ns_prefix = format!("fail-{pid}-");
    let leftover_ns: Vec<_> = fs::read_dir("/run/netns")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&ns_prefix))
        .collect();
    assert!(leftover_ns.is_empty(), "{leftover_ns:?}");
    let link_prefix = format!("fa{pid:x}x");
    let leftover_links: Vec<_> = fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&link_prefix))
        .collect();
    assert!(leftover_links.is_empty(), "{leftover_links:?}");
}

#[test]
fn kernel_twin_mirrors_the_stack_side_in_its_own_namespaces() {
    require_root();
    let topo = Topology::new(TopologyOptions {
        name_hint: "twin".into(),
        kernel_twin: true,
        ..TopologyOptions::default()
    })
    .unwrap();
    let twin = topo.kernel_twin.clone().expect("kernel twin asked for");
    assert_eq!(twin.app_ns, format!("{}-tapp", topo.ns));
    assert_eq!(twin.peer_ns, format!("{}-tpeer", topo.ns));
    assert!(netns_exists(&twin.app_ns) && netns_exists(&twin.peer_ns));
    let out = |o: std::process::Output| String::from_utf8(o.stdout).unwrap();

    // The app end carries the stack's addresses and MAC, with the peer as gateway.
    let app = out(twin
        .run_app(["ip", "-o", "addr", "show", "dev", &twin.app_if])
        .unwrap());
    assert!(app.contains("inet 10.88.0.2/24"), "{app}");
    assert!(app.contains("inet6 fd00:88::2/64"), "{app}");
    let link = out(twin
        .run_app(["ip", "-o", "link", "show", "dev", &twin.app_if])
        .unwrap());
    assert!(link.contains(&topo.stack_mac.to_string()), "{link}");
    let routes = out(twin.run_app(["ip", "route"]).unwrap());
    assert!(routes.contains("default via 10.88.0.1"), "{routes}");
    let routes6 = out(twin.run_app(["ip", "-6", "route"]).unwrap());
    assert!(routes6.contains("default via fd00:88::1"), "{routes6}");

    // The twin peer looks like the main peer.
    let peer = out(twin
        .run_peer(["ip", "-o", "addr", "show", "dev", &twin.peer_if])
        .unwrap());
    assert!(peer.contains("inet 10.88.0.1/24"), "{peer}");
    assert!(peer.contains("inet6 fd00:88::1/64"), "{peer}");
    let remote = out(twin
        .run_peer(["ip", "-o", "addr", "show", "dev", &topo.remote_if])
        .unwrap());
    assert!(remote.contains("inet 10.89.0.1/24"), "{remote}");

    // Kernel to kernel across the twin: on-link both families, and the remote subnet
    // through the gateway.
    for args in [
        vec!["ping", "-c", "1", "-W", "2", "10.88.0.1"],
        vec!["ping", "-6", "-c", "1", "-W", "2", "fd00:88::1"],
        vec!["ping", "-c", "1", "-W", "2", "10.89.0.1"],
    ] {
        twin.run_app(&args).unwrap();
    }
    twin.run_peer(["ping", "-c", "1", "-W", "2", "10.88.0.2"])
        .unwrap();

    // Nothing of it in the root namespace: no address, and no twin interface.
    let root = String::from_utf8(
        Command::new("ip")
            .args(["-o", "addr", "show"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(!root.contains("10.88.0.2/"), "{root}");
    assert!(!root.contains("fd00:88::2/"), "{root}");
    // The main peer cannot reach the twin's app (the stack's address is nobody's yet).
    assert!(topo
        .run(["ping", "-c", "1", "-W", "1", "10.88.0.2"])
        .is_err());

    let (app_ns, peer_ns) = (twin.app_ns.clone(), twin.peer_ns.clone());
    let mut orphan = twin.app_cmd("sleep").arg("1000").spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "pids", &app_ns])
            .output()
            .unwrap()
            .stdout,
    )
    .split_whitespace()
    .any(|p| p == orphan.id().to_string())
    {
        assert!(Instant::now() < deadline, "sleep never entered {app_ns}");
        std::thread::sleep(Duration::from_millis(20));
    }
    topo.teardown().unwrap();
    assert!(!netns_exists(&app_ns) && !netns_exists(&peer_ns));
    assert!(!orphan.wait().unwrap().success());
}

/// Run by [`a_topology_that_is_never_dropped_is_removed_at_exit`] in a
/// child process: builds a topology, never drops it (as a `static` shared
/// by a test file's tests is never dropped), prints its names and returns.
#[test]
fn leak_a_topology_when_asked() {
    if std::env::var_os("TESTBED_LEAK_TOPOLOGY").is_none() {
        return;
    }
    let topo = topology("leak");
    println!("LEAKED {} {}", topo.ns, topo.host_if);
    std::mem::forget(topo);
}

#[test]
fn a_topology_that_is_never_dropped_is_removed_at_exit() {
    require_root();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "leak_a_topology_when_asked", "--nocapture"])
        .env("TESTBED_LEAK_TOPOLOGY", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("LEAKED "))
        .unwrap_or_else(|| panic!("the child printed no names: {stdout}"));
    let (ns, link) = line.split_once(' ').unwrap();
    assert!(
        !netns_exists(ns),
        "namespace {ns} of an exited process is still there"
    );
    assert!(
        !link_exists(link),
        "veth {link} of an exited process is still there"
    );
}
