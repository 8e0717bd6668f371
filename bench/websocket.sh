#!/usr/bin/env bash
# WebSocket streams against native gRPC, in one run (issue 8): the demo's LiveCart (bidirectional)
#  1. 10,000 streams held open through one gateway process: its RSS per stream, WebSocket and gRPC;
#  2. round trips on one stream per worker (send an action, wait for its cart): messages/s and
#     latency, WebSocket through the gateway vs gRPC through it vs gRPC straight to the backend.
# The backends run in a `dragoman demo` process of their own, so the gateway's RSS is its own.
# Usage: bench/websocket.sh [streams] [seconds]   env: DRAGOMAN=target/release/dragoman
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}; D=${2:-8}
bin=${DRAGOMAN:-target/release/dragoman}
client=target/release/examples/websocket_bench
[ -x "$bin" ] && [ -x "$client" ] || { echo "build first: cargo build --release --examples"; exit 1; }
ulimit -n "$(ulimit -Hn)"  # each process holds up to N sockets; the hard limit must allow it
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -gt $((N + 1000)) ] || { echo "open files limit $(ulimit -n) is too low for $N streams"; exit 1; }
run=$(mktemp -d -t dragoman-ws-bench.XXXXXX)
demo=; gw=
trap 'kill $demo $gw 2>/dev/null; rm -rf "$run"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.1; done; }

RUST_LOG=info,dragoman::access=off "$bin" demo --listen 127.0.0.1:$(free_port) 2>"$run/demo.log" & demo=$!
sleep 0.5; for _ in $(seq 100); do grep -q 'dragoman listening' "$run/demo.log" && break; sleep 0.1; done
orders=$(grep 'service="shop.orders.v1.OrderService"' "$run/demo.log" | sed -E 's/.*backend=([0-9.:]+).*/\1/')
folder=$PWD/descriptors   # the demo's set, checked in
port=$(free_port)
cat >"$run/gateway.yaml" <<YAML
listen: 127.0.0.1:$port
descriptors: [$folder]
server:
  max_connections: 40000
  max_calls_in_flight: 40000
services:
  - match: shop.orders.v1.OrderService
    backends: [http://$orders]
YAML
# A fresh gateway for each hold row: memory an allocator keeps after one row would hide the next's.
start_gateway() {
  [ -z "$gw" ] || { kill $gw; wait $gw 2>/dev/null || true; }
  RUST_LOG=warn "$bin" serve -c "$run/gateway.yaml" 2>"$run/gateway.log" & gw=$!
  wait_port "$port"
}

rss() { awk '/VmRSS/{print $2}' /proc/$gw/status; }  # KiB
hold() { # kind
  local before; before=$(rss)
  "$client" hold "$1" "127.0.0.1:$port" "$N" 6 >"$run/hold.$1" 2>&1 & local c=$!
  for _ in $(seq 600); do grep -q '^held' "$run/hold.$1" && break; kill -0 $c 2>/dev/null || break; sleep 0.1; done
  sleep 2; local held; held=$(rss)
  wait $c || { cat "$run/hold.$1"; exit 1; }
  sleep 2
  printf '%-5s %6d streams: gateway RSS %6d -> %6d KiB, %5.1f KiB per stream; %s; after close %d KiB\n' \
    "$1" "$N" "$before" "$held" "$(python3 -c "print(($held-$before)/$N)")" "$(head -1 "$run/hold.$1" | sed 's/held [0-9]* [a-z]* streams, //')" "$(rss)"
}
echo "# $(date -u +%F) $(nproc) cores; LiveCart"
start_gateway; hold ws
start_gateway; hold mux
start_gateway; hold grpc
for c in 1 32; do
  "$client" pingpong grpc "$orders" $c "$D" | sed 's/^/direct   /'
  "$client" pingpong grpc "127.0.0.1:$port" $c "$D" | sed 's/^/dragoman /'
  "$client" pingpong ws "127.0.0.1:$port" $c "$D" | sed 's/^/dragoman /'
  "$client" pingpong mux "127.0.0.1:$port" $c "$D" | sed 's/^/dragoman /'
done
