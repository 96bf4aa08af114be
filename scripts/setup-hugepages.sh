#!/usr/bin/env bash
# Reserves hugepages (per NUMA node or machine-wide) and mounts the hugetlbfs
# directories ltran and lstack use. Standalone: needs bash and util-linux only.
# appliance/src/hugepages.rs is its twin inside the daemon: same rules, same
# messages, same exit codes and the same `--status --json` shape, so keep the
# two in step. Run with --help for the whole story.
set -euo pipefail
shopt -s inherit_errexit

readonly PROG=setup-hugepages
readonly EX_FAIL=1 EX_USAGE=2 EX_NOT_ROOT=3 EX_SIZE=4 EX_MEMORY=5 EX_NESTED=6 \
  EX_THP=7 EX_SHORTFALL=8 EX_MOUNT=9 EX_NODE=10

usage() {
  cat <<'EOF'
Usage: setup-hugepages.sh [--pages-2m N] [--pages-1g N] [--pages SIZE=N]... [--node LIST|all]
                          [--exact] [--allow-thp] [--ltran-dir DIR] [--lstack-dir DIR]
                          [--ltran-size SIZE] [--lstack-size SIZE] [--no-mount] [--dry-run]
       setup-hugepages.sh --status [--json]

Prepares a machine for DPDK the way gazelle expects: reserves hugepages and
mounts a hugetlbfs directory for ltran and one for lstack.

Reserving
  --pages-2m N        have at least N 2 MiB pages (shorthand for --pages 2M=N)
  --pages-1g N        have at least N 1 GiB pages (shorthand for --pages 1G=N)
  --pages SIZE=N      any size the kernel offers (64K, 2M, 32M, 1G...); repeatable
  --node LIST|all     per NUMA node: N pages on each listed node ("0", "0,1") or on
                      every node with memory ("all"). Without --node the count is
                      machine-wide (/sys/kernel/mm/hugepages) and the kernel spreads
                      the pages over the nodes.
  --exact             also lower a pool that holds more pages than asked. Without it
                      a larger pool is kept as it is: pages other programs may be
                      using are never taken away by accident.

Mounting (done unless --no-mount; without --pages options only this is done)
  --ltran-dir DIR     hugetlbfs directory for ltran (default /mnt/hugepages)
  --lstack-dir DIR    hugetlbfs directory for lstack (default /mnt/hugepages-2M)
  --ltran-size SIZE   page size of the ltran mount; --lstack-size likewise. Default:
                      the smallest size this run reserves, else the kernel's default
                      (Hugepagesize in /proc/meminfo).
  --no-mount          reserve only
  Directories are created with mode 0700 and mounted with pagesize=SIZE,mode=0700.
  A directory that is already a hugetlbfs mount with that page size is left as it is.

Looking
  --status            pools per size, machine-wide and per node (total, free,
                      reserved, surplus), the hugetlbfs mounts and the THP mode
  --json              with --status: the same as JSON (the shape the appliance's
                      hugepages::status() serialises to)
  --dry-run           check everything and print each action it would take
                      ("would ..."), change nothing. Needs no root, like --status.
  -h, --help          this text

Every run is all-or-nothing and idempotent: the checks come before any change;
if the kernel gives fewer pages than asked, or a mount fails, what this run had
changed is put back, the message says what, and the exit code is non-zero. A
second identical run finds nothing to change and says so.

Transparent hugepages (THP)
  With THP enabled=always (/sys/kernel/mm/transparent_hugepage/enabled), the
  anonymous memory of every process is backed by 2 MiB blocks taken from the
  same contiguous free memory a pool needs to grow, and khugepaged keeps
  compacting memory behind the data path. So a run that must grow a pool while
  THP is enabled=always stops with exit code 7, before changing anything;
  --allow-thp goes ahead with a warning. THP set to madvise or never, or a run
  that grows no pool (only mounts, or the pools are already large enough), is
  not affected.

Exit codes
  0  done, or nothing to change           6  mount point inside a hugetlbfs mount
  1  a read, write or mount failed        7  THP enabled=always (see above)
  2  bad command line                     8  the kernel gave fewer pages than asked
  3  not root                             9  directory already mounted otherwise
  4  page size not supported here        10  no such NUMA node
  5  not enough free memory

Environment
  HUGEPAGES_ROOT      root of the sys/ and proc/ trees to read and write (default /),
                      for tests on a copied tree. Mounts always act on the real
                      filesystem: use --no-mount with a copied tree.

Examples
  setup-hugepages.sh --pages-2m 1024 --node all      # gazelle's usual setup
  setup-hugepages.sh --pages-1g 2 --node 0 --ltran-size 1G --dry-run
  setup-hugepages.sh --status --json
EOF
}

die() {
  local code=$1
  shift
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit "$code"
}
usage_error() { die "$EX_USAGE" "$* (see --help)"; }
say() { printf '%s: %s\n' "$PROG" "$*"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }

ROOT=${HUGEPAGES_ROOT:-}
ROOT=${ROOT%/}
readonly SYS=$ROOT/sys PROC=$ROOT/proc
readonly GLOBAL_DIR=$SYS/kernel/mm/hugepages NODE_DIR=$SYS/devices/system/node
readonly THP_DIR=$SYS/kernel/mm/transparent_hugepage

# ---- sizes and numbers ------------------------------------------------------

# size_kb SIZE: prints SIZE ("2M", "2MB", "2048kB", "1G") in KiB; fails if malformed.
size_kb() {
  local s=${1^^}
  s=${s%B}
  [[ $s =~ ^([0-9]{1,12})([KMG])$ ]] || return 1
  local n=$((10#${BASH_REMATCH[1]}))
  case ${BASH_REMATCH[2]} in
    K) ;;
    M) n=$((n * 1024)) ;;
    G) n=$((n * 1048576)) ;;
  esac
  ((n > 0)) || return 1
  printf '%s' "$n"
}

# size_name KIB: the name a size goes by ("2M", "1G", "64K").
size_name() {
  if (($1 % 1048576 == 0)); then
    printf '%sG' $(($1 / 1048576))
  elif (($1 % 1024 == 0)); then
    printf '%sM' $(($1 / 1024))
  else
    printf '%sK' "$1"
  fi
}

is_count() { [[ $1 =~ ^[0-9]{1,18}$ ]]; }

# read_count FILE: sets COUNT to the number FILE holds.
read_count() {
  local v
  { v=$(<"$1"); } 2>/dev/null || die "$EX_FAIL" "cannot read $1: $(err_of cat "$1")"
  v=${v//[[:space:]]/}
  is_count "$v" || die "$EX_FAIL" "$1 holds '$v', not a page count"
  COUNT=$((10#$v))
}

# err_of CMD ARGS...: the error message CMD prints, without the command name.
err_of() {
  local msg
  msg=$("$@" 2>&1 >/dev/null) || true
  printf '%s' "${msg##*: }"
}

# meminfo_kb FILE KEY: the value of KEY (kB) in a /proc/meminfo or node meminfo.
meminfo_kb() {
  local line key val
  [[ -r $1 ]] || return 1
  while IFS= read -r line; do
    [[ $line =~ ^(Node\ [0-9]+\ )?([^:]+):\ *([0-9]+) ]] || continue
    key=${BASH_REMATCH[2]}
    val=${BASH_REMATCH[3]}
    if [[ $key == "$2" ]]; then
      printf '%s' "$val"
      return 0
    fi
  done <"$1"
  return 1
}

# ---- what the kernel offers -------------------------------------------------

SUPPORTED_KB=()
load_sizes() {
  local d
  SUPPORTED_KB=()
  for d in "$GLOBAL_DIR"/hugepages-*kB; do
    [[ -d $d && $d =~ hugepages-([0-9]+)kB$ ]] && SUPPORTED_KB+=("${BASH_REMATCH[1]}")
  done
  if ((${#SUPPORTED_KB[@]})); then
    mapfile -t SUPPORTED_KB < <(printf '%s\n' "${SUPPORTED_KB[@]}" | sort -n)
  fi
}

# join_or_none ITEM...: "a, b, c", or "none".
join_or_none() {
  if (($#)); then
    local IFS=,
    printf '%s' "$*" | sed 's/,/, /g'
  else
    printf 'none'
  fi
}

supported_names() {
  local kb names=()
  for kb in "${SUPPORTED_KB[@]}"; do names+=("$(size_name "$kb")"); done
  join_or_none "${names[@]}"
}

is_supported() {
  local kb
  for kb in "${SUPPORTED_KB[@]}"; do [[ $kb == "$1" ]] && return 0; done
  return 1
}

check_size() {
  is_supported "$1" ||
    die "$EX_SIZE" "page size $(size_name "$1") is not supported by this kernel/CPU (supported: $(supported_names); see $GLOBAL_DIR): use one of those sizes"
}

# Nodes: every nodeN directory, numerically; the ones with memory for "all".
NODES=()
load_nodes() {
  local d
  NODES=()
  for d in "$NODE_DIR"/node[0-9]*; do
    [[ -d $d ]] && NODES+=("${d##*/node}")
  done
  if ((${#NODES[@]})); then
    mapfile -t NODES < <(printf '%s\n' "${NODES[@]}" | sort -n)
  fi
}

node_names() { join_or_none "${NODES[@]}"; }

# Nodes in a kernel list such as "0-1,3".
expand_list() {
  local part
  local -a parts
  IFS=, read -r -a parts <<<"$1"
  for part in "${parts[@]}"; do
    if [[ $part =~ ^([0-9]+)-([0-9]+)$ ]]; then
      seq "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
    elif [[ $part =~ ^[0-9]+$ ]]; then
      printf '%s\n' "$part"
    fi
  done
}

nodes_with_memory() {
  local list=
  if [[ -r $NODE_DIR/has_memory ]]; then
    list=$(<"$NODE_DIR/has_memory")
    expand_list "${list//[[:space:]]/}"
  else
    printf '%s\n' "${NODES[@]}"
  fi
}

pool_dir() { # NODE|"" KIB
  if [[ -z $1 ]]; then
    printf '%s/hugepages-%skB' "$GLOBAL_DIR" "$2"
  else
    printf '%s/node%s/hugepages/hugepages-%skB' "$NODE_DIR" "$1" "$2"
  fi
}

pool_name() { # NODE|"" KIB
  if [[ -z $1 ]]; then
    printf '%s pages machine-wide' "$(size_name "$2")"
  else
    printf '%s pages on node %s' "$(size_name "$2")" "$1"
  fi
}

thp_mode() { # FILE: the bracketed choice, or nothing
  local v
  [[ -r $1 ]] || return 0
  v=$(<"$1")
  [[ $v =~ \[([^]]+)\] ]] && printf '%s' "${BASH_REMATCH[1]}"
  return 0
}

# ---- mounts ---------------------------------------------------------------

M_PATH=() M_FSTYPE=() M_OPTS=() M_SUPER=()
load_mounts() {
  local line pre post
  local -a f s
  M_PATH=() M_FSTYPE=() M_OPTS=() M_SUPER=()
  [[ -r $PROC/self/mountinfo ]] || die "$EX_FAIL" "cannot read $PROC/self/mountinfo"
  while IFS= read -r line; do
    pre=${line%% - *}
    post=${line#* - }
    read -r -a f <<<"$pre"
    read -r -a s <<<"$post"
    ((${#f[@]} >= 6 && ${#s[@]} >= 1)) || continue
    M_PATH+=("$(unescape "${f[4]}")")
    M_OPTS+=("${f[5]}")
    M_FSTYPE+=("${s[0]}")
    M_SUPER+=("${s[2]:-}")
  done <"$PROC/self/mountinfo"
}

# mountinfo writes space, tab, newline and backslash as \ooo.
unescape() { printf '%b' "${1//\\/\\0}"; }

# mount_size_kb INDEX: the page size of a hugetlbfs mount.
mount_size_kb() {
  local opt
  local -a opts
  IFS=, read -r -a opts <<<"${M_SUPER[$1]}"
  for opt in "${opts[@]}"; do
    [[ $opt == pagesize=* ]] && size_kb "${opt#pagesize=}" && return
  done
  printf '%s' "${DEFAULT_KB:-0}"
}

# mount_at PATH: index of the topmost mount at PATH, or nothing.
mount_at() {
  local i found=
  for i in "${!M_PATH[@]}"; do
    [[ ${M_PATH[$i]} == "$1" ]] && found=$i
  done
  printf '%s' "$found"
}

# mount_containing PATH: index of the mount PATH lies in (excluding one at PATH).
mount_containing() {
  local i mp best='' best_len=-1
  for i in "${!M_PATH[@]}"; do
    mp=${M_PATH[$i]}
    [[ $mp == "$1" ]] && continue
    if [[ $mp == / || $1 == "$mp"/* ]] && ((${#mp} >= best_len)); then
      best=$i
      best_len=${#mp}
    fi
  done
  printf '%s' "$best"
}

# ---- status -----------------------------------------------------------------

json_str() {
  local text=$1
  text=${text//\\/\\\\}
  text=${text//\"/\\\"}
  text=${text//$'\n'/\\n}
  text=${text//$'\t'/\\t}
  text=${text//$'\r'/\\r}
  printf '"%s"' "$text"
}

json_or_null() { if [[ -n $1 ]]; then "${@:2}" "$1"; else printf 'null'; fi; }
json_raw() { printf '%s' "$1"; }

# pool_row NODE|"" KIB: sets ROW_TOTAL ROW_FREE ROW_RESV ROW_SURP (ROW_RESV "" per node:
# the kernel counts reserved pages machine-wide only).
pool_row() {
  local dir
  dir=$(pool_dir "$1" "$2")
  read_count "$dir/nr_hugepages"
  ROW_TOTAL=$COUNT
  read_count "$dir/free_hugepages"
  ROW_FREE=$COUNT
  read_count "$dir/surplus_hugepages"
  ROW_SURP=$COUNT
  ROW_RESV=
  if [[ -z $1 ]]; then
    read_count "$dir/resv_hugepages"
    ROW_RESV=$COUNT
  fi
}

# pools: "NODE KIB" lines ("-" for machine-wide), each size machine-wide then per node.
pools() {
  local kb n
  for kb in "${SUPPORTED_KB[@]}"; do
    printf -- '- %s\n' "$kb"
    for n in "${NODES[@]}"; do
      [[ -d $(pool_dir "$n" "$kb") ]] && printf '%s %s\n' "$n" "$kb"
    done
  done
  return 0
}

hugetlbfs_mounts() {
  local i
  for i in "${!M_PATH[@]}"; do
    [[ ${M_FSTYPE[$i]} == hugetlbfs ]] && printf '%s\n' "$i"
  done
  return 0
}

status_json() {
  local sep node kb i mkb
  printf '{"supported_sizes_kb":['
  sep=
  for kb in "${SUPPORTED_KB[@]}"; do
    printf '%s%s' "$sep" "$kb"
    sep=,
  done
  printf '],"default_size_kb":%s,"pools":[' "$(json_or_null "$DEFAULT_KB" json_raw)"
  sep=
  while read -r node kb; do
    [[ $node != - ]] || node=
    pool_row "$node" "$kb"
    printf '%s{"node":%s,"size":"%s","size_kb":%s,"total":%s,"free":%s,"reserved":%s,"surplus":%s}' \
      "$sep" "$(json_or_null "$node" json_raw)" "$(size_name "$kb")" "$kb" "$ROW_TOTAL" \
      "$ROW_FREE" "$(json_or_null "$ROW_RESV" json_raw)" "$ROW_SURP"
    sep=,
  done < <(pools)
  printf '],"mounts":['
  sep=
  for i in $(hugetlbfs_mounts); do
    mkb=$(mount_size_kb "$i")
    printf '%s{"path":%s,"size":"%s","size_kb":%s,"options":%s,"fs_options":%s}' "$sep" \
      "$(json_str "${M_PATH[$i]}")" "$(size_name "$mkb")" "$mkb" \
      "$(json_str "${M_OPTS[$i]}")" "$(json_str "${M_SUPER[$i]}")"
    sep=,
  done
  printf '],"thp":{"enabled":%s,"defrag":%s}}\n' \
    "$(json_or_null "$(thp_mode "$THP_DIR/enabled")" json_str)" \
    "$(json_or_null "$(thp_mode "$THP_DIR/defrag")" json_str)"
}

status_table() {
  local node kb i width=4
  printf 'hugepage pools (supported sizes: %s; default %s)\n' "$(supported_names)" \
    "$([[ -n $DEFAULT_KB ]] && size_name "$DEFAULT_KB" || printf 'unknown')"
  printf '%-5s %-5s %8s %8s %8s %8s\n' NODE SIZE TOTAL FREE RESERVED SURPLUS
  while read -r node kb; do
    [[ $node != - ]] || node=
    pool_row "$node" "$kb"
    printf '%-5s %-5s %8s %8s %8s %8s\n' "${node:-all}" "$(size_name "$kb")" "$ROW_TOTAL" \
      "$ROW_FREE" "${ROW_RESV:--}" "$ROW_SURP"
  done < <(pools)
  printf '\nhugetlbfs mounts\n'
  for i in $(hugetlbfs_mounts); do
    ((${#M_PATH[$i]} > width)) && width=${#M_PATH[$i]}
  done
  printf '%-*s %-5s %s\n' "$width" PATH SIZE OPTIONS
  for i in $(hugetlbfs_mounts); do
    printf '%-*s %-5s %s\n' "$width" "${M_PATH[$i]}" "$(size_name "$(mount_size_kb "$i")")" \
      "${M_OPTS[$i]} (${M_SUPER[$i]})"
  done
  printf '\ntransparent hugepages: enabled=%s defrag=%s\n' \
    "$(thp_mode "$THP_DIR/enabled")" "$(thp_mode "$THP_DIR/defrag")"
}

# ---- command line -------------------------------------------------------------

REQ_KB=() REQ_N=()
NODE_ARG='' EXACT=0 ALLOW_THP=0 MOUNT=1 DRY_RUN=0 STATUS=0 JSON=0
LTRAN_DIR=/mnt/hugepages LSTACK_DIR=/mnt/hugepages-2M LTRAN_SIZE='' LSTACK_SIZE=''

add_request() { # SIZE COUNT OPTION
  local kb i
  kb=$(size_kb "$1") || usage_error "$3: '$1' is not a page size (like 2M or 1G)"
  is_count "$2" || usage_error "$3: '$2' is not a page count"
  for i in "${!REQ_KB[@]}"; do
    [[ ${REQ_KB[$i]} == "$kb" ]] && usage_error "$3: page size $(size_name "$kb") asked for twice"
  done
  REQ_KB+=("$kb")
  REQ_N+=($((10#$2)))
}

# Keeps the requests in ascending page size, the order the daemon plans them in.
sort_requests() {
  local i line
  local -a lines
  mapfile -t lines < <(for i in "${!REQ_KB[@]}"; do printf '%s %s\n' "${REQ_KB[$i]}" "${REQ_N[$i]}"; done | sort -n)
  REQ_KB=() REQ_N=()
  for line in "${lines[@]}"; do
    REQ_KB+=("${line% *}")
    REQ_N+=("${line#* }")
  done
}

parse_args() {
  (($#)) || {
    usage >&2
    exit "$EX_USAGE"
  }
  local requested=0
  while (($#)); do
    local opt=$1
    case $opt in
      -h | --help)
        usage
        exit 0
        ;;
      --status) STATUS=1 ;;
      --json) JSON=1 ;;
      --dry-run) DRY_RUN=1 ;;
      --exact) EXACT=1 requested=1 ;;
      --allow-thp) ALLOW_THP=1 ;;
      --no-mount) MOUNT=0 requested=1 ;;
      --pages-2m | --pages-1g | --pages | --node | --ltran-dir | --lstack-dir | --ltran-size | --lstack-size)
        (($# >= 2)) || usage_error "$opt needs a value"
        local val=$2
        shift
        requested=1
        case $opt in
          --pages-2m) add_request 2M "$val" "$opt" ;;
          --pages-1g) add_request 1G "$val" "$opt" ;;
          --pages)
            [[ $val == *=* ]] || usage_error "--pages wants SIZE=N, like 2M=1024"
            add_request "${val%%=*}" "${val#*=}" "$opt"
            ;;
          --node) NODE_ARG=$val ;;
          --ltran-dir) LTRAN_DIR=$val ;;
          --lstack-dir) LSTACK_DIR=$val ;;
          --ltran-size) LTRAN_SIZE=$(size_kb "$val") || usage_error "$opt: '$val' is not a page size" ;;
          --lstack-size) LSTACK_SIZE=$(size_kb "$val") || usage_error "$opt: '$val' is not a page size" ;;
        esac
        ;;
      *) usage_error "unknown argument '$opt'" ;;
    esac
    shift
  done
  if ((STATUS)); then
    ((requested == 0 && DRY_RUN == 0)) || usage_error "--status only looks: it takes no other option but --json"
  else
    ((JSON == 0)) || usage_error "--json goes with --status"
  fi
  if ((MOUNT)); then
    [[ $LTRAN_DIR == /* ]] || usage_error "mount point $LTRAN_DIR for ltran must be an absolute path"
    [[ $LSTACK_DIR == /* ]] || usage_error "mount point $LSTACK_DIR for lstack must be an absolute path"
  fi
  sort_requests
}

# ---- planning -----------------------------------------------------------------

# Pool changes: parallel arrays, one entry a pool this run sets.
P_NODE=() P_KB=() P_FROM=() P_TO=()
# Directories to create and mounts to make.
D_PATH=() MT_PATH=() MT_KB=() MT_FOR=()
NOTES=() WARNINGS=()

# target_nodes: sets TARGETS to the nodes asked for ("" alone: machine-wide).
target_nodes() {
  local n
  TARGETS=()
  case $NODE_ARG in
    '') TARGETS=('') ;;
    all)
      ((${#NODES[@]})) || die "$EX_NODE" "NUMA node all does not exist (nodes here: none; see $NODE_DIR)"
      mapfile -t TARGETS < <(nodes_with_memory)
      ;;
    *)
      [[ $NODE_ARG =~ ^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$ ]] ||
        usage_error "--node wants a node list like 0 or 0,1 or 0-3, or all"
      for n in $(expand_list "$NODE_ARG"); do
        n=$((10#$n))
        [[ -d $NODE_DIR/node$n ]] ||
          die "$EX_NODE" "NUMA node $n does not exist (nodes here: $(node_names); see $NODE_DIR)"
        [[ " ${TARGETS[*]} " == *" $n "* ]] || TARGETS+=("$n")
      done
      ;;
  esac
}

plan_pools() {
  local i kb want node cur
  ((${#REQ_KB[@]})) || return 0
  target_nodes
  for i in "${!REQ_KB[@]}"; do
    kb=${REQ_KB[$i]}
    want=${REQ_N[$i]}
    for node in "${TARGETS[@]}"; do
      [[ -d $(pool_dir "$node" "$kb") ]] ||
        die "$EX_FAIL" "$(pool_dir "$node" "$kb") is missing although $(size_name "$kb") pages are supported"
      read_count "$(pool_dir "$node" "$kb")/nr_hugepages"
      cur=$COUNT
      if ((cur == want)); then
        NOTES+=("$(pool_name "$node" "$kb"): already $cur")
      elif ((cur > want && EXACT == 0)); then
        NOTES+=("$(pool_name "$node" "$kb"): already $cur, more than the $want asked for; kept (exact mode would lower it)")
      else
        P_NODE+=("$node") P_KB+=("$kb") P_FROM+=("$cur") P_TO+=("$want")
      fi
    done
  done
}

# Free memory, in kB, a pool on NODE ("" machine-wide) can grow into, and where it comes from.
available_kb() {
  local f v total=0 key
  if [[ -z $1 ]]; then
    f=$PROC/meminfo
    AVAIL_FROM="MemAvailable in $f"
    v=$(meminfo_kb "$f" MemAvailable) || die "$EX_FAIL" "$f has no MemAvailable"
    AVAIL_KB=$v
  else
    f=$NODE_DIR/node$1/meminfo
    AVAIL_FROM="MemFree + file pages + SReclaimable in $f"
    for key in MemFree 'Active(file)' 'Inactive(file)' SReclaimable; do
      v=$(meminfo_kb "$f" "$key") || die "$EX_FAIL" "$f has no $key"
      total=$((total + v))
    done
    AVAIL_KB=$total
  fi
}

check_memory() {
  local i j node need grow where
  local -a seen=() parts
  for i in "${!P_NODE[@]}"; do
    node=${P_NODE[$i]}
    [[ " ${seen[*]} " == *" n$node "* ]] && continue
    seen+=("n$node")
    need=0 parts=()
    for j in "${!P_NODE[@]}"; do
      [[ ${P_NODE[$j]} == "$node" ]] || continue
      grow=$((P_TO[j] - P_FROM[j]))
      ((grow > 0)) || continue
      need=$((need + grow * P_KB[j]))
      parts+=("$(size_name "${P_KB[$j]}") pages +$grow")
    done
    ((need > 0)) || continue
    available_kb "$node"
    if ((need > AVAIL_KB)); then
      where=${node:+ on node $node}
      local IFS=,
      die "$EX_MEMORY" "not enough free memory$where: the request needs $(((need + 1023) / 1024)) MiB more ($(printf '%s' "${parts[*]}" | sed 's/,/, /g')), only $((AVAIL_KB / 1024)) MiB is free ($AVAIL_FROM): ask for fewer pages, free some memory, or reserve hugepages at boot (hugepagesz= hugepages= on the kernel command line)"
    fi
  done
}

check_thp() {
  local i grows=0
  for i in "${!P_NODE[@]}"; do ((P_TO[i] > P_FROM[i])) && grows=1; done
  ((grows)) || return 0
  [[ $(thp_mode "$THP_DIR/enabled") == always ]] || return 0
  if ((ALLOW_THP)); then
    WARNINGS+=("transparent hugepages are enabled=always: growing the pools anyway (allowed)")
  else
    die "$EX_THP" "transparent hugepages are enabled=always ($THP_DIR/enabled): every process's anonymous memory then competes for the contiguous free memory the pools need to grow, and khugepaged compacts memory behind the data path; set it to madvise (echo madvise > $THP_DIR/enabled) or allow it (--allow-thp, allow_thp = true) to go ahead anyway"
  fi
}

# plan_mount DIR KIB FOR
plan_mount() {
  local path=$1 kb=$2 for=$3 i fs have
  i=$(mount_containing "$path")
  if [[ -n $i && ${M_FSTYPE[$i]} == hugetlbfs ]]; then
    die "$EX_NESTED" "mount point $path for $for is inside the hugetlbfs mount ${M_PATH[$i]}: nesting hugetlbfs mounts is refused; choose a directory outside it"
  fi
  for i in "${!MT_PATH[@]}"; do
    [[ $path == "${MT_PATH[$i]}"/* ]] &&
      die "$EX_NESTED" "mount point $path for $for is inside the hugetlbfs mount ${MT_PATH[$i]}: nesting hugetlbfs mounts is refused; choose a directory outside it"
    [[ ${MT_PATH[$i]} == "$path"/* ]] &&
      die "$EX_NESTED" "mount point ${MT_PATH[$i]} for ${MT_FOR[$i]} is inside the hugetlbfs mount $path: nesting hugetlbfs mounts is refused; choose a directory outside it"
  done
  i=$(mount_at "$path")
  if [[ -n $i ]]; then
    fs=${M_FSTYPE[$i]}
    if [[ $fs != hugetlbfs ]]; then
      die "$EX_MOUNT" "$path for $for is already a mount point of $fs: unmount it (umount $path) or choose another directory"
    fi
    have=$(mount_size_kb "$i")
    if ((have != kb)); then
      die "$EX_MOUNT" "$path for $for is already a hugetlbfs mount with pagesize=$(size_name "$have"), not $(size_name "$kb"): unmount it (umount $path) or choose another directory"
    fi
    NOTES+=("$path for $for: already hugetlbfs with pagesize=$(size_name "$kb")")
    return 0
  fi
  if [[ -e $path || -L $path ]]; then
    [[ -d $path ]] || die "$EX_MOUNT" "$path for $for exists and is not a directory: remove it or choose another directory"
  else
    D_PATH+=("$path")
  fi
  MT_PATH+=("$path") MT_KB+=("$kb") MT_FOR+=("$for")
}

plan_mounts() {
  ((MOUNT)) || return 0
  local ltran lstack default_kb kb
  ltran=$(realpath -m -- "$LTRAN_DIR")
  lstack=$(realpath -m -- "$LSTACK_DIR")
  [[ $ltran != "$lstack" ]] || usage_error "ltran and lstack need different directories (both are $ltran)"
  default_kb=$DEFAULT_KB
  if ((${#REQ_KB[@]})); then
    default_kb=$(printf '%s\n' "${REQ_KB[@]}" | sort -n | head -n1)
  fi
  [[ -n $default_kb ]] || die "$EX_SIZE" "the kernel names no default hugepage size (Hugepagesize in $PROC/meminfo): give --ltran-size and --lstack-size"
  kb=${LTRAN_SIZE:-$default_kb}
  check_size "$kb"
  plan_mount "$ltran" "$kb" ltran
  kb=${LSTACK_SIZE:-$default_kb}
  check_size "$kb"
  plan_mount "$lstack" "$kb" lstack
}

action_lines() {
  local i
  for i in "${!P_NODE[@]}"; do
    printf 'set %s from %s to %s\n' "$(pool_name "${P_NODE[$i]}" "${P_KB[$i]}")" "${P_FROM[$i]}" "${P_TO[$i]}"
  done
  for i in "${!D_PATH[@]}"; do printf 'create directory %s (mode 0700)\n' "${D_PATH[$i]}"; done
  for i in "${!MT_PATH[@]}"; do
    printf 'mount hugetlbfs on %s for %s (%s)\n' "${MT_PATH[$i]}" "${MT_FOR[$i]}" "$(mount_options "${MT_KB[$i]}")"
  done
}

mount_options() { printf 'pagesize=%s,mode=0700' "$(size_name "$1")"; }

# ---- applying -----------------------------------------------------------------

# What this run changed, to put back on failure, oldest first: "pool<US>PATH<US>VALUE<US>NAME",
# "mount<US>PATH", "dir<US>PATH" (US: the unit separator, which no path holds).
readonly US=$'\x1f'
UNDO=()
APPLYING=0

# put_back: undoes UNDO, newest first; sets PUT_BACK to what it did.
put_back() {
  local i kind path value name
  local -a done_list=()
  for ((i = ${#UNDO[@]} - 1; i >= 0; i--)); do
    IFS=$US read -r kind path value name <<<"${UNDO[$i]}"
    case $kind in
      pool)
        if { printf '%s\n' "$value" >"$path"; } 2>/dev/null; then
          done_list+=("$name to $value")
        else
          done_list+=("could not put $name back to $value")
        fi
        ;;
      mount)
        if umount -- "$path" 2>/dev/null; then done_list+=("unmounted $path"); else done_list+=("could not unmount $path"); fi
        ;;
      dir)
        if rmdir -- "$path" 2>/dev/null; then done_list+=("removed $path"); else done_list+=("could not remove $path"); fi
        ;;
    esac
  done
  UNDO=()
  APPLYING=0
  PUT_BACK=nothing
  if ((${#done_list[@]})); then
    PUT_BACK=${done_list[0]}
    for ((i = 1; i < ${#done_list[@]}; i++)); do PUT_BACK+=", ${done_list[$i]}"; done
  fi
}

on_exit() {
  local rc=$?
  if ((APPLYING)); then
    put_back
    printf '%s: error: interrupted; put back: %s\n' "$PROG" "$PUT_BACK" >&2
    ((rc)) || rc=$EX_FAIL
  fi
  exit "$rc"
}

fail_apply() { # WHAT ERROR
  put_back
  die "$EX_FAIL" "$1 failed: $2; put back: $PUT_BACK"
}

# make_dirs PATH: creates PATH (mode 0700) and its missing parents (0755), recording each.
make_dirs() {
  local path=$1 p err mode
  local -a missing=()
  p=$path
  while [[ ! -e $p && $p != / ]]; do
    missing=("$p" "${missing[@]}")
    p=$(dirname -- "$p")
  done
  for p in "${missing[@]}"; do
    mode=0755
    [[ $p == "$path" ]] && mode=0700
    err=$(mkdir -m "$mode" -- "$p" 2>&1) || fail_apply "create directory $path" "${err##*: }"
    UNDO+=("dir$US$p")
  done
}

apply() {
  local i path want name where err
  APPLYING=1
  for i in "${!P_NODE[@]}"; do
    path=$(pool_dir "${P_NODE[$i]}" "${P_KB[$i]}")/nr_hugepages
    want=${P_TO[$i]}
    name=$(pool_name "${P_NODE[$i]}" "${P_KB[$i]}")
    UNDO+=("pool$US$path$US${P_FROM[$i]}$US$name")
    err=$({ printf '%s\n' "$want" >"$path"; } 2>&1) || fail_apply "set $name to $want" "${err##*: }"
    read_count "$path"
    if ((COUNT != want)); then
      where="machine-wide"
      [[ -z ${P_NODE[$i]} ]] || where="on node ${P_NODE[$i]}"
      put_back
      die "$EX_SHORTFALL" "asked the kernel for $want $(size_name "${P_KB[$i]}") pages $where and it has $COUNT (not enough contiguous free memory); put back: $PUT_BACK; ask for fewer pages, free some memory, or reserve them at boot (hugepagesz=$(size_name "${P_KB[$i]}") hugepages=$want on the kernel command line)"
    fi
    say "set $name from ${P_FROM[$i]} to $want"
  done
  for i in "${!D_PATH[@]}"; do
    make_dirs "${D_PATH[$i]}"
    say "create directory ${D_PATH[$i]} (mode 0700)"
  done
  for i in "${!MT_PATH[@]}"; do
    path=${MT_PATH[$i]}
    err=$(mount -t hugetlbfs -o "$(mount_options "${MT_KB[$i]}")" nodev "$path" 2>&1) ||
      fail_apply "mount hugetlbfs on $path" "${err##*: }"
    UNDO+=("mount$US$path")
    say "mount hugetlbfs on $path for ${MT_FOR[$i]} ($(mount_options "${MT_KB[$i]}"))"
  done
  UNDO=()
  APPLYING=0
}

main() {
  parse_args "$@"
  load_sizes
  load_nodes
  load_mounts
  DEFAULT_KB=$(meminfo_kb "$PROC/meminfo" Hugepagesize) || DEFAULT_KB=
  if ((STATUS)); then
    if ((JSON)); then status_json; else status_table; fi
    return 0
  fi
  if ((DRY_RUN == 0 && EUID != 0)); then
    die "$EX_NOT_ROOT" "changing hugepage pools and mounting hugetlbfs needs root (running as uid $EUID): run as root; reading the status and a dry run need no root"
  fi
  local kb i
  for kb in "${REQ_KB[@]}"; do check_size "$kb"; done
  plan_pools
  plan_mounts
  check_memory
  check_thp

  local actions note
  actions=$(action_lines)
  for note in "${NOTES[@]}"; do say "$note"; done
  for i in "${!WARNINGS[@]}"; do warn "${WARNINGS[$i]}"; done
  if [[ -z $actions ]]; then
    if ((DRY_RUN)); then say "dry run: nothing to change, the machine already matches the request"; else say "nothing to change: the machine already matches the request"; fi
    return 0
  fi
  if ((DRY_RUN)); then
    while IFS= read -r i; do say "would $i"; done <<<"$actions"
    say "dry run: nothing was changed"
    return 0
  fi
  trap on_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  apply
  say "done"
}

main "$@"
