# Sourced by the benchmarks that run beside the peers' Go backend (bench/rest.sh, bench/soap.sh):
# finds the peers' build (../shared/peers/setup.sh), the dragoman binary, a temp folder and the
# processes to stop on exit, and starts the backend on a free port ($BP).
# Reads: $1 (seconds per row, default 8), CONNS, PEERS_BUILD, DRAGOMAN, NO_BACKEND (set: start no backend, for
# scripts with a backend of their own). Sets: D C peers b bin run pids BP BK (the backend's pid). Defines: port, wait_port, and as ../shared/peers/run.sh measures them, cpu PID (CPU
# ticks of a process and its children so far), us_per TICKS REQUESTS (CPU µs per request), rss PID (MiB);
# commit_of BINARY; load (one row's h2load or wrk run, below).
D=${1:-8}; C=${CONNS:-32}
peers=$(cd ../shared/peers && pwd)
b=${PEERS_BUILD:-$peers/build}; [ -x "$b/backend" ] || b=${XDG_CACHE_HOME:-$HOME/.cache}/dragoman-peers
[ -x "$b/backend" ] || { echo "peers not built: run ../shared/peers/setup.sh"; exit 1; }
bin=${DRAGOMAN:-target/release/dragoman}
run=$(mktemp -d -t dragoman-bench.XXXXXX); pids=()
trap 'for p in "${pids[@]}"; do kill $p 2>/dev/null; done; sleep 0.3; rm -rf "$run"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
TCK=$(getconf CLK_TCK)
cpu() { local t=0 p; for p in $1 $(ps -o pid= --ppid $1 2>/dev/null); do
  t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat 2>/dev/null || echo 0))); done; echo $t; }
us_per() { python3 -c "import sys; t,n,k=map(float,sys.argv[1:4]); print(f'{t/k*1e6/n:.1f}' if n else 'n/a')" "$1" "$2" "$TCK"; }
# The commit a binary under a worktree's target/ was built from, as far as git can say: the last commit on
# the first-parent line that touched the sources (bench/ and examples/ commits are not), +dirty if they are edited.
commit_of() { local d; d=$(dirname "$1")
  echo "$(git -C "$d" rev-list --first-parent -1 --abbrev-commit HEAD -- :/src :/Cargo.toml :/Cargo.lock :/build.rs 2>/dev/null || echo unknown)$(
    [ -z "$(git -C "$d" status --porcelain -- :/src :/Cargo.toml :/Cargo.lock :/build.rs 2>/dev/null)" ] || echo +dirty)"; }
rss() { local t=0 p; for p in $1 $(ps -o pid= --ppid $1 2>/dev/null); do
  t=$((t + $(awk '/VmRSS/{print $2}' /proc/$p/status 2>/dev/null || echo 0))); done; echo $((t / 1024)); }
# load KIND CONNS STREAMS BASE_URL PID: one row's load, unary GetItem by h2load (KIND grpc) or REST GET
# /v1/items/42 by wrk (rest), D seconds, with the header in $HDR if set ("name: value"); sets out rps done
# mean p50 p99 bad, and ticks (PID's CPU over it).
load() {
  local c0; c0=$(cpu $5); p50=""; p99=""
  if [ "$1" = grpc ]; then
    out=$(h2load -D "$D" -t1 -c "$2" -m "$3" -d "$b/getitem.grpc" -H 'content-type: application/grpc' -H 'te: trailers' \
      ${HDR:+-H "$HDR"} "$4/bench.v1.Items/GetItem" 2>&1)
    ticks=$(($(cpu $5) - c0))
    rps=$(echo "$out" | awk '/^finished in/{gsub(",","",$4); print int($4)}')
    done=$(echo "$out" | awk '/^requests:/{print $8}')
    mean=$(echo "$out" | awk '/^time for request:/{print $6}')
    bad=$(echo "$out" | awk '/^requests:/{print $10+$12+$14}')
  else
    out=$(wrk -t1 -c "$2" -d "${D}s" --latency ${HDR:+-H "$HDR"} "$4/v1/items/42" 2>&1)
    ticks=$(($(cpu $5) - c0))
    rps=$(echo "$out" | awk '/^Requests\/sec/{print int($2)}')
    done=$(echo "$out" | awk '/requests in/{print $1}')
    mean=$(echo "$out" | awk '/^ +Latency +[0-9]/{print $2; exit}')
    p50=$(echo "$out" | awk '/^ +50%/{print $2}'); p99=$(echo "$out" | awk '/^ +99%/{print $2}')
    bad=$(echo "$out" | awk '/Non-2xx/{print $5}'); bad=${bad:-0}
  fi
}
[ -n "${NO_BACKEND:-}" ] || { BP=$(port); "$b/backend" -addr 127.0.0.1:$BP >/dev/null 2>&1 & BK=$!; pids+=($BK); wait_port $BP; }
