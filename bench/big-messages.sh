#!/usr/bin/env bash
# Big messages and streams through Dragoman beside the peers, in one run: a Go backend of our own
# (bench/big-backend.go: items padded to the `item-bytes` metadata, CreateItem echoes, 64 MiB
# message limits) reached directly, through nginx grpc_pass, Envoy (passthrough and its gRPC-JSON
# transcoder), grpc-gateway (REST) and Dragoman. Rows:
#   1. unary CreateItem echoing 1 KiB, 64 KiB and 4 MiB messages (h2load, a prepared gRPC frame);
#   2. server streams: ListItems of 100,000 small items, and of 1,000 items of 64 KiB (h2load);
#   3. slow readers: ListItems 1,000 x 64 KiB (62.5 MiB) read by curl at 2 MiB/s for 20 s, the
#      proxies side by side, their RSS sampled every 0.5 s (does a proxy hold the stream?); then
#      100,000 small items read at 1 MiB/s by gRPC (at once) and at 4 MiB/s by REST (one at a
#      time): does the stream survive a reader slower than the backend?
#   4. REST: POST /v1/items with a 1 MiB JSON item, echoed (wrk); GET /v1/items?count=100000, a
#      streamed answer of 100,000 items (curl, three calls each).
# Each row: MiB/s (message bytes both ways, HTTP/2 framing not counted), calls or messages per
# second, the proxy's CPU (user + system, children included; the backend's on direct rows) per
# call and per MiB, the proxy's peak RSS sampled every 0.5 s during the row, and failures. Only ratios within one run mean anything:
# backend, proxies and load generators share the machine's cores. Hand-run, never in CI.
# Usage: bench/big-messages.sh [seconds per row, default 5]   env: DRAGOMAN=target/release/dragoman
# Needs ../shared/peers/setup.sh's build (Go backend's package, grpc-gateway, Envoy, descriptors).
set -u
cd "$(dirname "$0")/.."
NO_BACKEND=1 . bench/peers-lib.sh   # finds $b, $bin; $run, $pids (stopped on exit); port, cpu, rss, ...
D=${1:-5}
[ -x "$bin" ] || { echo "no dragoman binary at $bin (set DRAGOMAN)"; exit 1; }
# The binary as it is now, run from a copy: a rebuild during the run cannot change what is measured.
binid="commit_of $(commit_of "$bin"), built $(date -u -r "$bin" '+%F %H:%M'), sha256 $(sha256sum "$bin" | cut -c1-12)"
cp "$bin" "$run/dragoman"
MiB=1048576

# The backend: GOPATH mode against the peers' generated package, as setup.sh builds backend.go.
mkdir -p "$b/gopath/src/benchbig" && cp bench/big-backend.go "$b/gopath/src/benchbig/main.go"
(cd "$b" && GO111MODULE=off GOPATH=$b/gopath:/usr/share/gocode GOFLAGS= GOCACHE=$b/gocache go build -o "$run/big-backend" benchbig) ||
  { echo "bench/big-backend.go did not build"; exit 1; }
BP=$(port); "$run/big-backend" -addr 127.0.0.1:$BP >"$run/backend.log" 2>&1 & BK=$!; pids+=($BK)
wait_port $BP || { echo "big backend did not start"; cat "$run/backend.log"; exit 1; }

# nginx: the peers' template plus what big gRPC bodies need. nginx streams gRPC both ways (no
# request buffering, responses passed on as read), through fixed buffers:
#   client_max_body_size 0      the default 1m refuses any request body over 1 MiB with 413;
#   client_body_buffer_size 1m  the request body goes on through this buffer, and nginx opens the
#                               client's HTTP/2 stream window only as far as it has room (default
#                               16k: a window update per 16 KiB);
#   http2_body_preread_size 1m  the window a stream starts with (default 64k);
#   grpc_buffer_size 1m         the buffer the backend's reply is read into (default 4k/8k);
# 1 MiB each, as Dragoman's HTTP/2 stream windows are.
NP=$(port); mkdir -p "$run"/{body,proxy,fastcgi,uwsgi,scgi}
sed "s#@RUN@#$run#g; s#@PORT@#$NP#; s#@BACKEND_PORT@#$BP#" "$peers/nginx.conf.in" |
  sed 's#^  access_log off;#  access_log off;\n  client_max_body_size 0;\n  client_body_buffer_size 1m;\n  http2_body_preread_size 1m;\n  grpc_buffer_size 1m;#' >"$run/nginx.conf"
grep -q client_max_body_size "$run/nginx.conf" || { echo "nginx config: template changed?"; exit 1; }
nginx -p "$run" -c "$run/nginx.conf" >"$run/nginx.out" 2>&1 & NG=$!; pids+=($NG)
wait_port $NP || { echo "nginx did not start"; cat "$run/nginx.out" "$run/nginx-error.log"; exit 1; }

# Envoy: the peers' template, plus the transcoder's body limits (max_request_body_size,
# max_response_body_size: by default the connection's 1 MiB buffer limit, and the 1 MiB item's reply
# is refused with a 500, "the transcoder's internal buffer size exceeds the configured limit").
# Its rows are skipped without the binary.
EP=""; EV=""
if [ -x "$b/envoy" ]; then
  EP=$(port); sed "s#@PORT@#$EP#; s#@BACKEND_PORT@#$BP#; s#@DESCRIPTORS@#$b/bench.binpb#" "$peers/envoy.yaml.in" |
    sed 's#^\( *\)convert_grpc_status: true#&\n\1max_request_body_size: 67108864\n\1max_response_body_size: 67108864#' >"$run/envoy.yaml"
  grep -q max_response_body_size "$run/envoy.yaml" || { echo "envoy config: template changed?"; exit 1; }
  "$b/envoy" -c "$run/envoy.yaml" --concurrency "$(nproc)" -l error --base-id $((BP % 60000 + 2)) >"$run/envoy.log" 2>&1 & EV=$!; pids+=($EV)
  wait_port $EP || { echo "envoy did not start: its rows are skipped"; tail -3 "$run/envoy.log"; EP=""; EV=""; }
else echo "no envoy binary in $b: Envoy's rows are skipped"; fi

GP=$(port); "$b/grpcgateway" -addr 127.0.0.1:$GP -backend 127.0.0.1:$BP >"$run/gg.log" 2>&1 & GG=$!; pids+=($GG)
wait_port $GP || { echo "grpc-gateway did not start"; cat "$run/gg.log"; exit 1; }

# Dragoman: messages up to 64 MiB (server.max_message_size, default 4 MiB: a 4 MiB item plus its
# few bytes of other fields would be refused). Its log goes to another folder than its config.
DP=$(port); mkdir -p "$run/conf" "$run/log"
cat >"$run/conf/dragoman.yaml" <<YAML
listen: 127.0.0.1:$DP
descriptors: [$b/bench.binpb]
server:
  max_message_size: 67108864
services:
  - match: "bench.v1.*"
    backends: [http://127.0.0.1:$BP]
YAML
RUST_LOG=warn "$run/dragoman" serve --config "$run/conf/dragoman.yaml" >"$run/log/dragoman.log" 2>&1 & DG=$!; pids+=($DG)
wait_port $DP || { echo "dragoman did not start"; cat "$run/log/dragoman.log"; exit 1; }

declare -A URL=([direct]=http://127.0.0.1:$BP [nginx]=http://127.0.0.1:$NP [dragoman]=http://127.0.0.1:$DP [grpc-gateway]=http://127.0.0.1:$GP)
declare -A PID=([direct]=$BK [nginx]=$NG [dragoman]=$DG [grpc-gateway]=$GG)
[ -n "$EP" ] && { URL[envoy]=http://127.0.0.1:$EP; PID[envoy]=$EV; }
GRPC=(direct nginx ${EP:+envoy} dragoman); REST=(grpc-gateway ${EP:+envoy} dragoman)

# Request files: gRPC frames (a 0 flag byte, a 4-byte length, the protobuf built by hand) and JSON.
mkdir -p "$run/f"
python3 - "$run/f" <<'PY'
import struct, sys
d = sys.argv[1]
def varint(n):
    out = b""
    while True:
        low, n = n & 0x7F, n >> 7
        if not n: return out + bytes([low])
        out += bytes([low | 0x80])
def item(size):  # an Item of exactly `size` bytes: field 2 (name), a string of 'x'
    for length in range(size, -1, -1):
        m = b"\x12" + varint(length) + b"x" * length
        if len(m) == size: return m
def frame(name, m): open(f"{d}/{name}", "wb").write(b"\0" + struct.pack(">I", len(m)) + m)
for name, size in (("1k", 1024), ("64k", 65536), ("1m", 1048576), ("4m", 4194304)):
    frame(f"create-{name}.grpc", item(size))
for count in (100000, 1000):
    frame(f"list-{count}.grpc", b"\x08" + varint(count))   # ListItemsRequest{count}
open(f"{d}/item-1m.json", "w").write('{"id":"7","name":"' + "x" * 1048576 + '"}')
PY
printf 'wrk.method = "POST"\nlocal f = io.open("%s", "rb"); wrk.body = f:read("*a"); f:close()\nwrk.headers["Content-Type"] = "application/json"\n' \
  "$run/f/item-1m.json" >"$run/post.lua"

# peak_start KEY PID / peak_stop KEY: the highest RSS (MiB, children included) sampled every 0.5 s.
peak_start() { : >"$run/peak.$1"; ( while :; do rss $2 >>"$run/peak.$1"; sleep 0.5; done ) & SAMPLER[$1]=$!; pids+=(${SAMPLER[$1]}); }
peak_stop() { kill ${SAMPLER[$1]} 2>/dev/null; wait ${SAMPLER[$1]} 2>/dev/null; sort -n "$run/peak.$1" | tail -1; }
declare -A SAMPLER
py() { python3 -c "import sys; a=[float(x) for x in sys.argv[1:]]; print($1)" "${@:2}"; }
f1() { py "f'{a[0]:.1f}' if a[1] else 'n/a'" "$1" "${2:-1}"; }
# Results by row key, for the ratio lines: MIBS (MiB/s), CPUMIB (CPU µs per MiB), PEAK (MiB).
declare -A MIBS CPUMIB PEAK ONE BASE slowpid EXPECT FAIL   # FAIL: rows with failed or broken calls

# grpc_check TARGET PATH FRAME [HEADER]: one call by curl; warns unless grpc-status is 0. Sets t1 (s), sz (bytes).
grpc_check() {
  local w; w=$(curl -s --max-time 60 --http2-prior-knowledge -H content-type:application/grpc -H te:trailers ${4:+-H "$4"} \
    --data-binary @"$3" -D "$run/hdr" -o /dev/null -w '%{time_total} %{size_download}' "${URL[$1]}$2")
  t1=${w% *}; sz=${w#* }
  local gs; gs=$(tr -d '\r' <"$run/hdr" | awk -F': *' 'tolower($1)=="grpc-status"{s=$2} END{print s}')
  [ "$gs" = 0 ] || echo "WARNING: $1 $2 ($(basename "$3")${4:+, $4}): grpc-status '${gs}', $(tr -d '\r' <"$run/hdr" | grep -i '^grpc-message' | head -c 200)"
}

# h2row KEY TARGET PATH FRAME CONNS [HEADER [CALLS MESSAGES_PER_CALL EXPECTED_BYTES_PER_CALL]]: h2load
# for D seconds (or CALLS calls), 1 stream per connection. MiB/s = (gRPC frames sent + DATA payload
# received) / time: HTTP/2 frame headers are not counted, so more, smaller frames earn nothing. h2load sees HTTP statuses only: on stream rows, messages are counted from the DATA bytes
# received, and a shortfall against CALLS x EXPECTED bytes is reported (streams that broke off).
h2row() {
  local key=$1 t=$2 path=$3 frame=$4 c=$5 hdr=${6:-} calls=${7:-} per=${8:-1} expect=${9:-} out c0 ticks
  local fsz; fsz=$(stat -c %s "$frame")
  peak_start "$key" ${PID[$t]}; c0=$(cpu ${PID[$t]})
  local how=(-D "$D"); [ -n "$calls" ] && how=(-n "$calls")
  out=$(h2load "${how[@]}" -t1 -c "$c" -m 1 -d "$frame" -H 'content-type: application/grpc' -H 'te: trailers' \
    ${hdr:+-H "$hdr"} "${URL[$t]}$path" 2>&1)
  ticks=$(($(cpu ${PID[$t]}) - c0)); PEAK[$key]=$(peak_stop "$key")
  local secs done data bad short=
  secs=$(echo "$out" | awk '/^finished in/{v=$3; sub(",","",v); if (v ~ /ms$/) {sub("ms","",v); v/=1000} else sub("s","",v); print v}')
  done=$(echo "$out" | awk '/^requests:/{print $8}')
  data=$(echo "$out" | awk '/^traffic:/{for (i = 1; i <= NF; i++) if ($i == "data") {v = $(i-1); gsub("[()]", "", v); print v}}')
  bad=$(echo "$out" | awk '/^requests:/{f=$10+$12+$14} /^status codes:/{n=$5+$7+$9} END{print f+n}')
  [ -n "$secs" ] && [ -n "$done" ] || { echo "$key: h2load failed: $(echo "$out" | tail -3)"; MIBS[$key]=0; CPUMIB[$key]=0; return; }
  local mib; mib=$(py "(a[0]*a[1]+a[2])/$MiB" "$done" "$fsz" "$data")   # DATA payload both ways: no frame or header bytes
  local msgs=$done   # calls, or messages on stream rows: from the bytes received
  if [ -n "$expect" ]; then
    msgs=$(py "a[0]/a[1]*a[2]" "$data" "$expect" "$per"); per=1
    short=$(py "f'  SHORT: {100-100*a[0]/(a[1]*a[2]):.0f}% of the expected bytes missing (streams broke off)' if a[0] < 0.999*a[1]*a[2] else ''" "$data" "$done" "$expect")
  fi
  MIBS[$key]=$(py "f'{a[0]/a[1]:.1f}'" "$mib" "$secs")
  CPUMIB[$key]=$(py "f'{a[0]/a[2]*1e6/a[1]:.0f}' if a[1] else 'n/a'" "$ticks" "$mib" "$TCK")
  { [ "${bad:-1}" != 0 ] || [ -n "$short" ]; } && FAIL[$key]=1
  printf '%-22s %8s MiB/s %10s %-7s cpu %8s µs/call %6s µs/MiB  peak %4s MiB  failed %s%s\n' "$key" "${MIBS[$key]}" \
    "$(py "f'{a[0]/a[1]:,.0f}'" "$msgs" "$secs")" "$( [ -z "$expect" ] && echo calls/s || echo msg/s)" \
    "$(per_call "$ticks" "$done")" "${CPUMIB[$key]}" "${PEAK[$key]}" "${bad:-?}" "$short"
}
per_call() { py "'n/a' if not a[1] else f'{a[0]/a[2]*1e6/a[1]:.1f}' if a[0]/a[2]*1e6/a[1] < 1e4 else f'{a[0]/a[2]*1e6/a[1]:.0f}'" "$1" "$2" "$TCK"; }  # ticks calls: CPU µs per call
mark() { local k; for k; do [ -n "${FAIL[$k]:-}" ] && { echo "(!)"; return; }; done; }   # a ratio over a row with failures
ratio() { py "f'{a[0]/a[1]:.2f}' if a[0] and a[1] else 'n/a'" "$(num "${1:-}")" "$(num "${2:-}")"; }
num() { case $1 in ''|*[!0-9.]*) echo 0 ;; *) echo "$1" ;; esac; }
# ratios SET: throughput of each proxy against direct and Dragoman's against each peer; and how many
# times less CPU per MiB Dragoman used than each peer.
ratios() {
  local s=$1 line="  ratios $1:" p
  for p in nginx envoy; do [ -n "${MIBS[$p-$s]:-}" ] && line+=" dragoman/$p $(ratio "${MIBS[dragoman-$s]}" "${MIBS[$p-$s]}")$(mark dragoman-$s $p-$s)"; done
  for p in nginx envoy dragoman; do [ -n "${MIBS[$p-$s]:-}" ] && line+="  $p/direct $(ratio "${MIBS[$p-$s]}" "${MIBS[direct-$s]}")$(mark $p-$s)"; done
  line+="  | cpu-less per MiB:"
  for p in nginx envoy; do [ -n "${MIBS[$p-$s]:-}" ] && line+=" $p/dragoman $(ratio "${CPUMIB[$p-$s]}" "${CPUMIB[dragoman-$s]}")$(mark dragoman-$s $p-$s)"; done
  echo "$line"
}

echo "# $(date -u '+%F %H:%M UTC') $(nproc) cores, ${D}s per row; dragoman $bin ($binid)"
echo "# backend, proxies and load generators share the cores; cpu = the proxy's (the backend's on direct rows)"

echo "## 1. unary CreateItem, the message echoed (h2load, 1 stream per connection)"
for s in 1k 64k 4m; do
  c=4; [ $s = 4m ] && c=2
  for t in "${GRPC[@]}"; do
    grpc_check $t /bench.v1.Items/CreateItem "$run/f/create-$s.grpc"
    h2row "$t-$s" $t /bench.v1.Items/CreateItem "$run/f/create-$s.grpc" $c
  done
  ratios $s
done

echo "## 2. server streams: ListItems, one call at a time (h2load -c 1 -m 1, calls for ~${D}s from one curl call's time)"
for s in 100000x-small 1000x-64k; do
  count=${s%%x-*}; hdr=""; [ $s = 1000x-64k ] && hdr='item-bytes: 65536'
  for t in "${GRPC[@]}"; do
    grpc_check $t /bench.v1.Items/ListItems "$run/f/list-$count.grpc" "$hdr"
    [ $s = 100000x-small ] && ONE[$t]=$t1   # the REST stream rows' reference
    [ $t = direct ] && EXPECT[$s]=$sz         # bytes of a whole stream
    n=$(py "max(1, min(2000, round(a[0]/max(a[1], 0.001))))" "$D" "$t1")
    h2row "$t-$s" $t /bench.v1.Items/ListItems "$run/f/list-$count.grpc" 1 "$hdr" ${n%.*} $count "${EXPECT[$s]}"
  done
  ratios $s
done

echo "## 3. slow readers (curl --limit-rate), the proxies side by side, RSS sampled every 0.5 s"
slow=(nginx ${EP:+envoy} dragoman)
# slow_read LABEL FRAME HEADER RATE MAX_SECONDS EXPECTED_BYTES: one call per proxy, at once.
slow_read() {
  local t got secs gs
  for t in "${slow[@]}"; do BASE[$t]=$(rss ${PID[$t]}); peak_start slow-$t ${PID[$t]}; done
  for t in "${slow[@]}"; do
    curl -s --http2-prior-knowledge -H content-type:application/grpc -H te:trailers ${3:+-H "$3"} --limit-rate $4 --max-time $5 \
      --data-binary @"$2" -D "$run/slow-hdr.$t" -o /dev/null -w '%{size_download} %{time_total}' "${URL[$t]}/bench.v1.Items/ListItems" >"$run/slow.$t" 2>/dev/null &
    slowpid[$t]=$!
  done
  for t in "${slow[@]}"; do wait ${slowpid[$t]}; done
  for t in "${slow[@]}"; do
    read -r got secs <"$run/slow.$t"
    gs=$(tr -d '\r' <"$run/slow-hdr.$t" | awk -F': *' 'tolower($1)=="grpc-status"{s=$2} END{print s}')
    printf '%-22s baseline %4s MiB  peak %4s MiB  received %5s of %5s MiB in %5.1f s  grpc-status %s\n' "$1-$t" "${BASE[$t]}" \
      "$(peak_stop slow-$t)" "$(py "f'{a[0]/$MiB:.1f}'" "$got")" "$(py "f'{a[0]/$MiB:.1f}'" "$6")" "$secs" \
      "${gs:-none ($(py "'cut off by --max-time' if a[0] >= a[1] - 0.5 else 'the connection was closed'" "$secs" "$5"))}$(
        [ -n "$gs" ] && [ "$gs" != 0 ] && echo ", $(tr -d '\r' <"$run/slow-hdr.$t" | sed -n 's/^grpc-message: *//Ip' | sed 's/%20/ /g')")"
  done
}
slow_read slow-64k "$run/f/list-1000.grpc" 'item-bytes: 65536' 2M 20 "${EXPECT[1000x-64k]}"
slow_read slow-small "$run/f/list-100000.grpc" "" 1M 15 "${EXPECT[100000x-small]}"
# The same 100,000 items as REST (NDJSON or a JSON array), read at 4 MiB/s by curl, one gateway at a time.
for t in "${REST[@]}"; do
  BASE[$t]=$(rss ${PID[$t]}); peak_start slow-$t ${PID[$t]}
  read -r got secs < <(curl -s --limit-rate 4M --max-time 20 -o "$run/slow-rest.$t" -w '%{size_download} %{time_total}' "${URL[$t]}/v1/items?count=100000")
  items=$(grep -o '"name"' "$run/slow-rest.$t" | wc -l)
  printf '%-22s baseline %4s MiB  peak %4s MiB  received %5s MiB in %5.1f s  %6s of 100000 items%s\n' "slow-rest-$t" "${BASE[$t]}" \
    "$(peak_stop slow-$t)" "$(py "f'{a[0]/$MiB:.1f}'" "$got")" "$secs" "$items" \
    "$(grep -o '"error":{[^}]*}' "$run/slow-rest.$t" | head -1 | sed 's/^/  /')"
done

echo "## 4. REST: POST /v1/items, 1 MiB JSON item echoed (wrk, 4 connections); GET /v1/items?count=100000 streamed (curl, 3 calls)"
# gRPC reference for the POST: the same item, 1 MiB of protobuf, echoed by the backend directly.
grpc_check direct /bench.v1.Items/CreateItem "$run/f/create-1m.grpc"
h2row direct-post-1m direct /bench.v1.Items/CreateItem "$run/f/create-1m.grpc" 4
bsz=$(stat -c %s "$run/f/item-1m.json")
for t in "${REST[@]}"; do
  w=$(curl -s --max-time 60 -o "$run/reply.json" -w '%{http_code} %{size_download}' -H 'content-type: application/json' --data-binary @"$run/f/item-1m.json" "${URL[$t]}/v1/items")
  code=${w% *}; rsz=${w#* }
  [ "$code" = 200 ] || echo "WARNING: $t POST /v1/items answered $code: $(head -c 200 "$run/reply.json")"
  key=$t-post-1m; peak_start $key ${PID[$t]}; c0=$(cpu ${PID[$t]})
  out=$(wrk -t1 -c 4 -d ${D}s --latency -s "$run/post.lua" "${URL[$t]}/v1/items" 2>&1)
  ticks=$(($(cpu ${PID[$t]}) - c0)); PEAK[$key]=$(peak_stop $key)
  n=$(echo "$out" | awk '/requests in/{print $1}'); secs=$(echo "$out" | awk '/requests in/{v=$4; sub(",","",v); if (v ~ /ms$/) {sub("ms","",v); v/=1000} else sub("s","",v); print v}')
  p50=$(echo "$out" | awk '/^ +50%/{print $2}')
  bad=$(echo "$out" | awk '/Non-2xx/{n+=$5} /Socket errors/{gsub(",","");n+=$4+$6+$8+$10} END{print n+0}'); [ "$bad" = 0 ] || FAIL[$key]=1
  mib=$(py "a[0]*(a[1]+a[2])/$MiB" "${n:-0}" "$bsz" "$rsz")
  MIBS[$key]=$(py "f'{a[0]/a[1]:.1f}' if a[1] else '0'" "$mib" "${secs:-0}"); CPUMIB[$key]=$(py "f'{a[0]/a[2]*1e6/a[1]:.0f}' if a[1] else 'n/a'" "$ticks" "$mib" "$TCK")
  printf '%-22s %8s MiB/s %10s req/s  cpu %8s µs/call %6s µs/MiB  peak %4s MiB  failed %s  p50 %s (reply %s bytes)\n' "$key" "${MIBS[$key]}" \
    "$(py "f'{a[0]/a[1]:,.0f}' if a[1] else '0'" "${n:-0}" "${secs:-0}")" "$(per_call "$ticks" "${n:-0}")" \
    "${CPUMIB[$key]}" "${PEAK[$key]}" "$bad" "$p50" "$rsz"
done
line="  ratios post-1m:"
for p in grpc-gateway envoy; do [ -n "${MIBS[$p-post-1m]:-}" ] && line+=" dragoman/$p $(ratio "${MIBS[dragoman-post-1m]}" "${MIBS[$p-post-1m]}")$(mark dragoman-post-1m $p-post-1m)"; done
for p in "${REST[@]}"; do line+="  $p/grpc-direct $(ratio "${MIBS[$p-post-1m]}" "${MIBS[direct-post-1m]}")$(mark $p-post-1m)"; done
line+="  | cpu-less per MiB:"
for p in grpc-gateway envoy; do [ -n "${MIBS[$p-post-1m]:-}" ] && line+=" $p/dragoman $(ratio "${CPUMIB[$p-post-1m]}" "${CPUMIB[dragoman-post-1m]}")"; done
echo "$line"
for t in "${REST[@]}"; do
  key=$t-get-100000; peak_start $key ${PID[$t]}; c0=$(cpu ${PID[$t]}); times=(); good=(); bytes=""; total=0; fails=0
  for i in 1 2 3; do
    w=$(curl -s --max-time 60 -o "$run/stream.out" -w '%{http_code} %{time_total} %{size_download}' "${URL[$t]}/v1/items?count=100000")
    read -r code secs got <<<"$w"; total=$((total + got))
    items=$(grep -o '"name"' "$run/stream.out" | wc -l)
    if [ "$code" = 200 ] && [ "$items" = 100000 ]; then good+=("$secs"); bytes=$got; times+=("$secs")
    else fails=$((fails + 1)); times+=("${secs}(broke)")
      echo "WARNING: $t GET /v1/items?count=100000: $code, $items items, $got bytes, ends: $(tail -c 120 "$run/stream.out" | tr '\n' ' ')"; fi
  done
  ticks=$(($(cpu ${PID[$t]}) - c0)); PEAK[$key]=$(peak_stop $key); [ $fails = 0 ] || FAIL[$key]=1
  med=""; [ ${#good[@]} -gt 0 ] && med=$(printf '%s\n' "${good[@]}" | sort -g | sed -n "$(( (${#good[@]} + 1) / 2 ))p")
  MIBS[$key]=$([ -n "$med" ] && py "f'{a[0]/$MiB/a[1]:.1f}'" "$bytes" "$med" || echo n/a)
  CPUMIB[$key]=$(py "f'{a[0]/a[2]*1e6/(a[1]/$MiB):.0f}'" "$ticks" "$total" "$TCK")   # over the bytes of all three calls
  printf '%-22s %8s MiB/s %10s msg/s  cpu %8s µs/call %6s µs/MiB  peak %4s MiB  failed %s  one call %s s (%s), %s bytes\n' "$key" "${MIBS[$key]}" \
    "$([ -n "$med" ] && py "f'{100000/a[0]:,.0f}'" "$med" || echo n/a)" "$(per_call "$ticks" 3)" "${CPUMIB[$key]}" "${PEAK[$key]}" "$fails" \
    "${med:-n/a}" "${times[*]}" "${bytes:-n/a}"
  ONE[$t-rest]=$med
done
line="  ratios get-100000 (time of one call, inverted: higher is faster):"
for p in grpc-gateway envoy; do [ -n "${ONE[$p-rest]+x}" ] && line+=" dragoman/$p $(ratio "${ONE[$p-rest]}" "${ONE[dragoman-rest]}")$(mark dragoman-get-100000 $p-get-100000)"; done
for p in "${REST[@]}"; do line+="  $p/grpc-direct $(ratio "${ONE[direct]}" "${ONE[$p-rest]}")$(mark $p-get-100000 direct-100000x-small)"; done
echo "$line"
echo "(!): a ratio over a row with failed or broken calls; its figure counts only what arrived"
grep -v '^\s*$' "$run/log/dragoman.log" | head -5 | sed 's/^/dragoman log: /'
