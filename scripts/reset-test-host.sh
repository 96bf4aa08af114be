#!/usr/bin/env bash
# Puts a test machine back in the state of a new one, as far as this
# project's tests can tell: no hugepages reserved (every size, every NUMA
# node), no hugetlbfs mounted, no DPDK runtime or hugepage files, no
# gazelle control sockets, no test namespaces or veths left behind, none of
# our processes running. CI (.ci/run) runs it before the test command, so
# every CI run proves the tests pass on a fresh machine, not only on one
# that earlier runs warmed up.
#
# It takes hugepages away from everything on the machine: meant for CI and
# throwaway test machines, never for one where DPDK applications run. It
# refuses to run unless given --yes.
set -euo pipefail

if [[ ${1:-} != --yes ]]; then
  cat >&2 <<'EOF'
Usage: reset-test-host.sh --yes

Releases every hugepage, unmounts every hugetlbfs mount, removes
/var/run/dpdk, /run/gazelle and the test bed's namespaces, and stops
ltran/lstack processes: the state of a new machine. For CI and throwaway
test machines only.
EOF
  exit 2
fi
if [[ $EUID -ne 0 ]]; then
  echo "reset-test-host: needs root" >&2
  exit 1
fi

say() { echo "reset-test-host: $*"; }

# Our daemons and test servers first: they hold pages and mounts.
for name in ltran lstack-echo lstack-tcp-hold applianced gazelle-webui lstack-demo; do
  if pkill -KILL -x "$name" 2>/dev/null; then
    say "stopped leftover $name processes"
  fi
done

# Network namespaces and veths the test bed made (lst*, lpa*, ...): every
# namespace is a test's on these machines.
while read -r ns _; do
  [[ -n $ns ]] || continue
  ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
  ip netns delete "$ns" && say "removed network namespace $ns"
done < <(ip netns list 2>/dev/null)

# Every hugetlbfs mount, innermost first.
mapfile -t mounts < <(awk '$3 == "hugetlbfs" {print $2}' /proc/self/mounts | sort -r)
for m in "${mounts[@]}"; do
  m=$(printf '%b' "$m") # /proc/mounts escapes spaces as \040
  umount -l "$m" && say "unmounted hugetlbfs at $m"
done

# Every pool, machine-wide and per node.
for f in /sys/kernel/mm/hugepages/hugepages-*/nr_hugepages \
         /sys/devices/system/node/node*/hugepages/hugepages-*/nr_hugepages; do
  [[ -e $f ]] || continue
  if [[ $(<"$f") != 0 ]]; then
    echo 0 >"$f"
    say "released the pages of $f (now $(<"$f"))"
  fi
done

for d in /var/run/dpdk /run/gazelle /run/netns-testbed; do
  if [[ -e $d ]]; then
    rm -rf "$d"
    say "removed $d"
  fi
done
# Pins of the eBPF helper's ownership maps a killed lstack left (a bpffs
# lstack mounted itself on a machine without one goes too).
if [[ -d /sys/fs/bpf/gazelle ]]; then
  rm -rf /sys/fs/bpf/gazelle
  say "removed /sys/fs/bpf/gazelle"
fi
if awk '$2 == "/sys/fs/bpf" && $3 == "bpf"' /proc/self/mounts | grep -q . \
   && ! systemctl is-active --quiet sys-fs-bpf.mount 2>/dev/null; then
  umount /sys/fs/bpf && say "unmounted the bpffs on /sys/fs/bpf"
fi
# A /dev/hugepages directory an earlier test made (not a mount any more).
if [[ -d /dev/hugepages ]] && rmdir /dev/hugepages 2>/dev/null; then
  say "removed the empty /dev/hugepages"
fi

left=$(awk '$3 == "hugetlbfs"' /proc/self/mounts | wc -l)
pages=$(awk "{s += \$1} END {print s + 0}" /sys/kernel/mm/hugepages/hugepages-*/nr_hugepages)
say "done: ${pages} hugepages reserved, ${left} hugetlbfs mounts"
