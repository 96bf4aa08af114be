//! Where the daemons' control sockets live.
//!
//! All sockets are in one run directory (`/run/gazelle`, or
//! `$GAZELLE_RUN_DIR`), named with gazelle's `unix_prefix` so that several
//! independent deployments can share a machine:
//! `<run_dir>/<unix_prefix>lstack-<ip>.sock` for each lstack process (found by
//! the address `gazellectl lstack show <ip>` names) and
//! `<run_dir>/<unix_prefix>ltran.sock` for ltran.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

/// Default run directory.
pub const DEFAULT_RUN_DIR: &str = "/run/gazelle";
/// Environment variable that overrides [`DEFAULT_RUN_DIR`].
pub const RUN_DIR_ENV: &str = "GAZELLE_RUN_DIR";

/// The run directory: `$GAZELLE_RUN_DIR` or [`DEFAULT_RUN_DIR`].
pub fn run_dir() -> PathBuf {
    std::env::var_os(RUN_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_RUN_DIR), PathBuf::from)
}

/// The control socket of the lstack process whose address is `ip`.
pub fn lstack_socket(run_dir: &Path, unix_prefix: &str, ip: IpAddr) -> PathBuf {
    run_dir.join(format!("{unix_prefix}lstack-{ip}.sock"))
}

/// The control socket of ltran.
pub fn ltran_socket(run_dir: &Path, unix_prefix: &str) -> PathBuf {
    run_dir.join(format!("{unix_prefix}ltran.sock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_prefix_and_address() {
        let d = Path::new("/run/gazelle");
        assert_eq!(
            lstack_socket(d, "a_", "192.168.1.10".parse().unwrap()),
            Path::new("/run/gazelle/a_lstack-192.168.1.10.sock")
        );
        assert_eq!(
            lstack_socket(d, "", "fd00::2".parse().unwrap()),
            Path::new("/run/gazelle/lstack-fd00::2.sock")
        );
        assert_eq!(ltran_socket(d, "x"), Path::new("/run/gazelle/xltran.sock"));
    }
}
