#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for a while each (docs/testing.md#fuzzing).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]    default: 25 s per target, every target
#   scripts/fuzz.sh build                    only build the targets (scripts/test.sh does this
#                                            while the tests run, so the fuzz run starts at once)
#
# Installs the nightly toolchain and cargo-fuzz only when they are missing. Each target keeps its
# working corpus in fuzz/corpus/<target> (git-ignored, grows across runs) and reads its seeds from
# tests/corpus/cases (record) or fuzz/seeds/<target> (lark_answer). A crash, a panic or an input
# slower than 10 s stops the run, exits non-zero and leaves the input in fuzz/artifacts/<target>/:
# fix it and add the input to tests/corpus as a regression case.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-25}
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(record lark_answer)

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

cd fuzz
# The same flags as the runs below, so a run after `build` builds nothing.
build_flags=(--sanitizer none --debug-assertions)
# scripts/test.sh's build cache (its step 1c): the fuzz build's own directory there, so that it
# neither waits for the workspace build's lock nor starts from nothing in a clean checkout.
[ -z "${LARK_SINK_FUZZ_TARGET_DIR:-}" ] || build_flags+=(--target-dir "$LARK_SINK_FUZZ_TARGET_DIR")
if [ "$seconds" = build ]; then
  exec cargo +nightly fuzz build "${build_flags[@]}"
fi
# The targets run side by side (each is one process on one core), each into its own log. A log is
# printed whole when its run failed, else its last lines (libFuzzer's final stats).
mkdir -p logs
pids=()
for t in "${targets[@]}"; do
  case $t in
    record) seeds=../tests/corpus/cases; opts=(-dict=record.dict -max_len=8192) ;;
    *) seeds=seeds/$t; opts=(-max_len=4096) ;;
  esac
  mkdir -p "corpus/$t"
  echo "fuzzing $t for ${seconds}s (log: fuzz/logs/$t.log)"
  # --sanitizer none: the fuzzed code is safe Rust (no C, no unsafe of ours), and without ASan
  # the short CI run tries about twice as many inputs; debug assertions catch overflows.
  cargo +nightly fuzz run "${build_flags[@]}" "$t" "corpus/$t" "$seeds" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 "${opts[@]}" >"logs/$t.log" 2>&1 &
  pids+=($!)
done
failed=()
for i in "${!targets[@]}"; do
  t=${targets[$i]}
  if wait "${pids[$i]}"; then
    echo "===== fuzz $t: passed"
    grep -E '^Done|^stat::' "logs/$t.log" || tail -n 15 "logs/$t.log"
  else
    echo "===== fuzz $t: FAILED"
    cat "logs/$t.log"
    failed+=("$t")
  fi
done
[ ${#failed[@]} -eq 0 ] || { echo "fuzzing failed: ${failed[*]} (inputs in fuzz/artifacts/)"; exit 1; }
