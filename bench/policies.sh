#!/usr/bin/env bash
# What authentication and rate limits cost on the REST unary path, in one run: the peers' Go
# backend (../shared/peers/setup.sh) and one Dragoman process per row, same binary, in front of it:
#   none          no auth:, no rate_limits:
#   api-key       auth.api_keys (one key) and a rule requiring it for bench.v1.*
#   jwt-rs256     auth.jwt with an RS256 public key (pem_file; 2048-bit) and the same rule
#   api-key+limit api-key, and a limit per identity that never trips (10^6 per second)
#   jwt+limit     jwt-rs256, and the same limit
# Load: REST GET /v1/items/42 by wrk (HTTP/1.1 keep-alive, CONNS connections, then 1), each row's
# credential in a header. cpu = the gateway's CPU over the row / requests done.
# Usage: bench/policies.sh [seconds]   env: DRAGOMAN=target/release/dragoman CONNS=32 REVERSE=1
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/peers-lib.sh

# An RS256 key and a token valid for a day, made with openssl.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$run/jwt.key" 2>/dev/null
openssl pkey -in "$run/jwt.key" -pubout -out "$run/jwt.pub"
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
h=$(printf '{"alg":"RS256","typ":"JWT"}' | b64url)
p=$(printf '{"iss":"bench","aud":"dragoman","sub":"bench","scope":"items.read","exp":%d}' $(($(date +%s) + 86400)) | b64url)
s=$(printf '%s.%s' "$h" "$p" | openssl dgst -sha256 -sign "$run/jwt.key" -binary | b64url)
token="$h.$p.$s"
key=bench-key-0123456789abcdef
key_sha=$(printf %s "$key" | sha256sum | cut -d' ' -f1)

api_key="auth:
  api_keys:
    keys: [{name: bench, sha256: $key_sha, scopes: [items.read]}]
  rules: [{match: 'bench.v1.*', scopes: [items.read]}]"
jwt="auth:
  jwt:
    - {issuer: bench, audiences: [dragoman], pem_file: $run/jwt.pub, algorithm: RS256}
  rules: [{match: 'bench.v1.*', scopes: [items.read]}]"
limit="rate_limits:
  limits: [{name: per-caller, key: identity, limit: 1000000, per: 1s}]"

declare -A dport dpid hdr
rows=()
start() { # row header config-sections
  local p; p=$(port)
  { printf 'listen: 127.0.0.1:%s\ndescriptors: [%s]\nservices:\n  - match: "bench.v1.*"\n    backends: [http://127.0.0.1:%s]\n' $p "$b/bench.binpb" $BP
    [ -z "$3" ] || printf '%s\n' "$3"; } >"$run/$1.yaml"
  RUST_LOG=${RUST_LOG:-warn} "$bin" serve --config "$run/$1.yaml" >"$run/$1.log" 2>&1 & dpid[$1]=$!; pids+=($!)
  wait_port $p || { echo "$1 did not start:"; cat "$run/$1.log"; exit 1; }
  dport[$1]=$p; hdr[$1]=$2; rows+=("$1")
}
start none "" ""
start api-key "x-api-key: $key" "$api_key"
start jwt-rs256 "authorization: Bearer $token" "$jwt"
start api-key+limit "x-api-key: $key" "$api_key
$limit"
start jwt+limit "authorization: Bearer $token" "$jwt
$limit"
[ -z "${REVERSE:-}" ] || { r=(); for ((i = ${#rows[@]} - 1; i >= 0; i--)); do r+=("${rows[i]}"); done; rows=("${r[@]}"); }

# Each gateway admits its credential (200) and refuses a call without one (401, 200 for none).
for r in "${rows[@]}"; do
  ok=$(curl -s -o /dev/null -w '%{http_code}' ${hdr[$r]:+-H "${hdr[$r]}"} "http://127.0.0.1:${dport[$r]}/v1/items/42")
  bare=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${dport[$r]}/v1/items/42")
  want=401; [ "$r" = none ] && want=200
  [ "$ok" = 200 ] && [ "$bare" = $want ] || { echo "$r: with credential $ok, without $bare"; cat "$run/$r.log"; exit 1; }
done

row() { # conns row
  local c=$1 r=$2 pid port us
  pid=${dpid[$r]}; port=${dport[$r]}
  HDR=${hdr[$r]} load rest "$c" 1 "http://127.0.0.1:$port" "$pid"
  us=$(us_per "$ticks" "${done:-0}")
  printf '%-14s %8s req/s  mean %-8s p50 %-8s p99 %-8s cpu %6s us/req  failed %s\n' "$r" "$rps" "$mean" "$p50" "$p99" "$us" "${bad:-?}"
}
echo "# $(date -u '+%F %H:%M UTC') $(nproc) cores, ${D}s per row; backend, gateways and load generator share the cores"
echo "# dragoman $(commit_of "$bin") ($bin)"
echo "## REST GET /v1/items/42, wrk HTTP/1.1, $C connections"
for r in "${rows[@]}"; do row "$C" "$r"; done
echo "## the same, 1 connection"
for r in "${rows[@]}"; do row 1 "$r"; done
