#!/usr/bin/env bash
# What metrics and traces cost, in one run: the peers' Go backend (../shared/peers/setup.sh) and
# one Dragoman process per row, same binary, different configs, all in front of that backend:
#   before-metrics  PREMETRICS=<dragoman built at c6eeac6^, before call metrics> (row skipped if unset)
#   traces-off      metrics (always recorded), no traces: section
#   ratio-0         traces to a real OTLP/gRPC receiver, sampling_ratio 0
#   ratio-0.01      ... sampling_ratio 0.01
#   ratio-1         ... sampling_ratio 1.0
# The receiver is examples/otlp_sink.rs (counts spans per service.name and protocol, answers OK);
# each traced gateway has its own service_name, so the spans of each row are counted. Traces use
# the defaults otherwise (batches of 512, export_interval 5s, max_queue_size 2048); after each
# traced row the script waits 6 s so the last batch arrives before the row's spans are read.
# Load: unary gRPC GetItem with h2load (h2c, CONNS x STREAMS, then 1 x 1) and REST GET
# /v1/items/42 with wrk (HTTP/1.1 keep-alive, CONNS connections, then 1). cpu = the gateway's CPU
# (user + system, /proc/<pid>/stat) over the row divided by the requests done (the backend's on
# the direct row); sink = the receiver's CPU per request over the row and its settling time.
# Usage: bench/observe.sh [seconds]
#   env: DRAGOMAN=target/release/dragoman SINK=target/release/examples/otlp_sink PREMETRICS=... CONNS=32 STREAMS=4 REVERSE=1
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/peers-lib.sh
M=${STREAMS:-4}
sink=${SINK:-${CARGO_TARGET_DIR:-target}/release/examples/otlp_sink}
[ -x "$sink" ] || { echo "no $sink: cargo build --release --example otlp_sink"; exit 1; }

SP=$(port); "$sink" 127.0.0.1:$SP "$run/spans" >"$run/sink.log" 2>&1 & SK=$!; pids+=($SK); wait_port $SP
declare -A dport dpid
rows=()
start() { # row binary [traces: lines]
  local p; p=$(port)
  { printf 'listen: 127.0.0.1:%s\ndescriptors: [%s]\nservices:\n  - match: "bench.v1.*"\n    backends: [http://127.0.0.1:%s]\n' $p "$b/bench.binpb" $BP
    [ -z "${3:-}" ] || printf '%s\n' "$3"; } >"$run/$1.yaml"
  RUST_LOG=${RUST_LOG:-warn} "$2" serve --config "$run/$1.yaml" >"$run/$1.log" 2>&1 & dpid[$1]=$!; pids+=($!)
  wait_port $p || { echo "$1 did not start:"; cat "$run/$1.log"; exit 1; }
  dport[$1]=$p; rows+=("$1")
}
traces() { printf 'traces:\n  otlp_endpoint: http://127.0.0.1:%s\n  sampling_ratio: %s\n  service_name: %s' $SP "$1" "$2"; }
[ -z "${PREMETRICS:-}" ] || start before-metrics "$PREMETRICS"
start traces-off "$bin"
start ratio-0 "$bin" "$(traces 0 ratio-0)"
start ratio-0.01 "$bin" "$(traces 0.01 ratio-0.01)"
start ratio-1 "$bin" "$(traces 1.0 ratio-1)"
# REVERSE=1 measures the gateways in the opposite order (a drift in the machine's load over the run
# then favours the other end of the table).
[ -z "${REVERSE:-}" ] || { r=(); for ((i = ${#rows[@]} - 1; i >= 0; i--)); do r+=("${rows[i]}"); done; rows=("${r[@]}"); }

# Every gateway answers both kinds of request once (grpc-status 0, HTTP 200) before anything is measured.
for r in "${rows[@]}"; do
  st=$(curl -s --http2-prior-knowledge -o /dev/null -D - --data-binary @"$b/getitem.grpc" -H 'content-type: application/grpc' \
    -H 'te: trailers' "http://127.0.0.1:${dport[$r]}/bench.v1.Items/GetItem" | tr -d '\r' | awk '/^grpc-status:/{print $2}')
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${dport[$r]}/v1/items/42")
  [ "$st" = 0 ] && [ "$code" = 200 ] || { echo "$r: grpc-status '$st', REST $code"; exit 1; }
done
sleep 6   # the checks' spans arrive; the row's spans are counted from here

spans() { # service protocol: spans received so far
  awk -v s="$1" -v p="$2" '$1==s && $2==p {print $3; f=1} END {if (!f) print 0}' "$run/spans" 2>/dev/null || echo 0; }
row() { # kind(grpc|rest) conns streams row -> one line; kept in $run/<table>.<row>.{rps,cpu}
  local kind=$1 c=$2 m=$3 r=$4 pid port proto out rps done mean p50 p99 bad ticks s0 s1 n0 n1 sp="-" su="-" traced=""
  if [ "$r" = direct ]; then pid=$BK; port=$BP; else pid=${dpid[$r]}; port=${dport[$r]}; fi
  case $r in ratio-*) traced=1 ;; esac
  proto=$kind; [ -z "$traced" ] || { n0=$(spans "$r" "$proto"); s0=$(cpu $SK); }
  load "$kind" "$c" "$m" "http://127.0.0.1:$port" "$pid"
  if [ -n "$traced" ]; then
    sleep 6; n1=$(spans "$r" "$proto"); s1=$(cpu $SK)
    sp="$((n1 - n0)) ($(python3 -c "import sys; a,b=map(float,sys.argv[1:]); print(f'{a/b:.4f}' if b else 'n/a')" $((n1 - n0)) "${done:-0}")/req)"
    su=$(us_per $((s1 - s0)) "${done:-0}")
  fi
  local us; us=$(us_per "$ticks" "${done:-0}")
  printf '%-15s %8s req/s  mean %-8s %s cpu %6s us/req  rss %3s MiB  failed %-3s spans %-18s sink %s us/req\n' "$r" "$rps" "$mean" \
    "${p50:+p50 $p50 p99 $p99 }" "$us" "$(rss $pid)" "${bad:-?}" "$sp" "$su"
  echo "$rps" >"$run/$kind$c.$r.rps"; echo "$us" >"$run/$kind$c.$r.cpu"
}

echo "# $(date -u '+%F %H:%M UTC') $(nproc) cores, ${D}s per row; backend, gateways, OTLP sink and load generator share the cores"
echo "# dragoman $(commit_of "$bin") ($bin)${PREMETRICS:+; before-metrics $(commit_of "$PREMETRICS") ($PREMETRICS)}"
echo "## unary gRPC GetItem, h2load h2c, $C connections x $M streams"
row grpc "$C" "$M" direct; for r in "${rows[@]}"; do row grpc "$C" "$M" "$r"; done
echo "## REST GET /v1/items/42, wrk HTTP/1.1, $C connections"
for r in "${rows[@]}"; do row rest "$C" 1 "$r"; done
echo "## unary gRPC GetItem, 1 connection x 1 stream (latency)"
row grpc 1 1 direct; for r in "${rows[@]}"; do row grpc 1 1 "$r"; done
echo "## REST GET, wrk, 1 connection (latency)"
for r in "${rows[@]}"; do row rest 1 1 "$r"; done

val() { cat "$run/$1" 2>/dev/null || echo 0; }
ratio() { python3 -c "import sys; a,b=map(float,sys.argv[1:]); print(f'{a/b:.2f}' if a and b else 'n/a')" "$1" "$2"; }
echo "## against traces-off: req/s ratio, cpu ratio"
for t in grpc$C rest$C grpc1 rest1; do
  line="$t:"
  for r in "${rows[@]}"; do [ "$r" = traces-off ] && continue
    line+="  $r $(ratio "$(val $t.$r.rps)" "$(val $t.traces-off.rps)")/$(ratio "$(val $t.$r.cpu)" "$(val $t.traces-off.cpu)")"; done
  echo "$line"
done
grep -hi 'drop' "$run"/ratio-*.log | sed 's/^/# gateway log: /' | head -5 || true
