# Sourced by the benchmarks that run beside the peers' Go backend (bench/rest.sh, bench/soap.sh):
# finds the peers' build (../shared/peers/setup.sh), the dragoman binary, a temp folder and the
# processes to stop on exit, and starts the backend on a free port ($BP).
# Reads: $1 (seconds per row, default 8), CONNS, PEERS_BUILD, DRAGOMAN. Sets: D C peers b bin run pids BP.
D=${1:-8}; C=${CONNS:-32}
peers=$(cd ../shared/peers && pwd)
b=${PEERS_BUILD:-$peers/build}; [ -x "$b/backend" ] || b=${XDG_CACHE_HOME:-$HOME/.cache}/dragoman-peers
[ -x "$b/backend" ] || { echo "peers not built: run ../shared/peers/setup.sh"; exit 1; }
bin=${DRAGOMAN:-target/release/dragoman}
run=$(mktemp -d -t dragoman-bench.XXXXXX); pids=()
trap 'for p in "${pids[@]}"; do kill $p 2>/dev/null; done; sleep 0.3; rm -rf "$run"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
BP=$(port); "$b/backend" -addr 127.0.0.1:$BP >/dev/null 2>&1 & pids+=($!); wait_port $BP
