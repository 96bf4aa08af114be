#!/usr/bin/env bash
# Fuzzes lstack with libFuzzer through cargo-fuzz for a fixed time:
#   classify  the frame classifier alone (fuzz/fuzz_targets/classify.rs)
#   ingest    the whole receive path minus DPDK: the engine's own per-frame
#             policy (lstack::fuzzing), then smoltcp's ingress / egress /
#             timers with the engine's shards and listener pool
#             (fuzz/fuzz_targets/ingest.rs, fuzz/src/ingest.rs)
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS (default 30) is the total fuzzing time, split evenly between the
# targets (at least 1 s each): `scripts/fuzz.sh 30` (what CI runs) fuzzes
# classify and ingest for 15 s each; `scripts/fuzz.sh 120 ingest` fuzzes
# ingest alone for 120 s. Without TARGET: every target of fuzz/Cargo.toml
# (or FUZZ_TARGET, if set). The targets are built first, then run one after
# the other; a target that fails does not stop the others.
#
# Exits 0 when the time ran out without a finding, non-zero on a crash (panic,
# failed invariant, timeout, out-of-memory) or a build failure, and then says
# where libFuzzer saved the input and how to replay it.
#
# It builds with the stable toolchain of rust-toolchain.toml: cargo-fuzz's
# coverage flags (-Cpasses=sancov-module, -Cllvm-args=-sanitizer-coverage-*)
# are stable, and `-s none` needs no -Z flag. With FUZZ_SANITIZER=address,
# `-Zsanitizer=address` needs RUSTC_BOOTSTRAP=1 (the ASan runtime ships with
# stable). `--no-cfg-fuzzing` keeps smoltcp's real checksum checks: under
# `cfg(fuzzing)` they always pass, which would hide the checksum branches of
# classify; the targets' header flags (RxChecked) let mutated frames past them.
#
# The committed seeds (fuzz/corpus/TARGET) are only read: libFuzzer writes
# what it finds into a scratch corpus (fuzz/scratch/TARGET, git-ignored, kept
# between local runs; FUZZ_FRESH=1 empties it first). To fold findings back
# into the seeds, minimise them with `cargo fuzz cmin` and review by hand.
# Regenerate the seeds with
#   cargo run --release --manifest-path fuzz/Cargo.toml --example gen_corpus
#
# Environment:
#   FUZZ_TARGET        target(s) when none is given, space-separated (default: all)
#   FUZZ_SANITIZER     none (default) or address
#   FUZZ_NICE          nice level for build and run (default: 10)
#   FUZZ_FRESH         1: start from the seeds only
#   FUZZ_ARGS          extra libFuzzer arguments, e.g. "-seed=1 -dict=..."
#   CARGO_FUZZ_VERSION version installed when cargo-fuzz is missing (0.13.2)
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"
}
case "${1:-}" in
-h | --help)
    usage
    exit 0
    ;;
esac
secs="${1:-30}"
case "$secs" in
'' | *[!0-9]*)
    echo "usage: $0 [SECONDS] [TARGET...]   (--help for more)" >&2
    exit 2
    ;;
esac
shift $(($# > 0 ? 1 : 0))
sanitizer="${FUZZ_SANITIZER:-none}"
nice_level="${FUZZ_NICE:-10}"
cargo_fuzz_version="${CARGO_FUZZ_VERSION:-0.13.2}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
fuzz_dir="fuzz"

say() { printf '==> fuzz.sh: %s\n' "$*"; }
run_nice() { nice -n "$nice_level" "$@"; }

# --- cargo-fuzz ------------------------------------------------------------
if ! cargo fuzz --version >/dev/null 2>&1; then
    say "cargo-fuzz is missing: installing cargo-fuzz $cargo_fuzz_version from crates.io (about a minute)"
    start=$SECONDS
    run_nice cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
    say "cargo-fuzz installed in $((SECONDS - start)) s"
fi
say "using $(cargo fuzz --version), $(rustc --version)"

flags=(--sanitizer "$sanitizer" --no-cfg-fuzzing)
env_prefix=""
case "$sanitizer" in
none) ;;
address)
    # -Zsanitizer on a stable compiler; its own target directory, so that
    # switching between the two does not rebuild everything each time.
    export RUSTC_BOOTSTRAP=1
    env_prefix="RUSTC_BOOTSTRAP=1 "
    flags+=(--target-dir "$fuzz_dir/target/asan")
    ;;
*)
    echo "FUZZ_SANITIZER must be none or address, not '$sanitizer'" >&2
    exit 2
    ;;
esac

# --- targets ---------------------------------------------------------------
known=()
while IFS= read -r t; do known+=("$t"); done < <(cargo fuzz list --fuzz-dir "$fuzz_dir")
if [ $# -gt 0 ]; then
    targets=("$@")
elif [ -n "${FUZZ_TARGET:-}" ]; then
    read -r -a targets <<<"$FUZZ_TARGET"
else
    targets=("${known[@]}")
fi
for t in "${targets[@]}"; do
    case " ${known[*]} " in
    *" $t "*) ;;
    *)
        echo "unknown fuzz target '$t' (known: ${known[*]})" >&2
        exit 2
        ;;
    esac
    if [ ! -d "$fuzz_dir/corpus/$t" ] || [ -z "$(ls -A "$fuzz_dir/corpus/$t")" ]; then
        echo "no seed corpus in $fuzz_dir/corpus/$t (regenerate it: cargo run --release --manifest-path fuzz/Cargo.toml --example gen_corpus)" >&2
        exit 2
    fi
done
per_target=$((secs / ${#targets[@]}))
if [ "$per_target" -lt 1 ]; then per_target=1; fi

# Longest input: classify takes one frame (up to 1518 bytes plus a VLAN tag)
# after its 28-byte header; ingest up to 8 records of frames.
max_len() {
    case "$1" in
    classify) echo 1600 ;;
    *) echo 4096 ;;
    esac
}

# --- build -----------------------------------------------------------------
start=$SECONDS
for t in "${targets[@]}"; do
    say "building fuzz target '$t' (sanitizer: $sanitizer; the first build takes a few minutes)"
    if ! run_nice cargo fuzz build "${flags[@]}" "$t"; then
        say "FAILED: the fuzz target '$t' does not build (see the errors above)"
        exit 1
    fi
done
say "built in $((SECONDS - start)) s"

# --- run -------------------------------------------------------------------
stamp="$(mktemp)"
trap 'rm -f "$stamp"' EXIT

# Fuzzes target $1 for $per_target s; returns non-zero on a finding.
fuzz_one() {
    local target="$1"
    local seeds="$fuzz_dir/corpus/$target"
    local scratch="$fuzz_dir/scratch/$target"
    local artifacts="$fuzz_dir/artifacts/$target"
    local log_file="$fuzz_dir/scratch/$target.log"
    if [ "${FUZZ_FRESH:-0}" = 1 ]; then
        rm -rf "$scratch"
    fi
    mkdir -p "$scratch" "$artifacts"
    say "seeds: $(ls "$seeds" | wc -l) files in $seeds (read only); scratch corpus: $(ls "$scratch" | wc -l) files in $scratch"

    touch "$stamp"
    # libFuzzer's arguments: stop after $per_target s; inputs up to
    # max_len; a hung input is a finding.
    # shellcheck disable=SC2206
    local lf_args=(-max_total_time="$per_target" -max_len="$(max_len "$target")" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 ${FUZZ_ARGS:-})
    say "fuzzing '$target' for $per_target s (libFuzzer ${lf_args[*]}); full log: $log_file"
    set +e
    # The scratch directory comes first: libFuzzer adds new inputs to the first
    # corpus directory only. New-input lines and the dictionary go to the log only.
    run_nice cargo fuzz run "${flags[@]}" "$target" "$scratch" "$seeds" -- "${lf_args[@]}" 2>&1 |
        tee "$log_file" |
        grep --line-buffered -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE)|^"|^###### '
    local status=${PIPESTATUS[0]}
    set -e

    local found=()
    while IFS= read -r f; do found+=("$f"); done < <(find "$artifacts" -type f -newer "$stamp" | sort)

    local summary
    summary="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log_file" | tail -n 1 || true)"
    if [ "$status" -eq 0 ] && [ ${#found[@]} -eq 0 ]; then
        say "'$target': no crash in $per_target s: ${summary:-(no DONE line)}"
        say "'$target': scratch corpus now $(ls "$scratch" | wc -l) files"
        return 0
    fi

    if [ ${#found[@]} -eq 0 ]; then
        say "'$target' FAILED (exit $status) without a saved input: build or harness problem, see $log_file"
        return "$status"
    fi
    say "'$target' FAILED (exit $status): libFuzzer found ${#found[@]} failing input(s)"
    # The panic (file:line and message) or sanitizer report, and libFuzzer's verdict.
    grep -E -A 2 "panicked at|^==[0-9]+==ERROR" "$log_file" | head -n 6 | sed 's/^/    /' || true
    grep -E -m 1 "^SUMMARY" "$log_file" | sed 's/^/    /' || true
    local f
    for f in "${found[@]}"; do
        say "input saved at $root/$f ($(wc -c <"$f") bytes); hex:"
        od -An -tx1 -v "$f" | sed 's/^ */    /'
        say "replay:   ${env_prefix}cargo fuzz run ${flags[*]} $target $f"
        say "minimise: ${env_prefix}cargo fuzz tmin ${flags[*]} $target $f"
    done
    if [ "$status" -eq 0 ]; then status=1; fi
    return "$status"
}

failed=()
final=0
for t in "${targets[@]}"; do
    if fuzz_one "$t"; then
        :
    else
        rc=$?
        failed+=("$t")
        if [ "$final" -eq 0 ]; then final=$rc; fi
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    say "FAILED: ${failed[*]} (of ${targets[*]})"
    exit "$final"
fi
say "all targets passed: ${targets[*]} ($per_target s each)"
