#!/usr/bin/env bash
# Runs every test executable of the workspace, several at a time (docs/testing.md#running-tests-side-by-side).
#
#   scripts/run-tests.sh [JOBS]     default: LARK_SINK_TEST_JOBS, else 3
#
# Why: `cargo test` runs its test executables one after another, and the end-to-end ones spend most
# of their time waiting (on the broker, on rebalances, on timeouts they provoke): on 2 cores the
# suite took ~9.5 min that way. Every test has its own topics, consumer group, emulator and (when
# it stops or abuses the broker) its own broker, so the executables can run side by side.
#
# What it does: builds the test executables (`cargo test --no-run`, nothing new when step 3 of
# scripts/test.sh already built them), starts them slowest first, at most JOBS at a time, each
# in its package's directory as `cargo test` would, and keeps each one's output in a file. An
# executable's output is printed whole when it ends, so outputs never interleave. Then the doc
# tests (`cargo test --doc`). Exits non-zero if any failed, after naming every one that did.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${1:-${LARK_SINK_TEST_JOBS:-3}}
out=target/test-runs
rm -rf "$out"
mkdir -p "$out"

# Slowest first (measured on 2 cores, docs/testing.md), so the longest ones do not start last
# and the run's end is not one long test running alone. Executables not named here run after.
slow_first=(crash storm broker_restart faults broker_kills lifecycle storm_crash engine results lookup operations pipeline events
  security corpus webhooks transforms check sdk restore state demo)

# cargo's JSON lines name each test executable and its package's manifest; one line per
# executable: "<target name> <executable> <package dir>".
cargo test --workspace --locked --no-run --message-format=json 2>"$out/build.log" |
  grep '"reason":"compiler-artifact"' | grep '"executable":"/' | grep -E '"profile":\{[^}]*"test":true' |
  sed -E 's/.*"manifest_path":"([^"]*)\/Cargo.toml".*"target":\{[^}]*"name":"([^"]*)".*"executable":"([^"]*)".*/\2 \3 \1/' \
    >"$out/executables" || { cat "$out/build.log"; exit 1; }
[ -s "$out/executables" ] || { echo "no test executables found"; cat "$out/build.log"; exit 1; }

ordered=()
for name in "${slow_first[@]}"; do
  while read -r n exe dir; do [ "$n" = "$name" ] && ordered+=("$n $exe $dir"); done <"$out/executables"
done
while read -r n exe dir; do
  case " ${slow_first[*]} " in *" $n "*) ;; *) ordered+=("$n $exe $dir") ;; esac
done <"$out/executables"

# One executable: its output into <out>/<n>-<hash>.log, its status into .rc.
run_one() {
  local n=$1 exe=$2 dir=$3 log
  log="$out/$n-$(basename "$exe").log"
  local start=$SECONDS rc=0
  (cd "$dir" && "$exe") >"$log" 2>&1 || rc=$?
  echo "$rc" >"${log%.log}.rc"
  { echo "===== $n ($(basename "$exe")): exit $rc after $((SECONDS - start)) s"; cat "$log"; } >"${log%.log}.done"
}

running=0
started=$SECONDS
for entry in "${ordered[@]}"; do
  # shellcheck disable=SC2086
  set -- $entry
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  run_one "$1" "$2" "$3" &
  running=$((running + 1))
  # Print what has ended since (in the order it ended).
  for d in "$out"/*.done; do [ -e "$d" ] && { cat "$d"; mv "$d" "${d%.done}.shown"; }; done
done
wait
for d in "$out"/*.done; do [ -e "$d" ] && { cat "$d"; mv "$d" "${d%.done}.shown"; }; done

doc_rc=0
cargo test --workspace --locked --doc >"$out/doc-tests.log" 2>&1 || doc_rc=$?
echo "===== doc tests: exit $doc_rc"
cat "$out/doc-tests.log"

failed=()
for rc in "$out"/*.rc; do
  [ "$(cat "$rc")" = 0 ] || failed+=("$(basename "${rc%.rc}")")
done
[ "$doc_rc" = 0 ] || failed+=("doc tests")
echo "test executables: ${#ordered[@]} run, $jobs at a time, in $((SECONDS - started)) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]} (each one's whole output is above, and in $out/)"
  exit 1
fi
echo "all passed"
