#!/usr/bin/env bash
# Does one big JSON transcode stall the other calls of its worker? The demo with ONE worker, so
# every connection shares it: wrk measures small GETs (concurrency 1) alone, then while a loop
# POSTs a ~5 MiB JSON order (150,000 line items: JSON decoded, encoded for the backend, its
# reply decoded and printed back as ~8 MiB of JSON).
# Usage: bench/big-json.sh [seconds]   (needs target/release/dragoman, wrk, curl)
set -u
D=${1:-10}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/target/release/dragoman
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tmp=$(mktemp -d); trap 'kill $demo $loop 2>/dev/null; rm -rf "$tmp"' EXIT
RUST_LOG=warn "$bin" demo --listen 127.0.0.1:$port --workers 1 >"$tmp/demo.log" 2>&1 & demo=$!; loop=""
for i in $(seq 1 100); do curl -s -o /dev/null "127.0.0.1:$port/v1/users/u-1" && break; sleep 0.1; done
python3 - "$tmp/big.json" <<'PY'
import json, sys
items = [{"productId": "p-1", "quantity": 1}] * 150000
json.dump({"userId": "u-1", "items": items}, open(sys.argv[1], "w"))
PY
ls -l "$tmp/big.json" | awk '{printf "big body: %.1f MiB\n", $5/1048576}'
one=$(curl -s -o /dev/null -w '%{http_code} %{time_total} %{size_download}' -X POST -H 'content-type: application/json' --data-binary @"$tmp/big.json" "127.0.0.1:$port/v1/orders")
echo "one big POST: status, seconds, reply bytes: $one"
small() { wrk -t1 -c1 -d${D}s --latency "http://127.0.0.1:$port/v1/users/u-1" | awk '/^ +Latency +[0-9]/{max=$4} /^ +(50|99)%/{printf "%s %s  ", $1, $2} /Requests\/sec/{printf "max %s  %s req/s\n", max, $2}'; }
echo -n "small GETs alone:          "; small
( while true; do curl -s -o /dev/null -X POST -H 'content-type: application/json' --data-binary @"$tmp/big.json" "127.0.0.1:$port/v1/orders"; echo >>"$tmp/posts"; done ) & loop=$!
sleep 1
echo -n "small GETs beside big POSTs: "; small
kill $loop 2>/dev/null; wait $loop 2>/dev/null
echo "big POSTs completed meanwhile: $(wc -l <"$tmp/posts" 2>/dev/null || echo 0)"
