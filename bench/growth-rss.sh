#!/usr/bin/env bash
# bench/growth-rss.sh -- the growth phase of bench/bench.sh alone, for Tollgate, with the
# server's memory sampled over time (issue 3's "peak RSS under 512 MiB during the 30M run").
#
#   bench/growth-rss.sh [BINARY]      (default build/tollgate; knobs below from the environment)
#
# A fresh server on an empty temp data dir is bulk-loaded exactly as bench.sh does it (batches
# of 1000 over 16 connections, timestamps spread over the last 30 days) up to each point of
# GROWTH_POINTS; at each point a 5 s run of batches of 100 (32 connections) and the month
# summary queries. VmRSS and VmHWM of the server are sampled every 0.5 s into
# OUT/rss-samples.txt ("seconds rss_kib hwm_kib"); one line a phase goes to stderr with the
# stored count, the ingest rate and VmHWM; the last line is the peak, which is the figure
# bench.sh reports as "growth phase: server peak RSS". Server CPU (utime+stime) at the end gives
# CPU seconds per stored event, a figure less disturbed than ingest rates by other load on a
# shared machine. Ports 20000-32767, temp dir removed at exit, the server stopped by a trap.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/build/tollgate}
OUT=${OUT:-$ROOT/build/bench}
GROWTH_POINTS=${GROWTH_POINTS:-"1000000 10000000 30000000"}
CUSTOMERS=${CUSTOMERS:-3000}
METERS=${METERS:-3}
SPREAD_DAYS=${SPREAD_DAYS:-30}
MEASURE_SECONDS=${MEASURE_SECONDS:-5}
QUERY_REPS=${QUERY_REPS:-200}

log() { printf '[growth-rss %4ds] %s\n' "$SECONDS" "$*" >&2; }
jget() { sed -n "s/.*\"$2\":\"\{0,1\}\([^,\"}]*\).*/\1/p" <<<"$1"; }
hwm_mib() { awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$PID/status"; }

mkdir -p "$OUT"
gcc -O2 -Wall -Wextra -o "$OUT/loadgen" "$ROOT/bench/loadgen.c" -pthread
LG=$OUT/loadgen
TMP=$(mktemp -d)
PID="" SAMPLER=""
cleanup() {
  set +e
  [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null
  if [ -n "$PID" ]; then kill -TERM "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cp "$BIN" "$TMP/tg-growth-server" # a rebuild during the run cannot change it
PORT=$((20000 + RANDOM % 12700))
mkdir -p "$TMP/data"
KEY=$("$TMP/tg-growth-server" keys create --data "$TMP/data" | tail -1)
"$TMP/tg-growth-server" serve --data "$TMP/data" --listen "127.0.0.1:$PORT" \
    --max-stream-events 1000 >"$OUT/growth-rss-server.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
( while kill -0 "$PID" 2>/dev/null; do
    awk -v t="$SECONDS" '/^VmRSS:/ { r = $2 } /^VmHWM:/ { h = $2 } END { print t, r, h }' \
        "/proc/$PID/status" 2>/dev/null
    sleep 0.5
  done >"$OUT/rss-samples.txt" ) &
SAMPLER=$!
SETUP=$OUT/setup-growth-rss.txt
"$LG" setup --port "$PORT" --key "$KEY" --customers "$CUSTOMERS" --meters "$METERS" \
    --run-id b --out "$SETUP" >/dev/null

STORED=0
for target in $GROWTH_POINTS; do
  tries=0
  while [ "$STORED" -lt "$target" ]; do # as bench.sh: until acknowledged (429s are retried)
    tries=$((tries + 1))
    [ $tries -gt 5 ] && { log "cannot reach $target stored events"; exit 1; }
    json=$("$LG" run --port "$PORT" --key "$KEY" --setup "$SETUP" --threads 1 --scenario v2 \
           --batch 1000 --conns 16 --events $((target - STORED)) --spread-days "$SPREAD_DAYS" \
           --run-id "g$target-$tries")
    STORED=$((STORED + $(jget "$json" acked_events)))
    log "bulk to $target: stored $STORED, $(jget "$json" events_per_sec) events/s, VmHWM $(hwm_mib) MiB"
  done
  json=$("$LG" run --port "$PORT" --key "$KEY" --setup "$SETUP" --threads 1 --scenario v2 \
         --batch 100 --conns 32 --seconds "$MEASURE_SECONDS" --spread-days "$SPREAD_DAYS" \
         --run-id "m$target")
  STORED=$((STORED + $(jget "$json" acked_events)))
  log "measure at $target: stored $STORED, $(jget "$json" events_per_sec) events/s, VmHWM $(hwm_mib) MiB"
  q=$("$LG" query --port "$PORT" --key "$KEY" --setup "$SETUP" --reps "$QUERY_REPS")
  log "query at $target: summary p99 $(jget "$q" plain_p99_ms) ms, hourly p99 $(jget "$q" hourly_p99_ms) ms, VmHWM $(hwm_mib) MiB"
done
CPU=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$PID/stat")
log "peak RSS (VmHWM) $(hwm_mib) MiB at $STORED stored events; server CPU $CPU s" \
    "($(awk -v c="$CPU" -v n="$STORED" 'BEGIN { printf "%.2f", c * 1e6 / n }') us an event)"
