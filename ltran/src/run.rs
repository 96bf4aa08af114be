//! Starting ltran from its config: EAL, pools, bond ports, the exception
//! interface, the control socket, then the dispatcher on this thread.

use std::{
    path::PathBuf,
    sync::{atomic::AtomicBool, mpsc, Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, Context};
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

/// The kernel interface behind a `--vdev` device (`iface=` of af_packet or
/// af_xdp), by device name.
pub fn vdev_iface(args: &[String], device: &str) -> Option<String> {
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        let spec = if let Some(s) = a.strip_prefix("--vdev=") {
            s.to_owned()
        } else if a == "--vdev" {
            it.peek().map(|s| s.to_string())?
        } else {
            continue;
        };
        let mut parts = spec.split(',');
        if parts.next() != Some(device) {
            continue;
        }
        for kv in parts {
            if let Some(v) = kv.strip_prefix("iface=") {
                return Some(v.to_owned());
            }
        }
    }
    None
}

/// Runs ltran until `quit` is set (SIGTERM, `gazellectl ltran quit`).
pub fn run(config: LtranConfig, opts: &Options, quit: Arc<AtomicBool>) -> anyhow::Result<()> {
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
    let (args, prefix) = eal_args(&config, &opts.kni_name);
    let eal = Eal::init(&args).context("starting the DPDK EAL (forward_kit_args)")?;
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
    };
    let mut members = Vec::new();
    for id in config.bond_ports[0].ports() {
        if id >= count {
            bail!("bond_ports: port {id} does not exist (DPDK found {count} port(s): check forward_kit_args)");
        }
        let mut port = Port::open(&eal, id, &port_config, Arc::clone(&rx_pool))
            .with_context(|| format!("bond_ports: opening port {id}"))?;
        if let Err(e) = port.set_mac(mac) {
            tracing::warn!(port = id, %e, "cannot set the bond MAC on the port; relying on promiscuous mode");
        }
        let (rx, tx) = port
            .take_queues()
            .into_iter()
            .next()
            .context("the port gave no queue pair")?;
        let iface = vdev_iface(&args, &port.info().name);
        tracing::info!(port = id, name = %port.info().name, ?iface, "bond port up");
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
        u64::from(config.tcp_conn_scan_interval),
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
        prefix.clone(),
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
