//! Hugepage pools and hugetlbfs mounts: the Rust twin of
//! `scripts/setup-hugepages.sh`.
//!
//! The script and this module follow the same rules, stop on the same errors
//! with the same messages and exit codes ([`HugepageError::exit_code`]), and
//! `setup-hugepages.sh --status --json` prints exactly what [`status`]
//! serialises to. Change one, change the other (the integration tests compare
//! them).
//!
//! The flow is plan, then apply. [`plan`] reads the kernel's state and turns
//! a [`HugepageRequest`] (from [`HugepageConfig`], which mirrors the
//! script's options, or from the appliance config's `[hugepages]` section)
//! into a [`HugepagePlan`]: the pool counts to set, the directories to
//! create and the hugetlbfs mounts to make, after every check (page sizes
//! the kernel offers, NUMA nodes, mount points, free memory, transparent
//! hugepages). Its `Display` is the dry run. [`apply`] carries a plan out
//! all-or-nothing: if the kernel gives fewer pages than asked, or a mount
//! fails, everything this call changed is put back and the error says what.
//! Applying a plan twice changes nothing the second time. [`PoolSnapshot`]
//! records every pool's count to put back later, whoever changed it.
//!
//! Pools only grow unless the request is `exact`: pages other programs hold
//! are never taken away by a request that asks for fewer.
//!
//! Every function takes the root of the sysfs/procfs tree it reads and
//! writes (`/` on a real machine; [`capture`] copies the relevant part of one
//! into a directory). Mount points are always paths of the real filesystem.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use nix::mount::MsFlags;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where ltran's hugetlbfs is mounted unless the config says otherwise
/// (gazelle's default).
pub const DEFAULT_LTRAN_DIR: &str = "/mnt/hugepages";
/// Where lstack's hugetlbfs is mounted unless the config says otherwise
/// (gazelle's default).
pub const DEFAULT_LSTACK_DIR: &str = "/mnt/hugepages-2M";

/// Mode of the directories this module creates and of the mounts' roots:
/// only root (the DPDK processes) may map the pages.
const DIR_MODE: u32 = 0o700;

/// A hugepage size, as the kernel names its pools (`hugepages-2048kB`).
///
/// Parsed from `2M`, `2MB`, `2048kB`, `1G` (any case); shown as `2M`, `1G`,
/// `64K`; serialised as that string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageSize {
    kib: u64,
}

impl PageSize {
    /// 2 MiB, the x86-64 default.
    pub const SIZE_2M: Self = Self { kib: 2048 };
    /// 1 GiB (x86-64 CPUs with `pdpe1gb`).
    pub const SIZE_1G: Self = Self { kib: 1024 * 1024 };

    /// A size of `kib` KiB; `None` for zero.
    pub fn from_kib(kib: u64) -> Option<Self> {
        (kib > 0).then_some(Self { kib })
    }

    /// The size in KiB.
    pub fn kib(self) -> u64 {
        self.kib
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MIB: u64 = 1024;
        const GIB: u64 = 1024 * 1024;
        if self.kib.is_multiple_of(GIB) {
            write!(f, "{}G", self.kib / GIB)
        } else if self.kib.is_multiple_of(MIB) {
            write!(f, "{}M", self.kib / MIB)
        } else {
            write!(f, "{}K", self.kib)
        }
    }
}

impl FromStr for PageSize {
    type Err = HugepageError;

    fn from_str(s: &str) -> Result<Self, HugepageError> {
        let invalid = || HugepageError::InvalidConfig {
            reason: format!("'{s}' is not a page size (like 2M or 1G)"),
        };
        let upper = s.to_ascii_uppercase();
        let trimmed = upper.strip_suffix('B').unwrap_or(&upper);
        let (digits, unit) = trimmed.split_at(trimmed.len().saturating_sub(1));
        let scale = match unit {
            "K" => 1,
            "M" => 1024,
            "G" => 1024 * 1024,
            _ => return Err(invalid()),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let n: u64 = digits.parse().map_err(|_| invalid())?;
        n.checked_mul(scale)
            .and_then(Self::from_kib)
            .ok_or_else(invalid)
    }
}

impl Serialize for PageSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PageSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Which pools a request sets.
///
/// In a config: absent or `"machine-wide"`, `"all"`, or a list `[0, 1]`.
/// Parsed from a string like the script's `--node`: `all`, `0`, `0,1`, `0-3`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Nodes {
    /// The machine-wide count (`/sys/kernel/mm/hugepages`); the kernel
    /// spreads the pages over the nodes.
    #[default]
    MachineWide,
    /// The count on every node with memory.
    All,
    /// The count on each of these nodes.
    List(Vec<u32>),
}

impl FromStr for Nodes {
    type Err = HugepageError;

    fn from_str(s: &str) -> Result<Self, HugepageError> {
        match s {
            "all" => Ok(Self::All),
            "machine-wide" => Ok(Self::MachineWide),
            _ => parse_kernel_list(s)
                .map(Self::List)
                .ok_or_else(|| HugepageError::InvalidConfig {
                    reason: format!(
                        "'{s}' is not a node list: use a list like 0 or 0,1 or 0-3, or all"
                    ),
                }),
        }
    }
}

impl Serialize for Nodes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::MachineWide => serializer.serialize_str("machine-wide"),
            Self::All => serializer.serialize_str("all"),
            Self::List(nodes) => nodes.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Nodes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Word(String),
            List(Vec<u32>),
        }
        match Repr::deserialize(deserializer)? {
            Repr::List(nodes) => Ok(Self::List(nodes)),
            Repr::Word(word) => match word.as_str() {
                "all" => Ok(Self::All),
                "machine-wide" => Ok(Self::MachineWide),
                other => Err(serde::de::Error::custom(format!(
                    "nodes = {other:?}: use \"all\", \"machine-wide\" or a list of node numbers"
                ))),
            },
        }
    }
}

/// What the appliance wants: pool sizes and the two hugetlbfs mounts. The
/// same request as the script's command line (named after its options).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HugepageConfig {
    /// Pages wanted per size, at least this many in each selected pool
    /// (`--pages 2M=1024`): `pages = { "2M" = 1024 }`.
    pub pages: BTreeMap<PageSize, u64>,
    /// Which pools: machine-wide (default), every node, or listed nodes
    /// (`--node`).
    pub nodes: Nodes,
    /// Also lower pools that hold more than asked (`--exact`).
    pub exact: bool,
    /// Grow pools even with transparent hugepages `enabled=always`
    /// (`--allow-thp`; a warning instead of [`HugepageError::ThpAlways`]).
    pub allow_thp: bool,
    /// Mount the two hugetlbfs directories (`--no-mount` is `false`).
    pub mount: bool,
    /// ltran's hugetlbfs directory, absolute (`--ltran-dir`).
    pub ltran_dir: PathBuf,
    /// lstack's hugetlbfs directory, absolute (`--lstack-dir`).
    pub lstack_dir: PathBuf,
    /// Page size of ltran's mount (`--ltran-size`); default: the smallest
    /// size in `pages`, else the kernel's default size.
    pub ltran_size: Option<PageSize>,
    /// Page size of lstack's mount (`--lstack-size`); default as ltran's.
    pub lstack_size: Option<PageSize>,
}

impl Default for HugepageConfig {
    fn default() -> Self {
        Self {
            pages: BTreeMap::new(),
            nodes: Nodes::MachineWide,
            exact: false,
            allow_thp: false,
            mount: true,
            ltran_dir: DEFAULT_LTRAN_DIR.into(),
            lstack_dir: DEFAULT_LSTACK_DIR.into(),
            ltran_size: None,
            lstack_size: None,
        }
    }
}

impl HugepageConfig {
    /// The config as a general request: each size in `pages` on `nodes`,
    /// and the ltran and lstack mounts (unless `mount` is off).
    pub fn request(&self) -> HugepageRequest {
        let reservations = self
            .pages
            .iter()
            .map(|(&size, &pages)| Reservation {
                size,
                pages,
                nodes: self.nodes.clone(),
            })
            .collect();
        let mounts = if self.mount {
            vec![
                MountRequest {
                    dir: self.ltran_dir.clone(),
                    size: self.ltran_size,
                    purpose: "ltran".into(),
                },
                MountRequest {
                    dir: self.lstack_dir.clone(),
                    size: self.lstack_size,
                    purpose: "lstack".into(),
                },
            ]
        } else {
            Vec::new()
        };
        HugepageRequest {
            reservations,
            mounts,
            exact: self.exact,
            allow_thp: self.allow_thp,
        }
    }
}

/// What [`plan`] works from: any number of reservations and mounts.
/// [`HugepageConfig::request`] makes one from the script's options; the
/// appliance config's `[hugepages]` section (a list of reservations with an
/// optional node, a list of mounts) maps onto it entry for entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HugepageRequest {
    /// Pools to fill, planned in this order.
    pub reservations: Vec<Reservation>,
    /// hugetlbfs mounts to make, in this order.
    pub mounts: Vec<MountRequest>,
    /// Also lower pools that hold more than asked.
    pub exact: bool,
    /// Grow pools even with THP `enabled=always`.
    pub allow_thp: bool,
}

/// At least `pages` pages of `size` in each pool `nodes` selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The page size.
    pub size: PageSize,
    /// Pages wanted in each selected pool.
    pub pages: u64,
    /// Which pools.
    pub nodes: Nodes,
}

/// A hugetlbfs mount wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRequest {
    /// The mount point, absolute.
    pub dir: PathBuf,
    /// Its page size; default: the smallest size reserved by the request,
    /// else the kernel's default size.
    pub size: Option<PageSize>,
    /// Whose it is, for messages (`ltran`, `lstack`).
    pub purpose: String,
}

/// One pool: a page size, machine-wide or on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pool {
    /// The node, or `None` for the machine-wide count.
    pub node: Option<u32>,
    /// The page size.
    pub size: PageSize,
}

impl Pool {
    /// The pool's directory under `root`.
    pub fn dir(&self, root: &Path) -> PathBuf {
        let name = format!("hugepages-{}kB", self.size.kib());
        match self.node {
            None => global_dir(root).join(name),
            Some(node) => node_dir(root)
                .join(format!("node{node}"))
                .join("hugepages")
                .join(name),
        }
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.node {
            None => write!(f, "{} pages machine-wide", self.size),
            Some(node) => write!(f, "{} pages on node {node}", self.size),
        }
    }
}

/// One change a plan makes. `Display` is the line the script prints for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write `to` into the pool's `nr_hugepages` (it held `from`).
    SetPages {
        /// The pool.
        pool: Pool,
        /// The count when planned.
        from: u64,
        /// The count wanted.
        to: u64,
    },
    /// Create a directory (mode 0700) and its missing parents (0755).
    CreateDir {
        /// The directory.
        path: PathBuf,
    },
    /// Mount hugetlbfs with `pagesize=<size>,mode=0700`.
    Mount {
        /// The mount point.
        path: PathBuf,
        /// Whose it is (`ltran`, `lstack`).
        purpose: String,
        /// Its page size.
        size: PageSize,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SetPages { pool, from, to } => write!(f, "set {pool} from {from} to {to}"),
            Self::CreateDir { path } => {
                write!(f, "create directory {} (mode 0700)", path.display())
            }
            Self::Mount {
                path,
                purpose,
                size,
            } => write!(
                f,
                "mount hugetlbfs on {} for {purpose} ({})",
                path.display(),
                mount_options(*size)
            ),
        }
    }
}

fn mount_options(size: PageSize) -> String {
    format!("pagesize={size},mode=0700")
}

/// What a config needs on this machine: the changes, in order, and what
/// already matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HugepagePlan {
    root: PathBuf,
    /// The changes, in the order [`apply`] makes them.
    pub actions: Vec<Action>,
    /// What already matches the request, one line each (the script prints
    /// them too).
    pub unchanged: Vec<String>,
    /// Things allowed but worth saying (THP `enabled=always` with
    /// `allow_thp`).
    pub warnings: Vec<String>,
}

impl HugepagePlan {
    /// Nothing to change: the machine already matches the request.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// The sysfs/procfs root the plan was made against.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// One action per line, as the script's `--dry-run` prints them after
/// `would `.
impl fmt::Display for HugepagePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for action in &self.actions {
            writeln!(f, "{action}")?;
        }
        Ok(())
    }
}

/// What [`apply`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The actions carried out, in order; those already in effect when
    /// `apply` ran are left out.
    pub done: Vec<Action>,
}

/// Errors of planning, applying and reading hugepage state. Each maps to
/// the script's exit code for the same case ([`HugepageError::exit_code`]);
/// the messages are the script's, word for word.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HugepageError {
    /// The request itself is malformed (the script's usage errors).
    #[error("{reason}")]
    InvalidConfig {
        /// What is wrong and what would be right.
        reason: String,
    },

    /// Changing pools or mounting needs root.
    #[error(
        "changing hugepage pools and mounting hugetlbfs needs root (running as uid {uid}): \
         run as root; reading the status and a dry run need no root"
    )]
    NotRoot {
        /// The effective uid it ran as.
        uid: u32,
    },

    /// A page size the kernel (or CPU) does not offer.
    #[error(
        "page size {size} is not supported by this kernel/CPU (supported: {}; see {}): \
         use one of those sizes",
        list_or_none(supported), dir.display()
    )]
    UnsupportedSize {
        /// The size asked for.
        size: PageSize,
        /// The sizes the kernel offers.
        supported: Vec<PageSize>,
        /// Where they were looked up.
        dir: PathBuf,
    },

    /// No page size given for the mounts and the kernel names no default.
    #[error(
        "the kernel names no default hugepage size (Hugepagesize in {}): \
         give --ltran-size and --lstack-size",
        meminfo.display()
    )]
    NoDefaultSize {
        /// The meminfo file read.
        meminfo: PathBuf,
    },

    /// A NUMA node that does not exist.
    #[error(
        "NUMA node {node} does not exist (nodes here: {}; see {})",
        list_or_none(nodes), dir.display()
    )]
    NoSuchNode {
        /// The node asked for (`all` when there are no nodes at all).
        node: String,
        /// The nodes there are.
        nodes: Vec<u32>,
        /// Where they were looked up.
        dir: PathBuf,
    },

    /// Growing the pools needs more memory than is free.
    #[error(
        "not enough free memory{}: the request needs {} MiB more ({}), only {} MiB is free \
         ({from}): ask for fewer pages, free some memory, or reserve hugepages at boot \
         (hugepagesz= hugepages= on the kernel command line)",
        node.map(|n| format!(" on node {n}")).unwrap_or_default(),
        need_kib.div_ceil(1024), growth.join(", "), available_kib / 1024
    )]
    NotEnoughMemory {
        /// The node, or `None` machine-wide.
        node: Option<u32>,
        /// Memory the growth needs, KiB.
        need_kib: u64,
        /// Memory free for it, KiB.
        available_kib: u64,
        /// The growth per pool, like `2M pages +1024`.
        growth: Vec<String>,
        /// Where the free figure comes from.
        from: String,
    },

    /// A mount point inside an existing (or planned) hugetlbfs mount.
    #[error(
        "mount point {} for {purpose} is inside the hugetlbfs mount {}: nesting hugetlbfs \
         mounts is refused; choose a directory outside it",
        path.display(), outer.display()
    )]
    NestedMount {
        /// The mount point asked for.
        path: PathBuf,
        /// Whose it is.
        purpose: String,
        /// The hugetlbfs mount it lies in.
        outer: PathBuf,
    },

    /// The mount point is taken: another filesystem, another page size, or
    /// not a directory.
    #[error("{} for {purpose} {reason}", path.display())]
    MountConflict {
        /// The mount point asked for.
        path: PathBuf,
        /// Whose it is.
        purpose: String,
        /// What is there and what to do.
        reason: String,
    },

    /// Transparent hugepages `enabled=always` while pools must grow.
    #[error(
        "transparent hugepages are enabled=always ({path}): every process's anonymous memory \
         then competes for the contiguous free memory the pools need to grow, and khugepaged \
         compacts memory behind the data path; set it to madvise (echo madvise > {path}) or \
         allow it (--allow-thp, allow_thp = true) to go ahead anyway",
        path = path.display()
    )]
    ThpAlways {
        /// The THP `enabled` file.
        path: PathBuf,
    },

    /// The kernel gave fewer pages than asked; what the call changed was
    /// put back.
    #[error(
        "asked the kernel for {want} {} pages {} and it has {got} (not enough contiguous free \
         memory); put back: {}; ask for fewer pages, free some memory, or reserve them at boot \
         (hugepagesz={} hugepages={want} on the kernel command line)",
        pool.size, pool.node.map(|n| format!("on node {n}")).unwrap_or("machine-wide".into()),
        put_back_list(put_back), pool.size
    )]
    Shortfall {
        /// The pool.
        pool: Pool,
        /// Pages asked for.
        want: u64,
        /// Pages the kernel holds.
        got: u64,
        /// What was undone, one entry each.
        put_back: Vec<String>,
    },

    /// A write or mount failed; what the call changed was put back.
    #[error("{what} failed: {source}; put back: {}", put_back_list(put_back))]
    Apply {
        /// What was being done.
        what: String,
        /// What the kernel said.
        source: io::Error,
        /// What was undone, one entry each.
        put_back: Vec<String>,
    },

    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },

    /// A file holds something unexpected, or is missing where the kernel
    /// always has it.
    #[error("{} {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What it holds and what was expected.
        reason: String,
    },
}

impl HugepageError {
    /// The script's exit code for this error: 1 read/write/mount failure,
    /// 2 bad request, 3 not root, 4 unsupported page size, 5 not enough
    /// memory, 6 nested mount, 7 THP, 8 shortfall, 9 mount point taken,
    /// 10 no such node.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Apply { .. } | Self::Read { .. } | Self::Malformed { .. } => 1,
            Self::InvalidConfig { .. } => 2,
            Self::NotRoot { .. } => 3,
            Self::UnsupportedSize { .. } | Self::NoDefaultSize { .. } => 4,
            Self::NotEnoughMemory { .. } => 5,
            Self::NestedMount { .. } => 6,
            Self::ThpAlways { .. } => 7,
            Self::Shortfall { .. } => 8,
            Self::MountConflict { .. } => 9,
            Self::NoSuchNode { .. } => 10,
        }
    }
}

fn list_or_none<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items
            .iter()
            .map(T::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn put_back_list(put_back: &[String]) -> String {
    if put_back.is_empty() {
        "nothing".into()
    } else {
        put_back.join(", ")
    }
}

// ---- reading the tree ---------------------------------------------------------

fn global_dir(root: &Path) -> PathBuf {
    root.join("sys/kernel/mm/hugepages")
}

fn node_dir(root: &Path) -> PathBuf {
    root.join("sys/devices/system/node")
}

fn thp_dir(root: &Path) -> PathBuf {
    root.join("sys/kernel/mm/transparent_hugepage")
}

fn meminfo_path(root: &Path) -> PathBuf {
    root.join("proc/meminfo")
}

fn mountinfo_path(root: &Path) -> PathBuf {
    root.join("proc/self/mountinfo")
}

fn read_text(path: &Path) -> Result<String, HugepageError> {
    fs::read_to_string(path).map_err(|source| HugepageError::Read {
        path: path.to_owned(),
        source,
    })
}

fn read_count(path: &Path) -> Result<u64, HugepageError> {
    let text = read_text(path)?;
    let value: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    value.parse().map_err(|_| HugepageError::Malformed {
        path: path.to_owned(),
        reason: format!("holds '{value}', not a page count"),
    })
}

/// Parses a kernel list such as `0-3,8` (sysfs `cpulist`, `has_memory`);
/// `None` if malformed. An empty string is an empty list.
pub(crate) fn parse_kernel_list(text: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
            None => {
                let n = part.parse().ok()?;
                (n, n)
            }
        };
        for n in first..=last {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    Some(out)
}

/// The value of `key` (in kB) in a `/proc/meminfo` or node `meminfo` file.
pub(crate) fn meminfo_kib(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let line = match line.strip_prefix("Node ") {
            Some(rest) => rest.split_once(' ')?.1,
            None => line,
        };
        let (name, value) = line.split_once(':')?;
        (name.trim() == key).then(|| value.split_whitespace().next()?.parse().ok())?
    })
}

/// The numbers `n` of the subdirectories `<prefix><n><suffix>` of `dir`,
/// ascending (none if `dir` is missing).
fn numbered_dirs(dir: &Path, prefix: &str, suffix: &str) -> Vec<u64> {
    let mut numbers: Vec<u64> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            name.strip_prefix(prefix)?
                .strip_suffix(suffix)?
                .parse()
                .ok()
        })
        .collect();
    numbers.sort_unstable();
    numbers
}

fn supported_sizes(root: &Path) -> Vec<PageSize> {
    numbered_dirs(&global_dir(root), "hugepages-", "kB")
        .into_iter()
        .filter_map(PageSize::from_kib)
        .collect()
}

/// The NUMA nodes sysfs lists (`nodeN` directories), ascending.
pub(crate) fn nodes(root: &Path) -> Vec<u32> {
    numbered_dirs(&node_dir(root), "node", "")
        .into_iter()
        .filter_map(|n| u32::try_from(n).ok())
        .collect()
}

fn nodes_with_memory(root: &Path) -> Result<Vec<u32>, HugepageError> {
    let path = node_dir(root).join("has_memory");
    if !path.exists() {
        return Ok(nodes(root));
    }
    let text = read_text(&path)?;
    parse_kernel_list(&text).ok_or_else(|| HugepageError::Malformed {
        path,
        reason: format!("holds '{}', not a node list", text.trim()),
    })
}

fn default_size(root: &Path) -> Option<PageSize> {
    let text = fs::read_to_string(meminfo_path(root)).ok()?;
    PageSize::from_kib(meminfo_kib(&text, "Hugepagesize")?)
}

fn thp_mode(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let start = text.find('[')? + 1;
    let len = text[start..].find(']')?;
    Some(text[start..start + len].to_owned())
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone)]
struct MountEntry {
    path: PathBuf,
    fstype: String,
    options: String,
    fs_options: String,
}

impl MountEntry {
    /// The page size of a hugetlbfs mount (`pagesize=` or the default).
    fn page_size(&self, default: Option<PageSize>) -> Option<PageSize> {
        self.fs_options
            .split(',')
            .find_map(|opt| opt.strip_prefix("pagesize=")?.parse().ok())
            .or(default)
    }
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt as _;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split_whitespace().collect();
            let rest: Vec<&str> = after.split_whitespace().collect();
            if fields.len() < 6 || rest.is_empty() {
                return None;
            }
            Some(MountEntry {
                path: unescape_mount_path(fields[4]),
                fstype: rest[0].to_owned(),
                options: fields[5].to_owned(),
                fs_options: rest.get(2).copied().unwrap_or_default().to_owned(),
            })
        })
        .collect()
}

fn mounts(root: &Path) -> Result<Vec<MountEntry>, HugepageError> {
    Ok(parse_mountinfo(&read_text(&mountinfo_path(root))?))
}

/// The topmost mount at `path`.
fn mount_at<'a>(mounts: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    mounts.iter().rev().find(|m| m.path == path)
}

/// The mount `path` lies in (not one at `path` itself).
fn mount_containing<'a>(mounts: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    mounts
        .iter()
        .filter(|m| m.path != path && path.starts_with(&m.path))
        .max_by_key(|m| m.path.as_os_str().len())
}

/// `path` made absolute with symlinks resolved as far as it exists, like
/// `realpath -m`.
fn resolve(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(name) => {
                out.push(name);
                if let Ok(real) = fs::canonicalize(&out) {
                    out = real;
                }
            }
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

// ---- status -------------------------------------------------------------------

/// Hugepage state of a machine: what `setup-hugepages.sh --status --json`
/// prints, field for field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HugepageStatus {
    /// Page sizes the kernel offers, KiB, ascending.
    pub supported_sizes_kb: Vec<u64>,
    /// The kernel's default size (`Hugepagesize`), KiB.
    pub default_size_kb: Option<u64>,
    /// Each size machine-wide, then per node.
    pub pools: Vec<PoolStatus>,
    /// Every hugetlbfs mount, in mount order.
    pub mounts: Vec<MountStatus>,
    /// Transparent hugepage settings.
    pub thp: ThpStatus,
}

/// One pool's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PoolStatus {
    /// The node, or `None` for the machine-wide pool.
    pub node: Option<u32>,
    /// The page size.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub size: PageSize,
    /// The page size in KiB.
    pub size_kb: u64,
    /// Persistent pages (`nr_hugepages`).
    pub total: u64,
    /// Pages not in use (`free_hugepages`).
    pub free: u64,
    /// Pages promised to mappings but not yet faulted in
    /// (`resv_hugepages`); the kernel counts them machine-wide only, so
    /// `None` on a node.
    pub reserved: Option<u64>,
    /// Pages above `nr_hugepages` (`surplus_hugepages`).
    pub surplus: u64,
}

/// A hugetlbfs mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MountStatus {
    /// The mount point.
    pub path: String,
    /// Its page size.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub size: PageSize,
    /// Its page size in KiB.
    pub size_kb: u64,
    /// Per-mount options (`rw,relatime`).
    pub options: String,
    /// Filesystem options (`rw,pagesize=2M,mode=700`).
    pub fs_options: String,
}

/// Transparent hugepage settings (the chosen value of each file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ThpStatus {
    /// `enabled`: always, madvise or never.
    pub enabled: Option<String>,
    /// `defrag`: when the kernel compacts memory for THP.
    pub defrag: Option<String>,
}

/// Reads the pools, mounts and THP settings under `root`.
pub fn status(root: &Path) -> Result<HugepageStatus, HugepageError> {
    let sizes = supported_sizes(root);
    let nodes = nodes(root);
    let default = default_size(root);
    let mut pools = Vec::new();
    for &size in &sizes {
        let every = std::iter::once(None).chain(nodes.iter().map(|&n| Some(n)));
        for node in every {
            let pool = Pool { node, size };
            let dir = pool.dir(root);
            if node.is_some() && !dir.is_dir() {
                continue;
            }
            pools.push(PoolStatus {
                node,
                size,
                size_kb: size.kib(),
                total: read_count(&dir.join("nr_hugepages"))?,
                free: read_count(&dir.join("free_hugepages"))?,
                reserved: match node {
                    None => Some(read_count(&dir.join("resv_hugepages"))?),
                    Some(_) => None,
                },
                surplus: read_count(&dir.join("surplus_hugepages"))?,
            });
        }
    }
    let mounts = mounts(root)?
        .into_iter()
        .filter(|m| m.fstype == "hugetlbfs")
        .map(|m| {
            let size = m.page_size(default).unwrap_or(PageSize { kib: 0 });
            MountStatus {
                path: m.path.to_string_lossy().into_owned(),
                size,
                size_kb: size.kib(),
                options: m.options,
                fs_options: m.fs_options,
            }
        })
        .collect();
    Ok(HugepageStatus {
        supported_sizes_kb: sizes.iter().map(|s| s.kib()).collect(),
        default_size_kb: default.map(PageSize::kib),
        pools,
        mounts,
        thp: ThpStatus {
            enabled: thp_mode(&thp_dir(root).join("enabled")),
            defrag: thp_mode(&thp_dir(root).join("defrag")),
        },
    })
}

// ---- planning -----------------------------------------------------------------

/// Checks `request` against the machine under `root` and lists what it
/// needs. Changes nothing and needs no root. The checks run in the
/// script's order: page sizes, nodes and pools, mount points, free memory,
/// transparent hugepages.
pub fn plan(root: &Path, request: &HugepageRequest) -> Result<HugepagePlan, HugepageError> {
    if let Some(m) = request.mounts.iter().find(|m| !m.dir.is_absolute()) {
        return Err(HugepageError::InvalidConfig {
            reason: format!(
                "mount point {} for {} must be an absolute path",
                m.dir.display(),
                m.purpose
            ),
        });
    }
    let supported = supported_sizes(root);
    let check_size = |size: PageSize| {
        if supported.contains(&size) {
            Ok(())
        } else {
            Err(HugepageError::UnsupportedSize {
                size,
                supported: supported.clone(),
                dir: global_dir(root),
            })
        }
    };
    for reservation in &request.reservations {
        check_size(reservation.size)?;
    }
    let mut planner = Planner {
        root,
        plan: HugepagePlan {
            root: root.to_owned(),
            actions: Vec::new(),
            unchanged: Vec::new(),
            warnings: Vec::new(),
        },
        mounts: Vec::new(),
    };
    let mut planned_pools = Vec::new();
    for reservation in &request.reservations {
        planner.pools(reservation, request.exact, &mut planned_pools)?;
    }
    if !request.mounts.is_empty() {
        let dirs: Vec<PathBuf> = request.mounts.iter().map(|m| resolve(&m.dir)).collect();
        for (i, dir) in dirs.iter().enumerate() {
            if let Some(j) = dirs[..i].iter().position(|d| d == dir) {
                return Err(HugepageError::InvalidConfig {
                    reason: format!(
                        "{} and {} need different directories (both are {})",
                        request.mounts[j].purpose,
                        request.mounts[i].purpose,
                        dir.display()
                    ),
                });
            }
        }
        let kernel_default = default_size(root);
        let default = request.reservations.iter().map(|r| r.size).min();
        planner.mounts = mounts(root)?;
        for (m, dir) in request.mounts.iter().zip(dirs) {
            let size = m.size.or(default).or(kernel_default).ok_or_else(|| {
                HugepageError::NoDefaultSize {
                    meminfo: meminfo_path(root),
                }
            })?;
            check_size(size)?;
            planner.mount(dir, size, &m.purpose, kernel_default)?;
        }
    }
    planner.check_memory()?;
    planner.check_thp(request.allow_thp)?;
    let mut plan = planner.plan;
    // Pools first, then directories, then mounts, as the script does them.
    plan.actions.sort_by_key(|action| match action {
        Action::SetPages { .. } => 0,
        Action::CreateDir { .. } => 1,
        Action::Mount { .. } => 2,
    });
    Ok(plan)
}

struct Planner<'a> {
    root: &'a Path,
    plan: HugepagePlan,
    mounts: Vec<MountEntry>,
}

impl Planner<'_> {
    fn target_nodes(&self, selection: &Nodes) -> Result<Vec<Option<u32>>, HugepageError> {
        let present = nodes(self.root);
        let missing = |node: String| HugepageError::NoSuchNode {
            node,
            nodes: present.clone(),
            dir: node_dir(self.root),
        };
        match selection {
            Nodes::MachineWide => Ok(vec![None]),
            Nodes::All if present.is_empty() => Err(missing("all".into())),
            Nodes::All => Ok(nodes_with_memory(self.root)?
                .into_iter()
                .map(Some)
                .collect()),
            Nodes::List(list) => {
                let mut out = Vec::new();
                for &node in list {
                    if !node_dir(self.root).join(format!("node{node}")).is_dir() {
                        return Err(missing(node.to_string()));
                    }
                    if !out.contains(&Some(node)) {
                        out.push(Some(node));
                    }
                }
                Ok(out)
            }
        }
    }

    /// Plans one reservation; `planned` holds the pools planned so far
    /// (a pool asked for twice is an error).
    fn pools(
        &mut self,
        reservation: &Reservation,
        exact: bool,
        planned: &mut Vec<Pool>,
    ) -> Result<(), HugepageError> {
        let (size, want) = (reservation.size, reservation.pages);
        for node in self.target_nodes(&reservation.nodes)? {
            let pool = Pool { node, size };
            if planned.contains(&pool) {
                return Err(HugepageError::InvalidConfig {
                    reason: format!("{pool} asked for twice"),
                });
            }
            planned.push(pool);
            let dir = pool.dir(self.root);
            if !dir.is_dir() {
                return Err(HugepageError::Malformed {
                    path: dir,
                    reason: format!("is missing although {size} pages are supported"),
                });
            }
            let current = read_count(&dir.join("nr_hugepages"))?;
            if current == want {
                self.plan
                    .unchanged
                    .push(format!("{pool}: already {current}"));
            } else if current > want && !exact {
                self.plan.unchanged.push(format!(
                    "{pool}: already {current}, more than the {want} asked for; \
                     kept (exact mode would lower it)"
                ));
            } else {
                self.plan.actions.push(Action::SetPages {
                    pool,
                    from: current,
                    to: want,
                });
            }
        }
        Ok(())
    }

    fn mount(
        &mut self,
        path: PathBuf,
        size: PageSize,
        purpose: &str,
        default: Option<PageSize>,
    ) -> Result<(), HugepageError> {
        let nested = |path: &Path, purpose: &str, outer: &Path| HugepageError::NestedMount {
            path: path.to_owned(),
            purpose: purpose.to_owned(),
            outer: outer.to_owned(),
        };
        if let Some(outer) = mount_containing(&self.mounts, &path) {
            if outer.fstype == "hugetlbfs" {
                return Err(nested(&path, purpose, &outer.path));
            }
        }
        for action in &self.plan.actions {
            if let Action::Mount {
                path: planned,
                purpose: planned_for,
                ..
            } = action
            {
                if path.starts_with(planned) {
                    return Err(nested(&path, purpose, planned));
                }
                if planned.starts_with(&path) {
                    return Err(nested(planned, planned_for, &path));
                }
            }
        }
        let conflict = |reason: String| HugepageError::MountConflict {
            path: path.clone(),
            purpose: purpose.to_owned(),
            reason,
        };
        if let Some(existing) = mount_at(&self.mounts, &path) {
            let shown = path.display();
            if existing.fstype != "hugetlbfs" {
                return Err(conflict(format!(
                    "is already a mount point of {}: unmount it (umount {shown}) or choose \
                     another directory",
                    existing.fstype
                )));
            }
            let have = existing.page_size(default);
            if have != Some(size) {
                let have = have.map(|s| s.to_string()).unwrap_or_default();
                return Err(conflict(format!(
                    "is already a hugetlbfs mount with pagesize={have}, not {size}: unmount it \
                     (umount {shown}) or choose another directory"
                )));
            }
            self.plan.unchanged.push(format!(
                "{shown} for {purpose}: already hugetlbfs with pagesize={size}"
            ));
            return Ok(());
        }
        if path.symlink_metadata().is_ok() {
            if !path.is_dir() {
                return Err(conflict(
                    "exists and is not a directory: remove it or choose another directory".into(),
                ));
            }
        } else {
            self.plan
                .actions
                .push(Action::CreateDir { path: path.clone() });
        }
        self.plan.actions.push(Action::Mount {
            path,
            purpose: purpose.to_owned(),
            size,
        });
        Ok(())
    }

    /// Growth per node (in the order the pools were planned) against the
    /// memory free there.
    fn check_memory(&self) -> Result<(), HugepageError> {
        let mut seen: Vec<Option<u32>> = Vec::new();
        for action in &self.plan.actions {
            let Action::SetPages { pool, .. } = action else {
                continue;
            };
            if seen.contains(&pool.node) {
                continue;
            }
            seen.push(pool.node);
            let mut need_kib = 0;
            let mut growth = Vec::new();
            for action in &self.plan.actions {
                if let Action::SetPages { pool: p, from, to } = action {
                    if p.node == pool.node && to > from {
                        need_kib += (to - from) * p.size.kib();
                        growth.push(format!("{} pages +{}", p.size, to - from));
                    }
                }
            }
            if need_kib == 0 {
                continue;
            }
            let (available_kib, from) = available_memory(self.root, pool.node)?;
            if need_kib > available_kib {
                return Err(HugepageError::NotEnoughMemory {
                    node: pool.node,
                    need_kib,
                    available_kib,
                    growth,
                    from,
                });
            }
        }
        Ok(())
    }

    fn check_thp(&mut self, allow: bool) -> Result<(), HugepageError> {
        let grows = self
            .plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::SetPages { from, to, .. } if to > from));
        let path = thp_dir(self.root).join("enabled");
        if !grows || thp_mode(&path).as_deref() != Some("always") {
            return Ok(());
        }
        if !allow {
            return Err(HugepageError::ThpAlways { path });
        }
        self.plan.warnings.push(
            "transparent hugepages are enabled=always: growing the pools anyway (allowed)".into(),
        );
        Ok(())
    }
}

/// Memory a pool on `node` (`None`: machine-wide) can grow into, KiB, and
/// where the figure comes from. Nodes have no `MemAvailable`; free plus
/// reclaimable page cache and slab stands in for it.
fn available_memory(root: &Path, node: Option<u32>) -> Result<(u64, String), HugepageError> {
    let (path, keys): (PathBuf, &[&str]) = match node {
        None => (meminfo_path(root), &["MemAvailable"]),
        Some(n) => (
            node_dir(root).join(format!("node{n}/meminfo")),
            &["MemFree", "Active(file)", "Inactive(file)", "SReclaimable"],
        ),
    };
    let text = read_text(&path)?;
    let mut total = 0;
    for key in keys {
        total += meminfo_kib(&text, key).ok_or_else(|| HugepageError::Malformed {
            path: path.clone(),
            reason: format!("has no {key}"),
        })?;
    }
    let source = match node {
        None => format!("MemAvailable in {}", path.display()),
        Some(_) => format!("MemFree + file pages + SReclaimable in {}", path.display()),
    };
    Ok((total, source))
}

// ---- applying -----------------------------------------------------------------

/// Fails unless running as root.
fn ensure_root() -> Result<(), HugepageError> {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        Ok(())
    } else {
        Err(HugepageError::NotRoot { uid: uid.as_raw() })
    }
}

/// One change made, and how to take it back.
enum Undo {
    Pool {
        path: PathBuf,
        value: u64,
        pool: Pool,
    },
    Mount(PathBuf),
    Dir(PathBuf),
}

/// Takes back `undo`, newest first, and says what it did.
fn put_back(undo: Vec<Undo>) -> Vec<String> {
    undo.into_iter()
        .rev()
        .map(|step| match step {
            Undo::Pool { path, value, pool } => match fs::write(&path, format!("{value}\n")) {
                Ok(()) => format!("{pool} to {value}"),
                Err(_) => format!("could not put {pool} back to {value}"),
            },
            Undo::Mount(path) => match nix::mount::umount(&path) {
                Ok(()) => format!("unmounted {}", path.display()),
                Err(_) => format!("could not unmount {}", path.display()),
            },
            Undo::Dir(path) => match fs::remove_dir(&path) {
                Ok(()) => format!("removed {}", path.display()),
                Err(_) => format!("could not remove {}", path.display()),
            },
        })
        .collect()
}

/// Carries out `plan`, all or nothing: on a shortfall or a failure, what
/// this call changed is put back before the error returns. Actions already
/// in effect are skipped (a pool that has reached its count, an existing
/// directory, an identical mount), so applying a plan twice is harmless.
/// Needs root.
pub fn apply(plan: &HugepagePlan) -> Result<Applied, HugepageError> {
    ensure_root()?;
    let mut undo = Vec::new();
    let mut done = Vec::new();
    for action in &plan.actions {
        match carry_out(&plan.root, action, &mut undo) {
            Ok(true) => done.push(action.clone()),
            Ok(false) => {}
            Err(fail) => return Err(fail.into_error(put_back(undo))),
        }
    }
    Ok(Applied { done })
}

/// Checks root, plans `request` and applies it: the script's default run.
pub fn setup(root: &Path, request: &HugepageRequest) -> Result<Applied, HugepageError> {
    ensure_root()?;
    apply(&plan(root, request)?)
}

/// Why an action failed, before the put-back list is known.
enum Failure {
    Shortfall { pool: Pool, want: u64, got: u64 },
    Io { what: String, source: io::Error },
}

impl From<HugepageError> for Failure {
    /// A read that fails half-way through applying is a failed step like
    /// any other: what came before it is put back.
    fn from(error: HugepageError) -> Self {
        let what = match &error {
            HugepageError::Read { path, .. } | HugepageError::Malformed { path, .. } => {
                format!("read {}", path.display())
            }
            other => other.to_string(),
        };
        let source = match error {
            HugepageError::Read { source, .. } => source,
            other => io::Error::other(other.to_string()),
        };
        Self::Io { what, source }
    }
}

impl Failure {
    fn into_error(self, put_back: Vec<String>) -> HugepageError {
        match self {
            Self::Shortfall { pool, want, got } => HugepageError::Shortfall {
                pool,
                want,
                got,
                put_back,
            },
            Self::Io { what, source } => HugepageError::Apply {
                what,
                source,
                put_back,
            },
        }
    }
}

/// Does one action unless already in effect; `Ok(false)` if it was.
fn carry_out(root: &Path, action: &Action, undo: &mut Vec<Undo>) -> Result<bool, Failure> {
    match action {
        Action::SetPages { pool, from, to } => {
            let path = pool.dir(root).join("nr_hugepages");
            let current = read_count(&path)?;
            let grows = to > from;
            if current == *to || (grows && current > *to) {
                return Ok(false);
            }
            undo.push(Undo::Pool {
                path: path.clone(),
                value: current,
                pool: *pool,
            });
            fs::write(&path, format!("{to}\n")).map_err(|source| Failure::Io {
                what: format!("set {pool} to {to}"),
                source,
            })?;
            let got = read_count(&path)?;
            if got != *to {
                return Err(Failure::Shortfall {
                    pool: *pool,
                    want: *to,
                    got,
                });
            }
        }
        Action::CreateDir { path } => {
            if path.is_dir() {
                return Ok(false);
            }
            make_dirs(path, undo).map_err(|source| Failure::Io {
                what: format!("create directory {}", path.display()),
                source,
            })?;
        }
        Action::Mount {
            path,
            purpose: _,
            size,
        } => {
            let existing = mounts(root)?;
            if let Some(m) = mount_at(&existing, path) {
                if m.fstype == "hugetlbfs" && m.page_size(default_size(root)) == Some(*size) {
                    return Ok(false);
                }
            }
            nix::mount::mount(
                Some("nodev"),
                path.as_path(),
                Some("hugetlbfs"),
                MsFlags::empty(),
                Some(mount_options(*size).as_str()),
            )
            .map_err(|errno| Failure::Io {
                what: format!("mount hugetlbfs on {}", path.display()),
                source: errno.into(),
            })?;
            undo.push(Undo::Mount(path.clone()));
        }
    }
    Ok(true)
}

/// Creates `path` (mode 0700) and its missing parents (0755), recording
/// each for undo.
fn make_dirs(path: &Path, undo: &mut Vec<Undo>) -> io::Result<()> {
    let missing: Vec<&Path> = path
        .ancestors()
        .take_while(|p| p.symlink_metadata().is_err())
        .collect();
    for dir in missing.into_iter().rev() {
        let mode = if dir == path { DIR_MODE } else { 0o755 };
        fs::DirBuilder::new().mode(mode).create(dir)?;
        undo.push(Undo::Dir(dir.to_owned()));
        // The umask may have narrowed the mode; the final one must be exact.
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

// ---- rolling back ---------------------------------------------------------------

/// The count of every pool at one moment, to put back later whoever
/// changed them since: what a confirm-or-rollback change records first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSnapshot {
    root: PathBuf,
    counts: Vec<(Pool, u64)>,
}

impl PoolSnapshot {
    /// Records the counts of every pool under `root`.
    pub fn take(root: &Path) -> Result<Self, HugepageError> {
        let counts = status(root)?
            .pools
            .into_iter()
            .map(|p| {
                let pool = Pool {
                    node: p.node,
                    size: p.size,
                };
                (pool, p.total)
            })
            .collect();
        Ok(Self {
            root: root.to_owned(),
            counts,
        })
    }

    /// The recorded count of `pool`.
    pub fn count(&self, pool: Pool) -> Option<u64> {
        self.counts
            .iter()
            .find(|(p, _)| *p == pool)
            .map(|(_, n)| *n)
    }

    /// Puts back every pool whose count differs now: the per-node pools
    /// first, then a machine-wide one that still differs. Says what it put
    /// back, like the put-back list of an error.
    pub fn restore(&self) -> Result<Vec<String>, HugepageError> {
        let mut done = Vec::new();
        let per_node = self.counts.iter().filter(|(p, _)| p.node.is_some());
        let machine_wide = self.counts.iter().filter(|(p, _)| p.node.is_none());
        for (pool, count) in per_node.chain(machine_wide) {
            let path = pool.dir(&self.root).join("nr_hugepages");
            if read_count(&path)? == *count {
                continue;
            }
            if let Err(source) = fs::write(&path, format!("{count}\n")) {
                return Err(HugepageError::Apply {
                    what: format!("put {pool} back to {count}"),
                    source,
                    put_back: done,
                });
            }
            done.push(format!("{pool} to {count}"));
        }
        Ok(done)
    }
}

// ---- capturing ----------------------------------------------------------------

/// Copies the files this module (and [`crate::hostinfo`]) read under
/// `root` into `dest`, as plain files at the same relative paths: a
/// snapshot of a machine's hugepage state to attach to a report, or to plan
/// against with `dest` as the root. Files that cannot be read are left out.
pub fn capture(root: &Path, dest: &Path) -> io::Result<()> {
    let pool_files = [
        "nr_hugepages",
        "free_hugepages",
        "resv_hugepages",
        "surplus_hugepages",
        "nr_overcommit_hugepages",
    ];
    let mut files: Vec<PathBuf> = vec![
        "proc/meminfo".into(),
        "proc/self/mountinfo".into(),
        "sys/kernel/mm/transparent_hugepage/enabled".into(),
        "sys/kernel/mm/transparent_hugepage/defrag".into(),
    ];
    for list in ["online", "possible", "has_memory", "has_cpu"] {
        files.push(Path::new("sys/devices/system/node").join(list));
    }
    let mut pool_dirs: Vec<PathBuf> = supported_sizes(root)
        .into_iter()
        .map(|size| {
            Path::new("sys/kernel/mm/hugepages").join(format!("hugepages-{}kB", size.kib()))
        })
        .collect();
    for node in nodes(root) {
        let node_rel = Path::new("sys/devices/system/node").join(format!("node{node}"));
        files.push(node_rel.join("meminfo"));
        files.push(node_rel.join("cpulist"));
        for entry in fs::read_dir(root.join(&node_rel).join("hugepages"))
            .into_iter()
            .flatten()
            .flatten()
        {
            pool_dirs.push(node_rel.join("hugepages").join(entry.file_name()));
        }
    }
    for dir in pool_dirs {
        fs::create_dir_all(dest.join(&dir))?;
        files.extend(pool_files.iter().map(|f| dir.join(f)));
    }
    for rel in files {
        if let Ok(content) = fs::read(root.join(&rel)) {
            let target = dest.join(&rel);
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::write(target, content)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_parse_and_print() {
        for (text, kib) in [
            ("2M", 2048),
            ("2mb", 2048),
            ("2048kB", 2048),
            ("1G", 1 << 20),
            ("1GB", 1 << 20),
            ("64K", 64),
        ] {
            assert_eq!(text.parse::<PageSize>().unwrap().kib(), kib, "{text}");
        }
        for bad in ["", "M", "2", "2X", "0M", "-2M", "2 M"] {
            assert!(bad.parse::<PageSize>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(PageSize::SIZE_1G.to_string(), "1G");
        assert_eq!(
            PageSize::from_kib(1024 * 1024 * 16).unwrap().to_string(),
            "16G"
        );
        assert_eq!(PageSize::from_kib(32 * 1024).unwrap().to_string(), "32M");
        assert_eq!(PageSize::from_kib(64).unwrap().to_string(), "64K");
        // The kernel shows a 1 GiB mount as pagesize=1024M.
        assert_eq!("1024M".parse::<PageSize>().unwrap(), PageSize::SIZE_1G);
    }

    #[test]
    fn node_selections() {
        assert_eq!("all".parse::<Nodes>().unwrap(), Nodes::All);
        assert_eq!(
            "0-2,5".parse::<Nodes>().unwrap(),
            Nodes::List(vec![0, 1, 2, 5])
        );
        assert!("0,x".parse::<Nodes>().is_err());
        let config: HugepageConfig =
            toml::from_str("pages = { \"2M\" = 1024, \"1G\" = 2 }\nnodes = [0, 1]").unwrap();
        assert_eq!(config.nodes, Nodes::List(vec![0, 1]));
        assert_eq!(config.pages[&PageSize::SIZE_1G], 2);
        assert!(config.mount, "mounting is the default");
        let all: HugepageConfig = toml::from_str("nodes = \"all\"").unwrap();
        assert_eq!(all.nodes, Nodes::All);
        assert!(toml::from_str::<HugepageConfig>("nodes = \"some\"").is_err());
        assert!(toml::from_str::<HugepageConfig>("page = {}").is_err());
    }

    #[test]
    fn meminfo_values() {
        let proc = "MemTotal:       24684084 kB\nMemAvailable:   23196280 kB\nHugepagesize:       2048 kB\n";
        assert_eq!(meminfo_kib(proc, "MemAvailable"), Some(23_196_280));
        assert_eq!(meminfo_kib(proc, "Hugepagesize"), Some(2048));
        assert_eq!(meminfo_kib(proc, "MemFree"), None);
        let node = "Node 0 MemFree:         6532980 kB\nNode 0 Active(file):     673532 kB\n";
        assert_eq!(meminfo_kib(node, "Active(file)"), Some(673_532));
        assert_eq!(meminfo_kib(node, "MemFree"), Some(6_532_980));
    }

    #[test]
    fn mountinfo_lines() {
        let text = "\
43 24 0:39 / /dev/hugepages rw,relatime - hugetlbfs nodev rw,pagesize=2M
56 27 0:42 / /tmp/a\\040b rw,relatime shared:5 - hugetlbfs nodev rw,mode=700,pagesize=1024M
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24684084k
";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[1].path, Path::new("/tmp/a b"));
        assert_eq!(mounts[1].options, "rw,relatime");
        assert_eq!(mounts[1].page_size(None), Some(PageSize::SIZE_1G));
        assert_eq!(mounts[2].fstype, "tmpfs");
        let inside = mount_containing(&mounts, Path::new("/dev/hugepages/x")).unwrap();
        assert_eq!(inside.path, Path::new("/dev/hugepages"));
        assert!(mount_containing(&mounts, Path::new("/dev/hugepages")).is_none());
        assert!(mount_containing(&mounts, Path::new("/dev/hugepages-2M")).is_none());
        assert_eq!(unescape_mount_path("a\\134b\\011"), Path::new("a\\b\t"));
    }

    #[test]
    fn kernel_lists() {
        assert_eq!(parse_kernel_list("0-3,8\n"), Some(vec![0, 1, 2, 3, 8]));
        assert_eq!(parse_kernel_list(""), Some(vec![]));
        assert_eq!(parse_kernel_list("1,1"), Some(vec![1]));
        assert_eq!(parse_kernel_list("a"), None);
    }

    #[test]
    fn paths_resolve_like_realpath_m() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        std::os::unix::fs::symlink(&real, real.join("link")).unwrap();
        assert_eq!(resolve(&real.join("link/x/../y/")), real.join("y"));
        assert_eq!(resolve(Path::new("/a/./b/../c")), Path::new("/a/c"));
    }

    #[test]
    fn errors_say_what_to_do() {
        let error = HugepageError::Shortfall {
            pool: Pool {
                node: Some(0),
                size: PageSize::SIZE_1G,
            },
            want: 2,
            got: 1,
            put_back: vec!["1G pages on node 0 to 0".into()],
        };
        assert_eq!(error.exit_code(), 8);
        assert_eq!(
            error.to_string(),
            "asked the kernel for 2 1G pages on node 0 and it has 1 (not enough contiguous free \
             memory); put back: 1G pages on node 0 to 0; ask for fewer pages, free some memory, \
             or reserve them at boot (hugepagesz=1G hugepages=2 on the kernel command line)"
        );
        let memory = HugepageError::NotEnoughMemory {
            node: None,
            need_kib: 2049,
            available_kib: 1023,
            growth: vec!["2M pages +1".into()],
            from: "MemAvailable in /proc/meminfo".into(),
        };
        assert!(memory
            .to_string()
            .starts_with("not enough free memory: the request needs 3 MiB more (2M pages +1), only 0 MiB is free"));
    }
}
