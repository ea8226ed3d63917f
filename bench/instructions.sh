#!/usr/bin/env bash
# Instructions the bridge executes per placement, counted by valgrind's callgrind: a yardstick for
# the bridge's own CPU work that does not drift with the machine's speed, unlike rates and CPU
# times (which vary ±10-15 % from run to run on a shared 2-core machine).
#
#   bash bench/instructions.sh [BRIDGE_BINARY ...]
#
# For each binary (default: target/release/gameye-bridge): a private redis-server and the release
# emulator on free ports, the bridge under callgrind (instrumentation off), WARMUP placements, then
# PLACEMENTS placements from CONCURRENCY keep-alive connections with instrumentation on. Prints the
# instructions (Ir) per placement. Only the bridge process is counted: Redis, the emulator and the
# load generator are not. Needs valgrind, redis-server, python3 and a release build of the emulator.
# With PROFILE_DIR set, each binary's callgrind profile of the counted placements is kept there
# (`callgrind_annotate --inclusive=yes FILE` shows where the instructions go). A binary named
# gameye-bench-floor (the bench's floor yardstick) is run as the floor with its two Redis writes,
# so the bridge's count can be set against the least a placement service does on this stack.
set -euo pipefail
cd "$(dirname "$0")/.."

PLACEMENTS=${PLACEMENTS:-2000}
WARMUP=${WARMUP:-300}
CONCURRENCY=${CONCURRENCY:-8}
EMULATOR=${EMULATOR:-target/release/gameye-emulator}
[ $# -gt 0 ] || set -- target/release/gameye-bridge

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 600); do curl -sf -o /dev/null "$@" && return 0; sleep 0.1; done; echo "not ready: $*" >&2; return 1; }

# Closed loop over keep-alive connections, like the bench's (a new connection per request would
# count connection set-up as placement work).
load() { # first_id count
  python3 - "$bridge_port" "$1" "$2" "$CONCURRENCY" <<'EOF'
import http.client, json, sys, threading
port, first, count, workers = (int(a) for a in sys.argv[1:])
ids = iter(range(first, first + count)); lock = threading.Lock(); failed = []
def work():
    conn = http.client.HTTPConnection("127.0.0.1", port)
    while True:
        with lock:
            n = next(ids, None)
        if n is None:
            return
        body = json.dumps({"match_id": f"m-{n}", "players": [{"id": f"p-{n}", "latencies": {"eu-west-1": 20}}]})
        conn.request("POST", "/v1/matches", body, {"content-type": "application/json", "authorization": "Bearer bench-token"})
        response = conn.getresponse(); response.read()
        if response.status != 200:
            failed.append(response.status)
threads = [threading.Thread(target=work) for _ in range(workers)]
for t in threads: t.start()
for t in threads: t.join()
if failed:
    sys.exit(f"{len(failed)} placements failed: {failed[:5]}")
EOF
}

for bridge in "$@"; do
  dir=$(mktemp -d)
  pids=()
  cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
  trap cleanup EXIT
  redis_port=$(free_port); emulator_port=$(free_port); bridge_port=$(free_port)
  redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no --dir "$dir" >"$dir/redis.log" 2>&1 &
  pids+=($!)
  cat >"$dir/world.toml" <<EOF
start_delay = "0s"
seed = 1
[[locations]]
id = "eu-west-1"
ping_ips = ["192.0.2.10"]
host_ips = ["203.0.113.1", "203.0.113.2"]
capacity = 1000000
EOF
  "$EMULATOR" --listen "127.0.0.1:$emulator_port" --config "$dir/world.toml" >"$dir/emulator.log" 2>&1 &
  pids+=($!)
  if [ "$(basename "$bridge")" = gameye-bench-floor ]; then
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/callgrind.out" \
      "$bridge" --listen "127.0.0.1:$bridge_port" --gameye-url "http://127.0.0.1:$emulator_port" \
      --gameye-token emulator-token --token bench-token --redis-url "redis://127.0.0.1:$redis_port/0" \
      --redis-round-trips 2 >"$dir/bridge.log" 2>&1 &
    ready_path=/healthz
  else
    GAMEYE_API_URL="http://127.0.0.1:$emulator_port" GAMEYE_API_TOKEN=emulator-token \
      BRIDGE_REDIS__URL="redis://127.0.0.1:$redis_port/0" BRIDGE_HTTP__TOKENS='["bench-token"]' \
      BRIDGE_LOG__LEVEL=warn BRIDGE_RECONCILER__ENABLED=false \
      valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/callgrind.out" \
      "$bridge" serve --listen "127.0.0.1:$bridge_port" >"$dir/bridge.log" 2>&1 &
    ready_path=/readyz
  fi
  bridge_pid=$!
  pids+=("$bridge_pid")
  wait_http "http://127.0.0.1:$bridge_port$ready_path"
  load 1 "$WARMUP"
  callgrind_control -i on "$bridge_pid" >/dev/null
  load $((WARMUP + 1)) "$PLACEMENTS"
  callgrind_control -i off "$bridge_pid" >/dev/null
  callgrind_control -d "$bridge_pid" >/dev/null
  sleep 1
  ir=$(cat "$dir"/callgrind.out* | awk '/^totals:/ { sum += $2 } END { print sum }')
  if [ -n "${PROFILE_DIR:-}" ]; then
    mkdir -p "$PROFILE_DIR"
    cat "$dir"/callgrind.out.* >"$PROFILE_DIR/$(basename "$bridge").callgrind"
  fi
  echo "$bridge: $((ir / PLACEMENTS)) instructions per placement ($PLACEMENTS placements, concurrency $CONCURRENCY)"
  cleanup
  trap - EXIT
done
