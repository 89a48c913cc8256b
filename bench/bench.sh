#!/usr/bin/env bash
# bench/bench.sh -- Tollgate's benchmark against a PostgreSQL "DB-only tracking" baseline (issue 3).
#
# What it measures, on this machine, in one run (`make bench`, or `QUICK=1` for a smoke run):
#   1. Ingest scenarios, each for SCENARIO_SECONDS, into Tollgate and into PostgreSQL:
#        v1   single events (Tollgate: POST /v1/billing/meter_events, form-encoded;
#             PostgreSQL: one single-row INSERT ... ON CONFLICT DO NOTHING per transaction)
#        v1p16 the same, HTTP/1.1-pipelined 16 requests deep per connection (Tollgate only:
#             the baseline has no HTTP layer; rate and latency only)
#        b100 batches of 100 (Tollgate: /v2/billing/meter_event_stream; PG: 100-row INSERTs)
#        b1k  batches of 1000 (the same with 1000 events per request / transaction)
#      Figures: acknowledged (Tollgate: HTTP 200, i.e. committed with fsync) or committed (PG,
#      synchronous_commit=on) events per second, p50/p99/p99.9 latency per request/transaction,
#      the server's peak RSS and CPU seconds during the scenario. Tollgate: VmHWM of the server
#      process (reset before each scenario through /proc/PID/clear_refs) and utime+stime from
#      /proc/PID/stat. PostgreSQL: the sum over the cluster's processes (postmaster + children)
#      of utime+stime+cutime+cstime (so backends that exited are counted), and the peak, sampled
#      every 0.5 s, of the sum of their Pss (proportional RSS: the shared buffers count once
#      instead of once per backend, which a sum of VmHWM would do).
#   2. Growth, on a fresh server / empty table: bulk-load (batches of BULK_BATCH, timestamps spread over the last SPREAD_DAYS
#      days) until each point of GROWTH_POINTS events is stored; at each point, after
#      SETTLE_SECONDS and then until the server is quiet (see settle), measure the ingest rate of two fixed runs (MEASURE_SECONDS of
#      batches of 100): live (the current time) and backfill (over SPREAD_DAYS), the month summary query
#      for one customer (p50/p99, no grouping and hourly; QUERY_REPS repetitions) and the disk
#      bytes per stored event. Tollgate's peak RSS is taken at each point as the bulk load
#      reaches it, and over the whole phase (the two measurement runs of the last point store
#      millions more: 39M by the end when the 30M point ingests near a million a second). The baseline does the points of PG_GROWTH_POINTS, then those of
#      PG_OPTIONAL_POINTS only if the projected total run time stays under BUDGET_SECONDS
#      (PG_OPTIONAL=auto; yes/no force it); the decision is printed and recorded in the CSV.
#   3. Entitlement checks (GET /v1/entitlements/check) at CHECK_RATE a second over loopback
#      for CHECK_SECONDS: p50/p99/p99.9 latency, alone, beside ingest (batches of 100 on
#      B100_CONNS connections) as fast as it goes, and beside the same ingest paced at
#      PACED_INGEST_RATE events a second (not saturating); and the server-side time of one
#      check, in process (bench/checkbench.c), against the baseline of reading the period's
#      usage as a month summary, which is what a check costs without Tollgate's counters.
#      The latency rows' baseline is bench/floorserver.c, a responder that answers "{}" to
#      anything and does nothing else: the same checks are sent to it, alone and beside the
#      same ingest into Tollgate, so the ratio says how far Tollgate is from this machine's floor.
#   4. A table (Tollgate, baseline, ratio = how many times better Tollgate is), the CSV
#      build/bench/results.csv, the chart build/bench/growth.png; both are copied to
#      bench/results/ (not by a QUICK run, which would replace the recorded results).
#
# Every number counts only events the server acknowledged after committing them to disk.
# Knobs below can be overridden from the environment (e.g. GROWTH_POINTS="1000000 3000000").
set -euo pipefail

ROOT=${BENCH_ROOT:-$(cd "$(dirname "$0")/.." && pwd)} # make bench runs a copy of this file
OUT=$ROOT/build/bench
QUICK=${QUICK:-0}

# ------------------------------------------------------------------ knobs
LOADGEN_THREADS=${LOADGEN_THREADS:-1}  # loadgen epoll threads (2 cores: leave one to the server)
V1_CONNS=${V1_CONNS:-128}              # concurrent connections, v1 single events (measured:
                                       #   32 -> 34,320, 64 -> 40,057, 128 -> 45,700, 256 -> 46,549)
B100_CONNS=${B100_CONNS:-128}          # concurrent connections, batches of 100 (measured:
                                       #   32 -> 493K, 64 -> 575K, 128 -> 616K, 256 -> 621K ev/s)
B1K_CONNS=${B1K_CONNS:-32}             # concurrent connections, batches of 1000 (16 -> 626K,
                                       #   32 -> 738K, 64 -> 721K ev/s)
# The baseline at the concurrency that suits it best, measured the same way: batches of 100 on
# 32 connections 56,562 rows/s, on 128 27,310; batches of 1000 on 16 51,377, on 32 45,940.
# v1 (one row a transaction): on 8 connections 6,402 rows/s, 16 7,188, 32 7,568, 64 6,310,
# 128 4,601, 256 2,870.
PG_V1_CONNS=${PG_V1_CONNS:-32}
V1P_CONNS=${V1P_CONNS:-64}             # v1 pipelined 16 deep (1,024 requests in flight)
PG_B100_CONNS=${PG_B100_CONNS:-32}
PG_B1K_CONNS=${PG_B1K_CONNS:-16}
BULK_CONNS=${BULK_CONNS:-16}           # growth bulk loading (batches of BULK_BATCH)
BULK_BATCH=${BULK_BATCH:-1000}
CUSTOMERS=${CUSTOMERS:-3000}
METERS=${METERS:-3}
SPREAD_DAYS=${SPREAD_DAYS:-30}         # growth events: timestamps over the last 30 days
SCENARIO_SPREAD_DAYS=${SCENARIO_SPREAD_DAYS:-0}  # scenario events: the current time (live traffic)
SETTLE_SECONDS=${SETTLE_SECONDS:-12}   # growth: pause after each bulk load, before measuring,
SETTLE_MAX_SECONDS=${SETTLE_MAX_SECONDS:-90} # then until the server is quiet (see settle)
CHECK_RATE=${CHECK_RATE:-10000}
CHECK_CONNS=${CHECK_CONNS:-8}
PACED_INGEST_RATE=${PACED_INGEST_RATE:-100000}  # events/s of the paced ingest beside checks
if [ "$QUICK" = 1 ]; then
  CHECK_SECONDS=${CHECK_SECONDS:-2}
  CHECKBENCH_ARGS=${CHECKBENCH_ARGS:-"--customers 100 --events 20000 --checks 50000"}
  SCENARIO_SECONDS=${SCENARIO_SECONDS:-2}
  MEASURE_SECONDS=${MEASURE_SECONDS:-0.5}
  SETTLE_SECONDS=${QUICK_SETTLE_SECONDS:-1}
  SETTLE_MAX_SECONDS=${QUICK_SETTLE_MAX_SECONDS:-1}
  QUERY_REPS=${QUERY_REPS:-30}
  GROWTH_POINTS=${GROWTH_POINTS:-"20000 60000"}
  PG_GROWTH_POINTS=${PG_GROWTH_POINTS:-"20000 60000"}
  PG_OPTIONAL_POINTS=${PG_OPTIONAL_POINTS:-""}
  CUSTOMERS=${QUICK_CUSTOMERS:-300}
else
  CHECK_SECONDS=${CHECK_SECONDS:-10}
  CHECKBENCH_ARGS=${CHECKBENCH_ARGS:-"--customers 1000 --events 1000000 --checks 1000000"}
  SCENARIO_SECONDS=${SCENARIO_SECONDS:-10}
  MEASURE_SECONDS=${MEASURE_SECONDS:-5}
  QUERY_REPS=${QUERY_REPS:-200}
  GROWTH_POINTS=${GROWTH_POINTS:-"1000000 10000000 30000000"}
  PG_GROWTH_POINTS=${PG_GROWTH_POINTS:-"1000000 10000000"}
  PG_OPTIONAL_POINTS=${PG_OPTIONAL_POINTS-"30000000"}  # set empty for none
fi
PG_OPTIONAL=${PG_OPTIONAL:-auto}       # auto: only if the projected total stays under the budget
BUDGET_SECONDS=${BUDGET_SECONDS:-1500} # ~25 minutes for the whole run
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

# ------------------------------------------------------------------ helpers
log() { printf '[bench %4ds] %s\n' "$SECONDS" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }
# jget JSON KEY: the value of a top-level scalar in loadgen's flat one-line JSON.
jget() { sed -n "s/.*\"$2\":\"\{0,1\}\([^,\"}]*\).*/\1/p" <<<"$1"; }
calc() { awk "BEGIN { printf \"%.6g\", $* }"; }

free_port() { # below the kernel's ephemeral range (32768+), where client ports cannot collide
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 12700))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  die "no free port"
}

ensure_packages() {
  local want=() p
  for p in postgresql libpq-dev gnuplot-nox; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || want+=("$p")
  done
  if [ ${#want[@]} -gt 0 ]; then
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    log "installing: ${want[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${want[@]}" >/dev/null
  fi
}

# ------------------------------------------------------------------ cleanup
TMP="" PGTMP="" TG_PID="" SAMPLER_PID="" FLOOR_PID="" PG_STARTED=0
AS_PG=(); [ "$(id -u)" -eq 0 ] && AS_PG=(runuser -u postgres --)
cleanup() {
  set +e
  [ -n "$SAMPLER_PID" ] && kill "$SAMPLER_PID" 2>/dev/null && wait "$SAMPLER_PID" 2>/dev/null
  [ -n "$FLOOR_PID" ] && kill "$FLOOR_PID" 2>/dev/null && wait "$FLOOR_PID" 2>/dev/null
  if [ -n "$TG_PID" ] && kill -0 "$TG_PID" 2>/dev/null; then
    kill -TERM "$TG_PID"
    for _ in $(seq 1 100); do kill -0 "$TG_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$TG_PID" 2>/dev/null
  fi
  [ "$PG_STARTED" = 1 ] && "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$PGTMP/data" -m immediate -w stop >/dev/null 2>&1
  [ -n "$TMP" ] && rm -rf "$TMP"
  [ -n "$PGTMP" ] && rm -rf "$PGTMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ results
# Figures go into R_T[key] (Tollgate) and R_B[key] (baseline); ROWS keeps the table order as
# "key|label|unit|better" where better is hi (throughput) or lo (latency, memory, CPU, bytes).
declare -A R_T R_B
ROWS=()
row() { ROWS+=("$1|$2|$3|$4"); }
ratio() { # how many times better Tollgate is; empty when a side is missing or zero
  local t=${R_T[$1]:-} b=${R_B[$1]:-} dir=$2
  [ -z "$t" ] || [ -z "$b" ] && return
  if [ "$dir" = hi ]; then awk -v t="$t" -v b="$b" 'BEGIN{ if (b>0) printf "%.2f", t/b }'
  else awk -v t="$t" -v b="$b" 'BEGIN{ if (t>0) printf "%.2f", b/t }'; fi
}
note() { echo "$*" >>"$OUT/notes.txt"; log "NOTE: $*"; } # a file: notes are also made in $(...)

# Checks a loadgen/pgbaseline JSON line for refused requests; those are reported, not hidden.
check_statuses() {
  local who=$1 what=$2 json=$3 s4 s5 failed
  local closed
  s4=$(jget "$json" status_4xx); s5=$(jget "$json" status_5xx); failed=$(jget "$json" failed_events)
  closed=$(jget "$json" conn_closed)
  if [ "${s4:-0}" != 0 ] || [ "${s5:-0}" != 0 ] || [ "${failed:-0}" != 0 ] || [ "${closed:-0}" != 0 ]; then
    note "$who $what: not acknowledged: 4xx=$s4 5xx=$s5 connections closed by the server=${closed:-0} failed_events=$failed"
  fi
}

# ------------------------------------------------------------------ process figures
CLK_TCK=$(getconf CLK_TCK)
proc_cpu_s() { awk -v hz="$CLK_TCK" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
proc_hwm_mib() { awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
reset_hwm() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null || true; }

pg_pids() { # the postmaster and its children
  local pm; pm=$(head -1 "$PGTMP/data/postmaster.pid")
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v pm="$pm" '$1 == pm || $4 == pm { print $1 }'
}
pg_cpu_s() { # utime+stime+cutime+cstime of the postmaster and its live children
  local pm; pm=$(head -1 "$PGTMP/data/postmaster.pid")
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } |
    awk -v pm="$pm" -v hz="$CLK_TCK" '$1 == pm || $4 == pm { s += $14 + $15 + $16 + $17 }
                                      END { printf "%.2f", s / hz }'
}
# settle CPU_FN [ARG]: after a bulk load, SETTLE_SECONDS, then until the server has used at
# most one clock tick (10 ms) of CPU a second for three seconds in a row (CPU_FN ARG prints its
# CPU seconds), at most SETTLE_MAX_SECONDS in all; prints the seconds waited. Tollgate folds
# what a bulk load left in two passes of its 10 s fold cycle, first into spills (2-10 ticks a
# second), then spills into day pages: after 20M events spread over 30 days that merge ran
# from 11 to 23 s after the load ended, so a fixed 12 s pause measured the point's ingest
# during it.
settle() {
  local waited=$SETTLE_SECONDS quiet=0 prev cur
  sleep "$SETTLE_SECONDS"
  prev=$("$@")
  while [ $quiet -lt 3 ] && [ "$waited" -lt "$SETTLE_MAX_SECONDS" ]; do
    sleep 1; waited=$((waited + 1)); cur=$("$@")
    if awk -v a="$prev" -v b="$cur" 'BEGIN { exit !(b - a < 0.015) }'; then quiet=$((quiet + 1)); else quiet=0; fi
    prev=$cur
  done
  echo "$waited"
}
pg_pss_kb() {
  local files=() p
  for p in $(pg_pids); do files+=("/proc/$p/smaps_rollup"); done
  { cat "${files[@]}" 2>/dev/null || true; } | awk '/^Pss:/ { s += $2 } END { print s + 0 }'
}
start_pg_sampler() { # keeps the peak of the cluster's summed Pss (kB) in $OUT/pg_peak_kb
  echo 0 >"$OUT/pg_peak_kb"
  ( max=0; while :; do cur=$(pg_pss_kb); if [ "$cur" -gt "$max" ]; then max=$cur; echo "$max" >"$OUT/pg_peak_kb"; fi; sleep 0.5; done ) &
  SAMPLER_PID=$!
}
stop_pg_sampler() { kill "$SAMPLER_PID" 2>/dev/null || true; wait "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=""; }

# ------------------------------------------------------------------ build
ensure_packages
mkdir -p "$OUT" "$ROOT/bench/results"
[ -x "$ROOT/build/tollgate" ] || make -C "$ROOT" --no-print-directory all
make -C "$ROOT" --no-print-directory build/checkbench >/dev/null
log "building loadgen, floorserver and pgbaseline into $OUT"
gcc -O2 -Wall -Wextra -o "$OUT/loadgen" "$ROOT/bench/loadgen.c" -pthread
gcc -O2 -Wall -Wextra -o "$OUT/floorserver" "$ROOT/bench/floorserver.c"
gcc -O2 -Wall -Wextra $(pkg-config --cflags libpq) -o "$OUT/pgbaseline" "$ROOT/bench/pgbaseline.c" \
    $(pkg-config --libs libpq) -pthread
LG=$OUT/loadgen PGB=$OUT/pgbaseline
RUNLOG=$OUT/runs.jsonl; : >"$RUNLOG"; : >"$OUT/notes.txt"

TMP=$(mktemp -d)
# The binary is copied so that a concurrent rebuild of build/tollgate cannot change it mid-run,
# under its own name so that a `pkill tollgate` elsewhere (seen during development: a rebuild
# followed by killing every "tollgate" process) does not stop the benchmark's server.
TG_BIN=$TMP/tg-bench-server
cp "$ROOT/build/tollgate" "$TG_BIN"
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git -C "$ROOT" status --porcelain -- src 2>/dev/null)" ] && COMMIT="$COMMIT+dirty-src"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $COMMIT"
  echo "nproc: $(nproc)"
  echo "cpu: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "memory: $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
  echo "disk: $(df -h "$TMP" | awk 'NR == 2 { print $1 ", " $2 " total" }'), temp dir $TMP"
  echo "kernel: $(uname -r)"
  echo "quick: $QUICK"
} >"$OUT/machine.txt"
sed 's/^/  /' "$OUT/machine.txt" >&2

# ------------------------------------------------------------------ Tollgate
# Each phase (scenarios, growth) gets a fresh server on a fresh data directory, so the growth
# points count exactly the events stored since an empty start.
healthy() { exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET /healthz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n' >&3 &&
            head -1 <&3 | grep -q ' 200 '; }
tg_start() { # tg_start DATA_DIR SETUP_FILE: sets TG_PID, TG_PORT, KEY; creates meters and customers
  TG_DATA=$1 TG_PORT=$(free_port)
  mkdir -p "$TG_DATA"
  KEY=$("$TG_BIN" keys create --data "$TG_DATA" 2>>"$OUT/tollgate.log" | tail -1)
  # shellcheck disable=SC2086
  "$TG_BIN" serve --data "$TG_DATA" --listen "127.0.0.1:$TG_PORT" --max-stream-events 1000 \
      ${TG_SERVE_ARGS:-} >>"$OUT/tollgate.log" 2>&1 &
  TG_PID=$!
  for _ in $(seq 1 100); do (healthy "$TG_PORT") 2>/dev/null && break; sleep 0.1; done
  (healthy "$TG_PORT") 2>/dev/null || die "tollgate did not become healthy: $(tail -5 "$OUT/tollgate.log")"
  log "tollgate pid $TG_PID on port $TG_PORT, data $TG_DATA"
  "$LG" setup --port "$TG_PORT" --key "$KEY" --customers "$CUSTOMERS" --meters "$METERS" \
      --run-id b --out "$2"
}
tg_stop() {
  log "stopping tollgate (SIGTERM)"
  kill -TERM "$TG_PID"
  local rc=0; wait "$TG_PID" || rc=$?
  [ "$rc" = 0 ] || note "tollgate exited with status $rc on SIGTERM"
  TG_PID=""
}
: >"$OUT/tollgate.log"

tg_alive() {
  kill -0 "$TG_PID" 2>/dev/null && return
  note "the Tollgate server died during $1"
  die "the Tollgate server died during $1; log tail: $(tail -20 "$OUT/tollgate.log")"
}
# tg_load WHAT ARGS...: one loadgen run; prints its JSON line, logs it, checks the server.
tg_load() {
  local what=$1; shift
  local json
  if ! json=$("$LG" run --port "$TG_PORT" --key "$KEY" --setup "$SETUP" \
              --threads "$LOADGEN_THREADS" "$@" 2>"$OUT/loadgen.err"); then
    tg_alive "$what"
    die "loadgen failed during $what: $(cat "$OUT/loadgen.err")"
  fi
  tg_alive "$what"
  [ -s "$OUT/loadgen.err" ] && note "loadgen stderr during $what: $(head -3 "$OUT/loadgen.err" | tr '\n' ' ')"
  echo "{\"system\":\"tollgate\",\"what\":\"$what\",\"result\":$json}" >>"$RUNLOG"
  check_statuses tollgate "$what" "$json"
  echo "$json"
}

SETUP=$OUT/setup-scenarios.txt
tg_start "$TMP/tollgate-scenarios" "$SETUP"

# scenario NAME FIGURE-PREFIX ARGS: records rate, latency, RSS, CPU into R_T
tg_scenario() {
  local name=$1; shift
  reset_hwm "$TG_PID"
  local cpu0 cpu1 json
  cpu0=$(proc_cpu_s "$TG_PID")
  json=$(tg_load "scenario $name" --seconds "$SCENARIO_SECONDS" --spread-days "$SCENARIO_SPREAD_DAYS" \
         --run-id "s$name" "$@")
  cpu1=$(proc_cpu_s "$TG_PID")
  R_T[$name.rate]=$(jget "$json" events_per_sec)
  R_T[$name.p50]=$(jget "$json" p50_ms); R_T[$name.p99]=$(jget "$json" p99_ms)
  R_T[$name.p999]=$(jget "$json" p999_ms)
  R_T[$name.rss]=$(proc_hwm_mib "$TG_PID")
  R_T[$name.cpu]=$(calc "$cpu1 - $cpu0")
  log "tollgate $name: ${R_T[$name.rate]} ev/s p99 ${R_T[$name.p99]} ms, rss ${R_T[$name.rss]} MiB, cpu ${R_T[$name.cpu]} s"
}
for s in "v1|single events (v1)|--scenario v1 --conns $V1_CONNS" \
         "v1p16|single events (v1), pipelined 16|--scenario v1 --conns $V1P_CONNS --pipeline 16" \
         "b100|batches of 100|--scenario v2 --batch 100 --conns $B100_CONNS" \
         "b1k|batches of 1000|--scenario v2 --batch 1000 --conns $B1K_CONNS"; do
  IFS='|' read -r name label args <<<"$s"
  row "$name.rate" "$label: ingest" "events/s" hi
  row "$name.p50" "$label: p50 latency" ms lo
  row "$name.p99" "$label: p99 latency" ms lo
  row "$name.p999" "$label: p99.9 latency" ms lo
  if [ "$name" != v1p16 ]; then # the pipelined run has no baseline twin: rate and latency only
    row "$name.rss" "$label: server peak RSS" MiB lo
    row "$name.cpu" "$label: server CPU" "s" lo
  fi
  # shellcheck disable=SC2086
  tg_scenario "$name" $args
done

# Entitlement checks: alone, beside ingest, then beside ingest paced below saturation, on the
# scenario server.
row "check.rate" "entitlement checks at ${CHECK_RATE}/s: achieved (vs floor server)" "checks/s" hi
row "check.p50" "entitlement checks: p50 latency (vs floor server)" ms lo
row "check.p99" "entitlement checks: p99 latency (vs floor server)" ms lo
row "check.p999" "entitlement checks: p99.9 latency (vs floor server)" ms lo
row "checki.p50" "entitlement checks beside ingest: p50 latency (vs floor server)" ms lo
row "checki.p99" "entitlement checks beside ingest: p99 latency (vs floor server)" ms lo
row "checki.ingest" "ingest beside the checks (batches of 100)" "events/s" hi
paced="entitlement checks beside ingest at $PACED_INGEST_RATE events/s"
row "checkp.p50" "$paced: p50 latency (vs floor server)" ms lo
row "checkp.p99" "$paced: p99 latency (vs floor server)" ms lo
row "checkp.p999" "$paced: p99.9 latency (vs floor server)" ms lo
row "checkp.ingest" "ingest beside the checks, paced at $PACED_INGEST_RATE events/s" "events/s" hi
realtime="entitlement checks beside ingest, realtime lane"
row "checkr.p50" "$realtime: p50 latency" ms lo
row "checkr.p99" "$realtime: p99 latency" ms lo
row "checkr.p999" "$realtime: p99.9 latency" ms lo
row "checkr.ingest" "ingest beside the checks, realtime lane" "events/s" hi
row "check.ns" "one check, server side (baseline: month summary)" ns lo
row "check.ns_ingest" "one check, server side, beside ingest" ns lo
# tg_checks RUN_ID [SYSTEM]: one loadgen checks run, to Tollgate or (SYSTEM floor) to the floor
# server; prints its JSON line.
tg_checks() {
  local json system=${2:-tollgate} to=()
  [ "$system" = floor ] && to=(--check-port "$FLOOR_PORT")
  json=$("$LG" checks --port "$TG_PORT" --key "$KEY" --setup "$SETUP" --rate "$CHECK_RATE" \
      --seconds "$CHECK_SECONDS" --conns "$CHECK_CONNS" --run-id "$1" "${to[@]}" \
      2>"$OUT/loadgen.err") ||
    { tg_alive "checks"; die "loadgen checks failed: $(cat "$OUT/loadgen.err")"; }
  echo "{\"system\":\"$system\",\"what\":\"checks $1\",\"result\":$json}" >>"$RUNLOG"
  echo "$json"
}
FLOOR_PORT=$(free_port)
"$OUT/floorserver" "$FLOOR_PORT" & FLOOR_PID=$!
# The floor server's single events and month summary: what a server that does nothing
# reaches here, against the baseline's figures (filled in at the report), so those rows'
# ratios show their ceiling on this machine.
row "v1floor.rate" "single events (v1), a server that does nothing: ingest (ceiling of the ratio)" "events/s" hi
row "qfloor.p50" "month summary p50, a server that does nothing (ceiling of the 10M ratio)" ms lo
row "qfloor.p99" "month summary p99, a server that does nothing (ceiling of the 10M ratio)" ms lo
fj=$("$LG" run --port "$FLOOR_PORT" --key "$KEY" --setup "$SETUP" --threads "$LOADGEN_THREADS" \
     --scenario v1 --conns "$V1_CONNS" --seconds "$SCENARIO_SECONDS" --run-id fv1 2>"$OUT/loadgen.err") ||
  die "loadgen v1 to the floor server failed: $(cat "$OUT/loadgen.err")"
echo "{\"system\":\"floor\",\"what\":\"scenario v1\",\"result\":$fj}" >>"$RUNLOG"
R_T[v1floor.rate]=$(jget "$fj" events_per_sec)
fq=$("$LG" query --port "$FLOOR_PORT" --key "$KEY" --setup "$SETUP" --reps "$QUERY_REPS") ||
  die "loadgen query to the floor server failed"
echo "{\"system\":\"floor\",\"what\":\"query\",\"result\":$fq}" >>"$RUNLOG"
R_T[qfloor.p50]=$(jget "$fq" plain_p50_ms); R_T[qfloor.p99]=$(jget "$fq" plain_p99_ms)
log "the floor server: v1 ${R_T[v1floor.rate]} requests/s, summary p50 ${R_T[qfloor.p50]} ms"
cj=$(tg_checks c1)
R_T[check.rate]=$(jget "$cj" rate)
R_T[check.p50]=$(jget "$cj" p50_ms); R_T[check.p99]=$(jget "$cj" p99_ms); R_T[check.p999]=$(jget "$cj" p999_ms)
cj=$(tg_checks f1 floor)
R_B[check.rate]=$(jget "$cj" rate)
R_B[check.p50]=$(jget "$cj" p50_ms); R_B[check.p99]=$(jget "$cj" p99_ms); R_B[check.p999]=$(jget "$cj" p999_ms)
log "checks: ${R_T[check.rate]}/s, p99 ${R_T[check.p99]} ms (the floor server: ${R_B[check.p99]} ms)"
# checks_beside_ingest CHECKS_RUN_ID INGEST_WHAT INGEST_ARGS...: a checks run while batches of
# 100 go in on B100_CONNS connections, from half a second before the checks to half a second
# after; sets cj (the checks' JSON line) and ij (the ingest's).
# With CHECKS_TO=floor the checks go to the floor server (the ingest still goes to Tollgate).
checks_beside_ingest() {
  local run_id=$1 what=$2 ingest_pid; shift 2
  tg_load "$what" --scenario v2 --batch 100 --conns "$B100_CONNS" \
      --seconds "$(calc "$CHECK_SECONDS + 1")" "$@" >"$OUT/ingest-beside-checks.json" &
  ingest_pid=$!
  sleep 0.5
  cj=$(tg_checks "$run_id" "${CHECKS_TO:-tollgate}")
  wait "$ingest_pid" || die "ingest beside the checks failed"
  ij=$(cat "$OUT/ingest-beside-checks.json")
}
checks_beside_ingest c2 "ingest beside checks" --run-id ci
R_T[checki.p50]=$(jget "$cj" p50_ms); R_T[checki.p99]=$(jget "$cj" p99_ms)
R_T[checki.ingest]=$(jget "$ij" events_per_sec)
CHECKS_TO=floor checks_beside_ingest f2 "ingest beside checks to the floor server" --run-id fi
R_B[checki.p50]=$(jget "$cj" p50_ms); R_B[checki.p99]=$(jget "$cj" p99_ms)
log "checks beside ingest (${R_T[checki.ingest]} ev/s): p99 ${R_T[checki.p99]} ms" \
    "(the floor server, beside $(jget "$ij" events_per_sec) ev/s: ${R_B[checki.p99]} ms)"
checks_beside_ingest c3 "ingest at $PACED_INGEST_RATE/s beside checks" \
    --rate "$PACED_INGEST_RATE" --run-id cp
R_T[checkp.p50]=$(jget "$cj" p50_ms); R_T[checkp.p99]=$(jget "$cj" p99_ms)
R_T[checkp.p999]=$(jget "$cj" p999_ms)
R_T[checkp.ingest]=$(jget "$ij" events_per_sec)
CHECKS_TO=floor checks_beside_ingest f3 "ingest at $PACED_INGEST_RATE/s beside checks to the floor server" \
    --rate "$PACED_INGEST_RATE" --run-id fp
R_B[checkp.p50]=$(jget "$cj" p50_ms); R_B[checkp.p99]=$(jget "$cj" p99_ms)
R_B[checkp.p999]=$(jget "$cj" p999_ms)
log "checks beside ingest paced at $PACED_INGEST_RATE/s (${R_T[checkp.ingest]} ev/s):" \
    "p99 ${R_T[checkp.p99]} ms (the floor server: ${R_B[checkp.p99]} ms)"
tg_stop
# The same beside full-speed ingest, with the check lane's thread at real-time priority (an
# option: it needs CAP_SYS_NICE, and the server says so in its log when it cannot have it).
TG_SERVE_ARGS=--check-lane-realtime tg_start "$TMP/tollgate-checks-realtime" "$SETUP"
checks_beside_ingest c4 "ingest beside checks, realtime lane" --run-id cr
R_T[checkr.p50]=$(jget "$cj" p50_ms); R_T[checkr.p99]=$(jget "$cj" p99_ms)
R_T[checkr.p999]=$(jget "$cj" p999_ms)
R_T[checkr.ingest]=$(jget "$ij" events_per_sec)
grep -q "cannot use SCHED_FIFO" "$OUT/tollgate.log" &&
  note "--check-lane-realtime: the server could not use SCHED_FIFO here (see tollgate.log)"
log "checks beside ingest, realtime lane (${R_T[checkr.ingest]} ev/s): p99 ${R_T[checkr.p99]} ms"
tg_stop
kill "$FLOOR_PID"; wait "$FLOOR_PID" 2>/dev/null || true; FLOOR_PID=""
rm -rf "$TMP/tollgate-checks-realtime"
# shellcheck disable=SC2086
cb=$("$ROOT/build/checkbench" $CHECKBENCH_ARGS 2>>"$OUT/tollgate.log") || die "checkbench failed"
echo "{\"system\":\"tollgate\",\"what\":\"checkbench\",\"result\":$cb}" >>"$RUNLOG"
R_T[check.ns]=$(jget "$cb" check_ns); R_B[check.ns]=$(jget "$cb" summary_ns)
R_T[check.ns_ingest]=$(jget "$cb" check_ns_under_ingest)
log "one check: ${R_T[check.ns]} ns in process (${R_T[check.ns_ingest]} beside ingest); month summary ${R_B[check.ns]} ns"
rm -rf "$TMP/tollgate-scenarios"

# growth_point SIDE TARGET: the figures of one growth point for either system.
GROWTH_T=$OUT/growth_tollgate.dat GROWTH_B=$OUT/growth_pg.dat
printf '# target stored live_events_per_sec plain_p99_ms hourly_p99_ms bytes_per_event backfill_events_per_sec\n' | tee "$GROWTH_T" >"$GROWTH_B"
label_n() { awk -v n="$1" 'BEGIN { if (n >= 1e6) printf "%gM", n / 1e6; else printf "%gK", n / 1e3 }'; }
growth_rows() {
  local l; l=$(label_n "$1")
  row "g$1.rate" "at $l stored: ingest, live (batches of 100, ${MEASURE_SECONDS}s)" "events/s" hi
  row "g$1.backfill" "at $l stored: ingest, backfill over ${SPREAD_DAYS} days (the same)" "events/s" hi
  row "g$1.plain50" "at $l stored: month summary p50" ms lo
  row "g$1.plain99" "at $l stored: month summary p99" ms lo
  row "g$1.hourly50" "at $l stored: month summary hourly p50" ms lo
  row "g$1.hourly99" "at $l stored: month summary hourly p99" ms lo
  row "g$1.rss" "at $l stored: server peak RSS (bulk load to it)" MiB lo
  row "g$1.bytes" "at $l stored: disk bytes/event (data dir)" bytes lo
  row "g$1.relbytes" "at $l stored: disk bytes/event (PG table+indexes only)" bytes lo
}
ALL_POINTS=$(printf '%s\n' $GROWTH_POINTS $PG_GROWTH_POINTS $PG_OPTIONAL_POINTS | sort -nu)
for p in $ALL_POINTS; do growth_rows "$p"; done
row "growth.rss" "growth phase: server peak RSS" MiB lo

TG_GROWTH_T0=$SECONDS
SETUP=$OUT/setup-growth.txt
tg_start "$TMP/tollgate-growth" "$SETUP"
TG_STORED=0
for target in $GROWTH_POINTS; do
  tries=0
  while [ "$TG_STORED" -lt "$target" ]; do
    need=$((target - TG_STORED)); tries=$((tries + 1))
    [ $tries -gt 5 ] && die "tollgate: cannot reach $target stored events (429s?)"
    log "tollgate: bulk loading $need events to reach $target"
    json=$(tg_load "bulk to $target" --scenario v2 --batch "$BULK_BATCH" --conns "$BULK_CONNS" \
           --events "$need" --spread-days "$SPREAD_DAYS" --run-id "g$target-$tries")
    TG_STORED=$((TG_STORED + $(jget "$json" acked_events)))
    log "tollgate bulk: $(jget "$json" events_per_sec) ev/s"
  done
  R_T[g$target.rss]=$(proc_hwm_mib "$TG_PID") # before the measurements add their events
  note "tollgate at $target: quiet $(settle proc_cpu_s "$TG_PID") s after the bulk load"
  json=$(tg_load "measure live at $target" --scenario v2 --batch 100 --conns "$B100_CONNS" \
         --seconds "$MEASURE_SECONDS" --spread-days 0 --run-id "l$target")
  TG_STORED=$((TG_STORED + $(jget "$json" acked_events)))
  R_T[g$target.rate]=$(jget "$json" events_per_sec)
  json=$(tg_load "measure backfill at $target" --scenario v2 --batch 100 --conns "$B100_CONNS" \
         --seconds "$MEASURE_SECONDS" --spread-days "$SPREAD_DAYS" --run-id "m$target")
  TG_STORED=$((TG_STORED + $(jget "$json" acked_events)))
  R_T[g$target.backfill]=$(jget "$json" events_per_sec)
  q=$("$LG" query --port "$TG_PORT" --key "$KEY" --setup "$SETUP" --reps "$QUERY_REPS") ||
    { tg_alive "query at $target"; die "loadgen query failed"; }
  echo "{\"system\":\"tollgate\",\"what\":\"query at $target\",\"result\":$q}" >>"$RUNLOG"
  R_T[g$target.plain50]=$(jget "$q" plain_p50_ms); R_T[g$target.plain99]=$(jget "$q" plain_p99_ms)
  R_T[g$target.hourly50]=$(jget "$q" hourly_p50_ms); R_T[g$target.hourly99]=$(jget "$q" hourly_p99_ms)
  bytes=$(du -sb "$TG_DATA" | cut -f1)
  R_T[g$target.bytes]=$(calc "$bytes / $TG_STORED")
  printf '%s %s %s %s %s %s %s\n' "$target" "$TG_STORED" "${R_T[g$target.rate]}" "${R_T[g$target.plain99]}" \
    "${R_T[g$target.hourly99]}" "${R_T[g$target.bytes]}" "${R_T[g$target.backfill]}" >>"$GROWTH_T"
  log "tollgate at $TG_STORED stored: live ${R_T[g$target.rate]} ev/s, backfill ${R_T[g$target.backfill]} ev/s," \
      "summary p99 ${R_T[g$target.plain99]} ms" \
      "(hourly ${R_T[g$target.hourly99]} ms, $(jget "$q" hourly_rows) rows), ${R_T[g$target.bytes]} B/event"
done
R_T[growth.rss]=$(proc_hwm_mib "$TG_PID")
TG_GROWTH_SECONDS=$((SECONDS - TG_GROWTH_T0))
tg_stop

# ------------------------------------------------------------------ PostgreSQL
PGTMP=$(mktemp -d)
PG_PORT=$(free_port)
[ "$(id -u)" -eq 0 ] && chown postgres: "$PGTMP"
"${AS_PG[@]}" "$PGBIN/initdb" -D "$PGTMP/data" -U postgres --auth=trust -E UTF8 --no-locale >/dev/null
PG_TUNING="listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PGTMP'
max_connections = 200
synchronous_commit = on
fsync = on
full_page_writes = on
shared_buffers = 1GB
wal_buffers = 64MB
max_wal_size = 8GB
checkpoint_timeout = 15min
work_mem = 64MB
timezone = 'UTC'"
echo "$PG_TUNING" >>"$PGTMP/data/postgresql.conf"
"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$PGTMP/data" -l "$PGTMP/pg.log" -w start >/dev/null
PG_STARTED=1
CONN="host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres"
"$PGB" init --conn "$CONN"
log "postgres on port $PG_PORT, data $PGTMP/data"
pg_load() {
  local what=$1; shift
  local json
  json=$("$PGB" run --conn "$CONN" --setup "$SETUP" "$@" 2>"$OUT/pgbaseline.err") ||
    die "pgbaseline failed during $what: $(tail -5 "$OUT/pgbaseline.err")"
  echo "{\"system\":\"postgres\",\"what\":\"$what\",\"result\":$json}" >>"$RUNLOG"
  check_statuses postgres "$what" "$json"
  echo "$json"
}
pg_scenario() {
  local name=$1; shift
  local cpu0 cpu1 json
  start_pg_sampler
  cpu0=$(pg_cpu_s)
  json=$(pg_load "scenario $name" --seconds "$SCENARIO_SECONDS" --spread-days "$SCENARIO_SPREAD_DAYS" \
         --run-id "s$name" "$@")
  sleep 0.3 # lets the postmaster reap the exited backends, whose CPU then shows in its cutime
  cpu1=$(pg_cpu_s)
  stop_pg_sampler
  R_B[$name.rate]=$(jget "$json" events_per_sec)
  R_B[$name.p50]=$(jget "$json" p50_ms); R_B[$name.p99]=$(jget "$json" p99_ms)
  R_B[$name.p999]=$(jget "$json" p999_ms)
  R_B[$name.rss]=$(calc "$(cat "$OUT/pg_peak_kb") / 1024")
  R_B[$name.cpu]=$(calc "$cpu1 - $cpu0")
  log "postgres $name: ${R_B[$name.rate]} ev/s p99 ${R_B[$name.p99]} ms, pss ${R_B[$name.rss]} MiB, cpu ${R_B[$name.cpu]} s"
}
# the same customers and meter names as Tollgate's phases
SETUP=$OUT/setup-scenarios.txt
pg_scenario v1 --batch 1 --conns "$PG_V1_CONNS"
pg_scenario b100 --batch 100 --conns "$PG_B100_CONNS"
pg_scenario b1k --batch 1000 --conns "$PG_B1K_CONNS"

psql_value() { "$PGBIN/psql" "$CONN" -Atqc "$1"; }
# growth from an empty table, as for Tollgate
"$PGB" init --conn "$CONN"
psql_value "CHECKPOINT" >/dev/null
SETUP=$OUT/setup-growth.txt
PG_STORED=0
start_pg_sampler
PG_BULK_RATE=0
pg_point() {
  local target=$1 json q bytes rel tries=0
  while [ "$PG_STORED" -lt "$target" ]; do
    tries=$((tries + 1)); [ $tries -gt 5 ] && die "postgres: cannot reach $target stored events"
    log "postgres: bulk loading $((target - PG_STORED)) events to reach $target"
    json=$(pg_load "bulk to $target" --batch "$BULK_BATCH" --conns "$BULK_CONNS" \
           --events "$((target - PG_STORED))" --spread-days "$SPREAD_DAYS" --run-id "g$target-$tries")
    PG_STORED=$((PG_STORED + $(jget "$json" acked_events)))
    PG_BULK_RATE=$(jget "$json" events_per_sec)
    log "postgres bulk: $PG_BULK_RATE ev/s"
  done
  note "postgres at $target: quiet $(settle pg_cpu_s) s after the bulk load" # as for Tollgate
  json=$(pg_load "measure live at $target" --batch 100 --conns "$PG_B100_CONNS" --seconds "$MEASURE_SECONDS" \
         --spread-days 0 --run-id "l$target")
  PG_STORED=$((PG_STORED + $(jget "$json" acked_events)))
  R_B[g$target.rate]=$(jget "$json" events_per_sec)
  json=$(pg_load "measure backfill at $target" --batch 100 --conns "$PG_B100_CONNS" --seconds "$MEASURE_SECONDS" \
         --spread-days "$SPREAD_DAYS" --run-id "m$target")
  PG_STORED=$((PG_STORED + $(jget "$json" acked_events)))
  R_B[g$target.backfill]=$(jget "$json" events_per_sec)
  q=$("$PGB" query --conn "$CONN" --setup "$SETUP" --reps "$QUERY_REPS") || die "pgbaseline query failed"
  echo "{\"system\":\"postgres\",\"what\":\"query at $target\",\"result\":$q}" >>"$RUNLOG"
  R_B[g$target.plain50]=$(jget "$q" plain_p50_ms); R_B[g$target.plain99]=$(jget "$q" plain_p99_ms)
  R_B[g$target.hourly50]=$(jget "$q" hourly_p50_ms); R_B[g$target.hourly99]=$(jget "$q" hourly_p99_ms)
  bytes=$(du -sb "$PGTMP/data" | cut -f1)
  rel=$(psql_value "SELECT pg_total_relation_size('events')")
  R_B[g$target.bytes]=$(calc "$bytes / $PG_STORED")
  R_B[g$target.relbytes]=$(calc "$rel / $PG_STORED")
  printf '%s %s %s %s %s %s %s\n' "$target" "$PG_STORED" "${R_B[g$target.rate]}" "${R_B[g$target.plain99]}" \
    "${R_B[g$target.hourly99]}" "${R_B[g$target.bytes]}" "${R_B[g$target.backfill]}" >>"$GROWTH_B"
  log "postgres at $PG_STORED stored: live ${R_B[g$target.rate]} ev/s, backfill ${R_B[g$target.backfill]} ev/s," \
      "summary p99 ${R_B[g$target.plain99]} ms" \
      "(hourly ${R_B[g$target.hourly99]} ms, $(jget "$q" hourly_rows) rows), ${R_B[g$target.bytes]} B/event" \
      "(table+indexes ${R_B[g$target.relbytes]})"
}
for target in $PG_GROWTH_POINTS; do pg_point "$target"; done
for target in $PG_OPTIONAL_POINTS; do
  # projected: bulk at the last measured rate, plus a minute for measuring and reporting
  projected=$(awk -v n="$((target - PG_STORED))" -v r="$PG_BULK_RATE" 'BEGIN { printf "%d", (r > 0 ? n / r : 1e9) + 60 }')
  total=$((SECONDS + projected))
  case "$PG_OPTIONAL" in
    yes) do_it=1 ;; no) do_it=0 ;;
    *) do_it=$([ "$total" -le "$BUDGET_SECONDS" ] && echo 1 || echo 0) ;;
  esac
  if [ "$do_it" = 1 ]; then
    note "baseline at $(label_n "$target"): measured (PG_OPTIONAL=$PG_OPTIONAL; projected total ${total}s, budget ${BUDGET_SECONDS}s)"
    pg_point "$target"
  else
    note "baseline at $(label_n "$target"): skipped (PG_OPTIONAL=$PG_OPTIONAL; the run would end at ~${total}s, over the ${BUDGET_SECONDS}s budget; bulk rate $PG_BULK_RATE ev/s)"
  fi
done
stop_pg_sampler
R_B[growth.rss]=$(calc "$(cat "$OUT/pg_peak_kb") / 1024")

# ------------------------------------------------------------------ report
R_B[v1floor.rate]=${R_B[v1.rate]:-}
R_B[qfloor.p50]=${R_B[g10000000.plain50]:-}; R_B[qfloor.p99]=${R_B[g10000000.plain99]:-}
CSV=$OUT/results.csv
{
  echo "figure,unit,tollgate,baseline,ratio"
  for r in "${ROWS[@]}"; do
    IFS='|' read -r key label unit dir <<<"$r"
    [ -z "${R_T[$key]:-}" ] && [ -z "${R_B[$key]:-}" ] && continue
    echo "\"$label\",$unit,${R_T[$key]:-},${R_B[$key]:-},$(ratio "$key" "$dir")"
  done
  while read -r n; do echo "\"note: ${n//\"/\'}\",,,,"; done <"$OUT/notes.txt"
  echo "\"tollgate commit $COMMIT; quick=$QUICK; tollgate growth phase ${TG_GROWTH_SECONDS}s; total ${SECONDS}s\",,,,"
} >"$CSV"

printf '\n%-84s %-9s %12s %12s %9s\n' "figure" "unit" "Tollgate" "baseline" "ratio" >&2
printf '%.0s-' $(seq 1 130) >&2; echo >&2
for r in "${ROWS[@]}"; do
  IFS='|' read -r key label unit dir <<<"$r"
  [ -z "${R_T[$key]:-}" ] && [ -z "${R_B[$key]:-}" ] && continue
  rt=$(ratio "$key" "$dir")
  printf '%-84s %-9s %12s %12s %9s\n' "$label" "$unit" "${R_T[$key]:--}" "${R_B[$key]:--}" "${rt:+${rt}x}" >&2
done
echo "baseline: PostgreSQL, unless the figure names another." >&2
echo "ratio: how many times better Tollgate is (baseline/Tollgate for latency, memory, CPU, bytes)." >&2
while read -r n; do echo "note: $n" >&2; done <"$OUT/notes.txt"

gnuplot <<EOF
set terminal pngcairo size 1200,500 font ",10"
set output "$OUT/growth.png"
set multiplot layout 1,2 title "Tollgate $COMMIT vs PostgreSQL baseline, $(nproc) cores"
set logscale x
set format x "%.0s%c"
set xlabel "stored events"
set grid
set key bottom left
set ylabel "ingest, events/s (batches of 100)"
set yrange [0:*]
plot "$GROWTH_T" using 2:3 with linespoints lw 2 title "Tollgate, live", \
     "$GROWTH_T" using 2:7 with linespoints lw 2 title "Tollgate, backfill", \
     "$GROWTH_B" using 2:3 with linespoints lw 2 title "PostgreSQL, live", \
     "$GROWTH_B" using 2:7 with linespoints lw 2 title "PostgreSQL, backfill"
set logscale y
set yrange [*:*]
set ylabel "month summary p99, ms (log)"
plot "$GROWTH_T" using 2:4 with linespoints lw 2 title "Tollgate, no grouping", \
     "$GROWTH_T" using 2:5 with linespoints lw 2 title "Tollgate, hourly", \
     "$GROWTH_B" using 2:4 with linespoints lw 2 title "PostgreSQL, no grouping", \
     "$GROWTH_B" using 2:5 with linespoints lw 2 title "PostgreSQL, hourly"
unset multiplot
EOF
if [ "$QUICK" = 1 ]; then # a smoke run does not replace the recorded results
  log "done in ${SECONDS}s: $CSV, $OUT/growth.png (QUICK: bench/results/ left as it was)"
else
  cp "$CSV" "$OUT/growth.png" "$OUT/machine.txt" "$OUT/runs.jsonl" "$OUT/notes.txt" "$ROOT/bench/results/"
  log "done in ${SECONDS}s: $CSV, $OUT/growth.png (copied to bench/results/)"
fi
