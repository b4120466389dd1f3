#!/usr/bin/env bash
# Full and resumed TLS 1.3 handshakes per server CPU-second (ECDSA P-256),
# tlsedge (Go) beside nginx, same certificate, same machine, same client
# (openssl s_time, sequential handshakes, several clients in parallel).
# Server CPU is read from /proc before and after each run (all nginx
# processes are summed). Usage: bench.sh [seconds-per-run] [parallel-clients]
set -euo pipefail
SECS="${1:-20}"
PAR="${2:-2}"
DIR=/tmp/tlsbench
ROOT="$(cd "$(dirname "$0")/../../../.." && pwd)"
mkdir -p "$DIR"
cd "$ROOT"
go build -o "$DIR/tlsbenchsrv" ./gateway/tlsedge/internal/tlsbenchsrv

"$DIR/tlsbenchsrv" -addr 127.0.0.1:9443 -dir "$DIR" >"$DIR/go.log" 2>&1 &
GOPID=$!
sleep 1
kill -0 $GOPID 2>/dev/null || { cat "$DIR/go.log"; exit 1; }
cat >"$DIR/nginx.conf" <<NGINX
worker_processes auto;
pid $DIR/nginx.pid;
error_log $DIR/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:9444 ssl http2;
    ssl_certificate $DIR/bench.example.test.pem;
    ssl_certificate_key $DIR/bench.example.test-key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    location / { return 200 "hello\n"; }
  }
}
NGINX
nginx -c "$DIR/nginx.conf"
sleep 1
trap 'kill $GOPID 2>/dev/null; kill -QUIT "$(cat $DIR/nginx.pid)" 2>/dev/null || true' EXIT

ticks() { # sum of utime+stime (clock ticks) of the given pids
  local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $t; }
HZ=$(getconf CLK_TCK)

run() { # name port mode pids...
  local name=$1 port=$2 mode=$3; shift 3
  local before after conns=0
  before=$(ticks "$@")
  for i in $(seq "$PAR"); do
    openssl s_time -connect 127.0.0.1:$port -tls1_3 $mode -www / -time "$SECS" >"$DIR/stime.$i" 2>&1 &
  done
  wait $(jobs -p | grep -v "^$GOPID\$") 2>/dev/null || true
  after=$(ticks "$@")
  for i in $(seq "$PAR"); do
    conns=$((conns + $(grep -oE '^[0-9]+ connections in [0-9.]+s' "$DIR/stime.$i" | head -1 | cut -d' ' -f1)))
  done
  local cpu; cpu=$(echo "scale=3; ($after - $before) / $HZ" | bc)
  printf '%-7s %-7s handshakes=%-7d server_cpu=%6ss  per_cpu_s=%s\n' "$name" "$mode" "$conns" "$cpu" "$(echo "scale=0; $conns / $cpu" | bc)"
}
NGINX_PIDS=$(for p in $(pgrep -P "$(cat $DIR/nginx.pid)") $(cat $DIR/nginx.pid); do echo $p; done)
for mode in -new -reuse; do
  run tlsedge 9443 $mode $GOPID
  run nginx 9444 $mode $NGINX_PIDS
done
