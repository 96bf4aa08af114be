#!/usr/bin/env bash
# Installs the Debian packages that building and testing lstack need.
# Idempotent: does nothing (and needs no network) when all are present.
set -euo pipefail

PACKAGES=(
  build-essential pkg-config clang libclang-dev   # C shim + bindgen
  libbpf-dev                                      # bpf_helpers.h for gazelle-bpf's C eBPF programs
  dpdk dpdk-dev libdpdk-dev                       # DPDK 22.11 runtime, headers, dpdk-testpmd
  iproute2 ethtool iputils-ping netcat-openbsd    # test topologies and demo clients
  dropbear-bin openssh-client tcpdump             # the kernel path's proofs: SSH on the kernel, captures in the peer
  redis-server redis-tools nginx-light curl wrk iperf3 python3  # real applications under LD_PRELOAD
  memcached libmemcached-tools haproxy wget postgresql  # the compatibility matrix (preload/tests/matrix.rs; memcslap)
  shellcheck                                      # test.sh lints our shell scripts
  python3-venv                                    # webui's contract test installs schemathesis (PyPI) in a venv
  chromium                                        # webui's browser test (driven by playwright-core from npm)
)
# Node.js and npm run the browser test's Playwright driver. A machine that
# already has them (Debian's or NodeSource's) keeps its own: Debian's npm
# package conflicts with NodeSource's nodejs.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  PACKAGES+=(nodejs npm)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $EUID -ne 0 ]]; then
    echo "install-deps: missing packages: ${missing[*]}; run as root (sudo) to install them" >&2
    exit 1
  fi
  echo "==> installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "install-deps: no Rust toolchain (cargo) found: install rustup (https://rustup.rs) first;" \
       "rust-toolchain.toml selects the version" >&2
  exit 1
fi
