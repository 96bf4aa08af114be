//! What DPDK EAL arguments (`dpdk_args`, `forward_kit_args`) already decide.

/// Whether `args` choose the PCI devices the EAL probes: an allow or block
/// list (`-a X`, `-aX`, `--allow X`, `--allow=X`, the same for `-b` and
/// `--block`) or `--no-pci`. Without one, the EAL probes every device bound
/// to a DPDK driver, so a daemon should add its own list.
pub fn chooses_devices<S: AsRef<str>>(args: &[S]) -> bool {
    args.iter().map(AsRef::as_ref).any(|a| {
        a == "--no-pci"
            || ["-a", "-b", "--allow", "--block"].iter().any(|opt| {
                a.strip_prefix(opt).is_some_and(|rest| {
                    rest.is_empty() || !opt.starts_with("--") || rest.starts_with('=')
                })
            })
    })
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::chooses_devices;

    #[rstest]
    #[case(&["-a", "0000:00:04.0"], true)]
    #[case(&["-a0000:00:04.0"], true)]
    #[case(&["--allow", "0000:00:04.0"], true)]
    #[case(&["--allow=0000:00:04.0"], true)]
    #[case(&["-b", "0000:00:03.0"], true)]
    #[case(&["--block=0000:00:03.0"], true)]
    #[case(&["-l", "0", "--no-pci"], true)]
    #[case(&["-l", "0,1", "--socket-mem", "512"], false)]
    #[case(&["--vdev=net_af_packet0,iface=eth1"], false)]
    // Long options that merely start like the short ones.
    #[case(&["--allowed"], false)]
    #[case(&["--base-virtaddr", "0x100000000"], false)]
    #[case(&[], false)]
    fn allow_block_and_no_pci_choose_devices(#[case] args: &[&str], #[case] chosen: bool) {
        assert_eq!(chooses_devices(args), chosen, "{args:?}");
    }
}
