//! EAL arguments that put a DPDK port on a topology's `host_if` through
//! `net_af_packet` (or `net_af_xdp`, see [`Medium`]).
//!
//! The af_packet vdev takes `iface`, `qpairs`, `blocksz`, `framesz`,
//! `framecnt` and `qdisc_bypass` (DPDK 22.11). Ports are numbered in vdev
//! order, so with [`AfPacketEal::args_for_ifaces`] port `i` is `ifaces[i]`.

use crate::hugepages::HugeEnv;
use crate::topology::Topology;

/// The DPDK virtual NIC a port on a veth is made of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Medium {
    /// `net_af_packet`: `PACKET_MMAP` rings; the kernel copies each frame
    /// into the ring and the PMD copies it again into an mbuf (and the
    /// other way when sending).
    #[default]
    AfPacket,
    /// `net_af_xdp`: an XDP program on the veth (native XDP) redirects
    /// frames to an XDP socket whose memory is the port's mempool, so the
    /// PMD hands the kernel's copy over as the mbuf; sending is one copy in
    /// the kernel. One queue per `qpairs` (a veth has one unless made with
    /// more); `blocksz`, `framesz` and `framecnt` do not apply.
    AfXdp,
}

impl Medium {
    /// The DPDK driver's name.
    pub fn driver(self) -> &'static str {
        match self {
            Medium::AfPacket => "net_af_packet",
            Medium::AfXdp => "net_af_xdp",
        }
    }
}

impl std::fmt::Display for Medium {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Medium::AfPacket => "af_packet",
            Medium::AfXdp => "af_xdp",
        })
    }
}

/// Settings for an EAL command line over `net_af_packet`; `Default` is what
/// [`eal_args_af_packet`] uses.
#[derive(Clone, Debug)]
pub struct AfPacketEal {
    /// The virtual NIC on the veth. Default [`Medium::AfPacket`].
    pub medium: Medium,
    /// `argv[0]` handed to EAL. Default `"lstack-test"`.
    pub program: String,
    /// EAL `--lcores` value: `"0"` (default), `"0,1"`, or floating `"0@(0-1)"`. Note
    /// `dpdk-testpmd` needs a second lcore to forward on.
    pub lcores: String,
    /// Queue pairs per port (`qpairs=`; more than one uses `PACKET_FANOUT`). Default 1.
    pub qpairs: u16,
    /// Size of a packet-mmap ring block (`blocksz=`), a multiple of the page size.
    /// Default 4096.
    pub blocksz: u32,
    /// Size of a ring frame (`framesz=`): header plus the largest frame, at most
    /// `blocksz`, a multiple of 16. Default 2048 (enough for MTU 1500).
    pub framesz: u32,
    /// Frames per ring (`framecnt=`). Default 16384: the receive ring must hold
    /// what the peer can have in flight towards the stack while the stack
    /// thread is busy or descheduled, or the kernel drops frames at it
    /// (`tp_drops`, shown as the port's `rx_missed`). `lstack-soak` (200
    /// connections, 60 s, on a 2-core VM) measured 22 % of frames dropped at 2048,
    /// 2.8 % at 8192 and none at 16384 or 32768; `blocksz` and lstack's
    /// `nic_rxqueue_size` made no difference. The cost is kernel memory:
    /// two rings (receive and transmit) of `framecnt * framesz` bytes per
    /// queue pair, 64 MiB with these defaults.
    pub framecnt: u32,
    /// Memory EAL reserves up front, in MiB (`--socket-mem`). Default `None`: EAL grows
    /// its memory on demand, so parallel tests only take the pages they use.
    pub socket_mem_mb: Option<u32>,
    /// Upper bound on EAL's memory, in MiB (`--socket-limit`). Default 256.
    pub socket_limit_mb: Option<u32>,
    /// `--log-level` value. Default `"*:notice"`.
    pub log_level: Option<String>,
}

impl Default for AfPacketEal {
    fn default() -> Self {
        AfPacketEal {
            medium: Medium::AfPacket,
            program: "lstack-test".to_owned(),
            lcores: "0".to_owned(),
            qpairs: 1,
            blocksz: 4096,
            framesz: 2048,
            framecnt: 16384,
            socket_mem_mb: None,
            socket_limit_mb: Some(256),
            log_level: Some("*:notice".to_owned()),
        }
    }
}

impl AfPacketEal {
    /// EAL arguments (with `argv[0]`) for one port on `topo.host_if`.
    pub fn args(&self, topo: &Topology, huge: &HugeEnv, file_prefix: &str) -> Vec<String> {
        self.args_for_ifaces(&[topo.host_if.as_str()], huge, file_prefix)
    }

    /// EAL arguments for ports on `topo.host_if` and then every extra link's `host_if`,
    /// in that order.
    pub fn args_all_links(
        &self,
        topo: &Topology,
        huge: &HugeEnv,
        file_prefix: &str,
    ) -> Vec<String> {
        let ifaces: Vec<&str> = std::iter::once(topo.host_if.as_str())
            .chain(topo.extra_links.iter().map(|l| l.host_if.as_str()))
            .collect();
        self.args_for_ifaces(&ifaces, huge, file_prefix)
    }

    /// EAL arguments for one `net_af_packet` port per interface, port `i` on `ifaces[i]`.
    pub fn args_for_ifaces(
        &self,
        ifaces: &[&str],
        huge: &HugeEnv,
        file_prefix: &str,
    ) -> Vec<String> {
        let mut args = vec![
            self.program.clone(),
            format!("--lcores={}", self.lcores),
            "--no-pci".to_owned(),
            "--no-telemetry".to_owned(),
            format!("--file-prefix={file_prefix}"),
            format!("--huge-dir={}", huge.huge_dir.display()),
            "--huge-unlink".to_owned(),
        ];
        if let Some(mb) = self.socket_mem_mb {
            args.push(format!("--socket-mem={mb}"));
        }
        if let Some(mb) = self.socket_limit_mb {
            args.push(format!("--socket-limit={mb}"));
        }
        if let Some(level) = &self.log_level {
            args.push(format!("--log-level={level}"));
        }
        for (i, iface) in ifaces.iter().enumerate() {
            args.push(match self.medium {
                Medium::AfPacket => format!(
                    "--vdev=net_af_packet{i},iface={iface},qpairs={},blocksz={},framesz={},framecnt={}",
                    self.qpairs, self.blocksz, self.framesz, self.framecnt
                ),
                // No busy polling in the kernel (`busy_budget=0`): the stack
                // sleeps in `poll` on the socket when it has nothing to do.
                Medium::AfXdp => format!(
                    "--vdev=net_af_xdp{i},iface={iface},start_queue=0,queue_count={},busy_budget=0",
                    self.qpairs
                ),
            });
        }
        args
    }
}

/// EAL arguments (with `argv[0]`) for a DPDK process owning `topo.host_if` as port 0,
/// with [`AfPacketEal::default`] settings.
pub fn eal_args_af_packet(topo: &Topology, huge: &HugeEnv, file_prefix: &str) -> Vec<String> {
    AfPacketEal::default().args(topo, huge, file_prefix)
}

/// The lstack configuration for a stack on `topo.host_if` driven through
/// `eal`'s `net_af_packet` settings: the topology's stack addresses and MAC,
/// the peer as gateway, the stack thread on CPU 1 (EAL's main lcore is 0),
/// and DPDK arguments with the file prefix `prefix` (the program name left
/// out: the stack adds its own).
pub fn lstack_config(
    topo: &Topology,
    huge: &HugeEnv,
    eal: &AfPacketEal,
    prefix: &str,
) -> anyhow::Result<gazelle_config::LstackConfig> {
    let mut args = eal.args(topo, huge, prefix);
    args.remove(0);
    let mask = u32::MAX
        .checked_shl(32 - u32::from(topo.prefix4))
        .unwrap_or(0);
    let mut cfg = gazelle_config::LstackConfig::new(
        topo.stack_ip4,
        mask.into(),
        topo.stack_mac.to_string().parse()?,
    );
    cfg.gateway_addr = Some(topo.peer_ip4);
    cfg.host_addr6 = Some(gazelle_config::Ipv6Cidr::new(topo.stack_ip6, topo.prefix6)?);
    cfg.dpdk_args = args;
    cfg.num_cpus = "1".parse()?;
    cfg.validate()?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn one_vdev_per_interface_in_order() {
        let huge = HugeEnv {
            huge_dir: PathBuf::from("/dev/hugepages"),
            page_size: 2 << 20,
            total_pages: 256,
        };
        let eal = AfPacketEal {
            qpairs: 2,
            socket_mem_mb: Some(64),
            ..AfPacketEal::default()
        };
        let args = eal.args_for_ifaces(&["h0", "h1"], &huge, "p_1_0");
        assert_eq!(
            args,
            [
                "lstack-test",
                "--lcores=0",
                "--no-pci",
                "--no-telemetry",
                "--file-prefix=p_1_0",
                "--huge-dir=/dev/hugepages",
                "--huge-unlink",
                "--socket-mem=64",
                "--socket-limit=256",
                "--log-level=*:notice",
                "--vdev=net_af_packet0,iface=h0,qpairs=2,blocksz=4096,framesz=2048,framecnt=16384",
                "--vdev=net_af_packet1,iface=h1,qpairs=2,blocksz=4096,framesz=2048,framecnt=16384",
            ]
        );
    }

    #[test]
    fn af_xdp_ports_name_their_queues_and_no_ring_sizes() {
        let huge = HugeEnv {
            huge_dir: PathBuf::from("/dev/hugepages"),
            page_size: 2 << 20,
            total_pages: 256,
        };
        let eal = AfPacketEal {
            medium: Medium::AfXdp,
            ..AfPacketEal::default()
        };
        let args = eal.args_for_ifaces(&["h0", "h1"], &huge, "p");
        assert_eq!(
            args[args.len() - 2..],
            [
                "--vdev=net_af_xdp0,iface=h0,start_queue=0,queue_count=1,busy_budget=0",
                "--vdev=net_af_xdp1,iface=h1,start_queue=0,queue_count=1,busy_budget=0",
            ]
        );
        assert_eq!(Medium::AfXdp.driver(), "net_af_xdp");
        assert_eq!(Medium::default().to_string(), "af_packet");
    }
}
