/* pgbaseline.c -- the "DB-only tracking" baseline for Tollgate's benchmark, on PostgreSQL.
 *
 * It does what a metering layer that writes one row per event and sums rows at query time does,
 * with the same event shapes as bench/loadgen.c (same setup file, hence the same customer ids
 * and meter event names; same identifiers, decimal values and timestamps):
 *
 *   pgbaseline init  --conn CONNINFO
 *       (re)creates   events(identifier text primary key, event_name text, customer_id text,
 *                            value numeric, ts timestamptz)
 *       and the index events(customer_id, event_name, ts).
 *   pgbaseline run   --conn CONNINFO --setup FILE [--batch N] [--conns C] [--seconds S | --events E]
 *                    [--spread-days D] [--run-id ID]
 *       C threads, one connection each, each looping: one multi-row
 *       INSERT ... ON CONFLICT (identifier) DO NOTHING of N rows (a prepared statement) in its own
 *       transaction (autocommit, so the commit waits for the WAL fsync: synchronous_commit=on).
 *       Prints one JSON line in loadgen's format: committed events per second and the
 *       p50/p99/p99.9 latency of one transaction (send to commit acknowledged).
 *   pgbaseline query --conn CONNINFO --setup FILE [--reps N] [--customer-index I] [--meter-index M]
 *       ANALYZEs the table, then times N repetitions of each prepared statement
 *         SELECT sum(value) FROM events WHERE customer_id=$1 AND event_name=$2
 *                                             AND ts >= $3 AND ts < $4
 *         SELECT date_trunc('hour', ts), sum(value) FROM events WHERE ... GROUP BY 1 ORDER BY 1
 *       over the same 30-day window loadgen's query uses (end = the next hour boundary, start =
 *       end - 30 days), and prints p50/p99 ms of each as one JSON line.
 *
 * Events: the k-th event of a thread goes to meter k % M and customer (k / M) % N of the setup
 * file, with value "<k%97>.<(k*7)%1000>" and identifier "<run-id>-<thread>-<k>"; with
 * --spread-days D its timestamp is spread over the last D days by the same hash of run id, thread
 * and k as loadgen's, else now.
 */
#define _GNU_SOURCE
#include <libpq-fe.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define MAX_IDS 100000

typedef struct options {
    const char *conninfo, *setup_file, *run_id;
    int batch, conns, spread_days, reps, customer_index, meter_index;
    double seconds;
    long long events;
} options;

static options opt = {NULL, NULL, "r", 1, 16, 0, 200, 0, 0, 10, 0};
static char **customers, **meters;
static int ncustomers, nmeters;
static volatile int stop_flag;
static long long events_budget;
static pthread_mutex_t budget_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t run_h; /* run_hash_of(opt.run_id), once options are read */

static PGconn *connect_db(void)
{
    PGconn *c = PQconnectdb(opt.conninfo);
    if (PQstatus(c) != CONNECTION_OK)
        die("connect: %s", PQerrorMessage(c));
    PGresult *r = PQexec(c, "SET TimeZone = 'UTC'");
    PQclear(r);
    return c;
}

static void exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        die("%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
}

/* The setup file written by `loadgen setup`: "meter NAME", "meterid ID NAME", "customer ID". */
static void load_setup(const char *file)
{
    FILE *f = fopen(file, "r");
    if (!f)
        die("cannot read %s", file);
    customers = calloc(MAX_IDS, sizeof(char *));
    meters = calloc(64, sizeof(char *));
    char line[512], kind[32], a[256];
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "%31s %255s", kind, a) != 2)
            continue;
        if (strcmp(kind, "meter") == 0 && nmeters < 64)
            meters[nmeters++] = strdup(a);
        else if (strcmp(kind, "customer") == 0 && ncustomers < MAX_IDS)
            customers[ncustomers++] = strdup(a);
    }
    fclose(f);
    if (!ncustomers || !nmeters)
        die("setup file %s has no customers or meters", file);
}

/* ---------------------------------------------------------------- init */

static void cmd_init(void)
{
    PGconn *c = connect_db();
    exec_ok(c, "SET client_min_messages = warning");
    exec_ok(c, "DROP TABLE IF EXISTS events");
    exec_ok(c, "CREATE TABLE events (identifier text PRIMARY KEY, event_name text NOT NULL, "
               "customer_id text NOT NULL, value numeric NOT NULL, ts timestamptz NOT NULL)");
    exec_ok(c, "CREATE INDEX events_customer_meter_ts ON events (customer_id, event_name, ts)");
    PQfinish(c);
}

/* ---------------------------------------------------------------- run */

typedef struct worker {
    int id;
    pthread_t thread;
    unsigned long long seq;
    long long acked, failed, txns, failed_txns;
    uint32_t *lat_us;
    size_t nlat, caplat;
} worker;

static int take_budget(int want)
{
    if (!opt.events)
        return want;
    pthread_mutex_lock(&budget_mu);
    int got = events_budget >= want ? want : (int)events_budget;
    events_budget -= got;
    pthread_mutex_unlock(&budget_mu);
    return got;
}

/* "INSERT INTO events VALUES ($1,$2,$3,$4::numeric,$5::timestamptz),(...)... ON CONFLICT ..." */
static char *insert_sql(int rows)
{
    size_t cap = (size_t)rows * 64 + 256, len = 0;
    char *s = malloc(cap);
    len += (size_t)sprintf(s, "INSERT INTO events (identifier, event_name, customer_id, value, ts) "
                              "VALUES ");
    for (int i = 0; i < rows; i++) {
        int p = i * 5;
        len += (size_t)sprintf(s + len, "%s($%d,$%d,$%d,$%d::numeric,$%d::timestamptz)",
                               i ? "," : "", p + 1, p + 2, p + 3, p + 4, p + 5);
    }
    sprintf(s + len, " ON CONFLICT (identifier) DO NOTHING");
    return s;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    PGconn *c = connect_db();
    const int nparams_max = opt.batch * 5;
    const char **vals = calloc((size_t)nparams_max, sizeof *vals);
    char *store = malloc((size_t)opt.batch * (strlen(opt.run_id) + 128)); /* id, value, ts text */
    char *full_sql = insert_sql(opt.batch);
    PGresult *pr = PQprepare(c, "ins", full_sql, 0, NULL);
    if (PQresultStatus(pr) != PGRES_COMMAND_OK)
        die("prepare: %s", PQerrorMessage(c));
    PQclear(pr);
    free(full_sql);
    for (;;) {
        if (stop_flag)
            break;
        int n = take_budget(opt.batch);
        if (n <= 0)
            break;
        int64_t now = (int64_t)time(NULL);
        char *p = store;
        for (int i = 0; i < n; i++) {
            unsigned long long k = w->seq++;
            const char **v = vals + i * 5;
            v[0] = p;
            p = put_identifier(p, opt.run_id, w->id, k);
            *p++ = '\0';
            int mi, ci;
            int64_t ts;
            char value[32];
            bench_event(run_h, w->id, k, nmeters, ncustomers, opt.spread_days, now, &mi, &ci,
                        value, &ts);
            v[1] = meters[mi];
            v[2] = customers[ci];
            v[3] = p;
            p = put_str(p, value);
            *p++ = '\0';
            v[4] = p;
            p = put_utc(p, ts, ' ');
            p = put_str(p, "+00");
            *p++ = '\0';
        }
        double t0 = now_s();
        PGresult *r;
        if (n == opt.batch) {
            r = PQexecPrepared(c, "ins", n * 5, vals, NULL, NULL, 0);
        } else { /* the short last batch of an --events run */
            char *sql = insert_sql(n);
            r = PQexecParams(c, sql, n * 5, NULL, vals, NULL, NULL, 0);
            free(sql);
        }
        double us = (now_s() - t0) * 1e6;
        w->txns++;
        if (PQresultStatus(r) == PGRES_COMMAND_OK) {
            w->acked += n; /* identifiers are unique per run id, so every row is inserted */
        } else {
            w->failed += n;
            w->failed_txns++;
            fprintf(stderr, "pgbaseline: insert failed: %s", PQerrorMessage(c));
        }
        PQclear(r);
        if (w->nlat == w->caplat) {
            w->caplat = w->caplat ? w->caplat * 2 : 1 << 16;
            w->lat_us = realloc(w->lat_us, w->caplat * sizeof *w->lat_us);
        }
        w->lat_us[w->nlat++] = (uint32_t)(us > 4e9 ? 4e9 : us);
    }
    PQfinish(c);
    free(vals);
    free(store);
    return NULL;
}

static void cmd_run(void)
{
    load_setup(opt.setup_file);
    events_budget = opt.events;
    worker *ws = calloc((size_t)opt.conns, sizeof *ws);
    double t0 = now_s();
    for (int i = 0; i < opt.conns; i++) {
        ws[i].id = i;
        pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]);
    }
    if (!opt.events) {
        while (now_s() - t0 < opt.seconds)
            usleep(10000);
        stop_flag = 1;
    }
    long long acked = 0, failed = 0, txns = 0, failed_txns = 0;
    size_t nlat = 0;
    for (int i = 0; i < opt.conns; i++) {
        pthread_join(ws[i].thread, NULL);
        acked += ws[i].acked, failed += ws[i].failed, txns += ws[i].txns;
        failed_txns += ws[i].failed_txns, nlat += ws[i].nlat;
    }
    double elapsed = now_s() - t0;
    uint32_t *all = malloc((nlat ? nlat : 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < opt.conns; i++) {
        memcpy(all + k, ws[i].lat_us, ws[i].nlat * sizeof *all);
        k += ws[i].nlat;
    }
    qsort(all, nlat, sizeof *all, cmp_u32);
#define PCT(p) (nlat ? all[(size_t)((double)(nlat - 1) * (p))] / 1000.0 : 0.0)
    /* Same keys as loadgen; "requests" are transactions, failed ones count as 5xx. */
    printf("{\"scenario\":\"pg\",\"batch\":%d,\"conns\":%d,\"seconds\":%.3f,\"requests\":%lld,"
           "\"acked_events\":%lld,\"failed_events\":%lld,\"events_per_sec\":%.0f,"
           "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"status_2xx\":%lld,"
           "\"status_4xx\":0,\"status_5xx\":%lld}\n",
           opt.batch, opt.conns, elapsed, txns, acked, failed, (double)acked / elapsed, PCT(0.50),
           PCT(0.99), PCT(0.999), txns - failed_txns, failed_txns);
}

/* ---------------------------------------------------------------- query */

static double pct(double *v, int n, double p)
{
    return n ? v[(int)((double)(n - 1) * p)] : 0.0;
}

/* Times reps executions of a prepared statement; returns the row count of the last one. */
static int time_query(PGconn *c, const char *stmt, const char *const *params, double *ms)
{
    int rows = 0;
    for (int i = -3; i < opt.reps; i++) { /* three untimed warm-up runs */
        double t0 = now_s();
        PGresult *r = PQexecPrepared(c, stmt, 4, params, NULL, NULL, 0);
        double dt = (now_s() - t0) * 1e3;
        if (PQresultStatus(r) != PGRES_TUPLES_OK)
            die("%s: %s", stmt, PQerrorMessage(c));
        rows = PQntuples(r);
        PQclear(r);
        if (i >= 0)
            ms[i] = dt;
    }
    qsort(ms, (size_t)opt.reps, sizeof *ms, cmp_dbl);
    return rows;
}

static void cmd_query(void)
{
    load_setup(opt.setup_file);
    PGconn *c = connect_db();
    exec_ok(c, "ANALYZE events");
    const char *where = "FROM events WHERE customer_id = $1 AND event_name = $2 "
                        "AND ts >= $3::timestamptz AND ts < $4::timestamptz";
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT sum(value) %s", where);
    PGresult *r = PQprepare(c, "plain", sql, 0, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        die("prepare: %s", PQerrorMessage(c));
    PQclear(r);
    snprintf(sql, sizeof sql,
             "SELECT date_trunc('hour', ts) AS h, sum(value) %s GROUP BY 1 ORDER BY 1", where);
    r = PQprepare(c, "hourly", sql, 0, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        die("prepare: %s", PQerrorMessage(c));
    PQclear(r);

    int64_t end = ((int64_t)time(NULL) / 3600 + 1) * 3600, start = end - 30 * 86400;
    char s_start[40], s_end[40];
    time_t t = (time_t)start;
    struct tm tm;
    strftime(s_start, sizeof s_start, "%Y-%m-%d %H:%M:%S+00", gmtime_r(&t, &tm));
    t = (time_t)end;
    strftime(s_end, sizeof s_end, "%Y-%m-%d %H:%M:%S+00", gmtime_r(&t, &tm));
    const char *params[4] = {customers[opt.customer_index % ncustomers],
                             meters[opt.meter_index % nmeters], s_start, s_end};
    double *plain = calloc((size_t)opt.reps, sizeof(double));
    double *hourly = calloc((size_t)opt.reps, sizeof(double));
    time_query(c, "plain", params, plain);
    int rows = time_query(c, "hourly", params, hourly);
    printf("{\"mode\":\"query\",\"reps\":%d,\"plain_p50_ms\":%.3f,\"plain_p99_ms\":%.3f,"
           "\"hourly_p50_ms\":%.3f,\"hourly_p99_ms\":%.3f,\"hourly_rows\":%d}\n",
           opt.reps, pct(plain, opt.reps, 0.50), pct(plain, opt.reps, 0.99),
           pct(hourly, opt.reps, 0.50), pct(hourly, opt.reps, 0.99), rows);
    PQfinish(c);
}

int main(int argc, char **argv)
{
    bench_prog = "pgbaseline";
    if (argc < 2)
        die("usage: pgbaseline init|run|query [options] (see the comment at the top of pgbaseline.c)");
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--conn")) opt.conninfo = v;
        else if (!strcmp(a, "--setup")) opt.setup_file = v;
        else if (!strcmp(a, "--batch")) opt.batch = atoi(v);
        else if (!strcmp(a, "--conns")) opt.conns = atoi(v);
        else if (!strcmp(a, "--seconds")) opt.seconds = atof(v);
        else if (!strcmp(a, "--events")) opt.events = atoll(v);
        else if (!strcmp(a, "--spread-days")) opt.spread_days = atoi(v);
        else if (!strcmp(a, "--run-id")) opt.run_id = v;
        else if (!strcmp(a, "--reps")) opt.reps = atoi(v);
        else if (!strcmp(a, "--customer-index")) opt.customer_index = atoi(v);
        else if (!strcmp(a, "--meter-index")) opt.meter_index = atoi(v);
        else die("unknown option %s", a);
    }
    if (!opt.conninfo)
        die("--conn is required");
    run_h = run_hash_of(opt.run_id);
    if (opt.batch < 1 || opt.batch > 10000 || opt.conns < 1 || opt.reps < 1)
        die("bad --batch, --conns or --reps");
    if (!strcmp(argv[1], "init"))
        cmd_init();
    else if (!strcmp(argv[1], "run"))
        cmd_run();
    else if (!strcmp(argv[1], "query"))
        cmd_query();
    else
        die("unknown command %s", argv[1]);
    return 0;
}
