//! Starting ltran from its config: EAL, pools, bond ports, the exception
//! interface, the control socket, then the dispatcher on this thread.

use std::{
    path::PathBuf,
    sync::{atomic::AtomicBool, mpsc, Arc, Mutex},
    time::Duration,
};

use anyhow::{anyhow, bail, Context};
use dpdk::{Eal, Mempool, Port, PortConfig};
use gazelle_config::{LtranConfig, PortMask};

use crate::{
    control::{self, Control},
    forward::{BondMember, Dispatcher, Kni},
};

// bond_ports masks are validated against PortMask::MAX_PORTS before DPDK
// runs; they must mean the same port ids as the DPDK this is linked to.
const _: () = assert!(
    dpdk::MAX_ETHPORTS == PortMask::MAX_PORTS,
    "RTE_MAX_ETHPORTS of this DPDK differs from gazelle-config's PortMask::MAX_PORTS"
);

/// Name of the exception (tap) device ltran adds with `kni_switch = 1`.
pub const KNI_VDEV: &str = "net_tap_kni";
/// Connection table capacity.
pub const CONN_CAPACITY: usize = 1 << 17;

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the control socket goes (`gazelle_ctl_proto::paths::run_dir`).
    pub run_dir: PathBuf,
    /// Spin when idle instead of napping (for benchmarks).
    pub busy_poll: bool,
    /// The kernel name of the exception interface.
    pub kni_name: String,
}

/// The EAL arguments for `config`: `forward_kit_args`, a file prefix if
/// none is given (secondaries must use the same), and the tap device of
/// the exception path with `kni_switch`. Returns them and the prefix.
pub fn eal_args(config: &LtranConfig, kni_name: &str) -> (Vec<String>, String) {
    let mut args = vec!["ltran".to_owned()];
    args.extend(config.forward_kit_args.iter().cloned());
    let mut prefix = None;
    for (i, a) in args.iter().enumerate() {
        if let Some(p) = a.strip_prefix("--file-prefix=") {
            prefix = Some(p.to_owned());
        } else if a == "--file-prefix" {
            prefix = args.get(i + 1).cloned();
        }
    }
    let prefix = match prefix {
        Some(p) => p,
        None => {
            let p = format!("{}ltran", config.unix_prefix);
            args.push(format!("--file-prefix={p}"));
            p
        }
    };
    if config.kni_switch {
        args.push(format!("--vdev={KNI_VDEV},iface={kni_name}"));
    }
    (args, prefix)
}

pub use dpdk::bond::vdev_iface;

/// Everything a start checks before it touches DPDK: the config's own
/// validation, the rules ltran adds (one bond, no `--huge-unlink`) and the
/// CPUs `forward_kit_args` pins the EAL to. `ltran --check` runs exactly
/// this, so what it accepts a start accepts too, up to what only DPDK can
/// tell (ports that exist, memory).
pub fn check(config: &LtranConfig) -> anyhow::Result<()> {
    config.validate()?;
    if config.bond_ports.len() != 1 || config.bond_macs.len() != 1 {
        bail!(
            "bond_ports/bond_macs: ltran runs one bond, the config lists {} port masks and {} MACs",
            config.bond_ports.len(),
            config.bond_macs.len()
        );
    }
    if config
        .forward_kit_args
        .iter()
        .any(|a| a.starts_with("--huge-unlink"))
    {
        bail!("forward_kit_args: --huge-unlink keeps lstack secondaries from attaching to ltran's memory; remove it");
    }
    let allowed = affinity().context("reading the CPUs this process may run on")?;
    check_eal_cpus(&config.forward_kit_args, &allowed)?;
    Ok(())
}

/// The CPUs this process may run on (its affinity mask).
fn affinity() -> nix::Result<Vec<usize>> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))?;
    Ok((0..nix::sched::CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect())
}

/// Checks that the CPUs the EAL core options in `args` name (`-l LIST`,
/// `-c MASK`, `--lcores MAP`) are among `allowed`. The
/// EAL would otherwise refuse them only with its usage text, or pin a
/// thread to a CPU the process may not use.
fn check_eal_cpus(args: &[String], allowed: &[usize]) -> anyhow::Result<()> {
    type Reader = fn(&str) -> Option<Vec<usize>>;
    // (short form, long form, how to read the value)
    const OPTIONS: [(Option<&str>, Option<&str>, Reader); 3] = [
        (Some("-l"), None, cpu_list),
        (Some("-c"), None, cpu_mask),
        (None, Some("--lcores"), lcores_cpus),
    ];
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        for (short, long, read) in OPTIONS {
            let value = if Some(a) == short || Some(a) == long {
                i += 1;
                args.get(i).map_or("", String::as_str)
            } else if let Some(v) = long.and_then(|l| a.strip_prefix(l)?.strip_prefix('=')) {
                v
            } else if let Some(v) = short.and_then(|s| a.strip_prefix(s)) {
                v
            } else {
                continue;
            };
            let opt = short.or(long).unwrap_or_default();
            let cpus = read(value).ok_or_else(|| {
                anyhow!("forward_kit_args: {opt} {value:?} is not a CPU list the EAL reads")
            })?;
            if let Some(bad) = cpus.iter().find(|c| !allowed.contains(c)) {
                bail!(
                    "forward_kit_args: {opt} {value} names CPU {bad}, but ltran may only run on CPUs {} (the CPUs in this process's affinity mask)",
                    gazelle_config::value::cpu_ranges(allowed)
                );
            }
            break;
        }
        i += 1;
    }
    Ok(())
}

/// `0,2-3` -> [0, 2, 3]; `None` when unreadable.
fn cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if a > b || b - a > 4096 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

/// A hex core mask (`0x3` or `3`) -> its CPUs.
fn cpu_mask(text: &str) -> Option<Vec<usize>> {
    let hex = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    if hex.is_empty() {
        return None;
    }
    let mut cpus = Vec::new();
    for (nibble, c) in hex.chars().rev().enumerate() {
        let v = c.to_digit(16)? as usize;
        cpus.extend((0..4).filter(|b| v & (1 << b) != 0).map(|b| nibble * 4 + b));
    }
    Some(cpus)
}

/// The CPUs of an EAL `--lcores` map: `1,2@3,(4-5)@(6,7)` runs lcore 1 on
/// CPU 1, lcore 2 on CPU 3 and lcores 4-5 on CPUs 6-7.
fn lcores_cpus(text: &str) -> Option<Vec<usize>> {
    // Split at the commas outside parentheses.
    let mut groups = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                groups.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if depth < 0 {
            return None;
        }
    }
    groups.push(&text[start..]);
    let mut cpus = Vec::new();
    for g in groups {
        let cpu_part = g.rsplit_once('@').map_or(g, |(_, c)| c);
        let inner = cpu_part.trim_start_matches('(').trim_end_matches(')');
        cpus.extend(cpu_list(inner)?);
    }
    Some(cpus)
}

/// Runs ltran until `quit` is set (SIGTERM, `gazellectl ltran quit`).
///
/// A start that fails after the EAL came up puts back what the EAL took:
/// every DPDK object is dropped, `rte_eal_cleanup` runs and the prefix's
/// runtime directory and hugepage files are removed, so a failed start
/// leaves nothing of its `--file-prefix` behind.
pub fn run(config: LtranConfig, opts: &Options, quit: Arc<AtomicBool>) -> anyhow::Result<()> {
    check(&config)?;
    let (args, prefix) = eal_args(&config, &opts.kni_name);
    // Nothing is cleaned up when the EAL itself fails: the prefix may be a
    // live primary's (that is one way to fail), and then its files are not
    // ours to remove.
    let eal = Eal::init(&args).context("starting the DPDK EAL (forward_kit_args)")?;
    let served = serve(eal, config, opts, quit, &args, &prefix);
    if served.is_err() {
        // Every DPDK object of the start is dropped by now.
        dpdk::cleanup::after_failed_start(&args, &prefix);
    }
    served
}

/// The part of [`run`] after the EAL is up: pools, ports, the exception
/// interface, the control socket, then the dispatcher until `quit`. An
/// error returns only after everything it made is dropped.
fn serve(
    eal: Eal,
    config: LtranConfig,
    opts: &Options,
    quit: Arc<AtomicBool>,
    args: &[String],
    prefix: &str,
) -> anyhow::Result<()> {
    dpdk::owner::enable(&eal, 0)?;
    let mac = config.bond_macs[0].octets();

    // Both pools are shared with every lstack, which allocates and frees
    // from its own threads, possibly on ltran's core: RTS rings keep a
    // preempted process from stalling the others (see OPS_RTS).
    let rx_pool = Arc::new(
        Mempool::create_with_ops(
            &eal,
            "ltran_rx",
            config.rx_mbuf_pool_size,
            0,
            dpdk::mempool::DEFAULT_DATA_ROOM,
            -1,
            Some(dpdk::mempool::OPS_RTS),
        )
        .context("rx_mbuf_pool_size: creating the receive pool")?,
    );
    let tx_pool = Arc::new(
        Mempool::create_with_ops(
            &eal,
            "ltran_tx",
            config.tx_mbuf_pool_size,
            0,
            dpdk::mempool::DEFAULT_DATA_ROOM,
            -1,
            Some(dpdk::mempool::OPS_RTS),
        )
        .context("tx_mbuf_pool_size: creating the transmit pool")?,
    );

    let count = Port::count(&eal);
    let port_config = PortConfig {
        rx_queues: 1,
        tx_queues: 1,
        rx_desc: 1024,
        tx_desc: 1024,
        promiscuous: true,
        checksum_offload: false,
        rx_interrupts: false,
        vlan_offload: false,
    };
    let mut members = Vec::new();
    for id in config.bond_ports[0].ports() {
        if id >= count {
            bail!("bond_ports: port {id} does not exist (DPDK found {count} port(s): check forward_kit_args)");
        }
        let mut port = Port::open(&eal, id, &port_config, Arc::clone(&rx_pool))
            .with_context(|| format!("bond_ports: opening port {id}"))?;
        // The range check of the config keeps it within u16.
        let mtu = u16::try_from(config.bond_mtu).unwrap_or(1500);
        match port.set_mtu(mtu) {
            Ok(()) => {}
            // A PMD that cannot change its MTU (net_null, say) is fine at
            // Ethernet's default; any other MTU it cannot honour is an
            // error, not a silently different frame size.
            Err(e) if e.errno == libc::ENOTSUP && mtu == 1500 => {
                tracing::info!(port = id, %e, "the port keeps its own MTU");
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "bond_mtu = {}: port {id} ({}) does not take that MTU",
                        config.bond_mtu,
                        port.info().name
                    )
                })
            }
        }
        if let Err(e) = port.set_mac(mac) {
            tracing::warn!(port = id, %e, "cannot set the bond MAC on the port; relying on promiscuous mode");
        }
        let (rx, tx) = port
            .take_queues()
            .into_iter()
            .next()
            .context("the port gave no queue pair")?;
        let iface = vdev_iface(args, &port.info().name);
        tracing::info!(port = id, name = %port.info().name, ?iface, mtu, "bond port up");
        members.push(BondMember {
            port,
            rx,
            tx,
            iface,
        });
    }
    let kni = if config.kni_switch {
        let id = Port::id_by_name(&eal, KNI_VDEV)?;
        let mut port = Port::open(&eal, id, &port_config, Arc::clone(&rx_pool))?;
        if let Err(e) = port.set_mac(mac) {
            tracing::warn!(%e, "cannot set the bond MAC on the exception interface");
        }
        let (rx, tx) = port.take_queues().into_iter().next().context("tap queue")?;
        tracing::info!(iface = %opts.kni_name, "exception interface up");
        Some(Kni { port, rx, tx })
    } else {
        None
    };

    let mut dispatcher = Dispatcher::new(
        members,
        kni,
        Arc::clone(&rx_pool),
        Arc::clone(&tx_pool),
        mac,
        config.dispatch_max_clients as usize,
        CONN_CAPACITY,
        Duration::from_millis(u64::from(config.bond_miimon)),
        Duration::from_secs(u64::from(config.tcp_conn_scan_interval)),
    );
    dispatcher.busy_poll = opts.busy_poll;

    let published = Arc::new(Mutex::new(Default::default()));
    let (cmd_tx, cmd_rx) = mpsc::channel();
    let socket = gazelle_ctl_proto::paths::ltran_socket(&opts.run_dir, &config.unix_prefix);
    let listener = gazelle_ctl_proto::server::bind(&socket)
        .with_context(|| format!("control socket {}", socket.display()))?;
    let control = Arc::new(Control::new(
        eal,
        config.clone(),
        mac,
        prefix.to_owned(),
        "ltran_tx".into(),
        Arc::clone(&published),
        Arc::clone(&quit),
        cmd_tx,
    ));
    control::serve(control, listener)?;
    tracing::info!(
        socket = %socket.display(),
        file_prefix = %prefix,
        bond_mac = %crate::fmt_mac(mac),
        subnet = %format!("{}/{}", config.dispatch_subnet, config.dispatch_prefix_len()),
        "ltran ready"
    );
    dispatcher.run(&cmd_rx, &quit, &published);
    let _ = std::fs::remove_file(&socket);
    tracing::info!("ltran stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cpu_lists_masks_and_lcore_maps_are_read() {
        assert_eq!(cpu_list("0,2-4"), Some(vec![0, 2, 3, 4]));
        assert_eq!(cpu_list("3-1"), None);
        assert_eq!(cpu_list("x"), None);
        assert_eq!(cpu_mask("0x5"), Some(vec![0, 2]));
        assert_eq!(cpu_mask("30"), Some(vec![4, 5]));
        assert_eq!(cpu_mask("0xg"), None);
        assert_eq!(lcores_cpus("1,2@3,(4-5)@(6,7)"), Some(vec![1, 3, 6, 7]));
        assert_eq!(
            gazelle_config::value::cpu_ranges(&[0, 1, 2, 5, 7, 8]),
            "0-2,5,7-8"
        );
    }

    #[test]
    fn eal_cpus_outside_the_affinity_are_refused_naming_the_option() {
        let allowed = [0, 1];
        for ok in [
            &["-l", "0,1"][..],
            &["-l0"],
            &["-c", "0x3"],
            &["--lcores=(0-3)@1"],
            &["--lcores", "0"],
            &["--log-level=*:notice", "--no-pci"],
        ] {
            check_eal_cpus(&args(ok), &allowed).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        for (bad, says) in [
            (&["-l", "999"][..], "-l 999 names CPU 999"),
            (&["-l2-3"], "-l 2-3 names CPU 2"),
            (&["-c", "0x4"], "-c 0x4 names CPU 2"),
            (&["--lcores=0@5"], "--lcores 0@5 names CPU 5"),
        ] {
            let e = check_eal_cpus(&args(bad), &allowed)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("forward_kit_args: "), "{e}");
            assert!(e.contains(says), "{bad:?}: {e}");
            assert!(e.contains("CPUs 0-1"), "{e}");
        }
        let e = check_eal_cpus(&args(&["-l", "zero"]), &allowed).unwrap_err();
        assert!(e.to_string().contains("\"zero\" is not a CPU list"), "{e}");
    }
}
