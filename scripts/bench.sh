#!/usr/bin/env bash
# Runs the delivery-engine benchmark (docs/performance.md) in release mode against a fresh local
# tansu broker: scripts/bench.sh [--quick] [--scenario ceiling,hot,engine,latency,memory,storm] [--records N]
# A full run takes about 10 minutes (the ceiling scenario alone runs 3 minutes at Lark's limit).
# The benchmark is its own binary (bench/, lark-sink-bench); it measures the release lark-sink.
set -euo pipefail
cd "$(dirname "$0")/.."
# The benchmark's figures include the broker's own speed, so it runs the optimised build of the
# test broker (built once, like the tests' unoptimised one; docs/testing.md#build-time), unless
# LARK_SINK_BROKER_PROFILE says otherwise.
export LARK_SINK_BROKER_PROFILE=${LARK_SINK_BROKER_PROFILE:-release}
scripts/broker.sh install
cargo build --release --locked -p lark-sink -p lark-sink-bench
export LARK_SINK_BROKER_PORT=${LARK_SINK_BROKER_PORT:-19092}
scripts/broker.sh start
trap 'scripts/broker.sh stop' EXIT
LARK_SINK_BIN=target/release/lark-sink \
  target/release/lark-sink-bench --broker "127.0.0.1:$LARK_SINK_BROKER_PORT" "$@"
