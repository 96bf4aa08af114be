//! The appliance config, `/etc/gazelle/appliance.toml`: one declarative
//! file for the whole machine.
//!
//! It holds (or references by absolute path) the ltran and lstack configs
//! next to what only the appliance knows: hugepage reservations and
//! hugetlbfs mounts, which NIC is management and which carry data (and
//! through which DPDK driver), the application instances to supervise, and
//! sysctl overrides.
//!
//! Loading is: TOML text → [`ApplianceConfig`] through serde (unknown keys,
//! wrong types and unknown enum values are refused with the field path,
//! such as `nics[1].role`) → [`ApplianceConfig::validate`], which parses the
//! embedded lstack/ltran configs with their own schemas and checks the file
//! as a whole: every rule between sections is here, so an invalid file is
//! refused before anything is applied. [`DEFAULT_CONFIG_TOML`] is the
//! image's default.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use gazelle_config::{ConfigError, LstackConfig, LtranConfig, MacAddr};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::nic::{self, DpdkDriver, NicSelector, PciAddr};
use crate::sysctl::SysctlKey;

/// Where the appliance reads its config.
pub const DEFAULT_APPLIANCE_CONF_PATH: &str = "/etc/gazelle/appliance.toml";

/// Allowed ranges of the appliance's own numeric keys.
pub mod limits {
    use std::ops::RangeInclusive;

    /// `hugepages.pages[].count`: 0 releases the pages; 1 Mi pages is 2 TiB
    /// of 2 MiB pages.
    pub const HUGEPAGE_COUNT: RangeInclusive<u64> = 0..=1 << 20;
    /// `hugepages.pages[].node`: Linux's largest NUMA node number.
    pub const NUMA_NODE: RangeInclusive<u32> = 0..=1023;
    /// `instances[].restart.initial_backoff_ms`.
    pub const INITIAL_BACKOFF_MS: RangeInclusive<u64> = 10..=60_000;
    /// `instances[].restart.max_backoff_ms` (at least the initial backoff).
    pub const MAX_BACKOFF_MS: RangeInclusive<u64> = 10..=3_600_000;
    /// Length of `instances[].name` (it names units, sockets and logs).
    pub const NAME_LEN: RangeInclusive<usize> = 1..=32;
}

/// Why an appliance config was refused. Every variant names the field
/// path, like `instances[0].lstack.host_addr`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplianceConfigError {
    /// The file is not TOML.
    #[error("line {line}: {message}")]
    Syntax {
        /// 1-based line of the problem.
        line: usize,
        /// What the TOML parser expected.
        message: String,
    },

    /// A field that is missing, unknown, of the wrong type or refused by a
    /// rule of this file.
    #[error("{field}: {message}")]
    Invalid {
        /// Path of the field, like `nics[1].role` (`.` for the whole file).
        field: String,
        /// What is wrong and what would be accepted.
        message: String,
    },

    /// An embedded or referenced lstack/ltran config was refused by its own
    /// schema.
    #[error("{section}: {source}")]
    Section {
        /// Where it sits, like `instances[0].lstack` or `ltran`.
        section: String,
        /// Its schema's error (naming its own key).
        source: ConfigError,
    },
}

impl ApplianceConfigError {
    /// The full path of the field at fault, if there is one, like
    /// `nics[1].role` or `instances[0].lstack.tcp_conn_count`.
    pub fn field(&self) -> Option<String> {
        match self {
            Self::Syntax { .. } => None,
            Self::Invalid { field, .. } => Some(field.clone()),
            Self::Section { section, source } => Some(match source.field() {
                Some(key) => format!("{section}.{key}"),
                None => section.clone(),
            }),
        }
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApplianceConfigError {
    ApplianceConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// The whole appliance config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApplianceConfig {
    /// Hugepage reservations and hugetlbfs mounts.
    #[serde(default)]
    pub hugepages: HugepagesSection,

    /// The NICs the appliance manages: one management NIC (left to the
    /// kernel) and the data NICs (handed to DPDK).
    #[serde(default)]
    pub nics: Vec<NicEntry>,

    /// ltran's config, inline or `path = "/etc/gazelle/ltran.toml"`.
    /// Needed when any instance has `use_ltran`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ltran: Option<SubConfig>,

    /// The applications to run on lstack.
    #[serde(default)]
    pub instances: Vec<Instance>,

    /// sysctl values to set besides (or instead of) the ones the data path
    /// requires, keyed like `"net.ipv4.conf.all.rp_filter"` (quoted: the key
    /// has dots).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctl: BTreeMap<String, SysctlValue>,
}

/// `[hugepages]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HugepagesSection {
    /// Pages to reserve, per size and optionally per NUMA node.
    #[serde(default)]
    pub pages: Vec<HugepageReservation>,
    /// hugetlbfs mounts DPDK processes use as `--huge-dir`.
    #[serde(default)]
    pub mounts: Vec<HugetlbfsMount>,
}

/// A hugepage size the appliance reserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PageSize {
    /// 2 MiB pages (`"2M"`).
    #[serde(rename = "2M")]
    Size2M,
    /// 1 GiB pages (`"1G"`).
    #[serde(rename = "1G")]
    Size1G,
}

impl PageSize {
    /// Size in KiB, as sysfs names it (`hugepages-2048kB`).
    pub fn kib(self) -> u64 {
        match self {
            Self::Size2M => 2048,
            Self::Size1G => 1_048_576,
        }
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Size2M => "2M",
            Self::Size1G => "1G",
        })
    }
}

/// `[[hugepages.pages]]`: how many pages of a size to reserve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HugepageReservation {
    /// Page size, `"2M"` or `"1G"`.
    pub size: PageSize,
    /// Number of pages; range [`limits::HUGEPAGE_COUNT`].
    pub count: u64,
    /// NUMA node to reserve them on; absent means the kernel spreads them
    /// (`/proc/sys/vm/nr_hugepages`). A size is reserved either per node or
    /// system-wide, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u32>,
}

/// `[[hugepages.mounts]]`: a hugetlbfs mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HugetlbfsMount {
    /// Absolute mount point, like `/mnt/hugepages-ltran`.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub dir: PathBuf,
    /// Page size of the mount; pages of that size must be reserved.
    pub page_size: PageSize,
}

/// What a NIC is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum NicRole {
    /// The operator's way in: stays with its kernel driver, never unbound.
    Management,
    /// Carries the data path: handed to DPDK.
    Data,
}

/// `[[nics]]`: one NIC, named by PCI address or MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NicEntry {
    /// PCI address, like `"0000:00:04.0"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci: Option<PciAddr>,
    /// MAC address (as the kernel showed it before the NIC left it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub mac: Option<MacAddr>,
    /// `"management"` or `"data"`.
    pub role: NicRole,
    /// DPDK driver of a data NIC, `"uio_pci_generic"` or `"vfio-pci"`; when
    /// absent, vfio-pci on a machine with an IOMMU and uio_pci_generic
    /// otherwise. Not allowed on the management NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<DpdkDriver>,
    /// Allow vfio-pci without an IOMMU (unsafe no-IOMMU mode). Only with
    /// `driver = "vfio-pci"`. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_noiommu: bool,
}

impl NicEntry {
    /// How to find the NIC: the PCI address if given, else the MAC.
    pub fn selector(&self) -> Option<NicSelector> {
        match (&self.pci, self.mac) {
            (Some(pci), _) => Some(NicSelector::Pci(pci.clone())),
            (None, Some(mac)) => Some(NicSelector::Mac(mac)),
            (None, None) => None,
        }
    }

    /// The driver a data NIC gets on the machine whose `/sys` is under
    /// `root`: the configured one, else [`nic::default_driver`].
    pub fn dpdk_driver(&self, root: &Path) -> DpdkDriver {
        self.driver.unwrap_or_else(|| nic::default_driver(root))
    }
}

/// An embedded config: inline keys, or `path = "/abs/file"` (a `.conf`
/// file in gazelle syntax or TOML).
#[derive(Debug, Clone, PartialEq)]
pub enum SubConfig {
    /// A file holding the config.
    Path(PathBuf),
    /// The config's keys, written in place.
    Inline(toml::Table),
}

impl SubConfig {
    /// The keys of the config, read from its file if it has one (`.conf`
    /// files in gazelle syntax).
    pub fn table(&self) -> Result<toml::Table, ConfigError> {
        match self {
            Self::Inline(table) => Ok(table.clone()),
            Self::Path(path) => {
                let text = crate::store::read_text(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                gazelle_config::Format::from_path(path).parse(&text)
            }
        }
    }

    /// Parses (or loads) the config with its own schema, which validates it.
    fn resolve<T>(
        &self,
        from_table: fn(toml::Table) -> Result<T, ConfigError>,
        load: fn(&Path) -> Result<T, ConfigError>,
    ) -> Result<T, ConfigError> {
        match self {
            Self::Inline(table) => from_table(table.clone()),
            Self::Path(path) => load(path),
        }
    }
}

/// In the OpenAPI document: a table of the section's own keys (its schema
/// is lstack's or ltran's, checked by validation), or `{"path": "/abs"}`.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for SubConfig {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .additional_properties(Some(
                utoipa::openapi::schema::AdditionalProperties::FreeForm(true),
            ))
            .description(Some(
                "The section's keys (lstack's or ltran's, as in their own config files), \
                 or {\"path\": \"/etc/gazelle/....toml\"} naming a file that holds them",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for SubConfig {}

impl Serialize for SubConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Path(path) => {
                let mut table = toml::Table::new();
                table.insert("path".into(), path.display().to_string().into());
                table.serialize(serializer)
            }
            Self::Inline(table) => table.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for SubConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut table = toml::Table::deserialize(deserializer)?;
        match table.remove("path") {
            None => Ok(Self::Inline(table)),
            Some(_) if !table.is_empty() => Err(serde::de::Error::custom(
                "give either `path = \"/etc/gazelle/...\"` or the settings inline, not both",
            )),
            Some(toml::Value::String(path)) if path.starts_with('/') => Ok(Self::Path(path.into())),
            Some(other) => Err(serde::de::Error::custom(format!(
                "path = {other} must be an absolute file name like \"/etc/gazelle/lstack.toml\""
            ))),
        }
    }
}

/// A sysctl value: TOML integers and strings both work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum SysctlValue {
    /// `rp_filter = 0`.
    Integer(i64),
    /// `"4096 87380 6291456"`.
    Text(String),
}

impl fmt::Display for SysctlValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Integer(n) => write!(f, "{n}"),
            Self::Text(s) => f.write_str(s),
        }
    }
}

/// `[[instances]]`: one application run on lstack and supervised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Instance {
    /// Unique name, 1 to 32 characters from `A-Z a-z 0-9 _ -`.
    pub name: String,
    /// The program and its arguments (`argv`), like `["redis-server",
    /// "--port", "6379"]`.
    pub command: Vec<String>,
    /// Extra environment variables (the supervisor adds `LD_PRELOAD` and
    /// `LSTACK_CONF_PATH` itself unless set here).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// How the supervisor restarts it.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Its lstack config, inline or `path = ...`.
    pub lstack: SubConfig,
}

/// When to restart an instance that exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum RestartMode {
    /// Never.
    Never,
    /// When it exited with an error or a signal (default).
    #[default]
    OnFailure,
    /// Whenever it exited.
    Always,
}

/// `instances[].restart`: the restart policy, with exponential backoff
/// between `initial_backoff_ms` and `max_backoff_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    /// `"never"`, `"on-failure"` (default) or `"always"`.
    #[serde(default)]
    pub mode: RestartMode,
    /// Delay before the first restart, in ms. Default 500, range
    /// [`limits::INITIAL_BACKOFF_MS`].
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff_ms: u64,
    /// Longest delay, reached by doubling, in ms. Default 30000; range
    /// [`limits::MAX_BACKOFF_MS`] and at least `initial_backoff_ms`.
    #[serde(default = "default_max_backoff")]
    pub max_backoff_ms: u64,
    /// Give up after this many restarts in a row without a minute of
    /// uptime; absent means never give up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<u32>,
}

fn default_initial_backoff() -> u64 {
    500
}

fn default_max_backoff() -> u64 {
    30_000
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            mode: RestartMode::default(),
            initial_backoff_ms: default_initial_backoff(),
            max_backoff_ms: default_max_backoff(),
            max_restarts: None,
        }
    }
}

/// The embedded configs of a validated [`ApplianceConfig`], parsed with
/// their own schemas.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// ltran's config, if there is an `[ltran]` section.
    pub ltran: Option<LtranConfig>,
    /// One lstack config per instance, in the order of `instances`.
    pub lstacks: Vec<LstackConfig>,
}

/// The image's default config: the first virtio NIC (QEMU's first default
/// MAC) is management, the next two are data NICs in one active-backup
/// bond owned by ltran, and a demo redis-server runs behind it.
pub const DEFAULT_CONFIG_TOML: &str = r#"# /etc/gazelle/appliance.toml: the appliance's one config file.

[hugepages]
pages = [{ size = "2M", count = 1024 }]
mounts = [
    { dir = "/mnt/hugepages-ltran", page_size = "2M" },
    { dir = "/mnt/hugepages-lstack", page_size = "2M" },
]

[[nics]]
mac = "52:54:00:12:34:56"
role = "management"

# The data NICs get vfio-pci where the machine has an IOMMU and
# uio_pci_generic where it has none (set driver = "..." to choose).
[[nics]]
mac = "52:54:00:12:34:57"
role = "data"

[[nics]]
mac = "52:54:00:12:34:58"
role = "data"

[ltran]
forward_kit_args = ["-l", "0,1", "--socket-mem", "512", "--huge-dir", "/mnt/hugepages-ltran", "--proc-type", "primary", "--legacy-mem"]
dispatch_max_clients = 8
dispatch_subnet = "192.168.100.0"
dispatch_subnet_length = 8
bond_mode = 1
bond_miimon = 100
bond_ports = ["0x3"]
bond_macs = ["52:54:00:12:34:57"]
bond_mtu = 1500
# 64k receive mbufs (about 140 MiB) fit the 512 MiB of --socket-mem;
# gazelle's default of 307200 (about 670 MiB) does not.
rx_mbuf_pool_size = 65536
tx_mbuf_pool_size = 16384

[[instances]]
name = "redis"
command = ["redis-server", "--port", "6379", "--protected-mode", "no", "--save", ""]
environment = { GAZELLE_BIND_PROCNAME = "redis-server" }
restart = { mode = "on-failure", initial_backoff_ms = 500, max_backoff_ms = 30000 }

[instances.lstack]
dpdk_args = ["--socket-mem", "512", "--huge-dir", "/mnt/hugepages-lstack", "--proc-type", "secondary"]
use_ltran = 1
# redis is one event loop: it runs the stack in its own thread, with no
# stack thread beside it (see the README, "Two ways to run the stack").
stack_thread_mode = "run-to-completion"
num_cpus = "1"
host_addr = "192.168.100.10"
mask_addr = "255.255.255.0"
gateway_addr = "192.168.100.1"
devices = "52:54:00:12:34:57"

[sysctl]
"net.ipv4.conf.all.rp_filter" = 0
"#;

impl ApplianceConfig {
    /// A config that asks for nothing: no pages, NICs, ltran, instances or
    /// sysctl overrides. What the machine "runs" before the daemon applies
    /// its config at start.
    pub fn empty() -> Self {
        Self {
            hugepages: HugepagesSection::default(),
            nics: Vec::new(),
            ltran: None,
            instances: Vec::new(),
            sysctl: BTreeMap::new(),
        }
    }

    /// The image's default ([`DEFAULT_CONFIG_TOML`]).
    pub fn image_default() -> Self {
        toml::from_str(DEFAULT_CONFIG_TOML)
            .unwrap_or_else(|e| unreachable!("the embedded default config parses: {e}"))
    }

    /// Parses TOML text into a config (types, unknown keys, enum values)
    /// without checking rules between fields; [`Self::from_toml_str`] does
    /// both.
    pub fn parse(text: &str) -> Result<Self, ApplianceConfigError> {
        let deserializer = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            let line = inner
                .span()
                .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
            let message = inner.message().to_owned();
            match (field.as_str(), line) {
                // Nothing was being deserialized yet: the text is not TOML.
                (".", Some(line)) => ApplianceConfigError::Syntax { line, message },
                (_, Some(line)) => invalid(field, format!("{message} (line {line})")),
                (_, None) => invalid(field, message),
            }
        })
    }

    /// Parses and validates TOML text.
    pub fn from_toml_str(text: &str) -> Result<(Self, Resolved), ApplianceConfigError> {
        let config = Self::parse(text)?;
        let resolved = config.validate()?;
        Ok((config, resolved))
    }

    /// The config as TOML that parses back to an equal value.
    pub fn to_toml_string(&self) -> String {
        toml::to_string(self)
            .unwrap_or_else(|e| unreachable!("the appliance config serializes: {e}"))
    }

    /// Checks every rule of the file and between its sections, parsing the
    /// embedded lstack/ltran configs (and reading referenced files). The
    /// first problem is returned, naming its field path.
    pub fn validate(&self) -> Result<Resolved, ApplianceConfigError> {
        self.check_hugepages()?;
        self.check_nics()?;
        self.check_sysctl()?;
        let ltran = match &self.ltran {
            None => None,
            Some(sub) => Some(
                sub.resolve(LtranConfig::from_table, |p: &Path| LtranConfig::load(p))
                    .map_err(|source| ApplianceConfigError::Section {
                        section: "ltran".into(),
                        source,
                    })?,
            ),
        };
        let mut lstacks = Vec::with_capacity(self.instances.len());
        for (i, instance) in self.instances.iter().enumerate() {
            check_instance(i, instance)?;
            let section = format!("instances[{i}].lstack");
            let lstack = instance
                .lstack
                .resolve(LstackConfig::from_table, |p: &Path| LstackConfig::load(p))
                .map_err(|source| ApplianceConfigError::Section { section, source })?;
            lstacks.push(lstack);
        }
        self.check_instances_together(&lstacks, ltran.as_ref())?;
        Ok(Resolved { ltran, lstacks })
    }

    fn check_hugepages(&self) -> Result<(), ApplianceConfigError> {
        let pages = &self.hugepages.pages;
        for (i, p) in pages.iter().enumerate() {
            if !limits::HUGEPAGE_COUNT.contains(&p.count) {
                return Err(invalid(
                    format!("hugepages.pages[{i}].count"),
                    format!("{} is out of range {:?}", p.count, limits::HUGEPAGE_COUNT),
                ));
            }
            if let Some(node) = p.node.filter(|n| !limits::NUMA_NODE.contains(n)) {
                return Err(invalid(
                    format!("hugepages.pages[{i}].node"),
                    format!("{node} is out of range {:?}", limits::NUMA_NODE),
                ));
            }
            let earlier = pages[..i].iter().position(|q| {
                q.size == p.size && (q.node == p.node || q.node.is_none() != p.node.is_none())
            });
            if let Some(j) = earlier {
                let message = if pages[j].node == p.node {
                    format!(
                        "{} pages{} are already reserved by hugepages.pages[{j}]",
                        p.size,
                        p.node.map(|n| format!(" on node {n}")).unwrap_or_default()
                    )
                } else {
                    format!(
                        "{} pages are reserved per node in one entry and system-wide in \
                         hugepages.pages[{j}]; use one way for a size",
                        p.size
                    )
                };
                return Err(invalid(format!("hugepages.pages[{i}]"), message));
            }
        }
        let mounts = &self.hugepages.mounts;
        for (i, m) in mounts.iter().enumerate() {
            let field = format!("hugepages.mounts[{i}].dir");
            if !m.dir.is_absolute() || m.dir == Path::new("/") {
                return Err(invalid(
                    field,
                    format!(
                        "{:?} must be an absolute directory other than /, like \"/mnt/hugepages\"",
                        m.dir
                    ),
                ));
            }
            if let Some(j) = mounts[..i].iter().position(|o| o.dir == m.dir) {
                return Err(invalid(
                    field,
                    format!(
                        "{} is already mounted by hugepages.mounts[{j}]",
                        m.dir.display()
                    ),
                ));
            }
            if !pages.iter().any(|p| p.size == m.page_size && p.count > 0) {
                return Err(invalid(
                    format!("hugepages.mounts[{i}].page_size"),
                    format!(
                        "no {} pages are reserved in hugepages.pages for this mount",
                        m.page_size
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_nics(&self) -> Result<(), ApplianceConfigError> {
        let mut management: Option<usize> = None;
        for (i, nic) in self.nics.iter().enumerate() {
            if nic.selector().is_none() {
                return Err(invalid(
                    format!("nics[{i}]"),
                    "name the NIC with pci = \"0000:00:04.0\" or mac = \"52:54:00:12:34:57\"",
                ));
            }
            let same = |other: &NicEntry| {
                (nic.pci.is_some() && nic.pci == other.pci)
                    || (nic.mac.is_some() && nic.mac == other.mac)
            };
            if let Some(j) = self.nics[..i].iter().position(same) {
                let other = &self.nics[j];
                let (key, value) = match (&nic.pci, nic.mac) {
                    (Some(pci), _) if nic.pci == other.pci => ("pci", pci.to_string()),
                    (_, Some(mac)) => ("mac", mac.to_string()),
                    _ => ("pci", String::new()),
                };
                let message = if nic.role != other.role {
                    format!(
                        "{key} {value} is nics[{j}] again with another role; a NIC is either \
                         management (kernel) or data (DPDK), not both"
                    )
                } else {
                    format!("{key} {value} is already listed as nics[{j}]")
                };
                return Err(invalid(format!("nics[{i}].{key}"), message));
            }
            match nic.role {
                NicRole::Management => {
                    if let Some(j) = management {
                        return Err(invalid(
                            format!("nics[{i}].role"),
                            format!("nics[{j}] is already the management NIC; only one is allowed"),
                        ));
                    }
                    management = Some(i);
                    if let Some(driver) = nic.driver {
                        return Err(invalid(
                            format!("nics[{i}].driver"),
                            format!(
                                "\"{driver}\" on the management NIC: it stays with its kernel \
                                 driver; remove driver or set role = \"data\""
                            ),
                        ));
                    }
                    if nic.allow_noiommu {
                        return Err(invalid(
                            format!("nics[{i}].allow_noiommu"),
                            "applies only to a data NIC with driver = \"vfio-pci\"",
                        ));
                    }
                }
                NicRole::Data => {
                    if nic.allow_noiommu && nic.driver != Some(DpdkDriver::VfioPci) {
                        return Err(invalid(
                            format!("nics[{i}].allow_noiommu"),
                            match nic.driver {
                                Some(d) => {
                                    format!("applies only to driver = \"vfio-pci\", not \"{d}\"")
                                }
                                None => "applies only with driver = \"vfio-pci\" set explicitly"
                                    .to_owned(),
                            },
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn check_sysctl(&self) -> Result<(), ApplianceConfigError> {
        for key in self.sysctl.keys() {
            key.parse::<SysctlKey>()
                .map_err(|e| invalid(format!("sysctl.\"{key}\""), e.to_string()))?;
        }
        Ok(())
    }

    fn check_instances_together(
        &self,
        lstacks: &[LstackConfig],
        ltran: Option<&LtranConfig>,
    ) -> Result<(), ApplianceConfigError> {
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut addrs: HashMap<Ipv4Addr, usize> = HashMap::new();
        let mut addrs6 = HashMap::new();
        let mut standalone_macs: HashMap<MacAddr, usize> = HashMap::new();
        let huge_dirs: Vec<&Path> = self
            .hugepages
            .mounts
            .iter()
            .map(|m| m.dir.as_path())
            .collect();
        let mut behind_ltran = 0u32;
        if let Some(ltran) = ltran {
            check_huge_dir(
                "ltran.forward_kit_args",
                &ltran.forward_kit_args,
                &huge_dirs,
            )?;
        }
        for (i, (instance, lstack)) in self.instances.iter().zip(lstacks).enumerate() {
            let name_of = |j: usize| &self.instances[j].name;
            if let Some(j) = names.insert(&instance.name, i) {
                return Err(invalid(
                    format!("instances[{i}].name"),
                    format!("{:?} is already the name of instances[{j}]", instance.name),
                ));
            }
            if let Some(j) = addrs.insert(lstack.host_addr, i) {
                return Err(invalid(
                    format!("instances[{i}].lstack.host_addr"),
                    format!(
                        "{} is already the address of instances[{j}] ({:?})",
                        lstack.host_addr,
                        name_of(j)
                    ),
                ));
            }
            if let Some(addr6) = lstack.host_addr6 {
                if let Some(j) = addrs6.insert(addr6.addr(), i) {
                    return Err(invalid(
                        format!("instances[{i}].lstack.host_addr6"),
                        format!(
                            "{} is already the address of instances[{j}] ({:?})",
                            addr6.addr(),
                            name_of(j)
                        ),
                    ));
                }
            }
            if lstack.use_ltran {
                let Some(ltran) = ltran else {
                    return Err(invalid(
                        format!("instances[{i}].lstack.use_ltran"),
                        "the instance runs behind ltran but there is no [ltran] section; add one or set use_ltran = 0",
                    ));
                };
                ltran
                    .check_lstack(lstack)
                    .map_err(|source| ApplianceConfigError::Section {
                        section: format!("instances[{i}].lstack"),
                        source,
                    })?;
                behind_ltran += 1;
                if behind_ltran > ltran.dispatch_max_clients {
                    return Err(invalid(
                        format!("instances[{i}]"),
                        format!(
                            "{behind_ltran} instances use ltran but ltran.dispatch_max_clients = {}; \
                             raise it (at most 32) or run fewer instances behind ltran",
                            ltran.dispatch_max_clients
                        ),
                    ));
                }
            }
            if !lstack.use_ltran {
                if let Some(j) = standalone_macs.insert(lstack.devices, i) {
                    return Err(invalid(
                        format!("instances[{i}].lstack.devices"),
                        format!(
                            "{} is already driven by instances[{j}] ({:?}); without ltran each lstack owns its NIC",
                            lstack.devices,
                            name_of(j)
                        ),
                    ));
                }
            }
            check_huge_dir(
                &format!("instances[{i}].lstack.dpdk_args"),
                &lstack.dpdk_args,
                &huge_dirs,
            )?;
        }
        Ok(())
    }
}

impl Default for ApplianceConfig {
    /// The image's default ([`ApplianceConfig::image_default`]).
    fn default() -> Self {
        Self::image_default()
    }
}

/// The `--huge-dir` of EAL arguments must be one of the hugetlbfs mounts
/// (when the file declares any).
fn check_huge_dir(
    field: &str,
    args: &[String],
    huge_dirs: &[&Path],
) -> Result<(), ApplianceConfigError> {
    match huge_dir(args) {
        Some(dir) if !huge_dirs.is_empty() && !huge_dirs.contains(&Path::new(dir)) => Err(invalid(
            field,
            format!(
                "--huge-dir {dir} is not one of the hugetlbfs mounts in hugepages.mounts ({})",
                huge_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        _ => Ok(()),
    }
}

/// The directory after `--huge-dir` (or `--huge-dir=`) in EAL arguments.
fn huge_dir(args: &[String]) -> Option<&str> {
    args.iter().enumerate().find_map(|(i, arg)| {
        if arg == "--huge-dir" {
            args.get(i + 1).map(String::as_str)
        } else {
            arg.strip_prefix("--huge-dir=")
        }
    })
}

fn check_instance(i: usize, instance: &Instance) -> Result<(), ApplianceConfigError> {
    let name = &instance.name;
    let well_formed = limits::NAME_LEN.contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !well_formed {
        return Err(invalid(
            format!("instances[{i}].name"),
            format!("{name:?}: use 1 to 32 characters from A-Z a-z 0-9 _ -"),
        ));
    }
    match instance.command.first() {
        None => {
            return Err(invalid(
                format!("instances[{i}].command"),
                "is empty; give the program and its arguments, like [\"redis-server\", \"--port\", \"6379\"]",
            ))
        }
        Some(program) if program.is_empty() => {
            return Err(invalid(format!("instances[{i}].command[0]"), "the program name is empty"))
        }
        Some(_) => {}
    }
    if let Some(j) = instance.command.iter().position(|a| a.contains('\0')) {
        return Err(invalid(
            format!("instances[{i}].command[{j}]"),
            "contains a NUL byte",
        ));
    }
    for (key, value) in &instance.environment {
        let key_ok = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !key_ok {
            return Err(invalid(
                format!("instances[{i}].environment"),
                format!("{key:?} is not a variable name (letters, digits and _, not starting with a digit)"),
            ));
        }
        if value.contains('\0') {
            return Err(invalid(
                format!("instances[{i}].environment.{key}"),
                "contains a NUL byte",
            ));
        }
    }
    let restart = &instance.restart;
    if !limits::INITIAL_BACKOFF_MS.contains(&restart.initial_backoff_ms) {
        return Err(invalid(
            format!("instances[{i}].restart.initial_backoff_ms"),
            format!(
                "{} is out of range {:?}",
                restart.initial_backoff_ms,
                limits::INITIAL_BACKOFF_MS
            ),
        ));
    }
    let max_range = restart
        .initial_backoff_ms
        .max(*limits::MAX_BACKOFF_MS.start())..=*limits::MAX_BACKOFF_MS.end();
    if !max_range.contains(&restart.max_backoff_ms) {
        return Err(invalid(
            format!("instances[{i}].restart.max_backoff_ms"),
            format!(
                "{} is out of range {max_range:?} (at least initial_backoff_ms = {})",
                restart.max_backoff_ms, restart.initial_backoff_ms
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    /// The default config with `edit` applied to its TOML text.
    fn edited(
        edit: impl FnOnce(&mut toml::Table),
    ) -> Result<(ApplianceConfig, Resolved), ApplianceConfigError> {
        let mut table: toml::Table = DEFAULT_CONFIG_TOML.parse().unwrap();
        edit(&mut table);
        ApplianceConfig::from_toml_str(&toml::to_string(&table).unwrap())
    }

    fn at<'a>(table: &'a mut toml::Table, path: &str) -> &'a mut toml::Value {
        let mut parts = path.split('.');
        let mut value = table.get_mut(parts.next().unwrap()).unwrap();
        for part in parts {
            value = match part.parse::<usize>() {
                Ok(index) => &mut value.as_array_mut().unwrap()[index],
                Err(_) => value
                    .as_table_mut()
                    .unwrap()
                    .entry(part)
                    .or_insert(toml::Value::Integer(0)),
            };
        }
        value
    }

    fn set(path: &'static str, value: toml::Value) -> impl FnOnce(&mut toml::Table) {
        move |t| *at(t, path) = value
    }

    /// Appends a copy of array entry `path.index`, with `edit` applied.
    fn push_copy(
        path: &'static str,
        index: usize,
        edit: impl FnOnce(&mut toml::Table),
    ) -> impl FnOnce(&mut toml::Table) {
        move |t| {
            let list = at(t, path).as_array_mut().unwrap();
            let mut copy = list[index].as_table().unwrap().clone();
            edit(&mut copy);
            list.push(copy.into());
        }
    }

    fn s(text: &str) -> toml::Value {
        toml::Value::String(text.to_owned())
    }

    #[test]
    fn default_config_validates_and_round_trips() {
        let (config, resolved) = ApplianceConfig::from_toml_str(DEFAULT_CONFIG_TOML).unwrap();
        assert_eq!(config, ApplianceConfig::default());
        assert_eq!(config.nics.len(), 3);
        assert_eq!(config.nics[0].role, NicRole::Management);
        assert!(config.nics[1..].iter().all(|n| n.role == NicRole::Data));
        assert_eq!(resolved.lstacks.len(), 1);
        assert!(resolved.lstacks[0].use_ltran);
        assert_eq!(
            resolved.lstacks[0].host_addr,
            Ipv4Addr::new(192, 168, 100, 10)
        );
        let ltran = resolved.ltran.unwrap();
        assert_eq!(ltran.bond_macs, [resolved.lstacks[0].devices]);
        assert!(ltran.dispatch_contains(resolved.lstacks[0].host_addr));
        let text = config.to_toml_string();
        assert_eq!(ApplianceConfig::parse(&text).unwrap(), config, "{text}");
    }

    #[rstest]
    #[case::unknown_top_level(|t: &mut toml::Table| { t.insert("color".into(), s("blue")); }, "color", "unknown field `color`")]
    #[case::bad_role(
        set("nics.1.role", s("mgmt")),
        "nics[1].role",
        "expected `management` or `data`"
    )]
    #[case::bad_driver(
        set("nics.1.driver", s("igb_uio")),
        "nics[1].driver",
        "expected `uio_pci_generic` or `vfio-pci`"
    )]
    #[case::bad_pci(set("nics.1.pci", s("00:33.0")), "nics[1].pci", "not a PCI address")]
    #[case::bad_page_size(
        set("hugepages.pages.0.size", s("4K")),
        "hugepages.pages[0].size",
        "expected `2M` or `1G`"
    )]
    #[case::restart_mode(
        set("instances.0.restart.mode", s("sometimes")),
        "instances[0].restart.mode",
        "`on-failure`"
    )]
    #[case::path_and_inline(
        set("instances.0.lstack.path", s("/etc/gazelle/lstack.toml")),
        "instances[0].lstack",
        "not both"
    )]
    #[case::two_management(
        set("nics.1.role", s("management")),
        "nics[1].role",
        "nics[0] is already the management NIC"
    )]
    #[case::data_nic_is_management(
        push_copy("nics", 0, |n| { n.insert("role".into(), s("data")); }),
        "nics[3].mac",
        "another role"
    )]
    #[case::duplicate_pci(
        |t: &mut toml::Table| {
            for i in [1, 2] {
                let nic = at(t, &format!("nics.{i}")).as_table_mut().unwrap();
                nic.remove("mac");
                nic.insert("pci".into(), s("0000:00:04.0"));
            }
        },
        "nics[2].pci",
        "0000:00:04.0 is already listed as nics[1]"
    )]
    #[case::nameless_nic(|t: &mut toml::Table| { at(t, "nics.2").as_table_mut().unwrap().remove("mac"); }, "nics[2]", "name the NIC")]
    #[case::driver_on_management(
        set("nics.0.driver", s("vfio-pci")),
        "nics[0].driver",
        "stays with its kernel driver"
    )]
    #[case::noiommu_with_uio(set("nics.1.allow_noiommu", true.into()), "nics[1].allow_noiommu", "vfio-pci")]
    #[case::same_name(push_copy("instances", 0, |i| { at(i, "lstack.host_addr").clone_from(&s("192.168.100.11")); }), "instances[1].name", "\"redis\" is already the name of instances[0]")]
    #[case::same_ip(push_copy("instances", 0, |i| { i.insert("name".into(), s("redis2")); }), "instances[1].lstack.host_addr", "192.168.100.10 is already the address of instances[0]")]
    #[case::ltran_missing(|t: &mut toml::Table| { t.remove("ltran"); }, "instances[0].lstack.use_ltran", "no [ltran] section")]
    #[case::lstack_range(set("instances.0.lstack.tcp_conn_count", 30000.into()), "instances[0].lstack.tcp_conn_count", "out of range 1..=20000")]
    #[case::lstack_unknown(set("instances.0.lstack.colour", 1.into()), "instances[0].lstack.colour", "unknown key")]
    #[case::relative_path(|t: &mut toml::Table| { *at(t, "instances.0.lstack") = toml::Value::Table(toml::Table::from_iter([("path".to_owned(), s("lstack.toml"))])); }, "instances[0].lstack", "absolute")]
    #[case::missing_file(|t: &mut toml::Table| { *at(t, "instances.0.lstack") = toml::Value::Table(toml::Table::from_iter([("path".to_owned(), s("/nonexistent/lstack.toml"))])); }, "instances[0].lstack", "cannot read /nonexistent/lstack.toml")]
    #[case::empty_command(set("instances.0.command", toml::Value::Array(vec![])), "instances[0].command", "is empty")]
    #[case::bad_name(
        set("instances.0.name", s("redis server")),
        "instances[0].name",
        "1 to 32 characters"
    )]
    #[case::bad_env(
        set("instances.0.environment.1X", s("y")),
        "instances[0].environment",
        "not a variable name"
    )]
    #[case::backoff_low(set("instances.0.restart.initial_backoff_ms", 5.into()), "instances[0].restart.initial_backoff_ms", "out of range 10..=60000")]
    #[case::backoff_order(set("instances.0.restart.max_backoff_ms", 100.into()), "instances[0].restart.max_backoff_ms", "at least initial_backoff_ms = 500")]
    #[case::huge_dir(set("instances.0.lstack.dpdk_args", toml::Value::Array(vec![s("--huge-dir"), s("/mnt/elsewhere")])), "instances[0].lstack.dpdk_args", "--huge-dir /mnt/elsewhere is not one of")]
    #[case::page_count(set("hugepages.pages.0.count", (1i64 << 21).into()), "hugepages.pages[0].count", "out of range")]
    #[case::mount_without_pages(
        set("hugepages.mounts.1.page_size", s("1G")),
        "hugepages.mounts[1].page_size",
        "no 1G pages are reserved"
    )]
    #[case::same_mount(
        set("hugepages.mounts.1.dir", s("/mnt/hugepages-ltran")),
        "hugepages.mounts[1].dir",
        "already mounted by hugepages.mounts[0]"
    )]
    #[case::relative_mount(
        set("hugepages.mounts.1.dir", s("hugepages")),
        "hugepages.mounts[1].dir",
        "absolute directory"
    )]
    #[case::pages_twice(push_copy("hugepages.pages", 0, |_| ()), "hugepages.pages[1]", "2M pages are already reserved by hugepages.pages[0]")]
    #[case::pages_mixed(push_copy("hugepages.pages", 0, |p| { p.insert("node".into(), 0.into()); }), "hugepages.pages[1]", "per node in one entry and system-wide")]
    #[case::sysctl_key(|t: &mut toml::Table| { at(t, "sysctl").as_table_mut().unwrap().insert("net..x".into(), 1.into()); }, "sysctl.\"net..x\"", "malformed")]
    #[case::outside_dispatch_subnet(
        |t: &mut toml::Table| {
            *at(t, "instances.0.lstack.host_addr") = s("192.168.101.10");
            at(t, "instances.0.lstack").as_table_mut().unwrap().remove("gateway_addr");
        },
        "instances[0].lstack.host_addr",
        "outside ltran's dispatch subnet 192.168.100.0/24"
    )]
    #[case::not_a_bond_mac(
        set("instances.0.lstack.devices", s("52:54:00:12:34:58")),
        "instances[0].lstack.devices",
        "not one of ltran's bond_macs (52:54:00:12:34:57)"
    )]
    #[case::too_many_clients(
        |t: &mut toml::Table| {
            *at(t, "ltran.dispatch_max_clients") = 1.into();
            push_copy("instances", 0, |i| {
                i.insert("name".into(), s("redis2"));
                *at(i, "lstack.host_addr") = s("192.168.100.11");
            })(t);
        },
        "instances[1]",
        "2 instances use ltran but ltran.dispatch_max_clients = 1"
    )]
    #[case::ltran_range(set("ltran.bond_mtu", 9000.into()), "ltran.bond_mtu", "out of range 68..=1500")]
    #[case::ltran_huge_dir(
        set("ltran.forward_kit_args", toml::Value::Array(vec![s("--huge-dir=/mnt/x")])),
        "ltran.forward_kit_args",
        "--huge-dir /mnt/x is not one of"
    )]
    fn errors_name_the_field(
        #[case] edit: impl FnOnce(&mut toml::Table),
        #[case] field: &str,
        #[case] message: &str,
    ) {
        let err = edited(edit).unwrap_err();
        assert_eq!(err.field().as_deref(), Some(field), "{err}");
        assert!(err.to_string().contains(message), "{err}");
    }

    #[test]
    fn standalone_instances_each_own_their_nic() {
        let result = edited(|t| {
            t.remove("ltran");
            at(t, "instances.0.lstack.use_ltran").clone_from(&0.into());
            push_copy("instances", 0, |i| {
                i.insert("name".into(), s("redis2"));
                at(i, "lstack.host_addr").clone_from(&s("192.168.100.11"));
            })(t);
        });
        let err = result.unwrap_err();
        assert_eq!(err.field().as_deref(), Some("instances[1].lstack.devices"));
        assert!(
            err.to_string().contains("already driven by instances[0]"),
            "{err}"
        );
    }

    #[test]
    fn lstack_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lstack.conf");
        // gazelle's own syntax, referenced by path.
        std::fs::write(
            &path,
            "dpdk_args=[\"--huge-dir\", \"/mnt/hugepages-lstack\"]\nuse_ltran=1\nhost_addr=\"192.168.100.20\"\n\
             mask_addr=\"255.255.255.0\"\ndevices=\"52:54:00:12:34:57\"\n",
        )
        .unwrap();
        let path_text = path.display().to_string();
        let (config, resolved) = edited(|t| {
            *at(t, "instances.0.lstack") =
                toml::Value::Table(toml::Table::from_iter([("path".to_owned(), s(&path_text))]));
        })
        .unwrap();
        assert_eq!(config.instances[0].lstack, SubConfig::Path(path.clone()));
        assert_eq!(
            resolved.lstacks[0].host_addr,
            Ipv4Addr::new(192, 168, 100, 20)
        );
        assert!(config
            .to_toml_string()
            .contains(&format!("path = \"{path_text}\"")));

        std::fs::write(&path, "host_addr=\"192.168.100.20\"\n").unwrap();
        let err = ApplianceConfig::from_toml_str(&config.to_toml_string()).unwrap_err();
        assert_eq!(
            err.field().as_deref(),
            Some("instances[0].lstack.mask_addr"),
            "{err}"
        );
        assert!(err.to_string().contains(&path_text), "{err}");
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let err = ApplianceConfig::parse("[hugepages]\npages = [\n").unwrap_err();
        assert!(
            matches!(err, ApplianceConfigError::Syntax { line: 2 | 3, .. }),
            "{err:?}"
        );
        assert_eq!(err.field(), None);
        let err = ApplianceConfig::parse("[[nics]]\nrole = \"data\"\nmac = 5\n").unwrap_err();
        assert_eq!(err.field().as_deref(), Some("nics[0].mac"), "{err}");
        assert!(err.to_string().contains("line 3"), "{err}");
    }
}
