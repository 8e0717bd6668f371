#!/usr/bin/env bash
# The syscalls Dragoman's threads make over N unary calls at concurrency 1 (strace -f -c), its log
# in another folder than its config. Usage: bench/c1-syscalls.sh BINARY [N]   (strace, h2load,
# ../shared/peers/setup.sh's build). strace slows every call: count the calls, not their times.
set -u
b=${PEERS_BUILD:-$(cd "$(dirname "$0")/../../shared/peers" && pwd)/build}; N=${2:-2000}
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
run=$(mktemp -d); pids=(); trap 'for p in "${pids[@]}"; do kill $p 2>/dev/null; done; sleep 0.3; rm -rf $run' EXIT
BP=$(port); $b/backend -addr 127.0.0.1:$BP >/dev/null 2>&1 & pids+=($!); wait_port $BP
DP=$(port); mkdir -p $run/cfg $run/log
printf 'listen: 127.0.0.1:%s\ndescriptors: [%s]\nservices:\n  - match: "bench.v1.*"\n    backends: [http://127.0.0.1:%s]\n' $DP $b/bench.binpb $BP > $run/cfg/d.yaml
$1 serve --config $run/cfg/d.yaml >$run/log/d.log 2>&1 & p=$!; pids+=($p); wait_port $DP
h2load -n 200 -c1 -m1 -d $b/getitem.grpc -H 'content-type: application/grpc' -H 'te: trailers' http://127.0.0.1:$DP/bench.v1.Items/GetItem >/dev/null 2>&1
strace -f -c -p $p -o $run/st.txt & s=$!; sleep 1
h2load -n $N -c1 -m1 -d $b/getitem.grpc -H 'content-type: application/grpc' -H 'te: trailers' http://127.0.0.1:$DP/bench.v1.Items/GetItem 2>&1 | grep -E '^requests|time for req'
kill -INT $s; sleep 0.5; head -20 $run/st.txt
