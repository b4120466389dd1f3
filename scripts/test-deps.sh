#!/usr/bin/env bash
# Installs what the test suite needs beyond Go modules, only when missing, so
# that `make test` passes on a fresh machine by itself. Idempotent and quiet
# when everything is present.
set -euo pipefail

need_apt=()
command -v wat2wasm >/dev/null 2>&1 || need_apt+=(wabt)          # hostile test plugins in WAT
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)           # the AssemblyScript example plugin
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)             # the dev stack's printed HTTPS line is run as printed

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "test-deps: installing ${need_apt[*]} from Debian"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# The AssemblyScript example's pinned compiler (package-lock.json), fetched
# once so that the tests do not race to install it.
as_dir="$(dirname "$0")/../plugins/examples/as-headers"
if [ ! -x "$as_dir/node_modules/.bin/asc" ]; then
  echo "test-deps: installing the AssemblyScript toolchain (npm ci in plugins/examples/as-headers)"
  (cd "$as_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi

here="$(dirname "$0")"
# Let's Encrypt's ACME test server for the TLS tests (Debian's pebble, or built once).
"$here/pebble.sh"
# A real, separately run S3-compatible server for the L3 tier's tests (built once, cached).
"$here/s3-server.sh" --install-only >/dev/null
