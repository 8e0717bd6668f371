#!/usr/bin/env bash
# TLS termination beside Envoy, in one run: the peers' Go backend (../shared/peers/setup.sh), one
# Dragoman with a plain listener and a tls: listener, and Envoy (the peers' binary) with a plain
# listener and a TLS one (bench/envoy-tls.yaml.in: gRPC passthrough and the gRPC-JSON transcoder,
# ALPN h2,http/1.1), both on the same certificate: an ECDSA P-256 server certificate for
# 127.0.0.1/localhost signed by a CA made for the run (openssl, in the run's temp folder).
# Load: unary gRPC GetItem with h2load (https://: TLS, ALPN h2; http://: h2c), CONNS x STREAMS and
# then 1 x 1; REST GET /v1/items/42 with wrk (HTTP/1.1 keep-alive over TLS or plain), CONNS and
# then 1 connection. Connections are opened once per row (keep-alive): handshakes are a negligible
# share; the rows measure encryption of the traffic, not handshakes. cpu = the proxy's CPU (user +
# system, /proc) per request over the row (the backend's on the direct row); rss its resident MiB.
# Usage: bench/tls.sh [seconds]   env: DRAGOMAN=target/release/dragoman CONNS=32 STREAMS=4
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/peers-lib.sh
M=${STREAMS:-4}
[ -x "$b/envoy" ] || { echo "no Envoy in $b: ../shared/peers/setup.sh fetches it"; exit 1; }

# A CA and a server certificate for 127.0.0.1 and localhost.
( cd "$run"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr -subj /CN=localhost
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' >ext.cnf
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out server.pem
  cat server.pem ca.pem >chain.pem ) >"$run/openssl.log" 2>&1 || { cat "$run/openssl.log"; exit 1; }

DP=$(port); DTP=$(port)
cat >"$run/dragoman.yaml" <<YAML
listen: 127.0.0.1:$DP
tls:
  listen: 127.0.0.1:$DTP
  cert_file: $run/chain.pem
  key_file: $run/server.key
descriptors: [$b/bench.binpb]
services:
  - match: "bench.v1.*"
    backends: [http://127.0.0.1:$BP]
YAML
RUST_LOG=${RUST_LOG:-warn} "$bin" serve --config "$run/dragoman.yaml" >"$run/dragoman.log" 2>&1 & DG=$!; pids+=($DG)
wait_port $DTP || { echo "dragoman did not start:"; cat "$run/dragoman.log"; exit 1; }
EP=$(port); ETP=$(port)
sed "s#@PORT@#$EP#; s#@TLS_PORT@#$ETP#; s#@BACKEND_PORT@#$BP#; s#@DESCRIPTORS@#$b/bench.binpb#; s#@CERT@#$run/chain.pem#; s#@KEY@#$run/server.key#" \
  bench/envoy-tls.yaml.in >"$run/envoy.yaml"
"$b/envoy" -c "$run/envoy.yaml" --concurrency "$(nproc)" -l error --base-id $((BP % 60000 + 2)) >"$run/envoy.log" 2>&1 & EV=$!; pids+=($EV)
wait_port $ETP || { echo "envoy did not start:"; cat "$run/envoy.log"; exit 1; }

declare -A url pid
url[direct]=http://127.0.0.1:$BP; pid[direct]=$BK
url[dragoman]=http://127.0.0.1:$DP; pid[dragoman]=$DG; url[dragoman-tls]=https://127.0.0.1:$DTP; pid[dragoman-tls]=$DG
url[envoy]=http://127.0.0.1:$EP; pid[envoy]=$EV; url[envoy-tls]=https://127.0.0.1:$ETP; pid[envoy-tls]=$EV
proxies=(dragoman dragoman-tls envoy envoy-tls)

# Each front answers gRPC (grpc-status 0) and REST (200) once, its certificate verified against the CA.
for r in "${proxies[@]}"; do
  case ${url[$r]} in https*) h2=--http2 ;; *) h2=--http2-prior-knowledge ;; esac
  st=$(curl -s --cacert "$run/ca.pem" $h2 -o /dev/null -D - --data-binary @"$b/getitem.grpc" -H 'content-type: application/grpc' \
    -H 'te: trailers' "${url[$r]}/bench.v1.Items/GetItem" | tr -d '\r' | awk '/^grpc-status:/{print $2}')
  code=$(curl -s --cacert "$run/ca.pem" --http1.1 -o /dev/null -w '%{http_code}' "${url[$r]}/v1/items/42")
  [ "$st" = 0 ] && [ "$code" = 200 ] || { echo "$r: grpc-status '$st', REST $code"; exit 1; }
done
# What each TLS listener negotiates with an OpenSSL client (h2load and wrk use OpenSSL too).
for r in dragoman-tls envoy-tls; do
  for alpn in h2 ""; do
    got=$(openssl s_client -connect "${url[$r]#https://}" ${alpn:+-alpn $alpn} </dev/null 2>/dev/null |
      awk '/^New, /{v=$2; c=$NF} /^ALPN protocol:/{a=$3} /^No ALPN/{a="none"} END {print v, c, "ALPN", a}')
    echo "# $r, client ALPN ${alpn:-none}: $got"
  done
done

row() { # kind(grpc|rest) conns streams row
  local kind=$1 c=$2 m=$3 r=$4 p=${pid[$4]} out rps done mean p50 p99 bad ticks tls=""
  load "$kind" "$c" "$m" "${url[$r]}" "$p"
  [ $kind = rest ] || tls=$(echo "$out" | awk '/^TLS Protocol:/{v=$3} /^Cipher:/{c=$2} /^Application protocol:/{a=$3} END {if (v) print v, c, a}')
  local us; us=$(us_per "$ticks" "${done:-0}")
  printf '%-13s %8s req/s  mean %-8s %s cpu %6s us/req  rss %3s MiB  failed %s%s\n' "$r" "$rps" "$mean" \
    "${p50:+p50 $p50 p99 $p99 }" "$us" "$(rss $p)" "${bad:-?}" "${tls:+  ($tls)}"
  echo "$rps" >"$run/$kind$c.$r.rps"; echo "$us" >"$run/$kind$c.$r.cpu"
}

echo "# $(date -u '+%F %H:%M UTC') $(nproc) cores, ${D}s per row; backend, proxies and load generator share the cores"
echo "# dragoman $(commit_of "$bin") ($bin); envoy $("$b/envoy" --version 2>/dev/null | grep -o 'version: [^ ]*' | head -1)"
echo "## unary gRPC GetItem, h2load, $C connections x $M streams"
for r in direct "${proxies[@]}"; do row grpc "$C" "$M" $r; done
echo "## REST GET /v1/items/42, wrk HTTP/1.1, $C connections"
for r in "${proxies[@]}"; do row rest "$C" 1 $r; done
echo "## unary gRPC GetItem, 1 connection x 1 stream (latency)"
for r in direct "${proxies[@]}"; do row grpc 1 1 $r; done
echo "## REST GET, wrk, 1 connection (latency)"
for r in "${proxies[@]}"; do row rest 1 1 $r; done

val() { cat "$run/$1" 2>/dev/null || echo 0; }
ratio() { python3 -c "import sys; a,b=map(float,sys.argv[1:]); print(f'{a/b:.2f}' if a and b else 'n/a')" "$1" "$2"; }
minus() { python3 -c "import sys; a,b=map(float,sys.argv[1:]); print(f'{a-b:+.1f}')" "$1" "$2" 2>/dev/null || echo n/a; }
for t in grpc$C rest$C grpc1 rest1; do
  echo "$t: req/s dragoman-tls/envoy-tls $(ratio "$(val $t.dragoman-tls.rps)" "$(val $t.envoy-tls.rps)")" \
    " dragoman/envoy (plain) $(ratio "$(val $t.dragoman.rps)" "$(val $t.envoy.rps)")" \
    " cpu-less envoy-tls/dragoman-tls $(ratio "$(val $t.envoy-tls.cpu)" "$(val $t.dragoman-tls.cpu)")" \
    " | tls/plain req/s: dragoman $(ratio "$(val $t.dragoman-tls.rps)" "$(val $t.dragoman.rps)") envoy $(ratio "$(val $t.envoy-tls.rps)" "$(val $t.envoy.rps)")" \
    " TLS cpu us/req: dragoman $(minus "$(val $t.dragoman-tls.cpu)" "$(val $t.dragoman.cpu)") envoy $(minus "$(val $t.envoy-tls.cpu)" "$(val $t.envoy.cpu)")"
done
