#!/usr/bin/env bash
# Runs every test of the project: formatting and lints, unit tests, the
# integration tests on real DPDK ports against real kernel peers (root,
# hugepages, network namespaces), a short fuzzing run, and the appliance
# image booted in QEMU and checked from outside (tests/vm).
# Usage: sudo scripts/test.sh   (CI runs exactly this)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $EUID -ne 0 ]]; then
  echo "test.sh: the integration tests need root (network namespaces, hugepages, raw sockets): run with sudo" >&2
  exit 1
fi
scripts/install-deps.sh

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> shellcheck (warnings and errors)"
shellcheck -S warning scripts/*.sh tests/vm/run.sh .ci/run image/mkosi.postinst.chroot
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --release -- -D warnings
echo "==> cargo build (release: liblstack.so and the tools the tests run)"
cargo build --workspace --release
echo "==> cargo test (release: the stack's numbers are only meaningful optimised)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --release -- --nocapture 2>&1 | tee "$log"
passed=$(awk '/^test result:/ {s += $4} END {print s + 0}' "$log")
failed=$(awk '/^test result:/ {s += $6} END {print s + 0}' "$log")
if [[ -x scripts/fuzz.sh ]]; then
  echo "==> fuzz smoke run"
  scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
fi
echo "==> the appliance image in QEMU (tests/vm: build the image, boot it, check it from outside)"
# The binaries were just built; the image build reuses them (and skips mkosi
# when no input changed). KVM when it boots a guest here, TCG otherwise.
vmlog=$(mktemp)
trap 'rm -f "$log" "$vmlog"' EXIT
tests/vm/run.sh --no-cargo 2>&1 | tee "$vmlog"
vm_passed=$(sed -n 's/^vm: \([0-9]*\) passed, \([0-9]*\) failed.*/\1/p' "$vmlog" | tail -1)
vm_failed=$(sed -n 's/^vm: \([0-9]*\) passed, \([0-9]*\) failed.*/\2/p' "$vmlog" | tail -1)
if [[ -z $vm_passed ]]; then
  echo "test.sh: the VM test printed no result line" >&2
  exit 1
fi
passed=$((passed + vm_passed))
failed=$((failed + vm_failed))
echo "==> all tests passed"
echo "tests: ${passed} passed, ${failed} failed"
