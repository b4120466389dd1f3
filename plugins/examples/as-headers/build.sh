#!/bin/sh
# Builds the AssemblyScript example: sh build.sh OUT.wasm
# Needs node and npm (Debian: apt-get install nodejs npm). The pinned
# packages (assemblyscript 0.28.20, @extism/as-pdk 1.0.0) are installed
# into node_modules here on first use.
set -eu
out=${1:-as-headers.wasm}
cd "$(dirname "$0")"
if [ ! -x node_modules/.bin/asc ]; then
	# package-lock.json pins the exact packages and their hashes.
	npm ci --no-audit --no-fund --loglevel=error >&2
fi
node_modules/.bin/asc index.ts --outFile "$out" --optimize --use abort=index/myAbort
