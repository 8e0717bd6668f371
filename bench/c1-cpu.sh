#!/usr/bin/env bash
# CPU, context switches and migrations per unary call at concurrency 1 (perf stat on the process
# while h2load makes N calls one at a time), for the peers' Go backend, nginx grpc_pass and each
# Dragoman variant given as NAME=BINARY[,same][,warn]: `same` puts Dragoman's log in its config's
# folder (as ../shared/peers/run.sh does), `warn` runs it with RUST_LOG=warn (no access log).
# Usage: N=5000 bench/c1-cpu.sh now=target/release/dragoman,same before=/tmp/old,same
# Needs perf (linux-perf), h2load, nginx and ../shared/peers/setup.sh's build. Hand-run.
set -u
peers=$(cd "$(dirname "$0")/../../shared/peers" && pwd); b=${PEERS_BUILD:-$peers/build}; N=${N:-5000}
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
run=$(mktemp -d); pids=(); trap 'for p in "${pids[@]}"; do kill $p 2>/dev/null; done; sleep 0.3; rm -rf $run' EXIT
BP=$(port); $b/backend -addr 127.0.0.1:$BP >/dev/null 2>&1 & BK=$!; pids+=($BK); wait_port $BP
NP=$(port); mkdir -p "$run"/{body,proxy,fastcgi,uwsgi,scgi}
sed "s#@RUN@#$run#g; s#@PORT@#$NP#; s#@BACKEND_PORT@#$BP#" "$peers/nginx.conf.in" >"$run/nginx.conf"
nginx -p "$run" -c "$run/nginx.conf" >"$run/nginx.out" 2>&1 & NG=$!; pids+=($NG); wait_port $NP
one() { # name port pids
  h2load -n 300 -c1 -m1 -d $b/getitem.grpc -H 'content-type: application/grpc' -H 'te: trailers' http://127.0.0.1:$2/bench.v1.Items/GetItem >/dev/null 2>&1
  perf stat -x, -e task-clock,context-switches,cpu-migrations -p $3 -o $run/perf.txt & ps=$!; sleep 0.3
  m=$(h2load -n $N -c1 -m1 -d $b/getitem.grpc -H 'content-type: application/grpc' -H 'te: trailers' http://127.0.0.1:$2/bench.v1.Items/GetItem 2>&1 | awk '/^time for request:/{print $6}')
  kill -INT $ps; wait $ps 2>/dev/null
  awk -F, -v n=$N -v name=$1 -v m=$m '/task-clock/{t=$1} /context-switches/{c=$1} /cpu-migrations/{g=$1} END{printf "%-10s mean %-7s cpu %.1f us/req  ctxsw %.2f/req  migr %.3f/req\n", name, m, t*1000/n, c/n, g/n}' $run/perf.txt
}
one direct-be $BP $BK
one nginx $NP $(pgrep -d, -P $NG)
for v in "$@"; do
  name=${v%%=*}; bin=${v#*=}; opts=""; case $bin in *,*) opts=${bin#*,}; bin=${bin%%,*};; esac
  DP=$(port); mkdir -p $run/$name/cfg $run/$name/log
  logdir=$run/$name/log; case $opts in *same*) logdir=$run/$name/cfg;; esac
  lvl=info; case $opts in *warn*) lvl=warn;; esac
  printf 'listen: 127.0.0.1:%s\ndescriptors: [%s]\nservices:\n  - match: "bench.v1.*"\n    backends: [http://127.0.0.1:%s]\n' $DP $b/bench.binpb $BP > $run/$name/cfg/d.yaml
  RUST_LOG=$lvl $bin serve --config $run/$name/cfg/d.yaml >$logdir/d.log 2>&1 & p=$!; pids+=($p); wait_port $DP
  one $name $DP $p
  kill $p; sleep 0.3
done
one nginx $NP $(pgrep -d, -P $NG)
