#!/usr/bin/env bash
# Round-robin against the power of two choices (services[].balance), in one run: three backend
# processes (examples/backend.rs) serving GetUser, two answering at once and one after DELAY, and
# one gateway per balance mode in front of all three. Load: examples/grpc_load.rs, CALLERS calls
# in flight at once over 4 connections, D seconds per row after a 1 s warm-up; it prints req/s, the
# latency percentiles and which backend served each call (their x-backend reply metadata).
# Usage: bench/balance.sh [seconds]   env: CALLERS=16 DELAY=10ms REVERSE=1
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:-10}; CALLERS=${CALLERS:-16}; DELAY=${DELAY:-10ms}
cargo build --release --bin dragoman --example backend --example grpc_load
out=${CARGO_TARGET_DIR:-target}/release
run=$(mktemp -d -t dragoman-balance.XXXXXX); pids=()
trap 'for p in "${pids[@]}"; do kill $p 2>/dev/null; done; sleep 0.3; rm -rf "$run"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# backend NAME DELAY: starts one on a free port; its address (first line it prints) in $address.
backend() {
  : >"$run/$1.out"
  "$out/examples/backend" --name "$1" --delay "$2" >"$run/$1.out" 2>&1 & pids+=($!)
  for _ in $(seq 100); do address=$(awk '/^listening /{print $2; exit}' "$run/$1.out"); [ -n "$address" ] && return 0; sleep 0.1; done
  echo "backend $1 did not start:"; cat "$run/$1.out"; exit 1
}
backends=()
backend fast-a 0s; backends+=("http://$address")
backend fast-b 0s; backends+=("http://$address")
backend slow "$DELAY"; backends+=("http://$address")
list=$(IFS=,; echo "${backends[*]}" | sed 's/,/, /g')

declare -A gport
modes=(round_robin p2c)
for m in "${modes[@]}"; do
  p=$(port)
  printf 'listen: 127.0.0.1:%s\ndescriptors: [%s]\nservices:\n  - match: shop.users.v1.UserService\n    backends: [%s]\n    balance: %s\n' \
    "$p" "$PWD/descriptors" "$list" "$m" >"$run/$m.yaml"
  RUST_LOG=${RUST_LOG:-warn} "$out/dragoman" serve --config "$run/$m.yaml" >"$run/$m.log" 2>&1 & pids+=($!)
  wait_port "$p" || { echo "$m did not start:"; cat "$run/$m.log"; exit 1; }
  gport[$m]=$p
done
[ -z "${REVERSE:-}" ] || modes=(p2c round_robin)

echo "# $(date -u '+%F %H:%M UTC') $(nproc) cores, ${D}s per row, $CALLERS calls in flight; backends fast-a, fast-b (0s) and slow ($DELAY)"
echo "# backends, gateways and load generator share the cores"
for m in "${modes[@]}"; do
  "$out/examples/grpc_load" --target "127.0.0.1:${gport[$m]}" --callers "$CALLERS" --duration "${D}s" >"$run/$m.load"
  printf '%-12s %s\n%-12s %s\n' "$m" "$(sed -n 1p "$run/$m.load")" "" "$(sed -n 2p "$run/$m.load")"
done
