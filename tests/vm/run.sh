#!/usr/bin/env bash
# The VM test: builds the image if an input changed (scripts/build-image.sh
# skips mkosi otherwise), boots it in QEMU and checks it from outside
# (tests/vm/harness.py). Prints the build time and the boot-to-ready time.
#   tests/vm/run.sh            build if needed, boot, check, power off
#   tests/vm/run.sh --run      build if needed, boot and keep it running
#   tests/vm/run.sh --no-build [harness options]   use the image as it is
# Other options go to the harness (--accel kvm|tcg, --mem, --boot-timeout).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

if [[ $EUID -ne 0 ]]; then
  echo "vm: run as root (sudo): building the image and the test network need it" >&2
  exit 1
fi

build=1 build_args=()
harness_args=()
for a in "$@"; do
  case $a in
    --no-build) build=0 ;;
    --no-cargo) build_args+=(--no-cargo) ;;
    *) harness_args+=("$a") ;;
  esac
done

# What the harness itself runs on the host.
missing=()
for p in qemu-system-x86 qemu-utils ovmf openssh-client iproute2 redis-tools python3 chromium; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "vm: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

t0=$SECONDS
if ((build)); then
  "$REPO/scripts/build-image.sh" "${build_args[@]}"
fi
build_s=$((SECONDS - t0))

rc=0
python3 "$REPO/tests/vm/harness.py" "${harness_args[@]}" || rc=$?
echo "vm: image build (or cache check) ${build_s} s, total $((SECONDS - t0)) s"
exit "$rc"
