#!/usr/bin/env bash
# compare.sh - L2 hits over HTTP (bench/l2proxy) against nginx proxy_cache on
# disk, with the bare net/http floor (goproxy -store map, hits from a Go map)
# beside them, in one interleaved run of ../shared/bench/proxy/bench.sh.
#
#   bench/l2proxy/compare.sh [--sizes "16k 1m"] [--reps 2] [--dur 5] [--port-base 18190]
#                            [--store tiered|l2] [--also NAME=BINARY[,FLAG...]]...
#                            [--pin CLIENT_CPU:PROXY_CPU]
#
# --pin runs the peer's pinned setup (its headline tables): wrk on
# CLIENT_CPU, nginx (one worker per CPU it may use) and every proxy on
# PROXY_CPU (so Go's GOMAXPROCS follows the affinity); the origin is not
# pinned. Without it nothing is pinned, nginx runs a worker per CPU.
#
# --also adds another l2proxy build or flag set as one more target in the same
# run (for example --also nocoal=/tmp/l2proxy,-no-coalesce), on port-base+4....
# It starts its own origin, nginx and proxies on ports port-base..port-base+3
# (so that it does not collide with another bench.sh run, whose nginx anchor
# always listens on :18081), keeps every cache directory under $WORK
# (default /tmp/l2proxy-bench, the same disk for nginx and L2) and removes
# them at the end. It prints bench.sh's medians and then, per size,
# requests per proxy CPU-second of each target divided by nginx's.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PEER="${PEER:-$ROOT/../shared/bench/proxy}"
WORK="${WORK:-/tmp/l2proxy-bench}"
SIZES="16k 1m"; REPS=2; DUR=5; BASE=18190; EXTRA=(); ALSO=(); PIN=""
while [ $# -gt 0 ]; do
  case "$1" in
    --sizes) SIZES="$2"; shift 2;;
    --reps) REPS="$2"; shift 2;;
    --dur) DUR="$2"; shift 2;;
    --port-base) BASE="$2"; shift 2;;
    --store) EXTRA+=(-store "$2"); shift 2;;
    --also) ALSO+=("$2"); shift 2;;
    --pin) PIN="$2"; shift 2;;
    -h|--help) sed -n '2,24p' "$0"; exit 0;;
    *) echo "unknown arg $1" >&2; exit 2;;
  esac
done
TS=(); PINARG=(); NWORKERS=$(nproc)
if [ -n "$PIN" ]; then
  TS=(taskset -c "${PIN##*:}"); PINARG=(--pin "$PIN"); NWORKERS=$("${TS[@]}" nproc)
fi
ORIGIN_PORT=$BASE; NGINX_PORT=$((BASE + 1)); OURS_PORT=$((BASE + 2)); FLOOR_PORT=$((BASE + 3))
for p in $ORIGIN_PORT $NGINX_PORT $OURS_PORT $FLOOR_PORT; do
  if ss -ltn "sport = :$p" | grep -q LISTEN; then echo "port $p is in use; pick another --port-base" >&2; exit 1; fi
done
mkdir -p "$WORK"/{www/obj,run,logs,bin}
for s in 1k:1024 16k:16384 256k:262144 1m:1048576 4m:4194304; do
  f="$WORK/www/obj/${s%%:*}.bin"; [ -f "$f" ] || head -c "${s##*:}" /dev/urandom > "$f"
done
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  rm -rf "$WORK"/l2* "$WORK/nginx-cache"
}
trap cleanup EXIT

(cd "$ROOT" && go build -o "$WORK/bin/l2proxy" ./bench/l2proxy)
(cd "$PEER/go" && go build -o "$WORK/bin/" ./cmd/goproxy)

# nginx proxy_cache, the peer's config with our ports and cache directory.
sed -e "s|@WORK@|$WORK|g" -e "s|@CACHE_DIR@|$WORK/nginx-cache|g" \
    -e "s|@ORIGIN_HOSTPORT@|127.0.0.1:$ORIGIN_PORT|g" -e "s|@NGINX_LISTEN@|127.0.0.1:$NGINX_PORT|g" \
    -e "s|nginx-proxy.pid|nginx-l2cmp.pid|" "$PEER/conf/nginx-proxy.conf" > "$WORK/run/nginx-proxy.conf"
rm -rf "$WORK/nginx-cache" "$WORK"/l2*; mkdir -p "$WORK/nginx-cache"
"${TS[@]}" nginx -c "$WORK/run/nginx-proxy.conf" -g "worker_processes $NWORKERS;"
sleep 0.3; NGINX_PID="$(cat "$WORK/run/nginx-l2cmp.pid")"; PIDS+=("$NGINX_PID")

"${TS[@]}" "$WORK/bin/l2proxy" -listen "127.0.0.1:$OURS_PORT" -origin "http://127.0.0.1:$ORIGIN_PORT" -dir "$WORK/l2" "${EXTRA[@]}" \
  >"$WORK/logs/l2proxy.log" 2>&1 & OURS_PID=$!; PIDS+=("$OURS_PID")
"${TS[@]}" "$WORK/bin/goproxy" -listen "127.0.0.1:$FLOOR_PORT" -origin "http://127.0.0.1:$ORIGIN_PORT" -store map \
  >"$WORK/logs/goproxy.log" 2>&1 & FLOOR_PID=$!; PIDS+=("$FLOOR_PID")

TARGETS=(--target "ours=http://127.0.0.1:$OURS_PORT@$OURS_PID")
port=$((BASE + 4))
for a in "${ALSO[@]}"; do
  name="${a%%=*}"; IFS=, read -r -a cmd <<< "${a#*=}"
  "${TS[@]}" "${cmd[0]}" -listen "127.0.0.1:$port" -origin "http://127.0.0.1:$ORIGIN_PORT" -dir "$WORK/l2-$name" "${EXTRA[@]}" "${cmd[@]:1}" \
    >"$WORK/logs/l2proxy-$name.log" 2>&1 & PIDS+=($!)
  TARGETS+=(--target "$name=http://127.0.0.1:$port@$!"); port=$((port + 1))
done

# bench.sh starts the origin (on ORIGIN_PORT, serving $WORK/www) and the
# load; its own anchors are off because their ports are fixed.
OUT="$WORK/logs/compare-$(date +%H%M%S).txt"
"$PEER/bench.sh" --work "$WORK" --origin "http://127.0.0.1:$ORIGIN_PORT" --start-origin --anchor none "${PINARG[@]}" \
  --tests hit --sizes "$SIZES" --reps "$REPS" --dur "$DUR" \
  "${TARGETS[@]}" --target "nginx=http://127.0.0.1:$NGINX_PORT@$NGINX_PID" \
  --target "gofloor=http://127.0.0.1:$FLOOR_PORT@$FLOOR_PID" 2>&1 | tee "$OUT" | grep -v '^# hit'
echo "L2 counters: $(curl -s "http://127.0.0.1:$OURS_PORT/__l2")"
echo "== requests per proxy CPU-second, divided by nginx's (>= 1 means at least nginx's efficiency)"
awk '/\.rps_per_core/ { t=$1; sub(/\.rps_per_core/,"",t); delete v; line=sprintf("%-10s", t)
  for (i=2;i<=NF;i++) { split($i,kv,"="); if (kv[1] !~ /\//) { v[kv[1]]=kv[2]; names[i]=kv[1] } else names[i]="" }
  for (i=2;i<=NF;i++) if (names[i] != "" && names[i] != "nginx" && v["nginx"] > 0) line=line sprintf("  %s/nginx=%.2f", names[i], v[names[i]]/v["nginx"])
  print line }' "$OUT"
