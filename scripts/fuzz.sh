#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for a while each (docs/testing.md#fuzzing).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]    default: 25 s per target, every target
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
for t in "${targets[@]}"; do
  case $t in
    record) seeds=../tests/corpus/cases; opts=(-dict=record.dict -max_len=8192) ;;
    *) seeds=seeds/$t; opts=(-max_len=4096) ;;
  esac
  mkdir -p "corpus/$t"
  echo "fuzzing $t for ${seconds}s"
  # --sanitizer none: the fuzzed code is safe Rust (no C, no unsafe of ours), and without ASan
  # the short CI run tries about twice as many inputs; debug assertions catch overflows.
  cargo +nightly fuzz run --sanitizer none --debug-assertions "$t" "corpus/$t" "$seeds" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 "${opts[@]}"
done
