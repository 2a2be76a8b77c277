#!/usr/bin/env bash
# A real Kafka-protocol broker for the end-to-end tests: tansu 0.6 with durable SQLite storage.
#
#   scripts/broker.sh install   cargo-install tansu unless a 0.6 build is already on PATH (about 14 min once, measured on 2 cores)
#   scripts/broker.sh start     start it on 127.0.0.1:$LARK_SINK_BROKER_PORT (default 19092), fresh data
#   scripts/broker.sh resume    start it again on the data a stopped broker left (broker-restart test)
#   scripts/broker.sh stop      stop it
#   scripts/broker.sh status    say whether it runs
#
# Why sqlite: tansu's memory:// engine answers "earliest" offset queries with the end offset, so a
# fresh consumer group would miss every record; with sqlite, groups, commits, rebalances and
# auto.offset.reset=earliest behave like Kafka.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${LARK_SINK_BROKER_DIR:-$ROOT/.broker}
PORT=${LARK_SINK_BROKER_PORT:-19092}
TANSU=${TANSU_BIN:-$(command -v tansu || echo "$HOME/.cargo/bin/tansu")}

have_tansu() {
  [ -x "$TANSU" ] && "$TANSU" --version 2>/dev/null | grep -q ' 0\.6\.'
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

case "${1:-}" in
  install)
    if have_tansu; then
      echo "broker: $("$TANSU" --version) already installed at $TANSU (skipping)"
    else
      echo "broker: installing tansu 0.6 with cargo (about 14 minutes on 2 idle cores, once)"
      cargo install tansu --version '^0.6' --locked --features dynostore,libsql
    fi
    ;;
  start|resume)
    have_tansu || { echo "broker: tansu not installed; run scripts/broker.sh install" >&2; exit 1; }
    if port_open; then
      echo "broker: something already listens on 127.0.0.1:$PORT" >&2; exit 1
    fi
    if [ "$1" = start ]; then rm -rf "$STATE"; fi
    mkdir -p "$STATE"
    (
      cd "$STATE"
      nohup "$TANSU" broker \
        --kafka-cluster-id lark-sink-test \
        --kafka-listener-url "tcp://127.0.0.1:$PORT" \
        --kafka-advertised-listener-url "tcp://127.0.0.1:$PORT" \
        --storage-engine "sqlite://broker.db" \
        >>broker.log 2>&1 &
      echo $! >broker.pid
    )
    for _ in $(seq 1 100); do
      if port_open; then echo "broker: tansu listening on 127.0.0.1:$PORT (pid $(cat "$STATE/broker.pid"), log $STATE/broker.log)"; exit 0; fi
      if ! kill -0 "$(cat "$STATE/broker.pid")" 2>/dev/null; then break; fi
      sleep 0.2
    done
    echo "broker: tansu did not start; its log:" >&2; cat "$STATE/broker.log" >&2; exit 1
    ;;
  stop)
    if [ -f "$STATE/broker.pid" ]; then
      pid=$(cat "$STATE/broker.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$STATE/broker.pid"
      echo "broker: stopped"
    fi
    ;;
  status)
    if port_open; then echo "broker: running on 127.0.0.1:$PORT"; else echo "broker: not running"; exit 1; fi
    ;;
  *)
    echo "usage: $0 install|start|resume|stop|status" >&2; exit 2
    ;;
esac
