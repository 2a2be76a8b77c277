#!/usr/bin/env bash
# The official Lark SDKs the SDK test drives the emulator with (tests/tests/sdk.rs,
# docs/testing.md#the-sdk-test): a second, independent client that reads the emulator's answers the
# way applications built on the SDKs do (codes, msg, the log id header, the rate-limit headers).
#
#   scripts/sdk.sh install   install the pinned SDKs unless this exact version is there (once;
#                            docs/testing.md has the time): Python's lark-oapi into a virtualenv,
#                            and Node's @larksuiteoapi/node-sdk when `node` and `npm` are present
#   scripts/sdk.sh python    print the virtualenv's python (the test runs the script with it)
#   scripts/sdk.sh node-dir  print the directory holding node_modules/@larksuiteoapi/node-sdk
#
# Both live under the tools directory scripts/broker.sh uses, in directories named after the
# pinned version, so a new pin is a new install and an unchanged one is found again.
set -euo pipefail

TOOLS=${LARK_SINK_TOOLS_DIR:-${CARGO_HOME:-$HOME/.cargo}/lark-sink}
# Pinned: the test asserts what this version reads; bump it (and rerun the test) on purpose.
PY_SDK_VERSION=1.7.5
NODE_SDK_VERSION=1.74.0
VENV=$TOOLS/lark-oapi-$PY_SDK_VERSION
NODE_DIR=$TOOLS/node-sdk-$NODE_SDK_VERSION
PYTHON=${LARK_SINK_PYTHON:-python3}

have_python_sdk() {
  [ -x "$VENV/bin/python" ] &&
    "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('lark-oapi') != '$PY_SDK_VERSION')" 2>/dev/null
}

install_python_sdk() {
  if have_python_sdk; then
    echo "sdk: lark-oapi $PY_SDK_VERSION already installed at $VENV (skipping)"
    return
  fi
  echo "sdk: installing lark-oapi==$PY_SDK_VERSION into $VENV"
  rm -rf "$VENV"
  mkdir -p "$TOOLS"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "lark-oapi==$PY_SDK_VERSION"
  have_python_sdk
}

install_node_sdk() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "sdk: no node/npm, @larksuiteoapi/node-sdk not installed (optional)"
    return
  fi
  if [ -f "$NODE_DIR/node_modules/@larksuiteoapi/node-sdk/package.json" ]; then
    echo "sdk: @larksuiteoapi/node-sdk $NODE_SDK_VERSION already installed at $NODE_DIR (skipping)"
    return
  fi
  echo "sdk: installing @larksuiteoapi/node-sdk@$NODE_SDK_VERSION into $NODE_DIR"
  mkdir -p "$NODE_DIR"
  npm install --silent --no-audit --no-fund --prefix "$NODE_DIR" "@larksuiteoapi/node-sdk@$NODE_SDK_VERSION" >/dev/null
}

case "${1:-}" in
  install)
    install_python_sdk
    install_node_sdk
    ;;
  python) echo "$VENV/bin/python" ;;
  node-dir) echo "$NODE_DIR" ;;
  *)
    echo "usage: scripts/sdk.sh install|python|node-dir" >&2
    exit 2
    ;;
esac
