#!/usr/bin/env bash
# bench/instructions.sh -- instructions per ingested event, counted by callgrind: a figure that
# does not move with the load of a shared machine, for comparing two builds of the server.
#
#   bench/instructions.sh [BINARY...]     (default build/tollgate; prints one line per binary
#                                          and scenario)
#
# For each binary and each scenario (v1 single events, form-encoded; v2 stream batches of 100):
# a server on a fresh temp data dir (customers and meters set up by loadgen as in bench.sh)
# runs under `valgrind --tool=callgrind`; loadgen sends a warm-up of 2,000 events, the
# counters are zeroed, loadgen sends EVENTS_V1 (20,000) or EVENTS_V2 (200,000) events over 16
# keep-alive connections, and the counters are dumped. Printed per event: the instructions of
# the whole server in user space (all threads; the kernel's part is not counted), the same
# without the overlay folds (they run on a 10 s schedule, so under callgrind's slowdown their
# share follows the run's wall time, not the events), the request threads' part (loop_main)
# and the writer's part without folds. Instructions are not time (a cache miss costs more than
# an add, and `rep stosb` counts once per byte), but two builds measured the same way compare
# within a few percent, where throughput on this machine moves by 20% between identical runs.
# Takes about a minute per binary. Ports 20000-32767, temp dirs removed, servers stopped.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/build/bench}
EVENTS_V1=${EVENTS_V1:-20000}
EVENTS_V2=${EVENTS_V2:-200000}
[ $# -eq 0 ] && set -- "$ROOT/build/tollgate"

log() { printf '[instructions %4ds] %s\n' "$SECONDS" "$*" >&2; }
if ! command -v valgrind >/dev/null; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  log "installing valgrind"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq valgrind >/dev/null
fi
mkdir -p "$OUT"
gcc -O2 -Wall -Wextra -o "$OUT/loadgen" "$ROOT/bench/loadgen.c" -pthread
LG=$OUT/loadgen

TMP="" VG=""
cleanup() {
  set +e
  if [ -n "$VG" ]; then kill -TERM "$VG" 2>/dev/null; wait "$VG" 2>/dev/null; fi
  [ -n "$TMP" ] && rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# inclusive FILE FUNCTION: the inclusive instruction count of the first function whose
# "file:function" ends with FUNCTION, 0 when it did not run.
inclusive() {
  callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null |
    awk -v f=":$2 [" '!n && index($0, f) { gsub(",", "", $1); n = $1 } END { print n + 0 }'
}

# measure BINARY NAME EVENTS LOADGEN_ARGS...
measure() {
  local bin=$1 name=$2 n=$3; shift 3
  TMP=$(mktemp -d)
  cp "$bin" "$TMP/server"
  local port=$((20000 + RANDOM % 12700))
  local key
  key=$("$TMP/server" keys create --data "$TMP" | tail -1)
  valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.out" "$TMP/server" serve \
    --data "$TMP" --listen "127.0.0.1:$port" >"$TMP/log" 2>&1 &
  VG=$!
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.2
  done
  "$LG" setup --port "$port" --key "$key" --customers 3000 --meters 3 --run-id s \
    --out "$TMP/setup" >/dev/null
  "$LG" run --port "$port" --key "$key" --setup "$TMP/setup" --threads 1 --run-id w \
    --events 2000 "$@" >/dev/null
  callgrind_control -z "$VG" >/dev/null
  "$LG" run --port "$port" --key "$key" --setup "$TMP/setup" --threads 1 --run-id m \
    --events "$n" "$@" >/dev/null
  callgrind_control -d "$VG" >/dev/null
  sleep 1
  local f
  f=$(ls -t "$TMP"/cg.out.* | head -1)
  local total folds http writer
  total=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
  folds=$(inclusive "$f" fold_shards)
  http=$(inclusive "$f" loop_main)
  writer=$(inclusive "$f" writer_main)
  kill -TERM "$VG"; wait "$VG" 2>/dev/null || true; VG=""
  printf '%s %s: %d instructions/event (%d without folds; request threads %d, writer without folds %d)\n' \
    "$(basename "$bin")" "$name" $((total / n)) $(((total - folds) / n)) $((http / n)) \
    $(((writer - folds) / n))
  rm -rf "$TMP"; TMP=""
}

for bin in "$@"; do
  measure "$bin" "v1 single events" "$EVENTS_V1" --scenario v1 --conns 16
  measure "$bin" "v2 batches of 100" "$EVENTS_V2" --scenario v2 --batch 100 --conns 16
done
