#!/usr/bin/env bash
# Benchmarks lstack against the Linux kernel stack in one run and prints them
# side by side with ratios: redis-benchmark SET/GET (-c 50, -P 1 and -P 16),
# TCP request/response latency p50/p99 (one connection, 64 B) and bulk TCP
# throughput both ways, with the same unmodified servers on both stacks.
# Usage: sudo scripts/bench.sh [--quick] [--json]. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
echo "==> building (release)" >&2
cargo build --release -p lstack-preload -p lstack-bench >&2
exec ./target/release/lstack-bench "$@"
