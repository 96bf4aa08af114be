#!/usr/bin/env bash
# Builds the bootable appliance image (image/mkosi.conf) on a Debian 12 host:
#   1. installs what the build needs (mkosi 24 and systemd-boot from
#      bookworm-backports, added from the host's own mirror if absent);
#   2. builds our binaries (cargo build --release --workspace);
#   3. stages them, the hugepages script and root's SSH key into a generated
#      extra tree, and the security/updates suites into a generated
#      package-manager tree (both read from the host's apt sources);
#   4. runs mkosi, with its incremental cache; when no input changed since the
#      last build the mkosi run is skipped altogether.
# Output: build/image/gazelle-appliance.raw (GPT, UEFI, systemd-boot).
set -euo pipefail
shopt -s inherit_errexit

readonly PROG=build-image
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO

usage() {
  cat <<'EOF'
Usage: scripts/build-image.sh [--force] [--no-cargo] [--out DIR]

Builds build/image/gazelle-appliance.raw, a Debian bookworm UEFI disk image
with ltran, the appliance daemon, the web API, liblstack.so and gazellectl (each binary
that exists in the workspace; the missing ones are named and skipped).
Run as root on Debian 12.

  --force      run mkosi even when no input changed since the last build
  --no-cargo   do not run cargo; stage the binaries already built
  --out DIR    build directory (default: build/image in the repository)

Environment
  APPLIANCE_SSH_KEY   an SSH public key file to install as root's
                      authorized_keys. Without it a throwaway key pair is made
                      once under DIR/ssh/ (id_ed25519), which the VM tests use.
                      The root password is always locked.
  CARGO_TARGET_DIR    where cargo builds (default: target/ in the repository)
EOF
}

force=0 cargo=1 out="$REPO/build/image"
while (($#)); do
  case $1 in
    --force) force=1 ;;
    --no-cargo) cargo=0 ;;
    --out) out=${2:?--out needs a directory}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "$PROG: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
target_dir=${CARGO_TARGET_DIR:-$REPO/target}

if [[ $EUID -ne 0 ]]; then
  echo "$PROG: run as root (sudo): it installs packages and mkosi builds the image as root" >&2
  exit 1
fi

t_start=$SECONDS
step=0
progress() {
  step=$((step + 1))
  printf '\n==> [%d/5 %ds] %s\n' "$step" "$((SECONDS - t_start))" "$*"
}

# The first URI of an enabled "deb" source serving suite $1, from the host's
# apt sources (one-line and deb822 formats).
host_mirror() {
  local suite=$1 f
  {
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [[ -r $f ]] || continue
      awk -v s="$suite" '
        $1 == "deb" {
          i = 2
          if ($2 ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ }
          if ($(i + 1) == s) print $i
        }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
      [[ -r $f ]] || continue
      awk -v s="$suite" '
        BEGIN { RS = ""; FS = "\n" }
        {
          uris = ""; suites = ""; types = ""; enabled = "yes"
          for (j = 1; j <= NF; j++) {
            line = $j
            if (line ~ /^#/) continue
            if (match(line, /^URIs:[ \t]*/)) uris = substr(line, RLENGTH + 1)
            else if (match(line, /^Suites:[ \t]*/)) suites = substr(line, RLENGTH + 1)
            else if (match(line, /^Types:[ \t]*/)) types = substr(line, RLENGTH + 1)
            else if (match(line, /^Enabled:[ \t]*/)) enabled = substr(line, RLENGTH + 1)
          }
          if (enabled == "no" || types !~ /(^| )deb( |$)/) next
          n = split(suites, a, " ")
          for (k = 1; k <= n; k++) if (a[k] == s) { split(uris, u, " "); print u[1] }
        }' "$f"
    done
  } | head -n1
}

# ---------------------------------------------------------------- 1. host tools
progress "host tools (mkosi 24, systemd-boot, ovmf, qemu)"
mirror=$(host_mirror bookworm)
security=$(host_mirror bookworm-security)
if [[ -z $mirror ]]; then
  echo "$PROG: no apt source for 'bookworm' in /etc/apt/sources.list{,.d}: is this Debian 12?" >&2
  exit 1
fi
echo "Debian mirror (from the host's apt sources): $mirror"
echo "security mirror: ${security:-none found, the image gets no security suite}"

mkosi_ok() {
  command -v mkosi >/dev/null || return 1
  local v
  v=$(mkosi --version 2>/dev/null | awk '{print $2}')
  [[ ${v%%.*} =~ ^[0-9]+$ ]] && ((${v%%.*} >= 24))
}
HOST_PACKAGES=(
  mkosi systemd-boot systemd-container bubblewrap python3-pefile dosfstools mtools
  e2fsprogs zstd xz-utils cpio kmod debian-archive-keyring openssh-client
  ovmf qemu-system-x86 qemu-utils
)
missing=()
for p in "${HOST_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ! mkosi_ok || ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  if [[ -z $(host_mirror bookworm-backports) ]]; then
    echo "adding bookworm-backports from $mirror"
    cat >/etc/apt/sources.list.d/gazelle-bookworm-backports.sources <<EOF
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  fi
  echo "installing ${missing[*]:-mkosi} (mkosi and systemd 254 from bookworm-backports)"
  apt-get update -qq
  # mkosi 24 needs systemd >= 254 on the host (systemd-repart, bootctl, ukify).
  apt-get install -y -q --no-install-recommends -t bookworm-backports \
    "${HOST_PACKAGES[@]}" >"$out/apt-install.log" 2>&1 || {
    tail -n 20 "$out/apt-install.log" >&2
    echo "$PROG: apt-get install failed; whole log: $out/apt-install.log" >&2
    exit 1
  }
  mkosi_ok || { echo "$PROG: mkosi >= 24 still missing after install" >&2; exit 1; }
fi
echo "$(mkosi --version), $(systemctl --version | head -n1)"

# ------------------------------------------------------------ 2. our binaries
progress "our binaries (cargo build --release --workspace)"
if ((cargo)); then
  "$REPO/scripts/install-deps.sh"
  t0=$SECONDS
  (cd "$REPO" && CARGO_TARGET_DIR=$target_dir cargo build --release --workspace)
  echo "cargo: $((SECONDS - t0)) s"
else
  echo "skipped (--no-cargo): staging what $target_dir/release already holds"
fi

# ------------------------------------------------------------------ 3. staging
progress "staging binaries, SSH key and apt sources"
staging=$out/staging
rm -rf "$staging"
mkdir -p "$staging"
staged=() skipped=()
# file in target/release -> path in the image
STAGE=(
  "liblstack.so:/usr/lib/gazelle/liblstack.so"
  "gazellectl:/usr/bin/gazellectl"
  "lstack-echo:/usr/bin/lstack-echo"
  "ltran:/usr/sbin/ltran"
  "applianced:/usr/sbin/applianced"
  "appliancectl:/usr/bin/appliancectl"
  "gazelle-webui:/usr/bin/gazelle-webui"
)
for entry in "${STAGE[@]}"; do
  name=${entry%%:*} dest=${entry#*:}
  if [[ -f $target_dir/release/$name ]]; then
    install -D -m 0755 "$target_dir/release/$name" "$staging$dest"
    strip --strip-debug "$staging$dest"
    staged+=("$dest")
  else
    skipped+=("$name")
  fi
done
install -D -m 0755 "$REPO/scripts/setup-hugepages.sh" "$staging/usr/sbin/gazelle-setup-hugepages"
staged+=(/usr/sbin/gazelle-setup-hugepages)
# The image's /etc/gazelle/appliance.toml is a copy of the daemon's embedded
# default (appliance/src/config.rs, DEFAULT_CONFIG_TOML): say when they drift.
if ! python3 - "$REPO/appliance/src/config.rs" "$REPO/image/rootfs/etc/gazelle/appliance.toml" <<'EOF'; then
import re, sys
m = re.search(r'pub const DEFAULT_CONFIG_TOML: &str = r#"(.*?)"#;', open(sys.argv[1]).read(), re.S)
sys.exit(0 if m and m.group(1) == open(sys.argv[2]).read() else 1)
EOF
  echo "WARNING: image/rootfs/etc/gazelle/appliance.toml differs from DEFAULT_CONFIG_TOML in" \
    "appliance/src/config.rs; copy it over unless the image should differ on purpose" >&2
fi
echo "staged: ${staged[*]}"
if ((${#skipped[@]})); then
  echo "skipped (not built in $target_dir/release): ${skipped[*]}"
fi

if [[ -n ${APPLIANCE_SSH_KEY:-} ]]; then
  pubkey=$APPLIANCE_SSH_KEY
  [[ -r $pubkey ]] || { echo "$PROG: APPLIANCE_SSH_KEY=$pubkey is not a readable file" >&2; exit 1; }
else
  pubkey=$out/ssh/id_ed25519.pub
  if [[ ! -f $pubkey ]]; then
    install -d -m 0700 "$out/ssh"
    ssh-keygen -q -t ed25519 -N '' -C "gazelle-appliance throwaway key" -f "$out/ssh/id_ed25519"
    echo "made a throwaway SSH key pair: $out/ssh/id_ed25519 (set APPLIANCE_SSH_KEY for your own)"
  fi
fi
install -d -m 0700 "$staging/root" "$staging/root/.ssh"
install -m 0600 "$pubkey" "$staging/root/.ssh/authorized_keys"
cp "$pubkey" "$out/authorized_key.pub"
echo "root's authorized_keys: $pubkey"

pkgmngr=$out/pkgmngr
rm -rf "$pkgmngr"
mkdir -p "$pkgmngr/etc/apt/sources.list.d" "$pkgmngr/etc/apt/trusted.gpg.d"
# mkosi writes the --local-mirror source without Signed-By: apt then trusts
# the keyrings in trusted.gpg.d, where Debian's archive keys go.
cp /usr/share/keyrings/debian-archive-keyring.gpg "$pkgmngr/etc/apt/trusted.gpg.d/"
# --local-mirror gives mkosi the release suite only; updates and security
# come from here (never mkosi's built-in hosts: only the host's mirror works).
cat >"$pkgmngr/etc/apt/sources.list.d/updates.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
if [[ -n $security ]]; then
  cat >"$pkgmngr/etc/apt/sources.list.d/security.sources" <<EOF
Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
fi

# ------------------------------------------------------------------- 4. mkosi
progress "image (mkosi)"
image=$out/gazelle-appliance.raw
stamp=$out/.inputs.sha256
tree_digest() { # paths, modes and contents of a tree
  (cd "$1" && find . -printf '%p %y %m %l\n' | LC_ALL=C sort &&
    find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
}
inputs=$({
  mkosi --version
  echo "$mirror $security"
  sha256sum "${BASH_SOURCE[0]}"
  tree_digest "$REPO/image"
  tree_digest "$staging"
  tree_digest "$pkgmngr"
} | sha256sum | cut -d' ' -f1)

if ((!force)) && [[ -f $image && -f $stamp && $(cat "$stamp") == "$inputs" ]]; then
  echo "no input changed since the last build: keeping $image"
else
  rm -f "$stamp"
  mkdir -p "$out/cache" "$out/packages" "$out/work"
  t0=$SECONDS
  # --incremental keeps the tree after package installation in cache/, so a
  # rebuild with new binaries or overlay files skips apt altogether.
  mkosi -C "$REPO/image" \
    --local-mirror="$mirror" \
    --package-manager-tree="$pkgmngr" \
    --extra-tree="$staging" \
    --output-dir="$out" \
    --cache-dir="$out/cache" \
    --package-cache-dir="$out/packages" \
    --workspace-dir="$out/work" \
    --incremental=yes \
    --force \
    build
  echo "mkosi: $((SECONDS - t0)) s"
  echo "$inputs" >"$stamp"
fi

# ------------------------------------------------------------------ 5. result
progress "done in $((SECONDS - t_start)) s"
ls -lsh "$image"
cat <<EOF
boot it:        sudo tests/vm/run.sh --run     (QEMU; SSH port printed)
test it:        sudo tests/vm/run.sh
bare metal:     sudo dd if=$image of=/dev/sdX bs=4M conv=fsync status=progress
EOF
