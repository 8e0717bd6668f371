#!/usr/bin/env bash
# Instructions per request (callgrind) for a dragoman binary: REST GET (HTTP/1.1), gRPC unary or
# SOAP 1.1 (HTTP/1.1, GetItem), through a one-worker gateway in front of the peers' Go backend.
# usage: bench/callgrind.sh BINARY rest|grpc|soap N1 N2   (needs valgrind, h2load, ../shared/peers built)
#   env: EXTRA (config sections appended, e.g. auth:), HDR ("name: value", a header every request carries)
# Runs N1 then N2 requests at concurrency 1 and divides the difference, so start-up and shutdown
# cancel out.
set -u
bin=$1; kind=$2
b=${PEERS_BUILD:-$(cd "$(dirname "$0")/../../shared/peers/build" && pwd)}
tmp=$(mktemp -d)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BP=$(port); $b/backend -addr 127.0.0.1:$BP >/dev/null 2>&1 & BK=$!
sleep 0.3
total() { # n -> total instructions
  DP=$(port); cat >$tmp/cg.yaml <<YAML
listen: 127.0.0.1:$DP
workers: 1
descriptors: [$b/bench.binpb]
services:
  - match: "bench.v1.*"
    backends: [http://127.0.0.1:$BP]
${EXTRA:-}
YAML
  rm -f $tmp/cg.out
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file=$tmp/cg.out $bin serve --config $tmp/cg.yaml >/dev/null 2>&1 & DG=$!
  for i in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/$DP) 2>/dev/null && break; sleep 0.1; done
  if [ $kind = rest ]; then h2load --h1 -n $1 -c 1 ${HDR:+-H "$HDR"} http://127.0.0.1:$DP/v1/items/42 >/dev/null 2>&1
  elif [ $kind = soap ]; then
    printf '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><GetItem xmlns="urn:dragoman:bench.v1"><id>42</id></GetItem></s:Body></s:Envelope>' >$tmp/getitem.xml
    h2load --h1 -n $1 -c 1 -d $tmp/getitem.xml -H 'content-type: text/xml; charset=utf-8' -H 'soapaction: "urn:dragoman:bench.v1.Items/GetItem"' http://127.0.0.1:$DP/soap/bench.v1.Items >/dev/null 2>&1
  else h2load -n $1 -c 1 -d $b/getitem.grpc -H 'content-type: application/grpc' -H 'te: trailers' http://127.0.0.1:$DP/bench.v1.Items/GetItem >/dev/null 2>&1; fi
  kill -INT $DG; wait $DG 2>/dev/null
  grep -E "^summary:|^totals:" $tmp/cg.out | head -1 | awk '{print $2}'
}
a=$(total $3); c=$(total $4)
python3 -c "print(f'$kind: {($c-$a)/($4-$3):.0f} instructions/request')"
kill $BK
