#!/bin/sh
# Builds the AssemblyScript example: sh build.sh OUT.wasm
# With a second argument, builds that source instead with the same compiler:
# the tests' probes (plugins/testdata/as), which import nothing and trap on
# abort (--use abort= with no function).
# Needs node and npm (Debian: apt-get install nodejs npm). The pinned
# compiler (assemblyscript 0.28.20) is installed into node_modules here on
# first use. The plugin imports ../as-kit (Extism kernel imports used
# directly), so this directory and ../as-kit go together.
#
# -O3 --noAssert: a plugin runs per request; assertions would only trap.
# --use abort=...: a failed bounds check traps (as-kit's kitAbort) instead
# of importing env.abort, which no Extism host provides.
set -eu
out=${1:-as-headers.wasm}
cd "$(dirname "$0")"
if [ ! -x node_modules/.bin/asc ]; then
	# package-lock.json pins the exact packages and their hashes.
	npm ci --no-audit --no-fund --loglevel=error >&2
fi
if [ $# -ge 2 ]; then
	exec node_modules/.bin/asc "$2" --outFile "$out" -O3 --noAssert --use abort=
fi
node_modules/.bin/asc index.ts --outFile "$out" -O3 --noAssert --use abort=../as-kit/index/kitAbort
