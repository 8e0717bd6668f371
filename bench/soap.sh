#!/usr/bin/env bash
# SOAP beside REST/JSON and native gRPC for the same methods, through one Dragoman, in one run
# (issue 9): the peers' Items backend (../shared/peers/setup.sh builds it). GetItem (a small
# message) as gRPC straight to the backend and through Dragoman (h2load), REST JSON, REST XML and
# SOAP 1.1 and 1.2 (wrk); CreateItem (a nested message and a list, sent and returned) as REST
# JSON, REST XML and SOAP 1.1. Each request kind is checked once with curl first.
# Usage: bench/soap.sh [seconds]   env: DRAGOMAN=target/release/dragoman CONNS=32
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/peers-lib.sh
DP=$(port)
printf 'listen: 127.0.0.1:%s\ndescriptors: [%s]\nservices:\n  - match: "bench.v1.*"\n    backends: [http://127.0.0.1:%s]\n' $DP "$b/bench.binpb" $BP >"$run/dragoman.yaml"
RUST_LOG=${RUST_LOG:-warn} "$bin" serve --config "$run/dragoman.yaml" >/dev/null 2>&1 & pids+=($!); wait_port $DP

ns=urn:dragoman:bench.v1
item_json='{"id":"7","name":"a reasonably named catalogue item","tags":["red","large","sale"],"price":{"currency":"EUR","units":"19","nanos":990000000},"inStock":true}'
item_xml='<id>7</id><name>a reasonably named catalogue item</name><tags>red</tags><tags>large</tags><tags>sale</tags><price><currency>EUR</currency><units>19</units><nanos>990000000</nanos></price><inStock>true</inStock>'
env11() { printf '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><%s xmlns="%s">%s</%s></s:Body></s:Envelope>' "$1" $ns "$2" "$1"; }
env12() { printf '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><%s xmlns="%s">%s</%s></s:Body></s:Envelope>' "$1" $ns "$2" "$1"; }
# One request kind: a wrk script, checked once with curl before anything is measured.
kind() { # name method path body content-type [header: value]
  local name=$1 method=$2 path=$3 body=$4 type=$5 extra=${6:-}
  { printf 'wrk.method = "%s"\nwrk.body = [[%s]]\nwrk.headers["Content-Type"] = [[%s]]\n' "$method" "$body" "$type"
    [ -z "$extra" ] || printf 'wrk.headers["%s"] = [[%s]]\n' "${extra%%: *}" "${extra#*: }"; } >"$run/$name.lua"
  local code; code=$(curl -s -o "$run/$name.out" -w '%{http_code}' -X "$method" ${body:+--data-binary "$body"} \
    -H "content-type: $type" ${extra:+-H "$extra"} "http://127.0.0.1:$DP$path")
  [ "$code" = 200 ] || { echo "$name answered $code: $(cat "$run/$name.out")"; exit 1; }
  case $name in *xml*|soap*) grep -q '^<?xml' "$run/$name.out" || { echo "$name answered, not in XML"; exit 1; } ;; esac
}
kind get-json GET /v1/items/42 "" application/json
kind get-xml GET /v1/items/42 "" application/json "Accept: application/xml"
kind create-json POST /v1/items "$item_json" application/json
kind create-xml POST /v1/items "<Item>$item_xml</Item>" application/xml
kind soap11-get POST /soap/bench.v1.Items "$(env11 GetItem '<id>42</id>')" 'text/xml; charset=utf-8' 'SOAPAction: "urn:dragoman:bench.v1.Items/GetItem"'
kind soap12-get POST /soap/bench.v1.Items "$(env12 GetItem '<id>42</id>')" 'application/soap+xml; charset=utf-8; action="urn:dragoman:bench.v1.Items/GetItem"'
kind soap11-create POST /soap/bench.v1.Items "$(env11 CreateItem "$item_xml")" 'text/xml; charset=utf-8' 'SOAPAction: "urn:dragoman:bench.v1.Items/CreateItem"'

wrk_row() { # name path script
  local out; out=$(wrk -t1 -c "$C" -d "${D}s" --latency -s "$3" "http://127.0.0.1:$DP$2" 2>&1)
  printf '%-22s %9s req/s  p50 %-8s p99 %-8s non2xx %s\n' "$1" "$(echo "$out" | awk '/^Requests\/sec/{print int($2)}')" \
    "$(echo "$out" | awk '/^ +50%/{print $2}')" "$(echo "$out" | awk '/^ +99%/{print $2}')" "$(echo "$out" | awk '/Non-2xx/{print $5}')"
  echo "$out" | awk '/^Requests\/sec/{print int($2)}' >"$run/rps.$1"
}
h2_row() { # name url data
  local out; out=$(h2load -D "$D" -t1 -c "$C" -m 1 -d "$3" -H "content-type: application/grpc" -H 'te: trailers' "$2" 2>&1)
  printf '%-22s %9s req/s  mean %-9s 2xx %s\n' "$1" "$(echo "$out" | awk '/^finished in/{gsub(",","",$4); print int($4)}')" \
    "$(echo "$out" | awk '/^time for request:/{print $6}')" "$(echo "$out" | awk '/^status codes:/{print $3}')"
  echo "$out" | awk '/^finished in/{gsub(",","",$4); print int($4)}' >"$run/rps.$1"
}
echo "# $(date -u +%F) $(nproc) cores, ${D}s per row, $C connections (HTTP/1.1 keep-alive for wrk, h2c one stream per connection for h2load); backend, gateway and load generator share the cores"
h2_row grpc-direct "http://127.0.0.1:$BP/bench.v1.Items/GetItem" "$b/getitem.grpc"
h2_row grpc-dragoman "http://127.0.0.1:$DP/bench.v1.Items/GetItem" "$b/getitem.grpc"
wrk_row rest-json-get /v1/items/42 "$run/get-json.lua"
wrk_row rest-xml-get /v1/items/42 "$run/get-xml.lua"
wrk_row soap11-get /soap/bench.v1.Items "$run/soap11-get.lua"
wrk_row soap12-get /soap/bench.v1.Items "$run/soap12-get.lua"
wrk_row rest-json-create /v1/items "$run/create-json.lua"
wrk_row rest-xml-create /v1/items "$run/create-xml.lua"
wrk_row soap11-create /soap/bench.v1.Items "$run/soap11-create.lua"
r() { cat "$run/rps.$1" 2>/dev/null || echo 0; }
ratio() { python3 -c "import sys; a,b=map(float,sys.argv[1:]); print(f'{a/b:.2f}' if b else 'n/a')" "$(r $1)" "$(r $2)"; }
echo "GetItem    soap11/rest-json $(ratio soap11-get rest-json-get)  soap11/grpc-dragoman $(ratio soap11-get grpc-dragoman)  rest-xml/rest-json $(ratio rest-xml-get rest-json-get)"
echo "CreateItem soap11/rest-json $(ratio soap11-create rest-json-create)  rest-xml/rest-json $(ratio rest-xml-create rest-json-create)"
