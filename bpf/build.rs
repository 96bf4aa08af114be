//! Compiles the C eBPF programs in `progs/` with clang into `OUT_DIR`.
//!
//! The programs are C on purpose: Rust eBPF needs a nightly toolchain and
//! bpf-linker, which the build machines do not have.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const PROGS: &[&str] = &[
    "own",
    "tap_guard",
    "xdp_bifurcate",
    "xdp_pinned",
    "nic_block",
];
const HEADERS: &[&str] = &["common.h", "own_map.h", "xdp_bifurcate.c"];

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let progs = manifest.join("progs");
    let clang = env::var_os("CLANG").unwrap_or_else(|| "clang".into());
    println!("cargo:rerun-if-env-changed=CLANG");
    for h in HEADERS {
        println!("cargo:rerun-if-changed={}", progs.join(h).display());
    }
    for name in PROGS {
        let src = progs.join(format!("{name}.c"));
        let obj = out.join(format!("{name}.o"));
        println!("cargo:rerun-if-changed={}", src.display());
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
            .arg("-I/usr/include/x86_64-linux-gnu")
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!(
                "gazelle-bpf: clang failed ({s}) compiling {}",
                src.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "gazelle-bpf: `{}` not found: the eBPF programs are C compiled with clang; \
                 install it (scripts/install-deps.sh installs clang and libbpf-dev) \
                 or point the CLANG environment variable at it",
                clang.to_string_lossy()
            ),
            Err(e) => panic!("gazelle-bpf: cannot run `{}`: {e}", clang.to_string_lossy()),
        }
    }
}
