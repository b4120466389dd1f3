#!/usr/bin/env bash
# Installs what the test suite needs beyond Go modules, only when missing, so
# that `make test` passes on a fresh machine by itself. Idempotent and quiet
# when everything is present.
set -euo pipefail

need_apt=()
command -v wat2wasm >/dev/null 2>&1 || need_apt+=(wabt)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "test-deps: installing ${need_apt[*]} from Debian"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
