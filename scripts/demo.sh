#!/usr/bin/env bash
# Starts the lstack echo server on a demo topology: a network namespace as
# the peer host, a veth pair whose end the stack drives through DPDK's
# net_af_packet, hugepages reserved. Prints how to reach it; Ctrl-C stops it
# and removes the namespace. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
echo "==> building (release)"
cargo build --release --bins -p lstack -p netns-testbed
exec ./target/release/lstack-demo "$@"
