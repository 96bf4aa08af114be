//! An lstack configuration file for a topology's `net_af_packet` port, or
//! for one end of a `net_memif` link between two preloaded processes.

use std::path::PathBuf;

use anyhow::{Context, Result};
use gazelle_config::LstackConfig;
use netns_testbed::{hugepages, AfPacketEal, HugeEnv, Topology};

/// A written lstack configuration: where it is and the DPDK file prefix it
/// gives its process (each DPDK primary needs its own).
#[derive(Debug)]
pub struct LstackConf {
    /// The TOML file.
    pub path: PathBuf,
    /// Its EAL `--file-prefix`.
    pub prefix: String,
    /// What the file says.
    pub config: LstackConfig,
}

impl LstackConf {
    /// Writes a fresh configuration for a stack on `topo.host_if` with
    /// `eal`'s `net_af_packet` settings (see [`netns_testbed::lstack_config`]),
    /// changed by `adjust` and validated, to a temporary file named after
    /// `tag` and this process.
    pub fn write(
        topo: &Topology,
        huge: &HugeEnv,
        eal: &AfPacketEal,
        tag: &str,
        adjust: impl FnOnce(&mut LstackConfig),
    ) -> Result<Self> {
        let prefix = hugepages::dpdk_file_prefix(tag);
        let mut config = netns_testbed::lstack_config(topo, huge, eal, &prefix)?;
        adjust(&mut config);
        Self::save(config, tag, prefix)
    }

    /// Writes a configuration for one end of a `net_memif` link whose
    /// server end listens on `socket`: no topology, only a shared-memory
    /// ring between two preloaded processes (`server` true for the end that
    /// makes the socket). `ip` is the stack's address in 10.77.0.0/24.
    pub fn write_memif(
        huge: &HugeEnv,
        socket: &std::path::Path,
        server: bool,
        ip: std::net::Ipv4Addr,
        tag: &str,
        adjust: impl FnOnce(&mut LstackConfig),
    ) -> Result<Self> {
        let prefix = hugepages::dpdk_file_prefix(tag);
        let last = ip.octets()[3];
        let mac = format!("02:77:00:00:00:{last:02x}");
        let mut config =
            LstackConfig::new(ip, std::net::Ipv4Addr::new(255, 255, 255, 0), mac.parse()?);
        config.dpdk_args = vec![
            "--lcores=0".into(),
            "--no-pci".into(),
            "--no-telemetry".into(),
            format!("--file-prefix={prefix}"),
            format!("--huge-dir={}", huge.huge_dir.display()),
            "--huge-unlink".into(),
            "--socket-limit=256".into(),
            "--log-level=*:notice".into(),
            format!(
                "--vdev=net_memif0,role={},socket={},socket-abstract=no,mac={mac}",
                if server { "server" } else { "client" },
                socket.display()
            ),
        ];
        config.num_cpus = if server { "0" } else { "1" }.parse()?;
        adjust(&mut config);
        Self::save(config, tag, prefix)
    }

    fn save(config: LstackConfig, tag: &str, prefix: String) -> Result<Self> {
        config
            .validate()
            .context("the adjusted lstack configuration")?;
        let path = std::env::temp_dir().join(format!("{tag}-{}-{prefix}.toml", std::process::id()));
        std::fs::write(&path, config.to_toml_string())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Self {
            path,
            prefix,
            config,
        })
    }

    /// Removes the file and the runtime directory EAL left for the prefix
    /// (call once the process that read it has exited).
    pub fn remove(self) -> Result<()> {
        std::fs::remove_file(&self.path)
            .with_context(|| format!("removing {}", self.path.display()))?;
        hugepages::remove_dpdk_runtime_dir(&self.prefix)
    }
}
