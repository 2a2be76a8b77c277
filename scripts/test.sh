#!/usr/bin/env bash
# Installs everything the tests need (skipping what is already there) and runs every test:
# unit tests, the emulator's tests, the end-to-end tests against a real broker, and a short fuzz run.
# This is the command the README gives and the one .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

# 1. System packages (skipped when present): promtool for the metrics test (Debian's
#    'prometheus'), OpenSSL headers for librdkafka's TLS, the openssl command for the test
#    certificates and socat as the secured brokers' TLS terminator (scripts/broker.sh says why).
#    Python 3 with venv for the SDK test. Then the broker (slow once, then skipped) and the
#    official Lark SDKs the SDK test drives the emulator with (scripts/sdk.sh; skipped when present).
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
pkg-config --exists openssl 2>/dev/null || need+=(libssl-dev pkg-config)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v socat >/dev/null 2>&1 || need+=(socat)
# The SDK test's virtualenv (scripts/sdk.sh): Debian's python3 needs python3-venv for `-m venv`.
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3 python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
scripts/broker.sh install
scripts/sdk.sh install

# 1c. The build cache. A clean checkout (CI's) has no target/, and most of a workspace build is
#    the dependencies (librdkafka's C build alone is minutes). So builds go to a target directory
#    kept per user outside the checkout: every clone of the repository shares its dependencies'
#    builds, and a warm run compiles only the workspace's own crates (cargo names a workspace
#    crate's files after its path inside the workspace, so clones overwrite one another's instead
#    of piling up). Old dependency versions do pile up: past 40 GiB the cache is emptied first.
#    LARK_SINK_BUILD_CACHE=off (or an explicit CARGO_TARGET_DIR) builds where cargo would.
cache=${LARK_SINK_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lark-sink-build}
fuzz_target_dir=""
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ "$cache" != off ]; then
  mkdir -p "$cache"
  if [ "$(du -sk "$cache" | cut -f1)" -gt $((40 * 1024 * 1024)) ]; then
    echo "build cache $cache is over 40 GiB: emptying it"
    rm -rf "${cache:?}/target" "${cache:?}/fuzz-target"
  fi
  # Cargo tells whether a workspace crate must be built again by its files' times. A build from
  # another clone made after this clone's files were written would look fresh for this one: when
  # the cache was last used by another checkout, this checkout's files are made newer than it.
  if [ "$(cat "$cache/checkout" 2>/dev/null)" != "$PWD" ]; then
    { git ls-files -z 2>/dev/null || find . -path ./target -prune -o -type f -print0; } |
      xargs -0 touch --no-create
    echo "$PWD" >"$cache/checkout"
  fi
  export CARGO_TARGET_DIR="$cache/target"
  fuzz_target_dir="$cache/fuzz-target"
  echo "build cache: $cache"
fi

# 2. One build of the whole workspace, shared by every test below. The fuzz targets of step 5 are
#    built meanwhile in the background at the lowest priority (nice 19): they take what CPU the
#    workspace build leaves, then the CPU the end-to-end tests leave while they wait. Not with
#    arguments (see step 4).
fuzz_seconds=${LARK_SINK_FUZZ_SECONDS:-25}
fuzz_build=""
if [ $# -eq 0 ] && [ "$fuzz_seconds" -gt 0 ]; then
  mkdir -p target
  # Its own process group (job control on for this one command), so a failing run can stop it
  # with everything it started. Not its own session (setsid): a new session is a new scheduler
  # autogroup, and nice would then count for nothing against the workspace build.
  set -m
  LARK_SINK_FUZZ_TARGET_DIR=$fuzz_target_dir nice -n 19 scripts/fuzz.sh build >target/fuzz-build.log 2>&1 &
  fuzz_build=$!
  set +m
fi
stop_fuzz_build() { [ -z "$fuzz_build" ] || kill -- "-$fuzz_build" 2>/dev/null || true; }
trap stop_fuzz_build EXIT
cargo build --workspace --all-targets --locked

# 3. Fresh brokers for this run (the plain one, and the secured ones on the next four ports),
#    stopped however the run ends.
export LARK_SINK_BROKER_PORT=${LARK_SINK_BROKER_PORT:-19092}
trap 'stop_fuzz_build; scripts/broker.sh stop' EXIT
scripts/broker.sh start
scripts/broker.sh start-secure
export LARK_SINK_TEST_BROKER="127.0.0.1:$LARK_SINK_BROKER_PORT"
# shellcheck disable=SC1091
source "${LARK_SINK_BROKER_DIR:-.broker}-secure/env"

# 4. Everything, several test executables at a time (scripts/run-tests.sh says why). Arguments (a
#    test-name filter, `-- --nocapture`, ...) run plain `cargo test` with them instead, one
#    executable at a time, and skip the fuzz run.
if [ $# -gt 0 ]; then
  cargo test --workspace --locked "$@"
  exit 0
fi
tests_rc=0
scripts/run-tests.sh || tests_rc=$?

# 5. A short fuzz run of each target (fuzz/; nightly and cargo-fuzz installed when missing), 25 s
#    each unless LARK_SINK_FUZZ_SECONDS says otherwise (0 skips). Long runs: docs/testing.md#fuzzing.
#    Failed tests end the run here (the EXIT trap stops the fuzz build).
[ "$tests_rc" = 0 ] || exit "$tests_rc"
if [ -n "$fuzz_build" ]; then
  fuzz_rc=0
  wait "$fuzz_build" || fuzz_rc=$?
  fuzz_build=""
  echo "===== fuzz build: exit $fuzz_rc"
  cat target/fuzz-build.log
  [ "$fuzz_rc" = 0 ] || exit "$fuzz_rc"
  LARK_SINK_FUZZ_TARGET_DIR=$fuzz_target_dir scripts/fuzz.sh "$fuzz_seconds"
fi
