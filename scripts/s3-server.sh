#!/usr/bin/env bash
# Builds (once) and runs a real, separately started S3-compatible server for
# the L3 cache tier's tests and for local runs: versitygw (Apache-2.0) with its
# POSIX-directory backend.
#
#   scripts/s3-server.sh --install-only
#       Build versitygw into the cache directory if it is not there yet and
#       print its path. Idempotent and quiet when present. `make test` runs
#       this before the tests (the L3 tests fail, not skip, without it).
#
#   scripts/s3-server.sh [--addr 127.0.0.1:7070] [--dir DIR] [--access KEY] [--secret SECRET]
#       Build if needed, then run the server in the foreground on ADDR,
#       storing buckets as directories under DIR.
#
# The build takes several minutes on a small machine (measured: about 12 on
# 2 shared cores with a cold module cache), so it is done once into
# ${MERIDIAN_CACHE:-$HOME/.cache/meridian}/bin and reused; it runs under
# `nice -n 19` so that it does not starve other work.
set -euo pipefail

VERSION="v1.8.0"
MODULE="github.com/versity/versitygw/cmd/versitygw"
CACHE="${MERIDIAN_CACHE:-$HOME/.cache/meridian}"
BIN_DIR="$CACHE/bin"
BIN="$BIN_DIR/versitygw"

addr="127.0.0.1:7070"
dir="$CACHE/s3-data"
access="meridian"
secret="meridian-secret"
install_only=0

while [ $# -gt 0 ]; do
  case "$1" in
    --install-only) install_only=1 ;;
    --addr) addr="$2"; shift ;;
    --dir) dir="$2"; shift ;;
    --access) access="$2"; shift ;;
    --secret) secret="$2"; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "s3-server.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# The module version recorded in the binary (versitygw --version prints
# "git" for a go-install build).
installed_version() {
  go version -m "$BIN" 2>/dev/null | awk '$1 == "mod" && $2 == "github.com/versity/versitygw" { print $3 }' || true
}

if [ ! -x "$BIN" ] || [ "$(installed_version)" != "$VERSION" ]; then
  command -v go >/dev/null 2>&1 || { echo "s3-server.sh: go is required to build versitygw" >&2; exit 1; }
  mkdir -p "$BIN_DIR"
  echo "s3-server.sh: building versitygw $VERSION into $BIN_DIR (several minutes, once)" >&2
  # Build outside any module so the project's go.mod is not touched.
  (cd "$BIN_DIR" && GOFLAGS= GOBIN="$BIN_DIR" nice -n 19 go install "$MODULE@$VERSION")
fi

if [ "$install_only" -eq 1 ]; then
  echo "$BIN"
  exit 0
fi

case "$addr" in
  127.*|localhost:*|\[::1\]:*) ;;
  *) echo "s3-server.sh: refusing to listen on $addr; use a loopback address such as 127.0.0.1:7070" >&2; exit 2 ;;
esac
mkdir -p "$dir"
echo "s3-server.sh: versitygw on http://$addr, data in $dir, access key $access" >&2
exec "$BIN" --port "$addr" --access "$access" --secret "$secret" --health /health --quiet posix "$dir"
