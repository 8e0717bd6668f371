#!/usr/bin/env bash
# REST unary GET and POST through Dragoman, grpc-gateway and Envoy's gRPC-JSON transcoder, beside
# gRPC straight to the backend, in one run. Uses the peers' Go backend and builds
# (../shared/peers/setup.sh). wrk for HTTP/1.1 keep-alive, h2load for HTTP/2 (h2c).
# Usage: bench/rest.sh [seconds]   env: DRAGOMAN=target/release/dragoman CONNS=32
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/peers-lib.sh
GP=$(port); "$b/grpcgateway" -addr 127.0.0.1:$GP -backend 127.0.0.1:$BP >/dev/null 2>&1 & pids+=($!); wait_port $GP
EP=""; if [ -x "$b/envoy" ]; then
  EP=$(port); sed "s#@PORT@#$EP#; s#@BACKEND_PORT@#$BP#; s#@DESCRIPTORS@#$b/bench.binpb#" "$peers/envoy.yaml.in" >"$run/envoy.yaml"
  "$b/envoy" -c "$run/envoy.yaml" --concurrency "$(nproc)" -l error --base-id $((BP % 60000 + 1)) >/dev/null 2>&1 & pids+=($!); wait_port $EP || EP=""
fi
DP=$(port)
printf 'listen: 127.0.0.1:%s\ndescriptors: [%s]\nservices:\n  - match: "bench.v1.*"\n    backends: [http://127.0.0.1:%s]\n' $DP "$b/bench.binpb" $BP >"$run/dragoman.yaml"
RUST_LOG=${RUST_LOG:-warn} "$bin" serve --config "$run/dragoman.yaml" >/dev/null 2>&1 & pids+=($!); wait_port $DP

item='{"id":"7","name":"a reasonably named catalogue item","tags":["red","large","sale"],"price":{"currency":"EUR","units":"19","nanos":990000000},"inStock":true}'
printf 'wrk.method = "POST"\nwrk.body = [[%s]]\nwrk.headers["Content-Type"] = "application/json"\n' "$item" >"$run/post.lua"
printf '%s' "$item" >"$run/item.json"

wrk_row() { # name url [script]
  local out; out=$(wrk -t1 -c "$C" -d "${D}s" --latency ${3:+-s "$3"} "$2" 2>&1)
  printf '%-26s %9s req/s  p50 %-8s p99 %-8s non2xx %s\n' "$1" "$(echo "$out" | awk '/^Requests\/sec/{print int($2)}')" \
    "$(echo "$out" | awk '/^ +50%/{print $2}')" "$(echo "$out" | awk '/^ +99%/{print $2}')" "$(echo "$out" | awk '/Non-2xx/{print $5}')"
  echo "$out" | awk '/^Requests\/sec/{print int($2)}' >"$run/rps.$1"
}
h2_row() { # name url [data file, content type]
  local out; out=$(h2load -D "$D" -t1 -c "$C" -m 4 ${3:+-d "$3"} -H "content-type: ${4:-application/json}" -H 'te: trailers' "$2" 2>&1)
  printf '%-26s %9s req/s  mean %-9s 2xx %s\n' "$1" "$(echo "$out" | awk '/^finished in/{gsub(",","",$4); print int($4)}')" \
    "$(echo "$out" | awk '/^time for request:/{print $6}')" "$(echo "$out" | awk '/^status codes:/{print $3}')"
  echo "$out" | awk '/^finished in/{gsub(",","",$4); print int($4)}' >"$run/rps.$1"
}
echo "# $(date -u +%F) $(nproc) cores, ${D}s per row, $C connections; backend, gateways and load generator share the cores"
h2_row grpc-direct http://127.0.0.1:$BP/bench.v1.Items/GetItem "$b/getitem.grpc" application/grpc
wrk_row get-dragoman http://127.0.0.1:$DP/v1/items/42
wrk_row get-grpc-gateway http://127.0.0.1:$GP/v1/items/42
[ -n "$EP" ] && wrk_row get-envoy http://127.0.0.1:$EP/v1/items/42
wrk_row post-dragoman http://127.0.0.1:$DP/v1/items "$run/post.lua"
wrk_row post-grpc-gateway http://127.0.0.1:$GP/v1/items "$run/post.lua"
[ -n "$EP" ] && wrk_row post-envoy http://127.0.0.1:$EP/v1/items "$run/post.lua"
h2_row h2-get-dragoman http://127.0.0.1:$DP/v1/items/42
[ -n "$EP" ] && h2_row h2-get-envoy http://127.0.0.1:$EP/v1/items/42
h2_row h2-post-dragoman http://127.0.0.1:$DP/v1/items "$run/item.json"
[ -n "$EP" ] && h2_row h2-post-envoy http://127.0.0.1:$EP/v1/items "$run/item.json"
r() { cat "$run/rps.$1" 2>/dev/null || echo 0; }
ratio() { python3 -c "import sys; a,b=map(float,sys.argv[1:]); print(f'{a/b:.2f}' if b else 'n/a')" "$(r $1)" "$(r $2)"; }
echo "GET  dragoman/grpc-gateway $(ratio get-dragoman get-grpc-gateway)  dragoman/envoy $(ratio get-dragoman get-envoy)  dragoman/grpc-direct $(ratio get-dragoman grpc-direct)"
echo "POST dragoman/grpc-gateway $(ratio post-dragoman post-grpc-gateway)  dragoman/envoy $(ratio post-dragoman post-envoy)"
echo "h2   GET dragoman/envoy $(ratio h2-get-dragoman h2-get-envoy)  POST dragoman/envoy $(ratio h2-post-dragoman h2-post-envoy)"
