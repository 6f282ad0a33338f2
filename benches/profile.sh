#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind (repeatable on a noisy machine, unlike
# seconds): meshgate (one worker) proxies HTTP/1.1 keep-alive GETs with a 1 KiB answer from an
# nginx upstream; two runs with different request counts, and the difference divided by the
# difference in requests is the per-request cost (start-up and shutdown cancel out).
#
#   benches/profile.sh              # prints instructions/request; keeps the larger profile
#   N1=2000 N2=12000 benches/profile.sh
#   MODE=h2 benches/profile.sh      # HTTP/2 (h2c), h2load 10 connections x 10 streams
#   MESHGATE_BIN=path benches/profile.sh   # profile another build (an A/B of build settings)
#   MODE=close benches/profile.sh   # HTTP/1.1, a new connection per request (wrk for S1=2 and
#                                   # S2=8 seconds; the request counts come from wrk)
#   CALLGRIND_ARGS=--cache-sim=yes benches/profile.sh   # also simulated cache misses (D1mr,
#                                   # DLmr...: callgrind_annotate --show=Ir,D1mr,DLmr ...)
#   callgrind_annotate --inclusive=yes target/profile/callgrind.big | head -60
#
# Needs valgrind, nginx and h2load (apt-get install valgrind nginx nghttp2-client), and wrk for
# MODE=close. Builds the release binary first.
set -euo pipefail
cd "$(dirname "$0")/.."
N1=${N1:-2000}
N2=${N2:-10000}
MODE=${MODE:-h1}
case "$MODE" in
  h1|h2|close) ;;
  *) echo "MODE must be h1, h2 or close" >&2; exit 2 ;;
esac
for tool in valgrind nginx h2load; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install valgrind nginx nghttp2-client)" >&2; exit 1; }
done
if [ "$MODE" = close ]; then
  command -v wrk >/dev/null || { echo "missing wrk (apt-get install wrk)" >&2; exit 1; }
fi
cargo build --release --locked >/dev/null 2>&1 || cargo build --release --locked
out=target/profile
rm -rf "$out" && mkdir -p "$out/config"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up=$(free_port); gw=$(free_port); admin=$(free_port)

body=$(head -c 1024 /dev/zero | tr '\0' x)
cat >"$out/nginx.conf" <<EOF
daemon off; master_process off; worker_processes 1; pid $PWD/$out/nginx.pid;
error_log $PWD/$out/nginx.err warn;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$up; location / { return 200 "$body"; } } }
EOF
cat >"$out/config/bench.yaml" <<EOF
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: $gw, name: http, protocol: HTTP}
    hosts: [bench.local]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: up}
spec:
  hosts: [up.bench]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: $up}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bench}
spec:
  hosts: [bench.local]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /api}}]
    route: [{destination: {host: up.bench}}]
EOF

nginx -c "$PWD/$out/nginx.conf" -e "$PWD/$out/nginx.err" &
ngx=$!
trap 'kill $ngx 2>/dev/null || true' EXIT

run() { # $1 = requests (seconds for MODE=close), $2 = output name; prints requests and total instructions
  local pid n
  # shellcheck disable=SC2086 # CALLGRIND_ARGS is a list of options
  TOKIO_WORKER_THREADS=1 RUST_LOG=warn valgrind --tool=callgrind ${CALLGRIND_ARGS:-} --callgrind-out-file="$out/callgrind.$2" \
    "${MESHGATE_BIN:-target/release/meshgate}" --config "$out/config" --admin "127.0.0.1:$admin" \
    --bind-address 127.0.0.1 --drain-delay 0s --drain-timeout 1s >"$out/meshgate.$2.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do
    curl -s -o /dev/null -H 'Host: bench.local' "http://127.0.0.1:$gw/api/1k" && break
    sleep 0.2
  done
  case "$MODE" in
    h1|h2)
      local h1=--h1 streams=1
      [ "$MODE" = h2 ] && h1="" && streams=10
      h2load $h1 -n "$1" -c 10 -m "$streams" -H ':authority: bench.local' "http://127.0.0.1:$gw/api/1k" >"$out/load.$2.log"
      grep -q "succeeded, 0 failed, 0 errored" "$out/load.$2.log" || grep "requests:" "$out/load.$2.log" >&2
      n=$1 ;;
    close)
      printf 'wrk.headers["Connection"] = "close"\n' >"$out/close.lua"
      wrk -t1 -c4 -d"$1"s -s "$out/close.lua" -H 'Host: bench.local' "http://127.0.0.1:$gw/api/1k" >"$out/load.$2.log"
      n=$(grep -oP '\d+(?= requests in)' "$out/load.$2.log") ;;
  esac
  kill -TERM "$pid"; wait "$pid" || true
  echo "$n $(callgrind_annotate "$out/callgrind.$2" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done { gsub(",", "", $1); print $1; done = 1 }')"
}
if [ "$MODE" = close ]; then N1=${S1:-2} N2=${S2:-8}; fi
read -r n1 small < <(run "$N1" small)
read -r n2 big < <(run "$N2" big)
echo "mode $MODE; instructions: $n1 requests $small, $n2 requests $big"
echo "per request: $(( (big - small) / (n2 - n1) )) instructions"
