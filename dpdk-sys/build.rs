//! Binds the system DPDK: finds it with pkg-config, compiles the C shim with
//! DPDK's own CFLAGS (they carry `-march`, without which `rte_memcpy.h` does not
//! inline) and runs bindgen over a narrow allowlist.

use std::{env, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-changed=shim/shim.h");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let dpdk = pkg_config::Config::new()
        .atleast_version("22.11")
        .probe("libdpdk")
        .unwrap_or_else(|e| {
            panic!(
                "the system DPDK was not found through pkg-config ({e}); \
                 install it with `apt-get install dpdk-dev libdpdk-dev pkg-config`"
            )
        });

    // pkg-config's --cflags also carries `-include rte_config.h` and `-march=...`,
    // which `probe` does not expose: ask for the raw flags.
    let cflags = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .expect("running pkg-config --cflags libdpdk");
    let cflags = String::from_utf8(cflags.stdout).expect("pkg-config output is UTF-8");
    let cflags: Vec<&str> = cflags.split_whitespace().collect();

    let mut build = cc::Build::new();
    build.file("shim/shim.c").opt_level(3).warnings(true);
    let mut i = 0;
    while i < cflags.len() {
        // `-include file` is two words.
        if cflags[i] == "-include" && i + 1 < cflags.len() {
            build.flag("-include").flag(cflags[i + 1]);
            i += 2;
            continue;
        }
        build.flag(cflags[i]);
        i += 1;
    }
    build.compile("dpdk_shim");

    let mut clang_args: Vec<String> = cflags.iter().map(|s| s.to_string()).collect();
    clang_args.extend(
        dpdk.include_paths
            .iter()
            .map(|p| format!("-I{}", p.display())),
    );

    let bindings = bindgen::Builder::default()
        .header("shim/shim.h")
        .clang_args(&clang_args)
        .allowlist_function("shim_.*")
        .allowlist_function("rte_eal_init|rte_eal_cleanup|rte_eal_process_type|rte_strerror")
        .allowlist_function("rte_eth_dev_(configure|start|stop|close|info_get|count_avail|socket_id|get_name_by_port|get_port_by_name|set_mtu|is_valid_port|set_link_up|set_link_down|mac_addr_add|default_mac_addr_set)")
        .allowlist_function("rte_eth_(rx|tx)_queue_setup|rte_eth_macaddr_get|rte_eth_link_get_nowait|rte_eth_stats_get|rte_eth_stats_reset|rte_eth_promiscuous_(enable|disable)|rte_eth_allmulticast_enable|rte_eth_find_next_owned_by|rte_eth_dev_adjust_nb_rx_tx_desc")
        .allowlist_function("rte_pktmbuf_pool_create|rte_pktmbuf_pool_create_by_ops|rte_mempool_(free|lookup|avail_count|in_use_count)")
        .allowlist_function("rte_ring_(create|free|lookup)")
        .allowlist_function("rte_lcore_count|rte_socket_id|rte_log_set_global_level|rte_thread_set_affinity")
        .allowlist_function("rte_eth_dev_rx_intr_(enable|disable|ctl_q_get_fd)")
        .allowlist_type("rte_eth_conf|rte_eth_dev_info|rte_eth_stats|rte_ether_addr|rte_eth_link|rte_eth_rxconf|rte_eth_txconf|rte_proc_type_t")
        .allowlist_var("RTE_ETHER_ADDR_LEN|RTE_MAX_ETHPORTS|RTE_ETH_NAME_MAX_LEN|RING_F_.*|RTE_MBUF_DEFAULT_BUF_SIZE|RTE_PKTMBUF_HEADROOM|RTE_ETH_LINK_.*|RTE_MEMPOOL_CACHE_MAX_SIZE|SOCKET_ID_ANY|RTE_ETH_MQ_RX_RSS|RTE_LOG_.*")
        .opaque_type("rte_mbuf|rte_mempool|rte_ring")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen failed to generate DPDK bindings");

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("writing DPDK bindings");
}
