#!/usr/bin/env bash
# A real Kafka-protocol broker for the end-to-end tests: tansu 0.6 with durable SQLite storage,
# built with lark-sink's patch to its storage loop (tools/test-broker; docs/testing.md#the-test-broker).
#
#   scripts/broker.sh install   build the patched tansu unless this exact build is installed (once; docs/testing.md has the time)
#   scripts/broker.sh start     start it on 127.0.0.1:$LARK_SINK_BROKER_PORT (default 19092), fresh data
#   scripts/broker.sh resume    start it again on the data a stopped broker left (broker-restart test)
#   scripts/broker.sh stop      stop it
#   scripts/broker.sh status    say whether it runs
#   scripts/broker.sh path      print the tansu binary the other actions use
#   scripts/broker.sh start-secure  also start the secured brokers (TLS, SASL/SCRAM over TLS) on
#                                   $LARK_SINK_BROKER_PORT+1 .. +4; `stop` stops them too
#
# Secured brokers. tansu 0.6 cannot serve TLS itself: `--cert` and `--key` sit in one clap group, so
# passing both is rejected ("the argument '--cert <CERT>' cannot be used with '--key <KEY>'"), and
# even a built TLS config is never used (tansu-broker 0.6.0 src/broker.rs builds `_acceptor` and
# serves the raw TCP stream; checked with `openssl s_client`, which hangs while tansu reads the
# ClientHello as a Kafka frame). Its SASL works for SCRAM-SHA-256/512 against users stored in the
# broker's own storage; PLAIN is not offered (the handshake fails with NoSharedMechanism in its log,
# "SASL PLAIN mechanism handshake failed" in librdkafka's).
# So TLS is terminated by socat in front of tansu, the way a TLS proxy or a sidecar would do it,
# and everything behind it (the Kafka protocol, SASL) is the real broker:
#
#   PORT+1  SSL       socat TLS ──► tansu (no auth)           on PORT+3, advertised as PORT+1
#   PORT+2  SASL_SSL  socat TLS ──► tansu --authentication    on PORT+4, advertised as PORT+2
#
# The CA, the server certificate (CN localhost, SAN localhost + 127.0.0.1), a second unrelated CA
# (for the wrong-CA test) and a file of variables for the tests are written to
# $LARK_SINK_BROKER_DIR-secure. SCRAM users are created before authentication is switched on
# (tansu refuses AlterUserScramCredentials from an unauthenticated client): tansu starts without
# --authentication, `tansu user create` adds them, and tansu restarts on the same SQLite file with it.
#
# Why sqlite: tansu's memory:// engine answers "earliest" offset queries with the end offset, so a
# fresh consumer group would miss every record; with sqlite, groups, commits, rebalances and
# auto.offset.reset=earliest behave like Kafka.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${LARK_SINK_BROKER_DIR:-$ROOT/.broker}
PORT=${LARK_SINK_BROKER_PORT:-19092}
# The patched broker (tools/test-broker) is installed under a directory named after a hash of
# its sources (manifest, lock file, main, patches), so a changed patch is a new build and an
# unchanged one is found again by every later run. An upstream `tansu` on PATH is never used:
# it has the bug the patch fixes. TANSU_BIN overrides (e.g. upstream, to reproduce the bug).
BROKER_SRC=$ROOT/tools/test-broker
broker_id() {
  (cd "$BROKER_SRC" && cat Cargo.toml Cargo.lock src/main.rs patches/*.patch) | sha256sum | cut -c1-12
}
# Two builds of the same sources: `test-broker` (the default, for the tests: unoptimised, built in
# a fraction of the time; docs/testing.md#build-time) and `release` (opt-level 3, for
# scripts/bench.sh, whose figures include the broker's own speed). LARK_SINK_BROKER_PROFILE picks.
PROFILE=${LARK_SINK_BROKER_PROFILE:-test-broker}
case "$PROFILE" in
  test-broker) SUFFIX= ;;
  release) SUFFIX=-release ;;
  *) echo "broker: LARK_SINK_BROKER_PROFILE must be test-broker or release, not '$PROFILE'" >&2; exit 2 ;;
esac
BROKER_ROOT=${LARK_SINK_TOOLS_DIR:-${CARGO_HOME:-$HOME/.cargo}/lark-sink}/test-broker-$(broker_id)$SUFFIX
TANSU=${TANSU_BIN:-$BROKER_ROOT/bin/tansu}
SECURE=${STATE}-secure
# The SASL user the tests log in as; the password is also in tests/src/lib.rs (KAFKA_PASSWORD).
SASL_USER=${LARK_SINK_TEST_KAFKA_USER:-lark-sink-e2e}
SASL_PASSWORD=${LARK_SINK_TEST_KAFKA_PASSWORD:-e2e-kafka-password-9b2e}

have_tansu() {
  [ -x "$TANSU" ] && "$TANSU" --version 2>/dev/null | grep -q ' 0\.6\.'
}

# install_patched: for each crate a patch names (patches/<crate>-0.6.0-<what>.patch), the registry's
# 0.6.0 source of that crate (downloaded and checksum-verified by cargo) is copied to
# tools/test-broker/patched/<crate> and its patches applied; then the broker is built from tansu's
# own crates against them ([patch.crates-io] in tools/test-broker/Cargo.toml).
install_patched() {
  local fetch=$BROKER_SRC/target/fetch-sources crates crate manifest p
  crates=$(cd "$BROKER_SRC/patches" && ls -- *.patch | sed 's/-0\.6\.0-.*//' | sort -u)
  mkdir -p "$fetch/src"
  {
    printf '[package]\nname = "fetch-sources"\nversion = "0.0.0"\nedition = "2021"\n[workspace]\n[dependencies]\n'
    for crate in $crates; do printf '%s = { version = "=0.6.0", default-features = false }\n' "$crate"; done
  } >"$fetch/Cargo.toml"
  : >"$fetch/src/lib.rs"
  local metadata
  metadata=$(cargo metadata --quiet --format-version 1 --manifest-path "$fetch/Cargo.toml")
  mkdir -p "$BROKER_SRC/patched"
  for crate in $crates; do
    manifest=$(printf '%s' "$metadata" \
      | grep -o "\"manifest_path\":\"[^\"]*/$crate-0\\.6\\.0/Cargo\\.toml\"" | head -n1 | cut -d'"' -f4)
    [ -f "$manifest" ] || { echo "broker: could not locate $crate 0.6.0's source" >&2; exit 1; }
    rm -rf "$BROKER_SRC/patched/$crate"
    cp -R "$(dirname "$manifest")" "$BROKER_SRC/patched/$crate"
    for p in "$BROKER_SRC/patches/$crate"-0.6.0-*.patch; do
      (cd "$BROKER_SRC/patched/$crate" && git apply -p1 "$p") \
        || { echo "broker: $p does not apply to $crate 0.6.0" >&2; exit 1; }
      echo "broker: applied $(basename "$p")"
    done
  done
  cargo install --path "$BROKER_SRC" --root "$BROKER_ROOT" --locked --quiet --profile "$PROFILE"
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/${1:-$PORT}") 2>/dev/null
}

# wait_port PORT PIDFILE LOG: until PORT accepts connections, or fail with the log.
wait_port() {
  for _ in $(seq 1 100); do
    if port_open "$1"; then return 0; fi
    if ! kill -0 "$(cat "$2")" 2>/dev/null; then break; fi
    sleep 0.2
  done
  echo "broker: nothing listens on 127.0.0.1:$1; log $3:" >&2; cat "$3" >&2; return 1
}

stop_pid() {
  [ -f "$1" ] || return 0
  local pid; pid=$(cat "$1")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$1"
}

# tansu_start NAME LISTEN_PORT ADVERTISED_PORT [extra args]: a tansu on its own SQLite file in $SECURE.
tansu_start() {
  local name=$1 port=$2 advertised=$3; shift 3
  (
    cd "$SECURE"
    nohup "$TANSU" broker \
      --kafka-cluster-id "lark-sink-test-$name" \
      --kafka-listener-url "tcp://127.0.0.1:$port" \
      --kafka-advertised-listener-url "tcp://127.0.0.1:$advertised" \
      --storage-engine "sqlite://$name.db" \
      "$@" >>"$name.log" 2>&1 &
    echo $! >"$name.pid"
  )
  wait_port "$port" "$SECURE/$name.pid" "$SECURE/$name.log"
}

# tls_front NAME PORT BACKEND_PORT: socat terminating TLS on PORT, forwarding to BACKEND_PORT.
tls_front() {
  local name=$1 port=$2 backend=$3
  (
    cd "$SECURE"
    nohup socat \
      "OPENSSL-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork,cert=server.pem,key=server.key,verify=0" \
      "TCP:127.0.0.1:$backend" >"$name-tls.log" 2>&1 &
    echo $! >"$name-tls.pid"
  )
  wait_port "$port" "$SECURE/$name-tls.pid" "$SECURE/$name-tls.log"
}

# make_certs: a throwaway CA, a server certificate it signs, and an unrelated second CA.
make_certs() {
  (
    cd "$SECURE"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=lark-sink e2e CA" \
      -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
      -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -days 2 -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
      -extfile server.ext -out server.pem 2>/dev/null
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=some other CA" \
      -keyout other-ca.key -out other-ca.pem 2>/dev/null
    openssl verify -CAfile ca.pem server.pem >/dev/null
  )
}

case "${1:-}" in
  install)
    if have_tansu; then
      echo "broker: $("$TANSU" --version) already installed at $TANSU (skipping)"
    else
      echo "broker: building tansu 0.6 with lark-sink's patches (tools/test-broker/patches) ($PROFILE profile) into $BROKER_ROOT (once; docs/testing.md#build-time has the time)"
      start=$(date +%s)
      install_patched
      echo "broker: installed $("$TANSU" --version) in $(( $(date +%s) - start )) s"
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
  start-secure)
    have_tansu || { echo "broker: tansu not installed; run scripts/broker.sh install" >&2; exit 1; }
    for tool in openssl socat; do
      command -v "$tool" >/dev/null || { echo "broker: '$tool' is missing (Debian package '$tool'; scripts/test.sh installs it)" >&2; exit 1; }
    done
    SSL_PORT=$((PORT + 1)); SASL_PORT=$((PORT + 2)); SSL_BACK=$((PORT + 3)); SASL_BACK=$((PORT + 4))
    for p in $SSL_PORT $SASL_PORT $SSL_BACK $SASL_BACK; do
      if port_open "$p"; then echo "broker: something already listens on 127.0.0.1:$p" >&2; exit 1; fi
    done
    rm -rf "$SECURE"; mkdir -p "$SECURE"
    make_certs
    # SSL: no authentication behind the TLS front.
    tansu_start ssl "$SSL_BACK" "$SSL_PORT"
    tls_front ssl "$SSL_PORT" "$SSL_BACK"
    # SASL_SSL: users first, then the same storage with authentication required.
    tansu_start sasl "$SASL_BACK" "$SASL_PORT"
    for mech in scram256 scram512; do
      "$TANSU" user create --broker "tcp://127.0.0.1:$SASL_BACK" --mechanism "$mech" \
        "$SASL_USER" "$SASL_PASSWORD" >>"$SECURE/sasl.log" 2>&1
    done
    stop_pid "$SECURE/sasl.pid"
    for _ in $(seq 1 50); do port_open "$SASL_BACK" || break; sleep 0.1; done
    tansu_start sasl "$SASL_BACK" "$SASL_PORT" --authentication
    tls_front sasl "$SASL_PORT" "$SASL_BACK"
    cat >"$SECURE/env" <<ENV
export LARK_SINK_TEST_BROKER_SSL=127.0.0.1:$SSL_PORT
export LARK_SINK_TEST_BROKER_SASL_SSL=127.0.0.1:$SASL_PORT
export LARK_SINK_TEST_BROKER_CA=$SECURE/ca.pem
export LARK_SINK_TEST_BROKER_OTHER_CA=$SECURE/other-ca.pem
export LARK_SINK_TEST_KAFKA_USER=$SASL_USER
ENV
    echo "broker: secured brokers up: SSL on 127.0.0.1:$SSL_PORT, SASL_SSL (SCRAM-SHA-256/512, user $SASL_USER) on 127.0.0.1:$SASL_PORT"
    echo "broker: for the tests: source $SECURE/env"
    ;;
  stop)
    if [ -f "$STATE/broker.pid" ]; then
      stop_pid "$STATE/broker.pid"
      echo "broker: stopped"
    fi
    if [ -d "$SECURE" ]; then
      for f in "$SECURE"/*.pid; do [ -e "$f" ] && stop_pid "$f"; done
      echo "broker: secured brokers stopped"
    fi
    ;;
  path)
    echo "$TANSU"
    ;;
  status)
    if port_open; then echo "broker: running on 127.0.0.1:$PORT"; else echo "broker: not running"; exit 1; fi
    ;;
  *)
    echo "usage: $0 install|start|start-secure|resume|stop|status|path" >&2; exit 2
    ;;
esac
