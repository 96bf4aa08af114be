#!/usr/bin/env bash
# Fuzzes lstack's frame classifier (fuzz/fuzz_targets/classify.rs) with
# libFuzzer through cargo-fuzz for a fixed time.
#
#   scripts/fuzz.sh [SECONDS]        # default 30; CI runs `scripts/fuzz.sh 30`
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
# classify; the target's header flags (RxChecked) let mutated frames past them.
#
# The committed seeds (fuzz/corpus/TARGET) are only read: libFuzzer writes
# what it finds into a scratch corpus (fuzz/scratch/TARGET, git-ignored, kept
# between local runs; FUZZ_FRESH=1 empties it first). To fold findings back
# into the seeds, minimise them with `cargo fuzz cmin` and review by hand.
#
# Environment:
#   FUZZ_TARGET        fuzz target (default: classify)
#   FUZZ_SANITIZER     none (default) or address
#   FUZZ_NICE          nice level for build and run (default: 10)
#   FUZZ_FRESH         1: start from the seeds only
#   FUZZ_ARGS          extra libFuzzer arguments, e.g. "-seed=1 -dict=..."
#   CARGO_FUZZ_VERSION version installed when cargo-fuzz is missing (0.13.2)
set -euo pipefail

secs="${1:-30}"
case "$secs" in
'' | *[!0-9]*)
    echo "usage: $0 [SECONDS]" >&2
    exit 2
    ;;
esac
target="${FUZZ_TARGET:-classify}"
sanitizer="${FUZZ_SANITIZER:-none}"
nice_level="${FUZZ_NICE:-10}"
cargo_fuzz_version="${CARGO_FUZZ_VERSION:-0.13.2}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
fuzz_dir="fuzz"
seeds="$fuzz_dir/corpus/$target"
scratch="$fuzz_dir/scratch/$target"
artifacts="$fuzz_dir/artifacts/$target"
log_file="$fuzz_dir/scratch/$target.log"

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

# --- build -----------------------------------------------------------------
say "building fuzz target '$target' (sanitizer: $sanitizer; the first build takes a few minutes)"
start=$SECONDS
if ! run_nice cargo fuzz build "${flags[@]}" "$target"; then
    say "FAILED: the fuzz target '$target' does not build (see the errors above)"
    exit 1
fi
say "built in $((SECONDS - start)) s"

# --- corpus ----------------------------------------------------------------
if [ ! -d "$seeds" ] || [ -z "$(ls -A "$seeds")" ]; then
    echo "no seed corpus in $seeds (regenerate it: cargo run --release --manifest-path fuzz/Cargo.toml --example gen_corpus)" >&2
    exit 2
fi
if [ "${FUZZ_FRESH:-0}" = 1 ]; then
    rm -rf "$scratch"
fi
mkdir -p "$scratch" "$artifacts"
say "seeds: $(ls "$seeds" | wc -l) files in $seeds (read only); scratch corpus: $(ls "$scratch" | wc -l) files in $scratch"

# --- run -------------------------------------------------------------------
stamp="$(mktemp)"
trap 'rm -f "$stamp"' EXIT
# libFuzzer's arguments: stop after $secs s; frames up to 1518 bytes (plus
# VLAN tag) after the target's 28-byte header; a hung input is a finding.
# shellcheck disable=SC2206
lf_args=(-max_total_time="$secs" -max_len=1600 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 ${FUZZ_ARGS:-})
say "fuzzing '$target' for $secs s (libFuzzer ${lf_args[*]}); full log: $log_file"
set +e
# The scratch directory comes first: libFuzzer adds new inputs to the first
# corpus directory only. New-input lines and the dictionary go to the log only.
run_nice cargo fuzz run "${flags[@]}" "$target" "$scratch" "$seeds" -- "${lf_args[@]}" 2>&1 |
    tee "$log_file" |
    grep --line-buffered -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE)|^"|^###### '
status=${PIPESTATUS[0]}
set -e

found=()
while IFS= read -r f; do found+=("$f"); done < <(find "$artifacts" -type f -newer "$stamp" | sort)

summary="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log_file" | tail -n 1 || true)"
if [ "$status" -eq 0 ] && [ ${#found[@]} -eq 0 ]; then
    say "no crash in $secs s: ${summary:-(no DONE line)}"
    say "scratch corpus now $(ls "$scratch" | wc -l) files"
    exit 0
fi

if [ ${#found[@]} -eq 0 ]; then
    say "FAILED (exit $status) without a saved input: build or harness problem, see $log_file"
    exit "$status"
fi
say "FAILED (exit $status): libFuzzer found ${#found[@]} failing input(s)"
# The panic (file:line and message) or sanitizer report, and libFuzzer's verdict.
grep -E -A 2 "panicked at|^==[0-9]+==ERROR" "$log_file" | head -n 6 | sed 's/^/    /' || true
grep -E -m 1 "^SUMMARY" "$log_file" | sed 's/^/    /' || true
for f in "${found[@]}"; do
    say "input saved at $root/$f ($(wc -c <"$f") bytes); hex:"
    od -An -tx1 -v "$f" | sed 's/^ */    /'
    say "replay:   ${env_prefix}cargo fuzz run ${flags[*]} $target $f"
    say "minimise: ${env_prefix}cargo fuzz tmin ${flags[*]} $target $f"
done
if [ "$status" -eq 0 ]; then status=1; fi
exit "$status"
