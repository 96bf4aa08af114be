#!/usr/bin/env bash
# Soaks the lstack echo server: lstack-echo on a DPDK net_af_packet port
# (a veth into a peer namespace), loaded from the peer with 200 TCP
# connections that stream seeded pseudo-random bytes and check every echoed
# byte, plus numbered, checksummed UDP probes, for 10 minutes. Prints
# progress every 10 s and a report: bytes moved and corrupted, stalls, UDP
# losses, every drop counter of lstack and of the peer's kernel, CPU used.
# Exits non-zero on a corrupted byte, a stall over --max-stall or a broken
# connection.
# Usage: sudo scripts/soak.sh [--quick] [--duration S] [--connections N] [--json].
# Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
echo "==> building (release)" >&2
cargo build --release -p lstack -p lstack-bench >&2
exec ./target/release/lstack-soak "$@"
