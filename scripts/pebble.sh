#!/usr/bin/env bash
# Installs pebble, Let's Encrypt's ACME test server, which the TLS tests
# (gateway/tlsedge) start on loopback. Idempotent and quiet when pebble is
# already there. Order of preference:
#   1. pebble on PATH (e.g. Debian's package) or in $HOME/.cache/meridian/bin
#   2. Debian's `pebble` package, when apt-get is usable (root or sudo)
#   3. built from the Go module proxy into $HOME/.cache/meridian/bin
set -euo pipefail

PEBBLE_VERSION="${PEBBLE_VERSION:-v2.10.3}"
BIN_DIR="${HOME}/.cache/meridian/bin"

if command -v pebble >/dev/null 2>&1 || [ -x "${BIN_DIR}/pebble" ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
  SUDO="sudo -n"
fi
if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; }; then
  echo "pebble.sh: installing Debian's pebble package"
  export DEBIAN_FRONTEND=noninteractive
  if $SUDO apt-get install -y -qq --no-install-recommends pebble >/dev/null 2>&1 ||
     { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends pebble >/dev/null; }; then
    command -v pebble >/dev/null 2>&1 && exit 0
  fi
  echo "pebble.sh: the Debian package is unavailable; building from the Go module proxy instead"
fi

echo "pebble.sh: building github.com/letsencrypt/pebble/v2/cmd/pebble@${PEBBLE_VERSION} into ${BIN_DIR}"
mkdir -p "${BIN_DIR}"
GOBIN="${BIN_DIR}" GOFLAGS=-mod=mod go install "github.com/letsencrypt/pebble/v2/cmd/pebble@${PEBBLE_VERSION}"
"${BIN_DIR}/pebble" -version >/dev/null 2>&1 || { echo "pebble.sh: ${BIN_DIR}/pebble does not run" >&2; exit 1; }
