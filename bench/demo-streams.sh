#!/usr/bin/env bash
# What ../shared/peers does not cover: the demo's calls through Dragoman vs straight to the demo
# backend, in one run, with h2load. Rows: unary GetUser, and LiveCart (bidirectional: 8 actions
# in, 8 carts out per call). Only the ratios within one run mean anything (2 shared cores).
# Usage: bench/demo-streams.sh [seconds]   env: DRAGOMAN=target/release/dragoman CONNS=32 RUST_LOG
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:-8}; C=${CONNS:-32}
bin=${DRAGOMAN:-target/release/dragoman}
[ -x "$bin" ] || { echo "build it first: cargo build --release"; exit 1; }
run=$(mktemp -d -t dragoman-bench.XXXXXX)
trap 'kill $pid 2>/dev/null; rm -rf "$run"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# The access log is on at info; the peers run without one, so it is off here unless RUST_LOG says.
RUST_LOG=${RUST_LOG:-info,dragoman::access=off} "$bin" demo --listen 127.0.0.1:$port 2>"$run/demo.log" & pid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
backend() { grep "service=\"$1\"" "$run/demo.log" | sed -E 's/.*backend=([0-9.:]+).*/\1/'; }
users=$(backend shop.users.v1.UserService); orders=$(backend shop.orders.v1.OrderService)

# gRPC frames, hand-encoded: GetUserRequest{id:"u-1"}; CartAction add{p-1 x1} then clear, 4 times.
printf '\x00\x00\x00\x00\x05\x0a\x03u-1' >"$run/getuser.grpc"
: >"$run/cart.grpc"
for _ in 1 2 3 4; do printf '\x00\x00\x00\x00\x09\x0a\x07\x0a\x03p-1\x10\x01\x00\x00\x00\x00\x02\x18\x01' >>"$run/cart.grpc"; done

rss() { awk '/VmRSS/{print int($2/1024)}' /proc/$pid/status; }
load() { # name address path data
  local out; out=$(h2load -D "$D" -t1 -c "$C" -m 4 -d "$4" -H 'content-type: application/grpc' -H 'te: trailers' "http://$2$3" 2>&1)
  local rps=$(echo "$out" | awk '/^finished in/{gsub(",","",$4); print int($4)}')
  local ok=$(echo "$out" | awk '/^status codes:/{print $3}')
  local mean=$(echo "$out" | awk '/^time for request:/{print $6}')
  printf '%-24s %9s req/s  mean %-9s 2xx %-8s gateway rss %s MiB\n' "$1" "$rps" "$mean" "$ok" "$(rss)"
  echo "$rps" >"$run/rps.$1"
}
# h2load counts HTTP status only: check that the gateway really answers OK before measuring.
check=$(curl -s --http2-prior-knowledge -o /dev/null -D - -H 'content-type: application/grpc' -H 'te: trailers' \
  --data-binary @"$run/getuser.grpc" "http://127.0.0.1:$port/shop.users.v1.UserService/GetUser" | tr -d '\r' | grep -i '^grpc-status' || true)
echo "# $(date -u +%F) $(nproc) cores, ${D}s per row, $C connections x 4 streams; grpc-status check: ${check:-trailers only in body}"
load unary-direct "$users" /shop.users.v1.UserService/GetUser "$run/getuser.grpc"
load unary-dragoman "127.0.0.1:$port" /shop.users.v1.UserService/GetUser "$run/getuser.grpc"
load bidi-direct "$orders" /shop.orders.v1.OrderService/LiveCart "$run/cart.grpc"
load bidi-dragoman "127.0.0.1:$port" /shop.orders.v1.OrderService/LiveCart "$run/cart.grpc"
ratio() { python3 -c "import sys; a,b=map(float,sys.argv[1:]); print(f'{a/b:.2f}' if b else 'n/a')" "$(cat "$run/rps.$1")" "$(cat "$run/rps.$2")"; }
echo "unary dragoman/direct $(ratio unary-dragoman unary-direct)  bidi dragoman/direct $(ratio bidi-dragoman bidi-direct)"
